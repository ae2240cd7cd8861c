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

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Debug, Write as _};
use std::hash::Hash;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

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

/// Limits on the search. The default is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Maximum number of search steps (one step = visiting one list entry),
    /// per checked history; [`check_per_key`] applies it to each key.
    pub max_steps: Option<u64>,
    /// Wall-clock instant after which the search gives up. Shared by all keys
    /// in [`check_per_key`].
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

    fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

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
/// that was passed in (for [`check_per_key`], the whole multi-key history).
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
    /// The [`Budget`] ran out first.
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
/// of [`check_per_key`]): not linearizable if any part is not, otherwise
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

/// Checks a single-object history against `model`.
///
/// # Errors
///
/// [`HistoryError`] if an operation has an output but no return time, or
/// returns before it is called.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: Budget,
) -> Result<Outcome<M::State>, HistoryError> {
    let ops = history
        .iter()
        .enumerate()
        .map(|(index, op)| OpRef::new(index, op, &op.input))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(search(model, &ops, &budget))
}

/// An operation on one object (key) of a multi-object history: the input
/// carries the key.
pub type KeyedOperation<K, I, O> = Operation<(K, I), O>;

/// The outcome for every key of a multi-object history.
pub type PerKeyOutcomes<K, S> = BTreeMap<K, Outcome<S>>;

/// Checks a multi-object history by splitting it per key and checking every
/// key independently against `model`.
///
/// This is sound and complete because linearizability is compositional (a
/// history is linearizable iff each object's sub-history is), and it is much
/// cheaper than checking the whole history: the search is exponential in
/// the concurrency of a key, not of the store. Operation numbers in the
/// outcomes are positions in `history`. The step budget applies per key, the
/// deadline to the whole call; combine the answers with [`overall_verdict`].
///
/// # Errors
///
/// As for [`check`]; operation numbers in errors are positions in `history`.
pub fn check_per_key<M: Model, K: Ord + Clone>(
    model: &M,
    history: &[KeyedOperation<K, M::Input, M::Output>],
    budget: Budget,
) -> Result<PerKeyOutcomes<K, M::State>, HistoryError> {
    let mut by_key: BTreeMap<K, Vec<_>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        let (key, input) = &op.input;
        by_key
            .entry(key.clone())
            .or_default()
            .push(OpRef::new(index, op, input)?);
    }
    Ok(by_key
        .into_iter()
        .map(|(key, ops)| (key, search(model, &ops, &budget)))
        .collect())
}

/// A validated view of one operation, so that [`check`] and
/// [`check_per_key`] share one search without copying inputs.
struct OpRef<'a, I, O> {
    /// Position in the caller's history.
    index: usize,
    input: &'a I,
    /// `None` = indeterminate.
    output: Option<&'a O>,
    call: u64,
    /// `None` = never (indeterminate).
    ret: Option<u64>,
}

impl<'a, I, O> OpRef<'a, I, O> {
    fn new<X>(index: usize, op: &'a Operation<X, O>, input: &'a I) -> Result<Self, HistoryError> {
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

/// "No entry" in the linked list.
const NIL: usize = usize::MAX;
/// The list's sentinel head.
const HEAD: usize = 0;

/// The call/return event list, as parallel arrays indexed by entry number
/// (entry 0 is the head sentinel). Unlinked entries keep their `prev`/`next`
/// so they can be relinked in place when the search backtracks.
struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Operation (position in the `ops` slice) of each entry.
    op: Vec<usize>,
    is_return: Vec<bool>,
    /// Return entry of each operation, `NIL` if indeterminate.
    return_entry: Vec<usize>,
}

impl EventList {
    fn new<I, O>(ops: &[OpRef<'_, I, O>]) -> Self {
        // (time, is_return, op): sorting puts calls before returns at equal
        // times, so such operations are treated as concurrent.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, false, i));
            if let Some(ret) = op.ret {
                events.push((ret, true, i));
            }
        }
        events.sort_unstable();

        let len = events.len() + 1;
        let mut list = EventList {
            next: (1..=len).map(|e| if e == len { NIL } else { e }).collect(),
            prev: (0..len).map(|e| e.wrapping_sub(1)).collect(),
            op: Vec::with_capacity(len),
            is_return: Vec::with_capacity(len),
            return_entry: vec![NIL; ops.len()],
        };
        // Head sentinel: its op/is_return are never read.
        list.op.push(NIL);
        list.is_return.push(false);
        for (entry, &(_, is_return, op)) in events.iter().enumerate().map(|(k, e)| (k + 1, e)) {
            list.op.push(op);
            list.is_return.push(is_return);
            if is_return {
                list.return_entry[op] = entry;
            }
        }
        list
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NIL {
            self.prev[n] = e;
        }
    }

    /// Removes a call entry and its return entry: the operation is linearized.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.return_entry[self.op[call]];
        if ret != NIL {
            self.unlink(ret);
        }
    }

    /// Exact inverse of [`EventList::lift`]; lifts must be undone in reverse order.
    fn unlift(&mut self, call: usize) {
        let ret = self.return_entry[self.op[call]];
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// A fixed-size set of operation numbers.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BitSet(Box<[u64]>);

impl BitSet {
    fn new(bits: usize) -> Self {
        BitSet(vec![0; bits.div_ceil(64)].into_boxed_slice())
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// How often (in steps) the wall clock is consulted.
const DEADLINE_CHECK_INTERVAL: u64 = 1024;

fn search<M: Model>(
    model: &M,
    ops: &[OpRef<'_, M::Input, M::Output>],
    budget: &Budget,
) -> Outcome<M::State> {
    if budget.deadline_passed() {
        return Outcome::Unknown { steps: 0 };
    }
    let mut list = EventList::new(ops);
    let mut state = model.init();
    let mut linearized = BitSet::new(ops.len());
    let mut cache: HashSet<(BitSet, M::State)> = HashSet::new();
    // Linearized call entries, with the state before each.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    // Determinate operations not yet linearized: the search is done when
    // this reaches zero (indeterminate ones are optional).
    let mut remaining = ops.iter().filter(|op| op.output.is_some()).count();
    let mut deepest: Option<Counterexample<M::State>> = None;
    let mut steps: u64 = 0;
    let mut entry = list.next[HEAD];

    while remaining > 0 {
        steps += 1;
        if budget.max_steps.is_some_and(|max| steps > max)
            || (steps % DEADLINE_CHECK_INTERVAL == 0 && budget.deadline_passed())
        {
            return Outcome::Unknown { steps };
        }
        // While a determinate operation is unlinearized its return entry is
        // still linked, and the walk only moves forward over call entries
        // and stops at the first return, so it cannot fall off the end.
        debug_assert_ne!(entry, NIL);
        let i = list.op[entry];
        let op = &ops[i];

        if list.is_return[entry] {
            // Operation `i` returned and is still not linearized: undo the
            // latest choice and try the next candidate after it.
            if deepest
                .as_ref()
                .is_none_or(|d| stack.len() > d.prefix.len())
            {
                deepest = Some(counterexample(ops, &list, &stack, &state, entry));
            }
            let Some((call, previous)) = stack.pop() else {
                // Nothing left to undo: every alternative was exhausted.
                let deepest = deepest.expect("recorded just above");
                return Outcome::NotLinearizable(deepest);
            };
            state = previous;
            let j = list.op[call];
            linearized.clear(j);
            list.unlift(call);
            if ops[j].output.is_some() {
                remaining += 1;
            }
            entry = list.next[call];
            continue;
        }

        let mut advanced = false;
        if let Some(next_state) = model.step(&state, op.input, op.output) {
            // An indeterminate operation that changes nothing can only use
            // up a cache slot: skipping it loses no linearization.
            let pointless = op.output.is_none() && next_state == state;
            if !pointless {
                linearized.set(i);
                if cache.insert((linearized.clone(), next_state.clone())) {
                    let previous = std::mem::replace(&mut state, next_state);
                    stack.push((entry, previous));
                    list.lift(entry);
                    if op.output.is_some() {
                        remaining -= 1;
                    }
                    entry = list.next[HEAD];
                    advanced = true;
                } else {
                    // Seen before: that path's future is already known to fail.
                    linearized.clear(i);
                }
            }
        }
        if !advanced {
            entry = list.next[entry];
        }
    }

    Outcome::Linearizable {
        order: stack
            .iter()
            .map(|&(call, _)| ops[list.op[call]].index)
            .collect(),
    }
}

/// Snapshot of the search when it hits the return entry `blocked_entry`.
fn counterexample<I, O, S: Clone>(
    ops: &[OpRef<'_, I, O>],
    list: &EventList,
    stack: &[(usize, S)],
    state: &S,
    blocked_entry: usize,
) -> Counterexample<S> {
    let mut candidates = Vec::new();
    let mut e = list.next[HEAD];
    while e != blocked_entry && e != NIL {
        if !list.is_return[e] {
            candidates.push(ops[list.op[e]].index);
        }
        e = list.next[e];
    }
    Counterexample {
        prefix: stack
            .iter()
            .map(|&(call, _)| ops[list.op[call]].index)
            .collect(),
        state: state.clone(),
        blocked: ops[list.op[blocked_entry]].index,
        candidates,
    }
}

// ---------------------------------------------------------------------------
// Register model
// ---------------------------------------------------------------------------

/// A request to a single register (one key of a key/value store).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegisterInput {
    /// Read the current value.
    Read,
    /// Set the value.
    Write(String),
    /// Remove the key.
    Delete,
    /// Set the value to `new` if it currently equals `expect` (`None` =
    /// only if the key is absent).
    Cas {
        /// The value the register must hold.
        expect: Option<String>,
        /// The value to store if it does.
        new: String,
    },
}

/// A register's reply, one variant per [`RegisterInput`] variant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegisterOutput {
    /// The value read; `None` = the key was absent.
    Read(Option<String>),
    /// The write was acknowledged.
    Write,
    /// The delete was acknowledged, reporting whether the key existed when
    /// the server knows it (`None` = not reported).
    Delete(Option<bool>),
    /// Whether the compare-and-set took effect.
    Cas(bool),
}

/// A register whose value is `Option<String>` (`None` = key absent),
/// initially absent. A reply of the wrong kind for its request (say a
/// `Read` answered by `Write`) is treated as an impossible observation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterModel;

/// One operation on a single register.
pub type RegisterOp = Operation<RegisterInput, RegisterOutput>;

/// One operation on a key of a key/value store, for [`check_per_key`] with
/// [`RegisterModel`].
pub type KeyedRegisterOp<K = String> = KeyedOperation<K, RegisterInput, RegisterOutput>;

impl Model for RegisterModel {
    type State = Option<String>;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Option<String> {
        None
    }

    fn step(
        &self,
        state: &Option<String>,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Option<Option<String>> {
        use RegisterInput as In;
        use RegisterOutput as Out;
        match (input, output) {
            (In::Read, None) => Some(state.clone()),
            (In::Read, Some(Out::Read(seen))) => (seen == state).then(|| state.clone()),
            (In::Write(v), None | Some(Out::Write)) => Some(Some(v.clone())),
            (In::Delete, None | Some(Out::Delete(None))) => Some(None),
            (In::Delete, Some(Out::Delete(Some(existed)))) => {
                (*existed == state.is_some()).then_some(None)
            }
            (In::Cas { expect, new }, output) => {
                let matches = expect == state;
                match output {
                    // Unknown outcome: it did whatever it would have done.
                    None => Some(if matches {
                        Some(new.clone())
                    } else {
                        state.clone()
                    }),
                    Some(Out::Cas(true)) => matches.then(|| Some(new.clone())),
                    Some(Out::Cas(false)) => (!matches).then(|| state.clone()),
                    Some(_) => None,
                }
            }
            (In::Read | In::Write(_) | In::Delete, Some(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use RegisterInput as In;
    use RegisterOutput as Out;

    fn s(v: &str) -> String {
        v.to_string()
    }

    fn write(client: u64, v: &str, call: u64, ret: u64) -> RegisterOp {
        Operation::completed(client, In::Write(s(v)), call, Out::Write, ret)
    }

    fn read(client: u64, v: Option<&str>, call: u64, ret: u64) -> RegisterOp {
        Operation::completed(client, In::Read, call, Out::Read(v.map(s)), ret)
    }

    fn cas(
        client: u64,
        expect: Option<&str>,
        new: &str,
        ok: bool,
        call: u64,
        ret: u64,
    ) -> RegisterOp {
        let input = In::Cas {
            expect: expect.map(s),
            new: s(new),
        };
        Operation::completed(client, input, call, Out::Cas(ok), ret)
    }

    fn delete(client: u64, existed: Option<bool>, call: u64, ret: u64) -> RegisterOp {
        Operation::completed(client, In::Delete, call, Out::Delete(existed), ret)
    }

    fn run(history: &[RegisterOp]) -> Outcome<Option<String>> {
        let outcome = check(&RegisterModel, history, Budget::UNLIMITED).expect("well-formed");
        if let Outcome::Linearizable { order } = &outcome {
            assert_valid_witness(&RegisterModel, history, order);
        }
        outcome
    }

    /// Independently verifies a witness: each determinate operation exactly
    /// once, indeterminate ones at most once, real-time order respected, and
    /// every step legal for the model.
    fn assert_valid_witness<M: Model>(
        model: &M,
        history: &[Operation<M::Input, M::Output>],
        order: &[usize],
    ) {
        let mut seen = vec![false; history.len()];
        for &i in order {
            assert!(!seen[i], "op {i} linearized twice in {order:?}");
            seen[i] = true;
        }
        for (i, op) in history.iter().enumerate() {
            if op.output.is_some() {
                assert!(seen[i], "determinate op {i} missing from {order:?}");
            }
        }
        for (pos, &a) in order.iter().enumerate() {
            for &b in &order[pos + 1..] {
                // b comes after a, so b must not have returned before a's call.
                if let (Some(_), Some(ret_b)) = (&history[b].output, history[b].return_time) {
                    assert!(
                        ret_b >= history[a].call,
                        "op {b} returned at {ret_b} before op {a} was called at {}, but is ordered after it",
                        history[a].call
                    );
                }
            }
        }
        let mut state = model.init();
        for &i in order {
            let op = &history[i];
            state = model
                .step(&state, &op.input, op.output.as_ref())
                .unwrap_or_else(|| panic!("op {i} illegal in witness {order:?}"));
        }
    }

    fn verdict(history: &[RegisterOp]) -> Verdict {
        run(history).verdict()
    }

    #[test]
    fn sequential_history_is_linearizable_in_program_order() {
        let h = vec![
            read(1, None, 0, 1),
            write(1, "a", 2, 3),
            read(2, Some("a"), 4, 5),
            write(2, "b", 6, 7),
            read(1, Some("b"), 8, 9),
        ];
        assert_eq!(
            run(&h),
            Outcome::Linearizable {
                order: vec![0, 1, 2, 3, 4]
            }
        );
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(run(&[]), Outcome::Linearizable { order: vec![] });
    }

    #[test]
    fn stale_read_is_not_linearizable() {
        let h = vec![
            write(1, "a", 0, 1),
            write(1, "b", 2, 3),
            read(2, Some("a"), 4, 5),
        ];
        let Outcome::NotLinearizable(cx) = run(&h) else {
            panic!("stale read accepted");
        };
        assert_eq!(cx.prefix, vec![0, 1]);
        assert_eq!(cx.state, Some(s("b")));
        assert_eq!(cx.blocked, 2);
        assert_eq!(cx.candidates, vec![2]);
        let text = cx.render(&h);
        assert!(
            text.contains("#2 client 2 Read -> Read(Some(\"a\")) [4, 5]"),
            "{text}"
        );
        assert!(text.contains("ending in state Some(\"b\")"), "{text}");
    }

    #[test]
    fn read_concurrent_with_write_may_see_either_value() {
        for seen in [Some("a"), Some("b")] {
            let h = vec![
                write(1, "a", 0, 1),
                write(1, "b", 2, 6),
                read(2, seen, 3, 5),
            ];
            assert_eq!(verdict(&h), Verdict::Linearizable, "read {seen:?}");
        }
        let h = vec![
            write(1, "a", 0, 1),
            write(1, "b", 2, 6),
            read(2, None, 3, 5),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn concurrent_writes_may_take_effect_in_either_order() {
        for last in ["a", "b"] {
            let h = vec![
                write(1, "a", 0, 10),
                write(2, "b", 1, 9),
                read(3, Some(last), 11, 12),
            ];
            assert_eq!(verdict(&h), Verdict::Linearizable, "final value {last}");
        }
        let h = vec![
            write(1, "a", 0, 10),
            write(2, "b", 1, 9),
            read(3, Some("a"), 11, 12),
            read(3, Some("b"), 13, 14),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn indeterminate_write_may_show_up_later() {
        let h = vec![
            write(1, "a", 0, 1),
            Operation::indeterminate(2, In::Write(s("b")), 2),
            read(3, Some("a"), 3, 4),
            read(3, Some("b"), 50, 51),
        ];
        let Outcome::Linearizable { order } = run(&h) else {
            panic!("indeterminate write that took effect late was rejected");
        };
        assert_eq!(order, vec![0, 2, 1, 3]);
    }

    #[test]
    fn indeterminate_write_may_never_show_up() {
        let h = vec![
            write(1, "a", 0, 1),
            Operation::indeterminate(2, In::Write(s("b")), 2),
            read(3, Some("a"), 3, 4),
            read(3, Some("a"), 50, 51),
        ];
        let Outcome::Linearizable { order } = run(&h) else {
            panic!("indeterminate write that never took effect was rejected");
        };
        assert!(
            !order.contains(&1),
            "witness {order:?} needlessly applies the lost write"
        );
    }

    #[test]
    fn indeterminate_write_takes_effect_at_most_once() {
        let h = vec![
            write(1, "a", 0, 1),
            Operation::indeterminate(2, In::Write(s("b")), 2),
            read(3, Some("b"), 3, 4),
            write(1, "a", 5, 6),
            read(3, Some("b"), 7, 8),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn indeterminate_write_cannot_take_effect_before_its_call() {
        let h = vec![
            read(3, Some("b"), 0, 1),
            Operation::indeterminate(2, In::Write(s("b")), 2),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn delete_then_read_sees_nothing() {
        let h = vec![
            write(1, "a", 0, 1),
            delete(1, Some(true), 2, 3),
            read(2, None, 4, 5),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);

        let resurrected = vec![
            write(1, "a", 0, 1),
            delete(1, None, 2, 3),
            read(2, Some("a"), 4, 5),
        ];
        assert_eq!(verdict(&resurrected), Verdict::NotLinearizable);
    }

    #[test]
    fn delete_existed_flag_must_match_the_state() {
        assert_eq!(
            verdict(&[delete(1, Some(false), 0, 1)]),
            Verdict::Linearizable
        );
        assert_eq!(
            verdict(&[delete(1, Some(true), 0, 1)]),
            Verdict::NotLinearizable
        );
        let h = vec![write(1, "a", 0, 1), delete(1, Some(false), 2, 3)];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
        // Two concurrent deletes: exactly one of them can have found the key.
        let h = vec![
            write(1, "a", 0, 1),
            delete(1, Some(true), 2, 5),
            delete(2, Some(true), 3, 4),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
        let h = vec![
            write(1, "a", 0, 1),
            delete(1, Some(true), 2, 5),
            delete(2, Some(false), 3, 4),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn cas_success_and_failure_are_checked_against_the_state() {
        let h = vec![
            write(1, "a", 0, 1),
            cas(1, Some("a"), "b", true, 2, 3),
            cas(2, Some("a"), "c", false, 4, 5),
            read(1, Some("b"), 6, 7),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // Succeeding on a value that was not there.
        let h = vec![write(1, "a", 0, 1), cas(1, Some("x"), "b", true, 2, 3)];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
        // Failing although the value was there.
        let h = vec![write(1, "a", 0, 1), cas(1, Some("a"), "b", false, 2, 3)];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
        // Expecting absence.
        let h = vec![cas(1, None, "a", true, 0, 1), read(1, Some("a"), 2, 3)];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn indeterminate_cas_may_or_may_not_apply_but_only_if_it_matches() {
        let pending_cas = |expect: &str| {
            Operation::indeterminate(
                2,
                In::Cas {
                    expect: Some(s(expect)),
                    new: s("b"),
                },
                2,
            )
        };
        for seen in ["a", "b"] {
            let h = vec![
                write(1, "a", 0, 1),
                pending_cas("a"),
                read(3, Some(seen), 3, 4),
            ];
            assert_eq!(verdict(&h), Verdict::Linearizable, "read {seen}");
        }
        let h = vec![
            write(1, "a", 0, 1),
            pending_cas("x"),
            read(3, Some("b"), 3, 4),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn indeterminate_read_constrains_nothing() {
        let h = vec![
            write(1, "a", 0, 1),
            Operation::indeterminate(2, In::Read, 2),
            read(3, Some("a"), 3, 4),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn touching_intervals_count_as_concurrent() {
        // The read is called at the very instant the write returns.
        let h = vec![write(1, "a", 0, 5), read(2, None, 5, 6)];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        let h = vec![write(1, "a", 0, 5), read(2, None, 6, 7)];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn mismatched_reply_kind_is_impossible() {
        let h = vec![Operation::completed(1, In::Read, 0, Out::Write, 1)];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

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

    /// Many clients all overlapping, with a final read nobody wrote: the
    /// search has to exhaust a large space, which a tiny budget cannot.
    fn hard_unlinearizable_history() -> Vec<RegisterOp> {
        let mut h: Vec<RegisterOp> = (0..12)
            .map(|c| write(c, &c.to_string(), c, 100 + c))
            .collect();
        h.extend((0..6).map(|c| read(20 + c, Some(&(c % 12).to_string()), 10 + c, 90)));
        h.push(read(99, Some("never-written"), 200, 201));
        h
    }

    #[test]
    fn step_budget_yields_unknown_instead_of_an_answer() {
        let h = hard_unlinearizable_history();
        let outcome = check(&RegisterModel, &h, Budget::UNLIMITED.with_max_steps(50)).unwrap();
        assert_eq!(outcome, Outcome::Unknown { steps: 51 });
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn expired_deadline_yields_unknown() {
        let h = hard_unlinearizable_history();
        let budget = Budget {
            max_steps: None,
            deadline: Some(Instant::now()),
        };
        assert_eq!(
            check(&RegisterModel, &h, budget).unwrap().verdict(),
            Verdict::Unknown
        );
    }

    #[test]
    fn per_key_check_isolates_the_broken_key() {
        let op = |key: &str, op: RegisterOp| -> KeyedRegisterOp {
            Operation {
                client_id: op.client_id,
                input: (s(key), op.input),
                call: op.call,
                output: op.output,
                return_time: op.return_time,
            }
        };
        let h = vec![
            op("x", write(1, "1", 0, 1)),
            op("y", write(2, "1", 0, 1)),
            op("y", write(2, "2", 2, 3)),
            // Reading x's value from y's point of view would be wrong if the
            // store were one register; per key both reads are fine...
            op("x", read(1, Some("1"), 4, 5)),
            op("y", read(2, Some("2"), 4, 5)),
            // ...but y later goes back in time.
            op("y", read(3, Some("1"), 6, 7)),
        ];
        let results = check_per_key(&RegisterModel, &h, Budget::UNLIMITED).unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(results["x"], Outcome::Linearizable { order: vec![0, 3] });
        let Outcome::NotLinearizable(cx) = &results["y"] else {
            panic!("y accepted: {:?}", results["y"]);
        };
        // Operation numbers refer to the whole history.
        assert_eq!(cx.blocked, 5);
        assert_eq!(cx.prefix, vec![1, 2, 4]);
        assert_eq!(overall_verdict(results.values()), Verdict::NotLinearizable);
        assert!(cx.render(&h).contains("#5 client 3 (\"y\", Read)"));
    }

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

    #[test]
    fn many_timed_out_writes_stay_cheap_when_reads_pin_the_value() {
        // 40 indeterminate writes of distinct values, each read back right
        // away: only one way to place each, so the search is linear-ish.
        let mut h = Vec::new();
        for k in 0..40u64 {
            let v = k.to_string();
            h.push(Operation::indeterminate(k, In::Write(v.clone()), 10 * k));
            h.push(read(100 + k, Some(&v), 10 * k + 1, 10 * k + 2));
        }
        let outcome = check(
            &RegisterModel,
            &h,
            Budget::UNLIMITED.with_max_steps(1_000_000),
        )
        .unwrap();
        assert!(outcome.is_linearizable(), "{outcome:?}");
    }

    // -- Cross-check against the definition, on small random histories. --

    /// Linearizability straight from the definition: try every order of
    /// every allowed subset. Only usable for a handful of operations.
    fn brute_force<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> bool {
        fn go<M: Model>(
            model: &M,
            h: &[Operation<M::Input, M::Output>],
            used: &mut Vec<bool>,
            state: &M::State,
        ) -> bool {
            let pending_determinate = |used: &[bool], k: usize| !used[k] && h[k].output.is_some();
            if !(0..h.len()).any(|k| pending_determinate(used, k)) {
                return true;
            }
            for x in 0..h.len() {
                if used[x] {
                    continue;
                }
                // x may go next only if no operation still to be placed
                // returned before x was called.
                let blocked = (0..h.len()).any(|y| {
                    y != x && pending_determinate(used, y) && h[y].return_time.unwrap() < h[x].call
                });
                if blocked {
                    continue;
                }
                if let Some(next) = model.step(state, &h[x].input, h[x].output.as_ref()) {
                    used[x] = true;
                    let ok = go(model, h, used, &next);
                    used[x] = false;
                    if ok {
                        return true;
                    }
                }
            }
            false
        }
        go(
            model,
            history,
            &mut vec![false; history.len()],
            &model.init(),
        )
    }

    fn arb_value() -> impl Strategy<Value = Option<String>> {
        prop_oneof![Just(None), Just(Some(s("a"))), Just(Some(s("b")))]
    }

    fn arb_op() -> impl Strategy<Value = RegisterOp> {
        let input = prop_oneof![
            Just(In::Read),
            arb_value().prop_map(|v| In::Write(v.unwrap_or_else(|| s("c")))),
            Just(In::Delete),
            (arb_value(), arb_value()).prop_map(|(expect, new)| In::Cas {
                expect,
                new: new.unwrap_or_else(|| s("c")),
            }),
        ];
        (input, 0..12u64, 0..6u64, any::<bool>(), 0..5u8, arb_value()).prop_map(
            |(input, call, len, flag, indeterminate, value)| {
                let output = match &input {
                    In::Read => Out::Read(value),
                    In::Write(_) => Out::Write,
                    In::Delete => Out::Delete(if value.is_some() { Some(flag) } else { None }),
                    In::Cas { .. } => Out::Cas(flag),
                };
                if indeterminate == 0 {
                    Operation::indeterminate(0, input, call)
                } else {
                    Operation::completed(0, input, call, output, call + len)
                }
            },
        )
    }

    /// Histories produced by an actual atomic register: each operation takes
    /// effect at a random instant inside its interval.
    fn arb_real_history() -> impl Strategy<Value = Vec<RegisterOp>> {
        let step = (
            prop_oneof![
                Just(In::Read),
                arb_value().prop_map(|v| In::Write(v.unwrap_or_else(|| s("c")))),
                Just(In::Delete),
                (arb_value(), arb_value()).prop_map(|(expect, new)| In::Cas {
                    expect,
                    new: new.unwrap_or_else(|| s("c")),
                }),
            ],
            0..20u64,
            0..20u64,
            0..6u8,
        );
        proptest::collection::vec(step, 0..24).prop_map(|steps| {
            let mut state: Option<String> = None;
            let mut history = Vec::new();
            for (k, (input, before, after, lost)) in steps.into_iter().enumerate() {
                let at = 20 * k as u64 + 20;
                let output = match &input {
                    In::Read => Out::Read(state.clone()),
                    In::Write(_) => Out::Write,
                    In::Delete => Out::Delete(Some(state.is_some())),
                    In::Cas { expect, .. } => Out::Cas(*expect == state),
                };
                state = RegisterModel.step(&state, &input, Some(&output)).unwrap();
                if lost == 0 {
                    history.push(Operation::indeterminate(k as u64, input, at - before));
                } else {
                    history.push(Operation::completed(
                        k as u64,
                        input,
                        at - before,
                        output,
                        at + after,
                    ));
                }
            }
            history
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]

        #[test]
        fn agrees_with_brute_force_on_small_histories(h in proptest::collection::vec(arb_op(), 0..7)) {
            let outcome = check(&RegisterModel, &h, Budget::UNLIMITED).unwrap();
            if let Outcome::Linearizable { order } = &outcome {
                assert_valid_witness(&RegisterModel, &h, order);
            }
            prop_assert_eq!(outcome.is_linearizable(), brute_force(&RegisterModel, &h));
        }

        #[test]
        fn histories_of_a_real_register_are_linearizable(h in arb_real_history()) {
            let outcome = check(&RegisterModel, &h, Budget::UNLIMITED).unwrap();
            let Outcome::Linearizable { order } = &outcome else {
                return Err(TestCaseError::fail(format!("{outcome:?}")));
            };
            assert_valid_witness(&RegisterModel, &h, order);
        }
    }
}
