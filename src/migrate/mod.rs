//! Reads a Nacos 1.x naming data dir (`${nacos.home}/data/naming`, written by Nacos
//! `RaftStore`; reference §9) into datums ready for `POST /v1/import`, keeping each key,
//! value and Nacos timestamp, with the conversions Nacos itself makes when it loads the dir.
//!
//! Owns the reading only: it never writes, never talks to a node, and treats every file as
//! hostile (bounded size, keys and values checked by the same rules as a client write, no
//! panic on any content). A file it cannot use is reported with its path and the reason;
//! whether that stops an import is the caller's choice.
//!
//! One file's rules (where Nacos keeps a key, what the file must hold, the conversions) are
//! `datum_file`; this module walks the dir and picks, per key, the file to import.
//!
//! Reading is two passes so memory stays bounded by one file and the index of keys, not by
//! the whole dir: [`scan`] reads and checks every file and keeps, per key, which file wins;
//! [`load`] reads a winning file again when its datum is about to be sent, and refuses it if
//! it changed meanwhile.
//!
//! Where this reader differs from Nacos 1.4's `RaftStore.loadDatums`, it is on purpose, and
//! each place says why: a file whose name or directory does not match the key inside it is
//! refused (Nacos would load it under the inner key); of two files for one key the newer
//! timestamp wins (Nacos keeps whichever it lists last, #4431); a key without a group is
//! moved into `DEFAULT_GROUP` for service metas too (Nacos does it at load for instance
//! lists only, and for metas at the service's next write); and backslashes are removed from
//! a service meta only when it is not JSON as written (Nacos removes them first, which
//! alters valid values, reference §13.3.6).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::naming::EPHEMERAL_PREFIX;
use crate::raft::ImportedDatum;

mod datum_file;
#[cfg(test)]
mod tests;

pub use datum_file::file_name_of;
use datum_file::{parse_file, Parsed};

/// What Nacos loads from `data/`: file names that start with this (Nacos
/// `KeyBuilder.RAFT_CACHE_FILE_PREFIX`); it skips every other name.
pub const CACHE_FILE_PREFIX: &str = "com.alibaba.nacos.naming";

/// The suffix Nacos 1.3.1 and 1.3.2 gave new datum files (PR #2849), dropped again in 1.4.0.
pub const DATUM_SUFFIX: &str = ".datum";

/// Largest datum one import request can carry: the request body limit, less room for the
/// request's own brackets. A file whose datum is larger could never be sent.
pub const MAX_DATUM_BYTES: usize = crate::http::MAX_BODY_BYTES - 1024;

/// Largest datum file read. Nacos writes compact JSON, so a file past this holds a datum
/// past [`MAX_DATUM_BYTES`]; it is refused before a byte is read.
pub const MAX_FILE_BYTES: u64 = crate::http::MAX_BODY_BYTES as u64;

/// Largest `meta.properties` read (Nacos writes one comment line and `term=N`).
pub const MAX_META_BYTES: u64 = 64 << 10;

/// Why a dir cannot be read at all (a single file's trouble is a [`FileNote`] instead).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The dir given is not a Nacos naming data dir; `why` says what was found instead.
    #[error("{}: {why}", path.display())]
    NotADataDir { path: PathBuf, why: String },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file read again for sending no longer holds what [`scan`] found.
    #[error("{}: {reason}", path.display())]
    Changed { path: PathBuf, reason: String },
}

/// A file and what was made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNote {
    pub path: PathBuf,
    pub reason: String,
}

/// The file that holds a key's datum, as [`scan`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The key as imported (after the conversions listed in [`Scan::converted`]).
    pub key: String,
    pub timestamp: u64,
    pub path: PathBuf,
    /// The Nacos namespace: the directory under `data/` the file is in; `None` for a file at
    /// the top of `data/` (the switch domain).
    pub namespace: Option<String>,
    /// Size of the datum as JSON in an import request.
    pub bytes: usize,
}

/// A file that lost to another holding the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superseded {
    pub path: PathBuf,
    pub key: String,
    pub timestamp: u64,
    pub by: PathBuf,
    pub by_timestamp: u64,
}

/// Everything [`scan`] found in a dir.
#[derive(Debug, Default)]
pub struct Scan {
    pub dir: PathBuf,
    /// `term` of `meta.properties`, if the file is there and says. Informational only:
    /// Nacos's term (+100 per write, reference §12) means nothing to a Raft log.
    pub term: Option<u64>,
    /// Why `term` is absent although `meta.properties` exists.
    pub meta_note: Option<FileNote>,
    /// Entries looked at under `data/` (files, and anything else found where files go).
    pub files: usize,
    /// One per key, sorted by key: the file to import it from.
    pub datums: Vec<Found>,
    /// Files whose datum was changed on the way in, as Nacos changes it when loading.
    pub converted: Vec<FileNote>,
    pub superseded: Vec<Superseded>,
    /// Files that hold no datum, as Nacos would skip them too (other names, blank files).
    pub ignored: Vec<FileNote>,
    /// Files that cannot be imported: unreadable, not JSON, not a datum, an invalid key.
    pub bad: Vec<FileNote>,
}

/// Reads every file of the Nacos naming data dir `dir` (the one holding `meta.properties`
/// and `data/`) and decides, per key, which file to import. Fails only when `dir` is not
/// such a dir or `data/` cannot be listed; every problem with a file is in the result.
pub fn scan(dir: &Path) -> Result<Scan, MigrateError> {
    let data = dir.join("data");
    // `${nacos.home}` has a data/ too (with naming/ in it): not this one.
    if !data.is_dir() || dir.join("data").join("naming").join("data").is_dir() {
        return Err(MigrateError::NotADataDir {
            path: dir.to_path_buf(),
            why: not_a_data_dir(dir),
        });
    }
    let mut scan = Scan {
        dir: dir.to_path_buf(),
        ..Scan::default()
    };
    (scan.term, scan.meta_note) = read_term(&dir.join("meta.properties"));
    let mut winners: BTreeMap<String, Candidate> = BTreeMap::new();
    for (name, path) in sorted_entries(&data)? {
        // Followed if a link: what counts is what Nacos would open.
        match fs::metadata(&path) {
            Ok(md) if md.is_dir() => {
                let Some(ns) = name.to_str() else {
                    scan.files += 1;
                    scan.ignored.push(note(
                        &path,
                        "a directory whose name is not UTF-8, so no Nacos namespace",
                    ));
                    continue;
                };
                let entries = match sorted_entries(&path) {
                    Ok(e) => e,
                    Err(e) => {
                        scan.files += 1;
                        scan.bad.push(note(&path, &e.to_string()));
                        continue;
                    }
                };
                for (name, path) in entries {
                    consider(&mut scan, &mut winners, &name, &path, Some(ns));
                }
            }
            _ => consider(&mut scan, &mut winners, &name, &path, None),
        }
    }
    scan.datums = winners.into_values().map(|c| c.found).collect();
    Ok(scan)
}

/// Reads the file of `found` again and gives its datum, as [`scan`] read it. Refuses it if
/// the file changed since (an import of a dir Nacos still writes to).
pub fn load(found: &Found) -> Result<ImportedDatum, MigrateError> {
    let changed = |reason: String| MigrateError::Changed {
        path: found.path.clone(),
        reason,
    };
    let name = found
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| changed("the file name is no longer UTF-8".into()))?;
    let bytes =
        read_bounded(&found.path).map_err(|e| changed(format!("{e} (on reading it again)")))?;
    let parsed = match parse_file(name, found.namespace.as_deref(), &bytes) {
        Ok(Parsed::Datum(d)) => d,
        Ok(Parsed::Blank) => return Err(changed("it changed since it was read: it is blank now; stop the writes to this dir and run again".into())),
        Err(e) => return Err(changed(format!("it changed since it was read: {e}; stop the writes to this dir and run again"))),
    };
    if parsed.key != found.key || parsed.timestamp != found.timestamp {
        return Err(changed(format!(
            "it changed since it was read: it held {:?} at timestamp {}, and now {:?} at {}; stop the writes to this dir and run again",
            found.key, found.timestamp, parsed.key, parsed.timestamp
        )));
    }
    Ok(ImportedDatum {
        key: parsed.key,
        value: parsed.value,
        timestamp: parsed.timestamp,
    })
}

/// A file that holds a key, and how it ranks against another file for the same key.
struct Candidate {
    found: Found,
    /// Newer timestamp first; at equal timestamps the file Nacos 1.x writes now (a grouped
    /// key, no `.datum` suffix) beats the older form.
    rank: (u64, bool, bool),
}

fn consider(
    scan: &mut Scan,
    winners: &mut BTreeMap<String, Candidate>,
    name: &std::ffi::OsStr,
    path: &Path,
    ns_dir: Option<&str>,
) {
    scan.files += 1;
    let Some(name) = name.to_str() else {
        // Nacos names files after their keys, which are text.
        let lossy = name.to_string_lossy();
        let list = if lossy.starts_with(CACHE_FILE_PREFIX) {
            &mut scan.bad
        } else {
            &mut scan.ignored
        };
        list.push(note(
            path,
            "the file name is not UTF-8, so it names no Nacos key",
        ));
        return;
    };
    if let Some(why) = ignore_reason(name) {
        scan.ignored.push(note(path, why));
        return;
    }
    let bytes = match read_bounded(path) {
        Ok(b) => b,
        Err(e) => {
            scan.bad.push(note(path, &e));
            return;
        }
    };
    let d = match parse_file(name, ns_dir, &bytes) {
        Ok(Parsed::Datum(d)) => d,
        Ok(Parsed::Blank) => {
            scan.ignored
                .push(note(path, "blank (Nacos skips a blank datum file too)"));
            return;
        }
        Err(e) => {
            scan.bad.push(note(path, &e));
            return;
        }
    };
    for n in &d.notes {
        scan.converted.push(note(path, n));
    }
    let cand = Candidate {
        rank: (d.timestamp, !d.regrouped, !d.suffixed),
        found: Found {
            key: d.key,
            timestamp: d.timestamp,
            path: path.to_path_buf(),
            namespace: ns_dir.map(str::to_string),
            bytes: d.bytes,
        },
    };
    let key = cand.found.key.clone();
    match winners.remove(&key) {
        None => {
            winners.insert(key, cand);
        }
        Some(held) => {
            let (win, lose) = if cand.rank > held.rank {
                (cand, held)
            } else {
                (held, cand)
            };
            scan.superseded.push(Superseded {
                path: lose.found.path,
                key: key.clone(),
                timestamp: lose.found.timestamp,
                by: win.found.path.clone(),
                by_timestamp: win.found.timestamp,
            });
            winners.insert(key, win);
        }
    }
}

fn note(path: &Path, reason: &str) -> FileNote {
    FileNote {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Why Nacos would not load a file of this name (decided before it is opened).
fn ignore_reason(name: &str) -> Option<&'static str> {
    if !name.starts_with(CACHE_FILE_PREFIX) {
        return Some(
            "not a Nacos naming datum file: Nacos loads only names that start with com.alibaba.nacos.naming",
        );
    }
    if name.starts_with(EPHEMERAL_PREFIX) {
        return Some(
            "an ephemeral instance list: Nacos keeps those in its AP protocol (Distro), never in this store",
        );
    }
    None
}

/// The entries of a directory, sorted by name, so a scan reports in a stable order.
fn sorted_entries(dir: &Path) -> Result<Vec<(std::ffi::OsString, PathBuf)>, MigrateError> {
    let io = |source| MigrateError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        out.push((entry.file_name(), entry.path()));
    }
    out.sort();
    Ok(out)
}

/// A regular file's bytes, refused past [`MAX_FILE_BYTES`] without reading it whole.
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    read_limited(path, MAX_FILE_BYTES)
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let md = fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if md.is_dir() {
        return Err("a directory where Nacos keeps datum files".into());
    }
    if !md.is_file() {
        // A FIFO or a device could block the read or never end.
        return Err("not a regular file".into());
    }
    let too_big = |n: u64| {
        format!(
            "{n} bytes, more than the {limit} a datum file may have here (an import request is limited to {} bytes)",
            crate::http::MAX_BODY_BYTES
        )
    };
    if md.len() > limit {
        return Err(too_big(md.len()));
    }
    let f = fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut bytes = Vec::with_capacity(md.len() as usize);
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// `term` of `meta.properties` (Java properties text), and why it is absent if the file
/// exists but does not say.
fn read_term(path: &Path) -> (Option<u64>, Option<FileNote>) {
    if !path.exists() {
        return (None, None);
    }
    let read = read_limited(path, MAX_META_BYTES)
        .and_then(|bytes| properties_term(&String::from_utf8_lossy(&bytes)));
    match read {
        Ok(t) => (Some(t), None),
        Err(e) => (
            None,
            Some(note(
                path,
                &format!("no Nacos term read: {e} (the term is only reported, never used)"),
            )),
        ),
    }
}

/// The `term` property: lines of `key=value` (or `key:value`, `key value`), `#` and `!`
/// comments, as `java.util.Properties` writes them.
fn properties_term(text: &str) -> Result<u64, String> {
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        // The key ends at `=`, `:` or a space; a space may be followed by `=` or `:`.
        let (k, v) = match line.find(['=', ':', ' ', '\t']) {
            Some(i) => {
                let rest = line[i..].trim_start();
                let rest = rest.strip_prefix(['=', ':']).unwrap_or(rest).trim();
                (&line[..i], rest)
            }
            None => (line, ""),
        };
        if k == "term" {
            return v
                .parse()
                .map_err(|_| format!("term {v:?} is not a whole number"));
        }
    }
    Err("no term in it".into())
}

/// What to tell someone who gave a dir without `data/`: the likely right dir, if it is
/// nearby.
fn not_a_data_dir(dir: &Path) -> String {
    if !dir.is_dir() {
        return "not a directory".into();
    }
    if dir.join("data").join("naming").join("data").is_dir() {
        return format!(
            "this looks like ${{nacos.home}}: give its naming data dir, {}",
            dir.join("data").join("naming").display()
        );
    }
    if dir.join("naming").join("data").is_dir() {
        return format!(
            "no data/ directory here, but {} has one: give that",
            dir.join("naming").display()
        );
    }
    // Datum files here or in a namespace dir below (a look at the first few entries only).
    let named = |e: &fs::DirEntry| {
        e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(CACHE_FILE_PREFIX))
    };
    let holds_datums = fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().take(1000).any(|e| {
            named(&e)
                || (e.path().is_dir()
                    && fs::read_dir(e.path())
                        .is_ok_and(|inner| inner.flatten().take(1000).any(|i| named(&i))))
        })
    });
    if holds_datums {
        return "this looks like the data/ directory itself: give its parent, the one with meta.properties".into();
    }
    "no data/ directory here".into()
}
