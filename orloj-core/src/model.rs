//! The model gateway traits: [`ModelClient`] (one chat completion) and [`ModelRouter`]
//! (resolves an Agent's `model_ref` to a client and model id). Providers live in orloj-runtime.

use crate::error::Result;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The agent's prompt.
    System,
    /// Input to the model (step text, context).
    User,
    /// The model's answer, possibly with tool calls.
    Assistant,
    /// A tool's result, answering one tool call.
    Tool,
}

/// A tool call requested by the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Provider call id (synthesized when the provider gives none).
    pub id: String,
    /// Tool name as offered to the model.
    pub name: String,
    /// Raw input: the `input` argument when present, else the JSON arguments, else raw text.
    pub input: String,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Author.
    pub role: Role,
    /// Text content (may be empty for assistant messages that only call tools).
    pub content: String,
    /// Tool calls of an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For tool messages: the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For tool messages: the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A message with only text.
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// Name the model uses to call it.
    pub name: String,
    /// What it does (default `Invoke tool <name>`).
    pub description: String,
    /// JSON Schema of its input.
    pub parameters: serde_json::Value,
}

/// One chat-completion request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelRequest {
    /// Provider model id (the endpoint's `default_model`).
    pub model: String,
    /// The conversation so far, starting with the system prompt.
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call.
    pub tools: Vec<ToolDefinition>,
    /// Agent name (for logs and the mock provider).
    pub agent: String,
    /// Task namespace.
    pub namespace: String,
    /// 1-based step of the agent turn.
    pub step: u32,
    /// Context keys given to the model (task input, `inbox.*`, `previous_agent*`); shared with
    /// the turn, which adds the step number to it for each call.
    pub context: Arc<BTreeMap<String, String>>,
}

/// Token usage reported by a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Total (input + output when the provider gives none).
    pub total_tokens: u64,
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelResponse {
    /// Text output (may be empty when only tools are called).
    pub content: String,
    /// Requested tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// Provider usage, when reported.
    pub usage: Option<Usage>,
}

/// One chat completion against one provider. Implementations bound each request by a timeout
/// and map provider failures to errors carrying the provider's message; they never panic on
/// malformed responses.
#[async_trait]
pub trait ModelClient: Send + Sync {
    /// Sends the request and returns the answer.
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse>;
}

/// A resolved `model_ref`.
#[derive(Clone)]
pub struct ResolvedModel {
    /// The client to call.
    pub client: Arc<dyn ModelClient>,
    /// The model id to put in requests.
    pub model: String,
    /// The ModelEndpoint as `namespace/name`.
    pub endpoint: String,
    /// The endpoint's provider (`openai`, `mock`, ...).
    pub provider: String,
}

impl std::fmt::Debug for ResolvedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedModel")
            .field("model", &self.model)
            .field("endpoint", &self.endpoint)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// Resolves an Agent's `model_ref` (name in `namespace`, or `ns/name`) to a client.
#[async_trait]
pub trait ModelRouter: Send + Sync {
    /// NotFound naming the endpoint when it does not exist; Invalid for unsupported providers
    /// or missing credentials.
    async fn resolve(&self, namespace: &str, model_ref: &str) -> Result<ResolvedModel>;
}
