//! Benchmark runs started by the API or by schedules (`benchmark.schedules`):
//! each runs asynchronously through the [`crate::bench`] library, is
//! followed live, and is recorded in the history store when it ends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bench::{self, BenchReport, BenchSpec, Control};
use crate::config::{ClusterConfig, Config};
use crate::lifecycle::Lifecycle;
use crate::store::{Store, unix_ms};

/// The checks of `benchmark.*` that need the runner's grammar: each
/// schedule's SLO. The configuration loader ([`crate::run::load_config`])
/// runs them beside the schema's own.
pub fn config_problems(config: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, s) in config.benchmark.schedules.iter().enumerate() {
        if let Some(slo) = &s.slo {
            if let Err(e) = bench::slo::parse(slo) {
                out.push((format!("benchmark.schedules[{i}].slo"), e.to_string()));
            }
        }
    }
    out
}

/// A run as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRecord {
    /// Identifier.
    pub id: String,
    /// Cluster name.
    pub cluster: String,
    /// `api` or the schedule's name.
    pub source: String,
    /// Who started it: the API caller (`token:ci`), or `schedule:NAME`.
    #[serde(default)]
    pub started_by: String,
    /// Who cancelled it, if someone did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    /// Workload name.
    pub workload: String,
    /// `running`, `succeeded`, `failed`, `cancelled`.
    pub state: String,
    /// When it started (ms since epoch).
    pub started_at_ms: i64,
    /// When it ended.
    pub finished_at_ms: Option<i64>,
    /// Operations that succeeded so far.
    pub succeeded: u64,
    /// Operations that failed so far.
    pub failed: u64,
    /// Throughput, when finished.
    pub throughput: Option<f64>,
    /// p99 latency in ms, when finished.
    pub p99_ms: Option<f64>,
    /// SLO results, when targets were given.
    pub slo: Vec<String>,
    /// Whether every SLO target was met.
    pub slo_met: Option<bool>,
    /// Why it failed.
    pub error: Option<String>,
    /// The spec as given.
    pub spec: BenchSpec,
    /// The full report, when finished.
    pub report: Option<BenchReport>,
}

struct Live {
    record: RunRecord,
    control: Control,
}

/// Runs in progress and recently finished, plus the store for older ones.
#[derive(Clone)]
pub struct BenchRuns {
    live: Arc<Mutex<VecDeque<Live>>>,
    store: Store,
    lifecycle: Lifecycle,
    limits: bench::BenchLimits,
    runtime: Arc<BenchRuntime>,
}

/// The runtime benchmarks run on: threads of their own, at a lower
/// priority, so a saturating run cannot delay the monitor's probes, health
/// checks and alerting, which keep the main runtime.
struct BenchRuntime(Option<tokio::runtime::Runtime>);

impl BenchRuntime {
    fn new() -> std::io::Result<BenchRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("benchmark")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        Ok(BenchRuntime(Some(rt)))
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(|r| r.handle())
    }
}

impl Drop for BenchRuntime {
    fn drop(&mut self) {
        // Dropping a runtime may block, which is not allowed inside another
        // runtime; its tasks have been cancelled by then anyway.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Nice 10 for the calling thread (Linux threads have their own nice value).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread's own id; no memory is shared.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// Why a run cannot be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No such run.
    #[error("no benchmark run {0:?}")]
    NotFound(String),
    /// It ended already.
    #[error("benchmark {id} is not running (it {state})")]
    NotRunning {
        /// The run.
        id: String,
        /// Its state.
        state: String,
    },
}

/// Why a run cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The spec is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A run is already going on that cluster.
    #[error("benchmark {0} is still running on this cluster; wait for it to finish")]
    Busy(String),
}

const KEEP_LIVE: usize = 50;

impl BenchRuns {
    /// A registry writing finished runs to `store`, running under
    /// `lifecycle`, refusing runs beyond `limits`.
    pub fn new(store: Store, lifecycle: Lifecycle, limits: bench::BenchLimits) -> Self {
        let runtime = BenchRuntime::new().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no runtime of their own for benchmarks: they share the monitor's");
            BenchRuntime(None)
        });
        BenchRuns {
            live: Arc::new(Mutex::new(VecDeque::new())),
            store,
            lifecycle,
            limits,
            runtime: Arc::new(runtime),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refresh(live: &mut Live) -> RunRecord {
        let mut r = live.record.clone();
        if r.state == "running" {
            r.succeeded = live.control.progress.succeeded();
            r.failed = live.control.progress.failed();
        }
        r
    }

    /// Starts `spec` on `cluster` for `started_by`; returns the run's
    /// record at once.
    pub fn start(
        &self,
        cluster: ClusterConfig,
        spec: BenchSpec,
        source: &str,
        started_by: &str,
        slo: Option<String>,
    ) -> Result<RunRecord, StartError> {
        let resolved = spec
            .resolved()
            .map_err(|e| StartError::Invalid(e.to_string()))?;
        let over: Vec<String> = self
            .limits
            .violations(&resolved)
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        if !over.is_empty() {
            return Err(StartError::Invalid(over.join("; ")));
        }
        // The resolved spec (defaults filled in), stopped at max_duration at the latest.
        let spec = self.limits.bounded(resolved);
        let slos = match &slo {
            Some(text) => {
                bench::slo::parse(text).map_err(|e| StartError::Invalid(e.to_string()))?
            }
            None => Vec::new(),
        };
        let now = unix_ms(SystemTime::now());
        let id = format!("b{now:x}{:04x}", rand_suffix());
        let control = Control::default();
        let record = RunRecord {
            id: id.clone(),
            cluster: cluster.name.clone(),
            source: source.to_string(),
            started_by: started_by.to_string(),
            cancelled_by: None,
            workload: spec.workload.name().to_string(),
            state: "running".into(),
            started_at_ms: now,
            finished_at_ms: None,
            succeeded: 0,
            failed: 0,
            throughput: None,
            p99_ms: None,
            slo: Vec::new(),
            slo_met: None,
            error: None,
            spec: spec.clone(),
            report: None,
        };
        {
            let mut live = self.lock();
            if let Some(busy) = live
                .iter()
                .find(|l| l.record.cluster == cluster.name && l.record.state == "running")
            {
                return Err(StartError::Busy(busy.record.id.clone()));
            }
            live.push_back(Live {
                record: record.clone(),
                control: control.clone(),
            });
            while live.len() > KEEP_LIVE {
                live.pop_front();
            }
        }
        let this = self.clone();
        let token = self.lifecycle.token();
        let runtime = self.runtime.clone();
        self.lifecycle.spawn(async move {
            let cancel = control.cancel.clone();
            let watcher = tokio::spawn(async move {
                token.cancelled().await;
                cancel.cancel();
            });
            let work = async move {
                let conns = bench::connect(&spec, &cluster).await?;
                bench::run(&spec, &conns, &control).await
            };
            let result = match runtime.handle() {
                Some(handle) => handle.spawn(work).await.unwrap_or_else(|e| {
                    Err(bench::BenchError::Cleanup(format!(
                        "the benchmark task failed: {e}"
                    )))
                }),
                None => work.await,
            };
            watcher.abort();
            this.finish(&id, result, &slos).await;
        });
        Ok(record)
    }

    /// Stops a running benchmark on behalf of `by`: it stops issuing
    /// operations, cleans up, and is recorded as `cancelled` with what it
    /// measured. Returns the run as it was when asked.
    pub fn cancel(&self, id: &str, by: &str) -> Result<RunRecord, CancelError> {
        let mut live = self.lock();
        let Some(l) = live.iter_mut().find(|l| l.record.id == id) else {
            return Err(CancelError::NotFound(id.to_string()));
        };
        if l.record.state != "running" {
            return Err(CancelError::NotRunning {
                id: id.to_string(),
                state: l.record.state.clone(),
            });
        }
        l.record.cancelled_by = Some(by.to_string());
        l.control.cancel.cancel();
        tracing::info!(id, by, "benchmark cancelled");
        Ok(Self::refresh(l))
    }

    async fn finish(
        &self,
        id: &str,
        result: Result<BenchReport, bench::BenchError>,
        slos: &[bench::slo::Slo],
    ) {
        let record = {
            let mut live = self.lock();
            let Some(l) = live.iter_mut().find(|l| l.record.id == id) else {
                return;
            };
            let r = &mut l.record;
            r.finished_at_ms = Some(unix_ms(SystemTime::now()));
            match result {
                Ok(report) => {
                    r.state = if r.cancelled_by.is_some() {
                        "cancelled".into()
                    } else {
                        "succeeded".into()
                    };
                    r.succeeded = report.succeeded;
                    r.failed = report.failed;
                    r.throughput = Some(report.throughput);
                    r.p99_ms = Some(report.p99());
                    if !slos.is_empty() {
                        let results = bench::slo::evaluate(slos, &report);
                        r.slo_met = Some(results.iter().all(|x| x.passed));
                        r.slo = results.iter().map(|x| x.message.clone()).collect();
                        if r.slo_met == Some(false) {
                            tracing::warn!(id, slo = ?r.slo, "benchmark missed its SLO");
                        }
                    }
                    r.report = Some(report);
                }
                Err(e) => {
                    r.state = "failed".into();
                    r.error = Some(e.to_string());
                }
            }
            r.clone()
        };
        tracing::info!(id, cluster = %record.cluster, state = %record.state, throughput = ?record.throughput, p99_ms = ?record.p99_ms, "benchmark finished");
        let body = serde_json::to_value(&record).unwrap_or(Value::Null);
        if let Err(e) = self
            .store
            .record_benchmark(
                &record.id,
                &record.cluster,
                record.started_at_ms,
                &record.source,
                &record.workload,
                &record.state,
                record.throughput,
                record.p99_ms,
                &body,
            )
            .await
        {
            tracing::warn!(error = %e, "cannot record the benchmark");
        }
    }

    /// Recent runs (live first, then stored), newest first, without reports.
    pub async fn list(&self, limit: usize) -> Result<Vec<RunRecord>, crate::store::StoreError> {
        let mut out: Vec<RunRecord> = self.lock().iter_mut().rev().map(Self::refresh).collect();
        for v in self.store.benchmarks(limit as i64).await? {
            if let Ok(r) = serde_json::from_value::<RunRecord>(v) {
                if !out.iter().any(|x| x.id == r.id) {
                    out.push(r);
                }
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.started_at_ms));
        out.truncate(limit);
        for r in &mut out {
            r.report = None;
        }
        Ok(out)
    }

    /// One run with its report.
    pub async fn get(&self, id: &str) -> Result<Option<RunRecord>, crate::store::StoreError> {
        if let Some(r) = self
            .lock()
            .iter_mut()
            .find(|l| l.record.id == id)
            .map(Self::refresh)
        {
            return Ok(Some(r));
        }
        Ok(self
            .store
            .benchmark(id)
            .await?
            .and_then(|v| serde_json::from_value(v).ok()))
    }

    /// Starts the configured schedules.
    /// With replicas (`ha.*`), only the owner of a schedule's cluster runs it.
    pub fn schedule(&self, config: &Config, replicas: &crate::monitor::ha::Replicas) {
        for s in config.benchmark.schedules.clone() {
            let cluster = match &s.cluster {
                Some(name) => config.clusters.iter().find(|c| &c.name == name).cloned(),
                None => config.clusters.first().cloned(),
            };
            let Some(cluster) = cluster else { continue };
            let ownership = replicas.ownership(&cluster.name);
            let this = self.clone();
            let token = self.lifecycle.token();
            self.lifecycle.spawn(async move {
                let mut tick = tokio::time::interval(s.every);
                tick.tick().await; // not at startup: the first run comes one period later
                loop {
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    if !ownership.owned() {
                        continue;
                    }
                    match this.start(cluster.clone(), s.spec.clone(), &s.name, &format!("schedule:{}", s.name), s.slo.clone()) {
                        Ok(r) => tracing::info!(schedule = %s.name, id = %r.id, "scheduled benchmark started"),
                        Err(e) => tracing::warn!(schedule = %s.name, error = %e, "scheduled benchmark not started"),
                    }
                }
            });
        }
    }
}

fn rand_suffix() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
