//! `meta.properties`: the durable term and vote (Nacos `RaftStore.updateTerm` plus `voteFor`).
//!
//! Rewritten atomically (temp file, fsync, rename, directory fsync) before any vote or
//! acknowledgement that depends on it leaves the node; Nacos wrote it without fsync and
//! never persisted the vote (reference §13.3.2), so a restarted node could vote twice.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::raft::{HardState, PeerAddr};

pub const META_FILE: &str = "meta.properties";

pub fn read_meta(data_dir: &Path) -> Result<HardState> {
    let path = data_dir.join(META_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(HardState::default()),
        Err(e) => return Err(Error::store(path, e)),
    };
    let mut hs = HardState::default();
    let mut offset = 0u64;
    for line in text.split_inclusive('\n') {
        let l = line.trim();
        if !(l.is_empty() || l.starts_with('#') || l.starts_with('!')) {
            let (k, v) = l.split_once('=').ok_or_else(|| Error::Corrupt {
                path: path.clone(),
                offset,
                reason: format!("expected key=value, found {l:?}"),
            })?;
            match k.trim() {
                "term" => {
                    hs.term = v.trim().parse().map_err(|_| Error::Corrupt {
                        path: path.clone(),
                        offset,
                        reason: format!("term is not a number: {v:?}"),
                    })?
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
    Ok(hs)
}

pub fn write_meta(data_dir: &Path, hs: &HardState) -> Result<()> {
    let path = data_dir.join(META_FILE);
    let tmp = data_dir.join(".meta.properties.tmp");
    let body = format!(
        "# nacos-raft durable state; rewritten atomically, do not edit while the node runs\nterm={}\nvoteFor={}\n",
        hs.term,
        hs.vote_for.as_ref().map_or("", |v| v.as_str())
    );
    let mut f = File::create(&tmp).map_err(|e| Error::store(&tmp, e))?;
    f.write_all(body.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::store(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::store(&path, e))?;
    File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::store(data_dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_meta(dir.path()).unwrap(), HardState::default());
        let hs = HardState {
            term: 7,
            vote_for: Some(PeerAddr::new("127.0.0.1:8848")),
        };
        write_meta(dir.path(), &hs).unwrap();
        assert_eq!(read_meta(dir.path()).unwrap(), hs);
        let none = HardState {
            term: 8,
            vote_for: None,
        };
        write_meta(dir.path(), &none).unwrap();
        assert_eq!(read_meta(dir.path()).unwrap(), none);
    }

    #[test]
    fn nacos_written_meta_is_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(META_FILE),
            "#Wed Jan 01 00:00:00 CST 2020\nterm=305\n",
        )
        .unwrap();
        assert_eq!(read_meta(dir.path()).unwrap().term, 305);
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
