//! Alert tables: alert history (fired/resolved), notification groups with
//! their acknowledgement, the notification outbox with delivery status, and
//! silences added at run time.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, db};
use crate::model::{Alert, AlertState, Effect, GroupState, Matcher, Notification, Silence};

/// One outbox row: a notification for one channel and its delivery status.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxRow {
    /// Row id (delivery order).
    pub id: i64,
    /// `cluster/rule`.
    pub group_key: String,
    /// Channel name.
    pub channel: String,
    /// `pending`, `sent`, `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due (ms since epoch).
    pub next_attempt_ms: i64,
    /// When queued.
    pub created_ms: i64,
    /// When the receiver accepted it.
    pub sent_ms: Option<i64>,
    /// The last failure.
    pub last_error: Option<String>,
    /// What is sent.
    pub notification: Notification,
}

/// One notification group and its acknowledgement.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AlertGroupRow {
    /// The group's notification state.
    #[serde(flatten)]
    pub state: GroupState,
    /// When acknowledged (ms since epoch); cleared when the group resolves.
    pub acked_at_ms: Option<i64>,
    /// Who acknowledged.
    pub acked_by: Option<String>,
    /// Why.
    pub ack_comment: Option<String>,
}

const ALERT_COLUMNS: &str = "fingerprint, group_key, rule, labels, summary, value, state, active_since_ms, starts_at_ms, ends_at_ms, suppressed, runbook_url";
const OUTBOX_COLUMNS: &str = "id, group_key, channel, status, attempts, next_attempt_ms, created_ms, sent_ms, last_error, payload";

fn state_str(s: AlertState) -> &'static str {
    match s {
        AlertState::Pending => "pending",
        AlertState::Firing => "firing",
        AlertState::Resolved => "resolved",
    }
}

fn alert_row(r: &AnyRow) -> Result<Alert, sqlx::Error> {
    let labels: String = r.try_get("labels")?;
    let state: String = r.try_get("state")?;
    Ok(Alert {
        fingerprint: r.try_get("fingerprint")?,
        group_key: r.try_get("group_key")?,
        rule: r.try_get("rule")?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        summary: r.try_get("summary")?,
        value: r.try_get("value")?,
        state: match state.as_str() {
            "firing" => AlertState::Firing,
            "pending" => AlertState::Pending,
            _ => AlertState::Resolved,
        },
        active_since_ms: r.try_get("active_since_ms")?,
        starts_at_ms: r.try_get("starts_at_ms")?,
        ends_at_ms: r.try_get("ends_at_ms")?,
        suppressed: r.try_get("suppressed")?,
        runbook_url: r.try_get("runbook_url")?,
    })
}

fn group_row(r: &AnyRow) -> Result<AlertGroupRow, sqlx::Error> {
    let notified: String = r.try_get("notified")?;
    let firing: i64 = r.try_get("notified_firing")?;
    Ok(AlertGroupRow {
        state: GroupState {
            group_key: r.try_get("group_key")?,
            cluster: r.try_get("cluster")?,
            rule: r.try_get("rule")?,
            notified_firing: firing != 0,
            last_notified_ms: r.try_get("last_notified_ms")?,
            notified: serde_json::from_str(&notified).unwrap_or_default(),
        },
        acked_at_ms: r.try_get("acked_at_ms")?,
        acked_by: r.try_get("acked_by")?,
        ack_comment: r.try_get("ack_comment")?,
    })
}

fn outbox_row(r: &AnyRow) -> Result<OutboxRow, sqlx::Error> {
    let payload: String = r.try_get("payload")?;
    Ok(OutboxRow {
        id: r.try_get("id")?,
        group_key: r.try_get("group_key")?,
        channel: r.try_get("channel")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_ms: r.try_get("next_attempt_ms")?,
        created_ms: r.try_get("created_ms")?,
        sent_ms: r.try_get("sent_ms")?,
        last_error: r.try_get("last_error")?,
        notification: serde_json::from_str(&payload)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    })
}

fn silence_row(r: &AnyRow) -> Result<Silence, sqlx::Error> {
    let matchers: String = r.try_get("matchers")?;
    Ok(Silence {
        id: r.try_get("id")?,
        matchers: Matcher::restored(
            serde_json::from_str::<Vec<Matcher>>(&matchers).unwrap_or_default(),
        ),
        starts_at_ms: r.try_get("starts_at_ms")?,
        ends_at_ms: r.try_get("ends_at_ms")?,
        comment: r.try_get("comment")?,
        created_by: r.try_get("created_by")?,
        source: "api".into(),
    })
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

async fn insert_alert(tx: &mut Tx, a: &Alert) -> Result<(), StoreError> {
    let (cluster, _) = a.group_key.rsplit_once('/').unwrap_or((&a.group_key, ""));
    sqlx::query(
        "INSERT INTO alerts (fingerprint, group_key, cluster, rule, alertname, severity, member, labels, summary,
            value, state, active_since_ms, starts_at_ms, ends_at_ms, suppressed, runbook_url)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(&a.fingerprint)
    .bind(&a.group_key)
    .bind(cluster)
    .bind(&a.rule)
    .bind(a.labels.get("alertname").cloned().unwrap_or_default())
    .bind(a.labels.get("severity").cloned().unwrap_or_default())
    .bind(a.labels.get("member").cloned())
    .bind(serde_json::to_string(&a.labels).unwrap_or_default())
    .bind(&a.summary)
    .bind(a.value)
    .bind(state_str(a.state))
    .bind(a.active_since_ms)
    .bind(a.starts_at_ms)
    .bind(a.ends_at_ms)
    .bind(a.suppressed.clone())
    .bind(a.runbook_url.clone())
    .execute(&mut **tx)
    .await
    .map_err(db("insert alert"))?;
    Ok(())
}

async fn insert_dispatch(
    tx: &mut Tx,
    g: &GroupState,
    n: &Notification,
    channels: &[String],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO alert_groups (group_key, cluster, rule, notified_firing, last_notified_ms, notified)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (group_key) DO UPDATE SET notified_firing = $4, last_notified_ms = $5, notified = $6,
           acked_at_ms = CASE WHEN $4 = 0 THEN NULL ELSE alert_groups.acked_at_ms END,
           acked_by = CASE WHEN $4 = 0 THEN NULL ELSE alert_groups.acked_by END,
           ack_comment = CASE WHEN $4 = 0 THEN NULL ELSE alert_groups.ack_comment END",
    )
    .bind(&g.group_key)
    .bind(&g.cluster)
    .bind(&g.rule)
    .bind(g.notified_firing as i64)
    .bind(g.last_notified_ms)
    .bind(serde_json::to_string(&g.notified).unwrap_or_default())
    .execute(&mut **tx)
    .await
    .map_err(db("save alert group"))?;
    let payload = serde_json::to_string(n).unwrap_or_default();
    for c in channels {
        sqlx::query(
            "INSERT INTO alert_outbox (notification_id, group_key, channel, status, attempts, next_attempt_ms, created_ms, payload)
             VALUES ($1, $2, $3, 'pending', 0, $4, $4, $5)",
        )
        .bind(&n.id)
        .bind(&n.group_key)
        .bind(c)
        .bind(n.at_ms)
        .bind(&payload)
        .execute(&mut **tx)
        .await
        .map_err(db("queue notification"))?;
    }
    Ok(())
}

impl Store {
    /// Firing alerts and notification groups of `cluster`, to resume after a restart.
    pub async fn load_alert_state(
        &self,
        cluster: &str,
    ) -> Result<(Vec<Alert>, Vec<GroupState>), StoreError> {
        let alerts = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE cluster = $1 AND state = 'firing' ORDER BY id"
        )))
        .bind(cluster)
        .fetch_all(&self.read)
        .await
        .map_err(db("read firing alerts"))?
        .iter()
        .map(alert_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(db("decode alert"))?;
        let groups = sqlx::query("SELECT * FROM alert_groups WHERE cluster = $1")
            .bind(cluster)
            .fetch_all(&self.read)
            .await
            .map_err(db("read alert groups"))?
            .iter()
            .map(|r| group_row(r).map(|g| g.state))
            .collect::<Result<Vec<_>, _>>()
            .map_err(db("decode alert group"))?;
        Ok((alerts, groups))
    }

    /// Records one step of an alert engine in one transaction: alerts that
    /// fired, resolved or changed suppression, and each notification with
    /// its group's new state and one outbox row per channel (a resolved
    /// group loses its acknowledgement). All or nothing.
    ///
    /// With `fence` (replicas, `ha.*`), the step is refused with
    /// [`StoreError::Fenced`] when a newer owner of the cluster wrote.
    pub async fn record_alert_effects(
        &self,
        effects: &[Effect],
        fence: Option<&super::Fence>,
    ) -> Result<(), StoreError> {
        self.guarded(async move {
            let mut tx = self.writer().begin().await.map_err(db("begin alert step"))?;
            if let Some(f) = fence {
                super::ha::pass_fence(&mut tx, f, crate::time::now_ms()).await?;
            }
            for e in effects {
                match e {
                    Effect::Fired(a) => insert_alert(&mut tx, a).await?,
                    Effect::Resolved(a) => {
                        sqlx::query(
                            "UPDATE alerts SET state = 'resolved', ends_at_ms = $1, summary = $2, value = $3
                             WHERE fingerprint = $4 AND state = 'firing'",
                        )
                        .bind(a.ends_at_ms)
                        .bind(&a.summary)
                        .bind(a.value)
                        .bind(&a.fingerprint)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("resolve alert"))?;
                    }
                    Effect::Suppressed(a) => {
                        sqlx::query(
                            "UPDATE alerts SET suppressed = $1 WHERE fingerprint = $2 AND state = 'firing'",
                        )
                        .bind(a.suppressed.clone())
                        .bind(&a.fingerprint)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("update alert suppression"))?;
                    }
                    Effect::Notify {
                        group,
                        notification,
                        channels,
                    } => insert_dispatch(&mut tx, group, notification, channels).await?,
                }
            }
            tx.commit().await.map_err(db("commit alert step"))
        })
        .await
    }

    /// The groups acknowledged now (repeats stop until they resolve).
    pub async fn acked_groups(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        sqlx::query("SELECT group_key FROM alert_groups WHERE acked_at_ms IS NOT NULL")
            .fetch_all(&self.read)
            .await
            .map_err(db("read acknowledgements"))?
            .iter()
            .map(|r| r.try_get::<String, _>("group_key"))
            .collect::<Result<_, _>>()
            .map_err(db("read acknowledgements"))
    }

    /// Acknowledges a firing group (`cluster/rule`): no more repeats until
    /// it resolves. Returns false when no such group is firing.
    pub async fn ack_group(
        &self,
        group_key: &str,
        by: &str,
        comment: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.guarded(async move {
            let n = sqlx::query(
                "UPDATE alert_groups SET acked_at_ms = $1, acked_by = $2, ack_comment = $3
             WHERE group_key = $4 AND notified_firing = 1",
            )
            .bind(at_ms)
            .bind(by)
            .bind(comment)
            .bind(group_key)
            .execute(&self.writer())
            .await
            .map_err(db("acknowledge alert group"))?
            .rows_affected();
            Ok(n > 0)
        })
        .await
    }

    /// Notification groups (firing or not), with their acknowledgement.
    pub async fn alert_groups(&self) -> Result<Vec<AlertGroupRow>, StoreError> {
        sqlx::query("SELECT * FROM alert_groups ORDER BY group_key")
            .fetch_all(&self.read)
            .await
            .map_err(db("read alert groups"))?
            .iter()
            .map(group_row)
            .collect::<Result<_, _>>()
            .map_err(db("decode alert group"))
    }

    /// Firing alerts (of `cluster`, or all), oldest first.
    pub async fn active_alerts(&self, cluster: Option<&str>) -> Result<Vec<Alert>, StoreError> {
        self.alert_history(cluster, Some("firing"), 0, i64::MAX, 10_000)
            .await
    }

    /// Alerts that started firing in `[from_ms, to_ms]` (of `cluster`, in
    /// `state` `firing`/`resolved`, or all), newest first, at most `limit`.
    pub async fn alert_history(
        &self,
        cluster: Option<&str>,
        state: Option<&str>,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<Alert>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE ($1 = '' OR cluster = $1) AND ($2 = '' OR state = $2)
             AND starts_at_ms >= $3 AND starts_at_ms <= $4 ORDER BY starts_at_ms DESC, id DESC LIMIT $5"
        )))
        .bind(cluster.unwrap_or(""))
        .bind(state.unwrap_or(""))
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(db("read alert history"))?
        .iter()
        .map(alert_row)
        .collect::<Result<_, _>>()
        .map_err(db("decode alert"))
    }

    /// Pending outbox rows of `channel`, in delivery order.
    pub async fn outbox_pending(&self, channel: &str) -> Result<Vec<OutboxRow>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {OUTBOX_COLUMNS} FROM alert_outbox WHERE channel = $1 AND status = 'pending' ORDER BY id LIMIT 1000"
        )))
        .bind(channel)
        .fetch_all(&self.read)
        .await
        .map_err(db("read outbox"))?
        .iter()
        .map(outbox_row)
        .collect::<Result<_, _>>()
        .map_err(db("decode outbox row"))
    }

    /// Delivery records (of one group, or all), newest first.
    pub async fn deliveries(
        &self,
        group_key: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {OUTBOX_COLUMNS} FROM alert_outbox WHERE ($1 = '' OR group_key = $1) ORDER BY id DESC LIMIT $2"
        )))
        .bind(group_key.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(db("read deliveries"))?
        .iter()
        .map(outbox_row)
        .collect::<Result<_, _>>()
        .map_err(db("decode outbox row"))
    }

    /// Claims the next notification of `channel` due at `now_ms` for
    /// `replica` until `until_ms`: the oldest pending row of a group whose
    /// earlier rows are all delivered or given up (a group's notifications
    /// go out in order), not claimed by another replica whose claim still
    /// runs. On PostgreSQL the row is picked `FOR UPDATE SKIP LOCKED`, so
    /// replicas draining the same outbox never take the same row.
    pub async fn outbox_claim(
        &self,
        channel: &str,
        replica: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<OutboxRow>, StoreError> {
        let lock = match self.backend {
            super::Backend::Postgres => "FOR UPDATE OF o SKIP LOCKED",
            // One writer: the UPDATE is atomic by itself.
            super::Backend::Sqlite => "",
        };
        self.guarded(async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE alert_outbox SET claimed_by = $1, claimed_until = $2
                 WHERE id IN (SELECT o.id FROM alert_outbox o
                   WHERE o.channel = $3 AND o.status = 'pending' AND o.next_attempt_ms <= $4
                     AND (o.claimed_until IS NULL OR o.claimed_until < $4)
                     AND NOT EXISTS (SELECT 1 FROM alert_outbox p WHERE p.channel = o.channel
                       AND p.group_key = o.group_key AND p.status = 'pending' AND p.id < o.id)
                   ORDER BY o.id LIMIT 1 {lock})
                 RETURNING {OUTBOX_COLUMNS}"
            )))
            .bind(replica)
            .bind(until_ms)
            .bind(channel)
            .bind(now_ms)
            .fetch_optional(&self.writer())
            .await
            .map_err(db("claim notification"))?
            .map(|r| outbox_row(&r))
            .transpose()
            .map_err(db("decode outbox row"))
        })
        .await
    }

    /// When the next pending notification of `channel` is due (ms since
    /// epoch): the earliest head of a group, or its claim's end.
    pub async fn outbox_next_due(&self, channel: &str) -> Result<Option<i64>, StoreError> {
        let r = sqlx::query(
            "SELECT MIN(CASE WHEN claimed_until IS NOT NULL AND claimed_until > next_attempt_ms
                     THEN claimed_until ELSE next_attempt_ms END) AS due
             FROM alert_outbox o WHERE o.channel = $1 AND o.status = 'pending'
               AND NOT EXISTS (SELECT 1 FROM alert_outbox p WHERE p.channel = o.channel
                 AND p.group_key = o.group_key AND p.status = 'pending' AND p.id < o.id)",
        )
        .bind(channel)
        .fetch_one(&self.writer())
        .await
        .map_err(db("read outbox"))?;
        r.try_get::<Option<i64>, _>("due")
            .map_err(db("read outbox"))
    }

    /// Marks a notification delivered (and its claim done). Returns false
    /// when `replica`'s claim had run out and another replica claimed it.
    pub async fn outbox_sent(
        &self,
        id: i64,
        replica: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.guarded(async move {
            let n = sqlx::query(
                "UPDATE alert_outbox SET status = 'sent', sent_ms = $1, attempts = attempts + 1, claimed_until = NULL
                 WHERE id = $2 AND (claimed_by IS NULL OR claimed_by = $3)",
            )
            .bind(at_ms)
            .bind(id)
            .bind(replica)
            .execute(&self.writer())
            .await
            .map_err(db("mark notification sent"))?
            .rows_affected();
            Ok(n == 1)
        })
        .await
    }

    /// Records a failed attempt and when to try again (and ends the claim).
    pub async fn outbox_retry(
        &self,
        id: i64,
        attempts: i64,
        next_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        self.guarded(async move {
        sqlx::query("UPDATE alert_outbox SET attempts = $1, next_attempt_ms = $2, last_error = $3, claimed_until = NULL WHERE id = $4")
            .bind(attempts)
            .bind(next_ms)
            .bind(error)
            .bind(id)
            .execute(&self.writer())
            .await
            .map_err(db("record delivery attempt"))?;
        Ok(())
    })
        .await
    }

    /// Gives up on a notification.
    pub async fn outbox_failed(&self, id: i64, error: &str) -> Result<(), StoreError> {
        self.guarded(async move {
            sqlx::query("UPDATE alert_outbox SET status = 'failed', last_error = $1, claimed_until = NULL WHERE id = $2")
                .bind(error)
                .bind(id)
                .execute(&self.writer())
                .await
                .map_err(db("record failed delivery"))?;
            Ok(())
        })
        .await
    }

    /// Deletes alerts resolved, deliveries finished (sent or failed) and
    /// silences ended before `older_than_ms`, and "never-ending" silences
    /// (over a year long) that started before it; firing alerts and pending
    /// deliveries stay. Returns the rows removed.
    pub async fn enforce_alert_retention(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        let mut removed = 0;
        for sql in [
            "DELETE FROM alerts WHERE state = 'resolved' AND ends_at_ms < $1",
            "DELETE FROM alert_outbox WHERE status <> 'pending' AND created_ms < $1",
            "DELETE FROM silences WHERE ends_at_ms < $1",
            "DELETE FROM silences WHERE starts_at_ms < $1 AND ends_at_ms - starts_at_ms > 31536000000",
        ] {
            removed += sqlx::query(sql)
                .bind(older_than_ms)
                .execute(&self.writer())
                .await
                .map_err(db("enforce alert retention"))?
                .rows_affected();
        }
        Ok(removed)
    }

    /// Stores a silence.
    pub async fn insert_silence(&self, s: &Silence) -> Result<(), StoreError> {
        self.guarded(async move {
            sqlx::query(
                "INSERT INTO silences (id, matchers, starts_at_ms, ends_at_ms, comment, created_by)
             VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&s.id)
            .bind(serde_json::to_string(&s.matchers).unwrap_or_default())
            .bind(s.starts_at_ms)
            .bind(s.ends_at_ms)
            .bind(&s.comment)
            .bind(&s.created_by)
            .execute(&self.writer())
            .await
            .map_err(db("insert silence"))?;
            Ok(())
        })
        .await
    }

    /// Stored silences, expired ones included.
    pub async fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        sqlx::query("SELECT id, matchers, starts_at_ms, ends_at_ms, comment, created_by FROM silences ORDER BY starts_at_ms")
            .fetch_all(&self.read)
            .await
            .map_err(db("read silences"))?
            .iter()
            .map(silence_row)
            .collect::<Result<_, _>>()
            .map_err(db("decode silence"))
    }

    /// Deletes a stored silence; false when there was none with `id`.
    pub async fn delete_silence(&self, id: &str) -> Result<bool, StoreError> {
        self.guarded(async move {
            let n = sqlx::query("DELETE FROM silences WHERE id = $1")
                .bind(id)
                .execute(&self.writer())
                .await
                .map_err(db("delete silence"))?
                .rows_affected();
            Ok(n > 0)
        })
        .await
    }
}
