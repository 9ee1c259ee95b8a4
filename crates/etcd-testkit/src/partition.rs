//! Network partitions on loopback: one member runs as `nobody`, and iptables
//! drops peer traffic between it and the others by the packets' owner, in
//! both directions. Client traffic (the test process, uid 0, to the client
//! port) still flows, so the member keeps answering clients from its own,
//! increasingly stale state, exactly like a member behind a real partition.
//!
//! Every rule carries the comment `etcd-testkit-pid-<pid>`: the [`Partition`]
//! guard deletes its own rules, and rules left behind by a test process that
//! was killed before it could run `Drop` are deleted by the next partition.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// uid and gid of `nobody`/`nogroup` on Debian.
const NOBODY: u32 = 65534;

/// Prefix of the comment on every rule; the owning process id follows.
const COMMENT_PREFIX: &str = "etcd-testkit-pid-";

/// Checks that member `member` can run as `nobody`, and lets `nobody`
/// traverse the cluster directory to reach its data directory.
pub(crate) fn prepare_cluster_dir(
    dir: &Path,
    member: usize,
    members: usize,
    tls: bool,
) -> Result<(), Error> {
    if member >= members {
        return Err(Error::NoSuchMember(member, members));
    }
    if tls {
        return Err(Error::Partition(
            "ClusterOptions::isolatable does not work with tls(): the member running as nobody cannot read the key files".into(),
        ));
    }
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::Partition(format!(
            "ClusterOptions::isolatable({member}) needs root: the member runs as nobody and partitions use iptables"
        )));
    }
    // Traversal only: the other members' data stays private.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| Error::Io(format!("chmod 711 {}", dir.display()), e))
}

/// Makes `cmd` run as `nobody`/`nogroup` without supplementary groups (what
/// `setpriv --reuid=nobody --regid=nogroup --clear-groups` does), with its
/// data directory and log file owned by `nobody`.
pub(crate) fn run_as_nobody(
    cmd: &mut Command,
    data_dir: &Path,
    log_file: &Path,
) -> Result<(), Error> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Error::Io(format!("creating {}", data_dir.display()), e))?;
    // What etcd itself creates: no warning about the permissions.
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::Io(format!("chmod 700 {}", data_dir.display()), e))?;
    chown_tree(data_dir)?;
    // The member writes through the descriptor we open, but keep the file
    // writable by its owner for anything that reopens it.
    chown_tree(log_file)?;
    // std calls setgroups(0) before setuid when root switches uid, so no
    // supplementary group of root survives.
    cmd.uid(NOBODY).gid(NOBODY);
    Ok(())
}

fn chown_tree(path: &Path) -> Result<(), Error> {
    std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY))
        .map_err(|e| Error::Io(format!("chown nobody {}", path.display()), e))?;
    if path.is_dir() {
        let entries = std::fs::read_dir(path)
            .map_err(|e| Error::Io(format!("reading {}", path.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::Io(format!("reading {}", path.display()), e))?;
            chown_tree(&entry.path())?;
        }
    }
    Ok(())
}

/// A network partition in force, made by [`EtcdCluster::partition`].
///
/// Holds the iptables rules it inserted and deletes exactly those when it is
/// dropped (also during a panic's unwinding) or when [`Partition::heal`] is
/// called. Rules of a test process killed before it could drop the guard
/// are deleted by the next [`EtcdCluster::partition`] on the machine.
///
/// [`EtcdCluster::partition`]: crate::EtcdCluster::partition
#[derive(Debug)]
#[must_use = "the partition heals when this guard is dropped"]
pub struct Partition {
    iptables: PathBuf,
    rules: Vec<Vec<String>>,
}

impl Partition {
    /// Drops root's packets to `own` (the isolated member's peer port) and
    /// nobody's packets to each of `others` (the other members' peer ports),
    /// on loopback only. If any insertion fails, the rules inserted before
    /// it are deleted again.
    pub(crate) fn cut(iptables: &Path, own: &str, others: &[&str]) -> Result<Partition, Error> {
        sweep_leaked_rules(iptables);
        let comment = format!("{COMMENT_PREFIX}{}", std::process::id());
        let rule = |port: &str, uid: &str| -> Vec<String> {
            ["OUTPUT", "-o", "lo", "-p", "tcp", "--dport", port]
                .into_iter()
                .chain(["-m", "owner", "--uid-owner", uid])
                .chain(["-m", "comment", "--comment", &comment, "-j", "DROP"])
                .map(String::from)
                .collect()
        };
        let nobody = NOBODY.to_string();
        let mut wanted = vec![rule(own, "0")];
        wanted.extend(others.iter().map(|p| rule(p, &nobody)));
        let mut partition = Partition {
            iptables: iptables.to_path_buf(),
            rules: Vec::with_capacity(wanted.len()),
        };
        for r in wanted {
            // On failure `partition` drops here and deletes what was inserted.
            run(iptables, "-I", &r)?;
            partition.rules.push(r);
        }
        Ok(partition)
    }

    /// Deletes the rules now and reports the first rule that could not be
    /// deleted (the others are deleted anyway). The member reconnects and
    /// catches up within seconds; on etcd 3.4 (no `--pre-vote` by default)
    /// the higher term it campaigned at forces the cluster into a new
    /// election first.
    pub fn heal(mut self) -> Result<(), Error> {
        self.delete_rules()
    }

    fn delete_rules(&mut self) -> Result<(), Error> {
        let rules = std::mem::take(&mut self.rules);
        let mut first_err = None;
        for r in rules.iter().rev() {
            if let Err(e) = run(&self.iptables, "-D", r) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if let Err(e) = self.delete_rules() {
            eprintln!("etcd-testkit: healing a partition: {e}");
        }
    }
}

/// Deletes rules whose owning test process no longer exists (best effort).
fn sweep_leaked_rules(iptables: &Path) {
    let Ok(out) = Command::new(iptables).args(["-w", "-S", "OUTPUT"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(pid) = words
            .iter()
            .find_map(|w| w.strip_prefix(COMMENT_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if words.first() != Some(&"-A") || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let rule: Vec<String> = words[1..].iter().map(|w| w.to_string()).collect();
        let _ = run(iptables, "-D", &rule);
    }
}

/// Runs `iptables -w <action> <rule>`; a failure names the command line and
/// carries iptables' stderr.
fn run(iptables: &Path, action: &str, rule: &[String]) -> Result<(), Error> {
    let command = format!("{} -w {action} {}", iptables.display(), rule.join(" "));
    let out = Command::new(iptables)
        .arg("-w")
        .arg(action)
        .args(rule)
        .output()
        .map_err(|e| {
            Error::Partition(format!(
                "cannot run `{command}`: {e} (install it with apt-get install -y iptables; partitions need root)"
            ))
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Partition(format!(
            "`{command}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
