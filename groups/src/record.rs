//! The send/delivery record that `groups-node --record FILE` appends to: one line per multicast
//! (`S sender epoch seq g,g,...`, written before the message can leave the process) and per
//! delivery (`D subscription sender epoch seq`). A killed process may leave a torn last line;
//! [`Record::parse`] reads complete lines only.

use crate::groupset::GroupSet;
use crate::ids::{GroupId, MsgId, NodeId};
use std::path::Path;

/// A parsed record: multicasts sent and deliveries, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub sent: Vec<(MsgId, GroupSet)>,
    /// `(subscription, message)` per delivery.
    pub delivered: Vec<(usize, MsgId)>,
}

impl Record {
    /// Parses the complete lines of `text` (a trailing line without its newline is ignored).
    pub fn parse(text: &str) -> Result<Record, String> {
        let complete = text.rfind('\n').map_or("", |i| &text[..i]);
        let mut r = Record::default();
        for (n, line) in complete.lines().enumerate() {
            let bad = |what: &str| format!("record line {}: {what}: {line:?}", n + 1);
            let f: Vec<&str> = line.split(' ').collect();
            let num = |s: &str| s.parse::<u64>().map_err(|_| bad("not a number"));
            let id = |a: &str, b: &str, c: &str| -> Result<MsgId, String> {
                Ok(MsgId {
                    sender: NodeId(u32::try_from(num(a)?).map_err(|_| bad("node id"))?),
                    epoch: u32::try_from(num(b)?).map_err(|_| bad("epoch"))?,
                    seq: num(c)?,
                })
            };
            match f.as_slice() {
                ["S", s, e, q, groups] => {
                    let dests = groups
                        .split(',')
                        .map(|g| {
                            Ok(GroupId(
                                u32::try_from(num(g)?).map_err(|_| bad("group id"))?,
                            ))
                        })
                        .collect::<Result<GroupSet, String>>()?;
                    r.sent.push((id(s, e, q)?, dests));
                }
                ["D", sub, s, e, q] => {
                    let sub = usize::try_from(num(sub)?).map_err(|_| bad("subscription"))?;
                    r.delivered.push((sub, id(s, e, q)?));
                }
                _ => {
                    return Err(bad(
                        "expected `S sender epoch seq groups` or `D sub sender epoch seq`",
                    ))
                }
            }
        }
        Ok(r)
    }

    /// Reads and parses the record at `path`; a missing file is an empty record (the process
    /// has not written yet).
    pub fn read(path: &Path) -> Result<Record, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Record::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The messages delivered on subscription `sub`, in order.
    pub fn delivered_on(&self, sub: usize) -> Vec<MsgId> {
        self.delivered
            .iter()
            .filter(|(s, _)| *s == sub)
            .map(|(_, id)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_lines_parse_and_bad_ones_are_errors() {
        let r = Record::parse("S 1 7 0 0,2\nD 0 1 7 0\nD 1 1 7 0\nS 1 7 1 0").unwrap();
        let id = |seq| MsgId {
            sender: NodeId(1),
            epoch: 7,
            seq,
        };
        assert_eq!(r.sent.len(), 1, "the torn last line is ignored");
        assert_eq!(r.sent[0].0, id(0));
        assert_eq!(r.sent[0].1.len(), 2);
        assert_eq!(r.delivered_on(0), vec![id(0)]);
        assert_eq!(r.delivered.len(), 2);
        for bad in ["X 1\n", "S 1 7 x 0\n", "D 0 1 7\n", "S 1 99999999999 0 0\n"] {
            assert!(Record::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Record::parse("").unwrap(), Record::default());
    }
}
