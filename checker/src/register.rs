//! The register model: one key of a key/value store, holding `Option<String>` and its
//! version, with read, write, delete, and compare-and-set on the value (as the Jepsen etcd
//! histories record it) or on the version (as the chaos suite records nacos-raft's
//! `if_timestamp`).

use serde::{Deserialize, Serialize};

use crate::history::{KeyedOperation, Operation};
use crate::model::Model;

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
    /// Set the value to `new` if the register's version is `expect` (0 = absent). The
    /// version is Nacos's `timestamp`: 1 when the key is created, one more on each write,
    /// gone with a delete.
    CasVersion { expect: u64, new: String },
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

/// A register's state: its value, and its version (0 when absent).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Register {
    pub value: Option<String>,
    pub version: u64,
}

impl Register {
    /// After a write of `v`: a new key starts at version 1.
    fn written(&self, v: &str) -> Register {
        Register {
            value: Some(v.to_string()),
            version: if self.value.is_some() {
                self.version + 1
            } else {
                1
            },
        }
    }
}

/// One operation on a single register.
pub type RegisterOp = Operation<RegisterInput, RegisterOutput>;

/// One operation on a key of a key/value store, for [`check_per_key`](crate::check_per_key) with
/// [`RegisterModel`].
pub type KeyedRegisterOp<K = String> = KeyedOperation<K, RegisterInput, RegisterOutput>;

impl Model for RegisterModel {
    type State = Register;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Register {
        Register::default()
    }

    fn step(
        &self,
        state: &Register,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Option<Register> {
        use RegisterInput as In;
        use RegisterOutput as Out;
        // A compare-and-set: whether its condition holds now, and the state if it takes
        // effect.
        let conditional = |matches: bool, new: &str| match output {
            // Unknown outcome: it did whatever it would have done.
            None => Some(if matches {
                state.written(new)
            } else {
                state.clone()
            }),
            Some(Out::Cas(true)) => matches.then(|| state.written(new)),
            Some(Out::Cas(false)) => (!matches).then(|| state.clone()),
            Some(_) => None,
        };
        match (input, output) {
            (In::Read, None) => Some(state.clone()),
            (In::Read, Some(Out::Read(seen))) => (*seen == state.value).then(|| state.clone()),
            (In::Write(v), None | Some(Out::Write)) => Some(state.written(v)),
            (In::Delete, None | Some(Out::Delete(None))) => Some(Register::default()),
            (In::Delete, Some(Out::Delete(Some(existed)))) => {
                (*existed == state.value.is_some()).then(Register::default)
            }
            (In::Cas { expect, new }, _) => conditional(*expect == state.value, new),
            (In::CasVersion { expect, new }, _) => conditional(*expect == state.version, new),
            (In::Read | In::Write(_) | In::Delete, Some(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{cas, delete, read, s, verdict, write};
    use crate::Verdict;

    use RegisterInput as In;
    use RegisterOutput as Out;

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
    fn mismatched_reply_kind_is_impossible() {
        let h = vec![Operation::completed(1, In::Read, 0, Out::Write, 1)];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    /// Compare-and-set on the version: Nacos's timestamp, 1 on creation, +1 per write, gone
    /// with a delete (a recreated key starts at 1 again).
    #[test]
    fn a_version_cas_follows_the_nacos_timestamp() {
        let m = RegisterModel;
        let cas = |expect, new: &str| In::CasVersion {
            expect,
            new: new.into(),
        };
        let st = m.init();
        let st = m.step(&st, &cas(0, "a"), Some(&Out::Cas(true))).unwrap();
        assert_eq!(st.version, 1);
        assert!(m.step(&st, &cas(0, "b"), Some(&Out::Cas(true))).is_none());
        let st = m
            .step(&st, &In::Write("b".into()), Some(&Out::Write))
            .unwrap();
        assert_eq!(st.version, 2);
        let st = m.step(&st, &cas(2, "c"), Some(&Out::Cas(true))).unwrap();
        let st = m
            .step(&st, &In::Delete, Some(&Out::Delete(Some(true))))
            .unwrap();
        assert_eq!(st, Register::default());
        assert!(m.step(&st, &cas(3, "d"), Some(&Out::Cas(true))).is_none());
        let st = m.step(&st, &cas(0, "d"), Some(&Out::Cas(true))).unwrap();
        assert_eq!((st.value.as_deref(), st.version), (Some("d"), 1));
    }
}
