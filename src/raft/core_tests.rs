//! Scenario tests: feed one core (or a few wired together) inputs and assert on the
//! effects it returns. The simulator in `tests/sim.rs` covers random schedules.

use super::*;
use std::collections::{BTreeSet, VecDeque};

pub(super) const HB: u64 = 10;
pub(super) const ET: u64 = 50;

pub(super) fn addr(s: &str) -> PeerAddr {
    PeerAddr::new(s)
}

pub(super) fn indices(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.index).collect()
}

/// `a` of a, b, c, started over `log` in `term`, wins the next term with `voter`'s votes.
pub(super) fn elected(log: Vec<Entry>, term: u64, voter: &str) -> RaftCore {
    let mut a = RaftCore::new(config("a", 3), hs(term, None), LogId::ZERO, log);
    a.tick(2 * ET);
    let next = term + 1;
    a.step(env(
        voter,
        "a",
        next,
        Message::PreVoteResp { granted: true },
    ))
    .unwrap();
    a.step(env(voter, "a", next, Message::VoteResp { granted: true }))
        .unwrap();
    assert_eq!(a.role(), Role::Leader);
    a
}

fn names(n: usize) -> Vec<PeerAddr> {
    (0..n)
        .map(|i| addr(&((b'a' + i as u8) as char).to_string()))
        .collect()
}

pub(super) fn config(id: &str, n: usize) -> Config {
    let mut c = Config::new(addr(id), names(n));
    c.heartbeat_interval_ms = HB;
    c.election_timeout_ms = ET;
    c.seed = id.as_bytes()[0] as u64;
    c
}

pub(super) fn noop(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        command: Command::Noop,
    }
}

pub(super) fn publish(key: &str, value: u64) -> Command {
    Command::publish(key.into(), serde_json::json!(value))
}

pub(super) fn hs(term: u64, vote: Option<&str>) -> HardState {
    HardState {
        term,
        vote_for: vote.map(addr),
    }
}

pub(super) fn env(from: &str, to: &str, term: u64, msg: Message) -> Envelope {
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
pub(super) struct Cluster {
    pub(super) cores: BTreeMap<PeerAddr, RaftCore>,
    queue: VecDeque<Envelope>,
    /// Members cut off from everyone, both ways.
    pub(super) isolated: BTreeSet<PeerAddr>,
    /// Lost as well.
    pub(super) drop_if: Option<fn(&Envelope) -> bool>,
    pub(super) applied: BTreeMap<PeerAddr, Vec<Entry>>,
    reads: BTreeMap<PeerAddr, Vec<ReadState>>,
    truncations: BTreeMap<PeerAddr, Vec<u64>>,
    pub(super) sent: Vec<Envelope>,
    /// Messages a member refused, with the reason (kept only with `tolerate_refusals`;
    /// otherwise a refusal fails the test).
    pub(super) refused: Vec<(Envelope, String)>,
    pub(super) tolerate_refusals: bool,
}

impl Cluster {
    pub(super) fn new(n: usize) -> Cluster {
        let cores = names(n)
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    RaftCore::new(
                        config(p.as_str(), n),
                        HardState::default(),
                        LogId::ZERO,
                        vec![],
                    ),
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
            refused: Vec::new(),
            tolerate_refusals: false,
        }
    }

    pub(super) fn core(&mut self, id: &str) -> &mut RaftCore {
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
                core.on_persisted(LogId::new(last.index, last.term));
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
    pub(super) fn deliver(&mut self) {
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
            if let Err(r) = self.cores.get_mut(&to).expect("member").step(e.clone()) {
                assert!(self.tolerate_refusals, "{to} refused {e:?}: {}", r.reason);
                self.refused.push((e, r.reason));
            }
            self.flush(&to);
        }
    }

    /// Advances every member's clock by `ms`, in ticks of 5 ms, delivering in between.
    pub(super) fn run(&mut self, ms: u64) {
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
    pub(super) fn elect(&mut self, id: &str) {
        self.core(id).tick(2 * ET);
        self.deliver();
        assert_eq!(self.core(id).role(), Role::Leader, "{id} should have won");
    }

    pub(super) fn leaders(&self) -> Vec<PeerAddr> {
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
    let wiped = RaftCore::new(config("c", 3), HardState::default(), LogId::ZERO, vec![]);
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
    let big = Command::publish("k".into(), serde_json::json!("x".repeat(200)));
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
    let mut a = RaftCore::new(config("a", 1), HardState::default(), LogId::ZERO, vec![]);
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

    let first = a.propose(vec![publish("k", 1)]).expect("leader");
    assert_eq!(first, LogId::new(2, 1));
    let rd = a.take_ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(rd.committed.is_empty());
    assert_eq!(
        a.commit_index(),
        0,
        "the leader counts itself only once durable"
    );

    a.on_persisted(LogId::new(2, 1));
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
    let voter = || RaftCore::new(config("b", 3), hs(2, None), LogId::ZERO, log.clone());
    // Term 4: a candidate's last entry is always of an earlier term than the one it asks for.
    let ask = |b: &mut RaftCore, last_log_index, last_log_term| {
        b.step(env(
            "c",
            "b",
            4,
            Message::Vote {
                last_log_index,
                last_log_term,
                transfer: false,
            },
        ))
        .unwrap();
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
    let mut b = RaftCore::new(config("b", 3), HardState::default(), LogId::ZERO, vec![]);
    b.step(env(
        "a",
        "b",
        1,
        Message::Vote {
            last_log_index: 0,
            last_log_term: 0,
            transfer: false,
        },
    ))
    .unwrap();
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
    let mut a = RaftCore::new(config("a", 3), HardState::default(), LogId::ZERO, vec![]);
    a.tick(2 * ET);
    let rd = a.take_ready();
    assert_eq!(rd.hard_state, None);
    assert_eq!(rd.messages.len(), 2);
    assert!(rd
        .messages
        .iter()
        .all(|e| matches!(e.msg, Message::PreVote { .. }) && e.term == 1));
    a.step(env("b", "a", 1, Message::PreVoteResp { granted: true }))
        .unwrap();
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
    let mut b = RaftCore::new(config("b", 3), hs(1, Some("a")), LogId::ZERO, vec![]);
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
    ))
    .unwrap();
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
    .map(|(id, h, log)| (addr(id), RaftCore::new(config(id, 3), h, LogId::ZERO, log)))
    .collect();
    let mut c = Cluster::with(cores);
    c.elect("a");
    c.run(2 * HB);
    assert_eq!(c.truncations.get(&addr("b")), Some(&vec![3]));
    let a_log = c.core("a").log.entries().to_vec();
    assert_eq!(a_log.len(), 4, "a's log: three entries and its no-op");
    assert_eq!(c.core("b").log.entries(), a_log);
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
    let a = RaftCore::new(cfg, hs(2, None), LogId::ZERO, vec![noop(1, 1), noop(2, 2)]);
    let mut cores: BTreeMap<PeerAddr, RaftCore> = ["b", "c"]
        .into_iter()
        .map(|id| {
            (
                addr(id),
                RaftCore::new(config(id, 3), hs(2, None), LogId::ZERO, vec![noop(1, 1)]),
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
        c.cores.get_mut(&to).expect("member").step(e).unwrap();
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
    let mut lone = RaftCore::new(config("b", 3), HardState::default(), LogId::ZERO, vec![]);
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
    let index = c
        .core("a")
        .propose(vec![publish("k", 1)])
        .expect("leader")
        .index;
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
    let mut a = elected(log, 3, "c");
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
    ))
    .unwrap();
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
    ))
    .unwrap();
    a.step(env(
        "b",
        "a",
        4,
        Message::AppendResp {
            success: false,
            index: 5,
            hint: 4,
        },
    ))
    .unwrap();
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
    ))
    .unwrap();
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
    .map(|(id, h, log)| (addr(id), RaftCore::new(config(id, 3), h, LogId::ZERO, log)))
    .collect();
    let mut c = Cluster::with(cores);
    c.elect("a");
    c.run(10 * HB);
    let a_log = c.core("a").log.entries().to_vec();
    assert_eq!(c.core("b").log.entries(), a_log, "b not repaired");
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

/// Two followers that made an entry durable commit it, and the leader applies it while its
/// own write is still under way (Raft thesis §10.2.1): a leader whose disk stalls does not
/// hold the answer back. The leader counts itself only once its write is durable, so one
/// follower alone does not commit.
#[test]
fn leader_applies_what_two_followers_made_durable_before_its_own_write_ends() {
    let mut a = elected(vec![noop(1, 1)], 1, "c");
    let ack = |from: &str, index: u64| {
        env(
            from,
            "a",
            2,
            Message::AppendResp {
                success: true,
                index,
                hint: 0,
            },
        )
    };
    // Nothing is reported durable on the leader until the end.
    let rd = a.take_ready();
    assert_eq!(indices(&rd.entries), [2], "its no-op");
    a.step(ack("b", 2)).unwrap();
    assert!(
        a.take_ready().committed.is_empty(),
        "one follower and a leader whose write is not durable are not a majority"
    );
    assert_eq!(a.commit_index(), 0);
    a.step(ack("c", 2)).unwrap();
    assert_eq!(a.commit_index(), 2);
    assert_eq!(indices(&a.take_ready().committed), [1, 2]);

    let first = a.propose(vec![publish("k", 1)]).expect("leader");
    assert_eq!(first, LogId::new(3, 2));
    assert_eq!(indices(&a.take_ready().entries), [3]);
    a.step(ack("b", 3)).unwrap();
    assert!(a.take_ready().committed.is_empty());
    a.step(ack("c", 3)).unwrap();
    let rd = a.take_ready();
    assert_eq!(indices(&rd.committed), [3]);
    assert_eq!(rd.committed[0].command, publish("k", 1));
    assert_eq!(a.stable_index(), 1, "still not durable on the leader");

    a.on_persisted(LogId::new(3, 2));
    assert!(a.take_ready().committed.is_empty(), "applied once");
}
