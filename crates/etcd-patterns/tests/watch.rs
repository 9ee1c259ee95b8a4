//! The resilient watch when its member dies or its revision is compacted
//! (dedicated clusters: these tests kill and freeze members).

mod common;

use common::client_of;

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use etcd_patterns::{ResilientWatch, WatchEvent, WatchOptions};
use etcd_testkit::{ClusterOptions, EtcdCluster};

/// Endpoints with member `first` first: the watch starts on it.
fn endpoints_starting_at(cluster: &EtcdCluster, first: usize) -> Vec<String> {
    let mut eps = cluster.endpoints();
    eps.rotate_left(first);
    eps
}

/// A 3-member cluster, one of its followers (freezing it keeps a leader)
/// and a KV client through the two others.
async fn cluster_and_a_follower() -> (EtcdCluster, usize, etcd_client::KvClient) {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let leader = cluster.leader_index().await.unwrap().expect("a leader");
    let follower = (leader + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|&i| i != follower).collect();
    let writer = client_of(&cluster, &others).await;
    (cluster, follower, writer.kv_client())
}

/// A watch of `prefix` with `opts` and a 1 s stall timeout, starting on
/// `member`.
async fn watch_on(
    cluster: &EtcdCluster,
    member: usize,
    prefix: &str,
    opts: WatchOptions,
) -> ResilientWatch {
    ResilientWatch::connect(
        &endpoints_starting_at(cluster, member),
        Some(cluster.connect_options().unwrap()),
        prefix,
        opts.with_stall_timeout(Duration::from_millis(1000)),
    )
    .await
    .unwrap()
}

async fn next_event(w: &mut ResilientWatch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("an event in time")
        .expect("watch alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_watchs_member_during_1000_puts_loses_and_repeats_nothing() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let watched = 0;
    let opts = WatchOptions::new()
        .with_prefix()
        .with_stall_timeout(Duration::from_millis(500));
    let mut watch = ResilientWatch::connect(
        &endpoints_starting_at(&cluster, watched),
        Some(cluster.connect_options().unwrap()),
        "w/",
        opts,
    )
    .await
    .unwrap();
    let writer = client_of(&cluster, &[1, 2]).await;
    // Let the watch be created before the first put.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now();
    let puts = tokio::spawn(async move {
        let mut kv = writer.kv_client();
        for i in 0..1000 {
            let key = format!("w/{i:04}");
            // Create-if-absent keeps a retried put from writing twice.
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), i.to_string(), None)]);
            let deadline = Instant::now() + Duration::from_secs(15);
            while kv.txn(txn.clone()).await.is_err() {
                assert!(Instant::now() < deadline, "put {key} kept failing");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });

    let mut last_revision = 0;
    for i in 0..1000 {
        if i == 300 {
            cluster.kill(watched).unwrap();
        }
        match next_event(&mut watch).await {
            WatchEvent::Put {
                key,
                value,
                prev,
                revision,
            } => {
                assert_eq!(key, format!("w/{i:04}"), "event {i} in order");
                assert_eq!(value, i.to_string().into_bytes());
                assert_eq!(prev, None);
                assert!(revision > last_revision, "revisions increase");
                last_revision = revision;
            }
            other => panic!("event {i}: unexpected {other:?}"),
        }
    }
    puts.await.unwrap();
    // Nothing is delivered twice: no further event arrives.
    let extra = tokio::time::timeout(Duration::from_millis(500), watch.next()).await;
    assert!(extra.is_err(), "unexpected extra event {extra:?}");
    eprintln!("1000 events across a member kill in {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_while_frozen_resyncs_exactly_the_changes() {
    // The watched follower is frozen later; writes keep a leader.
    let (cluster, watched, mut kv) = cluster_and_a_follower().await;
    for k in ["c/a", "c/b", "c/c", "c/d"] {
        kv.put(k, "1", None).await.unwrap();
    }
    let opts = WatchOptions::new().with_prefix().with_initial_list();
    let mut watch = watch_on(&cluster, watched, "c/", opts).await;
    let mut listed = Vec::new();
    loop {
        match next_event(&mut watch).await {
            WatchEvent::Put { key, .. } => listed.push(key),
            WatchEvent::Resynced { .. } => break,
            other => panic!("initial list: unexpected {other:?}"),
        }
    }
    assert_eq!(listed, ["c/a", "c/b", "c/c", "c/d"]);
    // A change seen live before the freeze.
    kv.put("c/d", "2", None).await.unwrap();
    assert!(matches!(next_event(&mut watch).await, WatchEvent::Put { key, .. } if key == "c/d"));

    cluster.pause(watched).unwrap();
    kv.put("c/a", "2", None).await.unwrap();
    kv.delete("c/b", None).await.unwrap();
    kv.put("c/e", "1", None).await.unwrap();
    kv.put("c/f", "1", None).await.unwrap();
    let rev = kv
        .delete("c/f", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    kv.compact(rev, None).await.unwrap();

    let mut got = Vec::new();
    let resynced_at = loop {
        match next_event(&mut watch).await {
            WatchEvent::Resynced { revision } => break revision,
            ev => got.push(ev),
        }
    };
    cluster.resume(watched).unwrap();
    assert!(resynced_at >= rev);
    let summary: Vec<(String, &str, Option<Vec<u8>>)> = got
        .iter()
        .map(|ev| match ev {
            WatchEvent::Put { key, prev, .. } => (key.clone(), "put", prev.clone()),
            WatchEvent::Delete { key, prev, .. } => (key.clone(), "delete", prev.clone()),
            WatchEvent::Resynced { .. } | WatchEvent::Skipped { .. } => unreachable!(),
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("c/a".to_string(), "put", Some(b"1".to_vec())),
            ("c/e".to_string(), "put", None),
            ("c/b".to_string(), "delete", Some(b"1".to_vec())),
        ],
        "exactly the changes, deletions included"
    );
    // And the watch goes on from the re-list.
    kv.put("c/g", "1", None).await.unwrap();
    match next_event(&mut watch).await {
        WatchEvent::Put { key, revision, .. } => {
            assert_eq!(key, "c/g");
            assert!(revision > resynced_at);
        }
        other => panic!("after resync: unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_only_watch_skips_a_compacted_gap_and_keeps_no_values() {
    let (cluster, watched, mut kv) = cluster_and_a_follower().await;
    kv.put("s/a", "1", None).await.unwrap();
    let opts = WatchOptions::new().with_prefix().with_events_only();
    let mut watch = watch_on(&cluster, watched, "s/", opts).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // An update seen live: no previous value is asked for.
    let live = kv
        .put("s/a", "2", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    match next_event(&mut watch).await {
        WatchEvent::Put {
            key,
            prev,
            revision,
            ..
        } => {
            assert_eq!((key.as_str(), prev, revision), ("s/a", None, live));
        }
        other => panic!("live: unexpected {other:?}"),
    }

    // Changes while the watching member is frozen, then a compaction of
    // all but the last: the watch resumes elsewhere, reports the gap and
    // delivers what etcd still has.
    cluster.pause(watched).unwrap();
    kv.put("s/b", "1", None).await.unwrap();
    kv.delete("s/a", None).await.unwrap();
    let kept = kv
        .put("s/c", "1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    kv.compact(kept, None).await.unwrap();
    let after = kv
        .put("s/d", "1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();

    let got = [
        next_event(&mut watch).await,
        next_event(&mut watch).await,
        next_event(&mut watch).await,
    ];
    cluster.resume(watched).unwrap();
    assert_eq!(
        got[0],
        WatchEvent::Skipped {
            from: live + 1,
            to: kept - 1
        },
        "{got:?}"
    );
    assert!(
        matches!(&got[1], WatchEvent::Put { key, revision, prev: None, .. } if key == "s/c" && *revision == kept),
        "{got:?}"
    );
    assert!(
        matches!(&got[2], WatchEvent::Put { key, revision, prev: None, .. } if key == "s/d" && *revision == after),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_is_noticed_and_the_watch_resumes_elsewhere() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let leader = cluster.leader_index().await.unwrap().expect("a leader");
    let watched = (leader + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|&i| i != watched).collect();
    let writer = client_of(&cluster, &others).await;
    let mut kv = writer.kv_client();
    let opts = WatchOptions::new()
        .with_prefix()
        .with_stall_timeout(Duration::from_millis(500));
    let mut watch = ResilientWatch::connect(
        &endpoints_starting_at(&cluster, watched),
        Some(cluster.connect_options().unwrap()),
        "f/",
        opts,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    kv.put("f/0", "0", None).await.unwrap();
    assert!(matches!(next_event(&mut watch).await, WatchEvent::Put { key, .. } if key == "f/0"));

    // Frozen, not dead: its TCP connections stay open and silent.
    cluster.pause(watched).unwrap();
    let frozen = Instant::now();
    for i in 1..=50 {
        kv.put(format!("f/{i}"), i.to_string(), None).await.unwrap();
    }
    for i in 1..=50 {
        match next_event(&mut watch).await {
            WatchEvent::Put { key, .. } => assert_eq!(key, format!("f/{i}")),
            other => panic!("unexpected {other:?}"),
        }
    }
    let took = frozen.elapsed();
    cluster.resume(watched).unwrap();
    eprintln!("50 events delivered {took:?} after the watch's member froze");
    assert!(
        took < Duration::from_secs(5),
        "noticed within a few stall timeouts"
    );
    let extra = tokio::time::timeout(Duration::from_millis(300), watch.next()).await;
    assert!(extra.is_err(), "unexpected extra event {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_progress_moves_the_resume_point_past_a_compaction() {
    let cluster = EtcdCluster::start(
        ClusterOptions::new(1).extra_args(["--experimental-watch-progress-notify-interval=200ms"]),
    )
    .await
    .unwrap();
    let client = cluster.client().await.unwrap();
    let mut kv = client.kv_client();
    kv.put("quiet/a", "1", None).await.unwrap();
    let opts = WatchOptions::new()
        .with_prefix()
        .with_stall_timeout(Duration::from_secs(30));
    let mut watch = ResilientWatch::start(client.clone(), "quiet/", opts)
        .await
        .unwrap();
    // Writes elsewhere move the revision while the watched prefix stays quiet.
    let mut last = 0;
    for i in 0..20 {
        last = kv
            .put(format!("noise/{i}"), "x", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // a few progress notifications
    client.kv_client().compact(last, None).await.unwrap();
    watch.reconnect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    kv.put("quiet/b", "2", None).await.unwrap();
    match next_event(&mut watch).await {
        WatchEvent::Put { key, .. } if key == "quiet/b" => {}
        other => panic!(
            "the watch resumed from before the compaction and re-listed instead of resuming after the last progress notification: {other:?}"
        ),
    }
}
