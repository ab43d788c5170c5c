//! The HTTP endpoints, served on a real socket, with a test-only store whose readiness can
//! be switched.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use vfolder_controller::observe::{Health, HttpState, Metrics, serve};
use vfolder_controller::store::{Capabilities, Error, Readiness, Result};

const UP: u8 = 0;
const NOT_MIGRATED: u8 = 1;
const HANGS: u8 = 2;

/// A readiness check switched by `mode`: all the HTTP endpoints need of a database.
struct SwitchStore {
    mode: AtomicU8,
}

#[async_trait]
impl Readiness for SwitchStore {
    fn backend(&self) -> &'static str {
        "test"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            notifications: false,
            embedded: false,
        }
    }

    async fn check_ready(&self) -> Result<()> {
        match self.mode.load(Ordering::SeqCst) {
            UP => Ok(()),
            NOT_MIGRATED => Err(Error::NotMigrated("migration 3 is pending".into())),
            _ => std::future::pending().await,
        }
    }
}

struct Server {
    addr: std::net::SocketAddr,
    store: Arc<SwitchStore>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(stall_after: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Arc::new(SwitchStore {
        mode: AtomicU8::new(UP),
    });
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(stall_after));
    let shutdown = CancellationToken::new();
    let state = HttpState {
        metrics: metrics.clone(),
        health: health.clone(),
        store: store.clone(),
    };
    let task = tokio::spawn(serve(listener, state, shutdown.clone()));
    Server {
        addr,
        store,
        metrics,
        health,
        shutdown,
        task,
    }
}

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), read to the end.
async fn get(addr: std::net::SocketAddr, path: &str, accept: Option<&str>) -> Reply {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{accept}Connection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn metrics_are_served_in_the_format_the_scraper_asks_for() {
    let s = start(Duration::from_secs(3600)).await;
    s.metrics.retry("remove");

    let plain = get(s.addr, "/metrics", None).await;
    assert_eq!(plain.status, 200);
    assert!(
        plain
            .headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        plain.headers
    );
    assert!(
        plain
            .body
            .contains("vfolder_controller_retries_total{kind=\"remove\"} 1\n"),
        "{}",
        plain.body
    );
    assert!(!plain.body.contains("# EOF"));

    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let om = get(s.addr, "/metrics", Some(prometheus_accept)).await;
    assert_eq!(om.status, 200);
    assert!(
        om.headers
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{}",
        om.headers
    );
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);

    let refused = get(
        s.addr,
        "/metrics",
        Some("application/openmetrics-text; q=0.0, text/plain"),
    )
    .await;
    assert!(
        refused.headers.contains("version=0.0.4"),
        "{}",
        refused.headers
    );
}

#[tokio::test]
async fn readyz_follows_the_store() {
    let s = start(Duration::from_secs(3600)).await;
    let r = get(s.addr, "/readyz", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));

    s.store.mode.store(NOT_MIGRATED, Ordering::SeqCst);
    let r = get(s.addr, "/readyz", None).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("migration 3 is pending"), "{}", r.body);

    s.store.mode.store(HANGS, Ordering::SeqCst);
    let r = get(s.addr, "/readyz", None).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("did not answer within 2s"), "{}", r.body);

    s.store.mode.store(UP, Ordering::SeqCst);
    assert_eq!(get(s.addr, "/readyz", None).await.status, 200);
}

#[tokio::test]
async fn healthz_reports_a_live_loop_even_while_the_database_is_down() {
    let s = start(Duration::from_secs(3600)).await;
    let r = get(s.addr, "/healthz", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));

    s.health
        .set_database_ok(false, Some("connection refused".into()));
    let r = get(s.addr, "/healthz", None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("connection refused"), "{}", r.body);

    s.health.set_database_ok(true, None);
    s.health.pass_completed();
    let r = get(s.addr, "/healthz", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn healthz_fails_when_the_loop_stalls() {
    // stall_after = 0: any time since the last report is too long, with no sleeps needed
    // beyond the request itself.
    let s = start(Duration::ZERO).await;
    let r = get(s.addr, "/healthz", None).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("reconcile loop stalled"), "{}", r.body);
}

#[tokio::test]
async fn unknown_paths_are_404_and_shutdown_ends_serve() {
    let s = start(Duration::from_secs(3600)).await;
    assert_eq!(get(s.addr, "/nope", None).await.status, 404);
    s.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), s.task)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(s.addr).await.is_err(), "listener closed");
}

#[tokio::test(start_paused = true)]
async fn stall_detection_follows_tokio_time() {
    let health = Health::new(Duration::from_secs(30));
    health.pass_completed();
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(health.liveness(), Ok(()));
    tokio::time::advance(Duration::from_secs(2)).await;
    let err = health.liveness().unwrap_err();
    assert!(err.contains("no report for 31s (limit 30s)"), "{err}");
    health.set_database_ok(false, Some("down".into()));
    assert_eq!(
        health.liveness(),
        Ok(()),
        "a database report proves the loop is alive"
    );
}
