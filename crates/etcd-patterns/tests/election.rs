//! Election, Observer, LeaderTask and HaCoordinator against a real etcd.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use common::{eventually, session, shared_client};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use etcd_patterns::{
    Election, Error, HaCoordinator, HaOptions, LeaderTask, Observer, Role, Session,
};
use tokio_util::sync::CancellationToken;

async fn next_leader(obs: &mut Observer) -> Option<Vec<u8>> {
    tokio::time::timeout(Duration::from_secs(3), obs.next())
        .await
        .expect("observer reports a change")
        .expect("observer alive")
        .map(|l| l.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_proclaim_resign_and_observe_no_leader() {
    let client = shared_client().await;
    let p = "t-elect/";
    let a = Election::new(session(&client, 10).await, p);
    let b = Election::new(session(&client, 10).await, p);
    let mut obs = Observer::start(client.clone(), p).await.unwrap();
    assert_eq!(obs.current(), None, "no leader yet");

    let term_a = a.campaign("a").await.unwrap();
    assert!(a.is_leader());
    assert_eq!(next_leader(&mut obs).await, Some(b"a".to_vec()));

    let b2 = b.clone();
    let waiting = tokio::spawn(async move { b2.campaign("b").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "b waits while a leads");
    assert!(matches!(b.proclaim("x").await, Err(Error::NotOwner { .. })));

    a.proclaim("a2").await.unwrap();
    assert_eq!(next_leader(&mut obs).await, Some(b"a2".to_vec()));
    assert_eq!(a.leader().await.unwrap().unwrap().value, b"a2");

    // Compaction does not disturb the observer.
    let rev = client
        .kv_client()
        .put("t-elect-noise", "1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.kv_client().compact(rev, None).await.unwrap();

    a.resign().await.unwrap();
    assert!(!a.is_leader());
    let term_b = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(term_b > term_a, "terms increase");
    assert_eq!(next_leader(&mut obs).await, Some(b"b".to_vec()));
    b.resign().await.unwrap();
    assert_eq!(
        next_leader(&mut obs).await,
        None,
        "observer reports no leader"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_leadership_after_restart() {
    let p = "t-resume/";
    let (lease, term) = {
        let client = shared_client().await;
        let s = session(&client, 10).await;
        let e = Election::new(s.clone(), p);
        let term = e.campaign("v1").await.unwrap();
        s.orphan(); // the "process" ends without revoking
        (s.lease_id(), term)
    };
    let client = shared_client().await;
    let s = Session::resume(client.clone(), lease, Duration::from_secs(10))
        .await
        .unwrap();
    let e = Election::new(s.clone(), p);
    assert!(e.resume().await.unwrap(), "still the leader after resume");
    assert_eq!(e.fencing_token(), Some(term));
    e.proclaim("v2").await.unwrap();
    assert_eq!(e.leader().await.unwrap().unwrap().value, b"v2");
    s.close().await.unwrap();
    assert_eq!(e.leader().await.unwrap(), None);
    assert!(matches!(
        Session::resume(client, lease, Duration::from_secs(10)).await,
        Err(Error::SessionExpired { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_task_job_is_cancelled_when_leadership_is_lost() {
    let client = shared_client().await;
    let task = Arc::new(LeaderTask::new(
        client.clone(),
        HaOptions::new("t-ltask/", "n1")
            .with_ttl(Duration::from_secs(5))
            .with_grace(Duration::from_millis(500)),
        Duration::from_millis(50),
    ));
    // (term, started, cancelled-at)
    type Runs = Arc<StdMutex<Vec<(i64, Instant, Option<Instant>)>>>;
    let runs: Runs = Arc::default();
    struct OnDrop(Runs, usize);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.lock().unwrap()[self.1].2 = Some(Instant::now());
        }
    }
    let shutdown = CancellationToken::new();
    let runner = {
        let (task, runs, shutdown) = (task.clone(), runs.clone(), shutdown.clone());
        tokio::spawn(async move {
            task.run(
                move |ctx| {
                    let runs = runs.clone();
                    async move {
                        let idx = {
                            let mut r = runs.lock().unwrap();
                            r.push((ctx.fencing_token, Instant::now(), None));
                            r.len() - 1
                        };
                        let _mark = OnDrop(runs, idx);
                        tokio::time::sleep(Duration::from_secs(30)).await; // a long job
                    }
                },
                shutdown,
            )
            .await
        })
    };
    let mut role = task.role();
    eventually(Duration::from_secs(5), "leading", || {
        let r = *role.borrow_and_update();
        async move { matches!(r, Role::Primary { .. }) }
    })
    .await;
    eventually(Duration::from_secs(2), "job started", || async {
        !runs.lock().unwrap().is_empty()
    })
    .await;
    let first_term = runs.lock().unwrap()[0].0;
    let lease = task.coordinator().session().unwrap().lease_id();
    let revoked = Instant::now();
    client.lease_client().revoke(lease).await.unwrap();
    eventually(Duration::from_secs(2), "job cancelled", || async {
        runs.lock().unwrap()[0].2.is_some()
    })
    .await;
    let cancelled = runs.lock().unwrap()[0].2.unwrap();
    eprintln!(
        "job cancelled {:?} after the revoke",
        cancelled.duration_since(revoked)
    );
    assert!(cancelled.duration_since(revoked) < Duration::from_secs(1));
    // The node campaigns again with a new session and runs the job in a new term.
    eventually(Duration::from_secs(5), "new term", || async {
        runs.lock().unwrap().len() >= 2
    })
    .await;
    let second = runs.lock().unwrap()[1];
    assert!(second.0 > first_term);
    assert!(
        second.1 >= cancelled,
        "the new term's job starts after the old one was cancelled"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), runner)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(*task.role().borrow(), Role::Stopped);
}

type Spans = Arc<StdMutex<Vec<(usize, i64, Instant, Option<Instant>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_failover_after_orphaned_primary_without_overlap() {
    let client = shared_client().await;
    let p = "t-ha/elect/";
    let fence = "t-ha/fence";
    client
        .kv_client()
        .put(fence, format!("{:020}", 0), None)
        .await
        .unwrap();
    let ttl = Duration::from_secs(2);
    let spans: Spans = Arc::default();
    let violation = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();
    let mut nodes = Vec::new();
    let mut runners = Vec::new();
    for n in 0..3usize {
        let ha = Arc::new(HaCoordinator::new(
            shared_client().await,
            HaOptions::new(p, format!("node-{n}"))
                .with_ttl(ttl)
                .with_grace(Duration::from_millis(300)),
        ));
        nodes.push(ha.clone());
        let (spans, violation, shutdown) = (spans.clone(), violation.clone(), shutdown.clone());
        runners.push(tokio::spawn(async move {
            ha.run(
                move |ctx| {
                    let (spans, violation) = (spans.clone(), violation.clone());
                    async move {
                        let idx = {
                            let mut s = spans.lock().unwrap();
                            s.push((n, ctx.fencing_token, Instant::now(), None));
                            s.len() - 1
                        };
                        let client = ctx.election.session().client().clone();
                        let mine = format!("{:020}", ctx.fencing_token);
                        for _ in 0..2000 {
                            // A newer term already wrote: we overlap with a newer primary.
                            let txn = Txn::new()
                                .when([Compare::value(fence, CompareOp::Greater, mine.clone())])
                                .or_else([TxnOp::put(fence, mine.clone(), None)]);
                            if let Ok(resp) = client.kv_client().txn(txn).await {
                                if resp.succeeded() && !ctx.cancel.is_cancelled() {
                                    violation.store(true, Ordering::SeqCst);
                                }
                            }
                            tokio::select! {
                                _ = ctx.cancel.cancelled() => break,
                                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                            }
                        }
                        spans.lock().unwrap()[idx].3 = Some(Instant::now());
                    }
                },
                |ctx| async move { ctx.cancel.cancelled().await },
                shutdown,
            )
            .await
        }));
    }
    let primary = |nodes: &[Arc<HaCoordinator>]| {
        nodes
            .iter()
            .position(|n| matches!(*n.role().borrow(), Role::Primary { .. }))
    };
    eventually(Duration::from_secs(5), "a primary", || {
        let p = primary(&nodes);
        async move { p.is_some() }
    })
    .await;
    let old = primary(&nodes).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let orphaned = Instant::now();
    nodes[old].session().unwrap().orphan();
    let limit = ttl + Duration::from_secs(1);
    eventually(
        limit + Duration::from_secs(2),
        "a standby takes over",
        || {
            let found = nodes
                .iter()
                .enumerate()
                .any(|(i, n)| i != old && matches!(*n.role().borrow(), Role::Primary { .. }));
            async move { found }
        },
    )
    .await;
    let failover = orphaned.elapsed();
    eprintln!("failover after orphan: {failover:?}");
    assert!(
        failover <= limit,
        "standby leads within TTL + 1 s, took {failover:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    shutdown.cancel();
    for r in runners {
        tokio::time::timeout(Duration::from_secs(5), r)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    assert!(
        !violation.load(Ordering::SeqCst),
        "an older primary wrote after a newer one"
    );
    let spans = spans.lock().unwrap().clone();
    assert!(spans.len() >= 2, "{spans:?}");
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            let (a_end, b_end) = (a.3.expect("primary ended"), b.3.expect("primary ended"));
            assert!(
                a_end <= b.2 || b_end <= a.2,
                "primaries overlapped: {a:?} {b:?}"
            );
        }
    }
    let mut tokens: Vec<i64> = spans.iter().map(|s| s.1).collect();
    let sorted = {
        let mut t = tokens.clone();
        t.sort();
        t
    };
    assert_eq!(tokens, sorted, "terms start in fencing-token order");
    tokens.dedup();
    assert_eq!(tokens.len(), spans.len());
    assert_eq!(spans[0].0, old);
    assert_ne!(spans[1].0, old);
}
