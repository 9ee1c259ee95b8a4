//! Locks under cancellation, shared sessions and re-acquisition, and the
//! smaller contracts around them (shared cluster, key-prefix isolation).

mod common;

use common::{count, eventually, session, shared_client};

use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use etcd_patterns::{
    Election, Error, Flag, Flags, HaCoordinator, HaOptions, Instance, LostReason, Mutex, Role,
    RwLock, RwMode, Semaphore, Session, SessionOptions,
};
use tokio_util::sync::CancellationToken;

/// The create revision of `key`, 0 when absent.
async fn create_rev(client: &Client, key: &str) -> i64 {
    let resp = client.kv_client().get(key, None).await.unwrap();
    resp.kvs()
        .first()
        .map(|kv| kv.create_revision())
        .unwrap_or(0)
}

/// Lets the background deletes of dropped guards run and land.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_dropped_read_guard_never_releases_the_next_read_of_its_session() {
    let client = shared_client().await;
    let rw = RwLock::new(session(&client, 10).await, "t-cancel/rw");
    let mut held = None;
    for round in 0..200 {
        drop(held.take()); // the previous round's hold: released in the background
        let g = rw.read().await.unwrap();
        drop(g);
        let g2 = rw.read().await.unwrap();
        settle().await;
        assert_eq!(
            create_rev(&client, g2.key()).await,
            g2.fencing_token(),
            "round {round}: the new reader's key must survive the dropped guard's release"
        );
        held = Some(g2);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let g2 = held.take().unwrap();
    assert_eq!(create_rev(&client, g2.key()).await, g2.fencing_token());
    let writer = RwLock::new(session(&client, 10).await, "t-cancel/rw");
    let w = writer
        .acquire_timeout(RwMode::Write, Duration::from_millis(300))
        .await;
    assert!(
        matches!(w, Err(Error::Timeout { .. })),
        "a writer must wait while the reader holds: {w:?}"
    );
    g2.unlock().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_dropped_permit_never_releases_the_next_permit_of_its_session() {
    let client = shared_client().await;
    let sem = Semaphore::new(session(&client, 10).await, "t-cancel/sem", 1);
    let mut held = None;
    for round in 0..200 {
        drop(held.take());
        let p = sem.acquire().await.unwrap();
        drop(p);
        let p2 = sem.acquire().await.unwrap();
        settle().await;
        assert_eq!(
            create_rev(&client, p2.key()).await,
            p2.fencing_token(),
            "round {round}"
        );
        held = Some(p2);
    }
    let other = Semaphore::new(session(&client, 10).await, "t-cancel/sem", 1);
    let r = other.acquire_timeout(Duration::from_millis(300)).await;
    assert!(
        matches!(r, Err(Error::Timeout { .. })),
        "Semaphore(1) admitted a second holder: {r:?}"
    );
    held.take().unwrap().release().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_lock_future_dropped_mid_flight_never_releases_the_next_lock() {
    let client = shared_client().await;
    let prefix = "t-cancel/mutex/";
    let m = Mutex::new(session(&client, 10).await, prefix);
    let other = Mutex::new(session(&client, 10).await, prefix);
    for round in 0..200 {
        let _ = tokio::time::timeout(Duration::from_millis(1), m.lock()).await;
        let g = m.lock().await.unwrap();
        settle().await;
        assert_eq!(
            create_rev(&client, g.key()).await,
            g.fencing_token(),
            "round {round}: the new hold's key must survive the cancelled lock"
        );
        if round % 50 == 0 {
            let r = other.try_lock().await;
            assert!(
                matches!(r, Err(Error::Locked { .. })),
                "round {round}: another session took the lock while it was held: {r:?}"
            );
        }
        g.unlock().await.unwrap();
    }
    eventually(Duration::from_secs(2), "the prefix empties", || async {
        count(&client, prefix).await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_during_the_create_txn_leaves_no_key_behind() {
    let client = shared_client().await;
    let prefix = "t-cancel/create/";
    let holder = Mutex::new(session(&client, 30).await, prefix);
    let guard = holder.lock().await.unwrap();
    let contender = Mutex::new(session(&client, 30).await, prefix);
    let mut timeouts = 0;
    for k in 0..100u64 {
        match contender.lock_timeout(Duration::from_micros(k * 100)).await {
            Err(Error::Timeout { .. }) => timeouts += 1,
            other => panic!("k={k}: expected a timeout while held, got {other:?}"),
        }
    }
    assert_eq!(timeouts, 100);
    guard.unlock().await.unwrap();
    eventually(
        Duration::from_secs(2),
        "every cancelled contender's key is gone",
        || async { count(&client, prefix).await == 0 },
    )
    .await;
    let third = Mutex::new(session(&client, 30).await, prefix);
    let started = Instant::now();
    let g = tokio::time::timeout(Duration::from_secs(2), third.lock())
        .await
        .expect("a third session locks within 2 s")
        .unwrap();
    eprintln!("third session locked in {:?}", started.elapsed());
    g.unlock().await.unwrap();
}

/// A hold of any of the recipes, released the same way.
enum Held {
    Permit(etcd_patterns::Permit),
    RwLock(etcd_patterns::RwLockGuard),
    Mutex(etcd_patterns::MutexGuard),
}

impl Held {
    async fn release(self) -> Result<(), Error> {
        match self {
            Held::Permit(p) => p.release().await,
            Held::RwLock(g) => g.unlock().await,
            Held::Mutex(g) => g.unlock().await,
        }
    }
}

/// Runs `tasks` holders through `acquire` at once and returns the most that
/// held at the same time.
async fn max_concurrent<F, Fut>(tasks: usize, acquire: F) -> usize
where
    F: Fn() -> Fut,
    Fut: Future<Output = Held> + Send + 'static,
{
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (inside, peak) = (inside.clone(), peak.clone());
        let acquired = acquire();
        handles.push(tokio::spawn(async move {
            let held = acquired.await;
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            held.release().await.unwrap();
        }));
    }
    for h in handles {
        tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("every holder gets its turn")
            .unwrap();
    }
    peak.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_sharing_one_session_never_share_a_hold() {
    let client = shared_client().await;
    let s = session(&client, 10).await;

    let sem = Semaphore::new(s.clone(), "t-shared/sem", 2);
    let peak = max_concurrent(5, || {
        let sem = sem.clone();
        async move { Held::Permit(sem.acquire().await.unwrap()) }
    })
    .await;
    assert_eq!(peak, 2, "Semaphore(2) on one session admitted {peak}");

    let rw = RwLock::new(s.clone(), "t-shared/rw");
    let peak = max_concurrent(3, || {
        let rw = rw.clone();
        async move { Held::RwLock(rw.write().await.unwrap()) }
    })
    .await;
    assert_eq!(peak, 1, "writers on one session overlapped");

    let m = Mutex::new(s.clone(), "t-shared/mutex");
    let peak = max_concurrent(3, || {
        let m = m.clone();
        async move { Held::Mutex(m.lock().await.unwrap()) }
    })
    .await;
    assert_eq!(peak, 1, "clones of one mutex held at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_prefixes_do_not_block_each_other() {
    let client = shared_client().await;
    let outer = Mutex::new(session(&client, 10).await, "t-nest/a");
    let inner = Mutex::new(session(&client, 10).await, "t-nest/a/b");
    let g_inner = inner.try_lock().await.expect("inner lock");
    // More nested waiters than one page of the create txn holds.
    let mut nested = Vec::new();
    for _ in 0..20 {
        let m = Mutex::new(session(&client, 10).await, "t-nest/a/b");
        let m2 = m.clone();
        nested.push((m, tokio::spawn(async move { m2.lock().await })));
    }
    eventually(
        Duration::from_secs(5),
        "20 nested waiters queued",
        || async { count(&client, "t-nest/a/b/").await == 21 },
    )
    .await;
    let g_outer = outer
        .try_lock()
        .await
        .expect("a held lock on a/b/ must not block a/");
    g_outer.unlock().await.unwrap();
    let waiter = Mutex::new(session(&client, 10).await, "t-nest/a/b");
    assert!(matches!(waiter.try_lock().await, Err(Error::Locked { .. })));
    for (m, waiting) in nested {
        waiting.abort();
        let _ = m.session().close().await;
    }
    g_inner.unlock().await.unwrap();

    // The same for a read-write lock and an election under it.
    let rw = RwLock::new(session(&client, 10).await, "t-nest/rw");
    let nested = Mutex::new(session(&client, 10).await, "t-nest/rw/write/x");
    let g = nested.lock().await.unwrap();
    let w = rw
        .acquire_timeout(RwMode::Write, Duration::from_secs(1))
        .await
        .expect("a lock nested under write/ is not a writer");
    w.unlock().await.unwrap();
    g.unlock().await.unwrap();
    let e = Election::new(session(&client, 10).await, "t-nest/e");
    let nested = Mutex::new(session(&client, 10).await, "t-nest/e/sub");
    let g = nested.lock().await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), e.campaign("me"))
        .await
        .expect("a nested lock is not a candidate")
        .unwrap();
    assert_eq!(e.leader().await.unwrap().unwrap().value, b"me");
    e.resign().await.unwrap();
    g.unlock().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_state_clears_after_the_term_is_lost() {
    let client = shared_client().await;
    let e = Election::new(session(&client, 10).await, "t-elect-clear");
    let token = e.campaign("a").await.unwrap();
    assert!(e.is_leader());
    assert_eq!(e.fencing_token(), Some(token));
    let key = e.key().unwrap();
    client.kv_client().delete(key, None).await.unwrap();
    eventually(
        Duration::from_secs(3),
        "is_leader() turns false after the key is deleted",
        || async { !e.is_leader() },
    )
    .await;
    assert_eq!(e.fencing_token(), None);
    assert!(matches!(e.proclaim("b").await, Err(Error::NotOwner { .. })));

    // A lost session clears it at once.
    let s = session(&client, 10).await;
    let e = Election::new(s.clone(), "t-elect-clear2");
    e.campaign("a").await.unwrap();
    s.close().await.unwrap();
    assert!(!e.is_leader());
    assert_eq!(e.fencing_token(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_interval_without_room_for_a_retry_is_refused() {
    let client = shared_client().await;
    // TTL 5 s, loss margin 0.5 s: at most 2.25 s.
    for interval in [5, 3] {
        let opts = SessionOptions::new(Duration::from_secs(5))
            .with_keep_alive_interval(Duration::from_secs(interval));
        match Session::with_options(client.clone(), opts).await {
            Err(Error::InvalidArgument(msg)) => {
                assert!(msg.contains("keep-alive interval"), "{msg}")
            }
            other => panic!("{interval} s: expected InvalidArgument, got {other:?}"),
        }
    }
    let opts = SessionOptions::new(Duration::from_secs(5))
        .with_keep_alive_interval(Duration::from_secs(2));
    Session::with_options(client, opts)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_resumed_session_counts_its_deadline_from_the_remaining_ttl() {
    let client = shared_client().await;
    let lease = client.lease_client().grant(5, None).await.unwrap().id();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let resumed = Session::resume(client.clone(), lease, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        resumed.ttl(),
        Duration::from_secs(5),
        "ttl() is the granted TTL"
    );
    // Orphaned before its keep-alive task ever ran: the session must report
    // the loss before the server's expiry (about 2 s left), not 5 s from now.
    resumed.orphan();
    let started = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(6), resumed.lost())
        .await
        .unwrap();
    let after = started.elapsed();
    assert_eq!(reason, LostReason::Orphaned);
    assert!(
        after < Duration::from_millis(2600),
        "lost after {after:?}: the deadline came from the granted TTL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_never_overwrites_a_concurrent_change() {
    let client = shared_client().await;
    let flags = Flags::start(client.clone(), "t-kill-cas").await.unwrap();
    let writer = Flags::start(client.clone(), "t-kill-cas").await.unwrap();
    for round in 0..40u32 {
        let name = format!("f{round}");
        flags.set(&name, &Flag::rollout(1.0)).await.unwrap();
        let pct = f64::from(2 + round % 90);
        let changed = Flag::rollout(pct);
        let (killed, set) = tokio::join!(flags.kill(&name), writer.set(&name, &changed));
        killed.unwrap();
        set.unwrap();
        let resp = client
            .kv_client()
            .get(format!("t-kill-cas/{name}"), None)
            .await
            .unwrap();
        let stored: Flag = serde_json::from_slice(resp.kvs()[0].value()).unwrap();
        assert_eq!(
            stored.rollout_percent, pct,
            "round {round}: the concurrent rollout change was overwritten by kill"
        );
    }
    // Fields this version does not know survive a kill.
    client
        .kv_client()
        .put(
            "t-kill-cas/newer",
            r#"{"enabled":true,"rollout_percent":50.0,"owner":"team-x"}"#,
            None,
        )
        .await
        .unwrap();
    flags.kill("newer").await.unwrap();
    let resp = client
        .kv_client()
        .get("t-kill-cas/newer", None)
        .await
        .unwrap();
    let stored: serde_json::Value = serde_json::from_slice(resp.kvs()[0].value()).unwrap();
    assert_eq!(stored["enabled"], false);
    assert_eq!(stored["owner"], "team-x", "{stored}");
    // An unreadable flag is reported, not replaced.
    client
        .kv_client()
        .put("t-kill-cas/broken", "{not json", None)
        .await
        .unwrap();
    assert!(matches!(
        flags.kill("broken").await,
        Err(Error::Codec { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistering_spares_a_newer_registration_of_the_same_id() {
    let client = shared_client().await;
    let old = session(&client, 10).await;
    let new = session(&client, 10).await;
    let instance = Instance::new("api", "api-1", "127.0.0.1:1");
    let first = etcd_patterns::Registration::register(&old, "t-dereg", instance.clone())
        .await
        .unwrap();
    let second = etcd_patterns::Registration::register(&new, "t-dereg", instance)
        .await
        .unwrap();
    first.deregister().await.unwrap();
    let resp = client
        .kv_client()
        .get(second.key(), Some(GetOptions::new()))
        .await
        .unwrap();
    assert_eq!(
        resp.kvs().first().map(|kv| kv.lease()),
        Some(new.lease_id()),
        "the restarted instance's registration must survive the old one's deregistration"
    );
    second.deregister().await.unwrap();
    assert_eq!(count(&client, "t-dereg/").await, 0);
}

/// Spans during which a primary callback ran, as (node, start, last seen).
type Spans = Arc<StdMutex<Vec<(&'static str, Instant, Instant)>>>;

/// A primary callback that ignores cancellation but yields every 10 ms, and
/// records how long it ran.
fn stubborn_primary(
    node: &'static str,
    spans: Spans,
) -> impl Fn(etcd_patterns::PrimaryContext) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    move |_ctx| {
        let spans = spans.clone();
        Box::pin(async move {
            let idx = {
                let mut s = spans.lock().unwrap();
                s.push((node, Instant::now(), Instant::now()));
                s.len() - 1
            };
            // Bounded: at most 30 s, far beyond the test.
            for _ in 0..3000 {
                spans.lock().unwrap()[idx].2 = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_primary_that_ignores_cancellation_stops_before_the_next_starts() {
    let client = shared_client().await;
    let spans: Spans = Arc::default();
    let opts = |node| HaOptions::new("t-ha-overlap", node).with_ttl(Duration::from_secs(2));
    let a = Arc::new(HaCoordinator::new(client.clone(), opts("a")));
    let b = Arc::new(HaCoordinator::new(client.clone(), opts("b")));
    let stop = CancellationToken::new();
    let run = |ha: Arc<HaCoordinator>, node: &'static str| {
        let (spans, stop) = (spans.clone(), stop.clone());
        tokio::spawn(async move {
            ha.run(stubborn_primary(node, spans), |_| async {}, stop)
                .await
        })
    };
    let ra = run(a.clone(), "a");
    let mut role = a.role();
    tokio::time::timeout(
        Duration::from_secs(5),
        role.wait_for(|r| matches!(r, Role::Primary { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    let rb = run(b.clone(), "b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.session().unwrap().orphan(); // a "freezes": no more renewals
    let mut role = b.role();
    tokio::time::timeout(
        Duration::from_secs(8),
        role.wait_for(|r| matches!(r, Role::Primary { .. })),
    )
    .await
    .expect("b takes over after a's lease expires")
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), ra).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), rb).await;

    let spans = spans.lock().unwrap().clone();
    let a_span = spans.iter().find(|s| s.0 == "a").unwrap();
    let b_span = spans.iter().find(|s| s.0 == "b").unwrap();
    eprintln!(
        "a stopped {:?} before b started",
        b_span.1.saturating_duration_since(a_span.2)
    );
    assert!(
        a_span.2 < b_span.1,
        "the old primary was still running {:?} after the new one started",
        a_span.2 - b_span.1
    );
    assert_eq!(a.overruns(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_blocks_past_the_margin_is_reported() {
    let client = shared_client().await;
    let ha = Arc::new(HaCoordinator::new(
        client.clone(),
        HaOptions::new("t-ha-blocking", "a").with_ttl(Duration::from_secs(2)),
    ));
    let stop = CancellationToken::new();
    let runner = {
        let (ha, stop) = (ha.clone(), stop.clone());
        tokio::spawn(async move {
            ha.run(
                |ctx| async move {
                    ctx.cancel.cancelled().await;
                    // Blocks its thread instead of returning: abort cannot land.
                    std::thread::sleep(Duration::from_millis(800));
                },
                |_| async {},
                stop,
            )
            .await
        })
    };
    let mut role = ha.role();
    tokio::time::timeout(
        Duration::from_secs(5),
        role.wait_for(|r| matches!(r, Role::Primary { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    ha.session().unwrap().orphan();
    eventually(
        Duration::from_secs(6),
        "the overrun is reported",
        || async { ha.overruns() == 1 },
    )
    .await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), runner).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_does_not_wait_behind_its_previous_process() {
    let client = shared_client().await;
    let prefix = "t-resume-lock/";
    let first = session(&client, 10).await;
    let lease = first.lease_id();
    let guard = Mutex::new(first.clone(), prefix).lock().await.unwrap();
    let old_key = guard.key().to_string();
    // The process "restarts": its keep-alive stops, the lease lives on
    // (resumed below), and its guard never runs.
    first.orphan();
    std::mem::forget(guard);
    drop(first);
    let resumed = Session::resume(client.clone(), lease, Duration::from_secs(10))
        .await
        .unwrap();
    let g = tokio::time::timeout(Duration::from_secs(2), Mutex::new(resumed, prefix).lock())
        .await
        .expect("the resumed session is not queued behind its own old key")
        .unwrap();
    assert_ne!(
        g.key(),
        old_key,
        "a resumed session never reuses a key name"
    );
    assert_eq!(
        create_rev(&client, &old_key).await,
        0,
        "the old hold is gone"
    );
    g.unlock().await.unwrap();
}
