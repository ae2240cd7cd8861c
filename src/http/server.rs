//! The HTTP/1.1 server under the routes: the accept loop, connections, request framing,
//! and every limit on what a client can make the process hold.
//!
//! Blocking, one thread per connection (keep-alive and pipelining), at most
//! `max_connections` of them. Owns what a hostile or broken client can do: a head is read
//! within `head_timeout` and `max_head_bytes`, a body within `body_timeout` and the limit
//! the handler gives from the head alone (so a refused peer request is never read), bodies
//! buffered across connections stay within `body_budget`, framing is strict (RFC 9112 §6:
//! `Content-Length` with `Transfer-Encoding` is refused, and after any error in framing or
//! size the connection is closed, so no byte of a refused body is read as a request), and
//! the accept loop survives running out of file descriptors. With TLS configured, every
//! connection is TLS (rustls) and plain HTTP on the port gets a plain-text `400` saying so.
//! Knows nothing of the routes.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::stream::Stream;
use super::Response;
use crate::node::log_event;
use crate::wire::ErrorCode;

/// What the server lets one client hold, and for how long.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open connections; past it the longest-idle connection is closed to make room, or,
    /// with none idle, the new one gets a `503 busy`.
    pub max_connections: usize,
    /// Request line and headers together.
    pub max_head_bytes: usize,
    pub max_headers: usize,
    /// From a request's first byte to the end of its head.
    pub head_timeout: Duration,
    /// For a whole body to arrive.
    pub body_timeout: Duration,
    /// A keep-alive connection waiting for its next request.
    pub idle_timeout: Duration,
    /// For an answer to be taken by the client.
    pub write_timeout: Duration,
    /// Bytes of request bodies held at once across all connections.
    pub body_budget: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            max_head_bytes: 64 << 10,
            max_headers: 64,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            write_timeout: Duration::from_secs(30),
            body_budget: 512 << 20,
        }
    }
}

impl Limits {
    /// Connections this process can hold within its open-file limit: each costs one
    /// descriptor, and a request forwarded to the leader one more; the rest is for the
    /// log, checkpoints, datum files and peers.
    pub fn connections_for_fd_limit(nofile: u64) -> usize {
        (nofile.saturating_sub(RESERVED_DESCRIPTORS) / 2).clamp(16, 16_384) as usize
    }

    /// The most connections a `--max-connections` may ask for within the open-file limit:
    /// [`RESERVED_DESCRIPTORS`] stay for the log, checkpoints, datum files and peers, so a
    /// flood of connections can never leave the storage without a descriptor.
    pub fn connection_ceiling(nofile: u64) -> usize {
        nofile.saturating_sub(RESERVED_DESCRIPTORS).max(16) as usize
    }
}

/// Descriptors no connection may take: the log segment, a checkpoint or datum file being
/// written, the data dir opened for fsync, peer connections and the listener.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// A request's head, as parsed: the target split at `?`, both still percent-encoded.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `x` of `HTTP/1.x`.
    pub minor_version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The connection presented a client certificate that the configured client CA signed
    /// (TLS with `--tls-client-ca` only).
    pub peer_verified: bool,
}

impl Head {
    /// The first header of that name (names compare without case), if valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name).any(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    }

    fn keep_alive(&self) -> bool {
        if self.has_token("connection", "close") {
            return false;
        }
        self.minor_version >= 1 || self.has_token("connection", "keep-alive")
    }
}

/// Writes a streamed answer straight to the connection.
pub type StreamFn = Box<dyn FnOnce(&mut dyn Write) + Send>;

/// Takes one frame of an upgraded connection; an error (logged by the taker) ends it.
pub type FrameFn = Box<dyn FnMut(&[u8]) -> Result<(), ()> + Send>;

/// Length of a frame's header: its body's length, a big-endian u32.
pub const FRAME_HEADER_BYTES: usize = 4;

/// What a handler answers.
pub enum Reply {
    Full(Response),
    /// Takes the connection over (a watch stream): writes its own status line and headers,
    /// and the connection is closed when it returns.
    Stream(StreamFn),
    /// Switches the connection to `protocol` (`101 Switching Protocols`, RFC 9110 §15.2.2):
    /// from then on the client sends only frames, each a [`FRAME_HEADER_BYTES`] length and
    /// that many bytes, at most `max_frame`, and gets nothing back. The server reads them
    /// within its limits (a frame's body within `body_timeout`, held within the body budget;
    /// between frames the connection may stay quiet for `idle_timeout`) and gives each to
    /// `take`, in order, until the client closes, breaks a limit, or `take` fails.
    Frames {
        protocol: &'static str,
        max_frame: usize,
        take: FrameFn,
    },
}

/// The routes, as the server sees them.
pub trait Handler: Send + Sync + 'static {
    /// Decides on a request from its head alone, before any of its body is read: the
    /// largest body it takes, or a refusal (sent with `Connection: close`, so the unread
    /// body can never be taken for a request).
    fn admit(&self, head: &Head) -> Result<usize, Response>;
    fn handle(&self, head: Head, body: Vec<u8>) -> Reply;
}

/// A connection's entry in the table the accept loop evicts from.
struct ConnEntry {
    fd: RawFd,
    /// Since when it has been waiting for a request (None: a request is in progress).
    idle_since: Option<Instant>,
}

#[derive(Default)]
struct Shared {
    conns: Mutex<HashMap<u64, ConnEntry>>,
    next_id: AtomicUsize,
    body_bytes: AtomicUsize,
    closing: AtomicBool,
}

/// A running server; `stop` (or `close_listener`) ends the accept loop.
pub struct Server {
    listener: TcpListener,
    local: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// Serves `listener`: over TLS with `tls`, else plain HTTP.
    pub fn start(
        listener: TcpListener,
        limits: Limits,
        handler: Arc<dyn Handler>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<Server> {
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let l2 = listener.try_clone()?;
        let s2 = shared.clone();
        let accept = crate::node::spawn_critical("http-accept", move || {
            accept_loop(l2, limits, handler, s2, tls)
        });
        Ok(Server {
            listener,
            local,
            shared,
            accept: Some(accept),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.conns.lock().expect("conns lock").len()
    }

    /// Refuses new connections (those in the accept queue are reset); open ones go on.
    pub fn close_listener(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        // SAFETY: a valid listening socket owned by `self.listener`; shutting it down makes
        // the blocked accept return, and the loop sees `closing`.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
    }

    pub fn stop(mut self) {
        self.close_listener();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Accept errors that mean "out of a resource for now", not "the listener is gone".
fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn accept_loop(
    listener: TcpListener,
    limits: Limits,
    handler: Arc<dyn Handler>,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let mut backoff = Duration::ZERO;
    // An episode of exhaustion lasts from an accept error to the next accept. Its start and
    // end are logged, but at most one start every 10 s: a member held at its limit would
    // otherwise log a pair per connection. Episodes not logged are counted in the next line.
    let mut exhausted: Option<(Instant, bool)> = None;
    let mut last_warned: Option<Instant> = None;
    let mut quiet_episodes = 0u64;
    let mut refused_busy = 0u64;
    loop {
        let accepted = listener.accept();
        if shared.closing.load(Ordering::SeqCst) {
            return;
        }
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) if is_resource_exhaustion(&e) => {
                // Out of descriptors (tiny_http's accept thread died here for good): log,
                // back off, and go on; descriptors come back as connections close.
                if exhausted.is_none() {
                    let warn = last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                    if warn {
                        last_warned = Some(Instant::now());
                        let more = match std::mem::take(&mut quiet_episodes) {
                            0 => String::new(),
                            n => format!(" ({n} shorter episodes since the last warning)"),
                        };
                        log_event(&format!(
                            "warning: cannot accept connections: {e}; retrying with back-off (raise the open-file limit, `ulimit -n`, or lower --max-connections){more}"
                        ));
                    } else {
                        quiet_episodes += 1;
                    }
                    exhausted = Some((Instant::now(), warn));
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                // Make room if anything idles, so the next accept can succeed.
                evict_idle(&shared, Duration::ZERO);
                thread::sleep(backoff);
                continue;
            }
            // The peer reset before we accepted, a signal, and the like: the next one.
            Err(_) => continue,
        };
        if let Some((since, true)) = exhausted {
            log_event(&format!(
                "accepting connections again after {} ms",
                since.elapsed().as_millis()
            ));
        }
        exhausted = None;
        backoff = Duration::ZERO;
        let open = shared.conns.lock().expect("conns lock").len();
        if open >= limits.max_connections && !evict_idle(&shared, Duration::ZERO) {
            refused_busy += 1;
            if refused_busy.is_power_of_two() {
                log_event(&format!(
                    "warning: {open} connections open, the limit (--max-connections); refused {refused_busy} so far"
                ));
            }
            // Over TLS a plain-text answer would be noise to the client; the closed
            // connection tells it to go elsewhere.
            if tls.is_none() {
                refuse_busy(stream);
            }
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed) as u64;
        shared.conns.lock().expect("conns lock").insert(
            id,
            ConnEntry {
                fd: stream.as_raw_fd(),
                idle_since: Some(Instant::now()),
            },
        );
        let (h, s, l, t) = (handler.clone(), shared.clone(), limits.clone(), tls.clone());
        let spawned = thread::Builder::new()
            .name("http".into())
            .spawn(move || serve_connection(stream, id, &l, &*h, &s, t));
        if let Err(e) = spawned {
            // The stream went with the closure; only the table entry is left to undo.
            shared.conns.lock().expect("conns lock").remove(&id);
            log_event(&format!("warning: cannot start a connection thread: {e}"));
        }
    }
}

/// Closes the connection that has idled longest (at least `min_idle`); whether one was.
fn evict_idle(shared: &Shared, min_idle: Duration) -> bool {
    let conns = shared.conns.lock().expect("conns lock");
    let oldest = conns
        .values()
        .filter_map(|c| c.idle_since.map(|t| (t, c.fd)))
        .filter(|(t, _)| t.elapsed() >= min_idle)
        .min_by_key(|(t, _)| *t);
    match oldest {
        Some((_, fd)) => {
            // SAFETY: the fd is open: a connection leaves the table (under this lock)
            // before its stream is closed. Shutting it down wakes its thread, which ends.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
            true
        }
        None => false,
    }
}

fn refuse_busy(mut stream: TcpStream) {
    let r = Response::refusal(
        ErrorCode::Busy,
        "this member is at its connection limit; retry, or use another member",
    );
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = write_response(&mut stream, &r, false, false);
}

/// Why reading a request failed.
enum ReadError {
    /// The connection ended or broke: nothing to answer.
    Gone,
    /// Answer this, then close.
    Refuse(Response),
}

fn refusal(code: ErrorCode, msg: impl Into<String>) -> ReadError {
    ReadError::Refuse(Response::refusal(code, msg))
}

/// A client's connection, and what was read from it and not yet used.
struct Conn {
    stream: Stream,
    read: ReadBuf,
    /// The socket's read timeout as last set: set again only when it changes.
    armed: Option<Duration>,
}

impl Conn {
    fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            read: ReadBuf::default(),
            armed: None,
        }
    }

    fn buffered(&self) -> &[u8] {
        self.read.buffered()
    }

    fn consume(&mut self, n: usize) {
        self.read.consume(n);
    }

    /// Reads more bytes, waiting until `deadline` at most, or a little past it
    /// ([`socket_timeout`]). `Ok(false)`: end of stream.
    fn fill(&mut self, deadline: Instant) -> Result<bool, io::Error> {
        let timeout = socket_timeout(deadline).ok_or(io::ErrorKind::TimedOut)?;
        if self.armed != Some(timeout) {
            self.stream.set_read_timeout(Some(timeout))?;
            self.armed = Some(timeout);
        }
        match self.read.read_from(&mut self.stream) {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::ErrorKind::TimedOut.into()),
            Err(e) => Err(e),
        }
    }
}

/// Bytes read from a connection and not yet used: what the server's connections and the
/// forwarding connection (`node::peer_call`) read into. The storage is zeroed once when it
/// grows, not per read.
#[derive(Default)]
pub(crate) struct ReadBuf {
    buf: Vec<u8>,
    /// Bytes `pos..end` are read and not yet used.
    pos: usize,
    end: usize,
}

/// Room for one read.
const READ_CHUNK: usize = 16 << 10;

impl ReadBuf {
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// Marks the first `n` buffered bytes used.
    pub(crate) fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.end);
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        }
    }

    /// One read from `from` after the buffered bytes (retried if interrupted), with room
    /// for [`READ_CHUNK`]; `Ok(0)` at the end of the stream.
    pub(crate) fn read_from(&mut self, from: &mut impl Read) -> io::Result<usize> {
        if self.pos > 0 && (self.pos * 2 > self.buf.len() || self.buf.len() - self.end < READ_CHUNK)
        {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.buf.len() - self.end < READ_CHUNK {
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        loop {
            match from.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The socket timeout for a wait until `deadline`: what is left, rounded up (to 100 ms, or
/// 10 ms under a second), so that successive waits whose deadlines are about as far away
/// set the same value and skip the `setsockopt` (it was 0.7% of the leader's samples under
/// 64 connections when set per request). A wait thus ends at most one step past its
/// deadline. `None`: the deadline has passed.
pub(crate) fn socket_timeout(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return None;
    }
    let step = if left >= Duration::from_secs(1) {
        100
    } else {
        10
    };
    Some(Duration::from_millis(
        (left.as_millis() as u64 / step + 1) * step,
    ))
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

fn serve_connection(
    stream: TcpStream,
    id: u64,
    limits: &Limits,
    handler: &dyn Handler,
    shared: &Shared,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(limits.write_timeout));
    let stream = match tls {
        None => Stream::Plain(stream),
        Some(cfg) => match start_tls(stream, cfg, limits) {
            Some(s) => s,
            None => {
                shared.conns.lock().expect("conns lock").remove(&id);
                return;
            }
        },
    };
    let mut conn = Conn::new(stream);
    let set_idle = |idle: bool| {
        if let Some(c) = shared.conns.lock().expect("conns lock").get_mut(&id) {
            c.idle_since = idle.then(Instant::now);
        }
    };
    loop {
        // Wait for the next request's first byte (keep-alive), evictable meanwhile.
        if conn.buffered().is_empty() {
            set_idle(true);
            match conn.fill(Instant::now() + limits.idle_timeout) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    // rustls reports a failed handshake (or a bad record) as InvalidData:
                    // say so here too, not only on the client's side.
                    if matches!(conn.stream, Stream::Tls(_))
                        && e.kind() == io::ErrorKind::InvalidData
                    {
                        let from = conn
                            .stream
                            .tcp()
                            .peer_addr()
                            .map_or_else(|_| "?".into(), |a| a.to_string());
                        TLS_LOG.note(&format!("TLS with {from} failed: {e}"));
                    }
                    break;
                }
            }
        }
        set_idle(false);
        match serve_one(&mut conn, limits, handler, shared) {
            Ok(true) => continue,
            Ok(false) => break,
            Err(ReadError::Gone) => break,
            Err(ReadError::Refuse(r)) => {
                let _ = write_response(&mut conn.stream, &r, false, false);
                linger_close(&mut conn.stream);
                break;
            }
        }
    }
    // Leave the table before the stream closes, so `evict_idle` never shuts down a
    // descriptor number that was reused.
    shared.conns.lock().expect("conns lock").remove(&id);
    drop(conn);
}

/// At most one line a second about failed TLS connections, however many arrive.
static TLS_LOG: super::RateLimitedLog = super::RateLimitedLog::new();

/// Wraps a new connection in TLS. The handshake itself runs on the first read, within the
/// idle timeout like any wait for a first request. A client that speaks plain HTTP to the
/// TLS port (its first byte is not a handshake record) is told so in plain text.
fn start_tls(
    mut tcp: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    limits: &Limits,
) -> Option<Stream> {
    let _ = tcp.set_read_timeout(Some(limits.idle_timeout));
    let mut first = [0u8; 1];
    match tcp.peek(&mut first) {
        Ok(1) if first[0] == crate::tls::HANDSHAKE_BYTE => {}
        Ok(1) => {
            let from = tcp
                .peer_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string());
            TLS_LOG.note(&format!(
                "{from} sent plain HTTP to the TLS port; answered 400 (use https://)"
            ));
            let r = Response::refusal(
                ErrorCode::BadRequest,
                "this port serves HTTPS (TLS): use https:// (nacosctl: --endpoints https://HOST:PORT and --cacert)",
            );
            let _ = write_response(&mut tcp, &r, false, false);
            let mut plain = Stream::Plain(tcp);
            linger_close(&mut plain);
            return None;
        }
        _ => return None,
    }
    match rustls::ServerConnection::new(cfg) {
        Ok(c) => Some(Stream::Tls(Box::new(rustls::StreamOwned::new(c, tcp)))),
        Err(e) => {
            log_event(&format!("warning: cannot start a TLS connection: {e}"));
            None
        }
    }
}

/// Reads, answers and returns whether the connection may serve another request.
fn serve_one(
    conn: &mut Conn,
    limits: &Limits,
    handler: &dyn Handler,
    shared: &Shared,
) -> Result<bool, ReadError> {
    let head_deadline = Instant::now() + limits.head_timeout;
    let (mut head, head_len) = read_head(conn, limits, head_deadline)?;
    head.peer_verified = conn.stream.peer_verified();
    conn.consume(head_len);
    let framing = framing(&head)?;
    let limit = match handler.admit(&head) {
        Ok(limit) => limit,
        Err(r) => {
            // Nothing of the body was read: answer and close.
            let _ = write_response(&mut conn.stream, &r, false, false);
            linger_close(&mut conn.stream);
            return Ok(false);
        }
    };
    let too_large = || {
        refusal(
            ErrorCode::PayloadTooLarge,
            format!("the body is over the limit of {limit} bytes; store smaller values"),
        )
    };
    if let Framing::Length(n) = framing {
        if n > limit as u64 {
            return Err(too_large());
        }
    }
    let reserve = match framing {
        Framing::Length(n) => n as usize,
        Framing::Chunked => limit,
        Framing::None => 0,
    };
    let _budget = BodyBudget::take(shared, reserve, limits.body_budget)?;
    if head.has_token("expect", "100-continue") && !matches!(framing, Framing::None) {
        conn.stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|_| ReadError::Gone)?;
    }
    let body_deadline = Instant::now() + limits.body_timeout;
    let body = match framing {
        Framing::None => Vec::new(),
        Framing::Length(n) => read_exact(conn, n as usize, body_deadline)?,
        Framing::Chunked => read_chunked(conn, limit, body_deadline).map_err(|e| match e {
            ChunkError::TooLarge => too_large(),
            ChunkError::Read(e) => e,
        })?,
    };
    let keep_alive = head.keep_alive();
    let http10 = head.minor_version == 0;
    match handler.handle(head, body) {
        Reply::Full(r) => {
            write_response(&mut conn.stream, &r, keep_alive, http10)
                .map_err(|_| ReadError::Gone)?;
            Ok(keep_alive)
        }
        Reply::Stream(f) => {
            f(&mut conn.stream);
            Ok(false)
        }
        Reply::Frames {
            protocol,
            max_frame,
            take,
        } => {
            let switch = format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n"
            );
            if conn.stream.write_all(switch.as_bytes()).is_ok() && conn.stream.flush().is_ok() {
                serve_frames(conn, limits, shared, max_frame, take);
            }
            Ok(false)
        }
    }
}

/// The frames of an upgraded connection (`Reply::Frames`), until it ends; why it ended is
/// logged when that is not the client closing it.
fn serve_frames(
    conn: &mut Conn,
    limits: &Limits,
    shared: &Shared,
    max_frame: usize,
    mut take: FrameFn,
) {
    let from = conn
        .stream
        .tcp()
        .peer_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let why = loop {
        // Quiet between frames is normal (a member with nothing to say): the keep-alive
        // limit applies, as between requests.
        let idle_deadline = Instant::now() + limits.idle_timeout;
        while conn.buffered().len() < FRAME_HEADER_BYTES {
            match conn.fill(idle_deadline) {
                Ok(true) => {}
                // Closed between frames: the sender is done (or went quiet past the limit).
                Ok(false) if conn.buffered().is_empty() => return,
                Ok(false) => break,
                Err(_) => return,
            }
        }
        let Some(header) = conn.buffered().get(..FRAME_HEADER_BYTES) else {
            break "it ended inside a frame header".to_string();
        };
        let mut len = [0u8; FRAME_HEADER_BYTES];
        len.copy_from_slice(header);
        let n = u32::from_be_bytes(len) as usize;
        if n > max_frame {
            break format!("a frame of {n} bytes is over the limit of {max_frame}");
        }
        let Ok(_budget) = BodyBudget::take(shared, n, limits.body_budget) else {
            break format!("no room for a frame of {n} bytes: the process holds as many request bodies as it may");
        };
        conn.consume(FRAME_HEADER_BYTES);
        let body_deadline = Instant::now() + limits.body_timeout;
        while conn.buffered().len() < n {
            match conn.fill(body_deadline) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) if timed_out(&e) => break,
                Err(_) => return,
            }
        }
        let Some(frame) = conn.buffered().get(..n) else {
            break format!(
                "a frame's {n} bytes did not arrive within {} ms",
                limits.body_timeout.as_millis()
            );
        };
        if take(frame).is_err() {
            return;
        }
        conn.consume(n);
    };
    FRAME_LOG.note(&format!("closed the frame stream from {from}: {why}"));
}

/// At most one line a second about broken frame streams, however many there are.
static FRAME_LOG: super::RateLimitedLog = super::RateLimitedLog::new();

/// After refusing a request whose body is left unread: closing at once, with bytes unread,
/// makes the kernel reset the connection, and the client may lose the answer before it
/// reads it. So the write side is shut (the client sees the answer, then the end), and
/// what still arrives is read and thrown away for a moment (nginx's lingering close).
/// None of it is ever parsed: the connection serves no further request.
fn linger_close(stream: &mut Stream) {
    stream.shutdown_write();
    let until = Instant::now() + Duration::from_secs(2);
    let mut sink = [0u8; 16 << 10];
    while Instant::now() < until {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Reserved bytes of the process-wide body budget, given back on drop.
struct BodyBudget<'a> {
    shared: &'a Shared,
    bytes: usize,
}

impl<'a> BodyBudget<'a> {
    fn take(shared: &'a Shared, bytes: usize, budget: usize) -> Result<BodyBudget<'a>, ReadError> {
        let before = shared.body_bytes.fetch_add(bytes, Ordering::SeqCst);
        if bytes > 0 && before + bytes > budget {
            shared.body_bytes.fetch_sub(bytes, Ordering::SeqCst);
            return Err(refusal(
                ErrorCode::Busy,
                "this member is holding as many request bodies as it may; retry shortly",
            ));
        }
        Ok(BodyBudget { shared, bytes })
    }
}

impl Drop for BodyBudget<'_> {
    fn drop(&mut self) {
        self.shared
            .body_bytes
            .fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// Header slots [`read_head`] keeps on the stack: the default `max_headers`.
const HEADER_SLOTS_ON_STACK: usize = 64;

fn read_head(
    conn: &mut Conn,
    limits: &Limits,
    deadline: Instant,
) -> Result<(Head, usize), ReadError> {
    loop {
        // The header slots live on the stack up to the default limit: a 2 KiB allocation
        // per request was the largest on the server's path, and glibc merges its fast
        // bins (`malloc_consolidate`) before it serves any allocation over 1 KiB.
        let mut on_stack = [httparse::EMPTY_HEADER; HEADER_SLOTS_ON_STACK];
        let mut on_heap = Vec::new();
        let slots: &mut [httparse::Header] = if limits.max_headers <= HEADER_SLOTS_ON_STACK {
            &mut on_stack[..limits.max_headers]
        } else {
            on_heap.resize(limits.max_headers, httparse::EMPTY_HEADER);
            &mut on_heap
        };
        let mut req = httparse::Request::new(slots);
        match req.parse(conn.buffered()) {
            Ok(httparse::Status::Complete(len)) => {
                let head = Head {
                    method: req.method.unwrap_or_default().to_string(),
                    path: String::new(),
                    query: String::new(),
                    minor_version: req.version.unwrap_or(1),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| (h.name.to_string(), h.value.to_vec()))
                        .collect(),
                    peer_verified: false,
                };
                return Ok((with_target(head, req.path.unwrap_or("/"))?, len));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Err(refusal(
                    ErrorCode::HeaderTooLarge,
                    format!("more than {} headers", limits.max_headers),
                ))
            }
            Err(e) => {
                return Err(refusal(
                    ErrorCode::BadRequest,
                    format!("malformed request head: {e}"),
                ))
            }
        }
        if conn.buffered().len() >= limits.max_head_bytes {
            return Err(refusal(
                ErrorCode::HeaderTooLarge,
                format!(
                    "the request line and headers are over the limit of {} bytes",
                    limits.max_head_bytes
                ),
            ));
        }
        match conn.fill(deadline) {
            Ok(true) => {}
            Ok(false) => return Err(ReadError::Gone),
            Err(e) if timed_out(&e) => {
                return Err(refusal(
                    ErrorCode::RequestTimeout,
                    format!(
                        "the request head did not arrive within {} ms",
                        limits.head_timeout.as_millis()
                    ),
                ))
            }
            Err(_) => return Err(ReadError::Gone),
        }
    }
}

/// Splits the request target into path and query; an absolute-form target
/// (`http://host/path`, RFC 9112 §3.2.2) is reduced to its path.
fn with_target(mut head: Head, target: &str) -> Result<Head, ReadError> {
    let target = match target.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            match rest.find('/') {
                Some(i) => &rest[i..],
                None => "/",
            }
        }
        _ => target,
    };
    if !target.starts_with('/') {
        return Err(refusal(
            ErrorCode::BadRequest,
            format!("the request target {target:?} is not a path"),
        ));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    head.path = path.to_string();
    head.query = query.to_string();
    Ok(head)
}

enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// How the body is delimited (RFC 9112 §6.3), refusing every ambiguity a proxy in front
/// could resolve differently.
fn framing(head: &Head) -> Result<Framing, ReadError> {
    let te: Vec<&[u8]> = head.all("transfer-encoding").collect();
    let cl: Vec<&[u8]> = head.all("content-length").collect();
    if !te.is_empty() && !cl.is_empty() {
        return Err(refusal(
            ErrorCode::BadRequest,
            "both Content-Length and Transfer-Encoding: send one of them",
        ));
    }
    if !te.is_empty() {
        let codings: Vec<String> = te
            .iter()
            .flat_map(|v| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .collect();
        if codings != ["chunked"] {
            return Err(refusal(
                ErrorCode::NotImplemented,
                format!(
                    "Transfer-Encoding {codings:?} is not supported; use chunked or Content-Length"
                ),
            ));
        }
        if head.minor_version == 0 {
            return Err(refusal(
                ErrorCode::BadRequest,
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        return Ok(Framing::Chunked);
    }
    let mut length = None;
    for v in cl {
        let n = std::str::from_utf8(v)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                refusal(
                    ErrorCode::BadRequest,
                    format!(
                        "Content-Length {:?} is not a number",
                        String::from_utf8_lossy(v)
                    ),
                )
            })?;
        if length.is_some_and(|l| l != n) {
            return Err(refusal(
                ErrorCode::BadRequest,
                "Content-Length given twice, differently",
            ));
        }
        length = Some(n);
    }
    Ok(match length {
        Some(0) | None => Framing::None,
        Some(n) => Framing::Length(n),
    })
}

fn body_read_error(e: io::Error, limits_timeout: bool) -> ReadError {
    if limits_timeout && timed_out(&e) {
        refusal(ErrorCode::RequestTimeout, "the body did not arrive in time")
    } else {
        ReadError::Gone
    }
}

fn read_exact(conn: &mut Conn, n: usize, deadline: Instant) -> Result<Vec<u8>, ReadError> {
    while conn.buffered().len() < n {
        match conn.fill(deadline) {
            Ok(true) => {}
            Ok(false) => return Err(ReadError::Gone),
            Err(e) => return Err(body_read_error(e, true)),
        }
    }
    let body = conn.buffered()[..n].to_vec();
    conn.consume(n);
    Ok(body)
}

enum ChunkError {
    TooLarge,
    Read(ReadError),
}

impl From<ReadError> for ChunkError {
    fn from(e: ReadError) -> ChunkError {
        ChunkError::Read(e)
    }
}

/// One CRLF-terminated line of at most `max` bytes, without its CRLF.
fn read_line(conn: &mut Conn, max: usize, deadline: Instant) -> Result<Vec<u8>, ReadError> {
    loop {
        if let Some(i) = conn.buffered().windows(2).position(|w| w == b"\r\n") {
            let line = conn.buffered()[..i].to_vec();
            conn.consume(i + 2);
            return Ok(line);
        }
        if conn.buffered().len() > max {
            return Err(refusal(ErrorCode::BadRequest, "a chunk line is too long"));
        }
        match conn.fill(deadline) {
            Ok(true) => {}
            Ok(false) => return Err(ReadError::Gone),
            Err(e) => return Err(body_read_error(e, true)),
        }
    }
}

/// Decodes a chunked body of at most `limit` bytes (RFC 9112 §7.1). Past the limit it
/// stops reading: the connection is closed, never read on as the next request.
fn read_chunked(conn: &mut Conn, limit: usize, deadline: Instant) -> Result<Vec<u8>, ChunkError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(conn, 1024, deadline)?;
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size_text = std::str::from_utf8(size_text).unwrap_or("").trim();
        let size = (!size_text.is_empty() && size_text.len() <= 16)
            .then(|| u64::from_str_radix(size_text, 16).ok())
            .flatten()
            .ok_or_else(|| {
                ChunkError::Read(refusal(
                    ErrorCode::BadRequest,
                    "a chunk size is not hexadecimal",
                ))
            })?;
        if size == 0 {
            // Trailers, up to the empty line; a bounded number of them.
            for _ in 0..64 {
                if read_line(conn, 8 << 10, deadline)?.is_empty() {
                    return Ok(body);
                }
            }
            return Err(ChunkError::Read(refusal(
                ErrorCode::HeaderTooLarge,
                "too many trailers",
            )));
        }
        if size > (limit - body.len()) as u64 {
            return Err(ChunkError::TooLarge);
        }
        let chunk = read_exact(conn, size as usize + 2, deadline)?;
        if &chunk[size as usize..] != b"\r\n" {
            return Err(ChunkError::Read(refusal(
                ErrorCode::BadRequest,
                "a chunk does not end with CRLF",
            )));
        }
        body.extend_from_slice(&chunk[..size as usize]);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Writes one answer in a single write: status line, headers and the JSON body.
pub(super) fn write_response(
    out: &mut impl Write,
    r: &Response,
    keep_alive: bool,
    http10: bool,
) -> io::Result<()> {
    let mut msg = Vec::with_capacity(128 + r.body.len());
    write!(msg, "HTTP/1.1 {} {}\r\n", r.status, reason(r.status))?;
    if r.status != 204 {
        write!(
            msg,
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            r.content_type,
            r.body.len()
        )?;
    }
    if !keep_alive {
        msg.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        // HTTP/1.0 closes by default: say that this one stays open.
        msg.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    msg.extend_from_slice(b"\r\n");
    if r.status != 204 {
        msg.extend_from_slice(&r.body);
    }
    out.write_all(&msg)?;
    out.flush()
}
