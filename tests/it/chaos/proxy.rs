//! A fault-injecting HTTP proxy between sluice and the S3 server. Each request is read whole
//! and, at the configured rate, answered with a fault instead of (or after) being forwarded:
//! an S3 error (503 SlowDown, 500 InternalError), latency, a connection reset before the
//! request reaches the server, a reset after the server applied it (the client never learns
//! that it did: the case conditional commits must get right), or a hang past the client's
//! timeout. Everything else is forwarded on a fresh upstream connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy can do to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `503 SlowDown`, the request never reaches the server.
    SlowDown,
    /// `500 InternalError`, the request never reaches the server.
    InternalError,
    /// Up to 1.5 s of delay, then forwarded.
    Latency,
    /// The connection is dropped before the request is forwarded.
    ResetBefore,
    /// The request is forwarded and applied, then the connection is dropped unanswered.
    ResetAfter,
    /// No answer for longer than the client's timeout, then the connection is dropped.
    Hang,
}

const FAULTS: [Fault; 6] = [
    Fault::SlowDown,
    Fault::InternalError,
    Fault::Latency,
    Fault::ResetBefore,
    Fault::ResetAfter,
    Fault::Hang,
];

impl Fault {
    /// One fault, weighted: mostly errors and latency, fewer resets, rare hangs.
    fn draw(rng: &mut StdRng) -> Self {
        match rng.random_range(0..100) {
            0..25 => Self::SlowDown,
            25..40 => Self::InternalError,
            40..65 => Self::Latency,
            65..80 => Self::ResetBefore,
            80..96 => Self::ResetAfter,
            _ => Self::Hang,
        }
    }

    fn index(self) -> usize {
        FAULTS.iter().position(|f| *f == self).unwrap_or(0)
    }
}

struct State {
    upstream: String,
    /// Faulted share of requests, in millionths.
    rate_ppm: AtomicU32,
    hang: Duration,
    rng: std::sync::Mutex<StdRng>,
    requests: AtomicU64,
    faults: [AtomicU64; 6],
}

/// The running proxy.
pub struct FaultProxy {
    /// `http://127.0.0.1:port`, the endpoint to give the client.
    pub url: String,
    state: Arc<State>,
}

impl FaultProxy {
    /// Starts forwarding to `upstream` (`host:port`), faulting `rate` of requests with faults
    /// drawn from `seed`; a hang lasts `hang`.
    pub async fn start(upstream: &str, rate: f64, seed: u64, hang: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            rate_ppm: AtomicU32::new((rate * 1e6) as u32),
            hang,
            rng: std::sync::Mutex::new(StdRng::seed_from_u64(seed)),
            requests: AtomicU64::new(0),
            faults: Default::default(),
        });
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, s.clone()));
            }
        });
        Self { url, state }
    }

    /// Changes the faulted share of requests (0 turns faults off).
    pub fn set_rate(&self, rate: f64) {
        self.state
            .rate_ppm
            .store((rate * 1e6) as u32, Ordering::SeqCst);
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Faults injected so far, by kind.
    pub fn faults(&self) -> Vec<(Fault, u64)> {
        FAULTS
            .iter()
            .map(|f| (*f, self.state.faults[f.index()].load(Ordering::Relaxed)))
            .collect()
    }

    /// Faults injected so far.
    pub fn total_faults(&self) -> u64 {
        self.faults().iter().map(|(_, n)| n).sum()
    }
}

/// One HTTP request as read from the client.
struct Request {
    head: Vec<u8>,
    body: Vec<u8>,
}

/// Reads one request (head and a Content-Length body); `None` at the end of the connection
/// or on anything this proxy does not parse (chunked bodies are not used by the S3 client).
async fn read_request(conn: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = Vec::new();
    loop {
        let b = conn.read_u8().await.ok()?;
        head.push(b);
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if text.contains("transfer-encoding: chunked") {
        return None;
    }
    let len = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await.ok()?;
    Some(Request { head, body })
}

/// The request's head with `Connection: close`, so the server ends its answer by closing.
fn closing_head(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

/// Forwards a request on a new connection and returns the whole answer.
async fn forward(upstream: &str, req: &Request) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect(upstream).await.ok()?;
    up.write_all(&closing_head(&req.head)).await.ok()?;
    up.write_all(&req.body).await.ok()?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).await.ok()?;
    Some(answer)
}

/// The server's answer with `Connection: close` in its head, so the client does not reuse
/// this connection (the proxy closes it after each answer).
fn closing_answer(answer: Vec<u8>) -> Vec<u8> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer;
    };
    let mut out = closing_head(&answer[..end + 4]);
    out.extend_from_slice(&answer[end + 4..]);
    out
}

fn s3_error(status: &str, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the chaos proxy</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn serve(conn: TcpStream, state: Arc<State>) {
    let mut conn = BufReader::new(conn);
    if let Some(req) = read_request(&mut conn).await {
        state.requests.fetch_add(1, Ordering::Relaxed);
        let (fault, delay) = {
            let mut rng = state.rng.lock().unwrap_or_else(|e| e.into_inner());
            let rate = f64::from(state.rate_ppm.load(Ordering::Relaxed)) / 1e6;
            let fault = (rng.random::<f64>() < rate).then(|| Fault::draw(&mut rng));
            (fault, Duration::from_millis(rng.random_range(100..1500)))
        };
        if let Some(f) = fault {
            state.faults[f.index()].fetch_add(1, Ordering::Relaxed);
        }
        let answer = match fault {
            Some(Fault::SlowDown) => s3_error("503 Slow Down", "SlowDown"),
            Some(Fault::InternalError) => s3_error("500 Internal Server Error", "InternalError"),
            Some(Fault::ResetBefore) => return,
            Some(Fault::Hang) => {
                tokio::time::sleep(state.hang).await;
                return;
            }
            Some(Fault::ResetAfter) => {
                let _ = forward(&state.upstream, &req).await;
                return;
            }
            Some(Fault::Latency) | None => {
                if fault.is_some() {
                    tokio::time::sleep(delay).await;
                }
                match forward(&state.upstream, &req).await {
                    Some(a) => closing_answer(a),
                    None => return,
                }
            }
        };
        // One request per connection: every answer says `Connection: close`.
        let _ = conn.get_mut().write_all(&answer).await;
    }
}
