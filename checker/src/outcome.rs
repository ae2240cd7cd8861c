//! What a check answers: the [`Verdict`], the [`Outcome`] with its witness order or its
//! [`Counterexample`], the verdict of several parts combined, and the rendering of a
//! counterexample for a human.

use std::fmt::{self, Debug, Write as _};

use serde::{Deserialize, Serialize};

use crate::history::Operation;

/// The three possible answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Verdict {
    /// Some legal order exists.
    Linearizable,
    /// The budget ran out before the search finished.
    Unknown,
    /// No legal order exists.
    NotLinearizable,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Linearizable => "linearizable",
            Verdict::Unknown => "unknown (budget exhausted)",
            Verdict::NotLinearizable => "NOT linearizable",
        })
    }
}

/// The result of a check. Operation numbers are positions in the history
/// that was passed in (for [`check_per_key`](crate::check_per_key), the whole multi-key history).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<S> {
    /// The history is linearizable; `order` is one witness: the operations
    /// in linearization order. Every determinate operation appears once;
    /// indeterminate operations appear only if the witness needed them to
    /// take effect.
    Linearizable {
        /// Operation numbers in linearization order.
        order: Vec<usize>,
    },
    /// The history is not linearizable.
    NotLinearizable(Counterexample<S>),
    /// The [`Budget`](crate::Budget) ran out first.
    Unknown {
        /// Search steps taken before giving up.
        steps: u64,
    },
}

impl<S> Outcome<S> {
    /// The verdict without the details.
    pub fn verdict(&self) -> Verdict {
        match self {
            Outcome::Linearizable { .. } => Verdict::Linearizable,
            Outcome::NotLinearizable(_) => Verdict::NotLinearizable,
            Outcome::Unknown { .. } => Verdict::Unknown,
        }
    }

    /// True only for a proven [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        self.verdict() == Verdict::Linearizable
    }
}

/// The combined verdict of several independently checked parts (e.g. the keys
/// of [`check_per_key`](crate::check_per_key)): not linearizable if any part is not, otherwise
/// unknown if any part is unknown, otherwise linearizable.
pub fn overall_verdict<'a, S: 'a>(outcomes: impl IntoIterator<Item = &'a Outcome<S>>) -> Verdict {
    outcomes
        .into_iter()
        .map(Outcome::verdict)
        .max()
        .unwrap_or(Verdict::Linearizable)
}

/// Why a history is not linearizable, from the deepest point the search
/// reached.
///
/// The search found a legal order for `prefix`, ending in `state`; it then
/// reached the return of `blocked` without being able to linearize it: every
/// operation in `candidates` (the ones that could still go next, `blocked`
/// among them) was either illegal from there or led to a dead end later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample<S> {
    /// The longest linearizable prefix found, in linearization order.
    pub prefix: Vec<usize>,
    /// The model state after `prefix`.
    pub state: S,
    /// The operation whose return the search could not get past.
    pub blocked: usize,
    /// The operations that were candidates to be linearized next at that
    /// point, in call order.
    pub candidates: Vec<usize>,
}

/// How many operations of the prefix [`Counterexample::render`] prints.
const RENDERED_PREFIX_TAIL: usize = 20;

impl<S: Debug> Counterexample<S> {
    /// A human-readable explanation. `history` must be the history that was
    /// checked. Only the last few operations of the prefix are printed; the
    /// fields hold the full data.
    pub fn render<I: Debug, O: Debug>(&self, history: &[Operation<I, O>]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "not linearizable: no legal order gets past the return of {}",
            describe(history, self.blocked)
        );
        let skipped = self.prefix.len().saturating_sub(RENDERED_PREFIX_TAIL);
        let _ = writeln!(
            out,
            "longest linearizable prefix found: {} operations, ending in state {:?}",
            self.prefix.len(),
            self.state
        );
        if skipped > 0 {
            let _ = writeln!(out, "  ... {skipped} earlier operations");
        }
        for &i in &self.prefix[skipped..] {
            let _ = writeln!(out, "  {}", describe(history, i));
        }
        let _ = writeln!(
            out,
            "operations that could have come next (each was illegal or led to a dead end):"
        );
        for &i in &self.candidates {
            let _ = writeln!(out, "  {}", describe(history, i));
        }
        out
    }
}

fn describe<I: Debug, O: Debug>(history: &[Operation<I, O>], index: usize) -> String {
    match history.get(index) {
        None => format!("#{index} (not in this history)"),
        Some(op) => match (&op.output, op.return_time) {
            (Some(output), Some(ret)) => format!(
                "#{index} client {} {:?} -> {:?} [{}, {}]",
                op.client_id, op.input, output, op.call, ret
            ),
            _ => format!(
                "#{index} client {} {:?} -> unknown [{}, never]",
                op.client_id, op.input, op.call
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_verdict_prefers_failure_then_unknown() {
        let ok: Outcome<()> = Outcome::Linearizable { order: vec![] };
        let unknown: Outcome<()> = Outcome::Unknown { steps: 1 };
        assert_eq!(overall_verdict([&ok, &ok]), Verdict::Linearizable);
        assert_eq!(overall_verdict([&ok, &unknown]), Verdict::Unknown);
        assert_eq!(
            overall_verdict(std::iter::empty::<&Outcome<()>>()),
            Verdict::Linearizable
        );
    }
}
