//! Helpers of the unit tests: builders of register histories, and a check of a witness order
//! that is independent of the search. Test-only.

use crate::{check, Budget, Model, Operation, Outcome, RegisterModel, RegisterOp, Verdict};
use crate::{RegisterInput as In, RegisterOutput as Out};

pub(crate) fn s(v: &str) -> String {
    v.to_string()
}

pub(crate) fn write(client: u64, v: &str, call: u64, ret: u64) -> RegisterOp {
    Operation::completed(client, In::Write(s(v)), call, Out::Write, ret)
}

pub(crate) fn read(client: u64, v: Option<&str>, call: u64, ret: u64) -> RegisterOp {
    Operation::completed(client, In::Read, call, Out::Read(v.map(s)), ret)
}

pub(crate) fn cas(
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

pub(crate) fn delete(client: u64, existed: Option<bool>, call: u64, ret: u64) -> RegisterOp {
    Operation::completed(client, In::Delete, call, Out::Delete(existed), ret)
}

pub(crate) fn run(history: &[RegisterOp]) -> Outcome<crate::Register> {
    let outcome = check(&RegisterModel, history, Budget::UNLIMITED).expect("well-formed");
    if let Outcome::Linearizable { order } = &outcome {
        assert_valid_witness(&RegisterModel, history, order);
    }
    outcome
}

/// Independently verifies a witness: each determinate operation exactly
/// once, indeterminate ones at most once, real-time order respected, and
/// every step legal for the model.
pub(crate) fn assert_valid_witness<M: Model>(
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

pub(crate) fn verdict(history: &[RegisterOp]) -> Verdict {
    run(history).verdict()
}
