//! The role logic of one member: terms, votes, elections, replication, commit, reads,
//! leadership transfer and snapshot offers, over the log (`log`), follower progress
//! (`progress`) and pending reads (`read_only`).
//!
//! Pure: no clock, no I/O, no threads. Time arrives as `tick(elapsed_ms)`, messages through
//! `step`, client work through `propose` and `read_index`, and disk completions through
//! `on_persisted`. Everything the shell must do comes out of `take_ready`, ordered so that
//! durable state is written before anything that depends on it is sent.

use std::collections::BTreeMap;

use super::config::Config;
use super::log::{LogId, RaftLog};
use super::message::{Command, Entry, Envelope, HardState, Message, PeerAddr};
use super::peer_set::{PeerSet, PeerSetLog};
use super::progress::{Progress, ProgressState};
use super::read_only::ReadOnly;
use super::ready::{InstallPoint, ReadState, Ready};
use super::validate::{self, Rejected};

/// Roles, with Nacos's names (`RaftPeer.State`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "FOLLOWER",
            Role::Candidate => "CANDIDATE",
            Role::Leader => "LEADER",
        }
    }
}

/// The leader's status of one follower, for operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerStatus {
    pub peer: PeerAddr,
    /// A voter of the configuration in force (else a learner, or a member being removed).
    pub voter: bool,
    pub match_index: u64,
    pub next_index: u64,
    pub last_contact_ms: u64,
    /// How the leader replicates to it: `probe`, `replicate` or `snapshot`.
    pub state: &'static str,
}

#[derive(Clone, Debug)]
pub struct Status {
    pub id: PeerAddr,
    pub role: Role,
    pub term: u64,
    pub leader: Option<PeerAddr>,
    pub vote_for: Option<PeerAddr>,
    pub commit_index: u64,
    pub last_log_index: u64,
    pub stable_index: u64,
    pub followers: Vec<FollowerStatus>,
    /// The configuration in force (the latest in this member's log) and the index of the
    /// entry that holds it.
    pub peers: PeerSet,
    pub peers_index: u64,
    /// Milliseconds left before this node starts an election (Nacos `leaderDueMs`).
    pub leader_due_ms: u64,
    /// Milliseconds left before the next heartbeat (Nacos `heartbeatDueMs`).
    pub heartbeat_due_ms: u64,
}

/// Why a proposal was refused. The shell forwards or waits; nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    NotLeader {
        leader: Option<PeerAddr>,
    },
    /// Leadership is being handed over; retry at the new leader shortly.
    Transferring,
}

/// Why a configuration change was refused; nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeError {
    NotLeader {
        leader: Option<PeerAddr>,
    },
    /// Not now: another change is not committed yet, the leader has not committed in its
    /// term, or leadership is moving. Retrying shortly succeeds.
    Busy(String),
    /// The change does not fit the configuration, or would leave the cluster without a
    /// reachable majority: retrying does not help until something changes.
    Refused(String),
}

/// A learner within this many entries of the leader's log counts as caught up (for
/// promotion): close enough that making it a voter cannot stall commits for long.
pub const CAUGHT_UP_ENTRIES: u64 = 100;

pub struct RaftCore {
    pub(super) cfg: Config,
    pub(super) role: Role,
    pub(super) term: u64,
    pub(super) vote_for: Option<PeerAddr>,
    pub(super) leader: Option<PeerAddr>,
    pub(super) log: RaftLog,
    /// The configurations of the log; the latest is in force.
    pub(super) peers: PeerSetLog,

    pub(super) election_elapsed: u64,
    pub(super) heartbeat_elapsed: u64,
    pub(super) randomized_election_timeout: u64,
    pub(super) rng: u64,

    /// Candidate: votes received (granted or not), and whether this is the pre-vote phase.
    pub(super) votes: BTreeMap<PeerAddr, bool>,
    pub(super) pre_vote: bool,

    pub(super) progress: BTreeMap<PeerAddr, Progress>,
    /// Leader handing over to this peer: stop taking proposals until it leads.
    pub(super) transfer_to: Option<PeerAddr>,
    pub(super) transfer_elapsed: u64,
    /// The next campaign answers a TimeoutNow, so voters must not ignore it.
    pub(super) transfer_campaign: bool,

    pub(super) read_only: ReadOnly,

    pub(super) persisted_hard_state: HardState,
    /// A term this member's disk is known to hold (from the start, a persisted entry of it,
    /// or an answer to a vote request of it, which left only once it was durable).
    pub(super) durable_term: u64,
    pub(super) ready: Ready,
}

impl RaftCore {
    /// Builds a member from its durable state: term and vote, where the log starts (the
    /// compaction point, `LogId::ZERO` for a log never compacted), and the entries after
    /// it, contiguous. Everything on disk counts as stable. The config must have passed
    /// [`Config::validate`] and the log the store's checks: either failing is a bug of the
    /// caller, which is why it panics.
    pub fn new(cfg: Config, hs: HardState, start: LogId, entries: Vec<Entry>) -> RaftCore {
        if let Err(e) = cfg.validate() {
            panic!("RaftCore::new with an invalid config (validate it first): {e}");
        }
        let mut peers = PeerSetLog::new(cfg.peers_index, cfg.peers.clone());
        for e in entries.iter().filter(|e| e.index > cfg.peers_index) {
            if let Command::Config { peers: set } = &e.command {
                peers.push(e.index, set.clone());
            }
        }
        let log = RaftLog::new(start, entries)
            .unwrap_or_else(|e| panic!("RaftCore::new with a log the store did not check: {e}"));
        let mut core = RaftCore {
            role: Role::Follower,
            term: hs.term,
            vote_for: hs.vote_for.clone(),
            leader: None,
            log,
            peers,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            rng: cfg.seed ^ 0x9E37_79B9_7F4A_7C15,
            votes: BTreeMap::new(),
            pre_vote: false,
            progress: BTreeMap::new(),
            transfer_to: None,
            transfer_elapsed: 0,
            transfer_campaign: false,
            read_only: ReadOnly::default(),
            durable_term: hs.term,
            persisted_hard_state: hs,
            ready: Ready::default(),
            cfg,
        };
        core.reset_election_timer();
        core
    }

    // ---------------------------------------------------------------- accessors

    pub fn id(&self) -> &PeerAddr {
        &self.cfg.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> u64 {
        self.term
    }
    pub fn leader(&self) -> Option<&PeerAddr> {
        self.leader.as_ref()
    }
    pub fn commit_index(&self) -> u64 {
        self.log.committed()
    }
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }
    /// The highest index durable in the local log as it stands: lowered as soon as a
    /// truncation is decided, raised by `on_persisted`.
    pub fn stable_index(&self) -> u64 {
        self.log.stable_index()
    }
    /// The configuration in force: the latest in the log, committed or not (thesis §4.1).
    pub fn peer_set(&self) -> &PeerSet {
        self.peers.latest()
    }

    /// The index of the entry holding the configuration in force (or where it was loaded).
    pub fn peers_index(&self) -> u64 {
        self.peers.latest_index()
    }
    /// Where the retained log starts (its compaction or snapshot point).
    pub fn log_start(&self) -> LogId {
        self.log.start()
    }

    /// Term of the entry at `index`; `None` past the end and before the compaction point.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.log.term_at(index)
    }

    pub fn status(&self) -> Status {
        let followers = if self.role == Role::Leader {
            self.progress
                .iter()
                .map(|(p, pr)| FollowerStatus {
                    peer: p.clone(),
                    voter: self.peers.latest().is_voter(p),
                    state: match pr.state {
                        ProgressState::Probe => "probe",
                        ProgressState::Replicate => "replicate",
                        ProgressState::Snapshot => "snapshot",
                    },
                    match_index: pr.match_index,
                    next_index: pr.next_index,
                    last_contact_ms: pr.since_contact_ms,
                })
                .collect()
        } else {
            Vec::new()
        };
        Status {
            id: self.cfg.id.clone(),
            role: self.role,
            term: self.term,
            leader: self.leader.clone(),
            vote_for: self.vote_for.clone(),
            commit_index: self.log.committed(),
            last_log_index: self.log.last_index(),
            stable_index: self.log.stable_index(),
            followers,
            peers: self.peers.latest().clone(),
            peers_index: self.peers.latest_index(),
            leader_due_ms: if self.role == Role::Leader {
                self.cfg.election_timeout_ms
            } else {
                self.randomized_election_timeout
                    .saturating_sub(self.election_elapsed)
            },
            heartbeat_due_ms: self
                .cfg
                .heartbeat_interval_ms
                .saturating_sub(self.heartbeat_elapsed),
        }
    }

    /// Everything the shell must do now; see [`Ready`] for the order.
    pub fn take_ready(&mut self) -> Ready {
        if self.read_only.take_round_needed() {
            self.broadcast_heartbeat();
        }
        let hs = HardState {
            term: self.term,
            vote_for: self.vote_for.clone(),
        };
        if hs != self.persisted_hard_state {
            self.persisted_hard_state = hs.clone();
            self.ready.hard_state = Some(hs);
        }
        let (truncate_from, entries) = self.log.take_unstable();
        self.ready.truncate_from = truncate_from;
        self.ready.entries = entries;
        self.ready.committed = self.log.take_committed();
        // Configurations up to the commit index can no longer be truncated away.
        self.peers.commit_to(self.log.committed());
        std::mem::take(&mut self.ready)
    }

    // ---------------------------------------------------------------- time

    /// Advances the timers by `elapsed_ms`.
    pub fn tick(&mut self, elapsed_ms: u64) {
        self.election_elapsed = self.election_elapsed.saturating_add(elapsed_ms);
        match self.role {
            Role::Leader => self.tick_leader(elapsed_ms),
            Role::Follower | Role::Candidate => {
                if !self.may_campaign() {
                    return;
                }
                // A one-member cluster needs nobody's vote: campaign at once (Nacos never
                // elected a leader here, reference §13.2.1).
                let voters = &self.peers.latest().voters;
                let alone = voters.len() == 1 && voters.contains(&self.cfg.id);
                if alone || self.election_elapsed >= self.randomized_election_timeout {
                    self.campaign(true);
                }
            }
        }
    }

    fn tick_leader(&mut self, elapsed_ms: u64) {
        self.heartbeat_elapsed = self.heartbeat_elapsed.saturating_add(elapsed_ms);
        for pr in self.progress.values_mut() {
            pr.since_contact_ms = pr.since_contact_ms.saturating_add(elapsed_ms);
        }
        if self.transfer_to.is_some() {
            self.transfer_elapsed = self.transfer_elapsed.saturating_add(elapsed_ms);
            if self.transfer_elapsed >= self.cfg.election_timeout_ms {
                // The target did not take over in time: resume serving.
                self.transfer_to = None;
            }
        }
        // Check-quorum: a leader that has not heard from a majority for an election timeout
        // steps down, so a partitioned leader stops serving (Raft thesis §6.2; Nacos leaders
        // never stepped down, reference §13.1.3). Judged on every tick from each follower's
        // last contact, so it happens within one election timeout of losing the majority;
        // counting replies per election-timeout window instead can take up to two.
        let timeout = self.cfg.election_timeout_ms;
        let active = self
            .peers
            .latest()
            .voters
            .iter()
            .filter(|v| {
                **v == self.cfg.id
                    || self
                        .progress
                        .get(*v)
                        .is_some_and(|p| p.since_contact_ms < timeout)
            })
            .count();
        if active < self.quorum() {
            self.become_follower(self.term, None);
            return;
        }
        if self.election_elapsed >= timeout {
            // A leader with a majority stays in its lease, refusing disruptive votes.
            self.election_elapsed = 0;
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_interval_ms {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
            // A probe that went unanswered for a heartbeat interval was probably lost.
            let stuck: Vec<PeerAddr> = self
                .progress
                .iter_mut()
                .filter(|(_, pr)| pr.state == ProgressState::Probe && pr.probe_sent)
                .map(|(p, pr)| {
                    pr.probe_sent = false;
                    p.clone()
                })
                .collect();
            for p in stuck {
                self.send_append(&p);
            }
            if self.cfg.auto_promote {
                self.maybe_auto_promote();
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: enough spread for election timers, and reproducible from the seed.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let t = self.cfg.election_timeout_ms;
        self.randomized_election_timeout = t + self.next_random() % t;
    }

    // ---------------------------------------------------------------- roles

    pub(super) fn become_follower(&mut self, term: u64, leader: Option<PeerAddr>) {
        if term > self.term {
            self.term = term;
            self.vote_for = None;
        }
        let was_leader = self.role == Role::Leader;
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.pre_vote = false;
        self.transfer_to = None;
        self.reset_election_timer();
        if was_leader {
            self.progress.clear();
            for (ctx, from) in self.read_only.drain_all() {
                self.answer_read(ctx, from, None);
            }
        }
    }

    /// Starts an election; with `pre`, first a pre-vote that changes no term, so a member
    /// that was cut off cannot disrupt a healthy cluster when it returns (thesis §9.6).
    fn campaign(&mut self, pre: bool) {
        self.role = Role::Candidate;
        self.leader = None;
        self.pre_vote = pre;
        self.votes.clear();
        self.reset_election_timer();
        let term = if pre {
            self.term + 1
        } else {
            self.term += 1;
            self.vote_for = Some(self.cfg.id.clone());
            self.term
        };
        if self.is_voter() {
            self.votes.insert(self.cfg.id.clone(), true);
        }
        if self.votes_granted() >= self.quorum() {
            self.on_election_won();
            return;
        }
        let last = self.log.last_id();
        let transfer = std::mem::take(&mut self.transfer_campaign);
        for p in self.other_voters() {
            let msg = if pre {
                Message::PreVote {
                    last_log_index: last.index,
                    last_log_term: last.term,
                }
            } else {
                Message::Vote {
                    last_log_index: last.index,
                    last_log_term: last.term,
                    transfer,
                }
            };
            self.send(p, term, msg);
        }
    }

    fn votes_granted(&self) -> usize {
        self.votes.values().filter(|g| **g).count()
    }

    fn on_election_won(&mut self) {
        if self.pre_vote {
            self.campaign(false);
        } else {
            self.become_leader();
        }
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.cfg.id.clone());
        self.votes.clear();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.transfer_to = None;
        let next = self.log.last_index() + 1;
        self.progress = self
            .replication_targets()
            .into_iter()
            .map(|p| (p, Progress::new(next)))
            .collect();
        // A no-op of the new term lets it commit everything before it, and marks the point
        // from which it may serve reads (Raft §5.4.2, §8).
        self.append_local(vec![Command::Noop]);
        self.broadcast_append();
    }

    // ---------------------------------------------------------------- client input

    /// Appends commands to the log. Returns the position of the first. The shell learns the
    /// outcome when the entry at that index is applied: same term = this write, another
    /// term = it was superseded and never applied.
    pub fn propose(&mut self, commands: Vec<Command>) -> Result<LogId, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader.clone(),
            });
        }
        if self.transfer_to.is_some() {
            return Err(ProposeError::Transferring);
        }
        let first = LogId::new(self.log.last_index() + 1, self.term);
        self.append_local(commands);
        // Sent at the next flush so that proposals of one driver turn share one Append.
        self.broadcast_append();
        Ok(first)
    }

    pub(super) fn append_local(&mut self, commands: Vec<Command>) {
        let term = self.term;
        for command in commands {
            let index = self.log.last_index() + 1;
            if let Command::Config { peers } = &command {
                self.peers.push(index, peers.clone());
            }
            self.log.push(Entry {
                index,
                term,
                command,
            });
        }
    }

    /// Asks for a linearizable read point; the answer comes back in `Ready::reads` with the
    /// same `ctx` (unique per caller on this node).
    pub fn read_index(&mut self, ctx: u64) {
        match self.role {
            Role::Leader => self.leader_read(ctx, None),
            _ => match self.leader.clone() {
                Some(l) => self.send(l, self.term, Message::ReadIndex { ctx }),
                None => self.ready.reads.push(ReadState { ctx, index: None }),
            },
        }
    }

    pub(super) fn leader_read(&mut self, ctx: u64, from: Option<PeerAddr>) {
        let commit = self.log.committed();
        if self.log.term_at(commit) != Some(self.term) {
            // Until the no-op of this term commits, the commit index may be behind what
            // earlier leaders committed (Raft §8).
            self.read_only.wait_for_commit(ctx, from);
            return;
        }
        let voters = &self.peers.latest().voters;
        if voters.len() == 1 && voters.contains(&self.cfg.id) {
            self.answer_read(ctx, from, Some(commit));
            return;
        }
        self.read_only.add(ctx, from, commit, &self.cfg.id);
    }

    pub(super) fn answer_read(&mut self, ctx: u64, from: Option<PeerAddr>, index: Option<u64>) {
        match from {
            None => self.ready.reads.push(ReadState { ctx, index }),
            Some(p) => self.send(p, self.term, Message::ReadIndexResp { ctx, index }),
        }
    }

    /// Hands leadership to `target` (or the most up-to-date follower): it is brought up to
    /// date and then told to campaign at once (Raft thesis §3.10). Proposals are refused
    /// meanwhile. Returns the chosen target.
    pub fn transfer_leader(&mut self, target: Option<PeerAddr>) -> Result<PeerAddr, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader.clone(),
            });
        }
        let voters = self.peers.latest().voters.clone();
        let target = match target {
            Some(t) if self.progress.contains_key(&t) && voters.contains(&t) => t,
            Some(_) | None => match self
                .progress
                .iter()
                .filter(|(p, _)| voters.contains(*p))
                .max_by_key(|(_, pr)| {
                    // A reachable follower first: handing over to a dead one stalls writes
                    // for an election timeout.
                    (
                        pr.since_contact_ms < self.cfg.election_timeout_ms,
                        pr.match_index,
                    )
                }) {
                Some((p, _)) => p.clone(),
                None => return Err(ProposeError::NotLeader { leader: None }),
            },
        };
        self.transfer_to = Some(target.clone());
        self.transfer_elapsed = 0;
        self.maybe_send_timeout_now(&target);
        Ok(target)
    }

    pub(super) fn maybe_send_timeout_now(&mut self, p: &PeerAddr) {
        if self.transfer_to.as_ref() != Some(p) {
            return;
        }
        let caught_up =
            self.progress.get(p).map(|pr| pr.match_index) == Some(self.log.last_index());
        if caught_up {
            self.send(p.clone(), self.term, Message::TimeoutNow);
        } else {
            self.send_append(p);
        }
    }

    // ---------------------------------------------------------------- snapshots, compaction

    /// Drops log entries up to `upto` (capped at what is applied and durable): the datum
    /// files hold their effect now. Returns whether anything was dropped.
    pub fn compact(&mut self, upto: u64) -> bool {
        self.log.compact(upto)
    }

    /// The compaction point that keeps at most `max_bytes` of entries (counted as JSON)
    /// after it; the log start when everything retained fits.
    pub fn index_keeping_bytes(&self, max_bytes: usize) -> u64 {
        self.log
            .index_keeping_bytes(max_bytes, super::replication::approx_json_size)
    }

    /// Leader: the shell started streaming `peer` a snapshot covering the log up to
    /// `index`. From now on the follower may answer an append with an index up to there
    /// (its commit index after the install), so that counts as sent.
    pub fn on_snapshot_started(&mut self, peer: &PeerAddr, index: u64) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.progress.get_mut(peer) {
            pr.sent_up_to = pr.sent_up_to.max(index);
        }
    }

    /// At start-up: the datum set the node loaded reflects every entry up to `index`
    /// (a checkpoint may be ahead of the log's start). Applied entries were committed, so
    /// the commit index starts there: a snapshot offer at or below it is then known to be
    /// older than what this member holds, and is not installed over it.
    pub fn restore_applied(&mut self, index: u64) {
        self.log.commit_to(index);
    }

    /// Leader: the snapshot stream to `peer` (covering the log up to `index`) ended.
    pub fn on_snapshot_sent(&mut self, peer: &PeerAddr, index: u64, ok: bool) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(peer) else {
            return;
        };
        if pr.state != ProgressState::Snapshot {
            return;
        }
        pr.on_snapshot_sent(index, ok);
        if ok {
            self.send_append(peer);
        }
    }

    /// Follower: a leader offers a snapshot covering the log up to `point`. Accepting moves
    /// the log start there and asks the shell to install it (`Ready::install`) before
    /// anything later is persisted. `Ok(false)`: accepted, but the log already reaches past
    /// it, so there is nothing to install.
    pub fn offer_snapshot(
        &mut self,
        from: &PeerAddr,
        term: u64,
        point: LogId,
        peers: PeerSet,
    ) -> Result<bool, String> {
        if !self.takes_from(from, true) {
            return Err(format!("{from} is not another member"));
        }
        peers
            .validate()
            .map_err(|e| format!("the snapshot's configuration: {e}"))?;
        if term > validate::MAX_POSITION || point.index > validate::MAX_POSITION {
            return Err(format!(
                "term {term} or index {} is beyond any real log",
                point.index
            ));
        }
        if point.index == 0 || point.term == 0 || point.term > term {
            return Err(format!(
                "a leader of term {term} cannot offer a snapshot at entry {point}"
            ));
        }
        if term < self.term {
            return Err(format!("stale leader: term {term} < {}", self.term));
        }
        if term == self.term {
            self.check_leader_of_term(from).map_err(|r| r.reason)?;
        } else {
            self.become_follower(term, Some(from.clone()));
        }
        self.accept_leader(from);
        if point.index <= self.log.committed() {
            // Nothing to install: this log already reaches past it. Accepting (rather than
            // refusing) lets the leader resume appends after `index` instead of sending the
            // snapshot again and again (etcd answers the same way).
            return Ok(false);
        }
        // Committed entries match the snapshot's; if the log holds its last one, keep what
        // follows it (Raft §7), else every local entry from there on is not committed.
        let keep = self.log.matches(point);
        let reset_log = self.log.restore(point);
        self.peers.install(point.index, peers, keep);
        self.ready.install = Some(InstallPoint { point, reset_log });
        Ok(true)
    }

    // ---------------------------------------------------------------- disk completions

    /// The shell made the log durable up to `id`. A report for an entry that was truncated
    /// meanwhile is ignored.
    pub fn on_persisted(&mut self, id: LogId) {
        // The term and vote are written before any entry of that term.
        self.durable_term = self.durable_term.max(id.term);
        if self.log.on_persisted(id) && self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    // ---------------------------------------------------------------- messages

    /// Handles one message from a peer. A message no correct member could send is refused
    /// without changing anything, and the reason comes back for the shell to log with the
    /// sender (a forged or buggy peer must never panic the core or bend its state).
    pub fn step(&mut self, env: Envelope) -> Result<(), Rejected> {
        let leads = matches!(
            env.msg,
            Message::Append { .. } | Message::Heartbeat { .. } | Message::TimeoutNow
        );
        if !self.takes_from(&env.from, leads) {
            // Only members take part (Nacos let anyone vote or append, reference §13.8).
            return Err(Rejected::new(format!("{} is not another member", env.from)));
        }
        if env.to != self.cfg.id {
            return Err(Rejected::new(format!("addressed to {}", env.to)));
        }
        validate::check(&env)?;
        if env.term > self.term {
            match &env.msg {
                Message::PreVote { .. } | Message::Vote { .. } => {
                    let transfer = matches!(env.msg, Message::Vote { transfer: true, .. });
                    // Leader stickiness: while a leader is known to be alive, a vote request
                    // from a member that merely timed out is ignored (thesis §4.2.3).
                    let in_lease = self.leader.is_some()
                        && self.election_elapsed < self.cfg.election_timeout_ms;
                    if in_lease && !transfer {
                        let resp = match env.msg {
                            Message::PreVote { .. } => Message::PreVoteResp { granted: false },
                            _ => Message::VoteResp { granted: false },
                        };
                        self.send(env.from, self.term, resp);
                        return Ok(());
                    }
                    if matches!(env.msg, Message::Vote { .. }) {
                        self.become_follower(env.term, None);
                    }
                }
                Message::PreVoteResp { granted: true } => {}
                Message::Append { .. } | Message::Heartbeat { .. } | Message::TimeoutNow => {
                    self.become_follower(env.term, Some(env.from.clone()));
                }
                _ => self.become_follower(env.term, None),
            }
        } else if env.term < self.term {
            match env.msg {
                Message::Append { .. } | Message::Heartbeat { .. } => {
                    // Tell a stale leader about the newer term so it steps down.
                    let hint = self.log.last_index();
                    self.send(
                        env.from,
                        self.term,
                        Message::AppendResp {
                            success: false,
                            index: 0,
                            hint,
                        },
                    );
                }
                Message::PreVote { .. } => {
                    self.send(env.from, self.term, Message::PreVoteResp { granted: false });
                }
                Message::ReadIndex { ctx } => {
                    self.send(
                        env.from,
                        self.term,
                        Message::ReadIndexResp { ctx, index: None },
                    );
                }
                _ => {}
            }
            return Ok(());
        }

        let from = env.from;
        let term = env.term;
        match env.msg {
            Message::PreVote {
                last_log_index,
                last_log_term,
            } => {
                // etcd's rule: a pre-vote for a later term is judged on the log alone; one
                // for our own term also needs us to be free to vote in it.
                let free =
                    self.vote_for.as_ref().is_none_or(|v| *v == from) && self.leader.is_none();
                let granted = (term > self.term || free)
                    && self.member_may_lead(&from)
                    && self.log_ok(LogId::new(last_log_index, last_log_term));
                // A granted pre-vote carries the prospective term, a refusal our own.
                let t = if granted { term } else { self.term };
                self.send(from, t, Message::PreVoteResp { granted });
            }
            Message::Vote {
                last_log_index,
                last_log_term,
                ..
            } => {
                let can_vote =
                    self.vote_for.as_ref().is_none_or(|v| *v == from) && self.leader.is_none();
                let granted = can_vote
                    && self.member_may_lead(&from)
                    && self.log_ok(LogId::new(last_log_index, last_log_term));
                if granted {
                    self.vote_for = Some(from.clone());
                    self.reset_election_timer();
                }
                self.send(from, self.term, Message::VoteResp { granted });
            }
            Message::PreVoteResp { granted } => {
                if self.role == Role::Candidate && self.pre_vote && term == self.term + 1 {
                    self.record_vote(from, granted);
                }
            }
            Message::VoteResp { granted } => {
                if self.role == Role::Candidate && !self.pre_vote {
                    self.durable_term = self.durable_term.max(term);
                    self.record_vote(from, granted);
                }
            }
            Message::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.check_leader_of_term(&from)?;
                self.accept_leader(&from);
                let prev = LogId::new(prev_log_index, prev_log_term);
                self.handle_append(from, prev, entries, leader_commit)?;
            }
            Message::Heartbeat {
                leader_commit,
                read_ctx,
            } => {
                self.check_leader_of_term(&from)?;
                self.accept_leader(&from);
                // The leader sends min(commit, our match), so this never commits entries
                // that might not match the leader's log.
                self.log.commit_to(leader_commit);
                let last_index = self.log.last_index();
                self.send(
                    from,
                    self.term,
                    Message::HeartbeatResp {
                        read_ctx,
                        last_index,
                    },
                );
            }
            Message::AppendResp {
                success,
                index,
                hint,
            } => self.handle_append_resp(from, success, index, hint)?,
            // `last_index` never moves `match_index` up (a follower's log may be long yet
            // divergent, so only acknowledged appends do); it only reveals a lost log.
            Message::HeartbeatResp {
                read_ctx,
                last_index,
            } => self.handle_heartbeat_resp(from, read_ctx, last_index)?,
            Message::ReadIndex { ctx } => {
                if self.role == Role::Leader {
                    self.mark_active(&from);
                    self.leader_read(ctx, Some(from));
                } else {
                    self.send(from, self.term, Message::ReadIndexResp { ctx, index: None });
                }
            }
            Message::ReadIndexResp { ctx, index } => {
                // Only the leader of this term gives read points (anyone may refuse): a
                // read point from another member could be stale.
                if index.is_some() && self.leader.as_ref().is_some_and(|l| *l != from) {
                    return Err(Rejected::new(format!(
                        "a read index from {from}, but {} leads term {term}",
                        self.leader.as_ref().map_or("nobody", |l| l.as_str())
                    )));
                }
                self.ready.reads.push(ReadState { ctx, index });
            }
            Message::TimeoutNow => {
                // Only the leader of this term hands leadership over (Raft thesis §3.10).
                self.check_leader_of_term(&from)?;
                if self.role != Role::Leader && self.may_campaign() {
                    self.transfer_campaign = true;
                    self.campaign(false);
                }
            }
        }
        Ok(())
    }

    /// An Append, heartbeat or snapshot of this member's own term must come from the one
    /// member that leads it: two leaders in one term are impossible (Raft §5.2), so a
    /// second one is forged or broken, and following it would let it rewrite the log.
    fn check_leader_of_term(&self, from: &PeerAddr) -> Result<(), Rejected> {
        let other = match self.role {
            Role::Leader => Some(&self.cfg.id),
            Role::Follower => self.leader.as_ref().filter(|l| *l != from),
            // A candidate learns that it lost.
            Role::Candidate => None,
        };
        match other {
            Some(l) => Err(Rejected::new(format!(
                "{from} acts as leader of term {}, which {l} leads",
                self.term
            ))),
            None => Ok(()),
        }
    }

    /// Raft §5.4.1: a vote only for a candidate whose log is at least as up to date.
    fn log_ok(&self, candidate_last: LogId) -> bool {
        candidate_last.at_least_as_up_to_date_as(self.log.last_id())
    }

    fn record_vote(&mut self, from: PeerAddr, granted: bool) {
        if !self.peers.latest().is_voter(&from) {
            // A learner's or a stranger's vote counts for nothing.
            return;
        }
        self.votes.insert(from, granted);
        let yes = self.votes_granted();
        let no = self.votes.len() - yes;
        if yes >= self.quorum() {
            self.on_election_won();
        } else if no >= self.quorum() {
            // Lost: wait for a leader or for the timer (thesis §9.6 for pre-votes).
            self.become_follower(self.term, None);
        }
    }

    fn accept_leader(&mut self, from: &PeerAddr) {
        if self.role != Role::Follower || self.leader.as_ref() != Some(from) {
            // Same term, another member leads: a candidate of this term lost.
            self.become_follower(self.term, Some(from.clone()));
        }
        self.election_elapsed = 0;
    }

    pub(super) fn send(&mut self, to: PeerAddr, term: u64, msg: Message) {
        // A leader's message of a term not known durable here waits for the disk: a sole
        // voter wins its election within one step, and its first Append must not promise a
        // term that a crash could take back (it would win that term again, with other
        // entries). After a contested election the term was durable before the vote
        // requests left, which the answers prove.
        let leads = matches!(
            msg,
            Message::Append { .. } | Message::Heartbeat { .. } | Message::TimeoutNow
        );
        let before = msg.sendable_before_persist() && !(leads && term > self.durable_term);
        let env = Envelope {
            from: self.cfg.id.clone(),
            to,
            term,
            msg,
        };
        if before {
            self.ready.messages.push(env);
        } else {
            self.ready.after_persist.push(env);
        }
    }

    pub(super) fn send_after_persist(&mut self, to: PeerAddr, msg: Message) {
        let env = Envelope {
            from: self.cfg.id.clone(),
            to,
            term: self.term,
            msg,
        };
        self.ready.after_persist.push(env);
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod snapshot_tests;

#[cfg(test)]
#[path = "membership_tests.rs"]
mod membership_tests;
