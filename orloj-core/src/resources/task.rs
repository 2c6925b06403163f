//! Task (spec §2.13): spec, status, trace events and messages.

use super::ResourceSpec;
use super::SharedList;
use super::duration::check_duration;
use super::tool::JITTER_MODES;
use super::util::{
    check_enum, dedupe, default_int, default_str, is_false, is_zero, lenient_string_map, lower,
    non_negative, trim,
};
use crate::error::{Error, Result};
use crate::kind::Kind;
use crate::object::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Every phase a Task may be in.
pub const TASK_PHASES: &[&str] = &[
    "Pending",
    "Running",
    "WaitingApproval",
    "Succeeded",
    "Failed",
    "DeadLetter",
];
/// Phases after which a Task never runs again (unless re-run).
pub const TASK_TERMINAL_PHASES: &[&str] = &["Succeeded", "Failed", "DeadLetter"];

/// `Task.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// AgentSystem name or `ns/name` (required for `mode: run`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system: String,
    /// `run` (default) or `template` (never claimed; used by schedules and webhooks).
    #[serde(default)]
    pub mode: String,
    /// Input key → value; scalar numbers and booleans are stored as strings.
    #[serde(default, deserialize_with = "lenient_string_map")]
    #[schemars(with = "BTreeMap<String, String>")]
    pub input: BTreeMap<String, String>,
    /// Priority label (default `normal`; stored only).
    #[serde(default)]
    pub priority: String,
    /// Bound on agent turns in loops (0 = graph default).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_turns: i64,
    /// Whole-task retry.
    #[serde(default)]
    pub retry: TaskRetry,
    /// Per-message retry (message-driven mode).
    #[serde(default)]
    pub message_retry: TaskMessageRetry,
    /// Worker matching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<TaskRequirements>,
}

impl TaskSpec {
    /// Whether this is a template (never executed itself).
    pub fn is_template(&self) -> bool {
        self.mode == "template"
    }
}

/// `Task.spec.retry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRetry {
    /// Attempts including the first (default 1).
    #[serde(default)]
    pub max_attempts: i64,
    /// Delay before a retry (default `0s`).
    #[serde(default)]
    pub backoff: String,
}

/// `Task.spec.message_retry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskMessageRetry {
    /// Attempts per message (default: `retry.max_attempts`).
    #[serde(default)]
    pub max_attempts: i64,
    /// First backoff (default: `retry.backoff`).
    #[serde(default)]
    pub backoff: String,
    /// Backoff cap (default `24h`).
    #[serde(default)]
    pub max_backoff: String,
    /// `full` (default), `none` or `equal`.
    #[serde(default)]
    pub jitter: String,
    /// Error substrings that make a failure non-retryable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_retryable: Vec<String>,
}

/// `Task.spec.requirements`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRequirements {
    /// Worker region.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// Needs a GPU worker.
    #[serde(default, skip_serializing_if = "is_false")]
    pub gpu: bool,
    /// Model the worker must support.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
}

impl ResourceSpec for TaskSpec {
    const KIND: Kind = Kind::Task;
    type Status = TaskStatus;

    fn normalize(&mut self, _meta: &ObjectMeta) -> Result<()> {
        normalize_task_spec("spec", self, false)
    }
}

/// Task spec rules; `field` is the path of the spec (`spec` or `spec.task_template`).
/// `require_system` forces `system` even for templates (inline templates).
pub(crate) fn normalize_task_spec(
    field: &str,
    t: &mut TaskSpec,
    require_system: bool,
) -> Result<()> {
    trim(&mut t.system);
    check_enum(
        &format!("{field}.mode"),
        &mut t.mode,
        "run",
        &["run", "template"],
    )?;
    if t.system.is_empty() && (require_system || t.mode == "run") {
        return Err(Error::invalid(format!("{field}.system is required")));
    }
    lower(&mut t.priority);
    if t.priority.is_empty() {
        t.priority = "normal".into();
    }
    non_negative(&format!("{field}.max_turns"), t.max_turns)?;

    default_int(
        &format!("{field}.retry.max_attempts"),
        &mut t.retry.max_attempts,
        1,
    )?;
    default_str(&mut t.retry.backoff, "0s");
    check_duration(&format!("{field}.retry.backoff"), &t.retry.backoff)?;

    let mr = &mut t.message_retry;
    default_int(
        &format!("{field}.message_retry.max_attempts"),
        &mut mr.max_attempts,
        t.retry.max_attempts,
    )?;
    default_str(&mut mr.backoff, &t.retry.backoff);
    check_duration(&format!("{field}.message_retry.backoff"), &mr.backoff)?;
    default_str(&mut mr.max_backoff, "24h");
    check_duration(
        &format!("{field}.message_retry.max_backoff"),
        &mr.max_backoff,
    )?;
    check_enum(
        &format!("{field}.message_retry.jitter"),
        &mut mr.jitter,
        "full",
        JITTER_MODES,
    )?;
    dedupe(&mut mr.non_retryable);

    if let Some(req) = &mut t.requirements {
        trim(&mut req.region);
        trim(&mut req.model);
    }
    Ok(())
}

/// A task's output, key → text. Keys and texts up to 23 bytes (most of them) are stored inline,
/// longer ones are shared between status versions: copying or freeing a status version neither
/// copies the texts nor touches a reference count per entry.
pub type TaskOutput = BTreeMap<SmolStr, SmolStr>;

/// Text kept inline up to 23 bytes and shared beyond: [`TaskOutput`] keys and texts, and the
/// short fields of trace entries and task messages.
pub use smol_str::SmolStr;

/// `Task.status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskStatus {
    /// One of [`TASK_PHASES`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// The last error.
    #[serde(
        rename = "lastError",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_error: String,
    /// First claim (RFC 3339).
    #[serde(
        rename = "startedAt",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub started_at: String,
    /// Reaching a terminal phase (RFC 3339).
    #[serde(
        rename = "completedAt",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub completed_at: String,
    /// Earliest time of the next retry (RFC 3339).
    #[serde(
        rename = "nextAttemptAt",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub next_attempt_at: String,
    /// Claims so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: i64,
    /// Final output, key → text.
    #[serde(
        default,
        deserialize_with = "lenient_string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(with = "BTreeMap<String, String>")]
    pub output: TaskOutput,
    /// Worker chosen by the scheduler.
    #[serde(
        rename = "assignedWorker",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub assigned_worker: String,
    /// Worker holding the lease.
    #[serde(
        rename = "claimedBy",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub claimed_by: String,
    /// Lease expiry (RFC 3339).
    #[serde(
        rename = "leaseUntil",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub lease_until: String,
    /// Last heartbeat of the lease holder (RFC 3339).
    #[serde(
        rename = "lastHeartbeat",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_heartbeat: String,
    /// Execution trace.
    #[serde(default, skip_serializing_if = "SharedList::is_empty")]
    pub trace: SharedList<TaskTraceEvent>,
    /// Lifecycle history.
    #[serde(default, skip_serializing_if = "SharedList::is_empty")]
    pub history: SharedList<TaskHistoryEvent>,
    /// Agent messages (message-driven mode).
    #[serde(default, skip_serializing_if = "SharedList::is_empty")]
    pub messages: SharedList<TaskMessage>,
    /// Processed message keys.
    #[serde(default, skip_serializing_if = "SharedList::is_empty")]
    pub message_idempotency: SharedList<TaskMessageIdempotency>,
    /// Join progress per node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join_states: Vec<TaskJoinState>,
    /// Delegation progress per node (shape owned by the runtime).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegation_states: Vec<Value>,
    /// What the task is waiting for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_on: Option<BlockedOn>,
    /// Input handed to an agent Job.
    #[serde(
        rename = "agentJobInput",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub agent_job_input: Option<Value>,
    /// Agent run by the current agent Job.
    #[serde(
        rename = "agentJobAgent",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub agent_job_agent: String,
    /// Message the current agent Job handles.
    #[serde(
        rename = "agentJobMessageID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub agent_job_message_id: String,
    /// Result written by an agent Job.
    #[serde(
        rename = "agentJobResult",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub agent_job_result: Option<Value>,
    /// The `metadata.generation` this status reflects.
    #[serde(
        rename = "observedGeneration",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub observed_generation: i64,
    /// Fields not modelled here, preserved as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TaskStatus {
    /// Whether the phase is terminal.
    pub fn is_terminal(&self) -> bool {
        TASK_TERMINAL_PHASES.contains(&self.phase.as_str())
    }
}

/// `status.blocked_on`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BlockedOn {
    /// Kind of the blocking object (e.g. `ToolApproval`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Its name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Why the task waits.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `status.trace[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskTraceEvent {
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
    /// Stable step id.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub step_id: SmolStr,
    /// Task attempt.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: i64,
    /// Step number within the agent run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub step: i64,
    /// Graph branch.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub branch_id: SmolStr,
    /// Event type (`agent_start`, `tool_call`, ...).
    #[serde(rename = "type", default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub event_type: SmolStr,
    /// Agent.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub agent: SmolStr,
    /// Tool.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub tool: SmolStr,
    /// Tool contract version (`v1`).
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub tool_contract_version: SmolStr,
    /// Tool request id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tool_request_id: String,
    /// Tool attempt.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tool_attempt: i64,
    /// Error code.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub error_code: SmolStr,
    /// Error reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_reason: String,
    /// Whether the error is retryable (unset when not applicable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// Text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Latency in milliseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub latency_ms: i64,
    /// Tokens used.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens: i64,
    /// Input tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub input_tokens: i64,
    /// Output tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_tokens: i64,
    /// `provider` or `estimate`.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub token_usage_source: SmolStr,
    /// Tool calls made.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tool_calls: i64,
    /// Memory writes made.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory_writes: i64,
    /// Auth profile used for the tool call.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tool_auth_profile: String,
    /// Secret used for the tool call.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tool_auth_secret_ref: String,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `status.history[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskHistoryEvent {
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
    /// Event type (`claim`, `succeeded`, ...).
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub event_type: String,
    /// Worker involved.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub worker: String,
    /// Text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `status.messages[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskMessage {
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
    /// Message id.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub message_id: SmolStr,
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub idempotency_key: SmolStr,
    /// Task key.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub task_id: SmolStr,
    /// Task attempt.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: i64,
    /// AgentSystem.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub system: SmolStr,
    /// Sender.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub from_agent: SmolStr,
    /// Recipient.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub to_agent: SmolStr,
    /// Branch.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub branch_id: SmolStr,
    /// Parent branch.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub parent_branch_id: SmolStr,
    /// Message type.
    #[serde(rename = "type", default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub message_type: SmolStr,
    /// Payload.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content: String,
    /// Trace id.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub trace_id: SmolStr,
    /// Parent message id.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub parent_id: SmolStr,
    /// Lifecycle (queued, running, retrypending, succeeded, deadletter).
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub phase: SmolStr,
    /// Delivery attempts so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: i64,
    /// Attempt limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_attempts: i64,
    /// Last error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// Worker that processed it.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub worker: SmolStr,
    /// When it was processed (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub processed_at: String,
    /// Earliest retry (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_attempt_at: String,
    /// Delegating agent, for delegated work.
    #[serde(default, skip_serializing_if = "SmolStr::is_empty")]
    #[schemars(with = "String")]
    pub delegate_of: SmolStr,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `status.message_idempotency[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskMessageIdempotency {
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// Message id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message_id: String,
    /// `completed` or `deadletter`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub updated_at: String,
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expires_at: String,
    /// Worker.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub worker: String,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `status.join_states[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskJoinState {
    /// Task attempt.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: i64,
    /// Join node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// Join mode.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Branches expected.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expected: i64,
    /// Branches required (quorum).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub quorum_required: i64,
    /// Whether the join fired.
    #[serde(default, skip_serializing_if = "is_false")]
    pub activated: bool,
    /// When it fired (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub activated_at: String,
    /// Message that fired it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub activated_by: String,
    /// Arrived branches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<TaskJoinSource>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One arrived branch of a join.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskJoinSource {
    /// Message id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message_id: String,
    /// Sender.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from_agent: String,
    /// Branch.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub branch_id: String,
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
    /// Payload.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub payload: String,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
