//! The B+-tree's sequential specification for the linearizability checker
//! ([`engine::lincheck`]): an ordered map. Used by the simulated fault campaigns and by the
//! real-process campaign runner (`campaign`).

use crate::service::{TreeCommand, TreeConfig, TreeReply};
use bytes::Bytes;
use engine::lincheck::{Keys, Model};
use std::collections::BTreeMap;

/// The tree as an ordered map.
pub struct TreeModel {
    pub initial: BTreeMap<u64, Bytes>,
}

impl TreeModel {
    /// The map a tree configured by `c` starts with (its pre-filled keys and values, as
    /// `TreeService` fills them).
    pub fn for_config(c: &TreeConfig) -> TreeModel {
        TreeModel {
            initial: (0..c.prefill)
                .map(|i| {
                    let v: Vec<u8> = (0..c.value_bytes)
                        .map(|j| (i.wrapping_mul(31).wrapping_add(j as u64)) as u8)
                        .collect();
                    (c.prefill_key(i), Bytes::from(v))
                })
                .collect(),
        }
    }
}

impl Model for TreeModel {
    type State = BTreeMap<u64, Bytes>;
    type Input = TreeCommand;
    type Output = TreeReply;

    fn init(&self) -> Self::State {
        self.initial.clone()
    }

    fn step(
        &self,
        s: &Self::State,
        input: &TreeCommand,
        output: Option<&TreeReply>,
    ) -> Option<Self::State> {
        if let TreeCommand::Rebalance(_) = input {
            // Moves subtrees between workers; no key or value changes, and what it moved is
            // the replicas' business.
            return match output {
                None | Some(TreeReply::Rebalanced(_)) => Some(s.clone()),
                Some(_) => None,
            };
        }
        let mut next = s.clone();
        let reply = apply(&mut next, input);
        match output {
            Some(o) if *o != reply => None,
            _ => Some(next),
        }
    }

    fn keys(&self, input: &TreeCommand) -> Keys {
        match input {
            TreeCommand::Get(k)
            | TreeCommand::Insert(k, _)
            | TreeCommand::Update(k, _)
            | TreeCommand::Delete(k) => Keys::Some(vec![*k]),
            TreeCommand::Scan { lo, hi, .. } if hi.saturating_sub(*lo) <= 4096 => {
                Keys::Some((*lo..*hi).collect())
            }
            TreeCommand::Rebalance(_) => Keys::Some(Vec::new()),
            _ => Keys::All,
        }
    }
}

/// Applies `input` to the map `s`; the reply the tree must give (for `Rebalance`, which
/// changes no entry, an empty report: the real one depends on the replicas' load).
pub fn apply(s: &mut BTreeMap<u64, Bytes>, input: &TreeCommand) -> TreeReply {
    match input {
        TreeCommand::Rebalance(_) => TreeReply::Rebalanced(Default::default()),
        TreeCommand::Get(k) => TreeReply::Value(s.get(k).cloned()),
        TreeCommand::Insert(k, v) => TreeReply::Inserted(s.insert(*k, v.clone())),
        TreeCommand::Update(k, v) => TreeReply::Updated(match s.get_mut(k) {
            Some(slot) => {
                *slot = v.clone();
                true
            }
            None => false,
        }),
        TreeCommand::Delete(k) => TreeReply::Deleted(s.remove(k)),
        TreeCommand::Scan { lo, hi, limit } => TreeReply::Entries(if lo < hi {
            s.range(*lo..*hi)
                .take(*limit as usize)
                .map(|(k, v)| (*k, v.clone()))
                .collect()
        } else {
            vec![]
        }),
        TreeCommand::Size => TreeReply::Size(s.len() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    #[test]
    fn the_model_refuses_a_wrong_read() {
        let m = TreeModel {
            initial: [(3, b("x"))].into_iter().collect(),
        };
        let s = m.init();
        assert!(m
            .step(
                &s,
                &TreeCommand::Get(3),
                Some(&TreeReply::Value(Some(b("x"))))
            )
            .is_some());
        assert!(m
            .step(&s, &TreeCommand::Get(3), Some(&TreeReply::Value(None)))
            .is_none());
    }
}
