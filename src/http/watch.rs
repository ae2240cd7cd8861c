//! `GET /v1/watch`: streams CHANGE / DELETE events as JSON lines, resuming from an index.
//!
//! The body is close-delimited and written straight to the socket, one flushed line per
//! event (tiny_http's chunked encoder would hold small events back). A `PROGRESS` line every
//! second when idle carries the applied index and lets both ends notice a dead connection.

use std::io::Write;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use serde_json::json;

use super::error::ErrorBody;
use super::{Request, Response};
use crate::error::Error;
use crate::node::{Event, Node};

/// How often an idle watch sends a `PROGRESS` line.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

pub struct Watch {
    id: u64,
    replay: Vec<Event>,
    rx: Receiver<Event>,
}

/// Validates the request and subscribes; an error is an ordinary JSON error response.
pub fn start(node: &Node, req: &Request) -> Result<Watch, Response> {
    let bad = |m: String| Response::error(&Error::BadRequest(m));
    let (key, prefix) = match (req.param("key"), req.param("prefix")) {
        (Some(k), None) => {
            crate::validate_key(k).map_err(|e| Response::error(&e))?;
            (k, false)
        }
        (None, Some(p)) => (p, true),
        _ => return Err(bad("give exactly one of `key` or `prefix`".into())),
    };
    let from = match req.param("from_index") {
        None => None,
        Some(i) => Some(
            i.parse::<u64>()
                .map_err(|_| bad(format!("from_index {i:?} is not a number")))?,
        ),
    };
    match node.state().watch(key, prefix, from) {
        Ok((id, replay, rx)) => Ok(Watch { id, replay, rx }),
        Err(c) => Err(Response::json(
            410,
            &ErrorBody::new(
                "compacted",
                format!(
                    "events before index {} are no longer kept; read the current values (get or ls) and watch again from index {}",
                    c.floor, c.floor
                ),
            ),
        )),
    }
}

fn line(out: &mut dyn Write, v: &serde_json::Value) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(v).expect("events serialise");
    bytes.push(b'\n');
    out.write_all(&bytes)?;
    out.flush()
}

fn event_json(e: &Event) -> serde_json::Value {
    serde_json::to_value(e).expect("events serialise")
}

/// Streams until the client goes away (a write fails).
pub fn stream(node: &Node, rq: tiny_http::Request, w: Watch) {
    let mut out = rq.into_writer();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
    let result = (|| -> std::io::Result<()> {
        out.write_all(head.as_bytes())?;
        for e in &w.replay {
            line(&mut out, &event_json(e))?;
        }
        loop {
            match w.rx.recv_timeout(PROGRESS_INTERVAL) {
                Ok(e) => line(&mut out, &event_json(&e))?,
                Err(RecvTimeoutError::Timeout) => {
                    // Every event up to `notified` is already in our channel (they are
                    // queued under the same lock that moves it), so after draining it the
                    // PROGRESS line never runs ahead of an event it covers.
                    let notified = node.state().notified_index();
                    for e in w.rx.try_iter() {
                        line(&mut out, &event_json(&e))?;
                    }
                    line(&mut out, &json!({"event": "PROGRESS", "index": notified}))?;
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    })();
    let _ = result;
    node.state().unlisten(w.id);
}
