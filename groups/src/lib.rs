//! # groups: atomic multicast over fault-tolerant groups
//!
//! Chorus stands on one primitive: *atomic multicast to any set of groups*. A message is
//! addressed to a set of groups; every subscriber of any of those groups delivers it, and all
//! subscribers deliver common messages in one consistent order (validity, uniform agreement,
//! integrity, acyclic order and prefix order; see [`checker`]).
//!
//! How it works:
//! - each *log* ([`config::LogConfig`]) orders the messages of the groups it covers, by
//!   consensus among 2f+1 acceptors ([`log::OrderedLog`], implemented over `omnipaxos`);
//! - a message goes to the log with the smallest coverage containing its destinations
//!   ([`config::ClusterConfig::route`]) and carries its destination set;
//! - every subscriber merges the logs covering its groups with the deterministic Multi-Ring
//!   merge ([`merge`]), and leaders pad idle logs with skip entries so merges keep moving;
//! - [`rmcast`] adds unordered reliable multicast between groups.
//!
//! All protocol code is sans-IO: [`node::GroupsNode`] takes messages and ticks and returns
//! messages and deliveries. Three runtimes drive it: threads and channels ([`runtime::inproc`]),
//! TCP over mio ([`runtime::tcp`]) and a deterministic simulator ([`sim`]).
//!
//! ```
//! use groups::config::{ClusterConfig, NodeConfig, Tuning};
//! use groups::ids::{GroupId, NodeId};
//! use groups::groupset::GroupSet;
//! use groups::sim::{GroupsSim, SimOptions};
//!
//! // Three nodes accept every log; node 1 subscribes to group 0, node 2 to group 1.
//! let nodes = vec![
//!     NodeConfig { id: NodeId(1), addr: None, subscriptions: vec![GroupSet::singleton(GroupId(0))] },
//!     NodeConfig { id: NodeId(2), addr: None, subscriptions: vec![GroupSet::singleton(GroupId(1))] },
//!     NodeConfig { id: NodeId(3), addr: None, subscriptions: vec![] },
//! ];
//! let acceptors = vec![NodeId(1), NodeId(2), NodeId(3)];
//! let cfg = ClusterConfig::per_group_plus_global(1, 2, nodes, acceptors, Tuning::default()).unwrap();
//! let mut sim = GroupsSim::new(cfg, SimOptions::calm(7));
//! let both: GroupSet = [GroupId(0), GroupId(1)].into_iter().collect();
//! sim.multicast(NodeId(3), both, b"hello".to_vec().into());
//! assert!(sim.run_until_quiet(2_000_000)); // two virtual seconds at most
//! assert_eq!(sim.delivered(NodeId(1)).len(), 1);
//! assert_eq!(sim.delivered(NodeId(2)).len(), 1);
//! ```

pub mod checker;
pub mod codec;
pub mod config;
pub mod credentials;
pub mod dedup;
pub mod feed;
pub mod frame;
pub mod groupset;
pub mod ids;
pub mod limits;
pub mod log;
pub mod merge;
pub mod message;
pub mod metrics;
pub mod node;
pub mod readindex;
pub mod record;
pub mod rmcast;
pub mod runtime;
pub(crate) mod sender;
pub(crate) mod server;
pub mod sim;

pub use groupset::GroupSet;
pub use ids::{GroupId, LogId, MsgId, NodeId};
pub use message::{LogEntry, Message, NetMsg};
pub use node::{GroupsNode, NodeOptions, NodeStats};
pub use sender::MulticastError;
