//! `backup.*`: scheduled snapshots of a cluster to a directory or to
//! S3-compatible object storage, with retention and restore drills.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cron::Cron;

/// `backup.*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// The schedules; none: no backups.
    pub schedules: Vec<BackupSchedule>,
    /// Where snapshots bound for object storage, or being compressed or
    /// verified, are written first (a private directory is made inside).
    /// Default: the system's temporary directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staging_dir: Option<PathBuf>,
}

/// `backup.schedules[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSchedule {
    /// Names the schedule in the API, metrics, alerts and file names.
    pub name: String,
    /// The cluster (`clusters[].name`); default: the first configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// How often a backup is taken; or `cron`.
    #[serde(
        default,
        with = "crate::config::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub every: Option<Duration>,
    /// When backups are taken, as a cron schedule in UTC; instead of `every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<Cron>,
    /// A directory (`/var/backups/etcd`) or `s3://bucket/prefix`.
    pub target: String,
    /// How to reach an `s3://` target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
    /// `zstd` or `none`. Default: none
    #[serde(default)]
    pub compression: Compression,
    /// Which backups are kept. Default: the newest 7.
    #[serde(default)]
    pub retention: Retention,
    /// Prove every Nth backup by restoring it into a throwaway member (1:
    /// every backup; 0: never). Default: 1
    #[serde(default = "one")]
    pub verify_every: u32,
}

fn one() -> u32 {
    1
}

/// How an `s3://` target is reached. Credentials come from
/// `credentials_file`, else from `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The server's URL (`http://127.0.0.1:9000`, `https://s3.example.com`);
    /// default: AWS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The region. Default: `AWS_REGION`, else `us-east-1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// An AWS shared credentials file (`aws_access_key_id`,
    /// `aws_secret_access_key`, optionally `aws_session_token`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// The profile (section) of `credentials_file`. Default: `default`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// How backup files are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// As etcd sends it (`etcdctl snapshot restore` reads it directly).
    #[default]
    None,
    /// Zstandard (level 3).
    Zstd,
}

impl Compression {
    /// The file name's extension for this compression (after `.db`).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
        }
    }

    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
        }
    }
}

/// `backup.schedules[].retention`: a backup is kept while it is among the
/// newest `count`, or the newest of its day within the last `keep_daily`
/// days; never once older than `max_age`. The newest good backup is never
/// removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Keep the newest N. Default: 7
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Remove backups older than this.
    #[serde(
        with = "crate::config::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
    /// Also keep the newest backup of each of the last N days (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            count: Some(7),
            max_age: None,
            keep_daily: None,
        }
    }
}

impl BackupSchedule {
    /// The cluster, or the first configured.
    pub fn cluster_name<'a>(&'a self, config: &'a super::Config) -> &'a str {
        match &self.cluster {
            Some(c) => c,
            None => config.clusters.first().map_or("", |c| c.name.as_str()),
        }
    }
}

impl BackupConfig {
    /// Checks, as `(key path, message)`.
    pub(crate) fn problems(&self, cluster_names: &[&str]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.schedules.iter().enumerate() {
            let at = |k: &str| format!("backup.schedules[{i}].{k}");
            let good_name = !s.name.is_empty()
                && s.name.len() <= 64
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !good_name {
                out.push((
                    at("name"),
                    format!(
                        "{:?}: 1 to 64 letters, digits, '-' or '_' (it starts file names)",
                        s.name
                    ),
                ));
            } else if !names.insert(s.name.as_str()) {
                out.push((
                    at("name"),
                    format!("{:?} is used by another schedule", s.name),
                ));
            }
            if let Some(c) = &s.cluster {
                if !cluster_names.contains(&c.as_str()) {
                    out.push((
                        at("cluster"),
                        format!(
                            "no cluster is named {c:?} (configured: {})",
                            cluster_names.join(", ")
                        ),
                    ));
                }
            }
            match (&s.every, &s.cron) {
                (Some(_), Some(_)) => {
                    out.push((at("cron"), "set either every or cron, not both".into()))
                }
                (None, None) => out.push((
                    at("every"),
                    "required: how often (every: 6h) or when (cron: \"0 3 * * *\")".into(),
                )),
                (Some(e), None) if *e < Duration::from_secs(1) => out.push((
                    at("every"),
                    "at most one backup a second (every >= 1s)".into(),
                )),
                _ => {}
            }
            if s.target.trim().is_empty() {
                out.push((
                    at("target"),
                    "required: a directory or s3://bucket/prefix".into(),
                ));
            } else if let Some(rest) = s.target.strip_prefix("s3://") {
                if rest.split('/').next().is_none_or(str::is_empty) {
                    out.push((
                        at("target"),
                        format!("{:?}: s3://BUCKET/prefix needs a bucket", s.target),
                    ));
                }
            } else if s.target.contains("://") {
                out.push((
                    at("target"),
                    format!(
                        "{:?}: a directory or s3://bucket/prefix (no other scheme)",
                        s.target
                    ),
                ));
            } else if !std::path::Path::new(&s.target).is_absolute() {
                out.push((
                    at("target"),
                    format!("{:?}: an absolute directory path", s.target),
                ));
            } else if s.s3.is_some() {
                out.push((at("s3"), "only for an s3:// target".into()));
            }
            if let Some(s3) = &s.s3 {
                if let Some(e) = &s3.endpoint {
                    if url::Url::parse(e).map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
                    {
                        out.push((
                            at("s3.endpoint"),
                            format!("{e:?}: an http:// or https:// URL"),
                        ));
                    }
                }
                if s3.profile.is_some() && s3.credentials_file.is_none() {
                    out.push((at("s3.profile"), "only with s3.credentials_file".into()));
                }
            }
            if s.retention.count == Some(0) {
                out.push((
                    at("retention.count"),
                    "at least 1 (the newest backup is always kept)".into(),
                ));
            }
            if s.retention.keep_daily == Some(0) {
                out.push((
                    at("retention.keep_daily"),
                    "at least 1 day, or leave it out".into(),
                ));
            }
        }
        out
    }
}
