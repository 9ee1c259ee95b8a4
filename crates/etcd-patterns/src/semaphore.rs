//! A counting semaphore: at most `permits` holders at once.
//!
//! Each acquisition creates `prefix<lease-hex>-<n>`; the holders are the `permits`
//! oldest keys by create revision (FIFO). A waiter re-checks on every DELETE
//! under the prefix, so a release wakes all waiters (fine for the small
//! queues semaphores usually have).

use std::time::Duration;

use etcd_client::Compare;

use crate::error::Result;
use crate::keys::{self, Ahead, HeldKey, Line};
use crate::session::{LostReason, Session};

/// A distributed counting semaphore. Every acquisition holds a key of its
/// own, so permits taken by several tasks on one session are counted apart
/// and at most `permits` holders are admitted.
///
/// All contenders must agree on `permits`.
///
/// ```no_run
/// # async fn demo(session: etcd_patterns::Session) -> Result<(), etcd_patterns::Error> {
/// use etcd_patterns::Semaphore;
/// let sem = Semaphore::new(session, "sem/downloads", 3);
/// let permit = sem.acquire().await?; // at most 3 holders get here at once
/// permit.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Semaphore {
    session: Session,
    prefix: String,
    permits: i64,
}

impl Semaphore {
    /// A semaphore with `permits` slots under `prefix` (`permits` at least 1).
    pub fn new(session: Session, prefix: impl Into<String>, permits: u32) -> Semaphore {
        Semaphore {
            session,
            prefix: keys::normalize_prefix(prefix),
            permits: i64::from(permits.max(1)),
        }
    }

    /// Waits for a permit.
    pub async fn acquire(&self) -> Result<Permit> {
        self.acquire_until(None).await
    }

    /// Waits at most `timeout` for a permit ([`Error::Timeout`](crate::Error::Timeout), our key removed).
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Permit> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.acquire_until(Some((deadline, timeout))).await
    }

    async fn acquire_until(
        &self,
        deadline: Option<(tokio::time::Instant, Duration)>,
    ) -> Result<Permit> {
        let key = keys::holder_key(&self.prefix, &self.session);
        let line = Line::direct(&self.prefix);
        let created = keys::create_key(&self.session, &key, b"", &line, deadline).await?;
        let ahead = Ahead::FewerThan(&line, self.permits);
        let rev = keys::wait_in_line(&self.session, ahead, &key, created, deadline).await?;
        Ok(Permit {
            held: HeldKey::new(&self.session, key, rev),
        })
    }
}

/// A held semaphore slot; dropping it releases in the background.
#[derive(Debug)]
pub struct Permit {
    held: HeldKey,
}

impl Permit {
    /// A compare that holds only while we hold the permit.
    pub fn is_owner(&self) -> Compare {
        self.held.is_owner()
    }

    /// The key this permit created.
    pub fn key(&self) -> &str {
        &self.held.key
    }

    /// Create revision of the permit's key.
    pub fn fencing_token(&self) -> i64 {
        self.held.rev
    }

    /// Runs `ops` only while the permit is held; [`Error::NotOwner`](crate::Error::NotOwner) otherwise.
    pub async fn guarded_txn(
        &self,
        ops: Vec<etcd_client::TxnOp>,
    ) -> Result<etcd_client::TxnResponse> {
        self.held.guarded_txn(ops).await
    }

    /// Resolves when the permit is lost (session lost or key deleted).
    pub async fn lost(&self) -> LostReason {
        self.held.lost().await
    }

    /// Gives the permit back; [`Error::NotOwner`](crate::Error::NotOwner) if it was already lost.
    pub async fn release(self) -> Result<()> {
        self.held.release().await
    }
}
