//! The nemesis: a seeded schedule of faults against a running [`ChaosCluster`], one round at a
//! time (quiet, inject one or two faults, hold them, heal them), and the log of what it did.
//!
//! Faults: kill -9 of the leader or of a minority, a clean SIGTERM stop of the leader, SIGSTOP
//! pauses of the leader or of a minority (longer than the election timeout), and, when the
//! cluster runs in network namespaces, partitions (a minority, the leader alone, a bridge node
//! between two halves), one-way cuts and random packet loss between nodes. It must leave the
//! cluster healed when it returns.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::ChaosCluster;
use crate::history::since;
use crate::net::Rules;
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    KillLeader,
    KillMinority,
    TerminateLeader,
    PauseLeader,
    PauseMinority,
    PartitionMinority,
    IsolateLeader,
    Bridge,
    OneWay,
    Loss,
}

impl FaultKind {
    pub const PROCESS: [FaultKind; 5] = [
        FaultKind::KillLeader,
        FaultKind::KillMinority,
        FaultKind::TerminateLeader,
        FaultKind::PauseLeader,
        FaultKind::PauseMinority,
    ];
    pub const NETWORK: [FaultKind; 5] = [
        FaultKind::PartitionMinority,
        FaultKind::IsolateLeader,
        FaultKind::Bridge,
        FaultKind::OneWay,
        FaultKind::Loss,
    ];

    pub fn is_network(self) -> bool {
        FaultKind::NETWORK.contains(&self)
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-9-leader",
            FaultKind::KillMinority => "kill-9-minority",
            FaultKind::TerminateLeader => "sigterm-leader",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::PauseMinority => "pause-minority",
            FaultKind::PartitionMinority => "partition-minority",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::Bridge => "partition-bridge",
            FaultKind::OneWay => "one-way-cut",
            FaultKind::Loss => "packet-loss",
        }
    }
}

/// In a fault's detail when a node ignored SIGTERM for 10 s (a hang; the run fails).
pub const HUNG_ON_SIGTERM: &str = "did not exit within 10 s, killed";

/// One injected fault, for the report and the faults file.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    /// What exactly was done, naming nodes by index.
    pub detail: String,
    /// Nanoseconds since the run's epoch.
    pub start_ns: u64,
    pub end_ns: u64,
}

/// The nemesis' timing and choice of faults.
#[derive(Clone, Debug)]
pub struct NemesisConfig {
    pub kinds: Vec<FaultKind>,
    /// Time without faults between rounds.
    pub quiet: (Duration, Duration),
    /// How long a round's faults last.
    pub hold: (Duration, Duration),
    /// Percent of rounds held 3-4 times longer (a long partition, a long pause).
    pub long_pct: u64,
    /// Percent of rounds with two faults at once.
    pub double_pct: u64,
}

impl NemesisConfig {
    /// Every fault the cluster supports; pauses always outlast the election timeout.
    pub fn all(cluster: &ChaosCluster) -> NemesisConfig {
        let mut kinds = FaultKind::PROCESS.to_vec();
        if cluster.has_partitions() {
            kinds.extend(FaultKind::NETWORK);
            // Partitions are the point of the namespaces: weigh them as much as process faults.
            kinds.extend(FaultKind::NETWORK);
        }
        let e = cluster.timings.election_ms;
        NemesisConfig {
            kinds,
            quiet: (Duration::from_millis(300), Duration::from_millis(1500)),
            hold: (Duration::from_millis(2 * e), Duration::from_millis(10 * e)),
            long_pct: 10,
            double_pct: 30,
        }
    }
}

/// What a round did, so that it can be undone.
enum Undo {
    Restart(Vec<usize>),
    Resume(Vec<usize>),
    Network,
}

/// Runs rounds of faults until `until`, and returns with every fault healed.
pub fn run(
    cluster: &mut ChaosCluster,
    cfg: &NemesisConfig,
    rng: &mut Rng,
    epoch: Instant,
    until: Instant,
) -> Vec<FaultRecord> {
    let mut log = Vec::new();
    loop {
        // The quiet time between rounds is part of the schedule, not a wait for anything.
        let quiet = rng.duration(cfg.quiet.0, cfg.quiet.1);
        if Instant::now() + quiet >= until {
            break;
        }
        thread::sleep(quiet);
        let mut kinds = vec![*rng.pick(&cfg.kinds)];
        if rng.percent(cfg.double_pct) {
            kinds.push(*rng.pick(&cfg.kinds));
        }
        let mut rules = Rules::default();
        let mut undo = Vec::new();
        let mut round = Vec::new();
        for kind in kinds {
            let start_ns = since(epoch);
            let detail = inject(cluster, kind, rng, &mut rules, &mut undo);
            round.push(FaultRecord {
                kind,
                detail,
                start_ns,
                end_ns: 0,
            });
        }
        let mut hold = rng.duration(cfg.hold.0, cfg.hold.1);
        if rng.percent(cfg.long_pct) {
            hold *= 3 + rng.below(2) as u32;
        }
        // The fault's duration.
        thread::sleep(hold.min(until.saturating_duration_since(Instant::now())));
        for u in undo.into_iter().rev() {
            match u {
                Undo::Restart(nodes) => {
                    for i in nodes {
                        if !cluster.nodes[i].is_running() {
                            cluster.nodes[i].start();
                        }
                    }
                }
                Undo::Resume(nodes) => {
                    for i in nodes {
                        if cluster.nodes[i].is_paused() {
                            cluster.nodes[i].resume();
                        }
                    }
                }
                Undo::Network => {
                    if let Some(net) = &cluster.net {
                        net.heal()
                            .unwrap_or_else(|e| panic!("heal the network: {e}"));
                    }
                }
            }
        }
        let end_ns = since(epoch);
        for mut f in round {
            f.end_ns = end_ns;
            eprintln!(
                "chaos: {:>7.3}s {:<18} {} for {:.2}s",
                f.start_ns as f64 / 1e9,
                f.kind.name(),
                f.detail,
                (end_ns - f.start_ns) as f64 / 1e9
            );
            log.push(f);
        }
        if Instant::now() >= until {
            break;
        }
    }
    log
}

/// The nodes a fault may take away: at most a minority, so the rest can still elect.
fn minority(cluster: &mut ChaosCluster, rng: &mut Rng) -> Vec<usize> {
    let n = cluster.len();
    let f = ((n - 1) / 2).max(1);
    let count = 1 + rng.index(f);
    let mut all: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut all);
    all.truncate(count);
    all.sort_unstable();
    all
}

/// The leader if one claims it, else a random node (a fault still happens).
fn leader_or_any(cluster: &mut ChaosCluster, rng: &mut Rng) -> (usize, &'static str) {
    match cluster.current_leader() {
        Some(l) => (l, "leader"),
        None => (rng.index(cluster.len()), "no leader known; random node"),
    }
}

fn inject(
    cluster: &mut ChaosCluster,
    kind: FaultKind,
    rng: &mut Rng,
    rules: &mut Rules,
    undo: &mut Vec<Undo>,
) -> String {
    let n = cluster.len();
    let detail = match kind {
        FaultKind::KillLeader => {
            let (l, what) = leader_or_any(cluster, rng);
            cluster.nodes[l].kill9();
            undo.push(Undo::Restart(vec![l]));
            format!("kill -9 node {l} ({what})")
        }
        FaultKind::KillMinority => {
            let nodes = minority(cluster, rng);
            for &i in &nodes {
                cluster.nodes[i].kill9();
            }
            undo.push(Undo::Restart(nodes.clone()));
            format!("kill -9 nodes {nodes:?}")
        }
        FaultKind::TerminateLeader => {
            let (l, what) = leader_or_any(cluster, rng);
            let clean = cluster.nodes[l].terminate(Duration::from_secs(10));
            undo.push(Undo::Restart(vec![l]));
            if clean {
                format!("SIGTERM node {l} ({what})")
            } else {
                format!("SIGTERM node {l} ({what}): {HUNG_ON_SIGTERM}")
            }
        }
        FaultKind::PauseLeader => {
            let (l, what) = leader_or_any(cluster, rng);
            if cluster.nodes[l].is_running() {
                cluster.nodes[l].pause();
            }
            undo.push(Undo::Resume(vec![l]));
            format!("SIGSTOP node {l} ({what})")
        }
        FaultKind::PauseMinority => {
            let nodes = minority(cluster, rng);
            for &i in &nodes {
                if cluster.nodes[i].is_running() {
                    cluster.nodes[i].pause();
                }
            }
            undo.push(Undo::Resume(nodes.clone()));
            format!("SIGSTOP nodes {nodes:?}")
        }
        FaultKind::PartitionMinority => {
            let small = minority(cluster, rng);
            let rest: Vec<usize> = (0..n).filter(|i| !small.contains(i)).collect();
            rules.merge(&Rules::partition(&[small.clone(), rest.clone()]));
            format!("partition {small:?} | {rest:?}")
        }
        FaultKind::IsolateLeader => {
            let (l, what) = leader_or_any(cluster, rng);
            let rest: Vec<usize> = (0..n).filter(|&i| i != l).collect();
            rules.merge(&Rules::partition(&[vec![l], rest.clone()]));
            format!("isolate node {l} ({what}) from {rest:?}")
        }
        FaultKind::Bridge => {
            let mut all: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut all);
            let bridge = all[0];
            let (left, right) = all[1..].split_at((n - 1) / 2);
            let (left, right) = (left.to_vec(), right.to_vec());
            for &a in &left {
                for &b in &right {
                    rules.cut_both(a, b);
                }
            }
            format!("{left:?} <-> bridge node {bridge} <-> {right:?} (the sides cannot talk)")
        }
        FaultKind::OneWay => {
            let (l, what) = leader_or_any(cluster, rng);
            match rng.below(3) {
                0 => {
                    for i in (0..n).filter(|&i| i != l) {
                        rules.one_way.insert((i, l));
                    }
                    format!("node {l} ({what}) gets no messages, its own get through")
                }
                1 => {
                    let f = (l + 1 + rng.index(n - 1)) % n;
                    rules.one_way.insert((l, f));
                    format!("node {f} gets no messages from node {l} ({what}); the other way works")
                }
                _ => {
                    let a = rng.index(n);
                    let b = (a + 1 + rng.index(n - 1)) % n;
                    rules.one_way.insert((a, b));
                    format!("messages from node {a} to node {b} dropped; the other way works")
                }
            }
        }
        FaultKind::Loss => {
            let percent = 20 + 10 * rng.below(4) as u32;
            if rng.percent(50) {
                let (l, what) = leader_or_any(cluster, rng);
                rules.loss.push((l, percent));
                format!("{percent}% loss of packets to node {l} ({what})")
            } else {
                for i in 0..n {
                    rules.loss.push((i, percent));
                }
                format!("{percent}% loss of packets between all nodes")
            }
        }
    };
    if kind.is_network() {
        let net = cluster
            .net
            .as_ref()
            .expect("network faults only run with namespaces");
        net.apply(rules)
            .unwrap_or_else(|e| panic!("apply {}: {e}", kind.name()));
        undo.push(Undo::Network);
    }
    detail
}

/// Faults per kind, for the report.
pub fn summary(log: &[FaultRecord]) -> String {
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for f in log {
        *by_kind.entry(f.kind.name()).or_default() += 1;
    }
    by_kind
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The faults in force at any time during `[from_ns, to_ns]`.
pub fn active_during(log: &[FaultRecord], from_ns: u64, to_ns: u64) -> Vec<&FaultRecord> {
    log.iter()
        .filter(|f| f.start_ns <= to_ns && f.end_ns >= from_ns)
        .collect()
}
