//! nacosctl's exit codes (DESIGN §4, a contract: scripts branch on them) and the usage error
//! that maps to code 2.

use nacos_raft::client::ClientError;

/// How nacosctl ends. The numbers are fixed; never give one number two meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok,
    /// Any error not listed below (server error, I/O, a corrupt datum file).
    Error,
    /// The command line or its input is invalid: bad flag, invalid key, unreadable `@FILE`.
    Usage,
    /// The key does not exist (`get`, `del`).
    NotFound,
    /// No leader, no quorum, a write not confirmed within the timeout, an endpoint that
    /// cannot be reached.
    Unavailable,
    /// `status`: a member is unreachable or the members disagree on the leader; `check`: a
    /// member's datums differ from the leader's, or a member could not be checked.
    Degraded,
    /// `put`/`del` with `--if-timestamp` or `--if-absent`: the condition did not hold, and
    /// nothing changed.
    PreconditionFailed,
    /// Access control refused the request: no valid login or token, or the user lacks a
    /// permission (the message names it).
    Denied,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Error => 1,
            Exit::Usage => 2,
            Exit::NotFound => 3,
            Exit::Unavailable => 4,
            Exit::Degraded => 5,
            Exit::PreconditionFailed => 6,
            Exit::Denied => 7,
        }
    }

    pub fn of_client_error(e: &ClientError) -> Exit {
        match e {
            ClientError::NotFound { .. } => Exit::NotFound,
            ClientError::Unavailable { .. } => Exit::Unavailable,
            ClientError::PreconditionFailed { .. } => Exit::PreconditionFailed,
            e if e.is_denied() => Exit::Denied,
            ClientError::Server { .. }
            | ClientError::BadResponse { .. }
            | ClientError::InvalidEndpoint { .. } => Exit::Error,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// The command line or the value it names is wrong; `hint` says how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    pub message: String,
    pub hint: Option<String>,
}

impl UsageError {
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> UsageError {
        UsageError {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

/// Text for `--help`: the exit codes, so scripts can be written from the help alone.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  other error (server error, I/O error, corrupt datum file)
  2  usage error (bad flag, invalid key, unreadable VALUE)
  3  key not found (get, del)
  4  unavailable (endpoint unreachable, no leader, no quorum, write not confirmed in time,
     watch connection lost)
  5  degraded (status: a member unreachable, or members disagree on the leader;
     check: a member's datums differ, or a member could not be checked)
  6  precondition failed (put/del --if-timestamp or --if-absent: the key's timestamp
     was another; nothing changed)
  7  refused by access control (no valid login or token, or a permission the user
     lacks; the message names it)";

#[cfg(test)]
mod tests {
    use super::*;
    use nacos_raft::client::UnavailableKind;

    #[test]
    fn codes_are_the_contract() {
        let all = [
            (Exit::Ok, 0),
            (Exit::Error, 1),
            (Exit::Usage, 2),
            (Exit::NotFound, 3),
            (Exit::Unavailable, 4),
            (Exit::Degraded, 5),
            (Exit::PreconditionFailed, 6),
            (Exit::Denied, 7),
        ];
        for (e, code) in all {
            assert_eq!(e.code(), code, "{e:?}");
            assert!(
                EXIT_CODES_HELP.contains(&format!("  {code}  ")),
                "help lacks {code}"
            );
        }
    }

    #[test]
    fn client_errors_map_like_the_library_says() {
        let errors = [
            ClientError::NotFound { key: "k".into() },
            ClientError::PreconditionFailed {
                key: "k".into(),
                current: 3,
                message: "m".into(),
            },
            ClientError::Unavailable {
                endpoint: "e".into(),
                kind: UnavailableKind::NoLeader,
                message: "m".into(),
                leader: None,
            },
            ClientError::Server {
                endpoint: "e".into(),
                status: 500,
                error: "internal".into(),
                message: "m".into(),
            },
            ClientError::Server {
                endpoint: "e".into(),
                status: 401,
                error: "unauthenticated".into(),
                message: "m".into(),
            },
            ClientError::Server {
                endpoint: "e".into(),
                status: 403,
                error: "permission_denied".into(),
                message: "m".into(),
            },
            ClientError::BadResponse {
                endpoint: "e".into(),
                message: "m".into(),
            },
            ClientError::InvalidEndpoint {
                endpoint: "e".into(),
                message: "m".into(),
            },
        ];
        let exits: Vec<Exit> = errors.iter().map(Exit::of_client_error).collect();
        assert_eq!(
            exits,
            [
                Exit::NotFound,
                Exit::PreconditionFailed,
                Exit::Unavailable,
                Exit::Error,
                Exit::Denied,
                Exit::Denied,
                Exit::Error,
                Exit::Error
            ]
        );
        for e in &errors {
            assert_eq!(Exit::of_client_error(e).code(), e.exit_code(), "{e:?}");
        }
    }
}
