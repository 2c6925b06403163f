//! The sequential graph engine driven by a worker: pipeline, validation failures, cycles,
//! timeouts and token accounting.

#[path = "engine_support.rs"]
mod support;

use orloj_runtime::engine::graph::CYCLE_ERROR;
use orloj_runtime::worker::Worker;
use std::time::Duration;
use support::*;

fn worker(env: &Env, step_interval: Duration) -> Worker {
    worker_with_interval(env, step_interval)
}

const PIPELINE: &str = r#"
---
apiVersion: orloj.dev/v1
kind: AgentSystem
metadata: {name: pipe}
spec:
  agents: [writer, planner, research]
  graph:
    planner: {edges: [{to: research}]}
    research: {edges: [{to: writer}]}
"#;

async fn run_task(env: &Env, extra_yaml: &str, task_yaml: &str) -> orloj_core::Object {
    apply(&env.store, &format!("{ENDPOINT}{extra_yaml}{task_yaml}")).await;
    let ran = worker(env, Duration::ZERO)
        .run_until_idle()
        .await
        .expect("worker runs");
    assert_eq!(ran, 1);
    task(&env.store, "t1").await
}

#[tokio::test]
async fn pipeline_succeeds_with_trace_history_messages_and_handoffs() {
    let env = env_with(MockModel::default());
    let agents = format!(
        "{}{}{}",
        agent("planner", "  prompt: plan"),
        agent("research", "  prompt: dig"),
        agent("writer", "  prompt: write")
    );
    let t = run_task(
        &env,
        &format!("{agents}{PIPELINE}"),
        &task_manifest("t1", "pipe", "  input: {topic: rust}"),
    )
    .await;
    let s = status(&t);
    assert_eq!(s.phase, "Succeeded", "lastError={}", s.last_error);
    assert_eq!(s.attempts, 1);
    assert!(s.claimed_by.is_empty() && s.lease_until.is_empty());
    assert!(!s.completed_at.is_empty());
    let history: Vec<&str> = s.history.iter().map(|h| h.event_type.as_str()).collect();
    assert_eq!(history, ["claim", "succeeded"]);

    let types: Vec<&str> = s.trace.iter().map(|t| t.event_type.as_str()).collect();
    assert_eq!(types.first(), Some(&"task_start"));
    assert_eq!(types.last(), Some(&"task_summary"));
    assert_eq!(types.iter().filter(|t| **t == "agent_start").count(), 3);
    assert_eq!(types.iter().filter(|t| **t == "agent_end").count(), 3);
    assert_eq!(types.iter().filter(|t| **t == "agent_message").count(), 2);
    assert!(types.contains(&"model_call") && types.contains(&"model_output"));
    for ev in &s.trace {
        assert!(ev.step_id.starts_with("a001.s"), "{ev:?}");
        assert_eq!(ev.attempt, 1);
        assert!(!ev.timestamp.is_empty());
    }

    let msgs: Vec<(&str, &str, &str, &str)> = s
        .messages
        .iter()
        .map(|m| {
            (
                m.from_agent.as_str(),
                m.to_agent.as_str(),
                m.message_type.as_str(),
                m.phase.as_str(),
            )
        })
        .collect();
    assert_eq!(
        msgs,
        [
            ("system", "planner", "task_start", "Succeeded"),
            ("planner", "research", "task_handoff", "Succeeded"),
            ("research", "writer", "task_handoff", "Succeeded"),
        ]
    );
    assert_eq!(s.messages[0].content, "rust");
    assert_eq!(
        s.messages[1].message_id,
        "default/t1/a001/h002/planner/research"
    );
    assert_eq!(s.messages[1].trace_id, "default/t1/a001");
    assert_eq!(s.messages[1].task_id, "default/t1");
    // The next agent receives the previous agent's model output.
    assert_eq!(s.messages[1].content, "model=gpt-4o step=1");

    let out = &s.output;
    assert_eq!(&*out["agents_executed"], "3");
    assert_eq!(&*out["execution_order"], "planner -> research -> writer");
    assert_eq!(&*out["agent.1.name"], "planner");
    assert_eq!(&*out["agent.2.name"], "research");
    assert_eq!(&*out["agent.1.message_to"], "research");
    assert_eq!(&*out["agent.1.message_content"], "model=gpt-4o step=1");
    assert_eq!(&*out["result"], "executed");
    assert_eq!(&*out["system"], "pipe");
    assert_eq!(&*out["topic"], "rust");
    assert_eq!(&*out["last_agent"], "writer");

    let requests = env.model.requests.lock().expect("lock").clone();
    let research = requests
        .iter()
        .find(|r| r.agent == "research")
        .expect("research called");
    assert_eq!(research.context["inbox.from"], "planner");
    assert_eq!(research.context["inbox.content"], "model=gpt-4o step=1");
    assert_eq!(research.context["previous_agent"], "planner");
    assert_eq!(
        research.context["previous_agent_last_event"],
        "no tools configured"
    );
    let logs = env
        .store
        .task_logs("default", "t1", 50)
        .await
        .expect("logs");
    assert!(
        logs.iter()
            .any(|l| l.contains("task claimed by worker=worker-1"))
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("task transitioned Running->Succeeded agents=3")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn missing_references_fail_naming_them() {
    let cases: Vec<(String, String, &str)> = vec![
        (
            String::new(),
            task_manifest("t1", "nope", ""),
            "agentsystem \"nope\" not found",
        ),
        (
            "---\napiVersion: orloj.dev/v1\nkind: AgentSystem\nmetadata: {name: s}\nspec: {agents: [ghost]}\n".into(),
            task_manifest("t1", "s", ""),
            "agent \"ghost\" not found",
        ),
        (
            format!(
                "{}---\napiVersion: orloj.dev/v1\nkind: AgentSystem\nmetadata: {{name: s}}\nspec: {{agents: [a]}}\n",
                agent("a", "  tools: [missing-tool]")
            ),
            task_manifest("t1", "s", ""),
            "agent \"a\" references missing tool \"missing-tool\"",
        ),
        (
            format!(
                "{}---\napiVersion: orloj.dev/v1\nkind: AgentSystem\nmetadata: {{name: s}}\nspec: {{agents: [a]}}\n",
                "---\napiVersion: orloj.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec: {model_ref: gone-endpoint}\n"
            ),
            task_manifest("t1", "s", ""),
            "agent \"a\" model resolution failed: model endpoint \"gone-endpoint\" not found",
        ),
    ];
    for (resources, task_yaml, expected) in cases {
        let env = env_with(MockModel::default());
        let t = run_task(&env, &resources, &task_yaml).await;
        let s = status(&t);
        assert_eq!(s.phase, "Failed", "case {expected}: {}", s.last_error);
        assert!(
            s.last_error.contains(expected),
            "expected {expected:?} in {:?}",
            s.last_error
        );
        assert!(s.next_attempt_at.is_empty());
        assert_eq!(
            s.history.last().map(|h| h.event_type.as_str()),
            Some("failed")
        );
        assert!(env.model.requests.lock().expect("lock").is_empty());
    }
}

const LOOP: &str = r#"
---
apiVersion: orloj.dev/v1
kind: AgentSystem
metadata: {name: loop}
spec:
  agents: [manager, research]
  graph:
    manager: {edges: [{to: research}]}
    research: {edges: [{to: manager}]}
"#;

#[tokio::test]
async fn cycle_without_max_turns_fails_with_the_cycle_error() {
    let env = env_with(MockModel::default());
    let agents = format!("{}{}", agent("manager", ""), agent("research", ""));
    let t = run_task(
        &env,
        &format!("{agents}{LOOP}"),
        &task_manifest("t1", "loop", ""),
    )
    .await;
    let s = status(&t);
    assert_eq!(s.phase, "Failed");
    assert!(s.last_error.contains(CYCLE_ERROR), "{}", s.last_error);
}

#[tokio::test]
async fn manager_research_loop_is_bounded_by_max_turns() {
    let env = env_with(MockModel::default());
    let agents = format!("{}{}", agent("manager", ""), agent("research", ""));
    let t = run_task(
        &env,
        &format!("{agents}{LOOP}"),
        &task_manifest("t1", "loop", "  max_turns: 3"),
    )
    .await;
    let s = status(&t);
    assert_eq!(s.phase, "Succeeded", "{}", s.last_error);
    let on_branch = s.messages.iter().filter(|m| m.branch_id == "b001").count();
    assert_eq!(on_branch, 3);
    assert_eq!(&*s.output["agents_executed"], "3");
    assert_eq!(
        &*s.output["execution_order"],
        "manager -> research -> manager"
    );
    assert!(s.messages.iter().all(|m| m.phase == "Succeeded"));
}

#[tokio::test]
async fn agent_timeout_dead_letters_with_one_attempt() {
    let env = env_with(MockModel::default());
    let yaml = format!(
        "{}---\napiVersion: orloj.dev/v1\nkind: AgentSystem\nmetadata: {{name: s}}\nspec: {{agents: [slow]}}\n",
        agent("slow", "  limits: {timeout: 1ms}")
    );
    apply(
        &env.store,
        &format!("{ENDPOINT}{yaml}{}", task_manifest("t1", "s", "")),
    )
    .await;
    // The default 25ms step cadence makes a 1ms timeout fire, as in the reference.
    let w = worker(
        &env,
        orloj_runtime::engine::agent_turn::DEFAULT_STEP_INTERVAL,
    );
    w.run_until_idle().await.expect("runs");
    let s = status(&task(&env.store, "t1").await);
    assert_eq!(s.phase, "DeadLetter", "{}", s.last_error);
    assert!(
        s.last_error.contains("timed out after 1ms"),
        "{}",
        s.last_error
    );
    let history: Vec<&str> = s.history.iter().map(|h| h.event_type.as_str()).collect();
    assert_eq!(history, ["claim", "deadletter"]);
    assert!(s.trace.iter().any(|t| t.event_type == "agent_error"));
    assert!(s.output.is_empty());
}

#[tokio::test]
async fn agent_timeout_is_retried_with_backoff_when_attempts_remain() {
    let env = env_with(MockModel::default());
    let yaml = format!(
        "{}---\napiVersion: orloj.dev/v1\nkind: AgentSystem\nmetadata: {{name: s}}\nspec: {{agents: [slow]}}\n",
        agent("slow", "  limits: {timeout: 1ms}")
    );
    apply(
        &env.store,
        &format!(
            "{ENDPOINT}{yaml}{}",
            task_manifest("t1", "s", "  retry: {max_attempts: 3, backoff: 10s}")
        ),
    )
    .await;
    let before = chrono::Utc::now();
    let w = worker(
        &env,
        orloj_runtime::engine::agent_turn::DEFAULT_STEP_INTERVAL,
    );
    assert_eq!(w.run_until_idle().await.expect("runs"), 1);
    let s = status(&task(&env.store, "t1").await);
    assert_eq!(s.phase, "Pending", "{}", s.last_error);
    assert_eq!(s.attempts, 1);
    assert!(
        s.last_error.contains("(retry scheduled in 10s)"),
        "{}",
        s.last_error
    );
    let next = chrono::DateTime::parse_from_rfc3339(&s.next_attempt_at).expect("nextAttemptAt");
    let delta = next.with_timezone(&chrono::Utc) - before;
    assert!(
        delta >= chrono::Duration::seconds(10) && delta < chrono::Duration::seconds(12),
        "{delta}"
    );
    assert!(s.claimed_by.is_empty());
    assert_eq!(
        s.history.last().expect("history").event_type,
        "retry_scheduled"
    );
    // Not due yet: nothing else to claim.
    assert_eq!(w.run_until_idle().await.expect("runs"), 0);
}

#[tokio::test]
async fn token_accounting_worked_example() {
    let env = env_with(MockModel::default());
    let yaml = format!(
        "{}---\napiVersion: orloj.dev/v1\nkind: AgentSystem\nmetadata: {{name: s}}\nspec: {{agents: [planner]}}\n",
        agent("planner", "  prompt: plan")
    );
    let t = run_task(&env, &yaml, &task_manifest("t1", "s", "")).await;
    let s = status(&t);
    assert_eq!(s.phase, "Succeeded", "{}", s.last_error);
    let out = &s.output;
    assert_eq!(&*out["agent.1.steps"], "1");
    assert_eq!(&*out["agent.1.tokens_used"], "19");
    assert_eq!(&*out["agent.1.token_usage_source"], "estimated");
    assert_eq!(&*out["agent.1.estimated_tokens"], "122");
    assert_eq!(&*out["agent.1.tool_calls"], "0");
    assert_eq!(&*out["agent.1.output"], "model=gpt-4o step=1");
    assert_eq!(&*out["tokens_used_total"], "19");
    let call = s
        .trace
        .iter()
        .find(|t| t.event_type == "model_call")
        .expect("model_call trace");
    assert_eq!((call.tokens, call.step), (19, 1));
    assert_eq!(call.token_usage_source, "estimated");
}

#[tokio::test]
async fn tool_agent_runs_tool_then_completes() {
    let env = env_with(MockModel::default());
    let yaml = format!(
        "{}{}---\napiVersion: orloj.dev/v1\nkind: AgentSystem\nmetadata: {{name: s}}\nspec: {{agents: [r]}}\n",
        tool("web-search"),
        agent("r", "  prompt: research\n  tools: [web-search]")
    );
    let t = run_task(
        &env,
        &yaml,
        &task_manifest("t1", "s", "  input: {topic: rust}"),
    )
    .await;
    let s = status(&t);
    assert_eq!(s.phase, "Succeeded", "{}", s.last_error);
    // Step 1 calls the tool; step 2 no longer offers it (short_circuit) and completes.
    assert_eq!(&*s.output["agent.1.steps"], "2");
    assert_eq!(&*s.output["agent.1.tool_calls"], "1");
    assert_eq!(env.tools.names(), ["web-search"]);
    let call = env.tools.calls.lock().expect("lock")[0].clone();
    assert_eq!(call.input, "rust");
    assert_eq!(call.request_id, "default/r/s001/web-search");
    let tool_trace = s
        .trace
        .iter()
        .find(|t| t.event_type == "tool_call")
        .expect("tool_call trace");
    assert_eq!(tool_trace.tool, "web-search");
    assert_eq!(tool_trace.tool_contract_version, "v1");
}

#[tokio::test]
async fn fan_out_and_wait_for_all_join_runs_the_join_node_once() {
    let env = env_with(MockModel::default());
    let yaml = format!(
        "{}{}{}{}---\napiVersion: orloj.dev/v1\nkind: AgentSystem\nmetadata: {{name: h}}\nspec:\n  agents: [manager, research, social, editor]\n  graph:\n    manager: {{edges: [{{to: research}}, {{to: social}}]}}\n    research: {{next: editor}}\n    social: {{next: editor}}\n    editor: {{join: {{mode: wait_for_all}}}}\n",
        agent("manager", ""),
        agent("research", ""),
        agent("social", ""),
        agent("editor", "")
    );
    let t = run_task(&env, &yaml, &task_manifest("t1", "h", "")).await;
    let s = status(&t);
    assert_eq!(s.phase, "Succeeded", "{}", s.last_error);
    assert_eq!(
        &*s.output["execution_order"],
        "manager -> research -> social -> editor"
    );
    let branches: Vec<&str> = s.messages.iter().map(|m| m.branch_id.as_str()).collect();
    assert_eq!(
        branches,
        ["b001", "b001.001", "b001.002", "b001.001", "b001.002"]
    );
    assert_eq!(s.join_states.len(), 1);
    let join = &s.join_states[0];
    assert_eq!((join.expected, join.quorum_required), (2, 2));
    assert!(join.activated);
    assert_eq!(join.sources.len(), 2);
    assert!(
        s.trace
            .iter()
            .any(|t| t.event_type == "agent_message_join_wait")
    );
    let editor = env
        .model
        .requests
        .lock()
        .expect("lock")
        .iter()
        .filter(|r| r.agent == "editor")
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(editor.len(), 1);
    assert_eq!(editor[0].context["inbox.join.sources"], "research,social");
}

#[tokio::test]
async fn entry_node_with_incoming_loop_edges_does_not_deadlock() {
    let env = env_with(MockModel::default());
    let yaml = format!(
        "{}{}{}---\napiVersion: orloj.dev/v1\nkind: AgentSystem\nmetadata: {{name: swarm}}\nspec:\n  agents: [coordinator, scout-a, scout-b]\n  graph:\n    coordinator: {{edges: [{{to: scout-a}}, {{to: scout-b}}]}}\n    scout-a: {{next: coordinator}}\n    scout-b: {{next: coordinator}}\n",
        agent("coordinator", ""),
        agent("scout-a", ""),
        agent("scout-b", "")
    );
    let t = run_task(&env, &yaml, &task_manifest("t1", "swarm", "  max_turns: 4")).await;
    let s = status(&t);
    assert_eq!(s.phase, "Succeeded", "{}", s.last_error);
    // Kickoff runs the coordinator without waiting on its join; the scouts' replies join into
    // one more coordinator run, whose second round of replies finds the join already activated.
    assert_eq!(
        &*s.output["execution_order"],
        "coordinator -> scout-a -> scout-b -> coordinator -> scout-a -> scout-b"
    );
    assert!(s.messages.iter().all(|m| m.phase == "Succeeded"));
    assert!(
        s.trace
            .iter()
            .any(|t| t.message.contains("status=join_already_activated"))
    );
}
