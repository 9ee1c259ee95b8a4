//! `etcd-monitor bench`: load generation, latency histograms and SLO gates.
//!
//! The library is what the CLI, the REST API and scheduled benchmarks share:
//! a serializable [`BenchSpec`] goes in ([`connect`] then [`run`](fn@run)), a
//! serializable [`BenchReport`] comes out; [`slo`] checks a report against
//! targets, [`check_perf`] is etcdctl's verdict. The `bench` command (in
//! the binary) only turns flags into a spec and prints.
//!
//! ```no_run
//! # async fn demo(cluster: etcd_monitor::config::ClusterConfig) -> Result<(), etcd_monitor::bench::BenchError> {
//! use etcd_monitor::bench::{self, BenchSpec, Control, Workload};
//!
//! let spec = BenchSpec { workload: Workload::Put, clients: 16, total: Some(5000), ..BenchSpec::default() };
//! let conns = bench::connect(&spec, &cluster).await?;
//! let report = bench::run(&spec, &conns, &Control::default()).await?;
//! println!("{:.0} ops/s, p99 {} ms", report.throughput, report.p99());
//! # Ok(()) }
//! ```

pub mod check_perf;

pub mod report;
pub mod run;
pub mod slo;

pub use crate::config::bench::{
    BenchLimits, BenchSpec, Consistency, InvalidSpec, LegacyBenchmarkType, Load, Workload,
};
pub use check_perf::CheckPerfVerdict;
pub use report::{BenchReport, LatencySummary};
pub use run::{BenchError, Connections, Control, Progress, connect, run};

impl BenchReport {
    /// 99th percentile latency in milliseconds.
    pub fn p99(&self) -> f64 {
        self.latency.p99
    }
}
