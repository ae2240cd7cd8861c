//! Access control on the client API: who sends a request (its token), the checks the
//! routes make, and the login and administration routes (`/v1/auth/...`, and Nacos's
//! `/nacos/v1/auth/users/login`).
//!
//! What a token or a permission means is `crate::auth`'s; this module only maps requests to
//! those questions and the answers to responses.

use std::sync::{Condvar, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{Request, Response};
use crate::auth::{self, Access, AuthChange, ROOT};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::wire::auth::{
    AuthChanged, AuthStatus, GrantRequest, LoginRequest, LoginResult, NacosLoginResult, RoleInfo,
    RoleRequest, UserInfo, UserRequest, UserRoleRequest,
};

/// Who sent a request: `None` while access control is off (everyone may do everything).
#[derive(Debug, Clone)]
pub(super) struct Caller(Option<String>);

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs an access-control judgement, and once more after this member has caught up with
/// the leader if it refused: a change made through another member a moment ago (a new
/// user, a grant, access control turned off) then counts here too. Only refusals pay for
/// the round, and they are rare; the round is bounded by a second, so that without a
/// leader a refusal is still quick. (A revoked permission takes effect on each member as
/// it applies the revocation; writes are judged once more when they apply.)
fn judged<T>(node: &Node, deadline: Instant, judge: impl Fn() -> Result<T>) -> Result<T> {
    match judge() {
        Err(e @ (Error::Unauthenticated(_) | Error::PermissionDenied(_))) => {
            let catch_up = deadline.min(Instant::now() + std::time::Duration::from_secs(1));
            match node.linearizable_barrier(catch_up) {
                Ok(()) => judge(),
                Err(_) => Err(e),
            }
        }
        other => other,
    }
}

/// The caller of a request: with access control on, the user its token was issued to; no
/// token, or one that is not valid now, is `Error::Unauthenticated`.
pub(super) fn caller(node: &Node, req: &Request, deadline: Instant) -> Result<Caller> {
    judged(node, deadline, || {
        let auth = node.datums().auth();
        if !auth.enabled() {
            return Ok(Caller(None));
        }
        let Some(token) = req.access_token.as_deref() else {
            return Err(Error::Unauthenticated(
                "access control is on and the request has no token: log in (POST /v1/auth/login, or nacosctl --user NAME) and send Authorization: Bearer <token>".into(),
            ));
        };
        Ok(Caller(Some(auth.authenticate(token, now_s())?)))
    })
}

impl Caller {
    /// Refused unless the caller may `access` `key`.
    pub(super) fn check(
        &self,
        node: &Node,
        access: Access,
        key: &str,
        deadline: Instant,
    ) -> Result<()> {
        match &self.0 {
            None => Ok(()),
            Some(user) => judged(node, deadline, || {
                Ok(node.datums().auth().check(user, access, key)?)
            }),
        }
    }

    /// Whether the caller may read `key` (lists and watches skip what it may not). A
    /// caller let in while access control was off may read nothing once it is on (a watch
    /// opened before `auth enable` sees no further event).
    pub(super) fn may_read(&self, node: &Node, key: &str) -> bool {
        let auth = node.datums().auth();
        match &self.0 {
            None => !auth.enabled(),
            Some(user) => auth.may(user, Access::Read, key),
        }
    }

    /// A caller let in while access control was off, now that it is on: its watch ends,
    /// and a new one needs a login.
    pub(super) fn shut_out(&self, node: &Node) -> bool {
        self.0.is_none() && node.datums().auth().enabled()
    }

    /// Refused unless the caller is `root` (or access control is off).
    pub(super) fn check_root(&self, node: &Node, what: &str) -> Result<()> {
        match &self.0 {
            None => Ok(()),
            // Being root does not depend on the table: nothing to catch up on.
            Some(user) => Ok(node.datums().auth().check_root(user, what)?),
        }
    }

    pub(super) fn user(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// Password checks and hashes running at once. Each argon2 run takes 19 MiB and tens of
/// milliseconds of a core: a flood of logins must not take the member's memory or CPU.
const MAX_PASSWORD_WORK: usize = 2;

struct Permits {
    used: Mutex<usize>,
    freed: Condvar,
}

static PASSWORD_WORK: Permits = Permits {
    used: Mutex::new(0),
    freed: Condvar::new(),
};

/// Runs `work` once a password permit is free, or answers `busy` at the deadline.
fn with_password_permit<T>(deadline: Instant, work: impl FnOnce() -> T) -> Result<T> {
    {
        let mut used = PASSWORD_WORK.used.lock().expect("permits lock");
        while *used >= MAX_PASSWORD_WORK {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Busy(
                    "too many logins at once on this member; try again".into(),
                ));
            }
            used = PASSWORD_WORK
                .freed
                .wait_timeout(used, left)
                .expect("permits lock")
                .0;
        }
        *used += 1;
    }
    let out = work();
    *PASSWORD_WORK.used.lock().expect("permits lock") -= 1;
    PASSWORD_WORK.freed.notify_one();
    Ok(out)
}

fn check_password_length(password: &str) -> Result<()> {
    if password.is_empty() || password.len() > auth::MAX_PASSWORD {
        return Err(Error::BadRequest(format!(
            "a password is 1 to {} bytes",
            auth::MAX_PASSWORD
        )));
    }
    Ok(())
}

/// Checks a user's password and issues a token: `(token, ttl_s)`.
fn login(node: &Node, user: &str, password: &str, deadline: Instant) -> Result<(String, u64)> {
    check_password_length(password)?;
    // A user added through another member a moment ago is known here.
    node.linearizable_barrier(deadline)?;
    let (enabled, found) = {
        let a = node.datums().auth();
        (a.enabled(), a.password_of(user))
    };
    if !enabled {
        return Err(Error::AuthDisabled);
    }
    with_password_permit(deadline, || auth::check_password(found.as_ref(), password))??;
    let ttl = node.config().auth_token_ttl_s;
    let password_index = found.map_or(0, |(_, i)| i);
    let token = node
        .datums()
        .auth()
        .issue_token(user, password_index, now_s(), ttl)
        .ok_or_else(|| {
            Error::Unauthenticated(
                "the user's password or access control changed during the login; log in again"
                    .into(),
            )
        })?;
    Ok((token, ttl))
}

fn json_body<T: serde::de::DeserializeOwned>(req: &Request, shape: &str) -> Result<T> {
    serde_json::from_slice(&req.body)
        .map_err(|e| Error::BadRequest(format!("the body must be JSON {shape}: {e}")))
}

/// The access-control routes; `None` when the path is not one of them.
pub(super) fn route(node: &Node, req: &Request, deadline: Instant) -> Option<Result<Response>> {
    let route: fn(&Node, &Request, Instant) -> Result<Response> =
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/v1/auth/login") => login_route,
            ("POST", "/nacos/v1/auth/users/login") | ("POST", "/nacos/v1/auth/login") => {
                nacos_login
            }
            ("GET", "/v1/auth/status") => status,
            ("POST", "/v1/auth/enable") => enable,
            ("POST", "/v1/auth/disable") => {
                |node, req, deadline| admin_change(node, req, deadline, AuthChange::Disable)
            }
            ("GET", "/v1/auth/users") => list_users,
            ("POST", "/v1/auth/users") => add_user,
            ("DELETE", "/v1/auth/users") => |node, req, deadline| {
                let name = req.required("name")?.to_string();
                admin_change(node, req, deadline, AuthChange::UserDelete { name })
            },
            ("POST", "/v1/auth/users/password") => change_password,
            ("POST", "/v1/auth/users/roles") => |node, req, deadline| {
                let b: UserRoleRequest = json_body(req, r#"{"name": "...", "role": "..."}"#)?;
                let change = AuthChange::UserGrantRole {
                    name: b.name,
                    role: b.role,
                };
                admin_change(node, req, deadline, change)
            },
            ("DELETE", "/v1/auth/users/roles") => |node, req, deadline| {
                let name = req.required("name")?.to_string();
                let role = req.required("role")?.to_string();
                admin_change(
                    node,
                    req,
                    deadline,
                    AuthChange::UserRevokeRole { name, role },
                )
            },
            ("GET", "/v1/auth/roles") => list_roles,
            ("POST", "/v1/auth/roles") => |node, req, deadline| {
                let b: RoleRequest = json_body(req, r#"{"name": "..."}"#)?;
                auth::validate_name("role", &b.name).map_err(Error::BadRequest)?;
                admin_change(node, req, deadline, AuthChange::RoleAdd { name: b.name })
            },
            ("DELETE", "/v1/auth/roles") => |node, req, deadline| {
                let name = req.required("name")?.to_string();
                admin_change(node, req, deadline, AuthChange::RoleDelete { name })
            },
            ("POST", "/v1/auth/roles/grants") => |node, req, deadline| {
                let b: GrantRequest = json_body(
                    req,
                    r#"{"name": "...", "prefix": "...", "perm": "read|write|readwrite"}"#,
                )?;
                let change = AuthChange::RoleGrant {
                    name: b.name,
                    prefix: b.prefix,
                    perm: b.perm,
                };
                admin_change(node, req, deadline, change)
            },
            ("DELETE", "/v1/auth/roles/grants") => |node, req, deadline| {
                let name = req.required("name")?.to_string();
                let prefix = req.param("prefix").unwrap_or("").to_string();
                admin_change(node, req, deadline, AuthChange::RoleRevoke { name, prefix })
            },
            _ => return None,
        };
    Some(route(node, req, deadline))
}

fn login_route(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let b: LoginRequest = json_body(req, r#"{"user": "...", "password": "..."}"#)?;
    let (token, ttl_s) = login(node, &b.user, &b.password, deadline)?;
    Ok(Response::json(200, &LoginResult { token, ttl_s }))
}

/// Whether access control is on (linearizable unless `stale`: it may have just changed
/// through another member).
fn status(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    if !req.flag("stale") {
        node.linearizable_barrier(deadline)?;
    }
    let a = node.datums().auth();
    Ok(Response::json(
        200,
        &AuthStatus {
            enabled: a.enabled(),
            users: a.users().count() as u64,
            roles: a.roles().count() as u64,
        },
    ))
}

fn enable(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let token_key = auth::new_token_key().map_err(Error::BadRequest)?;
    admin_change(node, req, deadline, AuthChange::Enable { token_key })
}

fn add_user(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let b: UserRequest = json_body(req, r#"{"name": "...", "password": "..."}"#)?;
    auth::validate_name("user", &b.name).map_err(Error::BadRequest)?;
    check_password_length(&b.password)?;
    // Refused before the slow hash when the caller may not, or when the leader is
    // elsewhere (the client sends it there).
    caller(node, req, deadline)?.check_root(node, "adding a user")?;
    leading(node, deadline)?;
    let hash = hash(&b.password, deadline)?;
    admin_change(
        node,
        req,
        deadline,
        AuthChange::UserAdd { name: b.name, hash },
    )
}

/// A user may change their own password; anyone else's needs root.
fn change_password(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let b: UserRequest = json_body(req, r#"{"name": "...", "password": "..."}"#)?;
    auth::validate_name("user", &b.name).map_err(Error::BadRequest)?;
    check_password_length(&b.password)?;
    let who = caller(node, req, deadline)?;
    if who.user() != Some(b.name.as_str()) {
        who.check_root(node, "changing another user's password")?;
    }
    leading(node, deadline)?;
    let hash = hash(&b.password, deadline)?;
    propose_change(
        node,
        deadline,
        AuthChange::UserPassword { name: b.name, hash },
    )
}

fn hash(password: &str, deadline: Instant) -> Result<String> {
    with_password_permit(deadline, || auth::hash_password(password))?.map_err(Error::BadRequest)
}

/// An administrative change: only `root` may make it while access control is on.
fn admin_change(
    node: &Node,
    req: &Request,
    deadline: Instant,
    change: AuthChange,
) -> Result<Response> {
    let what = match &change {
        AuthChange::Enable { .. } => "turning access control on",
        AuthChange::Disable => "turning access control off",
        _ => "managing users and roles",
    };
    caller(node, req, deadline)?.check_root(node, what)?;
    propose_change(node, deadline, change)
}

/// Logs a change through the leader. Only the leader proposes: a follower answers
/// `not_leader` naming it, and clients send the change there (the password was hashed
/// where it arrived, so the plain text never travels further).
fn propose_change(node: &Node, deadline: Instant, change: AuthChange) -> Result<Response> {
    change.validate().map_err(Error::BadRequest)?;
    leading(node, deadline)?;
    let at = node.change_auth(change, deadline)?;
    Ok(Response::json(
        200,
        &AuthChanged {
            term: at.term,
            index: at.index,
        },
    ))
}

/// `not_leader` (naming the leader) unless this member leads.
pub(super) fn leading(node: &Node, deadline: Instant) -> Result<()> {
    let leader = node.wait_for_leader(deadline).ok_or(Error::NoLeader {
        waited_ms: node.config().publish_timeout_ms,
    })?;
    if leader != node.config().advertise {
        return Err(Error::NotLeader {
            leader: Some(leader.0),
        });
    }
    Ok(())
}

fn list_users(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    caller(node, req, deadline)?.check_root(node, "listing users")?;
    if !req.flag("stale") {
        node.linearizable_barrier(deadline)?;
    }
    let users: Vec<UserInfo> = node
        .datums()
        .auth()
        .users()
        .map(|u| UserInfo {
            name: u.name.clone(),
            roles: u.roles.iter().cloned().collect(),
        })
        .collect();
    Ok(Response::json(200, &users))
}

fn list_roles(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    caller(node, req, deadline)?.check_root(node, "listing roles")?;
    if !req.flag("stale") {
        node.linearizable_barrier(deadline)?;
    }
    let roles: Vec<RoleInfo> = node
        .datums()
        .auth()
        .roles()
        .map(|r| RoleInfo {
            name: r.name.clone(),
            grants: r.grants.clone(),
        })
        .collect();
    Ok(Response::json(200, &roles))
}

/// Nacos 1.x's login: `username` and `password` as form fields (or query parameters),
/// answered with Nacos's `{"accessToken", "tokenTtl", "globalAdmin"}`.
fn nacos_login(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let form: Vec<(String, String)> = form_urlencoded::parse(&req.body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| req.param(name).map(str::to_string))
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "the form field `{name}` is required (username, password)"
                ))
            })
    };
    let user = field("username")?;
    let password = field("password")?;
    let (token, ttl) = login(node, &user, &password, deadline)?;
    Ok(Response::json(
        200,
        &NacosLoginResult {
            access_token: token,
            token_ttl: ttl,
            global_admin: user == ROOT,
        },
    ))
}
