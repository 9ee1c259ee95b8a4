//! `alerts.*` configuration: rule overrides, custom rules, grouping timers,
//! routes, channels and silences.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::duration;

/// `alerts.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Overrides of built-in rules, keyed by rule name (`etcdMembersDown`, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, RuleOverride>,
    /// Rules over stored metric names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub custom_rules: Vec<CustomRule>,
    /// How often a still-firing, unacknowledged group is notified again.
    #[serde(with = "duration")]
    pub repeat_interval: Duration,
    /// How long after its last notification a firing group whose alerts
    /// changed (another member joined the outage) is notified again.
    #[serde(with = "duration")]
    pub group_interval: Duration,
    /// Where notifications go; none: alerts are evaluated and recorded only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelConfig>,
    /// Which channels get which alerts; first match wins (unless `continue`);
    /// no routes, or no match: every channel.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// Silences defined in the configuration (the API adds more at run time).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub silences: Vec<SilenceConfig>,
    /// A link put into notifications (`generatorURL`), e.g. the dashboard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    /// Where runbooks live: every built-in alert carries `runbook_url` =
    /// this + `#` + its section. Default: the monitor's own `/runbooks`
    /// page, under `external_url` when that is set (an absolute link in
    /// notifications), else as the path `/runbooks`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runbook_base_url: Option<String>,
    /// Inhibition, with Alertmanager's semantics; absent: the two default
    /// rules ([`InhibitRuleConfig::defaults`]); `[]`: none.
    pub inhibit_rules: Vec<InhibitRuleConfig>,
}

/// `alerts.inhibit_rules[]`: a firing alert matching `source_matchers`
/// suppresses the alerts matching `target_matchers` whose `equal` labels
/// have the same values (a label missing on both is equal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    /// Matchers (`name=value`, `name!=value`, `name=~regex`, `name!~regex`) the source alert satisfies.
    pub source_matchers: Vec<String>,
    /// Matchers the suppressed alert satisfies.
    pub target_matchers: Vec<String>,
    /// Labels whose values must be equal on both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub equal: Vec<String>,
}

impl InhibitRuleConfig {
    /// The defaults: quorum loss suppresses the alerts that only restate
    /// it, and a critical alert suppresses the warning one of the same
    /// `alertname`, cluster and member.
    pub fn defaults() -> Vec<InhibitRuleConfig> {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        vec![
            InhibitRuleConfig {
                source_matchers: list(&["alertname=etcdInsufficientMembers"]),
                target_matchers: list(&[
                    "alertname=~etcdMembersDown|etcdAvailableMembersLow|etcdNoLeader",
                ]),
                equal: list(&["cluster"]),
            },
            InhibitRuleConfig {
                source_matchers: list(&["severity=critical"]),
                target_matchers: list(&["severity=warning"]),
                equal: list(&["alertname", "cluster", "member"]),
            },
        ]
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            rules: BTreeMap::new(),
            custom_rules: Vec::new(),
            repeat_interval: Duration::from_secs(4 * 3600),
            group_interval: Duration::from_secs(300),
            channels: Vec::new(),
            routes: Vec::new(),
            silences: Vec::new(),
            external_url: None,
            runbook_base_url: None,
            inhibit_rules: InhibitRuleConfig::defaults(),
        }
    }
}

/// `alerts.rules.<name>`: any subset of a built-in rule's settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleOverride {
    /// Whether the rule is evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The rule's threshold, in the unit its documentation gives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// How long the condition must hold before the alert fires.
    #[serde(
        rename = "for",
        with = "crate::config::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub for_: Option<Duration>,
    /// `warning` or `critical` (or `info`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<AlertSeverity>,
    /// The window of rate and growth rules.
    #[serde(
        with = "crate::config::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub window: Option<Duration>,
}

/// `alerts.custom_rules[]`: a threshold over one stored metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRule {
    /// The alert name.
    pub name: String,
    /// A stored metric name (`wal_fsync_p99_seconds`, `probe_put_p99_ms`, ...).
    pub metric: String,
    /// `>`, `>=`, `<`, `<=`, `==`, `!=`.
    pub comparison: Comparison,
    /// The value compared against.
    pub threshold: f64,
    /// How long the condition must hold.
    #[serde(rename = "for", with = "duration", default = "zero")]
    pub for_: Duration,
    /// Severity label.
    #[serde(default = "warning")]
    pub severity: AlertSeverity,
    /// Whether the rule is evaluated.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn zero() -> Duration {
    Duration::ZERO
}
fn warning() -> AlertSeverity {
    AlertSeverity::Warning
}
fn yes() -> bool {
    true
}

/// A comparison of a custom rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    /// Greater than.
    #[serde(rename = ">")]
    Gt,
    /// Greater than or equal.
    #[serde(rename = ">=")]
    Ge,
    /// Less than.
    #[serde(rename = "<")]
    Lt,
    /// Less than or equal.
    #[serde(rename = "<=")]
    Le,
    /// Equal.
    #[serde(rename = "==")]
    Eq,
    /// Not equal.
    #[serde(rename = "!=")]
    Ne,
}

impl Comparison {
    /// Whether `value <op> threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Gt => value > threshold,
            Comparison::Ge => value >= threshold,
            Comparison::Lt => value < threshold,
            Comparison::Le => value <= threshold,
            Comparison::Eq => value == threshold,
            Comparison::Ne => value != threshold,
        }
    }

    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Eq => "==",
            Comparison::Ne => "!=",
        }
    }
}

/// The `severity` label of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    /// Informational.
    Info,
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
}

impl AlertSeverity {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Info => "info",
            AlertSeverity::Warning => "warning",
            AlertSeverity::Critical => "critical",
        }
    }
}

/// `alerts.routes[]`: which channels receive the alerts this route matches.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// Severities matched; empty: any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub severity: Vec<AlertSeverity>,
    /// Clusters matched; empty: any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// Labels that must all be equal (`alertname: etcdNoLeader`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Channel names.
    pub channels: Vec<String>,
    /// Keep looking at later routes after this one matched.
    #[serde(rename = "continue")]
    pub continue_: bool,
}

/// `alerts.silences[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceConfig {
    /// `name=value` or `name!=value`, all of which must hold.
    pub matchers: Vec<String>,
    /// RFC 3339 start; absent: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// RFC 3339 end (`2026-12-01T08:00:00Z`).
    pub ends_at: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
    /// Who.
    #[serde(default)]
    pub created_by: String,
}

/// The kinds of channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelType {
    /// Generic JSON webhook, optionally HMAC-signed.
    Webhook,
    /// Slack incoming webhook.
    Slack,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// Prometheus Alertmanager (`POST /api/v2/alerts`).
    Alertmanager,
    /// SMTP email.
    Email,
    /// The monitor's own log.
    Console,
}

impl ChannelType {
    /// `url` as logs, errors and `config check` may show it: Slack and
    /// webhook URLs carry their credential in the path, others may carry a
    /// password in the user info.
    pub fn shown_url(self, url: &str) -> String {
        match self {
            ChannelType::Slack | ChannelType::Webhook => {
                crate::config::secret::redact_url_path(url)
            }
            _ => crate::config::secret::redact_url_password(url),
        }
    }

    /// The `type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelType::Webhook => "webhook",
            ChannelType::Slack => "slack",
            ChannelType::Pagerduty => "pagerduty",
            ChannelType::Alertmanager => "alertmanager",
            ChannelType::Email => "email",
            ChannelType::Console => "console",
        }
    }
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption (loopback relays only).
    None,
}

/// `alerts.channels[]`: one notification channel. Which settings apply
/// depends on `type`; settings of another type are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Name used by routes and in delivery records.
    pub name: String,
    /// `webhook`, `slack`, `pagerduty`, `alertmanager`, `email`, `console`.
    #[serde(rename = "type")]
    pub kind: ChannelType,
    /// Per-attempt timeout.
    #[serde(with = "duration", default = "default_timeout")]
    pub timeout: Duration,
    /// First retry delay; doubles per attempt, with jitter.
    #[serde(with = "duration", default = "default_backoff")]
    pub retry_backoff: Duration,
    /// Longest retry delay.
    #[serde(with = "duration", default = "default_max_backoff")]
    pub max_backoff: Duration,
    /// Give up on a notification this old (marked failed).
    #[serde(with = "duration", default = "default_give_up")]
    pub give_up_after: Duration,
    /// webhook, slack, pagerduty (default: PagerDuty's enqueue endpoint), alertmanager (base URL).
    #[serde(
        default,
        with = "crate::config::secret::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub url: Option<String>,
    /// File whose first line is `url` (a Slack or webhook URL is a credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    /// webhook: extra HTTP headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// webhook: HMAC-SHA256 shared secret; signature in `X-Etcd-Monitor-Signature: sha256=<hex>`.
    #[serde(
        default,
        with = "crate::config::secret::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub secret: Option<String>,
    /// webhook: file whose first line is `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// pagerduty: the integration's routing key.
    #[serde(
        default,
        with = "crate::config::secret::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub routing_key: Option<String>,
    /// pagerduty: file whose first line is `routing_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key_file: Option<PathBuf>,
    /// email: SMTP server host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_host: Option<String>,
    /// email: SMTP port (default 587 for starttls, 465 for tls, 25 for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_port: Option<u16>,
    /// email: `starttls`, `tls` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_tls: Option<SmtpTls>,
    /// email: PEM CA bundle to verify the server, added to the platform's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// email: SMTP user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// email: SMTP password.
    #[serde(
        default,
        with = "crate::config::secret::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub password: Option<String>,
    /// email: file whose first line is `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// email: sender address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// email: recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn default_give_up() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// PagerDuty's Events API v2 endpoint.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

impl ChannelConfig {
    /// A channel of `kind` named `name` with every setting at its default.
    pub fn new(name: &str, kind: ChannelType) -> Self {
        ChannelConfig {
            name: name.into(),
            kind,
            timeout: default_timeout(),
            retry_backoff: default_backoff(),
            max_backoff: default_max_backoff(),
            give_up_after: default_give_up(),
            url: None,
            url_file: None,
            headers: BTreeMap::new(),
            secret: None,
            secret_file: None,
            routing_key: None,
            routing_key_file: None,
            smtp_host: None,
            smtp_port: None,
            smtp_tls: None,
            ca_file: None,
            username: None,
            password: None,
            password_file: None,
            from: None,
            to: Vec::new(),
        }
    }

    /// A copy with every `*_file` secret read into its value (`url_file`
    /// into `url`, ...). The error names the file, never the secret.
    pub fn with_secret_files(&self) -> Result<ChannelConfig, String> {
        let mut c = self.clone();
        for (value, file) in [
            (&mut c.url, &c.url_file),
            (&mut c.secret, &c.secret_file),
            (&mut c.routing_key, &c.routing_key_file),
            (&mut c.password, &c.password_file),
        ] {
            if let Some(p) = file {
                *value = Some(crate::config::secret::read_secret_file(p)?);
            }
        }
        Ok(c)
    }

    fn problems(&self, at: &dyn Fn(&str) -> String, out: &mut Vec<(String, String)>) {
        use ChannelType::*;
        let set: [(&str, bool, &[ChannelType]); 16] = [
            (
                "url",
                self.url.is_some(),
                &[Webhook, Slack, Pagerduty, Alertmanager],
            ),
            (
                "url_file",
                self.url_file.is_some(),
                &[Webhook, Slack, Pagerduty, Alertmanager],
            ),
            ("headers", !self.headers.is_empty(), &[Webhook]),
            ("secret", self.secret.is_some(), &[Webhook]),
            ("secret_file", self.secret_file.is_some(), &[Webhook]),
            ("routing_key", self.routing_key.is_some(), &[Pagerduty]),
            (
                "routing_key_file",
                self.routing_key_file.is_some(),
                &[Pagerduty],
            ),
            ("smtp_host", self.smtp_host.is_some(), &[Email]),
            ("smtp_port", self.smtp_port.is_some(), &[Email]),
            ("smtp_tls", self.smtp_tls.is_some(), &[Email]),
            ("ca_file", self.ca_file.is_some(), &[Email]),
            ("username", self.username.is_some(), &[Email]),
            ("password", self.password.is_some(), &[Email]),
            ("password_file", self.password_file.is_some(), &[Email]),
            ("from", self.from.is_some(), &[Email]),
            ("to", !self.to.is_empty(), &[Email]),
        ];
        let kind = self.kind.as_str();
        for (key, present, types) in set {
            if present && !types.contains(&self.kind) {
                out.push((at(key), format!("not a setting of a {kind} channel")));
            }
        }
        for (key, value, file) in [
            ("url", &self.url, &self.url_file),
            ("secret", &self.secret, &self.secret_file),
            ("routing_key", &self.routing_key, &self.routing_key_file),
            ("password", &self.password, &self.password_file),
        ] {
            if value.is_some() && file.is_some() {
                out.push((
                    at(&format!("{key}_file")),
                    format!("set either {key} or {key}_file, not both"),
                ));
            }
            if let Some(p) = file {
                if let Err(e) = crate::config::secret::read_secret_file(p) {
                    out.push((at(&format!("{key}_file")), e));
                }
            }
        }
        let url = self.url.is_some() || self.url_file.is_some();
        let required: &[(&str, bool)] = match self.kind {
            Webhook | Slack | Alertmanager => &[("url", url)],
            Pagerduty => &[(
                "routing_key",
                self.routing_key.is_some() || self.routing_key_file.is_some(),
            )],
            Email => &[
                ("smtp_host", self.smtp_host.is_some()),
                ("from", self.from.is_some()),
                ("to", !self.to.is_empty()),
            ],
            Console => &[],
        };
        for (key, ok) in required {
            if !ok {
                out.push((at(key), format!("required for a {kind} channel")));
            }
        }
        if let Some(url) = &self.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                out.push((at("url"), format!("{url:?} is not an http(s) URL")));
            }
        }
        if self.timeout.is_zero() {
            out.push((at("timeout"), "must be greater than zero".into()));
        }
        if let Some(p) = &self.ca_file {
            if let Err(e) = std::fs::read(p) {
                out.push((at("ca_file"), format!("cannot read {}: {e}", p.display())));
            }
        }
        if self.username.is_some() != (self.password.is_some() || self.password_file.is_some()) {
            out.push((at("username"), "username and password go together".into()));
        }
    }
}

impl AlertsConfig {
    /// The base of the runbook links: `runbook_base_url`, else the
    /// monitor's `/runbooks` page (under `external_url` when set).
    pub fn runbook_base(&self) -> String {
        match (&self.runbook_base_url, &self.external_url) {
            (Some(base), _) => base.clone(),
            (None, Some(external)) => format!("{}/runbooks", external.trim_end_matches('/')),
            (None, None) => "/runbooks".to_string(),
        }
    }

    /// Checks the schema alone can make: thresholds, channel settings,
    /// routes naming channels that do not exist, matchers. Rule names,
    /// metric names and silences are checked against the rule table by
    /// [`crate::alert::config_problems`].
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, o) in &self.rules {
            if o.threshold.is_some_and(|t| !t.is_finite()) {
                out.push((
                    format!("alerts.rules.{name}.threshold"),
                    "must be a finite number".into(),
                ));
            }
        }
        for (i, r) in self.custom_rules.iter().enumerate() {
            if r.name.trim().is_empty() {
                out.push((
                    format!("alerts.custom_rules[{i}].name"),
                    "must not be empty".into(),
                ));
            }
        }
        for (i, c) in self.channels.iter().enumerate() {
            let at = |key: &str| format!("alerts.channels[{i}].{key}");
            if c.name.trim().is_empty() {
                out.push((at("name"), "must not be empty".into()));
            }
            if self.channels.iter().take(i).any(|o| o.name == c.name) {
                out.push((at("name"), format!("duplicate channel name {:?}", c.name)));
            }
            c.problems(&at, &mut out);
        }
        for (i, r) in self.routes.iter().enumerate() {
            if r.channels.is_empty() {
                out.push((
                    format!("alerts.routes[{i}].channels"),
                    "name at least one channel".into(),
                ));
            }
            for (j, name) in r.channels.iter().enumerate() {
                if !self.channels.iter().any(|c| &c.name == name) {
                    out.push((
                        format!("alerts.routes[{i}].channels[{j}]"),
                        format!("no channel named {name:?} in alerts.channels"),
                    ));
                }
            }
        }
        for (i, r) in self.inhibit_rules.iter().enumerate() {
            for (key, list) in [
                ("source_matchers", &r.source_matchers),
                ("target_matchers", &r.target_matchers),
            ] {
                if list.is_empty() {
                    out.push((
                        format!("alerts.inhibit_rules[{i}].{key}"),
                        "name at least one matcher".into(),
                    ));
                }
                for (j, m) in list.iter().enumerate() {
                    if let Err(e) = crate::model::Matcher::parse(m) {
                        out.push((format!("alerts.inhibit_rules[{i}].{key}[{j}]"), e));
                    }
                }
            }
            for (j, l) in r.equal.iter().enumerate() {
                if l.trim().is_empty() {
                    out.push((
                        format!("alerts.inhibit_rules[{i}].equal[{j}]"),
                        "a label name must not be empty".into(),
                    ));
                }
            }
        }
        for (key, url) in [
            ("alerts.external_url", &self.external_url),
            ("alerts.runbook_base_url", &self.runbook_base_url),
        ] {
            if let Some(url) = url {
                if !(url.starts_with("http://")
                    || url.starts_with("https://")
                    || url.starts_with('/'))
                {
                    out.push((
                        key.into(),
                        format!("{url:?} is not an http(s) URL or a path"),
                    ));
                }
            }
        }
        if self.repeat_interval < Duration::from_secs(1) {
            out.push(("alerts.repeat_interval".into(), "use at least 1s".into()));
        }
        out
    }

    /// A copy with channel secrets replaced by [`crate::config::REDACTED`].
    pub fn redacted(&self) -> AlertsConfig {
        let mut shown = self.clone();
        let hide = |v: &mut Option<String>| {
            if v.is_some() {
                *v = Some(crate::config::REDACTED.to_string());
            }
        };
        for c in &mut shown.channels {
            hide(&mut c.secret);
            hide(&mut c.routing_key);
            hide(&mut c.password);
            if let Some(url) = &mut c.url {
                *url = c.kind.shown_url(url);
            }
            for (name, value) in c.headers.iter_mut() {
                let n = name.to_ascii_lowercase();
                if n.contains("authorization") || n.contains("token") || n.contains("key") {
                    *value = crate::config::REDACTED.to_string();
                }
            }
        }
        shown
    }
}
