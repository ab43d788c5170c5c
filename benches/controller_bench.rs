//! Controller benchmark on PostgreSQL: (a) convergence rate of `delete-ongoing` rows with tiny
//! trees (from the commit of the UPDATE that sets them, whose own time is reported beside),
//! 10,000 rows, and (a') 100,000 rows at once with the controller's peak RSS (`VmHWM`),
//! (b) latency from the COMMIT of a status change to the completion event, (c) with
//! 10,000,000 `ready` rows: every statement the idle controller runs with its plan and time
//! (from `auto_explain`), the status-count round trip, and the idle CPU; (d) one folder of
//! 100,000 files in 1,000 directories end to end (the `delete-ongoing` UPDATE to the
//! `delete-complete` event) against `rm -rf` of the same tree, at the default removal threads
//! (one per core, growing while they wait on the storage), fixed at one per core, and fixed
//! at 16. `--quick` runs 1,000 / 10,000 / 100,000 rows and 20,000 files instead.
//! `--converge-only N` and `--end-to-end-only 1` run one part alone.
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
use vfolder_controller::config::{Config, DEFAULT_MAX_REMOVAL_THREADS, TrashMode, VolumeConfig};
use vfolder_controller::lifecycle::Status;
use vfolder_controller::storage::{FolderRef, Volumes};
use vfolder_controller::store::{self, EVENT_CHANNEL};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    database_url: String,
    /// The database as the controller reaches it: `database_url` itself, or through
    /// benches/tools' `delay_proxy` (`VFC_BENCH_RTT_US`) to stand for a database on another host.
    controller_database_url: String,
    server_log: PathBuf,
    binary: PathBuf,
    /// benches/tools' `mktree`, for part (d)'s tree.
    mktree: PathBuf,
    quick: bool,
    /// Only part (a), with this many rows, and where its database time went.
    converge_only: Option<usize>,
    /// Only part (d).
    end_to_end_only: bool,
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
    let database_url = map.remove("database-url")?;
    Some(Args {
        controller_database_url: map
            .remove("controller-database-url")
            .unwrap_or_else(|| database_url.clone()),
        database_url,
        server_log: map.remove("server-log")?.into(),
        binary: map.remove("binary")?.into(),
        mktree: map.remove("mktree")?.into(),
        quick: map.remove("quick").is_some_and(|q| q == "1"),
        converge_only: map.remove("converge-only").and_then(|n| n.parse().ok()),
        end_to_end_only: map.remove("end-to-end-only").is_some_and(|q| q == "1"),
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
    // Slots for removals (controller and volume alike); `VFC_BENCH_WORKERS` measures another
    // width without editing the bench.
    let workers: usize = std::env::var("VFC_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(16);
    // `VFC_BENCH_TRASH_MOVED=1`: the volume moves its trash, and the folders of
    // `VFC_BENCH_TRASH` are already moved (what a claim that looks for moves must read past).
    let moved = std::env::var("VFC_BENCH_TRASH_MOVED").is_ok_and(|v| v == "1");
    // Threads per removal: the default (one per core) unless `VFC_BENCH_REMOVAL_THREADS`
    // sets them, e.g. to 16, what a 16-core host gets by default.
    let removal_threads: Option<usize> = std::env::var("VFC_BENCH_REMOVAL_THREADS")
        .ok()
        .and_then(|w| w.parse().ok());
    let volume = VolumeConfig {
        mount: mount.clone(),
        max_concurrent_removals: workers,
        removal_threads: removal_threads.unwrap_or(VolumeConfig::builtin_default().removal_threads),
        trash: if moved {
            TrashMode::Move
        } else {
            TrashMode::InPlace
        },
        ..VolumeConfig::builtin_default()
    };
    let config_path = site.path().join("config.toml");
    write_config(
        &config_path,
        &args.controller_database_url,
        &volume,
        &format!("max_concurrent_removals = {workers}"),
        &format!(
            "max_concurrent_removals = {workers}{}{}",
            removal_threads.map_or(String::new(), |n| format!("\nremoval_threads = {n}")),
            if moved { "\ntrash = \"move\"" } else { "" }
        ),
    )?;
    Config::load(Some(&config_path), Vec::new())?;
    let store = store::connect(&args.database_url).await?;
    // The measured binary migrates, so that an older build (VFC_BENCH_BINARY) finds the
    // schema it knows rather than one with migrations it has never heard of.
    let migrated = Command::new(&args.binary)
        .arg("--config")
        .arg(&config_path)
        .arg("migrate")
        .stdout(Stdio::null())
        .status()?;
    if !migrated.success() {
        return Err(format!("{} migrate failed: {migrated}", args.binary.display()).into());
    }
    let volumes = Volumes::new(std::slice::from_ref(&volume));
    let mut rows = Vec::new();

    // (a) convergence rate, (a') the same with ten times the rows due at once, and the
    // controller's peak memory with them
    let sizes = if args.quick {
        [1_000, 10_000]
    } else {
        [10_000, 100_000]
    };
    if args.controller_database_url != args.database_url {
        let (direct, controller) = (
            round_trip(&args.database_url).await?,
            round_trip(&args.controller_database_url).await?,
        );
        println!(
            "the controller reaches the database through a delay: round trip {:.2} ms \
             (direct {:.2} ms), median of 200\n",
            ms(controller),
            ms(direct)
        );
    }
    let mut db = PgConnection::connect(&args.database_url).await?;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut db)
        .await?;
    // Folders in the trash (`delete-pending`, in place, a day old) for the whole run: a real
    // platform has a trash bin, and nothing in it is work until it is purged or restored.
    if let Some(trash) = std::env::var("VFC_BENCH_TRASH")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        sqlx::raw_sql(&format!(
            "SET session_replication_role = replica;
             INSERT INTO vfolders (id, host, quota_scope_id, name, status, status_history,
                                   status_changed)
             SELECT gen_random_uuid(), '{}', NULL, 'trash-' || g, 'delete-pending', '[]'::jsonb,
                    now() - make_interval(days => 1)
             FROM generate_series(1, {trash}) g;
             RESET session_replication_role;",
            volume.host
        ))
        .execute(&mut db)
        .await?;
        if moved {
            sqlx::raw_sql(
                "INSERT INTO vfolder_controller_state (vfolder_id, location)
                 SELECT id, 'trash' FROM vfolders WHERE name LIKE 'trash-%'",
            )
            .execute(&mut db)
            .await?;
        }
        sqlx::raw_sql("VACUUM ANALYZE").execute(&mut db).await?;
        println!(
            "{trash} folders in the trash (delete-pending, {}) for the whole run\n",
            if moved { "moved" } else { "in place" }
        );
    }
    let (files, dirs) = if args.quick {
        (20_000, 200)
    } else {
        (100_000, 1_000)
    };
    if args.end_to_end_only {
        for threads in END_TO_END_THREADS {
            let e2e =
                end_to_end(&args, site.path(), &volumes, &volume, files, dirs, threads).await?;
            let (what, result, _) = e2e.row(files, dirs);
            println!("{what}: {result}");
        }
        return Ok(());
    }
    if let Some(n) = args.converge_only {
        let c = converge(&args, &config_path, &volumes, &volume, &mut db, n).await?;
        println!(
            "converged {n} rows {} ({workers} slots, {} removal threads), peak RSS {:.1} MiB\n\n{}",
            c.rate(n),
            volume.removal_threads,
            c.hwm as f64 / 1024.0,
            c.profile
        );
        return Ok(());
    }
    let mut profiles = Vec::new();
    for (part, n) in ["(a)", "(a')"].into_iter().zip(sizes) {
        let c = converge(&args, &config_path, &volumes, &volume, &mut db, n).await?;
        profiles.push(format!("{part}, {n} rows:\n\n{}", c.profile));
        rows.push((
            format!(
                "{part} converge {n} delete-ongoing rows (tiny trees), {workers} workers, {} removal threads",
                volume.removal_threads
            ),
            c.rate(n),
            "≥ 1,000 rows/s".to_owned(),
        ));
        rows.push((
            format!("{part} controller peak RSS (VmHWM) with {n} rows due at once"),
            format!("{:.1} MiB", c.hwm as f64 / 1024.0),
            "bounded".to_owned(),
        ));
    }
    // The history of every removal above is kept (history retention) as delete-complete:
    // past EXACT_COUNT_LIMIT rows the folders gauge estimates it instead of counting it.
    let (took, complete) = time_status_counts(&*store, &mut db, Status::DeleteComplete).await?;
    rows.push((
        "(a') status_counts() round trip (folders gauge) with the delete-complete history above, \
         median of 5"
            .to_owned(),
        format!("{:.2} ms; {complete}", ms(took)),
        "< 10 ms".to_owned(),
    ));
    // (d) one big folder end to end, against `rm -rf` of the same tree
    for threads in END_TO_END_THREADS {
        let e2e = end_to_end(&args, site.path(), &volumes, &volume, files, dirs, threads).await?;
        rows.push(e2e.row(files, dirs));
    }

    let mut ctl = start(&args.binary, &config_path, "bench-b")?;
    tokio::time::sleep(Duration::from_secs(2)).await;

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

    // (c) 10,000,000 ready rows: plans of the periodic statements and idle CPU
    let bulk: i64 = if args.quick { 100_000 } else { 10_000_000 };
    // A tenth of them with a controller state row: folders the controller once moved or
    // restored keep theirs, so this table grows with the live set too.
    let with_state = bulk / 10;
    // Part (c) is about the live set: the history of (a) and (b) goes first, as the history
    // cleanup would remove it (tombstones and cascades included).
    sqlx::query("DELETE FROM vfolders WHERE status = 'delete-complete'")
        .execute(&mut db)
        .await?;
    let t0 = Instant::now();
    // One INSERT ... SELECT, not a statement per row. The triggers are off for the load
    // (`session_replication_role`, superuser on the private instance): the status trigger
    // would only stamp what is given here and send ten million NOTIFYs nobody reads.
    sqlx::raw_sql(&format!(
        "SET session_replication_role = replica;
         SET synchronous_commit = off;
         INSERT INTO vfolders (id, host, quota_scope_id, name, \"user\", status, status_history,
                               status_changed)
         SELECT ('b0000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'local:volume1',
                NULL, 'bulk-' || g,
                ('c0000000-0000-4000-8000-' || lpad(to_hex(g / 1000), 12, '0'))::uuid,
                'ready', '[]'::jsonb, now() - make_interval(days => 1)
         FROM generate_series(1, {bulk}) g;
         INSERT INTO vfolder_controller_state (vfolder_id)
         SELECT ('b0000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid
         FROM generate_series(1, {with_state}) g;
         RESET session_replication_role;"
    ))
    .execute(&mut db)
    .await?;
    // Alone: several statements in one message are one implicit transaction, and VACUUM
    // refuses to run in one. It sets the visibility map, as autovacuum would.
    sqlx::raw_sql("VACUUM ANALYZE").execute(&mut db).await?;
    rows.push((
        format!("(c) load {bulk} ready rows ({with_state} with controller state), VACUUM ANALYZE"),
        format!("{:.0} s", t0.elapsed().as_secs_f64()),
        "(set-up)".to_owned(),
    ));
    // The folders gauge's statement, timed from here (auto_explain cannot show the EXPLAIN
    // it uses for the estimate), and what the estimate says next to the truth.
    let (took, ready) = time_status_counts(&*store, &mut db, Status::Ready).await?;
    rows.push((
        format!("(c) status_counts() round trip (folders gauge), {bulk} ready rows, median of 5"),
        format!("{:.2} ms; {ready}", ms(took)),
        "< 10 ms".to_owned(),
    ));
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
    let hwm = vm_hwm_kib(ctl.id())?;
    ctl.kill()?;
    ctl.wait()?;
    rows.push((
        format!("(c) idle CPU of the controller over {idle} s, {bulk} ready rows"),
        format!(
            "{:.2} % (peak RSS {:.1} MiB)",
            cpu * 100.0,
            hwm as f64 / 1024.0
        ),
        "< 1 %".to_owned(),
    ));

    println!("\n| measurement | result | target |\n|---|---|---|");
    for (what, result, target) in &rows {
        println!("| {what} | {result} | {target} |");
    }
    println!(
        "\nStatements the idle controller ran with {bulk} ready rows (auto_explain, EXPLAIN ANALYZE; \
         the start-up's migration check included):\n"
    );
    println!("| statement | runs | max ms | plan: scan nodes |\n|---|---|---|---|");
    for (query, (runs, max, scans)) in plans(&args.server_log, log_offset)? {
        println!("| {query} | {runs} | {max:.2} | {} |", scans.join(", "));
    }
    println!(
        "\nWhere the convergence runs spent their time (pg_stat_statements, pg_stat_wal, /proc):\n"
    );
    for p in profiles {
        println!("{p}");
    }
    Ok(())
}

/// One convergence run.
struct Converged {
    /// From the purge's commit (the rows are `delete-ongoing` from then on) to the last
    /// `delete-complete`: the controller's convergence.
    secs: f64,
    /// The bench's own purge `UPDATE` of all rows, before which the controller has nothing to
    /// do (the trigger runs for every row).
    purge_secs: f64,
    /// The controller's peak RSS, KiB.
    hwm: u64,
    /// CPU and database profile of the run.
    profile: String,
}

impl Converged {
    fn rate(&self, n: usize) -> String {
        let total = self.secs + self.purge_secs;
        format!(
            "{:.2} s = {:.0} rows/s (counting the purge UPDATE too: {total:.2} s = {:.0} rows/s)",
            self.secs,
            n as f64 / self.secs,
            n as f64 / total
        )
    }
}

/// Inserts `n` ready rows with one-file trees, sets them all to `delete-ongoing` in one
/// UPDATE under a fresh controller and waits until all are `delete-complete`.
async fn converge(
    args: &Args,
    config: &Path,
    volumes: &Volumes,
    volume: &VolumeConfig,
    db: &mut PgConnection,
    n: usize,
) -> Res<Converged> {
    insert_folders(&args.database_url, volumes, volume, n).await?;
    let mut ctl = start(&args.binary, config, "bench-a")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM vfolders WHERE status = 'delete-complete'")
            .fetch_one(&mut *db)
            .await?;
    let counters = db_counters(db).await?;
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(&mut *db)
        .await?;
    let (own0, machine0) = (cpu_ticks(ctl.id())?, machine_ticks()?);
    let purge = Instant::now();
    sqlx::query("UPDATE vfolders SET status = 'delete-ongoing' WHERE status = 'ready'")
        .execute(&mut *db)
        .await?;
    let t0 = Instant::now();
    let purge_secs = (t0 - purge).as_secs_f64();
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM vfolders WHERE status = 'delete-complete'")
                .fetch_one(&mut *db)
                .await?;
        if (done - before) as usize >= n {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            return Err(format!("only {} of {n} converged in 10 min", done - before).into());
        }
        if let Some(exit) = ctl.try_wait()? {
            return Err(format!(
                "the controller exited ({exit}) after {} of {n}",
                done - before
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let hz = clock_ticks()?;
    let window = purge.elapsed().as_secs_f64();
    let own = (cpu_ticks(ctl.id())? - own0) as f64 / hz / window;
    let machine = (machine_ticks()? - machine0) as f64 / hz / window;
    let hwm = vm_hwm_kib(ctl.id())?;
    ctl.kill()?;
    ctl.wait()?;
    let profile = format!(
        "CPU: the controller {own:.2} cores, the whole machine {machine:.2} of {} cores; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        db_profile(db, counters, n, window).await?
    );
    Ok(Converged {
        secs,
        purge_secs,
        hwm,
        profile,
    })
}

/// The server's commit and WAL flush counters.
async fn db_counters(db: &mut PgConnection) -> Res<(i64, i64)> {
    // Statistics are cached per transaction; a fresh snapshot each time.
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *db)
        .await?;
    Ok(sqlx::query_as(
        "SELECT (SELECT sum(xact_commit)::int8 FROM pg_stat_database),
                (SELECT wal_sync FROM pg_stat_wal)",
    )
    .fetch_one(&mut *db)
    .await?)
}

/// Commits, WAL flushes and statements per folder of a convergence run, and the statements
/// that took the most database time (the bench's own statements are left out).
async fn db_profile(
    db: &mut PgConnection,
    (commits0, syncs0): (i64, i64),
    n: usize,
    secs: f64,
) -> Res<String> {
    let (commits, syncs) = db_counters(db).await?;
    let top: Vec<(String, i64, f64, f64)> = sqlx::query_as(
        "SELECT query, calls, total_exec_time, mean_exec_time FROM pg_stat_statements
         WHERE query NOT LIKE '%pg_stat%' AND query NOT LIKE 'SELECT count(*) FROM vfolders%'
           AND query NOT LIKE 'UPDATE vfolders SET status = % WHERE status = %'
         ORDER BY total_exec_time DESC",
    )
    .fetch_all(&mut *db)
    .await?;
    let per = |x: f64| x / n as f64;
    let calls: i64 = top.iter().map(|t| t.1).sum();
    let busy: f64 = top.iter().map(|t| t.2).sum();
    let mut out = format!(
        "{:.2} commits, {:.2} WAL flushes and {:.1} statements per folder; the statements \
         kept the server busy {:.0} % of the run ({:.2} ms per folder)\n\n\
         | statement | calls per folder | mean ms | share of statement time |\n|---|---|---|---|\n",
        per((commits - commits0) as f64),
        per((syncs - syncs0) as f64),
        per(calls as f64),
        busy / 10.0 / secs,
        per(busy),
    );
    for (query, calls, total, mean) in top.iter().take(10) {
        out.push_str(&format!(
            "| `{}` | {:.2} | {mean:.3} | {:.0} % |\n",
            words(query, 12).replace('|', "\\|"),
            per(*calls as f64),
            total / busy * 100.0
        ));
    }
    Ok(out)
}

/// The median of five `status_counts()` round trips, and what it says of `status` beside the
/// true count: `ready = 9993278 (estimate; true 10000000)`.
async fn time_status_counts(
    store: &dyn store::Store,
    db: &mut PgConnection,
    status: Status,
) -> Res<(Duration, String)> {
    let mut took = Vec::new();
    let mut counts = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        counts = store.status_counts().await?;
        took.push(t.elapsed());
    }
    took.sort();
    let count = counts
        .into_iter()
        .find(|c| c.status == status)
        .ok_or("status not counted")?;
    let truth: i64 = sqlx::query_scalar("SELECT count(*) FROM vfolders WHERE status = $1")
        .bind(status.as_str())
        .fetch_one(db)
        .await?;
    let how = if count.exact { "exact" } else { "estimate" };
    Ok((
        took[took.len() / 2],
        format!("{status} = {} ({how}; true {truth})", count.rows),
    ))
}

/// The peak resident set size of `pid` (`VmHWM` in `/proc/<pid>/status`), in KiB.
fn vm_hwm_kib(pid: u32) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .ok_or("no VmHWM")?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// A readable name for a statement the controller runs, by a fragment only it contains;
/// else the statement's first words.
fn statement_name(query: &str) -> String {
    const NAMES: [(&str, &str); 14] = [
        (
            "EXPLAIN (FORMAT JSON)",
            "status counts: planner estimate (planned, not run)",
        ),
        (
            "WITH candidates AS MATERIALIZED",
            "claim_due (wake-up, resync poll)",
        ),
        (
            "FROM vfolder_tombstones t",
            "claim_tombstones (wake-up, resync poll)",
        ),
        (
            "SET status_changed = now()",
            "trash timer: stamp unknown times",
        ),
        ("'trash-timer'", "trash timer"),
        ("'history-cleanup'", "history cleanup"),
        ("DELETE FROM vfolder_tombstones", "tombstone cleanup"),
        (
            "SELECT status, n FROM (VALUES",
            "status counts (folders gauge)",
        ),
        ("parked_reason IS NOT NULL", "unreadable rows gauge"),
        ("extract(epoch", "oldest unconverged gauge"),
        ("FROM vfolder_orphan_scans", "orphan scan summaries gauge"),
        (
            "INSERT INTO vfolder_volume_state",
            "volume health: record state",
        ),
        ("FROM vfolder_volume_state", "volume health: read state"),
        ("_sqlx_migrations", "readiness / migration check"),
    ];
    NAMES
        .iter()
        .find(|(needle, _)| query.contains(needle))
        .map(|(_, name)| format!("{name}: `{}…`", words(query, 6)))
        .unwrap_or_else(|| format!("`{}`", words(query, 10)))
}

fn words(query: &str, n: usize) -> String {
    query
        .split_whitespace()
        .take(n)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The median time of a one-message statement on a fresh connection to `url`.
async fn round_trip(url: &str) -> Res<Duration> {
    let mut db = PgConnection::connect(url).await?;
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        sqlx::query("SELECT 1").execute(&mut db).await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
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

/// Writes a controller configuration for the bench's one volume, quiet (warnings only) and
/// with its HTTP endpoint on a free port; `controller` and `volume_extra` are TOML lines for those
/// sections.
fn write_config(
    path: &Path,
    database_url: &str,
    volume: &VolumeConfig,
    controller: &str,
    volume_extra: &str,
) -> Res<()> {
    std::fs::write(
        path,
        format!(
            "database_url = \"{database_url}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[log]\nfilter = \"warn\"\n\
             [controller]\n{controller}\n[[volumes]]\nhost = \"{}\"\nmount = \"{}\"\n\
             require_mount_point = false\n{volume_extra}\n",
            volume.host,
            volume.mount.display()
        ),
    )?;
    Ok(())
}

/// Part (d)'s removal threads: the default (one per core, growing while they wait on the
/// storage), one per core fixed (the default before threads grew), and 16 fixed (as many
/// as a volume whose metadata operations wait on a device or a network is served with).
const END_TO_END_THREADS: [Threads; 3] = [Threads::Default, Threads::PerCore, Threads::Fixed(16)];

/// How many removal threads part (d) configures.
#[derive(Clone, Copy, Debug)]
enum Threads {
    /// Nothing configured: `removal_threads` one per core, `max_removal_threads` its default.
    Default,
    /// One per core, not growing.
    PerCore,
    /// This many, not growing.
    Fixed(usize),
}

impl Threads {
    /// The volume's configuration lines.
    fn config(self) -> String {
        let fixed = |n: usize| format!("removal_threads = {n}\nmax_removal_threads = {n}");
        match self {
            Threads::Default => String::new(),
            Threads::PerCore => fixed(VolumeConfig::builtin_default().removal_threads),
            Threads::Fixed(n) => fixed(n),
        }
    }

    /// How the result table names it.
    fn label(self) -> String {
        match self {
            Threads::Default => format!(
                "default removal threads (one per core, growing up to {DEFAULT_MAX_REMOVAL_THREADS} while they wait)"
            ),
            Threads::PerCore => "removal threads fixed at one per core".to_owned(),
            Threads::Fixed(n) => format!("removal threads fixed at {n}"),
        }
    }
}

/// Part (d)'s medians, in seconds.
struct EndToEnd {
    runs: usize,
    threads: Threads,
    end_to_end: f64,
    engine: f64,
    rm: f64,
}

impl EndToEnd {
    /// The result table's row.
    fn row(&self, files: u64, dirs: u64) -> (String, String, String) {
        (
            format!(
                "(d) one folder of {files} files in {dirs} dirs, warm, {}: `delete-ongoing` \
                 UPDATE → `delete-complete` event (engine: the audit entry's duration), vs \
                 `rm -rf`, median of {}",
                self.threads.label(),
                self.runs
            ),
            format!(
                "{:.3} s (engine {:.3} s) vs {:.3} s: {:.2} × rm -rf (engine alone {:.2} ×)",
                self.end_to_end,
                self.engine,
                self.rm,
                self.rm / self.end_to_end,
                self.rm / self.engine
            ),
            "≥ 1.8 × rm -rf".to_owned(),
        )
    }
}

/// Builds a wide tree of `files` files in `dirs` directories inside one folder and another
/// beside the volume, then times the folder's removal through the controller (from the
/// `delete-ongoing` UPDATE to its `delete-complete` event) and `rm -rf` of the other, in
/// alternating order. The controller runs with `threads` removal threads and the default
/// slots.
async fn end_to_end(
    args: &Args,
    site: &Path,
    volumes: &Volumes,
    volume: &VolumeConfig,
    files: u64,
    dirs: u64,
    threads: Threads,
) -> Res<EndToEnd> {
    let config = site.join("e2e.toml");
    write_config(
        &config,
        &args.controller_database_url,
        volume,
        "",
        &threads.config(),
    )?;
    let mktree = |dir: &Path| -> Res<()> {
        let out = Command::new(&args.mktree)
            .arg("wide")
            .arg(dir)
            .arg(dirs.to_string())
            .arg(files.to_string())
            .output()?;
        if !out.status.success() {
            return Err(format!("mktree failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(())
    };
    let mut ctl = start(&args.binary, &config, "bench-d")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut db = PgConnection::connect(&args.database_url).await?;
    let mut listener = PgListener::connect(&args.database_url).await?;
    listener.listen(EVENT_CHANNEL).await?;
    let runs = if args.quick { 2 } else { 3 };
    let (mut total, mut engine, mut rm) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let (id, folder) = insert_folders_at(&args.database_url, volumes, volume, 1)
            .await?
            .remove(0);
        mktree(&folder.join("tree"))?;
        let beside = site.join("rm-tree");
        mktree(&beside)?;
        Command::new("sync").status()?;
        let time_rm = || -> Res<f64> {
            let t0 = Instant::now();
            let status = Command::new("rm").arg("-rf").arg(&beside).status()?;
            if !status.success() || beside.exists() {
                return Err("rm -rf failed".into());
            }
            Ok(t0.elapsed().as_secs_f64())
        };
        if run % 2 == 1 {
            rm.push(time_rm()?);
        }
        let t0 = Instant::now();
        sqlx::query("UPDATE vfolders SET status = 'delete-ongoing' WHERE id = $1")
            .bind(id)
            .execute(&mut db)
            .await?;
        loop {
            let note = tokio::time::timeout(Duration::from_secs(120), listener.recv()).await??;
            let e: serde_json::Value = serde_json::from_str(note.payload())?;
            if e["id"] == id.to_string() && e["to"] == "delete-complete" {
                break;
            }
        }
        total.push(t0.elapsed().as_secs_f64());
        if folder.exists() {
            return Err(format!("{} is still there", folder.display()).into());
        }
        let ms: i64 = sqlx::query_scalar(
            "SELECT duration_ms FROM vfolder_audit WHERE vfolder_id = $1 AND action = 'removed'",
        )
        .bind(id)
        .fetch_one(&mut db)
        .await?;
        engine.push(ms as f64 / 1000.0);
        if run % 2 == 0 {
            rm.push(time_rm()?);
        }
    }
    ctl.kill()?;
    ctl.wait()?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(EndToEnd {
        runs,
        threads,
        end_to_end: median(total),
        engine: median(engine),
        rm: median(rm),
    })
}

/// Inserts `n` ready rows in batches and creates a one-file tree for each.
async fn insert_folders(
    url: &str,
    volumes: &Volumes,
    volume: &VolumeConfig,
    n: usize,
) -> Res<Vec<Uuid>> {
    let folders = insert_folders_at(url, volumes, volume, n).await?;
    Ok(folders.into_iter().map(|(id, _)| id).collect())
}

/// [`insert_folders`], with each folder's directory.
async fn insert_folders_at(
    url: &str,
    volumes: &Volumes,
    volume: &VolumeConfig,
    n: usize,
) -> Res<Vec<(Uuid, PathBuf)>> {
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
    let mut folders = Vec::with_capacity(n);
    for id in ids {
        let rel = v.folder_path(&FolderRef {
            id,
            host: &volume.host,
            quota_scope_id: Some(&scope_text),
        })?;
        let path = volume.mount.join(rel);
        std::fs::create_dir_all(&path)?;
        std::fs::write(path.join("file"), b"x")?;
        folders.push((id, path));
    }
    Ok(folders)
}

fn cpu_ticks(pid: u32) -> Res<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').ok_or("bad stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// Busy CPU ticks of the whole machine (all but idle and iowait).
fn machine_ticks() -> Res<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().ok_or("empty /proc/stat")?;
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    Ok(f[0] + f[1] + f[2] + f[5] + f[6] + f[7])
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
    // (duration, query text, scan nodes, in the plan yet)
    let mut current: Option<(f64, String, Vec<String>, bool)> = None;
    let flush = |cur: Option<(f64, String, Vec<String>, bool)>, out: &mut PlanStats| {
        if let Some((dur, query, scans, _)) = cur {
            let e = out
                .entry(statement_name(&query))
                .or_insert((0, 0.0, Vec::new()));
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
            current = Some((dur, String::new(), Vec::new(), false));
        } else if let Some(cur) = current.as_mut() {
            if let Some(q) = line.trim_start().strip_prefix("Query Text:") {
                cur.1 = q.to_owned();
            } else if line.starts_with('\t') || line.starts_with(' ') {
                // The server log indents every continuation line of a message: first the
                // rest of a multi-line query, then the plan, whose nodes carry costs.
                if !cur.3 && !line.contains("(cost=") && !line.contains("(actual") {
                    cur.1.push(' ');
                    cur.1.push_str(line.trim());
                    continue;
                }
                cur.3 = true;
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
