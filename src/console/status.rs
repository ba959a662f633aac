//! The status document: where every pipeline, aggregate, tiered topic and table stands. One
//! shape for `GET /api/status`, `sluice status --json` and the console page, so the three
//! read the same numbers.
//!
//! The positions (committed offsets, end offsets, boundaries, window clocks as committed,
//! table versions, files and bytes) are read from the tables and the brokers, by any process.
//! A running service adds what only it knows (`live`): rates and their last hour, the last
//! commits, the latest dead letters and late records, the running window clocks and open
//! windows, the tiering alarm, and when each table was last compacted and vacuumed.

use std::collections::BTreeMap;

use serde::Serialize;
use sluice_config::Config;
use sluice_kafka::Cluster;
use sluice_lake::Lake;
use sluice_telemetry::{recent, spec};

use super::history::History;

/// Everything the console shows.
#[derive(Clone, Debug, Serialize)]
pub struct StatusDoc {
    /// When the document was made (ms since the epoch).
    pub generated_at_ms: i64,
    /// True when a running service made it (its `live` parts are filled).
    pub live: bool,
    /// One entry per `[[pipeline]]`.
    pub pipelines: Vec<PipelineDoc>,
    /// One entry per `[[tiering]]` topic.
    pub tiering: Vec<TierDoc>,
    /// Every table of the config.
    pub tables: Vec<TableDoc>,
}

/// A pipeline.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineDoc {
    /// Its name.
    pub name: String,
    /// Its events table.
    pub table: String,
    /// The events table's version (`None` before its first commit).
    pub version: Option<i64>,
    /// Seconds since the events table's last commit.
    pub last_commit_age_s: Option<u64>,
    /// Every partition of its topics.
    pub partitions: Vec<PartitionDoc>,
    /// Its windowed aggregates.
    pub aggregates: Vec<AggregateDoc>,
    /// Upsert mode: live keys and the last flush's inserted, updated, deleted, copied rows.
    pub changes: Option<ChangesDoc>,
    /// What only the running service knows.
    pub activity: Option<ActivityDoc>,
    /// With `clock = "topic"` aggregates: until when the active instance's lease runs (ms
    /// since the epoch; 0 once released).
    pub lease_until_ms: Option<i64>,
    /// Running service with `clock = "topic"` aggregates: whether this instance computes the
    /// windows (holds the lease) or stands by.
    pub active: Option<bool>,
}

/// One partition of a pipeline's topic.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionDoc {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Next offset committed to the events table.
    pub committed: Option<i64>,
    /// The broker's end offset.
    pub end: i64,
    /// End minus committed (from the broker's log start when nothing is committed).
    pub lag: i64,
    /// The tiering boundary (first offset not archived), for a tiered topic.
    pub boundary: Option<i64>,
    /// Lag samples of the last hour, oldest first (running service only).
    pub lag_history: Vec<(i64, f64)>,
    /// The consumer-group member that owns it now (client id and host).
    pub owner: Option<String>,
    /// Per `clock = "partition"` aggregate table: its window clock for this partition (ms
    /// since the epoch), as committed.
    pub window_clocks: Vec<(String, Option<i64>)>,
}

/// A windowed aggregate.
#[derive(Clone, Debug, Serialize)]
pub struct AggregateDoc {
    /// The aggregate table.
    pub table: String,
    /// The window clock committed with the table (ms since the epoch).
    pub committed_clock_ms: Option<i64>,
    /// The running clock (running service only; ahead of the committed one between commits).
    pub clock_ms: Option<i64>,
    /// The wall clock when the document was made.
    pub wall_ms: i64,
    /// Open (key, window) states (running service only).
    pub open_windows: Option<u64>,
    /// Records past their windows' grace, listed in the late table, since the service started.
    pub late_records: Option<u64>,
}

/// An upsert table's state.
#[derive(Clone, Debug, Serialize)]
pub struct ChangesDoc {
    /// Rows in the table: one per live key.
    pub keys: u64,
    /// The last flush's inserted, updated, deleted and copied rows.
    pub last_flush: Option<[u64; 4]>,
}

/// What a running service saw of a pipeline.
#[derive(Clone, Debug, Serialize)]
pub struct ActivityDoc {
    /// Records received since the service started.
    pub records_in: u64,
    /// Key and value bytes received since the service started.
    pub bytes_in: u64,
    /// Records per second over the last sample interval.
    pub records_per_s: f64,
    /// Bytes per second over the last sample interval.
    pub bytes_per_s: f64,
    /// (ms since the epoch, records/s, bytes/s) over the last hour, oldest first.
    pub rates: Vec<(i64, f64, f64)>,
    /// Rows committed per destination (events, dead_letter, late, aggregate).
    pub rows_out: BTreeMap<String, u64>,
    /// The last table commits, newest first.
    pub commits: Vec<recent::CommitEntry>,
    /// Dead letters committed since the service started, by reason.
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    /// The latest dead letters, newest first.
    pub latest_dead_letters: Vec<recent::DivertedEntry>,
    /// Late records committed since the service started, by aggregate table.
    pub late_by_table: BTreeMap<String, u64>,
    /// Records too far in the future for any window, by aggregate table.
    pub future_by_table: BTreeMap<String, u64>,
    /// The latest late records, newest first.
    pub latest_late: Vec<recent::DivertedEntry>,
}

/// A tiered topic.
#[derive(Clone, Debug, Serialize)]
pub struct TierDoc {
    /// The topic.
    pub topic: String,
    /// Its archive table.
    pub table: String,
    /// The archive table's version.
    pub version: Option<i64>,
    /// The retention interlock's alarm: the store is failing and records wait in the broker
    /// (running service only).
    pub alarm: Option<bool>,
    /// The topic's own retention may drop records before they are archived (running
    /// service only).
    pub retention_risk: Option<bool>,
    /// One bar per partition.
    pub partitions: Vec<TierPartitionDoc>,
}

/// A tiered partition: `[0, log_start)` trimmed from the broker (archived), `[log_start,
/// boundary)` in both tiers, `[boundary, end)` only in the broker (hot).
#[derive(Clone, Debug, Serialize)]
pub struct TierPartitionDoc {
    /// The partition.
    pub partition: i32,
    /// The broker's log start offset.
    pub log_start: i64,
    /// The first offset not archived (`None`: nothing archived yet).
    pub boundary: Option<i64>,
    /// The broker's end offset.
    pub end: i64,
}

/// A table of the config.
#[derive(Clone, Debug, Serialize)]
pub struct TableDoc {
    /// Its name.
    pub name: String,
    /// Its version (`None`: not created yet).
    pub version: Option<i64>,
    /// Active data files.
    pub files: u64,
    /// Their compressed bytes.
    pub bytes: u64,
    /// When the running service last compacted it.
    pub last_compaction_ms: Option<i64>,
    /// When the running service last vacuumed it.
    pub last_vacuum_ms: Option<i64>,
    /// Files its last vacuum deleted.
    pub last_vacuum_deleted: Option<u64>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Reads the document, the brokers' offsets and the consumer groups through `broker`;
/// `history` is the running service's (`None` for `sluice status`).
pub async fn collect(
    cfg: &Config,
    lake: &Lake,
    broker: &Cluster,
    history: Option<&History>,
) -> anyhow::Result<StatusDoc> {
    let live = history.is_some();
    let tiering = sluice_tiering::reader::tiering_status(cfg, lake, broker).await?;
    let boundary_of = |topic: &str, partition: i32| {
        tiering
            .iter()
            .find(|t| t.topic == topic)
            .and_then(|t| t.partitions.iter().find(|p| p.0 == partition))
            .and_then(|p| p.1)
    };
    let mut pipelines = Vec::new();
    for (p, cfg_p) in sluice_ingest::status::status(cfg, lake, broker)
        .await?
        .into_iter()
        .zip(&cfg.pipelines)
    {
        let partitions = p
            .partitions
            .iter()
            .map(|s| PartitionDoc {
                topic: s.topic.clone(),
                partition: s.partition,
                committed: s.committed,
                end: s.end,
                lag: s.lag(),
                boundary: boundary_of(&s.topic, s.partition),
                lag_history: history
                    .map(|h| h.lag(&p.name, &s.topic, s.partition))
                    .unwrap_or_default(),
                owner: s.owner.clone(),
                window_clocks: s.window_clocks.clone(),
            })
            .collect();
        let aggregates = p
            .clocks
            .iter()
            .map(|(table, clock)| aggregate_doc(&p.name, table, *clock, live))
            .collect();
        let active = (live && p.lease_until.is_some()).then(|| {
            spec::PIPELINE_ACTIVE
                .value([&p.name])
                .is_some_and(|v| v > 0.0)
        });
        pipelines.push(PipelineDoc {
            lease_until_ms: p.lease_until,
            active,
            activity: history.map(|h| activity(&cfg_p.name, h)),
            name: p.name,
            table: p.table,
            version: p.version,
            last_commit_age_s: p.last_commit_age.map(|a| a.as_secs()),
            partitions,
            aggregates,
            changes: p.changes.map(|c| ChangesDoc {
                keys: c.keys,
                last_flush: c.last_flush,
            }),
        });
    }
    let tiering = tiering
        .into_iter()
        .map(|t| TierDoc {
            alarm: live.then(|| spec::TIERING_ALARM.value([&t.topic]).unwrap_or(0.0) > 0.0),
            retention_risk: live.then(|| {
                spec::TIERING_RETENTION_RISK
                    .value([&t.topic])
                    .unwrap_or(0.0)
                    > 0.0
            }),
            partitions: t
                .partitions
                .iter()
                .map(|(partition, boundary, log_start, end)| TierPartitionDoc {
                    partition: *partition,
                    log_start: *log_start,
                    boundary: *boundary,
                    end: *end,
                })
                .collect(),
            topic: t.topic,
            table: t.table,
            version: t.version,
        })
        .collect();
    let mut tables = Vec::new();
    for name in cfg.table_names() {
        tables.push(table_doc(lake, &name).await?);
    }
    Ok(StatusDoc {
        generated_at_ms: now_ms(),
        live,
        pipelines,
        tiering,
        tables,
    })
}

fn aggregate_doc(pipeline: &str, table: &str, committed: Option<i64>, live: bool) -> AggregateDoc {
    let running = |g: &sluice_telemetry::Gauge<2>| g.value([pipeline, table]);
    AggregateDoc {
        table: table.to_string(),
        committed_clock_ms: committed,
        clock_ms: running(&spec::WINDOW_CLOCK_SECONDS).map(|s| (s * 1000.0).round() as i64),
        wall_ms: now_ms(),
        open_windows: running(&spec::OPEN_WINDOWS).map(|n| n as u64),
        late_records: live
            .then(|| spec::LATE_RECORDS.value([pipeline, table]).unwrap_or(0.0) as u64),
    }
}

async fn table_doc(lake: &Lake, name: &str) -> anyhow::Result<TableDoc> {
    let m = recent::maintenance(name);
    let (version, files, bytes) = match lake.open(name).await? {
        Some(t) => {
            let stats = sluice_compaction::file_stats(name, &t)?;
            let v = t.version().map(|v| v as i64);
            (v, stats.files as u64, stats.bytes)
        }
        None => (None, 0, 0),
    };
    Ok(TableDoc {
        name: name.to_string(),
        version,
        files,
        bytes,
        last_compaction_ms: m.compacted_at_ms,
        last_vacuum_ms: m.vacuumed_at_ms,
        last_vacuum_deleted: m.vacuumed_files,
    })
}

/// Sums of a counter's series whose first label is `pipeline`, by their second label.
fn by_second_label(series: Vec<(Vec<String>, f64)>, pipeline: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (labels, v) in series {
        if labels.first().map(String::as_str) == Some(pipeline)
            && let Some(k) = labels.get(1)
        {
            *out.entry(k.clone()).or_default() += v as u64;
        }
    }
    out
}

fn newest_first<T>(mut list: Vec<T>) -> Vec<T> {
    list.reverse();
    list
}

fn activity(pipeline: &str, history: &History) -> ActivityDoc {
    let rates = history.rates(pipeline);
    let (records_per_s, bytes_per_s) = rates.last().map_or((0.0, 0.0), |r| (r.1, r.2));
    ActivityDoc {
        records_in: spec::RECORDS_IN.value([pipeline]).unwrap_or(0.0) as u64,
        bytes_in: spec::BYTES_IN.value([pipeline]).unwrap_or(0.0) as u64,
        records_per_s,
        bytes_per_s,
        rates,
        rows_out: by_second_label(spec::ROWS_OUT.series(), pipeline),
        commits: newest_first(recent::commits(pipeline)),
        dead_letters_by_reason: by_second_label(spec::DEAD_LETTERS.series(), pipeline),
        latest_dead_letters: newest_first(recent::dead_letters(pipeline)),
        late_by_table: by_second_label(spec::LATE_RECORDS.series(), pipeline),
        future_by_table: by_second_label(spec::FUTURE_RECORDS.series(), pipeline),
        latest_late: newest_first(recent::late_records(pipeline)),
    }
}
