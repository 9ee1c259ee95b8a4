//! Service discovery, health checks and load balancing against a real etcd
//! (shared cluster; each test has its own namespace).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{eventually, session, shared_client};
use etcd_patterns::{
    Balancer, Discovery, Error, HealthCheck, Instance, Probe, ServiceChange, Strategy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn wait_count(d: &Discovery, service: &str, n: usize) {
    eventually(
        Duration::from_secs(5),
        &format!("{n} instances of {service}"),
        || {
            let len = d.discover(service).len();
            async move { len == n }
        },
    )
    .await;
}

fn ids(d: &Discovery, service: &str) -> Vec<String> {
    d.discover(service).iter().map(|i| i.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_instance_leaves_every_cache_within_ttl_plus_one_second() {
    let client = shared_client().await;
    let ns = "t-disc-orphan";
    let d1 = Discovery::start(client.clone(), ns).await.unwrap();
    let d2 = Discovery::start(client.clone(), ns).await.unwrap();
    let mut changes = d1.subscribe();
    let mut sessions = Vec::new();
    let mut regs = Vec::new();
    for i in 0..3 {
        let s = session(&client, 2).await;
        let inst = Instance::new("api", format!("api-{i}"), format!("127.0.0.1:{}", 9000 + i))
            .with_version("1.0")
            .with_metadata("zone", "a");
        regs.push(d1.register(&s, inst).await.unwrap());
        sessions.push(s);
    }
    wait_count(&d1, "api", 3).await;
    wait_count(&d2, "api", 3).await;
    assert_eq!(d2.discover("api")[0].metadata["zone"], "a");

    let orphaned = Instant::now();
    sessions[2].orphan();
    for d in [&d1, &d2] {
        eventually(
            Duration::from_secs(3),
            "orphan gone within TTL + 1 s",
            || {
                let gone = !ids(d, "api").contains(&"api-2".to_string());
                async move { gone }
            },
        )
        .await;
    }
    eprintln!(
        "orphaned instance gone from both caches after {:?}",
        orphaned.elapsed()
    );
    assert!(orphaned.elapsed() <= Duration::from_secs(3));

    let reg0 = regs.remove(0);
    reg0.deregister().await.unwrap();
    wait_count(&d2, "api", 1).await;
    assert_eq!(ids(&d2, "api"), ["api-1"]);

    let mut seen = Vec::new();
    while seen.len() < 5 {
        let c = tokio::time::timeout(Duration::from_secs(3), changes.recv())
            .await
            .expect("a change in time")
            .expect("subscription open");
        seen.push(match c {
            ServiceChange::Added(i) => format!("+{}", i.id),
            ServiceChange::Removed(i) => format!("-{}", i.id),
            ServiceChange::Updated { new, .. } => format!("~{}", new.id),
        });
    }
    assert_eq!(seen, ["+api-0", "+api-1", "+api-2", "-api-2", "-api-0"]);
}

/// A tiny HTTP server answering 200 or 503 depending on `ok`.
async fn http_server(ok: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let ok = ok.load(Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf).await;
                let status = if ok { "200 OK" } else { "503 Unavailable" };
                let _ = conn
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            });
        }
    });
    addr
}

async fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_checks_mark_unhealthy_recover_and_deregister() {
    let client = shared_client().await;
    let ns = "t-disc-health";
    let d = Discovery::start(client.clone(), ns).await.unwrap();
    let s = session(&client, 10).await;
    let good = http_server(Arc::new(AtomicBool::new(true))).await;
    let flaky_ok = Arc::new(AtomicBool::new(false));
    let flaky = http_server(flaky_ok.clone()).await;
    let dead = closed_port().await;
    for (id, addr) in [("good", &good), ("flaky", &flaky), ("dead", &dead)] {
        d.register(&s, Instance::new("web", id, addr.as_str()))
            .await
            .unwrap();
    }
    wait_count(&d, "web", 3).await;

    let check = HealthCheck::new(Probe::Http {
        path: "/health".into(),
    })
    .with_interval(Duration::from_millis(100))
    .with_timeout(Duration::from_millis(300))
    .with_thresholds(2, 2);
    let checker = d.check_health("web", check);
    wait_count(&d, "web", 1).await;
    assert_eq!(ids(&d, "web"), ["good"]);
    assert_eq!(d.instances("web").len(), 3, "unhealthy ones stay known");

    flaky_ok.store(true, Ordering::Relaxed);
    wait_count(&d, "web", 2).await;
    assert_eq!(ids(&d, "web"), ["flaky", "good"]);
    drop(checker);

    // A deregistering TCP check run by another process removes the dead
    // instance for everybody.
    let other = Discovery::start(client.clone(), ns).await.unwrap();
    let _tcp = other.check_health(
        "web",
        HealthCheck::new(Probe::Tcp)
            .with_interval(Duration::from_millis(100))
            .with_thresholds(2, 1)
            .deregistering(),
    );
    eventually(Duration::from_secs(5), "dead instance deregistered", || {
        let n = d.instances("web").len();
        async move { n == 2 }
    })
    .await;
    assert_eq!(ids(&d, "web"), ["flaky", "good"]);
}

async fn weighted_service(client: &etcd_client::Client, ns: &str) -> Discovery {
    let d = Discovery::start(client.clone(), ns).await.unwrap();
    let s = session(client, 30).await;
    for (i, w) in [1, 2, 3].into_iter().enumerate() {
        let inst =
            Instance::new("svc", format!("n{i}"), format!("127.0.0.1:{}", 9100 + i)).with_weight(w);
        std::mem::forget(d.register(&s, inst).await.unwrap());
    }
    std::mem::forget(s); // keep the lease alive for the test
    wait_count(&d, "svc", 3).await;
    d
}

fn tally(lb: &Balancer, picks: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..picks {
        *counts.entry(lb.pick().unwrap().id.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancing_distributions() {
    let client = shared_client().await;
    let d = weighted_service(&client, "t-disc-lb").await;

    let rr = tally(&Balancer::new(d.clone(), "svc", Strategy::RoundRobin), 3000);
    assert!(rr.values().all(|&c| c == 1000), "round-robin even: {rr:?}");

    let wrr = tally(
        &Balancer::new(d.clone(), "svc", Strategy::WeightedRoundRobin),
        6000,
    );
    for (id, weight) in [("n0", 1.0), ("n1", 2.0), ("n2", 3.0)] {
        let share = wrr[id] as f64 / 6000.0;
        let want = weight / 6.0;
        assert!(
            (share - want).abs() <= 0.05 * want,
            "weighted {id}: {share} vs {want}"
        );
    }

    let random = tally(&Balancer::new(d.clone(), "svc", Strategy::Random), 3000);
    assert!(
        random.values().all(|&c| (800..=1200).contains(&c)),
        "random roughly even: {random:?}"
    );

    let lc = Balancer::new(d.clone(), "svc", Strategy::LeastConnections);
    let a = lc.pick().unwrap();
    let b = lc.pick().unwrap();
    let c = lc.pick().unwrap();
    let mut busy = vec![a.id.clone(), b.id.clone(), c.id.clone()];
    busy.sort();
    assert_eq!(busy, ["n0", "n1", "n2"], "each instance got one");
    let freed = b.id.clone();
    drop(b);
    assert_eq!(lc.in_flight(&freed), 0, "the guard decrements on drop");
    assert_eq!(lc.pick().unwrap().id, freed, "the idle instance is next");
    drop((a, c));

    assert!(matches!(
        Balancer::new(d.clone(), "nope", Strategy::RoundRobin).pick(),
        Err(Error::NoInstance { service }) if service == "nope"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_moves_about_one_nth_of_keys_when_an_instance_joins() {
    let client = shared_client().await;
    let d = weighted_service(&client, "t-disc-ch").await;
    let lb = Balancer::new(
        d.clone(),
        "svc",
        Strategy::ConsistentHash { virtual_nodes: 160 },
    );
    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let before: Vec<String> = keys
        .iter()
        .map(|k| lb.pick_for(k).unwrap().id.clone())
        .collect();
    assert_eq!(
        before,
        keys.iter()
            .map(|k| lb.pick_for(k).unwrap().id.clone())
            .collect::<Vec<_>>(),
        "sticky"
    );
    let s = session(&client, 30).await;
    let _joined = d
        .register(&s, Instance::new("svc", "n3", "127.0.0.1:9103"))
        .await
        .unwrap();
    wait_count(&d, "svc", 4).await;
    let after: Vec<String> = keys
        .iter()
        .map(|k| lb.pick_for(k).unwrap().id.clone())
        .collect();
    let moved: Vec<usize> = (0..keys.len()).filter(|&i| before[i] != after[i]).collect();
    assert!(
        moved.iter().all(|&i| after[i] == "n3"),
        "keys only move to the new instance"
    );
    let share = moved.len() as f64 / keys.len() as f64;
    eprintln!("consistent hashing: {share:.3} of keys moved to the 4th instance");
    assert!((0.15..=0.32).contains(&share), "moved {share}, about 1/4");
}
