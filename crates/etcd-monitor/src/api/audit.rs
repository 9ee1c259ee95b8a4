//! The audit log: every state-changing request and every refusal, in the
//! history store (`audit` table, kept `storage.audit_retention`) and as a
//! `tracing` event with target `audit`. `GET /api/v1/audit` reads it back
//! (admins).
//!
//! Refusals are limited per source address (a scanner must not be able to
//! fill the disk): past [`DENIALS_PER_MINUTE`] in a minute they are counted,
//! and one record says how many were left out.
//!
//! A record the store cannot take (a write timing out under load, a full
//! disk) is kept in a bounded backlog and written before the next record
//! and on every minute's flush, so a slow moment loses no audit row.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Extension, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::Principal;
use super::extract::Params;
use super::{ApiError, AppState};
pub use crate::store::AuditRecord;
use crate::store::Store;

/// Refusals recorded per source address and minute.
pub const DENIALS_PER_MINUTE: u32 = 120;
/// Source addresses tracked at once; past this, new ones share a counter.
const MAX_SOURCES: usize = 10_000;
/// Records kept while the store cannot take them; past this the oldest
/// is dropped (and logged).
const MAX_BACKLOG: usize = 10_000;
/// Longest body summary kept.
const MAX_SUMMARY_CHARS: usize = 2000;

#[derive(Debug)]
struct Window {
    started: Instant,
    recorded: u32,
    left_out: u64,
}

/// Writes audit records.
#[derive(Debug)]
pub struct AuditLog {
    store: Store,
    denials_per_minute: u32,
    denials: Mutex<HashMap<String, Window>>,
    /// Records not stored yet, oldest first.
    backlog: Mutex<VecDeque<AuditRecord>>,
    /// Held by the one task writing the backlog, so records reach the
    /// store in order and a slow store never queues requests behind it.
    draining: tokio::sync::Mutex<()>,
}

impl AuditLog {
    /// A log writing into `store`.
    pub fn new(store: Store) -> AuditLog {
        AuditLog::with_limit(store, DENIALS_PER_MINUTE)
    }

    /// A log recording at most `denials_per_minute` refusals per source
    /// and minute.
    pub fn with_limit(store: Store, denials_per_minute: u32) -> AuditLog {
        AuditLog {
            store,
            denials_per_minute,
            denials: Mutex::new(HashMap::new()),
            backlog: Mutex::new(VecDeque::new()),
            draining: tokio::sync::Mutex::new(()),
        }
    }

    /// Records `r`: a `tracing` event, then a store row. A store failure is
    /// logged, never turned into a failed request, and the row is kept in
    /// the backlog to be written later.
    pub async fn write(&self, r: AuditRecord) {
        tracing::info!(
            target: "audit",
            principal = %r.principal,
            role = r.role.as_deref().unwrap_or("-"),
            source = %r.source,
            method = %r.method,
            path = %r.path,
            cluster = r.cluster.as_deref().unwrap_or("-"),
            status = r.status,
            request_id = %r.request_id,
            body = r.body.as_deref().unwrap_or(""),
            "api request"
        );
        if let Ok(mut backlog) = self.backlog.lock() {
            if backlog.len() >= MAX_BACKLOG {
                tracing::error!(principal = %r.principal, path = %r.path, at_ms = r.at_ms,
                    "audit backlog full ({MAX_BACKLOG} records the store has not taken): this record is only in the log above");
            } else {
                backlog.push_back(r);
            }
        }
        self.drain().await;
    }

    /// Writes the backlog, oldest first, until it is empty or the store
    /// refuses a record. When another task is writing it already, returns
    /// at once: that task writes this record too.
    async fn drain(&self) {
        loop {
            let Ok(_writer) = self.draining.try_lock() else {
                return;
            };
            while let Some(r) = self.front() {
                if let Err(e) = self.store.record_audit(&r).await {
                    tracing::error!(error = %e, principal = %r.principal, path = %r.path, waiting = self.backlog_len(),
                        "cannot store an audit record yet; it is kept and written later");
                    return;
                }
                // Only the holder of `draining` pops, so the front is `r`.
                if let Ok(mut backlog) = self.backlog.lock() {
                    backlog.pop_front();
                }
            }
            drop(_writer);
            // A record pushed while this task was finishing found
            // `draining` held: write it now rather than at the next flush.
            if self.backlog_len() == 0 {
                return;
            }
        }
    }

    fn front(&self) -> Option<AuditRecord> {
        self.backlog.lock().ok().and_then(|b| b.front().cloned())
    }

    /// Writes the records the store could not take yet, if any (called
    /// every second, so they do not wait for the next request).
    pub async fn retry(&self) {
        if self.backlog_len() > 0 {
            self.drain().await;
        }
    }

    /// Audit records waiting for the store.
    pub fn backlog_len(&self) -> usize {
        self.backlog.lock().map(|b| b.len()).unwrap_or(0)
    }

    /// Records a refusal, unless its source has had too many this minute.
    pub async fn write_denial(&self, r: AuditRecord) {
        let (record, summary) = self.admit(&r.source, r.at_ms);
        if let Some(s) = summary {
            self.write(s).await;
        }
        if record {
            self.write(r).await;
        }
    }

    /// Whether a refusal from `source` is recorded, and the summary of the
    /// ones left out in the window that just ended.
    fn admit(&self, source: &str, now_ms: i64) -> (bool, Option<AuditRecord>) {
        let Ok(mut map) = self.denials.lock() else {
            return (true, None);
        };
        let key = if map.len() >= MAX_SOURCES && !map.contains_key(source) {
            "other".to_string()
        } else {
            source.to_string()
        };
        let w = map.entry(key.clone()).or_insert(Window {
            started: Instant::now(),
            recorded: 0,
            left_out: 0,
        });
        let mut summary = None;
        if w.started.elapsed() >= Duration::from_secs(60) {
            if w.left_out > 0 {
                summary = Some(left_out_record(&key, w.left_out, now_ms));
            }
            *w = Window {
                started: Instant::now(),
                recorded: 0,
                left_out: 0,
            };
        }
        if w.recorded < self.denials_per_minute {
            w.recorded += 1;
            (true, summary)
        } else {
            w.left_out += 1;
            (false, summary)
        }
    }

    /// Writes the summaries of windows that have ended (called every
    /// minute, so a burst that stops is still accounted for) and forgets
    /// quiet sources.
    pub async fn flush(&self) {
        let now_ms = crate::store::unix_ms(std::time::SystemTime::now());
        let summaries: Vec<AuditRecord> = match self.denials.lock() {
            Ok(mut map) => {
                let mut out = Vec::new();
                map.retain(|source, w| {
                    if w.started.elapsed() < Duration::from_secs(60) {
                        return true;
                    }
                    if w.left_out > 0 {
                        out.push(left_out_record(source, w.left_out, now_ms));
                    }
                    false
                });
                out
            }
            Err(_) => Vec::new(),
        };
        for s in summaries {
            self.write(s).await;
        }
        self.drain().await;
    }
}

fn left_out_record(source: &str, n: u64, now_ms: i64) -> AuditRecord {
    AuditRecord {
        at_ms: now_ms,
        principal: "unauthenticated".into(),
        role: None,
        source: source.to_string(),
        method: "-".into(),
        path: "-".into(),
        cluster: None,
        body: Some(format!(
            "{n} more refused requests from {source} in one minute, not recorded one by one"
        )),
        status: 429,
        request_id: String::new(),
    }
}

/// Whether a JSON key names a secret whose value must not be recorded.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "key",
        "authorization",
        "credential",
        "url",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// The body as the audit log keeps it: JSON with values of secret-looking
/// keys replaced and long strings shortened; anything else by its size.
pub fn summarize_body(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(bytes) else {
        return format!("<{} bytes, not JSON>", bytes.len());
    };
    scrub(&mut v);
    let text = v.to_string();
    if text.chars().count() > MAX_SUMMARY_CHARS {
        let cut: String = text.chars().take(MAX_SUMMARY_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn scrub(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                if is_secret_key(k) && !item.is_null() {
                    *item = Value::String(crate::config::REDACTED.into());
                } else {
                    scrub(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::String(s) if s.chars().count() > 200 => {
            *s = format!("{}…", s.chars().take(200).collect::<String>());
        }
        _ => {}
    }
}

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Start (ms since epoch or a duration ago such as `24h`); default 24h ago.
    pub from: Option<String>,
    /// End; default now.
    pub to: Option<String>,
    /// Only this principal (`token:ci`, `jwt:alice`, ...).
    pub principal: Option<String>,
    /// Most records (default 200, at most 5000), newest first.
    pub limit: Option<i64>,
}

/// `GET /api/v1/audit`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Start (ms since epoch).
    pub from_ms: i64,
    /// End (ms since epoch).
    pub to_ms: i64,
    /// Records, newest first.
    pub records: Vec<AuditRecord>,
}

/// `GET /api/v1/audit`: the audit log, newest first. A principal limited
/// to some clusters sees only records of those clusters.
#[utoipa::path(get, path = "/api/v1/audit", operation_id = "list_audit", tag = "api", params(AuditQuery), responses(
    (status = 200, description = "The audit log, newest first", body = AuditPage),
    (status = 400, description = "Bad parameters", body = super::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Params(q): Params<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let now = crate::store::unix_ms(std::time::SystemTime::now());
    let from = super::handlers::parse_time(q.from.as_deref(), now - 24 * 3_600_000, now, "from")?;
    let to = super::handlers::parse_time(q.to.as_deref(), now, now, "to")?;
    let limit = super::handlers::limit(q.limit, 200, 5000)?;
    let records = state
        .monitor
        .store()
        .audit_records(from, to, q.principal.as_deref(), limit)
        .await?;
    let records: Vec<AuditRecord> = records
        .into_iter()
        .filter(|r| match &r.cluster {
            Some(c) => caller.scope.allows(c),
            None => caller.scope.is_all(),
        })
        .collect();
    Ok(Json(AuditPage {
        from_ms: from,
        to_ms: to,
        records,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_record_the_store_cannot_take_yet_is_written_later_in_order() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let store = Store::open(&url).await.unwrap();
        let log = AuditLog::new(store.clone());
        let record = |path: &str| AuditRecord {
            at_ms: 1,
            principal: "token:adm".into(),
            role: Some("admin".into()),
            source: "10.0.0.1".into(),
            method: "POST".into(),
            path: path.into(),
            cluster: None,
            body: None,
            status: 200,
            request_id: "r".into(),
        };
        // Another process holds the database's write lock past the store's
        // write timeout: the record cannot be stored now.
        let mut holder = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut holder)
            .await
            .unwrap();
        log.write(record("/first")).await;
        assert_eq!(log.backlog_len(), 1);
        log.write(record("/second")).await;
        assert_eq!(log.backlog_len(), 2, "still locked: both wait, in order");
        sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
        holder.close().await.unwrap();
        assert!(
            store
                .audit_records(0, i64::MAX, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // The retry (every second in the server) writes them, oldest first.
        log.retry().await;
        assert_eq!(log.backlog_len(), 0);
        let rows = store.audit_records(0, i64::MAX, None, 10).await.unwrap();
        let paths: Vec<&str> = rows.iter().rev().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/first", "/second"]);
    }

    #[tokio::test]
    async fn a_flood_of_refusals_is_summarized_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("a.db").display()))
            .await
            .unwrap();
        let log = AuditLog::with_limit(store.clone(), 3);
        let denial = |source: &str| AuditRecord {
            at_ms: 1,
            principal: "unauthenticated".into(),
            role: None,
            source: source.into(),
            method: "GET".into(),
            path: "/api/v1/clusters".into(),
            cluster: None,
            body: None,
            status: 401,
            request_id: "r".into(),
        };
        for _ in 0..10 {
            log.write_denial(denial("10.0.0.1")).await;
        }
        log.write_denial(denial("10.0.0.2")).await;
        let rows = store.audit_records(0, i64::MAX, None, 100).await.unwrap();
        assert_eq!(rows.iter().filter(|r| r.source == "10.0.0.1").count(), 3);
        assert_eq!(rows.iter().filter(|r| r.source == "10.0.0.2").count(), 1);
        // The window ends: the 7 left out are accounted for in one record.
        for w in log.denials.lock().unwrap().values_mut() {
            w.started = Instant::now()
                .checked_sub(Duration::from_secs(61))
                .expect("the clock started more than a minute ago");
        }
        log.flush().await;
        let rows = store.audit_records(0, i64::MAX, None, 100).await.unwrap();
        let summary: Vec<&AuditRecord> = rows.iter().filter(|r| r.status == 429).collect();
        assert_eq!(summary.len(), 1, "{rows:?}");
        assert!(
            summary[0].body.as_deref().unwrap().starts_with("7 more"),
            "{summary:?}"
        );
        assert!(log.denials.lock().unwrap().is_empty());
    }

    #[test]
    fn body_summaries_hide_secrets_and_stay_short() {
        let s = summarize_body(
            br#"{"matchers": ["cluster=a"], "comment": "x", "webhook_url": "https://h/T0/B0/S3CR3T", "nested": {"api_token": "abc"}}"#,
        );
        assert!(!s.contains("S3CR3T") && !s.contains("abc"), "{s}");
        assert!(s.contains("cluster=a") && s.contains("<redacted>"), "{s}");
        let long = format!(r#"{{"comment": "{}"}}"#, "é".repeat(5000));
        let s = summarize_body(long.as_bytes());
        assert!(s.chars().count() < 300, "{}", s.len());
        assert_eq!(summarize_body(b"a=1&b=2"), "<7 bytes, not JSON>");
        assert_eq!(summarize_body(b""), "");
    }
}
