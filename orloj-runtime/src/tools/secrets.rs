//! Secret resolution for tool auth (spec runtime §9.6): the Secret store first, then the
//! environment (`<ref>`, `<NORMALISED>`, `ORLOJ_SECRET_<NORMALISED>`).

use async_trait::async_trait;
use orloj_core::resources::{self, SecretSpec};
use orloj_core::{ErrorKind, Kind, Store, split_ref};
use std::sync::Arc;

/// Default prefix of secret environment variables.
pub const DEFAULT_SECRET_ENV_PREFIX: &str = "ORLOJ_SECRET_";

/// Why a secret could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// This resolver does not know the secret; the chain tries the next one.
    #[error("secret {0:?} not found")]
    NotFound(String),
    /// The secret exists but is unusable (empty, undecodable) or the lookup failed; the chain
    /// stops here.
    #[error("{0}")]
    Failed(String),
}

/// Resolves a secret reference (`name`, `ns/name`, optionally `:key`) to its value.
#[async_trait]
pub trait SecretResolver: Send + Sync {
    /// Resolves `reference` for a caller in `namespace`.
    async fn resolve(&self, namespace: &str, reference: &str) -> Result<String, SecretError>;
}

/// Reads `Secret` resources: `name[:key]` or `ns/name[:key]`, key default `value`.
pub struct StoreSecretResolver {
    store: Arc<dyn Store>,
}

impl StoreSecretResolver {
    /// A resolver over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl SecretResolver for StoreSecretResolver {
    async fn resolve(&self, namespace: &str, reference: &str) -> Result<String, SecretError> {
        let reference = reference.trim();
        let (object_ref, key) = match reference.split_once(':') {
            Some((r, k)) if !k.trim().is_empty() => (r.trim(), k.trim()),
            Some((r, _)) => (r.trim(), "value"),
            None => (reference, "value"),
        };
        let (ns, name) = split_ref(object_ref, namespace);
        if name.is_empty() {
            return Err(SecretError::Failed(format!(
                "secret reference {reference:?} has no name"
            )));
        }
        let object = match self.store.get(Kind::Secret, ns, name).await {
            Ok(o) => o,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(SecretError::NotFound(reference.to_string()));
            }
            Err(e) => {
                return Err(SecretError::Failed(format!(
                    "reading Secret {ns}/{name}: {e}"
                )));
            }
        };
        let spec: SecretSpec = resources::spec_of(&object)
            .map_err(|e| SecretError::Failed(format!("Secret {ns}/{name}: {e}")))?;
        if !spec.data.contains_key(key) {
            return Err(SecretError::NotFound(reference.to_string()));
        }
        let bytes = spec.decoded(key).ok_or_else(|| {
            SecretError::Failed(format!(
                "Secret {ns}/{name} key {key:?} is not valid base64"
            ))
        })?;
        let value = String::from_utf8(bytes).map_err(|_| {
            SecretError::Failed(format!("Secret {ns}/{name} key {key:?} is not UTF-8"))
        })?;
        if value.is_empty() {
            return Err(SecretError::Failed(format!(
                "Secret {ns}/{name} key {key:?} is empty"
            )));
        }
        Ok(value)
    }
}

/// Looks a variable up; injected so tests and embedders need not touch the process environment.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Reads secrets from environment variables: the reference verbatim, its normalised form
/// (upper-case, non-alphanumerics → `_`), then `<prefix><normalised>`.
pub struct EnvSecretResolver {
    prefix: String,
    lookup: EnvLookup,
}

impl EnvSecretResolver {
    /// A resolver over the process environment with the default prefix.
    pub fn from_process_env() -> Self {
        Self::new(
            DEFAULT_SECRET_ENV_PREFIX,
            Arc::new(|name: &str| std::env::var(name).ok()),
        )
    }

    /// A resolver with a custom prefix and lookup.
    pub fn new(prefix: impl Into<String>, lookup: EnvLookup) -> Self {
        Self {
            prefix: prefix.into(),
            lookup,
        }
    }
}

/// Upper-cases `reference` and replaces every non-alphanumeric character with `_`.
pub fn normalize_env_name(reference: &str) -> String {
    reference
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[async_trait]
impl SecretResolver for EnvSecretResolver {
    async fn resolve(&self, _namespace: &str, reference: &str) -> Result<String, SecretError> {
        let reference = reference.trim();
        let normalized = normalize_env_name(reference);
        let candidates = [
            reference.to_string(),
            normalized.clone(),
            format!("{}{normalized}", self.prefix),
        ];
        for name in candidates {
            if name.is_empty() {
                continue;
            }
            if let Some(value) = (self.lookup)(&name) {
                if value.is_empty() {
                    return Err(SecretError::Failed(format!(
                        "environment variable {name} is empty"
                    )));
                }
                return Ok(value);
            }
        }
        Err(SecretError::NotFound(reference.to_string()))
    }
}

/// Tries resolvers in order: `NotFound` falls through, any other error stops the chain.
pub struct ChainSecretResolver {
    resolvers: Vec<Arc<dyn SecretResolver>>,
}

impl ChainSecretResolver {
    /// A chain over `resolvers`.
    pub fn new(resolvers: Vec<Arc<dyn SecretResolver>>) -> Self {
        Self { resolvers }
    }

    /// The standard chain: the Secret store, then the process environment.
    pub fn store_then_env(store: Arc<dyn Store>) -> Self {
        Self::new(vec![
            Arc::new(StoreSecretResolver::new(store)),
            Arc::new(EnvSecretResolver::from_process_env()),
        ])
    }
}

#[async_trait]
impl SecretResolver for ChainSecretResolver {
    async fn resolve(&self, namespace: &str, reference: &str) -> Result<String, SecretError> {
        for resolver in &self.resolvers {
            match resolver.resolve(namespace, reference).await {
                Err(SecretError::NotFound(_)) => continue,
                other => return other,
            }
        }
        Err(SecretError::NotFound(reference.trim().to_string()))
    }
}
