//! Sessions, lock waits and campaigns when a member freezes (SIGSTOP), a
//! lease disappears while the keep-alive stream is down, or a campaign
//! keeps failing (dedicated clusters).

mod common;

use common::client_of;

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, Permission, PermissionType};
use etcd_patterns::{HaCoordinator, HaOptions, LostReason, Mutex, Session};
use etcd_testkit::{ClusterOptions, EtcdCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The value of metric `name` (without labels) on a member's `/metrics`.
async fn metric(url: &str, name: &str) -> f64 {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, "metrics"));
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not found at {url}"))
}

fn followers(leader: usize) -> Vec<usize> {
    (0..3).filter(|&i| i != leader).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_each_follower_frozen_longer_than_its_ttl() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let leader = cluster.leader_index().await.unwrap().unwrap();
    let session = Session::new(
        client_of(&cluster, &[0, 1, 2]).await,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    for f in followers(leader) {
        cluster.pause(f).unwrap();
        tokio::time::sleep(Duration::from_secs(12)).await;
        cluster.resume(f).unwrap();
        assert_eq!(
            session.lost_reason(),
            None,
            "the session was lost while member {f} was frozen and two members were healthy"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ttl = client_of(&cluster, &[leader])
        .await
        .lease_client()
        .time_to_live(session.lease_id(), None)
        .await
        .unwrap()
        .ttl();
    assert!(ttl > 0, "the lease is alive on the server");
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_revoked_while_the_stream_is_down_is_reported_expired_at_once() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let leader = cluster.leader_index().await.unwrap().unwrap();
    let f = followers(leader)[0];
    let session = Session::new(client_of(&cluster, &[f]).await, Duration::from_secs(10))
        .await
        .unwrap();
    cluster.pause(f).unwrap();
    // The stream stalls; reopening keeps timing out on the frozen member.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client_of(&cluster, &[leader])
        .await
        .lease_client()
        .revoke(session.lease_id())
        .await
        .unwrap();
    cluster.resume(f).unwrap();
    let resumed = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(12), session.lost())
        .await
        .expect("the session learns of the revoked lease");
    let after = resumed.elapsed();
    eprintln!("lost ({reason}) {after:?} after the member came back");
    assert_eq!(reason, LostReason::Expired);
    assert!(after < Duration::from_millis(1500), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_watch_member_freezes_acquires_within_two_seconds() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let leader = cluster.leader_index().await.unwrap().unwrap();
    let fs = followers(leader);
    let urls = cluster.metrics_urls();
    let watchers = "etcd_debugging_mvcc_watcher_total";
    let before = [
        metric(&urls[fs[0]], watchers).await,
        metric(&urls[fs[1]], watchers).await,
    ];

    let holder_client = client_of(&cluster, &[leader]).await;
    let holder = Mutex::new(
        Session::new(holder_client, Duration::from_secs(10))
            .await
            .unwrap(),
        "frozen/lock",
    );
    let guard = holder.lock().await.unwrap();
    // The waiter talks to the followers only; find the one serving its watch.
    let waiter = Mutex::new(
        Session::new(client_of(&cluster, &fs).await, Duration::from_secs(10))
            .await
            .unwrap(),
        "frozen/lock",
    );
    let waiting = tokio::spawn(async move {
        let g = waiter.lock().await;
        (Instant::now(), g)
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let carrier = loop {
        let now = [
            metric(&urls[fs[0]], watchers).await,
            metric(&urls[fs[1]], watchers).await,
        ];
        if let Some(i) = (0..2).find(|&i| now[i] > before[i]) {
            break fs[i];
        }
        assert!(
            Instant::now() < deadline,
            "no follower carries the waiter's watch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cluster.pause(carrier).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    guard.unlock().await.unwrap();
    let released = Instant::now();
    let (acquired, g) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter acquires at all")
        .unwrap();
    cluster.resume(carrier).unwrap();
    let g = g.unwrap();
    let after = acquired - released;
    eprintln!(
        "waiter acquired {after:?} after the release (its watch was on frozen member {carrier})"
    );
    assert!(after < Duration::from_secs(2), "{after:?}");
    g.unlock().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_that_keeps_failing_backs_off() {
    let cluster = EtcdCluster::start(ClusterOptions::new(1).auth("root-pw"))
        .await
        .unwrap();
    let root = cluster.client().await.unwrap();
    let mut auth = root.auth_client();
    auth.role_add("elsewhere").await.unwrap();
    auth.role_grant_permission(
        "elsewhere",
        Permission::new(PermissionType::Readwrite, "other/").with_prefix(),
    )
    .await
    .unwrap();
    auth.user_add("campaigner", "pw", None).await.unwrap();
    auth.user_grant_role("campaigner", "elsewhere")
        .await
        .unwrap();
    let user = Client::connect(
        cluster.endpoints(),
        Some(ConnectOptions::new().with_user("campaigner", "pw")),
    )
    .await
    .unwrap();

    let url = &cluster.metrics_urls()[0];
    let granted = "etcd_debugging_lease_granted_total";
    let before = metric(url, granted).await;
    let ha = Arc::new(HaCoordinator::new(user, HaOptions::new("denied/ha", "n1")));
    let stop = CancellationToken::new();
    let run = {
        let (ha, stop) = (ha.clone(), stop.clone());
        tokio::spawn(async move { ha.run(|_| async {}, |_| async {}, stop).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let grants = metric(url, granted).await - before;
    eprintln!("{grants} leases granted in 3 s of failing campaigns");
    assert!(grants >= 2.0, "the campaign was retried: {grants}");
    assert!(
        grants <= 10.0,
        "failed campaigns must back off: {grants} grants in 3 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlock_that_times_out_still_releases_the_lock_once_etcd_answers() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let leader = cluster.leader_index().await.unwrap().unwrap();
    let f = followers(leader)[0];
    // TTL 30 s: the holder's session outlives the freeze, so only the
    // unlock can free the lock.
    let holder = Session::new(client_of(&cluster, &[f]).await, Duration::from_secs(30))
        .await
        .unwrap();
    let guard = Mutex::new(holder.clone(), "unlock-retry/lock")
        .lock()
        .await
        .unwrap();
    cluster.pause(f).unwrap();
    let result = guard.unlock().await;
    assert!(
        matches!(result, Err(ref e) if e.is_transient()),
        "an unlock through a frozen member fails as unavailable: {result:?}"
    );
    cluster.resume(f).unwrap();
    let resumed = Instant::now();
    let other = Mutex::new(
        Session::new(
            client_of(&cluster, &[leader]).await,
            Duration::from_secs(10),
        )
        .await
        .unwrap(),
        "unlock-retry/lock",
    );
    let g = other
        .lock_timeout(Duration::from_secs(5))
        .await
        .expect("the failed unlock is retried in the background");
    eprintln!(
        "lock free {:?} after the member came back",
        resumed.elapsed()
    );
    assert_eq!(
        holder.lost_reason(),
        None,
        "the holder's session is still alive"
    );
    g.unlock().await.unwrap();
}
