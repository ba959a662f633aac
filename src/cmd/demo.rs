//! `sluice demo`: the embedded demo (see `crate::demo`).

use std::path::PathBuf;
use std::process::ExitCode;

use sluice_config::LogFormat;

use super::{block_on, init_logging};

/// The arguments of `sluice demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to put the lake (default ./sluice-demo-lake; cleared first).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How many clicks to generate.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
}

/// Runs the command.
pub fn main(args: Args) -> ExitCode {
    init_logging(LogFormat::Text);
    block_on(crate::demo::run(args.dir, args.events))
}
