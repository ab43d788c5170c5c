//! Human output (aligned tables, key/value blocks) and JSON output for the admin commands.
//!
//! Writing stops quietly when the reader went away (`vfolder-controller list | head`):
//! a broken pipe is not an error of the command.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Error;

/// A table with a header row; columns are left-aligned and padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Appends a row (missing cells are empty, extra cells are kept).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, two spaces between columns, no trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, width) in widths.iter().enumerate() {
                let cell = row.get(c).map_or("", String::as_str);
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Key/value lines with the keys aligned (`key:   value`).
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k}:{:pad$} {v}\n", "", pad = width - k.len()))
        .collect()
}

/// A time as `2026-01-31 12:00:00Z` (seconds are enough for an operator).
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// An optional time, `-` when absent.
pub fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".to_owned(), time)
}

/// An optional value, `-` when absent.
pub fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Writes text to standard output.
pub fn print(text: &str) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    quiet_pipe(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
}

/// Writes a value as pretty JSON (one document) to standard output.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), Error> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|e| Error::Output(io::Error::other(e)))?;
    text.push('\n');
    print(&text)
}

fn quiet_pipe(r: io::Result<()>) -> Result<(), Error> {
    match r {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::Output(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_without_trailing_spaces() {
        let mut t = Table::new(&["ID", "NAME", "STATUS"]);
        t.row(vec!["1".into(), "datasets".into(), "ready".into()]);
        t.row(vec!["22".into(), "é".into(), "delete-pending".into()]);
        assert_eq!(
            t.render(),
            "ID  NAME      STATUS\n1   datasets  ready\n22  é         delete-pending\n"
        );
    }

    #[test]
    fn fields_align_keys() {
        let s = fields(&[("id", "1".into()), ("status", "ready".into())]);
        assert_eq!(s, "id:     1\nstatus: ready\n");
    }
}
