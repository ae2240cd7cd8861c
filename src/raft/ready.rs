//! `Ready`: everything the core asks the shell to do after a batch of inputs, in the order
//! the shell must do it (etcd `Ready`, raft-rs `Ready`).
//!
//! Owns the shape of that contract only; the core fills it in `RaftCore::take_ready`.

use super::log::LogId;
use super::message::{Entry, Envelope, HardState, PeerAddr};

/// A finished read-index request: reads at `ctx` may be served once the local datum set
/// has applied `index`. `index: None` means it failed (leadership was lost or unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: Option<u64>,
}

/// What the shell must do after feeding inputs, in this order:
/// 1. persist `hard_state`, then apply `truncate_from` and append `entries` to the log, all
///    durably, and report it with `on_persisted`;
/// 2. `messages` may be sent at once, `after_persist` only once step 1 is durable;
/// 3. apply `committed` in index order: they are durable on a majority, but may not be
///    durable locally yet, so nothing that persists their effect (a checkpoint, a datum
///    file) may be written before `on_persisted` covers them;
/// 4. answer `reads`.
#[derive(Debug, Default)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    pub truncate_from: Option<u64>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Envelope>,
    pub after_persist: Vec<Envelope>,
    pub committed: Vec<Entry>,
    pub reads: Vec<ReadState>,
    /// Leader: these followers are behind the retained log; stream them a snapshot and
    /// report with `on_snapshot_sent`.
    pub snapshots: Vec<PeerAddr>,
    /// Follower: an offered snapshot was accepted; install it before persisting anything
    /// that follows in this or a later `Ready`, and before applying `committed` entries of
    /// this or a later `Ready`: they follow the point, and may be durable (a log kept after
    /// the point) before the install is.
    pub install: Option<InstallPoint>,
}

/// Where an accepted snapshot puts the log: it continues after `point`. With `reset_log`
/// the shell's log did not hold that entry (as far as it was handed out) and is replaced by
/// an empty one after it; entries the core keeps after the point follow in `entries`.
/// Otherwise only the part up to it is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstallPoint {
    pub point: LogId,
    pub reset_log: bool,
}

impl Ready {
    pub fn needs_persist(&self) -> bool {
        self.hard_state.is_some()
            || self.truncate_from.is_some()
            || !self.entries.is_empty()
            || self.install.is_some()
    }

    pub fn is_empty(&self) -> bool {
        !self.needs_persist()
            && self.messages.is_empty()
            && self.after_persist.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.snapshots.is_empty()
    }
}
