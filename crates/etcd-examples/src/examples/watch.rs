//! Real-time change notifications with a resilient watch: events as they
//! happen, a restart that resumes from the last revision seen (nothing lost,
//! nothing repeated), and, with `--member-loss-timeout`, the watch moving to
//! another member when the one it uses dies.

use std::time::Duration;

use anyhow::{Context, bail};
use etcd_client::Client;
use etcd_patterns::{ResilientWatch, WatchEvent, WatchOptions};
use tokio::time::{Instant, sleep};

use super::{Ctx, say, within};

const NAME: &str = "watch";

/// A watch of `prefix` from `revision` on, through one client per endpoint
/// (it moves to the next endpoint when its member fails).
async fn watch_from(ctx: &Ctx<'_>, prefix: &str, revision: i64) -> anyhow::Result<ResilientWatch> {
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision)
        .with_stall_timeout(Duration::from_secs(1));
    let env = ctx.env;
    Ok(ResilientWatch::connect(&env.endpoints, Some(env.options.clone()), prefix, opts).await?)
}

/// Receives `n` events, prints them, returns the last revision.
async fn receive(watch: &mut ResilientWatch, prefix: &str, n: usize) -> anyhow::Result<i64> {
    let mut last = 0;
    for _ in 0..n {
        let event = within(Duration::from_secs(15), "a watch event", watch.next())
            .await?
            .context("the watch stopped")?;
        let short = |k: &str| k.strip_prefix(prefix).unwrap_or(k).to_string();
        match &event {
            WatchEvent::Put {
                key,
                value,
                revision,
                ..
            } => {
                say!(
                    "event: PUT {} = {} (revision {revision})",
                    short(key),
                    String::from_utf8_lossy(value)
                )
            }
            WatchEvent::Delete { key, revision, .. } => {
                say!("event: DELETE {} (revision {revision})", short(key))
            }
            WatchEvent::Resynced { revision } => say!("event: resynced at revision {revision}"),
            WatchEvent::Skipped { from, to } => {
                say!("event: revisions {from}..={to} compacted away")
            }
        }
        if event.revision() <= last {
            bail!(
                "event at revision {} after {last}: out of order or repeated",
                event.revision()
            );
        }
        last = event.revision();
    }
    Ok(last)
}

/// A put that retries for a few seconds (a member may just have died).
async fn put(client: &Client, key: &str, value: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.kv_client().put(key, value, None).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("[{NAME}] put {key} failed ({e}); retrying");
                sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("writing {key}")),
        }
    }
}

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    let env = ctx.env;
    let prefix = format!("{}events/", ctx.prefix);
    let key = |name: &str| format!("{prefix}{name}");
    // Start right after the current revision, so that no write made after
    // this point can slip past before the stream is established.
    let now = ctx.client.kv_client().get(prefix.as_str(), None).await?;
    let revision = now
        .header()
        .map(|h| h.revision())
        .context("no header in a get response")?;
    let mut watch = watch_from(ctx, &prefix, revision + 1).await?;
    say!("watching {prefix} through {} first", env.endpoints[0]);

    put(&ctx.client, &key("a"), "1").await?;
    put(&ctx.client, &key("b"), "2").await?;
    ctx.client.kv_client().delete(key("a"), None).await?;
    let last = receive(&mut watch, &prefix, 3).await?;

    drop(watch);
    say!("watcher stopped at revision {last}");
    put(&ctx.client, &key("c"), "3").await?;
    put(&ctx.client, &key("b"), "4").await?;
    say!("2 changes written while no watcher runs");
    let mut watch = watch_from(ctx, &prefix, last + 1).await?;
    receive(&mut watch, &prefix, 2).await?;
    say!(
        "resumed from revision {}: caught up on the 2 missed changes, none lost or repeated",
        last + 1
    );

    if !env.member_loss_timeout.is_zero() {
        member_loss(ctx, &mut watch, &prefix).await?;
    }
    say!("done");
    Ok(())
}

/// Waits for the first endpoint's member to die, then checks that changes
/// keep arriving through another member, in order.
async fn member_loss(
    ctx: &Ctx<'_>,
    watch: &mut ResilientWatch,
    prefix: &str,
) -> anyhow::Result<()> {
    let env = ctx.env;
    let endpoint = env.endpoints[0].as_str();
    let probe = Client::connect([endpoint], Some(env.options.clone())).await?;
    say!(
        "WAITING FOR MEMBER LOSS: kill the etcd member at {endpoint} within {}",
        humantime::format_duration(env.member_loss_timeout)
    );
    let lost = within(env.member_loss_timeout, "member loss", async {
        while probe.maintenance_client().status().await.is_ok() {
            sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if lost.is_err() {
        say!(
            "no member lost within {}; skipping",
            humantime::format_duration(env.member_loss_timeout)
        );
        return Ok(());
    }
    say!("member at {endpoint} lost");
    for (name, value) in [("d", "5"), ("e", "6"), ("f", "7")] {
        put(&ctx.client, &format!("{prefix}{name}"), value).await?;
    }
    receive(watch, prefix, 3).await?;
    say!("watch resumed on another member: all 3 changes written after the loss arrived, in order");
    Ok(())
}
