//! `nacos-node`: one member of a nacos-raft cluster (standalone with no member list).
//!
//! Parses flags into a validated `NodeConfig`, starts the node and its HTTP server, and
//! stops cleanly on SIGINT/SIGTERM. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use nacos_raft::http::server::Limits;
use nacos_raft::node::{self, log_event, members, Node, NodeConfig};
use nacos_raft::raft::PeerAddr;

#[derive(Parser, Debug)]
#[command(
    name = "nacos-node",
    version,
    about = "A nacos-raft member: the Nacos persistent store on a real Raft log"
)]
struct Args {
    /// Address to serve HTTP on.
    #[arg(long, env = "NACOS_LISTEN", default_value = "127.0.0.1:8848")]
    listen: String,
    /// This member's address as the others know it (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// Where the log, meta.properties and datum files live.
    #[arg(long, env = "NACOS_DATA_DIR", default_value = "./nacos-data")]
    data_dir: PathBuf,
    /// Every member of a new cluster, this one included: ip:port,ip:port,... (none =
    /// standalone). Read only when the data dir is new: a member that restarts takes its
    /// configuration from its data dir, and `nacosctl member` changes it.
    #[arg(long, env = "NACOS_PEERS", conflicts_with_all = ["cluster_conf", "join"])]
    peers: Option<String>,
    /// A Nacos cluster.conf: one ip[:port] per line, # comments (bootstraps like --peers).
    #[arg(long, conflicts_with = "join")]
    cluster_conf: Option<PathBuf>,
    /// Start as a new member of an existing cluster (some of its members, ip:port,...):
    /// it serves status and waits until `nacosctl member add` adds it, then catches up.
    #[arg(long, value_name = "ADDR,...")]
    join: Option<String>,
    /// The leader makes a learner added by `member add` (without --learner) a voter once it
    /// has caught up.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    auto_promote: bool,
    /// Keep a Nacos-layout file per key under <data-dir>/data (`on`), rewritten once a
    /// second behind the state; `off` (the default) keeps only the log and the checkpoints,
    /// which `nacosctl dump --data-dir` reads (and `dump --nacos-layout DIR` turns into files).
    #[arg(long, value_enum, default_value = "off")]
    datum_files: OnOff,
    #[arg(long, default_value_t = 100)]
    heartbeat_interval_ms: u64,
    /// Base election timeout; each election waits a random time in [N, 2N).
    #[arg(long, default_value_t = 500)]
    election_timeout_ms: u64,
    /// How long a write may wait for a leader and for its commit.
    #[arg(long, default_value_t = 5000)]
    publish_timeout_ms: u64,
    /// File holding the cluster secret (required with more than one member; every member
    /// uses the same one). Or set NACOS_CLUSTER_TOKEN.
    #[arg(long)]
    cluster_token_file: Option<PathBuf>,
    /// The cluster secret itself (visible in process lists: prefer --cluster-token-file).
    #[arg(long, hide = true)]
    cluster_token: Option<String>,
    /// Most open connections (default: what the open-file limit allows); past it the
    /// longest-idle connection is closed, or the new one refused with 503.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Most watch streams at once (each holds a connection and a thread).
    #[arg(long, default_value_t = node::notifier::DEFAULT_MAX_LISTENERS)]
    max_watchers: usize,
    /// How long a request's line and headers may take to arrive.
    #[arg(long, default_value_t = 10_000, hide = true)]
    http_head_timeout_ms: u64,
    /// How long a keep-alive connection may wait for its next request.
    #[arg(long, default_value_t = 90_000, hide = true)]
    http_idle_timeout_ms: u64,
    /// How long a request body may take to arrive.
    #[arg(long, default_value_t = 60_000, hide = true)]
    http_body_timeout_ms: u64,
    /// Size at which the log starts a new segment.
    #[arg(long, default_value_t = nacos_raft::store::log::SEGMENT_BYTES, hide = true)]
    log_segment_bytes: u64,
    /// A checkpoint (the datum set in one file; the log compacted up to the previous one)
    /// every this many applied entries, or one per eight per key if that is more.
    #[arg(long, default_value_t = node::DEFAULT_CHECKPOINT_ENTRIES)]
    checkpoint_entries: u64,
    /// Entries kept in the log behind a checkpoint for followers a little behind; a
    /// follower further behind catches up with a snapshot.
    #[arg(long, default_value_t = node::DEFAULT_LOG_RETAIN_ENTRIES)]
    log_retain_entries: u64,
    /// Serve HTTPS with this certificate (PEM, the chain leaf first); members then talk to
    /// each other over TLS too, presenting it. Needs --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require a client certificate signed by this CA (PEM) on the peer API: mutual TLS
    /// between members. Clients of /v1 need none
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// The CA (PEM) that signed the other members' certificates, to verify them with
    /// (default: --tls-client-ca, else the public web roots)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Health checks of persistent instances: `tcp` connects to each from the leader every
    /// --health-check-interval-ms (Nacos's TCP check); `off` (the default) never probes.
    #[arg(long, value_enum, default_value = "off")]
    health_check: HealthCheckArg,
    #[arg(long, default_value_t = 5000)]
    health_check_interval_ms: u64,
    /// How long a probe's connect may take before it counts as failed.
    #[arg(long, default_value_t = 2000)]
    health_check_timeout_ms: u64,
    /// How long a login's token is valid (access control, `nacosctl auth enable`).
    #[arg(long, default_value_t = nacos_raft::auth::DEFAULT_TOKEN_TTL_S)]
    auth_token_ttl_s: u64,
    /// Log more (one line per election event and peer problem is always logged).
    #[arg(short, long)]
    verbose: bool,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nacos-node: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config(args: &Args) -> anyhow::Result<NodeConfig> {
    let advertise = args
        .advertise
        .clone()
        .unwrap_or_else(|| args.listen.clone());
    let advertise = members::normalize(&advertise)
        .map_err(|why| anyhow::anyhow!("--advertise {advertise}: {why}"))?;
    let join = match &args.join {
        Some(list) => {
            let known = members::parse_members(list).context("--join")?;
            if known.contains(&advertise) {
                bail!(
                    "--join lists this member's own address {advertise}; give the addresses of the cluster it joins"
                );
            }
            true
        }
        None => false,
    };
    let peers = match (&args.peers, &args.cluster_conf) {
        _ if join => Vec::new(),
        (Some(list), _) => members::parse_members(list).context("--peers")?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --cluster-conf {}", path.display()))?;
            members::parse_members(&text).with_context(|| format!("{}", path.display()))?
        }
        (None, None) => vec![advertise.clone()],
    };
    if (peers.len() > 1 || join) && advertise.as_str().starts_with("0.0.0.0:") {
        bail!(
            "--listen {} is not an address other members can reach; give --advertise ip:port",
            args.listen
        );
    }
    if !join && !peers.contains(&advertise) {
        // The commonest Nacos outage (#770, #1418): say exactly what did not match.
        bail!(
            "this node's address {advertise} is not in the member list [{}]; set --advertise to the address the other members use for this node",
            peers.iter().map(PeerAddr::as_str).collect::<Vec<_>>().join(", ")
        );
    }
    let secret_given = args.cluster_token_file.is_some()
        || args.cluster_token.is_some()
        || std::env::var_os("NACOS_CLUSTER_TOKEN").is_some();
    // A one-member cluster given a secret keeps it, so members can be added later.
    let cluster_token = if peers.len() > 1 || join || secret_given {
        Some(cluster_secret(args)?)
    } else {
        None
    };
    let cfg = NodeConfig {
        advertise,
        data_dir: args.data_dir.clone(),
        peers,
        join,
        auto_promote: args.auto_promote,
        datum_files: args.datum_files == OnOff::On,
        heartbeat_interval_ms: args.heartbeat_interval_ms,
        election_timeout_ms: args.election_timeout_ms,
        publish_timeout_ms: args.publish_timeout_ms,
        cluster_token,
        log_segment_bytes: args.log_segment_bytes.max(4096),
        checkpoint_entries: args.checkpoint_entries.max(1),
        log_retain_entries: args.log_retain_entries,
        max_watchers: args.max_watchers.max(1),
        auth_token_ttl_s: args.auth_token_ttl_s.max(1),
        health_check: match args.health_check {
            HealthCheckArg::Off => None,
            HealthCheckArg::Tcp => Some(nacos_raft::naming::health::HealthCheck {
                interval: Duration::from_millis(args.health_check_interval_ms.max(10)),
                timeout: Duration::from_millis(args.health_check_timeout_ms.max(1)),
            }),
        },
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(nacos_raft::tls::NodeTls::load(
                cert,
                key,
                args.tls_client_ca.as_deref(),
                args.tls_ca.as_deref().or(args.tls_client_ca.as_deref()),
            )?),
            _ => None,
        },
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Shortest cluster secret accepted: guessing 16 random bytes is out of reach.
const MIN_SECRET_BYTES: usize = 16;

const MAKE_SECRET: &str = "make one with `head -c 32 /dev/urandom | base64 > cluster.token && chmod 600 cluster.token`, copy it to every member and start each with --cluster-token-file cluster.token";

/// The cluster secret: every member of a cluster must present it on peer traffic, or any
/// host that can reach a member could vote, append or install a snapshot (two forged
/// requests once wiped a cluster started without one). From --cluster-token-file, else
/// --cluster-token (with a warning: it shows in process lists), else NACOS_CLUSTER_TOKEN.
fn cluster_secret(args: &Args) -> anyhow::Result<String> {
    let (secret, source) = if let Some(path) = &args.cluster_token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --cluster-token-file {}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                log_event(&format!(
                    "warning: {} can be read by other users; chmod 600 it",
                    path.display()
                ));
            }
        }
        (
            text.trim().to_string(),
            format!("--cluster-token-file {}", path.display()),
        )
    } else if let Some(t) = &args.cluster_token {
        log_event("warning: --cluster-token shows the cluster secret in process lists (ps, /proc) to every user of this host; use --cluster-token-file or NACOS_CLUSTER_TOKEN");
        (t.trim().to_string(), "--cluster-token".to_string())
    } else if let Ok(t) = std::env::var("NACOS_CLUSTER_TOKEN") {
        (t.trim().to_string(), "NACOS_CLUSTER_TOKEN".to_string())
    } else {
        bail!("a cluster of more than one member needs a cluster secret, so that only members can vote, append and install snapshots; {MAKE_SECRET}");
    };
    if secret.len() < MIN_SECRET_BYTES {
        bail!(
            "the cluster secret from {source} is {} bytes; it must be at least {MIN_SECRET_BYTES}: {MAKE_SECRET}",
            secret.len()
        );
    }
    Ok(secret)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum HealthCheckArg {
    Off,
    Tcp,
}

/// Raises the soft open-file limit to the hard one (what Go's runtime does for etcd), and
/// returns it: connections, watches and forwarded requests each hold a descriptor.
fn raise_open_file_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit on a stack struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return lim.rlim_max;
            }
        }
        lim.rlim_cur
    }
}

/// Blocks SIGINT and SIGTERM in every thread (call before spawning any), so that only
/// `wait_for_signal` sees them.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a stack sigset, no aliasing.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` is a valid, initialised sigset; `sig` is a valid out pointer.
    unsafe {
        libc::sigwait(set, &mut sig);
    }
    sig
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let verbose = args.verbose
        || std::env::var("RUST_LOG").is_ok_and(|v| v.contains("debug") || v.contains("trace"));
    node::set_verbose(verbose);
    let cfg = config(&args)?;
    let signals = block_stop_signals();
    let node = Node::start(cfg.clone())
        .with_context(|| format!("cannot start with data dir {}", cfg.data_dir.display()))?;
    let nofile = raise_open_file_limit();
    let wanted = args
        .max_connections
        .unwrap_or_else(|| Limits::connections_for_fd_limit(nofile))
        .max(1);
    let ceiling = Limits::connection_ceiling(nofile);
    if wanted > ceiling {
        log_event(&format!(
            "warning: --max-connections {wanted} does not fit the open-file limit of {nofile} once {} descriptors are kept for the log, checkpoints and peers; serving at most {ceiling} connections (raise `ulimit -n` to allow more)",
            nacos_raft::http::server::RESERVED_DESCRIPTORS
        ));
    }
    let limits = Limits {
        max_connections: wanted.min(ceiling),
        head_timeout: Duration::from_millis(args.http_head_timeout_ms.max(1)),
        idle_timeout: Duration::from_millis(args.http_idle_timeout_ms.max(1)),
        body_timeout: Duration::from_millis(args.http_body_timeout_ms.max(1)),
        ..Limits::default()
    };
    let server = nacos_raft::http::serve(node.clone(), &args.listen, limits)?;
    let peers = node.raft_status().peers;
    let members = peers.members().count();
    log_event(&format!(
        "serving on {} as {} ({}), data in {}",
        server.local_addr(),
        cfg.advertise,
        match members {
            0 => "not a member yet".to_string(),
            1 if peers.contains(&cfg.advertise) => "1 member, standalone".to_string(),
            n => format!("{n} members"),
        },
        cfg.data_dir.display()
    ));
    let sig = wait_for_signal(&signals);
    log_event(&format!(
        "stopping on {}",
        if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        }
    ));
    // Every acknowledged write is already fsynced. A leader hands over first so the others
    // do not wait an election timeout; then client requests in progress finish (new ones
    // are sent elsewhere) while the core still runs, since they may need it to commit.
    node.hand_over_leadership();
    server.drain(Duration::from_millis(cfg.publish_timeout_ms + 1000));
    node.shutdown();
    server.stop();
    Ok(())
}
