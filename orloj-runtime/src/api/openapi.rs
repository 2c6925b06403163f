//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the route table so it
//! lists exactly the routes the router serves.

use super::ApiConfig;
use super::routes::{Op, Route, routes};
use axum::http::Method;
use orloj_core::resources::{self as r, ResourceSpec};
use orloj_core::{Kind, ObjectMeta};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

/// Builds the OpenAPI 3.1 document of the API.
pub fn openapi_document(config: &ApiConfig) -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let metadata = serde_json::to_value(generator.subschema_for::<ObjectMeta>())
        .unwrap_or_else(|_| json!({"type": "object"}));

    let mut schemas = Map::new();
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error", "message"],
            "properties": {"error": {"type": "string"}, "message": {"type": "string"}}
        }),
    );
    schemas.insert(
        "StatusEnvelope".into(),
        json!({
            "type": "object",
            "properties": {"metadata": metadata, "status": {"type": "object"}}
        }),
    );
    schemas.insert(
        "Event".into(),
        json!({
            "type": "object",
            "properties": {
                "id": {"type": "integer"}, "timestamp": {"type": "string", "format": "date-time"},
                "source": {"type": "string"}, "type": {"type": "string"}, "kind": {"type": "string"},
                "name": {"type": "string"}, "namespace": {"type": "string"},
                "action": {"type": "string"}, "message": {"type": "string"}, "data": {}
            }
        }),
    );
    let mut envelopes = Vec::new();
    for &kind in Kind::ALL {
        let (spec, status) = kind_schemas(kind, &mut generator);
        envelopes.push((
            kind.as_str().to_string(),
            json!({
                "type": "object",
                "required": ["kind", "metadata"],
                "properties": {
                    "apiVersion": {"type": "string", "const": orloj_core::API_VERSION},
                    "kind": {"type": "string", "const": kind.as_str()},
                    "metadata": metadata,
                    "spec": spec,
                    "status": status
                }
            }),
        ));
        envelopes.push((
            format!("{}List", kind.as_str()),
            json!({
                "type": "object",
                "properties": {
                    "items": {"type": "array", "items": schema_ref(kind.as_str())},
                    "continue": {"type": "string"}
                }
            }),
        ));
    }
    for (name, schema) in generator.take_definitions(true) {
        schemas.insert(name, schema);
    }
    // Envelope names win over generated type names; a clash is a bug caught by the tests.
    for (name, schema) in envelopes {
        if schemas.insert(name.clone(), schema).is_some() {
            tracing::warn!(%name, "OpenAPI schema name used twice");
        }
    }

    let mut paths = Map::new();
    for route in routes() {
        let item = paths.entry(route.path.clone()).or_insert_with(|| json!({}));
        if let Some(item) = item.as_object_mut() {
            item.insert(route.method.as_str().to_lowercase(), operation(&route));
        }
    }
    for (path, method, summary) in super::auth::openapi_paths() {
        let item = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        if let Some(item) = item.as_object_mut() {
            let id = format!(
                "{method}_{}",
                path.split('/')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.trim_matches(|c| c == '{' || c == '}'))
                    .collect::<Vec<_>>()
                    .join("_")
                    .replace(['-', '.'], "_")
            );
            item.insert(
                method.to_string(),
                json!({
                    "operationId": id,
                    "summary": summary,
                    "tags": ["auth"],
                    "responses": {
                        "200": {"description": "OK"},
                        "default": {"description": "Error", "content": json_content(schema_ref("Error"))}
                    }
                }),
            );
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Orloj API",
            "version": config.version,
            "description": "Orloj control-plane REST API (orloj.dev/v1). Errors are JSON: {\"error\", \"message\"}."
        },
        "paths": paths,
        "components": {"schemas": schemas}
    })
}

/// Schemas of `spec` and `status` for a kind, from the typed resources in `orloj_core`.
fn kind_schemas(kind: Kind, generator: &mut SchemaGenerator) -> (Value, Value) {
    fn typed<S: ResourceSpec>(generator: &mut SchemaGenerator) -> (Value, Value) {
        let spec = generator.subschema_for::<S>();
        let status = generator.subschema_for::<S::Status>();
        (
            serde_json::to_value(spec).unwrap_or_else(|_| json!({"type": "object"})),
            serde_json::to_value(status).unwrap_or_else(|_| json!({"type": "object"})),
        )
    }
    match kind {
        Kind::Agent => typed::<r::AgentSpec>(generator),
        Kind::AgentSystem => typed::<r::AgentSystemSpec>(generator),
        Kind::ModelEndpoint => typed::<r::ModelEndpointSpec>(generator),
        Kind::Tool => typed::<r::ToolSpec>(generator),
        Kind::Secret => typed::<r::SecretSpec>(generator),
        Kind::Memory => typed::<r::MemorySpec>(generator),
        Kind::McpServer => typed::<r::McpServerSpec>(generator),
        Kind::AgentPolicy => typed::<r::AgentPolicySpec>(generator),
        Kind::AgentRole => typed::<r::AgentRoleSpec>(generator),
        Kind::ToolPermission => typed::<r::ToolPermissionSpec>(generator),
        Kind::ToolApproval => typed::<r::ToolApprovalSpec>(generator),
        Kind::Task => typed::<r::TaskSpec>(generator),
        Kind::TaskSchedule => typed::<r::TaskScheduleSpec>(generator),
        Kind::TaskWebhook => typed::<r::TaskWebhookSpec>(generator),
        Kind::Worker => typed::<r::WorkerSpec>(generator),
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

fn string_query(name: &str, description: &str) -> Value {
    query(name, json!({"type": "string"}), description)
}

fn operation(route: &Route) -> Value {
    let kind = route.kind;
    let kind_name = kind.map_or("", Kind::as_str);
    let tag = kind.map_or("system", Kind::plural);
    let mut params = Vec::new();
    if route.has_name() {
        params.push(
            json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}),
        );
    }
    if kind.is_some() {
        params.push(string_query(
            "namespace",
            "Namespace; lists default to every namespace, item operations to `default`",
        ));
    }
    let object = schema_ref(kind_name);
    let sse = json!({"text/event-stream": {"schema": {"type": "string"}}});
    let (summary, ok_code, ok): (String, &str, Value) = match route.op {
        Op::List => {
            params.push(query(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": 1000}),
                "Page size",
            ));
            params.push(string_query("after", "Cursor `namespace/name`"));
            params.push(string_query("continue", "Alias of `after`"));
            params.push(string_query("labelSelector", "`k=v,k2!=v2`"));
            params.push(string_query("labels", "Alias of `labelSelector`"));
            if kind == Some(Kind::Task) {
                params.push(query(
                    "offset",
                    json!({"type": "integer", "minimum": 0}),
                    "Deprecated: items to skip after the cursor",
                ));
            }
            (
                format!("List {kind_name} resources"),
                "200",
                json_content(schema_ref(&format!("{kind_name}List"))),
            )
        }
        Op::Upsert => (
            format!("Create or update a {kind_name}"),
            "201",
            json_content(object.clone()),
        ),
        Op::Get => (
            format!("Get a {kind_name}"),
            "200",
            json_content(object.clone()),
        ),
        Op::Replace => (
            format!("Replace a {kind_name} (requires If-Match or metadata.resourceVersion)"),
            "200",
            json_content(object.clone()),
        ),
        Op::Delete if kind == Some(Kind::McpServer) => (
            format!("Delete a {kind_name}"),
            "200",
            json_content(json!({"type": "object", "properties": {"deleted": {"type": "string"}}})),
        ),
        Op::Delete => (format!("Delete a {kind_name}"), "204", Value::Null),
        Op::GetStatus => (
            format!("Get the status of a {kind_name}"),
            "200",
            json_content(schema_ref("StatusEnvelope")),
        ),
        Op::PutStatus => (
            format!("Replace the status of a {kind_name}"),
            "200",
            json_content(object.clone()),
        ),
        Op::Approve | Op::Deny => (
            format!(
                "{} a pending {kind_name}",
                if route.op == Op::Approve {
                    "Approve"
                } else {
                    "Deny"
                }
            ),
            "200",
            json_content(object.clone()),
        ),
        Op::TaskLogs | Op::AgentLogs => (
            format!("Log lines of a {kind_name}"),
            "200",
            json_content(json!({"type": "object", "properties": {
                "name": {"type": "string"}, "logs": {"type": "array", "items": {"type": "string"}}}})),
        ),
        Op::TaskMessages | Op::TaskMetrics => {
            for p in ["phase", "lifecycle"] {
                params.push(string_query(p, "Comma-separated message phases"));
            }
            for p in ["from_agent", "to_agent", "branch_id", "trace_id"] {
                params.push(string_query(p, "Exact match"));
            }
            params.push(query(
                "limit",
                json!({"type": "integer", "minimum": 0}),
                "Latest N messages",
            ));
            let what = if route.op == Op::TaskMessages {
                "Messages"
            } else {
                "Message metrics"
            };
            (
                format!("{what} of a Task"),
                "200",
                json_content(json!({"type": "object"})),
            )
        }
        Op::MemoryEntries => {
            params.push(string_query("q", "Search text"));
            params.push(string_query("prefix", "Key prefix"));
            params.push(query(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": 1000}),
                "At most this many entries (default 100)",
            ));
            (
                "Entries of a Memory".into(),
                "200",
                json_content(json!({"type": "object", "properties": {
                    "entries": {"type": "array"}, "count": {"type": "integer"}}})),
            )
        }
        Op::Watch => {
            params.push(query(
                "resourceVersion",
                json!({"type": "integer", "minimum": 0}),
                "Only send snapshot items with a greater resourceVersion",
            ));
            params.push(string_query("name", "Only this name"));
            (
                format!("Watch {kind_name} resources (SSE, `event: resource`)"),
                "200",
                sse.clone(),
            )
        }
        Op::EventsWatch => {
            params.push(query(
                "since",
                json!({"type": "integer", "minimum": 0}),
                "Replay retained events with a greater id",
            ));
            for p in ["source", "type", "kind", "name", "namespace"] {
                params.push(string_query(p, "Exact match"));
            }
            (
                "Watch control-plane events (SSE, `event: event`)".into(),
                "200",
                sse,
            )
        }
        Op::Namespaces => (
            "Namespaces in use".into(),
            "200",
            json_content(json!({"type": "object", "properties": {
                "namespaces": {"type": "array", "items": {"type": "string"}}}})),
        ),
        Op::Capabilities => (
            "Server capabilities".into(),
            "200",
            json_content(json!({"type": "object"})),
        ),
        Op::Healthz => (
            "Health check".into(),
            "200",
            json_content(json!({"type": "object", "properties": {"status": {"type": "string"}}})),
        ),
        Op::OpenApi => (
            "This document".into(),
            "200",
            json_content(json!({"type": "object"})),
        ),
    };
    let mut responses = Map::new();
    let mut ok_response = json!({"description": "OK"});
    if !ok.is_null() {
        ok_response["content"] = ok;
    }
    responses.insert(ok_code.into(), ok_response);
    responses.insert(
        "default".into(),
        json!({"description": "Error", "content": json_content(schema_ref("Error"))}),
    );
    let mut op = json!({
        "operationId": operation_id(route),
        "summary": summary,
        "tags": [tag],
        "parameters": params,
        "responses": responses,
    });
    if matches!(route.method, Method::POST | Method::PUT) {
        let body = match route.op {
            Op::Upsert | Op::Replace => object,
            Op::PutStatus => schema_ref("StatusEnvelope"),
            _ => json!({"type": "object", "properties": {
                "decided_by": {"type": "string"}, "comment": {"type": "string"}, "reason": {"type": "string"}}}),
        };
        op["requestBody"] = json!({
            "required": !matches!(route.op, Op::Approve | Op::Deny),
            "content": {
                "application/json": {"schema": body},
                "application/yaml": {"schema": body}
            }
        });
    }
    op
}

fn operation_id(route: &Route) -> String {
    let method = route.method.as_str().to_lowercase();
    let path: String = route
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_matches(|c| c == '{' || c == '}'))
        .collect::<Vec<_>>()
        .join("_");
    format!("{method}_{}", path.replace(['-', '.'], "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_resolve_and_names_do_not_clash() {
        let doc = openapi_document(&ApiConfig::default());
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let text = doc.to_string();
        // Every $ref points at an existing component.
        for piece in text.split("\"$ref\":\"").skip(1) {
            let target = piece.split('"').next().unwrap_or("");
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {target}"));
            assert!(schemas.contains_key(name), "dangling $ref {target}");
        }
        // Kind envelopes are not shadowing generated types.
        let mut generator = SchemaSettings::draft2020_12()
            .with(|s| s.definitions_path = "/components/schemas".into())
            .into_generator();
        for &kind in Kind::ALL {
            kind_schemas(kind, &mut generator);
        }
        let generated = generator.take_definitions(true);
        for &kind in Kind::ALL {
            assert!(!generated.contains_key(kind.as_str()), "{kind} clashes");
            assert!(
                !generated.contains_key(&format!("{kind}List")),
                "{kind}List clashes"
            );
        }
        assert!(schemas["Agent"]["properties"]["spec"]["$ref"].is_string());
    }
}
