//! End-to-end tests of backups: `nacosctl snapshot save` under continuous writes, `status`,
//! a damaged file refused, and `restore` into a new 3-member cluster that serves exactly the
//! datums and timestamps of the backup's index (one member left empty catches up by snapshot).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(10);

/// An acknowledged write: its index, key, and the value number (`None`: a delete).
type Acked = (u64, String, Option<u64>);

#[test]
fn a_backup_saved_under_writes_restores_into_a_new_cluster_exactly() {
    let mut c = TestCluster::start(3, &[]);
    c.wait_for_leader(T);
    let client = c.client(T);
    for i in 0..300 {
        client.put(&format!("k{i:03}"), json!({"v": 0})).unwrap();
    }
    // Every acknowledged write, with its index: the state at any index follows from them.
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, client) = (acked.clone(), stop.clone(), c.client(T));
        thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("k{:03}", (n * 7) % 320);
                if n % 5 == 0 {
                    if let Ok(r) = client.delete(&key) {
                        acked.lock().unwrap().push((r.index, key, None));
                    }
                } else {
                    let r = client.put(&key, json!({"v": n})).unwrap();
                    acked.lock().unwrap().push((r.index, key, Some(n)));
                }
            }
        })
    };
    poll_until(T, || (acked.lock().unwrap().len() > 50).then_some(())).expect("writes go on");
    let file = c.dir.path().join("backup.snap");
    let file_s = file.to_str().unwrap().to_string();
    let out = nacosctl_at(&c.endpoints(), &["snapshot", "save", &file_s]);
    assert_code(&out, 0);
    let n_before = acked.lock().unwrap().len();
    poll_until(T, || {
        (acked.lock().unwrap().len() > n_before + 50).then_some(())
    })
    .expect("writes go on after the backup");
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    let status = json(&nacosctl_at(
        &c.endpoints(),
        &["-o", "json", "snapshot", "status", &file_s],
    ));
    let index = status["index"].as_u64().unwrap();
    assert_eq!(
        status["size"].as_u64().unwrap(),
        std::fs::metadata(&file).unwrap().len()
    );
    assert_eq!(status["sha256"].as_str().unwrap().len(), 64);

    // The expected state at `index`: the preload, then every acknowledged write up to it.
    let mut expected: BTreeMap<String, (u64, serde_json::Value)> = (0..300)
        .map(|i| (format!("k{i:03}"), (1, json!({"v": 0}))))
        .collect();
    let mut ops = acked.lock().unwrap().clone();
    ops.sort();
    assert!(
        ops.iter().any(|o| o.0 > index),
        "some writes came after the cut"
    );
    assert!(
        ops.iter().any(|o| o.0 <= index),
        "some writes came before the cut"
    );
    for (_, key, v) in ops.into_iter().filter(|o| o.0 <= index) {
        match v {
            Some(n) => {
                let ts = expected.get(&key).map_or(1, |(t, _)| t + 1);
                expected.insert(key, (ts, json!({"v": n})));
            }
            None => {
                expected.remove(&key);
            }
        }
    }
    assert_eq!(
        status["datums"].as_u64().unwrap(),
        expected.len() as u64,
        "the backup holds the state at its index"
    );
    let source_digest = client.digest_of(&c.nodes[0].addr, Some(index)).unwrap();

    // A damaged copy is refused by status and restore, and restore writes nothing.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    let damaged = c.dir.path().join("damaged.snap");
    std::fs::write(&damaged, &bytes).unwrap();
    let damaged_s = damaged.to_str().unwrap();
    let out = nacosctl_at(&c.endpoints(), &["snapshot", "status", damaged_s]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("damaged") || stderr(&out).contains("checksum"),
        "{}",
        describe(&out)
    );
    let nowhere = c.dir.path().join("nowhere");
    let out = nacosctl_at(
        &c.endpoints(),
        &[
            "snapshot",
            "restore",
            damaged_s,
            "--data-dir",
            nowhere.to_str().unwrap(),
        ],
    );
    assert_code(&out, 1);
    assert!(!nowhere.exists(), "a refused restore leaves nothing behind");

    // Restore into two members of a new cluster; the third starts empty.
    let mut fresh = TestCluster::new(3, &[]);
    let restore = |dir: &std::path::Path| {
        nacosctl_at(
            &fresh.endpoints(),
            &[
                "snapshot",
                "restore",
                &file_s,
                "--data-dir",
                dir.to_str().unwrap(),
            ],
        )
    };
    for node in &fresh.nodes[..2] {
        assert_code(&restore(&node.data_dir), 0);
    }
    // A second restore over a restored dir is refused.
    assert_code(&restore(&fresh.nodes[0].data_dir), 1);
    for node in &mut fresh.nodes {
        node.start();
    }
    for node in &mut fresh.nodes {
        node.wait_ready(T);
    }
    fresh.wait_for_leader(T);
    let fc = fresh.client(T);
    let listed: BTreeMap<String, u64> = fc
        .list("", false)
        .unwrap()
        .into_iter()
        .map(|e| (e.key, e.timestamp))
        .collect();
    let want: BTreeMap<String, u64> = expected.iter().map(|(k, (t, _))| (k.clone(), *t)).collect();
    assert_eq!(listed, want);
    for (k, (_, v)) in &expected {
        assert_eq!(&fc.get(k, false).unwrap().value, v, "{k}");
    }
    // Every member, the empty one included, holds the same state; on the restored ones it
    // is the source's state at the backup's index.
    let restored = fc.digest_of(&fresh.nodes[0].addr, Some(index)).unwrap();
    assert_eq!(restored.digest, source_digest.digest);
    let last = fc.put("after-restore", json!(1)).unwrap().index;
    assert!(last > index);
    for node in &fresh.nodes {
        let d = poll_until(T, || fc.digest_of(&node.addr, Some(last)).ok())
            .unwrap_or_else(|| panic!("{} has no digest at {last}\n{}", node.addr, fresh.logs()));
        assert_eq!(
            d.digest,
            fc.digest_of(&fresh.nodes[0].addr, Some(last))
                .unwrap()
                .digest
        );
    }
}
