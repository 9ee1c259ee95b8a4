//! Named locks for one session, with wait-time and hold-time statistics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

use crate::error::{Error, Result};
use crate::keys;
use crate::mutex::{Mutex, MutexGuard};
use crate::session::Session;

/// Counters of one named lock, as seen by this manager.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockStats {
    /// Successful acquisitions.
    pub acquisitions: u64,
    /// Acquisitions that timed out or failed.
    pub failures: u64,
    /// Sum of the time spent waiting for successful acquisitions.
    pub total_wait: Duration,
    /// Longest wait.
    pub max_wait: Duration,
    /// Sum of completed hold times.
    pub total_hold: Duration,
    /// Longest completed hold.
    pub max_hold: Duration,
    /// Whether this manager holds the lock now.
    pub held: bool,
}

struct Entry {
    mutex: Mutex,
    /// Serializes local callers, so that this process has at most one key
    /// in etcd's queue per lock.
    local: Arc<tokio::sync::Mutex<()>>,
    stats: LockStats,
}

type Table = Arc<StdMutex<HashMap<String, Entry>>>;

/// Hands out named [`Mutex`]es under one prefix for one session, queueing
/// local callers of the same name in process before they queue in etcd.
///
/// ```no_run
/// # async fn demo(session: etcd_patterns::Session) -> Result<(), etcd_patterns::Error> {
/// use std::time::Duration;
/// use etcd_patterns::LockManager;
/// let locks = LockManager::new(session, "locks");
/// let guard = locks.lock("tenant-42", Duration::from_secs(5)).await?;
/// drop(guard);
/// println!("{:?}", locks.stats("tenant-42"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LockManager {
    session: Session,
    prefix: String,
    table: Table,
}

impl std::fmt::Debug for LockManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockManager")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl LockManager {
    /// A manager whose lock `name` lives under `prefix/name/`.
    pub fn new(session: Session, prefix: impl Into<String>) -> LockManager {
        LockManager {
            session,
            prefix: keys::normalize_prefix(prefix),
            table: Arc::default(),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes lock `name`, waiting at most `timeout` (in process and in etcd together).
    pub async fn lock(&self, name: &str, timeout: Duration) -> Result<ManagedGuard> {
        let (mutex, local) = {
            let mut table = self.table();
            let entry = table.entry(name.to_string()).or_insert_with(|| Entry {
                mutex: Mutex::new(self.session.clone(), format!("{}{name}", self.prefix)),
                local: Arc::default(),
                stats: LockStats::default(),
            });
            (entry.mutex.clone(), entry.local.clone())
        };
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, local.lock_owned()).await {
            Err(_) => Err(Error::Timeout {
                waited: timeout,
                what: format!("lock {}{name} (in process)", self.prefix),
            }),
            // The etcd wait gets the rest of the budget and cleans up its own key on timeout.
            Ok(local) => match mutex
                .lock_timeout(timeout.saturating_sub(started.elapsed()))
                .await
            {
                Ok(guard) => Ok((local, guard)),
                Err(e) => Err(e),
            },
        };
        let waited = started.elapsed();
        let mut table = self.table();
        let stats = table.get_mut(name).map(|e| &mut e.stats);
        match result {
            Ok((local, guard)) => {
                if let Some(s) = stats {
                    s.acquisitions += 1;
                    s.total_wait += waited;
                    s.max_wait = s.max_wait.max(waited);
                    s.held = true;
                }
                Ok(ManagedGuard {
                    guard: Some(guard),
                    _local: local,
                    name: name.to_string(),
                    table: self.table.clone(),
                    acquired: Instant::now(),
                })
            }
            Err(e) => {
                if let Some(s) = stats {
                    s.failures += 1;
                }
                Err(e)
            }
        }
    }

    /// Statistics of lock `name`, if it was ever requested.
    pub fn stats(&self, name: &str) -> Option<LockStats> {
        self.table().get(name).map(|e| e.stats.clone())
    }

    /// Statistics of every lock requested so far, by name.
    pub fn all_stats(&self) -> Vec<(String, LockStats)> {
        let mut all: Vec<_> = self
            .table()
            .iter()
            .map(|(k, e)| (k.clone(), e.stats.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// A lock held through a [`LockManager`]; records its hold time when released or dropped.
pub struct ManagedGuard {
    guard: Option<MutexGuard>,
    _local: OwnedMutexGuard<()>,
    name: String,
    table: Table,
    acquired: Instant,
}

impl std::fmt::Debug for ManagedGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedGuard")
            .field("name", &self.name)
            .field("guard", &self.guard)
            .finish()
    }
}

impl ManagedGuard {
    /// The underlying mutex guard (fencing token, guarded txns, `lost()`).
    pub fn guard(&self) -> Option<&MutexGuard> {
        self.guard.as_ref()
    }

    /// The fencing token of this hold.
    pub fn fencing_token(&self) -> Option<i64> {
        self.guard.as_ref().map(MutexGuard::fencing_token)
    }

    /// Releases the lock and reports errors (dropping releases in the background).
    pub async fn unlock(mut self) -> Result<()> {
        match self.guard.take() {
            Some(g) => g.unlock().await,
            None => Ok(()),
        }
    }
}

impl Drop for ManagedGuard {
    fn drop(&mut self) {
        let held = self.acquired.elapsed();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = table.get_mut(&self.name) {
            e.stats.total_hold += held;
            e.stats.max_hold = e.stats.max_hold.max(held);
            e.stats.held = false;
        }
        // `self.guard`, if still set, unlocks in the background when dropped.
    }
}
