//! `nacosctl check`: compares the datum set of every member at one log index, by digest
//! (`GET /v1/digest?index=N`), and names any member that differs from the leader or that
//! could not be checked.
//!
//! Members are found as `status` finds them. It reads only; it never repairs anything.

use std::collections::HashMap;
use std::io::Write;
use std::thread;

use anyhow::Result;
use comfy_table::Cell;
use nacos_raft::client::{Client, ClientError, Digest, UnavailableKind};
use nacos_raft::wire::Role;
use serde::Serialize;

use crate::cli::Output;
use crate::exit::Exit;
use crate::render;
use crate::status::{self, NodeRow};
use crate::ui;

/// A `410 compacted` (the index was forgotten while we asked) starts the check over with a
/// newer index, at most this many times in all.
const ATTEMPTS: usize = 3;

/// One member in `check -o json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckRow {
    pub endpoint: String,
    /// The log index the digest was taken at.
    pub index: Option<u64>,
    /// The member's datum-set digest right after applying `index`.
    pub digest: Option<String>,
    pub datums: Option<u64>,
    /// Whether the digest equals the leader's; `null` when the member could not be checked.
    pub agree: Option<bool>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every member answered, with the leader's digest.
    Consistent,
    /// A member's datums differ from the leader's at the same index.
    Divergent,
    /// A member could not be checked (down, or not caught up in time).
    Incomplete,
    /// No leader, or a majority of the members down: no index every member must reach.
    Unavailable,
}

impl Verdict {
    pub fn exit(self) -> Exit {
        match self {
            Verdict::Consistent => Exit::Ok,
            Verdict::Divergent | Verdict::Incomplete => Exit::Degraded,
            Verdict::Unavailable => Exit::Unavailable,
        }
    }
}

/// The `check -o json` document.
#[derive(Debug, Serialize)]
pub struct Report {
    pub leader: Option<String>,
    /// The index every member was compared at.
    pub index: Option<u64>,
    pub verdict: Verdict,
    pub problems: Vec<String>,
    pub nodes: Vec<CheckRow>,
}

pub fn run(client: &Client, output: Output, out: &mut dyn Write) -> Result<Exit> {
    let report = check(client);
    match output {
        Output::Json => render::json(out, &report)?,
        Output::Table => render::styled_table(
            out,
            &["ENDPOINT", "INDEX", "DIGEST", "DATUMS", "AGREE", "ERROR"],
            report
                .nodes
                .iter()
                .map(|n| {
                    vec![
                        Cell::new(&n.endpoint),
                        Cell::new(render::opt(&n.index)),
                        Cell::new(render::opt(&n.digest)),
                        Cell::new(render::opt(&n.datums)),
                        render::health_cell(agree_word(n.agree), n.agree),
                        Cell::new(n.error.clone().unwrap_or_default()),
                    ]
                })
                .collect(),
            ui::color_stdout(),
        )?,
        // `grep agree=no` finds the members that differ.
        Output::Text => {
            for n in &report.nodes {
                write!(
                    out,
                    "{}\tindex={}\tdigest={}\tdatums={}\tagree={}",
                    n.endpoint,
                    render::opt(&n.index),
                    render::opt(&n.digest),
                    render::opt(&n.datums),
                    agree_word(n.agree)
                )?;
                if let Some(e) = &n.error {
                    write!(out, "\terror={e}")?;
                }
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    for p in &report.problems {
        eprintln!("{} {}: {p}", ui::prefix(), verdict_word(report.verdict));
    }
    let hint = match report.verdict {
        Verdict::Consistent => None,
        Verdict::Divergent => Some(
            "a member whose datums differ from the leader's at the same log index had its data dir altered or damaged: stop it, move its data dir aside and start it empty, so it rebuilds from the leader's log (docs/operations.md)",
        ),
        Verdict::Incomplete => Some(
            "start or reconnect the members named above (see `nacosctl status`), then check again",
        ),
        Verdict::Unavailable => Some(
            "a check compares members at an index the leader committed; a leader needs a majority up (see `nacosctl status`)",
        ),
    };
    if let Some(h) = hint {
        eprintln!("hint: {h}");
    }
    Ok(report.verdict.exit())
}

fn agree_word(agree: Option<bool>) -> &'static str {
    match agree {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Consistent => "consistent",
        Verdict::Divergent => "divergent",
        Verdict::Incomplete => "incomplete",
        Verdict::Unavailable => "unavailable",
    }
}

/// Finds the members, picks the index, asks each member for its digest there, and judges.
///
/// The index is the highest applied index any member reports, not the lowest: a member that
/// restarted loaded a checkpoint (or its datum files) before replaying the log, so the
/// digests it would have for indexes below the newest datum it loaded would reflect that
/// datum, not the past. Members behind the chosen
/// index are waited for by the node (up to its publish timeout).
pub fn check(client: &Client) -> Report {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let members = status::gather(client);
        // No leader, or a majority down (a cut-off leader may not have stepped down yet):
        // as `status` judges it, and with its reasons.
        let leader = match &members.leader {
            Some(l) if members.health != status::Health::Unavailable => l.clone(),
            _ => {
                return Report {
                    leader: members.leader.clone(),
                    index: None,
                    verdict: Verdict::Unavailable,
                    problems: members.problems.clone(),
                    nodes: members.nodes.iter().map(unchecked_row).collect(),
                }
            }
        };
        let index = members
            .nodes
            .iter()
            .filter_map(|n| n.applied_index)
            .max()
            .unwrap_or(0);
        ui::progress(&format!(
            "comparing {} members at log index {index}",
            members.nodes.len()
        ));
        let answers = digests(client, &members.nodes, index);
        let compacted = answers
            .iter()
            .any(|a| matches!(a, Some(Err(e)) if e.is_compacted()));
        if compacted && attempt < ATTEMPTS {
            continue;
        }
        return judge(&members.nodes, &answers, &leader, index);
    }
}

/// The digest of every member that answered its status (`None` for the others), in
/// parallel, each bounded by the client's timeout.
fn digests(
    client: &Client,
    nodes: &[NodeRow],
    index: u64,
) -> Vec<Option<Result<Digest, ClientError>>> {
    thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                n.reachable
                    .then(|| s.spawn(move || client.digest_of(&n.endpoint, Some(index))))
            })
            .collect();
        handles
            .into_iter()
            .zip(nodes)
            .map(|(h, n)| {
                h.map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(ClientError::BadResponse {
                            endpoint: n.endpoint.clone(),
                            message: "the digest query panicked".into(),
                        })
                    })
                })
            })
            .collect()
    })
}

fn unchecked_row(n: &NodeRow) -> CheckRow {
    CheckRow {
        endpoint: n.endpoint.clone(),
        index: None,
        digest: None,
        datums: n.datums,
        agree: None,
        error: n.error.clone(),
    }
}

/// Compares every digest with the leader's (with the most common one if the leader's is
/// missing) and says what is wrong.
pub fn judge(
    nodes: &[NodeRow],
    answers: &[Option<Result<Digest, ClientError>>],
    leader: &str,
    index: u64,
) -> Report {
    let leader_digest = nodes
        .iter()
        .zip(answers)
        .find(|(n, _)| n.role == Some(Role::Leader) && n.id.as_deref() == Some(leader))
        .and_then(|(_, a)| a.as_ref()?.as_ref().ok())
        .map(|d| d.digest.clone());
    let reference = leader_digest.clone().or_else(|| {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for d in answers.iter().flatten().flatten() {
            *counts.entry(d.digest.as_str()).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|(d, c)| (*c, std::cmp::Reverse(*d)))
            .map(|(d, _)| d.to_string())
    });
    let against = if leader_digest.is_some() {
        "the leader's"
    } else {
        "the most common one (the leader could not be checked)"
    };
    let mut problems = Vec::new();
    let mut rows = Vec::new();
    for (n, a) in nodes.iter().zip(answers) {
        let row = match a {
            None => {
                problems.push(format!(
                    "{} could not be checked: {}",
                    n.endpoint,
                    render::opt(&n.error)
                ));
                unchecked_row(n)
            }
            Some(Err(e)) => {
                let why = digest_error(e, index);
                problems.push(format!("{} could not be checked: {why}", n.endpoint));
                CheckRow {
                    error: Some(why),
                    ..unchecked_row(n)
                }
            }
            Some(Ok(d)) => {
                let agree = reference.as_deref() == Some(d.digest.as_str());
                if !agree {
                    problems.push(format!(
                        "{} differs at log index {}: digest {}, {against} {}",
                        n.endpoint,
                        d.index,
                        d.digest,
                        render::opt(&reference)
                    ));
                }
                CheckRow {
                    endpoint: n.endpoint.clone(),
                    index: Some(d.index),
                    digest: Some(d.digest.clone()),
                    datums: Some(d.datums),
                    agree: Some(agree),
                    error: None,
                }
            }
        };
        rows.push(row);
    }
    let verdict = if rows.iter().any(|r| r.agree == Some(false)) {
        Verdict::Divergent
    } else if rows.iter().any(|r| r.agree.is_none()) {
        Verdict::Incomplete
    } else {
        Verdict::Consistent
    };
    Report {
        leader: Some(leader.to_string()),
        index: Some(index),
        verdict,
        problems,
        nodes: rows,
    }
}

fn digest_error(e: &ClientError, index: u64) -> String {
    match e {
        ClientError::Unavailable {
            kind: UnavailableKind::WriteTimeout,
            ..
        } => format!(
            "it has not applied log index {index} within its publish timeout: it is behind the leader"
        ),
        e if e.is_compacted() => {
            format!("it no longer keeps the digest at log index {index}; check again")
        }
        other => status::error_text(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(ep: &str, leads: bool) -> NodeRow {
        NodeRow {
            endpoint: ep.into(),
            reachable: true,
            role: Some(if leads { Role::Leader } else { Role::Follower }),
            term: Some(2),
            leader: Some("a".into()),
            commit_index: Some(9),
            applied_index: Some(9),
            datums: Some(3),
            error: None,
            last_log_index: Some(9),
            lag: None,
            last_contact_ms: None,
            id: Some(ep.into()),
            followers: Vec::new(),
        }
    }

    fn digest(ep: &str, d: &str) -> Option<Result<Digest, ClientError>> {
        Some(Ok(Digest {
            endpoint: ep.into(),
            index: 9,
            digest: d.into(),
            applied_index: 9,
            datums: 3,
        }))
    }

    #[test]
    fn equal_digests_are_consistent() {
        let nodes = [member("a", true), member("b", false), member("c", false)];
        let answers = [digest("a", "x"), digest("b", "x"), digest("c", "x")];
        let r = judge(&nodes, &answers, "a", 9);
        assert_eq!(r.verdict, Verdict::Consistent);
        assert_eq!(r.verdict.exit(), Exit::Ok);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(r.nodes.iter().all(|n| n.agree == Some(true)));
    }

    #[test]
    fn the_leader_is_the_reference_even_in_a_minority() {
        let nodes = [member("a", true), member("b", false), member("c", false)];
        let answers = [digest("a", "x"), digest("b", "y"), digest("c", "y")];
        let r = judge(&nodes, &answers, "a", 9);
        assert_eq!(r.verdict, Verdict::Divergent);
        assert_eq!(r.verdict.exit(), Exit::Degraded);
        let disagree: Vec<&str> = r
            .nodes
            .iter()
            .filter(|n| n.agree == Some(false))
            .map(|n| n.endpoint.as_str())
            .collect();
        assert_eq!(disagree, ["b", "c"]);
        assert!(
            r.problems[0].starts_with("b differs at log index 9"),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn without_the_leader_the_majority_is_the_reference() {
        let nodes = [member("a", true), member("b", false), member("c", false)];
        let gone = Some(Err(ClientError::Unavailable {
            endpoint: "a".into(),
            kind: UnavailableKind::Unreachable,
            message: "connection refused".into(),
            leader: None,
        }));
        let answers = [gone, digest("b", "y"), digest("c", "z")];
        let r = judge(&nodes, &answers, "a", 9);
        // b and c tie; either way one of them differs and a is unchecked.
        assert_eq!(r.verdict, Verdict::Divergent);
        assert_eq!(r.nodes[0].agree, None);
        assert!(r
            .problems
            .iter()
            .any(|p| p.contains("a could not be checked")));
    }

    #[test]
    fn an_unchecked_member_is_incomplete_and_named() {
        let mut down = member("c", false);
        down.reachable = false;
        down.error = Some("connection refused".into());
        let nodes = [member("a", true), member("b", false), down];
        let answers = [digest("a", "x"), digest("b", "x"), None];
        let r = judge(&nodes, &answers, "a", 9);
        assert_eq!(r.verdict, Verdict::Incomplete);
        assert_eq!(r.verdict.exit(), Exit::Degraded);
        assert_eq!(
            r.problems,
            ["c could not be checked: connection refused".to_string()]
        );
    }

    #[test]
    fn a_member_behind_is_reported_as_such() {
        let nodes = [member("a", true), member("b", false)];
        let late = Some(Err(ClientError::Unavailable {
            endpoint: "b".into(),
            kind: UnavailableKind::WriteTimeout,
            message: "timeout".into(),
            leader: None,
        }));
        let r = judge(&nodes, &[digest("a", "x"), late], "a", 9);
        assert_eq!(r.verdict, Verdict::Incomplete);
        assert!(
            r.problems[0].contains("behind the leader"),
            "{:?}",
            r.problems
        );
    }
}
