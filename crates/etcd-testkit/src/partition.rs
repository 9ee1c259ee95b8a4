//! Network partitions on loopback: one member runs as `nobody`, and iptables
//! drops peer traffic between it and the others by the packets' owner, in
//! both directions. Client traffic (the test process, uid 0, to the client
//! port) still flows, so the member keeps answering clients from its own,
//! increasingly stale state, exactly like a member behind a real partition.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::Error;

/// uid and gid of `nobody`/`nogroup` on Debian.
const NOBODY: u32 = 65534;

/// Lets `nobody` reach the isolatable member's data directory.
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
    // Traversal only: the other members' data stays private.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| Error::Io(format!("chmod 711 {}", dir.display()), e))
}

/// Makes `cmd` run as `nobody` with its data directory owned by `nobody`.
pub(crate) fn run_as_nobody(cmd: &mut Command, data_dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Error::Io(format!("creating {}", data_dir.display()), e))?;
    chown_tree(data_dir)?;
    // std drops supplementary groups when root switches uid.
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

/// A partition in force: the iptables rules it inserted, removed when it is
/// dropped (or by [`Partition::heal`]).
#[derive(Debug)]
#[must_use = "the partition heals when this guard is dropped"]
pub struct Partition {
    rules: Vec<Vec<String>>,
}

impl Partition {
    /// Drops root's packets to `own` (the isolated member's peer port) and
    /// nobody's packets to each of `others` (the other members' peer ports).
    pub(crate) fn cut(own: String, others: &[String]) -> Result<Partition, Error> {
        let rule = |port: &str, uid: &str| -> Vec<String> {
            ["OUTPUT", "-o", "lo", "-p", "tcp", "--dport", port]
                .into_iter()
                .chain(["-m", "owner", "--uid-owner", uid, "-j", "DROP"])
                .map(String::from)
                .collect()
        };
        let mut wanted = vec![rule(&own, "0")];
        wanted.extend(others.iter().map(|p| rule(p, &NOBODY.to_string())));
        let mut partition = Partition { rules: Vec::new() };
        for r in wanted {
            // On failure `partition` drops here and removes what was inserted.
            iptables("-I", &r)?;
            partition.rules.push(r);
        }
        Ok(partition)
    }

    /// Removes the rules now, reporting a failure.
    pub fn heal(mut self) -> Result<(), Error> {
        let rules = std::mem::take(&mut self.rules);
        let mut first_err = None;
        for r in rules.iter().rev() {
            if let Err(e) = iptables("-D", r) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for r in self.rules.iter().rev() {
            if let Err(e) = iptables("-D", r) {
                eprintln!("etcd-testkit: could not remove iptables rule {r:?}: {e}");
            }
        }
    }
}

fn iptables(action: &str, rule: &[String]) -> Result<(), Error> {
    let out = Command::new("iptables")
        .arg("-w")
        .arg(action)
        .args(rule)
        .output()
        .map_err(|e| {
            Error::Io(
                "running iptables (apt-get install -y iptables; needs root)".into(),
                e,
            )
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Partition(format!(
            "iptables {action} {} failed ({}): {}",
            rule.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
