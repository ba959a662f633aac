//! `sluice status`: each pipeline's committed offsets, end offsets, lag, last commit, window clocks and (upsert mode) keys and last flush, and each tiered topic's boundaries.

use super::with_config;
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `sluice status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file.
    #[arg(long, short)]
    pub config: PathBuf,
}

/// Runs the command.
pub fn main(args: Args) -> ExitCode {
    let Args { config } = args;
    with_config(&config, |cfg| async move {
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
            if let Some(c) = &p.changes {
                let last = c
                    .last_flush
                    .map_or("no changes yet".to_string(), |[i, u, d, k]| {
                        format!("{i} inserted, {u} updated, {d} deleted, {k} copied")
                    });
                println!("  upsert table: {} keys; last flush: {last}", c.keys);
            }
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
    })
}
