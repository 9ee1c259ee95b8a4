//! Backups proven by restore.
//!
//! A backup is a snapshot streamed from one voting member (checked against
//! the sha256 etcd appends), written to a [`Target`] (compressed with zstd
//! when asked) with a manifest beside it (`NAME.manifest.json`). The
//! manifest records the stored file's size and sha256 and what the cluster
//! held at the snapshot's revision, read from the same member right after
//! the snapshot: the revision, the number of keys and etcd's `HashKV` of
//! the key-value history at that revision.
//!
//! A [restore drill](verify) fetches the stored file, checks it against the
//! manifest, restores it into a throwaway member on free loopback ports and
//! compares the member's revision, key count and `HashKV` with the
//! manifest: a backup is `verified` only when all agree.

pub mod retention;
mod target;

use std::path::{Path, PathBuf};
use std::time::Instant;

use etcd_client::{Client, GetOptions};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use target::{Digest, Hasher, Target, read_credentials, sha256_file};

use crate::config::backup::Compression;
use crate::ops::CtlError;
use crate::ops::restore::{ThrowawayMember, snapshot_status};

/// The manifest's format version.
pub const MANIFEST_FORMAT: u32 = 1;
/// The manifest's name beside a backup file: `NAME` + this.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// What a backup holds, written beside it as `NAME.manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The schedule that took it (`backup.schedules[].name`), or `ctl`.
    pub schedule: String,
    /// The cluster.
    pub cluster: String,
    /// The backup file's name, beside the manifest.
    pub file: String,
    /// When the snapshot was taken (ms since epoch).
    pub created_ms: i64,
    /// The member it came from (hex id).
    pub member_id: String,
    /// That member's etcd version.
    pub etcd_version: String,
    /// `none` or `zstd`.
    pub compression: String,
    /// Bytes of the file as stored.
    pub size: u64,
    /// Hex sha256 of the file as stored.
    pub sha256: String,
    /// Bytes of the snapshot itself (uncompressed, etcd's trailing hash
    /// included).
    pub snapshot_size: u64,
    /// Hex sha256 of the snapshot's database, as etcd sent it.
    pub snapshot_sha256: String,
    /// The snapshot's revision.
    pub revision: i64,
    /// Keys at that revision (the member's count, read after the snapshot).
    pub key_count: i64,
    /// etcd's `HashKV` at that revision, from the member; absent when it
    /// could not be read (see `hashkv_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashkv: Option<u32>,
    /// The compacted revision `hashkv` starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact_revision: Option<i64>,
    /// Why `hashkv` is absent (the revision was compacted meanwhile, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashkv_error: Option<String>,
}

/// The result of a restore drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    /// Whether the backup restored and matched its manifest.
    pub verified: bool,
    /// When the drill started (ms since epoch).
    pub at_ms: i64,
    /// How long it took, ms.
    pub duration_ms: u64,
    /// Bytes of the file checked.
    pub size: u64,
    /// The restored member's revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Keys the restored member serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_count: Option<i64>,
    /// The restored member's `HashKV` at the revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashkv: Option<u32>,
    /// What did not match or failed, when not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How to take one backup.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// The schedule's name (starts the file name).
    pub schedule: String,
    /// The cluster's name (recorded).
    pub cluster: String,
    /// Compression of the stored file.
    pub compression: Compression,
    /// Where a snapshot is written first when it cannot go straight to
    /// the target (object storage, compression).
    pub staging: Option<PathBuf>,
}

/// The file name of a backup taken at `at_ms`:
/// `SCHEDULE-YYYYMMDDTHHMMSS.mmmZ.db[.zst]`.
pub fn file_name(schedule: &str, at_ms: i64, compression: Compression) -> String {
    format!("{schedule}-{}.db{}", stamp(at_ms), compression.extension())
}

/// Whether `name` is a backup file of `schedule` (as [`file_name`] makes
/// them): `SCHEDULE-` then a time stamp, not the file of a schedule whose
/// name merely starts alike (`a` and `a-b`, or `a` and `a-2`).
pub fn is_backup_of(schedule: &str, name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(schedule)
        .and_then(|r| r.strip_prefix('-'))
    else {
        return false;
    };
    let (stamp, ext) = rest.split_at(rest.len().min(20));
    let shape = stamp.bytes().enumerate().all(|(i, b)| match i {
        8 => b == b'T',
        15 => b == b'.',
        19 => b == b'Z',
        _ => b.is_ascii_digit(),
    });
    stamp.len() == 20 && shape && matches!(ext, ".db" | ".db.zst")
}

/// `YYYYMMDDTHHMMSS.mmmZ` (UTC).
fn stamp(at_ms: i64) -> String {
    let secs = at_ms.div_euclid(1000);
    let (y, m, d) = crate::config::cron::civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        at_ms.rem_euclid(1000)
    )
}

/// A private (0700) temporary directory under `staging` or the system's.
pub fn staging_dir(staging: Option<&Path>) -> Result<tempfile::TempDir, CtlError> {
    let mut b = tempfile::Builder::new();
    b.prefix("etcd-monitor-backup-");
    let dir = match staging {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|source| CtlError::Io {
                what: "cannot create the staging directory",
                path: d.display().to_string(),
                source,
            })?;
            b.tempdir_in(d)
        }
        None => b.tempdir(),
    };
    dir.map_err(|source| CtlError::Io {
        what: "cannot create a staging directory in",
        path: staging.map_or_else(
            || std::env::temp_dir().display().to_string(),
            |d| d.display().to_string(),
        ),
        source,
    })
}

/// Creates `dir` when missing, readable by its owner only.
pub(crate) fn private_dir(dir: &Path) -> Result<(), CtlError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|source| CtlError::Io {
        what: "cannot create the backup directory",
        path: dir.display().to_string(),
        source,
    })
}

/// Creates `path` (0600), failing if it exists.
pub(crate) async fn create_private(path: &Path) -> Result<tokio::fs::File, CtlError> {
    super::maintenance::create_private(path)
        .await
        .map_err(|source| CtlError::Io {
            what: "cannot create",
            path: path.display().to_string(),
            source,
        })
}

/// What a member (or a restored one) holds at `revision`: its key count
/// and `HashKV` (with its compacted revision), or why the hash could not be
/// read.
pub struct Fingerprint {
    /// Keys at the revision.
    pub key_count: i64,
    /// `HashKV` at the revision.
    pub hashkv: Result<(u32, i64), String>,
}

/// Reads [`Fingerprint`] from the member `client` talks to.
pub async fn fingerprint(client: &mut Client, revision: i64) -> Result<Fingerprint, CtlError> {
    let count = client
        .get(
            vec![0u8],
            Some(
                GetOptions::new()
                    .with_from_key()
                    .with_count_only()
                    .with_serializable()
                    .with_revision(revision),
            ),
        )
        .await
        .map_err(CtlError::on(format!(
            "counting keys at revision {revision}"
        )))?
        .count();
    let hashkv = match client.hash_kv(revision).await {
        Ok(h) => Ok((h.hash(), h.compact_version())),
        Err(e) => Err(crate::connection::cause_chain(&e)),
    };
    Ok(Fingerprint {
        key_count: count,
        hashkv,
    })
}

/// Takes one backup from the member `client` talks to (`endpoint`, for
/// messages) into `target`: streams the snapshot (straight into the target
/// directory when it is local and uncompressed, else into a private staging
/// directory), reads its revision, reads the member's key count and
/// `HashKV` at that revision, stores the file and then its manifest.
pub async fn save(
    client: &mut Client,
    endpoint: &str,
    target: &Target,
    opts: &SaveOptions,
) -> Result<Manifest, CtlError> {
    let created_ms = crate::time::now_ms();
    let name = file_name(&opts.schedule, created_ms, opts.compression);
    let status = client
        .status()
        .await
        .map_err(CtlError::on(format!("status of {endpoint}")))?;
    let member_id = status.header().map_or(0, |h| h.member_id());
    let staging = staging_dir(opts.staging.as_deref())?;
    let direct = matches!(target, Target::Local(_)) && opts.compression == Compression::None;
    let raw = match target {
        Target::Local(dir) if direct => {
            private_dir(dir)?;
            dir.join(&name)
        }
        _ => staging.path().join("snapshot.db"),
    };
    let info = super::maintenance::snapshot_save(client, endpoint, &raw, false).await?;
    // From here on a direct file is ours to remove if anything fails.
    let written = Written {
        path: direct.then(|| raw.clone()),
    };
    let snap = {
        let raw = raw.clone();
        tokio::task::spawn_blocking(move || snapshot_status(&raw))
            .await
            .map_err(|e| CtlError::Invalid(format!("snapshot status: {e}")))??
    };
    let print = fingerprint(client, snap.revision).await?;
    let (size, sha256) = if direct {
        (info.size, info.file_sha256.clone())
    } else {
        target.put_file(&name, &raw, opts.compression).await?
    };
    drop(staging);
    let (hashkv, compact_revision, hashkv_error) = match print.hashkv {
        Ok((h, c)) => (Some(h), Some(c), None),
        Err(e) => (None, None, Some(e)),
    };
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        schedule: opts.schedule.clone(),
        cluster: opts.cluster.clone(),
        file: name.clone(),
        created_ms,
        member_id: format!("{member_id:x}"),
        etcd_version: status.version().to_string(),
        compression: opts.compression.as_str().into(),
        size,
        sha256,
        snapshot_size: info.size,
        snapshot_sha256: info.sha256,
        revision: snap.revision,
        key_count: print.key_count,
        hashkv,
        compact_revision,
        hashkv_error,
    };
    let body = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| CtlError::Invalid(format!("encoding the manifest: {e}")))?;
    if let Err(e) = target
        .put_small(&format!("{name}{MANIFEST_SUFFIX}"), &body)
        .await
    {
        // A file without its manifest is not a backup: remove it.
        let _ = target.delete(&name).await;
        return Err(e);
    }
    written.keep();
    tracing::info!(target = %target.location(&name), size, revision = snap.revision, "backup saved");
    Ok(manifest)
}

/// A backup file written straight into a local target: removed when
/// dropped before [`Written::keep`].
struct Written {
    path: Option<PathBuf>,
}

impl Written {
    fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Reads the manifest of the backup `name` in `target`.
pub async fn read_manifest(target: &Target, name: &str) -> Result<Manifest, CtlError> {
    let bytes = target
        .get_small(&format!("{name}{MANIFEST_SUFFIX}"))
        .await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        CtlError::Invalid(format!(
            "{}{MANIFEST_SUFFIX}: not a backup manifest ({e})",
            target.location(name)
        ))
    })
}

/// A local, uncompressed copy of the backup described by `manifest`,
/// checked against the manifest's size and sha256: the stored file itself
/// for an uncompressed local backup, else a file in `staging`.
pub async fn fetch_checked(
    target: &Target,
    manifest: &Manifest,
    staging: &Path,
) -> Result<PathBuf, CtlError> {
    let (path, (size, sha)) = target.fetch(&manifest.file, staging).await?;
    if size != manifest.size || sha != manifest.sha256 {
        return Err(CtlError::Invalid(format!(
            "{} does not match its manifest: {size} bytes with sha256 {sha}, the manifest says {} bytes with sha256 {}",
            target.location(&manifest.file),
            manifest.size,
            manifest.sha256
        )));
    }
    match manifest.compression.as_str() {
        "none" => Ok(path),
        "zstd" => {
            let out = staging.join("restored.db");
            let (src, dst) = (path.clone(), out.clone());
            tokio::task::spawn_blocking(move || decompress(&src, &dst))
                .await
                .map_err(|e| CtlError::Invalid(format!("decompressing: {e}")))??;
            if path.starts_with(staging) {
                let _ = std::fs::remove_file(&path);
            }
            Ok(out)
        }
        other => Err(CtlError::Invalid(format!(
            "{}: unknown compression {other:?}",
            target.location(&manifest.file)
        ))),
    }
}

fn decompress(src: &Path, dst: &Path) -> Result<(), CtlError> {
    let input = std::fs::File::open(src).map_err(|source| CtlError::Io {
        what: "cannot read",
        path: src.display().to_string(),
        source,
    })?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut output = options.open(dst).map_err(|source| CtlError::Io {
        what: "cannot create",
        path: dst.display().to_string(),
        source,
    })?;
    zstd::stream::copy_decode(input, &mut output).map_err(|e| {
        CtlError::Invalid(format!("{}: zstd decompression failed: {e}", src.display()))
    })?;
    output.sync_all().map_err(|source| CtlError::Io {
        what: "cannot sync",
        path: dst.display().to_string(),
        source,
    })
}

/// The restore drill: fetches the backup, checks it against its manifest,
/// restores it into a throwaway member and compares revision, key count
/// and `HashKV`. Never fails: what went wrong is the verification's error.
pub async fn verify(target: &Target, manifest: &Manifest, staging: Option<&Path>) -> Verification {
    let started = Instant::now();
    let mut v = Verification {
        verified: false,
        at_ms: crate::time::now_ms(),
        duration_ms: 0,
        size: manifest.size,
        revision: None,
        key_count: None,
        hashkv: None,
        error: None,
    };
    if let Err(e) = drill(target, manifest, staging, &mut v).await {
        v.error = Some(e.to_string());
    }
    v.duration_ms = started.elapsed().as_millis() as u64;
    v
}

async fn drill(
    target: &Target,
    manifest: &Manifest,
    staging: Option<&Path>,
    v: &mut Verification,
) -> Result<(), CtlError> {
    let dir = staging_dir(staging)?;
    let file = fetch_checked(target, manifest, dir.path()).await?;
    let member = ThrowawayMember::from_snapshot(&file).await?;
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(std::time::Duration::from_secs(5))
        .with_timeout(std::time::Duration::from_secs(60));
    let mut client = Client::connect([member.client_url()], Some(opts))
        .await
        .map_err(CtlError::on("connecting to the restored member"))?;
    let revision = client
        .status()
        .await
        .map_err(CtlError::on("status of the restored member"))?
        .header()
        .map_or(0, |h| h.revision());
    v.revision = Some(revision);
    let print = fingerprint(&mut client, revision).await?;
    v.key_count = Some(print.key_count);
    let mut wrong = Vec::new();
    if revision != manifest.revision {
        wrong.push(format!(
            "revision {revision}, the manifest says {}",
            manifest.revision
        ));
    }
    if print.key_count != manifest.key_count {
        wrong.push(format!(
            "{} keys, the manifest says {}",
            print.key_count, manifest.key_count
        ));
    }
    match (&print.hashkv, manifest.hashkv) {
        (Ok((hash, compact)), Some(expected)) => {
            v.hashkv = Some(*hash);
            if Some(*compact) != manifest.compact_revision {
                wrong.push(format!(
                    "HashKV starts at compacted revision {compact}, the manifest's at {}",
                    manifest.compact_revision.unwrap_or(0)
                ));
            } else if *hash != expected {
                wrong.push(format!("HashKV {hash}, the manifest says {expected}"));
            }
        }
        (Ok((hash, _)), None) => v.hashkv = Some(*hash),
        (Err(e), _) => wrong.push(format!("HashKV of the restored member failed: {e}")),
    }
    if wrong.is_empty() {
        v.verified = true;
        Ok(())
    } else {
        Err(CtlError::Invalid(format!(
            "restored, but does not match: {}",
            wrong.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_by_time() {
        assert_eq!(
            file_name("nightly", 0, Compression::None),
            "nightly-19700101T000000.000Z.db"
        );
        // 2024-02-29 23:59:59.999 UTC
        assert_eq!(
            file_name("n", 1_709_251_199_999, Compression::Zstd),
            "n-20240229T235959.999Z.db.zst"
        );
        assert!(is_backup_of("n", "n-20240229T235959.999Z.db.zst"));
        assert!(is_backup_of("a", &file_name("a", 5, Compression::None)));
        assert!(!is_backup_of("a", &file_name("a-b", 5, Compression::None)));
        assert!(!is_backup_of("a", &file_name("a-2", 5, Compression::None)));
        assert!(!is_backup_of(
            "a",
            "a-20240229T235959.999Z.db.manifest.json"
        ));
        assert!(!is_backup_of("a", "a-20240229T235959.999Z.db.part"));
        assert!(!is_backup_of("a", "a-../x"));
        let a = file_name("s", 1_700_000_000_000, Compression::None);
        let b = file_name("s", 1_700_000_000_001, Compression::None);
        assert!(a < b);
    }
}
