//! Per-endpoint checks, as etcdctl's `endpoint health|status|hashkv`: each
//! talks to exactly one member, so a result says something about that member.

use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmType, Client};

use super::CtlError;
pub use crate::connection::{Dialer, first_voting_member};

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
    let mut client = dialer.dial_checked(endpoint).await?;
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
        let mut client = dialer.dial_checked(endpoint).await?;
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
    let result = tokio::time::timeout(
        dialer.dial_timeout() + 2 * dialer.request_timeout(),
        verdict,
    )
    .await
    .unwrap_or_else(|_| Err(CtlError::Unsafe("no answer within the timeout".into())));
    EndpointHealth {
        endpoint: endpoint.to_string(),
        health: result.is_ok(),
        took: start.elapsed(),
        // The endpoint is named already: a dial failure says only its cause.
        error: result.err().map(|e| match e {
            CtlError::Connect(c) => c.cause(),
            other => other.to_string(),
        }),
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
    let mut client = dialer.dial_checked(endpoint).await?;
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
