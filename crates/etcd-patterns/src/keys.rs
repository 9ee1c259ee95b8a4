//! The few etcd transactions every queue-style recipe shares: create your
//! own key under the session lease, wait for the DELETE of your immediate
//! predecessor, and notice when your own key disappears.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchFilterType, WatchOptions,
};
use tokio::time::sleep;

use crate::error::{Error, Result, ctx};
use crate::session::{LostReason, Session};

/// Pause after a failed watch or read before trying again.
const RETRY: Duration = Duration::from_millis(100);

/// `prefix/` with exactly one trailing slash.
pub(crate) fn normalize_prefix(prefix: impl Into<String>) -> String {
    let mut p = prefix.into();
    if !p.ends_with('/') {
        p.push('/');
    }
    p
}

/// `prefix<lease-hex>`: one key per session under a recipe's prefix.
pub(crate) fn lease_key(prefix: &str, lease: i64) -> String {
    format!("{prefix}{lease:x}")
}

/// The n-th response of a txn as a list of key-values.
pub(crate) fn txn_kvs(resp: &TxnResponse, n: usize, what: &str) -> Result<Vec<KeyValue>> {
    match resp.op_responses().into_iter().nth(n) {
        Some(TxnOpResponse::Get(mut g)) => Ok(g.take_kvs()),
        _ => Err(Error::Unexpected(format!(
            "{what}: txn response {n} is not a range response"
        ))),
    }
}

pub(crate) fn header_revision(resp: &TxnResponse, what: &str) -> Result<i64> {
    resp.header()
        .map(|h| h.revision())
        .ok_or_else(|| Error::Unexpected(format!("{what}: txn response without header")))
}

/// Oldest key under `prefix` (by create revision).
pub(crate) fn first_by_create() -> GetOptions {
    GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1)
}

/// Waits in line like [`wait_predecessor`], giving up with [`Error::Timeout`]
/// at `deadline`. On any failure our key is deleted *before* returning, so
/// an immediate retry by the same session cannot race a background delete.
pub(crate) async fn wait_in_line(
    session: &Session,
    ahead: Ahead<'_>,
    key: &str,
    rev: i64,
    cleanup: CleanupOnDrop,
    deadline: Option<(tokio::time::Instant, Duration)>,
) -> Result<()> {
    let wait = wait_predecessor(session, ahead, key, rev);
    let result = match deadline {
        None => wait.await,
        Some((at, waited)) => tokio::time::timeout_at(at, wait).await.unwrap_or_else(|_| {
            Err(Error::Timeout {
                waited,
                what: format!("the keys ahead of {key}"),
            })
        }),
    };
    match result {
        Ok(()) => {
            cleanup.defuse();
            Ok(())
        }
        Err(e) => {
            cleanup.cleanup().await;
            Err(e)
        }
    }
}

/// Result of [`create_own_key`].
pub(crate) struct Created {
    /// Create revision of our key (the fencing token once acquired).
    pub rev: i64,
    /// The oldest key under the `first_of` prefix at that revision.
    pub first: Option<KeyValue>,
    /// Our key's current value when it already existed.
    pub existing_value: Option<Vec<u8>>,
}

/// One txn: create `key` under the session lease unless it exists, and read
/// the oldest key under `first_of`. Ordering by create revision is what makes
/// the queue FIFO.
pub(crate) async fn create_own_key(
    session: &Session,
    key: &str,
    value: &[u8],
    first_of: &str,
) -> Result<Created> {
    let what = format!("creating {key}");
    let put = PutOptions::new().with_lease(session.lease_id());
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(key, value, Some(put)),
            TxnOp::get(first_of, Some(first_by_create())),
        ])
        .or_else([
            TxnOp::get(key, None),
            TxnOp::get(first_of, Some(first_by_create())),
        ]);
    let resp = session
        .client()
        .kv_client()
        .txn(txn)
        .await
        .map_err(ctx(what.clone()))?;
    let header_rev = header_revision(&resp, &what)?;
    let first = txn_kvs(&resp, 1, &what)?.into_iter().next();
    if resp.succeeded() {
        return Ok(Created {
            rev: header_rev,
            first,
            existing_value: None,
        });
    }
    let mine = txn_kvs(&resp, 0, &what)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Unexpected(format!("{what}: key vanished inside a txn")))?;
    if mine.lease() != session.lease_id() {
        return Err(Error::Unexpected(format!(
            "{what}: the key exists under lease {:x}, not this session's {:x}",
            mine.lease(),
            session.lease_id()
        )));
    }
    Ok(Created {
        rev: mine.create_revision(),
        first,
        existing_value: Some(mine.value().to_vec()),
    })
}

/// [`create_own_key`] that gives up with [`Error::Timeout`] at `deadline`.
pub(crate) async fn create_own_key_until(
    session: &Session,
    key: &str,
    value: &[u8],
    first_of: &str,
    deadline: Option<(tokio::time::Instant, Duration)>,
) -> Result<Created> {
    let create = create_own_key(session, key, value, first_of);
    match deadline {
        None => create.await,
        Some((at, waited)) => tokio::time::timeout_at(at, create)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    waited,
                    what: format!("creating {key}"),
                })
            }),
    }
}

/// Deletes `key` if its create revision is still `rev`. Returns whether it did.
pub(crate) async fn delete_if_owner(client: &Client, key: &str, rev: i64) -> Result<bool> {
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, rev)])
        .and_then([TxnOp::delete(key, None)]);
    let resp = client
        .kv_client()
        .txn(txn)
        .await
        .map_err(ctx(format!("deleting {key}")))?;
    Ok(resp.succeeded())
}

/// Deletes our key if it is still ours; [`Error::NotOwner`] if it was not.
pub(crate) async fn release(client: &Client, key: &str, rev: i64) -> Result<()> {
    if delete_if_owner(client, key, rev).await? {
        Ok(())
    } else {
        Err(Error::NotOwner {
            key: key.to_string(),
        })
    }
}

/// A compare that holds only while `key` is the one we created at `rev`.
pub(crate) fn owner_compare(key: &str, rev: i64) -> Compare {
    Compare::create_revision(key, CompareOp::Equal, rev)
}

/// Runs `ops` in one txn only while we own `key` (created at `rev`);
/// nothing is applied and [`Error::NotOwner`] is returned otherwise.
pub(crate) async fn guarded_txn(
    client: &Client,
    key: &str,
    rev: i64,
    ops: Vec<TxnOp>,
) -> Result<TxnResponse> {
    let txn = Txn::new().when([owner_compare(key, rev)]).and_then(ops);
    let resp = client
        .kv_client()
        .txn(txn)
        .await
        .map_err(ctx(format!("guarded txn on {key}")))?;
    if resp.succeeded() {
        Ok(resp)
    } else {
        Err(Error::NotOwner {
            key: key.to_string(),
        })
    }
}

/// A key we own (created under our session at `rev`): the shared core of the
/// lock guards. Dropping it without [`HeldKey::release`] deletes the key in
/// the background.
#[derive(Debug)]
pub(crate) struct HeldKey {
    pub session: Session,
    pub key: String,
    pub rev: i64,
    released: bool,
}

impl HeldKey {
    pub(crate) fn new(session: &Session, key: String, rev: i64) -> Self {
        HeldKey {
            session: session.clone(),
            key,
            rev,
            released: false,
        }
    }

    pub(crate) fn is_owner(&self) -> Compare {
        owner_compare(&self.key, self.rev)
    }

    pub(crate) async fn guarded_txn(&self, ops: Vec<TxnOp>) -> Result<TxnResponse> {
        guarded_txn(self.session.client(), &self.key, self.rev, ops).await
    }

    pub(crate) async fn lost(&self) -> LostReason {
        until_key_lost(&self.session, &self.key, self.rev).await
    }

    pub(crate) async fn release(mut self) -> Result<()> {
        self.released = true;
        release(self.session.client(), &self.key, self.rev).await
    }
}

impl Drop for HeldKey {
    fn drop(&mut self) {
        if !self.released {
            CleanupOnDrop::new(self.session.client(), &self.key).set_rev(self.rev);
        }
    }
}

/// What [`wait_predecessor`] must find before its key is first in line.
pub(crate) enum Ahead<'a> {
    /// Any key under this prefix created before ours (mutex, writer).
    Any(&'a str),
    /// Fewer than `n` keys under this prefix created before ours (semaphore).
    FewerThan(&'a str, i64),
}

/// Waits until our key (`key`, created at `rev`) is first in line.
///
/// Each round reads, in one txn at revision R, the keys ahead of ours and our
/// own key; if some key is ahead it watches, from R + 1, the DELETE of the
/// nearest one (the immediate predecessor, so one release wakes one waiter)
/// and of our own key. Watching from R + 1 rather than R matters: etcd 3.4
/// serves a watch on an already-committed revision from a ~100 ms catch-up
/// loop. Returns early with an error when our key vanishes or the session is lost.
pub(crate) async fn wait_predecessor(
    session: &Session,
    ahead: Ahead<'_>,
    key: &str,
    rev: i64,
) -> Result<()> {
    let client = session.client();
    let what = format!("waiting for the keys ahead of {key}");
    loop {
        if session.lost_reason().is_some() {
            return Err(session.expired_error());
        }
        let (range, opts) = match ahead {
            Ahead::Any(p) => (
                p,
                GetOptions::new()
                    .with_prefix()
                    .with_max_create_revision(rev - 1)
                    .with_sort(SortTarget::Create, SortOrder::Descend)
                    .with_limit(1)
                    .with_keys_only(),
            ),
            Ahead::FewerThan(p, n) => (
                p,
                GetOptions::new()
                    .with_prefix()
                    .with_max_create_revision(rev - 1)
                    .with_sort(SortTarget::Create, SortOrder::Ascend)
                    .with_limit(n)
                    .with_keys_only(),
            ),
        };
        let txn = Txn::new().and_then([
            TxnOp::get(range, Some(opts)),
            TxnOp::get(key, Some(GetOptions::new().with_keys_only())),
        ]);
        let resp = match client.kv_client().txn(txn).await {
            Ok(r) => r,
            Err(e) => {
                let err = Error::etcd(what.clone(), e);
                if !err.is_transient() {
                    return Err(err);
                }
                pause_unless_lost(session).await?;
                continue;
            }
        };
        let header_rev = header_revision(&resp, &what)?;
        let ahead_kvs = txn_kvs(&resp, 0, &what)?;
        check_own_key(session, key, rev, txn_kvs(&resp, 1, &what)?.first()).await?;
        let (watch_key, prefix_watch) = match ahead {
            Ahead::Any(_) => match ahead_kvs.first() {
                None => return Ok(()),
                Some(kv) => (kv.key().to_vec(), false),
            },
            Ahead::FewerThan(p, n) => {
                if (ahead_kvs.len() as i64) < n {
                    return Ok(());
                }
                // Any delete of an earlier key may admit us: watch the prefix.
                (p.as_bytes().to_vec(), true)
            }
        };
        wait_delete(session, &watch_key, prefix_watch, key, header_rev + 1).await?;
    }
}

/// Our key must still be the one we created. If it is gone because the
/// lease is gone, the session is marked lost and `SessionExpired` returned.
async fn check_own_key(
    session: &Session,
    key: &str,
    rev: i64,
    mine: Option<&KeyValue>,
) -> Result<()> {
    if mine.is_some_and(|kv| kv.create_revision() == rev) {
        return Ok(());
    }
    if session.lost_reason().is_none() && lease_gone(session).await {
        session.mark_lost(LostReason::Expired);
    }
    if session.lost_reason().is_some() {
        Err(session.expired_error())
    } else {
        Err(Error::KeyDeleted {
            key: key.to_string(),
        })
    }
}

async fn pause_unless_lost(session: &Session) -> Result<()> {
    tokio::select! {
        _ = session.lost() => Err(session.expired_error()),
        _ = sleep(RETRY) => Ok(()),
    }
}

/// Waits, from `start_rev`, for a DELETE of `target` (or of any key under it
/// when `prefix`) or of our own key. Returns `Ok` on either (the caller
/// re-reads), and also after a watch error (after a pause).
async fn wait_delete(
    session: &Session,
    target: &[u8],
    prefix: bool,
    own: &str,
    start_rev: i64,
) -> Result<()> {
    let opts = WatchOptions::new()
        .with_start_revision(start_rev)
        .with_filters([WatchFilterType::NoPut]);
    let target_opts = if prefix {
        opts.clone().with_prefix()
    } else {
        opts.clone()
    };
    let mut stream = match session
        .client()
        .watch_client()
        .watch(target.to_vec(), Some(target_opts))
        .await
    {
        Ok(s) => s,
        Err(_) => return pause_unless_lost(session).await,
    };
    if stream.watch(own, Some(opts)).await.is_err() {
        return pause_unless_lost(session).await;
    }
    loop {
        let msg = tokio::select! {
            _ = session.lost() => return Err(session.expired_error()),
            m = stream.message() => m,
        };
        match msg {
            Ok(Some(resp)) => {
                if resp.canceled() {
                    return Ok(());
                }
                if resp
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return Ok(());
                }
            }
            Ok(None) | Err(_) => return pause_unless_lost(session).await,
        }
    }
}

/// Resolves when `key` no longer exists with create revision `rev`, or the
/// session is lost. Used by `lost()` of locks and elections.
pub(crate) async fn until_key_lost(session: &Session, key: &str, rev: i64) -> LostReason {
    let watch_own = async {
        loop {
            let resp = match session.client().kv_client().get(key, None).await {
                Ok(r) => r,
                Err(_) => {
                    sleep(RETRY).await;
                    continue;
                }
            };
            match resp.kvs().first() {
                Some(kv) if kv.create_revision() == rev => {}
                _ => return,
            }
            let start = resp.header().map(|h| h.revision()).unwrap_or(0) + 1;
            let opts = WatchOptions::new()
                .with_start_revision(start)
                .with_filters([WatchFilterType::NoPut]);
            if let Ok(mut stream) = session.client().watch_client().watch(key, Some(opts)).await {
                while let Ok(Some(resp)) = stream.message().await {
                    if resp
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                    {
                        return;
                    }
                    if resp.canceled() {
                        break;
                    }
                }
            }
            sleep(RETRY).await;
        }
    };
    tokio::select! {
        reason = session.lost() => reason,
        _ = watch_own => {
            // A revoked or expired lease deletes our key at once, while the
            // keep-alive would notice only at its next renewal: tell the
            // session now, so everything else using it stops too.
            if lease_gone(session).await {
                session.mark_lost(LostReason::Expired);
            }
            session.lost_reason().unwrap_or(LostReason::KeyDeleted)
        }
    }
}

/// Whether the server says the session's lease no longer exists.
async fn lease_gone(session: &Session) -> bool {
    match session
        .client()
        .lease_client()
        .time_to_live(session.lease_id(), None)
        .await
    {
        Ok(resp) => resp.ttl() <= 0,
        Err(_) => false,
    }
}

/// Deletes our key unless defused: makes a dropped `lock()`/`campaign()`
/// future leave no key behind.
pub(crate) struct CleanupOnDrop {
    client: Client,
    key: String,
    rev: Option<i64>,
}

impl CleanupOnDrop {
    pub(crate) fn new(client: &Client, key: &str) -> Self {
        CleanupOnDrop {
            client: client.clone(),
            key: key.to_string(),
            rev: None,
        }
    }

    pub(crate) fn set_rev(&mut self, rev: i64) {
        self.rev = Some(rev);
    }

    pub(crate) fn defuse(mut self) {
        self.rev = None;
    }

    /// Deletes now (awaiting it) and defuses.
    pub(crate) async fn cleanup(mut self) {
        if let Some(rev) = self.rev.take() {
            let _ = delete_if_owner(&self.client, &self.key, rev).await;
        }
    }
}

impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        if let (Some(rev), Ok(rt)) = (self.rev.take(), tokio::runtime::Handle::try_current()) {
            let client = self.client.clone();
            let key = std::mem::take(&mut self.key);
            rt.spawn(async move {
                let _ = delete_if_owner(&client, &key, rev).await;
            });
        }
    }
}
