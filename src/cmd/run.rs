//! `sluice run`: every pipeline, every tiered topic and maintenance, until SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use sluice_config::Config;
use tokio_util::sync::CancellationToken;

use super::{shutdown_signal, sleep_until, with_config};
use crate::cmd::tier::tiering_task;
use crate::server;

/// The arguments of `sluice run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Stop once every partition has committed the end offsets seen at start.
    #[arg(long)]
    pub until_caught_up: bool,
}

/// Runs the command.
pub fn main(args: Args) -> ExitCode {
    let Args {
        config,
        until_caught_up,
    } = args;
    with_config(&config.clone(), |cfg| async move {
        // The first error is what the process exits with: printed once, by `block_on`.
        run(cfg, &config, until_caught_up).await
    })
}

pub async fn run(cfg: Config, config_path: &Path, until_caught_up: bool) -> anyhow::Result<()> {
    let lake = sluice_lake::Lake::new(&cfg.lake).context("opening the lake")?;
    let cancel = CancellationToken::new();
    if !cfg.server.listen.is_empty() {
        let addr = cfg.server.listen.parse().context("server.listen")?;
        let api = server::Api::new(cfg.clone(), lake.clone(), cancel.child_token());
        server::serve(addr, std::sync::Arc::new(api), cancel.child_token()).await?;
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
        sluice_telemetry::health::register_component(
            &sluice_telemetry::health::pipeline_component(&p.name),
        );
    }
    for t in &cfg.tiering {
        sluice_telemetry::health::register_component(&sluice_telemetry::health::tiering_component(
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
    spawn_maintenance(&cfg, config_path, &cancel);
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
                    if first_error.is_none() {
                        // Printed once, as the process's exit message.
                        first_error = Some(anyhow::anyhow!("{name}: {e:#}"));
                        cancel.cancel();
                        deadline.get_or_insert(tokio::time::Instant::now() + shutdown_timeout);
                    } else {
                        tracing::error!("{name} failed too: {e:#}");
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

/// A kind of maintenance round.
#[derive(Clone, Copy, Debug)]
enum Round {
    /// `sluice compact`: small files into big ones.
    Compact,
    /// `sluice vacuum`: unreferenced and orphaned files past the retention.
    Vacuum,
}

impl Round {
    fn command(self) -> &'static str {
        match self {
            Self::Compact => "compact",
            Self::Vacuum => "vacuum",
        }
    }

    fn record(self, line: &str) {
        match self {
            Self::Compact => record_compaction(line),
            Self::Vacuum => record_vacuum(line),
        }
    }
}

/// Compacts every table of the config every `maintenance.compact_interval` and vacuums them
/// every `maintenance.vacuum_interval`, until cancelled.
///
/// Each round runs in a child process (`sluice compact --report-json` or `sluice vacuum
/// --report-json` with the same config file), so that the memory a round needs (compaction
/// reads and rewrites whole files, vacuum lists every file) goes back to the system when it
/// exits instead of staying in the long-running service; a round that fails or crashes cannot
/// take ingestion down. The child's log lines go to the service's stderr; its per-table
/// results update the service's metrics. A vacuum never deletes a file the table's current
/// version references, nor one younger than the retention, so a compaction's or an ingest
/// commit's new files are safe from a vacuum running at the same time.
fn spawn_maintenance(cfg: &Config, config_path: &Path, cancel: &CancellationToken) {
    let m = &cfg.maintenance;
    for (round, every) in [
        (Round::Compact, m.compact_interval.get()),
        (Round::Vacuum, m.vacuum_interval.get()),
    ] {
        if every.is_zero() {
            continue;
        }
        let config_path = config_path.to_path_buf();
        let token = cancel.child_token();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = interval.tick() => {
                        if let Err(e) = maintenance_round(round, &config_path, &token).await {
                            tracing::warn!("{} round skipped: {e:#}", round.command());
                        }
                    }
                }
            }
        });
    }
}

/// One maintenance round in a child process; killed if the service shuts down meanwhile.
async fn maintenance_round(
    round: Round,
    config_path: &Path,
    token: &CancellationToken,
) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().context("locating the sluice executable")?;
    let what = round.command();
    let mut child = tokio::process::Command::new(exe)
        .arg(what)
        .arg("--config")
        .arg(config_path)
        .arg("--report-json")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the {what} process"))?;
    let stdout = child
        .stdout
        .take()
        .with_context(|| format!("the {what} process has no stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    loop {
        tokio::select! {
            _ = token.cancelled() => {
                // Compaction commits are atomic: a killed one leaves only orphan files
                // (vacuum removes them) and its lease, which expires. A killed vacuum has
                // deleted some of what it would have deleted.
                let _ = child.kill().await;
                return Ok(());
            }
            line = lines.next_line() => match line {
                Ok(Some(line)) => round.record(&line),
                Ok(None) | Err(_) => break,
            },
        }
    }
    let status = child.wait().await?;
    anyhow::ensure!(status.success(), "the {what} process exited with {status}");
    Ok(())
}

/// Metrics (or a warning) from one `sluice vacuum --report-json` line.
fn record_vacuum(line: &str) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        tracing::warn!("unexpected line from the vacuum process: {line}");
        return;
    };
    let table = v["table"].as_str().unwrap_or("?");
    if let Some(error) = v["error"].as_str() {
        tracing::warn!(table, "vacuum skipped: {error}");
        return;
    }
    let deleted = v["files_deleted"].as_u64().unwrap_or(0);
    sluice_telemetry::spec::VACUUM_FILES_DELETED.inc([table], deleted);
    sluice_telemetry::recent::vacuumed(table, deleted);
}

/// Metrics (or a warning) from one `--report-json` line.
fn record_compaction(line: &str) {
    use sluice_telemetry::spec;
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
    spec::COMPACTION_FILES_REMOVED.inc([table], count("files_removed"));
    spec::COMPACTION_FILES_ADDED.inc([table], count("files_added"));
    sluice_telemetry::recent::compacted(table, count("files_removed"), count("files_added"));
    spec::TABLE_FILES.set([table], count("files_after") as f64);
}
