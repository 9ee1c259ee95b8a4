//! Active/standby coordination: at most one node runs the *primary*
//! callback, every other node runs the *secondary* callback.
//!
//! Each round, a node opens a fresh [`Session`], runs its secondary callback
//! and campaigns. When it wins, it cancels the secondary and starts the
//! primary with the term's fencing token. It cancels the primary as soon as
//! it learns leadership is lost: the session's keep-alive could not renew
//! before the lease deadline (reported a margin *before* the server may
//! expire the lease), the lease was revoked, or its election key was
//! deleted. After a missed renewal, another node can only win after the
//! lease is gone on the server, so the old primary has been told to stop
//! before a new one is elected. (When someone deletes the election key, the
//! next candidate wins at once: the old primary learns it within about a
//! second and must rely on fencing meanwhile.)
//!
//! **At most one primary**, and its limits: the session reports the loss a
//! margin (TTL/10, at most 500 ms, [`Session::loss_margin`]) before the
//! server may expire the lease. A primary callback that ignores
//! cancellation is aborted after the grace ([`HaOptions::with_grace`]),
//! which is always kept strictly inside that margin, so an aborted callback
//! has stopped before any other node can win. Abort lands only at an
//! `.await`: a callback that blocks a thread past the margin can still run
//! beside the next primary. That is reported (an error log and
//! [`HaCoordinator::overruns`]), and it is why every write of the primary
//! must be fenced: use [`PrimaryContext::guarded_txn`] for etcd, or pass
//! [`PrimaryContext::fencing_token`] to any other resource so that it can
//! reject a stale primary (a GC pause, a frozen VM, a blocked thread).

use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{Client, Compare, TxnOp, TxnResponse};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use crate::election::Election;
use crate::error::Result;
use crate::session::{Session, SessionOptions};

/// Where a node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not campaigning yet (connecting, or between rounds).
    Starting,
    /// Running the secondary callback and campaigning.
    Secondary,
    /// Running the primary callback in the term with this fencing token.
    Primary {
        /// The election key's create revision.
        fencing_token: i64,
    },
    /// [`HaCoordinator::run`] returned.
    Stopped,
}

/// What the primary callback gets.
#[derive(Debug, Clone)]
pub struct PrimaryContext {
    /// The term's fencing token (strictly increases from term to term):
    /// pass it to every resource the primary writes outside etcd.
    pub fencing_token: i64,
    /// Cancelled when leadership is lost or the node shuts down: stop promptly.
    pub cancel: CancellationToken,
    /// The won election: [`Election::is_leader_compare`] guards etcd writes.
    pub election: Election,
}

impl PrimaryContext {
    /// Runs `ops` in one txn only while this term leads; nothing is applied
    /// and [`Error::NotOwner`](crate::Error::NotOwner) is returned once it does not.
    pub async fn guarded_txn(&self, ops: Vec<TxnOp>) -> Result<TxnResponse> {
        self.election.guarded_txn(ops).await
    }

    /// A compare that holds only while this term leads, for your own txns.
    pub fn is_primary(&self) -> Result<Compare> {
        self.election.is_leader_compare()
    }
}

/// What the secondary callback gets.
#[derive(Debug, Clone)]
pub struct SecondaryContext {
    /// Cancelled when this node becomes primary or shuts down.
    pub cancel: CancellationToken,
}

/// How an [`HaCoordinator`] campaigns.
#[derive(Debug, Clone)]
pub struct HaOptions {
    prefix: String,
    node: String,
    ttl: Duration,
    grace: Duration,
}

impl HaOptions {
    /// Campaign under `prefix` as `node` (the value others see as leader),
    /// with a 10 s session TTL and a 250 ms cancellation grace.
    pub fn new(prefix: impl Into<String>, node: impl Into<String>) -> Self {
        HaOptions {
            prefix: prefix.into(),
            node: node.into(),
            ttl: Duration::from_secs(10),
            grace: Duration::from_millis(250),
        }
    }

    /// Session TTL: bounds how long a crashed primary blocks failover.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long a cancelled callback may take to return before it is
    /// aborted. Capped at half the session's loss margin
    /// ([`Session::loss_margin`]: TTL/10, at most 500 ms), so that a primary
    /// is stopped before the server can expire its lease.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
}

/// Runs a primary callback on at most one node and a secondary on the others.
///
/// ```no_run
/// # async fn demo(client: etcd_client::Client) -> Result<(), etcd_patterns::Error> {
/// use etcd_patterns::{HaCoordinator, HaOptions};
/// use tokio_util::sync::CancellationToken;
///
/// let ha = HaCoordinator::new(client, HaOptions::new("ha/billing", "node-a"));
/// let shutdown = CancellationToken::new();
/// ha.run(
///     |ctx| async move {
///         // primary: work until ctx.cancel fires; tag writes with ctx.fencing_token
///         ctx.cancel.cancelled().await;
///     },
///     |ctx| async move {
///         // secondary: e.g. warm caches until ctx.cancel fires
///         ctx.cancel.cancelled().await;
///     },
///     shutdown,
/// )
/// .await?;
/// # Ok(()) }
/// ```
pub struct HaCoordinator {
    client: Client,
    opts: HaOptions,
    role: watch::Sender<Role>,
    session: StdMutex<Option<Session>>,
    overruns: Arc<AtomicU64>,
}

impl std::fmt::Debug for HaCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaCoordinator")
            .field("opts", &self.opts)
            .field("role", &*self.role.borrow())
            .finish()
    }
}

/// A spawned callback that is aborted if its owner goes away.
struct Callback {
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

impl Callback {
    fn spawn<F: Future<Output = ()> + Send + 'static>(
        cancel: CancellationToken,
        fut: F,
    ) -> Callback {
        Callback {
            cancel,
            handle: tokio::spawn(fut),
        }
    }

    /// Cancels, waits up to `grace` for a clean return, then aborts. Returns
    /// false when the callback was still running `deadline` after the call
    /// (abort lands only at an `.await`); it is awaited to the end anyway.
    async fn stop(mut self, grace: Duration, deadline: Duration) -> bool {
        let asked = tokio::time::Instant::now();
        self.cancel.cancel();
        // Awaiting a JoinHandle whose output was already taken would panic.
        if self.handle.is_finished() {
            return true;
        }
        if tokio::time::timeout(grace, &mut self.handle).await.is_ok() {
            return true;
        }
        tracing::warn!(?grace, "callback ignored cancellation; aborting it");
        self.handle.abort();
        let left = deadline.saturating_sub(asked.elapsed());
        if tokio::time::timeout(left, &mut self.handle).await.is_ok() {
            return true;
        }
        let _ = (&mut self.handle).await;
        false
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.handle.abort();
    }
}

/// Why a term ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TermEnd {
    Lost,
    Shutdown,
    Returned,
}

/// Exponential pause between failed rounds, 100 ms doubling to 5 s, with
/// ±50 % jitter.
struct Backoff {
    next: Duration,
    seed: u64,
}

impl Backoff {
    fn new() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Backoff {
            next: Duration::from_millis(100),
            seed: crate::hash::stable_hash(&[&now.as_nanos().to_le_bytes()]),
        }
    }

    /// Sleeps the next pause; false when `shutdown` fires first.
    async fn pause(&mut self, shutdown: &CancellationToken) -> bool {
        self.seed = crate::hash::stable_hash(&[&self.seed.to_le_bytes()]);
        let jitter = 0.5 + (self.seed % 1000) as f64 / 1000.0;
        let pause = self.next.mul_f64(jitter);
        self.next = (self.next * 2).min(Duration::from_secs(5));
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = sleep(pause) => true,
        }
    }
}

impl HaCoordinator {
    /// A coordinator using `client`.
    pub fn new(client: Client, opts: HaOptions) -> HaCoordinator {
        HaCoordinator {
            client,
            opts,
            role: watch::channel(Role::Starting).0,
            session: StdMutex::new(None),
            overruns: Arc::default(),
        }
    }

    /// How many times a primary callback was still running when the lease
    /// could already have expired on the server (it blocked instead of
    /// yielding at an `.await`): each is a window in which two primaries may
    /// have run, and only fenced writes stayed safe.
    pub fn overruns(&self) -> u64 {
        self.overruns.load(Ordering::Relaxed)
    }

    /// The current role, as a channel that changes with it.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// The session of the current round, if any (for example to
    /// [`Session::orphan`] it in a failover drill).
    pub fn session(&self) -> Option<Session> {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs rounds of campaign → primary until `shutdown` is cancelled; then
    /// stops the callbacks, resigns and revokes the session. Dropping this
    /// future aborts the callbacks without revoking (like a crash).
    pub async fn run<P, PF, S, SF>(
        &self,
        primary: P,
        secondary: S,
        shutdown: CancellationToken,
    ) -> Result<()>
    where
        P: Fn(PrimaryContext) -> PF,
        PF: Future<Output = ()> + Send + 'static,
        S: Fn(SecondaryContext) -> SF,
        SF: Future<Output = ()> + Send + 'static,
    {
        let mut backoff = Backoff::new();
        let result = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            self.role.send_replace(Role::Starting);
            let session = match Session::with_options(
                self.client.clone(),
                SessionOptions::new(self.opts.ttl),
            )
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(prefix = %self.opts.prefix, error = %e, "cannot open a session; retrying");
                    if !backoff.pause(&shutdown).await {
                        break Ok(());
                    }
                    continue;
                }
            };
            // Stop the primary strictly inside the session's loss margin.
            let margin = session.loss_margin();
            let grace = self.opts.grace.min(margin / 2);
            *self.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(session.clone());
            let election = Election::new(session.clone(), self.opts.prefix.clone());

            self.role.send_replace(Role::Secondary);
            let cancel = CancellationToken::new();
            let standby = Callback::spawn(cancel.clone(), secondary(SecondaryContext { cancel }));
            let won = tokio::select! {
                r = election.campaign(self.opts.node.clone()) => Some(r),
                _ = shutdown.cancelled() => None,
            };
            standby.stop(grace, margin).await;
            let term = match won {
                None => {
                    let _ = tokio::time::timeout(self.opts.ttl, session.close()).await;
                    break Ok(());
                }
                Some(Err(e)) => {
                    tracing::warn!(prefix = %self.opts.prefix, error = %e, "campaign failed; starting a new round after a pause");
                    let _ = tokio::time::timeout(self.opts.ttl, session.close()).await;
                    // A campaign that fails at once (no permission on the
                    // prefix, a full database) must not grant a lease per
                    // round trip: back off, with jitter so nodes spread out.
                    if !backoff.pause(&shutdown).await {
                        break Ok(());
                    }
                    continue;
                }
                Some(Ok(term)) => term,
            };
            backoff = Backoff::new();

            self.role.send_replace(Role::Primary {
                fencing_token: term,
            });
            tracing::info!(prefix = %self.opts.prefix, node = %self.opts.node, term, "became primary");
            let cancel = CancellationToken::new();
            let ctx = PrimaryContext {
                fencing_token: term,
                cancel: cancel.clone(),
                election: election.clone(),
            };
            let started = tokio::time::Instant::now();
            let mut active = Callback::spawn(cancel, primary(ctx));
            let ended = tokio::select! {
                reason = election.lost() => {
                    tracing::warn!(prefix = %self.opts.prefix, term, %reason, "leadership lost; cancelling primary");
                    TermEnd::Lost
                }
                _ = shutdown.cancelled() => TermEnd::Shutdown,
                _ = &mut active.handle => TermEnd::Returned, // hand over
            };
            // Only after a loss can a successor be elected while the callback
            // still runs; on shutdown or return the lease is still ours.
            if !active.stop(grace, margin).await && ended == TermEnd::Lost {
                self.overruns.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    prefix = %self.opts.prefix, term, ?margin,
                    "the primary callback kept running past the loss margin (it did not yield at an .await); another node may have been primary at the same time: fence every write with the term's token"
                );
            }
            self.role.send_replace(Role::Secondary);
            // Bounded: a frozen member must not keep `run` from returning;
            // the lease then expires on its own.
            let _ = tokio::time::timeout(self.opts.ttl, election.resign()).await;
            let _ = tokio::time::timeout(self.opts.ttl, session.close()).await;
            if ended == TermEnd::Shutdown {
                break Ok(());
            }
            // A primary that returns at once must not turn the loop into
            // grant, campaign, revoke as fast as etcd answers.
            let quick = started.elapsed() < Duration::from_secs(1);
            if ended == TermEnd::Returned && quick && !backoff.pause(&shutdown).await {
                break Ok(());
            }
        };
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.role.send_replace(Role::Stopped);
        result
    }
}
