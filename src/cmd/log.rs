//! `sluice log read`: a topic's records across the archive table and the broker, in offset
//! order, so an operator can read what the brokers no longer hold.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine as _;
use sluice_kafka::RawBatch;
use sluice_tiering::{LogEnd, LogStart, UnifiedLog};
use tokio_util::sync::CancellationToken;

use super::{shutdown_signal, with_config};

/// The arguments of `sluice log`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to do with the log.
    #[command(subcommand)]
    pub action: Action,
}

/// The actions of `sluice log`.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Print records across the archive table and the broker, each partition in offset order.
    Read(ReadArgs),
}

/// How records are printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// One JSON object per line: partition, offset, timestamp, key, value, headers. Bytes
    /// that are not UTF-8 are printed as `key_base64` / `value_base64` instead.
    Json,
    /// Aligned columns for people (keys and values as text, cut at 60 characters).
    Table,
}

/// The arguments of `sluice log read`.
#[derive(clap::Args, Debug)]
pub struct ReadArgs {
    /// The config file (its Kafka settings and lake; the archive table of the topic's
    /// `[[tiering]]` entry, or `archive_<topic>`).
    #[arg(long, short)]
    pub config: PathBuf,
    /// The topic.
    #[arg(long)]
    pub topic: String,
    /// Only these partitions (repeatable; default: every partition, one after the other).
    #[arg(long)]
    pub partition: Vec<i32>,
    /// Where to start: earliest, offset:N (or N), or time:T (an RFC 3339 time: the first
    /// record at or after it).
    #[arg(long, default_value = "earliest")]
    pub from: String,
    /// Where to stop (exclusive): end (the end offset when the read starts), offset:N, time:T,
    /// or follow (keep printing new records until Ctrl-C; one partition only).
    #[arg(long, default_value = "end")]
    pub until: String,
    /// Print at most this many records.
    #[arg(long)]
    pub limit: Option<u64>,
    /// How records are printed.
    #[arg(long, value_enum, default_value_t = Output::Json)]
    pub format: Output,
}

/// Runs the command.
pub fn main(args: Args) -> ExitCode {
    let Action::Read(args) = args.action;
    let config = args.config.clone();
    with_config(&config, |cfg| async move {
        let from = LogStart::parse(&args.from).context("--from")?;
        let until = LogEnd::parse(&args.until).context("--until")?;
        let lake = sluice_lake::Lake::new(&cfg.lake)?;
        let log = UnifiedLog::new(&cfg, &lake, &args.topic)?;
        let mut partitions = if args.partition.is_empty() {
            log.partitions().await?
        } else {
            args.partition.clone()
        };
        partitions.sort_unstable();
        partitions.dedup();
        anyhow::ensure!(
            until != LogEnd::Follow || partitions.len() == 1,
            "--until follow reads one partition: add --partition N"
        );
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            token.cancel();
        });
        let mut printer = Printer::new(args.format, args.limit);
        let (mut archive, mut broker) = (0, 0);
        for p in partitions {
            if printer.done() {
                break;
            }
            let stats = read_partition(&log, p, from, until, &mut printer, &cancel).await?;
            archive += stats.from_archive;
            broker += stats.from_broker;
        }
        printer.finish()?;
        eprintln!(
            "{} record(s): {archive} read from the archive table {}, {broker} from the broker",
            printer.printed,
            log.table()
        );
        Ok(())
    })
}

/// Reads one partition through a bounded channel and prints it as it arrives.
async fn read_partition(
    log: &UnifiedLog,
    partition: i32,
    from: LogStart,
    until: LogEnd,
    printer: &mut Printer,
    cancel: &CancellationToken,
) -> anyhow::Result<sluice_tiering::reader::ReadStats> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RawBatch>(4);
    let stop = cancel.child_token();
    let read = {
        let (log, stop) = (log.clone(), stop.clone());
        tokio::spawn(async move { log.read(partition, from, until, &tx, &stop).await })
    };
    while let Some(batch) = rx.recv().await {
        if let Err(e) = printer.print(&batch) {
            stop.cancel();
            // A closed pipe (`| head`) ends the output; anything else is an error.
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(e).context("writing to stdout");
            }
            printer.closed = true;
        }
        if printer.done() {
            stop.cancel();
        }
    }
    let stats = read.await.context("the reader task")??;
    Ok(stats)
}

/// Writes records to stdout, up to a limit.
struct Printer {
    out: std::io::BufWriter<std::io::Stdout>,
    format: Output,
    limit: Option<u64>,
    printed: u64,
    closed: bool,
}

impl Printer {
    fn new(format: Output, limit: Option<u64>) -> Self {
        Self {
            out: std::io::BufWriter::new(std::io::stdout()),
            format,
            limit,
            printed: 0,
            closed: false,
        }
    }

    fn done(&self) -> bool {
        self.closed || self.limit.is_some_and(|l| self.printed >= l)
    }

    fn print(&mut self, batch: &RawBatch) -> std::io::Result<()> {
        if self.format == Output::Table && self.printed == 0 {
            writeln!(
                self.out,
                "{:>9} {:>12} {:<24} {:<20} value",
                "partition", "offset", "timestamp", "key"
            )?;
        }
        for i in 0..batch.len() {
            if self.done() {
                break;
            }
            match self.format {
                Output::Json => writeln!(self.out, "{}", json_line(batch, i))?,
                Output::Table => writeln!(self.out, "{}", table_line(batch, i))?,
            }
            self.printed += 1;
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        match self.out.flush() {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(e).context("writing to stdout")
            }
            _ => Ok(()),
        }
    }
}

fn time_text(ms: Option<i64>) -> Option<String> {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// `name: text` when the bytes are UTF-8, else `name_base64: ...`; nothing for null.
fn put_bytes(obj: &mut serde_json::Map<String, serde_json::Value>, name: &str, b: Option<&[u8]>) {
    match b.map(std::str::from_utf8) {
        None => {
            obj.insert(name.into(), serde_json::Value::Null);
        }
        Some(Ok(text)) => {
            obj.insert(name.into(), text.into());
        }
        Some(Err(_)) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(b.unwrap_or_default());
            obj.insert(format!("{name}_base64"), encoded.into());
        }
    }
}

/// Record `i` as one JSON object.
fn json_line(batch: &RawBatch, i: usize) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    obj.insert("partition".into(), batch.partitions[i].into());
    obj.insert("offset".into(), batch.offsets[i].into());
    obj.insert("timestamp".into(), time_text(batch.timestamps[i]).into());
    put_bytes(&mut obj, "key", batch.key(i));
    put_bytes(&mut obj, "value", batch.value(i));
    if let Some(h) = batch.headers.as_ref().map(|h| &h[i])
        && !h.is_empty()
    {
        let headers: Vec<serde_json::Value> = h
            .iter()
            .map(|(k, v)| {
                let mut o = serde_json::Map::new();
                o.insert("key".into(), k.clone().into());
                put_bytes(&mut o, "value", v.as_deref());
                serde_json::Value::Object(o)
            })
            .collect();
        obj.insert("headers".into(), headers.into());
    }
    serde_json::Value::Object(obj)
}

/// Record `i` as one aligned line.
fn table_line(batch: &RawBatch, i: usize) -> String {
    let text = |b: Option<&[u8]>, width: usize| -> String {
        let t = b.map_or("(null)".into(), String::from_utf8_lossy);
        let t: String = t
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if t.chars().count() > width {
            format!("{}…", t.chars().take(width - 1).collect::<String>())
        } else {
            t
        }
    };
    format!(
        "{:>9} {:>12} {:<24} {:<20} {}",
        batch.partitions[i],
        batch.offsets[i],
        time_text(batch.timestamps[i]).unwrap_or_else(|| "-".into()),
        text(batch.key(i), 20),
        text(batch.value(i), 60)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> RawBatch {
        let mut b = sluice_kafka::RawBatchBuilder::new(2, true);
        let topic: std::sync::Arc<str> = "t".into();
        b.push(
            &topic,
            0,
            5,
            Some(1_767_225_600_000),
            0,
            Some(b"k"),
            Some(b"{\"a\":1}"),
            Vec::new,
        );
        b.push(&topic, 0, 6, None, -1, None, Some(&[0xff, 0x00]), || {
            vec![("h".into(), Some(b"v".to_vec()))]
        });
        b.finish()
    }

    #[test]
    fn text_stays_text_and_other_bytes_are_base64() {
        let b = batch();
        assert_eq!(
            json_line(&b, 0).to_string(),
            r#"{"key":"k","offset":5,"partition":0,"timestamp":"2026-01-01T00:00:00.000Z","value":"{\"a\":1}"}"#
        );
        assert_eq!(
            json_line(&b, 1).to_string(),
            r#"{"headers":[{"key":"h","value":"v"}],"key":null,"offset":6,"partition":0,"timestamp":null,"value_base64":"/wA="}"#
        );
        assert!(table_line(&b, 0).contains("2026-01-01T00:00:00.000Z"));
    }
}
