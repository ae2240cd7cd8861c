//! The backup file of `nacosctl snapshot save|status|restore`: the whole datum set (and the
//! access-control table) exactly as it was at one applied index, in one file that says if
//! a byte of it changed.
//!
//! Layout: the magic `NACOSBAK`, then records framed like the log's and the checkpoint's,
//! `[len: u32 LE][crc32 of payload: u32 LE][payload]`, whose first payload byte says what
//! they are:
//! - HEADER: JSON [`BackupHeader`] (format, index, term, source member, time);
//! - AUTH: access-control records as JSON lines (their meaning is `auth`'s);
//! - DATUMS: datums as JSON lines (the datum file format), in strictly increasing key order
//!   across the whole file;
//! - ABORT: the writer gave up (its reason as text): the file is not a backup;
//! - END: JSON `{"datums": N, "sha256": "<hex>"}`, the count and the SHA-256 of every byte
//!   before this record. Nothing may follow it.
//!
//! Unlike a checkpoint this is an exact cut (the node serves it from a copy-on-write view,
//! `DatumSet::freeze`), so restoring it needs no log.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::datum::Datum;
use crate::error::{Error, Result};
use crate::store::checkpoint::{next_record, parse_datums};
use crate::store::log::frame;

pub const MAGIC: &[u8; 8] = b"NACOSBAK";
pub const FORMAT: u32 = 1;
const KIND_HEADER: u8 = 1;
const KIND_AUTH: u8 = 2;
const KIND_DATUMS: u8 = 3;
const KIND_ABORT: u8 = 4;
const KIND_END: u8 = 5;
/// A DATUMS record is closed once it passes this size.
const RECORD_BYTES: usize = 1 << 20;

/// Where a backup was cut.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub format: u32,
    /// Every write up to this applied index is in it, and none after.
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
    /// The member it was read from.
    pub source: String,
    /// When the cut was made, milliseconds since 1970.
    pub created_unix_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct End {
    datums: u64,
    sha256: String,
}

/// Writes a backup to `out` (a file, or an HTTP response) one record at a time.
pub struct BackupWriter<W: Write> {
    out: W,
    hash: Sha256,
    record: Vec<u8>,
    last_key: Option<String>,
    count: u64,
}

impl<W: Write> BackupWriter<W> {
    /// Writes the magic, the header and the access-control records.
    pub fn start(out: W, header: &BackupHeader, auth: &[String]) -> std::io::Result<Self> {
        let mut w = BackupWriter {
            out,
            hash: Sha256::new(),
            record: Vec::with_capacity(RECORD_BYTES + 4096),
            last_key: None,
            count: 0,
        };
        w.put(MAGIC)?;
        let mut head = vec![KIND_HEADER];
        head.extend(serde_json::to_vec(header).expect("a header serialises"));
        w.put(&frame(&head))?;
        if !auth.is_empty() {
            let mut rec = vec![KIND_AUTH];
            for l in auth {
                rec.extend_from_slice(l.as_bytes());
                rec.push(b'\n');
            }
            w.put(&frame(&rec))?;
        }
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hash.update(bytes);
        self.out.write_all(bytes)
    }

    /// Adds a datum; keys must come in increasing order (the reader checks it).
    pub fn add(&mut self, d: &Datum) -> std::io::Result<()> {
        if self
            .last_key
            .as_deref()
            .is_some_and(|k| k >= d.key.as_str())
        {
            return Err(std::io::Error::other(format!(
                "datum {:?} out of key order",
                d.key
            )));
        }
        if self.record.is_empty() {
            self.record.push(KIND_DATUMS);
        }
        serde_json::to_writer(&mut self.record, d).expect("a datum serialises");
        self.record.push(b'\n');
        self.last_key = Some(d.key.clone());
        self.count += 1;
        if self.record.len() >= RECORD_BYTES {
            self.close_record()?;
        }
        Ok(())
    }

    fn close_record(&mut self) -> std::io::Result<()> {
        if !self.record.is_empty() {
            let rec = frame(&self.record);
            self.record.clear();
            self.put(&rec)?;
        }
        Ok(())
    }

    /// Writes the END record; returns the datum count and the checksum.
    pub fn finish(mut self) -> std::io::Result<(W, u64, String)> {
        self.close_record()?;
        let sha256 = hex(&self.hash.clone().finalize());
        let mut end = vec![KIND_END];
        end.extend(
            serde_json::to_vec(&End {
                datums: self.count,
                sha256: sha256.clone(),
            })
            .expect("an end record serialises"),
        );
        let rec = frame(&end);
        self.out.write_all(&rec)?;
        self.out.flush()?;
        Ok((self.out, self.count, sha256))
    }

    /// Gives up: an ABORT record with `why`, so the reader reports it instead of a
    /// truncated file.
    pub fn abort(mut self, why: &str) -> std::io::Result<()> {
        self.close_record()?;
        let mut rec = vec![KIND_ABORT];
        rec.extend_from_slice(why.as_bytes());
        self.out.write_all(&frame(&rec))?;
        self.out.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `read` found in a whole, undamaged backup file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    pub index: u64,
    pub term: u64,
    pub source: String,
    pub created_unix_ms: u64,
    pub datums: u64,
    pub auth_records: u64,
    /// The file's size in bytes.
    pub size: u64,
    pub sha256: String,
}

/// One item of a backup, in file order: every AUTH record before the first datum.
pub enum Item<'a> {
    Auth(&'a str),
    Datum(Datum),
}

/// Reads a backup file from start to end, handing each item to `visit`, and checks all of
/// it: the magic, each record's CRC, key order, the count and the SHA-256 of the END
/// record, and that nothing follows. Any damage is `Error::Corrupt` with the offset; `visit`
/// has then seen part of the file, so a caller that writes what it sees must throw that away.
pub fn read(path: &Path, mut visit: impl FnMut(Item<'_>) -> Result<()>) -> Result<BackupInfo> {
    let corrupt = |offset: u64, reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let file = File::open(path).map_err(|e| Error::store(path, e))?;
    let size = file.metadata().map_err(|e| Error::store(path, e))?.len();
    let mut r = Hashing {
        inner: BufReader::with_capacity(RECORD_BYTES, file),
        hash: Sha256::new(),
        at: 0,
    };
    let mut magic = [0u8; 8];
    if r.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Err(corrupt(
            0,
            "not a nacos-raft backup (it does not start with NACOSBAK); make one with `nacosctl snapshot save FILE`".into(),
        ));
    }
    let mut header: Option<BackupHeader> = None;
    let mut last_key: Option<String> = None;
    let mut datums = 0u64;
    let mut auth_records = 0u64;
    loop {
        let offset = r.at;
        // The END record's hash covers everything before it: take it before reading it.
        let before_end = r.hash.clone().finalize();
        let Some(rec) = next_record(&mut r, path, offset)? else {
            return Err(corrupt(
                offset,
                "the file ends before its END record: it is truncated (a save that did not finish, or a partial copy)".into(),
            ));
        };
        let (kind, body) = rec
            .split_first()
            .ok_or_else(|| corrupt(offset, "empty record".into()))?;
        match (*kind, &header) {
            (KIND_HEADER, None) => {
                let h: BackupHeader = serde_json::from_slice(body)
                    .map_err(|e| corrupt(offset, format!("bad header record: {e}")))?;
                if h.format != FORMAT {
                    return Err(corrupt(
                        offset,
                        format!(
                            "backup format {}; this build reads format {FORMAT}",
                            h.format
                        ),
                    ));
                }
                header = Some(h);
            }
            (_, None) => return Err(corrupt(offset, "no header record".into())),
            (KIND_AUTH, Some(_)) if last_key.is_none() => {
                let text = std::str::from_utf8(body)
                    .map_err(|_| corrupt(offset, "an AUTH record is not text".into()))?;
                for line in text.lines().filter(|l| !l.is_empty()) {
                    auth_records += 1;
                    visit(Item::Auth(line))?;
                }
            }
            (KIND_DATUMS, Some(_)) => {
                // In order within the record (checked there) and across records (here).
                for d in parse_datums(path, offset, body)? {
                    crate::datum::validate_key(&d.key)
                        .and_then(|()| crate::datum::validate_value(&d.value))
                        .map_err(|e| corrupt(offset, format!("datum {:?}: {e}", d.key)))?;
                    if last_key.as_deref().is_some_and(|k| k >= d.key.as_str()) {
                        return Err(corrupt(offset, format!("key {:?} out of order", d.key)));
                    }
                    last_key = Some(d.key.clone());
                    datums += 1;
                    visit(Item::Datum(d))?;
                }
            }
            (KIND_ABORT, Some(_)) => {
                return Err(corrupt(
                    offset,
                    format!(
                        "the member stopped writing this backup: {}; take it again",
                        String::from_utf8_lossy(body)
                    ),
                ))
            }
            (KIND_END, Some(h)) => {
                let end: End = serde_json::from_slice(body)
                    .map_err(|e| corrupt(offset, format!("bad END record: {e}")))?;
                if end.datums != datums {
                    return Err(corrupt(
                        offset,
                        format!(
                            "the END record counts {} datums, the file holds {datums}",
                            end.datums
                        ),
                    ));
                }
                if end.sha256 != hex(&before_end) {
                    return Err(corrupt(
                        offset,
                        "SHA-256 mismatch: the file was changed after it was written".into(),
                    ));
                }
                let mut extra = [0u8; 1];
                if r.read(&mut extra).map_err(|e| Error::store(path, e))? != 0 {
                    return Err(corrupt(r.at, "bytes after the END record".into()));
                }
                return Ok(BackupInfo {
                    index: h.index,
                    term: h.term,
                    source: h.source.clone(),
                    created_unix_ms: h.created_unix_ms,
                    datums,
                    auth_records,
                    size,
                    sha256: end.sha256,
                });
            }
            (k, Some(_)) => {
                return Err(corrupt(offset, format!("unexpected record kind {k}")));
            }
        }
    }
}

/// A reader that hashes what it hands out and counts the offset.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    at: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.hash.update(&buf[..n]);
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datum(k: &str, ts: u64) -> Datum {
        Datum {
            key: k.into(),
            value: serde_json::json!({"v": k}),
            timestamp: ts,
            index: ts,
        }
    }

    fn header() -> BackupHeader {
        BackupHeader {
            format: FORMAT,
            index: 7,
            term: 2,
            source: "127.0.0.1:1".into(),
            created_unix_ms: 1,
        }
    }

    fn write(path: &Path, n: usize) -> String {
        let f = File::create(path).unwrap();
        let mut w = BackupWriter::start(f, &header(), &["{\"auth\":1}".to_string()]).unwrap();
        for i in 0..n {
            w.add(&datum(&format!("k{i:05}"), i as u64 + 1)).unwrap();
        }
        w.finish().unwrap().2
    }

    #[test]
    fn a_backup_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let sha = write(&path, 3000);
        let mut seen = Vec::new();
        let mut auth = Vec::new();
        let info = read(&path, |i| {
            match i {
                Item::Auth(l) => auth.push(l.to_string()),
                Item::Datum(d) => seen.push(d),
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(info.datums, 3000);
        assert_eq!(info.index, 7);
        assert_eq!(info.term, 2);
        assert_eq!(info.sha256, sha);
        assert_eq!(info.size, std::fs::metadata(&path).unwrap().len());
        assert_eq!(auth, vec!["{\"auth\":1}"]);
        assert_eq!(seen[2999], datum("k02999", 3000));
    }

    #[test]
    fn any_damage_is_refused_with_where() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        write(&path, 50);
        let good = std::fs::read(&path).unwrap();
        let refuse = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            read(&path, |_| Ok(())).unwrap_err().to_string()
        };
        // A flipped byte in the middle: a record's CRC.
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 1;
        assert!(refuse(&flipped).contains("checksum mismatch"));
        // Cut short.
        let why = refuse(&good[..good.len() - 10]);
        assert!(why.contains("truncated"), "{why}");
        let why = refuse(&good[..good.len() / 2]);
        assert!(why.contains("truncated"), "{why}");
        // Something after the end.
        let mut longer = good.clone();
        longer.push(b'x');
        assert!(refuse(&longer).contains("after the END"));
        assert!(refuse(b"hello").contains("not a nacos-raft backup"));
        // A record replaced whole with a valid frame of other content: the SHA-256 says so.
        let mut swapped = good.clone();
        let needle = br#""v":"k00001""#;
        let pos = swapped
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("a value in the file");
        swapped[pos + needle.len() - 2] = b'9';
        // Re-frame that record so its CRC matches again.
        let why = refuse(&reframe(&swapped));
        assert!(why.contains("SHA-256"), "{why}");
    }

    /// Recomputes every record's CRC (as a deliberate forger would).
    fn reframe(bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes[..8].to_vec();
        let mut at = 8;
        while at + 8 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let payload = &bytes[at + 8..at + 8 + len];
            out.extend(frame(payload));
            at += 8 + len;
        }
        out
    }

    #[test]
    fn an_aborted_backup_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let f = File::create(&path).unwrap();
        let mut w = BackupWriter::start(f, &header(), &[]).unwrap();
        w.add(&datum("a", 1)).unwrap();
        w.abort("the member installed a snapshot").unwrap();
        let why = read(&path, |_| Ok(())).unwrap_err().to_string();
        assert!(why.contains("installed a snapshot"), "{why}");
    }
}
