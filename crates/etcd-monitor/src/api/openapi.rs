//! The OpenAPI 3.1 document of the API, served at `/api/v1/openapi.json`,
//! generated from the handlers' annotations and the request and response
//! types they use, so it cannot drift from what they return. On top of what
//! `utoipa` derives: the default-cluster routes (`/api/v1/cluster/...`, the
//! same handlers as `/api/v1/clusters/{name}/...`), the routes that do not
//! answer JSON, the security scheme, and each operation's role from the
//! permission table the access layer enforces.

use std::sync::OnceLock;

use axum::Json;
use serde_json::{Value, json};
use utoipa::OpenApi;

use super::{alerts, audit, backups, benchmarks, handlers, keyspace, maintenance, replicas};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "etcd-monitor",
        description = "Health, metrics and history of etcd clusters. Authentication and roles: docs/security.md."
    ),
    paths(
        handlers::health,
        handlers::ready,
        handlers::whoami,
        handlers::clusters,
        handlers::status,
        handlers::members,
        handlers::leader,
        handlers::metrics_current,
        handlers::metrics_latency,
        handlers::metrics_history,
        handlers::history,
        maintenance::defrag,
        maintenance::defrag_runs,
        maintenance::compact,
        maintenance::snapshot,
        maintenance::alarm_disarm,
        maintenance::move_leader,
        keyspace::scan,
        keyspace::scans,
        keyspace::growth,
        keyspace::hot,
        alerts::active,
        alerts::history,
        alerts::ack,
        alerts::silences,
        alerts::add_silence,
        alerts::delete_silence,
        benchmarks::start,
        benchmarks::list,
        benchmarks::get,
        benchmarks::cancel,
        benchmarks::start_legacy,
        audit::list,
        replicas::list,
        backups::list,
        backups::now,
    ),
    components(schemas(super::ErrorBody))
)]
struct ApiDoc;

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> Json<Value> {
    Json(document().clone())
}

/// The document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    let paths = doc["paths"]
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut out = serde_json::Map::new();
    for (path, item) in paths {
        if let Some(rest) = path.strip_prefix("/api/v1/clusters/{name}/") {
            // The same handler for the first configured cluster.
            let mut default = item.clone();
            if let Some(ops) = default.as_object_mut() {
                for op in ops.values_mut() {
                    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                        params.retain(|p| !(p["in"] == "path" && p["name"] == "name"));
                    }
                    if let Some(summary) = op.get("summary").and_then(Value::as_str) {
                        op["summary"] = json!(format!("{summary} (the first configured cluster)"));
                    }
                    if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                        op["operationId"] = json!(format!("{id}_default_cluster"));
                    }
                }
            }
            out.insert(format!("/api/v1/cluster/{rest}"), default);
        }
        out.insert(path, item);
    }
    for (method, alias, successor) in &super::LEGACY_ROUTES {
        let method = method.as_str().to_ascii_lowercase();
        // A handler of its own is documented already; an alias of the
        // successor's handler is documented as a copy of it.
        let (mut op, copied) = match out.get(*alias) {
            Some(item) => (item[&method].clone(), false),
            None => (
                out.get(*successor)
                    .map(|item| item[&method].clone())
                    .unwrap_or_default(),
                true,
            ),
        };
        if let Some(op) = op.as_object_mut() {
            op.insert("deprecated".into(), Value::Bool(true));
            op.insert(
                "description".into(),
                json!(format!(
                    "The Go original's spelling of {} {successor}, kept for its users; answers carry `Deprecation` (RFC 9745, the date it was deprecated) and a `Link` to the successor.",
                    method.to_ascii_uppercase()
                )),
            );
            if let Some(id) = op
                .get("operationId")
                .and_then(Value::as_str)
                .filter(|_| copied)
            {
                let id = format!("{id}_legacy");
                op.insert("operationId".into(), Value::String(id));
            }
        }
        let item = out.entry(alias.to_string()).or_insert_with(|| json!({}));
        item[&method] = op;
    }
    let text = |summary: &str, description: &str| json!({ "get": { "summary": summary, "responses": { "200": { "description": description } } } });
    out.insert(
        "/api/v1/events".into(),
        text(
            "Server-sent events: hello, health, verdict_changed, leader_changed, metrics",
            "text/event-stream",
        ),
    );
    out.insert(
        "/api/v1/openapi.json".into(),
        text("This document", "OpenAPI 3.1 document"),
    );
    out.insert(
        "/metrics".into(),
        text(
            "Prometheus text exposition (etcd_monitor_*, process_*)",
            "text/plain; version=0.0.4",
        ),
    );
    add_access(&mut out);
    doc["paths"] = Value::Object(out);
    doc["security"] = json!([{ "bearer": [] }]);
    doc["components"]["securitySchemes"] = json!({ "bearer": {
        "type": "http", "scheme": "bearer",
        "description": "A static token (api.auth.tokens) or a JWT of the configured OIDC provider (api.auth.jwt)"
    } });
    doc
}

/// Each operation's role (`x-required-role`, from the permission table the
/// access layer enforces) and the answers of that layer: 401, 403, 421, and
/// 415 for state-changing requests. Open routes need no credentials.
fn add_access(paths: &mut serde_json::Map<String, Value>) {
    let err = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } } });
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
            responses.entry("403").or_insert_with(|| {
                err("Role too low, cluster out of scope, or origin not allowed")
            });
            responses.insert("421".into(), err("Host not in api.allowed_hosts"));
            if super::access::is_state_changing(&route.method) {
                responses.insert("415".into(), err("Content-Type is not application/json"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_role() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        for route in super::super::route_table() {
            if matches!(
                route.path.as_str(),
                "/" | "/runbooks" | "/assets/app.js" | "/assets/style.css"
            ) {
                continue;
            }
            let op = &doc["paths"][&route.path][route.method.as_str().to_ascii_lowercase()];
            assert!(
                op.is_object(),
                "{} {} is not documented",
                route.method,
                route.path
            );
            if let super::super::access::Access::Role(r) = route.access {
                assert_eq!(op["x-required-role"], r.as_str(), "{}", route.path);
            }
        }
        // The default-cluster copy has no {name} parameter.
        let params = &doc["paths"]["/api/v1/cluster/status"]["get"]["parameters"];
        assert!(
            params
                .as_array()
                .is_none_or(|p| p.iter().all(|p| p["name"] != "name"))
        );
        assert!(doc["components"]["schemas"]["HealthSnapshot"].is_object());
        // The Go original's spellings are there, marked deprecated, with
        // their successor's role.
        for (method, alias, successor) in &super::super::LEGACY_ROUTES {
            let m = method.as_str().to_ascii_lowercase();
            let op = &doc["paths"][*alias][&m];
            assert_eq!(op["deprecated"], true, "{alias}");
            assert_eq!(
                op["x-required-role"], doc["paths"][*successor][&m]["x-required-role"],
                "{alias}"
            );
            assert!(
                doc["paths"][*successor][&m]["deprecated"].is_null(),
                "{successor}"
            );
        }
        // Every operation has an id of its own.
        let mut ids = std::collections::BTreeMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if let Some(id) = op["operationId"].as_str() {
                    if let Some(other) = ids.insert(id.to_string(), format!("{method} {path}")) {
                        panic!("operationId {id} of {method} {path} is also {other}'s");
                    }
                }
            }
        }
        // Maintenance operations share one set of error answers.
        for op in [
            "defrag",
            "compact",
            "snapshot",
            "alarm-disarm",
            "move-leader",
        ] {
            let responses =
                &doc["paths"][format!("/api/v1/cluster/maintenance/{op}")]["post"]["responses"];
            for code in ["200", "400", "404", "409", "422", "502", "503"] {
                assert!(responses[code].is_object(), "{op}: no {code}");
            }
            let schema = &responses["409"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(schema, "#/components/schemas/ErrorBody", "{op}");
        }
    }
}
