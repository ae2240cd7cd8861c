//! The node shell: starts the threads around the pure core and offers the operations HTTP
//! serves (publish, delete, read, list, status, leader transfer).
//!
//! Threads: HTTP connections (in `crate::http`), the driver (owns the core), the log
//! writer (group commit), one sender per peer, the applier (datum set, listeners, answers)
//! and the datum flusher (the applied mark, checkpoints and, if kept, the datum files,
//! written behind the map). Only this
//! module and `crate::http` do I/O.
//!
//! Locks, and the order they are taken in. The core has none: the driver owns it. A thread
//! holding a lock may take only locks after it in this list, and none is held across a
//! network wait:
//! 1. `DatumSet::files`: one writer of the data dir at a time (flush rounds, checkpoints,
//!    snapshot installs), held across their disk I/O;
//! 2. `DatumSet::datums` (the map; read by requests, written by the applier and installs);
//! 3. `DatumSet::digests`, then `DatumSet::dirty`.
//!
//! Every other lock is a leaf: taken alone, for a read or one update, never while taking
//! another: `Shared::status`, `waiters`, `snapshot_pins`, `workers`, `stopping`,
//! `flusher`; `DatumSet::applied`, `flushed`, `checkpoints`; the notifier's. One exception:
//! `Shared::incoming_snapshot` is held while a chunk is staged on disk and while the driver
//! decides the offer (so one stream is received at a time); nothing else is taken under it.

pub mod datum_set;
mod driver;
mod flusher;
pub mod members;
pub mod metrics;
pub mod notifier;
pub mod peer_call;
mod peer_stream;
mod sender;
pub mod sessions;
pub mod snapshot;
pub mod stopped;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::datum::{validate_key, Datum};
use crate::error::{Error, Result};
use crate::raft::{self, Command, Envelope, LogId, PeerAddr, RaftCore, RequestId, Role, Status};
use crate::store::{self, LogStore};

pub use datum_set::{Applied, DatumSet};
pub use driver::DriverEvent;
use driver::{Driver, ProposeResult, Waiters};
pub use notifier::{Event, EventKind};
pub use sessions::Outcome;

/// Header on requests a follower forwards to the leader, so they are never forwarded again.
pub const PROXIED_HEADER: &str = "X-Nacos-Proxied";
/// Header carrying the cluster token on peer traffic.
pub const TOKEN_HEADER: &str = "X-Nacos-Cluster-Token";
/// Header carrying a client's request id, `<client>:<seq>`: a retry with the same id is
/// applied once and answered as the first time.
pub const REQUEST_ID_HEADER: &str = "X-Request-Id";

pub const DEFAULT_CHECKPOINT_ENTRIES: u64 = 20_000;
pub const DEFAULT_LOG_RETAIN_ENTRIES: u64 = 10_000;

/// How often changed datums are written to their files (the log holds them meanwhile).
pub const DATUM_FLUSH_INTERVAL: Duration = Duration::from_millis(1000);

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Turns on per-event debug logging (`-v` or `RUST_LOG=debug`).
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// One line to stderr per event that an operator cares about (role changes, warnings).
pub fn log_event(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "nacos-node: {msg}");
}

/// Starts a thread the node cannot live without. If it panics (a bug: nothing from the
/// network or the disk may panic one), the process exits with the reason rather than
/// living on half dead with a green health check; a supervisor restarts it.
pub(crate) fn spawn_critical(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> thread::JoinHandle<()> {
    let owned = name.to_string();
    thread::Builder::new()
        .name(owned.clone())
        .spawn(move || {
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("no message");
                fatal(&format!("the {owned} thread failed ({why})"));
            }
        })
        .unwrap_or_else(|e| fatal(&format!("cannot start the {name} thread: {e}")))
}

/// Lowers the calling thread's CPU priority to nice 10, for background work that can wait
/// for serving: writing datum files and checkpoints. A checkpoint of 240,000 datums took
/// 410 to 490 ms; with its writes paced but the thread at the node's own priority, the
/// slowest 100 ms of commits while it ran were 20-38% of the median (docs/benchmarks.md).
/// At nice 10 it gets about a tenth of what a thread at the node's priority gets, so under
/// load it finishes later, and on an idle core at full speed. Best effort: a refusal
/// leaves the thread at its priority.
pub(crate) fn lower_thread_priority() {
    // SAFETY: neither call takes a pointer; `gettid` cannot fail.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// A storage failure the node cannot continue after: the log can no longer promise
/// durability, so serving on would risk acknowledging what is not on disk.
pub fn fatal(msg: &str) -> ! {
    log_event(&format!(
        "FATAL: {msg}; stopping so that nothing unsafe is acknowledged"
    ));
    std::process::exit(1);
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This member's identity: the address the others reach it at.
    pub advertise: PeerAddr,
    pub data_dir: PathBuf,
    /// The members a new cluster starts with, this one included (`--peers`; one member =
    /// standalone). Only a new data dir takes them (`bootstrap.json`): after that the
    /// configuration lives in the log, checkpoints and snapshots.
    pub peers: Vec<PeerAddr>,
    /// Started with `--join`: a new member with no configuration, which waits until the
    /// cluster adds it (`peers` is then empty).
    pub join: bool,
    /// The leader promotes a learner added for it once it has caught up (`--auto-promote`).
    pub auto_promote: bool,
    /// Keep the Nacos-layout datum files under `data/` (`--datum-files on`). Off, a new key
    /// costs no file (an inode each, most of the disk and of a new-key write's cost:
    /// docs/benchmarks.md); `nacosctl dump` reads the checkpoint and the log either way.
    pub datum_files: bool,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub publish_timeout_ms: u64,
    /// The secret every member presents on peer traffic; required with more than one member
    /// (None: standalone, which takes no peer traffic at all).
    pub cluster_token: Option<String>,
    /// Size at which the log starts a new segment (compaction deletes whole segments).
    pub log_segment_bytes: u64,
    /// A checkpoint (the datum set in one file; the log compacted up to the previous one)
    /// every this many applied entries, or one per eight per key if that is more.
    pub checkpoint_entries: u64,
    /// Entries kept in the log behind a checkpoint, for followers that are a little behind;
    /// one further behind gets a snapshot.
    pub log_retain_entries: u64,
    /// Most watch streams (listeners) at once.
    pub max_watchers: usize,
    /// How long a login's token is valid, in seconds.
    pub auth_token_ttl_s: u64,
    /// HTTPS on the port, and TLS to the peers (every member runs TLS or none does).
    pub tls: Option<crate::tls::NodeTls>,
    /// TCP health checks of persistent instances, from the leader (`--health-check tcp`);
    /// off by default, so a node never connects to addresses nobody asked it to probe.
    pub health_check: Option<crate::naming::health::HealthCheck>,
}

impl NodeConfig {
    fn has_token(&self) -> bool {
        self.cluster_token.as_deref().is_some_and(|t| !t.is_empty())
    }

    pub fn standalone(advertise: &str, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            advertise: PeerAddr::new(advertise),
            data_dir,
            peers: vec![PeerAddr::new(advertise)],
            join: false,
            auto_promote: true,
            datum_files: false,
            heartbeat_interval_ms: 100,
            election_timeout_ms: 500,
            publish_timeout_ms: 5000,
            cluster_token: None,
            log_segment_bytes: store::log::SEGMENT_BYTES,
            checkpoint_entries: DEFAULT_CHECKPOINT_ENTRIES,
            log_retain_entries: DEFAULT_LOG_RETAIN_ENTRIES,
            max_watchers: notifier::DEFAULT_MAX_LISTENERS,
            auth_token_ttl_s: crate::auth::DEFAULT_TOKEN_TTL_S,
            tls: None,
            health_check: None,
        }
    }

    /// The URL of `path` on member `peer`: `https` when the cluster runs TLS.
    pub fn peer_url(&self, peer: &PeerAddr, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{peer}{path}")
    }

    /// An agent builder for peer traffic: with the cluster's TLS client configuration
    /// (its CA, and this member's certificate to present), if any.
    pub fn peer_agent(&self) -> ureq::AgentBuilder {
        let b = ureq::AgentBuilder::new();
        match &self.tls {
            Some(t) => b.tls_config(t.client.clone()),
            None => b,
        }
    }

    fn raft_config(&self) -> raft::Config {
        let mut c = raft::Config::new(self.advertise.clone(), self.peers.clone());
        c.auto_promote = self.auto_promote;
        c.heartbeat_interval_ms = self.heartbeat_interval_ms;
        c.election_timeout_ms = self.election_timeout_ms;
        // Distinct per member and per start, so restarted members do not tie forever.
        c.seed = self
            .advertise
            .as_str()
            .bytes()
            .fold(std::process::id() as u64, |h, b| {
                h.wrapping_mul(31).wrapping_add(b as u64)
            })
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        c
    }

    pub fn validate(&self) -> Result<()> {
        let mut raft = self.raft_config();
        if self.join {
            if !self.peers.is_empty() {
                return Err(Error::Config(
                    "--join starts a new member that waits to be added; --peers bootstraps a new cluster: give one of them".into(),
                ));
            }
            raft.peers = raft::PeerSet::default();
        }
        raft.validate().map_err(Error::Config)?;
        if (self.peers.len() > 1 || self.join) && !self.has_token() {
            return Err(Error::Config(
                "a cluster of more than one member needs a cluster secret (--cluster-token-file)"
                    .into(),
            ));
        }
        if self.publish_timeout_ms == 0 {
            return Err(Error::Config(
                "the publish timeout must be at least 1 ms".into(),
            ));
        }
        Ok(())
    }
}

/// Status as published by the driver after every turn, plus a condvar for leader waits.
struct StatusCell {
    status: Mutex<Status>,
    changed: Condvar,
}

/// State shared by the threads of one node.
pub struct Shared {
    pub cfg: NodeConfig,
    pub datums: DatumSet,
    waiters: Mutex<Waiters>,
    status: StatusCell,
    driver: Sender<DriverEvent>,
    /// Snapshots being streamed or installed, by follower (compaction stops short of them).
    snapshot_pins: Mutex<HashMap<PeerAddr, snapshot::Pin>>,
    /// The snapshot this follower is receiving.
    incoming_snapshot: Mutex<Option<snapshot::Incoming>>,
    /// Snapshot offers the core accepted; the writer counts the installs it finished
    /// (`WriterDone::installs`). While one is not finished, its staged datums are still to
    /// be swapped in, and a new stream must not start over the staging dir.
    installs_accepted: AtomicU64,
    /// The driver, writer and applier threads, joined by a clean stop.
    workers: Mutex<Vec<thread::JoinHandle<()>>>,
    /// When the driver last finished a turn, in ms since `started`: health is false when it
    /// stalls, so a wedged member never looks healthy.
    driver_turn_ms: AtomicU64,
    started: Instant,
    /// Set by a clean stop: the datum flusher exits (the stop writes the files itself).
    stopping: Mutex<bool>,
    stop_cv: Condvar,
    flusher: Mutex<Option<thread::JoinHandle<()>>>,
    /// The log writer's progress (ordering with the applier, and how long it is busy).
    writer_done: Arc<driver::WriterDone>,
    /// Counters and histograms for `GET /metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// The naming layer's view, made on first use (a node nobody asks about services keeps
    /// no second copy of them).
    naming: std::sync::OnceLock<crate::naming::NamingView>,
}

/// How long the driver may go without a turn before health reports the member unwell.
pub const DRIVER_STALL_MS: u64 = 3000;
/// How long one round of the log writer (appends and one fsync) may take before health
/// reports the member unwell.
pub const WRITER_STALL_MS: u64 = 10_000;

impl Shared {
    /// Waits up to `d`; whether a clean stop began.
    fn wait_stopping(&self, d: Duration) -> bool {
        let stopping = self.stopping.lock().expect("stopping lock");
        let (stopping, _) = self
            .stop_cv
            .wait_timeout_while(stopping, d, |s| !*s)
            .expect("stopping lock");
        *stopping
    }

    fn publish_status(&self, s: Status) {
        self.driver_turn_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let mut cur = self.status.status.lock().expect("status lock");
        let leader_changed = cur.leader != s.leader || cur.role != s.role;
        *cur = s;
        if leader_changed {
            self.metrics.leader_changes.inc();
            self.status.changed.notify_all();
        }
    }
}

/// A running node. Cloning shares it.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

/// The node's view for `/v1/status`.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub raft: Status,
    pub applied_index: u64,
    pub datums: usize,
}

impl Node {
    /// Opens the data dir, rebuilds state from the datum files and the log, and starts the
    /// driver, writer, applier and peer senders.
    pub fn start(cfg: NodeConfig) -> Result<Node> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| Error::store(&cfg.data_dir, e))?;
        let clean_stop = store::datum_dir::clean_stop_marked(&cfg.data_dir);
        let meta = store::read_meta(&cfg.data_dir)?;
        let log_dir = cfg.data_dir.join("log");
        // Before anything is written: opening the log creates a first segment.
        store::check_log_present(&cfg.data_dir, meta.as_ref())?;
        if let Some(point) = store::snapshot::recover(&cfg.data_dir)? {
            // A snapshot install was decided but not finished: finish it (store::snapshot).
            let mut r = LogStore::open(&log_dir, cfg.log_segment_bytes, clean_stop)?;
            let has_point = r.entries.iter().any(|e| e.id() == point) || r.start == point;
            if has_point {
                r.store.compact(point.index)?;
            } else {
                r.store.reset(point)?;
            }
            store::snapshot::clear_install(&cfg.data_dir)?;
            log_event(&format!(
                "finished installing the snapshot at index {}",
                point.index
            ));
        }
        let recovered = LogStore::open(&log_dir, cfg.log_segment_bytes, clean_stop)?;
        store::check_start(&cfg.data_dir, meta.as_ref(), &recovered)?;
        for w in &recovered.warnings {
            log_event(&format!("warning: {w}"));
        }
        let log_end = recovered
            .entries
            .last()
            .map_or(recovered.start.index, |e| e.index);
        let (datums, base) = DatumSet::open(cfg.data_dir.clone(), recovered.start.index, log_end)?;
        // Entries up to the checkpoint's base (or the log's start) are in the loaded state;
        // the applier skips them when the core hands them over.
        let start = recovered.start.index.max(base);
        datums.start_at(start, log_end);
        let start_term = if start == recovered.start.index {
            Some(recovered.start.term)
        } else {
            recovered
                .entries
                .iter()
                .find(|e| e.index == start)
                .map(|e| e.term)
        };
        datums.note_start_term(start_term.unwrap_or(0));
        datums.notifier().set_max_listeners(cfg.max_watchers);
        datums.set_write_files(cfg.datum_files);
        // Everything durable was read and agrees: from here on a crash is an unclean stop.
        store::datum_dir::clear_clean_stop(&cfg.data_dir)?;
        let fresh = meta.is_none() && log_end == 0;
        let (peers_index, peers) = initial_peers(&cfg, &datums, start)?;
        let hs = meta.unwrap_or_default();
        let mut raft_cfg = cfg.raft_config();
        raft_cfg.peers = peers;
        raft_cfg.peers_index = peers_index;
        raft_cfg.validate().map_err(Error::Config)?;
        let mut core = RaftCore::new(raft_cfg, hs, recovered.start, recovered.entries);
        core.restore_applied(recovered.start.index.max(base).min(log_end));
        check_configuration(&cfg, core.peer_set(), fresh)?;

        let (driver_tx, driver_rx) = mpsc::channel();
        let (writer_tx, writer_rx) = mpsc::channel();
        let (applier_tx, applier_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            datums,
            waiters: Mutex::new(HashMap::new()),
            status: StatusCell {
                status: Mutex::new(core.status()),
                changed: Condvar::new(),
            },
            driver: driver_tx.clone(),
            snapshot_pins: Mutex::new(HashMap::new()),
            incoming_snapshot: Mutex::new(None),
            installs_accepted: AtomicU64::new(0),
            workers: Mutex::new(Vec::new()),
            driver_turn_ms: AtomicU64::new(0),
            started: Instant::now(),
            stopping: Mutex::new(false),
            stop_cv: Condvar::new(),
            flusher: Mutex::new(None),
            writer_done: Arc::new(driver::WriterDone::new()),
            metrics: Arc::new(metrics::Metrics::new()),
            naming: std::sync::OnceLock::new(),
        });

        let data_dir = cfg.data_dir.clone();
        let d2 = driver_tx.clone();
        let log = recovered.store;
        let a2 = applier_tx.clone();
        let writer_done = shared.writer_done.clone();
        let i2 = writer_done.clone();
        let m2 = shared.metrics.clone();
        let writer = spawn_critical("log-writer", move || {
            driver::run_writer(log, data_dir, writer_rx, d2, a2, i2, &m2)
        });
        let s3 = shared.clone();
        *shared.flusher.lock().expect("flusher lock") =
            Some(spawn_critical("datum-flusher", move || {
                flusher::run_flusher(&s3)
            }));
        // After a clean stop too: a datum file edited or damaged while the node was down
        // would otherwise stay wrong for `nacosctl dump` until its key is written again.
        if cfg.datum_files {
            let s4 = shared.clone();
            spawn_critical("datum-reconcile", move || {
                flusher::reconcile_datum_files(&s4, log_end, clean_stop)
            });
        } else if store::datum_dir::has_datum_files(&cfg.data_dir) {
            log_event(&format!(
                "warning: {} holds datum files from a run with --datum-files on; they are no longer updated (nacosctl dump reads the checkpoint and the log). Start with --datum-files on to keep them, or remove them",
                store::datum_dir::datum_root(&cfg.data_dir).display()
            ));
        }
        let s2 = shared.clone();
        let applier = spawn_critical("applier", move || driver::run_applier(s2, applier_rx));
        let drv = Driver {
            core,
            shared: shared.clone(),
            events: driver_rx,
            writer: writer_tx,
            applier: applier_tx,
            senders: HashMap::new(),
            senders_for: None,
            tick: Duration::from_millis((cfg.heartbeat_interval_ms / 4).clamp(1, 10)),
            installs_sent: 0,
            routed_sent: 0,
            writer_done,
            heartbeats_out: HashMap::new(),
        };
        let driver = spawn_critical("driver", move || drv.run());
        // In the order they stop: the driver on `Shutdown`, then the writer and the applier
        // once the channels feeding them close.
        *shared.workers.lock().expect("workers lock") = vec![driver, writer, applier];
        let node = Node { shared };
        if let Some(hc) = cfg.health_check {
            let n = node.clone();
            spawn_critical("health-check", move || crate::naming::health::run(&n, hc));
        }
        Ok(node)
    }

    pub fn config(&self) -> &NodeConfig {
        &self.shared.cfg
    }

    pub fn datums(&self) -> &DatumSet {
        &self.shared.datums
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.shared.cfg.publish_timeout_ms)
    }

    /// The metrics exposition (`GET /metrics`), with the gauges read now.
    pub fn metrics_text(&self) -> String {
        let r = self.raft_status();
        let is_leader = r.role == raft::Role::Leader;
        let peer_lag = if is_leader {
            r.followers
                .iter()
                .map(|f| {
                    (
                        f.peer.0.clone(),
                        r.last_log_index.saturating_sub(f.match_index),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let pending = self.shared.waiters.lock().expect("waiters lock").len() as u64;
        self.shared.metrics.render(&metrics::Snapshot {
            term: r.term,
            is_leader,
            has_leader: r.leader.is_some(),
            commit_index: r.commit_index,
            applied_index: self.shared.datums.applied_index(),
            proposals_pending: pending,
            peer_lag,
            datums: self.shared.datums.len() as u64,
            watchers: self.shared.datums.notifier().len() as u64,
        })
    }

    /// The counters the HTTP layer updates.
    /// The services and instances, as the naming layer's listener sees them. The first
    /// call starts a thread that keeps the listener's queue drained while nobody reads.
    pub fn naming(&self) -> &crate::naming::NamingView {
        let mut first = false;
        let view = self.shared.naming.get_or_init(|| {
            first = true;
            crate::naming::NamingView::new()
        });
        if first {
            let weak = Arc::downgrade(&self.shared);
            let _ = thread::Builder::new()
                .name("naming-view".into())
                .spawn(move || loop {
                    let Some(shared) = weak.upgrade() else { return };
                    if shared.wait_stopping(Duration::from_millis(100)) {
                        return;
                    }
                    if let Some(view) = shared.naming.get() {
                        view.drain(&shared.datums);
                    }
                });
        }
        view
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.shared.metrics
    }

    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            raft: self.raft_status(),
            applied_index: self.shared.datums.applied_index(),
            datums: self.shared.datums.len(),
        }
    }

    /// Whether the member is working: the driver turns every few milliseconds, and the
    /// log writer's rounds (one fsync each) take milliseconds, so a driver without a turn for
    /// `DRIVER_STALL_MS`, or a writer round (a hung disk) for `WRITER_STALL_MS`, is stuck.
    pub fn healthy(&self) -> std::result::Result<(), String> {
        let now = self.shared.started.elapsed().as_millis() as u64;
        let idle = now.saturating_sub(self.shared.driver_turn_ms.load(Ordering::Relaxed));
        if idle >= DRIVER_STALL_MS {
            return Err(format!("the Raft driver has not turned for {idle} ms"));
        }
        let busy = self.shared.writer_done.busy_for();
        if busy >= Duration::from_millis(WRITER_STALL_MS) {
            return Err(format!(
                "one write to the log has taken {} ms (the disk hangs?)",
                busy.as_millis()
            ));
        }
        Ok(())
    }

    /// Runs `f` on the status as the driver last published it, without copying it.
    pub fn with_raft_status<R>(&self, f: impl FnOnce(&Status) -> R) -> R {
        f(&self.shared.status.status.lock().expect("status lock"))
    }

    pub fn raft_status(&self) -> Status {
        self.with_raft_status(Status::clone)
    }

    /// Waits until some member is known to lead (this one or another) and returns it.
    pub fn wait_for_leader(&self, deadline: Instant) -> Option<PeerAddr> {
        let mut s = self.shared.status.status.lock().expect("status lock");
        loop {
            if let Some(l) = &s.leader {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            s = self
                .shared
                .status
                .changed
                .wait_timeout(s, deadline - now)
                .expect("status lock")
                .0;
        }
    }

    /// Stages a snapshot chunk from the leader; the last one is offered to the core.
    pub fn receive_snapshot(&self, header: snapshot::ChunkHeader, body: &[u8]) -> Result<()> {
        snapshot::receive(&self.shared, header, body)
    }

    /// Hands messages from a peer to the core.
    pub fn deliver(&self, envs: Vec<Envelope>) -> Result<()> {
        self.shared
            .driver
            .send(DriverEvent::Step(envs))
            .map_err(|_| Error::ShuttingDown)
    }

    /// Queues a command for the driver to append (this node must lead); the receiver gets
    /// what applying it did, with its term and index.
    fn send_propose(&self, command: Command) -> Result<oneshot::Receiver<ProposeResult>> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .driver
            .send(DriverEvent::Propose { command, reply: tx })
            .map_err(|_| Error::ShuttingDown)?;
        Ok(rx)
    }

    /// Appends a command on this node (which must lead) and waits until it is applied here.
    /// Returns what applying it did, with its term and index.
    pub fn propose(&self, command: Command, deadline: Instant) -> Result<(Applied, u64, u64)> {
        let rx = self.send_propose(command)?;
        wait_reply(&rx, deadline, self.shared.cfg.publish_timeout_ms)?
    }

    /// Proposes a batch of writes (what a follower forwarded in one message): every command
    /// is queued to the driver before any answer is awaited, so they share driver turns and
    /// fsyncs as concurrent client writes do. Answers in the order given, as
    /// [`Node::write_one`] would (keys and values are checked by the caller, as the client
    /// API checks them).
    pub fn write_many(
        &self,
        writes: Vec<(String, Command)>,
        deadline: Instant,
    ) -> Vec<Result<(Outcome, LogId)>> {
        let waiting: Vec<(String, Result<oneshot::Receiver<ProposeResult>>)> = writes
            .into_iter()
            .map(|(key, command)| (key, self.send_propose(command)))
            .collect();
        waiting
            .into_iter()
            .map(|(key, rx)| {
                let (applied, term, index) =
                    wait_reply(&rx?, deadline, self.shared.cfg.publish_timeout_ms)??;
                answer(&key, applied, LogId::new(index, term))
            })
            .collect()
    }

    /// Proposes one write to `key` and waits for what it did: a refused compare-and-set is
    /// `Error::PreconditionFailed`, a repeated request gets its first answer.
    pub fn write_one(
        &self,
        key: &str,
        command: Command,
        deadline: Instant,
    ) -> Result<(Outcome, LogId)> {
        let (applied, term, index) = self.propose(command, deadline)?;
        answer(key, applied, LogId::new(index, term))
    }

    /// Publishes `value` under `key`: only when the key's timestamp is
    /// `opts.if_timestamp` (0: only if absent), if given; once, if `opts.request` is given
    /// (a retry gets the first answer). Returns the timestamp, the term and index.
    pub fn publish(
        &self,
        key: &str,
        value: serde_json::Value,
        opts: WriteOptions,
        deadline: Instant,
    ) -> Result<(u64, u64, u64)> {
        validate_key(key)?;
        crate::datum::validate_value(&value)?;
        let command = Command::Publish {
            key: key.to_string(),
            value,
            if_timestamp: opts.if_timestamp,
            request: opts.request,
            user: opts.user,
        };
        match self.write_one(key, command, deadline)? {
            (Outcome::Published { timestamp }, at) => Ok((timestamp, at.term, at.index)),
            (other, _) => unreachable!("a publish applied as {other:?}"),
        }
    }

    /// Deletes `key`, with the same options as `publish`. Returns whether it existed, the
    /// term and index.
    pub fn delete(
        &self,
        key: &str,
        opts: WriteOptions,
        deadline: Instant,
    ) -> Result<(bool, u64, u64)> {
        validate_key(key)?;
        let command = Command::Delete {
            key: key.to_string(),
            if_timestamp: opts.if_timestamp,
            request: opts.request,
            user: opts.user,
        };
        match self.write_one(key, command, deadline)? {
            (Outcome::Deleted { existed }, at) => Ok((existed, at.term, at.index)),
            (other, _) => unreachable!("a delete applied as {other:?}"),
        }
    }

    /// Proposes an access-control change (this node must lead) and waits until it is
    /// applied here; a change that does not fit the table is `Error::Conflict`.
    pub fn change_auth(&self, change: crate::auth::AuthChange, deadline: Instant) -> Result<LogId> {
        change.validate().map_err(Error::BadRequest)?;
        let (applied, term, index) = self.propose(Command::Auth { change }, deadline)?;
        match applied {
            Applied::Auth(Ok(())) => Ok(LogId::new(index, term)),
            Applied::Auth(Err(why)) => Err(Error::Conflict(why)),
            other => unreachable!("an auth change applied as {other:?}"),
        }
    }

    /// Changes the configuration (this node must lead) and waits until the change is
    /// committed and applied here; returns whether anything changed, the configuration
    /// after it and where it is in the log. A change already in force appends nothing (so
    /// an interrupted runbook step is safe to run again). While another change is not
    /// committed yet it waits, up to the deadline, then answers `Busy`.
    pub fn change_peers(
        &self,
        change: raft::PeerChange,
        deadline: Instant,
    ) -> Result<(bool, raft::PeerSet, LogId)> {
        loop {
            let s = self.raft_status();
            let peer = change.peer();
            let in_force = match &change {
                raft::PeerChange::AddLearner { .. } => s.peers.contains(peer),
                raft::PeerChange::Promote { .. } => s.peers.is_voter(peer),
                raft::PeerChange::Remove { .. } => !s.peers.contains(peer),
            };
            if in_force && s.role == Role::Leader {
                return Ok((false, s.peers, LogId::new(s.peers_index, s.term)));
            }
            let (tx, rx) = oneshot::channel();
            self.shared
                .driver
                .send(DriverEvent::ChangePeers {
                    change: change.clone(),
                    reply: tx,
                })
                .map_err(|_| Error::ShuttingDown)?;
            match wait_reply(&rx, deadline, self.shared.cfg.publish_timeout_ms)? {
                Ok((Applied::Config(set), term, index)) => {
                    log_event(&format!("configuration changed at index {index}: {change}"));
                    return Ok((true, set, LogId::new(index, term)));
                }
                Ok((other, ..)) => unreachable!("a configuration change applied as {other:?}"),
                Err(Error::Busy(_)) if Instant::now() + Duration::from_millis(20) < deadline => {
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Imports `datums` with their own timestamps (this node must lead): each is set unless
    /// its key holds the same or a newer timestamp. Returns the positions skipped and where
    /// the import was applied.
    pub fn import(
        &self,
        datums: Vec<crate::raft::ImportedDatum>,
        user: Option<String>,
        deadline: Instant,
    ) -> Result<(Vec<u32>, LogId)> {
        crate::raft::check_import(&datums).map_err(Error::BadRequest)?;
        let (applied, term, index) = self.propose(Command::Import { datums, user }, deadline)?;
        match applied {
            Applied::Imported { skipped } => Ok((skipped, LogId::new(index, term))),
            Applied::Denied(why) => Err(Error::PermissionDenied(why)),
            other => unreachable!("an import applied as {other:?}"),
        }
    }

    /// Waits until this node's datum set reflects every write committed before the call
    /// (ReadIndex, Raft thesis §6.4): the leader confirms it still leads with a heartbeat
    /// round; a follower asks the leader for the index and waits to apply it.
    pub fn linearizable_barrier(&self, deadline: Instant) -> Result<()> {
        let cfg = &self.shared.cfg;
        // One attempt may be lost with its message; retry well before the client gives up.
        let attempt = Duration::from_millis(cfg.election_timeout_ms * 2);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(match self.raft_status().leader {
                    None => Error::NoLeader {
                        waited_ms: cfg.publish_timeout_ms,
                    },
                    Some(_) => Error::Timeout {
                        waited_ms: cfg.publish_timeout_ms,
                    },
                });
            }
            let (tx, rx) = oneshot::channel();
            self.shared
                .driver
                .send(DriverEvent::ReadIndex { reply: tx })
                .map_err(|_| Error::ShuttingDown)?;
            match rx.recv_timeout(datum_set::remaining(deadline.min(now + attempt))) {
                Ok(Some(index)) => {
                    return if self.shared.datums.wait_applied(index, deadline) {
                        Ok(())
                    } else {
                        Err(Error::Timeout {
                            waited_ms: cfg.publish_timeout_ms,
                        })
                    };
                }
                Ok(None) => {
                    // No leader, or the one asked no longer leads: wait for news, then retry.
                    self.wait_for_leader(deadline);
                    self.wait_status_change(
                        deadline.min(Instant::now() + Duration::from_millis(10)),
                    );
                }
                Err(oneshot::RecvTimeoutError::Timeout) => {}
                Err(oneshot::RecvTimeoutError::Disconnected) => return Err(Error::ShuttingDown),
            }
        }
    }

    /// Waits for the next role or leader change, or the deadline.
    fn wait_status_change(&self, deadline: Instant) {
        let s = self.shared.status.status.lock().expect("status lock");
        let _ = self
            .shared
            .status
            .changed
            .wait_timeout(s, datum_set::remaining(deadline))
            .expect("status lock");
    }

    pub fn get(&self, key: &str, stale: bool, deadline: Instant) -> Result<Option<Datum>> {
        validate_key(key)?;
        if !stale {
            self.linearizable_barrier(deadline)?;
        }
        Ok(self.shared.datums.get(key))
    }

    pub fn list(&self, prefix: &str, stale: bool, deadline: Instant) -> Result<Vec<Datum>> {
        if !stale {
            self.linearizable_barrier(deadline)?;
        }
        Ok(self.shared.datums.list(prefix))
    }

    /// Starts a leadership transfer (to `target`, or the most up-to-date follower).
    pub fn transfer_leader(&self, target: Option<PeerAddr>) -> Result<PeerAddr> {
        let (tx, rx) = mpsc::channel();
        self.shared
            .driver
            .send(DriverEvent::TransferLeader { target, reply: tx })
            .map_err(|_| Error::ShuttingDown)?;
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(raft::ProposeError::NotLeader { leader })) => Err(Error::NotLeader {
                leader: leader.map(|l| l.0),
            }),
            Ok(Err(raft::ProposeError::Transferring)) => Err(Error::NotLeader { leader: None }),
            Err(_) => Err(Error::ShuttingDown),
        }
    }

    /// First step of a clean stop: a leader hands leadership to a follower (bounded wait),
    /// so a rolling restart does not leave the cluster leaderless for an election timeout.
    pub fn hand_over_leadership(&self) {
        let s = self.raft_status();
        if s.role == Role::Leader && s.peers.voters.len() > 1 {
            if let Ok(target) = self.transfer_leader(None) {
                let deadline =
                    Instant::now() + Duration::from_millis(self.shared.cfg.election_timeout_ms * 2);
                let mut st = self.shared.status.status.lock().expect("status lock");
                while st.role == Role::Leader && Instant::now() < deadline {
                    st = self
                        .shared
                        .status
                        .changed
                        .wait_timeout(st, Duration::from_millis(20))
                        .expect("status lock")
                        .0;
                }
                let handed = st.role != Role::Leader;
                drop(st);
                if handed {
                    log_event(&format!("handed leadership to {target} before stopping"));
                } else {
                    log_event(&format!(
                        "{target} did not take over in time; stopping anyway"
                    ));
                }
            }
        }
    }

    /// Last step of a clean stop: stops the core, waits for the log writer and the applier
    /// to finish what they were given, then records the applied index (and writes every
    /// datum file, if kept) and syncs them. Only
    /// then is the stop marked clean: the next start may trust that no write was cut short.
    pub fn shutdown(&self) {
        let _ = self.shared.driver.send(DriverEvent::Shutdown);
        let deadline = Instant::now() + Duration::from_secs(10);
        let workers = std::mem::take(&mut *self.shared.workers.lock().expect("workers lock"));
        for w in workers {
            let name = w.thread().name().unwrap_or("worker").to_string();
            // A production wait with a bound: a hung disk must not hang the stop forever.
            while !w.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if !w.is_finished() {
                log_event(&format!(
                    "warning: the {name} thread did not finish within 10 s; not marking the stop clean, so the next start checks everything"
                ));
                return;
            }
            let _ = w.join();
        }
        if self.shared.writer_done.log_closed.load(Ordering::SeqCst) {
            // The writer wrote and synced all it was handed, every applied entry included,
            // after the driver's last word on it: the flusher may write all that applied.
            self.shared.datums.set_durable(u64::MAX);
        }
        *self.shared.stopping.lock().expect("stopping lock") = true;
        self.shared.stop_cv.notify_all();
        if let Some(f) = self.shared.flusher.lock().expect("flusher lock").take() {
            // A checkpoint in progress finishes first; it is bounded by the datum count.
            let _ = f.join();
        }
        // Leave the applied mark (and the datum files, if kept) exactly up to date and
        // durable, so `dump` of a cleanly stopped node shows every applied write.
        let flushed = self.shared.datums.flush();
        let log_closed = self
            .shared
            .writer_done
            .log_closed
            .load(std::sync::atomic::Ordering::SeqCst);
        let done = flushed.and_then(|_| {
            if log_closed {
                store::datum_dir::mark_clean_stop(&self.shared.cfg.data_dir)
            } else {
                Ok(())
            }
        });
        if let Err(e) = done {
            log_event(&format!(
                "warning: the data dir was not fully written at the stop: {e}; the next start checks it"
            ));
        }
        if !log_closed {
            log_event("warning: the log was not closed; not marking the stop clean, so the next start checks everything");
        }
    }
}

/// The configuration this member starts from, and the index it is in force after: the one
/// its data dir recorded (a checkpoint or an installed snapshot: exact at `start`), else the
/// one the cluster was bootstrapped with (`bootstrap.json`, in force from 0), else none for
/// a member started with `--join`, else `--peers`, recorded now (a new data dir).
/// Configuration entries in the log after that index come on top, in the core.
fn initial_peers(cfg: &NodeConfig, datums: &DatumSet, start: u64) -> Result<(u64, raft::PeerSet)> {
    if let Some(set) = datums.peer_set() {
        return Ok((start, set));
    }
    if let Some(set) = store::read_bootstrap(&cfg.data_dir)? {
        datums.set_peer_set(set.clone());
        return Ok((0, set));
    }
    if cfg.join {
        return Ok((0, raft::PeerSet::default()));
    }
    let set = raft::PeerSet::of_voters(cfg.peers.iter().cloned());
    store::write_bootstrap(&cfg.data_dir, &set)?;
    datums.set_peer_set(set.clone());
    Ok((0, set))
}

/// At start-up: says where the configuration came from when the flags disagree with it,
/// and refuses to run a member of a cluster without the cluster secret.
fn check_configuration(cfg: &NodeConfig, peers: &raft::PeerSet, fresh: bool) -> Result<()> {
    let me = &cfg.advertise;
    let names = |it: &mut dyn Iterator<Item = &PeerAddr>| {
        it.map(PeerAddr::as_str).collect::<Vec<_>>().join(",")
    };
    let described = if peers.is_unknown() {
        "none yet".to_string()
    } else {
        format!(
            "voters {}{}",
            names(&mut peers.voters.iter()),
            if peers.learners.is_empty() {
                String::new()
            } else {
                format!(", learners {}", names(&mut peers.learners.iter()))
            }
        )
    };
    if peers.members().any(|p| p != me) && !cfg.has_token() {
        return Err(Error::Config(format!(
            "this member's data dir holds a cluster configuration ({described}), and a cluster needs its secret: start it with the cluster's --cluster-token-file"
        )));
    }
    if cfg.join {
        if peers.contains(me) {
            log_event(&format!(
                "this data dir already belongs to a cluster ({described}); --join is ignored"
            ));
        } else {
            log_event(&format!(
                "waiting to be added to the cluster as {me}: run `nacosctl --endpoints <a member> member add {me}`"
            ));
        }
        return Ok(());
    }
    let flags: std::collections::BTreeSet<&PeerAddr> = cfg.peers.iter().collect();
    let held: std::collections::BTreeSet<&PeerAddr> = peers.members().collect();
    if !fresh && flags != held {
        log_event(&format!(
            "the configuration in the data dir ({described}) is used, not --peers {}: --peers only bootstraps a new cluster; change members with `nacosctl member add|remove`",
            names(&mut cfg.peers.iter())
        ));
    }
    if !peers.is_unknown() && !peers.contains(me) {
        log_event(&format!(
            "{me} is not a member of this data dir's configuration ({described}): it was removed, and takes no part until it is added again"
        ));
    }
    Ok(())
}

/// How a write may be conditional (compare-and-set) or safe to retry (a request id).
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub if_timestamp: Option<u64>,
    pub request: Option<RequestId>,
    /// The access-control user, judged again when the write applies.
    pub user: Option<String>,
}

/// What a write's client is told: the outcome and where it happened, the first time for a
/// repeated request. A failed condition, and an old request, are errors.
fn answer(key: &str, applied: Applied, at: LogId) -> Result<(Outcome, LogId)> {
    let (outcome, at) = match applied {
        Applied::Published { timestamp } => (Outcome::Published { timestamp }, at),
        Applied::Deleted { existed } => (Outcome::Deleted { existed }, at),
        Applied::PreconditionFailed { current } => {
            (Outcome::PreconditionFailed { current }, at)
        }
        Applied::Duplicate { at, outcome } => (outcome, at),
        Applied::Denied(why) => return Err(Error::PermissionDenied(why)),
        Applied::Stale { latest } => {
            return Err(Error::BadRequest(format!(
                "this client's request {latest} was applied already, so this older one was not; a client sends its requests in order, one at a time"
            )))
        }
        Applied::Noop | Applied::Auth(_) | Applied::Imported { .. } | Applied::Config(_) => {
            unreachable!(
                "a datum write applied as a no-op, an auth change, an import or a configuration"
            )
        }
    };
    match outcome {
        Outcome::PreconditionFailed { current } => Err(Error::PreconditionFailed {
            key: key.to_string(),
            current,
        }),
        other => Ok((other, at)),
    }
}

fn wait_reply<T>(
    rx: &oneshot::Receiver<Result<T>>,
    deadline: Instant,
    timeout_ms: u64,
) -> Result<Result<T>> {
    match rx.recv_timeout(datum_set::remaining(deadline)) {
        Ok(r) => Ok(r),
        Err(oneshot::RecvTimeoutError::Timeout) => Err(Error::Timeout {
            waited_ms: timeout_ms,
        }),
        Err(oneshot::RecvTimeoutError::Disconnected) => Err(Error::ShuttingDown),
    }
}

/// Bytes of publishes after which a checkpoint is due, whatever the entry count: the
/// retained log (in memory too) then follows the bytes written, not only the entries.
pub const CHECKPOINT_BYTES: u64 = 32 << 20;
/// Most bytes of log kept behind the previous checkpoint for followers a little behind
/// (fewer than `--log-retain-entries` entries when values are large).
pub const LOG_RETAIN_BYTES: usize = 32 << 20;
