//! `nacosctl snapshot save|status|restore` (backups): the commands that move the whole
//! datum set out of a cluster and into a new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nacos_raft::client::Client;
use nacos_raft::store::backup::{self, BackupInfo};

use crate::cli::{Output, SnapshotCmd};
use crate::exit::{Exit, UsageError};
use crate::render;

pub fn snapshot(
    client: impl FnOnce() -> Result<Client>,
    output: Output,
    out: &mut dyn Write,
    action: &SnapshotCmd,
) -> Result<Exit> {
    match action {
        SnapshotCmd::Save { file, from, stale } => {
            let client = client()?;
            let info = save(&client, from.as_deref(), *stale, file)?;
            print_info(output, out, file, &info, "saved")
        }
        SnapshotCmd::Status { file } => {
            let info = backup::read(file, |_| Ok(()))
                .with_context(|| format!("{} is not a usable backup", file.display()))?;
            print_info(output, out, file, &info, "")
        }
        SnapshotCmd::Restore {
            file,
            data_dir,
            peers,
        } => {
            let peers: Vec<&str> = peers
                .as_deref()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            let set = if peers.is_empty() {
                None
            } else {
                let voters = nacos_raft::node::members::parse_members(&peers.join(","))
                    .context("--peers")?;
                Some(nacos_raft::raft::PeerSet::of_voters(voters))
            };
            let info = nacos_raft::node::snapshot::restore_backup(file, data_dir, set.as_ref())
                .with_context(|| {
                    format!(
                        "cannot restore {} into {}",
                        file.display(),
                        data_dir.display()
                    )
                })?;
            match output {
                Output::Json => render::json(
                    out,
                    &serde_json::json!({"data_dir": data_dir, "backup": info}),
                )?,
                _ => {
                    writeln!(
                        out,
                        "OK restored {} datums at index {} (term {}) into {}",
                        info.datums,
                        info.index,
                        info.term,
                        data_dir.display()
                    )?;
                    if !peers.is_empty() {
                        writeln!(
                            out,
                            "start each member on its own restored copy: nacos-node --data-dir {} --listen <ADDR> --peers {}",
                            data_dir.display(),
                            peers.join(",")
                        )?;
                    }
                }
            }
            Ok(Exit::Ok)
        }
    }
}

/// Streams a backup into a temp file beside `file`, checks all of it, and only then puts
/// it in place (fsync, rename, directory fsync): `file` is a whole backup or untouched.
fn save(client: &Client, from: Option<&str>, stale: bool, file: &Path) -> Result<BackupInfo> {
    let endpoint = match from {
        Some(f) => f.to_string(),
        None => client.leader()?.leader.ok_or_else(|| {
            UsageError::new(
                "the cluster has no leader, so no member can say it holds every acknowledged write",
                "name a member with --from ADDR and add --stale to save what it holds",
            )
        })?,
    };
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .ok_or_else(|| UsageError::new(format!("{} names no file", file.display()), "give FILE"))?;
    let tmp = dir.join(format!(".{}.part", name.to_string_lossy()));
    let result = (|| -> Result<BackupInfo> {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        client.snapshot_to(&endpoint, stale, &mut f)?;
        f.sync_all()
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        drop(f);
        let info = backup::read(&tmp, |_| Ok(()))
            .with_context(|| format!("the backup {endpoint} sent is not whole"))?;
        std::fs::rename(&tmp, file)
            .with_context(|| format!("cannot move the backup to {}", file.display()))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))?;
        Ok(info)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn print_info(
    output: Output,
    out: &mut dyn Write,
    file: &Path,
    info: &BackupInfo,
    verb: &str,
) -> Result<Exit> {
    match output {
        Output::Json => render::json(
            out,
            &serde_json::json!({
                "file": file,
                "index": info.index,
                "term": info.term,
                "datums": info.datums,
                "auth_records": info.auth_records,
                "size": info.size,
                "sha256": info.sha256,
                "source": info.source,
                "created_unix_ms": info.created_unix_ms,
            }),
        )?,
        Output::Table => render::table(
            out,
            &["FILE", "INDEX", "TERM", "DATUMS", "SIZE", "SHA256"],
            vec![vec![
                file.display().to_string(),
                info.index.to_string(),
                info.term.to_string(),
                info.datums.to_string(),
                info.size.to_string(),
                info.sha256.clone(),
            ]],
        )?,
        Output::Text => {
            let lead = if verb.is_empty() {
                String::new()
            } else {
                format!("OK {verb} ")
            };
            writeln!(
                out,
                "{lead}{} index={} term={} datums={} size={} sha256={} source={}",
                file.display(),
                info.index,
                info.term,
                info.datums,
                info.size,
                info.sha256,
                info.source
            )?
        }
    }
    Ok(Exit::Ok)
}
