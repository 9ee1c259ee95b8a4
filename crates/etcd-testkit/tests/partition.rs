//! A member cut off from its peers by iptables keeps answering clients from
//! stale state but cannot serve linearizable reads, catches up once healed,
//! and the rules never outlive the guard, not even when an insertion fails.
//! Needs root and iptables; every wait is bounded.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, WatchOptions};
use etcd_testkit::{ClusterOptions, EtcdCluster};

/// What the member's view of raft is: (leader, term, errors).
async fn status(client: &Client) -> Option<(u64, u64, Vec<String>)> {
    let s = tokio::time::timeout(Duration::from_secs(2), client.maintenance_client().status())
        .await
        .ok()?
        .ok()?;
    Some((s.leader(), s.raft_term(), s.errors().to_vec()))
}

/// `iptables -S OUTPUT` lines that mention one of the cluster's peer ports.
fn rules_for(cluster: &EtcdCluster) -> Vec<String> {
    let out = std::process::Command::new("iptables")
        .args(["-w", "-S", "OUTPUT"])
        .output()
        .expect("iptables -S OUTPUT");
    assert!(out.status.success(), "iptables -S OUTPUT failed");
    let ports: Vec<String> = cluster
        .members()
        .iter()
        .map(|m| m.peer_url.rsplit(':').next().unwrap().to_string())
        .collect();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| ports.iter().any(|p| l.contains(&format!("--dport {p} "))))
        .map(String::from)
        .collect()
}

/// An iptables that fails the second nobody rule while `<dir>/fail` exists.
fn flaky_iptables(dir: &Path) -> PathBuf {
    let script = dir.join("iptables");
    let d = dir.display();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             if [ -e {d}/fail ]; then\n\
             \x20 case \"$*\" in *\"-I OUTPUT\"*\"--uid-owner 65534\"*)\n\
             \x20   if [ -e {d}/seen ]; then echo 'injected failure' >&2; exit 3; fi\n\
             \x20   touch {d}/seen;;\n\
             \x20 esac\n\
             fi\n\
             exec iptables \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_member_loses_its_peers_and_catches_up_after_healing() {
    let scripts = tempfile::tempdir().unwrap();
    let iptables = flaky_iptables(scripts.path());
    let cluster = EtcdCluster::start(ClusterOptions::new(3).isolatable(2).iptables_bin(&iptables))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(90), scenario(&cluster, scripts.path()))
        .await
        .expect("the scenario took more than 90 s");
    assert!(
        rules_for(&cluster).is_empty(),
        "rules left behind: {:?}",
        rules_for(&cluster)
    );
}

async fn scenario(cluster: &EtcdCluster, scripts: &Path) {
    let t0 = Instant::now();
    // The member runs as nobody, on files nobody owns.
    let m2 = cluster.member(2).unwrap();
    let uid = std::fs::read_to_string(format!("/proc/{}/status", m2.pid.unwrap()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(uid.contains("65534"), "member 2 is not nobody: {uid}");

    let err = cluster.partition(0).unwrap_err().to_string();
    assert!(
        err.contains("ClusterOptions::isolatable(0)"),
        "the error names the option: {err}"
    );

    // A failing insertion reports the command and its stderr and leaves no rule.
    std::fs::write(scripts.join("fail"), "").unwrap();
    let err = cluster.partition(2).unwrap_err().to_string();
    std::fs::remove_file(scripts.join("fail")).unwrap();
    assert!(
        err.contains("-I OUTPUT") && err.contains("injected failure"),
        "the error names the command and its stderr: {err}"
    );
    assert!(
        rules_for(cluster).is_empty(),
        "a failed partition left rules: {:?}",
        rules_for(cluster)
    );
    // A missing iptables is named too.
    let moved = scripts.join("moved");
    std::fs::rename(scripts.join("iptables"), &moved).unwrap();
    let err = cluster.partition(2).unwrap_err().to_string();
    std::fs::rename(&moved, scripts.join("iptables")).unwrap();
    assert!(
        err.contains("cannot run") && err.contains("iptables"),
        "{err}"
    );

    let isolated = cluster.member_client(2).await.unwrap();
    let majority = Client::connect(
        [cluster.endpoint(0).unwrap(), cluster.endpoint(1).unwrap()],
        Some(cluster.connect_options().unwrap()),
    )
    .await
    .unwrap();
    let healthy = cluster.member_client(0).await.unwrap();
    let leader_before = cluster.leader_index().await.unwrap();
    let rev_before = majority
        .kv_client()
        .put("partition/k", "before", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    // A watch through member 2, to see what it answers to progress requests.
    let mut watch = isolated
        .watch_client()
        .watch(
            "partition/k",
            Some(WatchOptions::new().with_start_revision(rev_before + 1)),
        )
        .await
        .unwrap();
    let created = watch.message().await.unwrap().unwrap();
    assert!(created.created());

    let cut = cluster.partition(2).unwrap();
    let cut_at = Instant::now();
    assert_eq!(rules_for(cluster).len(), 3, "one rule per peer port");

    // Within ~10 s member 2 has no leader or a term above the others'.
    let (leader, term, errors, healthy_term) = loop {
        let (_, healthy_term, _) = status(&healthy).await.unwrap();
        if let Some((leader, term, errors)) = status(&isolated).await {
            if leader == 0 || term > healthy_term {
                break (leader, term, errors, healthy_term);
            }
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(10),
            "member 2 never noticed the partition"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "leader before: member {leader_before:?}; after {:?} member 2 answers Status: \
         leader {leader:x}, term {term} (others: {healthy_term}), errors {errors:?}",
        cut_at.elapsed()
    );

    // The majority still writes (a retry covers its own election when
    // member 2 led).
    let put_rev = loop {
        match tokio::time::timeout(
            Duration::from_secs(3),
            majority
                .kv_client()
                .put("partition/k", "written-while-cut", None),
        )
        .await
        {
            Ok(Ok(r)) => break r.header().unwrap().revision(),
            other => eprintln!("put through members 0/1 retried: {other:?}"),
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(15),
            "members 0 and 1 did not accept the write"
        );
    };
    // A linearizable read through member 2 fails (error or timeout).
    let started = Instant::now();
    let read = tokio::time::timeout(
        Duration::from_secs(3),
        isolated.kv_client().get("partition/k", None),
    )
    .await;
    eprintln!(
        "linearizable get through member 2 after {:?}: {}",
        started.elapsed(),
        match &read {
            Err(_) => "timed out".to_string(),
            Ok(Err(e)) => format!("error {e}"),
            Ok(Ok(r)) => format!("answered {:?}", r.kvs().first().map(|kv| kv.value_str())),
        }
    );
    assert!(
        !matches!(read, Ok(Ok(_))),
        "a linearizable read through the isolated member succeeded"
    );
    // A serializable read answers from its stale state.
    let stale = isolated
        .kv_client()
        .get("partition/k", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(
        stale.kvs().first().map(|kv| kv.value().to_vec()),
        Some(b"before".to_vec()),
        "the isolated member did not see the write"
    );
    // What member 2 answers to a watch progress request.
    watch.request_progress().await.unwrap();
    match tokio::time::timeout(Duration::from_secs(3), watch.message()).await {
        Ok(Ok(Some(r))) => {
            let rev = r.header().map(|h| h.revision()).unwrap_or(0);
            eprintln!(
                "watch progress through member 2: header revision {rev} (write at {put_rev}), \
                 {} events, canceled {}",
                r.events().len(),
                r.canceled()
            );
            assert!(
                r.events().is_empty() && rev < put_rev,
                "member 2 cannot know the write"
            );
        }
        other => eprintln!("watch progress through member 2: {other:?}"),
    }

    eprintln!(
        "member 2 after {:?} of partition: Status {:?}; members 0/1: {:?}",
        cut_at.elapsed(),
        status(&isolated).await,
        status(&healthy).await
    );
    let log = cluster.log_tail(2, 200).unwrap();
    let campaigns = log
        .lines()
        .filter(|l| l.contains("became candidate"))
        .count();
    let last = log.lines().rev().find(|l| l.contains("became candidate"));
    eprintln!("member 2 log: {campaigns} campaigns, the last: {last:?}");
    let healed_at = Instant::now();
    cut.heal().unwrap();
    assert!(
        rules_for(cluster).is_empty(),
        "healing left rules: {:?}",
        rules_for(cluster)
    );
    // Member 2 catches up and serves the write, linearizably, within ~10 s.
    loop {
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            isolated.kv_client().get("partition/k", None),
        )
        .await;
        if let Ok(Ok(r)) = r {
            if r.kvs().first().map(|kv| kv.value()) == Some(b"written-while-cut") {
                break;
            }
        }
        assert!(
            healed_at.elapsed() < Duration::from_secs(10),
            "member 2 did not serve the write within 10 s of healing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "member 2 served the write {:?} after healing; Status of member 2: {:?}, of member 0: {:?}",
        healed_at.elapsed(),
        status(&isolated).await,
        status(&healthy).await
    );
    if let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_secs(3), watch.message()).await {
        eprintln!(
            "after healing the watch through member 2 got {} events at revision {}",
            r.events().len(),
            r.header().map(|h| h.revision()).unwrap_or(0)
        );
    }

    // A dropped guard removes its rules too.
    {
        let _cut = cluster.partition(2).unwrap();
        assert_eq!(rules_for(cluster).len(), 3);
    }
    assert!(
        rules_for(cluster).is_empty(),
        "dropping the guard left rules: {:?}",
        rules_for(cluster)
    );

    // The isolatable member still restarts as nobody.
    cluster.kill(2).unwrap();
    cluster.restart(2).await.unwrap();
    eprintln!("scenario took {:?}", t0.elapsed());
}
