//! `nacosctl import --nacos-data-dir DIR [--dry-run] [--skip-bad]`: moves a Nacos 1.x naming
//! data dir into the cluster, keeping every key, value and Nacos timestamp, and reports what
//! it did per namespace.
//!
//! The reading (file layouts, conversions, what counts as bad) is `nacos_raft::migrate`;
//! this module only decides whether to go on, sends the datums in batches through
//! `POST /v1/import` on the leader, and prints the summary. It never writes a file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use nacos_raft::client::Client;
use nacos_raft::migrate::{self, Found, MigrateError, Scan};
use serde_json::{json, Value};

use crate::cli::{Cli, Output};
use crate::exit::{Exit, UsageError};
use crate::{auth, render, ui};

/// Datums one request carries at most.
pub const BATCH_DATUMS: usize = 1000;
/// Bytes of datums one request carries at most; a single larger datum goes alone (it is
/// within the request limit: `migrate` refuses any that is not).
pub const BATCH_BYTES: usize = 2 << 20;

pub struct Args<'a> {
    pub dir: &'a Path,
    pub dry_run: bool,
    pub skip_bad: bool,
}

/// What one namespace (or the top of `data/`, `None`) contributed.
#[derive(Default)]
struct Counts {
    datums: u64,
    imported: u64,
    skipped: u64,
}

/// What the cluster did with the datums sent.
#[derive(Default)]
struct Sent {
    imported: u64,
    skipped: u64,
    batches: u64,
    /// Log index of the last batch.
    index: Option<u64>,
}

pub fn run(cli: &Cli, output: Output, out: &mut dyn Write, args: &Args) -> Result<Exit> {
    let scan = migrate::scan(args.dir).map_err(|e| match e {
        MigrateError::NotADataDir { .. } => UsageError::new(
            e.to_string(),
            "give the naming data dir of a Nacos 1.x server, ${nacos.home}/data/naming: the one that holds meta.properties and data/",
        )
        .into(),
        e => anyhow::Error::new(e),
    })?;
    if !scan.bad.is_empty() && !args.skip_bad {
        for b in &scan.bad {
            eprintln!("{} {}: {}", ui::prefix(), b.path.display(), b.reason);
        }
        eprintln!(
            "{} nothing was imported: {} {} under {} cannot be imported",
            ui::prefix(),
            scan.bad.len(),
            if scan.bad.len() == 1 { "file" } else { "files" },
            args.dir.display()
        );
        eprintln!(
            "hint: repair or remove what is named above and run again, or add --skip-bad to import the rest and list what was skipped"
        );
        return Ok(Exit::Error);
    }
    let mut counts: BTreeMap<Option<&str>, Counts> = BTreeMap::new();
    for f in &scan.datums {
        counts.entry(f.namespace.as_deref()).or_default().datums += 1;
    }
    let sent = if args.dry_run {
        None
    } else if scan.datums.is_empty() {
        Some(Sent::default())
    } else {
        let client = connect(cli)?;
        Some(send(&client, &scan.datums, &mut counts)?)
    };
    print(output, out, args, &scan, &counts, sent.as_ref())?;
    Ok(Exit::Ok)
}

/// A client for the cluster with the leader first and every member listed, so the import
/// reaches the leader even when the endpoints given name only a follower, and goes on at
/// a new leader after an election. `/v1/status` needs no login, so the login (if any)
/// happens once, for the client that sends.
fn connect(cli: &Cli) -> Result<Client> {
    let given = &cli.endpoints.0;
    // Unanswered, the endpoints given are all there is; the import then says why.
    let status = auth::connect_without_login(cli, given.clone())?
        .status()
        .ok();
    let mut endpoints: Vec<String> = Vec::new();
    endpoints.extend(status.as_ref().and_then(|s| s.leader.clone()));
    endpoints.extend(given.iter().cloned());
    endpoints.extend(status.into_iter().flat_map(|s| s.peers));
    let mut seen = std::collections::HashSet::new();
    endpoints.retain(|e| {
        let name = nacos_raft::client::display_name(e);
        seen.insert(name.trim_start_matches("https://").to_string())
    });
    auth::connect_to(cli, endpoints)
}

/// Sends the datums in key order, in batches of [`BATCH_DATUMS`] or [`BATCH_BYTES`].
/// A reader thread reads the next batch's files again (`migrate::load`) while the current
/// batch is on its way, so reading and the cluster's work overlap; it reads at most one
/// batch ahead.
fn send<'a>(
    client: &Client,
    datums: &'a [Found],
    counts: &mut BTreeMap<Option<&'a str>, Counts>,
) -> Result<Sent> {
    let batches = batches(datums);
    let total = datums.len();
    let mut sent = Sent::default();
    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let ranges = batches.clone();
        s.spawn(move || {
            for range in ranges {
                let batch: Result<Vec<_>, _> = datums[range].iter().map(migrate::load).collect();
                let failed = batch.is_err();
                // The sender stopped (it failed): nothing more to read for it.
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        for (k, range) in batches.iter().enumerate() {
            let part = &datums[range.clone()];
            let stopped = || {
                format!(
                    "the import stopped at batch {} of {} (keys {} to {}) with {} of {total} datums applied; running it again is safe and finishes it (what the cluster holds already is skipped)",
                    k + 1,
                    batches.len(),
                    part[0].key,
                    part[part.len() - 1].key,
                    range.start
                )
            };
            let batch = match rx.recv() {
                Ok(b) => b.with_context(stopped)?,
                Err(_) => anyhow::bail!("{}: the thread reading the files stopped", stopped()),
            };
            let r = client.import(batch).with_context(stopped)?;
            let mut skipped = vec![false; part.len()];
            for &i in &r.skipped {
                if let Some(s) = skipped.get_mut(i as usize) {
                    *s = true;
                }
            }
            for (f, skipped) in part.iter().zip(skipped) {
                let c = counts.entry(f.namespace.as_deref()).or_default();
                if skipped {
                    c.skipped += 1;
                    sent.skipped += 1;
                } else {
                    c.imported += 1;
                    sent.imported += 1;
                }
            }
            sent.batches += 1;
            sent.index = Some(r.index);
            ui::progress(&format!("sent {} of {total} datums", range.end));
        }
        Ok(())
    })?;
    Ok(sent)
}

/// The datums cut into batches: consecutive runs of at most [`BATCH_DATUMS`] datums and
/// [`BATCH_BYTES`] bytes, a datum larger than that alone.
fn batches(datums: &[Found]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < datums.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < datums.len()
            && (end == start
                || (end - start < BATCH_DATUMS && bytes + datums[end].bytes <= BATCH_BYTES))
        {
            bytes += datums[end].bytes;
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

fn ns_name(ns: Option<&str>) -> &str {
    ns.unwrap_or("-")
}

fn print(
    output: Output,
    out: &mut dyn Write,
    args: &Args,
    scan: &Scan,
    counts: &BTreeMap<Option<&str>, Counts>,
    sent: Option<&Sent>,
) -> Result<()> {
    let sent_any = sent.is_some();
    // Rows of files worth a look: what was changed, lost to a newer file, left out.
    let mut files: Vec<(&str, String, String)> = Vec::new();
    for n in &scan.converted {
        files.push(("converted", n.path.display().to_string(), n.reason.clone()));
    }
    for s in &scan.superseded {
        files.push((
            "superseded",
            s.path.display().to_string(),
            format!(
                "{:?} at timestamp {}; {} holds it at {}, and the newer one is imported (Nacos 1.4 would keep whichever it listed last)",
                s.key,
                s.timestamp,
                s.by.display(),
                s.by_timestamp
            ),
        ));
    }
    for n in scan.meta_note.iter().chain(&scan.ignored) {
        files.push(("ignored", n.path.display().to_string(), n.reason.clone()));
    }
    for n in &scan.bad {
        files.push((
            "bad",
            n.path.display().to_string(),
            format!("{} (skipped: --skip-bad)", n.reason),
        ));
    }
    match output {
        Output::Json => {
            let namespaces: Vec<Value> = counts
                .iter()
                .map(|(ns, c)| {
                    json!({
                        "namespace": ns,
                        "datums": c.datums,
                        "imported": sent_any.then_some(c.imported),
                        "skipped": sent_any.then_some(c.skipped),
                    })
                })
                .collect();
            let notes = |kind: &str| -> Vec<Value> {
                files
                    .iter()
                    .filter(|f| f.0 == kind)
                    .map(|f| json!({"file": f.1, "reason": f.2}))
                    .collect()
            };
            let superseded: Vec<Value> = scan
                .superseded
                .iter()
                .map(|s| {
                    json!({
                        "file": s.path.display().to_string(),
                        "key": s.key,
                        "timestamp": s.timestamp,
                        "by": s.by.display().to_string(),
                        "by_timestamp": s.by_timestamp,
                    })
                })
                .collect();
            let bad: Vec<Value> = scan
                .bad
                .iter()
                .map(|n| json!({"file": n.path.display().to_string(), "reason": n.reason}))
                .collect();
            render::json(
                out,
                &json!({
                    "dir": args.dir.display().to_string(),
                    "dry_run": args.dry_run,
                    "nacos_term": scan.term,
                    "files": scan.files,
                    "datums": scan.datums.len(),
                    "imported": sent.map(|s| s.imported),
                    "skipped": sent.map(|s| s.skipped),
                    "batches": sent.map_or(0, |s| s.batches),
                    "index": sent.and_then(|s| s.index),
                    "namespaces": namespaces,
                    "converted": notes("converted"),
                    "superseded": superseded,
                    "ignored": notes("ignored"),
                    "bad": bad,
                }),
            )?;
        }
        Output::Table => {
            let cell = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
            let mut rows: Vec<Vec<String>> = counts
                .iter()
                .map(|(ns, c)| {
                    vec![
                        ns_name(*ns).to_string(),
                        c.datums.to_string(),
                        cell(sent_any.then_some(c.imported)),
                        cell(sent_any.then_some(c.skipped)),
                    ]
                })
                .collect();
            rows.push(vec![
                "total".into(),
                scan.datums.len().to_string(),
                cell(sent.map(|s| s.imported)),
                cell(sent.map(|s| s.skipped)),
            ]);
            render::table(out, &["NAMESPACE", "DATUMS", "IMPORTED", "SKIPPED"], rows)?;
            if !files.is_empty() {
                render::table(
                    out,
                    &["OUTCOME", "FILE", "REASON"],
                    files
                        .into_iter()
                        .map(|(k, f, r)| vec![k.to_string(), f, r])
                        .collect(),
                )?;
            }
        }
        Output::Text => {
            let head = match sent {
                Some(s) => format!(
                    "OK imported={} skipped={} datums={}",
                    s.imported,
                    s.skipped,
                    scan.datums.len()
                ),
                None => format!("OK dry-run datums={}", scan.datums.len()),
            };
            writeln!(
                out,
                "{head} files={} ignored={} bad={} superseded={} batches={} index={} nacos_term={} dir={}",
                scan.files,
                scan.ignored.len(),
                scan.bad.len(),
                scan.superseded.len(),
                sent.map_or(0, |s| s.batches),
                render::opt(&sent.and_then(|s| s.index)),
                render::opt(&scan.term),
                args.dir.display()
            )?;
            for (ns, c) in counts {
                match sent {
                    Some(_) => writeln!(
                        out,
                        "namespace\t{}\tdatums={}\timported={}\tskipped={}",
                        ns_name(*ns),
                        c.datums,
                        c.imported,
                        c.skipped
                    )?,
                    None => writeln!(out, "namespace\t{}\tdatums={}", ns_name(*ns), c.datums)?,
                }
            }
            for (kind, file, reason) in &files {
                writeln!(out, "{kind}\t{file}\t{reason}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(bytes: usize) -> Found {
        Found {
            key: "k".into(),
            timestamp: 1,
            path: "f".into(),
            namespace: None,
            bytes,
        }
    }

    #[test]
    fn batches_hold_at_most_1000_datums_or_2_mib() {
        let small: Vec<Found> = (0..2500).map(|_| found(100)).collect();
        assert_eq!(batches(&small), vec![0..1000, 1000..2000, 2000..2500]);
        // 700 KiB each: two fit in 2 MiB, a third does not.
        let mid: Vec<Found> = (0..7).map(|_| found(700 << 10)).collect();
        assert_eq!(batches(&mid), vec![0..2, 2..4, 4..6, 6..7]);
        // A datum over the batch budget goes alone, and the others around it too.
        let big = vec![found(10), found(3 << 20), found(10)];
        assert_eq!(batches(&big), vec![0..1, 1..2, 2..3]);
        assert!(batches(&[]).is_empty());
    }
}
