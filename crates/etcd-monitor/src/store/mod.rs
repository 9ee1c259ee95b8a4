//! The history store: health snapshots, findings, leader changes and metric
//! samples, in embedded SQLite (`sqlite://PATH`, the default) or PostgreSQL
//! (`postgres://...`). Schema migrations run at open; retention is enforced
//! by [`Store::enforce_retention`].
//!
//! One SQL dialect serves both backends through sqlx's `Any` driver: numbered
//! parameters (`$1`), `BIGINT`, `DOUBLE PRECISION`, `TEXT`; only the
//! auto-increment key differs, chosen at migration time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row};

use crate::health::HealthSnapshot;

pub mod alerts;
mod audit;
mod backups;
mod benchmarks;
mod defrag;
pub mod ha;
mod keyspace;
pub use backups::BackupRecord;
pub use defrag::DefragRun;
pub use ha::{Fence, PublishedStatus};
pub use keyspace::StoredScan;

pub use audit::AuditRecord;

/// What can go wrong with the history store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one we can open.
    #[error("storage.url {url:?}: {message}")]
    Url {
        /// The URL (credentials removed).
        url: String,
        /// What is wrong.
        message: String,
    },
    /// A write did not finish in time.
    #[error("history store: a write did not finish within {0:?}")]
    Timeout(Duration),
    /// The store cannot serve the request.
    #[error("history store: {0}")]
    Unavailable(String),
    /// A newer owner of the cluster wrote (`ha.*`): this replica's
    /// ownership is over, and its write was refused.
    #[error(
        "history store: cluster {cluster}: ownership token {token} is stale (a newer owner wrote with {current})"
    )]
    Fenced {
        /// Cluster name.
        cluster: String,
        /// The refused token.
        token: i64,
        /// The highest token recorded.
        current: i64,
    },
    /// A database operation failed.
    #[error("history store ({what}): {source}")]
    Db {
        /// What we were doing.
        what: &'static str,
        /// The cause.
        source: sqlx::Error,
    },
}

fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        StoreError::Db { what, source }
    }
}

pub use crate::time::unix_ms;

/// Rows per multi-row INSERT of metric samples (5 parameters each: well
/// under SQLite's and PostgreSQL's parameter limits).
const METRIC_ROWS_PER_INSERT: usize = 40;

/// `INSERT INTO metric_samples ... VALUES ($1, ..., $5), ($6, ...)` for `rows` rows.
fn metric_insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(80 + rows * 30);
    sql.push_str("INSERT INTO metric_samples (cluster, member, name, at_ms, value) VALUES ");
    for r in 0..rows {
        let b = r * 5;
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5
        ));
    }
    sql
}

/// A recorded leader change.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LeaderChange {
    /// Cluster name.
    pub cluster: String,
    /// When the monitor saw the new leader (ms since epoch).
    pub at_ms: i64,
    /// Previous leader id (hex), if one was known.
    pub old_leader: Option<String>,
    /// New leader id (hex).
    pub new_leader: Option<String>,
    /// Previous leader's member name.
    pub old_name: Option<String>,
    /// New leader's member name.
    pub new_name: Option<String>,
    /// Raft term of the new leader.
    pub term: Option<u64>,
}

/// One stored health check.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRow {
    /// Cluster name.
    pub cluster: String,
    /// When (ms since epoch).
    pub at_ms: i64,
    /// `healthy`, `degraded`, `unavailable`.
    pub verdict: String,
    /// Leader id (hex).
    pub leader: Option<String>,
    /// Voting members that answered.
    pub reachable: i64,
    /// Voting members.
    pub voting: i64,
    /// Duration of the check, ms.
    pub duration_ms: f64,
    /// The whole snapshot as JSON, stored when the verdict or findings changed.
    pub body: Option<serde_json::Value>,
}

/// One stored finding.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FindingRow {
    /// Cluster name.
    pub cluster: String,
    /// When (ms since epoch).
    pub at_ms: i64,
    /// Finding kind.
    pub kind: String,
    /// Severity.
    pub severity: String,
    /// Member concerned.
    pub member: Option<String>,
    /// Message.
    pub message: String,
}

/// One metric sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricPoint {
    /// Member name, or empty for a cluster-wide figure.
    pub member: String,
    /// Metric name.
    pub name: String,
    /// When (ms since epoch).
    pub at_ms: i64,
    /// Value.
    pub value: f64,
}

/// The history store.
///
/// SQLite runs in WAL mode with one writing connection and a pool of
/// read-only ones, so API reads never wait behind history writes and the
/// alert engine (and a burst of reads cannot starve the writer).
#[derive(Debug, Clone)]
pub struct Store {
    /// Writes (and, for PostgreSQL, everything); replaced when it stops
    /// answering (see [`Store::guarded`]).
    pool: Arc<arc_swap::ArcSwap<AnyPool>>,
    /// How the writer connects, to reconnect.
    connect_url: Arc<str>,
    /// Reads.
    read: AnyPool,
    backend: Backend,
    health: Arc<StoreHealth>,
}

/// Whether writes succeed right now (`/ready` answers 503 while they fail).
#[derive(Debug, Default)]
struct StoreHealth {
    failing: std::sync::Mutex<Option<String>>,
    reconnecting: std::sync::atomic::AtomicBool,
}

/// Longest a write may take. A write that hangs (seen with SQLite after a
/// failed COMMIT on a full disk) must not stall health checks or alerting;
/// the writer is then reconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Every database error of every store of the process
/// (`etcd_monitor_store_errors_total`).
pub static ERRORS: AtomicU64 = AtomicU64::new(0);

/// Read connections of the SQLite store.
const SQLITE_READERS: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE IF NOT EXISTS snapshots (id {AUTO}, cluster TEXT NOT NULL, at_ms BIGINT NOT NULL,
        verdict TEXT NOT NULL, leader TEXT, reachable BIGINT NOT NULL, voting BIGINT NOT NULL,
        duration_ms DOUBLE PRECISION NOT NULL, body TEXT);
     CREATE INDEX IF NOT EXISTS snapshots_cluster_at ON snapshots (cluster, at_ms);
     CREATE TABLE IF NOT EXISTS findings (id {AUTO}, cluster TEXT NOT NULL, at_ms BIGINT NOT NULL,
        kind TEXT NOT NULL, severity TEXT NOT NULL, member TEXT, message TEXT NOT NULL, evidence TEXT NOT NULL);
     CREATE INDEX IF NOT EXISTS findings_cluster_at ON findings (cluster, at_ms);
     CREATE TABLE IF NOT EXISTS leader_changes (id {AUTO}, cluster TEXT NOT NULL, at_ms BIGINT NOT NULL,
        old_leader TEXT, new_leader TEXT, old_name TEXT, new_name TEXT, term BIGINT);
     CREATE INDEX IF NOT EXISTS leader_changes_cluster_at ON leader_changes (cluster, at_ms);
     CREATE TABLE IF NOT EXISTS metric_samples (cluster TEXT NOT NULL, member TEXT NOT NULL,
        name TEXT NOT NULL, at_ms BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL);
     CREATE INDEX IF NOT EXISTS metric_samples_query ON metric_samples (cluster, name, at_ms);",
    // 2: alerting: alert history, notification groups, the outbox, silences.
    "CREATE TABLE IF NOT EXISTS alerts (id {AUTO}, fingerprint TEXT NOT NULL, group_key TEXT NOT NULL,
        cluster TEXT NOT NULL, rule TEXT NOT NULL, alertname TEXT NOT NULL, severity TEXT NOT NULL, member TEXT,
        labels TEXT NOT NULL, summary TEXT NOT NULL, value DOUBLE PRECISION NOT NULL, state TEXT NOT NULL,
        active_since_ms BIGINT NOT NULL, starts_at_ms BIGINT, ends_at_ms BIGINT, suppressed TEXT);
     CREATE INDEX IF NOT EXISTS alerts_cluster_state ON alerts (cluster, state);
     CREATE INDEX IF NOT EXISTS alerts_starts_at ON alerts (starts_at_ms);
     CREATE TABLE IF NOT EXISTS alert_groups (group_key TEXT PRIMARY KEY, cluster TEXT NOT NULL, rule TEXT NOT NULL,
        notified_firing BIGINT NOT NULL, last_notified_ms BIGINT NOT NULL, notified TEXT NOT NULL,
        acked_at_ms BIGINT, acked_by TEXT, ack_comment TEXT);
     CREATE TABLE IF NOT EXISTS alert_outbox (id {AUTO}, notification_id TEXT NOT NULL, group_key TEXT NOT NULL,
        channel TEXT NOT NULL, status TEXT NOT NULL, attempts BIGINT NOT NULL, next_attempt_ms BIGINT NOT NULL,
        created_ms BIGINT NOT NULL, sent_ms BIGINT, last_error TEXT, payload TEXT NOT NULL);
     CREATE INDEX IF NOT EXISTS alert_outbox_pending ON alert_outbox (channel, status, id);
     CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts_at_ms BIGINT NOT NULL,
        ends_at_ms BIGINT NOT NULL, comment TEXT NOT NULL, created_by TEXT NOT NULL);",
    // 3: benchmark runs (from the API and from schedules).
    "CREATE TABLE IF NOT EXISTS benchmark_runs (id TEXT PRIMARY KEY, cluster TEXT NOT NULL, at_ms BIGINT NOT NULL,
        source TEXT NOT NULL, workload TEXT NOT NULL, state TEXT NOT NULL, throughput DOUBLE PRECISION,
        p99_ms DOUBLE PRECISION, body TEXT NOT NULL);
     CREATE INDEX IF NOT EXISTS benchmark_runs_at ON benchmark_runs (at_ms);",
    // 4: the API's audit log.
    "CREATE TABLE IF NOT EXISTS audit (id {AUTO}, at_ms BIGINT NOT NULL, principal TEXT NOT NULL, role TEXT,
        source TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, cluster TEXT, body TEXT,
        status BIGINT NOT NULL, request_id TEXT NOT NULL);
     CREATE INDEX IF NOT EXISTS audit_at ON audit (at_ms);",
    // 5: each alert's runbook link.
    "ALTER TABLE alerts ADD COLUMN runbook_url TEXT;",
    // 6: keyspace scans (scheduled and from the API), for growth.
    "CREATE TABLE IF NOT EXISTS keyspace_scans (id {AUTO}, cluster TEXT NOT NULL, at_ms BIGINT NOT NULL,
        prefix TEXT NOT NULL, revision BIGINT NOT NULL, source TEXT NOT NULL, body TEXT NOT NULL);
     CREATE INDEX IF NOT EXISTS keyspace_scans_cluster_at ON keyspace_scans (cluster, at_ms);",
    // 7: defragmentation runs (the defrag autopilot), with sizes before and after.
    "CREATE TABLE IF NOT EXISTS defrag_runs (id {AUTO}, cluster TEXT NOT NULL, at_ms BIGINT NOT NULL,
        outcome TEXT NOT NULL, body TEXT NOT NULL);
     CREATE INDEX IF NOT EXISTS defrag_runs_cluster_at ON defrag_runs (cluster, at_ms);",
    // 8: backups (scheduled and from the API) with their restore drills.
    "CREATE TABLE IF NOT EXISTS backups (id {AUTO}, schedule TEXT NOT NULL, cluster TEXT NOT NULL,
        name TEXT NOT NULL, at_ms BIGINT NOT NULL, outcome TEXT NOT NULL, body TEXT NOT NULL);
     CREATE INDEX IF NOT EXISTS backups_schedule_at ON backups (schedule, at_ms);",
    // 9: replicas (`ha.*`): each cluster's highest ownership token (the
    // fence), each cluster's status published by its owner, and outbox
    // claims (one sender per row across replicas).
    "CREATE TABLE IF NOT EXISTS cluster_owners (cluster TEXT PRIMARY KEY, token BIGINT NOT NULL,
        replica TEXT NOT NULL, at_ms BIGINT NOT NULL);
     CREATE TABLE IF NOT EXISTS cluster_status (cluster TEXT PRIMARY KEY, replica TEXT NOT NULL,
        token BIGINT NOT NULL, at_ms BIGINT NOT NULL, status TEXT NOT NULL, metrics TEXT);
     ALTER TABLE alert_outbox ADD COLUMN claimed_by TEXT;
     ALTER TABLE alert_outbox ADD COLUMN claimed_until BIGINT;",
];

impl Store {
    /// Opens (creating if needed) the store at `url` and migrates its schema.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        let (backend, connect_url) = if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::Url {
                    url: shown,
                    message: "no file path after sqlite://".into(),
                });
            }
            if path != ":memory:" {
                if let Some(dir) = std::path::Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    if !dir.is_dir() {
                        return Err(StoreError::Url {
                            url: shown,
                            message: format!("directory {} does not exist", dir.display()),
                        });
                    }
                }
            }
            let sep = if path.contains('?') { "&" } else { "?" };
            (Backend::Sqlite, format!("sqlite://{path}{sep}mode=rwc"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::Url {
                url: shown,
                message: "use sqlite://PATH or postgres://USER@HOST/DB".into(),
            });
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 1 } else { 4 })
            .acquire_timeout(Duration::from_secs(10))
            .connect(&connect_url)
            .await
            .map_err(|e| StoreError::Url {
                url: shown.clone(),
                message: format!("cannot open: {e}"),
            })?;
        let mut store = Store {
            read: pool.clone(),
            pool: Arc::new(arc_swap::ArcSwap::from_pointee(pool)),
            connect_url: Arc::from(connect_url.as_str()),
            backend,
            health: Arc::default(),
        };
        if backend == Backend::Sqlite {
            // WAL keeps readers (the API) from blocking the writer.
            // A small page cache: the monitor writes far more than it reads back.
            sqlx::query("PRAGMA cache_size=-512")
                .execute(&store.writer())
                .await
                .map_err(db("set cache size"))?;
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&store.writer())
                .await
                .map_err(db("enable WAL"))?;
        }
        store.migrate().await?;
        if backend == Backend::Sqlite && !connect_url.contains(":memory:") {
            let ro = connect_url.replacen("mode=rwc", "mode=ro", 1);
            store.read = AnyPoolOptions::new()
                .max_connections(SQLITE_READERS)
                .acquire_timeout(Duration::from_secs(10))
                .connect(&ro)
                .await
                .map_err(|e| StoreError::Url {
                    url: shown.clone(),
                    message: format!("cannot open for reading: {e}"),
                })?;
        }
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .execute(&self.writer())
            .await
            .map_err(db("create schema_version"))?;
        let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
            .fetch_one(&self.writer())
            .await
            .map_err(db("read schema_version"))?
            .try_get("v")
            .map_err(db("read schema_version"))?;
        let auto = match self.backend {
            Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Backend::Postgres => "BIGSERIAL PRIMARY KEY",
        };
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let mut tx = self.writer().begin().await.map_err(db("begin migration"))?;
            let sql = migration.replace("{AUTO}", auto);
            for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                // Our own constant DDL, not user input.
                sqlx::query(AssertSqlSafe(stmt.to_string()))
                    .execute(&mut *tx)
                    .await
                    .map_err(db("migrate"))?;
            }
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(i as i64 + 1)
                .execute(&mut *tx)
                .await
                .map_err(db("record migration"))?;
            tx.commit().await.map_err(db("commit migration"))?;
        }
        Ok(())
    }

    /// Records one health check; the full snapshot body only when `with_body`.
    pub async fn record_snapshot(
        &self,
        s: &HealthSnapshot,
        with_body: bool,
    ) -> Result<(), StoreError> {
        self.guarded(self.insert_snapshot(s, with_body)).await
    }

    async fn insert_snapshot(&self, s: &HealthSnapshot, with_body: bool) -> Result<(), StoreError> {
        let at = unix_ms(s.observation.taken_at);
        let verdict = serde_json::to_value(s.verdict)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let body = if with_body {
            serde_json::to_string(s).ok()
        } else {
            None
        };
        let mut tx = self.writer().begin().await.map_err(db("begin snapshot"))?;
        sqlx::query(
            "INSERT INTO snapshots (cluster, at_ms, verdict, leader, reachable, voting, duration_ms, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&s.cluster)
        .bind(at)
        .bind(verdict)
        .bind(s.leader.clone())
        .bind(s.reachable_voting_members as i64)
        .bind(s.voting_members as i64)
        .bind(s.observation.duration_ms)
        .bind(body)
        .execute(&mut *tx)
        .await
        .map_err(db("insert snapshot"))?;
        if with_body {
            for f in &s.findings {
                let severity = serde_json::to_value(f.severity)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                sqlx::query(
                    "INSERT INTO findings (cluster, at_ms, kind, severity, member, message, evidence)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&s.cluster)
                .bind(at)
                .bind(f.kind)
                .bind(severity)
                .bind(f.member.clone())
                .bind(&f.message)
                .bind(f.evidence.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db("insert finding"))?;
            }
        }
        tx.commit().await.map_err(db("commit snapshot"))
    }

    /// Records a leader change.
    pub async fn record_leader_change(&self, c: &LeaderChange) -> Result<(), StoreError> {
        self.guarded(async move {
        sqlx::query(
            "INSERT INTO leader_changes (cluster, at_ms, old_leader, new_leader, old_name, new_name, term)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&c.cluster)
        .bind(c.at_ms)
        .bind(c.old_leader.clone())
        .bind(c.new_leader.clone())
        .bind(c.old_name.clone())
        .bind(c.new_name.clone())
        .bind(c.term.map(|t| t as i64))
        .execute(&self.writer())
        .await
        .map_err(db("insert leader change"))?;
        Ok(())
    })
        .await
    }

    /// Records metric samples of one round.
    pub async fn record_metrics(
        &self,
        cluster: &str,
        points: &[MetricPoint],
    ) -> Result<(), StoreError> {
        self.guarded(self.insert_metrics(cluster, points)).await
    }

    async fn insert_metrics(
        &self,
        cluster: &str,
        points: &[MetricPoint],
    ) -> Result<(), StoreError> {
        let finite: Vec<&MetricPoint> = points.iter().filter(|p| p.value.is_finite()).collect();
        if finite.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer().begin().await.map_err(db("begin metrics"))?;
        // A round's samples in a few multi-row statements, not one
        // statement (and, for SQLite, one hop to its worker thread) each.
        for chunk in finite.chunks(METRIC_ROWS_PER_INSERT) {
            let sql = metric_insert_sql(chunk.len());
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for p in chunk {
                q = q
                    .bind(cluster)
                    .bind(&p.member)
                    .bind(&p.name)
                    .bind(p.at_ms)
                    .bind(p.value);
            }
            q.execute(&mut *tx)
                .await
                .map_err(db("insert metric samples"))?;
        }
        tx.commit().await.map_err(db("commit metrics"))
    }

    /// Leader changes of `cluster` at or after `since_ms`, oldest first.
    pub async fn leader_changes(
        &self,
        cluster: &str,
        since_ms: i64,
    ) -> Result<Vec<LeaderChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT cluster, at_ms, old_leader, new_leader, old_name, new_name, term FROM leader_changes
             WHERE cluster = $1 AND at_ms >= $2 ORDER BY at_ms, id",
        )
        .bind(cluster)
        .bind(since_ms)
        .fetch_all(&self.read)
        .await
        .map_err(db("read leader changes"))?;
        rows.iter()
            .map(leader_change)
            .collect::<Result<_, _>>()
            .map_err(db("decode leader change"))
    }

    /// Health checks of `cluster` in `[from_ms, to_ms]`, newest first, at most `limit`.
    pub async fn snapshots(
        &self,
        cluster: &str,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<SnapshotRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT cluster, at_ms, verdict, leader, reachable, voting, duration_ms, body FROM snapshots
             WHERE cluster = $1 AND at_ms >= $2 AND at_ms <= $3 ORDER BY at_ms DESC, id DESC LIMIT $4",
        )
        .bind(cluster)
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(db("read snapshots"))?;
        rows.iter()
            .map(|r| {
                let body: Option<String> = r.try_get("body")?;
                Ok(SnapshotRow {
                    cluster: r.try_get("cluster")?,
                    at_ms: r.try_get("at_ms")?,
                    verdict: r.try_get("verdict")?,
                    leader: r.try_get("leader")?,
                    reachable: r.try_get("reachable")?,
                    voting: r.try_get("voting")?,
                    duration_ms: r.try_get("duration_ms")?,
                    body: body.and_then(|b| serde_json::from_str(&b).ok()),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("decode snapshot"))
    }

    /// Findings of `cluster` in `[from_ms, to_ms]`, newest first.
    pub async fn findings(
        &self,
        cluster: &str,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<FindingRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT cluster, at_ms, kind, severity, member, message FROM findings
             WHERE cluster = $1 AND at_ms >= $2 AND at_ms <= $3 ORDER BY at_ms DESC, id DESC LIMIT $4",
        )
        .bind(cluster)
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(db("read findings"))?;
        rows.iter()
            .map(|r| {
                Ok(FindingRow {
                    cluster: r.try_get("cluster")?,
                    at_ms: r.try_get("at_ms")?,
                    kind: r.try_get("kind")?,
                    severity: r.try_get("severity")?,
                    member: r.try_get("member")?,
                    message: r.try_get("message")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("decode finding"))
    }

    /// Samples of metric `name` for `cluster` in `[from_ms, to_ms]`, oldest
    /// first; with `step_ms > 0`, averaged per member into buckets of that width.
    pub async fn metric_series(
        &self,
        cluster: &str,
        name: &str,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<MetricPoint>, StoreError> {
        // Raw samples are buckets of 1 ms: one query serves both cases.
        let step_ms = step_ms.max(1);
        let rows = sqlx::query(
            "SELECT member, name, (at_ms / $4) * $4 AS at_ms, AVG(value) AS value FROM metric_samples
             WHERE cluster = $1 AND name = $2 AND at_ms >= $3 AND at_ms <= $5
             GROUP BY member, name, (at_ms / $4) * $4 ORDER BY 3, 1",
        )
        .bind(cluster)
        .bind(name)
        .bind(from_ms)
        .bind(step_ms)
        .bind(to_ms)
        .fetch_all(&self.read)
        .await
        .map_err(db("read metric samples"))?;
        rows.iter()
            .map(|r| {
                Ok(MetricPoint {
                    member: r.try_get("member")?,
                    name: r.try_get("name")?,
                    at_ms: r.try_get("at_ms")?,
                    value: r.try_get("value")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("decode metric sample"))
    }

    /// Deletes history older than `older_than_ms`; returns the rows removed.
    pub async fn enforce_retention(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        let mut removed = 0;
        for table in [
            "snapshots",
            "findings",
            "leader_changes",
            "metric_samples",
            "benchmark_runs",
            "keyspace_scans",
            "defrag_runs",
        ] {
            // `table` comes from the constant list above.
            removed += sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE at_ms < $1"
            )))
            .bind(older_than_ms)
            .execute(&self.writer())
            .await
            .map_err(db("enforce retention"))?
            .rows_affected();
        }
        // Saved backups leave the history when retention removes their
        // files; failed attempts age out with the rest.
        removed += sqlx::query("DELETE FROM backups WHERE at_ms < $1 AND outcome = 'failed'")
            .bind(older_than_ms)
            .execute(&self.writer())
            .await
            .map_err(db("enforce retention"))?
            .rows_affected();
        removed += self.enforce_alert_retention(older_than_ms).await?;
        Ok(removed)
    }

    /// Closes the pools, flushing SQLite's WAL.
    pub async fn close(&self) {
        self.read.close().await;
        self.writer().close().await;
    }

    /// The writing pool.
    fn writer(&self) -> AnyPool {
        (**self.pool.load()).clone()
    }

    /// Runs a write within [`WRITE_TIMEOUT`] and notes its outcome for
    /// [`Store::write_failure`]. A failed or hung write replaces the
    /// writing connection: after a failed COMMIT (SQLite on a full disk)
    /// the old one can be left inside a transaction that later "commits"
    /// nothing, which would make every following write silently lost.
    async fn guarded<T>(
        &self,
        write: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let r = match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(r) => r,
            Err(_) => {
                ERRORS.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Timeout(WRITE_TIMEOUT))
            }
        };
        if matches!(r, Err(StoreError::Fenced { .. })) {
            // The store answered: it refused a stale owner's write.
            return r;
        }
        if r.is_err() {
            self.reconnect().await;
        }
        self.note(r)
    }

    /// Opens a new writing pool and swaps it in; the old one is closed in
    /// the background (within a bound).
    async fn reconnect(&self) {
        if self
            .health
            .reconnecting
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let max = if self.backend == Backend::Sqlite {
            1
        } else {
            4
        };
        let fresh = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&self.connect_url);
        match tokio::time::timeout(WRITE_TIMEOUT, fresh).await {
            Ok(Ok(fresh)) => {
                let old = self.pool.swap(Arc::new(fresh));
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), old.close()).await;
                });
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot reconnect to the history store yet"),
            Err(_) => tracing::warn!("cannot reconnect to the history store yet: no answer"),
        }
        self.health
            .reconnecting
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// Why writes fail, while they do (the last failure since the last
    /// success of a history write).
    pub fn write_failure(&self) -> Option<String> {
        self.health.failing.lock().ok().and_then(|f| f.clone())
    }

    /// Notes the outcome of a write for [`Store::write_failure`].
    fn note<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Ok(mut failing) = self.health.failing.lock() {
            match &result {
                Ok(_) => *failing = None,
                Err(e) => *failing = Some(e.to_string()),
            }
        }
        result
    }
}

fn leader_change(r: &AnyRow) -> Result<LeaderChange, sqlx::Error> {
    let term: Option<i64> = r.try_get("term")?;
    Ok(LeaderChange {
        cluster: r.try_get("cluster")?,
        at_ms: r.try_get("at_ms")?,
        old_leader: r.try_get("old_leader")?,
        new_leader: r.try_get("new_leader")?,
        old_name: r.try_get("old_name")?,
        new_name: r.try_get("new_name")?,
        term: term.map(|t| t as u64),
    })
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    crate::config::secret::redact_url_password(url)
}
