//! The deterministic mock provider (spec runtime §7.4) and the §6.4 worked example.

use orloj_core::model::{ChatMessage, ModelClient, ModelRequest, Role, ToolDefinition};
use orloj_runtime::model::{MockModel, estimate_call_tokens};
use serde_json::Value;

fn request(prompt: &str, tools: &[&str], step: u32, context: &[(&str, &str)]) -> ModelRequest {
    let mut messages = Vec::new();
    if !prompt.is_empty() {
        messages.push(ChatMessage::text(Role::System, prompt));
    }
    messages.push(ChatMessage::text(Role::User, format!("step={step}")));
    ModelRequest {
        model: "gpt-4o".into(),
        messages,
        tools: tools
            .iter()
            .map(|name| ToolDefinition {
                name: (*name).into(),
                description: String::new(),
                parameters: Value::Null,
            })
            .collect(),
        agent: "planner".into(),
        namespace: "default".into(),
        step,
        context: std::sync::Arc::new(
            context
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        ),
    }
}

/// `(tool name, input)` of each call.
async fn calls(request: ModelRequest) -> Vec<(String, String)> {
    MockModel::new()
        .complete(request)
        .await
        .expect("mock never fails")
        .tool_calls
        .into_iter()
        .map(|c| (c.name, c.input))
        .collect()
}

fn call(name: &str, input: &str) -> Vec<(String, String)> {
    vec![(name.to_string(), input.to_string())]
}

#[tokio::test]
async fn no_tools_gives_the_deterministic_content_and_no_usage() {
    let response = MockModel::new()
        .complete(request("plan", &[], 1, &[]))
        .await
        .expect("completes");
    assert_eq!(response.content, "model=gpt-4o step=1");
    assert!(response.tool_calls.is_empty());
    assert_eq!(response.usage, None);
    // §6.4 worked example: the estimate for this call is 19 tokens.
    assert_eq!(
        estimate_call_tokens("plan", &response.content, &response.tool_calls, 1),
        19
    );
}

#[tokio::test]
async fn same_request_same_answer() {
    let req = request(
        "research rust",
        &["web_search", "db"],
        3,
        &[("topic", "rust")],
    );
    let a = MockModel::new().complete(req.clone()).await.expect("a");
    let b = MockModel::new().complete(req).await.expect("b");
    assert_eq!(a, b);
    assert_eq!(a.content, "model=gpt-4o step=3");
}

#[tokio::test]
async fn matching_signal_calls_that_tool_on_every_step() {
    for step in [1, 2, 7] {
        assert_eq!(
            calls(request(
                "Research the market",
                &["summarize", "web_search"],
                step,
                &[("topic", "ai chips")]
            ))
            .await,
            call("web_search", "ai chips"),
            "step {step}"
        );
    }
}

#[tokio::test]
async fn signals_are_checked_in_order() {
    // Both `web` and `vector` are in the prompt; `vector` comes first in the pattern order.
    assert_eq!(
        calls(request(
            "use the web or a vector index",
            &["web_fetch", "vector_db"],
            2,
            &[]
        ))
        .await,
        call("vector_db", "agent=planner step=2")
    );
    // `search` precedes `web`: the search tool is chosen even though `web` appears too.
    assert_eq!(
        calls(request("web search", &["web_fetch", "site_search"], 2, &[])).await,
        call("site_search", "agent=planner step=2")
    );
}

#[tokio::test]
async fn signals_come_from_context_too() {
    assert_eq!(
        calls(request(
            "summarize",
            &["notes", "db_query"],
            4,
            &[("inbox.content", "check the DB")]
        ))
        .await,
        call("db_query", "check the DB")
    );
    assert_eq!(
        calls(request(
            "summarize",
            &["notes", "echo_tool"],
            4,
            &[("previous_agent_last_event", "ECHO please")]
        ))
        .await,
        call("echo_tool", "agent=planner step=4")
    );
    assert_eq!(
        calls(request("", &["notes", "web"], 2, &[("topic", "the web")])).await,
        call("web", "the web")
    );
}

#[tokio::test]
async fn without_a_match_only_step_one_calls_the_first_tool() {
    let tools = ["alpha", "beta"];
    assert_eq!(
        calls(request("plan", &tools, 1, &[])).await,
        call("alpha", "agent=planner step=1")
    );
    assert!(calls(request("plan", &tools, 2, &[])).await.is_empty());
    // A signal with no matching tool name falls back the same way.
    assert_eq!(
        calls(request("search everything", &tools, 1, &[])).await,
        call("alpha", "agent=planner step=1")
    );
    assert!(
        calls(request("search everything", &tools, 2, &[]))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn tool_input_prefers_inbox_content_then_topic() {
    let tools = ["alpha"];
    assert_eq!(
        calls(request(
            "p",
            &tools,
            1,
            &[("topic", "t"), ("inbox.content", "from inbox")]
        ))
        .await,
        call("alpha", "from inbox")
    );
    assert_eq!(
        calls(request(
            "p",
            &tools,
            1,
            &[("topic", "t"), ("inbox.content", "  ")]
        ))
        .await,
        call("alpha", "t")
    );
    assert_eq!(
        calls(request("p", &tools, 1, &[])).await,
        call("alpha", "agent=planner step=1")
    );
}

#[tokio::test]
async fn prompt_is_the_first_system_message() {
    let mut req = request("plain", &["alpha", "web_fetch"], 2, &[]);
    req.messages
        .push(ChatMessage::text(Role::User, "web web web"));
    assert!(
        calls(req.clone()).await.is_empty(),
        "user messages are not part of the signal"
    );
    req.messages
        .insert(1, ChatMessage::text(Role::System, "use the web"));
    assert!(
        calls(req).await.is_empty(),
        "only the first system message is the prompt"
    );
}
