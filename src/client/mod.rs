//! Typed, blocking HTTP client of a node's `/v1` API (docs/http-api.md), shared by `nacosctl`
//! and the end-to-end tests.
//!
//! It owns endpoint failover, the time bound of every call, and exactly-once writes: each
//! write carries a request id and is retried with it until the deadline. It does not print,
//! or decide exit policy beyond [`ClientError::exit_code`].

mod auth;
mod classify;
mod members;
mod naming;
mod session_pool;
mod watch;
use classify::{classify_status, classify_transport, combine, is_timeout, timed_out};
pub use session_pool::{Lease, SessionPool};
pub use watch::WatchStream;

use std::io;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;

// The answers, under the names callers use (they live in `wire`, shared with the server).
use crate::wire::api::PublishRequest;
pub use crate::wire::api::{
    DeleteResult, Digest, FollowerStatus, GetResult, Health, LeaderInfo, ListEntry, PutResult,
    Status, Transfer, WatchEvent, WatchEventKind, WatchLine,
};
use crate::wire::nacos::{NacosLeader, NacosListeners};
pub use crate::wire::nacos::{NacosState, RaftPeer};
pub use crate::wire::{ErrorCode, Role};

/// What a watch follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchTarget<'a> {
    Key(&'a str),
    /// Every key starting with this (every key when empty).
    Prefix(&'a str),
}

/// Why a request could not be served. All of these map to exit code 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnavailableKind {
    /// 503 `no_leader`: no leader was elected within the node's publish timeout.
    NoLeader,
    /// 503 `not_leader`: leadership moved while the request was being forwarded.
    NotLeader,
    /// Any other 503.
    ServiceUnavailable,
    /// 504 `timeout`: the node did not see the write confirmed in time; it may still commit.
    WriteTimeout,
    /// Connection refused or reset before the request was sent, or the name did not
    /// resolve: the request reached no node.
    Unreachable,
    /// No answer within the client's timeout. For a write the outcome is unknown.
    TimedOut,
    /// The connection broke after the request was sent (the node died or restarted). For a
    /// write the outcome is unknown: it may have been applied.
    ConnectionLost,
}

/// Every failure of a [`Client`] call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// 404 `not_found`: the key does not exist.
    #[error("key not found: {key}")]
    NotFound { key: String },

    /// 412 `precondition_failed`: a compare-and-set whose condition did not hold; nothing
    /// changed. `current` is the key's timestamp (0: absent).
    #[error("{message}")]
    PreconditionFailed {
        key: String,
        current: u64,
        message: String,
    },

    /// No node could serve the request. `endpoint` is the one whose answer (or silence) is
    /// reported; `message` is the node's message or the transport failure, and names any
    /// other endpoint that was tried.
    #[error("{endpoint}: {message}")]
    Unavailable {
        endpoint: String,
        kind: UnavailableKind,
        message: String,
        /// The leader named by a 503 `not_leader`, if any.
        leader: Option<String>,
    },

    /// Any other HTTP error answer, with the node's `error` code and message.
    #[error("{endpoint}: {status} {error}: {message}")]
    Server {
        endpoint: String,
        status: u16,
        /// `ErrorCode::Unknown("unknown")` when the answer had no code.
        error: ErrorCode,
        message: String,
    },

    /// The node answered something that is not the documented JSON.
    #[error("{endpoint}: unexpected answer: {message}")]
    BadResponse { endpoint: String, message: String },

    /// An endpoint that is not a usable address, or no endpoint at all.
    #[error("invalid endpoint {endpoint:?}: {message}")]
    InvalidEndpoint { endpoint: String, message: String },
}

impl ClientError {
    /// A `410 compacted` answer: the node no longer keeps the history asked for (watch
    /// events or digests from that index). Retrying the same request cannot succeed.
    pub fn is_compacted(&self) -> bool {
        matches!(self, ClientError::Server { status: 410, .. })
    }

    /// A refusal by access control: no valid token (401), or a permission the user lacks
    /// (403); nacosctl exits 7.
    pub fn is_denied(&self) -> bool {
        matches!(
            self,
            ClientError::Server {
                error: ErrorCode::Unauthenticated | ErrorCode::PermissionDenied,
                ..
            }
        )
    }

    /// The `nacosctl` exit code for this error (DESIGN §4): 3 not found, 4 unavailable,
    /// 6 precondition failed, 7 refused by access control, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::NotFound { .. } => 3,
            ClientError::PreconditionFailed { .. } => 6,
            ClientError::Unavailable { .. } => 4,
            e if e.is_denied() => 7,
            ClientError::Server { .. }
            | ClientError::BadResponse { .. }
            | ClientError::InvalidEndpoint { .. } => 1,
        }
    }
}

/// One request, before an endpoint is chosen.
struct Req<'a> {
    method: &'static str,
    path: &'static str,
    query: Vec<(&'static str, &'a str)>,
    body: Option<Value>,
    /// Safe to send again to another endpoint after the first may have received it: reads,
    /// and writes that carry a request id (the cluster applies one id once).
    idempotent: bool,
    /// A write's `X-Request-Id`: it is sent again, with the same id, after a lost
    /// connection or a `504`, on any member, until the deadline.
    request_id: Option<String>,
    /// The key, to name it in [`ClientError::NotFound`].
    key: Option<&'a str>,
}

impl Req<'_> {
    /// Sent again after a lost connection or a `504`, on any member, until the deadline:
    /// writes with a request id (applied once), and imports (applying one twice changes
    /// nothing: a datum is set only over an older timestamp).
    fn resent(&self) -> bool {
        self.request_id.is_some() || self.path == IMPORT_PATH
    }
}

const IMPORT_PATH: &str = "/v1/import";

/// What one attempt at one endpoint ended with.
enum Attempt<T> {
    Done(T),
    /// Final: report it without trying another endpoint.
    Fail(ClientError),
    /// The request was not served here and may be tried at the next endpoint.
    Next(ClientError),
}

/// A blocking client over a list of endpoints (`HOST:PORT` or `http://HOST:PORT`).
///
/// Every call finishes within the timeout given to [`Client::new`], whatever the number of
/// endpoints: they share one deadline.
#[derive(Debug, Clone)]
pub struct Client {
    endpoints: Vec<String>,
    timeout: Duration,
    /// Connects within the request's own deadline.
    agent: ureq::Agent,
    /// Connects within `connect_cap`, so an address that silently drops packets cannot
    /// use up the whole deadline while other endpoints are left to try.
    capped: ureq::Agent,
    /// The same two without pooled connections, for deletes. ureq sends a bodiless DELETE
    /// again on a fresh connection when a pooled one closes before the answer; if that
    /// second connection is refused, the error hides that the first attempt was delivered,
    /// and a delete that may have been applied would be reported as not sent.
    unpooled: ureq::Agent,
    unpooled_capped: ureq::Agent,
    /// Request-id sessions for writes not in flight: a call takes one (or makes one), sends
    /// its write under the session's next seq, and gives it back. So each session has at
    /// most one write outstanding, as the cluster's session table expects, however many
    /// threads share this client.
    sessions: std::sync::Arc<SessionPool>,
    connect_cap: Duration,
    /// The endpoint that answered last: calls start there. After one `503 shutting_down`
    /// (or a refused connection) a client stops going to that member first, which matters
    /// in a rolling restart: a member that keeps receiving new connections while it stops
    /// cannot close its listener without resetting one of them.
    pinned: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The access-control token every request carries, once logged in (`auth`).
    token: std::sync::Arc<std::sync::RwLock<Option<String>>>,
    /// For `https://` endpoints; watches build their own agent with it.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Client {
    /// A client that tries `endpoints` in order, each call bounded by `timeout`.
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Client {
        Client::with_tls(endpoints, timeout, None)
    }

    /// The same, with `tls` for `https://` endpoints (which CA to trust, and a client
    /// certificate if the members ask for one).
    pub fn with_tls(
        endpoints: Vec<String>,
        timeout: Duration,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Client {
        let n = endpoints.len().max(1) as u32;
        let connect_cap = (timeout / n).max(Duration::from_millis(1));
        let builder = || match &tls {
            Some(t) => ureq::AgentBuilder::new().tls_config(t.clone()),
            None => ureq::AgentBuilder::new(),
        };
        // No `timeout_connect` here: ureq then bounds the connect by the request deadline,
        // which is what keeps a call within `timeout`.
        let agent = builder().build();
        let capped = builder().timeout_connect(connect_cap).build();
        let unpooled = builder().max_idle_connections(0).build();
        let unpooled_capped = builder()
            .max_idle_connections(0)
            .timeout_connect(connect_cap)
            .build();
        Client {
            endpoints,
            timeout,
            agent,
            capped,
            unpooled,
            unpooled_capped,
            sessions: Default::default(),
            connect_cap,
            pinned: Default::default(),
            token: Default::default(),
            tls,
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The same client (TLS, token, sessions) with another time bound per call.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        let c = Client::with_tls(self.endpoints.clone(), timeout, self.tls.clone());
        Client {
            token: self.token.clone(),
            sessions: self.sessions.clone(),
            ..c
        }
    }

    /// The base URL of an endpoint. A bare member address (as members name each other,
    /// in `peers` or a `leader` field) is reached with the scheme this client's endpoints
    /// use: a TLS cluster's members all speak TLS.
    fn base(&self, endpoint: &str) -> String {
        let tls = self.tls.is_some() && self.endpoints.iter().any(|e| e.starts_with("https://"));
        base_url_with(endpoint, if tls { "https" } else { "http" })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Publishes `value` under `key` (`POST /v1/datum`). Answers once the write is committed
    /// and applied. The write carries a request id (`X-Request-Id`): after a lost
    /// connection or a `504` it is sent again with the same id, to any member, until the
    /// deadline, and the cluster applies it once and answers a repeat as the first time.
    /// Only when no member confirmed it in time is the outcome unknown
    /// ([`UnavailableKind::TimedOut`] and the like, saying so).
    pub fn put(&self, key: &str, value: Value) -> Result<PutResult, ClientError> {
        self.put_if(key, value, None)
    }

    /// Like [`Client::put`], but only if the key's timestamp is `if_timestamp` (0: only if
    /// absent); else [`ClientError::PreconditionFailed`] with the current one.
    pub fn put_if(
        &self,
        key: &str,
        value: Value,
        if_timestamp: Option<u64>,
    ) -> Result<PutResult, ClientError> {
        let body = serde_json::to_value(PublishRequest {
            key: key.to_string(),
            value,
            if_timestamp,
        })
        .expect("a publish serialises");
        self.with_request_id(|id| {
            self.call(
                &Req {
                    method: "POST",
                    path: "/v1/datum",
                    query: vec![],
                    body: Some(body),
                    idempotent: true,
                    request_id: Some(id),
                    key: Some(key),
                },
                |_: &PutResult| true,
            )
        })
    }

    /// Imports datums with their own Nacos timestamps (`POST /v1/import`, on the leader):
    /// each is set unless its key holds the same or a newer timestamp. Safe to send again,
    /// so it goes round the members until the leader answers or the time is up.
    pub fn import(
        &self,
        datums: Vec<crate::raft::ImportedDatum>,
    ) -> Result<crate::wire::api::ImportResult, ClientError> {
        let body = serde_json::to_value(crate::wire::api::ImportRequest { datums })
            .expect("an import serialises");
        self.call(
            &Req {
                method: "POST",
                path: IMPORT_PATH,
                query: vec![],
                body: Some(body),
                idempotent: true,
                request_id: None,
                key: None,
            },
            |_: &crate::wire::api::ImportResult| true,
        )
    }

    /// Runs one write under a request id of its own: the next seq of a session no other
    /// call of this client is using (a session has one write outstanding at most).
    fn with_request_id<T>(&self, write: impl FnOnce(String) -> T) -> T {
        let lease = self.sessions.take();
        write(lease.id())
    }

    /// Reads `key` (`GET /v1/datum`): linearizable, or from the answering node's replica
    /// when `stale`.
    pub fn get(&self, key: &str, stale: bool) -> Result<GetResult, ClientError> {
        let mut query = vec![("key", key)];
        if stale {
            query.push(("stale", "true"));
        }
        self.call(
            &Req {
                method: "GET",
                path: "/v1/datum",
                query,
                body: None,
                idempotent: true,
                request_id: None,
                key: Some(key),
            },
            |_: &GetResult| true,
        )
    }

    /// Deletes `key` (`DELETE /v1/datum`); [`ClientError::NotFound`] if it did not exist.
    pub fn delete(&self, key: &str) -> Result<DeleteResult, ClientError> {
        self.delete_if(key, None)
    }

    /// Like [`Client::delete`], but only if the key's timestamp is `if_timestamp`.
    pub fn delete_if(
        &self,
        key: &str,
        if_timestamp: Option<u64>,
    ) -> Result<DeleteResult, ClientError> {
        let cond = if_timestamp.map(|t| t.to_string());
        let mut query = vec![("key", key)];
        if let Some(t) = &cond {
            query.push(("if_timestamp", t.as_str()));
        }
        self.with_request_id(|id| {
            self.call(
                &Req {
                    method: "DELETE",
                    path: "/v1/datum",
                    query,
                    body: None,
                    idempotent: true,
                    request_id: Some(id),
                    key: Some(key),
                },
                |_: &DeleteResult| true,
            )
        })
    }

    /// Keys starting with `prefix` (every key when it is empty), sorted by key.
    pub fn list(&self, prefix: &str, stale: bool) -> Result<Vec<ListEntry>, ClientError> {
        let mut query = vec![];
        if !prefix.is_empty() {
            query.push(("prefix", prefix));
        }
        if stale {
            query.push(("stale", "true"));
        }
        self.call(
            &Req {
                method: "GET",
                path: "/v1/datums",
                query,
                body: None,
                idempotent: true,
                request_id: None,
                key: None,
            },
            |_: &Vec<ListEntry>| true,
        )
    }

    /// The leader, as known by the first endpoint that knows one. When no endpoint that
    /// answers knows a leader, the last answer (with `leader: None`) is returned, so the
    /// caller sees the term.
    pub fn leader(&self) -> Result<LeaderInfo, ClientError> {
        self.call(
            &Req {
                method: "GET",
                path: "/v1/leader",
                query: vec![],
                body: None,
                idempotent: true,
                request_id: None,
                key: None,
            },
            |l: &LeaderInfo| l.leader.is_some(),
        )
    }

    /// `GET /v1/leader` of one endpoint, without failover.
    pub fn leader_of(&self, endpoint: &str) -> Result<LeaderInfo, ClientError> {
        self.call_one(endpoint, "/v1/leader")
    }

    /// `GET /v1/status` of the first endpoint that answers.
    pub fn status(&self) -> Result<Status, ClientError> {
        self.call(
            &Req {
                method: "GET",
                path: "/v1/status",
                query: vec![],
                body: None,
                idempotent: true,
                request_id: None,
                key: None,
            },
            |_: &Status| true,
        )
    }

    /// `GET /v1/status` of one endpoint, without failover (for `nacosctl status`, which
    /// must report each member on its own).
    pub fn status_of(&self, endpoint: &str) -> Result<Status, ClientError> {
        self.call_one(endpoint, "/v1/status")
    }

    /// `GET /v1/health` of one endpoint, without failover.
    pub fn health_of(&self, endpoint: &str) -> Result<Health, ClientError> {
        self.call_one(endpoint, "/v1/health")
    }

    /// `GET /v1/digest?index=N` of one endpoint, without failover: the member's datum-set
    /// digest right after applying `index` (the member waits until it has). A member that no
    /// longer remembers `index` answers `410 compacted` ([`ClientError::is_compacted`]); one
    /// that has not applied it within its publish timeout answers `504`.
    pub fn digest_of(&self, endpoint: &str, index: Option<u64>) -> Result<Digest, ClientError> {
        let index = index.map(|i| i.to_string());
        let query = index.as_deref().map(|i| ("index", i)).into_iter().collect();
        self.call_one_with(endpoint, "GET", "/v1/digest", query)
    }

    /// `POST /v1/transfer-leader[?to=ADDR]` to one endpoint, which must be the leader (a
    /// follower answers 503 `not_leader` naming it). Answers when the hand-over has started;
    /// poll [`Client::status_of`] of the target to see it finish.
    pub fn transfer_leader_at(
        &self,
        endpoint: &str,
        to: Option<&str>,
    ) -> Result<Transfer, ClientError> {
        let query = to.map(|t| ("to", t)).into_iter().collect();
        self.call_one_with(endpoint, "POST", "/v1/transfer-leader", query)
    }

    /// `GET /nacos/v1/ns/raft/state` of one endpoint (Nacos 1.x shape).
    pub fn nacos_state_of(&self, endpoint: &str) -> Result<NacosState, ClientError> {
        self.call_one(endpoint, "/nacos/v1/ns/raft/state")
    }

    /// `GET /nacos/v1/ns/raft/peer` of one endpoint: that member's own `RaftPeer`.
    pub fn nacos_peer_of(&self, endpoint: &str) -> Result<RaftPeer, ClientError> {
        self.call_one(endpoint, "/nacos/v1/ns/raft/peer")
    }

    /// `GET /nacos/v1/ns/raft/leader` of one endpoint, decoded: Nacos sends the leader's
    /// `RaftPeer` JSON as a *string* inside the JSON answer, and the string `"null"` when it
    /// knows no leader.
    pub fn nacos_leader_of(&self, endpoint: &str) -> Result<Option<RaftPeer>, ClientError> {
        let a: NacosLeader = self.call_one(endpoint, "/nacos/v1/ns/raft/leader")?;
        a.peer().map_err(|e| ClientError::BadResponse {
            endpoint: display_name(endpoint),
            message: format!("`leader` is not a RaftPeer JSON string or \"null\": {e}"),
        })
    }

    /// `GET /nacos/v1/ns/raft/listeners` of one endpoint: the keys listeners are registered on.
    pub fn nacos_listeners_of(&self, endpoint: &str) -> Result<Vec<String>, ClientError> {
        let a: NacosListeners = self.call_one(endpoint, "/nacos/v1/ns/raft/listeners")?;
        Ok(a.listeners)
    }

    /// Streams a backup (`GET /v1/snapshot`) from `endpoint` into `out`; returns the bytes
    /// copied. The file is checked by the caller (`store::backup::read`). Unless `stale`,
    /// the member first makes sure it holds every write acknowledged before the call.
    /// Every read of the stream is bounded by the client's timeout, not the whole stream.
    pub fn snapshot_to(
        &self,
        endpoint: &str,
        stale: bool,
        out: &mut dyn io::Write,
    ) -> Result<u64, ClientError> {
        let builder = match &self.tls {
            Some(t) => ureq::AgentBuilder::new().tls_config(t.clone()),
            None => ureq::AgentBuilder::new(),
        };
        let agent = builder
            .timeout_connect(
                self.timeout
                    .min(self.connect_cap.max(Duration::from_secs(1))),
            )
            .timeout_read(self.timeout)
            .build();
        let mut request = agent.get(&format!("{}/v1/snapshot", self.base(endpoint)));
        if stale {
            request = request.query("stale", "true");
        }
        if let Some(t) = self.bearer() {
            request = request.set("Authorization", &t);
        }
        let name = display_name(endpoint);
        let resp = match request.call() {
            Ok(resp) => resp,
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                return Err(match classify_status::<()>(name, status, &text, None) {
                    Attempt::Fail(e) | Attempt::Next(e) => e,
                    Attempt::Done(()) => unreachable!("an error status is never a success"),
                });
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(
                    match classify_transport::<()>(name, &t, self.timeout, true) {
                        Attempt::Fail(e) | Attempt::Next(e) => e,
                        Attempt::Done(()) => unreachable!("a transport error is never a success"),
                    },
                );
            }
        };
        io::copy(&mut resp.into_reader(), out).map_err(|e| ClientError::BadResponse {
            endpoint: display_name(endpoint),
            message: format!("the backup stream broke after it started: {e}"),
        })
    }

    /// Opens `GET /v1/watch` on the first endpoint that accepts it (endpoints are tried in
    /// turn, as for reads, within the client's timeout). Events with `index >= from_index`
    /// come first when it is given, then live ones.
    ///
    /// Once open, the stream never fails over: a lost connection is reported by
    /// [`WatchStream::next_line`] and the caller decides whether to resume, and from where.
    /// `silence` bounds the time without any line (the node sends `PROGRESS` every second
    /// when idle) before the connection counts as lost.
    pub fn watch(
        &self,
        target: WatchTarget,
        from_index: Option<u64>,
        silence: Duration,
    ) -> Result<WatchStream, ClientError> {
        if self.endpoints.is_empty() {
            return Err(ClientError::InvalidEndpoint {
                endpoint: String::new(),
                message: "no endpoint given".into(),
            });
        }
        let from = from_index.map(|i| i.to_string());
        let deadline = Instant::now() + self.timeout;
        let mut failures = Vec::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let connect = if i + 1 < self.endpoints.len() {
                remaining.min(self.connect_cap)
            } else {
                remaining
            };
            // No whole-request deadline (it would also cut the endless body): the connect is
            // bounded, and so is every read of the head and the body, by `silence`.
            let builder = match &self.tls {
                Some(t) => ureq::AgentBuilder::new().tls_config(t.clone()),
                None => ureq::AgentBuilder::new(),
            };
            let agent = builder
                .timeout_connect(connect)
                .timeout_read(silence)
                .build();
            let mut request = agent.get(&format!("{}/v1/watch", self.base(endpoint)));
            request = match target {
                WatchTarget::Key(k) => request.query("key", k),
                WatchTarget::Prefix(p) => request.query("prefix", p),
            };
            if let Some(f) = &from {
                request = request.query("from_index", f);
            }
            if let Some(t) = self.bearer() {
                request = request.set("Authorization", &t);
            }
            let name = display_name(endpoint);
            let attempt: Attempt<()> = match request.call() {
                Ok(resp) => {
                    return Ok(WatchStream {
                        endpoint: name,
                        reader: io::BufReader::new(resp.into_reader()),
                        silence,
                    })
                }
                Err(ureq::Error::Status(status, resp)) => {
                    let text = resp.into_string().unwrap_or_default();
                    classify_status(name, status, &text, None)
                }
                Err(ureq::Error::Transport(t)) => classify_transport(name, &t, silence, true),
            };
            match attempt {
                Attempt::Done(()) => unreachable!("only an open stream is a success"),
                Attempt::Fail(e) => return Err(e),
                Attempt::Next(e) => failures.push(e),
            }
        }
        Err(combine(failures, self.timeout))
    }

    fn call_one<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        path: &'static str,
    ) -> Result<T, ClientError> {
        self.call_one_with(endpoint, "GET", path, vec![])
    }

    fn call_one_with<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        method: &'static str,
        path: &'static str,
        query: Vec<(&'static str, &str)>,
    ) -> Result<T, ClientError> {
        let req = Req {
            method,
            path,
            query,
            body: None,
            // None of these change data: a timeout is reported as such, without the warning
            // that a write may still apply.
            idempotent: true,
            request_id: None,
            key: None,
        };
        match self.attempt(&self.agent, endpoint, &req, self.timeout) {
            Attempt::Done(v) => Ok(v),
            Attempt::Fail(e) | Attempt::Next(e) => Err(e),
        }
    }

    /// Tries the endpoints in turn within one deadline. `accept` can pass over an answer
    /// in the hope of a better one (used by [`Client::leader`]); the last passed-over
    /// answer is returned if nothing better comes.
    fn call<T: DeserializeOwned>(
        &self,
        req: &Req,
        accept: impl Fn(&T) -> bool,
    ) -> Result<T, ClientError> {
        if self.endpoints.is_empty() {
            return Err(ClientError::InvalidEndpoint {
                endpoint: String::new(),
                message: "no endpoint given".into(),
            });
        }
        let deadline = Instant::now() + self.timeout;
        let mut passed_over: Option<T> = None;
        // The latest failure of each endpoint (a write goes round them until the deadline),
        // and the first that left a write's outcome unknown.
        let mut failures: Vec<Option<ClientError>> = vec![None; self.endpoints.len()];
        let mut first_unknown: Option<ClientError> = None;
        use std::sync::atomic::Ordering;
        let n = self.endpoints.len();
        let first = self.pinned.load(Ordering::Relaxed) % n;
        // A write with a request id goes round the members until one answers or the time
        // is up; anything else makes one pass.
        let passes = if req.resent() { usize::MAX } else { 1 };
        'passes: for pass in 0..passes {
            if pass > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                // Leadership moves take a few heartbeats: do not spin meanwhile.
                std::thread::sleep(left.min(Duration::from_millis(50)));
            }
            for step in 0..n {
                let i = (first + step) % n;
                let endpoint = &self.endpoints[i];
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    break 'passes;
                }
                let others_left = step + 1 < n;
                let capped = others_left && remaining > self.connect_cap;
                let agent = match (capped, req.method == "DELETE") {
                    (false, false) => &self.agent,
                    (true, false) => &self.capped,
                    (false, true) => &self.unpooled,
                    (true, true) => &self.unpooled_capped,
                };
                match self.attempt::<T>(agent, endpoint, req, remaining) {
                    Attempt::Done(v) if accept(&v) => {
                        self.pinned.store(i, Ordering::Relaxed);
                        return Ok(v);
                    }
                    Attempt::Done(v) => passed_over = Some(v),
                    Attempt::Fail(e) => {
                        if matches!(e, ClientError::NotFound { .. }) {
                            // It answered: a live member.
                            self.pinned.store(i, Ordering::Relaxed);
                        }
                        return Err(e);
                    }
                    Attempt::Next(e) => {
                        if first_unknown.is_none() && leaves_write_unknown(&e) {
                            first_unknown = Some(e.clone());
                        }
                        failures[i] = Some(e);
                    }
                }
            }
        }
        if let Some(v) = passed_over {
            return Ok(v);
        }
        // A write asked again after an attempt that may have reached a leader stays "may
        // have been applied", whatever the later attempts said: a later 503 only says that
        // member did not take it.
        let failures: Vec<ClientError> = failures.into_iter().flatten().collect();
        let mut err = match (req.resent(), first_unknown) {
            (
                true,
                Some(ClientError::Unavailable {
                    endpoint,
                    kind,
                    message,
                    leader,
                }),
            ) => ClientError::Unavailable {
                endpoint,
                kind,
                message: format!(
                    "{message}; asked again until the deadline: {}",
                    combine(failures, self.timeout)
                ),
                leader,
            },
            _ => combine(failures, self.timeout),
        };
        if req.resent() && leaves_write_unknown(&err) {
            // Every member was asked again until the deadline: only now is the outcome
            // unknown, and only because some attempt may have reached a leader.
            if let ClientError::Unavailable { message, .. } = &mut err {
                if !message.contains("may still") {
                    message.push_str(
                        "; the write may still be applied (no member confirmed it in time): read the key before retrying",
                    );
                }
            }
        }
        Err(err)
    }

    /// One request to one endpoint, bounded by `budget`.
    fn attempt<T: DeserializeOwned>(
        &self,
        agent: &ureq::Agent,
        endpoint: &str,
        req: &Req,
        budget: Duration,
    ) -> Attempt<T> {
        let url = format!("{}{}", self.base(endpoint), req.path);
        let mut request = agent.request(req.method, &url).timeout(budget);
        for (k, v) in &req.query {
            request = request.query(k, v);
        }
        if let Some(id) = &req.request_id {
            request = request.set(crate::node::REQUEST_ID_HEADER, id);
        }
        if let Some(t) = self.bearer() {
            request = request.set("Authorization", &t);
        }
        let result = match &req.body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        let name = display_name(endpoint);
        match result {
            Ok(resp) => match resp.into_json::<T>() {
                Ok(v) => Attempt::Done(v),
                Err(e) if is_timeout(&e) => {
                    let err = timed_out(&name, budget, req.idempotent);
                    if req.idempotent {
                        Attempt::Next(err)
                    } else {
                        Attempt::Fail(err)
                    }
                }
                Err(e) => Attempt::Fail(ClientError::BadResponse {
                    endpoint: name,
                    message: format!("the body is not the documented JSON: {e}"),
                }),
            },
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                match classify_status(name, status, &text, req.key) {
                    // Not confirmed in time, and the same id may be asked again: its
                    // answer (or its first application) is then what comes back.
                    Attempt::Fail(e @ ClientError::Unavailable { .. }) if req.resent() => {
                        Attempt::Next(e)
                    }
                    other => other,
                }
            }
            Err(ureq::Error::Transport(t)) => classify_transport(name, &t, budget, req.idempotent),
        }
    }
}

/// Whether a failed attempt may have reached a leader with a write (so its outcome is
/// unknown until the same request id is answered). A connection that never opened sent
/// nothing, even when it timed out.
fn leaves_write_unknown(e: &ClientError) -> bool {
    match e {
        ClientError::Unavailable { kind, message, .. } => {
            matches!(
                kind,
                UnavailableKind::TimedOut
                    | UnavailableKind::ConnectionLost
                    | UnavailableKind::WriteTimeout
            ) && !message.starts_with(COULD_NOT_CONNECT)
        }
        _ => false,
    }
}

/// How a connection that never opened is reported (the start of its message).
pub const COULD_NOT_CONNECT: &str = "could not connect";

/// `HOST:PORT` becomes `http://HOST:PORT`; a URL keeps its scheme. No trailing slash.
#[cfg(test)]
fn base_url(endpoint: &str) -> String {
    base_url_with(endpoint, "http")
}

/// `HOST:PORT` becomes `SCHEME://HOST:PORT`; a URL keeps its own.
fn base_url_with(endpoint: &str, scheme: &str) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    if e.contains("://") {
        e.to_string()
    } else {
        format!("{scheme}://{e}")
    }
}

/// The endpoint as people write it: without `http://` or a trailing slash.
pub fn display_name(endpoint: &str) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    e.strip_prefix("http://").unwrap_or(e).to_string()
}

/// `5s`, `500ms`, `1.5s`: how durations appear in messages.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests;
