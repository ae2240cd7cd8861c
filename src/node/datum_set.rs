//! The applied datum set (Nacos `RaftCore.datums` + `RaftStore`): what "applied" means.
//! ("State machine" names only the Raft core, `crate::raft`.)
//!
//! Applies committed entries in index order: computes the Nacos timestamp, updates the
//! in-memory map, hands the events to the notifier (`notifier`), and queues the datum file
//! write. Must not decide what is committed; the core does.
//!
//! Datum files are written behind the map by `flush` (the node runs it on its own thread):
//! each round writes the latest state of every key changed since the last round, so a hot
//! key costs one file write per round, not one per publish. Rewriting a file per publish
//! halved throughput here (ext4 forces writeback on replace-by-rename and the volume
//! discards freed blocks synchronously; see docs/benchmarks.md). Nothing is lost by it: an
//! acknowledged write is already fsynced in the log, and start-up loads a checkpoint
//! (`checkpoint`, the whole set in one file) and replays the log after it. After a crash,
//! `reconcile_files` brings the datum files back in line.
//!
//! Committed entries may be applied before the local log has them durable (a majority
//! does). Nothing here persists their effect before it does: checkpoints and datum files
//! wait for the durable mark the driver keeps ([`DatumSet::set_durable`]), so what is on
//! disk never runs ahead of the log it is replayed with.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::auth::{AuthRecord, AuthTable};
use crate::datum::Datum;
use crate::error::{Error, Result};
use crate::raft::{Command, Entry, PeerSet};
use crate::store::{checkpoint, datum_dir};

use super::notifier::{Event, EventKind, Notifier, Subscription, WatchRefused};
use super::sessions::{Decision, Outcome, SessionRecord, Sessions};
use crate::raft::LogId;

/// The result of applying one entry, handed to the client that proposed it.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    Noop,
    Published {
        timestamp: u64,
    },
    Deleted {
        existed: bool,
    },
    /// A compare-and-set whose condition did not hold: nothing changed. `current` is the
    /// key's timestamp (0: absent).
    PreconditionFailed {
        current: u64,
    },
    /// The request was applied before, at `at`, with this outcome: nothing changed now.
    Duplicate {
        at: LogId,
        outcome: Outcome,
    },
    /// A newer request of the same client was applied before: this one was not.
    Stale {
        latest: u64,
    },
    /// An access-control change: applied, or why it did not fit the table (nothing changed).
    Auth(std::result::Result<(), String>),
    /// An import applied: the positions of its datums that were skipped, because the key
    /// held the same or a newer timestamp already; every other one was set.
    Imported {
        skipped: Vec<u32>,
    },
    /// A write its user may no longer make when it applied (a revocation, or access control
    /// turned on, earlier in the log); nothing changed.
    Denied(String),
    /// A configuration entry (in force in the core since it was appended; recorded here so
    /// checkpoints and snapshots carry it).
    Config(PeerSet),
}

impl Applied {
    /// What a client's session remembers of it.
    fn outcome(&self) -> Option<Outcome> {
        match *self {
            Applied::Published { timestamp } => Some(Outcome::Published { timestamp }),
            Applied::Deleted { existed } => Some(Outcome::Deleted { existed }),
            Applied::PreconditionFailed { current } => {
                Some(Outcome::PreconditionFailed { current })
            }
            Applied::Noop
            | Applied::Config(_)
            | Applied::Imported { .. }
            | Applied::Duplicate { .. }
            | Applied::Stale { .. }
            | Applied::Auth(_)
            | Applied::Denied(_) => None,
        }
    }
}

/// The session table with the index of the last entry applied to the map: read together
/// under the map's lock, they are the exact state at that index (checkpoints and snapshots
/// take them so; the datums themselves are read fuzzily after).
#[derive(Default)]
pub struct SessionState {
    pub table: Sessions,
    pub index: u64,
    /// The term of the entry at `index` (0 until one is known).
    pub term: u64,
    /// The configuration at `index`; `None` while unknown (a member that joins learns it
    /// from the leader).
    pub peers: Option<PeerSet>,
}

/// An online backup's view (`DatumSet::freeze`): the state at one applied index, kept
/// while writes go on. Each key a later entry changes first leaves its state at `index`
/// here (`None`: absent then), so the reader sees the map as it was, copy-on-write: memory
/// grows with the keys changed during the backup, at most one old version per key.
struct Frozen {
    id: u64,
    before: BTreeMap<String, Option<Datum>>,
    /// A snapshot install replaced the map: the view is gone.
    broken: bool,
}

/// Why a backup view could not be had.
#[derive(Debug, PartialEq, Eq)]
pub enum FreezeRefused {
    /// Another backup is being taken from this member.
    Busy,
    /// The map is still converging after a restart or a snapshot install, so it is not the
    /// state at any one index yet.
    Converging,
}

/// A backup in progress: pages of the datum set exactly as it was at `index`. Dropping it
/// ends the backup (and frees what it kept).
pub struct FrozenView<'a> {
    set: &'a DatumSet,
    id: u64,
    pub index: u64,
    pub term: u64,
    /// The access-control records at `index`, one JSON text each.
    pub auth: Vec<String>,
}

impl FrozenView<'_> {
    /// Up to `limit` datums after `after` in key order, as they were at `index`; `None` if a
    /// snapshot install replaced the map meanwhile (take the backup again).
    pub fn page(&self, after: Option<&str>, limit: usize) -> Option<Vec<Datum>> {
        use std::ops::Bound;
        let datums = self.set.datums.read().expect("datums lock");
        let frozen = self.set.frozen.lock().expect("frozen lock");
        let f = frozen.as_ref().filter(|f| f.id == self.id && !f.broken)?;
        let lower = || match after {
            Some(k) => Bound::Excluded(k.to_string()),
            None => Bound::Unbounded,
        };
        // Merge the live keys with the kept ones: a kept entry is the key's state then.
        let mut live = datums.range((lower(), Bound::Unbounded)).peekable();
        let mut kept = f.before.range((lower(), Bound::Unbounded)).peekable();
        let mut out = Vec::with_capacity(limit.min(1024));
        while out.len() < limit {
            let take_kept = match (live.peek(), kept.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((lk, _)), Some((kk, _))) => kk <= lk,
            };
            if take_kept {
                let (kk, then) = kept.next().expect("peeked");
                if live.peek().is_some_and(|(lk, _)| *lk == kk) {
                    live.next();
                }
                if let Some(d) = then {
                    out.push(d.clone());
                }
            } else {
                let (_, d) = live.next().expect("peeked");
                out.push(d.clone());
            }
        }
        Some(out)
    }
}

impl Drop for FrozenView<'_> {
    fn drop(&mut self) {
        let mut frozen = self.set.frozen.lock().expect("frozen lock");
        if frozen.as_ref().is_some_and(|f| f.id == self.id) {
            *frozen = None;
        }
    }
}

/// What one applied batch changes, borrowed from `apply` for each datum it sets.
struct Change<'a> {
    frozen: &'a mut Option<Frozen>,
    datums: &'a mut BTreeMap<String, Datum>,
    digests: &'a mut Digests,
    dirty: &'a mut HashMap<String, Option<Datum>>,
    events: &'a mut Vec<Event>,
}

/// Before a key changes under a backup's view: keeps its state at the view's index, once.
fn keep_frozen(frozen: &mut Option<Frozen>, key: &str, old: Option<&Datum>) {
    if let Some(f) = frozen.as_mut() {
        if !f.before.contains_key(key) {
            f.before.insert(key.to_string(), old.cloned());
        }
    }
}

/// Recent (index, digest) pairs kept for `nacosctl check`.
const DIGEST_HISTORY: usize = 100_000;

/// Order-independent digest of the datum set: XOR of a 64-bit FNV-1a hash of each datum's
/// key, value (canonical JSON: serde_json sorts object keys) and timestamp. Updated per
/// applied entry, so replicas can be compared at the same index.
fn datum_hash(d: &Datum) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(d.key.as_bytes());
    feed(&[0]);
    feed(d.value.to_string().as_bytes());
    feed(&[0]);
    feed(&d.timestamp.to_le_bytes());
    h
}

struct Digests {
    current: u64,
    recent: VecDeque<(u64, u64)>,
    /// Digests below this index are not recorded: after a restart the loaded files already
    /// reflect writes up to it, so a digest "at" an earlier replayed index would be wrong.
    floor: u64,
}

/// Applied state shared by the applier thread (writer) and request threads (readers).
pub struct DatumSet {
    data_dir: PathBuf,
    datums: RwLock<BTreeMap<String, Datum>>,
    applied: Mutex<u64>,
    applied_cv: Condvar,
    notifier: Notifier,
    digests: Mutex<Digests>,
    /// Latest state of each key not yet written to its file (None: remove the file).
    dirty: Mutex<HashMap<String, Option<Datum>>>,
    /// The highest entry index whose effect was queued in `dirty` (changed under its lock).
    dirty_upto: AtomicU64,
    /// How far the local log is durable.
    durable: DurableMark,
    /// Every change up to this index is in the datum files.
    flushed: Mutex<u64>,
    /// Serialises flush rounds, checkpoints and snapshot installs (all write the data dir).
    files: Mutex<()>,
    /// Whether the datum files are kept at all (`--datum-files`); off, the flusher only
    /// records the applied index (`store::datum_dir::write_applied_mark`).
    write_files: AtomicBool,
    /// The `base` of the checkpoint files on disk.
    checkpoints: Mutex<Checkpoints>,
    /// About the bytes of every publish applied since start (checkpoint cadence by bytes).
    applied_bytes: AtomicU64,
    /// About the bytes of the live datum set.
    live_bytes: AtomicU64,
    /// Client sessions (exactly-once writes), updated with the map.
    sessions: Mutex<SessionState>,
    /// Access control, updated with the map (under its lock, so a checkpoint or snapshot
    /// taken with the map held still has it exact at the sessions' index). Read by every
    /// client request, written only by auth changes.
    auth: RwLock<AuthTable>,
    /// The backup being taken from this member, if any.
    frozen: Mutex<Option<Frozen>>,
    next_frozen: AtomicU64,
}

/// One line of the state kept beside the datums (client sessions and access control), as
/// checkpoints and snapshots hold it.
pub enum SideRecord {
    Session(SessionRecord),
    Auth(AuthRecord),
    Peers(PeersRecord),
}

/// The configuration, as a side-state line: `{"peers":{"voters":[...],...}}`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PeersRecord {
    pub peers: PeerSet,
}

const PEERS_PREFIX: &str = "{\"peers\":";

/// The state kept beside the datums, exact at one index.
#[derive(Default)]
pub struct SideState {
    pub sessions: Sessions,
    pub auth: AuthTable,
    pub peers: Option<PeerSet>,
}

/// Parses one side-state line: an access-control record (it starts with
/// `auth::RECORD_PREFIX`) or a session record.
pub fn parse_side_line(line: &str) -> std::result::Result<SideRecord, String> {
    if line.starts_with(crate::auth::RECORD_PREFIX) {
        serde_json::from_str::<AuthRecord>(line)
            .map(SideRecord::Auth)
            .map_err(|e| format!("an access-control record does not parse: {e}"))
    } else if line.starts_with(PEERS_PREFIX) {
        let r = serde_json::from_str::<PeersRecord>(line)
            .map_err(|e| format!("a configuration record does not parse: {e}"))?;
        r.peers
            .validate()
            .map_err(|e| format!("a configuration record: {e}"))?;
        Ok(SideRecord::Peers(r))
    } else {
        serde_json::from_str::<SessionRecord>(line)
            .map(SideRecord::Session)
            .map_err(|e| format!("a session record does not parse: {e}"))
    }
}

/// Session records, the access-control table and the configuration from their JSON texts.
fn parse_sessions(lines: &[String]) -> std::result::Result<SideState, String> {
    let mut sessions = Vec::new();
    let mut auth = Vec::new();
    let mut peers = None;
    for l in lines {
        match parse_side_line(l)? {
            SideRecord::Session(r) => sessions.push(r),
            SideRecord::Auth(r) => auth.push(r),
            SideRecord::Peers(r) => peers = Some(r.peers),
        }
    }
    Ok(SideState {
        sessions: Sessions::from_records(sessions),
        auth: AuthTable::from_records(auth),
        peers,
    })
}

/// The side-state line that records `peers`.
pub fn peers_line(peers: &PeerSet) -> String {
    serde_json::to_string(&PeersRecord {
        peers: peers.clone(),
    })
    .expect("a configuration serialises")
}

/// The sessions and access control a snapshot install left beside its datum files
/// (`data/.sessions`), exact at the snapshot's point: used when start-up loads the datum
/// files (no checkpoint yet).
pub fn read_sessions_file(data_dir: &std::path::Path) -> Result<SideState> {
    let path = datum_dir::datum_root(data_dir).join(SESSIONS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SideState::default()),
        Err(e) => return Err(Error::store(&path, e)),
    };
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    parse_sessions(&lines).map_err(|reason| Error::Corrupt {
        path,
        offset: 0,
        reason,
    })
}

/// Name of the sessions file in a snapshot's staged datum dir (hidden: datum walks skip it).
pub const SESSIONS_FILE: &str = ".sessions";

/// About what a datum costs, as JSON text.
fn datum_bytes(d: &Datum) -> u64 {
    (64 + d.key.len() + crate::datum::approx_json_size(&d.value)) as u64
}

/// The `base` of each checkpoint file on disk (`store::checkpoint`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoints {
    pub newest: Option<u64>,
    /// The log is compacted only up to this one, so a damaged newest checkpoint still
    /// leaves a complete way to start.
    pub previous: Option<u64>,
}

/// How long a flush round or a checkpoint waits for the log to be durable up to what it
/// would write before it gives up for this round: far above one `fdatasync`, and short
/// enough that a stop is not held up by a log that never catches up.
const DURABLE_WAIT: Duration = Duration::from_secs(5);

/// How far the local log is durable, as the driver last saw it (`RaftCore::stable_index`:
/// lowered when a truncation is decided, raised once the write is durable). `u64::MAX`, the
/// start, stands for no log behind the set (`nacosctl dump`, tests) or for one that holds
/// all that applied (start-up replays only durable entries; a clean stop closed the log);
/// the driver sets it before it hands the applier any entry it committed.
///
/// Not a `Mutex<u64>` and `Condvar` like `applied`: the driver sets it every turn, and
/// `Condvar::notify_all` makes a system call whether or not anyone waits; here only the
/// rare flush round or checkpoint that waits is woken.
struct DurableMark {
    index: AtomicU64,
    /// Threads in [`DurableMark::wait`]: the driver takes the lock to wake them only when
    /// there are some, so its turns pay one atomic load otherwise.
    waiters: AtomicUsize,
    lock: Mutex<()>,
    moved: Condvar,
}

impl Default for DurableMark {
    fn default() -> Self {
        DurableMark {
            index: AtomicU64::new(u64::MAX),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            moved: Condvar::new(),
        }
    }
}

impl DurableMark {
    fn set(&self, index: u64) {
        self.index.store(index, Ordering::SeqCst);
        // After the store: a waiter that registered too late to be seen here reads the
        // new index after registering.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _held = self.lock.lock().expect("durable lock");
            self.moved.notify_all();
        }
    }

    /// Waits until the log is durable up to `index`: `Error::Timeout` when
    /// [`DURABLE_WAIT`] passes first.
    fn wait(&self, index: u64) -> Result<()> {
        if self.index.load(Ordering::SeqCst) >= index {
            return Ok(());
        }
        let deadline = Instant::now() + DURABLE_WAIT;
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut held = self.lock.lock().expect("durable lock");
        let reached = loop {
            if self.index.load(Ordering::SeqCst) >= index {
                break true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            held = self.moved.wait_timeout(held, left).expect("durable lock").0;
        };
        drop(held);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        if reached {
            Ok(())
        } else {
            Err(Error::Timeout {
                waited_ms: DURABLE_WAIT.as_millis() as u64,
            })
        }
    }
}

impl DatumSet {
    /// Records how far the local log is durable: what checkpoints and datum files may
    /// reflect. The driver calls it before it hands committed entries to the applier, so
    /// a lowered mark (a truncation decided) is seen before anything past it applies.
    pub fn set_durable(&self, index: u64) {
        self.durable.set(index);
    }

    /// Loads the datum files of a data dir. Each holds the index that wrote it, so the log
    /// replay that follows can skip what a file already reflects.
    pub fn load(data_dir: PathBuf) -> Result<DatumSet> {
        let datums = datum_dir::read_datum_dir(&data_dir)?
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        let side = read_sessions_file(&data_dir)?;
        let sm = DatumSet::with_datums(data_dir, datums, 0);
        {
            let mut s = sm.sessions.lock().expect("sessions lock");
            s.table = side.sessions;
            s.peers = side.peers;
        }
        *sm.auth.write().expect("auth lock") = side.auth;
        Ok(sm)
    }

    /// Loads the state a restart begins from: the newest usable checkpoint (one sequential
    /// read), else, when the data dir has no checkpoint at all (a new node, or just after a
    /// snapshot install), the datum files (one read per key). Returns the state and the
    /// index it reflects everything up to (0 when loaded from datum files: the log's start
    /// says it then). The log holds the entries after `log_start` up to `log_end`.
    pub fn open(data_dir: PathBuf, log_start: u64, log_end: u64) -> Result<(DatumSet, u64)> {
        DatumSet::open_as(data_dir, log_start, log_end, false)
    }

    /// [`DatumSet::open`] for a reader that must not write (`nacosctl dump`): a damaged
    /// newest checkpoint is skipped but not moved aside.
    pub fn open_read_only(
        data_dir: PathBuf,
        log_start: u64,
        log_end: u64,
    ) -> Result<(DatumSet, u64)> {
        DatumSet::open_as(data_dir, log_start, log_end, true)
    }

    fn open_as(
        data_dir: PathBuf,
        log_start: u64,
        log_end: u64,
        read_only: bool,
    ) -> Result<(DatumSet, u64)> {
        let newest = checkpoint::checkpoint_path(&data_dir);
        let previous = checkpoint::previous_path(&data_dir);
        let mut problems = Vec::new();
        let mut found = None;
        for path in [&newest, &previous] {
            match checkpoint::read_at(path) {
                Ok(None) if path == &newest && previous.exists() => {
                    problems.push(format!("{} is missing", path.display()))
                }
                Ok(None) => {}
                Ok(Some(c)) if c.base < log_start => problems.push(format!(
                    "{}: it holds the state at index {}, but the log starts after {log_start}",
                    path.display(),
                    c.base
                )),
                Ok(Some(c)) => {
                    found = Some((path == &previous, c));
                    break;
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        let unrecoverable = |reason: String| Error::Unrecoverable {
            dir: data_dir.clone(),
            reason,
        };
        let Some((from_previous, c)) = found else {
            if problems.is_empty() {
                // No checkpoint at all. The datum files are the state only if the log
                // reaches back to where they were complete: a new node (the log starts at
                // 0), or a snapshot just installed (marked complete at its index).
                let complete = datum_dir::complete_at(&data_dir).unwrap_or(0);
                if log_start > complete {
                    return Err(unrecoverable(format!(
                        "the log starts after index {log_start} (the entries before it were compacted into checkpoints), but neither {} nor {} exists, so the state up to {log_start} is missing. {}",
                        newest.display(),
                        previous.display(),
                        crate::store::WAY_OUT
                    )));
                }
                return Ok((DatumSet::load(data_dir)?, 0));
            }
            // The log was compacted up to the previous checkpoint, so with neither usable
            // the log alone cannot rebuild the state. Nothing is guessed.
            return Err(unrecoverable(format!(
                "no usable checkpoint ({}). In a cluster: move this data dir aside and start the member with an empty one; it catches up from the leader by snapshot. Standalone: restore the data dir from a backup, or delete both checkpoint files to start from the datum files, which may lack writes made shortly before a power cut",
                problems.join("; ")
            )));
        };
        if c.end > log_end {
            // Applied entries were durable in the log first, so a checkpoint can never hold
            // writes the log does not reach: the log lost its tail after it was written.
            return Err(unrecoverable(format!(
                "the log ends at index {log_end}, but the checkpoint holds writes applied up to {}: acknowledged entries are missing from the log. {}",
                c.end,
                crate::store::WAY_OUT
            )));
        }
        if from_previous && !read_only {
            // Move the damaged newest checkpoint aside (for inspection), so that the next
            // checkpoint does not rotate it into the previous slot, which bounds compaction.
            let aside = data_dir.join("checkpoint.damaged");
            let kept = if newest.exists() {
                std::fs::rename(&newest, &aside).map_err(|e| Error::store(&newest, e))?;
                format!("; the damaged file is kept as {}", aside.display())
            } else {
                String::new()
            };
            super::log_event(&format!(
                "warning: {}; starting from the previous checkpoint (index {}) and the log{kept}",
                problems.join("; "),
                c.base,
            ));
        }
        let base = c.base;
        let side = parse_sessions(&c.sessions).map_err(|why| Error::Corrupt {
            path: if from_previous {
                previous.clone()
            } else {
                newest.clone()
            },
            offset: 0,
            reason: why,
        })?;
        let sm = DatumSet::with_datums(data_dir, c.datums, c.end);
        {
            let mut s = sm.sessions.lock().expect("sessions lock");
            s.table = side.sessions;
            s.peers = side.peers;
        }
        *sm.auth.write().expect("auth lock") = side.auth;
        let previous_base = if from_previous {
            None
        } else {
            // Unreadable: no compaction until the next checkpoint replaces it.
            checkpoint::read_base(&previous).ok().flatten()
        };
        *sm.checkpoints.lock().expect("checkpoint lock") = Checkpoints {
            newest: (!from_previous).then_some(base),
            previous: if from_previous {
                Some(base)
            } else {
                previous_base
            },
        };
        {
            // Datums newer than `base` were read into the checkpoint while the flush that
            // writes their files may not have run before a crash, and the replay skips what
            // the checkpoint holds, so those keys are queued for the next flush.
            let datums = sm.datums.read().expect("datums lock");
            let mut dirty = sm.dirty.lock().expect("dirty lock");
            for d in datums.values().filter(|d| d.index > base) {
                dirty.insert(d.key.clone(), Some(d.clone()));
            }
        }
        Ok((sm, base))
    }

    /// A datum set holding `datums`, which reflect every write up to some index and,
    /// per key, possibly later ones. Until the replay passes `exact_from` (and the newest
    /// datum) the map is not the state at any one index, so no event before it is kept for
    /// watchers.
    fn with_datums(data_dir: PathBuf, datums: Vec<Datum>, exact_from: u64) -> DatumSet {
        let datums: BTreeMap<String, Datum> =
            datums.into_iter().map(|d| (d.key.clone(), d)).collect();
        // Events below the newest loaded datum were folded into the files or the checkpoint,
        // not recorded.
        let floor = datums
            .values()
            .map(|d| d.index)
            .max()
            .unwrap_or(0)
            .max(exact_from)
            + 1;
        let digest = datums.values().map(datum_hash).fold(0, |a, h| a ^ h);
        let live: u64 = datums.values().map(datum_bytes).sum();
        DatumSet {
            data_dir,
            datums: RwLock::new(datums),
            applied: Mutex::new(0),
            applied_cv: Condvar::new(),
            notifier: Notifier::new(floor),
            digests: Mutex::new(Digests {
                current: digest,
                recent: VecDeque::new(),
                floor: floor - 1,
            }),
            dirty: Mutex::new(HashMap::new()),
            dirty_upto: AtomicU64::new(0),
            durable: DurableMark::default(),
            flushed: Mutex::new(0),
            files: Mutex::new(()),
            write_files: AtomicBool::new(true),
            checkpoints: Mutex::new(Checkpoints::default()),
            applied_bytes: AtomicU64::new(0),
            live_bytes: AtomicU64::new(live),
            sessions: Mutex::new(SessionState::default()),
            auth: RwLock::new(AuthTable::default()),
            frozen: Mutex::new(None),
            next_frozen: AtomicU64::new(1),
        }
    }

    /// At start-up: the datum files reflect at least the log's start point (a checkpoint
    /// or an installed snapshot), so everything up to it counts as applied. Until the replay
    /// passes `log_end` the map is converging from files that may not be a consistent cut
    /// (a crash mid-flush), so no digest is recorded before it. When there is nothing to
    /// replay, the loaded state is the exact state at `index`, and its digest is recorded
    /// at once (else `nacosctl check` found no digest to compare until the next write).
    pub fn start_at(&self, index: u64, log_end: u64) {
        {
            let mut d = self.digests.lock().expect("digest lock");
            d.floor = d.floor.max(log_end);
            if index >= d.floor && d.recent.is_empty() {
                let current = d.current;
                d.recent.push_back((index, current));
            }
        }
        self.notifier.notified_at_least(index);
        {
            let mut sessions = self.sessions.lock().expect("sessions lock");
            sessions.index = sessions.index.max(index);
        }
        let mut applied = self.applied.lock().expect("applied lock");
        *applied = (*applied).max(index);
        *self.flushed.lock().expect("flushed lock") = index;
    }

    /// About the bytes of the publishes applied since start, and of the live datum set.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.applied_bytes.load(Ordering::Relaxed),
            self.live_bytes.load(Ordering::Relaxed),
        )
    }

    pub fn applied_index(&self) -> u64 {
        *self.applied.lock().expect("applied lock")
    }

    /// Waits until `index` is applied; false on timeout.
    pub fn wait_applied(&self, index: u64, deadline: Instant) -> bool {
        let mut applied = self.applied.lock().expect("applied lock");
        while *applied < index {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            applied = self
                .applied_cv
                .wait_timeout(applied, deadline - now)
                .expect("applied lock")
                .0;
        }
        true
    }

    pub fn get(&self, key: &str) -> Option<Datum> {
        self.datums.read().expect("datums lock").get(key).cloned()
    }

    pub fn list(&self, prefix: &str) -> Vec<Datum> {
        self.datums
            .read()
            .expect("datums lock")
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, d)| d.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.datums.read().expect("datums lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn record_digest(&self, digests: &mut Digests, index: u64) {
        let current = digests.current;
        if index >= digests.floor {
            digests.recent.push_back((index, current));
        }
        if digests.recent.len() > DIGEST_HISTORY {
            digests.recent.pop_front();
        }
    }

    /// Sets `d` (applied at its index) with everything that follows from it: the digest,
    /// the byte counts, the CHANGE event for listeners and the file write.
    fn put(&self, c: &mut Change<'_>, d: Datum) {
        c.events.push(Event {
            event: EventKind::Change,
            key: d.key.clone(),
            value: Some(d.value.clone()),
            timestamp: d.timestamp,
            index: d.index,
        });
        c.digests.current ^= datum_hash(&d);
        let bytes = datum_bytes(&d);
        self.applied_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.live_bytes.fetch_add(bytes, Ordering::Relaxed);
        keep_frozen(c.frozen, &d.key, c.datums.get(&d.key));
        if let Some(old) = c.datums.insert(d.key.clone(), d.clone()) {
            c.digests.current ^= datum_hash(&old);
            self.live_bytes
                .fetch_sub(datum_bytes(&old), Ordering::Relaxed);
        }
        if self.writes_files() {
            c.dirty.insert(d.key.clone(), Some(d));
        }
    }

    /// Applies committed entries in order and returns each one's result. The datum files
    /// follow in the next `flush` round.
    pub fn apply(&self, entries: &[Entry]) -> Result<Vec<(u64, u64, Applied)>> {
        // Entries at or below the applied index were covered by an installed snapshot.
        let floor = self.applied_index();
        let skip = entries.iter().take_while(|e| e.index <= floor).count();
        let entries = &entries[skip..];
        let mut results = Vec::with_capacity(entries.len());
        let mut events = Vec::new();
        // Last state of every key touched by this batch: one file write per key.
        let mut dirty: HashMap<String, Option<Datum>> = HashMap::new();
        {
            let mut datums = self.datums.write().expect("datums lock");
            let mut digests = self.digests.lock().expect("digest lock");
            let mut sessions = self.sessions.lock().expect("sessions lock");
            let mut frozen = self.frozen.lock().expect("frozen lock");
            for e in entries {
                sessions.index = e.index;
                sessions.term = e.term;
                // A request applied before is answered as then and changes nothing; an old
                // one (its client has moved on) is not applied at all.
                let request = match &e.command {
                    Command::Publish { request, .. } | Command::Delete { request, .. } => {
                        request.as_ref()
                    }
                    Command::Noop
                    | Command::Auth { .. }
                    | Command::Import { .. }
                    | Command::Config { .. } => None,
                };
                if let Some(req) = request {
                    let answered = match sessions.table.decide(req) {
                        Decision::Apply => None,
                        Decision::Duplicate(first) => {
                            sessions.table.touch(&req.client, e.index);
                            Some(Applied::Duplicate {
                                at: LogId::new(first.index, first.term),
                                outcome: first.outcome,
                            })
                        }
                        Decision::Stale { latest } => Some(Applied::Stale { latest }),
                    };
                    if let Some(applied) = answered {
                        results.push((e.index, e.term, applied));
                        self.record_digest(&mut digests, e.index);
                        continue;
                    }
                }
                // Compare-and-set: judged against the key as the entries before this one
                // left it (a datum written at or after this index means a replay over a
                // newer datum: nothing to judge, as for any write). A failed condition
                // changes nothing.
                let failed = match &e.command {
                    Command::Publish {
                        key,
                        if_timestamp: Some(want),
                        ..
                    }
                    | Command::Delete {
                        key,
                        if_timestamp: Some(want),
                        ..
                    } => {
                        let prev = datums.get(key);
                        let current = prev.map_or(0, |d| d.timestamp);
                        let replayed = prev.is_some_and(|d| d.index >= e.index);
                        (!replayed && current != *want).then_some(current)
                    }
                    _ => None,
                };
                // Access control, judged in log order: the table as the entries before
                // this one left it.
                let denied = match &e.command {
                    Command::Publish { key, user, .. } | Command::Delete { key, user, .. } => {
                        let auth = self.auth.read().expect("auth lock");
                        match user {
                            _ if !auth.enabled() => None,
                            None => Some(format!(
                                "access control was turned on before this write to {key:?} was applied; log in and send it again"
                            )),
                            Some(u) => auth
                                .check(u, crate::auth::Access::Write, key)
                                .err()
                                .map(|r| r.to_string()),
                        }
                    }
                    Command::Import { datums, user } => {
                        let auth = self.auth.read().expect("auth lock");
                        match user {
                            _ if !auth.enabled() => None,
                            None => Some(
                                "access control was turned on before this import was applied; log in and send it again"
                                    .to_string(),
                            ),
                            Some(u) => datums.iter().find_map(|d| {
                                auth.check(u, crate::auth::Access::Write, &d.key)
                                    .err()
                                    .map(|r| r.to_string())
                            }),
                        }
                    }
                    _ => None,
                };
                let applied = match &e.command {
                    _ if denied.is_some() => Applied::Denied(denied.clone().unwrap_or_default()),
                    _ if failed.is_some() => Applied::PreconditionFailed {
                        current: failed.unwrap_or(0),
                    },
                    Command::Noop => Applied::Noop,
                    Command::Config { peers } => {
                        sessions.peers = Some(peers.clone());
                        Applied::Config(peers.clone())
                    }
                    Command::Auth { change } => {
                        Applied::Auth(self.auth.write().expect("auth lock").apply(change, e.index))
                    }
                    Command::Publish { key, value, .. } => {
                        let prev = datums.get(key);
                        if prev.is_some_and(|d| d.index >= e.index) {
                            // Replay after a restart: the file already holds this write.
                            Applied::Published {
                                timestamp: prev.map_or(0, |d| d.timestamp),
                            }
                        } else {
                            // Nacos: 1 for a new key, previous + 1 otherwise.
                            let timestamp = prev.map_or(1, |d| d.timestamp + 1);
                            let d = Datum {
                                key: key.clone(),
                                value: value.clone(),
                                timestamp,
                                index: e.index,
                            };
                            let mut change = Change {
                                datums: &mut datums,
                                digests: &mut digests,
                                dirty: &mut dirty,
                                events: &mut events,
                                frozen: &mut frozen,
                            };
                            self.put(&mut change, d);
                            Applied::Published { timestamp }
                        }
                    }
                    Command::Import { datums: batch, .. } => {
                        let mut skipped = Vec::new();
                        for (i, imported) in batch.iter().enumerate() {
                            let prev = datums.get(&imported.key);
                            // Same or newer already there (a re-run, or a later write), or
                            // a replay over a file that holds this entry: left alone.
                            let keep = prev.is_some_and(|d| {
                                d.timestamp >= imported.timestamp || d.index >= e.index
                            });
                            if keep {
                                skipped.push(i as u32);
                                continue;
                            }
                            let d = Datum {
                                key: imported.key.clone(),
                                value: imported.value.clone(),
                                timestamp: imported.timestamp,
                                index: e.index,
                            };
                            let mut change = Change {
                                datums: &mut datums,
                                digests: &mut digests,
                                dirty: &mut dirty,
                                events: &mut events,
                                frozen: &mut frozen,
                            };
                            self.put(&mut change, d);
                        }
                        Applied::Imported { skipped }
                    }
                    Command::Delete { key, .. } => match datums.get(key) {
                        Some(d) if d.index >= e.index => Applied::Deleted { existed: false },
                        Some(d) => {
                            events.push(Event {
                                event: EventKind::Delete,
                                key: key.clone(),
                                value: None,
                                timestamp: d.timestamp,
                                index: e.index,
                            });
                            keep_frozen(&mut frozen, key, datums.get(key));
                            if let Some(old) = datums.remove(key) {
                                digests.current ^= datum_hash(&old);
                                self.live_bytes
                                    .fetch_sub(datum_bytes(&old), Ordering::Relaxed);
                            }
                            dirty.insert(key.clone(), None);
                            Applied::Deleted { existed: true }
                        }
                        None => {
                            // Make sure no file survives (a replayed delete after a crash
                            // that happened between the map update and the unlink).
                            dirty.insert(key.clone(), None);
                            Applied::Deleted { existed: false }
                        }
                    },
                };
                if let (Some(req), Some(outcome)) = (request, applied.outcome()) {
                    sessions.table.record(req, e.index, e.term, outcome);
                }
                results.push((e.index, e.term, applied));
                self.record_digest(&mut digests, e.index);
            }
        }
        if !dirty.is_empty() && self.writes_files() {
            let mut queued = self.dirty.lock().expect("dirty lock");
            queued.extend(dirty);
            if let Some(last) = entries.last() {
                self.dirty_upto.fetch_max(last.index, Ordering::SeqCst);
            }
        }
        // Listeners first: once a reader sees the applied index move, the events up to it
        // are already queued for every watcher.
        self.notifier
            .notify(events, entries.last().map_or(0, |e| e.index));
        if let Some(last) = entries.last() {
            let mut applied = self.applied.lock().expect("applied lock");
            *applied = (*applied).max(last.index);
            self.applied_cv.notify_all();
        }
        Ok(results)
    }

    /// Writes every queued datum change to its file; returns the applied index the files
    /// now reflect. Rounds run one at a time (the caller serialises them). `Error::Timeout`
    /// when the log here did not become durable up to the queued changes in time: they
    /// stay queued for the next round.
    pub fn flush(&self) -> Result<u64> {
        let _files = self.files.lock().expect("files lock");
        self.flush_files()
    }

    fn flush_files(&self) -> Result<u64> {
        // Read the applied index before taking the queue: everything applied up to it is
        // either in this round's batch or was written by an earlier round.
        let upto = self.applied_index();
        // For `nacosctl dump` of a member that stopped without a clean stop: how far its
        // log was applied (so committed) about a second before (see `store::datum_dir`).
        datum_dir::write_applied_mark(&self.data_dir, upto)?;
        let (batch, newest) = {
            let mut dirty = self.dirty.lock().expect("dirty lock");
            (
                std::mem::take(&mut *dirty),
                self.dirty_upto.load(Ordering::SeqCst),
            )
        };
        let batch = if self.writes_files() {
            batch
        } else {
            HashMap::new()
        };
        if !batch.is_empty() {
            // A file must not show a write the log here may still lose in a crash (it is
            // committed, but a restart without a checkpoint would load the file as the
            // state and replay a log that ends before it). Next round, then.
            if let Err(e) = self.durable.wait(newest) {
                self.requeue(batch);
                return Err(e);
            }
        }
        // With a checkpoint on disk, restarts read it and the log, never the files, so a
        // file may be rewritten in place (a crash can tear it; the check after an unclean
        // stop repairs it). Without one (a new node, just after a snapshot install) a
        // restart loads the files, so each is replaced atomically.
        let in_place = self.checkpoints().newest.is_some();
        let mut pending = batch.into_iter();
        while let Some((key, d)) = pending.next() {
            let written = match &d {
                Some(d) if in_place => datum_dir::overwrite_datum(&self.data_dir, d).map(drop),
                Some(d) => datum_dir::write_datum(&self.data_dir, d).map(drop),
                None => datum_dir::remove_datum(&self.data_dir, &key).map(drop),
            };
            if let Err(e) = written {
                // A retry (after descriptors come back, say) writes them.
                self.requeue(std::iter::once((key, d)).chain(pending));
                return Err(e);
            }
        }
        let mut flushed = self.flushed.lock().expect("flushed lock");
        *flushed = (*flushed).max(upto);
        Ok(*flushed)
    }

    /// Puts changes a flush round took back into the queue; a change queued meanwhile is
    /// newer and wins.
    fn requeue(&self, changes: impl IntoIterator<Item = (String, Option<Datum>)>) {
        let mut dirty = self.dirty.lock().expect("dirty lock");
        for (k, v) in changes {
            dirty.entry(k).or_insert(v);
        }
    }

    /// Writes a checkpoint: flushes the datum files, then writes the whole datum set to the
    /// checkpoint file, read from the live map in chunks (bounded memory; writes go on
    /// meanwhile, see `store::checkpoint`). Returns the checkpoint's `base` and the file's
    /// size. The datum files are not synced: restarts do not depend on them.
    pub fn checkpoint(&self) -> Result<(u64, u64)> {
        let _files = self.files.lock().expect("files lock");
        self.flush_files()?;
        // The base is where the sessions are exact: taken with the map held still, so
        // every effect up to it is in the map the datums are read from next. (The datum
        // files may trail it; the check at start-up repairs any a crash leaves stale.)
        let (base, lines) = self.capture_sessions();
        let mut w = checkpoint::CheckpointWriter::create(&self.data_dir, base)?;
        w.add_sessions(&lines)?;
        let mut after: Option<String> = None;
        let mut newest = base;
        loop {
            let chunk = self.list_after(after.as_deref(), 4096);
            let Some(last) = chunk.last() else { break };
            after = Some(last.key.clone());
            for d in &chunk {
                newest = newest.max(d.index);
                w.add(d)?;
            }
        }
        let end = self.applied_index();
        // Published only once the log is durable up to all it holds: a start-up refuses a
        // checkpoint ahead of the log (an acknowledged write would be missing from it).
        self.durable.wait(end.max(newest))?;
        let bytes = w.finish(end)?;
        let mut c = self.checkpoints.lock().expect("checkpoint lock");
        *c = Checkpoints {
            newest: Some(base),
            // `finish` moved the newest file into the previous slot (if there was one).
            previous: c.newest.or(c.previous),
        };
        Ok((base, bytes))
    }

    /// The highest index any datum was last written at (0 when empty).
    pub fn newest_index(&self) -> u64 {
        let datums = self.datums.read().expect("datums lock");
        datums.values().map(|d| d.index).max().unwrap_or(0)
    }

    /// Keeps the datum files (the Nacos layout under `data/`) behind the state, or not.
    pub fn set_write_files(&self, on: bool) {
        self.write_files.store(on, Ordering::Relaxed);
        if !on {
            self.dirty.lock().expect("dirty lock").clear();
        }
    }

    /// Whether the datum files are kept (`--datum-files on`).
    pub fn writes_files(&self) -> bool {
        self.write_files.load(Ordering::Relaxed)
    }

    /// The checkpoint files on disk.
    pub fn checkpoints(&self) -> Checkpoints {
        *self.checkpoints.lock().expect("checkpoint lock")
    }

    /// Brings the datum files back in line with the state after a crash: a power cut can
    /// lose file writes the page cache held, so every file is read and compared, and files
    /// that are stale, damaged, missing or left over from a deleted key are queued for the
    /// next flush. Runs beside serving; reads in batches, so memory stays bounded. Returns
    /// (files checked, files queued).
    pub fn reconcile_files(&self) -> Result<(usize, usize)> {
        const BATCH: usize = 16_384;
        let root = datum_dir::datum_root(&self.data_dir);
        let files = datum_dir::DatumFiles::walk(&self.data_dir)?;
        let mut seen: HashSet<String> = HashSet::with_capacity(files.len());
        let mut queued = 0;
        let mut queue =
            |dirty: &mut HashMap<String, Option<Datum>>, key: &str, want: Option<&Datum>| {
                // A change queued meanwhile is newer than what is read here: it wins.
                if !dirty.contains_key(key) {
                    dirty.insert(key.to_string(), want.cloned());
                    queued += 1;
                }
            };
        for start in (0..files.len()).step_by(BATCH) {
            let batch = files.read(start..(start + BATCH).min(files.len()));
            // Compared under the map's lock: a later apply re-queues its key after this.
            let datums = self.datums.read().expect("datums lock");
            let mut dirty = self.dirty.lock().expect("dirty lock");
            for (path, got) in batch {
                let key = match &got {
                    Ok(d) => d.key.clone(),
                    Err(_) => match path
                        .strip_prefix(&root)
                        .ok()
                        .and_then(crate::datum::key_from_rel_path)
                    {
                        Some(k) => k,
                        None => {
                            super::log_event(&format!(
                                "warning: {} is not a datum file; leaving it alone",
                                path.display()
                            ));
                            continue;
                        }
                    },
                };
                let want = datums.get(&key);
                if got.as_ref().ok() != want {
                    queue(&mut dirty, &key, want);
                }
                seen.insert(key);
            }
        }
        let datums = self.datums.read().expect("datums lock");
        let mut dirty = self.dirty.lock().expect("dirty lock");
        for (key, d) in datums.iter().filter(|(k, _)| !seen.contains(*k)) {
            queue(&mut dirty, key, Some(d));
        }
        Ok((files.len(), queued))
    }

    /// Up to `limit` datums with keys after `after` (all keys from the start with `None`),
    /// in key order: a cursor over the live map, so a snapshot is streamed in bounded
    /// memory. The result is "fuzzy" (later chunks may reflect later writes); that is safe
    /// because every datum carries its index and the receiver replays the log after the
    /// snapshot's start with per-key skipping, like a restart.
    pub fn list_after(&self, after: Option<&str>, limit: usize) -> Vec<Datum> {
        use std::ops::Bound;
        let datums = self.datums.read().expect("datums lock");
        let lower = match after {
            Some(k) => Bound::Excluded(k.to_string()),
            None => Bound::Unbounded,
        };
        datums
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Replaces the applied state with a snapshot staged in the data dir (whose install was
    /// decided): puts its checkpoint in place, loads the map from it, queues every datum
    /// file that differs for the flusher (the files trail the state, as after a crash), and
    /// closes every listener, since their event streams have a gap (a watcher resuming gets
    /// `Compacted`).
    pub fn install_snapshot(&self, index: u64) -> Result<()> {
        let _files = self.files.lock().expect("files lock");
        crate::store::snapshot::swap_in(&self.data_dir)?;
        let path = checkpoint::checkpoint_path(&self.data_dir);
        let c = checkpoint::read_at(&path)?.ok_or_else(|| Error::Corrupt {
            path: path.clone(),
            offset: 0,
            reason: "the installed snapshot's checkpoint is missing".into(),
        })?;
        *self.checkpoints.lock().expect("checkpoint lock") = Checkpoints {
            newest: Some(c.base),
            previous: None,
        };
        let side = parse_sessions(&c.sessions).map_err(|reason| Error::Corrupt {
            path: path.clone(),
            offset: 0,
            reason,
        })?;
        let loaded: BTreeMap<String, Datum> =
            c.datums.into_iter().map(|d| (d.key.clone(), d)).collect();
        // With the datum files kept, every one is rewritten from the new state, and those of
        // keys the snapshot lacks go. Without them, nothing is walked or queued.
        let mut rewrite: HashMap<String, Option<Datum>> = HashMap::new();
        if self.writes_files() {
            let old_files = datum_dir::DatumFiles::walk(&self.data_dir)?.keys();
            rewrite.extend(
                old_files
                    .into_iter()
                    .filter(|k| !loaded.contains_key(k))
                    .map(|k| (k, None)),
            );
            rewrite.extend(loaded.values().map(|d| (d.key.clone(), Some(d.clone()))));
        }
        let digest = loaded.values().map(datum_hash).fold(0, |a, h| a ^ h);
        self.live_bytes
            .store(loaded.values().map(datum_bytes).sum(), Ordering::Relaxed);
        // The snapshot is fuzzy: some datums are newer than `index`. Until the log passes the
        // newest of them the map is not the exact state at any one index, so no digest is
        // recorded and no watch may resume before it (as after a restart).
        let newest = loaded.values().map(|d| d.index).max().unwrap_or(0);
        {
            let mut map = self.datums.write().expect("datums lock");
            *map = loaded;
            let mut sessions = self.sessions.lock().expect("sessions lock");
            let peers = side.peers.or_else(|| sessions.peers.take());
            *sessions = SessionState {
                table: side.sessions,
                index,
                term: 0,
                peers,
            };
            if let Some(f) = self.frozen.lock().expect("frozen lock").as_mut() {
                f.broken = true;
            }
            *self.auth.write().expect("auth lock") = side.auth;
        }
        *self.dirty.lock().expect("dirty lock") = rewrite;
        {
            let mut d = self.digests.lock().expect("digest lock");
            d.current = digest;
            d.recent.clear();
            d.floor = (index + 1).max(newest);
        }
        self.notifier.reset(index.max(newest) + 1, index);
        *self.flushed.lock().expect("flushed lock") = index;
        let mut applied = self.applied.lock().expect("applied lock");
        *applied = (*applied).max(index);
        self.applied_cv.notify_all();
        Ok(())
    }

    /// The datum-set digest right after applying `index`, if still remembered.
    pub fn digest_at(&self, index: u64) -> Option<u64> {
        let d = self.digests.lock().expect("digest lock");
        d.recent
            .binary_search_by_key(&index, |(i, _)| *i)
            .ok()
            .map(|pos| d.recent[pos].1)
    }

    /// The digest of the current datum set and the index it reflects.
    pub fn digest(&self) -> (u64, u64) {
        let d = self.digests.lock().expect("digest lock");
        (d.recent.back().map_or(0, |(i, _)| *i), d.current)
    }

    /// The side state (client sessions and access control) as JSON lines, and the index
    /// they are exact at, taken with the map held still (a checkpoint's or a snapshot's
    /// base).
    /// Starts a backup: a view of the datum set exactly as it is now, at the applied index,
    /// that stays so while writes go on (one backup at a time per member).
    pub fn freeze(&self) -> std::result::Result<FrozenView<'_>, FreezeRefused> {
        // Under the map's read lock nothing is applied, so the floor, the index and the term
        // read one after the other describe one state (and the locks are taken in the
        // order `apply` takes them).
        let _map = self.datums.read().expect("datums lock");
        // Digests are recorded from the first index at which the map is exact.
        let floor = self.digests.lock().expect("digest lock").floor;
        let sessions = self.sessions.lock().expect("sessions lock");
        let mut frozen = self.frozen.lock().expect("frozen lock");
        if frozen.is_some() {
            return Err(FreezeRefused::Busy);
        }
        if sessions.index < floor || (sessions.index > 0 && sessions.term == 0) {
            return Err(FreezeRefused::Converging);
        }
        let id = self.next_frozen.fetch_add(1, Ordering::Relaxed);
        *frozen = Some(Frozen {
            id,
            before: BTreeMap::new(),
            broken: false,
        });
        let auth = self
            .auth
            .read()
            .expect("auth lock")
            .records()
            .iter()
            .map(|r| serde_json::to_string(r).expect("auth records serialise"))
            .collect();
        Ok(FrozenView {
            set: self,
            id,
            index: sessions.index,
            term: sessions.term,
            auth,
        })
    }

    /// At start-up, after `start_at`: the term of the entry at the start index (the
    /// checkpoint's or the installed snapshot's), until an applied entry says it.
    pub fn note_start_term(&self, term: u64) {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if sessions.term == 0 {
            sessions.term = term;
        }
    }

    /// The datums kept for a backup's view (for tests and metrics).
    pub fn frozen_kept(&self) -> usize {
        self.frozen
            .lock()
            .expect("frozen lock")
            .as_ref()
            .map_or(0, |f| f.before.len())
    }

    pub fn capture_sessions(&self) -> (u64, Vec<String>) {
        let _map = self.datums.read().expect("datums lock");
        let s = self.sessions.lock().expect("sessions lock");
        let auth = self.auth.read().expect("auth lock");
        let mut lines: Vec<String> = s
            .table
            .records()
            .iter()
            .map(|r| serde_json::to_string(r).expect("sessions serialise"))
            .collect();
        lines.extend(
            auth.records()
                .iter()
                .map(|r| serde_json::to_string(r).expect("auth records serialise")),
        );
        lines.extend(s.peers.as_ref().map(peers_line));
        (s.index, lines)
    }

    /// The configuration at the applied index, if known.
    pub fn peer_set(&self) -> Option<PeerSet> {
        self.sessions.lock().expect("sessions lock").peers.clone()
    }

    /// At start-up, when the data dir recorded no configuration: the one the cluster was
    /// bootstrapped with (in force from index 0).
    pub fn set_peer_set(&self, peers: PeerSet) {
        self.sessions.lock().expect("sessions lock").peers = Some(peers);
    }

    /// The access-control table as applied here.
    pub fn auth(&self) -> std::sync::RwLockReadGuard<'_, AuthTable> {
        self.auth.read().expect("auth lock")
    }

    /// Sessions held now.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().expect("sessions lock").table.len()
    }

    /// The listeners and the event history.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Registers a listener on a key (or on every key under a prefix). Events arrive in log
    /// order on the returned channel until it is unsubscribed or falls a whole queue behind.
    pub fn listen(
        &self,
        key: &str,
        prefix: bool,
    ) -> std::result::Result<Subscription, WatchRefused> {
        self.notifier.subscribe(key, prefix, None)
    }
}

/// How long a request thread may wait for an applied index, for error messages.
pub fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

#[cfg(test)]
#[path = "datum_set_tests.rs"]
mod tests;
