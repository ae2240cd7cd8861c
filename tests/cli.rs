//! End-to-end tests of `nacosctl` against a real standalone `nacos-node` (and, for the
//! offline and failure cases, against no node at all): output forms, the JSON contract and
//! the exit codes of DESIGN §4.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Asserts that `v` is an object holding every field in `fields`.
#[track_caller]
fn assert_fields(v: &Value, fields: &[&str]) {
    for f in fields {
        assert!(v.get(f).is_some(), "field {f:?} missing in {v}");
    }
}

#[test]
fn put_get_del_round_trip() {
    let node = TestNode::standalone(&[]);
    let ep = node.addr.as_str();

    let out = nacosctl_at(ep, &["put", "greeting", "hello world"]);
    assert_code(&out, 0);
    let line = stdout(&out);
    assert!(line.starts_with("OK key=greeting timestamp=1 "), "{line}");
    assert!(line.contains(" index="), "{line}");

    let out = nacosctl_at(ep, &["get", "greeting"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "hello world\n");

    let out = nacosctl_at(ep, &["del", "greeting"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).starts_with("OK key=greeting "),
        "{}",
        describe(&out)
    );

    let out = nacosctl_at(ep, &["get", "greeting"]);
    assert_code(&out, 3);
    assert!(out.stdout.is_empty(), "{}", describe(&out));
}

#[test]
fn timestamps_count_updates_and_indexes_grow() {
    let node = TestNode::standalone(&[]);
    let mut last_index = 0;
    for (i, v) in ["one", "two", "three"].iter().enumerate() {
        let out = nacosctl_at(&node.addr, &["-o", "json", "put", "counter", v]);
        assert_code(&out, 0);
        let doc = json(&out);
        assert_fields(&doc, &["key", "timestamp", "term", "index"]);
        assert_eq!(doc["key"], "counter");
        assert_eq!(doc["timestamp"], i as u64 + 1, "{doc}");
        let index = doc["index"].as_u64().expect("index is a number");
        assert!(index > last_index, "index {index} after {last_index}");
        assert!(doc["term"].as_u64().expect("term is a number") >= 1);
        last_index = index;
    }
    let doc = json(&nacosctl_at(&node.addr, &["-o", "json", "get", "counter"]));
    assert_eq!(doc["value"], "three");
    assert_eq!(doc["timestamp"], 3);
}

#[test]
fn json_values_and_strings_that_look_like_json() {
    let node = TestNode::standalone(&[]);
    let ep = node.addr.as_str();
    let value = r#"{"hosts":[{"ip":"10.0.0.1","port":8080}],"enabled":true}"#;

    assert_code(&nacosctl_at(ep, &["put", "--json", "svc", value]), 0);
    let doc = json(&nacosctl_at(ep, &["-o", "json", "get", "svc"]));
    assert_eq!(
        doc["value"],
        json!({"hosts": [{"ip": "10.0.0.1", "port": 8080}], "enabled": true})
    );
    // Text form: non-string JSON comes back as JSON.
    let text = stdout(&nacosctl_at(ep, &["get", "svc"]));
    let reparsed: Value = serde_json::from_str(&text).expect("text get of JSON is JSON");
    assert_eq!(reparsed, doc["value"]);

    // Without --json the same text is a string value.
    assert_code(&nacosctl_at(ep, &["put", "raw", value]), 0);
    let doc = json(&nacosctl_at(ep, &["-o", "json", "get", "raw"]));
    assert_eq!(doc["value"], Value::String(value.into()));
    assert_eq!(
        stdout(&nacosctl_at(ep, &["get", "raw"])),
        format!("{value}\n")
    );

    // Scalars and negative numbers (a VALUE starting with '-' is a value, not a flag).
    assert_code(&nacosctl_at(ep, &["put", "--json", "n", "-42"]), 0);
    assert_eq!(
        json(&nacosctl_at(ep, &["-o", "json", "get", "n"]))["value"],
        -42
    );

    // Invalid JSON with --json is a usage error and writes nothing.
    let out = nacosctl_at(ep, &["put", "--json", "bad", "{"]);
    assert_code(&out, 2);
    assert_code(&nacosctl_at(ep, &["get", "bad"]), 3);
}

#[test]
fn values_from_stdin_and_files() {
    let node = TestNode::standalone(&[]);
    let ep = node.addr.as_str();

    let out = nacosctl_with(
        Some(ep),
        &["put", "from-stdin", "-"],
        Some(b"line 1\nline 2\n"),
        &[],
    );
    assert_code(&out, 0);
    let doc = json(&nacosctl_at(ep, &["-o", "json", "get", "from-stdin"]));
    assert_eq!(
        doc["value"], "line 1\nline 2\n",
        "stdin is stored byte for byte"
    );
    // The value already ends with a newline: text output adds none.
    assert_eq!(
        stdout(&nacosctl_at(ep, &["get", "from-stdin"])),
        "line 1\nline 2\n"
    );

    let out = nacosctl_with(
        Some(ep),
        &["put", "--json", "j", "-"],
        Some(b"[1, 2, 3]"),
        &[],
    );
    assert_code(&out, 0);
    assert_eq!(
        json(&nacosctl_at(ep, &["-o", "json", "get", "j"]))["value"],
        json!([1, 2, 3])
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("conf.properties");
    std::fs::write(&file, "a=1\nb=2").unwrap();
    let arg = format!("@{}", file.display());
    assert_code(&nacosctl_at(ep, &["put", "from-file", &arg]), 0);
    assert_eq!(
        json(&nacosctl_at(ep, &["-o", "json", "get", "from-file"]))["value"],
        "a=1\nb=2"
    );

    let missing = format!("@{}", dir.path().join("missing").display());
    let out = nacosctl_at(ep, &["put", "nothing", &missing]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("missing"), "{}", describe(&out));
}

#[test]
fn missing_keys_exit_3_for_get_and_del() {
    let node = TestNode::standalone(&[]);
    for args in [
        &["get", "no-such-key"][..],
        &["get", "--stale", "no-such-key"],
        &["del", "no-such-key"],
    ] {
        let out = nacosctl_at(&node.addr, args);
        assert_code(&out, 3);
        assert!(out.stdout.is_empty(), "{}", describe(&out));
        let err = stderr(&out);
        assert!(err.starts_with("nacosctl: "), "{err}");
        assert!(err.contains("no-such-key"), "{err}");
    }
}

#[test]
fn unreachable_endpoint_exits_4_within_the_timeout() {
    let dead = dead_addr();
    for args in [
        &["--timeout", "2s", "get", "k"][..],
        &["--timeout", "2s", "put", "k", "v"],
        &["--timeout", "2s", "ls"],
        &["--timeout", "2s", "leader"],
        &["--timeout", "2s", "status"],
    ] {
        let start = Instant::now();
        let out = nacosctl_at(&dead, args);
        let took = start.elapsed();
        assert_code(&out, 4);
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
        let err = stderr(&out);
        assert!(err.starts_with("nacosctl: "), "{err}");
        assert!(err.contains(&dead), "the endpoint is named: {err}");
    }
    let err = stderr(&nacosctl_at(&dead, &["get", "k"]));
    assert!(err.contains("--endpoints"), "the hint names the fix: {err}");
}

#[test]
fn failover_skips_a_dead_endpoint() {
    let node = TestNode::standalone(&[]);
    let endpoints = format!("{},{}", dead_addr(), node.addr);
    let out = nacosctl_at(&endpoints, &["put", "k", "v"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&nacosctl_at(&endpoints, &["get", "k"])), "v\n");
}

#[test]
fn usage_errors_exit_2_before_any_network_wait() {
    // A dead endpoint: a usage error must be found without trying it.
    let dead = dead_addr();
    let cases: &[&[&str]] = &[
        &["--bogus-flag", "ls"],
        &["get"],
        &["get", "a\u{1}b"],
        &["put", "a\nb", "v"],
        &["get", ""],
        &["del", ""],
        &["--timeout", "soon", "ls"],
        &["-o", "yaml", "ls"],
        &["completion", "no-such-shell"],
        &["frobnicate"],
    ];
    for args in cases {
        let out = nacosctl_at(&dead, args);
        assert_code(&out, 2);
        let err = stderr(&out);
        assert!(err.starts_with("nacosctl: "), "{args:?}: {err}");
        assert!(!err.contains(&dead), "{args:?} tried the network: {err}");
    }
    let out = nacosctl(&["--endpoints", "no-port", "ls"]);
    assert_code(&out, 2);
}

#[test]
fn help_and_version_exit_0() {
    let out = nacosctl(&["--help"]);
    assert_code(&out, 0);
    let help = stdout(&out);
    for word in [
        "put",
        "get",
        "del",
        "ls",
        "status",
        "leader",
        "dump",
        "completion",
    ] {
        assert!(help.contains(word), "help lacks {word}: {help}");
    }
    assert!(help.contains("Exit codes"), "{help}");
    assert_code(&nacosctl(&["--version"]), 0);
}

#[test]
fn completion_scripts_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let out = nacosctl(&["completion", shell]);
        assert_code(&out, 0);
        let script = stdout(&out);
        assert!(script.contains("nacosctl"), "{shell}: {script}");
        assert!(script.contains("dump"), "{shell} script lacks commands");
    }
}

#[test]
fn ls_lists_keys_by_prefix_in_order() {
    let node = TestNode::standalone(&[]);
    let ep = node.addr.as_str();
    for k in ["app/b", "app/a", "other", "app/a"] {
        assert_code(&nacosctl_at(ep, &["put", k, "v"]), 0);
    }
    let out = nacosctl_at(ep, &["ls", "app/"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "app/a\t2\napp/b\t1\n");

    let doc = json(&nacosctl_at(ep, &["-o", "json", "ls"]));
    let rows = doc.as_array().expect("ls -o json is an array");
    let keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["app/a", "app/b", "other"]);
    for r in rows {
        assert_fields(r, &["key", "timestamp"]);
    }
    assert_eq!(rows[0]["timestamp"], 2);

    let out = nacosctl_at(ep, &["ls", "nothing-here/"]);
    assert_code(&out, 0);
    assert!(out.stdout.is_empty(), "{}", describe(&out));

    let out = nacosctl_at(ep, &["-o", "table", "ls", "app/"]);
    assert_code(&out, 0);
    let table = stdout(&out);
    assert!(table.contains("KEY") && table.contains("app/b"), "{table}");

    let doc = json(&nacosctl_at(ep, &["-o", "json", "ls", "--stale", "app/"]));
    assert_eq!(doc.as_array().unwrap().len(), 2);
}

#[test]
fn keys_with_awkward_characters_round_trip() {
    let node = TestNode::standalone(&[]);
    let ep = node.addr.as_str();
    let keys = [
        "a b/c?d=e&f#g",
        "100%+",
        "ключ/значение",
        "com.alibaba.nacos.naming.iplist.dev##DEFAULT_GROUP@@svc",
    ];
    for (i, k) in keys.iter().enumerate() {
        let v = format!("v{i}");
        assert_code(&nacosctl_at(ep, &["put", k, &v]), 0);
        let doc = json(&nacosctl_at(ep, &["-o", "json", "get", k]));
        assert_eq!(doc["key"], *k);
        assert_eq!(doc["value"], v);
    }
    // A key that starts with '-' goes after '--'.
    assert_code(&nacosctl_at(ep, &["put", "--", "-dash", "v"]), 0);
    assert_eq!(stdout(&nacosctl_at(ep, &["get", "--", "-dash"])), "v\n");
}

#[test]
fn json_output_matches_the_contract() {
    let node = TestNode::standalone(&[]);
    let ep = node.addr.as_str();

    let put = json(&nacosctl_at(ep, &["-o", "json", "put", "k", "v"]));
    assert_fields(&put, &["key", "timestamp", "term", "index"]);

    let get = json(&nacosctl_at(ep, &["-o", "json", "get", "k"]));
    assert_fields(&get, &["key", "value", "timestamp"]);
    assert_eq!(
        get,
        json!({"key": "k", "value": "v", "timestamp": 1, "index": put["index"]})
    );

    let ls = json(&nacosctl_at(ep, &["-o", "json", "ls"]));
    assert_fields(&ls[0], &["key", "timestamp"]);

    let leader = json(&nacosctl_at(ep, &["-o", "json", "leader"]));
    assert_fields(&leader, &["leader", "term"]);
    assert_eq!(leader["leader"], ep);
    assert_eq!(leader["term"], put["term"]);

    let status = json(&nacosctl_at(ep, &["-o", "json", "status"]));
    assert_fields(&status, &["leader", "nodes"]);
    assert_eq!(status["leader"], ep);
    for n in status["nodes"].as_array().expect("nodes is an array") {
        assert_fields(
            n,
            &[
                "endpoint",
                "reachable",
                "role",
                "term",
                "leader",
                "commit_index",
                "applied_index",
                "datums",
                "error",
            ],
        );
    }

    let del = json(&nacosctl_at(ep, &["-o", "json", "del", "k"]));
    assert_fields(&del, &["key", "index"]);
    assert!(del["index"].as_u64().unwrap() > put["index"].as_u64().unwrap());
}

#[test]
fn leader_of_a_standalone_node_is_itself() {
    let node = TestNode::standalone(&[]);
    let out = nacosctl_at(&node.addr, &["leader"]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), format!("{}\n", node.addr));
}

#[test]
fn status_of_a_single_node_is_healthy() {
    let node = TestNode::standalone(&[]);
    assert_code(&nacosctl_at(&node.addr, &["put", "k", "v"]), 0);
    let out = nacosctl_at(&node.addr, &["-o", "json", "status"]);
    assert_code(&out, 0);
    let doc = json(&out);
    assert_eq!(doc["leader"], node.addr.as_str());
    let nodes = doc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{doc}");
    let n = &nodes[0];
    assert_eq!(n["endpoint"], node.addr.as_str());
    assert_eq!(n["reachable"], true);
    assert_eq!(n["role"], "LEADER");
    assert_eq!(n["leader"], node.addr.as_str());
    assert_eq!(n["error"], Value::Null);
    assert_eq!(n["datums"], 1);
    assert!(n["applied_index"].as_u64().unwrap() >= 1);

    let out = nacosctl_at(&node.addr, &["status"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).starts_with(&format!("{}\tLEADER\t", node.addr)),
        "{}",
        describe(&out)
    );
    assert!(
        out.stderr.is_empty(),
        "a healthy status is quiet: {}",
        describe(&out)
    );

    assert_code(&nacosctl_at(&node.addr, &["-o", "table", "status"]), 0);
}

#[test]
fn status_with_a_dead_endpoint_is_degraded_and_lists_it() {
    let node = TestNode::standalone(&[]);
    let dead = dead_addr();
    let endpoints = format!("{},{dead}", node.addr);
    let start = Instant::now();
    let out = nacosctl_at(&endpoints, &["--timeout", "2s", "-o", "json", "status"]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "status is bounded"
    );
    assert_code(&out, 5);
    let doc = json(&out);
    assert_eq!(doc["leader"], node.addr.as_str());
    let nodes = doc["nodes"].as_array().unwrap();
    let dead_row = nodes
        .iter()
        .find(|n| n["endpoint"] == dead.as_str())
        .unwrap_or_else(|| panic!("the dead endpoint is listed: {doc}"));
    assert_eq!(dead_row["reachable"], false);
    assert!(dead_row["error"].is_string(), "{dead_row}");
    let live_row = nodes
        .iter()
        .find(|n| n["endpoint"] == node.addr.as_str())
        .unwrap();
    assert_eq!(live_row["reachable"], true);
    assert!(
        stderr(&out).contains(&dead),
        "the problem goes to stderr too: {}",
        describe(&out)
    );

    let out = nacosctl_at(&endpoints, &["--timeout", "2s", "status"]);
    assert_code(&out, 5);
    assert!(
        stdout(&out).contains(&format!("{dead}\tUNREACHABLE")),
        "{}",
        describe(&out)
    );
}

#[test]
fn dump_of_a_stopped_node_lists_everything_written() {
    let mut node = TestNode::standalone(&[]);
    let ep = node.addr.clone();
    let written = [
        ("plain", json!("text")),
        ("nested/key", json!({"a": [1, 2]})),
        (
            "com.alibaba.nacos.naming.iplist.dev##G@@svc",
            json!([{"ip": "10.0.0.1"}]),
        ),
        ("updated", json!(2)),
    ];
    assert_code(&nacosctl_at(&ep, &["put", "--json", "updated", "1"]), 0);
    for (k, v) in &written {
        assert_code(&nacosctl_at(&ep, &["put", "--json", k, &v.to_string()]), 0);
    }
    assert_code(&nacosctl_at(&ep, &["put", "gone", "x"]), 0);
    assert_code(&nacosctl_at(&ep, &["del", "gone"]), 0);
    let status = node
        .terminate(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no clean stop on SIGTERM\n{}", node.log_excerpt()));
    assert!(status.success(), "{status}\n{}", node.log_excerpt());

    let dir = node.data_dir.to_str().unwrap().to_string();
    let out = nacosctl(&["-o", "json", "dump", "--data-dir", &dir]);
    assert_code(&out, 0);
    let doc = json(&out);
    let rows = doc.as_array().expect("dump -o json is an array");
    let mut expected: Vec<&(&str, Value)> = written.iter().collect();
    expected.sort_by_key(|(k, _)| *k);
    assert_eq!(rows.len(), expected.len(), "{doc}");
    for (row, (k, v)) in rows.iter().zip(expected) {
        assert_fields(row, &["key", "value", "timestamp", "file"]);
        assert_eq!(row["key"], *k);
        assert_eq!(row["value"], *v);
        let ts = if *k == "updated" { 2 } else { 1 };
        assert_eq!(row["timestamp"], ts, "{row}");
        // Read from the checkpoint or the log: with --datum-files off (the default) no
        // per-key file exists.
        let file = std::path::Path::new(row["file"].as_str().unwrap());
        assert!(file.exists(), "{row}");
        assert!(file.starts_with(&node.data_dir), "{row}");
    }
    assert!(
        !nacos_raft::store::datum_dir::has_datum_files(&node.data_dir),
        "no datum files unless --datum-files on"
    );

    // The Nacos layout, one command away: the same datums as files, read back by the store.
    let view = tempfile::tempdir().unwrap();
    let to = view.path().join("nacos");
    let out = nacosctl(&[
        "dump",
        "--data-dir",
        &dir,
        "--nacos-layout",
        to.to_str().unwrap(),
    ]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).starts_with("OK exported 4 datums"),
        "{}",
        describe(&out)
    );
    let files = nacos_raft::store::read_datum_dir(&to).unwrap();
    let got: Vec<(String, Value, u64)> = files
        .into_iter()
        .map(|(d, _)| (d.key, d.value, d.timestamp))
        .collect();
    let want: Vec<(String, Value, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["value"].clone(),
                r["timestamp"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(std::fs::read_to_string(to.join("meta.properties"))
        .unwrap()
        .contains("term="));
    // Never over something that is there.
    assert_code(
        &nacosctl(&[
            "dump",
            "--data-dir",
            &dir,
            "--nacos-layout",
            to.to_str().unwrap(),
        ]),
        2,
    );

    let out = nacosctl(&["dump", "--data-dir", &dir]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), written.len(), "{text}");
    assert!(text.contains("nested/key\t1\t{\"a\":[1,2]}\n"), "{text}");
    assert_code(&nacosctl(&["-o", "table", "dump", "--data-dir", &dir]), 0);

    // The same data dir serves the same data after a restart.
    node.restart();
    node.wait_ready(READY_DEADLINE);
    let doc = json(&nacosctl_at(&ep, &["-o", "json", "get", "updated"]));
    assert_eq!(doc["value"], 2);
    assert_eq!(doc["timestamp"], 2);
    assert_code(&nacosctl_at(&ep, &["get", "gone"]), 3);
}

/// After a kill -9, dump shows the state at the applied index the member last recorded and
/// no entry past it (those may not have been committed), and says so.
#[test]
fn dump_after_a_crash_shows_what_was_applied_and_says_what_is_left_out() {
    let mut node = TestNode::standalone(&[]);
    let ep = node.addr.clone();
    let mut indexes = Vec::new();
    for k in ["a", "b", "c"] {
        let out = nacosctl_at(&ep, &["-o", "json", "put", k, k]);
        assert_code(&out, 0);
        indexes.push(json(&out)["index"].as_u64().unwrap());
    }
    // The member records its applied index once a second: wait until it has the last write.
    let mark = node.data_dir.join("applied");
    let recorded = |f: &std::path::Path| {
        let t = std::fs::read_to_string(f).ok()?;
        t.trim().strip_prefix("applied=")?.parse::<u64>().ok()
    };
    poll_until(Duration::from_secs(10), || {
        (recorded(&mark)? >= indexes[2]).then_some(())
    })
    .expect("the applied index is recorded within a few seconds");
    node.kill9();
    let dir = node.data_dir.to_str().unwrap().to_string();
    let keys = |out: &std::process::Output| -> Vec<String> {
        json(out)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap().to_string())
            .collect()
    };
    let out = nacosctl(&["-o", "json", "dump", "--data-dir", &dir]);
    assert_code(&out, 0);
    assert_eq!(keys(&out), ["a", "b", "c"]);

    // As if the member had crashed before it recorded "c", and before any checkpoint held
    // it (the log is not compacted this early, so it holds everything from index 1): "c"
    // may not have been committed, so it is not shown.
    for f in ["checkpoint", "checkpoint.prev"] {
        let _ = std::fs::remove_file(node.data_dir.join(f));
    }
    std::fs::write(&mark, format!("applied={:020}\n", indexes[1])).unwrap();
    let out = nacosctl(&["-o", "json", "dump", "--data-dir", &dir]);
    assert_code(&out, 0);
    assert_eq!(keys(&out), ["a", "b"]);
    let err = stderr(&out);
    assert!(
        err.contains("did not stop cleanly") && err.contains(&format!("entries {} to", indexes[2])),
        "{err}"
    );
    // Dump wrote nothing: the member starts and serves all three.
    node.restart();
    node.wait_ready(READY_DEADLINE);
    assert_code(&nacosctl_at(&ep, &["get", "c"]), 0);
}

#[test]
fn dump_names_a_corrupt_file_and_exits_1() {
    // Written by the store itself, so this needs no running node.
    let dir = tempfile::tempdir().unwrap();
    let datum = |k: &str, ts| nacos_raft::Datum {
        key: k.into(),
        value: json!(ts),
        timestamp: ts,
        index: ts,
    };
    nacos_raft::store::write_datum(dir.path(), &datum("good", 1)).unwrap();
    let bad = nacos_raft::store::write_datum(dir.path(), &datum("bad", 2)).unwrap();
    let d = dir.path().to_str().unwrap();

    let doc = json(&nacosctl(&["-o", "json", "dump", "--data-dir", d]));
    assert_eq!(doc.as_array().unwrap().len(), 2);

    std::fs::write(&bad, b"{\"key\": \"bad\", \"val").unwrap();
    let out = nacosctl(&["dump", "--data-dir", d]);
    assert_code(&out, 1);
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.starts_with("nacosctl: "), "{err}");
    assert!(
        err.contains(bad.to_str().unwrap()),
        "the file is named: {err}"
    );

    let out = nacosctl(&["dump", "--data-dir", &format!("{d}/no-such-dir")]);
    assert_code(&out, 2);
}

#[test]
fn endpoints_come_from_the_environment_unless_the_flag_is_given() {
    let node = TestNode::standalone(&[]);
    let dead = dead_addr();
    let out = nacosctl_with(
        None,
        &["put", "k", "v"],
        None,
        &[("NACOSCTL_ENDPOINTS", &node.addr)],
    );
    assert_code(&out, 0);
    // The flag wins over the variable, without complaint.
    let out = nacosctl_with(
        Some(&node.addr),
        &["get", "k"],
        None,
        &[("NACOSCTL_ENDPOINTS", &dead)],
    );
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "v\n");
    let out = nacosctl_with(
        Some(&dead),
        &["--timeout", "1s", "get", "k"],
        None,
        &[("NACOSCTL_ENDPOINTS", &node.addr)],
    );
    assert_code(&out, 4);
}

#[test]
fn status_from_one_endpoint_finds_every_member() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_for_leader(LEADER_DEADLINE);
    let follower = (leader + 1) % 3;
    // Only one member is named; the others come from its `peers`.
    let one = cluster.nodes[follower].addr.clone();
    let out = nacosctl_at(&one, &["-o", "json", "status"]);
    assert_code(&out, 0);
    let doc = json(&out);
    assert_eq!(doc["leader"], cluster.nodes[leader].addr.as_str(), "{doc}");
    let mut listed: Vec<String> = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["endpoint"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut all = cluster.addrs();
    all.sort();
    assert_eq!(listed, all);

    // A killed follower is still listed, as unreachable, and the cluster is degraded.
    let victim = (leader + 2) % 3;
    cluster.nodes[victim].kill9();
    let out = nacosctl_at(
        &cluster.endpoints(),
        &["--timeout", "2s", "-o", "json", "status"],
    );
    assert_code(&out, 5);
    let doc = json(&out);
    let row = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["endpoint"] == cluster.nodes[victim].addr.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("killed member listed: {doc}"));
    assert_eq!(row["reachable"], false);
    // The surviving majority still serves writes through any member.
    assert_code(&nacosctl_at(&cluster.endpoints(), &["put", "k", "v"]), 0);
}

#[test]
fn status_of_a_paused_member_is_bounded_by_the_timeout() {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_for_leader(LEADER_DEADLINE);
    let paused = (leader + 1) % 3;
    cluster.nodes[paused].pause();
    let start = Instant::now();
    let out = nacosctl_at(
        &cluster.endpoints(),
        &["--timeout", "1s", "-o", "json", "status"],
    );
    let took = start.elapsed();
    assert_code(&out, 5);
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let doc = json(&out);
    let row = &doc["nodes"][paused];
    assert_eq!(
        row["endpoint"],
        cluster.nodes[paused].addr.as_str(),
        "{doc}"
    );
    assert_eq!(row["reachable"], false);
    assert!(
        row["error"].as_str().unwrap().contains("no answer"),
        "{row}"
    );

    cluster.nodes[paused].resume();
    let healthy = poll_until(Duration::from_secs(10), || {
        let out = nacosctl_at(&cluster.endpoints(), &["--timeout", "1s", "status"]);
        (code(&out) == 0).then_some(())
    });
    assert!(
        healthy.is_some(),
        "healthy after resume: {}",
        cluster.views()
    );
}
