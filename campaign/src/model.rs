//! The "no acknowledged write lost" check of the B+-tree against its final state; the
//! sequential specification for the linearizability checker is `btree_service::model`.

pub use btree_service::model::TreeModel;
use btree_service::service::{TreeCommand, TreeReply};
use bytes::Bytes;
use engine::lincheck::Operation;
use std::collections::BTreeMap;

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
}
