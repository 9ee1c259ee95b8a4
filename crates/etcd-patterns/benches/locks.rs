//! Lock and election latency against a real 3-member etcd cluster started by
//! etcd-testkit. Run with `cargo bench -p etcd-patterns --bench locks`.
//!
//! Measures in one run: uncontended lock+unlock against raw txn round trips,
//! hand-off latency (holder unlocks -> next waiter holds), and election
//! failover after a crashed leader (session orphaned, never revoked).

use std::error::Error;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};
use etcd_patterns::{Election, Mutex, Session};
use etcd_testkit::{ClusterOptions, EtcdCluster};

type BoxResult<T> = Result<T, Box<dyn Error>>;

const UNCONTENDED: usize = 300;
const HANDOFFS: usize = 100;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx.min(samples.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BoxResult<()> {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await?;
    let client = cluster.client().await?;
    println!("etcd-patterns lock benchmark: 3-member etcd 3.4 on loopback, release build");

    uncontended(&client).await?;
    handoff(&client).await?;
    for ttl in [2u64, 5] {
        failover(&client, ttl, if ttl == 2 { 5 } else { 3 }).await?;
    }
    Ok(())
}

async fn uncontended(client: &Client) -> BoxResult<()> {
    let session = Session::new(client.clone(), Duration::from_secs(10)).await?;
    let lease = session.lease_id();
    let mut kv = client.kv_client();
    // Warm up connections on every path.
    for i in 0..50 {
        kv.put(format!("bench/warm/{i}"), "x", None).await?;
    }

    // Interleaved so that drift (compaction, page cache, CPU contention)
    // hits both sides alike. The raw txn has the lock's shape:
    // create-if-absent under a lease + read the oldest key of the prefix.
    let mutex = Mutex::new(session.clone(), "bench/lock/uncontended");
    let mut raw_txn = Vec::with_capacity(UNCONTENDED);
    let mut raw_pair = Vec::with_capacity(UNCONTENDED);
    let mut lock_only = Vec::with_capacity(UNCONTENDED);
    let mut lock_unlock = Vec::with_capacity(UNCONTENDED);
    for i in 0..UNCONTENDED {
        let key = format!("bench/raw/{lease:x}");
        let first = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(key.as_str(), "", Some(PutOptions::new().with_lease(lease))),
                TxnOp::get("bench/raw/", Some(first)),
            ]);
        let raw = async {
            let t = Instant::now();
            kv.txn(txn).await?;
            let one = t.elapsed();
            kv.delete(key.as_str(), None).await?;
            Ok::<_, etcd_client::Error>((one, t.elapsed()))
        };
        let locked = async {
            let t = Instant::now();
            let guard = mutex.lock().await?;
            let one = t.elapsed();
            guard.unlock().await?;
            Ok::<_, etcd_patterns::Error>((one, t.elapsed()))
        };
        let ((t1, t2), (l1, l2)) = if i % 2 == 0 {
            let r = raw.await?;
            (r, locked.await?)
        } else {
            let l = locked.await?;
            (raw.await?, l)
        };
        raw_txn.push(t1);
        raw_pair.push(t2);
        lock_only.push(l1);
        lock_unlock.push(l2);
    }
    session.close().await?;

    let txn_p50 = percentile(&mut raw_txn, 0.5);
    let pair_p50 = percentile(&mut raw_pair, 0.5);
    let lock_p50 = percentile(&mut lock_only, 0.5);
    let lu_p50 = percentile(&mut lock_unlock, 0.5);
    println!("\n## uncontended ({UNCONTENDED} iterations, medians)");
    println!(
        "raw txn (create-if-absent + get)        p50 {}",
        ms(txn_p50)
    );
    println!(
        "raw txn + delete (2 round trips)         p50 {}",
        ms(pair_p50)
    );
    println!(
        "Mutex::lock                              p50 {}",
        ms(lock_p50)
    );
    println!(
        "Mutex::lock + unlock                     p50 {}",
        ms(lu_p50)
    );
    println!(
        "ratio lock / raw txn                     {:.2}x",
        lock_p50.as_secs_f64() / txn_p50.as_secs_f64()
    );
    println!(
        "ratio lock+unlock / raw txn+delete       {:.2}x",
        lu_p50.as_secs_f64() / pair_p50.as_secs_f64()
    );
    println!(
        "ratio lock+unlock / one raw txn          {:.2}x",
        lu_p50.as_secs_f64() / txn_p50.as_secs_f64()
    );
    Ok(())
}

async fn handoff(client: &Client) -> BoxResult<()> {
    let prefix = "bench/lock/handoff";
    let a = Mutex::new(
        Session::new(client.clone(), Duration::from_secs(10)).await?,
        prefix,
    );
    let b = Mutex::new(
        Session::new(client.clone(), Duration::from_secs(10)).await?,
        prefix,
    );
    let count = GetOptions::new().with_prefix().with_count_only();
    let mut samples = Vec::with_capacity(HANDOFFS);
    for _ in 0..HANDOFFS {
        let held = a.lock().await?;
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                let g = b.lock().await?;
                let at = Instant::now();
                g.unlock().await?;
                Ok::<_, etcd_patterns::Error>(at)
            })
        };
        // Wait (bounded) until the waiter is queued in etcd.
        let queued_by = Instant::now() + Duration::from_secs(5);
        while client
            .kv_client()
            .get(prefix, Some(count.clone()))
            .await?
            .count()
            < 2
        {
            if Instant::now() > queued_by {
                return Err("waiter did not queue within 5 s".into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Let the waiter's watch get established before releasing.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let released = Instant::now();
        held.unlock().await?;
        let acquired = tokio::time::timeout(Duration::from_secs(5), waiter).await???;
        samples.push(acquired.duration_since(released));
    }
    a.session().close().await?;
    b.session().close().await?;
    let p50 = percentile(&mut samples, 0.5);
    let p99 = percentile(&mut samples, 0.99);
    println!("\n## hand-off ({HANDOFFS} iterations): holder calls unlock -> next waiter holds");
    println!(
        "p50 {}  p99 {}  max {}",
        ms(p50),
        ms(p99),
        ms(*samples.last().unwrap_or(&p99))
    );
    Ok(())
}

async fn failover(client: &Client, ttl: u64, rounds: usize) -> BoxResult<()> {
    let prefix = format!("bench/elect/ttl{ttl}");
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let leader = Election::new(
            Session::new(client.clone(), Duration::from_secs(ttl)).await?,
            prefix.as_str(),
        );
        leader.campaign("old").await?;
        let standby = Election::new(
            Session::new(client.clone(), Duration::from_secs(ttl)).await?,
            prefix.as_str(),
        );
        let waiting = {
            let standby = standby.clone();
            tokio::spawn(async move {
                standby.campaign("new").await?;
                Ok::<_, etcd_patterns::Error>(Instant::now())
            })
        };
        // Let a keep-alive or two pass so the crash lands at a random point of the renewal cycle.
        tokio::time::sleep(Duration::from_millis(300 + 200 * samples.len() as u64)).await;
        let crashed = Instant::now();
        leader.session().orphan(); // crash: renewals stop, nothing is revoked
        let won = tokio::time::timeout(Duration::from_secs(ttl + 5), waiting).await???;
        samples.push(won.duration_since(crashed));
        standby.session().close().await?;
    }
    let mut sorted = samples.clone();
    let p50 = percentile(&mut sorted, 0.5);
    println!("\n## election failover after a crashed leader, TTL {ttl} s ({rounds} rounds)");
    println!(
        "median {}  min {}  max {}",
        ms(p50),
        ms(sorted[0]),
        ms(*sorted.last().unwrap_or(&p50))
    );
    Ok(())
}
