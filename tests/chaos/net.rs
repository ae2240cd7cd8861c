//! Network namespaces for the chaos suite: one namespace per node on a private bridge, with
//! addresses in 127.77.K.0/24, and partitions built from iptables rules inside those
//! namespaces (`../shared/reference/netns-faults.md`).
//!
//! It owns every namespace, veth pair and bridge it creates, and removes them on drop (so also
//! when a test panics). It must never touch any other interface, namespace, address or the root
//! namespace's firewall, and sends traffic only inside 127.0.0.0/8.
//!
//! Layout for a cluster with subnet index K (claimed atomically, see [`Netns::create`]):
//! bridge `ncbrK` with address 127.77.K.254 in the root namespace (where the test's clients
//! run), namespace `nacos-chaos-<pid>-K-<i>` holding veth `ncvKn<i>` with address
//! 127.77.K.<i+1>, whose peer `ncvKn<i>b` is a port of the bridge. Each cluster gets its own
//! /24 so that concurrent tests and concurrent runs never share an address.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Prefix of every namespace this suite creates; the owner's pid follows it.
const NS_PREFIX: &str = "nacos-chaos-";
/// Marks a bridge as ours, with the owner's pid, in its interface alias.
const ALIAS_PREFIX: &str = "nacos-chaos owner=";

/// Why the suite cannot build namespaces here, or `None` if it can.
pub fn unavailable_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    if let Err(e) = run("ip", &["netns", "list"]) {
        return Some(format!("`ip netns` does not work: {e}"));
    }
    if let Err(e) = run("iptables", &["--version"]) {
        return Some(format!(
            "iptables is missing ({e}); install it with `apt-get install -y iptables`"
        ));
    }
    None
}

/// The port every node listens on inside its namespace (each has an address of its own).
pub const NODE_PORT: u16 = 8848;

/// Packets dropped between nodes (by index). Applied as a whole by [`Netns::apply`], which
/// replaces whatever was in force.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules {
    /// `(from, to)`: packets from node `from` never reach node `to`. TCP needs both ways, so
    /// this breaks every connection between the two; use it in pairs (a partition).
    pub cut: BTreeSet<(usize, usize)>,
    /// `(from, to)`: what `from` sends to `to`'s port never arrives, while `to`'s own
    /// connections to `from` keep working both ways. Nodes send each Raft message as a
    /// request to the receiver's port, so this is a one-way cut of the messages from `from`
    /// to `to` (and of the client requests `from` forwards to `to`).
    pub one_way: BTreeSet<(usize, usize)>,
    /// `(node, percent)`: that share of the packets from other nodes to `node` is dropped.
    pub loss: Vec<(usize, u32)>,
}

impl Rules {
    /// Nodes in different groups cannot reach each other in either direction; nodes in no
    /// group are untouched.
    pub fn partition(groups: &[Vec<usize>]) -> Rules {
        let mut r = Rules::default();
        for (gi, g) in groups.iter().enumerate() {
            for (hi, h) in groups.iter().enumerate() {
                if gi != hi {
                    for &a in g {
                        for &b in h {
                            r.cut.insert((a, b));
                        }
                    }
                }
            }
        }
        r
    }

    /// Cut both directions between `a` and `b`.
    pub fn cut_both(&mut self, a: usize, b: usize) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    pub fn merge(&mut self, other: &Rules) {
        self.cut.extend(other.cut.iter().copied());
        self.one_way.extend(other.one_way.iter().copied());
        self.loss.extend(other.loss.iter().copied());
    }
}

/// The namespaces, veths and bridge of one cluster.
pub struct Netns {
    k: u32,
    n: usize,
    bridge: String,
    namespaces: Vec<String>,
    /// Bridge-side ends of the veth pairs (deleting one end deletes the pair).
    ports: Vec<String>,
}

impl Netns {
    /// Builds the network for `n` nodes, after removing what dead earlier runs left behind.
    /// On any failure everything built so far is removed again.
    pub fn create(n: usize) -> Result<Netns, String> {
        assert!((1..=9).contains(&n), "1 to 9 nodes, not {n}");
        clean_leftovers();
        let pid = std::process::id();
        let k = claim_subnet(pid)?;
        let mut net = Netns {
            k,
            n,
            bridge: format!("ncbr{k}"),
            namespaces: Vec::new(),
            ports: Vec::new(),
        };
        // On error `net` is dropped here, which removes whatever was built.
        net.build(pid)?;
        Ok(net)
    }

    fn build(&mut self, pid: u32) -> Result<(), String> {
        let k = self.k;
        let br = self.bridge.clone();
        run("ip", &["link", "set", &br, "up"])?;
        for i in 0..self.n {
            let ns = format!("{NS_PREFIX}{pid}-{k}-{i}");
            let veth = format!("ncv{k}n{i}");
            let port = format!("{veth}b");
            run("ip", &["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            run(
                "ip",
                &["link", "add", &veth, "type", "veth", "peer", "name", &port],
            )?;
            self.ports.push(port.clone());
            run("ip", &["link", "set", &port, "master", &br, "up"])?;
            run("ip", &["link", "set", &veth, "netns", &ns])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            // 127.0.0.0/8 on lo would swallow the peers' 127.77.K.x addresses: keep only
            // 127.0.0.1 there (recipe in netns-faults.md).
            run(
                "ip",
                &["-n", &ns, "addr", "del", "127.0.0.1/8", "dev", "lo"],
            )?;
            run(
                "ip",
                &["-n", &ns, "addr", "add", "127.0.0.1/32", "dev", "lo"],
            )?;
            // Loopback-range addresses are "martian" on a non-loopback device unless
            // route_localnet is on. /proc/sys/net shows the namespace of the reader.
            let script = format!(
                "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet && echo 1 > /proc/sys/net/ipv4/conf/{veth}/route_localnet"
            );
            run("ip", &["netns", "exec", &ns, "sh", "-c", &script])?;
            let addr = format!("{}/24", self.node_ip(i));
            run("ip", &["-n", &ns, "addr", "add", &addr, "dev", &veth])?;
            run("ip", &["-n", &ns, "link", "set", &veth, "up"])?;
        }
        let host = format!("{}/24", self.host_ip());
        run("ip", &["addr", "add", &host, "dev", &br])?;
        fs::write(
            format!("/proc/sys/net/ipv4/conf/{br}/route_localnet"),
            "1\n",
        )
        .map_err(|e| format!("enable route_localnet on {br}: {e}"))?;
        // The root namespace's `local 127.0.0.0/8` route must not capture the subnet. With
        // the default rules the kernel merges the local and main tables and the longer /24
        // wins; with custom rules it does not, so add the /24 to the local table too.
        if !self.routed_via_bridge()? {
            let subnet = format!("127.77.{k}.0/24");
            run(
                "ip",
                &[
                    "route",
                    "add",
                    &subnet,
                    "dev",
                    &br,
                    "src",
                    &self.host_ip(),
                    "table",
                    "local",
                ],
            )?;
            if !self.routed_via_bridge()? {
                return Err(format!(
                    "the root namespace does not route {subnet} via {br}; see `ip route get {}`",
                    self.node_ip(0)
                ));
            }
        }
        Ok(())
    }

    fn routed_via_bridge(&self) -> Result<bool, String> {
        let out = run("ip", &["-o", "route", "get", &self.node_ip(0)])?;
        Ok(out.contains(&format!("dev {} ", self.bridge)))
    }

    /// Node `i`'s address (without port).
    pub fn node_ip(&self, i: usize) -> String {
        format!("127.77.{}.{}", self.k, i + 1)
    }

    /// The root namespace's address on the bridge: the clients' source address.
    pub fn host_ip(&self) -> String {
        format!("127.77.{}.254", self.k)
    }

    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        format!(
            "namespaces {NS_PREFIX}{}-{}-0..{}, bridge {}, subnet 127.77.{}.0/24",
            std::process::id(),
            self.k,
            self.n - 1,
            self.bridge,
            self.k
        )
    }

    /// Puts `rules` in force, replacing the previous ones. Only traffic between nodes is
    /// touched: the clients' address (the bridge's) is never blocked, so a client can still
    /// reach both sides of a partition, as in a real network where the clients sit elsewhere.
    pub fn apply(&self, rules: &Rules) -> Result<(), String> {
        for to in 0..self.n {
            let mut table = String::from(
                "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
            );
            for &(from, dst) in &rules.cut {
                if dst == to {
                    // Dropped where it arrives: a one-way cut needs only the receiver's rule.
                    table.push_str(&format!("-A INPUT -s {} -j DROP\n", self.node_ip(from)));
                }
            }
            for &(from, dst) in &rules.one_way {
                if dst == to {
                    table.push_str(&format!(
                        "-A INPUT -s {} -p tcp --dport {NODE_PORT} -j DROP\n",
                        self.node_ip(from)
                    ));
                }
            }
            for &(node, percent) in &rules.loss {
                if node == to {
                    for from in (0..self.n).filter(|&f| f != to) {
                        table.push_str(&format!(
                            "-A INPUT -s {} -m statistic --mode random --probability {:.2} -j DROP\n",
                            self.node_ip(from),
                            f64::from(percent) / 100.0
                        ));
                    }
                }
            }
            table.push_str("COMMIT\n");
            run_with_stdin(
                "ip",
                &["netns", "exec", self.namespace(to), "iptables-restore"],
                &table,
            )?;
        }
        Ok(())
    }

    /// Removes every rule: all nodes reach each other again.
    pub fn heal(&self) -> Result<(), String> {
        self.apply(&Rules::default())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Best effort, and loud: a failure here leaves state that the next run's
        // `clean_leftovers` removes once this process is gone.
        for ns in &self.namespaces {
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                eprintln!("chaos: cleanup: {e}");
            }
        }
        for port in &self.ports {
            // Deleting a namespace deletes its veth end and so the pair, asynchronously: the
            // port may vanish under us, which is the goal anyway.
            let exists = || Path::new(&format!("/sys/class/net/{port}")).exists();
            if exists() {
                if let Err(e) = run("ip", &["link", "del", port]) {
                    if exists() {
                        eprintln!("chaos: cleanup: {e}");
                    }
                }
            }
        }
        if let Err(e) = run("ip", &["link", "del", &self.bridge]) {
            eprintln!("chaos: cleanup: {e}");
        }
    }
}

/// Picks a free subnet index K and creates bridge `ncbrK` as the claim: creating a link is
/// atomic, so two runs (or two tests of one run) never get the same K.
fn claim_subnet(pid: u32) -> Result<u32, String> {
    let start = pid % 250;
    for step in 0..250 {
        let k = (start + step) % 250 + 1;
        let bridge = format!("ncbr{k}");
        if Path::new(&format!("/sys/class/net/{bridge}")).exists() {
            continue;
        }
        // Someone else's use of the subnet (an address anywhere in 127.77.K.0/24).
        let used = run(
            "ip",
            &[
                "-o",
                "-4",
                "addr",
                "show",
                "to",
                &format!("127.77.{k}.0/24"),
            ],
        )?;
        if !used.trim().is_empty() {
            continue;
        }
        if run("ip", &["link", "add", &bridge, "type", "bridge"]).is_err() {
            continue;
        }
        let alias = format!("{ALIAS_PREFIX}{pid}");
        if let Err(e) = run("ip", &["link", "set", &bridge, "alias", &alias]) {
            let _ = run("ip", &["link", "del", &bridge]);
            return Err(e);
        }
        return Ok(k);
    }
    Err("no free subnet 127.77.K.0/24 (K = 1..250) for a test bridge".into())
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes namespaces and bridges of this suite whose owning process is gone (a run that
/// was killed before its drop guards ran). Processes still inside such a namespace are left
/// alone: they are not ours to kill, and the namespace goes once they exit.
fn clean_leftovers() {
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let Some(rest) = name.strip_prefix(NS_PREFIX) else {
                continue;
            };
            let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if owner.is_some_and(|p| !pid_alive(p)) {
                let _ = run("ip", &["netns", "del", name]);
            }
        }
    }
    let Ok(entries) = fs::read_dir("/sys/class/net") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("ncbr") {
            continue;
        }
        let alias = fs::read_to_string(entry.path().join("ifalias")).unwrap_or_default();
        let owner = alias
            .trim()
            .strip_prefix(ALIAS_PREFIX)
            .and_then(|p| p.parse::<u32>().ok());
        if owner.is_some_and(|p| !pid_alive(p)) {
            if let Ok(ports) = fs::read_dir(entry.path().join("brif")) {
                for port in ports.flatten() {
                    let port = port.file_name().to_string_lossy().into_owned();
                    let _ = run("ip", &["link", "del", &port]);
                }
            }
            let _ = run("ip", &["link", "del", &name]);
        }
    }
}

/// Runs a command to completion; its stdout, or an error naming the command and its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn run_with_stdin(program: &str, args: &[&str], input: &str) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("write to {program}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}\ninput:\n{input}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
