//! sluice's configuration: one TOML file (`sluice.toml`), typed, with defaults, environment
//! overrides and validation that reports every problem with its key at once.
//!
//! Loading is three steps: the file is parsed into a TOML tree, `SLUICE__SECTION__KEY`
//! environment variables are laid over it (`SLUICE__KAFKA__BROKERS` sets `kafka.brokers`,
//! `SLUICE__PIPELINE__0__START` sets `pipeline[0].start`), then the tree is deserialized and
//! validated. Unknown keys are reported as problems, not ignored.

mod aggregate;
mod overrides;
pub mod raw;
mod types;
mod units;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use aggregate::{AggregateFunction, AggregateSpec};
pub use types::{ColumnType, StructField};
pub use units::{ByteSize, Duration};
pub use validate::{is_reserved_column, lake_root_url};

/// A value that means nothing sluice reads: what is wrong and what would be right. It
/// becomes the message of a [`Problem`] at the value's key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValueError {
    message: String,
}

impl ValueError {
    /// A problem with a value, described for a person.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// Everything that can go wrong while loading a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the key and line.
        message: String,
    },
    /// The config parsed but breaks one or more rules.
    #[error("config file {path} has {} problem(s):\n{}", problems.len(), format_problems(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// One problem with a config: the key it concerns and what is wrong (and what would be right).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The key, e.g. `pipeline[0].flush.max_rows`.
    pub key: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Result alias for this crate.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The whole configuration of one sluice process, validated and typed.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The Kafka cluster and consumer group.
    pub kafka: KafkaConfig,
    /// Where tables live.
    pub lake: LakeConfig,
    /// Ingest pipelines (`[[pipeline]]`).
    pub pipelines: Vec<PipelineConfig>,
    /// Tiered topics (`[[tiering]]`).
    pub tiering: Vec<TieringConfig>,
    /// Compaction, checkpoints and vacuum.
    pub maintenance: MaintenanceConfig,
    /// The HTTP endpoint for metrics and health, and logging.
    pub server: ServerConfig,
    /// The schema registry of Avro topics.
    pub schema_registry: SchemaRegistryConfig,
}

/// `[schema_registry]`: a Confluent-compatible schema registry (Confluent, Apicurio's
/// `/apis/ccompat/v7`, Redpanda, Karapace).
#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct SchemaRegistryConfig {
    /// The base URL, e.g. `http://127.0.0.1:8081` or `https://host/apis/ccompat/v7`.
    pub url: String,
    /// Basic-auth user, when the registry asks for one.
    pub username: Option<String>,
    /// Basic-auth password (a secret: never printed).
    pub password: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's, for `https` URLs.
    pub ca_file: Option<PathBuf>,
    /// How long one request may take.
    pub timeout: Duration,
    /// How long a request that got no answer, timed out, or was answered with a 5xx or 429
    /// status is retried (with backoff) before the pipeline stops with the error.
    pub retry_for: Duration,
}

impl Default for SchemaRegistryConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            username: None,
            password: None,
            ca_file: None,
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(120),
        }
    }
}

impl fmt::Debug for SchemaRegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistryConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("retry_for", &self.retry_for)
            .finish()
    }
}

/// `[kafka]`: where the brokers are and how to talk to them.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated (`host:port,host:port`).
    pub brokers: String,
    /// The consumer group sluice joins; partitions are split among its instances.
    pub group_id: String,
    /// librdkafka settings passed through as they are (`security.protocol`, `sasl.*`, `ssl.*`).
    pub options: BTreeMap<String, String>,
}

/// `[lake]`: the root under which every table lives.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct LakeConfig {
    /// `file:///path`, a plain path, or `s3://bucket/prefix`.
    pub root: String,
    /// Object-store settings (`endpoint`, `region`, `allow_http`, `access_key_id`, ...).
    pub options: BTreeMap<String, String>,
}

/// Where a pipeline starts reading a partition that its table has no progress for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record the broker has.
    #[default]
    Earliest,
    /// Only records produced after the partition is assigned.
    Latest,
    /// A fixed offset in every partition.
    Offset(i64),
    /// The first record with a timestamp at or after this many ms since the epoch.
    Time(i64),
}

impl StartPosition {
    /// Parses `earliest`, `latest`, `offset:N` or `time:RFC3339`.
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let t = s.trim();
        if t == "earliest" {
            return Ok(Self::Earliest);
        }
        if t == "latest" {
            return Ok(Self::Latest);
        }
        if let Some(n) = t.strip_prefix("offset:") {
            return n
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(Self::Offset)
                .ok_or_else(|| {
                    ValueError::new(format!(
                        "invalid start {s:?}: offset:N needs a non-negative integer"
                    ))
                });
        }
        if let Some(ts) = t.strip_prefix("time:") {
            return chrono::DateTime::parse_from_rfc3339(ts.trim())
                .map(|d| Self::Time(d.timestamp_millis()))
                .map_err(|e| ValueError::new(format!("invalid start {s:?}: time:T needs an RFC 3339 time such as time:2026-01-01T00:00:00Z ({e})")));
        }
        Err(ValueError::new(format!(
            "invalid start {s:?}: use earliest, latest, offset:N or time:RFC3339"
        )))
    }
}

/// The wire format of a pipeline's records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON object per record.
    #[default]
    Json,
    /// Avro in the Confluent wire format (magic byte, 4-byte schema id, body); the writer's
    /// schema is looked up by id in `[schema_registry]`.
    Avro,
    /// Protocol Buffers in the Confluent wire format (magic byte, 4-byte schema id, message
    /// indexes, body); the writer's schema is looked up by id in `[schema_registry]`.
    Protobuf,
}

/// How a pipeline writes its table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every record is a new row.
    #[default]
    Append,
    /// Records are changes to rows identified by `key`: the table holds the latest state per
    /// key (docs/changelog.md).
    Upsert,
}

/// How an upsert pipeline applies a flush's changes (docs/changelog.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    /// sluice's copy-on-write: the files holding changed keys are rewritten without them.
    #[default]
    Rewrite,
    /// delta-rs's MERGE.
    Merge,
}

/// How a change is wrapped in its record (upsert mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// The value is the row; a record without a value (a tombstone) deletes its key.
    #[default]
    None,
    /// Debezium's change events: `op` (c, u, d, r), `before`, `after`, `ts_ms`, optionally
    /// inside `payload` (the JSON converter with schemas).
    Debezium,
}

/// How a pipeline reads its records' keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyFormat {
    /// Kept as bytes in `_kafka_key` only.
    #[default]
    Bytes,
    /// Avro in the Confluent wire format, decoded into the `key_column` column too (the bytes
    /// stay in `_kafka_key`).
    Avro,
}

impl Format {
    /// Whether the format's schemas live in a schema registry.
    pub fn uses_registry(self) -> bool {
        matches!(self, Self::Avro | Self::Protobuf)
    }

    /// The format's name for people.
    pub fn label(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::Avro => "Avro",
            Self::Protobuf => "Protobuf",
        }
    }
}

/// What to do with JSON fields that are not in the schema.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownFields {
    /// Drop them silently.
    #[default]
    Ignore,
    /// Send the record to the dead-letter table.
    Reject,
}

/// Parquet compression codec for written files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// zstd (level 3).
    #[default]
    Zstd,
    /// snappy.
    Snappy,
    /// lz4.
    Lz4,
    /// none.
    None,
}

/// How an event time (or any timestamp column) is written in the payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// RFC 3339 / ISO 8601 text; text without an offset is read in the pipeline's time zone.
    /// Numbers are taken as epoch milliseconds.
    #[default]
    Rfc3339,
    /// Seconds since the epoch (integer or fractional).
    EpochSeconds,
    /// Milliseconds since the epoch.
    EpochMillis,
    /// Microseconds since the epoch.
    EpochMicros,
    /// The Kafka record's own timestamp (no payload field).
    KafkaTimestamp,
}

/// `event_time = { field = "ts", format = "rfc3339" }`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct EventTimeConfig {
    /// The payload field holding the event time (not used with `kafka_timestamp`).
    pub field: Option<String>,
    /// How the field is written.
    pub format: TimeFormat,
}

/// `flush = { ... }`: when buffered rows are written and committed.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct FlushConfig {
    /// Commit once this many rows are buffered.
    pub max_rows: usize,
    /// Commit once the buffered data reaches this many compressed bytes.
    pub max_bytes: ByteSize,
    /// Commit at most this long after the first buffered record (also for idle partitions).
    pub max_latency: Duration,
}

impl Default for FlushConfig {
    fn default() -> Self {
        Self {
            max_rows: 500_000,
            max_bytes: ByteSize::mib(128),
            max_latency: Duration::from_secs(10),
        }
    }
}

/// A window kind with its parameters in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows.
    Tumbling {
        /// Length in ms.
        size: i64,
        /// Offset in ms.
        offset: i64,
    },
    /// Fixed, overlapping windows.
    Hopping {
        /// Length in ms.
        size: i64,
        /// Step in ms.
        advance: i64,
        /// Offset in ms.
        offset: i64,
    },
    /// Per-key sessions closed by a gap of inactivity.
    Session {
        /// Gap in ms.
        gap: i64,
    },
}

/// One column of a pipeline's schema.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldConfig {
    /// The JSON field and column name.
    pub name: String,
    /// The column type.
    pub ty: ColumnType,
    /// Whether the field may be missing or null.
    pub nullable: bool,
    /// For timestamp columns: how the payload writes the value (default rfc3339).
    pub format: Option<TimeFormat>,
}

impl FieldConfig {
    /// Whether the column accepts nulls.
    pub fn is_nullable(&self) -> bool {
        self.nullable
    }
}

/// `[[pipeline.aggregate]]`: a windowed aggregate table.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateConfig {
    /// The aggregate table.
    pub table: String,
    /// The window.
    pub window: WindowKind,
    /// How long after a window's end it still accepts records (event time).
    pub grace: Duration,
    /// Group-by columns.
    pub group_by: Vec<String>,
    /// The aggregates (`count(*) AS views` in the file).
    pub aggregates: Vec<AggregateSpec>,
    /// The late table (default `<pipeline>_late`).
    pub late_table: Option<String>,
    /// Whose time closes the windows: one clock for the topic, or one per partition.
    pub clock: WindowClock,
}

/// Whose time closes an aggregate's windows (docs/windows.md, "Windows across instances").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowClock {
    /// One clock, the minimum over the topic's partitions. One instance computes the
    /// windows; another instance of the pipeline stands by and takes over when it dies.
    #[default]
    Topic,
    /// Each source partition has its own clock and its own windows; rows carry the
    /// partition. Any number of instances share the work.
    Partition,
}

impl WindowClock {
    /// The name in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Partition => "partition",
        }
    }
}

/// `[[pipeline]]`: topics decoded into an events table.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// A unique name; part of the progress app id `sluice:<pipeline>:<topic>:<partition>`.
    pub name: String,
    /// Source topics.
    pub topics: Vec<String>,
    /// Record format.
    pub format: Format,
    /// The registry subject of the record values' schema (Avro); default: the topic name
    /// strategy, `<topic>-value`.
    pub subject: Option<String>,
    /// How the record keys are read.
    pub key_format: KeyFormat,
    /// The registry subject of the keys' schema (`key_format = "avro"`); default `<topic>-key`.
    pub key_subject: Option<String>,
    /// The column decoded keys go to (`key_format = "avro"`; default `key`).
    pub key_column: String,
    /// Start position for partitions without progress in the table.
    pub start: StartPosition,
    /// The events table.
    pub table: String,
    /// The dead-letter table (default `<name>_dead_letter`).
    pub dead_letter_table: Option<String>,
    /// Columns decoded from each record (empty: the existing table's columns).
    pub schema: Vec<FieldConfig>,
    /// Where the event time comes from (default: the Kafka timestamp).
    pub event_time: EventTimeConfig,
    /// Time zone for text times without an offset and for partition columns.
    pub timezone: chrono_tz::Tz,
    /// Partition columns: `event_date`, `event_hour`, or top-level schema columns.
    pub partition_by: Vec<String>,
    /// Flush policy.
    pub flush: FlushConfig,
    /// Unknown JSON fields: `ignore` or `reject`.
    pub unknown_fields: UnknownFields,
    /// Add a `_kafka_headers` column (map of header name to bytes).
    pub include_headers: bool,
    /// Records larger than this go to the dead-letter table.
    pub max_record_size: ByteSize,
    /// Parquet compression.
    pub compression: Compression,
    /// Wall-clock time without records after which a partition no longer holds the clock.
    pub idle_timeout: Duration,
    /// With a `clock = "topic"` aggregate: how long the active instance's lease lasts without
    /// renewal before a standby instance of the pipeline takes over (docs/windows.md).
    pub standby_takeover: Duration,
    /// How far a record's event time may be ahead of its Kafka timestamp and still move the
    /// window clock; a record further ahead joins no window and is counted
    /// (`sluice_future_records_total`), but lands in the events table like any record.
    pub max_future_skew: Duration,
    /// Windowed aggregates over this pipeline's records.
    pub aggregates: Vec<AggregateConfig>,
    /// Append rows, or keep the latest row per key.
    pub mode: Mode,
    /// The primary key columns (upsert mode).
    pub key: Vec<String>,
    /// How changes are wrapped (upsert mode).
    pub envelope: Envelope,
    /// How a flush's changes are applied (upsert mode).
    pub apply: Apply,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            topics: Vec::new(),
            format: Format::Json,
            subject: None,
            key_format: KeyFormat::Bytes,
            key_subject: None,
            key_column: "key".into(),
            start: StartPosition::Earliest,
            table: String::new(),
            dead_letter_table: None,
            schema: Vec::new(),
            event_time: EventTimeConfig {
                field: None,
                format: TimeFormat::KafkaTimestamp,
            },
            timezone: chrono_tz::UTC,
            partition_by: Vec::new(),
            flush: FlushConfig::default(),
            unknown_fields: UnknownFields::Ignore,
            include_headers: false,
            max_record_size: ByteSize::mib(1),
            compression: Compression::Zstd,
            idle_timeout: Duration::from_secs(30),
            standby_takeover: Duration::from_secs(15),
            max_future_skew: Duration::from_secs(24 * 3600),
            aggregates: Vec::new(),
            mode: Mode::Append,
            key: Vec::new(),
            envelope: Envelope::None,
            apply: Apply::Rewrite,
        }
    }
}

impl PipelineConfig {
    /// The dead-letter table's name.
    pub fn dead_letter_table(&self) -> String {
        self.dead_letter_table
            .clone()
            .unwrap_or_else(|| format!("{}_dead_letter", self.name))
    }
    /// The late table's name for one aggregate.
    pub fn late_table(&self, agg: &AggregateConfig) -> String {
        agg.late_table
            .clone()
            .unwrap_or_else(|| format!("{}_late", self.name))
    }
    /// The registry subject of the values' schema: `subject`, or `<first topic>-value`.
    pub fn value_subject(&self) -> String {
        self.subject.clone().unwrap_or_else(|| {
            format!(
                "{}-value",
                self.topics.first().map(String::as_str).unwrap_or_default()
            )
        })
    }

    /// The registry subject of the keys' schema: `key_subject`, or `<first topic>-key`.
    pub fn key_subject(&self) -> String {
        self.key_subject.clone().unwrap_or_else(|| {
            format!(
                "{}-key",
                self.topics.first().map(String::as_str).unwrap_or_default()
            )
        })
    }

    /// The configured time zone.
    pub fn time_zone(&self) -> chrono_tz::Tz {
        self.timezone
    }

    /// This pipeline with `schema` as its columns (a pipeline without a configured schema
    /// takes its existing table's), checked again against every rule that reads the schema.
    pub fn with_schema(&self, schema: Vec<FieldConfig>) -> std::result::Result<Self, Vec<Problem>> {
        let mut p = self.clone();
        p.schema = schema;
        let mut problems = Vec::new();
        validate::check_schema_rules(0, &p, &mut problems);
        if problems.is_empty() {
            Ok(p)
        } else {
            Err(problems)
        }
    }
}

/// `[[tiering]]`: a topic whose cold records move to an archive table.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct TieringConfig {
    /// The topic.
    pub topic: String,
    /// The archive table (default `archive_<topic>`).
    pub archive_table: Option<String>,
    /// Records younger than this stay in the broker.
    pub hot_retention: Duration,
    /// How often the tiering task runs inside `sluice run`.
    pub interval: Duration,
    /// Most records archived per partition in one round.
    pub max_records_per_round: usize,
}

impl Default for TieringConfig {
    fn default() -> Self {
        Self {
            topic: String::new(),
            archive_table: None,
            hot_retention: Duration::from_secs(3600),
            interval: Duration::from_secs(30),
            max_records_per_round: 1_000_000,
        }
    }
}

impl TieringConfig {
    /// The archive table's name.
    pub fn archive_table(&self) -> String {
        self.archive_table
            .clone()
            .unwrap_or_else(|| format!("archive_{}", self.topic.replace(['.', '-'], "_")))
    }
}

/// `[maintenance]`: compaction, checkpoints and vacuum.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct MaintenanceConfig {
    /// Target size of compacted files (compressed).
    pub target_file_size: ByteSize,
    /// How often compaction runs inside `sluice run` (`0s` disables it).
    pub compact_interval: Duration,
    /// Write a checkpoint every this many commits.
    pub checkpoint_interval: u64,
    /// Files removed from the table are deleted only after this long.
    pub vacuum_retention: Duration,
    /// How often `sluice run` vacuums its tables (`0s` disables it).
    pub vacuum_interval: Duration,
    /// Refuse a `vacuum_retention` under 1 hour (a reader or backfill that started earlier
    /// may still need the files). Delta's `retentionDurationCheck`.
    pub vacuum_retention_check: bool,
    /// Tables whose compacted files are z-ordered, with the columns: `{ clicks = ["page"] }`.
    pub zorder_by: BTreeMap<String, Vec<String>>,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            target_file_size: ByteSize::mib(128),
            compact_interval: Duration::from_secs(300),
            checkpoint_interval: 10,
            vacuum_retention: Duration::from_secs(7 * 86_400),
            vacuum_interval: Duration::from_secs(86_400),
            vacuum_retention_check: true,
            zorder_by: BTreeMap::new(),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[server]`: metrics and health endpoint, logging.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address for `/metrics`, `/health` and `/ready`; empty disables the endpoint.
    pub listen: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// How long SIGTERM may take to flush and commit before the process exits anyway.
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            log_format: LogFormat::Text,
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}

/// Option keys whose values are secrets: never printed.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "private",
        "credential",
        "session_key",
    ]
    .iter()
    .any(|s| k.contains(s))
        || k.ends_with("access_key_id")
        || k.ends_with(".key")
}

fn redacted(options: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    options
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                if is_secret_key(k) { "***" } else { v.as_str() },
            )
        })
        .collect()
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("options", &redacted(&self.options))
            .finish()
    }
}

impl fmt::Debug for LakeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LakeConfig")
            .field("root", &self.root)
            .field("options", &redacted(&self.options))
            .finish()
    }
}

impl Config {
    /// Reads, overrides from the process environment, and validates a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_toml_with_env(&text, path, std::env::vars())
    }

    /// Parses TOML text, lays the given `SLUICE__...` variables over it, and validates.
    pub fn from_toml_with_env(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let parse_err = |message: String| ConfigError::Parse {
            path: path.into(),
            message,
        };
        let mut tree: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        let mut problems = Vec::new();
        for (key, value) in env {
            if let Some(rest) = key.strip_prefix("SLUICE__")
                && let Err(e) = overrides::apply_override(&mut tree, rest, &value)
            {
                problems.push(Problem {
                    key: format!("env {key}"),
                    message: e.to_string(),
                });
            }
        }
        let mut unknown: Vec<String> = Vec::new();
        // A value that does not parse is a problem with its key; it is then left out (its
        // default applies) and the file parsed again, so that one bad value does not hide
        // the others, nor the rules checked after parsing.
        let config = loop {
            unknown.clear();
            let value = toml::Value::Table(tree.clone());
            let mut note = |p: serde_ignored::Path<'_>| unknown.push(p.to_string());
            let ignored = serde_ignored::Deserializer::new(value, &mut note);
            let mut track = serde_path_to_error::Track::new();
            let de = serde_path_to_error::Deserializer::new(ignored, &mut track);
            match raw::RawConfig::deserialize(de) {
                Ok(c) => break c,
                Err(e) => {
                    let at = track.path();
                    problems.push(Problem {
                        key: at.to_string(),
                        message: e.message().to_string(),
                    });
                    if problems.len() > 100 || !overrides::remove_value(&mut tree, &at) {
                        return Err(ConfigError::Invalid {
                            path: path.into(),
                            problems,
                        });
                    }
                }
            }
        };
        for key in unknown {
            problems.push(Problem {
                key: overrides::bracket_indices(&key),
                message: "unknown key; see docs/configuration.md for the keys sluice reads".into(),
            });
        }
        Self::validated(config, path, problems)
    }

    /// Validates what the file says into the typed config.
    fn validated(raw: raw::RawConfig, path: &Path, mut problems: Vec<Problem>) -> Result<Self> {
        let config = validate::config(raw, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.into(),
                problems,
            })
        }
    }

    /// All table names this config writes, each with the key that declares it.
    pub fn table_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for pl in &self.pipelines {
            out.push(pl.table.clone());
            out.push(pl.dead_letter_table());
            for agg in &pl.aggregates {
                out.push(agg.table.clone());
                let late = pl.late_table(agg);
                if !out.contains(&late) {
                    out.push(late);
                }
            }
        }
        for t in &self.tiering {
            out.push(t.archive_table());
        }
        out
    }

    /// The pipeline with this name.
    pub fn pipeline(&self, name: &str) -> Option<&PipelineConfig> {
        self.pipelines.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests;
