//! The Nacos 1.x shapes of the read endpoints `/nacos/v1/ns/raft/{state,leader,peer,listeners}`
//! (reference §3.2, §4), for runbooks written against Nacos: camelCase names, and the leader
//! as a JSON *string* inside the JSON answer.

use serde::{Deserialize, Serialize};

use super::Role;

/// Nacos 1.x `RaftPeer`, as the `/nacos/v1/ns/raft/...` endpoints show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RaftPeer {
    /// `host:port` of the member's HTTP port.
    pub ip: String,
    pub vote_for: Option<String>,
    pub term: u64,
    /// Milliseconds until this member's election timeout (a countdown, not a timestamp).
    pub leader_due_ms: u64,
    /// Milliseconds until its next heartbeat.
    pub heartbeat_due_ms: u64,
    /// `LEADER`, `FOLLOWER` or `CANDIDATE`.
    pub state: Role,
}

/// Answer to `GET /nacos/v1/ns/raft/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NacosState {
    /// The number of datums (Nacos counts services here).
    pub services: u64,
    pub peers: Vec<RaftPeer>,
}

/// Answer to `GET /nacos/v1/ns/raft/leader`: Nacos's odd shape, the leader's `RaftPeer` JSON
/// *as a string*, and the string `"null"` when there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NacosLeader {
    pub leader: String,
}

impl NacosLeader {
    pub fn of(leader: Option<&RaftPeer>) -> NacosLeader {
        NacosLeader {
            leader: match leader {
                Some(p) => serde_json::to_string(p).expect("a RaftPeer serialises"),
                None => "null".into(),
            },
        }
    }

    /// The leader the string holds; an error if it is neither a `RaftPeer` nor `"null"`.
    pub fn peer(&self) -> serde_json::Result<Option<RaftPeer>> {
        serde_json::from_str(&self.leader)
    }
}

/// Answer to `GET /nacos/v1/ns/raft/listeners`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NacosListeners {
    /// Keys listeners are registered on.
    pub listeners: Vec<String>,
}

/// One element of `GET /nacos/v1/ns/raft/datum?keys=...`: a Nacos `Datum` (reference §3.1),
/// or `null` for a key that does not exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NacosDatum {
    pub key: String,
    pub value: serde_json::Value,
    pub timestamp: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn peer() -> RaftPeer {
        RaftPeer {
            ip: "n1:8848".into(),
            vote_for: Some("n1:8848".into()),
            term: 3,
            leader_due_ms: 100,
            heartbeat_due_ms: 50,
            state: Role::Leader,
        }
    }

    const PEER: &str = r#"{"ip":"n1:8848","voteFor":"n1:8848","term":3,"leaderDueMs":100,"heartbeatDueMs":50,"state":"LEADER"}"#;

    #[test]
    fn raft_peer_keeps_the_nacos_camel_case_names() {
        assert_eq!(serde_json::to_string(&peer()).unwrap(), PEER);
        assert_eq!(serde_json::from_str::<RaftPeer>(PEER).unwrap(), peer());
        let mut p = peer();
        p.vote_for = None;
        p.state = Role::Follower;
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            (&v["voteFor"], &v["state"]),
            (&json!(null), &json!("FOLLOWER"))
        );
        // The shape is pinned: a snake_case spelling is not a RaftPeer.
        assert!(serde_json::from_value::<RaftPeer>(json!({
            "ip": "n1", "vote_for": null, "term": 1, "leaderDueMs": 0, "heartbeatDueMs": 0,
            "state": "LEADER"
        }))
        .is_err());
    }

    #[test]
    fn a_peer_in_an_unknown_state_still_parses() {
        let text = PEER.replace("\"LEADER\"", "\"OBSERVER\"");
        let p: RaftPeer = serde_json::from_str(&text).unwrap();
        assert_eq!(p.state, Role::Unknown("OBSERVER".into()));
    }

    #[test]
    fn state_and_listeners() {
        let state = NacosState {
            services: 2,
            peers: vec![peer()],
        };
        let text = format!(r#"{{"services":2,"peers":[{PEER}]}}"#);
        assert_eq!(serde_json::to_string(&state).unwrap(), text);
        assert_eq!(serde_json::from_str::<NacosState>(&text).unwrap(), state);
        let l = NacosListeners {
            listeners: vec!["k".into()],
        };
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"{"listeners":["k"]}"#);
    }

    #[test]
    fn the_leader_is_a_json_string_or_the_string_null() {
        let l = NacosLeader::of(Some(&peer()));
        assert_eq!(serde_json::to_value(&l).unwrap(), json!({ "leader": PEER }));
        assert_eq!(l.peer().unwrap(), Some(peer()));
        let none = NacosLeader::of(None);
        assert_eq!(
            serde_json::to_string(&none).unwrap(),
            r#"{"leader":"null"}"#
        );
        assert_eq!(none.peer().unwrap(), None);
        let garbage = NacosLeader {
            leader: r#"{"ip":"n1"}"#.into(),
        };
        assert!(garbage.peer().is_err());
    }
}
