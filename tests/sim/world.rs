//! The simulated cluster for one seed: N `RaftCore`s on a virtual clock, a network that
//! drops, delays, duplicates, reorders and partitions, per-member disks that lose what was not
//! yet durable when the member crashes, paused members (as under SIGSTOP), leadership
//! transfers, and a client that publishes, deletes and reads. Members checkpoint their datum
//! set and compact their log (most seeds, with a small retained log), so leaders stream
//! snapshots to members that fall behind, over the same faulty network. In half the seeds
//! the configuration changes too: spare members (started as with `--join`) are added as
//! learners, promoted, and members removed, the leader among them. It plays the shell's
//! part of the `Ready` contract strictly and checks the invariants in `oracle` after every
//! event.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};

use nacos_raft::raft::{
    Command, Config, Entry, Envelope, HardState, InstallPoint, LogId, Message, PeerAddr,
    PeerChange, PeerSet, RaftCore, ReadState, Role, APPLY_AHEAD_OF_DURABLE,
};

use super::log::SimLog;
use super::oracle::{Datums, Oracle};
use super::rng::Rng;

pub const TICK_MS: u64 = 10;
pub const HEARTBEAT_MS: u64 = 30;
pub const ELECTION_MS: u64 = 150;
/// After healing, a cluster in which no member applied anything or grew its log past its
/// longest yet for this much virtual time (about 66 election timeouts) is stuck. Catching up
/// may take longer than that in total with one-entry Appends and slow disks, so the limit is
/// on progress; `HEAL_CAP_MS` bounds the whole.
pub const LIVENESS_MS: u64 = 10_000;
pub const HEAL_CAP_MS: u64 = 1_800_000;
const KEYS: usize = 6;

/// Which faults a seed injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    Calm,
    Lossy,
    Partitions,
    Crashes,
    Chaos,
}

#[derive(Clone, Debug)]
pub struct Params {
    pub nodes: usize,
    pub mix: Mix,
    pub drop: f64,
    pub dup: f64,
    /// Chance that a message takes `slow_delay` instead of `delay`: this is what reorders.
    pub slow: f64,
    pub delay: (u64, u64),
    pub slow_delay: (u64, u64),
    pub persist_delay: (u64, u64),
    pub crashes: bool,
    /// A crash may leave the write in progress half done (hard state, truncation, a prefix of
    /// the entries, in the order the `Ready` contract writes them).
    pub torn: bool,
    pub partitions: bool,
    pub pauses: bool,
    pub transfers: bool,
    pub fault_every: (u64, u64),
    /// Chance that a crash, pause or isolation picks the current leader.
    pub hit_leader: f64,
    /// Each member's clock rate in percent of real time (all 100 without skew): timers drift
    /// apart, as on machines under uneven load.
    pub clock_rates: Vec<u64>,
    pub chaos_events: u64,
    pub propose_every: (u64, u64),
    pub read_every: (u64, u64),
    pub max_entries: usize,
    pub max_inflight: usize,
    /// Every this many applied entries a member checkpoints its datum set and compacts its
    /// log to `retain` entries behind it. `None`: never (the schedules from before
    /// compaction, unchanged).
    pub compact_every: Option<u64>,
    pub retain: u64,
    /// How long a snapshot stream takes, from the leader's start to the last chunk.
    pub stream_time: (u64, u64),
    /// Configuration changes among the faults, with this many spare members (started with
    /// no configuration) to add; `false`: the schedules from before membership changes.
    pub membership: bool,
    pub spares: usize,
    /// The members' `--auto-promote`.
    pub auto_promote: bool,
}

impl Params {
    pub fn for_seed(seed: u64) -> Params {
        let mut r = Rng::new(seed ^ 0x00C0_FFEE_5EED);
        let nodes = if r.chance(0.5) { 3 } else { 5 };
        let mix = r.pick(&[
            Mix::Calm,
            Mix::Lossy,
            Mix::Partitions,
            Mix::Crashes,
            Mix::Chaos,
            Mix::Chaos,
        ]);
        let lossy = matches!(mix, Mix::Lossy | Mix::Chaos);
        let skew = r.chance(0.3);
        let pct = |r: &mut Rng, hi: u64| r.range((0, hi)) as f64 / 100.0;
        // Compaction is drawn from its own stream, so every other parameter of a seed is
        // what it was before compaction existed.
        let mut c = Rng::new(seed ^ 0x5AA9_C0DE_C0DE);
        let compact_every = (!c.chance(0.3)).then(|| c.pick(&[2, 5, 12, 30]));
        let retain = c.pick(&[0, 1, 3, 8]);
        let stream_time = (2, c.pick(&[10, 60, 300]));
        // Membership changes too, from a stream of their own.
        let mut m = Rng::new(seed ^ 0x4D45_4D42_4552_5321);
        let membership = m.chance(0.5);
        let spares = if membership {
            m.range((1, 2)) as usize
        } else {
            0
        };
        let auto_promote = m.chance(0.5);
        let mut p = Params {
            nodes,
            mix,
            drop: if lossy { pct(&mut r, 20) } else { 0.0 },
            dup: if lossy { pct(&mut r, 10) } else { 0.0 },
            slow: if lossy { pct(&mut r, 10) } else { 0.0 },
            delay: (1, r.range((2, 15))),
            slow_delay: (20, 400),
            persist_delay: (1, r.pick(&[2, 10, 25, 60])),
            crashes: matches!(mix, Mix::Crashes | Mix::Chaos),
            torn: r.chance(0.5),
            partitions: matches!(mix, Mix::Partitions | Mix::Chaos),
            pauses: matches!(mix, Mix::Partitions | Mix::Crashes | Mix::Chaos),
            transfers: mix != Mix::Calm || r.chance(0.5),
            fault_every: (10, r.range((50, 800))),
            hit_leader: pct(&mut r, 80),
            clock_rates: (0..nodes)
                .map(|_| if skew { r.range((50, 200)) } else { 100 })
                .collect(),
            chaos_events: r.range((3000, 8000)),
            propose_every: (1, r.range((4, 30))),
            read_every: (1, r.range((4, 40))),
            max_entries: r.pick(&[1, 2, 4, 64]),
            max_inflight: r.pick(&[1, 2, 8, 64]),
            compact_every,
            retain,
            stream_time,
            membership,
            spares,
            auto_promote,
        };
        // Spares run on skewed clocks as the others do.
        for _ in 0..spares {
            let rate = if skew { m.range((50, 200)) } else { 100 };
            p.clock_rates.push(rate);
        }
        p
    }

    /// The seed's parameters with membership changes off: the schedule a regression found
    /// before they existed.
    pub fn before_membership(seed: u64) -> Params {
        let mut p = Params::for_seed(seed);
        p.membership = false;
        p.spares = 0;
        p
    }
}

/// What compaction and snapshots did in one seed.
#[derive(Clone, Debug, Default)]
pub struct SnapStats {
    /// `RaftCore::compact` calls that dropped entries.
    pub compactions: u64,
    /// Snapshot streams a leader started, and those that ended in failure (lost, cut off,
    /// the follower crashed or refused).
    pub streams: u64,
    pub failed: u64,
    /// Offers answered `Ok(true)`, and of those the installs that kept the log after the
    /// point (`reset_log: false`).
    pub installs: u64,
    pub kept_log: u64,
    /// Offers answered `Ok(false)` (the follower was past the point) and `Err` (refused).
    pub not_needed: u64,
    pub refused: u64,
    /// `Ready::snapshots` a leader could not serve: the index it would stream is not in its
    /// log any more (the shell then waits for the next request).
    pub unservable: u64,
    /// Malformed messages injected as if from a broken member, every one refused.
    pub malformed_refused: u64,
    /// Configuration changes asked of a leader, appended, and refused (busy or unsafe);
    /// elections won by members added during the run.
    pub changes_asked: u64,
    pub changes_appended: u64,
    pub changes_refused: u64,
    pub leaders_added: u64,
}

/// What one seed did, for the runner's statistics.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub params: Params,
    pub events: u64,
    pub leader_terms: usize,
    pub acked: usize,
    pub reads_ok: usize,
    /// Whether a majority already followed one leader when healing began.
    pub leader_at_heal: bool,
    /// Virtual ms from healing until a majority followed one leader in its term.
    pub heal_to_leader_ms: u64,
    /// Virtual ms from healing until every member had applied the same last index.
    pub heal_to_converged_ms: u64,
    pub snap: SnapStats,
}

#[derive(Debug)]
enum Ev {
    Tick {
        node: usize,
        inc: u64,
    },
    Deliver(Envelope),
    Persisted {
        node: usize,
        inc: u64,
    },
    Propose,
    Read,
    Fault,
    Restart(usize),
    Heal(u64),
    /// A snapshot stream's last chunk reaches its follower.
    SnapshotArrive(Box<Stream>),
    /// The leader's stream ends: it reports to its core.
    SnapshotDone {
        leader: usize,
        inc: u64,
        peer: usize,
        index: u64,
        ok: bool,
    },
}

/// One snapshot stream, as the shell's `snapshot::send`: the leader's datum set at `point`,
/// captured when it began, and the term it leads.
struct Stream {
    leader: usize,
    leader_inc: u64,
    peer: usize,
    /// The follower's life when the stream began: a restart in between breaks it.
    peer_inc: u64,
    term: u64,
    point: LogId,
    datums: Datums,
    /// The configuration at `point` (chunk 0 of the shell's stream).
    peers: PeerSet,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Stream {{ n{} -> n{}, term {}, point {}, {} datums }}",
            self.leader,
            self.peer,
            self.term,
            self.point,
            self.datums.data.len()
        )
    }
}

struct Sched {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Sched {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Sched {}
impl PartialOrd for Sched {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Sched {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// One `Ready`'s durable part (or a compaction), queued on the member's disk; its `after`
/// messages leave only when it completes (and, the queue being FIFO, every earlier one has
/// too).
#[derive(Clone, Default)]
struct Job {
    hs: Option<HardState>,
    /// An accepted snapshot, its datum set and configuration, installed before the entries
    /// that follow.
    install: Option<(InstallPoint, Datums, PeerSet)>,
    truncate_from: Option<u64>,
    entries: Vec<Entry>,
    after: Vec<Envelope>,
    /// Drop the durable log up to here (the driver's compaction batch).
    compact: Option<LogId>,
}

impl Job {
    fn stages(&self) -> usize {
        self.hs.is_some() as usize
            + self.install.is_some() as usize
            + self.truncate_from.is_some() as usize
            + self.entries.len()
            + self.compact.is_some() as usize
    }
}

struct ReadReq {
    key: String,
    /// Highest acknowledged index of `key`, and of any key, when the read was asked.
    need_key: u64,
    need_all: u64,
}

struct Node {
    core: Option<RaftCore>,
    /// Bumped by each crash, so events of an earlier life are ignored.
    inc: u64,
    last_tick_at: u64,
    paused_until: u64,
    disk_hs: HardState,
    disk_log: SimLog,
    /// The durable datum set (the newest checkpoint or installed snapshot) and the index it
    /// is at: what a restart loads before replaying the log after it.
    disk_datums: Datums,
    disk_datums_at: u64,
    /// The configuration at `disk_datums_at` (the bootstrap one at 0; none for a spare).
    disk_peers: PeerSet,
    /// The core's log as the `Ready`s described it, checked against the core after each one.
    mem_log: SimLog,
    jobs: VecDeque<Job>,
    /// Jobs in `jobs` that install a snapshot.
    installs_queued: usize,
    last_job_at: u64,
    datums: Datums,
    /// The configuration at `applied`, as the shell's datum set keeps it for checkpoints.
    peers: PeerSet,
    applied: u64,
    /// Whether `datums` changed since it was last compared with the oracle.
    datums_changed: bool,
    /// Highest index the core handed out for applying in this life (or the point it
    /// continues from).
    handed: u64,
    /// `applied` at the last checkpoint, for the compaction cadence.
    checkpoint_at: u64,
    commit_seen: u64,
    /// An accepted snapshot's point, datum set and configuration, until the `Ready` that
    /// installs it.
    staged: Option<(LogId, Datums, PeerSet)>,
    /// Snapshot streams under way, by follower, with the index each covers: compaction
    /// stops short of them (the shell's pins).
    streams: BTreeMap<usize, u64>,
    /// Proposals this member took as leader: index -> (term, command).
    pending: BTreeMap<u64, (u64, Command)>,
    reads: HashMap<u64, ReadReq>,
    waiting_reads: Vec<(u64, ReadReq)>,
}

pub struct Sim {
    pub p: Params,
    seed: u64,
    rng: Rng,
    /// Draws for malformed messages only: they must change nothing, so the schedule the
    /// main generator makes is the same with or without them.
    garbage_rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Sched>>,
    nodes: Vec<Node>,
    addrs: Vec<PeerAddr>,
    /// The configuration the cluster starts with: the first `p.nodes` members as voters.
    bootstrap: PeerSet,
    /// Directed links that lose everything: (from, to).
    blocked: HashSet<(usize, usize)>,
    partition_gen: u64,
    healing: bool,
    heal_at: u64,
    leader_after_heal: Option<u64>,
    /// When a member last applied an entry or grew its log past `high`, while healing.
    progress_at: u64,
    high: Vec<u64>,
    oracle: Oracle,
    next_op: u64,
    next_ctx: u64,
    events: u64,
    reads_ok: usize,
    snap: SnapStats,
    trace: bool,
}

fn idx(p: &PeerAddr) -> usize {
    p.as_str()[1..]
        .parse()
        .expect("simulated members are named n<i>")
}

impl Sim {
    pub fn new(seed: u64, trace: bool) -> Sim {
        Sim::with_params(seed, Params::for_seed(seed), trace)
    }

    /// The seed's schedule under other parameters (a regression found before compaction
    /// replays with it off).
    pub fn with_params(seed: u64, p: Params, trace: bool) -> Sim {
        let addrs: Vec<PeerAddr> = (0..p.nodes + p.spares)
            .map(|i| PeerAddr::new(format!("n{i}")))
            .collect();
        let bootstrap = PeerSet::of_voters(addrs[..p.nodes].iter().cloned());
        let mut sim = Sim {
            seed,
            rng: Rng::new(seed),
            garbage_rng: Rng::new(seed ^ 0x6A5B_A6E0_BAD0_0000),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            addrs,
            bootstrap,
            blocked: HashSet::new(),
            partition_gen: 0,
            healing: false,
            heal_at: 0,
            leader_after_heal: None,
            progress_at: 0,
            high: Vec::new(),
            oracle: Oracle::default(),
            next_op: 0,
            next_ctx: 1,
            events: 0,
            reads_ok: 0,
            snap: SnapStats::default(),
            trace,
            p,
        };
        for n in 0..sim.p.nodes + sim.p.spares {
            let disk_peers = if n < sim.p.nodes {
                sim.bootstrap.clone()
            } else {
                PeerSet::default()
            };
            sim.nodes.push(Node {
                core: None,
                inc: 0,
                last_tick_at: 0,
                paused_until: 0,
                disk_hs: HardState::default(),
                disk_log: SimLog::default(),
                disk_datums: Datums::default(),
                disk_datums_at: 0,
                disk_peers: disk_peers.clone(),
                mem_log: SimLog::default(),
                jobs: VecDeque::new(),
                installs_queued: 0,
                last_job_at: 0,
                datums: Datums::default(),
                peers: disk_peers,
                applied: 0,
                datums_changed: false,
                handed: 0,
                checkpoint_at: 0,
                commit_seen: 0,
                staged: None,
                streams: BTreeMap::new(),
                pending: BTreeMap::new(),
                reads: HashMap::new(),
                waiting_reads: Vec::new(),
            });
            sim.restart(n);
        }
        let (pe, re, fe) = (sim.p.propose_every, sim.p.read_every, sim.p.fault_every);
        sim.schedule_in(pe, Ev::Propose);
        sim.schedule_in(re, Ev::Read);
        sim.schedule_in(fe, Ev::Fault);
        sim
    }

    /// Runs the seed: the random schedule, then healing until convergence, then the final
    /// checks. Panics on any violated invariant.
    pub fn run(mut self) -> Outcome {
        while self.events < self.p.chaos_events {
            self.step();
        }
        self.heal();
        while !self.converged() {
            assert!(
                self.now < self.progress_at.max(self.heal_at) + LIVENESS_MS
                    && self.now < self.heal_at + HEAL_CAP_MS,
                "liveness: healed at {} ms, no progress since {} ms: {}",
                self.heal_at,
                self.progress_at.max(self.heal_at),
                self.describe()
            );
            self.step();
        }
        self.final_checks();
        Outcome {
            params: self.p.clone(),
            events: self.events,
            leader_terms: self.oracle.leader_terms(),
            acked: self.oracle.acked.len(),
            reads_ok: self.reads_ok,
            leader_at_heal: self.leader_after_heal == Some(self.heal_at),
            heal_to_leader_ms: self.leader_after_heal.unwrap_or(self.now) - self.heal_at,
            heal_to_converged_ms: self.now - self.heal_at,
            snap: self.snap.clone(),
        }
    }

    fn describe(&self) -> String {
        let mut s = format!("t={} ", self.now);
        for (n, node) in self.nodes.iter().enumerate() {
            match &node.core {
                None => s += &format!("[n{n} down] "),
                Some(c) => {
                    let st = c.status();
                    s += &format!(
                        "[n{n} {} t{} leader {:?} start {} commit {} last {} stable {} applied {} voters {:?} learners {:?} at {}] ",
                        st.role.as_str(),
                        st.term,
                        st.leader.map(|l| l.0),
                        c.log_start().index,
                        st.commit_index,
                        st.last_log_index,
                        st.stable_index,
                        node.applied,
                        st.peers.voters.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                        st.peers.learners.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                        st.peers_index,
                    );
                    for f in st.followers {
                        s += &format!(
                            "({} match {} next {}) ",
                            f.peer, f.match_index, f.next_index
                        );
                    }
                }
            }
        }
        s
    }

    // ------------------------------------------------------------ the event loop

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Sched {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn schedule_in(&mut self, delay: (u64, u64), ev: Ev) {
        let at = self.now + self.rng.range(delay);
        self.schedule(at, ev);
    }

    fn step(&mut self) {
        let Reverse(s) = self.queue.pop().expect("ticks keep the queue non-empty");
        self.now = s.at;
        self.events += 1;
        if self.trace {
            eprintln!("{:>7} {:?}", self.now, s.ev);
        }
        self.handle(s.ev);
        self.check_after_event();
    }

    fn alive(&self, n: usize, inc: u64) -> bool {
        self.nodes[n].core.is_some() && self.nodes[n].inc == inc
    }

    /// A paused member does nothing until it resumes: its events wait for it.
    fn defer_if_paused(&mut self, n: usize, ev: Ev) -> Option<Ev> {
        let until = self.nodes[n].paused_until;
        if self.now < until {
            self.schedule(until, ev);
            None
        } else {
            Some(ev)
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick { node, inc } => {
                if !self.alive(node, inc) {
                    return;
                }
                if self.defer_if_paused(node, Ev::Tick { node, inc }).is_none() {
                    return;
                }
                let nd = &mut self.nodes[node];
                let elapsed = (self.now - nd.last_tick_at) * self.p.clock_rates[node] / 100;
                nd.last_tick_at = self.now;
                nd.core.as_mut().expect("alive").tick(elapsed);
                self.drive(node);
                self.schedule_in((TICK_MS / 2, TICK_MS * 3 / 2), Ev::Tick { node, inc });
            }
            Ev::Deliver(env) => {
                let (from, to) = (idx(&env.from), idx(&env.to));
                if self.blocked.contains(&(from, to)) || self.nodes[to].core.is_none() {
                    return;
                }
                let Some(Ev::Deliver(env)) = self.defer_if_paused(to, Ev::Deliver(env)) else {
                    return;
                };
                if let Err(r) = self.nodes[to].core.as_mut().expect("alive").step(env) {
                    // A correct member's message is refused only for coming from outside the
                    // receiver's configuration: a removed member that never learned it was
                    // removed, still campaigning.
                    assert!(
                        r.reason.contains("is not another member"),
                        "n{to} refused a correct member's message: {}",
                        r.reason
                    );
                }
                self.drive(to);
            }
            Ev::Persisted { node, inc } => {
                if !self.alive(node, inc) {
                    return;
                }
                if self
                    .defer_if_paused(node, Ev::Persisted { node, inc })
                    .is_none()
                {
                    return;
                }
                self.complete_job(node);
            }
            Ev::Propose => {
                if !self.healing {
                    self.propose();
                    let pe = self.p.propose_every;
                    self.schedule_in(pe, Ev::Propose);
                }
            }
            Ev::Read => {
                if !self.healing {
                    self.read();
                    let re = self.p.read_every;
                    self.schedule_in(re, Ev::Read);
                }
            }
            Ev::Fault => {
                self.inject_malformed();
                if !self.healing {
                    self.fault();
                    let fe = self.p.fault_every;
                    self.schedule_in(fe, Ev::Fault);
                }
            }
            Ev::Restart(n) => {
                if self.nodes[n].core.is_none() {
                    self.restart(n);
                }
            }
            Ev::Heal(generation) => {
                if generation == self.partition_gen {
                    self.blocked.clear();
                }
            }
            Ev::SnapshotArrive(stream) => {
                if !self.alive(stream.leader, stream.leader_inc) {
                    return; // the stream died with its leader
                }
                // A paused sender or receiver holds the stream up.
                let until = self.nodes[stream.leader]
                    .paused_until
                    .max(self.nodes[stream.peer].paused_until);
                if self.now < until {
                    self.schedule(until, Ev::SnapshotArrive(stream));
                    return;
                }
                self.snapshot_arrived(*stream);
            }
            Ev::SnapshotDone {
                leader,
                inc,
                peer,
                index,
                ok,
            } => {
                if !self.alive(leader, inc) {
                    return;
                }
                let ev = Ev::SnapshotDone {
                    leader,
                    inc,
                    peer,
                    index,
                    ok,
                };
                if self.defer_if_paused(leader, ev).is_none() {
                    return;
                }
                self.nodes[leader].streams.remove(&peer);
                self.snap.failed += !ok as u64;
                let to = self.addrs[peer].clone();
                let core = self.nodes[leader].core.as_mut().expect("alive");
                core.on_snapshot_sent(&to, index, ok);
                self.drive(leader);
            }
        }
    }

    // ------------------------------------------------------------ the shell's part

    /// Carries out one `Ready` exactly as the contract allows, no more.
    fn drive(&mut self, n: usize) {
        let Some(core) = self.nodes[n].core.as_mut() else {
            return;
        };
        let rd = core.take_ready();
        if rd.is_empty() {
            return;
        }
        if self.trace {
            eprintln!("        n{n} ready: {rd:?}");
        }
        // The shell starts snapshot streams first (`Driver::dispatch`).
        for peer in &rd.snapshots {
            self.start_snapshot(n, peer);
        }
        let install = rd.install.map(|ip| {
            let (datums, peers) = self.install(n, ip);
            (ip, datums, peers)
        });
        self.mirror_log(n, rd.truncate_from, &rd.entries);
        let persist = rd.needs_persist() || !rd.after_persist.is_empty();
        for env in rd.messages {
            self.send(n, env);
        }
        if persist {
            self.queue_job(
                n,
                Job {
                    hs: rd.hard_state,
                    install,
                    truncate_from: rd.truncate_from,
                    entries: rd.entries,
                    after: rd.after_persist,
                    compact: None,
                },
            );
        }
        for e in rd.committed {
            self.apply(n, e);
        }
        for rs in rd.reads {
            self.read_answered(n, rs);
        }
        self.serve_reads(n);
    }

    fn queue_job(&mut self, n: usize, job: Job) {
        let d = self.rng.range(self.p.persist_delay);
        let nd = &mut self.nodes[n];
        let at = nd.last_job_at.max(self.now + d);
        nd.last_job_at = at;
        nd.installs_queued += job.install.is_some() as usize;
        nd.jobs.push_back(job);
        let inc = nd.inc;
        self.schedule(at, Ev::Persisted { node: n, inc });
    }

    fn mirror_log(&mut self, n: usize, truncate_from: Option<u64>, entries: &[Entry]) {
        let nd = &mut self.nodes[n];
        if let Some(tf) = truncate_from {
            assert!(
                tf > nd.mem_log.start.index && tf <= nd.mem_log.last_index() + 1,
                "n{n}: truncate_from {tf} outside its log (after {}, to {})",
                nd.mem_log.start,
                nd.mem_log.last_index()
            );
            nd.mem_log.truncate_from(tf);
        }
        for e in entries {
            assert_eq!(
                e.index,
                nd.mem_log.last_index() + 1,
                "n{n}: Ready.entries do not continue its log (no truncate_from for an overwrite?)"
            );
            // Log Matching is checked as entries become durable (`write_disk`): a sole voter
            // that crashed before its term was durable wins that term again with other
            // entries, and the ones it held only in memory (never sent: a leader's messages
            // wait until its term is durable) existed nowhere else.
            nd.mem_log.push(e.clone());
        }
        let core = nd.core.as_ref().expect("alive");
        assert_eq!(
            core.last_index(),
            nd.mem_log.last_index(),
            "n{n}: the Readies do not describe the core's log"
        );
        assert_eq!(
            core.log_start(),
            nd.mem_log.start,
            "n{n}: the core's log starts elsewhere than the Readies and compactions said"
        );
        assert_eq!(
            core.term_at(nd.mem_log.last_index()),
            Some(nd.mem_log.last_term()),
            "n{n}: last term differs from the Readies"
        );
    }

    /// The persist of the oldest queued `Ready` completes.
    fn complete_job(&mut self, n: usize) {
        let job = self.nodes[n]
            .jobs
            .pop_front()
            .expect("one Persisted event per job");
        self.nodes[n].installs_queued -= job.install.is_some() as usize;
        write_disk(&mut self.nodes[n], n, &job, usize::MAX, &mut self.oracle);
        for env in job.after {
            self.send(n, env);
        }
        if let Some(last) = job.entries.last() {
            self.nodes[n]
                .core
                .as_mut()
                .expect("alive")
                .on_persisted(last.id());
        }
        self.drive(n);
    }

    fn send(&mut self, from: usize, env: Envelope) {
        self.check_durable_before_send(from, &env);
        let to = idx(&env.to);
        // Healing ends the network faults too.
        let (drop, dup, slow) = if self.healing {
            (0.0, 0.0, 0.0)
        } else {
            (self.p.drop, self.p.dup, self.p.slow)
        };
        if self.blocked.contains(&(from, to)) || self.rng.chance(drop) {
            return;
        }
        let copies = if self.rng.chance(dup) { 2 } else { 1 };
        for _ in 0..copies {
            let d = if self.rng.chance(slow) {
                self.rng.range(self.p.slow_delay)
            } else {
                self.rng.range(self.p.delay)
            };
            self.schedule(self.now + d, Ev::Deliver(env.clone()));
        }
    }

    /// Raft §5.2, §5.3: a vote, a vote request, an append acknowledgement and anything a
    /// leader sends promise durable state; check the sender's disk holds it as it leaves.
    fn check_durable_before_send(&self, n: usize, env: &Envelope) {
        let nd = &self.nodes[n];
        let hs = &nd.disk_hs;
        let durable_term = |what: &str| {
            assert!(
                hs.term >= env.term,
                "n{n} sent {what} in term {} while its durable term is {}",
                env.term,
                hs.term
            )
        };
        match &env.msg {
            Message::Vote { .. } => {
                durable_term("a vote request");
                assert!(
                    hs.term > env.term || hs.vote_for.as_ref() == Some(&env.from),
                    "n{n} asked for votes in term {} before its own vote was durable",
                    env.term
                );
            }
            Message::VoteResp { granted: true } => {
                durable_term("a vote");
                assert!(
                    hs.term > env.term || hs.vote_for.as_ref() == Some(&env.to),
                    "n{n} granted its vote in term {} to {} before it was durable (disk: {:?})",
                    env.term,
                    env.to,
                    hs
                );
            }
            Message::AppendResp {
                success: true,
                index,
                ..
            } => {
                durable_term("an append acknowledgement");
                assert!(
                    nd.disk_log.last_index() >= *index,
                    "n{n} acknowledged index {index} in term {} with its durable log ending at {}",
                    env.term,
                    nd.disk_log.last_index()
                );
            }
            Message::Append { .. } | Message::Heartbeat { .. } | Message::TimeoutNow => {
                durable_term("a leader's message")
            }
            _ => {}
        }
    }

    fn apply(&mut self, n: usize, e: Entry) {
        // Ready contract, step 3: a committed entry may apply before it is durable here (a
        // majority holds it; that it is the one every member applies at its index is the
        // oracle's check), at most `APPLY_AHEAD_OF_DURABLE` past the local durable index.
        let stable = self.nodes[n]
            .core
            .as_ref()
            .map_or(0, RaftCore::stable_index);
        assert!(
            e.index <= stable + APPLY_AHEAD_OF_DURABLE,
            "n{n} was told to apply entry {} with only {stable} durable here",
            e.index
        );
        let nd = &mut self.nodes[n];
        assert_eq!(
            e.index,
            nd.handed + 1,
            "n{n}: committed entries out of order (or again)"
        );
        nd.handed = e.index;
        assert!(
            nd.mem_log.start.index >= e.index
                || nd.mem_log.get(e.index).is_some_and(|d| d.term == e.term),
            "n{n} was told to apply entry {} (term {}) that is not in its log",
            e.index,
            e.term
        );
        self.oracle.on_apply(n, &e);
        self.progress_at = self.now;
        if e.index <= nd.applied {
            // The datum set loaded at start (a checkpoint ahead of the log's start) holds
            // it already: the shell's applier skips it too.
            return;
        }
        assert_eq!(
            e.index,
            nd.applied + 1,
            "n{n}: entry {} handed out for applying after only {} was applied",
            e.index,
            nd.applied
        );
        nd.datums.apply(&e);
        if let Command::Config { peers } = &e.command {
            nd.peers = peers.clone();
        }
        nd.applied = e.index;
        nd.datums_changed = true;
        // How the shell confirms a publish: the leader that took it applies that index with
        // the term it was proposed in.
        if let Some((term, command)) = nd.pending.remove(&e.index) {
            if term == e.term {
                assert_eq!(
                    command, e.command,
                    "n{n}: index {} confirmed with another command",
                    e.index
                );
                self.oracle.on_ack(&e);
            }
        }
        self.maybe_compact(n);
    }

    // ------------------------------------------------------------ compaction and snapshots

    /// Every `compact_every` applied entries: a checkpoint of the applied datum set, durable
    /// at once (the shell's flusher writes it on its own thread), then the log up to
    /// `retain` entries behind it goes, but not past a snapshot stream still under way (the
    /// shell's pins). The core drops its entries at once; the disk follows in log order.
    /// None while an install is queued: until it is durable the datum set on disk is the old
    /// one (the shell swaps it when its writer gets there), and the install replaces any
    /// checkpoint written before.
    fn maybe_compact(&mut self, n: usize) {
        let Some(every) = self.p.compact_every else {
            return;
        };
        let nd = &mut self.nodes[n];
        if nd.applied < nd.checkpoint_at + every || nd.installs_queued > 0 {
            return;
        }
        // The shell publishes a checkpoint only once its log is durable up to what it holds
        // (`DatumSet::checkpoint`); here it is taken at a later apply instead.
        let stable = nd.core.as_ref().map_or(0, RaftCore::stable_index);
        if stable < nd.applied {
            return;
        }
        nd.checkpoint_at = nd.applied;
        nd.disk_datums = nd.datums.clone();
        nd.disk_datums_at = nd.applied;
        nd.disk_peers = nd.peers.clone();
        let pinned = nd.streams.values().min().copied().unwrap_or(u64::MAX);
        let upto = nd.applied.saturating_sub(self.p.retain).min(pinned);
        // The oracle learns of commits from the retained log, so before it shrinks.
        self.note_commits(n);
        let nd = &mut self.nodes[n];
        let core = nd.core.as_mut().expect("alive");
        let before = core.log_start();
        if !core.compact(upto) {
            return;
        }
        let start = core.log_start();
        let stable = core.status().stable_index;
        assert!(
            start.index > before.index
                && start.index <= upto
                && start.index <= nd.applied
                && start.index <= stable,
            "n{n}: compact({upto}) moved the log start from {before} to {start} (applied {}, stable {stable})",
            nd.applied
        );
        assert!(
            nd.mem_log.holds(start),
            "n{n}: compacted to {start}, which its log (after {}) does not hold",
            nd.mem_log.start
        );
        nd.mem_log.compact_to(start);
        self.snap.compactions += 1;
        if self.trace {
            eprintln!("        n{n} compacted to {start}");
        }
        self.queue_job(
            n,
            Job {
                compact: Some(start),
                ..Job::default()
            },
        );
    }

    /// A leader's `Ready::snapshots` names `peer`: start streaming, as the shell's
    /// `Driver::start_snapshot` does. The stream covers `min(applied, commit)` and the
    /// datum set there, captured now. One difference: a member that no longer leads by the
    /// time it reads its `Ready` starts no stream, where the shell would send one in its new
    /// term.
    fn start_snapshot(&mut self, n: usize, peer: &PeerAddr) {
        let p = idx(peer);
        let nd = &self.nodes[n];
        let core = nd.core.as_ref().expect("alive");
        if core.role() != Role::Leader || nd.streams.contains_key(&p) {
            return;
        }
        let index = nd.applied.min(core.commit_index());
        let Some(snap_term) = core.term_at(index) else {
            self.snap.unservable += 1;
            return;
        };
        // Below what it applied only for a leader that restarted from a checkpoint ahead of
        // its commit index; its exact datum set there is the history's.
        let (datums, peers) = if index == nd.applied {
            (nd.datums.clone(), nd.peers.clone())
        } else {
            (
                self.oracle.state_at(index),
                self.oracle.peers_at(index, &self.bootstrap),
            )
        };
        let stream = Stream {
            leader: n,
            leader_inc: nd.inc,
            peer: p,
            peer_inc: self.nodes[p].inc,
            term: core.term(),
            point: LogId::new(index, snap_term),
            datums,
            peers,
        };
        if self.trace {
            eprintln!("        n{n} streams {stream:?}");
        }
        self.nodes[n].streams.insert(p, index);
        self.nodes[n]
            .core
            .as_mut()
            .expect("alive")
            .on_snapshot_started(peer, index);
        self.snap.streams += 1;
        let t = self.p.stream_time;
        self.schedule_in(t, Ev::SnapshotArrive(Box::new(stream)));
    }

    /// The last chunk reaches the follower (unless the network lost one, or the follower
    /// restarted since the first): it offers the snapshot to its core, and the answer goes
    /// back to the leader, which reports the stream's end to its core. A failure is
    /// reported after a back-off, as the shell does.
    fn snapshot_arrived(&mut self, s: Stream) {
        let (l, p) = (s.leader, s.peer);
        let drop = if self.healing { 0.0 } else { self.p.drop };
        let delivered =
            self.alive(p, s.peer_inc) && !self.blocked.contains(&(l, p)) && !self.rng.chance(drop);
        let mut ok = false;
        if delivered {
            let from = self.addrs[l].clone();
            let core = self.nodes[p].core.as_mut().expect("alive");
            let answer = core.offer_snapshot(&from, s.term, s.point, s.peers.clone());
            if self.trace {
                eprintln!("        n{p} offered {s:?}: {answer:?}");
            }
            match answer {
                Ok(true) => {
                    self.snap.installs += 1;
                    self.nodes[p].staged = Some((s.point, s.datums, s.peers));
                }
                Ok(false) => self.snap.not_needed += 1,
                Err(_) => self.snap.refused += 1,
            }
            self.drive(p);
            ok = answer.is_ok() && !self.blocked.contains(&(p, l)) && !self.rng.chance(drop);
        }
        let delay = if ok {
            self.p.delay
        } else {
            (HEARTBEAT_MS, ELECTION_MS)
        };
        let done = Ev::SnapshotDone {
            leader: l,
            inc: s.leader_inc,
            peer: p,
            index: s.point.index,
            ok,
        };
        self.schedule_in(delay, done);
    }

    /// `Ready::install`: the accepted snapshot replaces the applied datum set now, before
    /// this or any later `Ready`'s committed entries are applied on top of it, and the log
    /// continues after its point. Returns the datum set for the disk, where it is installed
    /// in the same order (before anything later is written).
    fn install(&mut self, n: usize, ip: InstallPoint) -> (Datums, PeerSet) {
        let nd = &mut self.nodes[n];
        let (point, datums, peers) = nd
            .staged
            .take()
            .unwrap_or_else(|| panic!("n{n}: Ready.install {ip:?} without an accepted offer"));
        assert_eq!(
            ip.point, point,
            "n{n}: installs another point than the offer it accepted"
        );
        assert!(
            point.index > nd.applied,
            "a snapshot moved n{n} backwards: it installs {point} after applying {}",
            nd.applied
        );
        self.oracle.check_start(n, point);
        let held = nd.mem_log.holds(point);
        assert_eq!(
            ip.reset_log, !held,
            "n{n}: install at {point} with reset_log {}, but its log (after {}, to {}) {} the point",
            ip.reset_log,
            nd.mem_log.start,
            nd.mem_log.last_index(),
            if held { "holds" } else { "does not hold" }
        );
        if held {
            // Entries up to a committed entry they lead to are committed (Log Matching).
            for i in nd.commit_seen + 1..=point.index {
                if let Some(e) = nd.mem_log.get(i) {
                    self.oracle.on_commit(n, e, None);
                }
            }
            nd.mem_log.compact_to(point);
            self.snap.kept_log += 1;
        } else {
            nd.mem_log.reset(point);
        }
        nd.commit_seen = nd.commit_seen.max(point.index);
        nd.datums = datums.clone();
        nd.peers = peers.clone();
        nd.applied = point.index;
        nd.handed = point.index;
        nd.checkpoint_at = point.index;
        nd.datums_changed = true;
        // Proposals it took as an earlier leader that the snapshot covers get no answer.
        nd.pending.retain(|&i, _| i > point.index);
        self.progress_at = self.now;
        (datums, peers)
    }

    /// Tells the oracle what `n` now counts committed; it must hold those entries.
    fn note_commits(&mut self, n: usize) {
        let nd = &mut self.nodes[n];
        let Some(core) = nd.core.as_ref() else {
            return;
        };
        let commit = core.commit_index();
        assert!(
            commit <= core.last_index(),
            "n{n}: commit index {commit} past its log"
        );
        if commit == nd.commit_seen {
            return;
        }
        assert!(
            commit > nd.commit_seen,
            "n{n}: commit index went back from {} to {commit}",
            nd.commit_seen
        );
        // A leader whose own removal committed steps down in the same step: it still
        // counted that commit as the leader of its term.
        let led = self.oracle.leader_of(core.term()) == Some(n);
        let leading = (core.role() == Role::Leader || led).then(|| core.term());
        for i in nd.commit_seen + 1..=commit {
            let e = nd.mem_log.get(i).unwrap_or_else(|| {
                panic!(
                    "n{n} counts entry {i} committed, which its log (after {}) does not hold",
                    nd.mem_log.start
                )
            });
            self.oracle.on_commit(n, e, leading);
        }
        nd.commit_seen = commit;
    }

    // ------------------------------------------------------------ client

    fn usable(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&n| self.nodes[n].core.is_some() && self.now >= self.nodes[n].paused_until)
            .collect()
    }

    fn propose(&mut self) {
        let leaders: Vec<usize> = self
            .usable()
            .into_iter()
            .filter(|&n| {
                self.nodes[n]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.role() == Role::Leader)
            })
            .collect();
        if leaders.is_empty() {
            return;
        }
        let n = self.rng.pick(&leaders);
        let count = self.rng.range((1, 3));
        let commands: Vec<Command> = (0..count).map(|_| self.random_command()).collect();
        let core = self.nodes[n].core.as_mut().expect("usable");
        if let Ok(first) = core.propose(commands.clone()) {
            for (i, c) in commands.into_iter().enumerate() {
                self.nodes[n]
                    .pending
                    .insert(first.index + i as u64, (first.term, c));
            }
        }
        self.drive(n);
    }

    fn random_command(&mut self) -> Command {
        let key = format!("k{}", self.rng.below(KEYS));
        if self.rng.chance(0.15) {
            Command::delete(key)
        } else {
            self.next_op += 1;
            Command::publish(key, serde_json::json!(self.next_op))
        }
    }

    fn read(&mut self) {
        let usable = self.usable();
        if usable.is_empty() {
            return;
        }
        let n = self.rng.pick(&usable);
        let key = format!("k{}", self.rng.below(KEYS));
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        let req = ReadReq {
            need_key: self.oracle.max_ack_key.get(&key).copied().unwrap_or(0),
            need_all: self.oracle.max_ack,
            key,
        };
        self.nodes[n].reads.insert(ctx, req);
        self.nodes[n].core.as_mut().expect("usable").read_index(ctx);
        self.drive(n);
    }

    fn read_answered(&mut self, n: usize, rs: ReadState) {
        // A duplicated ReadIndexResp answers a read twice; the first answer counts.
        let Some(req) = self.nodes[n].reads.remove(&rs.ctx) else {
            return;
        };
        let Some(index) = rs.index else { return };
        // Raft thesis §6.4: the read index covers everything committed before the read began.
        assert!(
            index >= req.need_all,
            "stale read: n{n} got read index {index} (ctx {}) below index {} acknowledged before the read",
            rs.ctx,
            req.need_all
        );
        self.nodes[n].waiting_reads.push((index, req));
    }

    fn serve_reads(&mut self, n: usize) {
        let nd = &mut self.nodes[n];
        let applied = nd.applied;
        let mut i = 0;
        while i < nd.waiting_reads.len() {
            if nd.waiting_reads[i].0 <= applied {
                let (index, req) = nd.waiting_reads.swap_remove(i);
                let version = nd.datums.version(&req.key);
                assert!(
                    version >= req.need_key,
                    "stale read: n{n} read {} at version {version} (read index {index}) after index {} of it was acknowledged",
                    req.key,
                    req.need_key
                );
                self.reads_ok += 1;
            } else {
                i += 1;
            }
        }
    }

    // ------------------------------------------------------------ faults

    /// A broken member (or a forger holding the secret) sends something no correct member
    /// sends: a batch with a gap or an entry out of place, an entry of a term after the
    /// sender's, a position beyond any log, a candidate claiming entries of its own term,
    /// or a vote asked by one that is not a member. The receiver must refuse it (the core checks these
    /// before looking at its state), and since a refused message changes nothing, every
    /// invariant checked after this event still holds.
    fn inject_malformed(&mut self) {
        let g = &mut self.garbage_rng;
        let n = self.nodes.len();
        let to = g.below(n);
        let Some(core) = self.nodes[to].core.as_mut() else {
            return;
        };
        let from = (to + 1 + g.below(n - 1)) % n;
        let term = core.term() + g.range((0, 2));
        let last = core.last_index();
        let noop = |index, term| Entry {
            index,
            term,
            command: Command::Noop,
        };
        let append = |prev: u64, entries: Vec<Entry>| Message::Append {
            prev_log_index: prev,
            prev_log_term: if prev == 0 { 0 } else { 1 },
            entries,
            leader_commit: prev,
        };
        let prev = last.max(1);
        let (from_addr, msg) = match g.below(7) {
            0 => (
                self.addrs[from].clone(),
                append(prev, vec![noop(prev + 2, 1)]),
            ),
            1 => (self.addrs[from].clone(), append(prev, vec![noop(1, 1)])),
            2 => (
                self.addrs[from].clone(),
                append(prev, vec![noop(prev + 1, term + 1)]),
            ),
            3 => (
                self.addrs[from].clone(),
                Message::AppendResp {
                    success: true,
                    index: u64::MAX - g.range((0, 9)),
                    hint: 0,
                },
            ),
            4 => (
                self.addrs[from].clone(),
                Message::Vote {
                    last_log_index: last + 1,
                    last_log_term: term,
                    transfer: true,
                },
            ),
            5 => (
                self.addrs[from].clone(),
                Message::Heartbeat {
                    leader_commit: 1 << 63,
                    read_ctx: 0,
                },
            ),
            // A leader's messages are taken from anyone holding the cluster secret (the
            // HTTP layer checks it; a follower's configuration may lag the leader's), but a
            // vote only from a member.
            _ => (
                PeerAddr::new("stranger"),
                Message::PreVote {
                    last_log_index: last,
                    last_log_term: core.term_at(last).unwrap_or(0).min(term),
                },
            ),
        };
        // Case 1 is malformed only when the entry cannot sit at index 1 after `prev`.
        let msg = match msg {
            Message::Append { entries, .. } if entries.first().is_some_and(|e| e.index == 1) => {
                append(prev.max(2), entries)
            }
            m => m,
        };
        let env = Envelope {
            from: from_addr,
            to: self.addrs[to].clone(),
            term,
            msg,
        };
        let shown = format!("{env:?}");
        if core.step(env).is_ok() {
            panic!("n{to} accepted a malformed message: {shown}");
        }
        self.snap.malformed_refused += 1;
    }

    fn fault(&mut self) {
        let mut kinds = Vec::new();
        if self.p.crashes {
            kinds.push(0);
        }
        if self.p.partitions {
            kinds.push(1);
        }
        if self.p.pauses {
            kinds.push(2);
        }
        if self.p.transfers {
            kinds.push(3);
        }
        if self.p.membership {
            kinds.push(4);
        }
        if kinds.is_empty() {
            return;
        }
        match self.rng.pick(&kinds) {
            0 => {
                let Some(n) = self.victim() else { return };
                self.crash(n);
                self.schedule_in((5, 800), Ev::Restart(n));
            }
            1 => self.partition(),
            2 => {
                let Some(n) = self.victim() else { return };
                let until = self.now + self.rng.range((50, 1000));
                self.nodes[n].paused_until = until;
                if self.trace {
                    eprintln!("        n{n} paused until {until}");
                }
            }
            3 => {
                let leaders: Vec<usize> = self
                    .usable()
                    .into_iter()
                    .filter(|&n| {
                        self.nodes[n]
                            .core
                            .as_ref()
                            .is_some_and(|c| c.role() == Role::Leader)
                    })
                    .collect();
                if leaders.is_empty() {
                    return;
                }
                let n = self.rng.pick(&leaders);
                let target = if self.rng.chance(0.5) {
                    None
                } else {
                    Some(self.addrs[self.rng.below(self.nodes.len())].clone())
                };
                let _ = self.nodes[n]
                    .core
                    .as_mut()
                    .expect("usable")
                    .transfer_leader(target);
                self.drive(n);
            }
            4 => self.change_members(),
            _ => {}
        }
    }

    /// An operator changes the configuration through the leader: adds a member that is not
    /// in it as a learner (promoted on its own or not), promotes a learner, or removes a
    /// member, the leader itself too. The leader refuses what is not safe now (another
    /// change pending, no reachable majority after it, a learner behind).
    fn change_members(&mut self) {
        let leaders: Vec<usize> = self
            .usable()
            .into_iter()
            .filter(|&n| {
                self.nodes[n]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.role() == Role::Leader)
            })
            .collect();
        if leaders.is_empty() {
            return;
        }
        let n = self.rng.pick(&leaders);
        let peers = self.nodes[n]
            .core
            .as_ref()
            .expect("usable")
            .peer_set()
            .clone();
        let outside: Vec<PeerAddr> = self
            .addrs
            .iter()
            .filter(|a| !peers.contains(a))
            .cloned()
            .collect();
        let learners: Vec<PeerAddr> = peers.learners.iter().cloned().collect();
        let members: Vec<PeerAddr> = peers.members().cloned().collect();
        let change = match self.rng.below(3) {
            0 if !outside.is_empty() => PeerChange::AddLearner {
                peer: outside[self.rng.below(outside.len())].clone(),
                promote: self.rng.chance(0.5),
            },
            1 if !learners.is_empty() => PeerChange::Promote {
                peer: learners[self.rng.below(learners.len())].clone(),
            },
            _ => PeerChange::Remove {
                peer: members[self.rng.below(members.len())].clone(),
            },
        };
        if self.trace {
            eprintln!("        n{n} asked to {change}");
        }
        self.snap.changes_asked += 1;
        match self.nodes[n]
            .core
            .as_mut()
            .expect("usable")
            .propose_change(change)
        {
            Ok(_) => self.snap.changes_appended += 1,
            Err(_) => self.snap.changes_refused += 1,
        }
        self.drive(n);
    }

    /// A live member to crash, pause or cut off: often the leader, where faults hurt most.
    fn victim(&mut self) -> Option<usize> {
        let alive: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].core.is_some())
            .collect();
        let leaders: Vec<usize> = alive
            .iter()
            .copied()
            .filter(|&n| {
                self.nodes[n]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.role() == Role::Leader)
            })
            .collect();
        if !leaders.is_empty() && self.rng.chance(self.p.hit_leader) {
            Some(self.rng.pick(&leaders))
        } else if alive.is_empty() {
            None
        } else {
            Some(self.rng.pick(&alive))
        }
    }

    fn partition(&mut self) {
        let n = self.nodes.len();
        self.blocked.clear();
        let cut_both = |b: &mut HashSet<(usize, usize)>, x: usize, y: usize| {
            b.insert((x, y));
            b.insert((y, x));
        };
        match self.rng.below(4) {
            0 => {
                // Isolate one member.
                let x = self.victim().unwrap_or(0);
                for y in (0..n).filter(|&y| y != x) {
                    cut_both(&mut self.blocked, x, y);
                }
            }
            1 => {
                // Split into a minority and a majority.
                let mut order: Vec<usize> = (0..n).collect();
                for i in (1..n).rev() {
                    order.swap(i, self.rng.below(i + 1));
                }
                let k = 1 + self.rng.below(n / 2);
                for &x in &order[..k] {
                    for &y in &order[k..] {
                        cut_both(&mut self.blocked, x, y);
                    }
                }
            }
            2 => {
                // One way: a member that can send but not hear, or hear but not send.
                let x = self.victim().unwrap_or(0);
                let deaf = self.rng.chance(0.5);
                for y in (0..n).filter(|&y| y != x) {
                    self.blocked.insert(if deaf { (y, x) } else { (x, y) });
                }
            }
            _ => {
                // Random directed links.
                for x in 0..n {
                    for y in (0..n).filter(|&y| y != x) {
                        if self.rng.chance(0.3) {
                            self.blocked.insert((x, y));
                        }
                    }
                }
            }
        }
        self.partition_gen += 1;
        if self.trace {
            eprintln!("        partition {:?}", self.blocked);
        }
        let generation = self.partition_gen;
        self.schedule_in((50, 2000), Ev::Heal(generation));
    }

    /// Loses everything not yet durable; with torn writes, the write in progress may be half
    /// done.
    fn crash(&mut self, n: usize) {
        let torn = self.p.torn;
        let cut = match self.nodes[n].jobs.front() {
            Some(job) if torn => self.rng.range((0, job.stages() as u64)) as usize,
            _ => 0,
        };
        let nd = &mut self.nodes[n];
        if let Some(job) = nd.jobs.front().cloned() {
            write_disk(nd, n, &job, cut, &mut self.oracle);
        }
        if self.trace {
            eprintln!("        n{n} crashed (wrote {cut} stages of its pending write)");
        }
        nd.core = None;
        nd.inc += 1;
        nd.jobs.clear();
        nd.installs_queued = 0;
        nd.last_job_at = 0;
        nd.pending.clear();
        nd.reads.clear();
        nd.waiting_reads.clear();
        nd.datums = Datums::default();
        nd.applied = 0;
        nd.commit_seen = 0;
        nd.mem_log = SimLog::default();
        nd.staged = None;
        nd.streams.clear();
        nd.paused_until = 0;
    }

    /// Rebuilds a member from its disk, as the shell does at start.
    fn restart(&mut self, n: usize) {
        let mut cfg = Config::new(self.addrs[n].clone(), Vec::new());
        // As the shell starts: the configuration its datum set recorded (the bootstrap one
        // before any checkpoint), with configuration entries of the log after it on top.
        cfg.peers = self.nodes[n].disk_peers.clone();
        cfg.peers_index = self.nodes[n].disk_datums_at;
        cfg.auto_promote = self.p.auto_promote;
        cfg.heartbeat_interval_ms = HEARTBEAT_MS;
        cfg.election_timeout_ms = ELECTION_MS;
        cfg.max_entries_per_append = self.p.max_entries;
        cfg.max_inflight_appends = self.p.max_inflight;
        let nd = &mut self.nodes[n];
        cfg.seed = self
            .seed
            .wrapping_mul(0x100_0000_01B3)
            .wrapping_add((n as u64) << 32 | nd.inc);
        nd.core = Some(RaftCore::new(
            cfg,
            nd.disk_hs.clone(),
            nd.disk_log.start,
            nd.disk_log.entries.clone(),
        ));
        // As the shell does: the datum set it loads reflects every entry up to its index.
        let restored = nd.disk_datums_at.min(nd.disk_log.last_index());
        nd.core
            .as_mut()
            .expect("just made")
            .restore_applied(restored);
        nd.mem_log = nd.disk_log.clone();
        // As the shell starts: the newest durable datum set, then the log replayed after it.
        assert!(
            nd.disk_datums_at >= nd.disk_log.start.index,
            "n{n}: its durable datum set (at {}) is older than its log's start ({}): the entries between are lost",
            nd.disk_datums_at,
            nd.disk_log.start
        );
        nd.datums = nd.disk_datums.clone();
        nd.peers = nd.disk_peers.clone();
        nd.applied = nd.disk_datums_at;
        nd.datums_changed = true;
        nd.checkpoint_at = nd.applied;
        nd.handed = nd.disk_log.start.index;
        nd.commit_seen = nd.disk_log.start.index;
        nd.last_tick_at = self.now;
        let inc = nd.inc;
        if self.trace {
            eprintln!(
                "        n{n} started from disk: {:?}, log after {} to {}, datums at {}",
                nd.disk_hs,
                nd.disk_log.start,
                nd.disk_log.last_index(),
                nd.disk_datums_at
            );
        }
        self.schedule_in((1, TICK_MS), Ev::Tick { node: n, inc });
    }

    // ------------------------------------------------------------ healing and checks

    fn heal(&mut self) {
        self.healing = true;
        self.heal_at = self.now;
        self.blocked.clear();
        self.partition_gen += 1;
        for n in 0..self.nodes.len() {
            if self.nodes[n].core.is_none() {
                self.restart(n);
            }
        }
        if self.majority_follows_a_leader() {
            self.leader_after_heal = Some(self.now);
        }
        if self.trace {
            eprintln!("{:>7} healed: {}", self.now, self.describe());
        }
    }

    fn check_after_event(&mut self) {
        for n in 0..self.nodes.len() {
            self.note_commits(n);
            let nd = &mut self.nodes[n];
            let Some(core) = nd.core.as_ref() else {
                continue;
            };
            // A leader counts once its term is durable: a sole voter wins within one step,
            // and if it crashes before its term reaches the disk it never led (nothing of that
            // term left it), and may vote for another member in the same term after it
            // restarts.
            if core.role() == Role::Leader {
                if nd.disk_hs.term >= core.term() && self.oracle.on_leader(n, core.term()) {
                    self.oracle.check_complete(n, core.term(), &nd.mem_log);
                    // Only a member that may campaign wins; its configuration is at least
                    // the newest one committed before its term (it holds every such entry);
                    // and a member that configuration does not count as a voter never
                    // leads, unless a later entry of its log made it one again.
                    let (c, then) = self
                        .oracle
                        .committed_config_before(core.term(), &self.bootstrap);
                    let voter_then = then.is_voter(core.id());
                    assert!(
                        core.may_campaign()
                            && core.peers_index() >= c
                            && (voter_then || (core.peers_index() > c && core.is_voter())),
                        "membership: n{n} won term {} (voter of its configuration at {}: {}), while the newest configuration committed before that term, at {c}, {} it",
                        core.term(),
                        core.peers_index(),
                        core.is_voter(),
                        if voter_then { "counts" } else { "does not count" }
                    );
                    self.snap.leaders_added += (n >= self.p.nodes) as u64;
                }
            } else if let Some(l) = core.leader() {
                let led = self.oracle.leader_of(core.term());
                if led.map(|i| &self.addrs[i]) != Some(l) {
                    self.oracle.check_follows(n, core.term(), idx(l));
                }
            }
            if std::mem::take(&mut nd.datums_changed) {
                self.oracle
                    .check_datums(n, "applied datum set", &nd.datums, nd.applied);
            }
        }
        if self.healing {
            self.high.resize(self.nodes.len(), 0);
            for (n, nd) in self.nodes.iter().enumerate() {
                if nd.mem_log.last_index() > self.high[n] {
                    self.high[n] = nd.mem_log.last_index();
                    self.progress_at = self.now;
                }
            }
        }
        if self.healing && self.leader_after_heal.is_none() && self.majority_follows_a_leader() {
            self.leader_after_heal = Some(self.now);
        }
    }

    /// A leader followed by a majority of the voters of its configuration (itself counted
    /// when it is one).
    fn majority_follows_a_leader(&self) -> bool {
        self.nodes
            .iter()
            .filter_map(|nd| nd.core.as_ref())
            .any(|l| {
                let voters = &l.peer_set().voters;
                l.role() == Role::Leader
                    && self
                        .nodes
                        .iter()
                        .filter_map(|nd| nd.core.as_ref())
                        .filter(|c| voters.contains(c.id()))
                        .filter(|c| c.term() == l.term() && c.leader() == Some(l.id()))
                        .count()
                        >= l.peer_set().quorum()
            })
    }

    /// The members of the configuration the leader holds, and the leader.
    fn final_members(&self) -> Option<(usize, Vec<usize>)> {
        let (l, leader) = self.nodes.iter().enumerate().find_map(|(i, nd)| {
            nd.core
                .as_ref()
                .filter(|c| c.role() == Role::Leader)
                .map(|c| (i, c))
        })?;
        let members = leader.peer_set().members().map(idx).collect();
        Some((l, members))
    }

    /// The leader committed its whole log, holds a configuration it committed, and every
    /// member of it applied everything. (Members it removed hear no more.)
    fn converged(&self) -> bool {
        let Some((l, members)) = self.final_members() else {
            return false;
        };
        let leader = self.nodes[l].core.as_ref().expect("leads");
        let last = leader.last_index();
        leader.commit_index() == last
            && leader.peer_set().contains(leader.id())
            && members.iter().all(|&m| {
                let nd = &self.nodes[m];
                nd.core.is_some()
                    && nd.applied == last
                    && nd.mem_log.last_index() == last
                    // Applied may run ahead of durable: converged once the disk caught up.
                    && nd.core.as_ref().is_some_and(|c| c.stable_index() == last)
                    // An installed snapshot counts once it is durable.
                    && nd.installs_queued == 0
            })
    }

    fn final_checks(&self) {
        let expect = self.oracle.replay();
        let (l, members) = self.final_members().expect("converged with a leader");
        let first = &self.nodes[l].mem_log;
        for &n in &members {
            let nd = &self.nodes[n];
            let log = &nd.mem_log;
            self.oracle.check_start(n, log.start);
            assert!(
                log.last_index() == first.last_index()
                    && (log.start.index.max(first.start.index) + 1..=log.last_index())
                        .all(|i| log.get(i) == first.get(i)),
                "log matching: n{n}'s log differs from the leader n{l}'s after convergence"
            );
            assert!(
                nd.disk_log.start.index <= log.start.index
                    && nd.disk_log.last_index() >= log.last_index()
                    && (log.start.index + 1..=log.last_index())
                        .all(|i| nd.disk_log.get(i) == log.get(i)),
                "n{n}: applied entries are not all durable: its log is after {} to {}, its durable log after {} to {}",
                log.start,
                log.last_index(),
                nd.disk_log.start,
                nd.disk_log.last_index()
            );
            assert!(
                nd.datums == expect,
                "n{n}'s datums differ from the replayed history"
            );
        }
        self.oracle.check_acked(&expect);
    }
}

/// Applies up to `stages` steps of a write to a member's disk, in the `Ready` contract's order,
/// checking log matching on the durable log as on the memory one.
fn write_disk(nd: &mut Node, n: usize, job: &Job, mut stages: usize, oracle: &mut Oracle) {
    let mut take = || {
        let ok = stages > 0;
        stages = stages.saturating_sub(1);
        ok
    };
    if let Some(hs) = &job.hs {
        if !take() {
            return;
        }
        let old = &nd.disk_hs;
        assert!(
            hs.term >= old.term,
            "n{n}: durable term went back from {} to {}",
            old.term,
            hs.term
        );
        assert!(
            hs.term > old.term || old.vote_for.is_none() || hs.vote_for == old.vote_for,
            "n{n}: durable vote of term {} changed from {:?} to {:?}",
            hs.term,
            old.vote_for,
            hs.vote_for
        );
        nd.disk_hs = hs.clone();
    }
    if let Some((ip, datums, peers)) = &job.install {
        if !take() {
            return;
        }
        // One step (store::snapshot): a crash leaves the old datum set and log, or the new.
        nd.disk_datums = datums.clone();
        nd.disk_datums_at = ip.point.index;
        nd.disk_peers = peers.clone();
        if ip.reset_log {
            nd.disk_log.reset(ip.point);
        } else {
            assert!(
                nd.disk_log.holds(ip.point),
                "n{n}: the install keeps the log after {}, which the durable log (after {}, to {}) does not hold",
                ip.point,
                nd.disk_log.start,
                nd.disk_log.last_index()
            );
            nd.disk_log.compact_to(ip.point);
        }
    }
    if let Some(tf) = job.truncate_from {
        if !take() {
            return;
        }
        assert!(
            tf > nd.disk_log.start.index && tf <= nd.disk_log.last_index() + 1,
            "n{n}: truncate_from {tf} outside the durable log (after {}, to {})",
            nd.disk_log.start,
            nd.disk_log.last_index()
        );
        nd.disk_log.truncate_from(tf);
    }
    for e in &job.entries {
        if !take() {
            return;
        }
        assert_eq!(
            e.index,
            nd.disk_log.last_index() + 1,
            "n{n}: entries do not continue the durable log"
        );
        let prev_term = nd.disk_log.push(e.clone());
        oracle.on_append(n, e, prev_term);
    }
    if let Some(id) = job.compact {
        if !take() {
            return;
        }
        if id.index > nd.disk_log.start.index {
            assert!(
                nd.disk_log.holds(id),
                "n{n}: compacting the durable log (after {}, to {}) to {id}, which it does not hold",
                nd.disk_log.start,
                nd.disk_log.last_index()
            );
            nd.disk_log.compact_to(id);
        }
    }
}
