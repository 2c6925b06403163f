//! Server-sent-event watches (spec §3.5): resource watches and the control-plane event stream.

use super::error::ApiResult;
use super::request::{non_negative_param, query_namespace, shown};
use super::routes::Ctx;
use crate::events::Event;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream;
use orloj_core::{ListOptions, Object, WatchEvent, WatchEventType};
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;

fn frame(event: &str, data: &serde_json::Value) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().event(event).data(data.to_string()))
}

fn resource_frame(kind: &str, object: Object) -> Result<SseEvent, Infallible> {
    frame(
        "resource",
        &json!({"type": kind, "resource": shown(object).to_value()}),
    )
}

/// `GET /v1/<plural>/watch?resourceVersion=&name=&namespace=`: a snapshot as `added`, then live
/// changes. The store watch is opened before the snapshot is read so nothing falls between.
pub(crate) async fn resource_watch(ctx: Ctx) -> ApiResult<Response> {
    let min_rv = non_negative_param(&ctx.query, "resourceVersion")?.unwrap_or(0) as u64;
    let name = ctx
        .query
        .get("name")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let namespace = query_namespace(&ctx.query);
    let store = ctx.state.store.clone();
    let kind = ctx.kind;

    let live = store.watch(Some(kind), None).await?;
    // Changes up to this revision are certainly in the snapshot below.
    let covered_revision = store.current_revision().await?;
    let snapshot = store
        .list(
            kind,
            &ListOptions {
                namespace: namespace.clone(),
                ..Default::default()
            },
        )
        .await?;

    let wanted = move |o: &Object| {
        name.as_deref().is_none_or(|n| o.name() == n)
            && namespace.as_deref().is_none_or(|ns| o.namespace() == ns)
    };
    // Last resourceVersion sent (or covered by the snapshot) per key.
    let mut sent: HashMap<String, u64> = HashMap::new();
    let mut initial = Vec::new();
    for object in snapshot.items {
        if !wanted(&object) {
            continue;
        }
        let rv = object.metadata.resource_version_number();
        sent.insert(object.key(), rv);
        if rv > min_rv {
            initial.push(resource_frame("added", object));
        }
    }

    let live = live
        .scan(sent, move |sent, item| {
            let WatchEvent {
                revision,
                event_type,
                object,
            } = match item {
                Ok(event) => event,
                Err(err) => {
                    tracing::warn!(%err, "resource watch ended");
                    return futures::future::ready(None);
                }
            };
            let mut out = None;
            if revision > covered_revision && wanted(&object) {
                let key = object.key();
                let rv = object.metadata.resource_version_number();
                match event_type {
                    WatchEventType::Deleted => {
                        // Only keys the client knows about; the delete carries the last state.
                        if sent.get(&key).is_some_and(|seen| rv >= *seen) {
                            sent.remove(&key);
                            out = Some(resource_frame("deleted", object));
                        }
                    }
                    WatchEventType::Added | WatchEventType::Updated => {
                        if sent.get(&key).is_none_or(|seen| rv > *seen) {
                            let known = sent.insert(key, rv).is_some();
                            let label = if event_type == WatchEventType::Added || !known {
                                "added"
                            } else {
                                "updated"
                            };
                            out = Some(resource_frame(label, object));
                        }
                    }
                }
            }
            futures::future::ready(Some(out))
        })
        .filter_map(futures::future::ready);

    let events = stream::iter(initial).chain(live);
    Ok(Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(ctx.state.config.keep_alive)
                .text("keep-alive"),
        )
        .into_response())
}

/// `GET /v1/events/watch?since=&source=&type=&kind=&name=&namespace=`.
pub(crate) async fn events_watch(ctx: Ctx) -> ApiResult<Response> {
    let since = non_negative_param(&ctx.query, "since")?.map(|s| s as u64);
    let filters: Vec<(&'static str, String)> = ["source", "type", "kind", "name", "namespace"]
        .into_iter()
        .filter_map(|f| {
            ctx.query
                .get(f)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .map(|v| (f, v))
        })
        .collect();
    let matches = move |e: &Event| {
        filters.iter().all(|(f, v)| match *f {
            "source" => e.source == *v,
            "type" => e.event_type == *v,
            "kind" => e.kind.eq_ignore_ascii_case(v),
            "name" => e.name == *v,
            _ => e.namespace == *v,
        })
    };
    let events = ctx.state.events.subscribe(since).filter_map(move |e| {
        futures::future::ready(matches(&e).then(|| {
            frame("event", &serde_json::to_value(&e).unwrap_or_default())
                .map(|f| f.id(e.id.to_string()))
        }))
    });
    Ok(Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(ctx.state.config.keep_alive)
                .text("keep-alive"),
        )
        .into_response())
}
