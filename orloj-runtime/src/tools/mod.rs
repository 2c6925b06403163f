//! The tool runtime (spec runtime §9): executors for every backend and the governed runtime
//! that wraps them.
//!
//! * [`HttpToolExecutor`]: POSTs the input to the tool endpoint (`isolation_mode: none`).
//! * [`ContainerToolExecutor`]: runs the request inside a locked-down container through a
//!   docker-compatible CLI (docker, podman).
//! * [`ExternalToolExecutor`] and [`WebhookCallbackToolExecutor`]: speak the tool contract v1
//!   to a remote service, synchronously or with an asynchronous callback.
//! * [`GovernedToolRuntime`]: picks the executor from the Tool's type and isolation mode and
//!   wraps it with authorization, a hard per-attempt timeout, retry with backoff and jitter,
//!   and cancellation. Auth secrets are resolved by [`AuthInjector`] from the Secret store and
//!   the environment.
//! * [`conformance`]: the tool-contract conformance suite every executor runs.

pub mod auth;
pub mod conformance;
pub mod container;
pub mod contract;
pub mod external;
pub mod governed;
pub mod http;
pub mod safety;
pub mod secrets;

pub use auth::{AuthInjector, ResolvedAuth};
pub use container::{ContainerConfig, ContainerToolExecutor};
pub use contract::{ContractRequest, ContractResponse, run_contract};
pub use external::{ExternalToolExecutor, WebhookCallbackToolExecutor};
pub use governed::{
    AllowAll, Authorization, GovernedToolRuntime, Jitter, RetryPolicy, ToolAuthorizer,
    ToolRuntimeConfig,
};
pub use http::HttpToolExecutor;
pub use secrets::{
    ChainSecretResolver, EnvSecretResolver, SecretError, SecretResolver, StoreSecretResolver,
};

use orloj_core::resources::{self, ToolSpec};
use orloj_core::tool::{ToolError, ToolErrorCode, ToolInvocation};

/// Largest response body read from a tool (4 MiB); the rest is dropped.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Installs the ring rustls provider if none is installed yet (reqwest is built without a
/// provider so that the whole process agrees on ring).
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client for tool calls (no overall timeout: each call sets its own).
pub fn default_http_client() -> Result<reqwest::Client, ToolError> {
    ensure_crypto_provider();
    reqwest::Client::builder().build().map_err(|e| {
        safety::tool_error(
            ToolErrorCode::RuntimePolicyInvalid,
            format!("building the tool HTTP client: {e}"),
        )
    })
}

/// The typed spec of the invocation's Tool; a malformed spec is `runtime_policy_invalid`.
pub(crate) fn tool_spec(invocation: &ToolInvocation) -> Result<ToolSpec, ToolError> {
    resources::spec_of::<ToolSpec>(&invocation.tool).map_err(|e| {
        safety::tool_error(
            ToolErrorCode::RuntimePolicyInvalid,
            format!("tool {:?} has an invalid spec: {e}", tool_name(invocation)),
        )
    })
}

/// The Tool's name.
pub(crate) fn tool_name(invocation: &ToolInvocation) -> &str {
    &invocation.tool.metadata.name
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of a response body, as lossy UTF-8.
pub(crate) async fn read_body_limited(
    tool: &str,
    mut response: reqwest::Response,
) -> Result<String, ToolError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| safety::transport_error(tool, &e))?
    {
        let room = MAX_RESPONSE_BYTES - body.len();
        if chunk.len() >= room {
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}
