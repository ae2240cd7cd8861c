//! The library's one error type, named by what the caller must do about it.

use std::path::PathBuf;

/// Every failure the library reports. HTTP maps these to statuses in one place
/// (`http::error`); the binaries wrap them with `anyhow` context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This node cannot serve the request; the leader (if known) can.
    #[error("this node is not the leader{}", match leader { Some(l) => format!("; the leader is {l}"), None => "; no leader is known".into() })]
    NotLeader { leader: Option<String> },

    /// No leader was elected within the wait.
    #[error("no leader elected within {waited_ms} ms: check that a majority of the members is up and can reach each other (`nacosctl status`)")]
    NoLeader { waited_ms: u64 },

    /// The write was handed to the log but not confirmed in time: it may still commit.
    #[error("not confirmed within {waited_ms} ms; the write may still commit: read the key before retrying a non-idempotent change")]
    Timeout { waited_ms: u64 },

    /// Leadership changed before the entry committed and another entry took its index:
    /// the write definitely did not happen and can be retried.
    #[error(
        "leadership changed before the write committed; it was not applied and can be retried"
    )]
    Superseded,

    #[error("invalid key: {0}")]
    InvalidKey(String),

    #[error("bad request: {0}")]
    BadRequest(String),

    #[error("key not found: {0}")]
    NotFound(String),

    /// A compare-and-set whose condition did not hold: nothing changed.
    #[error("the condition on {key} did not hold: its timestamp is {current}{}; nothing changed", if *current == 0 { " (absent)" } else { "" })]
    PreconditionFailed { key: String, current: u64 },

    #[error("{path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A durable file failed its checksum or does not parse. Nothing is skipped or deleted:
    /// the operator decides (restore the file, or wipe the member and let it catch up).
    #[error("{path}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// The data dir holds no complete state to start from; `reason` names what is damaged
    /// and the way out.
    #[error("no complete state to start from in {dir}: {reason}")]
    Unrecoverable { dir: PathBuf, reason: String },

    #[error("invalid configuration: {0}")]
    Config(String),

    /// The node is shutting down and no longer accepts work.
    #[error("the node is shutting down")]
    ShuttingDown,

    /// Access control is on and the request has no valid token, or a login failed.
    #[error("{0}")]
    Unauthenticated(String),

    /// The request's user lacks the permission it needs.
    #[error("{0}")]
    PermissionDenied(String),

    /// An access-control change that does not fit the current table (the user exists, no
    /// such role, no `root` user yet); nothing changed.
    #[error("{0}")]
    Conflict(String),

    /// The member is at a limit for this kind of work (say, logins at once); try again.
    #[error("{0}")]
    Busy(String),

    /// A login while access control is off: requests need no token.
    #[error("access control is off, so requests need no token (nacosctl auth enable turns it on)")]
    AuthDisabled,
}

impl From<crate::auth::Refusal> for Error {
    fn from(r: crate::auth::Refusal) -> Error {
        match r {
            crate::auth::Refusal::Unauthenticated(m) => Error::Unauthenticated(m),
            crate::auth::Refusal::PermissionDenied(m) => Error::PermissionDenied(m),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process (or the system) is out of file descriptors for now: connections took
    /// them, and they come back as connections close, so the work is worth retrying.
    pub fn is_out_of_descriptors(&self) -> bool {
        matches!(self, Error::Store { source, .. }
            if matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)))
    }

    pub(crate) fn store(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Store {
            path: path.into(),
            source,
        }
    }
}
