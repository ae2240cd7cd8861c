//! The peer API's entry: `POST /v1/raft/messages` and `/v1/raft/snapshot`, and who may
//! use them: holders of the cluster secret, and, for anything but a leader's messages,
//! members of this member's configuration.
//!
//! Must not decide anything about Raft: the core checks every message again with what it
//! knows.

use std::time::{Duration, Instant};

use super::{server, Request, Response};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::raft::PeerAddr;
use crate::wire::ErrorCode;

/// Where a member opens its stream of peer messages to another (`sender`), and the
/// protocol the connection switches to: frames of a length and a batch, as one
/// `/v1/raft/messages` body each, and nothing back. A member's answers travel on its own
/// stream, so a batch costs one write on one side and one read on the other, with no
/// answer to wait for or to send.
pub const PEER_STREAM_PATH: &str = "/v1/raft/stream";
pub const PEER_STREAM_PROTOCOL: &str = "nacos-raft-frames/1";

/// Peer traffic: only members holding the cluster secret may vote, append or read-index
/// (Nacos let anyone, reference §13.8). Each message is decoded on its own: a malformed
/// one is dropped (and logged) without the rest of its batch.
pub(super) fn peer_messages(node: &Node, req: &Request) -> Result<Response> {
    if let Some(refusal) = refuse_stranger(node, req) {
        return Ok(refusal);
    }
    match admit_batch(node, &req.body)? {
        Ok(envs) => {
            node.deliver(envs)?;
            Ok(Response::no_content())
        }
        Err(why) => Ok(Response::refusal(ErrorCode::Forbidden, why)),
    }
}

/// A stream of peer batches (`PEER_STREAM_PATH`), checked as `peer_messages` checks one:
/// the secret (and the client certificate, in `admit`) once, when it opens, and each
/// message's sender in every frame. A frame from outside the configuration is dropped and
/// logged here, since a stream carries no answers; a frame that is not a batch at all ends
/// the stream.
pub(super) fn peer_stream(node: &Node, req: &Request, upgrade: Option<&str>) -> server::Reply {
    if let Some(refusal) = refuse_stranger(node, req) {
        return server::Reply::Full(refusal);
    }
    if !upgrade.is_some_and(|u| u.trim().eq_ignore_ascii_case(PEER_STREAM_PROTOCOL)) {
        return server::Reply::Full(Response::refusal(
            ErrorCode::BadRequest,
            format!(
                "{PEER_STREAM_PATH} switches protocols: send `Connection: Upgrade` and `Upgrade: {PEER_STREAM_PROTOCOL}`, or POST batches to /v1/raft/messages"
            ),
        ));
    }
    let node = node.clone();
    server::Reply::Frames {
        protocol: PEER_STREAM_PROTOCOL,
        max_frame: super::MAX_PEER_BODY_BYTES,
        take: Box::new(move |frame| match admit_batch(&node, frame) {
            Ok(Ok(envs)) => node.deliver(envs).map_err(|_| ()),
            Ok(Err(why)) => {
                OUTSIDER_LOG.note(&format!("peer messages dropped: {why}"));
                Ok(())
            }
            Err(e) => {
                MALFORMED_PEER_LOG.note(&format!("a peer stream closed: {e}"));
                Err(())
            }
        }),
    }
}

/// Decodes a batch and checks who sent each message: what to deliver, or why the whole
/// batch is refused (`Err` inside). A body that is not a batch at all is a bad request.
fn admit_batch(
    node: &Node,
    body: &[u8],
) -> Result<std::result::Result<Vec<crate::raft::Envelope>, String>> {
    let decoded = crate::wire::peer::decode_batch(body).map_err(Error::BadRequest)?;
    let mut envs = Vec::with_capacity(decoded.len());
    let mut malformed = Vec::new();
    for d in decoded {
        match d {
            Ok(e) => envs.push(e),
            Err(why) => malformed.push(why),
        }
    }
    // One look at the status for the whole batch, without copying it (a frame arrives
    // per batch on every member).
    let refused = node.with_raft_status(|s| {
        envs.iter().find_map(|e| {
            let leads = matches!(
                e.msg,
                crate::raft::Message::Append { .. }
                    | crate::raft::Message::Heartbeat { .. }
                    | crate::raft::Message::TimeoutNow
            );
            outsider(node, s, &e.from, leads)
        })
    });
    if let Some(why) = refused {
        return Ok(Err(why));
    }
    if let Some(first) = malformed.first() {
        MALFORMED_PEER_LOG.note(&format!(
            "{} malformed peer message(s) dropped ({first})",
            malformed.len()
        ));
    }
    Ok(Ok(envs))
}

/// At most one line a second about messages dropped from a non-member's stream.
static OUTSIDER_LOG: RateLimitedLog = RateLimitedLog::new();

/// At most one line a second about malformed peer messages, however many arrive.
static MALFORMED_PEER_LOG: RateLimitedLog = RateLimitedLog::new();

/// A log line that repeats at most once a second, counting what it held back.
pub(super) struct RateLimitedLog {
    last: std::sync::Mutex<Option<(Instant, u64)>>,
}

impl RateLimitedLog {
    pub(super) const fn new() -> RateLimitedLog {
        RateLimitedLog {
            last: std::sync::Mutex::new(None),
        }
    }

    pub(super) fn note(&self, line: &str) {
        let mut last = self.last.lock().expect("log limiter lock");
        let now = Instant::now();
        match &mut *last {
            Some((at, held)) if now.duration_since(*at) < Duration::from_secs(1) => *held += 1,
            _ => {
                let held = last.map_or(0, |(_, h)| h);
                let more = if held > 0 {
                    format!(" ({held} similar lines held back)")
                } else {
                    String::new()
                };
                crate::node::log_event(&format!("warning: {line}{more}"));
                *last = Some((now, 0));
            }
        }
    }
}

/// A chunk of a snapshot from the leader (node::snapshot).
pub(super) fn peer_snapshot(node: &Node, req: &Request) -> Result<Response> {
    if let Some(refusal) = refuse_stranger(node, req) {
        return Ok(refusal);
    }
    let header = crate::node::snapshot::parse_header(&req.query)?;
    if let Some(why) = outsider(node, &node.raft_status(), &header.from, true) {
        return Ok(Response::refusal(ErrorCode::Forbidden, why));
    }
    node.receive_snapshot(header, &req.body)?;
    Ok(Response::no_content())
}

/// The 403 for peer traffic without the cluster secret, if any.
pub(super) fn refuse_stranger(node: &Node, req: &Request) -> Option<Response> {
    check_cluster_token(node, req.token.as_deref()).err()
}

/// Why a peer message comes from outside this member's cluster, if it does: anything
/// but a leader's messages (`leads`: appends, heartbeats, snapshots, hand-overs) must come
/// from a member of the configuration in force here, or the leader this member follows. A
/// leader's messages are taken from any holder of the cluster secret: a follower's
/// configuration may lag the leader's, or be empty (`--join`), and the core decides by term
/// whether the sender leads. Nothing comes from this member itself.
fn outsider(
    node: &Node,
    status: &crate::raft::Status,
    from: &PeerAddr,
    leads: bool,
) -> Option<String> {
    let me = &node.config().advertise;
    let member = status.peers.contains(from) || status.leader.as_ref() == Some(from);
    if *from != *me && (leads || member) {
        return None;
    }
    Some(format!(
        "{from} is not another member of this cluster; members: {}",
        status
            .peers
            .members()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(",")
    ))
}

/// Compares secrets in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The 403 for peer traffic without the cluster secret. A standalone member has no peers,
/// so it takes no peer traffic at all.
pub(super) fn check_cluster_token(
    node: &Node,
    given: Option<&str>,
) -> std::result::Result<(), Response> {
    let Some(expected) = &node.config().cluster_token else {
        return Err(Response::refusal(
            ErrorCode::Forbidden,
            "this member is standalone and takes no peer traffic",
        ));
    };
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
        return Ok(());
    }
    Err(Response::refusal(
        ErrorCode::Forbidden,
        "peer traffic needs the cluster secret; start every member with the same --cluster-token-file",
    ))
}
