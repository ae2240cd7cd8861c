//! Tests of the client against small scripted servers: failover, time bounds, error
//! classes, watch streams.

use super::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

/// A one-shot HTTP server: answers the first request with `status` and `body`, and
/// hands back the request it read.
fn serve_once(status: u16, body: &'static str) -> (String, thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        // Read the head and, if announced, the body.
        loop {
            let n = s.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let len = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if got.len() >= head_end + 4 + len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(reply.as_bytes()).unwrap();
        String::from_utf8_lossy(&got).to_string()
    });
    (addr, handle)
}

/// An address nothing listens on (bound, then released).
fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn client(endpoints: &[&str]) -> Client {
    Client::new(
        endpoints.iter().map(|s| s.to_string()).collect(),
        Duration::from_secs(2),
    )
}

#[test]
fn put_sends_key_and_value_and_parses_the_answer() {
    let (addr, h) = serve_once(200, r#"{"key":"a b","timestamp":3,"term":2,"index":17}"#);
    let r = client(&[&addr])
        .put("a b", serde_json::json!({"x": 1}))
        .unwrap();
    assert_eq!(
        r,
        PutResult {
            key: "a b".into(),
            timestamp: 3,
            term: 2,
            index: 17
        }
    );
    let req = h.join().unwrap();
    assert!(req.starts_with("POST /v1/datum HTTP/1.1"), "{req}");
    let body = &req[req.find("\r\n\r\n").unwrap() + 4..];
    let sent: Value = serde_json::from_str(body).unwrap();
    assert_eq!(sent, serde_json::json!({"key": "a b", "value": {"x": 1}}));
}

#[test]
fn key_is_percent_encoded_in_the_query() {
    let (addr, h) = serve_once(200, r#"{"key":"a/b#c&d","value":1,"timestamp":1}"#);
    let r = client(&[&addr]).get("a/b#c&d", true).unwrap();
    assert_eq!(r.value, serde_json::json!(1));
    let req = h.join().unwrap();
    let line = req.lines().next().unwrap();
    assert!(line.contains("key=a%2Fb%23c%26d"), "{line}");
    assert!(line.contains("stale=true"), "{line}");
}

#[test]
fn not_found_is_typed_and_exits_3() {
    let (addr, _h) = serve_once(404, r#"{"error":"not_found","message":"no key k"}"#);
    let e = client(&[&addr]).get("k", false).unwrap_err();
    assert!(
        matches!(&e, ClientError::NotFound { key } if key == "k"),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), 3);
}

#[test]
fn unknown_route_is_a_server_error() {
    let (addr, _h) = serve_once(404, r#"{"error":"no_route","message":"GET /x"}"#);
    let e = client(&[&addr]).get("k", false).unwrap_err();
    assert!(
        matches!(
            &e,
            ClientError::Server {
                status: 404,
                error: ErrorCode::NoRoute,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), 1);
}

#[test]
fn refused_endpoint_fails_over_to_the_next() {
    let dead = dead_addr();
    let (addr, _h) = serve_once(200, r#"{"leader":"n1","term":4}"#);
    let l = client(&[&dead, &addr]).leader().unwrap();
    assert_eq!(l.leader.as_deref(), Some("n1"));
    assert_eq!(l.term, 4);
}

#[test]
fn no_leader_503_tries_the_next_endpoint_even_for_writes() {
    let (a, _ha) = serve_once(503, r#"{"error":"no_leader","message":"none yet"}"#);
    let (b, _hb) = serve_once(200, r#"{"key":"k","timestamp":1,"term":1,"index":2}"#);
    let r = client(&[&a, &b]).put("k", Value::Null).unwrap();
    assert_eq!(r.index, 2);
}

#[test]
fn a_gateway_timeout_is_retried_until_the_deadline_then_reported_as_unknown() {
    let (a, _ha) = serve_once(504, r#"{"error":"timeout","message":"may still commit"}"#);
    let b = dead_addr();
    let e = client(&[&a, &b]).put("k", Value::Null).unwrap_err();
    match &e {
        ClientError::Unavailable {
            endpoint,
            kind,
            message,
            ..
        } => {
            assert_eq!(endpoint, &a);
            assert_eq!(*kind, UnavailableKind::WriteTimeout);
            assert!(message.contains("may still"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.exit_code(), 4);
}

/// A write whose answer was a 504 is sent again, with the same request id, to another
/// member, whose answer is the write's.
#[test]
fn a_write_is_retried_with_the_same_request_id() {
    let (a, ha) = serve_once(504, r#"{"error":"timeout","message":"may still commit"}"#);
    let (b, hb) = serve_once(200, r#"{"key":"k","timestamp":1,"term":2,"index":9}"#);
    let r = client(&[&a, &b]).put("k", Value::Null).unwrap();
    assert_eq!(r.index, 9);
    let id = |req: String| {
        req.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("x-request-id:")
                    .then(|| l[13..].trim().to_string())
            })
            .expect("the write carries a request id")
    };
    let (first, second) = (id(ha.join().unwrap()), id(hb.join().unwrap()));
    assert_eq!(first, second);
    assert!(first.ends_with(":1"), "{first}");
}

/// A delete whose connection closes after the request was read, at a member that then
/// refuses connections, is reported as possibly applied: had it gone on a pooled
/// connection, ureq's resend would be refused and hide that the first was delivered.
#[test]
fn a_delete_whose_connection_closes_unanswered_is_reported_as_unknown() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = thread::spawn(move || {
        let read_head = |s: &mut std::net::TcpStream| {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            got
        };
        let body = r#"{"key":"k","deleted":true,"term":2,"index":9}"#;
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut listener = Some(listener);
        let mut answered = false;
        loop {
            let (mut s, _) = listener.as_ref().unwrap().accept().unwrap();
            loop {
                let req = read_head(&mut s);
                if req.is_empty() {
                    break; // the client closed this connection: take the next one
                }
                if !answered {
                    s.write_all(reply.as_bytes()).unwrap();
                    answered = true;
                    continue;
                }
                // The second delete (on the kept connection if the client pooled it):
                // stop listening, and close without answering.
                drop(listener.take());
                return req;
            }
        }
    });
    let c = Client::new(vec![addr], Duration::from_millis(800));
    c.delete("k").unwrap();
    let e = c.delete("k").unwrap_err();
    let second = server.join().unwrap();
    assert!(
        second.starts_with(b"DELETE "),
        "the second delete was delivered"
    );
    assert!(e.to_string().contains("may still"), "{e}");
}

#[test]
fn all_refused_names_every_endpoint() {
    let (a, b) = (dead_addr(), dead_addr());
    let e = client(&[&a, &b]).get("k", false).unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&a) && text.contains(&b), "{text}");
    assert!(text.contains("connection refused"), "{text}");
    assert!(matches!(
        e,
        ClientError::Unavailable {
            kind: UnavailableKind::Unreachable,
            ..
        }
    ));
    assert_eq!(e.exit_code(), 4);
}

#[test]
fn a_silent_node_is_bounded_by_the_timeout() {
    // Accepts connections (the kernel does, via the backlog) but never answers, like a
    // SIGSTOPped node.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let c = Client::new(vec![addr], Duration::from_millis(300));
    let start = Instant::now();
    let e = c.put("k", Value::Null).unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    match &e {
        ClientError::Unavailable { kind, message, .. } => {
            assert_eq!(*kind, UnavailableKind::TimedOut);
            assert!(message.contains("may still be applied"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    drop(listener);
}

#[test]
fn garbage_body_is_a_bad_response() {
    let (addr, _h) = serve_once(200, "not json");
    let e = client(&[&addr]).list("", false).unwrap_err();
    assert!(matches!(e, ClientError::BadResponse { .. }), "{e:?}");
}

#[test]
fn leader_prefers_an_endpoint_that_knows_one() {
    let (a, _ha) = serve_once(200, r#"{"leader":null,"term":5}"#);
    let (b, _hb) = serve_once(200, r#"{"leader":"n2","term":5}"#);
    let l = client(&[&a, &b]).leader().unwrap();
    assert_eq!(l.leader.as_deref(), Some("n2"));
    let (c, _hc) = serve_once(200, r#"{"leader":null,"term":6}"#);
    let l = client(&[&c]).leader().unwrap();
    assert_eq!(
        l,
        LeaderInfo {
            leader: None,
            term: 6
        }
    );
}

#[test]
fn no_endpoints_is_an_error_not_a_panic() {
    let e = Client::new(vec![], Duration::from_secs(1))
        .get("k", false)
        .unwrap_err();
    assert!(matches!(e, ClientError::InvalidEndpoint { .. }));
}

/// Serves one watch request: writes `lines` as a close-delimited body, then either
/// closes the connection or (with `hang`) keeps it open and silent until the client goes.
fn serve_watch(lines: &'static str, hang: bool) -> (String, thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        s.write_all(lines.as_bytes()).unwrap();
        if hang {
            // Until the client closes its end.
            let _ = s.read(&mut buf);
        }
        String::from_utf8_lossy(&head).to_string()
    });
    (addr, handle)
}

#[test]
fn watch_yields_events_and_progress_then_reports_the_closed_stream() {
    let (addr, h) = serve_watch(
        concat!(
            r#"{"event":"CHANGE","key":"a","value":{"x":1},"timestamp":1,"index":5}"#,
            "\n",
            r#"{"event":"PROGRESS","index":6}"#,
            "\n",
            r#"{"event":"DELETE","key":"a","value":null,"timestamp":1,"index":7}"#,
            "\n",
        ),
        false,
    );
    let c = client(&[&addr]);
    let mut w = c
        .watch(WatchTarget::Prefix("a/b"), Some(5), Duration::from_secs(2))
        .unwrap();
    assert_eq!(w.endpoint(), addr);
    let first = w.next_line().unwrap();
    assert_eq!(
        first,
        WatchLine::Event(WatchEvent {
            event: WatchEventKind::Change,
            key: "a".into(),
            value: serde_json::json!({"x": 1}),
            timestamp: 1,
            index: 5,
        })
    );
    assert_eq!(w.next_line().unwrap(), WatchLine::Progress { index: 6 });
    assert!(matches!(
        w.next_line().unwrap(),
        WatchLine::Event(WatchEvent {
            event: WatchEventKind::Delete,
            index: 7,
            ..
        })
    ));
    let e = w.next_line().unwrap_err();
    assert!(
        matches!(&e, ClientError::Unavailable { kind: UnavailableKind::Unreachable, message, .. } if message.contains("closed")),
        "{e:?}"
    );
    let req = h.join().unwrap();
    let line = req.lines().next().unwrap();
    assert!(line.starts_with("GET /v1/watch?"), "{line}");
    assert!(
        line.contains("prefix=a%2Fb") && line.contains("from_index=5"),
        "{line}"
    );
}

#[test]
fn a_silent_watch_is_a_lost_connection_after_the_bound() {
    let (addr, _h) = serve_watch("", true);
    let mut w = client(&[&addr])
        .watch(WatchTarget::Key("k"), None, Duration::from_millis(300))
        .unwrap();
    let start = Instant::now();
    let e = w.next_line().unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(
            &e,
            ClientError::Unavailable {
                kind: UnavailableKind::TimedOut,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn a_compacted_watch_is_final_and_says_so() {
    let (a, _ha) = serve_once(
        410,
        r#"{"error":"compacted","message":"events before index 9 are no longer kept"}"#,
    );
    let b = dead_addr();
    let e = client(&[&a, &b])
        .watch(WatchTarget::Key("k"), Some(1), Duration::from_secs(1))
        .unwrap_err();
    assert!(e.is_compacted(), "{e:?}");
    assert!(e.to_string().contains("index 9"), "{e}");
    assert_eq!(e.exit_code(), 1);
}

#[test]
fn a_watch_fails_over_to_a_live_endpoint() {
    let dead = dead_addr();
    let (addr, _h) = serve_watch("", false);
    let w = client(&[&dead, &addr])
        .watch(WatchTarget::Key("k"), None, Duration::from_secs(1))
        .unwrap();
    assert_eq!(w.endpoint(), addr);
}

#[test]
fn digest_and_transfer_send_their_parameters() {
    let (addr, h) = serve_once(
        200,
        r#"{"endpoint":"n1","index":17,"digest":"8149f5acd8c9be35","applied_index":18,"datums":2}"#,
    );
    let d = client(&[]).digest_of(&addr, Some(17)).unwrap();
    assert_eq!(
        (d.index, d.digest.as_str(), d.datums),
        (17, "8149f5acd8c9be35", 2)
    );
    assert!(h.join().unwrap().starts_with("GET /v1/digest?index=17 "));

    let (addr, h) = serve_once(200, r#"{"from":"n1","to":"n2:1"}"#);
    let t = client(&[]).transfer_leader_at(&addr, Some("n2:1")).unwrap();
    assert_eq!(t.to, "n2:1");
    assert!(h
        .join()
        .unwrap()
        .starts_with("POST /v1/transfer-leader?to=n2%3A1 "));
}

#[test]
fn the_nacos_leader_string_is_decoded() {
    // The RaftPeer JSON, as a string inside the JSON answer.
    const BODY: &str = r#"{"leader":"{\"ip\":\"n1:8848\",\"voteFor\":\"n1:8848\",\"term\":3,\"leaderDueMs\":100,\"heartbeatDueMs\":50,\"state\":\"LEADER\"}"}"#;
    let (addr, _h) = serve_once(200, BODY);
    let l = client(&[]).nacos_leader_of(&addr).unwrap().unwrap();
    assert_eq!(
        (l.ip.as_str(), l.term, l.state),
        ("n1:8848", 3, Role::Leader)
    );
    assert_eq!(l.vote_for.as_deref(), Some("n1:8848"));

    let (addr, _h) = serve_once(200, r#"{"leader":"null"}"#);
    assert_eq!(client(&[]).nacos_leader_of(&addr).unwrap(), None);

    let (addr, _h) = serve_once(200, r#"{"leader":{"ip":"n1"}}"#);
    let e = client(&[]).nacos_leader_of(&addr).unwrap_err();
    assert!(matches!(e, ClientError::BadResponse { .. }), "{e:?}");
}

#[test]
fn urls_and_names() {
    assert_eq!(base_url("127.0.0.1:8848"), "http://127.0.0.1:8848");
    assert_eq!(base_url("http://h:1/"), "http://h:1");
    assert_eq!(display_name("http://h:1/"), "h:1");
    assert_eq!(fmt_duration(Duration::from_millis(500)), "500ms");
    assert_eq!(fmt_duration(Duration::from_secs(5)), "5s");
    assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
}
