//! Scenario tests of compaction and snapshots: `compact`, the leader's Snapshot progress
//! state and `on_snapshot_sent`, and the follower's `offer_snapshot`, with its log kept or
//! reset and the `Ready` that installs it. The simulator in `tests/sim.rs` streams
//! snapshots under faults.

use super::tests::{addr, config, elected, env, hs, indices, noop, publish, ET, HB};
use super::*;

/// The Appends in `rd` to `to`, as (prev_log_index, number of entries).
fn appends_to(rd: &Ready, to: &str) -> Vec<(u64, usize)> {
    rd.messages
        .iter()
        .filter(|m| m.to == addr(to))
        .filter_map(|m| match &m.msg {
            Message::Append {
                prev_log_index,
                entries,
                ..
            } => Some((*prev_log_index, entries.len())),
            _ => None,
        })
        .collect()
}

fn append_resp(from: &str, success: bool, index: u64, hint: u64) -> Envelope {
    env(
        from,
        "a",
        2,
        Message::AppendResp {
            success,
            index,
            hint,
        },
    )
}

fn heartbeat_resp(from: &str, last_index: u64) -> Envelope {
    env(
        from,
        "a",
        2,
        Message::HeartbeatResp {
            read_ctx: 0,
            last_index,
        },
    )
}

/// `a` leads term 2 of a, b, c over entries 1..=n of term 1 and its no-op at n + 1, which b
/// acknowledged: everything is committed and handed out for applying. c has not answered.
fn leader(n: u64) -> RaftCore {
    let mut a = elected((1..=n).map(|i| noop(i, 1)).collect(), 1, "b");
    a.on_persisted(LogId::new(n + 1, 2));
    a.step(append_resp("b", true, n + 1, 0)).unwrap();
    assert_eq!(a.commit_index(), n + 1);
    assert_eq!(a.take_ready().committed.len() as u64, n + 1);
    a
}

/// `leader(10)` compacted up to 8; c, whose log ends at 3, rejects the first probe (prev
/// 10). Returns the leader and the `Ready` after that rejection.
fn leader_with_c_behind() -> (RaftCore, Ready) {
    let mut a = leader(10);
    assert!(a.compact(8));
    a.step(append_resp("c", false, 10, 3)).unwrap();
    let rd = a.take_ready();
    (a, rd)
}

/// `b` follows a in term 2 with entries 1..=n of term 1, all durable, of which a said
/// `commit` are committed (handed out for applying).
fn follower(n: u64, commit: u64) -> RaftCore {
    let log = (1..=n).map(|i| noop(i, 1)).collect();
    let mut b = RaftCore::new(config("b", 3), hs(2, Some("a")), LogId::ZERO, log);
    b.step(env(
        "a",
        "b",
        2,
        Message::Heartbeat {
            leader_commit: commit,
            read_ctx: 0,
        },
    ))
    .unwrap();
    assert_eq!(b.take_ready().committed.len() as u64, commit);
    b
}

fn append(prev: LogId, entries: Vec<Entry>, leader_commit: u64) -> Envelope {
    env(
        "a",
        "b",
        2,
        Message::Append {
            prev_log_index: prev.index,
            prev_log_term: prev.term,
            entries,
            leader_commit,
        },
    )
}

// ---------------------------------------------------------------- compaction

#[test]
fn compaction_stops_at_what_is_applied_and_durable() {
    let mut b = follower(5, 3);
    assert!(b.compact(5));
    assert_eq!(
        b.log_start(),
        LogId::new(3, 1),
        "capped at the applied index"
    );

    // 6 and 7 arrive and are committed, but are not durable here yet: they are applied
    // (a majority holds them), and not compacted away.
    b.step(append(LogId::new(5, 1), vec![noop(6, 2), noop(7, 2)], 7))
        .unwrap();
    assert_eq!(indices(&b.take_ready().committed), [4, 5, 6, 7]);
    assert!(b.compact(7));
    assert_eq!(
        b.log_start(),
        LogId::new(5, 1),
        "capped at the durable index"
    );

    b.on_persisted(LogId::new(7, 2));
    assert!(b.take_ready().committed.is_empty(), "handed out once");
    assert!(b.compact(7));
    assert_eq!(b.log_start(), LogId::new(7, 2));
    assert_eq!(
        (b.last_index(), b.term_at(7), b.term_at(6)),
        (7, Some(2), None)
    );
}

#[test]
fn compaction_at_or_below_the_log_start_changes_nothing() {
    let log = vec![noop(5, 1), noop(6, 1)];
    let mut b = RaftCore::new(config("b", 3), hs(2, Some("a")), LogId::new(4, 1), log);
    b.step(append(LogId::new(6, 1), vec![], 6)).unwrap();
    assert_eq!(indices(&b.take_ready().committed), [5, 6]);
    for upto in [0, 3, 4] {
        assert!(!b.compact(upto), "compact({upto}) dropped something");
        assert_eq!(b.log_start(), LogId::new(4, 1));
    }
    assert_eq!((b.term_at(4), b.term_at(5)), (Some(1), Some(1)));

    let mut empty = RaftCore::new(config("b", 3), hs(2, None), LogId::ZERO, vec![]);
    assert!(!empty.compact(10));
    assert_eq!(empty.log_start(), LogId::ZERO);
}

// ---------------------------------------------------------------- the leader

#[test]
fn a_follower_behind_the_compacted_log_gets_one_snapshot_request_not_one_per_heartbeat() {
    let (mut a, rd) = leader_with_c_behind();
    assert_eq!(rd.snapshots, vec![addr("c")]);
    assert!(
        appends_to(&rd, "c").is_empty(),
        "an Append from before the log's start"
    );
    assert_eq!(a.progress[&addr("c")].state, ProgressState::Snapshot);

    let last = a.last_index();
    for beat in 0..5 {
        a.tick(HB);
        a.step(heartbeat_resp("b", last)).unwrap();
        a.step(heartbeat_resp("c", 3)).unwrap();
        let rd = a.take_ready();
        assert!(
            rd.messages
                .iter()
                .any(|m| m.to == addr("c") && matches!(m.msg, Message::Heartbeat { .. })),
            "heartbeat {beat}: c still hears from its leader"
        );
        assert!(
            rd.snapshots.is_empty(),
            "heartbeat {beat} asked for another snapshot"
        );
        assert!(appends_to(&rd, "c").is_empty());
    }
    assert_eq!(a.role(), Role::Leader);
}

#[test]
fn in_snapshot_state_nothing_else_goes_to_the_follower_and_its_rejections_are_ignored() {
    let (mut a, _) = leader_with_c_behind();
    a.propose(vec![publish("k", 1)]).expect("leader");
    a.step(append_resp("c", false, 3, 2)).unwrap();
    a.step(heartbeat_resp("c", 3)).unwrap();
    let rd = a.take_ready();
    assert!(appends_to(&rd, "c").is_empty(), "{:?}", rd.messages);
    assert!(rd.snapshots.is_empty());
    assert_eq!(
        appends_to(&rd, "b"),
        [(11, 1)],
        "b still gets the new entry"
    );
    let pr = &a.progress[&addr("c")];
    assert_eq!((pr.state, pr.match_index), (ProgressState::Snapshot, 0));
}

#[test]
fn a_finished_stream_resumes_replication_after_its_point() {
    let (mut a, _) = leader_with_c_behind();
    a.on_snapshot_sent(&addr("c"), 11, true);
    let pr = &a.progress[&addr("c")];
    assert_eq!((pr.state, pr.next_index), (ProgressState::Probe, 12));
    assert_eq!(
        appends_to(&a.take_ready(), "c"),
        [(11, 0)],
        "a probe after the point"
    );

    let at = a.propose(vec![publish("k", 1)]).expect("leader");
    a.step(append_resp("c", true, 11, 0)).unwrap();
    let rd = a.take_ready();
    assert_eq!(appends_to(&rd, "c"), [(11, 1)], "the new entry goes to c");
    let pr = &a.progress[&addr("c")];
    assert_eq!((pr.state, pr.match_index), (ProgressState::Replicate, 11));

    // c's acknowledgement alone (b has not answered) commits it.
    a.on_persisted(at);
    a.step(append_resp("c", true, at.index, 0)).unwrap();
    assert_eq!(a.commit_index(), at.index);
}

/// Found by the simulator, seed 15862: the follower answers the stream once its core has
/// accepted the offer, before the install is durable, and the leader took that answer as
/// the follower holding everything up to the point (match index 23). The follower crashed
/// with the install still queued and came back with its old log, whose entries 21 to 23
/// were of an older term; the leader's heartbeat carried `min(commit, match)` = 23, and the
/// follower committed entries that never were. Only acknowledgements, which leave after
/// the persist, may move the match index.
#[test]
fn regression_a_finished_stream_counted_its_point_as_held_before_the_install_was_durable() {
    let (mut a, _) = leader_with_c_behind();
    a.on_snapshot_sent(&addr("c"), 11, true);
    assert_eq!(
        a.progress[&addr("c")].match_index,
        0,
        "the stream's report moved the match index"
    );
    let _ = a.take_ready();
    a.tick(HB);
    let heartbeat_commit = |rd: &Ready| {
        rd.messages.iter().find_map(|m| match m.msg {
            Message::Heartbeat { leader_commit, .. } if m.to == addr("c") => Some(leader_commit),
            _ => None,
        })
    };
    assert_eq!(
        heartbeat_commit(&a.take_ready()),
        Some(0),
        "c would commit its own log up to the snapshot's point"
    );

    // Once c acknowledges the point (after its install is durable), it counts.
    a.step(append_resp("c", true, 11, 0)).unwrap();
    assert_eq!(a.progress[&addr("c")].match_index, 11);
    let _ = a.take_ready();
    a.tick(HB);
    assert_eq!(heartbeat_commit(&a.take_ready()), Some(11));
}

#[test]
fn a_failed_stream_is_retried_at_the_next_heartbeat_not_at_once() {
    let (mut a, _) = leader_with_c_behind();
    a.on_snapshot_sent(&addr("c"), 11, false);
    let rd = a.take_ready();
    assert!(rd.snapshots.is_empty(), "retried at once");
    assert!(appends_to(&rd, "c").is_empty());
    assert_eq!(a.progress[&addr("c")].match_index, 0);

    // Replies before the next heartbeat start nothing either.
    a.step(heartbeat_resp("c", 3)).unwrap();
    a.step(append_resp("c", false, 3, 3)).unwrap();
    assert!(a.take_ready().snapshots.is_empty());

    a.tick(HB);
    let rd = a.take_ready();
    assert_eq!(rd.snapshots, vec![addr("c")]);
    assert_eq!(a.progress[&addr("c")].state, ProgressState::Snapshot);
}

#[test]
fn stream_reports_about_a_follower_not_in_snapshot_state_or_after_losing_leadership_are_ignored() {
    let mut a = leader(10);
    assert!(a.compact(8));
    for ok in [true, false] {
        a.on_snapshot_sent(&addr("b"), 9, ok);
    }
    a.on_snapshot_sent(&addr("x"), 9, true);
    let pr = &a.progress[&addr("b")];
    assert_eq!((pr.state, pr.match_index), (ProgressState::Replicate, 11));
    assert!(a.take_ready().is_empty());

    let (mut a, _) = leader_with_c_behind();
    a.step(env(
        "b",
        "a",
        3,
        Message::Heartbeat {
            leader_commit: 0,
            read_ctx: 0,
        },
    ))
    .unwrap();
    assert_eq!(a.role(), Role::Follower);
    let _ = a.take_ready();
    a.on_snapshot_sent(&addr("c"), 11, true);
    let rd = a.take_ready();
    assert!(
        rd.messages.is_empty() && rd.after_persist.is_empty() && rd.snapshots.is_empty(),
        "a follower acted on a stream report: {rd:?}"
    );
    assert!(a.status().followers.is_empty());
}

// ---------------------------------------------------------------- the follower

#[test]
fn offers_from_another_leader_of_the_term_a_stale_term_or_to_the_leader_are_refused() {
    let mut b = follower(3, 2);
    let point = LogId::new(3, 1);
    // Not refused for being outside b's configuration (a follower's may lag the leader's;
    // the cluster secret keeps strangers out), but a leads term 2.
    let err = b
        .offer_snapshot(&addr("x"), 2, point, b.peer_set().clone())
        .unwrap_err();
    assert!(err.contains("which a leads"), "{err}");
    let err = b
        .offer_snapshot(&addr("a"), 2, point, crate::raft::PeerSet::default())
        .unwrap_err();
    assert!(err.contains("configuration"), "{err}");
    let err = b
        .offer_snapshot(&addr("a"), 1, point, b.peer_set().clone())
        .unwrap_err();
    assert!(err.contains("stale"), "{err}");
    assert_eq!((b.term(), b.commit_index()), (2, 2));
    let rd = b.take_ready();
    assert!(rd.install.is_none() && rd.hard_state.is_none());

    let mut a = leader(3);
    let err = a
        .offer_snapshot(&addr("b"), 2, LogId::new(4, 2), a.peer_set().clone())
        .unwrap_err();
    assert!(err.contains("which a leads"), "{err}");
    assert_eq!(a.role(), Role::Leader);
    assert_eq!(a.log_start(), LogId::ZERO);
    assert!(a.take_ready().install.is_none());
}

#[test]
fn an_offer_of_a_newer_term_or_from_this_terms_leader_makes_the_receiver_follow_its_sender() {
    // A leader of term 2 hears of term 5.
    let mut a = leader(3);
    assert_eq!(
        a.offer_snapshot(&addr("c"), 5, LogId::new(9, 4), a.peer_set().clone()),
        Ok(true)
    );
    assert_eq!(
        (a.role(), a.term(), a.leader()),
        (Role::Follower, 5, Some(&addr("c")))
    );
    assert!(a.status().followers.is_empty());
    let rd = a.take_ready();
    assert_eq!(
        rd.hard_state,
        Some(hs(5, None)),
        "the new term is persisted"
    );
    assert_eq!(
        rd.install,
        Some(InstallPoint {
            point: LogId::new(9, 4),
            reset_log: true
        })
    );

    // A candidate of term 2 hears from that term's leader.
    let log = vec![noop(1, 1)];
    let mut b = RaftCore::new(config("b", 3), hs(1, None), LogId::ZERO, log);
    b.tick(2 * ET);
    b.step(env("c", "b", 2, Message::PreVoteResp { granted: true }))
        .unwrap();
    assert_eq!((b.role(), b.term()), (Role::Candidate, 2));
    assert_eq!(
        b.offer_snapshot(&addr("a"), 2, LogId::new(5, 2), b.peer_set().clone()),
        Ok(true)
    );
    assert_eq!(
        (b.role(), b.term(), b.leader()),
        (Role::Follower, 2, Some(&addr("a")))
    );
}

#[test]
fn an_offer_at_or_below_the_commit_index_is_not_needed_and_changes_nothing() {
    let mut b = follower(5, 4);
    for index in [4, 2] {
        assert_eq!(
            b.offer_snapshot(&addr("a"), 2, LogId::new(index, 1), b.peer_set().clone()),
            Ok(false)
        );
    }
    let rd = b.take_ready();
    assert!(rd.install.is_none() && rd.committed.is_empty() && rd.entries.is_empty());
    assert_eq!(
        (b.log_start(), b.commit_index(), b.last_index()),
        (LogId::ZERO, 4, 5)
    );
}

#[test]
fn a_log_holding_the_point_keeps_what_follows_it() {
    let mut b = follower(8, 2);
    assert_eq!(
        b.offer_snapshot(&addr("a"), 2, LogId::new(5, 1), b.peer_set().clone()),
        Ok(true)
    );
    let rd = b.take_ready();
    assert_eq!(
        rd.install,
        Some(InstallPoint {
            point: LogId::new(5, 1),
            reset_log: false
        })
    );
    assert!(rd.entries.is_empty() && rd.truncate_from.is_none());
    assert!(
        rd.committed.is_empty(),
        "entries up to the point are in the snapshot: {:?}",
        rd.committed
    );
    assert_eq!(
        (b.log_start(), b.commit_index(), b.last_index()),
        (LogId::new(5, 1), 5, 8)
    );

    // The entries after it stay, durable, and are applied once the leader commits them.
    b.step(append(LogId::new(8, 1), vec![], 8)).unwrap();
    assert_eq!(indices(&b.take_ready().committed), [6, 7, 8]);
}

#[test]
fn a_log_without_the_point_is_reset() {
    // Shorter than the point.
    let mut b = follower(3, 2);
    assert_eq!(
        b.offer_snapshot(&addr("a"), 2, LogId::new(10, 2), b.peer_set().clone()),
        Ok(true)
    );
    let rd = b.take_ready();
    let reset = Some(InstallPoint {
        point: LogId::new(10, 2),
        reset_log: true,
    });
    assert_eq!(rd.install, reset);
    assert!(rd.entries.is_empty() && rd.truncate_from.is_none() && rd.committed.is_empty());
    assert_eq!(
        (b.log_start(), b.commit_index(), b.last_index()),
        (LogId::new(10, 2), 10, 10)
    );

    // Long enough, but of another term there: a divergent, uncommitted suffix.
    let mut b = follower(8, 2);
    assert_eq!(
        b.offer_snapshot(&addr("a"), 2, LogId::new(6, 2), b.peer_set().clone()),
        Ok(true)
    );
    let rd = b.take_ready();
    assert_eq!(rd.install.map(|i| i.reset_log), Some(true));
    assert!(rd.entries.is_empty() && rd.committed.is_empty());
    assert_eq!(
        (b.last_index(), b.term_at(6), b.term_at(7)),
        (6, Some(2), None)
    );
}

#[test]
fn entries_after_an_installed_point_are_accepted_and_committed() {
    let mut b = follower(3, 2);
    assert_eq!(
        b.offer_snapshot(&addr("a"), 2, LogId::new(10, 2), b.peer_set().clone()),
        Ok(true)
    );
    assert!(b.take_ready().install.is_some());

    let e12 = Entry {
        index: 12,
        term: 2,
        command: publish("k", 1),
    };
    b.step(append(LogId::new(10, 2), vec![noop(11, 2), e12], 12))
        .unwrap();
    let rd = b.take_ready();
    assert!(rd.install.is_none(), "installed once");
    assert_eq!(indices(&rd.entries), [11, 12]);
    // Committed by the leader: applied at once (the shell applies them after the install).
    assert_eq!(indices(&rd.committed), [11, 12]);
    assert_eq!(rd.committed[1].command, publish("k", 1));
    assert!(matches!(
        rd.after_persist[..],
        [Envelope {
            msg: Message::AppendResp {
                success: true,
                index: 12,
                ..
            },
            ..
        }]
    ));
    b.on_persisted(LogId::new(12, 2));
    assert!(b.take_ready().committed.is_empty(), "handed out once");

    // An Append from before the point is answered with what is committed.
    b.step(append(LogId::new(4, 1), vec![noop(5, 1)], 12))
        .unwrap();
    assert!(matches!(
        b.take_ready().after_persist[..],
        [Envelope {
            msg: Message::AppendResp {
                success: true,
                index: 12,
                ..
            },
            ..
        }]
    ));
}

/// The driver takes one `Ready` for a whole batch of inputs, so an Append and a snapshot
/// offer can arrive together, before the Append's entries were handed to the shell. The
/// core kept its log (`reset_log: false`) because it held the point, but the shell's log
/// did not: it ended at 5, could not be compacted to 7, and entries 8 and 9 were appended
/// after a gap (or, with a truncation pending below the point, the driver panicked looking
/// up the term before it). Whether the shell may compact to the point depends on what was
/// handed to it, not on what the core holds.
#[test]
fn regression_an_offer_arriving_with_entries_not_yet_handed_out_reset_the_shells_log() {
    let mut b = follower(5, 2);
    let entries = (6..=9).map(|i| noop(i, 2)).collect();
    b.step(append(LogId::new(5, 1), entries, 2)).unwrap();
    assert_eq!(
        b.offer_snapshot(&addr("a"), 2, LogId::new(7, 2), b.peer_set().clone()),
        Ok(true)
    );
    let rd = b.take_ready();
    assert_eq!(
        rd.install,
        Some(InstallPoint {
            point: LogId::new(7, 2),
            reset_log: true
        }),
        "the shell's log does not hold 7"
    );
    assert!(rd.truncate_from.is_none());
    assert_eq!(
        indices(&rd.entries),
        [8, 9],
        "what follows the point is kept"
    );
    // The acknowledgement of 9 is still true once this Ready is durable.
    assert!(matches!(
        rd.after_persist[..],
        [Envelope {
            msg: Message::AppendResp {
                success: true,
                index: 9,
                ..
            },
            ..
        }]
    ));
    assert_eq!((b.log_start(), b.last_index()), (LogId::new(7, 2), 9));
    assert_eq!(b.status().stable_index, 7, "8 and 9 are not durable yet");

    // A truncation not handed out yet, below the point.
    let mut b = follower(8, 2);
    let entries = (5..=9).map(|i| noop(i, 2)).collect();
    b.step(append(LogId::new(4, 1), entries, 2)).unwrap();
    assert_eq!(
        b.offer_snapshot(&addr("a"), 2, LogId::new(7, 2), b.peer_set().clone()),
        Ok(true)
    );
    let rd = b.take_ready();
    assert_eq!(rd.install.map(|i| i.reset_log), Some(true));
    assert!(
        rd.truncate_from.is_none(),
        "a truncation below the point: {:?}",
        rd.truncate_from
    );
    assert_eq!(indices(&rd.entries), [8, 9]);
    assert_eq!(rd.entries[0].term, 2);
}
