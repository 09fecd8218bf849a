//! Frame bodies through the codec: `NetMsg` (every message one node sends another), the
//! handshake bodies, and the pieces a `NetMsg` is made of (`GroupSet`, `Message`, `LogEntry`).
//! A value that decodes is encoded again and inspected the way the node inspects it.
//!
//! Input layout: byte 0 picks the type, the rest is the body.
#![no_main]

use groups::codec::{Postcard, Codec};
use groups::frame::{Challenge, Hello, Proof};
use groups::{GroupSet, LogEntry, Message, NetMsg};
use libfuzzer_sys::fuzz_target;

fn again<T: serde::Serialize>(v: &T) {
    let _ = Postcard.encode(v);
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 7 {
        0 | 1 => {
            if let Ok(m) = Postcard.decode::<NetMsg>(body) {
                let _ = (m.kind(), m.is_control());
                if let NetMsg::Entries { entries, .. } = &m {
                    for e in entries {
                        let _ = (e.slots(), e.is_valid());
                    }
                }
                again(&m);
            }
        }
        2 => {
            if let Ok(h) = Postcard.decode::<Hello>(body) {
                again(&h);
            }
        }
        3 => {
            if let Ok(c) = Postcard.decode::<Challenge>(body) {
                again(&c);
            }
        }
        4 => {
            if let Ok(p) = Postcard.decode::<Proof>(body) {
                again(&p);
            }
        }
        5 => {
            if let Ok(s) = Postcard.decode::<GroupSet>(body) {
                let _ = (s.len(), s.first(), s.last(), s.is_empty());
                let _ = s.union(&GroupSet::all(70)).intersection(&s);
                again(&s);
            }
        }
        _ => {
            if let Ok(m) = Postcard.decode::<Message>(body) {
                again(&m);
            }
            if let Ok(e) = Postcard.decode::<LogEntry>(body) {
                let _ = e.is_valid();
                again(&e);
            }
        }
    }
});
