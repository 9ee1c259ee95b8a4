//! Cluster verbs: member, endpoint, alarm, defrag, snapshot, move-leader.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use etcd_client::{Member, MemberAddOptions};
use serde_json::json;

use super::output::{OutputFormat, header_json, human_bytes, print_json, table};
use super::{CtlError, Ctx, parse_hex_id};
use etcd_monitor::config;
use etcd_monitor::ops::endpoint::{self, Dialer, EndpointHealth};
use etcd_monitor::ops::maintenance::{
    self, DefragOptions, DefragOutcome, DefragReport, DefragRule,
};

/// `member` subcommands.
#[derive(Debug, Subcommand)]
pub enum MemberVerb {
    /// List the members.
    List,
    /// Add a member (start it afterwards with the printed settings).
    Add {
        /// Name of the new member.
        name: String,
        /// Its peer URLs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Add it as a learner (non-voting until promoted).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member (dangerous: asks first).
    Remove {
        /// Member id (hex).
        id: String,
    },
    /// Change a member's peer URLs.
    Update {
        /// Member id (hex).
        id: String,
        /// New peer URLs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
    },
    /// Promote a learner to a voting member.
    Promote {
        /// Member id (hex).
        id: String,
    },
}

/// `endpoint` subcommands.
#[derive(Debug, Subcommand)]
pub enum EndpointVerb {
    /// Health of each endpoint: a linearizable read and no alarm.
    Health(EndpointArgs),
    /// Status of each endpoint: id, version, db size, leader, raft indexes.
    Status(EndpointArgs),
    /// Hash of each endpoint's key-value store (equal hashes: same data).
    Hashkv {
        /// Which endpoints.
        #[command(flatten)]
        which: EndpointArgs,
        /// Hash up to this revision (0: the latest).
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

/// Which endpoints an `endpoint` verb asks.
#[derive(Debug, Args)]
pub struct EndpointArgs {
    /// Ask every member (client URLs from the member list), not just --endpoints.
    #[arg(long)]
    pub cluster: bool,
}

/// `alarm` subcommands.
#[derive(Debug, Subcommand)]
pub enum AlarmVerb {
    /// List the active alarms.
    List,
    /// Deactivate every active alarm (dangerous: asks first).
    Disarm {
        /// Also disarm CORRUPT, which hides that members' data differ.
        #[arg(long)]
        force: bool,
    },
}

/// Flags of `defrag`.
#[derive(Debug, Args)]
pub struct DefragArgs {
    /// Every member of the cluster, not only those named by --endpoints.
    #[arg(long)]
    pub cluster: bool,
    /// Only members that need it, e.g. `dbQuotaUsage > 0.8 || dbSizeFree > 200MB`
    /// or `dbSize > 100MB && dbSizeFree/dbSize > 0.5` (docs/ctl.md: the
    /// defrag rule language).
    #[arg(long, value_name = "RULE")]
    pub defrag_rule: Option<DefragRule>,
    /// Wait between two members.
    #[arg(long, default_value = "5s", value_parser = config::duration::parse)]
    pub pause: Duration,
    /// Move leadership to a defragmented follower before the leader's turn.
    #[arg(long)]
    pub move_leader: bool,
    /// Show the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotVerb {
    /// Save a snapshot of one member's database to FILE (verified, atomic).
    Save {
        /// Target file.
        file: PathBuf,
    },
    /// Restore a backup (a file or s3://bucket/prefix/NAME, with its
    /// manifest beside it) into a new data directory, after checking it
    /// against its manifest.
    Restore(Box<RestoreArgs>),
}

/// Flags of `snapshot restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup: a file, or s3://bucket/prefix/NAME; NAME.manifest.json
    /// must be beside it.
    pub source: String,
    /// The data directory to create (must not exist or be empty).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Check the backup and prove it by a restore drill into a throwaway
    /// member; write nothing to --data-dir.
    #[arg(long)]
    pub dry_run: bool,
    /// The restored member's name.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// The new cluster's members, NAME=PEER_URL,...
    #[arg(long, default_value = "default=http://localhost:2380")]
    pub initial_cluster: String,
    /// The restored member's peer URLs.
    #[arg(long, default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// The new cluster's token.
    #[arg(long)]
    pub initial_cluster_token: Option<String>,
    /// S3 endpoint URL (s3:// sources; default: AWS).
    #[arg(long, env = "ETCD_MONITOR_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long)]
    pub s3_region: Option<String>,
    /// AWS shared credentials file (default: AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY from the environment).
    #[arg(long)]
    pub s3_credentials_file: Option<PathBuf>,
    /// Profile of --s3-credentials-file.
    #[arg(long)]
    pub s3_profile: Option<String>,
}

/// Flags of `move-leader`.
#[derive(Debug, Args)]
pub struct MoveLeaderArgs {
    /// Id of the member to lead (hex).
    pub id: String,
}

fn member_row(m: &Member) -> Vec<String> {
    vec![
        format!("{:x}", m.id()),
        if m.name().is_empty() {
            "unstarted"
        } else {
            "started"
        }
        .to_string(),
        m.name().to_string(),
        m.peer_urls().join(","),
        m.client_urls().join(","),
        m.is_learner().to_string(),
    ]
}

fn member_json(m: &Member) -> serde_json::Value {
    let mut v = json!({
        "ID": m.id(),
        "name": m.name(),
        "peerURLs": m.peer_urls(),
        "clientURLs": m.client_urls(),
    });
    if m.is_learner() {
        v["isLearner"] = json!(true);
    }
    v
}

fn print_members(out: OutputFormat, header: serde_json::Value, members: &[Member]) {
    match out {
        OutputFormat::Json => print_json(&json!({
            "header": header,
            "members": members.iter().map(member_json).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => print!(
            "{}",
            table(
                &[
                    "ID",
                    "STATUS",
                    "NAME",
                    "PEER ADDRS",
                    "CLIENT ADDRS",
                    "IS LEARNER"
                ],
                &members.iter().map(member_row).collect::<Vec<_>>()
            )
        ),
        OutputFormat::Simple => {
            for m in members {
                println!("{}", member_row(m).join(", "));
            }
        }
    }
}

pub(crate) async fn member(ctx: &Ctx, verb: MemberVerb) -> Result<(), CtlError> {
    let mut client = ctx.client().await?;
    match verb {
        MemberVerb::List => {
            let r = client
                .member_list()
                .await
                .map_err(CtlError::on("member list"))?;
            print_members(ctx.out, header_json(r.header()), r.members());
        }
        MemberVerb::Add {
            name,
            peer_urls,
            learner,
        } => {
            let opts = learner.then(|| MemberAddOptions::new().with_is_learner());
            let r = client
                .member_add(peer_urls.clone(), opts)
                .await
                .map_err(CtlError::on(format!(
                    "member add {name} with peer URLs {}",
                    peer_urls.join(",")
                )))?;
            let id = r.member().map_or(0, |m| m.id());
            let cluster_id = r.header().map_or(0, |h| h.cluster_id());
            if ctx.out == OutputFormat::Json {
                print_json(&json!({
                    "header": header_json(r.header()),
                    "member": r.member().map(member_json),
                    "members": r.member_list().iter().map(member_json).collect::<Vec<_>>(),
                }));
                return Ok(());
            }
            let initial: Vec<String> = r
                .member_list()
                .iter()
                .flat_map(|m| {
                    let n = if m.id() == id {
                        name.clone()
                    } else {
                        m.name().to_string()
                    };
                    m.peer_urls()
                        .iter()
                        .map(move |u| format!("{n}={u}"))
                        .collect::<Vec<_>>()
                })
                .collect();
            println!("Member {id:x} added to cluster {cluster_id:x}\n");
            println!("ETCD_NAME=\"{name}\"");
            println!("ETCD_INITIAL_CLUSTER=\"{}\"", initial.join(","));
            println!(
                "ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{}\"",
                peer_urls.join(",")
            );
            println!("ETCD_INITIAL_CLUSTER_STATE=\"existing\"");
        }
        MemberVerb::Remove { id } => {
            let id = parse_hex_id("member id", &id)?;
            let members = endpoint::members(&mut client).await?;
            let Some(m) = members.iter().find(|m| m.id == id) else {
                return Err(endpoint::unknown_member(id, &members));
            };
            ctx.confirm(&format!(
                "remove member {id:x} ({}) from the cluster",
                if m.name.is_empty() {
                    "unstarted"
                } else {
                    &m.name
                }
            ))?;
            let r = client
                .member_remove(id)
                .await
                .map_err(CtlError::on(format!("member remove {id:x}")))?;
            print_member_change(ctx.out, r.header(), id, "removed from", r.members());
        }
        MemberVerb::Update { id, peer_urls } => {
            let id = parse_hex_id("member id", &id)?;
            let members = endpoint::members(&mut client).await?;
            if !members.iter().any(|m| m.id == id) {
                return Err(endpoint::unknown_member(id, &members));
            }
            let r = client
                .member_update(id, peer_urls)
                .await
                .map_err(CtlError::on(format!("member update {id:x}")))?;
            print_member_change(ctx.out, r.header(), id, "updated in", r.members());
        }
        MemberVerb::Promote { id } => {
            let id = parse_hex_id("member id", &id)?;
            let members = endpoint::members(&mut client).await?;
            if !members.iter().any(|m| m.id == id) {
                return Err(endpoint::unknown_member(id, &members));
            }
            let r = client
                .member_promote(id)
                .await
                .map_err(CtlError::on(format!("member promote {id:x}")))?;
            print_member_change(ctx.out, r.header(), id, "promoted in", r.members());
        }
    }
    Ok(())
}

fn print_member_change(
    out: OutputFormat,
    header: Option<&etcd_client::ResponseHeader>,
    id: u64,
    verb: &str,
    members: &[Member],
) {
    match out {
        OutputFormat::Json => print_json(&json!({
            "header": header_json(header),
            "members": members.iter().map(member_json).collect::<Vec<_>>(),
        })),
        _ => println!(
            "Member {id:x} {verb} cluster {:x}",
            header.map_or(0, |h| h.cluster_id())
        ),
    }
}

/// The endpoints an `endpoint` or `defrag` verb works on.
async fn target_endpoints(ctx: &Ctx, all_members: bool) -> Result<Vec<String>, CtlError> {
    if !all_members {
        return ctx.endpoints();
    }
    let mut client = ctx.client().await?;
    let members = endpoint::members(&mut client).await?;
    Ok(members
        .into_iter()
        .filter(|m| !m.endpoint.is_empty())
        .map(|m| m.endpoint)
        .collect())
}

/// Runs `f` on every endpoint at once; results in endpoint order.
async fn each_endpoint<T, F, Fut>(endpoints: &[String], f: F) -> Vec<T>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = endpoints
        .iter()
        .map(|e| tokio::spawn(f(e.clone())))
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) => eprintln!("Error: a check task failed: {e}"),
        }
    }
    out
}

pub(crate) async fn endpoint(ctx: &Ctx, verb: EndpointVerb) -> Result<(), CtlError> {
    let dialer = Dialer::new(&ctx.cluster)?;
    match verb {
        EndpointVerb::Health(which) => {
            let eps = target_endpoints(ctx, which.cluster).await?;
            let results: Vec<EndpointHealth> = each_endpoint(&eps, |e| {
                let d = dialer.clone();
                async move { endpoint::health(&d, &e).await }
            })
            .await;
            match ctx.out {
                OutputFormat::Json => print_json(&json!(results)),
                OutputFormat::Table => print!(
                    "{}",
                    table(
                        &["ENDPOINT", "HEALTH", "TOOK", "ERROR"],
                        &results
                            .iter()
                            .map(|h| vec![
                                h.endpoint.clone(),
                                h.health.to_string(),
                                format!("{:?}", h.took),
                                h.error.clone().unwrap_or_default()
                            ])
                            .collect::<Vec<_>>()
                    )
                ),
                OutputFormat::Simple => {
                    for h in &results {
                        match &h.error {
                            None => println!(
                                "{} is healthy: successfully committed proposal: took = {:?}",
                                h.endpoint, h.took
                            ),
                            Some(e) => println!(
                                "{} is unhealthy: failed to commit proposal: {e}",
                                h.endpoint
                            ),
                        }
                    }
                }
            }
            if results.iter().any(|h| !h.health) || results.len() < eps.len() {
                return Err(CtlError::Failed);
            }
        }
        EndpointVerb::Status(which) => {
            let eps = target_endpoints(ctx, which.cluster).await?;
            let results = each_endpoint(&eps, |e| {
                let d = dialer.clone();
                async move { endpoint::status(&d, &e).await }
            })
            .await;
            let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
            let ok: Vec<_> = ok.into_iter().filter_map(Result::ok).collect();
            match ctx.out {
                OutputFormat::Json => print_json(&json!(
                    ok.iter()
                        .map(|s| {
                            let mut st = json!({
                                "header": {
                                    "cluster_id": s.cluster_id, "member_id": s.id,
                                    "revision": s.revision, "raft_term": s.raft_term,
                                },
                                "version": s.version, "dbSize": s.db_size, "leader": s.leader,
                                "raftIndex": s.raft_index, "raftTerm": s.raft_term,
                                "raftAppliedIndex": s.raft_applied_index,
                                "dbSizeInUse": s.db_size_in_use,
                            });
                            if s.is_learner {
                                st["isLearner"] = json!(true);
                            }
                            if !s.errors.is_empty() {
                                st["errors"] = json!(s.errors);
                            }
                            json!({ "Endpoint": s.endpoint, "Status": st })
                        })
                        .collect::<Vec<_>>()
                )),
                _ => {
                    let rows: Vec<Vec<String>> = ok
                        .iter()
                        .map(|s| {
                            vec![
                                s.endpoint.clone(),
                                format!("{:x}", s.id),
                                s.version.clone(),
                                human_bytes(s.db_size),
                                s.is_leader().to_string(),
                                s.is_learner.to_string(),
                                s.raft_term.to_string(),
                                s.raft_index.to_string(),
                                s.raft_applied_index.to_string(),
                                s.errors.join(", "),
                            ]
                        })
                        .collect();
                    if ctx.out == OutputFormat::Table {
                        print!(
                            "{}",
                            table(
                                &[
                                    "ENDPOINT",
                                    "ID",
                                    "VERSION",
                                    "DB SIZE",
                                    "IS LEADER",
                                    "IS LEARNER",
                                    "RAFT TERM",
                                    "RAFT INDEX",
                                    "RAFT APPLIED INDEX",
                                    "ERRORS"
                                ],
                                &rows
                            )
                        );
                    } else {
                        for r in rows {
                            println!("{}", r.join(", "));
                        }
                    }
                }
            }
            report_failures(failed)?;
        }
        EndpointVerb::Hashkv { which, rev } => {
            if rev < 0 {
                return Err(CtlError::Invalid(format!(
                    "bad revision {rev}: --rev must be >= 0"
                )));
            }
            let eps = target_endpoints(ctx, which.cluster).await?;
            let results = each_endpoint(&eps, |e| {
                let d = dialer.clone();
                async move { endpoint::hashkv(&d, &e, rev).await }
            })
            .await;
            let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
            let ok: Vec<_> = ok.into_iter().filter_map(Result::ok).collect();
            match ctx.out {
                OutputFormat::Json => print_json(&json!(
                    ok.iter()
                        .map(|h| json!({
                            "Endpoint": h.endpoint,
                            "HashKV": {
                                "header": { "member_id": h.member_id, "revision": h.revision },
                                "hash": h.hash,
                                "compact_revision": h.compact_revision,
                            },
                        }))
                        .collect::<Vec<_>>()
                )),
                OutputFormat::Table => print!(
                    "{}",
                    table(
                        &["ENDPOINT", "HASH"],
                        &ok.iter()
                            .map(|h| vec![h.endpoint.clone(), h.hash.to_string()])
                            .collect::<Vec<_>>()
                    )
                ),
                OutputFormat::Simple => {
                    for h in &ok {
                        println!("{}, {}", h.endpoint, h.hash);
                    }
                }
            }
            report_failures(failed)?;
        }
    }
    Ok(())
}

/// Prints each failed endpoint's error; exit code 1 if there was one.
fn report_failures<T>(failed: Vec<Result<T, CtlError>>) -> Result<(), CtlError> {
    let mut any = false;
    for e in failed.into_iter().filter_map(Result::err) {
        eprintln!("Error: {e}");
        any = true;
    }
    if any { Err(CtlError::Failed) } else { Ok(()) }
}

pub(crate) async fn alarm(ctx: &Ctx, verb: AlarmVerb) -> Result<(), CtlError> {
    let mut client = ctx.client().await?;
    let alarms = match verb {
        AlarmVerb::List => maintenance::alarm_list(&mut client).await?,
        AlarmVerb::Disarm { force } => {
            ctx.confirm("disarm every active alarm")?;
            maintenance::alarm_disarm(&mut client, force).await?
        }
    };
    match ctx.out {
        OutputFormat::Json => print_json(&json!({ "alarms": alarms })),
        _ => {
            for a in alarms {
                println!("memberID:{} alarm:{}", a.member_id, a.alarm);
            }
        }
    }
    Ok(())
}

pub(crate) async fn defrag(ctx: &Ctx, a: DefragArgs) -> Result<(), CtlError> {
    if !a.dry_run {
        ctx.confirm(&format!(
            "defragment {} one at a time (each blocks while it runs)",
            if a.cluster {
                "every member".to_string()
            } else {
                format!("the members at {}", ctx.endpoints()?.join(", "))
            }
        ))?;
    }
    let dialer = Dialer::new(&ctx.cluster)?;
    let mut client = ctx.client().await?;
    let opts = DefragOptions {
        rule: a.defrag_rule,
        pause: a.pause,
        move_leader: a.move_leader,
        dry_run: a.dry_run,
        endpoints: if a.cluster {
            Vec::new()
        } else {
            ctx.endpoints()?
        },
        ..DefragOptions::default()
    };
    let out = ctx.out;
    // Kept from the progress calls, so a run that stops on a failure still
    // reports what it did.
    let mut reports: Vec<DefragReport> = Vec::new();
    let result = maintenance::defrag_cluster(&mut client, &dialer, &opts, |r| {
        if out == OutputFormat::Simple {
            println!("{}", defrag_line(r));
        }
        reports.push(r.clone());
    })
    .await;
    match out {
        OutputFormat::Json if !reports.is_empty() || result.is_ok() => print_json(&json!(reports)),
        OutputFormat::Table if !reports.is_empty() || result.is_ok() => print!(
            "{}",
            table(
                &["ID", "ENDPOINT", "LEADER", "OUTCOME"],
                &reports
                    .iter()
                    .map(|r| vec![
                        format!("{:x}", r.id),
                        r.endpoint.clone(),
                        r.was_leader.to_string(),
                        defrag_line(r)
                    ])
                    .collect::<Vec<_>>()
            )
        ),
        _ => {}
    }
    result.map(|_| ())
}

fn defrag_line(r: &DefragReport) -> String {
    let who = format!(
        "etcd member[{}] ({:x}{})",
        r.endpoint,
        r.id,
        if r.was_leader { ", leader" } else { "" }
    );
    let moved = r
        .moved_leadership_to
        .map(|t| format!(" after moving leadership to {t:x}"))
        .unwrap_or_default();
    match &r.outcome {
        DefragOutcome::Defragmented {
            db_size_before,
            db_size_after,
            took_ms,
        } => format!(
            "Finished defragmenting {who}{moved}: {} -> {} in {took_ms} ms",
            human_bytes(*db_size_before),
            human_bytes(*db_size_after)
        ),
        DefragOutcome::Planned => format!("Would defragment {who}"),
        DefragOutcome::Skipped { reason } => format!("Skipped {who}: {reason}"),
        DefragOutcome::Failed { error } => format!("Failed to defragment {who}{moved}: {error}"),
    }
}

pub(crate) async fn snapshot(ctx: &Ctx, verb: SnapshotVerb) -> Result<(), CtlError> {
    let file = match verb {
        SnapshotVerb::Save { file } => file,
        SnapshotVerb::Restore(a) => return snapshot_restore(ctx, *a).await,
    };
    // A snapshot comes from one member: the first endpoint, as etcdctl requires one.
    let eps = ctx.endpoints()?;
    let Some(first) = eps.first() else {
        return Err(CtlError::Invalid(
            "snapshot save needs an endpoint (--endpoints)".into(),
        ));
    };
    if eps.len() > 1 {
        eprintln!("snapshot save: using {first} (a snapshot comes from one member)");
    }
    let dialer = Dialer::new(&ctx.cluster)?;
    let mut client = dialer.dial_checked(first).await?;
    let info = maintenance::snapshot_save(&mut client, first, &file, true).await?;
    match ctx.out {
        OutputFormat::Json => print_json(&json!(info)),
        _ => println!("Snapshot saved at {}", info.path.display()),
    }
    Ok(())
}

async fn snapshot_restore(ctx: &Ctx, a: RestoreArgs) -> Result<(), CtlError> {
    use etcd_monitor::ops::backup::{self, Target};
    let (place, name) = match a.source.rsplit_once('/') {
        Some((dir, name)) if !name.is_empty() => (dir.to_string(), name.to_string()),
        _ if !a.source.starts_with("s3://") => (".".to_string(), a.source.clone()),
        _ => {
            return Err(CtlError::Invalid(format!(
                "{}: name the backup, s3://bucket/prefix/NAME",
                a.source
            )));
        }
    };
    let s3 = etcd_monitor::config::backup::S3Config {
        endpoint: a.s3_endpoint.clone(),
        region: a.s3_region.clone(),
        credentials_file: a.s3_credentials_file.clone(),
        profile: a.s3_profile.clone(),
    };
    let target = Target::open(&place, Some(&s3))?;
    let manifest = backup::read_manifest(&target, &name).await?;
    let occupied = std::fs::read_dir(&a.data_dir).is_ok_and(|mut d| d.next().is_some());
    if occupied {
        return Err(CtlError::Refused(format!(
            "--data-dir {} is not empty: restore into a new directory",
            a.data_dir.display()
        )));
    }
    if a.dry_run {
        let v = backup::verify(&target, &manifest, None).await;
        match ctx.out {
            OutputFormat::Json => {
                print_json(&json!({ "manifest": manifest, "verification": v, "dry_run": true }))
            }
            _ if v.verified => println!(
                "{} matches its manifest and restores: revision {}, {} keys, HashKV {}; would restore into {} (nothing written)",
                target.location(&name),
                manifest.revision,
                manifest.key_count,
                v.hashkv.map_or("-".to_string(), |h| h.to_string()),
                a.data_dir.display()
            ),
            _ => {}
        }
        if !v.verified {
            return Err(CtlError::Invalid(format!(
                "{} failed its restore drill: {}",
                target.location(&name),
                v.error.unwrap_or_default()
            )));
        }
        return Ok(());
    }
    let staging = backup::staging_dir(None)?;
    let file = backup::fetch_checked(&target, &manifest, staging.path()).await?;
    let member = etcd_monitor::ops::restore::RestoreMember {
        name: a.name.clone(),
        initial_cluster: a.initial_cluster.clone(),
        initial_advertise_peer_urls: a.initial_advertise_peer_urls.clone(),
        initial_cluster_token: a.initial_cluster_token.clone(),
    };
    let data_dir = a.data_dir.clone();
    tokio::task::spawn_blocking(move || {
        etcd_monitor::ops::restore::restore_into(&file, &data_dir, &member)
    })
    .await
    .map_err(|e| CtlError::Invalid(format!("restore: {e}")))??;
    match ctx.out {
        OutputFormat::Json => {
            print_json(&json!({ "manifest": manifest, "data_dir": a.data_dir, "dry_run": false }))
        }
        _ => println!(
            "Restored {} (revision {}, {} keys) into {}",
            target.location(&name),
            manifest.revision,
            manifest.key_count,
            a.data_dir.display()
        ),
    }
    Ok(())
}

pub(crate) async fn move_leader(ctx: &Ctx, a: MoveLeaderArgs) -> Result<(), CtlError> {
    let target = parse_hex_id("member id", &a.id)?;
    let dialer = Dialer::new(&ctx.cluster)?;
    let mut client = ctx.client().await?;
    let (from, to) = maintenance::move_leader(&mut client, &dialer, target).await?;
    match ctx.out {
        OutputFormat::Json => print_json(&json!({ "from": from, "to": to })),
        _ if from == to => println!("Member {to:x} is already the leader"),
        _ => println!("Leadership transferred from {from:x} to {to:x}"),
    }
    Ok(())
}
