//! The deterministic mock provider (spec runtime §7.4), used by tests and demos.

use async_trait::async_trait;
use orloj_core::Result;
use orloj_core::model::{ModelClient, ModelRequest, ModelResponse, Role, ToolCall};

/// Signals checked in order; a match calls the first offered tool whose name contains it.
const SIGNALS: [&str; 5] = ["vector", "search", "web", "db", "echo"];

/// Answers `model=<model> step=<n>` without usage, and picks a tool call from the prompt and
/// context: the first signal (`vector`, `search`, `web`, `db`, `echo`) found in the prompt,
/// `topic`, `inbox.content` or `previous_agent_last_event` that an offered tool's name contains
/// selects that tool on every step; otherwise step 1 calls the first offered tool.
#[derive(Debug, Clone, Copy, Default)]
pub struct MockModel;

impl MockModel {
    /// The mock provider.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl ModelClient for MockModel {
    async fn complete(&self, request: ModelRequest) -> Result<ModelResponse> {
        let content = format!("model={} step={}", request.model, request.step);
        let context = |key: &str| {
            request
                .context
                .get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let prompt = request
            .messages
            .iter()
            .find(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .unwrap_or("");
        let signal = [
            Some(prompt),
            context("topic"),
            context("inbox.content"),
            context("previous_agent_last_event"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();

        let matched = SIGNALS.iter().find_map(|pattern| {
            if !signal.contains(pattern) {
                return None;
            }
            request
                .tools
                .iter()
                .find(|t| t.name.to_lowercase().contains(pattern))
        });
        let tool = matched.or_else(|| {
            if request.step == 1 {
                request.tools.first()
            } else {
                None
            }
        });
        let tool_calls = tool
            .map(|t| {
                let input = context("inbox.content")
                    .or_else(|| context("topic"))
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("agent={} step={}", request.agent, request.step));
                vec![ToolCall {
                    id: format!("mock-call-{}", request.step),
                    name: t.name.clone(),
                    input,
                }]
            })
            .unwrap_or_default();
        Ok(ModelResponse {
            content,
            tool_calls,
            usage: None,
        })
    }
}
