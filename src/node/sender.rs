//! The peer senders: one thread per peer that ships whatever Raft messages queued for it as
//! one `POST /v1/raft/messages` over a keep-alive connection. Must not decide what to send
//! (the core does) or retry anything itself (Raft retransmits what matters).

use std::io::Read;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use super::{log_event, Shared, TOKEN_HEADER};
use crate::raft::{Envelope, PeerAddr};

/// Starts the sender of `peer` and returns its queue; dropping every handle of the queue
/// ends the thread (a member removed from the configuration).
pub(super) fn spawn(shared: &Shared, peer: PeerAddr) -> Sender<Envelope> {
    let (tx, rx) = mpsc::channel();
    let cfg = &shared.cfg;
    let token = cfg.cluster_token.clone();
    let timeout = Duration::from_millis(cfg.election_timeout_ms.max(200));
    let agent = cfg.peer_agent();
    let url = cfg.peer_url(&peer, "/v1/raft/messages");
    let m = shared.metrics.clone();
    super::spawn_critical(&format!("send-{peer}"), move || {
        run_sender(peer, url, agent, token, timeout, rx, &m)
    });
    tx
}

/// Largest POST a sender builds from queued messages (the peer endpoint accepts 64 MiB).
const MAX_PEER_POST_BYTES: usize = 16 << 20;

/// One sender per peer: ships whatever queued up as one POST over a keep-alive connection.
/// Failed batches are dropped; Raft retransmits what matters (heartbeats, probes).
pub(super) fn run_sender(
    peer: PeerAddr,
    url: String,
    agent: ureq::AgentBuilder,
    token: Option<String>,
    timeout: Duration,
    rx: Receiver<Envelope>,
    metrics: &super::metrics::Metrics,
) {
    // A handle of its own (the family's guard is dropped at the end of the statement: held,
    // it would keep the other senders from registering their peers).
    let rtt: prometheus_client::metrics::histogram::Histogram = metrics
        .peer_rtt
        .get_or_create(&super::metrics::PeerLabel {
            peer: peer.0.clone(),
        })
        .clone();
    let agent = agent.timeout_connect(timeout).timeout(timeout).build();
    let mut failing_since: Option<Instant> = None;
    let mut carried: Option<Envelope> = None;
    while let Some(first) = carried.take().or_else(|| rx.recv().ok()) {
        // One POST for whatever queued up, up to a size well under the peer body limit; the
        // message that would pass it starts the next POST.
        let mut body = b"[".to_vec();
        crate::wire::peer::encode_into(&mut body, &first);
        for env in rx.try_iter() {
            let mut one = Vec::new();
            crate::wire::peer::encode_into(&mut one, &env);
            if body.len() + one.len() > MAX_PEER_POST_BYTES {
                carried = Some(env);
                break;
            }
            body.push(b',');
            body.extend_from_slice(&one);
        }
        body.push(b']');
        let mut req = agent.post(&url).set("Content-Type", "application/json");
        if let Some(t) = &token {
            req = req.set(TOKEN_HEADER, t);
        }
        let sent = Instant::now();
        match req.send_bytes(&body) {
            Ok(_) => {
                rtt.observe(sent.elapsed().as_secs_f64());
                if let Some(since) = failing_since.take() {
                    log_event(&format!(
                        "peer {peer} reachable again after {} ms",
                        since.elapsed().as_millis()
                    ));
                }
            }
            Err(e) => {
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    let why = match e {
                        // A refusal says why (a wrong secret, not a member): show it.
                        ureq::Error::Status(code, resp) => {
                            let mut text = String::new();
                            let _ = std::io::Read::take(resp.into_reader(), 1024)
                                .read_to_string(&mut text);
                            let message = serde_json::from_str::<crate::wire::ErrorBody>(&text)
                                .map_or(text, |b| b.message);
                            format!("it refuses our messages ({code}): {message}")
                        }
                        other => format!("unreachable: {other}"),
                    };
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
