//! Checkpoints and state transfer of scale-out replicas (partition and oracle replicas).
//!
//! The same scheme as P-SMR replicas' ([`crate::checkpoint`]), with one merge per replica:
//!
//! - **Where a checkpoint lies.** A replica that checkpoints runs its own merge of its group's
//!   logs (its node hands out decided entries, `merge_locally = false`). A checkpoint request
//!   ([`crate::checkpoint::request_payload`]) is multicast to *every* group (the layout's
//!   global log covers them all), so it has one place in every partition's and the oracle's
//!   stream, and the streams being projections of one total order, a command before it at one
//!   partition is before it at every partition that delivers both. A replica takes part in a
//!   round above the last one it took (duplicates are ignored the same way everywhere).
//! - **What it holds.** The merger's position right after the request, and the core's state
//!   once everything delivered before the request was handled and nothing after it begun:
//!   a partition's objects, client table, the exchanges that already arrived for later
//!   commands, its outbox (what it sent, so it can still answer pulls), recent deliveries,
//!   counters and views ([`super::server::PartitionServer::snapshot`]); the oracle's map,
//!   digests, client table, outbox, counters and views
//!   ([`super::oracle::OracleServer::snapshot`]). Exchanges for later commands that had not
//!   arrived yet, and the ones a restored replica misses while it installs, are pulled from
//!   the sending partition's replicas as always (`pull_ticks`).
//! - **Trimming and transfer.** As for P-SMR: the replica reports the checkpoint's positions
//!   ([`groups::node::GroupsNode::set_checkpointed`]); a replica whose log was trimmed past it
//!   fetches a peer's checkpoint in chunks ([`crate::checkpoint::Recovery`],
//!   [`crate::checkpoint::Store`]), installs it and restarts its feeds at its positions.
//!
//! Transfer messages share the application channel with the partitions' peer messages
//! (pulls and answers); they carry a [`TRANSFER_TAG`] prefix to tell them apart.

use crate::checkpoint::{CheckpointError, Transfer};
use crate::wire;
use bytes::{BufMut, Bytes, BytesMut};
use groups::ids::LogId;
use groups::merge::MergerState;
use serde::{Deserialize, Serialize};

/// The prefix of a scale-out replica's transfer messages.
pub const TRANSFER_TAG: &[u8; 8] = b"\xC7chorus\x01";

/// A scale-out replica's checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScaleOutCheckpoint {
    pub round: u64,
    /// The group whose replicas took it (a partition, or the oracle's group).
    pub group: u32,
    /// The replica's merger right after the checkpoint request.
    pub merger: MergerState,
    /// The core's state hash when it was taken (equal at every replica of the group for
    /// the same round).
    pub hash: u64,
    /// The core's snapshot.
    pub core: Vec<u8>,
}

impl ScaleOutCheckpoint {
    /// Per log, the first entry the checkpoint does not cover.
    pub fn positions(&self) -> Vec<(LogId, u64)> {
        self.merger.resume_at().collect()
    }

    pub fn encode(&self) -> Bytes {
        wire::encode(self).into()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CheckpointError> {
        wire::decode(bytes).map_err(|e| CheckpointError::Decode(e.to_string()))
    }
}

/// An encoded transfer message ([`Transfer::encode`]) as sent between scale-out replicas.
pub fn tag(body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(TRANSFER_TAG.len() + body.len());
    b.put_slice(TRANSFER_TAG);
    b.put_slice(body);
    b.freeze()
}

/// The transfer message in an application message, if it is one.
pub fn untag(bytes: &[u8]) -> Option<Transfer> {
    let body = bytes.strip_prefix(TRANSFER_TAG)?;
    Transfer::decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_transfer_messages_round_trip_and_others_are_not_taken_for_them() {
        let m = Transfer::Get {
            round: Some(3),
            offset: 1 << 20,
        };
        assert_eq!(untag(&tag(&m.encode())), Some(m));
        assert_eq!(untag(b"\x00\x01\x02"), None);
        assert_eq!(untag(&Transfer::NoCheckpoint.encode()), None, "untagged");
        let mut bad = TRANSFER_TAG.to_vec();
        bad.extend_from_slice(b"\xff\xff\xff\xff");
        assert_eq!(untag(&bad), None);
        assert!(ScaleOutCheckpoint::decode(b"\x01").is_err());
    }

    #[test]
    fn cores_restore_their_own_snapshots_and_refuse_others_with_typed_errors() {
        use crate::partitioned::layout::{self, ScaleOutLayout};
        use crate::partitioned::oracle::OracleServer;
        use crate::partitioned::server::PartitionServer;
        use crate::partitioned::{Scheme, ServerOptions};
        use crate::testing::scaleout::ObjectKv;
        use groups::ids::NodeId;
        use std::sync::Arc;

        let l = ScaleOutLayout::new(Scheme::Dssmr, 2, 3, 1, 1, layout::tuning()).unwrap();
        let cfg = Arc::new(l.config.clone());
        let service = Arc::new(ObjectKv { preload: 10 });
        let opts = ServerOptions::new(Scheme::Dssmr);
        let p0 = PartitionServer::new(service.clone(), cfg.clone(), NodeId(1), 0, 2, opts.clone());
        assert!(p0.objects().count() > 0, "preloaded objects");
        let snap = p0.snapshot();
        let back = PartitionServer::restore(
            service.clone(),
            cfg.clone(),
            NodeId(2),
            0,
            2,
            opts.clone(),
            &snap,
        )
        .unwrap();
        assert_eq!(back.state_hash(), p0.state_hash());
        assert_eq!(back.digest(), p0.digest());
        assert!(matches!(
            PartitionServer::restore(
                service.clone(),
                cfg.clone(),
                NodeId(4),
                1,
                2,
                opts.clone(),
                &snap
            ),
            Err(CheckpointError::Mismatch(_))
        ));
        assert!(matches!(
            PartitionServer::restore(
                service.clone(),
                cfg.clone(),
                NodeId(2),
                0,
                2,
                opts.clone(),
                &snap[..snap.len() / 2]
            ),
            Err(CheckpointError::Decode(_))
        ));
        let o = OracleServer::new(service.clone(), cfg.clone(), NodeId(7), 2, opts.clone());
        let snap = o.snapshot();
        let back = OracleServer::restore(
            service.clone(),
            cfg.clone(),
            NodeId(8),
            2,
            opts.clone(),
            &snap,
        )
        .unwrap();
        assert_eq!(back.state_hash(), o.state_hash());
        assert_eq!(
            back.locations().collect::<Vec<_>>(),
            o.locations().collect::<Vec<_>>()
        );
        assert!(matches!(
            OracleServer::restore(
                service.clone(),
                cfg.clone(),
                NodeId(8),
                3,
                opts.clone(),
                &snap
            ),
            Err(CheckpointError::Mismatch(_))
        ));
        assert!(OracleServer::restore(service, cfg, NodeId(8), 2, opts, b"junk").is_err());
    }
}
