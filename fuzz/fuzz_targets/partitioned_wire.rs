//! Scale-out (S-SMR / DS-SMR) messages: the atomically multicast `Multicast`, the exchanges
//! between partitions (`Exchange<V>`, for the test service's `i64` objects and Chirper's
//! `User` objects), point-to-point `Peer<V>`, and messages to clients (`ToClient<R>`, inside
//! their `AppMsg` envelope).
//!
//! Input layout: byte 0 picks the type, the rest is the body.
#![no_main]

use chirper::service::{Reply as ChirperReply, User};
use engine::partitioned::msg::{Exchange, Multicast, Peer, Prophecy, ToClient};
use engine::testing::scaleout::Reply as KvReply;
use engine::wire::{self, AppMsg};
use libfuzzer_sys::fuzz_target;

fn check<T: serde::Serialize + serde::de::DeserializeOwned>(body: &[u8]) {
    if let Ok(v) = wire::decode::<T>(body) {
        let _ = wire::encode(&v);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 9 {
        0 | 1 => {
            if let Ok(m) = wire::decode::<Multicast>(body) {
                if let Multicast::Command(c) = &m {
                    let _ = c.kind.objects();
                }
                let _ = wire::encode(&m);
            }
        }
        2 => {
            if let Ok(e) = wire::decode::<Exchange<i64>>(body) {
                let _ = e.msg();
            }
        }
        3 => {
            if let Ok(e) = wire::decode::<Exchange<User>>(body) {
                let _ = e.msg();
                let _ = wire::encode(&e);
            }
        }
        4 => check::<Peer<i64>>(body),
        5 => check::<Peer<User>>(body),
        6 => check::<Prophecy>(body),
        7 => {
            if let Ok(AppMsg::ToClient { body: rest, .. }) = AppMsg::parse(body) {
                check::<ToClient<KvReply>>(rest);
            }
        }
        _ => {
            if let Ok(AppMsg::ToClient { body: rest, .. }) = AppMsg::parse(body) {
                check::<ToClient<ChirperReply>>(rest);
            }
        }
    }
});
