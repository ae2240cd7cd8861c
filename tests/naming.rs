//! End-to-end tests of the naming layer through the Nacos 1.x Open API, with requests as the
//! Nacos documentation writes them (form bodies and query parameters): persistent instances
//! and services on a 3-member cluster, concurrent registrations to one service (none lost),
//! a leader killed during registrations (every acknowledged one kept), and the service view
//! rebuilt after a restart.

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

/// Sends a naming request: parameters in a form body for POST and PUT (as Nacos clients
/// do), in the query otherwise. Returns the status and the body.
fn nacos(method: &str, addr: &str, path: &str, params: &[(&str, &str)]) -> (u16, String) {
    let url = format!("http://{addr}/nacos/v1/ns/{path}");
    let req = ureq::request(method, &url).timeout(T);
    let sent = if method == "POST" || method == "PUT" {
        req.send_form(params)
    } else {
        params.iter().fold(req, |r, (k, v)| r.query(k, v)).call()
    };
    match sent {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[track_caller]
fn ok(r: (u16, String)) {
    assert_eq!(r, (200, "ok".to_string()));
}

#[track_caller]
fn json_ok(r: (u16, String)) -> Value {
    assert_eq!(r.0, 200, "{}", r.1);
    serde_json::from_str(&r.1).unwrap_or_else(|e| panic!("{e}: {}", r.1))
}

fn ports_of(list: &Value) -> Vec<u64> {
    let mut ports: Vec<u64> = list["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["port"].as_u64().unwrap())
        .collect();
    ports.sort_unstable();
    ports
}

fn register(addr: &str, service: &str, port: u16) -> (u16, String) {
    nacos(
        "POST",
        addr,
        "instance",
        &[
            ("serviceName", service),
            ("ip", "127.0.0.1"),
            ("port", &port.to_string()),
            ("ephemeral", "false"),
        ],
    )
}

#[test]
fn persistent_instances_and_services_through_the_open_api() {
    let mut c = TestCluster::start(3, &[]);
    let l = c.wait_for_leader(T);
    let leader = c.nodes[l].addr.clone();
    let follower = c.nodes[(l + 1) % 3].addr.clone();

    // Ephemeral is Nacos's default: refused, naming the fix.
    let (code, body) = nacos(
        "POST",
        &follower,
        "instance",
        &[
            ("serviceName", "orders"),
            ("ip", "127.0.0.1"),
            ("port", "1"),
        ],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("ephemeral=false"), "{body}");

    // Register through a follower (forwarded) and the leader; the service appears by itself.
    ok(nacos(
        "POST",
        &follower,
        "instance",
        &[
            ("serviceName", "orders"),
            ("ip", "127.0.0.1"),
            ("port", "8080"),
            ("ephemeral", "false"),
            ("weight", "2"),
            ("metadata", r#"{"zone":"a"}"#),
        ],
    ));
    ok(nacos(
        "POST",
        &leader,
        "instance",
        &[
            ("serviceName", "DEFAULT_GROUP@@orders"),
            ("ip", "127.0.0.1"),
            ("port", "8081"),
            ("ephemeral", "FALSE"),
            ("clusterName", "B"),
            ("enable", "true"),
        ],
    ));
    // Read back from every member (linearizable: no waiting for replication).
    for n in &c.nodes {
        let list = json_ok(nacos(
            "GET",
            &n.addr,
            "instance/list",
            &[("serviceName", "orders")],
        ));
        assert_eq!(list["name"], "DEFAULT_GROUP@@orders");
        assert_eq!(ports_of(&list), vec![8080, 8081], "{list}");
    }
    let only_b = json_ok(nacos(
        "GET",
        &follower,
        "instance/list",
        &[("serviceName", "orders"), ("clusters", "B")],
    ));
    assert_eq!(ports_of(&only_b), vec![8081]);
    let detail = json_ok(nacos(
        "GET",
        &follower,
        "instance",
        &[
            ("serviceName", "orders"),
            ("ip", "127.0.0.1"),
            ("port", "8080"),
        ],
    ));
    assert_eq!(detail["weight"], 2.0);
    assert_eq!(detail["metadata"]["zone"], "a");
    assert_eq!(
        detail["instanceId"],
        "127.0.0.1#8080#DEFAULT#DEFAULT_GROUP@@orders"
    );

    // Modify: weight, metadata as k=v; mark unhealthy; healthyOnly leaves it out.
    ok(nacos(
        "PUT",
        &follower,
        "instance",
        &[
            ("serviceName", "orders"),
            ("ip", "127.0.0.1"),
            ("port", "8080"),
            ("ephemeral", "false"),
            ("weight", "5"),
            ("metadata", "zone=b,rack=1"),
        ],
    ));
    ok(nacos(
        "PUT",
        &leader,
        "health",
        &[
            ("serviceName", "orders"),
            ("ip", "127.0.0.1"),
            ("port", "8080"),
            ("healthy", "false"),
        ],
    ));
    let detail = json_ok(nacos(
        "GET",
        &leader,
        "instance",
        &[
            ("serviceName", "orders"),
            ("ip", "127.0.0.1"),
            ("port", "8080"),
        ],
    ));
    assert_eq!(detail["weight"], 5.0);
    assert_eq!(detail["healthy"], false);
    assert_eq!(detail["metadata"]["rack"], "1");
    let healthy = json_ok(nacos(
        "GET",
        &follower,
        "instance/list",
        &[("serviceName", "orders"), ("healthyOnly", "true")],
    ));
    assert_eq!(ports_of(&healthy), vec![8081]);
    // Updating an instance that is not there is refused.
    let (code, body) = nacos(
        "PUT",
        &follower,
        "instance",
        &[
            ("serviceName", "orders"),
            ("ip", "127.0.0.1"),
            ("port", "9999"),
            ("ephemeral", "false"),
        ],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("instance not exist"), "{body}");

    // Services: create (twice is a conflict), get, update, namespaces, groups, pages.
    ok(nacos(
        "POST",
        &follower,
        "service",
        &[("serviceName", "billing"), ("protectThreshold", "0.5")],
    ));
    let (code, body) = nacos("POST", &leader, "service", &[("serviceName", "billing")]);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("already exists"), "{body}");
    ok(nacos(
        "PUT",
        &leader,
        "service",
        &[("serviceName", "billing"), ("metadata", "owner=ops")],
    ));
    let svc = json_ok(nacos(
        "GET",
        &follower,
        "service",
        &[("serviceName", "billing")],
    ));
    assert_eq!(svc["name"], "billing");
    assert_eq!(svc["protectThreshold"], 0.5);
    assert_eq!(svc["metadata"]["owner"], "ops");
    let orders = json_ok(nacos(
        "GET",
        &follower,
        "service",
        &[("serviceName", "orders")],
    ));
    let clusters: Vec<&str> = orders["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(clusters, vec!["B", "DEFAULT"]);
    for (ns, group, name) in [
        ("dev", "DEFAULT_GROUP", "orders"),
        ("public", "g2", "orders"),
    ] {
        ok(nacos(
            "POST",
            &follower,
            "instance",
            &[
                ("namespaceId", ns),
                ("groupName", group),
                ("serviceName", name),
                ("ip", "127.0.0.1"),
                ("port", "7000"),
                ("ephemeral", "false"),
            ],
        ));
    }
    let dev = json_ok(nacos(
        "GET",
        &leader,
        "instance/list",
        &[("serviceName", "orders"), ("namespaceId", "dev")],
    ));
    assert_eq!(ports_of(&dev), vec![7000], "namespaces are apart");
    let g2 = json_ok(nacos(
        "GET",
        &leader,
        "instance/list",
        &[("serviceName", "g2@@orders")],
    ));
    assert_eq!(ports_of(&g2), vec![7000], "groups are apart");
    for i in 0..5 {
        ok(nacos(
            "POST",
            &leader,
            "service",
            &[("serviceName", &format!("page-{i}"))],
        ));
    }
    // public/DEFAULT_GROUP: billing, orders, page-0..4 = 7 services, in name order.
    let page = json_ok(nacos(
        "GET",
        &follower,
        "service/list",
        &[("pageNo", "2"), ("pageSize", "3")],
    ));
    assert_eq!(page["count"], 7);
    assert_eq!(
        page["doms"],
        serde_json::json!(["page-1", "page-2", "page-3"])
    );
    let counts = json_ok(nacos("GET", &follower, "operator/metrics", &[]));
    assert_eq!(counts["serviceCount"], 9, "{counts}");
    assert_eq!(counts["instanceCount"], 4, "{counts}");

    // A service with instances cannot be deleted; deregistered, it can.
    let (code, body) = nacos("DELETE", &leader, "service", &[("serviceName", "orders")]);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("has instances"), "{body}");
    for (port, cluster) in [("8080", "DEFAULT"), ("8081", "B")] {
        ok(nacos(
            "DELETE",
            &follower,
            "instance",
            &[
                ("serviceName", "orders"),
                ("ip", "127.0.0.1"),
                ("port", port),
                ("clusterName", cluster),
                ("ephemeral", "false"),
            ],
        ));
    }
    let empty = json_ok(nacos(
        "GET",
        &leader,
        "instance/list",
        &[("serviceName", "orders")],
    ));
    assert_eq!(ports_of(&empty), Vec::<u64>::new());
    ok(nacos(
        "DELETE",
        &follower,
        "service",
        &[("serviceName", "orders")],
    ));
    let (code, _) = nacos("GET", &leader, "service", &[("serviceName", "orders")]);
    assert_eq!(code, 404);
    // The datums are Nacos's keys and shapes.
    let raw = json_ok(nacos(
        "GET",
        &leader,
        "raft/datum",
        &[(
            "keys",
            "com.alibaba.nacos.naming.domains.meta.public##DEFAULT_GROUP@@billing",
        )],
    ));
    assert_eq!(raw[0]["value"]["name"], "DEFAULT_GROUP@@billing", "{raw}");
    assert_eq!(raw[0]["value"]["namespaceId"], "public", "{raw}");
}

#[test]
fn concurrent_registrations_to_one_service_are_all_kept_across_a_leader_kill() {
    let mut c = TestCluster::start(3, &[]);
    c.wait_for_leader(T);
    let addrs = c.addrs();
    // 24 instances at once through all three members: none may be lost to another's
    // read-modify-write.
    let threads: Vec<_> = (0..24u16)
        .map(|i| {
            let addr = addrs[i as usize % 3].clone();
            thread::spawn(move || register(&addr, "busy", 10_000 + i))
        })
        .collect();
    for t in threads {
        ok(t.join().unwrap());
    }
    let list = json_ok(nacos(
        "GET",
        &addrs[0],
        "instance/list",
        &[("serviceName", "busy")],
    ));
    assert_eq!(ports_of(&list), (10_000..10_024).collect::<Vec<u64>>());

    // Registrations go on while the leader is killed: every acknowledged one is kept.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..6u16)
        .map(|w| {
            let addrs = addrs.clone();
            let acked = acked.clone();
            thread::spawn(move || {
                for k in 0..15u16 {
                    let port = 20_000 + w * 100 + k;
                    let addr = &addrs[(w + k) as usize % 3];
                    if register(addr, "failover", port) == (200, "ok".to_string()) {
                        acked.lock().unwrap().push(u64::from(port));
                    }
                }
            })
        })
        .collect();
    // Kill once some registrations are in.
    poll_until(T, || (acked.lock().unwrap().len() >= 10).then_some(()))
        .expect("registrations before the kill");
    let l = c.wait_for_leader(T);
    c.nodes[l].kill9();
    for w in workers {
        w.join().unwrap();
    }
    c.wait_for_leader(T);
    let live = c
        .nodes
        .iter()
        .find(|n| n.addr != addrs[l])
        .unwrap()
        .addr
        .clone();
    let list = json_ok(nacos(
        "GET",
        &live,
        "instance/list",
        &[("serviceName", "failover")],
    ));
    let present = ports_of(&list);
    let mut acked = acked.lock().unwrap().clone();
    acked.sort_unstable();
    let lost: Vec<_> = acked.iter().filter(|p| !present.contains(p)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but lost: {lost:?}\n{}",
        c.logs()
    );
    assert!(
        acked.len() > 10,
        "too few acknowledged: {acked:?}\n{}",
        c.logs()
    );
}

#[test]
fn the_service_view_is_rebuilt_after_a_restart() {
    let mut node = TestNode::standalone(&[]);
    for port in [1, 2, 3] {
        ok(register(&node.addr, "kept", port));
    }
    ok(nacos(
        "DELETE",
        &node.addr,
        "instance",
        &[
            ("serviceName", "kept"),
            ("ip", "127.0.0.1"),
            ("port", "2"),
            ("ephemeral", "false"),
        ],
    ));
    node.restart();
    node.wait_ready(T);
    node.wait_leader(T);
    let list = json_ok(nacos(
        "GET",
        &node.addr,
        "instance/list",
        &[("serviceName", "kept")],
    ));
    assert_eq!(ports_of(&list), vec![1, 3]);
    let services = json_ok(nacos("GET", &node.addr, "service/list", &[]));
    assert_eq!(services["doms"], serde_json::json!(["kept"]));
}

#[test]
fn a_member_whose_view_is_live_rebuilds_it_after_a_snapshot_install() {
    let args = [
        "--log-segment-bytes",
        "16384",
        "--checkpoint-entries",
        "50",
        "--log-retain-entries",
        "20",
    ];
    let mut c = TestCluster::start(3, &args);
    let l = c.wait_for_leader(T);
    let f = (l + 1) % 3;
    let leader = c.nodes[l].addr.clone();
    let follower = c.nodes[f].addr.clone();
    for port in [1, 2, 3] {
        ok(register(&leader, "snap", port));
    }
    // The follower's view exists and listens.
    let list = json_ok(nacos(
        "GET",
        &follower,
        "instance/list",
        &[("serviceName", "snap")],
    ));
    assert_eq!(ports_of(&list), vec![1, 2, 3]);

    // Paused, it misses changes the leader then compacts away: it can only catch up by a
    // snapshot, which drops every listener of its notifier, the view's too.
    c.nodes[f].pause();
    ok(register(&leader, "snap", 4));
    ok(nacos(
        "DELETE",
        &leader,
        "instance",
        &[
            ("serviceName", "snap"),
            ("ip", "127.0.0.1"),
            ("port", "1"),
            ("ephemeral", "false"),
        ],
    ));
    // Only the leader: a client that tried the paused member would wait on it.
    let writer = nacos_raft::client::Client::new(vec![leader.clone()], T);
    let first_segment = c.nodes[l]
        .data_dir
        .join("log/00000000000000000001-00000000000000000001.log");
    let mut last = 0;
    let mut i = 0;
    let compacted = poll_until(Duration::from_secs(60), || {
        for _ in 0..100 {
            last = writer
                .put(&format!("filler/{}", i % 40), serde_json::json!(i))
                .unwrap()
                .index;
            i += 1;
        }
        (!first_segment.exists()).then_some(())
    });
    assert!(compacted.is_some(), "the log was never compacted");
    c.nodes[f].resume();
    wait_applied(&c.nodes[f], last, Duration::from_secs(30));
    assert!(
        c.nodes[f].log().contains("accepted a snapshot"),
        "it did not catch up by snapshot\n{}",
        c.nodes[f].log()
    );
    let stale = [("serviceName", "snap"), ("stale", "true")];
    let list = json_ok(nacos("GET", &follower, "instance/list", &stale));
    assert_eq!(ports_of(&list), vec![2, 3, 4]);
    // And it listens again: a change after the install reaches it.
    ok(register(&follower, "snap", 5));
    let list = json_ok(nacos(
        "GET",
        &follower,
        "instance/list",
        &[("serviceName", "snap")],
    ));
    assert_eq!(ports_of(&list), vec![2, 3, 4, 5]);
}

#[test]
fn nacosctl_lists_services_and_instances() {
    let node = TestNode::standalone(&[]);
    for port in [8080, 8081] {
        ok(register(&node.addr, "orders", port));
    }
    ok(nacos(
        "POST",
        &node.addr,
        "instance",
        &[
            ("serviceName", "g2@@billing"),
            ("ip", "127.0.0.1"),
            ("port", "9000"),
            ("ephemeral", "false"),
            ("metadata", "zone=a"),
        ],
    ));
    let ep = node.addr.clone();
    let out = nacosctl_at(&ep, &["service", "list", "-o", "text"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "orders\n");
    let out = nacosctl_at(&ep, &["service", "list", "--group", "g2", "-o", "json"]);
    assert_code(&out, 0);
    assert_eq!(json(&out)["services"], serde_json::json!(["billing"]));
    let out = nacosctl_at(&ep, &["instance", "list", "orders", "-o", "json"]);
    assert_code(&out, 0);
    let ports: Vec<u64> = json(&out)["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, vec![8080, 8081]);
    let out = nacosctl_at(&ep, &["instance", "list", "g2@@billing"]);
    assert_code(&out, 0);
    let table = stdout(&out);
    assert!(
        table.contains("9000") && table.contains("zone=a"),
        "{table}"
    );
    let out = nacosctl_at(
        &ep,
        &["service", "get", "billing", "--group", "g2", "-o", "json"],
    );
    assert_code(&out, 0);
    assert_eq!(json(&out)["groupName"], "g2");
    // A service that does not exist: exit 3, naming it.
    let out = nacosctl_at(&ep, &["service", "get", "nope"]);
    assert_code(&out, 3);
    assert!(
        stderr(&out).contains("DEFAULT_GROUP@@nope"),
        "{}",
        describe(&out)
    );
}

/// The instances of `service` that `healthyOnly` lists, by port.
fn healthy_ports(addr: &str, service: &str) -> Vec<u64> {
    ports_of(&json_ok(nacos(
        "GET",
        addr,
        "instance/list",
        &[("serviceName", service), ("healthyOnly", "true")],
    )))
}

#[test]
fn tcp_health_checks_follow_the_instances_ports() {
    let node = TestNode::standalone(&[
        "--health-check",
        "tcp",
        "--health-check-interval-ms",
        "100",
        "--health-check-timeout-ms",
        "200",
    ]);
    // Only loopback addresses: one that listens (no accept needed: the kernel completes the
    // connect), one where nothing does.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let live = listener.local_addr().unwrap().port();
    let dead: u16 = dead_addr().rsplit(':').next().unwrap().parse().unwrap();
    ok(register(&node.addr, "checked", live));
    ok(register(&node.addr, "checked", dead));
    let want = |ports: Vec<u64>| {
        poll_until(T, || {
            (healthy_ports(&node.addr, "checked") == ports).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "healthy: {:?}, want {ports:?}\n{}",
                healthy_ports(&node.addr, "checked"),
                node.log_excerpt()
            )
        })
    };
    want(vec![u64::from(live)]);
    assert!(node.log().contains(&format!(
        "127.0.0.1:{dead} of DEFAULT_GROUP@@checked is unhealthy"
    )));
    // Set by hand while the checks run: refused, as in Nacos.
    let (code, body) = nacos(
        "PUT",
        &node.addr,
        "health",
        &[
            ("serviceName", "checked"),
            ("ip", "127.0.0.1"),
            ("port", &dead.to_string()),
            ("healthy", "true"),
        ],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("health check is still working"), "{body}");
    // The live one stops listening, then listens again.
    drop(listener);
    want(vec![]);
    let _again = std::net::TcpListener::bind(("127.0.0.1", live)).unwrap();
    want(vec![u64::from(live)]);
}
