//! Log replication, both sides: a follower taking Appends (log matching, truncation of a
//! divergent suffix, commit), and a leader streaming them (per-follower progress, the
//! in-flight window, probes after rejections, snapshots for followers behind the retained
//! log), counting acknowledgements to commit, and heartbeats that carry reads.
//!
//! Part of `RaftCore` (`impl` blocks over the same struct as `core`); the role changes and
//! message dispatch are in `core`.

use super::core::{RaftCore, Role};
use super::log::LogId;
use super::message::{Command, Entry, Message, PeerAddr};
use super::progress::ProgressState;
use super::validate::Rejected;

/// About the size of an entry as JSON, without serialising it (it is only a budget).
pub(super) fn approx_json_size(e: &Entry) -> usize {
    64 + match &e.command {
        Command::Noop => 0,
        Command::Publish { key, value, .. } => key.len() + crate::datum::approx_json_size(value),
        Command::Delete { key, .. } => key.len(),
        // Names, a prefix and a hash: each bounded by `AuthChange::validate`.
        Command::Auth { .. } => 1024,
        Command::Config { peers } => peers.members().map(|p| 4 + p.as_str().len()).sum(),
        Command::Import { datums, .. } => datums
            .iter()
            .map(|d| 32 + d.key.len() + crate::datum::approx_json_size(&d.value))
            .sum(),
    }
}

impl RaftCore {
    pub(super) fn handle_append(
        &mut self,
        from: PeerAddr,
        prev: LogId,
        entries: Vec<Entry>,
        leader_commit: u64,
    ) -> Result<(), Rejected> {
        let committed = self.log.committed();
        if prev.index < committed {
            // Already committed here, so it matches (Log Matching); skip what we hold. Each
            // skipped entry must still agree with what this log holds: a leader that
            // contradicts a committed entry is lying or broken.
            for e in entries.iter().take_while(|e| e.index <= committed) {
                if let Some(t) = self.log.term_at(e.index).filter(|t| *t != e.term) {
                    return Err(Rejected::new(format!(
                        "entry {} of term {} contradicts the committed entry of term {t}",
                        e.index, e.term
                    )));
                }
            }
            let last_new = prev.index + entries.len() as u64;
            if last_new <= committed {
                self.send_after_persist(
                    from,
                    Message::AppendResp {
                        success: true,
                        index: committed,
                        hint: 0,
                    },
                );
                return Ok(());
            }
            let skip = (committed - prev.index) as usize;
            let rest = entries[skip..].to_vec();
            let Some(prev_term) = self.log.term_at(committed) else {
                return Err(Rejected::new(format!(
                    "the committed entry {committed} is not in the log (a bug)"
                )));
            };
            return self.handle_append(from, LogId::new(committed, prev_term), rest, leader_commit);
        }
        if !self.log.matches(prev) {
            // Log matching failed: point the leader at the last index whose term is not
            // above the one it tried, skipping a whole conflicting term at once.
            let found = self.log.term_at(prev.index);
            let mut hint = prev.index.min(self.log.last_index());
            if found.is_some() {
                hint = prev.index - 1;
            }
            while hint > committed && self.log.term_at(hint).is_some_and(|t| t > prev.term) {
                hint -= 1;
            }
            self.send_after_persist(
                from,
                Message::AppendResp {
                    success: false,
                    index: prev.index,
                    hint,
                },
            );
            return Ok(());
        }
        // Here `prev.index >= committed`, so every entry is past the commit index and a
        // conflicting suffix may go; `validate::check` made the batch contiguous after
        // `prev`, so each push continues the log.
        let last_new = prev.index + entries.len() as u64;
        let new_from = entries
            .iter()
            .position(|e| self.log.term_at(e.index) != Some(e.term))
            .unwrap_or(entries.len());
        self.check_configurations(&entries[new_from..])?;
        for (i, e) in entries.into_iter().enumerate().skip(new_from) {
            if i == new_from && self.log.term_at(e.index).is_some() {
                // A divergent, uncommitted suffix: drop it (Raft §5.3), and with it any
                // configuration it held.
                self.log.truncate_from(e.index);
                self.peers.truncate_from(e.index);
            }
            if let Command::Config { peers } = &e.command {
                self.peers.push(e.index, peers.clone());
            }
            self.log.push(e);
        }
        self.log.commit_to(leader_commit.min(last_new));
        self.send_after_persist(
            from,
            Message::AppendResp {
                success: true,
                index: last_new,
                hint: 0,
            },
        );
        Ok(())
    }

    /// Each configuration in `entries` (which follow the log after truncation) must differ
    /// from the one before it by at most one voter: a leader that sends otherwise is broken
    /// or forged, and following it could elect two leaders in one term.
    fn check_configurations(&self, entries: &[Entry]) -> Result<(), Rejected> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut prev = self.peers.at(first.index - 1);
        for e in entries {
            if let Command::Config { peers } = &e.command {
                prev.may_precede(peers).map_err(|why| {
                    Rejected::new(format!("configuration entry {}: {why}", e.index))
                })?;
                prev = peers;
            }
        }
        Ok(())
    }

    pub(super) fn mark_active(&mut self, from: &PeerAddr) {
        if let Some(pr) = self.progress.get_mut(from) {
            pr.since_contact_ms = 0;
        }
    }

    pub(super) fn handle_append_resp(
        &mut self,
        from: PeerAddr,
        success: bool,
        index: u64,
        hint: u64,
    ) -> Result<(), Rejected> {
        if self.role != Role::Leader {
            return Ok(());
        }
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        if index > pr.sent_up_to {
            // Counting an acknowledgement of entries never sent could commit what no
            // majority holds (a forged `append_resp` once made acknowledged writes vanish).
            return Err(Rejected::new(format!(
                "answers an append up to index {index}, but only entries up to {} were sent to it in term {}",
                pr.sent_up_to, self.term
            )));
        }
        pr.since_contact_ms = 0;
        if success {
            pr.on_ack(index);
            let more = pr.next_index <= last;
            self.maybe_commit();
            if more {
                self.send_append(&from);
            }
            self.maybe_send_timeout_now(&from);
        } else {
            if pr.is_stale_rejection(index) {
                return Ok(());
            }
            pr.on_reject(index, hint, last);
            self.send_append(&from);
        }
        Ok(())
    }

    pub(super) fn handle_heartbeat_resp(
        &mut self,
        from: PeerAddr,
        read_ctx: u64,
        follower_last: u64,
    ) -> Result<(), Rejected> {
        if self.role != Role::Leader {
            return Ok(());
        }
        if read_ctx > self.read_only.last_round() {
            // Confirming a read round never sent could let a stale read through.
            return Err(Rejected::new(format!(
                "confirms read round {read_ctx}, but only {} were sent",
                self.read_only.last_round()
            )));
        }
        self.mark_active(&from);
        let last = self.log.last_index();
        if let Some(pr) = self.progress.get_mut(&from) {
            let resend = match pr.state {
                ProgressState::Snapshot => false,
                // The follower's log is shorter than what it acknowledged: it lost it (a
                // replaced or wiped disk; Raft assumes logs survive, operators replace disks).
                // Heartbeats carry no log position, so without this an idle cluster would
                // leave it empty for good. Start over from what it holds: only appends it
                // acknowledges again move `match_index` back up, and a lower `match_index`
                // can only delay commits, never undo one.
                _ if follower_last < pr.match_index => {
                    pr.on_lost_log(follower_last);
                    true
                }
                ProgressState::Probe => pr.match_index < last && !pr.probe_sent,
                // Entries are outstanding and no acknowledgement moved the match index for
                // two heartbeats: an Append or its AppendResp was lost. The follower's log
                // length cannot tell which (a lost AppendResp leaves it complete), and in
                // Replicate nothing else resends, so probe again from the match index.
                ProgressState::Replicate => pr.maybe_stalled(last),
            };
            if resend {
                self.send_append(&from);
            }
        }
        let voters = &self.peers.latest().voters;
        for (ctx, from, index) in self.read_only.ack(&from, read_ctx, voters) {
            self.answer_read(ctx, from, Some(index));
        }
        Ok(())
    }

    pub(super) fn maybe_commit(&mut self) {
        // Only voters of the configuration in force count; the leader too, unless it is
        // removing itself (thesis §4.2.2).
        let mut matches: Vec<u64> = self
            .peers
            .latest()
            .voters
            .iter()
            .map(|v| match self.progress.get(v) {
                _ if *v == self.cfg.id => self.log.stable_index(),
                Some(pr) => pr.match_index,
                None => 0,
            })
            .collect();
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&candidate) = matches.get(self.quorum() - 1) else {
            return;
        };
        // Only entries of the current term are committed by counting (Raft §5.4.2, Figure 8).
        let committed = self.log.committed();
        if candidate > committed && self.log.term_at(candidate) == Some(self.term) {
            let first_commit_in_term = self.log.term_at(committed) != Some(self.term);
            self.log.commit_to(candidate);
            if first_commit_in_term {
                for (ctx, from) in self.read_only.take_waiting_commit() {
                    self.leader_read(ctx, from);
                }
            }
            self.after_leader_commit();
        }
    }

    pub(super) fn broadcast_append(&mut self) {
        let targets: Vec<PeerAddr> = self.progress.keys().cloned().collect();
        for p in targets {
            self.send_append(&p);
        }
    }

    /// Sends what `p` is missing, within its window.
    pub(super) fn send_append(&mut self, p: &PeerAddr) {
        let last = self.log.last_index();
        let max_entries = self.cfg.max_entries_per_append;
        let max_inflight = self.cfg.max_inflight_appends;
        loop {
            let Some(pr) = self.progress.get(p) else {
                return;
            };
            if pr.is_paused(max_inflight)
                || (pr.state == ProgressState::Replicate && pr.next_index > last)
            {
                return;
            }
            let next = pr.next_index;
            let prev = next - 1;
            let Some(prev_term) = self.log.term_at(prev) else {
                // The follower needs entries the log no longer holds (compacted): it
                // catches up from a snapshot of the datum set instead.
                if let Some(pr) = self.progress.get_mut(p) {
                    pr.become_snapshot();
                }
                self.ready.snapshots.push(p.clone());
                return;
            };
            let mut entries = self.log.entries_from(next, max_entries);
            if !entries.is_empty() {
                let mut bytes = 0;
                let keep = entries
                    .iter()
                    .take_while(|e| {
                        bytes += approx_json_size(e);
                        bytes <= self.cfg.max_append_bytes
                    })
                    .count();
                entries.truncate(keep.max(1));
            }
            let sent_to = prev + entries.len() as u64;
            let msg = Message::Append {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries,
                leader_commit: self.log.committed(),
            };
            self.send(p.clone(), self.term, msg);
            let Some(pr) = self.progress.get_mut(p) else {
                return;
            };
            pr.sent_append(sent_to);
            if pr.state == ProgressState::Probe {
                return;
            }
        }
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let round = self.read_only.start_round();
        let commit = self.log.committed();
        let targets: Vec<(PeerAddr, u64)> = self
            .progress
            .iter()
            .map(|(p, pr)| (p.clone(), pr.match_index.min(commit)))
            .collect();
        for (p, commit) in targets {
            self.send(
                p,
                self.term,
                Message::Heartbeat {
                    leader_commit: commit,
                    read_ctx: round,
                },
            );
        }
    }
}
