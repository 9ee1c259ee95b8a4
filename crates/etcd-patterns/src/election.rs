//! Leader election on plain KV transactions and watches (never the server's
//! Campaign RPC).
//!
//! A candidate owns `prefix<lease-hex>-<n>` (value = its proposal); the leader is
//! the oldest key by create revision. Campaigning is a mutex-style wait for
//! the immediate predecessor's DELETE; `proclaim` and `resign` are txns
//! guarded by our key's create revision, which also serves as the fencing
//! token of the term.

use std::time::Duration;

use std::sync::{Arc, Mutex as StdMutex};

use etcd_client::{Client, Compare, KeyValue, TxnOp, TxnResponse};
use tokio::sync::watch;
use tokio::time::sleep;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::AbortOnDropHandle;

use crate::error::{Error, Result};
use crate::keys::{self, Line};
use crate::mutex::{Hold, Mutex};
use crate::session::{LostReason, Session};
use crate::watch::{ResilientWatch, WatchOptions};

/// The current leader as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leader's key.
    pub key: String,
    /// Its proclaimed value.
    pub value: Vec<u8>,
    /// Create revision of the key: the term's fencing token.
    pub create_revision: i64,
    /// The leader's lease.
    pub lease: i64,
}

impl Leader {
    fn from_kv(kv: &KeyValue) -> Leader {
        Leader {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            lease: kv.lease(),
        }
    }
}

/// One candidate in an election (clones share its state; every campaign
/// creates a key of its own).
///
/// Campaigning is the [`Mutex`] queue with the proposal as the key's value.
///
/// ```no_run
/// # async fn demo(session: etcd_patterns::Session) -> Result<(), etcd_patterns::Error> {
/// use etcd_patterns::Election;
/// let election = Election::new(session, "elections/scheduler");
/// let term = election.campaign("node-a:8080").await?; // waits until we lead
/// println!("leading, fencing token {term}");
/// election.proclaim("node-a:8081").await?;
/// tokio::select! {
///     reason = election.lost() => eprintln!("leadership lost: {reason}"),
///     _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => election.resign().await?,
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Election {
    queue: Mutex,
    /// Clears the hold when our key or session is lost, so that
    /// [`Election::is_leader`] turns false without anyone calling `lost()`.
    monitor: Arc<StdMutex<Option<AbortOnDropHandle<()>>>>,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("key", &self.key())
            .field("leading", &self.fencing_token())
            .finish()
    }
}

impl Election {
    /// A candidate under `prefix` (trailing `/` added if missing).
    pub fn new(session: Session, prefix: impl Into<String>) -> Election {
        Election {
            queue: Mutex::new(session, prefix),
            monitor: Arc::default(),
        }
    }

    /// Our candidate key while leading (`prefix<lease-hex>-<n>`).
    pub fn key(&self) -> Option<String> {
        self.queue.key()
    }

    /// The session of this candidate.
    pub fn session(&self) -> &Session {
        self.queue.session()
    }

    fn not_owner(&self) -> Error {
        Error::NotOwner {
            key: self.queue.prefix().to_string(),
        }
    }

    /// The hold while leading: `None` once resigned, once our key is gone
    /// and once the session is lost.
    fn leading(&self) -> Option<Hold> {
        self.queue
            .hold()
            .filter(|_| self.session().lost_reason().is_none())
    }

    /// Waits until we lead, proposing `value`; returns the term's fencing
    /// token. Campaigning again while leading keeps the term and proclaims
    /// the new value. Dropping the future deletes our key.
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<i64> {
        let value = value.into();
        if let Some(hold) = self.leading() {
            match self.queue.put_value(&hold, value.clone()).await {
                Ok(()) => return Ok(hold.rev),
                // The term ended before the monitor noticed: campaign anew.
                Err(Error::NotOwner { .. }) => {
                    self.queue.take_hold(Some(hold.rev));
                }
                Err(e) => return Err(e),
            }
        }
        let hold = self.queue.acquire_key(&value, false, None).await?;
        self.watch_term(&hold);
        Ok(hold.rev)
    }

    /// Follows our key and session in the background and clears the hold
    /// when either is lost.
    fn watch_term(&self, hold: &Hold) {
        let queue = self.queue.clone();
        let (key, rev) = (hold.key.clone(), hold.rev);
        let task = tokio::spawn(async move {
            let reason = keys::until_key_lost(queue.session(), &key, rev).await;
            if queue.take_hold(Some(rev)).is_some() {
                tracing::warn!(%key, %reason, "leadership lost");
            }
        });
        *self.monitor.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(AbortOnDropHandle::new(task));
    }

    /// Restores leadership after a restart: with a session resumed on the
    /// old lease ([`Session::resume`]), finds our key and, if it is the
    /// oldest, leads again without a new campaign. Returns whether we lead.
    pub async fn resume(&self) -> Result<bool> {
        let lease = self.session().lease_id();
        let ours = self.leader().await?.filter(|l| l.lease == lease);
        let hold = ours.map(|l| Hold {
            key: l.key,
            rev: l.create_revision,
        });
        if let Some(h) = &hold {
            self.watch_term(h);
        }
        let leads = hold.is_some();
        self.queue.set_hold(hold);
        Ok(leads)
    }

    /// Publishes a new value while leading; [`Error::NotOwner`] otherwise.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        let hold = self.leading().ok_or_else(|| self.not_owner())?;
        self.queue.put_value(&hold, value.into()).await
    }

    /// Gives up leadership (deletes our key); [`Error::NotOwner`] if we did
    /// not lead or had already lost it.
    pub async fn resign(&self) -> Result<()> {
        self.monitor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.queue.unlock().await
    }

    /// The current leader, `None` if nobody leads.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        current_leader(self.session().client(), self.queue.prefix()).await
    }

    /// Whether this candidate won and has not resigned or lost its key or
    /// session. A local view, cleared within about a second of a loss: use
    /// [`Election::is_leader_compare`] to be sure inside a txn.
    pub fn is_leader(&self) -> bool {
        self.leading().is_some()
    }

    /// The term's fencing token (our key's create revision) while leading
    /// (`None` after a loss, like [`Election::is_leader`]).
    pub fn fencing_token(&self) -> Option<i64> {
        self.leading().map(|h| h.rev)
    }

    /// A compare that holds only while we lead; add it to your own txns.
    pub fn is_leader_compare(&self) -> Result<Compare> {
        self.queue.is_owner()
    }

    /// Runs `ops` only while we lead; [`Error::NotOwner`] otherwise.
    pub async fn guarded_txn(&self, ops: Vec<TxnOp>) -> Result<TxnResponse> {
        self.queue.guarded_txn(ops).await
    }

    /// Resolves when leadership is lost: session lost or our key deleted.
    /// Resolves at once when not leading.
    pub async fn lost(&self) -> LostReason {
        self.queue.lost().await
    }

    /// Follows the leader of this election (see [`Observer`]).
    pub async fn observe(&self) -> Result<Observer> {
        Observer::start(self.session().client().clone(), self.queue.prefix()).await
    }
}

async fn current_leader(client: &Client, prefix: &str) -> Result<Option<Leader>> {
    let (first, _) = keys::first_in_line(client, &Line::direct(prefix)).await?;
    Ok(first.as_ref().map(Leader::from_kv))
}

/// A live view of an election's leader, `None` meaning "no leader".
///
/// A background task lists the leader, follows the prefix with a
/// [`ResilientWatch`] from the listed revision + 1 and re-reads the leader
/// on every change. The watch resumes after a broken stream (member
/// failure) and re-lists after compaction, so no change is missed for
/// longer than one retry. A quiet watch is checked every 5 s with a
/// linearizable read; when that read fails the watch is moved to another
/// member (also consider `ConnectOptions::with_require_leader(true)`). The
/// task stops when the observer is dropped.
///
/// ```no_run
/// # async fn demo(client: etcd_client::Client) -> Result<(), etcd_patterns::Error> {
/// use etcd_patterns::Observer;
/// let mut observer = Observer::start(client, "elections/scheduler").await?;
/// println!("now: {:?}", observer.current());
/// while let Some(leader) = observer.next().await {
///     match leader {
///         Some(l) => println!("leader {}", String::from_utf8_lossy(&l.value)),
///         None => println!("no leader"),
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Observer {
    rx: watch::Receiver<Option<Leader>>,
    _stop: DropGuard,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("current", &*self.rx.borrow())
            .finish()
    }
}

impl Observer {
    /// Lists the leader of `prefix` once (so [`Observer::current`] is
    /// meaningful at once) and starts following it.
    pub async fn start(client: Client, prefix: &str) -> Result<Observer> {
        let prefix = keys::normalize_prefix(prefix);
        let (first, listed_at) = keys::first_in_line(&client, &Line::direct(&prefix)).await?;
        let (tx, rx) = watch::channel(first.as_ref().map(Leader::from_kv));
        let stop = CancellationToken::new();
        let task_stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = task_stop.cancelled() => {}
                _ = follow(client, prefix, listed_at, tx) => {}
            }
        });
        Ok(Observer {
            rx,
            _stop: stop.drop_guard(),
        })
    }

    /// The latest known leader.
    pub fn current(&self) -> Option<Leader> {
        self.rx.borrow().clone()
    }

    /// Waits for the next change and returns the new leader (`Some(None)`
    /// = nobody leads now). Returns `None` only if the observer task ended.
    pub async fn next(&mut self) -> Option<Option<Leader>> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }

    /// The underlying channel, for `select!` loops or several readers.
    pub fn receiver(&self) -> watch::Receiver<Option<Leader>> {
        self.rx.clone()
    }
}

/// How often a quiet observer re-reads the leader to detect a stalled watch.
const RECHECK: Duration = Duration::from_secs(5);

/// Follows the election with a [`ResilientWatch`] (which resumes after
/// broken streams and re-lists after compaction) from the listed revision
/// + 1, re-reading the leader after every change.
async fn follow(client: Client, prefix: String, listed_at: i64, tx: watch::Sender<Option<Leader>>) {
    let publish = |leader: Option<Leader>| {
        tx.send_if_modified(|cur| {
            if *cur != leader {
                *cur = leader;
                true
            } else {
                false
            }
        });
    };
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(listed_at + 1)
        .with_stall_timeout(RECHECK);
    let Ok(mut changes) = ResilientWatch::start(client.clone(), prefix.as_str(), opts).await else {
        return;
    };
    loop {
        if tx.is_closed() {
            return;
        }
        match tokio::time::timeout(RECHECK, changes.next()).await {
            Ok(None) => return,
            Ok(Some(_)) => {
                // Coalesce a burst; the leader is re-read once for all of it.
                while changes.try_next().is_some() {}
                // The change must not be lost: retry the read until it answers.
                loop {
                    let read = tokio::time::timeout(RECHECK, current_leader(&client, &prefix));
                    match read
                        .await
                        .unwrap_or_else(|_| Err(Error::Unexpected("no answer".into())))
                    {
                        Ok(l) => {
                            publish(l);
                            break;
                        }
                        Err(e) => {
                            tracing::debug!(%prefix, error = %e, "observer read failed; retrying");
                            if tx.is_closed() {
                                return;
                            }
                            sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
            // Quiet: a linearizable read catches a change a stalled watch
            // missed; when it fails (no quorum through this client), move
            // the watch to another member.
            Err(_) => match tokio::time::timeout(RECHECK, current_leader(&client, &prefix)).await {
                Ok(Ok(l)) => publish(l),
                _ => changes.reconnect(),
            },
        }
    }
}

/// Reads the leader of an election under `prefix` without campaigning.
///
/// ```no_run
/// # async fn demo(client: etcd_client::Client) -> Result<(), etcd_patterns::Error> {
/// let leader = etcd_patterns::election::leader_of(&client, "elections/scheduler").await?;
/// # Ok(()) }
/// ```
pub async fn leader_of(client: &Client, prefix: &str) -> Result<Option<Leader>> {
    current_leader(client, &keys::normalize_prefix(prefix)).await
}
