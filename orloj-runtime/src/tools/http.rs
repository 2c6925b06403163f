//! The HTTP backend (`isolation_mode: none`, spec runtime §9.4): POST the raw input to the
//! Tool's endpoint and unwrap contract responses.

use super::auth::AuthInjector;
use super::safety::{check_endpoint, http_status_error, tool_error, transport_error};
use super::{read_body_limited, tool_name, tool_spec};
use async_trait::async_trait;
use orloj_core::tool::{ToolError, ToolErrorCode, ToolExecutor, ToolInvocation, ToolOutput};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Timeout used when an invocation carries none.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls `type: http` tools over HTTP.
///
/// Request: `POST <endpoint>` with the raw input as body, `Content-Type: application/json`
/// and the auth header. Response: up to 4 MiB are read; a JSON object with a non-empty
/// `status` is a contract response (its `output.result` or its error), anything else is the
/// trimmed body. HTTP errors map per §9.3.
pub struct HttpToolExecutor {
    client: reqwest::Client,
    auth: Arc<AuthInjector>,
    allow_private_endpoints: bool,
}

impl HttpToolExecutor {
    /// An executor using `client` and resolving credentials with `auth`. Non-public
    /// literal-IP endpoints are refused (see [`Self::allow_private_endpoints`]); build `client`
    /// with [`crate::outbound::guarded_client`] to have host names checked where they resolve.
    pub fn new(client: reqwest::Client, auth: Arc<AuthInjector>) -> Self {
        Self {
            client,
            auth,
            allow_private_endpoints: false,
        }
    }

    /// Allows literal non-public IP endpoints (loopback, private networks, CGNAT,
    /// link-local); cloud metadata addresses stay blocked.
    pub fn allow_private_endpoints(mut self, allow: bool) -> Self {
        self.allow_private_endpoints = allow;
        self
    }
}

#[async_trait]
impl ToolExecutor for HttpToolExecutor {
    async fn execute(&self, invocation: ToolInvocation) -> Result<ToolOutput, ToolError> {
        let started = Instant::now();
        let name = tool_name(&invocation).to_string();
        let spec = tool_spec(&invocation)?;
        if !matches!(spec.tool_type.as_str(), "" | "http") {
            return Err(tool_error(
                ToolErrorCode::UnsupportedTool,
                format!(
                    "unsupported tool type {:?} for the http backend (tool {name:?})",
                    spec.tool_type
                ),
            ));
        }
        if spec.endpoint.trim().is_empty() {
            return Err(tool_error(
                ToolErrorCode::RuntimePolicyInvalid,
                format!("tool {name:?} has no endpoint"),
            ));
        }
        check_endpoint(&spec.endpoint, self.allow_private_endpoints)?;
        let auth = self
            .auth
            .resolve(&invocation.namespace, spec.auth.as_ref())
            .await?;
        let timeout = if invocation.timeout.is_zero() {
            DEFAULT_HTTP_TIMEOUT
        } else {
            invocation.timeout
        };
        let mut request = self
            .client
            .post(spec.endpoint.trim())
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(invocation.input.clone());
        if let Some(auth) = &auth {
            let (header, value) = auth.header();
            request = request.header(header, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&name, &e))?;
        let status = response.status().as_u16();
        let body = read_body_limited(&name, response).await?;
        if status >= 400 {
            return Err(http_status_error(&name, status, &body));
        }
        let result = unwrap_body(&body)?;
        Ok(ToolOutput {
            result,
            duration: started.elapsed(),
        })
    }
}

/// A contract response's result (or error), else the trimmed body.
pub(crate) fn unwrap_body(body: &str) -> Result<String, ToolError> {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body)
        && let Some(outcome) = super::safety::unwrap_contract_response(&value)
    {
        return outcome;
    }
    Ok(body.trim().to_string())
}
