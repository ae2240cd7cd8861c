//! A member's role as the API shows it (`/v1/status` `role`, Nacos `RaftPeer.state`): the
//! Nacos names on the wire, one enum on both sides.
//!
//! It is not the core's `raft::Role`: a client must read the role of a newer node it does not
//! know (a learner, say) without failing, so this one keeps an unknown name as sent, and
//! `nacosctl status` shows it as the node said it. The core never sees a role it does not
//! know, so it stays a plain `Copy` enum.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `LEADER`, `FOLLOWER` or `CANDIDATE` on the wire (Nacos `RaftPeer.State`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    /// A name this build does not know, exactly as the node sent it. Never sent by this
    /// build's nodes.
    Unknown(String),
}

impl Role {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Role::Leader => "LEADER",
            Role::Follower => "FOLLOWER",
            Role::Candidate => "CANDIDATE",
            Role::Unknown(name) => name,
        }
    }
}

impl From<&str> for Role {
    /// Exact wire names only (Nacos sends them in capitals); anything else is `Unknown`.
    fn from(name: &str) -> Role {
        match name {
            "LEADER" => Role::Leader,
            "FOLLOWER" => Role::Follower,
            "CANDIDATE" => Role::Candidate,
            other => Role::Unknown(other.to_string()),
        }
    }
}

impl From<crate::raft::Role> for Role {
    fn from(r: crate::raft::Role) -> Role {
        match r {
            crate::raft::Role::Leader => Role::Leader,
            crate::raft::Role::Follower => Role::Follower,
            crate::raft::Role::Candidate => Role::Candidate,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Role {
    /// Any string is a role (an unknown one is kept as sent); anything else is an error.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        String::deserialize(d).map(|name| Role::from(name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_have_the_nacos_names_and_round_trip() {
        for (role, name) in [
            (Role::Leader, "LEADER"),
            (Role::Follower, "FOLLOWER"),
            (Role::Candidate, "CANDIDATE"),
        ] {
            assert_eq!(serde_json::to_value(&role).unwrap(), json!(name));
            assert_eq!(serde_json::from_value::<Role>(json!(name)).unwrap(), role);
            assert_eq!(role.to_string(), name);
        }
    }

    #[test]
    fn every_core_role_maps_to_its_own_wire_name() {
        use crate::raft::Role as Core;
        for core in [Core::Leader, Core::Follower, Core::Candidate] {
            let wire = Role::from(core);
            assert_eq!(wire.as_str(), core.as_str());
            assert!(!matches!(wire, Role::Unknown(_)), "{wire:?}");
        }
    }

    #[test]
    fn an_unknown_role_is_kept_as_sent_and_sent_back_unchanged() {
        let r: Role = serde_json::from_value(json!("LEARNER")).unwrap();
        assert_eq!(r, Role::Unknown("LEARNER".into()));
        assert_eq!(r.to_string(), "LEARNER");
        assert_eq!(serde_json::to_value(&r).unwrap(), json!("LEARNER"));
        // The names are exact: Nacos sends capitals.
        assert_eq!(Role::from("leader"), Role::Unknown("leader".into()));
    }

    #[test]
    fn a_role_that_is_not_a_string_is_an_error() {
        assert!(serde_json::from_value::<Role>(json!(1)).is_err());
        assert!(serde_json::from_value::<Role>(json!(null)).is_err());
    }
}
