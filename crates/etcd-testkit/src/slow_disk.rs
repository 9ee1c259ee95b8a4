//! A slow disk for one member: `strace` attached to the member delays each
//! of its `fdatasync` calls (the WAL fsync) by a fixed time, for as long as
//! the [`SlowDisk`] guard lives. Nothing else about the member changes: it
//! keeps its files, sockets and state, exactly like a member whose disk
//! turned slow.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// Delays every `fdatasync` of one member while it lives; dropping it
/// detaches `strace` and the member's disk is fast again.
#[derive(Debug)]
pub struct SlowDisk {
    strace: Child,
    pid: u32,
}

impl SlowDisk {
    /// Attaches `strace` (from PATH) to every thread of process `pid` and
    /// waits until it traces them (at most 5 s).
    pub(crate) fn attach(pid: u32, delay: Duration) -> Result<SlowDisk, Error> {
        let inject = format!("fdatasync:delay_enter={}", delay.as_micros());
        let strace = Command::new("strace")
            .args(["-f", "-qq", "-e", "trace=fdatasync", "-e"])
            .arg(format!("inject={inject}"))
            .args(["-o", "/dev/null", "-p"])
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                Error::Io(
                    "running strace (apt-get install -y strace) to slow a member's disk".into(),
                    e,
                )
            })?;
        let mut guard = SlowDisk { strace, pid };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !guard.traced() {
            if let Ok(Some(status)) = guard.strace.try_wait() {
                return Err(Error::Io(
                    format!("strace -p {pid} exited at once ({status}): is ptrace allowed here?"),
                    std::io::Error::other("strace failed"),
                ));
            }
            if Instant::now() > deadline {
                return Err(Error::Io(
                    format!("strace did not attach to {pid} within 5 s"),
                    std::io::Error::from(std::io::ErrorKind::TimedOut),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(guard)
    }

    /// Whether every thread of the process has a tracer.
    fn traced(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return false;
        };
        let mut any = false;
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let tracer = status
                .lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .map(str::trim);
            if tracer.is_none_or(|t| t == "0") {
                return false;
            }
            any = true;
        }
        any
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        // SIGTERM lets strace detach cleanly; the member runs on untraced.
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.strace.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.strace.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.strace.kill();
        let _ = self.strace.wait();
    }
}
