//! End-to-end tests of the operator surface: `nacosctl watch`, `status` with members down,
//! `check`, `transfer-leader`, colour, the Nacos 1.x compatible endpoints, and
//! `scripts/cluster.sh`. Real `nacos-node` processes on ephemeral loopback ports.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nacos_raft::client::{RaftPeer, Status};
use nacos_raft::wire::Role;
use serde_json::{json, Value};

/// Publishes through nacosctl and returns the write's log index.
#[track_caller]
fn put(endpoints: &str, args: &[&str]) -> u64 {
    let mut all = vec!["-o", "json", "put"];
    all.extend_from_slice(args);
    let out = nacosctl_at(endpoints, &all);
    assert_code(&out, 0);
    json(&out)["index"].as_u64().expect("index")
}

#[track_caller]
fn del(endpoints: &str, key: &str) -> u64 {
    let out = nacosctl_at(endpoints, &["-o", "json", "del", key]);
    assert_code(&out, 0);
    json(&out)["index"].as_u64().expect("index")
}

/// A watch line parsed, with its fields checked to be exactly the contract's, in order.
#[track_caller]
fn event(line: &str) -> Value {
    let v: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    let keys: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {line}"))
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["event", "index", "key", "timestamp", "value"],
        "{line}"
    );
    assert!(
        line.starts_with(r#"{"event":"#),
        "fields in contract order: {line}"
    );
    v
}

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn watch_prints_events_in_log_order_and_resumes_without_gap_or_duplicate() {
    let node = TestNode::standalone(&[]);
    let ep = node.addr.as_str();

    let mut w = CtlStream::spawn(ep, &["-o", "json", "watch", "--prefix", "svc."]);
    wait_listening(&node, "svc.", WAIT);
    let i1 = put(ep, &["svc.a", "1"]);
    let i2 = put(ep, &["svc.b", "2"]);
    put(ep, &["other", "not under the prefix"]);
    let i3 = put(ep, &["--json", "svc.a", r#"{"v":3}"#]);
    let i4 = del(ep, "svc.a");
    let got: Vec<Value> = w.take_lines(4, WAIT).iter().map(|l| event(l)).collect();
    assert_eq!(
        got,
        [
            json!({"event": "CHANGE", "key": "svc.a", "value": "1", "timestamp": 1, "index": i1}),
            json!({"event": "CHANGE", "key": "svc.b", "value": "2", "timestamp": 1, "index": i2}),
            json!({"event": "CHANGE", "key": "svc.a", "value": {"v": 3}, "timestamp": 2, "index": i3}),
            json!({"event": "DELETE", "key": "svc.a", "value": null, "timestamp": 2, "index": i4}),
        ]
    );

    // Idle for longer than the node's keep-alive period (1 s): keep-alives must not show up
    // as lines, so the next line is the next event. (This wait lets a keep-alive happen; it
    // synchronises nothing.)
    std::thread::sleep(Duration::from_millis(1500));
    let i5 = put(ep, &["svc.c", "5"]);
    let next = event(&w.take_lines(1, WAIT)[0]);
    assert_eq!(next["index"], i5, "{next}");

    // Ctrl-C ends a watch with exit 0, quietly.
    w.interrupt();
    let end = w.finish(WAIT);
    assert_eq!(end.code(), 0, "{}", end.describe());
    assert!(end.rest.is_empty(), "{}", end.describe());
    assert!(end.stderr.is_empty(), "{}", end.describe());

    // Resuming after the second event gives exactly the later ones: no gap, no duplicate.
    let from = (i2 + 1).to_string();
    let mut r = CtlStream::spawn(
        ep,
        &[
            "-o",
            "json",
            "watch",
            "--prefix",
            "svc.",
            "--from-index",
            &from,
        ],
    );
    let again: Vec<u64> = r
        .take_lines(3, WAIT)
        .iter()
        .map(|l| event(l)["index"].as_u64().unwrap())
        .collect();
    assert_eq!(again, [i3, i4, i5]);
    assert_eq!(r.next_line(Duration::from_millis(300)), None);
    r.interrupt();
    assert_eq!(r.finish(WAIT).code(), 0);

    // Text form, one key, replayed from the start.
    let mut t = CtlStream::spawn(ep, &["watch", "svc.a", "--from-index", "1"]);
    assert_eq!(
        t.take_lines(3, WAIT),
        [
            format!("CHANGE\tsvc.a\tindex={i1}\ttimestamp=1\tvalue=\"1\""),
            format!("CHANGE\tsvc.a\tindex={i3}\ttimestamp=2\tvalue={{\"v\":3}}"),
            format!("DELETE\tsvc.a\tindex={i4}\ttimestamp=2"),
        ]
    );
    // The watch shows up among Nacos's listeners while it runs.
    wait_listening(&node, "svc.a", WAIT);
    let raw: Value = ureq::get(&format!("http://{ep}/nacos/v1/ns/raft/listeners"))
        .call()
        .expect("listeners")
        .into_json()
        .expect("listeners JSON");
    assert!(raw["listeners"].as_array().is_some(), "{raw}");
    t.interrupt();
    assert_eq!(t.finish(WAIT).code(), 0);
}

#[test]
fn watch_exits_4_on_a_lost_connection_and_1_on_a_compacted_index() {
    let mut node = TestNode::standalone(&[]);
    let ep = node.addr.clone();

    // A frozen node (SIGSTOP) keeps the connection open but sends nothing: after the
    // silence bound (3 s at least) the watch gives up instead of hanging (etcd #8980).
    let mut w = CtlStream::spawn(&ep, &["--timeout", "1s", "watch", "k"]);
    wait_listening(&node, "k", WAIT);
    // An event through the stream proves it is open before the node freezes.
    let i0 = put(&ep, &["k", "v0"]);
    let line = w.take_lines(1, WAIT).remove(0);
    assert!(
        line.starts_with(&format!("CHANGE\tk\tindex={i0}\t")),
        "{line}"
    );
    node.pause();
    let start = Instant::now();
    let end = w.finish(Duration::from_secs(15));
    node.resume();
    assert_eq!(end.code(), 4, "{}", end.describe());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(
        end.stderr.contains("nothing received for 3s"),
        "{}",
        end.describe()
    );

    // A killed node: exit 4 at once, with the last index seen and how to resume.
    let mut w = CtlStream::spawn(&ep, &["watch", "k"]);
    wait_listening(&node, "k", WAIT);
    let i = put(&ep, &["k", "v1"]);
    let line = w.take_lines(1, WAIT).remove(0);
    assert_eq!(
        line,
        format!("CHANGE\tk\tindex={i}\ttimestamp=2\tvalue=\"v1\"")
    );
    let start = Instant::now();
    node.kill9();
    let end = w.finish(Duration::from_secs(15));
    assert_eq!(end.code(), 4, "{}", end.describe());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        end.stderr
            .starts_with(&format!("nacosctl: watch: lost the connection to {ep}")),
        "{}",
        end.describe()
    );
    assert!(
        end.stderr.contains(&format!("last index seen: {i}")),
        "{}",
        end.describe()
    );
    assert!(
        end.stderr.contains(&format!(
            "hint: resume with no gap and no duplicate: nacosctl --endpoints {ep} watch k --from-index {}",
            i + 1
        )),
        "{}",
        end.describe()
    );

    // After a clean restart, events older than the checkpoint the node started from are
    // gone: resuming from before them is refused (exit 1), the message says from where a
    // watch can resume, and resuming from there works.
    node.start();
    node.wait_ready(READY_DEADLINE);
    // Replayed up to the last write, so the clean stop below writes its datum file.
    poll_until(WAIT, || {
        (node.status(Duration::from_millis(500))?.applied_index >= i).then_some(())
    })
    .unwrap_or_else(|| panic!("{ep} did not replay index {i}\n{}", node.log_excerpt()));
    assert!(node
        .terminate(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    node.start();
    node.wait_ready(READY_DEADLINE);
    let out = nacosctl_at(&ep, &["watch", "k", "--from-index", "1"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("no longer kept"), "{}", describe(&out));
    let floor: u64 = err
        .split("from index ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume index named: {}", describe(&out)));
    assert!(1 < floor && floor <= i + 1, "floor {floor}, last write {i}");
    // Resuming from the floor replays what the node still holds, up to the last write.
    let mut w = CtlStream::spawn(&ep, &["watch", "k", "--from-index", &floor.to_string()]);
    if floor <= i {
        let mut seen = Vec::new();
        while !seen
            .iter()
            .any(|l: &String| l.contains(&format!("index={i}\t")))
        {
            match w.next_line(WAIT) {
                Some(l) => seen.push(l),
                None => panic!("no event at index {i} replayed from {floor}: {seen:?}"),
            }
        }
    } else {
        wait_listening(&node, "k", WAIT);
    }
    w.finish(Duration::ZERO);
}

/// Each member's `/v1/status`, in member order.
fn statuses(cluster: &TestCluster) -> Vec<Option<Status>> {
    cluster
        .nodes
        .iter()
        .map(|n| n.status(Duration::from_millis(500)))
        .collect()
}

/// The RaftPeer objects of a raw Nacos answer, with exactly Nacos's six fields each.
#[track_caller]
fn raft_peer(v: &Value) -> RaftPeer {
    let mut keys: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "heartbeatDueMs",
            "ip",
            "leaderDueMs",
            "state",
            "term",
            "voteFor"
        ],
        "{v}"
    );
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not a RaftPeer ({e}): {v}"))
}

fn get_json(addr: &str, path: &str) -> Value {
    ureq::get(&format!("http://{addr}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"))
        .into_json()
        .unwrap_or_else(|e| panic!("GET {addr}{path}: not JSON: {e}"))
}

/// The Nacos 1.x shapes of reference §3.2 and §4 on a healthy cluster led by `leader`.
fn assert_nacos_shapes(cluster: &TestCluster, leader: &str) {
    for n in &cluster.nodes {
        let s = n.status(Duration::from_secs(2)).expect("status");
        let state = get_json(&n.addr, "/nacos/v1/ns/raft/state");
        assert_eq!(state["services"], s.datums, "{state}");
        let peers: Vec<RaftPeer> = state["peers"]
            .as_array()
            .unwrap_or_else(|| panic!("peers: {state}"))
            .iter()
            .map(raft_peer)
            .collect();
        let mut ips: Vec<&str> = peers.iter().map(|p| p.ip.as_str()).collect();
        ips.sort_unstable();
        let mut all = cluster.addrs();
        all.sort();
        assert_eq!(ips, all);
        let leaders: Vec<&str> = peers
            .iter()
            .filter(|p| p.state == Role::Leader)
            .map(|p| p.ip.as_str())
            .collect();
        assert_eq!(leaders, [leader], "{state}");

        // The leader as a JSON *string* holding the RaftPeer JSON (Nacos's own shape).
        let l = get_json(&n.addr, "/nacos/v1/ns/raft/leader");
        let text = l["leader"]
            .as_str()
            .unwrap_or_else(|| panic!("leader is not a string: {l}"));
        let lp = raft_peer(&serde_json::from_str(text).expect("the string holds JSON"));
        assert_eq!((lp.ip.as_str(), &lp.state), (leader, &Role::Leader));
        assert_eq!(lp.term, s.term);

        let me = raft_peer(&get_json(&n.addr, "/nacos/v1/ns/raft/peer"));
        assert_eq!(me.ip, n.addr);
        assert_eq!(me.state, s.role);
        assert_eq!(me.term, s.term);
        if me.state == Role::Leader {
            assert_eq!(
                me.vote_for.as_deref(),
                Some(leader),
                "a leader voted for itself"
            );
        }
        // The typed client reads the same shapes.
        let c = n.client(Duration::from_secs(2));
        assert_eq!(c.nacos_peer_of(&n.addr).unwrap().ip, n.addr);
        assert_eq!(c.nacos_leader_of(&n.addr).unwrap().unwrap().ip, leader);
    }
}

#[test]
fn transfer_leader_check_and_status_on_a_cluster() {
    // With the datum files kept: the divergence check below edits one.
    let mut cluster = TestCluster::start(3, &DATUM_FILES_ON);
    let first = cluster.wait_for_leader(LEADER_DEADLINE);
    let eps = cluster.endpoints();
    for k in ["k1", "k2", "k3"] {
        put(&eps, &[k, "v"]);
    }

    // --- transfer-leader, from any endpoint
    let follower = (first + 1) % 3;
    let one = cluster.nodes[follower].addr.clone();
    let out = nacosctl_at(&one, &["transfer-leader"]);
    assert_code(&out, 0);
    let moved_to = stdout(&out).trim().to_string();
    assert_ne!(moved_to, cluster.nodes[first].addr, "{}", describe(&out));
    let now = cluster.wait_for_leader(LEADER_DEADLINE);
    assert_eq!(cluster.nodes[now].addr, moved_to);
    let term_before = statuses(&cluster)[now].as_ref().unwrap().term;

    let back = cluster.nodes[first].addr.clone();
    let out = nacosctl_at(&eps, &["-o", "json", "transfer-leader", &back]);
    assert_code(&out, 0);
    let doc = json(&out);
    assert_eq!(doc["from"], moved_to.as_str(), "{doc}");
    assert_eq!(doc["to"], back.as_str(), "{doc}");
    assert_eq!(doc["leader"], back.as_str(), "{doc}");
    assert!(doc["term"].as_u64().unwrap() > term_before, "{doc}");
    assert_eq!(cluster.wait_for_leader(LEADER_DEADLINE), first);

    // Already the leader: nothing to do, success.
    let out = nacosctl_at(&eps, &["transfer-leader", &back]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), format!("{back}\n"));
    // Not a member: exit 1, naming the members.
    let stranger = dead_addr();
    let out = nacosctl_at(&eps, &["transfer-leader", &stranger]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("is not a member"),
        "{}",
        describe(&out)
    );
    assert!(stderr(&out).contains(&back), "{}", describe(&out));
    // Not an address: exit 2, nothing sent.
    assert_code(&nacosctl_at(&eps, &["transfer-leader", "no-port"]), 2);

    assert_nacos_shapes(&cluster, &back);

    // --- status: lag and last contact from the leader's view
    let out = nacosctl_at(&eps, &["-o", "json", "status"]);
    assert_code(&out, 0);
    let doc = json(&out);
    for row in doc["nodes"].as_array().unwrap() {
        assert!(row["lag"].is_u64(), "{row}");
        if row["endpoint"] == back.as_str() {
            assert!(row["last_contact_ms"].is_null(), "{row}");
        } else {
            assert!(row["last_contact_ms"].is_u64(), "{row}");
        }
    }
    let out = nacosctl_at(&eps, &["-o", "table", "status"]);
    assert_code(&out, 0);
    let table = stdout(&out);
    for h in ["ENDPOINT", "ROLE", "LAG", "LAST CONTACT", "DATUMS", "ERROR"] {
        assert!(table.contains(h), "{h} missing:\n{table}");
    }
    assert!(!table.contains('\x1b'), "no colour when piped:\n{table}");
    let out = nacosctl_at(&eps, &["--color", "always", "-o", "table", "status"]);
    assert!(stdout(&out).contains("\x1b["), "{}", describe(&out));
    // JSON is never coloured.
    let out = nacosctl_at(&eps, &["--color", "always", "-o", "json", "status"]);
    json(&out);

    // --- check: an untouched cluster agrees
    let out = nacosctl_at(&eps, &["-o", "json", "check"]);
    assert_code(&out, 0);
    let doc = json(&out);
    assert_eq!(doc["verdict"], "consistent", "{doc}");
    let rows = doc["nodes"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let digest = &rows[0]["digest"];
    for r in rows {
        assert_eq!(r["agree"], true, "{doc}");
        assert_eq!(&r["digest"], digest, "{doc}");
        assert_eq!(r["index"], doc["index"], "{doc}");
        assert_eq!(r["datums"], 3, "{doc}");
    }
    let out = nacosctl_at(&eps, &["check"]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out).matches("\tagree=yes").count(),
        3,
        "{}",
        describe(&out)
    );
    assert!(out.stderr.is_empty(), "{}", describe(&out));

    // --- check: a replica whose datum file was edited while it was stopped, and whose
    // checkpoints were deleted so that it starts from its datum files (the documented
    // escape hatch for a standalone node with damaged checkpoints)
    let victim = (first + 2) % 3;
    let vaddr = cluster.nodes[victim].addr.clone();
    assert!(cluster.nodes[victim]
        .terminate(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    for name in ["checkpoint", "checkpoint.prev"] {
        let _ = std::fs::remove_file(cluster.nodes[victim].data_dir.join(name));
    }
    let file = nacos_raft::store::datum_dir::datum_path(&cluster.nodes[victim].data_dir, "k2");
    let mut datum: Value = serde_json::from_slice(
        &std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())),
    )
    .expect("datum JSON");
    assert_eq!(datum["key"], "k2", "{datum}");
    datum["value"] = json!("tampered");
    std::fs::write(&file, serde_json::to_vec(&datum).unwrap()).unwrap();
    cluster.nodes[victim].start();
    cluster.nodes[victim].wait_ready(READY_DEADLINE);
    let leader_commit = statuses(&cluster)[first].as_ref().unwrap().commit_index;
    poll_until(WAIT, || {
        let s = cluster.nodes[victim].status(Duration::from_millis(500))?;
        (s.applied_index >= leader_commit).then_some(())
    })
    .unwrap_or_else(|| panic!("restarted member did not catch up: {}", cluster.views()));
    let out = nacosctl_at(&eps, &["-o", "json", "check"]);
    assert_code(&out, 5);
    let doc = json(&out);
    assert_eq!(doc["verdict"], "divergent", "{doc}");
    for r in doc["nodes"].as_array().unwrap() {
        assert_eq!(r["agree"], r["endpoint"] != vaddr.as_str(), "{doc}");
    }
    assert!(
        stderr(&out).contains(&format!(
            "nacosctl: divergent: {vaddr} differs at log index"
        )),
        "{}",
        describe(&out)
    );
    let out = nacosctl_at(&eps, &["check"]);
    assert_code(&out, 5);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with(&format!("{vaddr}\t")) && l.ends_with("agree=no")),
        "{}",
        describe(&out)
    );

    // --- a member down: status and check answer within their bounds, and name it
    cluster.nodes[victim].kill9();
    let start = Instant::now();
    let out = nacosctl_at(&eps, &["--timeout", "1s", "-o", "json", "status"]);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert_code(&out, 5);
    let doc = json(&out);
    let row = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["endpoint"] == vaddr.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("dead member listed: {doc}"));
    assert_eq!(row["reachable"], false, "{row}");
    assert!(row["error"].is_string(), "{row}");
    assert!(
        row["last_contact_ms"].is_u64(),
        "the leader still knows it: {row}"
    );
    let out = nacosctl_at(&eps, &["--timeout", "1s", "check"]);
    assert_code(&out, 5);
    assert!(
        stderr(&out).contains(&format!("incomplete: {vaddr} could not be checked")),
        "{}",
        describe(&out)
    );

    // --- no quorum: the leader is killed too; the survivor knows no leader
    cluster.nodes[first].kill9();
    let survivor = (first + 1) % 3;
    let saddr = cluster.nodes[survivor].addr.clone();
    poll_until(WAIT, || {
        let l = get_json(&saddr, "/nacos/v1/ns/raft/leader");
        (l["leader"] == "null").then_some(())
    })
    .unwrap_or_else(|| panic!("the survivor still names a leader: {}", cluster.views()));
    let start = Instant::now();
    let out = nacosctl_at(&eps, &["--timeout", "1s", "status"]);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert_code(&out, 4);
    assert_eq!(
        stdout(&out).matches("\tUNREACHABLE\t").count(),
        2,
        "{}",
        describe(&out)
    );
    assert_code(&nacosctl_at(&eps, &["--timeout", "1s", "check"]), 4);
    assert_code(
        &nacosctl_at(&saddr, &["--timeout", "1s", "transfer-leader"]),
        4,
    );
}

#[test]
fn new_commands_without_a_cluster() {
    let dead = dead_addr();
    // Usage errors: exit 2 before anything is sent.
    assert_code(&nacosctl_at(&dead, &["watch"]), 2);
    assert_code(&nacosctl_at(&dead, &["watch", "k", "--prefix", "p"]), 2);
    assert_code(&nacosctl_at(&dead, &["watch", "bad\u{1}key"]), 2);
    assert_code(&nacosctl_at(&dead, &["status", "--color", "pink"]), 2);
    // Nothing to reach: exit 4.
    for cmd in [
        &["watch", "k"][..],
        &["check"],
        &["transfer-leader"],
        &["status"],
    ] {
        let start = Instant::now();
        let out = nacosctl_at(&dead, &[&["--timeout", "1s"][..], cmd].concat());
        assert_code(&out, 4);
        assert!(start.elapsed() < Duration::from_secs(5), "{cmd:?}");
        assert!(stderr(&out).starts_with("nacosctl: "), "{}", describe(&out));
    }
    // Error prefixes are coloured only when asked (stderr is not a terminal here).
    let out = nacosctl_at(&dead, &["--color", "always", "get", "k"]);
    assert_code(&out, 4);
    assert!(
        stderr(&out).starts_with("\x1b[1;31mnacosctl:\x1b[0m "),
        "{}",
        describe(&out)
    );
    let out = nacosctl_with(Some(&dead), &["get", "k"], None, &[("NO_COLOR", "1")]);
    assert!(!stderr(&out).contains('\x1b'), "{}", describe(&out));
    // Every command has a JSON form, completion included.
    let out = nacosctl(&["-o", "json", "completion", "bash"]);
    assert_code(&out, 0);
    let doc = json(&out);
    assert_eq!(doc["shell"], "bash");
    assert!(
        doc["script"].as_str().unwrap().contains("nacosctl"),
        "{doc}"
    );
    // `help` lists the new commands and the exit codes.
    let help = stdout(&nacosctl(&["--help"]));
    for word in ["watch", "check", "transfer-leader", "Exit codes"] {
        assert!(help.contains(word), "{word} missing from --help:\n{help}");
    }
}

// ------------------------------------------------------------------ scripts/cluster.sh

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh")
}

/// `n` consecutive free ports on 127.0.0.1 (the script numbers members from BASE_PORT),
/// from a range below the usual ephemeral one so other tests' ports do not land there.
fn consecutive_free_ports(n: u16) -> u16 {
    // Each call starts elsewhere: two script tests run side by side must not both pick
    // the same free range before either has bound it.
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id() as u16;
    for attempt in 0..200u16 {
        let base = 20_000
            + (pid
                .wrapping_mul(7)
                .wrapping_add(call.wrapping_mul(1009))
                .wrapping_add(attempt * 37))
                % 10_000;
        let held: Vec<_> = (0..n)
            .map_while(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == n as usize {
            return base;
        }
    }
    panic!("no {n} consecutive free ports found");
}

/// Runs `scripts/cluster.sh ARGS` with the test's cluster settings, bounded by `deadline`.
fn cluster_sh(dir: &Path, base: u16, args: &[&str], deadline: Duration) -> Output {
    let bin_dir = Path::new(NODE_BIN).parent().expect("bin dir");
    let mut child = Command::new("bash")
        .arg(script_path())
        .args(args)
        .env("CLUSTER_DIR", dir)
        .env("BASE_PORT", base.to_string())
        .env("NACOS_BIN_DIR", bin_dir)
        .env(
            "NODE_ARGS",
            format!(
                "--heartbeat-interval-ms {TEST_HEARTBEAT_MS} --election-timeout-ms {TEST_ELECTION_TIMEOUT_MS}"
            ),
        )
        .env("UP_TIMEOUT", "30")
        .env("DOWN_TIMEOUT", "10")
        .env_remove("NACOSCTL_ENDPOINTS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bash");
    let status = poll_until(deadline, || child.try_wait().ok().flatten());
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("script output");
    assert!(
        status.is_some(),
        "cluster.sh {args:?} ran past {deadline:?}"
    );
    out
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The pids in the cluster dir's pid files.
fn pids(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "pid") {
            if let Some(pid) = std::fs::read_to_string(&p)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                out.push(pid);
            }
        }
    }
    out
}

/// Stops what the script started even when the test fails: `down`, then SIGKILL to any
/// node pid still alive that is a nacos-node of this test's cluster dir.
struct ScriptCluster {
    /// `CLUSTER_DIR`, inside `_tmp` (and not yet created: `up` creates it).
    dir: PathBuf,
    base: u16,
    // Declared last: removed after `drop` has stopped the members.
    _tmp: tempfile::TempDir,
}

impl Drop for ScriptCluster {
    fn drop(&mut self) {
        let dir = self.dir.as_path();
        let pids = pids(dir);
        let _ = cluster_sh(dir, self.base, &["down"], Duration::from_secs(30));
        for pid in pids {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours = String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy());
            if alive(pid) && ours {
                // SAFETY: kill(2) has no memory-safety preconditions; the pid was checked to
                // be a nacos-node of this test's own directory.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    }
}

#[test]
fn cluster_script_starts_reports_and_stops_its_own_members() {
    let tmp = tempfile::Builder::new()
        .prefix("cluster-sh-")
        .tempdir()
        .expect("temp dir");
    let c = ScriptCluster {
        dir: tmp.path().join("local"),
        base: consecutive_free_ports(3),
        _tmp: tmp,
    };
    let (dir, base) = (c.dir.clone(), c.base);
    let up = cluster_sh(&dir, base, &["up", "3"], Duration::from_secs(60));
    let text = String::from_utf8_lossy(&up.stdout).into_owned();
    let err = String::from_utf8_lossy(&up.stderr).into_owned();
    assert!(up.status.success(), "up failed:\n{text}\n{err}");
    let endpoints: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let export = format!("export NACOSCTL_ENDPOINTS={}", endpoints.join(","));
    assert!(text.contains(&export), "{text}");
    let started = pids(&dir);
    assert_eq!(started.len(), 3, "{text}");
    assert!(started.iter().all(|&p| alive(p)), "{started:?}");
    assert!(dir.join("cluster.conf").is_file());

    // A leader exists once `up` returns.
    let out = nacosctl_at(&endpoints.join(","), &["leader"]);
    assert_code(&out, 0);
    let st = cluster_sh(&dir, base, &["status"], Duration::from_secs(30));
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let lines = String::from_utf8_lossy(&st.stdout).into_owned();
    assert_eq!(lines.lines().count(), 3, "{lines}");
    assert_eq!(lines.matches("\tLEADER\t").count(), 1, "{lines}");

    // A second `up` refuses instead of starting a second cluster over the same data.
    let again = cluster_sh(&dir, base, &["up"], Duration::from_secs(30));
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // A pid file naming some other process (a reused pid) must not get it killed.
    let mut decoy = Command::new("sleep").arg("60").spawn().expect("sleep");
    std::fs::write(dir.join("node-9.pid"), decoy.id().to_string()).unwrap();
    let down = cluster_sh(&dir, base, &["down"], Duration::from_secs(30));
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(alive(decoy.id()), "down killed a process it did not start");
    let _ = decoy.kill();
    let _ = decoy.wait();
    assert!(
        started.iter().all(|&p| !alive(p)),
        "members still running after down: {started:?}"
    );
    assert!(pids(&dir).is_empty(), "pid files left behind");
    let st = cluster_sh(&dir, base, &["status"], Duration::from_secs(30));
    assert_eq!(
        st.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&st.stdout)
    );
    drop(c);
}

#[test]
fn cluster_script_starts_a_tls_cluster_with_its_own_throwaway_ca() {
    let tmp = tempfile::Builder::new()
        .prefix("cluster-sh-tls-")
        .tempdir()
        .expect("temp dir");
    let c = ScriptCluster {
        dir: tmp.path().join("local"),
        base: consecutive_free_ports(3),
        _tmp: tmp,
    };
    let (dir, base) = (c.dir.clone(), c.base);
    let up = cluster_sh(&dir, base, &["up", "3", "--tls"], Duration::from_secs(60));
    let text = String::from_utf8_lossy(&up.stdout).into_owned();
    assert!(
        up.status.success(),
        "up --tls failed:\n{text}\n{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let endpoints: Vec<String> = (0..3)
        .map(|i| format!("https://127.0.0.1:{}", base + i))
        .collect();
    let eps = endpoints.join(",");
    assert!(
        text.contains(&format!("export NACOSCTL_ENDPOINTS={eps}")),
        "{text}"
    );
    let ca = dir.join("tls/ca.pem");
    assert!(
        text.contains(&format!("export NACOSCTL_CACERT={}", ca.display())),
        "{text}"
    );
    let ca = ca.to_string_lossy().into_owned();
    assert_code(&nacosctl_at(&eps, &["--cacert", &ca, "put", "k", "v"]), 0);
    let got = nacosctl_at(&eps, &["--cacert", &ca, "get", "k"]);
    assert_code(&got, 0);
    assert_eq!(stdout(&got).trim(), "v");
    // Plain HTTP is refused by every member.
    let plain = nacosctl_at(&format!("127.0.0.1:{base}"), &["get", "k"]);
    assert_code(&plain, 1);
    let st = cluster_sh(&dir, base, &["status"], Duration::from_secs(30));
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    drop(c);
}
