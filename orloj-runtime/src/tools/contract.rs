//! The tool contract v1 envelopes (spec runtime §9.2) and [`run_contract`], which executes a
//! contract request through any executor and answers with a contract response.

use super::safety::tool_error;
use orloj_core::Object;
use orloj_core::resources::ToolSpec;
use orloj_core::tool::{
    TOOL_CONTRACT_VERSION, ToolError, ToolErrorCode, ToolExecutor, ToolInvocation,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// `tool` block of a contract request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContractTool {
    /// Tool name (required).
    #[serde(default)]
    pub name: String,
    /// Operation (default `invoke`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operation: String,
    /// Tool capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Tool risk level.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub risk_level: String,
}

/// `runtime` block of a contract request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContractRuntime {
    /// Isolation mode the call runs under.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Per-attempt timeout.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout_ms: u64,
    /// Attempt budget.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_attempts: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// `trace` block of requests and responses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContractTrace {
    /// Trace id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_id: String,
    /// Span id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub span_id: String,
}

/// A tool contract v1 request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContractRequest {
    /// `v1` (empty means `v1`).
    #[serde(default)]
    pub tool_contract_version: String,
    /// Request id (required; echoed).
    #[serde(default)]
    pub request_id: String,
    /// Task as `ns/name`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task_id: String,
    /// Namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Calling agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent: String,
    /// The tool.
    #[serde(default)]
    pub tool: ContractTool,
    /// Input as a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Raw input (preferred over `input`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub input_raw: String,
    /// Runtime settings.
    #[serde(default)]
    pub runtime: ContractRuntime,
    /// Trace ids (echoed).
    #[serde(default)]
    pub trace: ContractTrace,
    /// 1-based attempt.
    #[serde(default)]
    pub attempt: u32,
}

/// `usage` block of a response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContractUsage {
    /// Wall time of the call.
    #[serde(default)]
    pub duration_ms: u64,
    /// Attempt (≥ 1).
    #[serde(default)]
    pub attempt: u32,
}

/// A tool contract v1 response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContractResponse {
    /// `v1`.
    pub tool_contract_version: String,
    /// Echoed request id.
    pub request_id: String,
    /// `ok`, `error` or `denied`.
    pub status: String,
    /// `{"result": ...}` for ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Usage.
    #[serde(default)]
    pub usage: ContractUsage,
    /// Echoed trace ids.
    #[serde(default)]
    pub trace: ContractTrace,
    /// Present for error/denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ToolError>,
}

impl ContractResponse {
    fn from_result(
        request: &ContractRequest,
        result: Result<String, ToolError>,
        duration: Duration,
    ) -> Self {
        let (status, output, error) = match result {
            Ok(result) => ("ok", Some(serde_json::json!({ "result": result })), None),
            Err(e) if e.code == ToolErrorCode::PermissionDenied => ("denied", None, Some(e)),
            Err(e) => ("error", None, Some(e)),
        };
        Self {
            tool_contract_version: TOOL_CONTRACT_VERSION.into(),
            request_id: request.request_id.clone(),
            status: status.into(),
            output,
            usage: ContractUsage {
                duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                attempt: request.attempt.max(1),
            },
            trace: request.trace.clone(),
            error,
        }
    }
}

/// Builds the v1 request sent to external and webhook-callback services for `invocation`.
pub fn request_for(
    invocation: &ToolInvocation,
    spec: &ToolSpec,
    mode: &str,
    request_id: &str,
) -> ContractRequest {
    let input = serde_json::from_str::<Value>(&invocation.input)
        .ok()
        .filter(Value::is_object);
    ContractRequest {
        tool_contract_version: TOOL_CONTRACT_VERSION.into(),
        request_id: request_id.into(),
        task_id: invocation.task_id.clone(),
        namespace: invocation.namespace.clone(),
        agent: invocation.agent.clone(),
        tool: ContractTool {
            name: invocation.tool.metadata.name.clone(),
            operation: "invoke".into(),
            capabilities: spec.capabilities.clone(),
            risk_level: spec.risk_level.clone(),
        },
        input,
        input_raw: invocation.input.clone(),
        runtime: ContractRuntime {
            mode: mode.into(),
            timeout_ms: u64::try_from(invocation.timeout.as_millis()).unwrap_or(u64::MAX),
            max_attempts: 0,
        },
        trace: ContractTrace::default(),
        attempt: invocation.attempt.max(1),
    }
}

/// Runs a contract request: validates it (version `v1`, request id, tool name →
/// `invalid_input`), looks the tool up in `tools` (missing → `unsupported_tool`), executes it
/// with `executor` (cancelled by `cancel` → `canceled`) and answers with the contract
/// response. `timeout` is the invocation's per-attempt deadline.
pub async fn run_contract(
    executor: &dyn ToolExecutor,
    tools: &HashMap<String, Object>,
    request: ContractRequest,
    timeout: Duration,
    cancel: CancellationToken,
) -> ContractResponse {
    let started = Instant::now();
    let result = async {
        let version = request.tool_contract_version.trim();
        if !version.is_empty() && version != TOOL_CONTRACT_VERSION {
            return Err(tool_error(
                ToolErrorCode::InvalidInput,
                format!("unsupported tool contract version {version:?} (expected v1)"),
            ));
        }
        if request.request_id.trim().is_empty() {
            return Err(tool_error(
                ToolErrorCode::InvalidInput,
                "request_id is required",
            ));
        }
        let name = request.tool.name.trim();
        if name.is_empty() {
            return Err(tool_error(
                ToolErrorCode::InvalidInput,
                "tool name is required",
            ));
        }
        let tool = tools.get(name).cloned().ok_or_else(|| {
            tool_error(
                ToolErrorCode::UnsupportedTool,
                format!("unsupported tool {name:?}"),
            )
        })?;
        let input = if !request.input_raw.is_empty() {
            request.input_raw.clone()
        } else {
            request
                .input
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default()
        };
        let invocation = ToolInvocation {
            request_id: request.request_id.clone(),
            task_id: request.task_id.clone(),
            namespace: request.namespace.clone(),
            agent: request.agent.clone(),
            tool,
            input,
            attempt: request.attempt.max(1),
            timeout,
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(tool_error(
                ToolErrorCode::Canceled,
                format!("tool {name:?} call was canceled"),
            )),
            out = executor.execute(invocation) => out.map(|o| o.result),
        }
    }
    .await;
    ContractResponse::from_result(&request, result, started.elapsed())
}

/// Checks a response against its request (spec §13.3): version `v1`, echoed request id and
/// trace, `usage.attempt ≥ 1`, ok without error, error/denied with non-empty code, reason and
/// message. Returns what is wrong.
pub fn validate_response(
    request: &ContractRequest,
    response: &ContractResponse,
) -> Result<(), String> {
    if response.tool_contract_version != TOOL_CONTRACT_VERSION {
        return Err(format!(
            "tool_contract_version {:?}",
            response.tool_contract_version
        ));
    }
    if response.request_id != request.request_id {
        return Err(format!(
            "request_id {:?} does not echo {:?}",
            response.request_id, request.request_id
        ));
    }
    if response.trace != request.trace {
        return Err("trace ids are not echoed".into());
    }
    if response.usage.attempt < 1 {
        return Err("usage.attempt < 1".into());
    }
    match (response.status.as_str(), &response.error) {
        ("ok", None) => Ok(()),
        ("ok", Some(_)) => Err("status ok with an error envelope".into()),
        ("error" | "denied", Some(e)) => {
            if e.reason.is_empty() || e.message.is_empty() {
                Err(format!("error envelope lacks reason or message: {e:?}"))
            } else {
                Ok(())
            }
        }
        (status, _) => Err(format!("status {status:?} without a valid error envelope")),
    }
}
