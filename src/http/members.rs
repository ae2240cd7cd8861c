//! Membership over HTTP: `GET /v1/members` (the configuration and, from the leader, how far
//! each member's log matches) and the changes `POST /v1/members`, `POST
//! /v1/members/promote` and `DELETE /v1/members`, made on the leader.
//!
//! Must not decide whether a change is safe: the core does, with what only it knows
//! (commits, followers' contact and progress); this layer checks the request and the
//! caller.

use std::time::{Duration, Instant};

use super::{auth, Request, Response};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::raft::{check_addr, PeerAddr, PeerChange, PeerSet, Role, CAUGHT_UP_ENTRIES};
use crate::wire::api::{MemberChange, MemberInfo, MemberRequest, Members, Status};

/// How long the leader waits for a member being added to say who it is.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// `GET /v1/members`: open, as `/v1/status` is (addresses and positions, no data).
pub(super) fn list(node: &Node) -> Response {
    let s = node.raft_status();
    let leads = s.role == Role::Leader;
    let timeout = node.config().election_timeout_ms;
    let last = s.last_log_index;
    let mut members: Vec<MemberInfo> = s
        .peers
        .members()
        .map(|p| {
            let voter = s.peers.is_voter(p);
            let auto_promote = s.peers.auto_promote.contains(p);
            if *p == s.id {
                return MemberInfo {
                    addr: p.0.clone(),
                    voter,
                    status: if leads { "leader" } else { "unknown" }.into(),
                    match_index: leads.then_some(last),
                    lag: leads.then_some(0),
                    last_contact_ms: leads.then_some(0),
                    auto_promote,
                };
            }
            match s.followers.iter().find(|f| f.peer == *p) {
                Some(f) if leads => {
                    let lag = last.saturating_sub(f.match_index);
                    let status = if f.last_contact_ms >= timeout {
                        "unreachable"
                    } else if f.state == "snapshot" {
                        "snapshot"
                    } else if f.state == "probe" || lag > CAUGHT_UP_ENTRIES {
                        "catching-up"
                    } else {
                        "ok"
                    };
                    MemberInfo {
                        addr: p.0.clone(),
                        voter,
                        status: status.into(),
                        match_index: Some(f.match_index),
                        lag: Some(lag),
                        last_contact_ms: Some(f.last_contact_ms),
                        auto_promote,
                    }
                }
                _ => MemberInfo {
                    addr: p.0.clone(),
                    voter,
                    status: "unknown".into(),
                    match_index: None,
                    lag: None,
                    last_contact_ms: None,
                    auto_promote,
                },
            }
        })
        .collect();
    // Members the leader still sends to while their removal is not committed.
    for f in s.followers.iter().filter(|f| !s.peers.contains(&f.peer)) {
        members.push(MemberInfo {
            addr: f.peer.0.clone(),
            voter: false,
            status: "removing".into(),
            match_index: Some(f.match_index),
            lag: Some(last.saturating_sub(f.match_index)),
            last_contact_ms: Some(f.last_contact_ms),
            auto_promote: false,
        });
    }
    Response::json(
        200,
        &Members {
            from: s.id.0.clone(),
            from_leader: leads,
            leader: s.leader.map(|l| l.0),
            term: s.term,
            config_index: s.peers_index,
            committed: s.peers_index <= s.commit_index,
            last_index: if leads { last } else { 0 },
            members,
        },
    )
}

/// `POST /v1/members`: adds a learner (promoted once caught up unless `learner`).
pub(super) fn add(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let body = parse(req)?;
    auth::caller(node, req, deadline)?.check_root(node, "changing the members")?;
    if node.config().cluster_token.is_none() {
        return Err(Error::Conflict(
            "this member runs without a cluster secret, so no member can join it: restart it with --cluster-token-file (every member uses the same file), then add members".into(),
        ));
    }
    auth::leading(node, deadline)?;
    let peer = PeerAddr::new(body.addr);
    let current = node.raft_status().peers;
    let warning = if current.contains(&peer) {
        None
    } else {
        probe(node, &peer, &current)?
    };
    let change = PeerChange::AddLearner {
        peer,
        promote: !body.learner,
    };
    changed(node, change, deadline, warning)
}

/// `POST /v1/members/promote`: a learner becomes a voter.
pub(super) fn promote(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let body = parse(req)?;
    auth::caller(node, req, deadline)?.check_root(node, "changing the members")?;
    auth::leading(node, deadline)?;
    let change = PeerChange::Promote {
        peer: PeerAddr::new(body.addr),
    };
    changed(node, change, deadline, None)
}

/// `DELETE /v1/members?addr=`: a voter or learner leaves (the leader too: it hands over
/// once the change commits).
pub(super) fn remove(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let addr = req.required("addr")?;
    check_addr(addr).map_err(Error::BadRequest)?;
    auth::caller(node, req, deadline)?.check_root(node, "changing the members")?;
    auth::leading(node, deadline)?;
    let change = PeerChange::Remove {
        peer: PeerAddr::new(addr),
    };
    changed(node, change, deadline, None)
}

fn parse(req: &Request) -> Result<MemberRequest> {
    let body: MemberRequest = serde_json::from_slice(&req.body).map_err(|e| {
        Error::BadRequest(format!(
            "the body must be JSON {{\"addr\": \"host:port\", \"learner\": false}}: {e}"
        ))
    })?;
    check_addr(&body.addr).map_err(Error::BadRequest)?;
    Ok(body)
}

fn changed(
    node: &Node,
    change: PeerChange,
    deadline: Instant,
    warning: Option<String>,
) -> Result<Response> {
    let (changed, peers, at) = node.change_peers(change, deadline)?;
    Ok(Response::json(
        200,
        &MemberChange {
            changed,
            voters: peers.voters.iter().map(|p| p.0.clone()).collect(),
            learners: peers.learners.iter().map(|p| p.0.clone()).collect(),
            term: at.term,
            index: at.index,
            warning,
        },
    ))
}

/// Asks the member about to be added who it is. A member of another cluster (its data dir
/// holds a configuration sharing no member with this one) is refused: adding it would make
/// it replace its data with this cluster's. One that does not answer may be added (it may
/// be started after); the answer says so.
fn probe(node: &Node, peer: &PeerAddr, current: &PeerSet) -> Result<Option<String>> {
    let cfg = node.config();
    let agent = cfg
        .peer_agent()
        .timeout(PROBE_TIMEOUT)
        .max_idle_connections(0)
        .build();
    let answer = agent
        .get(&cfg.peer_url(peer, "/v1/status"))
        .call()
        .map_err(|e| e.to_string())
        .and_then(|r| r.into_json::<Status>().map_err(|e| e.to_string()));
    match answer {
        Ok(s) if !s.peers.is_empty() && !s.peers.iter().any(|p| current.contains(&PeerAddr::new(p.as_str()))) => {
            Err(Error::Conflict(format!(
                "{peer} belongs to another cluster (its members: {}); to add it here, stop it, move its data dir aside and start it with --join",
                s.peers.join(",")
            )))
        }
        Ok(_) => Ok(None),
        Err(why) => Ok(Some(format!(
            "{peer} did not answer ({why}); it catches up once started with `nacos-node --listen {peer} --join <a member>` and the cluster secret"
        ))),
    }
}
