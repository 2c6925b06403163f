//! What the HTTP providers share: the client and timeout, sending a JSON request, error
//! mapping, tool-definition defaults and tool-call input extraction (spec runtime §7.2–7.3).

use orloj_core::model::ToolDefinition;
use orloj_core::{Error, ErrorKind, Result};
use serde_json::{Value, json};
use std::time::Duration;

/// Per-request timeout of every provider unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest provider text (error message or body excerpt) quoted in an error.
const EXCERPT_CHARS: usize = 400;

/// Largest response body read from a provider; bigger bodies are an error.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The HTTP client (shared by all providers) and the per-request timeout.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The shared client; cloning it shares its connection pool.
    pub client: reqwest::Client,
    /// Bound on each request, from connect to the last body byte.
    pub timeout: Duration,
}

impl HttpSettings {
    /// Settings over `client` with the [`DEFAULT_TIMEOUT`].
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same settings with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// A client with the ring TLS provider (installed process-wide when none is installed yet,
/// because reqwest panics without one).
pub fn default_http_client() -> Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .build()
        .map_err(|e| Error::internal(format!("building the model HTTP client: {e}")))
}

/// `text` cut to [`EXCERPT_CHARS`] characters (with `…` when cut), trimmed.
pub(crate) fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// Sends `request` (already carrying its body and headers) and returns the parsed JSON body of
/// a successful answer. `provider` tags every error message.
pub(crate) async fn send_json(
    provider: &str,
    settings: &HttpSettings,
    request: reqwest::RequestBuilder,
) -> Result<Value> {
    let transport = |e: reqwest::Error| {
        Error::unavailable(format!(
            "{provider} model request failed: {}",
            error_chain(&e)
        ))
    };
    let mut response = request
        .timeout(settings.timeout)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Error::unavailable(format!(
                "{provider} model request failed status={}: response body exceeds {MAX_BODY_BYTES} bytes",
                status.as_u16()
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&body);
    if status.is_client_error() || status.is_server_error() {
        let code = status.as_u16();
        let kind = if status.is_server_error() || code == 429 || code == 408 {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Invalid
        };
        let message = provider_message(&text).unwrap_or_else(|| {
            if text.trim().is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("empty response body")
                    .to_string()
            } else {
                excerpt(&text)
            }
        });
        return Err(Error::new(
            kind,
            format!("{provider} model request failed status={code}: {message}"),
        ));
    }
    if text.trim().is_empty() {
        return Err(Error::unavailable(format!(
            "{provider} model response is empty (status={})",
            status.as_u16()
        )));
    }
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        Error::unavailable(format!(
            "{provider} model response is not valid JSON ({e}): {}",
            excerpt(&text)
        ))
    })?;
    if let Some(message) = value.get("error").and_then(error_message) {
        return Err(Error::unavailable(format!(
            "{provider} model provider error: {message}"
        )));
    }
    Ok(value)
}

/// The error message of a provider error body: `error.message`, a string `error`, or a
/// top-level `message`.
fn provider_message(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    value
        .get("error")
        .and_then(error_message)
        .or_else(|| non_empty(value.get("message")?.as_str()?))
}

/// The message of an `error` value (object with `message`, or a string).
fn error_message(error: &Value) -> Option<String> {
    match error {
        Value::String(s) => non_empty(s),
        Value::Object(map) => map
            .get("message")
            .and_then(Value::as_str)
            .and_then(non_empty)
            .or_else(|| Some(excerpt(&error.to_string()))),
        _ => None,
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| excerpt(s))
}

/// reqwest's Display hides the cause ("error sending request"); include the chain.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// The tool's description, defaulting to `Invoke tool <name>`.
pub(crate) fn tool_description(tool: &ToolDefinition) -> String {
    if tool.description.trim().is_empty() {
        format!("Invoke tool {}", tool.name)
    } else {
        tool.description.clone()
    }
}

/// The tool's JSON Schema, defaulting to an object with an optional string `input`.
pub(crate) fn tool_parameters(tool: &ToolDefinition) -> Value {
    match &tool.parameters {
        Value::Object(map) if !map.is_empty() => tool.parameters.clone(),
        _ => json!({
            "type": "object",
            "properties": {"input": {"type": "string"}},
            "additionalProperties": true,
        }),
    }
}

/// Tools in the OpenAI `function` format (also used by Ollama).
pub(crate) fn openai_tools(tools: &[ToolDefinition]) -> Vec<Value> {
    tools
        .iter()
        .map(|t| {
            json!({
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": tool_description(t),
                    "parameters": tool_parameters(t),
                }
            })
        })
        .collect()
}

/// The tool input of a provider tool call (spec §7.2): JSON arguments with an `input` key give
/// that value (a string as-is, anything else JSON-encoded); other JSON is re-encoded; text that
/// is not JSON is returned raw. `arguments` may be a JSON string holding the arguments.
pub fn extract_tool_input(arguments: &Value) -> String {
    match arguments {
        Value::Null => String::new(),
        Value::String(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(parsed @ Value::Object(_)) => extract_tool_input(&parsed),
            _ => raw.clone(),
        },
        Value::Object(map) => match map.get("input") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => arguments.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_extraction_follows_the_spec() {
        assert_eq!(extract_tool_input(&json!("{\"input\":\"q\"}")), "q");
        assert_eq!(extract_tool_input(&json!({"input": {"a": 1}})), "{\"a\":1}");
        assert_eq!(extract_tool_input(&json!({"a": 1})), "{\"a\":1}");
        assert_eq!(extract_tool_input(&json!("plain text")), "plain text");
        assert_eq!(extract_tool_input(&json!("[1,2]")), "[1,2]");
        assert_eq!(extract_tool_input(&json!({"input": 3})), "3");
        assert_eq!(extract_tool_input(&Value::Null), "");
    }

    #[test]
    fn excerpt_truncates_on_char_boundaries() {
        let long = "é".repeat(1000);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt("  short "), "short");
    }

    #[test]
    fn provider_messages_are_found_in_common_shapes() {
        assert_eq!(
            provider_message(r#"{"error":{"message":"bad key","type":"x"}}"#).as_deref(),
            Some("bad key")
        );
        assert_eq!(
            provider_message(r#"{"error":"model not found"}"#).as_deref(),
            Some("model not found")
        );
        assert_eq!(provider_message(r#"{"message":"m"}"#).as_deref(), Some("m"));
        assert_eq!(provider_message("<html>oops</html>"), None);
    }

    #[test]
    fn tool_defaults_apply_to_empty_fields() {
        let tool = ToolDefinition {
            name: "web".into(),
            description: " ".into(),
            parameters: Value::Null,
        };
        assert_eq!(tool_description(&tool), "Invoke tool web");
        assert_eq!(
            tool_parameters(&tool)["properties"]["input"]["type"],
            "string"
        );
    }
}
