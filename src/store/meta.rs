//! `meta.properties`: the durable term and vote (Nacos `RaftStore.updateTerm` plus `voteFor`);
//! and `bootstrap.json`, the configuration a new cluster started from (`--peers`).
//!
//! Rewritten atomically (temp file, fsync, rename, directory fsync) before any vote or
//! acknowledgement that depends on it leaves the node; Nacos wrote it without fsync and
//! never persisted the vote (reference §13.3.2), so a restarted node could vote twice.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::raft::{HardState, PeerAddr, PeerSet};

pub const META_FILE: &str = "meta.properties";

/// The configuration in force from index 0: what `--peers` (or `cluster.conf`) said when
/// this member's data dir was new. Written once; later configurations live in the log,
/// checkpoints and snapshots, so a restart never takes its members from flags again.
pub const BOOTSTRAP_FILE: &str = "bootstrap.json";

/// Reads `bootstrap.json`: `Ok(None)` when there is none (a member started with `--join`,
/// or a data dir from before configurations were recorded).
pub fn read_bootstrap(data_dir: &Path) -> Result<Option<PeerSet>> {
    let path = data_dir.join(BOOTSTRAP_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::store(path, e)),
    };
    let corrupt = |reason: String| {
        Error::Corrupt {
        path: path.clone(),
        offset: 0,
        reason: format!(
            "{reason}; it holds the members this cluster started with, written atomically, so it was damaged after it was written. {}",
            super::WAY_OUT
        ),
    }
    };
    #[derive(serde::Deserialize)]
    struct Bootstrap {
        peers: PeerSet,
    }
    let b: Bootstrap = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("not the JSON expected: {e}")))?;
    b.peers.validate().map_err(corrupt)?;
    Ok(Some(b.peers))
}

/// Writes `bootstrap.json` atomically (a new member of a new cluster, before its first entry).
pub fn write_bootstrap(data_dir: &Path, peers: &PeerSet) -> Result<()> {
    let body = serde_json::to_vec_pretty(&serde_json::json!({ "peers": peers }))
        .expect("a configuration serialises");
    replace_atomically(data_dir, BOOTSTRAP_FILE, &body)
}

/// Replaces `data_dir/name` with `body`: temp file, fsync, rename, directory fsync.
fn replace_atomically(data_dir: &Path, name: &str, body: &[u8]) -> Result<()> {
    let path = data_dir.join(name);
    let tmp = data_dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&tmp).map_err(|e| Error::store(&tmp, e))?;
    f.write_all(body)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::store(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::store(&path, e))?;
    File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::store(data_dir, e))
}

/// Reads the term and vote: `Ok(None)` when the file does not exist (a new member; the
/// caller checks that nothing else in the data dir says otherwise). An empty or unreadable
/// file is damage, never "term 0": that would let the member vote twice in a term.
pub fn read_meta(data_dir: &Path) -> Result<Option<HardState>> {
    let path = data_dir.join(META_FILE);
    let bytes = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::store(path, e)),
    };
    let corrupt = |offset: u64, reason: String| {
        Error::Corrupt {
        path: path.clone(),
        offset,
        reason: format!(
            "{reason}; it holds this member's term and vote, written atomically, so it was damaged after it was written. {}",
            super::WAY_OUT
        ),
    }
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to() as u64;
            return Err(corrupt(at, "not text".into()));
        }
    };
    let has_term = text
        .lines()
        .any(|l| l.split_once('=').is_some_and(|(k, _)| k.trim() == "term"));
    if !has_term {
        return Err(corrupt(0, "no term= line".into()));
    }
    let mut hs = HardState::default();
    let mut offset = 0u64;
    for line in text.split_inclusive('\n') {
        let l = line.trim();
        if !(l.is_empty() || l.starts_with('#') || l.starts_with('!')) {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| corrupt(offset, format!("expected key=value, found {l:?}")))?;
            match k.trim() {
                "term" => {
                    hs.term = v
                        .trim()
                        .parse()
                        .map_err(|_| corrupt(offset, format!("term is not a number: {v:?}")))?
                }
                "voteFor" => {
                    let v = v.trim();
                    hs.vote_for = (!v.is_empty()).then(|| PeerAddr::new(v));
                }
                _ => {} // unknown keys are kept for forward compatibility, not fatal
            }
        }
        offset += line.len() as u64;
    }
    Ok(Some(hs))
}

pub fn write_meta(data_dir: &Path, hs: &HardState) -> Result<()> {
    let body = format!(
        "# nacos-raft durable state; rewritten atomically, do not edit while the node runs\nterm={}\nvoteFor={}\n",
        hs.term,
        hs.vote_for.as_ref().map_or("", |v| v.as_str())
    );
    replace_atomically(data_dir, META_FILE, body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_meta(dir.path()).unwrap(), None);
        let hs = HardState {
            term: 7,
            vote_for: Some(PeerAddr::new("127.0.0.1:8848")),
        };
        write_meta(dir.path(), &hs).unwrap();
        assert_eq!(read_meta(dir.path()).unwrap(), Some(hs));
        let none = HardState {
            term: 8,
            vote_for: None,
        };
        write_meta(dir.path(), &none).unwrap();
        assert_eq!(read_meta(dir.path()).unwrap(), Some(none));
    }

    #[test]
    fn the_bootstrap_configuration_round_trips_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_bootstrap(dir.path()).unwrap(), None);
        let peers = PeerSet::of_voters([PeerAddr::new("a:1"), PeerAddr::new("b:1")]);
        write_bootstrap(dir.path(), &peers).unwrap();
        assert_eq!(read_bootstrap(dir.path()).unwrap(), Some(peers));
        for bad in [&b"{"[..], br#"{"peers":{"voters":[]}}"#] {
            fs::write(dir.path().join(BOOTSTRAP_FILE), bad).unwrap();
            match read_bootstrap(dir.path()) {
                Err(Error::Corrupt { reason, .. }) => {
                    assert!(
                        reason.contains("members this cluster started with"),
                        "{reason}"
                    )
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn nacos_written_meta_is_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(META_FILE),
            "#Wed Jan 01 00:00:00 CST 2020\nterm=305\n",
        )
        .unwrap();
        assert_eq!(read_meta(dir.path()).unwrap().unwrap().term, 305);
    }

    #[test]
    fn empty_or_binary_is_damage_not_term_zero() {
        let dir = tempfile::tempdir().unwrap();
        for (bytes, offset) in [(&b""[..], 0), (&b"term=1\n\xff\xfe"[..], 7)] {
            fs::write(dir.path().join(META_FILE), bytes).unwrap();
            match read_meta(dir.path()) {
                Err(Error::Corrupt {
                    offset: o, reason, ..
                }) => {
                    assert_eq!(o, offset, "{reason}");
                    assert!(reason.contains("move this data dir aside"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn garbage_is_corrupt_with_offset() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(META_FILE), "term=1\nterm=abc\n").unwrap();
        match read_meta(dir.path()) {
            Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, 7),
            other => panic!("{other:?}"),
        }
    }
}
