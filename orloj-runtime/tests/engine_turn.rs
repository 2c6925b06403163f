//! The agent turn loop (spec runtime §6) with scripted model answers.

#[path = "engine_support.rs"]
mod support;

use orloj_core::model::{ModelResponse, ResolvedModel, ToolCall, Usage};
use orloj_core::resources::{self, AgentSpec};
use orloj_core::tool::{ToolError, ToolErrorCode};
use orloj_core::{Kind, Object, SystemClock};
use orloj_runtime::engine::agent_turn::{AgentRunner, TurnInput, TurnOutcome};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn call(name: &str, input: &str) -> ModelResponse {
    ModelResponse {
        content: String::new(),
        tool_calls: vec![ToolCall {
            id: format!("id-{name}"),
            name: name.into(),
            input: input.into(),
        }],
        usage: None,
    }
}

fn text(content: &str) -> ModelResponse {
    ModelResponse {
        content: content.into(),
        ..Default::default()
    }
}

fn tool_object(name: &str) -> Object {
    let mut o = Object::new(Kind::Tool, "default", name);
    o.spec = serde_json::json!({"type": "http", "endpoint": "https://example.invalid"});
    resources::normalize(o).expect("tool")
}

async fn run(spec_yaml: &str, model: MockModel, tools: Arc<FakeTools>) -> TurnOutcome {
    let mut obj = Object::new(Kind::Agent, "default", "a");
    obj.spec = serde_saphyr::from_str(spec_yaml).expect("yaml");
    let obj = resources::normalize(obj).expect("agent");
    let spec: AgentSpec = resources::spec_of(&obj).expect("spec");
    let input = TurnInput {
        namespace: "default".into(),
        task_id: "default/t".into(),
        agent: "a".into(),
        tools: spec.tools.iter().map(|t| tool_object(t)).collect(),
        spec,
        model: ResolvedModel {
            client: Arc::new(model),
            model: "gpt-4o".into(),
            endpoint: "default/openai-default".into(),
            provider: "mock".into(),
        },
        inputs: BTreeMap::from([("topic".to_string(), "rust".to_string())]),
    };
    AgentRunner::new(tools, Arc::new(SystemClock))
        .with_step_interval(Duration::ZERO)
        .run(&input)
        .await
}

fn scripted(answers: Vec<ModelResponse>) -> MockModel {
    MockModel {
        script: std::sync::Mutex::new(answers),
        ..Default::default()
    }
}

#[tokio::test]
async fn unauthorized_tool_is_denied_and_never_executed() {
    let tools = Arc::new(FakeTools::default());
    let out = run(
        "{model_ref: m, tools: [web]}",
        scripted(vec![call("shell", "rm -rf /")]),
        tools.clone(),
    )
    .await;
    let err = out.error.expect("denied");
    assert!(
        err.message
            .starts_with("tool permission denied: agent=a step=1 tool=shell"),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains("model requested unauthorized tool=shell allowed=web")
    );
    assert!(tools.calls.lock().expect("lock").is_empty());
    assert!(
        out.trace
            .iter()
            .any(|t| t.event_type == "tool_permission_denied")
    );
    assert_eq!(out.last_event, "worker stopped permission denied");
}

#[tokio::test]
async fn governance_denial_from_the_executor_stops_the_turn() {
    let tools = Arc::new(FakeTools::default());
    tools.errors.lock().expect("lock").insert(
        "web".into(),
        ToolError::new(
            ToolErrorCode::PermissionDenied,
            "role lacks tool:web:invoke",
        ),
    );
    let out = run(
        "{model_ref: m, tools: [web]}",
        MockModel::default(),
        tools.clone(),
    )
    .await;
    let err = out.error.expect("denied");
    assert!(err.message.contains("permission denied"), "{}", err.message);
    assert_eq!(out.tool_calls, 0);
    assert_eq!(tools.names(), ["web"]);
    let denied = out
        .trace
        .iter()
        .find(|t| t.event_type == "tool_permission_denied")
        .expect("trace");
    assert_eq!(denied.retryable, Some(false));
    assert_eq!(denied.error_code, "permission_denied");
}

#[tokio::test]
async fn contract_tool_outside_sequence_is_a_non_retryable_violation() {
    let tools = Arc::new(FakeTools::default());
    let out = run(
        "{model_ref: m, tools: [a, b, c], execution: {profile: contract, tool_sequence: [a, b]}}",
        scripted(vec![call("c", "x")]),
        tools.clone(),
    )
    .await;
    let err = out.error.expect("violation");
    let tool_err = err.tool_error.expect("structured");
    assert_eq!(tool_err.code, ToolErrorCode::RuntimePolicyInvalid);
    assert_eq!(tool_err.reason, "agent_contract_violation");
    assert!(!tool_err.retryable);
    assert!(err.message.contains("retryable=false"));
    assert!(tools.calls.lock().expect("lock").is_empty());
    assert!(
        out.trace
            .iter()
            .any(|t| t.event_type == "agent_contract_violation")
    );
}

#[tokio::test]
async fn contract_happy_path_finishes_when_sequence_and_markers_are_done() {
    let tools = Arc::new(FakeTools::default());
    let out = run(
        "{model_ref: m, tools: [a, b], execution: {profile: contract, tool_sequence: [a, b], required_output_markers: [DONE]}}",
        scripted(vec![call("b", "1"), call("a", "2"), text("all DONE")]),
        tools.clone(),
    )
    .await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(tools.names(), ["b", "a"]);
    assert_eq!((out.steps, out.tool_calls), (3, 2));
    assert_eq!(out.output, "all DONE");
}

#[tokio::test]
async fn contract_missing_tools_at_max_steps_is_a_violation_unless_observed() {
    let yaml = "{model_ref: m, tools: [a, b], limits: {max_steps: 2}, execution: {profile: contract, tool_sequence: [a, b]OBS}}";
    let strict = run(
        &yaml.replace("OBS", ""),
        scripted(vec![call("a", "1"), text("nothing more"), text("x")]),
        Arc::new(FakeTools::default()),
    )
    .await;
    assert!(
        strict
            .error
            .expect("violation")
            .message
            .contains("agent_contract_violation")
    );
    let observed = run(
        &yaml.replace("OBS", ", on_contract_violation: observe"),
        scripted(vec![call("a", "1"), text("nothing more"), text("x")]),
        Arc::new(FakeTools::default()),
    )
    .await;
    assert!(observed.error.is_none(), "{:?}", observed.error);
    assert!(
        observed
            .trace
            .iter()
            .any(|t| t.event_type == "agent_contract_violation")
    );
}

#[tokio::test]
async fn max_steps_bounds_a_failing_search_loop() {
    let tools = Arc::new(FakeTools::default());
    tools.errors.lock().expect("lock").insert(
        "web-search".into(),
        ToolError::new(ToolErrorCode::ExecutionFailed, "backend down"),
    );
    let out = run(
        "{model_ref: m, prompt: research things, tools: [web-search], limits: {max_steps: 3}}",
        MockModel::default(),
        tools.clone(),
    )
    .await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.steps, 3);
    assert_eq!(out.last_event, "max steps reached");
    assert_eq!(tools.calls.lock().expect("lock").len(), 3);
    assert_eq!(out.tool_calls, 0);
    let errs: Vec<_> = out
        .trace
        .iter()
        .filter(|t| t.event_type == "tool_error")
        .collect();
    assert_eq!(errs.len(), 3);
    assert_eq!(errs[0].retryable, Some(true));
    assert_eq!(errs[0].error_code, "execution_failed");
}

#[tokio::test]
async fn stop_on_first_tool_ends_after_the_first_success() {
    let tools = Arc::new(FakeTools::default());
    let out = run(
        "{model_ref: m, tools: [web], execution: {tool_use_behavior: stop_on_first_tool}}",
        MockModel::default(),
        tools.clone(),
    )
    .await;
    assert!(out.error.is_none());
    assert_eq!((out.steps, out.tool_calls), (1, 1));
    assert_eq!(tools.names(), ["web"]);
}

#[tokio::test]
async fn duplicate_call_with_same_input_is_short_circuited() {
    let tools = Arc::new(FakeTools::default());
    // Step 2 offers only `other`; the model asks for `web` again with the same input.
    let out = run(
        "{model_ref: m, tools: [web, other]}",
        scripted(vec![call("web", "q"), call("web", "q"), text("done")]),
        tools.clone(),
    )
    .await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(tools.names(), ["web"]);
    assert_eq!(out.tool_calls, 2);
    assert!(out.events.iter().any(|e| e.contains("short_circuit=true")));
}

#[tokio::test]
async fn provider_usage_wins_over_the_estimate() {
    let mut answer = text("hello");
    answer.usage = Some(Usage {
        input_tokens: 5,
        output_tokens: 7,
        total_tokens: 0,
    });
    let out = run(
        "{model_ref: m}",
        scripted(vec![answer]),
        Arc::new(FakeTools::default()),
    )
    .await;
    assert_eq!(out.tokens_used, 12);
    assert_eq!(out.token_usage_source, "provider");
    assert_eq!(out.steps, 1);
}

#[tokio::test]
async fn model_errors_on_every_step_fail_the_turn() {
    struct Broken;
    #[async_trait::async_trait]
    impl orloj_core::model::ModelClient for Broken {
        async fn complete(
            &self,
            _r: orloj_core::model::ModelRequest,
        ) -> orloj_core::Result<ModelResponse> {
            Err(orloj_core::Error::unavailable(
                "model request failed status=503: busy",
            ))
        }
    }
    let mut obj = Object::new(Kind::Agent, "default", "a");
    obj.spec = serde_json::json!({"model_ref": "m", "limits": {"max_steps": 2}});
    let spec: AgentSpec =
        resources::spec_of(&resources::normalize(obj).expect("agent")).expect("spec");
    let input = TurnInput {
        namespace: "default".into(),
        task_id: "default/t".into(),
        agent: "a".into(),
        tools: vec![],
        spec,
        model: ResolvedModel {
            client: Arc::new(Broken),
            model: "gpt-4o".into(),
            endpoint: "default/m".into(),
            provider: "mock".into(),
        },
        inputs: BTreeMap::new(),
    };
    let out = AgentRunner::new(Arc::new(FakeTools::default()), Arc::new(SystemClock))
        .with_step_interval(Duration::ZERO)
        .run(&input)
        .await;
    let err = out.error.expect("error");
    assert!(
        err.message
            .starts_with("agent a model execution failed: model request failed status=503"),
        "{}",
        err.message
    );
    assert_eq!(
        out.trace
            .iter()
            .filter(|t| t.event_type == "model_error")
            .count(),
        2
    );
}
