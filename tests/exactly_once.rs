//! End-to-end tests of exactly-once writes: a write carrying `X-Request-Id` is applied once
//! and a repeat gets the first answer, sent to another member, after the leader dies, after
//! the whole cluster restarts, from a member that caught up by snapshot; and the client's
//! own retry after an answer lost on the way back applies the write once.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use nacos_raft::client::Client;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// Publishes through `addr` with a request id; the status and the JSON answer.
fn put_with_id(addr: &str, key: &str, value: Value, id: &str) -> (u16, Value) {
    let agent = ureq::AgentBuilder::new().timeout(T).build();
    let body = json!({"key": key, "value": value});
    let r = agent
        .post(&format!("http://{addr}/v1/datum"))
        .set("X-Request-Id", id)
        .send_json(body);
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST to {addr}: {e}"),
    };
    let status = resp.status();
    (status, resp.into_json().unwrap_or(Value::Null))
}

fn timestamp_of(client: &Client, key: &str) -> u64 {
    client.get(key, false).expect("read").timestamp
}

#[test]
fn a_repeated_request_is_applied_once_on_any_member_after_a_leader_kill() {
    let mut c = TestCluster::start(3, &[]);
    let leader = c.wait_for_leader(LEADER_DEADLINE);
    let follower = (leader + 1) % 3;
    let id = "script-7:1";
    let (s1, first) = put_with_id(&c.nodes[leader].addr, "k", json!("v"), id);
    assert_eq!(s1, 200, "{first}");
    assert_eq!(first["timestamp"], json!(1));
    // The same request again, through a follower: the first answer, nothing applied.
    let (s2, again) = put_with_id(&c.nodes[follower].addr, "k", json!("v"), id);
    assert_eq!((s2, &again), (200, &first));
    assert_eq!(timestamp_of(&c.client(T), "k"), 1);
    // A different value under the same id is still the same request: the first answer.
    let (_, other) = put_with_id(&c.nodes[follower].addr, "k", json!("changed"), id);
    assert_eq!(other, first);
    assert_eq!(c.client(T).get("k", false).unwrap().value, json!("v"));

    // The leader dies; the new one knows the session (it is in the log).
    c.nodes[leader].kill9();
    let survivors: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| c.nodes[i].addr.clone())
        .collect();
    let client = Client::new(survivors.clone(), T);
    poll_until(T, || client.leader().ok().and_then(|l| l.leader)).expect("a new leader");
    let (s3, after_kill) = put_with_id(&survivors[0], "k", json!("v"), id);
    assert_eq!((s3, &after_kill), (200, &first));
    // The client's next request is a new one.
    let (_, next) = put_with_id(&survivors[1], "k", json!("w"), "script-7:2");
    assert_eq!(next["timestamp"], json!(2));
    // And the first, sent once more, is now older than the client's newest: not applied.
    let (s4, old) = put_with_id(&survivors[0], "k", json!("v"), id);
    assert_eq!(s4, 400, "{old}");
    assert_eq!(timestamp_of(&client, "k"), 2);
}

#[test]
fn sessions_survive_a_restart_of_every_member_through_checkpoints() {
    let mut c = TestCluster::start(3, &["--checkpoint-entries", "10"]);
    let leader = c.wait_for_leader(LEADER_DEADLINE);
    let (_, first) = put_with_id(&c.nodes[leader].addr, "k", json!(1), "ops-1:5");
    // Enough writes for checkpoints (and compaction) past the session's entry.
    let client = c.client(T);
    for i in 0..60 {
        client.put(&format!("filler-{}", i % 7), json!(i)).unwrap();
    }
    let data_dir = c.nodes[leader].data_dir.clone();
    poll_until(T, || {
        data_dir.join("checkpoint.prev").exists().then_some(())
    })
    .expect("two checkpoints");
    for n in &mut c.nodes {
        n.terminate(T);
    }
    for n in &mut c.nodes {
        n.start();
    }
    let leader = c.wait_for_leader(LEADER_DEADLINE);
    let (s, again) = put_with_id(&c.nodes[leader].addr, "k", json!(1), "ops-1:5");
    assert_eq!((s, &again), (200, &first));
    assert_eq!(timestamp_of(&c.client(T), "k"), 1);
}

#[test]
fn a_member_that_caught_up_by_snapshot_knows_the_sessions() {
    let args = [
        "--log-segment-bytes",
        "16384",
        "--checkpoint-entries",
        "50",
        "--log-retain-entries",
        "20",
    ];
    let mut c = TestCluster::start(3, &args);
    let leader = c.wait_for_leader(LEADER_DEADLINE);
    let wiped = (leader + 1) % 3;
    c.nodes[wiped].kill9();
    fs::remove_dir_all(&c.nodes[wiped].data_dir).unwrap();
    let (_, first) = put_with_id(&c.nodes[leader].addr, "k", json!("once"), "job-3:1");
    let client = Client::new(
        vec![
            c.nodes[leader].addr.clone(),
            c.nodes[(leader + 2) % 3].addr.clone(),
        ],
        T,
    );
    // Write until the leader compacted its log past the session's entry (its first
    // segment is gone), so the wiped member cannot catch up from the log.
    let first_segment = c.nodes[leader]
        .data_dir
        .join("log/00000000000000000001-00000000000000000001.log");
    let mut last = 0;
    let mut i = 0;
    let compacted = poll_until(Duration::from_secs(60), || {
        for _ in 0..100 {
            last = client.put(&format!("f{}", i % 40), json!(i)).unwrap().index;
            i += 1;
        }
        (!first_segment.exists()).then_some(())
    });
    assert!(compacted.is_some(), "the leader never compacted");
    c.nodes[wiped].restart();
    c.nodes[wiped].wait_ready(READY_DEADLINE);
    wait_applied(&c.nodes[wiped], last, Duration::from_secs(30));
    assert!(
        c.nodes[wiped].log().contains("accepted a snapshot"),
        "it did not catch up by snapshot\n{}",
        c.nodes[wiped].log()
    );
    // Make it the leader, so its own session table answers.
    let target = c.nodes[wiped].addr.clone();
    c.client(T)
        .transfer_leader_at(&c.nodes[leader].addr, Some(&target))
        .unwrap();
    poll_until(T, || {
        (c.client(T).leader().ok()?.leader? == target).then_some(())
    })
    .expect("the caught-up member leads");
    let (s, again) = put_with_id(&target, "k", json!("once"), "job-3:1");
    assert_eq!((s, &again), (200, &first));
    assert_eq!(timestamp_of(&c.client(T), "k"), 1);
}

/// A TCP proxy to `upstream` that, for its first `drop_answers` connections, passes the
/// request on but closes the client's side once the upstream answers, without relaying
/// the answer: the write happens, the client never hears of it.
fn lossy_proxy(upstream: String, drop_answers: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { return };
            let n = s2.fetch_add(1, Ordering::SeqCst);
            let upstream = upstream.clone();
            thread::spawn(move || {
                let Ok(mut up) = TcpStream::connect(&upstream) else {
                    return;
                };
                let mut c2 = client.try_clone().unwrap();
                let mut u2 = up.try_clone().unwrap();
                let forward = thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut u2);
                    let _ = u2.shutdown(Shutdown::Write);
                });
                let mut buf = [0u8; 16 << 10];
                while let Ok(k) = up.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    if n < drop_answers {
                        // The answer arrived: lose it, and the connection with it.
                        let _ = client.shutdown(Shutdown::Both);
                        break;
                    }
                    if client.write_all(&buf[..k]).is_err() {
                        break;
                    }
                }
                let _ = client.shutdown(Shutdown::Both);
                let _ = forward.join();
            });
        }
    });
    (addr, seen)
}

/// The client sends a write; the answer is lost on the way back. It asks again with the
/// same request id, and the write is applied once: the key's timestamp is 1.
#[test]
fn a_lost_answer_and_the_clients_retry_apply_the_write_once() {
    let mut c = TestCluster::start(3, &[]);
    let leader = c.wait_for_leader(LEADER_DEADLINE);
    let (proxy, seen) = lossy_proxy(c.nodes[leader].addr.clone(), 1);
    let client = Client::new(vec![proxy], T);
    let r = client.put("once", json!("v")).expect("the retry answers");
    assert_eq!(r.timestamp, 1, "applied twice");
    assert!(seen.load(Ordering::SeqCst) >= 2, "no retry was made");
    let g = c.client(T).get("once", false).unwrap();
    assert_eq!((g.timestamp, g.index), (1, r.index));
}
