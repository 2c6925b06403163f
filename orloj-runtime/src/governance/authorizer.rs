//! The AgentRole + ToolPermission authorizer (spec runtime §8.2) and the executor wrapper that
//! applies it to every tool call.
//!
//! A [`RoleAuthorizer`] is built once per task run from the store ([`RoleAuthorizer::load`]):
//! the agents' specs, their roles and the namespace's ToolPermissions. Each call is then
//! decided from the [`ToolInvocation`] alone (agent, tool object), without store reads.
//! Approvals granted for this run are consumed one call at a time.

use crate::tools::governed::{Authorization, ToolAuthorizer};
use async_trait::async_trait;
use orloj_core::resources::{AgentRoleSpec, AgentSpec, ToolPermissionSpec, ToolSpec, spec_of};
use orloj_core::tool::{ToolError, ToolErrorCode, ToolExecutor, ToolInvocation, ToolOutput};
use orloj_core::{ErrorKind, Kind, ListOptions, Store, split_ref};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// Normalises a permission string: lower-cased, spaces removed, `/` `\` `-` → `_`.
pub fn normalize_permission(p: &str) -> String {
    p.trim()
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| {
            if matches!(c, '/' | '\\' | '-') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The default permissions a call of `tool` needs: `tool:<tool>:<action>` plus
/// `capability:<c>` per Tool capability.
pub fn default_permissions(tool: &str, action: &str, spec: &ToolSpec) -> Vec<String> {
    let action = if action.trim().is_empty() {
        "invoke"
    } else {
        action
    };
    let mut out = vec![normalize_permission(&format!("tool:{tool}:{action}"))];
    for c in &spec.capabilities {
        out.push(normalize_permission(&format!("capability:{c}")));
    }
    out
}

/// A ToolPermission with its name.
#[derive(Debug, Clone)]
pub struct PermissionRule {
    /// Object name.
    pub name: String,
    /// Normalized spec.
    pub spec: ToolPermissionSpec,
}

/// What the authorizer knows about one agent.
#[derive(Debug, Clone, Default)]
pub struct AgentGrants {
    /// The agent's spec (`allowed_tools`, `roles`).
    pub spec: AgentSpec,
    /// Roles that were found, by reference as written.
    pub roles: Vec<(String, AgentRoleSpec)>,
    /// Roles that were not found.
    pub missing_roles: Vec<String>,
}

/// The verdict of §8.2 for one call, with the operation class that needs approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run it.
    Allow,
    /// Refuse it; the policy text.
    Deny(String),
    /// Hold it for approval: the operation class and the reason.
    ApprovalRequired {
        /// Operation class whose rule asked for approval.
        operation_class: String,
        /// Why.
        reason: String,
    },
}

fn rank(v: &str) -> u8 {
    match v {
        "deny" => 2,
        "approval_required" => 1,
        _ => 0,
    }
}

/// Evaluates §8.2 for agent `agent` calling tool `tool` (spec `tool_spec`) against the rules of
/// the agent's namespace.
pub fn evaluate(
    agent: &str,
    grants: &AgentGrants,
    rules: &[PermissionRule],
    tool: &str,
    tool_spec: &ToolSpec,
) -> Verdict {
    if grants
        .spec
        .allowed_tools
        .iter()
        .any(|t| t.trim().eq_ignore_ascii_case(tool))
    {
        return Verdict::Allow;
    }
    if !grants.missing_roles.is_empty() {
        return Verdict::Deny(format!(
            "policy permission denied for tool={tool} missing_roles={}",
            grants.missing_roles.join(",")
        ));
    }
    let granted: BTreeSet<String> = grants
        .roles
        .iter()
        .flat_map(|(_, r)| r.permissions.iter().map(|p| normalize_permission(p)))
        .collect();
    let applicable: Vec<&PermissionRule> = rules
        .iter()
        .filter(|r| {
            let (_, name) = split_ref(&r.spec.tool_ref, "");
            name.trim().eq_ignore_ascii_case(tool)
        })
        .filter(|r| {
            r.spec.apply_mode != "scoped"
                || r.spec
                    .target_agents
                    .iter()
                    .any(|a| a.trim().eq_ignore_ascii_case(agent))
        })
        .collect();
    if applicable.is_empty() {
        if grants.roles.is_empty() {
            return Verdict::Allow;
        }
        let missing: Vec<String> = default_permissions(tool, "invoke", tool_spec)
            .into_iter()
            .filter(|p| !granted.contains(p))
            .collect();
        if missing.is_empty() {
            return Verdict::Allow;
        }
        return Verdict::Deny(format!(
            "policy permission denied for tool={tool} required={}",
            missing.join(",")
        ));
    }
    let classes: Vec<String> = if tool_spec.operation_classes.is_empty() {
        let high = matches!(tool_spec.risk_level.as_str(), "high" | "critical");
        vec![if high { "write" } else { "read" }.to_string()]
    } else {
        tool_spec.operation_classes.clone()
    };
    let mut worst = ("allow".to_string(), String::new(), String::new());
    for rule in applicable {
        let s = &rule.spec;
        let required: Vec<String> =
            if s.required_permissions.is_empty() && s.operation_rules.is_empty() {
                default_permissions(tool, &s.action, tool_spec)
            } else {
                s.required_permissions
                    .iter()
                    .map(|p| normalize_permission(p))
                    .collect()
            };
        if !required.is_empty() {
            if s.match_mode == "any" {
                if !required.iter().any(|p| granted.contains(p)) {
                    return Verdict::Deny(format!(
                        "policy permission denied for tool={tool} rule={} required_any={}",
                        rule.name,
                        required.join(",")
                    ));
                }
            } else {
                let missing: Vec<&String> =
                    required.iter().filter(|p| !granted.contains(*p)).collect();
                if !missing.is_empty() {
                    let missing: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                    return Verdict::Deny(format!(
                        "policy permission denied for tool={tool} rule={} required={}",
                        rule.name,
                        missing.join(",")
                    ));
                }
            }
        }
        for class in &classes {
            let verdict = s
                .operation_rules
                .iter()
                .find(|r| r.operation_class.eq_ignore_ascii_case(class))
                .or_else(|| s.operation_rules.iter().find(|r| r.operation_class == "*"))
                .map(|r| r.verdict.as_str())
                .unwrap_or("allow");
            if rank(verdict) > rank(&worst.0) {
                worst = (verdict.to_string(), class.clone(), rule.name.clone());
            }
        }
    }
    match worst.0.as_str() {
        "deny" => Verdict::Deny(format!(
            "policy operation denied for tool={tool} rule={} operation_class={}",
            worst.2, worst.1
        )),
        "approval_required" => Verdict::ApprovalRequired {
            operation_class: worst.1.clone(),
            reason: format!(
                "tool={tool} operation_class={} requires approval (rule={})",
                worst.1, worst.2
            ),
        },
        _ => Verdict::Allow,
    }
}

/// A call that is waiting for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingApproval {
    /// Calling agent.
    pub agent: String,
    /// Tool name.
    pub tool: String,
    /// Call input.
    pub input: String,
    /// Operation class that needs approval.
    pub operation_class: String,
    /// Why.
    pub reason: String,
}

/// An approved call: agent and tool, usable once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Agent name.
    pub agent: String,
    /// Tool name.
    pub tool: String,
}

/// The §8.2 authorizer for one task run.
#[derive(Debug, Default)]
pub struct RoleAuthorizer {
    agents: HashMap<String, AgentGrants>,
    rules: Vec<PermissionRule>,
    grants: Mutex<Vec<Grant>>,
    pending: Mutex<Option<PendingApproval>>,
}

impl RoleAuthorizer {
    /// An authorizer over already loaded agents (by lower-cased name) and rules.
    pub fn new(agents: HashMap<String, AgentGrants>, rules: Vec<PermissionRule>) -> Self {
        Self {
            agents: agents
                .into_iter()
                .map(|(k, v)| (k.to_lowercase(), v))
                .collect(),
            rules,
            ..Default::default()
        }
    }

    /// Loads the roles of `agents` (name, spec) and the ToolPermissions of `namespace`.
    pub async fn load(
        store: &dyn Store,
        namespace: &str,
        agents: &[(String, AgentSpec)],
    ) -> orloj_core::Result<Self> {
        let mut by_agent = HashMap::new();
        for (name, spec) in agents {
            let mut g = AgentGrants {
                spec: spec.clone(),
                ..Default::default()
            };
            for role in &spec.roles {
                let (r_ns, r_name) = split_ref(role, namespace);
                match store.get(Kind::AgentRole, r_ns, r_name).await {
                    Ok(obj) => match spec_of::<AgentRoleSpec>(&obj) {
                        Ok(r) => g.roles.push((role.clone(), r)),
                        Err(_) => g.missing_roles.push(role.clone()),
                    },
                    Err(e) if e.kind() == ErrorKind::NotFound => g.missing_roles.push(role.clone()),
                    Err(e) => return Err(e),
                }
            }
            by_agent.insert(name.clone(), g);
        }
        let list = store
            .list(
                Kind::ToolPermission,
                &ListOptions {
                    namespace: Some(namespace.to_string()),
                    ..Default::default()
                },
            )
            .await?;
        let rules = list
            .items
            .iter()
            .filter_map(|o| {
                Some(PermissionRule {
                    name: o.name().to_string(),
                    spec: spec_of(o).ok()?,
                })
            })
            .collect();
        Ok(Self::new(by_agent, rules))
    }

    /// Adds approved calls; each lets one `approval_required` call of that agent and tool run.
    pub fn with_grants(self, grants: Vec<Grant>) -> Self {
        *self.grants.lock().unwrap_or_else(|e| e.into_inner()) = grants;
        self
    }

    /// The call that last asked for approval, taken.
    pub fn take_pending(&self) -> Option<PendingApproval> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The verdict for `invocation`, consuming a grant when one turns an approval into allow.
    pub fn decide(&self, invocation: &ToolInvocation) -> Authorization {
        let tool = invocation.tool.name();
        // Built-in memory tools are gated by the agent's `memory.allow`, not by roles (spec §10).
        if invocation.tool.spec.get("type").and_then(|t| t.as_str())
            == Some(crate::memory::MEMORY_TOOL_TYPE)
        {
            return Authorization::Allow;
        }
        let Some(grants) = self.agents.get(&invocation.agent.to_lowercase()) else {
            // An agent outside the plan has nothing to check against; refuse rather than guess.
            return Authorization::Deny(format!(
                "policy permission denied for tool={tool} unknown agent={}",
                invocation.agent
            ));
        };
        let tool_spec = spec_of::<ToolSpec>(&invocation.tool).unwrap_or_default();
        match evaluate(&invocation.agent, grants, &self.rules, tool, &tool_spec) {
            Verdict::Allow => Authorization::Allow,
            Verdict::Deny(why) => Authorization::Deny(why),
            Verdict::ApprovalRequired {
                operation_class,
                reason,
            } => {
                let mut list = self.grants.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(pos) = list.iter().position(|g| {
                    g.agent.eq_ignore_ascii_case(&invocation.agent)
                        && g.tool.eq_ignore_ascii_case(tool)
                }) {
                    list.remove(pos);
                    return Authorization::Allow;
                }
                *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(PendingApproval {
                    agent: invocation.agent.clone(),
                    tool: tool.to_string(),
                    input: invocation.input.clone(),
                    operation_class,
                    reason: reason.clone(),
                });
                Authorization::ApprovalRequired(reason)
            }
        }
    }
}

#[async_trait]
impl ToolAuthorizer for RoleAuthorizer {
    async fn authorize(&self, invocation: &ToolInvocation) -> Authorization {
        self.decide(invocation)
    }
}

/// Runs every call through an authorizer before the wrapped executor; refused calls never
/// reach it.
pub struct AuthorizedExecutor {
    inner: Arc<dyn ToolExecutor>,
    authorizer: Arc<dyn ToolAuthorizer>,
}

impl AuthorizedExecutor {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ToolExecutor>, authorizer: Arc<dyn ToolAuthorizer>) -> Self {
        Self { inner, authorizer }
    }
}

#[async_trait]
impl ToolExecutor for AuthorizedExecutor {
    async fn execute(&self, invocation: ToolInvocation) -> Result<ToolOutput, ToolError> {
        let name = invocation.tool.name().to_string();
        match self.authorizer.authorize(&invocation).await {
            Authorization::Allow => self.inner.execute(invocation).await,
            Authorization::Deny(why) => {
                let mut err = ToolError::new(
                    ToolErrorCode::PermissionDenied,
                    format!("tool permission denied: tool={name} {why}"),
                );
                err.reason = "tool_permission_denied".into();
                err.retryable = false;
                Err(err)
            }
            Authorization::ApprovalRequired(why) => {
                let mut err = ToolError::new(
                    ToolErrorCode::ApprovalPending,
                    format!("tool approval required: tool={name} {why}"),
                );
                err.retryable = false;
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orloj_core::resources::OperationRule;

    fn role(perms: &[&str]) -> AgentGrants {
        AgentGrants {
            roles: vec![(
                "r".into(),
                AgentRoleSpec {
                    permissions: perms.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                },
            )],
            ..Default::default()
        }
    }

    fn rule(name: &str, spec: ToolPermissionSpec) -> PermissionRule {
        PermissionRule {
            name: name.into(),
            spec: ToolPermissionSpec {
                match_mode: if spec.match_mode.is_empty() {
                    "all".into()
                } else {
                    spec.match_mode.clone()
                },
                apply_mode: if spec.apply_mode.is_empty() {
                    "global".into()
                } else {
                    spec.apply_mode.clone()
                },
                action: "invoke".into(),
                ..spec
            },
        }
    }

    #[test]
    fn normalisation_and_defaults() {
        assert_eq!(normalize_permission(" Tool:My-Tool/X "), "tool:my_tool_x");
        let spec = ToolSpec {
            capabilities: vec!["docs.read".into()],
            ..Default::default()
        };
        assert_eq!(
            default_permissions("web-search", "", &spec),
            ["tool:web_search:invoke", "capability:docs.read"]
        );
    }

    #[test]
    fn roles_and_rules() {
        let spec = ToolSpec::default();
        let none = AgentGrants::default();
        assert_eq!(evaluate("a", &none, &[], "t", &spec), Verdict::Allow);
        // Roles but no rule: defaults must be granted.
        let v = evaluate("a", &role(&["capability:x"]), &[], "t", &spec);
        assert_eq!(
            v,
            Verdict::Deny("policy permission denied for tool=t required=tool:t:invoke".into())
        );
        assert_eq!(
            evaluate("a", &role(&["TOOL:T:INVOKE"]), &[], "t", &spec),
            Verdict::Allow
        );
        let all = rule(
            "p",
            ToolPermissionSpec {
                tool_ref: "t".into(),
                required_permissions: vec!["a".into(), "b".into()],
                ..Default::default()
            },
        );
        assert!(matches!(
            evaluate("x", &role(&["a"]), std::slice::from_ref(&all), "t", &spec),
            Verdict::Deny(m) if m.contains("rule=p required=b")
        ));
        let any = rule(
            "p",
            ToolPermissionSpec {
                match_mode: "any".into(),
                ..all.spec.clone()
            },
        );
        assert_eq!(
            evaluate("x", &role(&["a"]), &[any], "t", &spec),
            Verdict::Allow
        );
        // Scoped to another agent: not applicable, and roles grant the default.
        let scoped = rule(
            "s",
            ToolPermissionSpec {
                apply_mode: "scoped".into(),
                target_agents: vec!["other".into()],
                ..all.spec.clone()
            },
        );
        assert_eq!(
            evaluate(
                "x",
                &role(&["tool:t:invoke"]),
                std::slice::from_ref(&scoped),
                "t",
                &spec
            ),
            Verdict::Allow
        );
        assert!(matches!(
            evaluate("other", &role(&["tool:t:invoke"]), &[scoped], "t", &spec),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn operation_rules_and_bypass() {
        let write = ToolSpec {
            operation_classes: vec!["read".into(), "write".into()],
            ..Default::default()
        };
        let r = rule(
            "ops",
            ToolPermissionSpec {
                tool_ref: "t".into(),
                operation_rules: vec![
                    OperationRule {
                        operation_class: "write".into(),
                        verdict: "approval_required".into(),
                    },
                    OperationRule {
                        operation_class: "*".into(),
                        verdict: "allow".into(),
                    },
                ],
                ..Default::default()
            },
        );
        let g = AgentGrants::default();
        assert!(matches!(
            evaluate("a", &g, std::slice::from_ref(&r), "t", &write),
            Verdict::ApprovalRequired { operation_class, .. } if operation_class == "write"
        ));
        let mut deny = r.clone();
        deny.spec.operation_rules[1].verdict = "deny".into();
        deny.name = "ops2".into();
        assert!(matches!(
            evaluate("a", &g, &[r.clone(), deny], "t", &write),
            Verdict::Deny(m) if m.starts_with("policy operation denied for tool=t")
        ));
        let mut bypass = AgentGrants::default();
        bypass.spec.allowed_tools = vec!["T".into()];
        assert_eq!(evaluate("a", &bypass, &[r], "t", &write), Verdict::Allow);
        let missing = AgentGrants {
            missing_roles: vec!["ghost".into()],
            ..Default::default()
        };
        assert!(matches!(
            evaluate("a", &missing, &[], "t", &write),
            Verdict::Deny(m) if m.contains("missing_roles=ghost")
        ));
    }
}
