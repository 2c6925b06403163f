//! Typed status shapes. Every struct keeps fields it does not know in `extra`, so a status
//! written by a newer component round-trips unchanged.

use super::util::is_zero;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The status most kinds carry: `phase`, `lastError`, `observedGeneration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CommonStatus {
    /// Lifecycle phase (`Pending`, `Ready`, `Error`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// The last error a controller hit, if any.
    #[serde(
        rename = "lastError",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_error: String,
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

/// McpServer status (spec §2.7).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct McpServerStatus {
    /// `Pending`, `Connecting`, `Ready` or `Error`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Tool names reported by the server's `tools/list`.
    #[serde(
        rename = "discoveredTools",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub discovered_tools: Vec<String>,
    /// Names of the Tool resources generated from them.
    #[serde(
        rename = "generatedTools",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub generated_tools: Vec<String>,
    /// When the tool list was last synchronised (RFC 3339).
    #[serde(
        rename = "lastSyncedAt",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_synced_at: String,
    /// The last error, if any.
    #[serde(
        rename = "lastError",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_error: String,
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

/// ToolApproval status (spec §2.11).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolApprovalStatus {
    /// `Pending`, `Approved`, `Denied` or `Expired`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// The decision taken (`approved` / `denied`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub decision: String,
    /// Who decided.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub decided_by: String,
    /// When the decision was taken (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub decided_at: String,
    /// When a pending approval expires (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expires_at: String,
    /// Free-text comment of the decider.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// Fields not modelled here, preserved as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Worker status (spec §2.16).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerStatus {
    /// `Pending`, `Ready` or `NotReady`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// The last error (e.g. `worker heartbeat stale`).
    #[serde(
        rename = "lastError",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_error: String,
    /// Last heartbeat (RFC 3339).
    #[serde(
        rename = "lastHeartbeat",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_heartbeat: String,
    /// Tasks the worker currently runs.
    #[serde(rename = "currentTasks", default, skip_serializing_if = "is_zero")]
    pub current_tasks: i64,
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

/// TaskSchedule status (spec §2.14).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskScheduleStatus {
    /// `Pending`, `Ready`, `Suspended` or `Error`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// The last error, if any.
    #[serde(
        rename = "lastError",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_error: String,
    /// Slot time of the last triggered run (RFC 3339).
    #[serde(
        rename = "lastScheduleTime",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_schedule_time: String,
    /// When a run last succeeded (RFC 3339).
    #[serde(
        rename = "lastSuccessfulTime",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_successful_time: String,
    /// The next slot (RFC 3339).
    #[serde(
        rename = "nextScheduleTime",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub next_schedule_time: String,
    /// Name of the Task created last.
    #[serde(
        rename = "lastTriggeredTask",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_triggered_task: String,
    /// Tasks of this schedule that have not finished.
    #[serde(rename = "activeRuns", default, skip_serializing_if = "Vec::is_empty")]
    pub active_runs: Vec<String>,
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

/// TaskWebhook status (spec §2.15).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskWebhookStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// The last error, if any.
    #[serde(
        rename = "lastError",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_error: String,
    /// The `metadata.generation` this status reflects.
    #[serde(
        rename = "observedGeneration",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub observed_generation: i64,
    /// First 12 bytes (hex) of sha256(`ns/name`).
    #[serde(
        rename = "endpointID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub endpoint_id: String,
    /// `/v1/webhook-deliveries/<endpointID>`.
    #[serde(
        rename = "endpointPath",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub endpoint_path: String,
    /// Last accepted delivery (RFC 3339).
    #[serde(
        rename = "lastDeliveryTime",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_delivery_time: String,
    /// Event id of the last delivery.
    #[serde(
        rename = "lastEventID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_event_id: String,
    /// Name of the Task created last.
    #[serde(
        rename = "lastTriggeredTask",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub last_triggered_task: String,
    /// Deliveries accepted.
    #[serde(rename = "acceptedCount", default, skip_serializing_if = "is_zero")]
    pub accepted_count: i64,
    /// Deliveries recognised as duplicates.
    #[serde(rename = "duplicateCount", default, skip_serializing_if = "is_zero")]
    pub duplicate_count: i64,
    /// Deliveries rejected (bad signature, skew, ...).
    #[serde(rename = "rejectedCount", default, skip_serializing_if = "is_zero")]
    pub rejected_count: i64,
    /// Fields not modelled here, preserved as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
