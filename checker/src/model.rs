//! The [`Model`] trait: the sequential specification a history is checked against. It knows
//! nothing of times or of the search.

use std::hash::Hash;

/// A sequential specification of the object under test.
///
/// The model must be deterministic: from a given state, an operation with a
/// given input has at most one resulting state.
pub trait Model {
    /// The object's state. It is hashed and compared to prune the search, so
    /// keep it small.
    type State: Clone + Eq + Hash;
    /// What a client asked for.
    type Input;
    /// What the client was told.
    type Output;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input` to `state`.
    ///
    /// With `Some(output)`, returns the new state if `output` is what the
    /// operation would have returned from `state`, and `None` if the
    /// observation is impossible. With `output == None` (the operation's
    /// outcome is unknown) any output must be accepted: return the state the
    /// operation would produce if it took effect now.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;
}
