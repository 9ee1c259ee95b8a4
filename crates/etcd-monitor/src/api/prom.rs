//! `GET /metrics`: the monitor's view in Prometheus text format, prefix
//! `etcd_monitor_`, labels `cluster` and `member`, plus the process's own
//! `process_*` metrics.
//!
//! Why not the `prometheus-client` crate: every figure here is read at
//! scrape time from the latest snapshots, for label sets that come and go
//! with clusters and members. That crate is built around metric handles
//! registered once and updated as events happen; here it would be a
//! registry rebuilt on every scrape only to use its encoder, and its encoder
//! writes OpenMetrics (`# EOF`, `_total` added to counter names, another
//! content type), which would rename series that dashboards and the
//! Prometheus rules already query. The text format needs only HELP/TYPE
//! lines, label escaping and number formatting (`render_labels`,
//! `number`), and `promtool check metrics` validates the whole page in the
//! API test.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use crate::health::{Severity, Verdict};

struct Family {
    name: &'static str,
    help: String,
    kind: &'static str,
    lines: Vec<String>,
}

#[derive(Default)]
struct Page {
    families: Vec<Family>,
}

impl Page {
    fn family(&mut self, name: &'static str, kind: &'static str, help: &str) -> &mut Family {
        if let Some(i) = self.families.iter().position(|f| f.name == name) {
            return &mut self.families[i];
        }
        self.families.push(Family {
            name,
            help: help.to_string(),
            kind,
            lines: Vec::new(),
        });
        self.families.last_mut().expect("just pushed")
    }

    fn sample(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let line = format!("{name}{} {}", render_labels(labels), number(value));
        self.family(name, kind, help).lines.push(line);
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
            for l in &f.lines {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

/// The handler.
pub async fn metrics(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
) -> impl IntoResponse {
    // A caller limited to some clusters sees those; public metrics show all.
    let caller = extensions.get::<super::auth::Principal>();
    let visible = |cluster: &str| caller.is_none_or(|p| p.scope.allows(cluster));
    let mut p = Page::default();
    let window = crate::config::duration::format(&state.config.monitoring.metrics_window);
    for name in state.monitor.cluster_names().iter().filter(|n| visible(n)) {
        let Some(c) = state.monitor.cluster(name) else {
            continue;
        };
        let cl = [("cluster", name.as_str())];
        p.sample(
            "etcd_monitor_leader_changes_total",
            "counter",
            "Leader changes this monitor observed since it started.",
            &cl,
            c.leader_changes.load(std::sync::atomic::Ordering::Relaxed) as f64,
        );
        if let Some(check) = c.keyspace_growth.load_full() {
            for (rule, rate, _) in check.judged(1.0) {
                let labels = [("cluster", name.as_str()), ("prefix", rule.prefix.as_str())];
                p.sample(
                    "etcd_monitor_keyspace_prefix_growth_bytes_per_hour",
                    "gauge",
                    "Bytes (keys and values) a prefix of keyspace.growth_rules gained per hour between the two newest scheduled keyspace scans.",
                    &labels,
                    rate,
                );
                p.sample(
                    "etcd_monitor_keyspace_prefix_growth_limit_bytes_per_hour",
                    "gauge",
                    "The prefix's keyspace.growth_rules max_bytes_per_hour.",
                    &labels,
                    rule.max_bytes_per_hour as f64,
                );
            }
        }
        if state.config.maintenance.defrag.is_some() {
            use std::sync::atomic::Ordering::Relaxed;
            let stats = &c.defrag;
            for (i, outcome) in crate::monitor::defrag_autopilot::OUTCOMES
                .iter()
                .enumerate()
            {
                p.sample(
                    "etcd_monitor_defrag_runs_total",
                    "counter",
                    "Defrag autopilot runs by outcome (defragmented, skipped: the rule matched no member, refused: health checks failed, failed).",
                    &[("cluster", name.as_str()), ("outcome", outcome)],
                    stats.runs[i].load(Relaxed) as f64,
                );
            }
            p.sample(
                "etcd_monitor_defrag_members_total",
                "counter",
                "Members the defrag autopilot defragmented.",
                &cl,
                stats.members_defragmented.load(Relaxed) as f64,
            );
            p.sample(
                "etcd_monitor_defrag_reclaimed_bytes_total",
                "counter",
                "Bytes the defrag autopilot gave back (size before - size after, summed over members).",
                &cl,
                stats.reclaimed_bytes.load(Relaxed) as f64,
            );
            p.sample(
                "etcd_monitor_defrag_last_run_timestamp_seconds",
                "gauge",
                "When the defrag autopilot's last run ended (0 before the first).",
                &cl,
                stats.last_run_ms.load(Relaxed) as f64 / 1000.0,
            );
        }
        if !c.backups.is_empty() {
            let health = c.health.borrow().clone();
            p.sample(
                "etcd_monitor_cluster_stopped_on_purpose",
                "gauge",
                "1 while every member of the cluster is in clusters[].paused_members (etcdBackupTooOld stays quiet).",
                &cl,
                f64::from(u8::from(crate::monitor::backups::intentionally_stopped(
                    &c.paused_members,
                    health.as_ref().map(|h| &h.observation),
                ))),
            );
        }
        for b in c.backups.iter().map(|b| b.status()) {
            let labels = [
                ("cluster", name.as_str()),
                ("schedule", b.schedule.as_str()),
            ];
            let from = if b.last_success_ms > 0 {
                b.last_success_ms
            } else {
                b.since_ms
            };
            let now = crate::time::now_ms();
            for (metric, kind, help, value) in [
                (
                    "etcd_monitor_backup_last_success_timestamp_seconds",
                    "gauge",
                    "When the schedule's last successful backup was taken (0: none yet).",
                    b.last_success_ms as f64 / 1000.0,
                ),
                (
                    "etcd_monitor_backup_last_verified_timestamp_seconds",
                    "gauge",
                    "When a backup of the schedule last passed its restore drill (0: never).",
                    b.last_verified_ms as f64 / 1000.0,
                ),
                (
                    "etcd_monitor_backup_size_bytes",
                    "gauge",
                    "Stored size of the schedule's last successful backup.",
                    b.size_bytes as f64,
                ),
                (
                    "etcd_monitor_backup_failures_total",
                    "counter",
                    "Backups of the schedule that failed (restore drills are counted in etcd_monitor_backup_verify_failures_total).",
                    b.failures as f64,
                ),
                (
                    "etcd_monitor_backup_verify_failures_total",
                    "counter",
                    "Restore drills of the schedule's backups that failed.",
                    b.verify_failures as f64,
                ),
                (
                    "etcd_monitor_backup_unverified",
                    "gauge",
                    "1 while the latest restore drill of the schedule failed.",
                    f64::from(u8::from(b.unverified.is_some())),
                ),
                (
                    "etcd_monitor_backup_age_seconds",
                    "gauge",
                    "Seconds since the schedule's last successful backup (since it started, before the first).",
                    (now - from).max(0) as f64 / 1000.0,
                ),
                (
                    "etcd_monitor_backup_interval_seconds",
                    "gauge",
                    "Seconds between two backups of the schedule.",
                    b.interval_ms as f64 / 1000.0,
                ),
            ] {
                p.sample(metric, kind, help, &labels, value);
            }
        }
        let hot = c.hot_writes.report(
            name,
            crate::keyspace::HISTORY_SECS,
            c.hot_writes.metrics_top(),
        );
        if hot.enabled {
            for b in &hot.buckets {
                let labels = [("cluster", name.as_str()), ("prefix", b.prefix.as_str())];
                p.sample(
                    "etcd_monitor_keyspace_hot_writes_per_second",
                    "gauge",
                    "Puts and deletes per second in the last minute, for the keyspace.hot_writes.top busiest prefix buckets only.",
                    &labels,
                    b.writes_per_second,
                );
                p.sample(
                    "etcd_monitor_keyspace_hot_value_bytes_per_second",
                    "gauge",
                    "Value bytes put per second in the last minute, for the same buckets.",
                    &labels,
                    b.value_bytes_per_second,
                );
            }
            p.sample(
                "etcd_monitor_keyspace_hot_events_total",
                "counter",
                "Write events counted by the hot-write watch.",
                &cl,
                hot.events_total as f64,
            );
            p.sample(
                "etcd_monitor_keyspace_hot_skipped_revisions_total",
                "counter",
                "Revisions compacted before the hot-write watch could count them.",
                &cl,
                hot.skipped_revisions as f64,
            );
            p.sample(
                "etcd_monitor_keyspace_hot_watching",
                "gauge",
                "1 while the hot-write watches are open.",
                &cl,
                f64::from(u8::from(hot.watching)),
            );
        }
        if let Some(s) = c.health.borrow().clone() {
            let code = match s.verdict {
                Verdict::Healthy => 0.0,
                Verdict::Degraded => 1.0,
                Verdict::Unavailable => 2.0,
            };
            p.sample(
                "etcd_monitor_cluster_health",
                "gauge",
                "Cluster verdict: 0 healthy, 1 degraded, 2 unavailable.",
                &cl,
                code,
            );
            p.sample(
                "etcd_monitor_cluster_members",
                "gauge",
                "Members in the member list.",
                &cl,
                s.observation.members.len() as f64,
            );
            p.sample(
                "etcd_monitor_cluster_members_up",
                "gauge",
                "Members that answered Status.",
                &cl,
                s.observation
                    .members
                    .iter()
                    .filter(|m| m.reachable())
                    .count() as f64,
            );
            p.sample(
                "etcd_monitor_cluster_quorum",
                "gauge",
                "Voting members needed for quorum.",
                &cl,
                s.quorum as f64,
            );
            p.sample(
                "etcd_monitor_cluster_voting_members_up",
                "gauge",
                "Voting members (not learners) that answered Status.",
                &cl,
                s.observation
                    .members
                    .iter()
                    .filter(|m| !m.is_learner && m.reachable())
                    .count() as f64,
            );
            p.sample(
                "etcd_monitor_cluster_ids",
                "gauge",
                "Distinct cluster IDs behind the member list, the members and the configured endpoints (more than 1: the configuration mixes clusters).",
                &cl,
                s.observation.cluster_ids().len() as f64,
            );
            let stray: Vec<&str> = s
                .observation
                .stray_endpoints()
                .iter()
                .map(|e| e.endpoint.as_str())
                .collect();
            for endpoint in &s.observation.configured_endpoints {
                p.sample(
                    "etcd_monitor_endpoint_not_member",
                    "gauge",
                    "1 if no listed member answers at this configured endpoint.",
                    &[("cluster", name.as_str()), ("endpoint", endpoint.as_str())],
                    if stray.contains(&endpoint.as_str()) {
                        1.0
                    } else {
                        0.0
                    },
                );
            }
            for c in &s.observation.certificates {
                let Some(end) = c.not_after_ms else { continue };
                let member = c.member.as_deref().unwrap_or("");
                p.sample(
                    "etcd_monitor_certificate_expiry_timestamp_seconds",
                    "gauge",
                    "End of validity (notAfter) of a member's serving certificate, the client certificate or a CA, seconds since the epoch.",
                    &[
                        ("cluster", name.as_str()),
                        ("certificate", c.source.describe()),
                        ("location", c.location.as_str()),
                        ("member", member),
                    ],
                    end as f64 / 1e3,
                );
            }
            let unconfigured: Vec<u64> = s
                .observation
                .unconfigured_members()
                .iter()
                .map(|m| m.id)
                .collect();
            p.sample(
                "etcd_monitor_cluster_has_leader",
                "gauge",
                "1 if the members agree on a leader.",
                &cl,
                if s.leader.is_some() { 1.0 } else { 0.0 },
            );
            p.sample(
                "etcd_monitor_health_check_duration_seconds",
                "gauge",
                "Duration of the last health check.",
                &cl,
                s.observation.duration_ms / 1e3,
            );
            for sev in [Severity::Info, Severity::Warning, Severity::Critical] {
                let label = match sev {
                    Severity::Info => "info",
                    Severity::Warning => "warning",
                    Severity::Critical => "critical",
                };
                let n = s.findings.iter().filter(|f| f.severity == sev).count();
                p.sample(
                    "etcd_monitor_findings",
                    "gauge",
                    "Findings of the last health check by severity.",
                    &[("cluster", name), ("severity", label)],
                    n as f64,
                );
            }
            for m in &s.observation.members {
                let label = m.label();
                let ml = [("cluster", name.as_str()), ("member", label.as_str())];
                p.sample(
                    "etcd_monitor_member_up",
                    "gauge",
                    "1 if the member answered Status.",
                    &ml,
                    if m.reachable() { 1.0 } else { 0.0 },
                );
                p.sample(
                    "etcd_monitor_member_configured",
                    "gauge",
                    "1 if a configured endpoint reaches the member.",
                    &ml,
                    if unconfigured.contains(&m.id) {
                        0.0
                    } else {
                        1.0
                    },
                );
                for alarm in ["NOSPACE", "CORRUPT"] {
                    let active = s
                        .observation
                        .alarms
                        .iter()
                        .any(|a| a.member_id == m.id && a.kind == alarm);
                    p.sample(
                        "etcd_monitor_member_alarm_active",
                        "gauge",
                        "1 while the member has raised the alarm.",
                        &[
                            ("cluster", name.as_str()),
                            ("member", label.as_str()),
                            ("alarm", alarm),
                        ],
                        if active { 1.0 } else { 0.0 },
                    );
                }
                if let Some(st) = &m.status {
                    p.sample(
                        "etcd_monitor_member_has_leader",
                        "gauge",
                        "1 if the member's Status names a leader.",
                        &ml,
                        if st.leader != 0 { 1.0 } else { 0.0 },
                    );
                    p.sample(
                        "etcd_monitor_member_is_leader",
                        "gauge",
                        "1 if the member is the leader.",
                        &ml,
                        if st.leader == m.id { 1.0 } else { 0.0 },
                    );
                    p.sample(
                        "etcd_monitor_member_db_size_bytes",
                        "gauge",
                        "Backend database size (allocated).",
                        &ml,
                        st.db_size as f64,
                    );
                    p.sample(
                        "etcd_monitor_member_db_size_in_use_bytes",
                        "gauge",
                        "Backend database size in use.",
                        &ml,
                        st.db_size_in_use as f64,
                    );
                    p.sample(
                        "etcd_monitor_member_raft_term",
                        "gauge",
                        "Raft term.",
                        &ml,
                        st.raft_term as f64,
                    );
                    p.sample(
                        "etcd_monitor_member_raft_index",
                        "gauge",
                        "Raft index.",
                        &ml,
                        st.raft_index as f64,
                    );
                    p.sample(
                        "etcd_monitor_member_raft_applied_index",
                        "gauge",
                        "Raft applied index.",
                        &ml,
                        st.raft_applied_index as f64,
                    );
                }
                if let Some(ms) = m.status_latency_ms {
                    p.sample(
                        "etcd_monitor_member_status_latency_seconds",
                        "gauge",
                        "Latency of the last Status call.",
                        &ml,
                        ms / 1e3,
                    );
                }
                if let Some(x) = &m.metrics {
                    let over = |what: &str| {
                        format!(
                            "{what} over the last {window} (monitoring.metrics_window), from what the member's counters and histogram buckets gained in it."
                        )
                    };
                    let figures = [
                        (
                            "etcd_monitor_member_quota_backend_bytes",
                            "Backend quota.".to_string(),
                            x.quota_backend_bytes,
                        ),
                        (
                            "etcd_monitor_member_wal_fsync_p99_seconds",
                            over("p99 WAL fsync duration"),
                            x.wal_fsync_p99,
                        ),
                        (
                            "etcd_monitor_member_backend_commit_p99_seconds",
                            over("p99 backend commit duration"),
                            x.backend_commit_p99,
                        ),
                        (
                            "etcd_monitor_member_peer_round_trip_p99_seconds",
                            over("p99 peer round-trip time"),
                            x.peer_round_trip_p99,
                        ),
                        (
                            "etcd_monitor_member_grpc_unary_p99_seconds",
                            over(
                                "p99 unary gRPC handling time (Defragment excluded; members with --metrics extensive)",
                            ),
                            x.grpc_unary_p99,
                        ),
                        (
                            "etcd_monitor_member_grpc_requests_per_second",
                            over("gRPC requests handled per second"),
                            x.grpc_requests_rate,
                        ),
                        (
                            "etcd_monitor_member_grpc_failed_ratio",
                            over("Share (0-1) of gRPC requests that failed (not Canceled)"),
                            x.grpc_failed_percent.map(|p| p / 100.0),
                        ),
                        (
                            "etcd_monitor_member_proposals_failed_per_second",
                            over("Failed proposals per second"),
                            x.proposals_failed_rate,
                        ),
                        (
                            "etcd_monitor_member_peer_sent_failures_per_second",
                            over("Failed sends to peers per second"),
                            x.peer_sent_failures_rate,
                        ),
                        (
                            "etcd_monitor_member_proposals_pending",
                            "Proposals pending.".to_string(),
                            x.proposals_pending,
                        ),
                        (
                            "etcd_monitor_member_proposals_committed_per_second",
                            over("Proposals committed per second"),
                            x.proposals_committed_rate,
                        ),
                        (
                            "etcd_monitor_member_proposals_applied_per_second",
                            over("Proposals applied per second"),
                            x.proposals_applied_rate,
                        ),
                        (
                            "etcd_monitor_member_watch_streams",
                            "Watch streams open (gRPC Watch streams started minus finished)."
                                .to_string(),
                            x.watch_streams,
                        ),
                        (
                            "etcd_monitor_member_lease_streams",
                            "Lease keep-alive streams open.".to_string(),
                            x.lease_streams,
                        ),
                        (
                            "etcd_monitor_member_watchers",
                            "Watchers (etcd_debugging_mvcc_watcher_total).".to_string(),
                            x.watchers,
                        ),
                        (
                            "etcd_monitor_member_slow_watchers",
                            "Watchers behind the store (etcd_debugging_mvcc_slow_watcher_total)."
                                .to_string(),
                            x.slow_watchers,
                        ),
                        (
                            "etcd_monitor_member_pending_events",
                            "Events waiting to be sent to watchers.".to_string(),
                            x.pending_events,
                        ),
                        (
                            "etcd_monitor_member_compact_revision",
                            "Revision of the last compaction.".to_string(),
                            x.compact_revision,
                        ),
                        (
                            "etcd_monitor_member_compaction_lag_revisions",
                            "Revisions kept since the last compaction (current minus compact revision)."
                                .to_string(),
                            x.compaction_lag,
                        ),
                        (
                            "etcd_monitor_member_resident_memory_bytes",
                            "Resident memory of the member's process.".to_string(),
                            x.resident_memory_bytes,
                        ),
                        (
                            "etcd_monitor_member_cpu_cores",
                            over("CPU of the member's process, in cores,"),
                            x.cpu_cores,
                        ),
                        (
                            "etcd_monitor_member_client_received_bytes_per_second",
                            over("Bytes per second received from clients"),
                            x.client_received_bytes_rate,
                        ),
                        (
                            "etcd_monitor_member_client_sent_bytes_per_second",
                            over("Bytes per second sent to clients"),
                            x.client_sent_bytes_rate,
                        ),
                        (
                            "etcd_monitor_member_peer_received_bytes_per_second",
                            over("Bytes per second received from peers"),
                            x.peer_received_bytes_rate,
                        ),
                        (
                            "etcd_monitor_member_peer_sent_bytes_per_second",
                            over("Bytes per second sent to peers"),
                            x.peer_sent_bytes_rate,
                        ),
                        (
                            "etcd_monitor_member_leases_granted_per_second",
                            over("Leases granted per second"),
                            x.leases_granted_rate,
                        ),
                        (
                            "etcd_monitor_member_leases_revoked_per_second",
                            over("Leases revoked or expired per second"),
                            x.leases_revoked_rate,
                        ),
                        (
                            "etcd_monitor_member_leader_changes_per_day",
                            "Leader changes the member saw over the last 24 hours (or since the monitor started watching it, if less)."
                                .to_string(),
                            x.leader_changes_per_day,
                        ),
                    ];
                    for (metric, help, value) in figures {
                        if let Some(v) = value {
                            p.sample(metric, "gauge", &help, &ml, v);
                        }
                    }
                    for (method, rates) in &x.grpc_methods {
                        let labels = [
                            ("cluster", name.as_str()),
                            ("member", label.as_str()),
                            ("method", method.as_str()),
                        ];
                        p.sample(
                            "etcd_monitor_member_grpc_method_requests_per_second",
                            "gauge",
                            &over("gRPC requests handled per second, by method,"),
                            &labels,
                            rates.requests_per_second,
                        );
                        p.sample(
                            "etcd_monitor_member_grpc_method_failed_per_second",
                            "gauge",
                            &over("Failed gRPC requests (not Canceled) per second, by method,"),
                            &labels,
                            rates.failed_per_second,
                        );
                    }
                }
            }
        }
        if let Some(r) = c.metrics.borrow().clone() {
            for (probe, summary) in [
                ("linearizable_get", &r.probes.linearizable_get),
                ("put", &r.probes.put),
                ("serializable_get", &r.probes.serializable_get),
            ] {
                let h = &summary.histogram;
                let fam = "etcd_monitor_probe_duration_seconds";
                let help = "Latency of the monitor's active probes.";
                for (bound, count) in h.bounds_ms.iter().zip(&h.cumulative_counts) {
                    let le = number(bound / 1e3);
                    let labels = [
                        ("cluster", name.as_str()),
                        ("probe", probe),
                        ("le", le.as_str()),
                    ];
                    p.sample_in(fam, "histogram", help, "_bucket", &labels, *count as f64);
                }
                let base = [("cluster", name.as_str()), ("probe", probe)];
                let inf = [("cluster", name.as_str()), ("probe", probe), ("le", "+Inf")];
                p.sample_in(fam, "histogram", help, "_bucket", &inf, h.count as f64);
                p.sample_in(fam, "histogram", help, "_sum", &base, h.sum_ms / 1e3);
                p.sample_in(fam, "histogram", help, "_count", &base, h.count as f64);
                p.sample(
                    "etcd_monitor_probe_errors_total",
                    "counter",
                    "Failed probe requests.",
                    &base,
                    summary.errors_total as f64,
                );
            }
            if let Some(n) = r.leases {
                p.sample(
                    "etcd_monitor_cluster_leases",
                    "gauge",
                    "Leases the cluster holds (LeaseLeases in the last metrics round).",
                    &[("cluster", name)],
                    n as f64,
                );
            }
            if let Some(rate) = r.revision_rate {
                p.sample(
                    "etcd_monitor_revision_rate",
                    "gauge",
                    "Revisions per second between the last two metrics rounds.",
                    &[("cluster", name)],
                    rate,
                );
            }
        }
    }
    firing_alerts(&mut p, &state, &visible).await;
    process_metrics(&mut p, &state);
    use std::sync::atomic::Ordering::Relaxed;
    for (name, help, value) in [
        (
            "etcd_monitor_store_errors_total",
            "Errors of the history store (reads and writes).",
            crate::store::ERRORS.load(Relaxed),
        ),
        (
            "etcd_monitor_notifications_undurable_total",
            "Notifications delivered directly because the outbox could not be written.",
            crate::alert::deliver::UNDURABLE.load(Relaxed),
        ),
        (
            "etcd_monitor_notification_panics_total",
            "Panics caught while a channel sent a notification (retried).",
            crate::alert::deliver::PANICS.load(Relaxed),
        ),
        (
            "etcd_monitor_ha_fenced_writes_total",
            "Writes of this replica the store refused because a newer owner of the cluster had written (ha).",
            crate::store::ha::FENCED.load(Relaxed),
        ),
        (
            "etcd_monitor_ha_handovers_total",
            "Clusters this replica took over or gave up (ha).",
            state.monitor.replicas().handovers(),
        ),
    ] {
        p.sample(name, "counter", help, &[], value as f64);
    }
    let replicas = state.monitor.replicas();
    p.sample(
        "etcd_monitor_owned_clusters",
        "gauge",
        "Clusters this replica owns now: collects, evaluates and alerts for (all of them without ha).",
        &[("replica", replicas.name.as_str())],
        replicas.owned().len() as f64,
    );
    p.sample(
        "etcd_monitor_replica_is_member",
        "gauge",
        "1 while this replica is registered with a live session in the coordination cluster (always 1 without ha).",
        &[("replica", replicas.name.as_str())],
        f64::from(u8::from(replicas.is_member())),
    );
    p.sample(
        "etcd_monitor_store_writable",
        "gauge",
        "1 while the history store takes writes, 0 while they fail.",
        &[],
        if state.monitor.store().write_failure().is_some() {
            0.0
        } else {
            1.0
        },
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        p.render(),
    )
}

impl Page {
    /// A sample of family `family` named `family` + `suffix` (histograms).
    fn sample_in(
        &mut self,
        family: &'static str,
        kind: &'static str,
        help: &'static str,
        suffix: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let line = format!(
            "{family}{suffix}{} {}",
            render_labels(labels),
            number(value)
        );
        self.family(family, kind, help).lines.push(line);
    }
}

async fn firing_alerts(p: &mut Page, state: &AppState, visible: &(dyn Fn(&str) -> bool + Sync)) {
    let mut cache = state.firing_cache.lock().await;
    if cache
        .taken
        .is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(2))
    {
        if let Ok(alerts) = state.monitor.store().active_alerts(None).await {
            cache.counts.clear();
            for a in alerts {
                let get = |k: &str| a.labels.get(k).cloned().unwrap_or_default();
                *cache
                    .counts
                    .entry((get("cluster"), get("alertname"), get("severity")))
                    .or_insert(0) += 1;
            }
            cache.taken = Some(std::time::Instant::now());
        }
    }
    for name in state.monitor.cluster_names().iter().filter(|n| visible(n)) {
        // Always present per cluster, so "no alert" is 0 rather than absent.
        let total: u64 = cache
            .counts
            .iter()
            .filter(|((c, _, _), _)| c == name)
            .map(|(_, n)| n)
            .sum();
        p.sample(
            "etcd_monitor_cluster_alerts_firing",
            "gauge",
            "Firing alerts of the cluster.",
            &[("cluster", name)],
            total as f64,
        );
    }
    for ((cluster, alertname, severity), n) in
        cache.counts.iter().filter(|((c, _, _), _)| visible(c))
    {
        p.sample(
            "etcd_monitor_alerts_firing",
            "gauge",
            "Firing alerts by rule and severity.",
            &[
                ("cluster", cluster),
                ("alertname", alertname),
                ("severity", severity),
            ],
            *n as f64,
        );
    }
}

fn process_metrics(p: &mut Page, state: &AppState) {
    let start = state
        .started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    p.sample(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch in seconds.",
        &[],
        start,
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
    };
    if let Some(rss) = kib("VmRSS:") {
        p.sample(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            &[],
            rss * 1024.0,
        );
    }
    if let Some(vm) = kib("VmSize:") {
        p.sample(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            &[],
            vm * 1024.0,
        );
    }
    if let Some(cpu) = crate::metrics::process_cpu_seconds() {
        p.sample(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            &[],
            cpu,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        p.sample(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            &[],
            fds.count() as f64,
        );
    }
}
