//! The command line of the `etcd-monitor` binary: flags, the one-shot
//! commands' start-up and their printing. Everything they do is in the
//! library (`etcd_monitor`), which does not depend on this module.

pub mod bench;
pub mod cli;
pub mod ctl;
pub mod demo;
pub mod healthcheck;
pub mod status;
