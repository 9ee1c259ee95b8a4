//! Client-side load balancing over discovered instances: round-robin,
//! smooth weighted round-robin and consistent hashing.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use etcd_patterns::{Balancer, Discovery, Instance, Session, Strategy};

use super::{Ctx, say, wait_until};

const NAME: &str = "lb";

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    let discovery =
        Discovery::start(ctx.client.clone(), &format!("{}services", ctx.prefix)).await?;
    let session = Session::new(ctx.client.clone(), Duration::from_secs(5)).await?;
    for (i, weight) in [(1, 1), (2, 2), (3, 3)] {
        let instance = Instance::new("api", format!("api-{i}"), format!("127.0.0.1:900{i}"))
            .with_weight(weight);
        discovery.register(&session, instance).await?;
    }
    wait_until(Duration::from_secs(5), "3 instances", || {
        discovery.discover("api").len() == 3
    })
    .await?;
    say!("discovered api-1 (weight 1), api-2 (weight 2), api-3 (weight 3)");

    let picks = |lb: &Balancer, n: usize| -> anyhow::Result<Vec<String>> {
        (0..n).map(|_| Ok(lb.pick()?.id.clone())).collect()
    };
    let round_robin = Balancer::new(discovery.clone(), "api", Strategy::RoundRobin);
    say!("round-robin: {}", picks(&round_robin, 6)?.join(" "));

    let weighted = Balancer::new(discovery.clone(), "api", Strategy::WeightedRoundRobin);
    let sequence = picks(&weighted, 12)?;
    let mut counts = BTreeMap::new();
    for id in &sequence {
        *counts.entry(id.as_str()).or_insert(0) += 1;
    }
    say!("weighted round-robin: {}", sequence.join(" "));
    let counts: Vec<String> = counts.iter().map(|(id, n)| format!("{id}={n}")).collect();
    say!("weighted counts over 12 picks: {}", counts.join(" "));

    let hashed = Balancer::new(
        discovery.clone(),
        "api",
        Strategy::ConsistentHash { virtual_nodes: 160 },
    );
    let keys: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
    let before = keys
        .iter()
        .map(|k| Ok(hashed.pick_for(k)?.id.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    say!(
        "consistent-hash: user-0 -> {}, user-1 -> {}, user-2 -> {}",
        before[0],
        before[1],
        before[2]
    );

    discovery
        .register(&session, Instance::new("api", "api-4", "127.0.0.1:9004"))
        .await?;
    wait_until(Duration::from_secs(5), "api-4", || {
        discovery.discover("api").len() == 4
    })
    .await?;
    let mut moved = 0;
    for (key, old) in keys.iter().zip(&before) {
        let new = hashed.pick_for(key)?.id.clone();
        if &new != old {
            if new != "api-4" {
                bail!("{key} moved from {old} to {new}, not to the new instance");
            }
            moved += 1;
        }
    }
    say!("consistent-hash: api-4 joined, {moved} of 100 keys moved, all of them to api-4");

    session.close().await?;
    say!("done");
    Ok(())
}
