//! Parsers and body decoders against arbitrary input (proptest): the
//! configuration loader, the Prometheus text parser, the ctl txn parser and
//! every API request body never panic, and answer errors that say where the
//! problem is.

use std::sync::OnceLock;
use std::time::Duration;

use etcd_monitor::metrics::prom::{Scrape, quantile_from_buckets};
use proptest::prelude::*;
use tower::ServiceExt;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text made of the pieces these formats are made of, plus anything.
fn texty() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("etcd_disk_wal_fsync_duration_seconds_bucket".to_string()),
        Just("{le=\"0.5\"}".to_string()),
        Just("{a=\"\\\"\",b=\"x\"".to_string()),
        Just(" 1.5e3".to_string()),
        Just(" +Inf".to_string()),
        Just(" NaN".to_string()),
        Just("\n".to_string()),
        Just("# TYPE x histogram\n".to_string()),
        Just("clusters:".to_string()),
        Just("\n  - name: ".to_string()),
        Just(": [".to_string()),
        Just("value(\"k\") = \"v\"".to_string()),
        Just("put k v".to_string()),
        Just("€".to_string()),
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn the_prometheus_parser_takes_anything(text in texty()) {
        let (scrape, bad) = Scrape::parse(&text);
        prop_assert!(scrape.samples.len() + bad <= text.lines().count());
        let _ = scrape.histogram_quantile("etcd_disk_wal_fsync_duration_seconds", 0.99);
        let _ = scrape.value("etcd_server_has_leader");
    }

    #[test]
    fn bucket_quantiles_take_any_buckets(buckets in prop::collection::vec((any::<f64>(), any::<f64>()), 0..20), q in any::<f64>()) {
        if let Some(v) = quantile_from_buckets(&buckets, q) {
            prop_assert!(!v.is_nan() || buckets.iter().any(|(a, b)| a.is_nan() || b.is_nan()));
        }
    }

    #[test]
    fn the_txn_parser_names_the_line(text in texty()) {
        if let Err(e) = etcd_monitor::ops::txn::parse(&text) {
            prop_assert!(e.starts_with("txn line "), "{}", e);
        }
        let _ = etcd_monitor::ops::txn::split_words(&text);
    }

    #[test]
    fn the_config_loader_names_file_and_key(text in texty()) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, &text).unwrap();
        if let Err(errors) = etcd_monitor::run::load_config(Some(&file), &etcd_monitor::config::Overrides::new()) {
            prop_assert!(!errors.0.is_empty());
            for e in &errors.0 {
                prop_assert!(!e.message.is_empty());
                prop_assert!(e.to_string().contains("c.yaml"), "{}", e);
            }
        }
    }
}

/// An API with a monitor of a cluster that does not answer (nothing
/// listens on its endpoint): bodies that pass validation reach "no member
/// answers" (503), everything else a 4xx, never a 500 or a panic.
fn api() -> &'static (tokio::runtime::Runtime, axum::Router) {
    static API: OnceLock<(tokio::runtime::Runtime, axum::Router)> = OnceLock::new();
    API.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let router = rt.block_on(async {
            let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
            let mut config = etcd_monitor::config::Config::default();
            config.clusters[0].name = "c".into();
            config.clusters[0].endpoints = vec!["http://127.0.0.1:9".into()];
            config.clusters[0].dial_timeout = Duration::from_millis(200);
            config.storage.url = format!("sqlite://{}", dir.path().join("h.db").display());
            config.api.snapshot_dir = dir.path().join("snap");
            let lifecycle = etcd_monitor::lifecycle::Lifecycle::new();
            let daemon = etcd_monitor::run::start(&config, &lifecycle).await.unwrap();
            let state = etcd_monitor::run::app_state(&config, &daemon, &lifecycle);
            etcd_monitor::api::app(state).await.unwrap().0
        });
        (rt, router)
    })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        "[a-z_]{0,12}".prop_map(serde_json::Value::from),
        Just(serde_json::json!("c")),
        Just(serde_json::json!("put")),
        Just(serde_json::json!("8GB")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let keys = prop_oneof![
            Just("workload".to_string()),
            Just("clients".to_string()),
            Just("val_size".to_string()),
            Just("rate".to_string()),
            Just("total".to_string()),
            Just("cluster".to_string()),
            Just("confirm".to_string()),
            Just("dry_run".to_string()),
            Just("revision".to_string()),
            Just("matchers".to_string()),
            Just("ends_at_ms".to_string()),
            Just("group_key".to_string()),
            Just("target".to_string()),
            Just("pause".to_string()),
            Just("rule".to_string()),
            Just("name".to_string()),
            "[a-z]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

const POSTS: [&str; 8] = [
    "/api/v1/benchmarks",
    "/api/v1/silences",
    "/api/v1/alerts/ack",
    "/api/v1/clusters/c/maintenance/defrag",
    "/api/v1/clusters/c/maintenance/compact",
    "/api/v1/clusters/c/maintenance/snapshot",
    "/api/v1/clusters/c/maintenance/alarm-disarm",
    "/api/v1/clusters/c/maintenance/move-leader",
];

fn answer(path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let (rt, router) = api();
    rt.block_on(async {
        let req = axum::http::Request::post(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    })
}

proptest! {
    #![proptest_config(cases(96))]

    #[test]
    fn every_body_gets_a_named_answer(route in 0..POSTS.len(), body in json_value()) {
        let path = POSTS[route];
        let (status, answer) = answer(path, serde_json::to_vec(&body).unwrap());
        prop_assert!(status < 500 || status == 503, "{path} {body}: {status} {answer}");
        if status >= 400 {
            let message = answer["error"]["message"].as_str().unwrap_or("");
            prop_assert!(!message.is_empty(), "{path} {body}: {answer}");
        }
    }

    #[test]
    fn every_byte_string_gets_a_named_answer(route in 0..POSTS.len(), body in prop::collection::vec(any::<u8>(), 0..64)) {
        let path = POSTS[route];
        let (status, answer) = answer(path, body.clone());
        prop_assert!(status < 500 || status == 503, "{path} {body:?}: {status} {answer}");
        if status >= 400 {
            prop_assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
        }
    }
}
