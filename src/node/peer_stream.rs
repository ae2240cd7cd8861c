//! The sending end of a peer stream (`http::PEER_STREAM_PATH`): one connection to one peer,
//! plain or TLS, switched by an HTTP upgrade to frames of peer batches that are written and
//! never answered. Owns opening it, writing a frame, and telling a dead one from a quiet
//! one, and the connecting (TCP or TLS) that `peer_call` shares; what to send and when to
//! give up is `sender`'s.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::{PEER_STREAM_PATH, PEER_STREAM_PROTOCOL};
use crate::raft::PeerAddr;

/// Why a stream could not be opened.
pub(super) enum OpenError {
    /// The peer does not serve streams (a member of an older version, during a rolling
    /// upgrade): batches go to it as POSTs.
    Unsupported,
    /// Unreachable, or it refused (the reason is the peer's own words), for the log.
    Failed(String),
}

pub(super) enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// An open stream to one peer.
pub(super) struct PeerStream {
    conn: Conn,
    last_write: Instant,
}

/// Largest answer head (and refusal body) read while opening.
const MAX_ANSWER_BYTES: usize = 16 << 10;

/// A stream quiet for longer than this is checked before it is written to, so that a peer
/// that closed it meanwhile (it restarted, or its keep-alive limit passed) costs no batch.
pub(super) const CHECK_AFTER_QUIET: Duration = Duration::from_millis(500);

impl PeerStream {
    /// Connects and switches protocols, within `timeout` for each step. Writes then time
    /// out after `timeout` too, and the kernel drops the connection when what it sent stays
    /// unacknowledged that long (`TCP_USER_TIMEOUT`): a partitioned peer costs a reconnect,
    /// not a stream stuck behind minutes of TCP retransmission back-off.
    pub(super) fn open(
        peer: &PeerAddr,
        tls: Option<&Arc<rustls::ClientConfig>>,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<PeerStream, OpenError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            OpenError::Failed(format!("unreachable: {what}: {e}"))
        };
        let mut conn = connect(peer, tls, timeout).map_err(|e| OpenError::Failed(e.to_string()))?;
        let mut ask = format!(
            "POST {PEER_STREAM_PATH} HTTP/1.1\r\nHost: {peer}\r\nConnection: Upgrade\r\nUpgrade: {PEER_STREAM_PROTOCOL}\r\nContent-Length: 0\r\n"
        );
        if let Some(t) = token {
            ask.push_str(&format!("{}: {t}\r\n", super::TOKEN_HEADER));
        }
        ask.push_str("\r\n");
        conn.write_all(ask.as_bytes())
            .and_then(|()| conn.flush())
            .map_err(|e| failed("cannot send", &e))?;
        let (status, body) = read_answer(&mut conn).map_err(|e| failed("no answer", &e))?;
        match status {
            101 => {
                // From here on nothing is read: a quiet stream must not wait on reads.
                let _ = conn.tcp().set_read_timeout(None);
                Ok(PeerStream {
                    conn,
                    last_write: Instant::now(),
                })
            }
            404 | 405 => Err(OpenError::Unsupported),
            code => {
                let text = String::from_utf8_lossy(&body).into_owned();
                let message = serde_json::from_str::<crate::wire::ErrorBody>(&text)
                    .map_or(text, |b| b.message);
                Err(OpenError::Failed(format!(
                    "it refuses our messages ({code}): {message}"
                )))
            }
        }
    }

    /// Writes one frame (its header included) whole.
    pub(super) fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        // The peer never writes on a stream, so anything to read (the end, an error, a
        // TLS alert) means it is gone.
        if self.last_write.elapsed() >= CHECK_AFTER_QUIET && closed_by_peer(&self.conn) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the peer closed the stream",
            ));
        }
        self.conn.write_all(frame)?;
        self.conn.flush()?;
        self.last_write = Instant::now();
        Ok(())
    }
}

/// Why a connection to a peer could not be made: nothing was sent on it.
#[derive(Debug)]
pub struct ConnectError(String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unreachable: {}", self.0)
    }
}

/// Connects to `peer` within `timeout`, with TLS when `tls` is given (the handshake runs on
/// the first write). Writes and reads then time out after `timeout`, and the kernel drops
/// the connection when what it sent stays unacknowledged that long (`TCP_USER_TIMEOUT`).
pub(super) fn connect(
    peer: &PeerAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<Conn, ConnectError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| ConnectError(format!("{what}: {e}"));
    let addrs = peer
        .as_str()
        .to_socket_addrs()
        .map_err(|e| failed("cannot resolve it", &e))?;
    let mut last = None;
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = match (tcp, last) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(failed("cannot connect", &e)),
        (None, None) => return Err(failed("cannot resolve it", &"no address")),
    };
    let setup = |t: &TcpStream| -> io::Result<()> {
        t.set_nodelay(true)?;
        t.set_write_timeout(Some(timeout))?;
        t.set_read_timeout(Some(timeout))?;
        set_user_timeout(t, timeout)
    };
    setup(&tcp).map_err(|e| failed("cannot set up the connection", &e))?;
    Ok(match tls {
        None => Conn::Plain(tcp),
        Some(cfg) => {
            let host = host_of(peer.as_str());
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| failed("not a TLS server name", &e))?;
            let c = rustls::ClientConnection::new(cfg.clone(), name)
                .map_err(|e| failed("cannot start TLS", &e))?;
            Conn::Tls(Box::new(rustls::StreamOwned::new(c, tcp)))
        }
    })
}

/// Completes the TLS handshake of a new connection (nothing for plain TCP), so that a peer
/// refusing our certificate, or one we refuse, is an error before anything is sent.
pub(super) fn handshake(conn: &mut Conn) -> Result<(), ConnectError> {
    if let Conn::Tls(s) = conn {
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| ConnectError(format!("TLS handshake failed: {e}")))?;
        }
    }
    Ok(())
}

/// Whether the peer ended `conn` or sent something unasked (the end, an error, a TLS
/// alert): on a connection where the peer only ever answers, either means it is not
/// usable. Does not wait.
pub(super) fn closed_by_peer(conn: &Conn) -> bool {
    let mut byte = 0u8;
    // SAFETY: the descriptor belongs to this open connection, and the buffer is one valid
    // byte; MSG_PEEK leaves the data where it is and MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            conn.tcp().as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        );
    }
    true
}

/// The status and (refusal) body of the answer to the upgrade request.
fn read_answer(conn: &mut Conn) -> io::Result<(u16, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = resp.code.unwrap_or(0);
                if status == 101 {
                    return Ok((status, Vec::new()));
                }
                let length = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0)
                    .min(MAX_ANSWER_BYTES);
                let mut body = buf.split_off(len);
                while body.len() < length {
                    let n = conn.read(&mut chunk)?;
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(length);
                return Ok((status, body));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_ANSWER_BYTES => {}
            Ok(httparse::Status::Partial) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an answer head over 16 KiB",
                ))
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The host of `host:port` (`[v6]:port` too), as TLS names it.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Linux's `TCP_USER_TIMEOUT`: how long sent data may stay unacknowledged before the
/// connection is dropped.
fn set_user_timeout(tcp: &TcpStream, timeout: Duration) -> io::Result<()> {
    let ms = libc::c_uint::try_from(timeout.as_millis()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: a valid socket descriptor, and a pointer to a c_uint of the size given.
    let r = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&ms as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_tls_name_is_the_host_without_port_or_brackets() {
        assert_eq!(host_of("127.0.0.1:8848"), "127.0.0.1");
        assert_eq!(host_of("node-1.example:8848"), "node-1.example");
        assert_eq!(host_of("[::1]:8848"), "::1");
    }
}
