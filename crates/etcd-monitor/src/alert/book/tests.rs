//! The book with synthetic time: every timing rule of the engine, decided
//! in microseconds instead of the minutes (or real sleeps) it takes live.

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::alert::rules::{Rule, RuleSet};
use crate::config::alerts::{ChannelConfig, ChannelType, InhibitRuleConfig};
use crate::model::Silence;

const MIN: i64 = 60_000;

/// A rule set where `etcdMembersDown` waits `for_` and the rest are as configured.
fn rules(for_: Duration) -> RuleSet {
    let mut c = AlertsConfig::default();
    c.rules.insert(
        "etcdMembersDown".into(),
        crate::config::alerts::RuleOverride {
            for_: Some(for_),
            ..Default::default()
        },
    );
    for key in [
        "etcdNoLeader",
        "etcdInsufficientMembers",
        "etcdHighFsyncDurations",
        "etcdHighFsyncDurations_critical",
    ] {
        c.rules.insert(
            key.into(),
            crate::config::alerts::RuleOverride {
                for_: Some(Duration::ZERO),
                ..Default::default()
            },
        );
    }
    RuleSet::from_config(&c)
}

fn config() -> AlertsConfig {
    AlertsConfig {
        channels: vec![ChannelConfig::new("ops", ChannelType::Console)],
        ..AlertsConfig::default()
    }
}

/// A sample of `rule` for `member` (cluster-wide when empty).
fn sample(rules: &RuleSet, rule: Rule, member: &str) -> Sample {
    let r = rules.get(rule);
    let mut labels = Labels::new();
    labels.insert("alertname".into(), r.alertname.clone());
    labels.insert("severity".into(), r.severity.as_str().into());
    labels.insert("cluster".into(), "main".into());
    if !member.is_empty() {
        labels.insert("member".into(), member.into());
    }
    Sample {
        rule: r.key.clone(),
        labels,
        summary: format!("{} {member}", r.key),
        value: 1.0,
        runbook_url: r.runbook_url.clone(),
    }
}

/// The outcomes of every rule: `holding` hold, everything else holds nothing.
fn outcomes<'a>(rules: &'a RuleSet, holding: &[(Rule, &str)]) -> Vec<(&'a ActiveRule, Outcome)> {
    rules
        .all()
        .iter()
        .map(|r| {
            let samples = holding
                .iter()
                .filter(|(rule, _)| Some(*rule) == r.builtin())
                .map(|(rule, m)| sample(rules, *rule, m))
                .collect();
            (r, Outcome::Holds(samples))
        })
        .collect()
}

struct Run {
    book: AlertBook,
    rules: RuleSet,
    silences: Vec<Silence>,
    acked: BTreeSet<String>,
}

impl Run {
    fn new(config: AlertsConfig, rules: RuleSet) -> Run {
        Run {
            book: AlertBook::new("main", &config),
            rules,
            silences: Vec::new(),
            acked: BTreeSet::new(),
        }
    }

    fn step(&mut self, at: i64, holding: &[(Rule, &str)]) -> Vec<Effect> {
        let o = outcomes(&self.rules, holding);
        self.book.step(at, &o, &self.silences, &self.acked)
    }
}

/// `reason` of each notification, with its alerts' members.
fn notes(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify { notification, .. } => Some(format!(
                "{} {} [{}]",
                notification.group_key,
                notification.reason,
                notification
                    .alerts
                    .iter()
                    .map(|a| a.label("member").to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )),
            _ => None,
        })
        .collect()
}

fn fired(effects: &[Effect]) -> Vec<(String, Option<String>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Fired(a) => Some((a.label("alertname").to_string(), a.suppressed.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_condition_fires_after_for_and_a_flap_within_for_is_quiet() {
    let mut r = Run::new(config(), rules(Duration::from_secs(20 * 60)));
    let down = [(Rule::MembersDown, "")];
    assert!(r.step(0, &down).is_empty(), "pending makes no effect");
    assert!(r.step(19 * MIN, &down).is_empty());
    // It clears before `for`: dropped, nothing recorded or sent.
    assert!(r.step(19 * MIN + 1, &[]).is_empty());
    assert_eq!(r.book.alerts().count(), 0);
    // Back again: `for` counts from the new start.
    assert!(r.step(20 * MIN, &down).is_empty());
    assert!(r.step(39 * MIN, &down).is_empty());
    let e = r.step(40 * MIN, &down);
    assert_eq!(fired(&e), [("etcdMembersDown".to_string(), None)]);
    assert_eq!(notes(&e), ["main/etcdMembersDown firing []"]);
    let Effect::Notify {
        channels, group, ..
    } = e.last().unwrap()
    else {
        panic!("{e:?}")
    };
    assert_eq!(channels, &["ops".to_string()]);
    assert!(group.notified_firing && group.last_notified_ms == 40 * MIN);
    // Still firing: nothing more until repeat_interval (4h).
    assert!(r.step(41 * MIN, &down).is_empty());
    // Resolved: recorded and notified once.
    let e = r.step(42 * MIN, &[]);
    assert!(matches!(&e[0], Effect::Resolved(a) if a.ends_at_ms == Some(42 * MIN)));
    assert_eq!(notes(&e), ["main/etcdMembersDown resolved []"]);
    assert!(r.step(43 * MIN, &[]).is_empty());
    assert_eq!(r.book.alerts().count(), 0);
}

#[test]
fn members_of_one_group_are_one_notification_then_an_update_after_group_interval() {
    let mut r = Run::new(config(), rules(Duration::ZERO));
    let e = r.step(0, &[(Rule::NoLeader, "m1"), (Rule::NoLeader, "m2")]);
    assert_eq!(notes(&e), ["main/etcdNoLeader firing [m1,m2]"]);
    // A third member joins at 1m: the update waits for group_interval (5m).
    let three = [
        (Rule::NoLeader, "m1"),
        (Rule::NoLeader, "m2"),
        (Rule::NoLeader, "m3"),
    ];
    assert!(notes(&r.step(MIN, &three)).is_empty());
    assert!(notes(&r.step(5 * MIN - 1, &three)).is_empty());
    assert_eq!(
        notes(&r.step(5 * MIN, &three)),
        ["main/etcdNoLeader update [m1,m2,m3]"]
    );
    // One member recovers: its alert resolves (recorded) but the group still fires.
    let e = r.step(6 * MIN, &three[..2]);
    assert!(matches!(&e[0], Effect::Resolved(a) if a.label("member") == "m3"));
    assert!(notes(&e).is_empty());
    // All recover: the resolved notification lists what was notified.
    assert_eq!(
        notes(&r.step(7 * MIN, &[])),
        ["main/etcdNoLeader resolved [m1,m2]"]
    );
}

#[test]
fn a_firing_group_repeats_until_acknowledged_and_the_ack_ends_with_the_resolve() {
    let mut c = config();
    c.repeat_interval = Duration::from_secs(3600);
    let mut r = Run::new(c, rules(Duration::ZERO));
    let down = [(Rule::MembersDown, "")];
    assert_eq!(notes(&r.step(0, &down)), ["main/etcdMembersDown firing []"]);
    assert!(notes(&r.step(59 * MIN, &down)).is_empty());
    assert_eq!(
        notes(&r.step(60 * MIN, &down)),
        ["main/etcdMembersDown repeat []"]
    );
    r.acked.insert("main/etcdMembersDown".into());
    assert!(notes(&r.step(121 * MIN, &down)).is_empty(), "acknowledged");
    assert!(notes(&r.step(500 * MIN, &down)).is_empty(), "acknowledged");
    assert_eq!(
        notes(&r.step(501 * MIN, &[])),
        ["main/etcdMembersDown resolved []"]
    );
    // The store clears the ack with the resolve; the next outage pages.
    r.acked.clear();
    assert_eq!(
        notes(&r.step(502 * MIN, &down)),
        ["main/etcdMembersDown firing []"]
    );
}

#[test]
fn a_silence_holds_until_it_expires_then_the_group_pages() {
    let mut r = Run::new(config(), rules(Duration::ZERO));
    r.silences.push(Silence {
        id: "s1".into(),
        matchers: vec![crate::model::Matcher::parse("alertname=~etcdMembers.*").unwrap()],
        starts_at_ms: 0,
        ends_at_ms: 10 * MIN,
        comment: String::new(),
        created_by: String::new(),
        source: "api".into(),
    });
    let down = [(Rule::MembersDown, "")];
    let e = r.step(MIN, &down);
    // Fired and recorded as silenced, not notified.
    assert_eq!(
        fired(&e),
        [(
            "etcdMembersDown".to_string(),
            Some("silenced by s1".to_string())
        )]
    );
    assert!(notes(&e).is_empty());
    assert!(r.step(10 * MIN - 1, &down).is_empty());
    // Expired (judged at the step's time): unsuppressed, then a first firing notification.
    let e = r.step(10 * MIN, &down);
    assert!(matches!(&e[0], Effect::Suppressed(a) if a.suppressed.is_none()));
    assert_eq!(notes(&e), ["main/etcdMembersDown firing []"]);
}

#[test]
fn the_default_inhibit_rules_reproduce_quorum_loss_and_critical_over_warning() {
    let mut r = Run::new(config(), rules(Duration::ZERO));
    let e = r.step(
        0,
        &[
            (Rule::InsufficientMembers, ""),
            (Rule::MembersDown, ""),
            (Rule::NoLeader, "m2"),
        ],
    );
    let mut f = fired(&e);
    f.sort();
    assert_eq!(
        f,
        [
            ("etcdInsufficientMembers".to_string(), None),
            (
                "etcdMembersDown".to_string(),
                Some("inhibited by etcdInsufficientMembers (critical)".to_string())
            ),
            (
                "etcdNoLeader".to_string(),
                Some("inhibited by etcdInsufficientMembers (critical)".to_string())
            ),
        ]
    );
    assert_eq!(notes(&e), ["main/etcdInsufficientMembers firing []"]);
    // Quorum is back, a member is still down: its alert is unsuppressed and pages.
    let e = r.step(MIN, &[(Rule::MembersDown, "")]);
    assert!(notes(&e).contains(&"main/etcdMembersDown firing []".to_string()));

    // Critical hides the warning of the same alertname and member only.
    let mut r = Run::new(config(), rules(Duration::ZERO));
    let e = r.step(
        0,
        &[
            (Rule::HighFsyncDurations, "m1"),
            (Rule::HighFsyncDurationsCritical, "m1"),
            (Rule::HighFsyncDurations, "m2"),
        ],
    );
    let warn_m1 = e.iter().find_map(|x| match x {
        Effect::Fired(a) if a.label("member") == "m1" && a.label("severity") == "warning" => {
            Some(a.suppressed.clone())
        }
        _ => None,
    });
    assert_eq!(
        warn_m1,
        Some(Some(
            "inhibited by etcdHighFsyncDurations (critical)".into()
        ))
    );
    assert_eq!(
        notes(&e),
        [
            "main/etcdHighFsyncDurations firing [m2]",
            "main/etcdHighFsyncDurations_critical firing [m1]"
        ]
    );
}

#[test]
fn inhibit_rules_are_data_with_alertmanagers_semantics() {
    let rule = |source: &[&str], target: &[&str], equal: &[&str]| InhibitRuleConfig {
        source_matchers: source.iter().map(|s| s.to_string()).collect(),
        target_matchers: target.iter().map(|s| s.to_string()).collect(),
        equal: equal.iter().map(|s| s.to_string()).collect(),
    };
    // None configured: nothing inhibited.
    let mut c = config();
    c.inhibit_rules = Vec::new();
    let mut r = Run::new(c, rules(Duration::ZERO));
    let both = [(Rule::InsufficientMembers, ""), (Rule::MembersDown, "")];
    assert!(fired(&r.step(0, &both)).iter().all(|(_, s)| s.is_none()));

    // `equal` on a label the source lacks and the target has: not equal.
    let mut c = config();
    c.inhibit_rules = vec![rule(
        &["alertname=etcdInsufficientMembers"],
        &["alertname=etcdNoLeader"],
        &["member"],
    )];
    let mut r = Run::new(c, rules(Duration::ZERO));
    let e = r.step(
        0,
        &[(Rule::InsufficientMembers, ""), (Rule::NoLeader, "m1")],
    );
    assert!(fired(&e).iter().all(|(_, s)| s.is_none()), "{e:?}");

    // An alert matching both sides is not inhibited by another that does too:
    // two warnings of one rule do not silence each other.
    let mut c = config();
    c.inhibit_rules = vec![rule(
        &["severity=warning"],
        &["severity=warning"],
        &["alertname"],
    )];
    let mut r = Run::new(c, rules(Duration::ZERO));
    let e = r.step(0, &[(Rule::NoLeader, "m1"), (Rule::MembersDown, "")]);
    assert!(fired(&e).iter().all(|(_, s)| s.is_none()), "{e:?}");

    // Pending alerts inhibit nothing: only firing ones do.
    let mut c = config();
    c.inhibit_rules = vec![rule(
        &["alertname=etcdMembersDown"],
        &["alertname=etcdNoLeader"],
        &[],
    )];
    let mut r = Run::new(c, rules(Duration::from_secs(600)));
    let e = r.step(0, &[(Rule::MembersDown, ""), (Rule::NoLeader, "m1")]);
    assert_eq!(fired(&e), [("etcdNoLeader".to_string(), None)]);
    // Once the source fires, the target becomes inhibited.
    let e = r.step(10 * MIN, &[(Rule::MembersDown, ""), (Rule::NoLeader, "m1")]);
    assert!(e.iter().any(|x| matches!(x, Effect::Suppressed(a)
        if a.suppressed.as_deref() == Some("inhibited by etcdMembersDown (warning)"))));
}

#[test]
fn a_restarted_book_neither_repeats_nor_forgets_the_resolve() {
    let rs = rules(Duration::ZERO);
    let mut r = Run::new(config(), rs.clone());
    let down = [(Rule::MembersDown, "")];
    let e = r.step(0, &down);
    // What the store would hold after this step.
    let alerts: Vec<Alert> = r.book.alerts().cloned().collect();
    let groups: Vec<GroupState> = e
        .iter()
        .filter_map(|x| match x {
            Effect::Notify { group, .. } => Some(group.clone()),
            _ => None,
        })
        .collect();
    let mut again = Run::new(config(), rs);
    again.book.restore(alerts, groups);
    assert!(again.step(MIN, &down).is_empty(), "no second firing page");
    assert_eq!(
        notes(&again.step(2 * MIN, &[])),
        ["main/etcdMembersDown resolved []"]
    );
}

#[test]
fn not_evaluable_keeps_state_and_a_removed_rule_resolves() {
    let rs = rules(Duration::ZERO);
    let mut r = Run::new(config(), rs.clone());
    r.step(0, &[(Rule::NoLeader, "m1")]);
    // The rule cannot be evaluated (no snapshot): the alert keeps firing.
    let mut o = outcomes(&rs, &[]);
    for (rule, outcome) in o.iter_mut() {
        if rule.builtin() == Some(Rule::NoLeader) {
            *outcome = Outcome::NotEvaluable("no health snapshot yet");
        }
    }
    assert!(r.book.step(MIN, &o, &[], &BTreeSet::new()).is_empty());
    assert_eq!(r.book.alerts().count(), 1);
    // The rule is gone from the configuration (restored alert of a deleted custom rule).
    let without: Vec<_> = outcomes(&rs, &[])
        .into_iter()
        .filter(|(rule, _)| rule.builtin() != Some(Rule::NoLeader))
        .collect();
    let e = r.book.step(2 * MIN, &without, &[], &BTreeSet::new());
    assert!(matches!(&e[0], Effect::Resolved(_)));
    assert_eq!(notes(&e), ["main/etcdNoLeader resolved [m1]"]);
}
