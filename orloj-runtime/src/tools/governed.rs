//! The governed runtime (spec runtime §9.1): authorization, routing by tool type and
//! isolation mode, a hard per-attempt timeout, retry with capped exponential backoff and
//! deterministic jitter, and cancellation — around every executor.

use super::auth::AuthInjector;
use super::container::{ContainerConfig, ContainerToolExecutor};
use super::external::{ExternalToolExecutor, WebhookCallbackToolExecutor};
use super::http::HttpToolExecutor;
use super::safety::{tool_error, tool_guard};
use super::secrets::SecretResolver;
use super::tool_spec;
use async_trait::async_trait;
use orloj_core::Clock;
use orloj_core::resources::{ToolRetry, ToolSpec, parse_duration};
use orloj_core::tool::{ToolError, ToolErrorCode, ToolExecutor, ToolInvocation, ToolOutput};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Per-attempt timeout when the Tool sets none.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// Backoff cap when the Tool sets none.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A governance verdict for one tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Run the call.
    Allow,
    /// Refuse it (status `denied`, `permission_denied`); the text says why.
    Deny(String),
    /// Hold it until a human approves (`approval_pending`); the text says why.
    ApprovalRequired(String),
}

/// Decides whether a tool call may run (agent roles, ToolPermissions, approvals: spec §8.2).
#[async_trait]
pub trait ToolAuthorizer: Send + Sync {
    /// The verdict for `invocation`.
    async fn authorize(&self, invocation: &ToolInvocation) -> Authorization;
}

/// Allows every call; the default authorizer.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

#[async_trait]
impl ToolAuthorizer for AllowAll {
    async fn authorize(&self, _invocation: &ToolInvocation) -> Authorization {
        Authorization::Allow
    }
}

/// Jitter applied to retry delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// The plain delay.
    #[default]
    None,
    /// `delay × f`.
    Full,
    /// `delay/2 + delay/2 × f`.
    Equal,
}

/// Retry settings of one tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts including the first (≥ 1).
    pub max_attempts: u32,
    /// First delay.
    pub backoff: Duration,
    /// Delay cap.
    pub max_backoff: Duration,
    /// Jitter mode.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            backoff: Duration::ZERO,
            max_backoff: DEFAULT_MAX_BACKOFF,
            jitter: Jitter::None,
        }
    }
}

impl RetryPolicy {
    /// The policy of `Tool.spec.runtime.retry`; malformed values are `runtime_policy_invalid`.
    pub fn from_spec(retry: &ToolRetry) -> Result<Self, ToolError> {
        let duration = |field: &str, value: &str, default: Duration| {
            if value.trim().is_empty() {
                return Ok(default);
            }
            parse_duration(value).map_err(|e| {
                tool_error(
                    ToolErrorCode::RuntimePolicyInvalid,
                    format!("runtime.retry.{field}: {e}"),
                )
            })
        };
        let jitter = match retry.jitter.trim() {
            "" | "none" => Jitter::None,
            "full" => Jitter::Full,
            "equal" => Jitter::Equal,
            other => {
                return Err(tool_error(
                    ToolErrorCode::RuntimePolicyInvalid,
                    format!("runtime.retry.jitter: unsupported value {other:?}"),
                ));
            }
        };
        Ok(Self {
            max_attempts: u32::try_from(retry.max_attempts.max(1)).unwrap_or(u32::MAX),
            backoff: duration("backoff", &retry.backoff, Duration::ZERO)?,
            max_backoff: duration("max_backoff", &retry.max_backoff, DEFAULT_MAX_BACKOFF)?,
            jitter,
        })
    }

    /// The wait after failed attempt `attempt` (1-based): `backoff × 2^(attempt−1)` (exponent
    /// ≤ 10) capped at `max_backoff`, then jittered with the deterministic factor
    /// `FNV-32a(tool + ":<attempt>") mod 10000 / 10000`.
    pub fn delay(&self, tool: &str, attempt: u32) -> Duration {
        if self.backoff.is_zero() {
            return Duration::ZERO;
        }
        let exp = attempt.saturating_sub(1).min(10);
        let mut delay = self.backoff.saturating_mul(1u32 << exp);
        if !self.max_backoff.is_zero() && delay > self.max_backoff {
            delay = self.max_backoff;
        }
        let factor = f64::from(fnv32a(format!("{tool}:{attempt}").as_bytes()) % 10_000) / 10_000.0;
        match self.jitter {
            Jitter::None => delay,
            Jitter::Full => delay.mul_f64(factor),
            Jitter::Equal => {
                let half = delay / 2;
                half + half.mul_f64(factor)
            }
        }
    }
}

/// 32-bit FNV-1a.
pub fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Settings of [`GovernedToolRuntime::standard`]; mirrors the daemons' tool flags.
#[derive(Debug, Clone, Default)]
pub struct ToolRuntimeConfig {
    /// The process-wide isolation backend for non-`none` modes (`--tool-isolation-backend
    /// container`); `None` makes those tools fail with `isolation_unavailable`.
    pub container: Option<ContainerConfig>,
    /// Allow HTTP-based backends to reach non-public addresses (loopback, private networks,
    /// CGNAT, link-local); cloud metadata stays refused. See [`crate::outbound`].
    pub allow_private_endpoints: bool,
}

/// Wraps the executors so that no tool call skips governance, timeout or retry.
///
/// Call order: empty tool name → `invalid_input`; authorize (deny → `permission_denied`,
/// approval → `approval_pending`); route (an executor registered for the tool type, `mcp` →
/// `isolation_unavailable` unless registered, isolation `none` → the HTTP executor, any other
/// mode → the isolation backend or `isolation_unavailable`); then attempts bounded by the
/// per-attempt timeout, retried while retryable.
#[derive(Clone)]
pub struct GovernedToolRuntime {
    http: Arc<dyn ToolExecutor>,
    isolation: Option<Arc<dyn ToolExecutor>>,
    by_type: HashMap<String, Arc<dyn ToolExecutor>>,
    authorizer: Arc<dyn ToolAuthorizer>,
}

impl GovernedToolRuntime {
    /// A runtime whose `isolation_mode: none` tools run on `http`, with no isolation backend
    /// and the allow-all authorizer.
    pub fn new(http: Arc<dyn ToolExecutor>) -> Self {
        Self {
            http,
            isolation: None,
            by_type: HashMap::new(),
            authorizer: Arc::new(AllowAll),
        }
    }

    /// The stock wiring: HTTP, external and webhook-callback executors sharing one client and
    /// one [`AuthInjector`] (secrets from `secrets`, OAuth2 token expiry timed by `clock`),
    /// plus the container backend when configured. The client is guarded
    /// ([`crate::outbound`]): host names resolving to non-public addresses are refused unless
    /// `config.allow_private_endpoints`.
    pub fn standard(
        config: ToolRuntimeConfig,
        secrets: Arc<dyn SecretResolver>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ToolError> {
        let private = config.allow_private_endpoints;
        let client = crate::outbound::guarded_client(tool_guard(private)).map_err(|e| {
            tool_error(
                ToolErrorCode::RuntimePolicyInvalid,
                format!("building the tool HTTP client: {e}"),
            )
        })?;
        let auth = Arc::new(AuthInjector::new(secrets, client.clone(), clock));
        let http =
            HttpToolExecutor::new(client.clone(), auth.clone()).allow_private_endpoints(private);
        let mut runtime = Self::new(Arc::new(http))
            .with_type_executor(
                "external",
                Arc::new(ExternalToolExecutor::new(
                    client.clone(),
                    auth.clone(),
                    private,
                )),
            )
            .with_type_executor(
                "webhook-callback",
                Arc::new(WebhookCallbackToolExecutor::new(
                    client,
                    auth.clone(),
                    private,
                )),
            );
        if let Some(container) = config.container {
            runtime = runtime
                .with_isolation_backend(Arc::new(ContainerToolExecutor::new(container, auth)));
        }
        Ok(runtime)
    }

    /// Sets the backend of every non-`none` isolation mode.
    pub fn with_isolation_backend(mut self, backend: Arc<dyn ToolExecutor>) -> Self {
        self.isolation = Some(backend);
        self
    }

    /// Runs every tool of `tool_type` (e.g. `mcp`, `cli`, `external`) on `executor`,
    /// whatever its isolation mode.
    pub fn with_type_executor(
        mut self,
        tool_type: impl Into<String>,
        executor: Arc<dyn ToolExecutor>,
    ) -> Self {
        self.by_type.insert(tool_type.into(), executor);
        self
    }

    /// Sets the authorizer consulted before every call.
    pub fn with_authorizer(mut self, authorizer: Arc<dyn ToolAuthorizer>) -> Self {
        self.authorizer = authorizer;
        self
    }

    /// The executor for `spec`.
    fn route(&self, name: &str, spec: &ToolSpec) -> Result<Arc<dyn ToolExecutor>, ToolError> {
        let tool_type = match spec.tool_type.trim() {
            "" => "http",
            t => t,
        };
        if let Some(executor) = self.by_type.get(tool_type) {
            return Ok(executor.clone());
        }
        if tool_type == "mcp" {
            return Err(tool_error(
                ToolErrorCode::IsolationUnavailable,
                format!("mcp runtime unavailable for tool {name:?}"),
            ));
        }
        match spec.runtime.isolation_mode.trim() {
            "" | "none" => Ok(self.http.clone()),
            mode => self.isolation.clone().ok_or_else(|| {
                tool_error(
                    ToolErrorCode::IsolationUnavailable,
                    format!(
                        "isolation runtime unavailable: tool {name:?} needs isolation_mode {mode} but no isolation backend is configured"
                    ),
                )
            }),
        }
    }

    /// Runs `invocation` under governance, timeout and retry; `cancel` aborts the call (and
    /// any backoff wait) with `canceled`.
    pub async fn execute_cancellable(
        &self,
        mut invocation: ToolInvocation,
        cancel: &CancellationToken,
    ) -> Result<ToolOutput, ToolError> {
        let name = invocation.tool.metadata.name.trim().to_string();
        if name.is_empty() {
            return Err(tool_error(
                ToolErrorCode::InvalidInput,
                "tool name is required",
            ));
        }
        match self.authorizer.authorize(&invocation).await {
            Authorization::Allow => {}
            Authorization::Deny(why) => {
                return Err(tool_error(
                    ToolErrorCode::PermissionDenied,
                    format!("tool permission denied: tool={name} {why}"),
                ));
            }
            Authorization::ApprovalRequired(why) => {
                return Err(tool_error(
                    ToolErrorCode::ApprovalPending,
                    format!("tool approval required: tool={name} {why}"),
                ));
            }
        }
        let spec = tool_spec(&invocation)?;
        let executor = self.route(&name, &spec)?;
        let policy = RetryPolicy::from_spec(&spec.runtime.retry)?;
        let mut timeout = match spec.runtime.timeout.trim() {
            "" => DEFAULT_TOOL_TIMEOUT,
            t => parse_duration(t).map_err(|e| {
                tool_error(
                    ToolErrorCode::RuntimePolicyInvalid,
                    format!("tool {name:?} runtime.timeout: {e}"),
                )
            })?,
        };
        if timeout.is_zero() {
            timeout = DEFAULT_TOOL_TIMEOUT;
        }
        if !invocation.timeout.is_zero() {
            timeout = timeout.min(invocation.timeout);
        }
        invocation.timeout = timeout;

        let mut attempt = 0;
        let last_error = loop {
            attempt += 1;
            let mut this = invocation.clone();
            this.attempt = attempt;
            // The attempt runs as its own task so that the deadline holds even when the
            // backend blocks instead of yielding; the guard aborts it on timeout or cancel.
            let attempt_executor = executor.clone();
            let task = AbortOnDrop(tokio::spawn(
                async move { attempt_executor.execute(this).await },
            ));
            let outcome = tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(canceled(&name)),
                out = tokio::time::timeout(timeout, task.join()) => match out {
                    Ok(Ok(result)) => result,
                    Ok(Err(join)) => Err(tool_error(
                        ToolErrorCode::ExecutionFailed,
                        format!("tool {name:?} executor failed: {join}"),
                    )),
                    Err(_) => Err(tool_error(
                        ToolErrorCode::Timeout,
                        format!("tool {name:?} timed out after {timeout:?}"),
                    )),
                },
            };
            let err = match outcome {
                Ok(output) => return Ok(output),
                Err(e) => e,
            };
            if !err.retryable || attempt >= policy.max_attempts {
                break err;
            }
            let delay = policy.delay(&name, attempt);
            tracing::debug!(tool = %name, attempt, ?delay, error = %err, "retrying tool call");
            if !delay.is_zero() {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break canceled(&name),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        };
        let mut err = last_error;
        err.message = format!(
            "tool {name:?} failed after {attempt} attempt(s): {}",
            err.message
        );
        Err(err)
    }
}

/// Aborts a spawned attempt when the waiter goes away.
struct AbortOnDrop(tokio::task::JoinHandle<Result<ToolOutput, ToolError>>);

impl AbortOnDrop {
    async fn join(mut self) -> Result<Result<ToolOutput, ToolError>, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn canceled(name: &str) -> ToolError {
    tool_error(
        ToolErrorCode::Canceled,
        format!("tool {name:?} call was canceled"),
    )
}

#[async_trait]
impl ToolExecutor for GovernedToolRuntime {
    async fn execute(&self, invocation: ToolInvocation) -> Result<ToolOutput, ToolError> {
        self.execute_cancellable(invocation, &CancellationToken::new())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn backoff_is_exponential_capped_and_jittered() {
        let mut p = RetryPolicy {
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            jitter: Jitter::None,
        };
        assert_eq!(p.delay("t", 1), Duration::from_millis(100));
        assert_eq!(p.delay("t", 2), Duration::from_millis(200));
        assert_eq!(p.delay("t", 3), Duration::from_millis(350));
        assert_eq!(p.delay("t", 40), Duration::from_millis(350));

        let f = f64::from(fnv32a(b"t:2") % 10_000) / 10_000.0;
        p.jitter = Jitter::Full;
        assert_eq!(p.delay("t", 2), Duration::from_millis(200).mul_f64(f));
        p.jitter = Jitter::Equal;
        assert_eq!(
            p.delay("t", 2),
            Duration::from_millis(100) + Duration::from_millis(100).mul_f64(f)
        );
        // Deterministic: same tool and attempt, same delay.
        assert_eq!(p.delay("t", 2), p.delay("t", 2));

        p.backoff = Duration::ZERO;
        assert_eq!(p.delay("t", 3), Duration::ZERO);
    }

    #[test]
    fn policy_from_spec() {
        let p = RetryPolicy::from_spec(&ToolRetry {
            max_attempts: 3,
            backoff: "1s".into(),
            max_backoff: "".into(),
            jitter: "equal".into(),
        })
        .expect("valid");
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.backoff, Duration::from_secs(1));
        assert_eq!(p.max_backoff, DEFAULT_MAX_BACKOFF);
        assert_eq!(p.jitter, Jitter::Equal);
        let bad = RetryPolicy::from_spec(&ToolRetry {
            jitter: "wild".into(),
            ..Default::default()
        })
        .expect_err("bad jitter");
        assert_eq!(bad.code, ToolErrorCode::RuntimePolicyInvalid);
    }
}
