//! The simulator's copy of one member's log, in memory (as the `Ready`s describe it) or on
//! its disk: the retained entries after a start point (`LogId::ZERO`, or where it was last
//! compacted or a snapshot put it). Owns the index arithmetic only; the checks that judge
//! what is done to a log live in `world` and `oracle`.

use nacos_raft::raft::{Entry, LogId};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimLog {
    pub start: LogId,
    pub entries: Vec<Entry>,
}

impl SimLog {
    pub fn last_index(&self) -> u64 {
        self.start.index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.start.term, |e| e.term)
    }

    /// The retained entry at `index`; `None` at or before the start and past the end.
    pub fn get(&self, index: u64) -> Option<&Entry> {
        if index <= self.start.index {
            return None;
        }
        self.entries.get((index - self.start.index - 1) as usize)
    }

    /// Term at `index`, the start's included; `None` before it and past the end.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.start.index {
            Some(self.start.term)
        } else {
            self.get(index).map(|e| e.term)
        }
    }

    /// Whether the log holds `id` (as an entry or as its start).
    pub fn holds(&self, id: LogId) -> bool {
        self.term_at(id.index) == Some(id.term)
    }

    /// Drops every entry from `index` on; `index` must be after the start.
    pub fn truncate_from(&mut self, index: u64) {
        assert!(
            index > self.start.index,
            "truncating at {index}, at or before the log's start {}",
            self.start
        );
        self.entries
            .truncate((index - self.start.index - 1) as usize);
    }

    /// Appends `e`, which must continue the log; returns the term of the entry before it.
    pub fn push(&mut self, e: Entry) -> u64 {
        let prev = self.last_term();
        self.entries.push(e);
        prev
    }

    /// Drops the entries up to `id`, which the log must hold; the log continues after it.
    pub fn compact_to(&mut self, id: LogId) {
        assert!(
            self.holds(id),
            "compacting to {id}, which the log does not hold"
        );
        let drop = (id.index - self.start.index) as usize;
        self.entries.drain(..drop);
        self.start = id;
    }

    /// Replaces the whole log with an empty one continuing after `id`.
    pub fn reset(&mut self, id: LogId) {
        self.entries.clear();
        self.start = id;
    }
}
