//! Backups in the history store: each attempt of a schedule (or of the
//! API), its manifest and its restore drill.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use super::{Store, StoreError, db};
use crate::ops::backup::{Manifest, Verification};

/// One backup attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupRecord {
    /// The schedule (`backup.schedules[].name`).
    pub schedule: String,
    /// The cluster.
    pub cluster: String,
    /// Where it went: the directory or `s3://bucket/prefix/`.
    pub target: String,
    /// The file's name in the target (empty when it failed before naming one).
    pub name: String,
    /// When it started (ms since epoch).
    pub at_ms: i64,
    /// Wall time of the save, ms.
    pub duration_ms: u64,
    /// `saved` or `failed`.
    pub outcome: String,
    /// Who asked: `schedule` or the API caller.
    pub source: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the backup holds (for `saved`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
    /// The restore drill, once run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

impl Store {
    /// Stores a backup attempt.
    pub async fn record_backup(&self, r: &BackupRecord) -> Result<(), StoreError> {
        let body = encode(r)?;
        self.guarded(async move {
            sqlx::query(
                "INSERT INTO backups (schedule, cluster, name, at_ms, outcome, body) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&r.schedule)
            .bind(&r.cluster)
            .bind(&r.name)
            .bind(r.at_ms)
            .bind(&r.outcome)
            .bind(body)
            .execute(&self.writer())
            .await
            .map(|_| ())
            .map_err(db("insert backup"))
        })
        .await
    }

    /// Replaces the stored record of `r`'s backup (its verification).
    pub async fn update_backup(&self, r: &BackupRecord) -> Result<(), StoreError> {
        let body = encode(r)?;
        self.guarded(async move {
            sqlx::query(
                "UPDATE backups SET outcome = $1, body = $2 WHERE schedule = $3 AND name = $4",
            )
            .bind(&r.outcome)
            .bind(body)
            .bind(&r.schedule)
            .bind(&r.name)
            .execute(&self.writer())
            .await
            .map(|_| ())
            .map_err(db("update backup"))
        })
        .await
    }

    /// Forgets the backups `names` of `schedule` (removed by retention).
    pub async fn forget_backups(&self, schedule: &str, names: &[String]) -> Result<(), StoreError> {
        self.guarded(async move {
            for name in names {
                sqlx::query("DELETE FROM backups WHERE schedule = $1 AND name = $2")
                    .bind(schedule)
                    .bind(name)
                    .execute(&self.writer())
                    .await
                    .map_err(db("delete backup"))?;
            }
            Ok(())
        })
        .await
    }

    /// The newest `limit` backups, of `schedule` or of all, newest first.
    pub async fn backups(
        &self,
        schedule: Option<&str>,
        limit: i64,
    ) -> Result<Vec<BackupRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM backups WHERE ($1 = '' OR schedule = $1) ORDER BY at_ms DESC, id DESC LIMIT $2",
        )
        .bind(schedule.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(db("read backups"))?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get("body").map_err(db("decode backup"))?;
                serde_json::from_str(&body)
                    .map_err(|e| StoreError::Unavailable(format!("decoding a stored backup: {e}")))
            })
            .collect()
    }
}

fn encode(r: &BackupRecord) -> Result<String, StoreError> {
    serde_json::to_string(r)
        .map_err(|e| StoreError::Unavailable(format!("encoding a backup record: {e}")))
}
