//! AgentPolicy matching and enforcement (spec runtime §8.1).
//!
//! Policies are read from the task's namespace only (DESIGN: governance is scoped by
//! namespace; the reference lists them across all namespaces).

use orloj_core::resources::{AgentPolicySpec, spec_of};
use orloj_core::{Kind, ListOptions, Object, Store};

/// One matched policy.
#[derive(Debug, Clone)]
pub struct MatchedPolicy {
    /// Policy name.
    pub name: String,
    /// Its normalized spec.
    pub spec: AgentPolicySpec,
}

/// The policies that apply to one task.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    /// Matched policies, sorted by name.
    pub policies: Vec<MatchedPolicy>,
}

fn contains_ci(list: &[String], value: &str) -> bool {
    let value = value.trim();
    list.iter().any(|v| {
        let v = v.trim();
        // Targets may be written as `ns/name`.
        v.eq_ignore_ascii_case(value)
            || v.rsplit_once('/')
                .is_some_and(|(_, n)| n.eq_ignore_ascii_case(value))
    })
}

impl PolicySet {
    /// Selects, among `policies`, those applying to the task `task` of system `system` whose
    /// agents are `agents`: `global` policies always; `scoped` ones when they name the task,
    /// the system or one of the agents (case-insensitive).
    pub fn select(policies: &[Object], task: &str, system: &str, agents: &[String]) -> Self {
        let mut matched: Vec<MatchedPolicy> = policies
            .iter()
            .filter_map(|o| {
                let spec: AgentPolicySpec = spec_of(o).ok()?;
                let applies = spec.apply_mode == "global"
                    || contains_ci(&spec.target_tasks, task)
                    || contains_ci(&spec.target_systems, system)
                    || agents.iter().any(|a| contains_ci(&spec.target_agents, a));
                applies.then(|| MatchedPolicy {
                    name: o.name().to_string(),
                    spec,
                })
            })
            .collect();
        matched.sort_by(|a, b| a.name.cmp(&b.name));
        Self { policies: matched }
    }

    /// Lists the AgentPolicies of `namespace` and selects those of the task.
    pub async fn load(
        store: &dyn Store,
        namespace: &str,
        task: &str,
        system: &str,
        agents: &[String],
    ) -> orloj_core::Result<Self> {
        let list = store
            .list(
                Kind::AgentPolicy,
                &ListOptions {
                    namespace: Some(namespace.to_string()),
                    ..Default::default()
                },
            )
            .await?;
        Ok(Self::select(&list.items, task, system, agents))
    }

    /// The token budget: the smallest positive `max_tokens_per_run` among the matches (0 =
    /// none).
    pub fn token_budget(&self) -> u64 {
        self.policies
            .iter()
            .filter_map(|p| u64::try_from(p.spec.max_tokens_per_run).ok())
            .filter(|b| *b > 0)
            .min()
            .unwrap_or(0)
    }

    /// Matched policy names, comma separated.
    pub fn names(&self) -> String {
        self.policies
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether `policy` constrains agent `agent`: a policy selected only through
    /// `target_agents` applies to those agents alone.
    fn covers(policy: &MatchedPolicy, task: &str, system: &str, agent: &str) -> bool {
        let s = &policy.spec;
        s.apply_mode == "global"
            || contains_ci(&s.target_tasks, task)
            || contains_ci(&s.target_systems, system)
            || contains_ci(&s.target_agents, agent)
    }

    /// Checks one agent before it runs: its model must be in every non-empty `allowed_models`
    /// and none of its tools may be in a `blocked_tools`. The error is the non-retryable
    /// policy text of §8.1.
    pub fn check_agent(
        &self,
        task: &str,
        system: &str,
        agent: &str,
        model: &str,
        model_ref: &str,
        tools: &[String],
    ) -> Result<(), String> {
        for p in self
            .policies
            .iter()
            .filter(|p| Self::covers(p, task, system, agent))
        {
            let allowed = &p.spec.allowed_models;
            if !allowed.is_empty() && !allowed.iter().any(|m| m.trim().eq_ignore_ascii_case(model))
            {
                return Err(format!(
                    "policy \"{}\" disallows model \"{model}\" (model_ref=\"{model_ref}\") for agent \"{agent}\"",
                    p.name
                ));
            }
            if let Some(tool) = tools.iter().find(|t| contains_ci(&p.spec.blocked_tools, t)) {
                return Err(format!(
                    "policy \"{}\" blocks tool \"{tool}\" for agent \"{agent}\"",
                    p.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orloj_core::resources::{normalize, object_from_spec};

    fn policy(name: &str, spec: AgentPolicySpec) -> Object {
        normalize(object_from_spec("ns", name, &spec).expect("object")).expect("valid")
    }

    #[test]
    fn matching_budget_and_checks() {
        let objs = vec![
            policy(
                "b-global",
                AgentPolicySpec {
                    apply_mode: "global".into(),
                    max_tokens_per_run: 500,
                    ..Default::default()
                },
            ),
            policy(
                "a-sys",
                AgentPolicySpec {
                    target_systems: vec!["Sys".into()],
                    max_tokens_per_run: 200,
                    allowed_models: vec!["gpt-4o".into()],
                    ..Default::default()
                },
            ),
            policy(
                "c-other",
                AgentPolicySpec {
                    target_tasks: vec!["other".into()],
                    max_tokens_per_run: 10,
                    ..Default::default()
                },
            ),
            policy(
                "d-agent",
                AgentPolicySpec {
                    target_agents: vec!["writer".into()],
                    blocked_tools: vec!["shell".into()],
                    ..Default::default()
                },
            ),
        ];
        let agents = vec!["planner".to_string(), "writer".to_string()];
        let set = PolicySet::select(&objs, "t1", "sys", &agents);
        assert_eq!(set.names(), "a-sys,b-global,d-agent");
        assert_eq!(set.token_budget(), 200);
        assert!(
            set.check_agent("t1", "sys", "planner", "gpt-4o", "m", &["shell".into()])
                .is_ok(),
            "d-agent only targets writer"
        );
        let err = set
            .check_agent("t1", "sys", "writer", "gpt-4o", "m", &["shell".into()])
            .expect_err("blocked");
        assert_eq!(
            err,
            "policy \"d-agent\" blocks tool \"shell\" for agent \"writer\""
        );
        let err = set
            .check_agent("t1", "sys", "planner", "claude", "m", &[])
            .expect_err("model");
        assert!(err.contains("disallows model \"claude\""), "{err}");
        assert!(PolicySet::select(&objs, "t1", "x", &[]).token_budget() == 500);
    }
}
