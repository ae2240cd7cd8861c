//! `nacosctl member list|add|promote|remove|replace`: the cluster's configuration and its
//! changes, one member at a time, each sent to the leader wherever it is.
//!
//! Every change is safe to run again: the leader appends nothing for one already in force,
//! and `replace` skips the steps an earlier run finished. The refusals (a change that would
//! leave no reachable majority, a learner far behind) come from the leader, which alone
//! knows; they exit 1 with its reason.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use nacos_raft::client::{display_name, fmt_duration, Client, ClientError};
use nacos_raft::wire::api::{MemberChange, MemberInfo, Members};
use serde::Serialize;

use crate::cli::{MemberCmd, Output};
use crate::exit::{Exit, UsageError};
use crate::render;
use crate::transfer::check_addr;
use crate::ui;

/// Pause between two looks at a member catching up (the loop ends on what the leader
/// reports, or at the deadline).
const POLL: Duration = Duration::from_millis(200);

pub fn run(client: &Client, output: Output, out: &mut dyn Write, cmd: &MemberCmd) -> Result<Exit> {
    match cmd {
        MemberCmd::List => list(client, output, out),
        MemberCmd::Add {
            addr,
            learner,
            wait,
            catch_up_timeout,
        } => {
            let addr = check_addr(addr)?;
            let done = client.add_member(&addr, *learner)?;
            warn(&done);
            let what = if !done.changed {
                format!("{addr} is already a member; nothing to do")
            } else if *learner {
                format!("added {addr} as a learner; promote it with `nacosctl member promote {addr}` once caught up")
            } else {
                format!(
                    "added {addr} as a learner; the leader makes it a voter once it has caught up"
                )
            };
            if *wait {
                let deadline = Instant::now() + *catch_up_timeout;
                if *learner {
                    wait_caught_up(client, &addr, deadline, *catch_up_timeout)?;
                } else {
                    wait_voter(client, &addr, deadline, *catch_up_timeout)?;
                }
            }
            print_change(out, output, &done, &what)?;
            Ok(Exit::Ok)
        }
        MemberCmd::Promote { addr } => {
            let addr = check_addr(addr)?;
            let done = client.promote_member(&addr)?;
            let what = if done.changed {
                format!("{addr} is a voter now")
            } else {
                format!("{addr} is a voter already; nothing to do")
            };
            print_change(out, output, &done, &what)?;
            Ok(Exit::Ok)
        }
        MemberCmd::Remove { addr } => {
            let addr = check_addr(addr)?;
            let done = client.remove_member(&addr)?;
            let what = if done.changed {
                format!("removed {addr}")
            } else {
                format!("{addr} is not a member; nothing to do")
            };
            print_change(out, output, &done, &what)?;
            Ok(Exit::Ok)
        }
        MemberCmd::Replace {
            old,
            new,
            catch_up_timeout,
        } => replace(client, output, out, old, new, *catch_up_timeout),
    }
}

fn list(client: &Client, output: Output, out: &mut dyn Write) -> Result<Exit> {
    let m = client.members()?;
    match output {
        Output::Json => render::json(out, &m)?,
        Output::Table => render::table(
            out,
            &["ADDR", "ROLE", "STATUS", "MATCH", "LAG"],
            m.members.iter().map(row).collect(),
        )?,
        Output::Text => {
            for r in m.members.iter().map(row) {
                writeln!(out, "{}", r.join(" "))?;
            }
        }
    }
    if !m.committed {
        eprintln!(
            "{} a configuration change (log index {}) is not committed yet",
            ui::prefix(),
            m.config_index
        );
    }
    if m.from_leader {
        return Ok(Exit::Ok);
    }
    eprintln!(
        "{} no leader answered: this is {}'s view, without match indexes or lag",
        ui::prefix(),
        m.from
    );
    Ok(Exit::Unavailable)
}

fn row(m: &MemberInfo) -> Vec<String> {
    vec![
        m.addr.clone(),
        if m.voter { "voter" } else { "learner" }.to_string(),
        m.status.clone(),
        render::opt(&m.match_index),
        render::opt(&m.lag),
    ]
}

fn print_change(out: &mut dyn Write, output: Output, c: &MemberChange, what: &str) -> Result<()> {
    match output {
        Output::Json => render::json(out, c)?,
        Output::Text | Output::Table => {
            writeln!(out, "OK {what}")?;
            writeln!(
                out,
                "voters {}{}",
                c.voters.join(","),
                if c.learners.is_empty() {
                    String::new()
                } else {
                    format!(" learners {}", c.learners.join(","))
                }
            )?;
        }
    }
    Ok(())
}

fn warn(c: &MemberChange) {
    if let Some(w) = &c.warning {
        eprintln!("{} warning: {w}", ui::prefix());
    }
}

/// The `member replace -o json` document.
#[derive(Debug, Serialize)]
struct Replaced {
    old: String,
    new: String,
    /// What this run did, in order: `add`, `promote`, `remove` (an empty list: everything was
    /// done by an earlier run).
    steps: Vec<&'static str>,
    voters: Vec<String>,
    learners: Vec<String>,
}

fn replace(
    client: &Client,
    output: Output,
    out: &mut dyn Write,
    old: &str,
    new: &str,
    catch_up: Duration,
) -> Result<Exit> {
    let old = check_addr(old)?;
    let new = check_addr(new)?;
    if old == new {
        return Err(UsageError::new(
            format!("OLD and NEW are both {old}"),
            "to restart a member in place, restart it; replace is for a new address",
        )
        .into());
    }
    let deadline = Instant::now() + catch_up;
    let mut steps = Vec::new();
    let m = leader_view(client)?;
    let find = |m: &Members, a: &str| m.members.iter().find(|x| x.addr == a).cloned();
    if find(&m, &new).is_none() {
        if find(&m, &old).is_none() {
            return Err(anyhow!(
                "neither {old} nor {new} is a member; the members are {}",
                names(&m)
            ));
        }
        ui::progress(&format!("adding {new} as a learner"));
        let done = client.add_member(&new, true).context("adding NEW")?;
        warn(&done);
        steps.push("add");
    }
    if find(&leader_view(client)?, &new).is_some_and(|x| !x.voter) {
        ui::progress(&format!("waiting for {new} to catch up"));
        wait_caught_up(client, &new, deadline, catch_up)?;
        // The leader refuses while NEW is behind; it may fall behind again under load.
        loop {
            match client.promote_member(&new) {
                Ok(_) => break,
                Err(ClientError::Server { status: 409, .. }) if Instant::now() < deadline => {
                    thread::sleep(POLL)
                }
                Err(e) => return Err(anyhow::Error::new(e).context("promoting NEW")),
            }
        }
        steps.push("promote");
    }
    let done = if find(&leader_view(client)?, &old).is_some() {
        ui::progress(&format!("removing {old}"));
        steps.push("remove");
        client.remove_member(&old).context("removing OLD")?
    } else {
        client.remove_member(&old)?
    };
    match output {
        Output::Json => render::json(
            out,
            &Replaced {
                old: old.clone(),
                new: new.clone(),
                steps,
                voters: done.voters,
                learners: done.learners,
            },
        )?,
        Output::Text | Output::Table => {
            if steps.is_empty() {
                writeln!(out, "OK {old} was replaced by {new} already; nothing to do")?;
            } else {
                writeln!(out, "OK replaced {old} by {new} ({})", steps.join(", "))?;
            }
            writeln!(out, "voters {}", done.voters.join(","))?;
        }
    }
    Ok(Exit::Ok)
}

/// The leader's view of the members; an error when no leader answers.
fn leader_view(client: &Client) -> Result<Members> {
    let m = client.members()?;
    if !m.from_leader {
        return Err(anyhow!(
            "no leader answered (the members need a leader to change); see `nacosctl status`"
        ));
    }
    Ok(m)
}

fn names(m: &Members) -> String {
    m.members
        .iter()
        .map(|x| x.addr.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until the leader reports `addr` in step with it (or a voter already).
fn wait_caught_up(client: &Client, addr: &str, deadline: Instant, limit: Duration) -> Result<()> {
    wait_for(client, addr, deadline, limit, "catch up", |x| {
        x.voter || x.status == "ok"
    })
}

/// Waits until the leader reports `addr` as a voter.
fn wait_voter(client: &Client, addr: &str, deadline: Instant, limit: Duration) -> Result<()> {
    wait_for(client, addr, deadline, limit, "become a voter", |x| x.voter)
}

fn wait_for(
    client: &Client,
    addr: &str,
    deadline: Instant,
    limit: Duration,
    what: &str,
    done: impl Fn(&MemberInfo) -> bool,
) -> Result<()> {
    let mut last = String::from("not heard of");
    loop {
        // A member that cannot be asked now (leadership moving) is asked again.
        if let Ok(m) = client.members() {
            match m.members.iter().find(|x| display_name(&x.addr) == addr) {
                Some(x) if done(x) => return Ok(()),
                Some(x) => {
                    last = format!(
                        "{} with lag {}",
                        x.status,
                        x.lag.map_or("unknown".into(), |l| l.to_string())
                    )
                }
                None => last = "not a member".into(),
            }
        }
        if Instant::now() + POLL > deadline {
            return Err(anyhow::Error::new(ClientError::Unavailable {
                endpoint: addr.to_string(),
                kind: nacos_raft::client::UnavailableKind::TimedOut,
                message: format!(
                    "did not {what} within {} (it is {last}); is it running with `nacos-node --listen {addr} --join <a member>` and the cluster secret? Run the same command again to go on",
                    fmt_duration(limit)
                ),
                leader: None,
            }));
        }
        thread::sleep(POLL);
    }
}
