//! End-to-end tests of a standalone `nacos-node`: durability across SIGTERM and kill -9,
//! deletes that stay deleted, bad input that changes nothing, corrupt files at start-up.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use nacos_raft::wire::Role;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// A standalone node, started, ready and leading itself.
fn started() -> TestNode {
    TestNode::standalone(&[])
}

/// A raw request; returns (status, parsed JSON body or Null).
fn raw(node: &TestNode, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
    let agent = ureq::AgentBuilder::new().timeout(T).build();
    let req = agent.request(method, &format!("http://{}{path}", node.addr));
    let res = match body {
        Some(b) => req.set("Content-Type", "application/json").send_bytes(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}\n{}", node.log_excerpt()),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn datum_count(node: &TestNode) -> usize {
    node.client(T).list("", true).unwrap().len()
}

#[test]
fn every_acknowledged_write_survives_sigterm_and_kill_9() {
    let mut n = started();
    let c = n.client(T);
    for i in 0..30 {
        c.put(&format!("k{}", i % 10), json!(i)).unwrap();
    }
    c.delete("k0").unwrap();
    assert!(
        n.terminate(T).is_some_and(|s| s.success()),
        "clean stop exits 0"
    );
    n.start();
    n.wait_ready(READY_DEADLINE);
    let c = n.client(T);
    assert_eq!(c.get("k9", false).unwrap().value, json!(29));
    assert_eq!(c.get("k9", false).unwrap().timestamp, 3);
    assert!(
        c.get("k0", false).is_err(),
        "a deleted key came back after SIGTERM"
    );
    for i in 30..60 {
        c.put(&format!("k{}", i % 10), json!(i)).unwrap();
    }
    c.delete("k1").unwrap();
    n.kill9();
    n.start();
    n.wait_ready(READY_DEADLINE);
    let c = n.client(T);
    for i in 2..10 {
        let g = c.get(&format!("k{i}"), false).unwrap();
        assert_eq!((g.value, g.timestamp), (json!(50 + i), 6), "k{i}");
    }
    // Deleted after 3 writes, then written 3 more times: the counter restarted at 1.
    let g = c.get("k0", false).unwrap();
    assert_eq!((g.value, g.timestamp), (json!(50), 3));
    assert!(
        c.get("k1", false).is_err(),
        "a deleted key came back after kill -9"
    );
}

#[test]
fn malformed_json_is_400_and_changes_nothing() {
    let n = started();
    let bodies: [&[u8]; 5] = [
        b"{\"key\":\"k\",\"value\":",
        b"not json",
        b"{\"value\":1}",
        b"{\"key\":\"k\"}",
        b"{\"key\":\"k\",\"value\":1,\"extra\":2}",
    ];
    for b in bodies {
        let (status, body) = raw(&n, "POST", "/v1/datum", Some(b));
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(b));
        assert_eq!(body["error"], "bad_request");
        assert!(body["message"].as_str().unwrap().contains("key"), "{body}");
    }
    assert_eq!(datum_count(&n), 0);
}

#[test]
fn oversize_body_is_413() {
    let n = started();
    let big = format!("{{\"key\":\"k\",\"value\":\"{}\"}}", "x".repeat(5 << 20));
    let (status, body) = raw(&n, "POST", "/v1/datum", Some(big.as_bytes()));
    assert_eq!(status, 413);
    assert_eq!(body["error"], "payload_too_large");
    assert_eq!(datum_count(&n), 0);
    // Still serving.
    n.client(T).put("k", json!(1)).unwrap();
}

#[test]
fn unsafe_and_invalid_keys_never_escape_the_data_dir() {
    // With the per-key datum files kept, whose names are built from the keys.
    let n = TestNode::standalone(&DATUM_FILES_ON);
    let c = n.client(T);
    for key in [
        "../../escape",
        "/etc/passwd",
        "..",
        ".",
        "a/../../b",
        "%2e%2e",
        "~root",
    ] {
        c.put(key, json!(key)).unwrap();
        assert_eq!(c.get(key, false).unwrap().value, json!(key));
    }
    // Every file lies under data/, and nothing was created beside the data dir.
    let parent = n.data_dir.parent().unwrap();
    let mut names: Vec<String> = fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.iter().any(|n| n.contains("escape")), "{names:?}");
    // Each key's file is under data/, once the flusher has written them all.
    let files = poll_until(Duration::from_secs(10), || {
        let files = nacos_raft::store::read_datum_dir(&n.data_dir).ok()?;
        (files.len() == 7).then_some(files)
    })
    .unwrap_or_else(|| panic!("not every datum file was written\n{}", n.log_excerpt()));
    for (d, file) in &files {
        assert!(
            file.starts_with(n.data_dir.join("data")),
            "{} at {file:?}",
            d.key
        );
    }
    for (bad, why) in [
        ("", "empty"),
        ("a\nb", "control"),
        (&"k".repeat(1025)[..], "1024"),
    ] {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("key", bad)
            .finish();
        let (status, body) = raw(&n, "DELETE", &format!("/v1/datum?{q}"), None);
        assert_eq!(status, 400, "{bad:?}");
        assert!(body["message"].as_str().unwrap().contains(why), "{body}");
    }
}

#[test]
fn unknown_routes_are_404_with_the_json_error_body() {
    let n = started();
    for (m, p) in [
        ("GET", "/nope"),
        ("PUT", "/v1/datum"),
        ("delete", "/v1/datum"),
    ] {
        let (status, body) = raw(&n, m, p, None);
        assert_eq!(status, 404, "{m} {p}");
        assert_eq!(body["error"], "no_route");
    }
    // The peer API of a standalone member is closed, whatever the route.
    let (status, body) = raw(&n, "GET", "/v1/raft/messages", None);
    assert_eq!((status, &body["error"]), (403, &json!("forbidden")));
}

#[test]
fn peer_messages_from_strangers_are_refused() {
    let n = started();
    let msg = json!([{"from": "10.9.9.9:8848", "to": n.addr, "term": 99,
                      "msg": {"type": "vote", "last_log_index": 100, "last_log_term": 99}}]);
    let (status, body) = raw(
        &n,
        "POST",
        "/v1/raft/messages",
        Some(msg.to_string().as_bytes()),
    );
    assert_eq!(status, 403);
    // The harness starts every node with NACOS_CLUSTER_TOKEN: a standalone member given a
    // secret keeps it (so members can be added), and the stranger does not hold it.
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("needs the cluster secret"),
        "{body}"
    );
    let s = n.status(T).unwrap();
    assert_eq!(
        (s.role, s.term),
        (Role::Leader, 1),
        "a stranger changed the term"
    );
}

#[test]
fn a_corrupt_datum_file_stops_start_up_naming_file_and_offset() {
    // Stopped before its first checkpoint, a node with datum files starts from them.
    let mut n = TestNode::standalone(&DATUM_FILES_ON);
    n.client(T).put("victim", json!({"a": 1})).unwrap();
    n.terminate(T);
    let file = n.data_dir.join("data/public/victim");
    let original = fs::read(&file).unwrap();
    fs::write(&file, &original[..original.len() / 2]).unwrap();
    n.start();
    let status = n.wait_exit(T).expect("must refuse to start, not hang");
    assert!(!status.success());
    let log = n.log();
    assert!(
        log.contains(file.to_str().unwrap()) && log.contains("byte"),
        "{log}"
    );
    // Nothing was deleted or rewritten.
    assert_eq!(fs::read(&file).unwrap(), &original[..original.len() / 2]);
}

#[test]
fn a_corrupt_log_record_stops_start_up_naming_file_and_offset() {
    let mut n = started();
    for i in 0..5 {
        n.client(T).put("k", json!(i)).unwrap();
    }
    n.terminate(T);
    let seg = n
        .data_dir
        .join("log/00000000000000000001-00000000000000000001.log");
    let mut bytes = fs::read(&seg).unwrap();
    bytes[12] ^= 0x55; // inside the first record
    fs::write(&seg, &bytes).unwrap();
    n.start();
    let status = n.wait_exit(T).expect("must refuse to start, not hang");
    assert!(!status.success());
    let log = n.log();
    assert!(
        log.contains(seg.to_str().unwrap()) && log.contains("byte 0"),
        "{log}"
    );
    assert_eq!(fs::read(&seg).unwrap(), bytes, "the log was modified");
}

#[test]
fn a_torn_log_tail_is_cut_with_a_warning_and_the_node_serves() {
    let mut n = started();
    let acked = n.client(T).put("k", json!("kept")).unwrap();
    // A crash: only an unclean stop can leave a write half done.
    n.kill9();
    let seg = n
        .data_dir
        .join("log/00000000000000000001-00000000000000000001.log");
    // A write that never completed: half a record at the end of the records (where the
    // zeros written ahead of them begin; the file ends there, as after an append).
    let mut bytes = fs::read(&seg).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes.truncate(end);
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2]);
    fs::write(&seg, &bytes).unwrap();
    n.start();
    n.wait_ready(READY_DEADLINE);
    assert!(
        n.log()
            .contains("after an unclean stop, cut an incomplete record header"),
        "{}",
        n.log()
    );
    let g = n.client(T).get("k", false).unwrap();
    assert_eq!((g.value, g.index), (json!("kept"), acked.index));
}

/// The nice value of `pid`'s thread named `name` (from /proc), if it runs.
fn thread_nice(pid: u32, name: &str) -> Option<i64> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .find_map(|t| {
            let stat = fs::read_to_string(t.ok()?.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(") ")?;
            if head.split_once(" (")?.1 != name {
                return None;
            }
            // Fields after the name start at 3 (state); nice is field 19.
            rest.split(' ').nth(19 - 3)?.parse().ok()
        })
}

#[test]
fn background_work_runs_below_the_request_path() {
    let n = started();
    let pid = n.pid().unwrap();
    // Writing datum files and checkpoints yields the CPU to serving; the log writer and the
    // driver keep the process's priority (relative to the process's own: the tests may run
    // under `nice`).
    let base = thread_nice(pid, "nacos-node").expect("the main thread's nice value");
    let want = (base + 10).min(19);
    let flusher = poll_until(T, || {
        thread_nice(pid, "datum-flusher").filter(|&v| v == want)
    });
    assert_eq!(flusher, Some(want), "the datum-flusher thread's nice value");
    assert_eq!(thread_nice(pid, "log-writer"), Some(base));
    assert_eq!(thread_nice(pid, "driver"), Some(base));
}
