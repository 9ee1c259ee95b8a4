//! What to run: a workload and its parameters, named after etcd's own
//! `benchmark` tool. Readable from YAML (`benchmark.*` in the configuration)
//! and from the command line; every field has a default.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The workloads `bench` can run.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// One put per operation.
    #[default]
    Put,
    /// One range (get) over the prefix per operation.
    Range,
    /// Ranges and puts, `rw_ratio` reads per write.
    Mixed,
    /// One transaction of `txn_ops` puts per operation.
    TxnPut,
    /// One delete per operation, on keys written beforehand.
    Delete,
    /// Time from a put to its watch event, for `clients` watchers.
    WatchLatency,
    /// One lease keep-alive round trip per operation.
    LeaseKeepalive,
    /// Acquire and release of an etcd-patterns `Mutex` per operation.
    Lock,
    /// `etcdctl check perf`: fixed parameters and a PASS/FAIL verdict.
    CheckPerf,
}

impl Workload {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Range => "range",
            Workload::Mixed => "mixed",
            Workload::TxnPut => "txn-put",
            Workload::Delete => "delete",
            Workload::WatchLatency => "watch-latency",
            Workload::LeaseKeepalive => "lease-keepalive",
            Workload::Lock => "lock",
            Workload::CheckPerf => "check-perf",
        }
    }

    /// Whether the run writes keys under its prefix (and so removes them
    /// afterwards).
    pub fn writes_keys(self) -> bool {
        !matches!(self, Workload::LeaseKeepalive | Workload::Lock)
    }

    /// Whether keys must exist before the measured phase.
    pub fn needs_populated_keys(self) -> bool {
        matches!(self, Workload::Range | Workload::Mixed | Workload::Delete)
    }
}

/// The Go original's benchmark types (`--benchmark-type`, the `type` of
/// `POST /api/v1/performance/benchmark`), kept for its users.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LegacyBenchmarkType {
    /// Puts (`put`).
    #[default]
    Write,
    /// Ranges (`range`).
    Read,
    /// Reads and puts (`mixed`).
    Mixed,
}

impl LegacyBenchmarkType {
    /// The workload it runs.
    pub fn workload(self) -> Workload {
        match self {
            LegacyBenchmarkType::Write => Workload::Put,
            LegacyBenchmarkType::Read => Workload::Range,
            LegacyBenchmarkType::Mixed => Workload::Mixed,
        }
    }
}

/// Read consistency of ranges, as etcd's `--consistency`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
pub enum Consistency {
    /// Linearizable: goes through the leader (a quorum read).
    #[default]
    #[serde(rename = "l")]
    #[value(name = "l")]
    Linearizable,
    /// Serializable: answered by the member the client talks to.
    #[serde(rename = "s")]
    #[value(name = "s")]
    Serializable,
}

/// `check perf` load profiles, exactly etcdctl's.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Load {
    /// 150 writes/s from 50 clients.
    #[default]
    S,
    /// 1000 writes/s from 200 clients.
    M,
    /// 8000 writes/s from 500 clients.
    L,
    /// 15000 writes/s from 1000 clients.
    Xl,
}

impl Load {
    /// Target writes per second and number of clients (etcdctl's table).
    pub fn target(self) -> (f64, usize) {
        match self {
            Load::S => (150.0, 50),
            Load::M => (1000.0, 200),
            Load::L => (8000.0, 500),
            Load::Xl => (15000.0, 1000),
        }
    }
}

/// etcdctl check perf: 60 s of puts with 256 B keys and 1 KiB values.
pub const CHECK_PERF_DURATION: Duration = Duration::from_secs(60);
const CHECK_PERF_KEY_SIZE: usize = 256;
const CHECK_PERF_VAL_SIZE: usize = 1024;

/// Default key prefix; everything under it is deleted after a run.
pub const DEFAULT_PREFIX: &str = "/etcd-monitor-bench/";
/// Operations when neither `total` nor `duration` is given (etcd's default).
pub const DEFAULT_TOTAL: u64 = 10_000;
/// Most keys written before a range, mixed or delete run.
pub const MAX_POPULATED_KEYS: u64 = 1_000_000;

/// A benchmark run: workload and parameters.
///
/// ```
/// let spec: etcd_monitor::bench::BenchSpec =
///     serde_yaml_ng::from_str("workload: put\nclients: 10\nduration: 30s\nrate: 500").unwrap();
/// assert_eq!(spec.clients, 10);
/// assert_eq!(spec.key_size, 8);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BenchSpec {
    /// What each operation does.
    pub workload: Workload,
    /// gRPC connections; clients are spread over them round-robin.
    pub conns: usize,
    /// Concurrent clients (watchers for `watch-latency`).
    pub clients: usize,
    /// Operations in all; with `duration` the run stops at whichever comes first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// How long to run.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "30s")]
    pub duration: Option<Duration>,
    /// Operations per second across all clients, evenly paced; unlimited when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Key size in bytes, after the prefix.
    pub key_size: usize,
    /// Value size in bytes.
    pub val_size: usize,
    /// Number of distinct keys.
    pub key_space_size: u64,
    /// Keys in order 0, 1, 2, ... instead of at random.
    pub sequential_keys: bool,
    /// Key prefix; must be empty before the run, and is emptied after it.
    pub prefix: String,
    /// Send everything to the leader's endpoint only.
    pub target_leader: bool,
    /// Leave the written keys in place.
    pub keep: bool,
    /// Ranges: linearizable or serializable.
    pub consistency: Consistency,
    /// Ranges: most keys returned (0: no limit).
    pub limit: i64,
    /// Ranges: keys without values.
    pub keys_only: bool,
    /// Ranges: the count only.
    pub count_only: bool,
    /// `mixed`: reads per write.
    pub rw_ratio: f64,
    /// `txn-put`: puts per transaction.
    pub txn_ops: usize,
    /// `check-perf`: the load profile.
    pub load: Load,
    /// `check-perf`: compact the history after the run.
    pub auto_compact: bool,
    /// `check-perf`: defragment every member after the run (implies `auto_compact`).
    pub auto_defrag: bool,
    /// Set by the run, never by callers: the lease its keys are written
    /// with, so cleanup removes exactly the keys this run wrote (by revoking
    /// it) and a run whose process dies leaves them for a minute at most.
    #[serde(skip)]
    pub lease: Option<i64>,
}

impl Default for BenchSpec {
    fn default() -> Self {
        BenchSpec {
            workload: Workload::Put,
            conns: 1,
            clients: 1,
            total: None,
            duration: None,
            rate: None,
            key_size: 8,
            val_size: 8,
            key_space_size: 1,
            sequential_keys: false,
            prefix: DEFAULT_PREFIX.to_string(),
            target_leader: false,
            keep: false,
            consistency: Consistency::Linearizable,
            limit: 0,
            keys_only: false,
            count_only: false,
            rw_ratio: 1.0,
            txn_ops: 1,
            load: Load::S,
            auto_compact: false,
            auto_defrag: false,
            lease: None,
        }
    }
}

/// A spec that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid benchmark: {0}")]
pub struct InvalidSpec(pub String);

impl BenchSpec {
    /// `etcdctl check perf --load <load>`: its clients, rate, key and value
    /// sizes and 60 s duration, random keys.
    pub fn check_perf(load: Load) -> Self {
        BenchSpec {
            workload: Workload::CheckPerf,
            load,
            ..BenchSpec::default()
        }
    }

    /// The spec as it will run: `check-perf` gets etcdctl's parameters
    /// (only `duration` may override, for short test runs), and a run
    /// without `total` or `duration` does [`DEFAULT_TOTAL`] operations.
    /// Fails with a message naming the field when the spec cannot run.
    pub fn resolved(&self) -> Result<BenchSpec, InvalidSpec> {
        let mut s = self.clone();
        if s.workload == Workload::CheckPerf {
            let (rate, clients) = s.load.target();
            s.rate = Some(rate);
            s.clients = clients;
            s.total = None;
            s.duration = Some(s.duration.unwrap_or(CHECK_PERF_DURATION));
            s.key_size = CHECK_PERF_KEY_SIZE;
            s.val_size = CHECK_PERF_VAL_SIZE;
            s.key_space_size = u64::MAX;
            s.sequential_keys = false;
        } else if s.total.is_none() && s.duration.is_none() {
            s.total = Some(DEFAULT_TOTAL);
        }
        if s.workload == Workload::WatchLatency {
            // The value carries the send time as 16 hex digits.
            s.val_size = s.val_size.max(16);
        }
        s.auto_compact |= s.auto_defrag;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), InvalidSpec> {
        let bad = |m: String| Err(InvalidSpec(m));
        if self.clients == 0 {
            return bad("clients must be at least 1".into());
        }
        if self.conns == 0 {
            return bad("conns must be at least 1".into());
        }
        if self.total == Some(0) {
            return bad("total must be at least 1".into());
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return bad("duration must be longer than 0s".into());
        }
        if let Some(rate) = self.rate
            && !(rate > 0.0 && rate.is_finite())
        {
            return bad(format!(
                "rate must be a positive number of operations per second, not {rate}"
            ));
        }
        if self.key_size == 0 {
            return bad("key_size must be at least 1 byte".into());
        }
        if self.key_space_size == 0 {
            return bad("key_space_size must be at least 1".into());
        }
        if self.workload.needs_populated_keys() && self.key_space_size > MAX_POPULATED_KEYS {
            return bad(format!(
                "{} writes key_space_size keys before it starts; at most {MAX_POPULATED_KEYS}",
                self.workload.name()
            ));
        }
        if self.prefix.trim_matches('/').is_empty() {
            return bad(format!(
                "prefix {:?} would cover the whole keyspace, and bench deletes everything under its prefix: use e.g. {DEFAULT_PREFIX}",
                self.prefix
            ));
        }
        if !(self.rw_ratio > 0.0 && self.rw_ratio.is_finite()) {
            return bad(format!(
                "rw_ratio must be a positive number, not {}",
                self.rw_ratio
            ));
        }
        if self.txn_ops == 0 {
            return bad("txn_ops must be at least 1".into());
        }
        if self.workload == Workload::TxnPut && self.txn_ops as u64 > self.key_space_size {
            return bad(format!(
                "a transaction cannot put the same key twice: txn_ops ({}) must not exceed key_space_size ({})",
                self.txn_ops, self.key_space_size
            ));
        }
        if self.limit < 0 {
            return bad("limit must be 0 (no limit) or more".into());
        }
        Ok(())
    }
}

/// `Option<Duration>` written as `30s`, `1m30s`.
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => crate::config::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(
            #[serde(deserialize_with = "crate::config::duration::deserialize")] Duration,
        );
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(d)| d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_perf_takes_etcdctl_parameters() {
        let s = BenchSpec::check_perf(Load::M).resolved().unwrap();
        assert_eq!((s.rate, s.clients), (Some(1000.0), 200));
        assert_eq!((s.key_size, s.val_size), (256, 1024));
        assert_eq!(s.duration, Some(Duration::from_secs(60)));
        let short = BenchSpec {
            duration: Some(Duration::from_secs(2)),
            ..BenchSpec::check_perf(Load::S)
        };
        assert_eq!(
            short.resolved().unwrap().duration,
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn yaml_defaults_and_errors() {
        let s: BenchSpec =
            serde_yaml_ng::from_str("workload: range\nconsistency: s\nduration: 2s").unwrap();
        assert_eq!(s.consistency, Consistency::Serializable);
        assert_eq!(s.duration, Some(Duration::from_secs(2)));
        assert_eq!(s.resolved().unwrap().total, None);
        assert_eq!(
            BenchSpec::default().resolved().unwrap().total,
            Some(DEFAULT_TOTAL)
        );
        assert!(serde_yaml_ng::from_str::<BenchSpec>("clientz: 3").is_err());
        let round: BenchSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(round, s);
    }

    #[test]
    fn rejects_a_prefix_covering_everything() {
        for prefix in ["", "/", "//"] {
            let s = BenchSpec {
                prefix: prefix.into(),
                ..BenchSpec::default()
            };
            let err = s.resolved().unwrap_err().to_string();
            assert!(err.contains("whole keyspace"), "{err}");
        }
    }
}
