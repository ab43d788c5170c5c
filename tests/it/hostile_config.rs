//! Configuration that cannot work is refused at load, before anything is opened or written:
//! exit 6 with a message that names the key (or the variable), and exit 2 for a command-line
//! value out of range. One row per refused configuration; the real binary runs each.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_vfolder-controller");

/// One refused configuration.
struct Case {
    /// What is wrong, for the failure message.
    what: &'static str,
    /// The `[controller]` lines, or whole sections after `database_url` (see `config`).
    toml: &'static str,
    /// Extra environment variables.
    env: &'static [(&'static str, &'static str)],
    /// Extra arguments before the subcommand and the subcommand itself.
    args: &'static [&'static str],
    /// The exit code.
    code: i32,
    /// Every one of these is in standard error.
    says: &'static [&'static str],
    /// None of these is.
    not_says: &'static [&'static str],
}

const LIST: &[&str] = &["list"];

/// `{a}` and `{b}` in a case's TOML are two directories of the test's temp dir; `{link}` is
/// a symlink to `{a}`.
const CASES: &[Case] = &[
    Case {
        what: "a removal thread cap below the threads a removal starts with",
        toml: "[[volumes]]\nhost = \"p:v\"\nmount = \"{a}\"\nremoval_threads = 8\nmax_removal_threads = 4\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &[
            "\"p:v\"",
            "max_removal_threads (4) is below removal_threads (8)",
        ],
        not_says: &[],
    },
    Case {
        what: "a volume nested inside another",
        toml: "[[volumes]]\nhost = \"p:outer\"\nmount = \"{a}\"\n[[volumes]]\nhost = \"p:inner\"\nmount = \"{a}/inner\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &[
            "volumes[1].mount",
            "\"p:inner\"",
            "lies inside",
            "\"p:outer\"",
        ],
        not_says: &[],
    },
    Case {
        what: "an outer volume listed after its inner one",
        toml: "[[volumes]]\nhost = \"p:inner\"\nmount = \"{a}/x/y\"\n[[volumes]]\nhost = \"p:outer\"\nmount = \"{a}/x\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &[
            "volumes[0].mount",
            "\"p:inner\"",
            "lies inside",
            "volumes[1].mount",
        ],
        not_says: &[],
    },
    Case {
        what: "the same directory twice, through a symlink",
        toml: "[[volumes]]\nhost = \"p:one\"\nmount = \"{a}\"\n[[volumes]]\nhost = \"p:two\"\nmount = \"{link}\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &[
            "volumes[1].mount",
            "is the same directory as",
            "volumes[0].mount",
        ],
        not_says: &[],
    },
    Case {
        what: "the same directory twice, spelled with ..",
        toml: "[[volumes]]\nhost = \"p:one\"\nmount = \"{a}\"\n[[volumes]]\nhost = \"p:two\"\nmount = \"{b}/../a\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &["is the same directory as"],
        not_says: &[],
    },
    Case {
        what: "a relative mount",
        toml: "[[volumes]]\nhost = \"p:rel\"\nmount = \"var/vol\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &["volumes[0].mount", "relative path", "\"var/vol\""],
        not_says: &[],
    },
    Case {
        what: "a zero lease renewal interval",
        toml: "[controller]\nlease_renew_interval = \"0s\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &["controller.lease_renew_interval = 0s is out of range"],
        not_says: &[],
    },
    Case {
        what: "a zero poll interval",
        toml: "[controller]\npoll_interval = \"0s\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &["controller.poll_interval"],
        not_says: &[],
    },
    Case {
        what: "a zero resync interval",
        toml: "[controller]\nresync_interval = \"0s\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &["controller.resync_interval"],
        not_says: &[],
    },
    Case {
        what: "a huge resync interval",
        toml: "[controller]\nresync_interval = \"10000y\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &["controller.resync_interval", "out of range"],
        not_says: &[],
    },
    Case {
        what: "a zero lease",
        toml: "[controller]\nlease_duration = \"0s\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &["controller.lease_duration"],
        not_says: &[],
    },
    Case {
        what: "a zero first backoff",
        toml: "[controller]\nbackoff_min = \"0s\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &["controller.backoff_min"],
        not_says: &[],
    },
    Case {
        what: "a huge backoff cap",
        toml: "[controller]\nbackoff_max = \"10000y\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &["controller.backoff_max", "out of range"],
        not_says: &[],
    },
    Case {
        what: "a first backoff above the cap",
        toml: "[controller]\nbackoff_min = \"1h\"\nbackoff_max = \"1m\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &["controller.backoff_min", "at most controller.backoff_max"],
        not_says: &[],
    },
    Case {
        what: "a huge trash retention",
        toml: "[controller]\ntrash_retention = \"10000y\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &["controller.trash_retention", "out of range", "or never"],
        not_says: &[],
    },
    Case {
        what: "a huge history retention",
        toml: "[controller]\nhistory_retention = \"10000y\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &["controller.history_retention", "out of range"],
        not_says: &[],
    },
    Case {
        what: "a huge shutdown grace",
        toml: "[controller]\nshutdown_grace = \"10000y\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &["controller.shutdown_grace"],
        not_says: &[],
    },
    Case {
        what: "a zero volume probe",
        toml: "[controller]\nvolume_probe_min = \"0s\"\n",
        env: &[],
        args: LIST,
        code: 6,
        says: &["controller.volume_probe_min"],
        not_says: &[],
    },
    Case {
        what: "a zero poll interval from the environment",
        toml: "",
        env: &[("VFOLDER_CONTROLLER_CONTROLLER_POLL_INTERVAL", "0s")],
        args: LIST,
        code: 6,
        says: &["controller.poll_interval"],
        not_says: &[],
    },
    Case {
        what: "an environment variable of the wrong type",
        toml: "",
        env: &[("VFOLDER_CONTROLLER_CONTROLLER_MAX_ATTEMPTS", "lots")],
        args: LIST,
        code: 6,
        says: &["environment variable VFOLDER_CONTROLLER_CONTROLLER_MAX_ATTEMPTS"],
        not_says: &["config.toml"],
    },
    Case {
        what: "an environment duration that does not parse",
        toml: "",
        env: &[("VFOLDER_CONTROLLER_CONTROLLER_TRASH_RETENTION", "forever")],
        args: LIST,
        code: 6,
        says: &[
            "environment variable VFOLDER_CONTROLLER_CONTROLLER_TRASH_RETENTION",
            "\"forever\"",
        ],
        not_says: &["config.toml"],
    },
    Case {
        what: "a PostgreSQL URL with a bad option",
        toml: "",
        env: &[(
            "VFOLDER_CONTROLLER_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=bogus",
        )],
        args: LIST,
        code: 6,
        says: &["invalid database_url", "unknown value \"bogus\""],
        not_says: &[],
    },
    Case {
        what: "a PostgreSQL URL with a bad option on the command line",
        toml: "",
        env: &[],
        args: &[
            "--database-url",
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=bogus",
            "list",
        ],
        code: 6,
        says: &["invalid --database-url", "unknown value \"bogus\""],
        not_says: &[],
    },
    Case {
        what: "a SQLite URL without a file name",
        toml: "",
        env: &[("VFOLDER_CONTROLLER_DATABASE_URL", "sqlite://")],
        args: LIST,
        code: 6,
        says: &["invalid database_url", "names no database file"],
        not_says: &["no such table"],
    },
    Case {
        what: "clean-history older than the clocks can count",
        toml: "",
        env: &[],
        args: &["clean-history", "--older-than", "10000y"],
        code: 2,
        says: &["--older-than", "out of range"],
        not_says: &[],
    },
    Case {
        what: "a purge-after beyond the clocks",
        toml: "",
        env: &[],
        args: &[
            "trash",
            "7d3c9a52-0b8e-4c55-9a61-1f2e3d4c5b6a",
            "--purge-after",
            "10000y",
        ],
        code: 2,
        says: &["--purge-after", "out of range"],
        not_says: &[],
    },
];

fn config(dir: &Path, sections: &str) -> String {
    let db = dir.join("vfc.db");
    let sections = sections
        .replace("{a}", &dir.join("a").display().to_string())
        .replace("{b}", &dir.join("b").display().to_string())
        .replace("{link}", &dir.join("link").display().to_string());
    format!("database_url = \"sqlite://{}\"\n{sections}", db.display())
}

#[test]
fn unworkable_configurations_are_refused_at_load_naming_the_key() {
    let mut problems = Vec::new();
    for case in CASES {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/inner")).expect("mkdir a");
        std::fs::create_dir_all(dir.path().join("b")).expect("mkdir b");
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("link")).expect("link");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config(dir.path(), case.toml)).expect("write config");
        let out = Command::new(BIN)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .envs(case.env.iter().copied())
            .arg("--config")
            .arg(&path)
            .args(case.args)
            .output()
            .expect("run the binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code().unwrap_or(-1);
        let missing: Vec<_> = case.says.iter().filter(|s| !stderr.contains(**s)).collect();
        let present: Vec<_> = case
            .not_says
            .iter()
            .filter(|s| stderr.contains(**s))
            .collect();
        if code != case.code || !missing.is_empty() || !present.is_empty() {
            problems.push(format!(
                "{}: exit {code} (expected {}), missing {missing:?}, unexpected {present:?}; stderr: {stderr}",
                case.what, case.code
            ));
        }
        if dir.path().join("vfc.db").exists() {
            problems.push(format!("{}: the database was opened", case.what));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn never_is_a_retention_and_the_builtin_volume_may_stay_relative() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        config(
            dir.path(),
            "[controller]\ntrash_retention = \"never\"\nhistory_retention = \"never\"\n",
        ),
    )
    .expect("write config");
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .arg("--config")
        .arg(&path)
        .args(["--json", "list"])
        .output()
        .expect("run the binary");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
