//! The core's configuration and the rules it must satisfy (raft-rs `Config::validate`).

use super::message::PeerAddr;
use super::peer_set::PeerSet;

#[derive(Clone, Debug)]
pub struct Config {
    pub id: PeerAddr,
    /// The configuration in force after the entry at `peers_index` (the bootstrap list at
    /// 0, or what a checkpoint recorded); configuration entries in the log after that index
    /// replace it. Empty for a member started with `--join` that the cluster has not added
    /// yet. This member need not be in it: a removed member restarts without itself.
    pub peers: PeerSet,
    pub peers_index: u64,
    /// The leader promotes a learner added for it (`PeerSet::auto_promote`) once it has
    /// caught up.
    pub auto_promote: bool,
    pub heartbeat_interval_ms: u64,
    /// The election timer is drawn from `[election_timeout_ms, 2 * election_timeout_ms)`.
    pub election_timeout_ms: u64,
    /// Seeds the election-timer randomness, so simulations replay exactly.
    pub seed: u64,
    /// Most entries in one Append message.
    pub max_entries_per_append: usize,
    /// Most Append messages in flight to one follower before waiting for acknowledgements.
    pub max_inflight_appends: usize,
    /// Rough bound on the encoded size of one Append's entries (at least one entry is
    /// sent): keeps a message of large values under the peer endpoint's body limit.
    pub max_append_bytes: usize,
}

impl Config {
    /// A member of a cluster bootstrapped with `peers` as its voters.
    pub fn new(id: PeerAddr, peers: Vec<PeerAddr>) -> Config {
        Config {
            id,
            peers: PeerSet::of_voters(peers),
            peers_index: 0,
            auto_promote: true,
            heartbeat_interval_ms: 100,
            election_timeout_ms: 500,
            seed: 0,
            max_entries_per_append: 1024,
            max_inflight_appends: 64,
            max_append_bytes: 8 << 20,
        }
    }

    /// Checks the rules the core depends on; the message states the rule that was broken.
    pub fn validate(&self) -> Result<(), String> {
        if !self.peers.is_unknown() {
            self.peers.validate()?;
        }
        super::peer_set::check_name(self.id.as_str())
            .map_err(|e| format!("this member's own address: {e}"))?;
        if self.heartbeat_interval_ms == 0 {
            return Err("the heartbeat interval must be at least 1 ms".into());
        }
        if self.election_timeout_ms < 2 * self.heartbeat_interval_ms {
            return Err(format!(
                "the election timeout ({} ms) must be at least twice the heartbeat interval ({} ms), or followers start elections against a healthy leader",
                self.election_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        if self.max_entries_per_append == 0 || self.max_inflight_appends == 0 {
            return Err("max_entries_per_append and max_inflight_appends must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let a = PeerAddr::new("a:1");
        Config::new(a.clone(), vec![a, PeerAddr::new("b:1")])
    }

    #[test]
    fn each_broken_rule_is_named() {
        assert!(cfg().validate().is_ok());
        let mut c = cfg();
        c.id = PeerAddr::new("x y");
        assert!(c.validate().unwrap_err().contains("own address"));
        let mut c = cfg();
        c.peers.learners.insert(PeerAddr::new("b:1"));
        assert!(c
            .validate()
            .unwrap_err()
            .contains("both a voter and a learner"));
        // Joining (no configuration yet) and removed (not in it) members are valid.
        let mut c = cfg();
        c.peers = PeerSet::default();
        assert!(c.validate().is_ok());
        let mut c = cfg();
        c.id = PeerAddr::new("x:1");
        assert!(c.validate().is_ok());
        let mut c = cfg();
        c.heartbeat_interval_ms = 0;
        assert!(c.validate().unwrap_err().contains("heartbeat"));
        let mut c = cfg();
        c.election_timeout_ms = 150;
        assert!(c.validate().unwrap_err().contains("twice the heartbeat"));
        let mut c = cfg();
        c.max_inflight_appends = 0;
        assert!(c.validate().unwrap_err().contains("positive"));
    }
}
