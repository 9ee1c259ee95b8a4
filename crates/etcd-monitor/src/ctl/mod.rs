//! `etcd-monitor ctl`: etcdctl-style operations with safety checks.

use std::process::ExitCode;

use clap::Args;

use crate::cli::{ConnArgs, GlobalArgs};

/// Flags of `ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Connection settings.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The verb and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `ctl`; returns the process exit code.
pub fn main(_global: &GlobalArgs, _args: CtlArgs) -> ExitCode {
    eprintln!("etcd-monitor ctl: not built yet");
    ExitCode::from(2)
}
