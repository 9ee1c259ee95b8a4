//! A distributed mutex with fencing tokens, in the manner of etcd's Go
//! `concurrency.Mutex`, built from plain KV transactions and watches (never
//! the server's Lock RPC).
//!
//! Each contender owns the key `prefix<lease-hex>` under its session lease.
//! Contenders queue by that key's create revision: the lock belongs to the
//! oldest key, and each waiter watches only its immediate predecessor.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{Compare, PutOptions, TxnOp, TxnResponse};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::keys::{self, Ahead, CleanupOnDrop};
use crate::session::{LostReason, Session};

struct Inner {
    session: Session,
    prefix: String,
    key: String,
    /// Create revision of our key while held, 0 otherwise.
    held: AtomicI64,
    /// An unlock spawned by a dropped guard; the next `lock` waits for it.
    pending_unlock: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// A distributed mutex: at most one session at a time is its *owner*
/// according to etcd. Cheap to clone; clones share the same key, so one
/// `Mutex` (and its clones) is one contender: create one per session.
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
            .field("key", &self.inner.key)
            .field("held", &self.fencing_token())
            .finish()
    }
}

impl Mutex {
    /// A mutex under `prefix` (a trailing `/` is added if missing) for this session.
    pub fn new(session: Session, prefix: impl Into<String>) -> Mutex {
        let prefix = keys::normalize_prefix(prefix);
        let key = keys::lease_key(&prefix, session.lease_id());
        Mutex {
            inner: Arc::new(Inner {
                session,
                prefix,
                key,
                held: AtomicI64::new(0),
                pending_unlock: std::sync::Mutex::new(None),
            }),
        }
    }

    /// The key this contender creates: `prefix<lease-hex>`.
    pub fn key(&self) -> &str {
        &self.inner.key
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
        let rev = self.acquire_key(b"", only_if_free, deadline).await?;
        Ok(MutexGuard {
            mutex: self.clone(),
            rev,
            released: false,
        })
    }

    /// The queue protocol shared with [`crate::Election`]: one txn creates
    /// our key with `value` (or finds it, and then re-publishes `value`) and
    /// reads the oldest key; unless ours is the oldest, wait for the
    /// immediate predecessor's DELETE. Returns our create revision and marks
    /// it held.
    pub(crate) async fn acquire_key(
        &self,
        value: &[u8],
        only_if_free: bool,
        deadline: Option<(tokio::time::Instant, Duration)>,
    ) -> Result<i64> {
        let pending = self
            .inner
            .pending_unlock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = pending {
            let _ = handle.await;
        }
        let session = &self.inner.session;
        if session.lost_reason().is_some() {
            return Err(session.expired_error());
        }
        let key = &self.inner.key;
        let mut cleanup = CleanupOnDrop::new(session.client(), key);
        let created =
            keys::create_own_key_until(session, key, value, &self.inner.prefix, deadline).await?;
        cleanup.set_rev(created.rev);
        if created
            .existing_value
            .as_ref()
            .is_some_and(|v| v.as_slice() != value)
        {
            self.put_value(created.rev, value.to_vec()).await?;
        }
        let first = created.first.as_ref().map(|kv| kv.create_revision());
        if first == Some(created.rev) {
            cleanup.defuse();
        } else if only_if_free {
            cleanup.cleanup().await;
            return Err(Error::Locked {
                key: self.inner.prefix.clone(),
            });
        } else {
            let ahead = Ahead::Any(&self.inner.prefix);
            keys::wait_in_line(session, ahead, key, created.rev, cleanup, deadline).await?;
        }
        self.set_held(Some(created.rev));
        Ok(created.rev)
    }

    /// Records (or clears) the create revision we hold.
    pub(crate) fn set_held(&self, rev: Option<i64>) {
        self.inner.held.store(rev.unwrap_or(0), Ordering::SeqCst);
    }

    /// Replaces our key's value while it is still the one created at `rev`.
    pub(crate) async fn put_value(&self, rev: i64, value: Vec<u8>) -> Result<()> {
        let key = self.inner.key.as_str();
        let put = PutOptions::new().with_lease(self.inner.session.lease_id());
        let client = self.inner.session.client();
        keys::guarded_txn(client, key, rev, vec![TxnOp::put(key, value, Some(put))]).await?;
        Ok(())
    }

    /// Releases the lock. Fails with [`Error::NotOwner`] if this mutex does
    /// not hold it (never locked, already unlocked, or the key was lost).
    pub async fn unlock(&self) -> Result<()> {
        match self.inner.held.swap(0, Ordering::SeqCst) {
            0 => Err(self.not_owner()),
            rev => keys::release(self.inner.session.client(), &self.inner.key, rev).await,
        }
    }

    fn not_owner(&self) -> Error {
        Error::NotOwner {
            key: self.inner.key.clone(),
        }
    }

    /// The fencing token (our key's create revision) while held.
    pub fn fencing_token(&self) -> Option<i64> {
        match self.inner.held.load(Ordering::SeqCst) {
            0 => None,
            rev => Some(rev),
        }
    }

    /// A compare that holds only while this mutex owns the lock; add it to
    /// your own txn. Fails with [`Error::NotOwner`] when not held.
    pub fn is_owner(&self) -> Result<Compare> {
        self.fencing_token()
            .map(|rev| keys::owner_compare(&self.inner.key, rev))
            .ok_or_else(|| self.not_owner())
    }

    /// Runs `ops` in one txn only if we still own the lock; otherwise
    /// nothing is applied and [`Error::NotOwner`] is returned.
    pub async fn guarded_txn(&self, ops: Vec<TxnOp>) -> Result<TxnResponse> {
        let rev = self.fencing_token().ok_or_else(|| self.not_owner())?;
        keys::guarded_txn(self.inner.session.client(), &self.inner.key, rev, ops).await
    }

    /// Resolves when the lock can no longer be trusted: the session is lost
    /// or our key was deleted. Resolves at once if the lock is not held.
    pub async fn lost(&self) -> LostReason {
        match self.fencing_token() {
            Some(rev) => keys::until_key_lost(&self.inner.session, &self.inner.key, rev).await,
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
    rev: i64,
    released: bool,
}

impl MutexGuard {
    /// The fencing token: our key's create revision. Strictly increases from
    /// one holder to the next; hand it to any resource you write so it can
    /// reject a stale holder.
    pub fn fencing_token(&self) -> i64 {
        self.rev
    }

    /// A compare that holds only while we own the lock (see [`Mutex::is_owner`]).
    pub fn is_owner(&self) -> Compare {
        keys::owner_compare(&self.mutex.inner.key, self.rev)
    }

    /// Runs `ops` only if we still own the lock (see [`Mutex::guarded_txn`]).
    pub async fn guarded_txn(&self, ops: Vec<TxnOp>) -> Result<TxnResponse> {
        self.mutex.guarded_txn(ops).await
    }

    /// Resolves when the lock is lost (see [`Mutex::lost`]).
    pub async fn lost(&self) -> LostReason {
        keys::until_key_lost(&self.mutex.inner.session, &self.mutex.inner.key, self.rev).await
    }

    /// The mutex this guard holds.
    pub fn mutex(&self) -> &Mutex {
        &self.mutex
    }

    /// Releases the lock.
    pub async fn unlock(mut self) -> Result<()> {
        self.released = true;
        self.mutex.unlock().await
    }
}

impl Drop for MutexGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // no runtime: the key goes away with the lease
        };
        let mutex = self.mutex.clone();
        let handle = rt.spawn(async move {
            if let Err(e) = mutex.unlock().await {
                tracing::warn!(key = %mutex.inner.key, error = %e, "background unlock failed");
            }
        });
        *self
            .mutex
            .inner
            .pending_unlock
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(handle);
    }
}
