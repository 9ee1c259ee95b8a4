//! A watch that survives member failures and compaction.
//!
//! etcd-client hands out one gRPC watch stream and stops there: when the
//! member serving it dies the stream ends, when the start revision was
//! compacted the watch is cancelled, and a member cut off from the cluster
//! (or frozen) just goes quiet. [`ResilientWatch`] turns that into one typed,
//! ordered event stream:
//!
//! - after a broken stream it re-creates the watch from the **last delivered
//!   revision + 1**, on the next client of its list (one client per endpoint,
//!   or one balanced client), so no event is lost or repeated;
//! - when that revision was compacted it **re-lists** with a get, emits the
//!   difference with the keys it knew (puts *and* deletions), then
//!   [`WatchEvent::Resynced`] and resumes from the get's revision + 1;
//! - when no event arrives for `stall_timeout` it reads the cluster's
//!   revision linearizably (through another client of its list when it has
//!   several) and asks the watching member for a progress notification; it
//!   reconnects elsewhere if that goes unanswered for another
//!   `stall_timeout` (a frozen member) or reports a revision older than the
//!   cluster's at the probe before (a member cut off from its peers answers
//!   progress requests from its own stale state);
//! - periodic progress notifications advance the resume point, so a quiet
//!   watch resumes from a recent revision (and is not compacted away);
//! - [`WatchOptions::with_events_only`] makes it a counter's watch: no
//!   previous values and no map of known keys (memory stays flat whatever
//!   the keyspace holds), and a compacted resume point is skipped over
//!   ([`WatchEvent::Skipped`]) instead of re-listing;
//! - [`ResilientWatch::connect`] builds its clients with *require leader*, so
//!   a member that lost the raft leader cancels the stream instead of
//!   silently serving nothing.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, KeyValue, WatchStream};
use tokio::sync::{Notify, mpsc};
use tokio::time::{sleep, timeout};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::{Result, ctx};

/// One change delivered by a [`ResilientWatch`], in revision order.
///
/// Keys are decoded as UTF-8 (lossily); values are raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// `key` now holds `value` (written at `revision`); `prev` is the value
    /// before, when known.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: Vec<u8>,
        /// The previous value, `None` when the key was created (or the
        /// previous version was already compacted).
        prev: Option<Vec<u8>>,
        /// The key's mod revision.
        revision: i64,
    },
    /// `key` was deleted at `revision` (for a deletion found by a re-list,
    /// the revision of that get).
    Delete {
        /// The key.
        key: String,
        /// The value before the deletion, when known.
        prev: Option<Vec<u8>>,
        /// Revision of the deletion.
        revision: i64,
    },
    /// The watch re-listed (initially, or because its revision was
    /// compacted) and the events before this one brought the receiver up to
    /// date with `revision`.
    Resynced {
        /// The revision of the get that re-listed.
        revision: i64,
    },
    /// Only with [`WatchOptions::with_events_only`]: the revisions
    /// `from..=to` were compacted before the watch could deliver them (it
    /// was disconnected, or too slow), so their changes are not reported;
    /// events resume at `to + 1`.
    Skipped {
        /// First revision not delivered.
        from: i64,
        /// Last revision not delivered.
        to: i64,
    },
}

impl WatchEvent {
    /// The key of a put or delete.
    pub fn key(&self) -> Option<&str> {
        match self {
            WatchEvent::Put { key, .. } | WatchEvent::Delete { key, .. } => Some(key),
            WatchEvent::Resynced { .. } | WatchEvent::Skipped { .. } => None,
        }
    }

    /// The revision of the event.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put { revision, .. }
            | WatchEvent::Delete { revision, .. }
            | WatchEvent::Resynced { revision }
            | WatchEvent::Skipped { to: revision, .. } => *revision,
        }
    }
}

/// What to watch and how.
///
/// ```
/// use std::time::Duration;
/// let opts = etcd_patterns::WatchOptions::new()
///     .with_prefix()
///     .with_initial_list()
///     .with_stall_timeout(Duration::from_secs(2));
/// ```
#[derive(Debug, Clone)]
pub struct WatchOptions {
    prefix: bool,
    start_revision: i64,
    initial_list: bool,
    stall_timeout: Duration,
    retry: Duration,
    buffer: usize,
    events_only: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            prefix: false,
            start_revision: 0,
            initial_list: false,
            stall_timeout: Duration::from_secs(5),
            retry: Duration::from_millis(100),
            buffer: 1024,
            events_only: false,
        }
    }
}

impl WatchOptions {
    /// Watch one key, from now on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Watch every key starting with the given key.
    pub fn with_prefix(mut self) -> Self {
        self.prefix = true;
        self
    }

    /// Start at this revision (inclusive). Pass the revision of your last
    /// read + 1: starting at an already committed revision costs ~100 ms on
    /// etcd 3.4 before the first event arrives.
    pub fn with_start_revision(mut self, revision: i64) -> Self {
        self.start_revision = revision;
        self
    }

    /// First list the current keys: one [`WatchEvent::Put`] per key, then
    /// [`WatchEvent::Resynced`], then changes from the list's revision + 1.
    /// Without it, deletions found after a compaction can only be reported
    /// for keys the watch has seen.
    pub fn with_initial_list(mut self) -> Self {
        self.initial_list = true;
        self
    }

    /// After this long without any message, probe the member (a
    /// linearizable read of the cluster's revision elsewhere, then a
    /// progress request); reconnect to another endpoint when the progress
    /// answer does not come within another `stall_timeout`, or reports a
    /// revision older than the cluster's at the previous probe. Default 5 s.
    pub fn with_stall_timeout(mut self, stall_timeout: Duration) -> Self {
        self.stall_timeout = stall_timeout.max(Duration::from_millis(50));
        self
    }

    /// Pause between reconnection attempts. Default 100 ms.
    pub fn with_retry(mut self, retry: Duration) -> Self {
        self.retry = retry;
        self
    }

    /// Changes only, for counting writes over a large keyspace: etcd sends
    /// no previous values (`prev` is always `None`), the watch keeps no map
    /// of the keys it has seen (so a deletion found only by a re-list
    /// cannot be reported, and memory does not grow with the keyspace), and
    /// when its resume point was compacted it resumes at the oldest
    /// revision etcd still has and reports the gap as
    /// [`WatchEvent::Skipped`] instead of re-listing every key.
    pub fn with_events_only(mut self) -> Self {
        self.events_only = true;
        self
    }

    /// Events buffered for a slow receiver before the watch waits. Default 1024.
    pub fn with_buffer(mut self, buffer: usize) -> Self {
        self.buffer = buffer.max(1);
        self
    }
}

/// A resumable, compaction-proof watch delivered as an async receiver and a
/// [`futures_util::Stream`]. The background task stops when this is dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), etcd_patterns::Error> {
/// use etcd_patterns::{ResilientWatch, WatchEvent, WatchOptions};
/// let endpoints = ["http://127.0.0.1:2379", "http://127.0.0.1:22379"];
/// let opts = WatchOptions::new().with_prefix().with_initial_list();
/// let mut watch = ResilientWatch::connect(&endpoints, None, "services/", opts).await?;
/// while let Some(event) = watch.next().await {
///     match event {
///         WatchEvent::Put { key, revision, .. } => println!("{key} = ... at {revision}"),
///         WatchEvent::Delete { key, .. } => println!("{key} deleted"),
///         WatchEvent::Resynced { revision } => println!("up to date with {revision}"),
///         // Only with `with_events_only`.
///         WatchEvent::Skipped { from, to } => println!("revisions {from}..={to} compacted away"),
///     }
/// }
/// # Ok(()) }
/// ```
pub struct ResilientWatch {
    rx: mpsc::Receiver<WatchEvent>,
    reconnect: Arc<Notify>,
    _stop: DropGuard,
}

impl std::fmt::Debug for ResilientWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientWatch").finish_non_exhaustive()
    }
}

impl ResilientWatch {
    /// Watches `key` through one client (typically balanced over every
    /// endpoint). Fails only if the initial list (when asked for) fails.
    pub async fn start(
        client: Client,
        key: impl Into<String>,
        opts: WatchOptions,
    ) -> Result<ResilientWatch> {
        Self::with_clients(vec![client], key, opts).await
    }

    /// Connects one client per endpoint, with *require leader* set, and
    /// watches through them in turn (see [`ResilientWatch::with_clients`]).
    /// `options` are the usual connect options (TLS, user, timeouts).
    pub async fn connect<E: AsRef<str>>(
        endpoints: &[E],
        options: Option<ConnectOptions>,
        key: impl Into<String>,
        opts: WatchOptions,
    ) -> Result<ResilientWatch> {
        let clients = require_leader_clients(endpoints, options).await?;
        Self::with_clients(clients, key, opts).await
    }

    /// Watches through `clients`, starting with the first and moving to the
    /// next one whenever a stream breaks or stalls.
    pub async fn with_clients(
        clients: Vec<Client>,
        key: impl Into<String>,
        opts: WatchOptions,
    ) -> Result<ResilientWatch> {
        let (tx, rx) = mpsc::channel(opts.buffer);
        let reconnect = Arc::new(Notify::new());
        let task = WatchTask {
            reconnect: reconnect.clone(),
            clients,
            current: 0,
            key: key.into(),
            next_revision: opts.start_revision.max(0),
            known: HashMap::new(),
            tx,
            opts,
        };
        if task.clients.is_empty() {
            return Err(crate::Error::Unexpected(
                "starting a watch: no client given".into(),
            ));
        }
        let initial = if task.opts.initial_list {
            Some(task.list(&task.clients[0].clone()).await?)
        } else {
            None
        };
        let stop = CancellationToken::new();
        let task_stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = task_stop.cancelled() => {}
                _ = task.run(initial) => {}
            }
        });
        Ok(ResilientWatch {
            rx,
            reconnect,
            _stop: stop.drop_guard(),
        })
    }

    /// Drops the current stream and resumes (from the last delivered
    /// revision + 1) on the next client: for callers that noticed by other
    /// means that the member serving the watch is stale, e.g. a failed
    /// linearizable read through the same client.
    pub fn reconnect(&self) {
        self.reconnect.notify_one();
    }

    /// The next event; `None` once the watch task has stopped (never while
    /// etcd is merely unreachable: the task keeps retrying).
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.rx.recv().await
    }

    /// The next event if one is buffered.
    pub fn try_next(&mut self) -> Option<WatchEvent> {
        self.rx.try_recv().ok()
    }
}

impl futures_util::Stream for ResilientWatch {
    type Item = WatchEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// One client per endpoint with *require leader* set: a member that has
/// lost its raft leader cancels the watches made through its client instead
/// of serving nothing. For [`ResilientWatch::with_clients`] and the caches'
/// `start_with_watch_clients`.
pub async fn require_leader_clients<E: AsRef<str>>(
    endpoints: &[E],
    options: Option<ConnectOptions>,
) -> Result<Vec<Client>> {
    let options = options.unwrap_or_default().with_require_leader(true);
    let mut clients = Vec::with_capacity(endpoints.len());
    for e in endpoints {
        // Connecting is lazy enough in etcd-client that a dead endpoint
        // only fails here when it refuses at once; skip it then.
        match Client::connect([e.as_ref()], Some(options.clone())).await {
            Ok(c) => clients.push(c),
            Err(err) => {
                tracing::debug!(endpoint = e.as_ref(), error = %err, "watch endpoint skipped")
            }
        }
    }
    if clients.is_empty() {
        return Err(crate::Error::Unexpected(
            "connecting a watch: no endpoint answered".into(),
        ));
    }
    Ok(clients)
}

/// What a stream ended with.
enum Ended {
    /// Reconnect (broken, stalled, cancelled without compaction).
    Broken,
    /// The start revision was compacted (etcd keeps revisions from this
    /// one): re-list, or skip ahead.
    Compacted(i64),
    /// The receiver is gone.
    Closed,
}

struct WatchTask {
    /// Asked by [`ResilientWatch::reconnect`].
    reconnect: Arc<Notify>,
    clients: Vec<Client>,
    current: usize,
    key: String,
    /// Next revision to receive (0 = "now", before the first stream).
    next_revision: i64,
    /// Keys seen, with their value and mod revision: what a re-list is compared with.
    known: HashMap<String, (Vec<u8>, i64)>,
    tx: mpsc::Sender<WatchEvent>,
    opts: WatchOptions,
}

impl WatchTask {
    fn client(&self) -> Client {
        self.clients[self.current % self.clients.len()].clone()
    }

    fn rotate(&mut self) {
        self.current = (self.current + 1) % self.clients.len();
    }

    async fn list(&self, client: &Client) -> Result<(Vec<KeyValue>, i64)> {
        let opts = self.opts.prefix.then(|| GetOptions::new().with_prefix());
        let mut resp = timeout(
            self.opts.stall_timeout * 2,
            client.kv_client().get(self.key.as_str(), opts),
        )
        .await
        .map_err(|_| crate::Error::Timeout {
            waited: self.opts.stall_timeout * 2,
            what: format!("listing {}", self.key),
        })?
        .map_err(ctx(format!("listing {} for a watch", self.key)))?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok((resp.take_kvs(), revision))
    }

    async fn run(mut self, initial: Option<(Vec<KeyValue>, i64)>) {
        if let Some(listed) = initial {
            if !self.reconcile(listed).await {
                return;
            }
        }
        loop {
            match self.stream_once().await {
                Ended::Closed => return,
                Ended::Broken => {
                    self.rotate();
                    sleep(self.opts.retry).await;
                }
                Ended::Compacted(kept) if self.opts.events_only => {
                    let skipped = WatchEvent::Skipped {
                        from: self.next_revision,
                        to: kept - 1,
                    };
                    self.next_revision = kept;
                    if self.tx.send(skipped).await.is_err() {
                        return;
                    }
                }
                Ended::Compacted(_) => loop {
                    let client = self.client();
                    match self.list(&client).await {
                        Ok(listed) => {
                            if !self.reconcile(listed).await {
                                return;
                            }
                            break;
                        }
                        Err(e) => {
                            tracing::debug!(key = %self.key, error = %e, "watch re-list failed; retrying");
                            self.rotate();
                            sleep(self.opts.retry).await;
                        }
                    }
                },
            }
        }
    }

    /// Emits the difference between `known` and a fresh list, then
    /// `Resynced`. Returns false when the receiver is gone.
    async fn reconcile(&mut self, (kvs, revision): (Vec<KeyValue>, i64)) -> bool {
        let mut fresh = HashMap::with_capacity(kvs.len());
        let mut events = Vec::new();
        for kv in kvs {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let value = kv.value().to_vec();
            if self.opts.events_only {
                events.push(WatchEvent::Put {
                    key,
                    value,
                    prev: None,
                    revision: kv.mod_revision(),
                });
                continue;
            }
            let prev = self.known.remove(&key);
            if prev.as_ref().map(|p| p.1) != Some(kv.mod_revision()) {
                events.push(WatchEvent::Put {
                    key: key.clone(),
                    value: value.clone(),
                    prev: prev.map(|p| p.0),
                    revision: kv.mod_revision(),
                });
            }
            fresh.insert(key, (value, kv.mod_revision()));
        }
        let mut gone: Vec<_> = std::mem::take(&mut self.known).into_iter().collect();
        gone.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, (value, _)) in gone {
            events.push(WatchEvent::Delete {
                key,
                prev: Some(value),
                revision,
            });
        }
        // Puts in revision order, deletions (at the list's revision) last.
        events.sort_by_key(WatchEvent::revision);
        self.known = fresh;
        self.next_revision = revision + 1;
        for ev in events {
            if self.tx.send(ev).await.is_err() {
                return false;
            }
        }
        self.tx
            .send(WatchEvent::Resynced { revision })
            .await
            .is_ok()
    }

    async fn open(&self, client: &Client) -> Option<WatchStream> {
        let mut opts = etcd_client::WatchOptions::new().with_progress_notify();
        if !self.opts.events_only {
            opts = opts.with_prev_key();
        }
        if self.opts.prefix {
            opts = opts.with_prefix();
        }
        if self.next_revision > 0 {
            opts = opts.with_start_revision(self.next_revision);
        }
        let mut watch_client = client.watch_client();
        let open = watch_client.watch(self.key.as_str(), Some(opts));
        match timeout(self.opts.stall_timeout, open).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(key = %self.key, error = %e, "opening a watch failed");
                None
            }
            Err(_) => {
                tracing::debug!(key = %self.key, "opening a watch timed out");
                None
            }
        }
    }

    /// The cluster's current revision, read linearizably (so only a member
    /// with a quorum answers) through the client after the one watching, or
    /// `None` if no answer came within `stall_timeout`.
    async fn cluster_revision(&self) -> Option<i64> {
        let client = &self.clients[(self.current + 1) % self.clients.len()];
        let mut opts = GetOptions::new().with_count_only();
        if self.opts.prefix {
            opts = opts.with_prefix();
        }
        match timeout(
            self.opts.stall_timeout,
            client.kv_client().get(self.key.as_str(), Some(opts)),
        )
        .await
        {
            Ok(Ok(resp)) => resp.header().map(|h| h.revision()),
            _ => None,
        }
    }

    async fn stream_once(&mut self) -> Ended {
        let client = self.client();
        let Some(mut stream) = self.open(&client).await else {
            return Ended::Broken;
        };
        let mut probing = false;
        // The cluster's revision read at the latest probe, and the one read
        // a probe earlier (at least `stall_timeout` ago): a healthy member
        // has long applied the latter, while it may still be a few entries
        // behind the former on a busy cluster.
        let (mut latest_rev, mut settled_rev) = (None, None);
        loop {
            let next = tokio::select! {
                m = timeout(self.opts.stall_timeout, stream.message()) => m,
                _ = self.reconnect.notified() => {
                    tracing::debug!(key = %self.key, "watch reconnection requested");
                    return Ended::Broken;
                }
            };
            let msg = match next {
                Ok(m) => m,
                Err(_) if !probing => {
                    // Quiet: ask for a progress notification. A healthy
                    // member answers at once with a revision at least the
                    // cluster's; a frozen one does not answer, a partitioned
                    // one answers with its own stale revision.
                    probing = true;
                    settled_rev = latest_rev.or(settled_rev);
                    latest_rev = self.cluster_revision().await;
                    if stream.request_progress().await.is_err() {
                        return Ended::Broken;
                    }
                    continue;
                }
                Err(_) => {
                    tracing::debug!(key = %self.key, "watch stalled; reconnecting");
                    return Ended::Broken;
                }
            };
            probing = false;
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => return Ended::Broken,
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    tracing::debug!(key = %self.key, compacted = resp.compact_revision(), "watch revision compacted; re-listing");
                    return Ended::Compacted(resp.compact_revision());
                }
                tracing::debug!(key = %self.key, reason = resp.cancel_reason(), "watch cancelled; reconnecting");
                return Ended::Broken;
            }
            let progress = resp.events().is_empty()
                && !resp.created()
                && resp.compact_revision() == 0
                && resp.header().is_some();
            if progress {
                let at = resp.header().map(|h| h.revision()).unwrap_or(0);
                if let Some(cluster) = settled_rev.filter(|c| at < *c) {
                    tracing::debug!(key = %self.key, member = at, cluster, "watching member is behind the cluster; reconnecting");
                    return Ended::Broken;
                }
                // A periodic notification (it carries our watch id; one we
                // requested carries -1 and, on etcd before 3.4.24/3.5.8, may
                // come before this watcher has caught up) promises every
                // event up to `at`: resume after it.
                if resp.watch_id() >= 0 && at >= self.next_revision {
                    self.next_revision = at + 1;
                }
                continue;
            }
            if resp.created() && self.next_revision == 0 {
                // "From now on": pin the position so a reconnect resumes here.
                self.next_revision = resp.header().map(|h| h.revision()).unwrap_or(0) + 1;
            }
            let mut last = None;
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let revision = kv.mod_revision();
                if revision < self.next_revision {
                    continue; // already delivered before a reconnect
                }
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let known_prev = match ev.event_type() {
                    _ if self.opts.events_only => None,
                    EventType::Put => self
                        .known
                        .insert(key.clone(), (kv.value().to_vec(), revision)),
                    EventType::Delete => self.known.remove(&key),
                };
                let prev = ev
                    .prev_kv()
                    .map(|p| p.value().to_vec())
                    .or(known_prev.map(|p| p.0));
                let event = match ev.event_type() {
                    EventType::Put => WatchEvent::Put {
                        key,
                        value: kv.value().to_vec(),
                        prev,
                        revision,
                    },
                    EventType::Delete => WatchEvent::Delete {
                        key,
                        prev,
                        revision,
                    },
                };
                if self.tx.send(event).await.is_err() {
                    return Ended::Closed;
                }
                last = Some(revision);
            }
            if let Some(rev) = last {
                self.next_revision = rev + 1;
            }
        }
    }
}
