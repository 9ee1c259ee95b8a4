//! The alert engine of one cluster: the thin async shell around its
//! [`AlertBook`]. After every health check and metrics round (and once a
//! second, for repeats and silence expiry) it gathers the inputs (the latest
//! snapshots, the database size history, the cached silences and
//! acknowledgements), evaluates the rule table, steps the book with the
//! time, and records the step's effects in one store transaction, so a
//! restart neither loses nor repeats a decision.
//!
//! When the store cannot take a step, its notifications are delivered
//! directly (paging never waits for the store) and the step is written once
//! the store recovers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::book::AlertBook;
use super::rules::{Input, Need, RoundCounts, RuleSet};
use super::{AlertInputs, deliver::DirectDelivery};
use crate::config::alerts::AlertsConfig;
use crate::health::Thresholds;
use crate::model::Effect;
use crate::monitor::{ClusterHandle, MetricsRound};
use crate::store::{MetricPoint, Store};

/// How often a group is looked at when nothing new was observed (repeats, silence expiry).
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// How long a new engine (a start, or a replica taking a cluster over)
/// waits for the store to give it the recorded alert state.
const LOAD_PATIENCE: Duration = Duration::from_secs(30);

/// How long one attempt to load the alert state may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the database size history of the growth rule is re-read.
const GROWTH_REFRESH_MS: i64 = 60_000;

/// Steps written while the store was failing are kept up to this many
/// (the oldest dropped with an error: their notifications went out).
const MAX_UNSYNCED: usize = 10_000;

/// One cluster's engine.
pub(crate) struct ClusterEngine {
    book: AlertBook,
    rules: RuleSet,
    thresholds: Thresholds,
    handle: ClusterHandle,
    store: Store,
    inputs: AlertInputs,
    wake: Arc<tokio::sync::Notify>,
    token: CancellationToken,
    direct: Arc<DirectDelivery>,
    /// Effects the store could not take, written before the next step's.
    unsynced: VecDeque<Effect>,
    latest: Option<Arc<MetricsRound>>,
    history: VecDeque<RoundCounts>,
    growth: Option<(i64, Vec<MetricPoint>)>,
    config: AlertsConfig,
    /// The ownership the book was loaded under (replicas): every step is
    /// written under its fence.
    fence: Option<crate::store::Fence>,
    /// A newer owner wrote: nothing more is written until ownership changes.
    fenced_out: bool,
    /// Since when the state taken over waits to be loaded.
    loading: Option<tokio::time::Instant>,
}

/// What a cluster's engine is started with.
pub(crate) struct EngineParts {
    pub config: AlertsConfig,
    pub thresholds: Thresholds,
    pub handle: ClusterHandle,
    pub store: Store,
    pub inputs: AlertInputs,
    pub wake: Arc<tokio::sync::Notify>,
    pub token: CancellationToken,
    pub direct: Arc<DirectDelivery>,
}

impl ClusterEngine {
    pub(crate) fn new(p: EngineParts) -> Self {
        ClusterEngine {
            book: AlertBook::new(&p.handle.name, &p.config),
            rules: RuleSet::from_config(&p.config),
            thresholds: p.thresholds,
            handle: p.handle,
            store: p.store,
            inputs: p.inputs,
            wake: p.wake,
            token: p.token,
            direct: p.direct,
            unsynced: VecDeque::new(),
            latest: None,
            history: VecDeque::new(),
            growth: None,
            config: p.config,
            fence: None,
            fenced_out: false,
            loading: None,
        }
    }

    /// Starts over under `owner`: a fresh book, to be loaded from the store
    /// (what the previous owner recorded) before the next evaluation.
    fn take_over(&mut self, owner: crate::monitor::ha::Owner) {
        self.book = AlertBook::new(&self.handle.name, &self.config);
        self.unsynced.clear();
        self.latest = None;
        self.history.clear();
        self.growth = None;
        self.fenced_out = false;
        self.fence = self.handle.ownership.fence();
        self.loading =
            (owner != crate::monitor::ha::Owner::NotOwned).then(tokio::time::Instant::now);
    }

    /// Loads the state taken over, fencing the previous owner out first:
    /// its step still in flight lands before this read or not at all.
    /// Returns whether the engine may evaluate. While the store fails it
    /// retries, for up to [`LOAD_PATIENCE`]; then it starts without the
    /// previous state (a group already paged may be paged again) rather
    /// than stay silent.
    async fn finish_take_over(&mut self) -> bool {
        let Some(since) = self.loading else {
            return true;
        };
        let loaded = async {
            if let Some(fence) = &self.fence {
                self.store.claim_fence(fence).await?;
            }
            self.store.load_alert_state(&self.handle.name).await
        };
        // Bounded: a hung store must not stop this engine.
        let loaded = tokio::time::timeout(LOAD_TIMEOUT, loaded)
            .await
            .unwrap_or(Err(crate::store::StoreError::Timeout(LOAD_TIMEOUT)));
        match loaded {
            Ok((alerts, groups)) => {
                self.book.restore(alerts, groups);
                self.loading = None;
                true
            }
            Err(e @ crate::store::StoreError::Fenced { .. }) => {
                tracing::error!(error = %e, "a newer owner took this cluster over already");
                self.fenced_out = true;
                self.loading = None;
                false
            }
            Err(e) if since.elapsed() < LOAD_PATIENCE => {
                tracing::warn!(error = %e, "cannot load the alert state yet; not evaluating until it is read");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load the alert state; evaluating without it (a group already notified may be notified again)");
                self.loading = None;
                true
            }
        }
    }

    fn push_round(&mut self) {
        let Some(round) = self.handle.metrics.borrow_and_update().clone() else {
            return;
        };
        if self.latest.as_ref().is_some_and(|r| r.at_ms == round.at_ms) {
            return;
        }
        let window = self.rules.window_of(Need::RoundsOverWindow);
        let keep_from = round.at_ms - window.as_millis() as i64 - 1000;
        self.history
            .push_back(RoundCounts::of(&round, self.history.back()));
        self.latest = Some(round);
        while self.history.len() > 2
            && (self.history.len() > 4000
                || self.history.front().is_some_and(|r| r.at_ms < keep_from))
        {
            self.history.pop_front();
        }
    }

    /// One evaluation: gather, evaluate, step, record.
    pub(crate) async fn evaluate(&mut self) {
        if self.fenced_out || !self.finish_take_over().await {
            return;
        }
        let now = crate::time::now_ms();
        let Some(health) = self.handle.health.borrow().clone() else {
            return;
        };
        self.refresh_growth(now).await;
        let (silences, acked) = self.inputs.current().await;
        let keyspace = self.handle.keyspace_growth.load_full();
        let backups: Vec<_> = self.handle.backups.iter().map(|b| b.status()).collect();
        let stopped_on_purpose = crate::monitor::backups::intentionally_stopped(
            &self.handle.paused_members,
            Some(&health.observation),
        );
        let effects = {
            let input = Input {
                cluster: &self.handle.name,
                now_ms: now,
                health: Some(&health),
                thresholds: &self.thresholds,
                latest: self.latest.as_deref(),
                history: &self.history,
                db_size_history: self.growth.as_ref().map(|(_, p)| p.as_slice()),
                keyspace_growth: keyspace.as_deref(),
                backups: &backups,
                stopped_on_purpose,
            };
            let outcomes = self.rules.evaluate(&input);
            self.book.step(now, &outcomes, &silences, &acked)
        };
        self.record(effects).await;
    }

    async fn refresh_growth(&mut self, now: i64) {
        if !self.rules.needs(Need::DbSizeHistory)
            || self
                .growth
                .as_ref()
                .is_some_and(|(at, _)| now - at < GROWTH_REFRESH_MS)
        {
            return;
        }
        let from = now - self.rules.window_of(Need::DbSizeHistory).as_millis() as i64;
        match self
            .store
            .metric_series(&self.handle.name, "db_total_size_bytes", from, now, 0)
            .await
        {
            Ok(points) => self.growth = Some((now, points)),
            Err(e) => tracing::warn!(error = %e, "cannot read database size history"),
        }
    }

    /// Writes the step's effects (after any the store could not take before)
    /// in one transaction; when that fails, sends its notifications directly
    /// and keeps the effects for the next round.
    async fn record(&mut self, effects: Vec<Effect>) {
        for e in &effects {
            match e {
                Effect::Fired(a) => {
                    tracing::info!(alert = %a.fingerprint, summary = %a.summary, suppressed = ?a.suppressed, "alert firing")
                }
                Effect::Resolved(a) => tracing::info!(alert = %a.fingerprint, "alert resolved"),
                Effect::Suppressed(_) => {}
                Effect::Notify {
                    notification,
                    channels,
                    ..
                } => {
                    tracing::info!(group = %notification.group_key, reason = %notification.reason, channels = %channels.join(","), "notification due")
                }
            }
        }
        if effects.is_empty() && self.unsynced.is_empty() {
            return;
        }
        let had_backlog = !self.unsynced.is_empty();
        let notify = effects.iter().any(|e| matches!(e, Effect::Notify { .. }));
        self.unsynced.extend(effects);
        let batch: Vec<Effect> = self.unsynced.iter().cloned().collect();
        match self
            .store
            .record_alert_effects(&batch, self.fence.as_ref())
            .await
        {
            Ok(()) => {
                if had_backlog {
                    tracing::info!(
                        effects = batch.len(),
                        "alert state written after the store recovered"
                    );
                }
                self.unsynced.clear();
                if notify {
                    self.wake.notify_waiters();
                }
            }
            Err(e @ crate::store::StoreError::Fenced { .. }) => {
                // Another replica owns the cluster now and pages for it:
                // nothing of this step goes out.
                tracing::error!(error = %e, effects = batch.len(), "alert step refused: a newer owner took this cluster over; this replica stops alerting on it");
                self.unsynced.clear();
                self.fenced_out = true;
            }
            Err(e) => {
                // Page anyway; the state is written once the store recovers,
                // without outbox rows for what went out directly.
                for effect in self.unsynced.iter_mut() {
                    if let Effect::Notify {
                        notification,
                        channels,
                        ..
                    } = effect
                    {
                        if channels.is_empty() {
                            continue;
                        }
                        tracing::error!(error = %e, group = %notification.group_key, channels = %channels.join(","), "cannot queue a notification; delivering it directly");
                        self.direct
                            .send(notification.clone(), std::mem::take(channels));
                    }
                }
                while self.unsynced.len() > MAX_UNSYNCED {
                    self.unsynced.pop_front();
                    tracing::error!(
                        "the store has been failing for long: an old alert state change is dropped (its notification went out)"
                    );
                }
            }
        }
    }
}

pub(crate) async fn run(e: ClusterEngine) {
    use tracing::Instrument;
    let span = tracing::info_span!("alerts", cluster = %e.handle.name);
    run_engine(e).instrument(span).await
}

async fn run_engine(mut e: ClusterEngine) {
    let mut ownership = e.handle.ownership.changes();
    let mut owner = *ownership.borrow_and_update();
    let mut ownership_open = true;
    e.take_over(owner);
    let mut health = e.handle.health.clone();
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let metrics_changed = {
            let metrics = &mut e.handle.metrics;
            tokio::select! {
                _ = e.token.cancelled() => break,
                r = health.changed() => {
                    if r.is_err() { break; }
                    health.borrow_and_update();
                    false
                }
                r = metrics.changed() => {
                    if r.is_err() { break; }
                    true
                }
                r = ownership.changed(), if ownership_open => {
                    // Closed: ownership cannot change any more.
                    ownership_open = r.is_ok();
                    false
                }
                _ = tick.tick() => false,
            }
        };
        // Replicas: only the owner evaluates; a new ownership (or a new
        // term of it) starts from what the store holds.
        let now_owner = *ownership.borrow_and_update();
        if now_owner != owner {
            owner = now_owner;
            e.take_over(owner);
        }
        if owner == crate::monitor::ha::Owner::NotOwned {
            continue;
        }
        if metrics_changed {
            e.push_round();
        }
        e.evaluate().await;
    }
}
