//! Rendering for the terminal: aligned tables for people, JSON for programs.
use serde::Serialize;

use crate::{error::Error, error::Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|e| Error::system("cannot render JSON", e))
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i == last { c.to_string() } else { format!("{c:<w$}", w = widths[i]) })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `key value` lines, keys padded to `width` so the values line up.
pub fn key_values(rows: &[(&str, String)], width: usize) -> String {
    rows.iter().map(|(k, v)| format!("{k:<width$} {v}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_aligns_columns() {
        let t = super::table(
            &["NAME", "SUBNET"],
            &[vec!["a".into(), "10.0.0.0/8".into()], vec!["long".into(), "x".into()]],
        );
        assert_eq!(t, "NAME  SUBNET\na     10.0.0.0/8\nlong  x");
    }
}
