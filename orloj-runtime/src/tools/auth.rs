//! Tool auth injection (spec runtime §9.5): resolves `Tool.spec.auth` into a credential that
//! HTTP executors send as a header and container executors pass as environment variables.
//! OAuth2 client-credentials tokens are cached per (token URL, client id, scopes) until 30s
//! before they expire.

use super::safety::{excerpt, tool_error, transport_error};
use super::secrets::{SecretError, SecretResolver};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use orloj_core::Clock;
use orloj_core::resources::ToolAuth;
use orloj_core::tool::{ToolError, ToolErrorCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Token lifetime assumed when the token endpoint sends no `expires_in`.
const DEFAULT_TOKEN_TTL_SECS: i64 = 3600;
/// Tokens are refreshed this long before they expire.
const TOKEN_REFRESH_MARGIN_SECS: i64 = 30;
/// Bound on a token request.
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A resolved credential.
#[derive(Clone, PartialEq, Eq)]
pub enum ResolvedAuth {
    /// `Authorization: Bearer <token>` / `TOOL_AUTH_BEARER`.
    Bearer(String),
    /// `Authorization: Basic base64(<user:pass>)` / `TOOL_AUTH_BASIC` (holds `user:pass`).
    Basic(String),
    /// `<name>: <value>` / `TOOL_AUTH_HEADER_NAME` + `TOOL_AUTH_HEADER_VALUE`.
    Header {
        /// Header name.
        name: String,
        /// Header value.
        value: String,
    },
}

impl std::fmt::Debug for ResolvedAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bearer(_) => f.write_str("Bearer([REDACTED])"),
            Self::Basic(_) => f.write_str("Basic([REDACTED])"),
            Self::Header { name, .. } => write!(f, "Header({name}: [REDACTED])"),
        }
    }
}

impl ResolvedAuth {
    /// The HTTP header (name, value) carrying this credential.
    pub fn header(&self) -> (String, String) {
        match self {
            Self::Bearer(t) => ("Authorization".into(), format!("Bearer {t}")),
            Self::Basic(up) => (
                "Authorization".into(),
                format!("Basic {}", STANDARD.encode(up.as_bytes())),
            ),
            Self::Header { name, value } => (name.clone(), value.clone()),
        }
    }

    /// The environment variables handing this credential to a container.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Bearer(t) => vec![("TOOL_AUTH_BEARER", t.clone())],
            Self::Basic(up) => vec![("TOOL_AUTH_BASIC", STANDARD.encode(up.as_bytes()))],
            Self::Header { name, value } => vec![
                ("TOOL_AUTH_HEADER_NAME", name.clone()),
                ("TOOL_AUTH_HEADER_VALUE", value.clone()),
            ],
        }
    }
}

#[derive(Clone)]
struct CachedToken {
    token: String,
    refresh_at: DateTime<Utc>,
}

/// Resolves tool credentials: secrets through a [`SecretResolver`], OAuth2 tokens through the
/// token endpoint with a cache.
pub struct AuthInjector {
    secrets: Arc<dyn SecretResolver>,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    tokens: Mutex<HashMap<String, CachedToken>>,
}

impl AuthInjector {
    /// An injector resolving secrets with `secrets`, fetching OAuth2 tokens with `client`, and
    /// timing token expiry with `clock`.
    pub fn new(
        secrets: Arc<dyn SecretResolver>,
        client: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            secrets,
            client,
            clock,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves `auth` for a call in `namespace`; `None` when the tool has no auth.
    /// Unresolvable secrets → `secret_resolution_failed` (non-retryable); bad profile config →
    /// `runtime_policy_invalid`; a failed token exchange → retryable `secret_resolution_failed`.
    pub async fn resolve(
        &self,
        namespace: &str,
        auth: Option<&ToolAuth>,
    ) -> Result<Option<ResolvedAuth>, ToolError> {
        let Some(auth) = auth else { return Ok(None) };
        let secret_ref = auth.secret_ref.trim();
        let profile = match auth.profile.trim() {
            "" if secret_ref.is_empty() => return Ok(None),
            "" => "bearer",
            p => p,
        };
        if secret_ref.is_empty() {
            return Err(tool_error(
                ToolErrorCode::RuntimePolicyInvalid,
                format!("auth profile {profile} requires secretRef"),
            ));
        }
        match profile {
            "bearer" => Ok(Some(ResolvedAuth::Bearer(
                self.secret(namespace, secret_ref).await?,
            ))),
            "api_key_header" => {
                let name = auth.header_name.trim();
                if name.is_empty() {
                    return Err(tool_error(
                        ToolErrorCode::RuntimePolicyInvalid,
                        "auth profile api_key_header requires headerName",
                    ));
                }
                Ok(Some(ResolvedAuth::Header {
                    name: name.to_string(),
                    value: self.secret(namespace, secret_ref).await?,
                }))
            }
            "basic" => {
                let value = self.secret(namespace, secret_ref).await?;
                if !value.contains(':') {
                    return Err(tool_error(
                        ToolErrorCode::RuntimePolicyInvalid,
                        format!("basic auth secret {secret_ref:?} must be \"user:password\""),
                    ));
                }
                Ok(Some(ResolvedAuth::Basic(value)))
            }
            "oauth2_client_credentials" => Ok(Some(ResolvedAuth::Bearer(
                self.oauth2_token(namespace, auth).await?,
            ))),
            other => Err(tool_error(
                ToolErrorCode::RuntimePolicyInvalid,
                format!("unsupported auth profile {other:?}"),
            )),
        }
    }

    async fn secret(&self, namespace: &str, reference: &str) -> Result<String, ToolError> {
        self.secrets
            .resolve(namespace, reference)
            .await
            .map_err(|e| {
                let why = match e {
                    SecretError::NotFound(_) => "not found in the Secret store or environment",
                    SecretError::Failed(ref m) => m.as_str(),
                };
                tool_error(
                    ToolErrorCode::SecretResolutionFailed,
                    format!("resolving secret {reference:?}: {}", excerpt(why)),
                )
            })
    }

    async fn oauth2_token(&self, namespace: &str, auth: &ToolAuth) -> Result<String, ToolError> {
        let token_url = auth.token_url.trim();
        if token_url.is_empty() {
            return Err(tool_error(
                ToolErrorCode::RuntimePolicyInvalid,
                "auth profile oauth2_client_credentials requires tokenURL",
            ));
        }
        let secret_ref = auth.secret_ref.trim();
        let client_id = self
            .secret(namespace, &format!("{secret_ref}:client_id"))
            .await?;
        let client_secret = self
            .secret(namespace, &format!("{secret_ref}:client_secret"))
            .await?;
        let scopes = auth.scopes.join(" ");
        let key = format!("{token_url}\u{0}{client_id}\u{0}{scopes}");
        let now = self.clock.now();
        if let Some(cached) = self.lock_tokens().get(&key)
            && now < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }

        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.as_str()),
        ];
        if !scopes.is_empty() {
            form.push(("scope", scopes.as_str()));
        }
        let exchange_failed = |message: String| {
            let mut e = tool_error(ToolErrorCode::SecretResolutionFailed, message);
            e.retryable = true;
            e
        };
        let response = self
            .client
            .post(token_url)
            .timeout(TOKEN_REQUEST_TIMEOUT)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                exchange_failed(format!(
                    "oauth2 token request: {}",
                    transport_error("oauth2", &e).message
                ))
            })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| exchange_failed(format!("reading oauth2 token response: {e}")))?;
        if !status.is_success() {
            return Err(exchange_failed(format!(
                "oauth2 token endpoint returned HTTP {}: {}",
                status.as_u16(),
                excerpt(&body)
            )));
        }
        let parsed: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| exchange_failed(format!("oauth2 token response is not JSON: {e}")))?;
        let token = parsed
            .get("access_token")
            .and_then(|v| v.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| exchange_failed("oauth2 token response has no access_token".into()))?
            .to_string();
        let expires_in = parsed
            .get("expires_in")
            .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_TOKEN_TTL_SECS);
        let ttl = (expires_in - TOKEN_REFRESH_MARGIN_SECS).max(1);
        self.lock_tokens().insert(
            key,
            CachedToken {
                token: token.clone(),
                refresh_at: now + chrono::Duration::seconds(ttl),
            },
        );
        Ok(token)
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedToken>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}
