//! How a failed attempt is classified: an HTTP error answer or a transport failure becomes
//! a [`ClientError`] and a verdict on whether another endpoint may be tried (`Attempt`), and
//! the failures of every endpoint are reduced to the one reported.

use std::error::Error as _;
use std::io;
use std::time::Duration;

use super::{fmt_duration, Attempt, ClientError, UnavailableKind, COULD_NOT_CONNECT};
use crate::wire::{ErrorBody, ErrorCode};

pub(super) fn classify_status<T>(
    endpoint: String,
    status: u16,
    text: &str,
    key: Option<&str>,
) -> Attempt<T> {
    let body: ErrorBody = serde_json::from_str(text).unwrap_or_else(|_| {
        // Not our error body (a proxy, another server): keep a bounded excerpt of it.
        ErrorBody::new(
            ErrorCode::Unknown(String::new()),
            text.chars().take(200).collect::<String>(),
        )
    });
    let message = if body.message.is_empty() {
        format!("HTTP {status} with no message")
    } else {
        body.message
    };
    match (status, body.error) {
        (404, ErrorCode::NotFound) => Attempt::Fail(ClientError::NotFound {
            key: key.unwrap_or_default().to_string(),
        }),
        (412, ErrorCode::PreconditionFailed) => Attempt::Fail(ClientError::PreconditionFailed {
            key: key.unwrap_or_default().to_string(),
            current: body.timestamp.unwrap_or(0),
            message,
        }),
        (503, code) => {
            let kind = match code {
                ErrorCode::NoLeader => UnavailableKind::NoLeader,
                ErrorCode::NotLeader => UnavailableKind::NotLeader,
                _ => UnavailableKind::ServiceUnavailable,
            };
            // A 503 means the node did not act on the request, so another may.
            Attempt::Next(ClientError::Unavailable {
                endpoint,
                kind,
                message,
                leader: body.leader,
            })
        }
        (504, _) => Attempt::Fail(ClientError::Unavailable {
            endpoint,
            kind: UnavailableKind::WriteTimeout,
            message,
            leader: None,
        }),
        (status, code) => Attempt::Fail(ClientError::Server {
            endpoint,
            status,
            error: match code {
                ErrorCode::Unknown(c) if c.is_empty() => ErrorCode::Unknown("unknown".into()),
                code => code,
            },
            message,
        }),
    }
}

pub(super) fn classify_transport<T>(
    endpoint: String,
    t: &ureq::Transport,
    budget: Duration,
    idempotent: bool,
) -> Attempt<T> {
    use ureq::ErrorKind as K;
    let io = io_kind(t);
    let timed_out_kind = matches!(
        io,
        Some(io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
    );
    match t.kind() {
        K::InvalidUrl | K::UnknownScheme => Attempt::Fail(ClientError::InvalidEndpoint {
            endpoint,
            message: t.to_string(),
        }),
        // Nothing was sent: any endpoint may be tried next, writes included.
        K::ConnectionFailed | K::Dns => {
            let message = match (t.kind(), io) {
                (K::Dns, _) => "cannot resolve the host name".to_string(),
                (_, Some(io::ErrorKind::ConnectionRefused)) => "connection refused".to_string(),
                _ if timed_out_kind => format!("{COULD_NOT_CONNECT}: timed out"),
                _ => format!("{COULD_NOT_CONNECT}: {}", explain_tls(&cause(t))),
            };
            let kind = if timed_out_kind {
                UnavailableKind::TimedOut
            } else {
                UnavailableKind::Unreachable
            };
            Attempt::Next(ClientError::Unavailable {
                endpoint,
                kind,
                message,
                leader: None,
            })
        }
        K::Io if timed_out_kind => {
            let err = timed_out(&endpoint, budget, idempotent);
            if idempotent {
                Attempt::Next(err)
            } else {
                Attempt::Fail(err)
            }
        }
        // Reset or closed after the request went out: only a read may be sent again.
        K::Io => {
            let err = ClientError::Unavailable {
                endpoint,
                kind: UnavailableKind::ConnectionLost,
                message: if idempotent {
                    format!("connection lost: {}", cause(t))
                } else {
                    format!(
                        "connection lost after the write was sent ({}); it may still be applied: read the key before retrying",
                        cause(t)
                    )
                },
                leader: None,
            };
            if idempotent {
                Attempt::Next(err)
            } else {
                Attempt::Fail(err)
            }
        }
        _ => Attempt::Fail(ClientError::BadResponse {
            endpoint,
            message: t.to_string(),
        }),
    }
}

pub(super) fn timed_out(endpoint: &str, budget: Duration, idempotent: bool) -> ClientError {
    let mut message = format!("no answer within {}", fmt_duration(budget));
    if !idempotent {
        message.push_str("; the write may still be applied: read the key before retrying");
    }
    ClientError::Unavailable {
        endpoint: endpoint.to_string(),
        kind: UnavailableKind::TimedOut,
        message,
        leader: None,
    }
}

/// Reduces the failures of every endpoint to one error: a node's own answer says more than
/// a timeout, which says more than a refused connection; the others are named after it.
pub(super) fn combine(mut failures: Vec<ClientError>, timeout: Duration) -> ClientError {
    fn rank(e: &ClientError) -> u8 {
        match e {
            ClientError::Unavailable { kind, .. } => match kind {
                UnavailableKind::NoLeader | UnavailableKind::NotLeader => 3,
                UnavailableKind::ServiceUnavailable | UnavailableKind::WriteTimeout => 2,
                UnavailableKind::TimedOut | UnavailableKind::ConnectionLost => 1,
                UnavailableKind::Unreachable => 0,
            },
            _ => 4,
        }
    }
    if failures.is_empty() {
        // Only when the deadline passed before the first attempt (a zero timeout).
        return ClientError::Unavailable {
            endpoint: String::new(),
            kind: UnavailableKind::TimedOut,
            message: format!("no endpoint tried within {}", fmt_duration(timeout)),
            leader: None,
        };
    }
    let best = (0..failures.len())
        .max_by_key(|&i| (rank(&failures[i]), std::cmp::Reverse(i)))
        .expect("not empty");
    let mut chosen = failures.remove(best);
    if !failures.is_empty() {
        let others: Vec<String> = failures.iter().map(|e| e.to_string()).collect();
        if let ClientError::Unavailable { message, .. } = &mut chosen {
            message.push_str(&format!(" (also tried {})", others.join("; ")));
        }
    }
    chosen
}

/// The `io::ErrorKind` at the root of a transport error, if there is one.
fn io_kind(t: &ureq::Transport) -> Option<io::ErrorKind> {
    let mut source = t.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        source = e.source();
    }
    None
}

pub(super) fn is_timeout(e: &io::Error) -> bool {
    if matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) {
        return true;
    }
    // ureq wraps the body reader's errors; look one level down.
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<io::Error>())
        .is_some_and(|inner| {
            matches!(
                inner.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            )
        })
}

/// The innermost message of a transport error, without ureq's URL prefix.
fn cause(t: &ureq::Transport) -> String {
    let mut msg = t.message().map(str::to_string);
    let mut source = t.source();
    while let Some(e) = source {
        msg = Some(e.to_string());
        source = e.source();
    }
    msg.unwrap_or_else(|| t.kind().to_string())
}

/// What a TLS failure means for the operator, with the cause as rustls named it.
fn explain_tls(cause: &str) -> String {
    let c = cause.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| c.contains(w));
    let why = if has(&[
        "unknownissuer",
        "unknown issuer",
        "badsignature",
        "bad signature",
    ]) {
        "the member's TLS certificate is not signed by a CA this client trusts; give the cluster's CA with --cacert"
    } else if has(&["notvalidforname", "not valid for name"]) {
        "the member's TLS certificate is not valid for this host name or address; use the one it was issued for"
    } else if has(&["expired", "notvalidyet", "not valid yet"]) {
        "the member's TLS certificate is outside its validity period (expired, or the clocks differ); renew it"
    } else if has(&["invalidcontenttype", "corrupt message"]) {
        "the member does not speak TLS on this port; use http:// for it"
    } else if has(&["certificaterequired", "certificate required"]) {
        "the member requires a client certificate; give one with --cert and --key"
    } else {
        return cause.to_string();
    };
    format!("{why} ({cause})")
}
