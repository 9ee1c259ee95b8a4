//! Defragmentation runs in the history store (the defrag autopilot's, with
//! each member's sizes before and after).

use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use super::{Store, StoreError, db};
use crate::ops::maintenance::DefragReport;

/// One defragmentation run of a cluster.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DefragRun {
    /// The cluster.
    pub cluster: String,
    /// When it started (ms since epoch).
    pub at_ms: i64,
    /// Who ran it: `autopilot`.
    pub source: String,
    /// `defragmented` (at least one member), `skipped` (the rule matched no
    /// member), `refused` (health checks failed: nothing touched), `failed`.
    pub outcome: String,
    /// The rule, as configured.
    pub rule: String,
    /// The revision compacted to first (`compact_first`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compacted_to: Option<i64>,
    /// Members whose NOSPACE alarm was disarmed afterwards (`disarm_nospace`).
    #[serde(default)]
    pub disarmed_nospace: Vec<u64>,
    /// Why it stopped, for `refused` and `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Each member's report, in visiting order (followers first, the leader
    /// last), with sizes before and after.
    #[serde(default)]
    pub members: Vec<DefragReport>,
    /// Wall time of the run, ms.
    pub duration_ms: u64,
}

impl Store {
    /// Stores a defragmentation run.
    pub async fn record_defrag_run(&self, run: &DefragRun) -> Result<(), StoreError> {
        let body = serde_json::to_string(run)
            .map_err(|e| StoreError::Unavailable(format!("encoding a defrag run: {e}")))?;
        self.guarded(async move {
            sqlx::query(
                "INSERT INTO defrag_runs (cluster, at_ms, outcome, body) VALUES ($1, $2, $3, $4)",
            )
            .bind(&run.cluster)
            .bind(run.at_ms)
            .bind(&run.outcome)
            .bind(body)
            .execute(&self.writer())
            .await
            .map(|_| ())
            .map_err(db("insert defrag run"))
        })
        .await
    }

    /// The newest `limit` runs of `cluster`, newest first.
    pub async fn defrag_runs(
        &self,
        cluster: &str,
        limit: i64,
    ) -> Result<Vec<DefragRun>, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM defrag_runs WHERE cluster = $1 ORDER BY at_ms DESC, id DESC LIMIT $2",
        )
        .bind(cluster)
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(db("read defrag runs"))?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get("body").map_err(db("decode defrag run"))?;
                serde_json::from_str(&body).map_err(|e| {
                    StoreError::Unavailable(format!("decoding a stored defrag run: {e}"))
                })
            })
            .collect()
    }
}
