//! The rule table's evaluations on synthetic inputs, and the agreement of
//! the health verdict's findings with the alerts for the conditions both judge.

use super::*;
use crate::cluster::{Alarm, ClusterObservation, MemberMetrics, MemberObservation, MemberStatus};
use crate::config::alerts::RuleOverride;
use crate::health::Severity;
use crate::monitor::backups::BackupStatus;
use crate::monitor::{MemberMetricsEntry, ProbeReport};
use std::collections::BTreeSet;

#[test]
fn defaults_follow_the_mixin_and_overrides_apply() {
    let mut cfg = AlertsConfig::default();
    cfg.rules.insert(
        "etcdMembersDown".into(),
        RuleOverride {
            for_: Some(Duration::ZERO),
            ..Default::default()
        },
    );
    let rules = RuleSet::from_config(&cfg);
    assert_eq!(rules.get(Rule::MembersDown).for_, Duration::ZERO);
    assert_eq!(rules.get(Rule::InsufficientMembers).for_, m(3));
    let crit = rules.get(Rule::HighFsyncDurationsCritical);
    assert_eq!(crit.key, "etcdHighFsyncDurations_critical");
    assert_eq!(crit.alertname, "etcdHighFsyncDurations");
    assert_eq!(crit.severity, AlertSeverity::Critical);
    assert_eq!(crit.threshold, 1.0);
    assert_eq!(rules.all().len(), Rule::ALL.len());
}

#[test]
fn keys_name_their_rule_and_runbooks_exist() {
    let docs = include_str!("../../../../../docs/alerting.md");
    for r in Rule::ALL {
        assert_eq!(Rule::from_key(r.key()), Some(r));
        let d = r.def();
        assert!(d.key.starts_with(d.alertname), "{}", d.key);
        assert!(
            docs.contains(&format!("<a id=\"{}\"></a>", d.runbook)),
            "docs/alerting.md has no anchor {} for {}",
            d.runbook,
            d.key
        );
    }
    let runbooks = include_str!("../../../../../docs/runbooks.md");
    for r in Rule::ALL {
        let anchor = r.def().runbook;
        assert!(
            runbooks.contains(&format!("<a id=\"{anchor}\"></a>")),
            "docs/runbooks.md has no section {anchor} for {}",
            r.key()
        );
    }
    // Every finding the health check can report has its section too (the
    // dashboard links `/runbooks#finding-<kind>`): the kinds are read from
    // the `finding("kind", ...)` calls of the health module.
    let health = include_str!("../../health/mod.rs");
    let kinds: BTreeSet<&str> = health
        .split("finding(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"'))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(kinds.len() >= 15, "read too few finding kinds: {kinds:?}");
    for kind in kinds {
        assert!(
            runbooks.contains(&format!("<a id=\"finding-{kind}\"></a>")),
            "docs/runbooks.md has no section finding-{kind}"
        );
    }
    assert_eq!(Rule::from_key("etcdMembresDown"), None);
    let keys: BTreeSet<&str> = Rule::keys().collect();
    assert_eq!(keys.len(), Rule::ALL.len(), "duplicate keys");
}

/// A metrics round at `at_ms` with one member `m1` whose figures `f` sets.
fn round(at_ms: i64, f: impl FnOnce(&mut MemberMetrics)) -> Arc<MetricsRound> {
    let mut metrics = MemberMetrics::default();
    f(&mut metrics);
    Arc::new(MetricsRound {
        cluster: "main".into(),
        at_ms,
        members: vec![MemberMetricsEntry {
            member: "m1".into(),
            endpoint: "http://127.0.0.1:2379".into(),
            metrics_url: String::new(),
            metrics: Some(metrics),
            error: None,
        }],
        probes: ProbeReport::default(),
        revision: None,
        revision_rate: None,
        proposals_committed_rate: None,
        leases: None,
        metrics_window_seconds: 300.0,
        duration_ms: 0.0,
    })
}

/// What the engine keeps of `rounds` for the rules over a window.
fn history_of<'a>(
    rounds: impl IntoIterator<Item = &'a Arc<MetricsRound>>,
) -> VecDeque<RoundCounts> {
    let mut history = VecDeque::new();
    for r in rounds {
        let counts = RoundCounts::of(r, history.back());
        history.push_back(counts);
    }
    history
}

fn run(id: &str, rounds: &[Arc<MetricsRound>], history: Option<&[MetricPoint]>) -> Outcome {
    let rules = RuleSet::default();
    let rule = rules.get(Rule::from_key(id).unwrap());
    let rounds: VecDeque<_> = rounds.iter().cloned().collect();
    let thresholds = Thresholds::default();
    let input = Input {
        cluster: "main",
        now_ms: rounds.back().map(|r| r.at_ms).unwrap_or(0),
        health: None,
        thresholds: &thresholds,
        latest: rounds.back().map(|r| r.as_ref()),
        history: &history_of(&rounds),
        db_size_history: history,
        keyspace_growth: None,
        backups: &[],
        stopped_on_purpose: false,
    };
    evaluate(rule, &input)
}

fn fired(o: &Outcome) -> Vec<String> {
    match o {
        Outcome::Holds(s) => s
            .iter()
            .map(|s| s.labels["alertname"].clone() + "/" + &s.labels["severity"])
            .collect(),
        Outcome::NotEvaluable(why) => vec![format!("not evaluable: {why}")],
    }
}

#[test]
fn fsync_warning_and_critical_thresholds() {
    let slow = [round(0, |m| m.wal_fsync_p99 = Some(0.7))];
    assert_eq!(
        fired(&run("etcdHighFsyncDurations", &slow, None)),
        ["etcdHighFsyncDurations/warning"]
    );
    assert!(fired(&run("etcdHighFsyncDurations_critical", &slow, None)).is_empty());
    let slower = [round(0, |m| m.wal_fsync_p99 = Some(1.5))];
    assert_eq!(
        fired(&run("etcdHighFsyncDurations_critical", &slower, None)),
        ["etcdHighFsyncDurations/critical"]
    );
    assert!(matches!(
        run("etcdHighFsyncDurations", &[], None),
        Outcome::NotEvaluable(_)
    ));
}

#[test]
fn failed_grpc_ratio_ignores_canceled() {
    let codes = |ok: f64, canceled: f64, unavailable: f64| {
        move |m: &mut MemberMetrics| {
            m.grpc_handled_by_code.insert("OK".into(), ok);
            m.grpc_handled_by_code.insert("Canceled".into(), canceled);
            m.grpc_handled_by_code
                .insert("Unavailable".into(), unavailable);
        }
    };
    // 1000 new requests, 500 canceled watches, 3 Unavailable: 0.3 %, quiet.
    let quiet = [
        round(0, codes(0.0, 0.0, 0.0)),
        round(60_000, codes(497.0, 500.0, 3.0)),
    ];
    assert!(fired(&run("etcdHighNumberOfFailedGRPCRequests", &quiet, None)).is_empty());
    // 30 Unavailable of 1000: 3 %, warning only.
    let bad = [
        round(0, codes(0.0, 0.0, 0.0)),
        round(60_000, codes(470.0, 500.0, 30.0)),
    ];
    assert_eq!(
        fired(&run("etcdHighNumberOfFailedGRPCRequests", &bad, None)),
        ["etcdHighNumberOfFailedGRPCRequests/warning"]
    );
    assert!(
        fired(&run(
            "etcdHighNumberOfFailedGRPCRequests_critical",
            &bad,
            None
        ))
        .is_empty()
    );
}

#[test]
fn failed_proposals_are_a_rate_across_counter_resets_and_missed_scrapes() {
    let r = |at, v| round(at, move |m| m.proposals_failed = Some(v));
    let fires = |rounds: &[Arc<MetricsRound>]| {
        fired(&run("etcdHighNumberOfFailedProposals", rounds, None)).len() == 1
    };
    // 240 in 60 s: 4/s, under the mixin's 5/s.
    assert!(!fires(&[r(0, 10.0), r(60_000, 250.0)]));
    // 360 in 60 s: 6/s.
    assert!(fires(&[r(0, 10.0), r(60_000, 370.0)]));
    // The member restarted half-way: 10 -> 200 (+190), restart, 0 -> 170
    // (+170): 360 in 60 s. Comparing only the ends would see 160.
    assert!(fires(&[
        r(0, 10.0),
        r(30_000, 200.0),
        r(45_000, 0.0),
        r(60_000, 170.0)
    ]));
    // Scrapes missed in the middle change nothing.
    assert!(fires(&[r(0, 10.0), r(20_000, 100.0), r(60_000, 370.0)]));
    // One round only: no rate yet.
    assert!(!fires(&[r(0, 10_000.0)]));
}

#[test]
fn a_first_burst_of_a_failure_code_counts() {
    // etcd shows a gRPC code once it has answered with it: Unavailable is
    // absent from the first page, then 50 of 100 requests fail with it.
    let first = round(0, |m| {
        m.grpc_handled_by_code.insert("OK".into(), 1000.0);
    });
    let burst = round(60_000, |m| {
        m.grpc_handled_by_code.insert("OK".into(), 1050.0);
        m.grpc_handled_by_code.insert("Unavailable".into(), 50.0);
    });
    assert_eq!(
        fired(&run(
            "etcdHighNumberOfFailedGRPCRequests_critical",
            &[first, burst],
            None
        )),
        ["etcdHighNumberOfFailedGRPCRequests/critical"]
    );
}

#[test]
fn database_growth_is_predicted_one_window_ahead() {
    let quota = 2.0 * 1024.0 * MIB;
    let latest = [round(3 * 3_600_000, |m| {
        m.quota_backend_bytes = Some(quota)
    })];
    let series = |per_hour: f64| -> Vec<MetricPoint> {
        (0..4)
            .map(|h| MetricPoint {
                member: "m1".into(),
                name: "db_total_size_bytes".into(),
                at_ms: h * 3_600_000,
                value: 1024.0 * MIB + per_hour * h as f64,
            })
            .collect()
    };
    // +50 MiB/h: 1.15 GiB now, 1.35 GiB in 4h: quiet.
    assert!(
        fired(&run(
            "etcdExcessiveDatabaseGrowth",
            &latest,
            Some(&series(50.0 * MIB))
        ))
        .is_empty()
    );
    // +200 MiB/h: 1.6 GiB now, 2.4 GiB in 4h > 2 GiB quota.
    assert_eq!(
        fired(&run(
            "etcdExcessiveDatabaseGrowth",
            &latest,
            Some(&series(200.0 * MIB))
        ))
        .len(),
        1
    );
}

#[test]
fn members_down_counts_peer_send_failures_over_the_window() {
    let obs = crate::cluster::ClusterObservation {
        cluster: "main".into(),
        taken_at: std::time::SystemTime::now(),
        members: Vec::new(),
        member_list_error: None,
        cluster_id: Some(0xc1),
        configured_endpoints: Vec::new(),
        unlisted_endpoints: Vec::new(),
        alarms: Vec::new(),
        hashkv: None,
        certificates: Vec::new(),
        duration_ms: 0.0,
    };
    let thresholds = Thresholds::default();
    let health = crate::health::evaluate(obs, &thresholds);
    let rules = RuleSet::default();
    let rule = rules.get(Rule::MembersDown);
    let r = |at, v| round(at, move |m| m.peer_sent_failures = Some(v));
    let eval = |rounds: &[Arc<MetricsRound>]| {
        let rounds: VecDeque<_> = rounds.iter().cloned().collect();
        let input = Input {
            cluster: "main",
            now_ms: 60_000,
            health: Some(&health),
            thresholds: &thresholds,
            latest: rounds.back().map(|r| r.as_ref()),
            history: &history_of(&rounds),
            db_size_history: None,
            keyspace_growth: None,
            backups: &[],
            stopped_on_purpose: false,
        };
        fired(&evaluate(rule, &input))
    };
    // 10 failures in 60 s: 0.17/s > 0.01/s.
    assert_eq!(
        eval(&[r(0, 0.0), r(60_000, 10.0)]),
        ["etcdMembersDown/warning"]
    );
    // 0.5 in 60 s: under the mixin's 0.01/s.
    assert!(eval(&[r(0, 0.0), r(60_000, 0.5)]).is_empty());
    // Failures older than the window (2m) no longer count.
    assert!(eval(&[r(0, 0.0), r(200_000, 10.0), r(330_000, 10.0)]).is_empty());
}

const MEMBERS: [&str; 3] = ["m1", "m2", "m3"];

/// A member of a 3-member cluster led by m1, with a 1000 MiB quota.
fn member(i: usize) -> MemberObservation {
    let id = i as u64 + 1;
    MemberObservation {
        id,
        name: MEMBERS[i].into(),
        peer_urls: vec![],
        client_urls: vec![format!("http://127.0.0.1:{}", 2379 + i)],
        is_learner: false,
        endpoint: format!("http://127.0.0.1:{}", 2379 + i),
        status: Some(MemberStatus {
            member_id: id,
            cluster_id: 0xc1,
            version: "3.5.17".into(),
            db_size: (200.0 * MIB) as i64,
            db_size_in_use: (180.0 * MIB) as i64,
            leader: 1,
            raft_term: 2,
            raft_index: 100,
            raft_applied_index: 100,
            errors: vec![],
            is_learner: false,
            revision: 10,
        }),
        error: None,
        status_latency_ms: Some(1.0),
        linearizable_read_ms: Some(1.0),
        linearizable_read_error: None,
        metrics: Some(MemberMetrics {
            quota_backend_bytes: Some(1000.0 * MIB),
            ..MemberMetrics::default()
        }),
    }
}

/// Finding kind or rule key, and member (empty: cluster-wide).
type Seen = BTreeSet<(&'static str, String)>;

/// What the verdict and the rules say about `members` (with `changes`
/// leader changes in the last minutes), judged with `rules`' thresholds.
fn both(rules: &RuleSet, members: Vec<MemberObservation>, changes: usize) -> (Seen, Seen) {
    let thresholds = rules.health_thresholds(&HealthThresholds::default());
    let now = std::time::SystemTime::now();
    let now_ms = crate::time::unix_ms(now);
    let obs = ClusterObservation {
        cluster: "main".into(),
        taken_at: now,
        configured_endpoints: members.iter().map(|m| m.endpoint.clone()).collect(),
        members,
        member_list_error: None,
        cluster_id: Some(0xc1),
        unlisted_endpoints: Vec::new(),
        alarms: Vec::<Alarm>::new(),
        hashkv: None,
        certificates: Vec::new(),
        duration_ms: 1.0,
    };
    let changes_ms: Vec<i64> = (0..changes as i64)
        .map(|i| now_ms - 60_000 * (i + 1))
        .collect();
    let health = crate::health::evaluate_with_history(obs, &thresholds, Some(changes_ms));
    // (finding kind, the rules judging the same condition)
    let pairs: [(&str, &[Rule]); 5] = [
        ("db_quota", &[Rule::DatabaseQuotaLowSpace]),
        ("fragmentation", &[Rule::DatabaseHighFragmentationRatio]),
        (
            "frequent_leader_changes",
            &[Rule::LeaderChangesPerHour, Rule::HighNumberOfLeaderChanges],
        ),
        ("member_unreachable", &[Rule::MembersDown]),
        ("no_leader", &[Rule::NoLeader]),
    ];
    let mut findings = Seen::new();
    for f in &health.findings {
        // The quota finding's warning level has no alert: only critical pages.
        if f.kind == "db_quota" && f.severity < Severity::Critical {
            continue;
        }
        if let Some((kind, _)) = pairs.iter().find(|(k, _)| *k == f.kind) {
            // etcdMembersDown is one alert naming every member down.
            let member = if *kind == "member_unreachable" {
                String::new()
            } else {
                f.member.clone().unwrap_or_default()
            };
            findings.insert((kind, member));
        }
    }
    let rounds: VecDeque<Arc<MetricsRound>> = VecDeque::new();
    let input = Input {
        cluster: "main",
        now_ms,
        health: Some(&health),
        thresholds: &thresholds,
        latest: rounds.back().map(|r| r.as_ref()),
        history: &history_of(&rounds),
        db_size_history: None,
        keyspace_growth: None,
        backups: &[],
        stopped_on_purpose: false,
    };
    let mut alerts = Seen::new();
    for (kind, judged_by) in pairs {
        for r in judged_by {
            if let Outcome::Holds(samples) = evaluate(rules.get(*r), &input) {
                for s in samples {
                    alerts.insert((kind, s.labels.get("member").cloned().unwrap_or_default()));
                }
            }
        }
    }
    (findings, alerts)
}

#[test]
fn the_verdict_and_the_alerts_agree() {
    let defaults = RuleSet::default();
    let mut lowered = AlertsConfig::default();
    for (key, threshold) in [
        ("etcdDatabaseQuotaLowSpace", 85.0),
        ("etcdDatabaseHighFragmentationRatio", 0.95),
        ("etcdLeaderChangesPerHour", 1.0),
    ] {
        lowered.rules.insert(
            key.into(),
            RuleOverride {
                threshold: Some(threshold),
                ..Default::default()
            },
        );
    }
    let lowered = RuleSet::from_config(&lowered);
    let sized = |i: usize, size: f64, in_use: f64| {
        let mut m = member(i);
        let s = m.status.as_mut().unwrap();
        s.db_size = (size * MIB) as i64;
        s.db_size_in_use = (in_use * MIB) as i64;
        m
    };
    let cases: Vec<(&str, Vec<MemberObservation>, usize)> = vec![
        ("healthy", (0..3).map(member).collect(), 0),
        (
            "quota 90%",
            vec![sized(0, 900.0, 880.0), member(1), member(2)],
            0,
        ),
        (
            "quota 96%",
            vec![sized(0, 960.0, 950.0), member(1), member(2)],
            0,
        ),
        (
            "fragmented 30%",
            vec![member(0), sized(1, 400.0, 120.0), member(2)],
            0,
        ),
        (
            "fragmented 90%",
            vec![member(0), sized(1, 400.0, 360.0), member(2)],
            0,
        ),
        (
            "small and fragmented",
            vec![member(0), sized(1, 50.0, 5.0), member(2)],
            0,
        ),
        ("2 leader changes", (0..3).map(member).collect(), 2),
        ("5 leader changes", (0..3).map(member).collect(), 5),
        (
            "member down",
            {
                let mut m = (0..3).map(member).collect::<Vec<_>>();
                m[2].status = None;
                m[2].error = Some("connection refused".into());
                m
            },
            0,
        ),
        (
            "no leader",
            {
                let mut m = (0..3).map(member).collect::<Vec<_>>();
                for x in &mut m {
                    x.status.as_mut().unwrap().leader = 0;
                }
                m
            },
            0,
        ),
    ];
    let mut fired = 0;
    for (rules, name) in [(&defaults, "defaults"), (&lowered, "lowered thresholds")] {
        for (case, members, changes) in &cases {
            let (findings, alerts) = both(rules, members.clone(), *changes);
            assert_eq!(findings, alerts, "{case} with {name}: findings vs alerts");
            fired += alerts.len();
        }
    }
    // The cases do exercise every condition, under both threshold sets.
    assert!(fired >= 12, "only {fired} conditions held");
    let (f, _) = both(&defaults, cases[1].1.clone(), 0);
    assert!(f.is_empty(), "90% is under the default 95%");
    let (f, _) = both(&lowered, cases[1].1.clone(), 0);
    assert!(
        f.contains(&("db_quota", "m1".into())),
        "90% is over a lowered 85%"
    );
}

#[test]
fn identity_findings_and_alerts_agree() {
    // Three members of cluster c1, all configured; then a fourth configured
    // endpoint that answers for another cluster, and one member not
    // configured.
    let mut members: Vec<MemberObservation> = (0..3).map(member).collect();
    let configured: Vec<String> = members.iter().map(|m| m.endpoint.clone()).collect();
    let observe = |members: Vec<MemberObservation>, configured: Vec<String>, unlisted| {
        let obs = ClusterObservation {
            cluster: "main".into(),
            taken_at: std::time::SystemTime::now(),
            members,
            member_list_error: None,
            cluster_id: Some(0xc1),
            configured_endpoints: configured,
            unlisted_endpoints: unlisted,
            alarms: Vec::new(),
            hashkv: None,
            certificates: Vec::new(),
            duration_ms: 1.0,
        };
        crate::health::evaluate(obs, &Thresholds::default())
    };
    let rules = RuleSet::default();
    let fired = |health: &crate::health::HealthSnapshot, rule: Rule| {
        let rounds: VecDeque<Arc<MetricsRound>> = VecDeque::new();
        let input = Input {
            cluster: "main",
            now_ms: 0,
            health: Some(health),
            thresholds: &Thresholds::default(),
            latest: rounds.back().map(|r| r.as_ref()),
            history: &history_of(&rounds),
            db_size_history: None,
            keyspace_growth: None,
            backups: &[],
            stopped_on_purpose: false,
        };
        match evaluate(rules.get(rule), &input) {
            Outcome::Holds(samples) => samples.len(),
            Outcome::NotEvaluable(why) => panic!("{why}"),
        }
    };
    let kinds = |h: &crate::health::HealthSnapshot| -> Vec<&str> {
        h.findings.iter().map(|f| f.kind).collect()
    };
    let healthy = observe(members.clone(), configured.clone(), Vec::new());
    assert!(kinds(&healthy).is_empty(), "{:?}", kinds(&healthy));
    for rule in [
        Rule::ClusterIdMismatch,
        Rule::EndpointNotMember,
        Rule::MemberNotConfigured,
    ] {
        assert_eq!(fired(&healthy, rule), 0, "{rule:?}");
    }

    // Member 2 configured under an address it does not advertise (a load
    // balancer, an IP for a DNS name): it answers as itself, nothing to report.
    let via = crate::cluster::EndpointIdentity {
        endpoint: "http://lb.example:2379".into(),
        cluster_id: Some(0xc1),
        member_id: Some(members[2].id),
        error: None,
    };
    let mut aliased = configured[..2].to_vec();
    aliased.push(via.endpoint.clone());
    let fine = observe(members.clone(), aliased, vec![via]);
    assert!(kinds(&fine).is_empty(), "{:?}", kinds(&fine));

    // A left-over member of another cluster, configured; member 2 not configured.
    let stray = crate::cluster::EndpointIdentity {
        endpoint: "http://127.0.0.1:9999".into(),
        cluster_id: Some(0xdead),
        member_id: Some(0x99),
        error: None,
    };
    let mut partly = configured[..2].to_vec();
    partly.push(stray.endpoint.clone());
    members[0].status.as_mut().unwrap().cluster_id = 0xc1;
    let mixed = observe(members, partly, vec![stray]);
    let k = kinds(&mixed);
    for (kind, rule) in [
        ("cluster_id_mismatch", Rule::ClusterIdMismatch),
        ("endpoint_not_member", Rule::EndpointNotMember),
        ("member_not_configured", Rule::MemberNotConfigured),
    ] {
        let findings = k.iter().filter(|x| **x == kind).count();
        assert_eq!(findings, 1, "{kind} in {k:?}");
        assert_eq!(fired(&mixed, rule), findings, "{rule:?}");
    }
    let mismatch = mixed
        .findings
        .iter()
        .find(|f| f.kind == "cluster_id_mismatch")
        .unwrap();
    assert!(
        mismatch.message.contains("dead (http://127.0.0.1:9999)"),
        "{}",
        mismatch.message
    );
    assert_eq!(mismatch.severity, crate::health::Severity::Critical);
}

#[test]
fn certificate_findings_and_alerts_share_thresholds() {
    use crate::cluster::certs::{CertificateObservation, CertificateSource};
    let now = std::time::SystemTime::now();
    let now_ms = crate::time::unix_ms(now);
    let cert = |days: f64| CertificateObservation {
        source: CertificateSource::Serving,
        location: "https://127.0.0.1:2379".into(),
        member: Some("m0".into()),
        subject: Some("CN=m0".into()),
        issuer: Some("CN=ca".into()),
        not_after_ms: Some(now_ms + (days * 86_400_000.0) as i64),
        checked_at_ms: now_ms,
        error: None,
    };
    // (finding severity, warning rule samples, critical rule samples)
    let judge = |rules: &RuleSet, days: f64| {
        let thresholds = rules.health_thresholds(&HealthThresholds::default());
        let members: Vec<MemberObservation> = (0..3).map(member).collect();
        let obs = ClusterObservation {
            cluster: "main".into(),
            taken_at: now,
            configured_endpoints: members.iter().map(|m| m.endpoint.clone()).collect(),
            members,
            member_list_error: None,
            cluster_id: Some(0xc1),
            unlisted_endpoints: Vec::new(),
            alarms: Vec::new(),
            hashkv: None,
            certificates: vec![cert(days)],
            duration_ms: 1.0,
        };
        let health = crate::health::evaluate(obs, &thresholds);
        let rounds: VecDeque<Arc<MetricsRound>> = VecDeque::new();
        let input = Input {
            cluster: "main",
            now_ms,
            health: Some(&health),
            thresholds: &thresholds,
            latest: rounds.back().map(|r| r.as_ref()),
            history: &history_of(&rounds),
            db_size_history: None,
            keyspace_growth: None,
            backups: &[],
            stopped_on_purpose: false,
        };
        let held = |rule: Rule| match evaluate(rules.get(rule), &input) {
            Outcome::Holds(samples) => {
                for s in &samples {
                    assert_eq!(s.labels["member"], "m0");
                    assert_eq!(s.labels["certificate"], "serving certificate");
                    assert_eq!(s.labels["location"], "https://127.0.0.1:2379");
                }
                samples.len()
            }
            Outcome::NotEvaluable(why) => panic!("{why}"),
        };
        let severity = health
            .findings
            .iter()
            .find(|f| f.kind == "certificate_expiring")
            .map(|f| f.severity);
        (
            severity,
            held(Rule::CertificateExpiring),
            held(Rule::CertificateExpiringCritical),
        )
    };
    let defaults = RuleSet::default();
    assert_eq!(judge(&defaults, 90.0), (None, 0, 0));
    assert_eq!(judge(&defaults, 20.0), (Some(Severity::Warning), 1, 0));
    assert_eq!(judge(&defaults, 3.0), (Some(Severity::Critical), 1, 1));
    assert_eq!(judge(&defaults, -1.0), (Some(Severity::Critical), 1, 1));
    // Lowered thresholds move the finding and the alerts together.
    let mut lowered = AlertsConfig::default();
    for (key, threshold) in [
        ("etcdCertificateExpiring", 14.0),
        ("etcdCertificateExpiring_critical", 2.0),
    ] {
        lowered.rules.insert(
            key.into(),
            RuleOverride {
                threshold: Some(threshold),
                ..Default::default()
            },
        );
    }
    let lowered = RuleSet::from_config(&lowered);
    assert_eq!(judge(&lowered, 20.0), (None, 0, 0));
    assert_eq!(judge(&lowered, 3.0), (Some(Severity::Warning), 1, 0));
    assert_eq!(judge(&lowered, 1.0), (Some(Severity::Critical), 1, 1));
}

#[test]
fn a_custom_rule_on_a_method_rate_names_the_method() {
    let config: AlertsConfig = serde_yaml_ng::from_str(
        "custom_rules:\n  - {name: PutsFailing, metric: grpc_method_failed_rate, comparison: '>', threshold: 0.1}\n",
    )
    .unwrap();
    let rules = RuleSet::from_config(&config);
    let rule = rules.rules.iter().find(|r| r.key == "PutsFailing").unwrap();
    let rounds: VecDeque<_> = [round(0, |m| {
        for (method, failed) in [("Put", 0.5), ("Range", 0.0)] {
            m.grpc_methods.insert(
                method.into(),
                crate::cluster::GrpcMethodRates {
                    requests_per_second: 2.0,
                    failed_per_second: failed,
                },
            );
        }
    })]
    .into_iter()
    .collect();
    let thresholds = Thresholds::default();
    let input = Input {
        cluster: "main",
        now_ms: 0,
        health: None,
        thresholds: &thresholds,
        latest: rounds.back().map(|r| r.as_ref()),
        history: &history_of(&rounds),
        db_size_history: None,
        keyspace_growth: None,
        backups: &[],
        stopped_on_purpose: false,
    };
    let Outcome::Holds(samples) = evaluate(rule, &input) else {
        panic!("not evaluable")
    };
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples[0].labels["method"], "Put");
    assert!(!samples[0].labels.contains_key("member"), "{samples:?}");
    assert!(
        samples[0].summary.contains("of method Put"),
        "{}",
        samples[0].summary
    );
}

fn backup_status(interval_ms: i64, since_ms: i64, last_success_ms: i64) -> BackupStatus {
    BackupStatus {
        schedule: "nightly".into(),
        cluster: "main".into(),
        target: "/backups".into(),
        interval_ms,
        since_ms,
        last_success_ms,
        ..BackupStatus::default()
    }
}

fn run_backups(rule: Rule, now_ms: i64, backups: &[BackupStatus], stopped: bool) -> Outcome {
    let rules = RuleSet::default();
    let rounds: VecDeque<Arc<MetricsRound>> = VecDeque::new();
    let thresholds = Thresholds::default();
    let input = Input {
        cluster: "main",
        now_ms,
        health: None,
        thresholds: &thresholds,
        latest: rounds.back().map(|r| r.as_ref()),
        history: &history_of(&rounds),
        db_size_history: None,
        keyspace_growth: None,
        backups,
        stopped_on_purpose: stopped,
    };
    evaluate(rules.get(rule), &input)
}

#[test]
fn backup_too_old_counts_intervals_from_the_last_success_or_the_start() {
    let hour = 3_600_000;
    // Every hour, last success 2.5 h ago: fires with the age in intervals.
    let b = [backup_status(hour, 0, 10 * hour)];
    let Outcome::Holds(s) = run_backups(Rule::BackupTooOld, 12 * hour + hour / 2, &b, false) else {
        panic!("not evaluable")
    };
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].labels["schedule"], "nightly");
    assert!((s[0].value - 2.5).abs() < 1e-9, "{}", s[0].value);
    // 1.5 h ago: quiet.
    assert_eq!(
        run_backups(Rule::BackupTooOld, 11 * hour + hour / 2, &b, false),
        Outcome::Holds(vec![])
    );
    // Never succeeded: counted from the schedule's start.
    let never = [backup_status(hour, 5 * hour, 0)];
    assert_eq!(
        fired(&run_backups(Rule::BackupTooOld, 6 * hour, &never, false)),
        Vec::<String>::new()
    );
    assert_eq!(
        fired(&run_backups(Rule::BackupTooOld, 8 * hour, &never, false)),
        ["etcdBackupTooOld/warning"]
    );
    // A cluster stopped on purpose: quiet however old.
    assert_eq!(
        run_backups(Rule::BackupTooOld, 100 * hour, &b, true),
        Outcome::Holds(vec![])
    );
}

#[test]
fn backup_unverified_names_the_backup_until_a_drill_succeeds() {
    let mut b = backup_status(60_000, 0, 1000);
    assert_eq!(
        run_backups(
            Rule::BackupUnverified,
            2000,
            std::slice::from_ref(&b),
            false
        ),
        Outcome::Holds(vec![])
    );
    b.unverified = Some(crate::monitor::backups::UnverifiedBackup {
        name: "nightly-1.db".into(),
        error: "sha256 differs".into(),
    });
    let Outcome::Holds(s) = run_backups(Rule::BackupUnverified, 2000, &[b], false) else {
        panic!("not evaluable")
    };
    assert_eq!(s[0].labels["backup"], "nightly-1.db");
    assert!(s[0].summary.contains("sha256 differs"), "{}", s[0].summary);
}

#[test]
fn a_cluster_is_stopped_on_purpose_when_every_member_is_paused() {
    use crate::monitor::backups::intentionally_stopped;
    let mut obs = ClusterObservation {
        cluster: "main".into(),
        taken_at: std::time::SystemTime::now(),
        configured_endpoints: vec!["http://m0:2379".into(), "http://m1:2379".into()],
        members: vec![member(0), member(1)],
        member_list_error: None,
        cluster_id: Some(0xc1),
        unlisted_endpoints: Vec::new(),
        alarms: Vec::<Alarm>::new(),
        hashkv: None,
        certificates: Vec::new(),
        duration_ms: 1.0,
    };
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (n0, n1) = (obs.members[0].name.clone(), obs.members[1].name.clone());
    assert!(!intentionally_stopped(&[], Some(&obs)));
    assert!(!intentionally_stopped(&names(&[&n0]), Some(&obs)));
    assert!(intentionally_stopped(&names(&[&n0, &n1]), Some(&obs)));
    // By client URL, a trailing slash aside.
    let url = format!("{}/", obs.members[1].client_urls[0]);
    assert!(intentionally_stopped(&names(&[&n0, &url]), Some(&obs)));
    // No member list (the members are down): the configured endpoints.
    obs.members.clear();
    assert!(intentionally_stopped(
        &names(&["http://m0:2379", "http://m1:2379/"]),
        Some(&obs)
    ));
    assert!(!intentionally_stopped(
        &names(&["http://m0:2379"]),
        Some(&obs)
    ));
    assert!(!intentionally_stopped(&names(&["x"]), None));
}
