//! ModelEndpoint (spec §2.3).

use super::util::{lenient_string_map, lower, require, trim};
use super::{CommonStatus, ResourceSpec};
use crate::error::{Error, Result};
use crate::kind::Kind;
use crate::object::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `ModelEndpoint.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelEndpointSpec {
    /// Provider id, lowercased (default `openai`); aliases are folded to the canonical id.
    #[serde(default)]
    pub provider: String,
    /// Base URL; defaulted for openai, anthropic and ollama.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_url: String,
    /// Model id used at run time (required).
    #[serde(default)]
    pub default_model: String,
    /// Provider options; keys lowercased and trimmed.
    #[serde(
        default,
        deserialize_with = "lenient_string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(with = "BTreeMap<String, String>")]
    pub options: BTreeMap<String, String>,
    /// Credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<SecretRefAuth>,
    /// Whether private/loopback addresses may be called; unset means true for `ollama` only.
    #[serde(
        rename = "allowPrivate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_private: Option<bool>,
}

/// `{secretRef}` credentials block (ModelEndpoint, Memory).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRefAuth {
    /// Secret name or `ns/name`.
    #[serde(
        rename = "secretRef",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub secret_ref: String,
}

impl ModelEndpointSpec {
    /// The SSRF gate with its provider default applied.
    pub fn allow_private(&self) -> bool {
        self.allow_private.unwrap_or(self.provider == "ollama")
    }
}

/// Folds provider aliases to the canonical id.
pub fn canonical_provider(provider: &str) -> String {
    let p = provider.trim().to_lowercase();
    match p.as_str() {
        "" => "openai".into(),
        "openai_compatible" => "openai-compatible".into(),
        "aws-bedrock" | "aws_bedrock" => "bedrock".into(),
        "azure_openai" => "azure-openai".into(),
        _ => p,
    }
}

impl ResourceSpec for ModelEndpointSpec {
    const KIND: Kind = Kind::ModelEndpoint;
    type Status = CommonStatus;

    fn normalize(&mut self, _meta: &ObjectMeta) -> Result<()> {
        self.provider = canonical_provider(&self.provider);
        trim(&mut self.base_url);
        if self.base_url.is_empty() {
            self.base_url = match self.provider.as_str() {
                "openai" => "https://api.openai.com/v1",
                "anthropic" => "https://api.anthropic.com/v1",
                "ollama" => "http://127.0.0.1:11434",
                _ => "",
            }
            .to_string();
        }
        require("spec.default_model", &mut self.default_model)?;
        let options = std::mem::take(&mut self.options);
        for (k, v) in options {
            let mut key = k;
            lower(&mut key);
            if key.is_empty() {
                return Err(Error::invalid("spec.options: empty option name"));
            }
            self.options.insert(key, v);
        }
        if let Some(auth) = &mut self.auth {
            trim(&mut auth.secret_ref);
        }
        Ok(())
    }
}
