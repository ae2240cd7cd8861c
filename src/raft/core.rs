//! The Raft state machine of one member: roles, terms, votes, log replication, commit, reads.
//!
//! Pure: no clock, no I/O, no threads. Time arrives as `tick(elapsed_ms)`, messages through
//! `step`, client work through `propose` and `read_index`, and disk completions through
//! `on_persisted`. Everything the shell must do comes out of `take_ready`, ordered so that
//! durable state is written before anything that depends on it is sent.

use std::collections::{BTreeMap, HashSet, VecDeque};

use super::message::{Command, Entry, Envelope, HardState, Message, PeerAddr};

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

#[derive(Clone, Debug)]
pub struct Config {
    pub id: PeerAddr,
    /// Every member, this one included.
    pub peers: Vec<PeerAddr>,
    pub heartbeat_interval_ms: u64,
    /// The election timer is drawn from `[election_timeout_ms, 2 * election_timeout_ms)`.
    pub election_timeout_ms: u64,
    /// Seeds the election-timer randomness, so simulations replay exactly.
    pub seed: u64,
    /// Most entries in one Append message.
    pub max_entries_per_append: usize,
    /// Most Append messages in flight to one follower before waiting for acknowledgements.
    pub max_inflight_appends: usize,
}

impl Config {
    pub fn new(id: PeerAddr, peers: Vec<PeerAddr>) -> Config {
        Config {
            id,
            peers,
            heartbeat_interval_ms: 100,
            election_timeout_ms: 500,
            seed: 0,
            max_entries_per_append: 1024,
            max_inflight_appends: 64,
        }
    }

    /// Checks the rules the core depends on; the message states the rule that was broken.
    pub fn validate(&self) -> Result<(), String> {
        if !self.peers.contains(&self.id) {
            return Err(format!(
                "this node's address {} is not in the member list [{}]; set --advertise to the address the others use for it, or fix the list",
                self.id,
                self.peers.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        let unique: HashSet<&PeerAddr> = self.peers.iter().collect();
        if unique.len() != self.peers.len() {
            return Err("the member list names a member twice".into());
        }
        if self.heartbeat_interval_ms == 0 {
            return Err("the heartbeat interval must be at least 1 ms".into());
        }
        if self.election_timeout_ms < 2 * self.heartbeat_interval_ms {
            return Err(format!(
                "the election timeout ({} ms) must be at least twice the heartbeat interval ({} ms), or followers start elections against a healthy leader",
                self.election_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        if self.max_entries_per_append == 0 || self.max_inflight_appends == 0 {
            return Err("max_entries_per_append and max_inflight_appends must be positive".into());
        }
        Ok(())
    }
}

/// A finished read-index request: reads at `ctx` may be served once the local state machine
/// has applied `index`. `index: None` means it failed (leadership was lost or unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: Option<u64>,
}

/// What the shell must do after feeding inputs, in this order:
/// 1. persist `hard_state`, then apply `truncate_from` and append `entries` to the log, all
///    durably, and report it with `on_persisted`;
/// 2. `messages` may be sent at once, `after_persist` only once step 1 is durable;
/// 3. apply `committed` in index order (they are durable locally already);
/// 4. answer `reads`.
#[derive(Debug, Default)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    pub truncate_from: Option<u64>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Envelope>,
    pub after_persist: Vec<Envelope>,
    pub committed: Vec<Entry>,
    pub reads: Vec<ReadState>,
}

impl Ready {
    pub fn needs_persist(&self) -> bool {
        self.hard_state.is_some() || self.truncate_from.is_some() || !self.entries.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        !self.needs_persist()
            && self.messages.is_empty()
            && self.after_persist.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProgressState {
    /// Unknown where the follower's log matches: one Append per heartbeat until one succeeds.
    Probe,
    /// Matching: stream Appends back to back, up to the in-flight window.
    Replicate,
}

/// The leader's view of one follower (etcd `Progress`).
#[derive(Clone, Debug)]
struct Progress {
    match_index: u64,
    next_index: u64,
    state: ProgressState,
    /// Last index of each Append in flight (Replicate), oldest first.
    inflight: VecDeque<u64>,
    /// Probe: an Append is out and unanswered.
    probe_sent: bool,
    /// Heard from since the last check-quorum round.
    recent_active: bool,
    /// Milliseconds since anything arrived from this follower.
    since_contact_ms: u64,
    /// Consecutive heartbeat replies showing entries sent but never received (lost messages).
    lagging_beats: u32,
}

impl Progress {
    fn new(next_index: u64) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            inflight: VecDeque::new(),
            probe_sent: false,
            recent_active: true,
            since_contact_ms: 0,
            lagging_beats: 0,
        }
    }

    fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.inflight.clear();
        self.probe_sent = false;
    }
}

/// A read waiting for a heartbeat round to confirm leadership (Raft thesis §6.4).
#[derive(Debug)]
struct PendingRead {
    round: u64,
    index: u64,
    ctx: u64,
    /// Who asked: this node (None) or a follower.
    from: Option<PeerAddr>,
    acks: HashSet<PeerAddr>,
}

/// The leader's status of one follower, for operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerStatus {
    pub peer: PeerAddr,
    pub match_index: u64,
    pub next_index: u64,
    pub last_contact_ms: u64,
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

pub struct RaftCore {
    cfg: Config,
    role: Role,
    term: u64,
    vote_for: Option<PeerAddr>,
    leader: Option<PeerAddr>,
    /// The log; `log[i]` has index `log_offset + i + 1`.
    log: Vec<Entry>,
    /// Last index covered by the datum set rather than the log (0 until compaction), and
    /// its term.
    log_offset: u64,
    offset_term: u64,
    /// Highest index known durable locally.
    stable_index: u64,
    /// Highest index handed to the shell for persisting (durable or queued).
    handed_index: u64,
    commit_index: u64,
    /// Highest index handed to the shell for applying.
    applied_handed: u64,

    election_elapsed: u64,
    heartbeat_elapsed: u64,
    randomized_election_timeout: u64,
    rng: u64,

    /// Candidate: votes received (granted or not), and whether this is the pre-vote phase.
    votes: BTreeMap<PeerAddr, bool>,
    pre_vote: bool,

    progress: BTreeMap<PeerAddr, Progress>,
    /// Leader handing over to this peer: stop taking proposals until it leads.
    transfer_to: Option<PeerAddr>,
    transfer_elapsed: u64,
    /// The next campaign answers a TimeoutNow, so voters must not ignore it.
    transfer_campaign: bool,

    reads: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its own term.
    reads_waiting_commit: Vec<(u64, Option<PeerAddr>)>,
    read_round: u64,
    read_round_needed: bool,

    persisted_hard_state: HardState,
    ready: Ready,
}

impl RaftCore {
    /// Builds a member from its durable state: term and vote, where the log starts
    /// (`log_offset` and its term, both 0 for a log that was never compacted), and the entries
    /// after it, contiguous. Everything on disk counts as stable.
    pub fn new(
        cfg: Config,
        hs: HardState,
        (log_offset, offset_term): (u64, u64),
        log: Vec<Entry>,
    ) -> RaftCore {
        if let Err(e) = cfg.validate() {
            panic!("RaftCore::new with an invalid config (validate it first): {e}");
        }
        for (i, e) in log.iter().enumerate() {
            assert_eq!(
                e.index,
                log_offset + i as u64 + 1,
                "log on disk is not contiguous"
            );
        }
        let last = log_offset + log.len() as u64;
        let mut core = RaftCore {
            role: Role::Follower,
            term: hs.term,
            vote_for: hs.vote_for.clone(),
            leader: None,
            log,
            log_offset,
            offset_term,
            stable_index: last,
            handed_index: last,
            commit_index: log_offset,
            applied_handed: log_offset,
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
            reads: VecDeque::new(),
            reads_waiting_commit: Vec::new(),
            read_round: 0,
            read_round_needed: false,
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
        self.commit_index
    }
    pub fn last_index(&self) -> u64 {
        self.log_offset + self.log.len() as u64
    }
    pub fn peers(&self) -> &[PeerAddr] {
        &self.cfg.peers
    }

    fn last_term(&self) -> u64 {
        self.log.last().map_or(self.offset_term, |e| e.term)
    }

    /// Term of the entry at `index`; `None` past the end and before the compaction point.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.log_offset {
            return Some(self.offset_term);
        }
        if index < self.log_offset {
            return None;
        }
        self.log
            .get((index - self.log_offset - 1) as usize)
            .map(|e| e.term)
    }

    fn entries_from(&self, from: u64, max: usize) -> Vec<Entry> {
        let start = (from - self.log_offset - 1) as usize;
        let end = (start + max).min(self.log.len());
        self.log[start..end].to_vec()
    }

    fn quorum(&self) -> usize {
        self.cfg.peers.len() / 2 + 1
    }

    fn others(&self) -> Vec<PeerAddr> {
        self.cfg
            .peers
            .iter()
            .filter(|p| **p != self.cfg.id)
            .cloned()
            .collect()
    }

    fn is_member(&self, p: &PeerAddr) -> bool {
        self.cfg.peers.contains(p)
    }

    pub fn status(&self) -> Status {
        let followers = if self.role == Role::Leader {
            self.progress
                .iter()
                .map(|(p, pr)| FollowerStatus {
                    peer: p.clone(),
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
            commit_index: self.commit_index,
            last_log_index: self.last_index(),
            stable_index: self.stable_index,
            followers,
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
        if self.read_round_needed {
            self.read_round_needed = false;
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
        if let Some(last) = self.ready.entries.last() {
            self.handed_index = last.index;
        }
        let apply_to = self.commit_index.min(self.stable_index);
        if apply_to > self.applied_handed {
            let from = self.applied_handed + 1;
            self.ready.committed = self.entries_from(from, (apply_to - from + 1) as usize);
            self.applied_handed = apply_to;
        }
        std::mem::take(&mut self.ready)
    }

    // ---------------------------------------------------------------- time

    /// Advances the timers by `elapsed_ms`.
    pub fn tick(&mut self, elapsed_ms: u64) {
        self.election_elapsed += elapsed_ms;
        match self.role {
            Role::Leader => self.tick_leader(elapsed_ms),
            Role::Follower | Role::Candidate => {
                // A one-member cluster needs nobody's vote: campaign at once (Nacos never
                // elected a leader here, reference §13.2.1).
                let alone = self.cfg.peers.len() == 1;
                if alone || self.election_elapsed >= self.randomized_election_timeout {
                    self.campaign(true);
                }
            }
        }
    }

    fn tick_leader(&mut self, elapsed_ms: u64) {
        self.heartbeat_elapsed += elapsed_ms;
        for pr in self.progress.values_mut() {
            pr.since_contact_ms += elapsed_ms;
        }
        if self.transfer_to.is_some() {
            self.transfer_elapsed += elapsed_ms;
            if self.transfer_elapsed >= self.cfg.election_timeout_ms {
                // The target did not take over in time: resume serving.
                self.transfer_to = None;
            }
        }
        if self.election_elapsed >= self.cfg.election_timeout_ms {
            self.election_elapsed = 0;
            // Check-quorum: a leader that has not heard from a majority within an election
            // timeout steps down, so a partitioned leader stops serving (Raft thesis §6.2;
            // Nacos leaders never stepped down, reference §13.1.3).
            let active = 1 + self.progress.values().filter(|p| p.recent_active).count();
            if active < self.quorum() {
                self.become_follower(self.term, None);
                return;
            }
            for pr in self.progress.values_mut() {
                pr.recent_active = false;
            }
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

    fn become_follower(&mut self, term: u64, leader: Option<PeerAddr>) {
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
            self.fail_pending_reads();
        }
    }

    fn fail_pending_reads(&mut self) {
        let failed: Vec<(u64, Option<PeerAddr>)> = self
            .reads
            .drain(..)
            .map(|r| (r.ctx, r.from))
            .chain(self.reads_waiting_commit.drain(..))
            .collect();
        for (ctx, from) in failed {
            self.answer_read(ctx, from, None);
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
        self.votes.insert(self.cfg.id.clone(), true);
        if self.votes_granted() >= self.quorum() {
            self.on_election_won();
            return;
        }
        let (last_log_index, last_log_term) = (self.last_index(), self.last_term());
        let transfer = std::mem::take(&mut self.transfer_campaign);
        for p in self.others() {
            let msg = if pre {
                Message::PreVote {
                    last_log_index,
                    last_log_term,
                }
            } else {
                Message::Vote {
                    last_log_index,
                    last_log_term,
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
        let next = self.last_index() + 1;
        self.progress = self
            .others()
            .into_iter()
            .map(|p| (p, Progress::new(next)))
            .collect();
        // A no-op of the new term lets it commit everything before it, and marks the point
        // from which it may serve reads (Raft §5.4.2, §8).
        self.append_local(vec![Command::Noop]);
        self.broadcast_append();
    }

    // ---------------------------------------------------------------- client input

    /// Appends commands to the log. Returns the index of the first and the term. The shell
    /// learns the outcome when the entry at that index is applied: same term = this write,
    /// another term = it was superseded and never applied.
    pub fn propose(&mut self, commands: Vec<Command>) -> Result<(u64, u64), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader.clone(),
            });
        }
        if self.transfer_to.is_some() {
            return Err(ProposeError::Transferring);
        }
        let first = self.last_index() + 1;
        self.append_local(commands);
        // Sent at the next flush so that proposals of one driver turn share one Append.
        self.broadcast_append();
        Ok((first, self.term))
    }

    fn append_local(&mut self, commands: Vec<Command>) {
        let term = self.term;
        for command in commands {
            let entry = Entry {
                index: self.last_index() + 1,
                term,
                command,
            };
            self.log.push(entry.clone());
            self.ready.entries.push(entry);
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

    fn leader_read(&mut self, ctx: u64, from: Option<PeerAddr>) {
        if self.term_at(self.commit_index) != Some(self.term) {
            // Until the no-op of this term commits, the commit index may be behind what
            // earlier leaders committed (Raft §8).
            self.reads_waiting_commit.push((ctx, from));
            return;
        }
        let index = self.commit_index;
        if self.cfg.peers.len() == 1 {
            self.answer_read(ctx, from, Some(index));
            return;
        }
        let mut acks = HashSet::new();
        acks.insert(self.cfg.id.clone());
        self.reads.push_back(PendingRead {
            round: self.read_round + 1,
            index,
            ctx,
            from,
            acks,
        });
        self.read_round_needed = true;
    }

    fn answer_read(&mut self, ctx: u64, from: Option<PeerAddr>, index: Option<u64>) {
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
        let target = match target {
            Some(t) if self.progress.contains_key(&t) => t,
            Some(_) | None => match self
                .progress
                .iter()
                .max_by_key(|(_, pr)| (pr.match_index, pr.recent_active))
            {
                Some((p, _)) => p.clone(),
                None => return Err(ProposeError::NotLeader { leader: None }),
            },
        };
        self.transfer_to = Some(target.clone());
        self.transfer_elapsed = 0;
        self.maybe_send_timeout_now(&target);
        Ok(target)
    }

    fn maybe_send_timeout_now(&mut self, p: &PeerAddr) {
        if self.transfer_to.as_ref() != Some(p) {
            return;
        }
        let caught_up = self.progress.get(p).map(|pr| pr.match_index) == Some(self.last_index());
        if caught_up {
            self.send(p.clone(), self.term, Message::TimeoutNow);
        } else {
            self.send_append(p);
        }
    }

    // ---------------------------------------------------------------- disk completions

    /// The shell made the log durable up to `index`, whose entry has `term`. A report for an
    /// entry that was truncated meanwhile is ignored.
    pub fn on_persisted(&mut self, index: u64, term: u64) {
        if index <= self.stable_index || self.term_at(index) != Some(term) {
            return;
        }
        self.stable_index = index;
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    // ---------------------------------------------------------------- messages

    /// Handles one message from a peer.
    pub fn step(&mut self, env: Envelope) {
        if !self.is_member(&env.from) || env.to != self.cfg.id {
            // Only members take part (Nacos let anyone vote or append, reference §13.8).
            return;
        }
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
                        return;
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
                    let hint = self.last_index();
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
            return;
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
                let granted =
                    (term > self.term || free) && self.log_ok(last_log_index, last_log_term);
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
                let granted = can_vote && self.log_ok(last_log_index, last_log_term);
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
                    self.record_vote(from, granted);
                }
            }
            Message::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.accept_leader(&from);
                self.handle_append(from, prev_log_index, prev_log_term, entries, leader_commit);
            }
            Message::Heartbeat {
                leader_commit,
                read_ctx,
            } => {
                self.accept_leader(&from);
                // The leader sends min(commit, our match), so this never commits entries
                // that might not match the leader's log.
                let commit = leader_commit.min(self.last_index());
                if commit > self.commit_index {
                    self.commit_index = commit;
                }
                let last_index = self.last_index();
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
            } => self.handle_append_resp(from, success, index, hint),
            Message::HeartbeatResp {
                read_ctx,
                last_index,
            } => self.handle_heartbeat_resp(from, read_ctx, last_index),
            Message::ReadIndex { ctx } => {
                if self.role == Role::Leader {
                    self.mark_active(&from);
                    self.leader_read(ctx, Some(from));
                } else {
                    self.send(from, self.term, Message::ReadIndexResp { ctx, index: None });
                }
            }
            Message::ReadIndexResp { ctx, index } => {
                self.ready.reads.push(ReadState { ctx, index });
            }
            Message::TimeoutNow => {
                if self.role != Role::Leader {
                    self.transfer_campaign = true;
                    self.campaign(false);
                }
            }
        }
    }

    /// Raft §5.4.1: a vote only for a candidate whose log is at least as up to date.
    fn log_ok(&self, last_index: u64, last_term: u64) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    fn record_vote(&mut self, from: PeerAddr, granted: bool) {
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

    fn handle_append(
        &mut self,
        from: PeerAddr,
        prev_log_index: u64,
        prev_log_term: u64,
        entries: Vec<Entry>,
        leader_commit: u64,
    ) {
        if prev_log_index < self.commit_index {
            // Already committed here, so it matches (Log Matching); skip what we hold.
            let last_new = prev_log_index + entries.len() as u64;
            if last_new <= self.commit_index {
                let index = self.commit_index;
                self.send_after_persist(
                    from,
                    Message::AppendResp {
                        success: true,
                        index,
                        hint: 0,
                    },
                );
                return;
            }
            let skip = (self.commit_index - prev_log_index) as usize;
            let rest = entries[skip..].to_vec();
            let prev_term = self
                .term_at(self.commit_index)
                .expect("the commit index is never compacted past");
            return self.handle_append(from, self.commit_index, prev_term, rest, leader_commit);
        }
        match self.term_at(prev_log_index) {
            Some(t) if t == prev_log_term => {}
            found => {
                // Log matching failed: point the leader at the last index whose term is not
                // above the one it tried, skipping a whole conflicting term at once.
                let mut hint = prev_log_index.min(self.last_index());
                if found.is_some() {
                    hint = prev_log_index - 1;
                }
                while hint > self.commit_index
                    && self.term_at(hint).is_some_and(|t| t > prev_log_term)
                {
                    hint -= 1;
                }
                self.send_after_persist(
                    from,
                    Message::AppendResp {
                        success: false,
                        index: prev_log_index,
                        hint,
                    },
                );
                return;
            }
        }
        let last_new = prev_log_index + entries.len() as u64;
        let mut to_append = Vec::new();
        for e in entries {
            if to_append.is_empty() {
                match self.term_at(e.index) {
                    Some(t) if t == e.term => continue,
                    Some(_) => {
                        // A divergent, uncommitted suffix: drop it (Raft §5.3).
                        assert!(
                            e.index > self.commit_index,
                            "leader {from} conflicts with committed entry {} (commit {})",
                            e.index,
                            self.commit_index
                        );
                        self.truncate_from(e.index);
                    }
                    None => {}
                }
            }
            to_append.push(e);
        }
        for e in to_append {
            self.log.push(e.clone());
            self.ready.entries.push(e);
        }
        let commit = leader_commit.min(last_new);
        if commit > self.commit_index {
            self.commit_index = commit;
        }
        self.send_after_persist(
            from,
            Message::AppendResp {
                success: true,
                index: last_new,
                hint: 0,
            },
        );
    }

    fn truncate_from(&mut self, index: u64) {
        self.log.truncate((index - self.log_offset - 1) as usize);
        self.stable_index = self.stable_index.min(index - 1);
        self.ready.entries.retain(|e| e.index < index);
        // Entries already handed to the shell must be cut on disk too.
        if index <= self.handed_index {
            self.handed_index = index - 1;
            self.ready.truncate_from =
                Some(self.ready.truncate_from.map_or(index, |t| t.min(index)));
        }
    }

    fn mark_active(&mut self, from: &PeerAddr) {
        if let Some(pr) = self.progress.get_mut(from) {
            pr.recent_active = true;
            pr.since_contact_ms = 0;
        }
    }

    fn handle_append_resp(&mut self, from: PeerAddr, success: bool, index: u64, hint: u64) {
        if self.role != Role::Leader {
            return;
        }
        self.mark_active(&from);
        let last = self.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        if success {
            pr.lagging_beats = 0;
            if index > pr.match_index {
                pr.match_index = index;
            }
            pr.next_index = pr.next_index.max(pr.match_index + 1);
            while pr.inflight.front().is_some_and(|&i| i <= index) {
                pr.inflight.pop_front();
            }
            if pr.state == ProgressState::Probe {
                pr.state = ProgressState::Replicate;
                pr.probe_sent = false;
                pr.inflight.clear();
                pr.next_index = pr.match_index + 1;
            }
            let more = pr.next_index <= last;
            self.maybe_commit();
            if more {
                self.send_append(&from);
            }
            self.maybe_send_timeout_now(&from);
        } else {
            if index <= pr.match_index {
                return; // stale rejection of something since acknowledged
            }
            pr.become_probe();
            pr.next_index = (hint + 1).max(pr.match_index + 1).min(last + 1);
            self.send_append(&from);
        }
    }

    fn handle_heartbeat_resp(&mut self, from: PeerAddr, read_ctx: u64, last_index: u64) {
        if self.role != Role::Leader {
            return;
        }
        self.mark_active(&from);
        let last = self.last_index();
        if let Some(pr) = self.progress.get_mut(&from) {
            let resend = match pr.state {
                ProgressState::Probe => pr.match_index < last && !pr.probe_sent,
                ProgressState::Replicate => {
                    // Entries were sent but the follower's log is still short of them for
                    // two heartbeats: the messages were lost, so probe again.
                    if last_index + 1 < pr.next_index && pr.match_index < last {
                        pr.lagging_beats += 1;
                    } else {
                        pr.lagging_beats = 0;
                    }
                    if pr.lagging_beats >= 2 {
                        pr.lagging_beats = 0;
                        pr.become_probe();
                        true
                    } else {
                        false
                    }
                }
            };
            if resend {
                self.send_append(&from);
            }
        }
        if read_ctx > 0 {
            for r in self.reads.iter_mut() {
                if r.round <= read_ctx {
                    r.acks.insert(from.clone());
                }
            }
            // Rounds are acknowledged in order, so the front always completes first.
            while self
                .reads
                .front()
                .is_some_and(|r| r.acks.len() >= self.quorum())
            {
                let r = self.reads.pop_front().expect("checked front");
                self.answer_read(r.ctx, r.from, Some(r.index));
            }
        }
    }

    // ---------------------------------------------------------------- replication

    fn maybe_commit(&mut self) {
        let mut matches: Vec<u64> = self.progress.values().map(|p| p.match_index).collect();
        matches.push(self.stable_index);
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matches[self.quorum() - 1];
        // Only entries of the current term are committed by counting (Raft §5.4.2, Figure 8).
        if candidate > self.commit_index && self.term_at(candidate) == Some(self.term) {
            let first_commit_in_term = self.term_at(self.commit_index) != Some(self.term);
            self.commit_index = candidate;
            if first_commit_in_term {
                let waiting = std::mem::take(&mut self.reads_waiting_commit);
                for (ctx, from) in waiting {
                    self.leader_read(ctx, from);
                }
            }
        }
    }

    fn broadcast_append(&mut self) {
        for p in self.others() {
            self.send_append(&p);
        }
    }

    /// Sends what `p` is missing, within its window.
    fn send_append(&mut self, p: &PeerAddr) {
        let last = self.last_index();
        let max_entries = self.cfg.max_entries_per_append;
        let max_inflight = self.cfg.max_inflight_appends;
        loop {
            let Some(pr) = self.progress.get(p) else {
                return;
            };
            let paused = match pr.state {
                ProgressState::Probe => pr.probe_sent,
                ProgressState::Replicate => pr.inflight.len() >= max_inflight,
            };
            if paused || (pr.state == ProgressState::Replicate && pr.next_index > last) {
                return;
            }
            let next = pr.next_index;
            let prev = next - 1;
            let prev_term = self
                .term_at(prev)
                .expect("log compaction keeps what followers need (issue 4 adds snapshots)");
            let entries = if next <= last {
                self.entries_from(next, max_entries)
            } else {
                Vec::new()
            };
            let sent_to = prev + entries.len() as u64;
            let msg = Message::Append {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries,
                leader_commit: self.commit_index,
            };
            self.send(p.clone(), self.term, msg);
            let pr = self.progress.get_mut(p).expect("checked above");
            match pr.state {
                ProgressState::Probe => {
                    pr.probe_sent = true;
                    return;
                }
                ProgressState::Replicate => {
                    pr.next_index = sent_to + 1;
                    pr.inflight.push_back(sent_to);
                }
            }
        }
    }

    fn broadcast_heartbeat(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        if !self.reads.is_empty() {
            self.read_round += 1;
        }
        let round = if self.reads.is_empty() {
            0
        } else {
            self.read_round
        };
        let targets: Vec<(PeerAddr, u64)> = self
            .progress
            .iter()
            .map(|(p, pr)| (p.clone(), pr.match_index.min(self.commit_index)))
            .collect();
        for (p, commit) in targets {
            self.send(
                p,
                self.term,
                Message::Heartbeat {
                    leader_commit: commit,
                    read_ctx: round,
                },
            );
        }
    }

    fn send(&mut self, to: PeerAddr, term: u64, msg: Message) {
        let before = msg.sendable_before_persist();
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

    fn send_after_persist(&mut self, to: PeerAddr, msg: Message) {
        let env = Envelope {
            from: self.cfg.id.clone(),
            to,
            term: self.term,
            msg,
        };
        self.ready.after_persist.push(env);
    }
}
