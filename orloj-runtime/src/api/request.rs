//! Request decoding shared by the handlers: namespaces, bodies, preconditions, query numbers,
//! and the response/event helpers every write uses.

use super::compat;
use super::error::{ApiError, ApiResult};
use super::routes::Ctx;
use crate::events::Event;
use axum::http::{HeaderMap, header};
use orloj_core::{DEFAULT_NAMESPACE, Object};
use serde_json::{Value, json};
use std::collections::HashMap;

/// `?namespace=`, when given and non-empty.
pub(crate) fn query_namespace(query: &HashMap<String, String>) -> Option<String> {
    query
        .get("namespace")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The namespace of an item operation: `?namespace=` or `default`.
pub(crate) fn item_namespace(query: &HashMap<String, String>) -> String {
    query_namespace(query).unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// Parses the body as a JSON value (JSON or one YAML document).
pub(crate) fn decode_value(body: &[u8]) -> ApiResult<Value> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::invalid(format!("request body is not UTF-8: {e}")))?;
    Ok(compat::parse_body(text)?)
}

/// Decodes a write body into an object of `ctx.kind`: fills a missing kind from the path,
/// rejects another kind, and applies the namespace rules of spec §3.2.
pub(crate) fn decode_object(ctx: &Ctx) -> ApiResult<Object> {
    let text = std::str::from_utf8(&ctx.body)
        .map_err(|e| ApiError::invalid(format!("request body is not UTF-8: {e}")))?;
    let mut object = compat::parse_object(text, ctx.kind)?;
    if object.kind != ctx.kind {
        return Err(ApiError::invalid(format!(
            "kind {} does not match /v1/{} (expected {})",
            object.kind,
            ctx.kind.plural(),
            ctx.kind
        )));
    }
    let requested = query_namespace(&ctx.query);
    let body_ns = object.metadata.namespace.trim().to_string();
    object.metadata.namespace = match (body_ns.is_empty(), requested) {
        (true, Some(ns)) => ns,
        (true, None) => DEFAULT_NAMESPACE.to_string(),
        (false, Some(ns)) if ns != body_ns => {
            return Err(ApiError::invalid(format!(
                "metadata.namespace {body_ns:?} does not match ?namespace={ns:?}"
            )));
        }
        (false, _) => body_ns,
    };
    object.metadata.name = object.metadata.name.trim().to_string();
    Ok(object)
}

/// The `If-Match` header with quotes and a weak `W/` prefix stripped; `None` when absent/empty.
pub(crate) fn if_match(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = raw
        .to_str()
        .map_err(|_| ApiError::invalid("If-Match header is not valid ASCII"))?
        .trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim();
    let text = text.trim_matches('"').trim();
    Ok((!text.is_empty()).then(|| text.to_string()))
}

/// A write's precondition, before the current object is known.
pub(crate) struct Precondition {
    header: Option<String>,
    body: Option<String>,
}

impl Precondition {
    /// Reads `If-Match` and the body's resourceVersion; 409 when neither is present.
    pub(crate) fn required(headers: &HeaderMap, body_rv: &str) -> ApiResult<Self> {
        let header = if_match(headers)?;
        let body = Some(body_rv.trim().to_string()).filter(|s| !s.is_empty());
        if header.is_none() && body.is_none() {
            return Err(ApiError::conflict(
                "resourceVersion precondition required: send an If-Match header or metadata.resourceVersion",
            ));
        }
        Ok(Self { header, body })
    }

    /// The version the write must match, given the current object (`*` means current).
    pub(crate) fn expected(&self, current: &Object) -> ApiResult<String> {
        let header = self.header.as_deref().map(|h| {
            if h == "*" {
                current.metadata.resource_version.clone()
            } else {
                h.to_string()
            }
        });
        let expected = match (header, self.body.clone()) {
            (Some(h), Some(b)) if h != b => {
                return Err(ApiError::conflict(format!(
                    "If-Match {h:?} and metadata.resourceVersion {b:?} disagree"
                )));
            }
            (Some(h), _) => h,
            (None, Some(b)) => b,
            (None, None) => current.metadata.resource_version.clone(),
        };
        if expected != current.metadata.resource_version {
            return Err(ApiError::conflict(format!(
                "{} resourceVersion conflict: expected={expected} current={}",
                current.kind, current.metadata.resource_version
            )));
        }
        Ok(expected)
    }
}

/// A positive integer query parameter within `1..=max`; `None` when absent or empty.
pub(crate) fn positive_param(
    query: &HashMap<String, String>,
    name: &str,
    max: usize,
) -> ApiResult<Option<usize>> {
    let Some(raw) = query.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    match raw.parse::<i64>() {
        Ok(n) if n >= 1 && (n as u64) <= max as u64 => Ok(Some(n as usize)),
        _ => Err(ApiError::invalid(format!(
            "invalid {name} {raw:?}: must be an integer between 1 and {max}"
        ))),
    }
}

/// A non-negative integer query parameter; `None` when absent or empty.
pub(crate) fn non_negative_param(
    query: &HashMap<String, String>,
    name: &str,
) -> ApiResult<Option<usize>> {
    let Some(raw) = query.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    raw.parse::<usize>().map(Some).map_err(|_| {
        ApiError::invalid(format!(
            "invalid {name} {raw:?}: must be a non-negative integer"
        ))
    })
}

/// The object as the API shows it (secrets redacted).
pub(crate) fn shown(mut object: Object) -> Object {
    compat::redact(&mut object);
    object
}

/// Publishes `resource.<action>` for an already-redacted object.
pub(crate) fn publish(ctx: &Ctx, action: &str, object: &Object, data: Value) {
    let namespace = object.namespace().to_string();
    ctx.state.events.publish(Event {
        id: 0,
        timestamp: ctx.state.clock.now(),
        source: "apiserver".into(),
        event_type: format!("resource.{action}"),
        kind: object.kind.as_str().to_string(),
        name: object.name().to_string(),
        message: format!("{} {namespace}/{} {action}", object.kind, object.name()),
        namespace,
        action: action.to_string(),
        data,
    });
}

/// Publishes a write event carrying the (redacted) object itself.
pub(crate) fn publish_object(ctx: &Ctx, action: &str, object: &Object) {
    publish(ctx, action, object, object.to_value());
}

/// Publishes a delete event carrying only the object's name and namespace.
pub(crate) fn publish_deleted(ctx: &Ctx, object: &Object) {
    let data = json!({"metadata": {"name": object.name(), "namespace": object.namespace()}});
    publish(ctx, "deleted", object, data);
}
