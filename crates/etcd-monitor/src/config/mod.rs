//! Configuration: one YAML file, then `ETCD_MONITOR_*` environment variables,
//! then command-line flags, in rising precedence.
//!
//! Every layer is merged into one YAML tree before it is checked, so an error
//! always names the key path and where the bad value came from (the file, an
//! environment variable or a flag). Loading never stops at the first problem:
//! [`load`] returns every error it finds, which `etcd-monitor config check`
//! prints.

pub mod alerts;
mod api;
/// Serializes a type as its `Display` text and deserializes it with its
/// `FromStr` (its error becomes the configuration error).
macro_rules! serde_as_text {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod backup;
pub mod bench;
pub mod cron;
pub mod duration;
pub mod ha;
pub mod keyspace;
mod layers;
pub mod maintenance;
mod schema;
pub mod secret;
pub mod size;
pub mod window;

use std::fmt;
use std::path::{Path, PathBuf};

pub use api::*;
pub use layers::{Overrides, env_overrides};
pub use schema::*;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The YAML file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
    /// Built-in defaults (no file given).
    Defaults,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
            Source::Defaults => f.write_str("defaults"),
        }
    }
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the value came from.
    pub source: Source,
    /// Key path such as `clusters[0].dial_timeout`; empty for the whole file.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}: {}: {}", self.source, self.path, self.message)
        }
    }
}

/// Every problem found while loading a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} configuration error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A check of the loaded configuration that needs more than the schema
/// (the rule table, the SLO grammar): the layers that own that knowledge
/// supply it, so this module imports no behaviour. Returns `(key path,
/// message)` pairs.
pub type Check = fn(&Config) -> Vec<(String, String)>;

/// Loads the configuration from `file` (or defaults when `None`), applies
/// `overrides` (environment variables, then flags) and validates the result
/// with the schema's own checks and then `checks`. Every error names where
/// its value came from. The program loads through
/// [`crate::run::load_config`], which passes every layer's checks.
pub fn load(
    file: Option<&Path>,
    overrides: &Overrides,
    checks: &[Check],
) -> Result<Config, ConfigErrors> {
    layers::load(file, overrides, checks)
}

/// Prints the configuration as YAML with secrets redacted.
pub fn to_redacted_yaml(config: &Config) -> String {
    let mut shown = config.clone();
    for c in &mut shown.clusters {
        if c.password.is_some() {
            c.password = Some(REDACTED.to_string());
        }
    }
    shown.alerts = shown.alerts.redacted();
    shown.storage.url = secret::redact_url_password(&shown.storage.url);
    serde_yaml_ng::to_string(&shown)
        .unwrap_or_else(|e| format!("# cannot print configuration: {e}\n"))
}

/// What secrets are replaced with when shown.
pub const REDACTED: &str = "<redacted>";
