//! nacosctl: the command-line client of a nacos-raft cluster (DESIGN §4; docs/cli.md).
//!
//! A thin binary over `nacos_raft::client`: it parses flags, runs one command, prints data on
//! stdout and diagnostics on stderr (`nacosctl: ...` then a `hint:`), and exits with a code
//! from the contract (see `exit.rs`). It never waits on the network longer than `--timeout`.

mod auth;
mod backup;
mod bench;
mod check;
mod cli;
mod commands;
mod exit;
mod import;
mod members;
mod naming;
mod render;
mod status;
mod transfer;
mod ui;
mod watch;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use nacos_raft::client::{fmt_duration, ClientError, UnavailableKind, WatchTarget};

use crate::cli::{Cli, Command};
use crate::exit::{Exit, UsageError};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e).into(),
    };
    ui::init(cli.color);
    match run(&cli) {
        Ok(exit) => exit.into(),
        Err(e) => report(&e, &cli).into(),
    }
}

fn run(cli: &Cli) -> anyhow::Result<Exit> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    // Built (and logged in) only by the commands that talk to a node.
    let client = || auth::connect(cli);
    let exit = match &cli.command {
        Command::Put {
            key,
            value,
            json,
            if_timestamp,
            if_absent,
        } => {
            commands::check_key(key)?;
            let value = commands::read_value(value, *json, &mut io::stdin().lock())?;
            let cond = if *if_absent { Some(0) } else { *if_timestamp };
            commands::put(&client()?, cli.output, &mut out, key, value, cond)?
        }
        Command::Get { key, stale } => {
            commands::check_key(key)?;
            commands::get(&client()?, cli.output, &mut out, key, *stale)?
        }
        Command::Del { key, if_timestamp } => {
            commands::check_key(key)?;
            commands::del(&client()?, cli.output, &mut out, key, *if_timestamp)?
        }
        Command::Ls { prefix, stale } => commands::ls(
            &client()?,
            cli.output,
            &mut out,
            prefix.as_deref().unwrap_or(""),
            *stale,
        )?,
        Command::Leader => commands::leader(&client()?, cli.output, &mut out)?,
        Command::Status { watch: false, .. } => status::run(&client()?, cli.output, &mut out)?,
        Command::Status {
            watch: true,
            interval,
        } => status::watch(&client()?, cli.output, &mut out, *interval)?,
        Command::Watch {
            key,
            prefix,
            from_index,
        } => {
            let target = match (key, prefix) {
                (Some(k), _) => {
                    commands::check_key(k)?;
                    WatchTarget::Key(k)
                }
                (None, Some(p)) => WatchTarget::Prefix(p),
                (None, None) => unreachable!("clap requires KEY or --prefix"),
            };
            watch::run(
                &client()?,
                cli.output,
                &mut out,
                &watch::Args {
                    target,
                    from_index: *from_index,
                    endpoints: &cli.endpoints.0,
                },
            )?
        }
        Command::Check => check::run(&client()?, cli.output, &mut out)?,
        Command::TransferLeader { to } => {
            transfer::run(&client()?, cli.output, &mut out, to.as_deref())?
        }
        Command::Member { action } => members::run(&client()?, cli.output, &mut out, action)?,
        Command::Dump {
            data_dir,
            nacos_layout,
        } => commands::dump(cli.output, &mut out, data_dir, nacos_layout.as_deref())?,
        Command::Bench {
            op,
            clients,
            requests,
            keys,
            value_size,
            stale,
        } => bench::run(
            &client()?,
            cli.output,
            &mut out,
            &bench::BenchArgs {
                op: *op,
                clients: *clients,
                requests: *requests,
                keys: *keys,
                value_size: *value_size,
                stale: *stale,
            },
        )?,
        Command::Certs { dir, hosts } => {
            let hosts: Vec<String> = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_string)
                .collect();
            let f = nacos_raft::tls::local::make(dir, &hosts, false)?;
            match cli.output {
                cli::Output::Json => render::json(
                    &mut out,
                    &serde_json::json!({"ca": f.ca, "cert": f.cert, "key": f.key}),
                )?,
                _ => writeln!(
                    out,
                    "OK ca={} cert={} key={}",
                    f.ca.display(),
                    f.cert.display(),
                    f.key.display()
                )?,
            }
            Exit::Ok
        }
        Command::Auth { action } => auth::auth(&client()?, cli.output, &mut out, action)?,
        Command::User { action } => auth::user(&client()?, cli.output, &mut out, action)?,
        Command::Role { action } => auth::role(&client()?, cli.output, &mut out, action)?,
        Command::Service { action } => naming::service(&client()?, cli.output, &mut out, action)?,
        Command::Instance { action } => naming::instance(&client()?, cli.output, &mut out, action)?,
        Command::Import {
            nacos_data_dir,
            dry_run,
            skip_bad,
        } => import::run(
            cli,
            cli.output,
            &mut out,
            &import::Args {
                dir: nacos_data_dir,
                dry_run: *dry_run,
                skip_bad: *skip_bad,
            },
        )?,
        Command::Snapshot { action } => backup::snapshot(client, cli.output, &mut out, action)?,
        Command::Completion { shell } => {
            // Into a buffer first: `generate` panics on a write error such as a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "nacosctl", &mut script);
            if cli.output == cli::Output::Json {
                let script = String::from_utf8(script)?;
                render::json(
                    &mut out,
                    &serde_json::json!({"shell": shell.to_string(), "script": script}),
                )?;
            } else {
                out.write_all(&script)?;
            }
            Exit::Ok
        }
    };
    out.flush()?;
    Ok(exit)
}

/// Prints a clap failure as `nacosctl: ...` (help and version go out as clap prints them).
fn clap_error(e: clap::Error) -> Exit {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            }
        }
        _ => {
            let text = e.render().to_string();
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            eprint!("{} {text}", ui::prefix());
            Exit::Usage
        }
    }
}

/// Prints an error once, with a hint that names the next step, and picks the exit code.
fn report(e: &anyhow::Error, cli: &Cli) -> Exit {
    // Output cut short by a closed pipe (`nacosctl ls | head`) is not a failure.
    if e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
    {
        return Exit::Ok;
    }
    eprintln!("{} {e:#}", ui::prefix());
    let (exit, hint) = if let Some(u) = e.downcast_ref::<UsageError>() {
        (Exit::Usage, u.hint.clone())
    } else if let Some(c) = e.chain().find_map(|c| c.downcast_ref::<ClientError>()) {
        (Exit::of_client_error(c), client_hint(c, cli))
    } else if let Some(nacos_raft::Error::Corrupt { path, .. }) = e
        .chain()
        .find_map(|c| c.downcast_ref::<nacos_raft::Error>())
    {
        (
            Exit::Error,
            Some(format!(
                "nothing was skipped: {} does not hold a valid datum; to see the rest, dump a copy of the data dir without that file",
                path.display()
            )),
        )
    } else {
        (Exit::Error, None)
    };
    if let Some(h) = hint {
        eprintln!("hint: {h}");
    }
    exit
}

fn client_hint(e: &ClientError, cli: &Cli) -> Option<String> {
    let endpoints = cli.endpoints.0.join(",");
    let timeout = fmt_duration(cli.timeout);
    Some(match e {
        ClientError::NotFound { .. } => return None,
        ClientError::PreconditionFailed { key, current, .. } => format!(
            "another write got there first; read {key} again (`nacosctl get {key}`), decide, and retry with --if-timestamp {current}"
        ),
        ClientError::Unavailable { kind, leader, .. } => match kind {
            UnavailableKind::Unreachable if e.to_string().contains("TLS") => {
                "check the TLS settings: --cacert (and --cert, --key), and https:// or http:// per member (docs/operations.md, \"Run with TLS\")".into()
            }
            UnavailableKind::Unreachable => format!(
                "is nacos-node running at {endpoints}? Name a live member with --endpoints (or NACOSCTL_ENDPOINTS)"
            ),
            UnavailableKind::TimedOut => format!(
                "no answer within --timeout {timeout}; check the members with `nacosctl status`, or raise --timeout"
            ),
            UnavailableKind::ConnectionLost => {
                "the member went away mid-request; a write may still have been applied: read the key before retrying, and see `nacosctl status`".into()
            }
            UnavailableKind::NoLeader => {
                "a leader needs a majority of the members up and reaching each other; see `nacosctl status`".into()
            }
            UnavailableKind::NotLeader => match leader {
                Some(l) => format!("leadership moved to {l}; retry"),
                None => "leadership moved; retry".into(),
            },
            UnavailableKind::WriteTimeout => {
                "the write may still commit: read the key before retrying a non-idempotent change; see `nacosctl status`".into()
            }
            UnavailableKind::ServiceUnavailable => {
                "see `nacosctl status` and the node's log".into()
            }
        },
        ClientError::Server {
            error: nacos_raft::client::ErrorCode::Unauthenticated,
            ..
        } => {
            "log in with --user NAME (NACOSCTL_USER; the password from NACOSCTL_PASSWORD or a prompt), or pass --token".into()
        }
        ClientError::Server {
            error: nacos_raft::client::ErrorCode::PermissionDenied,
            ..
        } => {
            "ask root for the permission the message names (nacosctl role grant, nacosctl user grant-role)".into()
        }
        ClientError::Server { status: 410, .. } => {
            "that history is gone for good: read the current values (`get`, `ls`), then watch again from the index named above".into()
        }
        ClientError::Server { status: 413, .. } => {
            "a request body is limited to 4 MiB; split the value".into()
        }
        ClientError::Server { status, endpoint, .. } if *status >= 500 => {
            format!("see the log of the node at {endpoint}")
        }
        ClientError::Server { .. } => "the node refused the request; the message says why".into(),
        ClientError::BadResponse { endpoint, .. } => {
            format!("is {endpoint} a nacos-node of a matching version?")
        }
        ClientError::InvalidEndpoint { .. } => {
            "endpoints are HOST:PORT, comma-separated, e.g. --endpoints 127.0.0.1:8848,127.0.0.1:8849".into()
        }
    })
}
