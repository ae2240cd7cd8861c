//! A recorded history: one [`Operation`] per client request, the keyed form for multi-object
//! histories, the [`HistoryError`]s a malformed history is rejected with, and the validated
//! view of an operation (`OpRef`) that the search reads. No search logic here.

use serde::{Deserialize, Serialize};

/// One client operation of a recorded history.
///
/// Times are in any monotonic unit (nanoseconds, a logical counter, a log
/// line number) shared by all clients of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation<I, O> {
    /// Which client issued it. Only used to make reports readable: the
    /// checker relies on times alone.
    pub client_id: u64,
    /// What was asked.
    pub input: I,
    /// When the request was issued.
    pub call: u64,
    /// What the client was told, or `None` if the outcome is unknown
    /// (timeout, crash, no reply): such an operation may or may not have
    /// taken effect.
    pub output: Option<O>,
    /// When the reply arrived. Required when `output` is known; ignored (the
    /// operation counts as pending forever) when it is not.
    pub return_time: Option<u64>,
}

impl<I, O> Operation<I, O> {
    /// An operation that completed with `output`.
    pub fn completed(client_id: u64, input: I, call: u64, output: O, return_time: u64) -> Self {
        Operation {
            client_id,
            input,
            call,
            output: Some(output),
            return_time: Some(return_time),
        }
    }

    /// An operation whose outcome is unknown.
    pub fn indeterminate(client_id: u64, input: I, call: u64) -> Self {
        Operation {
            client_id,
            input,
            call,
            output: None,
            return_time: None,
        }
    }

    /// True if the outcome is unknown.
    pub fn is_indeterminate(&self) -> bool {
        self.output.is_none()
    }
}

/// An operation on one object (key) of a multi-object history: the input
/// carries the key.
pub type KeyedOperation<K, I, O> = Operation<(K, I), O>;

/// A history that cannot be checked because it is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The operation has an output but no return time.
    #[error("operation #{index} has an output but no return time")]
    MissingReturnTime {
        /// Position of the operation in the history.
        index: usize,
    },
    /// The operation returned before it was called.
    #[error("operation #{index} returns at {return_time}, before its call at {call}")]
    ReturnBeforeCall {
        /// Position of the operation in the history.
        index: usize,
        /// Its call time.
        call: u64,
        /// Its return time.
        return_time: u64,
    },
}

/// A validated view of one operation, so that [`check`](crate::check) and
/// [`check_per_key`](crate::check_per_key) share one search without copying inputs.
pub(crate) struct OpRef<'a, I, O> {
    /// Position in the caller's history.
    pub(crate) index: usize,
    pub(crate) input: &'a I,
    /// `None` = indeterminate.
    pub(crate) output: Option<&'a O>,
    pub(crate) call: u64,
    /// `None` = never (indeterminate).
    pub(crate) ret: Option<u64>,
}

impl<'a, I, O> OpRef<'a, I, O> {
    pub(crate) fn new<X>(
        index: usize,
        op: &'a Operation<X, O>,
        input: &'a I,
    ) -> Result<Self, HistoryError> {
        let ret = match (&op.output, op.return_time) {
            (None, _) => None,
            (Some(_), None) => return Err(HistoryError::MissingReturnTime { index }),
            (Some(_), Some(r)) if r < op.call => {
                return Err(HistoryError::ReturnBeforeCall {
                    index,
                    call: op.call,
                    return_time: r,
                })
            }
            (Some(_), Some(r)) => Some(r),
        };
        Ok(OpRef {
            index,
            input,
            output: op.output.as_ref(),
            call: op.call,
            ret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{read, s, write};
    use crate::{check, Budget, RegisterInput as In, RegisterModel, RegisterOutput as Out};

    #[test]
    fn malformed_histories_are_rejected() {
        let missing = Operation {
            client_id: 1,
            input: In::Read,
            call: 3,
            output: Some(Out::Read(None)),
            return_time: None,
        };
        assert_eq!(
            check(
                &RegisterModel,
                &[write(1, "a", 0, 1), missing],
                Budget::UNLIMITED
            ),
            Err(HistoryError::MissingReturnTime { index: 1 })
        );
        assert_eq!(
            check(&RegisterModel, &[read(1, None, 5, 4)], Budget::UNLIMITED),
            Err(HistoryError::ReturnBeforeCall {
                index: 0,
                call: 5,
                return_time: 4
            })
        );
        // An indeterminate operation's return time is ignored, even if odd.
        let odd = Operation {
            client_id: 1,
            input: In::Write(s("a")),
            call: 5,
            output: None,
            return_time: Some(1),
        };
        assert!(check(&RegisterModel, &[odd], Budget::UNLIMITED).is_ok());
    }
}
