//! End-to-end tests of TLS with real processes: a 3-member cluster whose clients and peers
//! talk HTTPS with mutual TLS on the peer API, access control over it, and the clear
//! errors of each misconfiguration: plain HTTP to a TLS port, HTTPS to a plain one, an
//! unknown CA, a certificate for another name, an expired certificate, and a peer request
//! without a client certificate.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nacos_raft::tls::local;
use serde_json::json;

const T: Duration = Duration::from_secs(10);

fn pki(dir: &Path, hosts: &[&str], expired: bool) -> local::Files {
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    local::make(dir, &hosts, expired).expect("test certificates")
}

fn tls_args(f: &local::Files) -> Vec<String> {
    [
        "--tls-cert",
        f.cert.to_str().unwrap(),
        "--tls-key",
        f.key.to_str().unwrap(),
        "--tls-client-ca",
        f.ca.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn a_tls_cluster_serves_clients_and_peers_over_https_with_mutual_tls() {
    let certs = tempfile::tempdir().unwrap();
    let f = pki(certs.path(), &["127.0.0.1"], false);
    let args = tls_args(&f);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = TestCluster::start(3, &argv);
    // A leader at all means votes and appends went over mutual TLS.
    let leader = c.wait_for_leader(LEADER_DEADLINE);
    let follower = (leader + 1) % 3;
    // A write through a follower is forwarded over TLS too.
    let r = c.nodes[follower]
        .client(T)
        .put("k", json!("over tls"))
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    for n in &c.nodes {
        wait_applied(n, r.index, T);
        let g = n.client(T).get("k", true).unwrap();
        assert_eq!(g.value, json!("over tls"), "{}", n.addr);
    }
    // nacosctl with https:// endpoints and the CA.
    let endpoints: Vec<String> = c.nodes.iter().map(TestNode::endpoint).collect();
    let eps = endpoints.join(",");
    let ca = f.ca.to_str().unwrap();
    let out = nacosctl_at(&eps, &["--cacert", ca, "put", "k2", "v2"]);
    assert_code(&out, 0);
    let out = nacosctl_at(&eps, &["--cacert", ca, "get", "k2"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out).trim(), "v2");
    assert_code(&nacosctl_at(&eps, &["--cacert", ca, "status"]), 0);
    // A client certificate where one is offered (members ask for it, clients may send it).
    let with_cert = nacosctl_at(
        &eps,
        &[
            "--cacert",
            ca,
            "--cert",
            f.cert.to_str().unwrap(),
            "--key",
            f.key.to_str().unwrap(),
            "get",
            "k2",
        ],
    );
    assert_code(&with_cert, 0);
    let half = nacosctl_at(
        &eps,
        &[
            "--cacert",
            ca,
            "--cert",
            f.cert.to_str().unwrap(),
            "get",
            "k2",
        ],
    );
    assert_code(&half, 2);
    // Commands that go on to members by the names they give each other (the leader,
    // the peers) reach them over TLS too.
    assert_code(&nacosctl_at(&eps, &["--cacert", ca, "check"]), 0);
    assert_code(&nacosctl_at(&eps, &["--cacert", ca, "transfer-leader"]), 0);
    let mut w = CtlStream::spawn(&eps, &["--cacert", ca, "-o", "json", "watch", "k3"]);
    poll_until(T, || {
        c.nodes.iter().find_map(|n| {
            n.client(T)
                .nacos_listeners_of(&n.endpoint())
                .ok()?
                .contains(&"k3".to_string())
                .then_some(())
        })
    })
    .expect("the watch was registered");
    assert_code(
        &nacosctl_at(&eps, &["--cacert", ca, "put", "k3", "seen"]),
        0,
    );
    let ev: serde_json::Value = serde_json::from_str(&w.take_lines(1, T)[0]).unwrap();
    assert_eq!(ev["value"], "seen");
    drop(w);

    // Access control over TLS: a login and a refusal, as in plain HTTP.
    let root_add = nacosctl_with(
        Some(&eps),
        &["--cacert", ca, "user", "add", "root", "--password-stdin"],
        Some(b"pw\n"),
        &[],
    );
    assert_code(&root_add, 0);
    assert_code(&nacosctl_at(&eps, &["--cacert", ca, "auth", "enable"]), 0);
    assert_code(&nacosctl_at(&eps, &["--cacert", ca, "get", "k2"]), 7);
    let as_root = nacosctl_with(
        Some(&eps),
        &["--cacert", ca, "--user", "root", "get", "k2"],
        None,
        &[("NACOSCTL_PASSWORD", "pw")],
    );
    assert_code(&as_root, 0);

    // A peer request with the secret but without a client certificate is refused.
    let no_cert = nacos_raft::tls::client_config(Some(&f.ca), None).unwrap();
    let agent = ureq::AgentBuilder::new()
        .tls_config(Arc::new(no_cert))
        .build();
    let url = format!("https://{}/v1/raft/messages", c.nodes[follower].addr);
    match agent
        .post(&url)
        .set(nacos_raft::node::TOKEN_HEADER, CLUSTER_SECRET)
        .send_string("[]")
    {
        Err(ureq::Error::Status(403, r)) => {
            let text = r.into_string().unwrap();
            assert!(text.contains("client certificate"), "{text}");
        }
        other => panic!("a peer request without a certificate: {other:?}"),
    }
    // So is a peer stream: the certificate is checked before the connection switches.
    let stream_url = format!("https://{}/v1/raft/stream", c.nodes[follower].addr);
    match agent
        .post(&stream_url)
        .set(nacos_raft::node::TOKEN_HEADER, CLUSTER_SECRET)
        .set("Connection", "Upgrade")
        .set("Upgrade", "nacos-raft-frames/1")
        .call()
    {
        Err(ureq::Error::Status(403, r)) => {
            let text = r.into_string().unwrap();
            assert!(text.contains("client certificate"), "{text}");
        }
        other => panic!("a peer stream without a certificate: {other:?}"),
    }
    // With the member certificate it is taken (an empty batch changes nothing).
    let with_cert = nacos_raft::tls::client_config(Some(&f.ca), Some((&f.cert, &f.key))).unwrap();
    let agent = ureq::AgentBuilder::new()
        .tls_config(Arc::new(with_cert))
        .build();
    let taken = agent
        .post(&url)
        .set(nacos_raft::node::TOKEN_HEADER, CLUSTER_SECRET)
        .send_string("[]");
    assert_eq!(taken.map(|r| r.status()).ok(), Some(204));

    // Plain HTTP to the TLS port: a plain-text answer that says so.
    let plain = format!("http://{}/v1/health", c.nodes[0].addr);
    match ureq::get(&plain).call() {
        Err(ureq::Error::Status(400, r)) => {
            let text = r.into_string().unwrap();
            assert!(text.contains("serves HTTPS"), "{text}");
        }
        other => panic!("plain HTTP to the TLS port: {other:?}"),
    }
    let out = nacosctl_at(&c.nodes[0].addr, &["get", "k2"]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("https://"), "{}", describe(&out));
    // A CA this client does not know.
    let other = tempfile::tempdir().unwrap();
    let g = pki(other.path(), &["127.0.0.1"], false);
    let out = nacosctl_at(&eps, &["--cacert", g.ca.to_str().unwrap(), "get", "k2"]);
    assert_code(&out, 4);
    assert!(stderr(&out).contains("--cacert"), "{}", describe(&out));
    // The members say so too.
    let logged = |what: &str| {
        poll_until(T, || {
            c.nodes.iter().any(|n| n.log().contains(what)).then_some(())
        })
        .is_some()
    };
    assert!(logged("sent plain HTTP to the TLS port"), "{}", c.logs());
    assert!(logged("TLS with 127.0.0.1:"), "{}", c.logs());
}

/// A standalone node serving a certificate no client can verify for it: started, and
/// waited for through its log (the health check cannot get through), with its temp dir.
fn unverifiable(f: &local::Files) -> (TestNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_ports(1)[0]);
    let args = [
        "--tls-cert",
        f.cert.to_str().unwrap(),
        "--tls-key",
        f.key.to_str().unwrap(),
    ];
    let mut node = TestNode::new(
        &addr,
        &dir.path().join("data"),
        &dir.path().join("node.log"),
        &args,
    );
    node.start();
    poll_until(READY_DEADLINE, || {
        node.log().contains("LEADER").then_some(())
    })
    .unwrap_or_else(|| panic!("the node never led\n{}", node.log_excerpt()));
    (node, dir)
}

#[test]
fn https_to_a_plain_port_a_wrong_name_and_an_expired_certificate_are_named() {
    let certs = tempfile::tempdir().unwrap();
    let f = pki(certs.path(), &["127.0.0.1"], false);
    let plain = TestNode::standalone(&[]);
    let ca = f.ca.to_str().unwrap();
    let out = nacosctl_at(
        &format!("https://{}", plain.addr),
        &["--cacert", ca, "get", "k"],
    );
    assert_code(&out, 4);
    assert!(
        stderr(&out).contains("does not speak TLS"),
        "{}",
        describe(&out)
    );

    // A certificate for another name than the one dialled.
    let named = tempfile::tempdir().unwrap();
    let n = pki(named.path(), &["member.example"], false);
    let (node, _d1) = unverifiable(&n);
    let out = nacosctl_at(
        &format!("https://{}", node.addr),
        &["--cacert", n.ca.to_str().unwrap(), "get", "k"],
    );
    assert_code(&out, 4);
    assert!(
        stderr(&out).contains("not valid for this host"),
        "{}",
        describe(&out)
    );

    // An expired certificate.
    let old = tempfile::tempdir().unwrap();
    let e = pki(old.path(), &["127.0.0.1"], true);
    let (node, _d2) = unverifiable(&e);
    let out = nacosctl_at(
        &format!("https://{}", node.addr),
        &["--cacert", e.ca.to_str().unwrap(), "get", "k"],
    );
    assert_code(&out, 4);
    assert!(stderr(&out).contains("validity"), "{}", describe(&out));
}
