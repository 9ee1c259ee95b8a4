//! The command line: flag definitions and the layer that turns flags into
//! configuration overrides. `main.rs` only dispatches.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use etcd_monitor::config::{self, ClusterConfig, Config, LogFormat, Overrides, Source, TlsConfig};

const EXAMPLES: &str = concat!(
    "\
Examples:
  etcd-monitor demo                                   local 3-member cluster to try things on
  etcd-monitor run --config monitor.yaml              the daemon: collectors, alerts, API, dashboard
  etcd-monitor --endpoints=localhost:2379 --api-port=8080
  etcd-monitor status --endpoints 10.0.0.1:2379,10.0.0.2:2379 -w json
  etcd-monitor config check monitor.yaml              validate a configuration file
  etcd-monitor token new --name ci --role operator    a random API token and its config line

Configuration: YAML file (--config or ETCD_MONITOR_CONFIG), then ETCD_MONITOR_* variables
(ETCD_MONITOR_MONITORING__HEALTH_CHECK_INTERVAL=5s), then flags. See config.example.yaml.

",
    etcd_monitor::exit_status_help!()
);

/// Monitor, alert on, benchmark and operate etcd clusters.
#[derive(Debug, Parser)]
#[command(name = "etcd-monitor", version, about, after_help = EXAMPLES, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Options every command understands.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `run`'s flags, accepted without the subcommand too.
    #[command(flatten)]
    pub run: RunArgs,
    /// The Go original's benchmark flags.
    #[command(flatten)]
    pub legacy: LegacyBenchArgs,
}

/// The Go original's quick-start benchmark flags, kept for its users:
/// `etcd-monitor --run-benchmark --benchmark-type=write --benchmark-ops=10000`
/// runs `etcd-monitor bench put --total 10000`.
#[derive(Debug, Args)]
pub struct LegacyBenchArgs {
    /// Run one benchmark and exit (deprecated spelling of `bench put|range|mixed --total N`).
    #[arg(long)]
    pub run_benchmark: bool,
    /// With --run-benchmark: write (put), read (range) or mixed.
    #[arg(long, value_enum, default_value = "write", requires = "run_benchmark")]
    pub benchmark_type: etcd_monitor::bench::LegacyBenchmarkType,
    /// With --run-benchmark: operations in all.
    #[arg(long, default_value_t = 10_000, requires = "run_benchmark")]
    pub benchmark_ops: u64,
}

impl Cli {
    /// The `bench` command line that `--run-benchmark` stands for, global
    /// flags and `--endpoints` carried over.
    pub fn legacy_bench_argv(&self) -> Vec<String> {
        let mut argv = vec!["etcd-monitor".to_string()];
        if let Some(c) = &self.global.config {
            argv.extend(["--config".into(), c.display().to_string()]);
        }
        if let Some(l) = &self.global.log_level {
            argv.extend(["--log-level".into(), l.clone()]);
        }
        let workload = self.legacy.benchmark_type.workload().name().to_string();
        argv.extend(["bench".into(), workload]);
        argv.extend(["--total".into(), self.legacy.benchmark_ops.to_string()]);
        if !self.run.endpoints.is_empty() {
            argv.extend(["--endpoints".into(), self.run.endpoints.join(",")]);
        }
        argv
    }
}

/// Options every command understands.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (YAML).
    #[arg(long, global = true, env = "ETCD_MONITOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log level or filter: trace, debug, info, warn, error.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log line format.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the monitor daemon (the default).
    Run(RunArgs),
    /// Start a local 3-member etcd cluster and run the monitor against it.
    Demo(DemoArgs),
    /// One-shot health verdict; exit 0 healthy, 1 degraded, 2 unavailable.
    #[command(after_help = etcd_monitor::exit::HELP)]
    Status(crate::cmd::status::StatusArgs),
    /// Benchmark a cluster.
    #[command(after_help = etcd_monitor::exit::HELP)]
    Bench(crate::cmd::bench::BenchArgs),
    /// etcdctl-style operations with safety checks.
    #[command(after_help = etcd_monitor::exit::HELP)]
    Ctl(crate::cmd::ctl::CtlArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The alert rules as configured (`--config`) or by default.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Ask a running monitor's /health (or /ready): exit 0 when it answers
    /// 200, 1 otherwise (the container image's HEALTHCHECK).
    #[command(
        after_help = "Example:\n  etcd-monitor healthcheck --config /etc/etcd-monitor/config.yaml\n  etcd-monitor healthcheck --url https://monitor.example.com:8080/ready"
    )]
    Healthcheck(crate::cmd::healthcheck::HealthcheckArgs),
}

/// `rules` subcommands.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Print the rule table: name, condition in words, threshold, for,
    /// window, severity, runbook anchor (built-in rules, then custom ones).
    #[command(
        after_help = "Example:\n  etcd-monitor rules list\n  etcd-monitor rules list --config config.yaml -w json"
    )]
    List {
        /// Output: table, or json (an array of rules).
        #[arg(short = 'w', long = "write-out", default_value = "table", value_parser = ["table", "json"])]
        write_out: String,
    },
    /// Write the enabled built-in rules as a Prometheus rule file over the
    /// monitor's own etcd_monitor_* series: same names, severities,
    /// thresholds, `for` and runbook URLs, from the same configuration.
    #[command(
        after_help = "Example:\n  etcd-monitor rules export --format prometheus --config config.yaml -o etcd-monitor-rules.yaml\n  promtool check rules etcd-monitor-rules.yaml"
    )]
    Export {
        /// Rule file format.
        #[arg(long, default_value = "prometheus", value_parser = ["prometheus"])]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// The configuration `--config` names, or the defaults.
fn config_or_default(global: &GlobalArgs) -> Result<etcd_monitor::config::Config, String> {
    match &global.config {
        Some(_) => load_config(global, None).map_err(|errors| errors.to_string()),
        None => Ok(etcd_monitor::config::Config::default()),
    }
}

/// `rules export`: the rule file, and a note on what it leaves out. The
/// error is ready to print.
pub fn rules_export(global: &GlobalArgs, output: Option<&std::path::Path>) -> Result<(), String> {
    let config = config_or_default(global)?;
    let rules = etcd_monitor::alert::rules::RuleSet::from_config(&config.alerts);
    let (text, skipped) =
        etcd_monitor::alert::prometheus::rule_file(&rules, &config.monitoring.thresholds);
    if !skipped.is_empty() {
        eprintln!(
            "note: custom rules are not exported (they compare stored samples, not /metrics series): {}",
            skipped.join(", ")
        );
    }
    match output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| format!("error: cannot write {}: {e}\n", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// `rules list`: the configured rule table. The error is ready to print.
pub fn rules_list(global: &GlobalArgs, write_out: &str) -> Result<String, String> {
    let alerts = config_or_default(global)?.alerts;
    let rows = etcd_monitor::alert::rules::RuleSet::from_config(&alerts).rows();
    if write_out == "json" {
        return serde_json::to_string_pretty(&rows)
            .map(|s| s + "\n")
            .map_err(|e| format!("error: {e}\n"));
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let threshold = match r.unit {
                Some(etcd_monitor::alert::rules::Unit::None) => "-".to_string(),
                Some(unit) => unit.show(r.threshold),
                None => r.threshold.to_string(),
            };
            vec![
                r.name.clone(),
                r.severity.to_string(),
                threshold,
                r.for_.clone(),
                r.window.clone().unwrap_or_else(|| "-".into()),
                if r.enabled { "yes" } else { "no" }.into(),
                r.expression.clone(),
                r.runbook.clone().unwrap_or_default(),
            ]
        })
        .collect();
    Ok(crate::cmd::ctl::output::table(
        &[
            "NAME",
            "SEVERITY",
            "THRESHOLD",
            "FOR",
            "WINDOW",
            "ENABLED",
            "CONDITION",
            "RUNBOOK",
        ],
        &table,
    ))
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random API token and the line that grants it a role in
    /// api.auth.tokens (only its SHA-256 goes into the configuration).
    #[command(
        after_help = "Example:\n  etcd-monitor token new --name prometheus --role viewer\n  etcd-monitor token new --name ci --role operator --clusters 'staging-*'"
    )]
    New(TokenNewArgs),
}

/// Flags of `token new`.
#[derive(Debug, Args)]
pub struct TokenNewArgs {
    /// Who will hold the token (shown in the audit log).
    #[arg(long, default_value = "my-token")]
    pub name: String,
    /// The role it grants.
    #[arg(long, value_enum, default_value = "viewer")]
    pub role: etcd_monitor::config::Role,
    /// Clusters it may access (globs), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub clusters: Vec<String>,
    /// Output: text, or json (`token`, `token_sha256`, `config`).
    #[arg(short = 'w', long = "write-out", default_value = "text", value_parser = ["text", "json"])]
    pub write_out: String,
}

/// `token new`: the token, then the configuration entry. The error is
/// ready to print.
pub fn token_new(args: &TokenNewArgs) -> Result<String, String> {
    let (token, hash) = etcd_monitor::api::auth::new_token()?;
    let clusters: Vec<String> = args
        .clusters
        .iter()
        .map(|c| serde_json::Value::String(c.clone()).to_string())
        .collect();
    let entry = format!(
        "- {{ name: {}, role: {}, token_sha256: {hash}, clusters: [{}] }}",
        serde_json::Value::String(args.name.clone()),
        args.role,
        clusters.join(", ")
    );
    Ok(if args.write_out == "json" {
        format!(
            "{}\n",
            serde_json::json!({ "token": token, "token_sha256": hash, "config": entry })
        )
    } else {
        format!(
            "# The token (shown once; give it to its holder, it is not stored anywhere):\n{token}\n\
             # Add this entry under api.auth.tokens in the configuration:\n{entry}\n"
        )
    })
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate FILE: print every error with its key path (exit 1), or the
    /// effective configuration with secrets redacted (exit 0).
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

/// Flags of `run`.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Endpoints of a single cluster, comma-separated (overrides the file).
    #[arg(
        long,
        env = "ETCD_MONITOR_ENDPOINTS",
        value_delimiter = ',',
        value_name = "URLS"
    )]
    pub endpoints: Vec<String>,
    /// Port of the API and dashboard (keeps the host of api.listen).
    #[arg(long, value_name = "PORT")]
    pub api_port: Option<u16>,
    /// Address of the API and dashboard, host:port (overrides api.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

/// Flags of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of etcd members.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=7))]
    pub members: u8,
    /// Port of the API and dashboard.
    #[arg(long, value_name = "PORT")]
    pub api_port: Option<u16>,
}

/// Connection flags shared by the commands that talk to one cluster, named
/// like etcdctl's.
#[derive(Debug, Args, Default, Clone)]
pub struct ConnArgs {
    /// Endpoints, comma-separated (default: the configured cluster, else 127.0.0.1:2379).
    #[arg(long, value_delimiter = ',', value_name = "URLS")]
    pub endpoints: Vec<String>,
    /// Cluster to use from --config (default: the first).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Dial timeout, e.g. 2s.
    #[arg(long, value_parser = config::duration::parse, value_name = "DURATION")]
    pub dial_timeout: Option<Duration>,
    /// Timeout of one request, e.g. 5s.
    #[arg(long, alias = "request-timeout", value_parser = config::duration::parse, value_name = "DURATION")]
    pub command_timeout: Option<Duration>,
    /// CA bundle to verify the members' certificates.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client certificate key.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Server name to verify instead of the endpoint host.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// User name, or USER:PASSWORD as etcdctl takes it.
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub user: Option<String>,
    /// Password (prefer --password-file or ETCDCTL_PASSWORD).
    #[arg(long, env = "ETCDCTL_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// File whose first line is the password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

impl ConnArgs {
    /// The cluster to talk to: the configured one (by `--cluster`, or the
    /// first) with these flags on top, or the flags alone.
    pub fn cluster_config(&self, config: Option<&Config>) -> Result<ClusterConfig, String> {
        let mut cluster = match (config, &self.cluster) {
            (Some(c), Some(name)) => c
                .clusters
                .iter()
                .find(|x| &x.name == name)
                .cloned()
                .ok_or_else(|| {
                    let names: Vec<&str> = c.clusters.iter().map(|x| x.name.as_str()).collect();
                    format!(
                        "--cluster {name:?} is not in the configuration (clusters: {})",
                        names.join(", ")
                    )
                })?,
            (Some(c), None) => c.clusters.first().cloned().unwrap_or_default(),
            (None, Some(name)) => return Err(format!("--cluster {name:?} needs --config FILE")),
            (None, None) => ClusterConfig::default(),
        };
        if !self.endpoints.is_empty() {
            cluster.endpoints = self.endpoints.clone();
        }
        if let Some(d) = self.dial_timeout {
            cluster.dial_timeout = d;
        }
        if let Some(d) = self.command_timeout {
            cluster.request_timeout = d;
        }
        if self.cacert.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.server_name.is_some()
        {
            let tls = cluster.tls.get_or_insert_with(TlsConfig::default);
            tls.ca_file = self.cacert.clone().or(tls.ca_file.take());
            tls.cert_file = self.cert.clone().or(tls.cert_file.take());
            tls.key_file = self.key.clone().or(tls.key_file.take());
            tls.server_name = self.server_name.clone().or(tls.server_name.take());
        }
        if let Some(user) = &self.user {
            match user.split_once(':') {
                Some((u, p)) => {
                    cluster.username = Some(u.to_string());
                    cluster.password = Some(p.to_string());
                    cluster.password_file = None;
                }
                None => cluster.username = Some(user.clone()),
            }
        }
        if let Some(p) = &self.password {
            cluster.password = Some(p.clone());
            cluster.password_file = None;
        }
        if let Some(f) = &self.password_file {
            cluster.password_file = Some(f.clone());
            cluster.password = None;
        }
        let one = Config {
            clusters: vec![cluster.clone()],
            ..Config::default()
        };
        let problems: Vec<String> = one
            .problems()
            .into_iter()
            .filter(|(path, _)| path.starts_with("clusters"))
            .map(|(path, msg)| format!("{}: {msg}", path.replacen("clusters[0].", "", 1)))
            .collect();
        if problems.is_empty() {
            Ok(cluster)
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Builds the override layers: environment variables, then the flags given.
pub fn overrides(
    global: &GlobalArgs,
    run: Option<&RunArgs>,
    env: Vec<(String, String)>,
) -> Overrides {
    let mut out = config::env_overrides(env);
    let mut flags = Overrides::new();
    if let Some(level) = &global.log_level {
        flags.set(
            Source::Flag("--log-level".into()),
            "logging.level",
            level.clone().into(),
        );
    }
    if let Some(format) = global.log_format {
        let text = match format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        flags.set(
            Source::Flag("--log-format".into()),
            "logging.format",
            text.into(),
        );
    }
    if let Some(run) = run {
        if !run.endpoints.is_empty() {
            flags.endpoints(Source::Flag("--endpoints".into()), run.endpoints.clone());
        }
        if let Some(listen) = &run.listen {
            flags.set(
                Source::Flag("--listen".into()),
                "api.listen",
                listen.clone().into(),
            );
        }
    }
    out.extend(flags);
    out
}

/// Loads the configuration for a command: file (if any), environment, flags.
pub fn load_config(
    global: &GlobalArgs,
    run: Option<&RunArgs>,
) -> Result<Config, config::ConfigErrors> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut config =
        etcd_monitor::run::load_config(global.config.as_deref(), &overrides(global, run, env))?;
    if let Some(port) = run.and_then(|r| r.api_port) {
        // `--api-port` keeps the configured host (validated by `load`).
        if let Ok(mut addr) = config.api.listen.parse::<std::net::SocketAddr>() {
            addr.set_port(port);
            config.api.listen = addr.to_string();
        }
    }
    Ok(config)
}

/// The cluster a one-shot command (`status`, `ctl`, `bench`) talks to: the
/// `--config` file when given (its first cluster, or `--cluster`), with the
/// connection flags on top. The error is ready to print.
pub fn one_shot_cluster(
    global: &GlobalArgs,
    conn: &ConnArgs,
) -> Result<(Option<Config>, ClusterConfig), String> {
    let config = match &global.config {
        Some(_) => Some(load_config(global, None).map_err(|errors| errors.to_string())?),
        None => None,
    };
    let cluster = conn
        .cluster_config(config.as_ref())
        .map_err(|e| format!("error: {e}\n"))?;
    Ok((config, cluster))
}

/// The one start-up path of the one-shot commands (`status`, `bench`,
/// `ctl`): logging when `--log-level` asks for it (quiet by default, like
/// etcdctl), the cluster from `--config` and the connection flags, a
/// runtime, then `body`; an error is printed as `error: ...` and exits with
/// its [`Exit`](etcd_monitor::exit::Exit) (setup problems: 3).
pub fn one_shot<F, Fut, E>(global: &GlobalArgs, conn: &ConnArgs, body: F) -> std::process::ExitCode
where
    F: FnOnce(Option<Config>, ClusterConfig) -> Fut,
    Fut: std::future::Future<Output = Result<etcd_monitor::exit::Exit, E>>,
    E: etcd_monitor::exit::ExitStatus,
{
    use etcd_monitor::exit::Exit;
    exit_quietly_on_broken_pipe();
    if let Some(level) = &global.log_level {
        let format = global.log_format.unwrap_or(LogFormat::Text);
        if let Err(e) = etcd_monitor::logging::init(level, format) {
            eprintln!("error: {e}");
            return Exit::Usage.into();
        }
    }
    let (config, cluster) = match one_shot_cluster(global, conn) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return Exit::Usage.into();
        }
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => {
            eprint!("{e}");
            return Exit::Usage.into();
        }
    };
    let result = runtime.block_on(body(config, cluster));
    // Do not wait for lingering connection tasks.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e}");
            e.exit().into()
        }
    }
}

/// `ctl get ... | head` closes stdout early; `println!` then panics. Exit
/// the way etcdctl does on SIGPIPE (status 141), without a panic message.
fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info.to_string();
        if text.contains("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(etcd_monitor::exit::BROKEN_PIPE.into());
        }
        default(info);
    }));
}

/// The async runtime of a command: two worker threads are plenty for a
/// monitor or a one-shot command. The error is ready to print.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("error: cannot start the async runtime: {e}\n"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
