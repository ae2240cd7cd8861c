//! The server's limit on headers per request, at, below and above the number of header
//! slots it keeps on the stack: every limit is the one enforced, whichever storage holds
//! the slots.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use nacos_raft::http::server::{Handler, Head, Limits, Reply, Server};
use nacos_raft::http::Response;

/// Answers with the number of headers it was given.
struct CountHeaders;

impl Handler for CountHeaders {
    fn admit(&self, _head: &Head) -> Result<usize, Response> {
        Ok(0)
    }
    fn handle(&self, head: Head, _body: Vec<u8>) -> Reply {
        let n = head.headers.len().to_string();
        Reply::Full(Response::typed(200, "text/plain", n.into_bytes()))
    }
}

/// Sends a request with `extra` headers besides `Host` and `Connection`; returns the
/// status and the body.
fn send_with_headers(port: u16, extra: usize) -> (u16, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let many: String = (0..extra).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{many}\r\n");
    conn.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn server_with_max_headers(max_headers: usize) -> (Server, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let limits = Limits {
        max_headers,
        ..Limits::default()
    };
    let server = Server::start(listener, limits, Arc::new(CountHeaders), None).unwrap();
    (server, port)
}

#[test]
fn the_header_limit_holds_below_at_and_above_the_slots_on_the_stack() {
    // 2 headers (Host, Connection) plus `extra`.
    for (max_headers, fits, over) in [(8, 6, 7), (64, 62, 63), (100, 98, 99)] {
        let (server, port) = server_with_max_headers(max_headers);
        let (status, body) = send_with_headers(port, fits);
        assert_eq!(status, 200, "{max_headers} headers allowed: {body}");
        assert_eq!(
            body,
            max_headers.to_string(),
            "every header reached the handler"
        );
        let (status, body) = send_with_headers(port, over);
        assert_eq!(
            status, 431,
            "{max_headers} headers allowed, one more sent: {body}"
        );
        server.stop();
    }
}
