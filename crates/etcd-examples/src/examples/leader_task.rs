//! A periodic job that runs only on the leader. Three nodes campaign; the job
//! runs on one of them; when that node shuts down (resigns) or crashes (its
//! lease expires), the job moves to another node.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etcd_patterns::{HaOptions, LeaderTask};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Ctx, ctrl_c, say, within};

const NAME: &str = "leader-task";
const TTL: Duration = Duration::from_secs(2);
const PERIOD: Duration = Duration::from_millis(300);

/// Starts one node; every run of its job is reported on `runs`.
fn start(
    ctx: &Ctx<'_>,
    node: String,
    runs: mpsc::UnboundedSender<(String, i64)>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<etcd_patterns::Result<()>> {
    let opts = HaOptions::new(format!("{}leader", ctx.prefix), node.clone()).with_ttl(TTL);
    let task = LeaderTask::new(ctx.client.clone(), opts, PERIOD);
    tokio::spawn(async move {
        task.run(
            move |term| {
                let (runs, node) = (runs.clone(), node.clone());
                async move {
                    // The job itself: here it only reports that it ran.
                    let _ = runs.send((node, term.fencing_token));
                }
            },
            shutdown,
        )
        .await
    })
}

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    if let Some(node) = &ctx.env.node_id {
        return node_mode(ctx, node).await;
    }
    let (tx, mut runs) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let shutdown = CancellationToken::new();
        let handle = start(ctx, format!("node-{i}"), tx.clone(), shutdown.clone());
        nodes.push((format!("node-{i}"), shutdown, handle));
    }
    say!("3 nodes campaigning; the job runs every {PERIOD:?} on the leader only");

    // Waits for `n` runs on one node other than `not`; fails on a run by `not`.
    let mut runs_on_new_leader = async |not: Option<&str>, n: usize| -> anyhow::Result<String> {
        let mut current: Option<String> = None;
        let mut count = 0;
        while count < n {
            let (node, token) = within(TTL * 4, "the job to run", runs.recv())
                .await?
                .context("every node stopped")?;
            if Some(node.as_str()) == not {
                bail!("the job ran on {node} after it stopped leading");
            }
            if current.as_deref() != Some(node.as_str()) {
                current = Some(node.clone());
                count = 0;
            }
            count += 1;
            say!("job ran on {node} (fencing token {token})");
        }
        current.context("no run")
    };

    let first = runs_on_new_leader(None, 3).await?;
    let i = nodes
        .iter()
        .position(|n| n.0 == first)
        .context("unknown node")?;
    let stopped = Instant::now();
    nodes[i].1.cancel();
    within(
        Duration::from_secs(5),
        "the leader to shut down",
        &mut nodes[i].2,
    )
    .await???;
    say!("{first} shut down (resigned)");
    let second = runs_on_new_leader(Some(&first), 2).await?;
    say!(
        "job moved from {first} to {second} after {} ms",
        stopped.elapsed().as_millis()
    );

    let j = nodes
        .iter()
        .position(|n| n.0 == second)
        .context("unknown node")?;
    let crashed = Instant::now();
    nodes[j].2.abort(); // like kill -9: nothing is revoked
    say!("{second} crashed");
    let third = runs_on_new_leader(Some(&second), 2).await?;
    say!(
        "job moved from {second} to {third} after {:.1}s (lease expiry)",
        crashed.elapsed().as_secs_f64()
    );

    for (k, (_, shutdown, handle)) in nodes.into_iter().enumerate() {
        if k == i {
            continue; // already stopped and awaited
        }
        shutdown.cancel();
        let _ = within(Duration::from_secs(5), "nodes to stop", handle).await;
    }
    say!("done");
    Ok(())
}

async fn node_mode(ctx: &Ctx<'_>, node: &str) -> anyhow::Result<()> {
    let (tx, mut runs) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let mut handle = start(ctx, node.to_string(), tx, shutdown.clone());
    say!("{node} campaigning; the job runs here while it leads. Ctrl-C to stop, kill -9 to crash");
    loop {
        tokio::select! {
            Some((node, token)) = runs.recv() => say!("job ran on {node} (fencing token {token})"),
            _ = ctrl_c() => break,
            result = &mut handle => { result??; return Ok(()); }
        }
    }
    shutdown.cancel();
    within(Duration::from_secs(5), "the node to stop", handle).await???;
    say!("{node} stopped");
    Ok(())
}
