//! `etcd-monitor ctl`: etcdctl-style operations with safety checks.
//!
//! The verbs keep etcdctl's names, flags and (for `-w simple`) its output,
//! so scripts and habits carry over. What differs is safety: dangerous verbs
//! (`member remove`, `defrag`, `compaction`, `alarm disarm`) ask before they
//! act, and `defrag` checks health and visits the leader last.
//!
//! Layout: [`maintenance`] and [`endpoint`] hold the library functions that
//! the REST API reuses (typed results, typed errors); [`txn`] parses
//! etcdctl's transaction text; the `verbs_*` modules only parse and print.

pub mod output;

mod verbs_cluster;
mod verbs_keyspace;
mod verbs_kv;
mod verbs_lease;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};

pub use etcd_monitor::ops::error::CtlError;
pub use output::OutputFormat;

use crate::cmd::cli::{ConnArgs, GlobalArgs};
use etcd_monitor::config::ClusterConfig;
use etcd_monitor::exit::Exit;

/// Flags of `ctl`.
///
/// The connection flags may be given before or after the verb
/// (`ctl --endpoints X get k` and `ctl get k --endpoints X`), except
/// `--cluster NAME` (the cluster from `--config`), which goes before the verb
/// because `endpoint ... --cluster` and `defrag --cluster` mean "all
/// members", as in etcdctl.
#[derive(Debug, Args)]
#[command(mut_args = make_global)]
pub struct CtlArgs {
    /// Connection settings.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Output format: simple (etcdctl's), table or json.
    #[arg(short = 'w', long = "write-out", value_enum, default_value_t = OutputFormat::Simple)]
    pub write_out: OutputFormat,
    /// Answer yes to the confirmation of dangerous verbs (required without a TTY).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// The verb.
    #[command(subcommand)]
    pub verb: Verb,
}

/// Makes every `ctl` flag usable after the verb too, except `--cluster NAME`
/// (see [`CtlArgs`]).
fn make_global(arg: clap::Arg) -> clap::Arg {
    if arg.get_id() == "cluster" {
        arg
    } else {
        arg.global(true)
    }
}

/// The verbs, named as in etcdctl.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Get a key or a range of keys.
    Get(verbs_kv::GetArgs),
    /// Put a key.
    Put(verbs_kv::PutArgs),
    /// Delete a key or a range of keys.
    Del(verbs_kv::DelArgs),
    /// Watch a key or prefix until Ctrl-C.
    Watch(verbs_kv::WatchArgs),
    /// Run a transaction written in etcdctl's text format (from FILE or stdin).
    Txn(verbs_kv::TxnArgs),
    /// Compact the key-value history up to REV (dangerous: asks first).
    Compaction(verbs_kv::CompactionArgs),
    /// Leases: grant, revoke, timetolive, list, keep-alive.
    #[command(subcommand)]
    Lease(verbs_lease::LeaseVerb),
    /// Members: list, add, remove, update, promote.
    #[command(subcommand)]
    Member(verbs_cluster::MemberVerb),
    /// Per-endpoint checks: health, status, hashkv.
    #[command(subcommand)]
    Endpoint(verbs_cluster::EndpointVerb),
    /// Alarms: list, disarm.
    #[command(subcommand)]
    Alarm(verbs_cluster::AlarmVerb),
    /// Defragment members safely: health first, followers first, leader last.
    Defrag(verbs_cluster::DefragArgs),
    /// Snapshots of the backend database.
    #[command(subcommand)]
    Snapshot(verbs_cluster::SnapshotVerb),
    /// Transfer leadership to the member with this id (hex).
    MoveLeader(verbs_cluster::MoveLeaderArgs),
    /// What fills the database: keys and bytes per prefix and per
    /// Kubernetes resource, the largest keys (paginated, paced reads).
    Keyspace(verbs_keyspace::KeyspaceArgs),
}

/// What every verb gets: the connection settings, output format, `--yes`.
pub(crate) struct Ctx {
    pub cluster: ClusterConfig,
    pub out: OutputFormat,
    pub yes: bool,
}

impl Ctx {
    /// A client of one voting member that answers (see
    /// [`endpoint::first_voting_member`]); a single endpoint is used as
    /// given, even a learner (etcd's refusals then say so).
    pub async fn client(&self) -> Result<etcd_client::Client, CtlError> {
        let urls = self.endpoints()?;
        if urls.len() == 1 {
            return Ok(etcd_monitor::connection::connect(&self.cluster).await?);
        }
        let dialer = etcd_monitor::connection::Dialer::new(&self.cluster)?;
        Ok(etcd_monitor::connection::first_voting_member(&dialer, &urls).await?)
    }

    /// The endpoints as URLs.
    pub fn endpoints(&self) -> Result<Vec<String>, CtlError> {
        Ok(etcd_monitor::connection::endpoints(&self.cluster)?)
    }

    /// Asks before a dangerous action; see [`confirm`].
    pub fn confirm(&self, action: &str) -> Result<(), CtlError> {
        confirm(action, self.yes)
    }
}

/// Runs `ctl`; returns the process exit status ([`etcd_monitor::exit`]).
pub fn main(global: &GlobalArgs, args: CtlArgs) -> ExitCode {
    let (out, yes, verb) = (args.write_out, args.yes, args.verb);
    crate::cmd::cli::one_shot(global, &args.conn, |_, cluster| async move {
        let ctx = Ctx { cluster, out, yes };
        run(&ctx, verb).await
    })
}

async fn run(ctx: &Ctx, verb: Verb) -> Result<Exit, CtlError> {
    match verb {
        Verb::Get(a) => verbs_kv::get(ctx, a).await,
        Verb::Put(a) => verbs_kv::put(ctx, a).await,
        Verb::Del(a) => verbs_kv::del(ctx, a).await,
        Verb::Watch(a) => verbs_kv::watch(ctx, a).await,
        Verb::Txn(a) => verbs_kv::txn(ctx, a).await,
        Verb::Compaction(a) => verbs_kv::compaction(ctx, a).await,
        Verb::Lease(v) => verbs_lease::run(ctx, v).await,
        Verb::Member(v) => verbs_cluster::member(ctx, v).await,
        Verb::Endpoint(v) => verbs_cluster::endpoint(ctx, v).await,
        Verb::Alarm(v) => verbs_cluster::alarm(ctx, v).await,
        Verb::Defrag(a) => verbs_cluster::defrag(ctx, a).await,
        Verb::Snapshot(v) => verbs_cluster::snapshot(ctx, v).await,
        Verb::MoveLeader(a) => verbs_cluster::move_leader(ctx, a).await,
        Verb::Keyspace(a) => verbs_keyspace::keyspace(ctx, a).await,
    }
    .map(|()| Exit::Ok)
    .or_else(|e| match e {
        // The verb printed its own report; the answer is no.
        CtlError::Failed => Ok(Exit::No),
        e => Err(e),
    })
}

/// Asks "`action`? [y/N]" on the terminal. Without `--yes` and without a
/// terminal on stdin and stderr it refuses: a script must say `--yes`.
pub fn confirm(action: &str, yes: bool) -> Result<(), CtlError> {
    if yes {
        return Ok(());
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(CtlError::Refused(format!(
            "refusing to {action} without confirmation: stdin is not a terminal; pass --yes to confirm"
        )));
    }
    eprint!("{action}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CtlError::Refused(format!("cannot read the confirmation: {e}")))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(CtlError::Refused(format!(
            "not confirmed: did not {action}"
        ))),
    }
}

/// Parses a member or lease id written in hex as etcdctl prints it.
pub fn parse_hex_id(what: &str, text: &str) -> Result<u64, CtlError> {
    let digits = text.trim().trim_start_matches("0x");
    u64::from_str_radix(digits, 16).map_err(|_| {
        CtlError::Invalid(format!(
            "{what} {text:?} is not a hexadecimal id (as printed by `member list` or `lease list`)"
        ))
    })
}
