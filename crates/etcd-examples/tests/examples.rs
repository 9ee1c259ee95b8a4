//! Runs the `etcd-examples` binary against real etcd clusters started by
//! etcd-testkit and checks the milestone lines each example prints, in order.
//! Examples that do not kill members share one cluster; each run works under
//! its own key prefix.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use etcd_testkit::{ClusterOptions, EtcdCluster};

const BIN: &str = env!("CARGO_BIN_EXE_etcd-examples");

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn run(endpoints: &[String], args: &[&str]) -> Run {
    let start = Instant::now();
    let out = Command::new(BIN)
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .args(args)
        .output()
        .expect("etcd-examples runs");
    Run {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

/// Each milestone appears, after the previous one.
fn assert_in_order(output: &str, milestones: &[&str]) {
    let mut rest = output;
    for m in milestones {
        match rest.find(m) {
            Some(at) => rest = &rest[at + m.len()..],
            None => panic!("milestone {m:?} missing or out of order in:\n{output}"),
        }
    }
}

/// The numbers following "fencing token " in the lines of `output`.
fn tokens(output: &str) -> Vec<i64> {
    output
        .lines()
        .filter_map(|l| l.split("fencing token ").nth(1))
        .filter_map(|t| t.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

fn example(name: &str, milestones: &[&str]) -> String {
    let cluster = EtcdCluster::shared();
    let r = run(&cluster.endpoints(), &["--example", name]);
    assert!(
        r.success,
        "{name} failed after {:?}\nstdout:\n{}\nstderr:\n{}",
        r.took, r.stdout, r.stderr
    );
    assert_in_order(&r.stdout, milestones);
    eprintln!("{name}: {:?}", r.took);
    r.stdout
}

#[test]
fn lock() {
    let out = example(
        "lock",
        &[
            "[lock] worker-1 acquired, fencing token ",
            "[lock] worker-1 guarded write applied",
            "[lock] worker-2 waiting for the lock",
            "[lock] worker-1's lease revoked",
            "[lock] worker-2 acquired, fencing token ",
            "[lock] worker-1 guarded write rejected: not the owner any more",
            "[lock] worker-2 guarded write applied",
            "[lock] store accepted token ",
            "rejected worker-1's stale token ",
            "[lock] done",
        ],
    );
    let t = tokens(&out);
    assert!(t.len() == 2 && t[0] < t[1], "tokens {t:?}");
}

#[test]
fn discovery() {
    example(
        "discovery",
        &[
            "[discovery] registered api-1 at 127.0.0.1:9001",
            "[discovery] registered api-3 at 127.0.0.1:9003",
            "[discovery] discovered api-1 at 127.0.0.1:9001",
            "[discovery] discovered api-2 at 127.0.0.1:9002",
            "[discovery] discovered api-3 at 127.0.0.1:9003",
            "[discovery] api-3 crashed",
            "[discovery] watch saw api-3 leave after ",
            "[discovery] now discovering 2 instances: api-1, api-2",
            "[discovery] done",
        ],
    );
}

#[test]
fn lb() {
    example(
        "lb",
        &[
            "[lb] discovered api-1 (weight 1), api-2 (weight 2), api-3 (weight 3)",
            "[lb] round-robin: api-1 api-2 api-3 api-1 api-2 api-3",
            "[lb] weighted round-robin: ",
            "[lb] weighted counts over 12 picks: api-1=2 api-2=4 api-3=6",
            "[lb] consistent-hash: user-0 -> api-",
            "[lb] consistent-hash: api-4 joined, ",
            " keys moved, all of them to api-4",
            "[lb] done",
        ],
    );
}

#[test]
fn config() {
    example(
        "config",
        &[
            "[config] set limits max_conns=100",
            "[config] reload: (none) -> max_conns=100 timeout_ms=500",
            "[config] compare-and-set on mod revision ",
            "[config] reload: old max_conns=100 timeout_ms=500 -> new max_conns=200 timeout_ms=500",
            "[config] stale compare-and-set on revision ",
            "[config] history (newest first): max_conns=200@",
            ", max_conns=100@",
            "[config] rolled back to revision ",
            "[config] reload: old max_conns=200 timeout_ms=500 -> new max_conns=100 timeout_ms=500",
            "[config] done",
        ],
    );
}

#[test]
fn flags() {
    let out = example(
        "flags",
        &[
            "[flags] dark-mode (boolean, on): alice=true bob=true",
            "[flags] new-checkout rolled out to 25%: enabled for ",
            "[flags] stable buckets (same answer in every process): user-0=off",
            "[flags] kill switch: new-checkout now enabled for 0 of 1000 subjects",
            "[flags] done",
        ],
    );
    let line = out
        .lines()
        .find(|l| l.contains("rolled out to 25%"))
        .unwrap_or("");
    let on: usize = line
        .split("enabled for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!((200..=300).contains(&on), "{line}");
}

#[test]
fn election() {
    let out = example(
        "election",
        &[
            "[election] 3 candidates campaigning (session ttl 2s)",
            " is leader, fencing token ",
            " resigned",
            "[election] failover after resign: candidate-",
            " crashed (its lease is no longer renewed)",
            "[election] failover after crash: candidate-",
            "(lease expiry)",
            "[election] done",
        ],
    );
    assert!(
        out.contains("[election] observer: leader is candidate-"),
        "{out}"
    );
    let t = tokens(&out);
    assert!(t.len() == 3 && t[0] < t[1] && t[1] < t[2], "tokens {t:?}");
}

#[test]
fn leader_task() {
    example(
        "leader-task",
        &[
            "[leader-task] 3 nodes campaigning",
            "[leader-task] job ran on node-",
            " shut down (resigned)",
            "[leader-task] job moved from node-",
            " crashed",
            "[leader-task] job moved from node-",
            "(lease expiry)",
            "[leader-task] done",
        ],
    );
}

#[test]
fn txn() {
    example(
        "txn",
        &[
            "[txn] accounts: alice=100 bob=0",
            "[txn] transfer 30 alice->bob committed atomically",
            "[txn] meanwhile another client deposits 5 to bob",
            "[txn] transfer 20 alice->bob rejected: bob's mod revision is no longer ",
            "[txn] retried on fresh reads: transfer 20 alice->bob committed",
            "[txn] STM transfer 10 alice->bob committed after 2 attempts",
            "[txn] balances: alice=40 bob=70 total=110",
            "[txn] done",
        ],
    );
}

#[test]
fn lease() {
    example(
        "lease",
        &[
            "granted (ttl 2s), 2 keys attached, not renewed",
            "granted (ttl 2s), 1 key attached, renewed every 500 ms",
            " expired after ",
            "its 2 keys are gone",
            " kept alive: its key is still there after ",
            " revoked: 0 keys left under it",
            "[lease] done",
        ],
    );
}

const WATCH_STEPS: &[&str] = &[
    "[watch] watching ",
    "[watch] event: PUT a = 1",
    "[watch] event: PUT b = 2",
    "[watch] event: DELETE a",
    "[watch] watcher stopped at revision ",
    "[watch] 2 changes written while no watcher runs",
    "[watch] event: PUT c = 3",
    "[watch] event: PUT b = 4",
    "[watch] resumed from revision ",
];

#[test]
fn watch() {
    let mut steps = WATCH_STEPS.to_vec();
    steps.push("[watch] done");
    example("watch", &steps);
}

#[test]
fn ha() {
    let out = example(
        "ha",
        &[
            " is primary, fencing token ",
            " stopped (crashed; its lease runs out after 2s)",
            " took over after ",
            "[ha] late write from node-",
            "rejected by the store",
            "[ha] fencing check: ",
            "no overlap",
            "[ha] done",
        ],
    );
    assert!(out.contains(" is secondary (standing by)"), "{out}");
}

#[test]
fn all() {
    // Its own (one-member) cluster, so that the check for keys left behind
    // does not see the keys of examples other tests are running.
    let cluster = EtcdCluster::start_blocking(ClusterOptions::new(1)).expect("cluster starts");
    let r = run(&cluster.endpoints(), &[]);
    assert!(
        r.success,
        "all failed\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    let done: Vec<String> = [
        "lock",
        "discovery",
        "lb",
        "config",
        "flags",
        "election",
        "leader-task",
        "txn",
        "lease",
        "watch",
        "ha",
    ]
    .iter()
    .map(|n| format!("[{n}] done"))
    .collect();
    let mut steps: Vec<&str> = done.iter().map(String::as_str).collect();
    steps.push("[all] 11 examples finished");
    assert_in_order(&r.stdout, &steps);
    eprintln!("all: {:?}", r.took);

    // Every example deleted its prefix.
    let left = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let mut client = cluster.client().await?;
            let opts = etcd_client::GetOptions::new()
                .with_prefix()
                .with_keys_only();
            Ok::<_, etcd_testkit::Error>(client.get("/etcd-examples/", Some(opts)).await?)
        })
        .expect("list /etcd-examples/");
    let left: Vec<String> = left
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    assert!(left.is_empty(), "keys left behind: {left:?}");
}

/// A running `etcd-examples` whose stdout is read line by line; killed when
/// the test ends, also when it panics.
struct Node {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    seen: String,
}

impl Node {
    fn start(endpoints: &[String], args: &[&str]) -> Node {
        let mut child = Command::new(BIN)
            .args(["--endpoints", &endpoints.join(",")])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("etcd-examples starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Node {
            child,
            lines,
            seen: String::new(),
        }
    }

    /// Reads lines until `needle` has been printed; panics after `limit`.
    fn until(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                }
                Err(_) => panic!("no {needle:?} within {limit:?}; got:\n{}", self.seen),
            }
        }
    }

    /// Ctrl-C.
    fn interrupt(&self) {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill -INT");
        assert!(sent.success());
    }

    fn exits_successfully(mut self) -> bool {
        self.child.wait().expect("exits").success()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_resumes_after_member_loss() {
    let cluster = EtcdCluster::start_blocking(ClusterOptions::new(3)).expect("cluster starts");
    let mut node = Node::start(
        &cluster.endpoints(),
        &["--example", "watch", "--member-loss-timeout", "30s"],
    );
    node.until("WAITING FOR MEMBER LOSS", Duration::from_secs(30));
    cluster.kill(0).expect("kill member 0");
    node.until("[watch] done", Duration::from_secs(40));
    let mut steps = WATCH_STEPS.to_vec();
    steps.extend([
        "[watch] WAITING FOR MEMBER LOSS: kill the etcd member at ",
        "[watch] member at ",
        " lost",
        "[watch] event: PUT d = 5",
        "[watch] event: PUT e = 6",
        "[watch] event: PUT f = 7",
        "[watch] watch resumed on another member: all 3 changes written after the loss arrived, in order",
        "[watch] done",
    ]);
    assert_in_order(&node.seen, &steps);
    let seen = node.seen.clone();
    assert!(node.exits_successfully(), "{seen}");
}

#[test]
fn election_nodes_in_separate_processes_fail_over() {
    let endpoints = EtcdCluster::shared().endpoints();
    let node = |id: &str| Node::start(&endpoints, &["--example", "election", "--node-id", id]);
    let mut a = node("node-a");
    a.until(
        "[election] node-a is leader, fencing token ",
        Duration::from_secs(10),
    );
    let mut b = node("node-b");
    b.until("[election] node-b campaigning", Duration::from_secs(10));
    b.until(
        "[election] observer: leader is node-a",
        Duration::from_secs(10),
    );

    let crashed = Instant::now();
    drop(a); // SIGKILL: its lease runs out after the 2 s TTL
    b.until(
        "[election] node-b is leader, fencing token ",
        Duration::from_secs(10),
    );
    let took = crashed.elapsed();
    assert!(took < Duration::from_secs(5), "failover took {took:?}");

    b.interrupt(); // Ctrl-C resigns
    b.until("[election] node-b resigned", Duration::from_secs(10));
    let seen = b.seen.clone();
    assert!(b.exits_successfully(), "{seen}");
    eprintln!("node failover: {took:?}");
}

#[test]
fn unreachable_endpoints_fail_fast_with_a_clear_message() {
    // A port that refuses connections, and one that accepts but never answers.
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    for port in [refused, silent_port] {
        let endpoint = format!("127.0.0.1:{port}");
        let r = run(
            std::slice::from_ref(&endpoint),
            &["--example", "lock", "--dial-timeout", "1s"],
        );
        assert!(!r.success, "exit 0 against {endpoint}: {}", r.stdout);
        assert!(r.took < Duration::from_secs(4), "took {:?}", r.took);
        assert!(
            r.stderr.contains(&endpoint) && r.stderr.contains("dial timeout of 1s"),
            "unclear message: {}",
            r.stderr
        );
    }
}

#[test]
fn single_nodes_run_until_ctrl_c_and_stop_cleanly() {
    let endpoints = EtcdCluster::shared().endpoints();
    let cases = [
        (
            "lock",
            "[lock] solo acquired, fencing token ",
            "[lock] solo stopped",
        ),
        (
            "discovery",
            "[discovery] solo sees 1: solo",
            "[discovery] solo deregistered",
        ),
        (
            "leader-task",
            "[leader-task] job ran on solo",
            "[leader-task] solo stopped",
        ),
        (
            "ha",
            "[ha] solo is primary, fencing token ",
            "[ha] solo stopped",
        ),
    ];
    for (example, running, stopped) in cases {
        let mut node = Node::start(&endpoints, &["--example", example, "--node-id", "solo"]);
        node.until(running, Duration::from_secs(10));
        node.interrupt();
        node.until(stopped, Duration::from_secs(10));
        let seen = node.seen.clone();
        assert!(node.exits_successfully(), "{example}: {seen}");
    }
}
