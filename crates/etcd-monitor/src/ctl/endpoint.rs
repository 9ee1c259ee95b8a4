//! Per-endpoint checks, as etcdctl's `endpoint health|status|hashkv`: each
//! talks to exactly one member, so a result says something about that member.

use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmType, Client, ConnectOptions};

use super::CtlError;
use crate::config::ClusterConfig;
use crate::connection;

/// Opens clients to single members with a cluster's TLS, credentials and
/// timeouts.
#[derive(Clone)]
pub struct Dialer {
    options: ConnectOptions,
    dial_timeout: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("dial_timeout", &self.dial_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Dialer {
    /// A dialer with `cluster`'s settings (its endpoints are not used).
    pub fn new(cluster: &ClusterConfig) -> Result<Self, CtlError> {
        Ok(Dialer {
            options: connection::connect_options(cluster)?,
            dial_timeout: cluster.dial_timeout,
            request_timeout: cluster.request_timeout,
        })
    }

    /// The request timeout, for callers that bound their own calls.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// A client of the member at `url` only, checked with a status call
    /// within the dial timeout.
    pub async fn client(&self, url: &str) -> Result<Client, CtlError> {
        let attempt = async {
            let mut client = Client::connect([url], Some(self.options.clone())).await?;
            client.status().await?;
            Ok::<_, etcd_client::Error>(client)
        };
        match tokio::time::timeout(self.dial_timeout + self.request_timeout, attempt).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(CtlError::etcd(format!("endpoint {url}"), e)),
            Err(_) => Err(CtlError::Etcd {
                what: format!("endpoint {url}"),
                message: format!(
                    "unreachable: no answer within {} (is it up? check --endpoints and --dial-timeout)",
                    crate::config::duration::format(&(self.dial_timeout + self.request_timeout))
                ),
            }),
        }
    }
}

/// A client of one voting member among `urls`: all are dialed at once and
/// the first voting member to answer wins; `None` if none did.
///
/// A client balanced over several endpoints keeps sending some requests to
/// a member that is down, and a learner refuses most requests; one answering
/// voting member avoids both.
pub async fn first_voting_member(dialer: &Dialer, urls: &[String]) -> Option<Client> {
    let mut probes = tokio::task::JoinSet::new();
    for url in urls {
        let (dialer, url) = (dialer.clone(), url.clone());
        probes.spawn(async move {
            let mut client = dialer.client(&url).await.ok()?;
            let learner = client.status().await.ok()?.is_learner();
            (!learner).then_some(client)
        });
    }
    while let Some(joined) = probes.join_next().await {
        if let Ok(Some(client)) = joined {
            return Some(client);
        }
    }
    None
}

/// One member's `Status`, as `endpoint status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointStatus {
    /// The endpoint asked.
    pub endpoint: String,
    /// The member's id.
    pub id: u64,
    /// The cluster id.
    pub cluster_id: u64,
    /// The store revision when answered.
    pub revision: i64,
    /// etcd version.
    pub version: String,
    /// Backend size on disk, bytes.
    pub db_size: i64,
    /// Backend bytes in use (the rest is free after defragmentation).
    pub db_size_in_use: i64,
    /// The leader this member knows (0: none).
    pub leader: u64,
    /// Whether the member is a learner.
    pub is_learner: bool,
    /// Raft term.
    pub raft_term: u64,
    /// Raft index.
    pub raft_index: u64,
    /// Raft applied index.
    pub raft_applied_index: u64,
    /// Errors the member reports (e.g. alarms).
    pub errors: Vec<String>,
}

impl EndpointStatus {
    /// Whether this member is the leader it reports.
    pub fn is_leader(&self) -> bool {
        self.id != 0 && self.id == self.leader
    }
}

/// Asks the member at `endpoint` for its status.
pub async fn status(dialer: &Dialer, endpoint: &str) -> Result<EndpointStatus, CtlError> {
    let mut client = dialer.client(endpoint).await?;
    status_of(&mut client, endpoint).await
}

/// Status through an open single-member client.
pub async fn status_of(client: &mut Client, endpoint: &str) -> Result<EndpointStatus, CtlError> {
    let s = client
        .status()
        .await
        .map_err(CtlError::on(format!("status of endpoint {endpoint}")))?;
    let header = s.header();
    Ok(EndpointStatus {
        endpoint: endpoint.to_string(),
        id: header.map_or(0, |h| h.member_id()),
        cluster_id: header.map_or(0, |h| h.cluster_id()),
        revision: header.map_or(0, |h| h.revision()),
        version: s.version().to_string(),
        db_size: s.db_size(),
        db_size_in_use: s.raft_used_db_size(),
        leader: s.leader(),
        is_learner: s.is_learner(),
        raft_term: s.raft_term(),
        raft_index: s.raft_index(),
        raft_applied_index: s.raft_applied_index(),
        errors: s.errors().to_vec(),
    })
}

/// The verdict of `endpoint health` for one endpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointHealth {
    /// The endpoint asked.
    pub endpoint: String,
    /// Healthy: a linearizable read was answered and no alarm is raised.
    pub health: bool,
    /// How long the check took.
    #[serde(serialize_with = "serialize_took")]
    pub took: Duration,
    /// Why it is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn serialize_took<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{d:?}"))
}

/// etcdctl's health check: a linearizable get of key `health` (permission
/// denied still proves a quorum answered), then no active alarm.
pub async fn health(dialer: &Dialer, endpoint: &str) -> EndpointHealth {
    let start = Instant::now();
    let verdict = async {
        let mut client = dialer.client(endpoint).await?;
        match client.get("health", None).await {
            Ok(_) => {}
            Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("permission denied") => {
            }
            Err(e) => return Err(CtlError::etcd("linearizable read of key \"health\"", e)),
        }
        let alarms = client
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .map_err(CtlError::on("alarm list"))?;
        if !alarms.alarms().is_empty() {
            let list: Vec<String> = alarms
                .alarms()
                .iter()
                .map(|a| format!("{} on member {:x}", alarm_name(a.alarm()), a.member_id()))
                .collect();
            return Err(CtlError::Unsafe(format!(
                "active alarm(s): {}",
                list.join(", ")
            )));
        }
        Ok(())
    };
    let result = tokio::time::timeout(dialer.dial_timeout + 2 * dialer.request_timeout, verdict)
        .await
        .unwrap_or_else(|_| Err(CtlError::Unsafe("no answer within the timeout".into())));
    EndpointHealth {
        endpoint: endpoint.to_string(),
        health: result.is_ok(),
        took: start.elapsed(),
        error: result.err().map(|e| e.to_string()),
    }
}

/// An alarm's name as etcdctl prints it.
pub fn alarm_name(a: AlarmType) -> &'static str {
    match a {
        AlarmType::None => "NONE",
        AlarmType::Nospace => "NOSPACE",
        AlarmType::Corrupt => "CORRUPT",
    }
}

/// One member's hash of its key-value store, as `endpoint hashkv` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointHashKv {
    /// The endpoint asked.
    pub endpoint: String,
    /// The member's id.
    pub member_id: u64,
    /// The revision the member was at.
    pub revision: i64,
    /// Hash of the keys and values up to the asked revision.
    pub hash: u32,
    /// The member's compacted revision.
    pub compact_revision: i64,
}

/// Hash of the member's store up to `revision` (0: the latest).
pub async fn hashkv(
    dialer: &Dialer,
    endpoint: &str,
    revision: i64,
) -> Result<EndpointHashKv, CtlError> {
    let mut client = dialer.client(endpoint).await?;
    let r = client
        .hash_kv(revision)
        .await
        .map_err(CtlError::on(format!(
            "hashkv of endpoint {endpoint} at revision {revision}"
        )))?;
    Ok(EndpointHashKv {
        endpoint: endpoint.to_string(),
        member_id: r.header().map_or(0, |h| h.member_id()),
        revision: r.header().map_or(0, |h| h.revision()),
        hash: r.hash(),
        compact_revision: r.compact_version(),
    })
}

/// A member as the member list has it, with the client URL to reach it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberEndpoint {
    /// Member id.
    pub id: u64,
    /// Member name (empty until it started).
    pub name: String,
    /// Its first client URL (empty until it started).
    pub endpoint: String,
    /// Whether it is a learner.
    pub is_learner: bool,
}

/// Every member of the cluster with its first client URL (`--cluster`).
pub async fn members(client: &mut Client) -> Result<Vec<MemberEndpoint>, CtlError> {
    let list = client
        .member_list()
        .await
        .map_err(CtlError::on("member list"))?;
    Ok(list
        .members()
        .iter()
        .map(|m| MemberEndpoint {
            id: m.id(),
            name: m.name().to_string(),
            endpoint: m.client_urls().first().cloned().unwrap_or_default(),
            is_learner: m.is_learner(),
        })
        .collect())
}

/// The error for an id that is not in `members`.
pub fn unknown_member(id: u64, members: &[MemberEndpoint]) -> CtlError {
    CtlError::UnknownMember {
        id,
        members: members
            .iter()
            .map(|m| format!("{:x} {}", m.id, m.name))
            .collect::<Vec<_>>()
            .join(", "),
    }
}
