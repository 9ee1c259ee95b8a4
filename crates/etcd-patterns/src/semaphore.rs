//! A counting semaphore: at most `permits` sessions hold it at once.
//!
//! Each contender creates `prefix<lease-hex>`; the holders are the `permits`
//! oldest keys by create revision (FIFO). A waiter re-checks on every DELETE
//! under the prefix, so a release wakes all waiters (fine for the small
//! queues semaphores usually have).

use std::time::Duration;

use etcd_client::Compare;

use crate::error::Result;
use crate::keys::{self, Ahead, CleanupOnDrop, HeldKey};
use crate::session::{LostReason, Session};

/// A distributed counting semaphore for one session (one permit per session).
///
/// All contenders must agree on `permits`.
///
/// ```no_run
/// # async fn demo(session: etcd_patterns::Session) -> Result<(), etcd_patterns::Error> {
/// use etcd_patterns::Semaphore;
/// let sem = Semaphore::new(session, "sem/downloads", 3);
/// let permit = sem.acquire().await?; // at most 3 sessions get here at once
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
        let key = keys::lease_key(&self.prefix, self.session.lease_id());
        let mut cleanup = CleanupOnDrop::new(self.session.client(), &key);
        let created =
            keys::create_own_key_until(&self.session, &key, b"", &self.prefix, deadline).await?;
        cleanup.set_rev(created.rev);
        let ahead = Ahead::FewerThan(&self.prefix, self.permits);
        keys::wait_in_line(&self.session, ahead, &key, created.rev, cleanup, deadline).await?;
        Ok(Permit {
            held: HeldKey::new(&self.session, key, created.rev),
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

    /// Resolves when the permit is lost (session lost or key deleted).
    pub async fn lost(&self) -> LostReason {
        self.held.lost().await
    }

    /// Gives the permit back; [`Error::NotOwner`](crate::Error::NotOwner) if it was already lost.
    pub async fn release(self) -> Result<()> {
        self.held.release().await
    }
}
