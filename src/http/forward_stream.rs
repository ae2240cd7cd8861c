//! Forward streams: a follower's client writes to the leader as frames on one kept
//! connection, each written as it comes and answered as it applies. Owns both ends: the
//! follower's (`Links`: one per leader, with a thread that reads the answers) and the
//! leader's (`serve`: the connection's thread proposes each write as it reads it, and a
//! thread of the stream's writes the answers back in the order they apply).
//!
//! Batches (`forward`) make a write wait for one of two places on the way to the leader,
//! about 1 ms at 16 connections, 40% of a batch's round trip (docs/benchmarks.md); on a
//! stream nothing waits for anything but the write's own commit. A stream never resends:
//! a write whose answer is lost with the connection is sent again by `forward` under its
//! request id, which the leader applies once. Plain TCP only (a TLS connection cannot be
//! split into a reading and a writing half); over TLS, and to a member without streams,
//! writes go as batches.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::forward::{admit_forwarded, lock, Lost, PanicIsFatal, Slot};
use super::{refuse_stranger, server, ParsedWrite, Request, Response, MAX_BODY_BYTES};
use crate::error::Result;
use crate::node::peer_stream::{self, Conn, OpenError};
use crate::node::{Node, PendingWrite};
use crate::raft::PeerAddr;
use crate::wire::peer::{ForwardedWrite, StreamedAnswer, StreamedWrite};
use crate::wire::ErrorCode;

/// Where a follower opens its forward stream to the leader, and the protocol the
/// connection switches to: frames of a [`server::FRAME_HEADER_BYTES`] length and a
/// [`StreamedWrite`] one way, of a length and a [`StreamedAnswer`] the other.
pub const FORWARD_STREAM_PATH: &str = "/v1/raft/forward-stream";
pub const FORWARD_STREAM_PROTOCOL: &str = "nacos-raft-forward/1";

/// Largest frame either way: a client body is at most [`MAX_BODY_BYTES`] and at most
/// doubles when escaped into JSON (it was checked as JSON), and the query is within the
/// head limit.
const MAX_FRAME_BYTES: usize = 2 * MAX_BODY_BYTES + (128 << 10);

/// Forward streams a member serves at once; past it, a follower sends batches. One per
/// other member is all a cluster uses, with room for a reconnect overlapping the old one.
const MAX_SERVED_STREAMS: usize = 32;

/// Writes read from one stream and not answered yet; past it the stream is not read until
/// answers go out, and TCP holds the follower back.
const MAX_UNANSWERED: usize = 4096;

/// Connect, switch, and each write of a frame, within this; and the kernel drops a
/// connection whose data stays unacknowledged this long (`TCP_USER_TIMEOUT`).
const LINK_TIMEOUT: Duration = Duration::from_secs(5);

/// A follower closes a stream that carried nothing for this long (so one to a former
/// leader does not stay open), well before the leader's idle limit closes it.
const LINK_IDLE: Duration = Duration::from_secs(5);

/// After a leader refused a stream (no such protocol, TLS, no room), batches go to it for
/// this long before a stream is asked for again; after it could not be reached, for
/// [`RETRY_FAILED`].
const RETRY_UNSUPPORTED: Duration = Duration::from_secs(60);
const RETRY_FAILED: Duration = Duration::from_secs(1);

// ---- The leader's end ----

/// `POST FORWARD_STREAM_PATH`: switches to a forward stream, for holders of the cluster
/// secret (checked in `admit`, and the configuration here, as for a batch).
pub(super) fn serve(node: &Node, req: &Request, upgrade: Option<&str>) -> server::Reply {
    if let Some(refusal) = refuse_stranger(node, req) {
        return server::Reply::Full(refusal);
    }
    if !upgrade.is_some_and(|u| u.trim().eq_ignore_ascii_case(FORWARD_STREAM_PROTOCOL)) {
        return server::Reply::Full(Response::refusal(
            ErrorCode::BadRequest,
            format!(
                "{FORWARD_STREAM_PATH} switches protocols: send `Connection: Upgrade` and `Upgrade: {FORWARD_STREAM_PROTOCOL}`, or POST batches to /v1/raft/forward"
            ),
        ));
    }
    let node = node.clone();
    server::Reply::Duplex {
        protocol: FORWARD_STREAM_PROTOCOL,
        max_frame: MAX_FRAME_BYTES,
        start: Box::new(move |half| start(node, half)),
    }
}

/// Streams served now.
static SERVED: AtomicUsize = AtomicUsize::new(0);

/// One of [`MAX_SERVED_STREAMS`], held by a stream's answering thread.
struct Seat;

impl Seat {
    fn take() -> Option<Seat> {
        SERVED
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_SERVED_STREAMS).then_some(n + 1)
            })
            .ok()
            .map(|_| Seat)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        SERVED.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A write read from a stream, and what answers it.
struct Unanswered {
    seq: u64,
    deadline: Instant,
    state: Proposed,
}

enum Proposed {
    /// Refused before it was proposed (malformed, not allowed, not leading).
    Refused(Response),
    Pending(ParsedWrite, PendingWrite),
}

impl Unanswered {
    /// Its answer, if it has one yet.
    fn ready(&self) -> Option<Response> {
        match &self.state {
            Proposed::Refused(r) => Some(r.clone()),
            Proposed::Pending(parsed, pending) => pending.try_answer().map(|r| respond(parsed, r)),
        }
    }

    /// Its answer, waiting for it until its deadline.
    fn wait(&self) -> Response {
        match &self.state {
            Proposed::Refused(r) => r.clone(),
            Proposed::Pending(parsed, pending) => respond(parsed, pending.wait(self.deadline)),
        }
    }
}

fn respond(
    parsed: &ParsedWrite,
    r: Result<(crate::node::Outcome, crate::raft::LogId)>,
) -> Response {
    parsed.answer(r).unwrap_or_else(|e| Response::error(&e))
}

/// Starts a stream's answering thread; the connection's thread then takes the frames.
fn start(node: Node, half: TcpStream) -> std::result::Result<server::FrameFn, Response> {
    let Some(seat) = Seat::take() else {
        return Err(Response::refusal(
            ErrorCode::Busy,
            format!("this member serves {MAX_SERVED_STREAMS} forward streams already; send batches to /v1/raft/forward"),
        ));
    };
    let (tx, rx) = mpsc::sync_channel::<Unanswered>(MAX_UNANSWERED);
    thread::Builder::new()
        .name("forward-answers".into())
        .spawn(move || {
            let _seat = seat;
            answer_all(&rx, half);
        })
        .map_err(|e| {
            Response::refusal(
                ErrorCode::Busy,
                format!("cannot start a thread to answer forwarded writes: {e}; send batches to /v1/raft/forward"),
            )
        })?;
    Ok(Box::new(move |frame| {
        let sent: StreamedWrite = match serde_json::from_slice(frame) {
            Ok(w) => w,
            Err(e) => {
                STREAM_LOG.note(&format!(
                    "a forward stream closed: a frame that is not a forwarded write: {e}"
                ));
                return Err(());
            }
        };
        let deadline = Instant::now() + node.publish_timeout();
        tx.send(Unanswered {
            seq: sent.seq,
            deadline,
            state: propose(&node, sent.write, deadline),
        })
        .map_err(|_| ())
    }))
}

/// Checks a write as a batch's is checked and proposes it, without waiting.
fn propose(node: &Node, w: ForwardedWrite, deadline: Instant) -> Proposed {
    let parsed = match admit_forwarded(node, w, deadline) {
        Ok(p) => p,
        Err(e) => return Proposed::Refused(Response::error(&e)),
    };
    match node.write_later(parsed.key.clone(), parsed.command(parsed.request.clone())) {
        Ok(pending) => Proposed::Pending(parsed, pending),
        Err(e) => Proposed::Refused(Response::error(&e)),
    }
}

/// Writes the answers of a stream's writes as they apply, those that applied together in
/// one write, until the stream ends. Writes apply in the order they were proposed, so the
/// oldest is waited for and the rest are taken as they are found ready.
fn answer_all(rx: &mpsc::Receiver<Unanswered>, mut half: TcpStream) {
    let _fatal = PanicIsFatal;
    let mut waiting: VecDeque<Unanswered> = VecDeque::new();
    let mut out = Vec::new();
    let mut broken = false;
    loop {
        if waiting.is_empty() {
            match rx.recv() {
                Ok(u) => waiting.push_back(u),
                // The connection's thread is done with the stream.
                Err(_) => return,
            }
        }
        waiting.extend(rx.try_iter());
        while let Some(resp) = waiting.front().and_then(Unanswered::ready) {
            if let Some(u) = waiting.pop_front() {
                put_answer(&mut out, u.seq, &resp);
            }
        }
        if out.is_empty() {
            if let Some(u) = waiting.pop_front() {
                put_answer(&mut out, u.seq, &u.wait());
            }
        }
        if !broken && half.write_all(&out).is_err() {
            // The follower is gone or stuck: end the reading side too. What is still
            // waiting is answered into nothing; the follower resends it under its ids.
            broken = true;
            let _ = half.shutdown(Shutdown::Both);
        }
        out.clear();
    }
}

/// Appends one answer frame to `out`.
fn put_answer(out: &mut Vec<u8>, seq: u64, resp: &Response) {
    let answer = StreamedAnswer {
        seq,
        status: resp.status,
        body: String::from_utf8_lossy(&resp.body).into_owned(),
    };
    put_frame(out, &answer);
}

/// Appends a frame of `value`'s JSON to `out`.
fn put_frame<T: serde::Serialize>(out: &mut Vec<u8>, value: &T) {
    let at = out.len();
    out.extend_from_slice(&[0; server::FRAME_HEADER_BYTES]);
    serde_json::to_writer(&mut *out, value).expect("a frame serialises");
    let len = u32::try_from(out.len() - at - server::FRAME_HEADER_BYTES).unwrap_or(u32::MAX);
    out[at..at + server::FRAME_HEADER_BYTES].copy_from_slice(&len.to_be_bytes());
}

// ---- The follower's end ----

/// The follower's streams, one per leader address.
#[derive(Default)]
pub(super) struct Links {
    links: Mutex<HashMap<PeerAddr, LinkState>>,
}

enum LinkState {
    Open(Arc<Link>),
    /// A thread is opening it; meanwhile writes go as batches.
    Opening,
    /// Refused or unreachable: batches until then.
    NotUntil(Instant),
}

/// One open forward stream.
struct Link {
    /// The writing half; frames are written whole under the lock.
    writer: Mutex<TcpStream>,
    /// The same socket, to shut down while a sender may hold `writer`.
    socket: TcpStream,
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    next_seq: u64,
    /// The writes sent (or about to be) and not answered, by number.
    slots: HashMap<u64, Arc<Slot>>,
    /// The stream ended: nothing more is sent on it.
    broken: bool,
}

/// What became of a write offered to a stream.
pub(super) enum Sent {
    /// No stream to this leader now: send it in a batch.
    NoStream,
    /// The stream ended before the write was sent: offer it again.
    Again,
    Answer(std::result::Result<Response, Lost>),
}

impl Links {
    /// Sends `write` to `leader` on its stream and waits for the answer until `deadline`.
    pub(super) fn send(
        &'static self,
        leader: &PeerAddr,
        token: Option<&str>,
        write: &ForwardedWrite,
        deadline: Instant,
    ) -> Sent {
        match self.link(leader, token) {
            Some(link) => link.send(write, deadline),
            None => Sent::NoStream,
        }
    }

    /// The open stream to `leader`, opening one if none is and no other thread is.
    fn link(&'static self, leader: &PeerAddr, token: Option<&str>) -> Option<Arc<Link>> {
        let now = Instant::now();
        {
            let mut links = lock(&self.links);
            match links.get(leader) {
                Some(LinkState::Open(l)) if !lock(&l.waiting).broken => return Some(l.clone()),
                Some(LinkState::Opening) => return None,
                Some(LinkState::NotUntil(t)) if now < *t => return None,
                _ => {}
            }
            links.insert(leader.clone(), LinkState::Opening);
        }
        let opened = open(leader, token);
        let mut links = lock(&self.links);
        match opened {
            Ok(conn) => match Link::start(self, leader, conn) {
                Some(link) => {
                    links.insert(leader.clone(), LinkState::Open(link.clone()));
                    Some(link)
                }
                None => {
                    links.insert(leader.clone(), LinkState::NotUntil(now + RETRY_FAILED));
                    None
                }
            },
            Err(OpenError::Unsupported) => {
                links.insert(leader.clone(), LinkState::NotUntil(now + RETRY_UNSUPPORTED));
                None
            }
            Err(OpenError::Failed(why)) => {
                STREAM_LOG.note(&format!(
                    "cannot open a forward stream to {leader} ({why}); forwarding in batches"
                ));
                links.insert(leader.clone(), LinkState::NotUntil(now + RETRY_FAILED));
                None
            }
        }
    }

    /// Forgets `link` (it ended), if it is still the one kept for `leader`.
    fn forget(&self, leader: &PeerAddr, link: &Arc<Link>) {
        let mut links = lock(&self.links);
        if matches!(links.get(leader), Some(LinkState::Open(l)) if Arc::ptr_eq(l, link)) {
            links.remove(leader);
        }
    }
}

/// At most one line a second about forward streams that could not be opened or broke.
static STREAM_LOG: super::RateLimitedLog = super::RateLimitedLog::new();

fn open(leader: &PeerAddr, token: Option<&str>) -> std::result::Result<Conn, OpenError> {
    peer_stream::upgrade(
        leader,
        None,
        token,
        LINK_TIMEOUT,
        FORWARD_STREAM_PATH,
        FORWARD_STREAM_PROTOCOL,
    )
}

impl Link {
    /// Starts the thread that reads a new stream's answers; `None` if it cannot.
    fn start(links: &'static Links, leader: &PeerAddr, conn: Conn) -> Option<Arc<Link>> {
        let Conn::Plain(tcp) = conn else { return None };
        let reading = tcp.try_clone().ok()?;
        let socket = tcp.try_clone().ok()?;
        // The socket's, so the writing half's too: both wait at most that long.
        reading.set_read_timeout(Some(LINK_IDLE)).ok()?;
        let link = Arc::new(Link {
            writer: Mutex::new(tcp),
            socket,
            waiting: Mutex::default(),
        });
        let this = link.clone();
        let leader = leader.clone();
        thread::Builder::new()
            .name("forward-stream".into())
            .spawn(move || {
                let _fatal = PanicIsFatal;
                let why = this.read_answers(reading);
                if let Some(why) = why {
                    STREAM_LOG.note(&format!("the forward stream to {leader} ended: {why}"));
                }
                this.end();
                links.forget(&leader, &this);
            })
            .ok()?;
        Some(link)
    }

    /// Sends one write and waits for its answer.
    fn send(&self, write: &ForwardedWrite, deadline: Instant) -> Sent {
        let slot = Arc::new(Slot::default());
        let seq = {
            let mut w = lock(&self.waiting);
            if w.broken {
                return Sent::Again;
            }
            w.next_seq += 1;
            let seq = w.next_seq;
            w.slots.insert(seq, slot.clone());
            seq
        };
        let mut frame = Vec::with_capacity(write.body.len() + 256);
        put_frame(
            &mut frame,
            &StreamedWrite {
                seq,
                write: write.clone(),
            },
        );
        let written = lock(&self.writer).write_all(&frame);
        if written.is_err() {
            // Perhaps partly written: every write on the stream may have arrived.
            self.end();
        }
        if let Some(answer) = slot.wait_answer(deadline) {
            return Sent::Answer(answer);
        }
        lock(&self.waiting).slots.remove(&seq);
        // A last look: answered between the wait and the removal.
        Sent::Answer(slot.take_answer().unwrap_or(Err(Lost::Expired)))
    }

    /// Reads answers until the stream ends; why, when that is not the leader closing it or
    /// its going quiet.
    fn read_answers(&self, reading: TcpStream) -> Option<String> {
        let mut r = BufReader::with_capacity(64 << 10, reading);
        let mut body = Vec::new();
        loop {
            // Waiting for a frame to start consumes nothing, so a quiet spell is not an
            // error; once one starts it must arrive whole within the timeout.
            match r.fill_buf() {
                Ok([]) => return None,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    // Quiet: closed when nothing waits for an answer (checked under the
                    // lock the senders take, so none is sent on a stream closing).
                    let mut w = lock(&self.waiting);
                    if w.slots.is_empty() {
                        w.broken = true;
                        return None;
                    }
                    continue;
                }
                Err(e) => return Some(e.to_string()),
            }
            let mut len = [0u8; server::FRAME_HEADER_BYTES];
            if let Err(e) = r.read_exact(&mut len) {
                return Some(format!("an answer cut short: {e}"));
            }
            let n = u32::from_be_bytes(len) as usize;
            if n > MAX_FRAME_BYTES {
                return Some(format!(
                    "an answer of {n} bytes is over the limit of {MAX_FRAME_BYTES}"
                ));
            }
            body.resize(n, 0);
            if let Err(e) = r.read_exact(&mut body) {
                return Some(format!("an answer cut short: {e}"));
            }
            let a: StreamedAnswer = match serde_json::from_slice(&body) {
                Ok(a) => a,
                Err(e) => return Some(format!("an answer that is not one: {e}")),
            };
            // None: its write stopped waiting (the deadline passed).
            if let Some(slot) = lock(&self.waiting).slots.remove(&a.seq) {
                slot.answer(Ok(Response::json_bytes(a.status, a.body.into_bytes())));
            }
        }
    }

    /// Ends the stream: nothing more is sent on it, and every write still waiting on it is
    /// told it may have arrived (its thread sends it again under the same id).
    fn end(&self) {
        let slots = {
            let mut w = lock(&self.waiting);
            w.broken = true;
            std::mem::take(&mut w.slots)
        };
        let _ = self.socket.shutdown(Shutdown::Both);
        for slot in slots.into_values() {
            slot.answer(Err(Lost::MaybeSent));
        }
    }
}
