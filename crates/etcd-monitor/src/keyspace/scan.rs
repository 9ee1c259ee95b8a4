//! The scan: paginated range reads from one member, paced and bounded.

use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};

use super::{Aggregator, KeyspaceReport};
use crate::connection::Dialer;
use crate::ops::CtlError;
use crate::ops::endpoint::status;
use crate::ops::keys::prefix_end;

/// Serializable (the member's own copy, no consensus round) or
/// linearizable reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Member-local reads: no load on the leader, at most slightly stale.
    #[default]
    Serializable,
    /// Reads confirmed by the leader.
    Linearizable,
}

/// How to scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Keys under this prefix (`""`: every key).
    pub prefix: String,
    /// Levels below the prefix to report.
    pub depth: usize,
    /// How many of the largest keys to list.
    pub top: usize,
    /// At most this many range requests per second (`None`: unpaced).
    pub rate: Option<f64>,
    /// Stop after this long, reporting what was read (`complete: false`).
    pub max_duration: Option<Duration>,
    /// Serializable by default.
    pub consistency: Consistency,
    /// Distinct prefix (and resource) buckets kept before folding.
    pub max_buckets: usize,
    /// Bytes one page should hold about: the page size in keys follows the
    /// values seen so far, so large values mean small pages.
    pub page_bytes: usize,
    /// At most this many keys per range request (`None`: as `page_bytes` gives).
    pub max_page_keys: Option<usize>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            prefix: String::new(),
            depth: 3,
            top: 10,
            rate: None,
            max_duration: None,
            consistency: Consistency::Serializable,
            max_buckets: 10_000,
            page_bytes: 4 << 20,
            max_page_keys: None,
        }
    }
}

/// Progress of a running scan, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Keys read.
    pub keys: u64,
    /// Keys under the prefix when the scan started (etcd's count).
    pub total: u64,
    /// Value bytes read.
    pub value_bytes: u64,
}

/// The first page's key count; the rest grows or shrinks with value sizes.
const FIRST_PAGE: i64 = 256;
/// The most keys one page asks for. etcd (3.4, 3.5) counts every key from
/// a page's start to the end of the range for each page, so a scan costs
/// the server O(keys^2 / page): pages are as large as memory allows.
const MAX_PAGE: i64 = 25_000;
/// Largest gRPC message accepted: a page of `page_bytes`, or one value of
/// etcd's largest request size (1.5 MiB by default, up to 10 MiB
/// configurable) with room.
const MAX_MESSAGE: usize = 16 << 20;

/// Chooses the member to read from among `urls`: a follower by default
/// (`leader: false`), the leader with `leader: true`; falls back to any
/// voting member that answers. Returns its client, endpoint and whether it
/// is the leader.
pub async fn choose_member(
    dialer: &Dialer,
    urls: &[String],
    leader: bool,
) -> Result<(Client, String, bool), CtlError> {
    let answers = futures_util::future::join_all(urls.iter().map(|u| status(dialer, u))).await;
    let mut voting = Vec::new();
    let mut errors = Vec::new();
    for (url, answer) in urls.iter().zip(answers) {
        match answer {
            Ok(s) if !s.is_learner => voting.push((url.clone(), s.is_leader())),
            Ok(_) => errors.push(format!("{url}: a learner")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let pick = voting
        .iter()
        .find(|(_, l)| *l == leader)
        .or_else(|| voting.first())
        .cloned();
    match pick {
        Some((url, is_leader)) => Ok((dialer.dial(&url).await?, url, is_leader)),
        None => Err(CtlError::Invalid(format!(
            "no voting member answered: {}",
            errors.join("; ")
        ))),
    }
}

/// gRPC's RESOURCE_EXHAUSTED and OUT_OF_RANGE: a page larger than a
/// message may be.
const TOO_LARGE: [i32; 2] = [8, 11];

fn is_too_large(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if TOO_LARGE.contains(&i32::from(s.code()))
            || s.message().contains("message length too large"))
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("required revision has been compacted"))
}

/// Scans every key under `opts.prefix` through `client` (one member), calling
/// `progress` after each page. Errors name the page's first key.
pub async fn scan(
    client: &Client,
    endpoint: &str,
    from_leader: bool,
    opts: &ScanOptions,
    mut progress: impl FnMut(Progress),
) -> Result<KeyspaceReport, CtlError> {
    let started = Instant::now();
    let at_ms = crate::time::unix_ms(std::time::SystemTime::now());
    let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
    let prefix = opts.prefix.as_bytes();
    let (mut key, end) = if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (prefix.to_vec(), prefix_end(prefix))
    };
    let mut agg = Aggregator::new(prefix, opts.depth, opts.top, opts.max_buckets);
    let cap = opts
        .max_page_keys
        .map_or(MAX_PAGE, |k| (k as i64).clamp(1, MAX_PAGE));
    let mut limit = FIRST_PAGE.min(cap);
    let mut revision = 0i64;
    let mut consistent = true;
    let mut total = 0u64;
    let mut requests = 0u64;
    let mut stopped = None;
    loop {
        if let Some(max) = opts.max_duration.filter(|m| started.elapsed() >= *m) {
            stopped = Some(format!(
                "max duration {} reached",
                humantime::format_duration(max)
            ));
            break;
        }
        if let Some(rate) = opts.rate {
            // Request n goes out no sooner than n / rate after the start.
            let due = started + Duration::from_secs_f64(requests as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let mut o = GetOptions::new().with_range(end.clone()).with_limit(limit);
        if opts.consistency == Consistency::Serializable {
            o = o.with_serializable();
        }
        if consistent && revision > 0 {
            o = o.with_revision(revision);
        }
        requests += 1;
        let resp = match kv.get(key.clone(), Some(o)).await {
            Ok(r) => r,
            Err(e) if is_too_large(&e) && limit > 1 => {
                limit = (limit / 2).max(1);
                continue;
            }
            Err(e) if is_compacted(&e) && consistent => {
                // Keep going at the newest revision rather than fail a long scan.
                consistent = false;
                continue;
            }
            Err(e) => {
                return Err(CtlError::etcd(
                    format!(
                        "range from {:?} on {endpoint}",
                        String::from_utf8_lossy(&key)
                    ),
                    e,
                ));
            }
        };
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
            total = resp.count().max(0) as u64;
        }
        let kvs = resp.kvs();
        let mut page_bytes = 0u64;
        for kv in kvs {
            agg.add(kv.key(), kv.value().len() as u64, kv.mod_revision());
            page_bytes += (kv.key().len() + kv.value().len()) as u64;
        }
        let (_, value_bytes) = agg.bytes();
        progress(Progress {
            keys: agg.keys(),
            total,
            value_bytes,
        });
        match kvs.last() {
            Some(last) if resp.more() => {
                key = last.key().to_vec();
                key.push(0);
                let per_key = (page_bytes / kvs.len() as u64).max(1);
                limit = ((opts.page_bytes as u64 / per_key) as i64).clamp(1, cap);
            }
            _ => break,
        }
    }
    let (key_bytes, value_bytes) = agg.bytes();
    let scanned_keys = agg.keys();
    let folded_keys = agg.folded_keys();
    let (prefixes, top_keys, resources) = agg.finish();
    Ok(KeyspaceReport {
        scanned_keys,
        revision,
        prefixes,
        top_keys,
        resources,
        prefix: opts.prefix.clone(),
        at_ms,
        depth: opts.depth,
        key_bytes,
        value_bytes,
        complete: stopped.is_none(),
        stopped,
        consistent,
        requests,
        duration_ms: started.elapsed().as_millis() as u64,
        endpoint: endpoint.to_string(),
        from_leader,
        serializable: opts.consistency == Consistency::Serializable,
        folded_keys,
        snapshot: None,
    })
}
