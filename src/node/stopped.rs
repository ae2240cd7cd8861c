//! The state of a stopped member, read from its data dir without writing a byte
//! (`nacosctl dump`): the checkpoint a restart would load, then the log replayed through the
//! same apply as the node's, up to the index the member had applied.

use std::path::{Path, PathBuf};

use super::datum_set::DatumSet;
use crate::datum::Datum;
use crate::error::{Error, Result};
use crate::store::{self, checkpoint, datum_dir, LogStore};

/// What [`read_stopped`] found.
#[derive(Debug)]
pub struct StoppedState {
    /// Every datum, in key order, with the file it was read from: a checkpoint, the log
    /// directory (set by an entry after the checkpoint), or its datum file (a data dir with
    /// no checkpoint yet, loaded from its datum files as a start-up would).
    pub datums: Vec<(Datum, PathBuf)>,
    /// The index the state is exact at.
    pub applied: u64,
    /// The last index in the member's log (entries after `applied` are not shown: as far
    /// as this member knew they were not committed yet).
    pub log_end: u64,
    /// Whether the member stopped cleanly (SIGTERM), so `applied` is where it stopped.
    pub clean_stop: bool,
    /// What the reader noticed: a torn log tail, an unclean stop, entries not shown.
    pub warnings: Vec<String>,
}

/// Reads the state of the stopped member whose data dir is `data_dir`.
///
/// The member records how far it applied its log (`store::datum_dir::write_applied_mark`)
/// once a second and at a clean stop; every entry up to there was committed. After a clean
/// stop the state is therefore exact. After a crash it is the state of up to a second
/// before, which a warning says. Damage is the error a start-up would give.
pub fn read_stopped(data_dir: &Path) -> Result<StoppedState> {
    if let Some(point) = store::snapshot::pending_install(data_dir)? {
        return Err(Error::Unrecoverable {
            dir: data_dir.to_path_buf(),
            reason: format!(
                "a snapshot install (index {}) was decided but not finished when the member stopped; start the member once (it finishes the install at start-up), stop it, and dump again",
                point.index
            ),
        });
    }
    let clean_stop = datum_dir::clean_stop_marked(data_dir);
    let log_dir = data_dir.join("log");
    let (start, entries, mut warnings) = LogStore::read_only(&log_dir, clean_stop)?;
    let log_end = entries.last().map_or(start.index, |e| e.index);
    let (datums, base) = DatumSet::open_read_only(data_dir.to_path_buf(), start.index, log_end)?;
    let from = start.index.max(base);
    datums.start_at(from, log_end);
    // Entries apply in log order, so a loaded datum written at index i (a checkpoint reads
    // the live map, so it can hold datums past its base) means all up to i was applied.
    let mark = datum_dir::applied_mark(data_dir);
    let applied = mark
        .unwrap_or(0)
        .max(datums.newest_index())
        .min(log_end)
        .max(from);
    if applied < log_end && (!clean_stop || mark.is_none()) {
        let why = if mark.is_none() {
            "the data dir has no readable record of how far its log was applied (its applied file)"
        } else {
            "the member did not stop cleanly"
        };
        warnings.push(format!(
            "{why}: shown is its state at index {applied} (the last known applied, up to a second before it stopped); entries {} to {log_end} of its log are not shown, as they may not have been committed. For an exact dump, start the member and stop it with SIGTERM",
            applied + 1
        ));
    }
    let replay: Vec<_> = entries
        .into_iter()
        .filter(|e| e.index > from && e.index <= applied)
        .collect();
    datums.apply(&replay)?;
    let source = match datums.checkpoints() {
        c if c.newest == Some(base) && base > 0 => Some(checkpoint::checkpoint_path(data_dir)),
        c if c.previous == Some(base) && base > 0 => Some(checkpoint::previous_path(data_dir)),
        _ => None,
    };
    let mut out = Vec::with_capacity(datums.len());
    let mut after: Option<String> = None;
    loop {
        let chunk = datums.list_after(after.as_deref(), 4096);
        let Some(last) = chunk.last() else { break };
        after = Some(last.key.clone());
        for d in chunk {
            let file = match &source {
                _ if d.index > from => log_dir.clone(),
                Some(c) => c.clone(),
                None => datum_dir::datum_path(data_dir, &d.key),
            };
            out.push((d, file));
        }
    }
    Ok(StoppedState {
        datums: out,
        applied,
        log_end,
        clean_stop,
        warnings,
    })
}
