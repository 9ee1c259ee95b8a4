//! The `etcd-monitor` binary: parses flags and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

mod cmd;
use cmd::cli::{Cli, Command, ConfigCommand, GlobalArgs, RulesCommand, RunArgs, TokenCommand};
use etcd_monitor::exit::Exit;
use etcd_monitor::{config, lifecycle::Lifecycle, logging};

fn main() -> ExitCode {
    limit_malloc_arenas();
    // Flag errors exit 3 (usage), help and version 0: see `--help`.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Ok.into()
            };
        }
    };
    if cli.legacy.run_benchmark {
        // The Go original's spelling: run what it stands for, and say so.
        let argv = cli.legacy_bench_argv();
        eprintln!(
            "etcd-monitor: --run-benchmark is deprecated; running `{}`",
            argv.join(" ")
        );
        return match Cli::try_parse_from(&argv) {
            Ok(Cli {
                command: Some(Command::Bench(args)),
                global,
                ..
            }) => cmd::bench::main(&global, args),
            Ok(_) => Exit::Usage.into(),
            Err(e) => {
                let _ = e.print();
                Exit::Usage.into()
            }
        };
    }
    match cli.command {
        Some(Command::Config(ConfigCommand::Check { file })) => config_check(&cli.global, file),
        Some(Command::Token(TokenCommand::New(args))) => match cmd::cli::token_new(&args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                Exit::Failed.into()
            }
        },
        Some(Command::Rules(RulesCommand::List { write_out })) => {
            match cmd::cli::rules_list(&cli.global, &write_out) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprint!("{e}");
                    Exit::Usage.into()
                }
            }
        }
        Some(Command::Rules(RulesCommand::Export { format: _, output })) => {
            match cmd::cli::rules_export(&cli.global, output.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprint!("{e}");
                    Exit::Usage.into()
                }
            }
        }
        Some(Command::Healthcheck(args)) => cmd::healthcheck::main(&cli.global, args),
        Some(Command::Status(args)) => cmd::status::main(&cli.global, args),
        Some(Command::Bench(args)) => cmd::bench::main(&cli.global, args),
        Some(Command::Ctl(args)) => cmd::ctl::main(&cli.global, args),
        Some(Command::Demo(args)) => with_runtime(&cli.global, None, |config, lifecycle| {
            cmd::demo::run(config, args, lifecycle)
        }),
        Some(Command::Run(run)) => with_runtime(&cli.global, Some(&run), etcd_monitor::run::run),
        None => with_runtime(&cli.global, Some(&cli.run), etcd_monitor::run::run),
    }
}

/// `config check`: the effective configuration (exit 0), or its errors (exit 1:
/// the check ran and the answer is no).
fn config_check(global: &GlobalArgs, file: std::path::PathBuf) -> ExitCode {
    let global = GlobalArgs {
        config: Some(file),
        log_level: global.log_level.clone(),
        log_format: global.log_format,
    };
    match cmd::cli::load_config(&global, None) {
        Ok(config) => {
            print!("{}", config::to_redacted_yaml(&config));
            match etcd_monitor::api::auth::startup_check(&config.api) {
                Ok(None) => Exit::Ok.into(),
                Ok(Some(warning)) => {
                    eprintln!("warning: {warning}");
                    Exit::Ok.into()
                }
                Err(e) => {
                    eprintln!("error: `run` would refuse to start: {e}");
                    Exit::No.into()
                }
            }
        }
        Err(errors) => {
            eprint!("{errors}");
            Exit::No.into()
        }
    }
}

/// Loads the configuration, installs logging, and runs `body` on a runtime;
/// anything that stops the daemon from starting or running exits 3.
fn with_runtime<F, Fut>(global: &GlobalArgs, run: Option<&RunArgs>, body: F) -> ExitCode
where
    F: FnOnce(config::Config, Lifecycle) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config = match cmd::cli::load_config(global, run) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return Exit::Usage.into();
        }
    };
    if let Err(e) = logging::init(&config.logging.level, config.logging.format) {
        eprintln!("error: {e}");
        return Exit::Usage.into();
    }
    let runtime = match cmd::cli::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprint!("{e}");
            return Exit::Usage.into();
        }
    };
    let lifecycle = Lifecycle::new();
    match runtime.block_on(body(config, lifecycle)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Usage.into()
        }
    }
}

/// glibc gives each thread that allocates its own arena (up to eight per
/// core), and memory freed in one is not reused by another: for a
/// long-running daemon whose worker threads take turns that is resident
/// memory held for nothing. Two arenas measured 0.7 MiB less RSS for the
/// same work (docs/benchmarks.md, monitor footprint). `MALLOC_ARENA_MAX`
/// in the environment still decides when set.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in main, before any other thread exists;
        // mallopt only sets a glibc tunable.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
