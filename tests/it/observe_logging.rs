//! Logging set-up: filter precedence and the two line formats, captured in memory.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use vfolder_controller::config::LogFormat;
use vfolder_controller::observe::{Error, build_filter, init_logging, subscriber};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Logs one info and one debug event through a subscriber of `format` with `filter`.
fn emit(format: LogFormat, filter: &str, env: Option<&str>) -> String {
    let capture = Capture::default();
    let sub = subscriber(
        format,
        build_filter(filter, env).unwrap(),
        capture.clone(),
        false,
    );
    tracing::subscriber::with_default(sub, || {
        let span = tracing::info_span!("removal", volume = "local:volume1");
        let _in = span.enter();
        tracing::info!(files = 12u64, "removed folder");
        tracing::debug!("a debug detail");
    });
    capture.text()
}

#[test]
fn json_lines_are_objects_with_fields_and_span() {
    let out = emit(LogFormat::Json, "info", None);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["message"], "removed folder");
    assert_eq!(v["files"], 12);
    assert_eq!(v["span"]["volume"], "local:volume1");
    assert!(v["timestamp"].is_string());
}

#[test]
fn text_lines_are_human_and_plain_off_a_terminal() {
    let out = emit(LogFormat::Text, "info", None);
    assert!(out.contains("INFO"), "{out}");
    assert!(out.contains("removed folder files=12"), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "no ANSI escapes when not a terminal: {out:?}"
    );
    assert!(!out.contains("a debug detail"));
}

#[test]
fn rust_log_wins_over_the_configured_filter() {
    let out = emit(LogFormat::Text, "warn", Some("debug"));
    assert!(out.contains("a debug detail"), "{out}");
    let out = emit(LogFormat::Text, "debug", Some("warn"));
    assert!(out.is_empty(), "{out}");
    // An empty RUST_LOG counts as unset.
    let out = emit(LogFormat::Text, "debug", Some(""));
    assert!(out.contains("a debug detail"), "{out}");
}

#[test]
fn bad_filters_name_their_source() {
    let err = build_filter("info", Some("foo=bogus")).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LogFilter {
                source_name: "RUST_LOG",
                ..
            }
        ),
        "{err}"
    );
    let err = build_filter("foo=[[", None).unwrap_err();
    assert!(err.to_string().contains("log.filter"), "{err}");
}

#[test]
fn init_logging_installs_once() {
    // The only test in this binary that touches the global subscriber. A RUST_LOG in the
    // environment is used if set; an invalid one fails this test, as it should.
    init_logging(LogFormat::Json, "info").unwrap();
    let err = init_logging(LogFormat::Json, "info").unwrap_err();
    assert!(matches!(err, Error::LoggingInit(_)), "{err}");
}
