//! `sluice compact`: rewrites small files into files of `maintenance.target_file_size`; with
//! `--report-json`, the maintenance child of `sluice run`.

use std::path::PathBuf;
use std::process::ExitCode;

use sluice_config::Config;

use super::with_config;

/// The arguments of `sluice compact`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Only these tables.
    #[arg(long)]
    pub table: Vec<String>,
    /// Z-order the rewritten files by these columns.
    #[arg(long)]
    pub zorder: Vec<String>,
    /// One JSON line per table on stdout, and a failing table does not stop the others
    /// (how `sluice run` reads its maintenance child).
    #[arg(long, hide = true)]
    pub report_json: bool,
}

/// Runs the command.
pub fn main(args: Args) -> ExitCode {
    let Args {
        config,
        table,
        zorder,
        report_json,
    } = args;
    if report_json {
        return with_config(&config, |cfg| async move {
            maintenance_child(&cfg, &table, &zorder).await;
            Ok(())
        });
    }
    with_config(&config, |cfg| async move {
        compact(&cfg, &table, &zorder).await
    })
}

/// Compacts every table of `cfg` (or `only`), printing what each became.
async fn compact(cfg: &Config, table: &[String], zorder: &[String]) -> anyhow::Result<()> {
    let lake = sluice_lake::Lake::new(&cfg.lake)?;
    let tables = compaction_plan(cfg, table, zorder);
    let started = std::time::Instant::now();
    let (mut files_before, mut files_after, mut bytes_before, mut bytes_after) = (0, 0, 0, 0);
    for (i, (t, cols)) in tables.iter().enumerate() {
        eprintln!("[{}/{}] compacting {t} ...", i + 1, tables.len());
        match sluice_compaction::compact(&lake, t, cfg.maintenance.target_file_size.bytes(), cols)
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
}

/// The tables to compact (`only`, or every table of the config) with the columns to z-order
/// each by (`zorder`, or the table's `maintenance.zorder_by`).
fn compaction_plan(cfg: &Config, only: &[String], zorder: &[String]) -> Vec<(String, Vec<String>)> {
    let tables = if only.is_empty() {
        // The lease tables have no files, but a commit every few seconds: maintenance deletes
        // their expired log entries.
        let leases = cfg
            .pipelines
            .iter()
            .filter(|p| {
                p.aggregates
                    .iter()
                    .any(|a| a.clock == sluice_config::WindowClock::Topic)
            })
            .map(|p| sluice_lake::lease_table(&p.name));
        cfg.table_names().into_iter().chain(leases).collect()
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
    // The service reads these lines; if it is gone (killed), end quietly instead of
    // panicking on the closed pipe.
    let report = |v: serde_json::Value| {
        use std::io::Write as _;
        if writeln!(std::io::stdout(), "{v}").is_err() {
            std::process::exit(0);
        }
    };
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
