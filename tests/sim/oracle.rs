//! What the simulated cluster must never do, and the model it is judged against: the Nacos
//! datum map as a `BTreeMap`, and the global history of leaders, log entries, applied entries
//! (with the datum set after each) and acknowledged writes. Every check panics with the
//! invariant's name (Raft §5.2-§5.4, Figure 3), which the seed runner turns into a failing
//! seed.

use std::collections::{BTreeMap, HashMap};

use nacos_raft::raft::{Command, Entry, LogId, PeerSet};

use super::log::SimLog;

/// One member's state machine: Nacos `RaftCore.onPublish`/`onDelete` applied in log order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Datums {
    /// key -> (value, timestamp, index of the entry that wrote it).
    pub data: BTreeMap<String, (serde_json::Value, u64, u64)>,
    /// key -> index of the last entry that published or deleted it, so a read of a deleted
    /// key still says how recent it is.
    pub last_op: BTreeMap<String, u64>,
    /// A fingerprint of the two maps, kept up to date by `apply`: comparing a replica with
    /// the oracle after every event costs one comparison, not a walk of both maps.
    pub fingerprint: u64,
}

/// One map entry's share of a fingerprint (the set's is the XOR of its entries').
fn mix(key: &str, words: [u64; 3]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key.as_bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    for w in words {
        h = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    h
}

fn value_word(v: &serde_json::Value) -> u64 {
    // The simulated client publishes numbers; anything else is hashed by its text.
    v.as_u64().unwrap_or_else(|| mix(&v.to_string(), [0, 0, 0]))
}

impl Datums {
    pub fn apply(&mut self, e: &Entry) {
        let key = match &e.command {
            // The simulated clients write datums only (configurations are the members').
            Command::Noop
            | Command::Auth { .. }
            | Command::Import { .. }
            | Command::Config { .. } => return,
            Command::Publish { key, .. } | Command::Delete { key, .. } => key,
        };
        // Nacos timestamp rule: 1 for a new key, previous + 1 otherwise.
        let ts = self.data.get(key).map_or(1, |d| d.1 + 1);
        if let Some((v, old_ts, i)) = self.data.remove(key) {
            self.fingerprint ^= mix(key, [value_word(&v), old_ts, i]);
        }
        if let Some(i) = self.last_op.insert(key.clone(), e.index) {
            self.fingerprint ^= mix(key, [u64::MAX, i, 0]);
        }
        self.fingerprint ^= mix(key, [u64::MAX, e.index, 0]);
        if let Command::Publish { value, .. } = &e.command {
            self.fingerprint ^= mix(key, [value_word(value), ts, e.index]);
            self.data.insert(key.clone(), (value.clone(), ts, e.index));
        }
    }

    /// Index of the last write (publish or delete) of `key` this replica has applied.
    pub fn version(&self, key: &str) -> u64 {
        self.last_op.get(key).copied().unwrap_or(0)
    }
}

pub fn key_of(c: &Command) -> Option<&str> {
    match c {
        Command::Noop | Command::Auth { .. } | Command::Import { .. } | Command::Config { .. } => {
            None
        }
        Command::Publish { key, .. } | Command::Delete { key, .. } => Some(key),
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
    /// The datum set after the whole of `applied`, and its fingerprint after each index
    /// (`fingerprints[i - 1]` after index `i`; the empty set's is 0).
    running: Datums,
    fingerprints: Vec<u64>,
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

    /// The newest configuration entry committed in a term before `term` (its index, 0 for the
    /// bootstrap one, and the configuration). As for leader completeness, a candidate whose
    /// votes were delayed may win an older term after a newer one committed something; what
    /// binds the leader of `term` is what was committed before it.
    pub fn committed_config_before(&self, term: u64, bootstrap: &PeerSet) -> (u64, PeerSet) {
        self.committed
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, (_, c, in_term))| match c {
                Command::Config { peers } if *in_term < term => Some((i as u64 + 1, peers.clone())),
                _ => None,
            })
            .unwrap_or_else(|| (0, bootstrap.clone()))
    }

    /// The configuration in force after the applied entry at `index` (`bootstrap` before
    /// any configuration entry).
    pub fn peers_at(&self, index: u64, bootstrap: &PeerSet) -> PeerSet {
        self.applied
            .iter()
            .take(index as usize)
            .rev()
            .find_map(|(_, c)| match c {
                Command::Config { peers } => Some(peers.clone()),
                _ => None,
            })
            .unwrap_or_else(|| bootstrap.clone())
    }

    pub fn leader_of(&self, term: u64) -> Option<usize> {
        self.leaders.get(&term).copied()
    }

    /// A member that follows `leader` in `term` heard from it as that term's leader.
    pub fn check_follows(&self, node: usize, term: u64, leader: usize) {
        let led = self.leaders.get(&term).copied();
        assert!(
            led == Some(leader),
            "election safety: n{node} follows n{leader} in term {term}, which {}",
            led.map_or("nobody led".to_string(), |l| format!("n{l} led"))
        );
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
    /// committed in an earlier term, in its log or in the datum set its log continues from.
    /// (A candidate whose votes were delayed may still win an older term after a newer one
    /// committed something; that leader need not have it.)
    pub fn check_complete(&self, node: usize, term: u64, log: &SimLog) {
        self.check_start(node, log.start);
        for (i, (t, c, in_term)) in self.committed.iter().enumerate() {
            let index = i as u64 + 1;
            if *in_term >= term || index <= log.start.index {
                continue;
            }
            match log.get(index) {
                Some(e) if e.term == *t && e.command == *c => {}
                found => panic!(
                    "leader completeness: n{node} won term {term} without entry {index} (term {t}) committed in term {in_term}; its log (after {}) has {:?}",
                    log.start,
                    found.map(|e| (e.index, e.term))
                ),
            }
        }
    }

    /// A log starts at a compaction or snapshot point, which must be a committed entry: the
    /// datum set holds the effect of everything up to it.
    pub fn check_start(&self, node: usize, start: LogId) {
        if start.index == 0 {
            return;
        }
        match self.committed.get((start.index - 1) as usize) {
            Some((t, _, _)) => assert!(
                *t == start.term,
                "state machine safety: n{node}'s log starts after {start}, but entry {} of term {t} was committed",
                start.index
            ),
            None => panic!(
                "n{node}'s log starts after {start}, past everything committed ({})",
                self.committed.len()
            ),
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
            self.running.apply(e);
            self.fingerprints.push(self.running.fingerprint);
        }
    }

    /// The datum set right after applying `index` (replayed: for diagnostics and for the
    /// rare snapshot of an index below what its leader applied).
    pub fn state_at(&self, index: u64) -> Datums {
        let mut d = Datums::default();
        for (i, (t, c)) in self.applied.iter().take(index as usize).enumerate() {
            d.apply(&Entry {
                index: i as u64 + 1,
                term: *t,
                command: c.clone(),
            });
        }
        d
    }

    /// A replica that applied up to `applied` (by entries, a checkpoint or a snapshot) holds
    /// exactly the datum set the history has there.
    pub fn check_datums(&self, node: usize, what: &str, d: &Datums, applied: u64) {
        assert!(
            applied <= self.applied.len() as u64,
            "n{node}'s {what} is at index {applied}, past everything applied ({})",
            self.applied.len()
        );
        let want = match applied {
            0 => 0,
            i => self.fingerprints[(i - 1) as usize],
        };
        if d.fingerprint != want {
            let expect = self.state_at(applied);
            panic!(
                "state machine safety: n{node}'s {what} at index {applied} is not the history's\n  has:  {:?}\n  want: {:?}",
                d.data, expect.data
            );
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
        self.state_at(self.applied.len() as u64)
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
