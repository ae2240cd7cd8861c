//! The driver thread (sole owner of the core), the log writer thread and the applier thread.
//!
//! The driver never touches disk or network: it hands persistence to the writer (which
//! batches whatever queued up into one fsync: group commit), messages to the per-peer
//! senders, and committed entries to the applier. That is how the core lock is never held
//! across I/O: there is no lock, only the driver's ownership.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::raft::{
    Command, Entry, Envelope, HardState, InstallPoint, LogId, PeerAddr, ProposeError, RaftCore,
    Ready, Role,
};
use crate::store::{write_meta, LogStore};

use super::datum_set::Applied;
use super::{log_event, Shared};

/// A client's answer once its entry is applied (or why it never will be). A one-shot
/// channel, not an `mpsc` one: `mpsc` allocates a zeroed block of 31 slots (3 KiB here) on
/// the first send, one per write, which with its free was the largest allocation on the
/// leader's hot path (docs/benchmarks.md).
pub type ProposeReply = oneshot::Sender<ProposeResult>;

/// Where a linearizable read's index goes (one-shot for the same reason).
pub type ReadIndexReply = oneshot::Sender<Option<u64>>;

/// What applying a proposed command did, with its term and index.
pub type ProposeResult = Result<(Applied, u64, u64), Error>;

pub enum DriverEvent {
    Step(Vec<Envelope>),
    Propose {
        command: Command,
        reply: ProposeReply,
    },
    ReadIndex {
        reply: ReadIndexReply,
    },
    TransferLeader {
        target: Option<PeerAddr>,
        reply: Sender<Result<PeerAddr, ProposeError>>,
    },
    /// A configuration change; answered like a proposal once applied.
    ChangePeers {
        change: crate::raft::PeerChange,
        reply: ProposeReply,
    },
    Persisted {
        last: Option<LogId>,
        messages: Vec<Envelope>,
    },
    /// A checkpoint covers the state up to `limit`: the log may go up to `upto`, or
    /// further (never past `limit`) to keep no more than `LOG_RETAIN_BYTES` behind it; and
    /// never past `pinned` (a snapshot's followers continue from there), unless that would
    /// keep more than `snapshot::PIN_MAX_LOG_BYTES` of log.
    Compact {
        upto: u64,
        limit: u64,
        pinned: Option<u64>,
    },
    SnapshotSent {
        peer: PeerAddr,
        index: u64,
        ok: bool,
    },
    OfferSnapshot {
        from: PeerAddr,
        term: u64,
        point: LogId,
        peers: crate::raft::PeerSet,
        reply: super::snapshot::OfferReply,
    },
    Shutdown,
}

/// Work for the applier thread, in log order.
pub enum ApplierMsg {
    Apply(Vec<Entry>),
    /// Swap in the staged snapshot (its install is decided) and reload.
    Install {
        index: u64,
        done: Sender<crate::error::Result<()>>,
    },
}

/// One unit of work for the log writer.
pub struct WriteBatch {
    pub hard_state: Option<HardState>,
    /// Drop every entry after this one (the last kept) before appending.
    pub truncate_after: Option<LogId>,
    pub entries: Vec<Entry>,
    pub after_persist: Vec<Envelope>,
    /// Install the staged snapshot before anything else in this batch.
    pub install: Option<InstallPoint>,
    /// Drop log segments wholly at or below this index.
    pub compact: Option<u64>,
    /// Committed entries to hand to the applier once this batch is done: while an install
    /// is queued in the writer, entries after its point must be applied on top of it, not
    /// of the datum set it replaces (`Ready::install`).
    pub apply_after: Vec<Entry>,
}

impl WriteBatch {
    fn empty() -> WriteBatch {
        WriteBatch {
            hard_state: None,
            truncate_after: None,
            entries: Vec::new(),
            after_persist: Vec::new(),
            install: None,
            compact: None,
            apply_after: Vec::new(),
        }
    }
}

/// Logs refused peer messages, at most one line per sender per second with a count of the
/// rest, so a flood of forged messages cannot flood the log too.
#[derive(Default)]
struct RefusalLog {
    last: HashMap<PeerAddr, (Instant, u64)>,
}

impl RefusalLog {
    fn note(&mut self, from: &PeerAddr, reason: &str) {
        let now = Instant::now();
        let (at, quiet) = self
            .last
            .entry(from.clone())
            .or_insert((now - Duration::from_secs(2), 0));
        if now.duration_since(*at) < Duration::from_secs(1) {
            *quiet += 1;
            return;
        }
        let more = match *quiet {
            0 => String::new(),
            n => format!(" ({n} more refused since the last line)"),
        };
        log_event(&format!(
            "warning: refused a message from {from}: {reason}{more}; a member that sends this is broken or an impostor"
        ));
        *at = now;
        *quiet = 0;
    }
}

/// Waiters for proposals, by log index: the term they were proposed in, and the reply.
pub type Waiters = HashMap<u64, (u64, ProposeReply)>;

pub struct Driver {
    pub core: RaftCore,
    pub shared: Arc<Shared>,
    pub events: Receiver<DriverEvent>,
    pub writer: Sender<WriteBatch>,
    pub applier: Sender<ApplierMsg>,
    /// One queue per member this one talks to: those of the configuration in force and
    /// the leader it follows (`sync_senders`), and whoever it answers.
    pub senders: HashMap<PeerAddr, Sender<Envelope>>,
    /// The configuration index and leader the senders were last matched to.
    pub senders_for: Option<(u64, Option<PeerAddr>)>,
    pub tick: Duration,
    /// Installs and `apply_after` lists handed to the writer; the writer counts those done.
    pub installs_sent: u64,
    pub routed_sent: u64,
    pub writer_done: Arc<WriterDone>,
    /// When the oldest heartbeat each peer has not answered yet was sent: its answer gives
    /// the round trip (`nacos_raft_peer_round_trip_seconds`), queues and the peer's driver
    /// included, as peer streams carry no answers of their own.
    pub heartbeats_out: HashMap<PeerAddr, Instant>,
}

/// What the log writer has finished of what needs ordering with the applier, and since
/// when it has been busy with its current round (for health: a hung disk stops it there).
pub struct WriterDone {
    pub installs: AtomicU64,
    pub routed: AtomicU64,
    /// The writer closed the log at the stop ([`LogStore::close`]).
    pub log_closed: AtomicBool,
    /// Milliseconds after `base` at which the current round began; 0 when idle.
    busy_since_ms: AtomicU64,
    base: Instant,
}

impl WriterDone {
    pub fn new() -> WriterDone {
        WriterDone {
            installs: AtomicU64::new(0),
            routed: AtomicU64::new(0),
            log_closed: AtomicBool::new(false),
            busy_since_ms: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    fn set_busy(&self, busy: bool) {
        let at = if busy {
            (self.base.elapsed().as_millis() as u64).max(1)
        } else {
            0
        };
        self.busy_since_ms.store(at, Ordering::Relaxed);
    }

    /// How long the current round has taken so far (zero when idle).
    pub fn busy_for(&self) -> Duration {
        match self.busy_since_ms.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            at => self
                .base
                .elapsed()
                .saturating_sub(Duration::from_millis(at)),
        }
    }
}

impl Driver {
    pub fn run(mut self) {
        let mut reads: HashMap<u64, ReadIndexReply> = HashMap::new();
        let mut refused = RefusalLog::default();
        let mut next_ctx = 1u64;
        let mut last_tick = Instant::now();
        let mut last_role = (
            self.core.role(),
            self.core.term(),
            self.core.leader().cloned(),
        );
        loop {
            let timeout = self.tick.saturating_sub(last_tick.elapsed());
            let first = match self.events.recv_timeout(timeout) {
                Ok(ev) => Some(ev),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Take everything that queued up, so that one Ready (one Append per follower,
            // one fsync) serves all of it.
            let mut batch: Vec<DriverEvent> = first.into_iter().collect();
            batch.extend(self.events.try_iter().take(4096));
            for ev in batch {
                match ev {
                    DriverEvent::Step(envs) => {
                        for env in envs {
                            if matches!(env.msg, crate::raft::Message::HeartbeatResp { .. }) {
                                self.heartbeat_answered(&env.from);
                            }
                            let from = env.from.clone();
                            if let Err(r) = self.core.step(env) {
                                refused.note(&from, &r.reason);
                            }
                        }
                    }
                    DriverEvent::Propose { command, reply } => {
                        match self.core.propose(vec![command]) {
                            Ok(at) => {
                                self.shared
                                    .waiters
                                    .lock()
                                    .expect("waiters lock")
                                    .insert(at.index, (at.term, reply));
                            }
                            Err(ProposeError::NotLeader { leader }) => {
                                self.shared.metrics.proposals_failed.inc();
                                let _ = reply.send(Err(Error::NotLeader {
                                    leader: leader.map(|l| l.0),
                                }));
                            }
                            Err(ProposeError::Transferring) => {
                                self.shared.metrics.proposals_failed.inc();
                                let _ = reply.send(Err(Error::NotLeader { leader: None }));
                            }
                        }
                    }
                    DriverEvent::ReadIndex { reply } => {
                        let ctx = next_ctx;
                        next_ctx += 1;
                        reads.insert(ctx, reply);
                        self.core.read_index(ctx);
                    }
                    DriverEvent::TransferLeader { target, reply } => {
                        let _ = reply.send(self.core.transfer_leader(target));
                    }
                    DriverEvent::ChangePeers { change, reply } => {
                        use crate::raft::ChangeError;
                        match self.core.propose_change(change) {
                            Ok(at) => {
                                self.shared
                                    .waiters
                                    .lock()
                                    .expect("waiters lock")
                                    .insert(at.index, (at.term, reply));
                            }
                            Err(e) => {
                                let _ = reply.send(Err(match e {
                                    ChangeError::NotLeader { leader } => Error::NotLeader {
                                        leader: leader.map(|l| l.0),
                                    },
                                    ChangeError::Busy(why) => Error::Busy(why),
                                    ChangeError::Refused(why) => Error::Conflict(why),
                                }));
                            }
                        }
                    }
                    DriverEvent::Persisted { last, messages } => {
                        if let Some(id) = last {
                            self.core.on_persisted(id);
                        }
                        self.send_all(messages);
                    }
                    DriverEvent::Compact {
                        upto,
                        limit,
                        pinned,
                    } => {
                        let cap = self
                            .core
                            .index_keeping_bytes(super::snapshot::PIN_MAX_LOG_BYTES);
                        let limit = match pinned {
                            Some(p) if p >= cap => limit.min(p),
                            _ => limit,
                        };
                        let by_bytes = self.core.index_keeping_bytes(super::LOG_RETAIN_BYTES);
                        let upto = upto.max(by_bytes).min(limit);
                        if upto > 0 && self.core.compact(upto) {
                            let mut b = WriteBatch::empty();
                            b.compact = Some(self.core.log_start().index);
                            let _ = self.writer.send(b);
                        }
                    }
                    DriverEvent::SnapshotSent { peer, index, ok } => {
                        self.core.on_snapshot_sent(&peer, index, ok);
                    }
                    DriverEvent::OfferSnapshot {
                        from,
                        term,
                        point,
                        peers,
                        reply,
                    } => {
                        let answer = self.core.offer_snapshot(&from, term, point, peers);
                        if answer == Ok(true) {
                            self.shared.installs_accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        let _ = reply.send(answer);
                    }
                    DriverEvent::Shutdown => return,
                }
            }
            let elapsed = last_tick.elapsed();
            if elapsed >= self.tick {
                self.core.tick(elapsed.as_millis() as u64);
                last_tick = Instant::now();
            }
            let ready = self.core.take_ready();
            self.dispatch(ready, &mut reads);

            let now_role = (
                self.core.role(),
                self.core.term(),
                self.core.leader().cloned(),
            );
            if now_role != last_role {
                log_event(&format!(
                    "{} term {} leader {}",
                    now_role.0.as_str(),
                    now_role.1,
                    now_role.2.as_ref().map_or("none", |l| l.as_str())
                ));
                last_role = now_role;
            }
            self.sync_senders();
            let status = self.core.status();
            self.release_pins(&status);
            self.shared.publish_status(status);
        }
    }

    /// Ends the holds on compaction of snapshots whose followers have installed them
    /// (acknowledged an index past the snapshot's), left, or not come back in time; and all of
    /// them once this member no longer leads.
    fn release_pins(&self, status: &crate::raft::Status) {
        let mut pins = self.shared.snapshot_pins.lock().expect("pins lock");
        if pins.values().all(|p| p.streaming) {
            return;
        }
        let leading = status.role == Role::Leader;
        pins.retain(|peer, pin| {
            if pin.streaming {
                return true;
            }
            let installed = status
                .followers
                .iter()
                .find(|f| f.peer == *peer)
                .is_none_or(|f| f.match_index >= pin.index);
            leading && !installed && pin.since.elapsed() < super::snapshot::PIN_AFTER_STREAM
        });
    }

    /// Keeps a sender for every other member of the configuration in force and for the
    /// leader; a member that left loses its sender (and its thread) once the configuration
    /// that removed it is the one in force.
    fn sync_senders(&mut self) {
        let now = (self.core.peers_index(), self.core.leader().cloned());
        if self.senders_for.as_ref() == Some(&now) {
            return;
        }
        let me = self.core.id().clone();
        let wanted: std::collections::BTreeSet<PeerAddr> = self
            .core
            .peer_set()
            .members()
            .chain(now.1.iter())
            .filter(|p| **p != me)
            .cloned()
            .collect();
        self.senders.retain(|p, _| wanted.contains(p));
        for p in wanted {
            if !self.senders.contains_key(&p) {
                let tx = super::sender::spawn(&self.shared, p.clone());
                self.senders.insert(p, tx);
            }
        }
        self.senders_for = Some(now);
    }

    fn dispatch(&mut self, ready: Ready, reads: &mut HashMap<u64, ReadIndexReply>) {
        let Ready {
            hard_state,
            truncate_from,
            entries,
            messages,
            after_persist,
            committed,
            reads: read_states,
            snapshots,
            install,
        } = ready;
        for peer in snapshots {
            self.start_snapshot(peer);
        }
        if install.is_some() {
            self.installs_sent += 1;
        }
        // Entries committed while an install is still queued go through the writer, which
        // hands them to the applier only after the install (`Ready::install`); and so do
        // later ones until those have been handed over, to keep the applier's order.
        let done = &self.writer_done;
        let via_writer = done.installs.load(Ordering::SeqCst) < self.installs_sent
            || done.routed.load(Ordering::SeqCst) < self.routed_sent;
        let (direct, apply_after) = if via_writer && !committed.is_empty() {
            self.routed_sent += 1;
            (Vec::new(), committed)
        } else {
            (committed, Vec::new())
        };
        if hard_state.is_some()
            || truncate_from.is_some()
            || !entries.is_empty()
            || !after_persist.is_empty()
            || install.is_some()
            || !apply_after.is_empty()
        {
            // Everything that needs durability goes through the writer, in order, even
            // messages with nothing new to persist: an earlier batch may still be in flight.
            let truncate_after = truncate_from.map(|from| {
                let term = self
                    .core
                    .term_at(from - 1)
                    .expect("truncation never reaches below the commit index");
                LogId::new(from - 1, term)
            });
            let _ = self.writer.send(WriteBatch {
                hard_state,
                truncate_after,
                entries,
                after_persist,
                install,
                compact: None,
                apply_after,
            });
        }
        self.send_all(messages);
        // Before any entry goes to the applier: committed entries may apply before they are
        // durable here, and what persists their effect waits for this mark.
        self.shared.datums.set_durable(self.core.stable_index());
        if !direct.is_empty() {
            let _ = self.applier.send(ApplierMsg::Apply(direct));
        }
        for rs in read_states {
            if let Some(reply) = reads.remove(&rs.ctx) {
                let _ = reply.send(rs.index);
            }
        }
    }

    /// Starts streaming a snapshot to `peer` on its own thread, unless one is under way.
    /// It covers the log up to the index the client sessions are exact at (taken with the
    /// map held still), whose entries after it the log keeps (the pin holds compaction back
    /// until the stream ends).
    fn start_snapshot(&mut self, peer: PeerAddr) {
        // A leader that stepped down in the same turn must not stream under its new term.
        if self.core.role() != Role::Leader {
            return;
        }
        if self
            .shared
            .snapshot_pins
            .lock()
            .expect("pins lock")
            .get(&peer)
            .is_some_and(|p| p.streaming)
        {
            return; // a stream is under way; it reports when it ends
        }
        let (index, sessions) = self.shared.datums.capture_sessions();
        let snap_term = match self.core.term_at(index) {
            Some(t) if index <= self.core.commit_index() => t,
            _ => {
                // Cannot be served from here now (never expected: what is applied is
                // committed and retained): let the core ask again at the next heartbeat.
                self.core.on_snapshot_sent(&peer, index, false);
                return;
            }
        };
        self.shared.snapshot_pins.lock().expect("pins lock").insert(
            peer.clone(),
            super::snapshot::Pin {
                index,
                streaming: true,
                since: Instant::now(),
            },
        );
        self.core.on_snapshot_started(&peer, index);
        let shared = self.shared.clone();
        let term = self.core.term();
        super::spawn_critical(&format!("snapshot-{peer}"), move || {
            super::snapshot::send(shared, peer, index, snap_term, term, sessions)
        });
    }

    fn heartbeat_answered(&mut self, from: &PeerAddr) {
        if let Some(sent) = self.heartbeats_out.remove(from) {
            self.shared
                .metrics
                .peer_rtt
                .get_or_create(&super::metrics::PeerLabel {
                    peer: from.0.clone(),
                })
                .observe(sent.elapsed().as_secs_f64());
        }
    }

    fn send_all(&mut self, messages: Vec<Envelope>) {
        for env in messages {
            // A heartbeat lost (a dead peer) leaves its time behind: past a few seconds
            // the next one starts the measure again, so a peer back from an outage does
            // not report the outage as a round trip.
            if matches!(env.msg, crate::raft::Message::Heartbeat { .. })
                && self
                    .heartbeats_out
                    .get(&env.to)
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
            {
                self.heartbeats_out.insert(env.to.clone(), Instant::now());
            }
            // The core sends only to members it takes messages from (a member being removed
            // still hears of its removal; a joining one answers the leader that adds it).
            let tx = match self.senders.get(&env.to) {
                Some(tx) => tx,
                None => {
                    let tx = super::sender::spawn(&self.shared, env.to.clone());
                    self.senders.entry(env.to.clone()).or_insert(tx)
                }
            };
            let _ = tx.send(env);
        }
    }
}

/// Runs `op` again while it fails for want of file descriptors (a connection flood took
/// them; they come back as connections close), for up to 30 s. `op` must be safe to
/// repeat: replacing meta.properties through a temporary file is.
fn retry_out_of_descriptors(
    what: &str,
    mut op: impl FnMut() -> Result<(), Error>,
) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut backoff = std::time::Duration::from_millis(1);
    loop {
        match op() {
            Err(e) if e.is_out_of_descriptors() && std::time::Instant::now() < deadline => {
                if backoff.as_millis() == 1 {
                    super::log_event(&format!(
                        "warning: cannot {what}: {e}; retrying for up to 30 s (raise `ulimit -n` or lower --max-connections)"
                    ));
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(std::time::Duration::from_millis(100));
            }
            done => return done,
        }
    }
}

/// The log writer: appends what the driver hands it and fsyncs once per batch of batches.
pub fn run_writer(
    mut log: LogStore,
    data_dir: std::path::PathBuf,
    batches: Receiver<WriteBatch>,
    driver: Sender<DriverEvent>,
    applier: Sender<ApplierMsg>,
    done: Arc<WriterDone>,
    metrics: &super::metrics::Metrics,
) {
    while let Ok(first) = batches.recv() {
        done.set_busy(true);
        let round: Vec<WriteBatch> = std::iter::once(first).chain(batches.try_iter()).collect();
        // The term and vote go first: durable before any message that depends on them, and
        // before any entry of that term, so a log never holds a term its meta.properties has
        // not reached (start-up checks exactly that).
        if let Some(hs) = round.iter().rev().find_map(|b| b.hard_state.as_ref()) {
            if let Err(e) =
                retry_out_of_descriptors("persist term and vote", || write_meta(&data_dir, hs))
            {
                super::fatal(&format!("cannot persist term and vote: {e}"));
            }
        }
        let mut last = None;
        let mut messages = Vec::new();
        let entries: usize = round.iter().map(|b| b.entries.len()).sum();
        for b in round {
            if let Some(point) = b.install {
                // Before anything appended after it (store::snapshot explains the order).
                // An install reads the whole staged set, which may take long: it does not
                // count as a hung disk.
                done.set_busy(false);
                let installed = install_snapshot(&mut log, &data_dir, &applier, point);
                done.set_busy(true);
                if let Err(e) = installed {
                    super::fatal(&format!("cannot install a snapshot: {e}"));
                }
                done.installs.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(upto) = b.compact {
                if let Err(e) = log.compact(upto) {
                    super::fatal(&format!("cannot compact the log: {e}"));
                }
            }
            if let Err(e) = log.append(b.truncate_after, &b.entries) {
                super::fatal(&format!("cannot append to the log: {e}"));
            }
            if let Some(e) = b.entries.last() {
                last = Some(e.id());
            }
            if !b.apply_after.is_empty() {
                // Committed, so durable on a majority; locally they follow the install,
                // which is done (and the applier takes messages in order).
                let _ = applier.send(ApplierMsg::Apply(b.apply_after));
                done.routed.fetch_add(1, Ordering::SeqCst);
            }
            messages.extend(b.after_persist);
        }
        let synced = std::time::Instant::now();
        if let Err(e) = log.sync() {
            super::fatal(&format!("cannot fsync the log: {e}"));
        }
        metrics
            .fsync_seconds
            .observe(synced.elapsed().as_secs_f64());
        if entries > 0 {
            metrics.batch_entries.observe(entries as f64);
        }
        done.set_busy(false);
        if driver
            .send(DriverEvent::Persisted { last, messages })
            .is_err()
        {
            break;
        }
    }
    // The stop: the log ends with its last record, which a clean stop promises the next
    // start. If that fails the stop is not marked clean, and the next start reads the log
    // as after a crash.
    match log.close() {
        Ok(()) => done.log_closed.store(true, Ordering::SeqCst),
        Err(e) => super::log_event(&format!(
            "warning: could not close the log at the stop: {e}; the next start checks it as after a crash"
        )),
    }
}

/// Decides, swaps in and completes an install, in the order of `store::snapshot`.
fn install_snapshot(
    log: &mut LogStore,
    data_dir: &std::path::Path,
    applier: &Sender<ApplierMsg>,
    point: InstallPoint,
) -> crate::error::Result<()> {
    use crate::store::snapshot;
    log.sync()?;
    snapshot::decide_install(data_dir, point.point)?;
    let (done, wait) = std::sync::mpsc::channel();
    applier
        .send(ApplierMsg::Install {
            index: point.point.index,
            done,
        })
        .map_err(|_| Error::ShuttingDown)?;
    wait.recv().map_err(|_| Error::ShuttingDown)??;
    if point.reset_log {
        log.reset(point.point)?;
    } else {
        log.compact(point.point.index)?;
    }
    snapshot::clear_install(data_dir)
}

/// The applier: applies committed entries and answers the clients that proposed them.
pub fn run_applier(shared: Arc<Shared>, committed: Receiver<ApplierMsg>) {
    let mut pending: Option<ApplierMsg> = None;
    loop {
        let first = match pending.take() {
            Some(m) => m,
            None => match committed.recv() {
                Ok(m) => m,
                Err(_) => return,
            },
        };
        let mut entries = match first {
            ApplierMsg::Apply(e) => e,
            ApplierMsg::Install { index, done } => {
                let installed = shared.datums.install_snapshot(index);
                if installed.is_ok() {
                    shared.metrics.snapshots_installed.inc();
                }
                let _ = done.send(installed);
                continue;
            }
        };
        // Batch consecutive applies; an install waits its turn.
        for more in committed.try_iter() {
            match more {
                ApplierMsg::Apply(e) => entries.extend(e),
                install => {
                    pending = Some(install);
                    break;
                }
            }
        }
        let results = match shared.datums.apply(&entries) {
            Ok(r) => r,
            Err(e) => super::fatal(&format!("cannot apply committed entries: {e}")),
        };
        let mut waiters = shared.waiters.lock().expect("waiters lock");
        for (index, term, applied) in results {
            if let Some((want_term, reply)) = waiters.remove(&index) {
                // Another leader's entry took this index: ours was never committed.
                let answer = if want_term == term {
                    shared.metrics.proposals_committed.inc();
                    Ok((applied, term, index))
                } else {
                    shared.metrics.proposals_failed.inc();
                    Err(Error::Superseded)
                };
                let _ = reply.send(answer);
            }
        }
    }
}
