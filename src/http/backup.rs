//! Moving datums in and out: `POST /v1/import` (datums with their own Nacos timestamps, on
//! the leader) and `GET /v1/snapshot` (a backup file, `store::backup`, streamed from a
//! copy-on-write view of the datum set, so it is the exact state at one index while writes
//! go on).
//!
//! Must not decide what an import means (the datum set applies it, in log order) nor hold
//! more than one page of datums at a time.

use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{auth, server, Request, Response};
use crate::error::{Error, Result};
use crate::node::datum_set::FreezeRefused;
use crate::node::Node;
use crate::store::backup::{BackupHeader, BackupWriter, FORMAT};
use crate::wire::api::{ImportRequest, ImportResult};

/// Datums read from the view at a time while streaming a backup.
const PAGE: usize = 1000;

/// `POST /v1/import`: on the leader only (a follower answers `503 not_leader` naming it,
/// and clients go there), since an import is large and idempotent and needs no forwarding.
pub(super) fn import(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let body: ImportRequest = serde_json::from_slice(&req.body).map_err(|e| {
        Error::BadRequest(format!(
            "the body must be JSON {{\"datums\": [{{\"key\": \"...\", \"value\": <any JSON>, \"timestamp\": N}}, ...]}}: {e}"
        ))
    })?;
    crate::raft::check_import(&body.datums).map_err(Error::BadRequest)?;
    let caller = auth::caller(node, req, deadline)?;
    for d in &body.datums {
        caller.check(node, crate::auth::Access::Write, &d.key, deadline)?;
    }
    auth::leading(node, deadline)?;
    let sent = body.datums.len() as u64;
    let (skipped, at) = node.import(body.datums, caller.user().map(str::to_string), deadline)?;
    Ok(Response::json(
        200,
        &ImportResult {
            imported: sent - skipped.len() as u64,
            skipped,
            term: at.term,
            index: at.index,
        },
    ))
}

/// Checks a `GET /v1/snapshot` before the stream starts: root only (a backup holds every
/// datum and the password hashes), and, unless `stale`, a ReadIndex barrier so the backup
/// holds every write acknowledged before the request.
pub(super) fn start_snapshot(node: &Node, req: &Request) -> Result<()> {
    let deadline = Instant::now() + node.publish_timeout();
    auth::caller(node, req, deadline)?.check_root(node, "taking a backup")?;
    if !req.flag("stale") {
        node.linearizable_barrier(deadline)?;
    }
    Ok(())
}

/// Streams the backup; the body is close-delimited. A refusal before the first byte is an
/// ordinary error answer; a failure midway ends the file with an ABORT record (or, if the
/// client went away, nothing), so no reader takes it for a backup.
pub(super) fn stream_snapshot(node: &Node, mut out: &mut dyn Write) {
    let view = match node.datums().freeze() {
        Ok(v) => v,
        Err(why) => {
            let e = Error::Busy(match why {
                FreezeRefused::Busy => {
                    "a backup is being taken from this member already; wait for it, or take this one from another member".into()
                }
                FreezeRefused::Converging => {
                    "this member is still replaying its log after a restart or a snapshot install; try again in a moment".into()
                }
            });
            let _ = server::write_response(&mut out, &Response::error(&e), false, false);
            return;
        }
    };
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
    let header = BackupHeader {
        format: FORMAT,
        index: view.index,
        term: view.term,
        source: node.config().advertise.0.clone(),
        created_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    let result = (|| -> std::io::Result<()> {
        out.write_all(head.as_bytes())?;
        let mut w = BackupWriter::start(&mut out, &header, &view.auth)?;
        let mut after: Option<String> = None;
        loop {
            let Some(page) = view.page(after.as_deref(), PAGE) else {
                return w.abort(
                    "the member installed a snapshot from its leader meanwhile, which replaced the state being read",
                );
            };
            for d in &page {
                w.add(d)?;
            }
            if page.len() < PAGE {
                break;
            }
            after = page.last().map(|d| d.key.clone());
        }
        let (_, count, sha) = w.finish()?;
        crate::node::log_event(&format!(
            "backup at index {} ({count} datums, sha256 {sha}) sent",
            view.index
        ));
        Ok(())
    })();
    if let Err(e) = result {
        crate::node::log_event(&format!("backup at index {} not finished: {e}", view.index));
    }
}
