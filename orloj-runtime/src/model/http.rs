//! What the HTTP providers share: the client and timeout, sending a JSON request, error
//! mapping, tool-definition defaults and tool-call input extraction (spec runtime §7.2–7.3).

use orloj_core::model::{ChatMessage, ToolDefinition};
use orloj_core::{Error, ErrorKind, Result};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
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
        // A refused address is a configuration problem, not worth retrying.
        if let Some(blocked) = crate::outbound::blocked_cause(&e) {
            return Error::invalid(format!("{provider} model request refused: {blocked}"));
        }
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

/// Tools in the OpenAI `function` format (also used by Ollama), named by their aliases.
pub(crate) fn openai_tools(tools: &[ToolDefinition], aliases: &ToolAliases) -> Vec<Value> {
    tools
        .iter()
        .map(|t| {
            json!({
                "type": "function",
                "function": {
                    "name": aliases.alias(&t.name),
                    "description": tool_description(t),
                    "parameters": tool_parameters(t),
                }
            })
        })
        .collect()
}

/// Maps tool names to names providers accept (`^[a-zA-Z0-9_-]{1,max_len}$`). Names that already
/// match are kept unchanged and reserved first, so aliases never displace them. For the
/// others, every run of characters outside letters, digits, `_` and `-` becomes `_`, the
/// result is trimmed of `_` and cut to `max_len` characters (`tool` when nothing is left), and
/// collisions get `_2`, `_3`, …. Returns `(original → alias)` for each distinct name, in order.
pub fn tool_aliases<'a>(
    names: impl IntoIterator<Item = &'a str>,
    max_len: usize,
) -> Vec<(String, String)> {
    let max_len = max_len.max(1);
    let mut distinct: Vec<&str> = Vec::new();
    for name in names {
        if !distinct.contains(&name) {
            distinct.push(name);
        }
    }
    let mut used: HashSet<String> = distinct
        .iter()
        .filter(|name| is_valid_tool_name(name, max_len))
        .map(|name| name.to_string())
        .collect();
    distinct
        .into_iter()
        .map(|name| {
            if is_valid_tool_name(name, max_len) {
                return (name.to_string(), name.to_string());
            }
            let alias = unique_alias(&sanitize_tool_name(name, max_len), &used, max_len);
            used.insert(alias.clone());
            (name.to_string(), alias)
        })
        .collect()
}

fn is_valid_tool_name(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn sanitize_tool_name(name: &str, max_len: usize) -> String {
    let mut out = String::new();
    let mut in_run = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    let trimmed: String = out.trim_matches('_').chars().take(max_len).collect();
    if trimmed.is_empty() {
        "tool".chars().take(max_len).collect()
    } else {
        trimmed
    }
}

fn unique_alias(base: &str, used: &HashSet<String>, max_len: usize) -> String {
    if !used.contains(base) {
        return base.to_string();
    }
    (2..)
        .map(|n| {
            let suffix = format!("_{n}");
            let keep = max_len.saturating_sub(suffix.len());
            format!("{}{suffix}", base.chars().take(keep).collect::<String>())
        })
        .find(|candidate| !used.contains(candidate))
        .unwrap_or_else(|| base.to_string())
}

/// Alias tables for one request: offered tools first, then names only seen in the history's
/// assistant tool calls.
#[derive(Debug)]
pub(crate) struct ToolAliases {
    forward: BTreeMap<String, String>,
    back: BTreeMap<String, String>,
}

impl ToolAliases {
    /// Aliases for `tools` and the tool calls in `history`, at most `max_len` characters.
    pub(crate) fn new(tools: &[ToolDefinition], history: &[ChatMessage], max_len: usize) -> Self {
        let names = tools.iter().map(|t| t.name.as_str()).chain(
            history
                .iter()
                .flat_map(|m| m.tool_calls.iter().map(|c| c.name.as_str())),
        );
        let pairs = tool_aliases(names, max_len);
        Self {
            back: pairs.iter().map(|(o, a)| (a.clone(), o.clone())).collect(),
            forward: pairs.into_iter().collect(),
        }
    }

    /// The name to send for the tool `name`.
    pub(crate) fn alias<'a>(&'a self, name: &'a str) -> &'a str {
        self.forward.get(name).map(String::as_str).unwrap_or(name)
    }

    /// The original name of a name the model returned; unknown names are kept as they are.
    pub(crate) fn original(&self, alias: &str) -> String {
        self.back
            .get(alias)
            .cloned()
            .unwrap_or_else(|| alias.to_string())
    }
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
    fn valid_names_are_kept_and_others_aliased_within_the_limit() {
        let pairs = tool_aliases(
            [
                "memory.read",
                "web_search",
                "memory_read",
                "_x-1",
                "memory.read",
            ],
            64,
        );
        assert_eq!(
            pairs,
            vec![
                ("memory.read".to_string(), "memory_read_2".to_string()),
                ("web_search".to_string(), "web_search".to_string()),
                ("memory_read".to_string(), "memory_read".to_string()),
                ("_x-1".to_string(), "_x-1".to_string()),
            ]
        );
        let long = "y".repeat(70);
        let pairs = tool_aliases([long.as_str(), &format!("{long}!")], 64);
        assert_eq!(pairs[0].1, "y".repeat(64));
        assert_eq!(pairs[1].1, format!("{}_2", "y".repeat(62)));
    }

    #[test]
    fn alias_tables_map_both_ways() {
        let history = vec![ChatMessage {
            role: orloj_core::model::Role::Assistant,
            content: String::new(),
            tool_calls: vec![orloj_core::model::ToolCall {
                id: "c1".into(),
                name: "memory.write".into(),
                input: String::new(),
            }],
            tool_call_id: None,
            name: None,
        }];
        let tools = [ToolDefinition {
            name: "memory.read".into(),
            description: String::new(),
            parameters: Value::Null,
        }];
        let aliases = ToolAliases::new(&tools, &history, 64);
        assert_eq!(aliases.alias("memory.read"), "memory_read");
        assert_eq!(aliases.alias("memory.write"), "memory_write");
        assert_eq!(aliases.alias("unknown.tool"), "unknown.tool");
        assert_eq!(aliases.original("memory_write"), "memory.write");
        assert_eq!(aliases.original("other"), "other");
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
