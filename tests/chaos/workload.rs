//! The chaos suite's clients: timed, recorded requests (write, linearizable read, delete) and
//! the threads that send them concurrently over a handful of keys.
//!
//! This is where an answer is turned into an outcome (docs/http-api.md):
//! - 200 is `ok`; a 404 on a read is `ok` (absent); a 404 on a delete is an `ok` delete of a
//!   key that did not exist (the delete is still a committed no-op).
//! - 503 `no_leader` / `not_leader`, or a connection refused before anything was sent, is
//!   `fail`: the write did not happen, and a run fails if such a write is in the committed
//!   log. (A follower used to answer `not_leader` when the leader it forwarded to died after
//!   committing: `known_bugs.rs`. `CHAOS_LENIENT_503=1` treats a `not_leader` naming a leader
//!   as indeterminate again, to tell that bug from others if it ever returns.)
//! - Deletes go through a fresh client each time: on a pooled connection ureq silently resends
//!   a DELETE (an idempotent method in HTTP) when the connection closes before the answer, and
//!   the resend's "connection refused" would then hide a delivered first attempt
//!   (`known_bugs.rs` pins this in `nacos_raft::client`).
//! - 504 `timeout`, the client's own timeout, a connection lost after the request was sent and
//!   any other 503 (`shutting_down` can come after the entry was appended) are `indeterminate`.
//! - Anything else (a 500, a body that does not parse) is `indeterminate` and flagged as
//!   unexpected, which fails the run.
//!
//! Every request is bounded by the client's timeout, so no thread can hang.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nacos_raft::client::{Client, ClientError, UnavailableKind};
use serde_json::Value;

use crate::history::{since, Kind, Outcome, Record};
use crate::rng::Rng;

/// Who sends a request: a client id for the history and a label for the endpoint(s).
#[derive(Clone)]
pub struct Sender {
    pub client_id: u64,
    pub label: String,
    pub client: Client,
}

impl Sender {
    /// A sender to one node only: the answer is that node's.
    pub fn to_node(client_id: u64, addr: &str, timeout: Duration) -> Sender {
        Sender {
            client_id,
            label: addr.to_string(),
            client: crate::cluster::client(vec![addr.to_string()], timeout),
        }
    }

    /// A sender that fails over across `addrs` as `nacosctl` does.
    pub fn to_any(client_id: u64, addrs: &[String], timeout: Duration) -> Sender {
        Sender {
            client_id,
            label: "any".into(),
            client: crate::cluster::client(addrs.to_vec(), timeout),
        }
    }

    fn record(&self, kind: Kind, key: &str, call_ns: u64, epoch: Instant) -> Record {
        Record {
            client: self.client_id,
            node: self.label.clone(),
            kind,
            key: key.to_string(),
            value: None,
            existed: None,
            expect: None,
            applied: None,
            call_ns,
            return_ns: since(epoch),
            outcome: Outcome::Indeterminate,
            timestamp: None,
            index: None,
            term: None,
            error: None,
            unexpected: false,
        }
    }

    /// Publishes `value` (a JSON string) under `key`.
    pub fn write(&self, key: &str, value: &str, epoch: Instant) -> Record {
        let call = since(epoch);
        let result = self.client.put(key, Value::String(value.to_string()));
        let mut r = self.record(Kind::Write, key, call, epoch);
        r.value = Some(value.to_string());
        match result {
            Ok(p) => {
                r.outcome = Outcome::Ok;
                r.timestamp = Some(p.timestamp);
                r.index = Some(p.index);
                r.term = Some(p.term);
            }
            Err(e) => failed_write(&mut r, &e),
        }
        r
    }

    /// Publishes `value` under `key` if the key's timestamp is `expect` (0: absent).
    pub fn cas(&self, key: &str, expect: u64, value: &str, epoch: Instant) -> Record {
        let call = since(epoch);
        let result = self
            .client
            .put_if(key, Value::String(value.to_string()), Some(expect));
        let mut r = self.record(Kind::Cas, key, call, epoch);
        r.value = Some(value.to_string());
        r.expect = Some(expect);
        match result {
            Ok(p) => {
                r.outcome = Outcome::Ok;
                r.applied = Some(true);
                r.timestamp = Some(p.timestamp);
                r.index = Some(p.index);
                r.term = Some(p.term);
            }
            Err(ClientError::PreconditionFailed { current, .. }) => {
                r.outcome = Outcome::Ok;
                r.applied = Some(false);
                r.timestamp = Some(current);
            }
            Err(e) => failed_write(&mut r, &e),
        }
        r
    }

    /// Deletes `key`. (Sent again under the same request id if its answer is lost, as every
    /// write of the client is: applied once.)
    pub fn delete(&self, key: &str, epoch: Instant) -> Record {
        let call = since(epoch);
        let result = self.client.delete(key);
        let mut r = self.record(Kind::Delete, key, call, epoch);
        match result {
            Ok(d) => {
                r.outcome = Outcome::Ok;
                r.existed = Some(true);
                r.index = Some(d.index);
                r.term = Some(d.term);
            }
            Err(ClientError::NotFound { .. }) => {
                r.outcome = Outcome::Ok;
                r.existed = Some(false);
            }
            Err(e) => failed_write(&mut r, &e),
        }
        r
    }

    /// A linearizable read of `key`.
    pub fn read(&self, key: &str, epoch: Instant) -> Record {
        let call = since(epoch);
        let result = self.client.get(key, false);
        let mut r = self.record(Kind::Read, key, call, epoch);
        match result {
            Ok(g) => {
                r.outcome = Outcome::Ok;
                r.value = Some(value_text(&g.value));
                r.timestamp = Some(g.timestamp);
                r.index = Some(g.index);
            }
            Err(ClientError::NotFound { .. }) => r.outcome = Outcome::Ok,
            Err(e) => {
                r.outcome = Outcome::Fail;
                r.unexpected = is_unexpected(&e);
                r.error = Some(e.to_string());
            }
        }
        r
    }
}

/// A stored value as the history holds it: a JSON string as its text, anything else as JSON.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn failed_write(r: &mut Record, e: &ClientError) {
    r.outcome = write_error_outcome(e);
    r.unexpected = is_unexpected(e);
    r.error = Some(e.to_string());
}

/// What a failed write or delete proves (see the module docs).
pub fn write_error_outcome(e: &ClientError) -> Outcome {
    match e {
        ClientError::Unavailable { kind, message, .. } => match kind {
            UnavailableKind::NotLeader if leader_named(e) && !strict_503() => {
                Outcome::Indeterminate
            }
            UnavailableKind::NoLeader | UnavailableKind::NotLeader => Outcome::Fail,
            // The client reports a connection that never opened this way; a connection lost
            // after sending says "connection lost".
            UnavailableKind::Unreachable
            | UnavailableKind::TimedOut
            | UnavailableKind::ConnectionLost
                if message.starts_with("connection refused")
                    || message.starts_with("could not connect") =>
            {
                Outcome::Fail
            }
            _ => Outcome::Indeterminate,
        },
        _ => Outcome::Indeterminate,
    }
}

fn leader_named(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Unavailable {
            leader: Some(_),
            ..
        }
    )
}

/// Every 503 `not_leader` means "did not happen", as documented, unless
/// `CHAOS_LENIENT_503=1`.
pub fn strict_503() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| !std::env::var("CHAOS_LENIENT_503").is_ok_and(|v| v == "1"))
}

fn is_unexpected(e: &ClientError) -> bool {
    match e {
        ClientError::Unavailable { .. } | ClientError::NotFound { .. } => false,
        // The workload sends no conditional writes.
        ClientError::PreconditionFailed { .. }
        | ClientError::Server { .. }
        | ClientError::BadResponse { .. }
        | ClientError::InvalidEndpoint { .. } => true,
    }
}

/// The concurrent clients of a run.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub threads: usize,
    pub keys: Vec<String>,
    /// Bound of every request.
    pub timeout: Duration,
    /// Percent of writes, of deletes and of compare-and-sets (each a read, then a write
    /// conditioned on the timestamp read); the rest are reads.
    pub write_pct: u64,
    pub delete_pct: u64,
    pub cas_pct: u64,
    /// Percent of requests sent through a failover client of all nodes rather than one node.
    pub any_pct: u64,
    /// Pause of each client between requests: caps the request rate, and with it the size of
    /// the history the checker must search (a release build serves thousands per second).
    pub think: Duration,
}

/// Starts `cfg.threads` clients that run until `stop` is set; each returns its records.
/// Client `t` uses random stream `t` of `seed`: its choices (operation, key, node) are fixed
/// by the seed.
pub fn spawn(
    cfg: &WorkloadConfig,
    addrs: &[String],
    epoch: Instant,
    seed: u64,
    stop: &Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<Vec<Record>>> {
    (0..cfg.threads)
        .map(|t| {
            let cfg = cfg.clone();
            let stop = stop.clone();
            let client_id = t as u64;
            let senders: Vec<Sender> = addrs
                .iter()
                .map(|a| Sender::to_node(client_id, a, cfg.timeout))
                .collect();
            let mut order = addrs.to_vec();
            let mut rng = Rng::fork(seed, 1000 + client_id);
            rng.shuffle(&mut order);
            let any = Sender::to_any(client_id, &order, cfg.timeout);
            thread::Builder::new()
                .name(format!("chaos-client-{t}"))
                .spawn(move || {
                    let mut records = Vec::new();
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = rng.pick(&cfg.keys).clone();
                        let sender = if rng.percent(cfg.any_pct) {
                            &any
                        } else {
                            rng.pick(&senders)
                        };
                        let roll = rng.below(100);
                        let r = if roll < cfg.write_pct {
                            seq += 1;
                            // Unique across the run, so a read names the one write it saw.
                            sender.write(&key, &format!("c{client_id}-{seq}"), epoch)
                        } else if roll < cfg.write_pct + cfg.delete_pct {
                            sender.delete(&key, epoch)
                        } else if roll < cfg.write_pct + cfg.delete_pct + cfg.cas_pct {
                            let read = sender.read(&key, epoch);
                            match read.outcome {
                                Outcome::Ok => {
                                    let seen = read.timestamp.unwrap_or(0);
                                    records.push(read);
                                    seq += 1;
                                    let v = format!("c{client_id}-{seq}");
                                    sender.cas(&key, seen, &v, epoch)
                                }
                                // The read failed: it stands for this turn.
                                _ => read,
                            }
                        } else {
                            sender.read(&key, epoch)
                        };
                        let failed = r.outcome == Outcome::Fail;
                        records.push(r);
                        // Load shaping, not waiting for anything: the think time, and a back-off
                        // after a failure so that a client facing a dead node does not spin on
                        // refused connections.
                        let pause = if failed {
                            cfg.think.max(Duration::from_millis(20))
                        } else {
                            cfg.think
                        };
                        if !pause.is_zero() {
                            thread::sleep(pause);
                        }
                    }
                    records
                })
                .expect("spawn client thread")
        })
        .collect()
}

/// What each kind of failure proves; the module docs give the reasons.
mod tests {
    use super::*;

    fn unavailable(kind: UnavailableKind, message: &str, leader: Option<&str>) -> ClientError {
        ClientError::Unavailable {
            endpoint: "n".into(),
            kind,
            message: message.into(),
            leader: leader.map(str::to_string),
        }
    }

    #[test]
    fn only_a_refusal_proves_a_write_did_not_happen() {
        use UnavailableKind as K;
        let fail = [
            unavailable(K::NoLeader, "no leader", None),
            unavailable(K::NotLeader, "leadership changed", None),
            unavailable(K::Unreachable, "connection refused", None),
            unavailable(K::TimedOut, "could not connect: timed out", None),
        ];
        for e in &fail {
            assert_eq!(write_error_outcome(e), Outcome::Fail, "{e}");
        }
        let unknown = [
            unavailable(K::WriteTimeout, "not confirmed", None),
            unavailable(K::TimedOut, "no answer within 3s", None),
            unavailable(
                K::Unreachable,
                "connection lost after the write was sent",
                None,
            ),
            unavailable(K::ServiceUnavailable, "shutting down", None),
            ClientError::Server {
                endpoint: "n".into(),
                status: 500,
                error: "internal".into(),
                message: "boom".into(),
            },
        ];
        for e in &unknown {
            assert_eq!(write_error_outcome(e), Outcome::Indeterminate, "{e}");
        }
        let named = unavailable(K::NotLeader, "the leader is x", Some("x"));
        let expected = if strict_503() {
            Outcome::Fail
        } else {
            Outcome::Indeterminate
        };
        assert_eq!(write_error_outcome(&named), expected);
    }
}
