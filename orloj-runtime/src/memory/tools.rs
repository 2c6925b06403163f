//! The built-in `memory.*` tools (spec runtime §10) as a [`ToolExecutor`] for Tool objects of
//! type [`MEMORY_TOOL_TYPE`].

use super::{MemoryError, MemoryRegistry};
use async_trait::async_trait;
use orloj_core::split_ref;
use orloj_core::tool::{ToolError, ToolErrorCode, ToolExecutor, ToolInvocation, ToolOutput};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Instant;

/// `spec.type` of the synthesized memory Tool objects.
pub const MEMORY_TOOL_TYPE: &str = "memory";
/// Annotation of a synthesized memory Tool holding the Memory reference (`namespace/name`).
pub const MEMORY_REF_ANNOTATION: &str = "orloj.dev/memory-ref";
/// Default `top_k` of `memory.search`.
const DEFAULT_TOP_K: usize = 10;

/// Serves `memory.read|write|search|list|ingest` calls on the backend of the Memory named by
/// the Tool's [`MEMORY_REF_ANNOTATION`], resolved through a shared [`MemoryRegistry`].
///
/// Register it with `GovernedToolRuntime::with_type_executor("memory", …)`.
#[derive(Debug, Clone)]
pub struct MemoryToolExecutor {
    registry: Arc<MemoryRegistry>,
}

impl MemoryToolExecutor {
    /// An executor over `registry`.
    pub fn new(registry: Arc<MemoryRegistry>) -> Self {
        Self { registry }
    }

    /// The registry the calls use.
    pub fn registry(&self) -> &Arc<MemoryRegistry> {
        &self.registry
    }

    async fn run(&self, invocation: &ToolInvocation) -> Result<Value, ToolError> {
        let tool = invocation.tool.name();
        let operation = tool
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("memory."))
            .map(|_| tool[7..].to_lowercase())
            .ok_or_else(|| {
                ToolError::new(
                    ToolErrorCode::UnsupportedTool,
                    format!("tool {tool:?} is not a memory tool (want memory.<operation>)"),
                )
            })?;
        let reference = invocation
            .tool
            .metadata
            .annotations
            .get(MEMORY_REF_ANNOTATION)
            .map(|r| r.trim())
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                ToolError::new(
                    ToolErrorCode::RuntimePolicyInvalid,
                    format!("tool {tool:?} has no {MEMORY_REF_ANNOTATION} annotation"),
                )
            })?;
        let (ns, name) = split_ref(reference, &invocation.namespace);
        let input = parse_input(tool, &invocation.input)?;
        let backend = self
            .registry
            .resolve(ns, name)
            .await
            .map_err(|e| backend_error(tool, e))?;
        let failed = |e| backend_error(tool, e);
        match operation.as_str() {
            "write" => {
                let key = required_str(tool, &input, "key")?;
                let value = match input.get("value") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                backend.put(&key, &value).await.map_err(failed)?;
                Ok(json!({"status": "ok", "key": key}))
            }
            "read" => {
                let key = required_str(tool, &input, "key")?;
                Ok(match backend.get(&key).await.map_err(failed)? {
                    Some(value) => json!({"found": true, "key": key, "value": value}),
                    None => json!({"found": false, "key": key}),
                })
            }
            "search" => {
                let query = required_str(tool, &input, "query")?;
                let top_k = match input.get("top_k") {
                    None | Some(Value::Null) => DEFAULT_TOP_K,
                    Some(v) => match v.as_i64() {
                        Some(n) if n > 0 => usize::try_from(n).unwrap_or(DEFAULT_TOP_K),
                        Some(_) => DEFAULT_TOP_K,
                        None => return Err(invalid(tool, "top_k must be an integer")),
                    },
                };
                let results = backend.search(&query, top_k).await.map_err(failed)?;
                Ok(json!({"count": results.len(), "results": results}))
            }
            "list" => {
                let prefix = optional_str(tool, &input, "prefix")?;
                let entries = backend.list(&prefix).await.map_err(failed)?;
                Ok(json!({"count": entries.len(), "entries": entries}))
            }
            "ingest" => {
                let source = required_str(tool, &input, "source")?;
                let content = required_str(tool, &input, "content")?;
                let chunk_size = optional_int(tool, &input, "chunk_size", 0)?;
                let overlap = optional_int(tool, &input, "overlap", -1)?;
                let stored = backend
                    .ingest(&source, &content, chunk_size, overlap)
                    .await
                    .map_err(failed)?;
                Ok(json!({"status": "ok", "source": source, "chunks_stored": stored}))
            }
            other => Err(ToolError::new(
                ToolErrorCode::UnsupportedTool,
                format!(
                    "tool {tool:?}: unknown memory operation {other:?} (want read, write, search, list or ingest)"
                ),
            )),
        }
    }
}

#[async_trait]
impl ToolExecutor for MemoryToolExecutor {
    async fn execute(&self, invocation: ToolInvocation) -> Result<ToolOutput, ToolError> {
        let started = Instant::now();
        let value = self.run(&invocation).await?;
        Ok(ToolOutput {
            result: value.to_string(),
            duration: started.elapsed(),
        })
    }
}

fn invalid(tool: &str, message: &str) -> ToolError {
    ToolError::new(
        ToolErrorCode::InvalidInput,
        format!("tool {tool:?}: {message}"),
    )
}

fn backend_error(tool: &str, err: MemoryError) -> ToolError {
    let code = match err {
        MemoryError::Backend(_) => ToolErrorCode::ExecutionFailed,
        MemoryError::UnsupportedProvider { .. } | MemoryError::Lookup { .. } => {
            ToolErrorCode::RuntimePolicyInvalid
        }
    };
    ToolError::new(code, format!("tool {tool:?}: {err}"))
}

/// The input as a JSON object; an empty input is an empty object.
fn parse_input(tool: &str, raw: &str) -> Result<Map<String, Value>, ToolError> {
    if raw.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid(tool, "input must be a JSON object")),
        Err(e) => Err(invalid(tool, &format!("input is not valid JSON: {e}"))),
    }
}

fn required_str(tool: &str, input: &Map<String, Value>, field: &str) -> Result<String, ToolError> {
    match input.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(invalid(tool, &format!("{field} is required")))
        }
        Some(_) => Err(invalid(tool, &format!("{field} must be a string"))),
    }
}

fn optional_str(tool: &str, input: &Map<String, Value>, field: &str) -> Result<String, ToolError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid(tool, &format!("{field} must be a string"))),
    }
}

fn optional_int(
    tool: &str,
    input: &Map<String, Value>,
    field: &str,
    default: i64,
) -> Result<i64, ToolError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| invalid(tool, &format!("{field} must be an integer"))),
    }
}
