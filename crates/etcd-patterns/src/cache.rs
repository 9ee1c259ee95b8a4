//! A local cache of a prefix, fed by a [`ResilientWatch`]: the one read path
//! of discovery, config and feature flags.
//!
//! "Cached" means: reads never touch etcd and cost a read lock; they show
//! the state as of the last applied revision ([`WatchCache::revision`]),
//! typically a millisecond behind a write, longer while the watch
//! reconnects or re-lists. After your own write, [`WatchCache::wait_for`]
//! the revision it returned to read it back.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::{Error, Result, ctx};
use crate::watch::{ResilientWatch, WatchEvent, WatchOptions};

/// What a cache keeps: a state built from watch events, telling its
/// subscribers what changed.
pub(crate) trait CacheState: Send + Sync + 'static {
    /// What subscribers are told.
    type Change: Clone + Send + 'static;

    /// Applies one put or delete (`key` is relative to the cache's prefix)
    /// and pushes the resulting changes.
    fn apply(&mut self, key: &str, event: &WatchEvent, changes: &mut Vec<Self::Change>);
}

/// Shared by the clones of a cache; the watch task stops with the last one.
struct Shared<S: CacheState> {
    state: RwLock<S>,
    changes: broadcast::Sender<S::Change>,
    revision: watch::Sender<i64>,
    _stop: DropGuard,
}

/// A prefix mirrored in memory (see the module documentation).
pub(crate) struct WatchCache<S: CacheState> {
    shared: Arc<Shared<S>>,
}

impl<S: CacheState> Clone for WatchCache<S> {
    fn clone(&self) -> Self {
        WatchCache {
            shared: self.shared.clone(),
        }
    }
}

/// How long a cache waits for its first list before giving up.
const FIRST_LIST: Duration = Duration::from_secs(10);

impl<S: CacheState> WatchCache<S> {
    /// Lists `prefix`, applies it to `state` and follows it.
    pub async fn start(clients: Vec<Client>, prefix: &str, state: S) -> Result<WatchCache<S>> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_initial_list()
            .with_stall_timeout(Duration::from_secs(2));
        let mut watch = ResilientWatch::with_clients(clients, prefix, opts).await?;
        let (changes, _) = broadcast::channel(1024);
        let (revision, _) = watch::channel(0);
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            changes,
            revision,
            _stop: stop.clone().drop_guard(),
        });
        // The initial list is applied before returning, so reads are
        // meaningful at once.
        let first = tokio::time::timeout(FIRST_LIST, async {
            while let Some(ev) = watch.next().await {
                let done = matches!(ev, WatchEvent::Resynced { .. });
                apply(&shared, prefix, &ev);
                if done {
                    return true;
                }
            }
            false
        })
        .await;
        if first != Ok(true) {
            return Err(Error::Timeout {
                waited: FIRST_LIST,
                what: format!("the first list of {prefix}"),
            });
        }
        let weak = Arc::downgrade(&shared);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => return,
                    ev = watch.next() => ev,
                };
                let (Some(ev), Some(shared)) = (ev, weak.upgrade()) else {
                    return;
                };
                apply(&shared, &prefix, &ev);
            }
        });
        Ok(WatchCache { shared })
    }

    /// Reads the state under a read lock (never held across an await).
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        let guard = self
            .shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&guard)
    }

    /// Changes the state locally (health marks), telling subscribers.
    pub fn update<R>(&self, f: impl FnOnce(&mut S, &mut Vec<S::Change>) -> R) -> R {
        let mut changes = Vec::new();
        let r = {
            let mut guard = self
                .shared
                .state
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard, &mut changes)
        };
        for c in changes {
            let _ = self.shared.changes.send(c);
        }
        r
    }

    /// Changes applied from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<S::Change> {
        self.shared.changes.subscribe()
    }

    /// The last revision applied.
    pub fn revision(&self) -> i64 {
        *self.shared.revision.borrow()
    }

    /// Waits until the cache has applied `revision` (for example the one a
    /// write returned), at most `limit`.
    pub async fn wait_for(&self, revision: i64, limit: Duration) -> Result<()> {
        let mut rx = self.shared.revision.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|r| *r >= revision))
            .await
            .map_err(|_| Error::Timeout {
                waited: limit,
                what: format!("the local cache to reach revision {revision}"),
            })?
            .map(|_| ())
            .map_err(|_| Error::Unexpected("the cache's watch task stopped".into()))
    }
}

fn apply<S: CacheState>(shared: &Shared<S>, prefix: &str, ev: &WatchEvent) {
    let mut changes = Vec::new();
    if let Some(key) = ev.key() {
        let rel = key.strip_prefix(prefix).unwrap_or(key);
        let mut guard = shared
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.apply(rel, ev, &mut changes);
    }
    shared.revision.send_if_modified(|r| {
        let newer = ev.revision() > *r;
        if newer {
            *r = ev.revision();
        }
        newer
    });
    for c in changes {
        let _ = shared.changes.send(c);
    }
}

/// Writes `json` at `key` only if the key's mod revision is still `expected`
/// (0 = it must not exist): `Ok(revision of the write)`, or `Err(actual mod
/// revision)` when someone wrote it in between. The compare-and-swap shared
/// by config and flags.
pub(crate) async fn swap(
    client: &Client,
    key: &str,
    json: Vec<u8>,
    expected: i64,
    what: &str,
) -> Result<std::result::Result<i64, i64>> {
    let txn = Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
        .and_then([TxnOp::put(key, json, None)])
        .or_else([TxnOp::get(key, None)]);
    let resp = client
        .kv_client()
        .txn(txn)
        .await
        .map_err(ctx(what.to_string()))?;
    if resp.succeeded() {
        return Ok(Ok(crate::keys::header_revision(&resp, what)?));
    }
    let actual = crate::keys::txn_kvs(&resp, 0, what)?
        .first()
        .map_or(0, |kv| kv.mod_revision());
    Ok(Err(actual))
}

/// Writes `value` as JSON at `key` (under `lease` if given); returns the
/// revision of the write. The write path shared by config, flags and
/// discovery registrations.
pub(crate) async fn put_json<T: serde::Serialize + ?Sized>(
    client: &Client,
    key: &str,
    value: &T,
    lease: Option<i64>,
) -> Result<i64> {
    let json = serde_json::to_vec(value).map_err(|e| Error::Codec {
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    let resp = client
        .kv_client()
        .put(key, json, lease.map(|l| PutOptions::new().with_lease(l)))
        .await
        .map_err(ctx(format!("writing {key}")))?;
    resp.header()
        .map(|h| h.revision())
        .ok_or_else(|| Error::Unexpected(format!("writing {key}: no header")))
}
