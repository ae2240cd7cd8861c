//! Forwarding client writes from a follower to the leader: the follower's side (a queue of
//! writes, shipped as one `POST /v1/raft/forward` per batch by the HTTP threads of the
//! writes themselves) and the leader's (`peer_forward`, answering each write as the client
//! API would have).
//!
//! Must not decide what a write means: parsing and answering are `ParsedWrite`'s, in the
//! parent module.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::{refuse_stranger, ParsedWrite, Request, Response, MAX_BODY_BYTES};
use crate::error::{Error, Result};
use crate::node::peer_call::PeerCall;
use crate::node::{Node, PROXIED_HEADER, TOKEN_HEADER};
use crate::raft::{Command, PeerAddr};

/// What every forwarded write of this process shares: the writes waiting to go to the
/// leader, the keep-alive connections their batches go over, and the sessions of writes
/// that came without a request id. A write per request and connection cost the follower
/// about as much CPU as the leader, and held writes through a follower to a third of the
/// leader's rate (docs/benchmarks.md). Process-wide, like a client's pool: one node runs
/// per process.
///
/// There are no sender threads: the HTTP thread of a queued write sends a batch itself when
/// fewer than [`FORWARD_SENDERS`] are on their way, and when its own answer is in it hands
/// that place to the thread of a write still queued. A lone write thus goes out at once,
/// without waking another thread and being woken by it. With two sender threads instead, a
/// forwarded write cost the forwarding member about 25 µs more CPU (docs/benchmarks.md).
pub(super) struct Forwarder {
    queue: Mutex<Queue>,
    /// Keep-alive connections to the leader between batches, at most [`FORWARD_SENDERS`].
    idle: Mutex<Vec<PeerCall>>,
    /// The cluster's TLS, when it runs TLS.
    tls: Option<Arc<rustls::ClientConfig>>,
    pub(super) sessions: crate::client::SessionPool,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Pending>,
    /// Places among the senders held now, at most [`FORWARD_SENDERS`]: each by the HTTP
    /// thread of one of the writes, sending a batch or about to.
    sending: usize,
}

/// Batches in flight to the leader at once: while one waits for its answers, the next
/// fills. Two did better than four (as sender threads) once peer streams made the leader
/// faster: fewer, fuller batches cost less CPU per write on both members
/// (docs/benchmarks.md).
const FORWARD_SENDERS: usize = 2;

/// Client bodies one forwarded batch carries at most (the peer endpoint takes 64 MiB).
const MAX_FORWARD_BATCH_BODY_BYTES: usize = 16 << 20;

/// One forwarded write waiting for its batch.
struct Pending {
    leader: PeerAddr,
    token: Option<String>,
    write: crate::wire::peer::ForwardedWrite,
    deadline: Instant,
    slot: Arc<Slot>,
}

/// Where one forwarded write stands; its HTTP thread waits on it.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

#[derive(Default)]
struct SlotState {
    answer: Option<std::result::Result<Response, Lost>>,
    /// A place among the senders was handed to this write's thread: it must send, or pass
    /// the place on, before it returns.
    send: bool,
    /// Its thread stopped waiting (the deadline passed): never hand it a place.
    abandoned: bool,
}

/// Why a forwarded write has no answer.
#[derive(Debug, Clone, Copy)]
enum Lost {
    /// The connection was refused: the leader never saw it.
    NotSent,
    /// The exchange broke after sending: it may have been applied.
    MaybeSent,
    /// The deadline passed, queued or on its way.
    Expired,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("forward queue lock")
}

impl Slot {
    fn answer(&self, a: std::result::Result<Response, Lost>) {
        lock(&self.state).answer = Some(a);
        self.changed.notify_one();
    }
}

/// The process's forwarder; the first call's node gives the peer TLS settings (one node
/// runs per process).
pub(super) fn forwarder(node: &Node) -> &'static Forwarder {
    static FORWARDER: std::sync::OnceLock<Forwarder> = std::sync::OnceLock::new();
    FORWARDER.get_or_init(|| Forwarder {
        queue: Default::default(),
        idle: Mutex::new(Vec::new()),
        tls: node.config().tls.as_ref().map(|t| t.client.clone()),
        sessions: crate::client::SessionPool::new(),
    })
}

/// Waits for the answer to the write of `own`, sending batches with `send` while this
/// thread holds a place among the senders (`sending`), and passing the place on before it
/// returns.
fn await_answer(
    queue: &Mutex<Queue>,
    own: &Slot,
    deadline: Instant,
    mut sending: bool,
    send: &dyn Fn(Vec<Pending>),
) -> std::result::Result<Response, Lost> {
    let _fatal = PanicIsFatal;
    loop {
        if sending {
            let batch = {
                let mut q = lock(queue);
                let mut s = lock(&own.state);
                if s.send {
                    // Handed a place while holding one (our write was still queued): one
                    // place is enough.
                    s.send = false;
                    q.sending -= 1;
                }
                if let Some(answer) = s.answer.take() {
                    drop(s);
                    hand_on(&mut q);
                    return answer;
                }
                drop(s);
                match take_batch(&mut q) {
                    Some(batch) => batch,
                    None => {
                        // Nothing left to send; ours is in another sender's batch.
                        q.sending -= 1;
                        sending = false;
                        continue;
                    }
                }
            };
            send(batch);
            continue;
        }
        let mut s = lock(&own.state);
        loop {
            if s.send {
                s.send = false;
                sending = true;
                break;
            }
            if let Some(answer) = s.answer.take() {
                return answer;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Still queued (its batch will drop it) or on its way (its answer is lost).
                s.abandoned = true;
                return Err(Lost::Expired);
            }
            s = own
                .changed
                .wait_timeout(s, left)
                .expect("forward queue lock")
                .0;
        }
    }
}

/// Queues a write; true when its thread takes a free place among the senders.
fn enqueue(queue: &Mutex<Queue>, p: Pending) -> bool {
    let mut q = lock(queue);
    q.waiting.push_back(p);
    let free = q.sending < FORWARD_SENDERS;
    if free {
        q.sending += 1;
    }
    free
}

/// Ends the process if a thread panics (a bug) while it holds or may be handed a place
/// among the senders: the place would be lost, and with both lost no forwarded write
/// would go out again while the node looked healthy. As with the node's critical threads,
/// a supervisor restarts it.
struct PanicIsFatal;

impl Drop for PanicIsFatal {
    fn drop(&mut self) {
        if thread::panicking() {
            crate::node::fatal("a thread failed while forwarding writes to the leader");
        }
    }
}

/// Gives the place of a sender that is done to the thread of the first write still
/// queued, or gives it up when none is. Writes whose threads stopped waiting are dropped
/// here, so that they do not stay queued until the next write comes.
fn hand_on(q: &mut Queue) {
    let mut handed = false;
    q.waiting.retain(|p| {
        let mut s = lock(&p.slot.state);
        if s.abandoned {
            return false;
        }
        if !handed && !s.send {
            s.send = true;
            handed = true;
            p.slot.changed.notify_one();
        }
        true
    });
    if !handed {
        q.sending -= 1;
    }
}

/// Takes the queued writes for one leader, up to a batch. Writes whose deadline passed are
/// answered as such and not sent: their clients were told the outcome is unknown.
fn take_batch(q: &mut Queue) -> Option<Vec<Pending>> {
    let now = Instant::now();
    let mut batch: Vec<Pending> = Vec::new();
    let mut bytes = 0;
    let mut rest = VecDeque::new();
    while let Some(p) = q.waiting.pop_front() {
        if p.deadline <= now {
            p.slot.answer(Err(Lost::Expired));
            continue;
        }
        // Bounded by count and by bytes: escaped into the batch a body grows at most
        // twofold, so a batch stays well under the peer body limit; the first write always
        // goes, and a client body is at most 4 MiB.
        let fits = batch.is_empty()
            || (batch.len() < crate::wire::peer::MAX_FORWARD_BATCH
                && bytes + p.write.body.len() <= MAX_FORWARD_BATCH_BODY_BYTES);
        if fits && batch.first().is_none_or(|b| b.leader == p.leader) {
            bytes += p.write.body.len();
            batch.push(p);
        } else {
            rest.push_back(p);
        }
    }
    q.waiting = rest;
    (!batch.is_empty()).then_some(batch)
}

/// Sends one batch in one request and answers each of its writes.
fn send_batch(f: &Forwarder, batch: Vec<Pending>) {
    use crate::wire::peer::{ForwardedAnswer, MAX_FORWARD_ANSWER_BYTES};
    let now = Instant::now();
    let Some(first) = batch.first() else { return };
    let deadline = batch.iter().map(|p| p.deadline).max().unwrap_or(now);
    let lost = |why: Lost| {
        for p in &batch {
            p.slot.answer(Err(why));
        }
    };
    let left = deadline.saturating_duration_since(now);
    if left.is_zero() {
        return lost(Lost::Expired);
    }
    let Some(mut call) = f.take_call(&first.leader, left) else {
        return lost(Lost::NotSent);
    };
    let mut headers = vec![(PROXIED_HEADER, "1"), ("Content-Type", "application/json")];
    if let Some(t) = &first.token {
        headers.push((TOKEN_HEADER, t));
    }
    let writes: Vec<&crate::wire::peer::ForwardedWrite> = batch.iter().map(|p| &p.write).collect();
    let body = serde_json::to_vec(&writes).expect("forwarded writes serialise");
    let max_answer = usize::try_from(MAX_FORWARD_ANSWER_BYTES).unwrap_or(usize::MAX);
    let answer = match call.post("/v1/raft/forward", &headers, &body, deadline, max_answer) {
        Ok(a) => a,
        // Sent, or partly: every write of it may have been applied.
        Err(_) => return lost(Lost::MaybeSent),
    };
    if answer.keep_alive {
        f.put_call(call);
    }
    if answer.status >= 400 {
        // The whole batch refused (a wrong secret, a draining leader): each gets that
        // answer, as a single forwarded write would have.
        let mut text = answer.body;
        text.truncate(MAX_BODY_BYTES);
        for p in &batch {
            p.slot
                .answer(Ok(Response::json_bytes(answer.status, text.clone())));
        }
        return;
    }
    match serde_json::from_slice::<Vec<ForwardedAnswer>>(&answer.body) {
        Ok(answers) if answer.status == 200 && answers.len() == batch.len() => {
            for (p, a) in batch.iter().zip(answers) {
                p.slot
                    .answer(Ok(Response::json_bytes(a.status, a.body.into_bytes())));
            }
        }
        // Cut short or not what was asked: every write of it may have been applied.
        _ => lost(Lost::MaybeSent),
    }
}

impl Forwarder {
    /// A connection to `leader` for one batch: an idle one still usable, or a new one.
    /// `None`: the leader cannot be reached, and nothing was sent.
    fn take_call(&self, leader: &PeerAddr, timeout: Duration) -> Option<PeerCall> {
        let idle = {
            let mut idle = lock(&self.idle);
            // The newest: the likeliest to be open still. `remove` keeps the rest oldest
            // first, as `put_call` evicts them.
            let at = idle.iter().rposition(|c| c.peer() == leader);
            at.map(|i| idle.remove(i))
        };
        // Probed outside the lock: a system call.
        if let Some(call) = idle.filter(PeerCall::usable) {
            return Some(call);
        }
        PeerCall::open(leader, self.tls.as_ref(), timeout).ok()
    }

    /// Keeps a connection for the next batch; the oldest goes when there are more than
    /// batches in flight at once (one to a former leader, say).
    fn put_call(&self, call: PeerCall) {
        let mut idle = lock(&self.idle);
        if idle.len() >= FORWARD_SENDERS {
            idle.remove(0);
        }
        idle.push(call);
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
        let slot = Arc::new(Slot::default());
        let send_now = enqueue(
            &f.queue,
            Pending {
                leader: leader.clone(),
                token: node.config().cluster_token.clone(),
                write: write.clone(),
                deadline,
                slot: slot.clone(),
            },
        );
        match await_answer(&f.queue, &slot, deadline, send_now, &|b| send_batch(f, b)) {
            Ok(resp) => return Ok(resp),
            Err(Lost::NotSent) => {
                // Never arrived; the caller looks for the leader again, under the same id
                // (and answers a timeout, not "not taken", if an earlier attempt may have
                // arrived).
                return Err(Error::NotLeader {
                    leader: Some(leader.0.clone()),
                });
            }
            Err(Lost::MaybeSent) => {
                *maybe_sent = true;
                thread::sleep(Duration::from_millis(5).min(left));
            }
            Err(Lost::Expired) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Many threads forwarding at once, batches for two leaders, some answered as lost,
    /// some writes out of time while queued or on their way: every write gets its own
    /// answer (or, for those out of time, a lost one), never more than two batches are on
    /// their way, and at the end no place among the senders is held and nothing is queued.
    /// A place lost or counted twice shows as threads that never finish.
    #[test]
    fn every_forwarded_write_is_answered_and_the_sender_places_come_back() {
        const THREADS: usize = 24;
        const WRITES: usize = 300;
        let queue = Arc::new(Mutex::new(Queue::default()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let batches = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (queue, in_flight, most, batches) = (
                    queue.clone(),
                    in_flight.clone(),
                    most.clone(),
                    batches.clone(),
                );
                thread::spawn(move || {
                    // xorshift: varied but repeatable per thread.
                    let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ (t as u64 + 1);
                    let mut next = move || {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x
                    };
                    for w in 0..WRITES {
                        let id = format!("{t}-{w}");
                        let short = next() % 16 == 0;
                        let deadline = Instant::now()
                            + if short {
                                Duration::from_micros(next() % 500)
                            } else {
                                Duration::from_secs(60)
                            };
                        let slot = Arc::new(Slot::default());
                        let sending = enqueue(
                            &queue,
                            Pending {
                                leader: PeerAddr::new(if next() % 8 == 0 { "b:1" } else { "a:1" }),
                                token: None,
                                write: crate::wire::peer::ForwardedWrite {
                                    method: "POST".into(),
                                    query: Vec::new(),
                                    body: String::new(),
                                    request_id: id.clone(),
                                    access_token: None,
                                },
                                deadline,
                                slot: slot.clone(),
                            },
                        );
                        let lose = next() % 10 == 0;
                        let pause = Duration::from_micros(next() % 200);
                        let send = |batch: Vec<Pending>| {
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            batches.fetch_add(1, Ordering::SeqCst);
                            assert!(batch.iter().all(|p| p.leader == batch[0].leader));
                            // The exchange with the leader.
                            thread::sleep(pause);
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            for p in batch {
                                p.slot.answer(if lose {
                                    Err(Lost::MaybeSent)
                                } else {
                                    Ok(Response::json_bytes(200, p.write.request_id.into_bytes()))
                                });
                            }
                        };
                        match await_answer(&queue, &slot, deadline, sending, &send) {
                            Ok(resp) => {
                                assert_eq!(resp.body, id.as_bytes(), "someone else's answer")
                            }
                            Err(Lost::MaybeSent) => {}
                            Err(Lost::Expired) => assert!(short, "{id} ran out of time"),
                            Err(Lost::NotSent) => panic!("never answered NotSent here"),
                        }
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !handles.iter().all(|h| h.is_finished()) {
            assert!(
                Instant::now() < deadline,
                "forwarding threads hung: a place among the senders was lost"
            );
            thread::sleep(Duration::from_millis(10));
        }
        for h in handles {
            h.join().expect("a forwarding thread panicked");
        }
        let q = lock(&queue);
        assert_eq!(q.sending, 0, "places among the senders still held");
        assert!(
            q.waiting.is_empty(),
            "{} writes left queued",
            q.waiting.len()
        );
        assert!(most.load(Ordering::SeqCst) <= FORWARD_SENDERS);
        // Batching happened: fewer batches than writes.
        assert!(batches.load(Ordering::SeqCst) < THREADS * WRITES);
    }
}
