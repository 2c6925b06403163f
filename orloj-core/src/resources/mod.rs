//! Typed specs of every kind, their defaults and validation rules (spec §2).
//!
//! [`normalize`] is the single entry point every write goes through: it checks the envelope,
//! parses `spec` into the kind's typed struct (unknown fields rejected, errors name the field
//! path), applies defaults and validation, and writes the normalized spec back. The typed
//! structs ([`AgentSpec`], [`TaskSpec`], ...) are what the runtime reads via [`spec_of`].
//!
//! ```
//! use orloj_core::{Kind, Object, resources::{self, AgentSpec}};
//!
//! let mut obj = Object::new(Kind::Agent, "", "writer");
//! obj.spec = serde_json::json!({"model_ref": "gpt", "limits": {"timeout": "30s"}});
//! let obj = resources::normalize(obj).unwrap();
//! let spec: AgentSpec = resources::spec_of(&obj).unwrap();
//! assert_eq!(spec.limits.max_steps, 10);
//! assert_eq!(obj.metadata.namespace, "default");
//! assert_eq!(obj.phase(), "Pending");
//! ```

mod agent;
mod agent_system;
pub mod duration;
mod governance;
mod mcp_server;
mod memory;
mod model_endpoint;
mod schedule;
mod secret;
mod shared_list;
mod status;
mod task;
mod tool;
mod util;

pub use agent::*;
pub use agent_system::*;
pub use duration::parse_duration;
pub use governance::*;
pub use mcp_server::*;
pub use memory::*;
pub use model_endpoint::*;
pub use schedule::*;
pub use secret::*;
pub use shared_list::SharedList;
pub use status::*;
pub use task::*;
pub use tool::*;

use crate::error::{Error, Result};
use crate::kind::{API_VERSION, DEFAULT_NAMESPACE, Kind};
use crate::object::{Object, ObjectMeta};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt::Debug;

/// Longest accepted `metadata.name` / `metadata.namespace`.
pub const MAX_NAME_LEN: usize = 253;

/// A typed spec: its kind, its status type, and its defaults/validation.
pub trait ResourceSpec:
    Serialize
    + DeserializeOwned
    + JsonSchema
    + Clone
    + Debug
    + PartialEq
    + Default
    + Send
    + Sync
    + 'static
{
    /// The kind this spec belongs to.
    const KIND: Kind;
    /// The typed status of the kind.
    type Status: Serialize
        + DeserializeOwned
        + JsonSchema
        + Clone
        + Debug
        + PartialEq
        + Default
        + Send
        + Sync;

    /// Applies defaults and validation in place. Errors name the field (`spec.x is required`);
    /// [`normalize`] prefixes them with the kind and object name.
    fn normalize(&mut self, meta: &ObjectMeta) -> Result<()>;
}

/// Applies defaults and validation to an object of any kind; the result is what gets stored.
/// Type errors name the field path (`spec.limits.max_steps: invalid type: ...`); rule errors
/// name the object and the field (`Agent "x": spec.model_ref is required`).
pub fn normalize(object: Object) -> Result<Object> {
    let mut object = object;
    normalize_envelope(&mut object)?;
    let spec = std::mem::take(&mut object.spec);
    object.spec = match object.kind {
        Kind::Agent => {
            if spec.get("model").is_some() {
                return Err(Error::invalid(format!(
                    "Agent {:?}: spec.model is not supported; use spec.model_ref (a ModelEndpoint name)",
                    object.metadata.name
                )));
            }
            normalize_spec::<AgentSpec>(spec, &object.metadata)?
        }
        Kind::AgentSystem => normalize_spec::<AgentSystemSpec>(spec, &object.metadata)?,
        Kind::ModelEndpoint => normalize_spec::<ModelEndpointSpec>(spec, &object.metadata)?,
        Kind::Tool => normalize_spec::<ToolSpec>(spec, &object.metadata)?,
        Kind::Secret => normalize_spec::<SecretSpec>(spec, &object.metadata)?,
        Kind::Memory => normalize_spec::<MemorySpec>(spec, &object.metadata)?,
        Kind::McpServer => normalize_spec::<McpServerSpec>(spec, &object.metadata)?,
        Kind::AgentPolicy => normalize_spec::<AgentPolicySpec>(spec, &object.metadata)?,
        Kind::AgentRole => normalize_spec::<AgentRoleSpec>(spec, &object.metadata)?,
        Kind::ToolPermission => normalize_spec::<ToolPermissionSpec>(spec, &object.metadata)?,
        Kind::ToolApproval => normalize_spec::<ToolApprovalSpec>(spec, &object.metadata)?,
        Kind::Task => normalize_spec::<TaskSpec>(spec, &object.metadata)?,
        Kind::TaskSchedule => normalize_spec::<TaskScheduleSpec>(spec, &object.metadata)?,
        Kind::TaskWebhook => normalize_spec::<TaskWebhookSpec>(spec, &object.metadata)?,
        Kind::Worker => normalize_spec::<WorkerSpec>(spec, &object.metadata)?,
    };
    let status = std::mem::take(&mut object.status);
    object.status = normalize_status(object.kind, status)
        .map_err(|e| e.context(format!("{} {:?}", object.kind, object.metadata.name)))?;
    Ok(object)
}

/// Checks `apiVersion`, `metadata.name` and `metadata.namespace`, applying their defaults.
fn normalize_envelope(object: &mut Object) -> Result<()> {
    let kind = object.kind;
    let api = object.api_version.trim();
    if api.is_empty() {
        object.api_version = API_VERSION.to_string();
    } else if api != API_VERSION {
        return Err(Error::invalid(format!(
            "{kind}: apiVersion {api:?} is not supported (expected {API_VERSION})"
        )));
    } else {
        object.api_version = API_VERSION.to_string();
    }
    let name = object.metadata.name.trim().to_string();
    if name.is_empty() {
        return Err(Error::invalid(format!("{kind}: metadata.name is required")));
    }
    validate_name(&name)
        .map_err(|why| Error::invalid(format!("{kind} {name:?}: metadata.name {why}")))?;
    object.metadata.name = name;
    let ns = object.metadata.namespace.trim().to_string();
    object.metadata.namespace = if ns.is_empty() {
        DEFAULT_NAMESPACE.to_string()
    } else {
        validate_name(&ns).map_err(|why| {
            Error::invalid(format!(
                "{kind} {:?}: metadata.namespace {why}",
                object.metadata.name
            ))
        })?;
        ns
    };
    Ok(())
}

/// Checks a resource or namespace name: 1–253 characters of `[A-Za-z0-9._-]`, starting with a
/// letter or digit. Returns what is wrong.
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("is longer than {MAX_NAME_LEN} characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("{name:?} must start with a letter or digit"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{name:?} contains {c:?}; only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

fn normalize_spec<S: ResourceSpec>(spec: Value, meta: &ObjectMeta) -> Result<Value> {
    let mut typed: S = parse_spec(spec)?;
    typed
        .normalize(meta)
        .map_err(|e| e.context(format!("{} {:?}", S::KIND, meta.name)))?;
    serde_json::to_value(&typed)
        .map_err(|e| Error::internal(format!("serializing {} spec: {e}", S::KIND)))
}

/// Deserializes a JSON value into `T`, naming the failing field: `<prefix>.<path>: <error>`.
pub(crate) fn from_value_at<T: DeserializeOwned>(prefix: &str, value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            Error::invalid(format!("{prefix}: {inner}"))
        } else if path.starts_with('[') {
            Error::invalid(format!("{prefix}{path}: {inner}"))
        } else {
            Error::invalid(format!("{prefix}.{path}: {inner}"))
        }
    })
}

/// Parses a spec value (null counts as `{}`) into a typed spec without normalizing it.
pub fn parse_spec<S: DeserializeOwned>(spec: Value) -> Result<S> {
    let spec = match spec {
        Value::Null => Value::Object(Default::default()),
        v @ Value::Object(_) => v,
        other => {
            return Err(Error::invalid(format!(
                "spec: expected a map, got {}",
                json_type(&other)
            )));
        }
    };
    from_value_at("spec", spec)
}

/// The typed spec of a stored (normalized) object. Fails when the kind does not match.
pub fn spec_of<S: ResourceSpec>(object: &Object) -> Result<S> {
    if object.kind != S::KIND {
        return Err(Error::invalid(format!(
            "expected a {} but {:?} is a {}",
            S::KIND,
            object.metadata.name,
            object.kind
        )));
    }
    parse_spec(object.spec.clone())
}

/// The typed status of an object (empty status gives the default).
pub fn status_of<S: ResourceSpec>(object: &Object) -> Result<S::Status> {
    parse_status(object.status.clone())
}

fn parse_status<T: DeserializeOwned>(status: Value) -> Result<T> {
    let status = match status {
        Value::Null => Value::Object(Default::default()),
        v @ Value::Object(_) => v,
        other => {
            return Err(Error::invalid(format!(
                "status: expected a map, got {}",
                json_type(&other)
            )));
        }
    };
    from_value_at("status", status)
}

/// Serializes a typed spec into an object of its kind (not normalized).
pub fn object_from_spec<S: ResourceSpec>(namespace: &str, name: &str, spec: &S) -> Result<Object> {
    let mut obj = Object::new(S::KIND, namespace, name);
    obj.spec = serde_json::to_value(spec)
        .map_err(|e| Error::internal(format!("serializing {} spec: {e}", S::KIND)))?;
    Ok(obj)
}

/// The phase a new object of this kind starts in.
pub fn initial_phase(kind: Kind) -> &'static str {
    match kind {
        Kind::AgentPolicy | Kind::AgentRole | Kind::ToolPermission => "Ready",
        _ => "Pending",
    }
}

/// ToolApproval phases.
pub const TOOL_APPROVAL_PHASES: &[&str] = &["Pending", "Approved", "Denied", "Expired"];
/// Worker phases.
pub const WORKER_PHASES: &[&str] = &["Pending", "Ready", "NotReady"];

/// Validates a status write for `kind` (typed parse, phase rules) and returns it normalized:
/// an empty phase becomes the kind's initial phase (governance kinds also turn `Pending` into
/// `Ready`); unknown fields are kept.
pub fn normalize_status(kind: Kind, status: Value) -> Result<Value> {
    fn typed<T: Serialize + DeserializeOwned>(status: Value) -> Result<Value> {
        let t: T = parse_status(status)?;
        serde_json::to_value(&t).map_err(|e| Error::internal(format!("serializing status: {e}")))
    }
    let mut value = match kind {
        Kind::Task => typed::<TaskStatus>(status)?,
        Kind::ToolApproval => typed::<ToolApprovalStatus>(status)?,
        Kind::Worker => typed::<WorkerStatus>(status)?,
        Kind::McpServer => typed::<McpServerStatus>(status)?,
        Kind::TaskSchedule => typed::<TaskScheduleStatus>(status)?,
        Kind::TaskWebhook => typed::<TaskWebhookStatus>(status)?,
        _ => typed::<CommonStatus>(status)?,
    };
    let Value::Object(map) = &mut value else {
        return Err(Error::internal("status did not serialize to a map"));
    };
    let phase = map
        .get("phase")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let governance = matches!(
        kind,
        Kind::AgentPolicy | Kind::AgentRole | Kind::ToolPermission
    );
    let phase = if phase.is_empty() || (governance && phase == "Pending") {
        initial_phase(kind).to_string()
    } else {
        phase
    };
    let allowed: Option<&[&str]> = match kind {
        Kind::Task => Some(TASK_PHASES),
        Kind::ToolApproval => Some(TOOL_APPROVAL_PHASES),
        Kind::Worker => Some(WORKER_PHASES),
        _ => None,
    };
    if let Some(allowed) = allowed
        && !allowed.contains(&phase.as_str())
    {
        return Err(Error::invalid(format!(
            "status.phase: unsupported {kind} phase {phase:?} (expected one of {})",
            allowed.join(", ")
        )));
    }
    map.insert("phase".into(), Value::String(phase));
    Ok(value)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a map",
    }
}

/// JSON Schema of the spec of `kind` (for CRDs and `orlojctl` docs).
pub fn spec_schema(kind: Kind) -> schemars::Schema {
    match kind {
        Kind::Agent => schemars::schema_for!(AgentSpec),
        Kind::AgentSystem => schemars::schema_for!(AgentSystemSpec),
        Kind::ModelEndpoint => schemars::schema_for!(ModelEndpointSpec),
        Kind::Tool => schemars::schema_for!(ToolSpec),
        Kind::Secret => schemars::schema_for!(SecretSpec),
        Kind::Memory => schemars::schema_for!(MemorySpec),
        Kind::McpServer => schemars::schema_for!(McpServerSpec),
        Kind::AgentPolicy => schemars::schema_for!(AgentPolicySpec),
        Kind::AgentRole => schemars::schema_for!(AgentRoleSpec),
        Kind::ToolPermission => schemars::schema_for!(ToolPermissionSpec),
        Kind::ToolApproval => schemars::schema_for!(ToolApprovalSpec),
        Kind::Task => schemars::schema_for!(TaskSpec),
        Kind::TaskSchedule => schemars::schema_for!(TaskScheduleSpec),
        Kind::TaskWebhook => schemars::schema_for!(TaskWebhookSpec),
        Kind::Worker => schemars::schema_for!(WorkerSpec),
    }
}
