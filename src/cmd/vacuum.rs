//! `sluice vacuum`: deletes files no longer referenced by a table (and orphans) older than the retention.

use super::with_config;
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `sluice vacuum`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Only these tables.
    #[arg(long)]
    pub table: Vec<String>,
    /// Keep files younger than this (default: maintenance.vacuum_retention).
    #[arg(long)]
    pub retention: Option<String>,
    /// Allow a retention under 1 hour.
    #[arg(long)]
    pub force: bool,
    /// List what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON line per table on stdout (what `sluice run` reads from its vacuum rounds).
    #[arg(long)]
    pub report_json: bool,
}

/// Runs the command.
pub fn main(args: Args) -> ExitCode {
    let Args {
        config,
        table,
        retention,
        force,
        dry_run,
        report_json,
    } = args;
    with_config(&config, |cfg| async move {
        let lake = sluice_lake::Lake::new(&cfg.lake)?;
        // The config's retention passed validation (at least 1 hour, or the check is off).
        let (retention, force) = match retention {
            Some(r) => (
                r.parse::<sluice_config::Duration>()
                    .map_err(|e| anyhow::anyhow!("--retention: {e}"))?
                    .get(),
                force,
            ),
            None => (
                cfg.maintenance.vacuum_retention.get(),
                force || !cfg.maintenance.vacuum_retention_check,
            ),
        };
        let tables = if table.is_empty() {
            cfg.table_names()
        } else {
            table
        };
        let mut total = 0;
        for t in &tables {
            let outcome = sluice_compaction::vacuum(&lake, t, retention, force, dry_run).await;
            if report_json {
                report(t, &outcome);
                continue;
            }
            match outcome {
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
        if !report_json {
            println!("total: {total} file(s)");
        }
        Ok(())
    })
}

/// One `--report-json` line: the table and the files deleted, or why not.
fn report(
    table: &str,
    outcome: &Result<sluice_compaction::VacuumReport, sluice_compaction::CompactionError>,
) {
    let line = match outcome {
        Ok(r) => serde_json::json!({"table": table, "files_deleted": r.files_deleted.len()}),
        Err(sluice_compaction::CompactionError::NoSuchTable(_)) => {
            serde_json::json!({"table": table, "files_deleted": 0})
        }
        Err(e) => serde_json::json!({"table": table, "error": format!("{e:#}")}),
    };
    // The service reads this line; if it is gone (killed), end quietly.
    use std::io::Write as _;
    if writeln!(std::io::stdout(), "{line}").is_err() {
        std::process::exit(0);
    }
}
