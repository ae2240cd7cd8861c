//! What the simulated cluster must never do, and the model it is judged against: the Nacos
//! datum map as a `BTreeMap`, and the global history of leaders, log entries, applied entries
//! and acknowledged writes. Every check panics with the invariant's name (Raft §5.2-§5.4,
//! Figure 3), which the seed runner turns into a failing seed.

use std::collections::{BTreeMap, HashMap};

use nacos_raft::raft::{Command, Entry};

/// One member's state machine: Nacos `RaftCore.onPublish`/`onDelete` applied in log order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Datums {
    /// key -> (value, timestamp, index of the entry that wrote it).
    pub data: BTreeMap<String, (serde_json::Value, u64, u64)>,
    /// key -> index of the last entry that published or deleted it, so a read of a deleted
    /// key still says how recent it is.
    pub last_op: BTreeMap<String, u64>,
}

impl Datums {
    pub fn apply(&mut self, e: &Entry) {
        match &e.command {
            Command::Noop => {}
            Command::Publish { key, value } => {
                // Nacos timestamp rule: 1 for a new key, previous + 1 otherwise.
                let ts = self.data.get(key).map_or(1, |d| d.1 + 1);
                self.data.insert(key.clone(), (value.clone(), ts, e.index));
                self.last_op.insert(key.clone(), e.index);
            }
            Command::Delete { key } => {
                self.data.remove(key);
                self.last_op.insert(key.clone(), e.index);
            }
        }
    }

    /// Index of the last write (publish or delete) of `key` this replica has applied.
    pub fn version(&self, key: &str) -> u64 {
        self.last_op.get(key).copied().unwrap_or(0)
    }
}

pub fn key_of(c: &Command) -> Option<&str> {
    match c {
        Command::Noop => None,
        Command::Publish { key, .. } | Command::Delete { key } => Some(key),
    }
}

#[derive(Default)]
pub struct Oracle {
    /// term -> the member that led it (Election Safety).
    leaders: BTreeMap<u64, usize>,
    /// (index, term) -> (command, term of the entry before it), over every log that ever held
    /// the entry. If (index, term) fixes both, two logs sharing an entry share everything
    /// before it, by induction (Log Matching).
    entries: HashMap<(u64, u64), (Command, u64)>,
    /// Each committed entry (`committed[i - 1]`): its term, command, and the term of the
    /// leader that first counted it committed.
    committed: Vec<(u64, Command, u64)>,
    /// The entry applied at each index (`applied[i - 1]`), by whichever member applied first
    /// (State Machine Safety).
    pub applied: Vec<(u64, Command)>,
    /// (index, command) of every acknowledged write.
    pub acked: Vec<(u64, Command)>,
    /// Highest acknowledged index, over all keys and per key.
    pub max_ack: u64,
    pub max_ack_key: HashMap<String, u64>,
}

impl Oracle {
    pub fn leader_terms(&self) -> usize {
        self.leaders.len()
    }

    /// Records `node` as leader of `term`; true the first time, when the caller must check
    /// leader completeness.
    pub fn on_leader(&mut self, node: usize, term: u64) -> bool {
        match self.leaders.get(&term) {
            Some(&other) if other != node => {
                panic!("election safety: n{other} and n{node} both led term {term}")
            }
            Some(_) => false,
            None => {
                self.leaders.insert(term, node);
                true
            }
        }
    }

    /// Leader completeness (Raft §5.4): a member that just won `term` holds every entry
    /// committed in an earlier term. (A candidate whose votes were delayed may still win an
    /// older term after a newer one committed something; that leader need not have it.)
    pub fn check_complete(&self, node: usize, term: u64, log: &[Entry]) {
        for (i, (t, c, in_term)) in self.committed.iter().enumerate() {
            if *in_term >= term {
                continue;
            }
            let index = i as u64 + 1;
            match log.get(i) {
                Some(e) if e.term == *t && e.command == *c => {}
                found => panic!(
                    "leader completeness: n{node} won term {term} without entry {index} (term {t}) committed in term {in_term}; its log has {:?}",
                    found.map(|e| (e.index, e.term))
                ),
            }
        }
    }

    /// `node`'s commit index now covers `e`. A leader (of `leader_term`) may be the first to
    /// count it; anyone else must agree with what was counted.
    pub fn on_commit(&mut self, node: usize, e: &Entry, leader_term: Option<u64>) {
        let i = (e.index - 1) as usize;
        match self.committed.get(i) {
            Some((t, c, _)) => assert!(
                *t == e.term && *c == e.command,
                "state machine safety: n{node} committed ({}, term {}) {:?} where (term {t}) {c:?} was committed",
                e.index,
                e.term,
                e.command
            ),
            None => {
                assert_eq!(i, self.committed.len(), "n{node} committed past a gap");
                let term = leader_term.unwrap_or_else(|| {
                    panic!("n{node} counts entry {} committed before any leader did", e.index)
                });
                self.committed.push((e.term, e.command.clone(), term));
            }
        }
    }

    pub fn on_append(&mut self, node: usize, e: &Entry, prev_term: u64) {
        match self.entries.get(&(e.index, e.term)) {
            None => {
                self.entries
                    .insert((e.index, e.term), (e.command.clone(), prev_term));
            }
            Some((c, p)) => {
                assert!(
                    *c == e.command && *p == prev_term,
                    "log matching: n{node} holds entry ({}, term {}) = {:?} after term {prev_term}, another log has {c:?} after term {p}",
                    e.index,
                    e.term,
                    e.command
                );
            }
        }
    }

    pub fn on_apply(&mut self, node: usize, e: &Entry) {
        let i = (e.index - 1) as usize;
        if let Some((t, c)) = self.applied.get(i) {
            assert!(
                *t == e.term && *c == e.command,
                "state machine safety: n{node} applied ({}, term {}) {:?} where another member applied (term {t}) {c:?}",
                e.index,
                e.term,
                e.command
            );
        } else {
            assert_eq!(i, self.applied.len(), "n{node} applied past a gap");
            self.applied.push((e.term, e.command.clone()));
        }
    }

    pub fn on_ack(&mut self, e: &Entry) {
        self.max_ack = self.max_ack.max(e.index);
        if let Some(k) = key_of(&e.command) {
            let m = self.max_ack_key.entry(k.to_string()).or_default();
            *m = (*m).max(e.index);
        }
        self.acked.push((e.index, e.command.clone()));
    }

    /// The datum map every replica must hold once it has applied the whole history.
    pub fn replay(&self) -> Datums {
        let mut d = Datums::default();
        for (i, (t, c)) in self.applied.iter().enumerate() {
            d.apply(&Entry {
                index: i as u64 + 1,
                term: *t,
                command: c.clone(),
            });
        }
        d
    }

    /// No acknowledged write lost: each is in the final history at its index, and its key was
    /// not left older than it.
    pub fn check_acked(&self, fin: &Datums) {
        for (index, c) in &self.acked {
            let at = self.applied.get((*index - 1) as usize).map(|(_, c)| c);
            assert_eq!(
                at,
                Some(c),
                "acknowledged write lost: {c:?} at index {index} is not in the final history"
            );
            if let Some(k) = key_of(c) {
                assert!(
                    fin.version(k) >= *index,
                    "acknowledged write lost: key {k} ends at version {} below acknowledged index {index}",
                    fin.version(k)
                );
            }
        }
    }
}
