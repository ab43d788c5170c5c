//! Test harness for end-to-end controller tests (include `mod common;` beside it): real `vfolder-controller run` processes,
//! real databases, real directories.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfolder_controller::config::VolumeConfig;
use vfolder_controller::storage::{FolderRef, Volumes};
use vfolder_controller::store::{Folder, FolderDetail, NewFolder, Store};

use crate::common::TestDb;

use uuid::Uuid;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_vfolder-controller");

/// A test site: a temp dir holding the volume, a sentinel tree outside the folders, the
/// config file and the process logs.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub db: TestDb,
    pub database_url: String,
    pub store: Arc<dyn Store>,
    pub volumes: Volumes,
    pub volume: VolumeConfig,
}

impl Site {
    /// A site on `database_url` with one volume `local:volume1` (not required to be a mount
    /// point) and `extra` appended to the `[controller]` section of the config.
    pub async fn new(db: TestDb, controller_toml: &str, volume_toml: &str) -> Site {
        Site::build(db, controller_toml, volume_toml, true).await
    }

    /// A site whose database is left as it is (e.g. a platform table to adopt).
    pub async fn unmigrated(db: TestDb, controller_toml: &str, volume_toml: &str) -> Site {
        Site::build(db, controller_toml, volume_toml, false).await
    }

    async fn build(db: TestDb, controller_toml: &str, volume_toml: &str, migrate: bool) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = db.url.clone();
        let volume_toml = if volume_toml.contains("require_mount_point") {
            volume_toml.to_owned()
        } else {
            format!("require_mount_point = false\n{volume_toml}")
        };
        let mount = dir.path().join("volume");
        std::fs::create_dir_all(&mount).expect("mkdir volume");
        std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir logs");
        let config = format!(
            r#"database_url = "{database_url}"
[http]
listen = "127.0.0.1:0"
[log]
filter = "info,vfolder_controller=debug"
[controller]
resync_interval = "1s"
poll_interval = "200ms"
lease_duration = "3s"
lease_renew_interval = "500ms"
backoff_min = "100ms"
backoff_max = "400ms"
shutdown_grace = "10s"
{controller_toml}
[[volumes]]
host = "local:volume1"
mount = "{}"
{volume_toml}
"#,
            mount.display()
        );
        std::fs::write(dir.path().join("config.toml"), &config).expect("write config");
        let parsed = vfolder_controller::config::Config::load(
            Some(&dir.path().join("config.toml")),
            Vec::new(),
        )
        .expect("test config loads");
        let volume = parsed.volumes[0].clone();
        let store = if migrate {
            db.migrated().await
        } else {
            db.store().await
        };
        Site {
            db,
            volumes: Volumes::new(&parsed.volumes),
            dir,
            database_url,
            store,
            volume,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn mount(&self) -> &Path {
        &self.volume.mount
    }

    /// Creates a `ready` row and its directory with a tree of `dirs` × `files` files.
    pub async fn folder_with_tree(&self, name: &str, dirs: usize, files: usize) -> Folder {
        self.folder_on("local:volume1", name, dirs, files).await
    }

    /// `n` folders like [`Site::folder_with_tree`], named `<prefix><i>` for `i` in `0..n`.
    pub async fn folders_with_trees(
        &self,
        prefix: &str,
        n: usize,
        dirs: usize,
        files: usize,
    ) -> Vec<Folder> {
        let mut folders = Vec::with_capacity(n);
        for i in 0..n {
            folders.push(
                self.folder_with_tree(&format!("{prefix}{i}"), dirs, files)
                    .await,
            );
        }
        folders
    }

    /// Like [`Site::folder_with_tree`], on the volume `host` (configured in the site).
    pub async fn folder_on(&self, host: &str, name: &str, dirs: usize, files: usize) -> Folder {
        let new = NewFolder {
            id: Uuid::new_v4(),
            host: host.into(),
            quota_scope_id: Some(format!("user:{}", Uuid::new_v4())),
            name: name.into(),
            user: Some(Uuid::new_v4()),
            group: None,
            ownership_type: "user".into(),
        };
        let folder = self
            .store
            .create_folder(&new, "test")
            .await
            .expect("create");
        let path = self.folder_path(&folder);
        make_tree(&path, dirs, files);
        folder
    }

    /// Absolute live path of a folder (the engine's one path computation).
    pub fn folder_path(&self, folder: &Folder) -> PathBuf {
        let volume = self.volumes.get(&folder.host).expect("volume");
        let rel = volume.folder_path(&FolderRef::from(folder)).expect("path");
        volume.config().mount.join(rel)
    }

    /// Absolute trash path of a folder.
    pub fn trash_path(&self, folder: &Folder) -> PathBuf {
        let volume = self.volumes.get(&folder.host).expect("volume");
        let rel = volume.trash_path(&FolderRef::from(folder)).expect("path");
        self.mount().join(rel)
    }

    /// A sentinel tree inside the volume but outside every folder, and one outside the
    /// volume, that must survive every test byte for byte.
    pub fn sentinels(&self) -> Vec<PathBuf> {
        let inside = self.mount().join("sentinel");
        let outside = self.dir.path().join("outside");
        for s in [&inside, &outside] {
            if !s.exists() {
                make_tree(s, 3, 5);
            }
        }
        vec![inside, outside]
    }

    /// Starts `vfolder-controller run` with this site's config.
    pub fn start(&self, replica: &str) -> Proc {
        self.start_with(replica, &[])
    }

    /// Starts `vfolder-controller run` with extra environment variables.
    pub fn start_with(&self, replica: &str, env: &[(&str, &str)]) -> Proc {
        self.start_wrapped(replica, env, &[])
    }

    /// Starts `vfolder-controller run` through `wrapper` (a command that execs the rest of
    /// its arguments, such as `prlimit --nofile=256:256 --`), so the pid is the controller's.
    pub fn start_wrapped(&self, replica: &str, env: &[(&str, &str)], wrapper: &[&str]) -> Proc {
        let log = self.dir.path().join("logs").join(format!("{replica}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.arg("--config")
            .arg(self.config_path())
            .arg("run")
            .env("VFOLDER_CONTROLLER_CONTROLLER_REPLICA_ID", replica)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn controller");
        Proc { child, log }
    }

    /// Runs a CLI subcommand against this site; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .output()
            .expect("run cli");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs raw SQL the way an operator would from psql or sqlite3 (no actor, no store).
    pub async fn raw_sql(&self, sql: &str) {
        self.db.raw().await.execute(sql).await.expect(sql);
    }

    pub async fn detail(&self, id: Uuid) -> FolderDetail {
        self.store.get_folder(id).await.expect("get folder")
    }

    /// Waits until `cond` holds for the folder, or panics with the last detail.
    pub async fn wait_for(
        &self,
        id: Uuid,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&FolderDetail) -> bool,
    ) -> FolderDetail {
        let deadline = Instant::now() + timeout;
        loop {
            let d = self.detail(id).await;
            if cond(&d) {
                return d;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}: {d:#?}\nlogs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The audit log, oldest first: of one folder, or of all with `None`.
    pub async fn audit(&self, id: Option<Uuid>) -> Vec<vfolder_controller::store::AuditEntry> {
        self.store
            .audit(&vfolder_controller::store::AuditFilter {
                id,
                ..Default::default()
            })
            .await
            .expect("audit")
    }

    /// Waits until `n` rows are `delete-complete`, or panics with the logs.
    pub async fn wait_all_complete(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self
                .store
                .list_folders(
                    &[vfolder_controller::lifecycle::Status::DeleteComplete],
                    false,
                )
                .await
                .expect("list")
                .len();
            if done == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {done} of {n} complete:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// All controller logs of this site, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("logs")) {
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                out.push_str(&format!("--- {} (last 40 lines)\n", e.path().display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// A running controller process; killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, sig).expect("kill");
    }

    /// Waits for exit; `None` if it is still running after `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never showed {needle:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Builds `dirs` directories of `files` small files each (contents depend on the path),
/// plus a symlink per directory.
pub fn make_tree(root: &Path, dirs: usize, files: usize) {
    std::fs::create_dir_all(root).expect("mkdir tree root");
    for d in 0..dirs {
        let dir = root.join(format!("d{d:04}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..files {
            std::fs::write(dir.join(format!("f{f:04}")), format!("{d}/{f}")).expect("write");
        }
        std::os::unix::fs::symlink("../d0000", dir.join("link")).expect("symlink");
    }
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `GET path` on 127.0.0.1:port; returns (status code, body), or `None` when nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

/// Mounts a tmpfs at `path`; unmounted (lazily) on drop.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mkdir mount point");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256m", "tmpfs"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(
            st.success(),
            "mount tmpfs at {} (tests run as root)",
            path.display()
        );
        Tmpfs(path.to_owned())
    }

    pub fn unmount(&self) {
        lazy_unmount(&self.0);
    }
}

/// `umount -l`: detaches the mount at once; descriptors opened through it keep working (as
/// after an operator's lazy unmount). Unmounting twice is fine; the second is quiet.
pub fn lazy_unmount(path: &Path) {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(path)
        .stderr(Stdio::null())
        .status();
}

/// A bind mount of `source` at `target`, the way a volume directory is mounted; lazily
/// unmounted on drop.
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
}

impl BindMount {
    pub fn mount(source: &Path, target: &Path) -> BindMount {
        std::fs::create_dir_all(source).expect("mkdir bind source");
        std::fs::create_dir_all(target).expect("mkdir mount point");
        let st = Command::new("mount")
            .arg("--bind")
            .arg(source)
            .arg(target)
            .status()
            .expect("mount --bind");
        assert!(
            st.success(),
            "bind-mount {} at {} (tests run as root)",
            source.display(),
            target.display()
        );
        BindMount {
            source: source.to_owned(),
            target: target.to_owned(),
        }
    }

    pub fn unmount(&self) {
        lazy_unmount(&self.target);
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// The value of the sample `series` (name with labels, exactly as exported) on a
/// controller's `/metrics`, if it is there.
pub fn metric(port: u16, series: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics")?;
    body.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        self.unmount();
    }
}
