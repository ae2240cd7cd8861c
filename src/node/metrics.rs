//! The node's metrics, served as `GET /metrics` in the OpenMetrics text format (which
//! Prometheus scrapes): counters and histograms updated where things happen, and gauges read
//! from the node's state when scraped.
//!
//! Owns the names and their meaning (docs/operations.md, "Monitoring"). Updating one is an
//! atomic add (a histogram: an atomic add into its bucket), so the write path pays nothing
//! it would notice; labels are looked up in a read-locked map only for HTTP routes and peers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

/// The labels of the per-request metrics borrow the route's name and keep the status as a
/// number, so that counting a request allocates nothing (three strings per request did).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteCodeLabel {
    pub route: &'static str,
    pub code: u16,
}

/// Histograms of durations in seconds: 100 us to about 13 s, doubling.
#[derive(Clone)]
pub struct Seconds;

impl MetricConstructor<Histogram> for Seconds {
    fn new_metric(&self) -> Histogram {
        seconds()
    }
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// The scrape-time view of the node that the gauges show.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub term: u64,
    pub is_leader: bool,
    pub has_leader: bool,
    pub commit_index: u64,
    pub applied_index: u64,
    pub proposals_pending: u64,
    /// Per follower (leader only): entries it is behind the leader's log.
    pub peer_lag: Vec<(String, u64)>,
    pub datums: u64,
    pub watchers: u64,
}

pub struct Metrics {
    registry: Registry,
    pub leader_changes: Counter,
    pub proposals_committed: Counter,
    pub proposals_failed: Counter,
    pub fsync_seconds: Histogram,
    pub batch_entries: Histogram,
    pub snapshots_sent: Counter,
    pub snapshots_installed: Counter,
    pub checkpoint_seconds: Histogram,
    pub peer_rtt: Family<PeerLabel, Histogram, Seconds>,
    pub http_requests: Family<RouteCodeLabel, Counter>,
    pub http_seconds: Family<RouteLabel, Histogram, Seconds>,
    term: Gauge,
    is_leader: Gauge,
    has_leader: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    proposals_pending: Gauge,
    peer_lag: Family<PeerLabel, Gauge>,
    datums: Gauge,
    watchers: Gauge,
    resident_bytes: Gauge,
    open_fds: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            leader_changes: Counter::default(),
            proposals_committed: Counter::default(),
            proposals_failed: Counter::default(),
            fsync_seconds: seconds(),
            batch_entries: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            snapshots_sent: Counter::default(),
            snapshots_installed: Counter::default(),
            checkpoint_seconds: seconds(),
            peer_rtt: Family::new_with_constructor(Seconds),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(Seconds),
            term: Gauge::default(),
            is_leader: Gauge::default(),
            has_leader: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            proposals_pending: Gauge::default(),
            peer_lag: Family::default(),
            datums: Gauge::default(),
            watchers: Gauge::default(),
            resident_bytes: Gauge::default(),
            open_fds: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register("nacos_raft_term", "The current Raft term", m.term.clone());
        r.register(
            "nacos_raft_is_leader",
            "1 if this member leads",
            m.is_leader.clone(),
        );
        r.register(
            "nacos_raft_has_leader",
            "1 if this member knows a leader",
            m.has_leader.clone(),
        );
        r.register(
            "nacos_raft_leader_changes",
            "Times this member saw the leader (or its own role) change",
            m.leader_changes.clone(),
        );
        r.register(
            "nacos_raft_commit_index",
            "The highest log index known committed",
            m.commit_index.clone(),
        );
        r.register(
            "nacos_raft_applied_index",
            "The highest log index applied to the datum set",
            m.applied_index.clone(),
        );
        r.register(
            "nacos_raft_proposals_committed",
            "Client writes proposed here that committed and applied",
            m.proposals_committed.clone(),
        );
        r.register(
            "nacos_raft_proposals_failed",
            "Client writes refused when proposed (not the leader, a transfer) or superseded by another leader's entry",
            m.proposals_failed.clone(),
        );
        r.register(
            "nacos_raft_proposals_pending",
            "Client writes proposed here and not yet answered",
            m.proposals_pending.clone(),
        );
        r.register_with_unit(
            "nacos_raft_log_fsync_duration",
            "Time of one fsync of the log (one per batch of appends)",
            Unit::Seconds,
            m.fsync_seconds.clone(),
        );
        r.register(
            "nacos_raft_log_batch_entries",
            "Entries made durable by one fsync",
            m.batch_entries.clone(),
        );
        r.register(
            "nacos_raft_peer_lag_entries",
            "Leader only: entries each follower is behind the leader's log",
            m.peer_lag.clone(),
        );
        r.register_with_unit(
            "nacos_raft_peer_round_trip",
            "Time from a heartbeat to a peer to its answer",
            Unit::Seconds,
            m.peer_rtt.clone(),
        );
        r.register(
            "nacos_raft_snapshots_sent",
            "Snapshots this member streamed to a follower",
            m.snapshots_sent.clone(),
        );
        r.register(
            "nacos_raft_snapshots_installed",
            "Snapshots this member installed from a leader",
            m.snapshots_installed.clone(),
        );
        r.register_with_unit(
            "nacos_raft_checkpoint_duration",
            "Time to write one checkpoint",
            Unit::Seconds,
            m.checkpoint_seconds.clone(),
        );
        r.register("nacos_datums", "Datums held", m.datums.clone());
        r.register(
            "nacos_watchers",
            "Open watch streams (listeners)",
            m.watchers.clone(),
        );
        r.register(
            "nacos_http_requests",
            "HTTP requests answered, by route and status code",
            m.http_requests.clone(),
        );
        r.register_with_unit(
            "nacos_http_request_duration",
            "Time from a request's head to its answer, by route",
            Unit::Seconds,
            m.http_seconds.clone(),
        );
        r.register_with_unit(
            "process_resident_memory",
            "Resident memory of this process",
            Unit::Bytes,
            m.resident_bytes.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors of this process",
            m.open_fds.clone(),
        );
        m
    }

    /// Counts one answered HTTP request.
    pub fn http(&self, route: &'static str, code: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&RouteCodeLabel { route, code })
            .inc();
        self.http_seconds
            .get_or_create(&RouteLabel { route })
            .observe(seconds);
    }

    /// The exposition, with the gauges set from `now`.
    pub fn render(&self, now: &Snapshot) -> String {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.term.set(g(now.term));
        self.is_leader.set(i64::from(now.is_leader));
        self.has_leader.set(i64::from(now.has_leader));
        self.commit_index.set(g(now.commit_index));
        self.applied_index.set(g(now.applied_index));
        self.proposals_pending.set(g(now.proposals_pending));
        self.datums.set(g(now.datums));
        self.watchers.set(g(now.watchers));
        // Only the leader knows its followers' progress: a member that stopped leading
        // reports none rather than a stale lag.
        self.peer_lag.clear();
        for (peer, lag) in &now.peer_lag {
            self.peer_lag
                .get_or_create(&PeerLabel { peer: peer.clone() })
                .set(g(*lag));
        }
        let (rss, fds) = process_usage();
        self.resident_bytes.set(g(rss));
        self.open_fds.set(g(fds));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding into a String cannot fail");
        out
    }
}

/// This process's resident memory in bytes and its open descriptors, from /proc (zero
/// where /proc does not tell).
fn process_usage() -> (u64, u64) {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * page);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    (rss, fds)
}

/// The route label of a request path: known routes by name, everything else `other`, so a
/// client cannot grow the label set.
pub fn route_label(method: &str, path: &str) -> &'static str {
    match (method, path) {
        ("POST", "/v1/datum") => "publish",
        ("DELETE", "/v1/datum") => "delete",
        ("GET", "/v1/datum") => "get",
        ("GET", "/v1/datums") => "list",
        ("GET", "/v1/watch") => "watch",
        ("GET", "/v1/status") => "status",
        ("GET", "/v1/health") => "health",
        ("GET", "/v1/leader") => "leader",
        ("GET", "/v1/digest") => "digest",
        ("GET", "/metrics") => "metrics",
        ("POST", "/v1/transfer-leader") => "transfer_leader",
        (_, "/v1/members" | "/v1/members/promote") => "members",
        ("POST", "/v1/import") => "import",
        ("GET", "/v1/snapshot") => "snapshot",
        ("POST", "/v1/raft/messages") => "raft_messages",
        ("POST", "/v1/raft/stream") => "raft_stream",
        ("POST", "/v1/raft/snapshot") => "raft_snapshot",
        ("POST", "/v1/raft/forward") => "raft_forward",
        (_, p) if p.starts_with("/v1/auth/") || p.starts_with("/nacos/v1/auth/") => "auth",
        (_, p) if p.starts_with("/nacos/") => "nacos",
        (_, p) if p.starts_with("/ui") => "ui",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_every_documented_name_and_is_openmetrics_text() {
        let m = Metrics::new();
        m.fsync_seconds.observe(0.002);
        m.batch_entries.observe(12.0);
        m.proposals_committed.inc();
        m.http("publish", 200, 0.001);
        m.peer_rtt
            .get_or_create(&PeerLabel {
                peer: "10.0.0.2:8848".into(),
            })
            .observe(0.0005);
        let text = m.render(&Snapshot {
            term: 3,
            is_leader: true,
            has_leader: true,
            commit_index: 42,
            applied_index: 41,
            proposals_pending: 2,
            peer_lag: vec![("10.0.0.2:8848".into(), 5)],
            datums: 7,
            watchers: 1,
        });
        for line in [
            "nacos_raft_term 3",
            "nacos_raft_is_leader 1",
            "nacos_raft_has_leader 1",
            "nacos_raft_leader_changes_total 0",
            "nacos_raft_commit_index 42",
            "nacos_raft_applied_index 41",
            "nacos_raft_proposals_committed_total 1",
            "nacos_raft_proposals_failed_total 0",
            "nacos_raft_proposals_pending 2",
            "nacos_raft_log_fsync_duration_seconds_count 1",
            "nacos_raft_log_batch_entries_count 1",
            "nacos_raft_peer_lag_entries{peer=\"10.0.0.2:8848\"} 5",
            "nacos_raft_peer_round_trip_seconds_count{peer=\"10.0.0.2:8848\"} 1",
            "nacos_raft_snapshots_sent_total 0",
            "nacos_raft_snapshots_installed_total 0",
            "nacos_raft_checkpoint_duration_seconds_count 0",
            "nacos_datums 7",
            "nacos_watchers 1",
            "nacos_http_requests_total{route=\"publish\",code=\"200\"} 1",
            "nacos_http_request_duration_seconds_count{route=\"publish\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        for name in ["process_resident_memory_bytes ", "process_open_fds "] {
            let v: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{text}"));
            assert!(v > 0.0, "{name}{v}");
        }
        // Every family is typed and described, and the exposition ends as OpenMetrics says.
        assert!(text.contains("# TYPE nacos_raft_log_fsync_duration_seconds histogram"));
        assert!(text.contains("# HELP nacos_raft_term "));
        assert!(text.ends_with("# EOF\n"), "{text}");
        // A member that stops leading reports no stale lag.
        let text = m.render(&Snapshot::default());
        assert!(!text.contains("nacos_raft_peer_lag_entries{"), "{text}");
    }

    #[test]
    fn unknown_paths_share_one_route_label() {
        assert_eq!(route_label("POST", "/v1/datum"), "publish");
        assert_eq!(route_label("GET", "/nacos/v1/ns/raft/state"), "nacos");
        assert_eq!(route_label("GET", "/no/such/path/123"), "other");
        assert_eq!(route_label("GET", "/v1/datum/../x"), "other");
    }
}
