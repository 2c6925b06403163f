//! AgentSystem (spec §2.2): the agent graph.

use super::duration::check_duration;
use super::util::{
    check_enum, dedupe, default_int, default_str, default_true, is_false, is_true, lower, trim,
};
use super::{CommonStatus, ResourceSpec};
use crate::error::{Error, Result};
use crate::kind::Kind;
use crate::object::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

/// Longest accepted `condition.output_matches` pattern.
const MAX_PATTERN_LEN: usize = 512;

/// `AgentSystem.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSystemSpec {
    /// Agent names; the first is the entry agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
    /// Node name → outgoing edges, joins, delegation and review.
    #[serde(default)]
    pub graph: BTreeMap<String, GraphNode>,
    /// Review checkpoint on the task's final output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_review: Option<ReviewCheckpoint>,
    /// ContextAdapter that sanitises task input before the first agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub context_adapter: String,
    /// Inbound A2A exposure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a: Option<SystemA2a>,
}

/// One node of `AgentSystem.spec.graph`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphNode {
    /// Legacy single outgoing edge.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next: String,
    /// Outgoing edges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<GraphRoute>,
    /// How this node waits for its incoming branches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<GraphJoin>,
    /// Agents this node delegates to (results come back to this node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegates: Vec<GraphRoute>,
    /// How delegated results are joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate_join: Option<GraphJoin>,
    /// Human review of this node's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewCheckpoint>,
}

/// An edge (or delegate) of the graph.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphRoute {
    /// Target agent.
    #[serde(default)]
    pub to: String,
    /// Free-form labels (stored only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form policy (stored only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policy: BTreeMap<String, String>,
    /// When the edge is taken (message-driven mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<EdgeCondition>,
}

/// Condition on an edge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeCondition {
    /// Output contains this text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_contains: String,
    /// Output does not contain this text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_not_contains: String,
    /// Output matches this regular expression (≤ 512 chars).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_matches: String,
    /// Taken when no other edge matched; exclusive with every other field.
    #[serde(default, skip_serializing_if = "is_false")]
    pub default: bool,
    /// `$.`-prefixed path into the JSON output; needs one comparison operator.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_json_path: String,
    /// Value at the path equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    /// Value at the path differs from this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_equals: Option<Value>,
    /// Value at the path contains this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<Value>,
    /// Value at the path is a number greater than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greater_than: Option<f64>,
    /// Value at the path is a number less than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub less_than: Option<f64>,
}

impl EdgeCondition {
    fn has_operator(&self) -> bool {
        self.equals.is_some()
            || self.not_equals.is_some()
            || self.contains.is_some()
            || self.greater_than.is_some()
            || self.less_than.is_some()
    }

    fn has_predicate(&self) -> bool {
        !self.output_contains.is_empty()
            || !self.output_not_contains.is_empty()
            || !self.output_matches.is_empty()
            || !self.output_json_path.is_empty()
            || self.has_operator()
    }
}

/// Join behaviour of a node with several incoming branches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphJoin {
    /// `wait_for_all` (default) or `quorum`.
    #[serde(default)]
    pub mode: String,
    /// Branches needed in quorum mode.
    #[serde(default, skip_serializing_if = "super::util::is_zero")]
    pub quorum_count: i64,
    /// Percentage (0–100) of branches needed in quorum mode.
    #[serde(default, skip_serializing_if = "super::util::is_zero")]
    pub quorum_percent: i64,
    /// `deadletter` (default), `skip` or `continue_partial`.
    #[serde(default)]
    pub on_failure: String,
}

/// A human review checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewCheckpoint {
    /// Unique within the system (required).
    #[serde(default)]
    pub checkpoint_id: String,
    /// Shown to reviewers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// Why review is needed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// How long the review may stay open (default `10m`).
    #[serde(default)]
    pub ttl: String,
    /// Whether reviewers may ask for changes (default true).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub allow_request_changes: bool,
    /// Review rounds allowed (default 3).
    #[serde(default)]
    pub max_review_cycles: i64,
}

impl Default for ReviewCheckpoint {
    fn default() -> Self {
        Self {
            checkpoint_id: String::new(),
            display_name: String::new(),
            reason: String::new(),
            ttl: String::new(),
            allow_request_changes: true,
            max_review_cycles: 0,
        }
    }
}

/// `AgentSystem.spec.a2a`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemA2a {
    /// Opt-in to inbound A2A.
    #[serde(default)]
    pub enabled: bool,
    /// `""` (bearer, the default) or `public`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth: String,
}

impl ResourceSpec for AgentSystemSpec {
    const KIND: Kind = Kind::AgentSystem;
    type Status = CommonStatus;

    fn normalize(&mut self, _meta: &ObjectMeta) -> Result<()> {
        dedupe(&mut self.agents);
        let mut checkpoints = HashSet::new();
        let graph = std::mem::take(&mut self.graph);
        for (raw_name, mut node) in graph {
            let name = raw_name.trim().to_string();
            if name.is_empty() {
                return Err(Error::invalid("spec.graph: node name must not be empty"));
            }
            let at = format!("spec.graph.{name}");
            trim(&mut node.next);
            normalize_routes(&at, "edges", &mut node.edges)?;
            normalize_routes(&at, "delegates", &mut node.delegates)?;
            if let Some(d) = node.delegates.iter().find(|d| d.to == name) {
                return Err(Error::invalid(format!(
                    "{at}.delegates: agent {:?} cannot delegate to itself",
                    d.to
                )));
            }
            if let Some(join) = &mut node.join {
                normalize_join(&format!("{at}.join"), join)?;
            }
            if let Some(join) = &mut node.delegate_join {
                normalize_join(&format!("{at}.delegate_join"), join)?;
            }
            if let Some(review) = &mut node.review {
                normalize_review(&format!("{at}.review"), review, &mut checkpoints)?;
            }
            self.graph.insert(name, node);
        }
        if let Some(review) = &mut self.completion_review {
            normalize_review("spec.completion_review", review, &mut checkpoints)?;
        }
        trim(&mut self.context_adapter);
        if let Some(a2a) = &mut self.a2a {
            lower(&mut a2a.auth);
            if a2a.auth == "bearer" {
                a2a.auth.clear();
            }
            if !a2a.auth.is_empty() && a2a.auth != "public" {
                return Err(Error::invalid(format!(
                    "spec.a2a.auth: unsupported value {:?} (expected bearer or public)",
                    a2a.auth
                )));
            }
        }
        Ok(())
    }
}

fn normalize_routes(at: &str, list: &str, routes: &mut Vec<GraphRoute>) -> Result<()> {
    routes.retain_mut(|r| {
        trim(&mut r.to);
        !r.to.is_empty()
    });
    let mut defaults = 0;
    for (i, route) in routes.iter_mut().enumerate() {
        let Some(cond) = &mut route.condition else {
            continue;
        };
        let field = format!("{at}.{list}[{i}].condition");
        trim(&mut cond.output_json_path);
        if cond.default {
            defaults += 1;
            if cond.has_predicate() {
                return Err(Error::invalid(format!(
                    "{field}: default cannot be combined with other conditions"
                )));
            }
            continue;
        }
        if !cond.has_predicate() {
            return Err(Error::invalid(format!(
                "{field}: at least one condition is required"
            )));
        }
        if !cond.output_matches.is_empty() {
            if cond.output_matches.chars().count() > MAX_PATTERN_LEN {
                return Err(Error::invalid(format!(
                    "{field}.output_matches: pattern longer than {MAX_PATTERN_LEN} characters"
                )));
            }
            regex::Regex::new(&cond.output_matches).map_err(|e| {
                Error::invalid(format!(
                    "{field}.output_matches: invalid regular expression: {e}"
                ))
            })?;
        }
        if !cond.output_json_path.is_empty() {
            if !cond.output_json_path.starts_with("$.") {
                return Err(Error::invalid(format!(
                    "{field}.output_json_path: must start with \"$.\", got {:?}",
                    cond.output_json_path
                )));
            }
            if !cond.has_operator() {
                return Err(Error::invalid(format!(
                    "{field}: output_json_path needs one of equals, not_equals, contains, greater_than, less_than"
                )));
            }
        } else if cond.has_operator() {
            return Err(Error::invalid(format!(
                "{field}: equals/not_equals/contains/greater_than/less_than need output_json_path"
            )));
        }
    }
    if defaults > 1 {
        return Err(Error::invalid(format!(
            "{at}.{list}: at most one edge may have condition.default"
        )));
    }
    Ok(())
}

fn normalize_join(field: &str, join: &mut GraphJoin) -> Result<()> {
    check_enum(
        &format!("{field}.mode"),
        &mut join.mode,
        "wait_for_all",
        &["wait_for_all", "quorum"],
    )?;
    if join.quorum_count < 0 {
        return Err(Error::invalid(format!(
            "{field}.quorum_count must be >= 0, got {}",
            join.quorum_count
        )));
    }
    if !(0..=100).contains(&join.quorum_percent) {
        return Err(Error::invalid(format!(
            "{field}.quorum_percent must be between 0 and 100, got {}",
            join.quorum_percent
        )));
    }
    check_enum(
        &format!("{field}.on_failure"),
        &mut join.on_failure,
        "deadletter",
        &["deadletter", "skip", "continue_partial"],
    )
}

pub(crate) fn normalize_review(
    field: &str,
    review: &mut ReviewCheckpoint,
    seen: &mut HashSet<String>,
) -> Result<()> {
    trim(&mut review.checkpoint_id);
    if review.checkpoint_id.is_empty() {
        return Err(Error::invalid(format!("{field}.checkpoint_id is required")));
    }
    if !seen.insert(review.checkpoint_id.clone()) {
        return Err(Error::invalid(format!(
            "{field}.checkpoint_id: {:?} is used more than once in this system",
            review.checkpoint_id
        )));
    }
    default_str(&mut review.ttl, "10m");
    check_duration(&format!("{field}.ttl"), &review.ttl)?;
    default_int(
        &format!("{field}.max_review_cycles"),
        &mut review.max_review_cycles,
        3,
    )
}
