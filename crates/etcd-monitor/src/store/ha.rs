//! What replicas (`ha.*`) share through the store: each cluster's highest
//! ownership token seen (the fence every owner's write passes), and each
//! cluster's latest status published by its owner for the other replicas'
//! API.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError, db};

/// Writes refused because a newer owner of the cluster had written
/// (`etcd_monitor_ha_fenced_writes_total`).
pub static FENCED: AtomicU64 = AtomicU64::new(0);

/// The ownership a write is made under: the cluster and the ownership
/// key's fencing token (its create revision in the coordination cluster,
/// which rises with every new owner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// Cluster name.
    pub cluster: String,
    /// The ownership's fencing token.
    pub token: i64,
    /// The writing replica (`ha.replica_name`), recorded with the token.
    pub replica: String,
}

/// A cluster's status as its owner last published it.
#[derive(Debug, Clone, Serialize)]
pub struct PublishedStatus {
    /// Cluster name.
    pub cluster: String,
    /// The replica that published it.
    pub replica: String,
    /// Its ownership token.
    pub token: i64,
    /// When (ms since epoch).
    pub at_ms: i64,
    /// The health snapshot, as `GET .../status` answers it.
    pub status: serde_json::Value,
    /// The latest metrics round, as `GET .../metrics/current` answers it.
    pub metrics: Option<serde_json::Value>,
}

pub(crate) type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Passes `fence` inside `tx`: raises the cluster's recorded token to
/// `fence.token`, or fails with [`StoreError::Fenced`] when a higher one
/// was recorded (a newer owner wrote). One conditional upsert: concurrent
/// writers serialize on the cluster's row, and the loser re-reads it.
pub(crate) async fn pass_fence(tx: &mut Tx, fence: &Fence, at_ms: i64) -> Result<(), StoreError> {
    let n = sqlx::query(
        "INSERT INTO cluster_owners (cluster, token, replica, at_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (cluster) DO UPDATE SET token = excluded.token, replica = excluded.replica, at_ms = excluded.at_ms
         WHERE cluster_owners.token <= excluded.token",
    )
    .bind(&fence.cluster)
    .bind(fence.token)
    .bind(&fence.replica)
    .bind(at_ms)
    .execute(&mut **tx)
    .await
    .map_err(db("check ownership"))?
    .rows_affected();
    if n == 1 {
        return Ok(());
    }
    FENCED.fetch_add(1, Ordering::Relaxed);
    let current: Option<i64> = sqlx::query("SELECT token FROM cluster_owners WHERE cluster = $1")
        .bind(&fence.cluster)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("check ownership"))?
        .map(|r| r.try_get("token"))
        .transpose()
        .map_err(db("check ownership"))?;
    Err(StoreError::Fenced {
        cluster: fence.cluster.clone(),
        token: fence.token,
        current: current.unwrap_or_default(),
    })
}

impl Store {
    /// Records `fence` as the cluster's newest ownership before a new
    /// owner reads the state it takes over: from then on, every write of an
    /// older owner is refused. Fails with [`StoreError::Fenced`] when a
    /// newer owner is recorded already.
    pub async fn claim_fence(&self, fence: &Fence) -> Result<(), StoreError> {
        self.guarded(async move {
            let mut tx = self.writer().begin().await.map_err(db("begin ownership"))?;
            pass_fence(&mut tx, fence, crate::time::now_ms()).await?;
            tx.commit().await.map_err(db("commit ownership"))
        })
        .await
    }

    /// Publishes `cluster`'s latest status under `fence` (refused, like
    /// every owner's write, once a newer owner wrote).
    pub async fn publish_status(
        &self,
        fence: &Fence,
        at_ms: i64,
        status: &serde_json::Value,
        metrics: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        self.guarded(async move {
            let mut tx = self.writer().begin().await.map_err(db("begin status"))?;
            pass_fence(&mut tx, fence, at_ms).await?;
            sqlx::query(
                "INSERT INTO cluster_status (cluster, replica, token, at_ms, status, metrics) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (cluster) DO UPDATE SET replica = excluded.replica, token = excluded.token,
                   at_ms = excluded.at_ms, status = excluded.status,
                   metrics = COALESCE(excluded.metrics, cluster_status.metrics)",
            )
            .bind(&fence.cluster)
            .bind(&fence.replica)
            .bind(fence.token)
            .bind(at_ms)
            .bind(status.to_string())
            .bind(metrics.map(|m| m.to_string()))
            .execute(&mut *tx)
            .await
            .map_err(db("publish status"))?;
            tx.commit().await.map_err(db("commit status"))
        })
        .await
    }

    /// `cluster`'s status as its owner last published it.
    pub async fn published_status(
        &self,
        cluster: &str,
    ) -> Result<Option<PublishedStatus>, StoreError> {
        let row = sqlx::query(
            "SELECT cluster, replica, token, at_ms, status, metrics FROM cluster_status WHERE cluster = $1",
        )
        .bind(cluster)
        .fetch_optional(&self.read)
        .await
        .map_err(db("read published status"))?;
        let Some(r) = row else { return Ok(None) };
        let decode = |s: &str| {
            serde_json::from_str::<serde_json::Value>(s).map_err(|e| StoreError::Db {
                what: "decode published status",
                source: sqlx::Error::Decode(Box::new(e)),
            })
        };
        let status: String = r.try_get("status").map_err(db("read published status"))?;
        let metrics: Option<String> = r.try_get("metrics").map_err(db("read published status"))?;
        Ok(Some(PublishedStatus {
            cluster: r.try_get("cluster").map_err(db("read published status"))?,
            replica: r.try_get("replica").map_err(db("read published status"))?,
            token: r.try_get("token").map_err(db("read published status"))?,
            at_ms: r.try_get("at_ms").map_err(db("read published status"))?,
            status: decode(&status)?,
            metrics: metrics.as_deref().map(decode).transpose()?,
        }))
    }

    /// The highest ownership token recorded per cluster, with its replica.
    pub async fn cluster_owners(&self) -> Result<Vec<(String, i64, String)>, StoreError> {
        sqlx::query("SELECT cluster, token, replica FROM cluster_owners ORDER BY cluster")
            .fetch_all(&self.read)
            .await
            .map_err(db("read cluster owners"))?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("cluster")?,
                    r.try_get("token")?,
                    r.try_get("replica")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("read cluster owners"))
    }
}
