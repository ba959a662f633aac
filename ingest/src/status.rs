//! `sluice status`: where every pipeline stands, read from its tables and the brokers.

use std::time::Duration;

use sluice_config::Config;
use sluice_kafka::{Cluster, KafkaError};
use sluice_lake::{Lake, lease_app_id, partition_clock_app_id, progress_app_id};

use crate::Result;

/// One partition's position.
#[derive(Clone, Debug)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset committed in the events table.
    pub committed: Option<i64>,
    /// The broker's log start offset.
    pub log_start: i64,
    /// The broker's end offset (high watermark).
    pub end: i64,
    /// The consumer-group member that owns the partition now (client id and host).
    pub owner: Option<String>,
    /// The window clock (ms) each `clock = "partition"` aggregate committed for it.
    pub window_clocks: Vec<(String, Option<i64>)>,
}

impl PartitionStatus {
    /// Records in the broker not yet committed to the table.
    pub fn lag(&self) -> i64 {
        (self.end - self.committed.unwrap_or(self.log_start)).max(0)
    }
}

/// One pipeline's position.
#[derive(Clone, Debug)]
pub struct PipelineStatus {
    /// Pipeline name.
    pub name: String,
    /// Events table.
    pub table: String,
    /// Events table version, if it exists.
    pub version: Option<i64>,
    /// Age of the events table's last commit.
    pub last_commit_age: Option<Duration>,
    /// Window clock (ms) of each aggregate table.
    pub clocks: Vec<(String, Option<i64>)>,
    /// Partitions.
    pub partitions: Vec<PartitionStatus>,
    /// Upsert mode: the table's keys and what its last flush did.
    pub changes: Option<ChangesStatus>,
    /// With `clock = "topic"` aggregates: until when (ms) the active instance's lease runs
    /// (0 once released; `None` when no instance took it yet).
    pub lease_until: Option<i64>,
}

/// Where an upsert pipeline's table stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangesStatus {
    /// Rows in the table: one per live key.
    pub keys: u64,
    /// The last commit's rows inserted, updated, deleted and copied, when it applied changes.
    pub last_flush: Option<[u64; 4]>,
}

/// What a commit of changes says it did: `sluice.changes` of a rewrite, or a MERGE's
/// `operationMetrics`.
fn last_flush(info: &std::collections::HashMap<String, serde_json::Value>) -> Option<[u64; 4]> {
    let n =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    if let Some(c) = info.get("sluice.changes") {
        return Some([
            n(c, "inserted"),
            n(c, "updated"),
            n(c, "deleted"),
            n(c, "copied"),
        ]);
    }
    let m = info.get("operationMetrics")?;
    Some([
        n(m, "num_target_rows_inserted"),
        n(m, "num_target_rows_updated"),
        n(m, "num_target_rows_deleted"),
        n(m, "num_target_rows_copied"),
    ])
}

/// Reads every pipeline's status, the brokers' offsets and the consumer groups through
/// `broker`. Never prints or returns secrets.
pub async fn status(config: &Config, lake: &Lake, broker: &Cluster) -> Result<Vec<PipelineStatus>> {
    let mut out = Vec::new();
    for p in &config.pipelines {
        let table = lake.open(&p.table).await?;
        let mut changes = None;
        let (version, last_commit_age) = match &table {
            Some(t) => {
                use futures::StreamExt;
                let last = t.history(Some(1)).next().await.and_then(|c| c.ok());
                if p.mode == sluice_config::Mode::Upsert {
                    changes = Some(ChangesStatus {
                        keys: sluice_lake::table_row_count(&p.table, t).await?,
                        last_flush: last.as_ref().and_then(|c| last_flush(&c.info)),
                    });
                }
                let ts = last.and_then(|c| c.timestamp);
                let age =
                    ts.map(|ms| {
                        Duration::from_millis(
                            (chrono::Utc::now().timestamp_millis() - ms).max(0) as u64
                        )
                    });
                (t.version().map(|v| v as i64), age)
            }
            None => (None, None),
        };
        let mut clocks = Vec::new();
        for agg in &p.aggregates {
            let clock = match lake.open(&agg.table).await? {
                Some(t) => crate::pipeline::table_clock(&p.name, &agg.table, &t).await?,
                None => None,
            };
            clocks.push((agg.table.clone(), clock));
        }
        let cluster = broker.clone();
        let topics = p.topics.clone();
        let group = format!("{}.{}", config.kafka.group_id, p.name);
        let (offsets, owners) = tokio::task::spawn_blocking(move || {
            let offsets = broker_offsets(&cluster, &topics)?;
            // Who owns what is for information: a group that cannot be described has none.
            let owners = cluster.group_owners(&group).unwrap_or_default();
            Ok::<_, KafkaError>((offsets, owners))
        })
        .await
        .map_err(|_| KafkaError::TaskLost {
            what: "reading watermarks",
        })??;
        let mut agg_tables = Vec::new();
        for agg in p
            .aggregates
            .iter()
            .filter(|a| a.clock == sluice_config::WindowClock::Partition)
        {
            agg_tables.push((agg.table.clone(), lake.open(&agg.table).await?));
        }
        let mut partitions = Vec::new();
        for (topic, partition, log_start, end) in offsets {
            let committed = match &table {
                Some(t) => {
                    sluice_lake::committed_progress(
                        &p.table,
                        t,
                        &progress_app_id(&p.name, &topic, partition),
                    )
                    .await?
                }
                None => None,
            };
            let mut window_clocks = Vec::new();
            for (name, t) in &agg_tables {
                let clock = match t {
                    Some(t) => {
                        let app = partition_clock_app_id(&p.name, &topic, partition);
                        sluice_lake::committed_progress(name, t, &app).await?
                    }
                    None => None,
                };
                window_clocks.push((name.clone(), clock));
            }
            partitions.push(PartitionStatus {
                owner: owners.get(&(topic.clone(), partition)).cloned(),
                topic,
                partition,
                committed,
                log_start,
                end,
                window_clocks,
            });
        }
        let lease = sluice_lake::lease_table(&p.name);
        let lease_until = match lake.open(&lease).await? {
            Some(t) => sluice_lake::committed_progress(&lease, &t, &lease_app_id(&p.name)).await?,
            None => None,
        };
        out.push(PipelineStatus {
            lease_until,
            name: p.name.clone(),
            table: p.table.clone(),
            version,
            last_commit_age,
            clocks,
            partitions,
            changes,
        });
    }
    Ok(out)
}

/// (topic, partition, log start, end) of every partition of `topics` (blocking); a topic that
/// does not exist has no rows.
fn broker_offsets(
    cluster: &Cluster,
    topics: &[String],
) -> std::result::Result<Vec<(String, i32, i64, i64)>, KafkaError> {
    let mut rows = Vec::new();
    for t in topics {
        let parts = match cluster.partitions(t) {
            Ok(parts) => parts,
            Err(KafkaError::NoSuchTopic { .. }) => continue,
            Err(e) => return Err(e),
        };
        for p in parts {
            let (low, high) = cluster.watermarks(t, p)?;
            rows.push((t.clone(), p, low, high));
        }
    }
    Ok(rows)
}
