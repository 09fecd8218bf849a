//! The B+-tree's sequential specification for the linearizability checker, and the
//! "no acknowledged write lost" check against the final state.

use btree_service::service::{TreeCommand, TreeConfig, TreeReply};
use bytes::Bytes;
use engine::lincheck::{Keys, Model, Operation};
use std::collections::BTreeMap;

/// The tree as an ordered map (the same specification as the B+-tree's simulator campaign).
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
            _ => Keys::All,
        }
    }
}

/// Applies `input` to the map `s`; the reply the tree must give.
pub fn apply(s: &mut BTreeMap<u64, Bytes>, input: &TreeCommand) -> TreeReply {
    match input {
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

/// Acknowledged writes missing from `final_state` (a description each): for every key, the
/// final value must come from a write that no acknowledged write on that key followed in real
/// time (write values are unique; an absent key comes from a delete or the initial state).
/// A write with an unknown outcome may have taken effect at any time after its call, so it is
/// never followed; the initial state is followed by any acknowledged write.
pub fn lost_acks(
    initial: &BTreeMap<u64, Bytes>,
    history: &[Operation<TreeCommand, TreeReply>],
    final_state: &BTreeMap<u64, Bytes>,
) -> Vec<String> {
    // key -> writes on it (index into history); updates acknowledged as no-ops are not writes.
    let mut writes: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        let key = match (&op.input, op.output()) {
            (TreeCommand::Update(_, _), Some(TreeReply::Updated(false))) => continue,
            (TreeCommand::Insert(k, _) | TreeCommand::Update(k, _) | TreeCommand::Delete(k), _) => {
                *k
            }
            _ => continue,
        };
        writes.entry(key).or_default().push(i);
    }
    let mut lost = Vec::new();
    for (key, ws) in &writes {
        let fin = final_state.get(key);
        let acked: Vec<&Operation<_, _>> = ws
            .iter()
            .map(|&i| &history[i])
            .filter(|o| o.ret.is_some())
            .collect();
        let followed = |ret: u64| acked.iter().any(|a| ret < a.call);
        let produces = |op: &Operation<TreeCommand, TreeReply>| match (&op.input, fin) {
            (TreeCommand::Insert(_, v) | TreeCommand::Update(_, v), Some(f)) => v == f,
            (TreeCommand::Delete(_), None) => true,
            _ => false,
        };
        let from_write = ws.iter().map(|&i| &history[i]).any(|op| {
            produces(op)
                && match &op.ret {
                    None => true,
                    Some((ret, _)) => !followed(*ret),
                }
        });
        let from_initial = initial.get(key) == fin && acked.is_empty();
        if !from_write && !from_initial {
            let last = acked.iter().max_by_key(|a| a.ret.as_ref().map(|r| r.0));
            lost.push(format!(
                "key {key}: final value {:?}, but the last acknowledged write was {:?}",
                fin,
                last.map(|a| &a.input)
            ));
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    #[test]
    fn a_lost_acknowledged_write_is_found_and_an_unknown_one_is_excused() {
        let initial = BTreeMap::new();
        let history = vec![
            Operation::completed(
                0,
                TreeCommand::Insert(1, b("a")),
                0,
                10,
                TreeReply::Inserted(None),
            ),
            Operation::completed(
                1,
                TreeCommand::Insert(1, b("b")),
                20,
                30,
                TreeReply::Inserted(Some(b("a"))),
            ),
            Operation::unknown(2, TreeCommand::Delete(2), 5),
            Operation::completed(
                2,
                TreeCommand::Insert(2, b("c")),
                1,
                2,
                TreeReply::Inserted(None),
            ),
        ];
        // Key 1 ends with "a": the acknowledged "b" (invoked after "a" returned) is lost.
        let fin: BTreeMap<u64, Bytes> = [(1, b("a"))].into_iter().collect();
        let lost = lost_acks(&initial, &history, &fin);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].starts_with("key 1"), "{lost:?}");
        // Key 2 absent: the delete with an unknown outcome may have come last.
        let fin: BTreeMap<u64, Bytes> = [(1, b("b"))].into_iter().collect();
        assert!(lost_acks(&initial, &history, &fin).is_empty());
        // Key 2 absent and no delete: the acknowledged insert is lost.
        let fin: BTreeMap<u64, Bytes> = [(1, b("b"))].into_iter().collect();
        assert_eq!(lost_acks(&initial, &history[..2], &fin).len(), 0);
        let only_insert = vec![history[3].clone()];
        assert_eq!(lost_acks(&initial, &only_insert, &BTreeMap::new()).len(), 1);
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
