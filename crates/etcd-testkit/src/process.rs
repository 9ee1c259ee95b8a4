//! Child processes that cannot outlive the test run.
//!
//! Every etcd member is started in its own process group (so a Ctrl-C aimed at
//! the test runner or the demo does not reach it half-way) and with
//! `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it when its parent goes
//! away, even if the parent is killed before any `Drop` runs. The death
//! signal fires when the *thread* that forked the child exits, so all children
//! are forked by one spawner thread that lives as long as the process.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("etcd-testkit-spawner".into())
            .spawn(move || {
                // Never returns while the process lives: the sender is in a static.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the etcd-testkit spawner thread");
        Mutex::new(tx)
    })
}

/// Spawns `cmd` as a child that dies with this process.
pub(crate) fn spawn_bound(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    cmd.process_group(0);
    // SAFETY: only async-signal-safe libc calls run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(io::Error::other("parent exited before the child started"));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| io::Error::other("spawner lock poisoned"))?
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("spawner thread dropped the request"))?
}

/// Sends `signal` to the process `pid`.
pub(crate) fn signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits until every thread of `pid` is stopped (`stopped`) or none is,
/// as `/proc/<pid>/task/*/stat` reports it; false after `limit`.
pub(crate) fn wait_stopped(pid: u32, stopped: bool, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match all_threads_stopped(pid) {
            Some(s) if s == stopped => return true,
            None => return true, // the process is gone: nothing to wait for
            Some(_) => {}
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// `Some(true)` when every thread is in state `T`/`t`, `Some(false)` when
/// one is not, `None` when the process cannot be read.
fn all_threads_stopped(pid: u32) -> Option<bool> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut any = false;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        // "pid (comm) S ...": the state follows the last ')'.
        let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
        if !matches!(state, 'T' | 't') {
            return Some(false);
        }
        any = true;
    }
    Some(any)
}
