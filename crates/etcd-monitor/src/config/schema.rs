//! The configuration's shape, defaults and semantic checks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ApiConfig;
use super::duration;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The etcd clusters to watch.
    pub clusters: Vec<ClusterConfig>,
    /// Collection intervals.
    pub monitoring: MonitoringConfig,
    /// The HTTP server (REST API, `/metrics`, dashboard).
    pub api: ApiConfig,
    /// Where history is kept.
    pub storage: StorageConfig,
    /// Log output.
    pub logging: LoggingConfig,
    /// Alert rules, routes, channels and silences.
    pub alerts: super::alerts::AlertsConfig,
    /// Scheduled benchmarks.
    pub benchmark: super::bench::BenchmarkConfig,
    /// Scheduled keyspace scans and growth rules.
    pub keyspace: super::keyspace::KeyspaceConfig,
    /// Maintenance the monitor runs by itself (the defrag autopilot).
    pub maintenance: super::maintenance::MaintenanceConfig,
    /// Scheduled backups with restore drills.
    pub backup: super::backup::BackupConfig,
    /// Replicas sharing the work (`ha.*`).
    pub ha: super::ha::HaConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            clusters: vec![ClusterConfig::default()],
            monitoring: MonitoringConfig::default(),
            api: ApiConfig::default(),
            storage: StorageConfig::default(),
            logging: LoggingConfig::default(),
            alerts: super::alerts::AlertsConfig::default(),
            benchmark: super::bench::BenchmarkConfig::default(),
            keyspace: super::keyspace::KeyspaceConfig::default(),
            maintenance: super::maintenance::MaintenanceConfig::default(),
            backup: super::backup::BackupConfig::default(),
            ha: super::ha::HaConfig::default(),
        }
    }
}

/// How to reach one etcd cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Name used in the API, metrics labels and alerts.
    pub name: String,
    /// Client URLs (`http://host:2379`, `https://...`; a bare `host:port`
    /// means http, or https when `tls` is set).
    pub endpoints: Vec<String>,
    /// How long to wait for a connection to an endpoint.
    #[serde(with = "duration")]
    pub dial_timeout: Duration,
    /// How long one request may take.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Client TLS; absent for plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// etcd user name (auth enabled clusters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password in clear; prefer `password_file` or the environment variable
    /// `ETCD_MONITOR_CLUSTERS__<N>__PASSWORD`.
    #[serde(
        with = "super::secret::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub password: Option<String>,
    /// File whose first line is the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Refuse answers from members that have lost their leader.
    pub require_leader: bool,
    /// Per-member Prometheus metrics URL, keyed by member name or client
    /// endpoint, for clusters whose client port is TLS-only.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics_urls: BTreeMap<String, String>,
    /// Members stopped on purpose (by member name or client URL): while
    /// every member is listed, the cluster counts as intentionally stopped
    /// and `etcdBackupTooOld` stays quiet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paused_members: Vec<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: "default".into(),
            endpoints: vec!["http://127.0.0.1:2379".into()],
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            tls: None,
            username: None,
            password: None,
            password_file: None,
            require_leader: true,
            metrics_urls: BTreeMap::new(),
            paused_members: Vec::new(),
        }
    }
}

/// Client TLS files.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// CA bundle that signed the members' certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate for client-cert auth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Key of the client certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Name to verify in the server certificate instead of the endpoint's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// Collection intervals and health thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// How often each cluster's health is evaluated.
    #[serde(with = "duration")]
    pub health_check_interval: Duration,
    /// How often probes run and member metrics are scraped.
    #[serde(with = "duration")]
    pub metrics_interval: Duration,
    /// The window of the members' latency quantiles and rates (fsync,
    /// commit, peer round trip and gRPC p99, failed requests and
    /// proposals): computed from what changed between the scrapes of the
    /// last `metrics_window`, as Prometheus' `rate(...[5m])` does.
    #[serde(with = "duration")]
    pub metrics_window: Duration,
    /// How often members' KV hashes are compared (hashkv at one revision).
    #[serde(with = "duration")]
    pub consistency_check_interval: Duration,
    /// Requests of each probe kind per metrics round.
    pub probes_per_round: u32,
    /// Thresholds of the health findings.
    pub thresholds: HealthThresholds,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            health_check_interval: Duration::from_secs(10),
            metrics_interval: Duration::from_secs(15),
            metrics_window: Duration::from_secs(300),
            consistency_check_interval: Duration::from_secs(300),
            probes_per_round: 3,
            thresholds: HealthThresholds::default(),
        }
    }
}

/// Thresholds of the health findings that no alert rule shares. A
/// condition judged by both a finding and an alert rule (quota,
/// fragmentation, leader changes) has one threshold, the rule's, set under
/// `alerts.rules.<name>.threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthThresholds {
    /// Raft entries a member may lag behind the most advanced member.
    pub max_raft_index_lag: u64,
    /// Committed entries a member may have not yet applied.
    pub max_apply_lag: u64,
    /// DB size as a percentage of the quota reported as a warning finding,
    /// ahead of the `etcdDatabaseQuotaLowSpace` rule's critical threshold.
    pub db_quota_warning_percent: f64,
    /// Fragmentation is reported (finding and alert) once the allocated
    /// database is at least this big (bytes, or `100MiB`).
    #[serde(with = "super::size")]
    pub fragmentation_min_db_size: u64,
    /// A member slower than this to answer Status or a read is reported.
    #[serde(with = "duration")]
    pub slow_member: Duration,
    /// Moved to `alerts.rules.etcdDatabaseHighFragmentationRatio.threshold`.
    #[serde(default, skip_serializing)]
    pub fragmentation_ratio: Option<serde_yaml_ng::Value>,
    /// Moved to `alerts.rules.etcdLeaderChangesPerHour.threshold`.
    #[serde(default, skip_serializing)]
    pub max_leader_changes_per_hour: Option<serde_yaml_ng::Value>,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds {
            max_raft_index_lag: 1000,
            max_apply_lag: 5000,
            db_quota_warning_percent: 80.0,
            fragmentation_min_db_size: 100 * 1024 * 1024,
            slow_member: Duration::from_millis(500),
            fragmentation_ratio: None,
            max_leader_changes_per_hour: None,
        }
    }
}

/// The history store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://PATH` (default) or `postgres://user@host/db`.
    pub url: String,
    /// File whose first line is the database password, put into `url`
    /// (PostgreSQL); keeps the password out of the configuration file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// How long history is kept.
    #[serde(with = "duration")]
    pub retention: Duration,
    /// How long the audit log is kept.
    #[serde(with = "duration")]
    pub audit_retention: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: "sqlite://./etcd-monitor.db".into(),
            password_file: None,
            retention: Duration::from_secs(7 * 24 * 3600),
            audit_retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

impl StorageConfig {
    /// The URL to connect with: `url`, with the password of
    /// `password_file` put in (percent-encoded). The error names the file.
    pub fn connect_url(&self) -> Result<String, String> {
        let Some(file) = &self.password_file else {
            return Ok(self.url.clone());
        };
        let password = super::secret::read_secret_file(file)
            .map_err(|e| format!("storage.password_file: {e}"))?;
        let mut url = url::Url::parse(&self.url).map_err(|e| {
            format!(
                "storage.url {}: {e}",
                super::secret::redact_url_password(&self.url)
            )
        })?;
        url.set_password(Some(&password))
            .map_err(|()| "storage.url: this URL cannot hold a password".to_string())?;
        Ok(url.to_string())
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `trace`, `debug`, `info`, `warn`, `error`, or a tracing filter such
    /// as `info,etcd_monitor=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl ClusterConfig {
    /// The checks of how to reach a cluster (endpoints, timeouts,
    /// credentials, TLS files), each named by `at(key)`: shared by
    /// `clusters[]` and `ha.etcd`.
    pub(crate) fn connection_problems(
        &self,
        at: &dyn Fn(&str) -> String,
        out: &mut Vec<(String, String)>,
    ) {
        if self.endpoints.is_empty() {
            out.push((at("endpoints"), "at least one endpoint is required".into()));
        }
        for (j, e) in self.endpoints.iter().enumerate() {
            if let Err(msg) = normalize_endpoint(e, self.tls.is_some()) {
                out.push((at(&format!("endpoints[{j}]")), msg));
            }
        }
        for (key, d) in [
            ("dial_timeout", self.dial_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                out.push((at(key), "must be greater than zero".into()));
            }
        }
        if self.password.is_some() && self.password_file.is_some() {
            out.push((
                at("password"),
                "set either password or password_file, not both".into(),
            ));
        }
        if (self.password.is_some() || self.password_file.is_some()) && self.username.is_none() {
            out.push((at("username"), "a password needs a username".into()));
        }
        if let Some(p) = &self.password_file {
            if let Err(e) = std::fs::File::open(p) {
                out.push((
                    at("password_file"),
                    format!("cannot read {}: {e}", p.display()),
                ));
            }
        }
        if let Some(tls) = &self.tls {
            for (key, file) in [
                ("ca_file", &tls.ca_file),
                ("cert_file", &tls.cert_file),
                ("key_file", &tls.key_file),
            ] {
                if let Some(p) = file {
                    if let Err(e) = std::fs::File::open(p) {
                        out.push((
                            at(&format!("tls.{key}")),
                            format!("cannot read {}: {e}", p.display()),
                        ));
                    }
                }
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                out.push((at("tls"), "cert_file and key_file go together".into()));
            }
        }
    }
}

impl Config {
    /// Semantic checks that serde cannot express. Returns `(key path, message)` pairs.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.clusters.is_empty() {
            out.push(("clusters".into(), "at least one cluster is required".into()));
        }
        for (i, c) in self.clusters.iter().enumerate() {
            let at = |key: &str| format!("clusters[{i}].{key}");
            if c.name.trim().is_empty() {
                out.push((at("name"), "must not be empty".into()));
            }
            if self.clusters.iter().take(i).any(|o| o.name == c.name) {
                out.push((at("name"), format!("duplicate cluster name {:?}", c.name)));
            }
            c.connection_problems(&at, &mut out);
            for (member, url) in &c.metrics_urls {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    out.push((
                        format!("clusters[{i}].metrics_urls.{member}"),
                        format!("{url:?} is not an http(s) URL"),
                    ));
                }
            }
        }
        for (key, d) in [
            (
                "monitoring.health_check_interval",
                self.monitoring.health_check_interval,
            ),
            (
                "monitoring.metrics_interval",
                self.monitoring.metrics_interval,
            ),
        ] {
            if d < Duration::from_millis(100) {
                out.push((
                    key.into(),
                    format!("{} is too short: use at least 100ms", duration::format(&d)),
                ));
            }
        }
        let (window, interval) = (
            self.monitoring.metrics_window,
            self.monitoring.metrics_interval,
        );
        if window < interval * 2 {
            out.push((
                "monitoring.metrics_window".into(),
                format!(
                    "{} holds fewer than two scrapes at monitoring.metrics_interval {}: use at least {}",
                    duration::format(&window),
                    duration::format(&interval),
                    duration::format(&(interval * 2))
                ),
            ));
        }
        if self.monitoring.consistency_check_interval < Duration::from_secs(1) {
            out.push((
                "monitoring.consistency_check_interval".into(),
                "use at least 1s".into(),
            ));
        }
        if self.monitoring.probes_per_round == 0 || self.monitoring.probes_per_round > 100 {
            out.push((
                "monitoring.probes_per_round".into(),
                "must be between 1 and 100".into(),
            ));
        }
        let t = &self.monitoring.thresholds;
        if !(0.0..=100.0).contains(&t.db_quota_warning_percent) {
            out.push((
                "monitoring.thresholds.db_quota_warning_percent".into(),
                "must be between 0 and 100".into(),
            ));
        }
        for (key, set, rule) in [
            (
                "fragmentation_ratio",
                t.fragmentation_ratio.is_some(),
                "etcdDatabaseHighFragmentationRatio",
            ),
            (
                "max_leader_changes_per_hour",
                t.max_leader_changes_per_hour.is_some(),
                "etcdLeaderChangesPerHour",
            ),
        ] {
            if set {
                out.push((
                    format!("monitoring.thresholds.{key}"),
                    format!("moved: set alerts.rules.{rule}.threshold (one threshold serves the health finding and the alert)"),
                ));
            }
        }
        self.api.problems(&mut out);
        if self.storage.retention < Duration::from_secs(60) {
            out.push((
                "storage.retention".into(),
                "keep history for at least 1m".into(),
            ));
        }
        if self.storage.audit_retention < Duration::from_secs(3600) {
            out.push((
                "storage.audit_retention".into(),
                "keep the audit log for at least 1h".into(),
            ));
        }
        let url = &self.storage.url;
        let ok = url.strip_prefix("sqlite://").is_some_and(|p| !p.is_empty())
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://");
        if !ok {
            out.push((
                "storage.url".into(),
                format!("{url:?} is not sqlite://PATH or postgres://USER@HOST/DB"),
            ));
        }
        if let Some(p) = &self.storage.password_file {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                out.push((
                    "storage.password_file".into(),
                    "only a postgres:// storage.url takes a password".into(),
                ));
            } else if url_has_password(url) {
                out.push((
                    "storage.password_file".into(),
                    "storage.url has a password already: remove it from the URL".into(),
                ));
            } else if let Err(e) = super::secret::read_secret_file(p) {
                out.push(("storage.password_file".into(), e));
            }
        }
        if let Err(e) = check_log_level(&self.logging.level) {
            out.push(("logging.level".into(), e));
        }
        out.extend(self.alerts.problems());
        out.extend(self.benchmark.problems(&self.clusters));
        out.extend(self.keyspace.problems());
        out.extend(self.maintenance.problems());
        let names: Vec<&str> = self.clusters.iter().map(|c| c.name.as_str()).collect();
        out.extend(self.backup.problems(&names));
        out.extend(self.ha.problems(&self.clusters, &self.storage.url));
        out
    }
}

/// A level (`info`), or a tracing filter whose every directive names a target
/// (`info,etcd_monitor=debug`). A bare word that is not a level is a typo,
/// not a target.
pub(crate) fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let hint =
        "use trace, debug, info, warn, error or off, or a filter like info,etcd_monitor=debug";
    for directive in level.split(',').map(str::trim) {
        if !directive.contains('=')
            && !directive.contains('[')
            && !LEVELS.contains(&directive.to_ascii_lowercase().as_str())
        {
            return Err(format!("{directive:?} is not a log level: {hint}"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| format!("{level:?}: {e}: {hint}"))
}

fn url_has_password(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.password().is_some())
}

/// Turns `host:port` into a URL (`https` when TLS is configured) and checks
/// that a URL has a scheme, a host and a port.
pub fn normalize_endpoint(raw: &str, tls: bool) -> Result<String, String> {
    let raw = raw.trim();
    let url = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("{}://{raw}", if tls { "https" } else { "http" })
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("", ""));
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "endpoint {raw:?} has scheme {scheme:?}: use http:// or https://"
        ));
    }
    let authority = rest.trim_end_matches('/');
    let (host, port) = authority.rsplit_once(':').ok_or_else(|| {
        format!("endpoint {raw:?} has no port: write it as host:port, e.g. 127.0.0.1:2379")
    })?;
    if host.is_empty() || authority.contains('/') {
        return Err(format!("endpoint {raw:?} is not host:port"));
    }
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("endpoint {raw:?} has an invalid port {port:?}"));
    }
    Ok(format!("{scheme}://{authority}"))
}
