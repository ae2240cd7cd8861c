//! Access control in nacosctl: logging in once per run (`--user`, `--token`), and the
//! `auth`, `user` and `role` commands.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use nacos_raft::client::{Client, ClientError, ErrorCode};
use nacos_raft::wire::auth::{AuthChanged, Perm};

use crate::cli::{AuthCmd, Cli, Output, PermArg, RoleCmd, UserCmd};
use crate::exit::{Exit, UsageError};
use crate::render;

/// A client for `cli`'s endpoints, logged in when `--user` or `--token` is given. A login
/// to a cluster with access control off is skipped: requests need no token there.
pub fn connect(cli: &Cli) -> Result<Client> {
    connect_to(cli, cli.endpoints.0.clone())
}

/// [`connect`] to other endpoints than `--endpoints` (such as every member of the cluster).
pub fn connect_to(cli: &Cli, endpoints: Vec<String>) -> Result<Client> {
    let client = connect_without_login(cli, endpoints)?;
    if let Some(token) = &cli.token {
        client.set_token(Some(token.clone()));
    } else if let Some(user) = &cli.user {
        let password = match std::env::var("NACOSCTL_PASSWORD") {
            Ok(p) => p,
            Err(_) => prompt(&format!("password for {user}: "))?,
        };
        match client.login(user, &password) {
            Ok(l) => client.set_token(Some(l.token)),
            Err(ClientError::Server {
                error: ErrorCode::AuthDisabled,
                ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(client)
}

/// A client for `endpoints` with `cli`'s TLS settings and no login, for the requests that
/// need none (`/v1/status`, `/v1/leader`).
pub fn connect_without_login(cli: &Cli, endpoints: Vec<String>) -> Result<Client> {
    let https = endpoints.iter().any(|e| e.starts_with("https://"));
    let tls = if https || cli.cacert.is_some() || cli.cert.is_some() {
        let identity = cli.cert.as_deref().zip(cli.key.as_deref());
        Some(std::sync::Arc::new(nacos_raft::tls::client_config(
            cli.cacert.as_deref(),
            identity,
        )?))
    } else {
        None
    };
    Ok(Client::with_tls(endpoints, cli.timeout, tls))
}

/// Reads a password on the terminal without echo.
fn prompt(text: &str) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(UsageError::new(
            "no password: stdin is not a terminal to prompt on",
            "set NACOSCTL_PASSWORD, or pass --token (NACOSCTL_TOKEN)",
        )
        .into());
    }
    Ok(rpassword::prompt_password(text)?)
}

/// A new password: the first line of stdin with `--password-stdin`, else asked twice on
/// the terminal.
fn new_password(name: &str, from_stdin: bool) -> Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        let first = prompt(&format!("new password for {name}: "))?;
        if prompt("again: ")? != first {
            return Err(UsageError::new(
                "the two passwords differ",
                "type the same password twice",
            )
            .into());
        }
        first
    };
    if password.is_empty() {
        return Err(UsageError::new(
            "the password is empty",
            "give at least one character (with --password-stdin, on the first line)",
        )
        .into());
    }
    Ok(password)
}

fn changed(output: Output, out: &mut dyn Write, what: &str, c: &AuthChanged) -> Result<Exit> {
    match output {
        Output::Json => render::json(out, c)?,
        Output::Table => render::table(
            out,
            &["CHANGE", "TERM", "INDEX"],
            vec![vec![
                what.to_string(),
                c.term.to_string(),
                c.index.to_string(),
            ]],
        )?,
        Output::Text => writeln!(out, "OK {what} term={} index={}", c.term, c.index)?,
    }
    Ok(Exit::Ok)
}

pub fn auth(client: &Client, output: Output, out: &mut dyn Write, cmd: &AuthCmd) -> Result<Exit> {
    match cmd {
        AuthCmd::Enable => changed(output, out, "auth enabled", &client.auth_enable()?),
        AuthCmd::Disable => changed(output, out, "auth disabled", &client.auth_disable()?),
        AuthCmd::Status => {
            let s = client.auth_status()?;
            let state = if s.enabled { "enabled" } else { "disabled" };
            match output {
                Output::Json => render::json(out, &s)?,
                Output::Table => render::table(
                    out,
                    &["AUTH", "USERS", "ROLES"],
                    vec![vec![
                        state.to_string(),
                        s.users.to_string(),
                        s.roles.to_string(),
                    ]],
                )?,
                Output::Text => writeln!(out, "{state} users={} roles={}", s.users, s.roles)?,
            }
            Ok(Exit::Ok)
        }
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    nacos_raft::auth::validate_name(what, name).map_err(|m| {
        UsageError::new(m, "names are 1 to 64 letters, digits, '.', '_' or '-'").into()
    })
}

pub fn user(client: &Client, output: Output, out: &mut dyn Write, cmd: &UserCmd) -> Result<Exit> {
    match cmd {
        UserCmd::Add {
            name,
            password_stdin,
        } => {
            check_name("user", name)?;
            let pw = new_password(name, *password_stdin)?;
            let c = client.user_add(name, &pw)?;
            changed(output, out, &format!("user {name} added"), &c)
        }
        UserCmd::Del { name } => {
            let c = client.user_delete(name)?;
            changed(output, out, &format!("user {name} deleted"), &c)
        }
        UserCmd::Passwd {
            name,
            password_stdin,
        } => {
            check_name("user", name)?;
            let pw = new_password(name, *password_stdin)?;
            let c = client.user_password(name, &pw)?;
            changed(output, out, &format!("password of {name} changed"), &c)
        }
        UserCmd::GrantRole { name, role } => {
            let c = client.user_grant_role(name, role)?;
            changed(output, out, &format!("user {name} has role {role}"), &c)
        }
        UserCmd::RevokeRole { name, role } => {
            let c = client.user_revoke_role(name, role)?;
            changed(output, out, &format!("user {name} lost role {role}"), &c)
        }
        UserCmd::List => {
            let users = client.user_list()?;
            match output {
                Output::Json => render::json(out, &serde_json::json!({ "users": users }))?,
                Output::Table => render::table(
                    out,
                    &["USER", "ROLES"],
                    users
                        .iter()
                        .map(|u| vec![u.name.clone(), u.roles.join(",")])
                        .collect(),
                )?,
                Output::Text => {
                    for u in &users {
                        writeln!(out, "{}\t{}", u.name, u.roles.join(","))?;
                    }
                }
            }
            Ok(Exit::Ok)
        }
    }
}

pub fn role(client: &Client, output: Output, out: &mut dyn Write, cmd: &RoleCmd) -> Result<Exit> {
    match cmd {
        RoleCmd::Add { name } => {
            check_name("role", name)?;
            let c = client.role_add(name)?;
            changed(output, out, &format!("role {name} added"), &c)
        }
        RoleCmd::Del { name } => {
            let c = client.role_delete(name)?;
            changed(output, out, &format!("role {name} deleted"), &c)
        }
        RoleCmd::Grant { name, prefix, perm } => {
            let perm = match perm {
                PermArg::Read => Perm::Read,
                PermArg::Write => Perm::Write,
                PermArg::Readwrite => Perm::Readwrite,
            };
            let c = client.role_grant(name, prefix, perm)?;
            let what = format!("role {name}: {} on keys under {prefix:?}", perm.as_str());
            changed(output, out, &what, &c)
        }
        RoleCmd::Revoke { name, prefix } => {
            let c = client.role_revoke(name, prefix)?;
            changed(
                output,
                out,
                &format!("role {name}: no grant on {prefix:?}"),
                &c,
            )
        }
        RoleCmd::List => {
            let roles = client.role_list()?;
            match output {
                Output::Json => render::json(out, &serde_json::json!({ "roles": roles }))?,
                Output::Table => render::table(
                    out,
                    &["ROLE", "PREFIX", "PERM"],
                    roles
                        .iter()
                        .flat_map(|r| {
                            let rows: Vec<Vec<String>> = if r.grants.is_empty() {
                                vec![vec![r.name.clone(), String::new(), String::new()]]
                            } else {
                                r.grants
                                    .iter()
                                    .map(|g| {
                                        vec![
                                            r.name.clone(),
                                            g.prefix.clone(),
                                            g.perm.as_str().to_string(),
                                        ]
                                    })
                                    .collect()
                            };
                            rows
                        })
                        .collect(),
                )?,
                Output::Text => {
                    // One line per grant, `ROLE<TAB>PREFIX<TAB>PERM`; a role without grants
                    // is a line of its name alone.
                    for r in &roles {
                        if r.grants.is_empty() {
                            writeln!(out, "{}", r.name)?;
                        }
                        for g in &r.grants {
                            writeln!(out, "{}\t{}\t{}", r.name, g.prefix, g.perm.as_str())?;
                        }
                    }
                }
            }
            Ok(Exit::Ok)
        }
    }
}
