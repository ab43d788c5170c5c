//! The reference documentation cannot drift from the code: every configuration key is
//! documented with its variable and default, and the lifecycle diagram is the transition
//! table.

use std::collections::BTreeSet;
use std::path::Path;

use vfolder_controller::config::{Config, VolumeConfig};
use vfolder_controller::lifecycle::{self, Status};

fn doc(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs")
            .join(name),
    )
    .unwrap()
}

/// The table row of `docs/configuration.md` that documents `key`, split into cells.
fn config_row<'a>(doc: &'a str, key: &str) -> Option<Vec<&'a str>> {
    let first = format!("| `{key}` |");
    doc.lines()
        .find(|l| l.starts_with(&first))
        .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
}

/// How a default value is written in the table.
fn rendered(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "unset".to_owned(),
        serde_json::Value::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    }
}

#[test]
fn every_configuration_key_is_documented_with_variable_and_default() {
    let doc = doc("configuration.md");
    let mut config = Config::default();
    config.volumes.push(VolumeConfig::builtin_default());
    // JSON, not TOML: TOML drops unset optional keys, which must be documented too.
    let value = serde_json::to_value(&config).unwrap();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (key, v) in value.as_object().unwrap() {
        let entries: Vec<(String, &serde_json::Value, Option<String>)> = match v {
            serde_json::Value::Object(section) => section
                .iter()
                .map(|(k, v)| {
                    let env = format!("VFOLDER_CONTROLLER_{key}_{k}").to_ascii_uppercase();
                    (format!("{key}.{k}"), v, Some(env))
                })
                .collect(),
            serde_json::Value::Array(items) => items[0]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (format!("{key}[].{k}"), v, None))
                .collect(),
            scalar => vec![(
                key.clone(),
                scalar,
                Some(format!("VFOLDER_CONTROLLER_{key}").to_ascii_uppercase()),
            )],
        };
        for (path, default, env) in entries {
            checked += 1;
            let Some(row) = config_row(&doc, &path) else {
                problems.push(format!("`{path}` is not documented"));
                continue;
            };
            if let Some(env) = env {
                // Sections and the top level: the variable, and the exact default.
                if row[2] != format!("`{env}`") {
                    problems.push(format!("`{path}`: variable {} (expected {env})", row[2]));
                }
                if row[1] != rendered(default) {
                    problems.push(format!(
                        "`{path}`: default {} (expected {})",
                        row[1],
                        rendered(default)
                    ));
                }
            } else if row[2] != "(file only)" {
                problems.push(format!("`{path}` is settable only in the file"));
            }
        }
    }
    assert!(checked > 20, "{value}");
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn documented_keys_all_exist() {
    // The reverse direction: a key removed from the code must leave the documentation.
    let doc = doc("configuration.md");
    let mut config = Config::default();
    config.volumes.push(VolumeConfig::builtin_default());
    let value = serde_json::to_value(&config).unwrap();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let key = line[3..].split('`').next().unwrap();
        let found = match key.split_once('.') {
            None => value.get(key).is_some(),
            Some((section, k)) => match section.strip_suffix("[]") {
                Some(list) => value[list][0].get(k).is_some(),
                None => value[section].get(k).is_some(),
            },
        };
        assert!(
            found,
            "docs/configuration.md documents `{key}`, which does not exist"
        );
    }
}

/// The `A --> B` edges of the Mermaid diagram in `docs/lifecycle.md` between two statuses,
/// resolving `state "text" as Id` aliases.
fn diagram_transitions(doc: &str) -> BTreeSet<(Status, Status)> {
    let block = doc
        .split("```mermaid")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a mermaid block");
    let mut aliases = std::collections::BTreeMap::new();
    for line in block.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("state \"") {
            let (text, id) = rest.split_once("\" as ").unwrap();
            aliases.insert(id.trim().to_owned(), text.to_owned());
        }
    }
    let status =
        |id: &str| -> Option<Status> { aliases.get(id).and_then(|text| text.parse().ok()) };
    let mut edges = BTreeSet::new();
    for line in block.lines().map(str::trim) {
        let Some((from, rest)) = line.split_once("-->") else {
            continue;
        };
        let to = rest.split(':').next().unwrap().trim();
        if let (Some(a), Some(b)) = (status(from.trim()), status(to)) {
            assert!(edges.insert((a, b)), "edge {a} -> {b} drawn twice");
        }
    }
    edges
}

#[test]
fn the_lifecycle_diagram_is_the_transition_table() {
    let drawn = diagram_transitions(&doc("lifecycle.md"));
    let table: BTreeSet<(Status, Status)> = lifecycle::TRANSITIONS.into_iter().collect();
    let missing: Vec<_> = table.difference(&drawn).collect();
    let extra: Vec<_> = drawn.difference(&table).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing from the diagram: {missing:?}; drawn but illegal: {extra:?}"
    );
    // Every status is a node of the diagram.
    for status in lifecycle::ALL {
        assert!(
            doc("lifecycle.md").contains(&format!("state \"{status}\" as")),
            "{status}"
        );
    }
}

#[test]
fn the_diagram_parser_sees_a_wrong_edge() {
    let wrong = "```mermaid\nstateDiagram-v2\n    state \"ready\" as R\n    state \"delete-complete\" as C\n    R --> C: nope\n```\n";
    assert_eq!(
        diagram_transitions(wrong),
        BTreeSet::from([(Status::Ready, Status::DeleteComplete)])
    );
}

#[test]
fn docs_say_a_row_on_a_volume_no_replica_serves_waits_visibly() {
    // The code never claims such a row, so it cannot fail: it waits, and the backlog gauge
    // and alert show it (tests/it/controller.rs proves the behaviour).
    for name in ["lifecycle.md", "operations.md"] {
        let text = doc(name).split_whitespace().collect::<Vec<_>>().join(" ");
        for wrong in [
            "an unknown volume, `controller.max_attempts` exhausted) writes",
            "a volume host that is not configured) or a transient",
        ] {
            assert!(!text.contains(wrong), "{name} still says {wrong:?}");
        }
        for right in ["no running replica serves", "VfolderRemovalBacklog"] {
            assert!(text.contains(right), "{name} does not say {right:?}");
        }
    }
}
