//! Typed errors of the coordination recipes.

use std::time::Duration;

/// What can go wrong in a coordination recipe.
///
/// Every variant names the key or lease involved so that a log line is
/// actionable without more context.
///
/// ```no_run
/// # async fn demo(m: etcd_patterns::Mutex) {
/// use etcd_patterns::Error;
/// match m.try_lock().await {
///     Ok(_guard) => println!("got it"),
///     Err(Error::Locked { key }) => println!("{key} is held by someone else"),
///     Err(e) => eprintln!("lock failed: {e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operation did not finish in time; any key it created was removed.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// How long the caller waited.
        waited: Duration,
        /// What was awaited (for example `lock locks/a/`).
        what: String,
    },
    /// The session's lease expired, was revoked or could not be kept alive.
    #[error("session lease {lease:x} is gone ({reason}); create a new session")]
    SessionExpired {
        /// The lease id.
        lease: i64,
        /// Why the session ended.
        reason: crate::LostReason,
    },
    /// The caller does not hold the lock or leadership it acted on.
    #[error("not the owner of {key}: the lock or leadership is not held (any more)")]
    NotOwner {
        /// The key whose ownership was checked.
        key: String,
    },
    /// `try_lock` found another holder.
    #[error("{key} is held by another session")]
    Locked {
        /// The lock prefix.
        key: String,
    },
    /// The caller's own key was deleted by someone else while waiting or holding.
    #[error("own key {key} was deleted while waiting or holding")]
    KeyDeleted {
        /// The deleted key.
        key: String,
    },
    /// etcd could not be reached in time (transport failure, unavailable,
    /// deadline exceeded, request timeout). Retrying later may succeed.
    #[error(
        "etcd unavailable while {context}: {source}; check the endpoints and that a quorum is up"
    )]
    Unavailable {
        /// What was being done.
        context: String,
        /// The client error.
        #[source]
        source: etcd_client::Error,
    },
    /// Any other etcd error.
    #[error("etcd error while {context}: {source}")]
    Etcd {
        /// What was being done.
        context: String,
        /// The client error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd answered with something the recipe did not expect.
    #[error("unexpected etcd response while {0}")]
    Unexpected(String),
    /// A compare-and-swap failed: the key's mod revision was not the expected one.
    #[error(
        "conflict on {key}: expected mod revision {expected}, found {actual}; re-read and retry"
    )]
    Conflict {
        /// The key that was compared.
        key: String,
        /// The mod revision the caller expected (0 = absent).
        expected: i64,
        /// The mod revision found (0 = absent).
        actual: i64,
    },
    /// A stored value could not be decoded (or a value could not be encoded).
    #[error("cannot decode or encode the value of {key}: {reason}")]
    Codec {
        /// The key whose value was involved.
        key: String,
        /// What the codec said.
        reason: String,
    },
    /// No healthy instance of a service is known.
    #[error(
        "no healthy instance of service {service} is registered; check registrations and health checks"
    )]
    NoInstance {
        /// The service asked for.
        service: String,
    },
    /// A revision is older than the compaction revision, so its data is gone.
    #[error("revision {revision} of {key} was compacted; pick a newer revision")]
    Compacted {
        /// The key asked for.
        key: String,
        /// The revision asked for.
        revision: i64,
    },
    /// An argument or option is out of range; the message says which and why.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A software transaction kept conflicting and gave up.
    #[error("transaction gave up after {attempts} conflicting attempts")]
    TooManyConflicts {
        /// How many times it was tried.
        attempts: u32,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a client error with what was being done, classifying
    /// connectivity failures as [`Error::Unavailable`].
    pub fn etcd(context: impl Into<String>, source: etcd_client::Error) -> Self {
        let context = context.into();
        if is_unavailable(&source) {
            Error::Unavailable { context, source }
        } else {
            Error::Etcd { context, source }
        }
    }

    /// True for errors worth retrying after a short pause (connectivity).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

fn is_unavailable(e: &etcd_client::Error) -> bool {
    // gRPC codes: 1 = Cancelled (tonic reports its own request timeout so),
    // 4 = DeadlineExceeded, 14 = Unavailable.
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => matches!(i32::from(s.code()), 1 | 4 | 14),
        _ => false,
    }
}

/// `map_err` helper: `.map_err(ctx("granting a lease"))`.
pub(crate) fn ctx(context: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> Error {
    let context = context.into();
    move |e| Error::etcd(context, e)
}
