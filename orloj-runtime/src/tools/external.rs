//! Backends that speak the tool contract v1 to a remote service (spec runtime §9.4):
//! [`ExternalToolExecutor`] (synchronous) and [`WebhookCallbackToolExecutor`] (accepted with
//! 202, then polled or called back).

use super::auth::AuthInjector;
use super::contract::request_for;
use super::safety::{
    check_endpoint, excerpt, http_status_error, tool_error, transport_error,
    unwrap_contract_response,
};
use super::{read_body_limited, tool_name, tool_spec};
use async_trait::async_trait;
use orloj_core::resources::ToolSpec;
use orloj_core::tool::{ToolError, ToolErrorCode, ToolExecutor, ToolInvocation, ToolOutput};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Client timeout of external calls when the invocation carries none.
pub const DEFAULT_EXTERNAL_TIMEOUT: Duration = Duration::from_secs(60);
/// Poll interval of webhook-callback results.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Everything the two contract backends share.
struct ContractClient {
    client: reqwest::Client,
    auth: Arc<AuthInjector>,
    allow_private_endpoints: bool,
}

impl ContractClient {
    /// Checks type and endpoint, resolves auth, and builds the POST of the v1 request.
    async fn prepare(
        &self,
        invocation: &ToolInvocation,
        backend: &str,
        own_type: &str,
        id_prefix: &str,
    ) -> Result<(ToolSpec, String, reqwest::RequestBuilder), ToolError> {
        let name = tool_name(invocation);
        let spec = tool_spec(invocation)?;
        if !matches!(spec.tool_type.as_str(), "" | "http") && spec.tool_type != own_type {
            return Err(tool_error(
                ToolErrorCode::UnsupportedTool,
                format!(
                    "unsupported tool type {:?} for the {backend} backend (tool {name:?})",
                    spec.tool_type
                ),
            ));
        }
        let endpoint = spec.endpoint.trim().to_string();
        if endpoint.is_empty() {
            return Err(tool_error(
                ToolErrorCode::RuntimePolicyInvalid,
                format!("tool {name:?} has no endpoint"),
            ));
        }
        check_endpoint(&endpoint, self.allow_private_endpoints)?;
        let auth = self
            .auth
            .resolve(&invocation.namespace, spec.auth.as_ref())
            .await?;
        // The caller's request id keeps the remote side traceable to the task; the reference's
        // `<prefix>-<tool>-<unixnano>` is only the fallback.
        let request_id = if invocation.request_id.trim().is_empty() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            format!("{id_prefix}-{name}-{nanos}")
        } else {
            invocation.request_id.clone()
        };
        let body = request_for(invocation, &spec, backend, &request_id);
        let mut request = self
            .client
            .post(&endpoint)
            .header("X-Tool-Contract-Version", "v1")
            .json(&body);
        if let Some(auth) = &auth {
            let (header, value) = auth.header();
            request = request.header(header, value);
        }
        Ok((spec, request_id, request))
    }
}

/// Parses a body that must be a contract response.
fn parse_contract(tool: &str, status: u16, body: &str) -> Result<String, ToolError> {
    let parsed = serde_json::from_str::<Value>(body).ok();
    if let Some(outcome) = parsed.as_ref().and_then(unwrap_contract_response) {
        return outcome;
    }
    if status >= 400 {
        return Err(http_status_error(tool, status, body));
    }
    Err(tool_error(
        ToolErrorCode::ExecutionFailed,
        format!(
            "tool {tool:?} returned an invalid contract response: {}",
            excerpt(body)
        ),
    ))
}

fn timeout_of(invocation: &ToolInvocation) -> Duration {
    if invocation.timeout.is_zero() {
        DEFAULT_EXTERNAL_TIMEOUT
    } else {
        invocation.timeout
    }
}

/// POSTs a full v1 request (header `X-Tool-Contract-Version: v1`) to the Tool's endpoint and
/// requires a contract response; anything else is a retryable `execution_failed`.
pub struct ExternalToolExecutor {
    inner: ContractClient,
}

impl ExternalToolExecutor {
    /// An executor using `client` and `auth`; literal private IPs are refused unless
    /// `allow_private_endpoints`.
    pub fn new(
        client: reqwest::Client,
        auth: Arc<AuthInjector>,
        allow_private_endpoints: bool,
    ) -> Self {
        Self {
            inner: ContractClient {
                client,
                auth,
                allow_private_endpoints,
            },
        }
    }
}

#[async_trait]
impl ToolExecutor for ExternalToolExecutor {
    async fn execute(&self, invocation: ToolInvocation) -> Result<ToolOutput, ToolError> {
        let started = Instant::now();
        let name = tool_name(&invocation).to_string();
        let (_, _, request) = self
            .inner
            .prepare(&invocation, "external", "external", "ext")
            .await?;
        let response = request
            .timeout(timeout_of(&invocation))
            .send()
            .await
            .map_err(|e| transport_error(&name, &e))?;
        let status = response.status().as_u16();
        let body = read_body_limited(&name, response).await?;
        let result = parse_contract(&name, status, &body)?;
        Ok(ToolOutput {
            result,
            duration: started.elapsed(),
        })
    }
}

type Pending = Mutex<HashMap<String, oneshot::Sender<Value>>>;

/// POSTs a v1 request; `200` carries the contract response, `202` means accepted: the result
/// is then polled with `GET <endpoint>/<request_id>` (`202`/`204` = still pending, transport
/// errors ignored) or pushed through [`WebhookCallbackToolExecutor::deliver`], until a contract
/// response arrives or the invocation's timeout passes (`timeout`, retryable).
pub struct WebhookCallbackToolExecutor {
    inner: ContractClient,
    poll_interval: Duration,
    pending: Arc<Pending>,
}

impl WebhookCallbackToolExecutor {
    /// An executor using `client` and `auth`, polling every 2 seconds.
    pub fn new(
        client: reqwest::Client,
        auth: Arc<AuthInjector>,
        allow_private_endpoints: bool,
    ) -> Self {
        Self {
            inner: ContractClient {
                client,
                auth,
                allow_private_endpoints,
            },
            poll_interval: DEFAULT_POLL_INTERVAL,
            pending: Arc::default(),
        }
    }

    /// Sets the poll interval.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Delivers a pushed contract response for `request_id` (e.g. from a callback endpoint).
    /// Returns whether a call was waiting for it.
    pub fn deliver(&self, request_id: &str, response: Value) -> bool {
        let sender = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(request_id);
        sender.is_some_and(|s| s.send(response).is_ok())
    }

    async fn poll(&self, tool: &str, url: &str, timeout: Duration) -> Option<Value> {
        let response = self
            .inner
            .client
            .get(url)
            .timeout(timeout.min(Duration::from_secs(30)))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        if matches!(status, 202 | 204) {
            return None;
        }
        let body = read_body_limited(tool, response).await.ok()?;
        let value = serde_json::from_str::<Value>(&body).ok()?;
        unwrap_contract_response(&value).map(|_| value)
    }
}

/// Removes a pending callback slot when the call ends, whatever way it ends.
struct PendingGuard {
    pending: Arc<Pending>,
    id: String,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

#[async_trait]
impl ToolExecutor for WebhookCallbackToolExecutor {
    async fn execute(&self, invocation: ToolInvocation) -> Result<ToolOutput, ToolError> {
        let started = Instant::now();
        let name = tool_name(&invocation).to_string();
        let timeout = timeout_of(&invocation);
        let deadline = tokio::time::Instant::now() + timeout;
        let (spec, request_id, request) = self
            .inner
            .prepare(&invocation, "webhook-callback", "webhook-callback", "wh")
            .await?;
        let (tx, mut rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(request_id.clone(), tx);
        let _guard = PendingGuard {
            pending: self.pending.clone(),
            id: request_id.clone(),
        };
        let response = request
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport_error(&name, &e))?;
        let status = response.status().as_u16();
        let body = read_body_limited(&name, response).await?;
        if status != 202 {
            let result = parse_contract(&name, status, &body)?;
            return Ok(ToolOutput {
                result,
                duration: started.elapsed(),
            });
        }
        let poll_url = format!(
            "{}/{request_id}",
            spec.endpoint.trim().trim_end_matches('/')
        );
        let timed_out = || {
            tool_error(
                ToolErrorCode::Timeout,
                format!("tool {name:?} callback did not arrive within {timeout:?}"),
            )
        };
        let mut ticker = tokio::time::interval(self.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let value = loop {
            tokio::select! {
                pushed = &mut rx => match pushed {
                    Ok(v) => break v,
                    Err(_) => return Err(timed_out()),
                },
                _ = tokio::time::sleep_until(deadline) => return Err(timed_out()),
                _ = ticker.tick() => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if let Some(v) = self.poll(&name, &poll_url, left).await {
                        break v;
                    }
                }
            }
        };
        let result = unwrap_contract_response(&value).unwrap_or_else(|| {
            Err(tool_error(
                ToolErrorCode::ExecutionFailed,
                format!("tool {name:?} callback is not a contract response"),
            ))
        })?;
        Ok(ToolOutput {
            result,
            duration: started.elapsed(),
        })
    }
}
