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
    let bytes = fs::read(path).map_err(|e| Error::store(path, e))?;
    parse_datum_file(root, path, &bytes)
}

fn parse_datum_file(root: &Path, path: &Path, bytes: &[u8]) -> Result<Datum> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let datum: Datum = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        offset: byte_offset(bytes, e.line(), e.column()),
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

/// Reads `name` inside the already open directory `dir`: `openat` spares the kernel a walk
/// of the whole path per file, which was most of the start-up time with a million keys.
fn read_in_dir(dir: &fs::File, name: &std::ffi::OsStr, path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    let cname = std::ffi::CString::new(name.as_bytes()).map_err(|_| Error::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: "file name holds a NUL byte".into(),
    })?;
    // SAFETY: a valid directory descriptor and a NUL-terminated name; the returned
    // descriptor is owned by the File from here on.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            cname.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::store(path, std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let mut f = unsafe { fs::File::from_raw_fd(fd) };
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(|e| Error::store(path, e))?;
    Ok(bytes)
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

/// Every datum in a data dir with its file, sorted by key. Fails on a corrupt file (naming
/// it) rather than skipping it. Leftover temp files (`.*.tmp`) are ignored: they were never
/// renamed into place, so they never held an acknowledged state the log cannot rebuild.
///
/// Files are read by every core at once (a node with a million keys restarts on it).
pub fn read_datum_dir(data_dir: &Path) -> Result<Vec<(Datum, PathBuf)>> {
    let root = datum_root(data_dir);
    if !root.exists() {
        return Ok(Vec::new());
    }
    // Walk first: each directory, opened once, with the names of its datum files.
    let mut dirs: Vec<(PathBuf, fs::File, Vec<std::ffi::OsString>)> = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::store(&dir, e))? {
            let entry = entry.map_err(|e| Error::store(&dir, e))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let ft = entry
                .file_type()
                .map_err(|e| Error::store(entry.path(), e))?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else {
                names.push(name);
            }
        }
        let handle = fs::File::open(&dir).map_err(|e| Error::store(&dir, e))?;
        dirs.push((dir, handle, names));
    }
    let items: Vec<(usize, usize)> = dirs
        .iter()
        .enumerate()
        .flat_map(|(d, (_, _, names))| (0..names.len()).map(move |f| (d, f)))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 8));
    let chunk = items.len().div_ceil(threads).max(1);
    let (dirs, root) = (&dirs, &root);
    let parts: Vec<Result<Vec<(Datum, PathBuf)>>> = std::thread::scope(|s| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|&(d, f)| {
                            let (dir, handle, names) = &dirs[d];
                            let path = dir.join(&names[f]);
                            let bytes = read_in_dir(handle, &names[f], &path)?;
                            Ok((parse_datum_file(root, &path, &bytes)?, path))
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a datum reader thread panicked"))
            .collect()
    });
    let mut out = Vec::with_capacity(items.len());
    for part in parts {
        out.extend(part?);
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
