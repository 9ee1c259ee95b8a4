//! `GET /api/v1/replicas`: the monitor replicas (`ha.*`) and which one
//! owns each cluster.

use axum::Json;
use axum::extract::{Extension, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Principal;
use super::{ApiError, AppState};
use crate::monitor::ha::ReplicaView;

/// `GET /api/v1/replicas`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicaList {
    /// `ha.enabled`; without replicas this process owns every cluster.
    pub enabled: bool,
    /// This replica's name.
    pub replica: String,
    /// Whether this replica is registered with a live session.
    pub member: bool,
    /// Why it is not, while it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// `ha.ttl`, seconds.
    pub ttl_seconds: f64,
    /// The live replicas (as registered in etcd), by name.
    pub replicas: Vec<ReplicaView>,
    /// Every cluster the caller may see, with its owner.
    pub clusters: Vec<ClusterOwner>,
}

/// Who owns one cluster.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterOwner {
    /// Cluster name.
    pub cluster: String,
    /// The replica that owns it now; none during a handover.
    pub owner: Option<String>,
    /// The highest ownership token the store has seen for it (the fence).
    pub fence_token: Option<i64>,
    /// The replica that wrote with that token.
    pub fence_replica: Option<String>,
}

/// `GET /api/v1/replicas`.
#[utoipa::path(get, path = "/api/v1/replicas", operation_id = "list_replicas", tag = "replicas",
    description = "The monitor replicas sharing the clusters (ha.*): each live replica with its URL and the clusters it owns, and each cluster's owner and fencing token.",
    responses((status = 200, description = "Replicas and owners", body = ReplicaList),
        (status = 503, description = "The store cannot be read", body = super::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Json<ReplicaList>, ApiError> {
    let r = state.monitor.replicas();
    let view = r.view();
    let fences = state
        .monitor
        .store()
        .cluster_owners()
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let clusters = state
        .monitor
        .cluster_names()
        .iter()
        .filter(|n| caller.scope.allows(n))
        .map(|n| {
            let fence = fences.iter().find(|(c, _, _)| c == n);
            ClusterOwner {
                cluster: n.clone(),
                owner: view
                    .iter()
                    .find(|v| v.clusters.contains(n))
                    .map(|v| v.name.clone()),
                fence_token: fence.map(|f| f.1),
                fence_replica: fence.map(|f| f.2.clone()),
            }
        })
        .collect();
    let replicas = view
        .into_iter()
        .map(|mut v| {
            v.clusters.retain(|c| caller.scope.allows(c));
            v
        })
        .collect();
    Ok(Json(ReplicaList {
        enabled: r.enabled,
        replica: r.name.clone(),
        member: r.is_member(),
        problem: r.problem(),
        ttl_seconds: r.ttl.as_secs_f64(),
        replicas,
        clusters,
    }))
}
