//! `nacosctl transfer-leader [ADDR]`: finds the leader from any endpoint, asks it to hand
//! over (Raft thesis §3.10), and waits until the new leader says it leads.
//!
//! Works from any member, like etcd's `move-leader` should have (etcd #11537). Each request
//! is bounded by `--timeout`, and so is the wait for the new leader.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use nacos_raft::client::{display_name, fmt_duration, Client, ClientError, UnavailableKind};
use nacos_raft::wire::Role;
use serde::Serialize;

use crate::cli::{parse_endpoints, Output};
use crate::exit::{Exit, UsageError};
use crate::render;
use crate::ui;

/// Pause between two looks at the target. Only spares the CPU: the loop ends on what the
/// target reports, or at the deadline.
const POLL: Duration = Duration::from_millis(20);

/// The `transfer-leader -o json` document.
#[derive(Debug, Serialize)]
pub struct Moved {
    /// The leader before.
    pub from: String,
    /// The member asked to take over.
    pub to: String,
    /// The leader now.
    pub leader: String,
    pub term: u64,
}

/// Checks ADDR's form before anything is sent: a typo is a usage error, not "not a member".
pub fn check_addr(addr: &str) -> Result<String, UsageError> {
    let parsed = parse_endpoints(addr).map_err(|why| {
        UsageError::new(
            format!("ADDR {why}"),
            "name the member as HOST:PORT, as `nacosctl status` lists it",
        )
    })?;
    match parsed.0.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(UsageError::new(
            format!("ADDR {addr:?} names more than one member"),
            "give one HOST:PORT",
        )),
    }
}

pub fn run(client: &Client, output: Output, out: &mut dyn Write, to: Option<&str>) -> Result<Exit> {
    let to = to.map(check_addr).transpose()?;
    let info = client.leader()?;
    let Some(from) = info.leader.clone() else {
        return Err(no_leader(client, info.term).into());
    };
    if let Some(t) = &to {
        if *t == from {
            // Nothing to do, and saying so keeps a runbook step idempotent.
            print(
                out,
                output,
                &Moved {
                    from: from.clone(),
                    to: t.clone(),
                    leader: from.clone(),
                    term: info.term,
                },
            )?;
            ui::progress(&format!("{t} is already the leader"));
            return Ok(Exit::Ok);
        }
        let peers = client.status_of(&from)?.peers;
        if !peers.iter().any(|p| display_name(p) == *t) {
            return Err(anyhow!(
                "{t} is not a member of the cluster; the members are {}",
                peers.join(", ")
            ));
        }
    }
    ui::progress(&format!(
        "asking {from} to hand leadership to {}",
        to.as_deref().unwrap_or("its most up-to-date follower")
    ));
    let started = client.transfer_leader_at(&from, to.as_deref())?;
    let deadline = Instant::now() + client.timeout();
    let target = display_name(&started.to);
    ui::progress(&format!("waiting for {target} to take over"));
    // Done when the target itself says it leads, in a newer term than the old leader's.
    loop {
        // A short bound per look, so a target that hangs cannot hold the loop past the
        // deadline.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let look = client
            .with_timeout(remaining.clamp(Duration::from_millis(100), Duration::from_secs(1)));
        if let Ok(s) = look.status_of(&target) {
            if s.role == Role::Leader && s.term > info.term {
                print(
                    out,
                    output,
                    &Moved {
                        from,
                        to: target.clone(),
                        leader: target,
                        term: s.term,
                    },
                )?;
                return Ok(Exit::Ok);
            }
        }
        if Instant::now() + POLL >= deadline {
            break;
        }
        thread::sleep(POLL);
    }
    // Not the expected outcome in time: say what did happen.
    let now = client.with_timeout(Duration::from_secs(1)).leader();
    match now.ok().and_then(|l| l.leader.map(|a| (a, l.term))) {
        Some((other, term)) if other != from && other != target => {
            print(
                out,
                output,
                &Moved {
                    from,
                    to: target.clone(),
                    leader: other.clone(),
                    term,
                },
            )?;
            Err(anyhow!(
                "leadership moved to {other}, not to {target} (term {term})"
            ))
        }
        _ => Err(ClientError::Unavailable {
            endpoint: target.clone(),
            kind: UnavailableKind::TimedOut,
            message: format!(
                "{target} did not take over from {from} within {}; see `nacosctl status`",
                fmt_duration(client.timeout())
            ),
            leader: None,
        }
        .into()),
    }
}

fn no_leader(client: &Client, term: u64) -> ClientError {
    ClientError::Unavailable {
        endpoint: client.endpoints().join(","),
        kind: UnavailableKind::NoLeader,
        message: format!("no leader is known (term {term}), so there is none to move"),
        leader: None,
    }
}

fn print(out: &mut dyn Write, output: Output, m: &Moved) -> Result<()> {
    match output {
        Output::Json => render::json(out, m)?,
        Output::Table => render::table(
            out,
            &["FROM", "TO", "LEADER", "TERM"],
            vec![vec![
                m.from.clone(),
                m.to.clone(),
                m.leader.clone(),
                m.term.to_string(),
            ]],
        )?,
        // The new leader alone, as `nacosctl leader` prints it.
        Output::Text => writeln!(out, "{}", m.leader)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_before_sending() {
        assert_eq!(check_addr("127.0.0.1:8849").unwrap(), "127.0.0.1:8849");
        assert_eq!(check_addr("http://h:1/").unwrap(), "h:1");
        for bad in ["h", "h:0", "a:1,b:2", ""] {
            assert!(check_addr(bad).is_err(), "{bad:?} accepted");
        }
    }
}
