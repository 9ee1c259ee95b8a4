//! Running a [`BenchSpec`] against a cluster: connections, pacing, the
//! workloads' operations, and cleanup of the prefix afterwards.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, CompactionOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use etcd_patterns::{Mutex, Session};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::check_perf::CheckPerfVerdict;
use super::report::{BenchReport, Recorder};
use crate::config::ClusterConfig;
use crate::config::bench::spec::{BenchSpec, Consistency, InvalidSpec, Workload};
use crate::connection::{self, ConnectError, Dialer, cause_chain};

/// Session TTL of the `lock` workload's clients.
const LOCK_SESSION_TTL: Duration = Duration::from_secs(10);
/// Longest wait for one lock acquisition.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// TTL of the lease the run's keys are written with (kept alive while it runs).
const RUN_LEASE_TTL: Duration = Duration::from_secs(60);
/// Pause between members when `auto_defrag` defragments after a run.
const AUTO_DEFRAG_PAUSE: Duration = Duration::from_secs(2);
/// Lease TTL of the `lease-keepalive` workload.
const KEEPALIVE_LEASE_TTL: i64 = 30;
/// How long `watch-latency` waits for the last events after the last put.
const WATCH_DRAIN: Duration = Duration::from_secs(5);

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The spec is not runnable.
    #[error(transparent)]
    Invalid(#[from] InvalidSpec),
    /// The cluster could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Keys exist under the prefix; bench would delete them afterwards.
    #[error(
        "prefix {prefix:?} already holds {count} keys: bench deletes everything under its prefix after a run, so it only starts on an empty one; choose another --prefix or delete those keys"
    )]
    PrefixNotEmpty {
        /// The prefix.
        prefix: String,
        /// Keys found.
        count: i64,
    },
    /// `--target-leader`, but no endpoint is the leader.
    #[error(
        "--target-leader: none of {endpoints:?} is the leader (leader id {leader:x}){}; add the leader's client URL to --endpoints",
        unanswered(.failed)
    )]
    LeaderNotInEndpoints {
        /// The endpoints asked.
        endpoints: Vec<String>,
        /// The leader's member id.
        leader: u64,
        /// The endpoints that did not answer, each with its cause.
        failed: Vec<(String, String)>,
    },
    /// An etcd request outside the measured operations failed.
    #[error("{context}: {}", cause_chain(.source))]
    Etcd {
        /// What was being done.
        context: String,
        /// The cause.
        source: etcd_client::Error,
    },
    /// An unmeasured request (setup, cleanup) failed on the balanced client
    /// and on each endpoint alone.
    #[error("{context}: no endpoint served it ({})", format_attempts(.attempts))]
    Admin {
        /// What was being done.
        context: String,
        /// Where it was tried (the balanced client first), each with its cause.
        attempts: Vec<(String, String)>,
    },
    /// Setting up or closing a session (locks, the run's lease) failed.
    #[error("{context}: {source}")]
    Session {
        /// What was being done.
        context: String,
        /// The cause.
        source: etcd_patterns::Error,
    },
    /// Cleaning up after the run failed.
    #[error("{0}")]
    Cleanup(String),
}

fn format_attempts(attempts: &[(String, String)]) -> String {
    attempts
        .iter()
        .map(|(at, cause)| format!("{at}: {cause}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn unanswered(failed: &[(String, String)]) -> String {
    if failed.is_empty() {
        String::new()
    } else {
        format!(", and these did not answer: {}", format_attempts(failed))
    }
}

fn etcd(context: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Etcd { context, source }
}

/// The gRPC connections of a run.
#[derive(Clone)]
pub struct Connections {
    /// One client per connection (`conns`).
    pub clients: Vec<Client>,
    /// The endpoints the clients use (the leader's only with `target_leader`).
    pub endpoints: Vec<String>,
    /// Every endpoint of the cluster, for defragmentation.
    pub all_endpoints: Vec<String>,
    dialer: Dialer,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("conns", &self.clients.len())
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl Connections {
    /// Runs an unmeasured request (setup, cleanup): on the balanced client
    /// first, then on each endpoint alone until one answers, so a stopped
    /// or partitioned member does not fail the run's bookkeeping.
    async fn admin<T, F, Fut>(&self, context: String, mut request: F) -> Result<T, BenchError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempts = match request(self.clients[0].clone()).await {
            Ok(v) => return Ok(v),
            Err(e) => vec![(self.endpoints.join(","), cause_chain(&e))],
        };
        for url in &self.endpoints {
            let cause = match self.dialer.dial(url).await {
                Ok(client) => match request(client).await {
                    Ok(v) => return Ok(v),
                    Err(e) => cause_chain(&e),
                },
                Err(e) => e.cause(),
            };
            attempts.push((format!("{url} alone"), cause));
        }
        Err(BenchError::Admin { context, attempts })
    }
}

/// Opens `spec.conns` connections to `cluster` (to its leader only with
/// `target_leader`). Errors name the endpoints and causes.
pub async fn connect(spec: &BenchSpec, cluster: &ClusterConfig) -> Result<Connections, BenchError> {
    let all_endpoints = connection::endpoints(cluster)?;
    let dialer = Dialer::new(cluster)?;
    let mut first = dialer.dial_balanced(&all_endpoints).await?;
    let endpoints = if spec.target_leader {
        let status = first
            .status()
            .await
            .map_err(etcd("reading the leader from endpoint status"))?;
        let leader = status.leader();
        let mut found = None;
        let mut failed = Vec::new();
        for url in &all_endpoints {
            let answer = match dialer.dial_checked(url).await {
                Ok(mut c) => c.status().await.map_err(|e| cause_chain(&e)),
                Err(e) => Err(e.cause()),
            };
            match answer {
                Ok(s) if s.header().map(|h| h.member_id()) == Some(leader) => {
                    found = Some(url.clone());
                    break;
                }
                Ok(_) => {}
                Err(cause) => failed.push((url.clone(), cause)),
            }
        }
        vec![found.ok_or_else(|| BenchError::LeaderNotInEndpoints {
            endpoints: all_endpoints.clone(),
            leader,
            failed,
        })?]
    } else {
        all_endpoints.clone()
    };
    let mut clients = Vec::with_capacity(spec.conns.max(1));
    if !spec.target_leader || all_endpoints.len() == 1 {
        clients.push(first);
    }
    while clients.len() < spec.conns.max(1) {
        clients.push(dialer.dial_all(&endpoints).await?);
    }
    Ok(Connections {
        clients,
        endpoints,
        all_endpoints,
        dialer,
    })
}

/// Live counters of a run, for progress display and the API.
#[derive(Debug, Default)]
pub struct Progress {
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl Progress {
    /// Operations that succeeded so far.
    pub fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }

    /// Operations that failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// How the caller follows and stops a run.
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// Counters updated as operations finish.
    pub progress: Arc<Progress>,
    /// Cancel to stop issuing operations; the run then cleans up and reports
    /// what it measured.
    pub cancel: CancellationToken,
}

/// Runs `spec` on `conns`: checks that the prefix is empty, writes the keys
/// a workload reads, measures, deletes the prefix (unless `keep`) and, for
/// `check-perf`, adds etcdctl's verdict.
pub async fn run(
    spec: &BenchSpec,
    conns: &Connections,
    control: &Control,
) -> Result<BenchReport, BenchError> {
    let mut spec = Arc::new(spec.resolved()?);
    let context = format!("counting the keys under {}", spec.prefix);
    let existing = conns
        .admin(context, |mut c| {
            let prefix = spec.prefix.clone();
            async move {
                c.get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
            }
        })
        .await?
        .count();
    if existing > 0 {
        return Err(BenchError::PrefixNotEmpty {
            prefix: spec.prefix.clone(),
            count: existing,
        });
    }
    // The run's keys carry a lease of their own: cleanup revokes it, which
    // removes exactly what this run wrote (not what others put under the
    // prefix meanwhile), and keys of a run that dies expire with it.
    let run_lease = if spec.workload.writes_keys() && !spec.keep {
        let ttl = RUN_LEASE_TTL.as_secs() as i64;
        let lease = conns
            .admin(
                "granting the lease of the run's keys".into(),
                |mut c| async move { Ok(c.lease_grant(ttl, None).await?.id()) },
            )
            .await?;
        let mut with_lease = (*spec).clone();
        with_lease.lease = Some(lease);
        spec = Arc::new(with_lease);
        Some(RunLease::keep_alive(conns.clone(), lease))
    } else {
        None
    };
    let measured = measure(&spec, conns, control).await;
    let cleaned = cleanup(&spec, conns, run_lease).await;
    let mut report = measured?;
    // The measurements stand even if cleanup failed; the report says so.
    report.cleanup_error = cleaned.err().map(|e| match spec.lease {
        Some(lease) => format!(
            "{e}; the run's keys expire with their lease {lease:x} within {} s",
            RUN_LEASE_TTL.as_secs()
        ),
        None => format!("{e}"),
    });
    if spec.workload == Workload::CheckPerf {
        report.check_perf = Some(CheckPerfVerdict::of(spec.load, &report));
    }
    Ok(report)
}

async fn measure(
    spec: &Arc<BenchSpec>,
    conns: &Connections,
    control: &Control,
) -> Result<BenchReport, BenchError> {
    if spec.workload.needs_populated_keys() {
        populate(spec, conns).await?;
    }
    let cpu_before = crate::metrics::process_cpu_seconds();
    let mut report = if spec.workload == Workload::WatchLatency {
        watch_latency(spec, conns, control).await?
    } else {
        load(spec, conns, control).await?
    };
    report.client_cpu_seconds = cpu_before
        .zip(crate::metrics::process_cpu_seconds())
        .map(|(before, after)| after - before);
    Ok(report)
}

/// The measured phase of every workload but `watch-latency`.
async fn load(
    spec: &Arc<BenchSpec>,
    conns: &Connections,
    control: &Control,
) -> Result<BenchReport, BenchError> {
    let started_unix_ms = crate::time::now_ms().max(0) as u64;
    let mut states = Vec::with_capacity(spec.clients);
    for i in 0..spec.clients {
        let client = conns.clients[i % conns.clients.len()].clone();
        states.push(Worker::new(spec, client).await?);
    }
    let start = Instant::now();
    let pacer = Arc::new(Pacer::new(spec, start));
    let mut set = JoinSet::new();
    for (i, state) in states.into_iter().enumerate() {
        set.spawn(state.run(spec.clone(), pacer.clone(), control.clone(), start, seed(i)));
    }
    let mut total = Recorder::new(start);
    while let Some(joined) = set.join_next().await {
        if let Ok(rec) = joined {
            total.merge(rec);
        }
    }
    Ok(total.into_report(
        (**spec).clone(),
        conns.endpoints.clone(),
        started_unix_ms,
        start.elapsed(),
        None,
    ))
}

/// Removes the run's keys (revokes their lease) unless `keep`; compacts
/// and defragments if asked, the defragmentation through the safe path
/// (health first, followers first, the leader last, a pause between).
async fn cleanup(
    spec: &BenchSpec,
    conns: &Connections,
    run_lease: Option<RunLease>,
) -> Result<(), BenchError> {
    if let Some(run_lease) = run_lease {
        // Stop renewing, then revoke through whichever member answers (a
        // frozen member must not keep the keys around).
        let lease = run_lease.stop();
        let context = format!("revoking lease {lease:x} of the keys under {}", spec.prefix);
        conns
            .admin(context, |mut c| async move { c.lease_revoke(lease).await })
            .await?;
    }
    if spec.keep {
        return Ok(());
    }
    let mut admin = conns.clients[0].clone();
    if spec.auto_compact {
        let context = "reading the revision to compact to".to_string();
        let revision = conns
            .admin(context, |mut c| async move {
                c.get("health", Some(GetOptions::new().with_count_only()))
                    .await
            })
            .await?
            .header()
            .map_or(0, |h| h.revision());
        admin
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
            .map_err(etcd(format!("compacting at revision {revision}")))?;
    }
    if spec.auto_defrag {
        let opts = crate::ops::maintenance::DefragOptions {
            pause: AUTO_DEFRAG_PAUSE,
            ..Default::default()
        };
        let reports =
            crate::ops::maintenance::defrag_cluster(&mut admin, &conns.dialer, &opts, |_| {})
                .await
                .map_err(|e| BenchError::Cleanup(format!("defragmenting after the run: {e}")))?;
        if let Some(failed) = reports.iter().find(|r| {
            matches!(
                r.outcome,
                crate::ops::maintenance::DefragOutcome::Failed { .. }
            )
        }) {
            return Err(BenchError::Cleanup(format!(
                "defragmenting {} after the run failed: {:?}",
                failed.endpoint, failed.outcome
            )));
        }
    }
    Ok(())
}

/// The lease of a run's keys, renewed every third of its TTL through
/// whichever member answers (a frozen member must not let it lapse).
struct RunLease {
    id: i64,
    stop: CancellationToken,
}

impl RunLease {
    fn keep_alive(conns: Connections, id: i64) -> RunLease {
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(RUN_LEASE_TTL / 3) => {}
                }
                let renewed = conns
                    .admin(format!("renewing lease {id:x}"), |mut c| async move {
                        let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
                        keeper.keep_alive().await?;
                        stream.message().await.map(|_| ())
                    })
                    .await;
                if let Err(e) = renewed {
                    tracing::warn!(error = %e, "the lease of the benchmark's keys was not renewed");
                }
            }
        });
        RunLease { id, stop }
    }

    /// Stops renewing; returns the lease id.
    fn stop(self) -> i64 {
        self.stop.cancel();
        self.id
    }
}

/// The put options of the run's keys: their lease.
fn put_options(spec: &BenchSpec) -> Option<PutOptions> {
    spec.lease.map(|id| PutOptions::new().with_lease(id))
}

/// Writes keys 0..key_space_size, `clients` at a time, unmeasured.
async fn populate(spec: &Arc<BenchSpec>, conns: &Connections) -> Result<(), BenchError> {
    let next = Arc::new(AtomicU64::new(0));
    let mut set: JoinSet<Result<(), BenchError>> = JoinSet::new();
    for i in 0..spec.clients.min(spec.key_space_size as usize) {
        let mut client = conns.clients[i % conns.clients.len()].clone();
        let (spec, next) = (spec.clone(), next.clone());
        set.spawn(async move {
            let value = random_bytes(
                spec.val_size,
                &mut <Rng as rand::SeedableRng>::seed_from_u64(seed(i)),
            );
            loop {
                let idx = next.fetch_add(1, Ordering::Relaxed);
                if idx >= spec.key_space_size {
                    return Ok(());
                }
                client
                    .put(key(&spec, idx), value.clone(), put_options(&spec))
                    .await
                    .map_err(etcd(format!(
                        "writing the keys {} reads under {}",
                        spec.workload.name(),
                        spec.prefix
                    )))?;
            }
        });
    }
    while let Some(joined) = set.join_next().await {
        if let Ok(result) = joined {
            result?;
        }
    }
    Ok(())
}

/// Hands out operation numbers: at most `total`, until the deadline, and
/// with `rate` each at its slot `start + n / rate`, so the load is even
/// across clients instead of bursty.
struct Pacer {
    start: tokio::time::Instant,
    per_op: Option<f64>,
    next: AtomicU64,
    total: Option<u64>,
    deadline: Option<tokio::time::Instant>,
}

impl Pacer {
    fn new(spec: &BenchSpec, start: Instant) -> Self {
        let start = tokio::time::Instant::from_std(start);
        Pacer {
            start,
            per_op: spec.rate.map(|r| 1.0 / r),
            next: AtomicU64::new(0),
            total: spec.total,
            deadline: spec.duration.map(|d| start + d),
        }
    }

    async fn next(&self, cancel: &CancellationToken) -> Option<u64> {
        if cancel.is_cancelled() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if self.total.is_some_and(|t| n >= t) {
            return None;
        }
        match self.per_op {
            Some(per_op) => {
                let at = self.start + Duration::from_secs_f64(per_op * n as f64);
                if self.deadline.is_some_and(|d| at >= d) {
                    return None;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => Some(n),
                    _ = cancel.cancelled() => None,
                }
            }
            None if self
                .deadline
                .is_some_and(|d| tokio::time::Instant::now() >= d) =>
            {
                None
            }
            None => Some(n),
        }
    }
}

/// One client's per-workload state.
enum Worker {
    Stateless(Client),
    LeaseKeepalive {
        client: Client,
        lease: i64,
        keeper: etcd_client::LeaseKeeper,
        stream: Box<etcd_client::LeaseKeepAliveStream>,
    },
    Lock {
        session: Session,
        mutexes: HashMap<u64, Mutex>,
    },
    WatchPut {
        client: Client,
        base: Instant,
    },
}

type OpResult = Result<Option<&'static str>, String>;

impl Worker {
    async fn new(spec: &BenchSpec, mut client: Client) -> Result<Self, BenchError> {
        Ok(match spec.workload {
            Workload::LeaseKeepalive => {
                let lease = client
                    .lease_grant(KEEPALIVE_LEASE_TTL, None)
                    .await
                    .map_err(etcd("granting a lease for lease-keepalive"))?
                    .id();
                let (keeper, stream) = client.lease_keep_alive(lease).await.map_err(etcd(
                    format!("opening a keep-alive stream for lease {lease:x}"),
                ))?;
                Worker::LeaseKeepalive {
                    client,
                    lease,
                    keeper,
                    stream: Box::new(stream),
                }
            }
            Workload::Lock => Worker::Lock {
                session: Session::new(client, LOCK_SESSION_TTL)
                    .await
                    .map_err(|source| BenchError::Session {
                        context: "creating a lock session".into(),
                        source,
                    })?,
                mutexes: HashMap::new(),
            },
            _ => Worker::Stateless(client),
        })
    }

    async fn run(
        mut self,
        spec: Arc<BenchSpec>,
        pacer: Arc<Pacer>,
        control: Control,
        start: Instant,
        seed: u64,
    ) -> Recorder {
        let mut rec = Recorder::new(start);
        let mut rng = <Rng as rand::SeedableRng>::seed_from_u64(seed);
        let value = random_bytes(spec.val_size, &mut rng);
        while let Some(seq) = pacer.next(&control.cancel).await {
            let t0 = Instant::now();
            let result = self.op(&spec, seq, &mut rng, &value).await;
            let latency = t0.elapsed();
            match result {
                Ok(kind) => {
                    rec.ok(t0, latency, kind);
                    control.progress.succeeded.fetch_add(1, Ordering::Relaxed);
                }
                Err(kind) => {
                    rec.failed(t0, kind);
                    control.progress.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.close().await;
        rec
    }

    /// One operation; `Ok(Some(kind))` when a workload has several kinds.
    async fn op(&mut self, spec: &BenchSpec, seq: u64, rng: &mut Rng, value: &[u8]) -> OpResult {
        let idx = key_index(spec, seq, rng);
        match self {
            Worker::Stateless(client) => match spec.workload {
                Workload::Put | Workload::CheckPerf => {
                    client
                        .put(key(spec, idx), value, put_options(spec))
                        .await
                        .map_err(kind_of)?;
                    Ok(None)
                }
                Workload::Range => {
                    client
                        .get(
                            spec.prefix.as_str(),
                            Some(range_options(spec).with_prefix()),
                        )
                        .await
                        .map_err(kind_of)?;
                    Ok(None)
                }
                Workload::Mixed => {
                    let reads = spec.rw_ratio / (spec.rw_ratio + 1.0);
                    if rand::RngExt::random::<f64>(rng) < reads {
                        client
                            .get(key(spec, idx), Some(range_options(spec)))
                            .await
                            .map_err(kind_of)?;
                        Ok(Some("read"))
                    } else {
                        client
                            .put(key(spec, idx), value, put_options(spec))
                            .await
                            .map_err(kind_of)?;
                        Ok(Some("write"))
                    }
                }
                Workload::TxnPut => {
                    // Keys of one txn must differ: consecutive keys from idx.
                    let ops: Vec<TxnOp> = (0..spec.txn_ops as u64)
                        .map(|j| {
                            TxnOp::put(
                                key(spec, idx.wrapping_add(j) % spec.key_space_size),
                                value,
                                put_options(spec),
                            )
                        })
                        .collect();
                    client
                        .txn(Txn::new().and_then(ops))
                        .await
                        .map_err(kind_of)?;
                    Ok(None)
                }
                Workload::Delete => {
                    client.delete(key(spec, idx), None).await.map_err(kind_of)?;
                    Ok(None)
                }
                _ => Err(format!(
                    "{} has no stateless operation",
                    spec.workload.name()
                )),
            },
            Worker::LeaseKeepalive { keeper, stream, .. } => {
                keeper.keep_alive().await.map_err(kind_of)?;
                match stream.message().await.map_err(kind_of)? {
                    Some(r) if r.ttl() > 0 => Ok(None),
                    Some(_) => Err("lease expired".into()),
                    None => Err("keep-alive stream closed".into()),
                }
            }
            Worker::Lock { session, mutexes } => {
                let mutex = mutexes
                    .entry(idx)
                    .or_insert_with(|| Mutex::new(session.clone(), lock_name(spec, idx)));
                let guard = mutex
                    .lock_timeout(LOCK_WAIT)
                    .await
                    .map_err(|e| lock_error_kind(&e))?;
                guard.unlock().await.map_err(|e| lock_error_kind(&e))?;
                Ok(None)
            }
            Worker::WatchPut { client, base } => {
                // The value starts with the send time, read back by the watchers.
                let mut v = format!("{:016x}", base.elapsed().as_nanos() as u64).into_bytes();
                v.extend_from_slice(&value[..value.len().saturating_sub(16)]);
                client
                    .put(key(spec, idx), v, put_options(spec))
                    .await
                    .map_err(kind_of)?;
                Ok(None)
            }
        }
    }

    async fn close(self) {
        match self {
            Worker::LeaseKeepalive {
                mut client, lease, ..
            } => {
                let _ = client.lease_revoke(lease).await;
            }
            Worker::Lock { session, .. } => {
                let _ = session.close().await;
            }
            Worker::Stateless(_) | Worker::WatchPut { .. } => {}
        }
    }
}

fn range_options(spec: &BenchSpec) -> GetOptions {
    let mut o = GetOptions::new().with_limit(spec.limit);
    if spec.consistency == Consistency::Serializable {
        o = o.with_serializable();
    }
    if spec.keys_only {
        o = o.with_keys_only();
    }
    if spec.count_only {
        o = o.with_count_only();
    }
    o
}

/// `watch-latency`: `clients` watchers on the prefix, one paced putter whose
/// values carry the send time; latency is put-to-event per watcher.
async fn watch_latency(
    spec: &Arc<BenchSpec>,
    conns: &Connections,
    control: &Control,
) -> Result<BenchReport, BenchError> {
    let started_unix_ms = crate::time::now_ms().max(0) as u64;
    let mut admin = conns.clients[0].clone();
    let revision = admin
        .get(
            spec.prefix.as_str(),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .map_err(etcd("reading the current revision"))?
        .header()
        .map_or(0, |h| h.revision());
    let mut streams = Vec::with_capacity(spec.clients);
    for i in 0..spec.clients {
        let mut client = conns.clients[i % conns.clients.len()].clone();
        // From revision + 1: a watch from a committed revision is caught up
        // only by etcd's ~100 ms background loop.
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let stream = client
            .watch(spec.prefix.as_str(), Some(options))
            .await
            .map_err(etcd(format!("watching {}", spec.prefix)))?;
        streams.push(stream);
    }
    let start = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let mut watchers = JoinSet::new();
    for mut stream in streams {
        let (delivered, stop) = (delivered.clone(), stop.clone());
        watchers.spawn(async move {
            let mut rec = Recorder::new(start);
            loop {
                let message = tokio::select! {
                    m = stream.message() => m,
                    _ = stop.cancelled() => break,
                };
                let now = start.elapsed();
                let response = match message {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        rec.failed(Instant::now(), kind_of(e));
                        break;
                    }
                };
                for event in response.events() {
                    let sent = event
                        .kv()
                        .filter(|_| event.event_type() == EventType::Put)
                        .and_then(|kv| kv.value().get(..16))
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| u64::from_str_radix(v, 16).ok());
                    if let Some(sent) = sent {
                        let sent = Duration::from_nanos(sent);
                        rec.ok(start + sent, now.saturating_sub(sent), None);
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            rec
        });
    }
    let putter = Worker::WatchPut {
        client: conns.clients[0].clone(),
        base: start,
    };
    let pacer = Arc::new(Pacer::new(spec, start));
    let puts = putter
        .run(spec.clone(), pacer, control.clone(), start, seed(0))
        .await;
    let expected = puts.succeeded * spec.clients as u64;
    let drain_until = Instant::now() + WATCH_DRAIN;
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    stop.cancel();
    let mut deliveries = Recorder::new(start);
    while let Some(joined) = watchers.join_next().await {
        if let Ok(rec) = joined {
            deliveries.merge(rec);
        }
    }
    let missing = expected.saturating_sub(delivered.load(Ordering::Relaxed));
    deliveries.add_errors("watch event missing", missing);
    let counts = (puts.succeeded + puts.failed, puts.succeeded, puts.failed);
    deliveries.merge_errors(&puts);
    Ok(deliveries.into_report(
        (**spec).clone(),
        conns.endpoints.clone(),
        started_unix_ms,
        elapsed,
        Some(counts),
    ))
}

/// The key of index `idx`: the prefix, then `key_size` decimal digits.
fn key(spec: &BenchSpec, idx: u64) -> Vec<u8> {
    let digits = format!("{idx:0w$}", w = spec.key_size);
    let mut k = spec.prefix.clone().into_bytes();
    k.extend_from_slice(&digits.as_bytes()[digits.len() - spec.key_size..]);
    k
}

fn lock_name(spec: &BenchSpec, idx: u64) -> String {
    format!("{}lock/{idx}", spec.prefix)
}

fn key_index(spec: &BenchSpec, seq: u64, rng: &mut Rng) -> u64 {
    if spec.sequential_keys {
        seq % spec.key_space_size
    } else {
        rand::Rng::next_u64(rng) % spec.key_space_size
    }
}

/// A failure's kind for the error table: the gRPC code and etcd's message.
fn kind_of(e: etcd_client::Error) -> String {
    let text = match &e {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        _ => cause_chain(&e),
    };
    text.chars().take(100).collect()
}

fn lock_error_kind(e: &etcd_patterns::Error) -> String {
    use etcd_patterns::Error as E;
    match e {
        E::Timeout { .. } => "lock wait timed out".into(),
        E::SessionExpired { .. } => "session expired".into(),
        E::KeyDeleted { .. } => "lock key deleted".into(),
        E::Unavailable { source, .. } | E::Etcd { source, .. } => {
            let text = match source {
                etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
                other => cause_chain(other),
            };
            text.chars().take(100).collect()
        }
        other => other.to_string().chars().take(100).collect(),
    }
}

/// A seed for one client's key choice (distinct per client).
fn seed(_client: usize) -> u64 {
    rand::random()
}

/// Key choice and payloads: fast, not cryptographic.
type Rng = rand::rngs::SmallRng;

fn random_bytes(n: usize, rng: &mut Rng) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..n)
        .map(|_| ALPHABET[(rand::Rng::next_u64(rng) % ALPHABET.len() as u64) as usize])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_prefix_and_key_size() {
        let spec = BenchSpec {
            key_size: 4,
            ..BenchSpec::default()
        };
        assert_eq!(key(&spec, 7), b"/etcd-monitor-bench/0007".to_vec());
        assert_eq!(key(&spec, 123_456), b"/etcd-monitor-bench/3456".to_vec());
    }

    #[test]
    fn reads_process_cpu() {
        let before = crate::metrics::process_cpu_seconds().expect("Linux /proc");
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(crate::metrics::process_cpu_seconds().unwrap() >= before);
    }

    #[tokio::test]
    async fn pacer_spreads_operations_evenly() {
        let spec = BenchSpec {
            rate: Some(100.0),
            total: Some(50),
            ..BenchSpec::default()
        };
        let start = Instant::now();
        let pacer = Pacer::new(&spec, start);
        let cancel = CancellationToken::new();
        let t0 = tokio::time::Instant::now();
        let mut n = 0;
        while pacer.next(&cancel).await.is_some() {
            n += 1;
        }
        assert_eq!(n, 50);
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(485) && took <= Duration::from_millis(700),
            "{took:?}"
        );
    }
}
