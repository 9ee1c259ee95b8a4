//! Channels: one [`Notification`] rendered for each receiver type and sent
//! once. Retries, ordering and bookkeeping belong to [`super::deliver`].

use std::time::{Duration, UNIX_EPOCH};

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{Value, json};

use super::{Alert, Notification, NotificationStatus};
use crate::config::alerts::{ChannelConfig, ChannelType, PAGERDUTY_URL, SmtpTls};

/// The webhook signature header: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Etcd-Monitor-Signature";
/// The notification id header (for de-duplication by receivers).
pub const ID_HEADER: &str = "X-Etcd-Monitor-Notification-Id";

/// A channel ready to send.
pub struct Sender {
    channel: ChannelConfig,
    http: reqwest::Client,
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
}

/// Shortens `s` to at most `max_bytes`, on a character boundary (a cut
/// inside a multi-byte character would panic).
pub fn truncate_chars(s: &mut String, max_bytes: usize) {
    if s.len() <= max_bytes {
        return;
    }
    let mut cut = max_bytes;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
}

/// RFC 3339 time of `ms` since the epoch.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The HMAC-SHA256 of `body` with `secret`, as the signature header's value.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The PagerDuty `dedup_key` of a group: the same for its trigger and resolve.
pub fn dedup_key(n: &Notification) -> String {
    format!("etcd-monitor/{}", n.group_key)
}

fn alert_json(a: &Alert) -> Value {
    json!({
        "labels": a.labels,
        "summary": a.summary,
        "value": a.value,
        "state": a.state,
        "startsAt": a.starts_at_ms.map(rfc3339),
        "endsAt": a.ends_at_ms.map(rfc3339),
        "suppressed": a.suppressed,
        "runbook_url": a.runbook_url,
    })
}

/// The generic webhook's JSON body.
pub fn webhook_body(n: &Notification) -> Value {
    json!({
        "version": "1",
        "id": n.id,
        "status": n.status,
        "reason": n.reason,
        "group_key": n.group_key,
        "cluster": n.cluster,
        "alertname": n.alertname,
        "severity": n.severity,
        "title": n.title(),
        "at": rfc3339(n.at_ms),
        "external_url": n.external_url,
        "alerts": n.alerts.iter().map(alert_json).collect::<Vec<_>>(),
    })
}

fn text_body(n: &Notification) -> String {
    let mut s = format!("{}\n\n", n.title());
    for a in &n.alerts {
        s.push_str(&format!("- {}\n", a.summary));
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s.push_str(&format!("  labels: {}\n", labels.join(", ")));
        if let Some(t) = a.starts_at_ms {
            s.push_str(&format!("  since: {}\n", rfc3339(t)));
        }
        if let Some(t) = a.ends_at_ms {
            s.push_str(&format!("  resolved: {}\n", rfc3339(t)));
        }
        if let Some(url) = &a.runbook_url {
            s.push_str(&format!("  runbook: {url}\n"));
        }
    }
    if let Some(url) = &n.external_url {
        s.push_str(&format!("\n{url}\n"));
    }
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html_body(n: &Notification) -> String {
    let colour = colour(n);
    let mut s = format!(
        "<html><body><h2 style=\"color:{colour}\">{}</h2><table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\
         <tr><th>alert</th><th>labels</th><th>since</th><th>resolved</th><th>runbook</th></tr>",
        escape(&n.title())
    );
    for a in &n.alerts {
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let runbook = a
            .runbook_url
            .as_deref()
            .map(|u| format!("<a href=\"{0}\">runbook</a>", escape(u)))
            .unwrap_or_default();
        s.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{runbook}</td></tr>",
            escape(&a.summary),
            escape(&labels.join(", ")),
            a.starts_at_ms.map(rfc3339).unwrap_or_default(),
            a.ends_at_ms.map(rfc3339).unwrap_or_default()
        ));
    }
    s.push_str("</table>");
    if let Some(url) = &n.external_url {
        s.push_str(&format!("<p><a href=\"{0}\">{0}</a></p>", escape(url)));
    }
    s.push_str("</body></html>");
    s
}

/// Slack attachment colour: green resolved, red critical, amber warning, blue info.
fn colour(n: &Notification) -> &'static str {
    match (n.status, n.severity.as_str()) {
        (NotificationStatus::Resolved, _) => "#2eb886",
        (_, "critical") => "#d00000",
        (_, "warning") => "#f2a900",
        _ => "#439fe0",
    }
}

/// The Slack incoming-webhook body.
pub fn slack_body(n: &Notification) -> Value {
    let lines: Vec<String> = n
        .alerts
        .iter()
        .map(|a| match &a.runbook_url {
            Some(url) => format!("• {} (<{url}|runbook>)", a.summary),
            None => format!("• {}", a.summary),
        })
        .collect();
    json!({
        "text": n.title(),
        "attachments": [{
            "color": colour(n),
            "title": n.title(),
            "title_link": n.external_url,
            "text": lines.join("\n"),
            "fields": [
                { "title": "cluster", "value": n.cluster, "short": true },
                { "title": "severity", "value": n.severity, "short": true },
            ],
            "footer": "etcd-monitor",
            "ts": n.at_ms / 1000,
        }],
    })
}

/// The PagerDuty Events API v2 body.
pub fn pagerduty_body(routing_key: &str, n: &Notification) -> Value {
    let action = match n.status {
        NotificationStatus::Firing => "trigger",
        NotificationStatus::Resolved => "resolve",
    };
    let severity = match n.severity.as_str() {
        "critical" => "critical",
        "info" => "info",
        _ => "warning",
    };
    let mut summary = n.title();
    if let Some(a) = n.alerts.first() {
        summary = format!("{summary}: {}", a.summary);
    }
    truncate_chars(&mut summary, 1024);
    json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key(n),
        "client": "etcd-monitor",
        "client_url": n.external_url,
        "payload": {
            "summary": summary,
            "source": n.cluster,
            "severity": severity,
            "component": "etcd",
            "group": n.cluster,
            "class": n.alertname,
            "timestamp": rfc3339(n.at_ms),
            "custom_details": { "alerts": n.alerts.iter().map(alert_json).collect::<Vec<_>>() },
        },
    })
}

/// The Alertmanager `POST /api/v2/alerts` body. Firing alerts carry no
/// `endsAt`: Alertmanager resolves them after its `resolve_timeout` unless
/// re-sent, so pair this channel with a `repeat_interval` below it.
pub fn alertmanager_body(n: &Notification) -> Value {
    Value::Array(
        n.alerts
            .iter()
            .map(|a| {
                let mut annotations = json!({ "summary": a.summary, "value": a.value.to_string() });
                if let Some(url) = &a.runbook_url {
                    annotations["runbook_url"] = json!(url);
                }
                let mut v = json!({
                    "labels": a.labels,
                    "annotations": annotations,
                    "startsAt": rfc3339(a.starts_at_ms.unwrap_or(n.at_ms)),
                    "generatorURL": n.external_url.clone().unwrap_or_default(),
                });
                if n.status == NotificationStatus::Resolved {
                    v["endsAt"] = json!(rfc3339(a.ends_at_ms.unwrap_or(n.at_ms)));
                }
                v
            })
            .collect(),
    )
}

impl Sender {
    /// Prepares `channel` (HTTP client, SMTP transport).
    pub fn new(channel: &ChannelConfig) -> Result<Sender, String> {
        let channel = &channel.with_secret_files()?;
        let http = reqwest::Client::builder()
            .timeout(channel.timeout)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let smtp = if channel.kind == ChannelType::Email {
            Some(smtp_transport(channel)?)
        } else {
            None
        };
        Ok(Sender {
            channel: channel.clone(),
            http,
            smtp,
        })
    }

    /// Sends `n` once.
    pub async fn send(&self, n: &Notification) -> Result<(), String> {
        let c = &self.channel;
        let url = c.url.clone().unwrap_or_default();
        match c.kind {
            ChannelType::Console => {
                let lines: Vec<&str> = n.alerts.iter().map(|a| a.summary.as_str()).collect();
                match n.status {
                    NotificationStatus::Firing => {
                        tracing::warn!(target: "etcd_monitor::alert", group = %n.group_key, reason = %n.reason, alerts = %lines.join("; "), "{}", n.title())
                    }
                    NotificationStatus::Resolved => {
                        tracing::info!(target: "etcd_monitor::alert", group = %n.group_key, alerts = %lines.join("; "), "{}", n.title())
                    }
                }
                Ok(())
            }
            ChannelType::Webhook => {
                let body = serde_json::to_vec(&webhook_body(n)).map_err(|e| e.to_string())?;
                let mut req = self
                    .http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header(ID_HEADER, &n.id);
                for (k, v) in &c.headers {
                    req = req.header(k, v);
                }
                if let Some(secret) = &c.secret {
                    req = req.header(SIGNATURE_HEADER, signature(secret, &body));
                }
                self.post(req.body(body)).await
            }
            ChannelType::Slack => self.post(self.http.post(&url).json(&slack_body(n))).await,
            ChannelType::Pagerduty => {
                let url = if url.is_empty() {
                    PAGERDUTY_URL.to_string()
                } else {
                    url
                };
                let key = c.routing_key.clone().unwrap_or_default();
                self.post(self.http.post(&url).json(&pagerduty_body(&key, n)))
                    .await
            }
            ChannelType::Alertmanager => {
                let url = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
                self.post(self.http.post(&url).json(&alertmanager_body(n)))
                    .await
            }
            ChannelType::Email => {
                let Some(smtp) = &self.smtp else {
                    return Err("SMTP transport not set up".into());
                };
                let parse = |a: &str| {
                    a.parse::<Mailbox>()
                        .map_err(|e| format!("address {a:?}: {e}"))
                };
                let mut b = Message::builder()
                    .from(parse(c.from.as_deref().unwrap_or_default())?)
                    .subject(n.title());
                for to in &c.to {
                    b = b.to(parse(to)?);
                }
                let message = b
                    .multipart(MultiPart::alternative_plain_html(
                        text_body(n),
                        html_body(n),
                    ))
                    .map_err(|e| format!("cannot build the message: {e}"))?;
                smtp.send(message).await.map(|_| ()).map_err(|e| {
                    format!("SMTP {}: {e}", c.smtp_host.as_deref().unwrap_or_default())
                })
            }
        }
    }

    async fn post(&self, req: reqwest::RequestBuilder) -> Result<(), String> {
        // reqwest's message names the URL, which may be the credential
        // (Slack, webhooks): show the channel's redacted URL instead.
        let resp = req.send().await.map_err(|e| {
            let url = self.channel.url.as_deref().unwrap_or(PAGERDUTY_URL);
            format!(
                "{} ({}): {}",
                self.channel.name,
                self.channel.kind.shown_url(url),
                crate::connection::error_chain(&e.without_url())
            )
        })?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            let text = resp.text().await.unwrap_or_default();
            Err(format!(
                "{} answered {status}: {}",
                self.channel.name,
                text.chars().take(200).collect::<String>()
            ))
        }
    }
}

fn smtp_transport(c: &ChannelConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let host = c.smtp_host.clone().unwrap_or_default();
    let mode = c.smtp_tls.unwrap_or_default();
    let port = c.smtp_port.unwrap_or(match mode {
        SmtpTls::Starttls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    });
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
        .port(port)
        .timeout(Some(c.timeout));
    let params = || -> Result<TlsParameters, String> {
        let mut tls = TlsParameters::builder(host.clone());
        if let Some(path) = &c.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read CA bundle {}: {e}", path.display()))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
            tls = tls.add_root_certificate(cert);
        }
        tls.build_rustls()
            .map_err(|e| format!("TLS for {host}: {e}"))
    };
    b = match mode {
        SmtpTls::None => b.tls(Tls::None),
        SmtpTls::Starttls => b.tls(Tls::Required(params()?)),
        SmtpTls::Tls => b.tls(Tls::Wrapper(params()?)),
    };
    if let (Some(u), Some(p)) = (&c.username, &c.password) {
        b = b.credentials(Credentials::new(u.clone(), p.clone()));
    }
    Ok(b.build())
}
