//! Benchmark runs in the history store.

use sqlx::Row;

use super::{Store, StoreError, db};

impl Store {
    /// Inserts or replaces a benchmark run (`body` is its JSON record).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_benchmark(
        &self,
        id: &str,
        cluster: &str,
        at_ms: i64,
        source: &str,
        workload: &str,
        state: &str,
        throughput: Option<f64>,
        p99_ms: Option<f64>,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.guarded(async move {
        let mut tx = self.writer().begin().await.map_err(db("begin benchmark"))?;
        sqlx::query("DELETE FROM benchmark_runs WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db("replace benchmark"))?;
        sqlx::query(
            "INSERT INTO benchmark_runs (id, cluster, at_ms, source, workload, state, throughput, p99_ms, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(cluster)
        .bind(at_ms)
        .bind(source)
        .bind(workload)
        .bind(state)
        .bind(throughput)
        .bind(p99_ms)
        .bind(body.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db("insert benchmark"))?;
        tx.commit().await.map_err(db("commit benchmark"))
    })
        .await
    }

    /// The newest `limit` benchmark runs' JSON records, newest first.
    pub async fn benchmarks(&self, limit: i64) -> Result<Vec<serde_json::Value>, StoreError> {
        let rows = sqlx::query("SELECT body FROM benchmark_runs ORDER BY at_ms DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.read)
            .await
            .map_err(db("read benchmarks"))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("body"))
            .map(|b| b.map(|b| serde_json::from_str(&b).unwrap_or(serde_json::Value::Null)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("decode benchmark"))
    }

    /// One benchmark run's JSON record.
    pub async fn benchmark(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let row = sqlx::query("SELECT body FROM benchmark_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db("read benchmark"))?;
        Ok(row
            .and_then(|r| r.try_get::<String, _>("body").ok())
            .and_then(|b| serde_json::from_str(&b).ok()))
    }
}
