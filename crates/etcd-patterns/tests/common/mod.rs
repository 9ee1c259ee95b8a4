//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use etcd_client::Client;
use etcd_patterns::Session;
use etcd_testkit::EtcdCluster;

/// A client of the shared cluster, bound to this test's runtime.
pub async fn shared_client() -> Client {
    EtcdCluster::shared()
        .client()
        .await
        .expect("client of the shared cluster")
}

pub async fn session(client: &Client, ttl_secs: u64) -> Session {
    Session::new(client.clone(), Duration::from_secs(ttl_secs))
        .await
        .expect("session")
}

/// Number of keys under `prefix`.
pub async fn count(client: &Client, prefix: &str) -> i64 {
    let opts = etcd_client::GetOptions::new()
        .with_prefix()
        .with_count_only();
    client
        .kv_client()
        .get(prefix, Some(opts))
        .await
        .expect("count")
        .count()
}

/// Polls `cond` every 20 ms for at most `limit`; panics with `what` on timeout.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// Value of `key` as an i64 (0 when absent).
pub async fn get_i64(client: &Client, key: &str) -> i64 {
    let resp = client.kv_client().get(key, None).await.expect("get");
    resp.kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).parse().expect("number"))
        .unwrap_or(0)
}

/// A client balanced over some members of `cluster` only.
pub async fn client_of(cluster: &EtcdCluster, members: &[usize]) -> Client {
    let eps: Vec<String> = members
        .iter()
        .map(|&i| cluster.endpoint(i).unwrap())
        .collect();
    Client::connect(eps, Some(cluster.connect_options().unwrap()))
        .await
        .unwrap()
}
