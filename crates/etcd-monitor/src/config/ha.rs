//! `ha.*`: several `etcd-monitor run` replicas sharing one PostgreSQL store
//! and splitting the clusters between them, coordinated through etcd.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use super::schema::{ClusterConfig, TlsConfig};

/// `ha.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// Run as one replica of several. Default: false (one process owns
    /// every cluster).
    pub enabled: bool,
    /// Coordinate through this watched cluster (`clusters[].name`); or `etcd`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Coordinate through a dedicated etcd cluster; or `cluster`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd: Option<HaEtcdConfig>,
    /// Key prefix of the replicas' registrations and the clusters'
    /// ownership keys. Default: `/etcd-monitor/ha/`
    pub prefix: String,
    /// Session TTL: a replica that stops renewing loses its clusters after
    /// this. Default: 10s
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// This replica's name, unique among the replicas. Default: the host
    /// name and the API port (`host:8080`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica_name: Option<String>,
    /// The URL other replicas and people reach this replica's API at,
    /// shown by `GET /api/v1/replicas`. Default: `api.listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_url: Option<String>,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            enabled: false,
            cluster: None,
            etcd: None,
            prefix: "/etcd-monitor/ha/".into(),
            ttl: Duration::from_secs(10),
            replica_name: None,
            advertise_url: None,
        }
    }
}

/// `ha.etcd`: how to reach a dedicated coordination cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaEtcdConfig {
    /// Client URLs.
    pub endpoints: Vec<String>,
    /// Client TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// etcd user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// etcd password (prefer `password_file`).
    #[serde(
        with = "super::secret::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub password: Option<String>,
    /// File whose first line is the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Connection timeout.
    #[serde(with = "duration")]
    pub dial_timeout: Duration,
    /// Per-request timeout.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
}

impl Default for HaEtcdConfig {
    fn default() -> Self {
        let c = ClusterConfig::default();
        HaEtcdConfig {
            endpoints: Vec::new(),
            tls: None,
            username: None,
            password: None,
            password_file: None,
            dial_timeout: c.dial_timeout,
            request_timeout: c.request_timeout,
        }
    }
}

impl HaConfig {
    /// The coordination cluster as a cluster entry (to connect with), from
    /// `etcd` or the watched cluster named by `cluster`.
    pub fn coordination_cluster(&self, clusters: &[ClusterConfig]) -> Option<ClusterConfig> {
        if let Some(e) = &self.etcd {
            return Some(ClusterConfig {
                name: "ha".into(),
                endpoints: e.endpoints.clone(),
                dial_timeout: e.dial_timeout,
                request_timeout: e.request_timeout,
                tls: e.tls.clone(),
                username: e.username.clone(),
                password: e.password.clone(),
                password_file: e.password_file.clone(),
                require_leader: true,
                ..ClusterConfig::default()
            });
        }
        let name = self.cluster.as_deref()?;
        clusters.iter().find(|c| c.name == name).cloned()
    }

    /// The checks of `ha.*` (`storage_url`: PostgreSQL is required).
    pub(crate) fn problems(
        &self,
        clusters: &[ClusterConfig],
        storage_url: &str,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !self.enabled {
            return out;
        }
        match (&self.cluster, &self.etcd) {
            (Some(_), Some(_)) => out.push((
                "ha.cluster".into(),
                "set either ha.cluster (a watched cluster) or ha.etcd (a dedicated one), not both"
                    .into(),
            )),
            (None, None) => out.push((
                "ha".into(),
                "name the coordination cluster: ha.cluster (a watched cluster) or ha.etcd.endpoints"
                    .into(),
            )),
            (Some(name), None) => {
                if !clusters.iter().any(|c| &c.name == name) {
                    out.push((
                        "ha.cluster".into(),
                        format!("{name:?} is not a configured cluster (clusters[].name)"),
                    ));
                }
            }
            (None, Some(_)) => {
                if let Some(c) = self.coordination_cluster(clusters) {
                    c.connection_problems(&|key| format!("ha.etcd.{key}"), &mut out);
                }
            }
        }
        if !(storage_url.starts_with("postgres://") || storage_url.starts_with("postgresql://")) {
            out.push((
                "ha.enabled".into(),
                "replicas share their alert state and outbox: storage.url must be postgres://"
                    .into(),
            ));
        }
        if self.ttl < Duration::from_secs(2) || self.ttl > Duration::from_secs(300) {
            out.push((
                "ha.ttl".into(),
                format!(
                    "{} is out of range: use 2s to 5m",
                    duration::format(&self.ttl)
                ),
            ));
        }
        let p = self.prefix.trim();
        if p.is_empty() || p == "/" {
            out.push((
                "ha.prefix".into(),
                "use a prefix of its own, like /etcd-monitor/ha/".into(),
            ));
        }
        if let Some(name) = &self.replica_name {
            if name.is_empty() || name.contains('/') || name.len() > 128 {
                out.push((
                    "ha.replica_name".into(),
                    "use 1 to 128 characters and no '/'".into(),
                ));
            }
        }
        if let Some(url) = &self.advertise_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                out.push((
                    "ha.advertise_url".into(),
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }
        out
    }
}
