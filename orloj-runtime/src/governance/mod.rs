//! Governance (spec runtime §8), enforced identically by every execution mode and scoped by the
//! task's namespace:
//!
//! * [`policy`]: AgentPolicy matching, `allowed_models` / `blocked_tools` checks and the token
//!   budget (§8.1).
//! * [`authorizer`]: the per-call [`ToolAuthorizer`](crate::tools::governed::ToolAuthorizer)
//!   built from AgentRoles and ToolPermissions (§8.2), and [`authorizer::AuthorizedExecutor`],
//!   which wraps any tool executor so that no call skips it.
//! * [`approval`]: ToolApproval creation, expiry and the verdict a waiting task resumes on
//!   (§8.3).

pub mod approval;
pub mod authorizer;
pub mod policy;

use crate::engine::graph::Plan;
use authorizer::RoleAuthorizer;
use orloj_core::{Object, Store};
use policy::PolicySet;

/// Loads the governance of one task run: its matched AgentPolicies and the role/permission
/// authorizer for the plan's agents, with a grant for every Approved ToolApproval of the task.
/// The error is a task-level failure reason (store trouble reads as temporary, so retryable).
pub async fn for_task(
    store: &dyn Store,
    task: &Object,
    plan: &Plan,
) -> Result<(PolicySet, RoleAuthorizer), String> {
    let ns = task.namespace();
    let temporary = |what: &str, e: orloj_core::Error| {
        format!("{what} lookup failed (temporary store error): {e}")
    };
    let names: Vec<String> = plan.agents.iter().map(|a| a.name.clone()).collect();
    let agents: Vec<(String, orloj_core::resources::AgentSpec)> = plan
        .agents
        .iter()
        .map(|a| (a.name.clone(), a.spec.clone()))
        .collect();
    // Three independent reads: one round trip's wait instead of three.
    let (policies, grants, authorizer) = futures::join!(
        PolicySet::load(store, ns, task.name(), &plan.system, &names),
        approval::approvals_of(store, ns, task.name()),
        RoleAuthorizer::load(store, ns, &agents),
    );
    let policies = policies.map_err(|e| temporary("agentpolicy", e))?;
    let grants = grants.map_err(|e| temporary("toolapproval", e))?;
    let authorizer = authorizer
        .map_err(|e| temporary("agentrole/toolpermission", e))?
        .with_grants(approval::grants(&grants));
    Ok((policies, authorizer))
}
