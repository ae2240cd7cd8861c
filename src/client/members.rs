//! Membership for `nacosctl member`: the configuration with each member's progress (from the
//! leader, the only one that knows it), and changes sent to the leader wherever it is.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Attempt, Client, ClientError, Req};
use crate::wire::api::{MemberChange, MemberRequest, Members};

const MEMBERS_PATH: &str = "/v1/members";
const PROMOTE_PATH: &str = "/v1/members/promote";

impl Client {
    /// `GET /v1/members`: from the leader when one is known (with each member's match and
    /// lag), else the first member's view (statuses `unknown`).
    pub fn members(&self) -> Result<Members, ClientError> {
        let first: Members = self.call(
            &Req {
                method: "GET",
                path: MEMBERS_PATH,
                query: vec![],
                body: None,
                idempotent: true,
                request_id: None,
                key: None,
            },
            |m: &Members| m.from_leader,
        )?;
        if first.from_leader {
            return Ok(first);
        }
        match &first.leader {
            Some(leader) => Ok(self.call_one(leader, MEMBERS_PATH).unwrap_or(first)),
            None => Ok(first),
        }
    }

    /// `GET /v1/members` of one endpoint, without failover.
    pub fn members_of(&self, endpoint: &str) -> Result<Members, ClientError> {
        self.call_one(endpoint, MEMBERS_PATH)
    }

    /// Adds `addr` as a learner; the leader promotes it once caught up unless `learner`.
    pub fn add_member(&self, addr: &str, learner: bool) -> Result<MemberChange, ClientError> {
        let body = MemberRequest {
            addr: addr.to_string(),
            learner,
        };
        self.at_leader("POST", MEMBERS_PATH, vec![], Some(to_json(&body)))
    }

    /// Makes the learner `addr` a voter.
    pub fn promote_member(&self, addr: &str) -> Result<MemberChange, ClientError> {
        let body = MemberRequest {
            addr: addr.to_string(),
            learner: false,
        };
        self.at_leader("POST", PROMOTE_PATH, vec![], Some(to_json(&body)))
    }

    /// Removes `addr` (a voter or a learner, the leader too).
    pub fn remove_member(&self, addr: &str) -> Result<MemberChange, ClientError> {
        self.at_leader("DELETE", MEMBERS_PATH, vec![("addr", addr)], None)
    }

    /// Sends a configuration change to the leader, found through the endpoints and then
    /// followed wherever it moves, until the deadline. A change is safe to send again: the
    /// leader appends nothing for one already in force.
    fn at_leader(
        &self,
        method: &'static str,
        path: &'static str,
        query: Vec<(&'static str, &str)>,
        body: Option<Value>,
    ) -> Result<MemberChange, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let req = Req {
            method,
            path,
            query,
            body,
            idempotent: true,
            request_id: None,
            key: None,
        };
        let mut hint: Option<String> = None;
        let mut last_err = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let leader = match hint.take() {
                Some(l) => Some(l),
                None => match self.with_timeout(remaining).leader() {
                    Ok(info) => info.leader,
                    Err(e) => {
                        last_err = Some(e);
                        None
                    }
                },
            };
            if let Some(leader) = leader {
                let remaining = deadline.saturating_duration_since(Instant::now());
                match self.attempt::<MemberChange>(&self.unpooled, &leader, &req, remaining) {
                    Attempt::Done(v) => return Ok(v),
                    Attempt::Fail(e) => return Err(e),
                    Attempt::Next(e) => {
                        if let ClientError::Unavailable {
                            leader: Some(l), ..
                        } = &e
                        {
                            hint = Some(l.clone());
                        }
                        last_err = Some(e);
                    }
                }
            }
            // Leadership moves in a few heartbeats; do not spin meanwhile.
            std::thread::sleep(
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            );
        }
        Err(last_err.unwrap_or_else(|| ClientError::Unavailable {
            endpoint: self.endpoints.join(","),
            kind: super::UnavailableKind::NoLeader,
            message: format!(
                "no leader answered within {}",
                super::fmt_duration(self.timeout)
            ),
            leader: None,
        }))
    }
}

fn to_json(r: &MemberRequest) -> Value {
    serde_json::to_value(r).expect("a member request serialises")
}
