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
    /// Rough bound on the JSON size of one Append's entries (at least one entry is sent):
    /// keeps a message of large values under the peer endpoint's body limit.
    pub max_append_bytes: usize,
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
            max_append_bytes: 8 << 20,
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
    /// Leader: these followers are behind the retained log; stream them a snapshot and
    /// report with `on_snapshot_sent`.
    pub snapshots: Vec<PeerAddr>,
    /// Follower: an offered snapshot was accepted; install it before persisting anything
    /// that follows in this or a later `Ready`.
    pub install: Option<InstallPoint>,
}

/// Where an accepted snapshot puts the log: it continues after (`index`, `term`). With
/// `reset_log` the local log did not hold that entry and is discarded; otherwise only the
/// part up to it is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstallPoint {
    pub index: u64,
    pub term: u64,
    pub reset_log: bool,
}

impl Ready {
    pub fn needs_persist(&self) -> bool {
        self.hard_state.is_some()
            || self.truncate_from.is_some()
            || !self.entries.is_empty()
            || self.install.is_some()
    }

    pub fn is_empty(&self) -> bool {
        !self.needs_persist()
            && self.messages.is_empty()
            && self.after_persist.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.snapshots.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProgressState {
    /// Unknown where the follower's log matches: one Append per heartbeat until one succeeds.
    Probe,
    /// Matching: stream Appends back to back, up to the in-flight window.
    Replicate,
    /// Behind the retained log: a snapshot is being streamed; nothing else is sent.
    Snapshot,
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
    /// Milliseconds since anything arrived from this follower.
    since_contact_ms: u64,
    /// Consecutive heartbeat replies with entries outstanding and `match_index` unmoved.
    lagging_beats: u32,
    /// `match_index` at the previous heartbeat reply.
    beat_match: u64,
    /// Probe: how far below a rejected index the next probe goes at least; doubles with
    /// each rejection in a row (see `handle_append_resp`).
    probe_back: u64,
}

/// About the size of an entry as JSON, without serialising it (it is only a budget).
fn approx_json_size(e: &Entry) -> usize {
    fn value(v: &serde_json::Value) -> usize {
        use serde_json::Value::*;
        match v {
            Null | Bool(_) | Number(_) => 8,
            String(s) => s.len() + 2,
            Array(a) => 2 + a.iter().map(|x| value(x) + 1).sum::<usize>(),
            Object(o) => 2 + o.iter().map(|(k, x)| k.len() + 4 + value(x)).sum::<usize>(),
        }
    }
    64 + match &e.command {
        Command::Noop => 0,
        Command::Publish { key, value: v } => key.len() + value(v),
        Command::Delete { key } => key.len(),
    }
}

impl Progress {
    fn new(next_index: u64) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            inflight: VecDeque::new(),
            probe_sent: false,
            since_contact_ms: 0,
            lagging_beats: 0,
            beat_match: 0,
            probe_back: 1,
        }
    }

    fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.inflight.clear();
        self.probe_sent = false;
        self.probe_back = 1;
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
        // Check-quorum: a leader that has not heard from a majority for an election timeout
        // steps down, so a partitioned leader stops serving (Raft thesis §6.2; Nacos leaders
        // never stepped down, reference §13.1.3). Judged on every tick from each follower's
        // last contact, so it happens within one election timeout of losing the majority;
        // counting replies per election-timeout window instead can take up to two.
        let timeout = self.cfg.election_timeout_ms;
        let active = 1 + self
            .progress
            .values()
            .filter(|p| p.since_contact_ms < timeout)
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
            Some(_) | None => match self.progress.iter().max_by_key(|(_, pr)| {
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

    // ---------------------------------------------------------------- snapshots, compaction

    /// Drops log entries up to `upto` (capped at what is applied and durable): the datum
    /// files hold their effect now. Returns whether anything was dropped.
    pub fn compact(&mut self, upto: u64) -> bool {
        let upto = upto.min(self.applied_handed).min(self.stable_index);
        if upto <= self.log_offset {
            return false;
        }
        let term = self.term_at(upto).expect("below the last index");
        self.log.drain(..(upto - self.log_offset) as usize);
        self.log_offset = upto;
        self.offset_term = term;
        true
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
        if ok {
            pr.match_index = pr.match_index.max(index);
            pr.become_probe();
            self.send_append(peer);
        } else {
            // Retry at the next heartbeat, not in a tight loop against a dead peer.
            pr.become_probe();
            pr.probe_sent = true;
        }
    }

    /// Follower: a leader offers a snapshot covering the log up to `index` (whose entry has
    /// `snap_term`). Accepting moves the log start there and asks the shell to install it
    /// (`Ready::install`) before anything later is persisted. `Ok(false)`: accepted, but the
    /// log already reaches past it, so there is nothing to install.
    pub fn offer_snapshot(
        &mut self,
        from: &PeerAddr,
        term: u64,
        index: u64,
        snap_term: u64,
    ) -> Result<bool, String> {
        if !self.is_member(from) {
            return Err(format!("{from} is not a member"));
        }
        if term < self.term {
            return Err(format!("stale leader: term {term} < {}", self.term));
        }
        if term > self.term {
            self.become_follower(term, Some(from.clone()));
        } else if self.role == Role::Leader {
            return Err(format!("{} leads term {term}", self.cfg.id));
        }
        self.accept_leader(from);
        if index <= self.commit_index {
            // Nothing to install: this log already reaches past it. Accepting (rather than
            // refusing) lets the leader resume appends after `index` instead of sending the
            // snapshot again and again (etcd answers the same way).
            return Ok(false);
        }
        // Committed entries match the snapshot's; if the log holds its last one, keep what
        // follows it (Raft §7), else every local entry from there on is not committed.
        let keep = self.term_at(index) == Some(snap_term);
        if keep {
            self.log.drain(..(index - self.log_offset) as usize);
            self.ready.entries.retain(|e| e.index > index);
            self.stable_index = self.stable_index.max(index);
            self.handed_index = self.handed_index.max(index);
        } else {
            self.log.clear();
            self.ready.entries.clear();
            self.ready.truncate_from = None;
            self.stable_index = index;
            self.handed_index = index;
        }
        self.log_offset = index;
        self.offset_term = snap_term;
        self.commit_index = index;
        self.applied_handed = self.applied_handed.max(index);
        self.ready.install = Some(InstallPoint {
            index,
            term: snap_term,
            reset_log: !keep,
        });
        Ok(true)
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
            // `last_index` never moves `match_index` up (a follower's log may be long yet
            // divergent, so only acknowledged appends do); it only reveals a lost log.
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
            // A rejection answers one Append. In Replicate, one at or below the match index is
            // stale. In Probe only the answer to the latest probe (prev = next_index - 1)
            // counts: acting on answers to superseded probes (duplicates, or probes resent by
            // a heartbeat) moved next_index back up and started one more endless chain of
            // probes per stale answer (etcd `Progress.MaybeDecrTo` has the same rule).
            let stale = match pr.state {
                ProgressState::Replicate => index <= pr.match_index,
                ProgressState::Probe => index + 1 != pr.next_index,
                // The snapshot stream decides what comes next.
                ProgressState::Snapshot => true,
            };
            if stale {
                return;
            }
            let back = if pr.state == ProgressState::Probe {
                pr.probe_back
            } else {
                1
            };
            pr.become_probe();
            // The follower's hint is below the rejected index, so each answer moves back. A
            // follower whose conflicting entries have older terms than ours can only step back
            // one index (the Raft §5.3 optimization needs its conflicting term, which the
            // message does not carry), so rejections in a row step back 1, 2, 4, ... further:
            // O(log n) round trips for n divergent entries, and at most about 2n entries sent
            // again, most of which had to be replaced anyway.
            pr.next_index = (hint + 1)
                .min((index + 1).saturating_sub(back))
                .max(pr.match_index + 1)
                .min(last + 1);
            pr.probe_back = back.saturating_mul(2);
            self.send_append(&from);
        }
    }

    fn handle_heartbeat_resp(&mut self, from: PeerAddr, read_ctx: u64, follower_last: u64) {
        if self.role != Role::Leader {
            return;
        }
        self.mark_active(&from);
        let last = self.last_index();
        if let Some(pr) = self.progress.get_mut(&from) {
            let resend = match pr.state {
                ProgressState::Snapshot => false,
                // The follower's log is shorter than what it acknowledged: it lost it (a
                // replaced or wiped disk; Raft assumes logs survive, operators replace disks).
                // Heartbeats carry no log position, so without this an idle cluster would
                // leave it empty for good. Start over from what it holds: only appends it
                // acknowledges again move `match_index` back up, and a lower `match_index`
                // can only delay commits, never undo one.
                _ if follower_last < pr.match_index => {
                    pr.match_index = 0;
                    pr.become_probe();
                    pr.next_index = follower_last + 1;
                    true
                }
                ProgressState::Probe => pr.match_index < last && !pr.probe_sent,
                ProgressState::Replicate => {
                    // Entries are outstanding and no acknowledgement moved the match index
                    // for two heartbeats: an Append or its AppendResp was lost. The follower's
                    // log length cannot tell which (a lost AppendResp leaves it complete), and
                    // in Replicate nothing else resends, so probe again from the match index.
                    if pr.match_index < last && pr.match_index == pr.beat_match {
                        pr.lagging_beats += 1;
                    } else {
                        pr.lagging_beats = 0;
                    }
                    pr.beat_match = pr.match_index;
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
                ProgressState::Snapshot => true,
            };
            if paused || (pr.state == ProgressState::Replicate && pr.next_index > last) {
                return;
            }
            let next = pr.next_index;
            let prev = next - 1;
            let Some(prev_term) = self.term_at(prev) else {
                // The follower needs entries the log no longer holds (compacted): it
                // catches up from a snapshot of the datum set instead.
                let pr = self.progress.get_mut(p).expect("checked above");
                pr.state = ProgressState::Snapshot;
                pr.inflight.clear();
                self.ready.snapshots.push(p.clone());
                return;
            };
            let entries = if next <= last {
                let mut entries = self.entries_from(next, max_entries);
                let mut bytes = 0;
                let keep = entries
                    .iter()
                    .take_while(|e| {
                        bytes += approx_json_size(e);
                        bytes <= self.cfg.max_append_bytes
                    })
                    .count();
                entries.truncate(keep.max(1));
                entries
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
                ProgressState::Snapshot => unreachable!("paused above"),
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

#[cfg(test)]
mod tests {
    //! Scenario tests: feed one core (or a few wired together) inputs and assert on the
    //! effects it returns. The simulator in `tests/sim.rs` covers random schedules.

    use super::*;
    use std::collections::BTreeSet;

    const HB: u64 = 10;
    const ET: u64 = 50;

    fn addr(s: &str) -> PeerAddr {
        PeerAddr::new(s)
    }

    fn names(n: usize) -> Vec<PeerAddr> {
        (0..n)
            .map(|i| addr(&((b'a' + i as u8) as char).to_string()))
            .collect()
    }

    fn config(id: &str, n: usize) -> Config {
        let mut c = Config::new(addr(id), names(n));
        c.heartbeat_interval_ms = HB;
        c.election_timeout_ms = ET;
        c.seed = id.as_bytes()[0] as u64;
        c
    }

    fn noop(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            command: Command::Noop,
        }
    }

    fn publish(key: &str, value: u64) -> Command {
        Command::Publish {
            key: key.into(),
            value: serde_json::json!(value),
        }
    }

    fn hs(term: u64, vote: Option<&str>) -> HardState {
        HardState {
            term,
            vote_for: vote.map(addr),
        }
    }

    fn env(from: &str, to: &str, term: u64, msg: Message) -> Envelope {
        Envelope {
            from: addr(from),
            to: addr(to),
            term,
            msg,
        }
    }

    /// A few cores wired together by an in-memory network. Persisting is instant, so
    /// `after_persist` leaves with `messages`; the tests that care about the split look at
    /// single `Ready`s instead.
    struct Cluster {
        cores: BTreeMap<PeerAddr, RaftCore>,
        queue: VecDeque<Envelope>,
        /// Members cut off from everyone, both ways.
        isolated: BTreeSet<PeerAddr>,
        /// Lost as well.
        drop_if: Option<fn(&Envelope) -> bool>,
        applied: BTreeMap<PeerAddr, Vec<Entry>>,
        reads: BTreeMap<PeerAddr, Vec<ReadState>>,
        truncations: BTreeMap<PeerAddr, Vec<u64>>,
        sent: Vec<Envelope>,
    }

    impl Cluster {
        fn new(n: usize) -> Cluster {
            let cores = names(n)
                .iter()
                .map(|p| {
                    (
                        p.clone(),
                        RaftCore::new(config(p.as_str(), n), HardState::default(), (0, 0), vec![]),
                    )
                })
                .collect();
            Cluster::with(cores)
        }

        fn with(cores: BTreeMap<PeerAddr, RaftCore>) -> Cluster {
            Cluster {
                cores,
                queue: VecDeque::new(),
                isolated: BTreeSet::new(),
                drop_if: None,
                applied: BTreeMap::new(),
                reads: BTreeMap::new(),
                truncations: BTreeMap::new(),
                sent: Vec::new(),
            }
        }

        fn core(&mut self, id: &str) -> &mut RaftCore {
            self.cores.get_mut(&addr(id)).expect("member")
        }

        fn flush(&mut self, id: &PeerAddr) {
            loop {
                let core = self.cores.get_mut(id).expect("member");
                let rd = core.take_ready();
                if rd.is_empty() {
                    return;
                }
                if let Some(last) = rd.entries.last() {
                    core.on_persisted(last.index, last.term);
                }
                if let Some(t) = rd.truncate_from {
                    self.truncations.entry(id.clone()).or_default().push(t);
                }
                self.queue.extend(rd.messages);
                self.queue.extend(rd.after_persist);
                self.applied
                    .entry(id.clone())
                    .or_default()
                    .extend(rd.committed);
                self.reads.entry(id.clone()).or_default().extend(rd.reads);
            }
        }

        fn flush_all(&mut self) {
            let ids: Vec<PeerAddr> = self.cores.keys().cloned().collect();
            for id in ids {
                self.flush(&id);
            }
        }

        /// Delivers until the network is quiet.
        fn deliver(&mut self) {
            self.flush_all();
            let mut n = 0;
            while let Some(e) = self.queue.pop_front() {
                n += 1;
                assert!(n < 100_000, "messages never stop");
                if self.isolated.contains(&e.from)
                    || self.isolated.contains(&e.to)
                    || self.drop_if.is_some_and(|f| f(&e))
                {
                    continue;
                }
                self.sent.push(e.clone());
                let to = e.to.clone();
                self.cores.get_mut(&to).expect("member").step(e);
                self.flush(&to);
            }
        }

        /// Advances every member's clock by `ms`, in ticks of 5 ms, delivering in between.
        fn run(&mut self, ms: u64) {
            for _ in 0..ms / 5 {
                let ids: Vec<PeerAddr> = self.cores.keys().cloned().collect();
                for id in ids {
                    self.cores.get_mut(&id).expect("member").tick(5);
                    self.flush(&id);
                }
                self.deliver();
            }
        }

        /// Makes `id` leader: only its timer runs out, the others just answer.
        fn elect(&mut self, id: &str) {
            self.core(id).tick(2 * ET);
            self.deliver();
            assert_eq!(self.core(id).role(), Role::Leader, "{id} should have won");
        }

        fn leaders(&self) -> Vec<PeerAddr> {
            self.cores
                .iter()
                .filter(|(_, c)| c.role() == Role::Leader)
                .map(|(p, _)| p.clone())
                .collect()
        }
    }

    /// A follower that comes back with an empty log (a replaced disk) on an idle cluster:
    /// only heartbeats flow, and they must reveal the loss, or it stays empty for good.
    #[test]
    fn a_follower_that_lost_its_log_catches_up_on_an_idle_cluster() {
        let mut c = Cluster::new(3);
        c.elect("a");
        for i in 0..5 {
            c.core("a").propose(vec![publish("k", i)]).expect("leader");
        }
        c.deliver();
        let last = c.core("a").last_index();
        assert_eq!(c.core("c").last_index(), last);
        let wiped = RaftCore::new(config("c", 3), HardState::default(), (0, 0), vec![]);
        c.cores.insert(addr("c"), wiped);
        c.run(3 * HB);
        assert_eq!(
            c.core("c").last_index(),
            last,
            "the wiped follower stayed behind"
        );
        assert_eq!(c.core("c").commit_index(), c.core("a").commit_index());
    }

    #[test]
    fn appends_keep_to_the_byte_budget_but_never_go_empty() {
        let mut c = Cluster::new(3);
        c.elect("a");
        c.core("a").cfg.max_append_bytes = 300;
        let big = Command::Publish {
            key: "k".into(),
            value: serde_json::json!("x".repeat(200)),
        };
        c.core("a").propose(vec![big; 4]).expect("leader");
        let rd = c.core("a").take_ready();
        let per_append: Vec<usize> = rd
            .messages
            .iter()
            .filter(|m| m.to == addr("b"))
            .filter_map(|m| match &m.msg {
                Message::Append { entries, .. } => Some(entries.len()),
                _ => None,
            })
            .collect();
        // Each entry alone is most of the budget: one per Append, all four sent.
        assert_eq!(per_append, vec![1, 1, 1, 1]);
    }

    #[test]
    fn one_member_elects_itself_on_first_tick_and_commits_after_persist() {
        let mut a = RaftCore::new(config("a", 1), HardState::default(), (0, 0), vec![]);
        a.tick(1);
        assert_eq!(a.role(), Role::Leader);
        assert_eq!(a.term(), 1);
        let rd = a.take_ready();
        assert_eq!(rd.hard_state, Some(hs(1, Some("a"))));
        assert_eq!(rd.entries, vec![noop(1, 1)]);
        assert!(
            rd.committed.is_empty(),
            "nothing is applied before it is durable"
        );

        let (index, term) = a.propose(vec![publish("k", 1)]).expect("leader");
        assert_eq!((index, term), (2, 1));
        let rd = a.take_ready();
        assert_eq!(rd.entries.len(), 1);
        assert!(rd.committed.is_empty());
        assert_eq!(
            a.commit_index(),
            0,
            "the leader counts itself only once durable"
        );

        a.on_persisted(2, 1);
        let rd = a.take_ready();
        assert_eq!(a.commit_index(), 2);
        assert_eq!(
            rd.committed.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(rd.committed[1].command, publish("k", 1));

        a.read_index(7);
        assert_eq!(
            a.take_ready().reads,
            vec![ReadState {
                ctx: 7,
                index: Some(2)
            }]
        );
    }

    #[test]
    fn three_members_elect_exactly_one_leader() {
        for seed in 0..20 {
            let mut c = Cluster::new(3);
            for (i, core) in c.cores.values_mut().enumerate() {
                core.cfg.seed = seed * 7 + i as u64;
                core.reset_election_timer();
            }
            c.run(20 * ET);
            let leaders = c.leaders();
            assert_eq!(leaders.len(), 1, "seed {seed}: leaders {leaders:?}");
            let term = c.cores[&leaders[0]].term();
            for (p, core) in &c.cores {
                assert_eq!(core.term(), term, "seed {seed}: {p} is in another term");
                assert_eq!(
                    core.leader(),
                    Some(&leaders[0]),
                    "seed {seed}: {p} follows someone else"
                );
            }
        }
    }

    #[test]
    fn pre_vote_keeps_a_rejoining_member_from_raising_the_term_or_deposing_the_leader() {
        let mut c = Cluster::new(3);
        c.elect("a");
        let term = c.core("a").term();
        c.isolated.insert(addr("c"));
        // Many election timeouts alone: pre-votes go unanswered, so the term stays put.
        c.run(20 * ET);
        assert_eq!(
            c.core("c").term(),
            term,
            "a pre-vote must not raise the term"
        );
        assert_ne!(c.core("c").role(), Role::Leader);
        c.isolated.clear();
        c.run(10 * ET);
        assert_eq!(c.leaders(), vec![addr("a")]);
        for id in ["a", "b", "c"] {
            assert_eq!(c.core(id).term(), term, "{id}'s term moved");
        }
        assert_eq!(c.core("c").leader(), Some(&addr("a")));
    }

    #[test]
    fn check_quorum_leader_cut_off_steps_down_within_one_election_timeout() {
        let mut c = Cluster::new(3);
        c.elect("a");
        // Heartbeats and replies flow for a while, so every follower was heard from just now.
        c.run(3 * ET);
        assert_eq!(c.core("a").role(), Role::Leader);
        c.isolated.insert(addr("a"));
        let tick = 5;
        let mut elapsed = 0;
        while c.core("a").role() == Role::Leader {
            c.run(tick);
            elapsed += tick;
            assert!(
                elapsed <= ET + tick,
                "still leader {elapsed} ms after losing its majority (election timeout {ET} ms)"
            );
        }
        assert_eq!(c.core("a").leader(), None);
        assert!(c.core("a").propose(vec![publish("k", 1)]).is_err());
    }

    #[test]
    fn vote_refused_to_a_shorter_or_older_log() {
        let log = vec![noop(1, 1), noop(2, 2)];
        let voter = || RaftCore::new(config("b", 3), hs(2, None), (0, 0), log.clone());
        let ask = |b: &mut RaftCore, last_log_index, last_log_term| {
            b.step(env(
                "c",
                "b",
                3,
                Message::Vote {
                    last_log_index,
                    last_log_term,
                    transfer: false,
                },
            ));
            let rd = b.take_ready();
            match &rd.after_persist[..] {
                [Envelope {
                    msg: Message::VoteResp { granted },
                    ..
                }] => *granted,
                other => panic!("expected one vote response after persist, got {other:?}"),
            }
        };
        assert!(!ask(&mut voter(), 2, 1), "older last term");
        assert!(!ask(&mut voter(), 1, 2), "same last term, shorter");
        assert!(!ask(&mut voter(), 5, 1), "longer but older last term");
        assert!(ask(&mut voter(), 2, 2), "as up to date");
        assert!(ask(&mut voter(), 1, 3), "newer last term");

        // In a cluster: c misses an entry a majority holds, so once a is gone only b can win.
        let mut c = Cluster::new(3);
        c.elect("a");
        c.isolated.insert(addr("c"));
        c.core("a").propose(vec![publish("k", 1)]).expect("leader");
        c.deliver();
        assert_eq!(c.core("b").last_index(), 2);
        c.isolated = [addr("a")].into();
        for _ in 0..40 {
            c.run(5);
            assert_ne!(
                c.core("c").role(),
                Role::Leader,
                "c won without the committed entry"
            );
        }
        assert_eq!(c.core("b").role(), Role::Leader);
    }

    #[test]
    fn term_and_vote_are_persisted_before_any_vote_leaves() {
        // Voter: the new term and the vote are hard state, the response waits for the persist.
        let mut b = RaftCore::new(config("b", 3), HardState::default(), (0, 0), vec![]);
        b.step(env(
            "a",
            "b",
            1,
            Message::Vote {
                last_log_index: 0,
                last_log_term: 0,
                transfer: false,
            },
        ));
        let rd = b.take_ready();
        assert_eq!(rd.hard_state, Some(hs(1, Some("a"))));
        assert!(
            rd.messages.is_empty(),
            "vote sent before it was durable: {:?}",
            rd.messages
        );
        assert!(matches!(
            rd.after_persist[..],
            [Envelope {
                msg: Message::VoteResp { granted: true },
                ..
            }]
        ));

        // Candidate: pre-votes change nothing durable and leave at once; the real vote
        // requests carry the new term, so they wait for it.
        let mut a = RaftCore::new(config("a", 3), HardState::default(), (0, 0), vec![]);
        a.tick(2 * ET);
        let rd = a.take_ready();
        assert_eq!(rd.hard_state, None);
        assert_eq!(rd.messages.len(), 2);
        assert!(rd
            .messages
            .iter()
            .all(|e| matches!(e.msg, Message::PreVote { .. }) && e.term == 1));
        a.step(env("b", "a", 1, Message::PreVoteResp { granted: true }));
        let rd = a.take_ready();
        assert_eq!(rd.hard_state, Some(hs(1, Some("a"))));
        assert!(rd.messages.is_empty());
        assert_eq!(rd.after_persist.len(), 2);
        assert!(rd
            .after_persist
            .iter()
            .all(|e| matches!(e.msg, Message::Vote { .. }) && e.term == 1));
    }

    #[test]
    fn follower_acknowledges_appends_only_after_persist() {
        let mut b = RaftCore::new(config("b", 3), hs(1, Some("a")), (0, 0), vec![]);
        b.step(env(
            "a",
            "b",
            1,
            Message::Append {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![noop(1, 1)],
                leader_commit: 0,
            },
        ));
        let rd = b.take_ready();
        assert_eq!(rd.entries, vec![noop(1, 1)]);
        assert!(
            rd.messages.is_empty(),
            "acknowledged before durable: {:?}",
            rd.messages
        );
        assert!(matches!(
            rd.after_persist[..],
            [Envelope {
                msg: Message::AppendResp {
                    success: true,
                    index: 1,
                    ..
                },
                ..
            }]
        ));
    }

    #[test]
    fn divergent_uncommitted_suffix_is_truncated_and_repaired() {
        // b took entries 3 and 4 from a leader of term 2 that never committed them; a and c
        // hold entry 3 of term 3 instead.
        let common = vec![noop(1, 1), noop(2, 1)];
        let mut ac = common.clone();
        ac.push(noop(3, 3));
        let mut b = common.clone();
        b.extend([noop(3, 2), noop(4, 2)]);
        let cores = [
            ("a", hs(3, None), ac.clone()),
            ("b", hs(2, None), b),
            ("c", hs(3, None), ac),
        ]
        .into_iter()
        .map(|(id, h, log)| (addr(id), RaftCore::new(config(id, 3), h, (0, 0), log)))
        .collect();
        let mut c = Cluster::with(cores);
        c.elect("a");
        c.run(2 * HB);
        assert_eq!(c.truncations.get(&addr("b")), Some(&vec![3]));
        let a_log = c.core("a").log.clone();
        assert_eq!(a_log.len(), 4, "a's log: three entries and its no-op");
        assert_eq!(c.core("b").log, a_log);
        assert_eq!(c.core("b").commit_index(), 4);
        let applied: Vec<(u64, u64)> = c.applied[&addr("b")]
            .iter()
            .map(|e| (e.index, e.term))
            .collect();
        assert_eq!(applied, vec![(1, 1), (2, 1), (3, 3), (4, 4)]);
    }

    #[test]
    fn leader_commits_an_earlier_term_entry_only_with_one_of_its_own() {
        // Raft Figure 8: a holds entry 2 of term 2 that nobody else has. Once elected in
        // term 3, a copy of entry 2 on a majority must not commit it: only its own no-op
        // reaching a majority commits both.
        let mut cfg = config("a", 3);
        cfg.max_entries_per_append = 1;
        let a = RaftCore::new(cfg, hs(2, None), (0, 0), vec![noop(1, 1), noop(2, 2)]);
        let mut cores: BTreeMap<PeerAddr, RaftCore> = ["b", "c"]
            .into_iter()
            .map(|id| {
                (
                    addr(id),
                    RaftCore::new(config(id, 3), hs(2, None), (0, 0), vec![noop(1, 1)]),
                )
            })
            .collect();
        cores.insert(addr("a"), a);
        let mut c = Cluster::with(cores);
        c.isolated.insert(addr("c"));
        c.core("a").tick(2 * ET);
        // Deliver one message at a time, watching a's commit index.
        c.flush_all();
        let mut saw_match_2 = false;
        while let Some(e) = c.queue.pop_front() {
            if c.isolated.contains(&e.to) || c.isolated.contains(&e.from) {
                continue;
            }
            let to = e.to.clone();
            c.cores.get_mut(&to).expect("member").step(e);
            c.flush(&to);
            let a = c.core("a");
            if a.role() == Role::Leader && a.progress[&addr("b")].match_index == 2 {
                saw_match_2 = true;
                assert_eq!(
                    a.commit_index(),
                    0,
                    "entry 2 of term 2 committed by counting replicas"
                );
            }
        }
        assert!(
            saw_match_2,
            "the scenario should pass through b matching entry 2 only"
        );
        assert_eq!(c.core("a").term(), 3);
        assert_eq!(
            c.core("a").commit_index(),
            3,
            "the no-op of term 3 commits everything"
        );
    }

    #[test]
    fn leader_read_waits_for_its_no_op_and_a_heartbeat_majority() {
        let mut c = Cluster::new(3);
        c.core("a").tick(2 * ET);
        // Win the election but hold back every append acknowledgement: the no-op of the
        // new term is not committed.
        c.drop_if = Some(|e| matches!(e.msg, Message::AppendResp { .. }));
        c.deliver();
        assert_eq!(c.core("a").role(), Role::Leader);
        c.core("a").read_index(1);
        c.deliver();
        assert!(
            c.reads.get(&addr("a")).is_none_or(|r| r.is_empty()),
            "answered before its no-op committed"
        );

        // Acknowledgements flow again, heartbeat replies do not: the no-op commits, the read
        // still needs a round of heartbeats answered by a majority.
        c.drop_if = Some(|e| matches!(e.msg, Message::HeartbeatResp { .. }));
        c.run(3 * HB);
        assert_eq!(c.core("a").commit_index(), 1);
        assert!(
            c.reads.get(&addr("a")).is_none_or(|r| r.is_empty()),
            "answered without a heartbeat majority"
        );

        c.drop_if = None;
        c.run(HB);
        assert_eq!(
            c.reads[&addr("a")],
            vec![ReadState {
                ctx: 1,
                index: Some(1)
            }]
        );
        // The confirming round was a read round (its context is not 0).
        assert!(c
            .sent
            .iter()
            .any(|e| matches!(e.msg, Message::HeartbeatResp { read_ctx, .. } if read_ctx > 0)));
    }

    #[test]
    fn follower_read_is_forwarded_to_the_leader_and_answered() {
        let mut c = Cluster::new(3);
        c.elect("a");
        c.core("a").propose(vec![publish("k", 1)]).expect("leader");
        c.deliver();
        c.core("b").read_index(42);
        let rd = c.core("b").take_ready();
        assert!(matches!(
            rd.messages[..],
            [Envelope { msg: Message::ReadIndex { ctx: 42 }, ref to, .. }] if *to == addr("a")
        ));
        c.queue.extend(rd.messages);
        c.deliver();
        assert_eq!(
            c.reads[&addr("b")],
            vec![ReadState {
                ctx: 42,
                index: Some(2)
            }]
        );

        // With no leader known, the read fails at once rather than hanging.
        let mut lone = RaftCore::new(config("b", 3), HardState::default(), (0, 0), vec![]);
        lone.read_index(5);
        assert_eq!(
            lone.take_ready().reads,
            vec![ReadState {
                ctx: 5,
                index: None
            }]
        );
    }

    #[test]
    fn transfer_leader_catches_the_target_up_then_it_wins_despite_the_lease() {
        let mut c = Cluster::new(3);
        c.elect("a");
        c.isolated.insert(addr("c"));
        for v in 0..3 {
            c.core("a").propose(vec![publish("k", v)]).expect("leader");
        }
        c.run(2 * HB);
        c.isolated.clear();
        let term = c.core("a").term();
        let last = c.core("a").last_index();
        assert!(c.core("c").last_index() < last, "c should lag");
        assert_eq!(c.core("a").transfer_leader(Some(addr("c"))), Ok(addr("c")));
        assert_eq!(
            c.core("a").propose(vec![publish("k", 9)]),
            Err(ProposeError::Transferring)
        );
        c.run(3 * HB);
        // TimeoutNow went out only once c held every entry.
        let timeout_now = c
            .sent
            .iter()
            .position(|e| matches!(e.msg, Message::TimeoutNow))
            .expect("TimeoutNow sent");
        let caught_up = c
            .sent
            .iter()
            .position(|e| e.from == addr("c") && matches!(e.msg, Message::AppendResp { success: true, index, .. } if index == last))
            .expect("c acknowledged the last entry");
        assert!(caught_up < timeout_now);
        // b heard from a moments ago, so it would ignore an ordinary candidate; c's vote
        // request says it follows a transfer.
        assert_eq!(c.leaders(), vec![addr("c")]);
        assert_eq!(c.core("c").term(), term + 1);
        assert_eq!(c.core("a").role(), Role::Follower);
        assert_eq!(c.core("b").leader(), Some(&addr("c")));
    }

    #[test]
    fn lost_append_acknowledgements_do_not_stall_replication() {
        // Every AppendResp of one round is lost and no further proposal comes: heartbeats
        // alone must get the entry committed (found by the simulator, seed 3).
        let mut c = Cluster::new(3);
        c.elect("a");
        c.drop_if = Some(|e| matches!(e.msg, Message::AppendResp { .. }));
        let (index, _) = c.core("a").propose(vec![publish("k", 1)]).expect("leader");
        c.deliver();
        assert_eq!(c.core("b").last_index(), index, "the entry itself arrived");
        c.drop_if = None;
        c.run(10 * HB);
        assert_eq!(
            c.core("a").commit_index(),
            index,
            "stalled with the acknowledgements lost"
        );
    }

    #[test]
    fn stale_probe_rejections_do_not_move_next_index_back_up() {
        // a leads term 4; b's log diverges after index 1. Rejections of earlier probes that
        // arrive late must not undo the walk back, or every extra probe in flight becomes a
        // chain of Appends that never ends (found by the simulator, seed 933: ~37,000
        // Append/AppendResp to repair 300 entries).
        let log = vec![noop(1, 1), noop(2, 3), noop(3, 3), noop(4, 3)];
        let mut a = RaftCore::new(config("a", 3), hs(3, None), (0, 0), log);
        a.tick(2 * ET);
        a.step(env("c", "a", 4, Message::PreVoteResp { granted: true }));
        a.step(env("c", "a", 4, Message::VoteResp { granted: true }));
        assert_eq!(a.role(), Role::Leader);
        let _ = a.take_ready();
        let b = addr("b");
        assert_eq!(a.progress[&b].next_index, 5, "first probe: prev 4");

        a.step(env(
            "b",
            "a",
            4,
            Message::AppendResp {
                success: false,
                index: 4,
                hint: 3,
            },
        ));
        assert_eq!(a.progress[&b].next_index, 4);
        let sent = a.take_ready().messages;
        assert!(matches!(
            sent[..],
            [Envelope {
                msg: Message::Append {
                    prev_log_index: 3,
                    ..
                },
                ..
            }]
        ));

        // The same rejection again (a duplicate, or the answer to a probe resent by a
        // heartbeat), then one for a probe even further back in time.
        a.step(env(
            "b",
            "a",
            4,
            Message::AppendResp {
                success: false,
                index: 4,
                hint: 3,
            },
        ));
        a.step(env(
            "b",
            "a",
            4,
            Message::AppendResp {
                success: false,
                index: 5,
                hint: 4,
            },
        ));
        assert_eq!(
            a.progress[&b].next_index, 4,
            "a stale rejection moved next_index"
        );
        let sent = a.take_ready().messages;
        assert!(
            sent.is_empty(),
            "a stale rejection started another probe: {sent:?}"
        );

        // The answer to the current probe still counts.
        a.step(env(
            "b",
            "a",
            4,
            Message::AppendResp {
                success: false,
                index: 3,
                hint: 1,
            },
        ));
        assert_eq!(a.progress[&b].next_index, 2);
    }

    #[test]
    fn long_divergent_suffix_is_repaired_in_logarithmic_round_trips() {
        // b's 200 entries after index 1 are of term 2; a and c replaced them with term 3.
        // b's terms are older than the leader's, so its hint can only step back one index;
        // the leader must still find the match point in a few round trips (found by the
        // simulator, seed 18638: 264 round trips, one per entry).
        let mut ac = vec![noop(1, 1)];
        ac.extend((2..=201).map(|i| noop(i, 3)));
        let mut b = vec![noop(1, 1)];
        b.extend((2..=201).map(|i| noop(i, 2)));
        let cores = [
            ("a", hs(3, None), ac.clone()),
            ("b", hs(2, None), b),
            ("c", hs(3, None), ac),
        ]
        .into_iter()
        .map(|(id, h, log)| (addr(id), RaftCore::new(config(id, 3), h, (0, 0), log)))
        .collect();
        let mut c = Cluster::with(cores);
        c.elect("a");
        c.run(10 * HB);
        let a_log = c.core("a").log.clone();
        assert_eq!(c.core("b").log, a_log, "b not repaired");
        let rejections = c
            .sent
            .iter()
            .filter(|e| {
                e.from == addr("b") && matches!(e.msg, Message::AppendResp { success: false, .. })
            })
            .count();
        assert!(
            rejections <= 10,
            "{rejections} round trips to find where b's log matches"
        );
    }
}
