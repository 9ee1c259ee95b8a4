//! `etcd-monitor healthcheck`: asks a running monitor's `/health` (or
//! `/ready`) and exits 0 when it answers 200, 1 otherwise. The container
//! image's `HEALTHCHECK` runs it, so the image needs no curl or shell; Docker
//! reads exactly these two codes (0 healthy, 1 unhealthy).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::cmd::cli::{GlobalArgs, load_config};

/// Flags of `healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// URL to ask (default: `/health` at the configured `api.listen`, on
    /// loopback when it listens on all interfaces; https when `api.tls` is set).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Ask `/ready` instead of `/health`: every cluster checked once and the
    /// history store taking writes.
    #[arg(long, conflicts_with = "url")]
    pub ready: bool,
    /// How long the whole request may take.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// The address a local probe reaches the listener at: an unspecified host
/// (`0.0.0.0`, `[::]`) is reached on loopback.
fn local_address(listen: &str) -> Option<SocketAddr> {
    let mut addr: SocketAddr = listen.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Some(addr)
}

/// The URL to ask, from the flags or the configuration.
fn target(global: &GlobalArgs, args: &HealthcheckArgs) -> Result<(String, bool), String> {
    if let Some(url) = &args.url {
        let parsed = url::Url::parse(url).map_err(|e| format!("--url {url:?}: {e}"))?;
        let loopback = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        return Ok((url.clone(), loopback));
    }
    let config = load_config(global, None).map_err(|e| e.to_string())?;
    let addr = local_address(&config.api.listen)
        .ok_or_else(|| format!("api.listen {:?} is not host:port", config.api.listen))?;
    let scheme = if config.api.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let path = if args.ready { "ready" } else { "health" };
    Ok((format!("{scheme}://{addr}/{path}"), addr.ip().is_loopback()))
}

/// Runs the check: 0 when the answer is 200, 1 for anything else (the
/// reason on stderr).
pub fn main(global: &GlobalArgs, args: HealthcheckArgs) -> ExitCode {
    match check(global, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(global: &GlobalArgs, args: &HealthcheckArgs) -> Result<(), String> {
    let (url, loopback) = target(global, args)?;
    // The probe sends no credentials and reads only the status code. On
    // loopback the API's certificate names the service, not 127.0.0.1, so it
    // is not verified there; anywhere else it is.
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .tls_danger_accept_invalid_certs(loopback)
        .build()
        .map_err(|e| format!("{url}: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let status = runtime
        .block_on(async { client.get(&url).send().await.map(|r| r.status()) })
        .map_err(|e| format!("{url}: {e}"))?;
    if status == reqwest::StatusCode::OK {
        Ok(())
    } else {
        Err(format!("{url} answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::local_address;

    #[test]
    fn all_interfaces_are_reached_on_loopback() {
        assert_eq!(
            local_address("0.0.0.0:8080").unwrap().to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(local_address("[::]:9").unwrap().to_string(), "[::1]:9");
        assert_eq!(
            local_address("10.1.2.3:8080").unwrap().to_string(),
            "10.1.2.3:8080"
        );
        assert!(local_address("monitor:8080").is_none());
    }
}
