//! Topic tables: `kafka.<topic>` reads a topic as one table across both tiers.
//!
//! The table is the archive's rows below each partition's boundary, plus the broker's records
//! from the boundary up to the end offset when the table is first used in the session, with the
//! same boundary rule as the unified log reader: no record twice, none missed. Its columns are
//! the archive's (`partition`, `offset`, `timestamp`, `timestamp_type`, `key`, `value`,
//! `headers`), plus, when a pipeline reads the topic, the decoded columns of that pipeline's
//! events table (null for records it has not committed yet or sent to the dead-letter table).
//!
//! The archive part is scanned from the lake with pruning; the broker part (the hot window) is
//! read into memory when the table is first used.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_config::Config;
use sluice_lake::Lake;
use sluice_lake::deltalake::arrow::datatypes::Schema;
use sluice_lake::deltalake::arrow::record_batch::RecordBatch;
use sluice_lake::deltalake::datafusion::catalog::MemTable;
use sluice_lake::deltalake::datafusion::prelude::SessionContext;
use sluice_tiering::UnifiedLog;
use sluice_tiering::archive::{archive_schema, to_archive_batch};
use tokio_util::sync::CancellationToken;

use crate::{QueryError, Result};

/// The schema holding topic tables.
pub const TOPIC_SCHEMA: &str = "kafka";
/// The schema holding the pieces topic tables are made of.
const INTERNAL_SCHEMA: &str = "sluice_internal";

const ARCHIVE_COLUMNS: [&str; 7] = [
    "partition",
    "offset",
    "timestamp",
    "timestamp_type",
    "key",
    "value",
    "headers",
];

/// What a topic table is made of.
#[derive(Clone, Debug)]
pub struct TopicSpec {
    /// The topic.
    pub topic: String,
    /// The events table of a pipeline reading it, with its decoded columns.
    pub events: Option<(String, Vec<String>)>,
}

/// The topics of a config that get a table: every tiered topic and every pipeline topic.
pub fn topics_of(config: &Config) -> BTreeMap<String, TopicSpec> {
    let mut out = BTreeMap::new();
    for t in &config.tiering {
        out.insert(
            t.topic.clone(),
            TopicSpec {
                topic: t.topic.clone(),
                events: None,
            },
        );
    }
    for p in &config.pipelines {
        for t in &p.topics {
            let spec = out.entry(t.clone()).or_insert_with(|| TopicSpec {
                topic: t.clone(),
                events: None,
            });
            if spec.events.is_none() {
                let cols: Vec<String> = p
                    .schema
                    .iter()
                    .map(|f| f.name.clone())
                    .filter(|n| !ARCHIVE_COLUMNS.contains(&n.as_str()))
                    .collect();
                spec.events = Some((p.table.clone(), cols));
            }
        }
    }
    out
}

fn q(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn sql_err(what: impl std::fmt::Display) -> QueryError {
    QueryError::Sql {
        message: what.to_string(),
    }
}

/// Registers `kafka.<topic>` in `ctx`.
pub async fn register_topic(
    ctx: &SessionContext,
    config: &Config,
    lake: &Lake,
    spec: &TopicSpec,
    registered_tables: &[String],
) -> Result<()> {
    ensure_schema(ctx, TOPIC_SCHEMA)?;
    ensure_schema(ctx, INTERNAL_SCHEMA)?;
    let log = UnifiedLog::new(config, lake, &spec.topic).map_err(|e| QueryError::Source {
        what: format!("topic {}", spec.topic),
        message: e.to_string(),
    })?;
    let source = |e: sluice_tiering::TieringError| QueryError::Source {
        what: format!("topic {}", spec.topic),
        message: e.to_string(),
    };
    let partitions = log.partitions().await.map_err(source)?;
    // One snapshot of the archive gives both the boundaries and the rows below them.
    let archive = lake.open(log.table()).await?;
    let mut boundaries = BTreeMap::new();
    if let Some(t) = &archive {
        for &p in &partitions {
            let app = sluice_tiering::archive_app_id(&spec.topic, p);
            if let Some(b) = sluice_lake::committed_progress(log.table(), t, &app).await? {
                boundaries.insert(p, b);
            }
        }
    }
    let schema: Arc<Schema> = match &archive {
        Some(t) => sluice_lake::table_arrow_schema(log.table(), t)?,
        None => archive_schema(),
    };
    // The hot part: from each boundary (or the log start) to the end offset now.
    let mut hot: Vec<RecordBatch> = Vec::new();
    let cancel = CancellationToken::new();
    for &p in &partitions {
        let (low, high) = log.watermarks(p).await.map_err(source)?;
        let start = boundaries.get(&p).copied().unwrap_or(low);
        if start >= high {
            continue;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let schema2 = schema.clone();
        let collect = tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(raw) = rx.recv().await {
                out.push(to_archive_batch(&raw, &schema2));
            }
            out
        });
        log.read_range(p, start, Some(high), &tx, &cancel)
            .await
            .map_err(source)?;
        drop(tx);
        for b in collect.await.map_err(sql_err)? {
            hot.push(b.map_err(sql_err)?);
        }
    }
    let hot_name = format!("{INTERNAL_SCHEMA}.{}", q(&format!("hot_{}", spec.topic)));
    let mem = MemTable::try_new(schema.clone(), vec![hot]).map_err(sql_err)?;
    ctx.register_table(hot_name.as_str(), Arc::new(mem))
        .map_err(sql_err)?;
    let cols = ARCHIVE_COLUMNS
        .iter()
        .map(|c| q(c))
        .collect::<Vec<_>>()
        .join(", ");
    let mut union = format!("SELECT {cols} FROM {hot_name}");
    if let Some(t) = &archive
        && !boundaries.is_empty()
    {
        let cold_name = format!("{INTERNAL_SCHEMA}.{}", q(&format!("cold_{}", spec.topic)));
        crate::register(ctx, &cold_name, t).await?;
        let below = boundaries
            .iter()
            .map(|(p, b)| format!("(\"partition\" = {p} AND \"offset\" < {b})"))
            .collect::<Vec<_>>()
            .join(" OR ");
        union = format!("SELECT {cols} FROM {cold_name} WHERE {below} UNION ALL {union}");
    }
    let body = match &spec.events {
        Some((events, decoded))
            if !decoded.is_empty() && registered_tables.iter().any(|t| t == events) =>
        {
            let picked = decoded
                .iter()
                .map(|c| format!("e.{}", q(c)))
                .collect::<Vec<_>>()
                .join(", ");
            let t_cols = ARCHIVE_COLUMNS
                .iter()
                .map(|c| format!("t.{}", q(c)))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "SELECT {t_cols}, {picked} FROM ({union}) t LEFT JOIN {} e ON e._kafka_topic = '{}' AND e._kafka_partition = t.\"partition\" AND e._kafka_offset = t.\"offset\"",
                q(events),
                spec.topic.replace('\'', "''")
            )
        }
        _ => union,
    };
    let view = format!("{TOPIC_SCHEMA}.{}", q(&spec.topic));
    ctx.sql(&format!("CREATE VIEW {view} AS {body}"))
        .await
        .map_err(sql_err)?;
    tracing::debug!(topic = %spec.topic, archived_partitions = boundaries.len(), "registered {view}");
    Ok(())
}

fn ensure_schema(ctx: &SessionContext, name: &str) -> Result<()> {
    use sluice_lake::deltalake::datafusion::catalog::MemorySchemaProvider;
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| sql_err("the session has no default catalog"))?;
    if catalog.schema(name).is_none() {
        catalog
            .register_schema(name, Arc::new(MemorySchemaProvider::new()))
            .map_err(sql_err)?;
    }
    Ok(())
}
