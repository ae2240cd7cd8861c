//! The search: [`check`] and [`check_per_key`] (validation, the split by key) and the
//! depth-first walk of the [`EventList`] that tries to linearize one operation after another,
//! backtracking on a dead end and pruning with a cache of the (linearized set, state) pairs it
//! has seen, each set a [`BitSet`].

use std::collections::{BTreeMap, HashSet};

use crate::budget::Budget;
use crate::event_list::{EventList, HEAD, NIL};
use crate::history::{HistoryError, KeyedOperation, OpRef, Operation};
use crate::model::Model;
use crate::outcome::{Counterexample, Outcome};

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
/// deadline to the whole call; combine the answers with [`overall_verdict`](crate::overall_verdict).
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use proptest::prelude::*;

    use super::*;
    use crate::testkit::{assert_valid_witness, read, run, s, verdict, write};
    use crate::{overall_verdict, KeyedRegisterOp, RegisterModel, RegisterOp, Verdict};
    use crate::{RegisterInput as In, RegisterOutput as Out};

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
        assert_eq!(cx.state.value, Some(s("b")));
        assert_eq!(cx.blocked, 2);
        assert_eq!(cx.candidates, vec![2]);
        let text = cx.render(&h);
        assert!(
            text.contains("#2 client 2 Read -> Read(Some(\"a\")) [4, 5]"),
            "{text}"
        );
        assert!(
            text.contains("ending in state Register { value: Some(\"b\"), version: 2 }"),
            "{text}"
        );
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
            (0..3u64, arb_value()).prop_map(|(expect, new)| In::CasVersion {
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
                    In::Cas { .. } | In::CasVersion { .. } => Out::Cas(flag),
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
                (0..3u64, arb_value()).prop_map(|(expect, new)| In::CasVersion {
                    expect,
                    new: new.unwrap_or_else(|| s("c")),
                }),
            ],
            0..20u64,
            0..20u64,
            0..6u8,
        );
        proptest::collection::vec(step, 0..24).prop_map(|steps| {
            let mut state = crate::Register::default();
            let mut history = Vec::new();
            for (k, (input, before, after, lost)) in steps.into_iter().enumerate() {
                let at = 20 * k as u64 + 20;
                let output = match &input {
                    In::Read => Out::Read(state.value.clone()),
                    In::Write(_) => Out::Write,
                    In::Delete => Out::Delete(Some(state.value.is_some())),
                    In::Cas { expect, .. } => Out::Cas(*expect == state.value),
                    In::CasVersion { expect, .. } => Out::Cas(*expect == state.version),
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
