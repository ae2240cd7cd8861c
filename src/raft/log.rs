//! The in-memory Raft log of one member (etcd `raftLog`, raft-rs `RaftLog`): the retained
//! entries, where they start, and how far they are durable, committed and handed to the
//! shell for applying.
//!
//! Owns the index arithmetic and its invariants; must not decide what is committed (the
//! core counts acknowledgements) nor look at messages.

use super::message::Entry;

/// A position in the log: an entry's index and the term it was appended in. Used wherever
/// the pair travels together, so that no reader has to remember the order of a tuple.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LogId {
    pub index: u64,
    pub term: u64,
}

impl LogId {
    /// Before the first entry of a log that was never compacted.
    pub const ZERO: LogId = LogId { index: 0, term: 0 };

    pub const fn new(index: u64, term: u64) -> LogId {
        LogId { index, term }
    }

    /// Raft §5.4.1: whether a log ending here is at least as up to date as one ending at
    /// `other` (a later last term wins; the same term, the longer log).
    pub fn at_least_as_up_to_date_as(self, other: LogId) -> bool {
        (self.term, self.index) >= (other.term, other.index)
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (term {})", self.index, self.term)
    }
}

/// How many committed entries may be applied past the local durable index. Clients answered
/// send more, so without a bound a member whose disk is slower than the other two would
/// queue writes for it without end; with it, the backlog is this many entries plus one per
/// client connection, as when nothing applied before it was durable. Far above what one
/// slow `fdatasync` lets queue: 8,000 writes a second (about what three members on tmpfs
/// took with 3 ms added to the leader's, docs/benchmarks.md) for 3 ms is 24 entries.
pub const APPLY_AHEAD_OF_DURABLE: u64 = 512;

/// The retained log. Invariants: `entries[i].index == start.index + 1 + i`; terms never
/// decrease along the log; `start.index <= applied_handed <= committed`. Entries may be
/// handed out for applying before they are durable locally: once committed they are
/// durable on a majority and are never truncated, so the local write only has to catch up
/// before anything persists the state they produced (the shell's checkpoints and datum
/// files wait for it, see `node::datum_set`). Compaction stays behind `stable`.
#[derive(Debug)]
pub struct RaftLog {
    /// The entry the retained log continues after: the compaction or snapshot point
    /// (`LogId::ZERO` for a log never compacted). Its effect is in the datum set.
    start: LogId,
    entries: Vec<Entry>,
    /// Highest index known durable locally.
    stable: u64,
    /// Highest index handed to the shell for persisting (durable or queued).
    handed: u64,
    /// Entries not yet handed to the shell for persisting, in order.
    unstable: Vec<Entry>,
    /// A truncation the shell must carry out before appending `unstable`.
    truncate_from: Option<u64>,
    committed: u64,
    /// Highest index handed to the shell for applying.
    applied_handed: u64,
}

impl RaftLog {
    /// The log as recovered from disk: it continues after `start` with `entries`, all of
    /// them durable. `Err` names the first entry out of place (the store checks the same
    /// on reading, so this is a second line of defence).
    pub fn new(start: LogId, entries: Vec<Entry>) -> Result<RaftLog, String> {
        let mut prev = start;
        for e in &entries {
            if e.index != prev.index + 1 || e.term < prev.term {
                return Err(format!(
                    "entry {} of term {} cannot follow entry {}",
                    e.index, e.term, prev
                ));
            }
            prev = LogId::new(e.index, e.term);
        }
        Ok(RaftLog {
            start,
            stable: prev.index,
            handed: prev.index,
            entries,
            unstable: Vec::new(),
            truncate_from: None,
            committed: start.index,
            applied_handed: start.index,
        })
    }

    pub fn start(&self) -> LogId {
        self.start
    }

    #[cfg(test)]
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn last_index(&self) -> u64 {
        self.start.index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.start.term, |e| e.term)
    }

    pub fn last_id(&self) -> LogId {
        LogId::new(self.last_index(), self.last_term())
    }

    pub fn stable_index(&self) -> u64 {
        self.stable
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Term of the entry at `index`; `None` past the end and before the start.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.start.index {
            return Some(self.start.term);
        }
        if index < self.start.index {
            return None;
        }
        self.entries
            .get((index - self.start.index - 1) as usize)
            .map(|e| e.term)
    }

    /// Whether the log holds the entry `id` (or continues after it).
    pub fn matches(&self, id: LogId) -> bool {
        self.term_at(id.index) == Some(id.term)
    }

    /// Up to `max` entries from index `from` on; empty when `from` is past the end or not
    /// retained any more.
    pub fn entries_from(&self, from: u64, max: usize) -> Vec<Entry> {
        if from <= self.start.index || from > self.last_index() {
            return Vec::new();
        }
        let first = (from - self.start.index - 1) as usize;
        let end = first.saturating_add(max).min(self.entries.len());
        self.entries[first..end].to_vec()
    }

    /// Appends one entry that directly follows the log (checked by the caller).
    pub fn push(&mut self, entry: Entry) {
        debug_assert_eq!(
            entry.index,
            self.last_index() + 1,
            "log append out of place"
        );
        self.entries.push(entry.clone());
        self.unstable.push(entry);
    }

    /// Drops every entry from `index` on (a divergent, uncommitted suffix, Raft §5.3).
    /// Entries already handed to the shell are cut on disk too.
    pub fn truncate_from(&mut self, index: u64) {
        debug_assert!(index > self.committed, "truncating a committed entry");
        self.entries
            .truncate(index.saturating_sub(self.start.index + 1) as usize);
        self.stable = self.stable.min(index - 1);
        self.unstable.retain(|e| e.index < index);
        if index <= self.handed {
            self.handed = index - 1;
            self.truncate_from = Some(self.truncate_from.map_or(index, |t| t.min(index)));
        }
    }

    /// Moves the commit index up to `index` (never down, never past the log's end).
    pub fn commit_to(&mut self, index: u64) {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
        }
    }

    /// The shell made the log durable up to `id`. A report for an entry that was truncated
    /// meanwhile is ignored. Returns whether the stable index moved.
    pub fn on_persisted(&mut self, id: LogId) -> bool {
        if id.index <= self.stable || !self.matches(id) {
            return false;
        }
        self.stable = id.index;
        true
    }

    /// What the shell must persist next: a truncation point and the entries after it.
    pub fn take_unstable(&mut self) -> (Option<u64>, Vec<Entry>) {
        let entries = std::mem::take(&mut self.unstable);
        if let Some(last) = entries.last() {
            self.handed = last.index;
        }
        (self.truncate_from.take(), entries)
    }

    /// Committed entries not yet handed out for applying, durable locally or not (Raft
    /// thesis §10.2.1: a majority holds them), up to [`APPLY_AHEAD_OF_DURABLE`] past the
    /// local durable index. So a member whose own disk stalls does not hold up the answers
    /// to writes the other two made durable (docs/architecture.md), and a disk that cannot
    /// keep up at all holds them up again before its backlog grows without bound.
    pub fn take_committed(&mut self) -> Vec<Entry> {
        let apply_to = self
            .committed
            .min(self.stable.saturating_add(APPLY_AHEAD_OF_DURABLE));
        if apply_to <= self.applied_handed {
            return Vec::new();
        }
        let from = self.applied_handed + 1;
        self.applied_handed = apply_to;
        self.entries_from(from, (apply_to - from + 1) as usize)
    }

    /// Drops entries up to `upto` (capped at what is applied and durable): the datum set
    /// holds their effect now. Returns whether anything was dropped.
    pub fn compact(&mut self, upto: u64) -> bool {
        let upto = upto.min(self.applied_handed).min(self.stable);
        let Some(term) = self.term_at(upto) else {
            return false;
        };
        if upto <= self.start.index {
            return false;
        }
        self.entries.drain(..(upto - self.start.index) as usize);
        self.start = LogId::new(upto, term);
        true
    }

    /// The compaction point after which the entries total at most `max_bytes` by `size`:
    /// the index of the newest entry that does not fit, or the start when all fit.
    pub fn index_keeping_bytes(&self, max_bytes: usize, size: impl Fn(&Entry) -> usize) -> u64 {
        let mut total = 0usize;
        for e in self.entries.iter().rev() {
            total = total.saturating_add(size(e));
            if total > max_bytes {
                return e.index;
            }
        }
        self.start.index
    }

    /// Moves the log's start to an installed snapshot's point, which is committed. If the
    /// log holds that entry, what follows it stays (Raft §7); otherwise every local entry
    /// is discarded. Returns whether the shell must reset its log to the point rather than
    /// compact it there.
    ///
    /// The shell can compact to the point only if it was handed the point's entry: with
    /// entries still unhanded, or a truncation pending (at or below the point, since it
    /// moved `handed` below itself), its log does not hold it. It then resets, and what
    /// this log keeps after the point, none of which was handed out, follows in `unstable`.
    pub fn restore(&mut self, point: LogId) -> bool {
        let keep = self.matches(point);
        let shell_holds_it = keep && point.index <= self.handed;
        if keep {
            self.entries
                .drain(..(point.index - self.start.index) as usize);
            self.unstable.retain(|e| e.index > point.index);
        } else {
            self.entries.clear();
            self.unstable.clear();
        }
        if shell_holds_it {
            self.stable = self.stable.max(point.index);
        } else {
            self.truncate_from = None;
            self.stable = point.index;
            self.handed = point.index;
        }
        self.start = point;
        self.committed = self.committed.max(point.index);
        self.applied_handed = self.applied_handed.max(point.index);
        !shell_holds_it
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Command;

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            command: Command::Noop,
        }
    }

    fn log(start: LogId, terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| e(start.index + 1 + i as u64, t))
            .collect();
        RaftLog::new(start, entries).unwrap()
    }

    #[test]
    fn a_recovered_log_out_of_place_is_refused() {
        assert!(RaftLog::new(LogId::ZERO, vec![e(2, 1)]).is_err());
        assert!(RaftLog::new(LogId::ZERO, vec![e(1, 2), e(2, 1)]).is_err());
        assert!(RaftLog::new(LogId::new(5, 3), vec![e(6, 2)]).is_err());
        assert!(RaftLog::new(LogId::new(5, 3), vec![e(6, 3), e(7, 4)]).is_ok());
    }

    #[test]
    fn terms_and_ranges_respect_the_start() {
        let l = log(LogId::new(10, 2), &[2, 3, 3]);
        assert_eq!(l.term_at(9), None);
        assert_eq!(l.term_at(10), Some(2));
        assert_eq!(l.term_at(13), Some(3));
        assert_eq!(l.term_at(14), None);
        assert_eq!(l.last_id(), LogId::new(13, 3));
        assert!(
            l.entries_from(10, 5).is_empty(),
            "the start is not retained"
        );
        assert_eq!(l.entries_from(12, 5).len(), 2);
        assert!(l.entries_from(14, 5).is_empty());
    }

    #[test]
    fn committed_entries_are_applied_before_they_are_durable_locally_but_not_compacted() {
        let mut l = log(LogId::ZERO, &[]);
        for i in 1..=3 {
            l.push(e(i, 1));
        }
        assert_eq!(l.take_unstable().1.len(), 3);
        l.commit_to(2);
        assert_eq!(
            l.take_committed().len(),
            2,
            "committed: durable on a majority"
        );
        assert!(!l.compact(2), "not durable here yet: the log keeps them");
        assert!(l.on_persisted(LogId::new(2, 1)));
        assert!(
            l.take_committed().is_empty(),
            "each entry is handed out once"
        );
        assert!(!l.on_persisted(LogId::new(3, 9)), "wrong term: ignored");
        assert!(l.on_persisted(LogId::new(3, 1)));
        assert!(l.take_committed().is_empty(), "not committed");
        l.commit_to(3);
        assert_eq!(l.take_committed().len(), 1);

        // Far past the durable index, applying waits for the local disk again.
        let n = 3 + APPLY_AHEAD_OF_DURABLE + 10;
        for i in 4..=n {
            l.push(e(i, 1));
        }
        let _ = l.take_unstable();
        l.commit_to(n);
        let taken = l.take_committed();
        assert_eq!(
            taken.last().map(|e| e.index),
            Some(3 + APPLY_AHEAD_OF_DURABLE)
        );
        assert!(l.on_persisted(LogId::new(n, 1)));
        assert_eq!(l.take_committed().len(), 10);
    }

    #[test]
    fn truncation_of_handed_entries_is_carried_to_disk() {
        let mut l = log(LogId::ZERO, &[1, 1]);
        l.push(e(3, 1));
        let _ = l.take_unstable();
        l.truncate_from(2);
        let (cut, entries) = l.take_unstable();
        assert_eq!((cut, entries.len()), (Some(2), 0));
        assert_eq!(l.last_index(), 1);
        assert_eq!(l.stable_index(), 1);
    }

    #[test]
    fn compaction_stops_at_what_is_applied_and_durable() {
        let mut l = log(LogId::ZERO, &[1, 1, 2, 2]);
        l.commit_to(4);
        let _ = l.take_committed();
        assert!(l.compact(3));
        assert_eq!(l.start(), LogId::new(3, 2));
        assert_eq!(l.entries().len(), 1);
        assert!(!l.compact(2), "already compacted past");
        assert!(!l.compact(3));
    }

    #[test]
    fn the_byte_bound_picks_the_newest_entry_that_does_not_fit() {
        let l = log(LogId::new(10, 1), &[1, 1, 1, 1]);
        assert_eq!(l.index_keeping_bytes(100, |_| 30), 11, "12..=14 fit in 100");
        assert_eq!(l.index_keeping_bytes(1000, |_| 30), 10, "all fit");
        assert_eq!(l.index_keeping_bytes(10, |_| 30), 14, "none fits");
    }

    #[test]
    fn restore_keeps_a_matching_suffix_and_resets_otherwise() {
        let mut l = log(LogId::ZERO, &[1, 1, 2, 2]);
        assert!(!l.restore(LogId::new(2, 1)), "holds entry 2 of term 1");
        assert_eq!((l.start(), l.last_index()), (LogId::new(2, 1), 4));
        assert_eq!(l.committed(), 2);
        let mut l = log(LogId::ZERO, &[1, 1, 2, 2]);
        assert!(l.restore(LogId::new(3, 5)), "entry 3 has another term");
        assert_eq!((l.start(), l.last_index()), (LogId::new(3, 5), 3));
        let mut l = log(LogId::ZERO, &[1]);
        assert!(l.restore(LogId::new(100, 4)), "beyond the log");
        assert_eq!(l.stable_index(), 100);

        // Held here but not handed to the shell yet: its log is reset, and what follows
        // the point is handed out after it.
        let mut l = log(LogId::ZERO, &[1]);
        for i in 2..=4 {
            l.push(e(i, 2));
        }
        assert!(l.restore(LogId::new(3, 2)));
        assert_eq!(
            (l.start(), l.last_index(), l.stable_index()),
            (LogId::new(3, 2), 4, 3)
        );
        let (cut, entries) = l.take_unstable();
        assert_eq!(cut, None);
        assert_eq!(entries, vec![e(4, 2)]);
    }
}
