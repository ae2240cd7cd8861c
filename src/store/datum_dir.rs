//! Datum files: one JSON file per key under `<data-dir>/data/<namespace>/` (Nacos RaftStore).
//!
//! Files are written to a temp file and renamed into place, so a reader never sees half a
//! datum. They are not fsynced one by one: the Raft log is the durable truth, and on start-up
//! the log is replayed over these files (each file records the log `index` that wrote it, so
//! replay skips what a file already holds). See docs/architecture.md, "Durability".

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::datum::{datum_rel_path, key_from_rel_path, Datum};
use crate::error::{Error, Result};

/// The directory of datum files inside a data dir.
pub fn datum_root(data_dir: &Path) -> PathBuf {
    data_dir.join("data")
}

/// Where the datum file of `key` lives.
pub fn datum_path(data_dir: &Path, key: &str) -> PathBuf {
    datum_root(data_dir).join(datum_rel_path(key))
}

/// Writes `datum` atomically (temp file + rename). Temp names start with `.`, which the key
/// encoding never produces, so a leftover temp file can never be mistaken for a datum.
pub fn write_datum(data_dir: &Path, datum: &Datum) -> Result<PathBuf> {
    write_datum_under(&datum_root(data_dir), datum)
}

/// Like [`write_datum`], into a directory laid out like `<data-dir>/data/`.
pub fn write_datum_under(root: &Path, datum: &Datum) -> Result<PathBuf> {
    let path = root.join(datum_rel_path(&datum.key));
    let dir = path.parent().expect("datum path has a parent");
    fs::create_dir_all(dir).map_err(|e| Error::store(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().expect("file name").to_string_lossy()
    ));
    let body = serde_json::to_vec(datum).expect("a datum always serialises");
    let mut f = fs::File::create(&tmp).map_err(|e| Error::store(&tmp, e))?;
    f.write_all(&body).map_err(|e| Error::store(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(|e| Error::store(&path, e))?;
    Ok(path)
}

/// Removes a key's datum file; a missing file is fine (the delete is replayed on restart).
pub fn remove_datum(data_dir: &Path, key: &str) -> Result<()> {
    let path = datum_path(data_dir, key);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::store(path, e)),
    }
}

/// Reads one datum file and checks that it holds the key its path encodes.
pub fn read_datum_file(root: &Path, path: &Path) -> Result<Datum> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let bytes = fs::read(path).map_err(|e| Error::store(path, e))?;
    let datum: Datum = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        offset: byte_offset(&bytes, e.line(), e.column()),
        reason: format!("not a datum JSON object ({e})"),
    })?;
    match key_from_rel_path(rel) {
        Some(k) if k == datum.key => Ok(datum),
        Some(k) => Err(Error::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: format!(
                "file name is for key {k:?} but it holds key {:?}",
                datum.key
            ),
        }),
        None => Err(Error::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: "file name is not a datum file name (was it copied here by hand?)".into(),
        }),
    }
}

fn byte_offset(bytes: &[u8], line: usize, column: usize) -> u64 {
    let mut off = 0usize;
    for (i, l) in bytes.split(|&b| b == b'\n').enumerate() {
        if i + 1 == line {
            return (off + column.saturating_sub(1)) as u64;
        }
        off += l.len() + 1;
    }
    off as u64
}

/// Every datum in a data dir with its file, sorted by key. Fails on the first corrupt file
/// (naming it) rather than skipping it. Leftover temp files (`.*.tmp`) are ignored: they were
/// never renamed into place, so they never held an acknowledged state the log cannot rebuild.
pub fn read_datum_dir(data_dir: &Path) -> Result<Vec<(Datum, PathBuf)>> {
    let root = datum_root(data_dir);
    let mut out = Vec::new();
    if !root.exists() {
        return Ok(out);
    }
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| Error::store(&dir, e))? {
            let entry = entry.map_err(|e| Error::store(&dir, e))?;
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let ft = entry.file_type().map_err(|e| Error::store(&path, e))?;
            if ft.is_dir() {
                stack.push(path);
            } else {
                out.push((read_datum_file(&root, &path)?, path));
            }
        }
    }
    out.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn datum(key: &str, ts: u64) -> Datum {
        Datum {
            key: key.into(),
            value: json!({"v": ts}),
            timestamp: ts,
            index: ts,
        }
    }

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ["b", "a/../x", "com.alibaba.nacos.naming.iplist.dev##G@@s"];
        for (i, k) in keys.iter().enumerate() {
            write_datum(dir.path(), &datum(k, i as u64 + 1)).unwrap();
        }
        let all = read_datum_dir(dir.path()).unwrap();
        let got: Vec<&str> = all.iter().map(|(d, _)| d.key.as_str()).collect();
        assert_eq!(
            got,
            vec!["a/../x", "b", "com.alibaba.nacos.naming.iplist.dev##G@@s"]
        );
        assert!(all[2].1.starts_with(dir.path().join("data/dev")));
        remove_datum(dir.path(), "b").unwrap();
        remove_datum(dir.path(), "never-existed").unwrap();
        assert_eq!(read_datum_dir(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn corrupt_file_is_named_with_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_datum(dir.path(), &datum("k", 1)).unwrap();
        fs::write(&path, b"{\"key\":\"k\",\n\"value\":").unwrap();
        match read_datum_dir(dir.path()) {
            Err(Error::Corrupt {
                path: p, offset, ..
            }) => {
                assert_eq!(p, path);
                assert!(offset > 10, "offset {offset}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn misplaced_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_datum(dir.path(), &datum("k", 1)).unwrap();
        fs::copy(&path, path.with_file_name("other")).unwrap();
        assert!(matches!(
            read_datum_dir(dir.path()),
            Err(Error::Corrupt { .. })
        ));
    }
}
