//! The peer senders: one thread per peer that ships whatever Raft messages queued for it as
//! one batch, a frame on a stream to the peer (`peer_stream`), or, to a member that serves
//! no streams (an older version), one `POST /v1/raft/messages` over a keep-alive
//! connection. Must not decide what to send (the core does) or retry anything itself (Raft
//! retransmits what matters).

use std::io::Read;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::peer_stream::{OpenError, PeerStream};
use super::{log_event, Shared, TOKEN_HEADER};
use crate::raft::{Envelope, PeerAddr};

/// Starts the sender of `peer` and returns its queue; dropping every handle of the queue
/// ends the thread (a member removed from the configuration).
pub(super) fn spawn(shared: &Shared, peer: PeerAddr) -> Sender<Envelope> {
    let (tx, rx) = mpsc::channel();
    let cfg = &shared.cfg;
    let timeout = Duration::from_millis(cfg.election_timeout_ms.max(200));
    let link = Link {
        url: cfg.peer_url(&peer, "/v1/raft/messages"),
        agent: cfg
            .peer_agent()
            .timeout_connect(timeout)
            .timeout(timeout)
            .build(),
        tls: cfg.tls.as_ref().map(|t| t.client.clone()),
        token: cfg.cluster_token.clone(),
        timeout,
        peer,
    };
    super::spawn_critical(&format!("send-{}", link.peer), move || run_sender(link, rx));
    tx
}

/// How to reach one peer.
pub(super) struct Link {
    pub peer: PeerAddr,
    /// Its `/v1/raft/messages`, for a peer without streams.
    pub url: String,
    pub agent: ureq::Agent,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub token: Option<String>,
    /// For connecting, and for each write or POST.
    pub timeout: Duration,
}

/// Largest batch a sender builds from queued messages (the peer endpoint accepts 64 MiB).
const MAX_PEER_POST_BYTES: usize = 16 << 20;

/// How a batch goes to the peer.
enum Mode {
    /// Frames on a stream, once opened.
    Stream(Option<PeerStream>),
    /// POSTs: the peer serves no streams. Streams are tried again after a failure (the
    /// peer may have been upgraded meanwhile).
    Post,
}

/// One sender per peer: ships whatever queued up as one batch. Failed batches are dropped;
/// Raft retransmits what matters (heartbeats, probes).
pub(super) fn run_sender(link: Link, rx: Receiver<Envelope>) {
    let agent = &link.agent;
    let peer = &link.peer;
    let mut mode = Mode::Stream(None);
    let mut failing_since: Option<Instant> = None;
    let mut carried: Option<Envelope> = None;
    // The frame header's room, then the batch: one buffer, one write.
    const AT: usize = crate::http::server::FRAME_HEADER_BYTES;
    while let Some(first) = carried.take().or_else(|| rx.recv().ok()) {
        // One batch for whatever queued up, up to a size well under the peer body limit;
        // the message that would pass it starts the next batch.
        let mut frame = vec![0u8; AT];
        frame.push(b'[');
        crate::wire::peer::encode_into(&mut frame, &first);
        for env in rx.try_iter() {
            // Encoded in place; one that would pass the limit is cut off again.
            let before = frame.len();
            frame.push(b',');
            crate::wire::peer::encode_into(&mut frame, &env);
            if frame.len() - AT > MAX_PEER_POST_BYTES {
                frame.truncate(before);
                carried = Some(env);
                break;
            }
        }
        frame.push(b']');
        let len = u32::try_from(frame.len() - AT).unwrap_or(u32::MAX);
        frame[..AT].copy_from_slice(&len.to_be_bytes());
        let sent = match &mut mode {
            Mode::Stream(open) => match send_on_stream(open, &link, &frame) {
                Err(OpenError::Unsupported) => {
                    log_event(&format!(
                        "peer {peer} serves no peer streams (an older version?): sending it POSTs"
                    ));
                    mode = Mode::Post;
                    post(agent, &link, &frame[AT..])
                }
                Err(OpenError::Failed(why)) => Err(why),
                Ok(()) => Ok(()),
            },
            Mode::Post => post(agent, &link, &frame[AT..]).inspect_err(|_| {
                mode = Mode::Stream(None);
            }),
        };
        match sent {
            Ok(()) => {
                if let Some(since) = failing_since.take() {
                    log_event(&format!(
                        "peer {peer} reachable again after {} ms",
                        since.elapsed().as_millis()
                    ));
                }
            }
            Err(why) => {
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    log_event(&format!("peer {peer} {why}"));
                }
                // Drop what queued meanwhile (stale heartbeats and appends), and pause
                // briefly so a dead peer does not cost a busy loop of connection attempts.
                carried = None;
                let _ = rx.try_iter().count();
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Writes one frame on the stream, opening it first if need be. A stream that was open
/// and breaks (the peer restarted, or closed it after its idle limit) is replaced once
/// before the peer counts as unreachable; the frame goes on the new one. If the broken
/// stream had delivered it after all, the peer gets it twice, which Raft takes (as it must
/// from any network).
fn send_on_stream(
    open: &mut Option<PeerStream>,
    link: &Link,
    frame: &[u8],
) -> Result<(), OpenError> {
    if let Some(s) = open.as_mut() {
        if s.send(frame).is_ok() {
            return Ok(());
        }
    }
    *open = None;
    let stream = open.insert(PeerStream::open(
        &link.peer,
        link.tls.as_ref(),
        link.token.as_deref(),
        link.timeout,
    )?);
    stream.send(frame).map_err(|e| {
        *open = None;
        OpenError::Failed(format!("unreachable: {e}"))
    })
}

/// Sends one batch as a `POST /v1/raft/messages`; why it failed, for the log.
fn post(agent: &ureq::Agent, link: &Link, body: &[u8]) -> Result<(), String> {
    let mut req = agent
        .post(&link.url)
        .set("Content-Type", "application/json");
    if let Some(t) = &link.token {
        req = req.set(TOKEN_HEADER, t);
    }
    match req.send_bytes(body) {
        Ok(_) => Ok(()),
        // A refusal says why (a wrong secret, not a member): show it.
        Err(ureq::Error::Status(code, resp)) => {
            let mut text = String::new();
            let _ = std::io::Read::take(resp.into_reader(), 1024).read_to_string(&mut text);
            let message =
                serde_json::from_str::<crate::wire::ErrorBody>(&text).map_or(text, |b| b.message);
            Err(format!("it refuses our messages ({code}): {message}"))
        }
        Err(other) => Err(format!("unreachable: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::raft::Message;

    /// A fake member on a loopback port: `serve` gets each connection (numbered from 0)
    /// on a thread of its own, and a sender for what it wants to report.
    fn fake_member(
        reports: mpsc::Sender<Vec<u8>>,
        serve: fn(usize, BufReader<std::net::TcpStream>, mpsc::Sender<Vec<u8>>),
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(conn) = conn else { return };
                let reports = reports.clone();
                thread::spawn(move || serve(n, BufReader::new(conn), reports));
            }
        });
        addr
    }

    /// Reads a request head: its target and `Content-Length`; `None` at the end.
    fn read_head(r: &mut BufReader<std::net::TcpStream>) -> Option<(String, usize)> {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        let target = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut length = 0;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return None;
            }
            if h == "\r\n" {
                return Some((target, length));
            }
            if let Some((n, v)) = h.split_once(':') {
                if n.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap();
                }
            }
        }
    }

    /// A member of an older version: no streams (404), batches by POST (each reported).
    fn old_member(posts: mpsc::Sender<Vec<u8>>) -> String {
        fake_member(posts, |_, mut r, posts| {
            while let Some((target, length)) = read_head(&mut r) {
                let mut body = vec![0; length];
                r.read_exact(&mut body).unwrap();
                let answer: &[u8] = if target == "/v1/raft/messages" {
                    let _ = posts.send(body);
                    b"HTTP/1.1 204 No Content\r\n\r\n"
                } else {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                };
                r.get_mut().write_all(answer).unwrap();
            }
        })
    }

    /// A member that serves streams and closes the first one after its first frame (as
    /// it would after a restart, or at its idle limit); every frame it reads is reported.
    fn closing_member(frames: mpsc::Sender<Vec<u8>>) -> String {
        fake_member(frames, |n, mut r, frames| {
            if read_head(&mut r).is_none() {
                return;
            }
            r.get_mut()
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: nacos-raft-frames/1\r\n\r\n")
                .unwrap();
            loop {
                let mut len = [0u8; 4];
                if r.read_exact(&mut len).is_err() {
                    return;
                }
                let mut body = vec![0; u32::from_be_bytes(len) as usize];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                let _ = frames.send(body);
                if n == 0 {
                    return;
                }
            }
        })
    }

    fn heartbeat(to: &PeerAddr, read_ctx: u64) -> Envelope {
        Envelope {
            from: PeerAddr::new("127.0.0.1:1"),
            to: to.clone(),
            term: 3,
            msg: Message::Heartbeat {
                leader_commit: 0,
                read_ctx,
            },
        }
    }

    fn read_ctx_of(body: &[u8]) -> u64 {
        let batch = crate::wire::peer::decode_batch(body).unwrap();
        match batch[0].as_ref().unwrap().msg {
            Message::Heartbeat { read_ctx, .. } => read_ctx,
            ref other => panic!("not a heartbeat: {other:?}"),
        }
    }

    /// A sender to `peer` on a thread of its own: its queue, and the thread (it ends once
    /// the queue is dropped).
    fn start_sender(
        peer: &PeerAddr,
        token: Option<&str>,
    ) -> (mpsc::Sender<Envelope>, thread::JoinHandle<()>) {
        let timeout = Duration::from_secs(5);
        let link = Link {
            url: format!("http://{peer}/v1/raft/messages"),
            agent: ureq::AgentBuilder::new().timeout(timeout).build(),
            tls: None,
            token: token.map(str::to_string),
            timeout,
            peer: peer.clone(),
        };
        let (tx, rx) = mpsc::channel();
        (tx, thread::spawn(move || run_sender(link, rx)))
    }

    #[test]
    fn a_stream_the_peer_closed_is_replaced_without_losing_the_frame() {
        let (frames_tx, frames) = mpsc::channel();
        let peer = PeerAddr::new(closing_member(frames_tx));
        let (tx, sender) = start_sender(&peer, None);
        tx.send(heartbeat(&peer, 1)).unwrap();
        let first = frames
            .recv_timeout(Duration::from_secs(10))
            .expect("frame 1");
        assert_eq!(read_ctx_of(&first), 1);
        // The peer closed that stream; once it has been quiet long enough to be checked,
        // the next frame goes on a new stream instead of into the closed one.
        thread::sleep(super::super::peer_stream::CHECK_AFTER_QUIET + Duration::from_millis(100));
        tx.send(heartbeat(&peer, 2)).unwrap();
        let second = frames
            .recv_timeout(Duration::from_secs(10))
            .expect("frame 2");
        assert_eq!(read_ctx_of(&second), 2);
        drop(tx);
        sender.join().unwrap();
    }

    #[test]
    fn a_peer_without_streams_gets_each_batch_as_a_post() {
        let (posts_tx, posts) = mpsc::channel();
        let peer = PeerAddr::new(old_member(posts_tx));
        let (tx, sender) = start_sender(&peer, Some("s3cret-s3cret-s3cret"));
        for read_ctx in [7, 8] {
            tx.send(heartbeat(&peer, read_ctx)).unwrap();
            let body = posts.recv_timeout(Duration::from_secs(10)).expect("a POST");
            assert_eq!(crate::wire::peer::decode_batch(&body).unwrap().len(), 1);
            assert_eq!(read_ctx_of(&body), read_ctx);
        }
        drop(tx);
        sender.join().unwrap();
    }
}
