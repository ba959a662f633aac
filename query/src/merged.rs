//! The merged view of an aggregate with per-partition windows (`clock = "partition"`,
//! docs/windows.md "Windows across instances"): `<table>_merged`, one row per (group key,
//! window) out of the per-partition rows, for the windows every partition's clock has passed.

use sluice_config::{AggregateConfig, AggregateFunction, PipelineConfig, WindowClock};
use sluice_lake::deltalake::DeltaTable;
use sluice_lake::{partition_clock_app_id, progress_app_id};

use crate::Result;

/// The name of the merged view of aggregate table `table`.
pub fn view_name(table: &str) -> String {
    format!("{table}_merged")
}

/// How far partitions are probed for progress (partitions of a topic are numbered densely).
const MAX_PARTITIONS: i32 = 100_000;

/// The line (µs since the epoch) below which every window is final in the merged view: the
/// lowest clock over the partitions that have one, minus the grace. `None` when no partition
/// has a clock yet. A partition with progress but no clock has had no record: it does not
/// hold the line (as an idle partition does not hold the topic clock).
pub async fn final_line(
    pipeline: &PipelineConfig,
    agg: &AggregateConfig,
    table: &DeltaTable,
) -> Result<Option<i64>> {
    let name = agg.table.as_str();
    let mut min: Option<i64> = None;
    for topic in &pipeline.topics {
        for p in 0..MAX_PARTITIONS {
            let progress = progress_app_id(&pipeline.name, topic, p);
            if sluice_lake::committed_progress(name, table, &progress)
                .await?
                .is_none()
            {
                break;
            }
            let clock_app = partition_clock_app_id(&pipeline.name, topic, p);
            if let Some(c) = sluice_lake::committed_progress(name, table, &clock_app).await? {
                min = Some(min.map_or(c, |m: i64| m.min(c)));
            }
        }
    }
    Ok(min.map(|c| (c - agg.grace.as_millis_i64()).saturating_mul(1000)))
}

/// The `SELECT` of the merged view of `agg` (per-partition windows), keeping the windows whose
/// end is at or below `line_us` (`None`: none yet).
///
/// Per (group key, window): `count` and `sum` add up, `min` and `max` take the extreme,
/// `avg` is weighted by each partition's count of non-null inputs, `count_distinct` is kept
/// when one partition holds the window and null when several do (distinct sets cannot be
/// merged from counts), `record_count` adds up, `max_event_time` takes the latest, and
/// `partitions` counts the partitions that had records in the window.
pub fn view_sql(agg: &AggregateConfig, line_us: Option<i64>) -> String {
    let q = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
    let keys: Vec<String> = agg.group_by.iter().map(|g| q(g)).collect();
    let mut select: Vec<String> = keys.clone();
    select.push("window_start".into());
    select.push("window_end".into());
    for a in &agg.aggregates {
        let c = q(&a.alias);
        select.push(match a.function {
            AggregateFunction::Count | AggregateFunction::Sum => format!("sum({c}) AS {c}"),
            AggregateFunction::Min => format!("min({c}) AS {c}"),
            AggregateFunction::Max => format!("max({c}) AS {c}"),
            AggregateFunction::Avg => {
                let w = q(&a.weight_column());
                format!("sum({c} * {w}) / CAST(nullif(sum({w}), 0) AS DOUBLE) AS {c}")
            }
            AggregateFunction::CountDistinct => {
                format!("CASE WHEN count(*) = 1 THEN max({c}) END AS {c}")
            }
        });
    }
    select.push("sum(record_count) AS record_count".into());
    select.push("max(max_event_time) AS max_event_time".into());
    select.push("count(*) AS partitions".into());
    let filter = match line_us {
        Some(line) => format!("arrow_cast(window_end, 'Int64') <= {line}"),
        None => "false".into(),
    };
    let mut group = keys;
    group.push("window_start".into());
    group.push("window_end".into());
    format!(
        "SELECT {} FROM {} WHERE {filter} GROUP BY {}",
        select.join(", "),
        q(&agg.table),
        group.join(", ")
    )
}

/// The aggregates of `config` with per-partition windows, with their pipelines.
pub fn partition_aggregates(
    config: &sluice_config::Config,
) -> impl Iterator<Item = (&PipelineConfig, &AggregateConfig)> {
    config.pipelines.iter().flat_map(|p| {
        p.aggregates
            .iter()
            .filter(|a| a.clock == WindowClock::Partition)
            .map(move |a| (p, a))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_merges_each_function_and_keeps_only_final_windows() {
        let agg = AggregateConfig {
            table: "t".into(),
            window: sluice_config::WindowKind::Tumbling {
                size: 60_000,
                offset: 0,
            },
            grace: Default::default(),
            group_by: vec!["k".into()],
            aggregates: [
                "count(*) AS n",
                "avg(v) AS m",
                "count_distinct(u) AS d",
                "min(v) AS lo",
            ]
            .iter()
            .map(|a| sluice_config::AggregateSpec::parse(a).unwrap())
            .collect(),
            late_table: None,
            clock: WindowClock::Partition,
        };
        let sql = view_sql(&agg, Some(123));
        assert!(sql.contains(r#"sum("n") AS "n""#), "{sql}");
        assert!(
            sql.contains(r#"sum("m" * "_n_m") / CAST(nullif(sum("_n_m"), 0) AS DOUBLE) AS "m""#),
            "{sql}"
        );
        assert!(
            sql.contains(r#"CASE WHEN count(*) = 1 THEN max("d") END AS "d""#),
            "{sql}"
        );
        assert!(sql.contains(r#"min("lo") AS "lo""#), "{sql}");
        assert!(
            sql.contains("arrow_cast(window_end, 'Int64') <= 123"),
            "{sql}"
        );
        assert!(
            sql.ends_with(r#"GROUP BY "k", window_start, window_end"#),
            "{sql}"
        );
        assert!(view_sql(&agg, None).contains("WHERE false"));
    }
}
