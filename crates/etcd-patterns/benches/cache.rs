//! Cached reads (discover, config.get, flag evaluation) and event delivery
//! through the resilient watch vs a raw etcd-client watch, against a real
//! 3-member etcd started by etcd-testkit.
//! Run with `cargo bench -p etcd-patterns --bench cache`.

use std::collections::HashMap;
use std::error::Error;
use std::hint::black_box;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, WatchOptions as RawWatchOptions};
use etcd_patterns::{
    Config, Discovery, Flag, Flags, Instance, ResilientWatch, Session, WatchEvent, WatchOptions,
};
use etcd_testkit::{ClusterOptions, EtcdCluster};

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// Iterations of one timed run of a cached read.
const ITERS: u32 = 2_000_000;
/// Timed runs per cached read (the median is reported).
const RUNS: usize = 5;
/// Events for the delivery comparison, paced every `PACE`.
const EVENTS: usize = 2000;
const PACE: Duration = Duration::from_millis(2);

#[derive(serde::Serialize, serde::Deserialize)]
struct Limits {
    max_conns: u32,
    timeout_ms: u64,
    name: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// ns/op of `f`, median of `RUNS` runs of `ITERS` calls.
fn ns_per_op(name: &str, mut f: impl FnMut(u32)) {
    for i in 0..ITERS / 10 {
        f(i); // warm up
    }
    let runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            for i in 0..ITERS {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / f64::from(ITERS)
        })
        .collect();
    let shown: Vec<String> = runs.iter().map(|r| format!("{r:.1}")).collect();
    println!(
        "{name:<40} median {:>7.1} ns/op   runs [{}]",
        median(runs.clone()),
        shown.join(", ")
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BoxResult<()> {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await?;
    let client = cluster.client().await?;
    println!("etcd-patterns cache benchmark: 3-member etcd 3.4 on loopback, release build");
    cached_reads(&client).await?;
    delivery(&client).await?;
    Ok(())
}

async fn cached_reads(client: &Client) -> BoxResult<()> {
    let discovery = Discovery::start(client.clone(), "bench/services").await?;
    let session = Session::new(client.clone(), Duration::from_secs(30)).await?;
    let mut regs = Vec::new();
    for i in 0..5 {
        let inst = Instance::new("api", format!("api-{i}"), format!("10.0.0.{i}:8080"))
            .with_metadata("zone", "eu-1")
            .with_version("1.2.3");
        regs.push(discovery.register(&session, inst).await?);
    }
    let config = Config::start(client.clone(), "bench/config").await?;
    let rev = config
        .set(
            "limits",
            &Limits {
                max_conns: 100,
                timeout_ms: 2500,
                name: "api".into(),
            },
        )
        .await?;
    let rev2 = config.set("retries", &3u32).await?;
    let flags = Flags::start(client.clone(), "bench/flags").await?;
    let frev = flags
        .set("new-ui", &Flag::rollout(30.0).allowing(["vip-1", "vip-2"]))
        .await?;
    config.wait_for(rev.max(rev2)).await?;
    flags.wait_for(frev).await?;
    while discovery.discover("api").len() < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let subjects: Vec<String> = (0..1024).map(|i| format!("user-{i}")).collect();

    println!("\ncached reads ({RUNS} runs x {ITERS} calls, one thread):");
    ns_per_op("Discovery::discover (5 instances)", |_| {
        black_box(discovery.discover(black_box("api")));
    });
    ns_per_op("Config::get::<u32>", |_| {
        black_box(config.get::<u32>(black_box("retries")).ok());
    });
    ns_per_op("Config::get::<Limits> (3 fields)", |_| {
        black_box(config.get::<Limits>(black_box("limits")).ok());
    });
    ns_per_op("Flags::is_enabled (30 % rollout)", |i| {
        black_box(flags.is_enabled(black_box("new-ui"), &subjects[(i & 1023) as usize]));
    });
    drop(regs);
    Ok(())
}

type Times = Arc<StdMutex<HashMap<usize, Instant>>>;

fn index_of(key: &[u8]) -> Option<usize> {
    std::str::from_utf8(key)
        .ok()?
        .rsplit('/')
        .next()?
        .parse()
        .ok()
}

async fn delivery(client: &Client) -> BoxResult<()> {
    let prefix = "bench/delivery/";
    let raw_seen: Times = Arc::default();
    let res_seen: Times = Arc::default();

    // Both start from "now" on the same balanced client.
    let mut raw = client
        .watch_client()
        .watch(prefix, Some(RawWatchOptions::new().with_prefix()))
        .await?;
    let mut resilient =
        ResilientWatch::start(client.clone(), prefix, WatchOptions::new().with_prefix()).await?;
    let seen = raw_seen.clone();
    let raw_task = tokio::spawn(async move {
        while let Ok(Some(resp)) = raw.message().await {
            let now = Instant::now();
            for ev in resp.events() {
                if let Some(i) = ev.kv().and_then(|kv| index_of(kv.key())) {
                    seen.lock().unwrap().insert(i, now);
                }
            }
            if seen.lock().unwrap().len() >= EVENTS {
                return;
            }
        }
    });
    let seen = res_seen.clone();
    let res_task = tokio::spawn(async move {
        while let Some(ev) = resilient.next().await {
            let now = Instant::now();
            if let WatchEvent::Put { key, .. } = ev {
                if let Some(i) = index_of(key.as_bytes()) {
                    seen.lock().unwrap().insert(i, now);
                }
            }
            if seen.lock().unwrap().len() >= EVENTS {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut sent = Vec::with_capacity(EVENTS);
    let mut kv = client.kv_client();
    for i in 0..EVENTS {
        let t = Instant::now();
        kv.put(format!("{prefix}{i}"), "x", None).await?;
        sent.push(t);
        tokio::time::sleep(PACE).await;
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        let _ = raw_task.await;
        let _ = res_task.await;
    })
    .await?;

    let lat = |seen: &Times| -> Vec<Duration> {
        let seen = seen.lock().unwrap();
        let mut v: Vec<Duration> = (0..EVENTS)
            .filter_map(|i| seen.get(&i).map(|r| r.saturating_duration_since(sent[i])))
            .collect();
        v.sort();
        v
    };
    let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    let raw = lat(&raw_seen);
    let res = lat(&res_seen);
    println!("\nevent delivery, put sent -> event received ({EVENTS} puts paced every {PACE:?}):");
    for (name, v) in [("raw etcd-client watch", &raw), ("ResilientWatch", &res)] {
        println!(
            "{name:<24} n={:<5} p50 {}  p99 {}  max {}",
            v.len(),
            ms(pct(v, 0.5)),
            ms(pct(v, 0.99)),
            ms(pct(v, 1.0))
        );
    }
    println!(
        "ratio resilient / raw: p50 {:.2}x  p99 {:.2}x",
        pct(&res, 0.5).as_secs_f64() / pct(&raw, 0.5).as_secs_f64(),
        pct(&res, 0.99).as_secs_f64() / pct(&raw, 0.99).as_secs_f64()
    );
    Ok(())
}
