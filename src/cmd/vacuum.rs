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
}

/// Runs the command.
pub fn main(args: Args) -> ExitCode {
    let Args {
        config,
        table,
        retention,
        force,
        dry_run,
    } = args;
    with_config(&config, |cfg| async move {
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
    })
}
