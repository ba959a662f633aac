//! The HTTP endpoint of `sluice run`: the console (`/`, one page, embedded in the binary), its
//! JSON API (`/api/status`, the same document as `sluice status --json`;
//! `/api/aggregates/<table>/open`, the open windows' running values), `/metrics` (Prometheus
//! text), `/health` (the process runs) and `/ready` (every pipeline has its tables open and
//! has joined its group, even with no partition assigned, and every tiered topic has its
//! archive table open).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_config::Config;
use sluice_kafka::Cluster;
use sluice_lake::Lake;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::console::{self, History, StatusDoc};

/// How long one status document answers requests: the page polls every few seconds, and
/// each document reads every table's log and the brokers' offsets.
const STATUS_FRESH_FOR: Duration = Duration::from_secs(2);

/// What the API reads: the config, the lake and the service's history.
#[derive(Debug)]
pub struct Api {
    cfg: Config,
    lake: Lake,
    history: History,
    cached: Mutex<Cached>,
}

/// The last status document and the broker client the documents read offsets with (made
/// once, on the first request, and kept for the service's life).
#[derive(Debug, Default)]
struct Cached {
    doc: Option<(Instant, Arc<String>)>,
    broker: Option<Cluster>,
}

impl Api {
    /// The API of a service running `cfg` over `lake`; samples its metrics until `cancel`.
    pub fn new(cfg: Config, lake: Lake, cancel: CancellationToken) -> Self {
        let pipelines = cfg.pipelines.iter().map(|p| p.name.clone()).collect();
        Self {
            cfg,
            lake,
            history: History::spawn(pipelines, cancel),
            cached: Mutex::new(Cached::default()),
        }
    }

    /// The status document as JSON, at most [`STATUS_FRESH_FOR`] old.
    async fn status(&self) -> anyhow::Result<Arc<String>> {
        let mut cached = self.cached.lock().await;
        if let Some((at, doc)) = cached.doc.as_ref()
            && at.elapsed() < STATUS_FRESH_FOR
        {
            return Ok(doc.clone());
        }
        let broker = match &cached.broker {
            Some(b) => b.clone(),
            None => {
                let b = Cluster::new(&(&self.cfg.kafka).into(), "status")?;
                cached.broker.insert(b).clone()
            }
        };
        let history = Some(&self.history);
        let doc: StatusDoc = console::collect(&self.cfg, &self.lake, &broker, history).await?;
        let json = Arc::new(serde_json::to_string(&doc)?);
        cached.doc = Some((Instant::now(), json.clone()));
        Ok(json)
    }
}

/// Binds `addr` and serves until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    api: Arc<Api>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (server.listen): {e}"))?;
    tracing::info!(%addr, "serving the console at /, /api/status, /metrics, /health and /ready");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(handle(stream, api.clone()));
                    }
                }
            }
        }
    });
    Ok(())
}

/// A response: status line, content type, body.
type Response = (&'static str, &'static str, String);

fn text(status: &'static str, body: impl Into<String>) -> Response {
    (status, "text/plain; charset=utf-8", body.into())
}

fn json_error(status: &'static str, message: String) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, "application/json", body)
}

async fn handle(mut stream: tokio::net::TcpStream, api: Arc<Api>) {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    // Read the request head (bounded); the body, if any, is ignored.
    while len < buf.len() {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf[len..])).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                len += n;
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, ctype, body) = if method == "GET" {
        route(path, query, &api).await
    } else {
        text("405 Method Not Allowed", "only GET\n")
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn route(path: &str, query: &str, api: &Api) -> Response {
    match path {
        "/" | "/index.html" => (
            "200 OK",
            "text/html; charset=utf-8",
            console::PAGE.to_string(),
        ),
        "/api/status" => match api.status().await {
            Ok(doc) => ("200 OK", "application/json", doc.to_string()),
            Err(e) => json_error("503 Service Unavailable", format!("{e:#}")),
        },
        "/metrics" => {
            crate::memory::refresh_metrics();
            (
                "200 OK",
                "text/plain; version=0.0.4",
                sluice_telemetry::render(),
            )
        }
        "/health" => text("200 OK", "ok\n"),
        "/ready" if sluice_telemetry::health::all_ready() => text("200 OK", "ready\n"),
        "/ready" => text("503 Service Unavailable", "not ready\n"),
        _ => match path
            .strip_prefix("/api/aggregates/")
            .and_then(|rest| rest.strip_suffix("/open"))
        {
            Some(table) => open_windows(&api.cfg, table, query).await,
            None => text(
                "404 Not Found",
                "try / (the console), /api/status, /api/aggregates/<table>/open, /metrics, /health or /ready\n",
            ),
        },
    }
}

/// `GET /api/aggregates/<table>/open?key=...`: the open windows' running values.
async fn open_windows(cfg: &Config, table: &str, query: &str) -> Response {
    let Some(agg) = cfg
        .pipelines
        .iter()
        .flat_map(|p| &p.aggregates)
        .find(|a| a.table == table)
    else {
        return json_error(
            "404 Not Found",
            format!("{table:?} is not an aggregate table of this config"),
        );
    };
    let filters = match console::key_filters(&agg.group_by, query) {
        Ok(f) => f,
        Err(e) => return json_error("400 Bad Request", e.to_string()),
    };
    match sluice_ingest::live::open_windows(table).await {
        Ok(batch) => match console::open_windows_json(table, batch, &filters) {
            Ok(body) => ("200 OK", "application/json", body),
            Err(e) => json_error("500 Internal Server Error", format!("{e:#}")),
        },
        Err(e @ sluice_ingest::live::LiveError::NotRunning(_)) => {
            json_error("404 Not Found", e.to_string())
        }
        Err(e) => json_error("503 Service Unavailable", e.to_string()),
    }
}
