//! The `sluice` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_config::{Config, LogFormat};
use tokio_util::sync::CancellationToken;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
        Command::Run {
            config,
            until_caught_up,
        } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(cfg.server.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("sluice: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(cfg, until_caught_up)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("sluice: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The Delta and query libraries log every snapshot load at info: keep them quiet.
    let filter = [
        "deltalake",
        "deltalake_core",
        "buoyant_kernel",
        "buoyant_kernel_engine",
        "datafusion",
    ]
    .iter()
    .filter_map(|m| format!("{m}=warn").parse().ok())
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

async fn run(cfg: Config, until_caught_up: bool) -> anyhow::Result<()> {
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
        let name = p.name.clone();
        let token = cancel.child_token();
        tasks.spawn(async move { (name, pipeline.run(opts, token).await) });
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
                    tracing::info!(pipeline = %name, records = summary.records, events = summary.events, dead_letters = summary.dead_letters, commits = summary.commits, "pipeline finished");
                }
                Some(Ok((name, Err(e)))) => {
                    tracing::error!(pipeline = %name, "pipeline failed: {e}");
                    if first_error.is_none() {
                        first_error = Some(anyhow::anyhow!("pipeline {name}: {e}"));
                        cancel.cancel();
                        deadline.get_or_insert(tokio::time::Instant::now() + shutdown_timeout);
                    }
                }
                Some(Err(e)) => {
                    first_error.get_or_insert(anyhow::anyhow!("a pipeline task panicked: {e}"));
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
