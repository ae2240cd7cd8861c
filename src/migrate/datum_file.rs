//! One datum file of a Nacos 1.x naming data dir: where Nacos keeps a key, what the file
//! must hold, and the conversions Nacos makes when it loads one (`RaftStore.readDatum`,
//! reference §9).
//!
//! Pure: bytes and a name in, a datum or the reason against it out; no file is opened here.

use serde_json::{Map, Value};

use super::{DATUM_SUFFIX, MAX_DATUM_BYTES};
use crate::naming::{self, DEFAULT_GROUP, IPLIST_PREFIX, META_PREFIX, SWITCH_SUFFIX};
use crate::raft::ImportedDatum;

/// What a datum file holds, as read.
pub(super) enum Parsed {
    Blank,
    Datum(ParsedDatum),
}

pub(super) struct ParsedDatum {
    pub(super) key: String,
    pub(super) value: Value,
    pub(super) timestamp: u64,
    /// The file name has the `.datum` suffix of Nacos 1.3.1/1.3.2.
    pub(super) suffixed: bool,
    /// The key had no group (written before Nacos 1.0) and was moved into `DEFAULT_GROUP`.
    pub(super) regrouped: bool,
    /// What was changed on the way in, for the report.
    pub(super) notes: Vec<String>,
    /// Size as JSON in an import request.
    pub(super) bytes: usize,
}

/// Which kind of Nacos record a key holds (Nacos `KeyBuilder` predicates, reference §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The global switch domain (`SwitchDomain`): a service-meta key that is no service.
    Switch,
    Meta,
    Instances,
    /// Any other key under the naming prefix: loaded as a plain datum, as Nacos does.
    Other,
}

fn kind_of(key: &str) -> Kind {
    if key.ends_with(SWITCH_SUFFIX) {
        Kind::Switch
    } else if key.starts_with(META_PREFIX) {
        Kind::Meta
    } else if key.starts_with(IPLIST_PREFIX) {
        Kind::Instances
    } else {
        Kind::Other
    }
}

/// The namespace Nacos files a key under (`KeyBuilder.getNamespace`): the text between the
/// prefix and the first `##` for service metas and instance lists, none for the switch
/// domain and every other key (those files sit at the top of `data/`).
fn nacos_namespace(key: &str) -> Option<&str> {
    let rest = match kind_of(key) {
        Kind::Meta => key.strip_prefix(META_PREFIX),
        Kind::Instances => key.strip_prefix(IPLIST_PREFIX),
        Kind::Switch | Kind::Other => None,
    }?;
    let ns = rest.split("##").next().unwrap_or(rest);
    (!ns.is_empty()).then_some(ns)
}

/// A datum file's name as Nacos 1.x writes it: every `:` of the key becomes `#` (Nacos
/// `RaftStore.encodeDatumKey`; keys keep their `##` and `@@`).
pub fn file_name_of(key: &str) -> String {
    key.replace(':', "#")
}

/// Parses one datum file, named `name`, from `data/<ns_dir>/` (or the top of `data/` when
/// `ns_dir` is `None`). `Err` is the reason it cannot be imported.
pub(super) fn parse_file(name: &str, ns_dir: Option<&str>, bytes: &[u8]) -> Result<Parsed, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        binary_datum(bytes)
            .unwrap_or_else(|| format!("not UTF-8 text (bad byte at offset {})", e.valid_up_to()))
    })?;
    if text.trim().is_empty() {
        return Ok(Parsed::Blank);
    }
    let mut notes = Vec::new();
    let doc: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            // Nacos's legacy fallback for service metas written with doubled escapes: the
            // text with every backslash removed. Tried only when the text is not JSON as
            // written, so a valid file keeps its escapes.
            let stripped = (name.starts_with(META_PREFIX) && text.contains('\\'))
                .then(|| serde_json::from_str::<Value>(&text.replace('\\', "")).ok())
                .flatten();
            match stripped {
                Some(v) => {
                    notes.push(
                        "not JSON as written; read with every backslash removed, as Nacos does for service metas"
                            .to_string(),
                    );
                    v
                }
                None => return Err(binary_datum(bytes).unwrap_or_else(|| format!("not JSON: {e}"))),
            }
        }
    };
    let Value::Object(mut doc) = doc else {
        return Err(format!(
            "not a Nacos datum: a JSON {}, not an object {{\"key\", \"value\", \"timestamp\"}}",
            json_type(&doc)
        ));
    };
    let key = match doc.remove("key") {
        Some(Value::String(k)) => k,
        Some(other) => {
            return Err(format!(
                "not a Nacos datum: its key is a JSON {}, not a string",
                json_type(&other)
            ))
        }
        None => return Err("not a Nacos datum: it has no key".into()),
    };
    let timestamp = match doc.remove("timestamp") {
        Some(Value::Number(n)) => n.as_u64().filter(|t| *t >= 1).ok_or_else(|| {
            format!("timestamp {n} of {key:?}: Nacos timestamps are whole numbers from 1")
        })?,
        Some(other) => {
            return Err(format!(
                "timestamp of {key:?} is a JSON {}, not a number",
                json_type(&other)
            ))
        }
        None => return Err(format!("{key:?} has no timestamp")),
    };
    let value = doc
        .remove("value")
        .ok_or_else(|| format!("{key:?} has no value"))?;

    // The file must be where Nacos writes this key (RaftStore.cacheFileName), else it is
    // not a file Nacos wrote, whatever it holds.
    let encoded = file_name_of(&key);
    let suffixed = if name == encoded {
        false
    } else if name.strip_suffix(DATUM_SUFFIX) == Some(encoded.as_str()) {
        true
    } else {
        return Err(format!(
            "holds the key {key:?}, which Nacos keeps in a file named {encoded:?}: a file name and content that do not match"
        ));
    };
    let home = nacos_namespace(&key);
    if home != ns_dir {
        return Err(match home {
            Some(ns) => format!(
                "holds the key {key:?} of namespace {ns:?}, which Nacos keeps in data/{ns}/"
            ),
            None => format!("holds the key {key:?}, which Nacos keeps at the top of data/"),
        });
    }

    let kind = kind_of(&key);
    let (key, value, regrouped) = match kind {
        Kind::Switch => {
            if !value.is_object() {
                return Err(format!(
                    "the switch domain {key:?} holds a JSON {}, not Nacos's SwitchDomain object",
                    json_type(&value)
                ));
            }
            (key, value, false)
        }
        Kind::Other => (key, value, false),
        Kind::Meta | Kind::Instances => {
            let (grouped, regrouped) = regroup(&key)?;
            if regrouped {
                notes.push(format!(
                    "a key without a group (written before Nacos 1.0), imported as {grouped:?} in {DEFAULT_GROUP}, where Nacos 1.x moves it"
                ));
            }
            let value = if kind == Kind::Meta {
                service_meta(&key, value, &mut notes)?
            } else {
                instance_list(&key, value, &mut notes)?
            };
            (grouped, value, regrouped)
        }
    };
    crate::datum::validate_key(&key).map_err(|e| format!("{e}"))?;
    crate::datum::validate_value(&value).map_err(|e| format!("the value of {key:?}: {e}"))?;
    let bytes = serde_json::to_vec(&ImportedDatum {
        key: key.clone(),
        value: value.clone(),
        timestamp,
    })
    .map_err(|e| format!("the value of {key:?} cannot be sent: {e}"))?
    .len();
    if bytes > MAX_DATUM_BYTES {
        return Err(format!(
            "{key:?} is {bytes} bytes as JSON, more than the {MAX_DATUM_BYTES} one import request can carry"
        ));
    }
    Ok(Parsed::Datum(ParsedDatum {
        key,
        value,
        timestamp,
        suffixed,
        regrouped,
        notes,
        bytes,
    }))
}

/// Nacos's Java class of a datum, which a serialised (not JSON) datum names.
const DATUM_CLASS: &[u8] = b"com.alibaba.nacos.naming.consistency.Datum";

/// Why a file that is not JSON is no datum file of the legacy store, when it looks like a
/// datum serialised by the JRaft-based store of Nacos 1.4 and later, which writes its own
/// (binary) files into the same directory once every member runs 1.4.
fn binary_datum(bytes: &[u8]) -> Option<String> {
    let json_like = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let named = bytes.windows(DATUM_CLASS.len()).any(|w| w == DATUM_CLASS);
    (!json_like && named).then(|| {
        "a binary datum, not JSON: the JRaft-based store of Nacos 1.4 and later writes these, and only the JSON files of the legacy Raft store (Nacos 1.0 to 1.3, and 1.4 before it switched) can be imported".to_string()
    })
}

/// A service's key in `DEFAULT_GROUP` if it has no group (keys before Nacos 1.0 were
/// `<ns>##<service>`): `DEFAULT_GROUP@@` goes right after the first `##`. Nacos 1.x does
/// this at load for instance lists (`RaftStore.readDatum`, reference §9) and, for service
/// metas, at the service's next write, deleting the old file (`RaftStore.write`); doing it
/// for both here gives each service one key from the start, the one the naming API writes.
/// (Nacos finds the spot with `indexOf(serviceName)`, which lands inside the prefix for a
/// service named, say, `naming`; this does not.)
fn regroup(key: &str) -> Result<(String, bool), String> {
    let Some(at) = key.find("##") else {
        return Err(format!(
            "{key:?} has no \"##\" between namespace and service, so it names no service Nacos could serve"
        ));
    };
    let service = &key[at + 2..];
    if service.is_empty() {
        return Err(format!("{key:?} names no service after its \"##\""));
    }
    if service.contains("@@") {
        return Ok((key.to_string(), false));
    }
    Ok((
        format!("{}{DEFAULT_GROUP}@@{service}", &key[..at + 2]),
        true,
    ))
}

/// A service meta's value as Nacos 1.x loads it: a blank `groupName` becomes
/// `DEFAULT_GROUP`, and a `name` without `@@` gets `DEFAULT_GROUP@@` in front (Nacos
/// `RaftStore.readDatum`). It must then read as a Nacos `Service`, or the naming API could
/// not serve it.
fn service_meta(key: &str, value: Value, notes: &mut Vec<String>) -> Result<Value, String> {
    let Value::Object(mut svc) = value else {
        return Err(format!(
            "the service meta {key:?} holds a JSON {}, not Nacos's Service object",
            json_type(&value)
        ));
    };
    let name = match svc.get("name") {
        Some(Value::String(n)) => n.clone(),
        _ => return Err(format!("the service meta {key:?} has no name")),
    };
    let blank_group = match svc.get("groupName") {
        None | Some(Value::Null) => true,
        Some(Value::String(g)) => g.trim().is_empty(),
        Some(_) => false,
    };
    if blank_group {
        svc.insert("groupName".into(), Value::String(DEFAULT_GROUP.into()));
    }
    if !name.contains("@@") {
        svc.insert(
            "name".into(),
            Value::String(format!("{DEFAULT_GROUP}@@{name}")),
        );
    }
    if blank_group || !name.contains("@@") {
        notes.push(format!(
            "a service without a group: groupName and name set into {DEFAULT_GROUP}, as Nacos 1.x loads it"
        ));
    }
    let value = Value::Object(svc);
    serde_json::from_value::<naming::Service>(value.clone())
        .map_err(|e| format!("the service meta {key:?} is not a Nacos Service: {e}"))?;
    Ok(value)
}

/// An instance list's value: Nacos's `Instances` object as it is, or the list before Nacos
/// 1.0 (a bare array of instances), which Nacos 1.x loads as `{"instanceList": [...]}` with
/// every instance persistent (`ephemeral` false; `RaftStore.readDatum`, reference §9).
fn instance_list(key: &str, value: Value, notes: &mut Vec<String>) -> Result<Value, String> {
    let value = match value {
        Value::Object(_) => value,
        Value::Array(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, inst) in list.into_iter().enumerate() {
                let Value::Object(mut inst) = inst else {
                    return Err(format!(
                        "the pre-1.0 instance list {key:?} holds a JSON {} at position {i}, not an instance",
                        json_type(&inst)
                    ));
                };
                inst.insert("ephemeral".into(), Value::Bool(false));
                out.push(Value::Object(inst));
            }
            notes.push(
                "a pre-1.0 instance list (a bare array): imported as {\"instanceList\": [...]}, every instance persistent (ephemeral false), as Nacos 1.x loads it"
                    .to_string(),
            );
            let mut m = Map::new();
            m.insert("instanceList".into(), Value::Array(out));
            Value::Object(m)
        }
        other => {
            return Err(format!(
                "the instance list {key:?} holds a JSON {}, neither Nacos's Instances object nor a pre-1.0 array of instances",
                json_type(&other)
            ))
        }
    };
    serde_json::from_value::<naming::Instances>(value.clone())
        .map_err(|e| format!("the instance list {key:?} is not Nacos's Instances: {e}"))?;
    Ok(value)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
