//! The access-control bodies: login, tokens, users, roles and grants (docs/http-api.md,
//! "Access control"), and the Nacos 1.x login answer.

use serde::{Deserialize, Serialize};

pub use crate::auth::{Grant, Perm};

/// `POST /v1/auth/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
}

/// Answer to `POST /v1/auth/login`: send `Authorization: Bearer <token>` with requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResult {
    pub token: String,
    pub ttl_s: u64,
}

/// Answer to `POST /nacos/v1/auth/users/login`, as Nacos 1.x sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NacosLoginResult {
    pub access_token: String,
    pub token_ttl: u64,
    pub global_admin: bool,
}

/// Answer to `GET /v1/auth/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthStatus {
    pub enabled: bool,
    pub users: u64,
    pub roles: u64,
}

/// `POST /v1/auth/users` (add) and `POST /v1/auth/users/password` (change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    pub name: String,
    pub password: String,
}

/// `POST /v1/auth/users/roles`: give a user a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRoleRequest {
    pub name: String,
    pub role: String,
}

/// `POST /v1/auth/roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    pub name: String,
}

/// `POST /v1/auth/roles/grants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub name: String,
    pub prefix: String,
    pub perm: Perm,
}

/// One user in `GET /v1/auth/users` (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub roles: Vec<String>,
}

/// One role in `GET /v1/auth/roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleInfo {
    pub name: String,
    pub grants: Vec<Grant>,
}

/// Answer to every access-control change: where it was logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthChanged {
    pub term: u64,
    pub index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_are_pinned() {
        let l = NacosLoginResult {
            access_token: "t".into(),
            token_ttl: 18000,
            global_admin: true,
        };
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            json!({"accessToken": "t", "tokenTtl": 18000, "globalAdmin": true})
        );
        let g: GrantRequest =
            serde_json::from_value(json!({"name": "r", "prefix": "a/", "perm": "readwrite"}))
                .unwrap();
        assert_eq!(g.perm, Perm::Readwrite);
        assert!(serde_json::from_value::<LoginRequest>(
            json!({"user": "u", "password": "p", "extra": 1})
        )
        .is_err());
        assert_eq!(
            serde_json::to_value(RoleInfo {
                name: "r".into(),
                grants: vec![Grant {
                    prefix: "".into(),
                    perm: Perm::Read
                }]
            })
            .unwrap(),
            json!({"name": "r", "grants": [{"prefix": "", "perm": "read"}]})
        );
    }
}
