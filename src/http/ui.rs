//! The status page (`GET /ui/`): static HTML, CSS and JavaScript compiled into the binary,
//! and `GET /ui/api/members`, every member's status gathered by this one (a page may only
//! read its own origin).
//!
//! Read-only: the page uses the client API (`/v1/datums`, `/v1/datum`, `/v1/watch`) and
//! `/metrics` like any client, with the token of a login when access control is on.

use std::time::Duration;

use super::{Request, Response};
use crate::error::Result;
use crate::node::Node;
use crate::wire::api::Status;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// The static files; `None` for any other path.
pub(super) fn file(path: &str) -> Option<Response> {
    let (ty, body) = match path {
        "/ui" | "/ui/" | "/ui/index.html" => ("text/html; charset=utf-8", INDEX),
        "/ui/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/ui/app.css" => ("text/css; charset=utf-8", APP_CSS),
        _ => return None,
    };
    Some(Response::typed(200, ty, body.as_bytes().to_vec()))
}

/// One member as the page shows it.
#[derive(serde::Serialize)]
struct Member {
    addr: String,
    reachable: bool,
    #[serde(flatten)]
    status: Option<Status>,
    /// Leader's view: entries behind, and ms since it was last heard from.
    lag: Option<u64>,
    last_contact_ms: Option<u64>,
    error: Option<String>,
}

/// How long the page waits for one member's status.
const MEMBER_TIMEOUT: Duration = Duration::from_millis(800);

/// `GET /ui/api/members`: every member's `/v1/status`, asked in parallel by this member
/// (over TLS when the cluster runs it), with the leader's lag and last contact of each.
/// Needs a login when access control is on, as the rest of the page's data does.
pub(super) fn members(
    node: &Node,
    req: &Request,
    deadline: std::time::Instant,
) -> Result<Response> {
    super::auth::caller(node, req, deadline)?;
    let cfg = node.config();
    let agent = cfg
        .peer_agent()
        .timeout(MEMBER_TIMEOUT)
        .max_idle_connections(0)
        .build();
    let me = cfg.advertise.clone();
    let mine = node.status();
    // The members of the configuration in force here (it changes with `member add|remove`).
    let members: Vec<crate::raft::PeerAddr> = mine.raft.peers.members().cloned().collect();
    let answers: Vec<(String, std::result::Result<Status, String>)> = std::thread::scope(|s| {
        let asks: Vec<_> = members
            .iter()
            .map(|p| {
                let agent = agent.clone();
                let url = cfg.peer_url(p, "/v1/status");
                let addr = p.0.clone();
                let local = *p == me;
                s.spawn(move || {
                    if local {
                        return (addr, Err(String::new()));
                    }
                    let got = agent
                        .get(&url)
                        .call()
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.into_json::<Status>().map_err(|e| e.to_string()));
                    (addr, got)
                })
            })
            .collect();
        asks.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (String::new(), Err("panicked".into())))
            })
            .collect()
    });
    // This member's own view, without a request to itself.
    let own = super::node_status(&mine);
    let statuses: Vec<(String, std::result::Result<Status, String>)> = answers
        .into_iter()
        .map(|(addr, r)| {
            if addr == me.0 {
                (addr, Ok(own.clone()))
            } else {
                (addr, r)
            }
        })
        .collect();
    // The leader's progress of each follower, from whichever answer is the leader's.
    let leader_view = statuses
        .iter()
        .find_map(|(_, r)| {
            r.as_ref()
                .ok()
                .filter(|s| s.role == crate::wire::Role::Leader)
        })
        .cloned();
    let members: Vec<Member> = statuses
        .into_iter()
        .map(|(addr, r)| {
            let progress = leader_view
                .as_ref()
                .and_then(|l| l.followers.iter().find(|f| f.peer == addr).map(|f| (l, f)));
            let lag = match (&r, progress) {
                (Ok(s), _) if s.role == crate::wire::Role::Leader => Some(0),
                (_, Some((l, f))) => Some(l.last_log_index.saturating_sub(f.match_index)),
                _ => None,
            };
            let last_contact_ms = progress.and_then(|(_, f)| f.last_contact_ms);
            match r {
                Ok(s) => Member {
                    addr,
                    reachable: true,
                    status: Some(s),
                    lag,
                    last_contact_ms,
                    error: None,
                },
                Err(e) => Member {
                    addr,
                    reachable: false,
                    status: None,
                    lag,
                    last_contact_ms,
                    error: Some(e),
                },
            }
        })
        .collect();
    Ok(Response::json(200, &members))
}
