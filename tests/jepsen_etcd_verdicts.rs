//! Validates the linearizability checker against published verdicts: 102
//! Jepsen histories recorded against etcd, whose linearizability porcupine's
//! test suite asserts (see `shared/data/jepsen-etcd/README.md`).
//!
//! The data lives outside the repository, at `<manifest>/../shared/data/
//! jepsen-etcd`. It is required: if it is missing the tests fail rather than
//! skip, so a broken checkout cannot pass silently.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nacos_linearizability::{
    check, Budget, Outcome, RegisterInput, RegisterModel, RegisterOp, RegisterOutput, Verdict,
};

/// Number of histories in the data set (`etcd_000.log` … `etcd_102.log`).
const HISTORIES: usize = 103;
/// Number of them with a published verdict.
const LISTED: usize = 102;
/// Per-history search limit. The slowest history needs a small fraction of
/// this; it only exists so that a regression shows up as an `Unknown`
/// mismatch instead of a hung test run.
const MAX_STEPS: u64 = 20_000_000;
/// Per-history wall-clock limit, for the same reason.
const TIMEOUT: Duration = Duration::from_secs(20);

fn data_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/jepsen-etcd");
    assert!(
        dir.join("VERDICTS").is_file(),
        "Jepsen etcd test data not found at {} (expected README.md, VERDICTS and etcd_000.log … \
         etcd_102.log there, next to the repository); these tests need it and do not skip",
        dir.display()
    );
    dir
}

fn budget() -> Budget {
    Budget::UNLIMITED
        .with_max_steps(MAX_STEPS)
        .with_timeout(TIMEOUT)
}

/// `VERDICTS`: lines `<n> <true|false>`.
fn published_verdicts() -> BTreeMap<usize, bool> {
    let path = data_dir().join("VERDICTS");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut verdicts = BTreeMap::new();
    for (k, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let mut fields = line.split_whitespace();
        let (Some(n), Some(v), None) = (fields.next(), fields.next(), fields.next()) else {
            panic!(
                "VERDICTS line {}: expected `<n> <true|false>`, got {line:?}",
                k + 1
            );
        };
        let n: usize = n
            .parse()
            .unwrap_or_else(|e| panic!("VERDICTS line {}: bad number {n:?}: {e}", k + 1));
        let v: bool = v
            .parse()
            .unwrap_or_else(|e| panic!("VERDICTS line {}: bad verdict {v:?}: {e}", k + 1));
        assert!(n < HISTORIES, "VERDICTS line {}: no history {n}", k + 1);
        assert!(verdicts.insert(n, v).is_none(), "VERDICTS lists {n} twice");
    }
    verdicts
}

/// What a parsed log looks like, for sanity checks.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    /// Operations kept in the history.
    ops: usize,
    /// Of which indeterminate (`:info`, or invoked and never completed).
    indeterminate: usize,
    /// `:fail :read :timed-out` reads, dropped: they had no effect and told
    /// us nothing.
    dropped_failed_reads: usize,
}

/// Parses a Jepsen log into a register history. Times are line numbers,
/// which is the order Jepsen observed the events in.
///
/// * `:invoke` opens an operation for that process; a process must not
///   invoke while it has one pending.
/// * `:ok` completes it: a read returns the value (`nil` = absent), a write
///   is acknowledged, a cas succeeded.
/// * `:fail :cas` ran and found another value: a cas that returned false.
///   `:fail :read` (timed out) had no effect and is dropped.
/// * `:info` (timed out) leaves a write or cas indeterminate; an `:info`
///   read would constrain nothing and is dropped. Jepsen retires a process
///   after `:info`; that is checked, since reusing it would mean the log
///   is not what this parser thinks.
/// * An invocation never completed stays indeterminate.
fn parse_log(name: &str, text: &str) -> Result<(Vec<RegisterOp>, Counts), String> {
    const PREFIX: &str = "INFO  jepsen.util - ";
    let mut ops: Vec<Option<RegisterOp>> = Vec::new();
    let mut pending: HashMap<u64, (usize, String, String)> = HashMap::new();
    let mut retired: HashSet<u64> = HashSet::new();
    let mut counts = Counts::default();

    for (k, line) in text.lines().enumerate() {
        let time = k as u64;
        let at = |msg: String| format!("{name}:{}: {msg}: {line:?}", k + 1);
        if line.trim().is_empty() {
            continue;
        }
        let rest = line
            .strip_prefix(PREFIX)
            .ok_or_else(|| at("unexpected line".into()))?;
        // Fields are separated by tabs in most logs and by runs of spaces in
        // a few; the cas value `[1 4]` itself contains a space.
        let mut fields = rest.split_whitespace();
        let (Some(process), Some(kind), Some(f)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(at("expected `<process> :<type> :<f> <value>`".into()));
        };
        let value = fields.collect::<Vec<_>>().join(" ");
        let process: u64 = process
            .parse()
            .map_err(|e| at(format!("bad process {process:?}: {e}")))?;
        if retired.contains(&process) {
            return Err(at(format!("process {process} reused after :info")));
        }

        if kind == ":invoke" {
            if pending.contains_key(&process) {
                return Err(at(format!("process {process} invokes twice")));
            }
            let input = match f {
                ":read" => RegisterInput::Read,
                ":write" => RegisterInput::Write(value.clone()),
                ":cas" => {
                    let (expect, new) =
                        parse_cas(&value).ok_or_else(|| at("bad cas value".into()))?;
                    RegisterInput::Cas {
                        expect: Some(expect),
                        new,
                    }
                }
                _ => return Err(at(format!("unknown function {f}"))),
            };
            pending.insert(process, (ops.len(), f.to_string(), value));
            ops.push(Some(RegisterOp::indeterminate(process, input, time)));
            continue;
        }

        let Some((index, invoked_f, invoked_value)) = pending.remove(&process) else {
            return Err(at(format!("process {process} completes nothing")));
        };
        if f != invoked_f {
            return Err(at(format!("completes a {invoked_f}")));
        }
        // Completions of writes and cas echo the invoked value.
        let echoes = |v: &str| v == invoked_value;
        let output = match (kind, f) {
            (":ok", ":read") => RegisterOutput::Read((value != "nil").then(|| value.clone())),
            (":ok", ":write") if echoes(&value) => RegisterOutput::Write,
            (":ok", ":cas") if echoes(&value) => RegisterOutput::Cas(true),
            (":fail", ":cas") if echoes(&value) => RegisterOutput::Cas(false),
            (":fail", ":read") if value == ":timed-out" => {
                ops[index] = None;
                counts.dropped_failed_reads += 1;
                continue;
            }
            (":info", ":read") if value == ":timed-out" => {
                ops[index] = None;
                retired.insert(process);
                continue;
            }
            (":info", ":write" | ":cas") if value == ":timed-out" => {
                retired.insert(process);
                continue;
            }
            _ => {
                return Err(at(format!(
                    "unexpected completion of {invoked_f} {invoked_value}"
                )))
            }
        };
        let op = ops[index].as_mut().expect("pending operations are kept");
        op.output = Some(output);
        op.return_time = Some(time);
    }

    let ops: Vec<RegisterOp> = ops.into_iter().flatten().collect();
    counts.ops = ops.len();
    counts.indeterminate = ops.iter().filter(|op| op.is_indeterminate()).count();
    Ok((ops, counts))
}

/// `[1 4]` -> ("1", "4").
fn parse_cas(value: &str) -> Option<(String, String)> {
    let inner = value.strip_prefix('[')?.strip_suffix(']')?;
    let mut parts = inner.split_whitespace();
    let (Some(expect), Some(new), None) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    Some((expect.to_string(), new.to_string()))
}

fn load(n: usize) -> (String, Result<(Vec<RegisterOp>, Counts), String>) {
    let name = format!("etcd_{n:03}.log");
    let path = data_dir().join(&name);
    let parsed = std::fs::read_to_string(&path)
        .map_err(|e| format!("reading {}: {e}", path.display()))
        .and_then(|text| parse_log(&name, &text));
    (name, parsed)
}

#[test]
fn all_published_verdicts_are_reproduced() {
    let published = published_verdicts();
    assert_eq!(
        published.len(),
        LISTED,
        "VERDICTS should list {LISTED} histories"
    );

    let started = Instant::now();
    let mut mismatches = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    let mut tally: BTreeMap<Verdict, usize> = BTreeMap::new();
    for (&n, &expected) in &published {
        let (name, parsed) = load(n);
        let history = match parsed {
            Ok((history, _)) => history,
            Err(e) => {
                mismatches.push(format!("{name}: cannot parse: {e}"));
                continue;
            }
        };
        let t = Instant::now();
        let outcome =
            check(&RegisterModel, &history, budget()).expect("parsed histories are well-formed");
        let elapsed = t.elapsed();
        if elapsed > slowest.0 {
            slowest = (elapsed, name.clone());
        }
        *tally.entry(outcome.verdict()).or_default() += 1;
        let expected = if expected {
            Verdict::Linearizable
        } else {
            Verdict::NotLinearizable
        };
        if outcome.verdict() != expected {
            mismatches.push(format!(
                "{name}: published {expected}, checker says {} ({} operations)",
                outcome.verdict(),
                history.len()
            ));
        }
    }
    println!(
        "{} histories checked in {:?} (slowest: {} in {:?}); verdicts: {tally:?}",
        published.len(),
        started.elapsed(),
        slowest.1,
        slowest.0
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} published verdicts not reproduced:\n{}",
        mismatches.len(),
        published.len(),
        mismatches.join("\n")
    );
}

#[test]
fn unlisted_history_terminates_within_budget() {
    let published = published_verdicts();
    let unlisted: Vec<usize> = (0..HISTORIES)
        .filter(|n| !published.contains_key(n))
        .collect();
    assert_eq!(
        unlisted.len(),
        HISTORIES - LISTED,
        "unlisted histories: {unlisted:?}"
    );
    for n in unlisted {
        let name = format!("etcd_{n:03}.log");
        let (history, counts) = load_ok(n);
        let t = Instant::now();
        let outcome = check(&RegisterModel, &history, budget()).unwrap();
        let elapsed = t.elapsed();
        println!("{name} ({counts:?}): {} in {elapsed:?}", outcome.verdict());
        // The limit is a backstop, not an answer. (In the published data
        // set the unlisted log, etcd_095.log, is an empty file, which is
        // presumably why it has no verdict: it is trivially linearizable.)
        assert_ne!(
            outcome.verdict(),
            Verdict::Unknown,
            "{name} exhausted the budget"
        );
        assert!(elapsed < TIMEOUT);
    }
}

#[test]
fn logs_parse_into_the_expected_shape() {
    // Counted with grep: etcd_000.log (tab-separated) has 85 invocations,
    // completed by 49 :ok, 20 :fail :cas, 7 :info :write and 9 :info :cas.
    let (history, counts) = load_ok(0);
    assert_eq!(
        counts,
        Counts {
            ops: 85,
            indeterminate: 16,
            dropped_failed_reads: 0
        }
    );
    // Its first lines: reads by processes 0 and 3 (lines 1 and 2) complete
    // with nil on lines 7 and 6; process 2 writes 4 from line 3 to line 10.
    assert_eq!(history[0].input, RegisterInput::Read);
    assert_eq!(history[0].output, Some(RegisterOutput::Read(None)));
    assert_eq!((history[0].call, history[0].return_time), (0, Some(6)));
    assert_eq!((history[1].call, history[1].return_time), (1, Some(5)));
    assert_eq!(history[2].input, RegisterInput::Write("4".into()));
    assert_eq!((history[2].call, history[2].return_time), (2, Some(9)));
    // Line 19: process 2 invokes cas [3 0], which succeeds on line 20.
    let cas = history.iter().find(|op| op.call == 18).unwrap();
    assert_eq!(
        cas.input,
        RegisterInput::Cas {
            expect: Some("3".into()),
            new: "0".into()
        }
    );
    assert_eq!(cas.output, Some(RegisterOutput::Cas(true)));

    // etcd_100.log separates fields with spaces: 77 invocations, completed
    // by 44 :ok, 5 :fail :read, 17 :fail :cas, 6 :info :write, 5 :info :cas.
    let (_, counts) = load_ok(100);
    assert_eq!(
        counts,
        Counts {
            ops: 72,
            indeterminate: 11,
            dropped_failed_reads: 5
        }
    );

    // Every history with a published verdict parses into something.
    for &n in published_verdicts().keys() {
        let (history, _) = load_ok(n);
        assert!(!history.is_empty(), "etcd_{n:03}.log is empty");
    }
}

fn load_ok(n: usize) -> (Vec<RegisterOp>, Counts) {
    let (name, parsed) = load(n);
    parsed.unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn a_failing_history_explains_itself() {
    let published = published_verdicts();
    let (&n, _) = published
        .iter()
        .find(|(_, &linearizable)| !linearizable)
        .expect("some history is published as not linearizable");
    let name = format!("etcd_{n:03}.log");
    let (history, _) = load_ok(n);
    let Outcome::NotLinearizable(cx) = check(&RegisterModel, &history, budget()).unwrap() else {
        panic!("{name} should not be linearizable");
    };
    assert!(cx.candidates.contains(&cx.blocked));
    assert!(!cx.prefix.contains(&cx.blocked));
    let report = cx.render(&history);
    println!("{name}:\n{report}");
    assert!(
        report.contains(&format!("#{} client", cx.blocked)),
        "{report}"
    );
}
