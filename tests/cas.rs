//! End-to-end tests of compare-and-set on the Nacos timestamp: `nacosctl put --if-timestamp`
//! / `--if-absent` and `del --if-timestamp` (exit 6 when the condition fails), and racing
//! writers on a real cluster, where exactly one wins each round.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use nacos_raft::client::ClientError;
use serde_json::json;

const T: Duration = Duration::from_secs(10);

#[test]
fn nacosctl_writes_only_when_the_condition_holds_and_exits_6_otherwise() {
    let n = TestNode::standalone(&[]);
    let ep = n.addr.clone();
    assert_code(&nacosctl_at(&ep, &["put", "k", "first", "--if-absent"]), 0);
    let out = nacosctl_at(&ep, &["put", "k", "second", "--if-absent"]);
    assert_code(&out, 6);
    assert!(
        stderr(&out).contains("timestamp is 1"),
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("--if-timestamp 1"),
        "{}",
        describe(&out)
    );
    // With -o json the answer, with the current timestamp, is on stdout for a script.
    let out = nacosctl_at(&ep, &["-o", "json", "put", "k", "x", "--if-timestamp", "7"]);
    assert_code(&out, 6);
    assert_eq!(
        json(&out),
        json!({"error": "precondition_failed", "key": "k", "timestamp": 1})
    );
    let out = nacosctl_at(&ep, &["get", "k"]);
    assert_eq!(
        stdout(&out).trim(),
        "first",
        "a failed condition changed the key"
    );
    assert_code(
        &nacosctl_at(&ep, &["put", "k", "third", "--if-timestamp", "1"]),
        0,
    );
    assert_code(&nacosctl_at(&ep, &["del", "k", "--if-timestamp", "1"]), 6);
    assert_code(&nacosctl_at(&ep, &["del", "k", "--if-timestamp", "2"]), 0);
    assert_code(&nacosctl_at(&ep, &["get", "k"]), 3);
    // Absent is timestamp 0.
    let out = nacosctl_at(&ep, &["-o", "json", "del", "k", "--if-timestamp", "5"]);
    assert_code(&out, 6);
    assert_eq!(json(&out)["timestamp"], json!(0));
    // The two conditions together are a usage error.
    let out = nacosctl_at(
        &ep,
        &["put", "k", "v", "--if-absent", "--if-timestamp", "3"],
    );
    assert_code(&out, 2);
}

/// Each round, every client reads the key, then all try to replace it conditioned on what
/// they read: the condition is judged in log order, so exactly one wins per round, and the
/// final timestamp counts the winners. Half of the clients write through followers.
#[test]
fn racing_conditional_writers_one_wins_each_round() {
    const CLIENTS: usize = 6;
    const ROUNDS: u64 = 12;
    let mut c = TestCluster::start(3, &[]);
    c.wait_for_leader(LEADER_DEADLINE);
    c.client(T).put("counter", json!(0)).unwrap();
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let client = c.nodes[i % 3].client(T);
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut wins = Vec::new();
                for round in 0..ROUNDS {
                    // Everyone reads the same version before anyone writes.
                    let seen = client.get("counter", false).expect("read").timestamp;
                    barrier.wait();
                    match client.put_if("counter", json!(format!("{i}@{round}")), Some(seen)) {
                        Ok(r) => {
                            assert_eq!(r.timestamp, seen + 1);
                            wins.push(round);
                        }
                        Err(ClientError::PreconditionFailed { current, .. }) => {
                            assert!(current > seen, "lost to nobody: {current} <= {seen}");
                        }
                        Err(e) => panic!("client {i} round {round}: {e}"),
                    }
                    barrier.wait();
                }
                wins
            })
        })
        .collect();
    let mut per_round = vec![0u64; ROUNDS as usize];
    for h in handles {
        for round in h.join().expect("client thread") {
            per_round[round as usize] += 1;
        }
    }
    assert_eq!(per_round, vec![1; ROUNDS as usize], "winners per round");
    let g = c.client(T).get("counter", false).unwrap();
    assert_eq!(
        g.timestamp,
        1 + ROUNDS,
        "the final timestamp counts the winners"
    );
}
