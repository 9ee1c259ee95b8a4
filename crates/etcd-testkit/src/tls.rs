//! Certificates for TLS test clusters: a private CA, a server certificate for
//! `localhost` / `127.0.0.1` and a client certificate, all written as PEM files.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::Error;

/// PEM files of a generated test PKI.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA certificate that signed both the server and the client certificate.
    pub ca_file: PathBuf,
    /// Server certificate (SAN `localhost`, `127.0.0.1`, `::1`).
    pub server_cert_file: PathBuf,
    /// Server private key.
    pub server_key_file: PathBuf,
    /// Client certificate (common name `root`, usable for client-cert auth).
    pub client_cert_file: PathBuf,
    /// Client private key.
    pub client_key_file: PathBuf,
}

impl TlsFiles {
    /// Generates a CA, a server and a client certificate into `dir`.
    pub fn generate(dir: &Path) -> Result<Self, Error> {
        Self::generate_valid_for(dir, None, None)
    }

    /// Like [`Self::generate`], with the server and the client certificate
    /// valid for only `server_validity` and `client_validity` from now (`None`: rcgen's
    /// default, far in the future), for tests of expiry warnings.
    pub fn generate_valid_for(
        dir: &Path,
        server_validity: Option<std::time::Duration>,
        client_validity: Option<std::time::Duration>,
    ) -> Result<Self, Error> {
        let until = |d: std::time::Duration| {
            time::OffsetDateTime::now_utc() + time::Duration::seconds(d.as_secs() as i64)
        };
        let tls_err = |e: rcgen::Error| Error::Tls(e.to_string());

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name = name("etcd-testkit CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(tls_err)?)
            .map_err(tls_err)?;

        let mut server = CertificateParams::new(vec!["localhost".to_string()]).map_err(tls_err)?;
        server.distinguished_name = name("etcd-testkit server");
        server
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        server
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        // etcd also uses its server certificate as a client certificate towards peers.
        server.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if let Some(d) = server_validity {
            server.not_after = until(d);
        }
        let server_key = KeyPair::generate().map_err(tls_err)?;
        let server_cert = server.signed_by(&server_key, &ca).map_err(tls_err)?;

        // The common name doubles as the etcd user name when auth is on.
        let mut client = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        client.distinguished_name = name("root");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if let Some(d) = client_validity {
            client.not_after = until(d);
        }
        let client_key = KeyPair::generate().map_err(tls_err)?;
        let client_cert = client.signed_by(&client_key, &ca).map_err(tls_err)?;

        let files = TlsFiles {
            ca_file: dir.join("ca.pem"),
            server_cert_file: dir.join("server.pem"),
            server_key_file: dir.join("server-key.pem"),
            client_cert_file: dir.join("client.pem"),
            client_key_file: dir.join("client-key.pem"),
        };
        write(&files.ca_file, &ca.pem())?;
        write(&files.server_cert_file, &server_cert.pem())?;
        write(&files.server_key_file, &server_key.serialize_pem())?;
        write(&files.client_cert_file, &client_cert.pem())?;
        write(&files.client_key_file, &client_key.serialize_pem())?;
        Ok(files)
    }

    /// TLS options for etcd-client that trust the CA and present the client certificate.
    pub fn client_tls(&self) -> Result<etcd_client::TlsOptions, Error> {
        Ok(self
            .client_tls_without_identity()?
            .identity(etcd_client::Identity::from_pem(
                read(&self.client_cert_file)?,
                read(&self.client_key_file)?,
            )))
    }

    /// TLS options that trust the CA but present no client certificate.
    pub fn client_tls_without_identity(&self) -> Result<etcd_client::TlsOptions, Error> {
        Ok(etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&self.ca_file)?)))
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn write(path: &Path, pem: &str) -> Result<(), Error> {
    std::fs::write(path, pem).map_err(|e| Error::Io(format!("writing {}", path.display()), e))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Io(format!("reading {}", path.display()), e))
}
