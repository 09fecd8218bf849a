//! A TCP node's link counters and gauges, shared with other threads (metrics).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! link_stats {
    ($( $(#[$doc:meta])* $name:ident, )*) => {
        /// Counters and gauges of a node's links, readable from other threads while the node
        /// runs ([`super::TcpNode::stats`]).
        #[derive(Debug, Default)]
        pub struct LinkStats {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        /// A snapshot of [`LinkStats`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct LinkCounts {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl LinkStats {
            pub fn get(&self) -> LinkCounts {
                LinkCounts {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                }
            }
        }
    };
}

link_stats! {
    /// Frames refused: malformed, or out of turn (every refusal below that a frame caused is
    /// counted here too).
    frame_errors,
    /// Handshakes that failed at this node, for any reason below, or because the peer closed
    /// the connection in the middle of one.
    auth_failures,
    /// Peer proofs (in a `Challenge` or a `Proof`) that did not verify: the peer does not know
    /// this node's secret.
    bad_proofs,
    /// `Hello`s without nonce refused because this node has a secret.
    plain_hellos_refused,
    /// `Hello`s with a nonce refused because this node has no secret.
    auth_hellos_refused,
    /// Connections closed because their handshake (hello, proof, TLS) took longer than the
    /// deadline, with or without a secret.
    handshake_timeouts,
    /// Handshakes completed: with a secret, as dialer or as acceptor (the proofs checked);
    /// without, as acceptor (a `Hello` from a configured node arrived).
    handshakes,
    /// Connections closed because a frame that had begun was not complete within the frame
    /// deadline (a trickling peer).
    frame_timeouts,
    /// Inbound connections closed at once because the connection caps were reached and no
    /// connection could be evicted for them.
    connections_refused,
    /// Inbound connections that had not completed their handshake, evicted (longest idle
    /// first) to make room for a new connection under the connection caps.
    connections_evicted,
    /// Times a connection stopped being read because the inbound byte budget had no room for
    /// its next frame.
    budget_waits,
    /// `accept` failures (out of file descriptors, buffers or memory, or other errors);
    /// transient ones that the loop skips (a connection aborted before it was accepted) are
    /// not counted.
    accept_errors,
    /// Pending connections accepted and closed at once, with the spare descriptor, while the
    /// node was out of file descriptors (so they fail fast instead of hanging in the backlog).
    accept_shed,
    /// TLS failures: handshakes refused (a certificate that does not chain to the cluster CA
    /// or names another member than the one dialled, plaintext on a TLS port) or broken
    /// records.
    tls_failures,
    /// `Hello`s whose node id is not the one the dialer's TLS certificate names (a member
    /// claiming to be another).
    tls_identity_mismatches,
    /// Gauge: inbound connections held now.
    inbound_connections,
    /// Gauge: bytes reserved now by the frame buffers of all connections (at most
    /// `inbound_bytes_max`).
    inbound_bytes,
    /// Gauge: connections waiting for room in the inbound byte budget now.
    inbound_waiting,
    /// Gauge: 1 while accepting is paused after a resource error (retried on a timer), else 0.
    accept_paused,
}

pub(super) fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

pub(super) fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

pub(super) fn set(a: &AtomicU64, v: u64) {
    a.store(v, Ordering::Relaxed);
}
