//! Certificate expiry: each member's serving certificate, read from a TLS
//! handshake with its client endpoint, and the configured client
//! certificate and CA bundle (`clusters[].tls`), read from their files.
//!
//! The handshake only reads: it trusts whatever the member presents (an
//! expired or foreign certificate is exactly what must be reported), so it
//! sends no client certificate and no request, and drops the connection as
//! soon as the certificate is in hand.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;

use crate::config::ClusterConfig;

/// Serving certificates are read again after this long (a handshake per
/// member); the configured files every round (a file read each).
pub const SERVING_RECHECK: Duration = Duration::from_secs(3600);

/// Whose certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CertificateSource {
    /// A member's serving certificate (its client endpoint's TLS handshake).
    Serving,
    /// `clusters[].tls.cert_file`: the monitor's client certificate.
    Client,
    /// `clusters[].tls.ca_file`: a CA the monitor trusts for the members.
    Ca,
}

impl CertificateSource {
    /// For people: "serving certificate", "client certificate", "CA certificate".
    pub fn describe(self) -> &'static str {
        match self {
            CertificateSource::Serving => "serving certificate",
            CertificateSource::Client => "client certificate",
            CertificateSource::Ca => "CA certificate",
        }
    }
}

/// One certificate and when it expires.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CertificateObservation {
    /// Whose certificate.
    pub source: CertificateSource,
    /// Where it was read: the member's endpoint, or the file.
    pub location: String,
    /// The member presenting it (serving certificates).
    pub member: Option<String>,
    /// Subject, as `CN=...` (RFC 4514).
    pub subject: Option<String>,
    /// Issuer.
    pub issuer: Option<String>,
    /// End of validity (`notAfter`), ms since the epoch.
    pub not_after_ms: Option<i64>,
    /// When it was read, ms since the epoch.
    pub checked_at_ms: i64,
    /// Why it could not be read.
    pub error: Option<String>,
}

impl CertificateObservation {
    /// Days of validity left at `now_ms` (negative once expired).
    pub fn days_left(&self, now_ms: i64) -> Option<f64> {
        self.not_after_ms
            .map(|end| (end - now_ms) as f64 / 86_400_000.0)
    }

    /// "expires in 5.0 days" or "expired 1.0 days ago", for `days` left.
    pub fn expiry_words(days: f64) -> String {
        if days < 0.0 {
            format!("expired {:.1} days ago", -days)
        } else {
            format!("expires in {days:.1} days")
        }
    }

    /// "member m1's serving certificate (CN=..., https://...)", for messages.
    pub fn describe(&self) -> String {
        let whose = match (&self.member, self.source) {
            (Some(m), CertificateSource::Serving) => format!("member {m}'s serving certificate"),
            (_, s) => s.describe().to_string(),
        };
        match &self.subject {
            Some(subject) => format!("{whose} ({subject}, {})", self.location),
            None => format!("{whose} ({})", self.location),
        }
    }
}

/// Reads certificates for one cluster, keeping the serving certificates
/// between rounds ([`SERVING_RECHECK`]). The handshakes run in their own
/// task, so a frozen member (whose handshake waits for the timeout) never
/// delays a round: a round takes what the last finished reading found.
#[derive(Default)]
pub struct CertificateWatch {
    serving: Vec<CertificateObservation>,
    /// The reading under way.
    pending: Option<tokio::task::JoinHandle<Vec<CertificateObservation>>>,
    /// When the last reading started, and of which endpoints.
    started: Option<(Instant, Vec<(String, String)>)>,
}

/// A member whose certificate could not be read is tried again after this long.
pub const SERVING_RETRY: Duration = Duration::from_secs(60);

impl CertificateWatch {
    /// The cluster's certificates now: the configured files, read again,
    /// and the serving certificates of `members` (`(name, endpoint)`), read
    /// again when older than [`SERVING_RECHECK`], when the members change,
    /// or [`SERVING_RETRY`] after a member could not be read. `wait`: wait
    /// for a reading under way (a one-shot check) rather than take the last
    /// one (the daemon). Plain-HTTP endpoints have none.
    pub async fn observe(
        &mut self,
        cluster: &ClusterConfig,
        members: &[(String, String)],
        wait: bool,
    ) -> Vec<CertificateObservation> {
        let https: Vec<(String, String)> = members
            .iter()
            .filter(|(_, ep)| ep.starts_with("https://"))
            .cloned()
            .collect();
        if self.pending.as_ref().is_some_and(|p| p.is_finished()) {
            self.finish().await;
        }
        let failed = self.serving.iter().any(|c| c.error.is_some());
        let due = match &self.started {
            Some((at, of)) => {
                at.elapsed() >= SERVING_RECHECK
                    || *of != https
                    || (failed && at.elapsed() >= SERVING_RETRY)
            }
            None => true,
        };
        if due && self.pending.is_none() {
            let server_name = cluster.tls.as_ref().and_then(|t| t.server_name.clone());
            let timeout = cluster.dial_timeout.max(cluster.request_timeout);
            let targets = https.clone();
            self.pending = Some(tokio::spawn(async move {
                let reads = targets.iter().map(|(name, endpoint)| {
                    serving(endpoint, name, server_name.as_deref(), timeout)
                });
                futures_util::future::join_all(reads).await
            }));
            self.started = Some((Instant::now(), https));
        }
        if wait && self.pending.is_some() {
            self.finish().await;
        }
        let mut out = configured(cluster);
        out.extend(self.serving.iter().cloned());
        out
    }

    /// Takes the finished reading. A member that did not answer keeps what
    /// was read of it before (its certificate did not change by going away).
    async fn finish(&mut self) {
        let Some(task) = self.pending.take() else {
            return;
        };
        let fresh = task.await.unwrap_or_default();
        self.serving = fresh
            .into_iter()
            .map(|c| match &c.error {
                Some(_) => self
                    .serving
                    .iter()
                    .find(|old| old.location == c.location && old.error.is_none())
                    .cloned()
                    .unwrap_or(c),
                None => c,
            })
            .collect();
    }
}

/// The configured client certificate and CA bundle (every certificate in it).
pub fn configured(cluster: &ClusterConfig) -> Vec<CertificateObservation> {
    let Some(tls) = &cluster.tls else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (source, path) in [
        (CertificateSource::Client, tls.cert_file.as_ref()),
        (CertificateSource::Ca, tls.ca_file.as_ref()),
    ] {
        if let Some(path) = path {
            out.extend(from_file(source, path));
        }
    }
    out
}

fn from_file(source: CertificateSource, path: &Path) -> Vec<CertificateObservation> {
    let location = path.display().to_string();
    let failed = |error: String| unread(source, &location, None, error);
    let certs: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_file_iter(path).and_then(|iter| iter.collect::<Result<Vec<_>, _>>());
    match certs {
        Ok(certs) if certs.is_empty() => vec![failed("no PEM certificate in the file".into())],
        Ok(certs) => certs
            .iter()
            .map(|der| describe(source, &location, None, der))
            .collect(),
        Err(e) => vec![failed(format!("cannot read the certificate file: {e}"))],
    }
}

/// The subject, issuer and end of validity of one DER certificate.
fn describe(
    source: CertificateSource,
    location: &str,
    member: Option<&str>,
    der: &CertificateDer<'_>,
) -> CertificateObservation {
    let mut c = CertificateObservation {
        source,
        location: location.to_string(),
        member: member.filter(|m| !m.is_empty()).map(str::to_string),
        subject: None,
        issuer: None,
        not_after_ms: None,
        checked_at_ms: now_ms(),
        error: None,
    };
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok((_, cert)) => {
            c.subject = Some(cert.subject().to_string());
            c.issuer = Some(cert.issuer().to_string());
            c.not_after_ms = Some(cert.validity().not_after.timestamp() * 1000);
        }
        Err(e) => c.error = Some(format!("not an X.509 certificate: {e}")),
    }
    c
}

/// The certificate `endpoint` presents, from a handshake that trusts anything.
async fn serving(
    endpoint: &str,
    member: &str,
    server_name: Option<&str>,
    timeout: Duration,
) -> CertificateObservation {
    let source = CertificateSource::Serving;
    match tokio::time::timeout(timeout, handshake(endpoint, server_name)).await {
        Ok(Ok(der)) => describe(source, endpoint, Some(member), &der),
        Ok(Err(error)) => unread(source, endpoint, Some(member), error),
        Err(_) => unread(
            source,
            endpoint,
            Some(member),
            format!("no TLS handshake within {timeout:?}"),
        ),
    }
}

/// A certificate that could not be read, and why.
fn unread(
    source: CertificateSource,
    location: &str,
    member: Option<&str>,
    error: String,
) -> CertificateObservation {
    CertificateObservation {
        source,
        location: location.to_string(),
        member: member.filter(|m| !m.is_empty()).map(str::to_string),
        subject: None,
        issuer: None,
        not_after_ms: None,
        checked_at_ms: now_ms(),
        error: Some(error),
    }
}

async fn handshake(
    endpoint: &str,
    server_name: Option<&str>,
) -> Result<CertificateDer<'static>, String> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| format!("bad endpoint: {e}"))?;
    let host = url.host_str().ok_or("the endpoint names no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(2379);
    let name = ServerName::try_from(server_name.unwrap_or(host).to_string())
        .map_err(|e| format!("bad server name: {e}"))?;
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let seen = Arc::new(Mutex::new(None));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Record {
            seen: seen.clone(),
            provider,
        }))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    // The outcome does not matter once the certificate was seen: a member
    // that wants a client certificate ends the handshake after sending its own.
    let outcome = connector.connect(name, stream).await;
    let der = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
    match (der, outcome) {
        (Some(der), _) => Ok(der),
        (None, Err(e)) => Err(format!("TLS handshake failed: {e}")),
        (None, Ok(_)) => Err("the member presented no certificate".into()),
    }
}

/// A verifier that keeps the end-entity certificate and accepts it.
#[derive(Debug)]
struct Record {
    seen: Arc<Mutex<Option<CertificateDer<'static>>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Record {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn now_ms() -> i64 {
    crate::time::unix_ms(SystemTime::now())
}
