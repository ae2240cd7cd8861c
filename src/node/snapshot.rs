//! Snapshot catch-up in the shell: the leader streams its datum set to a follower that is
//! behind the retained log; the follower stages it and offers it to its core.
//!
//! Memory stays bounded on both sides: the leader reads the live map through a cursor, one
//! chunk at a time, and the follower writes each chunk to its staging dir as it arrives.

use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::raft::{LogId, PeerAddr, PeerSet};
use crate::store::snapshot::SnapshotWriter;

use super::{log_event, DriverEvent, Shared, TOKEN_HEADER};

/// Most datums per chunk.
pub const CHUNK_DATUMS: usize = 1000;
/// About the most bytes per chunk (at least one datum goes): with the largest values a
/// client may write, a chunk stays far under the peer body limit, so no datum can make a
/// follower refuse every chunk and never catch up.
pub const CHUNK_BYTES: usize = 8 << 20;

/// Where a snapshot stream is, carried as query parameters of `/v1/raft/snapshot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHeader {
    pub from: PeerAddr,
    /// The sending leader's term.
    pub term: u64,
    /// The snapshot covers the log up to here (the leader's applied index when it began).
    pub index: u64,
    /// The term of the entry at `index`.
    pub snap_term: u64,
    pub seq: u64,
    pub last: bool,
    /// This chunk holds the client sessions (exact at `index`), not datums: always chunk
    /// 0 of a stream.
    pub sessions: bool,
}

/// A leader's hold on compaction for one follower's snapshot: the log after `index` is kept
/// while the stream runs and then until the follower acknowledges an index past it. A
/// follower installs after the last chunk (a large snapshot takes a while); if the log it
/// continues from were compacted meanwhile, it would need another snapshot, and under
/// steady writes another after that (a new member once took three minutes to join so).
#[derive(Clone, Copy, Debug)]
pub struct Pin {
    pub index: u64,
    /// The stream is under way (no second one is started); once it ended, the follower is
    /// installing.
    pub streaming: bool,
    pub since: std::time::Instant,
}

/// How long a pin outlives its stream at most, and how many bytes of log it may hold behind
/// it: a follower that does not come back (died mid-install) must not keep the log growing
/// (the driver checks the bytes at each compaction).
pub const PIN_AFTER_STREAM: Duration = Duration::from_secs(120);
pub const PIN_MAX_LOG_BYTES: usize = 256 << 20;

/// The follower's progress through one incoming stream.
pub struct Incoming {
    header: ChunkHeader,
    /// The staged checkpoint being written.
    writer: SnapshotWriter,
    /// The configuration at the snapshot's index, from chunk 0.
    peers: Option<PeerSet>,
}

/// Leader: streams the sessions (exact at `index`) and the datum set to `peer`, then
/// reports to the driver.
pub fn send(
    shared: Arc<Shared>,
    peer: PeerAddr,
    index: u64,
    snap_term: u64,
    term: u64,
    sessions: Vec<String>,
) {
    let result = stream(&shared, &peer, index, snap_term, term, &sessions);
    {
        let mut pins = shared.snapshot_pins.lock().expect("pins lock");
        if result.is_ok() {
            // The follower installs now: hold the log until it acknowledges past `index`.
            pins.insert(
                peer.clone(),
                Pin {
                    index,
                    streaming: false,
                    since: std::time::Instant::now(),
                },
            );
        } else {
            pins.remove(&peer);
        }
    }
    match &result {
        Ok(n) => {
            shared.metrics.snapshots_sent.inc();
            log_event(&format!(
                "sent a snapshot of {n} datums at index {index} to {peer}"
            ))
        }
        Err(e) => {
            log_event(&format!(
                "snapshot to {peer} failed: {e}; retrying in a second"
            ));
            // Back off here, not in the core: a follower that is down would otherwise get
            // a new stream (a thread and a log line) every heartbeat.
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let _ = shared.driver.send(DriverEvent::SnapshotSent {
        peer,
        index,
        ok: result.is_ok(),
    });
}

/// Streams the chunks; the error says what failed, for the log line.
fn stream(
    shared: &Shared,
    peer: &PeerAddr,
    index: u64,
    snap_term: u64,
    term: u64,
    sessions: &[String],
) -> std::result::Result<u64, String> {
    let agent = shared
        .cfg
        .peer_agent()
        .timeout(Duration::from_secs(30))
        .build();
    let header = |seq, last, sessions| ChunkHeader {
        from: shared.cfg.advertise.clone(),
        term,
        index,
        snap_term,
        seq,
        last,
        sessions,
    };
    let post = |h: &ChunkHeader, body: &[u8]| {
        let mut req = agent
            .post(
                &shared
                    .cfg
                    .peer_url(peer, &format!("/v1/raft/snapshot?{}", serde_urlencoded(h))),
            )
            .set("Content-Type", "application/json");
        if let Some(t) = &shared.cfg.cluster_token {
            req = req.set(TOKEN_HEADER, t);
        }
        req.send_bytes(body).map(|_| ()).map_err(|e| match e {
            ureq::Error::Status(code, r) => format!(
                "{peer} refused chunk {}: {code} {}",
                h.seq,
                r.into_string().unwrap_or_default()
            ),
            ureq::Error::Transport(t) => format!("chunk {} not delivered: {t}", h.seq),
        })
    };
    // Chunk 0: the sessions and access control, one JSON text per line (as the
    // checkpoint holds them).
    let mut lines = Vec::new();
    for r in sessions {
        lines.extend_from_slice(r.as_bytes());
        lines.push(b'\n');
    }
    post(&header(0, false, true), &lines)?;
    let mut after: Option<String> = None;
    let mut seq = 1;
    let mut sent = 0u64;
    loop {
        let mut chunk = shared.datums.list_after(after.as_deref(), CHUNK_DATUMS);
        let mut last = chunk.len() < CHUNK_DATUMS;
        let mut bytes = 0;
        let fits = chunk
            .iter()
            .take_while(|d| {
                bytes += 64 + d.key.len() + crate::datum::approx_json_size(&d.value);
                bytes <= CHUNK_BYTES
            })
            .count()
            .max(1);
        if fits < chunk.len() {
            chunk.truncate(fits);
            last = false;
        }
        post(
            &header(seq, last, false),
            &crate::wire::peer::encode_chunk(&chunk),
        )?;
        sent += chunk.len() as u64;
        if last {
            return Ok(sent);
        }
        after = chunk.last().map(|d| d.key.clone());
        seq += 1;
    }
}

fn serde_urlencoded(h: &ChunkHeader) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("from", h.from.as_str())
        .append_pair("term", &h.term.to_string())
        .append_pair("index", &h.index.to_string())
        .append_pair("snap_term", &h.snap_term.to_string())
        .append_pair("seq", &h.seq.to_string())
        .append_pair("last", if h.last { "1" } else { "0" })
        .append_pair("sessions", if h.sessions { "1" } else { "0" })
        .finish()
}

/// Parses the query of a snapshot chunk.
pub fn parse_header(query: &[(String, String)]) -> Result<ChunkHeader> {
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| Error::BadRequest(format!("snapshot chunk without `{name}`")))
    };
    let num = |name: &str| -> Result<u64> {
        get(name)?
            .parse()
            .map_err(|_| Error::BadRequest(format!("snapshot chunk `{name}` is not a number")))
    };
    Ok(ChunkHeader {
        from: PeerAddr::new(get("from")?),
        term: num("term")?,
        index: num("index")?,
        snap_term: num("snap_term")?,
        seq: num("seq")?,
        last: get("last")? == "1",
        sessions: get("sessions").is_ok_and(|v| v == "1"),
    })
}

/// Follower: stages one chunk; on the last one, offers the snapshot to the core and answers
/// once the core has decided (the install itself then runs in log order in the writer).
pub fn receive(shared: &Shared, header: ChunkHeader, body: &[u8]) -> Result<()> {
    // Only a leader of this term or a later one streams a snapshot: a chunk from anyone else
    // is refused before it touches the staging dir (the core checks the offer again, with
    // everything it knows, on the last chunk).
    {
        let status = shared.status.status.lock().expect("status lock");
        let other_leader =
            header.term == status.term && status.leader.as_ref().is_some_and(|l| *l != header.from);
        if header.term < status.term || other_leader || header.from == shared.cfg.advertise {
            return Err(Error::BadRequest(format!(
                "a snapshot from {} in term {}, but this member is in term {} with leader {}",
                header.from,
                header.term,
                status.term,
                status.leader.as_ref().map_or("unknown", |l| l.as_str())
            )));
        }
    }
    let data_dir = &shared.cfg.data_dir;
    let mut incoming = shared.incoming_snapshot.lock().expect("incoming lock");
    let (mut writer, mut peers) = if header.seq == 0 {
        // An accepted install may still wait in the writer for its turn: its staged datums
        // are swapped in then, so a new stream must not clear them now (a second snapshot
        // under load once left a member with none).
        let accepted = shared
            .installs_accepted
            .load(std::sync::atomic::Ordering::SeqCst);
        if accepted
            > shared
                .writer_done
                .installs
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Error::Busy(
                "this member is still installing the previous snapshot; the leader tries again"
                    .into(),
            ));
        }
        *incoming = None;
        (SnapshotWriter::begin(data_dir, header.index)?, None)
    } else {
        let follows = incoming.as_ref().is_some_and(|inc| {
            inc.header.from == header.from
                && inc.header.index == header.index
                && inc.header.seq + 1 == header.seq
        });
        match incoming.take() {
            // A chunk that fails below drops the stream: the leader starts over.
            Some(inc) if follows => (inc.writer, inc.peers),
            other => {
                *incoming = other;
                return Err(Error::BadRequest(format!(
                    "snapshot chunk {} from {} does not follow the chunks received; start over",
                    header.seq, header.from
                )));
            }
        }
    };
    if header.sessions {
        if header.seq != 0 {
            return Err(Error::BadRequest(
                "snapshot sessions come in chunk 0 only".into(),
            ));
        }
        // Checked as the checkpoint's are read back, so a bad record fails here, not at
        // install.
        let text = std::str::from_utf8(body)
            .map_err(|_| Error::BadRequest("snapshot sessions are not text".into()))?;
        let mut lines = Vec::new();
        for line in text.lines() {
            let record = super::datum_set::parse_side_line(line)
                .map_err(|e| Error::BadRequest(format!("in a snapshot: {e}")))?;
            if let super::datum_set::SideRecord::Peers(r) = record {
                peers = Some(r.peers);
            }
            lines.push(line.to_string());
        }
        writer.add_sessions(&lines)?;
    } else {
        let datums = crate::wire::peer::decode_chunk(body)
            .map_err(|e| Error::BadRequest(format!("snapshot chunk refused: {e}")))?;
        for d in &datums {
            writer
                .add(d)
                .map_err(|e| Error::BadRequest(format!("snapshot chunk refused: {e}")))?;
        }
    }
    if !header.last {
        *incoming = Some(Incoming {
            header: header.clone(),
            writer,
            peers,
        });
        return Ok(());
    }
    let Some(peers) = peers else {
        return Err(Error::BadRequest(
            "a snapshot without the cluster's configuration in chunk 0; the leader runs an older version: upgrade it".into(),
        ));
    };
    let count = writer.count;
    // Durable and complete before the core may accept it.
    writer.finish()?;
    let (tx, rx) = mpsc::channel();
    shared
        .driver
        .send(DriverEvent::OfferSnapshot {
            from: header.from.clone(),
            term: header.term,
            point: LogId::new(header.index, header.snap_term),
            peers,
            reply: tx,
        })
        .map_err(|_| Error::ShuttingDown)?;
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(true)) => {
            log_event(&format!(
                "accepted a snapshot of {count} datums at index {} from {}",
                header.index, header.from
            ));
            Ok(())
        }
        Ok(Ok(false)) => {
            // Already past it: the staged copy is not needed.
            crate::store::snapshot::discard_staging(data_dir)
        }
        Ok(Err(why)) => Err(Error::BadRequest(format!("snapshot refused: {why}"))),
        Err(_) => Err(Error::ShuttingDown),
    }
}

/// A reply channel for the driver's decision on an offered snapshot: `Ok(true)` install it,
/// `Ok(false)` not needed.
pub type OfferReply = Sender<std::result::Result<bool, String>>;

/// `nacosctl snapshot restore`: builds a new data dir from a backup file (offline), as if
/// the member had installed a snapshot at the backup's index: the datums staged and swapped
/// in by the install steps of `store::snapshot`, a term at the backup's, and a log that
/// begins after the backup's index: a member started with
/// an empty data dir beside restored ones catches up by snapshot, never by replaying a log
/// that lacks the restored datums. The whole file is checked before anything is written.
///
/// With `peers`, the restored dir records them as its configuration (a new cluster of
/// those voters); without, the member bootstraps from its own `--peers` when it starts.
pub fn restore_backup(
    file: &std::path::Path,
    data_dir: &std::path::Path,
    peers: Option<&PeerSet>,
) -> Result<crate::store::backup::BackupInfo> {
    use crate::store::backup::{read, Item};
    let not_empty = match std::fs::read_dir(data_dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::store(data_dir, e)),
    };
    if not_empty {
        return Err(Error::Config(format!(
            "{} is not empty: a restore builds a new data dir; give a path that does not exist yet (or move the old dir aside)",
            data_dir.display()
        )));
    }
    // First pass: the whole file is sound, and so is every access-control record.
    let mut auth = Vec::new();
    let checked = read(file, |item| {
        if let Item::Auth(line) = item {
            super::datum_set::parse_side_line(line).map_err(|why| Error::Corrupt {
                path: file.to_path_buf(),
                offset: 0,
                reason: why,
            })?;
            auth.push(line.to_string());
        }
        Ok(())
    })?;
    let existed = data_dir.exists();
    std::fs::create_dir_all(data_dir).map_err(|e| Error::store(data_dir, e))?;
    if let Some(p) = peers {
        p.validate().map_err(Error::Config)?;
        auth.push(super::datum_set::peers_line(p));
    }
    let built = build_restored(file, data_dir, &auth, checked.index);
    if built.is_err() {
        // Nothing of it is usable: leave the dir as it was found (absent or empty), so the
        // same command can run again.
        let _ = std::fs::remove_dir_all(data_dir);
        if existed {
            let _ = std::fs::create_dir(data_dir);
        }
    }
    built
}

fn build_restored(
    file: &std::path::Path,
    data_dir: &std::path::Path,
    side: &[String],
    index: u64,
) -> Result<crate::store::backup::BackupInfo> {
    use crate::store::backup::{read, Item};
    let mut staged = SnapshotWriter::begin(data_dir, index)?;
    staged.add_sessions(side)?;
    let info = read(file, |item| match item {
        Item::Datum(d) => staged.add(&d),
        Item::Auth(_) => Ok(()),
    })?;
    // The term before the marker: a start that finds the marker resets the log to the
    // backup's point, and the term must not be behind it.
    crate::store::write_meta(
        data_dir,
        &crate::raft::HardState {
            term: info.term,
            vote_for: None,
        },
    )?;
    let point = LogId::new(info.index, info.term);
    staged.commit(point)?;
    // Finish the install as a start-up would, so the dir is a complete member's: the
    // checkpoint in place, and a log that begins after the backup's point (`nacosctl dump`
    // reads it as it is).
    crate::store::snapshot::swap_in(data_dir)?;
    let mut log = crate::store::LogStore::open(
        &data_dir.join("log"),
        crate::store::log::SEGMENT_BYTES,
        false,
    )?;
    log.store.reset(point)?;
    drop(log);
    crate::store::snapshot::clear_install(data_dir)?;
    crate::store::snapshot::sync_filesystem(data_dir)?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Node, NodeConfig};

    fn header(seq: u64) -> ChunkHeader {
        ChunkHeader {
            from: PeerAddr::new("leader:1"),
            term: 99,
            index: 500,
            snap_term: 99,
            seq,
            last: false,
            sessions: true,
        }
    }

    /// A member once took a second snapshot's first chunk while the install before it was
    /// decided but not yet swapped in: the new stream cleared the staged datums, and the
    /// install then put an empty datum set in place.
    #[test]
    fn regression_a_new_stream_cleared_the_staged_datums_of_an_install_not_yet_swapped_in() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig::standalone("node:1", dir.path().join("data"));
        cfg.cluster_token = Some("secret-0123456789abcdef".into());
        let node = Node::start(cfg).unwrap();
        let shared = &node.shared;
        let staged = dir.path().join("data").join("snapshot.tmp");
        std::fs::create_dir_all(&staged).unwrap();
        std::fs::write(staged.join("staged-datum"), b"{}").unwrap();
        // The core accepted an install; the writer has not finished it.
        shared
            .installs_accepted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let refused = receive(shared, header(0), b"").unwrap_err();
        assert!(
            matches!(&refused, Error::Busy(m) if m.contains("still installing")),
            "{refused:?}"
        );
        assert!(
            staged.join("staged-datum").exists(),
            "the staged datums were cleared"
        );
        // Once the writer has finished it, a new stream may start.
        shared
            .writer_done
            .installs
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        receive(shared, header(0), b"").unwrap();
        assert!(
            !staged.join("staged-datum").exists(),
            "a new stream starts afresh"
        );
        node.shutdown();
    }
}
