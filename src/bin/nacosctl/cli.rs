//! nacosctl's command line (DESIGN §4, a contract): flags, commands, and the parsers that
//! turn flag text into validated values. Nothing here talks to a node.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::exit::EXIT_CODES_HELP;

#[derive(Debug, Parser)]
#[command(
    name = "nacosctl",
    version,
    about = "Read and write a nacos-raft cluster, check its health, inspect a data dir",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// Members to talk to, comma-separated HOST:PORT; any member will do, and a command tries
    /// them in turn until one answers
    #[arg(
        long,
        global = true,
        env = "NACOSCTL_ENDPOINTS",
        default_value = "127.0.0.1:8848",
        value_name = "ADDR,...",
        value_parser = parse_endpoints
    )]
    pub endpoints: Endpoints,

    /// Output form: text for people and shell scripts, table, or json (fields per the contract)
    #[arg(
        short = 'o',
        long,
        global = true,
        env = "NACOSCTL_OUTPUT",
        value_enum,
        default_value_t = Output::Text
    )]
    pub output: Output,

    /// Bound on every network wait: 500ms, 5s, 1m, or plain seconds
    #[arg(
        long,
        global = true,
        env = "NACOSCTL_TIMEOUT",
        default_value = "5s",
        value_name = "DURATION",
        value_parser = parse_duration
    )]
    pub timeout: Duration,

    /// Colour the ROLE and health cells of tables and the `nacosctl:` prefix of errors:
    /// auto (only on a terminal, and not when NO_COLOR is set), always, or never
    #[arg(
        long,
        global = true,
        env = "NACOSCTL_COLOR",
        value_enum,
        default_value_t = ColorWhen::Auto,
        value_name = "WHEN"
    )]
    pub color: ColorWhen,

    /// Log in as NAME (access control): the password comes from NACOSCTL_PASSWORD, or a
    /// prompt on a terminal; never from a flag. Logs in once per run
    #[arg(long, global = true, env = "NACOSCTL_USER", value_name = "NAME")]
    pub user: Option<String>,

    /// A token from an earlier login (POST /v1/auth/login), instead of --user
    #[arg(
        long,
        global = true,
        env = "NACOSCTL_TOKEN",
        value_name = "TOKEN",
        conflicts_with = "user",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// The CA (PEM) to verify https:// members with (default: the public web roots)
    #[arg(long, global = true, env = "NACOSCTL_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// A client certificate (PEM) to present over TLS; needs --key
    #[arg(
        long = "cert",
        id = "client_cert",
        global = true,
        env = "NACOSCTL_CERT",
        value_name = "FILE",
        requires = "client_key"
    )]
    pub cert: Option<PathBuf>,

    /// The private key (PEM) of --cert
    #[arg(
        long = "key",
        id = "client_key",
        global = true,
        env = "NACOSCTL_KEY",
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub key: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish VALUE under KEY; prints the new timestamp (version) and log index
    Put {
        key: String,
        /// The value: text stored as a JSON string, '-' to read stdin, '@FILE' to read a file
        #[arg(allow_hyphen_values = true)]
        value: String,
        /// Parse VALUE (or the stdin/file contents) as JSON instead of storing a string
        #[arg(long)]
        json: bool,
        /// Write only if KEY's timestamp is N now; else nothing changes and nacosctl exits 6
        #[arg(long, value_name = "N", conflicts_with = "if_absent")]
        if_timestamp: Option<u64>,
        /// Write only if KEY does not exist (the same as --if-timestamp 0); else exit 6
        #[arg(long)]
        if_absent: bool,
    },
    /// Print the value of KEY (a string raw, any other JSON as JSON); exit 3 if absent
    Get {
        key: String,
        /// Read the answering node's replica without asking the leader (fast, maybe old)
        #[arg(long)]
        stale: bool,
    },
    /// Delete KEY; exit 3 if it did not exist
    #[command(visible_alias = "delete")]
    Del {
        key: String,
        /// Delete only if KEY's timestamp is N now; else nothing changes and nacosctl exits 6
        #[arg(long, value_name = "N")]
        if_timestamp: Option<u64>,
    },
    /// List keys (those starting with PREFIX, if given) with their timestamps
    #[command(visible_alias = "list")]
    Ls {
        prefix: Option<String>,
        /// Read the answering node's replica without asking the leader
        #[arg(long)]
        stale: bool,
    },
    /// Every member's role, term, leader and progress, queried in parallel; exit 0 healthy,
    /// 4 unavailable, 5 degraded
    Status {
        /// Query again every --interval and redraw in place on a terminal (one block per
        /// round elsewhere, one JSON line per round with -o json) until interrupted; exit 0
        #[arg(long)]
        watch: bool,
        /// How often --watch queries again
        #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration, requires = "watch")]
        interval: Duration,
    },
    /// Print the leader's address; exit 4 if none is known
    Leader,
    /// Stream the changes of KEY (or of every key under --prefix) as they are applied, one
    /// per line, until interrupted; exit 4 when the connection is lost (with the index to
    /// resume from)
    #[command(group(clap::ArgGroup::new("target").required(true).args(["key", "prefix"])))]
    Watch {
        key: Option<String>,
        /// Watch every key starting with P ('' for all keys)
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// Replay the retained events from log index N first (no gap, no duplicate), then
        /// follow live ones
        #[arg(long, value_name = "N")]
        from_index: Option<u64>,
    },
    /// Compare every member's datum set at one log index; exit 0 if all agree, 5 if a
    /// member differs or cannot be checked, 4 if there is no leader
    Check,
    /// Hand leadership to ADDR (default: the most up-to-date follower) and wait until it
    /// leads; exit 4 if there is no leader or it did not move in time
    #[command(visible_alias = "move-leader")]
    TransferLeader {
        /// The member to lead next, HOST:PORT as in the member list
        #[arg(value_name = "ADDR")]
        to: Option<String>,
    },
    /// Members of the cluster: list them, add, promote, remove or replace one. Changes go to
    /// the leader (found from any endpoint), one at a time; each is safe to run again
    Member {
        #[command(subcommand)]
        action: MemberCmd,
    },
    /// Print the datum files of a data dir (no running node needed)
    Dump {
        /// A nacos-node --data-dir
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Write the datums as Nacos-layout files (DIR/data/<namespace>/<file> and
        /// DIR/meta.properties) into DIR, a new directory, instead of printing them
        #[arg(long, value_name = "DIR")]
        nacos_layout: Option<PathBuf>,
    },
    /// Move a Nacos 1.x naming data dir in: every datum with its key, value and Nacos
    /// timestamp, sent to the leader in batches; a re-run changes nothing. Exit 1 if a file
    /// cannot be imported (nothing is sent), unless --skip-bad
    Import {
        /// The Nacos naming data dir, ${nacos.home}/data/naming (meta.properties and data/)
        #[arg(long, value_name = "DIR")]
        nacos_data_dir: PathBuf,
        /// Only read the dir and report what would be imported; no node needed
        #[arg(long)]
        dry_run: bool,
        /// Import the rest when files cannot be imported, and list each with the reason
        #[arg(long)]
        skip_bad: bool,
    },
    /// Backups: save one from a running cluster, check a file, restore into a new data dir
    Snapshot {
        #[command(subcommand)]
        action: SnapshotCmd,
    },
    /// Print a shell completion script
    Completion { shell: clap_complete::Shell },
    /// Make a throwaway CA and a member certificate for a local or test TLS cluster (never
    /// for production): DIR/ca.pem, ca-key.pem, node.pem, node-key.pem
    Certs {
        /// Where to write the files (created if missing)
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Names and IP addresses the certificate is valid for, comma-separated
        #[arg(long, value_name = "HOST,...", default_value = "127.0.0.1,localhost")]
        hosts: String,
    },
    /// Access control: turn it on (needs a user `root`) or off, or show whether it is on
    Auth {
        #[command(subcommand)]
        action: AuthCmd,
    },
    /// Users of access control (root may do everything; others what their roles grant)
    User {
        #[command(subcommand)]
        action: UserCmd,
    },
    /// Roles: named sets of key-prefix permissions, given to users
    Role {
        #[command(subcommand)]
        action: RoleCmd,
    },
    /// Services of the naming layer (Nacos persistent services)
    Service {
        #[command(subcommand)]
        action: ServiceCmd,
    },
    /// Persistent instances of a service
    Instance {
        #[command(subcommand)]
        action: InstanceCmd,
    },
    /// Measure throughput and latency of a running cluster (closed loop, keys bench/N)
    Bench {
        #[arg(value_enum)]
        op: BenchOp,
        /// Concurrent clients, each with its own keep-alive connection
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Requests in all
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// Distinct keys written or read
        #[arg(long, default_value_t = 100)]
        keys: usize,
        /// Bytes per value
        #[arg(long, default_value_t = 64)]
        value_size: usize,
        /// Read the answering node's replica (get only)
        #[arg(long)]
        stale: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthCmd {
    /// Require a login for every request; refused unless a user `root` exists
    Enable,
    /// Let every request through without a login (root only, while on)
    Disable,
    /// Whether access control is on, and how many users and roles there are
    Status,
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add a user; the password comes from --password-stdin or a prompt
    Add {
        name: String,
        /// Read the password from the first line of stdin
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user; their tokens stop working
    #[command(visible_alias = "delete")]
    Del { name: String },
    /// List users and their roles
    #[command(visible_alias = "ls")]
    List,
    /// Change a user's password (a user may change their own); their tokens stop working
    Passwd {
        name: String,
        /// Read the password from the first line of stdin
        #[arg(long)]
        password_stdin: bool,
    },
    /// Give a user a role
    GrantRole { name: String, role: String },
    /// Take a role from a user
    RevokeRole { name: String, role: String },
}

/// A service's namespace and group, as Nacos names them.
#[derive(Debug, clap::Args)]
pub struct NamingScope {
    /// Nacos namespace id
    #[arg(long, default_value = "public")]
    pub namespace: String,
    /// Nacos group (a NAME of the form group@@name sets it too)
    #[arg(long, default_value = "DEFAULT_GROUP")]
    pub group: String,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// List the services of a namespace and group
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        scope: NamingScope,
    },
    /// Show one service: protect threshold, metadata, selector, clusters
    Get {
        name: String,
        #[command(flatten)]
        scope: NamingScope,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCmd {
    /// Every member: address, role (voter or learner), status, match index and lag, as the
    /// leader sees them; exit 4 if there is no leader (the answering member's view is shown)
    #[command(visible_alias = "ls")]
    List,
    /// Add ADDR (started with `nacos-node --join`) as a learner: it catches up by snapshot
    /// and log, and the leader makes it a voter once it is close behind (unless --learner,
    /// or the leader runs with --auto-promote false)
    Add {
        #[arg(value_name = "ADDR")]
        addr: String,
        /// Keep it a learner until `member promote`
        #[arg(long)]
        learner: bool,
        /// Wait until it is a voter (or, with --learner, caught up), up to --catch-up-timeout
        #[arg(long)]
        wait: bool,
        /// How long --wait waits
        #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = parse_duration)]
        catch_up_timeout: Duration,
    },
    /// Make the learner ADDR a voter; refused while it is far behind the leader
    Promote {
        #[arg(value_name = "ADDR")]
        addr: String,
    },
    /// Remove ADDR (a voter or a learner; the leader too, which then hands over); refused
    /// when the voters left would have no reachable majority
    #[command(visible_alias = "rm")]
    Remove {
        #[arg(value_name = "ADDR")]
        addr: String,
    },
    /// Replace OLD with NEW (started with --join): add NEW as a learner, wait until it has
    /// caught up, promote it, remove OLD. Each step is skipped when already done, so an
    /// interrupted replace is finished by running it again
    Replace {
        #[arg(value_name = "OLD")]
        old: String,
        #[arg(value_name = "NEW")]
        new: String,
        /// How long NEW may take to catch up
        #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = parse_duration)]
        catch_up_timeout: Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Save the whole datum set at one committed index into FILE (written atomically, with
    /// a checksum), streamed from the leader or the member named by --from
    Save {
        file: PathBuf,
        /// The member to read it from, HOST:PORT (default: the leader)
        #[arg(long, value_name = "ADDR")]
        from: Option<String>,
        /// Save what the member holds without first catching up with the leader (for a
        /// cluster without one)
        #[arg(long)]
        stale: bool,
    },
    /// Check FILE from end to end and print its index, term, datum count, size and checksum
    Status { file: PathBuf },
    /// Build a new data dir from FILE (offline, no node needed); restore it once per member
    /// of the new cluster
    Restore {
        file: PathBuf,
        /// The new data dir: it must not exist yet or be empty
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The members of the new cluster, for the start command printed at the end
        #[arg(long, value_name = "ADDR,...")]
        peers: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum InstanceCmd {
    /// List a service's enabled instances
    #[command(visible_alias = "ls")]
    List {
        service: String,
        #[command(flatten)]
        scope: NamingScope,
        /// Only instances of these clusters (comma-separated)
        #[arg(long, value_name = "C,...")]
        clusters: Option<String>,
        /// Only healthy instances
        #[arg(long)]
        healthy_only: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoleCmd {
    /// Add a role (with no permissions yet)
    Add { name: String },
    /// Delete a role; it is taken from every user
    #[command(visible_alias = "delete")]
    Del { name: String },
    /// Allow the role PERM on every key starting with PREFIX ('' for every key); replaces
    /// an earlier grant on the same prefix
    Grant {
        name: String,
        #[arg(long, value_name = "P")]
        prefix: String,
        #[arg(long, value_enum)]
        perm: PermArg,
    },
    /// Remove the role's grant on PREFIX
    Revoke {
        name: String,
        #[arg(long, value_name = "P")]
        prefix: String,
    },
    /// List roles and their grants
    #[command(visible_alias = "ls")]
    List,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PermArg {
    Read,
    Write,
    Readwrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchOp {
    Put,
    Get,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Table,
    Json,
}

/// A validated, non-empty, duplicate-free list of endpoints as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(pub Vec<String>);

/// `HOST:PORT[,HOST:PORT...]`, each optionally `http://HOST:PORT`. Empty items (a trailing
/// comma) are skipped; anything else that is not an address is refused here, so a typo is a
/// usage error (exit 2) rather than an unreachable endpoint (exit 4).
pub fn parse_endpoints(s: &str) -> Result<Endpoints, String> {
    let mut out: Vec<String> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        // https:// stays in the endpoint (the client then speaks TLS); http:// goes.
        let (scheme, bare) = match item.strip_prefix("https://") {
            Some(rest) => ("https://", rest),
            None => ("", item.strip_prefix("http://").unwrap_or(item)),
        };
        let bare = bare.strip_suffix('/').unwrap_or(bare);
        if bare.contains("://") {
            return Err(format!(
                "{item:?}: nacos-node serves http:// and https:// endpoints only"
            ));
        }
        let (host, port) = bare
            .rsplit_once(':')
            .ok_or_else(|| format!("{item:?} has no port: give HOST:PORT, e.g. 127.0.0.1:8848"))?;
        if host.is_empty() || host.contains(['/', ' ', '?', '#']) {
            return Err(format!("{item:?} is not HOST:PORT"));
        }
        port.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{item:?}: {port:?} is not a port number (1-65535)"))?;
        let endpoint = format!("{scheme}{bare}");
        if !out.contains(&endpoint) {
            out.push(endpoint);
        }
    }
    if out.is_empty() {
        return Err("no endpoint given: use HOST:PORT[,HOST:PORT...]".into());
    }
    Ok(Endpoints(out))
}

/// `500ms`, `5s`, `1m`, or plain (possibly fractional) seconds. Zero is refused: it would
/// make every call fail without trying.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    // Units in nanoseconds, so that whole numbers of any unit convert exactly.
    let (num, unit_nanos) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e9)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60e9)
    } else {
        (t, 1e9)
    };
    let n: f64 = num
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| format!("{s:?} is not a duration: use e.g. 500ms, 5s, 1m or 5"))?;
    let nanos = (n * unit_nanos).round();
    if nanos > 24.0 * 3600.0 * 1e9 {
        return Err(format!("{s:?} is longer than a day"));
    }
    let d = Duration::from_nanos(nanos as u64);
    if d < Duration::from_millis(1) {
        return Err(format!("{s:?} is too short: give at least 1ms"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        let ok = [
            ("500ms", 500),
            ("5s", 5000),
            ("1m", 60_000),
            ("5", 5000),
            ("0.25", 250),
            ("1.5s", 1500),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        for bad in ["", "0", "0s", "-1s", "abc", "5h", "1e400", "NaN"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoints("127.0.0.1:8848, http://h:1/,127.0.0.1:8848,").unwrap(),
            Endpoints(vec!["127.0.0.1:8848".into(), "h:1".into()])
        );
        assert_eq!(
            parse_endpoints("[::1]:8848").unwrap(),
            Endpoints(vec!["[::1]:8848".into()])
        );
        // https:// stays: the client then speaks TLS to that member.
        assert_eq!(
            parse_endpoints("https://h:1/,https://h:1,h:1").unwrap(),
            Endpoints(vec!["https://h:1".into(), "h:1".into()])
        );
        for bad in [
            "",
            ",",
            "localhost",
            "h:0",
            "h:99999",
            ":80",
            "ftp://h:1",
            "https://h",
            "h/x:1",
        ] {
            assert!(parse_endpoints(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn values_may_start_with_a_hyphen_but_flags_still_win() {
        let cli = Cli::try_parse_from(["nacosctl", "put", "k", "-5"]).unwrap();
        assert!(
            matches!(cli.command, Command::Put { ref value, json: false, .. } if value == "-5")
        );
        let cli = Cli::try_parse_from(["nacosctl", "put", "k", "--json", "-5"]).unwrap();
        assert!(matches!(cli.command, Command::Put { ref value, json: true, .. } if value == "-5"));
        let cli = Cli::try_parse_from(["nacosctl", "put", "k", "-"]).unwrap();
        assert!(matches!(cli.command, Command::Put { ref value, .. } if value == "-"));
    }

    #[test]
    fn watch_needs_exactly_one_target() {
        let cli = Cli::try_parse_from(["nacosctl", "watch", "k", "--from-index", "7"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Watch { ref key, prefix: None, from_index: Some(7) } if key.as_deref() == Some("k")
        ));
        let cli = Cli::try_parse_from(["nacosctl", "watch", "--prefix", ""]).unwrap();
        assert!(
            matches!(cli.command, Command::Watch { key: None, ref prefix, .. } if prefix.as_deref() == Some(""))
        );
        assert!(Cli::try_parse_from(["nacosctl", "watch"]).is_err());
        assert!(Cli::try_parse_from(["nacosctl", "watch", "k", "--prefix", "p"]).is_err());
        assert!(Cli::try_parse_from(["nacosctl", "watch", "k", "--from-index", "-1"]).is_err());
    }

    #[test]
    fn color_is_a_global_choice() {
        let cli = Cli::try_parse_from(["nacosctl", "status", "--color", "never"]).unwrap();
        assert_eq!(cli.color, ColorWhen::Never);
        assert!(Cli::try_parse_from(["nacosctl", "status", "--color", "pink"]).is_err());
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "nacosctl",
            "get",
            "k",
            "-o",
            "json",
            "--timeout",
            "2s",
            "--endpoints",
            "a:1",
        ])
        .unwrap();
        assert_eq!(cli.output, Output::Json);
        assert_eq!(cli.timeout, Duration::from_secs(2));
        assert_eq!(cli.endpoints, Endpoints(vec!["a:1".into()]));
    }
}
