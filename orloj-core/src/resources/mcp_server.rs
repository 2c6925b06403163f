//! McpServer (spec §2.7).

use super::ResourceSpec;
use super::duration::check_duration;
use super::status::McpServerStatus;
use super::tool::{ContainerResources, ToolAuth, ToolRetry, check_resources, normalize_auth};
use super::util::{check_enum, dedupe, default_int, default_str, require, trim};
use crate::error::{Error, Result};
use crate::kind::Kind;
use crate::object::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `McpServer.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpServerSpec {
    /// `stdio` or `http` (required).
    #[serde(default)]
    pub transport: String,
    /// Program to start (stdio; or `image`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub command: String,
    /// Program arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Container image running the server (stdio).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Registry pull secret.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_pull_secret: String,
    /// Server URL (required for http).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// Environment of the server process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<McpEnvVar>,
    /// Credentials (same rules as Tool `auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ToolAuth>,
    /// Which discovered tools become Tool resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_filter: Option<McpToolFilter>,
    /// Reconnect policy.
    #[serde(default)]
    pub reconnect: McpReconnect,
    /// Stop an idle stdio server after this long; `"0"` (default) keeps it running.
    #[serde(default)]
    pub idle_timeout: String,
    /// Container resource limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ContainerResources>,
    /// Runtime settings given to the generated Tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_tool_runtime: Option<McpDefaultToolRuntime>,
    /// SSRF gate for http servers on private addresses.
    #[serde(
        rename = "allowPrivate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_private: Option<bool>,
}

/// One environment variable of an MCP server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpEnvVar {
    /// Variable name (required).
    #[serde(default)]
    pub name: String,
    /// Literal value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Secret supplying the value.
    #[serde(
        rename = "secretRef",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub secret_ref: String,
    /// Mount the value as a file at this absolute path (needs `image`).
    #[serde(
        rename = "mountPath",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub mount_path: String,
}

/// `McpServer.spec.tool_filter`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpToolFilter {
    /// Allowlist of discovered tool names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
}

/// `McpServer.spec.reconnect`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpReconnect {
    /// Attempts (default 3).
    #[serde(default)]
    pub max_attempts: i64,
    /// Delay between attempts (default `2s`).
    #[serde(default)]
    pub backoff: String,
}

/// `McpServer.spec.default_tool_runtime`: unset fields fall back to the Tool defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpDefaultToolRuntime {
    /// Per-call timeout.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timeout: String,
    /// Isolation mode.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub isolation_mode: String,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<ToolRetry>,
}

impl ResourceSpec for McpServerSpec {
    const KIND: Kind = Kind::McpServer;
    type Status = McpServerStatus;

    fn normalize(&mut self, _meta: &ObjectMeta) -> Result<()> {
        if self.transport.trim().is_empty() {
            return Err(Error::invalid("spec.transport is required (stdio or http)"));
        }
        check_enum(
            "spec.transport",
            &mut self.transport,
            "",
            &["stdio", "http"],
        )?;
        trim(&mut self.command);
        trim(&mut self.image);
        trim(&mut self.endpoint);
        if self.transport == "stdio" && self.command.is_empty() && self.image.is_empty() {
            return Err(Error::invalid(
                "spec.command (or spec.image) is required when spec.transport is stdio",
            ));
        }
        if self.transport == "http" && self.endpoint.is_empty() {
            return Err(Error::invalid(
                "spec.endpoint is required when spec.transport is http",
            ));
        }
        for (i, env) in self.env.iter_mut().enumerate() {
            require(&format!("spec.env[{i}].name"), &mut env.name)?;
            trim(&mut env.secret_ref);
            trim(&mut env.mount_path);
            if !env.mount_path.is_empty() {
                if !env.mount_path.starts_with('/') {
                    return Err(Error::invalid(format!(
                        "spec.env[{i}].mountPath must be an absolute path, got {:?}",
                        env.mount_path
                    )));
                }
                if self.image.is_empty() {
                    return Err(Error::invalid(format!(
                        "spec.env[{i}].mountPath requires spec.image"
                    )));
                }
            }
        }
        if let Some(auth) = &mut self.auth {
            normalize_auth("spec.auth", auth)?;
            if *auth == ToolAuth::default() {
                self.auth = None;
            }
        }
        if let Some(filter) = &mut self.tool_filter {
            dedupe(&mut filter.include);
        }
        default_int(
            "spec.reconnect.max_attempts",
            &mut self.reconnect.max_attempts,
            3,
        )?;
        default_str(&mut self.reconnect.backoff, "2s");
        check_duration("spec.reconnect.backoff", &self.reconnect.backoff)?;
        default_str(&mut self.idle_timeout, "0");
        check_duration("spec.idle_timeout", &self.idle_timeout)?;
        if let Some(r) = &self.resources {
            check_resources("spec.resources", r)?;
        }
        if let Some(rt) = &mut self.default_tool_runtime {
            trim(&mut rt.timeout);
            check_duration("spec.default_tool_runtime.timeout", &rt.timeout)?;
            if !rt.isolation_mode.trim().is_empty() {
                check_enum(
                    "spec.default_tool_runtime.isolation_mode",
                    &mut rt.isolation_mode,
                    "",
                    super::tool::ISOLATION_MODES,
                )?;
            }
            if let Some(retry) = &rt.retry {
                check_duration("spec.default_tool_runtime.retry.backoff", &retry.backoff)?;
                check_duration(
                    "spec.default_tool_runtime.retry.max_backoff",
                    &retry.max_backoff,
                )?;
                super::util::non_negative(
                    "spec.default_tool_runtime.retry.max_attempts",
                    retry.max_attempts,
                )?;
            }
        }
        Ok(())
    }
}
