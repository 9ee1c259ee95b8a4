//! Operations on a cluster that both `etcd-monitor ctl` and the REST API
//! perform, as library functions with typed results and typed errors:
//! [`maintenance`] (defragmentation with its safety checks, compaction,
//! snapshots, alarms, leader moves), [`endpoint`] (per-member status, health
//! and hash), [`keys`] (etcdctl's key ranges), [`restore`] (a throwaway
//! member restored from a snapshot file) and [`txn`] (etcdctl's
//! transaction text). Printing and flags live in the binary.

pub mod backup;
pub mod defrag_rule;
pub mod endpoint;
pub mod error;
pub mod gate;
pub mod keys;
pub mod maintenance;
pub mod restore;
pub mod txn;

pub use error::CtlError;
