//! The chaos suite: every recipe runs at once for a bounded time while
//! members are killed, frozen and cut off from their peers, and checkers
//! then verify what the recipes promise (docs/patterns.md, "Guarantees"):
//!
//! - a counter written only through `guarded_txn` under a [`Mutex`] equals
//!   the number of committed writes, and fencing tokens never go back in
//!   commit order;
//! - a holder that pauses past its TTL (an orphaned session) is rejected,
//!   never silently written;
//! - HA primaries never overlap (recorded spans);
//! - a [`ResilientWatch`] delivers every write exactly once, in order,
//!   across member loss and compaction;
//! - a [`Semaphore`] never has more holders than permits.
//!
//! One dedicated cluster; member 2 runs as another user so that it can be
//! partitioned with iptables. Every loop is bounded by the run's deadline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use etcd_patterns::{
    Error, HaCoordinator, HaOptions, Mutex, ResilientWatch, Semaphore, Session, WatchEvent,
    WatchOptions,
};
use etcd_testkit::{ClusterOptions, EtcdCluster};
use tokio_util::sync::CancellationToken;

/// How long the recipes run under faults.
const RUN: Duration = Duration::from_secs(60);
/// Session TTL of every worker: short, so that faults cost sessions.
const TTL: Duration = Duration::from_secs(5);
/// The member that can be partitioned.
const ISOLATABLE: usize = 2;

struct Run {
    cluster: EtcdCluster,
    until: Instant,
    violations: StdMutex<Vec<String>>,
}

impl Run {
    fn live(&self) -> bool {
        Instant::now() < self.until
    }

    fn violation(&self, what: String) {
        eprintln!("VIOLATION: {what}");
        self.violations.lock().unwrap().push(what);
    }

    async fn client(&self) -> Client {
        self.cluster.client().await.expect("a balanced client")
    }

    /// A session, retried while the cluster has no quorum.
    async fn session(&self) -> Option<Session> {
        while self.live() {
            match Session::new(self.client().await, TTL).await {
                Ok(s) => return Some(s),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        None
    }
}

/// Faults, one after another, until the deadline: kill and restart a
/// member, freeze the leader, partition the isolatable member, compact.
async fn inject_faults(run: Arc<Run>) -> Vec<String> {
    let mut log = Vec::new();
    let mut round = 0usize;
    while run.live() {
        let leader = run.cluster.leader_index().await.ok().flatten().unwrap_or(0);
        match round % 4 {
            0 => {
                let victim = (leader + 1) % 3;
                run.cluster.kill(victim).unwrap();
                log.push(format!("killed member {victim}"));
                tokio::time::sleep(Duration::from_secs(4)).await;
                run.cluster.restart(victim).await.unwrap();
            }
            1 => {
                run.cluster.pause(leader).unwrap();
                log.push(format!("froze leader {leader} for 3 s"));
                tokio::time::sleep(Duration::from_secs(3)).await;
                run.cluster.resume(leader).unwrap();
            }
            2 => {
                let cut = run.cluster.partition(ISOLATABLE).unwrap();
                log.push(format!("partitioned member {ISOLATABLE} for 7 s"));
                tokio::time::sleep(Duration::from_secs(7)).await;
                cut.heal().unwrap();
            }
            _ => {
                let client = run.client().await;
                if let Ok(resp) = client.kv_client().get("chaos/", None).await {
                    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                    if client.kv_client().compact(rev, None).await.is_ok() {
                        log.push(format!("compacted at {rev}"));
                    }
                }
            }
        }
        round += 1;
        // Room between faults: every leader change renews every lease, so
        // back-to-back elections would keep orphaned leases alive forever.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    log
}

/// Lock holders increment `chaos/counter` through `guarded_txn`, writing a
/// marker `chaos/ops/<worker>-<n>` (value: the fencing token) in the same
/// txn. A txn whose outcome is unknown (timeout) still leaves the marker
/// and the counter in step: the checker counts markers.
async fn lock_worker(run: Arc<Run>, worker: usize) -> usize {
    let mut attempts = 0;
    while run.live() {
        let Some(session) = run.session().await else {
            break;
        };
        let m = Mutex::new(session.clone(), "chaos/lock");
        while run.live() && session.lost_reason().is_none() {
            let Ok(guard) = m.lock_timeout(Duration::from_secs(5)).await else {
                continue;
            };
            let client = session.client();
            let Ok(resp) = client.kv_client().get("chaos/counter", None).await else {
                continue;
            };
            let value: u64 = resp
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).parse().unwrap())
                .unwrap_or(0);
            attempts += 1;
            let marker = format!("chaos/ops/{worker}-{attempts}");
            let token = guard.fencing_token().to_string();
            let _ = guard
                .guarded_txn(vec![
                    TxnOp::put("chaos/counter", (value + 1).to_string(), None),
                    TxnOp::put(marker, token, None),
                ])
                .await;
            let _ = guard.unlock().await;
        }
    }
    attempts
}

/// A holder that stops renewing (a process paused past its TTL) and writes
/// once another holder has taken the lock: that write must be rejected.
///
/// (Waiting for the TTL is not enough: a raft leader change renews every
/// lease, and an expired lease whose revoke has not been applied yet is
/// renewed too, so an orphaned holder may legitimately keep the lock, and
/// its writes, for longer than its TTL. What must never happen is a write
/// after someone else acquired.)
async fn pausing_holder(run: Arc<Run>) -> usize {
    let mut checked = 0;
    while run.live() {
        let Some(session) = run.session().await else {
            break;
        };
        let m = Mutex::new(session.clone(), "chaos/lock");
        let Ok(guard) = m.lock_timeout(Duration::from_secs(10)).await else {
            continue;
        };
        session.orphan();
        let observer = run.client().await;
        let opts = GetOptions::new()
            .with_prefix()
            .with_sort(
                etcd_client::SortTarget::Create,
                etcd_client::SortOrder::Ascend,
            )
            .with_limit(1);
        let successor = async {
            loop {
                if let Ok(r) = observer
                    .kv_client()
                    .get("chaos/lock/", Some(opts.clone()))
                    .await
                {
                    if r.kvs()
                        .first()
                        .is_some_and(|kv| kv.create_revision() > guard.fencing_token())
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), successor)
            .await
            .is_err()
        {
            // Nobody acquired after it (leader changes renew every lease, or
            // every contender was busy recovering): nothing to check.
            let ttl = observer
                .lease_client()
                .time_to_live(session.lease_id(), None)
                .await
                .map(|r| r.ttl());
            let first = observer
                .kv_client()
                .get("chaos/lock/", Some(opts.clone()))
                .await
                .map(|r| r.kvs().first().map(|kv| (kv.create_revision(), kv.lease())));
            eprintln!(
                "no successor 30 s after orphaning lease {:x} (token {}): server ttl {ttl:?}, first in line {first:?}",
                session.lease_id(),
                guard.fencing_token()
            );
            continue;
        }
        match guard
            .guarded_txn(vec![TxnOp::put("chaos/stale-write", "1", None)])
            .await
        {
            Ok(_) => run.violation(format!(
                "an orphaned holder (token {}) wrote after another holder acquired",
                guard.fencing_token()
            )),
            Err(Error::NotOwner { .. }) => checked += 1,
            Err(_) => {} // etcd unreachable: nothing written either way
        }
    }
    checked
}

/// Primary spans: (node, start, last heartbeat).
type Spans = Arc<StdMutex<Vec<(usize, Instant, Instant)>>>;

async fn ha_node(ha: Arc<HaCoordinator>, node: usize, spans: Spans, stop: CancellationToken) {
    let primary = move |_ctx: etcd_patterns::PrimaryContext| {
        let spans = spans.clone();
        async move {
            let idx = {
                let mut s = spans.lock().unwrap();
                s.push((node, Instant::now(), Instant::now()));
                s.len() - 1
            };
            // Ignores cancellation on purpose; bounded by the run (2 min).
            for _ in 0..6000 {
                spans.lock().unwrap()[idx].2 = Instant::now();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let _ = ha.run(primary, |_| async {}, stop).await;
}

/// Every 10 s, the primary "crashes": its session stops renewing.
async fn crash_primaries(run: Arc<Run>, nodes: Vec<Arc<HaCoordinator>>) -> usize {
    let mut crashes = 0;
    while run.live() {
        tokio::time::sleep(Duration::from_secs(10)).await;
        for ha in &nodes {
            if matches!(*ha.role().borrow(), etcd_patterns::Role::Primary { .. }) {
                if let Some(s) = ha.session() {
                    s.orphan();
                    crashes += 1;
                }
            }
        }
    }
    crashes
}

/// Writes `chaos/w/<n>` once each (create-only txn, retried until its
/// outcome is known) and returns how many exist.
async fn watched_writer(run: Arc<Run>) -> u64 {
    let client = run.client().await;
    let mut n = 0u64;
    while run.live() {
        let key = format!("chaos/w/{n:06}");
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), n.to_string(), None)]);
        match client.kv_client().txn(txn).await {
            Ok(_) => n += 1, // written now, or by an earlier attempt
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n
}

async fn semaphore_worker(run: Arc<Run>, inside: Arc<AtomicUsize>, peak: Arc<AtomicUsize>) {
    while run.live() {
        let Some(session) = run.session().await else {
            break;
        };
        let sem = Semaphore::new(session.clone(), "chaos/sem", 2);
        while run.live() && session.lost_reason().is_none() {
            let Ok(permit) = sem.acquire_timeout(Duration::from_secs(5)).await else {
                continue;
            };
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = permit.lost() => {}
            }
            inside.fetch_sub(1, Ordering::SeqCst);
            let _ = permit.release().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipes_keep_their_guarantees_under_kills_freezes_partitions_and_compaction() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3).isolatable(ISOLATABLE))
        .await
        .unwrap();
    let run = Arc::new(Run {
        cluster,
        until: Instant::now() + RUN,
        violations: StdMutex::default(),
    });

    // The watch starts before any write, through every member.
    let start = run
        .client()
        .await
        .kv_client()
        .get("chaos/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start + 1)
        .with_stall_timeout(Duration::from_millis(500));
    let mut watch = ResilientWatch::connect(
        &run.cluster.endpoints(),
        Some(run.cluster.connect_options().unwrap()),
        "chaos/w/",
        opts,
    )
    .await
    .unwrap();
    let watched = tokio::spawn(async move {
        let mut seen: Vec<(String, i64)> = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(20), watch.next()).await {
            if let WatchEvent::Put { key, revision, .. } = ev {
                seen.push((key, revision));
            }
        }
        seen
    });

    let spans: Spans = Arc::default();
    let stop_ha = CancellationToken::new();
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let faults = tokio::spawn(inject_faults(run.clone()));
    let lockers: Vec<_> = (0..3)
        .map(|w| tokio::spawn(lock_worker(run.clone(), w)))
        .collect();
    let pauser = tokio::spawn(pausing_holder(run.clone()));
    let mut nodes = Vec::new();
    for n in 0..2 {
        nodes.push(Arc::new(HaCoordinator::new(
            run.client().await,
            HaOptions::new("chaos/ha", format!("n{n}")).with_ttl(TTL),
        )));
    }
    let ha: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, ha)| tokio::spawn(ha_node(ha.clone(), n, spans.clone(), stop_ha.clone())))
        .collect();
    let crasher = tokio::spawn(crash_primaries(run.clone(), nodes.clone()));
    let writer = tokio::spawn(watched_writer(run.clone()));
    let sems: Vec<_> = (0..4)
        .map(|_| tokio::spawn(semaphore_worker(run.clone(), inside.clone(), peak.clone())))
        .collect();

    // Printed with the failure: who stood first in the lock's line, and
    // whether its lease was still alive.
    let snapshots = tokio::spawn(lock_line_snapshots(run.clone()));
    let fault_log = faults.await.unwrap();
    let _ = snapshots.await;
    eprintln!("faults: {fault_log:?}");
    let attempts: usize = futures_join(lockers).await.into_iter().sum();
    let orphan_checks = pauser.await.unwrap();
    let crashes = crasher.await.unwrap();
    stop_ha.cancel();
    futures_join(ha).await;
    let overruns: u64 = nodes.iter().map(|n| n.overruns()).sum();
    let written = writer.await.unwrap();
    futures_join(sems).await;

    // Every member back and healthy before the checks read.
    run.cluster
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("the cluster recovers");
    let client = run.client().await;

    // 1. Counter == committed guarded writes; tokens never go back.
    let counter: u64 = client
        .kv_client()
        .get("chaos/counter", None)
        .await
        .unwrap()
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).parse().unwrap())
        .unwrap_or(0);
    let mut ops = client
        .kv_client()
        .get("chaos/ops/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .take_kvs();
    ops.sort_by_key(|kv| kv.mod_revision());
    eprintln!(
        "lock: {attempts} attempts, {} committed, counter {counter}",
        ops.len()
    );
    if counter != ops.len() as u64 {
        run.violation(format!(
            "counter {counter} but {} committed guarded writes",
            ops.len()
        ));
    }
    let mut last_token = 0i64;
    for kv in &ops {
        let token: i64 = String::from_utf8_lossy(kv.value()).parse().unwrap();
        if token < last_token {
            run.violation(format!(
                "fencing token went back from {last_token} to {token} at revision {}",
                kv.mod_revision()
            ));
        }
        last_token = token;
    }
    // Liveness only (the checks above are the guarantees): the lock kept
    // changing hands through the faults. Elections and 5 s lock timeouts
    // under the faults leave room for a few dozen writes a minute; a
    // fresh-clone CI run on a loaded 2-core machine saw 16.
    assert!(
        ops.len() >= 10,
        "the lock made progress: {} writes",
        ops.len()
    );
    let stale = client
        .kv_client()
        .get("chaos/stale-write", None)
        .await
        .unwrap();
    if stale.count() > 0 {
        run.violation("a stale holder's write landed".into());
    }
    eprintln!("orphaned holders rejected: {orphan_checks}");
    assert!(orphan_checks >= 1, "an orphaned holder was checked");

    // 2. HA primaries never overlap.
    let mut spans = spans.lock().unwrap().clone();
    spans.sort_by_key(|s| s.1);
    eprintln!("HA terms: {} ({crashes} primaries crashed)", spans.len());
    if overruns > 0 {
        run.violation(format!("{overruns} HA primaries ran past the loss margin"));
    }
    for pair in spans.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.2 >= b.1 {
            run.violation(format!(
                "primary n{} ran {:?} into the term of n{}",
                a.0,
                a.2 - b.1,
                b.0
            ));
        }
    }
    assert!(spans.len() >= 2, "the primary failed over at least once");

    // 3. The watch saw every write exactly once, in order.
    let seen = tokio::time::timeout(Duration::from_secs(60), watched)
        .await
        .expect("the watch goes quiet")
        .unwrap();
    let stored = client
        .kv_client()
        .get("chaos/w/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .take_kvs();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, _) in &seen {
        *counts.entry(key.as_str()).or_default() += 1;
    }
    for pair in seen.windows(2) {
        if pair[1].1 <= pair[0].1 {
            run.violation(format!(
                "watch out of order or repeated: {:?} after {:?}",
                pair[1], pair[0]
            ));
        }
    }
    for kv in &stored {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        match counts.get(key.as_str()) {
            Some(1) => {}
            Some(n) => run.violation(format!("watch delivered {key} {n} times")),
            None => run.violation(format!("watch never delivered {key}")),
        }
    }
    eprintln!(
        "watch: {} writes, {} stored, {} delivered",
        written,
        stored.len(),
        seen.len()
    );

    // 4. The semaphore never exceeded its permits.
    let peak = peak.load(Ordering::SeqCst);
    eprintln!("semaphore peak holders: {peak}");
    if peak > 2 {
        run.violation(format!("Semaphore(2) had {peak} holders"));
    }

    let violations = run.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "violations: {violations:#?}");
}

/// Every 5 s, the first keys in the lock's line with their leases' TTL.
async fn lock_line_snapshots(run: Arc<Run>) {
    let client = run.client().await;
    let opts = GetOptions::new()
        .with_prefix()
        .with_sort(
            etcd_client::SortTarget::Create,
            etcd_client::SortOrder::Ascend,
        )
        .with_keys_only()
        .with_limit(4);
    while run.live() {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let Ok(resp) = client
            .kv_client()
            .get("chaos/lock/", Some(opts.clone()))
            .await
        else {
            continue;
        };
        let mut line = format!(
            "lock line at {}:",
            resp.header().map_or(0, |h| h.revision())
        );
        for kv in resp.kvs() {
            let ttl = client
                .lease_client()
                .time_to_live(kv.lease(), None)
                .await
                .map(|t| t.ttl())
                .ok();
            line.push_str(&format!(
                " {}@{} ttl {ttl:?};",
                String::from_utf8_lossy(kv.key()),
                kv.create_revision()
            ));
        }
        eprintln!("{line}");
    }
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(
            tokio::time::timeout(Duration::from_secs(60), h)
                .await
                .expect("a worker stops after the deadline")
                .unwrap(),
        );
    }
    out
}
