//! Locks and sessions when an etcd member dies (dedicated cluster).

mod common;

use common::client_of;

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, TxnOp};
use etcd_patterns::{Election, Mutex, MutexGuard, Observer, Session};
use etcd_testkit::{ClusterOptions, EtcdCluster};

/// Watches a holder: records when it was told the lock is lost.
fn watch_loss(guard: Arc<MutexGuard>) -> Arc<StdMutex<Option<Instant>>> {
    let lost = Arc::new(StdMutex::new(None));
    let l = lost.clone();
    tokio::spawn(async move {
        let reason = guard.lost().await;
        *l.lock().unwrap() = Some(Instant::now());
        eprintln!("holder lost: {reason}");
    });
    lost
}

fn contend(
    client: Client,
    prefix: &'static str,
    ttl: Duration,
) -> tokio::task::JoinHandle<Instant> {
    tokio::spawn(async move {
        let s = Session::new(client, ttl).await.unwrap();
        let m = Mutex::new(s, prefix);
        let g = m.lock_timeout(Duration::from_secs(20)).await.unwrap();
        let at = Instant::now();
        std::mem::forget(g); // keep holding until the test ends
        at
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_holders_member_never_yields_two_holders() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let ttl = Duration::from_secs(3);
    let leader = cluster.leader_index().await.unwrap().unwrap();
    let victim = (leader + 1) % 3; // a follower: the survivors keep their leader
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();

    // A: client bound to the victim only. B: balanced over every member.
    let a_session = Session::new(client_of(&cluster, &[victim]).await, ttl)
        .await
        .unwrap();
    let b_session = Session::new(client_of(&cluster, &[0, 1, 2]).await, ttl)
        .await
        .unwrap();
    let a = Arc::new(Mutex::new(a_session.clone(), "mf/a").lock().await.unwrap());
    let b = Arc::new(Mutex::new(b_session.clone(), "mf/b").lock().await.unwrap());
    let a_lost = watch_loss(a.clone());
    let b_lost = watch_loss(b.clone());
    let contender_a = contend(client_of(&cluster, &survivors).await, "mf/a", ttl);
    let contender_b = contend(client_of(&cluster, &survivors).await, "mf/b", ttl);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let killed = Instant::now();
    cluster.kill(victim).unwrap();
    let observe = ttl * 2 + Duration::from_secs(1);
    tokio::time::sleep(observe).await;

    // A cannot reach anyone: it must have been told, and only then did its contender acquire.
    let a_lost_at = a_lost
        .lock()
        .unwrap()
        .expect("holder bound to the dead member is told lost()");
    assert!(
        a_lost_at.duration_since(killed) <= ttl,
        "told within the TTL"
    );
    assert!(a_session.lost_reason().is_some());
    let a_next = tokio::time::timeout(Duration::from_secs(10), contender_a)
        .await
        .unwrap()
        .unwrap();
    assert!(
        a_next >= a_lost_at,
        "the next holder acquired only after the old one was told"
    );

    // B: either still holds (and its writes go through), or was told before anyone else took over.
    let b_lost_at = *b_lost.lock().unwrap();
    match b_lost_at {
        None => {
            assert!(
                !contender_b.is_finished(),
                "B still holds, so nobody else may"
            );
            // The balanced channel may still route one call to the dead member: retry those.
            let mut result = None;
            for _ in 0..20 {
                match b
                    .guarded_txn(vec![TxnOp::put("mf/b-data", "ok", None)])
                    .await
                {
                    Err(e) if e.is_transient() => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    other => {
                        result = Some(other);
                        break;
                    }
                }
            }
            result
                .expect("a member answers")
                .expect("B still owns the lock");
            eprintln!("balanced holder kept the lock through the member failure");
        }
        Some(lost_at) => {
            eprintln!(
                "balanced holder was told lost after {:?}",
                lost_at.duration_since(killed)
            );
            if contender_b.is_finished() {
                let next = contender_b.await.unwrap();
                assert!(next >= lost_at, "B told before the next holder acquired");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balanced_session_survives_the_raft_leaders_death() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let client = client_of(&cluster, &[0, 1, 2]).await;
    // TTL 5 s: the renewal window (TTL minus one interval and a margin) must
    // hold a raft election (1-2 s with etcd's default 1 s election timeout).
    let ttl = Duration::from_secs(5);
    let s = Session::new(client.clone(), ttl).await.unwrap();
    let mut observer = Observer::start(client.clone(), "mf/obs").await.unwrap();
    let leader = cluster.leader_index().await.unwrap().unwrap();
    cluster.kill(leader).unwrap(); // the worst single loss: a raft election follows
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let survivors = client_of(&cluster, &survivors).await;

    // The observer (on the balanced client) reconnects and sees a new leader.
    // The first writes after a leader loss may time out while raft elects.
    let mut candidate = None;
    for _ in 0..5 {
        match Session::new(survivors.clone(), ttl).await {
            Ok(s) => {
                candidate = Some(Election::new(s, "mf/obs"));
                break;
            }
            Err(e) if e.is_transient() => eprintln!("retrying after: {e}"),
            Err(e) => panic!("session on the survivors: {e}"),
        }
    }
    let candidate = candidate.expect("a session on the survivors");
    let started = Instant::now();
    candidate.campaign("after-kill").await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match observer.next().await {
                Some(Some(l)) if l.value == b"after-kill" => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await;
    eprintln!(
        "observer saw the new leader {:?} after the campaign",
        started.elapsed()
    );
    assert_eq!(
        seen,
        Ok(true),
        "observer follows the election after the member loss"
    );
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(
        s.lost_reason(),
        None,
        "the session kept its lease through one member's loss"
    );
    let left = survivors
        .lease_client()
        .time_to_live(s.lease_id(), None)
        .await
        .unwrap()
        .ttl();
    assert!(left > 0, "lease alive on the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_behind_a_frozen_member_is_told_before_anyone_else_acquires() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    let ttl = Duration::from_secs(3);
    let leader = cluster.leader_index().await.unwrap().unwrap();
    let frozen = (leader + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|&i| i != frozen).collect();

    // The holder's only endpoint will accept connections but answer nothing.
    let session = Session::new(client_of(&cluster, &[frozen]).await, ttl)
        .await
        .unwrap();
    let guard = Arc::new(
        Mutex::new(session.clone(), "mf/frozen")
            .lock()
            .await
            .unwrap(),
    );
    let lost = watch_loss(guard.clone());
    let contender = contend(client_of(&cluster, &others).await, "mf/frozen", ttl);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let paused = Instant::now();
    cluster.pause(frozen).unwrap();
    let next = tokio::time::timeout(ttl * 3, contender).await;
    cluster.resume(frozen).unwrap();
    let next = next
        .expect("the contender acquires once the lease expires")
        .unwrap();
    let lost_at = lost
        .lock()
        .unwrap()
        .expect("the holder behind the frozen member was told lost()");
    eprintln!(
        "holder told after {:?}, next holder after {:?}",
        lost_at.duration_since(paused),
        next.duration_since(paused)
    );
    assert!(lost_at <= next, "told before the next holder acquired");
    assert!(session.lost_reason().is_some());
}
