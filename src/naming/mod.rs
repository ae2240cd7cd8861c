//! The naming layer (Nacos `ServiceManager` and `Service`): services and their persistent
//! instances, kept as datums under Nacos's keys and read through a view that listens to the
//! consistency service's notifier, as Nacos's `Service` listens on its instance-list key.
//!
//! Owns the keys (Nacos `KeyBuilder`), the value shapes (`Service`, `Instances`) and the
//! view. Must not write for clients: a change is a read-modify-write of one datum made safe
//! by compare-and-set on its timestamp, which the HTTP layer drives (`http::naming`); the
//! health checker (`health`) writes the same way, for itself.

pub mod health;
pub mod model;
pub mod view;

pub use model::{Instance, Instances, Service};
pub use view::{NamingView, ServiceEntry};

/// Instance lists of persistent instances (Nacos `KeyBuilder.INSTANCE_LIST_KEY_PREFIX`).
pub const IPLIST_PREFIX: &str = "com.alibaba.nacos.naming.iplist.";
/// Ephemeral instance lists: Nacos keeps them in its AP protocol (Distro), never in Raft.
pub const EPHEMERAL_PREFIX: &str = "com.alibaba.nacos.naming.iplist.ephemeral.";
/// Service metas (Nacos `KeyBuilder.SERVICE_META_KEY_PREFIX`).
pub const META_PREFIX: &str = "com.alibaba.nacos.naming.domains.meta.";
/// The key of Nacos's global switches, a service-meta key that is no service.
pub const SWITCH_SUFFIX: &str = "00-00---000-NACOS_SWITCH_DOMAIN-000---00-00";
/// What every naming key starts with: the prefix the view listens on.
pub const NAMING_PREFIX: &str = "com.alibaba.nacos.naming.";

pub const DEFAULT_NAMESPACE: &str = "public";
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";
pub const DEFAULT_CLUSTER: &str = "DEFAULT";

/// A service's full name: namespace, group and name (Nacos keys it `<ns>##<group>@@<name>`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    pub namespace: String,
    pub group: String,
    pub name: String,
}

/// Which of a service's two datums a key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Meta,
    Instances,
}

impl ServiceId {
    pub fn new(namespace: &str, group: &str, name: &str) -> ServiceId {
        ServiceId {
            namespace: namespace.to_string(),
            group: group.to_string(),
            name: name.to_string(),
        }
    }

    /// `group@@name`, the name Nacos stores and answers with.
    pub fn grouped(&self) -> String {
        format!("{}@@{}", self.group, self.name)
    }

    fn suffix(&self) -> String {
        format!("{}##{}", self.namespace, self.grouped())
    }

    pub fn meta_key(&self) -> String {
        format!("{META_PREFIX}{}", self.suffix())
    }

    pub fn iplist_key(&self) -> String {
        format!("{IPLIST_PREFIX}{}", self.suffix())
    }

    /// The service a naming key belongs to, and which datum it is; `None` for the switch
    /// key, ephemeral lists and anything else. A name without `@@` is in the default group
    /// (keys written before Nacos 1.0 had no group).
    pub fn of_key(key: &str) -> Option<(ServiceId, KeyKind)> {
        if key.starts_with(EPHEMERAL_PREFIX) || key.ends_with(SWITCH_SUFFIX) {
            return None;
        }
        let (kind, rest) = if let Some(rest) = key.strip_prefix(IPLIST_PREFIX) {
            (KeyKind::Instances, rest)
        } else if let Some(rest) = key.strip_prefix(META_PREFIX) {
            (KeyKind::Meta, rest)
        } else {
            return None;
        };
        let (namespace, grouped) = rest.split_once("##")?;
        let (group, name) = grouped.split_once("@@").unwrap_or((DEFAULT_GROUP, grouped));
        if namespace.is_empty() || group.is_empty() || name.is_empty() {
            return None;
        }
        Some((ServiceId::new(namespace, group, name), kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_nacos_keys_and_parse_back() {
        let id = ServiceId::new("public", "DEFAULT_GROUP", "orders");
        assert_eq!(
            id.iplist_key(),
            "com.alibaba.nacos.naming.iplist.public##DEFAULT_GROUP@@orders"
        );
        assert_eq!(
            id.meta_key(),
            "com.alibaba.nacos.naming.domains.meta.public##DEFAULT_GROUP@@orders"
        );
        assert_eq!(
            ServiceId::of_key(&id.iplist_key()),
            Some((id.clone(), KeyKind::Instances))
        );
        assert_eq!(ServiceId::of_key(&id.meta_key()), Some((id, KeyKind::Meta)));
        // Not services: the switch domain, ephemeral lists, other keys, a name with no
        // namespace separator.
        for key in [
            "com.alibaba.nacos.naming.domains.meta.00-00---000-NACOS_SWITCH_DOMAIN-000---00-00",
            "com.alibaba.nacos.naming.iplist.ephemeral.public##DEFAULT_GROUP@@orders",
            "app.config",
            "com.alibaba.nacos.naming.iplist.orders",
        ] {
            assert_eq!(ServiceId::of_key(key), None, "{key}");
        }
        assert_eq!(
            ServiceId::of_key("com.alibaba.nacos.naming.iplist.dev##legacy").map(|(id, _)| id),
            Some(ServiceId::new("dev", DEFAULT_GROUP, "legacy"))
        );
    }
}
