//! HTTP model providers against wiremock fakes of their APIs (spec runtime §7.2–7.3).

use orloj_core::ErrorKind;
use orloj_core::model::{
    ChatMessage, ModelClient, ModelRequest, Role, ToolCall, ToolDefinition, Usage,
};
use orloj_runtime::model::{
    AnthropicModel, AzureOpenAiModel, HttpSettings, OllamaModel, OpenAiModel,
};
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn settings() -> HttpSettings {
    let _ = rustls::crypto::ring::default_provider().install_default();
    HttpSettings::new(reqwest::Client::new())
}

fn tool(name: &str) -> ToolDefinition {
    ToolDefinition {
        name: name.into(),
        description: String::new(),
        parameters: Value::Null,
    }
}

/// A conversation with a system prompt, a tool call and its result, and an empty message that
/// must be skipped.
fn conversation() -> ModelRequest {
    ModelRequest {
        model: "m-1".into(),
        messages: vec![
            ChatMessage::text(Role::System, "You are helpful."),
            ChatMessage::text(Role::User, "step=1"),
            ChatMessage {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![
                    ToolCall {
                        id: "c1".into(),
                        name: "web.search".into(),
                        input: "{\"q\":\"rust\"}".into(),
                    },
                    ToolCall {
                        id: "c2".into(),
                        name: "db".into(),
                        input: "plain words".into(),
                    },
                ],
                tool_call_id: None,
                name: None,
            },
            ChatMessage {
                role: Role::Tool,
                content: "<tool_result>ok</tool_result>".into(),
                tool_calls: vec![],
                tool_call_id: Some("c1".into()),
                name: Some("web.search".into()),
            },
            ChatMessage::text(Role::Assistant, ""),
            ChatMessage::text(Role::User, "step=2"),
        ],
        tools: vec![
            tool("web.search"),
            ToolDefinition {
                name: "db".into(),
                description: "Query the database".into(),
                parameters: json!({"type": "object", "properties": {"sql": {"type": "string"}}}),
            },
        ],
        agent: "writer".into(),
        namespace: "default".into(),
        step: 2,
        context: Default::default(),
    }
}

fn simple(model: &str) -> ModelRequest {
    ModelRequest {
        model: model.into(),
        messages: vec![
            ChatMessage::text(Role::System, "plan"),
            ChatMessage::text(Role::User, "step=1"),
        ],
        step: 1,
        ..Default::default()
    }
}

async fn serve(status: u16, body: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/json"),
        )
        .mount(&server)
        .await;
    server
}

async fn only_request(server: &MockServer) -> wiremock::Request {
    let mut requests = server.received_requests().await.expect("recording is on");
    assert_eq!(requests.len(), 1, "exactly one request");
    requests.remove(0)
}

fn openai(server: &MockServer) -> OpenAiModel {
    OpenAiModel::new(settings(), format!("{}/v1/", server.uri()), "sk-test")
}

// ---------------------------------------------------------------- openai

#[tokio::test]
async fn openai_plain_text_with_usage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"message": {"role": "assistant", "content": "hello"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let response = openai(&server)
        .complete(simple("gpt-4o"))
        .await
        .expect("completes");
    assert_eq!(response.content, "hello");
    assert!(response.tool_calls.is_empty());
    assert_eq!(
        response.usage,
        Some(Usage {
            input_tokens: 10,
            output_tokens: 5,
            total_tokens: 15
        })
    );
    let body: Value = only_request(&server).await.body_json().expect("json body");
    assert_eq!(body["model"], "gpt-4o");
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "plan"}, {"role": "user", "content": "step=1"}])
    );
    assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
}

#[tokio::test]
async fn openai_tool_calls_and_history_mapping() {
    let server = serve(
        200,
        &json!({
            "choices": [{"message": {"content": null, "tool_calls": [
                {"id": "call_9", "type": "function",
                 "function": {"name": "web.search", "arguments": "{\"input\":\"rust news\"}"}},
                {"type": "function", "function": {"name": "db", "arguments": "{\"sql\":\"select 1\"}"}},
                {"type": "function", "function": {"name": "db", "arguments": "not json"}}
            ]}}]
        })
        .to_string(),
    )
    .await;
    let response = openai(&server)
        .complete(conversation())
        .await
        .expect("completes");
    assert_eq!(response.content, "");
    assert_eq!(response.usage, None);
    let calls: Vec<(&str, &str, &str)> = response
        .tool_calls
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str(), c.input.as_str()))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("call_9", "web.search", "rust news"),
            ("call_2_2", "db", "{\"sql\":\"select 1\"}"),
            ("call_2_3", "db", "not json"),
        ]
    );

    let body: Value = only_request(&server).await.body_json().expect("json body");
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(
        body["tools"][0],
        json!({"type": "function", "function": {
            "name": "web_search",
            "description": "Invoke tool web.search",
            "parameters": {"type": "object", "properties": {"input": {"type": "string"}},
                           "additionalProperties": true}
        }})
    );
    assert_eq!(
        body["tools"][1]["function"]["description"],
        "Query the database"
    );
    assert_eq!(
        body["tools"][1]["function"]["parameters"]["properties"]["sql"]["type"],
        "string"
    );
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(
        messages.len(),
        5,
        "the empty assistant message is skipped: {messages:?}"
    );
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(messages[2]["content"], Value::Null);
    assert_eq!(
        messages[2]["tool_calls"][0],
        json!({"id": "c1", "type": "function",
               "function": {"name": "web_search", "arguments": "{\"q\":\"rust\"}"}})
    );
    assert_eq!(
        messages[2]["tool_calls"][1]["function"]["arguments"],
        "plain words"
    );
    assert_eq!(
        messages[3],
        json!({"role": "tool", "tool_call_id": "c1", "content": "<tool_result>ok</tool_result>"})
    );
    assert_eq!(messages[4], json!({"role": "user", "content": "step=2"}));
}

#[tokio::test]
async fn openai_content_parts_and_missing_total() {
    let server = serve(
        200,
        &json!({
            "choices": [{"message": {"content": [
                {"type": "text", "text": "line one"}, {"type": "text", "text": "line two"}
            ]}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3}
        })
        .to_string(),
    )
    .await;
    let response = openai(&server)
        .complete(simple("m"))
        .await
        .expect("completes");
    assert_eq!(response.content, "line one\nline two");
    assert_eq!(response.usage.map(|u| u.total_tokens), Some(10));
}

#[tokio::test]
async fn openai_http_errors_carry_the_provider_message() {
    let server = serve(
        401,
        r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#,
    )
    .await;
    let err = openai(&server)
        .complete(simple("m"))
        .await
        .expect_err("401 fails");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert_eq!(
        err.message(),
        "openai model request failed status=401: Incorrect API key provided"
    );

    let server = serve(429, r#"{"error":{"message":"Rate limit reached"}}"#).await;
    let err = openai(&server)
        .complete(simple("m"))
        .await
        .expect_err("429 fails");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.message().contains("status=429: Rate limit reached"),
        "{err}"
    );

    let html = format!("<html>{}</html>", "x".repeat(5000));
    let server = serve(502, &html).await;
    let err = openai(&server)
        .complete(simple("m"))
        .await
        .expect_err("502 fails");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("status=502: <html>xxx"), "{err}");
    assert!(
        err.message().len() < 600,
        "body excerpt is truncated: {}",
        err.message().len()
    );

    let server = serve(500, "").await;
    let err = openai(&server)
        .complete(simple("m"))
        .await
        .expect_err("500 fails");
    assert_eq!(
        err.message(),
        "openai model request failed status=500: Internal Server Error"
    );
}

#[tokio::test]
async fn openai_malformed_answers_are_errors_not_panics() {
    let cases = [
        ("{not json", "not valid JSON"),
        ("", "empty"),
        ("[1,2,3]", "missing choices"),
        (r#"{"choices":[]}"#, "missing choices"),
        (
            r#"{"choices":[{"message":{"content":""}}]}"#,
            "missing message content",
        ),
        (
            r#"{"choices":[{"message":{"content":42}}]}"#,
            "missing message content",
        ),
        (r#"{"choices":[{}]}"#, "missing message content"),
        (
            r#"{"error":{"message":"quota exceeded"}}"#,
            "openai model provider error: quota exceeded",
        ),
    ];
    for (body, expected) in cases {
        let server = serve(200, body).await;
        let err = openai(&server)
            .complete(simple("m"))
            .await
            .expect_err("malformed body fails");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{body}");
        assert!(err.message().contains(expected), "{body}: {err}");
    }
}

#[tokio::test]
async fn transport_failures_and_timeouts_are_unavailable() {
    // Nothing listens on a just-released port.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let model = OpenAiModel::new(settings(), format!("http://127.0.0.1:{port}/v1"), "k");
    let err = model.complete(simple("m")).await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.message().starts_with("openai model request failed: "),
        "{err}"
    );

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"choices": [{"message": {"content": "late"}}]}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let model = OpenAiModel::new(
        settings().with_timeout(Duration::from_millis(200)),
        server.uri(),
        "k",
    );
    let started = std::time::Instant::now();
    let err = model.complete(simple("m")).await.expect_err("times out");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

// ---------------------------------------------------------------- azure

#[tokio::test]
async fn azure_uses_deployment_path_api_version_and_api_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/openai/deployments/gpt4-prod/chat/completions"))
        .and(query_param("api-version", "2024-10-21"))
        .and(header("api-key", "az-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"message": {"content": "from azure"}}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let model = AzureOpenAiModel::new(settings(), server.uri(), "az-key", "gpt4-prod", "");
    // No request model: the configured deployment is used.
    let response = model.complete(simple("")).await.expect("completes");
    assert_eq!(response.content, "from azure");
    let request = only_request(&server).await;
    assert!(request.headers.get("authorization").is_none());
    let body: Value = request.body_json().expect("json");
    assert_eq!(body["model"], "gpt4-prod");
}

#[tokio::test]
async fn azure_request_model_wins_and_api_version_is_configurable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/base/openai/deployments/other/chat/completions"))
        .and(query_param("api-version", "2025-01-01-preview"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": {"code": "DeploymentNotFound", "message": "The deployment does not exist"}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let model = AzureOpenAiModel::new(
        settings(),
        format!("{}/base/", server.uri()),
        "k",
        "configured",
        "2025-01-01-preview",
    );
    let err = model.complete(simple("other")).await.expect_err("400");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert_eq!(
        err.message(),
        "azure-openai model request failed status=400: The deployment does not exist"
    );
}

// ---------------------------------------------------------------- anthropic

fn anthropic(server: &MockServer) -> AnthropicModel {
    AnthropicModel::new(settings(), format!("{}/v1", server.uri()), "ak-test")
}

#[tokio::test]
async fn anthropic_request_shape_aliases_and_history() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", "ak-test"))
        .and(header("anthropic-version", "2023-06-01"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "type": "message",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "web_search", "input": {"input": "rust 2026"}},
                {"type": "tool_use", "id": "toolu_2", "name": "db", "input": {"sql": "select 1"}},
                {"type": "text", "text": "Done."}
            ],
            "usage": {"input_tokens": 100, "output_tokens": 20,
                      "cache_creation_input_tokens": 5, "cache_read_input_tokens": 7}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let mut request = conversation();
    request
        .messages
        .insert(1, ChatMessage::text(Role::System, "Be brief."));
    let response = anthropic(&server)
        .complete(request)
        .await
        .expect("completes");
    assert_eq!(response.content, "Let me look.\nDone.");
    let calls: Vec<(&str, &str, &str)> = response
        .tool_calls
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str(), c.input.as_str()))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("toolu_1", "web.search", "rust 2026"),
            ("toolu_2", "db", "{\"sql\":\"select 1\"}"),
        ],
        "aliases are mapped back to the offered names"
    );
    assert_eq!(
        response.usage,
        Some(Usage {
            input_tokens: 112,
            output_tokens: 20,
            total_tokens: 132
        })
    );

    let body: Value = only_request(&server).await.body_json().expect("json");
    assert_eq!(body["model"], "m-1");
    assert_eq!(body["max_tokens"], 1024);
    assert_eq!(body["system"], "You are helpful.\n\nBe brief.");
    assert_eq!(body["tools"][0]["name"], "web_search");
    assert_eq!(body["tools"][0]["description"], "Invoke tool web.search");
    assert_eq!(
        body["tools"][0]["input_schema"]["properties"]["input"]["type"],
        "string"
    );
    assert_eq!(body["tools"][1]["name"], "db");
    assert_eq!(
        body["tools"][1]["input_schema"]["properties"]["sql"]["type"],
        "string"
    );
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(
        messages,
        &vec![
            json!({"role": "user", "content": "step=1"}),
            json!({"role": "assistant", "content": [
                {"type": "tool_use", "id": "c1", "name": "web_search", "input": {"q": "rust"}},
                {"type": "tool_use", "id": "c2", "name": "db", "input": {"input": "plain words"}}
            ]}),
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "<tool_result>ok</tool_result>"}
            ]}),
            json!({"role": "user", "content": "step=2"}),
        ]
    );
}

#[tokio::test]
async fn anthropic_options_and_plain_text() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("anthropic-version", "2024-01-01"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "content": [{"type": "text", "text": "hi"}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let model = anthropic(&server)
        .with_version("2024-01-01")
        .with_max_tokens(4096);
    let response = model.complete(simple("claude")).await.expect("completes");
    assert_eq!(response.content, "hi");
    assert_eq!(response.usage, None);
    let body: Value = only_request(&server).await.body_json().expect("json");
    assert_eq!(body["max_tokens"], 4096);
    assert!(body.get("tools").is_none());
    assert_eq!(body["system"], "plan");
}

#[tokio::test]
async fn anthropic_errors() {
    let server = serve(
        400,
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too large"}}"#,
    )
    .await;
    let err = anthropic(&server)
        .complete(simple("c"))
        .await
        .expect_err("400");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert_eq!(
        err.message(),
        "anthropic model request failed status=400: max_tokens: too large"
    );

    let server = serve(
        529,
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    )
    .await;
    let err = anthropic(&server)
        .complete(simple("c"))
        .await
        .expect_err("529");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().ends_with("status=529: Overloaded"), "{err}");

    for body in [
        "garbage",
        "{}",
        r#"{"content":[]}"#,
        r#"{"content":[{"type":"tool_use"}]}"#,
    ] {
        let server = serve(200, body).await;
        let err = anthropic(&server)
            .complete(simple("c"))
            .await
            .expect_err(body);
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{body}");
        assert!(err.message().starts_with("anthropic model"), "{err}");
    }
}

// ---------------------------------------------------------------- ollama

#[tokio::test]
async fn ollama_request_shape_tool_calls_and_usage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "model": "llama3",
            "message": {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "web.search", "arguments": {"input": "weather"}}},
                {"function": {"name": "db", "arguments": {"city": "Paris"}}}
            ]},
            "done": true,
            "prompt_eval_count": 30,
            "eval_count": 12
        })))
        .expect(1)
        .mount(&server)
        .await;
    let model = OllamaModel::new(settings(), server.uri());
    let response = model.complete(conversation()).await.expect("completes");
    let calls: Vec<(&str, &str, &str)> = response
        .tool_calls
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str(), c.input.as_str()))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("call_2_1", "web.search", "weather"),
            ("call_2_2", "db", "{\"city\":\"Paris\"}"),
        ]
    );
    assert_eq!(
        response.usage,
        Some(Usage {
            input_tokens: 30,
            output_tokens: 12,
            total_tokens: 42
        })
    );

    let request = only_request(&server).await;
    assert!(request.headers.get("authorization").is_none());
    let body: Value = request.body_json().expect("json");
    assert_eq!(body["model"], "m-1");
    assert_eq!(body["stream"], false);
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["function"]["name"], "web_search");
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 5);
    assert_eq!(
        messages[0],
        json!({"role": "system", "content": "You are helpful."})
    );
    assert_eq!(
        messages[2]["tool_calls"],
        json!([
            {"function": {"name": "web_search", "arguments": {"input": "{\"q\":\"rust\"}"}}},
            {"function": {"name": "db", "arguments": {"input": "plain words"}}}
        ])
    );
    assert_eq!(
        messages[3],
        json!({"role": "tool", "content": "<tool_result>ok</tool_result>"})
    );
}

#[tokio::test]
async fn ollama_plain_text_and_errors() {
    let server = serve(
        200,
        r#"{"message":{"role":"assistant","content":"hello"},"done":true}"#,
    )
    .await;
    let model = OllamaModel::new(settings(), server.uri());
    let response = model.complete(simple("llama3")).await.expect("completes");
    assert_eq!(response.content, "hello");
    assert_eq!(response.usage, None);

    let server = serve(
        404,
        r#"{"error":"model \"llama9\" not found, try pulling it first"}"#,
    )
    .await;
    let err = OllamaModel::new(settings(), server.uri())
        .complete(simple("llama9"))
        .await
        .expect_err("404");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert_eq!(
        err.message(),
        "ollama model request failed status=404: model \"llama9\" not found, try pulling it first"
    );

    for (body, expected) in [
        ("<<<", "not valid JSON"),
        (r#"{"done":true}"#, "missing message content"),
        (r#"{"error":"boom"}"#, "ollama model provider error: boom"),
    ] {
        let server = serve(200, body).await;
        let err = OllamaModel::new(settings(), server.uri())
            .complete(simple("llama3"))
            .await
            .expect_err(body);
        assert!(err.message().contains(expected), "{body}: {err}");
    }
}

// ---------------------------------------------------------------- tool-name aliases

/// Tools `memory.read` (invalid for OpenAI) and `web_search` (valid), and a history whose
/// assistant called `memory.read` and `memory.write` (the latter is no longer offered).
fn memory_request() -> ModelRequest {
    ModelRequest {
        model: "m-1".into(),
        messages: vec![
            ChatMessage::text(Role::User, "remember"),
            ChatMessage {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![
                    ToolCall {
                        id: "h1".into(),
                        name: "memory.read".into(),
                        input: "{\"key\":\"a\"}".into(),
                    },
                    ToolCall {
                        id: "h2".into(),
                        name: "memory.write".into(),
                        input: "x".into(),
                    },
                ],
                tool_call_id: None,
                name: None,
            },
            ChatMessage {
                role: Role::Tool,
                content: "ok".into(),
                tool_calls: vec![],
                tool_call_id: Some("h1".into()),
                name: Some("memory.read".into()),
            },
        ],
        tools: vec![tool("memory.read"), tool("web_search")],
        step: 3,
        ..Default::default()
    }
}

fn call_names(response: &orloj_core::model::ModelResponse) -> Vec<&str> {
    response
        .tool_calls
        .iter()
        .map(|c| c.name.as_str())
        .collect()
}

fn function_names(values: &Value) -> Vec<&str> {
    values
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["function"]["name"].as_str().expect("name"))
        .collect()
}

#[tokio::test]
async fn openai_aliases_invalid_tool_names_and_maps_them_back() {
    let server = serve(
        200,
        &json!({
            "choices": [{"message": {"content": null, "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "memory_read", "arguments": "{\"input\":\"a\"}"}},
                {"id": "c2", "type": "function",
                 "function": {"name": "web_search", "arguments": "{}"}},
                {"id": "c3", "type": "function",
                 "function": {"name": "memory_write", "arguments": "{}"}},
                {"id": "c4", "type": "function",
                 "function": {"name": "not_offered", "arguments": "{}"}}
            ]}}]
        })
        .to_string(),
    )
    .await;
    let response = openai(&server)
        .complete(memory_request())
        .await
        .expect("completes");
    assert_eq!(
        call_names(&response),
        vec!["memory.read", "web_search", "memory.write", "not_offered"],
        "aliases map back to the original names; other names are kept"
    );
    assert_eq!(response.tool_calls[0].input, "a");

    let body: Value = only_request(&server).await.body_json().expect("json body");
    assert_eq!(
        function_names(&body["tools"]),
        vec!["memory_read", "web_search"]
    );
    assert_eq!(
        body["tools"][0]["function"]["description"], "Invoke tool memory.read",
        "the description keeps the original name"
    );
    let history = &body["messages"][1];
    assert_eq!(history["role"], "assistant");
    assert_eq!(
        function_names(&history["tool_calls"]),
        vec!["memory_read", "memory_write"]
    );
    assert_eq!(body["messages"][2]["tool_call_id"], "h1");
}

#[tokio::test]
async fn azure_aliases_tool_names_too() {
    let server = serve(
        200,
        &json!({"choices": [{"message": {"tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "memory_read", "arguments": "{}"}}
        ]}}]})
        .to_string(),
    )
    .await;
    let response = AzureOpenAiModel::new(settings(), server.uri(), "az-key", "dep", "")
        .complete(memory_request())
        .await
        .expect("completes");
    assert_eq!(call_names(&response), vec!["memory.read"]);
    let body: Value = only_request(&server).await.body_json().expect("json body");
    assert_eq!(
        function_names(&body["tools"]),
        vec!["memory_read", "web_search"]
    );
}

#[tokio::test]
async fn ollama_aliases_invalid_tool_names_and_maps_them_back() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "message": {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "memory_read", "arguments": {"input": "a"}}},
                {"function": {"name": "web_search", "arguments": {}}},
                {"function": {"name": "memory_write", "arguments": {}}}
            ]},
            "done": true
        })))
        .expect(1)
        .mount(&server)
        .await;
    let response = OllamaModel::new(settings(), server.uri())
        .complete(memory_request())
        .await
        .expect("completes");
    assert_eq!(
        call_names(&response),
        vec!["memory.read", "web_search", "memory.write"]
    );
    assert_eq!(response.tool_calls[0].input, "a");

    let body: Value = only_request(&server).await.body_json().expect("json");
    assert_eq!(
        function_names(&body["tools"]),
        vec!["memory_read", "web_search"]
    );
    assert_eq!(
        function_names(&body["messages"][1]["tool_calls"]),
        vec!["memory_read", "memory_write"]
    );
}
