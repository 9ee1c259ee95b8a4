//! Leases: keys attached to a lease disappear when it expires; renewing the
//! lease keeps them; revoking deletes them at once.

use std::time::{Duration, Instant};

use anyhow::bail;
use etcd_client::{Client, GetOptions};
use etcd_patterns::Lease;

use super::{Ctx, say};

const NAME: &str = "lease";
const TTL: Duration = Duration::from_secs(2);

async fn count(client: &Client, prefix: &str) -> anyhow::Result<i64> {
    let resp = client
        .kv_client()
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    Ok(resp.count())
}

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    let client = &ctx.client;
    let expiring = Lease::grant(client, TTL).await?;
    let cache = format!("{}cache/", ctx.prefix);
    expiring
        .attach(&format!("{cache}report-1"), "ready")
        .await?;
    expiring
        .attach(&format!("{cache}report-2"), "ready")
        .await?;
    say!(
        "lease {:x} granted (ttl {TTL:?}), 2 keys attached, not renewed",
        expiring.id()
    );

    let kept = Lease::grant(client, TTL).await?;
    let heartbeat = format!("{}heartbeat/worker-1", ctx.prefix);
    kept.attach(&heartbeat, "alive").await?;
    say!(
        "lease {:x} granted (ttl {TTL:?}), 1 key attached, renewed every 500 ms",
        kept.id()
    );

    let start = Instant::now();
    let mut expired_after = None;
    while start.elapsed() < TTL * 2 + Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        kept.keep_alive_once().await?;
        if expired_after.is_none() && count(client, &cache).await? == 0 {
            let after = start.elapsed();
            expired_after = Some(after);
            say!(
                "lease {:x} expired after {:.1}s: its 2 keys are gone",
                expiring.id(),
                after.as_secs_f64()
            );
        }
    }
    if expired_after.is_none() {
        bail!("the keys of lease {:x} outlived it", expiring.id());
    }
    let info = kept.time_to_live().await?;
    if count(client, &heartbeat).await? != 1 {
        bail!("the kept-alive key {heartbeat} is gone");
    }
    say!(
        "lease {:x} kept alive: its key is still there after {:.1}s (remaining {:?}, {} key attached)",
        kept.id(),
        start.elapsed().as_secs_f64(),
        info.remaining.unwrap_or_default(),
        info.keys.len()
    );

    kept.revoke().await?;
    say!(
        "lease {:x} revoked: {} keys left under it",
        kept.id(),
        count(client, &heartbeat).await?
    );
    say!("done");
    Ok(())
}
