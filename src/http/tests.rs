//! Tests of the HTTP layer that need no socket: the routes are called with a `Request`
//! value on a standalone `Node` in a temp dir, and answer with the `wire` shapes.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tempfile::TempDir;

use super::*;
use crate::node::NodeConfig;
use crate::raft::Envelope;

#[test]
fn a_panicking_handler_is_a_500_and_the_next_request_is_served() {
    let r = guarded(|| panic!("a bug in one handler"));
    assert_eq!(r.status, 500);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"], "internal");
    // The thread that caught it goes on serving.
    let ok = guarded(|| Response::json(200, &Health { ok: true }));
    assert_eq!(ok.status, 200);
}

#[test]
fn only_client_requests_are_drained() {
    for p in [
        "/v1/datum",
        "/v1/datums",
        "/v1/watch",
        "/v1/transfer-leader",
    ] {
        assert!(is_client_request(p), "{p}");
    }
    for p in [
        "/v1/raft/messages",
        "/v1/raft/snapshot",
        "/v1/raft/forward",
        "/v1/status",
        "/v1/health",
    ] {
        assert!(!is_client_request(p), "{p}");
    }
}

// ------------------------------------------------------------- routes on a standalone node

/// The address the node under test calls itself; nothing listens there (no socket is used).
const ADDR: &str = "node-under-test:8848";

/// A standalone node in a temp dir, leading itself. Dropping it shuts it down.
struct Standalone {
    node: Node,
    /// Removed after the node (fields drop in order).
    _dir: TempDir,
}

impl Standalone {
    fn start() -> Standalone {
        Standalone::with(|_| {})
    }

    fn with(configure: impl FnOnce(&mut NodeConfig)) -> Standalone {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut cfg = NodeConfig::standalone(ADDR, dir.path().join("data"));
        // A quick self-election; the heartbeat must be at most half the election timeout.
        cfg.heartbeat_interval_ms = 10;
        cfg.election_timeout_ms = 50;
        configure(&mut cfg);
        let node = Node::start(cfg).expect("a standalone node starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        let leader = node.wait_for_leader(deadline);
        assert_eq!(
            leader.as_ref().map(PeerAddr::as_str),
            Some(ADDR),
            "a standalone node leads itself"
        );
        // Its first entry (the leader's no-op) applied: from here on every entry is applied
        // before the route that made it answers, so nothing is in flight when a test ends.
        assert!(
            node.datums().wait_applied(1, deadline),
            "the leader's no-op was not applied"
        );
        Standalone { node, _dir: dir }
    }

    /// Calls a route as a member would: with the cluster secret, if the node has one.
    fn call(&self, method: &str, path: &str, query: &[(&str, &str)], body: &[u8]) -> Response {
        let mut req = request(method, path, query, body);
        req.token = self.node.config().cluster_token.clone();
        route(&self.node, &req)
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Response {
        self.call("GET", path, query, b"")
    }

    fn publish(&self, body: Value) -> Response {
        self.call("POST", "/v1/datum", &[], body.to_string().as_bytes())
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        // A clean stop joins every thread that writes the data dir, so the temp dir can go.
        self.node.shutdown();
    }
}

fn request(method: &str, path: &str, query: &[(&str, &str)], body: &[u8]) -> Request {
    Request {
        method: method.into(),
        path: path.into(),
        query: query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
        ..Request::default()
    }
}

fn json_of(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "the body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&r.body)
        )
    })
}

/// A 200 whose body is a `T` with exactly `T`'s fields: none missing, none extra (the field
/// names themselves are pinned by the tests in `wire`).
fn ok<T: DeserializeOwned + Serialize>(r: &Response) -> T {
    let v = json_of(r);
    assert_eq!(r.status, 200, "{v}");
    let t: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("not the documented shape ({e}): {v}"));
    assert_eq!(serde_json::to_value(&t).unwrap(), v, "extra fields");
    t
}

/// An error answer with `status`, the error body's fields only, and `code`.
fn refused(r: &Response, status: u16, code: ErrorCode) -> ErrorBody {
    let v = json_of(r);
    assert_eq!(r.status, status, "{v}");
    let b: ErrorBody = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(serde_json::to_value(&b).unwrap(), v, "extra fields");
    assert_eq!(b.error, code, "{v}");
    assert!(!b.message.is_empty(), "{v}");
    b
}

#[test]
fn publish_get_list_and_delete_answer_the_documented_shapes() {
    let n = Standalone::start();
    let first: PutResult = ok(&n.publish(json!({"key": "greeting", "value": "hello"})));
    assert_eq!((first.key.as_str(), first.timestamp), ("greeting", 1));
    assert!(first.term >= 1 && first.index >= 1, "{first:?}");
    let second = n.publish(json!({"key": "greeting", "value": {"a": [1]}}));
    assert_eq!(
        json_of(&second),
        json!({"key": "greeting", "timestamp": 2, "term": first.term,
               "index": first.index + 1})
    );
    let other: PutResult = ok(&n.publish(json!({"key": "greeting/b", "value": null})));

    for stale in ["false", "true"] {
        let got = n.get("/v1/datum", &[("key", "greeting"), ("stale", stale)]);
        assert_eq!(
            json_of(&got),
            json!({"key": "greeting", "value": {"a": [1]}, "timestamp": 2,
                   "index": first.index + 1}),
            "stale={stale}"
        );
        let _: GetResult = ok(&got);
    }

    let rows: Vec<ListEntry> = ok(&n.get("/v1/datums", &[("prefix", "greeting")]));
    assert_eq!(
        serde_json::to_value(&rows).unwrap(),
        json!([{"key": "greeting", "timestamp": 2, "index": first.index + 1},
               {"key": "greeting/b", "timestamp": 1, "index": other.index}])
    );
    let none: Vec<ListEntry> = ok(&n.get("/v1/datums", &[("prefix", "x"), ("stale", "1")]));
    assert!(none.is_empty());

    let deleted = n.call("DELETE", "/v1/datum", &[("key", "greeting")], b"");
    let d: DeleteResult = ok(&deleted);
    assert_eq!(
        json_of(&deleted),
        json!({"key": "greeting", "term": first.term, "index": d.index})
    );
    assert!(d.index > other.index, "{d:?}");

    let gone = n.get("/v1/datum", &[("key", "greeting")]);
    assert!(refused(&gone, 404, ErrorCode::NotFound).leader.is_none());
    let again = n.call("DELETE", "/v1/datum", &[("key", "greeting")], b"");
    refused(&again, 404, ErrorCode::NotFound);
    let rows: Vec<ListEntry> = ok(&n.get("/v1/datums", &[]));
    assert_eq!(rows.len(), 1, "{rows:?}");
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let n = Standalone::start();
    for body in [
        &b"not json"[..],
        b"{\"key\":\"k\",\"value\":",
        b"{\"value\":1}",
        b"{\"key\":\"k\"}",
        b"{\"key\":\"k\",\"value\":1,\"extra\":2}",
    ] {
        let r = n.call("POST", "/v1/datum", &[], body);
        let b = refused(&r, 400, ErrorCode::BadRequest);
        assert!(b.message.contains("key"), "{}", b.message);
    }
    let long = "k".repeat(1025);
    for (key, why) in [("", "empty"), ("a\nb", "control"), (&long[..], "1024")] {
        let r = n.publish(json!({"key": key, "value": 1}));
        let b = refused(&r, 400, ErrorCode::BadRequest);
        assert!(b.message.contains(why), "{key:?}: {}", b.message);
        let r = n.call("DELETE", "/v1/datum", &[("key", key)], b"");
        refused(&r, 400, ErrorCode::BadRequest);
    }
    for method in ["GET", "DELETE"] {
        let r = n.call(method, "/v1/datum", &[], b"");
        let b = refused(&r, 400, ErrorCode::BadRequest);
        assert!(b.message.contains("`key`"), "{method}: {}", b.message);
    }
    let r = n.get("/v1/digest", &[("index", "ten")]);
    refused(&r, 400, ErrorCode::BadRequest);

    for (method, path) in [
        ("GET", "/nope"),
        ("PUT", "/v1/datum"),
        ("GET", "/v1/raft/messages"),
        ("POST", "/v1/status"),
    ] {
        let r = n.call(method, path, &[], b"");
        let b = refused(&r, 404, ErrorCode::NoRoute);
        assert!(
            b.message.contains(&format!("{method} {path}")),
            "{}",
            b.message
        );
    }

    // A watch is served outside `route` (it streams), but starts from a `Request` too.
    for query in [
        &[][..],
        &[("key", "k"), ("prefix", "k")],
        &[("key", "k"), ("from_index", "soon")],
        &[("key", "")],
    ] {
        let req = request("GET", "/v1/watch", query, b"");
        match watch::start(&n.node, &req) {
            Ok(_) => panic!("{query:?} was accepted"),
            Err(r) => {
                refused(&r, 400, ErrorCode::BadRequest);
            }
        }
    }
    let req = request(
        "GET",
        "/v1/watch",
        &[("prefix", ""), ("from_index", "1")],
        b"",
    );
    assert!(watch::start(&n.node, &req).is_ok());

    let rows: Vec<ListEntry> = ok(&n.get("/v1/datums", &[]));
    assert!(rows.is_empty(), "{rows:?}");
}

#[test]
fn status_leader_health_and_digest_shapes() {
    let n = Standalone::with(|c| c.publish_timeout_ms = 2000);
    let put: PutResult = ok(&n.publish(json!({"key": "k", "value": 1})));

    let raw = n.get("/v1/status", &[]);
    assert_eq!(json_of(&raw)["role"], "LEADER");
    let s: Status = ok(&raw);
    assert_eq!(
        (s.endpoint.as_str(), &s.role, s.leader.as_deref()),
        (ADDR, &Role::Leader, Some(ADDR))
    );
    assert_eq!(s.vote_for.as_deref(), Some(ADDR));
    assert_eq!(
        (s.term, s.datums, s.peers.clone()),
        (put.term, 1, vec![ADDR.to_string()])
    );
    assert!(
        s.commit_index >= put.index && s.applied_index >= put.index,
        "{s:?}"
    );
    assert!(s.last_log_index >= s.commit_index, "{s:?}");
    assert!(
        s.followers.is_empty(),
        "a standalone leader has no followers: {s:?}"
    );

    let l = n.get("/v1/leader", &[]);
    assert_eq!(json_of(&l), json!({"leader": ADDR, "term": s.term}));
    let _: LeaderInfo = ok(&l);
    let h = n.get("/v1/health", &[]);
    assert_eq!(json_of(&h), json!({"ok": true}));
    let _: Health = ok(&h);

    let d: Digest = ok(&n.get("/v1/digest", &[]));
    assert_eq!((d.endpoint.as_str(), d.datums), (ADDR, 1));
    assert!(d.index >= put.index && d.index <= d.applied_index, "{d:?}");
    assert!(
        d.digest.len() == 16 && d.digest.chars().all(|c| c.is_ascii_hexdigit()),
        "{d:?}"
    );
    let at: Digest = ok(&n.get("/v1/digest", &[("index", &d.index.to_string())]));
    assert_eq!((at.index, &at.digest), (d.index, &d.digest));
    let _: PutResult = ok(&n.publish(json!({"key": "k", "value": 2})));
    let later: Digest = ok(&n.get("/v1/digest", &[]));
    assert_ne!(later.digest, d.digest, "a changed value changes the digest");

    // An index this member will not reach within its publish timeout.
    let far = (later.applied_index + 1000).to_string();
    let r = n.get("/v1/digest", &[("index", &far)]);
    let b = refused(&r, 504, ErrorCode::Timeout);
    assert!(b.message.contains("has not applied"), "{}", b.message);

    for to in [ADDR, "stranger:8848"] {
        let r = n.call("POST", "/v1/transfer-leader", &[("to", to)], b"");
        let b = refused(&r, 400, ErrorCode::BadRequest);
        assert!(
            b.message.contains("not another voting member"),
            "{}",
            b.message
        );
    }
}

#[test]
fn nacos_endpoints_keep_the_1x_shapes() {
    let n = Standalone::start();
    let _: PutResult = ok(&n.publish(json!({"key": "k", "value": 1})));

    let raw = n.get("/nacos/v1/ns/raft/peer", &[]);
    let mut keys: Vec<String> = json_of(&raw).as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "heartbeatDueMs",
            "ip",
            "leaderDueMs",
            "state",
            "term",
            "voteFor"
        ]
    );
    assert_eq!(json_of(&raw)["state"], "LEADER");
    let me: RaftPeer = ok(&raw);
    assert_eq!(
        (me.ip.as_str(), me.vote_for.as_deref(), &me.state),
        (ADDR, Some(ADDR), &Role::Leader)
    );

    let state: NacosState = ok(&n.get("/nacos/v1/ns/raft/state", &[]));
    assert_eq!(state.services, 1);
    assert_eq!(state.peers.len(), 1);
    assert_eq!(
        (state.peers[0].ip.as_str(), &state.peers[0].state),
        (ADDR, &Role::Leader)
    );

    // The leader's RaftPeer JSON as a string, as Nacos sends it.
    let leader: NacosLeader = ok(&n.get("/nacos/v1/ns/raft/leader", &[]));
    let text: Value = serde_json::from_str(&leader.leader).expect("the string holds JSON");
    assert_eq!(
        (&text["ip"], &text["state"]),
        (&json!(ADDR), &json!("LEADER"))
    );
    let peer = leader.peer().unwrap().expect("a leader");
    assert_eq!((peer.ip.as_str(), peer.term), (ADDR, me.term));

    let l = n.get("/nacos/v1/ns/raft/listeners", &[]);
    assert_eq!(json_of(&l), json!({"listeners": []}));
    let _: NacosListeners = ok(&l);
}

#[test]
fn a_standalone_member_takes_no_peer_traffic() {
    let n = Standalone::start();
    let r = n.call("POST", "/v1/raft/messages", &[], b"[]");
    let b = refused(&r, 403, ErrorCode::Forbidden);
    assert!(b.message.contains("standalone"), "{}", b.message);
    let r = n.call("POST", "/v1/raft/snapshot", &[], b"[]");
    refused(&r, 403, ErrorCode::Forbidden);
    let r = n.call("POST", "/v1/raft/forward", &[], b"[]");
    refused(&r, 403, ErrorCode::Forbidden);
}

#[test]
fn a_forwarded_batch_is_answered_write_by_write_as_the_client_api_would() {
    use crate::wire::peer::{ForwardedAnswer, ForwardedWrite, MAX_FORWARD_BATCH};
    let n = Standalone::with(|c| c.cluster_token = Some("test-secret-0123456789".into()));
    let publish = |body: Value, id: &str| ForwardedWrite {
        method: "POST".into(),
        query: vec![],
        body: body.to_string(),
        request_id: id.into(),
        access_token: None,
    };
    let delete = |key: &str, id: &str| ForwardedWrite {
        method: "DELETE".into(),
        query: vec![("key".into(), key.into())],
        body: String::new(),
        request_id: id.into(),
        access_token: None,
    };
    let batch = vec![
        publish(json!({"key": "k", "value": 1}), "a:1"),
        publish(json!({"key": "", "value": 1}), "b:1"),
        delete("absent", "c:1"),
        publish(json!({"key": "k", "value": 2, "if_timestamp": 5}), "d:1"),
        // The first write again, as after a lost connection: answered as the first time.
        publish(json!({"key": "k", "value": 1}), "a:1"),
        publish(json!({"key": "k", "value": 3}), "not an id"),
    ];
    let r = n.call(
        "POST",
        "/v1/raft/forward",
        &[],
        &serde_json::to_vec(&batch).unwrap(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let answers: Vec<ForwardedAnswer> = serde_json::from_slice(&r.body).unwrap();
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![200, 400, 404, 412, 200, 400]);
    let first: Value = serde_json::from_str(&answers[0].body).unwrap();
    let again: Value = serde_json::from_str(&answers[4].body).unwrap();
    assert_eq!(first, again, "a repeat is answered as the first time");
    assert_eq!(first["timestamp"], 1);
    let cas: Value = serde_json::from_str(&answers[3].body).unwrap();
    assert_eq!(cas["error"], "precondition_failed");
    assert_eq!(cas["timestamp"], 1);
    let got = json_of(&n.get("/v1/datum", &[("key", "k")]));
    assert_eq!(
        (got["value"].clone(), got["timestamp"].clone()),
        (json!(1), json!(1))
    );

    // Not a batch, a batch too large, a method that is no write: refused whole.
    let r = n.call("POST", "/v1/raft/forward", &[], b"{\"method\":");
    refused(&r, 400, ErrorCode::BadRequest);
    let many = vec![delete("k", "e:1"); MAX_FORWARD_BATCH + 1];
    let r = n.call(
        "POST",
        "/v1/raft/forward",
        &[],
        &serde_json::to_vec(&many).unwrap(),
    );
    refused(&r, 400, ErrorCode::BadRequest);
    let get = vec![ForwardedWrite {
        method: "GET".into(),
        ..delete("k", "f:1")
    }];
    let r = n.call(
        "POST",
        "/v1/raft/forward",
        &[],
        &serde_json::to_vec(&get).unwrap(),
    );
    let answers: Vec<ForwardedAnswer> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(answers[0].status, 400);
    assert_eq!(
        json_of(&n.get("/v1/datum", &[("key", "k")]))["timestamp"],
        json!(1),
        "nothing refused was applied"
    );
}

#[test]
fn peer_endpoints_refuse_non_members() {
    let n = Standalone::with(|c| c.cluster_token = Some("test-secret-0123456789".into()));
    let term = n.node.raft_status().term;
    let stranger = Envelope {
        from: PeerAddr::new("10.9.9.9:8848"),
        to: PeerAddr::new(ADDR),
        term: term + 99,
        msg: crate::raft::Message::Vote {
            last_log_index: 100,
            last_log_term: term + 99,
            transfer: false,
        },
    };
    let body = serde_json::to_vec(&[stranger]).unwrap();
    let r = n.call("POST", "/v1/raft/messages", &[], &body);
    let b = refused(&r, 403, ErrorCode::Forbidden);
    assert!(
        b.message.contains("10.9.9.9:8848 is not another member"),
        "{}",
        b.message
    );
    let s = n.node.raft_status();
    assert_eq!(
        (s.term, s.role),
        (term, crate::raft::Role::Leader),
        "a stranger changed the term"
    );

    let r = n.call("POST", "/v1/raft/messages", &[], b"[{\"from\":");
    refused(&r, 400, ErrorCode::BadRequest);

    let chunk = |from: &str| {
        vec![
            ("from", from.to_string()),
            ("term", (term + 1).to_string()),
            ("index", "100".into()),
            ("snap_term", (term + 1).to_string()),
            ("seq", "0".into()),
            ("last", "1".into()),
        ]
    };
    // A leader's messages are taken from any holder of the cluster secret (a follower's
    // configuration may lag the leader's), and then judged on their own: this stream has
    // no configuration in its chunk 0, so it is refused, and nothing changed.
    let q = chunk("10.9.9.9:8848");
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = n.call("POST", "/v1/raft/snapshot", &q, b"[]");
    let b = refused(&r, 400, ErrorCode::BadRequest);
    assert!(b.message.contains("configuration"), "{}", b.message);
    assert_eq!(
        n.node.raft_status().term,
        term,
        "a stranger's snapshot changed the term"
    );
    let q = chunk(ADDR);
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = n.call("POST", "/v1/raft/snapshot", &q, b"[]");
    refused(&r, 403, ErrorCode::Forbidden);
    let r = n.call("POST", "/v1/raft/snapshot", &q[1..], b"[]");
    let b = refused(&r, 400, ErrorCode::BadRequest);
    assert!(b.message.contains("`from`"), "{}", b.message);
}

#[test]
fn peer_endpoints_need_the_cluster_token() {
    let n = Standalone::with(|c| c.cluster_token = Some("s3cret".into()));
    let with_token = |token: Option<&str>, from: &str| {
        let env = Envelope {
            from: PeerAddr::new(from),
            to: PeerAddr::new(ADDR),
            term: 0,
            msg: crate::raft::Message::HeartbeatResp {
                read_ctx: 0,
                last_index: 0,
            },
        };
        let mut req = request(
            "POST",
            "/v1/raft/messages",
            &[],
            &serde_json::to_vec(&[env]).unwrap(),
        );
        req.token = token.map(str::to_string);
        route(&n.node, &req)
    };
    for token in [
        None,
        Some(""),
        Some("guess"),
        Some("s3cre"),
        Some("s3cret "),
    ] {
        let r = with_token(token, "10.9.9.9:8848");
        let b = refused(&r, 403, ErrorCode::Forbidden);
        assert!(
            b.message.contains("cluster secret"),
            "{token:?}: {}",
            b.message
        );
    }
    let mut snapshot = request("POST", "/v1/raft/snapshot", &[], b"[]");
    snapshot.token = Some("guess".into());
    refused(&route(&n.node, &snapshot), 403, ErrorCode::Forbidden);

    // The token is not enough: the sender must be another member too.
    for from in ["10.9.9.9:8848", ADDR] {
        let r = with_token(Some("s3cret"), from);
        let b = refused(&r, 403, ErrorCode::Forbidden);
        assert!(b.message.contains("not another member"), "{}", b.message);
    }

    let mut empty = request("POST", "/v1/raft/messages", &[], b"[]");
    empty.token = Some("s3cret".into());
    let r = route(&n.node, &empty);
    assert_eq!((r.status, r.body.as_slice()), (204, &b""[..]));

    // Client routes do not ask for it.
    let _: Status = ok(&n.get("/v1/status", &[]));
}

#[test]
fn a_failed_condition_is_412_with_the_current_timestamp_and_changes_nothing() {
    let n = Standalone::start();
    let absent = n.publish(json!({"key": "k", "value": 1, "if_timestamp": 0}));
    assert_eq!(ok::<PutResult>(&absent).timestamp, 1);
    let r = n.publish(json!({"key": "k", "value": 2, "if_timestamp": 0}));
    let b = refused(&r, 412, ErrorCode::PreconditionFailed);
    assert_eq!(b.timestamp, Some(1));
    assert_eq!(
        json_of(&r)["timestamp"],
        json!(1),
        "the documented body field"
    );
    let won = n.publish(json!({"key": "k", "value": 3, "if_timestamp": 1}));
    assert_eq!(ok::<PutResult>(&won).timestamp, 2);

    let r = n.call(
        "DELETE",
        "/v1/datum",
        &[("key", "k"), ("if_timestamp", "1")],
        b"",
    );
    assert_eq!(
        refused(&r, 412, ErrorCode::PreconditionFailed).timestamp,
        Some(2)
    );
    let r = n.call(
        "DELETE",
        "/v1/datum",
        &[("key", "k"), ("if_timestamp", "x")],
        b"",
    );
    refused(&r, 400, ErrorCode::BadRequest);
    let g: GetResult = ok(&n.get("/v1/datum", &[("key", "k")]));
    assert_eq!(
        (g.value, g.timestamp),
        (json!(3), 2),
        "a refusal changed the key"
    );
    let r = n.call(
        "DELETE",
        "/v1/datum",
        &[("key", "k"), ("if_timestamp", "2")],
        b"",
    );
    let _: DeleteResult = ok(&r);
    let r = n.publish(json!({"key": "k", "value": 4, "if_timestamp": 2}));
    assert_eq!(
        refused(&r, 412, ErrorCode::PreconditionFailed).timestamp,
        Some(0)
    );
}

// ------------------------------------------------------------------ access control

impl Standalone {
    /// Calls a route with a bearer token (or none).
    fn as_user(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Value,
    ) -> Response {
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let mut req = request(method, path, query, &body);
        req.access_token = token.map(str::to_string);
        route(&self.node, &req)
    }

    fn login(&self, user: &str, password: &str) -> String {
        let r = self.as_user(
            None,
            "POST",
            "/v1/auth/login",
            &[],
            json!({"user": user, "password": password}),
        );
        let l: crate::wire::auth::LoginResult = ok(&r);
        assert_eq!(l.ttl_s, crate::auth::DEFAULT_TOKEN_TTL_S);
        l.token
    }
}

#[test]
fn access_control_flow_users_roles_tokens_and_refusals() {
    use crate::wire::auth::{AuthStatus, NacosLoginResult, RoleInfo, UserInfo};
    let n = Standalone::start();
    let none = Value::Null;
    // Off: everyone may do everything, and a login says there is nothing to log in to.
    let st: AuthStatus = ok(&n.get("/v1/auth/status", &[]));
    assert!(!st.enabled);
    let _: PutResult = ok(&n.publish(json!({"key": "cfg/a", "value": 1})));
    let r = n.as_user(
        None,
        "POST",
        "/v1/auth/login",
        &[],
        json!({"user": "root", "password": "x"}),
    );
    refused(&r, 409, ErrorCode::AuthDisabled);
    // Enabling without a root user is refused, so nobody locks themselves out.
    let r = n.as_user(None, "POST", "/v1/auth/enable", &[], none.clone());
    assert!(refused(&r, 409, ErrorCode::Conflict)
        .message
        .contains("user add root"));
    for (user, pw) in [("root", "root-pw"), ("app", "app-pw")] {
        let r = n.as_user(
            None,
            "POST",
            "/v1/auth/users",
            &[],
            json!({"name": user, "password": pw}),
        );
        let _: crate::wire::auth::AuthChanged = ok(&r);
    }
    let r = n.as_user(
        None,
        "POST",
        "/v1/auth/users",
        &[],
        json!({"name": "app", "password": "again"}),
    );
    refused(&r, 409, ErrorCode::Conflict);
    let r = n.as_user(
        None,
        "POST",
        "/v1/auth/users",
        &[],
        json!({"name": "bad name", "password": "x"}),
    );
    refused(&r, 400, ErrorCode::BadRequest);
    for (path, body) in [
        ("/v1/auth/roles", json!({"name": "cfg-reader"})),
        (
            "/v1/auth/roles/grants",
            json!({"name": "cfg-reader", "prefix": "cfg/", "perm": "read"}),
        ),
        (
            "/v1/auth/users/roles",
            json!({"name": "app", "role": "cfg-reader"}),
        ),
    ] {
        let _: crate::wire::auth::AuthChanged = ok(&n.as_user(None, "POST", path, &[], body));
    }
    let _: crate::wire::auth::AuthChanged =
        ok(&n.as_user(None, "POST", "/v1/auth/enable", &[], none.clone()));

    // On: no token, a bad token.
    let r = n.get("/v1/datum", &[("key", "cfg/a")]);
    assert!(refused(&r, 401, ErrorCode::Unauthenticated)
        .message
        .contains("log in"));
    let r = n.as_user(
        Some("junk"),
        "GET",
        "/v1/datum",
        &[("key", "cfg/a")],
        none.clone(),
    );
    refused(&r, 401, ErrorCode::Unauthenticated);
    let r = n.as_user(
        None,
        "POST",
        "/v1/auth/login",
        &[],
        json!({"user": "app", "password": "wrong"}),
    );
    refused(&r, 401, ErrorCode::Unauthenticated);
    // Status and health stay open.
    let _: Health = ok(&n.get("/v1/health", &[]));

    let app = n.login("app", "app-pw");
    let root = n.login("root", "root-pw");
    let got: GetResult = ok(&n.as_user(
        Some(&app),
        "GET",
        "/v1/datum",
        &[("key", "cfg/a")],
        none.clone(),
    ));
    assert_eq!(got.value, json!(1));
    let r = n.as_user(
        Some(&app),
        "POST",
        "/v1/datum",
        &[],
        json!({"key": "cfg/a", "value": 2}),
    );
    assert!(refused(&r, 403, ErrorCode::PermissionDenied)
        .message
        .contains("may not write"));
    let _: PutResult = ok(&n.as_user(
        Some(&root),
        "POST",
        "/v1/datum",
        &[],
        json!({"key": "other", "value": 3}),
    ));
    let r = n.as_user(
        Some(&app),
        "GET",
        "/v1/datum",
        &[("key", "other")],
        none.clone(),
    );
    refused(&r, 403, ErrorCode::PermissionDenied);
    let r = n.as_user(
        Some(&app),
        "DELETE",
        "/v1/datum",
        &[("key", "cfg/a")],
        none.clone(),
    );
    refused(&r, 403, ErrorCode::PermissionDenied);
    // A list shows only what the user may read.
    let rows: Vec<ListEntry> = ok(&n.as_user(Some(&app), "GET", "/v1/datums", &[], none.clone()));
    assert_eq!(
        rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["cfg/a"]
    );
    let rows: Vec<ListEntry> = ok(&n.as_user(Some(&root), "GET", "/v1/datums", &[], none.clone()));
    assert_eq!(rows.len(), 2);
    // Administration is root's.
    for (method, path, body) in [
        ("GET", "/v1/auth/users", none.clone()),
        ("POST", "/v1/auth/disable", none.clone()),
        ("POST", "/v1/transfer-leader", none.clone()),
        ("POST", "/v1/members", json!({"addr": "127.0.0.1:1"})),
        (
            "POST",
            "/v1/members/promote",
            json!({"addr": "127.0.0.1:1"}),
        ),
        ("POST", "/v1/auth/roles", json!({"name": "x"})),
    ] {
        let r = n.as_user(Some(&app), method, path, &[], body);
        refused(&r, 403, ErrorCode::PermissionDenied);
    }
    let users: Vec<UserInfo> =
        ok(&n.as_user(Some(&root), "GET", "/v1/auth/users", &[], none.clone()));
    assert_eq!(
        serde_json::to_value(&users).unwrap(),
        json!([{"name": "app", "roles": ["cfg-reader"]}, {"name": "root", "roles": []}])
    );
    let roles: Vec<RoleInfo> =
        ok(&n.as_user(Some(&root), "GET", "/v1/auth/roles", &[], none.clone()));
    assert_eq!(
        serde_json::to_value(&roles).unwrap(),
        json!([{"name": "cfg-reader", "grants": [{"prefix": "cfg/", "perm": "read"}]}])
    );
    // Nacos's login and its accessToken parameter.
    let mut req = request(
        "POST",
        "/nacos/v1/auth/users/login",
        &[],
        b"username=app&password=app-pw",
    );
    req.access_token = None;
    let nacos: NacosLoginResult = ok(&route(&n.node, &req));
    assert!(!nacos.global_admin);
    let mut req = request("GET", "/v1/datum", &[("key", "cfg/a")], b"");
    req.access_token = Some(nacos.access_token.clone());
    let _: GetResult = ok(&route(&n.node, &req));
    // A user changes their own password: their old tokens die, root's live on.
    let _: crate::wire::auth::AuthChanged = ok(&n.as_user(
        Some(&app),
        "POST",
        "/v1/auth/users/password",
        &[],
        json!({"name": "app", "password": "new-pw"}),
    ));
    let r = n.as_user(
        Some(&app),
        "GET",
        "/v1/datum",
        &[("key", "cfg/a")],
        none.clone(),
    );
    assert!(refused(&r, 401, ErrorCode::Unauthenticated)
        .message
        .contains("password"));
    let r = n.as_user(
        Some(&n.login("app", "new-pw")),
        "POST",
        "/v1/auth/users/password",
        &[],
        json!({"name": "root", "password": "mine-now"}),
    );
    refused(&r, 403, ErrorCode::PermissionDenied);
    let _: GetResult = ok(&n.as_user(
        Some(&root),
        "GET",
        "/v1/datum",
        &[("key", "other")],
        none.clone(),
    ));
    // Root cannot be deleted while on; off again, everything is open.
    let r = n.as_user(
        Some(&root),
        "DELETE",
        "/v1/auth/users",
        &[("name", "root")],
        none.clone(),
    );
    refused(&r, 409, ErrorCode::Conflict);
    let _: crate::wire::auth::AuthChanged =
        ok(&n.as_user(Some(&root), "POST", "/v1/auth/disable", &[], none.clone()));
    let _: GetResult = ok(&n.get("/v1/datum", &[("key", "other")]));
}

#[test]
fn the_status_page_is_served_and_its_data_needs_a_login_when_access_control_is_on() {
    let n = Standalone::start();
    let page = n.get("/ui/", &[]);
    assert_eq!(page.status, 200);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert!(String::from_utf8_lossy(&page.body).contains("/ui/app.js"));
    for (path, ty) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = n.get(path, &[]);
        assert_eq!(
            (r.status, r.content_type.starts_with(ty)),
            (200, true),
            "{path}"
        );
    }
    refused(&n.get("/ui/nothing.js", &[]), 404, ErrorCode::NoRoute);
    let members: Value = json_of(&n.get("/ui/api/members", &[]));
    assert_eq!(members[0]["addr"], ADDR);
    assert_eq!(members[0]["role"], "LEADER");
    assert_eq!(members[0]["reachable"], true);
    // Access control on: the page still loads (it shows a login), its data does not.
    for (path, body) in [
        ("/v1/auth/users", json!({"name": "root", "password": "pw"})),
        ("/v1/auth/enable", Value::Null),
    ] {
        let _: crate::wire::auth::AuthChanged = ok(&n.as_user(None, "POST", path, &[], body));
    }
    assert_eq!(n.get("/ui/", &[]).status, 200);
    refused(
        &n.get("/ui/api/members", &[]),
        401,
        ErrorCode::Unauthenticated,
    );
    let m = n.get("/metrics", &[]);
    assert_eq!(m.status, 200, "metrics stay open");
    assert!(m.content_type.starts_with("application/openmetrics-text"));
}

#[test]
fn nacos_datum_read_answers_one_element_per_key_in_order() {
    let n = Standalone::start();
    let _: PutResult = ok(&n.publish(json!({"key": "svc.a", "value": {"x": 1}})));
    let _: PutResult = ok(&n.publish(json!({"key": "svc.a", "value": {"x": 2}})));
    let _: PutResult = ok(&n.publish(json!({"key": "svc#b", "value": "v"})));
    // The parameter as the query parser leaves it when a Nacos sender encoded it twice:
    // the handler's own decode gives the commas and the "#".
    let r = n.get(
        "/nacos/v1/ns/raft/datum",
        &[("keys", "svc.a%2Cnone%2Csvc%23b")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        json_of(&r),
        json!([
            {"key": "svc.a", "value": {"x": 2}, "timestamp": 2},
            null,
            {"key": "svc#b", "value": "v", "timestamp": 1}
        ])
    );
    let plain = n.get("/v1/ns/raft/datum", &[("keys", "svc.a"), ("stale", "true")]);
    assert_eq!(json_of(&plain)[0]["timestamp"], 2);
    refused(
        &n.get("/nacos/v1/ns/raft/datum", &[]),
        400,
        ErrorCode::BadRequest,
    );
    refused(
        &n.get("/nacos/v1/ns/raft/datum", &[("keys", "%FF")]),
        400,
        ErrorCode::BadRequest,
    );
}
