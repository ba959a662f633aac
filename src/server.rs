//! The HTTP endpoint of `sluice run`: `/metrics` (Prometheus text), `/health` (the process
//! runs) and `/ready` (every pipeline has its tables open and has joined its group, even with
//! no partition assigned, and every tiered topic has its archive table open).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Binds `addr` and serves until `cancel`.
pub async fn serve(addr: SocketAddr, cancel: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (server.listen): {e}"))?;
    tracing::info!(%addr, "serving /metrics, /health and /ready");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(handle(stream));
                    }
                }
            }
        }
    });
    Ok(())
}

async fn handle(mut stream: tokio::net::TcpStream) {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read the request head (bounded); the body, if any, is ignored.
    while len < buf.len() {
        match tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read(&mut buf[len..]),
        )
        .await
        {
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
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => {
            crate::memory::refresh_metrics();
            (
                "200 OK",
                "text/plain; version=0.0.4",
                sluice_telemetry::render(),
            )
        }
        ("GET", "/health") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/ready") if sluice_telemetry::health::all_ready() => {
            ("200 OK", "text/plain", "ready\n".to_string())
        }
        ("GET", "/ready") => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_string(),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "try /metrics, /health or /ready\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
