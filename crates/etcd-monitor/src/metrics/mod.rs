//! Member metrics: each member's Prometheus `/metrics` page, parsed.

pub mod prom;
pub mod window;

/// The HTTP client that reads members' `/metrics` pages, shared by every
/// cluster's tasks (one per dial timeout; the request timeout is set per
/// request).
///
/// It keeps no connection open between scrapes. A kept-alive HTTP/1
/// connection holds on to a read buffer as large as the biggest page it
/// read (an etcd page is about 150 kB, so 128-256 kB per connection and
/// three connections per watched cluster), while reconnecting on loopback
/// or a LAN costs a few syscalls every interval. Root certificates and the
/// TLS session cache are loaded once, not once per cluster.
pub fn scrape_client(dial_timeout: std::time::Duration) -> reqwest::Client {
    static CLIENTS: std::sync::Mutex<Vec<(std::time::Duration, reqwest::Client)>> =
        std::sync::Mutex::new(Vec::new());
    let mut clients = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, c)) = clients.iter().find(|(t, _)| *t == dial_timeout) {
        return c.clone();
    }
    let client = reqwest::Client::builder()
        .connect_timeout(dial_timeout)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap_or_default();
    clients.push((dial_timeout, client.clone()));
    client
}

/// An HTTP error for people: the root cause, not reqwest's debug dump.
pub fn describe_http_error(e: &reqwest::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = std::error::Error::source(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// User + system CPU time of this process so far, from `/proc/self/stat`
/// (Linux; `None` elsewhere), in clock ticks converted with the kernel's
/// `sysconf(_SC_CLK_TCK)`.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (which may hold spaces and parentheses):
    // utime and stime are fields 14 and 15 of proc(5).
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the running system; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| (utime + stime) / hz as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_time_follows_the_clock() {
        // Busy until 0.2 s of CPU time shows (a wrong tick rate would make it
        // show 10x too slowly or too fast), then compare with the wall clock:
        // the process (all test threads) cannot use more than every core.
        let before = super::process_cpu_seconds().unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let used = loop {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            let used = super::process_cpu_seconds().unwrap() - before;
            if used >= 0.2 || start.elapsed() > std::time::Duration::from_secs(10) {
                break used;
            }
        };
        let wall = start.elapsed().as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        assert!(used >= 0.2, "{used} s of CPU in {wall} s");
        assert!(
            used <= wall * cores + 0.05,
            "{used} s of CPU in {wall} s on {cores} cores"
        );
    }
}
