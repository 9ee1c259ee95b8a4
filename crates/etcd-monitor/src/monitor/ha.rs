//! Replicas (`ha.*`): several `etcd-monitor run` processes with the same
//! configuration and one PostgreSQL store split the clusters between them,
//! coordinated through etcd with this project's `etcd-patterns`.
//!
//! - Each replica keeps a [`Session`] and registers under
//!   `PREFIX/replicas/` ([`Discovery`]); it sees the others there.
//! - Each cluster belongs to the live replica that ranks first for it by
//!   rendezvous hashing ([`etcd_patterns::balance::rendezvous`]), so every
//!   replica computes the same assignment and a replica leaving moves only
//!   its own clusters.
//! - Ownership is a lock ([`Mutex`]) at `PREFIX/owners/CLUSTER/` on the
//!   replica's session lease. Its fencing token (the key's create revision)
//!   rises with every new owner, and every write an owner makes of alert
//!   state, outbox rows and published status passes the store's fence
//!   ([`crate::store::Fence`]): a token lower than the highest the store has
//!   seen for the cluster is refused in the same transaction.
//! - A replica collects, evaluates, alerts, backs up and defragments only
//!   the clusters it owns ([`Ownership`]). It stops the moment its session
//!   reports itself lost, which the session does a margin before the lease
//!   can expire on the server, so before a successor can take the lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use etcd_patterns::{Discovery, Instance, Mutex, MutexGuard, Registration, Session};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::ha::HaConfig;
use crate::lifecycle::Lifecycle;
use crate::store::Fence;

/// The service name replicas register under.
const SERVICE: &str = "monitor";

/// How often ownership is reconciled when nothing changes.
const RECONCILE: Duration = Duration::from_secs(1);

/// After giving a cluster up on purpose (another replica ranks first for
/// it now), how long the replica waits before releasing the lock, so that
/// rounds already running finish before the successor starts. Writes that
/// still land later are refused by the fence.
const HANDOFF_GRACE: Duration = Duration::from_secs(1);

/// Whether this process works on a cluster now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "token")]
pub enum Owner {
    /// Replicas are off: this process owns every cluster, unfenced.
    Solo,
    /// Owned with this fencing token.
    Held(i64),
    /// Another replica owns it (or nobody, during a handover).
    NotOwned,
}

/// One cluster's ownership, as the cluster's tasks see it.
#[derive(Debug, Clone)]
pub struct Ownership {
    cluster: Arc<str>,
    replica: Arc<str>,
    rx: watch::Receiver<Owner>,
}

impl Ownership {
    /// The ownership now.
    pub fn current(&self) -> Owner {
        *self.rx.borrow()
    }

    /// Whether this process should work on the cluster now.
    pub fn owned(&self) -> bool {
        !matches!(self.current(), Owner::NotOwned)
    }

    /// The fence the store checks on this owner's writes (`None` without replicas).
    pub fn fence(&self) -> Option<Fence> {
        match self.current() {
            Owner::Held(token) => Some(Fence {
                cluster: self.cluster.to_string(),
                token,
                replica: self.replica.to_string(),
            }),
            Owner::Solo | Owner::NotOwned => None,
        }
    }

    /// Changes of ownership.
    pub fn changes(&self) -> watch::Receiver<Owner> {
        self.rx.clone()
    }

    /// Runs `work` whenever the cluster is owned, until `token` is
    /// cancelled: started when ownership is gained, its token cancelled
    /// (and the work awaited) as soon as ownership is lost.
    pub async fn while_owned<F, Fut>(&self, token: CancellationToken, mut work: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut rx = self.rx.clone();
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                r = until(&mut rx, |o| o != Owner::NotOwned) => if r.is_err() { return },
            }
            let child = token.child_token();
            let run = work(child.clone());
            tokio::pin!(run);
            tokio::select! {
                _ = &mut run => {}
                _ = until(&mut rx, |o| o == Owner::NotOwned) => {
                    child.cancel();
                    run.await;
                }
            }
            if token.is_cancelled() {
                return;
            }
        }
    }
}

/// Waits until `f` holds (the guard is not kept across awaits).
async fn until(
    rx: &mut watch::Receiver<Owner>,
    f: impl FnMut(Owner) -> bool,
) -> Result<(), watch::error::RecvError> {
    let mut f = f;
    rx.wait_for(|o| f(*o)).await.map(|_| ())
}

/// A replica as registered in etcd.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ReplicaView {
    /// `ha.replica_name`.
    pub name: String,
    /// Where its API answers.
    pub url: String,
    /// The clusters it owns now.
    pub clusters: Vec<String>,
    /// This process.
    #[serde(rename = "self")]
    pub this: bool,
}

/// This replica's place among the replicas, for the API and `/metrics`.
#[derive(Debug)]
pub struct Replicas {
    /// `ha.enabled`.
    pub enabled: bool,
    /// This replica's name.
    pub name: String,
    /// `ha.ttl`.
    pub ttl: Duration,
    url: watch::Sender<String>,
    member: AtomicBool,
    owners: BTreeMap<String, watch::Sender<Owner>>,
    view: std::sync::Mutex<Vec<ReplicaView>>,
    problem: std::sync::Mutex<Option<String>>,
    handovers: AtomicU64,
}

impl Replicas {
    /// For `config`: with replicas off, this process owns every cluster.
    pub fn new(config: &Config) -> Replicas {
        let ha = &config.ha;
        let initial = if ha.enabled {
            Owner::NotOwned
        } else {
            Owner::Solo
        };
        Replicas {
            enabled: ha.enabled,
            name: replica_name(config),
            ttl: ha.ttl,
            url: watch::channel(advertise_url(config, None)).0,
            member: AtomicBool::new(!ha.enabled),
            owners: config
                .clusters
                .iter()
                .map(|c| (c.name.clone(), watch::channel(initial).0))
                .collect(),
            view: Default::default(),
            problem: Default::default(),
            handovers: AtomicU64::new(0),
        }
    }

    /// `cluster`'s ownership, for its tasks.
    pub fn ownership(&self, cluster: &str) -> Ownership {
        let rx = match self.owners.get(cluster) {
            Some(tx) => tx.subscribe(),
            None => watch::channel(Owner::NotOwned).1,
        };
        Ownership {
            cluster: Arc::from(cluster),
            replica: Arc::from(self.name.as_str()),
            rx,
        }
    }

    /// The clusters this process owns now, in name order.
    pub fn owned(&self) -> Vec<String> {
        self.owners
            .iter()
            .filter(|(_, tx)| !matches!(*tx.borrow(), Owner::NotOwned))
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Whether this replica is registered with a live session (always,
    /// without replicas).
    pub fn is_member(&self) -> bool {
        self.member.load(Ordering::Acquire)
    }

    /// Clusters taken over or given up since start.
    pub fn handovers(&self) -> u64 {
        self.handovers.load(Ordering::Relaxed)
    }

    /// Why this replica is not a member, while it is not.
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().ok().and_then(|p| p.clone())
    }

    /// The live replicas as last read from etcd (this process alone,
    /// without replicas).
    pub fn view(&self) -> Vec<ReplicaView> {
        if !self.enabled {
            return vec![ReplicaView {
                name: self.name.clone(),
                url: self.url.borrow().clone(),
                clusters: self.owned(),
                this: true,
            }];
        }
        self.view.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Where this replica's API answers (once bound; `ha.advertise_url` wins).
    pub fn set_bound_address(&self, config: &Config, addr: std::net::SocketAddr) {
        self.url.send_replace(advertise_url(config, Some(addr)));
    }

    fn set(&self, cluster: &str, owner: Owner) {
        if let Some(tx) = self.owners.get(cluster) {
            let before = tx.send_replace(owner);
            if before != owner {
                self.handovers.fetch_add(1, Ordering::Relaxed);
                match owner {
                    Owner::Held(token) => {
                        tracing::info!(%cluster, token, "this replica owns the cluster now")
                    }
                    _ => tracing::info!(%cluster, "this replica no longer owns the cluster"),
                }
            }
        }
    }

    fn release_all(&self) {
        for c in self.owners.keys() {
            self.set(c, Owner::NotOwned);
        }
    }

    fn set_problem(&self, p: Option<String>) {
        if let Ok(mut slot) = self.problem.lock() {
            *slot = p;
        }
    }
}

/// `ha.replica_name`, or the host name and the API port (the host name
/// and the process id when the port is chosen at start, `:0`).
fn replica_name(config: &Config) -> String {
    if let Some(n) = &config.ha.replica_name {
        return n.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    match config.api.listen.rsplit_once(':').map(|(_, p)| p) {
        Some(port) if port != "0" && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{host}:{port}")
        }
        _ => format!("{host}-{}", std::process::id()),
    }
}

fn advertise_url(config: &Config, bound: Option<std::net::SocketAddr>) -> String {
    if let Some(u) = &config.ha.advertise_url {
        return u.clone();
    }
    let scheme = if config.api.tls.is_some() {
        "https"
    } else {
        "http"
    };
    match bound {
        Some(a) => format!("{scheme}://{a}"),
        None => format!("{scheme}://{}", config.api.listen),
    }
}

/// Starts coordinating with the other replicas when `ha.enabled`.
pub fn start(config: &Config, replicas: &Arc<Replicas>, lifecycle: &Lifecycle) {
    if !config.ha.enabled {
        return;
    }
    let Some(coordination) = config.ha.coordination_cluster(&config.clusters) else {
        // `config check` refuses this; stay a non-member rather than own everything.
        replicas.set_problem(Some("ha: no coordination cluster configured".into()));
        return;
    };
    let c = Coordinator {
        ha: config.ha.clone(),
        coordination,
        clusters: config.clusters.iter().map(|c| c.name.clone()).collect(),
        replicas: replicas.clone(),
        token: lifecycle.token(),
    };
    lifecycle.spawn(async move {
        use tracing::Instrument;
        let span = tracing::info_span!("ha", replica = %c.replicas.name);
        c.run().instrument(span).await
    });
}

struct Coordinator {
    ha: HaConfig,
    coordination: crate::config::ClusterConfig,
    clusters: Vec<String>,
    replicas: Arc<Replicas>,
    token: CancellationToken,
}

fn prefix(ha: &HaConfig) -> String {
    let p = ha.prefix.trim();
    if p.ends_with('/') {
        p.to_string()
    } else {
        format!("{p}/")
    }
}

/// A cluster name as one key segment (names may hold '/').
fn key_segment(cluster: &str) -> String {
    cluster.replace('%', "%25").replace('/', "%2F")
}

impl Coordinator {
    async fn run(self) {
        let mut delay = Duration::from_millis(500);
        loop {
            match self.term().await {
                Ok(()) => break,
                Err(e) => {
                    self.replicas.release_all();
                    self.replicas.member.store(false, Ordering::Release);
                    tracing::warn!(error = %e, "not coordinating with the other replicas; retrying");
                    self.replicas.set_problem(Some(e));
                }
            }
            tokio::select! {
                _ = self.token.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        self.replicas.release_all();
        self.replicas.member.store(false, Ordering::Release);
    }

    /// One session: register, own what ranks first, until shutdown
    /// (`Ok`) or the session is lost (`Err`).
    async fn term(&self) -> Result<(), String> {
        let me = self.replicas.name.clone();
        let client = crate::connection::connect(&self.coordination)
            .await
            .map_err(|e| format!("cannot reach the coordination cluster: {}", e.cause()))?;
        let session = Session::new(client.clone(), self.ha.ttl)
            .await
            .map_err(|e| format!("cannot open a session: {e}"))?;
        let ns = format!("{}replicas", prefix(&self.ha));
        let discovery = Discovery::start(client, &ns)
            .await
            .map_err(|e| format!("cannot watch the replicas: {e}"))?;
        let mut changes = discovery.subscribe();
        let mut url = self.replicas.url.subscribe();
        let instance = Instance::new(SERVICE, me.as_str(), url.borrow_and_update().as_str());
        let mut registration = Registration::register(&session, &ns, instance)
            .await
            .map_err(|e| format!("cannot register: {e}"))?;
        self.replicas.member.store(true, Ordering::Release);
        self.replicas.set_problem(None);
        tracing::info!(lease = session.lease_id(), "registered as a replica");
        let mut held: BTreeMap<String, MutexGuard> = BTreeMap::new();
        let mut tick = tokio::time::interval(RECONCILE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut advertised: Option<(String, Vec<String>)> = None;
        let outcome = loop {
            tokio::select! {
                _ = self.token.cancelled() => break Ok(()),
                reason = session.lost() => break Err(format!("the session was lost: {reason}")),
                _ = tick.tick() => {}
                _ = changes.recv() => {}
                _ = url.changed() => {}
            }
            let mut live: Vec<String> = discovery
                .instances(SERVICE)
                .into_iter()
                .map(|i| i.id)
                .collect();
            if !live.contains(&me) {
                // Our own registration may not have come back through the watch yet.
                live.push(me.clone());
            }
            let mut give_up = Vec::new();
            for cluster in &self.clusters {
                let first =
                    etcd_patterns::balance::rendezvous(cluster, live.iter().map(String::as_str))
                        == Some(me.as_str());
                let have = held.contains_key(cluster);
                if first && !have {
                    let lock = Mutex::new(
                        session.clone(),
                        format!("{}owners/{}", prefix(&self.ha), key_segment(cluster)),
                    );
                    match lock.try_lock().await {
                        Ok(guard) => {
                            self.replicas
                                .set(cluster, Owner::Held(guard.fencing_token()));
                            held.insert(cluster.clone(), guard);
                        }
                        // The previous owner has not let go yet (or its lease runs out).
                        Err(etcd_patterns::Error::Locked { .. }) => {}
                        Err(e) => tracing::warn!(%cluster, error = %e, "cannot take ownership"),
                    }
                } else if !first && have {
                    self.replicas.set(cluster, Owner::NotOwned);
                    give_up.push(cluster.clone());
                }
            }
            if !give_up.is_empty() {
                // Once for all: rounds in flight finish before the successors start.
                tokio::time::sleep(HANDOFF_GRACE).await;
                for cluster in give_up {
                    if let Some(guard) = held.remove(&cluster) {
                        if let Err(e) = guard.unlock().await {
                            tracing::warn!(%cluster, error = %e, "cannot release ownership; it ends with the session");
                        }
                    }
                }
            }
            let now = (
                url.borrow().clone(),
                held.keys().cloned().collect::<Vec<_>>(),
            );
            if advertised.as_ref() != Some(&now) {
                let (address, clusters) = now.clone();
                let update = registration
                    .update(|i| {
                        i.address = address;
                        i.metadata.insert("clusters".into(), clusters.join(","));
                    })
                    .await;
                match update {
                    Ok(()) => advertised = Some(now),
                    Err(e) => tracing::warn!(error = %e, "cannot update the registration"),
                }
            }
            self.publish_view(&discovery, &me, &held);
        };
        // Stop working before anything else: a successor may start soon.
        self.replicas.release_all();
        self.replicas.member.store(false, Ordering::Release);
        if outcome.is_ok() {
            // Shutting down: hand the clusters over now, not after the TTL.
            let leave = async {
                for (_, guard) in std::mem::take(&mut held) {
                    let _ = guard.unlock().await;
                }
                let _ = registration.deregister().await;
                let _ = session.close().await;
            };
            let _ = tokio::time::timeout(Duration::from_secs(3), leave).await;
        }
        outcome
    }

    fn publish_view(&self, discovery: &Discovery, me: &str, held: &BTreeMap<String, MutexGuard>) {
        let mut view: Vec<ReplicaView> = discovery
            .instances(SERVICE)
            .into_iter()
            .map(|i| ReplicaView {
                this: i.id == me,
                clusters: if i.id == me {
                    held.keys().cloned().collect()
                } else {
                    i.metadata
                        .get("clusters")
                        .map(|c| {
                            c.split(',')
                                .filter(|s| !s.is_empty())
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default()
                },
                name: i.id,
                url: i.address,
            })
            .collect();
        view.sort_by(|a, b| a.name.cmp(&b.name));
        if let Ok(mut slot) = self.replicas.view.lock() {
            *slot = view;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        assert_eq!(key_segment("a/b%c"), "a%2Fb%25c");
        let mut c = Config::default();
        c.api.listen = "0.0.0.0:8080".into();
        assert!(replica_name(&c).ends_with(":8080"));
        c.api.listen = "127.0.0.1:0".into();
        assert!(replica_name(&c).ends_with(&format!("-{}", std::process::id())));
        c.ha.replica_name = Some("r1".into());
        assert_eq!(replica_name(&c), "r1");
        assert_eq!(advertise_url(&c, None), "http://127.0.0.1:0");
        let bound: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(advertise_url(&c, Some(bound)), "http://127.0.0.1:4000");
        c.ha.advertise_url = Some("https://m1.example:8443".into());
        assert_eq!(advertise_url(&c, Some(bound)), "https://m1.example:8443");
    }

    #[test]
    fn without_replicas_every_cluster_is_owned_unfenced() {
        let r = Replicas::new(&Config::default());
        let o = r.ownership("default");
        assert!(o.owned());
        assert_eq!(o.fence(), None);
        assert!(r.is_member());
        assert_eq!(r.owned(), vec!["default".to_string()]);
        let mut c = Config::default();
        c.ha.enabled = true;
        c.ha.replica_name = Some("r1".into());
        let r = Replicas::new(&c);
        assert!(!r.ownership("default").owned());
        r.set("default", Owner::Held(42));
        let o = r.ownership("default");
        assert_eq!(
            o.fence(),
            Some(Fence {
                cluster: "default".into(),
                token: 42,
                replica: "r1".into()
            })
        );
        r.release_all();
        assert!(!o.owned());
        assert_eq!(r.handovers(), 2);
    }
}
