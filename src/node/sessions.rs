//! Client sessions (Raft thesis §6.3): per client id, the newest request applied and its
//! answer, so that a retried request is answered as the first time and never applied twice.
//!
//! Part of the applied state: every replica applies the same entries in the same order, so
//! every replica holds the same table, and it travels in checkpoints and snapshots with the
//! datums. Expiry is by log position only (never the clock), so it is the same everywhere.
//! Must not decide anything about the datums themselves.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::raft::RequestId;

/// Most sessions kept; past it the one idle longest (by log position) goes.
pub const MAX_SESSIONS: usize = 100_000;
/// A session with no request for this many log entries expires.
pub const SESSION_TTL_ENTRIES: u64 = 1_000_000;

/// What applying a request did: what its client is told, first time or not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Published { timestamp: u64 },
    Deleted { existed: bool },
    PreconditionFailed { current: u64 },
}

/// One session, as checkpoints and snapshots carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub client: String,
    /// The newest request applied, at `index` in `term`, with `outcome`.
    pub seq: u64,
    pub index: u64,
    pub term: u64,
    pub outcome: Outcome,
    /// The log index of the client's latest request (applied or answered again).
    pub last: u64,
}

/// What to do with an entry carrying a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not seen: apply it, then `record`.
    Apply,
    /// This request was applied already: answer as then, change nothing.
    Duplicate(SessionRecord),
    /// A newer request of the client was applied already, so this one is old: it is not
    /// applied, and its first answer is no longer known.
    Stale { latest: u64 },
}

#[derive(Clone, Debug, Default)]
pub struct Sessions {
    by_client: HashMap<String, SessionRecord>,
    /// (last, client), oldest first: what expires or is evicted first.
    order: BTreeSet<(u64, String)>,
}

impl Sessions {
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    pub fn decide(&self, req: &RequestId) -> Decision {
        match self.by_client.get(&req.client) {
            None => Decision::Apply,
            Some(s) if req.seq > s.seq => Decision::Apply,
            Some(s) if req.seq == s.seq => Decision::Duplicate(s.clone()),
            Some(s) => Decision::Stale { latest: s.seq },
        }
    }

    /// A request was applied at `index` in `term` (or, with `first: false`, answered again
    /// from its session): the client's session moves to it, and sessions past their time or
    /// beyond the bound go, the same way on every replica.
    pub fn record(&mut self, req: &RequestId, index: u64, term: u64, outcome: Outcome) {
        if let Some(old) = self.by_client.remove(&req.client) {
            self.order.remove(&(old.last, old.client));
        }
        let rec = SessionRecord {
            client: req.client.clone(),
            seq: req.seq,
            index,
            term,
            outcome,
            last: index,
        };
        self.insert(rec);
        self.expire(index);
    }

    /// A duplicate at `index` keeps its session alive.
    pub fn touch(&mut self, client: &str, index: u64) {
        if let Some(s) = self.by_client.get_mut(client) {
            self.order.remove(&(s.last, s.client.clone()));
            s.last = s.last.max(index);
            self.order.insert((s.last, s.client.clone()));
        }
    }

    fn insert(&mut self, rec: SessionRecord) {
        self.order.insert((rec.last, rec.client.clone()));
        self.by_client.insert(rec.client.clone(), rec);
    }

    fn expire(&mut self, now: u64) {
        while let Some((last, client)) = self.order.first().cloned() {
            let old = last.saturating_add(SESSION_TTL_ENTRIES) < now;
            if !old && self.by_client.len() <= MAX_SESSIONS {
                break;
            }
            self.order.pop_first();
            self.by_client.remove(&client);
        }
    }

    /// Every session, oldest first (for checkpoints and snapshots).
    pub fn records(&self) -> Vec<SessionRecord> {
        self.order
            .iter()
            .filter_map(|(_, c)| self.by_client.get(c).cloned())
            .collect()
    }

    pub fn from_records(records: impl IntoIterator<Item = SessionRecord>) -> Sessions {
        let mut s = Sessions::default();
        for r in records {
            if let Some(old) = s.by_client.remove(&r.client) {
                s.order.remove(&(old.last, old.client));
            }
            s.insert(r);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(client: &str, seq: u64) -> RequestId {
        RequestId {
            client: client.into(),
            seq,
        }
    }

    const OK: Outcome = Outcome::Published { timestamp: 1 };

    #[test]
    fn a_request_is_applied_once_and_answered_again_after() {
        let mut s = Sessions::default();
        assert_eq!(s.decide(&req("a", 1)), Decision::Apply);
        s.record(&req("a", 1), 10, 2, OK);
        match s.decide(&req("a", 1)) {
            Decision::Duplicate(r) => assert_eq!((r.index, r.term, r.outcome), (10, 2, OK)),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.decide(&req("a", 2)), Decision::Apply);
        s.record(&req("a", 2), 11, 2, Outcome::Deleted { existed: true });
        assert_eq!(s.decide(&req("a", 1)), Decision::Stale { latest: 2 });
        assert_eq!(
            s.decide(&req("b", 1)),
            Decision::Apply,
            "clients are separate"
        );
    }

    #[test]
    fn sessions_expire_by_log_position_and_stay_bounded() {
        let mut s = Sessions::default();
        s.record(&req("idle", 1), 1, 1, OK);
        s.record(&req("busy", 1), 2, 1, OK);
        s.touch("busy", SESSION_TTL_ENTRIES);
        s.record(&req("new", 1), SESSION_TTL_ENTRIES + 2, 1, OK);
        assert_eq!(s.decide(&req("idle", 1)), Decision::Apply, "expired");
        assert!(matches!(s.decide(&req("busy", 1)), Decision::Duplicate(_)));
        let mut s = Sessions::default();
        for i in 0..(MAX_SESSIONS as u64 + 3) {
            s.record(&req(&format!("c{i}"), 1), i + 1, 1, OK);
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert_eq!(
            s.decide(&req("c0", 1)),
            Decision::Apply,
            "the oldest went first"
        );
        assert!(matches!(
            s.decide(&req(&format!("c{}", MAX_SESSIONS + 2), 1)),
            Decision::Duplicate(_)
        ));
    }

    #[test]
    fn records_round_trip_with_their_order() {
        let mut s = Sessions::default();
        s.record(&req("a", 3), 5, 1, OK);
        s.record(
            &req("b", 1),
            6,
            2,
            Outcome::PreconditionFailed { current: 4 },
        );
        s.touch("a", 7);
        let recs = s.records();
        assert_eq!(
            recs.iter().map(|r| r.client.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        let text = serde_json::to_string(&recs).unwrap();
        let back: Vec<SessionRecord> = serde_json::from_str(&text).unwrap();
        let again = Sessions::from_records(back);
        assert_eq!(again.records(), recs);
        assert_eq!(again.decide(&req("a", 3)), s.decide(&req("a", 3)));
    }
}
