//! Feature flags: a boolean flag, a 25 % rollout over subjects (the same
//! subject gets the same answer in every process), and the kill switch.

use anyhow::bail;
use etcd_patterns::{Flag, Flags};

use super::{Ctx, say};

const NAME: &str = "flags";

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    let flags = Flags::start(ctx.client.clone(), &format!("{}flags/shop", ctx.prefix)).await?;

    let rev = flags.set("dark-mode", &Flag::boolean(true)).await?;
    flags.wait_for(rev).await?; // read our own write from the cache
    say!(
        "dark-mode (boolean, on): alice={} bob={}",
        flags.is_enabled("dark-mode", "alice"),
        flags.is_enabled("dark-mode", "bob")
    );

    let subjects: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let enabled = |flags: &Flags| {
        subjects
            .iter()
            .filter(|s| flags.is_enabled("new-checkout", s))
            .count()
    };

    let rev = flags
        .set("new-checkout", &Flag::rollout(25.0).denying(["user-0"]))
        .await?;
    flags.wait_for(rev).await?;
    let on = enabled(&flags);
    say!("new-checkout rolled out to 25%: enabled for {on} of 1000 subjects");
    if !(200..=300).contains(&on) {
        bail!("a 25% rollout enabled {on} of 1000 subjects");
    }
    let sample: Vec<String> = subjects[..6]
        .iter()
        .map(|s| {
            format!(
                "{s}={}",
                if flags.is_enabled("new-checkout", s) {
                    "on"
                } else {
                    "off"
                }
            )
        })
        .collect();
    say!(
        "stable buckets (same answer in every process): {}",
        sample.join(" ")
    );

    let rev = flags.kill("new-checkout").await?;
    flags.wait_for(rev).await?;
    let on = enabled(&flags);
    say!("kill switch: new-checkout now enabled for {on} of 1000 subjects");
    if on != 0 {
        bail!("the kill switch left new-checkout on for {on} subjects");
    }
    say!("done");
    Ok(())
}
