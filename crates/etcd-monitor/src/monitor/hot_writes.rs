//! `keyspace.hot_writes`: per cluster, an events-only resilient watch over
//! each configured prefix feeds a [`HotTracker`]: who writes, per prefix
//! bucket, over the last minute. The watch resumes on another member after
//! a member is lost and skips (and counts) revisions compacted while it was
//! away; it never re-lists the keyspace.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_patterns::{ResilientWatch, WatchEvent, WatchOptions};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::config::ClusterConfig;
use crate::config::keyspace::HotWrites as HotWritesConfig;
use crate::keyspace::{HotBucket, HotTracker};
use crate::store::unix_ms;

/// One cluster's hot-write tracking, shared by its watch task and readers.
#[derive(Debug)]
pub struct HotWrites {
    config: HotWritesConfig,
    tracker: Mutex<HotTracker>,
    since_ms: i64,
    /// Whether every prefix's watch has been opened.
    watching: AtomicBool,
    /// The newest revision seen in an event.
    revision: AtomicI64,
    /// Revisions compacted away before the watch could deliver them.
    skipped_revisions: AtomicU64,
    /// Why a watch could not be opened, while it cannot.
    error: Mutex<Option<String>>,
}

/// `GET /api/v1/clusters/{name}/keyspace/hot`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HotReport {
    /// The cluster.
    pub cluster: String,
    /// Whether `keyspace.hot_writes.enabled` is set (false: nothing is
    /// counted and `buckets` is empty).
    pub enabled: bool,
    /// The window the rates cover, seconds.
    pub window_seconds: u64,
    /// The watched prefixes (`""`: the whole keyspace).
    pub prefixes: Vec<String>,
    /// Levels below a watched prefix that make a bucket.
    pub depth: usize,
    /// When counting started (ms since epoch).
    pub since_ms: i64,
    /// When this was computed (ms since epoch).
    pub at_ms: i64,
    /// Whether the watches are open.
    pub watching: bool,
    /// Why they are not, when they are not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The newest revision counted.
    pub revision: i64,
    /// Events counted since `since_ms`.
    pub events_total: u64,
    /// Revisions compacted before the watch could count them (while it was
    /// disconnected): writes in them are missing from the rates.
    pub skipped_revisions: u64,
    /// The busiest buckets, by writes per second.
    pub buckets: Vec<HotBucket>,
}

impl HotWrites {
    /// Tracking under `config` (whether enabled or not).
    pub fn new(config: &HotWritesConfig) -> Self {
        let now = unix_ms(std::time::SystemTime::now());
        HotWrites {
            config: config.clone(),
            tracker: Mutex::new(HotTracker::new(
                &config.prefixes,
                config.depth,
                config.max_buckets,
                now.max(0) as u64,
            )),
            since_ms: now,
            watching: AtomicBool::new(false),
            revision: AtomicI64::new(0),
            skipped_revisions: AtomicU64::new(0),
            error: Mutex::new(None),
        }
    }

    /// The `top` busiest buckets over the last `window_secs` seconds.
    pub fn report(&self, cluster: &str, window_secs: u64, top: usize) -> HotReport {
        let now = unix_ms(std::time::SystemTime::now());
        let (buckets, events_total) = match self.tracker.lock() {
            Ok(t) => (t.top(window_secs, top, now.max(0) as u64), t.events()),
            Err(_) => (Vec::new(), 0),
        };
        HotReport {
            cluster: cluster.to_string(),
            enabled: self.config.enabled,
            window_seconds: window_secs,
            prefixes: self.config.prefixes.clone(),
            depth: self.config.depth,
            since_ms: self.since_ms,
            at_ms: now,
            watching: self.watching.load(Ordering::Relaxed),
            error: self.error.lock().ok().and_then(|e| e.clone()),
            revision: self.revision.load(Ordering::Relaxed),
            events_total,
            skipped_revisions: self.skipped_revisions.load(Ordering::Relaxed),
            buckets,
        }
    }

    /// Buckets exported in `/metrics` (`keyspace.hot_writes.top`).
    pub fn metrics_top(&self) -> usize {
        self.config.top
    }

    fn count(&self, event: &WatchEvent) {
        let now = unix_ms(std::time::SystemTime::now()).max(0) as u64;
        let (key, put) = match event {
            WatchEvent::Put { key, value, .. } => (key, Some(value.len() as u64)),
            WatchEvent::Delete { key, .. } => (key, None),
            WatchEvent::Skipped { from, to } => {
                let n = (to - from + 1).max(0) as u64;
                self.skipped_revisions.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(
                    from,
                    to,
                    "hot-write watch: revisions compacted before they were counted"
                );
                return;
            }
            WatchEvent::Resynced { .. } => return,
        };
        self.revision.fetch_max(event.revision(), Ordering::Relaxed);
        if let Ok(mut t) = self.tracker.lock() {
            t.record(key, put, now);
        }
    }

    fn set_error(&self, e: Option<String>) {
        if let Ok(mut slot) = self.error.lock() {
            *slot = e;
        }
    }
}

/// Opens one events-only watch per prefix (retrying until the cluster
/// answers), then counts their events until `token` is cancelled.
pub async fn run(
    cluster: ClusterConfig,
    hot: Arc<HotWrites>,
    ownership: super::ha::Ownership,
    token: CancellationToken,
) {
    ownership
        .while_owned(token, |token| watch(cluster.clone(), hot.clone(), token))
        .await;
    hot.watching.store(false, Ordering::Relaxed);
}

/// Counts writes until `token` is cancelled.
async fn watch(cluster: ClusterConfig, hot: Arc<HotWrites>, token: CancellationToken) {
    let mut watches = Vec::new();
    for prefix in hot.config.prefixes.clone() {
        let watch = loop {
            let opened = async {
                let urls = crate::connection::endpoints(&cluster).map_err(|e| e.to_string())?;
                let options =
                    crate::connection::connect_options(&cluster).map_err(|e| e.to_string())?;
                let opts = WatchOptions::new()
                    .with_prefix()
                    .with_events_only()
                    .with_stall_timeout(Duration::from_secs(5));
                ResilientWatch::connect(&urls, Some(options), prefix.as_str(), opts)
                    .await
                    .map_err(|e| e.to_string())
            };
            let error = tokio::select! {
                _ = token.cancelled() => return,
                w = opened => match w {
                    Ok(w) => break w,
                    Err(e) => e,
                }
            };
            tracing::warn!(cluster = %cluster.name, prefix = %prefix, error = %error, "hot-write watch not opened yet");
            hot.set_error(Some(format!("watching {prefix:?}: {error}")));
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        };
        watches.push(watch);
    }
    hot.set_error(None);
    hot.watching.store(true, Ordering::Relaxed);
    let mut events = futures_util::stream::select_all(watches);
    let mut sweep = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            ev = futures_util::StreamExt::next(&mut events) => match ev {
                Some(ev) => hot.count(&ev),
                None => break,
            },
            _ = sweep.tick() => {
                let now = unix_ms(std::time::SystemTime::now()).max(0) as u64;
                if let Ok(mut t) = hot.tracker.lock() {
                    t.evict(now);
                }
            }
        }
    }
    hot.watching.store(false, Ordering::Relaxed);
}
