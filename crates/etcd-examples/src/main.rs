//! `etcd-examples`: runnable examples of the `etcd-patterns` recipes.
//!
//! ```text
//! etcd-examples --endpoints 127.0.0.1:2379 --example lock
//! etcd-examples --example election --node-id a   # one node per terminal
//! ```
//!
//! Each example prints one `[example] ...` line per step, works under its
//! own key prefix (`/etcd-examples/<example>/<run>/`) and deletes it at the
//! end. The code of each example is one short module in `src/examples/`.

mod connect;
mod examples;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use clap::builder::PossibleValuesParser;

/// Runnable examples of the etcd-patterns recipes.
#[derive(Debug, Parser)]
#[command(name = "etcd-examples", version, about)]
struct Args {
    /// etcd endpoints, comma-separated (`host:port` or URLs).
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    endpoints: Vec<String>,

    /// Which example to run (`all` runs them one after the other).
    #[arg(
        long,
        default_value = "all",
        value_parser = PossibleValuesParser::new(std::iter::once("all").chain(examples::ALL.iter().copied()))
    )]
    example: String,

    /// Run one node of a multi-node example (lock, discovery, election,
    /// leader-task, ha) in this process, until Ctrl-C; start several
    /// terminals with different ids to watch failover.
    #[arg(long)]
    node_id: Option<String>,

    /// How long to wait for an endpoint to answer before giving up.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    dial_timeout: Duration,

    /// `watch` only: wait this long for the first endpoint's member to be
    /// lost (kill it meanwhile) and show the watch resuming on another one.
    /// 0 skips that step.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    member_loss_timeout: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("etcd-examples: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.node_id.is_some() {
        // Node mode stops cleanly on Ctrl-C; elsewhere Ctrl-C just ends it.
        examples::listen_for_ctrl_c();
    }
    let names: Vec<&str> = match args.example.as_str() {
        "all" => examples::ALL.to_vec(),
        name if examples::ALL.contains(&name) => vec![name],
        other => bail!(
            "unknown example {other:?}: choose all or one of {}",
            examples::ALL.join(", ")
        ),
    };
    if args.node_id.is_some() && !(names.len() == 1 && examples::MULTI_NODE.contains(&names[0])) {
        bail!(
            "--node-id runs one node of a multi-node example: add --example with one of {}",
            examples::MULTI_NODE.join(", ")
        );
    }
    let (client, endpoints, options) = connect::connect(&args.endpoints, args.dial_timeout).await?;
    let env = examples::Env {
        client,
        endpoints,
        options,
        node_id: args.node_id,
        member_loss_timeout: args.member_loss_timeout,
    };
    for name in &names {
        examples::run(name, &env).await?;
    }
    if names.len() > 1 {
        println!("[all] {} examples finished", names.len());
    }
    Ok(())
}
