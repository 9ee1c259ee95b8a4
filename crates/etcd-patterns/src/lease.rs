//! Leases without a session: grant, keep alive, time-to-live, attach keys.
//!
//! Use a [`Session`] when you need to *know* the moment a
//! lease is lost (locks, elections, registrations). A bare [`Lease`] is for
//! keys that should simply expire: caches, heartbeats, temporary markers.

use std::time::Duration;

use etcd_client::{Client, LeaseTimeToLiveOptions, PutOptions};

use crate::error::{Error, Result, ctx};
use crate::session::{Session, SessionOptions};

/// What [`Lease::time_to_live`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Seconds left (`None` when the lease has expired or was revoked).
    pub remaining: Option<Duration>,
    /// The TTL the lease was granted with.
    pub granted: Duration,
    /// Keys attached to it.
    pub keys: Vec<String>,
}

/// A granted lease.
///
/// ```no_run
/// # async fn demo(client: etcd_client::Client) -> Result<(), etcd_patterns::Error> {
/// use std::time::Duration;
/// use etcd_patterns::Lease;
/// let lease = Lease::grant(&client, Duration::from_secs(30)).await?;
/// lease.attach("cache/report-17", "ready").await?;  // deleted when the lease ends
/// lease.keep_alive_once().await?;                   // back to 30 s
/// println!("{:?}", lease.time_to_live().await?.remaining);
/// lease.revoke().await?;                            // delete the keys now
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Lease {
    client: Client,
    id: i64,
    ttl: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("id", &format_args!("{:x}", self.id))
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Lease {
    /// Grants a lease of `ttl` (whole seconds, at least 1).
    pub async fn grant(client: &Client, ttl: Duration) -> Result<Lease> {
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let resp = client
            .lease_client()
            .grant(secs, None)
            .await
            .map_err(ctx(format!("granting a {secs} s lease")))?;
        Ok(Lease {
            client: client.clone(),
            id: resp.id(),
            ttl: Duration::from_secs(resp.ttl().max(0) as u64),
        })
    }

    /// The lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The granted TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Writes `key` attached to this lease: etcd deletes it when the lease ends.
    pub async fn attach(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<i64> {
        let resp = self
            .client
            .kv_client()
            .put(key, value, Some(PutOptions::new().with_lease(self.id)))
            .await
            .map_err(ctx(format!("attaching {key} to lease {:x}", self.id)))?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Renews once; [`Error::SessionExpired`] if the lease is already gone.
    pub async fn keep_alive_once(&self) -> Result<Duration> {
        let what = format!("renewing lease {:x}", self.id);
        let renew = async {
            let (mut keeper, mut stream) = self.client.lease_client().keep_alive(self.id).await?;
            keeper.keep_alive().await?;
            stream.message().await
        };
        let resp = match renew.await {
            Ok(Some(resp)) => resp,
            Ok(None) => return Err(Error::Unexpected(format!("{what}: stream closed"))),
            // etcd-client reports an unknown lease as an error, not TTL 0.
            Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => {
                return Err(Error::SessionExpired {
                    lease: self.id,
                    reason: crate::LostReason::Expired,
                });
            }
            Err(e) => return Err(Error::etcd(what, e)),
        };
        if resp.ttl() <= 0 {
            return Err(Error::SessionExpired {
                lease: self.id,
                reason: crate::LostReason::Expired,
            });
        }
        Ok(Duration::from_secs(resp.ttl() as u64))
    }

    /// Keeps the lease alive in the background (and tells you when that
    /// fails) by turning it into a [`Session`].
    pub async fn keep_alive(&self) -> Result<Session> {
        Session::with_options(
            self.client.clone(),
            SessionOptions::new(self.ttl).with_lease(self.id),
        )
        .await
    }

    /// Remaining time, granted TTL and attached keys.
    pub async fn time_to_live(&self) -> Result<LeaseInfo> {
        let resp = self
            .client
            .lease_client()
            .time_to_live(self.id, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .map_err(ctx(format!("reading lease {:x}", self.id)))?;
        Ok(LeaseInfo {
            remaining: (resp.ttl() > 0).then(|| Duration::from_secs(resp.ttl() as u64)),
            granted: Duration::from_secs(resp.granted_ttl().max(0) as u64),
            keys: resp
                .keys()
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect(),
        })
    }

    /// Revokes the lease: every attached key is deleted now.
    pub async fn revoke(&self) -> Result<()> {
        self.client
            .lease_client()
            .revoke(self.id)
            .await
            .map_err(ctx(format!("revoking lease {:x}", self.id)))?;
        Ok(())
    }
}
