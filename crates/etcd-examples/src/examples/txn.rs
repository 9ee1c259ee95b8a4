//! Transactions: an atomic transfer between two accounts guarded by the mod
//! revisions read, refused when another client wrote in between, then the
//! same transfer as an STM transaction that etcd-patterns retries for you.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};
use etcd_client::Client;
use etcd_patterns::txn::{self, Cmp, Isolation, Op, Txn};

use super::{Ctx, say};

const NAME: &str = "txn";

/// Balance and mod revision of an account.
async fn read(client: &Client, key: &str) -> anyhow::Result<(i64, i64)> {
    let resp = client
        .kv_client()
        .get(key, None)
        .await
        .with_context(|| format!("reading {key}"))?;
    Ok(match resp.kvs().first() {
        Some(kv) => (kv.value_str()?.parse()?, kv.mod_revision()),
        None => (0, 0),
    })
}

/// Moves `amount` from `from` to `to` if neither changed since it was read.
async fn transfer(
    client: &Client,
    from: &str,
    to: &str,
    amount: i64,
    seen: [(i64, i64); 2],
) -> anyhow::Result<bool> {
    let [(a, a_rev), (b, b_rev)] = seen;
    let outcome = Txn::new()
        .when(Cmp::mod_revision(from, a_rev))
        .when(Cmp::mod_revision(to, b_rev))
        .then(Op::Put(from.into(), (a - amount).to_string().into_bytes()))
        .then(Op::Put(to.into(), (b + amount).to_string().into_bytes()))
        .commit(client)
        .await?;
    Ok(outcome.succeeded)
}

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    let client = &ctx.client;
    let alice = format!("{}accounts/alice", ctx.prefix);
    let bob = format!("{}accounts/bob", ctx.prefix);
    client.kv_client().put(alice.as_str(), "100", None).await?;
    client.kv_client().put(bob.as_str(), "0", None).await?;
    say!("accounts: alice=100 bob=0");

    let seen = [read(client, &alice).await?, read(client, &bob).await?];
    if !transfer(client, &alice, &bob, 30, seen).await? {
        bail!("the first transfer conflicted with nobody");
    }
    say!(
        "transfer 30 alice->bob committed atomically (compare on mod revisions {} and {})",
        seen[0].1,
        seen[1].1
    );

    let seen = [read(client, &alice).await?, read(client, &bob).await?];
    client
        .kv_client()
        .put(bob.as_str(), (seen[1].0 + 5).to_string(), None)
        .await?;
    say!("meanwhile another client deposits 5 to bob");
    if transfer(client, &alice, &bob, 20, seen).await? {
        bail!("a transfer on stale reads was committed");
    }
    say!(
        "transfer 20 alice->bob rejected: bob's mod revision is no longer {}",
        seen[1].1
    );
    let fresh = [read(client, &alice).await?, read(client, &bob).await?];
    if !transfer(client, &alice, &bob, 20, fresh).await? {
        bail!("the retried transfer conflicted");
    }
    say!("retried on fresh reads: transfer 20 alice->bob committed");

    // The STM reads, buffers writes and commits them in one txn guarded by
    // what it read; on a conflict it runs the closure again.
    let attempts = Arc::new(AtomicU32::new(0));
    txn::run(client, Isolation::SerializableSnapshot, |stm| {
        let (attempts, client, alice, bob) =
            (attempts.clone(), client.clone(), alice.clone(), bob.clone());
        async move {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            let a: i64 = stm
                .get_string(&alice)
                .await?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let b: i64 = stm
                .get_string(&bob)
                .await?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if attempt == 1 {
                // A concurrent deposit lands between our reads and our commit.
                client
                    .kv_client()
                    .put(bob.as_str(), (b + 5).to_string(), None)
                    .await
                    .map_err(|e| etcd_patterns::Error::etcd("concurrent deposit", e))?;
            }
            stm.put(alice.as_str(), (a - 10).to_string());
            stm.put(bob.as_str(), (b + 10).to_string());
            Ok(())
        }
    })
    .await?;
    let attempts = attempts.load(Ordering::SeqCst);
    say!(
        "STM transfer 10 alice->bob committed after {attempts} attempts (a concurrent deposit forced a retry)"
    );

    let (a, b) = (read(client, &alice).await?.0, read(client, &bob).await?.0);
    say!(
        "balances: alice={a} bob={b} total={} (100 + two deposits of 5)",
        a + b
    );
    if a + b != 110 || attempts < 2 {
        bail!(
            "expected a total of 110 after a retried STM, got {} after {attempts} attempts",
            a + b
        );
    }
    say!("done");
    Ok(())
}
