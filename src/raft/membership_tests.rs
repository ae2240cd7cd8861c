//! Scenario tests of configuration changes: learners that catch up and are promoted, the
//! leader's refusals, a leader that removes itself, removed members that cannot disrupt, and
//! what followers refuse. The simulator in `tests/sim.rs` changes members under faults.

use super::tests::{addr, config, publish, Cluster, ET, HB};
use super::*;
use crate::raft::{PeerChange, PeerSet};

/// A member started with `--join`: no configuration, an empty log.
fn joining(id: &str) -> RaftCore {
    let mut c = config(id, 0);
    c.peers = PeerSet::default();
    RaftCore::new(c, HardState::default(), LogId::ZERO, vec![])
}

fn add(peer: &str, promote: bool) -> PeerChange {
    PeerChange::AddLearner {
        peer: addr(peer),
        promote,
    }
}

fn voters(c: &mut Cluster, id: &str) -> Vec<String> {
    c.core(id)
        .peer_set()
        .voters
        .iter()
        .map(|p| p.0.clone())
        .collect()
}

/// A three-member cluster led by a, with its no-op committed.
fn led_by_a() -> Cluster {
    let mut c = Cluster::new(3);
    c.elect("a");
    c.deliver();
    c
}

#[test]
fn a_learner_catches_up_counts_for_nothing_until_promoted_then_counts() {
    let mut c = led_by_a();
    for i in 0..3 {
        c.core("a").propose(vec![publish("k", i)]).unwrap();
    }
    c.deliver();
    c.cores.insert(addr("d"), joining("d"));
    c.core("a").propose_change(add("d", false)).unwrap();
    c.run(3 * HB);
    let last = c.core("a").last_index();
    assert_eq!(c.core("d").last_index(), last, "the learner caught up");
    assert!(c.core("d").peer_set().is_learner(&addr("d")));
    assert_eq!(c.core("d").commit_index(), c.core("a").commit_index());

    // A learner never campaigns, however long it hears nothing.
    c.isolated.insert(addr("d"));
    c.run(10 * ET);
    assert_eq!(c.core("d").role(), Role::Follower);
    assert_eq!(c.core("d").term(), c.core("a").term());
    c.isolated.clear();
    c.run(3 * HB);

    // Its acknowledgement does not commit: with b and c cut off, a and d are no majority.
    c.isolated.extend([addr("b"), addr("c")]);
    let at = c.core("a").propose(vec![publish("k", 9)]).unwrap();
    c.deliver();
    assert_eq!(c.core("d").last_index(), at.index);
    assert!(c.core("a").commit_index() < at.index, "a learner counted");
    c.isolated.clear();
    c.run(3 * HB);
    assert_eq!(c.core("a").commit_index(), at.index);

    c.core("a")
        .propose_change(PeerChange::Promote { peer: addr("d") })
        .unwrap();
    c.run(3 * HB);
    assert_eq!(voters(&mut c, "d"), ["a", "b", "c", "d"]);
    // Now it counts: with c and b cut off, a and d are two of four, no majority; with only
    // c cut off, a, b and d are.
    c.isolated.extend([addr("b"), addr("c")]);
    let at = c.core("a").propose(vec![publish("k", 10)]).unwrap();
    c.deliver();
    assert!(c.core("a").commit_index() < at.index);
    c.isolated.remove(&addr("b"));
    c.run(2 * HB);
    assert_eq!(
        c.core("a").commit_index(),
        at.index,
        "d's acknowledgement counts"
    );
}

#[test]
fn a_learner_added_for_it_is_promoted_once_caught_up() {
    let mut c = led_by_a();
    c.cores.insert(addr("d"), joining("d"));
    c.core("a").propose_change(add("d", true)).unwrap();
    c.run(5 * HB);
    assert_eq!(voters(&mut c, "a"), ["a", "b", "c", "d"]);
    assert_eq!(voters(&mut c, "d"), ["a", "b", "c", "d"]);
    assert!(c.core("a").peer_set().auto_promote.is_empty());

    // Without --auto-promote the learner waits for an operator.
    let mut c = led_by_a();
    c.core("a").cfg.auto_promote = false;
    c.cores.insert(addr("d"), joining("d"));
    c.core("a").propose_change(add("d", true)).unwrap();
    c.run(5 * HB);
    assert!(c.core("a").peer_set().is_learner(&addr("d")));
}

#[test]
fn one_change_at_a_time_and_only_after_the_leader_committed_in_its_term() {
    // Elected, but no acknowledgement of its no-op arrives: nothing of its term commits.
    let mut c = Cluster::new(3);
    c.drop_if = Some(|e| matches!(e.msg, Message::AppendResp { .. }));
    c.elect("a");
    let early = c.core("a").propose_change(add("d", false));
    assert!(
        matches!(&early, Err(ChangeError::Busy(m)) if m.contains("not committed an entry of its term")),
        "{early:?}"
    );
    let mut c = led_by_a();
    c.cores.insert(addr("d"), joining("d"));
    c.cores.insert(addr("e"), joining("e"));
    c.core("a").propose_change(add("d", false)).unwrap();
    let second = c.core("a").propose_change(add("e", false));
    assert!(
        matches!(&second, Err(ChangeError::Busy(m)) if m.contains("not committed yet")),
        "{second:?}"
    );
    c.deliver();
    c.core("a").propose_change(add("e", false)).unwrap();
    let not_leader = c.core("b").propose_change(add("f", false));
    assert_eq!(
        not_leader,
        Err(ChangeError::NotLeader {
            leader: Some(addr("a"))
        })
    );
}

#[test]
fn a_change_that_would_leave_no_reachable_majority_is_refused() {
    let mut c = led_by_a();
    c.isolated.insert(addr("c"));
    c.run(2 * ET);
    assert_eq!(c.core("a").role(), Role::Leader, "a and b are a majority");
    // Without b, a and the unreachable c: one of two voters reachable.
    let r = c
        .core("a")
        .propose_change(PeerChange::Remove { peer: addr("b") });
    assert!(
        matches!(&r, Err(ChangeError::Refused(m)) if m.contains("1 of its 2 voters would be reachable")),
        "{r:?}"
    );
    // Removing the unreachable one leaves a and b: fine.
    c.core("a")
        .propose_change(PeerChange::Remove { peer: addr("c") })
        .unwrap();
    c.run(2 * HB);
    assert_eq!(voters(&mut c, "b"), ["a", "b"]);
    // Promoting a learner that is far behind is refused, with its lag.
    c.cores.insert(addr("d"), joining("d"));
    c.isolated.insert(addr("d"));
    c.core("a").propose_change(add("d", false)).unwrap();
    c.run(2 * HB);
    let r = c
        .core("a")
        .propose_change(PeerChange::Promote { peer: addr("d") });
    assert!(
        matches!(&r, Err(ChangeError::Refused(m)) if m.contains("d")),
        "{r:?}"
    );
    // Changes that do not fit the configuration.
    let r = c.core("a").propose_change(add("b", false));
    assert!(
        matches!(&r, Err(ChangeError::Refused(m)) if m.contains("already a voter")),
        "{r:?}"
    );
}

#[test]
fn a_leader_that_removes_itself_commits_it_hands_over_and_never_campaigns_again() {
    let mut c = led_by_a();
    c.tolerate_refusals = true;
    c.core("a").propose(vec![publish("k", 1)]).unwrap();
    c.deliver();
    let at = c
        .core("a")
        .propose_change(PeerChange::Remove { peer: addr("a") })
        .unwrap();
    c.run(ET);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    assert_ne!(leaders[0], addr("a"), "the removed leader stepped down");
    let new = leaders[0].0.clone();
    assert!(c.core(&new).commit_index() >= at.index);
    assert_eq!(voters(&mut c, &new), ["b", "c"]);
    assert!(!c.core("a").may_campaign());
    // It handed over at once rather than leaving the others to time out.
    assert!(c
        .sent
        .iter()
        .any(|e| e.from == addr("a") && e.msg == Message::TimeoutNow));
    let term = c.core(&new).term();
    c.run(20 * ET);
    assert_eq!(c.core("a").role(), Role::Follower);
    assert_eq!(
        c.core(&new).term(),
        term,
        "the removed member disrupted nobody"
    );
    assert_eq!(c.leaders(), vec![addr(&new)]);
}

#[test]
fn a_removed_member_that_missed_its_removal_cannot_disrupt_or_lead() {
    let mut c = led_by_a();
    c.tolerate_refusals = true;
    c.isolated.insert(addr("c"));
    c.run(2 * ET);
    c.core("a")
        .propose_change(PeerChange::Remove { peer: addr("c") })
        .unwrap();
    c.run(2 * HB);
    assert_eq!(voters(&mut c, "a"), ["a", "b"]);
    let term = c.core("a").term();
    // c comes back believing it is a voter of a, b, c; its elections go nowhere.
    c.isolated.clear();
    c.run(20 * ET);
    assert_eq!(c.leaders(), vec![addr("a")]);
    assert_eq!(c.core("a").term(), term);
    assert!(c
        .refused
        .iter()
        .any(|(e, why)| e.from == addr("c") && why.contains("not another member")));
}

#[test]
fn a_follower_refuses_a_configuration_that_changes_two_voters_at_once() {
    let mut c = led_by_a();
    let mut b = c.cores.remove(&addr("b")).unwrap();
    let (last, term) = (b.last_index(), b.term());
    let two = PeerSet::of_voters([addr("a"), addr("d"), addr("e")]);
    let append = Envelope {
        from: addr("a"),
        to: addr("b"),
        term,
        msg: Message::Append {
            prev_log_index: last,
            prev_log_term: term,
            entries: vec![Entry {
                index: last + 1,
                term,
                command: Command::Config { peers: two },
            }],
            leader_commit: last,
        },
    };
    let r = b.step(append).unwrap_err();
    assert!(r.reason.contains("one at a time"), "{}", r.reason);
    assert_eq!(b.last_index(), last, "nothing appended");
}

#[test]
fn a_configuration_truncated_away_is_no_longer_in_force() {
    let mut c = led_by_a();
    c.cores.insert(addr("d"), joining("d"));
    c.isolated.extend([addr("b"), addr("c"), addr("d")]);
    // Appended on a alone, never committed.
    c.core("a").propose_change(add("d", false)).unwrap();
    c.deliver();
    assert!(c.core("a").peer_set().is_learner(&addr("d")));
    // b wins a later term without it and overwrites a's suffix.
    c.isolated = [addr("a"), addr("d")].into();
    c.run(4 * ET);
    let leader = c.leaders().into_iter().find(|l| *l != addr("a")).unwrap();
    c.isolated.clear();
    c.run(4 * ET);
    assert!(c.leaders().contains(&leader));
    assert!(
        !c.core("a").peer_set().contains(&addr("d")),
        "the truncated change"
    );
    assert_eq!(voters(&mut c, "a"), ["a", "b", "c"]);
}

#[test]
fn a_sole_voter_sends_nothing_of_its_new_term_before_that_term_is_durable() {
    let mut c = config("a", 1);
    c.peers.learners.insert(addr("b"));
    let mut a = RaftCore::new(c, HardState::default(), LogId::ZERO, vec![]);
    a.tick(1);
    assert_eq!(a.role(), Role::Leader);
    let rd = a.take_ready();
    assert_eq!(rd.hard_state.as_ref().map(|h| h.term), Some(1));
    assert!(
        rd.messages.iter().all(|m| m.term < 1),
        "sent before its term was durable: {:?}",
        rd.messages
    );
    assert!(rd.after_persist.iter().any(|m| m.to == addr("b")));
    // Once an entry of the term is durable, the term is too.
    a.on_persisted(LogId::new(1, 1));
    a.tick(HB);
    let rd = a.take_ready();
    assert!(rd.messages.iter().any(|m| m.to == addr("b")));
}
