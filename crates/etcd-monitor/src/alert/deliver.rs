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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use super::Notification;
use super::channels::Sender;
use crate::config::alerts::ChannelConfig;
use crate::store::{Store, unix_ms};

/// Notifications sent directly because the outbox could not be written
/// (`etcd_monitor_notifications_undurable_total`).
pub static UNDURABLE: AtomicU64 = AtomicU64::new(0);
/// Panics caught in a channel's send (`etcd_monitor_notification_panics_total`).
pub static PANICS: AtomicU64 = AtomicU64::new(0);

/// Sends `n` once through `sender` within the channel's timeout (see
/// [`contained`]).
pub async fn send_once(
    sender: &Sender,
    channel: &ChannelConfig,
    n: &Notification,
) -> Result<(), String> {
    contained(sender.send(n), channel.timeout, &n.id).await
}

/// Runs one send within `timeout`. A panic inside the channel's code is
/// caught, counted and reported as a failure (so it is retried), so one bad
/// notification cannot kill the worker that delivers all the others.
pub async fn contained(
    send: impl std::future::Future<Output = Result<(), String>>,
    timeout: Duration,
    notification: &str,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, std::panic::AssertUnwindSafe(send).catch_unwind()).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => {
            PANICS.fetch_add(1, Ordering::Relaxed);
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown".into());
            tracing::error!(notification, panic = %what, "a channel panicked while sending; will retry");
            Err(format!("the channel panicked: {what}"))
        }
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Delivery that does not go through the store: used when a notification
/// cannot be written to the outbox (disk full, database locked), so an
/// outage is still paged. Best effort: a few attempts, then it is logged as
/// lost.
pub struct DirectDelivery {
    senders: BTreeMap<String, (ChannelConfig, Sender)>,
}

/// Attempts of a direct delivery.
const DIRECT_ATTEMPTS: u32 = 3;

impl DirectDelivery {
    /// Senders for `channels` (those that cannot be set up are left out;
    /// their worker logs why).
    pub fn new(channels: &[ChannelConfig]) -> DirectDelivery {
        let senders = channels
            .iter()
            .filter_map(|c| Some((c.name.clone(), (c.clone(), Sender::new(c).ok()?))))
            .collect();
        DirectDelivery { senders }
    }

    /// Sends `n` to `channels` in the background; counts it as undurable.
    pub fn send(self: &Arc<Self>, n: Notification, channels: Vec<String>) {
        UNDURABLE.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        tokio::spawn(async move {
            for name in channels {
                let Some((channel, sender)) = this.senders.get(&name) else {
                    continue;
                };
                let mut attempt = 1;
                loop {
                    match send_once(sender, channel, &n).await {
                        Ok(()) => {
                            tracing::warn!(channel = %name, notification = %n.id, group = %n.group_key, "notification delivered directly (not recorded: the history store is failing)");
                            break;
                        }
                        Err(e) if attempt < DIRECT_ATTEMPTS => {
                            tracing::warn!(channel = %name, notification = %n.id, attempt, error = %e, "direct delivery failed; retrying");
                            tokio::time::sleep(backoff(channel, attempt)).await;
                            attempt += 1;
                        }
                        Err(e) => {
                            tracing::error!(channel = %name, notification = %n.id, group = %n.group_key, error = %e, "direct delivery failed; this notification is lost");
                            break;
                        }
                    }
                }
            }
        });
    }
}

/// Longest sleep between looks at the outbox when nothing wakes the worker.
const IDLE: Duration = Duration::from_secs(5);

/// Shortest: a row due now that could not be claimed is being claimed by
/// another replica's transaction.
const MIN_SLEEP: Duration = Duration::from_millis(100);

pub(crate) struct Worker {
    pub channel: ChannelConfig,
    /// Claims rows under this name (`ha.replica_name`).
    pub replica: String,
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
                .clamp(MIN_SLEEP, IDLE);
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

/// How much longer than the channel's timeout a claim on a row lasts: a
/// replica frozen mid-send longer than that may see its row sent again by
/// another replica (delivery is at least once).
const CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// Claims and sends due rows one at a time; returns when the next row is due.
async fn drain(w: &Worker, sender: &Sender) -> Option<i64> {
    let retry_soon = || Some(unix_ms(SystemTime::now()) + 1000);
    loop {
        if w.token.is_cancelled() {
            return None;
        }
        let now = unix_ms(SystemTime::now());
        let until = now + (w.channel.timeout + CLAIM_MARGIN).as_millis() as i64;
        let row = match w
            .store
            .outbox_claim(&w.channel.name, &w.replica, now, until)
            .await
        {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox");
                return retry_soon();
            }
        };
        if now - row.created_ms > w.channel.give_up_after.as_millis() as i64 {
            tracing::error!(notification = %row.notification.id, attempts = row.attempts, "giving up on a notification");
            if let Err(e) = w
                .store
                .outbox_failed(row.id, "gave up: give_up_after exceeded")
                .await
            {
                tracing::warn!(error = %e, "cannot record a failed delivery");
                return retry_soon();
            }
            continue;
        }
        let result = tokio::select! {
            _ = w.token.cancelled() => return None,
            r = send_once(sender, &w.channel, &row.notification) => r,
        };
        match result {
            Ok(()) => {
                tracing::info!(notification = %row.notification.id, group = %row.group_key, status = ?row.notification.status, "notification delivered");
                match w
                    .store
                    .outbox_sent(row.id, &w.replica, unix_ms(SystemTime::now()))
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(notification = %row.notification.id, "delivered after this replica's claim ran out; another replica may send it too")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot mark a notification sent; it may be sent again");
                        return retry_soon();
                    }
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
                    return retry_soon();
                }
            }
        }
    }
    match w.store.outbox_next_due(&w.channel.name).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbox");
            retry_soon()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::alerts::ChannelType;

    #[tokio::test]
    async fn a_panicking_send_is_a_failure_not_a_dead_worker() {
        let before = PANICS.load(Ordering::Relaxed);
        let r = contained(
            async { panic!("cut inside a character") },
            Duration::from_secs(1),
            "n1",
        )
        .await;
        assert_eq!(
            r.unwrap_err(),
            "the channel panicked: cut inside a character"
        );
        assert_eq!(PANICS.load(Ordering::Relaxed), before + 1);
        let slow = contained(
            async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            },
            Duration::from_millis(10),
            "n2",
        )
        .await;
        assert!(slow.unwrap_err().starts_with("no answer within"));
        assert_eq!(
            contained(async { Ok(()) }, Duration::from_secs(1), "n3").await,
            Ok(())
        );
    }

    #[test]
    fn summaries_are_cut_on_character_boundaries() {
        let mut s = "€".repeat(600);
        super::super::channels::truncate_chars(&mut s, 1024);
        assert_eq!(s.len(), 1023);
        let mut short = "abc".to_string();
        super::super::channels::truncate_chars(&mut short, 1024);
        assert_eq!(short, "abc");
    }

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
