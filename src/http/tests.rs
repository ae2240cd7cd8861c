//! Tests of the HTTP layer that need no socket.

use super::*;

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
        "/v1/status",
        "/v1/health",
    ] {
        assert!(!is_client_request(p), "{p}");
    }
}
