//! `nacosctl status`: asks every member for its status in parallel, lists every member even
//! when it is down (etcd #9531), and judges the cluster healthy, degraded or unavailable.
//!
//! Members are the endpoints given plus the `peers` any reachable member reports, so one
//! endpoint is enough to see the whole cluster (etcd #8115); a member that answers but is
//! not in the leader's configuration (removed, or not added yet) is named and left out. The leader's own view of its
//! followers adds how far behind each member is and when the leader last heard from it, for
//! dead members too.

use std::collections::BTreeSet;
use std::io::Write;
use std::thread;

use anyhow::Result;
use comfy_table::Cell;
use nacos_raft::client::{display_name, Client, ClientError, FollowerStatus, Status};
use nacos_raft::wire::Role;
use serde::Serialize;

use crate::cli::Output;
use crate::exit::Exit;
use crate::render;
use crate::ui;

/// One member as `status` reports it; the first nine fields are the contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRow {
    pub endpoint: String,
    /// Whether the member answered its status.
    pub reachable: bool,
    pub role: Option<Role>,
    pub term: Option<u64>,
    pub leader: Option<String>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub datums: Option<u64>,
    pub error: Option<String>,
    pub last_log_index: Option<u64>,
    /// Log entries this member is behind the leader's commit index: not yet applied (from
    /// its own status), or, when it did not answer, not yet replicated to it (the leader's
    /// `match_index`). `None` without a reachable leader.
    pub lag: Option<u64>,
    /// Milliseconds since the leader last heard from this member (the leader's view); `None`
    /// for the leader itself and without a reachable leader.
    pub last_contact_ms: Option<u64>,
    /// The name the member gives itself (its `--advertise`), which is how its peers and the
    /// leader's follower list name it; `endpoint` is the name it was reached by.
    #[serde(skip)]
    pub id: Option<String>,
    /// The leader's view of its followers, when this member is the leader.
    #[serde(skip)]
    pub followers: Vec<FollowerStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Degraded,
    Unavailable,
}

impl Health {
    pub fn exit(self) -> Exit {
        match self {
            Health::Healthy => Exit::Ok,
            Health::Degraded => Exit::Degraded,
            Health::Unavailable => Exit::Unavailable,
        }
    }
}

/// The `status -o json` document: `leader` and `nodes` are the contract.
#[derive(Debug, Serialize)]
pub struct Report {
    pub leader: Option<String>,
    pub health: Health,
    pub problems: Vec<String>,
    pub nodes: Vec<NodeRow>,
}

pub fn run(client: &Client, output: Output, out: &mut dyn Write) -> Result<Exit> {
    let report = gather(client);
    show(&report, output, out)?;
    out.flush()?;
    let word = health_word(&report);
    for p in &report.problems {
        eprintln!("{} {word}: {p}", ui::prefix());
    }
    if report.health != Health::Healthy {
        eprintln!("hint: start or reconnect the members named above; a write needs a majority up and one leader they agree on");
    }
    Ok(report.health.exit())
}

fn health_word(report: &Report) -> &'static str {
    match report.health {
        Health::Healthy => "healthy",
        Health::Degraded => "degraded",
        Health::Unavailable => "unavailable",
    }
}

/// `status --watch`: the report again every `interval` until Ctrl-C or SIGTERM (exit 0). On
/// a terminal the screen is redrawn in place with a health line under the table; elsewhere
/// each round is printed after the last (a blank line between rounds; one compact JSON line
/// per round with `-o json`), so a log of it reads like a series of `status` runs.
pub fn watch(
    client: &Client,
    output: Output,
    out: &mut dyn Write,
    interval: std::time::Duration,
) -> Result<Exit> {
    use std::io::IsTerminal;
    use std::sync::atomic::Ordering;
    crate::watch::catch_interrupts();
    let tty = std::io::stdout().is_terminal();
    loop {
        let started = std::time::Instant::now();
        let report = gather(client);
        let mut frame: Vec<u8> = Vec::new();
        if output == Output::Json {
            serde_json::to_writer(&mut frame, &report)?;
            frame.push(b'\n');
        } else {
            show(&report, output, &mut frame)?;
        }
        if tty {
            // Home and clear, then the frame: one redraw, no scrolling.
            out.write_all(b"\x1b[H\x1b[2J")?;
            out.write_all(&frame)?;
            let mut line = format!(
                "{} ({} problem(s)); every {}; Ctrl-C to stop",
                health_word(&report),
                report.problems.len(),
                nacos_raft::client::fmt_duration(interval)
            );
            for p in &report.problems {
                line.push_str(&format!("\n  {p}"));
            }
            writeln!(out, "{line}")?;
        } else {
            out.write_all(&frame)?;
            if output != Output::Json {
                writeln!(out)?;
            }
        }
        out.flush()?;
        // Sleep in short steps so Ctrl-C ends it at once.
        while started.elapsed() < interval {
            if crate::watch::INTERRUPTED.load(Ordering::SeqCst) {
                return Ok(Exit::Ok);
            }
            std::thread::sleep(std::time::Duration::from_millis(50).min(interval));
        }
        if crate::watch::INTERRUPTED.load(Ordering::SeqCst) {
            return Ok(Exit::Ok);
        }
    }
}

/// One report in an output form.
fn show(report: &Report, output: Output, out: &mut dyn Write) -> Result<()> {
    match output {
        Output::Json => render::json(out, &report)?,
        Output::Table => render::styled_table(
            out,
            &[
                "ENDPOINT",
                "ROLE",
                "TERM",
                "LEADER",
                "COMMIT",
                "APPLIED",
                "LAG",
                "LAST CONTACT",
                "DATUMS",
                "ERROR",
            ],
            report
                .nodes
                .iter()
                .map(|n| {
                    vec![
                        Cell::new(&n.endpoint),
                        render::role_cell(n.role.as_ref()),
                        Cell::new(render::opt(&n.term)),
                        Cell::new(render::opt(&n.leader)),
                        Cell::new(render::opt(&n.commit_index)),
                        Cell::new(render::opt(&n.applied_index)),
                        Cell::new(render::opt(&n.lag)),
                        Cell::new(n.last_contact_ms.map_or("-".into(), render::millis)),
                        Cell::new(render::opt(&n.datums)),
                        Cell::new(n.error.clone().unwrap_or_default()),
                    ]
                })
                .collect(),
            ui::color_stdout(),
        )?,
        // One line per member, `ENDPOINT<TAB>ROLE` then key=value fields: `grep LEADER` and
        // `grep -c UNREACHABLE` work, and so does `awk -F'\t'`.
        Output::Text => {
            for n in &report.nodes {
                if n.reachable {
                    write!(
                        out,
                        "{}\t{}\tterm={}\tleader={}\tcommit_index={}\tapplied_index={}\tdatums={}",
                        n.endpoint,
                        render::opt(&n.role),
                        render::opt(&n.term),
                        render::opt(&n.leader),
                        render::opt(&n.commit_index),
                        render::opt(&n.applied_index),
                        render::opt(&n.datums),
                    )?;
                } else {
                    write!(
                        out,
                        "{}\tUNREACHABLE\terror={}",
                        n.endpoint,
                        render::opt(&n.error)
                    )?;
                }
                writeln!(
                    out,
                    "\tlag={}\tlast_contact_ms={}",
                    render::opt(&n.lag),
                    render::opt(&n.last_contact_ms)
                )?;
            }
        }
    }
    Ok(())
}

/// Queries the given endpoints, then any peer they report that was not among them. Each
/// query is bounded by the client's timeout, so the whole takes at most twice that.
pub fn gather(client: &Client) -> Report {
    let mut given: Vec<String> = Vec::new();
    for e in client.endpoints() {
        let name = display_name(e);
        if !given.contains(&name) {
            given.push(name);
        }
    }
    let mut answers = query_all(client, &given);
    // A member may be known under another name than the one given (localhost vs 127.0.0.1):
    // its own `endpoint` field says which name its peers use for it.
    let mut known: BTreeSet<String> = given.iter().cloned().collect();
    known.extend(
        answers
            .iter()
            .filter_map(|(_, s)| s.as_ref().map(|s| display_name(&s.endpoint))),
    );
    let extra: Vec<String> = answers
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .flat_map(|s| s.peers.iter().map(|p| display_name(p)))
        .filter(|p| !p.is_empty() && !known.contains(p))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    answers.extend(query_all(client, &extra));
    // The configuration as the leader holds it decides who is a member: a member that
    // answers under a name it does not list (removed, or not added yet) is left out of the
    // verdict and named. One that does not answer stays (its name may be another spelling
    // of a member's, and status is never green over a dead member).
    let config: Option<BTreeSet<String>> = answers
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .filter(|s| s.role == Role::Leader && !s.peers.is_empty())
        .max_by_key(|s| s.term)
        .map(|s| s.peers.iter().map(|p| display_name(p)).collect());
    let mut outsiders = Vec::new();
    let mut nodes: Vec<NodeRow> = Vec::new();
    for (row, _) in answers {
        match &config {
            Some(members) if row.reachable && !members.contains(row.name()) => {
                outsiders.push(row.endpoint)
            }
            _ => nodes.push(row),
        }
    }
    let (leader, health, mut problems) = judge(&nodes);
    for o in outsiders {
        problems.push(format!(
            "{o} is not in the cluster's configuration (removed, or not added yet); left out"
        ));
    }
    if let Some(members) = &config {
        for n in nodes
            .iter()
            .filter(|n| !n.reachable && !members.contains(n.name()))
        {
            problems.push(format!(
                "{} is not in the leader's configuration either; if it was removed, drop it from --endpoints",
                n.endpoint
            ));
        }
    }
    add_leader_view(&mut nodes, leader.as_deref());
    Report {
        leader,
        health,
        problems,
        nodes,
    }
}

/// Fills in `lag` and `last_contact_ms` from the leader's own row, if the leader answered.
pub fn add_leader_view(nodes: &mut [NodeRow], leader: Option<&str>) {
    let Some(leader) = leader else { return };
    let Some(lead) = nodes
        .iter()
        .find(|n| n.reachable && n.role == Some(Role::Leader) && n.name() == leader)
        .cloned()
    else {
        return;
    };
    let commit = lead.commit_index.unwrap_or(0);
    for n in nodes.iter_mut() {
        let seen = lead
            .followers
            .iter()
            .find(|f| display_name(&f.peer) == n.name());
        n.lag = match (n.applied_index, seen) {
            (Some(applied), _) => Some(commit.saturating_sub(applied)),
            (None, Some(f)) => Some(commit.saturating_sub(f.match_index)),
            (None, None) => None,
        };
        n.last_contact_ms = seen.and_then(|f| f.last_contact_ms);
    }
}

impl NodeRow {
    /// The member's own name when it answered, else the name it was reached by.
    fn name(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.endpoint)
    }
}

/// One thread per endpoint, answers in the order of `endpoints`.
fn query_all(client: &Client, endpoints: &[String]) -> Vec<(NodeRow, Option<Status>)> {
    thread::scope(|s| {
        let handles: Vec<_> = endpoints
            .iter()
            .map(|e| (e, s.spawn(move || client.status_of(e))))
            .collect();
        handles
            .into_iter()
            .map(|(e, h)| {
                let answer = h.join().unwrap_or_else(|_| {
                    Err(ClientError::BadResponse {
                        endpoint: e.clone(),
                        message: "the status query panicked".into(),
                    })
                });
                row(e, answer)
            })
            .collect()
    })
}

fn row(endpoint: &str, answer: Result<Status, ClientError>) -> (NodeRow, Option<Status>) {
    match answer {
        Ok(s) => (
            NodeRow {
                endpoint: endpoint.to_string(),
                reachable: true,
                role: Some(s.role.clone()),
                term: Some(s.term),
                leader: s.leader.clone(),
                commit_index: Some(s.commit_index),
                applied_index: Some(s.applied_index),
                datums: Some(s.datums),
                error: None,
                last_log_index: Some(s.last_log_index),
                lag: None,
                last_contact_ms: None,
                id: Some(display_name(&s.endpoint)).filter(|e| !e.is_empty()),
                followers: s.followers.clone(),
            },
            Some(s),
        ),
        Err(e) => (
            NodeRow {
                endpoint: endpoint.to_string(),
                reachable: false,
                role: None,
                term: None,
                leader: None,
                commit_index: None,
                applied_index: None,
                datums: None,
                error: Some(error_text(&e)),
                last_log_index: None,
                lag: None,
                last_contact_ms: None,
                id: None,
                followers: Vec::new(),
            },
            None,
        ),
    }
}

/// The error without the endpoint prefix: the row already names it.
pub fn error_text(e: &ClientError) -> String {
    match e {
        ClientError::Unavailable { message, .. } => message.clone(),
        ClientError::Server {
            status,
            error,
            message,
            ..
        } => format!("{status} {error}: {message}"),
        ClientError::BadResponse { message, .. } => format!("unexpected answer: {message}"),
        other => other.to_string(),
    }
}

/// The leader (as seen by the reachable member with the highest term), the health, and what
/// is wrong. Unavailable: no reachable member knows a leader, or a majority is unreachable.
/// Degraded: any member unreachable, or the reachable ones do not all name the same leader.
pub fn judge(nodes: &[NodeRow]) -> (Option<String>, Health, Vec<String>) {
    let mut problems = Vec::new();
    let reachable: Vec<&NodeRow> = nodes.iter().filter(|n| n.reachable).collect();
    let down = nodes.len() - reachable.len();
    for n in nodes.iter().filter(|n| !n.reachable) {
        problems.push(format!(
            "{} is unreachable: {}",
            n.endpoint,
            render::opt(&n.error)
        ));
    }
    // Highest term wins; among equals, the first in member order.
    let leader = reachable
        .iter()
        .filter(|n| n.leader.is_some())
        .fold(None::<&&NodeRow>, |best, n| match best {
            Some(b) if b.term >= n.term => Some(b),
            _ => Some(n),
        })
        .and_then(|n| n.leader.clone());
    let views: BTreeSet<&Option<String>> = reachable.iter().map(|n| &n.leader).collect();
    let disagree = views.len() > 1;
    if disagree {
        let said: Vec<String> = reachable
            .iter()
            .map(|n| {
                format!(
                    "{} says {} (term {})",
                    n.endpoint,
                    n.leader.as_deref().unwrap_or("none"),
                    render::opt(&n.term)
                )
            })
            .collect();
        problems.push(format!(
            "members disagree on the leader: {}",
            said.join(", ")
        ));
    }
    let majority_down = down * 2 > nodes.len();
    if majority_down {
        problems.push(format!(
            "{down} of {} members unreachable: no quorum",
            nodes.len()
        ));
    }
    if leader.is_none() && !reachable.is_empty() {
        problems.push("no reachable member knows a leader".into());
    }
    let health = if leader.is_none() || majority_down {
        Health::Unavailable
    } else if down > 0 || disagree {
        Health::Degraded
    } else {
        Health::Healthy
    };
    (leader, health, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn up(ep: &str, term: u64, leader: Option<&str>) -> NodeRow {
        NodeRow {
            endpoint: ep.into(),
            reachable: true,
            role: Some(if leader == Some(ep) {
                Role::Leader
            } else {
                Role::Follower
            }),
            term: Some(term),
            leader: leader.map(str::to_string),
            commit_index: Some(1),
            applied_index: Some(1),
            datums: Some(0),
            error: None,
            last_log_index: Some(1),
            lag: None,
            last_contact_ms: None,
            id: Some(ep.into()),
            followers: Vec::new(),
        }
    }

    fn down(ep: &str) -> NodeRow {
        NodeRow {
            endpoint: ep.into(),
            reachable: false,
            role: None,
            term: None,
            leader: None,
            commit_index: None,
            applied_index: None,
            datums: None,
            error: Some("connection refused".into()),
            last_log_index: None,
            lag: None,
            last_contact_ms: None,
            id: None,
            followers: Vec::new(),
        }
    }

    #[test]
    fn all_agree_is_healthy() {
        let nodes = [
            up("a", 2, Some("a")),
            up("b", 2, Some("a")),
            up("c", 2, Some("a")),
        ];
        let (leader, health, problems) = judge(&nodes);
        assert_eq!(leader.as_deref(), Some("a"));
        assert_eq!(health, Health::Healthy);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(health.exit(), Exit::Ok);
    }

    #[test]
    fn one_member_down_is_degraded_and_named() {
        let nodes = [up("a", 2, Some("a")), up("b", 2, Some("a")), down("c")];
        let (leader, health, problems) = judge(&nodes);
        assert_eq!(leader.as_deref(), Some("a"));
        assert_eq!(health, Health::Degraded);
        assert_eq!(health.exit(), Exit::Degraded);
        assert!(
            problems.iter().any(|p| p.starts_with("c is unreachable")),
            "{problems:?}"
        );
    }

    #[test]
    fn half_down_of_two_is_degraded_not_unavailable() {
        let (_, health, _) = judge(&[up("a", 1, Some("a")), down("b")]);
        assert_eq!(health, Health::Degraded);
    }

    #[test]
    fn majority_down_is_unavailable_even_with_a_stale_leader_view() {
        let nodes = [up("a", 2, Some("b")), down("b"), down("c")];
        let (_, health, problems) = judge(&nodes);
        assert_eq!(health, Health::Unavailable);
        assert_eq!(health.exit(), Exit::Unavailable);
        assert!(
            problems.iter().any(|p| p.contains("no quorum")),
            "{problems:?}"
        );
    }

    #[test]
    fn no_leader_anywhere_is_unavailable() {
        let nodes = [up("a", 3, None), up("b", 3, None), up("c", 3, None)];
        let (leader, health, problems) = judge(&nodes);
        assert_eq!(leader, None);
        assert_eq!(health, Health::Unavailable);
        assert!(
            problems.iter().any(|p| p.contains("knows a leader")),
            "{problems:?}"
        );
    }

    #[test]
    fn disagreement_is_degraded_and_the_highest_term_wins() {
        let nodes = [
            up("a", 2, Some("a")),
            up("b", 3, Some("b")),
            up("c", 3, Some("b")),
        ];
        let (leader, health, problems) = judge(&nodes);
        assert_eq!(leader.as_deref(), Some("b"));
        assert_eq!(health, Health::Degraded);
        assert!(
            problems.iter().any(|p| p.contains("disagree")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_member_without_a_leader_is_a_disagreement() {
        let nodes = [
            up("a", 2, Some("a")),
            up("b", 2, Some("a")),
            up("c", 2, None),
        ];
        let (_, health, _) = judge(&nodes);
        assert_eq!(health, Health::Degraded);
    }

    #[test]
    fn nothing_reachable_is_unavailable() {
        let (leader, health, problems) = judge(&[down("a")]);
        assert_eq!(leader, None);
        assert_eq!(health, Health::Unavailable);
        assert!(!problems.is_empty());
    }

    #[test]
    fn unreachable_rows_keep_every_contract_field() {
        let v = serde_json::to_value(down("a")).unwrap();
        for f in [
            "endpoint",
            "reachable",
            "role",
            "term",
            "leader",
            "commit_index",
            "applied_index",
            "datums",
            "error",
        ] {
            assert!(v.get(f).is_some(), "missing {f} in {v}");
        }
        assert_eq!(v["reachable"], false);
        assert_eq!(v["error"], "connection refused");
    }

    #[test]
    fn lag_and_last_contact_come_from_the_leader() {
        let mut leader = up("a", 2, Some("a"));
        leader.commit_index = Some(10);
        leader.applied_index = Some(10);
        leader.followers = vec![
            FollowerStatus {
                peer: "b".into(),
                match_index: 9,
                next_index: 10,
                last_contact_ms: Some(12),
                voter: true,
            },
            FollowerStatus {
                peer: "c".into(),
                match_index: 4,
                next_index: 5,
                last_contact_ms: Some(7000),
                voter: true,
            },
        ];
        let mut b = up("b", 2, Some("a"));
        b.applied_index = Some(7);
        let mut nodes = [leader, b, down("c")];
        add_leader_view(&mut nodes, Some("a"));
        assert_eq!((nodes[0].lag, nodes[0].last_contact_ms), (Some(0), None));
        assert_eq!(
            (nodes[1].lag, nodes[1].last_contact_ms),
            (Some(3), Some(12))
        );
        // A dead member: how far its log is behind, as the leader last knew it.
        assert_eq!(
            (nodes[2].lag, nodes[2].last_contact_ms),
            (Some(6), Some(7000))
        );

        // Without the leader's row there is nothing to compare with.
        let mut nodes = [up("b", 2, Some("a")), down("a")];
        add_leader_view(&mut nodes, Some("a"));
        assert!(nodes
            .iter()
            .all(|n| n.lag.is_none() && n.last_contact_ms.is_none()));
    }

    /// An address nothing listens on (bound, then released).
    fn dead_addr() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    /// Answers one request with `body` as JSON, then closes.
    fn serve_status_once(body: String) -> (String, thread::JoinHandle<()>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(reply.as_bytes()).unwrap();
        });
        (addr, h)
    }

    #[test]
    fn dead_members_are_listed_in_order() {
        let dead = [dead_addr(), dead_addr()];
        let client = Client::new(dead.to_vec(), std::time::Duration::from_secs(2));
        let report = gather(&client);
        let eps: Vec<&str> = report.nodes.iter().map(|n| n.endpoint.as_str()).collect();
        assert_eq!(eps, [dead[0].as_str(), dead[1].as_str()]);
        assert!(report
            .nodes
            .iter()
            .all(|n| !n.reachable && n.error.is_some()));
        assert_eq!(report.health, Health::Unavailable);
    }

    #[test]
    fn peers_reported_by_a_member_are_queried_too() {
        let peer = dead_addr();
        // Reachable under an alias: its own `endpoint` must stop it from being queried twice.
        let self_name = "node-a:8848".to_string();
        let body = serde_json::json!({
            "endpoint": self_name, "role": "LEADER", "term": 2, "leader": self_name,
            "commit_index": 5, "applied_index": 5, "datums": 1, "peers": [self_name, peer],
        })
        .to_string();
        let (addr, h) = serve_status_once(body);
        let client = Client::new(vec![addr.clone()], std::time::Duration::from_secs(2));
        let report = gather(&client);
        h.join().unwrap();
        let eps: Vec<&str> = report.nodes.iter().map(|n| n.endpoint.as_str()).collect();
        assert_eq!(eps, [addr.as_str(), peer.as_str()]);
        assert!(report.nodes[0].reachable);
        assert!(!report.nodes[1].reachable);
        assert_eq!(report.leader.as_deref(), Some("node-a:8848"));
        assert_eq!(report.health, Health::Degraded);
    }

    #[test]
    fn a_role_this_build_does_not_know_is_shown_as_the_member_sent_it() {
        // A newer member may report a role we have no name for: status still works.
        let body = serde_json::json!({"endpoint": "n1:1", "role": "LEARNER", "term": 3,
                                      "leader": "n1:1"})
        .to_string();
        let (addr, h) = serve_status_once(body.clone());
        let client = Client::new(vec![addr], std::time::Duration::from_secs(2));
        let mut out = Vec::new();
        let exit = run(&client, Output::Text, &mut out).unwrap();
        h.join().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\tLEARNER\tterm=3\t"), "{text}");
        assert_eq!(exit, Exit::Ok);

        let (addr, h) = serve_status_once(body);
        let report = gather(&Client::new(vec![addr], std::time::Duration::from_secs(2)));
        h.join().unwrap();
        let v = serde_json::to_value(&report.nodes[0]).unwrap();
        assert_eq!(
            (&v["reachable"], &v["role"]),
            (&json!(true), &json!("LEARNER"))
        );
    }
}
