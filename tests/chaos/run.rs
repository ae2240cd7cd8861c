//! One randomized chaos run from start to verdict (a cluster, concurrent clients, the nemesis,
//! then healing and the checks, then the report), and [`finish`], the end-of-run checks that
//! the regression scenarios share. On failure the run's directory (history, faults, node logs
//! and data) is kept and the seed and the exact command that repeats the run are printed.
//!
//! Configuration comes from the calling test, overridden by `CHAOS_NODES`, `CHAOS_SECONDS`,
//! `CHAOS_SEED`, `CHAOS_THREADS`, `CHAOS_KEYS` and `CHAOS_THINK_MS`; `CHAOS_KEEP=1` keeps the
//! directory of a passing run too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nacos_linearizability::Verdict;

use crate::cluster::{ChaosCluster, NetChoice, NodeLog, Replica, Timings};
use crate::common::poll_until;
use crate::history::{self, Kind, Outcome, Record};
use crate::nemesis::{self, NemesisConfig};
use crate::rng::{fresh_seed, Rng};
use crate::workload::{self, Sender, WorkloadConfig};

#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// The test function, for the reproduce command.
    pub test_name: &'static str,
    /// The reproduce command needs `--release --ignored` (the long run).
    pub long_run: bool,
    pub nodes: usize,
    pub seconds: u64,
    pub seed: u64,
    pub threads: usize,
    pub keys: usize,
    /// Each client's pause between requests (see [`WorkloadConfig::think`]).
    pub think_ms: u64,
    /// Bound of the linearizability search.
    pub check_timeout: Duration,
    /// TLS between everyone and access control on (`CHAOS_SECURE=1`, or the secured test).
    pub secure: bool,
    /// One more node, started with `--join`, replaces a random member while the faults go
    /// on (`CHAOS_REPLACE=1`, or the replace test).
    pub replace: bool,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().filter(|v| !v.is_empty()).map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

impl ChaosConfig {
    /// The test's defaults with any `CHAOS_*` overrides applied; a random seed if none given.
    pub fn from_env(
        test_name: &'static str,
        long_run: bool,
        nodes: usize,
        seconds: u64,
    ) -> ChaosConfig {
        let nodes = env_u64("CHAOS_NODES").map_or(nodes, |n| n as usize);
        assert!(
            (3..=9).contains(&nodes),
            "CHAOS_NODES must be 3 to 9, not {nodes}"
        );
        ChaosConfig {
            test_name,
            long_run,
            nodes,
            seconds: env_u64("CHAOS_SECONDS").unwrap_or(seconds),
            seed: env_u64("CHAOS_SEED").unwrap_or_else(fresh_seed),
            threads: env_u64("CHAOS_THREADS").map_or(6, |n| n as usize),
            keys: env_u64("CHAOS_KEYS").map_or(5, |n| n as usize),
            think_ms: env_u64("CHAOS_THINK_MS").unwrap_or(0),
            check_timeout: Duration::from_secs(if long_run { 900 } else { 120 }),
            secure: env_u64("CHAOS_SECURE").is_some_and(|v| v == 1),
            replace: env_u64("CHAOS_REPLACE").is_some_and(|v| v == 1),
        }
    }

    /// The command that runs this configuration again.
    pub fn reproduce(&self) -> String {
        let mut env = format!("CHAOS_SEED={} ", self.seed);
        let mut flags = String::new();
        if self.long_run {
            let _ = write!(
                env,
                "CHAOS_NODES={} CHAOS_SECONDS={} ",
                self.nodes, self.seconds
            );
            flags.push_str(" --release");
        }
        if self.threads != 6 {
            let _ = write!(env, "CHAOS_THREADS={} ", self.threads);
        }
        if self.keys != 5 {
            let _ = write!(env, "CHAOS_KEYS={} ", self.keys);
        }
        if self.think_ms != 0 {
            let _ = write!(env, "CHAOS_THINK_MS={} ", self.think_ms);
        }
        if self.secure {
            env.push_str("CHAOS_SECURE=1 ");
        }
        if self.replace {
            env.push_str("CHAOS_REPLACE=1 ");
        }
        let ignored = if self.long_run { " --ignored" } else { "" };
        let mut cmd = format!(
            "{env}cargo test{flags} --test chaos -- --exact {}{ignored} --nocapture",
            self.test_name
        );
        if self.long_run {
            let _ = write!(
                cmd,
                "\n  (the same: scripts/chaos.sh --nodes {} --seconds {} --seed {})",
                self.nodes, self.seconds, self.seed
            );
        }
        cmd
    }
}

/// How long a cluster may take to heal and agree before it counts as a liveness failure.
pub const HEAL_DEADLINE: Duration = Duration::from_secs(30);
/// Healthy operation after healing: the clients must get writes through again within this
/// much after a request's own deadline. Every client may be waiting out that deadline on a
/// node that died just before the heal (a replaced member the clients still try, killed
/// and restarted as a non-member: seed 99707878 of `randomized_faults_replacing_a_member`
/// had all six there), so a window shorter than the deadline can hold no new request.
const RECOVERY: Duration = Duration::from_secs(2);

/// Runs one chaos run and panics with the report if anything is wrong.
pub fn run(cfg: &ChaosConfig) {
    let started = Instant::now();
    eprintln!(
        "chaos: {} nodes, {} s, seed {}, {} clients over {} keys; reproduce with:\n  {}",
        cfg.nodes,
        cfg.seconds,
        cfg.seed,
        cfg.threads,
        cfg.keys,
        cfg.reproduce()
    );
    let mut cluster = ChaosCluster::start_with_spares(
        cfg.nodes,
        cfg.replace as usize,
        Timings::default(),
        NetChoice::Auto,
        cfg.secure,
    );
    eprintln!(
        "chaos: {}{}",
        cluster.network_note,
        if cfg.secure {
            "; TLS between everyone, access control on"
        } else {
            ""
        }
    );
    cluster.wait_leader(Duration::from_secs(20));
    if cfg.secure {
        cluster.enable_auth();
    }

    let keys: Vec<String> = (0..cfg.keys).map(|i| format!("chaos-{i}")).collect();
    let wl = WorkloadConfig {
        threads: cfg.threads,
        keys: keys.clone(),
        timeout: request_timeout(&cluster),
        write_pct: 50,
        delete_pct: 10,
        cas_pct: 10,
        any_pct: 20,
        think: Duration::from_millis(cfg.think_ms),
    };
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let workers = workload::spawn(&wl, &cluster.addrs(), epoch, cfg.seed, &stop);
    let mut rng = Rng::fork(cfg.seed, 1);
    let ncfg = NemesisConfig::all(&cluster);
    let chaos_end = epoch + Duration::from_secs(cfg.seconds);
    // The replacement of a member begins a quarter into the faults and goes on under them.
    let replacing = cfg.replace.then(|| {
        let old = Rng::fork(cfg.seed, 2).index(cfg.nodes);
        let old_addr = cluster.nodes[old].addr.clone();
        let new_addr = cluster.nodes[cfg.nodes].addr.clone();
        let begin = epoch + Duration::from_secs(cfg.seconds) / 4;
        let until = chaos_end + HEAL_DEADLINE;
        let addrs = cluster.addrs();
        let job = std::thread::spawn(move || {
            replace_member(addrs, &old_addr, &new_addr, epoch, begin, until)
        });
        (old, job)
    });
    let faults = nemesis::run(&mut cluster, &ncfg, &mut rng, epoch, chaos_end);
    let chaos_end_ns = history::since(epoch);

    // Heal, let the clients see a healthy cluster for a while, then stop them.
    let mut problems: Vec<String> = Vec::new();
    let mut replaced_line = None;
    if let Some((old, job)) = replacing {
        cluster.heal_all();
        match job.join().expect("the replacing thread panicked") {
            Ok(steps) => {
                replaced_line = Some(format!(
                    "membership: node {old} replaced by node {} under faults: {}",
                    cfg.nodes,
                    steps.join(", ")
                ));
                // Out of the configuration: the end-of-run checks cover the members.
                cluster.retire(old);
            }
            Err(why) => problems.push(format!("replacing node {old}: {why}")),
        }
    }
    cluster.heal_all();
    if poll_until(HEAL_DEADLINE, || cluster.agreed_leader()).is_none() {
        problems.push(format!(
            "no leader agreed within {HEAL_DEADLINE:?} of healing: {}",
            cluster.views()
        ));
    }
    // The recovery window's duration, during which the clients keep going.
    let recovery = wl.timeout + RECOVERY;
    std::thread::sleep(recovery);
    stop.store(true, Ordering::Relaxed);
    let mut records: Vec<Record> = workers
        .into_iter()
        .flat_map(|h| h.join().expect("client thread panicked"))
        .collect();
    let workload_end_ns = history::since(epoch);
    let recovered = records
        .iter()
        .any(|r| r.kind == Kind::Write && r.outcome == Outcome::Ok && r.call_ns >= chaos_end_ns);
    if !recovered {
        problems.push(format!(
            "no write was acknowledged in the {recovery:?} after healing"
        ));
    }
    for f in &faults {
        if f.detail.contains(nemesis::HUNG_ON_SIGTERM) {
            problems.push(format!("a node hung on SIGTERM: {}", f.detail));
        }
    }
    history::write_jsonl(&cluster.dir.path().join("faults.jsonl"), &faults)
        .expect("write the faults file");

    let end = finish(&mut cluster, &mut records, &keys, epoch, cfg.check_timeout);
    problems.extend(end.problems.iter().cloned());
    let mut end_lines = end.lines.clone();
    end_lines.extend(replaced_line);

    // The report.
    let mut report = String::new();
    let _ = writeln!(
        report,
        "chaos report: {} nodes, {} s of faults, seed {}, {}",
        cfg.nodes, cfg.seconds, cfg.seed, cluster.network_note
    );
    let _ = writeln!(
        report,
        "operations ({} clients, {} keys, {} requests; outcomes after settling with the log):",
        cfg.threads,
        cfg.keys,
        records.len()
    );
    report.push_str(&history::render_counts(&records));
    let _ = writeln!(
        report,
        "faults injected ({}): {}",
        faults.len(),
        nemesis::summary(&faults)
    );
    let gaps = history::write_gaps(&records, 0, workload_end_ns);
    let _ = writeln!(report, "longest stretches without an acknowledged write:");
    for &(a, b) in gaps.iter().take(3) {
        let during: Vec<String> = nemesis::active_during(&faults, a, b)
            .iter()
            .map(|f| format!("{} ({})", f.kind.name(), f.detail))
            .collect();
        let _ = writeln!(
            report,
            "  {:.2} s from {:.2} s to {:.2} s; faults: {}",
            (b - a) as f64 / 1e9,
            a as f64 / 1e9,
            b as f64 / 1e9,
            if during.is_empty() {
                "none".to_string()
            } else {
                during.join("; ")
            }
        );
    }
    for line in &end_lines {
        let _ = writeln!(report, "{line}");
    }
    let passed = problems.is_empty();
    let _ = writeln!(
        report,
        "verdict: {} (run took {:.1} s)",
        if passed { "PASS" } else { "FAIL" },
        started.elapsed().as_secs_f64()
    );
    eprintln!("{report}");
    std::fs::write(cluster.dir.path().join("report.txt"), &report).expect("write the report");
    conclude(&mut cluster, &problems, &cfg.reproduce());
}

/// Replaces the member `old` by `new` (started with `--join`) through whichever member
/// leads, as `nacosctl member replace` does, one step at a time and each step again until
/// it is done: add `new` as a learner, promote it once the leader sees it caught up, remove
/// `old`. Faults may refuse or lose any request; it retries until `until`. Returns the
/// steps with the second of the run each was acknowledged at.
fn replace_member(
    addrs: Vec<String>,
    old: &str,
    new: &str,
    epoch: Instant,
    begin: Instant,
    until: Instant,
) -> Result<Vec<String>, String> {
    std::thread::sleep(begin.saturating_duration_since(Instant::now()));
    let client = crate::cluster::client(addrs, Duration::from_secs(3));
    let mut steps = Vec::new();
    let mut last = String::from("no leader answered");
    let at = || format!("{:.2} s", epoch.elapsed().as_secs_f64());
    while Instant::now() < until {
        match client.members() {
            Ok(m) if m.from_leader => {
                let newcomer = m.members.iter().find(|x| x.addr == new).cloned();
                let old_in = m.members.iter().any(|x| x.addr == old);
                let done = match &newcomer {
                    None => client.add_member(new, true).map(|_| "add"),
                    Some(x) if !x.voter && x.status == "ok" => {
                        client.promote_member(new).map(|_| "promote")
                    }
                    Some(x) if !x.voter => {
                        last = format!("{new} is {} with lag {:?}", x.status, x.lag);
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    Some(_) if old_in => client.remove_member(old).map(|_| "remove"),
                    Some(_) => return Ok(steps),
                };
                match done {
                    Ok(step) => steps.push(format!("{step} at {}", at())),
                    Err(e) => last = e.to_string(),
                }
            }
            Ok(m) => last = format!("{} answered without a leader", m.from),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "not finished in time (done: {}); last: {last}",
        if steps.is_empty() {
            "nothing".to_string()
        } else {
            steps.join(", ")
        }
    ))
}

/// The bound of every client request: a write may wait the publish timeout on a follower for a
/// leader and again on the leader for its commit.
pub fn request_timeout(cluster: &ChaosCluster) -> Duration {
    Duration::from_millis(2 * cluster.timings.publish_ms + 500)
}

/// What [`finish`] found.
pub struct Finish {
    /// Everything wrong, one entry each.
    pub problems: Vec<String>,
    /// Report lines: convergence, log, linearizability.
    pub lines: Vec<String>,
    /// The converged replica, if the nodes converged.
    pub replica: Option<Replica>,
    /// The committed log, if it could be read and was the same on every node.
    pub log: Option<NodeLog>,
}

/// The end-of-run checks, on a healed cluster:
/// 1. a final linearizable read of every key (recorded, so it pins the end state);
/// 2. every replica converges: same datums, timestamps and indexes, everything committed,
///    applied, and no uncommitted suffix left (polled up to [`HEAL_DEADLINE`]);
/// 3. a clean stop of every node (a node that ignores SIGTERM is a problem);
/// 4. every node's dump (checkpoint and log) equals the converged replica, and so do the
///    datum files of the nodes that keep them;
/// 5. every node's Raft log is the same, and agrees with every acknowledged answer
///    ([`history::log_violations`]); indeterminate writes are settled with it;
/// 6. the history file is written, and checked: linearizable key by key, log indexes
///    consistent with real time, no unexpected answers.
///
/// Leaves every node stopped.
pub fn finish(
    cluster: &mut ChaosCluster,
    records: &mut Vec<Record>,
    keys: &[String],
    epoch: Instant,
    check_timeout: Duration,
) -> Finish {
    let mut problems = Vec::new();
    let mut lines = Vec::new();
    let finals = Sender::to_any(u64::MAX, &cluster.addrs(), request_timeout(cluster));
    for key in keys {
        let got = poll_until(HEAL_DEADLINE, || {
            let r = finals.read(key, epoch);
            let ok = r.outcome == Outcome::Ok;
            records.push(r);
            ok.then_some(())
        });
        if got.is_none() {
            problems.push(format!(
                "the final read of {key} did not succeed within {HEAL_DEADLINE:?}"
            ));
        }
    }

    let converged = cluster.wait_converged(HEAL_DEADLINE);
    problems.extend(cluster.stop_cleanly(Duration::from_secs(15)));
    let mut committed_log = None;
    match &converged {
        Ok(replica) => {
            lines.push(format!(
                "convergence: all {} replicas hold the same {} datums (values, timestamps, indexes) in memory, in what dump reads after a clean stop, and in the datum files of those that keep them",
                cluster.len(),
                replica.len()
            ));
            let expected: BTreeMap<_, _> = replica
                .iter()
                .map(|(k, (v, ts, _))| (k.clone(), (v.clone(), *ts)))
                .collect();
            for (i, d) in cluster.dumps().iter().enumerate() {
                if *d != expected {
                    problems.push(format!(
                        "node {i}'s dump after a clean stop differs from the converged replica:\n  dump: {d:?}\n  replica: {expected:?}"
                    ));
                }
            }
            for (i, files) in cluster.datum_files() {
                match files {
                    Ok(f) if f == expected => {}
                    Ok(f) => problems.push(format!(
                        "node {i}'s datum files after a clean stop differ from the converged replica:\n  files: {f:?}\n  replica: {expected:?}"
                    )),
                    Err(e) => problems.push(format!("node {i}'s datum files: {e}")),
                }
            }
            match read_logs(cluster) {
                Ok(log) => {
                    problems.extend(history::log_violations(records, &log));
                    let settled = history::settle_indeterminate_writes(records, &log);
                    lines.push(format!(
                        "committed log: {} entries{}, the same on every node; checked against every acknowledged answer; indeterminate writes settled: {} committed, {} not",
                        log.entries.len(),
                        if log.start > 0 {
                            format!(
                                " after index {} (compacted: answers before it not checked against the log, nothing settled)",
                                log.start
                            )
                        } else {
                            String::new()
                        },
                        settled.committed,
                        settled.not_committed
                    ));
                    if !settled.not_leader_committed.is_empty() {
                        lines.push(format!(
                            "KNOWN BUG struck {} time(s): a write answered 503 not_leader was committed (see known_bugs::a_forwarded_write_committed_by_a_dying_leader_is_not_reported_as_failed); first: {}",
                            settled.not_leader_committed.len(),
                            settled.not_leader_committed[0]
                        ));
                    }
                    committed_log = Some(log);
                }
                Err(e) => {
                    lines.push(format!("committed log: FAILED: {e}"));
                    problems.push(e);
                }
            }
        }
        Err(e) => {
            lines.push(format!("convergence: FAILED: {e}"));
            problems.push(e.clone());
        }
    }

    records.sort_by_key(|r| (r.call_ns, r.client));
    history::write_jsonl(&cluster.dir.path().join("history.jsonl"), records)
        .expect("write the history file");
    let lin = history::check_linearizable(records, check_timeout);
    let not_proven: Vec<String> = lin
        .per_key
        .iter()
        .filter(|(_, v)| **v != Verdict::Linearizable)
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    lines.push(format!(
        "linearizability: {} ({} operations on {} keys checked key by key in {:.2} s{})",
        lin.verdict,
        lin.checked_ops,
        lin.per_key.len(),
        lin.took.as_secs_f64(),
        if not_proven.is_empty() {
            String::new()
        } else {
            format!("; {}", not_proven.join(", "))
        }
    ));
    if lin.verdict != Verdict::Linearizable {
        problems.push(format!("linearizability: {}\n{}", lin.verdict, lin.details));
    }
    problems.extend(history::index_violations(records));
    let unexpected: Vec<String> = records
        .iter()
        .filter(|r| r.unexpected)
        .take(5)
        .map(history::brief)
        .collect();
    if !unexpected.is_empty() {
        problems.push(format!(
            "unexpected answers (first {}): {}",
            unexpected.len(),
            unexpected.join("\n  ")
        ));
    }
    Finish {
        problems,
        lines,
        replica: converged.ok(),
        log: committed_log,
    }
}

/// Ends a run: on success the directory goes (unless `CHAOS_KEEP=1`); on failure it is kept
/// and the test panics with the problems, where everything is, and how to reproduce.
pub fn conclude(cluster: &mut ChaosCluster, problems: &[String], reproduce: &str) {
    let keep = std::env::var("CHAOS_KEEP").is_ok_and(|v| v == "1");
    if problems.is_empty() {
        if keep {
            let kept = cluster.dir.keep();
            eprintln!("chaos: kept {} (CHAOS_KEEP=1)", kept.display());
        }
        return;
    }
    let logs = cluster.logs(40);
    let kept = cluster.dir.keep();
    panic!(
        "FAILED:\n- {}\n\nhistory: {}\nnode logs and data: {}\nreproduce: {reproduce}\n\n{logs}",
        problems.join("\n- "),
        kept.join("history.jsonl").display(),
        kept.display(),
    );
}

/// The committed log, after checking that the stopped nodes' logs agree (Raft's log
/// matching, end to end): the same entry at every index two logs both hold (each node
/// compacts on its own). Their ends may differ only by no-op entries: every member gets
/// SIGTERM at once, a stopping leader hands leadership over, and the new leader's no-op
/// reaches only the members that have not exited yet. Any other entry past the shortest end
/// is a divergence. Returns the log that reaches furthest back.
fn read_logs(cluster: &ChaosCluster) -> Result<NodeLog, String> {
    let logs: Vec<NodeLog> = (0..cluster.len())
        .map(|i| cluster.read_log(i))
        .collect::<Result<_, _>>()?;
    let common_end = logs
        .iter()
        .map(NodeLog::last_index)
        .min()
        .expect("a cluster has nodes");
    for (i, log) in logs.iter().enumerate() {
        if let Some(e) = log
            .entries
            .iter()
            .find(|e| e.index > common_end && e.command != nacos_raft::raft::Command::Noop)
        {
            return Err(format!(
                "node {i}'s log holds {e:?} past index {common_end}, where another node's log ends: only the no-ops of a hand-over during the final stop may differ"
            ));
        }
    }
    let base = logs
        .iter()
        .enumerate()
        .min_by_key(|(_, l)| l.start)
        .map(|(i, _)| i)
        .expect("a cluster has nodes");
    for (i, other) in logs.iter().enumerate() {
        if let Some(e) = other
            .entries
            .iter()
            .find(|e| e.index <= logs[base].last_index() && logs[base].at(e.index) != Some(*e))
        {
            return Err(format!(
                "the logs of node {base} and node {i} differ at index {}: {:?} vs {e:?}",
                e.index,
                logs[base].at(e.index)
            ));
        }
    }
    Ok(logs[base].clone())
}
