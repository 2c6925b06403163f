//! Agent (spec §2.1).

use super::duration::check_duration;
use super::util::{check_enum, dedupe, dedupe_ci, lower, require, trim};
use super::{CommonStatus, ResourceSpec};
use crate::error::{Error, Result};
use crate::kind::Kind;
use crate::object::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Default `limits.max_steps`.
pub const DEFAULT_MAX_STEPS: i64 = 10;

/// Memory operations an agent may be granted.
pub const MEMORY_OPERATIONS: &[&str] = &["read", "write", "search", "list", "ingest"];

/// Largest accepted `execution.output_schema`, serialized.
const OUTPUT_SCHEMA_MAX_BYTES: usize = 64 * 1024;
/// Deepest accepted nesting of `execution.output_schema`.
const OUTPUT_SCHEMA_MAX_DEPTH: usize = 10;

/// `Agent.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// ModelEndpoint name or `ns/name` (required).
    #[serde(default)]
    pub model_ref: String,
    /// Ordered failover ModelEndpoints tried after `model_ref`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_model_refs: Vec<String>,
    /// The system prompt.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prompt: String,
    /// Tool names the agent may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Tools (including built-ins like `orloj.task.create`) allowed without governance checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tools: Vec<String>,
    /// AgentRole names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Memory attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<AgentMemory>,
    /// Execution contract.
    #[serde(default)]
    pub execution: AgentExecution,
    /// Step and time limits.
    #[serde(default)]
    pub limits: AgentLimits,
}

/// `Agent.spec.memory`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentMemory {
    /// Memory resource name.
    #[serde(rename = "ref", default, skip_serializing_if = "String::is_empty")]
    pub reference: String,
    /// Informational memory type.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub memory_type: String,
    /// Informational provider.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    /// Granted operations ⊆ read, write, search, list, ingest (`memory.read` accepted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

/// `Agent.spec.execution`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentExecution {
    /// `dynamic` (default) or `contract`.
    #[serde(default)]
    pub profile: String,
    /// Tools the agent must call, in order (required for `contract`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_sequence: Vec<String>,
    /// Markers the final output must contain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_output_markers: Vec<String>,
    /// `short_circuit` (default) or `deny`.
    #[serde(default)]
    pub duplicate_tool_call_policy: String,
    /// `non_retryable_error` (default) or `observe`.
    #[serde(default)]
    pub on_contract_violation: String,
    /// `run_llm_again` (default) or `stop_on_first_tool`.
    #[serde(default)]
    pub tool_use_behavior: String,
    /// JSON Schema the final output must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
}

/// `Agent.spec.limits`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentLimits {
    /// Model/tool steps per run (default 10).
    #[serde(default)]
    pub max_steps: i64,
    /// Wall-clock limit (Go duration); empty means none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timeout: String,
}

impl ResourceSpec for AgentSpec {
    const KIND: Kind = Kind::Agent;
    type Status = CommonStatus;

    fn normalize(&mut self, _meta: &ObjectMeta) -> Result<()> {
        require("spec.model_ref", &mut self.model_ref)?;
        dedupe(&mut self.fallback_model_refs);
        dedupe(&mut self.tools);
        dedupe_ci(&mut self.allowed_tools);
        dedupe(&mut self.roles);

        if let Some(mem) = &mut self.memory {
            trim(&mut mem.reference);
            trim(&mut mem.memory_type);
            trim(&mut mem.provider);
            for op in &mut mem.allow {
                lower(op);
                if let Some(bare) = op.strip_prefix("memory.") {
                    *op = bare.to_string();
                }
                if !op.is_empty() && !MEMORY_OPERATIONS.contains(&op.as_str()) {
                    return Err(Error::invalid(format!(
                        "spec.memory.allow: unsupported operation {op:?} (expected one of {})",
                        MEMORY_OPERATIONS.join(", ")
                    )));
                }
            }
            dedupe(&mut mem.allow);
            if !mem.allow.is_empty() && mem.reference.is_empty() {
                return Err(Error::invalid("spec.memory.allow requires spec.memory.ref"));
            }
        }

        let ex = &mut self.execution;
        check_enum(
            "spec.execution.profile",
            &mut ex.profile,
            "dynamic",
            &["dynamic", "contract"],
        )?;
        dedupe(&mut ex.tool_sequence);
        dedupe(&mut ex.required_output_markers);
        if ex.profile == "contract" && ex.tool_sequence.is_empty() {
            return Err(Error::invalid(
                "spec.execution.tool_sequence is required when spec.execution.profile is contract",
            ));
        }
        check_enum(
            "spec.execution.duplicate_tool_call_policy",
            &mut ex.duplicate_tool_call_policy,
            "short_circuit",
            &["short_circuit", "deny"],
        )?;
        check_enum(
            "spec.execution.on_contract_violation",
            &mut ex.on_contract_violation,
            "non_retryable_error",
            &["non_retryable_error", "observe"],
        )?;
        check_enum(
            "spec.execution.tool_use_behavior",
            &mut ex.tool_use_behavior,
            "run_llm_again",
            &["run_llm_again", "stop_on_first_tool"],
        )?;
        if let Some(schema) = &ex.output_schema {
            check_output_schema(schema)?;
        }

        if self.limits.max_steps < 0 {
            return Err(Error::invalid(format!(
                "spec.limits.max_steps must be >= 0, got {}",
                self.limits.max_steps
            )));
        }
        if self.limits.max_steps == 0 {
            self.limits.max_steps = DEFAULT_MAX_STEPS;
        }
        trim(&mut self.limits.timeout);
        check_duration("spec.limits.timeout", &self.limits.timeout)
    }
}

fn check_output_schema(schema: &Value) -> Result<()> {
    const FIELD: &str = "spec.execution.output_schema";
    let Value::Object(map) = schema else {
        return Err(Error::invalid(format!(
            "{FIELD} must be a JSON Schema object"
        )));
    };
    match map.get("type") {
        Some(Value::String(t)) if !t.trim().is_empty() => {}
        Some(Value::Array(ts)) if !ts.is_empty() => {}
        _ => return Err(Error::invalid(format!("{FIELD}.type is required"))),
    }
    let depth = depth(schema);
    if depth > OUTPUT_SCHEMA_MAX_DEPTH {
        return Err(Error::invalid(format!(
            "{FIELD} is nested too deeply ({depth} levels, at most {OUTPUT_SCHEMA_MAX_DEPTH})"
        )));
    }
    let size = serde_json::to_vec(schema)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > OUTPUT_SCHEMA_MAX_BYTES {
        return Err(Error::invalid(format!(
            "{FIELD} is too large ({size} bytes, at most {OUTPUT_SCHEMA_MAX_BYTES})"
        )));
    }
    Ok(())
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
