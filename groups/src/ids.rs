//! Identifiers shared by every protocol in the crate.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A process of the cluster: an acceptor, a subscriber, a sender, or several of these at once.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u32);

/// A multicast group: the unit that messages are addressed to and that subscribers join.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupId(pub u32);

/// A consensus log. Each log orders the messages of the groups it covers; several logs are
/// merged deterministically at every subscriber (see [`crate::merge`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogId(pub u32);

/// Identity of one multicast message: the sending node, the sender's incarnation (`epoch`) and
/// a per-incarnation sequence number.
///
/// Invariant: a sender never reuses `(epoch, seq)`; a restarted sender must use a larger epoch
/// than any earlier incarnation (the runtimes use the incarnation number or the boot time).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgId {
    pub sender: NodeId,
    pub epoch: u32,
    pub seq: u64,
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}
impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}
impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}
impl fmt::Debug for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}", self.0)
    }
}
impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}", self.0)
    }
}
impl fmt::Debug for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.sender, self.epoch, self.seq)
    }
}
impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The identity of a cluster: 128 bits, drawn at random when a deployment file is written
/// (`--write-config`), so that two deployments generated from the same parameters still differ.
///
/// The full value is what a data directory's identity file records ([`crate::log::identity`]):
/// a directory of another cluster is refused at start. Frames carry a 64-bit tag of it
/// ([`ClusterId::frame_tag`]): it only catches a frame that reached the wrong cluster by
/// mistake (a stale address, a copied port), for which 64 random bits leave a chance of 2^-64
/// per pair of clusters; authenticating peers is the cluster secret's job, not the tag's.
/// An id below 2^64 (a hand-written `cluster_id = 7`) has itself as its tag, so frames of
/// clusters configured before ids became 128 bits are unchanged.
///
/// In the TOML form it is an integer (below 2^63, TOML's limit) or a string of up to 32
/// hexadecimal digits, optionally prefixed `0x` (the form `--write-config` writes).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub u128);

impl ClusterId {
    /// The 64-bit tag carried by every frame: the two halves XORed (an id below 2^64 is its own
    /// tag).
    pub fn frame_tag(self) -> u64 {
        (self.0 as u64) ^ ((self.0 >> 64) as u64)
    }

    /// Parses the written form: decimal digits, or hexadecimal with a `0x` prefix, or exactly
    /// 32 hexadecimal digits.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let bad = || {
            format!(
                "cluster id {text:?} is not a decimal number or up to 32 hexadecimal digits \
                 (e.g. \"0x5f0c...\")"
            )
        };
        let parsed = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            if hex.is_empty() || hex.len() > 32 {
                return Err(bad());
            }
            u128::from_str_radix(hex, 16)
        } else if t.len() == 32 {
            u128::from_str_radix(t, 16)
        } else {
            t.parse::<u128>()
        };
        parsed.map(ClusterId).map_err(|_| bad())
    }
}

impl From<u64> for ClusterId {
    fn from(id: u64) -> Self {
        ClusterId(u128::from(id))
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `0x` and 32 hexadecimal digits (the form [`ClusterId::parse`] reads back).
impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:032x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_round_trip_and_small_ones_are_their_own_tag() {
        for id in [
            0u128,
            7,
            u128::from(u64::MAX),
            1 << 64,
            u128::MAX,
            0x5f0c_1234 << 70,
        ] {
            let c = ClusterId(id);
            assert_eq!(ClusterId::parse(&c.to_string()), Ok(c));
        }
        assert_eq!(ClusterId::from(7).frame_tag(), 7);
        assert_eq!(ClusterId::parse("12345"), Ok(ClusterId(12345)));
        assert_eq!(ClusterId::parse("0xff"), Ok(ClusterId(255)));
        assert_eq!(
            ClusterId::parse("0000000000000000000000000000000a"),
            Ok(ClusterId(10))
        );
        assert_ne!(ClusterId(1 << 64).frame_tag(), ClusterId(0).frame_tag());
        for bad in [
            "",
            "0x",
            "x12",
            "-1",
            "0x1234567890abcdef1234567890abcdef0",
            "12ab",
        ] {
            assert!(ClusterId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
