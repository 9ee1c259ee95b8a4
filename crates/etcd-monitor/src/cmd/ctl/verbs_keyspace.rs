//! `ctl keyspace`: what fills the database, per prefix, per Kubernetes
//! resource and by the largest keys (etcd_monitor::keyspace).

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;

use super::output::{OutputFormat, human_bytes, table};
use super::{CtlError, Ctx};
use etcd_monitor::connection::Dialer;
use etcd_monitor::keyspace::{self, Consistency, KeyspaceReport, ScanOptions};
use etcd_monitor::ops::restore::ThrowawayMember;

/// Flags of `ctl keyspace`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  etcd-monitor ctl keyspace                        # the whole keyspace, 3 levels deep
  etcd-monitor ctl keyspace /registry/ --depth 2 --top 20
  etcd-monitor ctl keyspace --rate 20 --max-duration 5m -w json > keyspace.json")]
pub struct KeyspaceArgs {
    /// Keys under this prefix (default: every key).
    #[arg(default_value = "")]
    pub prefix: String,
    /// Levels below PREFIX to report (split at `/`).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(0..=32))]
    pub depth: u16,
    /// How many of the largest keys to list.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub top: u16,
    /// At most this many range requests per second (default: unpaced).
    #[arg(long, value_name = "REQ/S", value_parser = positive_rate)]
    pub rate: Option<f64>,
    /// Stop after this long and report what was read (e.g. 5m).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub max_duration: Option<Duration>,
    /// s: serializable reads from one member (default, no load on the
    /// leader); l: linearizable.
    #[arg(long, default_value = "s", value_parser = ["s", "l"])]
    pub consistency: String,
    /// Read from the leader instead of a follower.
    #[arg(long)]
    pub from_leader: bool,
    /// Distinct prefix buckets kept (split evenly across the levels, so deep
    /// prefixes never fold a shallow one) and resource buckets kept, before
    /// the rest fold into `*` buckets (bounds memory).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_buckets: u32,
    /// At most this many keys per range request (default: adaptive, about
    /// 4 MiB of keys and values per page, at most 25,000 keys).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=25_000))]
    pub page_size: Option<u32>,
    /// Analyse this snapshot file instead of the cluster: it is restored
    /// into a throwaway member on free loopback ports (etcd from ETCD_BIN
    /// or PATH, etcdutl or etcdctl to restore), scanned and removed.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<std::path::PathBuf>,
    /// Compare with an earlier scan saved with `-w json` (same PREFIX):
    /// print which prefixes grew most, with bytes per hour, instead of the scan.
    #[arg(long, value_name = "EARLIER.json")]
    pub diff: Option<std::path::PathBuf>,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!(
            "{s:?} is not a positive number of requests per second"
        )),
    }
}

impl KeyspaceArgs {
    /// The library's options.
    pub fn options(&self) -> ScanOptions {
        ScanOptions {
            prefix: self.prefix.clone(),
            depth: self.depth.into(),
            top: self.top.into(),
            rate: self.rate,
            max_duration: self.max_duration,
            consistency: if self.consistency == "l" {
                Consistency::Linearizable
            } else {
                Consistency::Serializable
            },
            max_buckets: self.max_buckets as usize,
            max_page_keys: self.page_size.map(|p| p as usize),
            ..ScanOptions::default()
        }
    }
}

pub(crate) async fn keyspace(ctx: &Ctx, a: KeyspaceArgs) -> Result<(), CtlError> {
    // The earlier scan first: a bad file should not cost a scan.
    let earlier = match &a.diff {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|source| CtlError::Io {
                what: "reading the earlier scan",
                path: file.display().to_string(),
                source,
            })?;
            let report: KeyspaceReport = serde_json::from_str(&text).map_err(|e| {
                CtlError::Invalid(format!(
                    "{}: not a scan saved with `ctl keyspace -w json`: {e}",
                    file.display()
                ))
            })?;
            Some(report)
        }
        None => None,
    };
    // A snapshot is served by a member of its own for the scan's length.
    let restored = match &a.snapshot {
        Some(file) => Some(ThrowawayMember::from_snapshot(file).await?),
        None => None,
    };
    let (client, endpoint, leader) = match &restored {
        Some(m) => {
            let client = etcd_client::Client::connect([m.client_url()], None)
                .await
                .map_err(CtlError::on(format!(
                    "connecting to the restored member at {}",
                    m.client_url()
                )))?;
            (client, m.client_url().to_string(), true)
        }
        None => {
            let dialer = Dialer::new(&ctx.cluster)?;
            keyspace::choose_member(&dialer, &ctx.endpoints()?, a.from_leader).await?
        }
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let style =
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} keys {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        indicatif::ProgressBar::new(0).with_style(style)
    });
    let report = keyspace::scan(&client, &endpoint, leader, &a.options(), |p| {
        if let Some(bar) = &bar {
            bar.set_length(p.total.max(p.keys));
            bar.set_position(p.keys);
            bar.set_message(human_bytes(p.value_bytes as i64));
        }
    })
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    drop(restored);
    let mut report = report?;
    report.snapshot = a.snapshot.as_ref().map(|f| f.display().to_string());
    if let Some(earlier) = earlier {
        let g = keyspace::growth(&earlier, &report).map_err(|e| {
            CtlError::Invalid(format!(
                "--diff {}: {e}",
                a.diff
                    .as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default()
            ))
        })?;
        match ctx.out {
            OutputFormat::Json => println!(
                "{}",
                serde_json::to_string(&g).map_err(|e| CtlError::Invalid(e.to_string()))?
            ),
            OutputFormat::Simple | OutputFormat::Table => {
                print!("{}", render_growth(&g, a.top.into()))
            }
        }
        return Ok(());
    }
    match ctx.out {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| CtlError::Invalid(e.to_string()))?
        ),
        OutputFormat::Simple | OutputFormat::Table => print!("{}", render(&report)),
    }
    Ok(())
}

/// A signed size: `+1.2 MB`, `-300 kB`.
fn signed(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "+" };
    format!("{sign}{}", human_bytes(n.unsigned_abs() as i64))
}

/// Growth as a table: the prefixes that changed, most bytes gained first
/// (at most `top`, at least 10, rows).
pub fn render_growth(g: &keyspace::Growth, top: usize) -> String {
    let mut out = format!(
        "{} under {:?} in {:.2} h (revision {} to {}), {}/h\n",
        signed(g.bytes_delta),
        g.prefix,
        g.hours,
        g.from_revision,
        g.to_revision,
        signed((g.bytes_delta as f64 / g.hours) as i64),
    );
    let rows: Vec<Vec<String>> = g
        .prefixes
        .iter()
        .filter(|p| p.bytes_delta != 0 || p.keys_before != p.keys_after)
        .take(top.max(10))
        .map(|p| {
            vec![
                p.prefix.clone(),
                p.depth.to_string(),
                format!("{} -> {}", p.keys_before, p.keys_after),
                format!(
                    "{} -> {}",
                    human_bytes(p.bytes_before as i64),
                    human_bytes(p.bytes_after as i64)
                ),
                signed(p.bytes_delta),
                format!("{}/h", signed(p.bytes_per_hour as i64)),
            ]
        })
        .collect();
    if rows.is_empty() {
        out += "No prefix changed.\n";
    } else {
        out += &table(
            &["PREFIX", "DEPTH", "KEYS", "BYTES", "CHANGE", "RATE"],
            &rows,
        );
    }
    out
}

/// The report as tables: a summary line, the prefixes, the largest keys,
/// and the Kubernetes resources when there are any.
pub fn render(r: &KeyspaceReport) -> String {
    let b = |n: u64| human_bytes(n as i64);
    let mut out = format!(
        "{} keys under {:?}: {} of values, {} of keys; revision {}{}, read from {} ({}, {}) in {} requests, {:.1} s\n",
        r.scanned_keys,
        r.prefix,
        b(r.value_bytes),
        b(r.key_bytes),
        r.revision,
        if r.consistent {
            ""
        } else {
            " (compacted during the scan: later pages at newer revisions)"
        },
        match &r.snapshot {
            Some(file) => format!("snapshot {file}"),
            None => r.endpoint.clone(),
        },
        if r.snapshot.is_some() {
            "restored"
        } else if r.from_leader {
            "leader"
        } else {
            "follower"
        },
        if r.serializable {
            "serializable"
        } else {
            "linearizable"
        },
        r.requests,
        r.duration_ms as f64 / 1000.0,
    );
    if let Some(why) = &r.stopped {
        out += &format!("INCOMPLETE: {why}; the figures cover the keys read\n");
    }
    if r.folded_keys > 0 {
        out += &format!(
            "{} keys were counted in folded (*) buckets: more distinct prefixes than --max-buckets\n",
            r.folded_keys
        );
    }
    let rows: Vec<Vec<String>> = r
        .prefixes
        .iter()
        .map(|p| {
            vec![
                format!("{}{}", "  ".repeat(p.depth.saturating_sub(1)), p.prefix),
                p.depth.to_string(),
                p.keys.to_string(),
                b(p.key_bytes),
                b(p.value_bytes),
                format!("{}..{}", p.min_mod_revision, p.max_mod_revision),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out += &table(
            &[
                "PREFIX",
                "DEPTH",
                "KEYS",
                "KEY BYTES",
                "VALUE BYTES",
                "MOD REVISIONS",
            ],
            &rows,
        );
    }
    let rows: Vec<Vec<String>> = r
        .top_keys
        .iter()
        .map(|k| vec![k.key.clone(), b(k.value_bytes), k.mod_revision.to_string()])
        .collect();
    if !rows.is_empty() {
        out += &table(&["LARGEST KEYS", "VALUE BYTES", "MOD REVISION"], &rows);
    }
    let rows: Vec<Vec<String>> = r
        .resources
        .iter()
        .map(|x| {
            vec![
                x.resource.clone(),
                x.group.clone(),
                x.namespace.clone(),
                x.keys.to_string(),
                b(x.value_bytes),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out += &table(
            &["RESOURCE", "GROUP", "NAMESPACE", "OBJECTS", "VALUE BYTES"],
            &rows,
        );
    }
    out
}
