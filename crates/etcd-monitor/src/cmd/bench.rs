//! The `bench` command line: flags to a [`BenchSpec`], progress on stderr,
//! the report as a table or JSON on stdout, exit codes.
//!
//! Exit status ([`etcd_monitor::exit`]): 0 done (and every SLO met, check-perf
//! PASS); 1 an SLO missed or check-perf FAIL; 2 the run could not be made
//! (cluster unreachable, prefix not empty, etcd errors outside the measured
//! operations); 3 bad invocation (SLO syntax, invalid parameters,
//! configuration).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::cmd::cli::{ConnArgs, GlobalArgs};
use etcd_monitor::bench::BenchReport;
use etcd_monitor::bench::report::render_table;
use etcd_monitor::bench::run::{self, Control};
use etcd_monitor::bench::slo::{self, SloResult};
use etcd_monitor::bench::{BenchSpec, Consistency, Load, Workload};
use etcd_monitor::config;
use etcd_monitor::exit::{Exit, ExitStatus, Fail};

/// Flags of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The workload and its flags.
    #[command(subcommand)]
    pub workload: WorkloadArgs,
}

/// The workloads.
#[derive(Debug, Subcommand)]
pub enum WorkloadArgs {
    /// Puts, one key per operation.
    Put(Common),
    /// Ranges over the prefix (after writing --key-space-size keys).
    Range(RangeArgs),
    /// Single-key reads and puts, --rw-ratio reads per write.
    Mixed(MixedArgs),
    /// Transactions of --txn-ops puts.
    TxnPut(TxnArgs),
    /// Deletes of keys written beforehand (--key-space-size of them).
    Delete(Common),
    /// Put-to-event latency for --clients watchers of one paced putter.
    WatchLatency(Common),
    /// Lease keep-alive round trips, one lease per client.
    LeaseKeepalive(Common),
    /// Acquire and release of an etcd-patterns Mutex; --key-space-size locks.
    Lock(Common),
    /// etcdctl check perf: its load profiles and PASS/FAIL criteria.
    CheckPerf(CheckPerfArgs),
}

/// Flags every workload takes.
#[derive(Debug, Args)]
pub struct Common {
    /// Connection settings.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Load shape.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Output and gates.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The load's shape, named as in etcd's benchmark tool.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// gRPC connections; clients are spread over them [default: 1].
    #[arg(long)]
    pub conns: Option<usize>,
    /// Concurrent clients [default: 1].
    #[arg(long)]
    pub clients: Option<usize>,
    /// Operations in all [default: 10000 unless --duration].
    #[arg(long)]
    pub total: Option<u64>,
    /// Run for this long, e.g. 30s (with --total: whichever ends first).
    #[arg(long, value_parser = config::duration::parse, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Operations per second across all clients, evenly paced [default: unlimited].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Key size in bytes, after the prefix [default: 8].
    #[arg(long)]
    pub key_size: Option<usize>,
    /// Value size in bytes [default: 8].
    #[arg(long)]
    pub val_size: Option<usize>,
    /// Distinct keys [default: 1].
    #[arg(long)]
    pub key_space_size: Option<u64>,
    /// Keys in order instead of at random.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Key prefix; must be empty, and is emptied afterwards [default: /etcd-monitor-bench/].
    #[arg(long)]
    pub prefix: Option<String>,
    /// Connect to the leader's endpoint only.
    #[arg(long)]
    pub target_leader: bool,
    /// Keep the written keys.
    #[arg(long)]
    pub keep: bool,
}

/// Output and SLO gates.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Targets, e.g. "p99<50ms,throughput>10000"; exit 1 when one is missed.
    #[arg(long, value_name = "TARGETS")]
    pub slo: Option<String>,
    /// No progress bar or progress lines.
    #[arg(long)]
    pub no_progress: bool,
}

/// `range` flags.
#[derive(Debug, Args)]
pub struct RangeArgs {
    /// Common flags.
    #[command(flatten)]
    pub common: Common,
    /// l (linearizable) or s (serializable).
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
    /// Most keys per range (0: no limit).
    #[arg(long)]
    pub limit: Option<i64>,
    /// Keys without values.
    #[arg(long)]
    pub keys_only: bool,
    /// The count only.
    #[arg(long)]
    pub count_only: bool,
}

/// `mixed` flags.
#[derive(Debug, Args)]
pub struct MixedArgs {
    /// Common flags.
    #[command(flatten)]
    pub common: Common,
    /// Reads per write [default: 1].
    #[arg(long)]
    pub rw_ratio: Option<f64>,
    /// Reads: l (linearizable) or s (serializable).
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
}

/// `txn-put` flags.
#[derive(Debug, Args)]
pub struct TxnArgs {
    /// Common flags.
    #[command(flatten)]
    pub common: Common,
    /// Puts per transaction [default: 1].
    #[arg(long)]
    pub txn_ops: Option<usize>,
}

/// `check-perf` flags.
#[derive(Debug, Args)]
pub struct CheckPerfArgs {
    /// Connection settings.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Output and gates.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Load profile: s, m, l or xl.
    #[arg(long, value_enum, default_value = "s")]
    pub load: Load,
    /// Key prefix [default: /etcd-monitor-bench/].
    #[arg(long)]
    pub prefix: Option<String>,
    /// gRPC connections [default: 1].
    #[arg(long)]
    pub conns: Option<usize>,
    /// Compact the history after the run.
    #[arg(long)]
    pub auto_compact: bool,
    /// Defragment every member after the run (implies --auto-compact).
    #[arg(long)]
    pub auto_defrag: bool,
    /// Advanced, deviates from etcdctl: run this long instead of 60s.
    #[arg(long, hide = true, value_parser = config::duration::parse)]
    pub duration: Option<Duration>,
}

impl WorkloadArgs {
    /// The spec, connection flags and output flags.
    fn into_parts(self) -> (BenchSpec, ConnArgs, OutputArgs) {
        let (workload, common) = match self {
            WorkloadArgs::CheckPerf(a) => {
                let d = BenchSpec::default();
                let spec = BenchSpec {
                    prefix: a.prefix.unwrap_or(d.prefix.clone()),
                    conns: a.conns.unwrap_or(d.conns),
                    duration: a.duration,
                    auto_compact: a.auto_compact,
                    auto_defrag: a.auto_defrag,
                    ..BenchSpec::check_perf(a.load)
                };
                return (spec, a.conn, a.output);
            }
            WorkloadArgs::Range(a) => {
                let (spec, conn, out) = common_parts(Workload::Range, a.common);
                let spec = BenchSpec {
                    consistency: a.consistency.unwrap_or(spec.consistency),
                    limit: a.limit.unwrap_or(spec.limit),
                    keys_only: a.keys_only,
                    count_only: a.count_only,
                    ..spec
                };
                return (spec, conn, out);
            }
            WorkloadArgs::Mixed(a) => {
                let (spec, conn, out) = common_parts(Workload::Mixed, a.common);
                let spec = BenchSpec {
                    rw_ratio: a.rw_ratio.unwrap_or(spec.rw_ratio),
                    consistency: a.consistency.unwrap_or(spec.consistency),
                    ..spec
                };
                return (spec, conn, out);
            }
            WorkloadArgs::TxnPut(a) => {
                let (spec, conn, out) = common_parts(Workload::TxnPut, a.common);
                let spec = BenchSpec {
                    txn_ops: a.txn_ops.unwrap_or(spec.txn_ops),
                    ..spec
                };
                return (spec, conn, out);
            }
            WorkloadArgs::Put(c) => (Workload::Put, c),
            WorkloadArgs::Delete(c) => (Workload::Delete, c),
            WorkloadArgs::WatchLatency(c) => (Workload::WatchLatency, c),
            WorkloadArgs::LeaseKeepalive(c) => (Workload::LeaseKeepalive, c),
            WorkloadArgs::Lock(c) => (Workload::Lock, c),
        };
        common_parts(workload, common)
    }
}

fn common_parts(workload: Workload, c: Common) -> (BenchSpec, ConnArgs, OutputArgs) {
    let d = BenchSpec::default();
    let l = c.load;
    let spec = BenchSpec {
        workload,
        conns: l.conns.unwrap_or(d.conns),
        clients: l.clients.unwrap_or(d.clients),
        total: l.total,
        duration: l.duration,
        rate: l.rate,
        key_size: l.key_size.unwrap_or(d.key_size),
        val_size: l.val_size.unwrap_or(d.val_size),
        key_space_size: l.key_space_size.unwrap_or(d.key_space_size),
        sequential_keys: l.sequential_keys,
        prefix: l.prefix.unwrap_or(d.prefix.clone()),
        target_leader: l.target_leader,
        keep: l.keep,
        ..d
    };
    (spec, c.conn, c.output)
}

/// The JSON output: the report's fields, then the SLO results.
#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    report: &'a BenchReport,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    slo: Vec<SloResult>,
}

fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    Exit::Usage.into()
}

/// Runs `bench`; returns the process exit status (see the module docs).
pub fn main(global: &GlobalArgs, args: BenchArgs) -> ExitCode {
    let (spec, conn, output) = args.workload.into_parts();
    let slos = match output.slo.as_deref().map(slo::parse).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => return usage(e),
    };
    let spec = match spec.resolved() {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    crate::cmd::cli::one_shot(global, &conn, |config, cluster| async move {
        // The command line may go beyond benchmark.limits (whoever runs it
        // owns the load), but says so.
        let limits = config.map(|c| c.benchmark.limits).unwrap_or_default();
        for (_, message) in limits.violations(&spec) {
            eprintln!("warning: {message}; the API and schedules refuse such runs");
        }
        let failed = |e: run::BenchError| Fail(e.exit(), e.to_string());
        let conns = run::connect(&spec, &cluster).await.map_err(failed)?;
        let control = Control::default();
        let interrupt = control.cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping, cleaning up and reporting what was measured");
                interrupt.cancel();
            }
        });
        let progress =
            (!output.no_progress).then(|| tokio::spawn(show(spec.clone(), control.clone())));
        let report = run::run(&spec, &conns, &control).await;
        if let Some(p) = progress {
            p.abort();
            let _ = p.await;
        }
        let report = report.map_err(failed)?;
        let results = slo::evaluate(&slos, &report);
        if output.json {
            let text = serde_json::to_string_pretty(&Output {
                report: &report,
                slo: results.clone(),
            })
            .map_err(|e| Fail(Exit::Usage, format!("cannot encode the report: {e}")))?;
            println!("{text}");
        } else {
            print!("{}", render_table(&report));
            if !results.is_empty() {
                println!("\nSLO");
                for r in &results {
                    println!("  {r}");
                }
            }
        }
        let mut passed = true;
        for r in results.iter().filter(|r| !r.passed) {
            eprintln!("SLO missed: {}", r.message);
            passed = false;
        }
        if report.check_perf.as_ref().is_some_and(|v| !v.passed) {
            passed = false;
        }
        Ok::<Exit, Fail>(if passed { Exit::Ok } else { Exit::No })
    })
}

/// A progress bar on a terminal, plain lines every few seconds otherwise.
/// Runs until aborted.
async fn show(spec: BenchSpec, control: Control) {
    let started = tokio::time::Instant::now();
    let done = || control.progress.succeeded() + control.progress.failed();
    if std::io::stderr().is_terminal() {
        let (len, by_time) = match (spec.total, spec.duration) {
            (Some(t), None) => (t, false),
            (_, Some(d)) => (d.as_millis() as u64, true),
            (None, None) => (0, false),
        };
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {percent:>3}% {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = indicatif::ProgressBar::new(len).with_style(style);
        let _clear = ClearOnDrop(bar.clone());
        loop {
            let pos = if by_time {
                started.elapsed().as_millis() as u64
            } else {
                done()
            };
            bar.set_position(pos.min(len));
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "{} ops, {} errors, {:.0} ops/s",
                done(),
                control.progress.failed(),
                done() as f64 / secs
            ));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = done();
            eprintln!(
                "bench {}: {:.0}s, {} ops, {} errors, {:.0} ops/s",
                spec.workload.name(),
                started.elapsed().as_secs_f64(),
                now,
                control.progress.failed(),
                (now - last) as f64 / 2.0
            );
            last = now;
        }
    }
}

struct ClearOnDrop(indicatif::ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
