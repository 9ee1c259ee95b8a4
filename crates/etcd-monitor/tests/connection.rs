//! Connection settings against real etcd clusters.

use std::time::{Duration, Instant};

use etcd_monitor::config::{ClusterConfig, TlsConfig};
use etcd_monitor::connection::{self, ConnectError};
use etcd_testkit::{ClusterOptions, EtcdCluster};

fn settings(endpoints: Vec<String>) -> ClusterConfig {
    ClusterConfig {
        name: "test".into(),
        endpoints,
        dial_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        ..ClusterConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoint_reachable_names_each_endpoint_and_cause() {
    // Ports nobody listens on (reserved by binding, then released).
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let eps = vec![
        format!("127.0.0.1:{}", a.local_addr().unwrap().port()),
        format!("http://127.0.0.1:{}", b.local_addr().unwrap().port()),
    ];
    drop((a, b));
    let started = Instant::now();
    let Err(err) = connection::connect(&settings(eps.clone())).await else {
        panic!("connected to nothing")
    };
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(
        matches!(err, ConnectError::NoEndpointReachable { .. }),
        "{text}"
    );
    assert!(
        text.contains("cluster test: no etcd endpoint reachable"),
        "{text}"
    );
    for ep in &eps {
        let url = if ep.starts_with("http") {
            ep.clone()
        } else {
            format!("http://{ep}")
        };
        assert!(text.contains(&url), "{url} not named in {text}");
    }
    assert!(
        text.to_lowercase().contains("refused"),
        "no cause in {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_with_one_member_down_and_talks_to_the_rest() {
    let cluster = EtcdCluster::start(ClusterOptions::new(3)).await.unwrap();
    cluster.kill(0).unwrap();
    let mut client = connection::connect(&settings(cluster.endpoints()))
        .await
        .unwrap();
    // The balanced client may try the dead endpoint first, and when the
    // killed member led, the other two elect a leader first (a CI run under
    // load saw 20 tries of 100 ms pass before that): retry for 15 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    let mut ok = false;
    while std::time::Instant::now() < deadline {
        match client.put("conn/k", "v", None).await {
            Ok(_) => {
                ok = true;
                break;
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ok,
        "no write succeeded with 2 of 3 members up within 15 s: {last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_auth_settings_from_files() {
    let cluster = EtcdCluster::start(
        ClusterOptions::new(1)
            .client_cert_auth()
            .auth("pw-from-file"),
    )
    .await
    .unwrap();
    let files = cluster.tls_files().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "pw-from-file\n").unwrap();

    let mut good = settings(cluster.endpoints());
    good.tls = Some(TlsConfig {
        ca_file: Some(files.ca_file.clone()),
        cert_file: Some(files.client_cert_file.clone()),
        key_file: Some(files.client_key_file.clone()),
        server_name: None,
    });
    good.username = Some("root".into());
    good.password_file = Some(password_file);
    let mut client = connection::connect(&good).await.unwrap();
    client.put("tls/k", "v", None).await.unwrap();

    // Bare host:port becomes https:// when TLS is configured.
    let mut bare = good.clone();
    bare.endpoints = vec![cluster.endpoint(0).unwrap().replace("https://", "")];
    connection::connect(&bare).await.unwrap();

    // An IP endpoint verified against a name the certificate carries, or not.
    let mut named = good.clone();
    if let Some(tls) = named.tls.as_mut() {
        tls.server_name = Some("localhost".into());
    }
    connection::connect(&named).await.unwrap();
    let mut misnamed = good.clone();
    if let Some(tls) = misnamed.tls.as_mut() {
        tls.server_name = Some("etcd.elsewhere.test".into());
    }
    let Err(err) = connection::connect(&misnamed).await else {
        panic!("a certificate for another name was accepted")
    };
    assert!(
        matches!(err, ConnectError::NoEndpointReachable { .. }),
        "{err}"
    );

    let mut wrong = good.clone();
    wrong.password_file = None;
    wrong.password = Some("nope".into());
    let Err(err) = connection::connect(&wrong).await else {
        panic!("wrong password accepted")
    };
    assert!(matches!(err, ConnectError::Auth { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("refused the credentials of user \"root\""),
        "{err}"
    );

    let mut no_cert = good.clone();
    if let Some(tls) = no_cert.tls.as_mut() {
        tls.cert_file = None;
        tls.key_file = None;
    }
    let Err(err) = connection::connect(&no_cert).await else {
        panic!("served without a client certificate")
    };
    assert!(
        matches!(err, ConnectError::NoEndpointReachable { .. }),
        "{err}"
    );

    let mut missing = good.clone();
    if let Some(tls) = missing.tls.as_mut() {
        tls.ca_file = Some("/no/ca.pem".into());
    }
    let Err(err) = connection::connect(&missing).await else {
        panic!("missing CA file accepted")
    };
    assert!(
        err.to_string()
            .contains("cannot read tls.ca_file /no/ca.pem"),
        "{err}"
    );
}
