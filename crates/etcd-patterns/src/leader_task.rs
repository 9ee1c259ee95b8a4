//! A periodic job that runs only while this node leads.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use tokio::sync::watch;
use tokio::time::{MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::ha::{HaCoordinator, HaOptions, PrimaryContext, Role};

/// Runs `job` every `period` while this node leads the election under
/// `prefix`. When leadership is lost the running job is dropped at once (it
/// is cancelled at its next `.await`), and a job that does not yield is
/// aborted within the grace period. Built on [`HaCoordinator`]; the job gets
/// the term's fencing token through [`PrimaryContext`].
///
/// ```no_run
/// # async fn demo(client: etcd_client::Client) -> Result<(), etcd_patterns::Error> {
/// use std::time::Duration;
/// use etcd_patterns::{HaOptions, LeaderTask};
/// use tokio_util::sync::CancellationToken;
///
/// let task = LeaderTask::new(client, HaOptions::new("jobs/compactor", "node-a"), Duration::from_secs(30));
/// task.run(|ctx| async move {
///     println!("compacting in term {}", ctx.fencing_token);
/// }, CancellationToken::new()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LeaderTask {
    ha: HaCoordinator,
    period: Duration,
}

impl LeaderTask {
    /// A task campaigning with `opts`, running its job every `period` while leading.
    pub fn new(client: Client, opts: HaOptions, period: Duration) -> LeaderTask {
        LeaderTask {
            ha: HaCoordinator::new(client, opts),
            period,
        }
    }

    /// Whether the job may run now, as a channel.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.ha.role()
    }

    /// The underlying coordinator (session, role).
    pub fn coordinator(&self) -> &HaCoordinator {
        &self.ha
    }

    /// Campaigns and runs the job until `shutdown` is cancelled.
    pub async fn run<J, JF>(&self, job: J, shutdown: CancellationToken) -> Result<()>
    where
        J: Fn(PrimaryContext) -> JF + Send + Sync + 'static,
        JF: Future<Output = ()> + Send + 'static,
    {
        let job = Arc::new(job);
        let period = self.period;
        self.ha
            .run(
                move |ctx| {
                    let job = job.clone();
                    async move {
                        let mut ticks = interval(period);
                        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                        loop {
                            tokio::select! {
                                _ = ctx.cancel.cancelled() => return,
                                _ = ticks.tick() => {}
                            }
                            tokio::select! {
                                _ = ctx.cancel.cancelled() => return,
                                _ = job(ctx.clone()) => {}
                            }
                        }
                    }
                },
                |_| async {},
                shutdown,
            )
            .await
    }
}
