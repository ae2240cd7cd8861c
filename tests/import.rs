//! End-to-end tests of `nacosctl import`: a Nacos 1.x naming data dir, written here in the
//! exact layouts of Nacos's `RaftStore` (reference §9: namespace dirs and top-level files,
//! `#` for `:` in file names, the `.datum` suffix of 1.3.1/1.3.2 beside a 1.4 file for the
//! same key, a pre-1.0 instance list, a service meta without a group, the switch domain, a
//! blank file, a stray file, a torn file), imported into a 3-member cluster and read back
//! with values and timestamps; a torn file stops it with nothing sent; a re-run changes
//! nothing; a dry run writes nothing; and the imported services are served through the
//! naming Open API.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

const IPLIST: &str = "com.alibaba.nacos.naming.iplist.";
const META: &str = "com.alibaba.nacos.naming.domains.meta.";
const SWITCH: &str =
    "com.alibaba.nacos.naming.domains.meta.00-00---000-NACOS_SWITCH_DOMAIN-000---00-00";

/// An instance as Nacos 1.4 writes it into an instance list.
fn instance(ip: &str, port: u16, service: &str) -> Value {
    json!({
        "instanceId": format!("{ip}#{port}#DEFAULT#{service}"),
        "ip": ip, "port": port, "weight": 1.0, "healthy": true, "enabled": true,
        "ephemeral": false, "clusterName": "DEFAULT", "serviceName": service,
        "metadata": {"zone": "a"}, "lastBeat": 1_600_000_000_000u64, "marked": false,
        "app": "DEFAULT"
    })
}

/// A service meta as Nacos 1.4 writes it.
fn service(ns: &str, group: &str, name: &str) -> Value {
    json!({
        "name": format!("{group}@@{name}"), "groupName": group, "namespaceId": ns,
        "protectThreshold": 0.0, "metadata": {}, "selector": {"type": "none"},
        "token": "none", "owners": [], "resetWeight": false, "enabled": true,
        "ipDeleteTimeout": 30000, "lastModifiedMillis": 0, "checksum": "0",
        "clusterMap": {}
    })
}

/// The datum file text Nacos writes: `{"key","value","timestamp"}`, compact.
fn datum(key: &str, value: &Value, timestamp: u64) -> String {
    serde_json::to_string(&json!({"key": key, "value": value, "timestamp": timestamp})).unwrap()
}

/// What the cluster must hold after the import: key -> (value, timestamp).
type Expected = BTreeMap<String, (Value, u64)>;

/// The fixture: a Nacos naming data dir at `<root>/naming`, and what importing it must give.
struct Fixture {
    dir: PathBuf,
    expected: Expected,
    /// The file of the older of two copies of one key (it must lose).
    superseded: PathBuf,
    /// Files Nacos would not load: the blank one and the stray one.
    ignored: Vec<PathBuf>,
}

fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join("data").join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    p
}

fn nacos_dir(root: &Path) -> Fixture {
    let dir = root.join("naming");
    fs::create_dir_all(dir.join("data")).unwrap();
    fs::write(
        dir.join("meta.properties"),
        "#Wed Dec 02 10:00:00 CST 2020\nterm=1203\n",
    )
    .unwrap();
    let mut expected = Expected::new();

    // public: a 1.4 service with two instances.
    let orders_meta = format!("{META}public##DEFAULT_GROUP@@orders");
    let v = service("public", "DEFAULT_GROUP", "orders");
    write(
        &dir,
        &format!("public/{orders_meta}"),
        &datum(&orders_meta, &v, 3),
    );
    expected.insert(orders_meta, (v, 3));
    let orders = format!("{IPLIST}public##DEFAULT_GROUP@@orders");
    let v = json!({"instanceList": [
        instance("127.0.0.11", 8080, "DEFAULT_GROUP@@orders"),
        instance("127.0.0.12", 8080, "DEFAULT_GROUP@@orders"),
    ]});
    write(&dir, &format!("public/{orders}"), &datum(&orders, &v, 7));
    expected.insert(orders, (v, 7));

    // A Dubbo-style name: ':' in the key, '#' in the file name.
    let dubbo = "providers:org.demo.Api:1.0:";
    let dubbo_meta = format!("{META}public##DEFAULT_GROUP@@{dubbo}");
    let v = service("public", "DEFAULT_GROUP", dubbo);
    write(
        &dir,
        &format!("public/{}", dubbo_meta.replace(':', "#")),
        &datum(&dubbo_meta, &v, 2),
    );
    expected.insert(dubbo_meta, (v, 2));
    let dubbo_list = format!("{IPLIST}public##DEFAULT_GROUP@@{dubbo}");
    let v = json!({"instanceList": [instance("127.0.0.13", 20880, &format!("DEFAULT_GROUP@@{dubbo}"))]});
    write(
        &dir,
        &format!("public/{}", dubbo_list.replace(':', "#")),
        &datum(&dubbo_list, &v, 4),
    );
    expected.insert(dubbo_list, (v, 4));

    // Before Nacos 1.0: an instance list as a bare array, and a service meta without a
    // group, under keys without a group.
    let legacy_list = format!("{IPLIST}public##legacy");
    let old = json!([
        {"ip": "127.0.0.14", "port": 9000, "weight": 1.0, "valid": true, "ephemeral": true},
        {"ip": "127.0.0.15", "port": 9001, "weight": 2.0, "valid": true},
    ]);
    write(
        &dir,
        &format!("public/{legacy_list}"),
        &datum(&legacy_list, &old, 11),
    );
    expected.insert(
        format!("{IPLIST}public##DEFAULT_GROUP@@legacy"),
        (
            json!({"instanceList": [
                {"ip": "127.0.0.14", "port": 9000, "weight": 1.0, "valid": true, "ephemeral": false},
                {"ip": "127.0.0.15", "port": 9001, "weight": 2.0, "valid": true, "ephemeral": false},
            ]}),
            11,
        ),
    );
    let legacy_meta = format!("{META}public##legacy");
    let old = json!({"name": "legacy", "namespaceId": "public", "protectThreshold": 0.5,
                     "metadata": {"owner": "ops"}});
    write(
        &dir,
        &format!("public/{legacy_meta}"),
        &datum(&legacy_meta, &old, 6),
    );
    expected.insert(
        format!("{META}public##DEFAULT_GROUP@@legacy"),
        (
            json!({"name": "DEFAULT_GROUP@@legacy", "groupName": "DEFAULT_GROUP",
                   "namespaceId": "public", "protectThreshold": 0.5,
                   "metadata": {"owner": "ops"}}),
            6,
        ),
    );

    // dev: files of Nacos 1.3.1/1.3.2 (.datum), and for the instance list a 1.4 file too,
    // older: the newer timestamp wins.
    let pay_meta = format!("{META}dev##pay-group@@pay");
    let v = service("dev", "pay-group", "pay");
    write(
        &dir,
        &format!("dev/{pay_meta}.datum"),
        &datum(&pay_meta, &v, 2),
    );
    expected.insert(pay_meta, (v, 2));
    let pay = format!("{IPLIST}dev##pay-group@@pay");
    let newer = json!({"instanceList": [instance("127.0.0.16", 7000, "pay-group@@pay")]});
    write(&dir, &format!("dev/{pay}.datum"), &datum(&pay, &newer, 5));
    let older = json!({"instanceList": [instance("127.0.0.17", 7001, "pay-group@@pay")]});
    let superseded = write(&dir, &format!("dev/{pay}"), &datum(&pay, &older, 4));
    expected.insert(pay, (newer, 5));

    // The switch domain, at the top of data/.
    let v = json!({"name": "00-00---000-NACOS_SWITCH_DOMAIN-000---00-00",
                   "healthCheckEnabled": true, "distroEnabled": true, "checkTimes": 3});
    write(&dir, SWITCH, &datum(SWITCH, &v, 9));
    expected.insert(SWITCH.to_string(), (v, 9));

    // Nacos skips these: a blank datum file, a name outside the naming prefix.
    let ignored = vec![
        write(
            &dir,
            &format!("public/{IPLIST}public##DEFAULT_GROUP@@blank"),
            " \n",
        ),
        write(
            &dir,
            "public/notes.txt",
            "copied from nacos-1 on 2020-12-02\n",
        ),
    ];
    Fixture {
        dir,
        expected,
        superseded,
        ignored,
    }
}

/// Adds a file torn mid-write (Nacos writes in place, so a crash leaves one like it).
fn add_torn_file(dir: &Path) -> PathBuf {
    let key = format!("{IPLIST}public##DEFAULT_GROUP@@torn");
    let whole = datum(
        &key,
        &json!({"instanceList": [instance("127.0.0.18", 1, "DEFAULT_GROUP@@torn")]}),
        2,
    );
    write(dir, &format!("public/{key}"), &whole[..whole.len() / 2])
}

fn import_args<'a>(dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["-o", "json", "import", "--nacos-data-dir", dir];
    a.extend_from_slice(extra);
    a
}

/// `(key, timestamp, index)` of every datum, from `ls -o json`.
fn listing(endpoints: &str) -> Vec<(String, u64, u64)> {
    let out = nacosctl_at(endpoints, &["-o", "json", "ls"]);
    assert_code(&out, 0);
    json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["timestamp"].as_u64().unwrap(),
                e["index"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn files_of(summary: &Value, kind: &str) -> Vec<String> {
    summary[kind]
        .as_array()
        .unwrap_or_else(|| panic!("no {kind} in {summary}"))
        .iter()
        .map(|f| f["file"].as_str().unwrap().to_string())
        .collect()
}

fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn a_nacos_dir_is_imported_with_its_timestamps_and_a_rerun_changes_nothing() {
    let mut c = TestCluster::start(3, &[]);
    let leader = c.wait_for_leader(T);
    let follower = c.nodes[(leader + 1) % 3].addr.clone();
    let fx = nacos_dir(c.dir.path());
    let torn = add_torn_file(&fx.dir);
    let dir = path_str(&fx.dir);
    let all = c.endpoints();

    // A torn file stops the import before anything is sent, naming the file and why.
    let out = nacosctl_at(&all, &import_args(&dir, &[]));
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains(&path_str(&torn)), "{}", describe(&out));
    assert!(err.contains("not JSON"), "{}", describe(&out));
    assert!(err.contains("nothing was imported"), "{}", describe(&out));
    assert!(err.contains("--skip-bad"), "{}", describe(&out));
    assert!(stdout(&out).is_empty(), "{}", describe(&out));
    assert_eq!(listing(&all), vec![], "nothing was imported");

    // A dry run reads and reports, and needs no node: it is pointed at a dead address.
    let out = nacosctl_at(
        &dead_addr(),
        &import_args(&dir, &["--dry-run", "--skip-bad"]),
    );
    assert_code(&out, 0);
    let dry = json(&out);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["datums"], fx.expected.len());
    assert_eq!(dry["imported"], Value::Null);
    assert_eq!(dry["nacos_term"], 1203);
    assert_eq!(files_of(&dry, "bad"), vec![path_str(&torn)]);
    assert_eq!(listing(&all), vec![], "a dry run writes nothing");

    // The import, through one follower only: nacosctl finds the leader itself.
    let out = nacosctl_at(&follower, &import_args(&dir, &["--skip-bad"]));
    assert_code(&out, 0);
    let sum = json(&out);
    assert_eq!(sum["dry_run"], false);
    assert_eq!(sum["datums"], fx.expected.len(), "{sum}");
    assert_eq!(sum["imported"], fx.expected.len(), "{sum}");
    assert_eq!(sum["skipped"], 0, "{sum}");
    assert_eq!(sum["batches"], 1, "{sum}");
    assert_eq!(
        sum["files"], 13,
        "11 datum files, the blank one and the stray one"
    );
    assert_eq!(files_of(&sum, "bad"), vec![path_str(&torn)], "{sum}");
    assert!(sum["bad"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("not JSON"));
    assert_eq!(files_of(&sum, "superseded"), vec![path_str(&fx.superseded)]);
    assert_eq!(sum["superseded"][0]["timestamp"], 4);
    assert_eq!(sum["superseded"][0]["by_timestamp"], 5);
    let mut ignored = files_of(&sum, "ignored");
    ignored.sort();
    let mut want: Vec<String> = fx.ignored.iter().map(|p| path_str(p)).collect();
    want.sort();
    assert_eq!(ignored, want, "{sum}");
    let converted = files_of(&sum, "converted");
    for old in [
        format!("public/{IPLIST}public##legacy"),
        format!("public/{META}public##legacy"),
    ] {
        let p = path_str(&fx.dir.join("data").join(&old));
        assert!(converted.contains(&p), "{old} not in {converted:?}");
    }
    let namespaces: BTreeMap<String, (u64, u64, u64)> = sum["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["namespace"].as_str().unwrap_or("(top)").to_string(),
                (
                    n["datums"].as_u64().unwrap(),
                    n["imported"].as_u64().unwrap(),
                    n["skipped"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(
        namespaces,
        BTreeMap::from([
            ("(top)".to_string(), (1, 1, 0)),
            ("dev".to_string(), (2, 2, 0)),
            ("public".to_string(), (6, 6, 0)),
        ])
    );

    // Read back: every key with its value and Nacos timestamp, and nothing else.
    let keys: Vec<String> = listing(&all).into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(keys, fx.expected.keys().cloned().collect::<Vec<_>>());
    for (key, (value, ts)) in &fx.expected {
        let got = json(&nacosctl_at(&all, &["-o", "json", "get", key]));
        assert_eq!(&got["value"], value, "{key}");
        assert_eq!(got["timestamp"], *ts, "{key}");
    }
    // The same through Nacos's datum read, on another member.
    let pay = format!("{IPLIST}dev##pay-group@@pay");
    let legacy = format!("{IPLIST}public##DEFAULT_GROUP@@legacy");
    let url = format!(
        "http://{}/nacos/v1/ns/raft/datum",
        c.nodes[(leader + 2) % 3].addr
    );
    let keys = format!("{pay},{legacy},{IPLIST}public##nothing");
    let body: Value = ureq::get(&url)
        .query("keys", &keys)
        .timeout(T)
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(body[0]["key"], pay.as_str());
    assert_eq!(body[0]["timestamp"], 5);
    assert_eq!(body[0]["value"], fx.expected[&pay].0);
    assert_eq!(body[1]["timestamp"], 11);
    assert_eq!(body[1]["value"]["instanceList"][0]["ephemeral"], false);
    assert_eq!(body[2], Value::Null);
    // Every member holds the same.
    assert_code(&nacosctl_at(&all, &["check"]), 0);

    // A re-run changes nothing: everything skipped, timestamps and log indexes as they were.
    let before = listing(&all);
    let out = nacosctl_at(&all, &["import", "--nacos-data-dir", &dir, "--skip-bad"]);
    assert_code(&out, 0);
    let first = stdout(&out).lines().next().unwrap_or_default().to_string();
    assert!(
        first.starts_with(&format!(
            "OK imported=0 skipped={} datums={}",
            fx.expected.len(),
            fx.expected.len()
        )),
        "{}",
        describe(&out)
    );
    assert!(
        stdout(&out).contains(&format!("bad\t{}\t", path_str(&torn))),
        "{}",
        describe(&out)
    );
    assert_eq!(listing(&all), before, "a re-run rewrites nothing");

    // A datum changed in the cluster since is newer than the file: a re-run keeps it.
    let orders = format!("{IPLIST}public##DEFAULT_GROUP@@orders");
    let out = nacosctl_at(&all, &["put", &orders, r#"{"instanceList":[]}"#, "--json"]);
    assert_code(&out, 0);
    let sum = json(&nacosctl_at(&all, &import_args(&dir, &["--skip-bad"])));
    assert_eq!(sum["imported"], 0, "{sum}");
    let got = json(&nacosctl_at(&all, &["-o", "json", "get", &orders]));
    assert_eq!(
        (got["timestamp"].as_u64(), &got["value"]),
        (Some(8), &json!({"instanceList": []}))
    );
}

#[test]
fn an_imported_nacos_dir_is_served_through_the_naming_open_api() {
    let mut c = TestCluster::start(3, &[]);
    let leader = c.wait_for_leader(T);
    let fx = nacos_dir(c.dir.path());
    let out = nacosctl_at(&c.endpoints(), &import_args(&path_str(&fx.dir), &[]));
    assert_code(&out, 0);
    assert_eq!(json(&out)["imported"], fx.expected.len());

    let get = |addr: &str, path: &str, params: &[(&str, &str)]| -> Value {
        let url = format!("http://{addr}/nacos/v1/ns/{path}");
        let req = params
            .iter()
            .fold(ureq::get(&url).timeout(T), |r, (k, v)| r.query(k, v));
        match req.call() {
            Ok(r) => r.into_json().unwrap(),
            Err(e) => panic!("GET {path} {params:?}: {e}"),
        }
    };
    let ips = |list: &Value| -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = list["hosts"]
            .as_array()
            .unwrap_or_else(|| panic!("no hosts in {list}"))
            .iter()
            .map(|h| {
                (
                    h["ip"].as_str().unwrap().to_string(),
                    h["port"].as_u64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    for n in &c.nodes {
        let list = get(&n.addr, "instance/list", &[("serviceName", "orders")]);
        assert_eq!(list["name"], "DEFAULT_GROUP@@orders");
        assert_eq!(
            ips(&list),
            vec![("127.0.0.11".into(), 8080), ("127.0.0.12".into(), 8080)]
        );
    }
    let addr = &c.nodes[(leader + 1) % 3].addr;
    // The pre-1.0 list, under its new group.
    let list = get(addr, "instance/list", &[("serviceName", "legacy")]);
    assert_eq!(
        ips(&list),
        vec![("127.0.0.14".into(), 9000), ("127.0.0.15".into(), 9001)]
    );
    // The Dubbo-style name, and the .datum files of another namespace and group.
    let list = get(
        addr,
        "instance/list",
        &[("serviceName", "providers:org.demo.Api:1.0:")],
    );
    assert_eq!(ips(&list), vec![("127.0.0.13".into(), 20880)]);
    let list = get(
        addr,
        "instance/list",
        &[
            ("serviceName", "pay"),
            ("groupName", "pay-group"),
            ("namespaceId", "dev"),
        ],
    );
    assert_eq!(
        ips(&list),
        vec![("127.0.0.16".into(), 7000)],
        "the newer file won"
    );
    let page = get(addr, "service/list", &[("pageNo", "1"), ("pageSize", "10")]);
    assert_eq!(page["count"], 3, "{page}");
    assert_eq!(
        page["doms"],
        json!(["legacy", "orders", "providers:org.demo.Api:1.0:"])
    );
    let svc = get(addr, "service", &[("serviceName", "legacy")]);
    assert_eq!(svc["groupName"], "DEFAULT_GROUP", "{svc}");
    assert_eq!(svc["protectThreshold"], 0.5, "{svc}");
    let dev = get(
        addr,
        "service/list",
        &[
            ("pageNo", "1"),
            ("pageSize", "10"),
            ("namespaceId", "dev"),
            ("groupName", "pay-group"),
        ],
    );
    assert_eq!(dev["doms"], json!(["pay"]), "{dev}");

    // A registration into an imported service continues its Nacos version.
    let url = format!("http://{addr}/nacos/v1/ns/instance");
    let r = ureq::post(&url).timeout(T).send_form(&[
        ("serviceName", "orders"),
        ("ip", "127.0.0.19"),
        ("port", "8080"),
        ("ephemeral", "false"),
    ]);
    assert_eq!(r.map(|r| r.into_string().unwrap()).unwrap(), "ok");
    let list = get(addr, "instance/list", &[("serviceName", "orders")]);
    assert_eq!(ips(&list).len(), 3, "{list}");
    let key = format!("{IPLIST}public##DEFAULT_GROUP@@orders");
    let got = json(&nacosctl_at(&c.endpoints(), &["-o", "json", "get", &key]));
    assert_eq!(got["timestamp"], 8, "7 in Nacos, one write since");
    // And nacosctl's own naming view agrees.
    let out = nacosctl_at(&c.endpoints(), &["-o", "json", "service", "list"]);
    assert_code(&out, 0);
    assert_eq!(
        json(&out)["services"],
        json!(["legacy", "orders", "providers:org.demo.Api:1.0:"])
    );
}

#[test]
fn dirs_that_are_not_nacos_naming_dirs_are_usage_errors_and_dry_runs_print_text() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("nacos");
    let fx = nacos_dir(&home.join("data"));
    // ${nacos.home} and ${nacos.home}/data are one and two levels too high.
    for wrong in [home.clone(), home.join("data")] {
        let out = nacosctl_at(
            &dead_addr(),
            &["import", "--nacos-data-dir", &path_str(&wrong), "--dry-run"],
        );
        assert_code(&out, 2);
        assert!(
            stderr(&out).contains(&path_str(&fx.dir)),
            "names the right dir: {}",
            describe(&out)
        );
    }
    let out = nacosctl_at(
        &dead_addr(),
        &[
            "import",
            "--nacos-data-dir",
            &path_str(&fx.dir),
            "--dry-run",
        ],
    );
    assert_code(&out, 0);
    let text = stdout(&out);
    let mut lines = text.lines();
    let head = lines.next().unwrap_or_default();
    assert!(
        head.starts_with(&format!(
            "OK dry-run datums={} files=12 ignored=2 bad=0 superseded=1",
            fx.expected.len()
        )),
        "{text}"
    );
    assert!(head.contains("nacos_term=1203"), "{text}");
    assert!(text.contains("namespace\tpublic\tdatums=6\n"), "{text}");
    assert!(text.contains("namespace\t-\tdatums=1\n"), "{text}");
    assert!(
        text.contains(&format!("superseded\t{}\t", path_str(&fx.superseded))),
        "{text}"
    );
    assert!(stderr(&out).is_empty(), "{}", describe(&out));
    // An empty data dir: nothing to send, so no node is asked, and the counts are zeros.
    let empty = tmp.path().join("empty");
    fs::create_dir_all(empty.join("data")).unwrap();
    let out = nacosctl_at(
        &dead_addr(),
        &[
            "-o",
            "json",
            "import",
            "--nacos-data-dir",
            &path_str(&empty),
        ],
    );
    assert_code(&out, 0);
    let sum = json(&out);
    assert_eq!(
        (
            &sum["imported"],
            &sum["skipped"],
            &sum["datums"],
            &sum["nacos_term"]
        ),
        (&json!(0), &json!(0), &json!(0), &Value::Null),
        "{sum}"
    );
    // The table form has the namespaces and the files.
    let out = nacosctl_at(
        &dead_addr(),
        &[
            "-o",
            "table",
            "import",
            "--nacos-data-dir",
            &path_str(&fx.dir),
            "--dry-run",
        ],
    );
    assert_code(&out, 0);
    let table = stdout(&out);
    assert!(
        table.contains("NAMESPACE") && table.contains("OUTCOME"),
        "{table}"
    );
    assert!(table.contains("| total"), "{table}");
}
