//! The one place that maps library errors to an HTTP status and the JSON error body
//! `{"error", "message", "leader"}` (DESIGN §3).

use serde::Serialize;

use crate::error::Error;

#[derive(Debug, Serialize, PartialEq)]
pub struct ErrorBody {
    pub error: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

impl ErrorBody {
    pub fn new(error: &'static str, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error,
            message: message.into(),
            leader: None,
        }
    }
}

/// Status code and body for a library error.
pub fn error_response(e: &Error) -> (u16, ErrorBody) {
    let message = e.to_string();
    let (status, code, leader) = match e {
        Error::NotLeader { leader } => (503, "not_leader", leader.clone()),
        Error::NoLeader { .. } => (503, "no_leader", None),
        Error::Timeout { .. } => (504, "timeout", None),
        Error::Superseded => (503, "not_leader", None),
        Error::InvalidKey(_) | Error::BadRequest(_) | Error::Config(_) => {
            (400, "bad_request", None)
        }
        Error::NotFound(_) => (404, "not_found", None),
        Error::ShuttingDown => (503, "shutting_down", None),
        Error::Store { .. } | Error::Corrupt { .. } | Error::Unrecoverable { .. } => {
            (500, "internal", None)
        }
    };
    (
        status,
        ErrorBody {
            error: code,
            message,
            leader,
        },
    )
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
                "not_leader",
            ),
            (Error::NoLeader { waited_ms: 5 }, 503, "no_leader"),
            (Error::Timeout { waited_ms: 5 }, 504, "timeout"),
            (Error::InvalidKey("x".into()), 400, "bad_request"),
            (Error::NotFound("k".into()), 404, "not_found"),
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
}
