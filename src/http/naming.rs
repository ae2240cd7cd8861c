//! The Nacos 1.x naming Open API for persistent instances and services
//! (`/nacos/v1/ns/instance`, `/service`, `/health`, `/operator/metrics`), parsed as Nacos
//! 1.4's `InstanceController` and `ServiceController` parse it.
//!
//! Owns the parameters and the answers. A change is a read-modify-write of one datum,
//! published with `if_timestamp` set to the timestamp read, and done again when another
//! change got there first: two instances registering at once both end up in the list.
//! Reads come from the naming view (`naming::view`) after the same barrier as datum reads.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::{auth, Request, Response};
use crate::naming::{
    Instance, Instances, Service, ServiceEntry, ServiceId, DEFAULT_CLUSTER, DEFAULT_GROUP,
    DEFAULT_NAMESPACE,
};
use crate::node::Node;
use crate::wire::ErrorCode;
use crate::{Error, Result};

/// Routes a naming request; `None` when the path is not one.
pub(super) fn route(node: &Node, req: &Request, deadline: Instant) -> Option<Result<Response>> {
    let r = match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/nacos/v1/ns/instance") => register(node, req, deadline),
        ("DELETE", "/nacos/v1/ns/instance") => deregister(node, req, deadline),
        ("PUT", "/nacos/v1/ns/instance") => update_instance(node, req, deadline),
        ("GET", "/nacos/v1/ns/instance") => instance_detail(node, req, deadline),
        ("GET", "/nacos/v1/ns/instance/list") => instance_list(node, req, deadline),
        ("PUT", "/nacos/v1/ns/health") => set_health(node, req, deadline),
        ("POST", "/nacos/v1/ns/service") => create_service(node, req, deadline),
        ("DELETE", "/nacos/v1/ns/service") => remove_service(node, req, deadline),
        ("PUT", "/nacos/v1/ns/service") => update_service(node, req, deadline),
        ("GET", "/nacos/v1/ns/service") => service_detail(node, req, deadline),
        ("GET", "/nacos/v1/ns/service/list") => service_list(node, req, deadline),
        ("GET", "/nacos/v1/ns/operator/metrics") => counts(node, req, deadline),
        _ => return None,
    };
    Some(r)
}

fn ok() -> Response {
    Response::typed(200, "text/plain; charset=utf-8", b"ok".to_vec())
}

// ------------------------------------------------------------------ parameters

/// The query and a form body together, as Nacos's `WebUtils` reads a servlet request.
struct Params(Vec<(String, String)>);

impl Params {
    fn of(req: &Request) -> Result<Params> {
        let mut all = req.query.clone();
        let form = req
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        if form && !req.body.is_empty() {
            let text = std::str::from_utf8(&req.body)
                .map_err(|_| Error::BadRequest("the form body is not UTF-8".into()))?;
            all.extend(super::parse_query(text).map_err(Error::BadRequest)?);
        }
        Ok(Params(all))
    }

    /// A parameter, blank counting as absent (Nacos `WebUtils.optional`).
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
    }

    fn or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.get(name).unwrap_or(default)
    }

    fn required(&self, name: &str) -> Result<&str> {
        self.get(name)
            .ok_or_else(|| Error::BadRequest(format!("Param '{name}' is required.")))
    }

    /// A boolean under any of `names`, in any case.
    fn boolean(&self, names: &[&str], default: bool) -> Result<bool> {
        match names.iter().find_map(|n| self.get(n).map(|v| (n, v))) {
            None => Ok(default),
            Some((_, v)) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some((_, v)) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some((n, v)) => Err(Error::BadRequest(format!(
                "{n} must be true or false, not {v:?}"
            ))),
        }
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| Error::BadRequest(format!("{name} {v:?} is not a number"))),
        }
    }

    /// The service: `serviceName` with or without its `group@@` prefix, `groupName`
    /// (default `DEFAULT_GROUP`) and `namespaceId` (default `public`).
    fn service(&self) -> Result<ServiceId> {
        let namespace = self.or("namespaceId", DEFAULT_NAMESPACE);
        let name = self.required("serviceName")?;
        let (group, name) = match name.split_once("@@") {
            Some((g, n)) if !g.is_empty() && !n.is_empty() => (g, n),
            Some(_) => {
                return Err(Error::BadRequest(format!(
                    "serviceName {name:?} is not group@@name"
                )))
            }
            None => (self.or("groupName", DEFAULT_GROUP), name),
        };
        // The separators of Nacos's keys cannot be inside a part, or the key would read
        // back as another service.
        for (what, part) in [
            ("namespaceId", namespace),
            ("groupName", group),
            ("serviceName", name),
        ] {
            if part.contains("##") || part.contains("@@") {
                return Err(Error::BadRequest(format!(
                    "{what} {part:?} may not contain ## or @@ (Nacos's key separators)"
                )));
            }
        }
        let id = ServiceId::new(namespace, group, name);
        // The keys must be valid datum keys: a name they cannot hold is refused here.
        crate::validate_key(&id.iplist_key())?;
        Ok(id)
    }

    /// Refuses ephemeral instances (Nacos's default): they live in Nacos's AP protocol.
    fn persistent(&self) -> Result<()> {
        if self.boolean(&["ephemeral"], true)? {
            return Err(Error::BadRequest(
                "ephemeral instances live in Nacos's AP protocol (Distro), which nacos-raft does not run; send ephemeral=false for a persistent instance".into(),
            ));
        }
        Ok(())
    }

    fn ip_port(&self) -> Result<(String, u16)> {
        let ip = self.required("ip")?.to_string();
        let port = self.required("port")?;
        let port = port
            .parse()
            .map_err(|_| Error::BadRequest(format!("port {port:?} is not a port (0-65535)")))?;
        Ok((ip, port))
    }

    /// What names an instance within its service: `ip`, `port` and `clusterName`.
    fn address(&self) -> Result<(String, u16, String)> {
        let (ip, port) = self.ip_port()?;
        Ok((
            ip,
            port,
            self.or("clusterName", DEFAULT_CLUSTER).to_string(),
        ))
    }

    fn metadata(&self) -> Result<BTreeMap<String, String>> {
        match self.get("metadata") {
            None => Ok(BTreeMap::new()),
            Some(text) => parse_metadata(text),
        }
    }

    /// The instance a register or update describes (Nacos `parseInstance`).
    fn instance(&self, service: &ServiceId) -> Result<Instance> {
        let (ip, port) = self.ip_port()?;
        let cluster = self.or("clusterName", DEFAULT_CLUSTER).to_string();
        let weight: f64 = self.number("weight", 1.0)?;
        if !(0.0..=10000.0).contains(&weight) {
            return Err(Error::BadRequest(format!(
                "weight {weight} is out of range: the weights range from 0.0 to 10000.0"
            )));
        }
        Ok(Instance {
            instance_id: Instance::simple_id(&ip, port, &cluster, service),
            ip,
            port,
            weight,
            healthy: self.boolean(&["healthy"], true)?,
            enabled: self.boolean(&["enabled", "enable"], true)?,
            ephemeral: false,
            cluster_name: cluster,
            service_name: service.grouped(),
            metadata: self.metadata()?,
            extra: Default::default(),
        })
    }
}

/// `metadata` as JSON text (`{"k":"v"}`) or as `k=v,k2=v2` (Nacos `parseMetadata`).
fn parse_metadata(text: &str) -> Result<BTreeMap<String, String>> {
    if let Ok(map) = serde_json::from_str::<BTreeMap<String, serde_json::Value>>(text) {
        return Ok(map
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect());
    }
    let mut map = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.contains('=') => {
                map.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => {
                return Err(Error::BadRequest(format!(
                    "metadata format incorrect: {pair:?}; send a JSON object or k=v,k2=v2"
                )))
            }
        }
    }
    Ok(map)
}

// ------------------------------------------------------------------ read-modify-write

/// What a change does to the datum it read.
enum Step<T> {
    Put(T),
    Delete,
    Keep,
}

/// Reads `key` (linearizable), lets `f` decide, and publishes the result only if the datum
/// is still as read; done again while another change got there first. `Ok(Some(resp))` is
/// a refusal from the leader, passed on as it came.
fn read_modify_write<T: Serialize + DeserializeOwned>(
    node: &Node,
    req: &Request,
    key: &str,
    deadline: Instant,
    mut f: impl FnMut(Option<T>) -> Result<Step<T>>,
) -> Result<Option<Response>> {
    // One change of a datum at a time on this member: changes sent to one member never
    // collide with each other, only with those of other members.
    let _turn = key_locks().take(key, deadline)?;
    let mut attempt = 0u32;
    loop {
        let current = node.get(key, false, deadline)?;
        let timestamp = current.as_ref().map_or(0, |d| d.timestamp);
        let value = current
            .map(|d| {
                serde_json::from_value::<T>(d.value).map_err(|e| {
                    Error::Conflict(format!(
                        "{key} does not hold a Nacos {} value ({e}); nothing changed. Fix or delete it with `nacosctl put`/`nacosctl del`",
                        std::any::type_name::<T>().rsplit("::").next().unwrap_or("naming")
                    ))
                })
            })
            .transpose()?;
        let write = match f(value)? {
            Step::Keep => return Ok(None),
            Step::Delete if timestamp == 0 => return Ok(None),
            Step::Delete => Request {
                method: "DELETE".into(),
                path: "/v1/datum".into(),
                query: vec![
                    ("key".into(), key.to_string()),
                    ("if_timestamp".into(), timestamp.to_string()),
                ],
                access_token: req.access_token.clone(),
                ..Request::default()
            },
            Step::Put(v) => Request {
                method: "POST".into(),
                path: "/v1/datum".into(),
                body: serde_json::to_vec(&json!({
                    "key": key,
                    "value": v,
                    "if_timestamp": timestamp,
                }))
                .expect("naming values serialise"),
                access_token: req.access_token.clone(),
                ..Request::default()
            },
        };
        match super::write(node, &write, deadline) {
            Ok(resp) if resp.status == 200 => return Ok(None),
            // A forwarded write answers the leader's 412 as a response.
            Ok(resp) if resp.status == 412 => {}
            Ok(resp) => return Ok(Some(resp)),
            Err(Error::PreconditionFailed { .. }) => {}
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                waited_ms: node.config().publish_timeout_ms,
            });
        }
        // Lost the race: back off a little (more after each loss, jittered), so that many
        // writers of one service do not keep colliding.
        attempt = attempt.saturating_add(1);
        let jitter = {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(attempt) % 1000
        };
        let micros = (200u64 << attempt.min(5)) + jitter;
        std::thread::sleep(Duration::from_micros(micros));
    }
}

/// The datums a read-modify-write is under way for on this member.
#[derive(Default)]
struct KeyLocks {
    held: Mutex<HashSet<String>>,
    freed: Condvar,
}

struct KeyTurn {
    locks: &'static KeyLocks,
    key: String,
}

impl Drop for KeyTurn {
    fn drop(&mut self) {
        self.locks.held.lock().expect("key locks").remove(&self.key);
        self.locks.freed.notify_all();
    }
}

impl KeyLocks {
    /// Waits for `key`'s turn until `deadline`; nothing was done if it does not come.
    fn take(&'static self, key: &str, deadline: Instant) -> Result<KeyTurn> {
        let mut held = self.held.lock().expect("key locks");
        while held.contains(key) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Busy(format!(
                    "too many changes of {key} queued on this member; nothing was done, retry"
                )));
            }
            held = self.freed.wait_timeout(held, left).expect("key locks").0;
        }
        held.insert(key.to_string());
        Ok(KeyTurn {
            locks: self,
            key: key.to_string(),
        })
    }
}

fn key_locks() -> &'static KeyLocks {
    static LOCKS: OnceLock<KeyLocks> = OnceLock::new();
    LOCKS.get_or_init(KeyLocks::default)
}

/// Runs the steps of one change in order; the first refusal is the answer.
fn answer(steps: impl IntoIterator<Item = Result<Option<Response>>>) -> Result<Response> {
    for step in steps {
        if let Some(refused) = step? {
            return Ok(refused);
        }
    }
    Ok(ok())
}

/// Creates the service's meta if it has none (Nacos creates an empty service when an
/// instance registers into one that does not exist).
fn ensure_service(
    node: &Node,
    req: &Request,
    id: &ServiceId,
    deadline: Instant,
) -> Result<Option<Response>> {
    read_modify_write(
        node,
        req,
        &id.meta_key(),
        deadline,
        |cur: Option<Service>| {
            Ok(match cur {
                Some(_) => Step::Keep,
                None => Step::Put(Service::new(id)),
            })
        },
    )
}

// ------------------------------------------------------------------ instances

fn register(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let p = Params::of(req)?;
    p.persistent()?;
    let id = p.service()?;
    let instance = p.instance(&id)?;
    if let Some(refused) = ensure_service(node, req, &id, deadline)? {
        return Ok(refused);
    }
    answer([read_modify_write(
        node,
        req,
        &id.iplist_key(),
        deadline,
        |cur: Option<Instances>| {
            let mut list = cur.unwrap_or_default();
            let mut fresh = instance.clone();
            if let Some(old) = list
                .instance_list
                .iter()
                .position(|i| i.same_as(&fresh.ip, fresh.port, &fresh.cluster_name))
            {
                // Registering again replaces the instance, keeping what Nacos stored
                // beside the fields the request sets.
                fresh.extra = list.instance_list.remove(old).extra;
                list.instance_list.insert(old, fresh);
            } else {
                list.instance_list.push(fresh);
            }
            Ok(Step::Put(list))
        },
    )])
}

fn deregister(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let p = Params::of(req)?;
    p.persistent()?;
    let id = p.service()?;
    let (ip, port, cluster) = p.address()?;
    // As in Nacos, removing an instance that is not there is no error.
    answer([read_modify_write(
        node,
        req,
        &id.iplist_key(),
        deadline,
        |cur: Option<Instances>| {
            let Some(mut list) = cur else {
                return Ok(Step::Keep);
            };
            let before = list.instance_list.len();
            list.instance_list
                .retain(|i| !i.same_as(&ip, port, &cluster));
            Ok(if list.instance_list.len() == before {
                Step::Keep
            } else {
                Step::Put(list)
            })
        },
    )])
}

/// Changes an instance in place: `f` gets it, or the request fails with Nacos's
/// "instance not exist".
fn change_instance(
    node: &Node,
    req: &Request,
    p: &Params,
    deadline: Instant,
    mut f: impl FnMut(&mut Instance),
) -> Result<Response> {
    let id = p.service()?;
    let (ip, port, cluster) = p.address()?;
    answer([read_modify_write(
        node,
        req,
        &id.iplist_key(),
        deadline,
        |cur: Option<Instances>| {
            let mut list = cur.unwrap_or_default();
            let Some(i) = list
                .instance_list
                .iter_mut()
                .find(|i| i.same_as(&ip, port, &cluster))
            else {
                return Err(Error::BadRequest(format!(
                    "instance not exist: {ip}:{port} in cluster {cluster} of {}; register it first (POST /nacos/v1/ns/instance)",
                    id.grouped()
                )));
            };
            f(i);
            Ok(Step::Put(list))
        },
    )])
}

fn update_instance(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let p = Params::of(req)?;
    p.persistent()?;
    let id = p.service()?;
    let new = p.instance(&id)?;
    change_instance(node, req, &p, deadline, |i| {
        let extra = std::mem::take(&mut i.extra);
        *i = Instance {
            extra,
            ..new.clone()
        };
    })
}

fn set_health(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let p = Params::of(req)?;
    if node.config().health_check.is_some() {
        return Err(Error::BadRequest(
            "health check is still working: this cluster checks instances itself (--health-check tcp), so their health cannot be set by hand".into(),
        ));
    }
    p.required("healthy")?;
    let healthy = p.boolean(&["healthy"], false)?;
    change_instance(node, req, &p, deadline, |i| i.healthy = healthy)
}

/// Reads the view after the barrier of a linearizable read (unless `stale`), checking
/// that the caller may read the service's instance list.
fn read_view<R>(
    node: &Node,
    req: &Request,
    id: Option<&ServiceId>,
    deadline: Instant,
    f: impl FnOnce(&BTreeMap<ServiceId, ServiceEntry>) -> R,
) -> Result<R> {
    if !req.flag("stale") {
        node.linearizable_barrier(deadline)?;
    }
    let caller = auth::caller(node, req, deadline)?;
    if let Some(id) = id {
        caller.check(node, crate::auth::Access::Read, &id.iplist_key(), deadline)?;
    }
    Ok(node.naming().read(node.datums(), f))
}

fn host_json(i: &Instance) -> serde_json::Value {
    json!({
        "instanceId": i.instance_id,
        "ip": i.ip,
        "port": i.port,
        "weight": i.weight,
        "healthy": i.healthy,
        "enabled": i.enabled,
        "ephemeral": false,
        "clusterName": i.cluster_name,
        "serviceName": i.service_name,
        "metadata": i.metadata,
        "instanceHeartBeatInterval": 5000,
        "instanceHeartBeatTimeOut": 15000,
        "ipDeleteTimeout": 30000,
        "instanceIdGenerator": "simple",
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn instance_list(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let p = Params::of(req)?;
    let id = p.service()?;
    let clusters: Vec<String> = p
        .or("clusters", "")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let healthy_only = p.boolean(&["healthyOnly"], false)?;
    let hosts = read_view(node, req, Some(&id), deadline, |services| {
        let Some(entry) = services.get(&id) else {
            return Vec::new();
        };
        let Some((list, _)) = &entry.instances else {
            return Vec::new();
        };
        list.instance_list
            .iter()
            .filter(|i| i.enabled)
            .filter(|i| clusters.is_empty() || clusters.contains(&i.cluster_name))
            .filter(|i| !healthy_only || i.healthy)
            .map(host_json)
            .collect::<Vec<_>>()
    })?;
    Ok(Response::json(
        200,
        &json!({
            "name": id.grouped(),
            "groupName": id.group,
            "clusters": clusters.join(","),
            "cacheMillis": 3000,
            "hosts": hosts,
            "lastRefTime": now_ms(),
            "checksum": "",
            "allIPs": false,
            "reachProtectionThreshold": false,
            "valid": true,
        }),
    ))
}

fn instance_detail(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let p = Params::of(req)?;
    let id = p.service()?;
    let (ip, port) = p.ip_port()?;
    let cluster = p
        .get("cluster")
        .or_else(|| p.get("clusterName"))
        .unwrap_or(DEFAULT_CLUSTER)
        .to_string();
    let found = read_view(node, req, Some(&id), deadline, |services| {
        services
            .get(&id)
            .and_then(|e| e.instances.as_ref())
            .and_then(|(l, _)| {
                l.instance_list
                    .iter()
                    .find(|i| i.same_as(&ip, port, &cluster))
                    .cloned()
            })
    })?;
    match found {
        Some(i) => Ok(Response::json(
            200,
            &json!({
                "service": id.grouped(),
                "ip": i.ip,
                "port": i.port,
                "clusterName": i.cluster_name,
                "weight": i.weight,
                "healthy": i.healthy,
                "enabled": i.enabled,
                "instanceId": i.instance_id,
                "metadata": i.metadata,
            }),
        )),
        None => Ok(Response::refusal(
            ErrorCode::NotFound,
            format!(
                "no matched ip found: {ip}:{port} in cluster {cluster} of {}",
                id.grouped()
            ),
        )),
    }
}

// ------------------------------------------------------------------ services

/// `protectThreshold`, `metadata` and `selector` of a create or update.
fn apply_service_params(p: &Params, s: &mut Service) -> Result<()> {
    if let Some(t) = p.get("protectThreshold") {
        let t: f64 = t
            .parse()
            .map_err(|_| Error::BadRequest(format!("protectThreshold {t:?} is not a number")))?;
        if !(0.0..=1.0).contains(&t) {
            return Err(Error::BadRequest(format!(
                "protectThreshold {t} must be between 0 and 1"
            )));
        }
        s.protect_threshold = t;
    }
    if p.get("metadata").is_some() {
        s.metadata = p.metadata()?;
    }
    if let Some(sel) = p.get("selector") {
        s.selector = serde_json::from_str(sel).map_err(|e| {
            Error::BadRequest(format!(
                "selector must be JSON such as {{\"type\":\"none\"}}: {e}"
            ))
        })?;
    }
    Ok(())
}

fn create_service(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let p = Params::of(req)?;
    let id = p.service()?;
    let mut fresh = Service::new(&id);
    apply_service_params(&p, &mut fresh)?;
    answer([read_modify_write(
        node,
        req,
        &id.meta_key(),
        deadline,
        |cur: Option<Service>| match cur {
            Some(_) => Err(Error::Conflict(format!(
                "specified service already exists, serviceName : {}",
                id.grouped()
            ))),
            None => Ok(Step::Put(fresh.clone())),
        },
    )])
}

fn update_service(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let p = Params::of(req)?;
    let id = p.service()?;
    answer([read_modify_write(
        node,
        req,
        &id.meta_key(),
        deadline,
        |cur: Option<Service>| {
            let Some(mut s) = cur else {
                return Err(Error::NotFound(format!(
                    "service {} in namespace {}",
                    id.grouped(),
                    id.namespace
                )));
            };
            apply_service_params(&p, &mut s)?;
            Ok(Step::Put(s))
        },
    )])
}

fn remove_service(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let p = Params::of(req)?;
    let id = p.service()?;
    let exists = node.get(&id.meta_key(), false, deadline)?.is_some()
        || node.get(&id.iplist_key(), true, deadline)?.is_some();
    if !exists {
        return Err(Error::NotFound(format!(
            "service {} in namespace {}",
            id.grouped(),
            id.namespace
        )));
    }
    // The instance list goes first and only while empty (compare-and-set on it), so an
    // instance registering meanwhile either refuses the delete or comes after it.
    answer([
        read_modify_write(
            node,
            req,
            &id.iplist_key(),
            deadline,
            |cur: Option<Instances>| match cur {
                Some(l) if !l.instance_list.is_empty() => Err(Error::Conflict(format!(
                    "specified service has instances, serviceName : {}; deregister them first",
                    id.grouped()
                ))),
                Some(_) => Ok(Step::Delete),
                None => Ok(Step::Keep),
            },
        ),
        read_modify_write(node, req, &id.meta_key(), deadline, |_: Option<Service>| {
            Ok(Step::Delete)
        }),
    ])
}

fn service_detail(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let p = Params::of(req)?;
    let id = p.service()?;
    let entry = read_view(node, req, Some(&id), deadline, |s| s.get(&id).cloned())?;
    let Some(entry) = entry else {
        return Ok(Response::refusal(
            ErrorCode::NotFound,
            format!(
                "service {} not found in namespace {}",
                id.grouped(),
                id.namespace
            ),
        ));
    };
    let meta = entry
        .meta
        .map(|(s, _)| s)
        .unwrap_or_else(|| Service::new(&id));
    let mut clusters: Vec<&str> = entry
        .instances
        .as_ref()
        .map(|(l, _)| {
            l.instance_list
                .iter()
                .map(|i| i.cluster_name.as_str())
                .collect()
        })
        .unwrap_or_default();
    clusters.sort_unstable();
    clusters.dedup();
    let clusters: Vec<_> = clusters
        .into_iter()
        .map(|c| json!({"name": c, "healthChecker": {"type": "TCP"}, "metadata": {}}))
        .collect();
    Ok(Response::json(
        200,
        &json!({
            "namespaceId": id.namespace,
            "groupName": id.group,
            "name": id.name,
            "protectThreshold": meta.protect_threshold,
            "metadata": meta.metadata,
            "selector": meta.selector,
            "clusters": clusters,
        }),
    ))
}

fn service_list(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    let p = Params::of(req)?;
    let namespace = p.or("namespaceId", DEFAULT_NAMESPACE).to_string();
    let group = p.or("groupName", DEFAULT_GROUP).to_string();
    let page_no: usize = p.number("pageNo", 1)?;
    let page_size: usize = p.number("pageSize", 20)?;
    if page_no == 0 || page_size == 0 || page_size > 10_000 {
        return Err(Error::BadRequest(
            "pageNo starts at 1, and pageSize is from 1 to 10000".into(),
        ));
    }
    let caller = auth::caller(node, req, deadline)?;
    let names: Vec<String> = read_view(node, req, None, deadline, |services| {
        services
            .keys()
            .filter(|id| id.namespace == namespace && id.group == group)
            .filter(|id| caller.may_read(node, &id.iplist_key()))
            .map(|id| id.name.clone())
            .collect()
    })?;
    let doms: Vec<&String> = names
        .iter()
        .skip((page_no - 1).saturating_mul(page_size))
        .take(page_size)
        .collect();
    Ok(Response::json(
        200,
        &json!({"count": names.len(), "doms": doms}),
    ))
}

/// Counts in the shape of Nacos's `/operator/metrics` (the parts that mean something here).
fn counts(node: &Node, req: &Request, deadline: Instant) -> Result<Response> {
    auth::caller(node, req, deadline)?;
    let (services, instances) = node.naming().read(node.datums(), |s| {
        (
            s.len(),
            s.values().map(ServiceEntry::instance_count).sum::<usize>(),
        )
    });
    Ok(Response::json(
        200,
        &json!({
            "status": "UP",
            "serviceCount": services,
            "instanceCount": instances,
            "responsibleServiceCount": services,
            "responsibleInstanceCount": instances,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_json_or_pairs_and_anything_else_is_refused() {
        let want: BTreeMap<String, String> = [
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "x".to_string()),
        ]
        .into();
        assert_eq!(parse_metadata(r#"{"a":"1","b":"x"}"#).unwrap(), want);
        assert_eq!(parse_metadata(r#"{"a":1,"b":"x"}"#).unwrap(), want);
        assert_eq!(parse_metadata("a=1,b=x").unwrap(), want);
        assert!(parse_metadata("a=1,b").is_err());
        assert!(parse_metadata("a=1=2").is_err());
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn instances_parse_as_nacos_parses_them() {
        let p = params(&[
            ("serviceName", "g1@@orders"),
            ("groupName", "ignored"),
            ("ip", "127.0.0.1"),
            ("port", "8080"),
            ("enable", "FALSE"),
            ("ephemeral", "false"),
            ("metadata", "zone=a"),
        ]);
        p.persistent().unwrap();
        let id = p.service().unwrap();
        assert_eq!(id, ServiceId::new("public", "g1", "orders"));
        let i = p.instance(&id).unwrap();
        assert!(!i.enabled && i.healthy);
        assert_eq!((i.weight, i.cluster_name.as_str()), (1.0, "DEFAULT"));
        assert_eq!(i.instance_id, "127.0.0.1#8080#DEFAULT#g1@@orders");
        assert_eq!(i.metadata["zone"], "a");
        // Ephemeral is Nacos's default, and refused.
        let e = params(&[("serviceName", "s")]).persistent().unwrap_err();
        assert!(e.to_string().contains("ephemeral=false"), "{e}");
        for bad in [
            [("serviceName", "a##b"), ("namespaceId", "public")],
            [("serviceName", "g@@a@@b"), ("namespaceId", "public")],
            [("serviceName", "s"), ("namespaceId", "x##y")],
            [("serviceName", "@@s"), ("namespaceId", "public")],
        ] {
            assert!(params(&bad).service().is_err(), "{bad:?}");
        }
        for bad in [("port", "70000"), ("weight", "10001"), ("healthy", "yes")] {
            let mut all = vec![("serviceName", "s"), ("ip", "127.0.0.1"), ("port", "1")];
            all.retain(|(k, _)| *k != bad.0);
            all.push(bad);
            assert!(params(&all).instance(&id).is_err(), "{bad:?}");
        }
    }
}
