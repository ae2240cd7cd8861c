//! Real `nacos-node` clusters for the chaos suite: started in their own network namespaces
//! when the machine allows it (so partitions are possible), else on 127.0.0.1 ports; their
//! process faults (kill -9, SIGTERM, SIGSTOP/SIGCONT); and the post-run checks that every
//! replica holds the same datums, in memory and on disk.
//!
//! Every process it signals is one it spawned and has not reaped, addressed by pid; nothing is
//! ever signalled by name. Dropping a cluster kills its nodes, then removes its network, then
//! its directory (unless kept for a failure report).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nacos_raft::client::{Client, ClientError, Status};
use nacos_raft::raft::Entry;
use nacos_raft::store::log::SEGMENT_BYTES;
use nacos_raft::store::LogStore;
use nacos_raft::wire::Role;
use serde_json::Value;

use crate::common::{free_ports, nacosctl, poll_until, DATUM_FILES_ON, NODE_BIN, READY_DEADLINE};
use crate::net::{self, Netns};

/// The cluster secret every node of the harness starts with.
pub const CLUSTER_SECRET: &str = "chaos-cluster-secret-0123456789";

/// A secured run's settings: every node serves HTTPS with mutual TLS between members (a
/// throwaway CA with a certificate for the nodes' addresses), and once access control is
/// on, every client sends the token of a user whose role may read and write every key.
pub struct Security {
    pub tls: std::sync::Arc<rustls::ClientConfig>,
    pub token: std::sync::Mutex<Option<String>>,
    _certs: tempfile::TempDir,
}

/// The current run's security, for every client the harness makes ([`client`]). The suite
/// runs one test at a time (`serial`), and a secured cluster clears it when dropped.
static SECURITY: std::sync::Mutex<Option<std::sync::Arc<Security>>> = std::sync::Mutex::new(None);

fn security() -> Option<std::sync::Arc<Security>> {
    SECURITY.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A client of `endpoints` as the current run needs it: plain, or over TLS with the
/// access-control token once there is one.
pub fn client(endpoints: Vec<String>, timeout: Duration) -> Client {
    match security() {
        None => Client::new(endpoints, timeout),
        Some(s) => {
            let https = endpoints.iter().map(|e| format!("https://{e}")).collect();
            let c = Client::with_tls(https, timeout, Some(s.tls.clone()));
            c.set_token(s.token.lock().unwrap_or_else(|p| p.into_inner()).clone());
            c
        }
    }
}

/// Whether to put the nodes in network namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetChoice {
    /// Namespaces if the machine allows (root, `ip netns`, iptables); otherwise say so loudly
    /// and run on 127.0.0.1 without partitions. `CHAOS_NETNS=off` forces loopback and
    /// `CHAOS_NETNS=require` turns the fallback into a failure.
    Auto,
    /// Plain 127.0.0.1 ports.
    Loopback,
}

/// Node timings. The defaults are the suite's short timings.
#[derive(Clone, Debug)]
pub struct Timings {
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    pub publish_ms: u64,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            heartbeat_ms: 50,
            election_ms: 300,
            publish_ms: 1500,
        }
    }
}

/// One node's replica: key -> (value, timestamp, index).
pub type Replica = BTreeMap<String, (Value, u64, u64)>;

/// A node's Raft log as found on disk.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeLog {
    /// The log continues after this index (0: never compacted, complete from index 1).
    pub start: u64,
    /// The entries after `start`, contiguous.
    pub entries: Vec<Entry>,
}

impl NodeLog {
    /// Index of the last entry (or `start` when there is none).
    pub fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.start, |e| e.index)
    }

    /// The entry at `index`, if the log still holds it.
    pub fn at(&self, index: u64) -> Option<&Entry> {
        let offset = index.checked_sub(self.start + 1)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }
}

pub struct ChaosNode {
    pub index: usize,
    /// `IP:PORT`, both listen and advertise address.
    pub addr: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// The namespace it runs in, if any.
    netns: Option<String>,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

impl ChaosNode {
    /// Spawns the node (inside its namespace if it has one), logs appended to its log file.
    pub fn start(&mut self) {
        assert!(!self.is_running(), "{} is already running", self.addr);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log_path.display()));
        let _ = writeln!(
            log,
            "=== chaos: starting node {} ({})",
            self.index, self.addr
        );
        let err = log.try_clone().expect("clone log handle");
        let mut cmd = match &self.netns {
            // `ip netns exec` enters the namespace and execs the node in place, so the child's
            // pid is the node's (checked below): kill -9 and SIGSTOP reach the node itself.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, NODE_BIN]);
                c
            }
            None => Command::new(NODE_BIN),
        };
        cmd.arg("--listen")
            .arg(&self.addr)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env_remove("NACOS_LISTEN")
            .env_remove("NACOS_DATA_DIR")
            .env_remove("NACOS_PEERS")
            // The cluster secret, as an operator sets it (not in the process list).
            .env("NACOS_CLUSTER_TOKEN", CLUSTER_SECRET)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn node {}: {e}", self.addr));
        if self.netns.is_some() {
            // The recipe's pid pitfall: make sure the pid we will signal is the node and not a
            // wrapper that forked it.
            let pid = child.id();
            let node_exe = fs::canonicalize(NODE_BIN).expect("node binary path");
            let exe_is_node = poll_until(Duration::from_secs(5), || {
                if let Ok(Some(_)) = child.try_wait() {
                    return Some(false);
                }
                let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
                (exe == node_exe).then_some(true)
            });
            if exe_is_node != Some(true) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`ip netns exec` did not run {} in place as pid {pid} (exited or forked)\n{}",
                    node_exe.display(),
                    self.log_excerpt()
                );
            }
        }
        self.child = Some(child);
        self.paused = false;
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// Running and not stopped.
    pub fn is_live(&mut self) -> bool {
        !self.paused && self.is_running()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// SIGKILL and reap: nothing of the node's shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// SIGTERM (a clean stop: a leader hands over first), SIGKILL after `deadline`. Returns
    /// false if the node had to be killed.
    pub fn terminate(&mut self, deadline: Duration) -> bool {
        self.send_term();
        self.wait_exit(deadline)
    }

    /// Sends SIGTERM (resuming a paused node first, or it could not act on it).
    pub fn send_term(&mut self) {
        if self.paused {
            self.resume();
        }
        if let Some(child) = self.child.as_mut() {
            if let Ok(None) = child.try_wait() {
                signal(child, libc::SIGTERM);
            }
        }
    }

    /// Waits for the process to exit; SIGKILL at the deadline. Returns false if it had to be
    /// killed.
    pub fn wait_exit(&mut self, deadline: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        self.paused = false;
        if poll_until(deadline, || child.try_wait().ok().flatten()).is_some() {
            return true;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// SIGSTOP: sockets stay open, nothing answers (a long GC pause, a frozen VM).
    pub fn pause(&mut self) {
        if let Some(c) = &self.child {
            signal(c, libc::SIGSTOP);
            self.paused = true;
        }
    }

    pub fn resume(&mut self) {
        if let Some(c) = &self.child {
            signal(c, libc::SIGCONT);
        }
        self.paused = false;
    }

    /// A client of this node alone.
    pub fn client(&self, timeout: Duration) -> Client {
        client(vec![self.addr.clone()], timeout)
    }

    pub fn status(&self, timeout: Duration) -> Option<Status> {
        self.client(timeout).status_of(&self.addr).ok()
    }

    /// What this node holds, read from its own replica (`stale`), or why it could not say.
    pub fn replica(&self, timeout: Duration) -> Result<Replica, String> {
        let c = self.client(timeout);
        let keys = c
            .list("", true)
            .map_err(|e| format!("{}: list: {e}", self.addr))?;
        let mut out = Replica::new();
        for entry in keys {
            match c.get(&entry.key, true) {
                Ok(g) => {
                    out.insert(entry.key, (g.value, g.timestamp, g.index));
                }
                // Deleted between the list and the get: the caller polls again.
                Err(ClientError::NotFound { .. }) => {
                    return Err(format!(
                        "{}: {} vanished while reading",
                        self.addr, entry.key
                    ))
                }
                Err(e) => return Err(format!("{}: get {}: {e}", self.addr, entry.key)),
            }
        }
        Ok(out)
    }

    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log, labelled.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "--- node {} {} ({}) ---\n{}",
            self.index,
            self.addr,
            self.log_path.display(),
            all[from..].join("\n")
        )
    }

    pub fn log_excerpt(&self) -> String {
        self.log_tail(60)
    }
}

impl Drop for ChaosNode {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped process.
        self.kill9();
    }
}

/// Sends `sig` to a child that has not been reaped, so the pid is still ours.
fn signal(child: &Child, sig: libc::c_int) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid belongs to our unreaped
    // child.
    let rc = unsafe { libc::kill(pid, sig) };
    assert!(
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH),
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Where a cluster's files live: removed on drop unless [`RunDir::keep`] was called.
pub struct RunDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl RunDir {
    pub fn new(prefix: &str) -> RunDir {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temp dir");
        let path = dir.path().to_path_buf();
        RunDir {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory after the run (for a failure report or `CHAOS_KEEP=1`).
    pub fn keep(&mut self) -> PathBuf {
        if let Some(d) = self.dir.take() {
            let _ = d.keep();
        }
        self.path.clone()
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        // The next test's clients are plain again (a test that did not secure its cluster
        // never set it).
        *SECURITY.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        // A test that panics before its report (a node that never became ready, a leader never
        // agreed) still leaves its evidence: node logs and data.
        if std::thread::panicking() && self.dir.is_some() {
            let kept = self.keep();
            eprintln!(
                "chaos: test failed; node logs and data kept in {}",
                kept.display()
            );
        }
    }
}

pub struct ChaosCluster {
    // Field order is drop order: processes first, then their network, then their files.
    pub nodes: Vec<ChaosNode>,
    pub net: Option<Netns>,
    pub dir: RunDir,
    /// How the network was set up, or why partitions are unavailable: for the report.
    pub network_note: String,
    pub timings: Timings,
}

impl ChaosCluster {
    /// Starts `n` nodes and waits until each serves `/v1/health`.
    pub fn start(n: usize, timings: Timings, choice: NetChoice) -> ChaosCluster {
        ChaosCluster::start_with(n, timings, choice, false)
    }

    /// [`ChaosCluster::start`], over TLS when `secure` (see [`Security`]); access control
    /// is turned on afterwards, with [`ChaosCluster::enable_auth`].
    pub fn start_with(n: usize, timings: Timings, choice: NetChoice, secure: bool) -> ChaosCluster {
        ChaosCluster::start_with_spares(n, 0, timings, choice, secure)
    }

    /// [`ChaosCluster::start_with`] plus `spares` nodes after the `n` members, started with
    /// `--join` (not members until added).
    pub fn start_with_spares(
        members: usize,
        spares: usize,
        timings: Timings,
        choice: NetChoice,
        secure: bool,
    ) -> ChaosCluster {
        let n = members + spares;
        let dir = RunDir::new("nacos-chaos-");
        let env = std::env::var("CHAOS_NETNS").unwrap_or_default();
        let (net, network_note) = if choice == NetChoice::Loopback || env == "off" {
            (
                None,
                "loopback (network namespaces not requested)".to_string(),
            )
        } else {
            match net::unavailable_reason().map_or_else(|| Netns::create(n), Err) {
                Ok(net) => {
                    let note = format!("network namespaces: {}", net.describe());
                    (Some(net), note)
                }
                Err(why) => {
                    assert!(
                        env != "require",
                        "CHAOS_NETNS=require but network namespaces are unavailable: {why}"
                    );
                    eprintln!(
                        "chaos: PARTITIONS SKIPPED: network namespaces unavailable ({why}); \
                         running kill -9, SIGTERM and SIGSTOP faults only, on 127.0.0.1"
                    );
                    (None, format!("loopback; PARTITIONS SKIPPED because {why}"))
                }
            }
        };
        let addrs: Vec<String> = match &net {
            // Each node has its own address, so all can use Nacos's port.
            Some(net) => (0..n)
                .map(|i| format!("{}:{}", net.node_ip(i), net::NODE_PORT))
                .collect(),
            None => free_ports(n)
                .into_iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect(),
        };
        let mut args: Vec<String> = [
            "--heartbeat-interval-ms".to_string(),
            timings.heartbeat_ms.to_string(),
            "--election-timeout-ms".into(),
            timings.election_ms.to_string(),
            "--publish-timeout-ms".into(),
            timings.publish_ms.to_string(),
        ]
        .to_vec();
        // Extra nacos-node flags, e.g. small checkpoints so that members caught out by a
        // fault must catch up by snapshot: CHAOS_NODE_ARGS="--checkpoint-entries 2000 ...".
        if let Ok(extra) = std::env::var("CHAOS_NODE_ARGS") {
            args.extend(extra.split_whitespace().map(str::to_string));
        }
        if secure {
            let certs = tempfile::Builder::new()
                .prefix("nacos-chaos-tls-")
                .tempdir()
                .expect("temp dir");
            let hosts: Vec<String> = addrs
                .iter()
                .filter_map(|a| a.rsplit_once(':').map(|(h, _)| h.to_string()))
                .collect();
            let f = nacos_raft::tls::local::make(certs.path(), &hosts, false)
                .expect("test certificates");
            let node_args: Vec<String> = [
                "--tls-cert",
                f.cert.to_str().expect("utf-8 path"),
                "--tls-key",
                f.key.to_str().expect("utf-8 path"),
                "--tls-client-ca",
                f.ca.to_str().expect("utf-8 path"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(node_args);
            let tls = nacos_raft::tls::client_config(Some(&f.ca), None).expect("client TLS");
            *SECURITY.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(std::sync::Arc::new(Security {
                    tls: std::sync::Arc::new(tls),
                    token: std::sync::Mutex::new(None),
                    _certs: certs,
                }));
        }
        let nodes = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                // The members bootstrap the cluster; a spare waits to be added.
                let flag = if i < members { "--peers" } else { "--join" };
                let mut a = vec![flag.to_string(), addrs[..members].join(",")];
                a.extend(args.iter().cloned());
                // Every other member keeps the Nacos-layout datum files too, so both ways of
                // persisting the view run under the faults (the end checks read both).
                if i % 2 == 1 && !a.iter().any(|x| x == DATUM_FILES_ON[0]) {
                    a.extend(DATUM_FILES_ON.map(str::to_string));
                }
                ChaosNode {
                    index: i,
                    addr: addr.clone(),
                    data_dir: dir.path().join(format!("node-{i}")),
                    log_path: dir.path().join(format!("node-{i}.log")),
                    netns: net.as_ref().map(|n| n.namespace(i).to_string()),
                    args: a,
                    child: None,
                    paused: false,
                }
            })
            .collect();
        let mut cluster = ChaosCluster {
            nodes,
            net,
            dir,
            network_note,
            timings,
        };
        for node in &mut cluster.nodes {
            node.start();
        }
        for i in 0..n {
            cluster.wait_ready(i);
        }
        cluster
    }

    /// Turns access control on (a `root` user, and a user `chaos` whose role may read and
    /// write every key), and makes every later client of the harness log in as `chaos`.
    pub fn enable_auth(&mut self) {
        let s = security().expect("a secured cluster (start_with secure)");
        let c = client(self.addrs(), Duration::from_secs(10));
        c.user_add("root", "chaos-root-pw").expect("user add root");
        c.user_add("chaos", "chaos-pw").expect("user add chaos");
        c.role_add("all").expect("role add");
        c.role_grant("all", "", nacos_raft::wire::auth::Perm::Readwrite)
            .expect("role grant");
        c.user_grant_role("chaos", "all").expect("grant role");
        c.auth_enable().expect("auth enable");
        let token = c.login("chaos", "chaos-pw").expect("login").token;
        *s.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
    }

    /// Stops node `i` (removed from the configuration) and takes it out of the cluster: the
    /// end-of-run checks cover the members only. Indexes after it move down by one.
    pub fn retire(&mut self, i: usize) {
        let mut node = self.nodes.remove(i);
        if node.is_paused() {
            node.resume();
        }
        if node.is_running() {
            node.kill9();
        }
    }

    pub fn has_partitions(&self) -> bool {
        self.net.is_some()
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn wait_ready(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let addr = node.addr.clone();
        let client = node.client(Duration::from_millis(500));
        let ok = poll_until(READY_DEADLINE, || {
            if !node.is_running() {
                return Some(false);
            }
            matches!(client.health_of(&addr), Ok(h) if h.ok).then_some(true)
        });
        if ok != Some(true) {
            panic!(
                "node {i} ({addr}) did not become ready within {READY_DEADLINE:?} ({})\n{}",
                self.network_note,
                self.nodes[i].log_excerpt()
            );
        }
    }

    /// Statuses of the live nodes, by index (a node that does not answer is left out).
    pub fn statuses(&mut self, timeout: Duration) -> Vec<(usize, Status)> {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_live())
            .collect();
        live.into_iter()
            .filter_map(|i| self.nodes[i].status(timeout).map(|s| (i, s)))
            .collect()
    }

    /// The live node that claims leadership in the highest term, if any.
    pub fn current_leader(&mut self) -> Option<usize> {
        self.statuses(Duration::from_millis(300))
            .into_iter()
            .filter(|(_, s)| s.role == Role::Leader)
            .max_by_key(|(_, s)| s.term)
            .map(|(i, _)| i)
    }

    /// The leader every live member agrees on (same leader, same term, and it says
    /// LEADER). A node outside its own configuration (a spare not added yet) is left out.
    pub fn agreed_leader(&mut self) -> Option<(usize, u64)> {
        let live = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_live())
            .count();
        let st = self.statuses(Duration::from_millis(500));
        if st.len() != live || st.is_empty() {
            return None;
        }
        let st: Vec<(usize, Status)> = st
            .into_iter()
            .filter(|(i, s)| s.peers.contains(&self.nodes[*i].addr))
            .collect();
        if st.is_empty() {
            return None;
        }
        let (_, first) = &st[0];
        let leader = first.leader.clone()?;
        let term = first.term;
        if st
            .iter()
            .any(|(_, s)| s.leader.as_deref() != Some(leader.as_str()) || s.term != term)
        {
            return None;
        }
        let li = self.nodes.iter().position(|n| n.addr == leader)?;
        st.iter()
            .find(|(i, s)| *i == li && s.role == Role::Leader)
            .map(|_| (li, term))
    }

    /// Waits for [`ChaosCluster::agreed_leader`]; panics with every log at the deadline.
    pub fn wait_leader(&mut self, deadline: Duration) -> (usize, u64) {
        match poll_until(deadline, || self.agreed_leader()) {
            Some(l) => l,
            None => panic!(
                "no leader agreed by all live nodes within {deadline:?}: {}\n{}",
                self.views(),
                self.logs(40)
            ),
        }
    }

    /// Ends every fault: network rules removed, paused nodes resumed, stopped nodes started.
    pub fn heal_all(&mut self) {
        if let Some(net) = &self.net {
            net.heal()
                .unwrap_or_else(|e| panic!("heal the network: {e}"));
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_paused() {
                self.nodes[i].resume();
            }
            if !self.nodes[i].is_running() {
                self.nodes[i].start();
            }
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i);
        }
    }

    /// Polls until every node has applied everything committed and all replicas are equal
    /// (values, timestamps and indexes); returns the common replica, or why they still
    /// differed at the deadline.
    pub fn wait_converged(&mut self, deadline: Duration) -> Result<Replica, String> {
        let mut last = String::new();
        let result = poll_until(deadline, || {
            let mut replicas = Vec::new();
            let mut applied = Vec::new();
            for n in &self.nodes {
                let Some(s) = n.status(Duration::from_secs(1)) else {
                    last = format!("node {} ({}) does not answer /v1/status", n.index, n.addr);
                    return None;
                };
                applied.push((s.commit_index, s.applied_index, s.last_log_index));
                match n.replica(Duration::from_secs(2)) {
                    Ok(r) => replicas.push(r),
                    Err(e) => {
                        last = e;
                        return None;
                    }
                }
            }
            // Everything in every log committed and applied: no uncommitted suffix is left
            // anywhere (a deposed leader's must have been replaced).
            let max_commit = applied.iter().map(|a| a.0).max().unwrap_or(0);
            if applied
                .iter()
                .any(|&(c, a, l)| c != max_commit || a != max_commit || l != max_commit)
            {
                last = format!("(commit, applied, last log) index per node: {applied:?}");
                return None;
            }
            if let Some(i) = (1..replicas.len()).find(|&i| replicas[i] != replicas[0]) {
                last = format!(
                    "node 0 and node {i} differ:\n  node 0: {:?}\n  node {i}: {:?}",
                    replicas[0], replicas[i]
                );
                return None;
            }
            replicas.into_iter().next()
        });
        result.ok_or_else(|| format!("replicas did not converge within {deadline:?}: {last}"))
    }

    /// Stops every node with SIGTERM, all at once; returns a problem for each that did not
    /// exit within `deadline` (it is then killed).
    pub fn stop_cleanly(&mut self, deadline: Duration) -> Vec<String> {
        for n in &mut self.nodes {
            n.send_term();
        }
        let mut problems = Vec::new();
        for n in &mut self.nodes {
            if !n.wait_exit(deadline) {
                problems.push(format!(
                    "node {} ({}) did not exit within {deadline:?} of SIGTERM",
                    n.index, n.addr
                ));
            }
        }
        problems
    }

    /// Each stopped node's state, read with `nacosctl dump` (its checkpoint and log):
    /// key -> (value, timestamp). Exact after a clean stop.
    pub fn dumps(&self) -> Vec<BTreeMap<String, (Value, u64)>> {
        self.nodes.iter().map(|n| dump(&n.data_dir)).collect()
    }

    /// The datum files of each stopped node that keeps them (`--datum-files on`), by node
    /// index: key -> (value, timestamp), or why they could not be read. Written behind the
    /// state and synced at a clean stop, so then exact.
    pub fn datum_files(&self) -> Vec<(usize, Result<Datums, String>)> {
        self.nodes
            .iter()
            .filter(|n| n.args.windows(2).any(|w| w == DATUM_FILES_ON))
            .map(|n| {
                let files = nacos_raft::store::read_datum_dir(&n.data_dir)
                    .map(|files| {
                        files
                            .into_iter()
                            .map(|(d, _)| (d.key, (d.value, d.timestamp)))
                            .collect()
                    })
                    .map_err(|e| e.to_string());
                (n.index, files)
            })
            .collect()
    }

    /// A stopped node's Raft log, read from a copy of its log directory (opening a log may
    /// cut a torn tail, and the original must stay as the node left it for a failure report).
    pub fn read_log(&self, i: usize) -> Result<NodeLog, String> {
        let src = self.nodes[i].data_dir.join("log");
        let copy = self.dir.path().join(format!("log-copy-{i}"));
        let _ = fs::remove_dir_all(&copy);
        fs::create_dir_all(&copy).map_err(|e| format!("create {}: {e}", copy.display()))?;
        for f in fs::read_dir(&src).map_err(|e| format!("read {}: {e}", src.display()))? {
            let f = f.map_err(|e| format!("read {}: {e}", src.display()))?;
            fs::copy(f.path(), copy.join(f.file_name()))
                .map_err(|e| format!("copy {}: {e}", f.path().display()))?;
        }
        // A cleanly stopped node's log must be whole: no tail is cut for it.
        let clean = nacos_raft::store::datum_dir::clean_stop_marked(&self.nodes[i].data_dir);
        let recovered = LogStore::open(&copy, SEGMENT_BYTES, clean)
            .map_err(|e| format!("node {i}'s log: {e}"))?;
        let log = NodeLog {
            start: recovered.start.index,
            entries: recovered.entries,
        };
        drop(recovered.store);
        let _ = fs::remove_dir_all(&copy);
        Ok(log)
    }

    /// Each live node's view, for failure messages.
    pub fn views(&mut self) -> String {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            let view = if n.is_paused() {
                "paused".to_string()
            } else if !n.is_running() {
                "down".to_string()
            } else {
                match n.status(Duration::from_millis(500)) {
                    Some(s) => format!(
                        "{} term {} leader {:?} commit {} applied {} last {}",
                        s.role, s.term, s.leader, s.commit_index, s.applied_index, s.last_log_index
                    ),
                    None => "no answer".into(),
                }
            };
            out.push(format!("node {i} {}: {view}", n.addr));
        }
        out.join("\n  ")
    }

    pub fn logs(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| n.log_tail(lines))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Key -> (value, timestamp).
pub type Datums = BTreeMap<String, (Value, u64)>;

/// A stopped node's state, read offline with `nacosctl dump`.
pub fn dump(data_dir: &Path) -> BTreeMap<String, (Value, u64)> {
    let out = nacosctl(&[
        "-o",
        "json",
        "dump",
        "--data-dir",
        &data_dir.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "nacosctl dump {}: {}",
        data_dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("dump prints JSON");
    v.as_array()
        .expect("dump prints an array")
        .iter()
        .map(|d| {
            (
                d["key"].as_str().expect("key").to_string(),
                (
                    d["value"].clone(),
                    d["timestamp"].as_u64().expect("timestamp"),
                ),
            )
        })
        .collect()
}
