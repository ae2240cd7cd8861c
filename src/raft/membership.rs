//! Membership in the core: who votes, who counts towards commits, whom a leader replicates
//! to and takes messages from, and configuration changes one voter at a time (Raft thesis
//! §4.1): when one may be appended, the leader's checks that it leaves a reachable majority,
//! promotion of learners that caught up, and a leader that removed itself handing over.
//!
//! Part of `RaftCore` (`impl` blocks over the same struct as `core`); the configuration
//! itself and its rules are in `peer_set`.

use std::collections::BTreeSet;

use super::core::{ChangeError, RaftCore, Role, CAUGHT_UP_ENTRIES};
use super::log::LogId;
use super::message::{Command, Message, PeerAddr};
use super::peer_set::{PeerChange, PeerSet};
use super::progress::{Progress, ProgressState};

impl RaftCore {
    pub(super) fn quorum(&self) -> usize {
        self.peers.latest().quorum()
    }

    /// Whether this member votes in the configuration in force.
    pub fn is_voter(&self) -> bool {
        self.peers.latest().is_voter(&self.cfg.id)
    }

    /// Whether this member starts elections: a voter of the configuration in force, or of
    /// the committed one while a configuration that removes it is not committed yet: it may
    /// still be needed to elect a leader that commits it (thesis §4.2.2). Its own vote
    /// counts only in the first case. Learners and members not added yet never campaign.
    pub fn may_campaign(&self) -> bool {
        self.is_voter() || self.committed_peers().is_voter(&self.cfg.id)
    }

    /// The configuration of the committed log.
    pub(super) fn committed_peers(&self) -> &PeerSet {
        self.peers.at(self.log.committed())
    }

    /// The other voters, whose votes count.
    pub(super) fn other_voters(&self) -> Vec<PeerAddr> {
        self.peers
            .latest()
            .voters
            .iter()
            .filter(|p| **p != self.cfg.id)
            .cloned()
            .collect()
    }

    /// Whom a leader replicates to: every member of the configuration in force and of the
    /// committed one, so that a member being removed still hears of its removal, but itself.
    pub(super) fn replication_targets(&self) -> BTreeSet<PeerAddr> {
        self.peers
            .latest()
            .members()
            .chain(self.committed_peers().members())
            .filter(|p| **p != self.cfg.id)
            .cloned()
            .collect()
    }

    /// A member this one takes messages from: one of the configuration in force or of the
    /// committed one (Nacos let anyone vote or append, reference §13.8).
    pub(super) fn is_known(&self, p: &PeerAddr) -> bool {
        self.peers.latest().contains(p) || self.committed_peers().contains(p)
    }

    /// Leader: tracks progress for exactly the replication targets (after a configuration
    /// entry, or a commit that retires a member being removed).
    pub(super) fn sync_progress(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let targets = self.replication_targets();
        self.progress.retain(|p, _| targets.contains(p));
        let next = self.log.last_index() + 1;
        for p in targets {
            self.progress
                .entry(p)
                .or_insert_with(|| Progress::new(next));
        }
    }

    /// Whether a message from `from` is taken. A leader's messages (`leads`: appends,
    /// heartbeats, snapshots, hand-overs) from any member holding the cluster secret (checked
    /// before they get here): a follower's configuration may lag the leader's (a member
    /// removed and added again leads), or know nothing yet (`--join`), and the term rules
    /// decide whether it leads. Anything else only from a member of the configuration in
    /// force or of the committed one, or the leader this member follows (Nacos let anyone
    /// vote, reference §13.8).
    pub(super) fn takes_from(&self, from: &PeerAddr, leads: bool) -> bool {
        if *from == self.cfg.id {
            return false;
        }
        leads || self.is_known(from) || self.leader.as_ref() == Some(from)
    }

    /// A vote only for a member of the configuration in force here (voter or learner: one
    /// promoted by an entry this member lacks still gets it). A member whose removal is in
    /// this log gets none, so once a removal commits, the majority of the new configuration
    /// that holds it refuses the removed member and it can never lead again.
    pub(super) fn member_may_lead(&self, candidate: &PeerAddr) -> bool {
        self.peers.latest().contains(candidate)
    }

    /// Appends the configuration `change` makes, one voter at a time (Raft thesis §4.1):
    /// in force at once on this leader, on each follower as it appends it. Refused while
    /// another change is uncommitted, and until this leader has committed an entry of its
    /// own term: a change appended before that could overlap one of an earlier leader that
    /// this one never saw, and two single-voter steps from one configuration can have
    /// majorities that do not overlap (Ongaro, raft-dev, 2015).
    pub fn propose_change(&mut self, change: PeerChange) -> Result<LogId, ChangeError> {
        if self.role != Role::Leader {
            return Err(ChangeError::NotLeader {
                leader: self.leader.clone(),
            });
        }
        self.change_allowed().map_err(ChangeError::Busy)?;
        let next = self
            .peers
            .latest()
            .apply(&change)
            .map_err(ChangeError::Refused)?;
        if let PeerChange::Promote { peer } = &change {
            if let Some(behind) = self.behind(peer) {
                return Err(ChangeError::Refused(behind));
            }
        }
        // The new voters must hold a majority that answers now, or the change itself (and
        // every write after it) could never commit. "Now" is the last two heartbeats: a
        // member that died longer ago than that is not counted (one that died since still
        // is; the runbook says to bring it back if so).
        let timeout = 2 * self.cfg.heartbeat_interval_ms;
        let reachable = next
            .voters
            .iter()
            .filter(|v| {
                **v == self.cfg.id
                    || self
                        .progress
                        .get(*v)
                        .is_some_and(|p| p.since_contact_ms < timeout)
            })
            .count();
        if reachable < next.quorum() {
            return Err(ChangeError::Refused(format!(
                "after this change {reachable} of its {} voters would be reachable, fewer than the {} a majority needs; bring the unreachable members back (or remove them first)",
                next.voters.len(),
                next.quorum()
            )));
        }
        let at = LogId::new(self.log.last_index() + 1, self.term);
        self.append_local(vec![Command::Config { peers: next }]);
        self.sync_progress();
        self.broadcast_append();
        Ok(at)
    }

    /// Why no configuration change may be appended now, if so.
    fn change_allowed(&self) -> Result<(), String> {
        if self.transfer_to.is_some() {
            return Err("leadership is being handed over; retry at the new leader".into());
        }
        let commit = self.log.committed();
        if self.peers.latest_index() > commit {
            return Err(format!(
                "the configuration change at index {} is not committed yet; retry once it is",
                self.peers.latest_index()
            ));
        }
        if self.log.term_at(commit) != Some(self.term) {
            return Err(
                "this leader has not committed an entry of its term yet; retry shortly".into(),
            );
        }
        Ok(())
    }

    /// Why `peer` is not caught up with this leader's log, if it is not (for promotion:
    /// a voter far behind could stall commits until it catches up).
    fn behind(&self, peer: &PeerAddr) -> Option<String> {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get(peer) else {
            return Some(format!("{peer} has not been heard from"));
        };
        if pr.since_contact_ms >= self.cfg.election_timeout_ms {
            return Some(format!(
                "{peer} has not answered for {} ms; it must be reachable and caught up to be promoted",
                pr.since_contact_ms
            ));
        }
        if pr.state != ProgressState::Replicate || pr.match_index + CAUGHT_UP_ENTRIES < last {
            return Some(format!(
                "{peer} has {} of the leader's {last} entries ({} behind); wait for it to catch up (member list shows its lag)",
                pr.match_index,
                last.saturating_sub(pr.match_index)
            ));
        }
        None
    }

    /// Leader, each heartbeat: promotes one learner added for it once it has caught up.
    pub(super) fn maybe_auto_promote(&mut self) {
        if self.change_allowed().is_err() {
            return;
        }
        let ready = self
            .peers
            .latest()
            .auto_promote
            .iter()
            .find(|p| self.behind(p).is_none())
            .cloned();
        if let Some(peer) = ready {
            // Refused only if the change would leave no reachable majority: try again at
            // the next heartbeat.
            let _ = self.propose_change(PeerChange::Promote { peer });
        }
    }

    /// Leader, after its commit index moved: members being removed whose removal committed
    /// stop getting entries; and a leader whose own removal committed hands over to the
    /// most up-to-date voter and steps down (thesis §4.2.2): it is no longer a member.
    pub(super) fn after_leader_commit(&mut self) {
        self.sync_progress();
        if self.committed_peers().is_voter(&self.cfg.id) {
            return;
        }
        let timeout = self.cfg.election_timeout_ms;
        let voters = self.committed_peers().voters.clone();
        let successor = self
            .progress
            .iter()
            .filter(|(p, pr)| voters.contains(*p) && pr.since_contact_ms < timeout)
            .max_by_key(|(_, pr)| pr.match_index)
            .map(|(p, _)| p.clone());
        if let Some(p) = successor {
            self.send(p, self.term, Message::TimeoutNow);
        }
        self.become_follower(self.term, None);
    }
}
