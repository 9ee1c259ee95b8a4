//! The audit table: who changed what, and who was refused.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Store, StoreError, db};

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// When (ms since epoch).
    pub at_ms: i64,
    /// `token:NAME`, `jwt:NAME`, `cert:CN`, `anonymous` or `unauthenticated`.
    pub principal: String,
    /// The principal's role, if any.
    pub role: Option<String>,
    /// The client's IP address.
    pub source: String,
    /// HTTP method.
    pub method: String,
    /// Request path (no query string).
    pub path: String,
    /// The cluster acted on, when the request names one.
    pub cluster: Option<String>,
    /// The request body with secrets removed, shortened.
    pub body: Option<String>,
    /// The answer's HTTP status.
    pub status: u16,
    /// The request id (`X-Request-Id`).
    pub request_id: String,
}

impl Store {
    /// Appends one audit record.
    pub async fn record_audit(&self, r: &AuditRecord) -> Result<(), StoreError> {
        self.guarded(async move {
        sqlx::query(
            "INSERT INTO audit (at_ms, principal, role, source, method, path, cluster, body, status, request_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(r.at_ms)
        .bind(&r.principal)
        .bind(r.role.clone())
        .bind(&r.source)
        .bind(&r.method)
        .bind(&r.path)
        .bind(r.cluster.clone())
        .bind(r.body.clone())
        .bind(i64::from(r.status))
        .bind(&r.request_id)
        .execute(&self.writer())
        .await
        .map_err(db("insert audit record"))?;
        Ok(())
    })
        .await
    }

    /// Audit records in `[from_ms, to_ms]`, newest first, at most `limit`,
    /// optionally of one principal.
    pub async fn audit_records(
        &self,
        from_ms: i64,
        to_ms: i64,
        principal: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, principal, role, source, method, path, cluster, body, status, request_id FROM audit
             WHERE at_ms >= $1 AND at_ms <= $2 AND ($3 = '' OR principal = $3)
             ORDER BY at_ms DESC, id DESC LIMIT $4",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(principal.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(db("read audit records"))?;
        rows.iter()
            .map(|r| {
                let status: i64 = r.try_get("status")?;
                Ok(AuditRecord {
                    at_ms: r.try_get("at_ms")?,
                    principal: r.try_get("principal")?,
                    role: r.try_get("role")?,
                    source: r.try_get("source")?,
                    method: r.try_get("method")?,
                    path: r.try_get("path")?,
                    cluster: r.try_get("cluster")?,
                    body: r.try_get("body")?,
                    status: u16::try_from(status).unwrap_or(0),
                    request_id: r.try_get("request_id")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("decode audit record"))
    }

    /// Deletes audit records older than `older_than_ms`.
    pub async fn enforce_audit_retention(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM audit WHERE at_ms < $1")
            .bind(older_than_ms)
            .execute(&self.writer())
            .await
            .map_err(db("enforce audit retention"))?
            .rows_affected())
    }
}
