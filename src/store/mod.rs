//! Durable state: the CRC-checked Raft log, `meta.properties` (term and vote), datum files,
//! the checkpoint file.
//!
//! Nothing here knows about roles or messages; the node shell decides when to call it.

pub mod checkpoint;
pub mod datum_dir;
pub mod log;
pub mod meta;
pub mod snapshot;

pub use datum_dir::{read_datum_dir, remove_datum, write_datum};

use std::path::Path;

use crate::error::{Error, Result};

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
pub use meta::{read_meta, write_meta};
