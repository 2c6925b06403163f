//! Secret (spec §2.5): base64 `data`, write-only `stringData`, and API redaction.

use super::{CommonStatus, ResourceSpec};
use crate::error::{Error, Result};
use crate::kind::Kind;
use crate::object::{Object, ObjectMeta};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// What the API shows instead of every secret value.
pub const REDACTED: &str = "***";

/// `Secret.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// Key → base64-encoded value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Key → plaintext value; write-only, merged into `data` on write.
    #[serde(
        rename = "stringData",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub string_data: BTreeMap<String, String>,
}

impl SecretSpec {
    /// The decoded value of `key`, if present and valid base64.
    pub fn decoded(&self, key: &str) -> Option<Vec<u8>> {
        self.data
            .get(key)
            .and_then(|v| STANDARD.decode(v.trim()).ok())
    }
}

impl ResourceSpec for SecretSpec {
    const KIND: Kind = Kind::Secret;
    type Status = CommonStatus;

    fn normalize(&mut self, _meta: &ObjectMeta) -> Result<()> {
        for (key, plain) in std::mem::take(&mut self.string_data) {
            self.data.insert(key, STANDARD.encode(plain.as_bytes()));
        }
        for (key, value) in &mut self.data {
            if key.trim().is_empty() {
                return Err(Error::invalid("spec.data: empty key"));
            }
            let trimmed = value.trim();
            if trimmed.is_empty() {
                return Err(Error::invalid(format!("spec.data.{key}: value is empty")));
            }
            if STANDARD.decode(trimmed).is_err() {
                return Err(Error::invalid(format!(
                    "spec.data.{key}: value is not valid base64"
                )));
            }
            if trimmed.len() != value.len() {
                *value = trimmed.to_string();
            }
        }
        Ok(())
    }
}

/// Replaces every `spec.data` (and any leftover `spec.stringData`) value of a Secret with
/// `"***"`. A no-op for other kinds, so callers may apply it to any object.
pub fn redact_secret(obj: &mut Object) {
    if obj.kind != Kind::Secret {
        return;
    }
    for field in ["data", "stringData"] {
        if let Some(Value::Object(map)) = obj.spec.get_mut(field) {
            for v in map.values_mut() {
                *v = Value::String(REDACTED.to_string());
            }
        }
    }
}

/// For a Secret PUT: every `spec.data` value equal to `"***"` (a value the client read back
/// redacted) is replaced by the stored value of the same key. A `***` with no stored value is
/// an Invalid error. A no-op for other kinds.
pub fn merge_redacted_secret(new: &mut Object, stored: &Object) -> Result<()> {
    if new.kind != Kind::Secret {
        return Ok(());
    }
    let stored_data = stored.spec.get("data").and_then(Value::as_object);
    let Some(Value::Object(data)) = new.spec.get_mut("data") else {
        return Ok(());
    };
    for (key, value) in data.iter_mut() {
        if value.as_str() != Some(REDACTED) {
            continue;
        }
        match stored_data.and_then(|d| d.get(key)) {
            Some(old) if old.as_str() != Some(REDACTED) => *value = old.clone(),
            _ => {
                return Err(Error::invalid(format!(
                    "Secret {:?}: spec.data.{key} is \"***\" but there is no stored value to keep",
                    new.metadata.name
                )));
            }
        }
    }
    Ok(())
}
