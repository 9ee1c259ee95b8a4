//! Free loopback ports.
//!
//! Ports are drawn at random below the kernel's ephemeral range (so an
//! outgoing connection cannot take one between our check and etcd's bind) and
//! kept bound until the whole set is chosen. Several test processes may still
//! race for the same port; the cluster start retries with fresh ports when a
//! member reports "address already in use".

use std::net::{Ipv4Addr, TcpListener};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Error;

const LOW: u32 = 20_000;
const HIGH: u32 = 32_000;

/// One free port on 127.0.0.1 for a test's own server (a monitor's API, a
/// receiver), drawn like the members' ports. Panics when none is free.
pub fn free_port() -> u16 {
    free_ports(1).expect("a free loopback port")[0]
}

/// Reserves `n` distinct free ports on 127.0.0.1.
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>, Error> {
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ ((std::process::id() as u64) << 32);
    let mut held = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    let mut attempts = 0;
    while ports.len() < n {
        attempts += 1;
        if attempts > 10_000 {
            return Err(Error::Ports(n));
        }
        // xorshift: good enough to spread ports, no dependency needed.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = (LOW + (seed % u64::from(HIGH - LOW)) as u32) as u16;
        if ports.contains(&port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            held.push(listener);
            ports.push(port);
        }
    }
    drop(held);
    Ok(ports)
}
