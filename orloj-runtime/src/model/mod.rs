//! The model gateway (spec runtime §7): [`ModelClient`](orloj_core::model::ModelClient)
//! implementations for the deterministic [`MockModel`] and the HTTP providers (OpenAI and
//! compatible servers, Azure OpenAI, Anthropic, Ollama), plus the [`StoreModelRouter`] that
//! resolves an Agent's `model_ref` to a ModelEndpoint and a cached client.
//!
//! Every HTTP provider shares one [`reqwest::Client`], bounds each request by a timeout
//! (30 s by default) and maps failures to [`orloj_core::Error`]s: transport failures, 5xx, 408
//! and 429 are `Unavailable`, other 4xx are `Invalid`, each carrying the provider's message as
//! `<provider> model request failed status=<code>: <message>`. Malformed bodies are errors,
//! never panics.

mod anthropic;
mod http;
mod mock;
mod ollama;
mod openai;
mod router;
mod tokens;

pub use anthropic::{AnthropicModel, anthropic_tool_aliases};
pub use http::{
    DEFAULT_TIMEOUT, HttpSettings, default_http_client, extract_tool_input, tool_aliases,
};
pub use mock::MockModel;
pub use ollama::OllamaModel;
pub use openai::{AzureOpenAiModel, OpenAiModel};
pub use router::{DEFAULT_SECRET_ENV_PREFIX, StoreModelRouter, canonical_model_provider};
pub use tokens::estimate_call_tokens;
