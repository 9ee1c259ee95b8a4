//! Maintenance operations with their safety rules, shared by `ctl` and the
//! REST API: defragmentation, snapshots, compaction, alarms, leadership.
//!
//! Defragmentation blocks the member it runs on (reads and writes to it stall
//! for the duration), so [`defrag_cluster`] refuses to start unless every
//! member is healthy, visits followers first and the leader last (or moves
//! leadership away first), waits for each member to answer again and pauses
//! before the next one, and skips members a [`DefragRule`] says do not need it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions};
use tokio::io::AsyncWriteExt;

use super::CtlError;
use super::endpoint::{self, Dialer, EndpointStatus, MemberEndpoint};

pub use super::defrag_rule::{DefragRule, RuleInput};

// ---------------------------------------------------------------- defrag

/// A member's `--quota-backend-bytes` (`etcd_server_quota_backend_bytes`),
/// read from `endpoint/metrics`.
async fn member_quota(endpoint: &str, timeout: Duration) -> Result<i64, String> {
    let url = format!("{}/metrics", endpoint.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let text = http
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| {
            format!(
                "its quota is unknown: {url}: {}",
                crate::metrics::describe_http_error(&e)
            )
        })?
        .text()
        .await
        .map_err(|e| format!("its quota is unknown: {url}: {e}"))?;
    let (scrape, _) =
        crate::metrics::prom::Scrape::parse_only(&text, |n| n == "etcd_server_quota_backend_bytes");
    scrape
        .value("etcd_server_quota_backend_bytes")
        .map(|q| q as i64)
        .ok_or_else(|| {
            format!("its quota is unknown: {url} has no etcd_server_quota_backend_bytes")
        })
}

/// How [`defrag_cluster`] runs.
#[derive(Debug, Clone)]
pub struct DefragOptions {
    /// Only members that match need it; `None` defragments every target.
    pub rule: Option<DefragRule>,
    /// Each member's `--quota-backend-bytes` by client URL, for rules that
    /// read `dbQuota` or `dbQuotaUsage`. A member missing here has its
    /// `/metrics` (client URL + `/metrics`) read when the rule needs it.
    pub quotas: std::collections::BTreeMap<String, i64>,
    /// Read each member's quota even when the rule does not need it (the
    /// reports carry it: NOSPACE is disarmed only under it).
    pub read_quotas: bool,
    /// Wait between two members, so the cluster catches up.
    pub pause: Duration,
    /// Transfer leadership to a defragmented follower before defragmenting
    /// the leader.
    pub move_leader: bool,
    /// Plan and report, change nothing.
    pub dry_run: bool,
    /// Limit to members whose client URL is one of these; empty: all members.
    pub endpoints: Vec<String>,
    /// How long one member may take to defragment.
    pub timeout: Duration,
}

impl Default for DefragOptions {
    fn default() -> Self {
        DefragOptions {
            rule: None,
            quotas: std::collections::BTreeMap::new(),
            read_quotas: false,
            pause: Duration::from_secs(5),
            move_leader: false,
            dry_run: false,
            endpoints: Vec::new(),
            timeout: Duration::from_secs(300),
        }
    }
}

/// What happened to one member.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DefragOutcome {
    /// Defragmented.
    Defragmented {
        /// Size before.
        db_size_before: i64,
        /// Size after.
        db_size_after: i64,
        /// How long the member was blocked.
        took_ms: u64,
    },
    /// Would be defragmented (dry run).
    Planned,
    /// The rule says it does not need it.
    Skipped {
        /// Why.
        reason: String,
    },
    /// Defragmentation failed; later members were not touched.
    Failed {
        /// The error.
        error: String,
    },
}

/// One member's line of the defrag report, in visiting order.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DefragReport {
    /// Member id.
    pub id: u64,
    /// Member name.
    pub name: String,
    /// Client URL used.
    pub endpoint: String,
    /// Whether it was the leader when visited.
    pub was_leader: bool,
    /// If leadership was moved away first: to which member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_leadership_to: Option<u64>,
    /// The member's `--quota-backend-bytes`, when it was read (rules that
    /// read the quota, `read_quotas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_quota: Option<i64>,
    /// The result.
    #[serde(flatten)]
    pub outcome: DefragOutcome,
}

/// Defragments the cluster's members one at a time, safely.
///
/// 1. Every member must answer a status call with no errors and agree on one
///    leader, and no CORRUPT alarm may be active (NOSPACE is fine: defrag is
///    part of its cure). Otherwise nothing is touched: blocking one member
///    while another is down can cost the quorum.
/// 2. Members the rule does not match are reported as skipped.
/// 3. Followers go first; the current leader is re-read before each step and
///    always goes last (after moving leadership away with `move_leader`).
/// 4. After each member: wait until it answers status again, then pause.
///
/// `progress` is called with each report as it happens. A failure stops the
/// run: the report ends with the failed member and the error is returned.
pub async fn defrag_cluster(
    client: &mut Client,
    dialer: &Dialer,
    opts: &DefragOptions,
    mut progress: impl FnMut(&DefragReport),
) -> Result<Vec<DefragReport>, CtlError> {
    let members = endpoint::members(client).await?;
    let statuses = preflight(client, dialer, &members).await?;
    let targets: Vec<(MemberEndpoint, EndpointStatus)> = members
        .iter()
        .cloned()
        .zip(statuses)
        .filter(|(m, _)| {
            opts.endpoints.is_empty() || opts.endpoints.iter().any(|e| same_url(e, &m.endpoint))
        })
        .collect();
    if targets.is_empty() {
        return Err(CtlError::Invalid(format!(
            "no member has a client URL among {}; members: {}",
            opts.endpoints.join(", "),
            members
                .iter()
                .map(|m| format!("{:x} {} {}", m.id, m.name, m.endpoint))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut reports = Vec::new();
    let mut todo: Vec<(MemberEndpoint, EndpointStatus, Option<i64>)> = Vec::new();
    for (m, s) in targets {
        let needs_quota = opts.read_quotas || opts.rule.as_ref().is_some_and(|r| r.uses_quota());
        let quota = match opts.quotas.get(&m.endpoint) {
            Some(q) => Ok(Some(*q)),
            None if needs_quota => member_quota(&m.endpoint, dialer.request_timeout())
                .await
                .map(Some),
            None => Ok(None),
        };
        let skip = opts.rule.as_ref().and_then(|rule| {
            let quota = match &quota {
                Ok(q) => *q,
                Err(e) => return Some(format!("rule {rule} not evaluated: {e}")),
            };
            let input = RuleInput {
                db_size: s.db_size as f64,
                db_size_in_use: s.db_size_in_use as f64,
                db_quota: quota.map(|q| q as f64),
            };
            let sizes = match quota {
                Some(q) => format!(
                    "dbSize {}, in use {}, quota {q}",
                    s.db_size, s.db_size_in_use
                ),
                None => format!("dbSize {}, in use {}", s.db_size, s.db_size_in_use),
            };
            match rule.evaluate(&input) {
                Ok(true) => None,
                Ok(false) => Some(format!("rule {rule} not met: {sizes}")),
                Err(e) => Some(format!("rule {rule} not evaluated: {e}")),
            }
        });
        match skip {
            Some(reason) => {
                let report = DefragReport {
                    id: m.id,
                    name: m.name.clone(),
                    endpoint: m.endpoint.clone(),
                    was_leader: s.is_leader(),
                    moved_leadership_to: None,
                    db_quota: quota.clone().ok().flatten(),
                    outcome: DefragOutcome::Skipped { reason },
                };
                progress(&report);
                reports.push(report);
            }
            None => {
                if let Err(e) = &quota {
                    tracing::warn!(member = %m.name, error = %e, "member quota not read");
                }
                todo.push((m, s, quota.ok().flatten()))
            }
        }
    }
    let mut done_followers: Vec<u64> = Vec::new();
    while !todo.is_empty() {
        // Leadership can change while we work: ask again every time.
        let leader = current_leader(client).await?;
        let pick = todo
            .iter()
            .position(|(m, _, _)| m.id != leader)
            .unwrap_or(0);
        let (member, status, db_quota) = todo.remove(pick);
        let mut report = DefragReport {
            id: member.id,
            name: member.name.clone(),
            endpoint: member.endpoint.clone(),
            was_leader: member.id == leader,
            moved_leadership_to: None,
            db_quota,
            outcome: DefragOutcome::Planned,
        };
        if opts.dry_run {
            progress(&report);
            reports.push(report);
            continue;
        }
        if report.was_leader && opts.move_leader {
            let voters: Vec<u64> = members
                .iter()
                .filter(|m| m.id != member.id && !m.is_learner)
                .map(|m| m.id)
                .collect();
            let target = done_followers
                .iter()
                .find(|id| voters.contains(id))
                .or(voters.first())
                .copied();
            if let Some(target) = target {
                tracing::info!(
                    member = %format!("{:x}", member.id),
                    to = %format!("{target:x}"),
                    "moving leadership away before defragmenting the leader"
                );
                move_leader(client, dialer, target).await?;
                report.moved_leadership_to = Some(target);
            }
        }
        tracing::info!(
            member = %format!("{:x}", member.id),
            endpoint = %member.endpoint,
            was_leader = report.was_leader,
            "defragmenting"
        );
        let outcome = defrag_member(dialer, &member.endpoint, status.db_size, opts.timeout).await;
        let failed = match &outcome {
            Ok(o) => {
                report.outcome = o.clone();
                None
            }
            Err(e) => {
                report.outcome = DefragOutcome::Failed {
                    error: e.to_string(),
                };
                Some(e.to_string())
            }
        };
        progress(&report);
        reports.push(report);
        if let Some(error) = failed {
            return Err(CtlError::Unsafe(format!(
                "defragmentation of member {:x} ({}) failed, later members were not touched: {error}",
                member.id, member.endpoint
            )));
        }
        if member.id != leader {
            done_followers.push(member.id);
        }
        if !todo.is_empty() && !opts.pause.is_zero() {
            tokio::time::sleep(opts.pause).await;
        }
    }
    Ok(reports)
}

fn same_url(a: &str, b: &str) -> bool {
    let strip = |s: &str| {
        s.trim_end_matches('/')
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string()
    };
    strip(a) == strip(b)
}

/// Every member answers, has no errors, and all agree on one leader; no
/// CORRUPT alarm. Returns each member's status in member-list order.
async fn preflight(
    client: &mut Client,
    dialer: &Dialer,
    members: &[MemberEndpoint],
) -> Result<Vec<EndpointStatus>, CtlError> {
    let mut problems = Vec::new();
    let mut statuses = Vec::new();
    for m in members {
        if m.endpoint.is_empty() {
            problems.push(format!("member {:x} has not started (no client URL)", m.id));
            continue;
        }
        match endpoint::status(dialer, &m.endpoint).await {
            // A NOSPACE alarm shows as a status error; defrag is part of its cure.
            Ok(s) if s.errors.iter().any(|e| !e.contains("alarm:NOSPACE")) => {
                problems.push(format!(
                    "member {:x} ({}) reports errors: {}",
                    m.id,
                    m.endpoint,
                    s.errors.join("; ")
                ));
            }
            Ok(s) => statuses.push(s),
            Err(e) => problems.push(format!("member {:x} ({}): {e}", m.id, m.endpoint)),
        }
    }
    let leaders: std::collections::BTreeSet<u64> = statuses.iter().map(|s| s.leader).collect();
    if problems.is_empty() && (leaders.len() != 1 || leaders.contains(&0)) {
        problems.push(format!(
            "members do not agree on one leader: {}",
            statuses
                .iter()
                .map(|s| format!("{:x} says {:x}", s.id, s.leader))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // The alarm list goes through raft: failing to answer it is a finding too.
    match alarm_list(client).await {
        Ok(alarms) => {
            if let Some(a) = alarms.iter().find(|a| a.alarm == "CORRUPT") {
                problems.push(format!("CORRUPT alarm active on member {:x}", a.member_id));
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    if problems.is_empty() {
        Ok(statuses)
    } else {
        Err(CtlError::Unsafe(format!(
            "defrag refused, the cluster is not healthy (defragmenting blocks a member, which could cost the quorum): {}",
            problems.join("; ")
        )))
    }
}

/// The id of the member the cluster agrees leads.
pub async fn current_leader(client: &mut Client) -> Result<u64, CtlError> {
    let s = client
        .status()
        .await
        .map_err(CtlError::on("status (to find the leader)"))?;
    Ok(s.leader())
}

/// Defragments one member and waits until it answers again.
async fn defrag_member(
    dialer: &Dialer,
    url: &str,
    db_size_before: i64,
    timeout: Duration,
) -> Result<DefragOutcome, CtlError> {
    let mut client = dialer.dial_checked(url).await?;
    let start = Instant::now();
    match tokio::time::timeout(timeout, client.defragment()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(CtlError::etcd(format!("defragment {url}"), e)),
        Err(_) => {
            return Err(CtlError::Unsafe(format!(
                "defragment {url}: no answer within {}",
                crate::config::duration::format(&timeout)
            )));
        }
    }
    let took = start.elapsed();
    // The member is usable again once it answers status.
    let deadline = Instant::now() + timeout;
    let after = loop {
        match endpoint::status_of(&mut client, url).await {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    Ok(DefragOutcome::Defragmented {
        db_size_before,
        db_size_after: after.db_size,
        took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
    })
}

// ---------------------------------------------------------------- leadership

/// Transfers leadership to member `target` (sent to the current leader, as
/// etcd requires). Returns `(old leader, new leader)`.
pub async fn move_leader(
    client: &mut Client,
    dialer: &Dialer,
    target: u64,
) -> Result<(u64, u64), CtlError> {
    let members = endpoint::members(client).await?;
    let Some(t) = members.iter().find(|m| m.id == target) else {
        return Err(endpoint::unknown_member(target, &members));
    };
    if t.is_learner {
        return Err(CtlError::Invalid(format!(
            "member {target:x} ({}) is a learner and cannot lead; promote it first",
            t.name
        )));
    }
    let leader = current_leader(client).await?;
    if leader == target {
        return Ok((leader, target));
    }
    let Some(l) = members.iter().find(|m| m.id == leader) else {
        return Err(CtlError::Unsafe(format!(
            "the cluster has no leader it can name ({leader:x}); try again"
        )));
    };
    let mut leader_client = dialer.dial_checked(&l.endpoint).await?;
    tracing::info!(from = %format!("{leader:x}"), to = %format!("{target:x}"), "move leader");
    leader_client
        .move_leader(target)
        .await
        .map_err(CtlError::on(format!(
            "move leader from {leader:x} to {target:x}"
        )))?;
    Ok((leader, target))
}

// ---------------------------------------------------------------- snapshot

/// A saved snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotInfo {
    /// Where it was written.
    pub path: PathBuf,
    /// Bytes written, including etcd's trailing 32-byte sha256.
    pub size: u64,
    /// Hex sha256 of the database part (verified against etcd's).
    pub sha256: String,
    /// Hex sha256 of the whole file (etcd's trailing hash included).
    pub file_sha256: String,
    /// How long it took.
    pub took_ms: u128,
}

/// Streams a snapshot of the member `client` talks to into `path`.
///
/// etcd ends the stream with the sha256 of the database bytes; the file is
/// written as `path.part` (created exclusively, mode 0600: a snapshot holds
/// every key, Kubernetes Secrets included), verified against that hash,
/// synced, then moved to `path`: replacing it when `replace`, else failing
/// if `path` appeared meanwhile. On any failure, and when the future is
/// dropped halfway, the partial file is removed and `path` is not touched.
/// The file has the layout `etcdctl snapshot save` writes, so `etcdctl
/// snapshot status|restore` accept it.
pub async fn snapshot_save(
    client: &mut Client,
    endpoint: &str,
    path: &Path,
    replace: bool,
) -> Result<SnapshotInfo, CtlError> {
    let start = Instant::now();
    let part = PartFile::new(path);
    if replace {
        // A `.part` left by a process that died: this save replaces it.
        let _ = std::fs::remove_file(&part.path);
    }
    let (size, sha256, file_sha256) = write_snapshot(client, endpoint, path, &part.path).await?;
    part.commit(path, replace).map_err(|source| CtlError::Io {
        what: if replace {
            "cannot move the snapshot into place at"
        } else {
            "cannot create (it may exist already)"
        },
        path: path.display().to_string(),
        source,
    })?;
    tracing::info!(endpoint, path = %path.display(), size, "snapshot saved");
    Ok(SnapshotInfo {
        path: path.to_path_buf(),
        size,
        sha256,
        file_sha256,
        took_ms: start.elapsed().as_millis(),
    })
}

/// The `.part` file of a snapshot being written: removed when dropped
/// unless committed.
pub(crate) struct PartFile {
    pub(crate) path: PathBuf,
    committed: bool,
}

impl PartFile {
    pub(crate) fn new(target: &Path) -> PartFile {
        let mut part = target.as_os_str().to_owned();
        part.push(".part");
        PartFile {
            path: PathBuf::from(part),
            committed: false,
        }
    }

    /// Moves the finished file to `target`. Without `replace`, a hard link
    /// makes the name appear atomically and fails if it exists.
    pub(crate) fn commit(mut self, target: &Path, replace: bool) -> std::io::Result<()> {
        if replace {
            std::fs::rename(&self.path, target)?;
        } else {
            std::fs::hard_link(&self.path, target)?;
            let _ = std::fs::remove_file(&self.path);
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates `path` for writing only if it does not exist, readable by its
/// owner only.
pub(crate) async fn create_private(path: &Path) -> std::io::Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).await
}

async fn write_snapshot(
    client: &mut Client,
    endpoint: &str,
    path: &Path,
    part: &Path,
) -> Result<(u64, String, String), CtlError> {
    let io = |what: &'static str, p: &Path| {
        let path = p.display().to_string();
        move |source| CtlError::Io { what, path, source }
    };
    let mut file = create_private(part)
        .await
        .map_err(io("cannot create", part))?;
    let mut stream = client
        .snapshot()
        .await
        .map_err(CtlError::on(format!("snapshot of endpoint {endpoint}")))?;
    let mut check = TrailingSha256::new();
    let mut whole = super::backup::Hasher::default();
    while let Some(msg) = stream
        .message()
        .await
        .map_err(CtlError::on(format!("snapshot stream from {endpoint}")))?
    {
        let blob = msg.blob();
        file.write_all(blob)
            .await
            .map_err(io("cannot write", part))?;
        check.update(blob);
        whole.update(blob);
    }
    let (size, sha256) = check
        .finish()
        .map_err(|detail| CtlError::SnapshotIntegrity {
            endpoint: endpoint.to_string(),
            path: path.display().to_string(),
            detail,
        })?;
    file.flush().await.map_err(io("cannot write", part))?;
    file.sync_all().await.map_err(io("cannot sync", part))?;
    Ok((size, sha256, whole.finish().1))
}

/// Checks a stream that ends with the sha256 of everything before it, the
/// way etcd sends snapshots.
pub struct TrailingSha256 {
    hasher: aws_lc_rs::digest::Context,
    // The last 32 bytes seen: the candidate hash, not hashed yet.
    tail: Vec<u8>,
    size: u64,
}

impl Default for TrailingSha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl TrailingSha256 {
    /// Nothing seen yet.
    pub fn new() -> Self {
        TrailingSha256 {
            hasher: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
            tail: Vec::with_capacity(64),
            size: 0,
        }
    }

    /// The next chunk of the stream.
    pub fn update(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > 32 {
            let cut = self.tail.len() - 32;
            self.hasher.update(&self.tail[..cut]);
            self.tail.drain(..cut);
        }
    }

    /// `(total bytes, hex sha256 of the data)` if the last 32 bytes are the
    /// sha256 of the rest; otherwise what is wrong.
    pub fn finish(self) -> Result<(u64, String), String> {
        if self.tail.len() < 32 {
            return Err(format!(
                "the stream ended after {} bytes, too short to carry a sha256",
                self.size
            ));
        }
        let digest = self.hasher.finish();
        if digest.as_ref() != self.tail.as_slice() {
            return Err(format!(
                "sha256 mismatch over {} bytes (etcd sent {}, the data hashes to {})",
                self.size - 32,
                hex(&self.tail),
                hex(digest.as_ref())
            ));
        }
        Ok((self.size, hex(digest.as_ref())))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------- compaction

/// The result of [`compact`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompactResult {
    /// The revision compacted to.
    pub revision: i64,
    /// Whether the call waited for the physical removal.
    pub physical: bool,
}

/// Compacts the key-value history up to `revision`. With `physical` the
/// call returns once the space is reclaimed in the backend.
pub async fn compact(
    client: &mut Client,
    revision: i64,
    physical: bool,
) -> Result<CompactResult, CtlError> {
    if revision <= 0 {
        return Err(CtlError::Invalid(format!(
            "bad revision {revision}: compaction needs a revision > 0"
        )));
    }
    tracing::info!(revision, physical, "compaction");
    let opts = physical.then(|| CompactionOptions::new().with_physical());
    client
        .compact(revision, opts)
        .await
        .map_err(CtlError::on(format!("compaction to revision {revision}")))?;
    Ok(CompactResult { revision, physical })
}

// ---------------------------------------------------------------- alarms

/// An active alarm.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Alarm {
    /// The member that raised it.
    pub member_id: u64,
    /// `NOSPACE` or `CORRUPT`.
    pub alarm: String,
}

/// The cluster's active alarms.
pub async fn alarm_list(client: &mut Client) -> Result<Vec<Alarm>, CtlError> {
    let r = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .map_err(CtlError::on("alarm list"))?;
    Ok(r.alarms()
        .iter()
        .map(|a| Alarm {
            member_id: a.member_id(),
            alarm: endpoint::alarm_name(a.alarm()).to_string(),
        })
        .collect())
}

/// Deactivates every active alarm, as `etcdctl alarm disarm`. Returns the
/// alarms that were disarmed. A CORRUPT alarm means members disagree about
/// the data: disarming it hides that, so it needs `allow_corrupt` (nothing
/// is disarmed otherwise).
pub async fn alarm_disarm(
    client: &mut Client,
    allow_corrupt: bool,
) -> Result<Vec<Alarm>, CtlError> {
    let r = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .map_err(CtlError::on("alarm list"))?;
    if !allow_corrupt {
        if let Some(a) = r.alarms().iter().find(|a| a.alarm() == AlarmType::Corrupt) {
            return Err(CtlError::Refused(format!(
                "member {:x} raised CORRUPT: its data differs from the others'. Find out why (endpoint hashkv) before disarming; to disarm anyway, force it",
                a.member_id()
            )));
        }
    }
    let mut disarmed = Vec::new();
    for a in r.alarms() {
        tracing::info!(
            member = %format!("{:x}", a.member_id()),
            alarm = endpoint::alarm_name(a.alarm()),
            "disarm alarm"
        );
        let mut opts = AlarmOptions::new();
        opts.with_member(a.member_id());
        client
            .alarm(AlarmAction::Deactivate, a.alarm(), Some(opts))
            .await
            .map_err(CtlError::on(format!(
                "disarm {} on member {:x}",
                endpoint::alarm_name(a.alarm()),
                a.member_id()
            )))?;
        disarmed.push(Alarm {
            member_id: a.member_id(),
            alarm: endpoint::alarm_name(a.alarm()).to_string(),
        });
    }
    Ok(disarmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_with_hash(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.extend_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref());
        v
    }

    #[test]
    fn trailing_hash_accepts_any_chunking() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let stream = stream_with_hash(&data);
        for chunk in [1, 7, 31, 32, 33, 4096, 10_000] {
            let mut t = TrailingSha256::new();
            stream.chunks(chunk).for_each(|c| t.update(c));
            let (size, hash) = t.finish().unwrap();
            assert_eq!(size, stream.len() as u64);
            assert_eq!(hash, hex(&stream[data.len()..]));
        }
    }

    #[test]
    fn trailing_hash_rejects_corruption_and_truncation() {
        let mut stream = stream_with_hash(b"some database bytes");
        stream[3] ^= 1;
        let mut t = TrailingSha256::new();
        t.update(&stream);
        assert!(t.finish().unwrap_err().contains("sha256 mismatch"));
        let mut t = TrailingSha256::new();
        t.update(b"short");
        assert!(t.finish().unwrap_err().contains("too short"));
    }
}
