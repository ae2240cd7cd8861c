//! The one place that maps errors to an HTTP status and the JSON error body
//! `{"error", "message", "leader"}` (DESIGN §3): a library error to its code here, and every
//! code to its status here. The body and the codes themselves are `wire::error`.

use crate::error::Error;
use crate::wire::{ErrorBody, ErrorCode};

/// Status code and body for a library error.
pub fn error_response(e: &Error) -> (u16, ErrorBody) {
    let mut timestamp = None;
    let (code, leader) = match e {
        Error::PreconditionFailed { current, .. } => {
            timestamp = Some(*current);
            (ErrorCode::PreconditionFailed, None)
        }
        Error::NotLeader { leader } => (ErrorCode::NotLeader, leader.clone()),
        Error::NoLeader { .. } => (ErrorCode::NoLeader, None),
        Error::Timeout { .. } => (ErrorCode::Timeout, None),
        Error::Superseded => (ErrorCode::NotLeader, None),
        Error::InvalidKey(_) | Error::BadRequest(_) | Error::Config(_) => {
            (ErrorCode::BadRequest, None)
        }
        Error::NotFound(_) => (ErrorCode::NotFound, None),
        Error::ShuttingDown => (ErrorCode::ShuttingDown, None),
        Error::Store { .. } | Error::Corrupt { .. } | Error::Unrecoverable { .. } => {
            (ErrorCode::Internal, None)
        }
        Error::Unauthenticated(_) => (ErrorCode::Unauthenticated, None),
        Error::PermissionDenied(_) => (ErrorCode::PermissionDenied, None),
        Error::Conflict(_) => (ErrorCode::Conflict, None),
        Error::AuthDisabled => (ErrorCode::AuthDisabled, None),
        Error::Busy(_) => (ErrorCode::Busy, None),
    };
    let mut body = ErrorBody::new(code, e.to_string());
    body.leader = leader;
    body.timestamp = timestamp;
    (status_of(&body.error), body)
}

/// The status every code is sent with (docs/http-api.md, "Errors"). Clients rely on it: a
/// 503 means the request was not acted on and may go to another member.
pub fn status_of(code: &ErrorCode) -> u16 {
    match code {
        ErrorCode::BadRequest => 400,
        ErrorCode::Unauthenticated => 401,
        ErrorCode::Forbidden | ErrorCode::PermissionDenied => 403,
        ErrorCode::Conflict | ErrorCode::AuthDisabled => 409,
        ErrorCode::NotFound | ErrorCode::NoRoute => 404,
        ErrorCode::RequestTimeout => 408,
        ErrorCode::Compacted => 410,
        ErrorCode::PreconditionFailed => 412,
        ErrorCode::PayloadTooLarge => 413,
        ErrorCode::HeaderTooLarge => 431,
        ErrorCode::Internal => 500,
        ErrorCode::NotImplemented => 501,
        ErrorCode::NoLeader
        | ErrorCode::NotLeader
        | ErrorCode::ShuttingDown
        | ErrorCode::Busy
        | ErrorCode::Unhealthy => 503,
        ErrorCode::Timeout => 504,
        // Only parsed from other nodes, never built here.
        ErrorCode::Unknown(_) => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let cases = [
            (
                Error::NotLeader {
                    leader: Some("a:1".into()),
                },
                503,
                ErrorCode::NotLeader,
            ),
            (Error::NoLeader { waited_ms: 5 }, 503, ErrorCode::NoLeader),
            (Error::Timeout { waited_ms: 5 }, 504, ErrorCode::Timeout),
            (Error::InvalidKey("x".into()), 400, ErrorCode::BadRequest),
            (Error::NotFound("k".into()), 404, ErrorCode::NotFound),
        ];
        for (e, status, code) in cases {
            let (s, body) = error_response(&e);
            assert_eq!((s, body.error), (status, code), "{e}");
            assert!(!body.message.is_empty());
        }
        let (_, body) = error_response(&Error::NotLeader {
            leader: Some("a:1".into()),
        });
        assert_eq!(body.leader.as_deref(), Some("a:1"));
        assert!(error_response(&Error::Timeout { waited_ms: 5 })
            .1
            .message
            .contains("may still commit"));
    }

    #[test]
    fn every_code_has_its_documented_status() {
        let documented = [
            (ErrorCode::BadRequest, 400),
            (ErrorCode::NotFound, 404),
            (ErrorCode::NoRoute, 404),
            (ErrorCode::Forbidden, 403),
            (ErrorCode::Compacted, 410),
            (ErrorCode::PayloadTooLarge, 413),
            (ErrorCode::NoLeader, 503),
            (ErrorCode::NotLeader, 503),
            (ErrorCode::ShuttingDown, 503),
            (ErrorCode::Timeout, 504),
            (ErrorCode::Internal, 500),
            (ErrorCode::HeaderTooLarge, 431),
            (ErrorCode::RequestTimeout, 408),
            (ErrorCode::NotImplemented, 501),
            (ErrorCode::Busy, 503),
            (ErrorCode::Unhealthy, 503),
            (ErrorCode::PreconditionFailed, 412),
            (ErrorCode::Unauthenticated, 401),
            (ErrorCode::PermissionDenied, 403),
            (ErrorCode::Conflict, 409),
            (ErrorCode::AuthDisabled, 409),
        ];
        assert_eq!(documented.len(), ErrorCode::KNOWN.len());
        for (code, status) in documented {
            assert_eq!(status_of(&code), status, "{code}");
        }
    }
}
