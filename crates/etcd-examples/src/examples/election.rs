//! Leader election: three candidates campaign; the leader resigns (failover
//! in milliseconds), then the next leader crashes (failover after its lease
//! expires). An observer reports every leader change, "no leader" included.

use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_patterns::{Election, Observer, Session};
use tokio::sync::mpsc;

use super::{Ctx, ctrl_c, say, within};

const NAME: &str = "election";
const TTL: Duration = Duration::from_secs(2);

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    let prefix = format!("{}leader", ctx.prefix);
    let observer = Observer::start(ctx.client.clone(), &prefix).await?;
    let watcher = tokio::spawn(report_changes(observer));
    if let Some(node) = &ctx.env.node_id {
        let result = node_mode(ctx, node, &prefix).await;
        watcher.abort();
        return result;
    }

    let (won, mut winners) = mpsc::unbounded_channel();
    let mut candidates = Vec::new();
    for i in 0..3 {
        let session = Session::new(ctx.client.clone(), TTL).await?;
        let election = Election::new(session.clone(), prefix.clone());
        let (campaign, won) = (election.clone(), won.clone());
        tokio::spawn(async move {
            let result = campaign.campaign(format!("candidate-{}", i + 1)).await;
            let _ = won.send((i, result));
        });
        candidates.push((session, election));
    }
    say!("3 candidates campaigning (session ttl {TTL:?})");
    let mut next_leader = async |what: &str| -> anyhow::Result<(usize, i64)> {
        let (i, term) = within(TTL * 4, what, winners.recv())
            .await?
            .context("campaigns ended")?;
        Ok((i, term?))
    };

    let (first, term) = next_leader("a first leader").await?;
    say!("candidate-{} is leader, fencing token {term}", first + 1);

    let resigned = Instant::now();
    candidates[first].1.resign().await?;
    say!("candidate-{} resigned", first + 1);
    let (second, term) = next_leader("a leader after the resignation").await?;
    say!(
        "failover after resign: candidate-{} is leader after {} ms, fencing token {term}",
        second + 1,
        resigned.elapsed().as_millis()
    );

    let crashed = Instant::now();
    candidates[second].0.orphan(); // stops renewing without revoking: a crash
    say!(
        "candidate-{} crashed (its lease is no longer renewed)",
        second + 1
    );
    let (third, term) = next_leader("a leader after the crash").await?;
    say!(
        "failover after crash: candidate-{} is leader after {:.1}s (lease expiry), fencing token {term}",
        third + 1,
        crashed.elapsed().as_secs_f64()
    );

    candidates[third].1.resign().await?;
    for (i, (session, _)) in candidates.iter().enumerate() {
        if i != second {
            session.close().await?;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await; // let the observer report
    watcher.abort();
    say!("done");
    Ok(())
}

/// Prints the current leader, then every change.
async fn report_changes(mut observer: Observer) {
    let mut leader = Some(observer.current());
    while let Some(current) = leader {
        match current {
            Some(l) => say!("observer: leader is {}", String::from_utf8_lossy(&l.value)),
            None => say!("observer: no leader"),
        }
        leader = observer.next().await;
    }
}

/// One candidate per process: campaign, lead until Ctrl-C (resign) or kill -9 (crash).
async fn node_mode(ctx: &Ctx<'_>, node: &str, prefix: &str) -> anyhow::Result<()> {
    let session = Session::new(ctx.client.clone(), TTL).await?;
    let election = Election::new(session.clone(), prefix);
    say!("{node} campaigning (session ttl {TTL:?}); Ctrl-C to resign, kill -9 to crash");
    let term = tokio::select! {
        term = election.campaign(node) => term?,
        _ = ctrl_c() => { session.close().await?; return Ok(()); }
    };
    say!("{node} is leader, fencing token {term}");
    tokio::select! {
        reason = election.lost() => say!("{node} lost leadership: {reason}"),
        _ = ctrl_c() => {
            election.resign().await?;
            say!("{node} resigned");
        }
    }
    session.close().await?;
    Ok(())
}
