//! OpenAI chat completions (and compatible servers) and Azure OpenAI (spec runtime §7.2).

use super::http::{HttpSettings, ToolAliases, extract_tool_input, openai_tools, send_json};
use async_trait::async_trait;
use orloj_core::model::{
    ChatMessage, ModelClient, ModelRequest, ModelResponse, Role, ToolCall, Usage,
};
use orloj_core::{Error, Result};
use serde_json::{Map, Value, json};

/// Longest function name OpenAI and Azure OpenAI accept (`^[a-zA-Z0-9_-]{1,64}$`); also used
/// for Ollama, which documents no limit.
pub(crate) const MAX_FUNCTION_NAME: usize = 64;

/// Default Azure `api-version`.
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

/// `POST <base>/chat/completions` with `Authorization: Bearer <key>`.
#[derive(Debug, Clone)]
pub struct OpenAiModel {
    http: HttpSettings,
    base_url: String,
    api_key: String,
}

impl OpenAiModel {
    /// A client for the API at `base_url` (e.g. `https://api.openai.com/v1`).
    pub fn new(
        http: HttpSettings,
        base_url: impl Into<String>,
        api_key: impl Into<String>,
    ) -> Self {
        Self {
            http,
            base_url: base_url.into().trim_end_matches('/').to_string(),
            api_key: api_key.into(),
        }
    }
}

#[async_trait]
impl ModelClient for OpenAiModel {
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
        let aliases = ToolAliases::new(&request.tools, &request.messages, MAX_FUNCTION_NAME);
        let body = request_body(&request, &request.model, &aliases);
        let http = self
            .http
            .client
            .post(format!("{}/chat/completions", self.base_url))
            .bearer_auth(&self.api_key)
            .json(&body);
        let value = send_json("openai", &self.http, http).await?;
        parse_response("openai", &value, request.step, &aliases)
    }
}

/// `POST <base>/openai/deployments/<deployment>/chat/completions?api-version=<v>` with header
/// `api-key`; the deployment is the request's model, else the configured one.
#[derive(Debug, Clone)]
pub struct AzureOpenAiModel {
    http: HttpSettings,
    base_url: String,
    api_key: String,
    deployment: String,
    api_version: String,
}

impl AzureOpenAiModel {
    /// A client for the Azure resource at `base_url`; `deployment` is used when a request has
    /// no model, `api_version` defaults to `2024-10-21` when empty.
    pub fn new(
        http: HttpSettings,
        base_url: impl Into<String>,
        api_key: impl Into<String>,
        deployment: impl Into<String>,
        api_version: impl Into<String>,
    ) -> Self {
        let api_version = api_version.into();
        Self {
            http,
            base_url: base_url.into().trim_end_matches('/').to_string(),
            api_key: api_key.into(),
            deployment: deployment.into(),
            api_version: if api_version.trim().is_empty() {
                DEFAULT_AZURE_API_VERSION.to_string()
            } else {
                api_version.trim().to_string()
            },
        }
    }
}

#[async_trait]
impl ModelClient for AzureOpenAiModel {
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
        let deployment = if request.model.trim().is_empty() {
            self.deployment.trim()
        } else {
            request.model.trim()
        };
        if deployment.is_empty() {
            return Err(Error::invalid(
                "azure-openai model request has no deployment (set the model or option deployment)",
            ));
        }
        let mut url = reqwest::Url::parse(&self.base_url).map_err(|e| {
            Error::invalid(format!(
                "azure-openai base_url {:?} is not a valid URL: {e}",
                self.base_url
            ))
        })?;
        url.path_segments_mut()
            .map_err(|()| {
                Error::invalid(format!(
                    "azure-openai base_url {:?} cannot have a path",
                    self.base_url
                ))
            })?
            .pop_if_empty()
            .extend(["openai", "deployments", deployment, "chat", "completions"]);
        url.query_pairs_mut()
            .append_pair("api-version", &self.api_version);
        let aliases = ToolAliases::new(&request.tools, &request.messages, MAX_FUNCTION_NAME);
        let body = request_body(&request, deployment, &aliases);
        let http = self
            .http
            .client
            .post(url)
            .header("api-key", &self.api_key)
            .json(&body);
        let value = send_json("azure-openai", &self.http, http).await?;
        parse_response("azure-openai", &value, request.step, &aliases)
    }
}

/// The chat-completions body: `model`, the mapped history, and `tools` + `tool_choice:auto`
/// when tools are offered; tool names are sent as their aliases.
fn request_body(request: &ModelRequest, model: &str, aliases: &ToolAliases) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "messages".into(),
        Value::Array(
            request
                .messages
                .iter()
                .filter_map(|m| map_message(m, aliases))
                .collect(),
        ),
    );
    if !request.tools.is_empty() {
        body.insert(
            "tools".into(),
            Value::Array(openai_tools(&request.tools, aliases)),
        );
        body.insert("tool_choice".into(), json!("auto"));
    }
    Value::Object(body)
}

/// One history message; messages with neither content nor tool calls are skipped.
fn map_message(message: &ChatMessage, aliases: &ToolAliases) -> Option<Value> {
    if message.content.is_empty() && message.tool_calls.is_empty() {
        return None;
    }
    Some(match message.role {
        Role::System => json!({"role": "system", "content": message.content}),
        Role::User => json!({"role": "user", "content": message.content}),
        Role::Assistant => {
            let mut out = Map::new();
            out.insert("role".into(), json!("assistant"));
            out.insert(
                "content".into(),
                if message.content.is_empty() {
                    Value::Null
                } else {
                    json!(message.content)
                },
            );
            if !message.tool_calls.is_empty() {
                let calls = message
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({
                            "id": c.id,
                            "type": "function",
                            "function": {"name": aliases.alias(&c.name), "arguments": c.input},
                        })
                    })
                    .collect();
                out.insert("tool_calls".into(), Value::Array(calls));
            }
            Value::Object(out)
        }
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": message.tool_call_id.clone().unwrap_or_default(),
            "content": message.content,
        }),
    })
}

/// Content, tool calls (named by their original names) and usage of a chat-completions answer.
fn parse_response(
    provider: &str,
    value: &Value,
    step: u32,
    aliases: &ToolAliases,
) -> Result<ModelResponse> {
    let message = value
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| choices.first())
        .ok_or_else(|| Error::unavailable(format!("{provider} model response missing choices")))?
        .get("message")
        .cloned()
        .unwrap_or(Value::Null);
    let content = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    let tool_calls = function_tool_calls(&message, step, aliases);
    if content.is_empty() && tool_calls.is_empty() {
        return Err(Error::unavailable(format!(
            "{provider} model response missing message content"
        )));
    }
    let usage = value.get("usage").filter(|u| u.is_object()).map(|u| {
        let field = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        let (input, output) = (field("prompt_tokens"), field("completion_tokens"));
        let total = match field("total_tokens") {
            0 => input + output,
            t => t,
        };
        Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: total,
        }
    });
    Ok(ModelResponse {
        content,
        tool_calls,
        usage,
    })
}

/// Tool calls in the OpenAI function-calling shape (`tool_calls[].function{name, arguments}`),
/// shared by the OpenAI-style providers and Ollama; missing ids become `call_<step>_<n>` and
/// aliased names are mapped back to the original tool names.
pub(crate) fn function_tool_calls(
    message: &Value,
    step: u32,
    aliases: &ToolAliases,
) -> Vec<ToolCall> {
    message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .enumerate()
                .filter_map(|(i, call)| {
                    let function = call.get("function")?;
                    let name = function.get("name")?.as_str()?.trim();
                    if name.is_empty() {
                        return None;
                    }
                    let id = call
                        .get("id")
                        .and_then(Value::as_str)
                        .filter(|id| !id.is_empty())
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("call_{step}_{}", i + 1));
                    Some(ToolCall {
                        id,
                        name: aliases.original(name),
                        input: extract_tool_input(
                            function.get("arguments").unwrap_or(&Value::Null),
                        ),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}
