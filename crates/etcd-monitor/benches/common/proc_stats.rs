//! A process's CPU time from /proc, for the benchmarks that measure the
//! monitor's own cost (included with `#[path]`).

unsafe extern "C" {
    #[link_name = "sysconf"]
    fn libc_sysconf(name: i32) -> i64;
}

/// User + system CPU seconds `pid` has used, or 0 when it cannot be read.
pub fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // After the command name: state is field 0; utime is 11, stime 12 (in clock ticks).
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions; 2 is _SC_CLK_TCK.
    (field(11) + field(12)) / unsafe { libc_sysconf(2) } as f64
}

/// Resident memory of `pid` now, KiB (0 when it cannot be read).
#[allow(dead_code)] // not every benchmark including this file reads memory
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
