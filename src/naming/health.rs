//! TCP health checks of persistent instances (Nacos `TcpSuperSenseProcessor`), off unless
//! the node is started with `--health-check tcp`.
//!
//! Owns when an instance counts as healthy: the leader alone connects to every instance
//! each interval, and `healthy` changes after [`CHECK_TIMES`] results in a row that
//! disagree with it (Nacos's `checkTimes`), so only changes of state reach the log, never
//! the probes. Only IP literals are probed: a host name would mean a DNS lookup nobody
//! asked for.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{Instances, ServiceId};
use crate::node::{log_event, Node, Outcome};
use crate::raft::Command;

/// Results in a row that disagree with an instance's `healthy` before it changes.
pub const CHECK_TIMES: u32 = 3;
/// Probes at once.
const PARALLEL: usize = 32;

/// `--health-check tcp` and its timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
}

/// One instance, as probed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Target {
    service: ServiceId,
    ip: String,
    port: u16,
    cluster: String,
}

/// Runs the checks until the process ends (a critical thread).
pub fn run(node: &Node, cfg: HealthCheck) {
    // Per instance: how many results in a row disagreed with its `healthy`.
    let mut streaks: HashMap<Target, u32> = HashMap::new();
    loop {
        std::thread::sleep(cfg.interval);
        let s = node.raft_status();
        if s.leader.as_ref() != Some(&s.id) {
            streaks.clear();
            continue;
        }
        let targets: Vec<(Target, bool, SocketAddr)> = node.naming().read(node.datums(), |all| {
            all.iter()
                .filter_map(|(id, e)| e.instances.as_ref().map(|(l, _)| (id, l)))
                .flat_map(|(id, l)| {
                    l.instance_list.iter().filter_map(move |i| {
                        let ip: IpAddr = i.ip.parse().ok()?;
                        let target = Target {
                            service: id.clone(),
                            ip: i.ip.clone(),
                            port: i.port,
                            cluster: i.cluster_name.clone(),
                        };
                        Some((target, i.healthy, SocketAddr::new(ip, i.port)))
                    })
                })
                .collect()
        });
        streaks.retain(|t, _| targets.iter().any(|(x, _, _)| x == t));
        let results = probe_all(&targets, cfg.timeout);
        for ((target, healthy, _), reachable) in targets.into_iter().zip(results) {
            let Some(reachable) = reachable else {
                continue;
            };
            let streak = streaks.entry(target.clone()).or_insert(0);
            if reachable == healthy {
                *streak = 0;
                continue;
            }
            *streak += 1;
            if *streak < CHECK_TIMES {
                continue;
            }
            streaks.remove(&target);
            let deadline = Instant::now() + node.publish_timeout();
            match set_healthy(node, &target, reachable, deadline) {
                Ok(true) => log_event(&format!(
                    "health check: {}:{} of {} is {} now",
                    target.ip,
                    target.port,
                    target.service.grouped(),
                    if reachable { "healthy" } else { "unhealthy" }
                )),
                Ok(false) => {}
                Err(e) => log_event(&format!(
                    "warning: health check: cannot mark {}:{} of {}: {e}; tried again next round",
                    target.ip,
                    target.port,
                    target.service.grouped()
                )),
            }
        }
    }
}

/// Connects to each target, [`PARALLEL`] at a time; whether each accepted in time, or
/// `None` where no thread could be started for the probe (that round tells nothing of it:
/// a member short of threads must not call its instances dead, nor stop over it).
fn probe_all(targets: &[(Target, bool, SocketAddr)], timeout: Duration) -> Vec<Option<bool>> {
    let mut results = Vec::with_capacity(targets.len());
    for chunk in targets.chunks(PARALLEL) {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(_, _, addr)| {
                    std::thread::Builder::new()
                        .name("health-probe".into())
                        .spawn_scoped(s, move || TcpStream::connect_timeout(addr, timeout).is_ok())
                        .ok()
                })
                .collect();
            results.extend(handles.into_iter().map(|h| h.and_then(|h| h.join().ok())));
        });
    }
    results
}

/// Sets one instance's `healthy` by compare-and-set on its list, as the member itself
/// (`root`: the check is the cluster's own, whatever access control says of clients).
/// Whether it changed anything.
fn set_healthy(node: &Node, t: &Target, healthy: bool, deadline: Instant) -> crate::Result<bool> {
    let key = t.service.iplist_key();
    loop {
        let Some(d) = node.get(&key, false, deadline)? else {
            return Ok(false);
        };
        let Ok(mut list) = serde_json::from_value::<Instances>(d.value) else {
            return Ok(false);
        };
        let Some(i) = list
            .instance_list
            .iter_mut()
            .find(|i| i.same_as(&t.ip, t.port, &t.cluster))
        else {
            return Ok(false);
        };
        if i.healthy == healthy {
            return Ok(false);
        }
        i.healthy = healthy;
        let command = Command::Publish {
            key: key.clone(),
            value: serde_json::to_value(&list).expect("naming values serialise"),
            if_timestamp: Some(d.timestamp),
            request: None,
            user: Some(crate::auth::ROOT.to_string()),
        };
        match node.write_one(&key, command, deadline)? {
            (Outcome::PreconditionFailed { .. }, _) if Instant::now() < deadline => {}
            (Outcome::PreconditionFailed { current }, _) => {
                return Err(crate::Error::PreconditionFailed { key, current })
            }
            _ => return Ok(true),
        }
    }
}
