//! Datum files: one JSON file per key under `<data-dir>/data/<namespace>/` (Nacos RaftStore).
//!
//! Files are written to a temp file and renamed into place, so a reader never sees half a
//! datum. They are not fsynced one by one: the durable truth is the Raft log and the
//! checkpoint file (`store::checkpoint`). The files are a view of the state, kept for Nacos
//! tools and `nacosctl dump`: synced at a clean stop, and brought back in line after a crash.
//! They are read at start-up only when there is no checkpoint, and are kept only with
//! `--datum-files on` (`nacosctl dump` reads the checkpoint and the log instead). See
//! docs/architecture.md, "Durability".

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::datum::{datum_rel_path, key_from_rel_path, Datum};
use crate::error::{Error, Result};
use crate::store::{remove_file_if_present, sync_dir};

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

/// Writes `datum` to its file in place: an existing file is overwritten (and cut to the new
/// length), a missing one created, with no temp file and no rename. A rewrite then costs no
/// inode and no directory change, which is what the per-second flush spent most of its CPU
/// and journal on (docs/benchmarks.md). Not atomic: a reader racing the write, or a crash in
/// it, can see a torn file. Use it only where nothing depends on the file's content: the
/// node does once a checkpoint exists (restarts read the checkpoint and the log), and the
/// check after an unclean stop rewrites every file that is torn or stale.
pub fn overwrite_datum(data_dir: &Path, datum: &Datum) -> Result<PathBuf> {
    let path = datum_path(data_dir, &datum.key);
    let body = serde_json::to_vec(datum).expect("a datum always serialises");
    let open = |path: &Path| {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    };
    let mut f = match open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path.parent().expect("datum path has a parent");
            fs::create_dir_all(dir).map_err(|e| Error::store(dir, e))?;
            open(&path).map_err(|e| Error::store(&path, e))?
        }
        Err(e) => return Err(Error::store(&path, e)),
    };
    f.write_all(&body).map_err(|e| Error::store(&path, e))?;
    // Only a shorter body leaves old bytes behind; cutting a file to its length is free.
    f.set_len(body.len() as u64)
        .map_err(|e| Error::store(&path, e))?;
    Ok(path)
}

/// Removes a key's datum file; a missing file is fine (the delete is replayed on restart).
pub fn remove_datum(data_dir: &Path, key: &str) -> Result<()> {
    remove_file_if_present(&datum_path(data_dir, key)).map(|_| ())
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

/// The datum files of a data dir, found by one directory walk: each directory opened once,
/// with the names of its datum files. Leftover temp files (`.*.tmp`) are left out: they were
/// never renamed into place, so they never held an acknowledged state the log cannot rebuild.
pub struct DatumFiles {
    root: PathBuf,
    dirs: Vec<(PathBuf, fs::File, Vec<std::ffi::OsString>)>,
    /// (directory, name) positions, in walk order.
    items: Vec<(usize, usize)>,
}

impl DatumFiles {
    pub fn walk(data_dir: &Path) -> Result<DatumFiles> {
        let root = datum_root(data_dir);
        let mut dirs = Vec::new();
        let mut stack = if root.exists() {
            vec![root.clone()]
        } else {
            Vec::new()
        };
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
        let items = dirs
            .iter()
            .enumerate()
            .flat_map(|(d, (_, _, names))| (0..names.len()).map(move |f| (d, f)))
            .collect();
        Ok(DatumFiles { root, dirs, items })
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The keys the files' names encode, without reading them (names that encode no key are
    /// left out).
    pub fn keys(&self) -> Vec<String> {
        self.items
            .iter()
            .filter_map(|&(d, f)| {
                let (dir, _, names) = &self.dirs[d];
                let path = dir.join(&names[f]);
                crate::datum::key_from_rel_path(path.strip_prefix(&self.root).ok()?)
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Reads and checks the files at positions `range` on every core (a node with a million
    /// keys restarts on this). Each file's own result: a damaged file does not stop the others.
    pub fn read(&self, range: std::ops::Range<usize>) -> Vec<(PathBuf, Result<Datum>)> {
        let items = &self.items[range];
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 8));
        let chunk = items.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let workers: Vec<_> = items
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|&(d, f)| {
                                let (dir, handle, names) = &self.dirs[d];
                                let path = dir.join(&names[f]);
                                let datum = read_in_dir(handle, &names[f], &path)
                                    .and_then(|bytes| parse_datum_file(&self.root, &path, &bytes));
                                (path, datum)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("a datum reader thread panicked"))
                .collect()
        })
    }
}

/// Every datum in a data dir with its file, sorted by key. Fails on a corrupt file (naming
/// it) rather than skipping it. A file gone between the walk and its read was removed by a
/// running node (its key deleted), so it is left out.
pub fn read_datum_dir(data_dir: &Path) -> Result<Vec<(Datum, PathBuf)>> {
    let files = DatumFiles::walk(data_dir)?;
    let mut out = Vec::with_capacity(files.len());
    for (path, datum) in files.read(0..files.len()) {
        match datum {
            Ok(d) => out.push((d, path)),
            Err(Error::Store { source, .. }) if source.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    Ok(out)
}

/// Marks a clean stop: syncs every datum file, then records that they are complete (for
/// everything applied before the stop). The next start removes the marker first, so a
/// start that finds none follows a crash (see `take_clean_stop`).
pub fn mark_clean_stop(data_dir: &Path) -> Result<()> {
    crate::store::snapshot::sync_filesystem(data_dir)?;
    let path = data_dir.join(CLEAN_STOP);
    let mut f = fs::File::create(&path).map_err(|e| Error::store(&path, e))?;
    f.write_all(b"the datum files were synced at a clean stop\n")
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::store(&path, e))?;
    sync_dir(data_dir)
}

/// At start-up: whether the last stop was clean. The mark stays until the node has read
/// its durable state (`clear_clean_stop`), so a start that fails on damage does not turn
/// the next attempt into an "unclean" one that would cut the damage off as a torn write.
pub fn clean_stop_marked(data_dir: &Path) -> bool {
    data_dir.join(CLEAN_STOP).exists()
}

/// Removes the clean-stop mark (durably, before anything is written) so that a crash of
/// this run is noticed by the next. After a crash, datum files written shortly before it
/// may be stale (a power cut loses unsynced writes), so the node compares them all with
/// its state in the background.
pub fn clear_clean_stop(data_dir: &Path) -> Result<()> {
    if remove_file_if_present(&data_dir.join(CLEAN_STOP))? {
        sync_dir(data_dir)?;
    }
    Ok(())
}

/// Records that the datum files hold the complete state as of `index` (written by an older
/// version's snapshot install, which staged datum files), so a start-up with no checkpoint
/// may load them although the log starts after `index`. Idempotent.
pub fn mark_complete(data_dir: &Path, index: u64) -> Result<()> {
    let path = data_dir.join(COMPLETE);
    let tmp = data_dir.join(".datum-files.complete.tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| Error::store(&tmp, e))?;
    f.write_all(format!("index={index}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::store(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::store(&path, e))?;
    sync_dir(data_dir)
}

/// Removes the mark: the datum files trail the state (after a snapshot install, which puts
/// a checkpoint in place and leaves them to be rewritten). Idempotent.
pub fn unmark_complete(data_dir: &Path) -> Result<()> {
    if crate::store::remove_file_if_present(&data_dir.join(COMPLETE))? {
        sync_dir(data_dir)?;
    }
    Ok(())
}

/// The index `mark_complete` recorded, if any (an unreadable mark counts as none).
pub fn complete_at(data_dir: &Path) -> Option<u64> {
    let text = fs::read_to_string(data_dir.join(COMPLETE)).ok()?;
    text.trim().strip_prefix("index=")?.parse().ok()
}

/// Whether `data/` holds any datum file, without walking all of them: a name that is not
/// hidden in a namespace directory (temp files and the sessions file are hidden).
pub fn has_datum_files(data_dir: &Path) -> bool {
    fn visible(dir: &Path) -> impl Iterator<Item = PathBuf> {
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
    }
    visible(&datum_root(data_dir)).any(|ns| !ns.is_dir() || visible(&ns).next().is_some())
}

/// Records, in place and without a sync, the applied index the node reached: once a
/// second (each flush round) and at a clean stop. Every entry up to it was committed and is
/// in this member's log, so `nacosctl dump` of a member that crashed replays its log up to
/// here, and no further: entries after it may never have been committed. Fixed width, so a
/// rewrite never leaves a longer number's digits behind.
pub fn write_applied_mark(data_dir: &Path, index: u64) -> Result<()> {
    let path = data_dir.join(APPLIED);
    let open = || {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
    };
    let mut f = match open() {
        Ok(f) => f,
        // Only a data dir nothing was written to yet (a datum set opened on a new path).
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::create_dir_all(data_dir).map_err(|e| Error::store(data_dir, e))?;
            open().map_err(|e| Error::store(&path, e))?
        }
        Err(e) => return Err(Error::store(&path, e)),
    };
    f.write_all(format!("applied={index:020}\n").as_bytes())
        .map_err(|e| Error::store(&path, e))
}

/// The index [`write_applied_mark`] recorded; none when the file is missing or unreadable
/// (a crash can tear it: the caller then trusts the checkpoint only).
pub fn applied_mark(data_dir: &Path) -> Option<u64> {
    let text = fs::read_to_string(data_dir.join(APPLIED)).ok()?;
    text.strip_suffix('\n')?
        .strip_prefix("applied=")?
        .parse()
        .ok()
}

const APPLIED: &str = "applied";
const COMPLETE: &str = "datum-files.complete";
const CLEAN_STOP: &str = "clean-stop";

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
    fn an_overwrite_in_place_keeps_the_inode_and_cuts_a_longer_old_body() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        // A missing file (and its namespace directory) is created.
        let mut long = datum("ns##k", 1);
        long.value = json!("x".repeat(500));
        let path = overwrite_datum(dir.path(), &long).unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        let short = datum("ns##k", 2);
        overwrite_datum(dir.path(), &short).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().ino(),
            inode,
            "rewritten in place"
        );
        let all = read_datum_dir(dir.path()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, short, "no byte of the longer body is left");
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
