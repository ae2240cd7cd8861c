//! The datum (Nacos `Datum`), key rules, and the key <-> file-path encoding of the data dir.
//!
//! Owns validation only: nothing here touches the disk.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Longest key accepted, in bytes of UTF-8 (DESIGN §6).
pub const MAX_KEY_BYTES: usize = 1024;

/// One versioned value, as Nacos stores it: `timestamp` is a per-key version (1 for a new
/// key, previous + 1 on each update; Nacos `Datum.timestamp`), `index` the Raft log index of
/// the entry that wrote it (our addition: it orders writes across leaders, which Nacos's
/// per-key counter could not, reference §13.1.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Datum {
    pub key: String,
    pub value: serde_json::Value,
    pub timestamp: u64,
    #[serde(default)]
    pub index: u64,
}

/// Checks the key rule: 1 to 1024 bytes of UTF-8 without control characters.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey(
            "the key is empty; give 1 to 1024 bytes".into(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidKey(format!(
            "the key is {} bytes long; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if let Some((pos, c)) = key.char_indices().find(|(_, c)| c.is_control()) {
        return Err(Error::InvalidKey(format!(
            "the key has a control character {:?} at byte {pos}; keys must be printable",
            c
        )));
    }
    if let Some((pos, c)) = key.char_indices().find(|(_, c)| is_invisible_format(*c)) {
        return Err(Error::InvalidKey(format!(
            "the key has the invisible formatting character U+{:04X} at byte {pos} (it can make one key look like another); keys must be printable",
            c as u32
        )));
    }
    Ok(())
}

/// Deepest nesting of arrays and objects accepted in a value. Every format a value travels
/// in (the peer messages, the log, checkpoints, snapshot chunks, datum files) wraps it in at
/// most a few more levels, all far below the JSON parser's limit of 128: a value the client
/// path accepted can never make a follower, a restart or a catch-up refuse it (a value nested
/// 126 deep once passed the client and stalled replication, every follower refusing the
/// leader's batch).
pub const MAX_VALUE_DEPTH: usize = 64;

/// About the size of a value as JSON text, without serialising it (for budgets: appends
/// per message, history bytes, snapshot chunks).
pub fn approx_json_size(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    let mut total = 0;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        total += match v {
            Value::Null | Value::Bool(_) | Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(a) => {
                stack.extend(a.iter());
                2 + a.len()
            }
            Value::Object(o) => {
                stack.extend(o.values());
                2 + o.keys().map(|k| k.len() + 4).sum::<usize>()
            }
        };
    }
    total
}

/// Checks the value rule: at most [`MAX_VALUE_DEPTH`] levels of arrays and objects.
pub fn validate_value(value: &serde_json::Value) -> Result<()> {
    use serde_json::Value;
    // Iterative, so a deep value cannot exhaust the stack here either.
    let mut stack: Vec<(&Value, usize)> = vec![(value, 1)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        if depth > MAX_VALUE_DEPTH {
            return Err(Error::BadRequest(format!(
                "the value nests arrays and objects more than {MAX_VALUE_DEPTH} levels deep; flatten it"
            )));
        }
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    Ok(())
}

/// Bidirectional controls and zero-width characters: they change how a key is shown (a
/// right-to-left override makes `abc` display as `cba`) without being visible themselves.
fn is_invisible_format(c: char) -> bool {
    matches!(c as u32,
        0x061C | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x2069 | 0xFEFF)
}

// Nacos KeyBuilder prefixes (reference §3.3), longest first so the ephemeral form wins.
const NAMESPACED_PREFIXES: [&str; 5] = [
    "com.alibaba.nacos.naming.iplist.ephemeral.",
    "com.alibaba.nacos.naming.iplist.",
    "com.alibaba.nacos.naming.domains.meta.",
    "iplist.",
    "meta.",
];

/// Namespace directory for a key: Nacos's rule (the text between the type prefix and the
/// first `##`) for Nacos-style keys, `public` for every other key and for an empty namespace.
pub fn namespace_of(key: &str) -> &str {
    for prefix in NAMESPACED_PREFIXES {
        if let Some(rest) = key.strip_prefix(prefix) {
            if let Some((ns, _)) = rest.split_once("##") {
                if !ns.is_empty() {
                    return ns;
                }
            }
            break;
        }
    }
    "public"
}

/// Bytes kept as they are in file names. Everything else, `%` and `~` included, is
/// percent-encoded, so a name can never hold `/`, start with `.`, or be `..`.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'.' | b'_' | b'-' | b'#' | b'@' | b':' | b'+' | b'=' | b','
        )
}

/// Longest single path component we produce (ext4 allows 255 bytes).
const MAX_COMPONENT: usize = 240;

/// Percent-encodes `s` into path components of at most [`MAX_COMPONENT`] bytes. No
/// component starts with `.` (so none is `.`, `..` or hidden), and no escape is split.
fn encode_components(s: &str) -> Vec<String> {
    let mut pieces = vec![String::new()];
    for &b in s.as_bytes() {
        let piece = pieces.last_mut().expect("never empty");
        let plain = is_plain(b) && !(piece.is_empty() && b == b'.');
        let width = if plain { 1 } else { 3 };
        // Leave room for the `~` that marks a continuation directory.
        if piece.len() + width > MAX_COMPONENT {
            pieces.push(String::new());
            // A fresh piece must not start with a plain `.`.
            let piece = pieces.last_mut().expect("just pushed");
            if b == b'.' || !is_plain(b) {
                piece.push_str(&format!("%{b:02X}"));
            } else {
                piece.push(b as char);
            }
            continue;
        }
        if plain {
            piece.push(b as char);
        } else {
            piece.push_str(&format!("%{b:02X}"));
        }
    }
    pieces
}

/// The path of a key's datum file relative to `<data-dir>/data/`: `<namespace>/<name>`.
///
/// The name is the key percent-encoded. A name longer than one path component allows is cut
/// into pieces of at most 240 bytes; every piece but the last is a directory whose name ends
/// in `~` (a byte the encoding never leaves plain), so a directory can never clash with a file.
pub fn datum_rel_path(key: &str) -> PathBuf {
    // Namespaces come from keys too, so they get the same encoding; only the first piece
    // is used as the directory (a namespace over 240 bytes is cut, still safe and unique
    // enough because the file name below it carries the whole key).
    let ns = encode_components(namespace_of(key)).swap_remove(0);
    let mut path = PathBuf::from(ns);
    let pieces = encode_components(key);
    let last = pieces.len() - 1;
    for (i, p) in pieces.into_iter().enumerate() {
        if i < last {
            path.push(format!("{p}~"));
        } else {
            path.push(p);
        }
    }
    path
}

/// Inverse of [`datum_rel_path`]: the key a datum file holds, judged by its path alone.
/// `None` when the path is not one this encoding produces.
pub fn key_from_rel_path(rel: &Path) -> Option<String> {
    let mut comps: Vec<&str> = Vec::new();
    for c in rel.components() {
        comps.push(c.as_os_str().to_str()?);
    }
    if comps.len() < 2 {
        return None;
    }
    let (pieces, last) = comps[1..].split_at(comps.len() - 2);
    let mut encoded = String::new();
    for p in pieces {
        encoded.push_str(p.strip_suffix('~')?);
    }
    encoded.push_str(last[0]);
    let bytes = percent_decode(&encoded)?;
    let key = String::from_utf8(bytes).ok()?;
    (datum_rel_path(&key) == rel).then_some(key)
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> serde_json::Value {
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn keys_cannot_hide_their_spelling() {
        for k in ["a\u{202E}b", "\u{200B}", "x\u{2066}y", "\u{FEFF}k"] {
            let e = validate_key(k).unwrap_err();
            assert!(e.to_string().contains("invisible"), "{k:?}: {e}");
        }
        assert!(validate_key("é-ü-中文").is_ok());
    }

    #[test]
    fn values_nest_at_most_the_limit() {
        assert!(validate_value(&serde_json::json!("flat")).is_ok());
        assert!(validate_value(&nested(MAX_VALUE_DEPTH)).is_ok());
        let e = validate_value(&nested(MAX_VALUE_DEPTH + 1)).unwrap_err();
        assert!(e.to_string().contains("64 levels"), "{e}");
        let deep_object = serde_json::json!({"a": nested(MAX_VALUE_DEPTH)});
        assert!(validate_value(&deep_object).is_err());
    }
    use std::path::Component;

    #[test]
    fn key_rule() {
        assert!(validate_key("greeting").is_ok());
        assert!(validate_key(&"k".repeat(1024)).is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key(&"k".repeat(1025)).is_err());
        assert!(validate_key("a\nb").is_err());
        assert!(validate_key("a\u{7f}b").is_err());
        assert!(validate_key("ключ/../../etc").is_ok());
    }

    #[test]
    fn nacos_namespaces() {
        assert_eq!(
            namespace_of("com.alibaba.nacos.naming.iplist.dev##DEFAULT_GROUP@@svc"),
            "dev"
        );
        assert_eq!(
            namespace_of("com.alibaba.nacos.naming.domains.meta.public##G@@s"),
            "public"
        );
        assert_eq!(
            namespace_of("com.alibaba.nacos.naming.iplist.ephemeral.ns1##G@@s"),
            "ns1"
        );
        assert_eq!(namespace_of("iplist.ns2##G@@s"), "ns2");
        assert_eq!(
            namespace_of(
                "com.alibaba.nacos.naming.domains.meta.00-00---000-NACOS_SWITCH_DOMAIN-000---00-00"
            ),
            "public"
        );
        assert_eq!(namespace_of("greeting"), "public");
        assert_eq!(namespace_of("meta.##x"), "public");
    }

    fn assert_safe(rel: &Path) {
        for c in rel.components() {
            match c {
                Component::Normal(s) => {
                    let s = s.to_str().unwrap();
                    assert!(!s.starts_with('.'), "{rel:?}");
                    assert!(s.len() <= 255, "{rel:?}");
                }
                other => panic!("unsafe component {other:?} in {rel:?}"),
            }
        }
    }

    #[test]
    fn encoding_is_safe_and_reversible() {
        let long = "é/".repeat(500);
        let keys = [
            "greeting",
            "..",
            ".",
            "../../etc/passwd",
            "a/b",
            "100%~",
            "com.alibaba.nacos.naming.iplist.../..##G@@s",
            "com.alibaba.nacos.naming.iplist.public##DEFAULT_GROUP@@svc",
            long.as_str(),
        ];
        for k in keys {
            let rel = datum_rel_path(k);
            assert_safe(&rel);
            assert_eq!(key_from_rel_path(&rel).as_deref(), Some(k), "{rel:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_valid_key_round_trips(k in "[^\\p{Cc}\\p{Cf}]{1,300}") {
            proptest::prop_assume!(validate_key(&k).is_ok());
            let rel = datum_rel_path(&k);
            assert_safe(&rel);
            proptest::prop_assert_eq!(key_from_rel_path(&rel), Some(k));
        }
    }
}
