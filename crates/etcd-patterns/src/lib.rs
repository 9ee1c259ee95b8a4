//! Coordination recipes on etcd v3, built from plain KV transactions,
//! leases and watches: [`Session`], [`Mutex`] with fencing tokens,
//! [`RwLock`], [`Semaphore`], [`LockManager`], [`Election`] with an
//! [`Observer`], [`LeaderTask`] and [`HaCoordinator`]; and, on a
//! [`ResilientWatch`] that survives member failures and compaction,
//! [`Discovery`] with health checks and a [`Balancer`], typed [`Config`],
//! feature [`Flags`], typed transactions and an STM ([`txn`]), and bare
//! [`Lease`]s.
//!
//! Every recipe takes an [`etcd_client::Client`] (through a [`Session`]) and
//! never calls the server's Lock or Campaign RPC. Every coordination type
//! tells you how you lose it (`lost()`), and every lock exposes a fencing
//! token and an `is_owner` compare for your own transactions, because a
//! lease-based lock alone is not mutual exclusion. See `docs/patterns.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use etcd_patterns::{Mutex, Session};
//!
//! let client = etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await?;
//! let session = Session::new(client, Duration::from_secs(10)).await?;
//! let guard = Mutex::new(session, "locks/demo").lock().await?;
//! println!("fencing token {}", guard.fencing_token());
//! guard.unlock().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod balance;
mod cache;
pub mod config;
pub mod discovery;
pub mod election;
pub mod error;
pub mod flags;
pub mod ha;
mod hash;
mod keys;
pub mod leader_task;
pub mod lease;
pub mod lock_manager;
pub mod mutex;
pub mod rwlock;
pub mod semaphore;
pub mod session;
pub mod txn;
pub mod watch;

pub use balance::{Balancer, Pick, Strategy};
pub use config::{Config, ConfigChange, Format};
pub use discovery::{Discovery, HealthCheck, Instance, Probe, Registration, ServiceChange};
pub use election::{Election, Leader, Observer};
pub use error::{Error, Result};
pub use flags::{Flag, Flags};
pub use ha::{HaCoordinator, HaOptions, PrimaryContext, Role, SecondaryContext};
pub use leader_task::LeaderTask;
pub use lease::{Lease, LeaseInfo};
pub use lock_manager::{LockManager, LockStats, ManagedGuard};
pub use mutex::{Mutex, MutexGuard};
pub use rwlock::{RwLock, RwLockGuard, RwMode};
pub use semaphore::{Permit, Semaphore};
pub use session::{LostReason, Session, SessionOptions};
pub use txn::{Isolation, Stm};
pub use watch::{ResilientWatch, WatchEvent, WatchOptions};
