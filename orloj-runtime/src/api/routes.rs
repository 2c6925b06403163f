//! The route table: the single list both the router and the OpenAPI document are built from.

use super::{ApiState, handlers, openapi, subresources, watch};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use orloj_core::Kind;
use std::collections::HashMap;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    List,
    Upsert,
    Get,
    Replace,
    Delete,
    GetStatus,
    PutStatus,
    Approve,
    Deny,
    TaskLogs,
    TaskMessages,
    TaskMetrics,
    AgentLogs,
    MemoryEntries,
    Watch,
    EventsWatch,
    Namespaces,
    Capabilities,
    Healthz,
    OpenApi,
}

/// One served (method, path).
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub method: Method,
    pub path: String,
    pub op: Op,
    pub kind: Option<Kind>,
}

impl Route {
    fn new(method: Method, path: impl Into<String>, op: Op, kind: Option<Kind>) -> Self {
        Self {
            method,
            path: path.into(),
            op,
            kind,
        }
    }

    /// Whether the path has a `{name}` parameter.
    pub fn has_name(&self) -> bool {
        self.path.contains("{name}")
    }
}

/// Every route the API serves.
pub(crate) fn routes() -> Vec<Route> {
    let mut out = vec![
        Route::new(Method::GET, "/healthz", Op::Healthz, None),
        Route::new(Method::GET, "/openapi.json", Op::OpenApi, None),
        Route::new(Method::GET, "/v1/capabilities", Op::Capabilities, None),
        Route::new(Method::GET, "/v1/namespaces", Op::Namespaces, None),
        Route::new(Method::GET, "/v1/events/watch", Op::EventsWatch, None),
    ];
    for &kind in Kind::ALL {
        let base = format!("/v1/{}", kind.plural());
        let item = format!("{base}/{{name}}");
        let k = Some(kind);
        out.push(Route::new(Method::GET, base.clone(), Op::List, k));
        out.push(Route::new(Method::POST, base.clone(), Op::Upsert, k));
        out.push(Route::new(Method::GET, item.clone(), Op::Get, k));
        if kind != Kind::ToolApproval {
            out.push(Route::new(Method::PUT, item.clone(), Op::Replace, k));
        }
        out.push(Route::new(Method::DELETE, item.clone(), Op::Delete, k));
        if kind.has_status_subresource() {
            let status = format!("{item}/status");
            out.push(Route::new(Method::GET, status.clone(), Op::GetStatus, k));
            out.push(Route::new(Method::PUT, status, Op::PutStatus, k));
        }
        if kind.has_watch() {
            out.push(Route::new(
                Method::GET,
                format!("{base}/watch"),
                Op::Watch,
                k,
            ));
        }
        match kind {
            Kind::ToolApproval => {
                out.push(Route::new(
                    Method::POST,
                    format!("{item}/approve"),
                    Op::Approve,
                    k,
                ));
                out.push(Route::new(
                    Method::POST,
                    format!("{item}/deny"),
                    Op::Deny,
                    k,
                ));
            }
            Kind::Task => {
                out.push(Route::new(
                    Method::GET,
                    format!("{item}/logs"),
                    Op::TaskLogs,
                    k,
                ));
                out.push(Route::new(
                    Method::GET,
                    format!("{item}/messages"),
                    Op::TaskMessages,
                    k,
                ));
                out.push(Route::new(
                    Method::GET,
                    format!("{item}/metrics"),
                    Op::TaskMetrics,
                    k,
                ));
            }
            Kind::Agent => out.push(Route::new(
                Method::GET,
                format!("{item}/logs"),
                Op::AgentLogs,
                k,
            )),
            Kind::Memory => out.push(Route::new(
                Method::GET,
                format!("{item}/entries"),
                Op::MemoryEntries,
                k,
            )),
            _ => {}
        }
    }
    out
}

/// What a handler gets: everything about the request, already extracted.
pub(crate) struct Ctx {
    pub state: ApiState,
    pub kind: Kind,
    pub name: String,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

fn filter(method: &Method) -> MethodFilter {
    match *method {
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::DELETE => MethodFilter::DELETE,
        Method::PATCH => MethodFilter::PATCH,
        _ => MethodFilter::GET,
    }
}

/// Adds the handler of `route` to the method router of its path.
pub(crate) fn attach(router: MethodRouter<ApiState>, route: &Route) -> MethodRouter<ApiState> {
    let op = route.op;
    let method = filter(&route.method);
    // Global routes have no kind; Agent is a placeholder they never read.
    let kind = route.kind.unwrap_or(Kind::Agent);
    if route.has_name() {
        router.on(
            method,
            move |State(state): State<ApiState>,
                  Path(name): Path<String>,
                  Query(query): Query<HashMap<String, String>>,
                  headers: HeaderMap,
                  body: Bytes| async move {
                let ctx = Ctx {
                    state,
                    kind,
                    name,
                    query,
                    headers,
                    body,
                };
                dispatch(op, ctx).await
            },
        )
    } else {
        router.on(
            method,
            move |State(state): State<ApiState>,
                  Query(query): Query<HashMap<String, String>>,
                  headers: HeaderMap,
                  body: Bytes| async move {
                let ctx = Ctx {
                    state,
                    kind,
                    name: String::new(),
                    query,
                    headers,
                    body,
                };
                dispatch(op, ctx).await
            },
        )
    }
}

async fn dispatch(op: Op, ctx: Ctx) -> Response {
    let result = match op {
        Op::List => handlers::list(ctx).await,
        Op::Upsert => handlers::upsert(ctx).await,
        Op::Get => handlers::get(ctx).await,
        Op::Replace => handlers::replace(ctx).await,
        Op::Delete => handlers::delete(ctx).await,
        Op::GetStatus => subresources::get_status(ctx).await,
        Op::PutStatus => subresources::put_status(ctx).await,
        Op::Approve => subresources::decide(ctx, true).await,
        Op::Deny => subresources::decide(ctx, false).await,
        Op::TaskLogs => subresources::task_logs(ctx).await,
        Op::TaskMessages => subresources::task_messages(ctx).await,
        Op::TaskMetrics => subresources::task_metrics(ctx).await,
        Op::AgentLogs => subresources::agent_logs(ctx).await,
        Op::MemoryEntries => subresources::memory_entries(ctx).await,
        Op::Watch => watch::resource_watch(ctx).await,
        Op::EventsWatch => watch::events_watch(ctx).await,
        Op::Namespaces => handlers::namespaces(ctx).await,
        Op::Capabilities => handlers::capabilities(ctx).await,
        Op::Healthz => handlers::healthz(ctx).await,
        Op::OpenApi => Ok(Json(openapi::openapi_document(&ctx.state.config)).into_response()),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}
