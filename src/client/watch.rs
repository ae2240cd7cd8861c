//! An open watch stream: JSON lines from one node, read with a bound on silence.

use std::io;
use std::time::Duration;

use super::{fmt_duration, is_timeout, ClientError, UnavailableKind, WatchLine};

/// An open watch: JSON lines from one node. See [`Client::watch`].
pub struct WatchStream {
    pub(super) endpoint: String,
    pub(super) reader: io::BufReader<Box<dyn io::Read + Send + Sync + 'static>>,
    pub(super) silence: Duration,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl WatchStream {
    /// The member that serves this stream, as people write it.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Blocks for the next line, at most the `silence` given to [`Client::watch`].
    ///
    /// A closed or reset connection, or silence for longer than that bound, is
    /// [`ClientError::Unavailable`]; a line that is not the documented JSON is
    /// [`ClientError::BadResponse`]. After an error the stream is done.
    pub fn next_line(&mut self) -> Result<WatchLine, ClientError> {
        use io::BufRead;
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => Err(self.lost("the node closed the stream".into())),
            Ok(_) if line.last() != Some(&b'\n') => {
                Err(self.lost("the node closed the stream in the middle of a line".into()))
            }
            Ok(_) => WatchLine::parse(&line).map_err(|message| ClientError::BadResponse {
                endpoint: self.endpoint.clone(),
                message,
            }),
            Err(e) if is_timeout(&e) => Err(ClientError::Unavailable {
                endpoint: self.endpoint.clone(),
                kind: UnavailableKind::TimedOut,
                message: format!(
                    "nothing received for {} (a live node sends a keep-alive every second)",
                    fmt_duration(self.silence)
                ),
                leader: None,
            }),
            Err(e) => Err(self.lost(format!("connection lost: {e}"))),
        }
    }

    fn lost(&self, message: String) -> ClientError {
        ClientError::Unavailable {
            endpoint: self.endpoint.clone(),
            kind: UnavailableKind::Unreachable,
            message,
            leader: None,
        }
    }
}
