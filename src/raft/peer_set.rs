//! The cluster's configuration (Nacos `RaftPeerSet`): which members vote and which only
//! learn, the one-voter-at-a-time rule that keeps changes safe (Raft thesis §4.1), and the
//! history of configurations in the retained log that a truncation can fall back to.
//!
//! Owns the rules a configuration and a change of it must keep; must not decide when a
//! change may be proposed (the core does, from what it knows of commits and followers).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::message::PeerAddr;

/// Most members (voters and learners) one configuration holds: far more than any cluster
/// needs, and a bound on what a forged configuration entry can make a member track.
pub const MAX_MEMBERS: usize = 64;

/// Longest member address accepted (`host:port`).
pub const MAX_ADDR: usize = 255;

/// The members of the cluster at one point of the log. Voters elect the leader and count
/// towards commits; learners receive the log and serve reads but count for nothing, so a
/// new member can catch up without weakening the quorum (etcd's learners, thesis §4.2.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSet {
    pub voters: BTreeSet<PeerAddr>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub learners: BTreeSet<PeerAddr>,
    /// Learners the leader promotes on its own once they have caught up (with
    /// `--auto-promote`); the others wait for `member promote`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub auto_promote: BTreeSet<PeerAddr>,
}

/// One change an operator asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerChange {
    /// A new member joins as a learner; with `promote`, the leader makes it a voter once it
    /// has caught up.
    AddLearner { peer: PeerAddr, promote: bool },
    /// A learner becomes a voter.
    Promote { peer: PeerAddr },
    /// A voter or learner leaves.
    Remove { peer: PeerAddr },
}

impl PeerChange {
    pub fn peer(&self) -> &PeerAddr {
        match self {
            PeerChange::AddLearner { peer, .. }
            | PeerChange::Promote { peer }
            | PeerChange::Remove { peer } => peer,
        }
    }
}

impl std::fmt::Display for PeerChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerChange::AddLearner { peer, .. } => write!(f, "add {peer} as a learner"),
            PeerChange::Promote { peer } => write!(f, "promote {peer}"),
            PeerChange::Remove { peer } => write!(f, "remove {peer}"),
        }
    }
}

impl PeerSet {
    /// A configuration of voters only (how a cluster is bootstrapped from `--peers`).
    pub fn of_voters(voters: impl IntoIterator<Item = PeerAddr>) -> PeerSet {
        PeerSet {
            voters: voters.into_iter().collect(),
            ..PeerSet::default()
        }
    }

    /// No configuration known: a member started with `--join` before the cluster added it.
    pub fn is_unknown(&self) -> bool {
        self.voters.is_empty()
    }

    pub fn is_voter(&self, p: &PeerAddr) -> bool {
        self.voters.contains(p)
    }

    pub fn is_learner(&self, p: &PeerAddr) -> bool {
        self.learners.contains(p)
    }

    pub fn contains(&self, p: &PeerAddr) -> bool {
        self.is_voter(p) || self.is_learner(p)
    }

    /// Voters, then learners.
    pub fn members(&self) -> impl Iterator<Item = &PeerAddr> {
        self.voters.iter().chain(self.learners.iter())
    }

    /// Votes needed to elect a leader or commit an entry.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The rules every configuration keeps, whoever sent it: at least one voter, no member
    /// both voter and learner, auto-promotion only for learners, names that fit in a list,
    /// bounded size. (Where an operator names a member, `check_addr` also wants host:port.)
    pub fn validate(&self) -> Result<(), String> {
        if self.voters.is_empty() {
            return Err("a configuration needs at least one voter".into());
        }
        if self.voters.len() + self.learners.len() > MAX_MEMBERS {
            return Err(format!(
                "a configuration holds at most {MAX_MEMBERS} members, not {}",
                self.voters.len() + self.learners.len()
            ));
        }
        if let Some(p) = self.voters.intersection(&self.learners).next() {
            return Err(format!("{p} is both a voter and a learner"));
        }
        if let Some(p) = self.auto_promote.difference(&self.learners).next() {
            return Err(format!("{p} is to be promoted but is not a learner"));
        }
        for p in self.members() {
            check_name(p.as_str())?;
        }
        Ok(())
    }

    /// The configuration after `change`, or why the change does not fit this one.
    pub fn apply(&self, change: &PeerChange) -> Result<PeerSet, String> {
        let mut next = self.clone();
        match change {
            PeerChange::AddLearner { peer, promote } => {
                check_name(peer.as_str())?;
                if self.is_voter(peer) {
                    return Err(format!("{peer} is already a voter"));
                }
                if self.is_learner(peer) {
                    return Err(format!("{peer} is already a learner"));
                }
                next.learners.insert(peer.clone());
                if *promote {
                    next.auto_promote.insert(peer.clone());
                }
            }
            PeerChange::Promote { peer } => {
                if self.is_voter(peer) {
                    return Err(format!("{peer} is already a voter"));
                }
                if !self.is_learner(peer) {
                    return Err(format!("{peer} is not a member; add it first (member add)"));
                }
                next.learners.remove(peer);
                next.auto_promote.remove(peer);
                next.voters.insert(peer.clone());
            }
            PeerChange::Remove { peer } => {
                if !self.contains(peer) {
                    return Err(format!("{peer} is not a member"));
                }
                if self.voters.len() == 1 && self.is_voter(peer) {
                    return Err(format!(
                        "{peer} is the last voter; a cluster cannot remove its last voter"
                    ));
                }
                next.voters.remove(peer);
                next.learners.remove(peer);
                next.auto_promote.remove(peer);
            }
        }
        next.validate()?;
        Ok(next)
    }

    /// Whether `next` may follow this configuration in the log: the voters differ by at
    /// most one member, so every majority of one overlaps every majority of the other and
    /// no two leaders can be elected in one term across the change (thesis §4.1). Learners
    /// count for no majority, so they may change freely. A member that knows no
    /// configuration yet (joining) takes the leader's word.
    pub fn may_precede(&self, next: &PeerSet) -> Result<(), String> {
        next.validate()?;
        if self.is_unknown() {
            return Ok(());
        }
        let changed = self.voters.symmetric_difference(&next.voters).count();
        if changed > 1 {
            return Err(format!(
                "the voters change by {changed} members at once (from {} to {}); one at a time keeps the majorities overlapping",
                list(&self.voters),
                list(&next.voters)
            ));
        }
        Ok(())
    }
}

/// A member's name as the core takes it: 1 to `MAX_ADDR` printable bytes without spaces,
/// commas or `/ ? # @`, since names go into URLs, files and comma-separated lists.
pub fn check_name(addr: &str) -> Result<(), String> {
    if addr.is_empty() || addr.len() > MAX_ADDR {
        return Err(format!(
            "{addr:?} is not a member address: it must be 1 to {MAX_ADDR} bytes"
        ));
    }
    if addr
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, ',' | '/' | '?' | '#' | '@'))
    {
        return Err(format!(
            "{addr:?} is not a member address: it holds a space, a control character or one of , / ? # @"
        ));
    }
    Ok(())
}

/// A member address as an operator gives it: a name (`check_name`) of the form `host:port`.
pub fn check_addr(addr: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "{addr:?} is not a member address (host:port): {why}"
        ))
    };
    check_name(addr)?;
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("no port");
    };
    if host.is_empty() {
        return bad("no host");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => bad("the port is not 1 to 65535"),
    }
}

fn list(set: &BTreeSet<PeerAddr>) -> String {
    let v: Vec<&str> = set.iter().map(|p| p.as_str()).collect();
    format!("[{}]", v.join(", "))
}

/// The configurations of one member's log: the one in force at `base_index` (from the
/// bootstrap, a checkpoint or a snapshot) and every configuration entry after it. The
/// latest one is in force as soon as it is in the log, committed or not (thesis §4.1), so
/// truncating a divergent suffix can bring an earlier one back.
#[derive(Clone, Debug)]
pub struct PeerSetLog {
    base_index: u64,
    base: PeerSet,
    later: Vec<(u64, PeerSet)>,
}

impl PeerSetLog {
    pub fn new(base_index: u64, base: PeerSet) -> PeerSetLog {
        PeerSetLog {
            base_index,
            base,
            later: Vec::new(),
        }
    }

    /// The configuration in force: the last one in the log.
    pub fn latest(&self) -> &PeerSet {
        self.later.last().map_or(&self.base, |(_, s)| s)
    }

    /// The index of the entry that holds the latest configuration (or the base index).
    pub fn latest_index(&self) -> u64 {
        self.later.last().map_or(self.base_index, |(i, _)| *i)
    }

    /// The configuration in force after the entry at `index`.
    pub fn at(&self, index: u64) -> &PeerSet {
        self.later
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.base, |(_, s)| s)
    }

    /// A configuration entry was appended at `index`, after every one held.
    pub fn push(&mut self, index: u64, set: PeerSet) {
        self.later.push((index, set));
    }

    /// Entries from `index` on were dropped from the log.
    pub fn truncate_from(&mut self, index: u64) {
        self.later.retain(|(i, _)| *i < index);
    }

    /// Entries up to `commit` are committed: they can never be truncated, so the last of
    /// them becomes the base and older ones are forgotten.
    pub fn commit_to(&mut self, commit: u64) {
        let n = self.later.iter().take_while(|(i, _)| *i <= commit).count();
        if n > 0 {
            let (i, s) = self.later.drain(..n).next_back().expect("n > 0");
            self.base_index = i;
            self.base = s;
        }
    }

    /// A snapshot at `index` holding `set` was installed; with `keep_after`, the log kept
    /// the entries after it, and so their configurations.
    pub fn install(&mut self, index: u64, set: PeerSet, keep_after: bool) {
        if keep_after {
            self.later.retain(|(i, _)| *i > index);
        } else {
            self.later.clear();
        }
        self.base_index = index;
        self.base = set;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PeerAddr {
        PeerAddr::new(s)
    }

    fn set(voters: &[&str], learners: &[&str]) -> PeerSet {
        PeerSet {
            voters: voters.iter().map(|s| p(s)).collect(),
            learners: learners.iter().map(|s| p(s)).collect(),
            auto_promote: BTreeSet::new(),
        }
    }

    #[test]
    fn changes_apply_one_member_at_a_time_and_name_what_does_not_fit() {
        let s = set(&["a:1", "b:1", "c:1"], &[]);
        let added = s
            .apply(&PeerChange::AddLearner {
                peer: p("d:1"),
                promote: true,
            })
            .unwrap();
        assert!(added.is_learner(&p("d:1")) && added.auto_promote.contains(&p("d:1")));
        assert_eq!(added.quorum(), 2, "a learner does not count");
        let promoted = added
            .apply(&PeerChange::Promote { peer: p("d:1") })
            .unwrap();
        assert!(promoted.is_voter(&p("d:1")) && promoted.auto_promote.is_empty());
        assert_eq!(promoted.quorum(), 3);
        let removed = promoted
            .apply(&PeerChange::Remove { peer: p("a:1") })
            .unwrap();
        assert_eq!(removed.voters.len(), 3);

        let refusal = |s: &PeerSet, c: PeerChange| s.apply(&c).unwrap_err();
        assert!(refusal(&s, PeerChange::Promote { peer: p("a:1") }).contains("already a voter"));
        assert!(refusal(&s, PeerChange::Promote { peer: p("x:1") }).contains("add it first"));
        assert!(refusal(&s, PeerChange::Remove { peer: p("x:1") }).contains("not a member"));
        assert!(refusal(
            &added,
            PeerChange::AddLearner {
                peer: p("d:1"),
                promote: false
            }
        )
        .contains("already a learner"));
        let one = set(&["a:1"], &[]);
        assert!(refusal(&one, PeerChange::Remove { peer: p("a:1") }).contains("last voter"));
        assert!(refusal(
            &s,
            PeerChange::AddLearner {
                peer: p("a space:1"),
                promote: false
            }
        )
        .contains("not a member address"));
    }

    #[test]
    fn only_single_voter_steps_may_follow_each_other() {
        let abc = set(&["a:1", "b:1", "c:1"], &[]);
        assert!(abc
            .may_precede(&set(&["a:1", "b:1", "c:1", "d:1"], &[]))
            .is_ok());
        assert!(abc.may_precede(&set(&["a:1", "b:1"], &["z:1"])).is_ok());
        assert!(abc
            .may_precede(&set(&["a:1", "b:1", "c:1"], &["x:1", "y:1"]))
            .is_ok());
        let e = abc
            .may_precede(&set(&["a:1", "d:1", "e:1"], &[]))
            .unwrap_err();
        assert!(e.contains("one at a time"), "{e}");
        assert!(abc.may_precede(&set(&[], &["a:1"])).is_err(), "no voter");
        assert!(abc.may_precede(&set(&["a:1"], &["a:1"])).is_err(), "both");
        // Joining: anything well-formed.
        assert!(PeerSet::default()
            .may_precede(&set(&["a:1", "b:1", "c:1"], &["d:1"]))
            .is_ok());
    }

    #[test]
    fn addresses_are_checked() {
        for ok in [
            "a:1",
            "127.0.0.1:8848",
            "[::1]:8848",
            "node-3.example:65535",
        ] {
            assert!(check_addr(ok).is_ok(), "{ok}");
        }
        let long = format!("{}:1", "a".repeat(300));
        for bad in [
            "", "a", ":1", "a:0", "a:99999", "a b:1", "a,b:1", "a/b:1", "a\n:1", &long,
        ] {
            assert!(check_addr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_log_of_configurations_falls_back_on_truncation_and_folds_on_commit() {
        let mut l = PeerSetLog::new(0, set(&["a:1"], &[]));
        l.push(5, set(&["a:1"], &["b:1"]));
        l.push(9, set(&["a:1", "b:1"], &[]));
        assert_eq!(l.latest_index(), 9);
        assert_eq!(l.at(7), &set(&["a:1"], &["b:1"]));
        assert_eq!(l.at(4), &set(&["a:1"], &[]));
        l.truncate_from(9);
        assert_eq!(l.latest(), &set(&["a:1"], &["b:1"]));
        l.commit_to(6);
        assert_eq!((l.latest_index(), l.at(0)), (5, &set(&["a:1"], &["b:1"])));
        l.push(12, set(&["a:1", "b:1"], &[]));
        l.install(10, set(&["a:1"], &["c:1"]), true);
        assert_eq!(l.latest_index(), 12);
        l.install(20, set(&["a:1"], &["c:1"]), false);
        assert_eq!(
            (l.latest_index(), l.latest()),
            (20, &set(&["a:1"], &["c:1"]))
        );
    }
}
