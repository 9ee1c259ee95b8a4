//! TLS for the API (rustls with aws-lc-rs): the server certificate, and
//! optionally client certificates checked against `api.tls.client_ca_file`
//! (mTLS). The files are polled every `reload_interval`; a changed set is
//! loaded for new connections, and a broken one is logged and ignored, so
//! a bad rotation never takes the API down.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::ApiTlsConfig;

/// The API's current TLS configuration.
#[derive(Debug)]
pub struct TlsSetup {
    files: ApiTlsConfig,
    current: ArcSwap<ServerConfig>,
}

impl TlsSetup {
    /// Loads the certificate, key and client CA. The error names the key
    /// and file.
    pub fn load(files: &ApiTlsConfig) -> Result<TlsSetup, String> {
        Ok(TlsSetup {
            files: files.clone(),
            current: ArcSwap::from_pointee(build(files)?),
        })
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Polls the files until `token` is cancelled, reloading on change.
    pub async fn watch(self: Arc<Self>, token: CancellationToken) {
        let mut seen = fingerprint(&self.files);
        let mut tick = tokio::time::interval(self.files.reload_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = fingerprint(&self.files);
            if now == seen {
                continue;
            }
            seen = now;
            match build(&self.files) {
                Ok(config) => {
                    self.current.store(Arc::new(config));
                    tracing::info!(cert = %self.files.cert_file.display(), "API TLS files reloaded");
                }
                Err(e) => tracing::error!(
                    "API TLS files changed but cannot be used ({e}); keeping the previous ones"
                ),
            }
        }
    }
}

type Fingerprint = Vec<Option<(SystemTime, u64)>>;

fn fingerprint(files: &ApiTlsConfig) -> Fingerprint {
    let stat = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    let mut out = vec![stat(&files.cert_file), stat(&files.key_file)];
    if let Some(ca) = &files.client_ca_file {
        out.push(stat(ca));
    }
    out
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certificates(key: &str, path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{key} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

fn build(files: &ApiTlsConfig) -> Result<ServerConfig, String> {
    let chain = certificates("api.tls.cert_file", &files.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| {
        format!(
            "api.tls.key_file {}: no usable PEM private key ({e})",
            files.key_file.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("api.tls.client_ca_file", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("api.tls.client_ca_file {}: {e}", ca.display()))?;
            }
            // Certificates are optional: callers may use a bearer token instead.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("api.tls.client_ca_file {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "api.tls.cert_file and key_file ({}, {}) do not go together: {e}",
            files.cert_file.display(),
            files.key_file.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The subject CN of the verified client certificate of a connection.
pub fn client_cn(conn: &rustls::ServerConnection) -> Option<String> {
    let cert = conn.peer_certificates()?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
