//! Access control: users, roles and the key-prefix permissions roles grant, replicated
//! through the log like datums; password hashes; and the signed tokens requests carry.
//!
//! Owns what a change does to the table and what the table allows. Nothing here does I/O:
//! the datum set applies [`AuthChange`]s in log order and keeps the table beside the
//! client sessions (in checkpoints and snapshots, exact at the same index), and the HTTP
//! layer asks [`AuthTable::authenticate`] and [`AuthTable::may`] for every client request.
//!
//! A changed password or a deleted user invalidates that user's tokens on each member as
//! soon as the member applies the change: a token names the log index of the password it
//! was issued for. Turning access control off and on again changes the signing key, so no
//! earlier token is accepted.

use std::collections::{BTreeMap, BTreeSet};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The user who may do everything, and who alone may manage users, roles, access control
/// and leadership (as etcd's `root`).
pub const ROOT: &str = "root";

/// Longest user or role name.
pub const MAX_NAME: usize = 64;

/// Longest password accepted (argon2 takes any length; this bounds the work of a request).
pub const MAX_PASSWORD: usize = 1024;

/// How long a token is valid unless the node is told otherwise (`--auth-token-ttl-s`).
pub const DEFAULT_TOKEN_TTL_S: u64 = 3600;

/// What a grant allows under its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Perm {
    Read,
    Write,
    Readwrite,
}

impl Perm {
    pub fn parse(text: &str) -> Result<Perm, String> {
        match text {
            "read" => Ok(Perm::Read),
            "write" => Ok(Perm::Write),
            "readwrite" => Ok(Perm::Readwrite),
            other => Err(format!(
                "the permission {other:?} is not one of read, write, readwrite"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Perm::Read => "read",
            Perm::Write => "write",
            Perm::Readwrite => "readwrite",
        }
    }

    fn allows(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Perm::Readwrite, _) | (Perm::Read, Access::Read) | (Perm::Write, Access::Write)
        )
    }
}

/// What a request does to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// One permission of a role: `perm` on every key starting with `prefix` ("" is every key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub prefix: String,
    pub perm: Perm,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    /// The argon2 hash in PHC string form (algorithm, parameters, salt and hash).
    pub hash: String,
    pub roles: BTreeSet<String>,
    /// The log index of the entry that set the password: tokens name it, so a new password
    /// (or a new user of the same name) makes older tokens invalid.
    pub password_index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    /// At most one grant per prefix, sorted by prefix.
    pub grants: Vec<Grant>,
}

/// A change to the table, as the log carries it. Passwords arrive hashed: the log, the
/// checkpoints and the snapshots never hold one in clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum AuthChange {
    /// Turns access control on, with a new token-signing key (random, base64).
    Enable {
        token_key: String,
    },
    Disable,
    UserAdd {
        name: String,
        hash: String,
    },
    UserDelete {
        name: String,
    },
    UserPassword {
        name: String,
        hash: String,
    },
    UserGrantRole {
        name: String,
        role: String,
    },
    UserRevokeRole {
        name: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrant {
        name: String,
        prefix: String,
        perm: Perm,
    },
    RoleRevoke {
        name: String,
        prefix: String,
    },
}

/// One line of the table in a checkpoint or a snapshot (beside the session records).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "auth", rename_all = "snake_case")]
pub enum AuthRecord {
    Config {
        enabled: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_key: Option<String>,
    },
    User(User),
    Role(Role),
}

/// How an auth record's line starts, as `serde_json` writes it (the tag comes first), so
/// that record lines can be told from session lines without parsing both ways.
pub const RECORD_PREFIX: &str = "{\"auth\":";

/// Why a request is not let through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No token, or one that is not (or no longer) valid: 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid user without the permission: 403.
    #[error("{0}")]
    PermissionDenied(String),
}

/// The replicated access-control state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthTable {
    enabled: bool,
    token_key: Option<String>,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
}

/// Checks a user or role name: 1 to 64 letters, digits, `.`, `_` or `-`.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the {what} name {name:?} is not 1 to {MAX_NAME} letters, digits, '.', '_' or '-'"
        ))
    }
}

/// Hashes a password with argon2id (the crate's defaults: 19 MiB, 2 passes) and a random
/// salt, into its PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| format!("no random salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` matches a PHC hash (false for a hash that does not parse).
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A new token-signing key: 32 random bytes, base64.
pub fn new_token_key() -> Result<String, String> {
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| format!("no random key: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(key))
}

/// What a token says, signed.
#[derive(Serialize, Deserialize)]
struct Claims {
    /// The user.
    u: String,
    /// The user's `password_index` when it was issued.
    p: u64,
    /// Expiry, in seconds since the Unix epoch.
    e: u64,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &str) -> HmacSha256 {
    // HMAC takes a key of any length.
    HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key length")
}

/// Longest PHC hash string accepted in a change (argon2's are about 100 bytes).
const MAX_HASH: usize = 512;

impl AuthChange {
    /// The client path's rules for a change, also applied to what a peer says was logged.
    pub fn validate(&self) -> Result<(), String> {
        let hash_ok = |h: &str| {
            if h.len() <= MAX_HASH && h.starts_with('$') {
                Ok(())
            } else {
                Err("a password hash is not a PHC string".to_string())
            }
        };
        match self {
            AuthChange::Enable { token_key } => {
                if token_key.len() < 16 || token_key.len() > 256 {
                    return Err("a token key is 16 to 256 bytes".into());
                }
                Ok(())
            }
            AuthChange::Disable => Ok(()),
            AuthChange::UserAdd { name, hash } | AuthChange::UserPassword { name, hash } => {
                validate_name("user", name)?;
                hash_ok(hash)
            }
            AuthChange::UserDelete { name } | AuthChange::RoleAdd { name } => {
                validate_name("user or role", name)
            }
            AuthChange::RoleDelete { name } => validate_name("role", name),
            AuthChange::UserGrantRole { name, role }
            | AuthChange::UserRevokeRole { name, role } => {
                validate_name("user", name)?;
                validate_name("role", role)
            }
            AuthChange::RoleGrant { name, prefix, .. }
            | AuthChange::RoleRevoke { name, prefix } => {
                validate_name("role", name)?;
                validate_prefix(prefix)
            }
        }
    }
}

/// A grant's prefix: empty (every key) or what a key may be.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    crate::datum::validate_key(prefix).map_err(|e| format!("the prefix is not a key: {e}"))
}

impl AuthTable {
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.roles.values()
    }

    /// Applies one committed change at log index `index`. An error changes nothing and
    /// says why (every member reaches the same verdict: it depends on the table only).
    pub fn apply(&mut self, change: &AuthChange, index: u64) -> Result<(), String> {
        let no_user = |name: &str| format!("there is no user {name:?} (nacosctl user list)");
        let no_role = |name: &str| format!("there is no role {name:?} (nacosctl role list)");
        match change {
            AuthChange::Enable { token_key } => {
                if !self.users.contains_key(ROOT) {
                    return Err(format!(
                        "access control needs a user {ROOT:?} first, or nobody could manage it: nacosctl user add {ROOT}"
                    ));
                }
                self.enabled = true;
                self.token_key = Some(token_key.clone());
            }
            AuthChange::Disable => {
                self.enabled = false;
                self.token_key = None;
            }
            AuthChange::UserAdd { name, hash } => {
                if self.users.contains_key(name) {
                    return Err(format!(
                        "the user {name:?} exists; nacosctl user passwd {name} changes its password"
                    ));
                }
                self.users.insert(
                    name.clone(),
                    User {
                        name: name.clone(),
                        hash: hash.clone(),
                        roles: BTreeSet::new(),
                        password_index: index,
                    },
                );
            }
            AuthChange::UserDelete { name } => {
                if !self.users.contains_key(name) {
                    return Err(no_user(name));
                }
                if name == ROOT && self.enabled {
                    return Err(format!(
                        "the user {ROOT:?} cannot be deleted while access control is on (nacosctl auth disable first)"
                    ));
                }
                self.users.remove(name);
            }
            AuthChange::UserPassword { name, hash } => {
                let u = self.users.get_mut(name).ok_or_else(|| no_user(name))?;
                u.hash = hash.clone();
                u.password_index = index;
            }
            AuthChange::UserGrantRole { name, role } => {
                if !self.roles.contains_key(role) {
                    return Err(no_role(role));
                }
                let u = self.users.get_mut(name).ok_or_else(|| no_user(name))?;
                u.roles.insert(role.clone());
            }
            AuthChange::UserRevokeRole { name, role } => {
                let u = self.users.get_mut(name).ok_or_else(|| no_user(name))?;
                if !u.roles.remove(role) {
                    return Err(format!("the user {name:?} does not have the role {role:?}"));
                }
            }
            AuthChange::RoleAdd { name } => {
                if self.roles.contains_key(name) {
                    return Err(format!("the role {name:?} exists"));
                }
                self.roles.insert(
                    name.clone(),
                    Role {
                        name: name.clone(),
                        grants: Vec::new(),
                    },
                );
            }
            AuthChange::RoleDelete { name } => {
                if self.roles.remove(name).is_none() {
                    return Err(no_role(name));
                }
                for u in self.users.values_mut() {
                    u.roles.remove(name);
                }
            }
            AuthChange::RoleGrant { name, prefix, perm } => {
                let r = self.roles.get_mut(name).ok_or_else(|| no_role(name))?;
                match r.grants.binary_search_by(|g| g.prefix.as_str().cmp(prefix)) {
                    Ok(i) => r.grants[i].perm = *perm,
                    Err(i) => r.grants.insert(
                        i,
                        Grant {
                            prefix: prefix.clone(),
                            perm: *perm,
                        },
                    ),
                }
            }
            AuthChange::RoleRevoke { name, prefix } => {
                let r = self.roles.get_mut(name).ok_or_else(|| no_role(name))?;
                match r.grants.binary_search_by(|g| g.prefix.as_str().cmp(prefix)) {
                    Ok(i) => {
                        r.grants.remove(i);
                    }
                    Err(_) => {
                        return Err(format!(
                            "the role {name:?} has no grant on the prefix {prefix:?}"
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether `user` may `access` `key`: `root` may do everything, anyone else what a
    /// role of theirs grants on a prefix of the key.
    pub fn may(&self, user: &str, access: Access, key: &str) -> bool {
        if user == ROOT {
            return true;
        }
        let Some(u) = self.users.get(user) else {
            return false;
        };
        u.roles.iter().filter_map(|r| self.roles.get(r)).any(|r| {
            r.grants
                .iter()
                .any(|g| g.perm.allows(access) && key.starts_with(&g.prefix))
        })
    }

    /// The refusal when `user` may not `access` `key`, naming the fix.
    pub fn check(&self, user: &str, access: Access, key: &str) -> Result<(), Refusal> {
        if self.may(user, access, key) {
            return Ok(());
        }
        Err(Refusal::PermissionDenied(format!(
            "the user {user:?} may not {} the key {key:?}: no role of theirs grants {} on a prefix of it (nacosctl role grant ROLE --prefix P --perm {}, then nacosctl user grant-role {user} ROLE)",
            access.as_str(),
            access.as_str(),
            access.as_str(),
        )))
    }

    /// The refusal unless `user` is `root`.
    pub fn check_root(&self, user: &str, what: &str) -> Result<(), Refusal> {
        if user == ROOT {
            return Ok(());
        }
        Err(Refusal::PermissionDenied(format!(
            "{what} needs the user {ROOT:?}; the user {user:?} may not"
        )))
    }

    /// What a login checks a password against: the user's hash and `password_index`. Taken
    /// out of the table so the slow check runs without holding it.
    pub fn password_of(&self, user: &str) -> Option<(String, u64)> {
        self.users
            .get(user)
            .map(|u| (u.hash.clone(), u.password_index))
    }

    /// A token for `user`, valid for `ttl_s` seconds from `now_s` (Unix time), if the user
    /// still has the password set at `password_index` (the one a login checked) and access
    /// control is on.
    pub fn issue_token(
        &self,
        user: &str,
        password_index: u64,
        now_s: u64,
        ttl_s: u64,
    ) -> Option<String> {
        let key = self.token_key.as_ref().filter(|_| self.enabled)?;
        let u = self
            .users
            .get(user)
            .filter(|u| u.password_index == password_index)?;
        let claims = Claims {
            u: u.name.clone(),
            p: u.password_index,
            e: now_s.saturating_add(ttl_s),
        };
        let payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialise"));
        let mut m = mac(key);
        m.update(payload.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
        Some(format!("{payload}.{sig}"))
    }

    /// The user a token was issued to, if it is valid now (`now_s`: Unix time): signed with
    /// this table's key, not expired, and its user still has the password it was issued
    /// for.
    pub fn authenticate(&self, token: &str, now_s: u64) -> Result<String, Refusal> {
        let bad = |why: &str| Refusal::Unauthenticated(format!("{why}; log in again"));
        let key = self
            .token_key
            .as_ref()
            .ok_or_else(|| bad("access control is off"))?;
        let (payload, sig) = token
            .split_once('.')
            .ok_or_else(|| bad("the token is not one this cluster issued"))?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| bad("the token is not one this cluster issued"))?;
        let mut m = mac(key);
        m.update(payload.as_bytes());
        // Constant time, as `verify_slice` compares.
        m.verify_slice(&sig).map_err(|_| {
            bad("the token's signature does not match (it was issued before access control was last turned on, or by another cluster)")
        })?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("the token is not one this cluster issued"))?;
        if claims.e <= now_s {
            return Err(bad("the token has expired"));
        }
        match self.users.get(&claims.u) {
            Some(u) if u.password_index == claims.p => Ok(claims.u),
            Some(_) => Err(bad(&format!(
                "the password of {:?} changed since the token was issued",
                claims.u
            ))),
            None => Err(bad(&format!("the user {:?} no longer exists", claims.u))),
        }
    }

    /// The table as record lines' contents, for checkpoints and snapshots.
    pub fn records(&self) -> Vec<AuthRecord> {
        let mut out = Vec::with_capacity(1 + self.users.len() + self.roles.len());
        if self.enabled || self.token_key.is_some() {
            out.push(AuthRecord::Config {
                enabled: self.enabled,
                token_key: self.token_key.clone(),
            });
        }
        out.extend(self.users.values().cloned().map(AuthRecord::User));
        out.extend(self.roles.values().cloned().map(AuthRecord::Role));
        out
    }

    /// Rebuilds a table from its records (any order).
    pub fn from_records(records: impl IntoIterator<Item = AuthRecord>) -> AuthTable {
        let mut t = AuthTable::default();
        for r in records {
            match r {
                AuthRecord::Config { enabled, token_key } => {
                    t.enabled = enabled;
                    t.token_key = token_key;
                }
                AuthRecord::User(u) => {
                    t.users.insert(u.name.clone(), u);
                }
                AuthRecord::Role(r) => {
                    t.roles.insert(r.name.clone(), r);
                }
            }
        }
        t
    }
}

/// Checks a login's password against what [`AuthTable::password_of`] found (slow by
/// design: argon2). An unknown user and a wrong password get the same answer, and an
/// unknown user is still hashed against, so neither the answer nor its time tells names.
pub fn check_password(found: Option<&(String, u64)>, password: &str) -> Result<(), Refusal> {
    let hash = found.map(|(h, _)| h.as_str());
    if verify_password(password, hash.unwrap_or(DUMMY_HASH)) && hash.is_some() {
        Ok(())
    } else {
        Err(Refusal::Unauthenticated(
            "wrong user name or password".into(),
        ))
    }
}

/// A valid argon2 hash of a random password, verified against for unknown users.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3bB1m6RbkQ5I8xmE3vYq0XcsSG7Rkcs0N5S1bG4wXq8";

#[cfg(test)]
mod tests {
    use super::*;

    fn table_with(changes: &[AuthChange]) -> AuthTable {
        let mut t = AuthTable::default();
        for (i, c) in changes.iter().enumerate() {
            t.apply(c, i as u64 + 1).unwrap();
        }
        t
    }

    fn user(name: &str, password: &str) -> AuthChange {
        AuthChange::UserAdd {
            name: name.into(),
            hash: hash_password(password).unwrap(),
        }
    }

    #[test]
    fn passwords_hash_with_salt_and_verify() {
        let a = hash_password("s3cret").unwrap();
        let b = hash_password("s3cret").unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert!(verify_password("s3cret", &a));
        assert!(!verify_password("s3cret!", &a));
        assert!(!verify_password("s3cret", "not a hash"));
        // The dummy hash parses, so an unknown user costs a real verification.
        assert!(argon2::password_hash::PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn enable_needs_root_and_root_cannot_be_deleted_while_on() {
        let mut t = AuthTable::default();
        let key = new_token_key().unwrap();
        let err = t
            .apply(
                &AuthChange::Enable {
                    token_key: key.clone(),
                },
                1,
            )
            .unwrap_err();
        assert!(err.contains("user add root"), "{err}");
        assert!(!t.enabled());
        t.apply(&user(ROOT, "pw"), 2).unwrap();
        t.apply(&AuthChange::Enable { token_key: key }, 3).unwrap();
        assert!(t.enabled());
        let err = t
            .apply(&AuthChange::UserDelete { name: ROOT.into() }, 4)
            .unwrap_err();
        assert!(err.contains("auth disable"), "{err}");
        t.apply(&AuthChange::Disable, 5).unwrap();
        t.apply(&AuthChange::UserDelete { name: ROOT.into() }, 6)
            .unwrap();
    }

    #[test]
    fn permissions_follow_roles_and_prefixes() {
        let t = table_with(&[
            user(ROOT, "r"),
            user("app", "a"),
            AuthChange::RoleAdd {
                name: "reader".into(),
            },
            AuthChange::RoleGrant {
                name: "reader".into(),
                prefix: "cfg/".into(),
                perm: Perm::Read,
            },
            AuthChange::RoleAdd {
                name: "writer".into(),
            },
            AuthChange::RoleGrant {
                name: "writer".into(),
                prefix: "cfg/app/".into(),
                perm: Perm::Readwrite,
            },
            AuthChange::UserGrantRole {
                name: "app".into(),
                role: "reader".into(),
            },
        ]);
        assert!(t.may("app", Access::Read, "cfg/x"));
        assert!(!t.may("app", Access::Write, "cfg/x"));
        assert!(!t.may("app", Access::Read, "other"));
        assert!(!t.may("nobody", Access::Read, "cfg/x"));
        assert!(t.may(ROOT, Access::Write, "anything"));
        let mut t2 = t.clone();
        t2.apply(
            &AuthChange::UserGrantRole {
                name: "app".into(),
                role: "writer".into(),
            },
            20,
        )
        .unwrap();
        assert!(t2.may("app", Access::Write, "cfg/app/k"));
        assert!(!t2.may("app", Access::Write, "cfg/other"));
        let e = t2.check("app", Access::Write, "cfg/other").unwrap_err();
        assert!(
            matches!(&e, Refusal::PermissionDenied(m) if m.contains("role grant")),
            "{e:?}"
        );
        // A grant on the same prefix replaces the earlier one; revoking removes it.
        t2.apply(
            &AuthChange::RoleGrant {
                name: "reader".into(),
                prefix: "cfg/".into(),
                perm: Perm::Write,
            },
            21,
        )
        .unwrap();
        assert_eq!(t2.roles.get("reader").map(|r| r.grants.len()), Some(1));
        assert!(t2.may("app", Access::Write, "cfg/other"));
        t2.apply(
            &AuthChange::RoleRevoke {
                name: "reader".into(),
                prefix: "cfg/".into(),
            },
            22,
        )
        .unwrap();
        assert!(!t2.may("app", Access::Read, "cfg/other"));
        // Deleting a role takes it from every user.
        t2.apply(
            &AuthChange::RoleDelete {
                name: "writer".into(),
            },
            23,
        )
        .unwrap();
        assert!(!t2.may("app", Access::Write, "cfg/app/k"));
        assert!(t2.users.get("app").is_some_and(|u| u.roles.len() == 1));
    }

    #[test]
    fn changes_that_do_not_fit_change_nothing() {
        let mut t = table_with(&[user("a", "x")]);
        let before = t.clone();
        for c in [
            user("a", "y"),
            AuthChange::UserDelete { name: "b".into() },
            AuthChange::UserGrantRole {
                name: "a".into(),
                role: "none".into(),
            },
            AuthChange::UserRevokeRole {
                name: "a".into(),
                role: "none".into(),
            },
            AuthChange::RoleDelete {
                name: "none".into(),
            },
            AuthChange::RoleRevoke {
                name: "none".into(),
                prefix: "".into(),
            },
        ] {
            assert!(t.apply(&c, 9).is_err(), "{c:?}");
            assert_eq!(t, before, "{c:?}");
        }
    }

    #[test]
    fn tokens_expire_and_die_with_a_new_password_a_deleted_user_or_a_new_key() {
        let mut t = table_with(&[user(ROOT, "r"), user("app", "a")]);
        let pi = |t: &AuthTable, u: &str| t.password_of(u).unwrap().1;
        assert_eq!(
            t.issue_token("app", 2, 1000, 60),
            None,
            "access control off"
        );
        t.apply(
            &AuthChange::Enable {
                token_key: new_token_key().unwrap(),
            },
            3,
        )
        .unwrap();
        let tok = t.issue_token("app", pi(&t, "app"), 1000, 60).unwrap();
        assert_eq!(t.authenticate(&tok, 1059), Ok("app".to_string()));
        let expired = t.authenticate(&tok, 1060).unwrap_err();
        assert!(format!("{expired}").contains("expired"), "{expired}");
        // Forged: another payload under the same signature, or a flipped signature byte.
        let (payload, sig) = tok.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"u":"root","p":1,"e":99999}"#);
        assert!(t
            .authenticate(&format!("{forged_payload}.{sig}"), 1000)
            .is_err());
        let mut bad_sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        bad_sig[0] ^= 1;
        let bad = format!("{payload}.{}", URL_SAFE_NO_PAD.encode(bad_sig));
        assert!(t.authenticate(&bad, 1000).is_err());
        for junk in ["", ".", "a.b", "nodot", "%%.%%"] {
            assert!(t.authenticate(junk, 1000).is_err(), "{junk:?}");
        }
        // A new password.
        t.apply(
            &AuthChange::UserPassword {
                name: "app".into(),
                hash: hash_password("b").unwrap(),
            },
            4,
        )
        .unwrap();
        let e = t.authenticate(&tok, 1000).unwrap_err();
        assert!(format!("{e}").contains("password"), "{e}");
        // A login that checked the old password gets no token.
        assert_eq!(t.issue_token("app", 2, 1000, 60), None);
        let tok = t.issue_token("app", pi(&t, "app"), 1000, 60).unwrap();
        assert!(t.authenticate(&tok, 1000).is_ok());
        // A deleted user, even if added again under the same name.
        t.apply(&AuthChange::UserDelete { name: "app".into() }, 5)
            .unwrap();
        assert!(t.authenticate(&tok, 1000).is_err());
        t.apply(&user("app", "b"), 6).unwrap();
        assert!(t.authenticate(&tok, 1000).is_err());
        // Off and on again: a new key.
        let tok = t.issue_token(ROOT, pi(&t, ROOT), 1000, 60).unwrap();
        t.apply(&AuthChange::Disable, 7).unwrap();
        assert!(t.authenticate(&tok, 1000).is_err());
        t.apply(
            &AuthChange::Enable {
                token_key: new_token_key().unwrap(),
            },
            8,
        )
        .unwrap();
        assert!(t.authenticate(&tok, 1000).is_err());
    }

    #[test]
    fn login_checks_the_password_and_does_not_tell_unknown_users_apart() {
        let t = table_with(&[user("app", "right")]);
        let found = t.password_of("app");
        assert!(check_password(found.as_ref(), "right").is_ok());
        let wrong = check_password(found.as_ref(), "wrong").unwrap_err();
        let unknown = check_password(t.password_of("ghost").as_ref(), "right").unwrap_err();
        assert_eq!(wrong, unknown);
    }

    #[test]
    fn records_round_trip_and_are_told_from_session_lines() {
        let mut t = table_with(&[
            user(ROOT, "r"),
            AuthChange::RoleAdd { name: "r1".into() },
            AuthChange::RoleGrant {
                name: "r1".into(),
                prefix: "a/".into(),
                perm: Perm::Readwrite,
            },
            AuthChange::UserGrantRole {
                name: ROOT.into(),
                role: "r1".into(),
            },
        ]);
        t.apply(
            &AuthChange::Enable {
                token_key: new_token_key().unwrap(),
            },
            9,
        )
        .unwrap();
        let lines: Vec<String> = t
            .records()
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        assert!(
            lines.iter().all(|l| l.starts_with(RECORD_PREFIX)),
            "{lines:?}"
        );
        let back = AuthTable::from_records(
            lines
                .iter()
                .map(|l| serde_json::from_str::<AuthRecord>(l).unwrap()),
        );
        assert_eq!(back, t);
        assert!(AuthTable::default().records().is_empty());
    }

    #[test]
    fn names_and_permissions_parse_strictly() {
        assert!(validate_name("user", "app-1.x_y").is_ok());
        for bad in ["", "a b", "a/b", "ü", &"x".repeat(65)] {
            assert!(validate_name("user", bad).is_err(), "{bad:?}");
        }
        assert_eq!(Perm::parse("readwrite"), Ok(Perm::Readwrite));
        assert!(Perm::parse("rw").is_err());
    }
}
