//! `etcd-monitor status`: one round of collection and evaluation, printed.
//! Exit status 0 healthy, 1 degraded, 2 unavailable (3 for usage errors).

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::cmd::cli::{ConnArgs, GlobalArgs};
use etcd_monitor::cluster::{Collector, CollectorOptions};
use etcd_monitor::exit::{Exit, Fail};
use etcd_monitor::health::{self, HealthSnapshot, bytes};

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Output {
    /// Members as a table, then the verdict and findings.
    #[default]
    Table,
    /// The whole snapshot with evidence, as JSON.
    Json,
}

/// Flags of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Connection settings.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Output format.
    #[arg(short = 'w', long = "write-out", value_enum, default_value_t = Output::Table)]
    pub write_out: Output,
    /// Skip the data consistency check (hashkv on every member).
    #[arg(long)]
    pub no_hashkv: bool,
    /// Skip scraping each member's /metrics.
    #[arg(long)]
    pub no_metrics: bool,
}

/// Runs `status`: the verdict is the exit status (0 healthy, 1 degraded,
/// 2 unavailable; 3 usage, see [`etcd_monitor::exit`]).
pub fn main(global: &GlobalArgs, args: StatusArgs) -> ExitCode {
    let options = CollectorOptions {
        scrape_metrics: !args.no_metrics,
        hashkv: !args.no_hashkv,
        certificates: true,
        wait_for_certificates: true,
    };
    let write_out = args.write_out;
    crate::cmd::cli::one_shot(global, &args.conn, |config, cluster| async move {
        let thresholds = config
            .map(|c| etcd_monitor::run::health_thresholds(&c))
            .unwrap_or_default();
        let mut collector = Collector::new(cluster, options);
        let snapshot = health::evaluate(collector.collect().await, &thresholds);
        match write_out {
            Output::Json => {
                let text = serde_json::to_string_pretty(&snapshot)
                    .map_err(|e| Fail(Exit::Usage, format!("cannot encode the snapshot: {e}")))?;
                println!("{text}");
            }
            Output::Table => print!("{}", render_table(&snapshot)),
        }
        Ok::<Exit, Fail>(snapshot.verdict.into())
    })
}

/// The human form of a snapshot.
pub fn render_table(s: &HealthSnapshot) -> String {
    let mut rows: Vec<[String; 10]> = vec![
        [
            "NAME", "ID", "ENDPOINT", "STATE", "VERSION", "DB SIZE", "IN USE", "TERM", "INDEX",
            "LATENCY",
        ]
        .map(String::from),
    ];
    for m in &s.observation.members {
        let st = m.status.as_ref();
        let mut state = match st {
            None => "DOWN".to_string(),
            Some(x) if x.leader == m.id && m.id != 0 => "leader".to_string(),
            Some(_) if m.is_learner => "learner".to_string(),
            Some(x) if x.leader == 0 => "no leader".to_string(),
            Some(_) => "follower".to_string(),
        };
        if st.is_some() && !m.is_learner && m.linearizable_read_ms.is_none() {
            state.push_str(" (no quorum read)");
        }
        rows.push([
            m.label(),
            format!("{:x}", m.id),
            m.endpoint.clone(),
            state,
            st.map(|x| x.version.clone()).unwrap_or_default(),
            st.map(|x| bytes(x.db_size as f64)).unwrap_or_default(),
            st.map(|x| bytes(x.db_size_in_use as f64))
                .unwrap_or_default(),
            st.map(|x| x.raft_term.to_string()).unwrap_or_default(),
            st.map(|x| x.raft_index.to_string()).unwrap_or_default(),
            m.status_latency_ms
                .map(|ms| format!("{ms:.1} ms"))
                .unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..10)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let verdict = match s.verdict {
        health::Verdict::Healthy => "HEALTHY",
        health::Verdict::Degraded => "DEGRADED",
        health::Verdict::Unavailable => "UNAVAILABLE",
    };
    let _ = writeln!(
        out,
        "\ncluster {}: {verdict} ({} of {} voting members answer, quorum {}{})",
        s.cluster,
        s.reachable_voting_members,
        s.voting_members,
        s.quorum,
        s.leader
            .as_ref()
            .map(|l| format!(", leader {l}"))
            .unwrap_or_default()
    );
    for f in &s.findings {
        let sev = match f.severity {
            health::Severity::Critical => "CRITICAL",
            health::Severity::Warning => "WARNING",
            health::Severity::Info => "INFO",
        };
        let _ = writeln!(out, "  {sev:<8} {:<20} {}", f.kind, f.message);
    }
    out
}
