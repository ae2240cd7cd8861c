//! Log entries and the messages members exchange; the wire format of the peer API.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::log::LogId;
use super::peer_set::PeerSet;

/// A member's identity: the `host:port` of its HTTP listener, as Nacos `RaftPeer.ip`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerAddr(pub String);

impl PeerAddr {
    pub fn new(s: impl Into<String>) -> PeerAddr {
        PeerAddr(s.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a log entry asks the datum set to do (Nacos `signalPublish` / `signalDelete`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Appended by every new leader so it can commit (and serve reads) in its term (Raft §5.4.2).
    Noop,
    Publish {
        key: String,
        value: serde_json::Value,
        /// Compare-and-set: applied only if the key's timestamp is this now (0: absent).
        /// Judged when the entry is applied, in log order, so two racing writers never
        /// both win.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_timestamp: Option<u64>,
        /// The client's request, so that a retry is applied once (Raft thesis §6.3).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<RequestId>,
        /// The access-control user it was sent by (`None`: access control was off). The
        /// permission is judged again when the entry is applied, in log order, so no write
        /// applies after a revocation or `auth enable` that precedes it in the log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    Delete {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_timestamp: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// A change to access control (users, roles, on/off), applied to the auth table in log
    /// order like any write, so every member holds the same table at the same index.
    Auth { change: crate::auth::AuthChange },
    /// Datums moved in from elsewhere (a Nacos 1.x data dir) with their own Nacos
    /// timestamps: each is set only if the key's timestamp is lower now (0: absent), so a
    /// re-run changes nothing and no client that compares versions sees one go back.
    /// Judged at apply time, in log order, like a compare-and-set.
    Import {
        datums: Vec<ImportedDatum>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// A new configuration (Nacos `RaftPeerSet`): in force on each member as soon as it is
    /// in that member's log, committed or not (Raft thesis §4.1), and different from the
    /// one before it by at most one voter.
    Config { peers: PeerSet },
}

/// One datum of an [`Command::Import`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportedDatum {
    pub key: String,
    pub value: serde_json::Value,
    /// The Nacos timestamp it keeps (at least 1).
    pub timestamp: u64,
}

/// Most datums one import entry carries.
pub const MAX_IMPORT_DATUMS: usize = 10_000;

/// The rules every import obeys, on the client path and for what a peer says a client
/// imported: 1 to [`MAX_IMPORT_DATUMS`] datums, valid keys and values, timestamps from 1,
/// each key once (two versions of one key in one entry would make the outcome depend on
/// their order).
pub fn check_import(datums: &[ImportedDatum]) -> Result<(), String> {
    if datums.is_empty() || datums.len() > MAX_IMPORT_DATUMS {
        return Err(format!(
            "an import carries 1 to {MAX_IMPORT_DATUMS} datums, not {}",
            datums.len()
        ));
    }
    let mut keys = std::collections::HashSet::with_capacity(datums.len());
    for d in datums {
        crate::datum::validate_key(&d.key)
            .and_then(|()| crate::datum::validate_value(&d.value))
            .map_err(|e| format!("{:?}: {e}", d.key))?;
        if d.timestamp == 0 {
            return Err(format!(
                "{:?}: timestamp 0; Nacos timestamps start at 1",
                d.key
            ));
        }
        if !keys.insert(d.key.as_str()) {
            return Err(format!("{:?} appears twice in one import", d.key));
        }
    }
    Ok(())
}

/// A client's request: its id and the request's sequence number, `<client>:<seq>` on the
/// wire (`X-Request-Id`). A client sends one request at a time per id, with growing seqs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId {
    pub client: String,
    pub seq: u64,
}

/// Longest client id accepted.
pub const MAX_CLIENT_ID: usize = 64;

impl RequestId {
    /// Parses `<client>:<seq>`: a client id of 1 to 64 letters, digits, `.`, `_` or `-`,
    /// and a decimal seq.
    pub fn parse(text: &str) -> Result<RequestId, String> {
        let bad = || {
            format!(
                "the request id {text:?} is not <client>:<seq> (a client id of 1 to {MAX_CLIENT_ID} letters, digits, '.', '_' or '-', and a number)"
            )
        };
        let (client, seq) = text.rsplit_once(':').ok_or_else(bad)?;
        let ok_client = !client.is_empty()
            && client.len() <= MAX_CLIENT_ID
            && client
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        if !ok_client {
            return Err(bad());
        }
        Ok(RequestId {
            client: client.to_string(),
            seq,
        })
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.client, self.seq)
    }
}

impl Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RequestId, D::Error> {
        let text = String::deserialize(d)?;
        RequestId::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Command {
    /// An unconditional publish.
    pub fn publish(key: String, value: serde_json::Value) -> Command {
        Command::Publish {
            key,
            value,
            if_timestamp: None,
            request: None,
            user: None,
        }
    }

    /// An unconditional delete.
    pub fn delete(key: String) -> Command {
        Command::Delete {
            key,
            if_timestamp: None,
            request: None,
            user: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    #[serde(flatten)]
    pub command: Command,
}

impl Entry {
    pub fn id(&self) -> LogId {
        LogId::new(self.index, self.term)
    }
}

/// Term and vote: what must be durable before a vote or an append is answered (Raft §5.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote_for: Option<PeerAddr>,
}

/// One message between members. `term` is the sender's term, except for pre-votes, where it
/// is the term the sender would campaign in (Raft thesis §9.6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: PeerAddr,
    pub to: PeerAddr,
    pub term: u64,
    pub msg: Message,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    PreVote {
        last_log_index: u64,
        last_log_term: u64,
    },
    PreVoteResp {
        granted: bool,
    },
    Vote {
        last_log_index: u64,
        last_log_term: u64,
        /// Sent after TimeoutNow: the voter must not ignore it for leader stickiness.
        #[serde(default)]
        transfer: bool,
    },
    VoteResp {
        granted: bool,
    },
    Append {
        prev_log_index: u64,
        prev_log_term: u64,
        entries: Vec<Entry>,
        leader_commit: u64,
    },
    AppendResp {
        success: bool,
        /// On success: the index of the last entry now known to match the leader's log.
        /// On rejection: the `prev_log_index` that failed.
        index: u64,
        /// On rejection: where the leader should try next (the follower's best guess of the
        /// last index that can match).
        hint: u64,
    },
    /// Keeps followers in line, carries the commit index, and confirms leadership for reads.
    Heartbeat {
        leader_commit: u64,
        read_ctx: u64,
    },
    HeartbeatResp {
        read_ctx: u64,
        last_index: u64,
    },
    /// A follower asks the leader for a read index on behalf of its client.
    ReadIndex {
        ctx: u64,
    },
    /// `index: None` when the receiver could not serve it (no longer leader).
    ReadIndexResp {
        ctx: u64,
        index: Option<u64>,
    },
    /// Leadership transfer: campaign now, ignoring the election timer (Raft thesis §3.10).
    TimeoutNow,
}

impl Message {
    /// Messages that promise nothing about the sender's durable state, so they may leave
    /// before its disk catches up (a leader ships entries while it fsyncs them itself, Raft
    /// thesis §10.2.1). Votes and append acknowledgements must wait for the fsync.
    pub fn sendable_before_persist(&self) -> bool {
        matches!(
            self,
            Message::PreVote { .. }
                | Message::PreVoteResp { .. }
                | Message::HeartbeatResp { .. }
                | Message::Append { .. }
                | Message::Heartbeat { .. }
                | Message::ReadIndex { .. }
                | Message::ReadIndexResp { .. }
                | Message::TimeoutNow
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_parse_strictly_and_round_trip() {
        let r = RequestId::parse("nacosctl-3f2a:17").unwrap();
        assert_eq!((r.client.as_str(), r.seq), ("nacosctl-3f2a", 17));
        assert_eq!(r.to_string(), "nacosctl-3f2a:17");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#""nacosctl-3f2a:17""#);
        assert_eq!(serde_json::from_str::<RequestId>(&json).unwrap(), r);
        for bad in [
            "",
            "c",
            ":1",
            "c:",
            "c:x",
            "c d:1",
            &format!("{}:1", "c".repeat(65)),
        ] {
            assert!(RequestId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_entry_without_a_request_reads_as_before() {
        let old = r#"{"index":3,"term":1,"op":"publish","key":"k","value":1}"#;
        let e: Entry = serde_json::from_str(old).unwrap();
        assert_eq!(
            e.command,
            Command::publish("k".into(), serde_json::json!(1))
        );
        assert_eq!(serde_json::to_string(&e).unwrap(), old);
    }
}
