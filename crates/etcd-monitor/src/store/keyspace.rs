//! Keyspace scans in the history store: the report of each scan, for
//! growth between scans.

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::{Store, StoreError, db};
use crate::keyspace::KeyspaceReport;

/// A stored scan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoredScan {
    /// Its id in the store.
    pub id: i64,
    /// Who ran it: `schedule` or `api:<principal>`.
    pub source: String,
    /// The scan.
    pub report: KeyspaceReport,
}

impl Store {
    /// Stores a scan of `cluster`.
    pub async fn record_keyspace_scan(
        &self,
        cluster: &str,
        source: &str,
        report: &KeyspaceReport,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(report)
            .map_err(|e| StoreError::Unavailable(format!("encoding a keyspace scan: {e}")))?;
        self.guarded(async move {
            sqlx::query(
                "INSERT INTO keyspace_scans (cluster, at_ms, prefix, revision, source, body)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(cluster)
            .bind(report.at_ms)
            .bind(&report.prefix)
            .bind(report.revision)
            .bind(source)
            .bind(body)
            .execute(&self.writer())
            .await
            .map(|_| ())
            .map_err(db("insert keyspace scan"))
        })
        .await
    }

    /// The newest `limit` stored scans of `cluster` (of `prefix`, when
    /// given), newest first.
    pub async fn keyspace_scans(
        &self,
        cluster: &str,
        prefix: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StoredScan>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, source, body FROM keyspace_scans
             WHERE cluster = $1 AND ($2 = '' OR prefix = $3)
             ORDER BY at_ms DESC, id DESC LIMIT $4",
        )
        .bind(cluster)
        .bind(if prefix.is_some() { "p" } else { "" })
        .bind(prefix.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(db("read keyspace scans"))?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get("body").map_err(db("decode keyspace scan"))?;
                Ok(StoredScan {
                    id: r.try_get("id").map_err(db("decode keyspace scan"))?,
                    source: r.try_get("source").map_err(db("decode keyspace scan"))?,
                    report: serde_json::from_str(&body).map_err(|e| {
                        StoreError::Unavailable(format!("decoding a stored keyspace scan: {e}"))
                    })?,
                })
            })
            .collect()
    }
}
