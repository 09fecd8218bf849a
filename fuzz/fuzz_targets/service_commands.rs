//! The command and reply types that replicas decode from request bytes and clients from
//! replies: the B+-tree service's, Chirper's, and the engine's test services' (P-SMR key-value
//! and scale-out object key-value), and the B+-tree's range map as clients learn it from a
//! replica's refusal (through `learn_routes`, which must ignore anything malformed).
//!
//! Input layout: byte 0 picks the type, the rest is the encoding.
#![no_main]

use btree_service::service::{TreeCommand, TreeConfig, TreeReply, TreeService};
use engine::psmr::service::Service;
use chirper::service::{Command as ChirperCommand, Post, Reply as ChirperReply, User};
use engine::testing::scaleout::{Cmd, Reply as ObjectReply};
use engine::testing::{KvCommand, KvReply};
use engine::wire;
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
    match which % 11 {
        10 => {
            let service = TreeService::new(TreeConfig::default());
            service.learn_routes(body);
            let _ = service.conservative(&TreeCommand::Get(u64::from(which)), 3);
        }
        0 => check::<TreeCommand>(body),
        1 => check::<TreeReply>(body),
        2 => check::<ChirperCommand>(body),
        3 => check::<ChirperReply>(body),
        4 => check::<User>(body),
        5 => check::<Post>(body),
        6 => check::<KvCommand>(body),
        7 => check::<KvReply>(body),
        8 => check::<Cmd>(body),
        _ => check::<ObjectReply>(body),
    }
});
