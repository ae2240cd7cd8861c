//! Installing a snapshot (the leader's datum set) atomically over a follower's data dir.
//!
//! Order, and what a crash at each point leaves:
//! 1. datums are written into `snapshot.tmp/` (crash: the staging dir is discarded at start-up,
//!    the old state stands);
//! 2. everything staged is synced, then `snapshot.install` (`index`, `term`) is written
//!    atomically: from here on the install is decided (crash: start-up finishes it);
//! 3. the checkpoint file (of the old state) is removed and `data/` is swapped for the
//!    staged dir;
//! 4. the log is reset to continue after (`index`, `term`), and only then is the marker
//!    removed, before any new entry is written (crash before the removal: start-up resets
//!    the log again, which holds nothing new yet).
//!
//! So a crash leaves the old state or the new one, never a mix.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::datum::Datum;
use crate::error::{Error, Result};
use crate::raft::LogId;
use crate::store::datum_dir;
use crate::store::{remove_file_if_present, sync_dir};

const STAGING: &str = "snapshot.tmp";
const MARKER: &str = "snapshot.install";

fn staging(data_dir: &Path) -> PathBuf {
    data_dir.join(STAGING)
}

/// Syncs every file of the filesystem holding `dir`: one call for thousands of datum files.
pub fn sync_filesystem(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::store(dir, e))?;
    // SAFETY: a valid open descriptor for the duration of the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(Error::store(dir, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Receives a snapshot's datums into the staging directory.
pub struct SnapshotWriter {
    data_dir: PathBuf,
    pub count: u64,
}

impl SnapshotWriter {
    /// Starts a fresh staging directory (a previous, unfinished one is discarded).
    pub fn begin(data_dir: &Path) -> Result<SnapshotWriter> {
        let dir = staging(data_dir);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::store(&dir, e)),
        }
        fs::create_dir_all(&dir).map_err(|e| Error::store(&dir, e))?;
        Ok(SnapshotWriter {
            data_dir: data_dir.to_path_buf(),
            count: 0,
        })
    }

    /// Continues an install whose staging directory already exists (later chunks).
    pub fn resume(data_dir: &Path, count: u64) -> Result<SnapshotWriter> {
        let dir = staging(data_dir);
        if !dir.is_dir() {
            return Err(Error::BadRequest(
                "no snapshot is being received: the first chunk was lost; the leader starts over"
                    .into(),
            ));
        }
        Ok(SnapshotWriter {
            data_dir: data_dir.to_path_buf(),
            count,
        })
    }

    pub fn add(&mut self, datum: &Datum) -> Result<()> {
        // The staging dir has the layout of a data dir's `data/`.
        datum_dir::write_datum_under(&staging(&self.data_dir), datum)?;
        self.count += 1;
        Ok(())
    }

    /// Stages the snapshot's sessions file (`name` in the staged datum dir), as sent.
    pub fn add_file(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = staging(&self.data_dir).join(name);
        fs::write(&path, bytes).map_err(|e| Error::store(&path, e))
    }

    /// Makes the staged datums durable and decides the install (step 2).
    pub fn commit(self, point: LogId) -> Result<()> {
        decide_install(&self.data_dir, point)
    }
}

/// Step 2: makes the staged datums durable and writes the marker that decides the install.
pub fn decide_install(data_dir: &Path, point: LogId) -> Result<()> {
    let LogId { index, term } = point;
    {
        sync_filesystem(data_dir)?;
        let tmp = data_dir.join(".snapshot.install.tmp");
        let mut f = File::create(&tmp).map_err(|e| Error::store(&tmp, e))?;
        f.write_all(format!("index={index}\nterm={term}\n").as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::store(&tmp, e))?;
        let marker = data_dir.join(MARKER);
        fs::rename(&tmp, &marker).map_err(|e| Error::store(&marker, e))?;
        sync_dir(data_dir)
    }
}

/// The install decided by a marker, if any.
pub fn pending_install(data_dir: &Path) -> Result<Option<LogId>> {
    let path = data_dir.join(MARKER);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::store(path, e)),
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix('=')?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .ok_or_else(|| Error::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: format!("no {name}= line"),
            })
    };
    Ok(Some(LogId::new(field("index")?, field("term")?)))
}

/// Step 3: puts the staged datums (the state at `index`) in place of `data/` (idempotent:
/// a finished swap is a no-op). Only valid once the install is decided.
pub fn swap_in(data_dir: &Path, index: u64) -> Result<()> {
    // The checkpoint describes the state being replaced: it goes first, so that no start-up
    // can load it over the new datum files.
    crate::store::checkpoint::remove(data_dir)?;
    let staged = staging(data_dir);
    if !staged.exists() {
        // Swapped before a crash.
        return datum_dir::mark_complete(data_dir, index);
    }
    let live = datum_dir::datum_root(data_dir);
    let old = data_dir.join("data.old");
    if live.exists() {
        if old.exists() {
            fs::remove_dir_all(&old).map_err(|e| Error::store(&old, e))?;
        }
        fs::rename(&live, &old).map_err(|e| Error::store(&live, e))?;
    }
    fs::rename(&staged, &live).map_err(|e| Error::store(&staged, e))?;
    sync_dir(data_dir)?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| Error::store(&old, e))?;
    }
    // With no checkpoint, these files are the state the log continues from.
    datum_dir::mark_complete(data_dir, index)
}

/// Step 4's end: the log now continues after the snapshot, so the install is complete.
pub fn clear_install(data_dir: &Path) -> Result<()> {
    if remove_file_if_present(&data_dir.join(MARKER))? {
        sync_dir(data_dir)?;
    }
    Ok(())
}

/// Removes a staging dir whose install was not decided (incomplete, or not needed).
pub fn discard_staging(data_dir: &Path) -> Result<()> {
    let staged = staging(data_dir);
    match fs::remove_dir_all(&staged) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::store(&staged, e)),
    }
}

/// At start-up: discards an undecided staging dir, or finishes the swap of a decided
/// install and returns its point (the caller resets the log, then calls `clear_install`).
pub fn recover(data_dir: &Path) -> Result<Option<LogId>> {
    match pending_install(data_dir)? {
        Some(point) => {
            swap_in(data_dir, point.index)?;
            Ok(Some(point))
        }
        None => {
            discard_staging(data_dir)?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn datum(key: &str, index: u64) -> Datum {
        Datum {
            key: key.into(),
            value: json!(index),
            timestamp: 1,
            index,
        }
    }

    fn keys(data_dir: &Path) -> Vec<String> {
        datum_dir::read_datum_dir(data_dir)
            .unwrap()
            .into_iter()
            .map(|(d, _)| d.key)
            .collect()
    }

    #[test]
    fn crash_before_the_marker_keeps_the_old_state() {
        let dir = tempfile::tempdir().unwrap();
        datum_dir::write_datum(dir.path(), &datum("old", 1)).unwrap();
        let mut w = SnapshotWriter::begin(dir.path()).unwrap();
        w.add(&datum("new", 9)).unwrap();
        drop(w); // crash: never committed
        assert_eq!(recover(dir.path()).unwrap(), None);
        assert_eq!(keys(dir.path()), vec!["old"]);
        assert!(!staging(dir.path()).exists());
    }

    #[test]
    fn crash_after_the_marker_finishes_the_install() {
        for crash_after_swap in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            datum_dir::write_datum(dir.path(), &datum("old", 1)).unwrap();
            let mut w = SnapshotWriter::begin(dir.path()).unwrap();
            w.add(&datum("new", 9)).unwrap();
            w.add(&datum("other", 7)).unwrap();
            w.commit(LogId::new(9, 3)).unwrap();
            if crash_after_swap {
                swap_in(dir.path(), 9).unwrap();
            }
            assert_eq!(recover(dir.path()).unwrap(), Some(LogId::new(9, 3)));
            assert_eq!(keys(dir.path()), vec!["new", "other"]);
            // Recovery again (a crash during recovery) changes nothing.
            assert_eq!(recover(dir.path()).unwrap(), Some(LogId::new(9, 3)));
            assert_eq!(keys(dir.path()), vec!["new", "other"]);
            clear_install(dir.path()).unwrap();
            assert_eq!(recover(dir.path()).unwrap(), None);
            assert_eq!(keys(dir.path()), vec!["new", "other"]);
        }
    }
}
