//! What a TCP node accepts from the network: the `[limits]` table of the cluster file.
//!
//! ```toml
//! [limits]
//! inbound_connections_max = 1024        # inbound connections held at once
//! inbound_connections_per_ip_max = 256  # of them from one IP address
//! inbound_bytes_max = 134217728         # bytes all inbound frame buffers may hold (128 MiB)
//! handshake_deadline_ms = 5000          # hello (and proof, and TLS) done within this
//! frame_deadline_ms = 10000             # a frame whose first byte arrived is complete within this
//! accept_retry_ms = 100                 # accept again after this when out of descriptors
//! ```
//!
//! Every value has a default (above) and is validated with the rest of the configuration. How
//! the TCP runtime enforces them is described in [`crate::runtime::tcp`] ("Limits").

use crate::config::ConfigError;
use serde::{Deserialize, Serialize};

/// Limits on inbound connections and their buffers (the `[limits]` table). Times are in
/// milliseconds of real time, not ticks: they bound what a remote process can make a node hold,
/// whatever the consensus tick is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Inbound connections a node holds at once, established or in their handshake. At the cap
    /// a new connection evicts the longest-idle connection that has not completed its handshake
    /// (established links of configured nodes are never evicted for a stranger); when every
    /// held connection is established, the new one is closed. At least the number of nodes in
    /// the cluster (every other node's link and one handshake).
    pub inbound_connections_max: usize,
    /// Inbound connections from one IP address, with the same eviction. Must not exceed
    /// `inbound_connections_max`; the TCP runtime also refuses to start when more configured
    /// nodes share an IP address than this allows.
    pub inbound_connections_per_ip_max: usize,
    /// Bytes that the frame buffers of all inbound connections together may hold. A frame
    /// larger than [`Limits::SMALL_FRAME_BYTES`] is admitted only once the budget has room for
    /// all of it; until then its connection is not read (the peer's TCP window fills and it
    /// waits), and it is read again, in arrival order, as other frames complete or connections
    /// close. At least [`crate::frame::FRAME_BYTES_MAX`] plus [`Limits::SMALL_FRAME_BYTES`], so
    /// the largest frame can always be admitted.
    pub inbound_bytes_max: usize,
    /// A connection must complete its handshake within this, from the accept (or the dial):
    /// the `Hello`, and with a cluster secret the `Proof`, and with TLS the TLS handshake.
    /// Otherwise it is closed and counted (`handshake_timeouts`).
    pub handshake_deadline_ms: u64,
    /// A frame whose first byte arrived must be complete within this (time spent waiting for
    /// the inbound budget does not count). Otherwise the connection is closed and counted
    /// (`frame_timeouts`): a peer that trickles a frame cannot hold its buffer for long.
    pub frame_deadline_ms: u64,
    /// When `accept` fails for want of resources (out of file descriptors, buffers or
    /// memory), the node keeps serving its connections and tries to accept again after this.
    pub accept_retry_ms: u64,
}

impl Limits {
    /// Frames up to this size are read without a whole-frame reservation (each read of a
    /// connection still reserves what it may buffer).
    pub const SMALL_FRAME_BYTES: usize = 64 << 10;

    pub(crate) fn validate(&self, nodes: usize) -> Result<(), ConfigError> {
        let positive: [(&'static str, u64); 5] = [
            (
                "inbound_connections_per_ip_max",
                self.inbound_connections_per_ip_max as u64,
            ),
            ("inbound_bytes_max", self.inbound_bytes_max as u64),
            ("handshake_deadline_ms", self.handshake_deadline_ms),
            ("frame_deadline_ms", self.frame_deadline_ms),
            ("accept_retry_ms", self.accept_retry_ms),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ConfigError::Limit {
                    name,
                    rule: "greater than 0".into(),
                });
            }
        }
        if self.inbound_connections_max < nodes.max(1) {
            return Err(ConfigError::Limit {
                name: "inbound_connections_max",
                rule: format!(
                    "at least the number of nodes in the cluster ({nodes}): one link from \
                     every other node and one handshake"
                ),
            });
        }
        if self.inbound_connections_per_ip_max > self.inbound_connections_max {
            return Err(ConfigError::Limit {
                name: "inbound_connections_per_ip_max",
                rule: "at most inbound_connections_max".into(),
            });
        }
        let least = crate::frame::FRAME_BYTES_MAX + Self::SMALL_FRAME_BYTES;
        if self.inbound_bytes_max < least {
            return Err(ConfigError::Limit {
                name: "inbound_bytes_max",
                rule: format!(
                    "at least {least} bytes (the largest frame and one read), so the largest \
                     frame can always be admitted"
                ),
            });
        }
        Ok(())
    }

    /// Whether every value is the default (the TOML form then leaves the table out).
    pub fn is_default(&self) -> bool {
        *self == Limits::default()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            inbound_connections_max: 1024,
            inbound_connections_per_ip_max: 256,
            inbound_bytes_max: 128 << 20,
            handshake_deadline_ms: 5_000,
            frame_deadline_ms: 10_000,
            accept_retry_ms: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Limits::default().validate(100).unwrap();
    }

    #[test]
    fn bad_limits_are_refused_with_reasons() {
        let l = Limits::default;
        let refused = |limits: Limits, nodes: usize| match limits.validate(nodes) {
            Err(ConfigError::Limit { name, .. }) => name,
            other => panic!("{limits:?}: {other:?}"),
        };
        assert_eq!(
            refused(
                Limits {
                    frame_deadline_ms: 0,
                    ..l()
                },
                3
            ),
            "frame_deadline_ms"
        );
        assert_eq!(
            refused(
                Limits {
                    inbound_connections_max: 3,
                    ..l()
                },
                4
            ),
            "inbound_connections_max"
        );
        assert_eq!(
            refused(
                Limits {
                    inbound_connections_max: 8,
                    inbound_connections_per_ip_max: 9,
                    ..l()
                },
                3
            ),
            "inbound_connections_per_ip_max"
        );
        assert_eq!(
            refused(
                Limits {
                    inbound_bytes_max: crate::frame::FRAME_BYTES_MAX,
                    ..l()
                },
                3
            ),
            "inbound_bytes_max"
        );
        let e = Limits {
            inbound_bytes_max: 1,
            ..l()
        }
        .validate(3)
        .unwrap_err();
        assert!(e.to_string().contains("inbound_bytes_max"), "{e}");
    }
}
