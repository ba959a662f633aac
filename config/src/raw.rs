//! What the file says: the serde structs a config file is read into. Values that are read
//! leniently here (text for start positions, zones, types, windows and aggregates) become
//! typed values in [`crate::validate`], which reports every one that does not parse with
//! its key. Nothing outside this crate sees these structs except through
//! [`crate::Config::from_toml_with_env`].

use serde::{Deserialize, Serialize};

use crate::{
    ByteSize, Compression, Duration, EventTimeConfig, FlushConfig, Format, KafkaConfig, LakeConfig,
    MaintenanceConfig, SchemaRegistryConfig, ServerConfig, TieringConfig, TimeFormat,
    UnknownFields,
};

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawConfig {
    /// `[kafka]`.
    pub kafka: KafkaConfig,
    /// `[lake]`.
    pub lake: LakeConfig,
    /// `[[pipeline]]`.
    #[serde(rename = "pipeline")]
    pub pipelines: Vec<RawPipeline>,
    /// `[[tiering]]`.
    pub tiering: Vec<TieringConfig>,
    /// `[maintenance]`.
    pub maintenance: MaintenanceConfig,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[schema_registry]`.
    pub schema_registry: SchemaRegistryConfig,
}

/// `[[pipeline]]` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct RawPipeline {
    /// See [`crate::PipelineConfig::name`].
    pub name: String,
    /// See [`crate::PipelineConfig::topics`].
    pub topics: Vec<String>,
    /// See [`crate::PipelineConfig::format`].
    pub format: Format,
    /// See [`crate::PipelineConfig::subject`].
    pub subject: Option<String>,
    /// See [`crate::PipelineConfig::key_format`].
    pub key_format: crate::KeyFormat,
    /// See [`crate::PipelineConfig::key_subject`].
    pub key_subject: Option<String>,
    /// See [`crate::PipelineConfig::key_column`].
    pub key_column: String,
    /// `earliest`, `latest`, `offset:N` or `time:RFC3339`.
    pub start: String,
    /// See [`crate::PipelineConfig::table`].
    pub table: String,
    /// See [`crate::PipelineConfig::dead_letter_table`].
    pub dead_letter_table: Option<String>,
    /// Columns decoded from each record.
    pub schema: Vec<RawField>,
    /// See [`crate::PipelineConfig::event_time`].
    pub event_time: EventTimeConfig,
    /// An IANA zone name.
    pub timezone: String,
    /// See [`crate::PipelineConfig::partition_by`].
    pub partition_by: Vec<String>,
    /// See [`crate::PipelineConfig::flush`].
    pub flush: FlushConfig,
    /// See [`crate::PipelineConfig::unknown_fields`].
    pub unknown_fields: UnknownFields,
    /// See [`crate::PipelineConfig::include_headers`].
    pub include_headers: bool,
    /// See [`crate::PipelineConfig::max_record_size`].
    pub max_record_size: ByteSize,
    /// See [`crate::PipelineConfig::compression`].
    pub compression: Compression,
    /// See [`crate::PipelineConfig::idle_timeout`].
    pub idle_timeout: Duration,
    /// See [`crate::PipelineConfig::standby_takeover`].
    pub standby_takeover: Duration,
    /// See [`crate::PipelineConfig::max_future_skew`].
    pub max_future_skew: Duration,
    /// `[[pipeline.aggregate]]`.
    #[serde(rename = "aggregate")]
    pub aggregates: Vec<RawAggregate>,
    /// See [`crate::PipelineConfig::mode`].
    pub mode: crate::Mode,
    /// See [`crate::PipelineConfig::key`].
    pub key: Vec<String>,
    /// See [`crate::PipelineConfig::envelope`].
    pub envelope: crate::Envelope,
    /// See [`crate::PipelineConfig::apply`].
    pub apply: crate::Apply,
}

impl Default for RawPipeline {
    fn default() -> Self {
        let typed = crate::PipelineConfig::default();
        Self {
            name: typed.name,
            topics: typed.topics,
            format: typed.format,
            subject: None,
            key_format: typed.key_format,
            key_subject: None,
            key_column: typed.key_column,
            start: "earliest".into(),
            table: typed.table,
            dead_letter_table: typed.dead_letter_table,
            schema: Vec::new(),
            event_time: typed.event_time,
            timezone: "UTC".into(),
            partition_by: typed.partition_by,
            flush: typed.flush,
            unknown_fields: typed.unknown_fields,
            include_headers: typed.include_headers,
            max_record_size: typed.max_record_size,
            compression: typed.compression,
            idle_timeout: typed.idle_timeout,
            standby_takeover: typed.standby_takeover,
            max_future_skew: typed.max_future_skew,
            aggregates: Vec::new(),
            mode: typed.mode,
            key: typed.key,
            envelope: typed.envelope,
            apply: typed.apply,
        }
    }
}

/// One column of a pipeline's schema, as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawField {
    /// The JSON field and column name.
    pub name: String,
    /// The column type, e.g. `string`, `long`, `timestamp`, `array<string>`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Whether the field may be missing or null (default true).
    pub nullable: Option<bool>,
    /// For timestamp columns: how the payload writes the value (default rfc3339).
    pub format: Option<TimeFormat>,
}

/// `window = { kind = "tumbling", size = "1m" }`, as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawWindow {
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

/// `[[pipeline.aggregate]]`, as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawAggregate {
    /// The aggregate table.
    pub table: String,
    /// The window.
    pub window: RawWindow,
    /// How long after a window's end it still accepts records (event time).
    pub grace: Duration,
    /// Group-by columns.
    pub group_by: Vec<String>,
    /// Aggregates such as `count(*) AS views`.
    pub aggregates: Vec<String>,
    /// The late table (default `<pipeline>_late`).
    pub late_table: Option<String>,
    /// `"topic"` (default) or `"partition"`.
    pub clock: crate::WindowClock,
}
