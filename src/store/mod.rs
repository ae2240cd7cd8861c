//! Durable state: the CRC-checked Raft log, `meta.properties` (term and vote), datum files,
//! the checkpoint file, the backup file.
//!
//! Nothing here knows about roles or messages; the node shell decides when to call it.

pub mod backup;
pub mod checkpoint;
pub mod datum_dir;
pub mod log;
pub mod meta;
pub mod snapshot;

pub use datum_dir::{read_datum_dir, remove_datum, write_datum};

use std::path::Path;

use crate::error::{Error, Result};
use crate::raft::HardState;
use meta::META_FILE;

/// What to do about a data dir whose durable state is damaged or incomplete: nothing is
/// guessed, and the member's copy is rebuilt from the others or from a backup.
pub const WAY_OUT: &str = "Nothing was changed. In a cluster: move this data dir aside and start the member with an empty one; it catches up from the others by snapshot. Standalone: restore the data dir from a backup";

/// Makes the entries of `dir` (creations, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::store(dir, e))
}

/// Removes a file; whether it was there. A missing file is not an error: every caller is
/// idempotent, and may run again after a crash.
pub(crate) fn remove_file_if_present(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::store(path, e)),
    }
}
pub use log::LogStore;

/// At start-up, before anything is written: the term and vote, the log and the checkpoints
/// must tell one story. A missing piece is never taken for a new member: a member that
/// restarts without its vote could vote twice in a term, and one without its log could
/// serve a state that lacks acknowledged writes.
/// Before the log is opened (which creates a first segment, so a refused start must not
/// get that far): a member whose log directory has no segment but whose `meta.properties`
/// or checkpoints say it had a log lost it.
pub fn check_log_present(data_dir: &Path, meta: Option<&HardState>) -> Result<()> {
    if log::has_segments(&data_dir.join("log"))? {
        return Ok(());
    }
    let unrecoverable = |reason: String| Error::Unrecoverable {
        dir: data_dir.to_path_buf(),
        reason: format!("{reason}. {WAY_OUT}"),
    };
    if let Some(hs) = meta.filter(|hs| hs.term > 0) {
        return Err(unrecoverable(format!(
            "the log directory has no segment, but {META_FILE} says this member reached term {}: its log was lost",
            hs.term
        )));
    }
    let checkpoints = [
        checkpoint::checkpoint_path(data_dir),
        checkpoint::previous_path(data_dir),
    ];
    if let Some(c) = checkpoints.iter().find(|c| c.exists()) {
        return Err(unrecoverable(format!(
            "the log directory has no segment, but {} exists: the log after it was lost",
            c.display()
        )));
    }
    Ok(())
}

/// After the log is opened: the term and vote and the log must agree.
pub fn check_start(data_dir: &Path, meta: Option<&HardState>, log: &log::Recovered) -> Result<()> {
    let unrecoverable = |reason: String| Error::Unrecoverable {
        dir: data_dir.to_path_buf(),
        reason: format!("{reason}. {WAY_OUT}"),
    };
    let last = log.entries.last().map_or(log.start, |e| e.id());
    match meta {
        None if last.index > 0 => Err(unrecoverable(format!(
            "{META_FILE} (this member's term and vote) is missing, but the log holds entries up to {last}; starting without it could let this member vote twice in a term"
        ))),
        Some(hs) if hs.term < last.term => Err(Error::Corrupt {
            path: data_dir.join(META_FILE),
            offset: 0,
            reason: format!(
                "it says term {}, but the log holds entries of term {} (the term is written before any entry of it). {WAY_OUT}",
                hs.term, last.term
            ),
        }),
        _ => Ok(()),
    }
}
pub use meta::{read_bootstrap, read_meta, write_bootstrap, write_meta};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Command, Entry, PeerAddr};

    fn log_with(dir: &Path, terms: &[u64]) -> log::Recovered {
        let mut r = LogStore::open(&dir.join("log"), log::SEGMENT_BYTES, false).unwrap();
        if terms.is_empty() {
            return r;
        }
        let entries: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, &term)| Entry {
                index: i as u64 + 1,
                term,
                command: Command::Noop,
            })
            .collect();
        r.store.append(None, &entries).unwrap();
        r.store.sync().unwrap();
        drop(r);
        LogStore::open(&dir.join("log"), log::SEGMENT_BYTES, false).unwrap()
    }

    fn hs(term: u64) -> HardState {
        HardState {
            term,
            vote_for: Some(PeerAddr::new("a:1")),
        }
    }

    fn refusal(r: Result<()>) -> String {
        let e = r.expect_err("start-up should refuse");
        let text = e.to_string();
        assert!(text.contains("move this data dir aside"), "{text}");
        text
    }

    #[test]
    fn a_new_member_and_a_consistent_one_start() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = log_with(dir.path(), &[]);
        check_log_present(dir.path(), None).unwrap();
        check_start(dir.path(), None, &fresh).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let r = log_with(dir.path(), &[1, 2]);
        check_start(dir.path(), Some(&hs(2)), &r).unwrap();
        check_start(dir.path(), Some(&hs(5)), &r).unwrap();
    }

    #[test]
    fn missing_or_behind_meta_over_a_log_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let r = log_with(dir.path(), &[1, 2]);
        let why = refusal(check_start(dir.path(), None, &r));
        assert!(why.contains("vote twice"), "{why}");
        let why = refusal(check_start(dir.path(), Some(&hs(0)), &r));
        assert!(why.contains("entries of term 2"), "{why}");
    }

    #[test]
    fn a_lost_log_under_meta_or_a_checkpoint_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let why = refusal(check_log_present(dir.path(), Some(&hs(3))));
        assert!(why.contains("its log was lost"), "{why}");
        std::fs::write(checkpoint::previous_path(dir.path()), b"x").unwrap();
        let why = refusal(check_log_present(dir.path(), None));
        assert!(why.contains("checkpoint.prev"), "{why}");
        // Refusing wrote nothing: a second attempt sees the same.
        assert!(!dir.path().join("log").exists());
        assert!(check_log_present(dir.path(), None).is_err());
    }
}
