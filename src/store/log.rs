//! The Raft log on disk: append-only segment files of CRC-checked records.
//!
//! A record is `[len: u32 LE][crc32 of payload: u32 LE][payload]`; the payload's first byte
//! says what it is: an entry (JSON) or a truncation (`from`, u64 LE). Truncating a divergent
//! suffix appends a truncation record instead of rewriting the file, so every write is an
//! append and a crash can only ever tear the tail. Segments are named by the index of the
//! first entry appended to them and roll over at `SEGMENT_BYTES`.
//!
//! Must not decide what to write: the node shell does, from the core's `Ready`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::raft::Entry;

const SEGMENT_BYTES: u64 = 64 << 20;
const HEADER: usize = 8;
/// Largest record accepted when reading; a length above it means a corrupt header.
const MAX_RECORD: u32 = 256 << 20;
const KIND_ENTRY: u8 = 1;
const KIND_TRUNCATE: u8 = 2;

struct Segment {
    first_index: u64,
    path: PathBuf,
}

/// What `LogStore::open` found on disk.
pub struct Recovered {
    pub store: LogStore,
    /// The entries, contiguous from index 1 (or from the start of the oldest segment).
    pub entries: Vec<Entry>,
    /// Things an operator should know about (a torn tail that was cut off), one per line.
    pub warnings: Vec<String>,
}

pub struct LogStore {
    dir: PathBuf,
    segments: Vec<Segment>,
    active: BufWriter<File>,
    active_len: u64,
    /// Index the next appended entry will have (for naming the next segment).
    next_index: u64,
}

fn segment_name(first_index: u64) -> String {
    format!("{first_index:020}.log")
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::store(dir, e))
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, reading every record back. Corruption anywhere
    /// but the very end of the newest segment is an error naming the file and offset: those
    /// records were fsynced and may have been acknowledged, so nothing is skipped.
    pub fn open(dir: &Path) -> Result<Recovered> {
        fs::create_dir_all(dir).map_err(|e| Error::store(dir, e))?;
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::store(dir, e))? {
            let entry = entry.map_err(|e| Error::store(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(first_index) = stem.parse::<u64>() {
                    segments.push(Segment {
                        first_index,
                        path: entry.path(),
                    });
                }
            }
        }
        segments.sort_by_key(|s| s.first_index);

        let mut entries: Vec<Entry> = Vec::new();
        let mut warnings = Vec::new();
        let count = segments.len();
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == count;
            read_segment(&seg.path, last, &mut entries, &mut warnings)?;
        }
        let next_index = entries.last().map_or(1, |e| e.index + 1);

        if segments.is_empty() {
            let path = dir.join(segment_name(next_index));
            File::create(&path).map_err(|e| Error::store(&path, e))?;
            sync_dir(dir)?;
            segments.push(Segment {
                first_index: next_index,
                path,
            });
        }
        let active_path = &segments.last().expect("at least one segment").path;
        let file = OpenOptions::new()
            .append(true)
            .open(active_path)
            .map_err(|e| Error::store(active_path, e))?;
        let active_len = file
            .metadata()
            .map_err(|e| Error::store(active_path, e))?
            .len();
        Ok(Recovered {
            store: LogStore {
                dir: dir.to_path_buf(),
                segments,
                active: BufWriter::with_capacity(1 << 20, file),
                active_len,
                next_index,
            },
            entries,
            warnings,
        })
    }

    /// Buffers a truncation (if any) and entries; durable only after [`LogStore::sync`].
    pub fn append(&mut self, truncate_from: Option<u64>, entries: &[Entry]) -> Result<()> {
        if let Some(from) = truncate_from {
            let mut payload = vec![KIND_TRUNCATE];
            payload.extend_from_slice(&from.to_le_bytes());
            self.write_record(&payload)?;
            self.next_index = self.next_index.min(from);
        }
        for e in entries {
            if self.active_len >= SEGMENT_BYTES {
                self.roll(e.index)?;
            }
            let mut payload = vec![KIND_ENTRY];
            serde_json::to_writer(&mut payload, e).expect("entries always serialise");
            self.write_record(&payload)?;
            self.next_index = e.index + 1;
        }
        Ok(())
    }

    fn write_record(&mut self, payload: &[u8]) -> Result<()> {
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        let path = &self.segments.last().expect("active segment").path;
        self.active
            .write_all(&header)
            .and_then(|_| self.active.write_all(payload))
            .map_err(|e| Error::store(path, e))?;
        self.active_len += (HEADER + payload.len()) as u64;
        Ok(())
    }

    /// Makes everything appended so far durable: one fdatasync for any number of entries,
    /// which is what lets concurrent publishes share one disk flush (group commit).
    pub fn sync(&mut self) -> Result<()> {
        let path = &self.segments.last().expect("active segment").path;
        self.active.flush().map_err(|e| Error::store(path, e))?;
        self.active
            .get_ref()
            .sync_data()
            .map_err(|e| Error::store(path, e))
    }

    fn roll(&mut self, first_index: u64) -> Result<()> {
        self.sync()?;
        let path = self.dir.join(segment_name(first_index));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::store(&path, e))?;
        sync_dir(&self.dir)?;
        self.active = BufWriter::with_capacity(1 << 20, file);
        self.active_len = 0;
        self.segments.push(Segment { first_index, path });
        Ok(())
    }

    /// Total bytes of all segments (for status and tests of bounded disk use).
    pub fn disk_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter_map(|s| fs::metadata(&s.path).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Reads one segment into `entries`, applying truncation records.
fn read_segment(
    path: &Path,
    is_last: bool,
    entries: &mut Vec<Entry>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::store(path, e))?;
    let mut off = 0usize;
    while off < bytes.len() {
        let corrupt = |reason: String| Error::Corrupt {
            path: path.to_path_buf(),
            offset: off as u64,
            reason,
        };
        let rest = bytes.len() - off;
        let header_ok = rest >= HEADER;
        let len = if header_ok {
            u32::from_le_bytes(bytes[off..off + 4].try_into().expect("4 bytes"))
        } else {
            0
        };
        let complete = header_ok && len <= MAX_RECORD && rest >= HEADER + len as usize;
        let crc_ok = complete && {
            let crc = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().expect("4 bytes"));
            crc32fast::hash(&bytes[off + HEADER..off + HEADER + len as usize]) == crc
        };
        if !crc_ok {
            // A record cut short or failing its checksum at the very end of the newest
            // segment is a write that never completed its fsync, so it was never
            // acknowledged: cut it off, keeping the bytes beside the log for inspection
            // (etcd's WAL repairs its tail the same way).
            let at_end = !complete || off + HEADER + len as usize == bytes.len();
            if is_last && at_end {
                let keep = path.with_extension(format!("log.torn-{off}"));
                fs::write(&keep, &bytes[off..]).map_err(|e| Error::store(&keep, e))?;
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::store(path, e))?;
                f.set_len(off as u64)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| Error::store(path, e))?;
                warnings.push(format!(
                    "{}: cut a torn record at byte {off} ({} bytes, saved to {}); it was never acknowledged",
                    path.display(),
                    bytes.len() - off,
                    keep.display()
                ));
                return Ok(());
            }
            return Err(corrupt(if !complete {
                "record is cut short and more segments follow".into()
            } else {
                "checksum mismatch".into()
            }));
        }
        let payload = &bytes[off + HEADER..off + HEADER + len as usize];
        match payload.first() {
            Some(&KIND_ENTRY) => {
                let e: Entry = serde_json::from_slice(&payload[1..])
                    .map_err(|e| corrupt(format!("entry does not parse: {e}")))?;
                let expected = entries.last().map_or(e.index, |l| l.index + 1);
                if e.index != expected {
                    return Err(corrupt(format!(
                        "entry {} follows entry {}: the log has a gap",
                        e.index,
                        expected - 1
                    )));
                }
                entries.push(e);
            }
            Some(&KIND_TRUNCATE) if payload.len() == 9 => {
                let from = u64::from_le_bytes(payload[1..9].try_into().expect("8 bytes"));
                entries.retain(|e| e.index < from);
            }
            _ => return Err(corrupt("unknown record kind".into())),
        }
        off += HEADER + len as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Command;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            command: Command::Publish {
                key: format!("k{index}"),
                value: serde_json::json!(index),
            },
        }
    }

    #[test]
    fn append_sync_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = LogStore::open(dir.path()).unwrap();
        assert!(r.entries.is_empty());
        r.store
            .append(None, &[entry(1, 1), entry(2, 1), entry(3, 1)])
            .unwrap();
        r.store.sync().unwrap();
        r.store.append(Some(2), &[entry(2, 2)]).unwrap();
        r.store.sync().unwrap();
        drop(r);
        let r = LogStore::open(dir.path()).unwrap();
        assert_eq!(r.entries, vec![entry(1, 1), entry(2, 2)]);
        assert!(r.warnings.is_empty());
    }

    fn only_segment(dir: &Path) -> PathBuf {
        dir.join(segment_name(1))
    }

    #[test]
    fn torn_tail_is_cut_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = LogStore::open(dir.path()).unwrap();
        r.store.append(None, &[entry(1, 1), entry(2, 1)]).unwrap();
        r.store.sync().unwrap();
        drop(r);
        let seg = only_segment(dir.path());
        let full = fs::read(&seg).unwrap();
        fs::write(&seg, &full[..full.len() - 3]).unwrap();
        let r = LogStore::open(dir.path()).unwrap();
        assert_eq!(r.entries, vec![entry(1, 1)]);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        // The log keeps working after the cut.
        let mut store = r.store;
        store.append(None, &[entry(2, 3)]).unwrap();
        store.sync().unwrap();
        drop(store);
        assert_eq!(
            LogStore::open(dir.path()).unwrap().entries,
            vec![entry(1, 1), entry(2, 3)]
        );
    }

    #[test]
    fn corruption_in_the_middle_is_an_error_naming_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = LogStore::open(dir.path()).unwrap();
        r.store.append(None, &[entry(1, 1), entry(2, 1)]).unwrap();
        r.store.sync().unwrap();
        drop(r);
        let seg = only_segment(dir.path());
        let mut bytes = fs::read(&seg).unwrap();
        bytes[HEADER + 2] ^= 0xff; // inside the first record's payload
        fs::write(&seg, &bytes).unwrap();
        match LogStore::open(dir.path()) {
            Err(Error::Corrupt { path, offset, .. }) => {
                assert_eq!(path, seg);
                assert_eq!(offset, 0);
            }
            Err(e) => panic!("expected Corrupt, got {e}"),
            Ok(_) => panic!("expected Corrupt, got a log"),
        }
        // Nothing was deleted or rewritten.
        assert_eq!(fs::read(&seg).unwrap(), bytes);
    }
}
