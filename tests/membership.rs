//! End-to-end tests of membership changes on real clusters: growing from three members to
//! five and back under continuous writes, replacing a member whose machine is gone, removing
//! the leader, finishing an interrupted replace, the refusals, and a joined member that
//! restarts. Every write is checked acknowledged and readable.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// The flags of a member started to join `cluster`, with the test timings.
fn join_args(cluster: &TestCluster) -> Vec<String> {
    [
        "--join",
        &cluster.endpoints(),
        "--heartbeat-interval-ms",
        TEST_HEARTBEAT_MS,
        "--election-timeout-ms",
        TEST_ELECTION_TIMEOUT_MS,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Starts a new member (not added yet) in the cluster's temp dir and returns its index.
fn start_joining(cluster: &mut TestCluster) -> usize {
    let addr = format!("127.0.0.1:{}", free_ports(1)[0]);
    let i = cluster.nodes.len();
    let args = join_args(cluster);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut node = TestNode::new(
        &addr,
        &cluster.dir.path().join(format!("node-{i}")),
        &cluster.dir.path().join(format!("node-{i}.log")),
        &args,
    );
    node.start();
    node.wait_ready(READY_DEADLINE);
    let s = node.status(T).expect("a joining member answers status");
    assert!(
        s.peers.is_empty() && !s.voter,
        "a member started with --join holds no configuration: {s:?}"
    );
    cluster.nodes.push(node);
    i
}

/// A client writing `w-<n>` keys one after another until stopped, through every endpoint
/// it is given; it records each failure and the longest write.
struct Writer {
    stop: Arc<AtomicBool>,
    done: thread::JoinHandle<WriterReport>,
}

struct WriterReport {
    acked: Vec<(String, u64)>,
    failures: Vec<String>,
    longest: Duration,
}

impl Writer {
    fn start(endpoints: Vec<String>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let done = thread::spawn(move || {
            let client = nacos_raft::client::Client::new(endpoints, T);
            let mut r = WriterReport {
                acked: Vec::new(),
                failures: Vec::new(),
                longest: Duration::ZERO,
            };
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                let key = format!("w-{}", n % 200);
                let began = Instant::now();
                match client.put(&key, json!(n)) {
                    Ok(_) => r.acked.push((key, n)),
                    Err(e) => r.failures.push(format!("{key}={n}: {e}")),
                }
                r.longest = r.longest.max(began.elapsed());
                n += 1;
            }
            r
        });
        Writer { stop, done }
    }

    fn finish(self) -> WriterReport {
        self.stop.store(true, Ordering::Relaxed);
        self.done.join().expect("writer thread")
    }
}

/// Every key's last acknowledged value is what a linearizable read through `endpoints`
/// returns.
fn check_acked(endpoints: Vec<String>, acked: &[(String, u64)]) {
    let mut last = std::collections::BTreeMap::new();
    for (k, v) in acked {
        last.insert(k.clone(), *v);
    }
    let client = nacos_raft::client::Client::new(endpoints, T);
    for (k, v) in last {
        let got = client
            .get(&k, false)
            .unwrap_or_else(|e| panic!("get {k}: {e}"));
        assert_eq!(
            got.value,
            json!(v),
            "{k}: the last acknowledged write is lost"
        );
    }
}

fn members_json(endpoints: &str) -> Value {
    let out = nacosctl_at(endpoints, &["-o", "json", "member", "list"]);
    assert_code(&out, 0);
    json(&out)
}

/// (addr, voter) of each member the leader lists, sorted.
fn roles(doc: &Value) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = doc["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["addr"].as_str().unwrap().to_string(),
                m["voter"].as_bool().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn voters_of(endpoints: &str) -> Vec<String> {
    roles(&members_json(endpoints))
        .into_iter()
        .filter(|(_, v)| *v)
        .map(|(a, _)| a)
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn grow_from_three_to_five_and_back_under_writes_without_a_failed_write() {
    let mut c = TestCluster::start(3, &[]);
    c.wait_for_leader(LEADER_DEADLINE);
    let original = c.endpoints();
    let writer = Writer::start(c.addrs());
    let d = start_joining(&mut c);
    let e = start_joining(&mut c);
    for i in [d, e] {
        let addr = c.nodes[i].addr.clone();
        let out = nacosctl_at(&original, &["member", "add", &addr, "--wait"]);
        assert_code(&out, 0);
        assert!(stdout(&out).contains("added"), "{}", describe(&out));
    }
    assert_eq!(voters_of(&original), sorted(c.addrs()));
    // The new members hold the configuration and the data, and `status` lists all five.
    let out = nacosctl_at(&original, &["-o", "json", "status"]);
    assert_code(&out, 0);
    assert_eq!(
        json(&out)["nodes"].as_array().unwrap().len(),
        5,
        "{}",
        describe(&out)
    );
    let out = nacosctl_at(&c.endpoints(), &["check"]);
    assert_code(&out, 0);

    // And back to three, removing the two new ones while writes go on.
    for i in [e, d] {
        let addr = c.nodes[i].addr.clone();
        let out = nacosctl_at(&original, &["member", "remove", &addr]);
        assert_code(&out, 0);
    }
    let report = writer.finish();
    assert!(
        report.failures.is_empty(),
        "writes failed during the changes: {:?}",
        report.failures
    );
    assert!(
        report.acked.len() > 20,
        "only {} writes",
        report.acked.len()
    );
    assert_eq!(voters_of(&original), sorted(c.addrs()[..3].to_vec()));
    // A removed member knows it: no configuration with itself, no vote.
    for i in [d, e] {
        let s = poll_until(T, || {
            c.nodes[i]
                .status(T)
                .filter(|s| !s.voter && !s.peers.contains(&c.nodes[i].addr))
        });
        assert!(
            s.is_some(),
            "{} does not know it was removed",
            c.nodes[i].addr
        );
    }
    check_acked(c.addrs()[..3].to_vec(), &report.acked);
    // `status` over all five endpoints follows the configuration: three members, healthy,
    // the two removed ones named and left out.
    let out = nacosctl_at(&c.endpoints(), &["-o", "json", "status"]);
    assert_code(&out, 0);
    assert_eq!(
        json(&out)["nodes"].as_array().unwrap().len(),
        3,
        "{}",
        describe(&out)
    );
    assert!(stderr(&out).contains("left out"), "{}", describe(&out));
}

#[test]
fn replace_a_member_whose_machine_is_gone_with_one_at_a_new_address() {
    let mut c = TestCluster::start(3, &[]);
    let leader = c.wait_for_leader(LEADER_DEADLINE);
    let gone = (leader + 1) % 3;
    let old = c.nodes[gone].addr.clone();
    let client = c.client(T);
    for i in 0..50 {
        client.put(&format!("before-{i}"), json!(i)).unwrap();
    }
    // The machine is gone: the process and its disk.
    c.nodes[gone].kill9();
    std::fs::remove_dir_all(&c.nodes[gone].data_dir).unwrap();
    let live: Vec<String> = (0..3)
        .filter(|&i| i != gone)
        .map(|i| c.nodes[i].addr.clone())
        .collect();
    let writer = Writer::start(live.clone());
    let n = start_joining(&mut c);
    let new = c.nodes[n].addr.clone();
    let eps = live.join(",");
    let out = nacosctl_at(&eps, &["-o", "json", "member", "replace", &old, &new]);
    assert_code(&out, 0);
    let doc = json(&out);
    assert_eq!(doc["steps"], json!(["add", "promote", "remove"]), "{doc}");
    let mut want = live.clone();
    want.push(new.clone());
    assert_eq!(voters_of(&eps), sorted(want.clone()));
    let report = writer.finish();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    eprintln!(
        "replace under load: {} writes, the longest took {:?}",
        report.acked.len(),
        report.longest
    );
    // Run again: everything is done already.
    let out = nacosctl_at(&eps, &["-o", "json", "member", "replace", &old, &new]);
    assert_code(&out, 0);
    assert_eq!(json(&out)["steps"], json!([]));
    // The new member serves the data written before and during the replace.
    let only_new = nacos_raft::client::Client::new(vec![new.clone()], T);
    assert_eq!(only_new.get("before-7", false).unwrap().value, json!(7));
    check_acked(vec![new], &report.acked);
}

#[test]
fn removing_the_leader_hands_over_and_the_rest_serve_on() {
    let mut c = TestCluster::start(3, &[]);
    let leader = c.wait_for_leader(LEADER_DEADLINE);
    let old = c.nodes[leader].addr.clone();
    let eps = c.endpoints();
    let out = nacosctl_at(&eps, &["-o", "json", "member", "remove", &old]);
    assert_code(&out, 0);
    let doc = json(&out);
    assert!(
        !doc["voters"].as_array().unwrap().contains(&json!(old)),
        "{doc}"
    );
    let rest: Vec<String> = c.addrs().into_iter().filter(|a| *a != old).collect();
    let client = nacos_raft::client::Client::new(rest.clone(), T);
    let r = client.put("after-removal", json!(1)).unwrap();
    assert!(r.index > 0);
    let new_leader = client.leader().unwrap().leader.unwrap();
    assert!(rest.contains(&new_leader), "{new_leader} leads");
    // The removed leader never campaigns again: the term stays put.
    let term = client.leader().unwrap().term;
    thread::sleep(Duration::from_millis(3 * 300));
    assert_eq!(
        client.leader().unwrap().term,
        term,
        "the removed leader disrupted the others"
    );
    let s = c.nodes[leader].status(T).unwrap();
    assert!(
        !s.voter && s.role != nacos_raft::wire::Role::Leader,
        "{s:?}"
    );
}

#[test]
fn an_interrupted_replace_is_finished_by_running_it_again() {
    let mut c = TestCluster::start(3, &[]);
    let leader = c.wait_for_leader(LEADER_DEADLINE);
    let old = c.nodes[(leader + 2) % 3].addr.clone();
    let eps = c.endpoints();
    // NEW is not running yet: the first run adds it, then gives up waiting for it.
    let new = format!("127.0.0.1:{}", free_ports(1)[0]);
    let out = nacosctl_at(
        &eps,
        &["member", "replace", &old, &new, "--catch-up-timeout", "2s"],
    );
    assert_code(&out, 4);
    assert!(
        stderr(&out).contains("did not catch up"),
        "{}",
        describe(&out)
    );
    assert!(stderr(&out).contains("--join"), "{}", describe(&out));
    let doc = members_json(&eps);
    assert!(roles(&doc).contains(&(new.clone(), false)), "{doc}");
    // Now it starts; the same command finishes the job.
    let i = c.nodes.len();
    let args = join_args(&c);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut node = TestNode::new(
        &new,
        &c.dir.path().join(format!("node-{i}")),
        &c.dir.path().join(format!("node-{i}.log")),
        &args,
    );
    node.start();
    c.nodes.push(node);
    let out = nacosctl_at(&eps, &["-o", "json", "member", "replace", &old, &new]);
    assert_code(&out, 0);
    assert_eq!(
        json(&out)["steps"],
        json!(["promote", "remove"]),
        "{}",
        describe(&out)
    );
    let voters = voters_of(&eps);
    assert!(
        voters.contains(&new) && !voters.contains(&old),
        "{voters:?}"
    );
}

#[test]
fn changes_that_would_lose_the_quorum_or_do_not_fit_are_refused_with_the_reason() {
    let mut c = TestCluster::start(3, &[]);
    let leader = c.wait_for_leader(LEADER_DEADLINE);
    let down = (leader + 1) % 3;
    let up = (leader + 2) % 3;
    c.nodes[down].kill9();
    let eps = c.endpoints();
    let up_addr = c.nodes[up].addr.clone();
    // Once the leader has noticed the dead member, removing the other live follower (which
    // would leave the leader and a dead member) is refused.
    let dead = c.nodes[down].addr.clone();
    let noticed = poll_until(T, || {
        let doc = members_json(&eps);
        doc["members"]
            .as_array()?
            .iter()
            .any(|m| m["addr"] == json!(dead) && m["status"] == "unreachable")
            .then_some(())
    });
    assert!(
        noticed.is_some(),
        "the leader never marked {dead} unreachable"
    );
    let out = nacosctl_at(&eps, &["member", "remove", &up_addr]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("reachable"), "{}", describe(&out));
    assert!(stderr(&out).contains("majority"), "{}", describe(&out));
    assert_eq!(voters_of(&eps).len(), 3, "nothing changed");
    // Promoting a non-member, adding a malformed address: refused.
    let stranger = dead_addr();
    let out = nacosctl_at(&eps, &["member", "promote", &stranger]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("add it first"), "{}", describe(&out));
    assert_code(&nacosctl_at(&eps, &["member", "add", "no-port"]), 2);
    // A member of another cluster (a standalone node with data) cannot be added.
    let other = TestNode::standalone(&[]);
    let out = nacosctl_at(&eps, &["member", "add", &other.addr]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("another cluster"),
        "{}",
        describe(&out)
    );
    // Removing the dead member itself is fine, and leaves two live voters.
    let out = nacosctl_at(&eps, &["member", "remove", &dead]);
    assert_code(&out, 0);
    assert_eq!(voters_of(&eps).len(), 2);
    // Run again: nothing to do.
    let out = nacosctl_at(&eps, &["member", "remove", &dead]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("nothing to do"), "{}", describe(&out));
}

#[test]
fn a_joined_member_restarts_from_its_data_dir_and_flags_that_disagree_are_named() {
    let mut c = TestCluster::start(3, &["--checkpoint-entries", "20"]);
    c.wait_for_leader(LEADER_DEADLINE);
    let client = c.client(T);
    for i in 0..60 {
        client.put(&format!("k{i}"), json!(i)).unwrap();
    }
    let d = start_joining(&mut c);
    let addr = c.nodes[d].addr.clone();
    let out = nacosctl_at(
        &c.addrs()[..3].join(","),
        &["member", "add", &addr, "--wait"],
    );
    assert_code(&out, 0);
    // A restart keeps it a voter with the same data, from its own data dir.
    c.nodes[d].kill9();
    c.nodes[d].start();
    c.nodes[d].wait_ready(READY_DEADLINE);
    let only_d = nacos_raft::client::Client::new(vec![addr.clone()], T);
    assert_eq!(only_d.get("k42", false).unwrap().value, json!(42));
    let s = c.nodes[d].status(T).unwrap();
    assert!(s.voter && s.peers.len() == 4, "{s:?}");
    // A first member restarted with a --peers list that is out of date: the data dir wins,
    // and the log says so.
    let stale = c.addrs()[..3].join(",");
    c.nodes[0].kill9();
    let mut args: Vec<String> = c.nodes[0].extra_args.clone();
    let at = args.iter().position(|a| a == "--peers").unwrap();
    args[at + 1] = stale;
    c.nodes[0].extra_args = args;
    c.nodes[0].start();
    c.nodes[0].wait_ready(READY_DEADLINE);
    let said = poll_until(T, || {
        c.nodes[0]
            .log()
            .contains("is used, not --peers")
            .then_some(())
    });
    assert!(said.is_some(), "{}", c.nodes[0].log_excerpt());
    assert_eq!(c.nodes[0].status(T).unwrap().peers.len(), 4);
}
