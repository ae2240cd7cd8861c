//! End-to-end tests of observability: `GET /metrics` on a 3-member cluster under writes
//! (the values move where they should: commit index, proposals, the fsync histogram, peer
//! round trips; the exposition is what a Prometheus scraper takes), and
//! `nacosctl status --watch`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(10);

/// `GET /metrics` of one member: its content type and every sample, by name with labels.
fn scrape(addr: &str) -> (String, BTreeMap<String, f64>) {
    let resp = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .unwrap_or_else(|e| panic!("scrape {addr}: {e}"));
    let content_type = resp.header("Content-Type").unwrap_or("").to_string();
    let text = resp.into_string().unwrap();
    assert!(text.ends_with("# EOF\n"), "not a whole exposition:\n{text}");
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("{l:?}"));
            (name.to_string(), v)
        })
        .collect();
    (content_type, samples)
}

fn value(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {samples:#?}"))
}

#[test]
fn metrics_move_with_writes_on_a_three_member_cluster() {
    let mut c = TestCluster::start(3, &[]);
    let leader = c.wait_for_leader(LEADER_DEADLINE);
    let follower = (leader + 1) % 3;
    let (ct, before) = scrape(&c.nodes[leader].addr);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert_eq!(value(&before, "nacos_raft_is_leader"), 1.0);
    assert_eq!(value(&before, "nacos_raft_has_leader"), 1.0);
    let (_, f_before) = scrape(&c.nodes[follower].addr);
    assert_eq!(value(&f_before, "nacos_raft_is_leader"), 0.0);
    assert_eq!(
        value(&f_before, "nacos_raft_term"),
        value(&before, "nacos_raft_term")
    );

    // Through the leader itself, so its own publish route counts them.
    let client = c.nodes[leader].client(T);
    let mut last = 0;
    for i in 0..50 {
        last = client.put(&format!("m{}", i % 5), json!(i)).unwrap().index;
    }
    wait_applied(&c.nodes[follower], last, T);
    let (_, after) = scrape(&c.nodes[leader].addr);
    let moved = |name: &str| value(&after, name) - before.get(name).copied().unwrap_or_default();
    assert!(value(&after, "nacos_raft_commit_index") >= last as f64);
    assert!(value(&after, "nacos_raft_applied_index") >= last as f64);
    assert!(
        moved("nacos_raft_proposals_committed_total") >= 50.0,
        "{after:#?}"
    );
    assert!(moved("nacos_raft_log_fsync_duration_seconds_count") >= 1.0);
    assert!(moved("nacos_raft_log_batch_entries_sum") >= 50.0);
    assert_eq!(value(&after, "nacos_datums"), 5.0);
    assert!(
        moved("nacos_http_requests_total{route=\"publish\",code=\"200\"}") >= 1.0,
        "{after:#?}"
    );
    // Members talk over peer streams, one per direction, not a POST per batch.
    assert!(
        value(
            &after,
            "nacos_http_requests_total{route=\"raft_stream\",code=\"101\"}"
        ) >= 2.0,
        "{after:#?}"
    );
    assert_eq!(
        after.get("nacos_http_requests_total{route=\"raft_messages\",code=\"204\"}"),
        None,
        "{after:#?}"
    );
    // The leader measures its peers: round trips to both followers, and their lag.
    for (i, n) in c.nodes.iter().enumerate() {
        if i == leader {
            continue;
        }
        let rtt = format!(
            "nacos_raft_peer_round_trip_seconds_count{{peer=\"{}\"}}",
            n.addr
        );
        assert!(value(&after, &rtt) >= 1.0, "{rtt}");
        let lag = format!("nacos_raft_peer_lag_entries{{peer=\"{}\"}}", n.addr);
        assert!(value(&after, &lag) >= 0.0, "{lag}");
    }
    // A follower's commit index moved too, and it reports no lag of its own peers.
    let (_, f_after) = scrape(&c.nodes[follower].addr);
    assert!(value(&f_after, "nacos_raft_commit_index") >= last as f64);
    assert!(!f_after
        .keys()
        .any(|k| k.starts_with("nacos_raft_peer_lag_entries{")));
    assert!(value(&f_after, "process_resident_memory_bytes") > 0.0);
    assert!(value(&f_after, "process_open_fds") > 0.0);

    // A leader change is counted where it is seen.
    let client = c.client(T);
    let target = c.nodes[follower].addr.clone();
    client
        .transfer_leader_at(&c.nodes[leader].addr, Some(&target))
        .unwrap();
    poll_until(T, || {
        (client.leader().ok()?.leader? == target).then_some(())
    })
    .expect("leadership moved");
    let (_, f_led) = scrape(&target);
    assert_eq!(value(&f_led, "nacos_raft_is_leader"), 1.0);
    assert!(
        value(&f_led, "nacos_raft_leader_changes_total")
            > value(&f_before, "nacos_raft_leader_changes_total")
    );
}

#[test]
fn status_watch_prints_a_round_per_interval_until_interrupted() {
    let node = TestNode::standalone(&[]);
    // Not a terminal: one block per round, a blank line after each.
    let mut w = CtlStream::spawn(&node.addr, &["status", "--watch", "--interval", "200ms"]);
    let lines = w.take_lines(4, T);
    assert!(lines[0].contains("\tLEADER\t"), "{lines:?}");
    assert_eq!(lines[1], "", "{lines:?}");
    assert!(lines[2].contains("\tLEADER\t"), "{lines:?}");
    assert_eq!(lines[3], "", "{lines:?}");
    w.interrupt();
    let end = w.finish(T);
    assert_eq!(end.code(), 0, "{}", end.describe());
    // -o json: one compact report per line.
    let mut w = CtlStream::spawn(
        &node.addr,
        &["-o", "json", "status", "--watch", "--interval", "200ms"],
    );
    for line in w.take_lines(2, T) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["health"], "healthy", "{line}");
    }
    w.interrupt();
    assert_eq!(w.finish(T).code(), 0);
    // --interval without --watch is a usage error.
    assert_code(&nacosctl_at(&node.addr, &["status", "--interval", "1s"]), 2);
}
