//! Lease verbs: grant, revoke, timetolive, list, keep-alive.

use clap::{Args, Subcommand};
use etcd_client::LeaseTimeToLiveOptions;
use serde_json::json;

use super::output::{OutputFormat, header_json, print_json, table, text};
use super::{CtlError, Ctx, parse_hex_id};

/// `lease` subcommands.
#[derive(Debug, Subcommand)]
pub enum LeaseVerb {
    /// Grant a lease of TTL seconds.
    Grant {
        /// Time to live, seconds.
        ttl: i64,
    },
    /// Revoke a lease (its keys are deleted).
    Revoke {
        /// Lease id (hex).
        id: String,
    },
    /// Remaining time of a lease.
    Timetolive(TimeToLiveArgs),
    /// List the leases.
    List,
    /// Keep a lease alive until Ctrl-C.
    KeepAlive(KeepAliveArgs),
}

/// Flags of `lease timetolive`.
#[derive(Debug, Args)]
pub struct TimeToLiveArgs {
    /// Lease id (hex).
    pub id: String,
    /// Also list the keys attached.
    #[arg(long)]
    pub keys: bool,
}

/// Flags of `lease keep-alive`.
#[derive(Debug, Args)]
pub struct KeepAliveArgs {
    /// Lease id (hex).
    pub id: String,
    /// Refresh once and exit.
    #[arg(long)]
    pub once: bool,
}

pub(crate) async fn run(ctx: &Ctx, verb: LeaseVerb) -> Result<(), CtlError> {
    let mut client = ctx.client().await?;
    match verb {
        LeaseVerb::Grant { ttl } => {
            if ttl <= 0 {
                return Err(CtlError::Invalid(format!(
                    "bad TTL {ttl}: a lease needs a TTL > 0 seconds"
                )));
            }
            let r = client
                .lease_grant(ttl, None)
                .await
                .map_err(CtlError::on(format!("lease grant {ttl}s")))?;
            match ctx.out {
                OutputFormat::Json => print_json(&json!({
                    "header": header_json(r.header()), "ID": r.id(), "TTL": r.ttl(),
                })),
                _ => println!("lease {:016x} granted with TTL({}s)", r.id(), r.ttl()),
            }
        }
        LeaseVerb::Revoke { id } => {
            let lease = parse_hex_id("lease", &id)?;
            let r = client
                .lease_revoke(lease as i64)
                .await
                .map_err(CtlError::on(format!("lease revoke {lease:016x}")))?;
            match ctx.out {
                OutputFormat::Json => print_json(&json!({ "header": header_json(r.header()) })),
                _ => println!("lease {lease:016x} revoked"),
            }
        }
        LeaseVerb::Timetolive(a) => {
            let lease = parse_hex_id("lease", &a.id)?;
            let mut opts = LeaseTimeToLiveOptions::new();
            if a.keys {
                opts = opts.with_keys();
            }
            let r = client
                .lease_time_to_live(lease as i64, Some(opts))
                .await
                .map_err(CtlError::on(format!("lease timetolive {lease:016x}")))?;
            let keys: Vec<String> = r.keys().iter().map(|k| text(k)).collect();
            match ctx.out {
                OutputFormat::Json => print_json(&json!({
                    "header": header_json(r.header()),
                    "id": r.id(),
                    "ttl": r.ttl(),
                    "granted-ttl": r.granted_ttl(),
                    "keys": if a.keys { json!(keys) } else { json!(null) },
                })),
                _ if r.ttl() == -1 => println!("lease {lease:016x} already expired"),
                _ if a.keys => println!(
                    "lease {lease:016x} granted with TTL({}s), remaining({}s), attached keys([{}])",
                    r.granted_ttl(),
                    r.ttl(),
                    keys.join(" ")
                ),
                _ => println!(
                    "lease {lease:016x} granted with TTL({}s), remaining({}s)",
                    r.granted_ttl(),
                    r.ttl()
                ),
            }
        }
        LeaseVerb::List => {
            let r = client.leases().await.map_err(CtlError::on("lease list"))?;
            let ids: Vec<i64> = r.leases().iter().map(|l| l.id()).collect();
            match ctx.out {
                OutputFormat::Json => print_json(&json!({
                    "header": header_json(r.header()),
                    "leases": ids.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>(),
                })),
                OutputFormat::Table => print!(
                    "{}",
                    table(
                        &["ID"],
                        &ids.iter()
                            .map(|id| vec![format!("{id:016x}")])
                            .collect::<Vec<_>>()
                    )
                ),
                OutputFormat::Simple => {
                    println!("found {} leases", ids.len());
                    for id in ids {
                        println!("{id:016x}");
                    }
                }
            }
        }
        LeaseVerb::KeepAlive(a) => {
            let lease = parse_hex_id("lease", &a.id)? as i64;
            let what = format!("lease keep-alive {lease:016x}");
            let (mut keeper, mut stream) = client
                .lease_keep_alive(lease)
                .await
                .map_err(CtlError::on(what.clone()))?;
            let interrupted = tokio::signal::ctrl_c();
            tokio::pin!(interrupted);
            loop {
                keeper
                    .keep_alive()
                    .await
                    .map_err(CtlError::on(what.clone()))?;
                let msg = tokio::select! {
                    _ = &mut interrupted => return Ok(()),
                    m = stream.message() => m.map_err(CtlError::on(what.clone()))?,
                };
                let Some(r) = msg else {
                    return Err(CtlError::Etcd {
                        what,
                        message: "the server closed the keep-alive stream".into(),
                    });
                };
                if r.ttl() <= 0 {
                    return Err(CtlError::Etcd {
                        what,
                        message: "the lease expired or was revoked".into(),
                    });
                }
                match ctx.out {
                    OutputFormat::Json => print_json(&json!({
                        "header": header_json(r.header()), "ID": r.id(), "TTL": r.ttl(),
                    })),
                    _ => println!("lease {lease:016x} keepalived with TTL({})", r.ttl()),
                }
                if a.once {
                    return Ok(());
                }
                // Refresh at a third of the TTL, as etcd's own clients do.
                let interval = std::time::Duration::from_secs((r.ttl() as u64 / 3).max(1));
                tokio::select! {
                    _ = &mut interrupted => return Ok(()),
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        }
    }
    Ok(())
}
