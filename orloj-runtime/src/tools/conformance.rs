//! The tool-contract conformance suite (spec runtime §13.3). Every [`ToolExecutor`] — a bare
//! backend or the [`GovernedToolRuntime`](super::GovernedToolRuntime) — runs the cases that
//! apply to it: each case sends a contract request through [`run_contract`], validates the
//! response envelope ([`validate_response`]) and checks status, code, reason, retryability and
//! (optionally) latency.
//!
//! ```no_run
//! # async fn demo(executor: std::sync::Arc<dyn orloj_core::tool::ToolExecutor>, tool: orloj_core::Object) {
//! use orloj_runtime::tools::conformance::{Case, run_case};
//! run_case(executor.as_ref(), Case::success(tool.clone())).await.unwrap();
//! run_case(executor.as_ref(), Case::unknown_version(tool)).await.unwrap();
//! # }
//! ```

use super::contract::{
    ContractRequest, ContractResponse, ContractTool, ContractTrace, run_contract, validate_response,
};
use orloj_core::Object;
use orloj_core::tool::{TOOL_CONTRACT_VERSION, ToolErrorCode, ToolExecutor};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The expected outcome of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// `ok`, `error` or `denied`.
    pub status: &'static str,
    /// Error code (errors only).
    pub code: Option<ToolErrorCode>,
    /// Error reason; `None` means the code's default reason.
    pub reason: Option<String>,
    /// Retryability; `None` means the code's default.
    pub retryable: Option<bool>,
}

impl Expected {
    /// Status `ok`.
    pub fn ok() -> Self {
        Self {
            status: "ok",
            code: None,
            reason: None,
            retryable: None,
        }
    }

    /// Status `error` with `code`, its default reason, and `retryable`.
    pub fn error(code: ToolErrorCode, retryable: bool) -> Self {
        Self {
            status: if code == ToolErrorCode::PermissionDenied {
                "denied"
            } else {
                "error"
            },
            code: Some(code),
            reason: Some(code.default_reason().to_string()),
            retryable: Some(retryable),
        }
    }
}

/// One conformance case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Case name (used in failure messages).
    pub name: String,
    /// Tools the executor may be asked for (by name).
    pub tools: Vec<Object>,
    /// The request.
    pub request: ContractRequest,
    /// Per-call timeout handed to the executor.
    pub timeout: Duration,
    /// Cancel the call right after it starts.
    pub cancel_immediately: bool,
    /// The response must arrive within this time.
    pub max_latency: Option<Duration>,
    /// Expected outcome.
    pub expect: Expected,
}

/// The base request of the suite for tool `tool`: version v1, namespace `default`, agent
/// `research-agent`, operation `invoke`, input_raw `tool=<t> payload`, trace
/// `default/task/a001` with span = request id, attempt 1.
pub fn base_request(tool: &str, request_id: &str) -> ContractRequest {
    ContractRequest {
        tool_contract_version: TOOL_CONTRACT_VERSION.into(),
        request_id: request_id.into(),
        task_id: "default/task".into(),
        namespace: "default".into(),
        agent: "research-agent".into(),
        tool: ContractTool {
            name: tool.into(),
            operation: "invoke".into(),
            ..Default::default()
        },
        input_raw: format!("tool={tool} payload"),
        trace: ContractTrace {
            trace_id: "default/task/a001".into(),
            span_id: request_id.into(),
        },
        attempt: 1,
        ..Default::default()
    }
}

impl Case {
    /// A case calling `tool` with the base request, expecting `expect`.
    pub fn new(name: impl Into<String>, tool: Object, expect: Expected) -> Self {
        let name = name.into();
        let request = base_request(&tool.metadata.name, &format!("conformance-{name}"));
        Self {
            name,
            tools: vec![tool],
            request,
            timeout: Duration::from_secs(5),
            cancel_immediately: false,
            max_latency: None,
            expect,
        }
    }

    /// A working tool answers `ok`.
    pub fn success(tool: Object) -> Self {
        Self::new("success", tool, Expected::ok())
    }

    /// Contract version `v9` → `invalid_input`, non-retryable.
    pub fn unknown_version(tool: Object) -> Self {
        let mut case = Self::new(
            "unknown-version",
            tool,
            Expected::error(ToolErrorCode::InvalidInput, false),
        );
        case.request.tool_contract_version = "v9".into();
        case
    }

    /// A tool name nobody registered → `unsupported_tool`, non-retryable.
    pub fn unknown_tool(tool: Object) -> Self {
        let mut case = Self::new(
            "unknown-tool",
            tool,
            Expected::error(ToolErrorCode::UnsupportedTool, false),
        );
        case.request.tool.name = "no-such-tool".into();
        case
    }

    /// A tool without endpoint → `runtime_policy_invalid`, non-retryable.
    pub fn missing_endpoint(mut tool: Object) -> Self {
        if let Some(spec) = tool.spec.as_object_mut() {
            spec.remove("endpoint");
        }
        Self::new(
            "missing-endpoint",
            tool,
            Expected::error(ToolErrorCode::RuntimePolicyInvalid, false),
        )
    }

    /// A tool of a type the backend cannot run (`type_name`) → `unsupported_tool`.
    pub fn unsupported_type(mut tool: Object, type_name: &str) -> Self {
        if let Some(spec) = tool.spec.as_object_mut() {
            spec.insert("type".into(), type_name.into());
        }
        Self::new(
            "unsupported-type",
            tool,
            Expected::error(ToolErrorCode::UnsupportedTool, false),
        )
    }

    /// A tool whose `auth.secretRef` cannot be resolved → `secret_resolution_failed`.
    pub fn unresolvable_secret(mut tool: Object) -> Self {
        if let Some(spec) = tool.spec.as_object_mut() {
            spec.insert(
                "auth".into(),
                serde_json::json!({"profile": "bearer", "secretRef": "conformance-missing-secret"}),
            );
        }
        Self::new(
            "secret-resolution",
            tool,
            Expected::error(ToolErrorCode::SecretResolutionFailed, false),
        )
    }

    /// A call to a slow `tool` with a `timeout` deadline must end as `timeout` (retryable)
    /// within `max_latency`.
    pub fn bounded_timeout(tool: Object, timeout: Duration, max_latency: Duration) -> Self {
        let mut case = Self::new(
            "bounded-timeout",
            tool,
            Expected::error(ToolErrorCode::Timeout, true),
        );
        case.timeout = timeout;
        case.max_latency = Some(max_latency);
        case
    }

    /// A call cancelled at once ends as `canceled` (non-retryable) within 80ms.
    pub fn canceled(tool: Object) -> Self {
        let mut case = Self::new(
            "canceled",
            tool,
            Expected::error(ToolErrorCode::Canceled, false),
        );
        case.cancel_immediately = true;
        case.max_latency = Some(Duration::from_millis(80));
        case
    }

    /// Governance refuses the tool → `denied` / `permission_denied`, non-retryable.
    pub fn denied(tool: Object) -> Self {
        Self::new(
            "denied",
            tool,
            Expected::error(ToolErrorCode::PermissionDenied, false),
        )
    }
}

/// Runs one case; `Err` says what did not conform.
pub async fn run_case(executor: &dyn ToolExecutor, case: Case) -> Result<ContractResponse, String> {
    let tools: HashMap<String, Object> = case
        .tools
        .iter()
        .map(|t| (t.metadata.name.clone(), t.clone()))
        .collect();
    let cancel = CancellationToken::new();
    if case.cancel_immediately {
        cancel.cancel();
    }
    let started = Instant::now();
    // The harness bounds every case so that a hanging executor fails instead of hanging.
    let bound = case.timeout.saturating_mul(4).max(Duration::from_secs(10));
    let response = tokio::time::timeout(
        bound,
        run_contract(executor, &tools, case.request.clone(), case.timeout, cancel),
    )
    .await
    .map_err(|_| format!("case {}: no response within {bound:?}", case.name))?;
    let elapsed = started.elapsed();
    let fail = |why: String| Err(format!("case {}: {why}; response {response:?}", case.name));
    if let Err(why) = validate_response(&case.request, &response) {
        return fail(format!("invalid envelope: {why}"));
    }
    if let Some(max) = case.max_latency
        && elapsed > max
    {
        return fail(format!("took {elapsed:?}, more than {max:?}"));
    }
    if response.status != case.expect.status {
        return fail(format!(
            "status {:?}, expected {:?}",
            response.status, case.expect.status
        ));
    }
    if let Some(code) = case.expect.code {
        let Some(err) = &response.error else {
            return fail("no error envelope".into());
        };
        if err.code != code {
            return fail(format!("code {:?}, expected {code:?}", err.code));
        }
        if let Some(reason) = &case.expect.reason
            && &err.reason != reason
        {
            return fail(format!("reason {:?}, expected {reason:?}", err.reason));
        }
        if let Some(retryable) = case.expect.retryable
            && err.retryable != retryable
        {
            return fail(format!("retryable {}, expected {retryable}", err.retryable));
        }
    }
    Ok(response)
}
