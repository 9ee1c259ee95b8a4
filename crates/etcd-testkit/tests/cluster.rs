//! The test kit against real etcd members.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use etcd_testkit::{ClusterOptions, EtcdCluster, MemberState};

async fn short_timeout_client(cluster: &EtcdCluster, timeout: Duration) -> Client {
    let opts = cluster.connect_options().unwrap().with_timeout(timeout);
    Client::connect(cluster.endpoints(), Some(opts))
        .await
        .unwrap()
}

/// Retries `put` for a few seconds: right after a kill the balanced channel may
/// still pick the dead endpoint once, and a new leader may still be elected.
async fn put_eventually(client: &mut Client, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.put(key, value, None).await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("put {key} retried: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("put {key} kept failing: {e}"),
        }
    }
}

async fn get_value(client: &mut Client, key: &str) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.get(key, None).await {
            Ok(resp) => return resp.kvs().first().map(|kv| kv.value().to_vec()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("get {key} retried: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("get {key} kept failing: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_survives_one_kill_times_out_on_two_and_keeps_data_on_restart() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let members = cluster.members();
    assert_eq!(members.len(), 3);
    assert!(
        members
            .iter()
            .all(|m| m.id != 0 && m.state == MemberState::Running)
    );
    assert_eq!(cluster.endpoints().len(), 3);

    let mut client = short_timeout_client(&cluster, Duration::from_secs(2)).await;
    client.put("kit/before", "1", None).await.unwrap();

    // Kill the leader: the worst single failure.
    let leader = cluster.leader_index().await.unwrap().expect("a leader");
    cluster.kill(leader).unwrap();
    assert_eq!(cluster.member(leader).unwrap().state, MemberState::Stopped);
    put_eventually(&mut client, "kit/after-one", "2").await;
    assert_eq!(
        get_value(&mut client, "kit/after-one").await.as_deref(),
        Some(&b"2"[..])
    );
    let new_leader = cluster.leader_index().await.unwrap().expect("a new leader");
    assert_ne!(new_leader, leader);

    // Kill a second member: no quorum, a write must fail within the timeout.
    let second = (0..3).find(|i| *i != leader).unwrap();
    cluster.kill(second).unwrap();
    let started = Instant::now();
    let result = client.put("kit/no-quorum", "3", None).await;
    let took = started.elapsed();
    assert!(result.is_err(), "a write without quorum succeeded");
    assert!(
        took < Duration::from_secs(4),
        "the write took {took:?} to fail"
    );

    // Restart both: the data is still there.
    cluster.restart(leader).await.unwrap();
    cluster.restart(second).await.unwrap();
    cluster.wait_ready(Duration::from_secs(20)).await.unwrap();
    let mut fresh = cluster.client().await.unwrap();
    assert_eq!(
        get_value(&mut fresh, "kit/before").await.as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        get_value(&mut fresh, "kit/after-one").await.as_deref(),
        Some(&b"2"[..])
    );
    // "kit/no-quorum" is deliberately not checked: a write that timed out
    // has an unknown outcome. The surviving member may have appended the
    // proposal, which the restarted quorum then commits.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_answers_and_resume_brings_them_back() {
    let cluster = EtcdCluster::start(ClusterOptions::new(1)).await.unwrap();
    let opts = cluster
        .connect_options()
        .unwrap()
        .with_timeout(Duration::from_millis(800));
    let mut client = Client::connect(cluster.endpoints(), Some(opts))
        .await
        .unwrap();
    client.put("k", "v", None).await.unwrap();

    cluster.pause(0).unwrap();
    assert_eq!(cluster.member(0).unwrap().state, MemberState::Paused);
    assert!(cluster.pause(0).is_err(), "pausing twice must be refused");
    let started = Instant::now();
    assert!(client.get("k", None).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(3));

    cluster.resume(0).unwrap();
    assert_eq!(
        get_value(&mut client, "k").await.as_deref(),
        Some(&b"v"[..])
    );

    // A graceful stop followed by a restart keeps the data too.
    cluster.stop(0, Duration::from_secs(10)).unwrap();
    cluster.restart(0).await.unwrap();
    let mut client = cluster.client().await.unwrap();
    assert_eq!(
        get_value(&mut client, "k").await.as_deref(),
        Some(&b"v"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_needs_the_client_certificate() {
    let cluster = EtcdCluster::start(ClusterOptions::new(1).client_cert_auth())
        .await
        .unwrap();
    let endpoint = cluster.endpoint(0).unwrap();
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    let files = cluster.tls_files().unwrap();

    let mut client = cluster.client().await.unwrap();
    client.put("secure", "yes", None).await.unwrap();

    let without_cert = ConnectOptions::new()
        .with_tls(files.client_tls_without_identity().unwrap())
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(2));
    let refused = match Client::connect([endpoint.clone()], Some(without_cert)).await {
        Err(_) => true,
        Ok(mut c) => c.get("secure", None).await.is_err(),
    };
    assert!(refused, "a client without certificate was served");

    // Metrics stay on plain HTTP for TLS-only client ports.
    let metrics = http_get(&cluster.member(0).unwrap().metrics_url);
    assert!(
        metrics.contains("etcd_server_has_leader 1"),
        "no has_leader in metrics"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_cluster_refuses_a_wrong_password_and_quota_is_applied() {
    let quota = 64 * 1024 * 1024;
    let cluster = EtcdCluster::start(
        ClusterOptions::new(1)
            .auth("s3cret")
            .quota_backend_bytes(quota),
    )
    .await
    .unwrap();
    let mut client = cluster.client().await.unwrap();
    client.put("a", "1", None).await.unwrap();

    let wrong = ConnectOptions::new()
        .with_user("root", "wrong")
        .with_timeout(Duration::from_secs(2));
    let err = match Client::connect(cluster.endpoints(), Some(wrong)).await {
        Err(e) => e.to_string(),
        Ok(mut c) => c
            .get("a", None)
            .await
            .expect_err("wrong password accepted")
            .to_string(),
    };
    assert!(
        err.contains("authentication failed"),
        "unclear error: {err}"
    );

    let anonymous = ConnectOptions::new().with_timeout(Duration::from_secs(2));
    let mut anon = Client::connect(cluster.endpoints(), Some(anonymous))
        .await
        .unwrap();
    let err = anon
        .get("a", None)
        .await
        .expect_err("anonymous read allowed")
        .to_string();
    assert!(
        err.contains("user name is empty") || err.contains("permission denied"),
        "{err}"
    );

    let metrics = http_get(&cluster.member(0).unwrap().metrics_url);
    let reported = metrics
        .lines()
        .find_map(|l| l.strip_prefix("etcd_server_quota_backend_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(reported, Some(quota as f64), "quota flag not applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joins_a_running_cluster() {
    let cluster = EtcdCluster::start(ClusterOptions::new(1)).await.unwrap();
    let index = cluster.add_member(true).await.unwrap();
    assert_eq!(index, 1);
    // A learner refuses most RPCs: talk to the voting member.
    let mut client = cluster.member_client(0).await.unwrap();
    let list = client.member_list().await.unwrap();
    assert_eq!(list.members().len(), 2);
    let learner = list
        .members()
        .iter()
        .find(|m| m.is_learner())
        .expect("a learner");
    assert_eq!(learner.id(), cluster.member(1).unwrap().id);
    assert_eq!(learner.name(), "m1");
    // The learner replicates the leader's log.
    let put = client.put("replicated", "x", None).await.unwrap();
    let mut direct = cluster.member_client(1).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = direct.status().await.unwrap();
        assert!(status.is_learner());
        let leader_index = client.status().await.unwrap().raft_index();
        if status.raft_applied_index() >= leader_index {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the learner never caught up (revision {})",
            put.header().unwrap().revision()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run by `members_die_with_the_test_process` in a child process: starts a
/// cluster, prints its pids and exits without running any destructor.
#[test]
fn child_starts_a_cluster_and_exits_abruptly() {
    if std::env::var_os("TESTKIT_ABRUPT_CHILD").is_none() {
        return; // only meaningful inside the parent test below
    }
    let cluster = EtcdCluster::start_blocking(ClusterOptions::new(2)).unwrap();
    for m in cluster.members() {
        println!("PID {}", m.pid.unwrap());
    }
    std::io::stdout().flush().unwrap();
    std::process::exit(0);
}

#[test]
fn members_die_with_the_test_process() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_starts_a_cluster_and_exits_abruptly",
            "--nocapture",
        ])
        .env("TESTKIT_ABRUPT_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<i32> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PID "))
        .map(|p| p.trim().parse().unwrap())
        .collect();
    assert_eq!(
        pids.len(),
        2,
        "child output: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in pids {
        while alive(pid) {
            assert!(
                Instant::now() < deadline,
                "etcd pid {pid} outlived its test process"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Run by `the_shared_cluster_is_removed_at_exit` in a child process.
#[test]
fn child_uses_the_shared_cluster_and_exits() {
    if std::env::var_os("TESTKIT_SHARED_CHILD").is_none() {
        return; // only meaningful inside the parent test below
    }
    let cluster = EtcdCluster::shared();
    println!("DIR {}", cluster.dir().display());
    for m in cluster.members() {
        println!("PID {}", m.pid.unwrap());
    }
    std::io::stdout().flush().unwrap();
    std::process::exit(0); // statics are not dropped; atexit must clean up
}

#[test]
fn the_shared_cluster_is_removed_at_exit() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_uses_the_shared_cluster_and_exits",
            "--nocapture",
        ])
        .env("TESTKIT_SHARED_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("DIR "))
        .expect("the child printed its dir");
    assert!(
        !std::path::Path::new(dir).exists(),
        "{dir} outlived its process"
    );
    for pid in stdout.lines().filter_map(|l| l.strip_prefix("PID ")) {
        assert!(
            !alive(pid.trim().parse().unwrap()),
            "etcd {pid} outlived its process"
        );
    }
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie waiting for init to reap it is dead for our purpose.
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// A minimal HTTP/1.0 GET over loopback, enough to read a metrics page.
fn http_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = TcpStream::connect(host).unwrap();
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}
