//! Centralized configuration with hot reload: a typed value changes, the
//! reload callback sees old and new, a stale compare-and-set is refused, and
//! a rollback restores the first version from etcd's MVCC history.

use std::time::Duration;

use anyhow::{Context, bail};
use etcd_patterns::{Config, Error};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Ctx, say, within};

const NAME: &str = "config";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Limits {
    max_conns: u32,
    timeout_ms: u32,
}

fn show(limits: &Option<Limits>) -> String {
    match limits {
        Some(l) => format!("max_conns={} timeout_ms={}", l.max_conns, l.timeout_ms),
        None => "(none)".into(),
    }
}

type Reload = (Option<Limits>, Option<Limits>);

async fn next_reload(reloads: &mut mpsc::UnboundedReceiver<Reload>) -> anyhow::Result<Reload> {
    within(
        Duration::from_secs(5),
        "the reload callback",
        reloads.recv(),
    )
    .await?
    .context("reload callback stopped")
}

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    let config = Config::start(ctx.client.clone(), &format!("{}config/api", ctx.prefix)).await?;

    // Hot reload: called once per change, with the old and the new value.
    let (tx, mut reloads) = mpsc::unbounded_channel();
    let _reload = config.watch("limits", move |old: Option<Limits>, new: Option<Limits>| {
        let _ = tx.send((old, new));
    });

    let first = config
        .set(
            "limits",
            &Limits {
                max_conns: 100,
                timeout_ms: 500,
            },
        )
        .await?;
    say!("set limits max_conns=100 at revision {first}");
    let (old, new) = next_reload(&mut reloads).await?;
    say!("reload: {} -> {}", show(&old), show(&new));

    config.wait_for(first).await?;
    let (current, mod_revision) = config
        .get_versioned::<Limits>("limits")?
        .context("limits missing")?;
    let raised = Limits {
        max_conns: current.max_conns * 2,
        ..current
    };
    let second = config
        .compare_and_set("limits", &raised, mod_revision)
        .await?;
    say!("compare-and-set on mod revision {mod_revision}: max_conns=200 at revision {second}");
    let (old, new) = next_reload(&mut reloads).await?;
    say!("reload: old {} -> new {}", show(&old), show(&new));

    match config
        .compare_and_set(
            "limits",
            &Limits {
                max_conns: 1,
                timeout_ms: 1,
            },
            mod_revision,
        )
        .await
    {
        Err(Error::Conflict { actual, .. }) => {
            say!("stale compare-and-set on revision {mod_revision} rejected (current {actual})")
        }
        Ok(_) => bail!("a stale compare-and-set was applied"),
        Err(e) => return Err(e.into()),
    }

    let history: Vec<String> = config
        .history::<Limits>("limits", 10)
        .await?
        .iter()
        .map(|v| format!("max_conns={}@{}", v.value.max_conns, v.revision))
        .collect();
    say!("history (newest first): {}", history.join(", "));

    let restored = config.rollback("limits", first).await?;
    say!("rolled back to revision {first} (written at revision {restored})");
    let (old, new) = next_reload(&mut reloads).await?;
    say!("reload: old {} -> new {}", show(&old), show(&new));
    if new.map(|l| l.max_conns) != Some(100) {
        bail!("the rollback did not restore max_conns=100");
    }
    say!("done");
    Ok(())
}
