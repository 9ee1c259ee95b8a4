//! Service discovery: instances registered under a session lease, found
//! through a watched local cache, with active health checks.
//!
//! Layout: `namespace/<service>/<instance id>` = the [`Instance`] as JSON,
//! attached to the registering [`Session`]'s lease. A process that dies
//! stops renewing its lease, and etcd deletes its instances within the TTL;
//! a clean shutdown deletes them at once ([`Registration::deregister`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::cache::{CacheState, WatchCache, put_json};
use crate::error::{Result, ctx};
use crate::keys;
use crate::session::Session;
use crate::watch::WatchEvent;

/// One instance of a service, stored as JSON.
///
/// ```
/// use etcd_patterns::Instance;
/// let i = Instance::new("api", "api-1", "10.0.0.1:8080")
///     .with_weight(3)
///     .with_version("1.4.2")
///     .with_metadata("zone", "eu-1");
/// assert!(i.healthy);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The service name.
    pub service: String,
    /// Unique id within the service.
    pub id: String,
    /// `host:port` to reach it (what health checks probe).
    pub address: String,
    /// Free-form labels.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Relative weight for weighted balancing (at least 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// The instance's software version.
    #[serde(default)]
    pub version: String,
    /// Local verdict of this process's health checks (not stored in etcd).
    #[serde(skip, default = "yes")]
    pub healthy: bool,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

impl Instance {
    /// An instance with weight 1, no metadata, no version.
    pub fn new(
        service: impl Into<String>,
        id: impl Into<String>,
        address: impl Into<String>,
    ) -> Instance {
        Instance {
            service: service.into(),
            id: id.into(),
            address: address.into(),
            metadata: BTreeMap::new(),
            weight: 1,
            version: String::new(),
            healthy: true,
        }
    }

    /// Sets the weight (0 is stored as 1).
    pub fn with_weight(mut self, weight: u32) -> Instance {
        self.weight = weight.max(1);
        self
    }

    /// Sets the version.
    pub fn with_version(mut self, version: impl Into<String>) -> Instance {
        self.version = version.into();
        self
    }

    /// Adds one metadata label.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Instance {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// A registered instance; its key lives as long as the session's lease.
///
/// ```no_run
/// # async fn demo(session: etcd_patterns::Session) -> Result<(), etcd_patterns::Error> {
/// use etcd_patterns::{Instance, Registration};
/// let reg = Registration::register(&session, "services", Instance::new("api", "api-1", "10.0.0.1:8080")).await?;
/// // ... serve ...
/// reg.deregister().await?; // on shutdown
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Registration {
    session: Session,
    key: String,
    instance: Instance,
}

impl Registration {
    /// Writes `instance` under `namespace/` attached to the session's lease
    /// (overwriting an earlier registration with the same id).
    pub async fn register(
        session: &Session,
        namespace: &str,
        instance: Instance,
    ) -> Result<Registration> {
        let key = instance_key(&keys::normalize_prefix(namespace), &instance);
        let reg = Registration {
            session: session.clone(),
            key,
            instance,
        };
        reg.write().await?;
        Ok(reg)
    }

    async fn write(&self) -> Result<()> {
        let lease = Some(self.session.lease_id());
        put_json(self.session.client(), &self.key, &self.instance, lease).await?;
        Ok(())
    }

    /// The registered instance.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The instance's key in etcd.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Re-writes the instance with new fields (same service and id).
    pub async fn update(&mut self, f: impl FnOnce(&mut Instance)) -> Result<()> {
        let (service, id) = (self.instance.service.clone(), self.instance.id.clone());
        f(&mut self.instance);
        self.instance.service = service;
        self.instance.id = id;
        self.write().await
    }

    /// Deletes the instance's key (the session goes on), unless another
    /// session registered the same id since: only a key under this
    /// session's lease is deleted.
    pub async fn deregister(self) -> Result<()> {
        let lease = self.session.lease_id();
        let txn = Txn::new()
            .when([Compare::lease(self.key.as_str(), CompareOp::Equal, lease)])
            .and_then([TxnOp::delete(self.key.as_str(), None)]);
        self.session
            .client()
            .kv_client()
            .txn(txn)
            .await
            .map_err(ctx(format!("deregistering {}", self.key)))?;
        Ok(())
    }
}

fn instance_key(namespace: &str, i: &Instance) -> String {
    format!("{namespace}{}/{}", i.service, i.id)
}

/// What changed in a service, as seen by one [`Discovery`] cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceChange {
    /// A new instance registered.
    Added(Instance),
    /// An instance deregistered, expired with its lease or was deleted.
    Removed(Instance),
    /// An instance's fields or local health changed.
    Updated {
        /// Before.
        old: Instance,
        /// After.
        new: Instance,
    },
}

impl ServiceChange {
    /// The service concerned.
    pub fn service(&self) -> &str {
        match self {
            ServiceChange::Added(i) | ServiceChange::Removed(i) => &i.service,
            ServiceChange::Updated { new, .. } => &new.service,
        }
    }
}

#[derive(Default)]
pub(crate) struct DiscoveryState {
    instances: HashMap<String, BTreeMap<String, Instance>>,
    unhealthy: HashSet<(String, String)>,
    /// Healthy instances per service, rebuilt on every change: what
    /// `discover` hands out without copying.
    healthy: HashMap<String, Arc<[Instance]>>,
    /// Mod revision of each instance's key as last seen: a health check
    /// deletes the key only if it is still that version.
    revisions: HashMap<(String, String), i64>,
}

impl DiscoveryState {
    fn rebuild(&mut self, service: &str) {
        let list: Vec<Instance> = self
            .instances
            .get(service)
            .map(|m| m.values().filter(|i| i.healthy).cloned().collect())
            .unwrap_or_default();
        self.healthy.insert(service.to_string(), list.into());
    }

    fn set_health(
        &mut self,
        service: &str,
        id: &str,
        healthy: bool,
        changes: &mut Vec<ServiceChange>,
    ) {
        let mark = (service.to_string(), id.to_string());
        if healthy {
            self.unhealthy.remove(&mark);
        } else {
            self.unhealthy.insert(mark);
        }
        let Some(i) = self.instances.get_mut(service).and_then(|m| m.get_mut(id)) else {
            return;
        };
        if i.healthy != healthy {
            let old = i.clone();
            i.healthy = healthy;
            changes.push(ServiceChange::Updated {
                old,
                new: i.clone(),
            });
            self.rebuild(service);
        }
    }
}

impl CacheState for DiscoveryState {
    type Change = ServiceChange;

    fn apply(&mut self, key: &str, event: &WatchEvent, changes: &mut Vec<ServiceChange>) {
        let Some((service, id)) = key.split_once('/') else {
            return;
        };
        match event {
            WatchEvent::Put {
                value, revision, ..
            } => {
                self.revisions
                    .insert((service.to_string(), id.to_string()), *revision);
                let mut new: Instance = match serde_json::from_slice(value) {
                    Ok(i) => i,
                    Err(e) => {
                        tracing::warn!(key, error = %e, "unreadable service instance ignored");
                        return;
                    }
                };
                // The key is the truth for service and id.
                new.service = service.to_string();
                new.id = id.to_string();
                new.healthy = !self
                    .unhealthy
                    .contains(&(service.to_string(), id.to_string()));
                let old = self
                    .instances
                    .entry(service.to_string())
                    .or_default()
                    .insert(id.to_string(), new.clone());
                changes.push(match old {
                    None => ServiceChange::Added(new),
                    Some(old) => ServiceChange::Updated { old, new },
                });
            }
            WatchEvent::Delete { .. } => {
                let old = self.instances.get_mut(service).and_then(|m| m.remove(id));
                let sid = (service.to_string(), id.to_string());
                self.unhealthy.remove(&sid);
                self.revisions.remove(&sid);
                if let Some(old) = old {
                    changes.push(ServiceChange::Removed(old));
                }
            }
            // Skipped comes only from an events-only watch, which caches never use.
            WatchEvent::Resynced { .. } | WatchEvent::Skipped { .. } => return,
        }
        self.rebuild(service);
    }
}

/// Finds instances of services registered under `namespace/`, from a
/// local cache fed by a resilient watch.
///
/// ```no_run
/// # async fn demo(client: etcd_client::Client) -> Result<(), etcd_patterns::Error> {
/// use etcd_patterns::{Discovery, ServiceChange};
/// let discovery = Discovery::start(client, "services").await?;
/// for instance in discovery.discover("api").iter() {
///     println!("{} at {}", instance.id, instance.address);
/// }
/// let mut changes = discovery.subscribe();
/// while let Ok(change) = changes.recv().await {
///     if let ServiceChange::Removed(i) = change { println!("{} left", i.id) }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Discovery {
    client: Client,
    namespace: String,
    cache: WatchCache<DiscoveryState>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Discovery {
    /// Lists `namespace/` into the cache and follows it.
    pub async fn start(client: Client, namespace: &str) -> Result<Discovery> {
        Self::start_with_watch_clients(client.clone(), vec![client], namespace).await
    }

    /// Like [`Discovery::start`], with the cache's watch served by
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
    ) -> Result<Discovery> {
        let namespace = keys::normalize_prefix(namespace);
        let cache = WatchCache::start(watch_clients, &namespace, DiscoveryState::default()).await?;
        Ok(Discovery {
            client,
            namespace,
            cache,
        })
    }

    /// Registers `instance` in this namespace under `session`'s lease.
    pub async fn register(&self, session: &Session, instance: Instance) -> Result<Registration> {
        Registration::register(session, &self.namespace, instance).await
    }

    /// The healthy instances of `service` (sorted by id), from the cache:
    /// no etcd round trip and no copy.
    pub fn discover(&self, service: &str) -> Arc<[Instance]> {
        self.cache.read(|s| {
            s.healthy
                .get(service)
                .cloned()
                .unwrap_or_else(|| Arc::from(Vec::new()))
        })
    }

    /// Every cached instance of `service`, healthy or not.
    pub fn instances(&self, service: &str) -> Vec<Instance> {
        self.cache.read(|s| {
            s.instances
                .get(service)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        })
    }

    /// Changes of every service from now on (filter with
    /// [`ServiceChange::service`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ServiceChange> {
        self.cache.subscribe()
    }

    /// Marks an instance healthy or not in this cache (health checks do
    /// this; use it for passive checks such as failed requests).
    pub fn set_healthy(&self, service: &str, id: &str, healthy: bool) {
        self.cache
            .update(|s, changes| s.set_health(service, id, healthy, changes));
    }

    /// Waits (up to 5 s) until the cache has applied `revision`.
    pub async fn wait_for(&self, revision: i64) -> Result<()> {
        self.cache.wait_for(revision, Duration::from_secs(5)).await
    }

    /// Mod revision of the instance's key as this cache last saw it.
    fn revision_of(&self, service: &str, id: &str) -> Option<i64> {
        self.cache.read(|s| {
            s.revisions
                .get(&(service.to_string(), id.to_string()))
                .copied()
        })
    }

    /// Starts probing every instance of `service` (see [`HealthCheck`]);
    /// stops when the returned handle is dropped.
    pub fn check_health(&self, service: &str, check: HealthCheck) -> HealthChecker {
        let stop = CancellationToken::new();
        let task = HealthTask {
            discovery: self.clone(),
            service: service.to_string(),
            check,
            counts: HashMap::new(),
        };
        let task_stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = task_stop.cancelled() => {}
                _ = task.run() => {}
            }
        });
        HealthChecker {
            _stop: stop.drop_guard(),
        }
    }
}

/// How an instance is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connect to the address succeeds.
    Tcp,
    /// `GET <path>` over HTTP/1.1 answers with a 2xx status.
    Http {
        /// The path, for example `/health`.
        path: String,
    },
}

/// An active health check: probe every `interval`; after `unhealthy_after`
/// consecutive failures the instance is skipped (and, with `deregister`,
/// its key deleted from etcd); after `healthy_after` consecutive successes
/// it is used again. New instances start healthy.
///
/// ```
/// use std::time::Duration;
/// use etcd_patterns::discovery::{HealthCheck, Probe};
/// let check = HealthCheck::new(Probe::Http { path: "/health".into() })
///     .with_interval(Duration::from_secs(2))
///     .with_thresholds(3, 2);
/// ```
#[derive(Debug, Clone)]
pub struct HealthCheck {
    probe: Probe,
    interval: Duration,
    timeout: Duration,
    unhealthy_after: u32,
    healthy_after: u32,
    deregister: bool,
}

impl HealthCheck {
    /// Every 5 s, 1 s timeout, unhealthy after 3 failures, healthy after 2 successes.
    pub fn new(probe: Probe) -> HealthCheck {
        HealthCheck {
            probe,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            unhealthy_after: 3,
            healthy_after: 2,
            deregister: false,
        }
    }

    /// Probe this often.
    pub fn with_interval(mut self, interval: Duration) -> HealthCheck {
        self.interval = interval;
        self
    }

    /// Give up on one probe after this long.
    pub fn with_timeout(mut self, timeout: Duration) -> HealthCheck {
        self.timeout = timeout;
        self
    }

    /// Consecutive failures before unhealthy, successes before healthy again.
    pub fn with_thresholds(mut self, unhealthy_after: u32, healthy_after: u32) -> HealthCheck {
        self.unhealthy_after = unhealthy_after.max(1);
        self.healthy_after = healthy_after.max(1);
        self
    }

    /// Also delete an unhealthy instance's key from etcd (every watcher
    /// then drops it; the owner's session is not affected).
    pub fn deregistering(mut self) -> HealthCheck {
        self.deregister = true;
        self
    }
}

/// Stops a health check when dropped.
#[derive(Debug)]
pub struct HealthChecker {
    _stop: DropGuard,
}

struct HealthTask {
    discovery: Discovery,
    service: String,
    check: HealthCheck,
    /// Consecutive (failures, successes) per instance id.
    counts: HashMap<String, (u32, u32)>,
}

impl HealthTask {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(self.check.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let instances = self.discovery.instances(&self.service);
            // The versions being probed: only these may be deregistered.
            let probed: Vec<Option<i64>> = instances
                .iter()
                .map(|i| self.discovery.revision_of(&i.service, &i.id))
                .collect();
            let probes = instances.iter().map(|i| probe(&self.check, &i.address));
            let results = futures_util::future::join_all(probes).await;
            self.counts
                .retain(|id, _| instances.iter().any(|i| &i.id == id));
            for ((i, ok), seen) in instances.iter().zip(results).zip(probed) {
                let c = self.counts.entry(i.id.clone()).or_default();
                *c = if ok { (0, c.1 + 1) } else { (c.0 + 1, 0) };
                if i.healthy && c.0 >= self.check.unhealthy_after {
                    tracing::info!(service = %i.service, id = %i.id, address = %i.address, "instance unhealthy");
                    self.discovery.set_healthy(&i.service, &i.id, false);
                    if self.check.deregister {
                        self.deregister(i, seen).await;
                    }
                } else if !i.healthy && c.1 >= self.check.healthy_after {
                    tracing::info!(service = %i.service, id = %i.id, "instance healthy again");
                    self.discovery.set_healthy(&i.service, &i.id, true);
                }
            }
        }
    }
}

impl HealthTask {
    /// Deletes the key of the instance that failed its probes, unless it
    /// changed since (re-registered by a restarted process, updated): that
    /// version has not been probed yet.
    async fn deregister(&self, i: &Instance, seen: Option<i64>) {
        let key = instance_key(&self.discovery.namespace, i);
        let Some(seen) = seen else {
            return;
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, seen)])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        match self.discovery.client.kv_client().txn(txn).await {
            Ok(r) if !r.succeeded() => {
                tracing::info!(id = %i.id, "unhealthy instance changed since its probes; not deregistered")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(id = %i.id, error = %e, "deregistering an unhealthy instance failed")
            }
        }
    }
}

/// One probe; true = healthy.
async fn probe(check: &HealthCheck, address: &str) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        let Probe::Http { path } = &check.probe else {
            return Some(true);
        };
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        // The status line is all we need: "HTTP/1.1 200 OK".
        let mut buf = [0u8; 64];
        let mut len = 0;
        while len < 12 {
            let n = stream.read(&mut buf[len..]).await.ok()?;
            if n == 0 {
                break;
            }
            len += n;
        }
        let line = std::str::from_utf8(&buf[..len]).ok()?;
        let status = line.split_whitespace().nth(1)?;
        Some(status.starts_with('2') && line.starts_with("HTTP/1."))
    };
    matches!(timeout(check.timeout, attempt).await, Ok(Some(true)))
}
