//! Key-value verbs: get, put, del, watch, txn, compaction. Parse, call, print.

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use etcd_client::{
    DeleteOptions, EventType, GetOptions, GetResponse, KeyValue, PutOptions, SortOrder, SortTarget,
    TxnOpResponse, WatchOptions,
};
use serde_json::json;

use super::output::{self, OutputFormat, header_json, kv_json, print_json, text};
use super::{CtlError, Ctx, parse_hex_id};
use etcd_monitor::ops::keys::KeyRange;
use etcd_monitor::ops::maintenance;

/// `--sort-by` targets, as etcdctl names them.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum SortBy {
    /// By key.
    Key,
    /// By create revision.
    Create,
    /// By modification revision.
    Modify,
    /// By value.
    Value,
    /// By version.
    Version,
}

/// `--order`.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Order {
    /// Ascending.
    Ascend,
    /// Descending.
    Descend,
}

/// Flags of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Which keys.
    #[command(flatten)]
    pub keys: KeyRange,
    /// At most this many keys (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Read at this revision (0: the latest).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Only the keys.
    #[arg(long)]
    pub keys_only: bool,
    /// Only the number of keys.
    #[arg(long)]
    pub count_only: bool,
    /// Only the values (simple format).
    #[arg(long)]
    pub print_value_only: bool,
    /// Sort by KEY, CREATE, MODIFY, VALUE or VERSION.
    #[arg(long, value_enum, ignore_case = true)]
    pub sort_by: Option<SortBy>,
    /// ASCEND or DESCEND (with or without --sort-by).
    #[arg(long, value_enum, ignore_case = true)]
    pub order: Option<Order>,
    /// Serializable read (s) from the member asked, or linearizable (l).
    #[arg(long, default_value = "l", value_parser = ["l", "s"])]
    pub consistency: String,
}

/// Flags of `put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key.
    #[arg(id = "KEY", value_name = "KEY")]
    pub key: String,
    /// The value (read from stdin when omitted).
    pub value: Option<String>,
    /// Attach to this lease (hex id).
    #[arg(long)]
    pub lease: Option<String>,
    /// Print the previous key-value.
    #[arg(long)]
    pub prev_kv: bool,
}

/// Flags of `del`.
#[derive(Debug, Args)]
pub struct DelArgs {
    /// Which keys.
    #[command(flatten)]
    pub keys: KeyRange,
    /// Print the deleted key-values.
    #[arg(long)]
    pub prev_kv: bool,
}

/// Flags of `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Which keys.
    #[command(flatten)]
    pub keys: KeyRange,
    /// Start at this revision (0: from now).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Include the previous key-value in each event.
    #[arg(long)]
    pub prev_kv: bool,
}

/// Flags of `txn`.
#[derive(Debug, Args)]
pub struct TxnArgs {
    /// File with the transaction (stdin when omitted or `-`).
    pub file: Option<PathBuf>,
}

/// Flags of `compaction`.
#[derive(Debug, Args)]
pub struct CompactionArgs {
    /// Compact up to this revision.
    pub revision: i64,
    /// Wait until the space is reclaimed in the backend.
    #[arg(long)]
    pub physical: bool,
}

pub(crate) async fn get(ctx: &Ctx, a: GetArgs) -> Result<(), CtlError> {
    if a.rev < 0 {
        return Err(CtlError::Invalid(format!(
            "bad revision {}: --rev must be >= 0",
            a.rev
        )));
    }
    if a.limit < 0 {
        return Err(CtlError::Invalid(format!(
            "bad limit {}: --limit must be >= 0",
            a.limit
        )));
    }
    let (key, end) = a.keys.to_etcd().map_err(CtlError::Invalid)?;
    let mut opts = GetOptions::new();
    if !end.is_empty() {
        opts = opts.with_range(end);
    }
    if a.limit > 0 {
        opts = opts.with_limit(a.limit);
    }
    if a.rev > 0 {
        opts = opts.with_revision(a.rev);
    }
    if a.keys_only {
        opts = opts.with_keys_only();
    }
    if a.count_only {
        opts = opts.with_count_only();
    }
    if a.consistency == "s" {
        opts = opts.with_serializable();
    }
    if a.sort_by.is_some() || a.order.is_some() {
        let target = match a.sort_by.unwrap_or(SortBy::Key) {
            SortBy::Key => SortTarget::Key,
            SortBy::Create => SortTarget::Create,
            SortBy::Modify => SortTarget::Mod,
            SortBy::Value => SortTarget::Value,
            SortBy::Version => SortTarget::Version,
        };
        let order = match a.order {
            Some(Order::Descend) => SortOrder::Descend,
            _ => SortOrder::Ascend,
        };
        opts = opts.with_sort(target, order);
    }
    let mut client = ctx.client().await?;
    let what = if a.rev > 0 {
        format!("get {:?} at revision {}", a.keys.key, a.rev)
    } else {
        format!("get {:?}", a.keys.key)
    };
    let resp = client
        .get(key, Some(opts))
        .await
        .map_err(CtlError::on(what))?;
    print_get(
        ctx.out,
        &resp,
        a.count_only,
        a.keys_only,
        a.print_value_only,
    );
    Ok(())
}

fn print_get(
    out: OutputFormat,
    resp: &GetResponse,
    count_only: bool,
    keys_only: bool,
    value_only: bool,
) {
    match out {
        OutputFormat::Json => print_json(&get_json(resp)),
        OutputFormat::Simple if count_only => println!("{}", resp.count()),
        OutputFormat::Simple => {
            for kv in resp.kvs() {
                if !value_only {
                    println!("{}", text(kv.key()));
                }
                if keys_only {
                    println!();
                } else {
                    println!("{}", text(kv.value()));
                }
            }
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = resp
                .kvs()
                .iter()
                .map(|kv| vec![text(kv.key()), text(kv.value())])
                .collect();
            if count_only {
                print!(
                    "{}",
                    output::table(&["COUNT"], &[vec![resp.count().to_string()]])
                );
            } else {
                print!("{}", output::table(&["KEY", "VALUE"], &rows));
            }
        }
    }
}

/// A key-value in the simple format: the key line, then the value line.
fn print_kv(kv: &KeyValue) {
    println!("{}\n{}", text(kv.key()), text(kv.value()));
}

fn get_json(resp: &GetResponse) -> serde_json::Value {
    let mut v = json!({ "header": header_json(resp.header()) });
    if !resp.kvs().is_empty() {
        v["kvs"] = resp.kvs().iter().map(kv_json).collect();
    }
    if resp.more() {
        v["more"] = json!(true);
    }
    if resp.count() != 0 {
        v["count"] = json!(resp.count());
    }
    v
}

pub(crate) async fn put(ctx: &Ctx, a: PutArgs) -> Result<(), CtlError> {
    let value = match a.value {
        Some(v) => v,
        None => {
            let mut v = String::new();
            std::io::stdin()
                .read_to_string(&mut v)
                .map_err(|source| CtlError::Io {
                    what: "cannot read the value from",
                    path: "stdin".into(),
                    source,
                })?;
            v
        }
    };
    let mut opts = PutOptions::new();
    if let Some(l) = &a.lease {
        opts = opts.with_lease(parse_hex_id("lease", l)? as i64);
    }
    if a.prev_kv {
        opts = opts.with_prev_key();
    }
    let mut client = ctx.client().await?;
    let resp = client
        .put(a.key.as_str(), value, Some(opts))
        .await
        .map_err(CtlError::on(format!("put {:?}", a.key)))?;
    match ctx.out {
        OutputFormat::Json => {
            let mut v = json!({ "header": header_json(resp.header()) });
            if let Some(p) = resp.prev_key() {
                v["prev_kv"] = kv_json(p);
            }
            print_json(&v);
        }
        _ => {
            println!("OK");
            if let Some(p) = resp.prev_key() {
                print_kv(p);
            }
        }
    }
    Ok(())
}

pub(crate) async fn del(ctx: &Ctx, a: DelArgs) -> Result<(), CtlError> {
    let (key, end) = a.keys.to_etcd().map_err(CtlError::Invalid)?;
    let mut opts = DeleteOptions::new();
    if !end.is_empty() {
        opts = opts.with_range(end);
    }
    if a.prev_kv {
        opts = opts.with_prev_key();
    }
    let mut client = ctx.client().await?;
    let resp = client
        .delete(key, Some(opts))
        .await
        .map_err(CtlError::on(format!("del {:?}", a.keys.key)))?;
    match ctx.out {
        OutputFormat::Json => {
            let mut v = json!({ "header": header_json(resp.header()), "deleted": resp.deleted() });
            if !resp.prev_kvs().is_empty() {
                v["prev_kvs"] = resp.prev_kvs().iter().map(kv_json).collect();
            }
            print_json(&v);
        }
        _ => {
            println!("{}", resp.deleted());
            for kv in resp.prev_kvs() {
                print_kv(kv);
            }
        }
    }
    Ok(())
}

pub(crate) async fn watch(ctx: &Ctx, a: WatchArgs) -> Result<(), CtlError> {
    let (key, end) = a.keys.to_etcd().map_err(CtlError::Invalid)?;
    let mut opts = WatchOptions::new();
    if !end.is_empty() {
        opts = opts.with_range(end);
    }
    if a.rev > 0 {
        opts = opts.with_start_revision(a.rev);
    }
    if a.prev_kv {
        opts = opts.with_prev_key();
    }
    let mut client = ctx.client().await?;
    let what = format!("watch {:?}", a.keys.key);
    let mut stream = client
        .watch(key, Some(opts))
        .await
        .map_err(CtlError::on(what.clone()))?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let msg = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            m = stream.message() => m.map_err(CtlError::on(what.clone()))?,
        };
        let Some(resp) = msg else {
            return Err(CtlError::Etcd {
                what,
                message: "the server closed the watch".into(),
            });
        };
        if resp.canceled() {
            let reason = if resp.compact_revision() > 0 {
                format!(
                    "revision {} was compacted; the oldest revision to watch from is {}",
                    a.rev,
                    resp.compact_revision()
                )
            } else {
                resp.cancel_reason().to_string()
            };
            return Err(CtlError::Etcd {
                what,
                message: format!("watch canceled: {reason}"),
            });
        }
        if ctx.out == OutputFormat::Json {
            let events: Vec<serde_json::Value> = resp
                .events()
                .iter()
                .map(|e| {
                    let mut v = json!({
                        "type": if e.event_type() == EventType::Delete { "DELETE" } else { "PUT" },
                    });
                    if let Some(kv) = e.kv() {
                        v["kv"] = kv_json(kv);
                    }
                    if let Some(kv) = e.prev_kv() {
                        v["prev_kv"] = kv_json(kv);
                    }
                    v
                })
                .collect();
            if !events.is_empty() {
                print_json(&json!({ "Header": header_json(resp.header()), "Events": events }));
            }
            continue;
        }
        for e in resp.events() {
            println!(
                "{}",
                if e.event_type() == EventType::Delete {
                    "DELETE"
                } else {
                    "PUT"
                }
            );
            if let Some(p) = e.prev_kv() {
                print_kv(p);
            }
            if let Some(kv) = e.kv() {
                print_kv(kv);
            }
        }
    }
}

pub(crate) async fn txn(ctx: &Ctx, a: TxnArgs) -> Result<(), CtlError> {
    let (source, body) = match &a.file {
        Some(p) if p.as_os_str() != "-" => (
            p.display().to_string(),
            std::fs::read_to_string(p).map_err(|source| CtlError::Io {
                what: "cannot read the transaction from",
                path: p.display().to_string(),
                source,
            })?,
        ),
        _ => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|source| CtlError::Io {
                    what: "cannot read the transaction from",
                    path: "stdin".into(),
                    source,
                })?;
            ("stdin".to_string(), s)
        }
    };
    let parsed = etcd_monitor::ops::txn::parse(&body)
        .map_err(|e| CtlError::Invalid(format!("{source}: {e}")))?;
    let mut client = ctx.client().await?;
    let resp = client
        .txn(parsed.txn)
        .await
        .map_err(CtlError::on(format!("txn from {source}")))?;
    if ctx.out == OutputFormat::Json {
        let responses: Vec<serde_json::Value> = resp
            .op_responses()
            .iter()
            .map(|r| match r {
                TxnOpResponse::Put(p) => {
                    let mut v = json!({ "header": header_json(p.header()) });
                    if let Some(kv) = p.prev_key() {
                        v["prev_kv"] = kv_json(kv);
                    }
                    json!({ "Response": { "ResponsePut": v } })
                }
                TxnOpResponse::Get(g) => json!({ "Response": { "ResponseRange": get_json(g) } }),
                TxnOpResponse::Delete(d) => json!({ "Response": { "ResponseDeleteRange": {
                    "header": header_json(d.header()),
                    "deleted": d.deleted(),
                    "prev_kvs": d.prev_kvs().iter().map(kv_json).collect::<Vec<_>>(),
                } } }),
                TxnOpResponse::Txn(_) => json!({ "Response": { "ResponseTxn": {} } }),
            })
            .collect();
        let mut v = json!({ "header": header_json(resp.header()), "responses": responses });
        if resp.succeeded() {
            v["succeeded"] = json!(true);
        }
        print_json(&v);
        return Ok(());
    }
    println!(
        "{}",
        if resp.succeeded() {
            "SUCCESS"
        } else {
            "FAILURE"
        }
    );
    for r in resp.op_responses() {
        println!();
        match r {
            TxnOpResponse::Put(p) => {
                println!("OK");
                if let Some(kv) = p.prev_key() {
                    print_kv(kv);
                }
            }
            TxnOpResponse::Get(g) => print_get(OutputFormat::Simple, &g, false, false, false),
            TxnOpResponse::Delete(d) => {
                println!("{}", d.deleted());
                for kv in d.prev_kvs() {
                    print_kv(kv);
                }
            }
            TxnOpResponse::Txn(_) => println!("(nested txn)"),
        }
    }
    Ok(())
}

pub(crate) async fn compaction(ctx: &Ctx, a: CompactionArgs) -> Result<(), CtlError> {
    if a.revision <= 0 {
        return Err(CtlError::Invalid(format!(
            "bad revision {}: compaction needs a revision > 0",
            a.revision
        )));
    }
    ctx.confirm(&format!(
        "compact the history up to revision {} (older revisions become unreadable)",
        a.revision
    ))?;
    let mut client = ctx.client().await?;
    let r = maintenance::compact(&mut client, a.revision, a.physical).await?;
    match ctx.out {
        OutputFormat::Json => print_json(&json!(r)),
        _ => println!("compacted revision {}", r.revision),
    }
    Ok(())
}
