//! Minimal, deterministic reproductions of bugs the chaos suite found outside its own files,
//! kept as regression tests now that they are fixed. Each asserts the documented behaviour:
//!
//! `cargo test --test chaos known_bugs -- --nocapture`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use nacos_raft::client::Client;

use crate::cluster::{ChaosCluster, NetChoice, Timings};
use crate::common::poll_until;
use crate::history::Outcome;
use crate::net::Rules;
use crate::serial;
use crate::workload::Sender;

/// Reads one HTTP/1.1 request (head and Content-Length body) from `s`.
fn read_request(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("read request");
        assert!(n > 0, "connection closed mid-request");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().expect("length"))
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

/// The header value of `name` in a request's text.
fn header(request: &str, name: &str) -> Option<String> {
    request.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Regression, `nacos_raft::client`, found by the chaos run with seed 259807002: on a
/// pooled keep-alive connection ureq silently resent a DELETE when the connection closed
/// before the answer, and a refused resend was reported as "connection refused" (never
/// sent) for a DELETE that had been delivered and committed. Writes then went on their own
/// connections and were never sent twice. Now every write carries a request id, so sending
/// it again is safe (the cluster applies one id once and answers a repeat as the first
/// time): a DELETE whose answer is lost is sent again with the same id, and its answer is
/// the write's.
#[test]
fn a_delete_whose_answer_is_lost_is_sent_again_with_the_same_request_id() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = thread::spawn(move || {
        // The first copy is received whole, then the "node" dies before answering.
        let (mut first, _) = listener.accept().expect("accept");
        let delivered = read_request(&mut first);
        drop(first);
        // The copy sent again is answered.
        let (mut again, _) = listener.accept().expect("the delete is sent again");
        let resent = read_request(&mut again);
        let body = r#"{"key":"k","term":1,"index":2}"#;
        write!(
            again,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("answer");
        (delivered, resent)
    });
    let client = Client::new(vec![addr], Duration::from_secs(5));
    let result = client.delete("k");
    let (delivered, resent) = server.join().expect("server");
    assert!(
        delivered.starts_with("DELETE /v1/datum?key=k "),
        "{delivered:?}"
    );
    let id = header(&delivered, "x-request-id").expect("the delete carries a request id");
    assert_eq!(
        header(&resent, "x-request-id").as_deref(),
        Some(id.as_str()),
        "sent again under another id: it could apply twice"
    );
    let r = result.expect("the answer to the copy sent again is the write's");
    assert_eq!(r.index, 2);
}

/// `src/http/mod.rs` `forward`, found by the chaos runs (seed 848160825, and in
/// `regressions::a_full_cluster_restart_keeps_every_acknowledged_write`): a follower forwards
/// a client's write to the leader; the leader appends it and replicates it to a majority, then
/// dies before answering. The follower's forward fails with an I/O error before the publish
/// deadline, and `forward` maps every such error to `Error::NotLeader`, so the client gets
/// 503 `not_leader` — documented as "the write did not happen" — for a write that is
/// committed (the next leader has it). Outcome unknown is 504 `timeout`.
///
/// Deterministic set-up (needs network namespaces): 5 nodes; the leader L hears nothing from
/// three followers M (so it cannot learn that they hold the entry, and answers no one), while
/// its appends still reach them; the write goes through the fourth follower F. Once all three
/// M hold the entry it is on 4 of 5 logs, so committed whatever happens; then L is killed.
#[test]
fn a_forwarded_write_committed_by_a_dying_leader_is_not_reported_as_failed() {
    let _serial = serial();
    let timings = Timings {
        heartbeat_ms: 50,
        // Slow check-quorum, so the leader still leads while its acknowledgements are cut.
        election_ms: 1000,
        // A distant deadline, so the forward ends by the I/O error and not by the deadline.
        publish_ms: 5000,
    };
    let mut c = ChaosCluster::start(5, timings, NetChoice::Auto);
    if !c.has_partitions() {
        eprintln!(
            "chaos: SKIPPED: this reproduction needs network namespaces ({})",
            c.network_note
        );
        return;
    }
    let (l, _) = c.wait_leader(Duration::from_secs(20));
    let f = (l + 1) % 5;
    let m: Vec<usize> = (0..5).filter(|&i| i != l && i != f).collect();
    // A first write, applied everywhere, fixes the log's end before the one that matters.
    let first = c.nodes[l]
        .client(Duration::from_secs(10))
        .put("warm-up", serde_json::json!(0))
        .expect("first write");
    for i in 0..5 {
        let node = &c.nodes[i];
        let applied = poll_until(Duration::from_secs(10), || {
            node.status(Duration::from_millis(300))
                .filter(|s| s.applied_index >= first.index)
        });
        assert!(applied.is_some(), "node {i} never applied the first write");
    }
    let before = first.index;
    // The three followers' messages to the leader (their acknowledgements) are dropped; the
    // leader's appends to them still arrive.
    let mut rules = Rules::default();
    for &i in &m {
        rules.one_way.insert((i, l));
    }
    c.net
        .as_ref()
        .expect("namespaces")
        .apply(&rules)
        .expect("cut");
    let epoch = Instant::now();
    let writer = {
        let s = Sender::to_node(0, &c.nodes[f].addr, Duration::from_secs(15));
        thread::spawn(move || s.write("forwarded", "v1", epoch))
    };
    let replicated = poll_until(Duration::from_secs(5), || {
        m.iter()
            .all(|&i| {
                c.nodes[i]
                    .status(Duration::from_millis(300))
                    .is_some_and(|s| s.last_log_index > before)
            })
            .then_some(())
    });
    assert!(
        replicated.is_some(),
        "set-up failed: the write never reached the three followers\n{}",
        c.logs(30)
    );
    c.nodes[l].kill9();
    let answer = writer.join().expect("writer");
    c.net.as_ref().expect("namespaces").heal().expect("heal");
    c.wait_leader(Duration::from_secs(20));
    let read = Sender::to_any(1, &c.addrs(), Duration::from_secs(15)).read("forwarded", epoch);
    eprintln!(
        "chaos: answer {:?} ({:?}); read afterwards {:?}",
        answer.outcome, answer.error, read.value
    );
    assert_eq!(read.outcome, Outcome::Ok, "read after the election");
    assert_eq!(
        read.value.as_deref(),
        Some("v1"),
        "set-up: the entry was on 4 of 5 logs, so the next leader must have committed it"
    );
    let said_not_leader = answer
        .error
        .as_deref()
        .is_some_and(|e| e.contains("is not the leader"));
    assert!(
        !said_not_leader,
        "the write is committed, yet its answer was 503 not_leader (\"did not happen\"): {:?}",
        answer.error
    );
}
