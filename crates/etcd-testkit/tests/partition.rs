//! A member cut off from its peers by iptables keeps serving clients from
//! stale state and catches up once healed; the rules never outlive the guard.

use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use etcd_testkit::{ClusterOptions, EtcdCluster};

fn rules() -> String {
    let out = std::process::Command::new("iptables")
        .args(["-S", "OUTPUT"])
        .output()
        .expect("iptables -S");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn status(client: &Client) -> Option<(u64, u64)> {
    let s = tokio::time::timeout(Duration::from_secs(2), client.maintenance_client().status())
        .await
        .ok()?
        .ok()?;
    Some((s.leader(), s.raft_term()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_member_loses_its_peers_and_catches_up_after_healing() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3).isolatable(2))
        .await
        .unwrap();
    assert!(
        cluster.partition(0).is_err(),
        "only the isolatable member can be partitioned"
    );
    let isolated = cluster.member_client(2).await.unwrap();
    let healthy = cluster.member_client(0).await.unwrap();
    let (_, term_before) = status(&healthy).await.unwrap();

    let cut = cluster.partition(2).unwrap();
    let peer_port = cluster
        .member(2)
        .unwrap()
        .peer_url
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert!(rules().contains(&peer_port), "the rules are in place");

    // Within the election timeout and a little more, member 2 has no leader
    // or a term above the others'.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, healthy_term) = status(&healthy).await.unwrap();
        match status(&isolated).await {
            Some((leader, term)) if leader == 0 || term > healthy_term => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "member 2 never noticed the partition"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The majority still writes; the isolated member cannot serve a
    // linearizable read.
    healthy
        .kv_client()
        .put("partition/k", "written-while-cut", None)
        .await
        .expect("the majority accepts writes");
    let read = tokio::time::timeout(
        Duration::from_secs(3),
        isolated.kv_client().get("partition/k", None),
    )
    .await;
    assert!(
        !matches!(read, Ok(Ok(ref r)) if !r.kvs().is_empty()),
        "a linearizable read through the isolated member must not succeed"
    );
    // A serializable read answers from its stale state.
    let stale = isolated
        .kv_client()
        .get("partition/k", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert!(
        stale.kvs().is_empty(),
        "the isolated member did not see the write"
    );

    cut.heal().unwrap();
    assert!(
        !rules().contains(&format!("--dport {peer_port} ")),
        "healing removed the rules"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = isolated
            .kv_client()
            .get("partition/k", Some(GetOptions::new().with_serializable()))
            .await;
        if r.is_ok_and(|r| {
            r.kvs()
                .first()
                .is_some_and(|kv| kv.value() == b"written-while-cut")
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "member 2 never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("term before the partition: {term_before}");

    // A dropped guard removes its rules too.
    {
        let _cut = cluster.partition(2).unwrap();
        assert!(rules().contains(&format!("--dport {peer_port} ")));
    }
    assert!(!rules().contains(&format!("--dport {peer_port} ")));
}
