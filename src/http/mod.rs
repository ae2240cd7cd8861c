//! HTTP: the client API (`/v1/...`), the peer API (`/v1/raft/messages`) and the Nacos 1.x
//! read endpoints (`/nacos/v1/ns/raft/...`), over the blocking server in `server`.
//!
//! Routes are functions from [`Request`] to [`Response`], so they are tested without
//! sockets (`tests`); `serve` is the thin socket glue. Every body is a `wire` type; a
//! library error gets its code, and every code its status, only in `error`.

mod auth;
mod backup;
pub mod error;
mod forward;
mod members;
mod naming;
mod peer;
pub mod server;
mod stream;
#[cfg(test)]
mod tests;
mod ui;
mod watch;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::node::{Node, Outcome, PROXIED_HEADER, REQUEST_ID_HEADER, TOKEN_HEADER};
use crate::raft::{Command, LogId, PeerAddr, RequestId};
use crate::wire::api::{
    DeleteResult, Digest, FollowerStatus, GetResult, Health, LeaderInfo, ListEntry, PublishRequest,
    PutResult, Status, Transfer,
};
use crate::wire::nacos::{NacosLeader, NacosListeners, NacosState, RaftPeer};
use crate::wire::{ErrorBody, ErrorCode, Role};
use error::{error_response, status_of};
use forward::{forward, forwarder, peer_forward};
use peer::{
    check_cluster_token, peer_messages, peer_snapshot, peer_stream, refuse_stranger, RateLimitedLog,
};
pub use peer::{PEER_STREAM_PATH, PEER_STREAM_PROTOCOL};

/// Largest request body accepted from clients (DESIGN §5: a few MiB, 413 past it).
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// Largest body on the peer endpoints: a batch of appends or a snapshot chunk may carry
/// several client-sized values.
pub const MAX_PEER_BODY_BYTES: usize = 64 << 20;

/// A request as the routes see it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub proxied: bool,
    pub token: Option<String>,
    /// `X-Request-Id`, as sent.
    pub request_id: Option<String>,
    /// The access-control token: `Authorization: Bearer <token>`, or Nacos's `accessToken`
    /// query parameter.
    pub access_token: Option<String>,
    /// `Content-Type`, as sent (the naming API takes form bodies).
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("" | "true" | "1" | "yes"))
    }

    fn required(&self, name: &str) -> Result<&str> {
        self.param(name)
            .ok_or_else(|| Error::BadRequest(format!("the query parameter `{name}` is required")))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// JSON, except for the metrics and the status page.
    pub content_type: &'static str,
}

impl Response {
    pub fn json(status: u16, v: &impl serde::Serialize) -> Response {
        Response::json_bytes(status, serde_json::to_vec(v).expect("responses serialise"))
    }

    /// A JSON body already encoded (a forwarded answer).
    pub fn json_bytes(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            body,
            content_type: "application/json",
        }
    }

    /// A body of another type.
    pub fn typed(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            body,
            content_type,
        }
    }

    pub fn error(e: &Error) -> Response {
        let (status, body) = error_response(e);
        Response::json(status, &body)
    }

    /// An error the HTTP layer decides itself (no route, forbidden, too large, ...), sent
    /// with its code's status.
    pub fn refusal(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::json(status_of(&code), &ErrorBody::new(code, message))
    }

    fn no_content() -> Response {
        Response::json_bytes(204, Vec::new())
    }
}

/// Routes one request.
pub fn route(node: &Node, req: &Request) -> Response {
    let deadline = Instant::now() + node.publish_timeout();
    let result = match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/ui/api/members") => ui::members(node, req, deadline),
        ("GET", p) if p == "/ui" || p.starts_with("/ui/") => Ok(ui::file(p).unwrap_or_else(|| {
            Response::refusal(
                ErrorCode::NoRoute,
                format!("no file {p} in the status page"),
            )
        })),
        ("GET", "/metrics") => Ok(Response::typed(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            node.metrics_text().into_bytes(),
        )),
        ("GET", "/v1/health") => match node.healthy() {
            Ok(()) => Ok(Response::json(200, &Health { ok: true })),
            Err(why) => Ok(Response::refusal(
                ErrorCode::Unhealthy,
                format!("{why}; restart this member (its log says why it is stuck)"),
            )),
        },
        ("POST", "/v1/datum") | ("DELETE", "/v1/datum") => write(node, req, deadline),
        ("POST", "/v1/import") => backup::import(node, req, deadline),
        ("GET", "/v1/datum") => get(node, req, deadline),
        ("GET", "/v1/datums") => list(node, req, deadline),
        ("GET", "/v1/status") => Ok(status(node)),
        ("GET", "/v1/digest") => digest(node, req, deadline),
        ("GET", "/v1/leader") => {
            let s = node.raft_status();
            Ok(Response::json(
                200,
                &LeaderInfo {
                    leader: s.leader.map(|l| l.0),
                    term: s.term,
                },
            ))
        }
        ("POST", "/v1/raft/messages") => peer_messages(node, req),
        ("POST", "/v1/raft/snapshot") => peer_snapshot(node, req),
        ("POST", "/v1/raft/forward") => peer_forward(node, req),
        ("POST", "/v1/transfer-leader") => transfer_leader(node, req, deadline),
        ("GET", "/v1/members") => Ok(members::list(node)),
        ("POST", "/v1/members") => members::add(node, req, deadline),
        ("POST", "/v1/members/promote") => members::promote(node, req, deadline),
        ("DELETE", "/v1/members") => members::remove(node, req, deadline),
        ("GET", "/nacos/v1/ns/raft/listeners") => (|| {
            auth::caller(node, req, deadline)?.check_root(node, "listing the listened keys")?;
            Ok(Response::json(
                200,
                &NacosListeners {
                    listeners: node.datums().notifier().keys(),
                },
            ))
        })(),
        ("GET", "/nacos/v1/ns/raft/state") => Ok(nacos_state(node)),
        ("GET", "/nacos/v1/ns/raft/datum") | ("GET", "/v1/ns/raft/datum") => {
            nacos_datums(node, req, deadline)
        }
        ("GET", "/nacos/v1/ns/raft/leader") => Ok(nacos_leader(node)),
        ("GET", "/nacos/v1/ns/raft/peer") => Ok(Response::json(200, &nacos_self_peer(node))),
        (m, p) => {
            match naming::route(node, req, deadline).or_else(|| auth::route(node, req, deadline)) {
                Some(r) => r,
                None => Ok(Response::refusal(
                    ErrorCode::NoRoute,
                    format!("no route for {m} {p}; see docs/http-api.md for the API"),
                )),
            }
        }
    };
    result.unwrap_or_else(|e| Response::error(&e))
}

/// A client write, parsed and checked as the client API takes it.
struct ParsedWrite {
    key: String,
    /// The value, for a publish; `None` for a delete.
    value: Option<serde_json::Value>,
    if_timestamp: Option<u64>,
    request: Option<RequestId>,
    /// The access-control user it is sent by, once checked (`None` while access control is
    /// off).
    user: Option<String>,
}

impl ParsedWrite {
    fn parse(req: &Request) -> Result<ParsedWrite> {
        let request = req
            .request_id
            .as_deref()
            .map(RequestId::parse)
            .transpose()
            .map_err(Error::BadRequest)?;
        if req.method == "POST" {
            let body: PublishRequest = serde_json::from_slice(&req.body).map_err(|e| {
                Error::BadRequest(format!(
                    "the body must be JSON {{\"key\": \"...\", \"value\": <any JSON>}}: {e}"
                ))
            })?;
            crate::validate_key(&body.key)?;
            crate::datum::validate_value(&body.value)?;
            Ok(ParsedWrite {
                key: body.key,
                value: Some(body.value),
                if_timestamp: body.if_timestamp,
                request,
                user: None,
            })
        } else {
            let key = req.required("key")?;
            crate::validate_key(key)?;
            Ok(ParsedWrite {
                key: key.to_string(),
                value: None,
                if_timestamp: if_timestamp(req)?,
                request,
                user: None,
            })
        }
    }

    fn command(&self, request: Option<RequestId>) -> Command {
        match &self.value {
            Some(value) => Command::Publish {
                key: self.key.clone(),
                value: value.clone(),
                if_timestamp: self.if_timestamp,
                request,
                user: self.user.clone(),
            },
            None => Command::Delete {
                key: self.key.clone(),
                if_timestamp: self.if_timestamp,
                request,
                user: self.user.clone(),
            },
        }
    }

    /// The client's answer once the write was applied (or why it was not).
    fn answer(&self, r: Result<(Outcome, LogId)>) -> Result<Response> {
        let (outcome, at) = r?;
        match outcome {
            Outcome::Published { timestamp } => Ok(Response::json(
                200,
                &PutResult {
                    key: self.key.clone(),
                    timestamp,
                    term: at.term,
                    index: at.index,
                },
            )),
            Outcome::Deleted { existed: true } => Ok(Response::json(
                200,
                &DeleteResult {
                    key: self.key.clone(),
                    term: at.term,
                    index: at.index,
                },
            )),
            Outcome::Deleted { existed: false } => Err(Error::NotFound(self.key.clone())),
            Outcome::PreconditionFailed { current } => Err(Error::PreconditionFailed {
                key: self.key.clone(),
                current,
            }),
        }
    }
}

/// Publish or delete: on the leader, propose; on a follower, forward once to the leader.
fn write(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    // Validate before forwarding, so bad input never costs the leader anything; the
    // permission is checked here too (the leader trusts a forwarding member's check).
    let mut parsed = ParsedWrite::parse(req)?;
    let caller = auth::caller(node, req, deadline)?;
    caller.check(node, crate::auth::Access::Write, &parsed.key, deadline)?;
    parsed.user = caller.user().map(str::to_string);
    // Forwarded writes are batched with others and sent again after a connection lost
    // mid-request, so each carries a request id: the client's, or one of this member's
    // sessions, kept across every attempt (also to a later leader). The leader applies it
    // once and answers a repeat as the first time.
    let mut lease = None;
    // Set once an attempt may have reached a leader: from then on only an answer proves
    // what happened, and failing to get one is a timeout, never "not taken".
    let mut maybe_sent = false;
    loop {
        let leader = node.wait_for_leader(deadline).ok_or(Error::NoLeader {
            waited_ms: node.config().publish_timeout_ms,
        })?;
        let outcome = if leader != node.config().advertise {
            if req.proxied {
                // Forwarded to us, but we do not lead (any more): never forward twice.
                return Err(Error::NotLeader {
                    leader: Some(leader.0),
                });
            }
            let id = match &req.request_id {
                Some(id) => id.clone(),
                None => lease
                    .get_or_insert_with(|| forwarder(node).sessions.take())
                    .id(),
            };
            forward(node, &leader, req, &id, deadline, &mut maybe_sent)
        } else {
            // Leading now, after forwarding under a session of ours: propose under the same
            // id, since the earlier attempt may have been applied by the old leader.
            let request = parsed
                .request
                .clone()
                .or_else(|| lease.as_ref().and_then(|l| RequestId::parse(&l.id()).ok()));
            parsed.answer(node.write_one(&parsed.key, parsed.command(request), deadline))
        };
        // The write was not taken: leadership moved between our check and the proposal,
        // or the leader we forwarded to answered 503 (handing over, stopping: every 503 of
        // ours means nothing was appended) or could not be reached. Let the election or the
        // news reach us, then go round and find the new leader, rather than fail the client.
        let not_taken = match &outcome {
            Ok(resp) => resp.status == 503,
            Err(Error::NotLeader { .. }) => !req.proxied,
            _ => false,
        };
        if not_taken && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        if not_taken && maybe_sent {
            return Err(Error::Timeout {
                waited_ms: node.config().publish_timeout_ms,
            });
        }
        return outcome;
    }
}

/// The `if_timestamp` query parameter of a conditional delete, if any.
fn if_timestamp(req: &Request) -> Result<Option<u64>> {
    req.param("if_timestamp")
        .map(|t| {
            t.parse().map_err(|_| {
                Error::BadRequest(format!("if_timestamp {t:?} is not a timestamp (a number)"))
            })
        })
        .transpose()
}

/// A linearizable read waits for the leader's commit index first, so access control is
/// judged on a table with every change committed before the read (a read right after
/// `auth enable` through any member is refused), as etcd judges its reads.
fn sync_for_read(node: &Node, req: &Request, deadline: Instant) -> Result<()> {
    if req.flag("stale") {
        return Ok(());
    }
    node.linearizable_barrier(deadline)
}

fn get(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let key = req.required("key")?;
    crate::validate_key(key)?;
    sync_for_read(node, req, deadline)?;
    auth::caller(node, req, deadline)?.check(node, crate::auth::Access::Read, key, deadline)?;
    match node.get(key, true, deadline)? {
        Some(d) => Ok(Response::json(
            200,
            &GetResult {
                key: d.key,
                value: d.value,
                timestamp: d.timestamp,
                index: d.index,
            },
        )),
        None => Err(Error::NotFound(key.to_string())),
    }
}

fn list(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let prefix = req.param("prefix").unwrap_or("");
    sync_for_read(node, req, deadline)?;
    // Only what the caller may read.
    let caller = auth::caller(node, req, deadline)?;
    let items: Vec<ListEntry> = node
        .list(prefix, true, deadline)?
        .into_iter()
        .filter(|d| caller.may_read(node, &d.key))
        .map(|d| ListEntry {
            key: d.key,
            timestamp: d.timestamp,
            index: d.index,
        })
        .collect();
    Ok(Response::json(200, &items))
}

/// The datum-set digest at an applied index (default: the latest), for `nacosctl check`.
fn digest(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    // Any user: a digest tells nothing of the datums.
    auth::caller(node, req, deadline)?;
    let state = node.datums();
    let (index, digest) = match req.param("index") {
        None => state.digest(),
        Some(i) => {
            let i: u64 = i
                .parse()
                .map_err(|_| Error::BadRequest(format!("index {i:?} is not a number")))?;
            if !state.wait_applied(i, deadline) {
                // Not `Error::Timeout`: that one says a write may still commit.
                return Ok(Response::refusal(
                    ErrorCode::Timeout,
                    format!(
                        "this member has not applied index {i} within {} ms (it is at {}); it may be behind or cut off",
                        node.config().publish_timeout_ms,
                        state.applied_index()
                    ),
                ));
            }
            match state.digest_at(i) {
                Some(d) => (i, d),
                None => {
                    return Ok(Response::refusal(
                        ErrorCode::Compacted,
                        format!(
                            "the digest at index {i} is no longer kept; ask for a recent index"
                        ),
                    ))
                }
            }
        }
    };
    Ok(Response::json(
        200,
        &Digest {
            endpoint: node.config().advertise.0.clone(),
            index,
            digest: format!("{digest:016x}"),
            applied_index: state.applied_index(),
            datums: state.len() as u64,
        },
    ))
}

fn status(node: &Node) -> Response {
    Response::json(200, &node_status(&node.status()))
}

/// `GET /v1/status`'s body for a status of this node.
fn node_status(s: &crate::node::NodeStatus) -> Status {
    let s = s.clone();
    let r = s.raft;
    let voter = r.peers.is_voter(&r.id);
    let followers = r
        .followers
        .into_iter()
        .map(|f| FollowerStatus {
            peer: f.peer.0,
            match_index: f.match_index,
            next_index: f.next_index,
            last_contact_ms: Some(f.last_contact_ms),
            voter: f.voter,
        })
        .collect();
    Status {
        endpoint: r.id.0,
        role: r.role.into(),
        term: r.term,
        leader: r.leader.map(|l| l.0),
        vote_for: r.vote_for.map(|l| l.0),
        // The core's view is published after its turn, the applied index as entries
        // apply: a reader between the two could see less committed than applied. What
        // was applied is committed, and in the log, so both are at least that.
        commit_index: r.commit_index.max(s.applied_index),
        applied_index: s.applied_index,
        last_log_index: r.last_log_index.max(s.applied_index),
        datums: s.datums as u64,
        peers: r.peers.members().map(|p| p.0.clone()).collect(),
        learners: r.peers.learners.iter().map(|p| p.0.clone()).collect(),
        voter,
        followers,
    }
}

fn transfer_leader(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    auth::caller(node, req, deadline)?.check_root(node, "moving leadership")?;
    let target = req.param("to").filter(|t| !t.is_empty()).map(PeerAddr::new);
    if let Some(t) = &target {
        let peers = node.raft_status().peers;
        if !peers.is_voter(t) || *t == node.config().advertise {
            return Err(Error::BadRequest(format!(
                "{t} is not another voting member of this cluster; voters: {}",
                peers
                    .voters
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        }
    }
    let to = node.transfer_leader(target)?;
    Ok(Response::json(
        200,
        &Transfer {
            from: node.config().advertise.0.clone(),
            to: to.0,
        },
    ))
}

/// Nacos `RaftPeer` of this node (reference §3.2).
fn nacos_self_peer(node: &Node) -> RaftPeer {
    let s = node.raft_status();
    RaftPeer {
        ip: s.id.0,
        vote_for: s.vote_for.map(|v| v.0),
        term: s.term,
        leader_due_ms: s.leader_due_ms,
        heartbeat_due_ms: s.heartbeat_due_ms,
        state: s.role.into(),
    }
}

/// Every member of the configuration in force here, voters then learners (Nacos has no
/// learners; they show as followers): only its own entry has a real vote and timers.
fn nacos_peer_list(node: &Node) -> Vec<RaftPeer> {
    let s = node.raft_status();
    s.peers
        .members()
        .map(|p| {
            if *p == s.id {
                nacos_self_peer(node)
            } else {
                let leads = s.leader.as_ref() == Some(p);
                RaftPeer {
                    ip: p.0.clone(),
                    vote_for: None,
                    term: s.term,
                    leader_due_ms: 0,
                    heartbeat_due_ms: 0,
                    state: if leads { Role::Leader } else { Role::Follower },
                }
            }
        })
        .collect()
}

/// Most keys one `GET /nacos/v1/ns/raft/datum` may ask for.
const MAX_NACOS_KEYS: usize = 10_000;

/// `GET /nacos/v1/ns/raft/datum?keys=K1,K2`: Nacos 1.x's read of several datums, one
/// element per key asked, in order, `null` for a key that does not exist. As Nacos's
/// handler does, the parameter is percent-decoded once more before it is split on `,`
/// (Nacos senders encode it twice). Linearizable unless `stale`; with access control on,
/// every key must be readable by the caller.
fn nacos_datums(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let raw = req.required("keys")?;
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Error::BadRequest("keys is not UTF-8 once percent-decoded".into()))?;
    let keys: Vec<&str> = decoded.split(',').filter(|k| !k.is_empty()).collect();
    if keys.len() > MAX_NACOS_KEYS {
        return Err(Error::BadRequest(format!(
            "{} keys asked; at most {MAX_NACOS_KEYS} per request",
            keys.len()
        )));
    }
    for k in &keys {
        crate::validate_key(k)?;
    }
    sync_for_read(node, req, deadline)?;
    let caller = auth::caller(node, req, deadline)?;
    for k in &keys {
        caller.check(node, crate::auth::Access::Read, k, deadline)?;
    }
    let datums: Vec<Option<crate::wire::nacos::NacosDatum>> = keys
        .iter()
        .map(|k| {
            node.datums()
                .get(k)
                .map(|d| crate::wire::nacos::NacosDatum {
                    key: d.key,
                    value: d.value,
                    timestamp: d.timestamp,
                })
        })
        .collect();
    Ok(Response::json(200, &datums))
}

fn nacos_state(node: &Node) -> Response {
    Response::json(
        200,
        &NacosState {
            services: node.datums().len() as u64,
            peers: nacos_peer_list(node),
        },
    )
}

fn nacos_leader(node: &Node) -> Response {
    let s = node.raft_status();
    let leader = s
        .leader
        .and_then(|l| nacos_peer_list(node).into_iter().find(|p| p.ip == l.0));
    Response::json(200, &NacosLeader::of(leader.as_ref()))
}

// ---------------------------------------------------------------- socket glue

/// A running HTTP server; dropping it does not stop it, `stop` does.
pub struct HttpServer {
    server: server::Server,
    drain: Arc<Drain>,
}

/// Graceful stop: client requests already accepted finish; new ones are answered
/// `503 shutting_down` with `Connection: close`, so clients move to another member instead
/// of losing a request to the process exit. Peer traffic keeps flowing meanwhile, since the
/// requests being finished may need it to commit.
#[derive(Default)]
struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
}

/// How long a draining server keeps answering newly arrived requests before it may stop.
const DRAIN_GRACE: Duration = Duration::from_millis(300);

/// Client requests (as opposed to peer traffic and status reads) are the ones drained.
fn is_client_request(path: &str) -> bool {
    matches!(
        path,
        "/v1/datum"
            | "/v1/datums"
            | "/v1/watch"
            | "/v1/transfer-leader"
            | "/v1/members"
            | "/v1/members/promote"
            | "/v1/import"
            | "/v1/snapshot"
    )
}

impl HttpServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> String {
        self.server.local_addr().to_string()
    }

    /// Refuses new client requests and waits (up to `within`) for those in progress.
    pub fn drain(&self, within: Duration) {
        self.drain.draining.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + within;
        // New client requests are answered 503 `shutting_down` with `Connection: close`, and
        // clients move to another member (they then start there: `Client` sticks to the
        // member that answered). Requests whose head was admitted but whose body is still
        // arriving are not counted yet: give them a moment before trusting the count.
        thread::sleep(DRAIN_GRACE.min(within));
        // Production wait on a counter the request threads decrement; short polls suffice.
        while self.drain.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        // Now refuse new connections, and give any accepted a moment to get their 503.
        // Closing the listener resets connections still in its accept queue, which is why
        // this waits until clients have had time to go elsewhere.
        self.server.close_listener();
        thread::sleep(Duration::from_millis(50));
    }

    /// Stops accepting; requests in progress finish on their own threads.
    pub fn stop(self) {
        self.server.stop();
    }
}

/// Starts serving `node` on `listen` within `limits`.
pub fn serve(node: Node, listen: &str, limits: server::Limits) -> Result<HttpServer> {
    let cannot = |e: &dyn std::fmt::Display| {
        Error::Config(format!(
            "cannot listen on {listen}: {e}; is another node already running there? choose another --listen"
        ))
    };
    let listener = std::net::TcpListener::bind(listen).map_err(|e| cannot(&e))?;
    let drain = Arc::new(Drain::default());
    let handler = Arc::new(NodeHandler {
        node,
        drain: drain.clone(),
    });
    let tls = node_tls_server(&handler.node);
    let server = server::Server::start(listener, limits, handler, tls).map_err(|e| cannot(&e))?;
    Ok(HttpServer { server, drain })
}

fn node_tls_server(node: &Node) -> Option<Arc<rustls::ServerConfig>> {
    node.config().tls.as_ref().map(|t| t.server.clone())
}

/// The routes of one node, as the server calls them.
struct NodeHandler {
    node: Node,
    drain: Arc<Drain>,
}

impl server::Handler for NodeHandler {
    fn admit(&self, head: &server::Head) -> std::result::Result<usize, Response> {
        if head.path.starts_with("/v1/raft/") {
            // Checked before a byte of the body is read: a stranger's 64 MiB costs nothing.
            check_cluster_token(&self.node, head.header(TOKEN_HEADER))?;
            let need_cert = self
                .node
                .config()
                .tls
                .as_ref()
                .is_some_and(|t| t.peers_need_certificates);
            if need_cert && !head.peer_verified {
                return Err(Response::refusal(
                    ErrorCode::Forbidden,
                    "peer traffic needs a client certificate signed by this member's --tls-client-ca; start every member with --tls-cert, --tls-key and --tls-ca",
                ));
            }
            return Ok(MAX_PEER_BODY_BYTES);
        }
        if is_client_request(&head.path) && self.drain.draining.load(Ordering::SeqCst) {
            return Err(Response::refusal(
                ErrorCode::ShuttingDown,
                "this member is stopping; send the request to another member",
            ));
        }
        Ok(MAX_BODY_BYTES)
    }

    fn handle(&self, head: server::Head, body: Vec<u8>) -> server::Reply {
        let client = is_client_request(&head.path);
        if client {
            self.drain.in_flight.fetch_add(1, Ordering::SeqCst);
        }
        let started = Instant::now();
        let route = crate::node::metrics::route_label(&head.method, &head.path);
        let reply = self.reply(head, body);
        // A stream (a watch) counts once, when it starts.
        let code = match &reply {
            server::Reply::Full(r) => r.status,
            server::Reply::Stream(_) => 200,
            server::Reply::Frames { .. } => 101,
        };
        self.node
            .metrics()
            .http(route, code, started.elapsed().as_secs_f64());
        if client {
            self.drain.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        reply
    }
}

impl NodeHandler {
    fn reply(&self, head: server::Head, body: Vec<u8>) -> server::Reply {
        let query = match parse_query(&head.query) {
            Ok(q) => q,
            Err(why) => return server::Reply::Full(Response::error(&Error::BadRequest(why))),
        };
        let upgrade = head.header("Upgrade").map(str::to_string);
        let req = Request {
            proxied: head.header(PROXIED_HEADER).is_some(),
            token: head.header(TOKEN_HEADER).map(str::to_string),
            request_id: head.header(REQUEST_ID_HEADER).map(str::to_string),
            access_token: access_token(&head, &query),
            content_type: head.header("Content-Type").map(str::to_string),
            method: head.method,
            path: head.path,
            query,
            body,
        };
        if req.method == "GET" && req.path == "/v1/snapshot" {
            return match backup::start_snapshot(&self.node, &req) {
                Ok(()) => {
                    let node = self.node.clone();
                    server::Reply::Stream(Box::new(move |out| backup::stream_snapshot(&node, out)))
                }
                Err(e) => server::Reply::Full(Response::error(&e)),
            };
        }
        if req.method == "POST" && req.path == PEER_STREAM_PATH {
            return peer_stream(&self.node, &req, upgrade.as_deref());
        }
        if req.method == "GET" && req.path == "/v1/watch" {
            return match watch::start(&self.node, &req) {
                Ok(w) => {
                    let node = self.node.clone();
                    server::Reply::Stream(Box::new(move |out| watch::stream(&node, out, w)))
                }
                Err(r) => server::Reply::Full(r),
            };
        }
        server::Reply::Full(guarded(|| route(&self.node, &req)))
    }
}

/// The token of `Authorization: Bearer <token>`, else of an `accessToken` query parameter
/// (Nacos clients send it so).
fn access_token(head: &server::Head, query: &[(String, String)]) -> Option<String> {
    head.header("Authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .or_else(|| {
            query
                .iter()
                .find(|(k, _)| k == "accessToken")
                .map(|(_, v)| v.clone())
        })
}

/// Decodes a query string strictly: a parameter that is not UTF-8 once percent-decoded is
/// refused, never replaced by U+FFFD (`%FE` and `%FF` once named the same key).
fn parse_query(query: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let decode = |s: &str| {
        let spaced = s.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| {
                format!("the query parameter {s:?} is not valid UTF-8 once percent-decoded")
            })
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// Runs a handler so that a panic in it is a 500 for that request, never a dead server
/// (the panic message still reaches stderr through the default hook).
fn guarded(handler: impl FnOnce() -> Response) -> Response {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(handler)).unwrap_or_else(|_| {
        Response::refusal(
            ErrorCode::Internal,
            "the request handler panicked; see the node log",
        )
    })
}
