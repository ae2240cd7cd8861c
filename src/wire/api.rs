//! Request and answer bodies of the client API (`/v1/...`, docs/http-api.md), and the lines
//! of a watch stream.
//!
//! The field names are the contract (DESIGN §4): `nacosctl -o json` prints these types as
//! they are, so a field is never renamed or reordered, and new ones come with a default so
//! that a client still reads an older node. Fields a node may not have filled in are
//! defaulted when parsing, never left out when sending.

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::Role;

/// Body of `POST /v1/datum`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub key: String,
    /// Any JSON value.
    pub value: Value,
    /// Compare-and-set: publish only if the key's timestamp is this (0: only if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_timestamp: Option<u64>,
}

/// Answer to `POST /v1/datum`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    pub key: String,
    /// Per-key version: 1 for a new key, previous + 1 on each update (Nacos `Datum.timestamp`).
    pub timestamp: u64,
    /// The leader's term when the write committed.
    pub term: u64,
    /// Log index of the write.
    pub index: u64,
}

/// Answer to `GET /v1/datum`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetResult {
    pub key: String,
    pub value: Value,
    pub timestamp: u64,
    #[serde(default)]
    pub index: u64,
}

/// Answer to `DELETE /v1/datum`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResult {
    pub key: String,
    #[serde(default)]
    pub term: u64,
    #[serde(default)]
    pub index: u64,
}

/// One row of `GET /v1/datums`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    pub key: String,
    pub timestamp: u64,
    #[serde(default)]
    pub index: u64,
}

/// Answer to `GET /v1/status`: one node's own view of the cluster.
///
/// Every field but `role` and `term` has a default, so a node that adds, renames or has not
/// yet filled in a field still yields a usable status (operators need `status` most when
/// versions are mixed); a role this build does not know is kept as [`Role::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub endpoint: String,
    pub role: Role,
    pub term: u64,
    #[serde(default)]
    pub leader: Option<String>,
    #[serde(default)]
    pub vote_for: Option<String>,
    #[serde(default)]
    pub commit_index: u64,
    #[serde(default)]
    pub applied_index: u64,
    #[serde(default)]
    pub last_log_index: u64,
    #[serde(default)]
    pub datums: u64,
    /// Every member of the configuration in force here, voters and learners.
    #[serde(default)]
    pub peers: Vec<String>,
    /// The learners among `peers`.
    #[serde(default)]
    pub learners: Vec<String>,
    /// Whether this member votes (false for a learner, a member not added yet, or one
    /// removed).
    #[serde(default = "yes")]
    pub voter: bool,
    /// The leader's view of its followers; empty on a follower.
    #[serde(default)]
    pub followers: Vec<FollowerStatus>,
}

fn yes() -> bool {
    true
}

/// The leader's view of one follower, inside [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerStatus {
    pub peer: String,
    #[serde(default)]
    pub match_index: u64,
    #[serde(default)]
    pub next_index: u64,
    /// Milliseconds since the leader last heard from it.
    #[serde(default)]
    pub last_contact_ms: Option<u64>,
    #[serde(default = "yes")]
    pub voter: bool,
}

/// Answer to `GET /v1/leader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// `None` when the node that answered knows of no leader.
    pub leader: Option<String>,
    #[serde(default)]
    pub term: u64,
}

/// Answer to `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub ok: bool,
}

/// Answer to `GET /v1/digest`: an order-independent hash of a member's whole datum set right
/// after it applied `index` (for `nacosctl check`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    #[serde(default)]
    pub endpoint: String,
    pub index: u64,
    /// 16 hex digits.
    pub digest: String,
    #[serde(default)]
    pub applied_index: u64,
    #[serde(default)]
    pub datums: u64,
}

/// Answer to `POST /v1/transfer-leader`: the hand-over has started, not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub from: String,
    pub to: String,
}

/// What a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WatchEventKind {
    Change,
    Delete,
}

/// One event of `GET /v1/watch`, with exactly the fields of the contract (DESIGN §4), in
/// their order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub event: WatchEventKind,
    pub key: String,
    /// The new value; `null` for a DELETE.
    #[serde(default)]
    pub value: Value,
    /// The key's version (for a DELETE, the version that was deleted).
    pub timestamp: u64,
    /// Log index of the change: events of one stream arrive in increasing index order.
    pub index: u64,
}

/// One line of a watch stream: an event, or `{"event": "PROGRESS", "index": N}`.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchLine {
    Event(WatchEvent),
    /// A keep-alive sent when nothing changed for a second; `index` is the node's applied
    /// index. Not an event, and (as the node sends it) not a safe resume point: events at or
    /// below it may still be on their way.
    Progress {
        index: u64,
    },
}

impl WatchLine {
    /// Parses one line (without caring about the newline); the error says what is wrong
    /// with it, for a [`crate::client::ClientError::BadResponse`].
    pub fn parse(line: &[u8]) -> Result<WatchLine, String> {
        let v: Value =
            serde_json::from_slice(line).map_err(|e| format!("a watch line is not JSON ({e})"))?;
        if v.get("event").and_then(Value::as_str) == Some("PROGRESS") {
            let index = v
                .get("index")
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("a PROGRESS line without a numeric index: {v}"))?;
            return Ok(WatchLine::Progress { index });
        }
        serde_json::from_value(v.clone())
            .map(WatchLine::Event)
            .map_err(|e| format!("not a watch event ({e}): {v}"))
    }
}

impl Serialize for WatchLine {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WatchLine::Event(e) => e.serialize(s),
            WatchLine::Progress { index } => {
                let mut st = s.serialize_struct("WatchLine", 2)?;
                st.serialize_field("event", "PROGRESS")?;
                st.serialize_field("index", index)?;
                st.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::json;
    use std::fmt::Debug;

    /// `value` is written as exactly `text` (field names and their order: `nacosctl -o json`
    /// prints these types as they are) and parses back.
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: T, text: &str) {
        assert_eq!(serde_json::to_string(&value).unwrap(), text);
        assert_eq!(serde_json::from_str::<T>(text).unwrap(), value);
    }

    #[test]
    fn publish_request() {
        round_trip(
            PublishRequest {
                key: "greeting".into(),
                value: json!({"a": [1]}),
                if_timestamp: None,
            },
            r#"{"key":"greeting","value":{"a":[1]}}"#,
        );
        round_trip(
            PublishRequest {
                key: "k".into(),
                value: json!(1),
                if_timestamp: Some(0),
            },
            r#"{"key":"k","value":1,"if_timestamp":0}"#,
        );
        // A misspelt field is refused, not ignored (it would publish a different value).
        assert!(serde_json::from_value::<PublishRequest>(
            json!({"key": "k", "value": 1, "extra": 2})
        )
        .is_err());
        assert!(serde_json::from_value::<PublishRequest>(json!({"key": "k"})).is_err());
    }

    #[test]
    fn datum_answers() {
        // DESIGN §4: `put` is {"key", "timestamp", "term", "index"}, `get` {"key", "value",
        // "timestamp"}, `ls` [{"key", "timestamp"}]; `index` is an addition.
        round_trip(
            PutResult {
                key: "greeting".into(),
                timestamp: 3,
                term: 2,
                index: 17,
            },
            r#"{"key":"greeting","timestamp":3,"term":2,"index":17}"#,
        );
        round_trip(
            GetResult {
                key: "greeting".into(),
                value: json!("hello"),
                timestamp: 3,
                index: 17,
            },
            r#"{"key":"greeting","value":"hello","timestamp":3,"index":17}"#,
        );
        round_trip(
            DeleteResult {
                key: "greeting".into(),
                term: 2,
                index: 18,
            },
            r#"{"key":"greeting","term":2,"index":18}"#,
        );
        round_trip(
            vec![ListEntry {
                key: "greeting".into(),
                timestamp: 3,
                index: 17,
            }],
            r#"[{"key":"greeting","timestamp":3,"index":17}]"#,
        );
    }

    #[test]
    fn status_and_its_followers() {
        round_trip(
            Status {
                endpoint: "127.0.0.1:8848".into(),
                role: Role::Leader,
                term: 2,
                leader: Some("127.0.0.1:8848".into()),
                vote_for: None,
                commit_index: 18,
                applied_index: 18,
                last_log_index: 18,
                datums: 1,
                peers: vec!["127.0.0.1:8848".into(), "127.0.0.1:8849".into()],
                learners: vec!["127.0.0.1:8849".into()],
                voter: true,
                followers: vec![FollowerStatus {
                    peer: "127.0.0.1:8849".into(),
                    match_index: 18,
                    next_index: 19,
                    last_contact_ms: Some(12),
                    voter: false,
                }],
            },
            concat!(
                r#"{"endpoint":"127.0.0.1:8848","role":"LEADER","term":2,"#,
                r#""leader":"127.0.0.1:8848","vote_for":null,"commit_index":18,"#,
                r#""applied_index":18,"last_log_index":18,"datums":1,"#,
                r#""peers":["127.0.0.1:8848","127.0.0.1:8849"],"#,
                r#""learners":["127.0.0.1:8849"],"voter":true,"#,
                r#""followers":[{"peer":"127.0.0.1:8849","match_index":18,"#,
                r#""next_index":19,"last_contact_ms":12,"voter":false}]}"#,
            ),
        );
    }

    #[test]
    fn a_status_from_a_newer_or_older_node_still_parses() {
        // Only `role` and `term` are required; unknown fields and roles are tolerated.
        let s: Status =
            serde_json::from_value(json!({"role": "LEARNER", "term": 4, "raft_applied_bytes": 1}))
                .unwrap();
        assert_eq!(s.role, Role::Unknown("LEARNER".into()));
        assert_eq!((s.term, s.leader, s.followers), (4, None, vec![]));
        assert!(serde_json::from_value::<Status>(json!({"term": 4})).is_err());
    }

    #[test]
    fn small_answers() {
        round_trip(
            LeaderInfo {
                leader: Some("127.0.0.1:8848".into()),
                term: 2,
            },
            r#"{"leader":"127.0.0.1:8848","term":2}"#,
        );
        round_trip(
            LeaderInfo {
                leader: None,
                term: 2,
            },
            r#"{"leader":null,"term":2}"#,
        );
        round_trip(Health { ok: true }, r#"{"ok":true}"#);
        round_trip(
            Digest {
                endpoint: "127.0.0.1:8848".into(),
                index: 17,
                digest: "8149f5acd8c9be35".into(),
                applied_index: 18,
                datums: 2,
            },
            r#"{"endpoint":"127.0.0.1:8848","index":17,"digest":"8149f5acd8c9be35","applied_index":18,"datums":2}"#,
        );
        round_trip(
            Transfer {
                from: "a:1".into(),
                to: "b:2".into(),
            },
            r#"{"from":"a:1","to":"b:2"}"#,
        );
    }

    #[test]
    fn watch_lines() {
        // DESIGN §4: {"event", "key", "value", "timestamp", "index"}.
        let change = WatchEvent {
            event: WatchEventKind::Change,
            key: "svc.a".into(),
            value: json!(1),
            timestamp: 1,
            index: 2,
        };
        let delete = WatchEvent {
            event: WatchEventKind::Delete,
            key: "svc.a".into(),
            value: Value::Null,
            timestamp: 1,
            index: 4,
        };
        for (line, text) in [
            (
                WatchLine::Event(change),
                r#"{"event":"CHANGE","key":"svc.a","value":1,"timestamp":1,"index":2}"#,
            ),
            (
                WatchLine::Event(delete),
                r#"{"event":"DELETE","key":"svc.a","value":null,"timestamp":1,"index":4}"#,
            ),
            (
                WatchLine::Progress { index: 5 },
                r#"{"event":"PROGRESS","index":5}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&line).unwrap(), text);
            assert_eq!(WatchLine::parse(text.as_bytes()).unwrap(), line);
        }
    }

    #[test]
    fn bad_watch_lines_say_what_is_wrong() {
        for (line, says) in [
            ("not json", "not JSON"),
            (r#"{"event":"PROGRESS"}"#, "without a numeric index"),
            (r#"{"event":"RENAME","key":"k"}"#, "not a watch event"),
        ] {
            let e = WatchLine::parse(line.as_bytes()).unwrap_err();
            assert!(e.contains(says), "{line}: {e}");
        }
    }
}

/// Body of `POST /v1/import`: datums moved in with their own Nacos timestamps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportRequest {
    pub datums: Vec<crate::raft::ImportedDatum>,
}

/// Answer to `POST /v1/import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportResult {
    /// Datums set.
    pub imported: u64,
    /// Positions (in the request) of the datums left alone: their key held the same or a
    /// newer timestamp.
    pub skipped: Vec<u32>,
    pub term: u64,
    pub index: u64,
}

/// Answer to `GET /v1/members`: the configuration as the answering member holds it. Only
/// the leader knows how far each member's log matches (`from_leader`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// The member that answered.
    pub from: String,
    pub from_leader: bool,
    #[serde(default)]
    pub leader: Option<String>,
    pub term: u64,
    /// The index of the log entry that holds this configuration (0: the bootstrap one).
    pub config_index: u64,
    /// Whether that entry is committed; false while a change is under way.
    pub committed: bool,
    /// The leader's last log index (0 from a follower).
    #[serde(default)]
    pub last_index: u64,
    pub members: Vec<MemberInfo>,
}

/// One member in [`Members`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub addr: String,
    /// A voter; otherwise a learner (it receives the log, counts for no majority).
    pub voter: bool,
    /// `leader`; `ok` (in step with the leader); `catching-up` (behind, or being probed);
    /// `snapshot` (receiving one); `unreachable` (not heard from for an election timeout);
    /// `removing` (left the configuration, the change is not committed yet); `unknown` (the
    /// answer did not come from the leader).
    pub status: String,
    /// The last log index known to match the leader's (the leader's own last index for it).
    #[serde(default)]
    pub match_index: Option<u64>,
    /// Entries behind the leader's last one.
    #[serde(default)]
    pub lag: Option<u64>,
    #[serde(default)]
    pub last_contact_ms: Option<u64>,
    /// A learner the leader promotes once it has caught up.
    #[serde(default)]
    pub auto_promote: bool,
}

/// Body of `POST /v1/members` (add) and `POST /v1/members/promote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRequest {
    pub addr: String,
    /// Add as a learner that stays one until `member promote` (default: promoted by the
    /// leader once caught up, when it runs with `--auto-promote`).
    #[serde(default)]
    pub learner: bool,
}

/// Answer to a configuration change: the configuration after it, and where it was
/// committed. `changed: false` when it was in force already (nothing appended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChange {
    pub changed: bool,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    pub term: u64,
    pub index: u64,
    /// Something the operator should know (a member added that did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}
