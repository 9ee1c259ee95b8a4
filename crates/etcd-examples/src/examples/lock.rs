//! Distributed lock with a TTL and fencing tokens.
//!
//! Two workers contend for one lock. Worker 1 stalls past its lease (we
//! revoke it, as etcd would after a GC pause longer than the TTL), worker 2
//! takes over with a higher fencing token, and worker 1's late writes are
//! refused: by etcd (guarded txn) and by a store that checks tokens.

use std::time::Duration;

use anyhow::{Context, bail};
use etcd_client::{PutOptions, TxnOp};
use etcd_patterns::{Error, Mutex, Session};

use super::{Ctx, FencedStore, ctrl_c, say, within};

const NAME: &str = "lock";
const TTL: Duration = Duration::from_secs(2);

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    let lock_prefix = format!("{}lock", ctx.prefix);
    let data_key = format!("{}data", ctx.prefix);
    if let Some(node) = &ctx.env.node_id {
        return node_mode(ctx, node, &lock_prefix, &data_key).await;
    }

    let session1 = Session::new(ctx.client.clone(), TTL).await?;
    let session2 = Session::new(ctx.client.clone(), TTL).await?;
    let worker1 = Mutex::new(session1.clone(), lock_prefix.clone());
    let worker2 = Mutex::new(session2.clone(), lock_prefix);

    let guard1 = worker1.lock().await?;
    let token1 = guard1.fencing_token();
    say!("worker-1 acquired, fencing token {token1}");
    let write = |who: &str| {
        vec![TxnOp::put(
            data_key.as_str(),
            format!("written by {who}"),
            None,
        )]
    };
    guard1.guarded_txn(write("worker-1")).await?;
    say!("worker-1 guarded write applied");

    let waiting = tokio::spawn(async move { worker2.lock().await });
    say!("worker-2 waiting for the lock");
    tokio::time::sleep(Duration::from_millis(300)).await;
    if waiting.is_finished() {
        bail!("worker-2 acquired the lock while worker-1 held it");
    }

    // What etcd does when worker-1 stops renewing for longer than the TTL.
    ctx.client
        .lease_client()
        .revoke(session1.lease_id())
        .await
        .context("revoking worker-1's lease")?;
    say!("worker-1's lease revoked (as if it had stalled past its {TTL:?} TTL)");

    let guard2 = within(Duration::from_secs(10), "worker-2 to acquire", waiting).await???;
    let token2 = guard2.fencing_token();
    say!("worker-2 acquired, fencing token {token2} (> {token1})");

    // Worker-1 wakes up and, unaware, writes again: etcd applies nothing.
    match guard1.guarded_txn(write("worker-1, late")).await {
        Err(Error::NotOwner { .. }) => {
            say!("worker-1 guarded write rejected: not the owner any more")
        }
        Ok(_) => bail!("worker-1's guarded write was applied after its lease was revoked"),
        Err(e) => return Err(e.into()),
    }
    guard2.guarded_txn(write("worker-2")).await?;
    say!("worker-2 guarded write applied");

    // Outside etcd, the fencing token does the same job.
    let store = FencedStore::default();
    if !store.write(token2) || store.write(token1) {
        bail!("the fenced store accepted a stale token");
    }
    say!("store accepted token {token2}, rejected worker-1's stale token {token1}");

    drop(guard1);
    guard2.unlock().await?;
    session2.close().await?;
    say!("done");
    Ok(())
}

/// One worker per process: take the lock, write under it for 3 s, release.
async fn node_mode(
    ctx: &Ctx<'_>,
    node: &str,
    lock_prefix: &str,
    data_key: &str,
) -> anyhow::Result<()> {
    let session = Session::new(ctx.client.clone(), TTL).await?;
    let mutex = Mutex::new(session.clone(), lock_prefix);
    say!("{node} started (session ttl {TTL:?}); Ctrl-C to stop, kill -9 to crash while holding");
    'run: loop {
        say!("{node} waiting for the lock");
        let guard = tokio::select! {
            g = mutex.lock() => g?,
            _ = ctrl_c() => break,
        };
        let token = guard.fencing_token();
        say!("{node} acquired, fencing token {token}");
        for i in 1..=3 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                reason = guard.lost() => { say!("{node} lost the lock: {reason}"); return Ok(()); }
                _ = ctrl_c() => { guard.unlock().await?; say!("{node} released"); break 'run; }
            }
            // On the session's lease: the key goes away with the last node.
            let on_lease = PutOptions::new().with_lease(session.lease_id());
            let put = TxnOp::put(
                data_key,
                format!("{node} write {i} token {token}"),
                Some(on_lease),
            );
            guard.guarded_txn(vec![put]).await?;
            say!("{node} guarded write {i} with token {token}");
        }
        guard.unlock().await?;
        say!("{node} released");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    session.close().await?;
    say!("{node} stopped");
    Ok(())
}
