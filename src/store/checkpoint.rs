//! The checkpoint file: the whole datum set in one file, written and read sequentially, so
//! a node with a million keys starts by reading one file instead of a million.
//!
//! Layout: the magic `NACOSCKP`, then records framed like the log's,
//! `[len: u32 LE][crc32 of payload: u32 LE][payload]`, whose first payload byte says what
//! they are:
//! - HEADER: format version (u32 LE) and `base` (u64 LE), the applied index the datum files
//!   were synced at when the checkpoint began;
//! - SESSIONS (version 2): client sessions as JSON lines, exact at `base` (their meaning is
//!   `node::sessions`'); before any DATUMS;
//! - DATUMS: datums as JSON lines (the datum file format), in strictly increasing key order;
//! - END: the datum count (u64 LE) and `end` (u64 LE), the applied index when the last datum
//!   was read. Nothing may follow it.
//!
//! The file is written under a temp name, fsynced and renamed into place; the one it replaces
//! is kept as `checkpoint.prev`, and the log is compacted only up to that older one, so a
//! damaged checkpoint (a bad disk block) still leaves a complete way to start: the previous
//! checkpoint and the log after it. A crash between the two renames leaves only the previous
//! one, which is also complete. A checkpoint is *fuzzy* like a snapshot stream: datums were
//! read from the live map while writes went on, so it holds everything up to `base` and, per
//! key, possibly later writes (each datum carries its index). Start-up replays the log after
//! `base` over it with per-key skipping; from `end` on the replayed state is exact.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;

use crate::datum::Datum;
use crate::error::{Error, Result};
use crate::store::log::frame;
use crate::store::{remove_file_if_present, sync_dir};

const FILE: &str = "checkpoint";
const PREVIOUS: &str = "checkpoint.prev";
const TMP: &str = ".checkpoint.tmp";
const MAGIC: &[u8; 8] = b"NACOSCKP";
/// Written now; version 1 (no SESSIONS records) is still read.
const VERSION: u32 = 2;
const KIND_HEADER: u8 = 1;
const KIND_DATUMS: u8 = 2;
const KIND_END: u8 = 3;
const KIND_SESSIONS: u8 = 4;
/// A DATUMS record is closed once it passes this size: large enough for sequential I/O,
/// small enough that parsing spreads over every core.
const RECORD_BYTES: usize = 1 << 20;
/// Largest record accepted when reading; a length above it means a corrupt header.
const MAX_RECORD: u32 = 64 << 20;
/// How much of a checkpoint is handed to the device at a time (see `CheckpointWriter::pace`).
const WRITEBACK_STEP: u64 = 1 << 20;

/// Where the newest checkpoint of a data dir lives.
pub fn checkpoint_path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Where the checkpoint before it lives.
pub fn previous_path(data_dir: &Path) -> PathBuf {
    data_dir.join(PREVIOUS)
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Checkpoint {
    /// Everything up to this index is reflected (and the datum files were synced at it).
    pub base: u64,
    /// The applied index when the last datum was read: replay is exact from here on.
    pub end: u64,
    /// Sorted by key.
    pub datums: Vec<Datum>,
    /// Session records, one JSON text each, exact at `base`.
    pub sessions: Vec<String>,
}

/// Writes a checkpoint under a temp name; `finish` puts it in place.
pub struct CheckpointWriter {
    dir: PathBuf,
    out: BufWriter<File>,
    record: Vec<u8>,
    last_key: Option<String>,
    count: u64,
    bytes: u64,
    /// Bytes handed to the device so far, and of those, bytes known written.
    submitted: u64,
    written: u64,
}

impl CheckpointWriter {
    pub fn create(data_dir: &Path, base: u64) -> Result<CheckpointWriter> {
        let tmp = data_dir.join(TMP);
        let file = File::create(&tmp).map_err(|e| Error::store(&tmp, e))?;
        let mut w = CheckpointWriter {
            dir: data_dir.to_path_buf(),
            out: BufWriter::with_capacity(RECORD_BYTES + 64, file),
            record: Vec::with_capacity(RECORD_BYTES + 4096),
            last_key: None,
            count: 0,
            bytes: 0,
            submitted: 0,
            written: 0,
        };
        w.put(MAGIC)?;
        let mut header = vec![KIND_HEADER];
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&base.to_le_bytes());
        w.put(&frame(&header))?;
        w.record.push(KIND_DATUMS);
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.bytes += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .map_err(|e| Error::store(self.dir.join(TMP), e))?;
        self.pace()
    }

    /// Writes the checkpoint out as it goes, a step at a time: each step is handed to the
    /// device once written, after waiting for the step before. Left to the final fsync,
    /// tens of megabytes reach the device at once, and every log fsync on that device
    /// queues behind them: 90 MB written and fsynced beside a put run (three members'
    /// checkpoints of 240,000 datums) cut its commits to a fifth at worst, over 300 ms
    /// (docs/benchmarks.md). Paced, at most two steps are in flight, and the writer goes at
    /// the device's speed. The calls only start and await writeback: an error they meet is
    /// the final fsync's to report, so theirs is not checked.
    fn pace(&mut self) -> Result<()> {
        if self.bytes - self.submitted < WRITEBACK_STEP {
            return Ok(());
        }
        self.out
            .flush()
            .map_err(|e| Error::store(self.dir.join(TMP), e))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(self.out.get_ref());
        let range = |from: u64, to: u64| (from as libc::off64_t, (to - from) as libc::off64_t);
        if self.submitted > self.written {
            let (off, len) = range(self.written, self.submitted);
            // SAFETY: `fd` is the open file `self.out` owns; the call reads no memory.
            unsafe {
                libc::sync_file_range(
                    fd,
                    off,
                    len,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
        }
        let (off, len) = range(self.submitted, self.bytes);
        // SAFETY: as above.
        unsafe {
            libc::sync_file_range(fd, off, len, libc::SYNC_FILE_RANGE_WRITE);
        }
        self.written = self.submitted;
        self.submitted = self.bytes;
        Ok(())
    }

    /// Adds the session records (JSON texts without newlines), before any datum.
    pub fn add_sessions(&mut self, lines: &[String]) -> Result<()> {
        if self.count > 0 || self.record.len() > 1 {
            return Err(Error::BadRequest(
                "checkpoint sessions come before the datums".into(),
            ));
        }
        let mut rec = vec![KIND_SESSIONS];
        for line in lines {
            rec.extend_from_slice(line.as_bytes());
            rec.push(b'\n');
            if rec.len() >= RECORD_BYTES {
                self.put(&frame(&rec))?;
                rec.truncate(1);
            }
        }
        if rec.len() > 1 {
            self.put(&frame(&rec))?;
        }
        Ok(())
    }

    /// Adds a datum; datums must come in strictly increasing key order.
    pub fn add(&mut self, d: &Datum) -> Result<()> {
        if self
            .last_key
            .as_deref()
            .is_some_and(|k| k >= d.key.as_str())
        {
            return Err(Error::BadRequest(format!(
                "checkpoint datums out of key order at {:?}",
                d.key
            )));
        }
        serde_json::to_writer(&mut self.record, d).expect("a datum always serialises");
        self.record.push(b'\n');
        self.count += 1;
        self.last_key = Some(d.key.clone());
        if self.record.len() >= RECORD_BYTES {
            self.close_record()?;
        }
        Ok(())
    }

    fn close_record(&mut self) -> Result<()> {
        if self.record.len() > 1 {
            let rec = frame(&self.record);
            self.put(&rec)?;
        }
        self.record.clear();
        self.record.push(KIND_DATUMS);
        Ok(())
    }

    /// Writes the END record, makes the file durable and renames it into place, keeping the
    /// checkpoint it replaces as the previous one. Returns the file's size in bytes.
    pub fn finish(mut self, end: u64) -> Result<u64> {
        self.close_record()?;
        let mut tail = vec![KIND_END];
        tail.extend_from_slice(&self.count.to_le_bytes());
        tail.extend_from_slice(&end.to_le_bytes());
        self.put(&frame(&tail))?;
        let tmp = self.dir.join(TMP);
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::store(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::store(&tmp, e))?;
        drop(file);
        let path = checkpoint_path(&self.dir);
        let previous = previous_path(&self.dir);
        match fs::rename(&path, &previous) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::store(&path, e)),
        }
        fs::rename(&tmp, &path).map_err(|e| Error::store(&path, e))?;
        sync_dir(&self.dir)?;
        Ok(self.bytes)
    }
}

/// Removes both checkpoints (a snapshot install replaces the state they describe).
/// Idempotent.
pub fn remove(data_dir: &Path) -> Result<()> {
    for path in [checkpoint_path(data_dir), previous_path(data_dir)] {
        remove_file_if_present(&path)?;
    }
    sync_dir(data_dir)
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Reads the next record: `Ok(None)` at a clean end of file.
pub(crate) fn next_record(r: &mut impl Read, path: &Path, offset: u64) -> Result<Option<Vec<u8>>> {
    let mut header = [0u8; 8];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(corrupt(path, offset, "truncated record header")),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::store(path, e)),
        }
    }
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_RECORD {
        return Err(corrupt(
            path,
            offset,
            format!("impossible record length {len}"),
        ));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => corrupt(path, offset, "truncated record"),
        _ => Error::store(path, e),
    })?;
    if crc32fast::hash(&payload) != crc {
        return Err(corrupt(path, offset, "checksum mismatch"));
    }
    Ok(Some(payload))
}

/// Parses one DATUMS record (without its kind byte), checking key order inside it.
pub(crate) fn parse_datums(path: &Path, offset: u64, body: &[u8]) -> Result<Vec<Datum>> {
    let mut out: Vec<Datum> = Vec::with_capacity(body.len() / 96);
    let mut pos = 0usize;
    for line in body.split(|&b| b == b'\n') {
        let at = offset + 9 + pos as u64;
        pos += line.len() + 1;
        if line.is_empty() {
            continue;
        }
        let d: Datum = serde_json::from_slice(line)
            .map_err(|e| corrupt(path, at, format!("not a datum JSON line ({e})")))?;
        if out.last().is_some_and(|p| p.key >= d.key) {
            return Err(corrupt(path, at, format!("key {:?} out of order", d.key)));
        }
        out.push(d);
    }
    Ok(out)
}

/// Opens a checkpoint file and reads its header: the reader positioned after it, and `base`.
fn open_at(path: &Path) -> Result<Option<(BufReader<File>, u64)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::store(path, e)),
    };
    let mut r = BufReader::with_capacity(RECORD_BYTES, file);
    let mut magic = [0u8; 8];
    if r.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Err(corrupt(path, 0, "not a checkpoint file (bad magic)"));
    }
    let offset = MAGIC.len() as u64;
    let header = next_record(&mut r, path, offset)?
        .ok_or_else(|| corrupt(path, offset, "no header record"))?;
    if header.len() != 13 || header[0] != KIND_HEADER {
        return Err(corrupt(path, offset, "bad header record"));
    }
    let version = u32::from_le_bytes(header[1..5].try_into().expect("4 bytes"));
    if !(1..=VERSION).contains(&version) {
        return Err(corrupt(
            path,
            offset,
            format!("format version {version}; this build reads versions 1 to {VERSION}"),
        ));
    }
    Ok(Some((
        r,
        u64::from_le_bytes(header[5..13].try_into().expect("8 bytes")),
    )))
}

/// The `base` of a checkpoint file from its header alone (`Ok(None)`: no such file).
pub fn read_base(path: &Path) -> Result<Option<u64>> {
    Ok(open_at(path)?.map(|(_, base)| base))
}

/// Reads a checkpoint file: `Ok(None)` if there is none. Any damage is an error naming the
/// file and offset (the caller decides what to fall back to). Records are read
/// sequentially and parsed on every core.
pub fn read_at(path: &Path) -> Result<Option<Checkpoint>> {
    let Some((mut r, base)) = open_at(path)? else {
        return Ok(None);
    };
    let mut offset = MAGIC.len() as u64 + 8 + 13;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 8));
    let (tx, rx) = mpsc::sync_channel::<(usize, u64, Vec<u8>)>(threads * 2);
    let rx = Mutex::new(rx);
    let mut sessions: Vec<String> = Vec::new();
    let (tail, parsed) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let rx = &rx;
                s.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let job = rx.lock().expect("checkpoint queue lock").recv();
                        let Ok((seq, at, rec)) = job else { break };
                        out.push((seq, parse_datums(path, at, &rec[1..])));
                    }
                    out
                })
            })
            .collect();
        // The reader: hands DATUMS records to the parsers, stops at END.
        let mut tail: Result<(u64, u64)> = Err(corrupt(path, offset, "no END record"));
        let mut seq = 0usize;
        loop {
            match next_record(&mut r, path, offset) {
                Ok(Some(rec)) if rec[0] == KIND_SESSIONS && seq == 0 => {
                    let len = rec.len() as u64;
                    match std::str::from_utf8(&rec[1..]) {
                        Ok(text) => sessions.extend(text.lines().map(str::to_string)),
                        Err(_) => {
                            tail = Err(corrupt(path, offset, "sessions record is not text"));
                            break;
                        }
                    }
                    offset += 8 + len;
                }
                Ok(Some(rec)) if rec[0] == KIND_DATUMS => {
                    let len = rec.len() as u64;
                    if tx.send((seq, offset, rec)).is_err() {
                        break;
                    }
                    seq += 1;
                    offset += 8 + len;
                }
                Ok(Some(rec)) if rec[0] == KIND_END && rec.len() == 17 => {
                    let count = u64::from_le_bytes(rec[1..9].try_into().expect("8 bytes"));
                    let end = u64::from_le_bytes(rec[9..17].try_into().expect("8 bytes"));
                    let mut rest = [0u8; 1];
                    tail = match r.read(&mut rest) {
                        Ok(0) => Ok((count, end)),
                        _ => Err(corrupt(path, offset, "bytes after the END record")),
                    };
                    break;
                }
                Ok(Some(_)) => {
                    tail = Err(corrupt(path, offset, "unknown record kind"));
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    tail = Err(e);
                    break;
                }
            }
        }
        drop(tx);
        let mut parsed: Vec<(usize, Result<Vec<Datum>>)> = workers
            .into_iter()
            .flat_map(|w| w.join().expect("a checkpoint parser thread panicked"))
            .collect();
        parsed.sort_by_key(|(seq, _)| *seq);
        (tail, parsed)
    });
    let (count, end) = tail?;
    let mut datums: Vec<Datum> = Vec::with_capacity(count as usize);
    for (_, part) in parsed {
        let part = part?;
        if let (Some(prev), Some(first)) = (datums.last(), part.first()) {
            if prev.key >= first.key {
                return Err(corrupt(
                    path,
                    0,
                    format!("key {:?} out of order across records", first.key),
                ));
            }
        }
        datums.extend(part);
    }
    if datums.len() as u64 != count {
        return Err(corrupt(
            path,
            0,
            format!(
                "END record counts {count} datums, the file holds {}",
                datums.len()
            ),
        ));
    }
    Ok(Some(Checkpoint {
        base,
        end,
        datums,
        sessions,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn datum(i: u64) -> Datum {
        Datum {
            key: format!("svc/{i:06}"),
            value: json!({"ip": format!("10.0.0.{}", i % 250), "n": i}),
            timestamp: i % 7 + 1,
            index: i + 1,
        }
    }

    fn write(dir: &Path, n: u64) -> u64 {
        let mut w = CheckpointWriter::create(dir, 40).unwrap();
        for i in 0..n {
            w.add(&datum(i)).unwrap();
        }
        w.finish(45).unwrap()
    }

    #[test]
    fn a_large_checkpoint_goes_to_the_device_as_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = CheckpointWriter::create(dir.path(), 40).unwrap();
        let mut i = 0;
        while w.bytes < 4 * WRITEBACK_STEP {
            w.add(&datum(i)).unwrap();
            i += 1;
        }
        // Before the final fsync, all but the last steps were handed over, and all but the
        // last two waited for: at most two steps of it are in flight.
        let at = format!("{} {} {}", w.bytes, w.submitted, w.written);
        assert!(w.submitted + 2 * WRITEBACK_STEP >= w.bytes, "{at}");
        assert!(w.written + 3 * WRITEBACK_STEP >= w.bytes, "{at}");
        assert!(w.written > 0, "{at}");
        w.finish(45).unwrap();
        let c = read(dir.path()).unwrap().unwrap();
        assert_eq!(c.datums, (0..i).map(datum).collect::<Vec<_>>());
    }

    #[test]
    fn round_trip_over_many_records() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        assert_eq!(read_base(&checkpoint_path(dir.path())).unwrap(), None);
        // Enough datums for several DATUMS records, so parsing runs on several threads.
        let n = 30_000;
        let bytes = write(dir.path(), n);
        assert!(bytes > 2 * RECORD_BYTES as u64, "{bytes} bytes");
        assert!(!dir.path().join(TMP).exists());
        let c = read(dir.path()).unwrap().unwrap();
        assert_eq!((c.base, c.end), (40, 45));
        assert_eq!(c.datums, (0..n).map(datum).collect::<Vec<_>>());
        assert_eq!(read_base(&checkpoint_path(dir.path())).unwrap(), Some(40));
        remove(dir.path()).unwrap();
        remove(dir.path()).unwrap();
        assert!(read(dir.path()).unwrap().is_none());
    }

    #[test]
    fn sessions_come_back_and_version_1_files_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = CheckpointWriter::create(dir.path(), 9).unwrap();
        let lines: Vec<String> = (0..3).map(|i| format!(r#"{{"client":"c{i}"}}"#)).collect();
        w.add_sessions(&lines).unwrap();
        w.add(&datum(1)).unwrap();
        assert!(w.add_sessions(&lines).is_err(), "sessions after datums");
        w.finish(9).unwrap();
        let c = read(dir.path()).unwrap().unwrap();
        assert_eq!((c.sessions, c.datums.len()), (lines, 1));
        // A version-1 file: the same layout without sessions.
        write(dir.path(), 3);
        let path = checkpoint_path(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        let at = MAGIC.len() + 8 + 1;
        bytes[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
        let payload_end = MAGIC.len() + 8 + 13;
        let crc = crc32fast::hash(&bytes[MAGIC.len() + 8..payload_end]);
        bytes[MAGIC.len() + 4..MAGIC.len() + 8].copy_from_slice(&crc.to_le_bytes());
        fs::write(&path, bytes).unwrap();
        let c = read(dir.path()).unwrap().unwrap();
        assert_eq!((c.datums.len(), c.sessions.len()), (3, 0));
    }

    fn read(dir: &Path) -> Result<Option<Checkpoint>> {
        read_at(&checkpoint_path(dir))
    }

    /// A new checkpoint keeps the one it replaces as the previous one; removal takes both.
    #[test]
    fn the_replaced_checkpoint_is_kept_as_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        for base in [10, 20, 30] {
            let mut w = CheckpointWriter::create(dir.path(), base).unwrap();
            w.add(&datum(base)).unwrap();
            w.finish(base).unwrap();
        }
        let prev = read_at(&previous_path(dir.path())).unwrap().unwrap();
        assert_eq!((prev.base, prev.datums), (20, vec![datum(20)]));
        assert_eq!(read(dir.path()).unwrap().unwrap().base, 30);
        remove(dir.path()).unwrap();
        assert!(!previous_path(dir.path()).exists());
        assert!(!checkpoint_path(dir.path()).exists());
    }

    #[test]
    fn empty_checkpoint_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 0);
        let c = read(dir.path()).unwrap().unwrap();
        assert_eq!((c.base, c.datums.len()), (40, 0));
    }

    #[test]
    fn out_of_order_datums_are_refused_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = CheckpointWriter::create(dir.path(), 1).unwrap();
        w.add(&datum(2)).unwrap();
        assert!(w.add(&datum(1)).is_err());
        assert!(w.add(&datum(2)).is_err());
    }

    /// Every kind of damage is an error that names the file: a flipped byte anywhere, a
    /// truncation anywhere, bytes appended.
    #[test]
    fn damage_anywhere_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 12_000);
        let path = checkpoint_path(dir.path());
        let good = fs::read(&path).unwrap();
        let step = good.len() / 40;
        for at in (0..good.len()).step_by(step).chain([good.len() - 1]) {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            fs::write(&path, &bad).unwrap();
            match read(dir.path()) {
                Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, path),
                other => panic!("flip at {at}: expected Corrupt, got {other:?}"),
            }
            fs::write(&path, &good[..at]).unwrap();
            assert!(
                matches!(read(dir.path()), Err(Error::Corrupt { .. })),
                "truncated to {at}"
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        fs::write(&path, &longer).unwrap();
        assert!(matches!(read(dir.path()), Err(Error::Corrupt { .. })));
        fs::write(&path, &good).unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap().datums.len(), 12_000);
    }
}
