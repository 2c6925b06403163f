//! The REST API v1 (spec §3) as an [`axum::Router`].
//!
//! [`router`] serves every endpoint of the catalogue for the 15 kinds over any
//! [`orloj_core::Store`]: CRUD with optimistic concurrency, status subresources,
//! tool-approval decisions, task logs/messages/metrics, SSE watches, `/healthz`,
//! `/v1/capabilities`, `/v1/namespaces` and a generated `/openapi.json`.
//!
//! Global behaviour (outermost first): `X-Request-ID` (echoed or generated on every response),
//! JSON errors (`{"error": <code>, "message": <text>}` for every 4xx/5xx, including axum's own
//! 404/405/413), request timeout (watches exempt), `Content-Type` check on writes (415), body
//! limit (413).

pub mod auth;
mod compat;
mod error;
mod handlers;
mod openapi;
mod request;
mod routes;
mod subresources;
mod watch;

pub use error::{ApiError, ApiResult};
pub use openapi::openapi_document;

use crate::events::{EventBus, MemoryEventBus};
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use orloj_core::{Clock, Store};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// One entry of `GET /v1/capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capability {
    /// Stable id, e.g. `core.api.crud`.
    pub id: String,
    /// Whether the feature is on in this server.
    pub enabled: bool,
    /// What it is.
    pub description: String,
    /// Where it comes from (`core` for the open-source server).
    pub source: String,
}

impl Capability {
    /// An enabled capability from `core`.
    pub fn core(id: &str, description: &str) -> Self {
        Self {
            id: id.to_string(),
            enabled: true,
            description: description.to_string(),
            source: "core".to_string(),
        }
    }

    /// The open-source capability ids of spec §3.4.
    pub fn oss_defaults() -> Vec<Capability> {
        vec![
            Self::core("core.api.crud", "Resource CRUD over the REST API"),
            Self::core("core.runtime.sequential", "Sequential task execution"),
            Self::core(
                "core.runtime.message_driven",
                "Message-driven task execution over the agent message bus",
            ),
            Self::core(
                "core.governance.agent_roles",
                "Agent roles, tool permissions and approvals",
            ),
            Self::core("core.ui.baseline", "Baseline web console"),
            Self::core("core.self_host", "Self-hosted deployment"),
        ]
    }
}

/// Settings of the API server.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Server version, reported in `/openapi.json`.
    pub version: String,
    /// What `GET /v1/capabilities` reports.
    pub capabilities: Vec<Capability>,
    /// Largest accepted request body (spec: 4 MiB).
    pub max_body_bytes: usize,
    /// Deadline for GET/HEAD requests (watches are exempt).
    pub read_timeout: Duration,
    /// Deadline for other requests.
    pub write_timeout: Duration,
    /// How long `/healthz` waits for `Store::ping`.
    pub health_timeout: Duration,
    /// Interval of SSE keep-alive comments.
    pub keep_alive: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_string(),
            capabilities: Capability::oss_defaults(),
            max_body_bytes: 4 * 1024 * 1024,
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(60),
            health_timeout: Duration::from_secs(2),
            keep_alive: Duration::from_secs(15),
        }
    }
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    /// Where resources live.
    pub store: Arc<dyn Store>,
    /// Where write events are published and `/v1/events/watch` reads from.
    pub events: Arc<dyn EventBus>,
    /// Time source for event timestamps and approval decisions.
    pub clock: Arc<dyn Clock>,
    /// Settings.
    pub config: Arc<ApiConfig>,
    /// The process's memory backends behind `/v1/memories/{name}/entries` (none → empty).
    pub memory: Option<Arc<crate::memory::MemoryRegistry>>,
    /// Authentication and limits (spec §6); None serves without auth, as before auth existed.
    pub auth: Option<Arc<auth::AuthState>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// State with the default [`ApiConfig`] and a fresh [`MemoryEventBus`].
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            events: Arc::new(MemoryEventBus::default()),
            clock,
            config: Arc::new(ApiConfig::default()),
            memory: None,
            auth: None,
        }
    }

    /// Enforces auth per `config` with users, sessions and tokens in `store`.
    pub fn with_auth(
        mut self,
        config: auth::AuthConfig,
        store: Arc<dyn orloj_core::auth::AuthStore>,
    ) -> Self {
        self.auth = Some(Arc::new(auth::AuthState::new(config, store)));
        self
    }

    /// Serves memory entries from `registry` (share it with the worker's memory tools).
    pub fn with_memory(mut self, registry: Arc<crate::memory::MemoryRegistry>) -> Self {
        self.memory = Some(registry);
        self
    }

    /// Replaces the event bus.
    pub fn with_events(mut self, events: Arc<dyn EventBus>) -> Self {
        self.events = events;
        self
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: ApiConfig) -> Self {
        self.config = Arc::new(config);
        self
    }
}

/// Builds the API router over `state`, with every middleware of spec §3.1; auth, CORS and
/// rate limits are on when the state carries an auth config ([`ApiState::with_auth`]).
pub fn router(state: ApiState) -> Router {
    let mut by_path: BTreeMap<String, MethodRouter<ApiState>> = BTreeMap::new();
    for route in routes::routes() {
        let method_router = by_path.remove(&route.path).unwrap_or_default();
        by_path.insert(route.path.clone(), routes::attach(method_router, &route));
    }
    let mut app = Router::new().merge(auth::routes());
    for (path, method_router) in by_path {
        app = app.route(&path, method_router);
    }
    let max_body = state.config.max_body_bytes;
    // Spec §3.1 order (outermost first): timeout, CORS, global limit, body limit,
    // Content-Type, auth (the global limit runs inside the auth layer).
    let mut app = app
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(check_content_type));
    if let Some(cors) = state
        .auth
        .as_ref()
        .and_then(|a| auth::cors_layer(&a.config.cors_allowed_origins))
    {
        app = app.layer(cors);
    }
    app.layer(middleware::from_fn_with_state(
        state.clone(),
        enforce_timeout,
    ))
    .layer(middleware::map_response(json_errors))
    .layer(PropagateRequestIdLayer::x_request_id())
    .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
    .with_state(state)
}

async fn unknown_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

const WRITE_CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
];

async fn check_content_type(request: Request, next: Next) -> Response {
    let is_write = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    );
    if is_write && let Some(value) = request.headers().get(header::CONTENT_TYPE) {
        let essence = value
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !WRITE_CONTENT_TYPES.contains(&essence.as_str()) {
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "unsupported Content-Type {:?}: use one of {}",
                    value.to_str().unwrap_or("<binary>"),
                    WRITE_CONTENT_TYPES.join(", ")
                ),
            )
            .into_response();
        }
    }
    next.run(request).await
}

async fn enforce_timeout(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    // Watches stream for as long as the client listens.
    if request.uri().path().ends_with("/watch") {
        return next.run(request).await;
    }
    let limit = if matches!(*request.method(), Method::GET | Method::HEAD) {
        state.config.read_timeout
    } else {
        state.config.write_timeout
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("request did not complete within {}s", limit.as_secs()),
        )
        .into_response(),
    }
}

/// Rewrites error responses produced outside our handlers (axum's 405/413/400 rejections) into
/// the JSON error shape, keeping status and headers.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::CONFLICT => "conflict",
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ if status.is_server_error() => "internal",
        _ => "error",
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    } else {
        text
    };
    let body = serde_json::json!({"error": code, "message": message}).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
