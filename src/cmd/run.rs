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
    spec::TABLE_FILES.set([table], count("files_after") as f64);
}
