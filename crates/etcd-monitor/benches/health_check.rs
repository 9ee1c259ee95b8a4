//! One health check of a 3-member loopback cluster (member list, Status, a
//! linearizable read and /metrics of every member, alarms, hashkv, then the
//! evaluation), against one raw Status round trip as the baseline of the
//! same run. Medians over a bounded number of rounds.

use std::time::{Duration, Instant};

use etcd_monitor::cluster::{Collector, CollectorOptions};
use etcd_monitor::config::ClusterConfig;
use etcd_monitor::health::{self, Thresholds, Verdict};
use etcd_testkit::{ClusterOptions, EtcdCluster};

const ROUNDS: usize = 200;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.expect("cluster");
        let config = ClusterConfig { endpoints: cluster.endpoints(), ..ClusterConfig::default() };
        let mut raw = cluster.member_client(0).await.expect("client");
        for (label, options) in [
            ("full check (status, read, /metrics, alarms, hashkv)", CollectorOptions::default()),
            ("without /metrics and hashkv", CollectorOptions { scrape_metrics: false, hashkv: false, certificates: false, wait_for_certificates: false }),
        ] {
            let mut collector = Collector::new(config.clone(), options);
            let _ = collector.collect().await; // connect once, as the daemon does
            let mut checks = Vec::with_capacity(ROUNDS);
            let mut status = Vec::with_capacity(ROUNDS);
            for _ in 0..ROUNDS {
                let t = Instant::now();
                raw.status().await.expect("status");
                status.push(t.elapsed());
                let t = Instant::now();
                let snapshot = health::evaluate(collector.collect().await, &Thresholds::default());
                checks.push(t.elapsed());
                assert_eq!(snapshot.verdict, Verdict::Healthy, "{:?}", snapshot.findings);
            }
            let (m, s) = (median(checks.clone()), median(status));
            println!(
                "{label}: median {}, p99 {}; one raw Status round trip: median {} (ratio {:.1}x), {ROUNDS} rounds",
                ms(m),
                ms(p99(checks)),
                ms(s),
                m.as_secs_f64() / s.as_secs_f64()
            );
        }
    });
}
