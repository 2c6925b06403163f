//! Governance enforced by the engine and the worker (spec runtime §8): AgentPolicy checks and
//! token budget, the AgentRole/ToolPermission authorizer, and the ToolApproval round trip.

#[path = "engine_support.rs"]
mod support;

use orloj_core::model::Usage;
use orloj_core::resources::{ToolApprovalSpec, ToolApprovalStatus};
use orloj_core::{Kind, ListOptions, Object, Store, SystemClock, resources};
use orloj_runtime::engine::agent_turn::AgentRunner;
use orloj_runtime::worker::{Worker, WorkerConfig};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn worker(env: &Env) -> Worker {
    worker_with_interval(env, Duration::ZERO)
}

fn doc(kind: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: orloj.dev/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n{spec}\n"
    )
}

fn system(agents: &str) -> String {
    doc("AgentSystem", "s", &format!("  agents: [{agents}]"))
}

/// Applies the manifests plus the endpoint and task `t1`, runs the worker once, returns `t1`.
async fn run(env: &Env, yaml: &str) -> Object {
    apply(
        &env.store,
        &format!(
            "{ENDPOINT}{yaml}{}",
            task_manifest("t1", "s", "  input: {topic: rust}")
        ),
    )
    .await;
    worker(env).run_until_idle().await.expect("worker runs");
    task(&env.store, "t1").await
}

fn one_tool_agent(tool_name: &str, extra: &str) -> String {
    format!(
        "{}{}{}",
        tool(tool_name),
        agent(
            "r",
            &format!("  prompt: research\n  tools: [{tool_name}]{extra}")
        ),
        system("r")
    )
}

#[tokio::test]
async fn allowed_models_violation_fails_naming_the_model() {
    let env = env_with(MockModel::default());
    let policy = doc(
        "AgentPolicy",
        "only-claude",
        "  apply_mode: global\n  allowed_models: [claude-3]",
    );
    let t = run(&env, &format!("{}{policy}", one_tool_agent("web", ""))).await;
    let s = status(&t);
    assert_eq!(s.phase, "Failed");
    assert_eq!(
        s.last_error,
        "policy \"only-claude\" disallows model \"gpt-4o\" (model_ref=\"openai-default\") for agent \"r\""
    );
    assert!(
        s.trace
            .iter()
            .any(|e| e.event_type == "policy_violation" && e.agent == "r")
    );
    assert!(
        env.model.requests.lock().expect("lock").is_empty(),
        "the agent never ran"
    );
}

#[tokio::test]
async fn blocked_tool_never_executes() {
    let env = env_with(MockModel::default());
    let policy = doc(
        "AgentPolicy",
        "no-web",
        "  target_systems: [s]\n  blocked_tools: [web]",
    );
    let t = run(&env, &format!("{}{policy}", one_tool_agent("web", ""))).await;
    let s = status(&t);
    assert_eq!(s.phase, "Failed");
    assert_eq!(
        s.last_error,
        "policy \"no-web\" blocks tool \"web\" for agent \"r\""
    );
    assert!(env.tools.names().is_empty());
}

#[tokio::test]
async fn policy_for_another_task_does_not_apply_and_output_reports_policies() {
    let env = env_with(MockModel::default());
    let yaml = format!(
        "{}{}{}",
        one_tool_agent("web", ""),
        doc(
            "AgentPolicy",
            "other",
            "  target_tasks: [t2]\n  blocked_tools: [web]"
        ),
        doc(
            "AgentPolicy",
            "budget",
            "  apply_mode: global\n  max_tokens_per_run: 100000"
        ),
    );
    let t = run(&env, &yaml).await;
    let s = status(&t);
    assert_eq!(s.phase, "Succeeded", "{}", s.last_error);
    assert_eq!(&*s.output["policies_enforced"], "1");
    assert_eq!(&*s.output["policies_matched"], "budget");
    assert_eq!(&*s.output["token_budget"], "100000");
    let used: u64 = s.output["tokens_used_total"].parse().expect("number");
    assert_eq!(
        s.output["tokens_used_remaining"].to_string(),
        (100000 - used).to_string()
    );
    assert_eq!(env.tools.names(), ["web"]);
}

#[tokio::test]
async fn token_budget_is_checked_before_the_next_model_call() {
    let env = env_with(MockModel {
        usage: Some(Usage {
            input_tokens: 60,
            output_tokens: 40,
            total_tokens: 100,
        }),
        ..Default::default()
    });
    let policy = doc(
        "AgentPolicy",
        "tight",
        "  apply_mode: global\n  max_tokens_per_run: 100",
    );
    let t = run(&env, &format!("{}{policy}", one_tool_agent("web", ""))).await;
    let s = status(&t);
    assert_eq!(s.phase, "Failed");
    assert!(
        s.last_error.contains("token budget exceeded"),
        "{}",
        s.last_error
    );
    assert!(
        s.last_error.contains("used=100 budget=100"),
        "{}",
        s.last_error
    );
    // Step 1 (100 tokens, one tool call) ran; step 2's model call was never made.
    assert_eq!(env.model.requests.lock().expect("lock").len(), 1);
    assert_eq!(env.tools.names(), ["web"]);
    assert!(
        s.trace
            .iter()
            .any(|e| e.event_type == "token_budget_exceeded")
    );
}

const ROLE_A: &str = "---\napiVersion: orloj.dev/v1\nkind: AgentRole\nmetadata: {name: role-a}\nspec: {permissions: [\"perm:a\"]}\n";

fn permission(name: &str, spec: &str) -> String {
    doc("ToolPermission", name, spec)
}

#[tokio::test]
async fn permission_denial_traces_and_never_executes_the_tool() {
    let env = env_with(MockModel::default());
    let yaml = format!(
        "{}{ROLE_A}{}",
        one_tool_agent("web", "\n  roles: [role-a]"),
        permission(
            "web-perm",
            "  tool_ref: web\n  required_permissions: [\"perm:b\"]"
        ),
    );
    let t = run(&env, &yaml).await;
    let s = status(&t);
    assert_eq!(s.phase, "Failed");
    assert!(
        s.last_error.contains("tool permission denied"),
        "{}",
        s.last_error
    );
    let denied = s
        .trace
        .iter()
        .find(|e| e.event_type == "tool_permission_denied")
        .expect("tool_permission_denied trace");
    assert_eq!(denied.tool, "web");
    assert_eq!(denied.agent, "r");
    assert_eq!(denied.error_code, "permission_denied");
    assert_eq!(denied.error_reason, "tool_permission_denied");
    assert!(
        denied.message.contains("rule=web-perm required=perm:b"),
        "{}",
        denied.message
    );
    assert_eq!(env.tools.calls.lock().expect("lock").len(), 0);
}

async fn match_mode_case(mode: &str) -> (Object, Arc<FakeTools>) {
    let env = env_with(MockModel::default());
    let yaml = format!(
        "{}{ROLE_A}{}",
        one_tool_agent("web", "\n  roles: [role-a]"),
        permission(
            "web-perm",
            &format!(
                "  tool_ref: web\n  match_mode: {mode}\n  required_permissions: [\"perm:a\", \"perm:b\"]"
            )
        ),
    );
    (run(&env, &yaml).await, env.tools.clone())
}

#[tokio::test]
async fn match_mode_any_allows_and_all_denies() {
    let (t, tools) = match_mode_case("any").await;
    assert_eq!(status(&t).phase, "Succeeded", "{}", status(&t).last_error);
    assert_eq!(tools.names(), ["web"]);
    let (t, tools) = match_mode_case("all").await;
    let s = status(&t);
    assert_eq!(s.phase, "Failed");
    assert!(s.last_error.contains("required=perm:b"), "{}", s.last_error);
    assert!(tools.names().is_empty());
}

#[tokio::test]
async fn scoped_permission_applies_only_to_its_target_agents() {
    let env = env_with(MockModel::default());
    let yaml = format!(
        "{}{}{}{}{}",
        tool("web"),
        agent("writer", "  prompt: write\n  tools: [web]"),
        agent("planner", "  prompt: plan\n  tools: [web]"),
        system("writer, planner"),
        permission(
            "web-perm",
            "  tool_ref: web\n  apply_mode: scoped\n  target_agents: [planner]\n  required_permissions: [\"perm:x\"]"
        ),
    );
    let t = run(&env, &yaml).await;
    let s = status(&t);
    assert_eq!(s.phase, "Failed");
    let calls: Vec<String> = env
        .tools
        .calls
        .lock()
        .expect("lock")
        .iter()
        .map(|c| c.agent.clone())
        .collect();
    assert_eq!(calls, ["writer"], "only the untargeted agent ran the tool");
    let denied = s
        .trace
        .iter()
        .find(|e| e.event_type == "tool_permission_denied")
        .expect("denial trace");
    assert_eq!(denied.agent, "planner");
}

fn approval_setup() -> String {
    format!(
        "{}{}",
        one_tool_agent("deploy", ""),
        permission(
            "deploy-perm",
            "  tool_ref: deploy\n  operation_rules: [{operation_class: \"*\", verdict: approval_required}]"
        ),
    )
}

async fn approvals(store: &Arc<dyn Store>) -> Vec<Object> {
    store
        .list(Kind::ToolApproval, &ListOptions::default())
        .await
        .expect("list")
        .items
}

/// Writes an approval's status the way the API's approve/deny endpoints do.
async fn decide(store: &Arc<dyn Store>, approval: &Object, status: serde_json::Value) {
    store
        .update_status(
            Kind::ToolApproval,
            approval.namespace(),
            approval.name(),
            Some(&approval.metadata.resource_version),
            status,
        )
        .await
        .expect("status write");
}

async fn waiting(env: &Env) -> Object {
    let t = run(env, &approval_setup()).await;
    let s = status(&t);
    assert_eq!(s.phase, "WaitingApproval", "{}", s.last_error);
    assert!(
        s.last_error.contains("tool approval required"),
        "{}",
        s.last_error
    );
    assert_eq!(s.claimed_by, "worker-1", "lease fields stay");
    assert!(!s.lease_until.is_empty());
    assert!(
        s.trace
            .iter()
            .any(|e| e.event_type == "tool_approval_pending")
    );
    assert!(env.tools.names().is_empty(), "nothing ran before approval");
    let list = approvals(&env.store).await;
    assert_eq!(list.len(), 1);
    let spec: ToolApprovalSpec = resources::spec_of(&list[0]).expect("spec");
    assert_eq!(spec.task_ref, "default/t1");
    assert_eq!(spec.tool, "deploy");
    assert_eq!(spec.agent, "r");
    assert_eq!(spec.operation_class, "read");
    assert_eq!(spec.input, "rust");
    assert_eq!(spec.ttl, "10m");
    let st: ToolApprovalStatus =
        resources::status_of::<ToolApprovalSpec>(&list[0]).expect("status");
    assert_eq!(st.phase, "Pending");
    assert!(!st.expires_at.is_empty());
    // While Pending, the sweep leaves the task waiting.
    worker(env).run_until_idle().await.expect("worker runs");
    assert_eq!(
        status(&task(&env.store, "t1").await).phase,
        "WaitingApproval"
    );
    list[0].clone()
}

#[tokio::test]
async fn approved_call_resumes_and_executes_exactly_once() {
    let env = env_with(MockModel::default());
    let approval = waiting(&env).await;
    decide(
        &env.store,
        &approval,
        json!({"phase": "Approved", "decision": "approved", "decided_by": "ops",
               "decided_at": "2026-01-01T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z"}),
    )
    .await;
    let ran = worker(&env).run_until_idle().await.expect("worker runs");
    assert_eq!(ran, 1);
    let s = status(&task(&env.store, "t1").await);
    assert_eq!(s.phase, "Succeeded", "{}", s.last_error);
    assert_eq!(env.tools.names(), ["deploy"]);
    assert!(
        s.history.iter().any(
            |h| h.event_type == "running" && h.message == "tool approval granted, task resumed"
        )
    );
    assert!(s.claimed_by.is_empty());
    assert_eq!(s.attempts, 1, "resuming is not a new attempt");
}

#[tokio::test]
async fn denied_approval_fails_the_task() {
    let env = env_with(MockModel::default());
    let approval = waiting(&env).await;
    decide(
        &env.store,
        &approval,
        json!({"phase": "Denied", "decision": "denied", "decided_by": "ops"}),
    )
    .await;
    worker(&env).run_until_idle().await.expect("worker runs");
    let s = status(&task(&env.store, "t1").await);
    assert_eq!(s.phase, "Failed");
    assert_eq!(s.last_error, "tool approval denied");
    assert!(env.tools.names().is_empty());
}

#[tokio::test]
async fn expired_approval_fails_the_task() {
    let env = env_with(MockModel::default());
    let approval = waiting(&env).await;
    decide(
        &env.store,
        &approval,
        json!({"phase": "Pending", "expires_at": "2000-01-01T00:00:00Z"}),
    )
    .await;
    worker(&env).run_until_idle().await.expect("worker runs");
    let s = status(&task(&env.store, "t1").await);
    assert_eq!(s.phase, "Failed");
    assert_eq!(s.last_error, "tool approval expired");
    let a = env
        .store
        .get(Kind::ToolApproval, "default", approval.name())
        .await
        .expect("approval");
    assert_eq!(a.phase(), "Expired");
    assert!(env.tools.names().is_empty());
}

#[tokio::test]
async fn running_worker_sweeps_and_resumes_an_approved_task() {
    let env = env_with(MockModel::default());
    let approval = waiting(&env).await;
    let config = WorkerConfig {
        poll_interval: Duration::from_millis(10),
        heartbeat_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let router = Arc::new(StoreRouter {
        store: env.store.clone(),
        model: env.model.clone(),
    });
    let clock = Arc::new(SystemClock);
    let runner =
        AgentRunner::new(env.tools.clone(), clock.clone()).with_step_interval(Duration::ZERO);
    let w = Worker::new(config, env.store.clone(), clock, router, env.tools.clone())
        .with_runner(runner);
    let cancel = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(w.run(cancel.clone()));
    decide(
        &env.store,
        &approval,
        json!({"phase": "Approved", "decision": "approved", "decided_by": "ops"}),
    )
    .await;
    let mut phase = String::new();
    for _ in 0..300 {
        phase = status(&task(&env.store, "t1").await).phase;
        if phase == "Succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    handle.await.expect("join").expect("worker stops cleanly");
    assert_eq!(phase, "Succeeded");
    assert_eq!(env.tools.names(), ["deploy"]);
}
