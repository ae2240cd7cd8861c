//! `GET /v1/watch`: streams CHANGE / DELETE events as JSON lines, resuming from an index.
//!
//! The body is close-delimited and written straight to the socket, one flushed line per
//! event. A resumed watch replays the notifier's history a page at a time. A `PROGRESS` line every
//! second when idle carries the applied index and lets both ends notice a dead connection.

use std::io::Write;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use super::{Request, Response};
use crate::error::Error;
use crate::node::notifier::{Subscription, WatchRefused};
use crate::node::{Event, EventKind, Node};
use crate::wire::api::{WatchEvent, WatchEventKind, WatchLine};
use crate::wire::ErrorCode;

/// How often an idle watch sends a `PROGRESS` line.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

pub struct Watch {
    key: String,
    prefix: bool,
    sub: Subscription,
    /// With access control on, events of keys the caller may not read are left out
    /// (checked per event, so a revoked permission takes effect mid-stream).
    caller: super::auth::Caller,
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
    let deadline = std::time::Instant::now() + node.publish_timeout();
    let caller = super::auth::caller(node, req, deadline).map_err(|e| Response::error(&e))?;
    if !prefix {
        caller
            .check(node, crate::auth::Access::Read, key, deadline)
            .map_err(|e| Response::error(&e))?;
    }
    let from = match req.param("from_index") {
        None => None,
        Some(i) => Some(
            i.parse::<u64>()
                .map_err(|_| bad(format!("from_index {i:?} is not a number")))?,
        ),
    };
    match node.datums().notifier().subscribe(key, prefix, from) {
        Ok(sub) => Ok(Watch {
            key: key.to_string(),
            prefix,
            sub,
            caller,
        }),
        Err(WatchRefused::Compacted { floor }) => Err(Response::refusal(
            ErrorCode::Compacted,
            format!(
                "events before index {floor} are no longer kept; read the current values (get or ls) and watch again from index {floor}"
            ),
        )),
        Err(WatchRefused::TooMany { limit }) => Err(Response::refusal(
            ErrorCode::Busy,
            format!("this member serves {limit} watches already (--max-watchers); watch through another member"),
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
fn event_line(e: &Event) -> WatchLine {
    WatchLine::Event(WatchEvent {
        event: match e.event {
            EventKind::Change => WatchEventKind::Change,
            EventKind::Delete => WatchEventKind::Delete,
        },
        key: e.key.clone(),
        value: e.value.clone().unwrap_or_default(),
        timestamp: e.timestamp,
        index: e.index,
    })
}

/// Events per page of a replay: the notifier's lock is held for one page at a time.
const REPLAY_PAGE: usize = 256;

/// Streams until the client goes away (a write fails), the watch falls too far behind
/// (its queue overflowed, or a replay was overtaken by the history's trimming: the client
/// resumes from the last index it got and is told if that is no longer kept), or the member
/// installs a snapshot.
pub fn stream(node: &Node, out: &mut dyn Write, w: Watch) {
    let notifier = node.datums().notifier();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
    let event = |out: &mut dyn Write, e: &Event| {
        if w.caller.shut_out(node) {
            // Access control came on: this stream was opened without a login.
            return Err(std::io::Error::other("access control turned on"));
        }
        if w.caller.may_read(node, &e.key) {
            line(out, &event_line(e))
        } else {
            Ok(())
        }
    };
    let result = (|| -> std::io::Result<()> {
        out.write_all(head.as_bytes())?;
        if let Some((mut from, upto)) = w.sub.replay {
            while from <= upto {
                let Ok((page, next)) =
                    notifier.replay_page(&w.key, w.prefix, from, upto, REPLAY_PAGE)
                else {
                    return Ok(());
                };
                for e in &page {
                    event(out, e)?;
                }
                from = next;
            }
        }
        loop {
            match w.sub.rx.recv_timeout(PROGRESS_INTERVAL) {
                Ok(e) => event(out, &e)?,
                Err(RecvTimeoutError::Timeout) => {
                    if w.caller.shut_out(node) {
                        return Ok(());
                    }
                    // Every event up to `notified` is already in our channel (they are
                    // queued under the same lock that moves it), so after draining it the
                    // PROGRESS line never runs ahead of an event it covers.
                    let notified = notifier.notified();
                    for e in w.sub.rx.try_iter() {
                        event(out, &e)?;
                    }
                    line(out, &WatchLine::Progress { index: notified })?;
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    })();
    let _ = result;
    notifier.unsubscribe(w.sub.id);
}
