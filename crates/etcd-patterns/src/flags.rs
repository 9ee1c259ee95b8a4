//! Feature flags evaluated from a watched local cache: on/off, percentage
//! rollout by a stable hash of the subject, allow and deny lists, and a
//! kill switch.
//!
//! A subject's bucket is `stable_hash(flag, subject) % 10000`: the same in
//! every process, machine and release (never std's random `RandomState`),
//! so a user sees the same answer on every server, and raising a rollout
//! from 10 % to 30 % only adds subjects.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use serde::{Deserialize, Serialize};

use crate::cache::{CacheState, WatchCache, put_json, swap};
use crate::error::{Error, Result, ctx};
use crate::hash::stable_hash;
use crate::keys;
use crate::watch::WatchEvent;

/// A flag as stored in etcd (JSON).
///
/// Evaluation order: kill switch (`enabled == false`) -> off for everyone;
/// `deny` -> off; `allow` -> on; otherwise on for `rollout_percent` of
/// subjects.
///
/// ```
/// let flag = etcd_patterns::Flag::rollout(30.0).allowing(["alice"]);
/// assert!(flag.evaluate("new-ui", "alice"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    /// The kill switch: `false` turns the flag off for everyone.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Share of subjects that get the flag, 0 to 100.
    #[serde(default)]
    pub rollout_percent: f64,
    /// Subjects that always get the flag (unless denied or killed).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Subjects that never get the flag.
    #[serde(default)]
    pub deny: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Flag {
    /// On for everyone (`true`) or nobody (`false`).
    pub fn boolean(on: bool) -> Flag {
        Flag::rollout(if on { 100.0 } else { 0.0 })
    }

    /// On for `percent` % of subjects.
    pub fn rollout(percent: f64) -> Flag {
        Flag {
            enabled: true,
            rollout_percent: percent,
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }

    /// Adds subjects to the allow list.
    pub fn allowing<I: IntoIterator<Item = S>, S: Into<String>>(mut self, subjects: I) -> Flag {
        self.allow.extend(subjects.into_iter().map(Into::into));
        self
    }

    /// Adds subjects to the deny list.
    pub fn denying<I: IntoIterator<Item = S>, S: Into<String>>(mut self, subjects: I) -> Flag {
        self.deny.extend(subjects.into_iter().map(Into::into));
        self
    }

    /// Evaluates the flag named `name` for `subject` (uncached lists: use
    /// [`Flags::is_enabled`] in hot paths).
    pub fn evaluate(&self, name: &str, subject: &str) -> bool {
        Compiled::from(self.clone()).evaluate(name, subject)
    }
}

/// The bucket (0..10000) of `subject` for flag `name`: stable everywhere.
///
/// ```
/// let b = etcd_patterns::flags::bucket("new-ui", "user-42");
/// assert!(b < 10_000);
/// assert_eq!(b, etcd_patterns::flags::bucket("new-ui", "user-42"));
/// ```
pub fn bucket(name: &str, subject: &str) -> u32 {
    (stable_hash(&[name.as_bytes(), subject.as_bytes()]) % 10_000) as u32
}

/// A flag ready for evaluation (sets instead of lists).
struct Compiled {
    enabled: bool,
    threshold: u32,
    allow: HashSet<String>,
    deny: HashSet<String>,
}

impl From<Flag> for Compiled {
    fn from(f: Flag) -> Compiled {
        Compiled {
            enabled: f.enabled,
            threshold: (f.rollout_percent.clamp(0.0, 100.0) * 100.0).round() as u32,
            allow: f.allow.into_iter().collect(),
            deny: f.deny.into_iter().collect(),
        }
    }
}

impl Compiled {
    fn evaluate(&self, name: &str, subject: &str) -> bool {
        if !self.enabled || self.deny.contains(subject) {
            return false;
        }
        if self.allow.contains(subject) {
            return true;
        }
        self.threshold >= 10_000 || (self.threshold > 0 && bucket(name, subject) < self.threshold)
    }
}

#[derive(Default)]
struct FlagState {
    flags: HashMap<String, Arc<Compiled>>,
}

/// A flag that changed (see [`Flags::subscribe`]): its name.
pub type FlagChange = String;

impl CacheState for FlagState {
    type Change = FlagChange;

    fn apply(&mut self, key: &str, event: &WatchEvent, changes: &mut Vec<FlagChange>) {
        match event {
            WatchEvent::Put { value, .. } => match serde_json::from_slice::<Flag>(value) {
                Ok(flag) => {
                    self.flags
                        .insert(key.to_string(), Arc::new(Compiled::from(flag)));
                }
                Err(e) => {
                    // An unreadable flag is off: safer than a stale "on".
                    tracing::warn!(flag = key, error = %e, "unreadable feature flag; treating it as off");
                    self.flags.remove(key);
                }
            },
            WatchEvent::Delete { .. } => {
                self.flags.remove(key);
            }
            // Skipped comes only from an events-only watch, which caches never use.
            WatchEvent::Resynced { .. } | WatchEvent::Skipped { .. } => return,
        }
        changes.push(key.to_string());
    }
}

/// Feature flags under `namespace/`, evaluated from a local cache.
///
/// ```no_run
/// # async fn demo(client: etcd_client::Client) -> Result<(), etcd_patterns::Error> {
/// use etcd_patterns::{Flag, Flags};
/// let flags = Flags::start(client, "flags/shop").await?;
/// let rev = flags.set("new-checkout", &Flag::rollout(30.0).denying(["bot-1"])).await?;
/// flags.wait_for(rev).await?;
/// if flags.is_enabled("new-checkout", "user-42") { /* new code path */ }
/// flags.kill("new-checkout").await?; // off for everyone, at once
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Flags {
    client: Client,
    namespace: String,
    cache: WatchCache<FlagState>,
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flags")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Flags {
    /// Loads `namespace/` into the local cache and follows it.
    pub async fn start(client: Client, namespace: &str) -> Result<Flags> {
        Self::start_with_watch_clients(client.clone(), vec![client], namespace).await
    }

    /// Like [`Flags::start`], with the cache's watch served by
    /// `watch_clients` in turn (writes go through `client`). Pass one client
    /// per endpoint built with *require leader*
    /// ([`require_leader_clients`](crate::watch::require_leader_clients)):
    /// a member cut off from its peers then cancels the watch and the cache
    /// moves to the next member at once, instead of after its staleness
    /// probe.
    pub async fn start_with_watch_clients(
        client: Client,
        watch_clients: Vec<Client>,
        namespace: &str,
    ) -> Result<Flags> {
        let namespace = keys::normalize_prefix(namespace);
        let cache = WatchCache::start(watch_clients, &namespace, FlagState::default()).await?;
        Ok(Flags {
            client,
            namespace,
            cache,
        })
    }

    /// Whether flag `name` is on for `subject`; an unknown flag is off.
    pub fn is_enabled(&self, name: &str, subject: &str) -> bool {
        let flag = self.cache.read(|s| s.flags.get(name).cloned());
        flag.is_some_and(|f| f.evaluate(name, subject))
    }

    /// Whether flag `name` is known to the cache.
    pub fn exists(&self, name: &str) -> bool {
        self.cache.read(|s| s.flags.contains_key(name))
    }

    /// Stores `flag` (JSON); returns the revision of the write.
    pub async fn set(&self, name: &str, flag: &Flag) -> Result<i64> {
        put_json(
            &self.client,
            &format!("{}{name}", self.namespace),
            flag,
            None,
        )
        .await
    }

    /// The kill switch: turns flag `name` off for everyone, keeping its
    /// rollout and lists (read from etcd, not the cache, so nothing is lost).
    ///
    /// A compare-and-swap on the flag's mod revision, retried on conflict:
    /// a change written between the read and the write is kept (and
    /// disabled), never overwritten by the stale copy. A flag that does not
    /// exist is created disabled; one whose value cannot be decoded is an
    /// [`Error::Codec`], not silently replaced.
    pub async fn kill(&self, name: &str) -> Result<i64> {
        const ATTEMPTS: u32 = 20;
        let key = format!("{}{name}", self.namespace);
        for _ in 0..ATTEMPTS {
            let resp = self
                .client
                .kv_client()
                .get(key.as_str(), None)
                .await
                .map_err(ctx(format!("reading flag {name}")))?;
            // Only `enabled` changes: fields this version does not know
            // (a flag written by a newer one) are kept as they are.
            let (mut flag, seen) = match resp.kvs().first() {
                Some(kv) => (
                    serde_json::from_slice::<serde_json::Value>(kv.value()).map_err(|e| {
                        Error::Codec {
                            key: key.clone(),
                            reason: e.to_string(),
                        }
                    })?,
                    kv.mod_revision(),
                ),
                None => (
                    serde_json::to_value(Flag::boolean(false)).unwrap_or_default(),
                    0,
                ),
            };
            let Some(fields) = flag.as_object_mut() else {
                return Err(Error::Codec {
                    key,
                    reason: "a flag must be a JSON object".into(),
                });
            };
            fields.insert("enabled".into(), serde_json::Value::Bool(false));
            let json = serde_json::to_vec(&flag).map_err(|e| Error::Codec {
                key: key.clone(),
                reason: e.to_string(),
            })?;
            let what = format!("killing flag {name}");
            if let Ok(revision) = swap(&self.client, &key, json, seen, &what).await? {
                return Ok(revision);
            }
            // Someone wrote the flag in between: re-read after a short pause.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(Error::TooManyConflicts { attempts: ATTEMPTS })
    }

    /// Waits (up to 5 s) until the cache has applied `revision`.
    pub async fn wait_for(&self, revision: i64) -> Result<()> {
        self.cache.wait_for(revision, Duration::from_secs(5)).await
    }

    /// Names of flags that change from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<FlagChange> {
        self.cache.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_percent_rollout_lands_within_two_percent_over_100k_subjects() {
        let flag = Compiled::from(Flag::rollout(30.0));
        let on = (0..100_000)
            .filter(|i| flag.evaluate("rollout-test", &format!("user-{i}")))
            .count();
        let share = on as f64 / 100_000.0;
        assert!((0.28..=0.32).contains(&share), "share {share}");
    }

    #[test]
    fn buckets_are_the_same_in_every_process() {
        // Computed once outside this process; any change of the hash would
        // move users between the on and off groups.
        let expected = [
            ("user-1", BUCKET_USER_1),
            ("user-2", BUCKET_USER_2),
            ("alice", BUCKET_ALICE),
        ];
        for (subject, b) in expected {
            assert_eq!(bucket("new-ui", subject), b, "{subject}");
        }
    }

    // Computed by an independent Python implementation of the same hash.
    const BUCKET_USER_1: u32 = 3117;
    const BUCKET_USER_2: u32 = 9623;
    const BUCKET_ALICE: u32 = 7078;

    #[test]
    fn kill_switch_deny_and_allow() {
        let flag = Flag::rollout(100.0).denying(["bob"]);
        assert!(flag.evaluate("f", "alice"));
        assert!(!flag.evaluate("f", "bob"));
        let flag = Flag::rollout(0.0).allowing(["carol"]);
        assert!(flag.evaluate("f", "carol"));
        assert!(!flag.evaluate("f", "dave"));
        let mut killed = Flag::rollout(100.0).allowing(["carol"]);
        killed.enabled = false;
        assert!(!killed.evaluate("f", "carol"));
    }
}
