//! Request-id sessions for writes that are not in flight: the client's, and a follower's
//! when it forwards a write that came without one.
//!
//! The cluster's session table keeps, per client id, the newest request applied, and refuses
//! an older one. So a session may have at most one write outstanding: a write takes a session
//! (or makes one), sends under its next seq, and gives it back when it is answered or given
//! up. Many threads therefore share one pool, and the sessions number at most the writes that
//! were ever in flight at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Numbers the sessions of every pool of this process, so their ids differ.
static SESSION_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub struct SessionPool {
    /// The base of this pool's session ids (random per pool).
    base: String,
    idle: Mutex<Vec<(String, u64)>>,
}

impl Default for SessionPool {
    fn default() -> SessionPool {
        SessionPool::new()
    }
}

impl SessionPool {
    pub fn new() -> SessionPool {
        SessionPool {
            base: random_client_id(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A session no other write is using, at its next seq. Given back when dropped.
    pub fn take(&self) -> Lease<'_> {
        let (session, seq) = match self.idle.lock().expect("session pool lock").pop() {
            Some((s, last)) => (s, last + 1),
            None => {
                let n = SESSION_COUNTER.fetch_add(1, Ordering::Relaxed);
                (format!("{}-{n}", self.base), 1)
            }
        };
        Lease {
            pool: self,
            session,
            seq,
        }
    }
}

/// One write's request id. Sending the write again must reuse it; dropping the lease gives
/// the session back.
#[derive(Debug)]
pub struct Lease<'a> {
    pool: &'a SessionPool,
    session: String,
    seq: u64,
}

impl Lease<'_> {
    /// The `X-Request-Id` value, `<client>:<seq>`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.session, self.seq)
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // Back to the pool whatever happened: the next write of the session gets a higher
        // seq, and a late copy of this one is then never applied (the cluster refuses a
        // request older than its client's newest).
        let session = std::mem::take(&mut self.session);
        if let Ok(mut idle) = self.pool.idle.lock() {
            idle.push((session, self.seq));
        }
    }
}

/// A client id unlikely to meet another's: 16 hex digits from the system's randomness
/// (falling back to the time and the process id), so that two processes never share
/// sessions.
fn random_client_id() -> String {
    let mut bytes = [0u8; 8];
    let from_os = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    let n = if from_os {
        u64::from_le_bytes(bytes)
    } else {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ (u64::from(std::process::id()) << 32)
    };
    format!("{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_reused_at_its_next_seq_and_never_shared_while_leased() {
        let pool = SessionPool::new();
        let a = pool.take();
        let b = pool.take();
        let (a_id, b_id) = (a.id(), b.id());
        assert_ne!(
            a_id.rsplit_once(':').unwrap().0,
            b_id.rsplit_once(':').unwrap().0
        );
        assert!(a_id.ends_with(":1") && b_id.ends_with(":1"));
        drop(a);
        let again = pool.take();
        let (session, seq) = again
            .id()
            .rsplit_once(':')
            .map(|(s, q)| (s.to_string(), q.to_string()))
            .unwrap();
        assert_eq!(session, a_id.rsplit_once(':').unwrap().0);
        assert_eq!(seq, "2");
        // Every id parses as the cluster expects.
        crate::raft::RequestId::parse(&again.id()).unwrap();
    }
}
