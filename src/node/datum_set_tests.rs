//! Tests of the datum set: timestamps, replay over crash points, checkpoints, watches and
//! digests, the datum-file repair.

use super::*;
use crate::raft::LogId;
use serde_json::json;

fn e(index: u64, command: Command) -> Entry {
    Entry {
        index,
        term: 1,
        command,
    }
}
fn publish(key: &str, v: i64) -> Command {
    Command::publish(key.into(), json!(v))
}
fn delete(key: &str) -> Command {
    Command::delete(key.into())
}

#[test]
fn timestamps_follow_nacos_and_files_match() {
    let dir = tempfile::tempdir().unwrap();
    let sm = DatumSet::load(dir.path().into()).unwrap();
    let rx = sm.listen("k", false).unwrap().rx;
    let r = sm
        .apply(&[
            e(1, publish("k", 1)),
            e(2, publish("k", 2)),
            e(3, delete("k")),
            e(4, publish("k", 4)),
        ])
        .unwrap();
    let applied: Vec<Applied> = r.into_iter().map(|x| x.2).collect();
    assert_eq!(
        applied,
        vec![
            Applied::Published { timestamp: 1 },
            Applied::Published { timestamp: 2 },
            Applied::Deleted { existed: true },
            Applied::Published { timestamp: 1 },
        ]
    );
    let kinds: Vec<(EventKind, u64)> = rx.try_iter().map(|ev| (ev.event, ev.index)).collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Change, 1),
            (EventKind::Change, 2),
            (EventKind::Delete, 3),
            (EventKind::Change, 4)
        ]
    );
    assert_eq!(sm.flush().unwrap(), 4);
    let files = datum_dir::read_datum_dir(dir.path()).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, sm.get("k").unwrap());
    assert_eq!(sm.applied_index(), 4);
}

/// Replaying the whole log over files written by any prefix of it gives the same state.
#[test]
fn replay_over_any_crash_point_is_exact() {
    let log = vec![
        e(1, publish("a", 1)),
        e(2, publish("b", 1)),
        e(3, publish("a", 2)),
        e(4, delete("a")),
        e(5, publish("b", 2)),
        e(6, publish("a", 3)),
        e(7, delete("b")),
        e(8, publish("a", 4)),
    ];
    let full = tempfile::tempdir().unwrap();
    let sm = DatumSet::load(full.path().into()).unwrap();
    sm.apply(&log).unwrap();
    sm.flush().unwrap();
    let expected = datum_dir::read_datum_dir(full.path()).unwrap();
    for crash_at in 0..=log.len() {
        let dir = tempfile::tempdir().unwrap();
        let before = DatumSet::load(dir.path().into()).unwrap();
        before.apply(&log[..crash_at]).unwrap();
        before.flush().unwrap();
        let restarted = DatumSet::load(dir.path().into()).unwrap();
        restarted.apply(&log).unwrap();
        restarted.flush().unwrap();
        let got = datum_dir::read_datum_dir(dir.path()).unwrap();
        let strip = |v: &Vec<(Datum, PathBuf)>| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
        assert_eq!(
            strip(&got),
            strip(&expected),
            "crash after {crash_at} entries"
        );
    }
}

#[test]
fn prefix_listener_and_unlisten() {
    let dir = tempfile::tempdir().unwrap();
    let sm = DatumSet::load(dir.path().into()).unwrap();
    let sub = sm.listen("svc.", true).unwrap();
    sm.apply(&[e(1, publish("svc.a", 1)), e(2, publish("other", 1))])
        .unwrap();
    sm.notifier().unsubscribe(sub.id);
    sm.apply(&[e(3, publish("svc.b", 1))]).unwrap();
    let keys: Vec<String> = sub.rx.try_iter().map(|ev| ev.key.clone()).collect();
    assert_eq!(keys, vec!["svc.a"]);
}

#[test]
fn watch_resumes_without_gap_or_duplicate_and_reports_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let sm = DatumSet::load(dir.path().into()).unwrap();
    sm.apply(&[
        e(1, publish("a", 1)),
        e(2, publish("b", 1)),
        e(3, delete("a")),
    ])
    .unwrap();
    let sub = sm.notifier().subscribe("a", false, Some(2)).unwrap();
    let (from, upto) = sub.replay.unwrap();
    let (replay, _) = sm
        .notifier()
        .replay_page("a", false, from, upto, 10)
        .unwrap();
    assert_eq!(replay.iter().map(|e| e.index).collect::<Vec<_>>(), vec![3]);
    sm.apply(&[e(4, publish("a", 4))]).unwrap();
    assert_eq!(
        sub.rx.try_iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![4]
    );
    sm.flush().unwrap();
    // After a restart, history before the newest datum file is gone.
    let restarted = DatumSet::load(dir.path().into()).unwrap();
    assert_eq!(
        restarted.notifier().subscribe("a", false, Some(2)).err(),
        Some(WatchRefused::Compacted { floor: 5 })
    );
    assert!(restarted.notifier().subscribe("a", false, Some(5)).is_ok());
}

#[test]
fn digest_tracks_the_datum_set_not_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let one = DatumSet::load(dir.path().join("1")).unwrap();
    let two = DatumSet::load(dir.path().join("2")).unwrap();
    one.apply(&[
        e(1, publish("a", 1)),
        e(2, publish("b", 2)),
        e(3, delete("b")),
    ])
    .unwrap();
    two.apply(&[
        e(1, publish("a", 1)),
        e(2, publish("c", 2)),
        e(3, delete("c")),
    ])
    .unwrap();
    // Same datum set at 3, different at 2.
    assert_eq!(one.digest_at(3), two.digest_at(3));
    assert_ne!(one.digest_at(2), two.digest_at(2));
    assert_eq!(one.digest(), (3, one.digest_at(3).unwrap()));
    // A restarted replica loads the same digest from its files.
    one.flush().unwrap();
    let again = DatumSet::load(dir.path().join("1")).unwrap();
    assert_eq!(again.digest().1, one.digest().1);
}
fn datums_of(sm: &DatumSet) -> Vec<Datum> {
    sm.list("")
}

/// A restart from a checkpoint written while writes went on (fuzzy), followed by the
/// log after its base, gives exactly the state of a run without the restart, and the
/// datum files follow.
#[test]
fn restart_from_a_fuzzy_checkpoint_is_exact() {
    // Conditional writes too: some hold and some do not, and a replay must judge each as
    // the first run did.
    let log: Vec<Entry> = (1..=40)
        .map(|i| match i % 5 {
            0 => e(i, delete(&format!("k{}", i % 7))),
            3 => e(
                i,
                Command::Publish {
                    key: format!("k{}", i % 7),
                    value: json!(i),
                    if_timestamp: Some(i % 3),
                    request: None,
                    user: None,
                },
            ),
            _ => e(i, publish(&format!("k{}", i % 7), i as i64)),
        })
        .collect();
    let reference = tempfile::tempdir().unwrap();
    let full = DatumSet::load(reference.path().into()).unwrap();
    full.apply(&log).unwrap();
    for base_at in [0usize, 7, 20, 33] {
        for fuzz in [0usize, 3, 7] {
            let dir = tempfile::tempdir().unwrap();
            let sm = DatumSet::load(dir.path().into()).unwrap();
            sm.apply(&log[..base_at]).unwrap();
            let mut w =
                checkpoint::CheckpointWriter::create(dir.path(), sm.flush().unwrap()).unwrap();
            // Writes land while the checkpoint is being read: the first half of the
            // keys is read before them, the rest after.
            let before = datums_of(&sm);
            sm.apply(&log[base_at..(base_at + fuzz).min(log.len())])
                .unwrap();
            let after = datums_of(&sm);
            let mut set: Vec<Datum> = before
                .into_iter()
                .filter(|d| d.key.as_str() < "k4")
                .collect();
            set.extend(after.into_iter().filter(|d| d.key.as_str() >= "k4"));
            for d in &set {
                w.add(d).unwrap();
            }
            w.finish(sm.applied_index()).unwrap();
            drop(sm);
            let (restarted, base) = DatumSet::open(dir.path().into(), 0, log.len() as u64).unwrap();
            assert_eq!(base, base_at as u64);
            restarted.start_at(base, log.len() as u64);
            restarted.apply(&log).unwrap();
            assert_eq!(
                datums_of(&restarted),
                datums_of(&full),
                "base {base_at} fuzz {fuzz}"
            );
            restarted.flush().unwrap();
            let files: Vec<Datum> = datum_dir::read_datum_dir(dir.path())
                .unwrap()
                .into_iter()
                .map(|x| x.0)
                .collect();
            assert_eq!(files, datums_of(&full), "files, base {base_at} fuzz {fuzz}");
        }
    }
}

fn checkpointed(dir: &std::path::Path, rounds: i64) -> DatumSet {
    let sm = DatumSet::load(dir.into()).unwrap();
    for r in 1..=rounds {
        sm.apply(&[e(r as u64, publish(&format!("k{r}"), r))])
            .unwrap();
        sm.checkpoint().unwrap();
    }
    sm
}

#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let sm = checkpointed(dir.path(), 3);
    assert_eq!(
        sm.checkpoints(),
        Checkpoints {
            newest: Some(3),
            previous: Some(2)
        }
    );
    let newest = checkpoint::checkpoint_path(dir.path());
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() - 30;
    bytes[at] ^= 1;
    std::fs::write(&newest, bytes).unwrap();
    let (restarted, base) = DatumSet::open(dir.path().into(), 0, 3).unwrap();
    assert_eq!(base, 2);
    assert_eq!(restarted.len(), 2);
    assert!(!newest.exists());
    assert!(dir.path().join("checkpoint.damaged").exists());
    assert_eq!(
        restarted.checkpoints(),
        Checkpoints {
            newest: None,
            previous: Some(2)
        }
    );
    // The next checkpoint keeps the good previous one where compaction looks.
    restarted.start_at(2, 3);
    restarted.apply(&[e(3, publish("k3", 3))]).unwrap();
    restarted.checkpoint().unwrap();
    assert_eq!(
        restarted.checkpoints(),
        Checkpoints {
            newest: Some(3),
            previous: Some(2)
        }
    );
}

#[test]
fn with_no_usable_checkpoint_start_up_refuses_and_names_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path(), 2);
    for path in [
        checkpoint::checkpoint_path(dir.path()),
        checkpoint::previous_path(dir.path()),
    ] {
        std::fs::write(&path, b"NACOSCKP garbage").unwrap();
    }
    match DatumSet::open(dir.path().into(), 0, 2) {
        Err(Error::Unrecoverable { reason, .. }) => {
            assert!(reason.contains("checkpoint.prev"), "{reason}");
            assert!(reason.contains("empty one"), "{reason}");
        }
        other => panic!("expected Unrecoverable, got {:?}", other.map(|x| x.1)),
    }
    // A checkpoint older than the log's start is not used either.
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path(), 2);
    assert!(matches!(
        DatumSet::open(dir.path().into(), 5, 9),
        Err(Error::Unrecoverable { .. })
    ));
}

#[test]
fn a_missing_newest_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path(), 3);
    std::fs::remove_file(checkpoint::checkpoint_path(dir.path())).unwrap();
    let (restarted, base) = DatumSet::open(dir.path().into(), 0, 3).unwrap();
    assert_eq!((base, restarted.len()), (2, 2));
}

/// Both checkpoints gone over a compacted log: the datum files alone may lack writes
/// the log no longer holds, so start-up refuses (it once started with part of the data).
#[test]
fn no_checkpoint_over_a_compacted_log_refuses_unless_the_files_are_complete() {
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path(), 3);
    checkpoint::remove(dir.path()).unwrap();
    match DatumSet::open(dir.path().into(), 2, 3) {
        Err(Error::Unrecoverable { reason, .. }) => {
            assert!(reason.contains("state up to 2 is missing"), "{reason}");
            assert!(reason.contains("move this data dir aside"), "{reason}");
        }
        other => panic!("expected Unrecoverable, got {:?}", other.map(|x| x.1)),
    }
    // A snapshot install marks the files complete at its index.
    datum_dir::mark_complete(dir.path(), 2).unwrap();
    assert!(DatumSet::open(dir.path().into(), 2, 3).is_ok());
}

/// A checkpoint holds only what was applied, and applied entries were durable in the
/// log first: a log that ends before it lost acknowledged entries.
#[test]
fn a_log_that_ends_before_the_checkpoint_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path(), 3);
    match DatumSet::open(dir.path().into(), 0, 2) {
        Err(Error::Unrecoverable { reason, .. }) => {
            assert!(reason.contains("ends at index 2"), "{reason}");
        }
        other => panic!("expected Unrecoverable, got {:?}", other.map(|x| x.1)),
    }
}

/// After a crash the datum files are compared with the state: stale, damaged, missing
/// and left-over files are all queued and fixed by the next flush.
#[test]
fn reconcile_fixes_every_kind_of_stale_datum_file() {
    let dir = tempfile::tempdir().unwrap();
    let sm = DatumSet::load(dir.path().into()).unwrap();
    sm.apply(&[
        e(1, publish("stale", 1)),
        e(2, publish("damaged", 1)),
        e(3, publish("missing", 1)),
        e(4, publish("fine", 1)),
        e(5, publish("stale", 2)),
        e(6, publish("deleted", 1)),
    ])
    .unwrap();
    sm.flush().unwrap();
    // What a power cut can leave: an older version, a torn file, no file, and a file
    // for a key deleted since.
    datum_dir::write_datum(
        dir.path(),
        &Datum {
            key: "stale".into(),
            value: json!(1),
            timestamp: 1,
            index: 1,
        },
    )
    .unwrap();
    std::fs::write(datum_dir::datum_path(dir.path(), "damaged"), b"{\"key\":").unwrap();
    datum_dir::remove_datum(dir.path(), "missing").unwrap();
    sm.apply(&[e(7, delete("deleted"))]).unwrap();
    sm.dirty.lock().unwrap().clear();
    datum_dir::write_datum(dir.path(), &sm.get("fine").unwrap()).unwrap();
    let gone = Datum {
        key: "deleted".into(),
        value: json!(1),
        timestamp: 1,
        index: 6,
    };
    datum_dir::write_datum(dir.path(), &gone).unwrap();

    assert_eq!(sm.reconcile_files().unwrap(), (4, 4));
    sm.flush().unwrap();
    let files: Vec<Datum> = datum_dir::read_datum_dir(dir.path())
        .unwrap()
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(files, datums_of(&sm));
    assert_eq!(sm.reconcile_files().unwrap(), (4, 0));
}

/// Right after a restart with nothing to replay, the digest at the applied index is known.
#[test]
fn a_restart_with_nothing_to_replay_knows_its_digest_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sm = checkpointed(dir.path(), 3);
    let (index, digest) = sm.digest();
    assert_eq!(index, 3);
    drop(sm);
    let (restarted, base) = DatumSet::open(dir.path().into(), 0, 3).unwrap();
    restarted.start_at(base, 3);
    assert_eq!(restarted.digest_at(3), Some(digest));
    assert_eq!(restarted.digest(), (3, digest));
}

/// Compare-and-set is judged at apply time against the key as the log left it, and a
/// failed condition changes nothing (no timestamp, no event, no file).
#[test]
fn conditional_writes_apply_only_when_the_timestamp_matches() {
    let dir = tempfile::tempdir().unwrap();
    let sm = DatumSet::load(dir.path().into()).unwrap();
    let sub = sm.listen("k", false).unwrap();
    let cas = |v: i64, t: u64| Command::Publish {
        key: "k".into(),
        value: json!(v),
        if_timestamp: Some(t),
        request: None,
        user: None,
    };
    let del_if = |t: u64| Command::Delete {
        key: "k".into(),
        if_timestamp: Some(t),
        request: None,
        user: None,
    };
    let r = sm
        .apply(&[
            e(1, cas(1, 0)),
            e(2, cas(2, 0)),
            e(3, cas(3, 1)),
            e(4, del_if(1)),
            e(5, del_if(2)),
            e(6, cas(6, 2)),
            e(7, cas(7, 0)),
        ])
        .unwrap();
    let applied: Vec<Applied> = r.into_iter().map(|x| x.2).collect();
    assert_eq!(
        applied,
        vec![
            Applied::Published { timestamp: 1 },
            Applied::PreconditionFailed { current: 1 },
            Applied::Published { timestamp: 2 },
            Applied::PreconditionFailed { current: 2 },
            Applied::Deleted { existed: true },
            Applied::PreconditionFailed { current: 0 },
            Applied::Published { timestamp: 1 },
        ]
    );
    let events: Vec<u64> = sub.rx.try_iter().map(|e| e.index).collect();
    assert_eq!(events, vec![1, 3, 5, 7], "a failed condition made an event");
    assert_eq!(
        sm.get("k").map(|d| (d.value, d.timestamp)),
        Some((json!(7), 1))
    );
}

fn with_request(c: Command, client: &str, seq: u64) -> Command {
    let req = Some(crate::raft::RequestId {
        client: client.into(),
        seq,
    });
    match c {
        Command::Publish {
            key,
            value,
            if_timestamp,
            user,
            ..
        } => Command::Publish {
            key,
            value,
            if_timestamp,
            request: req,
            user,
        },
        Command::Delete {
            key,
            if_timestamp,
            user,
            ..
        } => Command::Delete {
            key,
            if_timestamp,
            request: req,
            user,
        },
        other => other,
    }
}

/// A request applied once is answered as the first time when it comes again (a retry
/// appended after it), changing nothing; an older one of the same client is not applied.
#[test]
fn a_repeated_request_is_answered_as_the_first_time_and_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let sm = DatumSet::load(dir.path().into()).unwrap();
    let r = sm
        .apply(&[
            e(1, with_request(publish("k", 1), "c", 1)),
            e(2, publish("k", 2)),
            e(3, with_request(publish("k", 1), "c", 1)),
            e(4, with_request(delete("k"), "c", 2)),
            e(5, with_request(publish("k", 9), "c", 1)),
        ])
        .unwrap();
    let applied: Vec<Applied> = r.into_iter().map(|x| x.2).collect();
    assert_eq!(
        applied,
        vec![
            Applied::Published { timestamp: 1 },
            Applied::Published { timestamp: 2 },
            Applied::Duplicate {
                at: LogId::new(1, 1),
                outcome: Outcome::Published { timestamp: 1 }
            },
            Applied::Deleted { existed: true },
            Applied::Stale { latest: 2 },
        ]
    );
    assert!(sm.get("k").is_none(), "the stale request was applied");
}

/// Sessions are in checkpoints, exact at the checkpoint's base: after a restart a retry is
/// still answered as the first time, and the replay after the base decides as the first
/// run did.
#[test]
fn sessions_survive_a_restart_through_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let sm = DatumSet::load(dir.path().into()).unwrap();
    sm.apply(&[e(1, with_request(publish("k", 1), "c", 1))])
        .unwrap();
    sm.checkpoint().unwrap();
    sm.apply(&[e(2, with_request(publish("k", 2), "c", 2))])
        .unwrap();
    drop(sm);
    let (restarted, base) = DatumSet::open(dir.path().into(), 0, 2).unwrap();
    assert_eq!(base, 1);
    restarted.start_at(base, 2);
    let r = restarted
        .apply(&[
            e(2, with_request(publish("k", 2), "c", 2)),
            e(3, with_request(publish("k", 2), "c", 2)),
        ])
        .unwrap();
    assert_eq!(r[0].2, Applied::Published { timestamp: 2 }, "the replay");
    assert_eq!(
        r[1].2,
        Applied::Duplicate {
            at: LogId::new(2, 1),
            outcome: Outcome::Published { timestamp: 2 }
        }
    );
    assert_eq!(restarted.session_count(), 1);
}

fn auth(change: crate::auth::AuthChange) -> Command {
    Command::Auth { change }
}

/// Access control is applied in log order and kept in checkpoints exact at their base, as
/// the sessions are: the replay after a restart reaches the same table, and a change that
/// does not fit changes nothing.
#[test]
fn access_control_is_applied_in_order_and_survives_a_restart_through_the_checkpoint() {
    use crate::auth::{hash_password, new_token_key, Access, AuthChange, Perm, ROOT};
    let dir = tempfile::tempdir().unwrap();
    let sm = DatumSet::load(dir.path().into()).unwrap();
    let key = new_token_key().unwrap();
    let r = sm
        .apply(&[
            e(
                1,
                auth(AuthChange::Enable {
                    token_key: key.clone(),
                }),
            ),
            e(
                2,
                auth(AuthChange::UserAdd {
                    name: ROOT.into(),
                    hash: hash_password("r").unwrap(),
                }),
            ),
            e(3, auth(AuthChange::Enable { token_key: key })),
            e(4, auth(AuthChange::RoleAdd { name: "ro".into() })),
        ])
        .unwrap();
    assert!(matches!(&r[0].2, Applied::Auth(Err(m)) if m.contains("user add root")));
    assert_eq!(r[1].2, Applied::Auth(Ok(())));
    assert!(sm.auth().enabled());
    sm.checkpoint().unwrap();
    let after = [
        e(
            5,
            auth(AuthChange::UserAdd {
                name: "app".into(),
                hash: hash_password("a").unwrap(),
            }),
        ),
        e(
            6,
            auth(AuthChange::RoleGrant {
                name: "ro".into(),
                prefix: "cfg/".into(),
                perm: Perm::Read,
            }),
        ),
        e(
            7,
            auth(AuthChange::UserGrantRole {
                name: "app".into(),
                role: "ro".into(),
            }),
        ),
    ];
    sm.apply(&after).unwrap();
    let before: Vec<String> = sm.capture_sessions().1;
    assert!(sm.auth().may("app", Access::Read, "cfg/a"));
    drop(sm);
    let (restarted, base) = DatumSet::open(dir.path().into(), 0, 7).unwrap();
    assert_eq!(base, 4);
    restarted.start_at(base, 7);
    assert!(restarted.auth().enabled(), "from the checkpoint");
    assert!(restarted.auth().user("app").is_none(), "exact at the base");
    restarted.apply(&after).unwrap();
    assert_eq!(
        restarted.capture_sessions().1,
        before,
        "the replay reached the same table"
    );
    assert!(restarted.auth().may("app", Access::Read, "cfg/a"));
    assert!(!restarted.auth().may("app", Access::Write, "cfg/a"));
    // Auth records live beside the session records and parse back as such.
    for line in &before {
        assert!(
            matches!(parse_side_line(line), Ok(SideRecord::Auth(_))),
            "{line}"
        );
    }
    assert!(parse_side_line("{\"auth\":\"user\"}").is_err());
    assert!(parse_side_line("not json").is_err());
}

/// Writes are judged by access control when they apply, in log order: a write logged after
/// `auth enable` without a user, or after its user lost the grant, changes nothing, on every
/// replica alike.
#[test]
fn writes_are_judged_by_access_control_in_log_order() {
    use crate::auth::{hash_password, new_token_key, AuthChange, Perm, ROOT};
    let dir = tempfile::tempdir().unwrap();
    let sm = DatumSet::load(dir.path().into()).unwrap();
    let by = |c: Command, who: Option<&str>| match c {
        Command::Publish {
            key,
            value,
            if_timestamp,
            request,
            ..
        } => Command::Publish {
            key,
            value,
            if_timestamp,
            request,
            user: who.map(str::to_string),
        },
        other => other,
    };
    let r = sm
        .apply(&[
            e(1, publish("a/k", 1)),
            e(
                2,
                auth(AuthChange::UserAdd {
                    name: ROOT.into(),
                    hash: hash_password("r").unwrap(),
                }),
            ),
            e(
                3,
                auth(AuthChange::UserAdd {
                    name: "app".into(),
                    hash: hash_password("a").unwrap(),
                }),
            ),
            e(4, auth(AuthChange::RoleAdd { name: "rw".into() })),
            e(
                5,
                auth(AuthChange::RoleGrant {
                    name: "rw".into(),
                    prefix: "a/".into(),
                    perm: Perm::Write,
                }),
            ),
            e(
                6,
                auth(AuthChange::UserGrantRole {
                    name: "app".into(),
                    role: "rw".into(),
                }),
            ),
            e(
                7,
                auth(AuthChange::Enable {
                    token_key: new_token_key().unwrap(),
                }),
            ),
            // Sent while access control was off, applied after it came on.
            e(8, publish("a/k", 8)),
            e(9, by(publish("a/k", 9), Some("app"))),
            e(10, by(publish("b/k", 10), Some("app"))),
            e(
                11,
                auth(AuthChange::RoleRevoke {
                    name: "rw".into(),
                    prefix: "a/".into(),
                }),
            ),
            e(12, by(publish("a/k", 12), Some("app"))),
            e(13, by(publish("b/k", 13), Some(ROOT))),
        ])
        .unwrap();
    let verdicts: Vec<&Applied> = r.iter().map(|x| &x.2).collect();
    assert_eq!(verdicts[0], &Applied::Published { timestamp: 1 });
    assert!(
        matches!(verdicts[7], Applied::Denied(m) if m.contains("turned on")),
        "{:?}",
        verdicts[7]
    );
    assert_eq!(verdicts[8], &Applied::Published { timestamp: 2 });
    assert!(matches!(verdicts[9], Applied::Denied(m) if m.contains("may not write")));
    assert!(
        matches!(verdicts[11], Applied::Denied(_)),
        "after the revocation"
    );
    assert_eq!(verdicts[12], &Applied::Published { timestamp: 1 }, "root");
    assert_eq!(sm.get("a/k").map(|d| d.value), Some(json!(9)));
}

fn import(datums: &[(&str, i64, u64)]) -> Command {
    Command::Import {
        datums: datums
            .iter()
            .map(|&(k, v, ts)| crate::raft::ImportedDatum {
                key: k.into(),
                value: json!(v),
                timestamp: ts,
            })
            .collect(),
        user: None,
    }
}

#[test]
fn an_import_keeps_its_timestamps_and_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let sm = DatumSet::load(dir.path().into()).unwrap();
    let rx = sm.listen("", true).unwrap().rx;
    let r = sm
        .apply(&[
            e(1, publish("b", 1)),
            e(2, import(&[("a", 10, 7), ("b", 20, 1), ("c", 30, 3)])),
            // A re-run: nothing changes.
            e(3, import(&[("a", 10, 7), ("b", 20, 1), ("c", 30, 3)])),
            // A newer copy wins; an older one does not.
            e(4, import(&[("a", 11, 8), ("c", 29, 2)])),
            // An ordinary write after an import counts on from the imported timestamp.
            e(5, publish("a", 12)),
        ])
        .unwrap();
    let applied: Vec<Applied> = r.into_iter().map(|x| x.2).collect();
    assert_eq!(
        applied,
        vec![
            Applied::Published { timestamp: 1 },
            // b already had timestamp 1: same, so left alone.
            Applied::Imported { skipped: vec![1] },
            Applied::Imported {
                skipped: vec![0, 1, 2]
            },
            Applied::Imported { skipped: vec![1] },
            Applied::Published { timestamp: 9 },
        ]
    );
    assert_eq!(sm.get("a").unwrap().value, json!(12));
    assert_eq!(sm.get("b").unwrap().value, json!(1));
    assert_eq!(sm.get("c").unwrap().timestamp, 3);
    let changes: Vec<(String, u64)> = rx
        .try_iter()
        .map(|ev| (ev.key.clone(), ev.timestamp))
        .collect();
    assert_eq!(
        changes,
        vec![
            ("b".into(), 1),
            ("a".into(), 7),
            ("c".into(), 3),
            ("a".into(), 8),
            ("a".into(), 9)
        ]
    );
    // The files follow, like any write.
    sm.flush().unwrap();
    let files = datum_dir::read_datum_dir(dir.path()).unwrap();
    assert_eq!(files.len(), 3);
}

#[test]
fn a_frozen_view_is_the_state_at_its_index_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let sm = DatumSet::load(dir.path().into()).unwrap();
    sm.start_at(0, 0);
    let entries: Vec<Entry> = (1..=50)
        .map(|i| e(i, publish(&format!("k{i:03}"), i as i64)))
        .collect();
    sm.apply(&entries).unwrap();
    let expected: Vec<Datum> = sm.list("");
    let view = sm.freeze().unwrap();
    assert_eq!((view.index, view.term), (50, 1));
    assert_eq!(sm.freeze().err(), Some(FreezeRefused::Busy));
    // Change, delete, re-create and add keys on both sides of the cursor.
    sm.apply(&[
        e(51, publish("k001", -1)),
        e(52, delete("k010")),
        e(53, publish("k000", 0)),
        e(54, publish("k999", 0)),
        e(55, delete("k020")),
        e(56, publish("k020", 20)),
    ])
    .unwrap();
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = view.page(after.as_deref(), 7).unwrap();
        // A write while paging, after the cursor.
        sm.apply(&[e(57 + got.len() as u64, delete("k049"))])
            .unwrap();
        got.extend(page.iter().cloned());
        if page.len() < 7 {
            break;
        }
        after = page.last().map(|d| d.key.clone());
    }
    assert_eq!(got, expected);
    assert!(sm.frozen_kept() >= 5);
    drop(view);
    assert_eq!(sm.frozen_kept(), 0);
    // Ended: another backup may start.
    let again = sm.freeze().unwrap();
    assert!(again.index > 50);
}

#[test]
fn a_frozen_view_ends_with_a_snapshot_install() {
    let dir = tempfile::tempdir().unwrap();
    let sm = DatumSet::load(dir.path().into()).unwrap();
    sm.start_at(0, 0);
    sm.apply(&[e(1, publish("a", 1))]).unwrap();
    let view = sm.freeze().unwrap();
    let mut w = crate::store::snapshot::SnapshotWriter::begin(dir.path(), 9).unwrap();
    w.add(&Datum {
        key: "z".into(),
        value: json!(1),
        timestamp: 1,
        index: 9,
    })
    .unwrap();
    w.commit(LogId::new(9, 2)).unwrap();
    sm.install_snapshot(9).unwrap();
    assert_eq!(view.page(None, 10), None);
    drop(view);
    // Not exact until the log passes the install: refused meanwhile.
    assert_eq!(sm.freeze().err(), Some(FreezeRefused::Converging));
}

#[test]
fn a_snapshot_install_loads_its_checkpoint_and_rewrites_the_datum_files_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let sm = DatumSet::load(dir.path().into()).unwrap();
    sm.start_at(0, 0);
    sm.apply(&[e(1, publish("gone", 1)), e(2, publish("kept", 2))])
        .unwrap();
    sm.flush().unwrap();
    let mut w = crate::store::snapshot::SnapshotWriter::begin(dir.path(), 9).unwrap();
    w.add_sessions(&[peers_line(&crate::raft::PeerSet::of_voters([
        crate::raft::PeerAddr::new("a:1"),
    ]))])
    .unwrap();
    for (key, v) in [("kept", 5), ("new", 6)] {
        w.add(&Datum {
            key: key.into(),
            value: json!(v),
            timestamp: 3,
            index: 8,
        })
        .unwrap();
    }
    w.commit(LogId::new(9, 2)).unwrap();
    sm.install_snapshot(9).unwrap();
    assert_eq!(sm.get("gone"), None);
    assert_eq!(sm.get("new").map(|d| d.value), Some(json!(6)));
    assert_eq!(sm.applied_index(), 9);
    assert_eq!(
        sm.peer_set().map(|p| p.voters.len()),
        Some(1),
        "the configuration came with it"
    );
    assert_eq!(sm.checkpoints().newest, Some(9));
    // The files follow at the next flush: the removed key's goes, the others are written.
    sm.flush().unwrap();
    let mut files: Vec<(String, serde_json::Value)> = datum_dir::read_datum_dir(dir.path())
        .unwrap()
        .into_iter()
        .map(|(d, _)| (d.key, d.value))
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        files,
        vec![
            ("kept".to_string(), json!(5)),
            ("new".to_string(), json!(6))
        ]
    );
    // A restart starts from the checkpoint the install put in place.
    drop(sm);
    let (again, base) = DatumSet::open(dir.path().into(), 9, 9).unwrap();
    assert_eq!((base, again.len()), (9, 2));
}

/// The digest of a datum is FNV-1a over its key, its value's compact JSON text and its
/// timestamp: members compare digests (`nacosctl check`), also across versions during a
/// rolling upgrade, so the bytes hashed must never change.
#[test]
fn the_datum_hash_is_fnv_over_the_compact_json_text() {
    fn reference(d: &Datum) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let text = d.value.to_string();
        let bytes = [
            d.key.as_bytes(),
            &[0],
            text.as_bytes(),
            &[0],
            &d.timestamp.to_le_bytes(),
        ];
        for &b in bytes.concat().iter() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
    for value in [
        json!("x".repeat(256)),
        json!({"b": [1, 2.5, null, true], "a": "quote \" backslash \\ tab \t é 中"}),
        json!(-17),
        json!(null),
    ] {
        let d = Datum {
            key: "com.alibaba.nacos.naming.iplist.public##G@@svc".into(),
            value,
            timestamp: 42,
            index: 7,
        };
        assert_eq!(datum_hash(&d), reference(&d), "{}", d.value);
    }
}

/// Waits (with a deadline) until a thread is blocked in the durable mark's wait.
fn until_waiting_for_the_log(sm: &DatumSet) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sm.durable.waiters.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "nothing waited for the log");
        std::thread::yield_now();
    }
}

/// Entries may apply before the local log has them durable (they are committed): the
/// datum files and the checkpoint that reflect them wait until it does, so a crash never
/// leaves on disk a state ahead of the log it is replayed with.
#[test]
fn files_and_checkpoints_wait_for_the_log_to_be_durable_up_to_them() {
    let dir = tempfile::tempdir().unwrap();
    let sm = std::sync::Arc::new(DatumSet::load(dir.path().into()).unwrap());
    sm.set_durable(1);
    sm.apply(&[e(1, publish("a", 1))]).unwrap();
    assert_eq!(sm.flush().unwrap(), 1, "durable: written at once");
    assert_eq!(datum_dir::read_datum_dir(dir.path()).unwrap().len(), 1);

    sm.apply(&[e(2, publish("b", 2)), e(3, publish("c", 3))])
        .unwrap();
    let flushing = {
        let sm = sm.clone();
        std::thread::spawn(move || sm.flush())
    };
    until_waiting_for_the_log(&sm);
    assert_eq!(
        datum_dir::read_datum_dir(dir.path()).unwrap().len(),
        1,
        "no file of an entry the log here does not hold yet"
    );
    sm.set_durable(3);
    assert_eq!(flushing.join().unwrap().unwrap(), 3);
    assert_eq!(datum_dir::read_datum_dir(dir.path()).unwrap().len(), 3);

    sm.apply(&[e(4, publish("d", 4))]).unwrap();
    let checkpointing = {
        let sm = sm.clone();
        std::thread::spawn(move || sm.checkpoint())
    };
    until_waiting_for_the_log(&sm);
    assert!(
        !checkpoint::checkpoint_path(dir.path()).exists(),
        "no checkpoint ahead of the log"
    );
    // A truncation decided meanwhile lowers the mark; only the write of 4 raises it.
    sm.set_durable(2);
    sm.set_durable(4);
    checkpointing.join().unwrap().unwrap();
    let (restarted, base) = DatumSet::open(dir.path().into(), 0, 4).unwrap();
    assert_eq!((base, restarted.len()), (4, 4));
}
