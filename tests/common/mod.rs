//! End-to-end test harness: spawns the real `nacos-node` and `nacosctl` binaries on 127.0.0.1
//! with ephemeral ports and temp dirs, and controls the nodes with signals (kill -9, SIGTERM,
//! SIGSTOP/SIGCONT).
//!
//! Rules it keeps so tests stay reliable on a loaded 2-core machine: every wait is a poll
//! with a deadline (never a sleep standing in for synchronisation); every process it starts
//! is signalled by its own pid and reaped, never by name; a failure message carries the
//! node's log.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nacos_raft::client::{Client, Status};
use nacos_raft::wire::Role;
use tempfile::TempDir;

pub const NODE_BIN: &str = env!("CARGO_BIN_EXE_nacos-node");
pub const CTL_BIN: &str = env!("CARGO_BIN_EXE_nacosctl");

/// How long a node may take to start serving. Generous: debug builds on a busy machine.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);
/// How long a cluster may take to agree on a leader.
pub const LEADER_DEADLINE: Duration = Duration::from_secs(20);
/// A nacosctl run longer than this is a hang: it is killed and the test fails.
pub const CTL_DEADLINE: Duration = Duration::from_secs(60);

/// The node flags that keep the Nacos-layout datum files (off by default).
pub const DATUM_FILES_ON: [&str; 2] = ["--datum-files", "on"];

/// `args` with the datum files kept ([`DATUM_FILES_ON`]).
pub fn with_datum_files<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().chain(DATUM_FILES_ON).collect()
}

/// Polls `f` until it gives `Some`, or `deadline` has passed (then `None`). The pause
/// between polls is short and only spares the CPU; correctness never depends on it.
pub fn poll_until<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        thread::sleep(pause.min(end.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// `n` distinct free ports on 127.0.0.1 for nodes to listen on. They come from 10000-19999,
/// below the kernel's ephemeral range (32768 and up), so no outgoing connection of the
/// thousands a test binary makes can take one between the check and the node's bind; and
/// each port is handed out at most once per test process, so two tests running side by
/// side never get the same one (with `bind(0)` they could, and the second node then failed
/// to listen while its test talked to the first test's node).
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries run one after another; a different start per process keeps a port a
    // finished binary left in TIME_WAIT out of the way anyway.
    let start = (std::process::id() % 625) * 16;
    let mut out = Vec::with_capacity(n);
    for _ in 0..100_000 {
        if out.len() == n {
            break;
        }
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10_000 + ((start + k) % 10_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            out.push(port);
        }
    }
    assert_eq!(out.len(), n, "no {n} free ports in 10000-19999");
    out
}

/// An address on 127.0.0.1 where nothing listens.
pub fn dead_addr() -> String {
    format!("127.0.0.1:{}", free_ports(1)[0])
}

/// One `nacos-node` process, its address, data dir and log file. Dropping it kills the
/// process.
pub struct TestNode {
    pub addr: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// Arguments after `--listen ADDR --data-dir DIR`, kept for [`TestNode::restart`].
    pub extra_args: Vec<String>,
    /// The open-file limit (soft and hard) the process starts with, on every start; `None`
    /// leaves the test's own limit.
    pub open_file_limit: Option<u64>,
    child: Option<Child>,
    paused: bool,
    /// Set for a standalone node, which owns its temp dir.
    _dir: Option<TempDir>,
}

impl TestNode {
    /// A node description; nothing is started until [`TestNode::start`].
    pub fn new(addr: &str, data_dir: &Path, log_path: &Path, extra_args: &[&str]) -> TestNode {
        TestNode {
            addr: addr.to_string(),
            data_dir: data_dir.to_path_buf(),
            log_path: log_path.to_path_buf(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            open_file_limit: None,
            child: None,
            paused: false,
            _dir: None,
        }
    }

    /// A started single node without `--peers` (standalone), in its own temp dir, ready and
    /// leader of itself (a one-member cluster elects itself after one election timeout).
    pub fn standalone(extra_args: &[&str]) -> TestNode {
        TestNode::standalone_with_limit(None, extra_args)
    }

    /// [`TestNode::standalone`] with an open-file limit (soft and hard) for the process.
    pub fn standalone_with_open_file_limit(limit: u64, extra_args: &[&str]) -> TestNode {
        TestNode::standalone_with_limit(Some(limit), extra_args)
    }

    fn standalone_with_limit(open_file_limit: Option<u64>, extra_args: &[&str]) -> TestNode {
        let dir = tempfile::Builder::new()
            .prefix("nacos-node-")
            .tempdir()
            .expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_ports(1)[0]);
        let mut node = TestNode::new(
            &addr,
            &dir.path().join("data"),
            &dir.path().join("node.log"),
            extra_args,
        );
        node._dir = Some(dir);
        node.open_file_limit = open_file_limit;
        node.start();
        node.wait_ready(READY_DEADLINE);
        let leader = node.wait_leader(LEADER_DEADLINE);
        assert_eq!(leader, node.addr, "a standalone node leads itself");
        node
    }

    /// Spawns the process with stdout and stderr appended to the log file. Panics if it is
    /// already running.
    pub fn start(&mut self) {
        assert!(!self.is_running(), "{} is already running", self.addr);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log_path.display()));
        writeln!(
            log,
            "=== harness: starting nacos-node --listen {} --data-dir {} {}{}",
            self.addr,
            self.data_dir.display(),
            self.extra_args.join(" "),
            self.open_file_limit
                .map_or(String::new(), |n| format!(" (open-file limit {n})"))
        )
        .expect("write log");
        let err = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(NODE_BIN);
        if let Some(limit) = self.open_file_limit {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            // SAFETY: the closure runs in the child between fork and exec and calls only
            // setrlimit(2), which is async-signal-safe, on a struct it owns.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .arg("--listen")
            .arg(&self.addr)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            // The node falls back to these; the test's own environment must not leak in.
            .env_remove("NACOS_LISTEN")
            .env_remove("NACOS_DATA_DIR")
            .env_remove("NACOS_PEERS")
            // The cluster secret, as an operator sets it (a standalone node ignores it).
            .env("NACOS_CLUSTER_TOKEN", CLUSTER_SECRET)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {NODE_BIN}: {e}"));
        self.child = Some(child);
        self.paused = false;
    }

    /// Starts the node again with the same arguments and data dir; a node still running is
    /// killed first (SIGKILL). Does not wait for it to be ready.
    pub fn restart(&mut self) {
        if self.is_running() {
            self.kill9();
        }
        self.start();
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process was started and has not exited (a paused node is running).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// Running and not paused: able to answer.
    pub fn is_live(&mut self) -> bool {
        !self.paused && self.is_running()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// A client of this node alone.
    pub fn client(&self, timeout: Duration) -> Client {
        Client::with_tls(vec![self.endpoint()], timeout, self.tls())
    }

    /// The address a client uses: `https://ADDR` for a node started with TLS flags.
    pub fn endpoint(&self) -> String {
        match self.tls() {
            Some(_) => format!("https://{}", self.addr),
            None => self.addr.clone(),
        }
    }

    /// The client TLS configuration for a node started with `--tls-ca` (or
    /// `--tls-client-ca`): trusting that CA.
    pub fn tls(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        let after = |flag: &str| {
            self.extra_args
                .iter()
                .position(|a| a == flag)
                .and_then(|i| self.extra_args.get(i + 1))
        };
        after("--tls-cert")?;
        let ca = after("--tls-ca").or_else(|| after("--tls-client-ca"))?;
        let cfg = nacos_raft::tls::client_config(Some(Path::new(ca)), None)
            .unwrap_or_else(|e| panic!("the test CA {ca}: {e}"));
        Some(std::sync::Arc::new(cfg))
    }

    /// Waits until `GET /v1/health` answers 200, or panics with the node's log when the
    /// process exits or `deadline` passes.
    pub fn wait_ready(&mut self, deadline: Duration) {
        if let Err(why) = self.try_wait_ready(deadline) {
            panic!("{why}\n{}", self.log_excerpt());
        }
    }

    /// [`TestNode::wait_ready`] without the panic: for tests that expect a start to fail.
    pub fn try_wait_ready(&mut self, deadline: Duration) -> Result<(), String> {
        let client = self.client(Duration::from_millis(500));
        let addr = self.addr.clone();
        let endpoint = self.endpoint();
        let mut exited = None;
        let ready = poll_until(deadline, || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    exited = Some(status);
                    return Some(false);
                }
            }
            matches!(client.health_of(&endpoint), Ok(h) if h.ok).then_some(true)
        });
        match (ready, exited) {
            (Some(true), _) => Ok(()),
            (_, Some(status)) => Err(format!("nacos-node {addr} exited before ready: {status}")),
            _ if self.child.is_none() => Err(format!("nacos-node {addr} was never started")),
            _ => Err(format!("nacos-node {addr} not ready within {deadline:?}")),
        }
    }

    /// Waits until this node names a leader in `/v1/leader` and returns it; panics with the
    /// log at the deadline.
    pub fn wait_leader(&self, deadline: Duration) -> String {
        let client = self.client(Duration::from_millis(500));
        poll_until(deadline, || client.leader_of(&self.endpoint()).ok()?.leader).unwrap_or_else(
            || {
                panic!(
                    "nacos-node {} knows no leader after {deadline:?}\n{}",
                    self.addr,
                    self.log_excerpt()
                )
            },
        )
    }

    /// Waits for the process to exit on its own; `None` if it is still running at the
    /// deadline (it is left running).
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = poll_until(deadline, || child.try_wait().ok().flatten())?;
        Some(status)
    }

    /// `/v1/status` of this node, or `None` if it does not answer within `timeout`.
    pub fn status(&self, timeout: Duration) -> Option<Status> {
        self.client(timeout).status_of(&self.endpoint()).ok()
    }

    /// kill -9 and reap. Nothing of the node's shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // std's kill is SIGKILL, and is a no-op for a child already reaped.
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// SIGTERM, then waits up to `deadline` for a clean exit. Returns the exit status, or
    /// `None` if the node had to be killed with SIGKILL after the deadline (or was not
    /// running).
    pub fn terminate(&mut self, deadline: Duration) -> Option<ExitStatus> {
        if self.paused {
            // A stopped process cannot act on SIGTERM.
            self.resume();
        }
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        signal(&child, libc::SIGTERM);
        let status = poll_until(deadline, || child.try_wait().ok().flatten());
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }

    /// SIGSTOP: the process stays, its sockets stay open, and it answers nothing (like a
    /// long GC pause or a frozen VM).
    pub fn pause(&mut self) {
        let child = self.child.as_ref().expect("pause: node not running");
        signal(child, libc::SIGSTOP);
        self.paused = true;
    }

    /// SIGCONT after [`TestNode::pause`].
    pub fn resume(&mut self) {
        let child = self.child.as_ref().expect("resume: node not running");
        signal(child, libc::SIGCONT);
        self.paused = false;
    }

    /// Everything the node has written to stdout and stderr, across restarts.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        s
    }

    /// The last 200 lines of the log, labelled, for failure messages.
    pub fn log_excerpt(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(200);
        format!(
            "--- log of nacos-node {} ({}) ---\n{}\n--- end of log ---",
            self.addr,
            self.log_path.display(),
            lines[from..].join("\n")
        )
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends `sig` to the child by its pid, unless it has already been reaped (its pid could
/// then belong to another process).
fn signal(child: &Child, sig: libc::c_int) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) has no memory-safety preconditions. The child has not been reaped
    // (callers hold it and have not waited on it successfully), so the pid is still ours.
    let rc = unsafe { libc::kill(pid, sig) };
    assert!(
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH),
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Test timings: fast enough that elections take a fraction of a second, slow enough not to
/// flap on a loaded machine.
/// The cluster secret every test node starts with (through NACOS_CLUSTER_TOKEN).
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789";

pub const TEST_HEARTBEAT_MS: &str = "50";
pub const TEST_ELECTION_TIMEOUT_MS: &str = "300";

/// A cluster of nodes on 127.0.0.1 that all list each other in `--peers`. Dropping it kills
/// every node, then removes the temp dir.
pub struct TestCluster {
    // Declared before `dir`: nodes are killed before their directory is removed.
    pub nodes: Vec<TestNode>,
    pub dir: TempDir,
}

impl TestCluster {
    /// Starts `n` nodes with `--peers` naming all of them and test timings (heartbeat 50 ms,
    /// election timeout 300 ms, unless `extra_args` sets them), and waits until every node
    /// is ready. Node `i` has data dir `<dir>/node-i` and log `<dir>/node-i.log`.
    pub fn start(n: usize, extra_args: &[&str]) -> TestCluster {
        let mut cluster = TestCluster::new(n, extra_args);
        for node in &mut cluster.nodes {
            node.start();
        }
        for i in 0..n {
            let deadline = READY_DEADLINE;
            if let Err(why) = cluster.nodes[i].try_wait_ready(deadline) {
                panic!("{why}\n{}", cluster.logs());
            }
        }
        cluster
    }

    /// The same cluster, described but not started.
    pub fn new(n: usize, extra_args: &[&str]) -> TestCluster {
        let dir = tempfile::Builder::new()
            .prefix("nacos-cluster-")
            .tempdir()
            .expect("temp dir");
        let addrs: Vec<String> = free_ports(n)
            .into_iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let peers = addrs.join(",");
        let mut args: Vec<&str> = vec!["--peers", &peers];
        let has = |flag: &str| {
            extra_args
                .iter()
                .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
        };
        if !has("--heartbeat-interval-ms") {
            args.extend(["--heartbeat-interval-ms", TEST_HEARTBEAT_MS]);
        }
        if !has("--election-timeout-ms") {
            args.extend(["--election-timeout-ms", TEST_ELECTION_TIMEOUT_MS]);
        }
        args.extend_from_slice(extra_args);
        let nodes = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                TestNode::new(
                    addr,
                    &dir.path().join(format!("node-{i}")),
                    &dir.path().join(format!("node-{i}.log")),
                    &args,
                )
            })
            .collect();
        TestCluster { nodes, dir }
    }

    /// Every node's address, comma-separated: the `--endpoints` of the whole cluster.
    pub fn endpoints(&self) -> String {
        self.addrs().join(",")
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// A client of the whole cluster.
    pub fn client(&self, timeout: Duration) -> Client {
        let endpoints = self.nodes.iter().map(TestNode::endpoint).collect();
        Client::with_tls(
            endpoints,
            timeout,
            self.nodes.first().and_then(TestNode::tls),
        )
    }

    /// The index of the node with address `addr`.
    pub fn index_of(&self, addr: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    /// Waits until every live (running, not paused) node reports the same leader, that
    /// leader is live and reports itself `LEADER` in that term; returns its index. Panics
    /// with every log at the deadline.
    pub fn wait_for_leader(&mut self, deadline: Duration) -> usize {
        match poll_until(deadline, || self.agreed_leader()) {
            Some(i) => i,
            None => panic!(
                "no leader agreed by all live nodes within {deadline:?}; last views: {}\n{}",
                self.views(),
                self.logs()
            ),
        }
    }

    /// The leader every live node agrees on right now, if any.
    pub fn agreed_leader(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_live())
            .collect();
        let statuses: Vec<Status> = live
            .iter()
            .map(|&i| self.nodes[i].status(Duration::from_millis(500)))
            .collect::<Option<_>>()?;
        let first = statuses.first()?;
        let leader = first.leader.clone()?;
        let term = first.term;
        if statuses
            .iter()
            .any(|s| s.leader.as_deref() != Some(&leader) || s.term != term)
        {
            return None;
        }
        let i = self.index_of(&leader)?;
        let pos = live.iter().position(|&l| l == i)?;
        (statuses[pos].role == Role::Leader).then_some(i)
    }

    /// Each live node's (role, term, leader), for failure messages.
    pub fn views(&mut self) -> String {
        let mut out = Vec::new();
        for n in &mut self.nodes {
            let view = if !n.is_live() {
                "not live".to_string()
            } else {
                match n.status(Duration::from_millis(500)) {
                    Some(s) => format!("{} term {} leader {:?}", s.role, s.term, s.leader),
                    None => "no answer".to_string(),
                }
            };
            out.push(format!("{}: {view}", n.addr));
        }
        out.join("; ")
    }

    /// Every node's log excerpt, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(TestNode::log_excerpt)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs `nacosctl ARGS` with no `NACOSCTL_*` variables from the test's environment and no
/// stdin. Killed (and the test failed) if it runs past [`CTL_DEADLINE`].
pub fn nacosctl(args: &[&str]) -> Output {
    nacosctl_with(None, args, None, &[])
}

/// Runs `nacosctl --endpoints ENDPOINTS ARGS`.
pub fn nacosctl_at(endpoints: &str, args: &[&str]) -> Output {
    nacosctl_with(Some(endpoints), args, None, &[])
}

/// The general form: optional `--endpoints`, optional bytes on stdin, extra environment.
pub fn nacosctl_with(
    endpoints: Option<&str>,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = Command::new(CTL_BIN);
    if let Some(e) = endpoints {
        cmd.arg("--endpoints").arg(e);
    }
    cmd.args(args)
        .env_remove("NACOSCTL_ENDPOINTS")
        .env_remove("NACOSCTL_OUTPUT")
        .env_remove("NACOSCTL_TIMEOUT")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {CTL_BIN}: {e}"));
    let input = stdin.map(<[u8]>::to_vec);
    let mut pipe_in = child.stdin.take();
    let writer = thread::spawn(move || {
        if let (Some(mut pipe), Some(bytes)) = (pipe_in.take(), input) {
            // A nacosctl that exits early closes the pipe; that is its business.
            let _ = pipe.write_all(&bytes);
        }
    });
    let stdout = read_in_background(child.stdout.take().expect("stdout piped"));
    let stderr = read_in_background(child.stderr.take().expect("stderr piped"));
    let status = match poll_until(CTL_DEADLINE, || child.try_wait().ok().flatten()) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "nacosctl {args:?} still running after {CTL_DEADLINE:?}; stderr so far: {}",
                String::from_utf8_lossy(&stderr.join().unwrap_or_default())
            );
        }
    };
    let _ = writer.join();
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn read_in_background(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// The exit code; panics on death by signal, which no nacosctl run should end with.
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("nacosctl died by a signal: {}", describe(out)))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Status, stdout and stderr, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

/// stdout parsed as one JSON document; panics (with the run) if it is not.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", describe(out)))
}

/// Asserts the exit code, showing the whole run on failure.
#[track_caller]
pub fn assert_code(out: &Output, expected: i32) {
    assert_eq!(code(out), expected, "{}", describe(out));
}

// ------------------------------------------------------------ streaming nacosctl runs

use std::io::BufRead;
use std::sync::mpsc;

/// A `nacosctl` run whose stdout is read line by line while it runs (`watch`). Dropping it
/// kills the process (by its own pid) and reaps it.
pub struct CtlStream {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<Vec<u8>>>,
    args: Vec<String>,
}

/// How a [`CtlStream`] ended.
pub struct CtlEnd {
    pub status: ExitStatus,
    /// Lines printed after the last one taken with [`CtlStream::next_line`].
    pub rest: Vec<String>,
    pub stderr: String,
}

impl CtlEnd {
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("nacosctl died by a signal: {}", self.describe()))
    }

    pub fn describe(&self) -> String {
        format!(
            "status {}\n--- remaining stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.rest.join("\n"),
            self.stderr
        )
    }
}

impl CtlStream {
    /// Starts `nacosctl --endpoints ENDPOINTS ARGS` with no `NACOSCTL_*` variables from the
    /// test's environment and no stdin.
    pub fn spawn(endpoints: &str, args: &[&str]) -> CtlStream {
        let mut child = Command::new(CTL_BIN)
            .arg("--endpoints")
            .arg(endpoints)
            .args(args)
            .env_remove("NACOSCTL_ENDPOINTS")
            .env_remove("NACOSCTL_OUTPUT")
            .env_remove("NACOSCTL_TIMEOUT")
            .env_remove("NACOSCTL_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {CTL_BIN}: {e}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = read_in_background(child.stderr.take().expect("stderr piped"));
        CtlStream {
            child: Some(child),
            lines,
            stderr: Some(stderr),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The next line of stdout, or `None` if none comes within `deadline`.
    pub fn next_line(&self, deadline: Duration) -> Option<String> {
        self.lines.recv_timeout(deadline).ok()
    }

    /// The next `n` lines; panics (with what the run printed) if they do not all come within
    /// `deadline`.
    pub fn take_lines(&mut self, n: usize, deadline: Duration) -> Vec<String> {
        let end = Instant::now() + deadline;
        let mut got = Vec::new();
        while got.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(l) => got.push(l),
                None => {
                    let end = self.finish(Duration::from_secs(5));
                    panic!(
                        "nacosctl {:?}: {} of {n} lines within {deadline:?}: {got:?}\n{}",
                        self.args,
                        got.len(),
                        end.describe()
                    );
                }
            }
        }
        got
    }

    /// SIGINT, as Ctrl-C sends it.
    pub fn interrupt(&self) {
        let child = self.child.as_ref().expect("interrupt: already finished");
        signal(child, libc::SIGINT);
    }

    /// Waits up to `deadline` for the process to exit (SIGKILL after it), and collects
    /// what it printed since.
    pub fn finish(&mut self, deadline: Duration) -> CtlEnd {
        let mut child = self.child.take().expect("finish: already finished");
        let status = match poll_until(deadline, || child.try_wait().ok().flatten()) {
            Some(s) => s,
            None => {
                let _ = child.kill();
                child.wait().expect("reap nacosctl")
            }
        };
        let stderr = self
            .stderr
            .take()
            .map(|h| String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned())
            .unwrap_or_default();
        // The process is gone, so its stdout is closed and the reader thread ends.
        let rest = self.lines.iter().collect();
        CtlEnd {
            status,
            rest,
            stderr,
        }
    }
}

impl Drop for CtlStream {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until `node` has a listener registered on `key` (a watch is subscribed), using the
/// Nacos-compatible `/nacos/v1/ns/raft/listeners`; panics at the deadline.
pub fn wait_listening(node: &TestNode, key: &str, deadline: Duration) {
    let client = node.client(Duration::from_millis(500));
    poll_until(deadline, || {
        client
            .nacos_listeners_of(&node.addr)
            .ok()?
            .iter()
            .any(|k| k == key)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no listener on {key:?} at {} within {deadline:?}",
            node.addr
        )
    });
}

/// Every datum a node holds as key -> (value, timestamp), read offline with `nacosctl dump`
/// (the checkpoint and the log): for stopped nodes, exact after a clean stop.
pub fn dump_datums(
    node: &TestNode,
) -> std::collections::BTreeMap<String, (serde_json::Value, u64)> {
    let out = dump_output(node);
    assert_code(&out, 0);
    datums_of(&out)
}

/// The datum files of a node started with `--datum-files on`, read with the library, `None`
/// while a file is being rewritten: files are rewritten in place once a checkpoint exists,
/// so a reader may meet one half-written (docs/architecture.md, "Durability"). For polls.
pub fn try_read_datum_files(
    node: &TestNode,
) -> Option<std::collections::BTreeMap<String, (serde_json::Value, u64)>> {
    let files = nacos_raft::store::read_datum_dir(&node.data_dir).ok()?;
    Some(
        files
            .into_iter()
            .map(|(d, _)| (d.key, (d.value, d.timestamp)))
            .collect(),
    )
}

pub fn dump_output(node: &TestNode) -> Output {
    nacosctl(&[
        "-o",
        "json",
        "dump",
        "--data-dir",
        node.data_dir.to_str().unwrap(),
    ])
}

fn datums_of(out: &Output) -> std::collections::BTreeMap<String, (serde_json::Value, u64)> {
    json(out)
        .as_array()
        .expect("dump is an array")
        .iter()
        .map(|d| {
            let key = d["key"].as_str().expect("key").to_string();
            (
                key,
                (
                    d["value"].clone(),
                    d["timestamp"].as_u64().expect("timestamp"),
                ),
            )
        })
        .collect()
}

/// Waits until `node` reports an applied index of at least `index` (its own status).
pub fn wait_applied(node: &TestNode, index: u64, deadline: Duration) {
    let ok = poll_until(deadline, || {
        node.status(Duration::from_millis(500))
            .filter(|s| s.applied_index >= index)
            .map(|_| ())
    });
    assert!(
        ok.is_some(),
        "{} never applied {index}\n{}",
        node.addr,
        node.log_excerpt()
    );
}
