//! The commands of the `sluice` binary, one module each, and what they share: loading the
//! config, logging, the runtime, signals.

pub mod backfill;
pub mod compact;
pub mod demo;
pub mod log;
pub mod query;
pub mod run;
pub mod status;
pub mod tier;
pub mod vacuum;
pub mod validate;

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use sluice_config::{Config, LogFormat};

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Try sluice with no external service: an in-process Kafka, generated clicks, a local lake.
    Demo(demo::Args),
    /// Check a config file and list every problem with its key.
    Validate(validate::Args),
    /// Run every pipeline of the config until SIGTERM or SIGINT.
    Run(run::Args),
    /// Run SQL over every table of the config (by name).
    Query(query::Args),
    /// Show each pipeline's committed offsets, end offsets, lag, last commit and window clocks.
    Status(status::Args),
    /// Rewrite small files into files of `maintenance.target_file_size` (all tables, or --table).
    Compact(compact::Args),
    /// Archive the cold records of the tiered topics, then delete them from the brokers
    /// (keeping the hot window). Runs every `interval` until SIGTERM, or once with --once.
    Tier(tier::Args),
    /// Run a pipeline over the unified log (archive, then broker) into separate tables.
    Backfill(backfill::Args),
    /// Delete files no longer referenced by a table (and orphans) older than the retention.
    Vacuum(vacuum::Args),
    /// Read a topic as one log across the archive table and the broker.
    Log(log::Args),
}

/// Runs `command`.
pub fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Demo(a) => demo::main(a),
        Command::Validate(a) => validate::main(a),
        Command::Run(a) => run::main(a),
        Command::Query(a) => query::main(a),
        Command::Status(a) => status::main(a),
        Command::Compact(a) => compact::main(a),
        Command::Tier(a) => tier::main(a),
        Command::Backfill(a) => backfill::main(a),
        Command::Vacuum(a) => vacuum::main(a),
        Command::Log(a) => log::main(a),
    }
}

/// Loads the config, sets up logging and a runtime, runs `f`, and maps errors to exit codes.
pub fn with_config<F, Fut>(path: &std::path::Path, f: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(cfg.server.log_format);
    block_on(f(cfg))
}

/// Runs `fut` on a multi-threaded runtime; an error becomes one message and a failing exit code.
pub fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    // Threads numbered in the order they start ("sluice-rt-N"), so a thread count that climbs
    // over a long run shows whether the blocking pool churns (bench/memory-probe.sh).
    let started = std::sync::atomic::AtomicUsize::new(0);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // File I/O and Delta log replay run on the blocking pool; a checkpoint starts a burst
        // of them. Idle threads leave after a second instead of tokio's ten, so the threads of
        // a burst do not stay for the whole run, each holding a stack and an allocator cache
        // (bench/README.md, "Memory over a long run").
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .thread_name_fn(move || {
            let n = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("sluice-rt-{n}")
        })
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(fut);
    if let Err(e) = outcome {
        eprintln!("sluice: {}", error_chain(&e));
        // Everything that could be committed was; tearing the runtime down under tasks still
        // in flight (a Delta log read on a blocking thread) would only add noise to the exit.
        std::process::exit(1);
    }
    // A blocking task stuck in a C library (a consumer that cannot leave its group) must not
    // keep the process from exiting once the work is done.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    ExitCode::SUCCESS
}

/// An error and its causes on one line, leaving out a cause whose text the message before it
/// already holds (library errors often print their source themselves).
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Logs to stderr, as text or JSON lines, filtered by `SLUICE_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The Delta and query libraries log every snapshot load at info, and the Delta kernel logs
    // at error what sluice reports itself (with the table): keep them quiet.
    let filter = [
        ("deltalake", "warn"),
        ("deltalake_core", "warn"),
        ("buoyant_kernel", "off"),
        ("buoyant_kernel_engine", "off"),
        ("datafusion", "warn"),
    ]
    .iter()
    .filter_map(|(m, level)| format!("{m}={level}").parse().ok())
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

/// Waits until `deadline`, or forever without one.
pub async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
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
