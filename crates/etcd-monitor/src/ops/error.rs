//! Errors of `ctl` and of the maintenance library: each names what failed,
//! on which endpoint, member, key or file, and what to do about it.

use crate::connection::{ConnectError, cause_chain};

/// Why a `ctl` operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// etcd answered with an error, or the request failed on the way.
    #[error("{what}: {message}")]
    Etcd {
        /// The operation and its target, e.g. `get "foo" at revision 3`.
        what: String,
        /// etcd's message with a hint where one helps.
        message: String,
    },
    /// An argument is wrong (caught before anything was sent).
    #[error("{0}")]
    Invalid(String),
    /// A member id that is not in the member list.
    #[error("no member with id {id:x} in the cluster (members: {members}); see `ctl member list`")]
    UnknownMember {
        /// The id asked for.
        id: u64,
        /// The members that exist, `id name` each.
        members: String,
    },
    /// A dangerous operation was not confirmed.
    #[error("{0}")]
    Refused(String),
    /// A safety check failed, so nothing was changed.
    #[error("{0}")]
    Unsafe(String),
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A snapshot stream did not end with the sha256 of its data.
    #[error(
        "snapshot from {endpoint} failed verification: {detail}; the partial file was removed, nothing was written to {path}"
    )]
    SnapshotIntegrity {
        /// The member that sent it.
        endpoint: String,
        /// The target file.
        path: String,
        /// What did not match.
        detail: String,
    },
    /// The verb ran and printed its own report, and the exit status must
    /// say the answer is no (e.g. an unhealthy endpoint).
    #[error("the check failed")]
    Failed,
}

impl CtlError {
    /// Wraps an etcd error for the operation `what`, adding a hint for the
    /// errors users meet most.
    pub fn etcd(what: impl Into<String>, e: etcd_client::Error) -> Self {
        let mut message = match &e {
            etcd_client::Error::GRpcStatus(s) => s.message().to_string(),
            other => cause_chain(other),
        };
        let hint = if message.contains("required revision has been compacted") {
            Some("that revision was compacted away; use a later --rev")
        } else if message.contains("required revision is a future revision") {
            Some("that revision does not exist yet; see the current revision with `get -w json`")
        } else if message.contains("member not found") {
            Some("see `ctl member list` for the ids")
        } else if message.contains("requested lease not found") {
            Some("the lease expired or was revoked; see `ctl lease list`")
        } else if message.contains("bad leader transferee") {
            Some("the target must be a started voting member other than the leader")
        } else if message.contains("rpc not supported for learner") {
            Some(
                "that endpoint is a learner, which serves only status; use voting members' endpoints",
            )
        } else if message.contains("unhealthy cluster") {
            Some(
                "etcd refuses membership changes that could cost the quorum; every voting member must have been connected for 5 s: retry shortly, check `ctl endpoint health --cluster`",
            )
        } else if message.contains("transport error") || message.contains("Unavailable") {
            Some("is the endpoint reachable? check --endpoints and --dial-timeout")
        } else {
            None
        };
        if let Some(h) = hint {
            message = format!("{message} ({h})");
        }
        CtlError::Etcd {
            what: what.into(),
            message,
        }
    }

    /// A closure for `map_err` that wraps an etcd error for `what`.
    pub fn on(what: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> Self {
        let what = what.into();
        move |e| CtlError::etcd(what, e)
    }
}
