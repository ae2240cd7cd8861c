//! The leader's view of one follower (etcd `tracker.Progress`): how far its log matches,
//! what to send next, and which of three states replication to it is in.
//!
//! Owns the transitions between the states and the bookkeeping of what was sent; must not
//! build messages or count quorums (the core does).

use std::collections::VecDeque;

/// How the leader replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Unknown where the follower's log matches: one Append per heartbeat until one succeeds.
    Probe,
    /// Matching: stream Appends back to back, up to the in-flight window.
    Replicate,
    /// Behind the retained log: a snapshot is being streamed; nothing else is sent.
    Snapshot,
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub match_index: u64,
    pub next_index: u64,
    pub state: ProgressState,
    /// Last index of each Append in flight (Replicate), oldest first.
    pub inflight: VecDeque<u64>,
    /// Probe: an Append is out and unanswered.
    pub probe_sent: bool,
    /// Milliseconds since anything arrived from this follower.
    pub since_contact_ms: u64,
    /// Consecutive heartbeat replies with entries outstanding and `match_index` unmoved.
    pub lagging_beats: u32,
    /// `match_index` at the previous heartbeat reply.
    pub beat_match: u64,
    /// Probe: how far below a rejected index the next probe goes at least; doubles with
    /// each rejection in a row (see `RaftCore::handle_append_resp`).
    pub probe_back: u64,
    /// The highest index this leader ever offered the follower (the end of an Append, or
    /// a snapshot): an acknowledgement beyond it acknowledges what was never sent, so it
    /// is a lie or a bug, and counting it could commit an entry no majority holds.
    pub sent_up_to: u64,
}

impl Progress {
    pub fn new(next_index: u64) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            inflight: VecDeque::new(),
            probe_sent: false,
            since_contact_ms: 0,
            lagging_beats: 0,
            beat_match: 0,
            probe_back: 1,
            sent_up_to: 0,
        }
    }

    /// Back to probing from just after the match index.
    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.inflight.clear();
        self.probe_sent = false;
        self.probe_back = 1;
    }

    /// A probe succeeded: stream from just after the match index.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.probe_sent = false;
        self.inflight.clear();
        self.next_index = self.match_index + 1;
    }

    /// The follower needs entries the log no longer holds: a snapshot of the datum set
    /// goes instead, and nothing else is sent until the stream ends.
    pub fn become_snapshot(&mut self) {
        self.state = ProgressState::Snapshot;
        self.inflight.clear();
        self.probe_sent = false;
    }

    /// Whether nothing more may be sent now.
    pub fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= max_inflight,
            ProgressState::Snapshot => true,
        }
    }

    /// An Append ending at `last` went out.
    pub fn sent_append(&mut self, last: u64) {
        self.sent_up_to = self.sent_up_to.max(last);
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                self.next_index = last + 1;
                self.inflight.push_back(last);
            }
            ProgressState::Snapshot => {}
        }
    }

    /// The follower acknowledged its log matches up to `index` (at most `sent_up_to`,
    /// checked by the caller).
    pub fn on_ack(&mut self, index: u64) {
        self.lagging_beats = 0;
        if index > self.match_index {
            self.match_index = index;
        }
        self.next_index = self.next_index.max(self.match_index + 1);
        while self.inflight.front().is_some_and(|&i| i <= index) {
            self.inflight.pop_front();
        }
        if self.state == ProgressState::Probe {
            self.become_replicate();
        }
    }

    /// Whether a rejection of the Append whose `prev_log_index` was `index` is stale. In
    /// Replicate, one at or below the match index is. In Probe only the answer to the
    /// latest probe (prev = next_index - 1) counts: acting on answers to superseded probes
    /// (duplicates, or probes resent by a heartbeat) moved next_index back up and started
    /// one more endless chain of probes per stale answer (etcd `Progress.MaybeDecrTo` has
    /// the same rule). In Snapshot the stream decides what comes next.
    pub fn is_stale_rejection(&self, index: u64) -> bool {
        match self.state {
            ProgressState::Replicate => index <= self.match_index,
            ProgressState::Probe => index + 1 != self.next_index,
            ProgressState::Snapshot => true,
        }
    }

    /// A current rejection of the Append after `index`, with the follower's `hint` of
    /// where its log may match; the leader's log ends at `last`. Probes again from below.
    pub fn on_reject(&mut self, index: u64, hint: u64, last: u64) {
        let back = if self.state == ProgressState::Probe {
            self.probe_back
        } else {
            1
        };
        self.become_probe();
        // The follower's hint is below the rejected index, so each answer moves back. A
        // follower whose conflicting entries have older terms than ours can only step back
        // one index (the Raft §5.3 optimization needs its conflicting term, which the
        // message does not carry), so rejections in a row step back 1, 2, 4, ... further:
        // O(log n) round trips for n divergent entries, and at most about 2n entries sent
        // again, most of which had to be replaced anyway.
        self.next_index = hint
            .saturating_add(1)
            .min((index + 1).saturating_sub(back))
            .max(self.match_index + 1)
            .min(last + 1);
        self.probe_back = back.saturating_mul(2);
    }

    /// The snapshot stream ended. On success the follower took the datum set up to
    /// `index`, the point the stream covered (or was past it): probing resumes just after
    /// it. The match index moves only when the follower acknowledges, which it does once
    /// the install is durable; its answer to the stream comes before that, and a follower
    /// that crashes in between comes back with its old log, to which the leader's commit
    /// index up to `index` must not be applied.
    pub fn on_snapshot_sent(&mut self, index: u64, ok: bool) {
        self.become_probe();
        if ok {
            self.sent_up_to = self.sent_up_to.max(index);
            self.next_index = self.next_index.max(index + 1);
        } else {
            // Retry at the next heartbeat, not in a tight loop against a dead peer.
            self.probe_sent = true;
        }
    }

    /// The follower's log ends at `follower_last`, below what it acknowledged: it lost it
    /// (a replaced or wiped disk). Start over from what it holds.
    pub fn on_lost_log(&mut self, follower_last: u64) {
        self.match_index = 0;
        self.become_probe();
        self.next_index = follower_last + 1;
    }

    /// A heartbeat reply arrived while replicating with entries outstanding up to `last`:
    /// whether an Append or its answer was probably lost (no acknowledgement moved the match
    /// index for two heartbeats), in which case probing starts again.
    pub fn maybe_stalled(&mut self, last: u64) -> bool {
        if self.match_index < last && self.match_index == self.beat_match {
            self.lagging_beats += 1;
        } else {
            self.lagging_beats = 0;
        }
        self.beat_match = self.match_index;
        if self.lagging_beats >= 2 {
            self.lagging_beats = 0;
            self.become_probe();
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_to_replicate_to_probe() {
        let mut p = Progress::new(11);
        assert!(!p.is_paused(4));
        p.sent_append(10);
        assert!(p.is_paused(4), "one probe at a time");
        p.on_ack(10);
        assert_eq!(p.state, ProgressState::Replicate);
        assert_eq!((p.match_index, p.next_index), (10, 11));
        for last in [12, 14] {
            p.sent_append(last);
        }
        assert_eq!((p.next_index, p.inflight.len()), (15, 2));
        p.on_ack(12);
        assert_eq!(p.inflight, [14]);
        assert!(p.is_stale_rejection(12));
        assert!(!p.is_stale_rejection(13));
        p.on_reject(13, 12, 14);
        assert_eq!(p.state, ProgressState::Probe);
        assert_eq!(p.next_index, 13);
    }

    #[test]
    fn rejections_in_a_row_step_back_further_each_time() {
        let mut p = Progress::new(101);
        let mut nexts = Vec::new();
        for _ in 0..5 {
            let prev = p.next_index - 1;
            p.on_reject(prev, prev - 1, 100);
            nexts.push(p.next_index);
        }
        assert_eq!(nexts, [100, 98, 94, 86, 70]);
    }

    #[test]
    fn a_snapshot_pauses_replication_until_it_ends() {
        let mut p = Progress::new(5);
        p.become_snapshot();
        assert!(p.is_paused(64));
        assert!(p.is_stale_rejection(4), "the stream decides");
        p.on_snapshot_sent(50, true);
        assert_eq!(
            (p.state, p.match_index, p.next_index),
            (ProgressState::Probe, 0, 51),
            "only an acknowledgement moves the match index"
        );
        assert_eq!(p.sent_up_to, 50);

        let mut p = Progress::new(5);
        p.become_snapshot();
        p.on_snapshot_sent(50, false);
        assert_eq!(p.match_index, 0);
        assert!(
            p.is_paused(64),
            "a failed stream waits for the next heartbeat"
        );
    }

    #[test]
    fn a_lost_log_starts_over_from_what_the_follower_holds() {
        let mut p = Progress::new(1);
        p.on_ack(40);
        p.on_lost_log(3);
        assert_eq!(
            (p.match_index, p.next_index, p.state),
            (0, 4, ProgressState::Probe)
        );
    }

    #[test]
    fn two_heartbeats_without_progress_mean_a_lost_append() {
        let mut p = Progress::new(1);
        p.on_ack(5);
        // The first reply only records where the match index is.
        assert!(!p.maybe_stalled(9));
        assert!(!p.maybe_stalled(9));
        assert!(p.maybe_stalled(9));
        assert_eq!(p.state, ProgressState::Probe);
    }
}
