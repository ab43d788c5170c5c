//! Database outage: a private PostgreSQL instance (its own data directory and port, so the
//! shared server and other tests are never disturbed) is stopped and restarted under a
//! running controller.

use crate::harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::http_get;
use vfolder_controller::lifecycle::Status;
use vfolder_controller::store::{self, NewFolder};

/// A throwaway PostgreSQL cluster run as the `postgres` user (the server refuses root).
struct PrivatePostgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        run_as_postgres(
            &["chown", "-R", "postgres:postgres"],
            Some(dir.path()),
            true,
        );
        let pg = PrivatePostgres {
            port: harness::free_port(),
            _dir: dir,
            data,
            bin,
        };
        pg.pg(&[
            "initdb",
            "-A",
            "trust",
            "-U",
            "postgres",
            "-D",
            &pg.data.display().to_string(),
        ]);
        pg.ctl("start");
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg(&self, args: &[&str]) {
        let mut full = vec![self.bin.join(args[0]).display().to_string()];
        full.extend(args[1..].iter().map(|s| s.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        run_as_postgres(&refs, None, false);
    }

    fn ctl(&self, action: &str) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.data.display()
        );
        let log = self.data.join("server.log").display().to_string();
        let data = self.data.display().to_string();
        let mut args = vec!["pg_ctl", "-D", &data, "-w", "-l", &log, "-o", &opts];
        if action == "stop" {
            args.extend(["-m", "fast"]);
        }
        args.push(action);
        self.pg(&args);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

/// Runs a command as the `postgres` user (or, with `as_root`, as root on `path`).
fn run_as_postgres(args: &[&str], path: Option<&Path>, as_root: bool) {
    let mut cmd = if as_root {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]);
        c
    } else {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).args(args);
        c
    };
    if let Some(p) = path {
        cmd.arg(p);
    }
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_http(port: u16, path: &str, code: u16, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let got = http_get(port, path);
        if let Some((c, body)) = &got {
            if *c == code {
                return body.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {code}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn delete_one(site_url: &str, mount: &Path) -> uuid::Uuid {
    let store = store::connect(site_url).await.expect("connect");
    let folder = store
        .create_folder(
            &NewFolder {
                id: uuid::Uuid::new_v4(),
                host: "local:volume1".into(),
                quota_scope_id: None,
                name: format!("n{}", uuid::Uuid::new_v4().simple()),
                user: Some(uuid::Uuid::new_v4()),
                group: None,
                ownership_type: "user".into(),
            },
            "test",
        )
        .await
        .expect("create");
    let volumes =
        vfolder_controller::storage::Volumes::new(&[vfolder_controller::config::VolumeConfig {
            mount: mount.to_owned(),
            require_mount_point: false,
            ..vfolder_controller::config::VolumeConfig::builtin_default()
        }]);
    let rel = volumes
        .get("local:volume1")
        .expect("volume")
        .folder_path(&vfolder_controller::storage::FolderRef::from(&folder))
        .expect("path");
    harness::make_tree(&mount.join(rel), 2, 3);
    store
        .set_status(&store::StatusRequest {
            id: folder.id,
            to: Status::DeleteOngoing,
            actor: "test".into(),
            action: store::AuditAction::ForceDelete,
            purge_after: None,
            expect_from: &[],
        })
        .await
        .expect("force-delete");
    folder.id
}

async fn wait_complete(url: &str, id: uuid::Uuid) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(store) = store::connect(url).await {
            if let Ok(d) = store.get_folder(id).await {
                if d.folder.status == Status::DeleteComplete {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "folder {id} never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_survives_a_database_outage_and_converges_after() {
    let pg = PrivatePostgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mount = dir.path().join("volume");
    std::fs::create_dir_all(&mount).expect("mkdir");
    let port = harness::free_port();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[controller]\nresync_interval = \"500ms\"\nbackoff_max = \"1s\"\n[[volumes]]\nhost = \"local:volume1\"\nmount = \"{}\"\nrequire_mount_point = false\n",
            pg.url(),
            mount.display()
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.path().join("controller.log")).expect("log");
    let mut child = Command::new(harness::BIN)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .expect("spawn");

    wait_http(port, "/readyz", 200, Duration::from_secs(30));
    let before = delete_one(&pg.url(), &mount).await;
    wait_complete(&pg.url(), before).await;

    pg.ctl("stop");
    let reason = wait_http(port, "/readyz", 503, Duration::from_secs(30));
    assert!(!reason.is_empty(), "readiness says why");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the controller keeps running"
    );

    pg.ctl("start");
    wait_http(port, "/readyz", 200, Duration::from_secs(30));
    let after = delete_one(&pg.url(), &mount).await;
    wait_complete(&pg.url(), after).await;
    wait_http(port, "/healthz", 200, Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
}
