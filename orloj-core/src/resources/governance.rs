//! Governance kinds: AgentPolicy, AgentRole, ToolPermission (spec §2.8–2.10) and
//! ToolApproval (§2.11).

use super::duration::check_duration;
use super::status::ToolApprovalStatus;
use super::tool::OPERATION_CLASSES;
use super::util::{
    check_enum, dedupe, dedupe_ci, default_int, default_str, lower, non_negative, require, trim,
};
use super::{CommonStatus, ResourceSpec};
use crate::error::{Error, Result};
use crate::kind::Kind;
use crate::object::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `AgentPolicy.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentPolicySpec {
    /// Token budget per run; 0 means unlimited.
    #[serde(default, skip_serializing_if = "super::util::is_zero")]
    pub max_tokens_per_run: i64,
    /// Models agents may use; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_models: Vec<String>,
    /// Tools agents may not call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_tools: Vec<String>,
    /// `scoped` (default: applies to the targets) or `global`.
    #[serde(default)]
    pub apply_mode: String,
    /// AgentSystems the policy applies to (scoped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_systems: Vec<String>,
    /// Tasks the policy applies to (scoped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_tasks: Vec<String>,
    /// Agents the policy applies to (scoped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_agents: Vec<String>,
    /// Deepest child-task nesting (default 5).
    #[serde(default)]
    pub max_child_depth: i64,
    /// Most child tasks per task (default 20).
    #[serde(default)]
    pub max_child_tasks: i64,
}

impl ResourceSpec for AgentPolicySpec {
    const KIND: Kind = Kind::AgentPolicy;
    type Status = CommonStatus;

    fn normalize(&mut self, _meta: &ObjectMeta) -> Result<()> {
        non_negative("spec.max_tokens_per_run", self.max_tokens_per_run)?;
        dedupe(&mut self.allowed_models);
        dedupe(&mut self.blocked_tools);
        check_enum(
            "spec.apply_mode",
            &mut self.apply_mode,
            "scoped",
            &["scoped", "global"],
        )?;
        dedupe(&mut self.target_systems);
        dedupe(&mut self.target_tasks);
        dedupe(&mut self.target_agents);
        default_int("spec.max_child_depth", &mut self.max_child_depth, 5)?;
        default_int("spec.max_child_tasks", &mut self.max_child_tasks, 20)
    }
}

/// `AgentRole.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRoleSpec {
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Permission strings granted (trimmed, deduped case-insensitively).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
}

impl ResourceSpec for AgentRoleSpec {
    const KIND: Kind = Kind::AgentRole;
    type Status = CommonStatus;

    fn normalize(&mut self, _meta: &ObjectMeta) -> Result<()> {
        dedupe_ci(&mut self.permissions);
        Ok(())
    }
}

/// `ToolPermission.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolPermissionSpec {
    /// Tool governed (default: the object's name).
    #[serde(default)]
    pub tool_ref: String,
    /// Action governed (default `invoke`).
    #[serde(default)]
    pub action: String,
    /// Permissions the calling agent's roles must grant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_permissions: Vec<String>,
    /// `all` (default) or `any` of `required_permissions`.
    #[serde(default)]
    pub match_mode: String,
    /// `global` (default) or `scoped` (then `target_agents` is required).
    #[serde(default)]
    pub apply_mode: String,
    /// Agents a scoped permission applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_agents: Vec<String>,
    /// Per operation-class verdicts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operation_rules: Vec<OperationRule>,
}

/// One `operation_rules` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationRule {
    /// `read`, `write`, `delete`, `admin` or `*` (default).
    #[serde(default)]
    pub operation_class: String,
    /// `allow` (default), `deny` or `approval_required`.
    #[serde(default)]
    pub verdict: String,
}

impl ResourceSpec for ToolPermissionSpec {
    const KIND: Kind = Kind::ToolPermission;
    type Status = CommonStatus;

    fn normalize(&mut self, meta: &ObjectMeta) -> Result<()> {
        default_str(&mut self.tool_ref, &meta.name);
        lower(&mut self.action);
        if self.action.is_empty() {
            self.action = "invoke".into();
        }
        dedupe_ci(&mut self.required_permissions);
        check_enum(
            "spec.match_mode",
            &mut self.match_mode,
            "all",
            &["all", "any"],
        )?;
        check_enum(
            "spec.apply_mode",
            &mut self.apply_mode,
            "global",
            &["global", "scoped"],
        )?;
        dedupe(&mut self.target_agents);
        if self.apply_mode == "scoped" && self.target_agents.is_empty() {
            return Err(Error::invalid(
                "spec.target_agents is required when spec.apply_mode is scoped",
            ));
        }
        let mut classes: Vec<&str> = OPERATION_CLASSES.to_vec();
        classes.push("*");
        for (i, rule) in self.operation_rules.iter_mut().enumerate() {
            check_enum(
                &format!("spec.operation_rules[{i}].operation_class"),
                &mut rule.operation_class,
                "*",
                &classes,
            )?;
            check_enum(
                &format!("spec.operation_rules[{i}].verdict"),
                &mut rule.verdict,
                "allow",
                &["allow", "deny", "approval_required"],
            )?;
        }
        Ok(())
    }
}

/// `ToolApproval.spec` (usually created by the runtime).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolApprovalSpec {
    /// The waiting Task (required).
    #[serde(default)]
    pub task_ref: String,
    /// The tool call awaiting approval (required).
    #[serde(default)]
    pub tool: String,
    /// Operation class of the call.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operation_class: String,
    /// Calling agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent: String,
    /// Call arguments (JSON text; a structured value is stored as its JSON text).
    #[serde(
        default,
        deserialize_with = "super::util::json_text",
        skip_serializing_if = "String::is_empty"
    )]
    pub input: String,
    /// Why approval is needed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// How long the approval stays open (default `10m`).
    #[serde(default)]
    pub ttl: String,
}

impl ResourceSpec for ToolApprovalSpec {
    const KIND: Kind = Kind::ToolApproval;
    type Status = ToolApprovalStatus;

    fn normalize(&mut self, _meta: &ObjectMeta) -> Result<()> {
        require("spec.task_ref", &mut self.task_ref)?;
        require("spec.tool", &mut self.tool)?;
        lower(&mut self.operation_class);
        trim(&mut self.agent);
        default_str(&mut self.ttl, "10m");
        check_duration("spec.ttl", &self.ttl)
    }
}
