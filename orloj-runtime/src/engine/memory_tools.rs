//! The built-in `memory.*` tools an agent is granted by `spec.memory.allow` (spec runtime §10,
//! fixed schemas of §7.2), synthesized as Tool objects of type `memory` so the agent turn offers
//! and dispatches them like any other tool. They never go to the store; the tool runtime routes
//! them to [`MemoryToolExecutor`](crate::memory::MemoryToolExecutor).

use crate::memory::{MEMORY_REF_ANNOTATION, MEMORY_TOOL_TYPE};
use orloj_core::resources::AgentSpec;
use orloj_core::{Kind, Object, scoped_key, split_ref};
use serde_json::{Value, json};

/// The operations in the order tools are offered.
pub const MEMORY_OPERATIONS: [&str; 5] = ["read", "write", "search", "list", "ingest"];

/// Description and input schema of `memory.<operation>`, `None` for an unknown operation.
pub fn memory_tool_schema(operation: &str) -> Option<(&'static str, Value)> {
    let string = json!({"type": "string"});
    let object = |props: Value, required: &[&str]| {
        json!({"type": "object", "properties": props, "required": required,
               "additionalProperties": false})
    };
    Some(match operation {
        "read" => (
            "Read the value stored under a key in the agent's memory.",
            object(json!({"key": string}), &["key"]),
        ),
        "write" => (
            "Store a value under a key in the agent's memory (replaces any previous value).",
            object(json!({"key": string, "value": string}), &["key", "value"]),
        ),
        "search" => (
            "Search the agent's memory; returns matching entries with scores.",
            object(
                json!({"query": string, "top_k": {"type": "integer", "minimum": 1, "default": 10}}),
                &["query"],
            ),
        ),
        "list" => (
            "List the agent's memory entries whose key starts with a prefix, sorted by key.",
            object(json!({"prefix": string}), &[]),
        ),
        "ingest" => (
            "Split a document into chunks stored as <source>/chunk-NNNN in the agent's memory.",
            object(
                json!({"source": string, "content": string}),
                &["source", "content"],
            ),
        ),
        _ => return None,
    })
}

/// The synthesized Tool objects (`memory.read`, …) for the operations in `spec.memory.allow`
/// (`read` and `memory.read` both accepted; unknown ones skipped), in [`MEMORY_OPERATIONS`]
/// order. Empty when the agent has no `spec.memory.ref`.
pub fn memory_tool_objects(spec: &AgentSpec, namespace: &str) -> Vec<Object> {
    let Some(memory) = spec
        .memory
        .as_ref()
        .filter(|m| !m.reference.trim().is_empty())
    else {
        return Vec::new();
    };
    let (m_ns, m_name) = split_ref(memory.reference.trim(), namespace);
    let reference = scoped_key(m_ns, m_name);
    let allowed: Vec<String> = memory
        .allow
        .iter()
        .map(|a| {
            let a = a.trim().to_lowercase();
            a.strip_prefix("memory.").map(str::to_string).unwrap_or(a)
        })
        .collect();
    MEMORY_OPERATIONS
        .iter()
        .filter(|op| allowed.iter().any(|a| a == *op))
        .filter_map(|op| {
            let (description, schema) = memory_tool_schema(op)?;
            let mut tool = Object::new(Kind::Tool, namespace, &format!("memory.{op}"));
            tool.metadata
                .annotations
                .insert(MEMORY_REF_ANNOTATION.into(), reference.clone());
            tool.spec = json!({
                "type": MEMORY_TOOL_TYPE,
                "description": description,
                "input_schema": schema,
            });
            Some(tool)
        })
        .collect()
}

/// Adds the agent's memory tools to `tools` and their names to `spec.tools` (skipping names
/// already there), so the turn offers and authorizes them; returns the extended spec.
pub fn with_memory_tools(
    mut spec: AgentSpec,
    tools: &mut Vec<Object>,
    namespace: &str,
) -> AgentSpec {
    for tool in memory_tool_objects(&spec, namespace) {
        let name = tool.name().to_string();
        if spec.tools.iter().any(|t| t.eq_ignore_ascii_case(&name)) {
            continue;
        }
        spec.tools.push(name);
        tools.push(tool);
    }
    spec
}
