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
use std::time::Instant;

use anyhow::Context;
use cap::Cap;
use clap::Parser;
use serde_json::{Value, json};
use sluice_lake::deltalake::DeltaTable;
use sluice_lake::deltalake::arrow::record_batch::RecordBatch;
use sluice_lake::deltalake::writer::{DeltaWriter, RecordBatchWriter};
use sluice_lake::{Lake, TableSpec, TableWriter, WriterOptions};

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

/// Generated events, decoded into the events table's schema once per commit.
struct Events {
    decoder: sluice_formats::JsonDecoder,
    rows: usize,
}

impl Events {
    fn new(rows: usize) -> anyhow::Result<Self> {
        let cfg = sluice_bench::pipeline_config()?;
        let p = &cfg.pipelines[0];
        let decoder = sluice_formats::JsonDecoder::new(p, sluice_formats::schema::events_schema(p))
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(Self { decoder, rows })
    }

    /// The events of commit `i`.
    fn batch(&self, i: u64) -> anyhow::Result<RecordBatch> {
        let raw = sluice_bench::raw_batch(self.rows, i * self.rows as u64);
        self.decoder
            .decode(&raw)
            .map_err(|e| anyhow::anyhow!(e))?
            .events
            .context("no events decoded")
    }
}

/// Live heap above its level when the measurement started, sampled as commits go by.
struct Growth {
    baseline: usize,
    started: Instant,
    samples: serde_json::Map<String, Value>,
}

impl Growth {
    fn start() -> Self {
        Self {
            baseline: ALLOCATOR.allocated(),
            started: Instant::now(),
            samples: serde_json::Map::new(),
        }
    }

    fn grown(&self) -> usize {
        ALLOCATOR.allocated().saturating_sub(self.baseline)
    }

    fn sample(&mut self, commits: u64) {
        let grown = mib(self.grown());
        self.samples
            .insert(format!("after_{commits:05}_commits_mb"), json!(grown));
    }

    fn finish(self, commits: u64) -> Value {
        let grown = self.grown();
        json!({
            "heap_growth_mb": mib(grown),
            "heap_growth_per_commit_kb": grown as f64 / 1024.0 / commits as f64,
            "seconds": self.started.elapsed().as_secs_f64(),
            "samples": self.samples,
        })
    }
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
    let schema = sluice_formats::schema::events_schema(p);
    let table = lake.open_or_create("events", &schema, &spec).await?;
    Ok((lake, table))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    std::fs::create_dir_all(&cli.out)?;

    let events = Events::new(cli.rows)?;
    let rows = cli.rows as i64;

    // sluice's writer. The first commit's one-off allocations are not counted.
    let dir = tempfile::tempdir()?;
    let (lake, table) = new_table(&cli, dir.path()).await?;
    let mut writer = TableWriter::new("events", table, WriterOptions::default())?;
    let mut growth = None;
    for i in 0..=cli.commits {
        writer.write(events.batch(i)?).await?;
        writer
            .commit(&[("p0".into(), (i as i64 + 1) * rows)], HashMap::new())
            .await?;
        let g = growth.get_or_insert_with(Growth::start);
        if i > 0 && i % cli.every == 0 {
            g.sample(i);
        }
    }
    let sluice = growth.context("no commits")?.finish(cli.commits);
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
    let (_lake, mut table) = new_table(&cli, dir.path()).await?;
    let mut growth = None;
    for i in 0..=cli.commits {
        let mut w = RecordBatchWriter::for_table(&table)?;
        w.write(events.batch(i)?).await?;
        w.flush_and_commit(&mut table).await?;
        let g = growth.get_or_insert_with(Growth::start);
        if i > 0 && i % cli.every == 0 {
            g.sample(i);
        }
    }
    let delta_rs = growth.context("no commits")?.finish(cli.commits);

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
