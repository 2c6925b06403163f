//! [`StoreModelRouter`]: resolves a `model_ref` to a ModelEndpoint in the store and a cached
//! provider client (spec runtime §7.1).

use super::http::HttpSettings;
use super::{AnthropicModel, AzureOpenAiModel, MockModel, OllamaModel, OpenAiModel};
use crate::outbound::{OutboundGuard, guarded_client};
use crate::tools::secrets::{
    ChainSecretResolver, EnvLookup, EnvSecretResolver, SecretError, SecretResolver,
    StoreSecretResolver,
};
use async_trait::async_trait;
use orloj_core::model::{ModelClient, ModelRouter, ResolvedModel};
use orloj_core::resources::{self, ModelEndpointSpec, ResourceSpec};
use orloj_core::{Error, ErrorKind, Kind, Result, Store, split_ref};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::tools::secrets::DEFAULT_SECRET_ENV_PREFIX;

/// How a user allows a ModelEndpoint to reach a non-public address.
const MODEL_OPT_IN: &str = "set spec.allowPrivate: true on the ModelEndpoint";

/// Folds a provider name or alias to its canonical id (`openai`, `azure-openai`, `anthropic`,
/// `ollama`, `mock`); `None` when unsupported. An empty provider means `openai`.
pub fn canonical_model_provider(provider: &str) -> Option<&'static str> {
    match provider.trim().to_ascii_lowercase().as_str() {
        "" | "openai" | "openai-compatible" | "openai_compatible" => Some("openai"),
        "azure-openai" | "azure_openai" | "azure" => Some("azure-openai"),
        "anthropic" => Some("anthropic"),
        "ollama" => Some("ollama"),
        "mock" => Some("mock"),
        _ => None,
    }
}

/// Resolves `model_ref`s against ModelEndpoints in a [`Store`]. Clients are cached per endpoint
/// and rebuilt when the endpoint's `resourceVersion` changes; API keys come from
/// `spec.auth.secretRef` through a [`SecretResolver`] (normally the Secret store, then the
/// environment).
///
/// Outbound safety ([`crate::outbound`]): a `base_url` whose host is a non-public IP literal is
/// refused unless the endpoint sets `allowPrivate` (default true for `ollama`). Routers built
/// by [`with_env`](Self::with_env) also check resolved host names at connect time.
pub struct StoreModelRouter {
    store: Arc<dyn Store>,
    secrets: Arc<dyn SecretResolver>,
    http: HttpSettings,
    /// Used for endpoints with `allowPrivate`.
    private_http: HttpSettings,
    cache: Mutex<HashMap<String, (String, ResolvedModel)>>,
}

impl std::fmt::Debug for StoreModelRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreModelRouter")
            .field("timeout", &self.http.timeout)
            .finish_non_exhaustive()
    }
}

impl StoreModelRouter {
    /// A router over `store` resolving keys with `secrets` and calling providers with `http`
    /// (for every endpoint: build its client with [`crate::outbound::guarded_client`] and use
    /// [`with_private_http`](Self::with_private_http) to have host names checked when they
    /// resolve).
    pub fn new(
        store: Arc<dyn Store>,
        secrets: Arc<dyn SecretResolver>,
        http: HttpSettings,
    ) -> Self {
        Self {
            store,
            secrets,
            private_http: http.clone(),
            http,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A router whose keys come from the Secret store, then from variables read by `lookup`
    /// (the reference, its normalised form, and `<prefix><NORMALISED>`), with the default
    /// HTTP client and timeout.
    pub fn with_env(
        store: Arc<dyn Store>,
        prefix: impl Into<String>,
        lookup: EnvLookup,
    ) -> Result<Self> {
        let secrets = ChainSecretResolver::new(vec![
            Arc::new(StoreSecretResolver::new(store.clone())),
            Arc::new(EnvSecretResolver::new(prefix, lookup)),
        ]);
        let client = |allow: bool| {
            guarded_client(OutboundGuard::new(allow, MODEL_OPT_IN))
                .map_err(|e| Error::internal(format!("building the model HTTP client: {e}")))
        };
        Ok(
            Self::new(store, Arc::new(secrets), HttpSettings::new(client(false)?))
                .with_private_http(HttpSettings::new(client(true)?)),
        )
    }

    /// The same router calling endpoints that set `allowPrivate` with `http` (the settings
    /// given to [`new`](Self::new) serve the others).
    pub fn with_private_http(mut self, http: HttpSettings) -> Self {
        self.private_http = http;
        self
    }

    /// [`StoreModelRouter::with_env`] over the process environment and the `ORLOJ_SECRET_`
    /// prefix.
    pub fn from_process_env(store: Arc<dyn Store>) -> Result<Self> {
        Self::with_env(
            store,
            DEFAULT_SECRET_ENV_PREFIX,
            Arc::new(|name: &str| std::env::var(name).ok()),
        )
    }

    /// The same router with another per-request timeout (clients built from now on use it).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.http.timeout = timeout;
        self.private_http.timeout = timeout;
        self
    }

    async fn build(&self, endpoint: &str, spec: ModelEndpointSpec) -> Result<ResolvedModel> {
        let provider = canonical_model_provider(&spec.provider).ok_or_else(|| {
            Error::invalid(format!(
                "unsupported model endpoint provider {:?} (model endpoint {endpoint:?})",
                spec.provider
            ))
        })?;
        let namespace = endpoint.split_once('/').map(|(ns, _)| ns).unwrap_or("");
        let option = |key: &str| {
            spec.options
                .get(key)
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let base_url = match (spec.base_url.trim(), provider) {
            ("", "openai") => "https://api.openai.com/v1".to_string(),
            ("", "anthropic") => "https://api.anthropic.com/v1".to_string(),
            ("", "ollama") => "http://127.0.0.1:11434".to_string(),
            ("", "azure-openai") => {
                return Err(Error::invalid(format!(
                    "model endpoint {endpoint:?} requires base_url for provider azure-openai"
                )));
            }
            (url, _) => url.to_string(),
        };
        let allow_private = spec.allow_private.unwrap_or(provider == "ollama");
        if provider != "mock" {
            OutboundGuard::new(allow_private, MODEL_OPT_IN)
                .check_url(&base_url)
                .map_err(|e| {
                    Error::invalid(format!(
                        "model endpoint {endpoint:?}: base_url {base_url:?}: {e}"
                    ))
                })?;
        }
        let http = if allow_private {
            &self.private_http
        } else {
            &self.http
        };
        let client: Arc<dyn ModelClient> = match provider {
            "mock" => Arc::new(MockModel::new()),
            "ollama" => Arc::new(OllamaModel::new(http.clone(), base_url)),
            _ => {
                let key = self.api_key(endpoint, namespace, &spec).await?;
                match provider {
                    "openai" => Arc::new(OpenAiModel::new(http.clone(), base_url, key)),
                    "azure-openai" => {
                        let deployment = match option("deployment") {
                            d if d.is_empty() => spec.default_model.clone(),
                            d => d,
                        };
                        Arc::new(AzureOpenAiModel::new(
                            http.clone(),
                            base_url,
                            key,
                            deployment,
                            option("api_version"),
                        ))
                    }
                    _ => {
                        let mut model = AnthropicModel::new(http.clone(), base_url, key)
                            .with_version(option("anthropic_version"));
                        let max_tokens = option("max_tokens");
                        if !max_tokens.is_empty() {
                            let n = max_tokens.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(
                                || {
                                    Error::invalid(format!(
                                        "model endpoint {endpoint:?}: option max_tokens {max_tokens:?} is not a positive integer"
                                    ))
                                },
                            )?;
                            model = model.with_max_tokens(n);
                        }
                        Arc::new(model)
                    }
                }
            }
        };
        Ok(ResolvedModel {
            client,
            model: spec.default_model.clone(),
            endpoint: endpoint.to_string(),
            provider: provider.to_string(),
        })
    }

    async fn api_key(
        &self,
        endpoint: &str,
        namespace: &str,
        spec: &ModelEndpointSpec,
    ) -> Result<String> {
        let name = endpoint.rsplit('/').next().unwrap_or(endpoint);
        let secret_ref = spec
            .auth
            .as_ref()
            .map(|a| a.secret_ref.trim())
            .unwrap_or("");
        if secret_ref.is_empty() {
            return Err(Error::invalid(format!(
                "model endpoint {name:?} requires auth.secretRef"
            )));
        }
        self.secrets
            .resolve(namespace, secret_ref)
            .await
            .map_err(|e| {
                let why = match e {
                    SecretError::NotFound(_) => {
                        "not found in the Secret store or environment".to_string()
                    }
                    SecretError::Failed(m) => m,
                };
                Error::invalid(format!(
                    "model endpoint {name:?}: secret {secret_ref:?} could not be resolved: {why}"
                ))
            })
    }
}

#[async_trait]
impl ModelRouter for StoreModelRouter {
    async fn resolve(&self, namespace: &str, model_ref: &str) -> Result<ResolvedModel> {
        let model_ref = model_ref.trim();
        if model_ref.is_empty() {
            return Err(Error::invalid(
                "model_ref is required; configure spec.model_ref on the agent",
            ));
        }
        let default_ns = match namespace.trim() {
            "" => "default",
            ns => ns,
        };
        let (ns, name) = split_ref(model_ref, default_ns);
        let not_found = || {
            Error::not_found(format!(
                "model endpoint {model_ref:?} not found in namespace {ns:?}"
            ))
        };
        if name.trim().is_empty() {
            return Err(not_found());
        }
        let object = match self.store.get(Kind::ModelEndpoint, ns, name).await {
            Ok(o) => o,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(e.context(format!("reading model endpoint {ns}/{name}"))),
        };
        let key = format!("{ns}/{name}");
        let version = object.metadata.resource_version.clone();
        if let Ok(cache) = self.cache.lock()
            && let Some((cached_version, resolved)) = cache.get(&key)
            && *cached_version == version
        {
            return Ok(resolved.clone());
        }
        let mut spec: ModelEndpointSpec = resources::spec_of(&object)
            .map_err(|e| e.context(format!("model endpoint {key:?}")))?;
        spec.normalize(&object.metadata)
            .map_err(|e| e.context(format!("model endpoint {key:?}")))?;
        let resolved = self.build(&key, spec).await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, (version, resolved.clone()));
        }
        Ok(resolved)
    }
}
