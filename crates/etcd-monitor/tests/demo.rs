//! `etcd-monitor demo` starts a real cluster and Ctrl-C leaves nothing behind.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn demo_starts_a_cluster_and_ctrl_c_stops_every_member() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"))
        .args(["demo", "--members", "3", "--api-port", "0"])
        .env_remove("ETCD_MONITOR_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut pids = Vec::new();
    let mut endpoints = String::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("pid ").nth(1) {
            pids.push(
                rest.split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<i32>()
                    .unwrap(),
            );
        }
        if let Some(rest) = line.strip_prefix("endpoints: ") {
            endpoints = rest.to_string();
            break;
        }
    }
    assert_eq!(pids.len(), 3, "three members expected");
    assert_eq!(endpoints.split(',').count(), 3, "{endpoints}");
    // The dashboard answers at the printed address.
    let dashboard = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("dashboard: ").map(str::to_string))
        .expect("a dashboard line");
    let page = http_get(&dashboard);
    assert!(page.contains("<title>etcd-monitor</title>"), "{page}");

    // The cluster really serves: etcdctl talks to it.
    let health = Command::new("etcdctl")
        .args(["--endpoints", &endpoints, "endpoint", "health"])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );

    // SAFETY: kill(2) on our own child.
    unsafe { libc_kill(child.id() as i32, 2) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l == "demo cluster stopped"), "{rest:?}");
    let status = child.wait().unwrap();
    assert!(status.success(), "demo exited with {status}");
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in pids {
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            assert!(
                Instant::now() < deadline,
                "etcd member {pid} outlived the demo"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A plain HTTP/1.0 GET of `http://host:port/path`.
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}
