//! Recorded client histories of a chaos run: one [`Record`] per request with its monotonic
//! call and return times and its outcome; the JSON-lines history file; the verdicts (per-key
//! linearizability with `nacos_linearizability`, and what the log indexes in the answers
//! must satisfy); and the figures of the report.
//!
//! It decides what an answer proves, in one place ([`Record::outcome`] is set by the callers
//! in `workload.rs`, from the rules documented there); it never talks to a node.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use nacos_linearizability::{
    check_per_key, overall_verdict, Budget, KeyedRegisterOp, Operation, Outcome as CheckOutcome,
    RegisterInput, RegisterModel, RegisterOutput, Verdict,
};
use nacos_raft::raft::{Command, Entry};
use serde::{Deserialize, Serialize};

use crate::cluster::NodeLog;
use crate::workload::value_text;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Write,
    Read,
    Delete,
    /// A write conditioned on the key's timestamp (`if_timestamp`), read just before.
    Cas,
}

/// What an answer proves about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It took effect (a write, a delete) or observed the state (a read) between call and return.
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// It may or may not have taken effect, at any time after its call.
    Indeterminate,
}

/// One request as a client saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// The client (thread) that sent it; requests of one client never overlap.
    pub client: u64,
    /// The endpoint(s) it was sent to.
    pub node: String,
    pub kind: Kind,
    pub key: String,
    /// A write's value, or what a read returned (`None`: the key was absent).
    pub value: Option<String>,
    /// A completed delete: whether the key existed (200) or not (404).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existed: Option<bool>,
    /// A compare-and-set: the timestamp it was conditioned on, and, completed, whether it
    /// took effect (200) or its condition failed (412).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<bool>,
    /// Nanoseconds since the run's epoch, taken just before sending.
    pub call_ns: u64,
    /// Nanoseconds since the run's epoch, taken when the answer (or the failure) arrived.
    pub return_ns: u64,
    pub outcome: Outcome,
    /// From the answer: the datum's timestamp (writes and reads), log index and term.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// The error, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// An answer no fault explains (a 500, a malformed body): reported and fails the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unexpected: bool,
}

/// Nanoseconds from `epoch` to now.
pub fn since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

pub fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> std::io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    for item in items {
        serde_json::to_writer(&mut w, item)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// The history in the checker's terms, with the record each operation came from. A failed
/// request is left out (it did not happen); a failed or indeterminate read is left out too
/// (it constrains nothing).
pub fn to_checker(records: &[Record]) -> (Vec<KeyedRegisterOp<String>>, Vec<usize>) {
    let mut ops = Vec::new();
    let mut origin = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let input = match r.kind {
            Kind::Write => RegisterInput::Write(r.value.clone().expect("a write has a value")),
            Kind::Read => RegisterInput::Read,
            Kind::Delete => RegisterInput::Delete,
            Kind::Cas => RegisterInput::CasVersion {
                expect: r.expect.expect("a compare-and-set has a condition"),
                new: r.value.clone().expect("a compare-and-set has a value"),
            },
        };
        let op = match (r.outcome, r.kind) {
            (Outcome::Fail, _) | (Outcome::Indeterminate, Kind::Read) => continue,
            (Outcome::Indeterminate, _) => {
                Operation::indeterminate(r.client, (r.key.clone(), input), r.call_ns)
            }
            (Outcome::Ok, kind) => {
                let output = match kind {
                    Kind::Write => RegisterOutput::Write,
                    Kind::Read => RegisterOutput::Read(r.value.clone()),
                    Kind::Delete => RegisterOutput::Delete(r.existed),
                    Kind::Cas => RegisterOutput::Cas(r.applied == Some(true)),
                };
                Operation::completed(
                    r.client,
                    (r.key.clone(), input),
                    r.call_ns,
                    output,
                    r.return_ns,
                )
            }
        };
        ops.push(op);
        origin.push(i);
    }
    (ops, origin)
}

/// The linearizability verdict of a whole history.
pub struct Linearizability {
    pub verdict: Verdict,
    /// key -> verdict.
    pub per_key: BTreeMap<String, Verdict>,
    /// A readable explanation for every key that is not linearizable or unknown.
    pub details: String,
    pub took: Duration,
    pub checked_ops: usize,
}

/// Checks every key's sub-history against a register. `timeout` bounds the whole search: past
/// it the verdict is `Unknown`, never a hang.
pub fn check_linearizable(records: &[Record], timeout: Duration) -> Linearizability {
    let start = Instant::now();
    let (ops, origin) = to_checker(records);
    let outcomes = check_per_key(
        &RegisterModel,
        &ops,
        Budget::UNLIMITED.with_timeout(timeout),
    )
    .unwrap_or_else(|e| panic!("the recorded history is malformed: {e}"));
    let verdict = overall_verdict(outcomes.values());
    let mut details = String::new();
    for (key, outcome) in &outcomes {
        match outcome {
            CheckOutcome::Linearizable { .. } => {}
            CheckOutcome::Unknown { steps } => {
                let _ = writeln!(
                    details,
                    "key {key}: search gave up after {steps} steps (budget {timeout:?})"
                );
            }
            CheckOutcome::NotLinearizable(cx) => {
                let _ = writeln!(details, "key {key}: {}", cx.render(&ops));
                let _ = writeln!(
                    details,
                    "  (operation #n is the n-th checked operation; line {} of the history file holds the blocked one)",
                    origin[cx.blocked] + 1
                );
            }
        }
    }
    Linearizability {
        verdict,
        per_key: outcomes
            .iter()
            .map(|(k, o)| (k.clone(), o.verdict()))
            .collect(),
        details,
        took: start.elapsed(),
        checked_ops: ops.len(),
    }
}

/// What the log indexes in acknowledged answers must satisfy. All writes go through one log
/// and are acknowledged only once committed, so:
/// 1. no two acknowledged writes or deletes share a log index (else one of them was lost);
/// 2. if one acknowledged write returned before another was called, its index is smaller
///    (the log order respects real time, across keys);
/// 3. a read that returns the value of an acknowledged write reports that write's index and
///    timestamp (the value was not applied a second time, or at another place in the log).
///
/// Returns every violation found (at most a few of each kind).
pub fn index_violations(records: &[Record]) -> Vec<String> {
    let mut out = Vec::new();
    let acked: Vec<&Record> = records
        .iter()
        .filter(|r| {
            r.outcome == Outcome::Ok
                && r.index.is_some()
                && (writes(r) || (r.kind == Kind::Delete && r.existed == Some(true)))
        })
        .collect();

    let mut by_index: HashMap<u64, &Record> = HashMap::new();
    for r in &acked {
        let idx = r.index.expect("filtered");
        if let Some(other) = by_index.insert(idx, r) {
            if out.len() < 5 {
                out.push(format!(
                    "two acknowledged writes at log index {idx}: {} and {}",
                    brief(other),
                    brief(r)
                ));
            }
        }
    }

    // Sweep in call order, knowing the largest index among writes that returned earlier.
    let mut by_call: Vec<&Record> = acked.clone();
    by_call.sort_by_key(|r| r.call_ns);
    let mut by_return: Vec<&Record> = acked.clone();
    by_return.sort_by_key(|r| r.return_ns);
    let mut j = 0;
    let mut max_before: Option<&Record> = None;
    let mut found = 0;
    for r in &by_call {
        while j < by_return.len() && by_return[j].return_ns < r.call_ns {
            if max_before.is_none_or(|m| by_return[j].index > m.index) {
                max_before = Some(by_return[j]);
            }
            j += 1;
        }
        if let Some(m) = max_before {
            if m.index >= r.index && found < 5 {
                found += 1;
                out.push(format!(
                    "log order contradicts real time: {} returned before {} was called, yet has index {} >= {}",
                    brief(m),
                    brief(r),
                    m.index.unwrap_or(0),
                    r.index.unwrap_or(0)
                ));
            }
        }
    }

    let written: HashMap<(&str, &str), &Record> = acked
        .iter()
        .filter(|r| writes(r))
        .map(|r| ((r.key.as_str(), r.value.as_deref().unwrap_or("")), *r))
        .collect();
    let mut found = 0;
    for r in records
        .iter()
        .filter(|r| r.kind == Kind::Read && r.outcome == Outcome::Ok)
    {
        let Some(v) = &r.value else { continue };
        if let Some(w) = written.get(&(r.key.as_str(), v.as_str())) {
            if (r.index, r.timestamp) != (w.index, w.timestamp) && found < 5 {
                found += 1;
                out.push(format!(
                    "a read of {} reports index {:?} timestamp {:?}, but the write of that value was acknowledged at index {:?} timestamp {:?}: {} / {}",
                    v, r.index, r.timestamp, w.index, w.timestamp, brief(r), brief(w)
                ));
            }
        }
    }
    out
}

/// A request that published its value: a write, or a compare-and-set that took effect (or
/// may have).
fn writes(r: &Record) -> bool {
    r.kind == Kind::Write || (r.kind == Kind::Cas && r.applied != Some(false))
}

/// One line naming a record.
pub fn brief(r: &Record) -> String {
    format!(
        "[client {} {:?} {} {:?} via {} at {:.3}s..{:.3}s -> {:?}{}]",
        r.client,
        r.kind,
        r.key,
        r.value,
        r.node,
        r.call_ns as f64 / 1e9,
        r.return_ns as f64 / 1e9,
        r.outcome,
        r.error
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    )
}

/// Operation counts: kind -> outcome -> count.
pub fn counts(records: &[Record]) -> BTreeMap<Kind, BTreeMap<Outcome, usize>> {
    let mut m: BTreeMap<Kind, BTreeMap<Outcome, usize>> = BTreeMap::new();
    for r in records {
        *m.entry(r.kind).or_default().entry(r.outcome).or_default() += 1;
    }
    m
}

/// The table of [`counts`], one line per kind.
pub fn render_counts(records: &[Record]) -> String {
    let c = counts(records);
    let mut s = String::new();
    for kind in [Kind::Write, Kind::Read, Kind::Delete, Kind::Cas] {
        let m = c.get(&kind).cloned().unwrap_or_default();
        let get = |o| m.get(&o).copied().unwrap_or(0);
        let extra = if kind == Kind::Delete {
            let existed = records
                .iter()
                .filter(|r| r.kind == Kind::Delete && r.existed == Some(true))
                .count();
            format!(
                " (existed {existed}, absent {})",
                get(Outcome::Ok) - existed
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  {:<7} ok {:>6}{extra}  fail {:>5}  indeterminate {:>5}",
            format!("{kind:?}").to_lowercase(),
            get(Outcome::Ok),
            get(Outcome::Fail),
            get(Outcome::Indeterminate)
        );
    }
    s
}

/// Stretches without an acknowledged write between `from_ns` and `to_ns`, longest first:
/// (start, end) in nanoseconds since the epoch. A stretch starts when a write was last
/// acknowledged and ends when the next one was.
pub fn write_gaps(records: &[Record], from_ns: u64, to_ns: u64) -> Vec<(u64, u64)> {
    let mut acks: Vec<u64> = records
        .iter()
        .filter(|r| r.kind == Kind::Write && r.outcome == Outcome::Ok)
        .map(|r| r.return_ns)
        .filter(|&t| t >= from_ns && t <= to_ns)
        .collect();
    acks.sort_unstable();
    let mut points = vec![from_ns];
    points.extend(acks);
    points.push(to_ns);
    let mut gaps: Vec<(u64, u64)> = points.windows(2).map(|w| (w[0], w[1])).collect();
    gaps.sort_by_key(|&(a, b)| std::cmp::Reverse(b - a));
    gaps
}

/// What the committed log (read from the stopped nodes after convergence) must agree with:
/// 1. every acknowledged write is in it at the index its answer gave, with its key and value,
///    and every acknowledged delete of an existing key likewise (nothing acknowledged lost);
/// 2. every value a read returned was published by the log (no phantom values);
/// 3. every published value was sent by a client, and none of them by a request reported as
///    failed (a 503 `not_leader`/`no_leader` or a refused connection means "did not happen").
///
/// A compacted log (not starting at index 1) cannot show what came before it: check 1 skips
/// answers before its start and check 2 is not made.
pub fn log_violations(records: &[Record], log: &NodeLog) -> Vec<String> {
    let mut out = Vec::new();
    let complete = log.start == 0;
    let published = published_values(&log.entries);
    let push = |out: &mut Vec<String>, msg: String| {
        if out.len() < 10 {
            out.push(msg);
        }
    };
    for r in records.iter().filter(|r| r.outcome == Outcome::Ok) {
        match (r.kind, r.index) {
            (_, Some(i)) if i <= log.start => {}
            (Kind::Write | Kind::Cas, Some(i)) => {
                let v = r.value.as_deref().unwrap_or_default();
                let found = log.at(i).is_some_and(|e| {
                    matches!(&e.command, Command::Publish { key, value, .. }
                        if *key == r.key && value_text(value) == v)
                });
                if !found {
                    push(
                        &mut out,
                        format!(
                            "acknowledged write LOST: {} answered index {i}, but the committed log holds {:?} there",
                            brief(r),
                            log.at(i).map(|e| &e.command)
                        ),
                    );
                }
            }
            (Kind::Delete, Some(i)) if r.existed == Some(true) => {
                let found = log.at(i).is_some_and(
                    |e| matches!(&e.command, Command::Delete { key, .. } if *key == r.key),
                );
                if !found {
                    push(
                        &mut out,
                        format!(
                            "acknowledged delete LOST: {} answered index {i}, but the committed log holds {:?} there",
                            brief(r),
                            log.at(i).map(|e| &e.command)
                        ),
                    );
                }
            }
            (Kind::Read, _) if complete => {
                if let Some(v) = &r.value {
                    if !published.contains_key(&(r.key.clone(), v.clone())) {
                        push(
                            &mut out,
                            format!(
                                "a read returned a value the committed log never published: {}",
                                brief(r)
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    let mut sent: HashMap<(&str, &str), &Record> = HashMap::new();
    for r in records
        .iter()
        .filter(|r| matches!(r.kind, Kind::Write | Kind::Cas))
    {
        sent.insert((r.key.as_str(), r.value.as_deref().unwrap_or_default()), r);
    }
    for ((key, value), index) in &published {
        match sent.get(&(key.as_str(), value.as_str())) {
            None => push(
                &mut out,
                format!("the committed log publishes {key} = {value:?} at index {index}, which no client sent"),
            ),
            Some(r) if r.outcome == Outcome::Fail => push(
                &mut out,
                format!(
                    "a write reported as failed was committed at index {index}: {}",
                    brief(r)
                ),
            ),
            Some(_) => {}
        }
    }
    out
}

/// (key, value) -> index of every publish in the log.
fn published_values(log: &[Entry]) -> HashMap<(String, String), u64> {
    log.iter()
        .filter_map(|e| match &e.command {
            Command::Publish { key, value, .. } => {
                Some(((key.clone(), value_text(value)), e.index))
            }
            _ => None,
        })
        .collect()
}

/// Settles indeterminate writes with the committed log: a write whose (unique) value the log
/// never published did not take effect, and becomes `fail`; one whose value it did publish
/// stays indeterminate (when, the log cannot say). Sound only for a log complete from index 1;
/// a compacted log changes nothing.
///
/// Why: every unsettled write is a branch for the linearizability search, which is
/// exponential in them; most come from a partitioned leader and were never committed.
pub fn settle_indeterminate_writes(records: &mut [Record], log: &NodeLog) -> Settled {
    let mut settled = Settled::default();
    if log.start != 0 {
        return settled;
    }
    let published = published_values(&log.entries);
    let (mut took, mut not) = (0, 0);
    for r in records.iter_mut().filter(|r| {
        matches!(r.kind, Kind::Write | Kind::Cas) && r.outcome == Outcome::Indeterminate
    }) {
        let v = r.value.clone().unwrap_or_default();
        if published.contains_key(&(r.key.clone(), v)) {
            took += 1;
            if r.error.as_deref().is_some_and(is_not_leader_error) {
                settled.not_leader_committed.push(brief(r));
            }
        } else {
            not += 1;
            r.outcome = Outcome::Fail;
            let e = r.error.take().unwrap_or_default();
            r.error = Some(format!("{e} [settled: not in the committed log]"));
        }
    }
    settled.committed = took;
    settled.not_committed = not;
    settled
}

/// What [`settle_indeterminate_writes`] found.
#[derive(Debug, Default)]
pub struct Settled {
    pub committed: usize,
    pub not_committed: usize,
    /// Writes answered 503 `not_leader` that were committed all the same (the known bug of
    /// `known_bugs.rs`).
    pub not_leader_committed: Vec<String>,
}

/// The client's rendering of a 503 `not_leader` that names a leader.
pub fn is_not_leader_error(e: &str) -> bool {
    e.contains("is not the leader; the leader is")
}

/// The checks must catch what they claim to: hand-made histories with one defect each.
mod tests {
    use super::*;

    fn rec(client: u64, kind: Kind, key: &str, value: Option<&str>, t: (u64, u64)) -> Record {
        Record {
            client,
            node: "n".into(),
            kind,
            key: key.into(),
            value: value.map(str::to_string),
            existed: None,
            expect: None,
            applied: None,
            call_ns: t.0,
            return_ns: t.1,
            outcome: Outcome::Ok,
            timestamp: None,
            index: None,
            term: None,
            error: None,
            unexpected: false,
        }
    }

    fn acked_write(key: &str, v: &str, t: (u64, u64), index: u64) -> Record {
        let mut r = rec(0, Kind::Write, key, Some(v), t);
        r.index = Some(index);
        r.timestamp = Some(1);
        r
    }

    fn publish(index: u64, key: &str, v: &str) -> Entry {
        Entry {
            index,
            term: 1,
            command: Command::publish(key.into(), serde_json::Value::String(v.into())),
        }
    }

    fn noop(index: u64) -> Entry {
        Entry {
            index,
            term: 1,
            command: Command::Noop,
        }
    }

    fn log(entries: Vec<Entry>) -> NodeLog {
        NodeLog {
            start: entries.first().map_or(0, |e| e.index - 1),
            entries,
        }
    }

    #[test]
    fn a_lost_acknowledged_write_is_reported() {
        let records = vec![acked_write("k", "v1", (0, 10), 2)];
        let v = log_violations(&records, &log(vec![noop(1), noop(2)]));
        assert!(v.iter().any(|m| m.contains("LOST")), "{v:?}");
        assert!(log_violations(&records, &log(vec![noop(1), publish(2, "k", "v1")])).is_empty());
        // Compacted past the answer: nothing to check it against.
        assert!(log_violations(&records, &log(vec![noop(3)])).is_empty());
    }

    #[test]
    fn a_failed_write_found_in_the_log_is_reported() {
        let mut r = rec(0, Kind::Write, "k", Some("v1"), (0, 10));
        r.outcome = Outcome::Fail;
        let v = log_violations(&[r], &log(vec![noop(1), publish(2, "k", "v1")]));
        assert!(v.iter().any(|m| m.contains("reported as failed")), "{v:?}");
    }

    #[test]
    fn a_read_of_a_value_never_published_is_reported() {
        let r = [rec(0, Kind::Read, "k", Some("ghost"), (0, 10))];
        let v = log_violations(&r, &log(vec![noop(1)]));
        assert!(v.iter().any(|m| m.contains("never published")), "{v:?}");
        // A compacted log may have published it before its start.
        let v = log_violations(&r, &log(vec![noop(5)]));
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn a_stale_read_is_not_linearizable() {
        let records = vec![
            acked_write("k", "v1", (0, 10), 2),
            acked_write("k", "v2", (20, 30), 3),
            rec(1, Kind::Read, "k", Some("v1"), (40, 50)),
        ];
        let lin = check_linearizable(&records, Duration::from_secs(5));
        assert_eq!(lin.verdict, Verdict::NotLinearizable, "{}", lin.details);
        let fine = &records[..2];
        assert_eq!(
            check_linearizable(fine, Duration::from_secs(5)).verdict,
            Verdict::Linearizable
        );
    }

    #[test]
    fn indeterminate_writes_are_settled_by_the_log() {
        let mut a = rec(0, Kind::Write, "k", Some("in-log"), (0, 10));
        a.outcome = Outcome::Indeterminate;
        let mut b = rec(1, Kind::Write, "k", Some("lost"), (0, 10));
        b.outcome = Outcome::Indeterminate;
        b.error = Some("503: this node is not the leader; the leader is x".into());
        let mut records = vec![a, b];
        let s = settle_indeterminate_writes(
            &mut records,
            &log(vec![noop(1), publish(2, "k", "in-log")]),
        );
        assert_eq!((s.committed, s.not_committed), (1, 1));
        assert_eq!(records[0].outcome, Outcome::Indeterminate);
        assert_eq!(records[1].outcome, Outcome::Fail);
        // A log that does not start at 1 cannot prove an absence.
        let mut records = vec![records[0].clone()];
        records[0].value = Some("elsewhere".into());
        let s = settle_indeterminate_writes(&mut records, &log(vec![publish(7, "k", "x")]));
        assert_eq!((s.committed, s.not_committed), (0, 0));
        assert_eq!(records[0].outcome, Outcome::Indeterminate);
    }

    #[test]
    fn log_order_must_respect_real_time() {
        let records = vec![
            acked_write("a", "1", (0, 5), 10),
            acked_write("b", "2", (6, 8), 9),
        ];
        let v = index_violations(&records);
        assert!(v.iter().any(|m| m.contains("real time")), "{v:?}");
        let records = vec![
            acked_write("a", "1", (0, 5), 10),
            acked_write("b", "2", (4, 8), 9),
        ];
        assert!(
            index_violations(&records).is_empty(),
            "concurrent: any order"
        );
    }

    #[test]
    fn two_acknowledgements_at_one_index_are_reported() {
        let records = vec![
            acked_write("a", "1", (0, 5), 4),
            acked_write("b", "2", (0, 5), 4),
        ];
        let v = index_violations(&records);
        assert!(v.iter().any(|m| m.contains("two acknowledged")), "{v:?}");
    }

    #[test]
    fn write_gaps_are_longest_first() {
        let records = vec![
            acked_write("a", "1", (0, 100), 2),
            acked_write("a", "2", (0, 150), 3),
            acked_write("a", "3", (0, 900), 4),
        ];
        let gaps = write_gaps(&records, 0, 1000);
        assert_eq!(gaps[0], (150, 900));
        assert_eq!(gaps.len(), 4);
    }
}
