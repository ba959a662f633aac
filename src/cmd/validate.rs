//! `sluice validate`: checks a config file and lists every problem with its key.

use std::path::PathBuf;
use std::process::ExitCode;

use sluice_config::Config;

/// The arguments of `sluice validate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file.
    #[arg(long, short)]
    pub config: PathBuf,
}

/// Runs the command.
pub fn main(args: Args) -> ExitCode {
    match Config::load(&args.config) {
        Ok(c) => {
            println!(
                "{}: ok ({} pipeline(s), {} tiered topic(s), tables: {})",
                args.config.display(),
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
    }
}
