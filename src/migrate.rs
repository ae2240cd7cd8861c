//! Reads a Nacos 1.x naming data dir (`${nacos.home}/data/naming`, written by Nacos
//! `RaftStore`; reference §9) into datums ready for `POST /v1/import`, keeping each key,
//! value and Nacos timestamp, with the conversions Nacos itself makes when it loads the dir.
//!
//! Owns the reading only: it never writes, never talks to a node, and treats every file as
//! hostile (bounded size, keys and values checked by the same rules as a client write, no
//! panic on any content). A file it cannot use is reported with its path and the reason;
//! whether that stops an import is the caller's choice.
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

use serde_json::{Map, Value};

use crate::naming::{
    self, DEFAULT_GROUP, EPHEMERAL_PREFIX, IPLIST_PREFIX, META_PREFIX, SWITCH_SUFFIX,
};
use crate::raft::ImportedDatum;

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

/// What a datum file holds, as read.
enum Parsed {
    Blank,
    Datum(ParsedDatum),
}

struct ParsedDatum {
    key: String,
    value: Value,
    timestamp: u64,
    /// The file name has the `.datum` suffix of Nacos 1.3.1/1.3.2.
    suffixed: bool,
    /// The key had no group (written before Nacos 1.0) and was moved into `DEFAULT_GROUP`.
    regrouped: bool,
    /// What was changed on the way in, for the report.
    notes: Vec<String>,
    /// Size as JSON in an import request.
    bytes: usize,
}

/// Which kind of Nacos record a key holds (Nacos `KeyBuilder` predicates, reference §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The global switch domain (`SwitchDomain`): a service-meta key that is no service.
    Switch,
    Meta,
    Instances,
    /// Any other key under the naming prefix: loaded as a plain datum, as Nacos does.
    Other,
}

fn kind_of(key: &str) -> Kind {
    if key.ends_with(SWITCH_SUFFIX) {
        Kind::Switch
    } else if key.starts_with(META_PREFIX) {
        Kind::Meta
    } else if key.starts_with(IPLIST_PREFIX) {
        Kind::Instances
    } else {
        Kind::Other
    }
}

/// The namespace Nacos files a key under (`KeyBuilder.getNamespace`): the text between the
/// prefix and the first `##` for service metas and instance lists, none for the switch
/// domain and every other key (those files sit at the top of `data/`).
fn nacos_namespace(key: &str) -> Option<&str> {
    let rest = match kind_of(key) {
        Kind::Meta => key.strip_prefix(META_PREFIX),
        Kind::Instances => key.strip_prefix(IPLIST_PREFIX),
        Kind::Switch | Kind::Other => None,
    }?;
    let ns = rest.split("##").next().unwrap_or(rest);
    (!ns.is_empty()).then_some(ns)
}

/// A datum file's name as Nacos 1.x writes it: every `:` of the key becomes `#` (Nacos
/// `RaftStore.encodeDatumKey`; keys keep their `##` and `@@`).
pub fn file_name_of(key: &str) -> String {
    key.replace(':', "#")
}

/// Parses one datum file, named `name`, from `data/<ns_dir>/` (or the top of `data/` when
/// `ns_dir` is `None`). `Err` is the reason it cannot be imported.
fn parse_file(name: &str, ns_dir: Option<&str>, bytes: &[u8]) -> Result<Parsed, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8 text (bad byte at offset {})", e.valid_up_to()))?;
    if text.trim().is_empty() {
        return Ok(Parsed::Blank);
    }
    let mut notes = Vec::new();
    let doc: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            // Nacos's legacy fallback for service metas written with doubled escapes: the
            // text with every backslash removed. Tried only when the text is not JSON as
            // written, so a valid file keeps its escapes.
            let stripped = (name.starts_with(META_PREFIX) && text.contains('\\'))
                .then(|| serde_json::from_str::<Value>(&text.replace('\\', "")).ok())
                .flatten();
            match stripped {
                Some(v) => {
                    notes.push(
                        "not JSON as written; read with every backslash removed, as Nacos does for service metas"
                            .to_string(),
                    );
                    v
                }
                None => return Err(format!("not JSON: {e}")),
            }
        }
    };
    let Value::Object(mut doc) = doc else {
        return Err(format!(
            "not a Nacos datum: a JSON {}, not an object {{\"key\", \"value\", \"timestamp\"}}",
            json_type(&doc)
        ));
    };
    let key = match doc.remove("key") {
        Some(Value::String(k)) => k,
        Some(other) => {
            return Err(format!(
                "not a Nacos datum: its key is a JSON {}, not a string",
                json_type(&other)
            ))
        }
        None => return Err("not a Nacos datum: it has no key".into()),
    };
    let timestamp = match doc.remove("timestamp") {
        Some(Value::Number(n)) => n.as_u64().filter(|t| *t >= 1).ok_or_else(|| {
            format!("timestamp {n} of {key:?}: Nacos timestamps are whole numbers from 1")
        })?,
        Some(other) => {
            return Err(format!(
                "timestamp of {key:?} is a JSON {}, not a number",
                json_type(&other)
            ))
        }
        None => return Err(format!("{key:?} has no timestamp")),
    };
    let value = doc
        .remove("value")
        .ok_or_else(|| format!("{key:?} has no value"))?;

    // The file must be where Nacos writes this key (RaftStore.cacheFileName), else it is
    // not a file Nacos wrote, whatever it holds.
    let encoded = file_name_of(&key);
    let suffixed = if name == encoded {
        false
    } else if name.strip_suffix(DATUM_SUFFIX) == Some(encoded.as_str()) {
        true
    } else {
        return Err(format!(
            "holds the key {key:?}, which Nacos keeps in a file named {encoded:?}: a file name and content that do not match"
        ));
    };
    let home = nacos_namespace(&key);
    if home != ns_dir {
        return Err(match home {
            Some(ns) => format!(
                "holds the key {key:?} of namespace {ns:?}, which Nacos keeps in data/{ns}/"
            ),
            None => format!("holds the key {key:?}, which Nacos keeps at the top of data/"),
        });
    }

    let kind = kind_of(&key);
    let (key, value, regrouped) = match kind {
        Kind::Switch => {
            if !value.is_object() {
                return Err(format!(
                    "the switch domain {key:?} holds a JSON {}, not Nacos's SwitchDomain object",
                    json_type(&value)
                ));
            }
            (key, value, false)
        }
        Kind::Other => (key, value, false),
        Kind::Meta | Kind::Instances => {
            let (grouped, regrouped) = regroup(&key)?;
            if regrouped {
                notes.push(format!(
                    "a key without a group (written before Nacos 1.0), imported as {grouped:?} in {DEFAULT_GROUP}, where Nacos 1.x moves it"
                ));
            }
            let value = if kind == Kind::Meta {
                service_meta(&key, value, &mut notes)?
            } else {
                instance_list(&key, value, &mut notes)?
            };
            (grouped, value, regrouped)
        }
    };
    crate::datum::validate_key(&key).map_err(|e| format!("{e}"))?;
    crate::datum::validate_value(&value).map_err(|e| format!("the value of {key:?}: {e}"))?;
    let bytes = serde_json::to_vec(&ImportedDatum {
        key: key.clone(),
        value: value.clone(),
        timestamp,
    })
    .map_err(|e| format!("the value of {key:?} cannot be sent: {e}"))?
    .len();
    if bytes > MAX_DATUM_BYTES {
        return Err(format!(
            "{key:?} is {bytes} bytes as JSON, more than the {MAX_DATUM_BYTES} one import request can carry"
        ));
    }
    Ok(Parsed::Datum(ParsedDatum {
        key,
        value,
        timestamp,
        suffixed,
        regrouped,
        notes,
        bytes,
    }))
}

/// A service's key in `DEFAULT_GROUP` if it has no group (keys before Nacos 1.0 were
/// `<ns>##<service>`): `DEFAULT_GROUP@@` goes right after the first `##`. Nacos 1.x does
/// this at load for instance lists (`RaftStore.readDatum`, reference §9) and, for service
/// metas, at the service's next write, deleting the old file (`RaftStore.write`); doing it
/// for both here gives each service one key from the start, the one the naming API writes.
/// (Nacos finds the spot with `indexOf(serviceName)`, which lands inside the prefix for a
/// service named, say, `naming`; this does not.)
fn regroup(key: &str) -> Result<(String, bool), String> {
    let Some(at) = key.find("##") else {
        return Err(format!(
            "{key:?} has no \"##\" between namespace and service, so it names no service Nacos could serve"
        ));
    };
    let service = &key[at + 2..];
    if service.is_empty() {
        return Err(format!("{key:?} names no service after its \"##\""));
    }
    if service.contains("@@") {
        return Ok((key.to_string(), false));
    }
    Ok((
        format!("{}{DEFAULT_GROUP}@@{service}", &key[..at + 2]),
        true,
    ))
}

/// A service meta's value as Nacos 1.x loads it: a blank `groupName` becomes
/// `DEFAULT_GROUP`, and a `name` without `@@` gets `DEFAULT_GROUP@@` in front (Nacos
/// `RaftStore.readDatum`). It must then read as a Nacos `Service`, or the naming API could
/// not serve it.
fn service_meta(key: &str, value: Value, notes: &mut Vec<String>) -> Result<Value, String> {
    let Value::Object(mut svc) = value else {
        return Err(format!(
            "the service meta {key:?} holds a JSON {}, not Nacos's Service object",
            json_type(&value)
        ));
    };
    let name = match svc.get("name") {
        Some(Value::String(n)) => n.clone(),
        _ => return Err(format!("the service meta {key:?} has no name")),
    };
    let blank_group = match svc.get("groupName") {
        None | Some(Value::Null) => true,
        Some(Value::String(g)) => g.trim().is_empty(),
        Some(_) => false,
    };
    if blank_group {
        svc.insert("groupName".into(), Value::String(DEFAULT_GROUP.into()));
    }
    if !name.contains("@@") {
        svc.insert(
            "name".into(),
            Value::String(format!("{DEFAULT_GROUP}@@{name}")),
        );
    }
    if blank_group || !name.contains("@@") {
        notes.push(format!(
            "a service without a group: groupName and name set into {DEFAULT_GROUP}, as Nacos 1.x loads it"
        ));
    }
    let value = Value::Object(svc);
    serde_json::from_value::<naming::Service>(value.clone())
        .map_err(|e| format!("the service meta {key:?} is not a Nacos Service: {e}"))?;
    Ok(value)
}

/// An instance list's value: Nacos's `Instances` object as it is, or the list before Nacos
/// 1.0 (a bare array of instances), which Nacos 1.x loads as `{"instanceList": [...]}` with
/// every instance persistent (`ephemeral` false; `RaftStore.readDatum`, reference §9).
fn instance_list(key: &str, value: Value, notes: &mut Vec<String>) -> Result<Value, String> {
    let value = match value {
        Value::Object(_) => value,
        Value::Array(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, inst) in list.into_iter().enumerate() {
                let Value::Object(mut inst) = inst else {
                    return Err(format!(
                        "the pre-1.0 instance list {key:?} holds a JSON {} at position {i}, not an instance",
                        json_type(&inst)
                    ));
                };
                inst.insert("ephemeral".into(), Value::Bool(false));
                out.push(Value::Object(inst));
            }
            notes.push(
                "a pre-1.0 instance list (a bare array): imported as {\"instanceList\": [...]}, every instance persistent (ephemeral false), as Nacos 1.x loads it"
                    .to_string(),
            );
            let mut m = Map::new();
            m.insert("instanceList".into(), Value::Array(out));
            Value::Object(m)
        }
        other => {
            return Err(format!(
                "the instance list {key:?} holds a JSON {}, neither Nacos's Instances object nor a pre-1.0 array of instances",
                json_type(&other)
            ))
        }
    };
    serde_json::from_value::<naming::Instances>(value.clone())
        .map_err(|e| format!("the instance list {key:?} is not Nacos's Instances: {e}"))?;
    Ok(value)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const IPLIST: &str = "com.alibaba.nacos.naming.iplist.";
    const META: &str = "com.alibaba.nacos.naming.domains.meta.";
    const SWITCH: &str =
        "com.alibaba.nacos.naming.domains.meta.00-00---000-NACOS_SWITCH_DOMAIN-000---00-00";

    fn datum(key: &str, value: Value, ts: u64) -> String {
        json!({"key": key, "value": value, "timestamp": ts}).to_string()
    }

    fn instance(ip: &str, port: u16) -> Value {
        json!({"ip": ip, "port": port, "weight": 1.0, "healthy": true, "enabled": true,
               "ephemeral": false, "clusterName": "DEFAULT", "metadata": {}})
    }

    /// Writes `data/<rel>` under `dir`.
    fn put(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join("data").join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    fn parsed(name: &str, ns: Option<&str>, text: &str) -> ParsedDatum {
        match parse_file(name, ns, text.as_bytes()) {
            Ok(Parsed::Datum(d)) => d,
            Ok(Parsed::Blank) => panic!("{name}: blank"),
            Err(e) => panic!("{name}: {e}"),
        }
    }

    fn refused(name: &str, ns: Option<&str>, text: &str) -> String {
        match parse_file(name, ns, text.as_bytes()) {
            Err(e) => e,
            Ok(_) => panic!("{name}: accepted {text}"),
        }
    }

    #[test]
    fn a_1x_instance_list_is_taken_as_it_is() {
        let key = format!("{IPLIST}public##DEFAULT_GROUP@@orders");
        let value = json!({"instanceList": [instance("127.0.0.11", 8080)]});
        let d = parsed(&key, Some("public"), &datum(&key, value.clone(), 7));
        assert_eq!((d.key.as_str(), d.timestamp), (key.as_str(), 7));
        assert_eq!(d.value, value);
        assert!(!d.suffixed && !d.regrouped && d.notes.is_empty());
    }

    #[test]
    fn colons_in_keys_are_hashes_in_file_names() {
        let key = format!("{IPLIST}public##DEFAULT_GROUP@@providers:org.demo.Api:1.0:");
        let name = format!("{IPLIST}public##DEFAULT_GROUP@@providers#org.demo.Api#1.0#");
        assert_eq!(file_name_of(&key), name);
        let d = parsed(
            &name,
            Some("public"),
            &datum(&key, json!({"instanceList": []}), 2),
        );
        assert_eq!(d.key, key, "the key is the one inside, with its colons");
        // The key's own spelling as a file name is not how Nacos names it.
        let e = refused(
            &key,
            Some("public"),
            &datum(&key, json!({"instanceList": []}), 2),
        );
        assert!(e.contains("do not match"), "{e}");
    }

    #[test]
    fn the_datum_suffix_of_1_3_is_read() {
        let key = format!("{META}dev##G@@pay");
        let value = json!({"name": "G@@pay", "groupName": "G", "namespaceId": "dev", "protectThreshold": 0.0});
        let d = parsed(
            &format!("{key}.datum"),
            Some("dev"),
            &datum(&key, value.clone(), 3),
        );
        assert!(d.suffixed);
        assert_eq!((d.key.as_str(), &d.value), (key.as_str(), &value));
        // A key that itself ends in .datum is its own file name, not a suffixed one.
        let key2 = format!("{META}dev##G@@x.datum");
        let value2 = json!({"name": "G@@x.datum", "groupName": "G"});
        assert!(!parsed(&key2, Some("dev"), &datum(&key2, value2, 1)).suffixed);
    }

    #[test]
    fn a_pre_1_0_instance_list_gets_a_group_and_persistent_instances() {
        let old = format!("{IPLIST}public##legacy");
        let list = json!([{"ip": "127.0.0.12", "port": 9000, "ephemeral": true},
                          {"ip": "127.0.0.13", "port": 9001}]);
        let d = parsed(&old, Some("public"), &datum(&old, list, 4));
        assert_eq!(d.key, format!("{IPLIST}public##DEFAULT_GROUP@@legacy"));
        assert!(d.regrouped);
        assert_eq!(d.timestamp, 4);
        let l = d.value["instanceList"].as_array().unwrap();
        assert_eq!(l.len(), 2);
        assert!(l.iter().all(|i| i["ephemeral"] == json!(false)), "{l:?}");
        assert_eq!(l[0]["ip"], "127.0.0.12");
        assert_eq!(d.notes.len(), 2, "{:?}", d.notes);
        // A name that Nacos's indexOf would find inside the prefix keeps its namespace.
        let k = format!("{IPLIST}public##naming");
        let d = parsed(&k, Some("public"), &datum(&k, json!([]), 1));
        assert_eq!(d.key, format!("{IPLIST}public##DEFAULT_GROUP@@naming"));
    }

    #[test]
    fn a_service_without_a_group_gets_the_default_group() {
        let old = format!("{META}public##legacy");
        let d = parsed(
            &old,
            Some("public"),
            &datum(&old, json!({"name": "legacy", "protectThreshold": 0.5}), 9),
        );
        assert_eq!(d.key, format!("{META}public##DEFAULT_GROUP@@legacy"));
        assert_eq!(d.value["name"], "DEFAULT_GROUP@@legacy");
        assert_eq!(d.value["groupName"], "DEFAULT_GROUP");
        assert_eq!(d.value["protectThreshold"], 0.5);
        // Grouped key, blank groupName: only the value changes.
        let k = format!("{META}public##DEFAULT_GROUP@@a");
        let d = parsed(
            &k,
            Some("public"),
            &datum(&k, json!({"name": "DEFAULT_GROUP@@a", "groupName": " "}), 1),
        );
        assert_eq!(d.key, k);
        assert_eq!(d.value["groupName"], "DEFAULT_GROUP");
        assert!(!d.regrouped);
        // And a meta with nothing to change is untouched.
        let v = json!({"name": "G@@b", "groupName": "G", "metadata": {"a\\b": "c\"d"}});
        let k = format!("{META}public##G@@b");
        let d = parsed(&k, Some("public"), &datum(&k, v.clone(), 1));
        assert_eq!(d.value, v, "valid escapes are kept");
        assert!(d.notes.is_empty());
    }

    #[test]
    fn a_meta_that_is_json_only_without_its_backslashes_is_read_as_nacos_does() {
        let k = format!("{META}public##G@@c");
        let text = format!(
            r#"{{"key":"{k}","value":{{\"name\":\"G@@c\",\"groupName\":\"G\"}},"timestamp":2}}"#
        );
        let d = parsed(&k, Some("public"), &text);
        assert_eq!(d.value["name"], "G@@c");
        assert!(d.notes[0].contains("backslash"), "{:?}", d.notes);
        // Not for other kinds of file.
        let k = format!("{IPLIST}public##G@@c");
        let text = format!(r#"{{"key":"{k}","value":{{\"instanceList\":[]}},"timestamp":2}}"#);
        assert!(refused(&k, Some("public"), &text).contains("not JSON"));
    }

    #[test]
    fn the_switch_domain_lives_at_the_top() {
        let v = json!({"name": "00-00---000-NACOS_SWITCH_DOMAIN-000---00-00", "healthCheckEnabled": true});
        let d = parsed(SWITCH, None, &datum(SWITCH, v.clone(), 12));
        assert_eq!((d.key.as_str(), d.value, d.timestamp), (SWITCH, v, 12));
        let e = refused(SWITCH, Some("public"), &datum(SWITCH, json!({}), 1));
        assert!(e.contains("top of data/"), "{e}");
        let e = refused(SWITCH, None, &datum(SWITCH, json!([1]), 1));
        assert!(e.contains("SwitchDomain"), "{e}");
    }

    #[test]
    fn files_in_the_wrong_place_or_with_wrong_contents_are_refused_with_the_reason() {
        let k = format!("{IPLIST}public##G@@s");
        let ok = datum(&k, json!({"instanceList": []}), 1);
        let cases: Vec<(String, Option<&str>, String, &str)> = vec![
            (k.clone(), Some("dev"), ok.clone(), "data/public/"),
            (k.clone(), None, ok.clone(), "data/public/"),
            (format!("{k}x"), Some("public"), ok.clone(), "do not match"),
            (
                k.clone(),
                Some("public"),
                ok[..ok.len() - 5].to_string(),
                "not JSON",
            ),
            (k.clone(), Some("public"), "[1,2]".into(), "not an object"),
            (
                k.clone(),
                Some("public"),
                json!({"value": {}, "timestamp": 1}).to_string(),
                "no key",
            ),
            (
                k.clone(),
                Some("public"),
                json!({"key": 5, "value": {}, "timestamp": 1}).to_string(),
                "not a string",
            ),
            (
                k.clone(),
                Some("public"),
                json!({"key": k, "value": {}}).to_string(),
                "no timestamp",
            ),
            (k.clone(), Some("public"), datum(&k, json!({}), 0), "from 1"),
            (
                k.clone(),
                Some("public"),
                json!({"key": k, "value": {}, "timestamp": -3}).to_string(),
                "from 1",
            ),
            (
                k.clone(),
                Some("public"),
                json!({"key": k, "value": {}, "timestamp": "7"}).to_string(),
                "not a number",
            ),
            (
                k.clone(),
                Some("public"),
                json!({"key": k, "timestamp": 1}).to_string(),
                "no value",
            ),
            (
                k.clone(),
                Some("public"),
                datum(&k, json!("x"), 1),
                "neither",
            ),
            (
                k.clone(),
                Some("public"),
                datum(&k, json!([5]), 1),
                "position 0",
            ),
            (
                k.clone(),
                Some("public"),
                datum(
                    &k,
                    json!({"instanceList": [{"ip": "127.0.0.1", "port": 70000}]}),
                    1,
                ),
                "not Nacos's Instances",
            ),
            (
                format!("{META}public##G@@s"),
                Some("public"),
                datum(&format!("{META}public##G@@s"), json!({"groupName": "G"}), 1),
                "no name",
            ),
            (
                format!("{IPLIST}public"),
                Some("public"),
                datum(&format!("{IPLIST}public"), json!({}), 1),
                "no \"##\"",
            ),
            (
                format!("{IPLIST}public##"),
                Some("public"),
                datum(&format!("{IPLIST}public##"), json!({}), 1),
                "no service",
            ),
        ];
        for (name, ns, text, says) in cases {
            let e = refused(&name, ns, &text);
            assert!(e.contains(says), "{name} {text}: {e:?} lacks {says:?}");
        }
        let e = match parse_file(&k, Some("public"), b"{\"key\": \"\xff\"}") {
            Err(e) => e,
            Ok(_) => panic!("bad UTF-8 accepted"),
        };
        assert!(e.contains("UTF-8"), "{e}");
        // A key with a control character is refused by the key rule, naming it.
        let bad = format!("{IPLIST}public##G@@a\u{7}");
        let e = refused(
            &bad,
            Some("public"),
            &datum(&bad, json!({"instanceList": []}), 1),
        );
        assert!(e.contains("control character"), "{e}");
        // Nested past the value rule.
        let mut deep = json!(1);
        for _ in 0..70 {
            deep = json!({"a": deep});
        }
        let g = format!("{CACHE_FILE_PREFIX}.other");
        let e = refused(&g, None, &datum(&g, deep, 1));
        assert!(e.contains("levels deep"), "{e}");
    }

    #[test]
    fn blank_files_are_blank() {
        for text in ["", "  \n\t"] {
            assert!(matches!(
                parse_file(IPLIST, Some("public"), text.as_bytes()),
                Ok(Parsed::Blank)
            ));
        }
    }

    #[test]
    fn meta_properties_terms() {
        assert_eq!(
            properties_term("#Tue Dec 01 10:00:00 CST 2020\nterm=1203\n"),
            Ok(1203)
        );
        assert_eq!(properties_term("  term : 7"), Ok(7));
        assert!(properties_term("#only a comment\n").is_err());
        assert!(properties_term("term=abc").unwrap_err().contains("abc"));
    }

    #[test]
    fn a_whole_dir_is_scanned_and_the_newer_of_two_files_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join("meta.properties"), "#c\nterm=300\n").unwrap();
        let k = format!("{IPLIST}public##DEFAULT_GROUP@@orders");
        let newer = json!({"instanceList": [instance("127.0.0.11", 1)]});
        // The 1.3.x file is newer here; then the 1.4 one, newer there.
        let a = put(
            dir,
            &format!("public/{k}.datum"),
            &datum(&k, newer.clone(), 5),
        );
        let b = put(
            dir,
            &format!("public/{k}"),
            &datum(&k, json!({"instanceList": []}), 4),
        );
        let k2 = format!("{IPLIST}dev##DEFAULT_GROUP@@pay");
        let c = put(
            dir,
            &format!("dev/{k2}.datum"),
            &datum(&k2, json!({"instanceList": []}), 2),
        );
        let d = put(
            dir,
            &format!("dev/{k2}"),
            &datum(&k2, json!({"instanceList": []}), 2),
        );
        // A pre-1.0 file and the grouped one for the same service: the newer wins.
        let old = format!("{IPLIST}dev##legacy");
        let e = put(
            dir,
            &format!("dev/{old}"),
            &datum(&old, json!([instance("127.0.0.12", 2)]), 8),
        );
        let grouped = format!("{IPLIST}dev##DEFAULT_GROUP@@legacy");
        let f = put(
            dir,
            &format!("dev/{grouped}"),
            &datum(&grouped, json!({"instanceList": []}), 3),
        );
        put(dir, SWITCH, &datum(SWITCH, json!({"name": "switch"}), 1));
        let blank = put(
            dir,
            &format!("public/{IPLIST}public##DEFAULT_GROUP@@empty"),
            "\n",
        );
        let other = put(dir, "public/.DS_Store", "junk");
        let eph = put(dir, &format!("public/{IPLIST}ephemeral.public##G@@e"), "{}");
        let bad = put(dir, &format!("public/{META}public##G@@torn"), "{\"key\":");
        fs::create_dir_all(
            dir.join("data/public")
                .join(format!("{META}public##G@@dir")),
        )
        .unwrap();

        let s = scan(dir).unwrap();
        assert_eq!(s.term, Some(300));
        assert_eq!(s.files, 12);
        let got: Vec<(&str, u64, &Path)> = s
            .datums
            .iter()
            .map(|f| (f.key.as_str(), f.timestamp, f.path.as_path()))
            .collect();
        assert_eq!(
            got,
            vec![
                (SWITCH, 1, dir.join("data").join(SWITCH).as_path()),
                (grouped.as_str(), 8, e.as_path()),
                (k2.as_str(), 2, d.as_path()),
                (k.as_str(), 5, a.as_path()),
            ]
        );
        let sup: Vec<(&Path, &Path)> = s
            .superseded
            .iter()
            .map(|x| (x.path.as_path(), x.by.as_path()))
            .collect();
        assert_eq!(sup.len(), 3);
        for pair in [
            (b.as_path(), a.as_path()),
            (c.as_path(), d.as_path()),
            (f.as_path(), e.as_path()),
        ] {
            assert!(sup.contains(&pair), "{pair:?} not in {sup:?}");
        }
        let ignored: Vec<&Path> = s.ignored.iter().map(|n| n.path.as_path()).collect();
        assert_eq!(ignored.len(), 3, "{:?}", s.ignored);
        for p in [&blank, &other, &eph] {
            assert!(ignored.contains(&p.as_path()), "{p:?}");
        }
        assert_eq!(s.bad.len(), 2, "{:?}", s.bad);
        assert_eq!(
            s.bad[0].path,
            dir.join("data/public")
                .join(format!("{META}public##G@@dir"))
        );
        assert!(s.bad[0].reason.contains("directory"));
        assert_eq!(s.bad[1].path, bad);
        assert!(s.bad[1].reason.contains("not JSON"));
        assert!(s.converted.iter().any(|n| n.path == e), "{:?}", s.converted);

        // The second pass gives what the first found; a file changed meanwhile is refused.
        let first = s.datums.iter().find(|f| f.key == k).unwrap();
        let d0 = load(first).unwrap();
        assert_eq!(
            (d0.key.as_str(), d0.timestamp, &d0.value),
            (k.as_str(), 5, &newer)
        );
        assert_eq!(serde_json::to_vec(&d0).unwrap().len(), first.bytes);
        let legacy = load(s.datums.iter().find(|f| f.key == grouped).unwrap()).unwrap();
        assert_eq!(legacy.value["instanceList"][0]["ephemeral"], json!(false));
        fs::write(&a, datum(&k, newer, 6)).unwrap();
        let err = load(first).unwrap_err().to_string();
        assert!(
            err.contains("changed") && err.contains(&*a.to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn limits_and_odd_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let k = format!("{IPLIST}public##G@@big");
        let p = dir.join("data/public").join(&k);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let f = fs::File::create(&p).unwrap();
        f.set_len(MAX_FILE_BYTES + 1).unwrap();
        let s = scan(dir).unwrap();
        assert_eq!(s.bad.len(), 1);
        assert!(s.bad[0].reason.contains("more than"), "{}", s.bad[0].reason);
        // meta.properties that says nothing usable is noted, not fatal.
        fs::write(dir.join("meta.properties"), "term=x").unwrap();
        let s = scan(dir).unwrap();
        assert_eq!(s.term, None);
        let n = s.meta_note.unwrap();
        assert_eq!(n.path, dir.join("meta.properties"));
        assert!(n.reason.contains("\"x\""), "{}", n.reason);
    }

    #[test]
    fn a_dir_that_is_not_a_naming_dir_says_where_to_look() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        fs::create_dir_all(home.join("data/naming/data")).unwrap();
        let e = scan(home).unwrap_err().to_string();
        assert!(e.contains("data/naming"), "{e}");
        let e = scan(&home.join("data")).unwrap_err().to_string();
        assert!(e.contains("naming"), "{e}");
        let inner = home.join("data/naming/data");
        fs::create_dir_all(inner.join("public")).unwrap();
        fs::write(
            inner.join("public").join(format!("{IPLIST}public##G@@s")),
            "{}",
        )
        .unwrap();
        let e = scan(&inner).unwrap_err().to_string();
        assert!(e.contains("data/ directory itself"), "{e}");
        let e = scan(&home.join("nope")).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        assert!(scan(&home.join("data/naming")).unwrap().datums.is_empty());
    }
}
