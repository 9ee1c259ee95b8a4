//! One collection round: member list, then every member's Status, a
//! linearizable read through it and its `/metrics`, all at once, each bounded
//! by the request timeout so one dead member never delays the others.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use etcd_client::{Client, GetOptions};

use super::certs::CertificateWatch;
use super::{
    Alarm, ClusterObservation, EndpointIdentity, HashKvCheck, MemberMetrics, MemberObservation,
    MemberStatus,
};
use crate::config::ClusterConfig;
use crate::connection::{self, Dialer, cause_chain};
use crate::metrics::prom::Scrape;

/// What a round includes.
#[derive(Debug, Clone)]
pub struct CollectorOptions {
    /// Scrape each member's `/metrics`.
    pub scrape_metrics: bool,
    /// Compare each member's KV hash at one revision.
    pub hashkv: bool,
    /// Read the members' serving certificates and the configured client
    /// certificate and CA (`ClusterObservation::certificates`).
    pub certificates: bool,
    /// Wait for the members' serving certificates (a one-shot check);
    /// otherwise a round takes those of the last finished reading, which
    /// runs beside the rounds.
    pub wait_for_certificates: bool,
}

impl Default for CollectorOptions {
    fn default() -> Self {
        CollectorOptions {
            scrape_metrics: true,
            hashkv: true,
            certificates: true,
            wait_for_certificates: true,
        }
    }
}

/// One gRPC client per member endpoint, kept between rounds and shared by
/// a cluster's tasks (the health checks and the metrics probes), so a
/// watched cluster holds one connection per member.
#[derive(Clone, Default)]
pub struct MemberClients(std::sync::Arc<std::sync::Mutex<BTreeMap<String, Client>>>);

impl MemberClients {
    /// The client of `endpoint`, when one is kept.
    pub fn get(&self, endpoint: &str) -> Option<Client> {
        self.lock().get(endpoint).cloned()
    }

    fn insert(&self, endpoint: String, client: Client) {
        self.lock().insert(endpoint, client);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Client>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Observes one cluster. Keeps one client per member endpoint between rounds.
pub struct Collector {
    cluster: ClusterConfig,
    options: CollectorOptions,
    http: reqwest::Client,
    member_clients: MemberClients,
    certificates: CertificateWatch,
}

impl Collector {
    /// A collector for `cluster`.
    pub fn new(cluster: ClusterConfig, options: CollectorOptions) -> Self {
        let http = crate::metrics::scrape_client(cluster.dial_timeout);
        Collector {
            cluster,
            options,
            http,
            member_clients: MemberClients::default(),
            certificates: CertificateWatch::default(),
        }
    }

    /// Keeps its member clients in `clients`, shared with other tasks.
    pub fn sharing(mut self, clients: MemberClients) -> Self {
        self.member_clients = clients;
        self
    }

    /// Runs one round with the collector's options.
    pub async fn collect(&mut self) -> ClusterObservation {
        let (scrape, hashkv) = (self.options.scrape_metrics, self.options.hashkv);
        self.collect_round(scrape, hashkv).await
    }

    /// The cluster this collector observes.
    pub fn cluster(&self) -> &ClusterConfig {
        &self.cluster
    }

    /// Runs one round, scraping `/metrics` and comparing KV hashes as asked.
    pub async fn collect_round(
        &mut self,
        scrape_metrics: bool,
        hashkv: bool,
    ) -> ClusterObservation {
        let started = Instant::now();
        let taken_at = SystemTime::now();
        let configured = connection::endpoints(&self.cluster).unwrap_or_default();
        // Built each round, so rotated certificates are read again; a file
        // that cannot be read shows as every member's error.
        let dialer = Dialer::new(&self.cluster)
            .map(|d| d.require_leader(false))
            .map_err(|e| e.cause());

        // The member list from any configured endpoint that answers.
        let mut list_error = None;
        let mut listed = None;
        for ep in &configured {
            match self.client_for(&dialer, ep).await {
                Ok(mut c) => {
                    match tokio::time::timeout(self.cluster.request_timeout, c.member_list()).await
                    {
                        Ok(Ok(resp)) => {
                            listed = Some(resp);
                            break;
                        }
                        Ok(Err(e)) => list_error = Some(format!("{ep}: {}", cause_chain(&e))),
                        Err(_) => list_error = Some(format!("{ep}: member list timed out")),
                    }
                }
                Err(e) => list_error = Some(format!("{ep}: {e}")),
            }
        }

        let mut members: Vec<MemberObservation> = match &listed {
            Some(resp) => resp
                .members()
                .iter()
                .map(|m| {
                    let endpoint = pick_endpoint(m.client_urls(), &configured);
                    blank(
                        m.id(),
                        m.name(),
                        m.peer_urls(),
                        m.client_urls(),
                        m.is_learner(),
                        endpoint,
                    )
                })
                .collect(),
            None => configured
                .iter()
                .map(|ep| blank(0, "", &[], std::slice::from_ref(ep), false, ep.clone()))
                .collect(),
        };

        let tasks: Vec<_> = members
            .iter()
            .map(|m| {
                let endpoint = m.endpoint.clone();
                let metrics_url = self.metrics_url(m);
                let client = self.member_clients.get(&endpoint);
                let cluster = self.cluster.clone();
                let dialer = dialer.clone();
                let http = self.http.clone();
                let scrape = scrape_metrics;
                tokio::spawn(async move {
                    observe_member(cluster, dialer, endpoint, client, http, metrics_url, scrape)
                        .await
                })
            })
            .collect();
        for (m, task) in members.iter_mut().zip(tasks) {
            match task.await {
                Ok(probe) => {
                    if let Some(c) = probe.client {
                        self.member_clients.insert(m.endpoint.clone(), c);
                    }
                    m.status = probe.status;
                    m.error = probe.error;
                    m.status_latency_ms = probe.status_latency_ms;
                    m.linearizable_read_ms = probe.read_ms;
                    m.linearizable_read_error = probe.read_error;
                    m.metrics = probe.metrics;
                    if m.id == 0 {
                        if let Some(s) = &m.status {
                            m.id = s.member_id;
                        }
                    }
                }
                Err(e) => m.error = Some(format!("probe task failed: {e}")),
            }
        }

        let unlisted = match &listed {
            Some(_) => self.identify_unlisted(&dialer, &configured, &members).await,
            None => Vec::new(),
        };
        let alarms = self.alarms(&members).await;
        let hashkv = if hashkv {
            self.hashkv(&members).await
        } else {
            None
        };
        let certificates = if self.options.certificates {
            let of: Vec<(String, String)> = members
                .iter()
                .map(|m| (m.label(), m.endpoint.clone()))
                .collect();
            self.certificates
                .observe(&self.cluster, &of, self.options.wait_for_certificates)
                .await
        } else {
            Vec::new()
        };
        ClusterObservation {
            cluster: self.cluster.name.clone(),
            taken_at,
            members,
            member_list_error: if listed.is_some() { None } else { list_error },
            cluster_id: listed
                .as_ref()
                .and_then(|l| l.header())
                .map(|h| h.cluster_id()),
            configured_endpoints: configured,
            unlisted_endpoints: unlisted,
            alarms,
            hashkv,
            certificates,
            duration_ms: started.elapsed().as_secs_f64() * 1e3,
        }
    }

    /// Asks every configured endpoint that no listed member advertises
    /// who answers there (Status: cluster and member id), all at once, each
    /// bounded by the dial and request timeouts.
    async fn identify_unlisted(
        &mut self,
        dialer: &Result<Dialer, String>,
        configured: &[String],
        members: &[MemberObservation],
    ) -> Vec<EndpointIdentity> {
        let tasks: Vec<_> = configured
            .iter()
            .filter(|ep| {
                !members
                    .iter()
                    .any(|m| m.client_urls.iter().any(|u| super::same_url(u, ep)))
            })
            .map(|ep| {
                let (ep, dialer) = (ep.clone(), dialer.clone());
                let cached = self.member_clients.get(&ep);
                let timeout = self.cluster.request_timeout;
                tokio::spawn(async move {
                    let mut identity = EndpointIdentity {
                        endpoint: ep.clone(),
                        cluster_id: None,
                        member_id: None,
                        error: None,
                    };
                    let client = match cached {
                        Some(c) => Ok(c),
                        None => dial(&dialer, &ep).await,
                    };
                    let client = match client {
                        Ok(mut c) => {
                            match tokio::time::timeout(timeout, c.status()).await {
                                Ok(Ok(s)) => {
                                    identity.cluster_id = s.header().map(|h| h.cluster_id());
                                    identity.member_id = s.header().map(|h| h.member_id());
                                }
                                Ok(Err(e)) => identity.error = Some(cause_chain(&e)),
                                Err(_) => identity.error = Some("Status timed out".into()),
                            }
                            Some(c)
                        }
                        Err(e) => {
                            identity.error = Some(e);
                            None
                        }
                    };
                    (identity, client)
                })
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            if let Ok((identity, client)) = task.await {
                if let Some(c) = client {
                    self.member_clients.insert(identity.endpoint.clone(), c);
                }
                out.push(identity);
            }
        }
        out
    }

    async fn client_for(
        &mut self,
        dialer: &Result<Dialer, String>,
        endpoint: &str,
    ) -> Result<Client, String> {
        if let Some(c) = self.member_clients.get(endpoint) {
            return Ok(c);
        }
        let c = dial(dialer, endpoint).await?;
        self.member_clients.insert(endpoint.to_string(), c.clone());
        Ok(c)
    }

    /// The URL of a member's Prometheus page (see [`metrics_url_for`]).
    pub fn metrics_url(&self, m: &MemberObservation) -> String {
        metrics_url_for(&self.cluster, &m.name, &m.endpoint)
    }

    async fn alarms(&mut self, members: &[MemberObservation]) -> Vec<Alarm> {
        // Alarm lists go through consensus: ask only members that just served one.
        for m in members.iter().filter(|m| m.linearizable_read_ms.is_some()) {
            let Some(mut c) = self.member_clients.get(&m.endpoint) else {
                continue;
            };
            if let Ok(Ok(resp)) = tokio::time::timeout(
                self.cluster.request_timeout,
                c.alarm(
                    etcd_client::AlarmAction::Get,
                    etcd_client::AlarmType::None,
                    None,
                ),
            )
            .await
            {
                return resp
                    .alarms()
                    .iter()
                    .map(|a| Alarm {
                        member_id: a.member_id(),
                        kind: match a.alarm() {
                            etcd_client::AlarmType::Nospace => "NOSPACE".into(),
                            etcd_client::AlarmType::Corrupt => "CORRUPT".into(),
                            other => format!("{other:?}").to_uppercase(),
                        },
                    })
                    .collect();
            }
        }
        Vec::new()
    }

    /// Hashes every reachable member's KV store at one revision that all have
    /// (the smallest current revision), so the hashes must agree.
    async fn hashkv(&mut self, members: &[MemberObservation]) -> Option<HashKvCheck> {
        let reachable: Vec<&MemberObservation> = members
            .iter()
            .filter(|m| m.reachable() && m.linearizable_read_ms.is_some())
            .collect();
        if reachable.len() < 2 {
            return None;
        }
        let revision = reachable
            .iter()
            .filter_map(|m| m.status.as_ref())
            .map(|s| s.revision)
            .min()?;
        let mut hashes = Vec::new();
        for m in reachable {
            let Some(mut c) = self.member_clients.get(&m.endpoint) else {
                continue;
            };
            let result =
                match tokio::time::timeout(self.cluster.request_timeout, c.hash_kv(revision)).await
                {
                    Ok(Ok(r)) => Ok(r.hash()),
                    Ok(Err(e)) => Err(cause_chain(&e)),
                    Err(_) => Err("hashkv timed out".into()),
                };
            hashes.push(super::MemberHash::new(m.label(), result));
        }
        Some(HashKvCheck { revision, hashes })
    }
}

fn blank(
    id: u64,
    name: &str,
    peer: &[String],
    client: &[String],
    learner: bool,
    endpoint: String,
) -> MemberObservation {
    MemberObservation {
        id,
        name: name.to_string(),
        peer_urls: peer.to_vec(),
        client_urls: client.to_vec(),
        is_learner: learner,
        endpoint,
        status: None,
        error: None,
        status_latency_ms: None,
        linearizable_read_ms: None,
        linearizable_read_error: None,
        metrics: None,
    }
}

/// Prefers a client URL the operator configured (it is known to be routable
/// from here), else the member's first advertised one.
pub(crate) fn pick_endpoint(client_urls: &[String], configured: &[String]) -> String {
    client_urls
        .iter()
        .find(|u| {
            configured
                .iter()
                .any(|c| c.trim_end_matches('/') == u.trim_end_matches('/'))
        })
        .or_else(|| client_urls.first())
        .cloned()
        .unwrap_or_default()
}

/// A client of one member (connect only: Status latency is measured on its
/// own); the error is the bare cause, as a member's error text.
async fn dial(dialer: &Result<Dialer, String>, endpoint: &str) -> Result<Client, String> {
    let dialer = dialer.as_ref().map_err(Clone::clone)?;
    dialer.dial(endpoint).await.map_err(|e| e.cause())
}

struct Probe {
    client: Option<Client>,
    status: Option<MemberStatus>,
    error: Option<String>,
    status_latency_ms: Option<f64>,
    read_ms: Option<f64>,
    read_error: Option<String>,
    metrics: Option<MemberMetrics>,
}

/// Observes one member through the client kept from the last round, or
/// else a new one.
async fn observe_member(
    cluster: ClusterConfig,
    dialer: Result<Dialer, String>,
    endpoint: String,
    client: Option<Client>,
    http: reqwest::Client,
    metrics_url: String,
    scrape: bool,
) -> Probe {
    let mut probe = Probe {
        client: None,
        status: None,
        error: None,
        status_latency_ms: None,
        read_ms: None,
        read_error: None,
        metrics: None,
    };
    let metrics = async {
        if !scrape {
            return None;
        }
        scrape_metrics(&http, &metrics_url, cluster.request_timeout)
            .await
            .ok()
    };
    let etcd = async {
        let dialed = match client {
            Some(c) => Ok(c),
            None => dial(&dialer, &endpoint).await,
        };
        let mut c = match dialed {
            Ok(c) => c,
            Err(e) => {
                probe.error = Some(e);
                return;
            }
        };
        probe.client = Some(c.clone());
        let t = Instant::now();
        match tokio::time::timeout(cluster.request_timeout, c.status()).await {
            Ok(Ok(s)) => {
                probe.status_latency_ms = Some(t.elapsed().as_secs_f64() * 1e3);
                let header = s.header();
                probe.status = Some(MemberStatus {
                    member_id: header.map(|h| h.member_id()).unwrap_or(0),
                    cluster_id: header.map(|h| h.cluster_id()).unwrap_or(0),
                    version: s.version().to_string(),
                    db_size: s.db_size(),
                    db_size_in_use: s.raft_used_db_size(),
                    leader: s.leader(),
                    raft_term: s.raft_term(),
                    raft_index: s.raft_index(),
                    raft_applied_index: s.raft_applied_index(),
                    errors: s.errors().to_vec(),
                    is_learner: s.is_learner(),
                    revision: header.map(|h| h.revision()).unwrap_or(0),
                });
            }
            Ok(Err(e)) => {
                probe.error = Some(cause_chain(&e));
                return;
            }
            Err(_) => {
                probe.error = Some(format!(
                    "no Status answer within the request timeout of {}",
                    crate::config::duration::format(&cluster.request_timeout)
                ));
                return;
            }
        }
        if probe.status.as_ref().is_some_and(|s| s.is_learner) {
            return; // learners serve no linearizable reads
        }
        // A linearizable read proves the member reaches a leader and a quorum.
        let t = Instant::now();
        let read = c.get("health", Some(GetOptions::new().with_count_only()));
        match tokio::time::timeout(cluster.request_timeout, read).await {
            Ok(Ok(_)) => probe.read_ms = Some(t.elapsed().as_secs_f64() * 1e3),
            // Like etcdctl endpoint health: permission denied still proves consensus.
            Ok(Err(e)) if e.to_string().contains("permission denied") => {
                probe.read_ms = Some(t.elapsed().as_secs_f64() * 1e3)
            }
            Ok(Err(e)) => probe.read_error = Some(cause_chain(&e)),
            Err(_) => {
                probe.read_error =
                    Some("linearizable read timed out (no quorum or no leader?)".into())
            }
        }
    };
    let (m, ()) = tokio::join!(metrics, etcd);
    probe.metrics = m;
    probe
}

/// Fetches and parses a member's `/metrics` page.
pub async fn scrape_metrics(
    http: &reqwest::Client,
    url: &str,
    timeout: std::time::Duration,
) -> Result<MemberMetrics, String> {
    let body = http
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("{url}: {}", crate::metrics::describe_http_error(&e)))?
        .bytes()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    // Checked, not copied: a page is valid UTF-8 unless something is wrong.
    let text = match std::str::from_utf8(&body) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(&body),
    };
    let (scrape, _) = Scrape::parse_selected(&text, MemberMetrics::select);
    Ok(MemberMetrics::from_scrape(&scrape))
}

/// The URL of a member's Prometheus page: `clusters[].metrics_urls` by
/// member name or endpoint, else the client URL + `/metrics`.
pub fn metrics_url_for(cluster: &ClusterConfig, name: &str, endpoint: &str) -> String {
    cluster
        .metrics_urls
        .get(name)
        .or_else(|| cluster.metrics_urls.get(endpoint))
        .cloned()
        .unwrap_or_else(|| format!("{}/metrics", endpoint.trim_end_matches('/')))
}
