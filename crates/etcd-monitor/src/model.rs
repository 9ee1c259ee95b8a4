//! Plain data shared by the alert engine, the history store and the API:
//! alerts, notification groups, notifications, label matchers and silences.
//! No behaviour beyond what the data says about itself, and no imports of
//! the modules that use it, so the store keeps these records without
//! depending on the engine that decides them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Alert labels: `alertname`, `severity`, `cluster`, `member` (when one
/// member is concerned), and rule-specific ones (`alarm`).
pub type Labels = BTreeMap<String, String>;

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds, for less than the rule's `for`.
    Pending,
    /// The condition has held for `for`.
    Firing,
    /// It stopped holding after firing.
    Resolved,
}

/// One alert: a rule's condition for one label set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The labels joined: `alertname=..,cluster=..,...`; stable across restarts.
    pub fingerprint: String,
    /// `cluster/rule`: the notification group.
    pub group_key: String,
    /// Rule configuration key.
    pub rule: String,
    /// Labels.
    pub labels: Labels,
    /// One sentence for people.
    pub summary: String,
    /// The latest figure.
    pub value: f64,
    /// Pending, firing, resolved.
    pub state: AlertState,
    /// When the condition was first seen (ms since epoch).
    pub active_since_ms: i64,
    /// When it started firing.
    pub starts_at_ms: Option<i64>,
    /// When it resolved.
    pub ends_at_ms: Option<i64>,
    /// `silenced by <id>` or `inhibited by <alertname> (<severity>)`, when suppressed.
    pub suppressed: Option<String>,
    /// What to do about it: the rule's section of the runbooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook_url: Option<String>,
}

impl Alert {
    /// The value of label `name`, or the empty string (Alertmanager's view
    /// of a missing label).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }
}

/// The fingerprint of a label set.
pub fn fingerprint(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The notification state of one group (`cluster/rule`), persisted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupState {
    /// `cluster/rule`.
    pub group_key: String,
    /// Cluster name.
    pub cluster: String,
    /// Rule key.
    pub rule: String,
    /// A firing notification went out and no resolved one since.
    pub notified_firing: bool,
    /// When the group was last notified (ms since epoch).
    pub last_notified_ms: i64,
    /// Fingerprints of the alerts in the last firing notification.
    pub notified: Vec<String>,
}

/// Whether a notification reports trouble or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationStatus {
    /// At least one alert of the group fires.
    Firing,
    /// Every alert of the group resolved.
    Resolved,
}

/// One message about one alert group, as queued in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique per dispatch; receivers can de-duplicate on it.
    pub id: String,
    /// `cluster/rule`: stable for the group (PagerDuty's `dedup_key`).
    pub group_key: String,
    /// Firing or resolved.
    pub status: NotificationStatus,
    /// `firing`, `update`, `repeat` or `resolved`.
    pub reason: String,
    /// Cluster name.
    pub cluster: String,
    /// `alertname` of the group.
    pub alertname: String,
    /// `severity` of the group.
    pub severity: String,
    /// The group's alerts (firing ones, or the resolved ones).
    pub alerts: Vec<Alert>,
    /// When decided (ms since epoch).
    pub at_ms: i64,
    /// `alerts.external_url`.
    pub external_url: Option<String>,
}

impl Notification {
    /// A one-line title: `[FIRING] etcdMembersDown on main (warning)`.
    pub fn title(&self) -> String {
        let status = match self.status {
            NotificationStatus::Firing => "FIRING",
            NotificationStatus::Resolved => "RESOLVED",
        };
        format!(
            "[{status}] {} on {} ({})",
            self.alertname, self.cluster, self.severity
        )
    }
}

/// What one step of the alert engine decided; the store records a step's
/// effects in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The alert started firing (with its suppression, if any).
    Fired(Alert),
    /// A firing alert resolved.
    Resolved(Alert),
    /// A firing alert's suppression (silence, inhibition) began, changed or ended.
    Suppressed(Alert),
    /// A notification is due: the group's new state and one outbox row per channel.
    Notify {
        /// The group after the notification.
        group: GroupState,
        /// What is sent.
        notification: Notification,
        /// Channel names (routing applied).
        channels: Vec<String>,
    },
}

/// One label matcher, written as Alertmanager writes them: `name=value`,
/// `name!=value`, `name=~regex`, `name!~regex` (a regex matches the whole
/// value). A missing label is the empty value.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Label value, or the regular expression.
    pub value: String,
    /// `true` for `=` and `=~`, `false` for `!=` and `!~`.
    pub equal: bool,
    /// `value` is a regular expression (`=~`, `!~`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub regex: bool,
    #[serde(skip)]
    compiled: Option<Arc<regex::Regex>>,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Matcher) -> bool {
        (&self.name, &self.value, self.equal, self.regex) == (&o.name, &o.value, o.equal, o.regex)
    }
}

impl Eq for Matcher {}

impl Matcher {
    /// Parses `name=value`, `name!=value`, `name=~regex` or `name!~regex`;
    /// the value may be quoted.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let at = text.find(['=', '!']).ok_or_else(|| {
            format!("matcher {text:?}: write name=value, name!=value, name=~regex or name!~regex")
        })?;
        let (name, rest) = text.split_at(at);
        let (op, value) = ["!=", "=~", "!~", "="]
            .iter()
            .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v)))
            .ok_or_else(|| {
                format!(
                    "matcher {text:?}: write name=value, name!=value, name=~regex or name!~regex"
                )
            })?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("matcher {text:?}: the label name is empty"));
        }
        let value = value.trim().trim_matches('"');
        Matcher::new(name, value, !op.starts_with('!'), op.ends_with('~'))
            .map_err(|e| format!("matcher {text:?}: {e}"))
    }

    /// A matcher; a regular expression is checked and compiled here.
    pub fn new(name: &str, value: &str, equal: bool, regex: bool) -> Result<Matcher, String> {
        let mut m = Matcher {
            name: name.into(),
            value: value.into(),
            equal,
            regex,
            compiled: None,
        };
        m.compile()?;
        Ok(m)
    }

    fn compile(&mut self) -> Result<(), String> {
        if self.regex && self.compiled.is_none() {
            let re = regex::Regex::new(&format!("^(?:{})$", self.value))
                .map_err(|e| format!("invalid regular expression {:?}: {e}", self.value))?;
            self.compiled = Some(Arc::new(re));
        }
        Ok(())
    }

    /// Matchers read back from storage, with their regular expressions
    /// compiled (one that no longer compiles matches nothing, see
    /// [`Matcher::matches`]).
    pub fn restored(mut list: Vec<Matcher>) -> Vec<Matcher> {
        for m in &mut list {
            let _ = m.compile();
        }
        list
    }

    /// `name=value` exactly: the only form that names one value.
    pub fn is_literal_equal(&self) -> bool {
        self.equal && !self.regex
    }

    /// Whether `labels` satisfy the matcher (a missing label is the empty value).
    /// A regex matcher without its compiled expression (read back without
    /// [`Matcher::restored`], or no longer compiling) matches nothing, so a
    /// silence holding it silences nothing.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        let hit = match (&self.compiled, self.regex) {
            (Some(re), true) => re.is_match(v),
            (None, true) => return false,
            (_, false) => v == self.value,
        };
        hit == self.equal
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match (self.equal, self.regex) {
            (true, false) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (false, true) => "!~",
        };
        write!(f, "{}{op}{}", self.name, self.value)
    }
}

/// A silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Silence {
    /// `cfg-<n>` for configured silences, a random id for the others.
    pub id: String,
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// Start (ms since epoch).
    pub starts_at_ms: i64,
    /// End (ms since epoch); expired afterwards.
    pub ends_at_ms: i64,
    /// Why.
    pub comment: String,
    /// Who.
    pub created_by: String,
    /// `config` or `api`.
    pub source: String,
}

impl Silence {
    /// Whether the silence is in force at `now_ms`.
    pub fn active_at(&self, now_ms: i64) -> bool {
        self.starts_at_ms <= now_ms && now_ms < self.ends_at_ms
    }

    /// Whether it silences an alert with `labels` (at any time).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_parse_all_four_operators() {
        let mut labels = Labels::new();
        labels.insert("alertname".into(), "etcdMembersDown".into());
        labels.insert("cluster".into(), "main".into());
        let m = |t: &str| Matcher::parse(t).unwrap();
        assert!(m("alertname=etcdMembersDown").matches(&labels));
        assert!(m("cluster!=dev").matches(&labels));
        assert!(!m("member=m1").matches(&labels));
        assert!(m("member=").matches(&labels));
        assert!(m("alertname=~etcd(MembersDown|NoLeader)").matches(&labels));
        // Anchored: a regex matches the whole value.
        assert!(!m("alertname=~Members").matches(&labels));
        assert!(m("cluster!~prod|staging").matches(&labels));
        assert!(!m("cluster!~ma.*").matches(&labels));
        assert_eq!(m("cluster!~ma.*").to_string(), "cluster!~ma.*");
        assert!(m("a=~x").regex && !m("a=~x").is_literal_equal());
        assert!(Matcher::parse("nonsense").is_err());
        assert!(Matcher::parse("=x").is_err());
        let bad = Matcher::parse("alertname=~(").unwrap_err();
        assert!(bad.contains("regular expression"), "{bad}");
    }

    #[test]
    fn stored_matchers_round_trip_with_their_regex() {
        let m = Matcher::parse("alertname=~etcd.*").unwrap();
        let text = serde_json::to_string(std::slice::from_ref(&m)).unwrap();
        let back = Matcher::restored(serde_json::from_str(&text).unwrap());
        assert_eq!(back, vec![m]);
        let mut labels = Labels::new();
        labels.insert("alertname".into(), "etcdNoLeader".into());
        assert!(back[0].matches(&labels));
        // Not compiled (or no longer compiling): matches nothing, `!~` included.
        let raw: Vec<Matcher> =
            serde_json::from_str(r#"[{"name":"a","value":"(","equal":false,"regex":true}]"#)
                .unwrap();
        assert!(!Matcher::restored(raw)[0].matches(&labels));
        // Older rows have no `regex` field.
        let old: Vec<Matcher> =
            serde_json::from_str(r#"[{"name":"a","value":"b","equal":false}]"#).unwrap();
        assert!(!old[0].regex);
    }
}
