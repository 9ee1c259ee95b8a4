//! Transactions: a small typed builder over etcd's compare / then / else,
//! and software transactional memory ([`Stm`]) retried on conflict, with
//! etcd's four isolation levels.
//!
//! The STM keeps a read set (value and mod revision of every key read) and
//! a write set (buffered puts and deletes). Commit is **one** etcd txn:
//! "if what I read is unchanged, apply my writes". When the compare fails,
//! the closure runs again from scratch on fresh reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex as StdMutex};

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KeyValue, Txn as EtcdTxn, TxnOp, TxnOpResponse,
};

use crate::error::{Error, Result, ctx};

/// A condition of a [`Txn`].
///
/// ```
/// use etcd_patterns::txn::Cmp;
/// let absent = Cmp::absent("jobs/42");
/// let unchanged = Cmp::mod_revision("config/limits", 17);
/// let is_on = Cmp::value("flags/x", "on");
/// ```
#[derive(Debug, Clone)]
pub struct Cmp(Compare);

impl Cmp {
    /// The key does not exist.
    pub fn absent(key: impl Into<Vec<u8>>) -> Cmp {
        Cmp(Compare::create_revision(key, CompareOp::Equal, 0))
    }

    /// The key exists.
    pub fn exists(key: impl Into<Vec<u8>>) -> Cmp {
        Cmp(Compare::create_revision(key, CompareOp::Greater, 0))
    }

    /// The key's value equals `value`.
    pub fn value(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Cmp {
        Cmp(Compare::value(key, CompareOp::Equal, value))
    }

    /// The key's mod revision equals `revision` (0 = absent): nobody wrote
    /// it since you read it.
    pub fn mod_revision(key: impl Into<Vec<u8>>, revision: i64) -> Cmp {
        Cmp(Compare::mod_revision(key, CompareOp::Equal, revision))
    }

    /// The key's create revision equals `revision` (a lock or leader key
    /// is still the same incarnation).
    pub fn create_revision(key: impl Into<Vec<u8>>, revision: i64) -> Cmp {
        Cmp(Compare::create_revision(key, CompareOp::Equal, revision))
    }

    /// Any etcd-client compare.
    pub fn raw(compare: Compare) -> Cmp {
        Cmp(compare)
    }
}

/// One operation of a [`Txn`] branch.
#[derive(Debug, Clone)]
pub enum Op {
    /// Write a value.
    Put(String, Vec<u8>),
    /// Delete a key.
    Delete(String),
    /// Read a key.
    Get(String),
}

impl Op {
    fn into_etcd(self) -> TxnOp {
        match self {
            Op::Put(k, v) => TxnOp::put(k, v, None),
            Op::Delete(k) => TxnOp::delete(k, None),
            Op::Get(k) => TxnOp::get(k, None),
        }
    }
}

/// What a committed [`Txn`] did.
#[derive(Debug, Clone)]
pub struct TxnOutcome {
    /// Whether every compare held (the `then` branch ran).
    pub succeeded: bool,
    /// The revision after the txn.
    pub revision: i64,
    /// For each `Get` of the branch that ran, in order: the key-value if
    /// the key exists.
    pub gets: Vec<Option<KeyValue>>,
}

/// A typed compare / then / else transaction.
///
/// ```no_run
/// # async fn demo(client: etcd_client::Client) -> Result<(), etcd_patterns::Error> {
/// use etcd_patterns::txn::{Cmp, Op, Txn};
/// let out = Txn::new()
///     .when(Cmp::absent("jobs/42/owner"))
///     .then(Op::Put("jobs/42/owner".into(), b"worker-a".to_vec()))
///     .otherwise(Op::Get("jobs/42/owner".into()))
///     .commit(&client)
///     .await?;
/// if !out.succeeded {
///     println!("taken by {:?}", out.gets[0].as_ref().map(|kv| kv.value_str().ok()));
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Txn {
    when: Vec<Cmp>,
    then: Vec<Op>,
    otherwise: Vec<Op>,
}

impl Txn {
    /// An empty txn (no compare: `then` always runs).
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds a compare (all must hold).
    pub fn when(mut self, cmp: Cmp) -> Txn {
        self.when.push(cmp);
        self
    }

    /// Adds an operation run when every compare holds.
    pub fn then(mut self, op: Op) -> Txn {
        self.then.push(op);
        self
    }

    /// Adds an operation run when a compare fails.
    pub fn otherwise(mut self, op: Op) -> Txn {
        self.otherwise.push(op);
        self
    }

    /// Sends the txn.
    pub async fn commit(self, client: &Client) -> Result<TxnOutcome> {
        let txn = EtcdTxn::new()
            .when(self.when.into_iter().map(|c| c.0).collect::<Vec<_>>())
            .and_then(self.then.into_iter().map(Op::into_etcd).collect::<Vec<_>>())
            .or_else(
                self.otherwise
                    .into_iter()
                    .map(Op::into_etcd)
                    .collect::<Vec<_>>(),
            );
        let resp = client
            .kv_client()
            .txn(txn)
            .await
            .map_err(ctx("committing a txn"))?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let gets = resp
            .op_responses()
            .into_iter()
            .filter_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g.kvs().first().cloned()),
                _ => None,
            })
            .collect();
        Ok(TxnOutcome {
            succeeded: resp.succeeded(),
            revision,
            gets,
        })
    }
}

/// etcd's STM isolation levels (as in Go's `concurrency/stm.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// All reads at the revision of the first read (one snapshot); commit
    /// fails if any key read *or written* changed since that revision.
    /// Strongest: no write skew.
    SerializableSnapshot,
    /// All reads at the revision of the first read; commit fails if any key
    /// read changed.
    Serializable,
    /// Each key read at its latest revision, once (repeated reads return the
    /// same value); commit fails if any key read changed.
    RepeatableReads,
    /// Each read sees the latest committed value; commit never conflicts.
    ReadCommitted,
}

#[derive(Debug, Clone)]
struct Read {
    value: Option<Vec<u8>>,
    /// 0 = absent.
    mod_revision: i64,
}

/// The view of one STM attempt: buffered reads and writes. A cheap handle
/// (clones share the attempt), so the closure given to [`run`] can own it
/// inside an `async move` block.
#[derive(Clone)]
pub struct Stm {
    client: Client,
    isolation: Isolation,
    state: Arc<StdMutex<StmState>>,
}

#[derive(Default)]
struct StmState {
    reads: HashMap<String, Read>,
    writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Revision of the first read (the snapshot of the serializable levels).
    snapshot: Option<i64>,
}

impl std::fmt::Debug for Stm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("Stm")
            .field("isolation", &self.isolation)
            .field("reads", &st.reads.len())
            .field("writes", &st.writes.len())
            .field("snapshot", &st.snapshot)
            .finish()
    }
}

impl Stm {
    fn new(client: Client, isolation: Isolation) -> Stm {
        Stm {
            client,
            isolation,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StmState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key` as this transaction sees it (its own writes
    /// first), `None` if absent.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let snapshot = {
            let st = self.lock();
            if let Some(w) = st.writes.get(key) {
                return Ok(w.clone());
            }
            if self.isolation != Isolation::ReadCommitted {
                if let Some(r) = st.reads.get(key) {
                    return Ok(r.value.clone());
                }
            }
            st.snapshot
        };
        let serializable = matches!(
            self.isolation,
            Isolation::SerializableSnapshot | Isolation::Serializable
        );
        let opts = match (serializable, snapshot) {
            // Linearizable even at a fixed revision: a lagging member would
            // answer "future revision" to a serializable read.
            (true, Some(rev)) => Some(GetOptions::new().with_revision(rev)),
            _ => None,
        };
        let resp = self
            .client
            .kv_client()
            .get(key, opts)
            .await
            .map_err(ctx(format!("STM read of {key}")))?;
        let kv = resp.kvs().first();
        let read = Read {
            value: kv.map(|kv| kv.value().to_vec()),
            mod_revision: kv.map(|kv| kv.mod_revision()).unwrap_or(0),
        };
        let value = read.value.clone();
        let mut st = self.lock();
        if st.snapshot.is_none() {
            st.snapshot = resp.header().map(|h| h.revision());
        }
        st.reads.insert(key.to_string(), read);
        Ok(value)
    }

    /// Like [`Stm::get`], parsed as UTF-8 (lossily).
    pub async fn get_string(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .get(key)
            .await?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Buffers a write (applied at commit).
    pub fn put(&self, key: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.lock().writes.insert(key.into(), Some(value.into()));
    }

    /// Buffers a delete (applied at commit).
    pub fn delete(&self, key: impl Into<String>) {
        self.lock().writes.insert(key.into(), None);
    }

    /// The compares that make the commit fail on a conflict.
    fn guards(&self, st: &StmState) -> Vec<Compare> {
        let reads = || {
            st.reads
                .iter()
                .map(|(k, r)| Compare::mod_revision(k.as_str(), CompareOp::Equal, r.mod_revision))
        };
        match self.isolation {
            Isolation::ReadCommitted => Vec::new(),
            Isolation::RepeatableReads | Isolation::Serializable => reads().collect(),
            Isolation::SerializableSnapshot => {
                let mut c: Vec<Compare> = reads().collect();
                if let Some(rev) = st.snapshot {
                    c.extend(
                        st.writes
                            .keys()
                            .map(|k| Compare::mod_revision(k.as_str(), CompareOp::Less, rev + 1)),
                    );
                }
                c
            }
        }
    }

    /// One txn: guards, then the writes. Returns whether it committed.
    async fn commit(&self) -> Result<bool> {
        let txn = {
            let st = self.lock();
            if st.writes.is_empty() && self.isolation == Isolation::ReadCommitted {
                return Ok(true);
            }
            let ops: Vec<TxnOp> = st
                .writes
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => TxnOp::put(k.as_str(), v.clone(), None),
                    None => TxnOp::delete(k.as_str(), None),
                })
                .collect();
            EtcdTxn::new().when(self.guards(&st)).and_then(ops)
        };
        let resp = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(ctx("committing an STM transaction"))?;
        Ok(resp.succeeded())
    }
}

/// How many times [`run`] tries before [`Error::TooManyConflicts`].
pub const MAX_ATTEMPTS: u32 = 100;

/// Runs `apply` as a transaction at `isolation`, retrying it (from fresh
/// reads) while the commit conflicts; returns its result once committed.
/// An error from `apply` aborts without writing.
///
/// ```no_run
/// # async fn demo(client: etcd_client::Client) -> Result<(), etcd_patterns::Error> {
/// use etcd_patterns::txn::{Isolation, run};
/// run(&client, Isolation::SerializableSnapshot, |stm| async move {
///     let a: i64 = stm.get_string("acct/a").await?.and_then(|v| v.parse().ok()).unwrap_or(0);
///     let b: i64 = stm.get_string("acct/b").await?.and_then(|v| v.parse().ok()).unwrap_or(0);
///     stm.put("acct/a", (a - 10).to_string());
///     stm.put("acct/b", (b + 10).to_string());
///     Ok(())
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn run<R, F, Fut>(client: &Client, isolation: Isolation, mut apply: F) -> Result<R>
where
    F: FnMut(Stm) -> Fut,
    Fut: Future<Output = Result<R>>,
{
    for _ in 0..MAX_ATTEMPTS {
        let stm = Stm::new(client.clone(), isolation);
        let out = apply(stm.clone()).await?;
        if stm.commit().await? {
            return Ok(out);
        }
    }
    Err(Error::TooManyConflicts {
        attempts: MAX_ATTEMPTS,
    })
}
