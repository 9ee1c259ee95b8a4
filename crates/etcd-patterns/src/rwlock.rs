//! A fair distributed read-write lock.
//!
//! Readers create `prefix/read/<lease-hex>-<n>`, writers
//! `prefix/write/<lease-hex>-<n>` (a new key for every acquisition).
//! A reader waits only for the nearest *writer* created before it; a writer
//! waits for the nearest key of *any* kind created before it. Because the
//! queue is ordered by create revision, readers arriving after a waiting
//! writer queue behind it: a stream of readers cannot starve a writer.

use std::time::Duration;

use etcd_client::{Compare, TxnOp, TxnResponse};

use crate::error::Result;
use crate::keys::{self, Ahead, HeldKey, Line};
use crate::session::{LostReason, Session};

/// A distributed read-write lock. Every acquisition is a holder of its own,
/// so tasks sharing a session queue like any other contenders.
///
/// ```no_run
/// # async fn demo(session: etcd_patterns::Session) -> Result<(), etcd_patterns::Error> {
/// use etcd_patterns::RwLock;
/// let lock = RwLock::new(session, "locks/catalog");
/// let read = lock.read().await?; // shared with other readers
/// read.unlock().await?;
/// let write = lock.write().await?; // exclusive
/// write.unlock().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RwLock {
    session: Session,
    prefix: String,
}

/// Whether a [`RwLockGuard`] is shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RwMode {
    /// Shared with other readers.
    Read,
    /// Exclusive.
    Write,
}

impl RwLock {
    /// A read-write lock under `prefix` for this session.
    pub fn new(session: Session, prefix: impl Into<String>) -> RwLock {
        RwLock {
            session,
            prefix: keys::normalize_prefix(prefix),
        }
    }

    /// Waits for shared access.
    pub async fn read(&self) -> Result<RwLockGuard> {
        self.acquire(RwMode::Read).await
    }

    /// Waits for exclusive access.
    pub async fn write(&self) -> Result<RwLockGuard> {
        self.acquire(RwMode::Write).await
    }

    /// Waits for access in `mode`, giving up with [`Error::Timeout`](crate::Error::Timeout) (and
    /// removing our queue key) after `timeout`.
    pub async fn acquire_timeout(&self, mode: RwMode, timeout: Duration) -> Result<RwLockGuard> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.acquire_until(mode, Some((deadline, timeout))).await
    }

    /// Waits for access in `mode`.
    pub async fn acquire(&self, mode: RwMode) -> Result<RwLockGuard> {
        self.acquire_until(mode, None).await
    }

    async fn acquire_until(
        &self,
        mode: RwMode,
        deadline: Option<(tokio::time::Instant, Duration)>,
    ) -> Result<RwLockGuard> {
        let (own_dir, blockers) = match mode {
            RwMode::Read => ("read/", Line::under(&self.prefix, &["write/"])),
            RwMode::Write => ("write/", Line::under(&self.prefix, &["read/", "write/"])),
        };
        let key = keys::holder_key(&format!("{}{own_dir}", self.prefix), &self.session);
        let created = keys::create_key(&self.session, &key, b"", &blockers, deadline).await?;
        let rev = if created.free == Some(true) {
            let rev = created.rev;
            created.keep();
            rev
        } else {
            let ahead = Ahead::Any(&blockers);
            keys::wait_in_line(&self.session, ahead, &key, created, deadline).await?
        };
        Ok(RwLockGuard {
            held: HeldKey::new(&self.session, key, rev),
            mode,
        })
    }
}

/// Proof of holding a [`RwLock`]; dropping it releases in the background.
#[derive(Debug)]
pub struct RwLockGuard {
    held: HeldKey,
    mode: RwMode,
}

impl RwLockGuard {
    /// Shared or exclusive.
    pub fn mode(&self) -> RwMode {
        self.mode
    }

    /// Create revision of our key; for writers a fencing token.
    pub fn fencing_token(&self) -> i64 {
        self.held.rev
    }

    /// The key this hold created.
    pub fn key(&self) -> &str {
        &self.held.key
    }

    /// A compare that holds only while we hold the lock.
    pub fn is_owner(&self) -> Compare {
        self.held.is_owner()
    }

    /// Runs `ops` only if we still hold the lock; [`Error::NotOwner`](crate::Error::NotOwner) otherwise.
    pub async fn guarded_txn(&self, ops: Vec<TxnOp>) -> Result<TxnResponse> {
        self.held.guarded_txn(ops).await
    }

    /// Resolves when the lock is lost (session lost or key deleted).
    pub async fn lost(&self) -> LostReason {
        self.held.lost().await
    }

    /// Releases the lock; [`Error::NotOwner`](crate::Error::NotOwner) if it was already lost.
    pub async fn unlock(self) -> Result<()> {
        self.held.release().await
    }
}
