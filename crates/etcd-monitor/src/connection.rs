//! Connecting to an etcd cluster with the settings every command shares:
//! endpoints, dial and request timeouts, TLS, user and password, require-leader.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::config::ClusterConfig;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A TLS or password file could not be read.
    #[error("cluster {cluster}: cannot read {what} {path}: {source}")]
    File {
        /// Cluster name.
        cluster: String,
        /// Which setting.
        what: &'static str,
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An endpoint is not a usable URL.
    #[error("cluster {cluster}: {message}")]
    BadEndpoint {
        /// Cluster name.
        cluster: String,
        /// What is wrong.
        message: String,
    },
    /// No endpoint answered within the dial timeout.
    #[error("cluster {cluster}: no etcd endpoint reachable (tried {})", format_attempts(.attempts))]
    NoEndpointReachable {
        /// Cluster name.
        cluster: String,
        /// Each endpoint with the cause of its failure.
        attempts: Vec<(String, String)>,
    },
    /// An endpoint answered but refused the credentials.
    #[error("cluster {cluster}: {endpoint} refused the credentials of user {user:?}: {message}")]
    Auth {
        /// Cluster name.
        cluster: String,
        /// The endpoint that refused.
        endpoint: String,
        /// The user name.
        user: String,
        /// etcd's message.
        message: String,
    },
    /// Building the client failed.
    #[error("cluster {cluster}: {source}")]
    Etcd {
        /// Cluster name.
        cluster: String,
        /// The cause.
        source: etcd_client::Error,
    },
}

fn format_attempts(attempts: &[(String, String)]) -> String {
    attempts
        .iter()
        .map(|(e, cause)| format!("{e}: {cause}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Turns `host:port` into a URL (`https` when TLS is configured) and checks
/// that a URL has a scheme, a host and a port.
pub fn normalize_endpoint(raw: &str, tls: bool) -> Result<String, String> {
    let raw = raw.trim();
    let url = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("{}://{raw}", if tls { "https" } else { "http" })
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("", ""));
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "endpoint {raw:?} has scheme {scheme:?}: use http:// or https://"
        ));
    }
    let authority = rest.trim_end_matches('/');
    let (host, port) = authority.rsplit_once(':').ok_or_else(|| {
        format!("endpoint {raw:?} has no port: write it as host:port, e.g. 127.0.0.1:2379")
    })?;
    if host.is_empty() || authority.contains('/') {
        return Err(format!("endpoint {raw:?} is not host:port"));
    }
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("endpoint {raw:?} has an invalid port {port:?}"));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// The cluster's endpoints as URLs.
pub fn endpoints(cluster: &ClusterConfig) -> Result<Vec<String>, ConnectError> {
    cluster
        .endpoints
        .iter()
        .map(|e| normalize_endpoint(e, cluster.tls.is_some()))
        .collect::<Result<_, _>>()
        .map_err(|message| ConnectError::BadEndpoint {
            cluster: cluster.name.clone(),
            message,
        })
}

/// etcd-client options for `cluster`: timeouts, TLS, credentials, require-leader.
pub fn connect_options(cluster: &ClusterConfig) -> Result<ConnectOptions, ConnectError> {
    let read = |what: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ConnectError::File {
            cluster: cluster.name.clone(),
            what,
            path: path.display().to_string(),
            source,
        })
    };
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(cluster.dial_timeout)
        .with_timeout(cluster.request_timeout)
        .with_keep_alive(Duration::from_secs(10), cluster.dial_timeout)
        .with_require_leader(cluster.require_leader);
    if let Some(tls) = &cluster.tls {
        let mut t = TlsOptions::new();
        if let Some(ca) = &tls.ca_file {
            t = t.ca_certificate(Certificate::from_pem(read("tls.ca_file", ca)?));
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            t = t.identity(Identity::from_pem(
                read("tls.cert_file", cert)?,
                read("tls.key_file", key)?,
            ));
        }
        if let Some(name) = &tls.server_name {
            t = t.domain_name(name.clone());
        }
        opts = opts.with_tls(t);
    }
    if let Some(user) = &cluster.username {
        let password = match (&cluster.password, &cluster.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(file)) => {
                let text = read("password_file", file)?;
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            }
            (None, None) => String::new(),
        };
        opts = opts.with_user(user.clone(), password);
    }
    Ok(opts)
}

/// Connects to `cluster`: every endpoint is tried at once within the dial
/// timeout; the client balances over all endpoints once one answers. When
/// none answers the error names each endpoint and its cause.
pub async fn connect(cluster: &ClusterConfig) -> Result<Client, ConnectError> {
    let urls = endpoints(cluster)?;
    let opts = connect_options(cluster)?;
    let mut probes = tokio::task::JoinSet::new();
    for (i, url) in urls.iter().cloned().enumerate() {
        let opts = opts.clone();
        let dial = cluster.dial_timeout;
        probes.spawn(async move {
            let attempt = async {
                let mut client = Client::connect([url.as_str()], Some(opts)).await?;
                client.status().await?;
                Ok::<_, etcd_client::Error>(client)
            };
            let result = match tokio::time::timeout(dial, attempt).await {
                Ok(r) => r,
                Err(_) => Err(etcd_client::Error::InvalidArgs(format!(
                    "no answer within the dial timeout of {}",
                    crate::config::duration::format(&dial)
                ))),
            };
            (i, url, result)
        });
    }
    let mut failures = Vec::new();
    let mut reachable = None;
    while let Some(joined) = probes.join_next().await {
        let Ok((i, url, result)) = joined else {
            continue;
        };
        match result {
            Ok(client) => {
                reachable = Some(client);
                break;
            }
            Err(e) if is_auth_failure(&e) => {
                return Err(ConnectError::Auth {
                    cluster: cluster.name.clone(),
                    endpoint: url,
                    user: cluster.username.clone().unwrap_or_default(),
                    message: cause_chain(&e),
                });
            }
            Err(e) => failures.push((i, url, cause_chain(&e))),
        }
    }
    probes.abort_all();
    let Some(client) = reachable else {
        failures.sort();
        return Err(ConnectError::NoEndpointReachable {
            cluster: cluster.name.clone(),
            attempts: failures
                .into_iter()
                .map(|(_, url, cause)| (url, cause))
                .collect(),
        });
    };
    if urls.len() == 1 {
        return Ok(client);
    }
    Client::connect(&urls, Some(opts))
        .await
        .map_err(|source| ConnectError::Etcd {
            cluster: cluster.name.clone(),
            source,
        })
}

fn is_auth_failure(e: &etcd_client::Error) -> bool {
    // etcd answers InvalidArgument "etcdserver: authentication failed, invalid user ID or password".
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("authentication failed"))
}

/// An etcd error for people: gRPC status messages without tonic's debug
/// dump, followed by the root cause (`tcp connect error: Connection refused`).
pub fn cause_chain(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let mut parts = vec![s.message().to_string()];
            chain_into(std::error::Error::source(s), &mut parts);
            parts.join(": ")
        }
        other => error_chain(other),
    }
}

/// An error and its causes, `outer: inner: root`, each said once.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    chain_into(e.source(), &mut parts);
    parts.join(": ")
}

fn chain_into(mut cur: Option<&(dyn std::error::Error + 'static)>, parts: &mut Vec<String>) {
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
}
