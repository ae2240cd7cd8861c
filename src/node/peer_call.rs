//! A keep-alive HTTP/1.1 connection to one peer for requests that are answered (the
//! batches of forwarded writes): one request at a time, the answer read by its
//! `Content-Length` within a deadline and a size limit. Owns the framing of that exchange
//! and nothing of what is sent; whether a failed exchange may be sent again is the
//! caller's.
//!
//! Not `ureq`, which the node uses elsewhere: per exchange it set the socket's timeouts
//! each time it read from its buffer (every line of an answer's head) and cleared them
//! after, probed a pooled connection, and sent the head and the body apart: fifteen more
//! system calls a batch (docs/benchmarks.md). Here the timeouts change only when the
//! deadline moves by a step, and a pooled connection is probed with one non-blocking peek.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::peer_stream::{self, Conn};
use crate::http::server::{socket_timeout, ReadBuf};
use crate::raft::PeerAddr;

pub use super::peer_stream::ConnectError;

/// Largest answer head read.
const MAX_HEAD_BYTES: usize = 16 << 10;

/// An open keep-alive connection to one peer.
pub struct PeerCall {
    conn: Conn,
    peer: PeerAddr,
    /// The answer being read; empty between requests (bytes after an answer make it an
    /// error, and bytes arriving later make the connection fail the probe of `usable`).
    buf: ReadBuf,
    /// The socket timeouts set now.
    armed: Option<Duration>,
}

/// One answer: its status and body, and whether the connection may carry another request.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl PeerCall {
    /// Connects to `peer` (with TLS when `tls` is given, its handshake done) within
    /// `timeout` for each step. Fails only before anything is sent.
    pub fn open(
        peer: &PeerAddr,
        tls: Option<&Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<PeerCall, ConnectError> {
        let mut conn = peer_stream::connect(peer, tls, timeout)?;
        peer_stream::handshake(&mut conn)?;
        Ok(PeerCall {
            conn,
            peer: peer.clone(),
            buf: ReadBuf::default(),
            armed: Some(timeout),
        })
    }

    pub fn peer(&self) -> &PeerAddr {
        &self.peer
    }

    /// Whether a connection taken from a pool may be used: the peer may have closed it
    /// (its keep-alive limit, a restart). One non-blocking peek, so that a leader that is
    /// gone shows as a refused connection (nothing sent) rather than a broken exchange.
    pub fn usable(&self) -> bool {
        !peer_stream::closed_by_peer(&self.conn)
    }

    /// Sends `POST path` with `headers` and `body`, and reads the answer, all by
    /// `deadline`; an answer body over `max_answer` bytes is an error. After any error the
    /// connection must be dropped: the request may or may not have arrived.
    pub fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        deadline: Instant,
        max_answer: usize,
    ) -> io::Result<Answer> {
        let mut msg = Vec::with_capacity(256 + body.len());
        write!(
            msg,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.peer,
            body.len()
        )?;
        for (name, value) in headers {
            write!(msg, "{name}: {value}\r\n")?;
        }
        msg.extend_from_slice(b"\r\n");
        msg.extend_from_slice(body);
        self.arm(deadline)?;
        self.conn.write_all(&msg)?;
        self.conn.flush()?;
        self.read_answer(deadline, max_answer)
    }

    /// Sets the socket's timeouts to what is left before `deadline`, as the server's
    /// connections do ([`socket_timeout`]): successive requests, whose deadlines are about
    /// a request timeout away, seldom change them.
    fn arm(&mut self, deadline: Instant) -> io::Result<()> {
        let timeout = socket_timeout(deadline).ok_or(io::ErrorKind::TimedOut)?;
        if self.armed != Some(timeout) {
            let tcp = self.conn.tcp();
            tcp.set_read_timeout(Some(timeout))?;
            tcp.set_write_timeout(Some(timeout))?;
            self.armed = Some(timeout);
        }
        Ok(())
    }

    /// Reads more of the answer into `buf`; an error at the end of the stream. Each read
    /// waits only for what is left of the deadline, so a peer that trickles its answer
    /// cannot stretch the exchange.
    fn fill(&mut self, deadline: Instant) -> io::Result<()> {
        self.arm(deadline)?;
        match self.buf.read_from(&mut self.conn)? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    fn read_answer(&mut self, deadline: Instant, max_answer: usize) -> io::Result<Answer> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let (head_len, status, length, keep_alive) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(self.buf.buffered()) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = resp.code.unwrap_or(0);
                    let header = |name: &str| {
                        resp.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| h.value)
                    };
                    if header("transfer-encoding").is_some() {
                        return Err(invalid("an answer not framed by Content-Length".into()));
                    }
                    let length = header("content-length")
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.trim().parse::<usize>().ok());
                    let length = match (status, length) {
                        (204 | 304, _) => 0,
                        (_, Some(n)) => n,
                        (_, None) => {
                            return Err(invalid("an answer without a Content-Length".into()))
                        }
                    };
                    let keep_alive = resp.version == Some(1)
                        && !header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
                    break (len, status, length, keep_alive);
                }
                Ok(httparse::Status::Partial) if self.buf.buffered().len() < MAX_HEAD_BYTES => {}
                Ok(httparse::Status::Partial) => {
                    return Err(invalid(format!(
                        "an answer head over {MAX_HEAD_BYTES} bytes"
                    )))
                }
                Err(e) => return Err(invalid(format!("not an HTTP answer: {e}"))),
            }
            self.fill(deadline)?;
        };
        if !(200..600).contains(&status) {
            return Err(invalid(format!("an answer with status {status}")));
        }
        if length > max_answer {
            return Err(invalid(format!(
                "an answer of {length} bytes, over the limit of {max_answer}"
            )));
        }
        while self.buf.buffered().len() < head_len + length {
            self.fill(deadline)?;
        }
        if self.buf.buffered().len() > head_len + length {
            return Err(invalid("the peer sent bytes nobody asked for".into()));
        }
        let body = self.buf.buffered()[head_len..].to_vec();
        self.buf.consume(head_len + length);
        Ok(Answer {
            status,
            body,
            keep_alive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::thread;

    /// A peer that answers each request on one connection with the next of `answers`
    /// (raw bytes), and hands back what it read.
    fn peer(answers: Vec<&'static [u8]>) -> (PeerAddr, thread::JoinHandle<Vec<Vec<u8>>>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = PeerAddr::new(l.local_addr().expect("addr").to_string());
        let t = thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut got = Vec::new();
            for a in answers {
                let mut req = Vec::new();
                let mut b = [0u8; 4096];
                // Reads one request: head, then the body its Content-Length gives.
                loop {
                    let n = s.read(&mut b).expect("read");
                    if n == 0 {
                        return got;
                    }
                    req.extend_from_slice(&b[..n]);
                    let text = String::from_utf8_lossy(&req).to_string();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if req.len() >= i + 4 + len {
                            break;
                        }
                    }
                }
                got.push(req);
                s.write_all(a).expect("answer");
            }
            got
        });
        (addr, t)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn requests_go_one_after_another_on_one_connection() {
        let (addr, t) = peer(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]",
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\nConnection: close\r\n\r\nnope!",
        ]);
        let mut c = PeerCall::open(&addr, None, Duration::from_secs(2)).expect("open");
        let a = c
            .post("/v1/raft/forward", &[("X-A", "1")], b"[1]", soon(), 100)
            .expect("first");
        assert_eq!(
            (a.status, a.body.as_slice(), a.keep_alive),
            (200, &b"[]"[..], true)
        );
        assert!(c.usable());
        let a = c.post("/p", &[], b"", soon(), 100).expect("second");
        assert_eq!(
            (a.status, a.body.as_slice(), a.keep_alive),
            (401, &b"nope!"[..], false)
        );
        let got = t.join().expect("peer");
        let first = String::from_utf8_lossy(&got[0]);
        assert!(
            first.starts_with("POST /v1/raft/forward HTTP/1.1\r\n"),
            "{first}"
        );
        assert!(first.contains("\r\nContent-Length: 3\r\n"), "{first}");
        assert!(first.contains("\r\nX-A: 1\r\n"), "{first}");
        assert!(first.ends_with("\r\n\r\n[1]"), "{first}");
    }

    #[test]
    fn a_broken_or_oversized_answer_is_an_error() {
        for (answer, why) in [
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n"[..],
                "over the limit",
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", "without a Content-Length"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "not framed",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]extra",
                "nobody asked for",
            ),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n[",
                "UnexpectedEof",
            ),
        ] {
            let (addr, t) = peer(vec![answer]);
            let mut c = PeerCall::open(&addr, None, Duration::from_secs(2)).expect("open");
            let e = c
                .post("/p", &[], b"x", soon(), 100)
                .err()
                .expect("an error");
            assert!(
                format!("{e} {:?}", e.kind()).contains(why),
                "{why}: got {e}"
            );
            drop(c);
            t.join().expect("peer");
        }
    }

    #[test]
    fn a_silent_peer_costs_the_deadline_not_more() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = PeerAddr::new(l.local_addr().expect("addr").to_string());
        let mut c = PeerCall::open(&addr, None, Duration::from_secs(2)).expect("open");
        let started = Instant::now();
        let e = c
            .post(
                "/p",
                &[],
                b"x",
                Instant::now() + Duration::from_millis(200),
                100,
            )
            .err()
            .expect("a timeout");
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{e}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        drop(l);
    }

    #[test]
    fn a_peer_that_answers_in_part_costs_the_deadline_not_more() {
        // Part of the answer 600 ms into a 1 s deadline, then silence: the read after it
        // waits only for what is left (to about 1.0 s), not for the timeout set when the
        // request went out (about 1.7 s).
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = PeerAddr::new(l.local_addr().expect("addr").to_string());
        let t = thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            // The pace of the answer is what is tested, not a wait for another thread.
            thread::sleep(Duration::from_millis(600));
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n[");
            let mut b = [0u8; 64];
            // Silent until the client gives up and closes.
            while matches!(s.read(&mut b), Ok(n) if n > 0) {}
        });
        let mut c = PeerCall::open(&addr, None, Duration::from_secs(2)).expect("open");
        let started = Instant::now();
        let deadline = started + Duration::from_secs(1);
        let e = c
            .post("/p", &[], b"x", deadline, 100)
            .err()
            .expect("a timeout");
        let took = started.elapsed();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{e}"
        );
        assert!(took < Duration::from_millis(1400), "{took:?}");
        drop(c);
        t.join().expect("peer");
    }

    #[test]
    fn a_connection_the_peer_closed_is_not_usable() {
        let ok: &'static [u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let (addr, t) = peer(vec![ok, ok]);
        let mut c = PeerCall::open(&addr, None, Duration::from_secs(2)).expect("open");
        c.post("/p", &[], b"", soon(), 10).expect("answer");
        // The peer waits for a second request.
        assert!(c.usable(), "open and answered");
        c.post("/p", &[], b"", soon(), 10).expect("answer");
        t.join().expect("peer closes its end");
        // The end arrives asynchronously after the peer closes: poll with a deadline.
        let until = Instant::now() + Duration::from_secs(5);
        while c.usable() && Instant::now() < until {
            thread::yield_now();
        }
        assert!(!c.usable());
    }

    #[test]
    fn a_failed_tls_handshake_is_a_connect_error() {
        // A peer that speaks plain HTTP: the handshake fails inside `open`, so the caller
        // knows nothing was sent (and looks for the leader again rather than resending).
        let (addr, t) = peer(vec![]);
        let tls = Arc::new(crate::tls::client_config(None, None).expect("client config"));
        let e = PeerCall::open(&addr, Some(&tls), Duration::from_secs(2))
            .err()
            .expect("no TLS there");
        assert!(e.to_string().contains("TLS handshake failed"), "{e}");
        t.join().expect("peer");
    }

    #[test]
    fn nothing_listening_is_a_connect_error() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = PeerAddr::new(l.local_addr().expect("addr").to_string());
        drop(l);
        assert!(PeerCall::open(&addr, None, Duration::from_secs(1)).is_err());
    }
}
