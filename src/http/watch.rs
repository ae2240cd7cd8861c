//! `GET /v1/watch`: streams CHANGE / DELETE events as JSON lines, resuming from an index.
//!
//! The body is close-delimited and written straight to the socket, one flushed line per
//! event (tiny_http's chunked encoder would hold small events back). A `PROGRESS` line every
//! second when idle carries the applied index and lets both ends notice a dead connection.

use std::io::Write;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use super::{Request, Response};
use crate::error::Error;
use crate::node::{Event, EventKind, Node};
use crate::wire::api::{WatchEvent, WatchEventKind, WatchLine};
use crate::wire::ErrorCode;

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
        Err(c) => Err(Response::refusal(
            ErrorCode::Compacted,
            format!(
                "events before index {} are no longer kept; read the current values (get or ls) and watch again from index {}",
                c.floor, c.floor
            ),
        )),
    }
}

fn line(out: &mut dyn Write, l: &WatchLine) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(l).expect("watch lines serialise");
    bytes.push(b'\n');
    out.write_all(&bytes)?;
    out.flush()
}

/// The wire form of a notifier event (a DELETE has a `null` value).
fn event_line(e: Event) -> WatchLine {
    WatchLine::Event(WatchEvent {
        event: match e.event {
            EventKind::Change => WatchEventKind::Change,
            EventKind::Delete => WatchEventKind::Delete,
        },
        key: e.key,
        value: e.value.unwrap_or_default(),
        timestamp: e.timestamp,
        index: e.index,
    })
}

/// Streams until the client goes away (a write fails).
pub fn stream(node: &Node, rq: tiny_http::Request, mut w: Watch) {
    let replay = std::mem::take(&mut w.replay);
    let mut out = rq.into_writer();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
    let result = (|| -> std::io::Result<()> {
        out.write_all(head.as_bytes())?;
        for e in replay {
            line(&mut out, &event_line(e))?;
        }
        loop {
            match w.rx.recv_timeout(PROGRESS_INTERVAL) {
                Ok(e) => line(&mut out, &event_line(e))?,
                Err(RecvTimeoutError::Timeout) => {
                    // Every event up to `notified` is already in our channel (they are
                    // queued under the same lock that moves it), so after draining it the
                    // PROGRESS line never runs ahead of an event it covers.
                    let notified = node.state().notified_index();
                    for e in w.rx.try_iter() {
                        line(&mut out, &event_line(e))?;
                    }
                    line(&mut out, &WatchLine::Progress { index: notified })?;
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    })();
    let _ = result;
    node.state().unlisten(w.id);
}
