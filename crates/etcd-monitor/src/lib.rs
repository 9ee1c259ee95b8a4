//! etcd-monitor: watch etcd clusters, decide whether each is healthy and why,
//! keep history, alert, serve an API and dashboard, benchmark, and operate
//! clusters safely.
//!
//! The binary (`etcd-monitor`) only parses flags and wires these modules:
//!
//! - [`config`]: the YAML file, `ETCD_MONITOR_*` variables and flags, checked together;
//! - [`connection`]: endpoints, timeouts, TLS and credentials shared by every command;
//! - [`logging`] and [`lifecycle`]: log output, graceful shutdown;
//! - [`cli`]: the command line.

#![recursion_limit = "512"] // the OpenAPI document is one large `json!`

pub mod alert;
pub mod api;
pub mod bench;
pub mod benchmarks;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod ctl;
pub mod demo;
pub mod exit;
pub mod health;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod run;
pub mod status;
pub mod store;
pub mod time;
