//! Memory (spec §2.6).

use super::model_endpoint::SecretRefAuth;
use super::util::{lower, trim};
use super::{CommonStatus, ResourceSpec};
use crate::error::{Error, Result};
use crate::kind::Kind;
use crate::object::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `Memory.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemorySpec {
    /// Informational type (e.g. `vector`).
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub memory_type: String,
    /// Backend: `in-memory` (empty), `pgvector`, `http`, or a registered provider; lowercased.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    /// ModelEndpoint used for embeddings (required for `pgvector`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub embedding_model: String,
    /// DSN or URL of the backend.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// Secret holding the DSN/URL (exclusive with `endpoint`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint_secret_ref: String,
    /// Credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<SecretRefAuth>,
}

impl ResourceSpec for MemorySpec {
    const KIND: Kind = Kind::Memory;
    type Status = CommonStatus;

    fn normalize(&mut self, _meta: &ObjectMeta) -> Result<()> {
        trim(&mut self.memory_type);
        lower(&mut self.provider);
        trim(&mut self.embedding_model);
        trim(&mut self.endpoint);
        trim(&mut self.endpoint_secret_ref);
        if let Some(auth) = &mut self.auth {
            trim(&mut auth.secret_ref);
        }
        if !self.endpoint.is_empty() && !self.endpoint_secret_ref.is_empty() {
            return Err(Error::invalid(
                "spec.endpoint and spec.endpoint_secret_ref are mutually exclusive",
            ));
        }
        if self.provider == "pgvector" && self.embedding_model.is_empty() {
            return Err(Error::invalid(
                "spec.embedding_model is required when spec.provider is pgvector",
            ));
        }
        Ok(())
    }
}
