//! Resource CRUD (`/v1/<plural>` and `/v1/<plural>/{name}`) and the global endpoints.

use super::compat;
use super::error::{ApiError, ApiResult};
use super::request::{
    Precondition, decode_object, item_namespace, non_negative_param, positive_param,
    publish_deleted, publish_object, query_namespace, shown,
};
use super::routes::Ctx;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use orloj_core::{ErrorKind, Kind, LabelSelector, ListOptions, Object, scoped_key};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Largest page a list returns.
const MAX_LIMIT: usize = 1000;

fn json_object(status: StatusCode, object: Object) -> Response {
    (status, Json(shown(object).to_value())).into_response()
}

/// `GET /v1/<plural>`.
pub(crate) async fn list(ctx: Ctx) -> ApiResult<Response> {
    let q = &ctx.query;
    let namespace = query_namespace(q);
    let limit = positive_param(q, "limit", MAX_LIMIT)?.unwrap_or(MAX_LIMIT);
    // Deprecated, Tasks only: skips items after the cursor.
    let offset = if ctx.kind == Kind::Task {
        non_negative_param(q, "offset")?.unwrap_or(0)
    } else {
        0
    };
    let cursor = ["after", "continue"]
        .iter()
        .find_map(|p| q.get(*p).map(|s| s.trim()).filter(|s| !s.is_empty()));
    let after = cursor.map(|c| {
        if c.contains('/') {
            c.to_string()
        } else {
            scoped_key(&item_namespace(q), c)
        }
    });
    let (param, raw) = ["labelSelector", "labels"]
        .iter()
        .find_map(|p| q.get(*p).map(|v| (*p, v.as_str())))
        .unwrap_or(("labelSelector", ""));
    let selector = LabelSelector::parse(raw)
        .map_err(|e| ApiError::invalid(format!("invalid {param}: {}", e.message())))?;
    let options = ListOptions {
        namespace,
        selector,
        limit: Some(limit.saturating_add(offset)),
        after,
    };
    let page = ctx.state.store.list(ctx.kind, &options).await?;
    let items: Vec<Value> = page
        .items
        .into_iter()
        .skip(offset)
        .map(|o| shown(o).to_value())
        .collect();
    let mut body = json!({"items": items});
    if let Some(token) = page.continue_token.filter(|t| !t.is_empty()) {
        body["continue"] = Value::String(token);
    }
    Ok(Json(body).into_response())
}

/// `POST /v1/<plural>`: create or update without a precondition; 201 with the stored object.
pub(crate) async fn upsert(ctx: Ctx) -> ApiResult<Response> {
    let mut object = decode_object(&ctx)?;
    if object.metadata.name.is_empty() {
        return Err(ApiError::invalid("metadata.name is required"));
    }
    // Client status is ignored; an existing object keeps its stored status.
    object.status = Value::Object(Default::default());
    object.metadata.resource_version.clear();
    if object.kind == Kind::Secret {
        let stored = get_optional(&ctx, object.namespace(), object.name()).await?;
        compat::merge_redacted(&mut object, stored.as_ref())?;
    }
    let mut object = compat::normalize(object)?;
    if object.kind == Kind::ToolApproval {
        stamp_approval_expiry(&mut object, ctx.state.clock.now());
    }
    let (stored, created) = ctx.state.store.upsert(object).await?;
    let stored = shown(stored);
    publish_object(&ctx, if created { "created" } else { "updated" }, &stored);
    Ok(json_object(StatusCode::CREATED, stored))
}

/// A new pending ToolApproval expires `spec.ttl` (default 10m) from now (spec §2.11). Only a
/// create uses this status: the store keeps the stored status of an existing approval.
fn stamp_approval_expiry(object: &mut Object, now: chrono::DateTime<chrono::Utc>) {
    let ttl = object.spec.get("ttl").and_then(Value::as_str).unwrap_or("");
    let ttl =
        orloj_core::resources::duration::parse_duration(if ttl.is_empty() { "10m" } else { ttl })
            .unwrap_or(std::time::Duration::from_secs(600));
    let expires = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    if let Value::Object(status) = &mut object.status
        && status.get("phase").and_then(Value::as_str) == Some("Pending")
    {
        status.insert(
            "expires_at".into(),
            json!(orloj_core::task_queue::format_time(expires)),
        );
    }
}

async fn get_optional(ctx: &Ctx, namespace: &str, name: &str) -> ApiResult<Option<Object>> {
    match ctx.state.store.get(ctx.kind, namespace, name).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/<plural>/{name}`.
pub(crate) async fn get(ctx: Ctx) -> ApiResult<Response> {
    let ns = item_namespace(&ctx.query);
    let object = ctx.state.store.get(ctx.kind, &ns, &ctx.name).await?;
    Ok(json_object(StatusCode::OK, object))
}

/// `PUT /v1/<plural>/{name}`: replace under a precondition; a different `metadata.name` renames.
pub(crate) async fn replace(ctx: Ctx) -> ApiResult<Response> {
    let mut object = decode_object(&ctx)?;
    let precondition = Precondition::required(&ctx.headers, &object.metadata.resource_version)?;
    if object.metadata.name.is_empty() {
        object.metadata.name = ctx.name.clone();
    }
    let ns = object.namespace().to_string();
    let current = ctx.state.store.get(ctx.kind, &ns, &ctx.name).await?;
    let expected = precondition.expected(&current)?;
    // Client status is ignored: the stored one is kept.
    object.status = current.status.clone();
    compat::merge_redacted(&mut object, Some(&current))?;
    let mut object = compat::normalize(object)?;
    if object.name() != ctx.name {
        return rename(&ctx, object, &current, &expected).await;
    }
    object.metadata.resource_version = expected;
    let updated = shown(ctx.state.store.update(object).await?);
    publish_object(&ctx, "updated", &updated);
    Ok(json_object(StatusCode::OK, updated))
}

/// Moves `current` to the new name in `object`: create the new key, then delete the old one
/// under the precondition; if that delete fails the new object is removed again. Not atomic:
/// watchers briefly see both names.
async fn rename(
    ctx: &Ctx,
    mut object: Object,
    current: &Object,
    expected: &str,
) -> ApiResult<Response> {
    let store = &ctx.state.store;
    let ns = current.namespace().to_string();
    if get_optional(ctx, &ns, object.name()).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "cannot rename {} {ns}/{} to {:?}: {:?} already exists",
            ctx.kind,
            current.name(),
            object.name(),
            object.name()
        )));
    }
    object.metadata.resource_version.clear();
    object.status = current.status.clone();
    let created = store.create(object).await?;
    if let Err(err) = store
        .delete(ctx.kind, &ns, current.name(), Some(expected))
        .await
    {
        if let Err(undo) = store
            .delete(
                ctx.kind,
                &ns,
                created.name(),
                Some(&created.metadata.resource_version),
            )
            .await
        {
            tracing::error!(%undo, kind = %ctx.kind, name = created.name(), "could not undo a failed rename");
        }
        return Err(err.into());
    }
    let created = shown(created);
    publish_object(ctx, "created", &created);
    publish_deleted(ctx, &shown(current.clone()));
    Ok(json_object(StatusCode::OK, created))
}

/// `DELETE /v1/<plural>/{name}`: 204 (McpServer: 200 `{"deleted": name}` as the reference).
pub(crate) async fn delete(ctx: Ctx) -> ApiResult<Response> {
    let ns = item_namespace(&ctx.query);
    let gone = ctx
        .state
        .store
        .delete(ctx.kind, &ns, &ctx.name, None)
        .await?;
    publish_deleted(&ctx, &gone);
    if ctx.kind == Kind::McpServer {
        return Ok(Json(json!({"deleted": ctx.name})).into_response());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/namespaces`: every namespace holding any resource, sorted.
pub(crate) async fn namespaces(ctx: Ctx) -> ApiResult<Response> {
    let mut found = BTreeSet::new();
    for &kind in Kind::ALL {
        let page = ctx.state.store.list(kind, &ListOptions::default()).await?;
        found.extend(page.items.iter().map(|o| o.namespace().to_string()));
    }
    if found.is_empty() {
        found.insert(orloj_core::DEFAULT_NAMESPACE.to_string());
    }
    Ok(Json(json!({"namespaces": found})).into_response())
}

/// `GET /v1/capabilities`.
pub(crate) async fn capabilities(ctx: Ctx) -> ApiResult<Response> {
    let generated_at = ctx
        .state
        .clock
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    Ok(Json(json!({
        "generated_at": generated_at,
        "capabilities": ctx.state.config.capabilities,
    }))
    .into_response())
}

/// `GET /healthz`: 200 `{"status":"ok"}`, or 503 when the store does not answer a ping in time.
pub(crate) async fn healthz(ctx: Ctx) -> ApiResult<Response> {
    let limit = ctx.state.config.health_timeout;
    let failure = match tokio::time::timeout(limit, ctx.state.store.ping()).await {
        Ok(Ok(())) => return Ok(Json(json!({"status": "ok"})).into_response()),
        Ok(Err(e)) => format!("store unavailable: {}", e.message()),
        Err(_) => format!(
            "store unavailable: ping did not answer within {}ms",
            limit.as_millis()
        ),
    };
    Ok((
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "unavailable", "error": "unavailable", "message": failure})),
    )
        .into_response())
}
