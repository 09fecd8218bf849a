//! Metrics of a running node in the Prometheus text exposition format (0.0.4).
//!
//! - [`Exposition`] builds the text: counters, gauges and histograms, with `# HELP` / `# TYPE`
//!   once per metric family and escaped label values.
//! - The HTTP endpoint that serves it is a runtime's, [`crate::runtime::metrics_http`].
//! - [`Observed`] wraps the application of a node and snapshots the node's counters and
//!   per-log positions (at most every [`SNAPSHOT_EVERY`]) for [`render_node`].
//!
//! The engine adds renderers for P-SMR workers, partitions and the oracle (`engine::metrics`,
//! which re-exports this module); `groups-node` serves [`render_node`] alone.
//!
//! Counters are totals since the process started (names end in `_total`); rates are computed
//! by Prometheus over them, e.g. `sum(rate(chorus_node_delivered_total[1m]))`.

use crate::node::{GroupsNode, NodeStats};
use crate::runtime::inproc::App;
use crate::runtime::Waker;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Whether `name` is a valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `name` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A float as the exposition format writes it.
fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// A builder of a text exposition (format 0.0.4).
///
/// Samples of one metric family must be added together (one family after the other): the
/// `# HELP` and `# TYPE` lines are written before the first sample of a family only. Metric
/// and label names are checked in debug builds (a bad name is a programming error).
#[derive(Default)]
pub struct Exposition {
    out: String,
    families: BTreeSet<String>,
    last: Option<String>,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        &self.out
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        debug_assert!(valid_metric_name(name), "bad metric name {name:?}");
        if self.last.as_deref() == Some(name) {
            return;
        }
        debug_assert!(
            !self.families.contains(name),
            "samples of metric family {name:?} are not contiguous"
        );
        self.families.insert(name.to_string());
        self.last = Some(name.to_string());
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_help(help, &mut self.out);
        self.out.push('\n');
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// `name{labels,extra} ` (with the trailing space).
    fn sample_start(&mut self, name: &str, labels: &[(&str, &str)], extra: Option<(&str, &str)>) {
        self.out.push_str(name);
        let all = labels.iter().copied().chain(extra);
        let mut first = true;
        for (k, v) in all {
            debug_assert!(valid_label_name(k), "bad label name {k:?}");
            self.out.push(if first { '{' } else { ',' });
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_label_value(v, &mut self.out);
            self.out.push('"');
        }
        if !first {
            self.out.push('}');
        }
        self.out.push(' ');
    }

    /// A counter sample (a total since start; the name should end in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.header(name, help, "counter");
        self.sample_start(name, labels, None);
        let _ = writeln!(self.out, "{value}");
    }

    /// A gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.header(name, help, "gauge");
        self.sample_start(name, labels, None);
        write_float(&mut self.out, value);
        self.out.push('\n');
    }

    /// A histogram: `name_bucket{le=...}` cumulative counts for each bound (in the histogram's
    /// unit, ascending) and `+Inf`, then `name_sum` and `name_count`. Exported values are the
    /// recorded ones divided by `divisor` (e.g. `1e6` to export microseconds as seconds). The counts
    /// are those of hdrhistogram's buckets (a value within its precision of a bound may count
    /// in that bound's bucket) and the sum is `mean × count`, not an exact sum.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        h: &Histogram<u64>,
        bounds: &[u64],
        divisor: f64,
    ) {
        self.header(name, help, "histogram");
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "unsorted bounds");
        let bucket = format!("{name}_bucket");
        let mut le = String::new();
        for &b in bounds {
            le.clear();
            write_float(&mut le, b as f64 / divisor);
            let count = if h.is_empty() {
                0
            } else {
                h.count_between(0, b)
            };
            self.sample_start(&bucket, labels, Some(("le", &le)));
            let _ = writeln!(self.out, "{count}");
        }
        self.sample_start(&bucket, labels, Some(("le", "+Inf")));
        let _ = writeln!(self.out, "{}", h.len());
        self.sample_start(&format!("{name}_sum"), labels, None);
        let sum = if h.is_empty() {
            0.0
        } else {
            h.mean() * h.len() as f64 / divisor
        };
        write_float(&mut self.out, sum);
        self.out.push('\n');
        self.sample_start(&format!("{name}_count"), labels, None);
        let _ = writeln!(self.out, "{}", h.len());
    }
}

/// How often [`Observed`] snapshots its node at most.
pub const SNAPSHOT_EVERY: Duration = Duration::from_millis(200);

/// Where one log stands as seen by one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSnapshot {
    pub log: u32,
    /// This acceptor's decided index (`None`: the node is not an acceptor of the log).
    pub decided: Option<u64>,
    /// First index this acceptor still holds.
    pub first: Option<u64>,
    /// Next index this node's subscriptions need (`None`: the node does not read the log).
    pub feed_next: Option<u64>,
    /// The leader as this acceptor sees it.
    pub leader: Option<u32>,
    pub leads: bool,
}

/// A node's counters and log positions at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSnapshot {
    pub node: u32,
    /// Whether a snapshot was taken at all (the node attached).
    pub taken: bool,
    pub stats: NodeStats,
    pub logs: Vec<LogSnapshot>,
}

impl NodeSnapshot {
    pub fn of(node: &GroupsNode) -> Self {
        let logs = node
            .config()
            .logs
            .iter()
            .map(|l| {
                let log = l.id;
                LogSnapshot {
                    log: log.0,
                    decided: node.decided_idx(log),
                    first: node.first_idx(log),
                    feed_next: node.feed_next(log),
                    leader: node.leader_of(log).map(|n| n.0),
                    leads: node.leads(log),
                }
            })
            .collect();
        NodeSnapshot {
            node: node.id().0,
            taken: true,
            stats: node.stats(),
            logs,
        }
    }
}

/// A node snapshot shared between the node's thread and the metrics endpoint.
pub type SharedNodeSnapshot = Arc<Mutex<NodeSnapshot>>;

/// An [`App`] that runs `inner` and snapshots its node into a [`SharedNodeSnapshot`] at
/// attach, at most every [`SNAPSHOT_EVERY`] after a step, and at detach.
pub struct Observed<A> {
    pub inner: A,
    snapshot: SharedNodeSnapshot,
    last: Option<Instant>,
}

impl<A> Observed<A> {
    pub fn new(inner: A) -> Self {
        Observed {
            inner,
            snapshot: SharedNodeSnapshot::default(),
            last: None,
        }
    }

    /// The shared snapshot (render it with [`render_node`]).
    pub fn snapshot(&self) -> SharedNodeSnapshot {
        self.snapshot.clone()
    }

    pub fn into_inner(self) -> A {
        self.inner
    }

    fn take(&mut self, node: &GroupsNode, now: Instant) {
        *self.snapshot.lock() = NodeSnapshot::of(node);
        self.last = Some(now);
    }
}

impl<A: App> App for Observed<A> {
    fn attach(&mut self, node: &mut GroupsNode, waker: Waker) {
        self.inner.attach(node, waker);
        self.take(node, Instant::now());
    }

    fn step(&mut self, node: &mut GroupsNode) {
        self.inner.step(node);
        let now = Instant::now();
        if self.last.is_none_or(|at| now >= at + SNAPSHOT_EVERY) {
            self.take(node, now);
        }
    }

    fn detach(&mut self, node: &mut GroupsNode) {
        self.take(node, Instant::now());
        self.inner.detach(node);
    }
}

/// Renders a node snapshot: `chorus_node_*_total` counters and `chorus_log_*` gauges per log.
pub fn render_node(s: &NodeSnapshot, e: &mut Exposition) {
    if !s.taken {
        return;
    }
    e.gauge(
        "chorus_node_id",
        "Id of this node in the cluster file.",
        &[],
        f64::from(s.node),
    );
    let st = &s.stats;
    let counters: [(&str, &str, u64); 10] = [
        (
            "chorus_node_multicasts_total",
            "Multicasts accepted from the application.",
            st.multicasts,
        ),
        (
            "chorus_node_resends_total",
            "Multicasts resent after a timeout.",
            st.resends,
        ),
        (
            "chorus_node_redirects_total",
            "Multicasts redirected to a new leader.",
            st.redirects,
        ),
        (
            "chorus_node_became_leader_total",
            "Times this node became leader of one of its logs.",
            st.became_leader,
        ),
        (
            "chorus_node_batches_proposed_total",
            "Batches proposed as leader.",
            st.batches_proposed,
        ),
        (
            "chorus_node_skips_proposed_total",
            "Skips proposed as leader.",
            st.skips_proposed,
        ),
        (
            "chorus_node_held_back_total",
            "Flushes that left batches waiting for the in-flight bound.",
            st.held_back,
        ),
        (
            "chorus_node_fetches_total",
            "Fetches sent by this node's feeds.",
            st.fetches,
        ),
        (
            "chorus_node_delivered_total",
            "Messages delivered, over all subscriptions.",
            st.delivered,
        ),
        (
            "chorus_node_rejected_total",
            "Peer messages refused as malformed or misrouted.",
            st.rejected,
        ),
    ];
    for (name, help, v) in counters {
        e.counter(name, help, &[], v);
    }
    type Pick = fn(&LogSnapshot) -> Option<f64>;
    let gauges: [(&str, &str, Pick); 5] = [
        (
            "chorus_log_decided_index",
            "Decided index of the log at this acceptor.",
            |l| l.decided.map(|v| v as f64),
        ),
        (
            "chorus_log_first_index",
            "First index of the log still held by this acceptor.",
            |l| l.first.map(|v| v as f64),
        ),
        (
            "chorus_log_feed_next_index",
            "Next index of the log this node's subscriptions need.",
            |l| l.feed_next.map(|v| v as f64),
        ),
        (
            "chorus_log_is_leader",
            "1 if this node leads the log, else 0 (acceptors only).",
            |l| l.decided.map(|_| if l.leads { 1.0 } else { 0.0 }),
        ),
        (
            "chorus_log_leader_node",
            "The log's leader as this acceptor sees it.",
            |l| l.leader.map(f64::from),
        ),
    ];
    for (name, help, pick) in gauges {
        for l in &s.logs {
            if let Some(v) = pick(l) {
                let log = l.log.to_string();
                e.gauge(name, help, &[("log", &log)], v);
            }
        }
    }
}

/// Renders a TCP node's link counters and gauges (`chorus_link_*_total`, `chorus_link_*`):
/// refused frames, the outcomes of handshakes, refusals under the [`crate::config::Limits`]
/// and accept failures ([`crate::runtime::tcp::LinkStats`]).
pub fn render_links(c: &crate::runtime::tcp::LinkCounts, e: &mut Exposition) {
    let counters: [(&str, &str, u64); 15] = [
        (
            "chorus_link_frame_errors_total",
            "Frames from peers refused as malformed or out of turn.",
            c.frame_errors,
        ),
        (
            "chorus_link_auth_failures_total",
            "Peer handshakes that failed at this node.",
            c.auth_failures,
        ),
        (
            "chorus_link_bad_proofs_total",
            "Peer proofs that did not verify against the cluster secret.",
            c.bad_proofs,
        ),
        (
            "chorus_link_plain_hellos_refused_total",
            "Unauthenticated hellos refused because this node has a secret.",
            c.plain_hellos_refused,
        ),
        (
            "chorus_link_auth_hellos_refused_total",
            "Authenticating hellos refused because this node has no secret.",
            c.auth_hellos_refused,
        ),
        (
            "chorus_link_handshake_timeouts_total",
            "Connections closed because their handshake took longer than the deadline.",
            c.handshake_timeouts,
        ),
        (
            "chorus_link_handshakes_total",
            "Handshakes completed, as dialer or acceptor.",
            c.handshakes,
        ),
        (
            "chorus_link_frame_timeouts_total",
            "Connections closed because a frame was not complete within the frame deadline.",
            c.frame_timeouts,
        ),
        (
            "chorus_link_connections_refused_total",
            "Inbound connections closed at once: caps reached, nothing to evict.",
            c.connections_refused,
        ),
        (
            "chorus_link_connections_evicted_total",
            "Inbound connections in their handshake evicted under the connection caps.",
            c.connections_evicted,
        ),
        (
            "chorus_link_budget_waits_total",
            "Times a connection stopped being read for want of inbound budget.",
            c.budget_waits,
        ),
        (
            "chorus_link_accept_errors_total",
            "Failed accepts (out of descriptors, buffers or memory, or other errors).",
            c.accept_errors,
        ),
        (
            "chorus_link_tls_failures_total",
            "TLS handshakes refused or broken (certificate, plaintext stranger).",
            c.tls_failures,
        ),
        (
            "chorus_link_tls_identity_mismatches_total",
            "Hellos claiming another node than the dialer's TLS certificate names.",
            c.tls_identity_mismatches,
        ),
        (
            "chorus_link_accept_shed_total",
            "Pending connections accepted and closed at once while out of descriptors.",
            c.accept_shed,
        ),
    ];
    for (name, help, v) in counters {
        e.counter(name, help, &[], v);
    }
    let gauges: [(&str, &str, u64); 4] = [
        (
            "chorus_link_inbound_connections",
            "Inbound connections held.",
            c.inbound_connections,
        ),
        (
            "chorus_link_inbound_bytes",
            "Bytes of the inbound budget reserved by frame buffers.",
            c.inbound_bytes,
        ),
        (
            "chorus_link_inbound_waiting",
            "Connections waiting for room in the inbound budget.",
            c.inbound_waiting,
        ),
        (
            "chorus_link_accept_paused",
            "1 while accepting is paused after a resource error, else 0.",
            c.accept_paused,
        ),
    ];
    for (name, help, v) in gauges {
        e.gauge(name, help, &[], v as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_metric_name("a_b:c9"));
        assert!(valid_metric_name(":x"));
        assert!(!valid_metric_name("9x"));
        assert!(!valid_metric_name(""));
        assert!(!valid_metric_name("a-b"));
        assert!(valid_label_name("_le"));
        assert!(!valid_label_name("a:b"));
    }

    #[test]
    fn counters_and_gauges_with_one_header_per_family() {
        let mut e = Exposition::new();
        e.counter("x_total", "An x.", &[("a", "1")], 3);
        e.counter("x_total", "An x.", &[("a", "2")], 4);
        e.gauge("g", "A g\\ with\nnewline.", &[], 1.5);
        e.gauge("h", "H.", &[("l", "v"), ("m", "w")], f64::INFINITY);
        assert_eq!(
            e.finish(),
            "# HELP x_total An x.\n# TYPE x_total counter\nx_total{a=\"1\"} 3\nx_total{a=\"2\"} 4\n\
             # HELP g A g\\\\ with\\nnewline.\n# TYPE g gauge\ng 1.5\n\
             # HELP h H.\n# TYPE h gauge\nh{l=\"v\",m=\"w\"} +Inf\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::new();
        e.counter("c_total", "C.", &[("p", "a\\b\"c\nd")], 0);
        assert_eq!(
            e.finish(),
            "# HELP c_total C.\n# TYPE c_total counter\nc_total{p=\"a\\\\b\\\"c\\nd\"} 0\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        for v in [1, 5, 5, 50, 500] {
            h.record(v).unwrap();
        }
        let mut e = Exposition::new();
        e.histogram("lat", "L.", &[("w", "0")], &h, &[2, 10, 100], 1.0);
        assert_eq!(
            e.finish(),
            "# HELP lat L.\n# TYPE lat histogram\n\
             lat_bucket{w=\"0\",le=\"2\"} 1\nlat_bucket{w=\"0\",le=\"10\"} 3\n\
             lat_bucket{w=\"0\",le=\"100\"} 4\nlat_bucket{w=\"0\",le=\"+Inf\"} 5\n\
             lat_sum{w=\"0\"} 561\nlat_count{w=\"0\"} 5\n"
        );
    }

    #[test]
    fn empty_histogram_scaled() {
        let h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 2).unwrap();
        let mut e = Exposition::new();
        e.histogram("t_seconds", "T.", &[], &h, &[500, 1000], 1e3);
        assert_eq!(
            e.finish(),
            "# HELP t_seconds T.\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{le=\"0.5\"} 0\nt_seconds_bucket{le=\"1\"} 0\n\
             t_seconds_bucket{le=\"+Inf\"} 0\nt_seconds_sum 0\nt_seconds_count 0\n"
        );
    }
}
