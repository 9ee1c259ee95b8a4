//! Typed txns, STM isolation levels and bare leases against a real etcd
//! (shared cluster).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{count, get_i64, shared_client};
use etcd_patterns::txn::{self, Cmp, Isolation, Op, Txn};
use etcd_patterns::{Error, Lease};

async fn balance(stm: &etcd_patterns::Stm, key: &str) -> Result<i64, Error> {
    Ok(stm
        .get_string(key)
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

async fn transfers_keep_the_total(isolation: Isolation, prefix: &str) -> u32 {
    let client = shared_client().await;
    let accounts = 5;
    for a in 0..accounts {
        client
            .kv_client()
            .put(format!("{prefix}{a}"), "100", None)
            .await
            .unwrap();
    }
    let attempts = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let client = client.clone();
        let prefix = prefix.to_string();
        let attempts = attempts.clone();
        tasks.push(tokio::spawn(async move {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1);
            for _ in 0..20 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let from = format!("{prefix}{}", x % accounts);
                let to = format!("{prefix}{}", (x / 7) % accounts);
                let amount = (x % 30) as i64;
                txn::run(&client, isolation, |stm| {
                    let (from, to, attempts) = (from.clone(), to.clone(), attempts.clone());
                    async move {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let a = balance(&stm, &from).await?;
                        // Widen the window between read and commit.
                        tokio::task::yield_now().await;
                        let b = balance(&stm, &to).await?;
                        if from != to {
                            stm.put(from, (a - amount).to_string());
                            stm.put(to, (b + amount).to_string());
                        }
                        Ok(())
                    }
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut total = 0;
    for a in 0..accounts {
        total += get_i64(&client, &format!("{prefix}{a}")).await;
    }
    assert_eq!(total, 500, "{isolation:?} keeps the total");
    attempts.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_keep_the_total_under_serializable_isolation() {
    let snap = transfers_keep_the_total(Isolation::SerializableSnapshot, "t-stm-snap/").await;
    let ser = transfers_keep_the_total(Isolation::Serializable, "t-stm-ser/").await;
    let rr = transfers_keep_the_total(Isolation::RepeatableReads, "t-stm-rr/").await;
    eprintln!("attempts for 80 transfers: snapshot {snap}, serializable {ser}, repeatable {rr}");
    assert!(snap >= 80 && ser >= 80 && rr >= 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeatable_reads_see_one_value_and_retry_after_a_concurrent_write() {
    let client = shared_client().await;
    client
        .kv_client()
        .put("t-stm-rep/k", "1", None)
        .await
        .unwrap();
    let runs = AtomicU32::new(0);
    let writer = client.clone();
    let seen = txn::run(&client, Isolation::RepeatableReads, |stm| async {
        let stm = stm;
        let run = runs.fetch_add(1, Ordering::Relaxed);
        let first = stm.get_string("t-stm-rep/k").await?;
        if run == 0 {
            writer
                .kv_client()
                .put("t-stm-rep/k", "2", None)
                .await
                .unwrap();
        }
        let second = stm.get_string("t-stm-rep/k").await?;
        assert_eq!(first, second, "repeatable within one attempt");
        stm.put("t-stm-rep/out", second.clone().unwrap_or_default());
        Ok(second)
    })
    .await
    .unwrap();
    assert_eq!(
        runs.load(Ordering::Relaxed),
        2,
        "the conflicting attempt was retried"
    );
    assert_eq!(seen.as_deref(), Some("2"));
    assert_eq!(get_i64(&client, "t-stm-rep/out").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_txn_compare_then_else() {
    let client = shared_client().await;
    let claim = || {
        Txn::new()
            .when(Cmp::absent("t-txn/owner"))
            .then(Op::Put("t-txn/owner".into(), b"a".to_vec()))
            .otherwise(Op::Get("t-txn/owner".into()))
    };
    let first = claim().commit(&client).await.unwrap();
    assert!(first.succeeded);
    assert!(first.gets.is_empty());
    let second = claim().commit(&client).await.unwrap();
    assert!(!second.succeeded);
    let kv = second.gets[0].as_ref().expect("owner");
    assert_eq!(kv.value(), b"a");
    let cas = Txn::new()
        .when(Cmp::mod_revision("t-txn/owner", kv.mod_revision()))
        .when(Cmp::value("t-txn/owner", "a"))
        .then(Op::Delete("t-txn/owner".into()))
        .commit(&client)
        .await
        .unwrap();
    assert!(cas.succeeded);
    assert_eq!(count(&client, "t-txn/").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grant_attach_ttl_and_revoke() {
    let client = shared_client().await;
    let lease = Lease::grant(&client, Duration::from_secs(20))
        .await
        .unwrap();
    lease.attach("t-lease/a", "1").await.unwrap();
    lease.attach("t-lease/b", "1").await.unwrap();
    let info = lease.time_to_live().await.unwrap();
    assert_eq!(info.granted, Duration::from_secs(20));
    assert!(info.remaining.is_some());
    let mut keys = info.keys.clone();
    keys.sort();
    assert_eq!(keys, ["t-lease/a", "t-lease/b"]);
    assert_eq!(
        lease.keep_alive_once().await.unwrap(),
        Duration::from_secs(20)
    );
    let session = lease.keep_alive().await.unwrap();
    assert_eq!(session.lease_id(), lease.id());
    lease.revoke().await.unwrap();
    assert_eq!(count(&client, "t-lease/").await, 0);
    let renewed = lease.keep_alive_once().await;
    assert!(
        matches!(renewed, Err(Error::SessionExpired { .. })),
        "{renewed:?}"
    );
    assert_eq!(lease.time_to_live().await.unwrap().remaining, None);
}
