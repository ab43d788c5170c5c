//! Controller benchmark on PostgreSQL: (a) convergence rate of `delete-ongoing` rows with tiny
//! trees, (b) latency from the COMMIT of a status change to the completion event, (c) with
//! 1,000,000 `ready` rows: the plans of every statement the idle controller runs (from
//! `auto_explain`) and its idle CPU.
//!
//! Run it through `bash benches/controller.sh`, which starts a private PostgreSQL with
//! `auto_explain` and passes `--database-url`, `--server-log`, `--binary`, `--quick`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgListener};
use uuid::Uuid;
use vfolder_controller::config::{Config, VolumeConfig};
use vfolder_controller::storage::{FolderRef, Volumes};
use vfolder_controller::store::{self, EVENT_CHANNEL};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    database_url: String,
    server_log: PathBuf,
    binary: PathBuf,
    quick: bool,
}

fn args() -> Option<Args> {
    let mut map = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if let Some(key) = k.strip_prefix("--") {
            if let Some(v) = it.next() {
                map.insert(key.to_owned(), v);
            }
        }
    }
    Some(Args {
        database_url: map.remove("database-url")?,
        server_log: map.remove("server-log")?.into(),
        binary: map.remove("binary")?.into(),
        quick: map.remove("quick").is_some_and(|q| q == "1"),
    })
}

#[tokio::main]
async fn main() -> Res<()> {
    let Some(args) = args() else {
        eprintln!("controller_bench: run it through `bash benches/controller.sh`");
        return Ok(());
    };
    let site = tempfile::tempdir()?;
    let mount = site.path().join("volume");
    std::fs::create_dir_all(&mount)?;
    let volume = VolumeConfig {
        mount: mount.clone(),
        max_concurrent_removals: 16,
        removal_threads: 1,
        ..VolumeConfig::builtin_default()
    };
    let config_path = site.path().join("config.toml");
    std::fs::write(
        &config_path,
        format!(
            "database_url = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[log]\nfilter = \"warn\"\n[controller]\nmax_concurrent_removals = 16\n[[volumes]]\nhost = \"{}\"\nmount = \"{}\"\nrequire_mount_point = false\nremoval_threads = 1\nmax_concurrent_removals = 16\n",
            args.database_url,
            volume.host,
            mount.display()
        ),
    )?;
    Config::load(Some(&config_path), Vec::new())?;
    let store = store::connect(&args.database_url).await?;
    store.migrate(false).await?;
    let volumes = Volumes::new(std::slice::from_ref(&volume));
    let mut rows = Vec::new();

    // (a) convergence rate
    let n = if args.quick { 1_000 } else { 10_000 };
    let ids = insert_folders(&args.database_url, &volumes, &volume, n).await?;
    let mut ctl = start(&args.binary, &config_path, "bench-a")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut db = PgConnection::connect(&args.database_url).await?;
    let t0 = Instant::now();
    sqlx::query("UPDATE vfolders SET status = 'delete-ongoing' WHERE status = 'ready'")
        .execute(&mut db)
        .await?;
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM vfolders WHERE status = 'delete-complete'")
                .fetch_one(&mut db)
                .await?;
        if done as usize >= ids.len() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            return Err(format!("only {done} of {} converged in 10 min", ids.len()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    rows.push((
        format!("(a) converge {n} delete-ongoing rows (tiny trees), 16 workers"),
        format!("{secs:.2} s = {:.0} rows/s", n as f64 / secs),
        "≥ 1,000 rows/s".to_owned(),
    ));

    // (b) wake-up latency: COMMIT of the status change → delete-complete NOTIFY received
    let samples = if args.quick { 50 } else { 200 };
    let mut listener = PgListener::connect(&args.database_url).await?;
    listener.listen(EVENT_CHANNEL).await?;
    let ids = insert_folders(&args.database_url, &volumes, &volume, samples).await?;
    let mut lat = Vec::new();
    for id in &ids {
        sqlx::query(&format!(
            "UPDATE vfolders SET status = 'delete-ongoing' WHERE id = '{id}'"
        ))
        .execute(&mut db)
        .await?;
        let committed = Instant::now();
        loop {
            let note = tokio::time::timeout(Duration::from_secs(30), listener.recv()).await??;
            let v: serde_json::Value = serde_json::from_str(note.payload())?;
            if v["id"] == id.to_string() && v["to"] == "delete-complete" {
                break;
            }
        }
        lat.push(committed.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    rows.push((
        format!(
            "(b) COMMIT → completion event, {samples} samples (upper bound of wake-up → start)"
        ),
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(pct(0.50)),
            ms(pct(0.99)),
            ms(*lat.last().unwrap_or(&Duration::ZERO))
        ),
        "p99 < 100 ms".to_owned(),
    ));
    ctl.kill()?;
    ctl.wait()?;

    // (c) 1,000,000 ready rows: plans of the periodic statements and idle CPU
    let bulk = if args.quick { 100_000 } else { 1_000_000 };
    sqlx::raw_sql(&format!(
        "INSERT INTO vfolders (id, host, quota_scope_id, name, \"user\")
         SELECT gen_random_uuid(), 'local:volume1', NULL, 'bulk-' || g, gen_random_uuid()
         FROM generate_series(1, {bulk}) g;
         ANALYZE;"
    ))
    .execute(&mut db)
    .await?;
    // From here on every statement of a new session is logged with its EXPLAIN ANALYZE plan.
    sqlx::raw_sql(
        "ALTER DATABASE postgres SET auto_explain.log_min_duration = 0;
         ALTER DATABASE postgres SET auto_explain.log_analyze = on;
         ALTER DATABASE postgres SET auto_explain.log_nested_statements = on;",
    )
    .execute(&mut db)
    .await?;
    let log_offset = std::fs::metadata(&args.server_log)?.len();
    let idle = if args.quick { 15 } else { 60 };
    let mut ctl = start(&args.binary, &config_path, "bench-c")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu0 = cpu_ticks(ctl.id())?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let cpu = (cpu_ticks(ctl.id())? - cpu0) as f64 / clock_ticks()? / t0.elapsed().as_secs_f64();
    ctl.kill()?;
    ctl.wait()?;
    rows.push((
        format!("(c) idle CPU of the controller over {idle} s, {bulk} ready rows"),
        format!("{:.2} %", cpu * 100.0),
        "< 1 %".to_owned(),
    ));

    println!("\n| measurement | result | target |\n|---|---|---|");
    for (what, result, target) in &rows {
        println!("| {what} | {result} | {target} |");
    }
    println!(
        "\nStatements the idle controller ran with {bulk} rows (auto_explain, EXPLAIN ANALYZE):\n"
    );
    println!("| statement | runs | max ms | scans |\n|---|---|---|---|");
    for (query, (runs, max, scans)) in plans(&args.server_log, log_offset)? {
        println!("| `{query}` | {runs} | {max:.2} | {} |", scans.join(", "));
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn start(binary: &Path, config: &Path, replica: &str) -> Res<Child> {
    Ok(Command::new(binary)
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("VFOLDER_CONTROLLER_CONTROLLER_REPLICA_ID", replica)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// Inserts `n` ready rows in batches and creates a one-file tree for each.
async fn insert_folders(
    url: &str,
    volumes: &Volumes,
    volume: &VolumeConfig,
    n: usize,
) -> Res<Vec<Uuid>> {
    let mut db = PgConnection::connect(url).await?;
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let scope = Uuid::new_v4();
    for chunk in ids.chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|id| format!("('{id}', '{}', 'user:{scope}', 'b-{id}')", volume.host))
            .collect();
        sqlx::raw_sql(&format!(
            "INSERT INTO vfolders (id, host, quota_scope_id, name) VALUES {}",
            values.join(",")
        ))
        .execute(&mut db)
        .await?;
    }
    let v = volumes.get(&volume.host)?;
    let scope_text = format!("user:{scope}");
    for id in &ids {
        let rel = v.folder_path(&FolderRef {
            id: *id,
            host: &volume.host,
            quota_scope_id: Some(&scope_text),
        })?;
        let path = volume.mount.join(rel);
        std::fs::create_dir_all(&path)?;
        std::fs::write(path.join("file"), b"x")?;
    }
    Ok(ids)
}

fn cpu_ticks(pid: u32) -> Res<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').ok_or("bad stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn clock_ticks() -> Res<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// Statement → (runs, max duration ms, scan nodes) from auto_explain entries after `offset`.
type PlanStats = BTreeMap<String, (usize, f64, Vec<String>)>;

fn plans(log: &Path, offset: u64) -> Res<PlanStats> {
    let text = std::fs::read(log)?;
    let text = String::from_utf8_lossy(&text[offset as usize..]).into_owned();
    let mut out: PlanStats = BTreeMap::new();
    let mut current: Option<(f64, String, Vec<String>)> = None;
    let flush = |cur: Option<(f64, String, Vec<String>)>, out: &mut PlanStats| {
        if let Some((dur, query, scans)) = cur {
            let key: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
            let key: String = key.chars().take(90).collect();
            let e = out.entry(key).or_insert((0, 0.0, Vec::new()));
            e.0 += 1;
            e.1 = e.1.max(dur);
            for s in scans {
                if !e.2.contains(&s) {
                    e.2.push(s);
                }
            }
        }
    };
    for line in text.lines() {
        if let Some(rest) = line
            .split("duration: ")
            .nth(1)
            .filter(|_| line.contains("plan:"))
        {
            flush(current.take(), &mut out);
            let dur = rest
                .split_whitespace()
                .next()
                .and_then(|d| d.parse().ok())
                .unwrap_or(0.0);
            current = Some((dur, String::new(), Vec::new()));
        } else if let Some(cur) = current.as_mut() {
            if let Some(q) = line.trim_start().strip_prefix("Query Text:") {
                cur.1 = q.to_owned();
            } else if line.starts_with('\t') || line.starts_with(' ') {
                for kind in [
                    "Seq Scan",
                    "Index Only Scan",
                    "Index Scan",
                    "Bitmap Heap Scan",
                ] {
                    if let Some(pos) = line.find(kind) {
                        let node = line[pos..].split("  (").next().unwrap_or("").trim();
                        let node = node.replace("Index Scan Backward", "Index Scan");
                        if !cur.2.contains(&node) {
                            cur.2.push(node);
                        }
                        break;
                    }
                }
            } else {
                flush(current.take(), &mut out);
            }
        }
    }
    flush(current.take(), &mut out);
    Ok(out)
}
