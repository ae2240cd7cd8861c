//! The error body every node answers with, `{"error", "message", "leader"}` (DESIGN §3,
//! docs/http-api.md "Errors"), and its codes.
//!
//! Only the shape and the codes live here. Which library error becomes which code, and which
//! HTTP status each code is sent with, is decided in one place on the server
//! (`http::error`); what a client does about a code is `client`'s business.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `error` field: snake_case on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Malformed JSON, a missing field or parameter, an invalid key.
    BadRequest,
    /// The key does not exist.
    NotFound,
    /// Unknown path or method.
    NoRoute,
    /// Peer traffic without the cluster token, or from a non-member.
    Forbidden,
    /// The history asked for (watch events, a digest) is no longer kept.
    Compacted,
    /// The body is over the limit.
    PayloadTooLarge,
    /// No leader was elected within the publish timeout.
    NoLeader,
    /// This node does not lead (leadership moved); `leader` names the one it knows.
    NotLeader,
    /// The member is stopping.
    ShuttingDown,
    /// Not confirmed in time; a write may still commit.
    Timeout,
    /// A bug or a storage failure.
    Internal,
    /// The request line and headers are over the limit.
    HeaderTooLarge,
    /// The request's head or body did not arrive within the limit.
    RequestTimeout,
    /// A framing this server does not take (a transfer coding other than chunked).
    NotImplemented,
    /// The member is at a limit (connections, watchers, buffered bodies); try again or
    /// another member.
    Busy,
    /// The member's core has stalled; it should be restarted.
    Unhealthy,
    /// A compare-and-set whose condition did not hold; the body's `timestamp` is the key's.
    PreconditionFailed,
    /// Access control is on and the request has no valid token (or a login failed).
    Unauthenticated,
    /// The request's user lacks a permission it needs; the message names it.
    PermissionDenied,
    /// An access-control change that does not fit (the user exists, no such role, ...).
    Conflict,
    /// A login while access control is off.
    AuthDisabled,
    /// A code this build does not know, exactly as the node sent it (a newer node may add
    /// codes); empty when the body had no `error`. Never sent by this build's nodes.
    Unknown(String),
}

impl ErrorCode {
    /// Every code this build's nodes send.
    pub const KNOWN: [ErrorCode; 21] = [
        ErrorCode::BadRequest,
        ErrorCode::NotFound,
        ErrorCode::NoRoute,
        ErrorCode::Forbidden,
        ErrorCode::Compacted,
        ErrorCode::PayloadTooLarge,
        ErrorCode::NoLeader,
        ErrorCode::NotLeader,
        ErrorCode::ShuttingDown,
        ErrorCode::Timeout,
        ErrorCode::Internal,
        ErrorCode::HeaderTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::NotImplemented,
        ErrorCode::Busy,
        ErrorCode::Unhealthy,
        ErrorCode::PreconditionFailed,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::Conflict,
        ErrorCode::AuthDisabled,
    ];

    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NoRoute => "no_route",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Compacted => "compacted",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::NoLeader => "no_leader",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::HeaderTooLarge => "header_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::Busy => "busy",
            ErrorCode::Unhealthy => "unhealthy",
            ErrorCode::PreconditionFailed => "precondition_failed",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Conflict => "conflict",
            ErrorCode::AuthDisabled => "auth_disabled",
            ErrorCode::Unknown(code) => code,
        }
    }

    /// The code of a body that has none (it did not come from a nacos-raft node).
    fn missing() -> ErrorCode {
        ErrorCode::Unknown(String::new())
    }
}

impl From<&str> for ErrorCode {
    fn from(code: &str) -> ErrorCode {
        ErrorCode::KNOWN
            .into_iter()
            .find(|c| c.as_str() == code)
            .unwrap_or_else(|| ErrorCode::Unknown(code.to_string()))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    /// Any string is a code (an unknown one is kept as sent); anything else is an error.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ErrorCode, D::Error> {
        String::deserialize(d).map(|code| ErrorCode::from(code.as_str()))
    }
}

/// `{"error": "not_leader", "message": "...", "leader": "..."}`; `leader` only when a
/// `not_leader` answer knows one.
///
/// Parsing is lenient, as a client must be with whatever answered: every field has a
/// default, so a body from a proxy or a newer node still yields its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default = "ErrorCode::missing")]
    pub error: ErrorCode,
    /// For people: what went wrong and what to do.
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// `precondition_failed` only: the key's timestamp now (0: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
}

impl ErrorBody {
    pub fn new(error: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error,
            message: message.into(),
            leader: None,
            timestamp: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_code_has_its_documented_name_and_round_trips() {
        let names: Vec<&str> = ErrorCode::KNOWN.iter().map(ErrorCode::as_str).collect();
        assert_eq!(
            names,
            [
                "bad_request",
                "not_found",
                "no_route",
                "forbidden",
                "compacted",
                "payload_too_large",
                "no_leader",
                "not_leader",
                "shutting_down",
                "timeout",
                "internal",
                "header_too_large",
                "request_timeout",
                "not_implemented",
                "busy",
                "unhealthy",
                "precondition_failed",
                "unauthenticated",
                "permission_denied",
                "conflict",
                "auth_disabled",
            ]
        );
        for code in ErrorCode::KNOWN {
            let v = serde_json::to_value(&code).unwrap();
            assert_eq!(v, json!(code.as_str()));
            assert_eq!(serde_json::from_value::<ErrorCode>(v).unwrap(), code);
            assert_eq!(ErrorCode::from(code.as_str()), code);
            assert_eq!(code.to_string(), code.as_str());
        }
    }

    #[test]
    fn an_unknown_code_is_kept_as_sent() {
        let b: ErrorBody =
            serde_json::from_value(json!({"error": "quota_exceeded", "message": "m"})).unwrap();
        assert_eq!(b.error, ErrorCode::Unknown("quota_exceeded".into()));
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            json!({"error": "quota_exceeded", "message": "m"})
        );
    }

    #[test]
    fn the_error_body_has_the_documented_fields() {
        let mut b = ErrorBody::new(ErrorCode::NotLeader, "this node is not the leader");
        // `leader` is left out when unknown.
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            json!({"error": "not_leader", "message": "this node is not the leader"})
        );
        b.leader = Some("127.0.0.1:8849".into());
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(
            v,
            json!({"error": "not_leader", "message": "this node is not the leader",
                   "leader": "127.0.0.1:8849"})
        );
        assert_eq!(serde_json::from_value::<ErrorBody>(v).unwrap(), b);
    }

    #[test]
    fn a_foreign_error_body_still_parses() {
        let b: ErrorBody = serde_json::from_value(json!({"message": "bad gateway"})).unwrap();
        assert_eq!(b.error, ErrorCode::Unknown(String::new()));
        assert_eq!(b.message, "bad gateway");
        let b: ErrorBody = serde_json::from_value(json!({"error": "timeout", "extra": 1})).unwrap();
        assert_eq!((b.error, b.message.as_str()), (ErrorCode::Timeout, ""));
        assert!(serde_json::from_value::<ErrorBody>(json!({"error": 5})).is_err());
    }
}
