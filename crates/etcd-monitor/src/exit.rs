//! The exit status of every command: one convention, printed by `--help`.
//! It keeps `status`'s 0/1/2 (healthy, degraded, unavailable) and follows
//! etcdctl for the rest (2 a bad connection, 3 invalid input).

use std::process::ExitCode;

use crate::bench::run::BenchError;
use crate::connection::ConnectError;
use crate::health::Verdict;
use crate::ops::error::CtlError;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success: healthy, every SLO met, the operation done.
    Ok = 0,
    /// The command ran and the answer is no: degraded, an SLO missed or
    /// check-perf FAIL, an unhealthy endpoint, configuration errors found,
    /// a dangerous operation refused or not confirmed.
    No = 1,
    /// It could not be done: the cluster is unavailable or unreachable, etcd
    /// refused, credentials were rejected, the run could not be made.
    Failed = 2,
    /// Usage: bad flags or configuration, or etcd-monitor could not start;
    /// nothing about the cluster can be concluded.
    Usage = 3,
}

/// `ctl ... | head` closed stdout early (etcdctl's SIGPIPE status).
pub const BROKEN_PIPE: u8 = 141;

/// The convention as `--help` prints it (a macro, so `concat!` can put it
/// into clap's help texts).
#[macro_export]
macro_rules! exit_status_help {
    () => {
        "Exit status (every command):
  0    success: healthy, every SLO met, the operation done
  1    the answer is no: degraded, an SLO missed, a check found problems,
       a dangerous operation refused or not confirmed
  2    failed: the cluster is unavailable or unreachable, etcd or its
       credentials refused, the run could not be made
  3    usage: bad flags or configuration, or etcd-monitor could not start
  141  stdout closed early (ctl get ... | head)"
    };
}

/// The convention, for `--help`.
pub const HELP: &str = exit_status_help!();

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

impl From<Verdict> for Exit {
    fn from(v: Verdict) -> Exit {
        match v {
            Verdict::Healthy => Exit::Ok,
            Verdict::Degraded => Exit::No,
            Verdict::Unavailable => Exit::Failed,
        }
    }
}

/// What an error means for the exit status.
pub trait ExitStatus: std::fmt::Display {
    /// The status to exit with.
    fn exit(&self) -> Exit;
}

impl ExitStatus for ConnectError {
    fn exit(&self) -> Exit {
        Exit::Failed
    }
}

impl ExitStatus for CtlError {
    fn exit(&self) -> Exit {
        match self {
            CtlError::Invalid(_) | CtlError::UnknownMember { .. } => Exit::Usage,
            CtlError::Refused(_) | CtlError::Unsafe(_) | CtlError::Failed => Exit::No,
            CtlError::Connect(_)
            | CtlError::Etcd { .. }
            | CtlError::Io { .. }
            | CtlError::SnapshotIntegrity { .. } => Exit::Failed,
        }
    }
}

impl ExitStatus for BenchError {
    fn exit(&self) -> Exit {
        match self {
            BenchError::Invalid(_) => Exit::Usage,
            _ => Exit::Failed,
        }
    }
}

/// A message for the user, exiting with `exit` (setup errors, encoding errors).
#[derive(Debug)]
pub struct Fail(pub Exit, pub String);

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl ExitStatus for Fail {
    fn exit(&self) -> Exit {
        self.0
    }
}
