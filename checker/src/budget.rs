//! [`Budget`]: the limits (search steps, a wall-clock deadline) that turn a search running too
//! long into [`Outcome::Unknown`](crate::Outcome::Unknown) instead of a hang.

use std::time::{Duration, Instant};

/// Limits on the search. The default is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Maximum number of search steps (one step = visiting one list entry),
    /// per checked history; [`check_per_key`](crate::check_per_key) applies it to each key.
    pub max_steps: Option<u64>,
    /// Wall-clock instant after which the search gives up. Shared by all keys
    /// in [`check_per_key`](crate::check_per_key).
    pub deadline: Option<Instant>,
}

impl Budget {
    /// No limits.
    pub const UNLIMITED: Budget = Budget {
        max_steps: None,
        deadline: None,
    };

    /// Limits the number of search steps.
    #[must_use]
    pub fn with_max_steps(self, max_steps: u64) -> Budget {
        Budget {
            max_steps: Some(max_steps),
            ..self
        }
    }

    /// Gives up `timeout` from now.
    #[must_use]
    pub fn with_timeout(self, timeout: Duration) -> Budget {
        Budget {
            deadline: Some(Instant::now() + timeout),
            ..self
        }
    }

    pub(crate) fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}
