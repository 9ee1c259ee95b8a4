//! Silences: label matchers with a start and an end. Silenced alerts still
//! fire and are recorded; they are not notified. Silences from the
//! configuration live in memory; those added at run time (the REST API) are
//! kept in the history store, so every engine and API instance sharing the
//! store sees them.

use serde::{Deserialize, Serialize};

use crate::config::alerts::SilenceConfig;
pub use crate::model::{Matcher, Silence};
use crate::store::{Store, StoreError, unix_ms};

impl Silence {
    /// A silence from `alerts.silences[]`.
    pub fn from_config(c: &SilenceConfig) -> Result<Silence, String> {
        let matchers = c
            .matchers
            .iter()
            .map(|m| Matcher::parse(m))
            .collect::<Result<Vec<_>, _>>()?;
        if matchers.is_empty() {
            return Err("a silence needs at least one matcher".into());
        }
        let time = |key: &str, s: &str| {
            humantime::parse_rfc3339_weak(s)
                .map(unix_ms)
                .map_err(|e| format!("{key} {s:?}: {e}; write e.g. 2026-12-01T08:00:00Z"))
        };
        let starts_at_ms = match &c.starts_at {
            Some(s) => time("starts_at", s)?,
            None => 0,
        };
        let ends_at_ms = time("ends_at", &c.ends_at)?;
        if ends_at_ms <= starts_at_ms {
            return Err("ends_at must be after starts_at".into());
        }
        Ok(Silence {
            id: String::new(),
            matchers,
            starts_at_ms,
            ends_at_ms,
            comment: c.comment.clone(),
            created_by: c.created_by.clone(),
            source: "config".into(),
        })
    }
}

/// What a caller asks for when adding a silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewSilence {
    /// `name=value` / `name!=value` matchers.
    pub matchers: Vec<String>,
    /// Start (ms since epoch); absent: now.
    pub starts_at_ms: Option<i64>,
    /// End (ms since epoch).
    pub ends_at_ms: i64,
    /// Why.
    #[serde(default)]
    pub comment: String,
    /// Who; absent through the API: the caller's principal (`token:ci`).
    #[serde(default)]
    pub created_by: String,
}

/// What can go wrong managing silences.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    /// The request is not a valid silence.
    #[error("invalid silence: {0}")]
    Invalid(String),
    /// No silence with this id.
    #[error("no silence with id {0:?}")]
    NotFound(String),
    /// Configured silences are changed in the configuration file.
    #[error("silence {0:?} is defined in the configuration file: remove it there")]
    FromConfig(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every silence: configured (in memory) and added at run time (in the store).
#[derive(Debug, Clone)]
pub struct Silences {
    store: Store,
    configured: std::sync::Arc<Vec<Silence>>,
    changed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Silences {
    /// Silences over `store`, plus the configured ones (invalid ones were
    /// rejected by the configuration check and are skipped here).
    pub fn new(store: Store, configured: &[SilenceConfig]) -> Silences {
        let configured = configured
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                Silence::from_config(c).ok().map(|mut s| {
                    s.id = format!("cfg-{i}");
                    s
                })
            })
            .collect();
        Silences {
            store,
            configured: std::sync::Arc::new(configured),
            changed: Default::default(),
        }
    }

    /// A counter bumped on each change made through this handle, so
    /// whoever caches silences (the alert engines) knows to read them again.
    pub(crate) fn on_change(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.changed.clone()
    }

    /// Adds a silence; returns it with its id.
    pub async fn add(&self, new: NewSilence) -> Result<Silence, SilenceError> {
        let matchers = new
            .matchers
            .iter()
            .map(|m| Matcher::parse(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(SilenceError::Invalid)?;
        if matchers.is_empty() {
            return Err(SilenceError::Invalid(
                "at least one matcher is required".into(),
            ));
        }
        let starts_at_ms = new
            .starts_at_ms
            .unwrap_or_else(|| unix_ms(std::time::SystemTime::now()));
        if new.ends_at_ms <= starts_at_ms {
            return Err(SilenceError::Invalid(
                "ends_at must be after starts_at".into(),
            ));
        }
        let s = Silence {
            id: format!("{:016x}", rand::random::<u64>()),
            matchers,
            starts_at_ms,
            ends_at_ms: new.ends_at_ms,
            comment: new.comment,
            created_by: new.created_by,
            source: "api".into(),
        };
        self.store.insert_silence(&s).await?;
        self.changed
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(s)
    }

    /// Every silence, expired ones included, configured first.
    pub async fn list(&self) -> Result<Vec<Silence>, SilenceError> {
        let mut out: Vec<Silence> = self.configured.as_ref().clone();
        out.extend(self.store.silences().await?);
        Ok(out)
    }

    /// Silences in force at `now_ms`.
    pub async fn active(&self, now_ms: i64) -> Result<Vec<Silence>, SilenceError> {
        let mut all = self.list().await?;
        all.retain(|s| s.active_at(now_ms));
        Ok(all)
    }

    /// Deletes a silence added at run time.
    pub async fn delete(&self, id: &str) -> Result<(), SilenceError> {
        if self.configured.iter().any(|s| s.id == id) {
            return Err(SilenceError::FromConfig(id.into()));
        }
        if self.store.delete_silence(id).await? {
            self.changed
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            Ok(())
        } else {
            Err(SilenceError::NotFound(id.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Labels;

    #[test]
    fn a_configured_silence_parses_and_holds() {
        let mut labels = Labels::new();
        labels.insert("cluster".into(), "main".into());
        let c = SilenceConfig {
            matchers: vec!["cluster=main".into()],
            starts_at: None,
            ends_at: "2030-01-01T00:00:00Z".into(),
            comment: String::new(),
            created_by: String::new(),
        };
        let s = Silence::from_config(&c).unwrap();
        assert!(s.matches(&labels) && s.active_at(unix_ms(std::time::SystemTime::now())));
        let bad = SilenceConfig {
            matchers: vec!["cluster=~(".into()],
            ..c
        };
        assert!(Silence::from_config(&bad).is_err());
    }
}
