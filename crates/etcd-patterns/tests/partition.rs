//! Caches behind a member cut off from its peers (a real partition with
//! iptables; dedicated cluster, needs root).

mod common;

use common::client_of;

use std::time::{Duration, Instant};

use etcd_patterns::watch::require_leader_clients;
use etcd_patterns::{Flag, Flags};
use etcd_testkit::{ClusterOptions, EtcdCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_watching_through_a_partitioned_member_see_a_kill_within_10_s() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3).isolatable(2))
        .await
        .unwrap();
    let writer = client_of(&cluster, &[0, 1]).await;
    // Plain clients (no require-leader), the soon isolated member first: only
    // the staleness probe can tell that its answers are stale.
    let mut plain = Vec::new();
    for i in [2, 0, 1] {
        plain.push(cluster.member_client(i).await.unwrap());
    }
    let bound = Flags::start_with_watch_clients(writer.clone(), plain, "p-flags")
        .await
        .unwrap();
    // The same with require-leader clients: the member cancels the watch.
    let eps: Vec<String> = [2, 0, 1]
        .iter()
        .map(|&i| cluster.endpoint(i).unwrap())
        .collect();
    let leader_required = Flags::start_with_watch_clients(
        writer.clone(),
        require_leader_clients(&eps, Some(cluster.connect_options().unwrap()))
            .await
            .unwrap(),
        "p-flags",
    )
    .await
    .unwrap();
    let admin = Flags::start(writer, "p-flags").await.unwrap();
    let rev = admin.set("checkout", &Flag::boolean(true)).await.unwrap();
    bound.wait_for(rev).await.unwrap();
    leader_required.wait_for(rev).await.unwrap();
    assert!(bound.is_enabled("checkout", "alice"));

    let cut = cluster.partition(2).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    admin.kill("checkout").await.unwrap();
    let killed = Instant::now();
    let (mut seen_bound, mut seen_required) = (None, None);
    while killed.elapsed() < Duration::from_secs(10) {
        if seen_bound.is_none() && !bound.is_enabled("checkout", "alice") {
            seen_bound = Some(killed.elapsed());
        }
        if seen_required.is_none() && !leader_required.is_enabled("checkout", "alice") {
            seen_required = Some(killed.elapsed());
        }
        if seen_bound.is_some() && seen_required.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cut.heal().unwrap();
    eprintln!("kill seen after {seen_bound:?} (plain clients), {seen_required:?} (require-leader)");
    assert!(
        seen_bound.is_some(),
        "flags watching through the isolated member (plain clients) never saw the kill"
    );
    assert!(
        seen_required.is_some(),
        "flags watching through the isolated member (require-leader) never saw the kill"
    );
}
