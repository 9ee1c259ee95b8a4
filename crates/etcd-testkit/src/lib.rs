//! Real etcd clusters for tests.
//!
//! `etcd-testkit` starts 1..N real `etcd` members (the `etcd` on `PATH`, or
//! `$ETCD_BIN`) on free loopback ports, each with its own temporary data
//! directory and captured log file, waits until every member answers and a
//! leader exists, and then lets a test kill (SIGKILL), pause (SIGSTOP), resume,
//! stop, restart or add members. Everything is torn down when the
//! [`EtcdCluster`] is dropped, also when the test panics; members are also
//! bound to the life of the test process, so none outlives the test run.
//!
//! ```no_run
//! # async fn demo() -> Result<(), etcd_testkit::Error> {
//! use etcd_testkit::{ClusterOptions, EtcdCluster};
//!
//! let cluster = EtcdCluster::start(ClusterOptions::new(3)).await?;
//! let mut client = cluster.client().await?;
//! client.put("greeting", "hello", None).await?;
//! cluster.kill(0)?; // a minority failure: reads and writes still work
//! assert_eq!(client.get("greeting", None).await?.kvs()[0].value(), b"hello");
//! # Ok(()) }
//! ```

mod partition;
mod ports;
mod postgres;
mod process;
mod slow_disk;
mod tls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};

pub use partition::Partition;
pub use ports::free_port;
pub use postgres::Postgres;
pub use slow_disk::SlowDisk;
pub use tls::TlsFiles;

/// What can go wrong while running a test cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No etcd binary could be found.
    #[error(
        "etcd binary not found at {0}: install it (apt-get install -y etcd-server) or set ETCD_BIN"
    )]
    EtcdNotFound(String),
    /// A file or process operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// Certificate generation or loading failed.
    #[error("test TLS setup failed: {0}")]
    Tls(String),
    /// Not enough free ports could be found.
    #[error("could not find {0} free loopback ports")]
    Ports(usize),
    /// A member exited while starting; the tail of its log is included.
    #[error("etcd member {name} exited during start ({status}); last log lines:\n{log_tail}")]
    MemberExited {
        /// Member name.
        name: String,
        /// Exit status as text.
        status: String,
        /// Last lines of the member's log.
        log_tail: String,
    },
    /// The cluster did not become ready in time.
    #[error("etcd cluster not ready after {waited:?}: {detail}")]
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// What was still missing.
        detail: String,
    },
    /// An index that names no member.
    #[error("no member with index {0} (the cluster has {1})")]
    NoSuchMember(usize, usize),
    /// The operation does not fit the member's current state.
    #[error("member {name} is {state:?}: cannot {action}")]
    WrongState {
        /// Member name.
        name: String,
        /// Its state.
        state: MemberState,
        /// What was asked.
        action: &'static str,
    },
    /// An etcd call failed.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A network partition could not be made or healed, or
    /// [`ClusterOptions::isolatable`] cannot work.
    #[error("network partition: {0}")]
    Partition(String),
}

/// How to start a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    members: usize,
    tls: bool,
    tls_validity: (Option<Duration>, Option<Duration>),
    client_cert_auth: bool,
    root_password: Option<String>,
    quota_backend_bytes: Option<u64>,
    extra_args: Vec<String>,
    heartbeat_ms: u64,
    election_ms: u64,
    ready_timeout: Duration,
    etcd_bin: Option<PathBuf>,
    name_prefix: String,
    isolatable: Option<usize>,
    iptables_bin: Option<PathBuf>,
}

impl ClusterOptions {
    /// A plain-HTTP cluster of `members` members with etcd's default raft timings.
    pub fn new(members: usize) -> Self {
        ClusterOptions {
            members: members.max(1),
            tls: false,
            tls_validity: (None, None),
            client_cert_auth: false,
            root_password: None,
            quota_backend_bytes: None,
            extra_args: Vec::new(),
            heartbeat_ms: 100,
            election_ms: 1000,
            ready_timeout: Duration::from_secs(30),
            etcd_bin: None,
            name_prefix: "m".into(),
            isolatable: None,
            iptables_bin: None,
        }
    }

    /// Member names `{prefix}0`, `{prefix}1`, ... instead of `m0`, `m1`
    /// (data directories and logs keep the short names).
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// Run member `i` (0-based) as `nobody`/`nogroup`, without supplementary
    /// groups, so that [`EtcdCluster::partition`] can cut it off from its
    /// peers.
    ///
    /// Why: all members share `127.0.0.1`, so addresses cannot tell their
    /// packets apart; iptables can, by the uid that owns a packet. With this
    /// member the only one that is not root, dropping root's packets to its
    /// peer port and nobody's packets to the other peer ports cuts both
    /// directions, while the test's client connections (root, to client
    /// ports) still flow.
    ///
    /// The member's data directory and log file are owned by `nobody` (the
    /// cluster directory becomes traversable, `0711`; the other members'
    /// data stays `0700`). Kill, pause, resume, stop and restart work as for
    /// any member; the directory is removed with the cluster as usual.
    ///
    /// Starting fails if the test process is not root, if `i` names no
    /// member, or with [`Self::tls`] (the key files are readable by root
    /// only).
    pub fn isolatable(mut self, i: usize) -> Self {
        self.isolatable = Some(i);
        self
    }

    /// Use this iptables binary for [`EtcdCluster::partition`] (for example
    /// `iptables-legacy`) instead of `iptables` on `PATH`.
    pub fn iptables_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.iptables_bin = Some(path.into());
        self
    }

    /// Serve clients over TLS with a generated CA and server certificate
    /// (SAN `127.0.0.1`). Metrics stay on a separate plain-HTTP port.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Serve TLS with a server certificate that expires `server` from now
    /// and a client certificate that expires `client` from now (for tests
    /// of expiry warnings; the CA stays valid for years).
    pub fn tls_valid_for(mut self, server: Duration, client: Duration) -> Self {
        self.tls = true;
        self.tls_validity = (Some(server), Some(client));
        self
    }

    /// Serve TLS and require a client certificate signed by the test CA.
    pub fn client_cert_auth(mut self) -> Self {
        self.tls = true;
        self.client_cert_auth = true;
        self
    }

    /// Enable etcd authentication with a `root` user having this password.
    pub fn auth(mut self, root_password: impl Into<String>) -> Self {
        self.root_password = Some(root_password.into());
        self
    }

    /// Set `--quota-backend-bytes`.
    pub fn quota_backend_bytes(mut self, bytes: u64) -> Self {
        self.quota_backend_bytes = Some(bytes);
        self
    }

    /// Append extra command-line flags to every member.
    pub fn extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Raft heartbeat interval and election timeout in milliseconds.
    pub fn raft_timing(mut self, heartbeat_ms: u64, election_ms: u64) -> Self {
        self.heartbeat_ms = heartbeat_ms;
        self.election_ms = election_ms;
        self
    }

    /// How long [`EtcdCluster::start`] waits for readiness (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Use this etcd binary instead of `$ETCD_BIN` or `etcd` on `PATH`.
    pub fn etcd_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.etcd_bin = Some(path.into());
        self
    }
}

/// Whether a member process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// The process is running.
    Running,
    /// The process is stopped with SIGSTOP.
    Paused,
    /// No process (killed, stopped, or not started yet).
    Stopped,
}

/// A snapshot of one member's identity and state.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    /// Position in the cluster (0-based), stable for the cluster's life.
    pub index: usize,
    /// Member name (`m0`, `m1`, ...).
    pub name: String,
    /// Member id as etcd reports it (0 until the member has joined).
    pub id: u64,
    /// Client URL (`http://127.0.0.1:PORT` or `https://...`).
    pub client_url: String,
    /// Peer URL.
    pub peer_url: String,
    /// Plain-HTTP Prometheus metrics URL (`http://127.0.0.1:PORT/metrics`).
    pub metrics_url: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// File that captures the member's stdout and stderr.
    pub log_file: PathBuf,
    /// Process id while running or paused.
    pub pid: Option<u32>,
    /// Current state.
    pub state: MemberState,
}

struct Member {
    info: MemberInfo,
    args: Vec<String>,
    child: Option<Child>,
}

/// A running etcd cluster, torn down on drop.
pub struct EtcdCluster {
    opts: ClusterOptions,
    dir: tempfile::TempDir,
    etcd_bin: PathBuf,
    tls: Option<TlsFiles>,
    token: String,
    members: Mutex<Vec<Member>>,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("dir", &self.dir.path())
            .field("endpoints", &self.endpoints())
            .finish()
    }
}

impl EtcdCluster {
    /// Starts a cluster and waits until every member answers and a leader exists.
    ///
    /// Retries with fresh ports when another process took one of ours.
    pub async fn start(opts: ClusterOptions) -> Result<Self, Error> {
        let mut last_err = None;
        for _ in 0..3 {
            match Self::start_once(opts.clone()).await {
                Ok(cluster) => return Ok(cluster),
                Err(Error::MemberExited {
                    name,
                    status,
                    log_tail,
                }) if log_tail.contains("address already in use") => {
                    last_err = Some(Error::MemberExited {
                        name,
                        status,
                        log_tail,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or(Error::Ports(opts.members * 3)))
    }

    /// Like [`EtcdCluster::start`], callable from sync code and from inside
    /// any async runtime (it runs its own runtime on a helper thread).
    pub fn start_blocking(opts: ClusterOptions) -> Result<Self, Error> {
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Io("building a runtime".into(), e))?
                    .block_on(Self::start(opts))
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Tls("cluster start panicked".into())))
        })
    }

    /// A plain 3-member cluster shared by every test of this process that
    /// calls it. Isolate tests by key prefix; use a dedicated cluster for
    /// failure tests. Panics if the cluster cannot start.
    pub fn shared() -> &'static EtcdCluster {
        static SHARED: OnceLock<EtcdCluster> = OnceLock::new();
        // A static is never dropped: stop the members and remove the data
        // when the process exits normally (the test harness calls exit()).
        extern "C" fn teardown_shared() {
            if let Some(cluster) = SHARED.get() {
                cluster.teardown();
            }
        }
        SHARED.get_or_init(|| match Self::start_blocking(ClusterOptions::new(3)) {
            Ok(c) => {
                // SAFETY: registering a plain extern "C" fn with atexit(3).
                unsafe { libc::atexit(teardown_shared) };
                c
            }
            Err(e) => panic!("cannot start the shared etcd test cluster: {e}"),
        })
    }

    /// Kills every member and removes the cluster's directory now (also
    /// what dropping the cluster does).
    fn teardown(&self) {
        for m in self.lock().iter_mut() {
            kill_member(m);
        }
        let _ = std::fs::remove_dir_all(self.dir.path());
    }

    async fn start_once(opts: ClusterOptions) -> Result<Self, Error> {
        let etcd_bin = find_etcd(opts.etcd_bin.as_deref())?;
        sweep_abandoned_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(|e| Error::Io("creating a temporary directory".into(), e))?;
        if let Some(i) = opts.isolatable {
            partition::prepare_cluster_dir(dir.path(), i, opts.members, opts.tls)?;
        }
        let tls = if opts.tls {
            Some(TlsFiles::generate_valid_for(
                dir.path(),
                opts.tls_validity.0,
                opts.tls_validity.1,
            )?)
        } else {
            None
        };
        let token = format!("testkit-{}-{}", std::process::id(), dir_suffix(dir.path()));
        let ports = ports::free_ports(opts.members * 3)?;
        let scheme = if opts.tls { "https" } else { "http" };
        let mut members = Vec::with_capacity(opts.members);
        for i in 0..opts.members {
            members.push(new_member_info(
                dir.path(),
                i,
                scheme,
                &ports[i * 3..i * 3 + 3],
                &opts.name_prefix,
            ));
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let cluster = EtcdCluster {
            members: Mutex::new(
                members
                    .into_iter()
                    .map(|info| Member {
                        args: Vec::new(),
                        child: None,
                        info,
                    })
                    .collect(),
            ),
            opts,
            dir,
            etcd_bin,
            tls,
            token,
        };
        {
            let mut members = cluster.lock();
            for m in members.iter_mut() {
                m.args = cluster.member_args(&m.info, &initial_cluster, "new");
                cluster.spawn_member(m)?;
            }
        }
        cluster.wait_ready(cluster.opts.ready_timeout).await?;
        cluster.refresh_ids().await?;
        if let Some(password) = cluster.opts.root_password.clone() {
            cluster.enable_auth(&password).await?;
        }
        Ok(cluster)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Member>> {
        // A panic elsewhere must not stop teardown: ignore poisoning.
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn member_args(&self, m: &MemberInfo, initial_cluster: &str, state: &str) -> Vec<String> {
        let client_port = port_of(&m.client_url);
        let listen_client = format!("{}://127.0.0.1:{client_port}", scheme_of(&m.client_url));
        let metrics = m.metrics_url.trim_end_matches("/metrics").to_string();
        let mut args: Vec<String> = [
            "--name",
            &m.name,
            "--data-dir",
            &m.data_dir.display().to_string(),
            "--listen-client-urls",
            &listen_client,
            "--advertise-client-urls",
            &m.client_url,
            "--listen-peer-urls",
            &m.peer_url,
            "--initial-advertise-peer-urls",
            &m.peer_url,
            "--listen-metrics-urls",
            &metrics,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            state,
            "--initial-cluster-token",
            &self.token,
            "--heartbeat-interval",
            &self.opts.heartbeat_ms.to_string(),
            "--election-timeout",
            &self.opts.election_ms.to_string(),
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(tls) = &self.tls {
            args.extend([
                "--cert-file".to_string(),
                tls.server_cert_file.display().to_string(),
                "--key-file".to_string(),
                tls.server_key_file.display().to_string(),
                "--trusted-ca-file".to_string(),
                tls.ca_file.display().to_string(),
            ]);
            if self.opts.client_cert_auth {
                args.push("--client-cert-auth".to_string());
            }
        }
        if let Some(q) = self.opts.quota_backend_bytes {
            args.push(format!("--quota-backend-bytes={q}"));
        }
        args.extend(self.opts.extra_args.iter().cloned());
        args
    }

    fn spawn_member(&self, m: &mut Member) -> Result<(), Error> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.info.log_file)
            .map_err(|e| Error::Io(format!("opening {}", m.info.log_file.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::Io(format!("opening {}", m.info.log_file.display()), e))?;
        let mut cmd = Command::new(&self.etcd_bin);
        if self.opts.isolatable == Some(m.info.index) {
            partition::run_as_nobody(&mut cmd, &m.info.data_dir, &m.info.log_file)?;
        }
        cmd.args(&m.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // etcd reads ETCD_* variables as flags; keep the caller's out of it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD") {
                cmd.env_remove(key);
            }
        }
        let child = process::spawn_bound(cmd)
            .map_err(|e| Error::Io(format!("starting {}", self.etcd_bin.display()), e))?;
        m.info.pid = Some(child.id());
        m.info.state = MemberState::Running;
        m.child = Some(child);
        Ok(())
    }

    /// Client endpoints of every member, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|m| m.info.client_url.clone())
            .collect()
    }

    /// Client endpoint of member `i`.
    pub fn endpoint(&self, i: usize) -> Result<String, Error> {
        Ok(self.member(i)?.client_url)
    }

    /// Plain-HTTP metrics URLs of every member.
    pub fn metrics_urls(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|m| m.info.metrics_url.clone())
            .collect()
    }

    /// Every member's identity and state.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.lock().iter().map(|m| m.info.clone()).collect()
    }

    /// One member's identity and state.
    pub fn member(&self, i: usize) -> Result<MemberInfo, Error> {
        let members = self.lock();
        members
            .get(i)
            .map(|m| m.info.clone())
            .ok_or(Error::NoSuchMember(i, members.len()))
    }

    /// The generated certificates of a TLS cluster.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The root password of an auth cluster.
    pub fn root_password(&self) -> Option<&str> {
        self.opts.root_password.as_deref()
    }

    /// The cluster's temporary directory (data dirs, logs, certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Connect options with this cluster's TLS and credentials, a 2 s dial
    /// timeout and a 5 s request timeout.
    pub fn connect_options(&self) -> Result<ConnectOptions, Error> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            opts = opts.with_tls(tls.client_tls()?);
        }
        if let Some(password) = &self.opts.root_password {
            opts = opts.with_user("root", password.clone());
        }
        Ok(opts)
    }

    /// A client balanced over every member's endpoint.
    pub async fn client(&self) -> Result<Client, Error> {
        Ok(Client::connect(self.endpoints(), Some(self.connect_options()?)).await?)
    }

    /// A client talking to member `i` only.
    pub async fn member_client(&self, i: usize) -> Result<Client, Error> {
        Ok(Client::connect([self.endpoint(i)?], Some(self.connect_options()?)).await?)
    }

    /// Cuts member `i` off from its peers, in both directions, until the
    /// returned guard is dropped or [`Partition::heal`]ed.
    ///
    /// Inserts iptables rules on loopback (`OUTPUT -o lo`): root's packets
    /// to member `i`'s peer port are dropped, and so are nobody's packets to
    /// every other member's peer port. Client traffic still flows: the
    /// member keeps answering clients (Status, serializable reads) from its
    /// stale state, while requests that need the leader (writes,
    /// linearizable reads) fail or time out there. Within a few election
    /// timeouts (1.3 to 3 s with the default 1 s) the member loses its
    /// leader: on etcd 3.4 its
    /// Status then reports leader 0 and the error `etcdserver: no leader`,
    /// while its `raft_term` stays at the term of the last applied entry,
    /// although the member campaigns at ever higher terms (see its log).
    /// A watch through it stays open and answers progress requests with its
    /// stale revision. A [`Self::restart`] of the member waits for a leader,
    /// so it times out while the partition lasts.
    ///
    /// Errors: [`Error::NoSuchMember`]; [`Error::Partition`] if member `i`
    /// was not started with [`ClusterOptions::isolatable`]`(i)`, or naming
    /// the iptables command line and its stderr if iptables is missing or
    /// fails (no rule stays behind then). Needs root.
    pub fn partition(&self, i: usize) -> Result<Partition, Error> {
        let members = self.members();
        if i >= members.len() {
            return Err(Error::NoSuchMember(i, members.len()));
        }
        if self.opts.isolatable != Some(i) {
            let hint = match self.opts.isolatable {
                Some(j) => format!(" (only member {j} is)"),
                None => String::new(),
            };
            return Err(Error::Partition(format!(
                "member {i} was not started with ClusterOptions::isolatable({i}){hint}"
            )));
        }
        let own = port_of(&members[i].peer_url);
        let others: Vec<&str> = members
            .iter()
            .filter(|m| m.index != i)
            .map(|m| port_of(&m.peer_url))
            .collect();
        let iptables = self
            .opts
            .iptables_bin
            .clone()
            .unwrap_or_else(|| PathBuf::from("iptables"));
        Partition::cut(&iptables, own, &others)
    }

    /// Makes member `i`'s disk slow: each of its `fdatasync` calls (WAL
    /// fsyncs) waits `delay` first, while the returned guard lives. Uses
    /// `strace` fault injection (Debian `strace`; needs ptrace, i.e. root or
    /// the same uid). Errors: [`Error::NoSuchMember`]; [`Error::WrongState`]
    /// if the member is not running; [`Error::Io`] if strace is missing or
    /// cannot attach.
    pub fn slow_disk(&self, i: usize, delay: Duration) -> Result<SlowDisk, Error> {
        let members = self.members();
        let m = members
            .get(i)
            .ok_or(Error::NoSuchMember(i, members.len()))?;
        match (m.state, m.pid) {
            (MemberState::Running, Some(pid)) => SlowDisk::attach(pid, delay),
            (state, _) => Err(Error::WrongState {
                name: m.name.clone(),
                state,
                action: "slow the disk of",
            }),
        }
    }

    /// Kills member `i` with SIGKILL and reaps it. Its data stays for [`Self::restart`].
    pub fn kill(&self, i: usize) -> Result<(), Error> {
        let mut members = self.lock();
        let len = members.len();
        let m = members.get_mut(i).ok_or(Error::NoSuchMember(i, len))?;
        kill_member(m);
        Ok(())
    }

    /// Pauses member `i` with SIGSTOP: it keeps its sockets but answers nothing.
    pub fn pause(&self, i: usize) -> Result<(), Error> {
        self.signal_member(
            i,
            libc::SIGSTOP,
            MemberState::Running,
            MemberState::Paused,
            "pause",
        )
    }

    /// Resumes a paused member with SIGCONT.
    pub fn resume(&self, i: usize) -> Result<(), Error> {
        self.signal_member(
            i,
            libc::SIGCONT,
            MemberState::Paused,
            MemberState::Running,
            "resume",
        )
    }

    fn signal_member(
        &self,
        i: usize,
        sig: libc::c_int,
        from: MemberState,
        to: MemberState,
        action: &'static str,
    ) -> Result<(), Error> {
        let mut members = self.lock();
        let len = members.len();
        let m = members.get_mut(i).ok_or(Error::NoSuchMember(i, len))?;
        match (m.info.state, m.info.pid) {
            (state, Some(pid)) if state == from => {
                process::signal(pid, sig)
                    .map_err(|e| Error::Io(format!("signalling {}", m.info.name), e))?;
                // A signal is delivered asynchronously: wait until every
                // thread has stopped (or run again), so that a request sent
                // right after `pause` can never be answered.
                let stopped = to == MemberState::Paused;
                if !process::wait_stopped(pid, stopped, Duration::from_secs(2)) {
                    return Err(Error::Io(
                        format!("{} did not {action} within 2 s", m.info.name),
                        std::io::Error::from(std::io::ErrorKind::TimedOut),
                    ));
                }
                m.info.state = to;
                Ok(())
            }
            (state, _) => Err(Error::WrongState {
                name: m.info.name.clone(),
                state,
                action,
            }),
        }
    }

    /// Stops member `i` gracefully (SIGTERM), escalating to SIGKILL after `timeout`.
    pub fn stop(&self, i: usize, timeout: Duration) -> Result<(), Error> {
        let mut members = self.lock();
        let len = members.len();
        let m = members.get_mut(i).ok_or(Error::NoSuchMember(i, len))?;
        let Some(mut child) = m.child.take() else {
            return Ok(());
        };
        if m.info.state == MemberState::Paused {
            let _ = process::signal(child.id(), libc::SIGCONT);
        }
        let _ = process::signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        m.info.pid = None;
        m.info.state = MemberState::Stopped;
        Ok(())
    }

    /// Starts a stopped or killed member again on its old data and ports and
    /// waits until it answers and sees a leader.
    pub async fn restart(&self, i: usize) -> Result<(), Error> {
        {
            let mut members = self.lock();
            let len = members.len();
            let m = members.get_mut(i).ok_or(Error::NoSuchMember(i, len))?;
            if m.info.state != MemberState::Stopped {
                return Err(Error::WrongState {
                    name: m.info.name.clone(),
                    state: m.info.state,
                    action: "restart",
                });
            }
            self.spawn_member(m)?;
        }
        self.wait_member_ready(i, self.opts.ready_timeout).await
    }

    /// Adds a member (`learner` or voting) with `member add`, starts it and
    /// waits until it answers. Returns its index.
    pub async fn add_member(&self, learner: bool) -> Result<usize, Error> {
        let ports = ports::free_ports(3)?;
        let scheme = if self.opts.tls { "https" } else { "http" };
        let (index, info) = {
            let members = self.lock();
            let i = members.len();
            (
                i,
                new_member_info(self.dir.path(), i, scheme, &ports, &self.opts.name_prefix),
            )
        };
        let mut client = self.client().await?;
        let opts = learner.then(|| etcd_client::MemberAddOptions::new().with_is_learner());
        let added = client.member_add([info.peer_url.clone()], opts).await?;
        let mut initial: Vec<String> = self
            .lock()
            .iter()
            .map(|m| format!("{}={}", m.info.name, m.info.peer_url))
            .collect();
        initial.push(format!("{}={}", info.name, info.peer_url));
        let mut member = Member {
            args: self.member_args(&info, &initial.join(","), "existing"),
            child: None,
            info,
        };
        member.info.id = added.member().map(|m| m.id()).unwrap_or(0);
        self.spawn_member(&mut member)?;
        self.lock().push(member);
        self.wait_member_ready(index, self.opts.ready_timeout)
            .await?;
        Ok(index)
    }

    /// Index of the member that currently leads, asked of the running members.
    pub async fn leader_index(&self) -> Result<Option<usize>, Error> {
        let members = self.members();
        for m in members.iter().filter(|m| m.state == MemberState::Running) {
            let Ok(mut c) = self.probe_client(&m.client_url).await else {
                continue;
            };
            if let Ok(status) = c.status().await {
                let leader = status.leader();
                return Ok(members.iter().position(|m| m.id == leader && leader != 0));
            }
        }
        Ok(None)
    }

    /// The last `lines` lines of member `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> Result<String, Error> {
        Ok(tail(&self.member(i)?.log_file, lines))
    }

    /// Waits until every running member answers Status and all agree on a leader.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let start = Instant::now();
        loop {
            self.check_exited()?;
            let detail = match self.readiness().await {
                Ok(()) => return Ok(()),
                Err(detail) => detail,
            };
            if start.elapsed() > timeout {
                return Err(Error::NotReady {
                    waited: start.elapsed(),
                    detail,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn wait_member_ready(&self, i: usize, timeout: Duration) -> Result<(), Error> {
        let start = Instant::now();
        let url = self.endpoint(i)?;
        loop {
            self.check_exited()?;
            let detail = match self.probe_client(&url).await {
                Ok(mut c) => match c.status().await {
                    Ok(s) if s.leader() != 0 => return Ok(()),
                    Ok(_) => format!("{url} has no leader"),
                    Err(e) => format!("{url}: {e}"),
                },
                Err(e) => format!("{url}: {e}"),
            };
            if start.elapsed() > timeout {
                return Err(Error::NotReady {
                    waited: start.elapsed(),
                    detail,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn readiness(&self) -> Result<(), String> {
        let mut leader = None;
        for m in self
            .members()
            .iter()
            .filter(|m| m.state == MemberState::Running)
        {
            let mut client = self
                .probe_client(&m.client_url)
                .await
                .map_err(|e| format!("{}: {e}", m.name))?;
            let status = client
                .status()
                .await
                .map_err(|e| format!("{}: {e}", m.name))?;
            match (status.leader(), leader) {
                (0, _) => return Err(format!("{} has no leader yet", m.name)),
                (l, None) => leader = Some(l),
                (l, Some(prev)) if l != prev => {
                    return Err(format!(
                        "members disagree on the leader ({prev:x} vs {l:x})"
                    ));
                }
                _ => {}
            }
        }
        if leader.is_none() {
            return Err("no member is running".into());
        }
        Ok(())
    }

    async fn probe_client(&self, url: &str) -> Result<Client, Error> {
        // Readiness probes must not authenticate: auth may not be enabled yet,
        // and Status needs no permission.
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_secs(1));
        if let Some(tls) = &self.tls {
            opts = opts.with_tls(tls.client_tls()?);
        }
        Ok(Client::connect([url], Some(opts)).await?)
    }

    fn check_exited(&self) -> Result<(), Error> {
        let mut members = self.lock();
        for m in members.iter_mut() {
            let Some(child) = m.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                m.child = None;
                m.info.pid = None;
                m.info.state = MemberState::Stopped;
                return Err(Error::MemberExited {
                    name: m.info.name.clone(),
                    status: status.to_string(),
                    log_tail: tail(&m.info.log_file, 20),
                });
            }
        }
        Ok(())
    }

    async fn refresh_ids(&self) -> Result<(), Error> {
        let mut client = self.probe_client(&self.endpoint(0)?).await?;
        let list = client.member_list().await?;
        let mut members = self.lock();
        for m in members.iter_mut() {
            if let Some(found) = list.members().iter().find(|x| x.name() == m.info.name) {
                m.info.id = found.id();
            }
        }
        Ok(())
    }

    async fn enable_auth(&self, password: &str) -> Result<(), Error> {
        // Not the probes' 1 s: adding a user hashes its password with
        // bcrypt, which takes longer than that on a loaded machine.
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(15));
        if let Some(tls) = &self.tls {
            opts = opts.with_tls(tls.client_tls()?);
        }
        let mut client = Client::connect([self.endpoint(0)?], Some(opts)).await?;
        client.user_add("root", password, None).await?;
        client.user_grant_role("root", "root").await?;
        client.auth_enable().await?;
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // The TempDir removes the directory after this.
        for m in self.lock().iter_mut() {
            kill_member(m);
        }
    }
}

/// Cluster directories are named `etcd-testkit-<pid>-<random>`.
const DIR_PREFIX: &str = "etcd-testkit-";

/// Removes the directories of clusters whose process is gone (killed before
/// it could clean up), so interrupted test runs do not fill the disk.
fn sweep_abandoned_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn kill_member(m: &mut Member) {
    if let Some(mut child) = m.child.take() {
        // SIGKILL also ends a SIGSTOPped process.
        let _ = child.kill();
        let _ = child.wait();
    }
    m.info.pid = None;
    m.info.state = MemberState::Stopped;
}

fn new_member_info(
    dir: &Path,
    i: usize,
    scheme: &str,
    ports: &[u16],
    name_prefix: &str,
) -> MemberInfo {
    let short = format!("m{i}");
    MemberInfo {
        index: i,
        id: 0,
        client_url: format!("{scheme}://127.0.0.1:{}", ports[0]),
        peer_url: format!("http://127.0.0.1:{}", ports[1]),
        metrics_url: format!("http://127.0.0.1:{}/metrics", ports[2]),
        data_dir: dir.join(&short),
        log_file: dir.join(format!("{short}.log")),
        pid: None,
        state: MemberState::Stopped,
        name: format!("{name_prefix}{i}"),
    }
}

fn find_etcd(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    let candidate = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ETCD_BIN").map(PathBuf::from))
        .or_else(|| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|p| p.join("etcd"))
                    .find(|p| p.is_file())
            })
        })
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(Error::EtcdNotFound(candidate.display().to_string()))
    }
}

fn port_of(url: &str) -> &str {
    url.rsplit(':').next().unwrap_or_default()
}

fn scheme_of(url: &str) -> &str {
    url.split("://").next().unwrap_or("http")
}

fn dir_suffix(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
