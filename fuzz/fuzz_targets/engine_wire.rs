//! P-SMR client/replica messages: `Request`s and the command inside, `Reply`s, the envelope of
//! point-to-point messages (`AppMsg`, with the addressee of messages to clients), and a
//! replica decoding a delivered payload (`Executor::decode`, through the `FeedMsg` envelope)
//! for a delivery to arbitrary groups.
//!
//! Input layout: byte 0 picks the decoder (and the delivery's groups), the rest is the input.
#![no_main]

use bytes::Bytes;
use engine::psmr::executor::{ExecOptions, Executor};
use engine::testing::{KvCommand, KvReply, KvService};
use engine::wire::{self, AppMsg};
use engine::psmr::msg::{Reply, Request};
use groups::merge::Delivery;
use groups::{GroupId, GroupSet, LogId, Message, MsgId, NodeId};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(r) = wire::decode::<Request>(body) {
                let _ = r.client.node();
                let _ = wire::decode::<KvCommand>(&r.command);
                let _ = wire::encode(&r);
            }
        }
        1 => {
            if let Ok(r) = wire::decode::<Reply<KvReply>>(body) {
                let _ = wire::encode(&r);
            }
        }
        2 => {
            if let Ok(AppMsg::ToClient { client, body: rest }) = AppMsg::parse(body) {
                let _ = client.node();
                if let Ok(r) = wire::decode::<Reply<KvReply>>(rest) {
                    let _ = AppMsg::to_client(client, &r);
                }
            }
        }
        _ => {
            // Groups 0..8 from the selector's high bits, four workers.
            let dests: GroupSet = (0..8)
                .filter(|g| which >> 2 & (1 << (g % 6)) != 0)
                .map(GroupId)
                .collect();
            let delivery = Delivery {
                msg: Message {
                    id: MsgId {
                        sender: NodeId(1),
                        epoch: 0,
                        seq: 0,
                    },
                    log_seq: 0,
                    dests,
                    payload: Bytes::copy_from_slice(body),
                },
                log: LogId(0),
                index: 0,
            };
            let ex = Executor::new(
                Arc::new(KvService::default()),
                4,
                NodeId(1),
                ExecOptions::default(),
            );
            if let Some(job) = ex.decode(&delivery) {
                let _ = job.executor();
            }
        }
    }
});
