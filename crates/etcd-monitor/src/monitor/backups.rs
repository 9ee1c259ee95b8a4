//! `backup.schedules`: one task per schedule takes a backup every `every`
//! (or at each `cron` time), proves every `verify_every`th one by a restore
//! drill, then applies retention. The API's "back up now" runs the same
//! steps through [`ScheduleState::run`]; one run per schedule at a time, and
//! never beside another maintenance operation on the cluster (the shared
//! [`MaintenanceGate`]).
//!
//! Each schedule's state (last success, last verification, failures) feeds
//! `/metrics` and the `etcdBackupTooOld` and `etcdBackupUnverified` rules.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::cluster::ClusterObservation;
use crate::config::backup::BackupSchedule;
use crate::config::{ClusterConfig, Config};
use crate::connection::Dialer;
use crate::lifecycle::Lifecycle;
use crate::ops::backup::{self, MANIFEST_SUFFIX, Manifest, SaveOptions, Target};
use crate::ops::gate::MaintenanceGate;
use crate::store::{BackupRecord, Store};

use super::Monitor;

/// What one schedule has done, for `/metrics`, alerts and the API.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct BackupStatus {
    /// The schedule.
    pub schedule: String,
    /// Its cluster.
    pub cluster: String,
    /// Its target, for people.
    pub target: String,
    /// The time between two backups, ms (for cron: between the next two).
    pub interval_ms: i64,
    /// When the schedule started (ms since epoch): a backup is due from
    /// then on.
    pub since_ms: i64,
    /// When the last successful backup was taken (0: none yet).
    pub last_success_ms: i64,
    /// When a backup was last proven by a restore drill (0: never).
    pub last_verified_ms: i64,
    /// The stored size of the last successful backup.
    pub size_bytes: u64,
    /// Backups that failed.
    pub failures: u64,
    /// Restore drills that failed.
    pub verify_failures: u64,
    /// Why the last backup failed, while the next has not succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The backup whose latest drill failed, and why (cleared by a drill
    /// that succeeds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unverified: Option<UnverifiedBackup>,
    /// Backups taken since the last drill (drills run every `verify_every`).
    #[serde(skip)]
    pub(crate) since_drill: u32,
}

/// A backup whose restore drill failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnverifiedBackup {
    /// The backup's file name.
    pub name: String,
    /// What failed.
    pub error: String,
}

/// One configured schedule and its state.
#[derive(Debug)]
pub struct ScheduleState {
    /// As configured.
    pub config: BackupSchedule,
    status: Mutex<BackupStatus>,
    running: tokio::sync::Mutex<()>,
}

/// Why a run did not happen.
#[derive(Debug)]
pub enum RunRefused {
    /// A run of this schedule is going on.
    Running,
    /// Another maintenance operation holds the cluster.
    Busy(String),
}

impl ScheduleState {
    /// A schedule not run yet.
    pub fn new(config: &BackupSchedule, cluster: &str) -> ScheduleState {
        let now = crate::time::now_ms();
        ScheduleState {
            status: Mutex::new(BackupStatus {
                schedule: config.name.clone(),
                cluster: cluster.to_string(),
                target: config.target.clone(),
                interval_ms: interval_ms(config, now),
                since_ms: now,
                ..BackupStatus::default()
            }),
            config: config.clone(),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The state now.
    pub fn status(&self) -> BackupStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut BackupStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    /// Takes a backup now (unless one is running or the cluster's
    /// maintenance slot is taken), drills it when due (or when `drill`),
    /// applies retention; records everything. `who` is the audit label.
    pub async fn run(
        self: &Arc<Self>,
        ctx: &BackupContext,
        who: &str,
        drill: bool,
    ) -> Result<BackupRecord, RunRefused> {
        let _running = self.running.try_lock().map_err(|_| RunRefused::Running)?;
        let status = self.status();
        let _gate = ctx
            .gate
            .enter(&status.cluster, "backup", who)
            .map_err(|busy| RunRefused::Busy(busy.to_string()))?;
        Ok(self.run_locked(ctx, who, drill).await)
    }

    /// Takes the last success and the last good drill from the history, so
    /// a restarted monitor still knows how old the newest backup is.
    async fn seed(&self, store: &Store) {
        let records = match store.backups(Some(&self.config.name), 500).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(schedule = %self.config.name, error = %e, "backup history not read; ages count from now");
                return;
            }
        };
        let saved = records.iter().find(|r| r.outcome == "saved");
        let verified = records
            .iter()
            .filter_map(|r| r.verification.as_ref())
            .filter(|v| v.verified)
            .map(|v| v.at_ms + v.duration_ms as i64)
            .max();
        self.update(|s| {
            if let Some(m) = saved.and_then(|r| r.manifest.as_ref()) {
                s.last_success_ms = m.created_ms;
                s.size_bytes = m.size;
            }
            s.last_verified_ms = verified.unwrap_or(0);
        });
    }

    /// Runs the restore drill again on the stored backup `name` (bit rot,
    /// a changed target): the stored record and the schedule's state are
    /// updated as for a new backup's drill.
    pub async fn drill_stored(
        self: &Arc<Self>,
        ctx: &BackupContext,
        name: &str,
    ) -> Result<Result<BackupRecord, String>, RunRefused> {
        let _running = self.running.try_lock().map_err(|_| RunRefused::Running)?;
        let target = match Target::open(&self.config.target, self.config.s3.as_ref()) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if !backup::is_backup_of(&self.config.name, name) {
            return Ok(Err(format!(
                "{name:?} is not a backup of schedule {0} (its names are {0}-YYYYMMDDTHHMMSS.mmmZ.db[.zst])",
                self.config.name
            )));
        }
        let manifest = match backup::read_manifest(&target, name).await {
            Ok(m) => m,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let stored = ctx
            .store
            .backups(Some(&self.config.name), 1000)
            .await
            .ok()
            .and_then(|list| list.into_iter().find(|b| b.name == name));
        let status = self.status();
        let mut record = stored.unwrap_or_else(|| BackupRecord {
            schedule: self.config.name.clone(),
            cluster: status.cluster.clone(),
            target: target.describe(),
            name: name.to_string(),
            at_ms: manifest.created_ms,
            duration_ms: 0,
            outcome: "saved".into(),
            source: "schedule".into(),
            error: None,
            manifest: Some(manifest.clone()),
            verification: None,
        });
        let v = self.drill(ctx, &target, &manifest).await;
        record.verification = Some(v);
        if let Err(e) = ctx.store.update_backup(&record).await {
            tracing::warn!(schedule = %self.config.name, error = %e, "backup verification not recorded");
        }
        Ok(Ok(record))
    }

    /// The restore drill of `manifest`'s backup, counted in the state.
    async fn drill(
        &self,
        ctx: &BackupContext,
        target: &Target,
        manifest: &Manifest,
    ) -> backup::Verification {
        let v = backup::verify(target, manifest, ctx.staging.as_deref()).await;
        self.update(|s| {
            s.since_drill = 0;
            if v.verified {
                s.last_verified_ms = v.at_ms + v.duration_ms as i64;
                s.unverified = None;
            } else {
                s.verify_failures += 1;
                s.unverified = Some(UnverifiedBackup {
                    name: manifest.file.clone(),
                    error: v.error.clone().unwrap_or_default(),
                });
            }
        });
        if v.verified {
            tracing::info!(schedule = %self.config.name, backup = %manifest.file, took_ms = v.duration_ms, "backup verified by a restore drill");
        } else {
            tracing::warn!(schedule = %self.config.name, backup = %manifest.file, error = ?v.error, "backup failed its restore drill");
        }
        v
    }

    async fn run_locked(&self, ctx: &BackupContext, who: &str, drill: bool) -> BackupRecord {
        let status = self.status();
        let started = std::time::Instant::now();
        let mut record = BackupRecord {
            schedule: self.config.name.clone(),
            cluster: status.cluster.clone(),
            target: status.target.clone(),
            name: String::new(),
            at_ms: crate::time::now_ms(),
            duration_ms: 0,
            outcome: "failed".into(),
            source: who.to_string(),
            error: None,
            manifest: None,
            verification: None,
        };
        let target = match Target::open(&self.config.target, self.config.s3.as_ref()) {
            Ok(t) => t,
            Err(e) => return self.failed(ctx, record, e.to_string(), started).await,
        };
        record.target = target.describe();
        let saved = match &ctx.cluster {
            Some(cluster) => self.save(cluster, &target, ctx).await,
            None => Err(format!("no cluster is named {:?}", status.cluster)),
        };
        let manifest = match saved {
            Ok(m) => m,
            Err(e) => return self.failed(ctx, record, e, started).await,
        };
        record.duration_ms = started.elapsed().as_millis() as u64;
        record.outcome = "saved".into();
        record.name = manifest.file.clone();
        record.manifest = Some(manifest.clone());
        self.update(|s| {
            s.last_success_ms = manifest.created_ms;
            s.size_bytes = manifest.size;
            s.last_error = None;
            s.since_drill += 1;
        });
        if let Err(e) = ctx.store.record_backup(&record).await {
            tracing::warn!(schedule = %self.config.name, error = %e, "backup not recorded in the history store");
        }
        let every = self.config.verify_every;
        let due = drill || (every > 0 && self.status().since_drill >= every);
        if due {
            record.verification = Some(self.drill(ctx, &target, &manifest).await);
            if let Err(e) = ctx.store.update_backup(&record).await {
                tracing::warn!(schedule = %self.config.name, error = %e, "backup verification not recorded");
            }
        }
        self.apply_retention(&target, ctx).await;
        record
    }

    async fn save(
        &self,
        cluster: &ClusterConfig,
        target: &Target,
        ctx: &BackupContext,
    ) -> Result<Manifest, String> {
        // A snapshot of a large database streams for longer than a request
        // may take: the stream gets an hour; a member that stops answering
        // is still found by the connection's keep-alive (dial_timeout).
        let mut long = cluster.clone();
        long.request_timeout = long.request_timeout.max(Duration::from_secs(3600));
        let dialer = Dialer::new(&long)
            .map_err(|e| e.to_string())?
            .check_within(cluster.dial_timeout + cluster.request_timeout);
        let urls = crate::connection::endpoints(cluster).map_err(|e| e.to_string())?;
        let mut client = crate::connection::first_voting_member(&dialer, &urls)
            .await
            .map_err(|e| e.to_string())?;
        let opts = SaveOptions {
            schedule: self.config.name.clone(),
            cluster: cluster.name.clone(),
            compression: self.config.compression,
            staging: ctx.staging.clone(),
        };
        backup::save(&mut client, &urls.join(","), target, &opts)
            .await
            .map_err(|e| e.to_string())
    }

    async fn failed(
        &self,
        ctx: &BackupContext,
        mut record: BackupRecord,
        error: String,
        started: std::time::Instant,
    ) -> BackupRecord {
        tracing::warn!(schedule = %self.config.name, error = %error, "backup failed");
        record.duration_ms = started.elapsed().as_millis() as u64;
        record.error = Some(error.clone());
        self.update(|s| {
            s.failures += 1;
            s.last_error = Some(error);
        });
        if let Err(e) = ctx.store.record_backup(&record).await {
            tracing::warn!(schedule = %self.config.name, error = %e, "backup failure not recorded in the history store");
        }
        record
    }

    /// Removes the backups retention lets go, and their manifests (the
    /// manifest last: a file without one is not listed again, so an
    /// interrupted removal is finished by the next run).
    async fn apply_retention(&self, target: &Target, ctx: &BackupContext) {
        let prefix = format!("{}-", self.config.name);
        let names = match target.list(&prefix).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(schedule = %self.config.name, error = %e, "cannot list backups for retention");
                return;
            }
        };
        let mut backups = Vec::new();
        let ours = names
            .iter()
            .filter_map(|n| n.strip_suffix(MANIFEST_SUFFIX))
            .filter(|m| backup::is_backup_of(&self.config.name, m));
        for m in ours {
            match backup::read_manifest(target, m).await {
                Ok(manifest) if manifest.schedule == self.config.name && manifest.file == m => {
                    backups.push((m.to_string(), manifest.created_ms))
                }
                Ok(_) => {
                    tracing::warn!(schedule = %self.config.name, backup = %m, "backup left alone by retention: its manifest names another schedule or file")
                }
                Err(e) => {
                    tracing::warn!(schedule = %self.config.name, error = %e, "backup left alone by retention")
                }
            }
        }
        let gone = backup::retention::plan(&backups, &self.config.retention, crate::time::now_ms());
        let mut removed = Vec::new();
        for name in gone {
            let file = target.delete(&name).await;
            let manifest = match file {
                Ok(()) => target.delete(&format!("{name}{MANIFEST_SUFFIX}")).await,
                Err(e) => Err(e),
            };
            match manifest {
                Ok(()) => {
                    tracing::info!(schedule = %self.config.name, backup = %name, "backup removed by retention");
                    removed.push(name);
                }
                Err(e) => {
                    tracing::warn!(schedule = %self.config.name, backup = %name, error = %e, "backup not removed")
                }
            }
        }
        if !removed.is_empty() {
            if let Err(e) = ctx.store.forget_backups(&self.config.name, &removed).await {
                tracing::warn!(schedule = %self.config.name, error = %e, "removed backups stay in the history store");
            }
        }
    }
}

/// What a run needs besides its schedule.
#[derive(Debug, Clone)]
pub struct BackupContext {
    /// The schedule's cluster (`None`: not configured, a failed run).
    pub cluster: Option<ClusterConfig>,
    /// The history store.
    pub store: Store,
    /// The cluster's maintenance slot.
    pub gate: Arc<MaintenanceGate>,
    /// `backup.staging_dir`.
    pub staging: Option<std::path::PathBuf>,
}

impl BackupContext {
    /// The context of `schedule` under `config`.
    pub fn new(
        config: &Config,
        schedule: &ScheduleState,
        store: &Store,
        gate: &Arc<MaintenanceGate>,
    ) -> BackupContext {
        let name = schedule.config.cluster_name(config);
        BackupContext {
            cluster: config.clusters.iter().find(|c| c.name == name).cloned(),
            store: store.clone(),
            gate: gate.clone(),
            staging: config.backup.staging_dir.clone(),
        }
    }
}

/// The time between two backups of `s`, ms: `every`, or for a cron
/// schedule the gap between its next two times after `now_ms`.
pub fn interval_ms(s: &BackupSchedule, now_ms: i64) -> i64 {
    if let Some(e) = s.every {
        return e.as_millis() as i64;
    }
    let Some(cron) = &s.cron else {
        return 0;
    };
    let first = cron.next_after(now_ms / 1000);
    let second = first.and_then(|t| cron.next_after(t));
    match (first, second) {
        (Some(a), Some(b)) => (b - a) * 1000,
        _ => 86_400_000,
    }
}

/// Whether every member of the cluster is configured as paused
/// (`clusters[].paused_members`, by name, endpoint or client URL): the
/// members listed in `observation`, or the configured endpoints when no
/// member list could be read.
pub fn intentionally_stopped(paused: &[String], observation: Option<&ClusterObservation>) -> bool {
    if paused.is_empty() {
        return false;
    }
    let norm = |u: &str| u.trim_end_matches('/').to_string();
    let listed = |s: &str| paused.iter().any(|p| norm(p) == norm(s));
    let Some(obs) = observation else {
        return false;
    };
    if obs.members.is_empty() {
        return !obs.configured_endpoints.is_empty()
            && obs.configured_endpoints.iter().all(|e| listed(e));
    }
    obs.members
        .iter()
        .all(|m| listed(&m.name) || listed(&m.endpoint) || m.client_urls.iter().any(|u| listed(u)))
}

/// Reads each schedule's last success from the history, then starts one
/// task per schedule.
pub async fn start(
    config: &Config,
    monitor: &Monitor,
    gate: &Arc<MaintenanceGate>,
    lifecycle: &Lifecycle,
) {
    for state in monitor.backup_schedules() {
        let ctx = BackupContext::new(config, &state, monitor.store(), gate);
        state.seed(&ctx.store).await;
        let token = lifecycle.token();
        let ownership = match monitor.cluster(&state.status().cluster) {
            Some(h) => h.ownership.clone(),
            None => continue,
        };
        if monitor.replicas().enabled {
            // A replica that takes the cluster over reads what the previous
            // owner's backups left in the shared history.
            let (state, store, token) = (state.clone(), ctx.store.clone(), lifecycle.token());
            let mut changes = ownership.changes();
            lifecycle.spawn(async move {
                loop {
                    tokio::select! {
                        _ = token.cancelled() => break,
                        r = changes.changed() => if r.is_err() { break },
                    }
                    let owned = matches!(*changes.borrow_and_update(), super::ha::Owner::Held(_));
                    if owned {
                        state.seed(&store).await;
                    }
                }
            });
        }
        lifecycle.spawn(async move {
            remove_stale_parts(&state.config);
            let every = state.config.every;
            let mut tick = every.map(|e| {
                let mut t = tokio::time::interval(e);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            loop {
                let wait = async {
                    match (&mut tick, &state.config.cron) {
                        (Some(t), _) => {
                            t.tick().await;
                        }
                        (None, Some(cron)) => {
                            let now = crate::time::now_ms();
                            let at = cron.next_after(now / 1000).map_or(now + 86_400_000, |s| s * 1000);
                            tokio::time::sleep(Duration::from_millis((at - now).max(0) as u64)).await;
                        }
                        (None, None) => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = wait => {}
                }
                // Replicas: only the cluster's owner takes scheduled backups.
                if !ownership.owned() {
                    continue;
                }
                // Wait (bounded) for another maintenance operation to end.
                let deadline = tokio::time::Instant::now()
                    + Duration::from_millis(state.status().interval_ms.max(1000) as u64);
                loop {
                    // A run that started ends (shutdown waits for it, within
                    // its drain limit): its retention is not left for later.
                    match state.run(&ctx, "schedule", false).await {
                        Ok(_) => break,
                        Err(RunRefused::Running) => break,
                        Err(RunRefused::Busy(why)) => {
                            if tokio::time::Instant::now() > deadline {
                                tracing::warn!(schedule = %state.config.name, %why, "backup skipped: the cluster stayed busy");
                                state.update(|s| {
                                    s.failures += 1;
                                    s.last_error = Some(format!("skipped: {why}"));
                                });
                                break;
                            }
                            tokio::select! {
                                _ = token.cancelled() => return,
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            }
                        }
                    }
                }
            }
        });
    }
}

/// Removes `.part` files a stopped monitor left in a local target.
fn remove_stale_parts(s: &BackupSchedule) {
    if s.target.starts_with("s3://") {
        return;
    }
    let Ok(entries) = std::fs::read_dir(&s.target) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name
            .strip_suffix(".part")
            .map(|n| n.strip_suffix(MANIFEST_SUFFIX).unwrap_or(n))
            .is_some_and(|n| crate::ops::backup::is_backup_of(&s.name, n))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
