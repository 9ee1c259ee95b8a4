//! Delivery: one worker per channel drains that channel's rows of the
//! durable outbox in order. A failed attempt is retried with exponential
//! backoff and jitter; a group's later notifications wait for its earlier
//! ones (a resolved message never overtakes its firing one). A row is marked
//! sent as soon as the receiver accepted it, so a restart resumes only what
//! is still pending.
//!
//! Delivery is at least once: a crash between the receiver's answer and the
//! store update resends that one notification. Every message carries the
//! notification id (and PagerDuty a stable `dedup_key`) for receivers that
//! de-duplicate.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::channels::Sender;
use super::config::ChannelConfig;
use crate::store::{Store, unix_ms};

/// Longest sleep between looks at the outbox when nothing wakes the worker.
const IDLE: Duration = Duration::from_secs(5);

pub(crate) struct Worker {
    pub channel: ChannelConfig,
    pub store: Store,
    pub wake: Arc<tokio::sync::Notify>,
    pub token: CancellationToken,
}

/// The delay before retry number `attempts` (1 = first retry): the channel's
/// backoff doubled per attempt, capped, times a jitter factor in [0.8, 1.2).
pub fn backoff(channel: &ChannelConfig, attempts: u32) -> Duration {
    let base = channel
        .retry_backoff
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
        .min(channel.max_backoff);
    base.mul_f64(rand::random_range(0.8..1.2))
}

pub(crate) async fn run(w: Worker) {
    use tracing::Instrument;
    let span = tracing::info_span!("delivery", channel = %w.channel.name);
    async move {
        let sender = match Sender::new(&w.channel) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "channel cannot be set up; its notifications stay queued");
                return;
            }
        };
        loop {
            let notified = w.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_due = drain(&w, &sender).await;
            let now = unix_ms(SystemTime::now());
            let sleep = next_due
                .map(|t| Duration::from_millis((t - now).max(0) as u64))
                .unwrap_or(IDLE)
                .min(IDLE);
            tokio::select! {
                _ = w.token.cancelled() => break,
                _ = notified => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }
    .instrument(span)
    .await
}

/// Sends every due row; returns when the next not-yet-due row is due.
async fn drain(w: &Worker, sender: &Sender) -> Option<i64> {
    let rows = match w.store.outbox_pending(&w.channel.name).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbox");
            return Some(unix_ms(SystemTime::now()) + 1000);
        }
    };
    let mut blocked = BTreeSet::new();
    let mut next_due: Option<i64> = None;
    let due = |t: i64, next: &mut Option<i64>| *next = Some(next.map_or(t, |n| n.min(t)));
    for row in rows {
        if w.token.is_cancelled() {
            return None;
        }
        if blocked.contains(&row.group_key) {
            continue;
        }
        let now = unix_ms(SystemTime::now());
        if row.next_attempt_ms > now {
            blocked.insert(row.group_key.clone());
            due(row.next_attempt_ms, &mut next_due);
            continue;
        }
        if now - row.created_ms > w.channel.give_up_after.as_millis() as i64 {
            tracing::error!(notification = %row.notification.id, attempts = row.attempts, "giving up on a notification");
            if let Err(e) = w
                .store
                .outbox_failed(row.id, "gave up: give_up_after exceeded")
                .await
            {
                tracing::warn!(error = %e, "cannot record a failed delivery");
            }
            continue;
        }
        let result = tokio::select! {
            _ = w.token.cancelled() => return None,
            r = tokio::time::timeout(w.channel.timeout, sender.send(&row.notification)) => r,
        };
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", w.channel.timeout)),
        };
        match result {
            Ok(()) => {
                tracing::info!(notification = %row.notification.id, group = %row.group_key, status = ?row.notification.status, "notification delivered");
                if let Err(e) = w
                    .store
                    .outbox_sent(row.id, unix_ms(SystemTime::now()))
                    .await
                {
                    tracing::warn!(error = %e, "cannot mark a notification sent; it may be sent again");
                }
            }
            Err(err) => {
                let attempts = row.attempts as u32 + 1;
                let retry_at =
                    unix_ms(SystemTime::now()) + backoff(&w.channel, attempts).as_millis() as i64;
                tracing::warn!(notification = %row.notification.id, attempts, error = %err, "delivery failed; will retry");
                if let Err(e) = w
                    .store
                    .outbox_retry(row.id, attempts as i64, retry_at, &err)
                    .await
                {
                    tracing::warn!(error = %e, "cannot record a delivery attempt");
                }
                blocked.insert(row.group_key.clone());
                due(retry_at, &mut next_due);
            }
        }
    }
    next_due
}

#[cfg(test)]
mod tests {
    use super::super::config::ChannelType;
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut c = ChannelConfig::new("x", ChannelType::Console);
        c.retry_backoff = Duration::from_secs(1);
        c.max_backoff = Duration::from_secs(10);
        for (attempt, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 10.0), (30, 10.0)] {
            let d = backoff(&c, attempt).as_secs_f64();
            assert!(d >= base * 0.8 && d < base * 1.2, "attempt {attempt}: {d}");
        }
    }
}
