//! Anthropic Messages API (spec runtime §7.2).

use super::http::{
    HttpSettings, ToolAliases, extract_tool_input, send_json, tool_aliases, tool_description,
    tool_parameters,
};
use async_trait::async_trait;
use orloj_core::model::{
    ChatMessage, ModelClient, ModelRequest, ModelResponse, Role, ToolCall, Usage,
};
use orloj_core::{Error, Result};
use serde_json::{Map, Value, json};

/// Default `anthropic-version` header.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
/// Default `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;
/// Longest tool name Anthropic accepts.
const MAX_TOOL_NAME: usize = 128;

/// `POST <base>/messages` with headers `x-api-key` and `anthropic-version`.
#[derive(Debug, Clone)]
pub struct AnthropicModel {
    http: HttpSettings,
    base_url: String,
    api_key: String,
    version: String,
    max_tokens: u32,
}

impl AnthropicModel {
    /// A client for the API at `base_url` (e.g. `https://api.anthropic.com/v1`) with the
    /// default version and `max_tokens`.
    pub fn new(
        http: HttpSettings,
        base_url: impl Into<String>,
        api_key: impl Into<String>,
    ) -> Self {
        Self {
            http,
            base_url: base_url.into().trim_end_matches('/').to_string(),
            api_key: api_key.into(),
            version: DEFAULT_ANTHROPIC_VERSION.to_string(),
            max_tokens: DEFAULT_MAX_TOKENS,
        }
    }

    /// Overrides the `anthropic-version` header (ignored when empty).
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        let version = version.into();
        if !version.trim().is_empty() {
            self.version = version.trim().to_string();
        }
        self
    }

    /// Overrides `max_tokens`.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }
}

/// Maps tool names to names Anthropic accepts: [`tool_aliases`] with Anthropic's 128-character
/// limit. Returns `(original → alias)` for each distinct name.
pub fn anthropic_tool_aliases<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, String)> {
    tool_aliases(names, MAX_TOOL_NAME)
}

#[async_trait]
impl ModelClient for AnthropicModel {
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
        let aliases = ToolAliases::new(&request.tools, &request.messages, MAX_TOOL_NAME);
        let body = self.request_body(&request, &aliases);
        let http = self
            .http
            .client
            .post(format!("{}/messages", self.base_url))
            .header("x-api-key", &self.api_key)
            .header("anthropic-version", &self.version)
            .json(&body);
        let value = send_json("anthropic", &self.http, http).await?;
        parse_response(&value, &aliases)
    }
}

impl AnthropicModel {
    fn request_body(&self, request: &ModelRequest, aliases: &ToolAliases) -> Value {
        let system = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System && !m.content.trim().is_empty())
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        let messages: Vec<Value> = request
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .filter_map(|m| map_message(m, aliases))
            .collect();
        let mut body = Map::new();
        body.insert("model".into(), json!(request.model));
        if !system.is_empty() {
            body.insert("system".into(), json!(system));
        }
        body.insert("messages".into(), Value::Array(messages));
        body.insert("max_tokens".into(), json!(self.max_tokens));
        if !request.tools.is_empty() {
            let tools = request
                .tools
                .iter()
                .map(|t| {
                    json!({
                        "name": aliases.alias(&t.name),
                        "description": tool_description(t),
                        "input_schema": tool_parameters(t),
                    })
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        Value::Object(body)
    }
}

/// One non-system history message; messages with neither content nor tool calls are skipped.
fn map_message(message: &ChatMessage, aliases: &ToolAliases) -> Option<Value> {
    if message.content.is_empty() && message.tool_calls.is_empty() {
        return None;
    }
    Some(match message.role {
        Role::Assistant => {
            let mut blocks = Vec::new();
            if !message.content.is_empty() {
                blocks.push(json!({"type": "text", "text": message.content}));
            }
            for call in &message.tool_calls {
                blocks.push(json!({
                    "type": "tool_use",
                    "id": call.id,
                    "name": aliases.alias(&call.name),
                    "input": tool_use_input(&call.input),
                }));
            }
            json!({"role": "assistant", "content": blocks})
        }
        Role::Tool => json!({
            "role": "user",
            "content": [{
                "type": "tool_result",
                "tool_use_id": message.tool_call_id.clone().unwrap_or_default(),
                "content": message.content,
            }],
        }),
        Role::User | Role::System => json!({"role": "user", "content": message.content}),
    })
}

/// A tool call's input as a `tool_use` block wants it: the parsed object when the raw input is
/// a JSON object, else `{"input": raw}`.
fn tool_use_input(raw: &str) -> Value {
    if raw.trim_start().starts_with('{')
        && let Ok(value @ Value::Object(_)) = serde_json::from_str::<Value>(raw)
    {
        return value;
    }
    json!({"input": raw})
}

fn parse_response(value: &Value, aliases: &ToolAliases) -> Result<ModelResponse> {
    let blocks = value
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::unavailable("anthropic model response missing content"))?;
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(text) = block.get("text").and_then(Value::as_str)
                    && !text.is_empty()
                {
                    texts.push(text);
                }
            }
            Some("tool_use") => {
                let Some(name) = block.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let id = block
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("toolu_{}", tool_calls.len() + 1));
                tool_calls.push(ToolCall {
                    id,
                    name: aliases.original(name),
                    input: extract_tool_input(block.get("input").unwrap_or(&Value::Null)),
                });
            }
            _ => {}
        }
    }
    let content = texts.join("\n");
    if content.is_empty() && tool_calls.is_empty() {
        return Err(Error::unavailable(
            "anthropic model response missing message content",
        ));
    }
    let usage = value.get("usage").filter(|u| u.is_object()).map(|u| {
        let field = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        let input = field("input_tokens")
            + field("cache_creation_input_tokens")
            + field("cache_read_input_tokens");
        let output = field("output_tokens");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_sanitize_and_deduplicate() {
        let pairs =
            anthropic_tool_aliases(["web.search", "web_search", "a  b!!c", "..", "web.search"]);
        assert_eq!(
            pairs,
            vec![
                ("web.search".to_string(), "web_search_2".to_string()),
                ("web_search".to_string(), "web_search".to_string()),
                ("a  b!!c".to_string(), "a_b_c".to_string()),
                ("..".to_string(), "tool".to_string()),
            ]
        );
        let long = "x".repeat(300);
        let pairs = anthropic_tool_aliases([long.as_str(), &format!("{long}.")]);
        assert_eq!(pairs[0].1.len(), 128);
        assert_eq!(pairs[1].1.len(), 128);
        assert!(pairs[1].1.ends_with("_2"));
    }

    #[test]
    fn tool_use_input_parses_objects_only() {
        assert_eq!(tool_use_input("{\"q\":1}"), json!({"q": 1}));
        assert_eq!(tool_use_input("hello"), json!({"input": "hello"}));
        assert_eq!(tool_use_input("{broken"), json!({"input": "{broken"}));
    }
}
