//! Service discovery: three instances register under their own leases, a
//! watched cache discovers them, and one leaves by crashing (its lease is no
//! longer renewed, so etcd deletes its key after the TTL).

use std::time::{Duration, Instant};

use anyhow::bail;
use etcd_patterns::{Discovery, Instance, ServiceChange, Session};

use super::{Ctx, ctrl_c, say, wait_until, within};

const NAME: &str = "discovery";
const TTL: Duration = Duration::from_secs(2);

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    let discovery =
        Discovery::start(ctx.client.clone(), &format!("{}services", ctx.prefix)).await?;
    let mut changes = discovery.subscribe();
    if let Some(node) = &ctx.env.node_id {
        return node_mode(ctx, &discovery, changes, node).await;
    }

    let mut sessions = Vec::new();
    for i in 1..=3 {
        let session = Session::new(ctx.client.clone(), TTL).await?;
        let instance = Instance::new("api", format!("api-{i}"), format!("127.0.0.1:900{i}"))
            .with_version("1.0.0");
        discovery.register(&session, instance).await?;
        say!(
            "registered api-{i} at 127.0.0.1:900{i} (lease {:x}, ttl {TTL:?})",
            session.lease_id()
        );
        sessions.push(session);
    }
    wait_until(Duration::from_secs(5), "3 instances in the cache", || {
        discovery.discover("api").len() == 3
    })
    .await?;
    for instance in discovery.discover("api").iter() {
        say!("discovered {} at {}", instance.id, instance.address);
    }

    let crashed = Instant::now();
    sessions[2].orphan(); // stop renewing, like a crashed process
    say!("api-3 crashed: its lease is no longer renewed");
    within(TTL * 3, "api-3 to leave", async {
        loop {
            match changes.recv().await {
                Ok(ServiceChange::Removed(i)) if i.id == "api-3" => return Ok(()),
                Ok(_) => {}
                Err(e) => bail!("discovery change stream: {e}"),
            }
        }
    })
    .await??;
    say!(
        "watch saw api-3 leave after {:.1}s (its lease expired)",
        crashed.elapsed().as_secs_f64()
    );
    let ids: Vec<String> = discovery
        .discover("api")
        .iter()
        .map(|i| i.id.clone())
        .collect();
    say!(
        "now discovering {} instances: {}",
        ids.len(),
        ids.join(", ")
    );

    for session in &sessions[..2] {
        session.close().await?;
    }
    say!("done");
    Ok(())
}

/// One instance per process; prints what it sees until Ctrl-C.
async fn node_mode(
    ctx: &Ctx<'_>,
    discovery: &Discovery,
    mut changes: tokio::sync::broadcast::Receiver<ServiceChange>,
    node: &str,
) -> anyhow::Result<()> {
    let session = Session::new(ctx.client.clone(), TTL).await?;
    let registration = discovery
        .register(
            &session,
            Instance::new("api", node, format!("{node}.example:8080")),
        )
        .await?;
    say!("registered {node}; Ctrl-C to deregister, kill -9 to crash");
    loop {
        let ids: Vec<String> = discovery
            .discover("api")
            .iter()
            .map(|i| i.id.clone())
            .collect();
        say!("{node} sees {}: {}", ids.len(), ids.join(", "));
        tokio::select! {
            change = changes.recv() => match change {
                Ok(ServiceChange::Added(i)) => say!("{} joined", i.id),
                Ok(ServiceChange::Removed(i)) => say!("{} left", i.id),
                Ok(ServiceChange::Updated { new, .. }) => say!("{} updated", new.id),
                Err(e) => bail!("discovery change stream: {e}"),
            },
            reason = session.lost() => bail!("session lost ({reason}): restart to register again"),
            _ = ctrl_c() => break,
        }
    }
    registration.deregister().await?;
    session.close().await?;
    say!("{node} deregistered");
    Ok(())
}
