//! `sluice query`: SQL over every table of the config, by name, and every topic across both tiers.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::with_config;
use crate::repl;

/// The arguments of `sluice query`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The SQL statement; without one, an interactive prompt (or the statements on stdin).
    pub sql: Option<String>,
    /// Output: table, csv, json (one object per line) or parquet (needs --output).
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Write the result to this file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Read the table named by --table as of this version (a version belongs to one table;
    /// the other tables are read at their latest).
    #[arg(long, requires = "table", conflicts_with = "at_time")]
    pub at_version: Option<i64>,
    /// The table --at-version applies to.
    #[arg(long, requires = "at_version")]
    pub table: Option<String>,
    /// Read every table as of this time (RFC 3339).
    #[arg(long)]
    pub at_time: Option<String>,
}

/// Runs the command.
pub fn main(args: Args) -> ExitCode {
    let Args {
        config,
        sql,
        format,
        output,
        at_version,
        table,
        at_time,
    } = args;
    with_config(&config, |cfg| async move {
        let lake = sluice_lake::Lake::new(&cfg.lake)?;
        let as_of = match (at_version.zip(table), at_time) {
            (Some((version, table)), _) => sluice_query::AsOf::TableVersion { table, version },
            (None, Some(t)) => sluice_query::AsOf::Time(
                chrono::DateTime::parse_from_rfc3339(&t)
                    .map_err(|e| anyhow::anyhow!("--at-time {t:?}: {e}; use RFC 3339"))?
                    .timestamp_millis(),
            ),
            (None, None) => sluice_query::AsOf::Latest,
        };
        let session = sluice_query::QuerySession::for_config(&cfg, &lake, as_of).await?;
        let Some(sql) = sql else {
            let failed = repl::run(&session, &format).await?;
            if failed > 0 {
                anyhow::bail!("{failed} statement(s) failed");
            }
            return Ok(());
        };
        let batches = session.sql(&sql).await?;
        write_output(&batches, &format, output.as_deref())
    })
}

/// Writes query results as a table, CSV, JSON lines or Parquet, to `output` or stdout.
pub fn write_output(
    batches: &[sluice_lake::deltalake::arrow::record_batch::RecordBatch],
    format: &str,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use sluice_lake::deltalake::arrow;
    let mut sink: Box<dyn std::io::Write> = match output {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    match format {
        "table" => writeln!(
            sink,
            "{}",
            arrow::util::pretty::pretty_format_batches(batches)?
        )?,
        "csv" => {
            let mut w = arrow::csv::Writer::new(&mut sink);
            for b in batches {
                w.write(b)?;
            }
        }
        "json" => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut sink);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        "parquet" => {
            let path = output.context("--format parquet needs --output FILE")?;
            let schema = batches
                .first()
                .map(|b| b.schema())
                .context("the query returned no batches")?;
            let file = std::fs::File::create(path)?;
            let mut w =
                sluice_lake::deltalake::parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
        other => anyhow::bail!("unknown --format {other:?}; use table, csv, json or parquet"),
    }
    Ok(())
}
