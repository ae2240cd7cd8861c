//! End-to-end tests of access control with real processes: turning it on and off with
//! nacosctl, each permission allowed and refused (exit 7) on put, get, del, ls and watch,
//! tokens expiring and dying with a password change or a deleted user, Nacos's login and
//! `accessToken`, and the table replicated: through another member, a leader change, a
//! restart and a snapshot install.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use nacos_raft::client::{Client, ClientError, ErrorCode};
use nacos_raft::wire::auth::Perm;
use serde_json::json;

const T: Duration = Duration::from_secs(10);

/// nacosctl at `ep`, logged in as `user` (password from the environment, as a script does).
fn ctl_as(ep: &str, user: &str, password: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--user", user];
    all.extend_from_slice(args);
    nacosctl_with(Some(ep), &all, None, &[("NACOSCTL_PASSWORD", password)])
}

/// `nacosctl user add NAME --password-stdin`, as root when access control is on.
fn add_user(ep: &str, name: &str, password: &str, as_root: Option<&str>) {
    let mut args = vec![];
    let env: Vec<(&str, &str)> = match as_root {
        Some(pw) => {
            args.extend(["--user", "root"]);
            vec![("NACOSCTL_PASSWORD", pw)]
        }
        None => vec![],
    };
    args.extend(["user", "add", name, "--password-stdin"]);
    let out = nacosctl_with(
        Some(ep),
        &args,
        Some(format!("{password}\n").as_bytes()),
        &env,
    );
    assert_code(&out, 0);
}

fn token(ep: &str, user: &str, password: &str) -> String {
    Client::new(ep.split(',').map(str::to_string).collect(), T)
        .login(user, password)
        .unwrap_or_else(|e| panic!("login {user} at {ep}: {e}"))
        .token
}

fn client_with(ep: &str, token: &str) -> Client {
    let c = Client::new(vec![ep.to_string()], T);
    c.set_token(Some(token.to_string()));
    c
}

#[track_caller]
fn assert_denied<T: std::fmt::Debug>(r: Result<T, ClientError>, code: ErrorCode) {
    match r {
        Err(ClientError::Server { error, .. }) if error == code => {}
        other => panic!("expected {code}: {other:?}"),
    }
}

#[test]
fn access_control_on_and_off_with_each_permission_allowed_and_refused() {
    let mut c = TestCluster::start(3, &[]);
    c.wait_for_leader(LEADER_DEADLINE);
    let a = c.nodes[0].addr.clone();
    let b = c.nodes[1].addr.clone();
    let all = c.endpoints();
    // Off: anyone writes.
    assert_code(&nacosctl_at(&all, &["put", "app/k", "v0"]), 0);
    // On only with a root user, so nobody is locked out.
    let out = nacosctl_at(&a, &["auth", "enable"]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("user add root"), "{}", describe(&out));
    add_user(&a, "root", "root-pw", None);
    add_user(&a, "app", "app-pw", None);
    add_user(&a, "ro", "ro-pw", None);
    add_user(&a, "nobody", "nobody-pw", None);
    // A watch opened while access control is off ends when it comes on, before it shows
    // anything written after.
    let mut anonymous = CtlStream::spawn(&b, &["-o", "json", "watch", "--prefix", ""]);
    poll_until(T, || {
        Client::new(vec![b.clone()], T)
            .nacos_listeners_of(&b)
            .ok()?
            .iter()
            .any(|k| k.is_empty())
            .then_some(())
    })
    .expect("the anonymous watch was registered");
    for args in [
        vec!["role", "add", "app-rw"],
        vec![
            "role",
            "grant",
            "app-rw",
            "--prefix",
            "app/",
            "--perm",
            "readwrite",
        ],
        vec!["role", "add", "shared-r"],
        vec![
            "role", "grant", "shared-r", "--prefix", "shared/", "--perm", "read",
        ],
        vec!["user", "grant-role", "app", "app-rw"],
        vec!["user", "grant-role", "app", "shared-r"],
        vec!["user", "grant-role", "ro", "shared-r"],
        vec!["auth", "enable"],
    ] {
        assert_code(&nacosctl_at(&b, &args), 0);
    }
    let out = nacosctl_at(&a, &["-o", "json", "auth", "status"]);
    assert_eq!(json(&out), json!({"enabled": true, "users": 4, "roles": 2}));
    assert_code(
        &ctl_as(&all, "root", "root-pw", &["put", "after-enable", "hidden"]),
        0,
    );
    let end = anonymous.finish(T);
    assert!(
        !end.rest.iter().any(|l| l.contains("after-enable")),
        "an anonymous watch saw a write made after auth enable: {}",
        end.describe()
    );
    assert_eq!(end.code(), 4, "the watch ended: {}", end.describe());

    // No login: refused with exit 7 and a message that names the fix.
    let out = nacosctl_at(&all, &["get", "app/k"]);
    assert_code(&out, 7);
    assert!(stderr(&out).contains("--user"), "{}", describe(&out));
    let out = ctl_as(&all, "app", "wrong", &["get", "app/k"]);
    assert_code(&out, 7);

    // Each member checks tokens itself: log in and act through each one.
    for ep in [&a, &b, &c.nodes[2].addr] {
        let out = ctl_as(ep, "app", "app-pw", &["put", "app/k", "v1"]);
        assert_code(&out, 0);
        let out = ctl_as(ep, "app", "app-pw", &["get", "app/k"]);
        assert_code(&out, 0);
        assert_eq!(stdout(&out).trim(), "v1");
    }
    assert_code(
        &ctl_as(&all, "root", "root-pw", &["put", "shared/s", "x"]),
        0,
    );
    assert_code(
        &ctl_as(&all, "root", "root-pw", &["put", "secret/s", "x"]),
        0,
    );
    // app: read-write under app/, read under shared/, nothing elsewhere.
    let cases: &[(&str, &[&str], i32)] = &[
        ("app", &["get", "shared/s"], 0),
        ("app", &["put", "shared/s", "y"], 7),
        ("app", &["del", "shared/s"], 7),
        ("app", &["get", "secret/s"], 7),
        ("ro", &["get", "shared/s"], 0),
        ("ro", &["put", "app/k", "no"], 7),
        ("ro", &["get", "app/k"], 7),
        ("nobody", &["get", "shared/s"], 7),
        ("nobody", &["user", "list"], 7),
        ("app", &["auth", "disable"], 7),
        ("app", &["transfer-leader"], 7),
        ("app", &["role", "add", "mine"], 7),
    ];
    for (user, args, expected) in cases {
        let out = ctl_as(&all, user, &format!("{user}-pw"), args);
        assert_eq!(code(&out), *expected, "{user} {args:?}: {}", describe(&out));
        if *expected == 7 {
            assert!(
                stderr(&out).contains("may not") || stderr(&out).contains("needs the user"),
                "{user} {args:?}: {}",
                describe(&out)
            );
        }
    }
    let out = ctl_as(&all, "app", "app-pw", &["del", "app/k"]);
    assert_code(&out, 0);
    // ls shows only what the user may read.
    let out = ctl_as(&all, "ro", "ro-pw", &["ls"]);
    assert_code(&out, 0);
    let keys: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split('\t').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(keys, ["shared/s"]);
    let out = ctl_as(&all, "root", "root-pw", &["-o", "json", "user", "list"]);
    assert_code(&out, 0);
    assert_eq!(
        json(&out)["users"][0],
        json!({"name": "app", "roles": ["app-rw", "shared-r"]})
    );

    // watch: a key the user may not read is refused; a prefix watch skips those keys.
    let ro = token(&b, "ro", "ro-pw");
    let mut refused = CtlStream::spawn(&b, &["--token", &ro, "watch", "app/k"]);
    let end = refused.finish(T);
    assert_eq!(end.code(), 7, "{}", end.describe());
    let mut w = CtlStream::spawn(&b, &["--token", &ro, "-o", "json", "watch", "--prefix", ""]);
    // The watch is registered before the writes (the listeners say so; root may list them).
    let root = client_with(&b, &token(&b, "root", "root-pw"));
    poll_until(T, || {
        root.nacos_listeners_of(&b)
            .ok()?
            .iter()
            .any(|k| k.is_empty())
            .then_some(())
    })
    .expect("the watch was registered");
    assert_code(
        &ctl_as(&all, "root", "root-pw", &["put", "secret/t", "hidden"]),
        0,
    );
    assert_code(
        &ctl_as(&all, "root", "root-pw", &["put", "shared/t", "seen"]),
        0,
    );
    let first = w.take_lines(1, T).remove(0);
    let ev: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        ev["key"], "shared/t",
        "the first event after secret/t: {first}"
    );
    drop(w);

    // Off again (root only): everything is open, tokens or not.
    assert_code(&ctl_as(&all, "root", "root-pw", &["auth", "disable"]), 0);
    assert_code(&nacosctl_at(&all, &["get", "secret/s"]), 0);
    // --user against a cluster with access control off just works.
    assert_code(
        &ctl_as(&all, "nobody", "nobody-pw", &["get", "secret/s"]),
        0,
    );
}

#[test]
fn tokens_expire_and_die_with_a_new_password_or_a_deleted_user() {
    let node = TestNode::standalone(&["--auth-token-ttl-s", "2"]);
    let ep = node.addr.clone();
    add_user(&ep, "root", "root-pw", None);
    add_user(&ep, "app", "app-pw", None);
    assert_code(&nacosctl_at(&ep, &["auth", "enable"]), 0);
    let root = client_with(&ep, &token(&ep, "root", "root-pw"));
    root.role_add("all").unwrap();
    root.role_grant("all", "", Perm::Readwrite).unwrap();
    root.user_grant_role("app", "all").unwrap();

    // Expiry: the token works, then (within the 2 s TTL and some slack) stops working.
    let short = Client::new(vec![ep.clone()], T)
        .login("app", "app-pw")
        .unwrap();
    assert_eq!(short.ttl_s, 2);
    let app = client_with(&ep, &short.token);
    app.put("k", json!(1)).unwrap();
    let expired = poll_until(Duration::from_secs(10), || match app.get("k", false) {
        Err(ClientError::Server {
            error: ErrorCode::Unauthenticated,
            message,
            ..
        }) => Some(message),
        _ => None,
    })
    .expect("the token never expired");
    assert!(expired.contains("expired"), "{expired}");

    // A new password ends the tokens issued before it.
    let app = client_with(&ep, &token(&ep, "app", "app-pw"));
    app.get("k", false).unwrap();
    let root = client_with(&ep, &token(&ep, "root", "root-pw"));
    root.user_password("app", "new-pw").unwrap();
    assert_denied(app.get("k", false), ErrorCode::Unauthenticated);
    assert_denied(
        Client::new(vec![ep.clone()], T).login("app", "app-pw"),
        ErrorCode::Unauthenticated,
    );
    // A deleted user's tokens end with them.
    let app = client_with(&ep, &token(&ep, "app", "new-pw"));
    app.get("k", false).unwrap();
    root.user_delete("app").unwrap();
    assert_denied(app.get("k", false), ErrorCode::Unauthenticated);
    // root cannot be deleted while access control is on.
    match root.user_delete("root") {
        Err(ClientError::Server { status: 409, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn nacos_login_answers_nacos_shapes_and_access_token_is_accepted() {
    let node = TestNode::standalone(&[]);
    let ep = node.addr.clone();
    add_user(&ep, "root", "root-pw", None);
    // Off: Nacos's login says access control is off.
    let url = format!("http://{ep}/nacos/v1/auth/users/login");
    match ureq::post(&url).send_form(&[("username", "root"), ("password", "root-pw")]) {
        Err(ureq::Error::Status(409, _)) => {}
        other => panic!("{other:?}"),
    }
    assert_code(&nacosctl_at(&ep, &["auth", "enable"]), 0);
    let answer: serde_json::Value = ureq::post(&url)
        .send_form(&[("username", "root"), ("password", "root-pw")])
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(answer["globalAdmin"], true, "{answer}");
    assert_eq!(answer["tokenTtl"], 3600, "{answer}");
    let t = answer["accessToken"].as_str().unwrap().to_string();
    match ureq::post(&url).send_form(&[("username", "root"), ("password", "nope")]) {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("{other:?}"),
    }
    // accessToken wherever a bearer token goes.
    let put = ureq::post(&format!("http://{ep}/v1/datum"))
        .query("accessToken", &t)
        .send_json(json!({"key": "k", "value": 1}));
    assert_eq!(put.map(|r| r.status()).ok(), Some(200));
    let listeners = ureq::get(&format!("http://{ep}/nacos/v1/ns/raft/listeners"))
        .query("accessToken", &t)
        .call();
    assert_eq!(listeners.map(|r| r.status()).ok(), Some(200));
    match ureq::get(&format!("http://{ep}/nacos/v1/ns/raft/listeners")).call() {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_table_survives_a_leader_change_a_restart_and_a_snapshot_install() {
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
    let all = c.endpoints();
    add_user(&all, "root", "root-pw", None);
    add_user(&all, "app", "app-pw", None);
    assert_code(&nacosctl_at(&all, &["role", "add", "rw"]), 0);
    assert_code(
        &nacosctl_at(
            &all,
            &[
                "role",
                "grant",
                "rw",
                "--prefix",
                "a/",
                "--perm",
                "readwrite",
            ],
        ),
        0,
    );
    assert_code(&nacosctl_at(&all, &["user", "grant-role", "app", "rw"]), 0);
    assert_code(&nacosctl_at(&all, &["auth", "enable"]), 0);

    // Checked on one member by itself: login there, then one allowed and one refused write.
    let check = |ep: &str| {
        let app = client_with(ep, &token(ep, "app", "app-pw"));
        app.put("a/x", json!(ep))
            .unwrap_or_else(|e| panic!("at {ep}: {e}"));
        assert_denied(app.put("b/x", json!(1)), ErrorCode::PermissionDenied);
    };
    for n in &c.nodes {
        check(&n.addr);
    }

    // A leader change: the new leader holds the same table.
    let root = Client::new(c.addrs(), T);
    root.set_token(Some(token(&all, "root", "root-pw")));
    let target = c.nodes[(leader + 1) % 3].addr.clone();
    root.transfer_leader_at(&c.nodes[leader].addr, Some(&target))
        .unwrap();
    poll_until(T, || (root.leader().ok()?.leader? == target).then_some(()))
        .expect("leadership moved");
    check(&target);

    // A restart: the table comes back from the member's own checkpoint and log.
    let restarted = (leader + 2) % 3;
    c.nodes[restarted].restart();
    c.nodes[restarted].wait_ready(READY_DEADLINE);
    check(&c.nodes[restarted].addr);

    // A snapshot install: a wiped member catches up after the log was compacted past
    // every access-control entry, so only the snapshot can carry the table to it.
    let wiped = leader;
    c.nodes[wiped].kill9();
    fs::remove_dir_all(&c.nodes[wiped].data_dir).unwrap();
    let live: Vec<String> = (0..3)
        .filter(|&i| i != wiped)
        .map(|i| c.nodes[i].addr.clone())
        .collect();
    let writer = Client::new(live.clone(), T);
    writer.set_token(Some(token(&live[0], "app", "app-pw")));
    let first_segment = c.nodes[(wiped + 1) % 3]
        .data_dir
        .join("log/00000000000000000001-00000000000000000001.log");
    let mut last = 0;
    let mut i = 0;
    let compacted = poll_until(Duration::from_secs(60), || {
        for _ in 0..100 {
            last = writer
                .put(&format!("a/f{}", i % 40), json!(i))
                .unwrap()
                .index;
            i += 1;
        }
        (!first_segment.exists()).then_some(())
    });
    assert!(compacted.is_some(), "the log was never compacted");
    c.nodes[wiped].restart();
    c.nodes[wiped].wait_ready(READY_DEADLINE);
    wait_applied(&c.nodes[wiped], last, Duration::from_secs(30));
    assert!(
        c.nodes[wiped].log().contains("accepted a snapshot"),
        "it did not catch up by snapshot\n{}",
        c.nodes[wiped].log()
    );
    check(&c.nodes[wiped].addr);
    let ro_view = client_with(
        &c.nodes[wiped].addr,
        &token(&c.nodes[wiped].addr, "root", "root-pw"),
    );
    let users: Vec<String> = ro_view
        .user_list()
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(users, ["app", "root"]);
}
