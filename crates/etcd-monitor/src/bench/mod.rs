//! `etcd-monitor bench`: load generation, latency histograms and SLO gates.

use std::process::ExitCode;

use clap::Args;

use crate::cli::{ConnArgs, GlobalArgs};

/// Flags of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Connection settings.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The workload and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `bench`; returns the process exit code.
pub fn main(_global: &GlobalArgs, _args: BenchArgs) -> ExitCode {
    eprintln!("etcd-monitor bench: not built yet");
    ExitCode::from(2)
}
