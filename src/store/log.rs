//! The Raft log on disk: append-only segment files of CRC-checked records.
//!
//! A record is `[len: u32 LE][crc32 of payload: u32 LE][payload]`; the payload's first byte
//! says what it is. Every segment starts with a START record `(prev_index, prev_term)`: the
//! log continues after that entry, whatever older segments held beyond it. Entries follow as
//! JSON. Truncating a divergent suffix inside the active segment appends a TRUNCATE record;
//! a truncation reaching into an older segment starts a new segment instead. So every write
//! is an append (a crash can only tear the tail), and every segment header is a complete
//! starting point: compaction deletes whole leading segments, and a snapshot install starts
//! a fresh one.
//!
//! Segments are named `<sequence>-<first index>.log` and read in sequence order.
//!
//! The active segment is written ahead with zeros, a megabyte at a time
//! ([`PREALLOC_CHUNK`]): appends then overwrite blocks the file already has, so an fsync
//! is one data write and a cache flush, where an append that grows the file also commits
//! its new size to the filesystem's journal (a third of the disk writes per fsync; see
//! docs/benchmarks.md). The zeros after the last record are the end of the log. A segment
//! is cut back to its last record when the next one starts and at a clean stop
//! ([`LogStore::close`]), so only the newest segment of a member that crashed ends in
//! zeros. Over a file written in place, a crash in the middle of an fsync can leave any
//! of its sectors unwritten, not only the last ones: a record with a sector of zeros is
//! therefore a torn write too (as etcd's WAL judges it), where it may be one.
//!
//! Must not decide what to write: the node shell does, from the core's `Ready`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::raft::{Entry, LogId};
use crate::store::sync_dir;

/// Default size at which a new segment is started.
pub const SEGMENT_BYTES: u64 = 16 << 20;
const HEADER: usize = 8;
/// How far ahead of the last record the active segment is written with zeros. Segments
/// smaller than this (tests) are not written ahead.
pub const PREALLOC_CHUNK: u64 = 1 << 20;
/// The unit a disk writes whole or not at all: a torn write leaves whole sectors unwritten.
const SECTOR: usize = 512;
/// Largest record accepted when reading; a length above it means a corrupt header.
const MAX_RECORD: u32 = 256 << 20;
const KIND_ENTRY: u8 = 1;
const KIND_TRUNCATE: u8 = 2;
const KIND_START: u8 = 3;

struct Segment {
    seq: u64,
    path: PathBuf,
    /// The START record: the segment continues the log after this entry.
    prev: LogId,
}

/// What `LogStore::open` found on disk.
pub struct Recovered {
    pub store: LogStore,
    /// The entry the log starts after: `LogId::ZERO` for a log never compacted.
    pub start: LogId,
    /// The entries after `start`, contiguous.
    pub entries: Vec<Entry>,
    /// Things an operator should know about (a torn tail that was cut off), one per line.
    pub warnings: Vec<String>,
}

pub struct LogStore {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<Segment>,
    /// Positioned at `active_len` (not in append mode: the file runs on past it in zeros).
    active: BufWriter<File>,
    /// Where the next record goes: the end of the last one.
    active_len: u64,
    /// The length of the active file: `active_len` plus the zeros written ahead.
    file_end: u64,
    /// The last entry in the log, or the start if it is empty.
    last: LogId,
    /// Lowest index the active segment may truncate to with a TRUNCATE record.
    active_first: u64,
}

fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:020}-{first_index:020}.log")
}

fn start_payload(prev: LogId) -> Vec<u8> {
    let mut p = vec![KIND_START];
    p.extend_from_slice(&prev.index.to_le_bytes());
    p.extend_from_slice(&prev.term.to_le_bytes());
    p
}

pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(HEADER + payload.len());
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    rec.extend_from_slice(payload);
    rec
}

/// Whether `dir` holds any log segment (read only; a missing directory holds none).
pub fn has_segments(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let e = e.map_err(|e| Error::store(dir, e))?;
                if e.file_name().to_string_lossy().ends_with(".log") {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::store(dir, e)),
    }
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, reading every record back. Damage is an error
    /// naming the file, the offset and the way out, with one exception: after an unclean
    /// stop (`clean_stop` false), an incomplete last record or a zero-filled tail of the
    /// newest segment is what a crash during a write leaves, and is cut off (kept beside
    /// the log) with a warning. Such a record never finished its fsync, so this member
    /// never acknowledged it. After a clean stop every write was finished, so even that is
    /// damage: bytes were lost after they were written.
    pub fn open(dir: &Path, segment_bytes: u64, clean_stop: bool) -> Result<Recovered> {
        fs::create_dir_all(dir).map_err(|e| Error::store(dir, e))?;
        let found = segment_files(dir)?;

        let mut entries: Vec<Entry> = Vec::new();
        let mut start = LogId::ZERO;
        let mut warnings = Vec::new();
        let mut segments = Vec::new();
        // Where the newest segment's records end (zeros written ahead may follow).
        let mut log_end = 0;
        let count = found.len();
        for (i, (seq, path)) in found.into_iter().enumerate() {
            let may_be_torn = i + 1 == count && !clean_stop;
            let empty = fs::metadata(&path)
                .map_err(|e| Error::store(&path, e))?
                .len()
                == 0;
            if may_be_torn && empty {
                // A segment being created when the node crashed (its START record was never
                // durable, and nothing can follow it): the log continues in the one before.
                fs::remove_file(&path).map_err(|e| Error::store(&path, e))?;
                sync_dir(dir)?;
                warnings.push(format!(
                    "{}: after an unclean stop, removed an empty segment that was being created",
                    path.display()
                ));
                continue;
            }
            let (prev, end) = read_segment(
                &path,
                may_be_torn,
                true,
                &mut start,
                &mut entries,
                &mut warnings,
            )?;
            segments.push(Segment { seq, path, prev });
            log_end = end;
        }
        let last = entries.last().map_or(start, Entry::id);

        if segments.is_empty() {
            let (seg, len) = create_segment(dir, 1, last)?;
            segments.push(seg);
            log_end = len;
        }
        let active = segments.last().expect("at least one segment");
        let (file, file_end) = open_at(&active.path, log_end)?;
        let active_first = active.prev.index + 1;
        Ok(Recovered {
            store: LogStore {
                dir: dir.to_path_buf(),
                segment_bytes,
                segments,
                active: BufWriter::with_capacity(1 << 20, file),
                active_len: log_end,
                file_end,
                last,
                active_first,
            },
            start,
            entries,
            warnings,
        })
    }

    /// Reads the log of a stopped member without writing anything (for `nacosctl dump`):
    /// the start point, the entries and the warnings. A tail a crash explains (after an
    /// unclean stop) is read up to and reported, not cut; an empty segment being created
    /// is skipped. Any other damage is the same error [`LogStore::open`] gives.
    pub fn read_only(dir: &Path, clean_stop: bool) -> Result<(LogId, Vec<Entry>, Vec<String>)> {
        if !dir.exists() {
            return Ok((LogId::ZERO, Vec::new(), Vec::new()));
        }
        let found = segment_files(dir)?;
        let (mut start, mut entries, mut warnings) = (LogId::ZERO, Vec::new(), Vec::new());
        let count = found.len();
        for (i, (_, path)) in found.into_iter().enumerate() {
            let may_be_torn = i + 1 == count && !clean_stop;
            let len = fs::metadata(&path)
                .map_err(|e| Error::store(&path, e))?
                .len();
            if may_be_torn && len == 0 {
                continue;
            }
            read_segment(
                &path,
                may_be_torn,
                false,
                &mut start,
                &mut entries,
                &mut warnings,
            )?;
        }
        Ok((start, entries, warnings))
    }

    /// Buffers a truncation (if any) and entries; durable only after [`LogStore::sync`].
    /// `truncate_after` is the last entry kept: its term is needed when the truncation
    /// reaches into an older segment and a new one must say where the log continues.
    pub fn append(&mut self, truncate_after: Option<LogId>, entries: &[Entry]) -> Result<()> {
        if let Some(keep) = truncate_after {
            let from = keep.index + 1;
            if from < self.active_first {
                self.roll(keep)?;
            } else {
                let mut payload = vec![KIND_TRUNCATE];
                payload.extend_from_slice(&from.to_le_bytes());
                self.write_record(&payload)?;
            }
            if from <= self.last.index {
                self.last = keep;
            }
        }
        for e in entries {
            if self.active_len >= self.segment_bytes {
                self.roll(self.last)?;
            }
            let mut payload = vec![KIND_ENTRY];
            serde_json::to_writer(&mut payload, e).expect("entries always serialise");
            self.write_record(&payload)?;
            self.last = e.id();
        }
        Ok(())
    }

    fn write_record(&mut self, payload: &[u8]) -> Result<()> {
        let rec = frame(payload);
        let end = self.active_len + rec.len() as u64;
        if end > self.file_end {
            self.write_ahead(end)?;
        }
        let path = &self.segments.last().expect("active segment").path;
        self.active
            .write_all(&rec)
            .map_err(|e| Error::store(path, e))?;
        self.active_len += rec.len() as u64;
        Ok(())
    }

    /// Writes zeros past the end of the active segment, up to the next multiple of
    /// [`PREALLOC_CHUNK`] after `end` (at most to the segment's size), so that the records
    /// up to there overwrite blocks the file has. They go straight to the file, past
    /// anything still buffered, and become durable with the next fsync, which then also
    /// commits the file's new size once per chunk instead of once per fsync.
    fn write_ahead(&mut self, end: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        if self.segment_bytes < PREALLOC_CHUNK {
            return Ok(());
        }
        let target = end
            .div_ceil(PREALLOC_CHUNK)
            .saturating_mul(PREALLOC_CHUNK)
            .min(self.segment_bytes.max(end));
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let path = &self.segments.last().expect("active segment").path;
        let mut at = self.file_end.max(self.active_len);
        while at < target {
            let n = (target - at).min(ZEROS.len() as u64) as usize;
            self.active
                .get_ref()
                .write_all_at(&ZEROS[..n], at)
                .map_err(|e| Error::store(path, e))?;
            at += n as u64;
        }
        self.file_end = target;
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

    /// Makes the active segment durable and cuts off the zeros written ahead of its last
    /// record, so that every segment but the active one ends with its last record, and so
    /// does the active one after a clean stop. The cut is durable before anything follows
    /// (a new segment, or the clean-stop mark).
    fn seal(&mut self) -> Result<()> {
        self.sync()?;
        if self.file_end > self.active_len {
            let path = &self.segments.last().expect("active segment").path;
            let file = self.active.get_ref();
            file.set_len(self.active_len)
                .and_then(|_| file.sync_all())
                .map_err(|e| Error::store(path, e))?;
            self.file_end = self.active_len;
        }
        Ok(())
    }

    /// Ends the log's use at a clean stop: everything durable, the active segment cut back
    /// to its last record. A log dropped without it reads as after a crash (zeros after
    /// the last record), which only an unclean stop may leave.
    pub fn close(mut self) -> Result<()> {
        self.seal()
    }

    /// Starts a new segment that continues the log after `prev`.
    fn roll(&mut self, prev: LogId) -> Result<()> {
        self.seal()?;
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let (seg, len) = create_segment(&self.dir, seq, prev)?;
        let (file, file_end) = open_at(&seg.path, len)?;
        self.active_len = len;
        self.file_end = file_end;
        self.active = BufWriter::with_capacity(1 << 20, file);
        self.active_first = prev.index + 1;
        self.segments.push(seg);
        Ok(())
    }

    /// Deletes the oldest segments whose every entry is at or below `upto` (the log must
    /// keep everything after it). Returns where the log now starts.
    pub fn compact(&mut self, upto: u64) -> Result<LogId> {
        // Segment i can go when segment i+1 starts at or below `upto`: everything i held
        // past that point was superseded by i+1's START.
        let mut drop = 0;
        while drop + 1 < self.segments.len() && self.segments[drop + 1].prev.index <= upto {
            drop += 1;
        }
        for seg in self.segments.drain(..drop) {
            fs::remove_file(&seg.path).map_err(|e| Error::store(&seg.path, e))?;
        }
        if drop > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(self.segments[0].prev)
    }

    /// Replaces the whole log with an empty one continuing after `start` (a snapshot install).
    pub fn reset(&mut self, start: LogId) -> Result<()> {
        self.roll(start)?;
        self.last = start;
        let keep = self.segments.len() - 1;
        for seg in self.segments.drain(..keep) {
            fs::remove_file(&seg.path).map_err(|e| Error::store(&seg.path, e))?;
        }
        sync_dir(&self.dir)
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

/// Opens a segment for writing at `at` (its records' end) and returns its length.
fn open_at(path: &Path, at: u64) -> Result<(File, u64)> {
    use std::io::{Seek, SeekFrom};
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::store(path, e))?;
    let len = file.metadata().map_err(|e| Error::store(path, e))?.len();
    file.seek(SeekFrom::Start(at))
        .map_err(|e| Error::store(path, e))?;
    Ok((file, len.max(at)))
}

/// Creates a segment holding its START record, durably, and returns it with its length.
fn create_segment(dir: &Path, seq: u64, prev: LogId) -> Result<(Segment, u64)> {
    let path = dir.join(segment_name(seq, prev.index + 1));
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::store(&path, e))?;
    let start = frame(&start_payload(prev));
    f.write_all(&start)
        .and_then(|_| f.sync_data())
        .map_err(|e| Error::store(&path, e))?;
    sync_dir(dir)?;
    Ok((Segment { seq, path, prev }, start.len() as u64))
}

/// What a crash in the middle of a write can leave at the end of the newest segment
/// (`rest`: from the first bad record, at byte `off` of the file, to the end of the file):
/// a record cut short, a run of zeros to the end of the file that begins inside the last
/// record (pages of the last write allocated but never written, as a power loss leaves),
/// or, over zeros written ahead, a record some of whose sectors were never written.
/// `None`: anything else, such as a complete record whose checksum fails with every
/// sector written, which no crash explains.
fn torn_tail(rest: &[u8], off: usize) -> Option<&'static str> {
    let zeros_from = rest.len() - rest.iter().rev().take_while(|&&b| b == 0).count();
    if zeros_from == 0 {
        return Some("a zero-filled tail");
    }
    if rest.len() < HEADER {
        return Some("an incomplete record header");
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
    let end = if len > MAX_RECORD {
        // A length no record has: torn only if part of the header was never written.
        HEADER
    } else {
        HEADER + len as usize
    };
    if len <= MAX_RECORD && rest.len() < end {
        return Some("a record cut short");
    }
    if zeros_from < end {
        return Some("a record whose end was never written (zeros to the end of the file)");
    }
    // The record's bytes sector by sector (the first and last parts may share a sector
    // with the records around it): one part all zeros is a sector the crash left unwritten.
    let mut at = 0;
    while at < end {
        let next = ((off + at) / SECTOR + 1) * SECTOR - off;
        if rest[at..next.min(end)].iter().all(|&b| b == 0) {
            return Some("a record with a sector that was never written");
        }
        at = next;
    }
    None
}

/// The segment files of the log directory `dir`, in order. A `.log` file whose name is not
/// `<sequence>-<first index>.log` is an error: it is not known what it holds.
fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::store(dir, e))? {
        let entry = entry.map_err(|e| Error::store(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".log") else {
            continue;
        };
        let seq = stem
            .split_once('-')
            .and_then(|(seq, first)| first.parse::<u64>().ok().and(seq.parse::<u64>().ok()));
        match seq {
            Some(seq) => found.push((seq, entry.path())),
            None => {
                return Err(Error::Corrupt {
                    path: entry.path(),
                    offset: 0,
                    reason: "not a log segment name (<sequence>-<first index>.log); move it out of the log directory".into(),
                })
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Reads one segment into `entries` (applying its START and TRUNCATE records) and returns
/// its START and where its records end. `may_be_torn`: the newest segment after an unclean
/// stop, whose tail may be a write that never finished (see `torn_tail`) and whose records
/// may be followed by the zeros written ahead of them.
fn read_segment(
    path: &Path,
    may_be_torn: bool,
    repair: bool,
    start: &mut LogId,
    entries: &mut Vec<Entry>,
    warnings: &mut Vec<String>,
) -> Result<(LogId, u64)> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::store(path, e))?;
    let mut off = 0usize;
    let mut seg_start: Option<LogId> = None;
    while off < bytes.len() {
        let corrupt = |reason: String| Error::Corrupt {
            path: path.to_path_buf(),
            offset: off as u64,
            reason: format!("{reason}. {}", super::WAY_OUT),
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
        // A zero header passes the checksum (crc32 of nothing is 0): zeros are never a record.
        let zero_header = header_ok && bytes[off..off + HEADER].iter().all(|&b| b == 0);
        if !crc_ok || zero_header {
            // What the crash left written: the bytes worth keeping for inspection.
            let written = bytes.len() - bytes[off..].iter().rev().take_while(|&&b| b == 0).count();
            if let (true, Some(prev), true) = (may_be_torn, seg_start, written == off) {
                // The zeros written ahead of the records (module doc): the log ends here.
                return Ok((prev, off as u64));
            }
            let torn = torn_tail(&bytes[off..], off);
            if let (true, Some(what), Some(prev), false) = (may_be_torn, torn, seg_start, repair) {
                // Read only: the torn tail is left where it is (the node cuts it at its start).
                warnings.push(format!(
                    "{}: the last {} bytes are {what}, which a crash explains; read up to byte {off}",
                    path.display(),
                    written - off
                ));
                return Ok((prev, off as u64));
            }
            if let (true, Some(what), Some(prev)) = (may_be_torn, torn, seg_start) {
                // etcd's WAL repairs its tail the same way; the bytes are kept for inspection.
                let keep = path.with_extension(format!("log.torn-{off}"));
                fs::write(&keep, &bytes[off..written]).map_err(|e| Error::store(&keep, e))?;
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::store(path, e))?;
                f.set_len(off as u64)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| Error::store(path, e))?;
                warnings.push(format!(
                    "{}: after an unclean stop, cut {what} at byte {off} ({} bytes, saved to {}): a write that never finished its fsync, which this member therefore never acknowledged",
                    path.display(),
                    written - off,
                    keep.display()
                ));
                return Ok((prev, off as u64));
            }
            return Err(corrupt(match torn {
                Some(what) if seg_start.is_some() => format!(
                    "{what} at the end of the log, but the node stopped cleanly or more segments follow, so it was written completely once: bytes were lost after they were written, and acknowledged writes with them"
                ),
                _ if !complete => "record is cut short and more segments follow".into(),
                _ if zero_header => "zeros where a record should be".into(),
                _ => "checksum mismatch in a complete record (the disk changed what was written)".into(),
            }));
        }
        let payload = &bytes[off + HEADER..off + HEADER + len as usize];
        match (payload.first(), seg_start) {
            (Some(&KIND_START), None) if payload.len() == 17 => {
                let prev = LogId::new(
                    u64::from_le_bytes(payload[1..9].try_into().expect("8 bytes")),
                    u64::from_le_bytes(payload[9..17].try_into().expect("8 bytes")),
                );
                // The log continues after `prev`: drop what older segments held past it,
                // or start over there if they did not reach it (compacted, or a reset).
                let have = entries.last().map_or(*start, Entry::id);
                if prev.index >= start.index && prev.index <= have.index {
                    entries.retain(|e| e.index <= prev.index);
                    let at = entries.last().map_or(*start, Entry::id);
                    if at != prev {
                        return Err(corrupt(format!(
                            "segment continues after entry {} of term {}, but the log holds term {} there",
                            prev.index, prev.term, at.term
                        )));
                    }
                } else {
                    entries.clear();
                    *start = prev;
                }
                seg_start = Some(prev);
            }
            (_, None) => return Err(corrupt("segment does not begin with a START record".into())),
            (Some(&KIND_ENTRY), Some(_)) => {
                let e: Entry = serde_json::from_slice(&payload[1..])
                    .map_err(|e| corrupt(format!("entry does not parse: {e}")))?;
                let expected = entries.last().map_or(start.index + 1, |l| l.index + 1);
                if e.index != expected {
                    return Err(corrupt(format!(
                        "entry {} follows entry {}: the log has a gap",
                        e.index,
                        expected - 1
                    )));
                }
                entries.push(e);
            }
            (Some(&KIND_TRUNCATE), Some(_)) if payload.len() == 9 => {
                let from = u64::from_le_bytes(payload[1..9].try_into().expect("8 bytes"));
                entries.retain(|e| e.index < from);
            }
            _ => return Err(corrupt("unknown record kind".into())),
        }
        off += HEADER + len as usize;
    }
    let prev = seg_start.ok_or_else(|| Error::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: format!(
            "empty segment (no START record), which no crash leaves here. {}",
            super::WAY_OUT
        ),
    })?;
    Ok((prev, bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Command;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            command: Command::publish(format!("k{index}"), serde_json::json!(index)),
        }
    }

    fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
        (from..=to).map(|i| entry(i, term)).collect()
    }

    fn open(dir: &Path, segment_bytes: u64) -> Recovered {
        LogStore::open(dir, segment_bytes, false).unwrap()
    }

    #[test]
    fn append_truncate_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = open(dir.path(), SEGMENT_BYTES);
        assert!(r.entries.is_empty());
        r.store.append(None, &entries(1, 3, 1)).unwrap();
        r.store.sync().unwrap();
        r.store
            .append(Some(LogId::new(1, 1)), &[entry(2, 2)])
            .unwrap();
        r.store.sync().unwrap();
        drop(r);
        let r = open(dir.path(), SEGMENT_BYTES);
        assert_eq!(r.entries, vec![entry(1, 1), entry(2, 2)]);
        assert_eq!(r.start, LogId::ZERO);
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn truncation_into_an_older_segment_rolls_and_survives_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = open(dir.path(), 1); // every append rolls a new segment
        r.store.append(None, &entries(1, 5, 1)).unwrap();
        r.store
            .append(Some(LogId::new(2, 1)), &entries(3, 6, 2))
            .unwrap();
        r.store.sync().unwrap();
        drop(r);
        let mut r = open(dir.path(), 1);
        let mut want = entries(1, 2, 1);
        want.extend(entries(3, 6, 2));
        assert_eq!(r.entries, want);
        assert_eq!(r.store.compact(4).unwrap(), LogId::new(4, 2));
        drop(r);
        let r = open(dir.path(), 1);
        assert_eq!(r.start, LogId::new(4, 2));
        assert_eq!(r.entries, entries(5, 6, 2));
    }

    #[test]
    fn compaction_bounds_the_segments_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = open(dir.path(), 4096);
        for i in 0..50 {
            r.store
                .append(None, &entries(i * 20 + 1, i * 20 + 20, 1))
                .unwrap();
        }
        r.store.sync().unwrap();
        let before = r.store.disk_bytes();
        let start = r.store.compact(900).unwrap();
        assert!(start.index <= 900 && start.index > 800, "{start:?}");
        assert!(r.store.disk_bytes() < before / 5);
        drop(r);
        let r = open(dir.path(), 4096);
        assert_eq!(r.start, start);
        assert_eq!(r.entries, entries(start.index + 1, 1000, 1));
    }

    #[test]
    fn reset_starts_over_after_a_snapshot_point() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = open(dir.path(), SEGMENT_BYTES);
        r.store.append(None, &entries(1, 10, 1)).unwrap();
        r.store.reset(LogId::new(500, 7)).unwrap();
        r.store.append(None, &[entry(501, 7)]).unwrap();
        r.store.sync().unwrap();
        drop(r);
        let r = open(dir.path(), SEGMENT_BYTES);
        assert_eq!(
            (r.start, r.entries),
            (LogId::new(500, 7), vec![entry(501, 7)])
        );
    }

    fn only_segment(dir: &Path) -> PathBuf {
        dir.join(segment_name(1, 1))
    }

    /// The newest segment of a log holding entries 1..=4, closed (so it ends with its last
    /// record), then damaged by `damage`.
    fn damaged(damage: impl FnOnce(&mut Vec<u8>)) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut r = open(dir.path(), SEGMENT_BYTES);
        r.store.append(None, &entries(1, 4, 1)).unwrap();
        r.store.close().unwrap();
        let seg = only_segment(dir.path());
        let mut bytes = fs::read(&seg).unwrap();
        damage(&mut bytes);
        fs::write(&seg, &bytes).unwrap();
        dir
    }

    fn corrupt_reason(dir: &Path, clean_stop: bool) -> String {
        match LogStore::open(dir, SEGMENT_BYTES, clean_stop) {
            Err(Error::Corrupt { reason, .. }) => {
                assert!(reason.contains("move this data dir aside"), "{reason}");
                reason
            }
            Err(e) => panic!("expected Corrupt, got {e}"),
            Ok(r) => panic!("expected Corrupt, got {} entries", r.entries.len()),
        }
    }

    #[test]
    fn after_an_unclean_stop_a_torn_tail_is_cut_and_kept() {
        // (damage, entries left, what the warning calls it)
        type Damage = fn(&mut Vec<u8>);
        let cases: [(Damage, usize, &str); 3] = [
            (|b| b.truncate(b.len() - 3), 3, "cut short"),
            (|b| b.truncate(b.len() - 30), 3, "cut short"),
            (
                |b| {
                    let n = b.len();
                    b[n - 20..].fill(0);
                },
                3,
                "never written",
            ),
        ];
        for (damage, left, what) in cases {
            let dir = damaged(damage);
            let r = open(dir.path(), SEGMENT_BYTES);
            assert_eq!(r.entries, entries(1, left as u64, 1), "{what}");
            assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
            assert!(r.warnings[0].contains(what), "{}", r.warnings[0]);
            assert!(
                r.warnings[0].contains("never acknowledged"),
                "{}",
                r.warnings[0]
            );
            // The log keeps working after the cut.
            let mut store = r.store;
            store.append(None, &[entry(left as u64 + 1, 3)]).unwrap();
            store.sync().unwrap();
            drop(store);
            let again = open(dir.path(), SEGMENT_BYTES);
            assert_eq!(again.entries.len(), left + 1);
            assert!(again.warnings.is_empty());
        }
    }

    /// A clean stop finishes every write: a torn-looking tail then means bytes were lost
    /// after they were written, so nothing is cut (three acknowledged writes once were).
    #[test]
    fn after_a_clean_stop_a_torn_tail_is_damage() {
        for damage in [
            (|b: &mut Vec<u8>| b.truncate(b.len() - 30)) as fn(&mut Vec<u8>),
            |b| b.extend([0u8; 300]),
        ] {
            let dir = damaged(damage);
            let before = fs::read(only_segment(dir.path())).unwrap();
            let reason = corrupt_reason(dir.path(), true);
            assert!(reason.contains("stopped cleanly"), "{reason}");
            assert_eq!(fs::read(only_segment(dir.path())).unwrap(), before);
        }
    }

    /// A segment whose creation a crash interrupted is empty: removed after an unclean stop,
    /// damage after a clean one.
    #[test]
    fn an_empty_newest_segment_is_removed_only_after_an_unclean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = open(dir.path(), SEGMENT_BYTES);
        r.store.append(None, &entries(1, 3, 1)).unwrap();
        r.store.close().unwrap();
        let empty = dir.path().join(segment_name(2, 4));
        fs::write(&empty, b"").unwrap();
        assert!(corrupt_reason(dir.path(), true).contains("empty segment"));
        let r = open(dir.path(), SEGMENT_BYTES);
        assert_eq!(r.entries, entries(1, 3, 1));
        assert!(
            r.warnings[0].contains("removed an empty segment"),
            "{:?}",
            r.warnings
        );
        assert!(!empty.exists());
    }

    fn len_of(path: &Path) -> u64 {
        fs::metadata(path).unwrap().len()
    }

    /// Where the records of a segment's `bytes` end: after its last byte that is not a
    /// zero written ahead (a record never ends in a zero byte: entries are JSON).
    fn records_end(bytes: &[u8]) -> usize {
        bytes.iter().rposition(|&b| b != 0).unwrap() + 1
    }

    /// An entry of about `bytes` bytes, so that records span several sectors.
    fn big_entry(index: u64, bytes: usize) -> Entry {
        Entry {
            index,
            term: 1,
            command: Command::publish(format!("k{index}"), serde_json::json!("v".repeat(bytes))),
        }
    }

    /// Appends write zeros ahead and then overwrite them, so the file keeps its length
    /// across fsyncs; a crash leaves the zeros, which end the log without a warning; a
    /// clean stop cuts them, after which a zero tail is damage again.
    #[test]
    fn appends_overwrite_zeros_written_ahead_which_end_the_log_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let seg = only_segment(dir.path());
        let mut r = open(dir.path(), SEGMENT_BYTES);
        r.store.append(None, &entries(1, 2, 1)).unwrap();
        r.store.sync().unwrap();
        assert_eq!(len_of(&seg), PREALLOC_CHUNK, "written ahead to one chunk");
        for i in 3..=100 {
            r.store.append(None, &[entry(i, 1)]).unwrap();
            r.store.sync().unwrap();
            assert_eq!(len_of(&seg), PREALLOC_CHUNK, "appends overwrite in place");
        }
        drop(r); // a crash

        let mut r = open(dir.path(), SEGMENT_BYTES);
        assert_eq!(r.entries, entries(1, 100, 1));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(len_of(&seg), PREALLOC_CHUNK, "nothing was cut");
        // Appends go on after the last record, not after the zeros.
        r.store.append(None, &[entry(101, 2)]).unwrap();
        r.store.sync().unwrap();
        drop(r);
        let r = open(dir.path(), SEGMENT_BYTES);
        assert_eq!(r.entries.len(), 101);
        let (_, read, warnings) = LogStore::read_only(dir.path(), false).unwrap();
        assert_eq!((read.len(), warnings.len()), (101, 0), "{warnings:?}");

        // A clean stop ends the segment with its last record.
        r.store.close().unwrap();
        let bytes = fs::read(&seg).unwrap();
        assert_ne!(bytes.last(), Some(&0), "cut back to the last record");
        let r = LogStore::open(dir.path(), SEGMENT_BYTES, true).unwrap();
        assert_eq!((r.entries.len(), r.warnings.len()), (101, 0));
        drop(r);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[0u8; 300]).unwrap();
        drop(f);
        assert!(corrupt_reason(dir.path(), true).contains("stopped cleanly"));
    }

    /// A new segment starts when the last one is full; the full one is cut back to its
    /// last record first, so only the newest segment may end in zeros.
    #[test]
    fn a_full_segment_is_cut_to_its_last_record_before_the_next_starts() {
        let dir = tempfile::tempdir().unwrap();
        let segment_bytes = 2 * PREALLOC_CHUNK;
        let mut r = open(dir.path(), segment_bytes);
        let mut index = 0;
        while segment_files(dir.path()).unwrap().len() < 3 {
            index += 1;
            r.store.append(None, &[big_entry(index, 20_000)]).unwrap();
            r.store.sync().unwrap();
        }
        drop(r); // a crash
        let found = segment_files(dir.path()).unwrap();
        for (_, path) in &found[..2] {
            let bytes = fs::read(path).unwrap();
            assert_ne!(bytes.last(), Some(&0), "{} ends in zeros", path.display());
            assert!(bytes.len() as u64 >= segment_bytes);
        }
        let r = open(dir.path(), segment_bytes);
        assert_eq!(r.entries.len() as u64, index);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    /// A log of `first`, fsynced, then `then`, fsynced and dropped as in a crash (or closed,
    /// as at a clean stop): its dir, its segment and where `first`'s record ends.
    fn first_then(
        first: Entry,
        then: &[Entry],
        clean: bool,
    ) -> (tempfile::TempDir, PathBuf, usize) {
        let dir = tempfile::tempdir().unwrap();
        let seg = only_segment(dir.path());
        let mut r = open(dir.path(), SEGMENT_BYTES);
        r.store.append(None, &[first]).unwrap();
        r.store.sync().unwrap();
        let from = records_end(&fs::read(&seg).unwrap());
        r.store.append(None, then).unwrap();
        if clean {
            r.store.close().unwrap();
        } else {
            r.store.sync().unwrap();
        }
        (dir, seg, from)
    }

    /// Over zeros written ahead, a crash in the middle of an fsync can leave any sector of
    /// the write unwritten: the record with a sector of zeros is cut as torn (none of it
    /// was acknowledged, nor anything after it), with its bytes kept. After a clean stop
    /// the same bytes are damage.
    #[test]
    fn a_record_with_a_sector_never_written_is_a_torn_write_after_a_crash() {
        for clean in [false, true] {
            let (dir, seg, from) = first_then(
                big_entry(1, 3000),
                &[big_entry(2, 3000), entry(3, 1)],
                clean,
            );
            // The second sector that lies wholly inside entry 2's record reads as zeros.
            let mut bytes = fs::read(&seg).unwrap();
            let sector = (from / SECTOR + 2) * SECTOR;
            bytes[sector..sector + SECTOR].fill(0);
            fs::write(&seg, &bytes).unwrap();
            if clean {
                let reason = corrupt_reason(dir.path(), true);
                assert!(reason.contains("sector that was never written"), "{reason}");
                assert_eq!(fs::read(&seg).unwrap(), bytes, "nothing was cut");
                continue;
            }
            let r = open(dir.path(), SEGMENT_BYTES);
            assert_eq!(r.entries, vec![big_entry(1, 3000)]);
            assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
            assert!(
                r.warnings[0].contains("sector that was never written"),
                "{}",
                r.warnings[0]
            );
            assert_eq!(len_of(&seg), from as u64, "cut at the torn record");
            let kept = fs::read(seg.with_extension(format!("log.torn-{from}"))).unwrap();
            assert_eq!(kept[..], bytes[from..from + kept.len()]);
            assert_ne!(
                kept.last(),
                Some(&0),
                "the zeros after the records are not kept"
            );
        }
    }

    /// A lost first sector of a record (its header reads as zeros) with later sectors
    /// written is a torn write too, not "zeros where a record should be".
    #[test]
    fn a_record_whose_header_was_never_written_is_torn_after_a_crash() {
        let (dir, seg, from) = first_then(entry(1, 1), &[big_entry(2, 3000)], false);
        let mut bytes = fs::read(&seg).unwrap();
        let sector_end = (from / SECTOR + 1) * SECTOR;
        bytes[from..sector_end].fill(0);
        fs::write(&seg, &bytes).unwrap();
        let r = open(dir.path(), SEGMENT_BYTES);
        assert_eq!(r.entries, vec![entry(1, 1)]);
        assert!(
            r.warnings[0].contains("sector that was never written"),
            "{:?}",
            r.warnings
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// A crash in the middle of writing over zeros written ahead: any sector of what was
        /// written after the last fsync may come back unwritten (the part of it past the
        /// fsynced bytes reads as zeros). The log always opens, keeps every fsynced entry,
        /// holds nothing that was not appended, and goes on working.
        #[test]
        fn a_crash_loses_no_fsynced_entry_whatever_sectors_it_leaves_unwritten(
            batches in proptest::collection::vec(proptest::collection::vec(0usize..2500, 1..4), 1..8),
            synced in 0usize..8,
            lost in proptest::collection::vec(proptest::bool::ANY, 64),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let seg = only_segment(dir.path());
            let mut r = open(dir.path(), SEGMENT_BYTES);
            let synced = synced.min(batches.len());
            // The START record is fsynced when the segment is created.
            let mut synced_end = frame(&start_payload(LogId::ZERO)).len();
            let (mut all, mut index, mut synced_count) = (Vec::new(), 0, 0);
            for (i, batch) in batches.iter().enumerate() {
                let entries: Vec<Entry> = batch
                    .iter()
                    .map(|&bytes| {
                        index += 1;
                        big_entry(index, bytes)
                    })
                    .collect();
                r.store.append(None, &entries).unwrap();
                all.extend(entries);
                // Every batch reaches the file; only the first `synced` count as fsynced.
                r.store.sync().unwrap();
                if i < synced {
                    synced_end = r.store.active_len as usize;
                    synced_count = all.len();
                }
            }
            drop(r); // the crash
            let mut bytes = fs::read(&seg).unwrap();
            let written_end = records_end(&bytes);
            let mut sector = synced_end / SECTOR;
            while sector * SECTOR < written_end {
                if lost[sector % lost.len()] {
                    let from = (sector * SECTOR).max(synced_end);
                    bytes[from..(sector + 1) * SECTOR].fill(0);
                }
                sector += 1;
            }
            fs::write(&seg, &bytes).unwrap();

            let r = LogStore::open(dir.path(), SEGMENT_BYTES, false).unwrap();
            proptest::prop_assert!(r.entries.len() >= synced_count, "{} < {synced_count}", r.entries.len());
            proptest::prop_assert_eq!(&r.entries[..], &all[..r.entries.len()]);
            proptest::prop_assert!(r.warnings.len() <= 1, "{:?}", r.warnings);
            let kept = r.entries.len() as u64;
            let mut store = r.store;
            store.append(None, &[entry(kept + 1, 2)]).unwrap();
            store.sync().unwrap();
            drop(store);
            let again = open(dir.path(), SEGMENT_BYTES);
            proptest::prop_assert_eq!(again.entries.len() as u64, kept + 1);
            proptest::prop_assert!(again.warnings.is_empty(), "{:?}", again.warnings);
        }
    }

    /// A complete, fsynced record whose checksum fails is not a torn write, even at the end.
    #[test]
    fn a_flipped_bit_in_the_last_record_is_damage() {
        let dir = damaged(|b| {
            let n = b.len();
            b[n - 2] ^= 0x10;
        });
        let reason = corrupt_reason(dir.path(), false);
        assert!(reason.contains("checksum mismatch"), "{reason}");
    }

    #[test]
    fn corruption_in_the_middle_is_an_error_naming_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = open(dir.path(), SEGMENT_BYTES);
        r.store.append(None, &[entry(1, 1), entry(2, 1)]).unwrap();
        r.store.sync().unwrap();
        drop(r);
        let seg = only_segment(dir.path());
        let mut bytes = fs::read(&seg).unwrap();
        let first_entry = HEADER + 17;
        bytes[first_entry + HEADER + 2] ^= 0xff; // inside the first entry's payload
        fs::write(&seg, &bytes).unwrap();
        match LogStore::open(dir.path(), SEGMENT_BYTES, false) {
            Err(Error::Corrupt { path, offset, .. }) => {
                assert_eq!(path, seg);
                assert_eq!(offset, first_entry as u64);
            }
            Err(e) => panic!("expected Corrupt, got {e}"),
            Ok(_) => panic!("expected Corrupt, got a log"),
        }
        // Nothing was deleted or rewritten.
        assert_eq!(fs::read(&seg).unwrap(), bytes);
    }
}
