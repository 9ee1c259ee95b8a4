//! Connecting to an etcd cluster with the settings every command shares:
//! endpoints, dial and request timeouts, TLS, user and password, require-leader.

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, StatusResponse, TlsOptions};

use crate::config::{ClusterConfig, normalize_endpoint};

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
    /// None of several endpoints could be used: each is named with its cause.
    #[error("cluster {cluster}: no etcd endpoint reachable {}", tried(.attempts))]
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
    /// One endpoint could not be dialed or did not answer in time.
    #[error("cluster {cluster}: endpoint {endpoint}: {cause}")]
    Endpoint {
        /// Cluster name.
        cluster: String,
        /// The endpoint (or endpoints, comma-separated, for a balanced client).
        endpoint: String,
        /// What went wrong, with a hint where one helps.
        cause: String,
    },
}

impl ConnectError {
    /// The cause alone, without the cluster and endpoint the message starts
    /// with: for texts that already say which member they are about.
    pub fn cause(&self) -> String {
        match self {
            ConnectError::File {
                what, path, source, ..
            } => format!("cannot read {what} {path}: {source}"),
            ConnectError::BadEndpoint { message, .. } => message.clone(),
            ConnectError::NoEndpointReachable { attempts, .. } => {
                format!("no etcd endpoint reachable {}", tried(attempts))
            }
            ConnectError::Auth { user, message, .. } => {
                format!("refused the credentials of user {user:?}: {message}")
            }
            ConnectError::Endpoint { cause, .. } => cause.clone(),
        }
    }
}

/// `(tried url: cause; url: cause)`; a hint every cause ends with is said
/// once, after the list.
fn tried(attempts: &[(String, String)]) -> String {
    let common = HINTS.iter().map(|h| format!(" ({h})")).find(|suffix| {
        !attempts.is_empty() && attempts.iter().all(|(_, cause)| cause.ends_with(suffix))
    });
    let list = attempts
        .iter()
        .map(|(url, cause)| {
            let cause = common
                .as_deref()
                .and_then(|suffix| cause.strip_suffix(suffix))
                .unwrap_or(cause);
            format!("{url}: {cause}")
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!("(tried {list}){}", common.unwrap_or_default())
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

/// Connects to `cluster`: every endpoint is tried at once (connect and a
/// Status call within the dial timeout); the client balances over all
/// endpoints once one answers. When none answers the error names each
/// endpoint and its cause.
pub async fn connect(cluster: &ClusterConfig) -> Result<Client, ConnectError> {
    let urls = endpoints(cluster)?;
    Dialer::new(cluster)?
        .check_within(cluster.dial_timeout)
        .dial_balanced(&urls)
        .await
}

/// Opens clients with a cluster's TLS, credentials and timeouts: to one
/// member, or balanced over several. TLS and password files are read once,
/// by [`Dialer::new`]; clones share them.
#[derive(Clone)]
pub struct Dialer {
    cluster: String,
    user: String,
    options: ConnectOptions,
    dial_timeout: Duration,
    request_timeout: Duration,
    check_within: Duration,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the options: they hold the password.
        f.debug_struct("Dialer")
            .field("cluster", &self.cluster)
            .field("user", &self.user)
            .field("dial_timeout", &self.dial_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("check_within", &self.check_within)
            .finish_non_exhaustive()
    }
}

/// Why a learner is not taken where a voting member is needed.
const LEARNER: &str =
    "answers, but is a learner, which serves only status (use voting members' endpoints)";

impl Dialer {
    /// A dialer with `cluster`'s settings (its endpoints are not used):
    /// reads the TLS and password files now.
    pub fn new(cluster: &ClusterConfig) -> Result<Self, ConnectError> {
        Ok(Dialer {
            cluster: cluster.name.clone(),
            user: cluster.username.clone().unwrap_or_default(),
            options: connect_options(cluster)?,
            dial_timeout: cluster.dial_timeout,
            request_timeout: cluster.request_timeout,
            check_within: cluster.dial_timeout + cluster.request_timeout,
        })
    }

    /// Whether requests carry etcd's require-leader flag (a member without
    /// a leader then refuses them); a monitor asking each member turns it off.
    pub fn require_leader(mut self, on: bool) -> Self {
        self.options = self.options.with_require_leader(on);
        self
    }

    /// The time [`Dialer::dial_checked`] allows for connecting and the
    /// Status call (default: dial timeout + request timeout).
    pub fn check_within(mut self, d: Duration) -> Self {
        self.check_within = d;
        self
    }

    /// The dial timeout.
    pub fn dial_timeout(&self) -> Duration {
        self.dial_timeout
    }

    /// The request timeout, for callers that bound their own calls.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// A client of the member at `endpoint` only: connected (and
    /// authenticated, with a user) within the dial timeout, not checked
    /// further: a member that is down may show only at the first request.
    pub async fn dial(&self, endpoint: &str) -> Result<Client, ConnectError> {
        if endpoint.is_empty() {
            return Err(self.endpoint_error(
                "(none)",
                "the member advertises no client URL (not started yet?)".into(),
            ));
        }
        self.open([endpoint], endpoint).await
    }

    /// A client of the member at `endpoint` only, checked with a Status
    /// call: all within [`Dialer::check_within`].
    pub async fn dial_checked(&self, endpoint: &str) -> Result<Client, ConnectError> {
        Ok(self.dial_status(endpoint).await?.0)
    }

    /// A client balanced over `urls`: all are dialed at once (as
    /// [`Dialer::dial_checked`]) and one must answer; the error names each
    /// endpoint and its cause, or the endpoint that refused the credentials.
    pub async fn dial_balanced(&self, urls: &[String]) -> Result<Client, ConnectError> {
        let client = self.first_answer(urls, false).await?;
        if urls.len() == 1 {
            return Ok(client);
        }
        self.dial_all(urls).await
    }

    /// A client balanced over `urls` without checking them first (for more
    /// connections to a cluster already reached): connected (and
    /// authenticated) within the dial timeout.
    pub async fn dial_all(&self, urls: &[String]) -> Result<Client, ConnectError> {
        if urls.is_empty() {
            return Err(self.no_endpoints());
        }
        self.open(urls, &urls.join(",")).await
    }

    async fn open<E: AsRef<str>, S: AsRef<[E]>>(
        &self,
        urls: S,
        label: &str,
    ) -> Result<Client, ConnectError> {
        let connect = Client::connect(urls, Some(self.options.clone()));
        match tokio::time::timeout(self.dial_timeout, connect).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(self.failure(label, &e)),
            Err(_) => Err(self.no_answer(label, self.dial_timeout)),
        }
    }

    /// [`Dialer::dial_checked`], keeping the member's Status.
    async fn dial_status(&self, endpoint: &str) -> Result<(Client, StatusResponse), ConnectError> {
        let attempt = async {
            let mut client = self.dial(endpoint).await?;
            let status = client
                .status()
                .await
                .map_err(|e| self.failure(endpoint, &e))?;
            Ok((client, status))
        };
        tokio::time::timeout(self.check_within, attempt)
            .await
            .unwrap_or_else(|_| Err(self.no_answer(endpoint, self.check_within)))
    }

    /// Dials every URL at once; the first member to answer wins (with
    /// `voting`, the first voting member). Credentials refused by one member
    /// are refused by all: that ends the search at once.
    async fn first_answer(&self, urls: &[String], voting: bool) -> Result<Client, ConnectError> {
        if urls.is_empty() {
            return Err(self.no_endpoints());
        }
        let mut probes = tokio::task::JoinSet::new();
        let mut order = HashMap::new();
        for (i, url) in urls.iter().enumerate() {
            let (dialer, url) = (self.clone(), url.clone());
            let probe = probes.spawn(async move {
                let (client, status) = dialer.dial_status(&url).await?;
                if voting && status.is_learner() {
                    return Err(dialer.endpoint_error(&url, LEARNER.into()));
                }
                Ok(client)
            });
            order.insert(probe.id(), i);
        }
        let mut failures = Vec::new();
        while let Some(joined) = probes.join_next_with_id().await {
            let (id, cause) = match joined {
                Ok((_, Ok(client))) => return Ok(client),
                Ok((_, Err(e @ ConnectError::Auth { .. }))) => return Err(e),
                Ok((id, Err(e))) => (id, e.cause()),
                Err(e) => (e.id(), format!("the dial task failed: {e}")),
            };
            if let Some(&i) = order.get(&id) {
                failures.push((i, cause));
            }
        }
        failures.sort();
        Err(ConnectError::NoEndpointReachable {
            cluster: self.cluster.clone(),
            attempts: failures
                .into_iter()
                .map(|(i, cause)| (urls[i].clone(), cause))
                .collect(),
        })
    }

    /// `Auth` when etcd refused the credentials, else `Endpoint`.
    fn failure(&self, endpoint: &str, e: &etcd_client::Error) -> ConnectError {
        if is_auth_failure(e) {
            ConnectError::Auth {
                cluster: self.cluster.clone(),
                endpoint: endpoint.to_string(),
                user: self.user.clone(),
                message: cause_chain(e),
            }
        } else {
            self.endpoint_error(endpoint, with_hint(cause_chain(e)))
        }
    }

    fn no_answer(&self, endpoint: &str, within: Duration) -> ConnectError {
        let within = crate::config::duration::format(&within);
        self.endpoint_error(
            endpoint,
            format!("no answer within {within} ({HINT_SILENT})"),
        )
    }

    fn endpoint_error(&self, endpoint: &str, cause: String) -> ConnectError {
        ConnectError::Endpoint {
            cluster: self.cluster.clone(),
            endpoint: endpoint.to_string(),
            cause,
        }
    }

    fn no_endpoints(&self) -> ConnectError {
        ConnectError::BadEndpoint {
            cluster: self.cluster.clone(),
            message: "no endpoints to dial (set --endpoints)".into(),
        }
    }
}

/// A client of one voting member among `urls`: all are dialed at once (as
/// [`Dialer::dial_checked`]) and the first voting member to answer wins.
/// When none does, the error names each endpoint and its cause (a learner
/// included).
///
/// A client balanced over several endpoints keeps sending some requests to
/// a member that is down, and a learner refuses most requests; one answering
/// voting member avoids both.
pub async fn first_voting_member(d: &Dialer, urls: &[String]) -> Result<Client, ConnectError> {
    d.first_answer(urls, true).await
}

/// For an endpoint that does not answer in time.
const HINT_SILENT: &str = "is it up? check --endpoints and --dial-timeout";
/// For a certificate or TLS failure.
const HINT_TLS: &str = "check the TLS settings: CA file, server name, client certificate and key";
/// For a refused TCP connection.
const HINT_REFUSED: &str = "is etcd up and listening there? check --endpoints";
/// For other transport failures.
const HINT_UNREACHABLE: &str = "is the endpoint reachable? check --endpoints and --dial-timeout";
/// Every hint a cause may end with.
const HINTS: [&str; 4] = [HINT_SILENT, HINT_TLS, HINT_REFUSED, HINT_UNREACHABLE];

/// Adds what to check to a connection failure people meet often.
fn with_hint(cause: String) -> String {
    let lower = cause.to_lowercase();
    let hint = if lower.contains("certificate") || lower.contains("tls") || lower.contains("ssl") {
        HINT_TLS
    } else if lower.contains("connection refused") {
        HINT_REFUSED
    } else if lower.contains("transport error")
        || lower.contains("unavailable")
        || lower.contains("dns error")
        || lower.contains("timed out")
    {
        HINT_UNREACHABLE
    } else {
        return cause;
    };
    format!("{cause} ({hint})")
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
