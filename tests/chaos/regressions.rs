//! Regression scenarios for the known failures of Nacos 1.x's home-grown Raft
//! (`../shared/reference/nacos-1x-raft.md` §13), each on a real cluster, each ending with the
//! suite's full end-of-run checks (`run::finish`: convergence, datum files, identical logs that
//! agree with every acknowledged answer, linearizable history).
//!
//! A scenario that needs partitions says so and returns when network namespaces are not
//! available (`CHAOS_NETNS=require` makes that a failure instead).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nacos_raft::raft::Command;
use nacos_raft::wire::Role;

use crate::cluster::{ChaosCluster, NetChoice, Timings};
use crate::common::poll_until;
use crate::history::{self, Kind, Outcome, Record};
use crate::net::{Netns, Rules};
use crate::run::{conclude, finish, request_timeout, Finish};
use crate::serial;
use crate::workload::{self, Sender, WorkloadConfig};

const LEADER_DEADLINE: Duration = Duration::from_secs(20);
/// Bound of the linearizability search for these short histories.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

fn start(n: usize) -> ChaosCluster {
    let c = ChaosCluster::start(n, Timings::default(), NetChoice::Auto);
    eprintln!("chaos: {}", c.network_note);
    c
}

fn reproduce(name: &str) -> String {
    format!("cargo test --test chaos -- --exact regressions::{name} --nocapture")
}

/// False (after saying why, loudly) when the cluster has no network namespaces.
fn partitions_available(c: &ChaosCluster, test: &str) -> bool {
    if c.has_partitions() {
        return true;
    }
    eprintln!(
        "chaos: SKIPPED {test}: it needs network partitions, which are unavailable here ({})",
        c.network_note
    );
    false
}

fn net(c: &ChaosCluster) -> &Netns {
    c.net.as_ref().expect("checked by partitions_available")
}

fn others(c: &ChaosCluster, i: usize) -> Vec<usize> {
    (0..c.len()).filter(|&j| j != i).collect()
}

/// A write that must succeed (the cluster is healthy); a failure is a problem, recorded.
fn must_write(
    s: &Sender,
    key: &str,
    value: &str,
    epoch: Instant,
    records: &mut Vec<Record>,
    problems: &mut Vec<String>,
) -> Record {
    let r = s.write(key, value, epoch);
    if r.outcome != Outcome::Ok {
        problems.push(format!(
            "a write in a healthy cluster failed: {}",
            history::brief(&r)
        ));
    }
    records.push(r.clone());
    r
}

/// Waits until every running node's own replica holds `key` at `timestamp`.
fn wait_replicated(c: &mut ChaosCluster, key: &str, timestamp: u64) {
    for i in 0..c.len() {
        if !c.nodes[i].is_live() {
            continue;
        }
        let client = c.nodes[i].client(Duration::from_secs(1));
        let ok = poll_until(Duration::from_secs(10), || {
            client
                .get(key, true)
                .ok()
                .filter(|g| g.timestamp == timestamp)
        });
        assert!(
            ok.is_some(),
            "node {i} never held {key} at timestamp {timestamp}\n{}",
            c.nodes[i].log_excerpt()
        );
    }
}

/// Nacos §13.1.4 (#785, #3652): a member cut off for a long time must not out-term the
/// cluster, and when it returns it must not cause an election or any unavailability: the term
/// and the leader stay the same and writes keep succeeding (pre-vote and check-quorum).
#[test]
fn a_long_partitioned_member_rejoins_without_an_election() {
    const NAME: &str = "a_long_partitioned_member_rejoins_without_an_election";
    let _serial = serial();
    let mut c = start(3);
    if !partitions_available(&c, NAME) {
        return;
    }
    let (leader, term) = c.wait_leader(LEADER_DEADLINE);
    let away = (leader + 1) % 3;
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let s = Sender::to_node(0, &c.nodes[leader].addr, request_timeout(&c));
        let stop = stop.clone();
        thread::spawn(move || {
            let mut out = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                out.push(s.write("steady", &format!("w-{n}"), epoch));
            }
            out
        })
    };
    net(&c)
        .apply(&Rules::partition(&[vec![away], others(&c, away)]))
        .expect("partition");
    // The partition's duration: 20 election timeouts, in which the cut-off member's election
    // timer fires again and again.
    thread::sleep(Duration::from_millis(20 * c.timings.election_ms));
    let away_view = c.nodes[away].status(Duration::from_secs(1));
    net(&c).heal().expect("heal");
    let leader_commit = c.nodes[leader]
        .status(Duration::from_secs(1))
        .map_or(0, |s| s.commit_index);
    let caught_up = poll_until(Duration::from_secs(10), || {
        c.nodes[away]
            .status(Duration::from_millis(500))
            .filter(|s| s.applied_index >= leader_commit)
    });
    // Writes go on after the rejoin: the window in which a disruptive return would show.
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let mut records = writer.join().expect("writer");

    let mut problems = Vec::new();
    match &away_view {
        Some(s) if s.term > term => problems.push(format!(
            "the cut-off member raised its term from {term} to {} while away (pre-vote must keep it)",
            s.term
        )),
        Some(_) => {}
        None => problems.push("the cut-off member did not answer /v1/status".into()),
    }
    if caught_up.is_none() {
        problems.push(format!(
            "the returning member did not catch up to index {leader_commit} within 10 s"
        ));
    }
    match c.agreed_leader() {
        Some(l) if l == (leader, term) => {}
        other => problems.push(format!(
            "the rejoin disturbed the cluster: leader and term were (node {leader}, {term}), now {other:?}: {}",
            c.views()
        )),
    }
    let failed: Vec<String> = records
        .iter()
        .filter(|r| r.outcome != Outcome::Ok)
        .take(3)
        .map(history::brief)
        .collect();
    if !failed.is_empty() {
        problems.push(format!("writes failed: {}", failed.join("; ")));
    }
    let (from, to) = (
        records.first().map_or(0, |r| r.return_ns),
        records.last().map_or(0, |r| r.return_ns),
    );
    let gap = history::write_gaps(&records, from, to)
        .first()
        .map_or(0, |&(a, b)| b - a);
    eprintln!(
        "chaos: {} writes, longest stretch without an acknowledged write {:.3} s",
        records.len(),
        gap as f64 / 1e9
    );
    if gap > Duration::from_secs(1).as_nanos() as u64 {
        problems.push(format!("writes stalled for {:.2} s", gap as f64 / 1e9));
    }
    let end = finish(
        &mut c,
        &mut records,
        &["steady".into()],
        epoch,
        CHECK_TIMEOUT,
    );
    report(end, &mut problems);
    conclude(&mut c, &problems, &reproduce(NAME));
}

/// Nacos §13.1.2-3 (#771, #2833, #3652, #6741): a leader cut off from the others keeps
/// receiving client writes; it must acknowledge none that the majority did not commit. Every
/// 200 (from either side) must be readable after healing, every definite failure absent; and
/// the old leader must step down (check-quorum).
#[test]
fn an_isolated_old_leader_acknowledges_nothing() {
    const NAME: &str = "an_isolated_old_leader_acknowledges_nothing";
    let _serial = serial();
    let mut c = start(3);
    if !partitions_available(&c, NAME) {
        return;
    }
    let (old, term) = c.wait_leader(LEADER_DEADLINE);
    let rest = others(&c, old);
    let epoch = Instant::now();
    net(&c)
        .apply(&Rules::partition(&[vec![old], rest.clone()]))
        .expect("partition");
    let isolated_at = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let timeout = request_timeout(&c);
    // Four clients that only know the old leader, two that only know the majority side;
    // every write has a key of its own, so each 200 can be checked on its own afterwards.
    let old_addr = vec![c.nodes[old].addr.clone()];
    let majority: Vec<String> = rest.iter().map(|&i| c.nodes[i].addr.clone()).collect();
    let targets = [
        old_addr.clone(),
        old_addr.clone(),
        old_addr.clone(),
        old_addr,
        majority.clone(),
        majority,
    ];
    let writers: Vec<_> = targets
        .into_iter()
        .enumerate()
        .map(|(t, addrs)| {
            let stop = stop.clone();
            let s = if addrs.len() == 1 {
                Sender::to_node(t as u64, &addrs[0], timeout)
            } else {
                Sender::to_any(t as u64, &addrs, timeout)
            };
            thread::spawn(move || {
                let mut out = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    out.push(s.write(&format!("iso-{t}-{n}"), &format!("v-{t}-{n}"), epoch));
                }
                out
            })
        })
        .collect();
    let mut problems = Vec::new();
    let step_down_bound = Duration::from_millis(10 * c.timings.election_ms);
    let stepped_down = poll_until(step_down_bound, || {
        c.nodes[old]
            .status(Duration::from_millis(300))
            .filter(|s| s.role != Role::Leader)
            .map(|_| isolated_at.elapsed())
    });
    match stepped_down {
        Some(t) => eprintln!("chaos: the isolated leader stepped down after {t:?}"),
        None => problems.push(format!(
            "the isolated leader still claimed leadership {step_down_bound:?} after losing its majority (check-quorum)"
        )),
    }
    let new_leader = poll_until(Duration::from_secs(10), || {
        rest.iter().copied().find(|&i| {
            c.nodes[i]
                .status(Duration::from_millis(300))
                .is_some_and(|s| s.role == Role::Leader && s.term > term)
        })
    });
    if new_leader.is_none() {
        problems.push("the majority side elected no leader within 10 s".into());
    }
    // The isolation's duration: long enough for several rounds of writes to reach the old
    // leader, before and after it steps down.
    thread::sleep(Duration::from_secs(4).saturating_sub(isolated_at.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let mut records: Vec<Record> = writers
        .into_iter()
        .flat_map(|h| h.join().expect("writer"))
        .collect();
    net(&c).heal().expect("heal");
    c.wait_leader(LEADER_DEADLINE);

    let reader = Sender::to_any(99, &c.addrs(), timeout);
    let writes: Vec<Record> = records.clone();
    let (mut acked_by_old, mut checked) = (0, 0);
    for w in &writes {
        if w.outcome == Outcome::Indeterminate {
            continue;
        }
        checked += 1;
        if w.outcome == Outcome::Ok && w.node == c.nodes[old].addr {
            acked_by_old += 1;
        }
        let r = reader.read(&w.key, epoch);
        let seen = r.value.clone();
        let ok = r.outcome == Outcome::Ok;
        records.push(r);
        match (w.outcome, ok, &seen) {
            (_, false, _) => problems.push(format!("could not read {} after healing", w.key)),
            (Outcome::Ok, true, s) if s != &w.value => problems.push(format!(
                "an acknowledged write is not readable after healing (read {s:?}): {}",
                history::brief(w)
            )),
            (Outcome::Fail, true, Some(_)) => problems.push(format!(
                "a write that failed took effect (read {seen:?}): {}",
                history::brief(w)
            )),
            _ => {}
        }
    }
    eprintln!(
        "chaos: {} writes ({} to the old leader); {checked} with a definite answer checked by reading; the old leader acknowledged {acked_by_old}",
        writes.len(),
        writes.iter().filter(|w| w.node == c.nodes[old].addr).count(),
    );
    let end = finish(&mut c, &mut records, &[], epoch, CHECK_TIMEOUT);
    report(end, &mut problems);
    conclude(&mut c, &problems, &reproduce(NAME));
}

/// Nacos §13.1.4-5 and §13.1.9: a key deleted while a member missed the delete (crashed, or
/// partitioned away) must never come back, whatever that member does next (restart, rejoin,
/// take part in the next election); and a key deleted and re-created (timestamp back to 1)
/// must not lose to the stale copy with a higher version.
#[test]
fn a_deleted_key_never_comes_back() {
    const NAME: &str = "a_deleted_key_never_comes_back";
    let _serial = serial();
    let mut c = start(3);
    let epoch = Instant::now();
    let timeout = request_timeout(&c);
    let any = Sender::to_any(0, &c.addrs(), timeout);
    let mut records = Vec::new();
    let mut problems = Vec::new();
    let mut keys = vec!["gone-crash".to_string(), "filler".to_string()];

    // Crash variant: the member that misses the delete is down.
    let (l, _) = c.wait_leader(LEADER_DEADLINE);
    for i in 1..=5 {
        must_write(
            &any,
            "gone-crash",
            &format!("a-{i}"),
            epoch,
            &mut records,
            &mut problems,
        );
    }
    wait_replicated(&mut c, "gone-crash", 5);
    let missed = (l + 1) % 3;
    c.nodes[missed].kill9();
    let d = any.delete("gone-crash", epoch);
    if d.existed != Some(true) {
        problems.push(format!(
            "the delete did not find the key: {}",
            history::brief(&d)
        ));
    }
    records.push(d);
    for i in 0..10 {
        must_write(
            &any,
            "filler",
            &format!("f-{i}"),
            epoch,
            &mut records,
            &mut problems,
        );
    }
    // Bring back the member that missed the delete and at once take away the leader, so the
    // next election happens while that member may still be behind.
    c.nodes[missed].start();
    c.wait_ready(missed);
    c.nodes[l].kill9();
    c.wait_leader(LEADER_DEADLINE);
    for i in 0..3 {
        if c.nodes[i].is_running() {
            records.push(Sender::to_node(1, &c.nodes[i].addr, timeout).read("gone-crash", epoch));
        }
    }
    c.nodes[l].start();
    c.wait_ready(l);

    // Partition variant: the member that misses the delete is cut off, and the key is
    // re-created meanwhile.
    if partitions_available(&c, &format!("{NAME} (partition part)")) {
        keys.push("gone-part".into());
        let (l2, _) = c.wait_leader(LEADER_DEADLINE);
        for i in 1..=5 {
            must_write(
                &any,
                "gone-part",
                &format!("b-{i}"),
                epoch,
                &mut records,
                &mut problems,
            );
        }
        wait_replicated(&mut c, "gone-part", 5);
        let cut = (l2 + 1) % 3;
        net(&c)
            .apply(&Rules::partition(&[vec![cut], others(&c, cut)]))
            .expect("partition");
        // Clients of the majority side only: the cut-off member could only time out.
        let majority: Vec<String> = others(&c, cut)
            .into_iter()
            .map(|i| c.nodes[i].addr.clone())
            .collect();
        let any = Sender::to_any(0, &majority, timeout);
        let d = any.delete("gone-part", epoch);
        if d.existed != Some(true) {
            problems.push(format!(
                "the delete did not find the key: {}",
                history::brief(&d)
            ));
        }
        records.push(d);
        let reborn = must_write(
            &any,
            "gone-part",
            "reborn",
            epoch,
            &mut records,
            &mut problems,
        );
        if reborn.outcome == Outcome::Ok && reborn.timestamp != Some(1) {
            problems.push(format!(
                "a re-created key must start again at timestamp 1 (Nacos rule): {}",
                history::brief(&reborn)
            ));
        }
        for i in 10..20 {
            must_write(
                &any,
                "filler",
                &format!("f-{i}"),
                epoch,
                &mut records,
                &mut problems,
            );
        }
        // Rejoin, and at once cut the leader off, so that the member holding the stale
        // version 5 takes part in the next election.
        net(&c)
            .apply(&Rules::partition(&[vec![l2], others(&c, l2)]))
            .expect("partition");
        poll_until(Duration::from_secs(10), || {
            others(&c, l2).into_iter().find(|&i| {
                c.nodes[i]
                    .status(Duration::from_millis(300))
                    .is_some_and(|s| s.role == Role::Leader)
            })
        });
        for i in others(&c, l2) {
            records.push(Sender::to_node(2, &c.nodes[i].addr, timeout).read("gone-part", epoch));
        }
        net(&c).heal().expect("heal");
        c.wait_leader(LEADER_DEADLINE);
    }

    let end = finish(&mut c, &mut records, &keys, epoch, CHECK_TIMEOUT);
    let end = report(end, &mut problems);
    if let Some(replica) = &end.replica {
        if let Some(v) = replica.get("gone-crash") {
            problems.push(format!("the deleted key gone-crash came back: {v:?}"));
        }
        if keys.iter().any(|k| k == "gone-part") {
            match replica.get("gone-part") {
                Some((v, 1, _)) if v == "reborn" => {}
                other => problems.push(format!(
                    "gone-part should be the re-created \"reborn\" at timestamp 1, not {other:?}"
                )),
            }
        }
    }
    conclude(&mut c, &problems, &reproduce(NAME));
}

/// Raft §5.3 against Nacos §13.1.2 (#2833: writes applied before replication, never rolled
/// back): an old leader that appended writes it could not commit, while the others elect a new
/// leader and commit different values, must drop that suffix when it returns, and converge.
/// The old leader is cut off by a partition, or, without namespaces, by killing both followers
/// (then it is stopped while they restart and elect). A SIGSTOP of the followers would not do:
/// the old leader's appends wait in their sockets and arrive after they resume.
#[test]
fn a_divergent_uncommitted_suffix_is_repaired() {
    const NAME: &str = "a_divergent_uncommitted_suffix_is_repaired";
    let _serial = serial();
    let mut c = start(3);
    let epoch = Instant::now();
    let timeout = request_timeout(&c);
    let keys: Vec<String> = (0..3).map(|i| format!("div-{i}")).collect();
    let mut records = Vec::new();
    let mut problems = Vec::new();
    let (old, term) = c.wait_leader(LEADER_DEADLINE);
    let rest = others(&c, old);
    let any = Sender::to_any(0, &c.addrs(), timeout);
    for (i, k) in keys.iter().enumerate() {
        must_write(
            &any,
            k,
            &format!("base-{i}"),
            epoch,
            &mut records,
            &mut problems,
        );
    }
    let partitioned = c.has_partitions();
    if partitioned {
        net(&c)
            .apply(&Rules::partition(&[vec![old], rest.clone()]))
            .expect("partition");
    } else {
        eprintln!("chaos: {NAME}: no partitions here; killing both followers instead");
        for &i in &rest {
            c.nodes[i].kill9();
        }
    }
    // Writes the old leader can append but not commit: sent at once, from several clients,
    // before check-quorum makes it step down.
    let old_writes: Vec<_> = (0..6)
        .map(|t| {
            let s = Sender::to_node(10 + t, &c.nodes[old].addr, timeout);
            let key = keys[t as usize % keys.len()].clone();
            thread::spawn(move || s.write(&key, &format!("old-{t}"), epoch))
        })
        .collect();
    let diverged = poll_until(Duration::from_secs(2), || {
        c.nodes[old]
            .status(Duration::from_millis(300))
            .filter(|s| s.last_log_index > s.commit_index)
    });
    match &diverged {
        Some(s) => eprintln!(
            "chaos: the old leader holds an uncommitted suffix: last log index {}, commit index {}",
            s.last_log_index, s.commit_index
        ),
        None => {
            problems.push("set-up failed: the old leader never held an uncommitted suffix".into())
        }
    }
    // Every old write is answered before anything else happens. One answered with a failure
    // must never commit. One the client gave up on (no answer in time) may still: its request
    // can reach the old leader late (TCP delivers it after the partition heals), which then
    // forwards it to the new leader, legitimately. The checker settles those against the log.
    let mut unanswered = Vec::new();
    for h in old_writes {
        let r = h.join().expect("old writer");
        match r.outcome {
            Outcome::Ok => problems.push(format!(
                "the cut-off old leader acknowledged a write: {}",
                history::brief(&r)
            )),
            Outcome::Indeterminate => unanswered.extend(r.value.clone()),
            Outcome::Fail => {}
        }
        records.push(r);
    }
    if !partitioned {
        c.nodes[old].pause();
        for &i in &rest {
            c.nodes[i].start();
        }
    }
    let new_leader = poll_until(Duration::from_secs(10), || {
        rest.iter().copied().find(|&i| {
            c.nodes[i]
                .status(Duration::from_millis(300))
                .is_some_and(|s| s.role == Role::Leader && s.term > term)
        })
    });
    match new_leader {
        Some(n) => {
            let s = Sender::to_node(1, &c.nodes[n].addr, timeout);
            for (i, k) in keys.iter().enumerate() {
                must_write(
                    &s,
                    k,
                    &format!("new-{i}"),
                    epoch,
                    &mut records,
                    &mut problems,
                );
            }
        }
        None => problems.push("the others elected no new leader within 10 s".into()),
    }
    if partitioned {
        net(&c).heal().expect("heal");
    } else {
        c.nodes[old].resume();
    }
    c.wait_leader(LEADER_DEADLINE);

    let end = finish(&mut c, &mut records, &keys, epoch, CHECK_TIMEOUT);
    let end = report(end, &mut problems);
    if let Some(replica) = &end.replica {
        for (i, k) in keys.iter().enumerate() {
            match replica.get(k) {
                Some((v, _, _)) if *v == format!("new-{i}") => {}
                Some((v, _, _))
                    if v.as_str()
                        .is_some_and(|v| unanswered.iter().any(|u| u == v)) =>
                {
                    eprintln!("chaos: {k} ends as {v}, an old write its client gave up on, delivered late")
                }
                other => problems.push(format!("{k} should be new-{i}, not {other:?}")),
            }
        }
    }
    if let Some(log) = &end.log {
        for e in &log.entries {
            if let Command::Publish { key, value, .. } = &e.command {
                if value
                    .as_str()
                    .is_some_and(|v| v.starts_with("old-") && !unanswered.iter().any(|u| u == v))
                {
                    problems.push(format!(
                        "the old leader's failed write of {key} survived at index {}",
                        e.index
                    ));
                }
            }
        }
    }
    conclude(&mut c, &problems, &reproduce(NAME));
}

/// Nacos §13.3 (terms and votes not persisted, datum files overwritten in place): kill -9 of
/// every member at once, under load, and again right after the restart, must keep every
/// acknowledged write.
#[test]
fn a_full_cluster_restart_keeps_every_acknowledged_write() {
    const NAME: &str = "a_full_cluster_restart_keeps_every_acknowledged_write";
    let _serial = serial();
    let mut c = start(3);
    c.wait_leader(LEADER_DEADLINE);
    let timeout = request_timeout(&c);
    let keys: Vec<String> = (0..4).map(|i| format!("restart-{i}")).collect();
    let wl = WorkloadConfig {
        threads: 4,
        keys: keys.clone(),
        timeout,
        write_pct: 60,
        delete_pct: 10,
        cas_pct: 0,
        any_pct: 20,
        think: Duration::ZERO,
    };
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let workers = workload::spawn(&wl, &c.addrs(), epoch, 7, &stop);
    // One more client writes keys of their own, once each, to check one by one afterwards.
    let audit = {
        let s = Sender::to_any(100, &c.addrs(), timeout);
        let stop = stop.clone();
        thread::spawn(move || {
            let mut out = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let r = s.write(&format!("audit-{n}"), &format!("a-{n}"), epoch);
                let failed = r.outcome == Outcome::Fail;
                out.push(r);
                if failed {
                    // Back off while the cluster is down (load shaping, not waiting).
                    thread::sleep(Duration::from_millis(20));
                }
            }
            out
        })
    };
    // The load's duration before the crash.
    thread::sleep(Duration::from_secs(3));
    for n in &mut c.nodes {
        n.kill9();
    }
    // The outage's duration, with the clients still trying.
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let mut records: Vec<Record> = workers
        .into_iter()
        .flat_map(|h| h.join().expect("client"))
        .collect();
    let audits = audit.join().expect("audit client");
    records.extend(audits.iter().cloned());
    for round in 0..2 {
        for i in 0..c.len() {
            c.nodes[i].start();
        }
        for i in 0..c.len() {
            c.wait_ready(i);
        }
        c.wait_leader(LEADER_DEADLINE);
        if round == 0 {
            // A second crash of everyone right after recovery: terms and votes must be durable.
            for n in &mut c.nodes {
                n.kill9();
            }
        }
    }
    let mut problems = Vec::new();
    let reader = Sender::to_any(101, &c.addrs(), timeout);
    let acked = audits.iter().filter(|a| a.outcome == Outcome::Ok).count();
    for a in audits
        .iter()
        .filter(|a| a.outcome != Outcome::Indeterminate)
    {
        let r = reader.read(&a.key, epoch);
        match (a.outcome, r.outcome, &r.value) {
            (_, Outcome::Ok, v) if a.outcome == Outcome::Ok && v != &a.value => {
                problems.push(format!(
                    "acknowledged write lost by the restart (read {v:?}): {}",
                    history::brief(a)
                ))
            }
            (Outcome::Fail, Outcome::Ok, Some(_)) => problems.push(format!(
                "a write that failed took effect: {}",
                history::brief(a)
            )),
            (_, Outcome::Ok, _) => {}
            _ => problems.push(format!("could not read {} after the restart", a.key)),
        }
        records.push(r);
    }
    eprintln!(
        "chaos: {} requests before the crash; {acked} acknowledged audit writes checked one by one",
        records.len()
    );
    let writes_ok = records
        .iter()
        .filter(|r| r.kind == Kind::Write && r.outcome == Outcome::Ok)
        .count();
    if writes_ok == 0 {
        problems.push("no write was acknowledged before the crash".into());
    }
    let end = finish(&mut c, &mut records, &keys, epoch, CHECK_TIMEOUT);
    report(end, &mut problems);
    conclude(&mut c, &problems, &reproduce(NAME));
}

/// Prints a scenario's closing report and moves its problems into `problems`; the rest of
/// `end` (the converged replica, the log) is handed back for the scenario's own checks.
fn report(mut end: Finish, problems: &mut Vec<String>) -> Finish {
    end.lines.iter().for_each(|l| eprintln!("chaos: {l}"));
    problems.append(&mut end.problems);
    end
}
