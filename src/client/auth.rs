//! The client's side of access control: logging in, the token every request then carries,
//! and the administration calls (users, roles, grants, on/off).
//!
//! Administrative changes are made by the leader only; a follower answers `not_leader`
//! naming it, and these calls follow that name once.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::{Attempt, Client, ClientError, Req, UnavailableKind};
use crate::wire::auth::{AuthChanged, AuthStatus, LoginResult, Perm, RoleInfo, UserInfo};

impl Client {
    /// Sends `token` with every later request of this client and its clones (`None`:
    /// none).
    pub fn set_token(&self, token: Option<String>) {
        *self.token.write().expect("token lock") = token;
    }

    /// The `Authorization` header's value, when logged in.
    pub(super) fn bearer(&self) -> Option<String> {
        self.token
            .read()
            .expect("token lock")
            .as_ref()
            .map(|t| format!("Bearer {t}"))
    }

    /// `POST /v1/auth/login`: checks the password and answers a token (it does not keep
    /// it: see [`Client::set_token`]). While access control is off the cluster answers
    /// `409 auth_disabled`.
    pub fn login(&self, user: &str, password: &str) -> Result<LoginResult, ClientError> {
        self.call(
            &Req {
                method: "POST",
                path: "/v1/auth/login",
                query: vec![],
                body: Some(json!({"user": user, "password": password})),
                // A login changes nothing.
                idempotent: true,
                request_id: None,
                key: None,
            },
            |_: &LoginResult| true,
        )
    }

    /// `GET /v1/auth/status`.
    pub fn auth_status(&self) -> Result<AuthStatus, ClientError> {
        self.admin_read("/v1/auth/status")
    }

    pub fn user_list(&self) -> Result<Vec<UserInfo>, ClientError> {
        self.admin_read("/v1/auth/users")
    }

    pub fn role_list(&self) -> Result<Vec<RoleInfo>, ClientError> {
        self.admin_read("/v1/auth/roles")
    }

    pub fn auth_enable(&self) -> Result<AuthChanged, ClientError> {
        self.admin_change("POST", "/v1/auth/enable", vec![], None)
    }

    pub fn auth_disable(&self) -> Result<AuthChanged, ClientError> {
        self.admin_change("POST", "/v1/auth/disable", vec![], None)
    }

    pub fn user_add(&self, name: &str, password: &str) -> Result<AuthChanged, ClientError> {
        let body = json!({"name": name, "password": password});
        self.admin_change("POST", "/v1/auth/users", vec![], Some(body))
    }

    pub fn user_delete(&self, name: &str) -> Result<AuthChanged, ClientError> {
        self.admin_change("DELETE", "/v1/auth/users", vec![("name", name)], None)
    }

    pub fn user_password(&self, name: &str, password: &str) -> Result<AuthChanged, ClientError> {
        let body = json!({"name": name, "password": password});
        self.admin_change("POST", "/v1/auth/users/password", vec![], Some(body))
    }

    pub fn user_grant_role(&self, name: &str, role: &str) -> Result<AuthChanged, ClientError> {
        let body = json!({"name": name, "role": role});
        self.admin_change("POST", "/v1/auth/users/roles", vec![], Some(body))
    }

    pub fn user_revoke_role(&self, name: &str, role: &str) -> Result<AuthChanged, ClientError> {
        let query = vec![("name", name), ("role", role)];
        self.admin_change("DELETE", "/v1/auth/users/roles", query, None)
    }

    pub fn role_add(&self, name: &str) -> Result<AuthChanged, ClientError> {
        self.admin_change(
            "POST",
            "/v1/auth/roles",
            vec![],
            Some(json!({"name": name})),
        )
    }

    pub fn role_delete(&self, name: &str) -> Result<AuthChanged, ClientError> {
        self.admin_change("DELETE", "/v1/auth/roles", vec![("name", name)], None)
    }

    pub fn role_grant(
        &self,
        name: &str,
        prefix: &str,
        perm: Perm,
    ) -> Result<AuthChanged, ClientError> {
        let body = json!({"name": name, "prefix": prefix, "perm": perm});
        self.admin_change("POST", "/v1/auth/roles/grants", vec![], Some(body))
    }

    pub fn role_revoke(&self, name: &str, prefix: &str) -> Result<AuthChanged, ClientError> {
        let query = vec![("name", name), ("prefix", prefix)];
        self.admin_change("DELETE", "/v1/auth/roles/grants", query, None)
    }

    fn admin_read<T: DeserializeOwned>(&self, path: &'static str) -> Result<T, ClientError> {
        self.call(
            &Req {
                method: "GET",
                path,
                query: vec![],
                body: None,
                idempotent: true,
                request_id: None,
                key: None,
            },
            |_: &T| true,
        )
    }

    /// A change, sent to the members in turn (a follower answers `not_leader`), then once
    /// to the leader a follower named if none of them was it. Not sent again after a lost
    /// connection: a repeated change (a user added twice) would be refused as a conflict.
    fn admin_change<T: DeserializeOwned>(
        &self,
        method: &'static str,
        path: &'static str,
        query: Vec<(&'static str, &str)>,
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        let req = Req {
            method,
            path,
            query,
            body,
            idempotent: false,
            request_id: None,
            key: None,
        };
        match self.call(&req, |_: &T| true) {
            Err(ClientError::Unavailable {
                kind: UnavailableKind::NotLeader,
                leader: Some(leader),
                ..
            }) if !self
                .endpoints
                .iter()
                .any(|e| super::display_name(e) == leader) =>
            {
                match self.attempt(&self.agent, &leader, &req, self.timeout) {
                    Attempt::Done(v) => Ok(v),
                    Attempt::Fail(e) | Attempt::Next(e) => Err(e),
                }
            }
            other => other,
        }
    }
}
