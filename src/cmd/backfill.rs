//! `sluice backfill`: runs a pipeline over the unified log (archive, then broker) into tables of its own.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::shutdown_signal;
use super::with_config;

/// The arguments of `sluice backfill`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The pipeline whose code and settings run.
    #[arg(long)]
    pub pipeline: String,
    /// Where to start: earliest, an offset (1234) or a time (2026-03-01T10:00:00Z).
    #[arg(long, default_value = "earliest")]
    pub from: String,
    /// Where to stop (exclusive): end (the end offsets now), an offset or a time.
    #[arg(long, default_value = "end")]
    pub until: String,
    /// The events table to write; the pipeline's other tables take it as a prefix.
    #[arg(long)]
    pub into: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the command.
pub fn main(args: Args) -> ExitCode {
    let Args {
        config,
        pipeline,
        from,
        until,
        into,
        quiet,
    } = args;
    with_config(&config, |cfg| async move {
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
    })
}
