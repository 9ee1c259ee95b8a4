//! How long a 3-member cluster takes to become ready (every member answers
//! Status and agrees on a leader), and how long a 1-member cluster takes, as
//! a baseline in the same run. Prints medians over a bounded number of starts.

use std::time::{Duration, Instant};

use etcd_testkit::{ClusterOptions, EtcdCluster};

const RUNS: usize = 7;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn measure(rt: &tokio::runtime::Runtime, members: usize) -> Vec<Duration> {
    (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            let cluster = rt
                .block_on(EtcdCluster::start(ClusterOptions::new(members)))
                .unwrap_or_else(|e| panic!("cluster start failed: {e}"));
            let took = started.elapsed();
            drop(cluster);
            took
        })
        .collect()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for members in [1, 3] {
        let runs = measure(&rt, members);
        let min = runs.iter().min().copied().unwrap_or_default();
        let max = runs.iter().max().copied().unwrap_or_default();
        println!(
            "{members}-member cluster ready: median {:.0} ms (min {:.0}, max {:.0}, {RUNS} starts)",
            median(runs).as_secs_f64() * 1e3,
            min.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
}
