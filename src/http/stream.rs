//! A connection's byte stream for the HTTP server: plain TCP, or TLS (rustls) over it,
//! with the few socket operations the server needs on either.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A connection's bytes: plain TCP, or TLS over it.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Stream {
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    pub(super) fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(d)
    }

    pub(super) fn peer_verified(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            // rustls only keeps certificates its verifier accepted.
            Stream::Tls(s) => s.conn.peer_certificates().is_some_and(|c| !c.is_empty()),
        }
    }

    /// Ends the write side: TLS's close_notify first, so the client knows the answer is
    /// whole, then the TCP FIN.
    pub(super) fn shutdown_write(&mut self) {
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        let _ = self.tcp().shutdown(std::net::Shutdown::Write);
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}
