//! The OpenAPI 3 document of the API, served at `/api/v1/openapi.json`.
//! Tests check real answers against these schemas, so they must match what
//! the handlers return.

use axum::Json;
use serde_json::{Value, json};

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> Json<Value> {
    Json(document())
}

fn nullable(v: Value) -> Value {
    let mut v = v;
    if let Some(o) = v.as_object_mut() {
        o.insert("nullable".into(), Value::Bool(true));
    }
    v
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": props })
}

fn schemas() -> Value {
    let s = |t: &str| json!({ "type": t });
    let member_status = obj(
        &[
            "member_id",
            "version",
            "db_size",
            "db_size_in_use",
            "leader",
            "raft_term",
            "raft_index",
            "raft_applied_index",
            "errors",
            "is_learner",
            "revision",
        ],
        json!({
            "member_id": s("string"), "version": s("string"), "db_size": s("integer"), "db_size_in_use": s("integer"),
            "leader": s("string"), "raft_term": s("integer"), "raft_index": s("integer"), "raft_applied_index": s("integer"),
            "errors": { "type": "array", "items": s("string") }, "is_learner": s("boolean"), "revision": s("integer"),
        }),
    );
    let member_observation = obj(
        &[
            "id",
            "name",
            "peer_urls",
            "client_urls",
            "is_learner",
            "endpoint",
            "status",
            "error",
        ],
        json!({
            "id": s("string"), "name": s("string"),
            "peer_urls": { "type": "array", "items": s("string") },
            "client_urls": { "type": "array", "items": s("string") },
            "is_learner": s("boolean"), "endpoint": s("string"),
            "status": nullable(member_status),
            "error": nullable(s("string")),
            "status_latency_ms": nullable(s("number")),
            "linearizable_read_ms": nullable(s("number")),
            "linearizable_read_error": nullable(s("string")),
            "metrics": nullable(s("object")),
        }),
    );
    let finding = obj(
        &["kind", "severity", "message", "evidence"],
        json!({
            "kind": s("string"),
            "severity": { "type": "string", "enum": ["info", "warning", "critical"] },
            "member": s("string"),
            "message": s("string"),
            "evidence": {},
        }),
    );
    let verdict = json!({ "type": "string", "enum": ["healthy", "degraded", "unavailable"] });
    let latency = obj(
        &["count", "errors", "histogram", "errors_total"],
        json!({
            "count": s("integer"), "errors": s("integer"),
            "p50_ms": nullable(s("number")), "p90_ms": nullable(s("number")), "p99_ms": nullable(s("number")), "max_ms": nullable(s("number")),
            "last_error": nullable(s("string")),
            "histogram": obj(&["bounds_ms", "cumulative_counts", "count", "sum_ms"], json!({
                "bounds_ms": { "type": "array", "items": s("number") },
                "cumulative_counts": { "type": "array", "items": s("integer") },
                "count": s("integer"), "sum_ms": s("number"),
            })),
            "errors_total": s("integer"),
        }),
    );
    let probes = obj(
        &["linearizable_get", "put", "serializable_get"],
        json!({ "linearizable_get": {"$ref": "#/components/schemas/Latency"}, "put": {"$ref": "#/components/schemas/Latency"}, "serializable_get": {"$ref": "#/components/schemas/Latency"} }),
    );
    let run = obj(
        &[
            "id",
            "cluster",
            "source",
            "workload",
            "state",
            "started_at_ms",
            "succeeded",
            "failed",
            "spec",
        ],
        json!({
            "id": s("string"), "cluster": s("string"), "source": s("string"), "workload": s("string"),
            "state": { "type": "string", "enum": ["running", "succeeded", "failed"] },
            "started_at_ms": s("integer"), "finished_at_ms": nullable(s("integer")),
            "succeeded": s("integer"), "failed": s("integer"),
            "throughput": nullable(s("number")), "p99_ms": nullable(s("number")),
            "slo": { "type": "array", "items": s("string") }, "slo_met": nullable(s("boolean")),
            "error": nullable(s("string")), "spec": s("object"), "report": nullable(s("object")),
        }),
    );
    let alert = obj(
        &[
            "fingerprint",
            "group_key",
            "alertname",
            "cluster",
            "severity",
            "state",
            "summary",
            "value",
            "labels",
            "active_since_ms",
        ],
        json!({
            "fingerprint": s("string"), "group_key": s("string"), "alertname": s("string"), "cluster": s("string"),
            "member": nullable(s("string")), "severity": s("string"),
            "state": { "type": "string", "enum": ["pending", "firing", "resolved"] },
            "summary": s("string"), "value": s("number"), "labels": s("object"),
            "active_since_ms": s("integer"), "starts_at_ms": nullable(s("integer")), "ends_at_ms": nullable(s("integer")),
            "suppressed": nullable(s("string")),
        }),
    );
    let silence = obj(
        &[
            "id",
            "matchers",
            "starts_at_ms",
            "ends_at_ms",
            "comment",
            "created_by",
            "source",
        ],
        json!({
            "id": s("string"), "matchers": { "type": "array", "items": s("object") },
            "starts_at_ms": s("integer"), "ends_at_ms": s("integer"), "comment": s("string"), "created_by": s("string"), "source": s("string"),
        }),
    );
    json!({
        "ActiveAlerts": obj(&["alerts", "groups"], json!({ "alerts": { "type": "array", "items": alert.clone() }, "groups": { "type": "array", "items": s("object") } })),
        "AlertHistory": obj(&["from_ms", "to_ms", "alerts"], json!({ "from_ms": s("integer"), "to_ms": s("integer"), "alerts": { "type": "array", "items": alert } })),
        "Silence": silence.clone(),
        "NewSilence": obj(&["matchers", "ends_at_ms"], json!({
            "matchers": { "type": "array", "items": s("string") }, "starts_at_ms": s("integer"), "ends_at_ms": s("integer"),
            "comment": s("string"), "created_by": s("string"),
        })),
        "SilenceList": obj(&["silences"], json!({ "silences": { "type": "array", "items": silence } })),
        "Acked": obj(&["group_key", "acked_at_ms", "acked_by"], json!({ "group_key": s("string"), "acked_at_ms": s("integer"), "acked_by": s("string") })),
        "Deleted": obj(&["deleted"], json!({ "deleted": s("string") })),
        "BenchmarkRun": run.clone(),
        "BenchmarkList": obj(&["benchmarks"], json!({ "benchmarks": { "type": "array", "items": run } })),
        "BenchmarkCancelled": obj(&["id", "state", "cancelled_by"], json!({ "id": s("string"), "state": s("string"), "cancelled_by": s("string"), "succeeded": s("integer") })),
        "BenchmarkStarted": obj(&["id", "state", "cluster", "workload"], json!({ "id": s("string"), "state": s("string"), "cluster": s("string"), "workload": s("string") })),
        "DefragResult": obj(&["cluster", "members"], json!({ "cluster": s("string"), "dry_run": s("boolean"), "members": { "type": "array", "items": obj(&["id", "name", "endpoint", "was_leader", "outcome"], json!({
            "id": s("integer"), "name": s("string"), "endpoint": s("string"), "was_leader": s("boolean"), "outcome": s("string"),
        })) } })),
        "CompactResult": obj(&["cluster", "revision", "physical", "current_revision", "dry_run"], json!({ "cluster": s("string"), "revision": s("integer"), "physical": s("boolean"), "current_revision": s("integer"), "dry_run": s("boolean") })),
        "SnapshotResult": obj(&["cluster", "path", "dry_run"], json!({ "cluster": s("string"), "path": s("string"), "size": s("integer"), "sha256": s("string"), "took_ms": s("integer"), "dry_run": s("boolean"), "removed": { "type": "array", "items": s("string") } })),
        "AlarmDisarmResult": obj(&["cluster", "disarmed", "dry_run"], json!({ "cluster": s("string"), "disarmed": { "type": "array", "items": obj(&["member_id", "alarm"], json!({ "member_id": s("string"), "alarm": s("string") })) }, "would_disarm": { "type": "array", "items": obj(&["member_id", "alarm"], json!({ "member_id": s("string"), "alarm": s("string") })) }, "needs_force": s("boolean"), "dry_run": s("boolean") })),
        "MoveLeaderResult": obj(&["cluster", "from", "to", "dry_run"], json!({ "cluster": s("string"), "from": s("string"), "to": s("string"), "dry_run": s("boolean") })),
        "Error": obj(&["error"], json!({ "error": obj(&["code", "message"], json!({ "code": s("string"), "message": s("string") })) })),
        "Health": obj(&["status", "version", "uptime_seconds"], json!({ "status": s("string"), "version": s("string"), "uptime_seconds": s("integer") })),
        "Ready": obj(&["ready", "pending"], json!({ "ready": s("boolean"), "pending": { "type": "array", "items": s("string") }, "store": s("string") })),
        "ClusterList": obj(&["clusters"], json!({ "clusters": { "type": "array", "items": obj(
            &["name", "endpoints", "verdict", "leader", "members", "voting_members", "reachable_voting_members", "findings", "checked_at_ms"],
            json!({
                "name": s("string"), "endpoints": { "type": "array", "items": s("string") },
                "verdict": nullable(verdict.clone()), "leader": nullable(s("string")),
                "members": s("integer"), "voting_members": s("integer"), "reachable_voting_members": s("integer"),
                "findings": s("integer"), "checked_at_ms": nullable(s("integer")),
            }),
        ) } })),
        "HealthSnapshot": obj(
            &["cluster", "verdict", "voting_members", "reachable_voting_members", "quorum", "leader", "findings", "observation"],
            json!({
                "cluster": s("string"), "verdict": verdict,
                "voting_members": s("integer"), "reachable_voting_members": s("integer"), "quorum": s("integer"),
                "leader": nullable(s("string")),
                "findings": { "type": "array", "items": finding },
                "observation": obj(&["cluster", "taken_at", "members", "alarms", "duration_ms"], json!({
                    "cluster": s("string"), "taken_at": s("integer"),
                    "members": { "type": "array", "items": member_observation },
                    "member_list_error": nullable(s("string")),
                    "alarms": { "type": "array", "items": obj(&["member_id", "kind"], json!({ "member_id": s("string"), "kind": s("string") })) },
                    "hashkv": nullable(s("object")),
                    "duration_ms": s("number"),
                })),
            }),
        ),
        "Members": obj(&["cluster", "checked_at_ms", "members"], json!({
            "cluster": s("string"), "checked_at_ms": s("integer"),
            "members": { "type": "array", "items": obj(
                &["id", "name", "endpoint", "is_learner", "reachable", "is_leader"],
                json!({
                    "id": s("string"), "name": s("string"), "endpoint": s("string"),
                    "client_urls": { "type": "array", "items": s("string") }, "peer_urls": { "type": "array", "items": s("string") },
                    "is_learner": s("boolean"), "reachable": s("boolean"), "is_leader": s("boolean"),
                    "error": nullable(s("string")), "version": nullable(s("string")),
                    "db_size": nullable(s("integer")), "db_size_in_use": nullable(s("integer")), "quota_backend_bytes": nullable(s("number")),
                    "raft_term": nullable(s("integer")), "raft_index": nullable(s("integer")), "raft_applied_index": nullable(s("integer")),
                    "status_latency_ms": nullable(s("number")), "linearizable_read_ms": nullable(s("number")),
                    "wal_fsync_p99_seconds": nullable(s("number")), "backend_commit_p99_seconds": nullable(s("number")),
                }),
            ) },
        })),
        "Leader": obj(&["cluster", "leader", "since_ms", "changes"], json!({
            "cluster": s("string"),
            "leader": nullable(obj(&["id"], json!({ "id": s("string"), "name": nullable(s("string")), "term": nullable(s("integer")) }))),
            "since_ms": s("integer"),
            "changes": { "type": "array", "items": obj(&["cluster", "at_ms"], json!({
                "cluster": s("string"), "at_ms": s("integer"),
                "old_leader": nullable(s("string")), "new_leader": nullable(s("string")),
                "old_name": nullable(s("string")), "new_name": nullable(s("string")), "term": nullable(s("integer")),
            })) },
        })),
        "Latency": latency,
        "MetricsRound": obj(&["cluster", "at_ms", "members", "probes", "duration_ms"], json!({
            "cluster": s("string"), "at_ms": s("integer"),
            "members": { "type": "array", "items": obj(&["member", "endpoint", "metrics_url"], json!({
                "member": s("string"), "endpoint": s("string"), "metrics_url": s("string"),
                "metrics": nullable(s("object")), "error": nullable(s("string")),
            })) },
            "probes": probes.clone(),
            "revision": nullable(s("integer")), "revision_rate": nullable(s("number")), "proposals_committed_rate": nullable(s("number")),
            "duration_ms": s("number"),
        })),
        "LatencyView": obj(&["cluster", "probes", "members"], json!({
            "cluster": s("string"), "probes": nullable(probes),
            "members": { "type": "array", "items": obj(&["name", "endpoint"], json!({
                "name": s("string"), "endpoint": s("string"), "status_ms": nullable(s("number")), "linearizable_read_ms": nullable(s("number")),
            })) },
        })),
        "MetricHistory": obj(&["cluster", "metric", "from_ms", "to_ms", "step_ms", "series"], json!({
            "cluster": s("string"), "metric": s("string"), "from_ms": s("integer"), "to_ms": s("integer"), "step_ms": s("integer"),
            "series": { "type": "array", "items": obj(&["member", "points"], json!({
                "member": s("string"),
                "points": { "type": "array", "items": { "type": "array", "items": s("number") } },
            })) },
        })),
        "WhoAmI": obj(&["principal", "name", "method", "role", "clusters", "allowed"], json!({
            "principal": s("string"), "name": s("string"),
            "method": { "type": "string", "enum": ["anonymous", "token", "jwt", "client_cert"] },
            "role": { "type": "string", "enum": ["viewer", "operator", "admin"], "nullable": true },
            "clusters": { "type": "array", "items": s("string") },
            "allowed": { "type": "array", "items": s("string") },
        })),
        "AuditLog": obj(&["from_ms", "to_ms", "records"], json!({
            "from_ms": s("integer"), "to_ms": s("integer"),
            "records": { "type": "array", "items": obj(&["at_ms", "principal", "source", "method", "path", "status", "request_id"], json!({
                "at_ms": s("integer"), "principal": s("string"), "role": nullable(s("string")), "source": s("string"),
                "method": s("string"), "path": s("string"), "cluster": nullable(s("string")), "body": nullable(s("string")),
                "status": s("integer"), "request_id": s("string"),
            })) },
        })),
        "CheckHistory": obj(&["cluster", "from_ms", "to_ms", "checks", "findings"], json!({
            "cluster": s("string"), "from_ms": s("integer"), "to_ms": s("integer"),
            "checks": { "type": "array", "items": obj(&["at_ms", "verdict", "reachable", "voting", "duration_ms"], json!({
                "at_ms": s("integer"), "verdict": s("string"), "leader": nullable(s("string")),
                "reachable": s("integer"), "voting": s("integer"), "duration_ms": s("number"),
            })) },
            "findings": { "type": "array", "items": obj(&["at_ms", "kind", "severity", "message"], json!({
                "cluster": s("string"), "at_ms": s("integer"), "kind": s("string"), "severity": s("string"),
                "member": nullable(s("string")), "message": s("string"),
            })) },
        })),
    })
}

fn op(summary: &str, schema: &str, params: Value, errors: &[&str]) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert(
        "200".into(),
        json!({ "description": "OK", "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } }),
    );
    for code in errors {
        responses.insert(
            (*code).into(),
            json!({ "description": "Error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }),
        );
    }
    json!({ "get": { "summary": summary, "parameters": params, "responses": responses } })
}

fn qp(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": "string" } })
}

/// The document.
pub fn document() -> Value {
    let name =
        json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } });
    let time = "milliseconds since the epoch, `now`, or a duration ago such as `1h`";
    let mut paths = serde_json::Map::new();
    paths.insert(
        "/health".into(),
        op("The process is up", "Health", json!([]), &[]),
    );
    paths.insert(
        "/ready".into(),
        op(
            "Every cluster has been checked once (503 otherwise)",
            "Ready",
            json!([]),
            &["503"],
        ),
    );
    paths.insert(
        "/api/v1/clusters".into(),
        op(
            "Configured clusters with their latest verdict",
            "ClusterList",
            json!([]),
            &[],
        ),
    );
    let per_cluster: [(&str, &str, &str, Value); 7] = [
        (
            "status",
            "Latest health snapshot: verdict, findings with evidence, observation",
            "HealthSnapshot",
            json!([]),
        ),
        (
            "members",
            "Members with status, reachability and figures",
            "Members",
            json!([]),
        ),
        (
            "leader",
            "Current leader and leader change history",
            "Leader",
            json!([qp("since", time)]),
        ),
        (
            "metrics/current",
            "Latest metrics round: scraped member metrics, probes, rates",
            "MetricsRound",
            json!([]),
        ),
        (
            "metrics/latency",
            "Probe latency percentiles and per-member call latency",
            "LatencyView",
            json!([]),
        ),
        (
            "metrics/history",
            "Stored metric samples",
            "MetricHistory",
            json!([
                qp("metric", "a stored metric name (docs/monitoring.md)"),
                qp("from", time),
                qp("to", time),
                qp("step", "bucket width such as 60s")
            ]),
        ),
        (
            "history",
            "Stored health checks and findings",
            "CheckHistory",
            json!([qp("from", time), qp("to", time), qp("limit", "1..10000")]),
        ),
    ];
    for (suffix, summary, schema, params) in per_cluster {
        let mut named = params.as_array().cloned().unwrap_or_default();
        named.insert(0, name.clone());
        paths.insert(
            format!("/api/v1/clusters/{{name}}/{suffix}"),
            op(summary, schema, Value::Array(named), &["400", "404", "503"]),
        );
        paths.insert(
            format!("/api/v1/cluster/{suffix}"),
            op(
                &format!("{summary} (default cluster)"),
                schema,
                params,
                &["400", "404", "503"],
            ),
        );
    }
    let maintenance: [(&str, &str, &str, Value); 5] = [
        (
            "defrag",
            "Defragment members safely: health first, followers first, the leader last",
            "DefragResult",
            json!({ "rule": { "type": "string" }, "pause": { "type": "string" }, "move_leader": { "type": "boolean" }, "dry_run": { "type": "boolean" }, "endpoints": { "type": "array", "items": { "type": "string" } } }),
        ),
        (
            "compact",
            "Compact the history up to a revision (default: the current one)",
            "CompactResult",
            json!({ "revision": { "type": "integer" }, "physical": { "type": "boolean" }, "confirm": { "type": "string", "description": "the cluster's name (required unless dry_run)" }, "dry_run": { "type": "boolean" } }),
        ),
        (
            "snapshot",
            "Save a verified snapshot into api.snapshot_dir",
            "SnapshotResult",
            json!({ "name": { "type": "string" }, "dry_run": { "type": "boolean" } }),
        ),
        (
            "alarm-disarm",
            "Disarm every active alarm (CORRUPT only with force)",
            "AlarmDisarmResult",
            json!({ "confirm": { "type": "string", "description": "the cluster's name (required unless dry_run)" }, "force": { "type": "boolean" }, "dry_run": { "type": "boolean" } }),
        ),
        (
            "move-leader",
            "Transfer leadership to a member",
            "MoveLeaderResult",
            json!({ "target": { "type": "string" }, "confirm": { "type": "string", "description": "the cluster's name (required unless dry_run)" }, "dry_run": { "type": "boolean" } }),
        ),
    ];
    for (op_name, summary, schema, props) in maintenance {
        let post = |params: Value| {
            json!({ "post": {
                "summary": summary,
                "parameters": params,
                "requestBody": { "required": false, "content": { "application/json": { "schema": { "type": "object", "properties": props } } } },
                "responses": {
                    "200": { "description": "OK", "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } },
                    "400": { "description": "Malformed body", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                    "404": { "description": "Unknown cluster", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                    "409": { "description": "Unsafe right now, another maintenance operation runs on the cluster, or CORRUPT without force; nothing changed", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                    "422": { "description": "Invalid arguments", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                    "502": { "description": "etcd answered with an error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                    "503": { "description": "No member answers", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                }
            } })
        };
        paths.insert(
            format!("/api/v1/clusters/{{name}}/maintenance/{op_name}"),
            post(json!([name.clone()])),
        );
        paths.insert(
            format!("/api/v1/cluster/maintenance/{op_name}"),
            post(json!([])),
        );
    }
    let err = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    let mut bench = op(
        "Benchmark runs, newest first",
        "BenchmarkList",
        json!([qp("limit", "1..500")]),
        &["400"],
    );
    bench["post"] = json!({
        "summary": "Start a benchmark run asynchronously: body {cluster?, slo?, workload, total|duration, clients, ...} as `etcd-monitor bench` flags",
        "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object" } } } },
        "responses": {
            "202": { "description": "Started", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/BenchmarkStarted" } } } },
            "400": err("Malformed body"), "404": err("Unknown cluster"), "409": err("A run is going on that cluster"), "422": err("Invalid spec"),
        }
    });
    paths.insert("/api/v1/benchmarks".into(), bench);
    paths.insert(
        "/api/v1/alerts".into(),
        op(
            "Firing alerts and notification groups (with acknowledgement)",
            "ActiveAlerts",
            json!([qp("cluster", "only this cluster")]),
            &["400", "404"],
        ),
    );
    paths.insert(
        "/api/v1/alerts/history".into(),
        op(
            "Alerts that fired, newest first",
            "AlertHistory",
            json!([
                qp("cluster", "only this cluster"),
                qp("state", "firing or resolved"),
                qp("from", time),
                qp("to", time),
                qp("limit", "1..5000")
            ]),
            &["400", "404"],
        ),
    );
    let json_body = |schema: &str, ok: &str, code: &str| {
        json!({
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } },
            "responses": {
                code: { "description": "OK", "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{ok}") } } } },
                "400": err("Malformed body"), "404": err("Not found"), "409": err("Conflict"), "422": err("Invalid"),
            }
        })
    };
    paths.insert("/api/v1/alerts/ack".into(), json!({ "post": { "summary": "Acknowledge a firing group: no repeats until it resolves", "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["group_key"], "properties": { "group_key": { "type": "string" }, "by": { "type": "string" }, "comment": { "type": "string" } } } } } }, "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Acked" } } } }, "400": err("Malformed body"), "404": err("No such firing group"), "422": err("Invalid") } } }));
    let mut silences = op(
        "Silences (configured and added through the API)",
        "SilenceList",
        json!([]),
        &["503"],
    );
    let mut add = json_body("NewSilence", "Silence", "201");
    add["summary"] =
        json!("Add a silence: matchers such as cluster=prod, alertname!=etcdNoLeader; ends_at_ms");
    silences["post"] = add;
    paths.insert("/api/v1/silences".into(), silences);
    paths.insert(
        "/api/v1/silences/{id}".into(),
        json!({ "delete": { "summary": "Delete a silence added through the API", "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
            "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Deleted" } } } }, "404": err("No such silence"), "409": err("Defined in the configuration file") } } }),
    );
    let mut by_id = op(
        "One run with its report",
        "BenchmarkRun",
        json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }]),
        &["404"],
    );
    by_id["delete"] = json!({ "summary": "Cancel a running benchmark (an operator: its own runs; an admin: any); it cleans up and is recorded as cancelled",
        "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
        "responses": { "200": { "description": "Cancelling", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/BenchmarkCancelled" } } } },
            "404": err("No such run"), "409": err("Not running") } });
    paths.insert("/api/v1/benchmarks/{id}".into(), by_id);
    paths.insert(
        "/api/v1/events".into(),
        json!({ "get": { "summary": "Server-sent events: hello, health, verdict_changed, leader_changed, metrics", "responses": { "200": { "description": "text/event-stream" } } } }),
    );
    paths.insert(
        "/api/v1/openapi.json".into(),
        json!({ "get": { "summary": "This document", "responses": { "200": { "description": "OpenAPI 3 document" } } } }),
    );
    paths.insert(
        "/metrics".into(),
        json!({ "get": { "summary": "Prometheus text exposition (etcd_monitor_*, process_*)", "responses": { "200": { "description": "text/plain; version=0.0.4" } } } }),
    );
    paths.insert(
        "/api/v1/whoami".into(),
        op(
            "The caller: principal, role, clusters and the state-changing routes it may call",
            "WhoAmI",
            json!([]),
            &[],
        ),
    );
    paths.insert(
        "/api/v1/audit".into(),
        op(
            "The audit log, newest first (admins)",
            "AuditLog",
            json!([
                qp("from", time),
                qp("to", time),
                qp("principal", "only this principal, e.g. token:ci"),
                qp("limit", "most records (1..5000, default 200)")
            ]),
            &["400"],
        ),
    );
    add_access(&mut paths);
    json!({
        "openapi": "3.0.3",
        "info": { "title": "etcd-monitor", "version": env!("CARGO_PKG_VERSION"), "description": "Health, metrics and history of etcd clusters. Authentication and roles: docs/security.md." },
        "paths": paths,
        "security": [{ "bearer": [] }],
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "A static token (api.auth.tokens) or a JWT of the configured OIDC provider (api.auth.jwt)" } },
        },
    })
}

/// Each operation's role (`x-required-role`, from the permission table the
/// access layer enforces) and the answers of that layer: 401, 403, 421, and
/// 415 for state-changing requests. Open routes need no credentials.
fn add_access(paths: &mut serde_json::Map<String, Value>) {
    let err = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    for route in super::route_table() {
        let Some(op) = paths
            .get_mut(&route.path)
            .and_then(|p| p.get_mut(route.method.as_str().to_ascii_lowercase()))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let role = match route.access {
            super::access::Access::Probe | super::access::Access::Public => None,
            super::access::Access::Metrics => {
                Some("viewer (none with api.auth.public_metrics)".to_string())
            }
            super::access::Access::Role(r) => Some(r.as_str().to_string()),
        };
        let Some(role) = role else {
            op.insert("security".into(), json!([]));
            continue;
        };
        op.insert("x-required-role".into(), Value::String(role));
        if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
            responses.insert("401".into(), err("No credentials, or bad ones"));
            responses.insert(
                "403".into(),
                err("Role too low, cluster out of scope, or origin not allowed"),
            );
            responses.insert("421".into(), err("Host not in api.allowed_hosts"));
            if super::access::is_state_changing(&route.method) {
                responses.insert("415".into(), err("Content-Type is not application/json"));
            }
        }
    }
}
