//! Typed configuration under a namespace: JSON values in etcd, read from a
//! watched local cache, written with compare-and-swap, reloaded hot, with
//! history and rollback through etcd's MVCC revisions.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use etcd_client::{Client, GetOptions, Txn, TxnOp, TxnOpResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::cache::{CacheState, WatchCache, put_json, swap};
use crate::error::{Error, Result, ctx};
use crate::keys;
use crate::watch::WatchEvent;

/// One value as cached: raw JSON and the key's mod revision.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    json: Vec<u8>,
    mod_revision: i64,
}

/// A change of one configuration key, as passed to [`Config::watch`]
/// callbacks and [`Config::subscribe`] receivers (raw JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    /// The key, relative to the namespace.
    pub key: String,
    /// The previous JSON value, `None` if the key was created.
    pub old: Option<Vec<u8>>,
    /// The new JSON value, `None` if the key was deleted.
    pub new: Option<Vec<u8>>,
    /// Revision of the change.
    pub revision: i64,
}

#[derive(Default)]
struct ConfigState {
    entries: HashMap<String, Entry>,
}

impl CacheState for ConfigState {
    type Change = ConfigChange;

    fn apply(&mut self, key: &str, event: &WatchEvent, changes: &mut Vec<ConfigChange>) {
        let (old, new, revision) = match event {
            WatchEvent::Put {
                value, revision, ..
            } => {
                let entry = Entry {
                    json: value.clone(),
                    mod_revision: *revision,
                };
                let old = self.entries.insert(key.to_string(), entry);
                (old.map(|e| e.json), Some(value.clone()), *revision)
            }
            WatchEvent::Delete { revision, .. } => {
                let old = self.entries.remove(key);
                (old.map(|e| e.json), None, *revision)
            }
            // Skipped comes only from an events-only watch, which caches never use.
            WatchEvent::Resynced { .. } | WatchEvent::Skipped { .. } => return,
        };
        if old != new {
            changes.push(ConfigChange {
                key: key.to_string(),
                old,
                new,
                revision,
            });
        }
    }
}

/// One past version of a key (see [`Config::history`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Version<T> {
    /// The revision that wrote this version (its mod revision).
    pub revision: i64,
    /// The value.
    pub value: T,
}

/// Text format of [`Config::export`] and [`Config::import`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A JSON object, key -> value.
    Json,
    /// A YAML mapping, key -> value.
    Yaml,
}

/// Typed configuration under `namespace/`.
///
/// Reads ([`Config::get`]) come from a local cache fed by a
/// [`ResilientWatch`](crate::ResilientWatch): no round trip, but possibly a
/// little behind etcd. Writes go to etcd and return the new mod revision;
/// [`Config::wait_for`] it to read your own write.
///
/// ```no_run
/// # async fn demo(client: etcd_client::Client) -> Result<(), etcd_patterns::Error> {
/// use etcd_patterns::Config;
/// #[derive(serde::Serialize, serde::Deserialize, Debug)]
/// struct Limits { max_conns: u32 }
///
/// let config = Config::start(client, "config/api").await?;
/// let rev = config.set("limits", &Limits { max_conns: 100 }).await?;
/// config.wait_for(rev).await?;
/// let limits: Option<Limits> = config.get("limits")?;
/// let _reload = config.watch("limits", |old: Option<Limits>, new: Option<Limits>| {
///     println!("limits {old:?} -> {new:?}");
/// });
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Config {
    client: Client,
    namespace: String,
    cache: WatchCache<ConfigState>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("namespace", &self.namespace)
            .field("revision", &self.cache.revision())
            .finish()
    }
}

/// How long [`Config::wait_for`] waits.
const WAIT: Duration = Duration::from_secs(5);

/// Stops a [`Config::watch`] callback when dropped.
#[derive(Debug)]
pub struct WatchHandle {
    _stop: DropGuard,
}

impl Config {
    /// Loads `namespace/` into the local cache and follows it.
    pub async fn start(client: Client, namespace: &str) -> Result<Config> {
        Self::start_with_watch_clients(client.clone(), vec![client], namespace).await
    }

    /// Like [`Config::start`], with the cache's watch served by
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
    ) -> Result<Config> {
        let namespace = keys::normalize_prefix(namespace);
        let cache = WatchCache::start(watch_clients, &namespace, ConfigState::default()).await?;
        Ok(Config {
            client,
            namespace,
            cache,
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.namespace)
    }

    /// The cached value of `key` (`None` if absent), decoded from JSON.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        Ok(self.get_versioned(key)?.map(|(v, _)| v))
    }

    /// The cached value of `key` with its mod revision (for
    /// [`Config::compare_and_set`]).
    pub fn get_versioned<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, i64)>> {
        self.cache.read(|s| {
            s.entries
                .get(key)
                .map(|e| Ok((decode(key, &e.json)?, e.mod_revision)))
                .transpose()
        })
    }

    /// Every cached key (relative to the namespace), sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.cache.read(|s| s.entries.keys().cloned().collect());
        keys.sort();
        keys
    }

    /// The last revision the cache applied.
    pub fn revision(&self) -> i64 {
        self.cache.revision()
    }

    /// Waits (up to 5 s) until the cache has applied `revision`.
    pub async fn wait_for(&self, revision: i64) -> Result<()> {
        self.cache.wait_for(revision, WAIT).await
    }

    /// Writes `value` unconditionally; returns the new mod revision.
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<i64> {
        put_json(&self.client, &self.full_key(key), value, None).await
    }

    /// Writes `value` only if the key's mod revision is still `expected`
    /// (0 = the key must not exist); returns the new mod revision or
    /// [`Error::Conflict`] with the revision found.
    pub async fn compare_and_set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        expected: i64,
    ) -> Result<i64> {
        let json = encode(key, value)?;
        let what = format!("compare-and-set of config {key}");
        match swap(&self.client, &self.full_key(key), json, expected, &what).await? {
            Ok(revision) => Ok(revision),
            Err(actual) => Err(Error::Conflict {
                key: key.to_string(),
                expected,
                actual,
            }),
        }
    }

    /// Deletes `key`; returns the revision of the deletion.
    pub async fn delete(&self, key: &str) -> Result<i64> {
        let resp = self
            .client
            .kv_client()
            .delete(self.full_key(key), None)
            .await
            .map_err(ctx(format!("deleting config {key}")))?;
        resp.header()
            .map(|h| h.revision())
            .ok_or_else(|| Error::Unexpected(format!("deleting config {key}: no header")))
    }

    /// Calls `on_change(old, new)` once per change of `key` (from now on;
    /// `None` = absent or undecodable), on a background task that stops
    /// when the handle is dropped.
    pub fn watch<T, F>(&self, key: &str, mut on_change: F) -> WatchHandle
    where
        T: DeserializeOwned,
        F: FnMut(Option<T>, Option<T>) + Send + 'static,
    {
        let mut rx = self.cache.subscribe();
        let key = key.to_string();
        let stop = CancellationToken::new();
        let task_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    _ = task_stop.cancelled() => return,
                    c = rx.recv() => c,
                };
                match change {
                    Ok(c) if c.key == key => {
                        let decode_opt =
                            |v: &Option<Vec<u8>>| v.as_ref().and_then(|v| decode(&key, v).ok());
                        on_change(decode_opt(&c.old), decode_opt(&c.new));
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(%key, missed = n, "config watcher lagged; some changes skipped");
                    }
                    Err(_) => return,
                }
            }
        });
        WatchHandle {
            _stop: stop.drop_guard(),
        }
    }

    /// Every change of the namespace from now on (raw JSON).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ConfigChange> {
        self.cache.subscribe()
    }

    /// Up to `limit` versions of `key`, newest first, read from etcd's MVCC
    /// history (each older version is a get at the previous mod revision
    /// - 1). Stops at a deletion or at the compaction revision.
    pub async fn history<T: DeserializeOwned>(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Vec<Version<T>>> {
        let full = self.full_key(key);
        let mut kv = self.client.kv_client();
        let mut out = Vec::new();
        let mut at = 0; // 0 = now
        while out.len() < limit {
            let opts = (at > 0).then(|| GetOptions::new().with_revision(at));
            let resp = match kv.get(full.as_str(), opts).await {
                Ok(r) => r,
                Err(e) if at > 0 && is_compacted(&e) => break,
                Err(e) => return Err(Error::etcd(format!("reading history of {key}"), e)),
            };
            let Some(found) = resp.kvs().first() else {
                break;
            };
            out.push(Version {
                revision: found.mod_revision(),
                value: decode(key, found.value())?,
            });
            // A key's first version has version 1: nothing before it.
            if found.version() <= 1 {
                break;
            }
            at = found.mod_revision() - 1;
        }
        Ok(out)
    }

    /// Writes back the value `key` had at `revision` (compare-and-swap on
    /// the current mod revision); returns the new mod revision.
    /// [`Error::Compacted`] if that revision is gone.
    pub async fn rollback(&self, key: &str, revision: i64) -> Result<i64> {
        let full = self.full_key(key);
        // The old value and the current mod revision come from one txn (one
        // snapshot); the write then swaps only if nothing changed since.
        let txn = Txn::new().and_then([
            TxnOp::get(
                full.as_str(),
                Some(GetOptions::new().with_revision(revision)),
            ),
            TxnOp::get(full.as_str(), None),
        ]);
        let what = format!("reading {key} at {revision} and now");
        let resp = match self.client.kv_client().txn(txn).await {
            Ok(r) => r,
            Err(e) if is_compacted(&e) => {
                return Err(Error::Compacted {
                    key: key.to_string(),
                    revision,
                });
            }
            Err(e) => return Err(Error::etcd(what, e)),
        };
        let value = keys::txn_kvs(&resp, 0, &what)?
            .first()
            .map(|kv| kv.value().to_vec())
            .ok_or_else(|| Error::Unexpected(format!("{key} did not exist at {revision}")))?;
        let current = keys::txn_kvs(&resp, 1, &what)?
            .first()
            .map(|kv| kv.mod_revision())
            .unwrap_or(0);
        let raw: serde_json::Value = decode(key, &value)?;
        self.compare_and_set(key, &raw, current).await
    }

    /// The namespace (as stored in etcd now, not the cache) as a JSON object
    /// or YAML mapping of key -> value.
    pub async fn export(&self, format: Format) -> Result<String> {
        let resp = self
            .client
            .kv_client()
            .get(
                self.namespace.as_str(),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(ctx(format!("exporting {}", self.namespace)))?;
        let mut map = BTreeMap::new();
        for kv in resp.kvs() {
            let full = String::from_utf8_lossy(kv.key());
            let key = full
                .strip_prefix(&self.namespace)
                .unwrap_or(&full)
                .to_string();
            let value: serde_json::Value = decode(&key, kv.value())?;
            map.insert(key, value);
        }
        let codec = |e: String| Error::Codec {
            key: self.namespace.clone(),
            reason: e,
        };
        match format {
            Format::Json => serde_json::to_string_pretty(&map).map_err(|e| codec(e.to_string())),
            Format::Yaml => serde_yaml_ng::to_string(&map).map_err(|e| codec(e.to_string())),
        }
    }

    /// Writes every key of a JSON object or YAML mapping (as produced by
    /// [`Config::export`]) in transactions of at most 100 puts; returns the
    /// number of keys written. Keys not in `text` are left alone.
    pub async fn import(&self, text: &str, format: Format) -> Result<usize> {
        let codec = |e: String| Error::Codec {
            key: self.namespace.clone(),
            reason: e,
        };
        let map: BTreeMap<String, serde_json::Value> = match format {
            Format::Json => serde_json::from_str(text).map_err(|e| codec(e.to_string()))?,
            Format::Yaml => serde_yaml_ng::from_str(text).map_err(|e| codec(e.to_string()))?,
        };
        let entries: Vec<_> = map.into_iter().collect();
        for chunk in entries.chunks(100) {
            let mut ops = Vec::with_capacity(chunk.len());
            for (key, value) in chunk {
                ops.push(TxnOp::put(self.full_key(key), encode(key, value)?, None));
            }
            let resp = self
                .client
                .kv_client()
                .txn(Txn::new().and_then(ops))
                .await
                .map_err(ctx(format!("importing into {}", self.namespace)))?;
            if !resp
                .op_responses()
                .iter()
                .all(|r| matches!(r, TxnOpResponse::Put(_)))
            {
                return Err(Error::Unexpected("import txn answered without puts".into()));
            }
        }
        Ok(entries.len())
    }
}

fn decode<T: DeserializeOwned>(key: &str, json: &[u8]) -> Result<T> {
    serde_json::from_slice(json).map_err(|e| Error::Codec {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Codec {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// "required revision has been compacted" (gRPC OutOfRange).
fn is_compacted(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            i32::from(s.code()) == 11 || s.message().contains("compacted")
        }
        _ => false,
    }
}
