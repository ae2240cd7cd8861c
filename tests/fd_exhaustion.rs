//! The HTTP accept loop out of file descriptors and back: in a test binary of its own,
//! because it lowers its own open-file limit and fills it, which would starve any test
//! running beside it.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nacos_raft::http::server::{Handler, Head, Limits, Reply, Server};
use nacos_raft::http::Response;

struct Ok200;

impl Handler for Ok200 {
    fn admit(&self, _head: &Head) -> Result<usize, Response> {
        Ok(0)
    }
    fn handle(&self, _head: Head, _body: Vec<u8>) -> Reply {
        Reply::Full(Response::typed(200, "text/plain", b"ok".to_vec()))
    }
}

fn set_soft_limit(n: u64) {
    // SAFETY: getrlimit/setrlimit on a stack struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = n.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

/// An unconnected TCP socket: made before the descriptors run out, connected after, so that
/// the connection waits in the listener's queue for an accept that cannot get a descriptor.
fn tcp_socket() -> RawFd {
    // SAFETY: a plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    fd
}

fn connect(fd: RawFd, port: u16) -> std::io::Result<()> {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is a valid sockaddr_in for the length given; `fd` is a socket we own.
    let rc = unsafe {
        libc::connect(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn accept_survives_running_out_of_file_descriptors_and_serves_again() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let limits = Limits {
        max_connections: 1000,
        ..Limits::default()
    };
    let server = Server::start(listener, limits, Arc::new(Ok200), None).unwrap();
    let waiting = tcp_socket();

    // Take every descriptor left under a low limit.
    set_soft_limit(open_fds() + 32);
    let mut fillers = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
    }
    assert!(
        !fillers.is_empty(),
        "nothing left to fill: the limit is off"
    );

    // The connection completes in the kernel's queue, but nothing can serve it: accept has
    // no descriptor for it (or, should one free up for a moment, the connection none for its
    // work, and it is closed). Either way no answer comes while the descriptors are gone.
    connect(waiting, port).unwrap();
    // SAFETY: `waiting` is a connected socket owned by nothing else from here on.
    let mut stream = unsafe { std::net::TcpStream::from_raw_fd(waiting) };
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!(
            "an answer with no descriptor free: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
    drop(stream);

    // Descriptors come back: the accept loop must notice by itself and serve again.
    drop(fillers);
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            last = String::from_utf8_lossy(&answer).into_owned();
            if last.starts_with("HTTP/1.1 200") && last.ends_with("ok") {
                server.stop();
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not served again within 10 s of the descriptors coming back; last answer: {last:?}");
}
