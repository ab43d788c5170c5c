//! Human output (aligned tables, key/value blocks) and JSON output for the admin commands.
//!
//! Writing stops quietly when the reader went away (`vfolder-controller list | head`):
//! a broken pipe is not an error of the command.
//!
//! Human output shows text from the database (names, hosts, errors, actors) through
//! [`escape`], so a name holding a newline, a tab or a terminal escape sequence cannot
//! break a table or reach the terminal; JSON output stays exact.

use std::borrow::Cow;
use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::Error;
use crate::lifecycle::SchemaMode;
use crate::store::{MigrationPlan, UnadoptPlan};

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

    /// Appends a row (missing cells are empty, extra cells are kept); cells are
    /// [`escape`]d.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.into_iter().map(|c| escape(&c).into_owned()).collect());
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

/// Key/value lines with the keys aligned (`key:   value`); values are [`escape`]d.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k}:{:pad$} {}\n", "", escape(v), pad = width - k.len()))
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

/// The text of `migrate` (and its `--dry-run`): what the migration does or would do.
pub fn migration_plan(plan: &MigrationPlan, dry_run: bool) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let verb = |would: &'static str, did: &'static str| if dry_run { would } else { did };
    match (plan.mode, plan.adopting) {
        (SchemaMode::Adopted, true) => line(format!(
            "mode: adopt the existing vfolders table ({} rows) that vfolder-controller did not create; its columns and rows are not retyped, reshaped or dropped",
            plan.rows
        )),
        (mode, _) => line(format!(
            "mode: {} ({} database)",
            match mode {
                SchemaMode::Own => "own (vfolder-controller created vfolders)",
                SchemaMode::Adopted => "adopted (the platform created vfolders)",
            },
            plan.backend
        )),
    }
    if plan.pending.is_empty() {
        line("migrations: none pending; the schema is current".to_owned());
    } else {
        line(format!("migrations {}:", verb("to apply", "applied")));
        for m in &plan.pending {
            line(format!("  {} {}", m.version, m.description));
        }
    }
    if plan.adopting {
        line(format!("{}:", verb("will add", "added")));
        for add in &plan.adds {
            line(format!("  {add}"));
        }
        if plan.remaps.is_empty() {
            line("legacy statuses: none".to_owned());
        }
        for r in &plan.remaps {
            let sample: Vec<String> = r.sample.iter().map(Uuid::to_string).collect();
            line(format!(
                "legacy status {} -> {}: {} row(s) {} (audited as adopt-remap), e.g. {}",
                r.from,
                r.to,
                r.rows,
                verb("will be remapped", "remapped"),
                sample.join(", ")
            ));
        }
        line(format!(
            "trash clock: {} folder(s) in the trash {} a full trash retention from the adoption, whatever status_changed says",
            plan.trash_clock_started,
            verb("will get", "got")
        ));
        line(format!(
            "history clock: {} delete-complete row(s) {} a full history retention from the adoption",
            plan.history_clock_started,
            verb("will get", "got")
        ));
        if plan.foreign_statuses.is_empty() {
            line("statuses it does not own: none".to_owned());
        } else {
            let counts: Vec<String> = plan
                .foreign_statuses
                .iter()
                .map(|(status, n)| format!("{} {n}", escape(status)))
                .collect();
            line(format!(
                "statuses it does not own (left alone, accepted from the platform): {}",
                counts.join(", ")
            ));
        }
        if plan.duplicate_groups == 0 {
            line("live name duplicates: none".to_owned());
        } else {
            line(format!(
                "live name duplicates: {} group(s) of live folders of one owner share a name; kept as they are (an adopted table gets no name index):",
                plan.duplicate_groups
            ));
            for d in &plan.duplicates {
                let ids: Vec<String> = d.ids.iter().map(Uuid::to_string).collect();
                line(format!(
                    "  owner {} name {:?}: {}",
                    opt(d.owner),
                    escape(&d.name),
                    ids.join(", ")
                ));
            }
        }
    }
    line(if dry_run {
        "dry run: nothing was changed".to_owned()
    } else {
        format!(
            "{} database is migrated to the current schema",
            plan.backend
        )
    });
    out
}

/// The text of `unadopt` (and its `--dry-run`).
pub fn unadopt_plan(plan: &UnadoptPlan, dry_run: bool) -> String {
    let mut out = format!(
        "{}:\n",
        if dry_run {
            "would run"
        } else {
            "ran, in one transaction"
        }
    );
    for statement in &plan.drops {
        out.push_str(&format!("  {statement};\n"));
    }
    out.push_str(&format!(
        "the audit log's {} entr(ies) {} with it (export them first with `audit --json`)\n",
        plan.audit_entries,
        if dry_run { "would go" } else { "went" }
    ));
    if plan.delete_ongoing > 0 {
        out.push_str(&format!(
            "{} folder(s) stay delete-ongoing for the platform to finish\n",
            plan.delete_ongoing
        ));
    }
    out.push_str(if dry_run {
        "dry run: nothing was changed\n"
    } else {
        "vfolders keeps the platform's columns and rows; vfolder-controller is gone from this database\n"
    });
    out
}

/// A stored text made safe for a terminal and a table: control characters (newline, tab,
/// ESC, ...) and the Unicode bidirectional controls, which reorder what a terminal shows, are
/// written as Rust escapes (`\n`, `\t`, `\u{1b}`). When anything is escaped, backslashes
/// are doubled too, so the result reads back unambiguously. Other text, non-ASCII letters
/// included, is returned as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Characters a terminal would act on instead of showing.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
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
    fn stored_text_cannot_break_a_table_or_reach_the_terminal() {
        assert_eq!(escape("datasets é"), "datasets é");
        assert_eq!(escape(r"a\b"), r"a\b", "nothing to escape: left alone");
        assert_eq!(escape("a\nb\tc\u{1b}[31m\\"), r"a\nb\tc\u{1b}[31m\\");
        assert_eq!(escape("x\u{202e}y"), r"x\u{202e}y");
        let mut t = Table::new(&["NAME", "STATUS"]);
        t.row(vec!["two\nlines".into(), "ready".into()]);
        assert_eq!(t.render(), "NAME        STATUS\ntwo\\nlines  ready\n");
        assert_eq!(fields(&[("name", "a\tb".into())]), "name: a\\tb\n");
    }

    #[test]
    fn fields_align_keys() {
        let s = fields(&[("id", "1".into()), ("status", "ready".into())]);
        assert_eq!(s, "id:     1\nstatus: ready\n");
    }
}
