//! Tool (spec §2.4), plus the auth/runtime/resources shapes McpServer shares.

use super::duration::check_duration;
use super::util::{
    check_enum, dedupe, dedupe_ci, default_int, default_str, is_false, is_zero, lenient_string,
    lenient_string_map, lower, require, trim,
};
use super::{CommonStatus, ResourceSpec};
use crate::error::{Error, Result};
use crate::kind::Kind;
use crate::object::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Tool types accepted.
pub const TOOL_TYPES: &[&str] = &[
    "http",
    "external",
    "grpc",
    "webhook-callback",
    "mcp",
    "wasm",
    "cli",
    "a2a",
];
/// Operation classes.
pub const OPERATION_CLASSES: &[&str] = &["read", "write", "delete", "admin"];
/// Risk levels.
pub const RISK_LEVELS: &[&str] = &["low", "medium", "high", "critical"];
/// Isolation modes.
pub const ISOLATION_MODES: &[&str] = &["none", "sandboxed", "container", "wasm", "kubernetes"];
/// Auth profiles of tools and MCP servers.
pub const AUTH_PROFILES: &[&str] = &[
    "bearer",
    "api_key_header",
    "basic",
    "oauth2_client_credentials",
];
/// Retry jitter modes.
pub const JITTER_MODES: &[&str] = &["none", "full", "equal"];

/// Default WASM memory limit (64 MiB).
pub const DEFAULT_WASM_MAX_MEMORY_BYTES: i64 = 64 * 1024 * 1024;
/// Default WASM fuel.
pub const DEFAULT_WASM_FUEL: i64 = 1_000_000;

/// `Tool.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// Tool type (default `http`).
    #[serde(rename = "type", default)]
    pub tool_type: String,
    /// Endpoint URL (http and similar types).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// Shown to the model.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// JSON Schema of the arguments, shown to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// McpServer name (required for `mcp`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mcp_server_ref: String,
    /// Tool name on the MCP server (required for `mcp`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mcp_tool_name: String,
    /// Capability strings (deduped case-insensitively).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// ⊆ read, write, delete, admin; defaulted from `risk_level`.
    #[serde(default)]
    pub operation_classes: Vec<String>,
    /// `low` (default), `medium`, `high`, `critical`.
    #[serde(default)]
    pub risk_level: String,
    /// Timeout, isolation and retry.
    #[serde(default)]
    pub runtime: ToolRuntime,
    /// Credentials injected into calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ToolAuth>,
    /// Command-line tool settings (`type: cli`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli: Option<ToolCli>,
    /// WebAssembly module settings (`type: wasm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<ToolWasm>,
    /// Remote A2A agent settings (`type: a2a`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a: Option<ToolA2a>,
}

/// `Tool.spec.runtime`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolRuntime {
    /// Per-call timeout (default `30s`).
    #[serde(default)]
    pub timeout: String,
    /// Where the call runs.
    #[serde(default)]
    pub isolation_mode: String,
    /// Retry of failed calls.
    #[serde(default)]
    pub retry: ToolRetry,
}

/// Retry policy of tool calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolRetry {
    /// Attempts including the first (default 1).
    #[serde(default)]
    pub max_attempts: i64,
    /// First backoff (default `0s`).
    #[serde(default)]
    pub backoff: String,
    /// Backoff cap (default `30s`).
    #[serde(default)]
    pub max_backoff: String,
    /// `none` (default), `full` or `equal`.
    #[serde(default)]
    pub jitter: String,
}

/// Credentials of a tool or MCP server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolAuth {
    /// `bearer` (implied by `secretRef`), `api_key_header`, `basic`, `oauth2_client_credentials`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub profile: String,
    /// Secret holding the credential.
    #[serde(
        rename = "secretRef",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub secret_ref: String,
    /// Header carrying the key (`api_key_header`).
    #[serde(
        rename = "headerName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub header_name: String,
    /// Token endpoint (`oauth2_client_credentials`).
    #[serde(rename = "tokenURL", default, skip_serializing_if = "String::is_empty")]
    pub token_url: String,
    /// OAuth2 scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

impl ToolAuth {
    fn is_empty(&self) -> bool {
        self.profile.is_empty()
            && self.secret_ref.is_empty()
            && self.header_name.is_empty()
            && self.token_url.is_empty()
            && self.scopes.is_empty()
    }
}

/// `Tool.spec.cli`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolCli {
    /// Program to run (required).
    #[serde(default)]
    pub command: String,
    /// Arguments; each is a Go-style template over the call input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Container image (required unless isolation is `none`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Registry pull secret.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_pull_secret: String,
    /// Container network (default `bridge`).
    #[serde(default)]
    pub network: String,
    /// Pipe the call input to stdin.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdin_from_input: bool,
    /// `stdout` (default), `stderr` or `both`.
    #[serde(default)]
    pub output: String,
    /// Working directory.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// Environment variables.
    #[serde(
        default,
        deserialize_with = "lenient_string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(with = "BTreeMap<String, String>")]
    pub env: BTreeMap<String, String>,
    /// Environment variables read from Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSecret>,
    /// Container resource limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ContainerResources>,
}

/// One `env_from` entry: an env var filled from a Secret key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvFromSecret {
    /// Variable name.
    #[serde(default)]
    pub name: String,
    /// Secret name.
    #[serde(rename = "secretRef", default)]
    pub secret_ref: String,
    /// Key within the Secret (default: the first key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

/// Container resource limits (tool `cli.resources`, McpServer `resources`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerResources {
    /// Memory limit, e.g. `256m`.
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "String::is_empty"
    )]
    pub memory: String,
    /// CPU limit, e.g. `0.5`.
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "String::is_empty"
    )]
    pub cpus: String,
    /// Process limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pids_limit: i64,
}

/// `Tool.spec.wasm`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolWasm {
    /// Path, `https://` URL or `oci://` reference of the module (required).
    #[serde(default)]
    pub module: String,
    /// Exported function to call (default `run`).
    #[serde(default)]
    pub entrypoint: String,
    /// Memory limit in bytes (default 64 MiB).
    #[serde(default)]
    pub max_memory_bytes: i64,
    /// Fuel limit (default 1,000,000).
    #[serde(default)]
    pub fuel: i64,
    /// Expose WASI to the module.
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable_wasi: bool,
    /// Registry pull secret for `oci://` modules.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_pull_secret: String,
}

/// `Tool.spec.a2a`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolA2a {
    /// URL of the remote agent (required).
    #[serde(default)]
    pub agent_url: String,
    /// A2A protocol version to speak.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol_version: String,
    /// Prefer streaming calls.
    #[serde(default, skip_serializing_if = "is_false")]
    pub prefer_streaming: bool,
}

impl ResourceSpec for ToolSpec {
    const KIND: Kind = Kind::Tool;
    type Status = CommonStatus;

    fn normalize(&mut self, _meta: &ObjectMeta) -> Result<()> {
        lower(&mut self.tool_type);
        if self.tool_type == "queue" {
            return Err(Error::invalid(
                "spec.type: tool type \"queue\" is no longer supported",
            ));
        }
        check_enum("spec.type", &mut self.tool_type, "http", TOOL_TYPES)?;
        trim(&mut self.endpoint);
        trim(&mut self.mcp_server_ref);
        trim(&mut self.mcp_tool_name);
        if self.tool_type == "mcp" {
            for (field, value) in [
                ("spec.mcp_server_ref", &self.mcp_server_ref),
                ("spec.mcp_tool_name", &self.mcp_tool_name),
            ] {
                if value.is_empty() {
                    return Err(Error::invalid(format!(
                        "{field} is required when spec.type is mcp"
                    )));
                }
            }
        }
        dedupe_ci(&mut self.capabilities);
        check_enum("spec.risk_level", &mut self.risk_level, "low", RISK_LEVELS)?;
        let high_risk = matches!(self.risk_level.as_str(), "high" | "critical");
        for class in &mut self.operation_classes {
            lower(class);
            if !class.is_empty() && !OPERATION_CLASSES.contains(&class.as_str()) {
                return Err(Error::invalid(format!(
                    "spec.operation_classes: unsupported value {class:?} (expected one of {})",
                    OPERATION_CLASSES.join(", ")
                )));
            }
        }
        dedupe(&mut self.operation_classes);
        if self.operation_classes.is_empty() {
            let default = if high_risk { "write" } else { "read" };
            self.operation_classes.push(default.to_string());
        }

        let default_isolation = if self.tool_type == "cli" {
            "container"
        } else if high_risk {
            "sandboxed"
        } else {
            "none"
        };
        normalize_runtime("spec.runtime", &mut self.runtime, default_isolation)?;

        if let Some(auth) = &mut self.auth {
            normalize_auth("spec.auth", auth)?;
            if auth.is_empty() {
                self.auth = None;
            } else if self.tool_type == "cli" {
                return Err(Error::invalid(
                    "spec.auth is not supported for type cli (use spec.cli.env_from)",
                ));
            }
        }

        match &mut self.cli {
            Some(cli) => normalize_cli(cli, &self.runtime.isolation_mode)?,
            None if self.tool_type == "cli" => {
                return Err(Error::invalid("spec.cli.command is required for type cli"));
            }
            None => {}
        }
        // The reference requires `wasm.module` for wasm tools; its own examples leave the
        // block out (the module then comes from the worker's --tool-wasm-module flag), so the
        // module is only required once a `wasm` block is written.
        if let Some(wasm) = &mut self.wasm {
            require("spec.wasm.module", &mut wasm.module)?;
            default_str(&mut wasm.entrypoint, "run");
            default_int(
                "spec.wasm.max_memory_bytes",
                &mut wasm.max_memory_bytes,
                DEFAULT_WASM_MAX_MEMORY_BYTES,
            )?;
            default_int("spec.wasm.fuel", &mut wasm.fuel, DEFAULT_WASM_FUEL)?;
            trim(&mut wasm.image_pull_secret);
        }
        match &mut self.a2a {
            Some(a2a) => require("spec.a2a.agent_url", &mut a2a.agent_url)?,
            None if self.tool_type == "a2a" => {
                return Err(Error::invalid(
                    "spec.a2a.agent_url is required for type a2a",
                ));
            }
            None => {}
        }
        Ok(())
    }
}

fn normalize_cli(cli: &mut ToolCli, isolation: &str) -> Result<()> {
    require("spec.cli.command", &mut cli.command)?;
    trim(&mut cli.image);
    if cli.image.is_empty() && isolation != "none" {
        return Err(Error::invalid(format!(
            "spec.cli.image is required unless spec.runtime.isolation_mode is none (got {isolation})"
        )));
    }
    default_str(&mut cli.network, "bridge");
    check_enum(
        "spec.cli.output",
        &mut cli.output,
        "stdout",
        &["stdout", "stderr", "both"],
    )?;
    for (i, e) in cli.env_from.iter_mut().enumerate() {
        require(&format!("spec.cli.env_from[{i}].name"), &mut e.name)?;
        require(
            &format!("spec.cli.env_from[{i}].secretRef"),
            &mut e.secret_ref,
        )?;
        trim(&mut e.key);
    }
    if let Some(r) = &cli.resources {
        check_resources("spec.cli.resources", r)?;
    }
    Ok(())
}

pub(crate) fn check_resources(field: &str, r: &ContainerResources) -> Result<()> {
    if !r.cpus.trim().is_empty() {
        match r.cpus.trim().parse::<f64>() {
            Ok(c) if c > 0.0 => {}
            _ => {
                return Err(Error::invalid(format!(
                    "{field}.cpus: expected a positive number, got {:?}",
                    r.cpus
                )));
            }
        }
    }
    super::util::non_negative(&format!("{field}.pids_limit"), r.pids_limit)
}

/// Applies the runtime defaults and checks (shared with McpServer `default_tool_runtime`).
pub(crate) fn normalize_runtime(
    field: &str,
    rt: &mut ToolRuntime,
    default_isolation: &str,
) -> Result<()> {
    default_str(&mut rt.timeout, "30s");
    check_duration(&format!("{field}.timeout"), &rt.timeout)?;
    check_enum(
        &format!("{field}.isolation_mode"),
        &mut rt.isolation_mode,
        default_isolation,
        ISOLATION_MODES,
    )?;
    normalize_retry(&format!("{field}.retry"), &mut rt.retry)
}

fn normalize_retry(field: &str, r: &mut ToolRetry) -> Result<()> {
    default_int(&format!("{field}.max_attempts"), &mut r.max_attempts, 1)?;
    default_str(&mut r.backoff, "0s");
    check_duration(&format!("{field}.backoff"), &r.backoff)?;
    default_str(&mut r.max_backoff, "30s");
    check_duration(&format!("{field}.max_backoff"), &r.max_backoff)?;
    check_enum(
        &format!("{field}.jitter"),
        &mut r.jitter,
        "none",
        JITTER_MODES,
    )
}

/// Auth profile rules shared by Tool and McpServer.
pub(crate) fn normalize_auth(field: &str, auth: &mut ToolAuth) -> Result<()> {
    lower(&mut auth.profile);
    trim(&mut auth.secret_ref);
    trim(&mut auth.header_name);
    trim(&mut auth.token_url);
    dedupe(&mut auth.scopes);
    if auth.is_empty() {
        return Ok(());
    }
    if auth.profile.is_empty() {
        auth.profile = "bearer".into();
    }
    if !AUTH_PROFILES.contains(&auth.profile.as_str()) {
        return Err(Error::invalid(format!(
            "{field}.profile: unsupported value {:?} (expected one of {})",
            auth.profile,
            AUTH_PROFILES.join(", ")
        )));
    }
    if auth.secret_ref.is_empty() {
        return Err(Error::invalid(format!(
            "{field}.secretRef is required when {field}.profile is {}",
            auth.profile
        )));
    }
    match auth.profile.as_str() {
        "api_key_header" if auth.header_name.is_empty() => Err(Error::invalid(format!(
            "{field}.headerName is required when {field}.profile is api_key_header"
        ))),
        "oauth2_client_credentials" if auth.token_url.is_empty() => Err(Error::invalid(format!(
            "{field}.tokenURL is required when {field}.profile is oauth2_client_credentials"
        ))),
        _ => Ok(()),
    }
}
