//! nacos-linearizability: linearizability checking of recorded client histories: the generic
//! checker, a key/value register model, and per-key (P-compositional) checking.
//!
//! A test tool of nacos-raft (its Jepsen and chaos tests), kept out of the shipped library the
//! way raft-rs keeps `datadriven` as a crate of its own. It must not depend on nacos-raft.
//!
//! A fault-injection run records, for every client operation, when it was
//! called, when (and with what result) it returned, or that its outcome is
//! unknown. [`check`] decides whether some total order of those operations
//! (a) respects real time: an operation that returned before another was
//! called comes first, and (b) is a legal sequential execution of a
//! [`Model`] starting from [`Model::init`].
//!
//! # Algorithm
//!
//! This is the Wing & Gong search as refined by Lowe ("Testing for
//! linearizability", 2017) and by porcupine's P-compositionality work:
//!
//! * Every operation becomes a *call* entry and a *return* entry in a doubly
//!   linked list sorted by time (at equal timestamps calls sort first, so
//!   operations touching at one instant count as concurrent: the permissive
//!   reading, because clocks in a test harness are not that precise).
//! * A depth-first search walks the list. At a call entry it tries to
//!   linearize that operation now: if the model accepts it, the call and its
//!   return are unlinked from the list, the previous state is pushed on a
//!   stack, and the walk restarts from the head. Reaching a return entry means
//!   that operation's deadline passed while it was still not linearized, so
//!   the last choice is undone (the entries are relinked in place, "dancing
//!   links" style) and the next candidate is tried.
//! * A cache of every (set of linearized operations, model state) pair seen
//!   so far prunes the search: two paths that reach the same pair have the
//!   same future, so the second is abandoned. Without the cache the search is
//!   factorial in the number of concurrent operations; with it, it is bounded
//!   by the number of distinct pairs.
//!
//! # Indeterminate operations
//!
//! An operation whose outcome is unknown (timed out, client crashed, never
//! completed) may or may not have taken effect, at any time after its call.
//! It is recorded with `output: None`; its return time is treated as
//! +infinity, so it never forces anything, and the search succeeds as soon as
//! every *determinate* operation is linearized. Linearizing an indeterminate
//! operation is therefore optional, which is exactly "it may have happened".
//! When it is linearized, the model is called with `output == None` and must
//! accept any output (e.g. an indeterminate compare-and-set succeeds if and
//! only if the state matches). An indeterminate operation that would leave
//! the state unchanged (a read, a failing compare-and-set) is never tried,
//! because it cannot help; this keeps histories full of timed-out reads
//! cheap.
//!
//! # Complexity
//!
//! Linearizability checking is NP-complete in general. Each distinct
//! (linearized set, state) pair is expanded at most once and an expansion
//! walks at most the O(n) entries of the list, so the time is
//! O(n · P) and the memory O(P · n / 64 words) where P is the number of
//! reachable pairs. P ≤ 2^n · |states|, but when at most c operations are
//! ever pending at once the reachable sets are "everything before some point
//! plus a subset of c pending operations", so in practice P is about
//! n · 2^c · |states|. Indeterminate operations stay pending forever and
//! widen c, which is why they are the expensive part of chaos histories and
//! why checking each key separately ([`check_per_key`]) matters: the key is
//! the unit of concurrency, not the whole store. A [`Budget`] bounds the work;
//! when it runs out the answer is [`Outcome::Unknown`], never a hang.
//!
//! # Layout
//!
//! One data structure per module, all private, with the public items re-exported here:
//! `model` ([`Model`]), `history` ([`Operation`], [`HistoryError`] and the validated view the
//! search reads), `budget` ([`Budget`]), `outcome` ([`Verdict`], [`Outcome`],
//! [`Counterexample`]), `event_list` (the call/return list the search walks), `search`
//! ([`check`], [`check_per_key`]) and `register` ([`RegisterModel`]). The unit tests sit
//! beside what they test; `testkit` holds the history builders they share.

mod budget;
mod event_list;
mod history;
mod model;
mod outcome;
mod register;
mod search;
#[cfg(test)]
mod testkit;

pub use budget::Budget;
pub use history::{HistoryError, KeyedOperation, Operation};
pub use model::Model;
pub use outcome::{overall_verdict, Counterexample, Outcome, Verdict};
pub use register::{
    KeyedRegisterOp, Register, RegisterInput, RegisterModel, RegisterOp, RegisterOutput,
};
pub use search::{check, check_per_key, PerKeyOutcomes};
