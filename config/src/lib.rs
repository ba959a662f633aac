//! sluice's configuration: one TOML file (`sluice.toml`), typed, with defaults, environment
//! overrides and validation that reports every problem with its key at once.
//!
//! Loading is three steps: the file is parsed into a TOML tree, `SLUICE__SECTION__KEY`
//! environment variables are laid over it (`SLUICE__KAFKA__BROKERS` sets `kafka.brokers`,
//! `SLUICE__PIPELINE__0__START` sets `pipeline[0].start`), then the tree is deserialized and
//! validated. Unknown keys are reported as problems, not ignored.

mod aggregate;
mod types;
mod units;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use aggregate::{AggregateFunction, AggregateSpec};
pub use types::{ColumnType, StructField};
pub use units::{ByteSize, Duration};

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

/// The whole configuration of one sluice process.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    /// The Kafka cluster and consumer group.
    pub kafka: KafkaConfig,
    /// Where tables live.
    pub lake: LakeConfig,
    /// Ingest pipelines (`[[pipeline]]`).
    #[serde(rename = "pipeline")]
    pub pipelines: Vec<PipelineConfig>,
    /// Tiered topics (`[[tiering]]`).
    pub tiering: Vec<TieringConfig>,
    /// Compaction, checkpoints and vacuum.
    pub maintenance: MaintenanceConfig,
    /// The HTTP endpoint for metrics and health, and logging.
    pub server: ServerConfig,
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
    pub fn parse(s: &str) -> Result<Self, String> {
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
                    format!("invalid start {s:?}: offset:N needs a non-negative integer")
                });
        }
        if let Some(ts) = t.strip_prefix("time:") {
            return chrono::DateTime::parse_from_rfc3339(ts.trim())
                .map(|d| Self::Time(d.timestamp_millis()))
                .map_err(|e| format!("invalid start {s:?}: time:T needs an RFC 3339 time such as time:2026-01-01T00:00:00Z ({e})"));
        }
        Err(format!(
            "invalid start {s:?}: use earliest, latest, offset:N or time:RFC3339"
        ))
    }
}

/// The wire format of a pipeline's records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON object per record.
    #[default]
    Json,
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

/// One column of a pipeline's schema.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct FieldConfig {
    /// The JSON field and column name.
    pub name: String,
    /// The column type, e.g. `string`, `long`, `timestamp`, `array<string>`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Whether the field may be missing or null (default true).
    pub nullable: Option<bool>,
    /// For timestamp columns: how the payload writes the value (default rfc3339).
    pub format: Option<TimeFormat>,
    /// The parsed type (filled in by validation).
    #[serde(skip)]
    pub ty: Option<ColumnType>,
}

impl FieldConfig {
    /// Whether the column accepts nulls.
    pub fn is_nullable(&self) -> bool {
        self.nullable.unwrap_or(true)
    }
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

/// `window = { kind = "tumbling", size = "1m" }`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct WindowConfig {
    /// `tumbling`, `hopping` or `session`.
    pub kind: String,
    /// Window length (tumbling, hopping).
    pub size: Option<Duration>,
    /// Distance between window starts (hopping), `0 < advance <= size`.
    pub advance: Option<Duration>,
    /// Inactivity gap that closes a session.
    pub gap: Option<Duration>,
    /// Shift of window boundaries from the epoch (tumbling, hopping).
    pub offset: Option<Duration>,
}

/// A window kind with its parameters in milliseconds (filled in by validation).
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

/// `[[pipeline.aggregate]]`: a windowed aggregate table.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct AggregateConfig {
    /// The aggregate table.
    pub table: String,
    /// The window.
    pub window: WindowConfig,
    /// How long after a window's end it still accepts records (event time).
    pub grace: Duration,
    /// Group-by columns.
    pub group_by: Vec<String>,
    /// Aggregates such as `count(*) AS views`.
    pub aggregates: Vec<String>,
    /// The late table (default `<pipeline>_late`).
    pub late_table: Option<String>,
    /// Parsed window (filled in by validation).
    #[serde(skip)]
    pub window_kind: Option<WindowKind>,
    /// Parsed aggregates (filled in by validation).
    #[serde(skip)]
    pub specs: Vec<AggregateSpec>,
}

/// `[[pipeline]]`: topics decoded into an events table.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct PipelineConfig {
    /// A unique name; part of the progress app id `sluice:<pipeline>:<topic>:<partition>`.
    pub name: String,
    /// Source topics.
    pub topics: Vec<String>,
    /// Record format.
    pub format: Format,
    /// Start position for partitions without progress in the table.
    pub start: String,
    /// The events table.
    pub table: String,
    /// The dead-letter table (default `<name>_dead_letter`).
    pub dead_letter_table: Option<String>,
    /// Columns decoded from each record.
    pub schema: Vec<FieldConfig>,
    /// Where the event time comes from (default: the Kafka timestamp).
    pub event_time: EventTimeConfig,
    /// IANA time zone for text times without an offset and for partition columns.
    pub timezone: String,
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
    /// How far a record's event time may be ahead of its Kafka timestamp and still move the
    /// window clock; a record further ahead joins no window and is counted
    /// (`sluice_future_records_total`), but lands in the events table like any record.
    pub max_future_skew: Duration,
    /// Windowed aggregates over this pipeline's records.
    #[serde(rename = "aggregate")]
    pub aggregates: Vec<AggregateConfig>,
    /// Parsed start position (filled in by validation).
    #[serde(skip)]
    pub start_position: StartPosition,
    /// Parsed time zone (filled in by validation).
    #[serde(skip)]
    pub tz: Option<chrono_tz::Tz>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            topics: Vec::new(),
            format: Format::Json,
            start: "earliest".into(),
            table: String::new(),
            dead_letter_table: None,
            schema: Vec::new(),
            event_time: EventTimeConfig {
                field: None,
                format: TimeFormat::KafkaTimestamp,
            },
            timezone: "UTC".into(),
            partition_by: Vec::new(),
            flush: FlushConfig::default(),
            unknown_fields: UnknownFields::Ignore,
            include_headers: false,
            max_record_size: ByteSize::mib(1),
            compression: Compression::Zstd,
            idle_timeout: Duration::from_secs(30),
            max_future_skew: Duration::from_secs(24 * 3600),
            aggregates: Vec::new(),
            start_position: StartPosition::Earliest,
            tz: None,
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
    /// The configured time zone (UTC until validated).
    pub fn time_zone(&self) -> chrono_tz::Tz {
        self.tz.unwrap_or(chrono_tz::UTC)
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
                && let Err(message) = apply_override(&mut tree, rest, &value)
            {
                problems.push(Problem {
                    key: format!("env {key}"),
                    message,
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
            match Config::deserialize(de) {
                Ok(c) => break c,
                Err(e) => {
                    let at = track.path();
                    problems.push(Problem {
                        key: at.to_string(),
                        message: e.message().to_string(),
                    });
                    if problems.len() > 100 || !remove_value(&mut tree, &at) {
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
                key: bracket_indices(&key),
                message: "unknown key; see docs/configuration.md for the keys sluice reads".into(),
            });
        }
        config.validated(path, problems)
    }

    fn validated(mut self, path: &Path, mut problems: Vec<Problem>) -> Result<Self> {
        self.validate_into(&mut problems);
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigError::Invalid {
                path: path.into(),
                problems,
            })
        }
    }

    /// Checks every rule, fills in the parsed fields, and appends one problem per broken rule.
    pub fn validate_into(&mut self, problems: &mut Vec<Problem>) {
        let mut c = Check {
            problems,
            tables: BTreeMap::new(),
        };
        validate_kafka(&mut self.kafka, &mut c);
        validate_lake(&self.lake, &mut c);
        if self.pipelines.is_empty() && self.tiering.is_empty() {
            c.problem(
                "pipeline",
                "no [[pipeline]] and no [[tiering]]: there is nothing to run".into(),
            );
        }
        let mut names = BTreeSet::new();
        for (i, pl) in self.pipelines.iter_mut().enumerate() {
            validate_pipeline(i, pl, &mut names, &mut c);
        }
        validate_tiering(&self.tiering, &mut c);
        let tables = self.table_names();
        validate_maintenance(&self.maintenance, &tables, &mut c);
        validate_server(&self.server, &mut c);
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

fn validate_window(w: &WindowConfig) -> std::result::Result<WindowKind, (&'static str, String)> {
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis_i64());
    let offset = ms(w.offset).unwrap_or(0);
    match w.kind.as_str() {
        "tumbling" => {
            let size = ms(w.size).filter(|s| *s > 0).ok_or((
                "size",
                "tumbling windows need size > 0, e.g. size = \"1m\"".to_string(),
            ))?;
            Ok(WindowKind::Tumbling { size, offset })
        }
        "hopping" => {
            let size = ms(w.size)
                .filter(|s| *s > 0)
                .ok_or(("size", "hopping windows need size > 0".to_string()))?;
            let advance = ms(w.advance).ok_or((
                "advance",
                "hopping windows need advance, with 0 < advance <= size".to_string(),
            ))?;
            if advance <= 0 || advance > size {
                return Err((
                    "advance",
                    format!("needs 0 < advance <= size (got advance {advance}ms, size {size}ms)"),
                ));
            }
            Ok(WindowKind::Hopping {
                size,
                advance,
                offset,
            })
        }
        "session" => {
            let gap = ms(w.gap).filter(|g| *g > 0).ok_or((
                "gap",
                "session windows need gap > 0, e.g. gap = \"30m\"".to_string(),
            ))?;
            Ok(WindowKind::Session { gap })
        }
        "" => Err(("kind", "missing; use tumbling, hopping or session".into())),
        other => Err((
            "kind",
            format!(
                "unknown window kind {other:?}; use tumbling, hopping or session (sliding windows are hopping windows)"
            ),
        )),
    }
}

/// `pipeline.0.bogus` -> `pipeline[0].bogus`.
/// Collects the problems of a validation, and which key claimed each table name.
struct Check<'a> {
    problems: &'a mut Vec<Problem>,
    tables: BTreeMap<String, String>,
}

impl Check<'_> {
    fn problem(&mut self, key: &str, message: String) {
        self.problems.push(Problem {
            key: key.into(),
            message,
        });
    }

    /// Table `table` is declared at `key`: it must be a valid name no other key took.
    fn claim(&mut self, key: String, table: &str) {
        if !valid_name(table) {
            self.problem(
                &key,
                format!("{table:?} is not a valid table name; use letters, digits and _"),
            );
        } else if let Some(prev) = self.tables.get(table) {
            let message = format!(
                "table {table:?} is already used by {prev}; every table needs its own name"
            );
            self.problem(&key, message);
        } else {
            self.tables.insert(table.to_string(), key);
        }
    }
}

/// The columns sluice adds to an events table itself: no schema field may take their names.
pub fn is_reserved_column(name: &str) -> bool {
    name.starts_with("_kafka_") || ["_event_time", "event_date", "event_hour"].contains(&name)
}

/// `[kafka]`.
fn validate_kafka(kafka: &mut KafkaConfig, c: &mut Check<'_>) {
    if kafka.brokers.trim().is_empty() {
        c.problem(
            "kafka.brokers",
            "missing; set the bootstrap servers, e.g. brokers = \"127.0.0.1:9092\"".into(),
        );
    }
    if kafka.group_id.trim().is_empty() {
        kafka.group_id = "sluice".into();
    }
    for key in [
        "group.id",
        "bootstrap.servers",
        "enable.auto.commit",
        "enable.auto.offset.store",
    ] {
        if kafka.options.contains_key(key) {
            c.problem(
                &format!("kafka.options.{key}"),
                "is set by sluice itself; use kafka.brokers / kafka.group_id, or remove it".into(),
            );
        }
    }
}

/// `[lake]`.
fn validate_lake(lake: &LakeConfig, c: &mut Check<'_>) {
    if lake.root.trim().is_empty() {
        c.problem("lake.root", "missing; set where tables live, e.g. root = \"file:///var/lib/sluice/lake\" or \"s3://bucket/prefix\"".into());
    } else if let Err(e) = lake_root_url(&lake.root) {
        c.problem("lake.root", e);
    }
}

/// One `[[pipeline]]`: its names, topics and tables, then its schema, event time, layout and
/// aggregates.
fn validate_pipeline(
    i: usize,
    pl: &mut PipelineConfig,
    names: &mut BTreeSet<String>,
    c: &mut Check<'_>,
) {
    let k = |s: &str| format!("pipeline[{i}].{s}");
    if pl.name.is_empty() {
        c.problem(
            &k("name"),
            "missing; every pipeline needs a unique name".into(),
        );
    } else if !valid_name(&pl.name) {
        c.problem(
            &k("name"),
            format!(
                "{:?} is not a valid name; use letters, digits and _",
                pl.name
            ),
        );
    } else if !names.insert(pl.name.clone()) {
        c.problem(
            &k("name"),
            format!("{:?} is used by another pipeline", pl.name),
        );
    }
    if pl.topics.is_empty() {
        c.problem(
            &k("topics"),
            "missing; list the source topics, e.g. topics = [\"clicks\"]".into(),
        );
    }
    for (j, t) in pl.topics.iter().enumerate() {
        if t.is_empty()
            || t.len() > 249
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            c.problem(
                &k(&format!("topics[{j}]")),
                format!("{t:?} is not a valid Kafka topic name"),
            );
        }
    }
    match StartPosition::parse(&pl.start) {
        Ok(s) => pl.start_position = s,
        Err(e) => c.problem(&k("start"), e),
    }
    if pl.table.is_empty() {
        c.problem(
            &k("table"),
            "missing; name the events table, e.g. table = \"clicks\"".into(),
        );
    } else {
        c.claim(k("table"), &pl.table.clone());
    }
    c.claim(k("dead_letter_table"), &pl.dead_letter_table());
    match pl.timezone.parse::<chrono_tz::Tz>() {
        Ok(tz) => pl.tz = Some(tz),
        Err(_) => c.problem(
            &k("timezone"),
            format!(
                "unknown time zone {:?}; use an IANA name such as \"UTC\" or \"Europe/Berlin\"",
                pl.timezone
            ),
        ),
    }
    let schema_known = !pl.schema.is_empty();
    validate_schema(i, pl, c);
    validate_event_time(i, pl, schema_known, c);
    for (j, col) in pl.partition_by.iter().enumerate() {
        let known = !schema_known
            || col == "event_date"
            || col == "event_hour"
            || pl
                .schema
                .iter()
                .any(|f| &f.name == col && f.ty.as_ref().is_some_and(|t| t.is_primitive()));
        if !known {
            c.problem(
                &k(&format!("partition_by[{j}]")),
                format!(
                    "{col:?} is neither event_date, event_hour nor a top-level primitive column"
                ),
            );
        }
    }
    if pl.flush.max_rows == 0 {
        c.problem(&k("flush.max_rows"), "must be at least 1".into());
    }
    if pl.flush.max_bytes.bytes() < 1024 {
        c.problem(
            &k("flush.max_bytes"),
            format!(
                "{} is too small; use at least 1KiB (e.g. \"128MiB\")",
                pl.flush.max_bytes
            ),
        );
    }
    if pl.flush.max_latency.get() < std::time::Duration::from_millis(10) {
        c.problem(&k("flush.max_latency"), "must be at least 10ms".into());
    }
    if pl.max_record_size.bytes() == 0 {
        c.problem(&k("max_record_size"), "must be at least 1B".into());
    }
    let pl_name = pl.name.clone();
    let schema = pl.schema.clone();
    let mut late_tables = BTreeSet::new();
    for (a, agg) in pl.aggregates.iter_mut().enumerate() {
        let at = (i, a);
        validate_aggregate(at, agg, &pl_name, &schema, &mut late_tables, c);
    }
}

/// One `[[pipeline.aggregate]]` of a pipeline named `pl_name` with `schema`: its tables, its
/// window, its group-by columns and its aggregates.
fn validate_aggregate(
    (i, a): (usize, usize),
    agg: &mut AggregateConfig,
    pl_name: &str,
    schema: &[FieldConfig],
    late_tables: &mut BTreeSet<String>,
    c: &mut Check<'_>,
) {
    let ak = |s: &str| format!("pipeline[{i}].aggregate[{a}].{s}");
    if agg.table.is_empty() {
        c.problem(&ak("table"), "missing; name the aggregate table".into());
    } else {
        c.claim(ak("table"), &agg.table.clone());
    }
    let late = agg
        .late_table
        .clone()
        .unwrap_or_else(|| format!("{pl_name}_late"));
    if late_tables.insert(late.clone()) {
        c.claim(ak("late_table"), &late);
    }
    match validate_window(&agg.window) {
        Ok(w) => agg.window_kind = Some(w),
        Err((key, msg)) => c.problem(&ak(&format!("window.{key}")), msg),
    }
    for (g, col) in agg.group_by.iter().enumerate() {
        if !schema.is_empty()
            && !schema.iter().any(|f| &f.name == col)
            && !col.starts_with("_kafka_")
            && col != "event_date"
            && col != "event_hour"
        {
            c.problem(
                &ak(&format!("group_by[{g}]")),
                format!("{col:?} is not a column of the pipeline's schema"),
            );
        }
    }
    if agg.aggregates.is_empty() {
        c.problem(
            &ak("aggregates"),
            "missing; e.g. aggregates = [\"count(*) AS events\"]".into(),
        );
    }
    agg.specs.clear();
    for (g, text) in agg.aggregates.iter().enumerate() {
        match AggregateSpec::parse(text) {
            Ok(spec) => {
                if let Some(col) = &spec.column
                    && !schema.is_empty()
                    && !schema.iter().any(|f| &f.name == col)
                {
                    c.problem(
                        &ak(&format!("aggregates[{g}]")),
                        format!("{col:?} is not a column of the pipeline's schema"),
                    );
                }
                agg.specs.push(spec)
            }
            Err(e) => c.problem(&ak(&format!("aggregates[{g}]")), e),
        }
    }
}

/// A pipeline's `schema`: names (none reserved, none twice) and types.
fn validate_schema(i: usize, pl: &mut PipelineConfig, c: &mut Check<'_>) {
    // An empty schema means: take the columns of the existing events table (checked
    // when the pipeline opens its tables); column references are checked then too.
    let mut cols = BTreeSet::new();
    for (j, f) in pl.schema.iter_mut().enumerate() {
        let fk = format!("pipeline[{i}].schema[{j}]");
        if f.name.is_empty() {
            c.problem(&format!("{fk}.name"), "missing".into());
        } else if is_reserved_column(&f.name) {
            c.problem(
                &format!("{fk}.name"),
                format!(
                    "{:?} is a column sluice adds itself; rename the field",
                    f.name
                ),
            );
        } else if !cols.insert(f.name.clone()) {
            c.problem(
                &format!("{fk}.name"),
                format!("column {:?} appears twice", f.name),
            );
        }
        match ColumnType::parse(&f.type_name) {
            Ok(t) => {
                if f.format.is_some() && t != ColumnType::Timestamp {
                    c.problem(
                        &format!("{fk}.format"),
                        "only timestamp columns take a format".into(),
                    );
                }
                f.ty = Some(t)
            }
            Err(e) => c.problem(&format!("{fk}.type"), e),
        }
    }
}

/// A pipeline's `event_time`: a field of a type that can hold the format.
fn validate_event_time(i: usize, pl: &PipelineConfig, schema_known: bool, c: &mut Check<'_>) {
    let k = |s: &str| format!("pipeline[{i}].{s}");
    match (&pl.event_time.format, &pl.event_time.field) {
        (TimeFormat::KafkaTimestamp, Some(_)) => c.problem(
            &k("event_time.field"),
            "kafka_timestamp takes no field; remove it or pick another format".into(),
        ),
        (TimeFormat::KafkaTimestamp, None) => {}
        (_, None) => c.problem(
            &k("event_time.field"),
            "missing; name the payload field holding the event time".into(),
        ),
        (_, Some(_)) if !schema_known => {}
        (fmt, Some(field)) => match pl.schema.iter().find(|f| &f.name == field) {
            None => c.problem(
                &k("event_time.field"),
                format!("{field:?} is not a column of the schema"),
            ),
            Some(f) => {
                let ok = match f.ty {
                    Some(ColumnType::Timestamp) | Some(ColumnType::String) => true,
                    Some(ColumnType::Long)
                    | Some(ColumnType::Integer)
                    | Some(ColumnType::Double) => *fmt != TimeFormat::Rfc3339,
                    None => true,
                    _ => false,
                };
                if !ok {
                    c.problem(
                        &k("event_time.field"),
                        format!(
                            "column {field:?} cannot hold a {fmt:?} time; use timestamp, string, long or double"
                        ),
                    );
                }
            }
        },
    }
}

/// `[[tiering]]`.
fn validate_tiering(tiering: &[TieringConfig], c: &mut Check<'_>) {
    let mut tiered = BTreeSet::new();
    for (i, t) in tiering.iter().enumerate() {
        let k = |s: &str| format!("tiering[{i}].{s}");
        if t.topic.is_empty() {
            c.problem(&k("topic"), "missing; name the topic to tier".into());
        } else if !tiered.insert(t.topic.clone()) {
            c.problem(&k("topic"), format!("topic {:?} is tiered twice", t.topic));
        }
        c.claim(k("archive_table"), &t.archive_table());
        if t.interval.get() < std::time::Duration::from_millis(100) {
            c.problem(&k("interval"), "must be at least 100ms".into());
        }
        if t.max_records_per_round == 0 {
            c.problem(&k("max_records_per_round"), "must be at least 1".into());
        }
    }
}

/// `[maintenance]`; `tables` are the config's table names.
fn validate_maintenance(maintenance: &MaintenanceConfig, tables: &[String], c: &mut Check<'_>) {
    for (t, cols) in &maintenance.zorder_by {
        if !tables.contains(t) {
            c.problem(
                &format!("maintenance.zorder_by.{t}"),
                format!("{t:?} is not a table of this config"),
            );
        } else if cols.is_empty() {
            c.problem(
                &format!("maintenance.zorder_by.{t}"),
                "list at least one column".into(),
            );
        }
    }
    if maintenance.checkpoint_interval == 0 {
        c.problem(
            "maintenance.checkpoint_interval",
            "must be at least 1 (commits between checkpoints)".into(),
        );
    }
    if maintenance.target_file_size.bytes() < 1024 {
        c.problem(
            "maintenance.target_file_size",
            "too small; use at least 1KiB (e.g. \"128MiB\")".into(),
        );
    }
}

/// `[server]`.
fn validate_server(server: &ServerConfig, c: &mut Check<'_>) {
    if !server.listen.is_empty() && server.listen.parse::<std::net::SocketAddr>().is_err() {
        c.problem(
            "server.listen",
            format!(
                "{:?} is not an address; use host:port such as \"127.0.0.1:9464\", or \"\" to disable",
                server.listen
            ),
        );
    }
}

/// Removes the value at `at` from `tree`; false when there is none (a missing key).
fn remove_value(tree: &mut toml::Table, at: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = at.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let node = &mut *tree;
    let mut item: Option<&mut toml::Value> = None;
    for seg in parents {
        let next = match (item.take(), seg) {
            (None, Segment::Map { key }) => node.get_mut(key),
            (Some(toml::Value::Table(t)), Segment::Map { key }) => t.get_mut(key),
            (Some(toml::Value::Array(a)), Segment::Seq { index }) => a.get_mut(*index),
            _ => None,
        };
        match next {
            Some(v) => item = Some(v),
            None => return false,
        }
    }
    match (item, last) {
        (None, Segment::Map { key }) => node.remove(key).is_some(),
        (Some(toml::Value::Table(t)), Segment::Map { key }) => t.remove(key).is_some(),
        (Some(toml::Value::Array(a)), Segment::Seq { index }) if *index < a.len() => {
            a.remove(*index);
            true
        }
        _ => false,
    }
}

fn bracket_indices(path: &str) -> String {
    let mut out = String::new();
    for seg in path.split('.') {
        if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Normalizes `lake.root` to a URL: plain paths become `file://` URLs.
pub fn lake_root_url(root: &str) -> std::result::Result<url::Url, String> {
    let root = root.trim();
    if root.contains("://") {
        let mut u =
            url::Url::parse(root).map_err(|e| format!("{root:?} is not a valid URL: {e}"))?;
        match u.scheme() {
            "file" | "s3" | "s3a" | "memory" => {}
            other => {
                return Err(format!(
                    "scheme {other:?} is not supported; use file:// or s3://"
                ));
            }
        }
        if !u.path().ends_with('/') {
            let p = format!("{}/", u.path());
            u.set_path(&p);
        }
        Ok(u)
    } else {
        let path = std::path::absolute(root).map_err(|e| format!("{root:?}: {e}"))?;
        url::Url::from_directory_path(&path)
            .map_err(|_| format!("{root:?} is not a usable directory path"))
    }
}

fn apply_override(
    tree: &mut toml::Table,
    path: &str,
    value: &str,
) -> std::result::Result<(), String> {
    let parts: Vec<String> = path.split("__").map(|s| s.to_ascii_lowercase()).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err("empty path segment; write SLUICE__SECTION__KEY".into());
    }
    // librdkafka option names use dots: SLUICE__KAFKA__OPTIONS__SASL_PASSWORD -> sasl.password.
    let parts: Vec<String> = if parts.len() == 3 && parts[0] == "kafka" && parts[1] == "options" {
        vec![
            parts[0].clone(),
            parts[1].clone(),
            parts[2].replace('_', "."),
        ]
    } else {
        parts
    };
    let parsed: toml::Value = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table())
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let is_options = parts.len() == 3 && parts[1] == "options";
    let parsed = if is_options {
        toml::Value::String(value.to_string())
    } else {
        parsed
    };
    set_path(tree, &parts, parsed)
}

fn set_path(
    table: &mut toml::Table,
    parts: &[String],
    value: toml::Value,
) -> std::result::Result<(), String> {
    let (head, rest) = parts.split_first().ok_or("empty path")?;
    if rest.is_empty() {
        table.insert(head.clone(), value);
        return Ok(());
    }
    let entry = table
        .entry(head.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => set_path(t, rest, value),
        toml::Value::Array(items) => {
            let (idx, rest2) = rest.split_first().ok_or("missing index")?;
            let i: usize = idx.parse().map_err(|_| {
                format!("{head} is a list; the next segment must be an index, got {idx:?}")
            })?;
            let item = items
                .get_mut(i)
                .ok_or_else(|| format!("{head} has no entry {i}"))?;
            match item {
                toml::Value::Table(t) if !rest2.is_empty() => set_path(t, rest2, value),
                _ => Err(format!("cannot set {head}[{i}] here")),
            }
        }
        _ => Err(format!("{head} is not a table")),
    }
}

#[cfg(test)]
mod tests;
