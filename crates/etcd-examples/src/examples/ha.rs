//! Primary/secondary (active/standby) coordination. Two nodes: one runs the
//! primary callback, writing with its fencing token; the other stands by.
//! The primary is stopped (crashed: nothing revoked), the secondary takes
//! over after the lease expires, and the fencing tokens prove that the two
//! terms never overlapped.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etcd_client::{PutOptions, TxnOp};
use etcd_patterns::{HaCoordinator, HaOptions, PrimaryContext, Role};
use tokio_util::sync::CancellationToken;

use super::{Ctx, FencedStore, ctrl_c, say, wait_until, within};

const NAME: &str = "ha";
const TTL: Duration = Duration::from_secs(2);

/// Every write the primaries made, in the order the store accepted them.
#[derive(Default)]
struct Journal {
    store: FencedStore,
    writes: StdMutex<Vec<(String, i64)>>,
}

impl Journal {
    fn writes_with(&self, token: i64) -> usize {
        let writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.iter().filter(|w| w.1 == token).count()
    }

    /// Waits until the primary with `token` has made `n` writes.
    async fn wait_for_writes(&self, token: i64, n: usize) -> anyhow::Result<()> {
        wait_until(Duration::from_secs(5), "the primary's writes", || {
            self.writes_with(token) >= n
        })
        .await
    }
}

/// The primary: write a heartbeat every 200 ms, guarded in etcd by the
/// leadership compare and outside etcd by the fencing token.
async fn primary(node: String, ctx: PrimaryContext, key: String, journal: Arc<Journal>) {
    say!("{node} is primary, fencing token {}", ctx.fencing_token);
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        // On the term's lease, so that nothing outlives the last node.
        let on_lease = PutOptions::new().with_lease(ctx.election.session().lease_id());
        let put = TxnOp::put(
            key.as_str(),
            format!("{node} token {}", ctx.fencing_token),
            Some(on_lease),
        );
        if ctx.election.guarded_txn(vec![put]).await.is_err() {
            return; // not leading any more: stop writing
        }
        if journal.store.write(ctx.fencing_token) {
            let mut writes = journal.writes.lock().unwrap_or_else(|e| e.into_inner());
            writes.push((node.clone(), ctx.fencing_token));
        }
    }
}

fn spawn_node(
    ctx: &Ctx<'_>,
    node: &str,
    journal: Arc<Journal>,
    shutdown: CancellationToken,
) -> (
    tokio::sync::watch::Receiver<Role>,
    tokio::task::JoinHandle<etcd_patterns::Result<()>>,
) {
    let opts = HaOptions::new(format!("{}election", ctx.prefix), node).with_ttl(TTL);
    let ha = HaCoordinator::new(ctx.client.clone(), opts);
    let role = ha.role();
    let (node, key) = (node.to_string(), format!("{}resource", ctx.prefix));
    let handle = tokio::spawn(async move {
        ha.run(
            |term| primary(node.clone(), term, key.clone(), journal.clone()),
            |standby| {
                let node = node.clone();
                async move {
                    say!("{node} is secondary (standing by)");
                    standby.cancel.cancelled().await;
                }
            },
            shutdown,
        )
        .await
    });
    (role, handle)
}

fn token(role: &Role) -> Option<i64> {
    match role {
        Role::Primary { fencing_token } => Some(*fencing_token),
        _ => None,
    }
}

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    let journal = Arc::new(Journal::default());
    if let Some(node) = &ctx.env.node_id {
        let shutdown = CancellationToken::new();
        let (_, mut handle) = spawn_node(ctx, node, journal, shutdown.clone());
        say!("{node} started (ttl {TTL:?}); Ctrl-C to stop, kill -9 to crash");
        tokio::select! {
            _ = ctrl_c() => shutdown.cancel(),
            result = &mut handle => { result??; return Ok(()); }
        }
        within(Duration::from_secs(5), "the node to stop", handle).await???;
        say!("{node} stopped");
        return Ok(());
    }

    let mut nodes = Vec::new();
    for name in ["node-a", "node-b"] {
        let shutdown = CancellationToken::new();
        let (role, handle) = spawn_node(ctx, name, journal.clone(), shutdown.clone());
        nodes.push((name, role, shutdown, handle));
    }
    let (first, old_token) = within(TTL * 4, "a primary", async {
        loop {
            for (name, role, ..) in &nodes {
                if let Some(t) = token(&role.borrow()) {
                    return (*name, t);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    journal.wait_for_writes(old_token, 3).await?;

    let i = nodes
        .iter()
        .position(|n| n.0 == first)
        .context("unknown node")?;
    let (second, mut role) = {
        let other = &nodes[1 - i];
        (other.0, other.1.clone())
    };
    let stopped = Instant::now();
    nodes[i].3.abort(); // the primary's process dies: its lease is not revoked
    say!("{first} stopped (crashed; its lease runs out after {TTL:?})");
    let new_token = within(TTL * 4, "the secondary to take over", async {
        loop {
            if let Some(t) = token(&role.borrow_and_update()) {
                return Ok(t);
            }
            role.changed().await?;
        }
    })
    .await?
    .map_err(|e: tokio::sync::watch::error::RecvError| anyhow::anyhow!("{second} stopped: {e}"))?;
    say!(
        "{second} took over after {:.1}s, fencing token {new_token} (> {old_token})",
        stopped.elapsed().as_secs_f64()
    );
    journal.wait_for_writes(new_token, 3).await?;

    // A late write from the old primary (say it was only frozen) is refused.
    if journal.store.write(old_token) {
        bail!("the store accepted the old primary's token {old_token}");
    }
    say!("late write from {first} with token {old_token} rejected by the store");

    let writes = journal
        .writes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (old, new) = (
        journal.writes_with(old_token),
        journal.writes_with(new_token),
    );
    let first_new = writes.iter().position(|w| w.1 == new_token);
    let last_old = writes.iter().rposition(|w| w.1 == old_token);
    if old == 0 || new == 0 || first_new < last_old || !writes.is_sorted_by_key(|w| w.1) {
        bail!("writes overlap or are missing: {writes:?}");
    }
    say!(
        "fencing check: {old} writes with token {old_token}, then {new} with {new_token}; no overlap"
    );

    for (_, _, shutdown, handle) in nodes {
        shutdown.cancel();
        let _ = within(Duration::from_secs(5), "nodes to stop", handle).await;
    }
    say!("done");
    Ok(())
}
