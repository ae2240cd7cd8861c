//! Output helpers shared by the commands: JSON documents, tables, and value formatting.
//! Only stdout is written here; diagnostics are the caller's business (stderr).

use std::io::{self, Write};

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;
use serde_json::Value;

/// One pretty-printed JSON document and a newline.
pub fn json<T: Serialize>(out: &mut dyn Write, doc: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, doc)?;
    writeln!(out)
}

/// A table with a header row. Widths follow the content: piping a table into a file must not
/// cut values at some terminal width.
pub fn table(out: &mut dyn Write, header: &[&str], rows: Vec<Vec<String>>) -> io::Result<()> {
    let mut t = Table::new();
    t.load_preset(presets::ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    writeln!(out, "{t}")
}

/// A value on one line, for tables and tab-separated text: compact JSON (its escapes keep
/// tabs and newlines out of the line).
pub fn compact(v: &Value) -> String {
    serde_json::to_string(v).expect("a JSON value always serialises")
}

/// `Some(x)` as text, `None` as `-`, for table cells.
pub fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compact_values_stay_on_one_line() {
        assert_eq!(compact(&json!("a\tb\nc")), r#""a\tb\nc""#);
        assert_eq!(compact(&json!({"a": [1, 2]})), r#"{"a":[1,2]}"#);
    }

    #[test]
    fn tables_keep_long_cells_whole() {
        let long = "x".repeat(500);
        let mut buf = Vec::new();
        table(
            &mut buf,
            &["KEY", "VALUE"],
            vec![vec!["k".into(), long.clone()]],
        )
        .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("KEY") && text.contains(&long), "{text}");
    }
}
