//! The `sluice` command line: parses the arguments and hands them to their command, one module
//! each under `cmd/`.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of glibc's malloc: records are allocated on the polling thread and freed
/// on the pipeline's, and glibc's per-arena locks made the two threads wait on each other.
/// It is also the `malloc` of the C libraries (librdkafka, zstd), and it is built with two
/// arenas and background threads that return freed pages after about a second
/// (`.cargo/config.toml`), so RSS follows the live heap instead of the last peak (a
/// checkpoint), as it did with mimalloc and glibc (bench/README.md). Building without the
/// default `jemalloc` feature keeps glibc's malloc, for heap profilers such as heaptrack.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod cmd;
mod console;
mod demo;
mod memory;
mod repl;
mod server;

/// Streams Kafka topics into a Delta Lake exactly once.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: cmd::Command,
}

/// A transparent huge page (2 MiB) stays resident while any part of it is in use, so freed
/// heap memory inside one is not returned after a transient peak (a Delta checkpoint, a
/// compaction). With mimalloc, which asked for huge pages on its arenas, RSS at 10,000
/// events/s was about 70 MB higher with them than without
/// (bench/results/soak-diagnostics.md); the allocator now is jemalloc, but a system set to
/// `always` would do the same to it. Turned off for the process before the runtime starts.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!(
            "sluice: could not turn transparent huge pages off ({e}); memory use may be higher"
        );
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    cmd::dispatch(Cli::parse().command)
}
