//! Tests of the Nacos 1.x data dir reader: one file's rules, then whole dirs.

use super::datum_file::{parse_file, Parsed, ParsedDatum};
use super::*;
use serde_json::{json, Value};

const IPLIST: &str = "com.alibaba.nacos.naming.iplist.";
const META: &str = "com.alibaba.nacos.naming.domains.meta.";
const SWITCH: &str =
    "com.alibaba.nacos.naming.domains.meta.00-00---000-NACOS_SWITCH_DOMAIN-000---00-00";

fn datum(key: &str, value: Value, ts: u64) -> String {
    json!({"key": key, "value": value, "timestamp": ts}).to_string()
}

fn instance(ip: &str, port: u16) -> Value {
    json!({"ip": ip, "port": port, "weight": 1.0, "healthy": true, "enabled": true,
           "ephemeral": false, "clusterName": "DEFAULT", "metadata": {}})
}

/// Writes `data/<rel>` under `dir`.
fn put(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join("data").join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    p
}

fn parsed(name: &str, ns: Option<&str>, text: &str) -> ParsedDatum {
    match parse_file(name, ns, text.as_bytes()) {
        Ok(Parsed::Datum(d)) => d,
        Ok(Parsed::Blank) => panic!("{name}: blank"),
        Err(e) => panic!("{name}: {e}"),
    }
}

fn refused(name: &str, ns: Option<&str>, text: &str) -> String {
    match parse_file(name, ns, text.as_bytes()) {
        Err(e) => e,
        Ok(_) => panic!("{name}: accepted {text}"),
    }
}

#[test]
fn a_1x_instance_list_is_taken_as_it_is() {
    let key = format!("{IPLIST}public##DEFAULT_GROUP@@orders");
    let value = json!({"instanceList": [instance("127.0.0.11", 8080)]});
    let d = parsed(&key, Some("public"), &datum(&key, value.clone(), 7));
    assert_eq!((d.key.as_str(), d.timestamp), (key.as_str(), 7));
    assert_eq!(d.value, value);
    assert!(!d.suffixed && !d.regrouped && d.notes.is_empty());
}

#[test]
fn colons_in_keys_are_hashes_in_file_names() {
    let key = format!("{IPLIST}public##DEFAULT_GROUP@@providers:org.demo.Api:1.0:");
    let name = format!("{IPLIST}public##DEFAULT_GROUP@@providers#org.demo.Api#1.0#");
    assert_eq!(file_name_of(&key), name);
    let d = parsed(
        &name,
        Some("public"),
        &datum(&key, json!({"instanceList": []}), 2),
    );
    assert_eq!(d.key, key, "the key is the one inside, with its colons");
    // The key's own spelling as a file name is not how Nacos names it.
    let e = refused(
        &key,
        Some("public"),
        &datum(&key, json!({"instanceList": []}), 2),
    );
    assert!(e.contains("do not match"), "{e}");
}

#[test]
fn the_datum_suffix_of_1_3_is_read() {
    let key = format!("{META}dev##G@@pay");
    let value =
        json!({"name": "G@@pay", "groupName": "G", "namespaceId": "dev", "protectThreshold": 0.0});
    let d = parsed(
        &format!("{key}.datum"),
        Some("dev"),
        &datum(&key, value.clone(), 3),
    );
    assert!(d.suffixed);
    assert_eq!((d.key.as_str(), &d.value), (key.as_str(), &value));
    // A key that itself ends in .datum is its own file name, not a suffixed one.
    let key2 = format!("{META}dev##G@@x.datum");
    let value2 = json!({"name": "G@@x.datum", "groupName": "G"});
    assert!(!parsed(&key2, Some("dev"), &datum(&key2, value2, 1)).suffixed);
}

#[test]
fn a_pre_1_0_instance_list_gets_a_group_and_persistent_instances() {
    let old = format!("{IPLIST}public##legacy");
    let list = json!([{"ip": "127.0.0.12", "port": 9000, "ephemeral": true},
                      {"ip": "127.0.0.13", "port": 9001}]);
    let d = parsed(&old, Some("public"), &datum(&old, list, 4));
    assert_eq!(d.key, format!("{IPLIST}public##DEFAULT_GROUP@@legacy"));
    assert!(d.regrouped);
    assert_eq!(d.timestamp, 4);
    let l = d.value["instanceList"].as_array().unwrap();
    assert_eq!(l.len(), 2);
    assert!(l.iter().all(|i| i["ephemeral"] == json!(false)), "{l:?}");
    assert_eq!(l[0]["ip"], "127.0.0.12");
    assert_eq!(d.notes.len(), 2, "{:?}", d.notes);
    // A name that Nacos's indexOf would find inside the prefix keeps its namespace.
    let k = format!("{IPLIST}public##naming");
    let d = parsed(&k, Some("public"), &datum(&k, json!([]), 1));
    assert_eq!(d.key, format!("{IPLIST}public##DEFAULT_GROUP@@naming"));
}

#[test]
fn a_service_without_a_group_gets_the_default_group() {
    let old = format!("{META}public##legacy");
    let d = parsed(
        &old,
        Some("public"),
        &datum(&old, json!({"name": "legacy", "protectThreshold": 0.5}), 9),
    );
    assert_eq!(d.key, format!("{META}public##DEFAULT_GROUP@@legacy"));
    assert_eq!(d.value["name"], "DEFAULT_GROUP@@legacy");
    assert_eq!(d.value["groupName"], "DEFAULT_GROUP");
    assert_eq!(d.value["protectThreshold"], 0.5);
    // Grouped key, blank groupName: only the value changes.
    let k = format!("{META}public##DEFAULT_GROUP@@a");
    let d = parsed(
        &k,
        Some("public"),
        &datum(&k, json!({"name": "DEFAULT_GROUP@@a", "groupName": " "}), 1),
    );
    assert_eq!(d.key, k);
    assert_eq!(d.value["groupName"], "DEFAULT_GROUP");
    assert!(!d.regrouped);
    // And a meta with nothing to change is untouched.
    let v = json!({"name": "G@@b", "groupName": "G", "metadata": {"a\\b": "c\"d"}});
    let k = format!("{META}public##G@@b");
    let d = parsed(&k, Some("public"), &datum(&k, v.clone(), 1));
    assert_eq!(d.value, v, "valid escapes are kept");
    assert!(d.notes.is_empty());
}

#[test]
fn a_meta_that_is_json_only_without_its_backslashes_is_read_as_nacos_does() {
    let k = format!("{META}public##G@@c");
    let text = format!(
        r#"{{"key":"{k}","value":{{\"name\":\"G@@c\",\"groupName\":\"G\"}},"timestamp":2}}"#
    );
    let d = parsed(&k, Some("public"), &text);
    assert_eq!(d.value["name"], "G@@c");
    assert!(d.notes[0].contains("backslash"), "{:?}", d.notes);
    // Not for other kinds of file.
    let k = format!("{IPLIST}public##G@@c");
    let text = format!(r#"{{"key":"{k}","value":{{\"instanceList\":[]}},"timestamp":2}}"#);
    assert!(refused(&k, Some("public"), &text).contains("not JSON"));
}

#[test]
fn the_switch_domain_lives_at_the_top() {
    let v =
        json!({"name": "00-00---000-NACOS_SWITCH_DOMAIN-000---00-00", "healthCheckEnabled": true});
    let d = parsed(SWITCH, None, &datum(SWITCH, v.clone(), 12));
    assert_eq!((d.key.as_str(), d.value, d.timestamp), (SWITCH, v, 12));
    let e = refused(SWITCH, Some("public"), &datum(SWITCH, json!({}), 1));
    assert!(e.contains("top of data/"), "{e}");
    let e = refused(SWITCH, None, &datum(SWITCH, json!([1]), 1));
    assert!(e.contains("SwitchDomain"), "{e}");
}

#[test]
fn files_in_the_wrong_place_or_with_wrong_contents_are_refused_with_the_reason() {
    let k = format!("{IPLIST}public##G@@s");
    let ok = datum(&k, json!({"instanceList": []}), 1);
    let cases: Vec<(String, Option<&str>, String, &str)> = vec![
        (k.clone(), Some("dev"), ok.clone(), "data/public/"),
        (k.clone(), None, ok.clone(), "data/public/"),
        (format!("{k}x"), Some("public"), ok.clone(), "do not match"),
        (
            k.clone(),
            Some("public"),
            ok[..ok.len() - 5].to_string(),
            "not JSON",
        ),
        (k.clone(), Some("public"), "[1,2]".into(), "not an object"),
        (
            k.clone(),
            Some("public"),
            json!({"value": {}, "timestamp": 1}).to_string(),
            "no key",
        ),
        (
            k.clone(),
            Some("public"),
            json!({"key": 5, "value": {}, "timestamp": 1}).to_string(),
            "not a string",
        ),
        (
            k.clone(),
            Some("public"),
            json!({"key": k, "value": {}}).to_string(),
            "no timestamp",
        ),
        (k.clone(), Some("public"), datum(&k, json!({}), 0), "from 1"),
        (
            k.clone(),
            Some("public"),
            json!({"key": k, "value": {}, "timestamp": -3}).to_string(),
            "from 1",
        ),
        (
            k.clone(),
            Some("public"),
            json!({"key": k, "value": {}, "timestamp": "7"}).to_string(),
            "not a number",
        ),
        (
            k.clone(),
            Some("public"),
            json!({"key": k, "timestamp": 1}).to_string(),
            "no value",
        ),
        (
            k.clone(),
            Some("public"),
            datum(&k, json!("x"), 1),
            "neither",
        ),
        (
            k.clone(),
            Some("public"),
            datum(&k, json!([5]), 1),
            "position 0",
        ),
        (
            k.clone(),
            Some("public"),
            datum(
                &k,
                json!({"instanceList": [{"ip": "127.0.0.1", "port": 70000}]}),
                1,
            ),
            "not Nacos's Instances",
        ),
        (
            format!("{META}public##G@@s"),
            Some("public"),
            datum(&format!("{META}public##G@@s"), json!({"groupName": "G"}), 1),
            "no name",
        ),
        (
            format!("{IPLIST}public"),
            Some("public"),
            datum(&format!("{IPLIST}public"), json!({}), 1),
            "no \"##\"",
        ),
        (
            format!("{IPLIST}public##"),
            Some("public"),
            datum(&format!("{IPLIST}public##"), json!({}), 1),
            "no service",
        ),
    ];
    for (name, ns, text, says) in cases {
        let e = refused(&name, ns, &text);
        assert!(e.contains(says), "{name} {text}: {e:?} lacks {says:?}");
    }
    let e = match parse_file(&k, Some("public"), b"{\"key\": \"\xff\"}") {
        Err(e) => e,
        Ok(_) => panic!("bad UTF-8 accepted"),
    };
    assert!(e.contains("UTF-8"), "{e}");
    // A datum serialised by Nacos 1.4's JRaft-based store is named as such.
    let mut hessian = b"C\x30\x2a".to_vec();
    hessian.extend_from_slice(b"com.alibaba.nacos.naming.consistency.Datum\x93\x03key\xff");
    let e = match parse_file(&k, Some("public"), &hessian) {
        Err(e) => e,
        Ok(_) => panic!("binary accepted"),
    };
    assert!(e.contains("JRaft"), "{e}");
    // A key with a control character is refused by the key rule, naming it.
    let bad = format!("{IPLIST}public##G@@a\u{7}");
    let e = refused(
        &bad,
        Some("public"),
        &datum(&bad, json!({"instanceList": []}), 1),
    );
    assert!(e.contains("control character"), "{e}");
    // Nested past the value rule.
    let mut deep = json!(1);
    for _ in 0..70 {
        deep = json!({"a": deep});
    }
    let g = format!("{CACHE_FILE_PREFIX}.other");
    let e = refused(&g, None, &datum(&g, deep, 1));
    assert!(e.contains("levels deep"), "{e}");
}

#[test]
fn blank_files_are_blank() {
    for text in ["", "  \n\t"] {
        assert!(matches!(
            parse_file(IPLIST, Some("public"), text.as_bytes()),
            Ok(Parsed::Blank)
        ));
    }
}

#[test]
fn meta_properties_terms() {
    assert_eq!(
        properties_term("#Tue Dec 01 10:00:00 CST 2020\nterm=1203\n"),
        Ok(1203)
    );
    assert_eq!(properties_term("  term : 7"), Ok(7));
    assert!(properties_term("#only a comment\n").is_err());
    assert!(properties_term("term=abc").unwrap_err().contains("abc"));
}

#[test]
fn a_whole_dir_is_scanned_and_the_newer_of_two_files_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("meta.properties"), "#c\nterm=300\n").unwrap();
    let k = format!("{IPLIST}public##DEFAULT_GROUP@@orders");
    let newer = json!({"instanceList": [instance("127.0.0.11", 1)]});
    // The 1.3.x file is newer here; then the 1.4 one, newer there.
    let a = put(
        dir,
        &format!("public/{k}.datum"),
        &datum(&k, newer.clone(), 5),
    );
    let b = put(
        dir,
        &format!("public/{k}"),
        &datum(&k, json!({"instanceList": []}), 4),
    );
    let k2 = format!("{IPLIST}dev##DEFAULT_GROUP@@pay");
    let c = put(
        dir,
        &format!("dev/{k2}.datum"),
        &datum(&k2, json!({"instanceList": []}), 2),
    );
    let d = put(
        dir,
        &format!("dev/{k2}"),
        &datum(&k2, json!({"instanceList": []}), 2),
    );
    // A pre-1.0 file and the grouped one for the same service: the newer wins.
    let old = format!("{IPLIST}dev##legacy");
    let e = put(
        dir,
        &format!("dev/{old}"),
        &datum(&old, json!([instance("127.0.0.12", 2)]), 8),
    );
    let grouped = format!("{IPLIST}dev##DEFAULT_GROUP@@legacy");
    let f = put(
        dir,
        &format!("dev/{grouped}"),
        &datum(&grouped, json!({"instanceList": []}), 3),
    );
    put(dir, SWITCH, &datum(SWITCH, json!({"name": "switch"}), 1));
    let blank = put(
        dir,
        &format!("public/{IPLIST}public##DEFAULT_GROUP@@empty"),
        "\n",
    );
    let other = put(dir, "public/.DS_Store", "junk");
    let eph = put(dir, &format!("public/{IPLIST}ephemeral.public##G@@e"), "{}");
    let bad = put(dir, &format!("public/{META}public##G@@torn"), "{\"key\":");
    fs::create_dir_all(
        dir.join("data/public")
            .join(format!("{META}public##G@@dir")),
    )
    .unwrap();

    let s = scan(dir).unwrap();
    assert_eq!(s.term, Some(300));
    assert_eq!(s.files, 12);
    let got: Vec<(&str, u64, &Path)> = s
        .datums
        .iter()
        .map(|f| (f.key.as_str(), f.timestamp, f.path.as_path()))
        .collect();
    assert_eq!(
        got,
        vec![
            (SWITCH, 1, dir.join("data").join(SWITCH).as_path()),
            (grouped.as_str(), 8, e.as_path()),
            (k2.as_str(), 2, d.as_path()),
            (k.as_str(), 5, a.as_path()),
        ]
    );
    let sup: Vec<(&Path, &Path)> = s
        .superseded
        .iter()
        .map(|x| (x.path.as_path(), x.by.as_path()))
        .collect();
    assert_eq!(sup.len(), 3);
    for pair in [
        (b.as_path(), a.as_path()),
        (c.as_path(), d.as_path()),
        (f.as_path(), e.as_path()),
    ] {
        assert!(sup.contains(&pair), "{pair:?} not in {sup:?}");
    }
    let ignored: Vec<&Path> = s.ignored.iter().map(|n| n.path.as_path()).collect();
    assert_eq!(ignored.len(), 3, "{:?}", s.ignored);
    for p in [&blank, &other, &eph] {
        assert!(ignored.contains(&p.as_path()), "{p:?}");
    }
    assert_eq!(s.bad.len(), 2, "{:?}", s.bad);
    assert_eq!(
        s.bad[0].path,
        dir.join("data/public")
            .join(format!("{META}public##G@@dir"))
    );
    assert!(s.bad[0].reason.contains("directory"));
    assert_eq!(s.bad[1].path, bad);
    assert!(s.bad[1].reason.contains("not JSON"));
    assert!(s.converted.iter().any(|n| n.path == e), "{:?}", s.converted);

    // The second pass gives what the first found; a file changed meanwhile is refused.
    let first = s.datums.iter().find(|f| f.key == k).unwrap();
    let d0 = load(first).unwrap();
    assert_eq!(
        (d0.key.as_str(), d0.timestamp, &d0.value),
        (k.as_str(), 5, &newer)
    );
    assert_eq!(serde_json::to_vec(&d0).unwrap().len(), first.bytes);
    let legacy = load(s.datums.iter().find(|f| f.key == grouped).unwrap()).unwrap();
    assert_eq!(legacy.value["instanceList"][0]["ephemeral"], json!(false));
    fs::write(&a, datum(&k, newer, 6)).unwrap();
    let err = load(first).unwrap_err().to_string();
    assert!(
        err.contains("changed") && err.contains(&*a.to_string_lossy()),
        "{err}"
    );
}

#[test]
fn limits_and_odd_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let k = format!("{IPLIST}public##G@@big");
    let p = dir.join("data/public").join(&k);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    let f = fs::File::create(&p).unwrap();
    f.set_len(MAX_FILE_BYTES + 1).unwrap();
    let s = scan(dir).unwrap();
    assert_eq!(s.bad.len(), 1);
    assert!(s.bad[0].reason.contains("more than"), "{}", s.bad[0].reason);
    // meta.properties that says nothing usable is noted, not fatal.
    fs::write(dir.join("meta.properties"), "term=x").unwrap();
    let s = scan(dir).unwrap();
    assert_eq!(s.term, None);
    let n = s.meta_note.unwrap();
    assert_eq!(n.path, dir.join("meta.properties"));
    assert!(n.reason.contains("\"x\""), "{}", n.reason);
}

#[test]
fn a_dir_that_is_not_a_naming_dir_says_where_to_look() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    fs::create_dir_all(home.join("data/naming/data")).unwrap();
    let e = scan(home).unwrap_err().to_string();
    assert!(e.contains("data/naming"), "{e}");
    let e = scan(&home.join("data")).unwrap_err().to_string();
    assert!(e.contains("naming"), "{e}");
    let inner = home.join("data/naming/data");
    fs::create_dir_all(inner.join("public")).unwrap();
    fs::write(
        inner.join("public").join(format!("{IPLIST}public##G@@s")),
        "{}",
    )
    .unwrap();
    let e = scan(&inner).unwrap_err().to_string();
    assert!(e.contains("data/ directory itself"), "{e}");
    let e = scan(&home.join("nope")).unwrap_err().to_string();
    assert!(e.contains("not a directory"), "{e}");
    assert!(scan(&home.join("data/naming")).unwrap().datums.is_empty());
}
