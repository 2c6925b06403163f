//! Ollama chat API (spec runtime §7.2).

use super::http::{HttpSettings, ToolAliases, openai_tools, send_json};
use super::openai::{MAX_FUNCTION_NAME, function_tool_calls};
use async_trait::async_trait;
use orloj_core::model::{ChatMessage, ModelClient, ModelRequest, ModelResponse, Role, Usage};
use orloj_core::{Error, Result};
use serde_json::{Map, Value, json};

/// `POST <base>/api/chat` with `stream: false`, no auth.
#[derive(Debug, Clone)]
pub struct OllamaModel {
    http: HttpSettings,
    base_url: String,
}

impl OllamaModel {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:11434`).
    pub fn new(http: HttpSettings, base_url: impl Into<String>) -> Self {
        Self {
            http,
            base_url: base_url.into().trim_end_matches('/').to_string(),
        }
    }
}

#[async_trait]
impl ModelClient for OllamaModel {
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
        // Ollama documents no name limit; the OpenAI one keeps names portable across models.
        let aliases = ToolAliases::new(&request.tools, &request.messages, MAX_FUNCTION_NAME);
        let mut body = Map::new();
        body.insert("model".into(), json!(request.model));
        body.insert(
            "messages".into(),
            Value::Array(
                request
                    .messages
                    .iter()
                    .filter_map(|m| map_message(m, &aliases))
                    .collect(),
            ),
        );
        body.insert("stream".into(), json!(false));
        if !request.tools.is_empty() {
            body.insert(
                "tools".into(),
                Value::Array(openai_tools(&request.tools, &aliases)),
            );
        }
        let http = self
            .http
            .client
            .post(format!("{}/api/chat", self.base_url))
            .json(&Value::Object(body));
        let value = send_json("ollama", &self.http, http).await?;
        parse_response(&value, request.step, &aliases)
    }
}

/// One history message; tool results carry no ids and tool-call arguments are `{"input": raw}`.
fn map_message(message: &ChatMessage, aliases: &ToolAliases) -> Option<Value> {
    if message.content.is_empty() && message.tool_calls.is_empty() {
        return None;
    }
    let role = match message.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut out = Map::new();
    out.insert("role".into(), json!(role));
    out.insert("content".into(), json!(message.content));
    if message.role == Role::Assistant && !message.tool_calls.is_empty() {
        let calls = message
            .tool_calls
            .iter()
            .map(|c| json!({"function": {"name": aliases.alias(&c.name), "arguments": {"input": c.input}}}))
            .collect();
        out.insert("tool_calls".into(), Value::Array(calls));
    }
    Some(Value::Object(out))
}

fn parse_response(value: &Value, step: u32, aliases: &ToolAliases) -> Result<ModelResponse> {
    let message = value
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| Error::unavailable("ollama model response missing message content"))?;
    let content = message
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let tool_calls = function_tool_calls(message, step, aliases);
    if content.is_empty() && tool_calls.is_empty() {
        return Err(Error::unavailable(
            "ollama model response missing message content",
        ));
    }
    let input = value.get("prompt_eval_count").and_then(Value::as_u64);
    let output = value.get("eval_count").and_then(Value::as_u64);
    let usage = (input.is_some() || output.is_some()).then(|| {
        let (input, output) = (input.unwrap_or(0), output.unwrap_or(0));
        Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: input + output,
        }
    });
    Ok(ModelResponse {
        content,
        tool_calls,
        usage,
    })
}
