//! `sluice tier`: archives the cold records of the tiered topics, then deletes them from the brokers.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use sluice_config::Config;
use tokio_util::sync::CancellationToken;

use super::shutdown_signal;
use super::with_config;

/// The arguments of `sluice tier`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// One round per topic, then exit.
    #[arg(long)]
    pub once: bool,
    /// Only these topics (default: every [[tiering]] topic).
    #[arg(long)]
    pub topic: Vec<String>,
}

/// Runs the command.
pub fn main(args: Args) -> ExitCode {
    let Args {
        config,
        once,
        topic,
    } = args;
    with_config(&config, |cfg| async move {
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
    })
}

/// Tiers one topic until cancelled (or for one round with `once`). Opening is retried while
/// the store or broker is unreachable, with the alarm raised; a topic that cannot be tiered
/// at all (compacted, missing) is an error.
pub async fn tiering_task(
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
    sluice_telemetry::health::mark_ready(&sluice_telemetry::health::tiering_component(&t.topic));
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
