//! `nacosctl bench put|get`: a load generator for measuring a running cluster (closed loop:
//! each client sends its next request when the previous one is answered).
//!
//! Speed is measured here and written to docs/benchmarks.md by hand, never asserted in tests.

use std::io::Write;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nacos_raft::client::Client;
use serde_json::{json, Value};

use crate::cli::{BenchOp, Output};
use crate::exit::Exit;
use crate::render;

pub struct BenchArgs {
    pub op: BenchOp,
    pub clients: usize,
    pub requests: usize,
    pub keys: usize,
    pub value_size: usize,
    pub stale: bool,
}

/// Latency percentile of sorted samples (nearest rank).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub fn run(client: &Client, output: Output, out: &mut dyn Write, a: &BenchArgs) -> Result<Exit> {
    if a.clients == 0 || a.requests == 0 || a.keys == 0 {
        bail!("--clients, --requests and --keys must be positive");
    }
    let value = Value::String("x".repeat(a.value_size));
    if matches!(a.op, BenchOp::Get) {
        // Something to read.
        for k in 0..a.keys {
            client.put(&format!("bench/{k}"), value.clone())?;
        }
    }
    let per_client = a.requests.div_ceil(a.clients);
    let start = Arc::new(Barrier::new(a.clients + 1));
    let mut handles = Vec::new();
    for c in 0..a.clients {
        let client = client.clone();
        let start = start.clone();
        let value = value.clone();
        let (op, keys, stale) = (a.op, a.keys, a.stale);
        handles.push(thread::spawn(move || {
            let mut lat = Vec::with_capacity(per_client);
            let mut errors = 0usize;
            start.wait();
            // From the common start, so each rate leaves out the wait for the other threads.
            let began_at = Instant::now();
            // The longest this client waited for an answer: a starved connection shows here
            // even when the totals look fine.
            let mut longest = Duration::ZERO;
            for i in 0..per_client {
                let key = format!("bench/{}", (c * per_client + i) % keys);
                let t = Instant::now();
                let ok = match op {
                    BenchOp::Put => client.put(&key, value.clone()).is_ok(),
                    BenchOp::Get => client.get(&key, stale).is_ok(),
                };
                longest = longest.max(t.elapsed());
                if ok {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (lat, errors, longest, began_at.elapsed())
        }));
    }
    start.wait();
    let began = Instant::now();
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut rates = Vec::new();
    let mut longest = Duration::ZERO;
    for h in handles {
        let (l, e, wait, took) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a bench client panicked"))?;
        rates.push(l.len() as f64 / took.as_secs_f64().max(1e-9));
        longest = longest.max(wait);
        lat.extend(l);
        errors += e;
    }
    let spread = Spread::of(&mut rates);
    let wall = began.elapsed();
    lat.sort_unstable();
    let ok = lat.len();
    let report = json!({
        "op": match a.op { BenchOp::Put => "put", BenchOp::Get => "get" },
        "clients": a.clients,
        "requests": ok + errors,
        "ok": ok,
        "errors": errors,
        "seconds": (wall.as_secs_f64() * 1000.0).round() / 1000.0,
        "per_second": (ok as f64 / wall.as_secs_f64()).round(),
        "latency_ms": {
            "p50": ms(percentile(&lat, 50.0)),
            "p90": ms(percentile(&lat, 90.0)),
            "p99": ms(percentile(&lat, 99.0)),
            "max": ms(lat.last().copied().unwrap_or_default()),
        },
        // Each client's own rate (answers per second while it ran): equal shares mean no
        // connection was starved.
        "per_client_per_second": {
            "min": spread.min.round(),
            "median": spread.median.round(),
            "max": spread.max.round(),
        },
        "longest_wait_ms": ms(longest),
    });
    match output {
        Output::Json => render::json(out, &report)?,
        Output::Table => render::table(
            out,
            &[
                "OP",
                "CLIENTS",
                "OK",
                "ERRORS",
                "PER SEC",
                "P50 MS",
                "P90 MS",
                "P99 MS",
                "MAX MS",
                "PER CLIENT MIN/MED/MAX",
            ],
            vec![vec![
                report["op"].as_str().unwrap_or_default().to_string(),
                a.clients.to_string(),
                ok.to_string(),
                errors.to_string(),
                report["per_second"].to_string(),
                report["latency_ms"]["p50"].to_string(),
                report["latency_ms"]["p90"].to_string(),
                report["latency_ms"]["p99"].to_string(),
                report["latency_ms"]["max"].to_string(),
                format!("{:.0}/{:.0}/{:.0}", spread.min, spread.median, spread.max),
            ]],
        )?,
        Output::Text => writeln!(
            out,
            "{} x{}: {ok} ok, {errors} errors in {:.2}s = {} per second; latency ms p50 {} p90 {} p99 {} max {}; per client {:.0}/{:.0}/{:.0} per second (min/median/max)",
            report["op"].as_str().unwrap_or_default(),
            a.clients,
            wall.as_secs_f64(),
            report["per_second"],
            report["latency_ms"]["p50"],
            report["latency_ms"]["p90"],
            report["latency_ms"]["p99"],
            report["latency_ms"]["max"],
            spread.min,
            spread.median,
            spread.max,
        )?,
    }
    Ok(if errors == 0 { Exit::Ok } else { Exit::Error })
}

/// Minimum, median and maximum of per-client rates.
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

impl Spread {
    fn of(rates: &mut [f64]) -> Spread {
        rates.sort_by(f64::total_cmp);
        let at = |i: usize| rates.get(i).copied().unwrap_or(0.0);
        Spread {
            min: at(0),
            median: at(rates.len() / 2),
            max: at(rates.len().saturating_sub(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_of_client_rates() {
        let s = Spread::of(&mut [30.0, 10.0, 20.0]);
        assert_eq!((s.min, s.median, s.max), (10.0, 20.0, 30.0));
        let none = Spread::of(&mut []);
        assert_eq!((none.min, none.median, none.max), (0.0, 0.0, 0.0));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
