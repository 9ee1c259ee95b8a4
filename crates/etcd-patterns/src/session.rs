//! A session: one lease kept alive in the background, and a way to learn the
//! moment it can no longer be trusted.
//!
//! The keep-alive task renews every TTL/3 (configurable). It tracks the
//! *local deadline* of the lease: the instant a keep-alive request was sent
//! plus the TTL the server granted in its answer. The server cannot expire the
//! lease before that instant, so when renewals fail the session reports
//! [`LostReason::KeepAliveFailed`] slightly *before* the deadline (a margin of
//! TTL/10, at most 500 ms): whoever acts on [`Session::lost`] stops before
//! anybody else can take over the lease's keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::{Error, Result, ctx};

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// The server answered a keep-alive with TTL 0: the lease was revoked or expired.
    Expired,
    /// No keep-alive succeeded before the lease's deadline.
    KeepAliveFailed,
    /// [`Session::orphan`] was called and the lease's deadline passed.
    Orphaned,
    /// [`Session::close`] revoked the lease.
    Closed,
    /// A key this recipe owned was deleted (used by locks and elections).
    KeyDeleted,
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LostReason::Expired => "lease revoked or expired",
            LostReason::KeepAliveFailed => "keep-alive failed until the lease deadline",
            LostReason::Orphaned => "orphaned and its TTL passed",
            LostReason::Closed => "closed",
            LostReason::KeyDeleted => "owned key deleted",
        })
    }
}

/// How to create a [`Session`].
///
/// ```
/// use std::time::Duration;
/// let opts = etcd_patterns::SessionOptions::new(Duration::from_secs(10))
///     .with_keep_alive_interval(Duration::from_secs(1));
/// ```
#[derive(Debug, Clone)]
pub struct SessionOptions {
    ttl: Duration,
    lease_id: Option<i64>,
    keep_alive_interval: Option<Duration>,
}

impl SessionOptions {
    /// A new lease with this TTL (rounded up to whole seconds, at least 1 s).
    pub fn new(ttl: Duration) -> Self {
        SessionOptions {
            ttl,
            lease_id: None,
            keep_alive_interval: None,
        }
    }

    /// Resume an existing lease (for example after a restart) instead of
    /// granting a new one. Fails with [`Error::SessionExpired`] if it is gone.
    pub fn with_lease(mut self, lease_id: i64) -> Self {
        self.lease_id = Some(lease_id);
        self
    }

    /// Renew this often instead of every TTL/3. Shorter intervals detect a
    /// revoked lease sooner at the price of more keep-alive traffic. At most
    /// half of (TTL - [`Session::loss_margin`]); a longer interval is refused
    /// when the session is created.
    pub fn with_keep_alive_interval(mut self, interval: Duration) -> Self {
        self.keep_alive_interval = Some(interval);
        self
    }
}

struct Inner {
    client: Client,
    lease_id: i64,
    /// Numbers the keys recipes create for each acquisition; the high 32
    /// bits are random per `Session` value, so a process that resumes the
    /// lease never reuses a name of the one before it.
    holders: AtomicU64,
    /// For a resumed lease, the prefixes not yet swept of the keys of the
    /// process that held the lease before (`None`: granted, nothing to sweep).
    swept: Option<std::sync::Mutex<std::collections::HashSet<String>>>,
    ttl: Duration,
    state: Arc<watch::Sender<Option<LostReason>>>,
    orphan: CancellationToken,
    shutdown: CancellationToken,
    _stop_on_drop: DropGuard,
}

/// A lease kept alive on its own task. Cheap to clone; the keep-alive stops
/// when the last clone is dropped (without revoking: the lease then expires
/// after its TTL).
///
/// ```no_run
/// # async fn demo(client: etcd_client::Client) -> Result<(), etcd_patterns::Error> {
/// use std::time::Duration;
/// use etcd_patterns::Session;
///
/// let session = Session::new(client, Duration::from_secs(10)).await?;
/// println!("lease {:x}", session.lease_id());
/// tokio::select! {
///     reason = session.lost() => eprintln!("session lost: {reason}"),
///     _ = tokio::time::sleep(Duration::from_secs(1)) => {}
/// }
/// session.close().await?; // revoke: every key under the lease is deleted
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("lease_id", &format_args!("{:x}", self.inner.lease_id))
            .field("ttl", &self.inner.ttl)
            .field("lost", &*self.inner.state.borrow())
            .finish()
    }
}

impl Session {
    /// Grants a lease with `ttl` and starts keeping it alive.
    pub async fn new(client: Client, ttl: Duration) -> Result<Session> {
        Self::with_options(client, SessionOptions::new(ttl)).await
    }

    /// Grants (or resumes, see [`SessionOptions::with_lease`]) a lease and
    /// starts keeping it alive.
    ///
    /// Fails with [`Error::InvalidArgument`] when the keep-alive interval
    /// leaves no room for a second renewal before the session would report
    /// itself lost: it must be at most half of (TTL - loss margin).
    pub async fn with_options(client: Client, opts: SessionOptions) -> Result<Session> {
        let check_interval = |ttl: Duration| match opts.keep_alive_interval {
            Some(i) if i > (ttl - loss_margin(ttl)) / 2 => Err(Error::InvalidArgument(format!(
                "keep-alive interval {i:?} is too long for the session TTL {ttl:?}: at most {:?} (half of the TTL minus the {:?} loss margin), so that a failed renewal can be retried before the session reports itself lost",
                (ttl - loss_margin(ttl)) / 2,
                loss_margin(ttl)
            ))),
            _ => Ok(()),
        };
        check_interval(opts.ttl.max(Duration::from_secs(1)))?;
        let mut leases = client.lease_client();
        let started = Instant::now();
        let (lease_id, ttl_secs, remaining_secs) = match opts.lease_id {
            None => {
                let secs = opts.ttl.as_secs_f64().ceil().max(1.0) as i64;
                let resp = leases
                    .grant(secs, None)
                    .await
                    .map_err(ctx(format!("granting a {secs} s lease")))?;
                (resp.id(), resp.ttl(), resp.ttl())
            }
            Some(id) => {
                let resp = leases
                    .time_to_live(id, None)
                    .await
                    .map_err(ctx(format!("looking up lease {id:x} to resume it")))?;
                if resp.ttl() <= 0 {
                    return Err(Error::SessionExpired {
                        lease: id,
                        reason: LostReason::Expired,
                    });
                }
                // The deadline counts from what is left, not from the
                // granted TTL: the server expires the lease on its own clock.
                (id, resp.granted_ttl().max(1), resp.ttl())
            }
        };
        let ttl = Duration::from_secs(ttl_secs as u64);
        check_interval(ttl)?;
        let interval = opts
            .keep_alive_interval
            .unwrap_or(ttl / 3)
            .max(Duration::from_millis(50));
        let (tx, _) = watch::channel(None);
        let state = Arc::new(tx);
        let shutdown = CancellationToken::new();
        let orphan = CancellationToken::new();
        let keeper = KeepAlive {
            client: client.clone(),
            lease_id,
            interval,
            margin: loss_margin(ttl),
            state: state.clone(),
            orphan: orphan.clone(),
            shutdown: shutdown.clone(),
            deadline: started + Duration::from_secs(remaining_secs.max(0) as u64),
        };
        tokio::spawn(keeper.run());
        Ok(Session {
            inner: Arc::new(Inner {
                client,
                lease_id,
                holders: AtomicU64::new(u64::from(session_nonce()) << 32),
                swept: opts.lease_id.map(|_| std::sync::Mutex::default()),
                ttl,
                state,
                orphan,
                _stop_on_drop: shutdown.clone().drop_guard(),
                shutdown,
            }),
        })
    }

    /// Resumes an existing lease, e.g. one saved before a restart.
    pub async fn resume(client: Client, lease_id: i64, ttl: Duration) -> Result<Session> {
        Self::with_options(client, SessionOptions::new(ttl).with_lease(lease_id)).await
    }

    /// The lease id.
    pub fn lease_id(&self) -> i64 {
        self.inner.lease_id
    }

    /// A number not handed out before by this session: recipes name the key
    /// of each acquisition with it, so no key is ever reused.
    pub(crate) fn next_holder_id(&self) -> u64 {
        self.inner.holders.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether a key name from [`Session::next_holder_id`] was made by this
    /// `Session` value (and its clones), not by an earlier process that held
    /// the same lease.
    pub(crate) fn made_holder_id(&self, id: u64) -> bool {
        id >> 32 == self.inner.holders.load(Ordering::Relaxed) >> 32
    }

    /// True once per queue (`line`: a prefix and its sub-directories) for a
    /// session that resumed an existing lease: the first acquisition there
    /// sweeps the keys of the earlier process.
    pub(crate) fn first_use_after_resume(&self, line: &str) -> bool {
        self.inner.swept.as_ref().is_some_and(|swept| {
            swept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(line.to_string())
        })
    }

    /// How long before the lease's earliest server-side expiry the session
    /// reports itself lost: TTL/10, at most 500 ms. Whoever acts on
    /// [`Session::lost`] must stop within this margin to be sure nobody else
    /// has taken over yet.
    pub fn loss_margin(&self) -> Duration {
        loss_margin(self.inner.ttl)
    }

    /// The TTL the server granted.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The client this session uses.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Resolves when the session is lost, with the reason.
    pub async fn lost(&self) -> LostReason {
        let mut rx = self.inner.state.subscribe();
        loop {
            if let Some(reason) = *rx.borrow_and_update() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return LostReason::Closed;
            }
        }
    }

    /// A channel that turns `Some(reason)` when the session is lost.
    pub fn lost_watch(&self) -> watch::Receiver<Option<LostReason>> {
        self.inner.state.subscribe()
    }

    /// `Some(reason)` once the session is lost.
    pub fn lost_reason(&self) -> Option<LostReason> {
        *self.inner.state.borrow()
    }

    /// The error to return when an operation finds the session lost.
    pub(crate) fn expired_error(&self) -> Error {
        Error::SessionExpired {
            lease: self.inner.lease_id,
            reason: self.lost_reason().unwrap_or(LostReason::Expired),
        }
    }

    /// Reports the session lost for `reason` (first reason wins). Recipes
    /// call this when they see the lease gone before the next keep-alive does.
    pub(crate) fn mark_lost(&self, reason: LostReason) {
        mark_lost(&self.inner.state, self.inner.lease_id, reason);
    }

    /// Stops renewing without revoking. The lease (and every key on it)
    /// expires after its TTL; [`Session::lost`] fires at the local deadline.
    /// A process that hands its lease to a successor calls this.
    pub fn orphan(&self) {
        self.inner.orphan.cancel();
    }

    /// Stops the keep-alive and revokes the lease, deleting every key attached to it.
    pub async fn close(&self) -> Result<()> {
        self.inner.shutdown.cancel();
        mark_lost(&self.inner.state, self.inner.lease_id, LostReason::Closed);
        self.inner
            .client
            .lease_client()
            .revoke(self.inner.lease_id)
            .await
            .map_err(ctx(format!("revoking lease {:x}", self.inner.lease_id)))?;
        Ok(())
    }
}

/// 32 bits that differ between `Session` values, also across processes.
fn session_nonce() -> u32 {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let parts = [
        now.as_nanos().to_le_bytes().to_vec(),
        std::process::id().to_le_bytes().to_vec(),
        COUNT.fetch_add(1, Ordering::Relaxed).to_le_bytes().to_vec(),
    ];
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    crate::hash::stable_hash(&refs) as u32
}

fn loss_margin(ttl: Duration) -> Duration {
    (ttl / 10).min(Duration::from_millis(500))
}

fn mark_lost(state: &watch::Sender<Option<LostReason>>, lease: i64, reason: LostReason) {
    let first = state.send_if_modified(|s| {
        if s.is_none() {
            *s = Some(reason);
            true
        } else {
            false
        }
    });
    if first && reason != LostReason::Closed {
        tracing::warn!(lease = format_args!("{lease:x}"), %reason, "session lost");
    }
}

/// The background renewal loop and what it needs.
struct KeepAlive {
    client: Client,
    lease_id: i64,
    interval: Duration,
    margin: Duration,
    state: Arc<watch::Sender<Option<LostReason>>>,
    orphan: CancellationToken,
    shutdown: CancellationToken,
    /// The earliest instant the server may expire the lease.
    deadline: Instant,
}

/// What woke the keep-alive loop.
enum Wake<T> {
    Stop,
    Orphaned,
    Deadline,
    Ready(T),
}

impl KeepAlive {
    fn lose(&self, reason: LostReason) {
        mark_lost(&self.state, self.lease_id, reason);
    }

    /// How long to wait for one keep-alive answer before trying another stream.
    fn answer_timeout(&self) -> Duration {
        self.interval
            .clamp(Duration::from_millis(200), Duration::from_secs(1))
    }

    /// Runs `fut` unless the session is stopped, orphaned or past its deadline first.
    async fn race<T>(&self, fut: impl Future<Output = T>) -> Wake<T> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Wake::Stop,
            _ = self.orphan.cancelled() => Wake::Orphaned,
            _ = sleep_until(self.deadline - self.margin) => Wake::Deadline,
            v = fut => Wake::Ready(v),
        }
    }

    async fn run(mut self) {
        let mut retry = Duration::from_millis(50);
        loop {
            // Opening waits for the first answer: bounded like every answer,
            // so a stream that lands on a frozen member is given up and
            // reopened (the client may then route it to another member).
            let mut leases = self.client.lease_client();
            let open =
                tokio::time::timeout(self.answer_timeout(), leases.keep_alive(self.lease_id));
            let opened = match self.race(open).await {
                Wake::Ready(Ok(r)) => r,
                Wake::Ready(Err(_)) => {
                    tracing::debug!(
                        lease = format_args!("{:x}", self.lease_id),
                        "keep-alive stream did not open in time; retrying"
                    );
                    Err(etcd_client::Error::LeaseKeepAliveError("no answer".into()))
                }
                other => return self.finish(other.map_unit()).await,
            };
            match opened {
                Ok((keeper, stream)) => {
                    retry = Duration::from_millis(50);
                    if let Some(done) = self.renew(keeper, stream).await {
                        return self.finish(done).await;
                    }
                    // The stream broke: pause briefly (a member that fails
                    // every stream at once must not spin this loop), then reopen.
                    tracing::debug!(
                        lease = format_args!("{:x}", self.lease_id),
                        "keep-alive stream broke; reopening"
                    );
                }
                // etcd-client reports TTL 0 on opening as "lease not found":
                // the lease was revoked or expired while the stream was
                // down. That is final; retrying would only report it later
                // and as the wrong reason.
                Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => {
                    self.lose(LostReason::Expired);
                    return;
                }
                Err(e) => {
                    tracing::debug!(lease = format_args!("{:x}", self.lease_id), error = %e, "keep-alive stream failed; retrying");
                }
            }
            if let w @ (Wake::Stop | Wake::Orphaned | Wake::Deadline) =
                self.race(sleep(retry)).await
            {
                return self.finish(w).await;
            }
            retry = (retry * 2).min(Duration::from_millis(500));
        }
    }

    /// Renews on one stream; `None` means the stream broke and should be reopened.
    async fn renew(
        &mut self,
        mut keeper: LeaseKeeper,
        mut stream: LeaseKeepAliveStream,
    ) -> Option<Wake<()>> {
        loop {
            let sent = Instant::now();
            if keeper.keep_alive().await.is_err() {
                return None;
            }
            // A member that accepted the stream but cannot answer (no leader,
            // paused, partitioned) must not hold the renewal hostage: after
            // `answer_timeout` open a new stream, which the client may route
            // to another member.
            let answer = tokio::time::timeout(self.answer_timeout(), stream.message());
            match self.race(answer).await {
                Wake::Ready(Ok(Ok(Some(resp)))) if resp.ttl() > 0 => {
                    self.deadline = sent + Duration::from_secs(resp.ttl() as u64);
                }
                Wake::Ready(Ok(Ok(Some(_)))) => {
                    self.lose(LostReason::Expired);
                    return Some(Wake::Stop);
                }
                Wake::Ready(Ok(Ok(None) | Err(_)) | Err(_)) => return None,
                other => return Some(other.map_unit()),
            }
            match self.race(sleep(self.interval)).await {
                Wake::Ready(()) => {}
                other => return Some(other),
            }
        }
    }

    async fn finish<T>(&self, wake: Wake<T>) {
        match wake {
            Wake::Stop | Wake::Ready(_) => {}
            Wake::Deadline => self.lose(LostReason::KeepAliveFailed),
            Wake::Orphaned => {
                tokio::select! {
                    _ = self.shutdown.cancelled() => {}
                    _ = sleep_until(self.deadline - self.margin) => self.lose(LostReason::Orphaned),
                }
            }
        }
    }
}

impl<T> Wake<T> {
    fn map_unit(self) -> Wake<()> {
        match self {
            Wake::Stop => Wake::Stop,
            Wake::Orphaned => Wake::Orphaned,
            Wake::Deadline => Wake::Deadline,
            Wake::Ready(_) => Wake::Ready(()),
        }
    }
}
