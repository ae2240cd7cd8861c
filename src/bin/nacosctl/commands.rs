//! The key commands (`put`, `get`, `del`, `ls`, `leader`) and the offline `dump`: each turns
//! a client answer into one of the three output forms. `status` has its own module.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use nacos_raft::client::{Client, ClientError, LeaderInfo, UnavailableKind};
use serde::Serialize;
use serde_json::Value;

use crate::cli::Output;
use crate::exit::{Exit, UsageError};
use crate::render;

/// Refuses a key the nodes would refuse, before any network wait.
pub fn check_key(key: &str) -> Result<(), UsageError> {
    nacos_raft::validate_key(key).map_err(|e| {
        UsageError::new(
            e.to_string(),
            "keys are 1 to 1024 bytes of UTF-8 without control characters; a key that starts with '-' goes after '--'",
        )
    })
}

/// The value to publish: VALUE itself, stdin for `-`, a file's contents for `@FILE`; parsed
/// as JSON with `--json`, else stored as a JSON string.
pub fn read_value(arg: &str, json: bool, stdin: &mut dyn Read) -> Result<Value, UsageError> {
    let (text, source) = if arg == "-" {
        if std::io::stdin().is_terminal() {
            eprintln!("nacosctl: reading the value from stdin; end it with Ctrl-D");
        }
        let mut bytes = Vec::new();
        stdin
            .read_to_end(&mut bytes)
            .map_err(|e| UsageError::new(format!("cannot read stdin: {e}"), "pipe the value in"))?;
        (utf8(bytes, "stdin")?, "stdin".to_string())
    } else if let Some(path) = arg.strip_prefix('@') {
        let bytes = std::fs::read(path).map_err(|e| {
            UsageError::new(
                format!("cannot read {path}: {e}"),
                "@FILE names a file to read the value from; to store a string that starts with '@', use --json '\"@...\"'",
            )
        })?;
        (utf8(bytes, path)?, path.to_string())
    } else {
        (arg.to_string(), "VALUE".to_string())
    };
    if !json {
        return Ok(Value::String(text));
    }
    serde_json::from_str(&text).map_err(|e| {
        UsageError::new(
            format!("{source} is not valid JSON ({e})"),
            "without --json the value is stored as a string",
        )
    })
}

fn utf8(bytes: Vec<u8>, source: &str) -> Result<String, UsageError> {
    String::from_utf8(bytes).map_err(|e| {
        UsageError::new(
            format!(
                "{source} is not UTF-8 text (bad byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
            "values are JSON; encode binary data (e.g. base64) and store the text",
        )
    })
}

pub fn put(
    client: &Client,
    output: Output,
    out: &mut dyn Write,
    key: &str,
    value: Value,
    if_timestamp: Option<u64>,
) -> Result<Exit> {
    let r = match client.put_if(key, value, if_timestamp) {
        Err(e) => return precondition_failed(output, out, e),
        Ok(r) => r,
    };
    match output {
        Output::Json => render::json(out, &r)?,
        Output::Table => render::table(
            out,
            &["KEY", "TIMESTAMP", "TERM", "INDEX"],
            vec![vec![
                r.key.clone(),
                r.timestamp.to_string(),
                r.term.to_string(),
                r.index.to_string(),
            ]],
        )?,
        Output::Text => writeln!(
            out,
            "OK key={} timestamp={} term={} index={}",
            r.key, r.timestamp, r.term, r.index
        )?,
    }
    Ok(Exit::Ok)
}

/// A failed condition with `-o json`: the answer on stdout (`{"error", "key", "timestamp"}`,
/// the key's current timestamp, 0 when absent) for a script's next attempt, and exit 6.
/// Every other error, and the failed condition in text and table form, is reported as usual.
fn precondition_failed(output: Output, out: &mut dyn Write, e: ClientError) -> Result<Exit> {
    match (output, e) {
        (Output::Json, ClientError::PreconditionFailed { key, current, .. }) => {
            render::json(
                out,
                &serde_json::json!({"error": "precondition_failed", "key": key, "timestamp": current}),
            )?;
            Ok(Exit::PreconditionFailed)
        }
        (_, e) => Err(e.into()),
    }
}

pub fn get(
    client: &Client,
    output: Output,
    out: &mut dyn Write,
    key: &str,
    stale: bool,
) -> Result<Exit> {
    let r = client.get(key, stale)?;
    match output {
        Output::Json => render::json(out, &r)?,
        Output::Table => render::table(
            out,
            &["KEY", "TIMESTAMP", "INDEX", "VALUE"],
            vec![vec![
                r.key.clone(),
                r.timestamp.to_string(),
                r.index.to_string(),
                render::compact(&r.value),
            ]],
        )?,
        Output::Text => match &r.value {
            // Raw, so `$(nacosctl get k)` and `nacosctl get k > file` give back what `put`
            // stored; a newline is added only when the value lacks one.
            Value::String(s) => {
                out.write_all(s.as_bytes())?;
                if !s.ends_with('\n') {
                    writeln!(out)?;
                }
            }
            other => {
                serde_json::to_writer_pretty(&mut *out, other)?;
                writeln!(out)?;
            }
        },
    }
    Ok(Exit::Ok)
}

pub fn del(
    client: &Client,
    output: Output,
    out: &mut dyn Write,
    key: &str,
    if_timestamp: Option<u64>,
) -> Result<Exit> {
    let r = match client.delete_if(key, if_timestamp) {
        Err(e) => return precondition_failed(output, out, e),
        Ok(r) => r,
    };
    match output {
        Output::Json => render::json(out, &r)?,
        Output::Table => render::table(
            out,
            &["KEY", "TERM", "INDEX"],
            vec![vec![r.key.clone(), r.term.to_string(), r.index.to_string()]],
        )?,
        Output::Text => writeln!(out, "OK key={} term={} index={}", r.key, r.term, r.index)?,
    }
    Ok(Exit::Ok)
}

pub fn ls(
    client: &Client,
    output: Output,
    out: &mut dyn Write,
    prefix: &str,
    stale: bool,
) -> Result<Exit> {
    let entries = client.list(prefix, stale)?;
    match output {
        Output::Json => render::json(out, &entries)?,
        Output::Table => render::table(
            out,
            &["KEY", "TIMESTAMP", "INDEX"],
            entries
                .iter()
                .map(|e| vec![e.key.clone(), e.timestamp.to_string(), e.index.to_string()])
                .collect(),
        )?,
        // Keys hold no control characters, so a tab separates the fields unambiguously.
        Output::Text => {
            for e in &entries {
                writeln!(out, "{}\t{}", e.key, e.timestamp)?;
            }
        }
    }
    Ok(Exit::Ok)
}

pub fn leader(client: &Client, output: Output, out: &mut dyn Write) -> Result<Exit> {
    let info: LeaderInfo = client.leader()?;
    match output {
        // The document is printed even with no leader: `"leader": null` is the answer.
        Output::Json => render::json(out, &info)?,
        Output::Table => render::table(
            out,
            &["LEADER", "TERM"],
            vec![vec![render::opt(&info.leader), info.term.to_string()]],
        )?,
        Output::Text => {
            if let Some(l) = &info.leader {
                writeln!(out, "{l}")?;
            }
        }
    }
    if info.leader.is_none() {
        return Err(ClientError::Unavailable {
            endpoint: client.endpoints().join(","),
            kind: UnavailableKind::NoLeader,
            message: format!("no leader is known (term {})", info.term),
            leader: None,
        }
        .into());
    }
    Ok(Exit::Ok)
}

/// One row of `dump -o json`; `key`, `value`, `timestamp` and `file` are the contract.
#[derive(Debug, Serialize)]
struct DumpRow<'a> {
    key: &'a str,
    value: &'a Value,
    timestamp: u64,
    index: u64,
    file: &'a Path,
}

pub fn dump(
    output: Output,
    out: &mut dyn Write,
    data_dir: &Path,
    nacos_layout: Option<&Path>,
) -> Result<Exit> {
    if !data_dir.is_dir() {
        return Err(UsageError::new(
            format!("{} is not a directory", data_dir.display()),
            "give the --data-dir of a nacos-node",
        )
        .into());
    }
    if !["data", "log", "meta.properties"]
        .iter()
        .any(|p| data_dir.join(p).exists())
    {
        eprintln!(
            "nacosctl: warning: {} has no data/, log/ or meta.properties; is it a nacos-node --data-dir?",
            data_dir.display()
        );
    }
    let state = nacos_raft::node::stopped::read_stopped(data_dir)
        .with_context(|| format!("cannot dump {}", data_dir.display()))?;
    for w in &state.warnings {
        eprintln!("nacosctl: warning: {w}");
    }
    if let Some(to) = nacos_layout {
        return export_nacos_layout(output, out, data_dir, to, &state);
    }
    let datums = state.datums;
    let rows: Vec<DumpRow> = datums
        .iter()
        .map(|(d, file)| DumpRow {
            key: &d.key,
            value: &d.value,
            timestamp: d.timestamp,
            index: d.index,
            file,
        })
        .collect();
    match output {
        Output::Json => render::json(out, &rows)?,
        Output::Table => render::table(
            out,
            &["KEY", "TIMESTAMP", "INDEX", "VALUE", "FILE"],
            rows.iter()
                .map(|r| {
                    vec![
                        r.key.to_string(),
                        r.timestamp.to_string(),
                        r.index.to_string(),
                        render::compact(r.value),
                        r.file.display().to_string(),
                    ]
                })
                .collect(),
        )?,
        Output::Text => {
            for r in &rows {
                writeln!(
                    out,
                    "{}\t{}\t{}",
                    r.key,
                    r.timestamp,
                    render::compact(r.value)
                )?;
            }
        }
    }
    Ok(Exit::Ok)
}

/// `dump --nacos-layout DIR`: the state as Nacos-layout datum files (DESIGN §6, what
/// `nacos-node --datum-files on` keeps) and a `meta.properties`, in a new directory.
fn export_nacos_layout(
    output: Output,
    out: &mut dyn Write,
    data_dir: &Path,
    to: &Path,
    state: &nacos_raft::node::stopped::StoppedState,
) -> Result<Exit> {
    let occupied = std::fs::read_dir(to).is_ok_and(|mut it| it.next().is_some());
    if occupied {
        return Err(UsageError::new(
            format!("{} is not empty", to.display()),
            "give a path that does not exist yet (or an empty directory)",
        )
        .into());
    }
    let root = to.join("data");
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    for (d, _) in &state.datums {
        nacos_raft::store::datum_dir::write_datum_under(&root, d)
            .with_context(|| format!("cannot export {}", d.key))?;
    }
    let term = nacos_raft::store::read_meta(data_dir)
        .with_context(|| format!("cannot read the term of {}", data_dir.display()))?
        .map_or(0, |m| m.term);
    let meta = to.join("meta.properties");
    std::fs::write(
        &meta,
        format!(
            "#exported by nacosctl dump at index {}\nterm={term}\n",
            state.applied
        ),
    )
    .with_context(|| format!("cannot write {}", meta.display()))?;
    match output {
        Output::Json => render::json(
            out,
            &serde_json::json!({"datums": state.datums.len(), "index": state.applied, "dir": to}),
        )?,
        _ => writeln!(
            out,
            "OK exported {} datums (index {}) to {}",
            state.datums.len(),
            state.applied,
            root.display()
        )?,
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_from_args() {
        let mut none: &[u8] = b"";
        assert_eq!(read_value("hi", false, &mut none).unwrap(), json!("hi"));
        assert_eq!(
            read_value("{\"a\":1}", false, &mut none).unwrap(),
            json!("{\"a\":1}")
        );
        assert_eq!(
            read_value("{\"a\":1}", true, &mut none).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(read_value("-5", true, &mut none).unwrap(), json!(-5));
        assert!(read_value("{", true, &mut none).is_err());
    }

    #[test]
    fn values_from_stdin_keep_every_byte() {
        let mut input: &[u8] = b"line\n";
        assert_eq!(read_value("-", false, &mut input).unwrap(), json!("line\n"));
        let mut input: &[u8] = b"[1, 2]\n";
        assert_eq!(read_value("-", true, &mut input).unwrap(), json!([1, 2]));
        let mut input: &[u8] = b"\xff";
        let e = read_value("-", false, &mut input).unwrap_err();
        assert!(e.message.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn values_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.json");
        std::fs::write(&f, "{\"x\": true}").unwrap();
        let arg = format!("@{}", f.display());
        let mut none: &[u8] = b"";
        assert_eq!(
            read_value(&arg, true, &mut none).unwrap(),
            json!({"x": true})
        );
        assert_eq!(
            read_value(&arg, false, &mut none).unwrap(),
            json!("{\"x\": true}")
        );
        let missing = format!("@{}", dir.path().join("nope").display());
        let e = read_value(&missing, false, &mut none).unwrap_err();
        assert!(e.message.contains("nope"), "{e}");
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("a/b").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a\u{1}b").is_err());
    }
}
