//! The Prometheus alert rules and the Grafana dashboard: valid, and every metric they query
//! is one the controller exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use vfolder_controller::observe::Metrics;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `promtool` with `args`; panics with its output unless it succeeds.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("promtool must be installed (Debian package `prometheus`)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{said}");
    said
}

/// Every series name `Metrics::new().encode()` can export: counters and gauges by their
/// family name, histograms by `_bucket`, `_sum` and `_count`.
fn exported_series() -> BTreeSet<String> {
    let text = Metrics::new().encode();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            "counter" | "gauge" => {
                names.insert(name.to_owned());
            }
            other => panic!("unexpected metric type {other} of {name}"),
        }
    }
    assert!(names.len() > 10, "{names:?}");
    names
}

/// The metric names a PromQL expression selects. Skips strings, label matchers `{...}`,
/// range and subquery brackets `[...]`, Grafana variables (`$job`, `${x}`), numbers and
/// durations, function and aggregation names (followed by `(`), keywords, and the label
/// lists of `by`/`without`/`on`/`ignoring`/`group_left`/`group_right`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const LABEL_LIST_KEYWORDS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Operators, and the aggregations, which may be followed by `by (...)` before `(`.
    const KEYWORDS: [&str; 22] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_string = |i: &mut usize| {
        let quote = chars[*i];
        *i += 1;
        while *i < chars.len() && chars[*i] != quote {
            if chars[*i] == '\\' {
                *i += 1;
            }
            *i += 1;
        }
        *i += 1;
    };
    let skip_until = |i: &mut usize, close: char| {
        while *i < chars.len() && chars[*i] != close {
            if matches!(chars[*i], '"' | '\'' | '`') {
                skip_string(i);
            } else {
                *i += 1;
            }
        }
        *i += 1;
    };
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            skip_string(&mut i);
        } else if c == '{' {
            skip_until(&mut i, '}');
        } else if c == '[' {
            skip_until(&mut i, ']');
        } else if c == '#' {
            skip_until(&mut i, '\n');
        } else if c == '$' {
            i += 1;
            if i < chars.len() && chars[i] == '{' {
                skip_until(&mut i, '}');
            } else {
                while i < chars.len() && is_part(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (is_part(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_start(c) {
            let start = i;
            while i < chars.len() && is_part(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let called = j < chars.len() && chars[j] == '(';
            let lower = word.to_ascii_lowercase();
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if called {
                    i = j;
                    skip_until(&mut i, ')');
                }
            } else if !called && !KEYWORDS.contains(&lower.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Each alert rule as (name, expression).
fn alert_rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut rules = Vec::new();
    for group in doc["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .unwrap()
                .to_owned();
            rules.push((name, rule["expr"].as_str().unwrap().to_owned()));
        }
    }
    assert!(!rules.is_empty());
    rules
}

/// Each PromQL query of the dashboard as (where, expression): panel targets and the metric
/// selectors of `label_values(...)` variables.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo("deploy/grafana/vfolder-controller.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    let mut panels: Vec<&serde_json::Value> = dash["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}"));
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(
                !expr.trim().is_empty(),
                "panel {title:?} has an empty query"
            );
            queries.push((format!("panel {title:?}"), expr.to_owned()));
        }
    }
    for var in dash["templating"]["list"].as_array().unwrap() {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("unexpected variable query {q}"));
        let (selector, _label) = inner.rsplit_once(',').unwrap();
        queries.push((format!("variable {}", var["name"]), selector.to_owned()));
    }
    assert!(queries.len() > 10, "{queries:?}");
    queries
}

/// Names of `queries` that `exported` does not contain, except the `allowed` ones.
fn unknown_names(
    queries: &[(String, String)],
    exported: &BTreeSet<String>,
    allowed: &[&str],
) -> Vec<String> {
    let mut unknown = Vec::new();
    for (place, expr) in queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric found in {expr}");
        for name in names {
            if !exported.contains(&name) && !allowed.contains(&name.as_str()) {
                unknown.push(format!("{place}: {name}"));
            }
        }
    }
    unknown
}

/// The GitHub anchors of the headings of `docs/operations.md`.
fn runbook_anchors() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(repo("docs/operations.md")).unwrap();
    doc.lines()
        .filter_map(|l| l.strip_prefix("## ").or(l.strip_prefix("# ")))
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn every_alert_has_a_runbook_section() {
    let anchors = runbook_anchors();
    let doc = std::fs::read_to_string(repo("docs/operations.md")).unwrap();
    let text = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut problems = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            let runbook = rule["annotations"]["runbook"].as_str().unwrap_or("");
            match runbook.strip_prefix("docs/operations.md#") {
                Some(anchor) if anchors.contains(anchor) => {}
                _ => problems.push(format!("{name}: runbook {runbook:?} is no section")),
            }
            if !doc.contains(&format!("| `{name}` |")) {
                problems.push(format!("{name} is not in the runbook's alert table"));
            }
        }
    }
    // The runbook's own links to its sections.
    for link in doc.split("](#").skip(1) {
        let anchor = link.split(')').next().unwrap();
        if !anchors.contains(anchor) {
            problems.push(format!("docs/operations.md links to missing #{anchor}"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let said = promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn alert_rule_unit_tests_pass() {
    promtool(&["test", "rules", "deploy/prometheus/alerts_test.yml"]);
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool parses expressions in rule files; Grafana's variables become plain values.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, (_, expr)) in dashboard_queries().iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$volume", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query{n}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let path = dir.path().join("dashboard.yml");
    std::fs::write(&path, rules).unwrap();
    promtool(&["check", "rules", path.to_str().unwrap()]);
}

#[test]
fn every_dashboard_query_uses_exported_metrics() {
    let unknown = unknown_names(&dashboard_queries(), &exported_series(), &[]);
    assert!(unknown.is_empty(), "not exported: {unknown:#?}");
}

#[test]
fn every_alert_uses_exported_metrics() {
    // `up` is the one series Prometheus itself adds for every scrape target.
    let unknown = unknown_names(&alert_rules(), &exported_series(), &["up"]);
    assert!(unknown.is_empty(), "not exported: {unknown:#?}");
}

#[test]
fn the_name_extraction_finds_metrics_and_only_metrics() {
    let expr = r#"histogram_quantile(0.99, sum by (le, action) (rate(a_seconds_bucket{job=~"$job", x="b_total"}[$__rate_interval] offset 5m))) > on (instance) group_left (version) b_info and bool c:recorded / 1e3"#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(names, ["a_seconds_bucket", "b_info", "c:recorded"]);
    // A histogram's family name alone is not a series.
    let exported = exported_series();
    let bad = vec![(
        "test".to_owned(),
        "rate(vfolder_controller_reconcile_duration_seconds[5m]) + vfolder_controller_nope"
            .to_owned(),
    )];
    assert_eq!(
        unknown_names(&bad, &exported, &[]),
        [
            "test: vfolder_controller_nope",
            "test: vfolder_controller_reconcile_duration_seconds"
        ]
    );
}
