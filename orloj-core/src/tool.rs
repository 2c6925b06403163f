//! The tool runtime trait: [`ToolExecutor`] runs one tool invocation under the tool contract v1
//! (spec runtime §9.2). Executors live in orloj-runtime; governance, timeout, retry and secret
//! injection wrap every executor.

use crate::object::Object;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The only contract version.
pub const TOOL_CONTRACT_VERSION: &str = "v1";

/// Error codes of the taxonomy (spec runtime §9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolErrorCode {
    /// Empty name, bad contract version, missing request id.
    InvalidInput,
    /// Tool not found or not runnable by this backend.
    UnsupportedTool,
    /// Misconfiguration: missing endpoint, blocked endpoint, bad auth config.
    RuntimePolicyInvalid,
    /// The isolation the tool needs is not available.
    IsolationUnavailable,
    /// Governance denied the call.
    PermissionDenied,
    /// A secret could not be resolved.
    SecretResolutionFailed,
    /// The call ran out of time.
    Timeout,
    /// The call was cancelled.
    Canceled,
    /// The backend failed.
    ExecutionFailed,
    /// HTTP 401.
    AuthInvalid,
    /// HTTP 403.
    AuthForbidden,
    /// The call waits for a human approval.
    ApprovalPending,
}

impl ToolErrorCode {
    /// The code as written in envelopes (`execution_failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::UnsupportedTool => "unsupported_tool",
            Self::RuntimePolicyInvalid => "runtime_policy_invalid",
            Self::IsolationUnavailable => "isolation_unavailable",
            Self::PermissionDenied => "permission_denied",
            Self::SecretResolutionFailed => "secret_resolution_failed",
            Self::Timeout => "timeout",
            Self::Canceled => "canceled",
            Self::ExecutionFailed => "execution_failed",
            Self::AuthInvalid => "auth_invalid",
            Self::AuthForbidden => "auth_forbidden",
            Self::ApprovalPending => "approval_pending",
        }
    }

    /// The default reason (`tool_backend_failure` for `execution_failed`, else `tool_<code>`).
    pub fn default_reason(self) -> &'static str {
        match self {
            Self::InvalidInput => "tool_invalid_input",
            Self::UnsupportedTool => "tool_unsupported",
            Self::RuntimePolicyInvalid => "tool_runtime_policy_invalid",
            Self::IsolationUnavailable => "tool_isolation_unavailable",
            Self::PermissionDenied => "tool_permission_denied",
            Self::SecretResolutionFailed => "tool_secret_resolution_failed",
            Self::Timeout => "tool_execution_timeout",
            Self::Canceled => "tool_execution_canceled",
            Self::ExecutionFailed => "tool_backend_failure",
            Self::AuthInvalid => "tool_auth_invalid",
            Self::AuthForbidden => "tool_auth_forbidden",
            Self::ApprovalPending => "tool_approval_pending",
        }
    }

    /// Whether the taxonomy calls this code retryable by default.
    pub fn default_retryable(self) -> bool {
        matches!(self, Self::Timeout | Self::ExecutionFailed)
    }
}

/// A structured tool error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolError {
    /// Taxonomy code.
    pub code: ToolErrorCode,
    /// Machine-readable reason (`tool_backend_failure`, `agent_contract_violation`, ...).
    pub reason: String,
    /// Whether retrying may succeed.
    pub retryable: bool,
    /// Human-readable message (secrets redacted).
    pub message: String,
    /// Extra detail, e.g. `http_status`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub details: std::collections::BTreeMap<String, String>,
}

impl ToolError {
    /// An error with the code's default reason and retryability.
    pub fn new(code: ToolErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: code.default_reason().to_string(),
            retryable: code.default_retryable(),
            message: message.into(),
            details: Default::default(),
        }
    }
}

impl std::fmt::Display for ToolError {
    /// `tool_status=error tool_code=<c> tool_reason=<r> retryable=<b> message=<m> [k=v …]`,
    /// the text form controllers parse back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = if self.code == ToolErrorCode::PermissionDenied {
            "denied"
        } else {
            "error"
        };
        write!(
            f,
            "tool_status={status} tool_code={} tool_reason={} retryable={} message={}",
            self.code.as_str(),
            self.reason,
            self.retryable,
            self.message
        )?;
        for (k, v) in &self.details {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// One tool invocation.
#[derive(Debug, Clone)]
pub struct ToolInvocation {
    /// `<ns>/<agent>/s<step:03>/<tool>`.
    pub request_id: String,
    /// Task as `namespace/name`.
    pub task_id: String,
    /// Namespace of the task.
    pub namespace: String,
    /// Calling agent.
    pub agent: String,
    /// The Tool resource (normalized; `spec` holds type, endpoint, runtime, auth).
    pub tool: Object,
    /// Raw input from the model.
    pub input: String,
    /// 1-based attempt.
    pub attempt: u32,
    /// Deadline for this attempt.
    pub timeout: Duration,
}

/// A successful result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    /// The result text (`output.result` of the envelope).
    pub result: String,
    /// How long the call took.
    pub duration: Duration,
}

/// Runs one tool invocation. Implementations honour `timeout` even if the backend does not, map
/// failures to the taxonomy, and never panic on backend output.
#[async_trait]
pub trait ToolExecutor: Send + Sync {
    /// Executes the call.
    async fn execute(&self, invocation: ToolInvocation) -> Result<ToolOutput, ToolError>;
}
