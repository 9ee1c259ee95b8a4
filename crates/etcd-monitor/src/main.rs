//! The `etcd-monitor` binary: parses flags and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use etcd_monitor::cli::{
    Cli, Command, ConfigCommand, GlobalArgs, RulesCommand, RunArgs, TokenCommand,
};
use etcd_monitor::{config, lifecycle::Lifecycle, logging};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Config(ConfigCommand::Check { file })) => config_check(&cli.global, file),
        Some(Command::Token(TokenCommand::New(args))) => {
            match etcd_monitor::cli::token_new(&args) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Rules(RulesCommand::List { write_out })) => {
            match etcd_monitor::cli::rules_list(&cli.global, &write_out) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprint!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Status(args)) => etcd_monitor::status::main(&cli.global, args),
        Some(Command::Bench(args)) => etcd_monitor::bench::main(&cli.global, args),
        Some(Command::Ctl(args)) => etcd_monitor::ctl::main(&cli.global, args),
        Some(Command::Demo(args)) => with_runtime(&cli.global, None, |config, lifecycle| {
            etcd_monitor::demo::run(config, args, lifecycle)
        }),
        Some(Command::Run(run)) => with_runtime(&cli.global, Some(&run), etcd_monitor::run::run),
        None => with_runtime(&cli.global, Some(&cli.run), etcd_monitor::run::run),
    }
}

fn config_check(global: &GlobalArgs, file: std::path::PathBuf) -> ExitCode {
    let global = GlobalArgs {
        config: Some(file),
        log_level: global.log_level.clone(),
        log_format: global.log_format,
    };
    match etcd_monitor::cli::load_config(&global, None) {
        Ok(config) => {
            print!("{}", config::to_redacted_yaml(&config));
            match etcd_monitor::api::auth::startup_check(&config.api) {
                Ok(None) => ExitCode::SUCCESS,
                Ok(Some(warning)) => {
                    eprintln!("warning: {warning}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: `run` would refuse to start: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(errors) => {
            eprint!("{errors}");
            ExitCode::from(1)
        }
    }
}

/// Loads the configuration, installs logging, and runs `body` on a runtime.
fn with_runtime<F, Fut>(global: &GlobalArgs, run: Option<&RunArgs>, body: F) -> ExitCode
where
    F: FnOnce(config::Config, Lifecycle) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config = match etcd_monitor::cli::load_config(global, run) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = logging::init(&config.logging.level, config.logging.format) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let runtime = match etcd_monitor::cli::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(1);
        }
    };
    let lifecycle = Lifecycle::new();
    match runtime.block_on(body(config, lifecycle)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
