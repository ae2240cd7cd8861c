//! Installing a snapshot (the leader's datum set) atomically over a follower's data dir.
//!
//! The snapshot is staged as a checkpoint file (`store::checkpoint`, base = the snapshot's
//! index), one sequential file rather than a datum file per key: staging 100,000 datum files
//! took most of a new member's 18 to 32 s join. Order, and what a crash at each point leaves:
//! 1. the sessions and datums are written into `snapshot.tmp/checkpoint`, which is fsynced
//!    when the last chunk arrives (crash: the staging dir is discarded at start-up, the old
//!    state stands);
//! 2. `snapshot.install` (`index`, `term`) is written atomically: from here on the install is
//!    decided (crash: start-up finishes it);
//! 3. the old checkpoints are removed and the staged one takes their place; the datum files
//!    of `data/` now trail the state (the member rewrites them behind it, as it does after
//!    a crash), so the mark that they are complete goes;
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
use crate::store::checkpoint::{self, CheckpointWriter};
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

/// Receives a snapshot into the staging directory, as a checkpoint file. Lives across the
/// chunks of one stream (a member that restarts mid-stream starts over: the staging dir of
/// an undecided install is discarded at start-up).
pub struct SnapshotWriter {
    data_dir: PathBuf,
    index: u64,
    staged: CheckpointWriter,
    pub count: u64,
}

impl SnapshotWriter {
    /// Starts a fresh staging directory for the snapshot at `index` (a previous, unfinished
    /// one is discarded).
    pub fn begin(data_dir: &Path, index: u64) -> Result<SnapshotWriter> {
        let dir = staging(data_dir);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::store(&dir, e)),
        }
        fs::create_dir_all(&dir).map_err(|e| Error::store(&dir, e))?;
        Ok(SnapshotWriter {
            data_dir: data_dir.to_path_buf(),
            index,
            staged: CheckpointWriter::create(&dir, index)?,
            count: 0,
        })
    }

    /// The side-state lines (client sessions, access control, the configuration), before
    /// any datum.
    pub fn add_sessions(&mut self, lines: &[String]) -> Result<()> {
        self.staged.add_sessions(lines)
    }

    /// One datum; they come in strictly increasing key order (a stream out of order is
    /// refused, and starts over).
    pub fn add(&mut self, datum: &Datum) -> Result<()> {
        self.staged.add(datum)?;
        self.count += 1;
        Ok(())
    }

    /// The last chunk arrived: the staged checkpoint is made durable and complete. The
    /// install is decided later (`decide_install`), once the core has accepted it.
    pub fn finish(self) -> Result<()> {
        // `end` is the base: the log after the install continues from there, and the
        // datums newer than it (the stream is fuzzy) carry their own indexes.
        self.staged.finish(self.index)?;
        Ok(())
    }

    /// Finishes and decides at once (an offline restore).
    pub fn commit(self, point: LogId) -> Result<()> {
        let data_dir = self.data_dir.clone();
        self.finish()?;
        decide_install(&data_dir, point)
    }
}

/// Step 2: writes the marker that decides the install (the staged checkpoint is durable
/// already: `SnapshotWriter::finish` synced it and its directory).
pub fn decide_install(data_dir: &Path, point: LogId) -> Result<()> {
    let LogId { index, term } = point;
    {
        let staged = checkpoint::checkpoint_path(&staging(data_dir));
        match checkpoint::read_base(&staged)? {
            Some(base) if base == index => {}
            other => {
                return Err(Error::Corrupt {
                    path: staged,
                    offset: 0,
                    reason: format!(
                        "the staged snapshot is at index {other:?}, not {index}: it was replaced"
                    ),
                })
            }
        }
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

/// Step 3: puts the staged checkpoint (the state at `index`) in place of the old ones
/// (idempotent: a finished swap is a no-op). Only valid once the install is decided.
pub fn swap_in(data_dir: &Path) -> Result<()> {
    let dir = staging(data_dir);
    let staged = checkpoint::checkpoint_path(&dir);
    if staged.exists() {
        // The old checkpoints describe the state being replaced: they go first, so that no
        // start-up can load one of them over the new state.
        checkpoint::remove(data_dir)?;
        let live = checkpoint::checkpoint_path(data_dir);
        fs::rename(&staged, &live).map_err(|e| Error::store(&live, e))?;
        sync_dir(data_dir)?;
    }
    // The datum files trail the new state until they are rewritten: they are no complete
    // state to start from.
    datum_dir::unmark_complete(data_dir)?;
    match fs::remove_dir_all(&dir) {
        Ok(()) => sync_dir(data_dir),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::store(&dir, e)),
    }
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
            swap_in(data_dir)?;
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

    /// The keys of the state a start-up would load: the checkpoint's.
    fn keys(data_dir: &Path) -> Vec<String> {
        match checkpoint::read_at(&checkpoint::checkpoint_path(data_dir)).unwrap() {
            Some(c) => c.datums.into_iter().map(|d| d.key).collect(),
            None => Vec::new(),
        }
    }

    /// A data dir whose state (in its checkpoint) is the one key `old`.
    fn old_state(dir: &Path) {
        datum_dir::write_datum(dir, &datum("old", 1)).unwrap();
        let mut w = CheckpointWriter::create(dir, 1).unwrap();
        w.add(&datum("old", 1)).unwrap();
        w.finish(1).unwrap();
    }

    #[test]
    fn crash_before_the_marker_keeps_the_old_state() {
        let dir = tempfile::tempdir().unwrap();
        old_state(dir.path());
        let mut w = SnapshotWriter::begin(dir.path(), 9).unwrap();
        w.add(&datum("new", 9)).unwrap();
        drop(w); // crash: never finished
        assert_eq!(recover(dir.path()).unwrap(), None);
        assert_eq!(keys(dir.path()), vec!["old"]);
        assert!(!staging(dir.path()).exists());
        // Finished but not decided: the same.
        let mut w = SnapshotWriter::begin(dir.path(), 9).unwrap();
        w.add(&datum("new", 9)).unwrap();
        w.finish().unwrap();
        assert_eq!(recover(dir.path()).unwrap(), None);
        assert_eq!(keys(dir.path()), vec!["old"]);
    }

    #[test]
    fn crash_after_the_marker_finishes_the_install() {
        for crash_after_swap in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            old_state(dir.path());
            datum_dir::mark_complete(dir.path(), 1).unwrap();
            let mut w = SnapshotWriter::begin(dir.path(), 9).unwrap();
            w.add_sessions(&[]).unwrap();
            w.add(&datum("new", 9)).unwrap();
            w.add(&datum("other", 7)).unwrap();
            w.commit(LogId::new(9, 3)).unwrap();
            if crash_after_swap {
                swap_in(dir.path()).unwrap();
            }
            assert_eq!(recover(dir.path()).unwrap(), Some(LogId::new(9, 3)));
            assert_eq!(keys(dir.path()), vec!["new", "other"]);
            // The datum files are behind the new state now, so not a state to start from.
            assert_eq!(datum_dir::complete_at(dir.path()), None);
            assert!(
                !checkpoint::previous_path(dir.path()).exists(),
                "the old state went"
            );
            // Recovery again (a crash during recovery) changes nothing.
            assert_eq!(recover(dir.path()).unwrap(), Some(LogId::new(9, 3)));
            assert_eq!(keys(dir.path()), vec!["new", "other"]);
            clear_install(dir.path()).unwrap();
            assert_eq!(recover(dir.path()).unwrap(), None);
            assert_eq!(keys(dir.path()), vec!["new", "other"]);
        }
    }

    #[test]
    fn a_stream_out_of_key_order_or_a_replaced_staging_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SnapshotWriter::begin(dir.path(), 9).unwrap();
        w.add(&datum("b", 9)).unwrap();
        assert!(w.add(&datum("a", 9)).is_err());
        // A staging dir holding another index than the one decided.
        let mut w = SnapshotWriter::begin(dir.path(), 8).unwrap();
        w.add(&datum("a", 8)).unwrap();
        w.finish().unwrap();
        let e = decide_install(dir.path(), LogId::new(9, 3)).unwrap_err();
        assert!(e.to_string().contains("replaced"), "{e}");
        assert_eq!(pending_install(dir.path()).unwrap(), None);
    }
}
