//! [`EventsSink`]: where a pipeline's decoded records go. In append mode every record is a
//! row of the events table, encoded on a task of its own ([`BackgroundWriter`]); in upsert
//! mode records are changes to the latest row per key ([`UpsertWriter`]), with a decoder of
//! their own for the keys of deletes.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use sluice_changelog::envelope::KeyColumn;
use sluice_changelog::{ChangeCounts, UpsertWriter};
use sluice_config::{ColumnType, Envelope, PipelineConfig, TimeFormat, UnknownFields};
use sluice_formats::schema::events_schema;
use sluice_formats::{FormatError, JsonDecoder, RecordDecoder};
use sluice_lake::{BackgroundWriter, CommitOutcome, LakeError, TableWriter};

/// The events table of a pipeline, as its mode writes it.
pub(crate) enum EventsSink {
    /// Rows appended.
    Append(BackgroundWriter),
    /// Changes applied per key.
    Upsert(Box<Upserts>),
}

/// An upsert pipeline's writer and what it reads changes with.
pub(crate) struct Upserts {
    pub writer: UpsertWriter,
    /// Decodes the JSON objects that hold a delete's key (a tombstone's key, Debezium's
    /// `before`) into the key columns.
    pub key_decoder: RecordDecoder,
    pub key_columns: Vec<KeyColumn>,
    pub envelope: Envelope,
}

impl EventsSink {
    /// The sink of `p`'s mode over its events table.
    pub fn new(p: &PipelineConfig, writer: TableWriter) -> Result<Self, FormatError> {
        if p.mode == sluice_config::Mode::Append {
            return Ok(Self::Append(BackgroundWriter::spawn(writer)));
        }
        let key_p = PipelineConfig {
            schema: p
                .schema
                .iter()
                .filter(|f| p.key.contains(&f.name))
                .cloned()
                .collect(),
            event_time: sluice_config::EventTimeConfig {
                field: None,
                format: TimeFormat::KafkaTimestamp,
            },
            unknown_fields: UnknownFields::Ignore,
            include_headers: false,
            ..p.clone()
        };
        let key_decoder =
            RecordDecoder::Json(Box::new(JsonDecoder::new(&key_p, events_schema(&key_p))?));
        let key_columns = p
            .key
            .iter()
            .map(|k| KeyColumn {
                name: k.clone(),
                text: p
                    .schema
                    .iter()
                    .any(|f| &f.name == k && matches!(f.ty, ColumnType::String)),
            })
            .collect();
        Ok(Self::Upsert(Box::new(Upserts {
            writer: UpsertWriter::new(writer, &p.key, p.apply),
            key_decoder,
            key_columns,
            envelope: p.envelope,
        })))
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Append(w) => w.name(),
            Self::Upsert(u) => u.writer.name(),
        }
    }

    pub fn buffered_rows(&self) -> u64 {
        match self {
            Self::Append(w) => w.buffered_rows(),
            Self::Upsert(u) => u.writer.buffered_rows(),
        }
    }

    pub fn buffered_bytes(&self) -> u64 {
        match self {
            Self::Append(w) => w.buffered_bytes(),
            Self::Upsert(u) => u.writer.buffered_bytes(),
        }
    }

    pub async fn refresh(&mut self) -> Result<(), LakeError> {
        match self {
            Self::Append(w) => w.refresh().await,
            Self::Upsert(u) => u.writer.refresh().await,
        }
    }

    pub async fn progress(&mut self, app_id: &str) -> Result<Option<i64>, LakeError> {
        match self {
            Self::Append(w) => w.progress(app_id).await,
            Self::Upsert(u) => u.writer.progress(app_id).await,
        }
    }

    pub async fn add_columns(&mut self, fields: Vec<Field>) -> Result<Arc<Schema>, LakeError> {
        match self {
            Self::Append(w) => w.add_columns(fields).await,
            Self::Upsert(u) => u.writer.add_columns(&fields).await,
        }
    }

    /// Commits what is buffered with `progress`; for upserts also what the merge did.
    pub async fn commit(
        &mut self,
        progress: &[(String, i64)],
        meta: HashMap<String, serde_json::Value>,
    ) -> Result<(Option<CommitOutcome>, Option<ChangeCounts>), LakeError> {
        match self {
            Self::Append(w) => Ok((w.commit(progress, meta).await?, None)),
            Self::Upsert(u) => Ok(match u.writer.commit(progress, meta).await? {
                Some((out, counts)) => (Some(out), Some(counts)),
                None => (None, None),
            }),
        }
    }
}
