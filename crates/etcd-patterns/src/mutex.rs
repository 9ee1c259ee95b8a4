//! A distributed mutex with fencing tokens, in the manner of etcd's Go
//! `concurrency.Mutex`, built from plain KV transactions and watches (never
//! the server's Lock RPC).
//!
//! Each acquisition owns a key of its own, `prefix<lease-hex>-<n>`, under
//! its session's lease. Contenders queue by that key's create revision: the
//! lock belongs to the oldest key, and each waiter watches only its
//! immediate predecessor.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use etcd_client::{Compare, PutOptions, TxnOp, TxnResponse};

use crate::error::{Error, Result};
use crate::keys::{self, Ahead, Line};
use crate::session::{LostReason, Session};

/// One acquisition: our key and its create revision (the fencing token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hold {
    pub key: String,
    pub rev: i64,
}

struct Inner {
    session: Session,
    prefix: String,
    line: Line,
    /// The hold of the last successful `lock` that is not released yet.
    held: StdMutex<Option<Hold>>,
}

/// A distributed mutex: at most one holder at a time is its *owner*
/// according to etcd. Cheap to clone; clones share the current hold (what
/// [`Mutex::unlock`] and [`Mutex::fencing_token`] refer to).
///
/// Every `lock` creates a key of its own (`prefix<lease-hex>-<n>`), so two
/// tasks locking through one session (with one `Mutex` or several) queue
/// behind each other like any two contenders, and a guard dropped just before
/// the next `lock` can never release the new hold.
///
/// A lease-based lock is **not** mutual exclusion on its own: a holder that
/// pauses longer than its TTL keeps running while someone else holds the
/// lock. Guard every side effect with [`MutexGuard::fencing_token`] or do
/// your etcd writes through [`MutexGuard::guarded_txn`].
///
/// ```no_run
/// # async fn demo(client: etcd_client::Client) -> Result<(), etcd_patterns::Error> {
/// use std::time::Duration;
/// use etcd_client::TxnOp;
/// use etcd_patterns::{Mutex, Session};
///
/// let session = Session::new(client, Duration::from_secs(10)).await?;
/// let mutex = Mutex::new(session, "locks/reindex");
/// let guard = mutex.lock_timeout(Duration::from_secs(5)).await?;
/// // Runs only if we still hold the lock when etcd applies it.
/// guard.guarded_txn(vec![TxnOp::put("reindex/state", "running", None)]).await?;
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Mutex {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Mutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutex")
            .field("prefix", &self.inner.prefix)
            .field("held", &self.fencing_token())
            .finish()
    }
}

impl Mutex {
    /// A mutex under `prefix` (a trailing `/` is added if missing) for this session.
    pub fn new(session: Session, prefix: impl Into<String>) -> Mutex {
        let prefix = keys::normalize_prefix(prefix);
        Mutex {
            inner: Arc::new(Inner {
                session,
                line: Line::direct(&prefix),
                prefix,
                held: StdMutex::new(None),
            }),
        }
    }

    /// The key of the current hold (`prefix<lease-hex>-<n>`), if held.
    pub fn key(&self) -> Option<String> {
        self.hold().map(|h| h.key)
    }

    pub(crate) fn hold(&self) -> Option<Hold> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Clears the current hold if it is `rev` (any hold for `None`) and returns it.
    pub(crate) fn take_hold(&self, rev: Option<i64>) -> Option<Hold> {
        let mut held = self.inner.held.lock().unwrap_or_else(|e| e.into_inner());
        match (&*held, rev) {
            (Some(h), Some(r)) if h.rev != r => None,
            _ => held.take(),
        }
    }

    /// The lock prefix (with trailing `/`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The session this mutex uses.
    pub fn session(&self) -> &Session {
        &self.inner.session
    }

    /// Waits until this session owns the lock.
    ///
    /// Fails with [`Error::SessionExpired`] as soon as the session is lost and
    /// [`Error::KeyDeleted`] if our queue key is deleted while waiting. If the
    /// future is dropped, the queue key is deleted in the background.
    pub async fn lock(&self) -> Result<MutexGuard> {
        self.acquire(false, None).await
    }

    /// Like [`Mutex::lock`], giving up with [`Error::Timeout`] (and deleting
    /// our queue key) after `timeout`.
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<MutexGuard> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.acquire(false, Some((deadline, timeout))).await
    }

    /// Takes the lock only if nobody holds or waits for it; otherwise deletes
    /// our key and fails at once with [`Error::Locked`].
    pub async fn try_lock(&self) -> Result<MutexGuard> {
        self.acquire(true, None).await
    }

    async fn acquire(
        &self,
        only_if_free: bool,
        deadline: Option<(tokio::time::Instant, Duration)>,
    ) -> Result<MutexGuard> {
        let hold = self.acquire_key(b"", only_if_free, deadline).await?;
        Ok(MutexGuard {
            mutex: self.clone(),
            hold,
            released: false,
        })
    }

    /// The queue protocol shared with [`crate::Election`]: one txn creates
    /// a new key with `value` and reads the oldest keys; unless ours is the
    /// oldest, wait for the immediate predecessor's DELETE. Returns the hold
    /// and makes it the current one.
    pub(crate) async fn acquire_key(
        &self,
        value: &[u8],
        only_if_free: bool,
        deadline: Option<(tokio::time::Instant, Duration)>,
    ) -> Result<Hold> {
        let session = &self.inner.session;
        if session.lost_reason().is_some() {
            return Err(session.expired_error());
        }
        let key = keys::holder_key(&self.inner.prefix, session);
        let line = &self.inner.line;
        let created = keys::create_key(session, &key, value, line, deadline).await?;
        let free = match created.free {
            Some(free) => free,
            // The create txn's page held only nested keys: read the line.
            None if only_if_free => {
                match keys::nothing_ahead(session, line, &key, created.rev).await {
                    Ok(free) => free,
                    Err(e) => {
                        created.discard().await;
                        return Err(e);
                    }
                }
            }
            None => false, // the wait reads the line
        };
        let rev = if free {
            let rev = created.rev;
            created.keep();
            rev
        } else if only_if_free {
            created.discard().await;
            return Err(Error::Locked {
                key: self.inner.prefix.clone(),
            });
        } else {
            keys::wait_in_line(session, Ahead::Any(line), &key, created, deadline).await?
        };
        let hold = Hold { key, rev };
        *self.inner.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(hold.clone());
        Ok(hold)
    }

    /// Makes `hold` the current one (after a restart, see [`crate::Election::resume`]).
    pub(crate) fn set_hold(&self, hold: Option<Hold>) {
        *self.inner.held.lock().unwrap_or_else(|e| e.into_inner()) = hold;
    }

    /// Replaces the value of `hold`'s key while it is still ours.
    pub(crate) async fn put_value(&self, hold: &Hold, value: Vec<u8>) -> Result<()> {
        let put = PutOptions::new().with_lease(self.inner.session.lease_id());
        let client = self.inner.session.client();
        let op = TxnOp::put(hold.key.as_str(), value, Some(put));
        keys::guarded_txn(client, &hold.key, hold.rev, vec![op]).await?;
        Ok(())
    }

    /// Releases the lock. Fails with [`Error::NotOwner`] if this mutex does
    /// not hold it (never locked, already unlocked, or the key was lost).
    /// When etcd cannot be reached it fails with [`Error::Unavailable`] and
    /// keeps deleting the key in the background until that lands or the
    /// session ends, so the lock is released either way.
    pub async fn unlock(&self) -> Result<()> {
        match self.take_hold(None) {
            None => Err(self.not_owner()),
            Some(h) => keys::release(&self.inner.session, &h.key, h.rev).await,
        }
    }

    fn not_owner(&self) -> Error {
        Error::NotOwner {
            key: self.inner.prefix.clone(),
        }
    }

    /// The fencing token (our key's create revision) while held.
    pub fn fencing_token(&self) -> Option<i64> {
        self.hold().map(|h| h.rev)
    }

    /// A compare that holds only while this mutex owns the lock; add it to
    /// your own txn. Fails with [`Error::NotOwner`] when not held.
    pub fn is_owner(&self) -> Result<Compare> {
        self.hold()
            .map(|h| keys::owner_compare(&h.key, h.rev))
            .ok_or_else(|| self.not_owner())
    }

    /// Runs `ops` in one txn only if we still own the lock; otherwise
    /// nothing is applied and [`Error::NotOwner`] is returned.
    pub async fn guarded_txn(&self, ops: Vec<TxnOp>) -> Result<TxnResponse> {
        let h = self.hold().ok_or_else(|| self.not_owner())?;
        keys::guarded_txn(self.inner.session.client(), &h.key, h.rev, ops).await
    }

    /// Resolves when the lock can no longer be trusted: the session is lost
    /// or our key was deleted. Resolves at once if the lock is not held.
    pub async fn lost(&self) -> LostReason {
        match self.hold() {
            Some(h) => keys::until_key_lost(&self.inner.session, &h.key, h.rev).await,
            None => self
                .inner
                .session
                .lost_reason()
                .unwrap_or(LostReason::KeyDeleted),
        }
    }
}

/// Proof of holding a [`Mutex`]. Dropping it unlocks in the background;
/// prefer [`MutexGuard::unlock`] to see errors.
#[derive(Debug)]
pub struct MutexGuard {
    mutex: Mutex,
    hold: Hold,
    released: bool,
}

impl MutexGuard {
    /// The fencing token: our key's create revision. Strictly increases from
    /// one holder to the next; hand it to any resource you write so it can
    /// reject a stale holder.
    pub fn fencing_token(&self) -> i64 {
        self.hold.rev
    }

    /// The key this hold created (`prefix<lease-hex>-<n>`).
    pub fn key(&self) -> &str {
        &self.hold.key
    }

    /// A compare that holds only while we own the lock (see [`Mutex::is_owner`]).
    pub fn is_owner(&self) -> Compare {
        keys::owner_compare(&self.hold.key, self.hold.rev)
    }

    /// Runs `ops` only if we still own the lock (see [`Mutex::guarded_txn`]).
    pub async fn guarded_txn(&self, ops: Vec<TxnOp>) -> Result<TxnResponse> {
        let client = self.mutex.inner.session.client();
        keys::guarded_txn(client, &self.hold.key, self.hold.rev, ops).await
    }

    /// Resolves when the lock is lost (see [`Mutex::lost`]).
    pub async fn lost(&self) -> LostReason {
        keys::until_key_lost(&self.mutex.inner.session, &self.hold.key, self.hold.rev).await
    }

    /// The mutex this guard holds.
    pub fn mutex(&self) -> &Mutex {
        &self.mutex
    }

    /// Releases the lock; [`Error::NotOwner`] if it was lost meanwhile (see
    /// [`Mutex::unlock`] for an unreachable etcd).
    pub async fn unlock(mut self) -> Result<()> {
        self.released = true;
        self.mutex.take_hold(Some(self.hold.rev));
        keys::release(&self.mutex.inner.session, &self.hold.key, self.hold.rev).await
    }
}

impl Drop for MutexGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // Only this hold's own key is deleted (compared on its create
        // revision), never the key of a later `lock`.
        self.mutex.take_hold(Some(self.hold.rev));
        let key = std::mem::take(&mut self.hold.key);
        keys::release_in_background(&self.mutex.inner.session, key, self.hold.rev);
    }
}
