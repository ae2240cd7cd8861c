//! Forwarding client writes from a follower to the leader: the follower's side (a queue,
//! and sender threads that ship whatever queued as one `POST /v1/raft/forward`) and the
//! leader's (`peer_forward`, answering each write as the client API would have).
//!
//! Must not decide what a write means: parsing and answering are `ParsedWrite`'s, in the
//! parent module.

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use super::{refuse_stranger, ParsedWrite, Request, Response, MAX_BODY_BYTES};
use crate::error::{Error, Result};
use crate::node::{Node, PROXIED_HEADER, TOKEN_HEADER};
use crate::raft::{Command, PeerAddr};

/// What every forwarded write of this process shares: a queue of writes waiting to go to
/// the leader, the sender threads that ship whatever queued as one `POST /v1/raft/forward`
/// over keep-alive connections, and the sessions of writes that came without a request id.
/// A write per request and connection cost the follower about as much CPU as the leader,
/// and held writes through a follower to a third of the leader's rate (docs/benchmarks.md).
/// Process-wide, like a client's pool: one node runs per process.
pub(super) struct Forwarder {
    queue: std::sync::Mutex<std::collections::VecDeque<Pending>>,
    queued: std::sync::Condvar,
    agent: ureq::Agent,
    /// `https` when the cluster runs TLS.
    scheme: &'static str,
    pub(super) sessions: crate::client::SessionPool,
}

/// Batches in flight to the leader at once: while one waits for its answers, the next
/// fills. Two did better than four once peer streams made the leader faster: fewer, fuller
/// batches cost less CPU per write on both members (docs/benchmarks.md).
const FORWARD_SENDERS: usize = 2;

/// Client bodies one forwarded batch carries at most (the peer endpoint takes 64 MiB).
const MAX_FORWARD_BATCH_BODY_BYTES: usize = 16 << 20;

/// One forwarded write waiting for its batch.
struct Pending {
    leader: PeerAddr,
    token: Option<String>,
    write: crate::wire::peer::ForwardedWrite,
    deadline: Instant,
    reply: std::sync::mpsc::Sender<std::result::Result<Response, Lost>>,
}

/// Why a forwarded write has no answer.
#[derive(Debug, Clone, Copy)]
enum Lost {
    /// The connection was refused: the leader never saw it.
    NotSent,
    /// The exchange broke after sending: it may have been applied.
    MaybeSent,
}

/// The process's forwarder; the first call's node gives the peer TLS settings (one node
/// runs per process).
pub(super) fn forwarder(node: &Node) -> &'static Forwarder {
    static FORWARDER: std::sync::OnceLock<Forwarder> = std::sync::OnceLock::new();
    static STARTED: std::sync::Once = std::sync::Once::new();
    let f = FORWARDER.get_or_init(|| Forwarder {
        queue: Default::default(),
        queued: Default::default(),
        agent: node
            .config()
            .peer_agent()
            .max_idle_connections_per_host(FORWARD_SENDERS)
            .build(),
        scheme: if node.config().tls.is_some() {
            "https"
        } else {
            "http"
        },
        sessions: crate::client::SessionPool::new(),
    });
    STARTED.call_once(|| {
        for i in 0..FORWARD_SENDERS {
            crate::node::spawn_critical(&format!("forward-{i}"), move || run_forwarder(f));
        }
    });
    f
}

/// Takes every queued write for one leader (up to a batch) and sends them in one request.
fn run_forwarder(f: &'static Forwarder) {
    use crate::wire::peer::{ForwardedAnswer, MAX_FORWARD_BATCH};
    loop {
        let batch: Vec<Pending> = {
            let mut q = f.queue.lock().expect("forward queue lock");
            while q.is_empty() {
                q = f.queued.wait(q).expect("forward queue lock");
            }
            let leader = q.front().map(|p| p.leader.clone());
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut rest = std::collections::VecDeque::new();
            while let Some(p) = q.pop_front() {
                // Bounded by count and by bytes: escaped into the batch a body grows at
                // most twofold, so a batch stays well under the peer body limit; the first
                // write always goes, and a client body is at most 4 MiB.
                let fits = batch.is_empty()
                    || (batch.len() < MAX_FORWARD_BATCH
                        && bytes + p.write.body.len() <= MAX_FORWARD_BATCH_BODY_BYTES);
                if Some(&p.leader) == leader.as_ref() && fits {
                    bytes += p.write.body.len();
                    batch.push(p);
                } else {
                    rest.push_back(p);
                }
            }
            *q = rest;
            if !q.is_empty() {
                f.queued.notify_one();
            }
            batch
        };
        let now = Instant::now();
        // A write whose client gave up is not sent: it was told the outcome is unknown.
        let batch: Vec<Pending> = batch.into_iter().filter(|p| p.deadline > now).collect();
        let Some(first) = batch.first() else { continue };
        let left = batch
            .iter()
            .map(|p| p.deadline)
            .max()
            .unwrap_or(now)
            .saturating_duration_since(now);
        let url = format!("{}://{}/v1/raft/forward", f.scheme, first.leader);
        let mut r = f
            .agent
            .post(&url)
            .timeout(left)
            .set(PROXIED_HEADER, "1")
            .set("Content-Type", "application/json");
        if let Some(t) = &first.token {
            r = r.set(TOKEN_HEADER, t);
        }
        let writes: Vec<&crate::wire::peer::ForwardedWrite> =
            batch.iter().map(|p| &p.write).collect();
        let body = serde_json::to_vec(&writes).expect("forwarded writes serialise");
        let lost = |why: Lost| {
            for p in &batch {
                let _ = p.reply.send(Err(why));
            }
        };
        let resp = match r.send_bytes(&body) {
            Ok(resp) => resp,
            // The whole batch refused (a wrong secret, a draining leader): each gets that
            // answer, as a single forwarded write would have.
            Err(ureq::Error::Status(status, resp)) => {
                let mut text = String::new();
                let _ = resp
                    .into_reader()
                    .take(MAX_BODY_BYTES as u64)
                    .read_to_string(&mut text);
                for p in &batch {
                    let _ = p
                        .reply
                        .send(Ok(Response::json_bytes(status, text.clone().into_bytes())));
                }
                continue;
            }
            Err(e) if e.kind() == ureq::ErrorKind::ConnectionFailed => {
                lost(Lost::NotSent);
                continue;
            }
            Err(_) => {
                lost(Lost::MaybeSent);
                continue;
            }
        };
        let answers: Option<Vec<ForwardedAnswer>> = {
            let mut text = Vec::new();
            resp.into_reader()
                .take(crate::wire::peer::MAX_FORWARD_ANSWER_BYTES)
                .read_to_end(&mut text)
                .ok()
                .and_then(|_| serde_json::from_slice(&text).ok())
        };
        match answers {
            Some(answers) if answers.len() == batch.len() => {
                for (p, a) in batch.iter().zip(answers) {
                    let _ = p
                        .reply
                        .send(Ok(Response::json_bytes(a.status, a.body.into_bytes())));
                }
            }
            // Cut short or not what was asked: every write of it may have been applied.
            _ => lost(Lost::MaybeSent),
        }
    }
}

/// Sends a client write to the leader under request id `id`, batched with the other
/// forwarded writes, and relays its answer. A batch lost after sending (a connection the
/// leader closed, or a leader dying) is sent again with the same id until the deadline; a
/// refused connection proves the write never arrived and answers `not_leader`, so the
/// caller looks for the leader again.
pub(super) fn forward(
    node: &Node,
    leader: &PeerAddr,
    req: &Request,
    id: &str,
    deadline: Instant,
    maybe_sent: &mut bool,
) -> Result<Response> {
    let f = forwarder(node);
    let timeout = || Error::Timeout {
        waited_ms: node.config().publish_timeout_ms,
    };
    let write = crate::wire::peer::ForwardedWrite {
        method: req.method.clone(),
        query: req.query.clone(),
        // Checked as JSON before forwarding, so it is text.
        body: String::from_utf8_lossy(&req.body).into_owned(),
        request_id: id.to_string(),
        access_token: req.access_token.clone(),
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timeout());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        f.queue
            .lock()
            .expect("forward queue lock")
            .push_back(Pending {
                leader: leader.clone(),
                token: node.config().cluster_token.clone(),
                write: write.clone(),
                deadline,
                reply: tx,
            });
        f.queued.notify_one();
        match rx.recv_timeout(left) {
            Ok(Ok(resp)) => return Ok(resp),
            Ok(Err(Lost::NotSent)) => {
                // Never arrived; the caller looks for the leader again, under the same id
                // (and answers a timeout, not "not taken", if an earlier attempt may have
                // arrived).
                return Err(Error::NotLeader {
                    leader: Some(leader.0.clone()),
                });
            }
            Ok(Err(Lost::MaybeSent)) => {
                *maybe_sent = true;
                thread::sleep(Duration::from_millis(5).min(left));
            }
            Err(_) => {
                // Queued or sent, and no answer in time.
                *maybe_sent = true;
                return Err(timeout());
            }
        }
    }
}

/// `POST /v1/raft/forward`: a batch of client writes a follower forwarded. Each is checked
/// as the client API checks it, all are proposed before any answer is awaited, and each
/// gets the status and body it would have had from this member directly.
pub(super) fn peer_forward(node: &Node, req: &Request) -> Result<Response> {
    use crate::wire::peer::{ForwardedAnswer, ForwardedWrite, MAX_FORWARD_BATCH};
    if let Some(refusal) = refuse_stranger(node, req) {
        return Ok(refusal);
    }
    let writes: Vec<ForwardedWrite> = serde_json::from_slice(&req.body)
        .map_err(|e| Error::BadRequest(format!("not a batch of forwarded writes: {e}")))?;
    if writes.len() > MAX_FORWARD_BATCH {
        return Err(Error::BadRequest(format!(
            "{} forwarded writes in one batch; at most {MAX_FORWARD_BATCH}",
            writes.len()
        )));
    }
    let deadline = Instant::now() + node.publish_timeout();
    let parsed: Vec<Result<ParsedWrite>> = writes
        .into_iter()
        .map(|w| {
            if w.method != "POST" && w.method != "DELETE" {
                return Err(Error::BadRequest(format!(
                    "a forwarded write is a POST or a DELETE, not {}",
                    w.method
                )));
            }
            let request = Request {
                method: w.method,
                path: "/v1/datum".to_string(),
                query: w.query,
                proxied: true,
                token: None,
                access_token: w.access_token,
                request_id: Some(w.request_id),
                content_type: None,
                body: w.body.into_bytes(),
            };
            let mut parsed = ParsedWrite::parse(&request)?;
            // The forwarding member checked too; the leader's table may be newer (and the
            // entry is judged once more when it applies).
            let caller = super::auth::caller(node, &request, deadline)?;
            caller.check(node, crate::auth::Access::Write, &parsed.key, deadline)?;
            parsed.user = caller.user().map(str::to_string);
            Ok(parsed)
        })
        .collect();
    let commands: Vec<(String, Command)> = parsed
        .iter()
        .flatten()
        .map(|p| (p.key.clone(), p.command(p.request.clone())))
        .collect();
    let mut results = node.write_many(commands, deadline).into_iter();
    let answers: Vec<ForwardedAnswer> = parsed
        .iter()
        .map(|p| {
            let resp = match p {
                Ok(p) => p
                    .answer(results.next().unwrap_or(Err(Error::ShuttingDown)))
                    .unwrap_or_else(|e| Response::error(&e)),
                Err(e) => Response::error(e),
            };
            ForwardedAnswer {
                status: resp.status,
                body: String::from_utf8_lossy(&resp.body).into_owned(),
            }
        })
        .collect();
    Ok(Response::json(200, &answers))
}
