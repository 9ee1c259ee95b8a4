//! Graceful shutdown: SIGINT or SIGTERM cancels a token every background task
//! watches; the process then waits a bounded time for tasks to drain.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Owner of the background tasks of one process.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Lifecycle {
    /// A lifecycle with no tasks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token cancelled at shutdown.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Spawns a task owned by this lifecycle.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Starts shutting down.
    pub fn shutdown(&self) {
        self.token.cancel();
    }

    /// Resolves at SIGINT, SIGTERM or [`Lifecycle::shutdown`], and cancels the token.
    pub async fn wait_for_signal(&self) {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
            _ = term => tracing::info!("SIGTERM received, shutting down"),
            _ = self.token.cancelled() => {}
        }
        self.token.cancel();
    }

    /// Waits up to `limit` for every task to finish; returns whether all did.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        let done = tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok();
        if !done {
            tracing::warn!(
                remaining = self.tracker.len(),
                ?limit,
                "shutdown drain timed out"
            );
        }
        done
    }
}
