//! `etcd-monitor bench` next to etcdctl in one run on one 3-member testkit
//! cluster: `bench check-perf --load s` against `etcdctl check perf --load s`,
//! and our `put` with 500 clients (256 B keys, 1 KiB values, 60 s) against
//! `etcdctl check perf --load l` (500 clients, same sizes; its 8000 w/s target
//! is out of reach on a small machine, so it measures etcdctl's write
//! throughput). Debian's etcd-client package has no Go `benchmark` tool, so
//! etcdctl check perf is the Go reference.
//!
//! Client CPU is the process's user + system time, read as the growth of this
//! process's `cutime + cstime` (/proc/self/stat) around each waited-for child.
//! The order of the tools alternates by round; the history is compacted and
//! every member defragmented after each run. Medians over `ROUNDS` (env,
//! default 3) rounds.

use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{CompactionOptions, GetOptions};
use etcd_testkit::{ClusterOptions, EtcdCluster};

/// One run of one tool.
#[derive(Debug, Clone, Copy)]
struct Sample {
    throughput: f64,
    ops: f64,
    cpu_s: f64,
    wall_s: f64,
    slowest_ms: f64,
}

impl Sample {
    fn cpu_us_per_op(&self) -> f64 {
        self.cpu_s * 1e6 / self.ops.max(1.0)
    }
}

/// CPU seconds of this process's reaped children.
fn children_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces); cutime and
    // cstime are fields 16 and 17 of stat(5), i.e. 13 and 14 after ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[13].parse::<f64>().unwrap_or(0.0) + fields[14].parse::<f64>().unwrap_or(0.0);
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Runs `cmd`, returning its stdout, wall time and CPU.
fn timed(cmd: &mut Command) -> (String, f64, f64) {
    let cpu0 = children_cpu_s();
    let t = Instant::now();
    let out = cmd.output().expect("spawn");
    let wall = t.elapsed().as_secs_f64();
    let cpu = children_cpu_s() - cpu0;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() && out.status.code() != Some(1) {
        panic!(
            "{cmd:?} failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (stdout, wall, cpu)
}

fn etcdctl_check_perf(endpoints: &str, load: &str) -> Sample {
    let (out, wall_s, cpu_s) = timed(Command::new("etcdctl").env("ETCDCTL_API", "3").args([
        "--endpoints",
        endpoints,
        "check",
        "perf",
        "--load",
        load,
    ]));
    let number_after = |needle: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {out}"));
        let tail = &line[line.find(needle).unwrap_or(0) + needle.len()..];
        tail.trim()
            .trim_start_matches(':')
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .find(|s| !s.is_empty())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no number after {needle:?} in {line}"))
    };
    let throughput = if out.contains("Throughput is") {
        number_after("Throughput is")
    } else {
        number_after("Throughput too low")
    };
    let slowest_s = number_after("request took");
    Sample {
        throughput,
        // etcdctl does not print its count: 60 s at the reported rate.
        ops: throughput * 60.0,
        cpu_s,
        wall_s,
        slowest_ms: slowest_s * 1000.0,
    }
}

fn ours(endpoints: &str, args: &[&str]) -> Sample {
    let (out, wall_s, cpu_s) = timed(
        Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
            .arg("bench")
            .args(args)
            .args(["--endpoints", endpoints, "--json", "--no-progress"]),
    );
    let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    Sample {
        throughput: r["throughput"].as_f64().expect("throughput"),
        ops: r["succeeded"].as_f64().expect("succeeded"),
        cpu_s,
        wall_s,
        slowest_ms: r["max"].as_f64().expect("max"),
    }
}

/// Compacts at the current revision and defragments every member.
async fn compact_and_defrag(cluster: &EtcdCluster) {
    let mut c = cluster.client().await.expect("client");
    let rev = c
        .get("compact-probe", Some(GetOptions::new().with_count_only()))
        .await
        .expect("get")
        .header()
        .map_or(0, |h| h.revision());
    let _ = c
        .compact(rev, Some(CompactionOptions::new().with_physical()))
        .await;
    for i in 0..3 {
        let mut m = cluster.member_client(i).await.expect("member client");
        m.defragment().await.expect("defragment");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = rt
        .block_on(EtcdCluster::start(ClusterOptions::new(3)))
        .expect("cluster");
    let endpoints = cluster.endpoints().join(",");
    type Runner<'a> = Box<dyn Fn() -> Sample + 'a>;
    let pairs: Vec<(&str, &str, Runner, &str, Runner)> = vec![
        (
            "check perf --load s (150 w/s, 50 clients, 60 s)",
            "etcdctl check perf --load s",
            Box::new(|| etcdctl_check_perf(&endpoints, "s")),
            "etcd-monitor bench check-perf --load s",
            Box::new(|| ours(&endpoints, &["check-perf", "--load", "s"])),
        ),
        (
            "writes, 500 clients, 256 B keys, 1 KiB values, 60 s",
            "etcdctl check perf --load l",
            Box::new(|| etcdctl_check_perf(&endpoints, "l")),
            "etcd-monitor bench put --clients 500 --key-size 256 --val-size 1024 --duration 60s",
            Box::new(|| {
                ours(
                    &endpoints,
                    &[
                        "put",
                        "--clients",
                        "500",
                        "--key-size",
                        "256",
                        "--val-size",
                        "1024",
                        "--key-space-size",
                        "18446744073709551615",
                        "--duration",
                        "60s",
                    ],
                )
            }),
        ),
    ];
    println!("{rounds} rounds; medians; client CPU = user + system of the tool's process\n");
    for (title, go_name, go, rust_name, rust) in &pairs {
        let mut go_samples = Vec::new();
        let mut rust_samples = Vec::new();
        for round in 0..rounds {
            let order: [bool; 2] = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for go_first in order {
                let s = if go_first { go() } else { rust() };
                eprintln!(
                    "{title} round {round}: {} {s:?}",
                    if go_first { go_name } else { rust_name }
                );
                if go_first {
                    go_samples.push(s)
                } else {
                    rust_samples.push(s)
                }
                rt.block_on(compact_and_defrag(&cluster));
                std::thread::sleep(Duration::from_secs(2));
            }
        }
        println!("### {title}\n");
        println!(
            "| tool | throughput (w/s) | slowest (ms) | client CPU (s) | CPU per op (µs) | wall (s) |"
        );
        println!("|---|---|---|---|---|---|");
        for (name, samples) in [(go_name, &go_samples), (rust_name, &rust_samples)] {
            let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
            println!(
                "| `{name}` | {:.0} | {:.0} | {:.2} | {:.0} | {:.1} |",
                m(|s| s.throughput),
                m(|s| s.slowest_ms),
                m(|s| s.cpu_s),
                m(Sample::cpu_us_per_op),
                m(|s| s.wall_s),
            );
        }
        println!();
    }
}
