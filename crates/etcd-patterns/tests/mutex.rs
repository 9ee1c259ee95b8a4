//! Mutex, RwLock, Semaphore and LockManager against a real 3-member etcd.

mod common;

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use common::{count, eventually, get_i64, session, shared_client};
use etcd_client::TxnOp;
use etcd_patterns::{Error, LockManager, LostReason, Mutex, RwLock, RwMode, Semaphore};

const CONTENDERS: usize = 8;
const ROUNDS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_exclusion_counter_and_increasing_fencing_tokens() {
    let client = shared_client().await;
    let lock = "t-excl/lock/";
    let counter = "t-excl/data/counter";
    let log = Arc::new(StdMutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..CONTENDERS {
        let client = client.clone();
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mutex = Mutex::new(session(&client, 10).await, lock);
            for _ in 0..ROUNDS {
                let guard = mutex
                    .lock_timeout(Duration::from_secs(30))
                    .await
                    .expect("lock");
                // Read outside the txn, write inside it: lost updates would
                // show if two contenders ever held the lock together.
                let value = get_i64(&client, counter).await + 1;
                guard
                    .guarded_txn(vec![TxnOp::put(counter, value.to_string(), None)])
                    .await
                    .expect("guarded txn while holding");
                log.lock().unwrap().push((value, guard.fencing_token()));
                guard.unlock().await.expect("unlock");
            }
            mutex.session().close().await.expect("close");
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("contenders finish")
            .expect("task");
    }
    let total = (CONTENDERS * ROUNDS) as i64;
    assert_eq!(
        get_i64(&client, counter).await,
        total,
        "every increment applied exactly once"
    );
    let mut log = log.lock().unwrap().clone();
    log.sort();
    assert_eq!(log.len(), total as usize);
    for (i, pair) in log.windows(2).enumerate() {
        assert_eq!(
            pair[0].0 + 1,
            pair[1].0,
            "counter values are consecutive at {i}"
        );
        assert!(
            pair[0].1 < pair[1].1,
            "fencing tokens strictly increase: {pair:?}"
        );
    }
    assert_eq!(count(&client, lock).await, 0, "no lock keys left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_acquire_in_fifo_order() {
    let client = shared_client().await;
    let lock = "t-fifo/lock/";
    let holder = Mutex::new(session(&client, 10).await, lock);
    let guard = holder.lock().await.unwrap();
    let order = Arc::new(StdMutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5usize {
        let c = client.clone();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let m = Mutex::new(session(&c, 10).await, lock);
            let g = m
                .lock_timeout(Duration::from_secs(20))
                .await
                .expect("waiter lock");
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(10)).await;
            g.unlock().await.expect("waiter unlock");
        }));
        // Start the next waiter only once this one is queued in etcd.
        let expected = i as i64 + 2;
        eventually(Duration::from_secs(5), "waiter queued", || async {
            count(&client, lock).await == expected
        })
        .await;
    }
    assert!(
        order.lock().unwrap().is_empty(),
        "nobody acquires while held"
    );
    guard.unlock().await.unwrap();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lock_timeout_and_non_owner_unlock() {
    let client = shared_client().await;
    let lock = "t-try/lock/";
    let a = Mutex::new(session(&client, 10).await, lock);
    let b = Mutex::new(session(&client, 10).await, lock);
    let guard = a.lock().await.unwrap();

    let started = Instant::now();
    match b.try_lock().await {
        Err(Error::Locked { .. }) => {}
        other => panic!("try_lock while held must fail with Locked, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "try_lock fails fast"
    );
    assert_eq!(count(&client, lock).await, 1, "try_lock removed its key");

    let started = Instant::now();
    match b.lock_timeout(Duration::from_millis(300)).await {
        Err(Error::Timeout { .. }) => {}
        other => panic!("lock_timeout while held must time out, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    eventually(
        Duration::from_secs(2),
        "timed-out waiter removes its key",
        || async { count(&client, lock).await == 1 },
    )
    .await;

    assert!(
        matches!(b.unlock().await, Err(Error::NotOwner { .. })),
        "non-owner unlock is an error"
    );
    assert!(b.is_owner().is_err());
    assert!(matches!(
        b.guarded_txn(vec![TxnOp::put("t-try/x", "1", None)]).await,
        Err(Error::NotOwner { .. })
    ));
    assert!(a.fencing_token().is_some());

    guard.unlock().await.unwrap();
    assert!(
        matches!(a.unlock().await, Err(Error::NotOwner { .. })),
        "double unlock is an error"
    );
    let g = b.try_lock().await.expect("try_lock on a free lock");
    drop(g); // the guard unlocks in the background
    let again = tokio::time::timeout(Duration::from_secs(2), a.lock())
        .await
        .expect("lock after drop")
        .unwrap();
    again.unlock().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_session_is_lost_within_a_second_and_guarded_txn_fails() {
    let client = shared_client().await;
    // TTL 10 s: renewals every 3.3 s, so a prompt loss here comes from the
    // lock watching its key and telling the session.
    let s = session(&client, 10).await;
    let mutex = Mutex::new(s.clone(), "t-revoke/lock/");
    let guard = mutex.lock().await.unwrap();
    guard
        .guarded_txn(vec![TxnOp::put("t-revoke/data", "1", None)])
        .await
        .expect("owner can write");

    let other = shared_client().await;
    let revoked = Instant::now();
    other.lease_client().revoke(s.lease_id()).await.unwrap();
    let lock_lost = tokio::time::timeout(Duration::from_secs(1), guard.lost())
        .await
        .expect("guard.lost() within 1 s");
    let session_lost = tokio::time::timeout(Duration::from_secs(1), s.lost())
        .await
        .expect("session.lost() within 1 s");
    eprintln!(
        "lock lost after {:?} ({lock_lost}), session: {session_lost}",
        revoked.elapsed()
    );
    assert!(revoked.elapsed() < Duration::from_secs(1));
    assert_eq!(lock_lost, LostReason::Expired);
    assert_eq!(session_lost, LostReason::Expired);
    assert!(matches!(
        guard
            .guarded_txn(vec![TxnOp::put("t-revoke/data", "2", None)])
            .await,
        Err(Error::NotOwner { .. })
    ));
    assert_eq!(
        get_i64(&client, "t-revoke/data").await,
        1,
        "the stale holder's write was rejected"
    );
    assert!(matches!(
        mutex.lock().await,
        Err(Error::SessionExpired { .. })
    ));

    // Without a lock watching, the keep-alive notices at its next renewal
    // (every TTL/3): with TTL 2 s that is within 1 s.
    let bare = session(&client, 2).await;
    let revoked = Instant::now();
    other.lease_client().revoke(bare.lease_id()).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(1), bare.lost())
        .await
        .expect("session.lost() within 1 s");
    assert_eq!(reason, LostReason::Expired);
    eprintln!("bare session lost after {:?}", revoked.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwlock_readers_share_writer_exclusive_and_not_starved() {
    let client = shared_client().await;
    let p = "t-rw/lock/";
    let short = Duration::from_millis(300);
    let r1 = RwLock::new(session(&client, 10).await, p)
        .read()
        .await
        .unwrap();
    let r2 = tokio::time::timeout(
        Duration::from_secs(1),
        RwLock::new(session(&client, 10).await, p).read(),
    )
    .await
    .expect("second reader shares")
    .unwrap();

    let writer = RwLock::new(session(&client, 10).await, p);
    assert!(matches!(
        writer.acquire_timeout(RwMode::Write, short).await,
        Err(Error::Timeout { .. })
    ));
    let w = tokio::spawn(async move { writer.write().await });
    eventually(Duration::from_secs(2), "writer queued", || async {
        count(&client, "t-rw/lock/write/").await == 1
    })
    .await;

    // A reader arriving after the waiting writer queues behind it.
    let late = RwLock::new(session(&client, 10).await, p);
    assert!(matches!(
        late.acquire_timeout(RwMode::Read, short).await,
        Err(Error::Timeout { .. })
    ));
    r1.unlock().await.unwrap();
    r2.unlock().await.unwrap();
    let w = tokio::time::timeout(Duration::from_secs(2), w)
        .await
        .expect("writer acquires")
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            late.acquire_timeout(RwMode::Read, short).await,
            Err(Error::Timeout { .. })
        ),
        "writer is exclusive"
    );
    w.unlock().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(2), late.read())
        .await
        .unwrap()
        .unwrap();
    r.unlock().await.unwrap();

    // A stream of overlapping readers must not starve a writer.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut readers = Vec::new();
    for _ in 0..3 {
        let lock = RwLock::new(session(&client, 10).await, p);
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            for _ in 0..200 {
                if stop.is_cancelled() {
                    break;
                }
                let g = lock.read().await.unwrap();
                tokio::time::sleep(Duration::from_millis(40)).await;
                g.unlock().await.unwrap();
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let writer = RwLock::new(session(&client, 10).await, p);
    let started = Instant::now();
    let w = tokio::time::timeout(Duration::from_secs(3), writer.write())
        .await
        .expect("writer not starved")
        .unwrap();
    eprintln!(
        "writer acquired among readers after {:?}",
        started.elapsed()
    );
    w.unlock().await.unwrap();
    stop.cancel();
    for r in readers {
        tokio::time::timeout(Duration::from_secs(5), r)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_admits_n_holders_in_order() {
    let client = shared_client().await;
    let p = "t-sem/";
    let s1 = Semaphore::new(session(&client, 10).await, p, 2)
        .acquire()
        .await
        .unwrap();
    let s2 = tokio::time::timeout(
        Duration::from_secs(1),
        Semaphore::new(session(&client, 10).await, p, 2).acquire(),
    )
    .await
    .expect("second permit is free")
    .unwrap();
    let third = Semaphore::new(session(&client, 10).await, p, 2);
    let waiting = tokio::spawn(async move { third.acquire().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a third holder waits while two hold"
    );
    s1.release().await.unwrap();
    let s3 = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("admitted after a release")
        .unwrap()
        .unwrap();
    s2.release().await.unwrap();
    s3.release().await.unwrap();
    assert_eq!(count(&client, p).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_manager_queues_locally_and_records_wait_and_hold() {
    let client = shared_client().await;
    let locks = LockManager::new(session(&client, 10).await, "t-mgr");
    let first = locks.lock("a", Duration::from_secs(2)).await.unwrap();
    let second = {
        let locks = locks.clone();
        tokio::spawn(async move { locks.lock("a", Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "same-name callers are serialized");
    first.unlock().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(2), second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(second.fencing_token().is_some());
    drop(second);
    assert!(matches!(
        {
            let other = LockManager::new(session(&client, 10).await, "t-mgr");
            let _held = locks.lock("b", Duration::from_secs(2)).await.unwrap();
            other.lock("b", Duration::from_millis(200)).await
        },
        Err(Error::Timeout { .. })
    ));
    let stats = locks.stats("a").unwrap();
    assert_eq!(stats.acquisitions, 2);
    assert!(stats.max_wait >= Duration::from_millis(150), "{stats:?}");
    assert!(stats.max_hold >= Duration::from_millis(150), "{stats:?}");
    assert!(!stats.held);
    assert_eq!(locks.all_stats().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_stops_at_once_when_its_key_or_session_goes() {
    let client = shared_client().await;
    let lock = "t-stop/lock/";
    let holder = Mutex::new(session(&client, 10).await, lock);
    let _held = holder.lock().await.unwrap();

    // Someone deletes the waiter's queue key.
    let waiter_session = session(&client, 10).await;
    let lease = waiter_session.lease_id();
    let waiter = Mutex::new(waiter_session, lock);
    let waiting = tokio::spawn(async move { waiter.lock().await });
    eventually(Duration::from_secs(2), "waiter queued", || async {
        count(&client, lock).await == 2
    })
    .await;
    let listed = client
        .kv_client()
        .get(lock, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let key = listed
        .kvs()
        .iter()
        .find(|kv| kv.lease() == lease)
        .map(|kv| kv.key().to_vec())
        .expect("the waiter's key");
    let deleted = Instant::now();
    client.kv_client().delete(key, None).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("the waiter stops within 1 s")
        .unwrap();
    assert!(
        matches!(result, Err(Error::KeyDeleted { .. })),
        "{result:?}"
    );
    eprintln!(
        "waiter stopped {:?} after its key was deleted",
        deleted.elapsed()
    );

    // The waiter's lease is revoked (TTL 10 s: long before any renewal).
    let s = session(&client, 10).await;
    let waiter = Mutex::new(s.clone(), lock);
    let waiting = tokio::spawn(async move { waiter.lock().await });
    eventually(Duration::from_secs(2), "waiter queued", || async {
        count(&client, lock).await == 2
    })
    .await;
    client.lease_client().revoke(s.lease_id()).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("the waiter stops within 1 s")
        .unwrap();
    assert!(
        matches!(result, Err(Error::SessionExpired { .. })),
        "{result:?}"
    );
    assert_eq!(s.lost_reason(), Some(LostReason::Expired));
}
