//! Checks on a peer message that need nothing but the message: what no correct member can
//! send, whatever its state (etcd's `raft.go` drops such messages and logs why).
//!
//! Owns the structural rules only; checks against this member's state (what the leader
//! sent, whom it follows, what it committed) are in `core`, where that state is.

use super::message::{Envelope, Message};

/// Terms and indexes above this are refused: no real cluster comes near (a term per
/// millisecond for a hundred million years), and the core's `+ 1`s can never overflow.
pub const MAX_POSITION: u64 = 1 << 62;

/// Why a message was refused; the shell logs it with the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub reason: String,
}

impl Rejected {
    pub fn new(reason: impl Into<String>) -> Rejected {
        Rejected {
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

fn bound(what: &str, v: u64) -> Result<(), Rejected> {
    if v > MAX_POSITION {
        return Err(Rejected::new(format!(
            "{what} {v} is beyond any real log (limit {MAX_POSITION})"
        )));
    }
    Ok(())
}

/// The rules every message must keep, whatever the receiver's state.
pub fn check(env: &Envelope) -> Result<(), Rejected> {
    bound("term", env.term)?;
    match &env.msg {
        Message::PreVote {
            last_log_index,
            last_log_term,
        }
        | Message::Vote {
            last_log_index,
            last_log_term,
            ..
        } => {
            bound("last log index", *last_log_index)?;
            // A candidate campaigns in a term after every entry it holds (a pre-vote names
            // the term it would campaign in).
            if *last_log_term >= env.term {
                return Err(Rejected::new(format!(
                    "a candidate for term {} cannot hold entries of term {last_log_term}",
                    env.term
                )));
            }
            if (*last_log_index == 0) != (*last_log_term == 0) {
                return Err(Rejected::new(format!(
                    "last log entry {last_log_index} cannot have term {last_log_term}"
                )));
            }
        }
        Message::Append {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => {
            bound("prev log index", *prev_log_index)?;
            bound("leader commit", *leader_commit)?;
            if *prev_log_term > env.term {
                return Err(Rejected::new(format!(
                    "a leader of term {} cannot hold entries of term {prev_log_term}",
                    env.term
                )));
            }
            if (*prev_log_index == 0) != (*prev_log_term == 0) {
                return Err(Rejected::new(format!(
                    "entry {prev_log_index} cannot have term {prev_log_term}"
                )));
            }
            let mut prev = (*prev_log_index, *prev_log_term);
            for e in entries {
                // Contiguous after `prev`, terms never decreasing, none after the leader's
                // own term: anything else has no place in any log (Raft §5.3).
                if e.index != prev.0 + 1 {
                    return Err(Rejected::new(format!(
                        "entry {} follows entry {}: the batch is not contiguous",
                        e.index, prev.0
                    )));
                }
                if e.term < prev.1 || e.term > env.term {
                    return Err(Rejected::new(format!(
                        "entry {} has term {}, after term {} and from a leader of term {}",
                        e.index, e.term, prev.1, env.term
                    )));
                }
                prev = (e.index, e.term);
            }
            bound("last entry index", prev.0)?;
        }
        Message::AppendResp { index, hint, .. } => {
            bound("index", *index)?;
            bound("hint", *hint)?;
        }
        Message::Heartbeat { leader_commit, .. } => bound("leader commit", *leader_commit)?,
        Message::HeartbeatResp { last_index, .. } => bound("last index", *last_index)?,
        Message::ReadIndexResp {
            index: Some(index), ..
        } => bound("read index", *index)?,
        Message::PreVoteResp { .. }
        | Message::VoteResp { .. }
        | Message::ReadIndex { .. }
        | Message::ReadIndexResp { index: None, .. }
        | Message::TimeoutNow => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Command, Entry, PeerAddr};

    fn env(term: u64, msg: Message) -> Envelope {
        Envelope {
            from: PeerAddr::new("b"),
            to: PeerAddr::new("a"),
            term,
            msg,
        }
    }

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            command: Command::Noop,
        }
    }

    fn append(term: u64, prev: (u64, u64), entries: Vec<Entry>) -> Envelope {
        env(
            term,
            Message::Append {
                prev_log_index: prev.0,
                prev_log_term: prev.1,
                entries,
                leader_commit: 0,
            },
        )
    }

    #[test]
    fn well_formed_messages_pass() {
        assert_eq!(check(&append(3, (4, 2), vec![e(5, 2), e(6, 3)])), Ok(()));
        assert_eq!(check(&append(1, (0, 0), vec![e(1, 1)])), Ok(()));
        let vote = Message::Vote {
            last_log_index: 9,
            last_log_term: 2,
            transfer: false,
        };
        assert_eq!(check(&env(3, vote)), Ok(()));
    }

    #[test]
    fn malformed_appends_are_refused_with_the_rule() {
        let cases = [
            (append(3, (4, 2), vec![e(1, 999)]), "not contiguous"),
            (append(3, (92, 2), vec![e(97, 2)]), "not contiguous"),
            (append(3, (4, 2), vec![e(5, 3), e(6, 2)]), "has term"),
            (append(3, (4, 2), vec![e(5, 4)]), "has term"),
            (append(3, (4, 5), vec![]), "cannot hold"),
            (append(3, (0, 1), vec![]), "cannot have term"),
            (append(3, (u64::MAX - 1, 2), vec![e(u64::MAX, 2)]), "beyond"),
            (append(u64::MAX, (1, 1), vec![]), "beyond"),
        ];
        for (m, why) in cases {
            let r = check(&m).expect_err(why);
            assert!(r.reason.contains(why), "{}: expected {why}", r.reason);
        }
    }

    #[test]
    fn a_candidate_claiming_a_future_log_is_refused() {
        let vote = Message::Vote {
            last_log_index: 1_000_000,
            last_log_term: 1_000_000,
            transfer: true,
        };
        assert!(check(&env(5, vote)).is_err());
        let pre = Message::PreVote {
            last_log_index: 3,
            last_log_term: 0,
        };
        assert!(check(&env(5, pre)).is_err());
    }
}
