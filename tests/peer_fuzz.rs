//! Property tests of what a peer can send: arbitrary bytes to the peer decoders, and
//! arbitrary messages, well formed or not, to running cores. Nothing may panic, a refused
//! message must change nothing, and whatever is accepted must leave the core's output
//! consistent (the shell trusts it blindly).

use std::collections::BTreeMap;

use proptest::prelude::*;

use nacos_raft::raft::{
    Command, Config, Entry, Envelope, HardState, LogId, Message, PeerAddr, RaftCore, Ready, Role,
};
use nacos_raft::wire::peer::{decode_batch, decode_chunk, encode_batch};

fn addr(i: usize) -> PeerAddr {
    PeerAddr::new(format!("n{i}"))
}

fn members() -> Vec<PeerAddr> {
    (0..3).map(addr).collect()
}

fn config(i: usize) -> Config {
    let mut c = Config::new(addr(i), members());
    c.heartbeat_interval_ms = 10;
    c.election_timeout_ms = 50;
    c.seed = i as u64 + 1;
    c
}

/// A 3-member cluster on an instant network: n0 leads, with `writes` entries committed.
struct Cluster {
    cores: Vec<RaftCore>,
    /// Per member: every entry it was told to persist, by index (the last word wins).
    persisted: Vec<BTreeMap<u64, Entry>>,
    /// Per member: the index of the last entry handed out for applying.
    applied: Vec<u64>,
}

impl Cluster {
    fn new(writes: u64) -> Cluster {
        let cores = (0..3)
            .map(|i| RaftCore::new(config(i), HardState::default(), LogId::ZERO, vec![]))
            .collect();
        let mut c = Cluster {
            cores,
            persisted: vec![BTreeMap::new(); 3],
            applied: vec![0; 3],
        };
        c.cores[0].tick(200);
        c.settle();
        assert_eq!(c.cores[0].role(), Role::Leader);
        for w in 0..writes {
            c.cores[0]
                .propose(vec![Command::publish(
                    format!("k{}", w % 3),
                    serde_json::json!(w),
                )])
                .expect("leader");
            c.settle();
        }
        c
    }

    /// Carries out one member's `Ready` (instant disk), checking what it asks for.
    fn flush(&mut self, i: usize, out: &mut Vec<Envelope>) {
        loop {
            let rd: Ready = self.cores[i].take_ready();
            if rd.is_empty() {
                return;
            }
            check_ready(i, &rd, self.applied[i]);
            if let Some(from) = rd.truncate_from {
                self.persisted[i].retain(|&k, _| k < from);
            }
            for e in &rd.entries {
                self.persisted[i].insert(e.index, e.clone());
            }
            if let Some(last) = rd.entries.last() {
                self.cores[i].on_persisted(last.id());
            }
            if let Some(e) = rd.committed.last() {
                self.applied[i] = e.index;
            }
            out.extend(rd.messages);
            out.extend(rd.after_persist);
        }
    }

    /// Delivers until the network is quiet; a correct member's message is never refused.
    fn settle(&mut self) {
        let mut queue = Vec::new();
        for i in 0..3 {
            self.flush(i, &mut queue);
        }
        let mut n = 0;
        while let Some(env) = queue.pop() {
            n += 1;
            assert!(n < 100_000, "messages never stop");
            let to = members().iter().position(|m| *m == env.to).expect("member");
            let msg = format!("{env:?}");
            if let Err(r) = self.cores[to].step(env) {
                panic!("a correct member's message was refused: {r}: {msg}");
            }
            self.flush(to, &mut queue);
        }
    }
}

/// What the shell relies on in every `Ready`.
fn check_ready(i: usize, rd: &Ready, applied_before: u64) {
    for w in rd.entries.windows(2) {
        assert_eq!(
            w[1].index,
            w[0].index + 1,
            "n{i}: entries to persist not contiguous"
        );
        assert!(w[1].term >= w[0].term, "n{i}: entry terms go down");
    }
    if let (Some(from), Some(first)) = (rd.truncate_from, rd.entries.first()) {
        assert!(
            first.index >= from,
            "n{i}: appends before the truncation point"
        );
    }
    let mut next = applied_before + 1;
    for e in &rd.committed {
        assert!(e.index >= next, "n{i}: committed entries out of order");
        next = e.index + 1;
    }
}

fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Noop),
        ("[a-z]{1,3}", any::<i64>(), prop::option::of(0u64..4)).prop_map(|(key, v, cond)| {
            Command::Publish {
                key,
                value: serde_json::json!(v),
                if_timestamp: cond,
                request: None,
                user: None,
            }
        }),
        "[a-z]{1,3}".prop_map(Command::delete),
    ]
}

/// Positions near what a small cluster holds, and a few far outside it.
fn arb_pos() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..12,
        Just(u64::MAX),
        Just(1 << 62),
        1_000u64..1_000_000_000
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    let entries =
        prop::collection::vec((arb_pos(), arb_pos(), arb_command()), 0..4).prop_map(|v| {
            v.into_iter()
                .map(|(index, term, command)| Entry {
                    index,
                    term,
                    command,
                })
                .collect::<Vec<_>>()
        });
    prop_oneof![
        (arb_pos(), arb_pos()).prop_map(|(a, b)| Message::PreVote {
            last_log_index: a,
            last_log_term: b
        }),
        any::<bool>().prop_map(|granted| Message::PreVoteResp { granted }),
        (arb_pos(), arb_pos(), any::<bool>()).prop_map(|(a, b, t)| Message::Vote {
            last_log_index: a,
            last_log_term: b,
            transfer: t
        }),
        any::<bool>().prop_map(|granted| Message::VoteResp { granted }),
        (arb_pos(), arb_pos(), entries, arb_pos()).prop_map(|(p, t, entries, c)| {
            Message::Append {
                prev_log_index: p,
                prev_log_term: t,
                entries,
                leader_commit: c,
            }
        }),
        (any::<bool>(), arb_pos(), arb_pos()).prop_map(|(success, index, hint)| {
            Message::AppendResp {
                success,
                index,
                hint,
            }
        }),
        (arb_pos(), arb_pos()).prop_map(|(c, r)| Message::Heartbeat {
            leader_commit: c,
            read_ctx: r
        }),
        (arb_pos(), arb_pos()).prop_map(|(r, l)| Message::HeartbeatResp {
            read_ctx: r,
            last_index: l
        }),
        arb_pos().prop_map(|ctx| Message::ReadIndex { ctx }),
        (arb_pos(), prop::option::of(arb_pos()))
            .prop_map(|(ctx, index)| Message::ReadIndexResp { ctx, index }),
        Just(Message::TimeoutNow),
    ]
}

/// A message from any member (or a stranger) to any member, at a term near the cluster's.
fn arb_envelope() -> impl Strategy<Value = (usize, Envelope)> {
    (
        0usize..4,
        0usize..3,
        prop_oneof![0u64..5, arb_pos()],
        arb_message(),
    )
        .prop_map(|(from, to, term, msg)| {
            (
                to,
                Envelope {
                    from: addr(from),
                    to: addr(to),
                    term,
                    msg,
                },
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes at all: the decoders answer, never panic.
    #[test]
    fn the_peer_decoders_take_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_batch(&bytes);
        let _ = decode_chunk(&bytes);
    }

    /// Valid batches with one byte changed: still no panic, and what decodes re-encodes.
    #[test]
    fn a_batch_with_a_flipped_byte_never_panics(
        envs in prop::collection::vec(arb_envelope(), 1..4),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let envs: Vec<Envelope> = envs.into_iter().map(|(_, e)| e).collect();
        let mut body = encode_batch(&envs);
        let i = at.index(body.len());
        body[i] ^= 1 << bit;
        if let Ok(items) = decode_batch(&body) {
            for e in items.into_iter().flatten() {
                let again = encode_batch([&e]);
                let back = decode_batch(&again).expect("re-encoded batch decodes");
                prop_assert_eq!(back.len(), 1);
            }
        }
    }

    /// Arbitrary messages into a running cluster: no panic, every `Ready` is consistent,
    /// and a refused message changes nothing the member shows.
    #[test]
    fn arbitrary_messages_never_panic_a_core_or_bend_its_output(
        writes in 0u64..4,
        msgs in prop::collection::vec(arb_envelope(), 1..24),
    ) {
        let mut c = Cluster::new(writes);
        for (to, env) in msgs {
            let before = c.cores[to].status();
            let refused = c.cores[to].step(env).is_err();
            if refused {
                let after = c.cores[to].status();
                prop_assert_eq!(
                    (before.role, before.term, &before.vote_for, before.commit_index, before.last_log_index),
                    (after.role, after.term, &after.vote_for, after.commit_index, after.last_log_index)
                );
                prop_assert!(c.cores[to].take_ready().is_empty(), "a refused message had effects");
            }
            let mut sink = Vec::new();
            c.flush(to, &mut sink);
            let s = c.cores[to].status();
            prop_assert!(s.commit_index <= s.last_log_index);
            prop_assert!(s.term >= before.term, "the term went back");
        }
    }

    /// What no correct member sends is refused, whatever the cluster's state.
    #[test]
    fn malformed_appends_and_acknowledgements_are_refused(
        writes in 1u64..4,
        gap in 2u64..50,
        far in 100u64..1_000_000,
    ) {
        let mut c = Cluster::new(writes);
        let term = c.cores[1].term();
        let last = c.cores[1].last_index();
        let noop = |index, term| Entry { index, term, command: Command::Noop };
        let append = |entries| Envelope {
            from: addr(0),
            to: addr(1),
            term,
            msg: Message::Append {
                prev_log_index: last,
                prev_log_term: term,
                entries,
                leader_commit: last,
            },
        };
        // A gap, an entry out of place, a term after the leader's: every follower refuses.
        for bad in [vec![noop(last + gap, term)], vec![noop(1, term + 1)], vec![noop(last + 1, term + 1)]] {
            prop_assert!(c.cores[1].step(append(bad)).is_err());
        }
        // A contradiction of a committed entry.
        let committed = c.cores[1].commit_index();
        let lie = Envelope {
            from: addr(0),
            to: addr(1),
            term,
            msg: Message::Append {
                prev_log_index: committed - 1,
                prev_log_term: c.cores[1].term_at(committed - 1).unwrap(),
                entries: vec![noop(committed, term + 1)],
                leader_commit: committed,
            },
        };
        prop_assert!(c.cores[1].step(lie).is_err());
        // The leader never counts an acknowledgement of what it did not send.
        let ack = Envelope {
            from: addr(2),
            to: addr(0),
            term,
            msg: Message::AppendResp { success: true, index: last + far, hint: 0 },
        };
        prop_assert!(c.cores[0].step(ack).is_err());
        // Another member acting as leader of the term.
        let usurper = Envelope {
            from: addr(2),
            to: addr(1),
            term,
            msg: Message::Heartbeat { leader_commit: 0, read_ctx: 0 },
        };
        prop_assert!(c.cores[1].step(usurper).is_err());
        // And the cluster goes on as if nothing happened.
        c.cores[0].propose(vec![Command::Noop]).expect("still leader");
        c.settle();
        // A heartbeat carries the new commit index.
        c.cores[0].tick(10);
        c.settle();
        prop_assert_eq!(c.cores[1].commit_index(), c.cores[0].commit_index());
    }
}
