//! `etcd-monitor ctl` against real etcd clusters, compared with the real
//! `etcdctl` where both can answer.
//!
//! Most tests share one 3-member cluster and keep to their own key prefix;
//! membership, leadership and compaction changes run on a dedicated cluster.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use etcd_testkit::{ClusterOptions, EtcdCluster};
use serde_json::Value;

fn ctl_cmd(endpoints: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etcd-monitor"));
    cmd.arg("ctl")
        .args(args)
        .arg(format!("--endpoints={endpoints}"))
        .arg("--dial-timeout=2s")
        .env_remove("ETCD_MONITOR_CONFIG")
        .stdin(Stdio::null());
    cmd
}

/// Runs `etcd-monitor ctl ARGS --endpoints=...` with no TTY.
fn ctl(endpoints: &str, args: &[&str]) -> Output {
    ctl_cmd(endpoints, args).output().expect("run etcd-monitor")
}

fn ctl_stdin(endpoints: &str, args: &[&str], input: &str) -> Output {
    with_stdin(ctl_cmd(endpoints, args), input)
}

/// Runs `cmd` with `input` on its stdin (a pipe, not a TTY).
fn with_stdin(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn etcdctl_cmd(endpoints: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    etcdctl_cmd(endpoints, args).output().expect("run etcdctl")
}

fn etcdctl_stdin(endpoints: &str, args: &[&str], input: &str) -> Output {
    with_stdin(etcdctl_cmd(endpoints, args), input)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed ({:?}): stdout {:?} stderr {:?}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Asserts failure without a panic and returns stderr.
fn fails(o: Output) -> String {
    assert!(
        !o.status.success(),
        "should have failed: stdout {:?}",
        stdout(&o)
    );
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "panicked: {err}");
    err
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A response without the id of the member that answered (which member
/// answers is up to the client's balancing).
/// The parts of a JSON answer two clients can agree on: the answering
/// member differs, and the header's revision is the cluster's current one,
/// which other tests on the shared cluster move between the two calls.
fn without_member(mut v: Value) -> Value {
    v["header"]["member_id"] = Value::Null;
    v["header"]["revision"] = Value::Null;
    v
}

fn shared() -> (&'static EtcdCluster, String) {
    let c = EtcdCluster::shared();
    (c, c.endpoints().join(","))
}

fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("127.0.0.1:{port}")
}

fn revision(endpoints: &str) -> i64 {
    let v = json(&ok(ctl(endpoints, &["get", "-w", "json", "none-such"])));
    v["header"]["revision"].as_i64().expect("revision")
}

#[test]
fn get_put_del_agree_with_etcdctl() {
    let (_c, eps) = shared();
    ok(ctl(&eps, &["put", "kv/a", "1"]));
    assert_eq!(ok(ctl(&eps, &["put", "kv/b", "two words"])), "OK\n");
    ok(ctl_stdin(&eps, &["put", "kv/c"], "from stdin"));
    ok(etcdctl(&eps, &["put", "kv/d", "4"]));

    // simple output is byte-identical to etcdctl's
    for args in [
        &["get", "kv/", "--prefix"][..],
        &["get", "kv/", "--prefix", "--keys-only"],
        &["get", "kv/b"],
        &["get", "kv/", "--prefix", "--limit", "2"],
        &[
            "get",
            "kv/",
            "--prefix",
            "--sort-by",
            "KEY",
            "--order",
            "DESCEND",
        ],
        &["get", "kv/b", "--from-key", "--limit", "2"],
        &["get", "kv/a", "kv/c"],
    ] {
        assert_eq!(ok(ctl(&eps, args)), ok(etcdctl(&eps, args)), "{args:?}");
    }
    // json: same keys, values, revisions and count
    let ours = json(&ok(ctl(&eps, &["get", "kv/", "--prefix", "-w", "json"])));
    let theirs = json(&ok(etcdctl(
        &eps,
        &["get", "kv/", "--prefix", "-w", "json"],
    )));
    assert_eq!(ours["count"], 4);
    assert_eq!(without_member(ours), without_member(theirs));
    for args in [
        &["get", "kv/none", "-w", "json"][..],
        &["get", "kv/", "--prefix", "--limit", "1", "-w", "json"],
        &["get", "kv/", "--prefix", "--keys-only", "-w", "json"],
    ] {
        let ours = json(&ok(ctl(&eps, args)));
        let theirs = json(&ok(etcdctl(&eps, args)));
        assert_eq!(without_member(ours), without_member(theirs), "{args:?}");
    }
    assert_eq!(
        ok(ctl(&eps, &["get", "kv/", "--prefix", "--count-only"])),
        "4\n"
    );

    // --rev reads the past
    let rev = revision(&eps);
    ok(ctl(&eps, &["put", "kv/a", "changed"]));
    let args = ["get", "kv/a", "--rev", &rev.to_string()];
    assert_eq!(ok(ctl(&eps, &args)), "kv/a\n1\n");
    assert_eq!(ok(ctl(&eps, &args)), ok(etcdctl(&eps, &args)));

    // put --prev-kv matches etcdctl
    let ours = ok(ctl(&eps, &["put", "kv/a", "x", "--prev-kv"]));
    let theirs = ok(etcdctl(&eps, &["put", "kv/a", "y", "--prev-kv"]));
    assert_eq!(ours, "OK\nkv/a\nchanged\n");
    assert_eq!(theirs, "OK\nkv/a\nx\n");

    // del --prev-kv matches etcdctl on twin key sets
    for p in ["kv/del1/", "kv/del2/"] {
        ok(etcdctl(&eps, &["put", &format!("{p}x"), "1"]));
        ok(etcdctl(&eps, &["put", &format!("{p}y"), "2"]));
    }
    let ours = ok(ctl(&eps, &["del", "kv/del1/", "--prefix", "--prev-kv"]));
    let theirs = ok(etcdctl(&eps, &["del", "kv/del2/", "--prefix", "--prev-kv"]));
    assert_eq!(ours, theirs.replace("del2", "del1"));
    assert_eq!(ours, "2\nkv/del1/x\n1\nkv/del1/y\n2\n");
    assert_eq!(ok(ctl(&eps, &["del", "kv/nothing"])), "0\n");
    assert_eq!(ok(etcdctl(&eps, &["get", "kv/del1/", "--prefix"])), "");

    // a future revision is a clear error
    let err = fails(ctl(&eps, &["get", "kv/a", "--rev", "99999999"]));
    assert!(err.contains("future revision"), "{err}");
    assert!(err.contains("at revision 99999999"), "{err}");
    let err = fails(ctl(&eps, &["get", "kv/a", "--rev=-3"]));
    assert!(err.contains("bad revision -3"), "{err}");
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let (_c, eps) = shared();
    for i in 0..50 {
        ok(etcdctl(&eps, &["put", &format!("pipe/{i:02}"), "value"]));
    }
    let mut child = ctl_cmd(&eps, &["get", "pipe/", "--prefix"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take()); // like `| head -0`
    let o = child.wait_with_output().expect("wait");
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(141), "{err}");
}

#[test]
fn member_list_and_endpoint_verbs_agree_with_etcdctl() {
    let (c, eps) = shared();
    // member list: simple output identical, json ids/names/urls identical
    let args = ["member", "list"];
    assert_eq!(ok(ctl(&eps, &args)), ok(etcdctl(&eps, &args)));
    let ours = json(&ok(ctl(&eps, &["member", "list", "-w", "json"])));
    let theirs = json(&ok(etcdctl(&eps, &["member", "list", "-w", "json"])));
    assert_eq!(without_member(ours.clone()), without_member(theirs));
    let ids: BTreeSet<u64> = ours["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["ID"].as_u64().expect("ID"))
        .collect();
    let kit: BTreeSet<u64> = c.members().iter().map(|m| m.id).collect();
    assert_eq!(ids, kit);
    let table = ok(ctl(&eps, &["member", "list", "-w", "table"]));
    assert!(table.contains("| IS LEARNER |"), "{table}");

    // endpoint status --cluster: same members, leader, version
    let status = |out: &str| -> Vec<(u64, u64, String)> {
        let mut v: Vec<(u64, u64, String)> = json(out)
            .as_array()
            .expect("array")
            .iter()
            .map(|e| {
                let s = &e["Status"];
                (
                    s["header"]["member_id"].as_u64().expect("member_id"),
                    s["leader"].as_u64().expect("leader"),
                    s["version"].as_str().expect("version").to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let args = ["endpoint", "status", "--cluster", "-w", "json"];
    let ours = status(&ok(ctl(&eps, &args)));
    assert_eq!(ours, status(&ok(etcdctl(&eps, &args))));
    assert_eq!(ours.len(), 3);
    let simple = ok(ctl(&eps, &["endpoint", "status"]));
    assert_eq!(simple.lines().count(), 3, "{simple}");
    assert_eq!(
        simple
            .lines()
            .filter(|l| l.contains(", true, false, "))
            .count(),
        1,
        "one leader: {simple}"
    );

    // endpoint health --cluster
    let health = ok(ctl(&eps, &["endpoint", "health", "--cluster"]));
    assert_eq!(
        health.lines().filter(|l| l.contains("is healthy")).count(),
        3,
        "{health}"
    );

    // endpoint hashkv at one revision: every member and etcdctl agree
    let rev = revision(&eps).to_string();
    let args = [
        "endpoint",
        "hashkv",
        "--cluster",
        "--rev",
        &rev,
        "-w",
        "json",
    ];
    let hashes = |out: &str| -> BTreeSet<u64> {
        json(out)
            .as_array()
            .expect("array")
            .iter()
            .map(|e| e["HashKV"]["hash"].as_u64().expect("hash"))
            .collect()
    };
    let ours = hashes(&ok(ctl(&eps, &args)));
    assert_eq!(ours.len(), 1, "members disagree: {ours:?}");
    assert_eq!(ours, hashes(&ok(etcdctl(&eps, &args))));

    // alarm list: none
    assert_eq!(ok(ctl(&eps, &["alarm", "list"])), "");
}

#[test]
fn unreachable_endpoints_and_unknown_ids_are_named() {
    let (c, eps) = shared();
    let dead = dead_endpoint();
    let err = fails(ctl(&dead, &["get", "x"]));
    assert!(err.contains(&dead), "{err}");
    assert!(err.contains("no etcd endpoint reachable"), "{err}");

    // one good, one dead endpoint: the good one is reported, the dead named
    let mixed = format!("{},{dead}", c.endpoints()[0]);
    let o = ctl(&mixed, &["endpoint", "status"]);
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    let err = fails(o);
    assert!(err.contains(&dead), "{err}");
    let o = ctl(&mixed, &["endpoint", "health"]);
    assert!(
        stdout(&o).contains(&format!("{dead} is unhealthy")),
        "{}",
        stdout(&o)
    );
    fails(o);

    for args in [
        &["member", "remove", "abc123", "--yes"][..],
        &["member", "promote", "abc123"],
        &[
            "member",
            "update",
            "abc123",
            "--peer-urls",
            "http://127.0.0.1:1",
        ],
        &["move-leader", "abc123"],
    ] {
        let err = fails(ctl(&eps, args));
        assert!(err.contains("no member with id abc123"), "{args:?}: {err}");
        assert!(err.contains("member list"), "{err}");
    }
    let err = fails(ctl(&eps, &["member", "remove", "not-hex", "--yes"]));
    assert!(err.contains("not a hexadecimal id"), "{err}");
    let err = fails(ctl(&eps, &["lease", "timetolive", "zz"]));
    assert!(err.contains("not a hexadecimal id"), "{err}");
}

#[test]
fn dangerous_verbs_refuse_without_yes_and_tty() {
    let (c, eps) = shared();
    let id = format!("{:x}", c.members()[2].id);
    for args in [
        &["member", "remove", id.as_str()][..],
        &["defrag"],
        &["defrag", "--cluster"],
        &["compaction", "1"],
        &["alarm", "disarm"],
    ] {
        let err = fails(ctl(&eps, args));
        assert!(err.contains("refusing to"), "{args:?}: {err}");
        assert!(err.contains("--yes"), "{args:?}: {err}");
    }
    // nothing happened
    let members = json(&ok(ctl(&eps, &["member", "list", "-w", "json"])));
    assert_eq!(members["members"].as_array().map(Vec::len), Some(3));
}

#[test]
fn dangerous_verbs_ask_on_a_tty() {
    let (_c, eps) = shared();
    // `script` runs the command on a pseudo-terminal fed from our stdin.
    let on_tty = |answer: &str| {
        let line = format!(
            "{} ctl alarm disarm --endpoints={eps}",
            env!("CARGO_BIN_EXE_etcd-monitor")
        );
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"]);
        with_stdin(cmd, answer)
    };
    let o = on_tty("n\n");
    assert!(!o.status.success());
    let text = stdout(&o);
    assert!(text.contains("disarm every active alarm? [y/N]"), "{text}");
    assert!(text.contains("not confirmed"), "{text}");
    let o = on_tty("y\n");
    assert!(o.status.success(), "{}", stdout(&o));
}

#[test]
fn txn_matches_etcdctl() {
    let (_c, eps) = shared();
    for p in ["txn/ours/", "txn/theirs/"] {
        ok(etcdctl(&eps, &["put", &format!("{p}a"), "1"]));
    }
    let script = |p: &str| {
        format!(
            "value(\"{p}a\") = \"1\"\nmod(\"{p}a\") > \"0\"\n\nput {p}a 2\nput {p}b \"hello world\"\nget {p} --prefix\n\ndel {p}a\n\n"
        )
    };
    let ours = ok(ctl_stdin(&eps, &["txn"], &script("txn/ours/")));
    let theirs = ok(etcdctl_stdin(&eps, &["txn"], &script("txn/theirs/")));
    assert_eq!(ours, theirs.replace("theirs", "ours"));
    assert!(
        ours.starts_with("SUCCESS\n\nOK\n\nOK\n\ntxn/ours/a\n2\n"),
        "{ours}"
    );

    // the failure branch, from a file
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("txn.txt");
    std::fs::write(
        &file,
        "ver(\"txn/ours/a\") = \"7\"\n\nput txn/ours/x 1\n\ndel txn/ours/a\n",
    )
    .expect("write");
    let out = ok(ctl(&eps, &["txn", file.to_str().expect("utf8")]));
    assert_eq!(out, "FAILURE\n\n1\n");
    let err = fails(ctl_stdin(&eps, &["txn"], "value(\"a\") ~ \"1\"\n"));
    assert!(err.contains("stdin: txn line 1"), "{err}");
}

#[test]
fn lease_verbs() {
    let (_c, eps) = shared();
    let out = ok(ctl(&eps, &["lease", "grant", "60"]));
    let id = out.split_whitespace().nth(1).expect("id").to_string();
    assert_eq!(out, format!("lease {id} granted with TTL(60s)\n"));
    ok(ctl(&eps, &["put", "lease/k", "v", "--lease", &id]));
    let ttl = ok(ctl(&eps, &["lease", "timetolive", &id, "--keys"]));
    assert!(ttl.contains("attached keys([lease/k])"), "{ttl}");
    assert_eq!(
        ttl.split("remaining").next(),
        ok(etcdctl(&eps, &["lease", "timetolive", &id, "--keys"]))
            .split("remaining")
            .next()
    );
    assert!(ok(ctl(&eps, &["lease", "list"])).contains(&id));
    assert_eq!(
        ok(ctl(&eps, &["lease", "keep-alive", "--once", &id])),
        format!("lease {id} keepalived with TTL(60)\n")
    );
    assert_eq!(
        ok(ctl(&eps, &["lease", "revoke", &id])),
        format!("lease {id} revoked\n")
    );
    assert_eq!(ok(ctl(&eps, &["get", "lease/k"])), "");
    assert_eq!(
        ok(ctl(&eps, &["lease", "timetolive", &id])),
        format!("lease {id} already expired\n")
    );
    let err = fails(ctl(&eps, &["lease", "revoke", &id]));
    assert!(err.contains("lease not found"), "{err}");
    let err = fails(ctl(&eps, &["lease", "grant", "0"]));
    assert!(err.contains("bad TTL 0"), "{err}");
}

#[test]
fn watch_prints_events_until_interrupted() {
    let (_c, eps) = shared();
    let mut child = ctl_cmd(&eps, &["watch", "watch/", "--prefix", "--prev-kv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The watch is up once a put made after it shows; retry the first put.
    let start = Instant::now();
    let mut lines = Vec::new();
    while lines.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "watch saw nothing"
        );
        ok(etcdctl(&eps, &["put", "watch/a", "1"]));
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(300)) {
            lines.push(l);
        }
    }
    lines.clear();
    ok(etcdctl(&eps, &["put", "watch/a", "2"]));
    ok(etcdctl(&eps, &["del", "watch/a"]));
    while lines.len() < 10 {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    assert_eq!(
        lines,
        [
            "PUT", "watch/a", "1", "watch/a", "2", "DELETE", "watch/a", "2", "watch/a", ""
        ]
    );
    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            assert!(s.success(), "watch exited with {s:?} on Ctrl-C");
            break;
        }
        assert!(Instant::now() < deadline, "watch ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn snapshot_is_verified_and_restores_with_etcdctl() {
    let (c, _eps) = shared();
    let one = c.endpoints()[0].clone();
    ok(ctl(&one, &["put", "snap/k", "v"]));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.db");
    let file_s = file.to_str().expect("utf8");
    assert_eq!(
        ok(ctl(&one, &["snapshot", "save", file_s])),
        format!("Snapshot saved at {file_s}\n")
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["backup.db"], "no partial file left");

    let status = json(&ok(etcdctl(
        &one,
        &["snapshot", "status", file_s, "-w", "json"],
    )));
    assert!(status["totalKey"].as_u64().unwrap_or(0) > 0, "{status}");
    let restored = dir.path().join("restored");
    ok(etcdctl(
        &one,
        &[
            "snapshot",
            "restore",
            file_s,
            "--data-dir",
            restored.to_str().expect("utf8"),
        ],
    ));
    assert!(restored.join("member").join("snap").join("db").exists());

    // a target directory that does not exist: clear error, nothing left
    let bad = dir.path().join("missing").join("x.db");
    let err = fails(ctl(
        &one,
        &["snapshot", "save", bad.to_str().expect("utf8")],
    ));
    assert!(err.contains("cannot create"), "{err}");
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn defrag_visits_the_leader_last() {
    let (c, eps) = shared();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let leader = rt
        .block_on(c.leader_index())
        .expect("leader")
        .expect("a leader");
    let leader_id = c.members()[leader].id;

    // dry run: the plan, leader last, nothing done
    let plan = json(&ok(ctl(
        &eps,
        &["defrag", "--cluster", "--dry-run", "-w", "json"],
    )));
    let plan = plan.as_array().expect("array");
    assert_eq!(plan.len(), 3);
    assert!(plan.iter().all(|r| r["outcome"] == "planned"));
    assert_eq!(plan[2]["id"].as_u64(), Some(leader_id));

    // a rule no member meets: all skipped
    let skipped = json(&ok(ctl(
        &eps,
        &[
            "defrag",
            "--cluster",
            "--yes",
            "--defrag-rule",
            "dbSize > 10GB && dbSizeFree/dbSize > 0.5",
            "-w",
            "json",
        ],
    )));
    assert!(
        skipped
            .as_array()
            .expect("array")
            .iter()
            .all(|r| r["outcome"] == "skipped"),
        "{skipped}"
    );

    // rules over the quota, read from each member's /metrics (etcd's
    // default quota is 2 GiB): the etcd-defrag style with || and arithmetic
    let quota = |rule: &str| {
        json(&ok(ctl(
            &eps,
            &[
                "defrag",
                "--cluster",
                "--dry-run",
                "--defrag-rule",
                rule,
                "-w",
                "json",
            ],
        )))
    };
    let plan = quota("dbQuota == 2GiB && (dbQuotaUsage > 0 || dbSizeFree > 200*1024*1024)");
    assert!(
        plan.as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"] == "planned"),
        "{plan}"
    );
    let plan = quota("dbQuotaUsage > 0.8");
    assert!(
        plan.as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"] == "skipped"
                && r["reason"].as_str().unwrap().contains("quota 2147483648")),
        "{plan}"
    );

    // the real thing, printed as it goes; --log-level shows each step on stderr
    let o = ctl(
        &eps,
        &[
            "defrag",
            "--cluster",
            "--yes",
            "--pause",
            "100ms",
            "--log-level=info",
        ],
    );
    let log = stderr(&o);
    let out = ok(o);
    assert_eq!(log.matches("defragmenting").count(), 3, "{log}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("Finished defragmenting etcd member["))
    );
    let leader_line = format!("({leader_id:x}, leader)");
    assert!(lines[2].contains(&leader_line), "leader not last: {out}");
    assert!(
        !lines[0].contains("leader") && !lines[1].contains("leader"),
        "{out}"
    );

    let err = fails(ctl(
        &eps,
        &["defrag", "--yes", "--defrag-rule", "dbsize > 1"],
    ));
    assert!(err.contains("unknown quantity \"dbsize\""), "{err}");
    let err = fails(ctl(
        &eps,
        &["defrag", "--yes", "--defrag-rule", "dbSize >> 1"],
    ));
    assert!(err.contains("column 9: expected a number"), "{err}");
}

#[test]
fn membership_leadership_and_compaction_on_a_dedicated_cluster() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let c = EtcdCluster::start_blocking(ClusterOptions::new(1)).expect("cluster");
    let first = c.endpoints()[0].clone();

    // compaction: refuse, compact, then the old revision is a clear error
    ok(ctl(&first, &["put", "cmp/k", "1"]));
    let old = revision(&first);
    ok(ctl(&first, &["put", "cmp/k", "2"]));
    let now = revision(&first).to_string();
    fails(ctl(&first, &["compaction", &now]));
    assert_eq!(
        ok(ctl(&first, &["compaction", &now, "--physical", "--yes"])),
        format!("compacted revision {now}\n")
    );
    let err = fails(ctl(&first, &["get", "cmp/k", "--rev", &old.to_string()]));
    assert!(err.contains("compacted"), "{err}");
    assert!(err.contains(&format!("at revision {old}")), "{err}");
    let err = fails(ctl(&first, &["compaction", &now, "--yes"]));
    assert!(err.contains("compacted"), "{err}");
    let err = fails(ctl(&first, &["watch", "cmp/k", "--rev", &old.to_string()]));
    assert!(err.contains("was compacted"), "{err}");
    let err = fails(ctl(&first, &["compaction", "0", "--yes"]));
    assert!(err.contains("bad revision 0"), "{err}");

    // a learner joins; `member list` shows it; promote it
    let learner = rt.block_on(c.add_member(true)).expect("add learner");
    let eps = c.endpoints().join(",");
    let new_id = format!("{:x}", c.members()[learner].id);
    // A learner serves no KV or cluster RPC: the error says so.
    let err = fails(ctl(&c.endpoints()[learner], &["member", "list"]));
    assert!(err.contains("learner"), "{err}");
    let list = ok(ctl(&first, &["member", "list"]));
    let line = list
        .lines()
        .find(|l| l.starts_with(&format!("{new_id}, started, m1, ")))
        .unwrap_or_else(|| panic!("no learner in {list}"));
    assert!(line.ends_with(", true"), "not a learner: {line}");
    let mut promoted = None;
    for _ in 0..50 {
        let o = ctl(&first, &["member", "promote", &new_id]);
        if o.status.success() {
            promoted = Some(stdout(&o));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let promoted = promoted.expect("learner never promoted");
    assert!(promoted.starts_with(&format!("Member {new_id} promoted in cluster ")));

    // move leadership to it
    let out = ok(ctl(&eps, &["move-leader", &new_id]));
    assert!(out.ends_with(&format!(" to {new_id}\n")), "{out}");
    assert_eq!(
        rt.block_on(c.leader_index()).expect("leader"),
        Some(learner)
    );

    // defrag --move-leader: the follower first, then leadership moves to
    // it and the old leader is defragmented last
    let old_id = c.members()[0].id;
    let reports = json(&ok(ctl(
        &eps,
        &[
            "defrag",
            "--cluster",
            "--yes",
            "--move-leader",
            "--pause",
            "0s",
            "-w",
            "json",
        ],
    )));
    let reports = reports.as_array().expect("array");
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(reports[0]["id"].as_u64(), Some(old_id));
    assert_eq!(reports[0]["was_leader"], false);
    assert_eq!(reports[1]["id"].as_u64(), Some(c.members()[learner].id));
    assert_eq!(reports[1]["was_leader"], true);
    assert_eq!(reports[1]["moved_leadership_to"].as_u64(), Some(old_id));
    assert!(reports.iter().all(|r| r["outcome"] == "defragmented"));
    assert_eq!(rt.block_on(c.leader_index()).expect("leader"), Some(0));

    // update the new member's peer URLs (to the same URL), then remove it
    let peer = c.members()[learner].peer_url.clone();
    let out = ok(ctl(
        &eps,
        &["member", "update", &new_id, "--peer-urls", &peer],
    ));
    assert!(out.starts_with(&format!("Member {new_id} updated in cluster ")));
    // etcd refuses ("unhealthy cluster") until the new member has been
    // connected for 5 s: the error says so, and a retry succeeds.
    let mut removed = None;
    for _ in 0..60 {
        let o = ctl(&first, &["member", "remove", &new_id, "--yes"]);
        if o.status.success() {
            removed = Some(stdout(&o));
            break;
        }
        let err = stderr(&o);
        assert!(
            err.contains("unhealthy cluster") && err.contains("5 s"),
            "{err}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = removed.expect("member never removed");
    assert!(out.starts_with(&format!("Member {new_id} removed from cluster ")));
    let list = ok(ctl(&first, &["member", "list"]));
    assert_eq!(list.lines().count(), 1, "{list}");

    // member add prints the settings for the new member
    let peer = c.members()[0].peer_url.clone();
    let out = ok(ctl(
        &first,
        &[
            "member",
            "add",
            "m9",
            "--learner",
            "--peer-urls",
            "http://127.0.0.1:1",
        ],
    ));
    assert!(out.contains("ETCD_NAME=\"m9\""), "{out}");
    let initial = out
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER="))
        .unwrap_or_else(|| panic!("no ETCD_INITIAL_CLUSTER in {out}"));
    let mut parts: Vec<&str> = initial.trim_matches('"').split(',').collect();
    parts.sort();
    assert_eq!(
        parts,
        [format!("m0={peer}"), "m9=http://127.0.0.1:1".into()]
    );
}

#[test]
fn nospace_recovery_and_defrag_refusal_on_a_dedicated_cluster() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let c = EtcdCluster::start_blocking(ClusterOptions::new(3).quota_backend_bytes(2 << 20))
        .expect("cluster");
    let eps = c.endpoints().join(",");

    // fill the 2 MiB quota until etcd raises NOSPACE
    rt.block_on(async {
        let mut client = c.client().await.expect("client");
        let value = vec![b'x'; 100_000];
        for i in 0..200 {
            if let Err(e) = client.put(format!("fill/{i}"), value.clone(), None).await {
                assert!(e.to_string().contains("database space exceeded"), "{e}");
                return;
            }
        }
        panic!("the quota was never reached");
    });
    let alarms = ok(ctl(&eps, &["alarm", "list"]));
    assert!(alarms.contains("alarm:NOSPACE"), "{alarms}");
    let o = ctl(&eps, &["endpoint", "health"]);
    assert!(stdout(&o).contains("NOSPACE"), "{}", stdout(&o));
    fails(o);
    let err = fails(ctl(&eps, &["put", "k", "v"]));
    assert!(err.contains("database space exceeded"), "{err}");

    // the cure: delete, compact, defragment (allowed under NOSPACE), disarm
    ok(ctl(&eps, &["del", "fill/", "--prefix"]));
    let rev = revision(&eps).to_string();
    ok(ctl(&eps, &["compaction", &rev, "--physical", "--yes"]));
    let out = ok(ctl(
        &eps,
        &["defrag", "--cluster", "--yes", "--pause", "0s"],
    ));
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("Finished defragmenting"))
            .count(),
        3,
        "{out}"
    );
    let disarmed = ok(ctl(&eps, &["alarm", "disarm", "--yes"]));
    assert!(disarmed.contains("alarm:NOSPACE"), "{disarmed}");
    assert_eq!(ok(ctl(&eps, &["alarm", "list"])), "");
    ok(ctl(&eps, &["put", "k", "v"]));

    // with a member down, defrag refuses and names it; nothing is touched
    let down = c.endpoints()[2].clone();
    c.kill(2).expect("kill");
    let err = fails(ctl(
        &eps,
        &[
            "defrag",
            "--cluster",
            "--yes",
            "--pause",
            "0s",
            "--command-timeout=2s",
        ],
    ));
    assert!(err.contains("defrag refused"), "{err}");
    assert!(err.contains(&down), "{err}");
}

#[test]
fn tls_and_authentication() {
    let c = EtcdCluster::start_blocking(ClusterOptions::new(1).client_cert_auth().auth("s3cret"))
        .expect("cluster");
    let tls = c.tls_files().expect("tls files");
    let ep = c.endpoints()[0].clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = dir.path().join("s.db");
    let with = |extra: &[&str], password: &str| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend([
            format!("--cacert={}", tls.ca_file.display()),
            format!("--cert={}", tls.client_cert_file.display()),
            format!("--key={}", tls.client_key_file.display()),
            format!("--user=root:{password}"),
        ]);
        v
    };
    let run = |extra: &[&str], password: &str| {
        let args = with(extra, password);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ctl(&ep, &refs)
    };
    ok(run(&["put", "tls/k", "v"], "s3cret"));
    assert_eq!(ok(run(&["get", "tls/k"], "s3cret")), "tls/k\nv\n");
    let status = ok(run(&["endpoint", "status", "--cluster"], "s3cret"));
    assert!(status.starts_with("https://"), "{status}");
    assert!(ok(run(&["endpoint", "health"], "s3cret")).contains("is healthy"));
    ok(run(
        &["snapshot", "save", snapshot.to_str().expect("utf8")],
        "s3cret",
    ));
    assert!(snapshot.exists());
    let out = ok(run(
        &["defrag", "--cluster", "--yes", "--pause", "0s"],
        "s3cret",
    ));
    assert!(
        out.starts_with("Finished defragmenting etcd member[https://"),
        "{out}"
    );

    let err = fails(run(&["get", "tls/k"], "wrong"));
    assert!(
        err.contains("refused the credentials of user \"root\""),
        "{err}"
    );
    let err = fails(ctl(&ep, &["get", "tls/k"]));
    assert!(err.contains(&ep.replace("https://", "")), "{err}");
}
