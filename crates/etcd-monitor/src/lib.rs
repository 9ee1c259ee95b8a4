//! etcd-monitor: watch etcd clusters, decide whether each is healthy and why,
//! keep history, alert, serve an API and dashboard, benchmark, and operate
//! clusters safely.
//!
//! This library is what the `etcd-monitor` binary runs, and what a Rust
//! program can embed: [`run`] starts the daemon ([`monitor`], [`alert`],
//! [`api`] over a [`store`]); [`ops`] and [`bench`](mod@bench) are the operations and
//! benchmarks behind `ctl` and `bench` and the API. The binary's own code
//! (`src/main.rs`, `src/cmd/`) only parses flags and prints.
//!
//! - [`config`]: the YAML file, `ETCD_MONITOR_*` variables and flags, checked together;
//! - [`connection`]: endpoints, timeouts, TLS and credentials, the one member dialer;
//! - [`logging`] and [`lifecycle`]: log output, graceful shutdown;
//! - [`exit`]: the exit status convention of every command;
//! - [`keyspace`]: what fills the database: per-prefix and per-resource sizes, the largest keys.

pub mod alert;
pub mod api;
pub mod bench;
pub mod benchmarks;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod exit;
pub mod health;
pub mod keyspace;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod ops;
pub mod run;
pub mod store;
pub mod time;
