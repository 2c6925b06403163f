//! The resource envelope shared by every kind: `apiVersion`, `kind`, `metadata`, `spec`, `status`.
//!
//! [`Object`] is the untyped form that stores, the API and watches move around; the typed
//! specs in [`crate::resources`] validate and default it (see [`crate::resources::normalize`]).

use crate::error::Error;
use crate::kind::{API_VERSION, DEFAULT_NAMESPACE, Kind};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Object metadata, as in spec §1. No uid, finalizers or owner references.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Name, unique per kind and namespace.
    #[serde(default)]
    pub name: String,
    /// Namespace; empty means `default`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Labels, selectable with `labelSelector`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations: free-form, not selectable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Decimal string, incremented on every write; empty before the first write.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// Incremented only when the spec changes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: i64,
    /// When the object was first stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl ObjectMeta {
    /// The namespace, with empty meaning [`DEFAULT_NAMESPACE`].
    pub fn namespace_or_default(&self) -> &str {
        if self.namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            &self.namespace
        }
    }

    /// The resourceVersion as a number (0 when empty or not a number).
    pub fn resource_version_number(&self) -> u64 {
        self.resource_version.trim().parse().unwrap_or(0)
    }
}

/// A resource of any kind with an untyped spec and status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    /// Always `orloj.dev/v1`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// The kind.
    pub kind: Kind,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The desired state, as written by users.
    #[serde(default = "empty_map")]
    pub spec: Value,
    /// The observed state, as written by controllers and workers.
    #[serde(default = "empty_map")]
    pub status: Value,
}

fn default_api_version() -> String {
    API_VERSION.to_string()
}

fn empty_map() -> Value {
    Value::Object(Default::default())
}

impl Object {
    /// A new object with empty spec and status.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        Self {
            api_version: API_VERSION.to_string(),
            kind,
            metadata: ObjectMeta {
                name: name.to_string(),
                namespace: namespace.to_string(),
                ..Default::default()
            },
            spec: empty_map(),
            status: empty_map(),
        }
    }

    /// The namespace, defaulted.
    pub fn namespace(&self) -> &str {
        self.metadata.namespace_or_default()
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The storage key `namespace/name`.
    pub fn key(&self) -> String {
        scoped_key(self.namespace(), self.name())
    }

    /// `status.phase`, or "" when unset.
    pub fn phase(&self) -> &str {
        self.status
            .get("phase")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Reads a JSON value as an object, naming the problem when it is not an orloj object.
    pub fn from_value(value: Value) -> Result<Self, Error> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                Error::invalid(e.into_inner().to_string())
            } else {
                Error::invalid(format!("{path}: {}", e.into_inner()))
            }
        })
    }

    /// The object as JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// `namespace/name`, the key objects are stored under.
pub fn scoped_key(namespace: &str, name: &str) -> String {
    let ns = if namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        namespace
    };
    format!("{ns}/{name}")
}

/// Splits a reference that may be `name` or `ns/name`; a bare name takes `default_namespace`.
pub fn split_ref<'a>(reference: &'a str, default_namespace: &'a str) -> (&'a str, &'a str) {
    match reference.split_once('/') {
        Some((ns, name)) if !ns.is_empty() => (ns, name),
        Some((_, name)) => (default_namespace, name),
        None => (default_namespace, reference),
    }
}

/// A page of objects; `continue` is set when more may follow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectList {
    /// The objects, ordered by `namespace/name`.
    pub items: Vec<Object>,
    /// Cursor to pass as `after` for the next page.
    #[serde(rename = "continue", default, skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}
