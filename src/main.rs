//! The `sluice` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_config::{Config, LogFormat};
use tokio_util::sync::CancellationToken;

/// jemalloc instead of glibc's malloc: records are allocated on the polling thread and freed
/// on the pipeline's, and glibc's per-arena locks made the two threads wait on each other.
/// It is also the `malloc` of the C libraries (librdkafka, zstd), and it is built with two
/// arenas and background threads that return freed pages after about a second
/// (`.cargo/config.toml`), so RSS follows the live heap instead of the last peak (a
/// checkpoint), as it did with mimalloc and glibc (bench/README.md). Building without the
/// default `jemalloc` feature keeps glibc's malloc, for heap profilers such as heaptrack.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod demo;
mod memory;
mod repl;
mod server;

/// Streams Kafka topics into a Delta Lake exactly once.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Try sluice with no external service: an in-process Kafka, generated clicks, a local lake.
    Demo {
        /// Where to put the lake (default ./sluice-demo-lake; cleared first).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// How many clicks to generate.
        #[arg(long, default_value_t = 20_000)]
        events: u64,
    },
    /// Check a config file and list every problem with its key.
    Validate {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run every pipeline of the config until SIGTERM or SIGINT.
    Run {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Stop once every partition has committed the end offsets seen at start.
        #[arg(long)]
        until_caught_up: bool,
    },
    /// Run SQL over every table of the config (by name).
    Query {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The SQL statement; without one, an interactive prompt (or the statements on stdin).
        sql: Option<String>,
        /// Output: table, csv, json (one object per line) or parquet (needs --output).
        #[arg(long, default_value = "table")]
        format: String,
        /// Write the result to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Read the table named by --table as of this version (a version belongs to one table;
        /// the other tables are read at their latest).
        #[arg(long, requires = "table", conflicts_with = "at_time")]
        at_version: Option<i64>,
        /// The table --at-version applies to.
        #[arg(long, requires = "at_version")]
        table: Option<String>,
        /// Read every table as of this time (RFC 3339).
        #[arg(long)]
        at_time: Option<String>,
    },
    /// Show each pipeline's committed offsets, end offsets, lag, last commit and window clocks.
    Status {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Rewrite small files into files of `maintenance.target_file_size` (all tables, or --table).
    Compact {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only these tables.
        #[arg(long)]
        table: Vec<String>,
        /// Z-order the rewritten files by these columns.
        #[arg(long)]
        zorder: Vec<String>,
        /// One JSON line per table on stdout, and a failing table does not stop the others
        /// (how `sluice run` reads its maintenance child).
        #[arg(long, hide = true)]
        report_json: bool,
    },
    /// Archive the cold records of the tiered topics, then delete them from the brokers
    /// (keeping the hot window). Runs every `interval` until SIGTERM, or once with --once.
    Tier {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// One round per topic, then exit.
        #[arg(long)]
        once: bool,
        /// Only these topics (default: every [[tiering]] topic).
        #[arg(long)]
        topic: Vec<String>,
    },
    /// Run a pipeline over the unified log (archive, then broker) into separate tables.
    Backfill {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// The pipeline whose code and settings run.
        #[arg(long)]
        pipeline: String,
        /// Where to start: earliest, an offset (1234) or a time (2026-03-01T10:00:00Z).
        #[arg(long, default_value = "earliest")]
        from: String,
        /// Where to stop (exclusive): end (the end offsets now), an offset or a time.
        #[arg(long, default_value = "end")]
        until: String,
        /// The events table to write; the pipeline's other tables take it as a prefix.
        #[arg(long)]
        into: String,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Delete files no longer referenced by a table (and orphans) older than the retention.
    Vacuum {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only these tables.
        #[arg(long)]
        table: Vec<String>,
        /// Keep files younger than this (default: maintenance.vacuum_retention).
        #[arg(long)]
        retention: Option<String>,
        /// Allow a retention under 1 hour.
        #[arg(long)]
        force: bool,
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// A transparent huge page (2 MiB) stays resident while any part of it is in use, so freed
/// heap memory inside one is not returned after a transient peak (a Delta checkpoint, a
/// compaction). With mimalloc, which asked for huge pages on its arenas, RSS at 10,000
/// events/s was about 70 MB higher with them than without
/// (bench/results/soak-diagnostics.md); the allocator now is jemalloc, but a system set to
/// `always` would do the same to it. Turned off for the process before the runtime starts.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!(
            "sluice: could not turn transparent huge pages off ({e}); memory use may be higher"
        );
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { dir, events } => {
            init_logging(LogFormat::Text);
            block_on(demo::run(dir, events))
        }
        Command::Validate { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} pipeline(s), {} tiered topic(s), tables: {})",
                    config.display(),
                    c.pipelines.len(),
                    c.tiering.len(),
                    c.table_names().join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Compact {
            config,
            table,
            zorder,
            report_json: true,
        } => with_config(&config, |cfg| async move {
            maintenance_child(&cfg, &table, &zorder).await;
            Ok(())
        }),
        Command::Compact {
            config,
            table,
            zorder,
            report_json: false,
        } => with_config(&config, |cfg| async move {
            let lake = sluice_lake::Lake::new(&cfg.lake)?;
            let tables = compaction_plan(&cfg, &table, &zorder);
            let started = std::time::Instant::now();
            let (mut files_before, mut files_after, mut bytes_before, mut bytes_after) =
                (0, 0, 0, 0);
            for (i, (t, cols)) in tables.iter().enumerate() {
                eprintln!("[{}/{}] compacting {t} ...", i + 1, tables.len());
                match sluice_compaction::compact(
                    &lake,
                    t,
                    cfg.maintenance.target_file_size.bytes(),
                    cols,
                )
                .await
                {
                    Ok(r) => {
                        println!(
                            "{t}: {} files / {} bytes -> {} files / {} bytes ({} rewritten into {}, {:.1}s)",
                            r.before.files,
                            r.before.bytes,
                            r.after.files,
                            r.after.bytes,
                            r.files_removed,
                            r.files_added,
                            r.duration.as_secs_f64()
                        );
                        files_before += r.before.files;
                        files_after += r.after.files;
                        bytes_before += r.before.bytes;
                        bytes_after += r.after.bytes;
                        let expired = sluice_compaction::clean_expired_logs(&lake, t).await?;
                        if expired > 0 {
                            println!("{t}: {expired} expired log entries deleted");
                        }
                    }
                    Err(sluice_compaction::CompactionError::NoSuchTable(_)) => {
                        println!("{t}: no table yet")
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            println!(
                "total: {files_before} files / {bytes_before} bytes -> {files_after} files / {bytes_after} bytes in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }),
        Command::Query {
            config,
            sql,
            format,
            output,
            at_version,
            table,
            at_time,
        } => with_config(&config, |cfg| async move {
            let lake = sluice_lake::Lake::new(&cfg.lake)?;
            let as_of = match (at_version.zip(table), at_time) {
                (Some((version, table)), _) => sluice_query::AsOf::TableVersion { table, version },
                (None, Some(t)) => sluice_query::AsOf::Time(
                    chrono::DateTime::parse_from_rfc3339(&t)
                        .map_err(|e| anyhow::anyhow!("--at-time {t:?}: {e}; use RFC 3339"))?
                        .timestamp_millis(),
                ),
                (None, None) => sluice_query::AsOf::Latest,
            };
            let session = sluice_query::QuerySession::for_config(&cfg, &lake, as_of).await?;
            let Some(sql) = sql else {
                let failed = repl::run(&session, &format).await?;
                if failed > 0 {
                    anyhow::bail!("{failed} statement(s) failed");
                }
                return Ok(());
            };
            let batches = session.sql(&sql).await?;
            write_output(&batches, &format, output.as_deref())
        }),
        Command::Status { config } => with_config(&config, |cfg| async move {
            let lake = sluice_lake::Lake::new(&cfg.lake)?;
            let tiering = sluice_tiering::reader::tiering_status(&cfg, &lake).await?;
            let boundary_of = |topic: &str, partition: i32| -> String {
                tiering
                    .iter()
                    .find(|t| t.topic == topic)
                    .and_then(|t| t.partitions.iter().find(|p| p.0 == partition))
                    .and_then(|p| p.1)
                    .map_or("-".to_string(), |b| b.to_string())
            };
            for p in sluice_ingest::status::status(&cfg, &lake).await? {
                let age = p
                    .last_commit_age
                    .map_or("never".to_string(), |a| format!("{}s ago", a.as_secs()));
                let version = p.version.map_or("none".to_string(), |v| v.to_string());
                println!(
                    "pipeline {} -> table {} (version {version}, last commit {age})",
                    p.name, p.table
                );
                for (table, clock) in &p.clocks {
                    let c = clock
                        .and_then(chrono::DateTime::from_timestamp_millis)
                        .map_or("not started".to_string(), |d| d.to_rfc3339());
                    println!("  window clock of {table}: {c}");
                }
                println!(
                    "  {:<40} {:>9} {:>12} {:>12} {:>10} {:>12}",
                    "topic", "partition", "committed", "end", "lag", "boundary"
                );
                for s in &p.partitions {
                    let committed = s.committed.map_or("-".to_string(), |c| c.to_string());
                    println!(
                        "  {:<40} {:>9} {:>12} {:>12} {:>10} {:>12}",
                        s.topic,
                        s.partition,
                        committed,
                        s.end,
                        s.lag(),
                        boundary_of(&s.topic, s.partition)
                    );
                }
            }
            for t in &tiering {
                let version = t.version.map_or("none".to_string(), |v| v.to_string());
                println!(
                    "tiering {} -> table {} (version {version})",
                    t.topic, t.table
                );
                println!(
                    "  {:>9} {:>12} {:>12} {:>12} {:>12}",
                    "partition", "boundary", "log start", "end", "not archived"
                );
                for (p, boundary, low, high) in &t.partitions {
                    let b = boundary.map_or("-".to_string(), |b| b.to_string());
                    let backlog = high - boundary.unwrap_or(*low).max(*low);
                    println!("  {p:>9} {b:>12} {low:>12} {high:>12} {backlog:>12}");
                }
            }
            Ok(())
        }),
        Command::Vacuum {
            config,
            table,
            retention,
            force,
            dry_run,
        } => with_config(&config, |cfg| async move {
            let lake = sluice_lake::Lake::new(&cfg.lake)?;
            let retention = match retention {
                Some(r) => r
                    .parse::<sluice_config::Duration>()
                    .map_err(|e| anyhow::anyhow!("--retention: {e}"))?
                    .get(),
                None => cfg.maintenance.vacuum_retention.get(),
            };
            let tables = if table.is_empty() {
                cfg.table_names()
            } else {
                table
            };
            let mut total = 0;
            for t in &tables {
                match sluice_compaction::vacuum(&lake, t, retention, force, dry_run).await {
                    Ok(r) => {
                        total += r.files_deleted.len();
                        println!(
                            "{t}: {} file(s) {}",
                            r.files_deleted.len(),
                            if dry_run {
                                "would be deleted"
                            } else {
                                "deleted"
                            }
                        );
                    }
                    Err(sluice_compaction::CompactionError::NoSuchTable(_)) => {
                        println!("{t}: no table yet")
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            println!("total: {total} file(s)");
            Ok(())
        }),
        Command::Tier {
            config,
            once,
            topic,
        } => with_config(&config, |cfg| async move {
            let lake = sluice_lake::Lake::new(&cfg.lake)?;
            let chosen: Vec<_> = cfg
                .tiering
                .iter()
                .filter(|t| topic.is_empty() || topic.contains(&t.topic))
                .cloned()
                .collect();
            if chosen.is_empty() {
                anyhow::bail!(
                    "no [[tiering]] topic to tier (configured: {})",
                    cfg.tiering
                        .iter()
                        .map(|t| t.topic.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if once {
                for t in &chosen {
                    let mut tierer = sluice_tiering::Tierer::open(&cfg, t, &lake)
                        .await
                        .with_context(|| format!("tiering topic {}", t.topic))?;
                    let report = tierer.round().await;
                    sluice_tiering::tier::record_round(&t.topic, &report);
                    print!(
                        "{}",
                        report.with_context(|| format!("tiering topic {}", t.topic))?
                    );
                }
                return Ok(());
            }
            let cancel = CancellationToken::new();
            let mut tasks = tokio::task::JoinSet::new();
            for t in chosen {
                let (cfg, lake, token) = (cfg.clone(), lake.clone(), cancel.child_token());
                tasks.spawn(async move { tiering_task(cfg, t, lake, false, token).await });
            }
            tokio::select! {
                _ = shutdown_signal() => cancel.cancel(),
                Some(Ok(Err(e))) = tasks.join_next() => { cancel.cancel(); return Err(e); }
            }
            while let Some(r) = tasks.join_next().await {
                r.map_err(|e| anyhow::anyhow!("a tiering task panicked: {e}"))??;
            }
            Ok(())
        }),
        Command::Backfill {
            config,
            pipeline,
            from,
            until,
            into,
            quiet,
        } => with_config(&config, |cfg| async move {
            let lake = sluice_lake::Lake::new(&cfg.lake)?;
            let opts = sluice_tiering::BackfillOptions {
                pipeline,
                from: sluice_tiering::LogStart::parse(&from).context("--from")?,
                until: sluice_tiering::LogEnd::parse(&until).context("--until")?,
                into,
                progress: !quiet,
            };
            let cancel = CancellationToken::new();
            let token = cancel.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!(
                    "signal received: committing what is read and stopping (run the same backfill again to resume)"
                );
                token.cancel();
            });
            let summary = sluice_tiering::backfill(&cfg, &lake, &opts, cancel).await?;
            println!("{summary}");
            Ok(())
        }),
        Command::Run {
            config,
            until_caught_up,
        } => with_config(&config.clone(), |cfg| async move {
            run(cfg, &config, until_caught_up)
                .await
                .inspect_err(|e| tracing::error!("{}", error_chain(e)))
        }),
    }
}

fn write_output(
    batches: &[sluice_lake::deltalake::arrow::record_batch::RecordBatch],
    format: &str,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use sluice_lake::deltalake::arrow;
    let mut sink: Box<dyn std::io::Write> = match output {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    match format {
        "table" => writeln!(
            sink,
            "{}",
            arrow::util::pretty::pretty_format_batches(batches)?
        )?,
        "csv" => {
            let mut w = arrow::csv::Writer::new(&mut sink);
            for b in batches {
                w.write(b)?;
            }
        }
        "json" => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut sink);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        "parquet" => {
            let path = output.context("--format parquet needs --output FILE")?;
            let schema = batches
                .first()
                .map(|b| b.schema())
                .context("the query returned no batches")?;
            let file = std::fs::File::create(path)?;
            let mut w =
                sluice_lake::deltalake::parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
        other => anyhow::bail!("unknown --format {other:?}; use table, csv, json or parquet"),
    }
    Ok(())
}

/// Loads the config, sets up logging and a runtime, runs `f`, and maps errors to exit codes.
fn with_config<F, Fut>(path: &std::path::Path, f: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(cfg.server.log_format);
    block_on(f(cfg))
}

/// Runs `fut` on a multi-threaded runtime; an error becomes one message and a failing exit code.
fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    // Threads numbered in the order they start ("sluice-rt-N"), so a thread count that climbs
    // over a long run shows whether the blocking pool churns (bench/memory-probe.sh).
    let started = std::sync::atomic::AtomicUsize::new(0);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // File I/O and Delta log replay run on the blocking pool; a checkpoint starts a burst
        // of them. Idle threads leave after a second instead of tokio's ten, so the threads of
        // a burst do not stay for the whole run, each holding a stack and an allocator cache
        // (bench/README.md, "Memory over a long run").
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .thread_name_fn(move || {
            let n = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("sluice-rt-{n}")
        })
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, leaving out a cause whose text the message before it
/// already holds (library errors often print their source themselves).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The Delta and query libraries log every snapshot load at info, and the Delta kernel logs
    // at error what sluice reports itself (with the table): keep them quiet.
    let filter = [
        ("deltalake", "warn"),
        ("deltalake_core", "warn"),
        ("buoyant_kernel", "off"),
        ("buoyant_kernel_engine", "off"),
        ("datafusion", "warn"),
    ]
    .iter()
    .filter_map(|(m, level)| format!("{m}={level}").parse().ok())
    .fold(filter, |f, d| f.add_directive(d));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(cfg: Config, config_path: &Path, until_caught_up: bool) -> anyhow::Result<()> {
    let lake = sluice_lake::Lake::new(&cfg.lake).context("opening the lake")?;
    let cancel = CancellationToken::new();
    if !cfg.server.listen.is_empty() {
        let addr = cfg.server.listen.parse().context("server.listen")?;
        server::serve(addr, cancel.child_token()).await?;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for p in &cfg.pipelines {
        let pipeline = sluice_ingest::Pipeline::open(&cfg, p, &lake)
            .await
            .with_context(|| format!("opening the tables of pipeline {}", p.name))?;
        let opts = sluice_ingest::RunOptions { until_caught_up };
        let name = format!("pipeline {}", p.name);
        let token = cancel.child_token();
        tasks.spawn(async move {
            let pipeline_name = name.trim_start_matches("pipeline ").to_string();
            let outcome = pipeline.run(opts, token).await.map(|s| {
                tracing::info!(pipeline = %pipeline_name, records = s.records, events = s.events, dead_letters = s.dead_letters, commits = s.commits, fenced = s.fenced, conflicts = s.conflicts, "pipeline finished");
                format!(
                    "{} records, {} events, {} dead letters, {} commits",
                    s.records, s.events, s.dead_letters, s.commits
                )
            });
            (name, outcome.map_err(anyhow::Error::from))
        });
    }
    for p in &cfg.pipelines {
        sluice_ingest::metrics::register_component(&sluice_ingest::metrics::pipeline_component(
            &p.name,
        ));
    }
    for t in &cfg.tiering {
        sluice_ingest::metrics::register_component(&sluice_ingest::metrics::tiering_component(
            &t.topic,
        ));
    }
    for t in &cfg.tiering {
        let name = format!("tiering of topic {}", t.topic);
        let (c, t, l, token) = (cfg.clone(), t.clone(), lake.clone(), cancel.child_token());
        tasks.spawn(async move {
            let outcome = tiering_task(c, t, l, until_caught_up, token).await;
            (name, outcome.map(|()| "stopped".to_string()))
        });
    }
    if !cfg.maintenance.compact_interval.get().is_zero() {
        spawn_maintenance(&cfg, config_path, cancel.child_token());
    }
    let shutdown_timeout = cfg.server.shutdown_timeout.get();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut first_error: Option<anyhow::Error> = None;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = &mut signal, if deadline.is_none() => {
                tracing::info!("signal received: draining (at most {:?})", shutdown_timeout);
                cancel.cancel();
                deadline = Some(tokio::time::Instant::now() + shutdown_timeout);
            }
            _ = sleep_until(deadline) => {
                anyhow::bail!("shutdown took longer than {shutdown_timeout:?}; exiting with work uncommitted (it will be replayed)");
            }
            done = tasks.join_next() => match done {
                None => break,
                Some(Ok((name, Ok(summary)))) => {
                    tracing::debug!("{name} finished: {summary}");
                }
                Some(Ok((name, Err(e)))) => {
                    tracing::error!("{name} failed: {e:#}");
                    if first_error.is_none() {
                        first_error = Some(anyhow::anyhow!("{name}: {e:#}"));
                        cancel.cancel();
                        deadline.get_or_insert(tokio::time::Instant::now() + shutdown_timeout);
                    }
                }
                Some(Err(e)) => {
                    first_error.get_or_insert(anyhow::anyhow!("a task panicked: {e}"));
                    cancel.cancel();
                }
            },
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Tiers one topic until cancelled (or for one round with `once`). Opening is retried while
/// the store or broker is unreachable, with the alarm raised; a topic that cannot be tiered
/// at all (compacted, missing) is an error.
async fn tiering_task(
    cfg: Config,
    t: sluice_config::TieringConfig,
    lake: sluice_lake::Lake,
    once: bool,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let every = t.interval.get();
    let mut tierer = loop {
        match sluice_tiering::Tierer::open(&cfg, &t, &lake).await {
            Ok(x) => break x,
            Err(e @ sluice_tiering::TieringError::Topic { .. }) => return Err(e.into()),
            Err(e) => {
                sluice_tiering::tier::record_round(&t.topic, &Err(e));
                if once {
                    anyhow::bail!("cannot open the archive of topic {}", t.topic);
                }
                tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(every) => {}
                }
            }
        }
    };
    sluice_ingest::metrics::mark_ready(&sluice_ingest::metrics::tiering_component(&t.topic));
    if once {
        let report = tierer.round().await;
        sluice_tiering::tier::record_round(&t.topic, &report);
        let report = report?;
        tracing::info!(topic = %t.topic, archived = report.archived, deleted = report.deleted, "tiering round done");
        return Ok(());
    }
    tierer.run(token).await;
    Ok(())
}

/// Compacts every table of the config every `maintenance.compact_interval`, until cancelled.
///
/// Each round runs in a child process (`sluice compact --report-json` with the same config
/// file), so that the memory a compaction needs (it reads and rewrites whole files) goes back
/// to the system when it exits instead of staying in the long-running service; a compaction
/// that fails or crashes cannot take ingestion down. The child's log lines go to the
/// service's stderr; its per-table results update the service's metrics.
fn spawn_maintenance(cfg: &Config, config_path: &Path, token: CancellationToken) {
    let every = cfg.maintenance.compact_interval.get();
    let config_path = config_path.to_path_buf();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = interval.tick() => {
                    if let Err(e) = maintenance_round(&config_path, &token).await {
                        tracing::warn!("compaction round skipped: {e:#}");
                    }
                }
            }
        }
    });
}

/// One maintenance round in a child process; killed if the service shuts down meanwhile.
async fn maintenance_round(config_path: &Path, token: &CancellationToken) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().context("locating the sluice executable")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("compact")
        .arg("--config")
        .arg(config_path)
        .arg("--report-json")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the compaction process")?;
    let stdout = child
        .stdout
        .take()
        .context("the compaction process has no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    loop {
        tokio::select! {
            _ = token.cancelled() => {
                // Compaction commits are atomic: a killed one leaves only orphan files
                // (vacuum removes them) and its lease, which expires.
                let _ = child.kill().await;
                return Ok(());
            }
            line = lines.next_line() => match line {
                Ok(Some(line)) => record_compaction(&line),
                Ok(None) | Err(_) => break,
            },
        }
    }
    let status = child.wait().await?;
    anyhow::ensure!(
        status.success(),
        "the compaction process exited with {status}"
    );
    Ok(())
}

/// Metrics (or a warning) from one `--report-json` line.
fn record_compaction(line: &str) {
    use sluice_ingest::metrics;
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        tracing::warn!("unexpected line from the compaction process: {line}");
        return;
    };
    let table = v["table"].as_str().unwrap_or("?");
    if let Some(error) = v["error"].as_str() {
        // A compaction that loses to ingest is tried again next time.
        tracing::warn!(table, "compaction skipped: {error}");
        return;
    }
    let count = |k: &str| v[k].as_u64().unwrap_or(0);
    metrics::inc(
        "sluice_compaction_files_removed_total",
        &[("table", table)],
        count("files_removed"),
    );
    metrics::inc(
        "sluice_compaction_files_added_total",
        &[("table", table)],
        count("files_added"),
    );
    metrics::set(
        "sluice_table_files",
        &[("table", table)],
        count("files_after") as f64,
    );
}

/// The tables to compact (`only`, or every table of the config) with the columns to z-order
/// each by (`zorder`, or the table's `maintenance.zorder_by`).
fn compaction_plan(cfg: &Config, only: &[String], zorder: &[String]) -> Vec<(String, Vec<String>)> {
    let tables = if only.is_empty() {
        cfg.table_names()
    } else {
        only.to_vec()
    };
    tables
        .into_iter()
        .map(|t| {
            let cols = if zorder.is_empty() {
                cfg.maintenance
                    .zorder_by
                    .get(&t)
                    .cloned()
                    .unwrap_or_default()
            } else {
                zorder.to_vec()
            };
            (t, cols)
        })
        .collect()
}

/// `sluice compact --report-json`: every table (or `only`), one JSON line each on stdout.
async fn maintenance_child(cfg: &Config, only: &[String], zorder: &[String]) {
    let report = |v: serde_json::Value| println!("{v}");
    let lake = match sluice_lake::Lake::new(&cfg.lake) {
        Ok(l) => l,
        Err(e) => return report(serde_json::json!({ "table": "*", "error": e.to_string() })),
    };
    let target = cfg.maintenance.target_file_size.bytes();
    for (t, cols) in &compaction_plan(cfg, only, zorder) {
        let r = match sluice_compaction::compact(&lake, t, target, cols).await {
            Ok(r) => r,
            Err(sluice_compaction::CompactionError::NoSuchTable(_)) => continue,
            Err(e) => {
                report(serde_json::json!({ "table": t, "error": e.to_string() }));
                continue;
            }
        };
        let expired = match sluice_compaction::clean_expired_logs(&lake, t).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(table = %t, "expired log cleanup skipped: {e}");
                0
            }
        };
        report(serde_json::json!({
            "table": t,
            "files_before": r.before.files,
            "files_after": r.after.files,
            "files_removed": r.files_removed,
            "files_added": r.files_added,
            "bytes_before": r.before.bytes,
            "bytes_after": r.after.bytes,
            "expired_log_entries": expired,
        }));
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    let _ = Duration::ZERO;
}
