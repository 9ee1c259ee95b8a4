//! `etcd-monitor bench` against real clusters: every workload's counts and
//! latencies, cleanup, `--keep`, SLO exit codes, `--rate` pacing,
//! `--target-leader`, and check-perf's verdict with a paused member.

use etcd_client::GetOptions;
use etcd_monitor::bench::{self, BenchSpec, Consistency, Control, Workload};
use etcd_monitor::config::ClusterConfig;
use etcd_testkit::{ClusterOptions, EtcdCluster};
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

async fn cli(endpoints: &[String], args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .arg("bench")
        .args(args)
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .args(["--dial-timeout", "2s", "--no-progress"])
        .env_remove("ETCD_MONITOR_CONFIG")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn keys_under(cluster: &EtcdCluster, prefix: &str) -> i64 {
    let mut c = cluster.client().await.unwrap();
    c.get(
        prefix,
        Some(GetOptions::new().with_prefix().with_count_only()),
    )
    .await
    .unwrap()
    .count()
}

fn cluster_config(cluster: &EtcdCluster) -> ClusterConfig {
    ClusterConfig {
        endpoints: cluster.endpoints(),
        ..ClusterConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_from_the_cli_counts_total_reports_json_and_cleans_up() {
    let cluster = EtcdCluster::shared();
    let prefix = "/bench-test/put-cli/";
    let run = cli(
        &cluster.endpoints(),
        &["put", "--total", "300", "--clients", "4", "--conns", "2"],
    )
    .await;
    // Default prefix first: must work and leave nothing behind.
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("P99.9") && run.stdout.contains("throughput"));
    assert_eq!(keys_under(cluster, "/etcd-monitor-bench/").await, 0);

    let run = cli(
        &cluster.endpoints(),
        &[
            "put",
            "--total",
            "300",
            "--clients",
            "4",
            "--key-space-size",
            "50",
            "--prefix",
            prefix,
            "--json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["operations"], 300);
    assert_eq!(r["succeeded"], 300);
    assert_eq!(r["count"], 300);
    assert!(r["throughput"].as_f64().unwrap() > 0.0);
    let (p50, p99, max) = (
        r["p50"].as_f64().unwrap(),
        r["p99"].as_f64().unwrap(),
        r["max"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p99 >= p50 && max >= p99, "{r:#}");
    let in_buckets: u64 = r["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(in_buckets, 300);
    let per_second: u64 = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ops"].as_u64().unwrap())
        .sum();
    assert_eq!(per_second, 300);
    assert_eq!(r["errors"], serde_json::json!({}));
    assert!(r["client_cpu_seconds"].as_f64().unwrap() >= 0.0, "{r:#}");
    assert_eq!(keys_under(cluster, prefix).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_leaves_the_keys_and_a_second_run_refuses_the_prefix() {
    let cluster = EtcdCluster::shared();
    let prefix = "/bench-test/keep/";
    let run = cli(
        &cluster.endpoints(),
        &[
            "put",
            "--total",
            "40",
            "--key-space-size",
            "40",
            "--sequential-keys",
            "--prefix",
            prefix,
            "--keep",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(keys_under(cluster, prefix).await, 40);

    let again = cli(
        &cluster.endpoints(),
        &["put", "--total", "5", "--prefix", prefix],
    )
    .await;
    // The run could not be made: 2 (exit status convention, `--help`).
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(
        again.stderr.contains("already holds 40 keys") && again.stderr.contains("--prefix"),
        "{}",
        again.stderr
    );
    let mut c = cluster.client().await.unwrap();
    c.delete(
        prefix,
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_gives_plausible_numbers_and_cleans_up() {
    let cluster = EtcdCluster::shared();
    let config = cluster_config(cluster);
    let total = 120;
    let clients = 3;
    let base = BenchSpec {
        clients,
        conns: 2,
        total: Some(total),
        key_space_size: 8,
        ..BenchSpec::default()
    };
    let cases = [
        (
            "put",
            BenchSpec {
                workload: Workload::Put,
                ..base.clone()
            },
        ),
        (
            "range-s-limit-keys-only",
            BenchSpec {
                workload: Workload::Range,
                consistency: Consistency::Serializable,
                limit: 2,
                keys_only: true,
                ..base.clone()
            },
        ),
        (
            "range-count-only",
            BenchSpec {
                workload: Workload::Range,
                count_only: true,
                ..base.clone()
            },
        ),
        (
            "mixed",
            BenchSpec {
                workload: Workload::Mixed,
                rw_ratio: 3.0,
                ..base.clone()
            },
        ),
        (
            "txn-put",
            BenchSpec {
                workload: Workload::TxnPut,
                txn_ops: 4,
                ..base.clone()
            },
        ),
        (
            "delete",
            BenchSpec {
                workload: Workload::Delete,
                sequential_keys: true,
                ..base.clone()
            },
        ),
        (
            "watch-latency",
            BenchSpec {
                workload: Workload::WatchLatency,
                ..base.clone()
            },
        ),
        (
            "lease-keepalive",
            BenchSpec {
                workload: Workload::LeaseKeepalive,
                ..base.clone()
            },
        ),
        (
            "lock",
            BenchSpec {
                workload: Workload::Lock,
                key_space_size: 2,
                ..base.clone()
            },
        ),
    ];
    for (name, spec) in cases {
        let spec = BenchSpec {
            prefix: format!("/bench-test/workload-{name}/"),
            ..spec
        };
        let conns = bench::connect(&spec, &config).await.unwrap();
        assert_eq!(conns.clients.len(), 2);
        let r = bench::run(&spec, &conns, &Control::default())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.operations, total, "{name}");
        assert_eq!(
            (r.succeeded, r.failed),
            (total, 0),
            "{name}: {:?}",
            r.errors
        );
        assert!(r.errors.is_empty(), "{name}: {:?}", r.errors);
        let samples = if spec.workload == Workload::WatchLatency {
            total * clients as u64
        } else {
            total
        };
        assert_eq!(r.latency.count, samples, "{name}");
        assert!(r.throughput > 0.0, "{name}");
        assert!(
            r.latency.min > 0.0 && r.latency.p99 >= r.latency.p50 && r.latency.max >= r.latency.p99,
            "{name}: {:?}",
            r.latency
        );
        assert!(r.cleanup_error.is_none(), "{name}: {:?}", r.cleanup_error);
        assert_eq!(
            keys_under(cluster, &spec.prefix).await,
            0,
            "{name} left keys behind"
        );
        if spec.workload == Workload::Mixed {
            let reads = r.by_operation["read"].count;
            let writes = r.by_operation["write"].count;
            assert_eq!(reads + writes, total);
            assert!(reads > writes, "rw-ratio 3: {reads} reads, {writes} writes");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_slo_exits_1_and_names_the_target() {
    let cluster = EtcdCluster::shared();
    let run = cli(
        &cluster.endpoints(),
        &[
            "put",
            "--total",
            "30",
            "--prefix",
            "/bench-test/slo/",
            "--json",
            "--slo",
            "p99<1us,throughput>1",
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("SLO missed: p99 =") && run.stderr.contains("missed by"),
        "{}",
        run.stderr
    );
    let r = run.json();
    let slo = r["slo"].as_array().unwrap();
    assert_eq!(slo[0]["passed"], false);
    assert_eq!(slo[1]["passed"], true);

    let met = cli(
        &cluster.endpoints(),
        &[
            "put",
            "--total",
            "30",
            "--prefix",
            "/bench-test/slo/",
            "--slo",
            "p99<10s,errors<1",
        ],
    )
    .await;
    assert_eq!(met.code, 0, "{}", met.stderr);
    assert!(met.stdout.contains("PASS: p99 ="), "{}", met.stdout);

    let bad = cli(
        &cluster.endpoints(),
        &["put", "--total", "5", "--slo", "p99=50ms"],
    )
    .await;
    // Usage: 3.
    assert_eq!(bad.code, 3);
    assert!(
        bad.stderr.contains("invalid SLO \"p99=50ms\""),
        "{}",
        bad.stderr
    );
    assert_eq!(keys_under(cluster, "/bench-test/slo/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_is_respected_within_5_percent() {
    let cluster = EtcdCluster::shared();
    let run = cli(
        &cluster.endpoints(),
        &[
            "put",
            "--rate",
            "200",
            "--duration",
            "2s",
            // Enough clients that the cap, not etcd's latency on a loaded
            // machine, decides: 4 clients fell to 186/s when puts took
            // >20 ms, and 16 to 186.9/s in a CI run where this file's other
            // benchmarks load the same shared cluster (>80 ms). 64 clients
            // keep 200/s up to 320 ms a put.
            "--clients",
            "64",
            "--prefix",
            "/bench-test/rate/",
            "--json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    let throughput = r["throughput"].as_f64().unwrap();
    assert!(
        (190.0..=210.0).contains(&throughput),
        "throughput {throughput}"
    );
    let ops = r["operations"].as_u64().unwrap();
    assert!((380..=420).contains(&ops), "{ops} operations");
    // Paced, not bursty: the first second carries the rate, not a burst
    // (a stalled machine may push a few operations into a third second).
    let timeline = r["timeline"].as_array().unwrap();
    let first = timeline[0]["ops"].as_u64().unwrap();
    assert!((180..=210).contains(&first), "first second: {first} ops");
    let in_timeline: u64 = timeline.iter().map(|s| s["ops"].as_u64().unwrap()).sum();
    assert_eq!(in_timeline, ops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_leader_sends_everything_to_the_leader() {
    let cluster = EtcdCluster::shared();
    let spec = BenchSpec {
        target_leader: true,
        conns: 2,
        total: Some(20),
        prefix: "/bench-test/leader/".into(),
        ..BenchSpec::default()
    };
    let conns = bench::connect(&spec, &cluster_config(cluster))
        .await
        .unwrap();
    let leader = cluster.leader_index().await.unwrap().unwrap();
    assert_eq!(conns.endpoints, vec![cluster.endpoint(leader).unwrap()]);
    let r = bench::run(&spec, &conns, &Control::default())
        .await
        .unwrap();
    assert_eq!(r.succeeded, 20);
    assert_eq!(r.endpoints, conns.endpoints);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_perf_fails_with_a_paused_member() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    // A paused follower: the cluster keeps its leader (a paused leader would
    // first cost an election, and the setup would meet "no leader"), but the
    // requests sent to the frozen member time out.
    let leader = cluster.leader_index().await.unwrap().unwrap();
    let paused = (leader + 1) % 3;
    cluster.pause(paused).unwrap();
    let run = cli(
        &cluster.endpoints(),
        &[
            "check-perf",
            "--load",
            "s",
            "--duration",
            "3s",
            "--command-timeout",
            "1s",
        ],
    )
    .await;
    cluster.resume(paused).unwrap();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.trim_end().ends_with("FAIL"), "{}", run.stdout);
    assert!(
        run.stdout.contains("FAIL: too many errors")
            || run.stdout.contains("FAIL: Slowest request took too long"),
        "{}",
        run.stdout
    );
    // Cleanup ran (puts the paused member still holds may land after it
    // resumes; that is the paused member's backlog, not bench's keys).
    assert!(!run.stdout.contains("WARNING"), "{}", run.stdout);
}

/// The Go original's quick start, `--run-benchmark --benchmark-type=...
/// --benchmark-ops=N`, runs the `bench` it stands for and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_originals_benchmark_flags_still_run() {
    let cluster = EtcdCluster::shared();
    let run = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
            .args(args)
            .env_remove("ETCD_MONITOR_CONFIG")
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let endpoints = cluster.endpoints().join(",");
    for (kind, workload) in [("write", "put"), ("read", "range"), ("mixed", "mixed")] {
        let (code, stdout, stderr) = run(vec![
            "--run-benchmark".into(),
            format!("--benchmark-type={kind}"),
            "--benchmark-ops=120".into(),
            "--endpoints".into(),
            endpoints.clone(),
        ])
        .await;
        assert_eq!(code, 0, "{kind}: {stdout}\n{stderr}");
        assert!(
            stderr.contains(&format!(
                "--run-benchmark is deprecated; running `etcd-monitor bench {workload} --total 120 --endpoints {endpoints}`"
            )),
            "{kind}: {stderr}"
        );
        assert!(
            stdout.contains("throughput") && stdout.contains("120"),
            "{kind}: {stdout}"
        );
    }
    assert_eq!(keys_under(cluster, "/etcd-monitor-bench/").await, 0);
    // The legacy flags alone are refused: they need --run-benchmark.
    let (code, _, stderr) = run(vec!["--benchmark-ops=5".into()]).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("--run-benchmark"), "{stderr}");
}
