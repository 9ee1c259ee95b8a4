//! One module per example. Each prints `[name] step` lines as it goes and
//! works under its own key prefix, deleted at the end.

mod config;
mod discovery;
mod election;
mod flags;
mod ha;
mod lb;
mod leader_task;
mod lease;
mod lock;
mod txn;
mod watch;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use etcd_client::{Client, ConnectOptions, DeleteOptions};

/// Prints one step of the running example: `[name] message`.
/// Expects a `NAME` constant in the calling module.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("[{}] {}", NAME, format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Every example, in the order `--example all` runs them.
pub const ALL: &[&str] = &[
    "lock",
    "discovery",
    "lb",
    "config",
    "flags",
    "election",
    "leader-task",
    "txn",
    "lease",
    "watch",
    "ha",
];

/// The examples that run one node per process with `--node-id`.
pub const MULTI_NODE: &[&str] = &["lock", "discovery", "election", "leader-task", "ha"];

/// What every example gets: a connected client and the command line.
pub struct Env {
    /// Balanced over every endpoint; has answered a status request.
    pub client: Client,
    /// Endpoint URLs, in the order given.
    pub endpoints: Vec<String>,
    /// The options `client` was built with (for extra clients).
    pub options: ConnectOptions,
    /// `--node-id`: run one node of a multi-node example until Ctrl-C.
    pub node_id: Option<String>,
    /// `--member-loss-timeout` (watch).
    pub member_loss_timeout: Duration,
}

/// [`Env`] plus the key prefix of one run of one example.
pub struct Ctx<'a> {
    pub env: &'a Env,
    pub client: Client,
    /// `/etcd-examples/<example>/<run>/`; `<run>` is `nodes` with `--node-id`
    /// so that processes started in several terminals meet.
    pub prefix: String,
}

/// Runs example `name`, then deletes its keys (not in node mode, where other
/// processes may still use them; their keys live on leases anyway).
pub async fn run(name: &str, env: &Env) -> anyhow::Result<()> {
    let run_id = match env.node_id {
        Some(_) => "nodes".to_string(),
        None => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("{:x}", (nanos as u64) ^ ((std::process::id() as u64) << 40))
        }
    };
    let ctx = Ctx {
        env,
        client: env.client.clone(),
        prefix: format!("/etcd-examples/{name}/{run_id}/"),
    };
    let result = match name {
        "lock" => lock::run(&ctx).await,
        "discovery" => discovery::run(&ctx).await,
        "lb" => lb::run(&ctx).await,
        "config" => config::run(&ctx).await,
        "flags" => flags::run(&ctx).await,
        "election" => election::run(&ctx).await,
        "leader-task" => leader_task::run(&ctx).await,
        "txn" => txn::run(&ctx).await,
        "lease" => lease::run(&ctx).await,
        "watch" => watch::run(&ctx).await,
        "ha" => ha::run(&ctx).await,
        other => Err(anyhow!("unknown example {other:?}")),
    };
    if env.node_id.is_none() {
        cleanup(&ctx).await;
    }
    result.with_context(|| format!("example {name} failed"))
}

/// Deletes the example's prefix (best effort, a few tries).
async fn cleanup(ctx: &Ctx<'_>) {
    for _ in 0..5 {
        let deleted = ctx
            .client
            .kv_client()
            .delete(
                ctx.prefix.as_str(),
                Some(DeleteOptions::new().with_prefix()),
            )
            .await;
        if deleted.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!(
        "warning: could not delete {} (left for the next run)",
        ctx.prefix
    );
}

/// Awaits `fut` for at most `limit`; the error says what was awaited.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| anyhow!("timed out after {limit:?} waiting for {what}"))
}

/// Polls `cond` every 20 ms for at most `limit`.
pub async fn wait_until(
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    within(limit, what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Set once SIGINT arrived; see [`listen_for_ctrl_c`].
static INTERRUPTED: std::sync::OnceLock<tokio::sync::watch::Receiver<bool>> =
    std::sync::OnceLock::new();

/// Installs the SIGINT handler now, so that a Ctrl-C is never lost: one
/// that arrives while no [`ctrl_c`] future is waiting (between two loop
/// rounds) is still seen by the next one. Called at start-up.
pub fn listen_for_ctrl_c() {
    INTERRUPTED.get_or_init(|| {
        let (tx, rx) = tokio::sync::watch::channel(false);
        // Registered here, synchronously, not at a task's first poll.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
            Ok(mut sigint) => {
                tokio::spawn(async move {
                    if sigint.recv().await.is_some() {
                        let _ = tx.send(true);
                    }
                    // Keep the sender: receivers then wait forever, never
                    // mistaking a dropped sender for a Ctrl-C.
                    std::future::pending::<()>().await;
                });
            }
            Err(e) => eprintln!("etcd-examples: cannot install the Ctrl-C handler: {e}"),
        }
        rx
    });
}

/// Resolves once Ctrl-C was pressed (node mode), also if that happened
/// before this call. Never, if the handler could not be installed.
pub async fn ctrl_c() {
    listen_for_ctrl_c();
    let Some(rx) = INTERRUPTED.get() else {
        return std::future::pending().await;
    };
    let mut rx = rx.clone();
    if rx.wait_for(|pressed| *pressed).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A resource outside etcd (a database, a file store) that accepts a write
/// only if its fencing token is at least the highest it has seen.
#[derive(Default)]
pub struct FencedStore {
    highest: std::sync::atomic::AtomicI64,
}

impl FencedStore {
    /// Whether the write with `token` is accepted.
    pub fn write(&self, token: i64) -> bool {
        self.highest
            .fetch_max(token, std::sync::atomic::Ordering::SeqCst)
            <= token
    }
}
