//! [`Registry`]: a client of a Confluent-compatible schema registry (Confluent, Apicurio's
//! `/apis/ccompat/v7`, Redpanda, Karapace). Schemas are immutable by id, so each id is asked
//! for once and cached for the life of the process; a subject's latest version is asked for
//! when a pipeline opens and when a record brings an id newer than its table's schema.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use sluice_config::SchemaRegistryConfig;

/// The kind of a registered schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaType {
    /// Avro (the registry's default when it names none).
    Avro,
    /// Protocol Buffers.
    Protobuf,
    /// JSON Schema.
    Json,
}

/// One registered schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// Its id, as records carry it.
    pub id: u32,
    /// Its kind.
    pub schema_type: SchemaType,
    /// The schema text (Avro JSON, a .proto file, a JSON Schema).
    pub text: String,
}

/// Why the registry could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request did not get an answer.
    #[error("schema registry {url}: {source}")]
    Http {
        /// The URL asked (no credentials in it).
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The registry has no such schema or subject.
    #[error("schema registry {url}: not found")]
    NotFound {
        /// The URL asked.
        url: String,
    },
    /// The registry answered with an error status.
    #[error("schema registry {url}: HTTP {status}: {body}")]
    Status {
        /// The URL asked.
        url: String,
        /// The status.
        status: u16,
        /// What it said (cut to 500 bytes).
        body: String,
    },
    /// The CA file could not be read or parsed.
    #[error("schema_registry.ca_file {path}: {message}")]
    Tls {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl RegistryError {
    /// True when the registry said the schema or subject does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// True when asking again may succeed: no answer (refused, reset, timed out, cut off
    /// mid-body), or a 5xx or 429 status. A 404, another 4xx, an answer that is not a
    /// schema, or a connection that failed without a network error under it (a TLS
    /// handshake refusing the certificate) is final.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Http { source, .. } => {
                if source.is_timeout() {
                    return true;
                }
                match io_error_kind(source) {
                    Some(std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput) => {
                        false
                    }
                    Some(_) => true,
                    None => !source.is_connect() && (source.is_request() || source.is_body()),
                }
            }
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::NotFound { .. } | Self::Tls { .. } => false,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaAnswer {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    id: Option<u32>,
}

/// A registry client with a cache of schemas by id.
#[derive(Debug)]
pub struct Registry {
    client: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
    by_id: Mutex<HashMap<u32, Arc<RegisteredSchema>>>,
    requests: AtomicU64,
    retry_for: std::time::Duration,
}

impl Registry {
    /// A client of the registry `cfg` names.
    pub fn new(cfg: &SchemaRegistryConfig) -> Result<Self, RegistryError> {
        let mut builder = reqwest::Client::builder().timeout(cfg.timeout.get());
        if let Some(path) = &cfg.ca_file {
            let tls = |message: String| RegistryError::Tls {
                path: path.display().to_string(),
                message,
            };
            let pem = std::fs::read(path).map_err(|e| tls(e.to_string()))?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| tls(e.to_string()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|source| RegistryError::Http {
            url: cfg.url.clone(),
            source,
        })?;
        let auth = cfg.username.clone().zip(cfg.password.clone());
        Ok(Self {
            client,
            base: cfg.url.trim().trim_end_matches('/').to_string(),
            auth,
            by_id: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            retry_for: cfg.retry_for.get(),
        })
    }

    /// Requests made so far (the cache answers the rest).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The schema with id `id` (cached: one request per id for the life of the process).
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<RegisteredSchema>, RegistryError> {
        if let Some(s) = self.by_id.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(s);
        }
        let answer = self.get(&format!("/schemas/ids/{id}")).await?;
        let schema = Arc::new(RegisteredSchema {
            id,
            schema_type: schema_type(answer.schema_type.as_deref()),
            text: answer.schema,
        });
        if let Ok(mut m) = self.by_id.lock() {
            m.insert(id, schema.clone());
        }
        Ok(schema)
    }

    /// The schema with id `id`, or `None` when the registry has no such id.
    pub async fn find_by_id(
        &self,
        id: u32,
    ) -> Result<Option<Arc<RegisteredSchema>>, RegistryError> {
        match self.schema_by_id(id).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The latest version registered under `subject`.
    pub async fn latest(&self, subject: &str) -> Result<Arc<RegisteredSchema>, RegistryError> {
        let path = format!("/subjects/{}/versions/latest", encode(subject));
        let answer = self.get(&path).await?;
        let id = answer.id.ok_or_else(|| RegistryError::Status {
            url: format!("{}{path}", self.base),
            status: 200,
            body: "the answer has no schema id".into(),
        })?;
        let schema = Arc::new(RegisteredSchema {
            id,
            schema_type: schema_type(answer.schema_type.as_deref()),
            text: answer.schema,
        });
        if let Ok(mut m) = self.by_id.lock() {
            m.insert(id, schema.clone());
        }
        Ok(schema)
    }

    /// One GET, retried with backoff while the failure is transient (see
    /// [`RegistryError::is_transient`]) and `retry_for` has not run out.
    async fn get(&self, path: &str) -> Result<SchemaAnswer, RegistryError> {
        let start = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(250);
        loop {
            match self.get_once(path).await {
                Err(e) if e.is_transient() && start.elapsed() + pause < self.retry_for => {
                    tracing::warn!(error = %e, retry_in = ?pause, "schema registry request failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    async fn get_once(&self, path: &str) -> Result<SchemaAnswer, RegistryError> {
        let url = format!("{}{path}", self.base);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self.client.get(&url).header(
            "Accept",
            "application/vnd.schemaregistry.v1+json, application/json",
        );
        if let Some((user, password)) = &self.auth {
            req = req.basic_auth(user, Some(password));
        }
        let http = |source| RegistryError::Http {
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(http)?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound { url });
        }
        if !status.is_success() {
            let mut body = resp.text().await.unwrap_or_default();
            body.truncate(500);
            return Err(RegistryError::Status {
                url,
                status: status.as_u16(),
                body,
            });
        }
        resp.json::<SchemaAnswer>().await.map_err(http)
    }
}

/// The schema ids of the Confluent-framed `payloads` that `known` does not know yet, each once,
/// in the order first seen (the ids one batch needs to ask the registry for).
pub fn unseen_ids<'a>(
    payloads: impl Iterator<Item = Option<&'a [u8]>>,
    known: impl Fn(u32) -> bool,
) -> Vec<u32> {
    let mut ids = Vec::new();
    for id in payloads.flatten().filter_map(crate::avro::schema_id) {
        if !known(id) && !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// The kind of the first I/O error in `e`'s source chain.
fn io_error_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        next = err.source();
    }
    None
}

fn schema_type(t: Option<&str>) -> SchemaType {
    match t.map(str::to_ascii_uppercase).as_deref() {
        Some("PROTOBUF") => SchemaType::Protobuf,
        Some("JSON") => SchemaType::Json,
        _ => SchemaType::Avro,
    }
}

/// A subject as one URL path segment.
fn encode(subject: &str) -> String {
    subject
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A socket on 127.0.0.1 that answers each connection with the next of `answers`
    /// (status, body), then closes it: the failures a real registry shows under load.
    async fn answering(answers: Vec<(u16, &'static str)>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for (status, body) in answers {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        format!("http://{addr}")
    }

    fn config(url: String) -> SchemaRegistryConfig {
        SchemaRegistryConfig {
            url,
            retry_for: sluice_config::Duration::from_secs(30),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn unavailable_answers_are_retried_until_the_schema_comes() {
        let url = answering(vec![
            (503, "{}"),
            (500, "{}"),
            (200, r#"{"schema":"\"string\"","id":7}"#),
        ])
        .await;
        let registry = Registry::new(&config(url)).unwrap();
        let schema = registry.latest("t-value").await.unwrap();
        assert_eq!((schema.id, schema.text.as_str()), (7, "\"string\""));
        assert_eq!(registry.requests(), 3);
    }

    #[tokio::test]
    async fn not_found_and_client_errors_are_final() {
        let url = answering(vec![(404, "{}"), (401, "{}")]).await;
        let registry = Registry::new(&config(url)).unwrap();
        assert!(registry.schema_by_id(3).await.unwrap_err().is_not_found());
        let e = registry.schema_by_id(4).await.unwrap_err();
        assert!(
            matches!(e, RegistryError::Status { status: 401, .. }),
            "{e}"
        );
        assert_eq!(registry.requests(), 2);
    }

    #[tokio::test]
    async fn a_registry_that_stays_away_ends_in_its_error_after_retry_for() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let mut cfg = config(url);
        cfg.retry_for = sluice_config::Duration::from_secs(1);
        let registry = Registry::new(&cfg).unwrap();
        let e = registry.latest("t-value").await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(registry.requests() >= 2, "retried: {}", registry.requests());
    }
}
