//! Replicas (`ha.*`) on a real PostgreSQL and real etcd clusters: the
//! store's fence and outbox claims, then two `etcd-monitor run` processes
//! splitting four clusters, one SIGKILLed during an outage (one page, one
//! resolve), one SIGSTOPped past its TTL and resumed.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_monitor::model::{Effect, GroupState, Notification, NotificationStatus};
use etcd_monitor::store::{Fence, Store, StoreError};
use etcd_testkit::{ClusterOptions, EtcdCluster, Postgres, free_port};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

async fn open_when_ready(url: &str) -> Store {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Store::open(url).await {
            Ok(s) => return s,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot open {url}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn fence(cluster: &str, token: i64, replica: &str) -> Fence {
    Fence {
        cluster: cluster.into(),
        token,
        replica: replica.into(),
    }
}

fn notify(cluster: &str, id: &str) -> Effect {
    let group_key = format!("{cluster}/etcdMembersDown");
    Effect::Notify {
        group: GroupState {
            group_key: group_key.clone(),
            cluster: cluster.into(),
            rule: "etcdMembersDown".into(),
            notified_firing: true,
            last_notified_ms: 1,
            notified: vec![],
        },
        notification: Notification {
            id: id.into(),
            group_key,
            status: NotificationStatus::Firing,
            reason: "firing".into(),
            cluster: cluster.into(),
            alertname: "etcdMembersDown".into(),
            severity: "critical".into(),
            alerts: vec![],
            at_ms: 1,
            external_url: None,
        },
        channels: vec!["hook".into()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_refuses_a_stale_owner_and_gives_each_notification_to_one_sender() {
    let pg = Postgres::start(None);
    let a = open_when_ready(&pg.url).await;
    let b = Store::open(&pg.url).await.unwrap();

    // The fence: a newer owner's claim shuts the older one out, in the same
    // transaction as the write (nothing of the refused step is kept).
    a.claim_fence(&fence("c1", 100, "r1")).await.unwrap();
    a.record_alert_effects(&[notify("c1", "n1")], Some(&fence("c1", 100, "r1")))
        .await
        .unwrap();
    b.claim_fence(&fence("c1", 200, "r2")).await.unwrap();
    let stale = a
        .record_alert_effects(&[notify("c1", "n2")], Some(&fence("c1", 100, "r1")))
        .await;
    assert!(
        matches!(
            stale,
            Err(StoreError::Fenced {
                token: 100,
                current: 200,
                ..
            })
        ),
        "{stale:?}"
    );
    let stale_status = a
        .publish_status(
            &fence("c1", 100, "r1"),
            5,
            &serde_json::json!({"verdict": "healthy"}),
            None,
        )
        .await;
    assert!(matches!(stale_status, Err(StoreError::Fenced { .. })));
    assert!(a.published_status("c1").await.unwrap().is_none());
    // A refused write is not a store failure (/ready stays ready).
    assert_eq!(a.write_failure(), None);
    let ids: Vec<String> = a
        .deliveries(Some("c1/etcdMembersDown"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.notification.id)
        .collect();
    assert_eq!(ids, vec!["n1".to_string()]);
    assert_eq!(
        a.cluster_owners().await.unwrap(),
        vec![("c1".to_string(), 200, "r2".to_string())]
    );
    b.record_alert_effects(&[notify("c1", "n3")], Some(&fence("c1", 200, "r2")))
        .await
        .unwrap();

    // Claims: 40 notifications in 20 groups (two each), two senders
    // claiming at once. Every row is claimed exactly once, and a group's
    // second row only after its first is sent.
    let mut effects = Vec::new();
    for g in 0..20 {
        effects.push(notify(&format!("g{g}"), &format!("g{g}-first")));
        effects.push(notify(&format!("g{g}"), &format!("g{g}-second")));
    }
    a.record_alert_effects(&effects, None).await.unwrap();
    let now = etcd_monitor::store::unix_ms(std::time::SystemTime::now());
    let sent = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let claimer = |store: Store, me: &'static str| {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut idle = 0;
            while idle < 3 {
                match store
                    .outbox_claim("hook", me, now + 60_000, now + 120_000)
                    .await
                    .unwrap()
                {
                    Some(row) => {
                        idle = 0;
                        let id = row.notification.id.clone();
                        if id.ends_with("-second") {
                            let first = id.replace("-second", "-first");
                            assert!(
                                sent.lock().unwrap().iter().any(|(_, s)| *s == first),
                                "{id} claimed before {first} was sent"
                            );
                        }
                        sent.lock().unwrap().push((me.to_string(), id));
                        assert!(store.outbox_sent(row.id, me, now).await.unwrap());
                    }
                    None => {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        })
    };
    let (ta, tb) = (claimer(a.clone(), "r1"), claimer(b.clone(), "r2"));
    ta.await.unwrap();
    tb.await.unwrap();
    let sent = sent.lock().unwrap().clone();
    let ids: BTreeSet<&str> = sent.iter().map(|(_, id)| id.as_str()).collect();
    // n1 and n3 (c1's) and the 40.
    assert_eq!(sent.len(), 42, "{sent:?}");
    assert_eq!(ids.len(), 42, "a row was claimed twice: {sent:?}");
    let by_r2 = sent.iter().filter(|(r, _)| r == "r2").count();
    eprintln!("claims: r1 {} r2 {by_r2}", sent.len() - by_r2);
    // A claim that ran out is taken over, and the late sender learns it.
    b.record_alert_effects(&[notify("late", "l1")], None)
        .await
        .unwrap();
    let row = a
        .outbox_claim("hook", "r1", now + 60_000, now + 61_000)
        .await
        .unwrap()
        .unwrap();
    assert!(
        b.outbox_claim("hook", "r2", now + 60_500, now + 70_000)
            .await
            .unwrap()
            .is_none()
    );
    let again = b
        .outbox_claim("hook", "r2", now + 62_000, now + 70_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.id, again.id);
    assert!(!a.outbox_sent(row.id, "r1", now).await.unwrap());
    assert!(b.outbox_sent(row.id, "r2", now).await.unwrap());
}

/// One request a webhook sink received.
#[derive(Debug, Clone)]
struct Hook {
    body: Value,
}

type Inbox = Arc<Mutex<Vec<Hook>>>;

/// A minimal HTTP/1.1 sink on loopback: records each JSON body, answers 200.
async fn sink() -> (String, Inbox) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
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
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).await.unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.trim().split_once(':') {
                        if k.trim().eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).await.is_err() {
                    return;
                }
                if let Ok(body) = serde_json::from_slice(&body) {
                    rec.lock().unwrap().push(Hook { body });
                }
                let _ = r
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, inbox)
}

fn count(inbox: &Inbox, group: &str, status: &str) -> usize {
    inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.body["group_key"] == group && h.body["status"] == status)
        .count()
}

/// An `etcd-monitor run` process, killed when dropped.
struct Replica {
    name: String,
    child: Child,
    api: String,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    /// `config` without `api` and `ha`; `ha` is the rest of the `ha` section.
    fn start(name: &str, dir: &std::path::Path, config: &str, ha: &str) -> Replica {
        let port = free_port();
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!("{config}api:\n  listen: 127.0.0.1:{port}\nha:\n  replica_name: {name}\n{ha}"),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        Replica::spawn(name, path, log, port)
    }

    fn spawn(
        name: &str,
        config: std::path::PathBuf,
        log: std::path::PathBuf,
        port: u16,
    ) -> Replica {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Replica {
            name: name.into(),
            child,
            api: format!("http://127.0.0.1:{port}"),
            config,
            log,
        }
    }

    /// The same replica started again (same name, port and configuration).
    fn restart(self) -> Replica {
        let (name, config, log) = (self.name.clone(), self.config.clone(), self.log.clone());
        let port: u16 = self.api.rsplit(':').next().unwrap().parse().unwrap();
        drop(self);
        Replica::spawn(&name, config, log, port)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, Value)> {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.api))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.unwrap_or(Value::Null)))
    }

    async fn owned(&self) -> Option<BTreeSet<String>> {
        let (_, v) = self.get("/api/v1/replicas").await?;
        let me = v["replicas"]
            .as_array()?
            .iter()
            .find(|r| r["self"] == true)?
            .clone();
        Some(
            me["clusters"]
                .as_array()?
                .iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect(),
        )
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.api))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

async fn wait_for<F, Fut>(what: &str, within: Duration, mut ok: F, logs: &[&Replica])
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !ok().await {
        if Instant::now() > deadline {
            for r in logs {
                eprintln!("--- {} log ---\n{}", r.name, r.log());
            }
            panic!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const TTL: Duration = Duration::from_secs(3);
const INTERVAL: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_split_four_clusters_hand_over_and_never_page_twice() {
    let pg = Postgres::start(None);
    // Migrated once before both replicas start; the test reads it too.
    let store = open_when_ready(&pg.url).await;
    let a = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let b = EtcdCluster::start(ClusterOptions::new(1)).await.unwrap();
    let (hook, inbox) = sink().await;
    let dir = tempfile::tempdir().unwrap();

    // Names that rendezvous hashing splits 2 + 2, one of cluster A's
    // names on each replica (c1, c2 watch A; c3, c4 watch B).
    let clusters = ["c1", "c2", "c3", "c4"];
    let (x, y) = (0..100)
        .map(|i| (format!("x{i}"), format!("y{i}")))
        .find(|(x, y)| {
            let owner = |c: &str| etcd_monitor_owner(c, x, y);
            let xs: Vec<&str> = clusters
                .iter()
                .copied()
                .filter(|c| owner(c) == x.as_str())
                .collect();
            xs.len() == 2 && xs.contains(&"c1") && !xs.contains(&"c2")
        })
        .expect("a pair of names splitting 2 + 2");
    let x_owns = set(&clusters
        .iter()
        .copied()
        .filter(|c| etcd_monitor_owner(c, &x, &y) == x.as_str())
        .collect::<Vec<_>>());
    let y_owns: BTreeSet<String> = set(&clusters).difference(&x_owns).cloned().collect();

    let endpoints = |c: &EtcdCluster| {
        c.endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let cluster_yaml = |name: &str, c: &EtcdCluster| {
        format!(
            "  - name: {name}\n    endpoints: [{}]\n    dial_timeout: 500ms\n    request_timeout: 1s\n",
            endpoints(c)
        )
    };
    let config = format!(
        "clusters:\n{}{}{}{}monitoring:\n  health_check_interval: {}ms\n  metrics_interval: {}ms\nstorage:\n  url: {}\nalerts:\n  rules:\n    etcdMembersDown:\n      for: 1s\n      threshold: 1000000000\n  channels:\n    - name: hook\n      type: webhook\n      url: {hook}\n      retry_backoff: 200ms\n      max_backoff: 1s\n      timeout: 2s\n",
        cluster_yaml("c1", &a),
        cluster_yaml("c2", &a),
        cluster_yaml("c3", &b),
        cluster_yaml("c4", &b),
        INTERVAL.as_millis(),
        INTERVAL.as_millis(),
        pg.url,
    );
    let ha = format!(
        "  enabled: true\n  etcd:\n    endpoints: [{}]\n  ttl: {}s\n",
        endpoints(&b),
        TTL.as_secs()
    );
    let rx = Replica::start(&x, dir.path(), &config, &ha);
    let ry = Replica::start(&y, dir.path(), &config, &ha);

    // Each owns its two.
    wait_for(
        "the replicas split the clusters 2 + 2",
        Duration::from_secs(30),
        || async {
            rx.owned().await.as_ref() == Some(&x_owns) && ry.owned().await.as_ref() == Some(&y_owns)
        },
        &[&rx, &ry],
    )
    .await;
    let (_, replicas) = rx.get("/api/v1/replicas").await.unwrap();
    assert_eq!(replicas["enabled"], true);
    assert_eq!(replicas["member"], true);
    assert_eq!(
        replicas["replicas"].as_array().unwrap().len(),
        2,
        "{replicas}"
    );
    for c in &replicas["clusters"].as_array().unwrap()[..] {
        let owner = c["owner"].as_str().unwrap();
        let name = c["cluster"].as_str().unwrap();
        assert_eq!(owner == x, x_owns.contains(name), "{replicas}");
    }
    assert_eq!(rx.metric("etcd_monitor_owned_clusters").await, 2.0);
    for r in [&rx, &ry] {
        wait_for(
            &format!(
                "{} is ready (it waits only for the clusters it owns)",
                r.name
            ),
            Duration::from_secs(10),
            || async { matches!(r.get("/ready").await, Some((200, _))) },
            &[&rx, &ry],
        )
        .await;
    }
    assert_eq!(ry.metric("etcd_monitor_replica_is_member").await, 1.0);

    // Every replica answers every cluster's status: its own, and the others'
    // as their owner published them.
    for r in [&rx, &ry] {
        for c in clusters {
            wait_for(
                &format!("{} answers {c}'s status", r.name),
                Duration::from_secs(15),
                || async {
                    matches!(r.get(&format!("/api/v1/clusters/{c}/status")).await,
                        Some((200, v)) if v["verdict"] == "healthy" && v["cluster"] == c)
                },
                &[&rx, &ry],
            )
            .await;
        }
        let (_, list) = r.get("/api/v1/clusters").await.unwrap();
        for c in list["clusters"].as_array().unwrap() {
            let owner = c["owner"].as_str().unwrap_or("");
            let name = c["name"].as_str().unwrap();
            let expected = if x_owns.contains(name) { &x } else { &y };
            assert_eq!(owner, expected.as_str(), "{list}");
            assert_eq!(c["verdict"], "healthy", "{list}");
        }
    }

    // A member of A stops: c1 (x's) and c2 (y's) page once each.
    let victim = {
        let leader = a.leader_index().await.unwrap().unwrap();
        (leader + 1) % 3
    };
    a.kill(victim).unwrap();
    wait_for(
        "x pages for c1 and the row is marked sent",
        Duration::from_secs(20),
        || async {
            count(&inbox, "c1/etcdMembersDown", "firing") == 1
                && sent(&store, "c1/etcdMembersDown").await
        },
        &[&rx, &ry],
    )
    .await;
    // x dies right after its page: y takes c1 over with the alert firing.
    let killed_at = Instant::now();
    rx.signal(libc::SIGKILL);
    wait_for(
        "y owns all four",
        TTL + INTERVAL + Duration::from_secs(10),
        || async { ry.owned().await == Some(set(&clusters)) },
        &[&ry],
    )
    .await;
    let took = killed_at.elapsed();
    eprintln!("handover after SIGKILL: {took:?} (ttl {TTL:?}, interval {INTERVAL:?})");
    assert!(
        took <= TTL + INTERVAL + Duration::from_secs(2),
        "handover took {took:?}"
    );
    wait_for(
        "c2 paged",
        Duration::from_secs(20),
        || async { count(&inbox, "c2/etcdMembersDown", "firing") == 1 },
        &[&ry],
    )
    .await;
    // The member returns: one resolve each, from y.
    a.restart(victim).await.unwrap();
    wait_for(
        "both groups resolved",
        Duration::from_secs(30),
        || async {
            count(&inbox, "c1/etcdMembersDown", "resolved") == 1
                && count(&inbox, "c2/etcdMembersDown", "resolved") == 1
        },
        &[&ry],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for g in ["c1/etcdMembersDown", "c2/etcdMembersDown"] {
        assert_eq!(
            count(&inbox, g, "firing"),
            1,
            "{g}: {:?}",
            inbox.lock().unwrap()
        );
        assert_eq!(
            count(&inbox, g, "resolved"),
            1,
            "{g}: {:?}",
            inbox.lock().unwrap()
        );
    }

    // x comes back: it takes its two again (y hands them over).
    let rx = rx.restart();
    wait_for(
        "x takes its clusters back",
        Duration::from_secs(30),
        || async {
            rx.owned().await.as_ref() == Some(&x_owns) && ry.owned().await.as_ref() == Some(&y_owns)
        },
        &[&rx, &ry],
    )
    .await;

    // x freezes past its TTL: y takes over; x resumes, its stale writes are
    // refused, it rejoins and gets its clusters back with a newer token.
    let before = inbox.lock().unwrap().len();
    let token_before = token_of(&store, "c1").await;
    rx.signal(libc::SIGSTOP);
    wait_for(
        "y owns all four while x is frozen",
        TTL + Duration::from_secs(10),
        || async { ry.owned().await == Some(set(&clusters)) },
        &[&ry],
    )
    .await;
    // y's first write for c1 raises the fence.
    wait_for(
        "y fences c1",
        Duration::from_secs(10),
        || {
            let store = store.clone();
            async move { token_of(&store, "c1").await > token_before }
        },
        &[&ry],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    rx.signal(libc::SIGCONT);
    wait_for(
        "x rejoins and owns its two again",
        Duration::from_secs(30),
        || async {
            rx.owned().await.as_ref() == Some(&x_owns) && ry.owned().await.as_ref() == Some(&y_owns)
        },
        &[&rx, &ry],
    )
    .await;
    let fenced = rx.metric("etcd_monitor_ha_fenced_writes_total").await;
    eprintln!("writes x made after resuming and the store refused: {fenced}");
    assert!(fenced.is_finite());
    assert!(
        rx.log().contains("the session was lost"),
        "x did not notice its session ended:\n{}",
        rx.log()
    );
    // No notification: nothing changed in the clusters.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        inbox.lock().unwrap().len(),
        before,
        "{:?}",
        inbox.lock().unwrap()
    );
    // The status x publishes again carries its new, higher token.
    let newest = token_of(&store, "c1").await;
    wait_for(
        "x publishes c1 under its new ownership",
        Duration::from_secs(10),
        || {
            let store = store.clone();
            async move {
                store
                    .published_status("c1")
                    .await
                    .unwrap()
                    .is_some_and(|p| p.token >= newest && p.token > token_before)
            }
        },
        &[&rx],
    )
    .await;
}

/// The owner rendezvous hashing gives `cluster` among `x` and `y`.
fn etcd_monitor_owner<'a>(cluster: &str, x: &'a str, y: &'a str) -> &'a str {
    etcd_patterns::balance::rendezvous(cluster, [x, y]).unwrap()
}

async fn sent(store: &Store, group: &str) -> bool {
    let rows = store.deliveries(Some(group), 10).await.unwrap();
    rows.iter().any(|r| r.status == "sent")
}

async fn token_of(store: &Store, cluster: &str) -> i64 {
    store
        .cluster_owners()
        .await
        .unwrap()
        .into_iter()
        .find(|(c, _, _)| c == cluster)
        .map_or(0, |(_, t, _)| t)
}
