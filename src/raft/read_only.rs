//! Linearizable reads on the leader (ReadIndex, Raft thesis §6.4; etcd `readOnly`): reads
//! waiting for the leader's first commit of its term, and reads waiting for a heartbeat
//! round acknowledged by a majority.
//!
//! Owns the read queue and the round numbers; must not send messages (the core does).

use std::collections::{BTreeSet, HashSet, VecDeque};

use super::message::PeerAddr;

/// A read waiting for a heartbeat round to confirm leadership.
#[derive(Debug)]
struct PendingRead {
    round: u64,
    index: u64,
    ctx: u64,
    /// Who asked: this node (None) or a follower.
    from: Option<PeerAddr>,
    acks: HashSet<PeerAddr>,
}

/// A read whose index is settled: serve `ctx` of `from` once `index` is applied.
pub type ReadyRead = (u64, Option<PeerAddr>, u64);

#[derive(Debug, Default)]
pub struct ReadOnly {
    pending: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its own term.
    waiting_commit: Vec<(u64, Option<PeerAddr>)>,
    /// The last heartbeat round that carried reads.
    round: u64,
    round_needed: bool,
}

impl ReadOnly {
    /// Until the no-op of its term commits, a leader's commit index may be behind what
    /// earlier leaders committed (Raft §8): the read waits.
    pub fn wait_for_commit(&mut self, ctx: u64, from: Option<PeerAddr>) {
        self.waiting_commit.push((ctx, from));
    }

    pub fn take_waiting_commit(&mut self) -> Vec<(u64, Option<PeerAddr>)> {
        std::mem::take(&mut self.waiting_commit)
    }

    /// A read at `index`, confirmed once a majority acknowledges the next round; `me`
    /// counts at once.
    pub fn add(&mut self, ctx: u64, from: Option<PeerAddr>, index: u64, me: &PeerAddr) {
        let mut acks = HashSet::new();
        acks.insert(me.clone());
        self.pending.push_back(PendingRead {
            round: self.round + 1,
            index,
            ctx,
            from,
            acks,
        });
        self.round_needed = true;
    }

    /// Whether reads are waiting for a round that has not been sent (all reads of one
    /// driver turn share it).
    pub fn take_round_needed(&mut self) -> bool {
        std::mem::take(&mut self.round_needed)
    }

    /// The round a heartbeat broadcast carries now: a new one when reads wait, else 0.
    pub fn start_round(&mut self) -> u64 {
        if self.pending.is_empty() {
            0
        } else {
            self.round += 1;
            self.round
        }
    }

    /// The highest round ever sent: an acknowledgement of a later one is impossible.
    pub fn last_round(&self) -> u64 {
        self.round
    }

    /// `from` acknowledged heartbeat round `round`; returns the reads now confirmed by a
    /// majority of `voters` (learners' acknowledgements count for nothing), in order
    /// (rounds are acknowledged in order, so the front always completes first).
    pub fn ack(
        &mut self,
        from: &PeerAddr,
        round: u64,
        voters: &BTreeSet<PeerAddr>,
    ) -> Vec<ReadyRead> {
        let quorum = voters.len() / 2 + 1;
        if round == 0 || round > self.round {
            return Vec::new();
        }
        for r in self.pending.iter_mut().filter(|r| r.round <= round) {
            r.acks.insert(from.clone());
        }
        let mut done = Vec::new();
        while self
            .pending
            .front()
            .is_some_and(|r| r.acks.iter().filter(|a| voters.contains(*a)).count() >= quorum)
        {
            if let Some(r) = self.pending.pop_front() {
                done.push((r.ctx, r.from, r.index));
            }
        }
        done
    }

    /// Leadership was lost: every read fails.
    pub fn drain_all(&mut self) -> Vec<(u64, Option<PeerAddr>)> {
        self.pending
            .drain(..)
            .map(|r| (r.ctx, r.from))
            .chain(self.waiting_commit.drain(..))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PeerAddr {
        PeerAddr::new(s)
    }

    #[test]
    fn a_read_completes_with_a_majority_of_its_round_only() {
        let mut r = ReadOnly::default();
        r.add(1, None, 10, &p("a"));
        assert!(r.take_round_needed());
        assert_eq!(r.start_round(), 1);
        r.add(2, Some(p("c")), 11, &p("a"));
        let voters: BTreeSet<PeerAddr> = [p("a"), p("b"), p("c")].into();
        assert!(
            r.ack(&p("b"), 2, &voters).is_empty(),
            "round 2 was never sent"
        );
        assert!(
            r.ack(&p("l"), 1, &voters).is_empty(),
            "a learner counts for nothing"
        );
        assert_eq!(r.ack(&p("b"), 1, &voters), vec![(1, None, 10)]);
        assert_eq!(r.start_round(), 2);
        assert_eq!(r.ack(&p("b"), 2, &voters), vec![(2, Some(p("c")), 11)]);
        assert_eq!(r.start_round(), 0, "nothing waits");
    }

    #[test]
    fn losing_leadership_fails_every_read() {
        let mut r = ReadOnly::default();
        r.add(1, None, 10, &p("a"));
        r.wait_for_commit(2, Some(p("b")));
        assert_eq!(r.drain_all(), vec![(1, None), (2, Some(p("b")))]);
        assert!(r.drain_all().is_empty());
    }
}
