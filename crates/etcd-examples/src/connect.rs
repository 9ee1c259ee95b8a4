//! Connecting with a probe, so that a wrong endpoint fails within the dial
//! timeout with a message naming it instead of hanging at the first request.

use std::time::Duration;

use anyhow::{Context, bail};
use etcd_client::{Client, ConnectOptions};
use tokio::time::{sleep, timeout};

/// `host:port` -> `http://host:port`; URLs are kept.
fn to_url(raw: &str) -> anyhow::Result<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        bail!("empty endpoint in --endpoints");
    }
    Ok(if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    })
}

/// A client balanced over `endpoints` that has answered a status request.
pub async fn connect(
    endpoints: &[String],
    dial: Duration,
) -> anyhow::Result<(Client, Vec<String>, ConnectOptions)> {
    let urls = endpoints
        .iter()
        .map(|e| to_url(e))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = ConnectOptions::new()
        .with_connect_timeout(dial)
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(5), dial);
    let mut last_error = String::from("no answer");
    let attempt = async {
        let client = Client::connect(urls.clone(), Some(options.clone())).await?;
        // Retry within the dial timeout: one member may be down while the
        // balanced client picks it.
        loop {
            match client.maintenance_client().status().await {
                Ok(_) => return Ok::<_, etcd_client::Error>(client),
                Err(e) => {
                    last_error = e.to_string();
                    sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    match timeout(dial, attempt).await {
        Ok(Ok(client)) => Ok((client, urls, options)),
        Ok(Err(e)) => Err(e).with_context(|| {
            format!(
                "cannot connect to etcd at {}; check --endpoints",
                urls.join(",")
            )
        }),
        Err(_) => {
            bail!(
                "no etcd endpoint answered within the dial timeout of {} (tried {}; last error: {last_error}); start etcd or pass --endpoints host:port,...",
                humantime::format_duration(dial),
                urls.join(", ")
            )
        }
    }
}
