//! Alerting end to end: a real etcd cluster, the monitor, and real local
//! receivers (HTTP and SMTP sinks written here, on loopback) that record
//! what they get.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_monitor::alert::channels;
use etcd_monitor::alert::silence::NewSilence;
use etcd_monitor::config::alerts::{
    AlertSeverity, ChannelConfig, ChannelType, Comparison, CustomRule, RuleOverride, SmtpTls,
};
use etcd_monitor::config::{ClusterConfig, Config};
use etcd_monitor::lifecycle::Lifecycle;
use etcd_monitor::monitor::Monitor;
use etcd_monitor::store::unix_ms;
use etcd_testkit::{ClusterOptions, EtcdCluster};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const HEALTH: Duration = Duration::from_millis(300);

/// One request an HTTP sink received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    at: Instant,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Inbox = Arc<Mutex<Vec<Received>>>;

/// A minimal HTTP/1.1 sink: records each request, answers `status`.
async fn http_sink(listener: TcpListener, status: u16) -> Inbox {
    let inbox: Inbox = Arc::default();
    let rec = inbox.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let rec = rec.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).await.unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.trim().split_once(':') {
                        headers.push((k.trim().to_string(), v.trim().to_string()));
                    }
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                if r.read_exact(&mut body).await.is_err() {
                    return;
                }
                rec.lock().unwrap().push(Received {
                    path,
                    headers,
                    body,
                    at: Instant::now(),
                });
                let answer = format!(
                    "HTTP/1.1 {status} OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = r.get_mut().write_all(answer.as_bytes()).await;
            });
        }
    });
    inbox
}

/// What an SMTP sink saw: each message's DATA, and every command line.
#[derive(Debug, Default)]
struct Smtp {
    messages: Vec<String>,
    commands: Vec<String>,
    tls_sessions: usize,
}

type SmtpLog = Arc<Mutex<Smtp>>;

/// How an SMTP sink secures its sessions.
#[derive(Clone)]
enum SinkTls {
    Plain,
    StartTls(tokio_rustls::TlsAcceptor),
    Implicit(tokio_rustls::TlsAcceptor),
}

enum Dialog {
    Closed,
    StartTls,
}

/// One SMTP dialog over `r` until QUIT, EOF, or STARTTLS (when offered).
async fn smtp_dialog<S>(r: &mut BufReader<S>, offer_starttls: bool, log: &SmtpLog) -> Dialog
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return Dialog::Closed;
        }
        let cmd = line.trim_end().to_string();
        log.lock().unwrap().commands.push(cmd.clone());
        let upper = cmd.to_ascii_uppercase();
        let answer: String = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            if offer_starttls {
                "250-sink\r\n250-STARTTLS\r\n250 8BITMIME\r\n".into()
            } else {
                "250-sink\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n".into()
            }
        } else if upper == "STARTTLS" && offer_starttls {
            let _ = r.get_mut().write_all(b"220 go ahead\r\n").await;
            return Dialog::StartTls;
        } else if upper.starts_with("AUTH") {
            "235 accepted\r\n".into()
        } else if upper == "DATA" {
            let _ = r.get_mut().write_all(b"354 go on\r\n").await;
            let mut data = String::new();
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).await.unwrap_or(0) == 0 {
                    return Dialog::Closed;
                }
                if l == ".\r\n" {
                    break;
                }
                data.push_str(&l);
            }
            log.lock().unwrap().messages.push(data);
            "250 queued\r\n".into()
        } else if upper == "QUIT" {
            let _ = r.get_mut().write_all(b"221 bye\r\n").await;
            return Dialog::Closed;
        } else {
            "250 ok\r\n".into()
        };
        let _ = r.get_mut().write_all(answer.as_bytes()).await;
    }
}

/// A minimal SMTP sink on loopback: accepts every message and records it.
async fn smtp_sink(tls: SinkTls) -> (u16, SmtpLog) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: SmtpLog = Arc::default();
    let rec = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (rec, tls) = (rec.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    SinkTls::Implicit(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        rec.lock().unwrap().tls_sessions += 1;
                        let mut r = BufReader::new(stream);
                        let _ = r.get_mut().write_all(b"220 sink ESMTP\r\n").await;
                        smtp_dialog(&mut r, false, &rec).await;
                    }
                    SinkTls::Plain | SinkTls::StartTls(_) => {
                        let mut r = BufReader::new(stream);
                        let _ = r.get_mut().write_all(b"220 sink ESMTP\r\n").await;
                        let offer = matches!(tls, SinkTls::StartTls(_));
                        if let (Dialog::StartTls, SinkTls::StartTls(acceptor)) =
                            (smtp_dialog(&mut r, offer, &rec).await, &tls)
                        {
                            let Ok(stream) = acceptor.accept(r.into_inner()).await else {
                                return;
                            };
                            rec.lock().unwrap().tls_sessions += 1;
                            smtp_dialog(&mut BufReader::new(stream), false, &rec).await;
                        }
                    }
                }
            });
        }
    });
    (port, log)
}

/// A TLS acceptor with etcd-testkit's server certificate (SAN 127.0.0.1).
fn acceptor(files: &etcd_testkit::TlsFiles) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.server_cert_file)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&files.server_key_file).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn sink(status: u16) -> (String, Inbox) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (url, http_sink(listener, status).await)
}

fn config(cluster: &EtcdCluster, db: &std::path::Path, for_: Duration) -> Config {
    let mut c = Config {
        clusters: vec![ClusterConfig {
            name: "main".into(),
            endpoints: cluster.endpoints(),
            dial_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(1),
            ..ClusterConfig::default()
        }],
        ..Config::default()
    };
    c.monitoring.health_check_interval = HEALTH;
    c.monitoring.metrics_interval = Duration::from_millis(500);
    c.storage.url = format!("sqlite://{}", db.display());
    // Reachability only: peer send failures linger after a member returns.
    c.alerts.rules.insert(
        "etcdMembersDown".into(),
        RuleOverride {
            for_: Some(for_),
            threshold: Some(1e9),
            ..Default::default()
        },
    );
    c
}

fn webhook(url: &str) -> ChannelConfig {
    let mut w = ChannelConfig::new("hook", ChannelType::Webhook);
    w.url = Some(format!("{url}/hook"));
    w.secret = Some("s3cret".into());
    w.headers.insert("X-Team".into(), "etcd".into());
    w.retry_backoff = Duration::from_millis(200);
    w.max_backoff = Duration::from_secs(1);
    w.timeout = Duration::from_secs(2);
    w
}

async fn start(config: &Config) -> (Monitor, Lifecycle) {
    let (daemon, lifecycle) = start_daemon(config).await;
    (daemon.monitor, lifecycle)
}

/// The monitor and its alert engine's handle (silences, acknowledgements).
async fn start_daemon(config: &Config) -> (etcd_monitor::run::Daemon, Lifecycle) {
    let lifecycle = Lifecycle::new();
    let daemon = etcd_monitor::run::start(config, &lifecycle).await.unwrap();
    (daemon, lifecycle)
}

/// A follower's index (killing it changes no leader).
async fn follower(cluster: &EtcdCluster) -> usize {
    let leader = cluster.leader_index().await.unwrap().unwrap();
    (leader + 1) % 3
}

fn count(inbox: &Inbox, pick: impl Fn(&Received) -> bool) -> usize {
    inbox.lock().unwrap().iter().filter(|r| pick(r)).count()
}

async fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_of(r: &Received) -> String {
    let v = r.json();
    if let Some(s) = v.get("status").and_then(Value::as_str) {
        return s.to_string(); // webhook
    }
    if let Some(a) = v.get("event_action").and_then(Value::as_str) {
        return if a == "trigger" {
            "firing".into()
        } else {
            "resolved".into()
        };
    }
    if let Some(arr) = v.as_array() {
        return if arr[0].get("endsAt").is_some() {
            "resolved".into()
        } else {
            "firing".into()
        };
    }
    let text = v["text"].as_str().unwrap_or("");
    if text.contains("[RESOLVED]") {
        "resolved".into()
    } else {
        "firing".into()
    }
}

fn names_of(r: &Received) -> String {
    let v = r.json();
    v.get("alertname")
        .or_else(|| v.pointer("/payload/class"))
        .or_else(|| v.pointer("/0/labels/alertname"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| v["text"].as_str().unwrap_or("").to_string())
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_one_notification_per_channel_and_one_resolve() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&cluster, &dir.path().join("a.db"), Duration::ZERO);
    let (url, inbox) = sink(200).await;
    let (pd_url, pd_inbox) = sink(202).await;
    let (smtp_port, mails) = smtp_sink(SinkTls::Plain).await;
    cfg.alerts.external_url = Some("http://dashboard.example/".into());
    cfg.alerts.channels.push(webhook(&url));
    let mut slack = ChannelConfig::new("slack", ChannelType::Slack);
    slack.url = Some(format!("{url}/slack"));
    let mut pd = ChannelConfig::new("pd", ChannelType::Pagerduty);
    pd.url = Some(format!("{pd_url}/v2/enqueue"));
    pd.routing_key = Some("R0UT1NG".into());
    let mut am = ChannelConfig::new("am", ChannelType::Alertmanager);
    am.url = Some(format!("{url}/am"));
    let mut mail = ChannelConfig::new("mail", ChannelType::Email);
    mail.smtp_host = Some("127.0.0.1".into());
    mail.smtp_port = Some(smtp_port);
    mail.smtp_tls = Some(SmtpTls::None);
    mail.from = Some("etcd-monitor <monitor@example.com>".into());
    mail.to = vec!["oncall@example.com".into()];
    let console = ChannelConfig::new("log", ChannelType::Console);
    cfg.alerts.channels.extend([slack, pd, am, mail, console]);
    assert!(
        cfg.alerts.problems().is_empty(),
        "{:?}",
        cfg.alerts.problems()
    );

    let (monitor, lifecycle) = start(&cfg).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // healthy rounds first
    assert_eq!(inbox.lock().unwrap().len(), 0, "notified while healthy");
    let victim = follower(&cluster).await;
    cluster.kill(victim).unwrap();
    let killed = Instant::now();

    let hook = |r: &Received| r.path == "/hook";
    let slack = |r: &Received| r.path == "/slack";
    let am = |r: &Received| r.path == "/am/api/v2/alerts";
    wait_until("firing on every channel", Duration::from_secs(15), || {
        count(&inbox, hook) >= 1
            && count(&inbox, slack) >= 1
            && count(&inbox, am) >= 1
            && count(&pd_inbox, |_| true) >= 1
            && !mails.lock().unwrap().messages.is_empty()
    })
    .await;
    let first = inbox
        .lock()
        .unwrap()
        .iter()
        .find(|r| hook(r))
        .unwrap()
        .clone();
    let latency = first.at.duration_since(killed);
    eprintln!(
        "ALERT_LATENCY member killed -> webhook received: {} ms (health interval {} ms, for 0s)",
        latency.as_millis(),
        HEALTH.as_millis()
    );
    assert!(
        latency <= 2 * HEALTH + Duration::from_millis(1500),
        "{latency:?}"
    );

    // Grouping: one notification per channel for the outage, no other rule's noise.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, n) in [
        ("webhook", count(&inbox, hook)),
        ("slack", count(&inbox, slack)),
        ("alertmanager", count(&inbox, am)),
        ("pagerduty", count(&pd_inbox, |_| true)),
        ("email", mails.lock().unwrap().messages.len()),
    ] {
        assert_eq!(n, 1, "{name}: {n} notifications for one outage");
    }
    assert_eq!(names_of(&first), "etcdMembersDown");

    // The webhook: body, custom header, HMAC with the shared secret.
    let body = first.json();
    assert_eq!(body["status"], "firing");
    assert_eq!(body["cluster"], "main");
    assert_eq!(body["alerts"][0]["labels"]["severity"], "warning");
    // The runbook: the monitor's /runbooks page under alerts.external_url.
    const RUNBOOK: &str = "http://dashboard.example/runbooks#etcdmembersdown";
    assert_eq!(body["alerts"][0]["runbook_url"], RUNBOOK);
    let to_am = inbox.lock().unwrap().iter().find(|r| am(r)).unwrap().json();
    assert_eq!(to_am[0]["annotations"]["runbook_url"], RUNBOOK);
    assert_eq!(first.header("X-Team"), Some("etcd"));
    let sig = first.header(channels::SIGNATURE_HEADER).unwrap();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"s3cret");
    aws_lc_rs::hmac::verify(
        &key,
        &first.body,
        &hex(sig.strip_prefix("sha256=").unwrap()),
    )
    .expect("the webhook's HMAC verifies with the shared secret");
    let wrong = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"other");
    assert!(aws_lc_rs::hmac::verify(&wrong, &first.body, &hex(&sig[7..])).is_err());

    // Email: multipart with text and HTML parts.
    let mail = mails.lock().unwrap().messages[0].clone();
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(
        mail.contains("text/plain") && mail.contains("text/html"),
        "{mail}"
    );
    assert!(mail.contains("etcdMembersDown"), "{mail}");

    // The API's view: one firing alert in the store.
    let active = monitor.store().active_alerts(Some("main")).await.unwrap();
    assert_eq!(active.len(), 1, "{active:#?}");
    assert_eq!(active[0].labels["alertname"], "etcdMembersDown");
    assert_eq!(active[0].runbook_url.as_deref(), Some(RUNBOOK));

    // The member returns: one resolved per channel.
    cluster.restart(victim).await.unwrap();
    wait_until("resolved on every channel", Duration::from_secs(20), || {
        count(&inbox, |r| hook(r) && status_of(r) == "resolved") >= 1
            && count(&inbox, |r| slack(r) && status_of(r) == "resolved") >= 1
            && count(&inbox, |r| am(r) && status_of(r) == "resolved") >= 1
            && count(&pd_inbox, |r| status_of(r) == "resolved") >= 1
            && mails.lock().unwrap().messages.len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&inbox, hook), 2);
    assert_eq!(count(&inbox, slack), 2);
    assert_eq!(count(&inbox, am), 2);
    assert_eq!(count(&pd_inbox, |_| true), 2);
    assert_eq!(mails.lock().unwrap().messages.len(), 2);

    // PagerDuty: the resolve carries its trigger's dedup_key.
    let pd: Vec<Value> = pd_inbox
        .lock()
        .unwrap()
        .iter()
        .map(Received::json)
        .collect();
    assert_eq!(pd[0]["event_action"], "trigger");
    assert_eq!(pd[1]["event_action"], "resolve");
    assert_eq!(pd[0]["routing_key"], "R0UT1NG");
    assert!(pd[0]["dedup_key"].as_str().is_some_and(|k| !k.is_empty()));
    assert_eq!(pd[0]["dedup_key"], pd[1]["dedup_key"]);
    assert_eq!(pd[0]["payload"]["severity"], "warning");

    // Alertmanager: its payload shape.
    let am_msgs: Vec<Value> = inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|r| am(r))
        .map(Received::json)
        .collect();
    let fired = &am_msgs[0][0];
    assert_eq!(fired["labels"]["alertname"], "etcdMembersDown");
    assert!(fired["annotations"]["summary"].is_string());
    assert!(fired["startsAt"].is_string() && fired.get("endsAt").is_none());
    assert_eq!(fired["generatorURL"], "http://dashboard.example/");
    assert!(am_msgs[1][0]["endsAt"].is_string());

    // Slack: colour by severity, then green.
    let sl: Vec<Value> = inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|r| slack(r))
        .map(Received::json)
        .collect();
    assert_eq!(sl[0]["attachments"][0]["color"], "#f2a900");
    assert_eq!(sl[1]["attachments"][0]["color"], "#2eb886");

    // History: fired and resolved, with times; deliveries recorded as sent.
    let history = monitor
        .store()
        .alert_history(Some("main"), None, 0, i64::MAX, 100)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert!(history[0].starts_at_ms.is_some() && history[0].ends_at_ms.is_some());
    let deliveries = monitor.store().deliveries(None, 100).await.unwrap();
    assert_eq!(deliveries.len(), 12, "2 notifications x 6 channels");
    assert!(
        deliveries.iter().all(|d| d.status == "sent"),
        "{deliveries:#?}"
    );
    // Retention removes finished history only.
    let removed = monitor
        .store()
        .enforce_alert_retention(i64::MAX)
        .await
        .unwrap();
    assert_eq!(removed, 13, "1 resolved alert + 12 sent deliveries");
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}

/// A silence added through the running engine's handle reaches the engine
/// at once (its cache is invalidated), and its expiry pages. `for`, flaps
/// and expiry timing are unit tests of the book (`alert::book::tests`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_holds_until_it_expires() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&cluster, &dir.path().join("f.db"), Duration::ZERO);
    let (url, inbox) = sink(200).await;
    cfg.alerts.channels.push(webhook(&url));
    let (daemon, lifecycle) = start_daemon(&cfg).await;
    let monitor = daemon.monitor.clone();

    // A silence matching the alert: it fires, silenced, and is notified once the silence ends.
    let silences = daemon.alerting.silences.clone();
    let ends = unix_ms(std::time::SystemTime::now()) + 9_000;
    let s = silences
        .add(NewSilence {
            matchers: vec!["alertname=etcdMembersDown".into(), "cluster=main".into()],
            starts_at_ms: None,
            ends_at_ms: ends,
            comment: "maintenance".into(),
            created_by: "test".into(),
        })
        .await
        .unwrap();
    assert_eq!(silences.list().await.unwrap().len(), 1);
    let victim = follower(&cluster).await;
    cluster.kill(victim).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while monitor
        .store()
        .active_alerts(Some("main"))
        .await
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the alert did not fire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let active = monitor.store().active_alerts(Some("main")).await.unwrap();
    assert_eq!(
        active[0].suppressed.as_deref(),
        Some(format!("silenced by {}", s.id).as_str())
    );
    assert_eq!(count(&inbox, |_| true), 0, "notified while silenced");
    wait_until(
        "notified after the silence expired",
        Duration::from_secs(10),
        || count(&inbox, |_| true) >= 1,
    )
    .await;
    let late = inbox.lock().unwrap()[0].clone();
    assert_eq!(late.json()["status"], "firing");
    assert!(unix_ms(std::time::SystemTime::now()) >= ends);
    silences.delete(&s.id).await.unwrap();
    assert!(silences.list().await.unwrap().is_empty());

    cluster.restart(victim).await.unwrap();
    wait_until("resolved", Duration::from_secs(15), || {
        count(&inbox, |r| status_of(r) == "resolved") == 1
    })
    .await;
    assert_eq!(count(&inbox, |_| true), 2);
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_outage_and_a_monitor_restart_still_deliver_exactly_once() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&cluster, &dir.path().join("o.db"), Duration::ZERO);
    // The receiver's port, reserved and released: nothing listens yet.
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let mut channel = webhook(&format!("http://{addr}"));
    // Retries every 2 s at most, so the delivery follows the receiver's return closely.
    channel.max_backoff = Duration::from_secs(2);
    cfg.alerts.channels.push(channel);
    cfg.alerts.repeat_interval = Duration::from_secs(2);
    let (monitor, lifecycle) = start(&cfg).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let victim = follower(&cluster).await;
    cluster.kill(victim).unwrap();
    let down_since = Instant::now();
    // Queued and failing against the absent receiver.
    let store = monitor.store().clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = store.deliveries(None, 10).await.unwrap();
        if d.iter().any(|r| r.attempts >= 1 && r.status == "pending") {
            break;
        }
        assert!(Instant::now() < deadline, "no failed attempt: {d:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Acknowledged: no repeats although repeat_interval is 2s.
    assert!(
        store
            .ack_group(
                "main/etcdMembersDown",
                "test",
                "on it",
                unix_ms(std::time::SystemTime::now())
            )
            .await
            .unwrap()
    );

    // The monitor restarts while the receiver is still down.
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
    let (monitor, lifecycle) = start(&cfg).await;
    // The receiver stays down for 30 s in all (the figure).
    tokio::time::sleep_until((down_since + Duration::from_secs(30)).into()).await;
    let inbox = http_sink(TcpListener::bind(addr).await.unwrap(), 200).await;
    let outage = down_since.elapsed();
    assert!(outage >= Duration::from_secs(30));
    wait_until(
        "delivered after the outage",
        Duration::from_secs(10),
        || count(&inbox, |_| true) >= 1,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    eprintln!(
        "receiver was down for {:.1} s, monitor restarted meanwhile",
        outage.as_secs_f64()
    );
    let got: Vec<Value> = inbox.lock().unwrap().iter().map(Received::json).collect();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["status"], "firing");
    assert_eq!(got[0]["reason"], "firing");
    let d = monitor.store().deliveries(None, 10).await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].status, "sent");
    assert!(d[0].attempts >= 2, "{d:#?}");

    cluster.restart(victim).await.unwrap();
    wait_until("resolved", Duration::from_secs(15), || {
        count(&inbox, |r| status_of(r) == "resolved") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(&inbox, |_| true), 2);
    // The acknowledgement ended with the outage.
    let groups = monitor.store().alert_groups().await.unwrap();
    assert!(
        groups
            .iter()
            .all(|g| g.acked_at_ms.is_none() && !g.state.notified_firing)
    );
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_group_repeats_until_acknowledged() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&cluster, &dir.path().join("r.db"), Duration::ZERO);
    cfg.alerts.repeat_interval = Duration::from_secs(2);
    let (url, inbox) = sink(200).await;
    cfg.alerts.channels.push(webhook(&url));
    let (daemon, lifecycle) = start_daemon(&cfg).await;
    let monitor = daemon.monitor.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let victim = follower(&cluster).await;
    cluster.kill(victim).unwrap();
    let repeat = |r: &Received| r.json()["reason"] == "repeat";
    wait_until("a repeat", Duration::from_secs(10), || {
        count(&inbox, repeat) >= 1
    })
    .await;
    let groups = monitor.store().alert_groups().await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].state.group_key, "main/etcdMembersDown");
    let now = unix_ms(std::time::SystemTime::now());
    // Through the engine's handle: the engines see it at their next step.
    assert!(
        daemon
            .alerting
            .ack("main/etcdMembersDown", "oncall", "looking", now)
            .await
            .unwrap()
    );
    assert!(
        !daemon
            .alerting
            .ack("main/etcdNoLeader", "oncall", "", now)
            .await
            .unwrap()
    );
    let before = count(&inbox, |_| true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        count(&inbox, |_| true),
        before,
        "repeated after the acknowledgement"
    );
    let g = &monitor.store().alert_groups().await.unwrap()[0];
    assert_eq!(g.acked_by.as_deref(), Some("oncall"));

    cluster.restart(victim).await.unwrap();
    wait_until("resolved", Duration::from_secs(15), || {
        count(&inbox, |r| status_of(r) == "resolved") == 1
    })
    .await;
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}

/// A custom per-member rule: one notification for all members' alerts, and
/// an update when the group's alerts change (after `group_interval`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_per_member_rule_is_grouped_and_updated() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&cluster, &dir.path().join("c.db"), Duration::ZERO);
    cfg.alerts.custom_rules.push(CustomRule {
        name: "MemberHasLeader".into(),
        metric: "has_leader".into(),
        comparison: Comparison::Eq,
        threshold: 1.0,
        for_: Duration::ZERO,
        severity: AlertSeverity::Info,
        enabled: true,
    });
    cfg.alerts.group_interval = Duration::from_secs(1);
    let (url, inbox) = sink(200).await;
    cfg.alerts.channels.push(webhook(&url));
    let (monitor, lifecycle) = start(&cfg).await;
    let mine = |r: &Received| r.json()["alertname"] == "MemberHasLeader";
    let sizes = |inbox: &Inbox| -> Vec<(String, usize)> {
        inbox
            .lock()
            .unwrap()
            .iter()
            .filter(|r| mine(r))
            .map(|r| {
                let v = r.json();
                (
                    v["reason"].as_str().unwrap().to_string(),
                    v["alerts"].as_array().unwrap().len(),
                )
            })
            .collect()
    };
    wait_until("all three members' alerts", Duration::from_secs(10), || {
        sizes(&inbox).iter().any(|(_, n)| *n == 3)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sizes(&inbox),
        [("firing".to_string(), 3)],
        "one notification for three members"
    );

    let victim = follower(&cluster).await;
    cluster.kill(victim).unwrap();
    wait_until(
        "an update without the dead member",
        Duration::from_secs(10),
        || sizes(&inbox).iter().any(|(r, n)| r == "update" && *n == 2),
    )
    .await;
    cluster.restart(victim).await.unwrap();
    wait_until("an update with it back", Duration::from_secs(15), || {
        sizes(&inbox)
            .iter()
            .skip(2)
            .any(|(r, n)| r == "update" && *n == 3)
    })
    .await;
    let active = monitor.store().active_alerts(Some("main")).await.unwrap();
    assert_eq!(
        active
            .iter()
            .filter(|a| a.labels["alertname"] == "MemberHasLeader")
            .count(),
        3
    );
    assert!(active.iter().all(|a| a.labels.contains_key("member")));
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}

/// SMTP with STARTTLS and with implicit TLS, with AUTH, against sinks using
/// etcd-testkit's CA; no etcd needed: the channel is driven directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_starttls_and_implicit_tls_with_auth() {
    let dir = tempfile::tempdir().unwrap();
    let files = etcd_testkit::TlsFiles::generate(dir.path()).unwrap();
    for (mode, sink_tls) in [
        (SmtpTls::Starttls, SinkTls::StartTls(acceptor(&files))),
        (SmtpTls::Tls, SinkTls::Implicit(acceptor(&files))),
    ] {
        let (port, log) = smtp_sink(sink_tls).await;
        let mut mail = ChannelConfig::new("mail", ChannelType::Email);
        mail.smtp_host = Some("127.0.0.1".into());
        mail.smtp_port = Some(port);
        mail.smtp_tls = Some(mode);
        mail.ca_file = Some(files.ca_file.clone());
        mail.username = Some("monitor".into());
        mail.password = Some("pw".into());
        mail.from = Some("monitor@example.com".into());
        mail.to = vec!["oncall@example.com".into()];
        let n = etcd_monitor::alert::Notification {
            id: "n1".into(),
            group_key: "main/etcdNoLeader".into(),
            status: etcd_monitor::alert::NotificationStatus::Firing,
            reason: "firing".into(),
            cluster: "main".into(),
            alertname: "etcdNoLeader".into(),
            severity: "critical".into(),
            alerts: Vec::new(),
            at_ms: 0,
            external_url: None,
        };
        let sender = channels::Sender::new(&mail).unwrap();
        sender
            .send(&n)
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let log = log.lock().unwrap();
        assert_eq!(log.tls_sessions, 1, "{mode:?}: {:?}", log.commands);
        assert_eq!(log.messages.len(), 1);
        assert!(log.messages[0].contains("[FIRING] etcdNoLeader on main (critical)"));
        assert!(
            log.commands
                .iter()
                .any(|c| c.to_ascii_uppercase().starts_with("AUTH")),
            "{:?}",
            log.commands
        );
        if mode == SmtpTls::Starttls {
            assert!(
                log.commands
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case("STARTTLS"))
            );
        }
    }
}

/// The bar of docs/benchmarks.md: member killed -> webhook received,
/// against 2 health intervals + `for`. Run with
/// `cargo test -p etcd-monitor --test alert -- --ignored --nocapture member_killed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints figures"]
async fn member_killed_to_webhook_latency() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (i, (health, for_)) in [
        (Duration::from_millis(300), Duration::ZERO),
        (Duration::from_secs(1), Duration::ZERO),
        (Duration::from_secs(1), Duration::from_secs(3)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut cfg = config(&cluster, &dir.path().join(format!("b{i}.db")), for_);
        cfg.monitoring.health_check_interval = health;
        let (url, inbox) = sink(200).await;
        cfg.alerts.channels.push(webhook(&url));
        let (monitor, lifecycle) = start(&cfg).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut figures = Vec::new();
        for round in 0..5 {
            let victim = follower(&cluster).await;
            cluster.kill(victim).unwrap();
            let killed = Instant::now();
            let fired = |r: &Received| status_of(r) == "firing";
            wait_until("firing", Duration::from_secs(20), || {
                count(&inbox, fired) > round
            })
            .await;
            let at = inbox
                .lock()
                .unwrap()
                .iter()
                .filter(|r| fired(r))
                .nth(round)
                .unwrap()
                .at;
            figures.push(at.duration_since(killed).as_secs_f64() * 1e3);
            cluster.restart(victim).await.unwrap();
            let resolved = |r: &Received| status_of(r) == "resolved";
            wait_until("resolved", Duration::from_secs(30), || {
                count(&inbox, resolved) > round
            })
            .await;
        }
        figures.sort_by(f64::total_cmp);
        let bar = (2 * health + for_).as_secs_f64() * 1e3;
        eprintln!(
            "BENCH health {:?} for {:?}: min {:.0} ms, median {:.0} ms, max {:.0} ms (bar {bar:.0} ms) over {} kills",
            health,
            for_,
            figures[0],
            figures[figures.len() / 2],
            figures[figures.len() - 1],
            figures.len()
        );
        assert!(
            figures[figures.len() - 1] <= bar,
            "{figures:?} exceed {bar} ms"
        );
        etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
    }
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount (the test needs root to make a small filesystem)");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (the test runs as root in CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_store_still_pages_and_says_so_on_ready() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let disk = SmallDisk::mount("8m");
    let (url, inbox) = sink(200).await;
    let mut c = config(&cluster, &disk.dir.path().join("h.db"), Duration::ZERO);
    c.alerts.channels = vec![webhook(&url)];
    c.api.listen = "127.0.0.1:0".into();
    let (daemon, lifecycle) = start_daemon(&c).await;
    let monitor = daemon.monitor.clone();
    let addr = etcd_monitor::run::serve_api(&c, &daemon, &lifecycle)
        .await
        .unwrap();
    let ready = |addr: std::net::SocketAddr| async move {
        let r = reqwest::get(format!("http://{addr}/ready")).await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    wait_until_async("ready", Duration::from_secs(20), || async {
        ready(addr).await.0 == 200
    })
    .await;
    let filler = disk.fill();
    // The next history writes fail: /ready says so, naming the store.
    let mut said = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let (code, body) = ready(addr).await;
        if code == 503 {
            said = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        said["store"]
            .as_str()
            .is_some_and(|s| s.contains("history store")),
        "/ready never named the failing store: {said}"
    );
    // A member dies: the page still goes out, straight to the receiver.
    let victim = follower(&cluster).await;
    cluster.kill(victim).unwrap();
    wait_until(
        "a firing webhook while the disk is full",
        Duration::from_secs(20),
        || count(&inbox, |r| r.path == "/hook" && status_of(r) == "firing") >= 1,
    )
    .await;
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert!(value("etcd_monitor_notifications_undurable_total") >= 1.0);
    assert!(value("etcd_monitor_store_errors_total") >= 1.0);
    assert_eq!(value("etcd_monitor_store_writable"), 0.0);
    // Space again: writes succeed, /ready recovers, the group state is
    // reconciled, and the outage is not paged a second time.
    std::fs::remove_file(filler).unwrap();
    wait_until_async("ready again", Duration::from_secs(20), || async {
        ready(addr).await.0 == 200
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&inbox, |r| r.path == "/hook" && status_of(r) == "firing"),
        1,
        "the direct delivery was repeated after recovery"
    );
    let groups = monitor.store().alert_groups().await.unwrap();
    assert!(
        groups
            .iter()
            .any(|g| g.state.group_key == "main/etcdMembersDown" && g.state.notified_firing),
        "the group's state was not written after recovery: {groups:?}"
    );
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}

async fn wait_until_async<F, Fut>(what: &str, within: Duration, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !ok().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A PagerDuty summary is cut at 1024 bytes on a character boundary: a
/// member named with 600 three-byte characters still gets paged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_named_in_multibyte_characters_is_paged() {
    let prefix = "€".repeat(600);
    let cluster = EtcdCluster::start(ClusterOptions::new(3).name_prefix(prefix.clone()))
        .await
        .unwrap();
    let (url, inbox) = sink(202).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&cluster, &dir.path().join("h.db"), Duration::ZERO);
    let mut pd = ChannelConfig::new("pd", ChannelType::Pagerduty);
    pd.url = Some(format!("{url}/v2/enqueue"));
    pd.routing_key = Some("0123456789abcdef0123456789abcdef".into());
    pd.retry_backoff = Duration::from_millis(200);
    c.alerts.channels = vec![pd];
    let (monitor, lifecycle) = start(&c).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(follower(&cluster).await).unwrap();
    wait_until("a PagerDuty trigger", Duration::from_secs(20), || {
        count(&inbox, |r| r.path == "/v2/enqueue") >= 1
    })
    .await;
    let event = inbox.lock().unwrap()[0].json();
    let summary = event["payload"]["summary"].as_str().unwrap();
    assert!(
        summary.len() <= 1024 && summary.len() > 1000,
        "{}",
        summary.len()
    );
    assert!(
        summary.contains("etcdMembersDown") && summary.ends_with('€'),
        "{summary}"
    );
    let metrics_panics =
        etcd_monitor::alert::deliver::PANICS.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(metrics_panics, 0);
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}

/// A member whose disk turns slow after thousands of fast fsyncs: the
/// windowed fsync p99 crosses 0.5 s and `etcdHighFsyncDurations` fires
/// within the window plus `for`, while the p99 over the member's whole life
/// (what the monitor used to judge) stays fast; when the disk is fast again
/// the slow fsyncs leave the window and the alert resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_turning_slow_fires_the_fsync_alert_and_clears_it() {
    const WINDOW: Duration = Duration::from_secs(10);
    const FOR: Duration = Duration::from_secs(2);
    let cluster = EtcdCluster::start(ClusterOptions::new(1)).await.unwrap();
    let mut client = cluster.client().await.unwrap();
    // Thousands of fast fsyncs: one per sequential put.
    for i in 0..3000 {
        client.put(format!("fast/{i}"), "x", None).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&cluster, &dir.path().join("h.db"), Duration::from_secs(60));
    cfg.monitoring.metrics_interval = Duration::from_secs(1);
    cfg.monitoring.metrics_window = WINDOW;
    cfg.alerts.rules.insert(
        "etcdHighFsyncDurations".into(),
        RuleOverride {
            for_: Some(FOR),
            ..Default::default()
        },
    );
    let (monitor, lifecycle) = start(&cfg).await;
    let metrics = monitor.cluster("main").unwrap().metrics.clone();
    let fsync_p99 = || {
        metrics
            .borrow()
            .as_ref()
            .and_then(|r| r.members.first()?.metrics.as_ref()?.wal_fsync_p99)
    };
    let firing = || async {
        monitor
            .store()
            .active_alerts(Some("main"))
            .await
            .unwrap()
            .iter()
            .any(|a| {
                a.labels.get("alertname").map(String::as_str) == Some("etcdHighFsyncDurations")
                    && a.labels.get("severity").map(String::as_str) == Some("warning")
            })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while fsync_p99().is_none_or(|p| p > 0.1) {
        assert!(
            Instant::now() < deadline,
            "no fast windowed p99: {:?}",
            fsync_p99()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A writer keeps the member fsyncing (bounded: 60 s at most).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, mut client) = (stop.clone(), client.clone());
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(60);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                let _ = client.put(format!("slow/{i}"), "y", None).await;
                i += 1;
            }
        })
    };
    let slow = cluster.slow_disk(0, Duration::from_millis(700)).unwrap();
    let slow_since = Instant::now();
    let deadline = slow_since + WINDOW + FOR + Duration::from_secs(10);
    while !firing().await {
        assert!(
            Instant::now() < deadline,
            "etcdHighFsyncDurations did not fire within {:?}; windowed p99 {:?}",
            deadline - slow_since,
            fsync_p99()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fired_after = slow_since.elapsed();
    let windowed = fsync_p99().unwrap();
    assert!(windowed > 0.5, "windowed p99 {windowed}");
    // The p99 over the member's whole life, from the same buckets.
    let page = reqwest::get(&cluster.metrics_urls()[0])
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (scrape, _) = etcd_monitor::metrics::prom::Scrape::parse(&page);
    let lifetime = scrape
        .histogram("etcd_disk_wal_fsync_duration_seconds", |_| true)
        .unwrap();
    let fast = lifetime.buckets.iter().find(|b| b.0 >= 0.256).unwrap().1;
    let all = lifetime.total();
    let cumulative = lifetime.quantile(0.99).unwrap();
    assert!(fast >= 3000.0, "only {fast} fast fsyncs of {all}");
    assert!(
        cumulative < 0.5,
        "the lifetime p99 would have fired too ({cumulative} s; {} slow of {all})",
        all - fast
    );
    eprintln!(
        "fired {fired_after:?} after the disk turned slow: windowed p99 {windowed:.3} s, \
         lifetime p99 {cumulative:.4} s ({} slow of {all} fsyncs)",
        all - fast
    );

    // The disk is fast again and the writer stops: only the monitor's
    // probes write, too few to outweigh the slow fsyncs, so the alert
    // resolves when those leave the window.
    drop(slow);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    let fast_since = Instant::now();
    let deadline = fast_since + WINDOW + Duration::from_secs(10);
    while firing().await {
        assert!(
            Instant::now() < deadline,
            "etcdHighFsyncDurations still firing {:?} after the disk recovered; windowed p99 {:?}",
            fast_since.elapsed(),
            fsync_p99()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "resolved {:?} after the disk recovered",
        fast_since.elapsed()
    );
    assert!(fsync_p99().is_some_and(|p| p < 0.5), "{:?}", fsync_p99());
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}

/// A member whose serving certificate runs out in 5 days pages critical,
/// the monitor's client certificate running out in 20 days pages a warning,
/// and the CA (valid for years) is quiet; each alert says which certificate
/// and where it was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_running_out_page_by_how_soon() {
    const DAY: Duration = Duration::from_secs(86_400);
    let cluster = EtcdCluster::start(ClusterOptions::new(1).tls_valid_for(5 * DAY, 20 * DAY))
        .await
        .unwrap();
    let files = cluster.tls_files().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&cluster, &dir.path().join("h.db"), Duration::from_secs(60));
    cfg.clusters[0].tls = Some(etcd_monitor::config::TlsConfig {
        ca_file: Some(files.ca_file.clone()),
        cert_file: Some(files.client_cert_file.clone()),
        key_file: Some(files.client_key_file.clone()),
        server_name: None,
    });
    for key in [
        "etcdCertificateExpiring",
        "etcdCertificateExpiring_critical",
    ] {
        cfg.alerts.rules.insert(
            key.into(),
            RuleOverride {
                for_: Some(Duration::ZERO),
                ..Default::default()
            },
        );
    }
    let (monitor, lifecycle) = start(&cfg).await;
    let certificate_alerts = || async {
        let mut found: Vec<(String, String, String, String)> = monitor
            .store()
            .active_alerts(Some("main"))
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.labels["alertname"] == "etcdCertificateExpiring")
            .map(|a| {
                let get = |k: &str| a.labels.get(k).cloned().unwrap_or_default();
                (
                    get("severity"),
                    get("certificate"),
                    get("location"),
                    get("member"),
                )
            })
            .collect();
        found.sort();
        found
    };
    let member = cluster.member(0).unwrap().name.clone();
    let endpoint = cluster.endpoint(0).unwrap();
    let client_file = files.client_cert_file.display().to_string();
    let want = vec![
        // The serving certificate is inside both thresholds (as the mixin's
        // warning and critical fsync alerts both fire).
        (
            "critical".to_string(),
            "serving certificate".to_string(),
            endpoint.clone(),
            member.clone(),
        ),
        (
            "warning".into(),
            "client certificate".into(),
            client_file.clone(),
            String::new(),
        ),
        (
            "warning".into(),
            "serving certificate".into(),
            endpoint.clone(),
            member.clone(),
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = certificate_alerts().await;
        if found == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alerts {found:#?}, want {want:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The finding carries the certificate as evidence, its days left
    // counted from the certificate itself.
    let snapshot = monitor
        .cluster("main")
        .unwrap()
        .health
        .borrow()
        .clone()
        .unwrap();
    let serving = snapshot
        .findings
        .iter()
        .find(|f| f.kind == "certificate_expiring" && f.member.as_deref() == Some(&member))
        .unwrap();
    let days = serving.evidence["days_left"].as_f64().unwrap();
    assert!((4.9..=5.0).contains(&days), "{serving:?}");
    assert!(
        serving.message.contains("expires in 5.0 days"),
        "{}",
        serving.message
    );
    let certs = &snapshot.observation.certificates;
    assert_eq!(certs.len(), 3, "{certs:#?}");
    let ca = certs
        .iter()
        .find(|c| c.location == files.ca_file.display().to_string())
        .unwrap();
    assert_eq!(ca.subject.as_deref(), Some("CN=etcd-testkit CA"));
    assert!(ca.days_left(unix_ms(std::time::SystemTime::now())).unwrap() > 365.0);
    let active = monitor.store().active_alerts(Some("main")).await.unwrap();
    assert!(
        active
            .iter()
            .all(|a| a.labels["alertname"] != "etcdCertificateExpiring"
                || a.runbook_url
                    .as_deref()
                    .is_some_and(|u| u.ends_with("#etcdcertificateexpiring"))),
        "{active:#?}"
    );
    etcd_monitor::run::shutdown(&monitor, &lifecycle).await;
}
