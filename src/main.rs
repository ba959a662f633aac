//! The `sluice` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Streams Kafka topics into a Delta Lake exactly once.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a config file and list every problem with its key.
    Validate {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match sluice_config::Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} pipeline(s), {} tiered topic(s), tables: {})",
                    config.display(),
                    c.pipelines.len(),
                    c.tiering.len(),
                    c.table_names().join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}
