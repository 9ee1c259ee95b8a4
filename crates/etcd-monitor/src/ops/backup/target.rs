//! Where backups are kept: a local directory (files 0600, written as
//! `.part` and renamed) or S3-compatible object storage (multipart uploads
//! of 5 MiB parts, one in flight while the next fills: memory stays
//! bounded whatever the snapshot's size).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::io::AsyncWriteExt;

use crate::config::backup::{Compression, S3Config};
use crate::ops::CtlError;

/// Bytes read from a file per step, and the size of a multipart part.
const CHUNK: usize = 1 << 20;
/// S3's smallest part (but the last): memory stays low, and an upload of
/// 5 MiB parts still reaches 50 GiB within S3's 10,000 parts.
const PART: usize = 5 << 20;

/// A backup target.
#[derive(Debug, Clone)]
pub enum Target {
    /// A directory.
    Local(PathBuf),
    /// A bucket and a key prefix (empty, or ending in `/`).
    S3 {
        /// The client.
        store: Arc<AmazonS3>,
        /// `s3://bucket/prefix`, for people.
        url: String,
        /// The key prefix.
        prefix: String,
    },
}

/// `(bytes, hex sha256)` of what was written or read.
pub type Digest = (u64, String);

impl Target {
    /// The target named by `target` (a directory or `s3://bucket/prefix`).
    pub fn open(target: &str, s3: Option<&S3Config>) -> Result<Target, CtlError> {
        let Some(rest) = target.strip_prefix("s3://") else {
            return Ok(Target::Local(PathBuf::from(target)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(CtlError::Invalid(format!(
                "{target}: s3://BUCKET/prefix needs a bucket"
            )));
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let settings = s3.cloned().unwrap_or_default();
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..Default::default()
            })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120)),
            );
        if let Some(e) = &settings.endpoint {
            b = b
                .with_endpoint(e.trim_end_matches('/'))
                .with_allow_http(e.starts_with("http://"));
        }
        if let Some(r) = &settings.region {
            b = b.with_region(r);
        }
        if let Some(file) = &settings.credentials_file {
            let profile = settings.profile.as_deref().unwrap_or("default");
            let creds = read_credentials(file, profile)?;
            b = b
                .with_access_key_id(creds.0)
                .with_secret_access_key(creds.1);
            if let Some(token) = creds.2 {
                b = b.with_token(token);
            }
        }
        let store = b
            .build()
            .map_err(|e| CtlError::Invalid(format!("{target}: {e}")))?;
        Ok(Target::S3 {
            store: Arc::new(store),
            url: format!("s3://{bucket}/{prefix}"),
            prefix,
        })
    }

    /// `s3://bucket/prefix/` or the directory.
    pub fn describe(&self) -> String {
        match self {
            Target::Local(dir) => dir.display().to_string(),
            Target::S3 { url, .. } => url.clone(),
        }
    }

    /// Where `name` is, for people.
    pub fn location(&self, name: &str) -> String {
        match self {
            Target::Local(dir) => dir.join(name).display().to_string(),
            Target::S3 { url, .. } => format!("{url}{name}"),
        }
    }

    fn key(prefix: &str, name: &str) -> ObjectPath {
        ObjectPath::from(format!("{prefix}{name}"))
    }

    fn s3_error(&self, what: &str, name: &str, e: object_store::Error) -> CtlError {
        CtlError::Invalid(format!("{what} {}: {e}", self.location(name)))
    }

    /// The names directly in the target starting with `start`.
    pub async fn list(&self, start: &str) -> Result<Vec<String>, CtlError> {
        match self {
            Target::Local(dir) => {
                let entries = match std::fs::read_dir(dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(source) => {
                        return Err(CtlError::Io {
                            what: "cannot list",
                            path: dir.display().to_string(),
                            source,
                        });
                    }
                };
                Ok(entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with(start))
                    .collect())
            }
            Target::S3 { store, prefix, .. } => {
                let mut out = Vec::new();
                let mut list = store.list(Some(&ObjectPath::from(prefix.trim_end_matches('/'))));
                while let Some(meta) = list.next().await {
                    let meta = meta.map_err(|e| self.s3_error("cannot list", "", e))?;
                    let key = meta.location.as_ref();
                    if let Some(name) = key.strip_prefix(prefix.as_str()) {
                        if !name.contains('/') && name.starts_with(start) {
                            out.push(name.to_string());
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    /// Writes the file `src` as `name`, compressed as asked, streaming;
    /// returns the size and sha256 of what was stored.
    pub async fn put_file(
        &self,
        name: &str,
        src: &Path,
        compression: Compression,
    ) -> Result<Digest, CtlError> {
        let mut input = std::fs::File::open(src).map_err(|source| CtlError::Io {
            what: "cannot read",
            path: src.display().to_string(),
            source,
        })?;
        let mut out = Sink::new(self, name).await?;
        match copy_into(&mut out, &mut input, src, compression).await {
            Ok(()) => out.finish().await,
            Err(e) => {
                out.abort().await;
                Err(e)
            }
        }
    }

    /// Writes a small object (a manifest) as `name`.
    pub async fn put_small(&self, name: &str, bytes: &[u8]) -> Result<(), CtlError> {
        let mut out = Sink::new(self, name).await?;
        out.write(bytes).await?;
        out.finish().await.map(|_| ())
    }

    /// Reads a small object (a manifest).
    pub async fn get_small(&self, name: &str) -> Result<Vec<u8>, CtlError> {
        match self {
            Target::Local(dir) => {
                let path = dir.join(name);
                std::fs::read(&path).map_err(|source| CtlError::Io {
                    what: "cannot read",
                    path: path.display().to_string(),
                    source,
                })
            }
            Target::S3 { store, prefix, .. } => {
                let got = store
                    .get(&Self::key(prefix, name))
                    .await
                    .map_err(|e| self.s3_error("cannot read", name, e))?;
                got.bytes()
                    .await
                    .map(|b| b.to_vec())
                    .map_err(|e| self.s3_error("cannot read", name, e))
            }
        }
    }

    /// A local file holding `name`'s bytes, and their size and sha256:
    /// the file itself for a local target, else a copy downloaded (streamed)
    /// into `staging`.
    pub async fn fetch(&self, name: &str, staging: &Path) -> Result<(PathBuf, Digest), CtlError> {
        match self {
            Target::Local(dir) => {
                let path = dir.join(name);
                let digest = sha256_file(&path)?;
                Ok((path, digest))
            }
            Target::S3 { store, prefix, .. } => {
                let path = staging.join(name);
                let mut file = super::create_private(&path).await?;
                let got = store
                    .get(&Self::key(prefix, name))
                    .await
                    .map_err(|e| self.s3_error("cannot download", name, e))?;
                let mut stream = got.into_stream();
                let mut hash = Hasher::default();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| self.s3_error("cannot download", name, e))?;
                    hash.update(&chunk);
                    file.write_all(&chunk)
                        .await
                        .map_err(|source| CtlError::Io {
                            what: "cannot write",
                            path: path.display().to_string(),
                            source,
                        })?;
                }
                file.flush().await.map_err(|source| CtlError::Io {
                    what: "cannot write",
                    path: path.display().to_string(),
                    source,
                })?;
                Ok((path, hash.finish()))
            }
        }
    }

    /// Removes `name`; one that is gone already is not an error.
    pub async fn delete(&self, name: &str) -> Result<(), CtlError> {
        match self {
            Target::Local(dir) => match std::fs::remove_file(dir.join(name)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(CtlError::Io {
                    what: "cannot remove",
                    path: dir.join(name).display().to_string(),
                    source,
                }),
            },
            Target::S3 { store, prefix, .. } => {
                match store.delete(&Self::key(prefix, name)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(self.s3_error("cannot remove", name, e)),
                }
            }
        }
    }
}

/// Copies `input` into `out`, compressed as asked.
async fn copy_into(
    out: &mut Sink<'_>,
    input: &mut std::fs::File,
    src: &Path,
    compression: Compression,
) -> Result<(), CtlError> {
    let mut encoder = match compression {
        Compression::Zstd => Some(
            zstd::stream::write::Encoder::new(Vec::with_capacity(CHUNK), 3)
                .map_err(|e| CtlError::Invalid(format!("cannot start zstd compression: {e}")))?,
        ),
        Compression::None => None,
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = input.read(&mut buf).map_err(|source| CtlError::Io {
            what: "cannot read",
            path: src.display().to_string(),
            source,
        })?;
        if n == 0 {
            break;
        }
        match encoder.as_mut() {
            Some(enc) => {
                enc.write_all(&buf[..n])
                    .map_err(|e| CtlError::Invalid(format!("zstd compression failed: {e}")))?;
                let pending = std::mem::take(enc.get_mut());
                out.write(&pending).await?;
            }
            None => out.write(&buf[..n]).await?,
        }
    }
    if let Some(enc) = encoder {
        let rest = enc
            .finish()
            .map_err(|e| CtlError::Invalid(format!("zstd compression failed: {e}")))?;
        out.write(&rest).await?;
    }
    Ok(())
}

/// The sha256 of a stream, as it goes by.
pub struct Hasher {
    ctx: aws_lc_rs::digest::Context,
    size: u64,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher {
            ctx: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
            size: 0,
        }
    }
}

impl Hasher {
    /// The next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        self.ctx.update(bytes);
    }

    /// Size and hex digest.
    pub fn finish(self) -> Digest {
        let d = self.ctx.finish();
        (
            self.size,
            d.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
        )
    }
}

/// Size and sha256 of a file, read in chunks.
pub fn sha256_file(path: &Path) -> Result<Digest, CtlError> {
    let io = |source| CtlError::Io {
        what: "cannot read",
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut hash = Hasher::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(hash.finish());
        }
        hash.update(&buf[..n]);
    }
}

/// An object being written: a `.part` file renamed at the end, or a
/// multipart upload completed at the end. [`Sink::abort`] gives up; one
/// dropped unfinished leaves no part file, but an upload can only be
/// aborted by a request (docs/backup.md: a lifecycle rule for those).
enum Sink<'a> {
    Local {
        file: tokio::fs::File,
        part: super::super::maintenance::PartFile,
        target: PathBuf,
        hash: Hasher,
    },
    S3 {
        upload: Option<WriteMultipart>,
        target: &'a Target,
        name: String,
        hash: Hasher,
    },
}

impl<'a> Sink<'a> {
    async fn new(target: &'a Target, name: &str) -> Result<Sink<'a>, CtlError> {
        match target {
            Target::Local(dir) => {
                super::private_dir(dir)?;
                let path = dir.join(name);
                let part = super::super::maintenance::PartFile::new(&path);
                let _ = std::fs::remove_file(&part.path);
                let file = super::create_private(&part.path).await?;
                Ok(Sink::Local {
                    file,
                    part,
                    target: path,
                    hash: Hasher::default(),
                })
            }
            Target::S3 { store, prefix, .. } => {
                let upload = store
                    .put_multipart(&Target::key(prefix, name))
                    .await
                    .map_err(|e| target.s3_error("cannot start uploading", name, e))?;
                Ok(Sink::S3 {
                    upload: Some(WriteMultipart::new_with_chunk_size(upload, PART)),
                    target,
                    name: name.to_string(),
                    hash: Hasher::default(),
                })
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), CtlError> {
        match self {
            Sink::Local {
                file, part, hash, ..
            } => {
                hash.update(bytes);
                file.write_all(bytes).await.map_err(|source| CtlError::Io {
                    what: "cannot write",
                    path: part.path.display().to_string(),
                    source,
                })
            }
            Sink::S3 {
                upload,
                target,
                name,
                hash,
            } => {
                let Some(up) = upload.as_mut() else {
                    return Ok(());
                };
                hash.update(bytes);
                // At most one part in flight besides the one filling.
                if let Err(e) = up.wait_for_capacity(1).await {
                    if let Some(up) = upload.take() {
                        let _ = up.abort().await;
                    }
                    return Err(target.s3_error("cannot upload", name, e));
                }
                up.write(bytes);
                Ok(())
            }
        }
    }

    /// Gives up: a local part file is removed (when dropped), an upload
    /// is aborted so the server drops its parts.
    async fn abort(self) {
        if let Sink::S3 {
            upload: Some(up), ..
        } = self
        {
            let _ = up.abort().await;
        }
    }

    async fn finish(self) -> Result<Digest, CtlError> {
        match self {
            Sink::Local {
                mut file,
                part,
                target,
                hash,
            } => {
                let io = |what, source| CtlError::Io {
                    what,
                    path: part.path.display().to_string(),
                    source,
                };
                file.flush().await.map_err(|e| io("cannot write", e))?;
                file.sync_all().await.map_err(|e| io("cannot sync", e))?;
                drop(file);
                part.commit(&target, true).map_err(|source| CtlError::Io {
                    what: "cannot move into place",
                    path: target.display().to_string(),
                    source,
                })?;
                Ok(hash.finish())
            }
            Sink::S3 {
                upload,
                target,
                name,
                hash,
            } => {
                let Some(up) = upload else {
                    return Err(CtlError::Invalid(format!(
                        "upload of {} was aborted",
                        target.location(&name)
                    )));
                };
                // A failed completion aborts the upload itself.
                up.finish()
                    .await
                    .map_err(|e| target.s3_error("cannot finish uploading", &name, e))?;
                Ok(hash.finish())
            }
        }
    }
}

/// `(access key id, secret, session token)` of `profile` in an AWS shared
/// credentials file. Errors name the file and never show values.
pub fn read_credentials(
    file: &Path,
    profile: &str,
) -> Result<(String, String, Option<String>), CtlError> {
    let text = std::fs::read_to_string(file).map_err(|source| CtlError::Io {
        what: "cannot read the S3 credentials file",
        path: file.display().to_string(),
        source,
    })?;
    let mut section = String::new();
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().trim_start_matches("profile ").trim().to_string();
            continue;
        }
        if section != profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    match (id, secret) {
        (Some(id), Some(secret)) => Ok((id, secret, token)),
        _ => Err(CtlError::Invalid(format!(
            "{}: profile [{profile}] needs aws_access_key_id and aws_secret_access_key",
            file.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_file_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("credentials");
        std::fs::write(
            &f,
            "# comment\n[default]\naws_access_key_id = AK1\naws_secret_access_key=S1\n\n[profile backup]\naws_access_key_id=AK2\naws_secret_access_key = S2\naws_session_token = T2\n",
        )
        .unwrap();
        assert_eq!(
            read_credentials(&f, "default").unwrap(),
            ("AK1".into(), "S1".into(), None)
        );
        assert_eq!(
            read_credentials(&f, "backup").unwrap(),
            ("AK2".into(), "S2".into(), Some("T2".into()))
        );
        let e = read_credentials(&f, "other").unwrap_err().to_string();
        assert!(e.contains("[other]") && !e.contains("S1"), "{e}");
    }
}
