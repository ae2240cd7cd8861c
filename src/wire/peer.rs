//! The peer API's bodies: a batch of `raft::Envelope`s per `POST /v1/raft/messages`, and
//! a snapshot chunk's datums.
//!
//! Decoding owns the first line of defence against a broken or forged peer: each message
//! of a batch is decoded on its own, so one malformed message is dropped without the rest
//! (a whole batch, heartbeats included, was once refused for one entry), and entries must
//! keep the same rules as the client path (keys, value depth). The core then checks the
//! rest (`raft::validate`). Must not decide anything about Raft itself.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::datum::{validate_key, validate_value, Datum};
use crate::raft::{Command, Envelope, Message};

/// Encodes a batch of messages as the JSON array the peer endpoint takes.
pub fn encode_batch<'a>(envs: impl IntoIterator<Item = &'a Envelope>) -> Vec<u8> {
    let mut body = b"[".to_vec();
    for (i, env) in envs.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        encode_into(&mut body, env);
    }
    body.push(b']');
    body
}

/// Appends one message's encoding (for callers that size batches as they go).
pub fn encode_into(out: &mut Vec<u8>, env: &Envelope) {
    // Serialising plain data with string keys cannot fail.
    serde_json::to_writer(out, env).expect("peer messages serialise");
}

/// The messages of a batch, each decoded and checked on its own. `Err` only when the body
/// is not a JSON array at all.
pub fn decode_batch(body: &[u8]) -> Result<Vec<Result<Envelope, String>>, String> {
    let items: Vec<&RawValue> = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a JSON array of messages: {e}"))?;
    Ok(items.into_iter().map(decode_one).collect())
}

fn decode_one(raw: &RawValue) -> Result<Envelope, String> {
    let env: Envelope =
        serde_json::from_str(raw.get()).map_err(|e| format!("a message does not parse: {e}"))?;
    if let Message::Append { entries, .. } = &env.msg {
        for e in entries {
            check_command(&e.command).map_err(|why| format!("entry {}: {why}", e.index))?;
        }
    }
    Ok(env)
}

/// The client path's rules, for what a peer says a client wrote.
fn check_command(c: &Command) -> Result<(), String> {
    match c {
        Command::Noop => Ok(()),
        Command::Publish { key, value, .. } => validate_key(key)
            .and_then(|()| validate_value(value))
            .map_err(|e| e.to_string()),
        Command::Delete { key, .. } => validate_key(key).map_err(|e| e.to_string()),
        Command::Auth { change } => change.validate(),
        Command::Import { datums, .. } => crate::raft::check_import(datums),
        Command::Config { peers } => peers.validate(),
    }
}

/// Most client writes one `POST /v1/raft/forward` carries.
pub const MAX_FORWARD_BATCH: usize = 1024;

/// Most bytes of answers a forwarding member reads back for one batch.
pub const MAX_FORWARD_ANSWER_BYTES: u64 = 64 << 20;

/// One client write a follower forwards to the leader, as the client sent it: the leader
/// checks it as the client API does and answers it as it would have answered the client.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ForwardedWrite {
    pub method: String,
    #[serde(default)]
    pub query: Vec<(String, String)>,
    /// The request body (JSON text for a publish, empty for a delete).
    #[serde(default)]
    pub body: String,
    /// Always set: the client's, or one of the forwarding member's sessions, so a batch
    /// sent again after a lost connection is applied once.
    pub request_id: String,
    /// The client's access-control token, checked again by the leader, whose table holds
    /// every change it committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
}

/// The leader's answer to one forwarded write: the status and body it would have sent.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ForwardedAnswer {
    pub status: u16,
    pub body: String,
}

/// Encodes a snapshot chunk.
pub fn encode_chunk(datums: &[Datum]) -> Vec<u8> {
    serde_json::to_vec(datums).expect("datums serialise")
}

/// Decodes a snapshot chunk; every datum must keep the client path's rules.
pub fn decode_chunk(body: &[u8]) -> Result<Vec<Datum>, String> {
    let datums: Vec<Datum> =
        serde_json::from_slice(body).map_err(|e| format!("the chunk does not parse: {e}"))?;
    for d in &datums {
        validate_key(&d.key)
            .and_then(|()| validate_value(&d.value))
            .map_err(|e| format!("datum {:?}: {e}", d.key))?;
    }
    Ok(datums)
}

/// What a message looks like on the wire, for tests and tools.
pub fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datum::MAX_VALUE_DEPTH;
    use crate::raft::{Entry, PeerAddr};

    fn append(entries: Vec<Entry>) -> Envelope {
        Envelope {
            from: PeerAddr::new("a:1"),
            to: PeerAddr::new("b:1"),
            term: 3,
            msg: Message::Append {
                prev_log_index: 4,
                prev_log_term: 2,
                entries,
                leader_commit: 4,
            },
        }
    }

    fn publish(index: u64, key: &str, value: serde_json::Value) -> Entry {
        Entry {
            index,
            term: 3,
            command: Command::publish(key.into(), value),
        }
    }

    fn nested(depth: usize) -> serde_json::Value {
        serde_json::from_str(&format!("{}{}", "[".repeat(depth), "]".repeat(depth))).unwrap()
    }

    #[test]
    fn a_batch_round_trips_and_pins_the_field_names() {
        let batch = vec![
            append(vec![publish(5, "k", serde_json::json!({"v": 1}))]),
            Envelope {
                from: PeerAddr::new("b:1"),
                to: PeerAddr::new("a:1"),
                term: 3,
                msg: Message::AppendResp {
                    success: true,
                    index: 5,
                    hint: 0,
                },
            },
        ];
        let body = encode_batch(&batch);
        let text = String::from_utf8(body.clone()).unwrap();
        assert_eq!(
            text,
            r#"[{"from":"a:1","to":"b:1","term":3,"msg":{"type":"append","prev_log_index":4,"prev_log_term":2,"entries":[{"index":5,"term":3,"op":"publish","key":"k","value":{"v":1}}],"leader_commit":4}},{"from":"b:1","to":"a:1","term":3,"msg":{"type":"append_resp","success":true,"index":5,"hint":0}}]"#
        );
        let back: Vec<Envelope> = decode_batch(&body)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(back, batch);
    }

    /// Every value the client path accepts travels to a follower, at the deepest nesting.
    #[test]
    fn the_deepest_value_a_client_may_write_crosses_the_peer_path() {
        let body = encode_batch(&[append(vec![publish(5, "deep", nested(MAX_VALUE_DEPTH))])]);
        let decoded = decode_batch(&body).unwrap();
        assert!(decoded[0].is_ok(), "{:?}", decoded[0]);
    }

    /// One bad message costs only itself: the rest of the batch is delivered.
    #[test]
    fn a_malformed_message_is_dropped_alone() {
        let good = to_json(&append(vec![]));
        let body = format!(
            r#"[{good},{{"from":"a:1","to":"b:1","term":3,"msg":{{"type":"nonsense"}}}},{good}]"#
        );
        let decoded = decode_batch(body.as_bytes()).unwrap();
        assert_eq!(decoded.iter().filter(|d| d.is_ok()).count(), 2);
        assert!(decoded[1].is_err());
        let bad_key = encode_batch(&[append(vec![publish(5, "", serde_json::json!(1))])]);
        assert!(decode_batch(&bad_key).unwrap()[0].is_err());
        let too_deep = encode_batch(&[append(vec![publish(5, "k", nested(MAX_VALUE_DEPTH + 1))])]);
        assert!(decode_batch(&too_deep).unwrap()[0].is_err());
        assert!(decode_batch(b"{}").is_err());
        assert!(decode_batch(b"\xff").is_err());
    }

    #[test]
    fn snapshot_chunks_keep_the_client_rules() {
        let d = |key: &str| Datum {
            key: key.into(),
            value: serde_json::json!("v"),
            timestamp: 1,
            index: 9,
        };
        let body = encode_chunk(&[d("a"), d("b")]);
        assert_eq!(decode_chunk(&body).unwrap().len(), 2);
        assert!(decode_chunk(&encode_chunk(&[d("ok"), d("\u{0}")])).is_err());
    }
}
