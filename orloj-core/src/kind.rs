//! The resource kinds and their names: canonical kind, REST path segment, CLI aliases.

use crate::error::Error;
use std::fmt;

/// The API version every resource carries.
pub const API_VERSION: &str = "orloj.dev/v1";

/// Namespace used when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";

macro_rules! kinds {
    ($( $variant:ident => $name:literal, $path:literal, $table:literal, status: $status:literal, watch: $watch:literal, aliases: [$($alias:literal),*] ;)*) => {
        /// One of the resource kinds of `orloj.dev/v1`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $(
                #[doc = concat!("`", $name, "` (`/v1/", $path, "`)")]
                $variant,
            )*
        }

        impl Kind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),*];

            /// The canonical kind name, e.g. `AgentSystem`.
            pub fn as_str(self) -> &'static str {
                match self { $(Kind::$variant => $name),* }
            }

            /// The REST path segment, e.g. `agent-systems`.
            pub fn plural(self) -> &'static str {
                match self { $(Kind::$variant => $path),* }
            }

            /// The Postgres table that stores this kind.
            pub fn table(self) -> &'static str {
                match self { $(Kind::$variant => $table),* }
            }

            /// Whether `GET|PUT /v1/<plural>/{name}/status` exists for this kind.
            pub fn has_status_subresource(self) -> bool {
                match self { $(Kind::$variant => $status),* }
            }

            /// Whether `GET /v1/<plural>/watch` exists for this kind.
            pub fn has_watch(self) -> bool {
                match self { $(Kind::$variant => $watch),* }
            }

            /// Extra names accepted by the CLI (besides kind, plural, and singular of the plural).
            pub fn aliases(self) -> &'static [&'static str] {
                match self { $(Kind::$variant => &[$($alias),*]),* }
            }
        }
    };
}

kinds! {
    Agent => "Agent", "agents", "agents", status: true, watch: true, aliases: ["ag"];
    AgentSystem => "AgentSystem", "agent-systems", "agent_systems", status: true, watch: false, aliases: ["agentsystem", "agentsystems", "system", "systems", "as"];
    ModelEndpoint => "ModelEndpoint", "model-endpoints", "model_endpoints", status: true, watch: false, aliases: ["modelendpoint", "modelendpoints", "endpoint", "endpoints", "me"];
    Tool => "Tool", "tools", "tools", status: true, watch: false, aliases: [];
    Secret => "Secret", "secrets", "secrets", status: false, watch: false, aliases: [];
    Memory => "Memory", "memories", "memories", status: true, watch: false, aliases: ["mem"];
    McpServer => "McpServer", "mcp-servers", "mcp_servers", status: false, watch: false, aliases: ["mcpserver", "mcpservers", "mcp"];
    AgentPolicy => "AgentPolicy", "agent-policies", "agent_policies", status: true, watch: false, aliases: ["agentpolicy", "agentpolicies", "policy", "policies"];
    AgentRole => "AgentRole", "agent-roles", "agent_roles", status: false, watch: false, aliases: ["agentrole", "agentroles", "role", "roles"];
    ToolPermission => "ToolPermission", "tool-permissions", "tool_permissions", status: false, watch: false, aliases: ["toolpermission", "toolpermissions", "permission", "permissions"];
    ToolApproval => "ToolApproval", "tool-approvals", "tool_approvals", status: false, watch: false, aliases: ["toolapproval", "toolapprovals", "approval", "approvals"];
    Task => "Task", "tasks", "tasks", status: true, watch: true, aliases: [];
    TaskSchedule => "TaskSchedule", "task-schedules", "task_schedules", status: true, watch: true, aliases: ["taskschedule", "taskschedules", "schedule", "schedules"];
    TaskWebhook => "TaskWebhook", "task-webhooks", "task_webhooks", status: true, watch: true, aliases: ["taskwebhook", "taskwebhooks", "webhook", "webhooks"];
    Worker => "Worker", "workers", "workers", status: true, watch: false, aliases: [];
}

impl Kind {
    /// Resolves a kind from its canonical name, case-insensitively (`agentsystem` → `AgentSystem`).
    pub fn from_kind_name(name: &str) -> Result<Kind, Error> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| Error::invalid(format!("unknown kind {name:?}")))
    }

    /// Resolves a kind from its REST path segment (`agent-systems`).
    pub fn from_plural(plural: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.plural() == plural)
    }

    /// Resolves a kind from anything a user may type on the command line: kind name,
    /// plural, singular of the plural, or an alias; case-insensitive, `_` and `-` ignored.
    pub fn from_cli_name(name: &str) -> Option<Kind> {
        fn squash(s: &str) -> String {
            s.chars()
                .filter(|c| *c != '-' && *c != '_')
                .flat_map(char::to_lowercase)
                .collect()
        }
        let wanted = squash(name.trim());
        Kind::ALL.iter().copied().find(|k| {
            let plural = squash(k.plural());
            let singular = squash(k.as_str());
            wanted == singular
                || wanted == plural
                || k.aliases().iter().any(|a| squash(a) == wanted)
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Kind::from_kind_name(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(
                Kind::from_kind_name(&k.as_str().to_lowercase()).ok(),
                Some(*k)
            );
            assert_eq!(Kind::from_plural(k.plural()), Some(*k));
            assert_eq!(Kind::from_cli_name(k.plural()), Some(*k));
            assert_eq!(Kind::from_cli_name(k.as_str()), Some(*k));
        }
        assert_eq!(Kind::from_cli_name("policies"), Some(Kind::AgentPolicy));
        assert_eq!(Kind::from_cli_name("agentsystem"), Some(Kind::AgentSystem));
        assert_eq!(
            Kind::from_cli_name("task_schedule"),
            Some(Kind::TaskSchedule)
        );
        assert_eq!(Kind::from_cli_name("nope"), None);
        assert!(Kind::from_kind_name("Nope").is_err());
    }

    #[test]
    fn aliases_are_unambiguous() {
        let mut seen = std::collections::HashMap::new();
        for k in Kind::ALL {
            for a in k.aliases() {
                assert!(seen.insert(*a, *k).is_none(), "alias {a} used twice");
            }
        }
    }
}
