//! `sluice status`: each pipeline's committed offsets, end offsets, lag, last commit, window
//! clocks and (upsert mode) keys and last flush, each tiered topic's boundaries, and each
//! table's version, files and bytes. `--json` prints the document `GET /api/status` serves
//! (without the parts only a running service knows).

use std::path::PathBuf;
use std::process::ExitCode;

use super::with_config;
use crate::console::StatusDoc;

/// The arguments of `sluice status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Print the status document as JSON (the shape of `GET /api/status`).
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn main(args: Args) -> ExitCode {
    let Args { config, json } = args;
    with_config(&config, |cfg| async move {
        let lake = sluice_lake::Lake::new(&cfg.lake)?;
        let broker = sluice_kafka::Cluster::new(&(&cfg.kafka).into(), "status")?;
        let doc = crate::console::collect(&cfg, &lake, &broker, None).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            print_text(&doc);
        }
        Ok(())
    })
}

fn time_text(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or("not started".to_string(), |d| d.to_rfc3339())
}

fn or_dash(v: Option<i64>) -> String {
    v.map_or("-".to_string(), |v| v.to_string())
}

fn print_text(doc: &StatusDoc) {
    for p in &doc.pipelines {
        let age = p
            .last_commit_age_s
            .map_or("never".to_string(), |a| format!("{a}s ago"));
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
        for a in &p.aggregates {
            println!(
                "  window clock of {}: {}",
                a.table,
                time_text(a.committed_clock_ms)
            );
        }
        match p.lease_until_ms {
            Some(0) => println!("  windows lease: released (the next instance to start takes it)"),
            Some(t) => println!("  windows lease: held until {}", time_text(Some(t))),
            None => {}
        }
        println!(
            "  {:<40} {:>9} {:>12} {:>12} {:>10} {:>12}  owner",
            "topic", "partition", "committed", "end", "lag", "boundary"
        );
        for s in &p.partitions {
            println!(
                "  {:<40} {:>9} {:>12} {:>12} {:>10} {:>12}  {}",
                s.topic,
                s.partition,
                or_dash(s.committed),
                s.end,
                s.lag,
                or_dash(s.boundary),
                s.owner.as_deref().unwrap_or("-")
            );
            for (table, clock) in &s.window_clocks {
                println!("      window clock of {table}: {}", time_text(*clock));
            }
        }
    }
    for t in &doc.tiering {
        let version = t.version.map_or("none".to_string(), |v| v.to_string());
        println!(
            "tiering {} -> table {} (version {version})",
            t.topic, t.table
        );
        println!(
            "  {:>9} {:>12} {:>12} {:>12} {:>12}",
            "partition", "boundary", "log start", "end", "not archived"
        );
        for p in &t.partitions {
            let backlog = p.end - p.boundary.unwrap_or(p.log_start).max(p.log_start);
            println!(
                "  {:>9} {:>12} {:>12} {:>12} {:>12}",
                p.partition,
                or_dash(p.boundary),
                p.log_start,
                p.end,
                backlog
            );
        }
    }
    println!(
        "tables\n  {:<40} {:>9} {:>9} {:>14}",
        "table", "version", "files", "bytes"
    );
    for t in &doc.tables {
        println!(
            "  {:<40} {:>9} {:>9} {:>14}",
            t.name,
            or_dash(t.version),
            t.files,
            t.bytes
        );
    }
}
