//! `snapshot-memory`: the heap a Delta writer holds for its table's snapshot over many
//! commits, for sluice's `TableWriter` (which reloads the snapshot at each checkpoint) and for
//! delta-rs's own `RecordBatchWriter::flush_and_commit` (which moves it forward commit by
//! commit), beside what the same table takes loaded afresh. No broker needed: each commit is
//! one file of generated events decoded into the events table's schema. Live heap is counted
//! by a counting global allocator over the system allocator (this binary only).
//!
//! ```sh
//! cargo run --release -p sluice-bench --bin snapshot-memory -- --commits 600 --out bench/results
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use cap::Cap;
use clap::Parser;
use serde_json::{Value, json};
use sluice_lake::deltalake::DeltaTable;
use sluice_lake::deltalake::arrow::record_batch::RecordBatch;
use sluice_lake::deltalake::writer::{DeltaWriter, RecordBatchWriter};
use sluice_lake::{Lake, TableSpec, TableWriter, WriterOptions};
use tokio::sync::Mutex;

#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

#[derive(Parser)]
#[command(
    name = "snapshot-memory",
    about = "heap held by a Delta writer's snapshot over many commits"
)]
struct Cli {
    /// Commits per writer.
    #[arg(long, default_value_t = 600)]
    commits: u64,
    /// Events per commit (one file each).
    #[arg(long, default_value_t = 1000)]
    rows: usize,
    /// The table's `delta.checkpointInterval` (sluice's default is 10).
    #[arg(long, default_value_t = 10)]
    checkpoint_interval: u64,
    /// Live heap is sampled every this many commits.
    #[arg(long, default_value_t = 100)]
    every: u64,
    /// Where results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Generated events decoded into the events table's schema.
fn events(rows: usize, start: u64) -> anyhow::Result<RecordBatch> {
    let cfg = sluice_bench::pipeline_config()?;
    let p = &cfg.pipelines[0];
    let decoder =
        sluice_ingest::decode::JsonDecoder::new(p, sluice_ingest::schema::events_schema(p))
            .map_err(|e| anyhow::anyhow!(e))?;
    decoder
        .decode(&sluice_bench::raw_batch(rows, start))
        .map_err(|e| anyhow::anyhow!(e))?
        .events
        .context("no events decoded")
}

async fn new_table(cli: &Cli, dir: &std::path::Path) -> anyhow::Result<(Lake, DeltaTable)> {
    let cfg = sluice_bench::pipeline_config()?;
    let p = &cfg.pipelines[0];
    let lake = Lake::new(&sluice_config::LakeConfig {
        root: dir.display().to_string(),
        ..Default::default()
    })?;
    let spec = TableSpec {
        partition_columns: p.partition_by.clone(),
        properties: HashMap::from([(
            "delta.checkpointInterval".to_string(),
            cli.checkpoint_interval.to_string(),
        )]),
        description: None,
    };
    let schema = sluice_ingest::schema::events_schema(p);
    let table = lake.open_or_create("events", &schema, &spec).await?;
    Ok((lake, table))
}

/// Commits `cli.commits` files through `commit_one` and samples the live heap above its level
/// after a first commit.
async fn run<F, Fut>(cli: &Cli, mut commit_one: F) -> anyhow::Result<Value>
where
    F: FnMut(RecordBatch, u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    commit_one(events(cli.rows, 0)?, 0).await?;
    let baseline = ALLOCATOR.allocated();
    let started = Instant::now();
    let mut samples = serde_json::Map::new();
    for i in 1..=cli.commits {
        let batch = events(cli.rows, i * cli.rows as u64)?;
        commit_one(batch, i).await?;
        if i % cli.every == 0 {
            let grown = ALLOCATOR.allocated().saturating_sub(baseline);
            samples.insert(format!("after_{i:05}_commits_mb"), json!(mib(grown)));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let grown = ALLOCATOR.allocated().saturating_sub(baseline);
    Ok(json!({
        "heap_growth_mb": mib(grown),
        "heap_growth_per_commit_kb": grown as f64 / 1024.0 / cli.commits as f64,
        "seconds": seconds,
        "samples": samples,
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    std::fs::create_dir_all(&cli.out)?;

    // sluice's writer.
    let dir = tempfile::tempdir()?;
    let (lake, table) = new_table(&cli, dir.path()).await?;
    let writer = Arc::new(Mutex::new(TableWriter::new(
        "events",
        table,
        WriterOptions::default(),
    )?));
    let rows = cli.rows as i64;
    let sluice = run(&cli, |batch, i| {
        let writer = writer.clone();
        async move {
            let mut w = writer.lock().await;
            w.write(batch).await?;
            w.commit(&[("p0".into(), (i as i64 + 1) * rows)], HashMap::new())
                .await?;
            Ok(())
        }
    })
    .await?;
    drop(writer);
    let before = ALLOCATOR.allocated();
    let fresh = lake.open("events").await?.context("no table")?;
    let fresh_mb = mib(ALLOCATOR.allocated().saturating_sub(before));
    let files = fresh.snapshot()?.log_data().num_files();
    drop(fresh);
    drop(lake);
    drop(dir);

    // delta-rs's own writer, on a table of its own.
    let dir = tempfile::tempdir()?;
    let (_lake, table) = new_table(&cli, dir.path()).await?;
    let state = Arc::new(Mutex::new(table));
    let delta_rs = run(&cli, |batch, _| {
        let state = state.clone();
        async move {
            let mut table = state.lock().await;
            let mut w = RecordBatchWriter::for_table(&table)?;
            w.write(batch).await?;
            w.flush_and_commit(&mut table).await?;
            Ok(())
        }
    })
    .await?;

    let results = json!({
        "commits": cli.commits,
        "rows_per_commit": cli.rows,
        "checkpoint_interval": cli.checkpoint_interval,
        "files_at_end": files,
        "fresh_load_mb": fresh_mb,
        "sluice_table_writer": sluice,
        "delta_rs_flush_and_commit": delta_rs,
    });
    let me = std::env::current_exe().unwrap_or_default();
    sluice_bench::write_results(&cli.out, "snapshot-memory", &command, &me, results)
}
