//! The values of naming datums, in Nacos 1.x's JSON shapes (`Service`, `Instances`,
//! `Instance`), so a data dir written by Nacos reads here and the other way round. Fields
//! this layer does not use are kept as they came (`extra`), never dropped by a rewrite.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ServiceId, DEFAULT_CLUSTER};

fn yes() -> bool {
    true
}

fn one() -> f64 {
    1.0
}

fn default_cluster() -> String {
    DEFAULT_CLUSTER.to_string()
}

/// One instance of a service (Nacos `naming.core.Instance`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    #[serde(default)]
    pub instance_id: String,
    pub ip: String,
    pub port: u16,
    #[serde(default = "one")]
    pub weight: f64,
    #[serde(default = "yes")]
    pub healthy: bool,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default = "default_cluster")]
    pub cluster_name: String,
    /// `group@@name`.
    #[serde(default)]
    pub service_name: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Instance {
    /// What identifies an instance within its service (Nacos `Instance.getDatumKey`).
    pub fn same_as(&self, ip: &str, port: u16, cluster: &str) -> bool {
        self.ip == ip && self.port == port && self.cluster_name == cluster
    }

    /// Nacos's `simple` instance id: `ip#port#cluster#group@@name`.
    pub fn simple_id(ip: &str, port: u16, cluster: &str, service: &ServiceId) -> String {
        format!("{ip}#{port}#{cluster}#{}", service.grouped())
    }
}

/// An instance-list datum's value (Nacos `naming.core.Instances`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instances {
    #[serde(default)]
    pub instance_list: Vec<Instance>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A service-meta datum's value (Nacos `naming.core.Service`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `group@@name`.
    pub name: String,
    #[serde(default)]
    pub protect_threshold: f64,
    #[serde(default)]
    pub group_name: String,
    #[serde(default)]
    pub namespace_id: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default = "no_selector")]
    pub selector: serde_json::Value,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn no_selector() -> serde_json::Value {
    serde_json::json!({"type": "none"})
}

impl Service {
    /// A new service as Nacos creates one (also when an instance registers into a service
    /// that does not exist yet).
    pub fn new(id: &ServiceId) -> Service {
        Service {
            name: id.grouped(),
            protect_threshold: 0.0,
            group_name: id.group.clone(),
            namespace_id: id.namespace.clone(),
            metadata: BTreeMap::new(),
            selector: no_selector(),
            extra: serde_json::Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nacos_written_instance_list_reads_and_keeps_what_it_does_not_know() {
        // As Nacos 1.4 writes it to data/naming/data/public/...
        let text = r#"{"instanceList":[{"instanceId":"127.0.0.1#8080#DEFAULT#DEFAULT_GROUP@@orders",
            "ip":"127.0.0.1","port":8080,"weight":1.0,"healthy":true,"enabled":true,
            "ephemeral":false,"clusterName":"DEFAULT","serviceName":"DEFAULT_GROUP@@orders",
            "metadata":{"zone":"a"},"lastBeat":1600000000000,"marked":false,"app":"DEFAULT",
            "instanceHeartBeatInterval":5000,"instanceHeartBeatTimeOut":15000,
            "ipDeleteTimeout":30000}]}"#;
        let list: Instances = serde_json::from_str(text).unwrap();
        let i = &list.instance_list[0];
        assert_eq!(
            (i.ip.as_str(), i.port, i.healthy),
            ("127.0.0.1", 8080, true)
        );
        assert_eq!(i.metadata["zone"], "a");
        assert_eq!(i.extra["lastBeat"], 1600000000000u64);
        let back = serde_json::to_value(&list).unwrap();
        let orig: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, orig, "a rewrite changes nothing it does not mean to");
    }
}
