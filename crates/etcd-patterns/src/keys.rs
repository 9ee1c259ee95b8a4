//! The few etcd transactions every queue-style recipe shares: create a key
//! of our own under the session lease, wait for the DELETE of the nearest
//! key ahead, and notice when our own key disappears.
//!
//! Every acquisition creates a key of its own, `prefix<lease-hex>-<n>` with
//! `n` counted per session, so a key is never reused: a release still in
//! flight (from a dropped guard or a cancelled `lock()`) can only delete the
//! key it was for, and two holders on one session never share a key.
//!
//! The create txn runs on a task of its own. If the caller goes away while
//! it is in flight (a dropped future, a timeout), the task still learns
//! whether etcd applied it and deletes the key it created, so a cancelled
//! acquisition never leaves a key that blocks the queue until the session
//! ends.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchFilterType, WatchOptions,
};
use tokio::sync::oneshot;
use tokio::time::sleep;

use crate::error::{Error, Result, ctx};
use crate::session::{LostReason, Session};

/// Pause after a failed watch or read before trying again.
const RETRY: Duration = Duration::from_millis(100);

/// How long one read may take before it is retried: a frozen member never
/// answers.
const READ_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long a read waits before the same read is also sent elsewhere.
const HEDGE: Duration = Duration::from_millis(150);

/// How often a waiter re-reads its place in line even without a watch
/// event: a watch served by a frozen or partitioned member stays quiet, so
/// the wait is bounded by this re-read, not by the watch.
const RECHECK: Duration = Duration::from_secs(1);

/// How often [`until_key_lost`] re-reads the key behind its watch.
const RECHECK_OWN: Duration = Duration::from_secs(2);

/// How long the create txn of an acquisition may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one background delete may take, and how long a background
/// release keeps trying in all (the key then goes with the lease once the
/// session is dropped).
const DELETE_TIMEOUT: Duration = Duration::from_secs(2);
const RELEASE_FOR: Duration = Duration::from_secs(60);

/// Keys read per page while scanning a queue.
const PAGE: i64 = 16;

/// `prefix/` with exactly one trailing slash.
pub(crate) fn normalize_prefix(prefix: impl Into<String>) -> String {
    let mut p = prefix.into();
    if !p.ends_with('/') {
        p.push('/');
    }
    p
}

/// `prefix<lease-hex>-<n>`: a key for one acquisition by `session`.
pub(crate) fn holder_key(prefix: &str, session: &Session) -> String {
    format!(
        "{prefix}{:x}-{:x}",
        session.lease_id(),
        session.next_holder_id()
    )
}

/// The keys that form one queue: the direct children of `prefix` (or of
/// `prefix<subdir>` for each subdir). Keys deeper down belong to nested
/// recipes (a lock on `a/` and one on `a/b/`) and are skipped, so nested
/// prefixes never block each other.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    prefix: String,
    subdirs: &'static [&'static str],
}

impl Line {
    /// The direct children of `prefix`.
    pub(crate) fn direct(prefix: &str) -> Line {
        Line {
            prefix: prefix.to_string(),
            subdirs: &[],
        }
    }

    /// The direct children of `prefix<subdir>` for each of `subdirs`.
    pub(crate) fn under(prefix: &str, subdirs: &'static [&'static str]) -> Line {
        Line {
            prefix: prefix.to_string(),
            subdirs,
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        let single = |rest: &[u8]| !rest.is_empty() && !rest.contains(&b'/');
        let Some(rest) = key.strip_prefix(self.prefix.as_bytes()) else {
            return false;
        };
        if self.subdirs.is_empty() {
            return single(rest);
        }
        self.subdirs
            .iter()
            .any(|d| rest.strip_prefix(d.as_bytes()).is_some_and(single))
    }
}

/// The n-th response of a txn as a list of key-values.
pub(crate) fn txn_kvs(resp: &TxnResponse, n: usize, what: &str) -> Result<Vec<KeyValue>> {
    Ok(txn_get(resp, n, what)?.take_kvs())
}

/// The n-th response of a txn as a range response.
fn txn_get(resp: &TxnResponse, n: usize, what: &str) -> Result<etcd_client::GetResponse> {
    match resp.op_responses().into_iter().nth(n) {
        Some(TxnOpResponse::Get(g)) => Ok(g),
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

/// Runs one read, hedged: every [`HEDGE`] without an answer the same read
/// is sent again, and the first answer wins. The client spreads requests
/// over its endpoints at random, so a member that is frozen (and never
/// answers) costs a hedge or two, not a timeout. Without any answer within
/// [`READ_TIMEOUT`] it is a transient error: the caller retries.
pub(crate) async fn bounded<T, F, Fut>(what: &str, read: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    use futures_util::StreamExt;
    let mut pending = futures_util::stream::FuturesUnordered::new();
    let give_up = tokio::time::Instant::now() + READ_TIMEOUT;
    let mut next_hedge = tokio::time::Instant::now() + HEDGE;
    let mut last_error = None;
    pending.push(read());
    loop {
        tokio::select! {
            Some(answer) = pending.next() => match answer {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let err = Error::etcd(what.to_string(), e);
                    if !err.is_transient() {
                        return Err(err);
                    }
                    last_error = Some(err);
                }
            },
            _ = tokio::time::sleep_until(next_hedge), if next_hedge < give_up => {
                pending.push(read());
                next_hedge += HEDGE;
            }
            _ = tokio::time::sleep_until(give_up) => {
                return Err(last_error
                    .unwrap_or_else(|| Error::etcd(what.to_string(), timed_out(READ_TIMEOUT))));
            }
        }
    }
}

/// A client-side timeout as an etcd-client error, classified transient.
pub(crate) fn timed_out(after: Duration) -> etcd_client::Error {
    etcd_client::Error::IoError(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within {after:?}"),
    ))
}

/// Range options for one page of a queue, oldest or newest first (add
/// `with_keys_only` where values are not needed).
fn page_opts(order: SortOrder, min_create: i64, max_create: i64, at: Option<i64>) -> GetOptions {
    let mut opts = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, order)
        .with_limit(PAGE);
    if min_create > 0 {
        opts = opts.with_min_create_revision(min_create);
    }
    if max_create > 0 {
        opts = opts.with_max_create_revision(max_create);
    }
    if let Some(rev) = at {
        opts = opts.with_revision(rev);
    }
    opts
}

/// The oldest key of `line` (by create revision) with its value, and the
/// revision it was read at.
pub(crate) async fn first_in_line(client: &Client, line: &Line) -> Result<(Option<KeyValue>, i64)> {
    let what = format!("reading the first key under {}", line.prefix());
    let (mut min_create, mut at) = (0, None);
    loop {
        let opts = page_opts(SortOrder::Ascend, min_create, 0, at);
        let mut page = client
            .kv_client()
            .get(line.prefix(), Some(opts))
            .await
            .map_err(ctx(what.clone()))?;
        // Later pages are read at the first page's revision; their headers
        // report the current revision, not that one.
        let revision = at.unwrap_or_else(|| page.header().map_or(0, |h| h.revision()));
        let more = page.more();
        let kvs = page.take_kvs();
        let last = kvs.last().map(KeyValue::create_revision);
        if let Some(kv) = kvs.into_iter().find(|kv| line.contains(kv.key())) {
            return Ok((Some(kv), revision));
        }
        match last {
            Some(last) if more => {
                min_create = last + 1;
                at = Some(revision);
            }
            _ => return Ok((None, revision)),
        }
    }
}

/// Whether no key of `line` was created before ours (`key` at `rev`).
pub(crate) async fn nothing_ahead(
    session: &Session,
    line: &Line,
    key: &str,
    rev: i64,
) -> Result<bool> {
    let scan = scan_ahead(session.client(), line, key, rev, true, 1).await?;
    Ok(scan.ahead.is_empty())
}

/// What one read of a queue found.
struct Scan {
    /// Keys of the line created before ours, nearest first for
    /// [`Ahead::Any`], oldest first for [`Ahead::FewerThan`]; at most as many
    /// as asked for.
    ahead: Vec<KeyValue>,
    /// Our own key, if it exists.
    mine: Option<KeyValue>,
    /// The revision everything was read at.
    revision: i64,
}

/// Reads, at one revision, up to `want` keys of `line` created before `rev`
/// (newest first when `nearest`, else oldest first) and our own `key`.
async fn scan_ahead(
    client: &Client,
    line: &Line,
    key: &str,
    rev: i64,
    nearest: bool,
    want: usize,
) -> Result<Scan> {
    let what = format!("reading the keys ahead of {key}");
    let order = if nearest {
        SortOrder::Descend
    } else {
        SortOrder::Ascend
    };
    let (mut min_create, mut max_create) = (0, rev - 1);
    let first = Txn::new().and_then([
        TxnOp::get(
            line.prefix(),
            Some(page_opts(order, min_create, max_create, None).with_keys_only()),
        ),
        TxnOp::get(key, Some(GetOptions::new().with_keys_only())),
    ]);
    let resp = bounded(&what, || {
        let (mut kv, txn) = (client.kv_client(), first.clone());
        async move { kv.txn(txn).await }
    })
    .await?;
    let revision = header_revision(&resp, &what)?;
    let mine = txn_get(&resp, 1, &what)?.take_kvs().into_iter().next();
    let mut page = txn_get(&resp, 0, &what)?;
    let mut ahead = Vec::new();
    loop {
        let more = page.more();
        let kvs = page.take_kvs();
        let Some(last) = kvs.last().map(KeyValue::create_revision) else {
            break;
        };
        ahead.extend(kvs.into_iter().filter(|kv| line.contains(kv.key())));
        if ahead.len() >= want || !more {
            break;
        }
        if nearest {
            max_create = last - 1;
        } else {
            min_create = last + 1;
        }
        let opts = page_opts(order, min_create, max_create, Some(revision)).with_keys_only();
        page = bounded(&what, || {
            let (mut kv, opts) = (client.kv_client(), opts.clone());
            async move { kv.get(line.prefix(), Some(opts)).await }
        })
        .await?;
    }
    ahead.truncate(want);
    Ok(Scan {
        ahead,
        mine,
        revision,
    })
}

/// A key just created for one acquisition, deleted again (in the
/// background) unless [`Created::keep`] hands it to a holder.
pub(crate) struct Created {
    /// Create revision of the key (the fencing token once acquired).
    pub rev: i64,
    /// Whether the create txn saw that nothing of the line is ahead
    /// (`Some(true)`) or that something is (`Some(false)`); `None` when its
    /// page held only keys of nested prefixes: read the line to know.
    pub free: Option<bool>,
    cleanup: CleanupOnDrop,
}

impl Created {
    /// The key now belongs to a holder: do not delete it.
    pub(crate) fn keep(self) {
        self.cleanup.defuse();
    }

    /// Deletes the key now (in the background if etcd does not answer).
    pub(crate) async fn discard(self) {
        self.cleanup.cleanup().await;
    }
}

/// Creates `key` with `value` under the session lease and reads, in the
/// same txn, the oldest keys of `blockers`. Ordering by create revision is
/// what makes the queue FIFO.
///
/// The txn runs on a task of its own: when this future is dropped, or
/// `deadline` passes, while the txn is in flight, the task deletes the key
/// once etcd has applied the txn, so a cancelled acquisition leaves nothing
/// behind.
pub(crate) async fn create_key(
    session: &Session,
    key: &str,
    value: &[u8],
    blockers: &Line,
    deadline: Option<(tokio::time::Instant, Duration)>,
) -> Result<Created> {
    let (tx, rx) = oneshot::channel();
    let task = (
        session.clone(),
        key.to_string(),
        value.to_vec(),
        blockers.clone(),
    );
    tokio::spawn(async move {
        let (session, key, value, blockers) = task;
        // A `Created` that nobody receives is dropped, which deletes the key.
        let _ = tx.send(create_txn(&session, &key, &value, &blockers).await);
    });
    let created = async {
        rx.await.unwrap_or_else(|_| {
            Err(Error::Unexpected(format!(
                "creating {key}: the create task ended without an answer"
            )))
        })
    };
    match deadline {
        None => created.await,
        Some((at, waited)) => tokio::time::timeout_at(at, created)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    waited,
                    what: format!("creating {key}"),
                })
            }),
    }
}

async fn create_txn(
    session: &Session,
    key: &str,
    value: &[u8],
    blockers: &Line,
) -> Result<Created> {
    if session.first_use_after_resume(&format!("{}{:?}", blockers.prefix, blockers.subdirs)) {
        drop_keys_of_earlier_process(session, blockers).await?;
    }
    let what = format!("creating {key}");
    let put = PutOptions::new().with_lease(session.lease_id());
    let oldest = page_opts(SortOrder::Ascend, 0, 0, None).with_keys_only();
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(key, value, Some(put)),
            TxnOp::get(blockers.prefix(), Some(oldest)),
        ]);
    let sent = tokio::time::timeout(CREATE_TIMEOUT, session.client().kv_client().txn(txn)).await;
    let resp = match sent {
        Ok(Ok(resp)) => resp,
        failed => {
            // Whether etcd applied the txn is unknown: the key may exist,
            // now or once the proposal commits. Its name is ours alone, so
            // delete it by name for a while.
            chase_unknown_create(session, key);
            return Err(match failed {
                Ok(Err(e)) => Error::etcd(what, e),
                _ => Error::etcd(what, timed_out(CREATE_TIMEOUT)),
            });
        }
    };
    if !resp.succeeded() {
        // Keys are never reused, so this is someone else's doing.
        return Err(Error::Unexpected(format!(
            "{what}: the key already exists; another process writes keys of this session's lease {:x}",
            session.lease_id()
        )));
    }
    let rev = header_revision(&resp, &what)?;
    let mut cleanup = CleanupOnDrop::new(session, key);
    cleanup.set_rev(rev);
    let page = txn_get(&resp, 1, &what)?;
    // The page is oldest first: the first key of the line decides; with
    // none in the page, only a complete page proves the line empty.
    let free = match page.kvs().iter().find(|kv| blockers.contains(kv.key())) {
        Some(kv) => Some(kv.create_revision() >= rev),
        None if !page.more() => Some(true),
        None => None,
    };
    Ok(Created { rev, free, cleanup })
}

/// Deletes `key` (if it carries our lease) a few times over ~10 s: a create
/// txn whose outcome is unknown may still commit after the first delete.
fn chase_unknown_create(session: &Session, key: &str) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (session, key) = (session.clone(), key.to_string());
    rt.spawn(async move {
        let mut pause = Duration::from_millis(200);
        for _ in 0..6 {
            if session.lost_reason().is_some() {
                return;
            }
            let txn = Txn::new()
                .when([Compare::lease(
                    key.as_str(),
                    CompareOp::Equal,
                    session.lease_id(),
                )])
                .and_then([TxnOp::delete(key.as_str(), None)]);
            let _ =
                tokio::time::timeout(DELETE_TIMEOUT, session.client().kv_client().txn(txn)).await;
            sleep(pause).await;
            pause *= 2;
        }
    });
}

/// A resumed lease may still carry keys of the process that held it before
/// (a lock it held, a place in a queue): that process is gone, so its keys
/// in `line` are deleted rather than left to block us behind ourselves.
async fn drop_keys_of_earlier_process(session: &Session, line: &Line) -> Result<()> {
    let what = format!(
        "reading keys of lease {:x} under {}",
        session.lease_id(),
        line.prefix()
    );
    let opts = GetOptions::new().with_prefix().with_keys_only();
    let read = || {
        let (mut kv, opts) = (session.client().kv_client(), opts.clone());
        async move { kv.get(line.prefix(), Some(opts)).await }
    };
    let resp = bounded(&what, read).await?;
    for kv in resp.kvs() {
        if kv.lease() != session.lease_id() || !line.contains(kv.key()) {
            continue;
        }
        let name = String::from_utf8_lossy(kv.key());
        let ours = name
            .rsplit_once('-')
            .and_then(|(_, id)| u64::from_str_radix(id, 16).ok())
            .is_some_and(|id| session.made_holder_id(id));
        if !ours {
            delete_if_owner(session.client(), &name, kv.create_revision()).await?;
        }
    }
    Ok(())
}

/// Waits in line like [`wait_predecessor`], giving up with [`Error::Timeout`]
/// at `deadline`. On any failure our key is deleted before returning.
pub(crate) async fn wait_in_line(
    session: &Session,
    ahead: Ahead<'_>,
    key: &str,
    created: Created,
    deadline: Option<(tokio::time::Instant, Duration)>,
) -> Result<i64> {
    let rev = created.rev;
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
            created.keep();
            Ok(rev)
        }
        Err(e) => {
            created.discard().await;
            Err(e)
        }
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
/// When etcd cannot be reached the error is returned *and* the delete goes
/// on in the background (until it lands or the session ends): a failed
/// unlock must not leave a key that blocks the queue for the session's life.
///
/// Cancellation-safe: if this future is dropped before etcd answered, the
/// delete is finished in the background.
pub(crate) async fn release(session: &Session, key: &str, rev: i64) -> Result<()> {
    let mut pending = CleanupOnDrop::new(session, key);
    pending.set_rev(rev);
    let answer = delete_if_owner(session.client(), key, rev).await;
    match answer {
        Ok(true) => {
            pending.defuse();
            Ok(())
        }
        Ok(false) => {
            pending.defuse();
            Err(Error::NotOwner {
                key: key.to_string(),
            })
        }
        // Dropping `pending` goes on deleting in the background.
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            pending.defuse();
            Err(e)
        }
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
        release(&self.session, &self.key, self.rev).await
    }
}

impl Drop for HeldKey {
    fn drop(&mut self) {
        if !self.released {
            release_in_background(&self.session, std::mem::take(&mut self.key), self.rev);
        }
    }
}

/// What [`wait_predecessor`] must find before its key is first in line.
pub(crate) enum Ahead<'a> {
    /// No key of this line created before ours (mutex, reader, writer).
    Any(&'a Line),
    /// Fewer than `n` keys of this line created before ours (semaphore).
    FewerThan(&'a Line, i64),
}

/// Waits until our key (`key`, created at `rev`) is first in line.
///
/// Each round reads, at one revision R, the keys ahead of ours and our own
/// key; if some key is ahead it watches, from R + 1, the DELETE of the
/// nearest one (the immediate predecessor, so one release wakes one waiter)
/// and of our own key, and re-reads after at most [`RECHECK`] even without
/// an event, since a watch on a frozen or partitioned member stays quiet.
/// Watching from R + 1 rather than R matters: etcd 3.4 serves a watch on an
/// already-committed revision from a ~100 ms catch-up loop. Returns early
/// with an error when our key vanishes or the session is lost.
pub(crate) async fn wait_predecessor(
    session: &Session,
    ahead: Ahead<'_>,
    key: &str,
    rev: i64,
) -> Result<()> {
    let client = session.client();
    loop {
        if session.lost_reason().is_some() {
            return Err(session.expired_error());
        }
        let (line, nearest, want) = match ahead {
            Ahead::Any(line) => (line, true, 1),
            Ahead::FewerThan(line, n) => (line, false, n as usize),
        };
        let scan = match scan_ahead(client, line, key, rev, nearest, want).await {
            Ok(s) => s,
            Err(err) if err.is_transient() => {
                pause_unless_lost(session, RETRY).await?;
                continue;
            }
            Err(err) => return Err(err),
        };
        check_own_key(session, key, rev, scan.mine.as_ref()).await?;
        let (watch_key, prefix_watch) = match ahead {
            Ahead::Any(_) => match scan.ahead.first() {
                None => return Ok(()),
                Some(kv) => (kv.key().to_vec(), false),
            },
            Ahead::FewerThan(line, n) => {
                if (scan.ahead.len() as i64) < n {
                    return Ok(());
                }
                // Any delete of an earlier key may admit us: watch the prefix.
                (line.prefix().as_bytes().to_vec(), true)
            }
        };
        wait_delete(session, &watch_key, prefix_watch, key, scan.revision + 1).await?;
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

async fn pause_unless_lost(session: &Session, pause: Duration) -> Result<()> {
    tokio::select! {
        _ = session.lost() => Err(session.expired_error()),
        _ = sleep(pause) => Ok(()),
    }
}

/// Waits, from `start_rev`, for a DELETE of `target` (or of any key under it
/// when `prefix`) or of our own key, at most [`RECHECK`]. Returns `Ok` in
/// every case but a lost session: the caller re-reads.
async fn wait_delete(
    session: &Session,
    target: &[u8],
    prefix: bool,
    own: &str,
    start_rev: i64,
) -> Result<()> {
    let watch = async {
        let opts = WatchOptions::new()
            .with_start_revision(start_rev)
            .with_filters([WatchFilterType::NoPut]);
        let target_opts = if prefix {
            opts.clone().with_prefix()
        } else {
            opts.clone()
        };
        let Ok(mut stream) = session
            .client()
            .watch_client()
            .watch(target.to_vec(), Some(target_opts))
            .await
        else {
            return sleep(RETRY).await;
        };
        if stream.watch(own, Some(opts)).await.is_err() {
            return sleep(RETRY).await;
        }
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        // No leader behind a require-leader client, or the
                        // revision compacted: re-read after a pause.
                        return sleep(RETRY).await;
                    }
                    if resp
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                    {
                        return;
                    }
                }
                Ok(None) | Err(_) => return sleep(RETRY).await,
            }
        }
    };
    tokio::select! {
        _ = session.lost() => Err(session.expired_error()),
        _ = watch => Ok(()),
        _ = sleep(RECHECK) => Ok(()),
    }
}

/// Resolves when `key` no longer exists with create revision `rev`, or the
/// session is lost. Used by `lost()` of locks and elections.
///
/// The key is watched and, since a watch on a frozen or partitioned member
/// stays quiet, re-read (linearizably, so only a member with a quorum
/// answers) every [`RECHECK_OWN`].
pub(crate) async fn until_key_lost(session: &Session, key: &str, rev: i64) -> LostReason {
    let what = format!("reading {key}");
    let watch_own = async {
        loop {
            let read = || {
                let mut kv = session.client().kv_client();
                async move { kv.get(key, None).await }
            };
            let resp = match bounded(&what, read).await {
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
            let deleted = async {
                let Ok(mut stream) = session.client().watch_client().watch(key, Some(opts)).await
                else {
                    return sleep(RETRY).await;
                };
                while let Ok(Some(resp)) = stream.message().await {
                    if resp.canceled() {
                        break;
                    }
                    if resp
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                    {
                        return;
                    }
                }
                sleep(RETRY).await;
            };
            tokio::select! {
                _ = deleted => {}
                _ = sleep(RECHECK_OWN) => {}
            }
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
    let read = || {
        let mut leases = session.client().lease_client();
        async move { leases.time_to_live(session.lease_id(), None).await }
    };
    match bounded("reading the session's lease", read).await {
        // -1: not found (revoked, or expired and revoked); a live lease
        // with under a second left reports 0.
        Ok(resp) => resp.ttl() < 0,
        Err(_) => false,
    }
}

/// Deletes `key` (if still created at `rev`) on a task of its own, retrying
/// while etcd is unreachable, until it is done or the session is lost (the
/// lease then takes the key with it).
pub(crate) fn release_in_background(session: &Session, key: String, rev: i64) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return; // no runtime: the key goes away with the lease
    };
    let session = session.clone();
    rt.spawn(async move {
        let mut pause = RETRY;
        let give_up = tokio::time::Instant::now() + RELEASE_FOR;
        loop {
            let attempt = tokio::time::timeout(
                DELETE_TIMEOUT,
                delete_if_owner(session.client(), &key, rev),
            )
            .await
            .unwrap_or_else(|_| Err(Error::etcd(format!("deleting {key}"), timed_out(DELETE_TIMEOUT))));
            match attempt {
                Ok(_) => return,
                Err(e) if e.is_transient() && session.lost_reason().is_none() => {
                    tracing::debug!(%key, error = %e, "background release failed; retrying");
                }
                Err(e) => {
                    if session.lost_reason().is_none() {
                        tracing::warn!(%key, error = %e, "background release failed");
                    }
                    return;
                }
            }
            if tokio::time::Instant::now() >= give_up {
                tracing::warn!(%key, "background release gave up; the key goes with the session's lease");
                return;
            }
            if pause_unless_lost(&session, pause).await.is_err() {
                return;
            }
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    });
}

/// Deletes our key unless defused: makes a dropped `lock()`/`campaign()`
/// future leave no key behind.
pub(crate) struct CleanupOnDrop {
    session: Session,
    key: String,
    rev: Option<i64>,
}

impl CleanupOnDrop {
    pub(crate) fn new(session: &Session, key: &str) -> Self {
        CleanupOnDrop {
            session: session.clone(),
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

    /// Deletes now, waiting at most [`DELETE_TIMEOUT`]; if that fails, times
    /// out or this future is dropped, the delete goes on in the background.
    pub(crate) async fn cleanup(mut self) {
        if let Some(rev) = self.rev {
            let done = tokio::time::timeout(
                DELETE_TIMEOUT,
                delete_if_owner(self.session.client(), &self.key, rev),
            )
            .await;
            if matches!(done, Ok(Ok(_))) {
                self.rev = None;
            }
        }
        // Still armed: `Drop` releases in the background.
    }
}

impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        if let Some(rev) = self.rev.take() {
            release_in_background(&self.session, std::mem::take(&mut self.key), rev);
        }
    }
}
