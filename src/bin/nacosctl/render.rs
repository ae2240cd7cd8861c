//! Output helpers shared by the commands: JSON documents, tables, and value formatting.
//! Only stdout is written here; diagnostics are the caller's business (stderr).

use std::io::{self, Write};

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};
use nacos_raft::wire::Role;
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
    let rows = rows
        .into_iter()
        .map(|r| r.into_iter().map(Cell::new).collect())
        .collect();
    styled_table(out, header, rows, false)
}

/// A table whose cells may carry a colour ([`role_cell`], [`health_cell`]); colours are
/// written only when `color` is set.
pub fn styled_table(
    out: &mut dyn Write,
    header: &[&str],
    rows: Vec<Vec<Cell>>,
    color: bool,
) -> io::Result<()> {
    let mut t = Table::new();
    t.load_preset(presets::ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    // Never ask the terminal (its width or whether it is one): `color` was decided once for
    // the run, from --color, NO_COLOR and whether stdout is a terminal.
    t.force_no_tty();
    if color {
        t.enforce_styling();
    }
    for r in rows {
        t.add_row(r);
    }
    writeln!(out, "{t}")
}

/// A ROLE cell: the leader green, a candidate yellow, an unreachable member (`None`) red as
/// `UNREACHABLE`; a role this build does not know as the member named it, uncoloured.
pub fn role_cell(role: Option<&Role>) -> Cell {
    match role {
        Some(r @ Role::Leader) => Cell::new(r).fg(Color::Green),
        Some(r @ Role::Candidate) => Cell::new(r).fg(Color::Yellow),
        Some(r) => Cell::new(r),
        None => Cell::new("UNREACHABLE").fg(Color::Red),
    }
}

/// A health cell: `good` green, `Some(false)` red, unknown (`None`) yellow.
pub fn health_cell(text: &str, good: Option<bool>) -> Cell {
    let cell = Cell::new(text);
    match good {
        Some(true) => cell.fg(Color::Green),
        Some(false) => cell.fg(Color::Red),
        None => cell.fg(Color::Yellow),
    }
}

/// A duration in milliseconds for a table cell or a text field: `12ms`, `3.2s`.
pub fn millis(ms: u64) -> String {
    nacos_raft::client::fmt_duration(std::time::Duration::from_millis(ms))
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
    fn colour_only_when_asked() {
        let render = |color: bool| {
            let mut buf = Vec::new();
            styled_table(
                &mut buf,
                &["ENDPOINT", "ROLE"],
                vec![vec![Cell::new("a:1"), role_cell(Some(&Role::Leader))]],
                color,
            )
            .unwrap();
            String::from_utf8(buf).unwrap()
        };
        let plain = render(false);
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let coloured = render(true);
        assert!(coloured.contains("\x1b["), "{coloured:?}");
        // Colour codes do not count toward the column width: the borders still line up.
        let widths: Vec<usize> = plain.lines().map(str::len).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{plain}");
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
