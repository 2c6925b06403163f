//! Memory (spec runtime §10): the in-memory backend, the registry, the `memory.*` tool
//! executor and the synthesized tools an agent is granted.

use orloj_core::resources::{AgentMemory, AgentSpec, ToolSpec, spec_of};
use orloj_core::tool::{ToolErrorCode, ToolExecutor, ToolInvocation};
use orloj_core::{Kind, Object, Store, SystemClock};
use orloj_runtime::engine::memory_tools::{memory_tool_objects, with_memory_tools};
use orloj_runtime::memory::{
    InMemoryBackend, MEMORY_REF_ANNOTATION, MEMORY_TOOL_TYPE, MemoryBackend, MemoryError,
    MemoryRegistry, MemoryToolExecutor,
};
use orloj_store::MemoryStore;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn backend_put_get_list_search_ingest() {
    let b = InMemoryBackend::new();
    b.put("notes/b", "Rust is fast").await.expect("put");
    b.put("notes/a", "tokio runtime").await.expect("put");
    b.put("other", "unrelated").await.expect("put");
    b.put("notes/a", "Tokio Runtime v2")
        .await
        .expect("overwrite");
    assert_eq!(
        b.get("notes/a").await.expect("get").as_deref(),
        Some("Tokio Runtime v2")
    );
    assert_eq!(b.get("missing").await.expect("get"), None);

    let listed = b.list("notes/").await.expect("list");
    let keys: Vec<&str> = listed.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["notes/a", "notes/b"]);
    assert!(listed.iter().all(|e| e.score.is_none()));
    assert_eq!(b.list("").await.expect("list all").len(), 3);

    // Case-insensitive substring on key or value, key order, score 1.0, top_k honoured.
    let found = b.search("RUNTIME", 10).await.expect("search");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, "notes/a");
    assert_eq!(found[0].score, Some(1.0));
    let found = b.search("notes", 1).await.expect("search");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, "notes/a");
    assert!(b.search("  ", 10).await.expect("empty query").is_empty());

    let stored = b.ingest("doc", "abcdefghij", 4, 1).await.expect("ingest");
    assert_eq!(stored, 3);
    assert_eq!(
        b.get("doc/chunk-0001").await.expect("get").as_deref(),
        Some("defg")
    );
    assert_eq!(b.list("doc/").await.expect("list").len(), 3);
}

#[tokio::test]
async fn registry_shares_one_backend_per_memory_and_rejects_unknown_providers() {
    let registry = MemoryRegistry::new();
    assert!(registry.get("default", "m").is_none());
    let a = registry
        .get_or_create("default", "m", "in-memory")
        .expect("in-memory");
    a.put("k", "v").await.expect("put");
    let b = registry
        .get_or_create("default", "m", "")
        .expect("same backend");
    assert_eq!(b.get("k").await.expect("get").as_deref(), Some("v"));
    assert!(registry.get("default", "m").is_some());
    let other = registry
        .get_or_create("team", "m", "memory")
        .expect("other ns");
    assert_eq!(other.get("k").await.expect("get"), None);

    let err = registry
        .get_or_create("default", "vec", "pgvector")
        .err()
        .expect("pgvector is not built in");
    assert!(matches!(err, MemoryError::UnsupportedProvider { .. }));
    assert!(err.to_string().contains("pgvector"), "{err}");
    assert!(err.to_string().contains("default/vec"), "{err}");

    // A registered backend wins over the provider rules.
    registry.register("default", "vec", Arc::new(InMemoryBackend::new()));
    assert!(registry.get_or_create("default", "vec", "pgvector").is_ok());
}

#[tokio::test]
async fn registry_with_store_reads_the_provider_of_the_memory_resource() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(SystemClock)));
    for (name, provider) in [("plain", "in-memory"), ("remote", "http")] {
        let mut obj = Object::new(Kind::Memory, "default", name);
        obj.spec = json!({"provider": provider, "endpoint": "https://example.invalid"});
        store.upsert(obj).await.expect("upsert");
    }
    let registry = MemoryRegistry::with_store(store);
    assert!(registry.resolve("default", "plain").await.is_ok());
    let err = registry
        .resolve("default", "remote")
        .await
        .err()
        .expect("http");
    assert!(err.to_string().contains("\"http\""), "{err}");
    let err = registry
        .resolve("default", "ghost")
        .await
        .err()
        .expect("missing");
    assert!(err.to_string().contains("default/ghost"), "{err}");
    assert!(err.to_string().contains("not found"), "{err}");
}

fn agent_spec(reference: &str, allow: &[&str]) -> AgentSpec {
    AgentSpec {
        memory: Some(AgentMemory {
            reference: reference.into(),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn synthesized_tools_cover_only_allowed_operations() {
    let spec = agent_spec("notes", &["write", "memory.read", "bogus"]);
    let tools = memory_tool_objects(&spec, "team");
    let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
    assert_eq!(names, ["memory.read", "memory.write"]);
    for tool in &tools {
        assert_eq!(tool.kind, Kind::Tool);
        assert_eq!(tool.namespace(), "team");
        assert_eq!(
            tool.metadata
                .annotations
                .get(MEMORY_REF_ANNOTATION)
                .map(String::as_str),
            Some("team/notes")
        );
        let spec: ToolSpec = spec_of(tool).expect("tool spec parses");
        assert_eq!(spec.tool_type, MEMORY_TOOL_TYPE);
        assert!(!spec.description.is_empty());
        assert_eq!(
            spec.input_schema.as_ref().expect("schema")["type"],
            "object"
        );
    }
    let write: ToolSpec = spec_of(&tools[1]).expect("spec");
    assert_eq!(
        write.input_schema.expect("schema")["required"],
        json!(["key", "value"])
    );

    // No ref → no tools even with allow; an explicit namespace in the ref is kept.
    assert!(memory_tool_objects(&agent_spec("", &["read"]), "team").is_empty());
    assert!(memory_tool_objects(&AgentSpec::default(), "team").is_empty());
    let all = memory_tool_objects(
        &agent_spec("ops/notes", &["read", "write", "search", "list", "ingest"]),
        "team",
    );
    assert_eq!(all.len(), 5);
    assert_eq!(
        all[0].metadata.annotations[MEMORY_REF_ANNOTATION],
        "ops/notes"
    );

    // with_memory_tools extends both the names and the objects.
    let mut objects = Vec::new();
    let mut spec = agent_spec("notes", &["search"]);
    spec.tools = vec!["web".into()];
    let spec = with_memory_tools(spec, &mut objects, "default");
    assert_eq!(spec.tools, ["web", "memory.search"]);
    assert_eq!(objects.len(), 1);
}

fn invocation(tool: &Object, input: &str) -> ToolInvocation {
    ToolInvocation {
        request_id: "default/a/s001/x".into(),
        task_id: "default/t".into(),
        namespace: "default".into(),
        agent: "a".into(),
        tool: tool.clone(),
        input: input.into(),
        attempt: 1,
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn executor_runs_every_operation_on_the_agents_memory() {
    let registry = Arc::new(MemoryRegistry::new());
    let exec = MemoryToolExecutor::new(registry.clone());
    let spec = agent_spec("notes", &["read", "write", "search", "list", "ingest"]);
    let tools = memory_tool_objects(&spec, "default");
    let tool = |op: &str| {
        tools
            .iter()
            .find(|t| t.name() == format!("memory.{op}"))
            .expect("tool")
            .clone()
    };
    let run = |op: &str, input: &str| {
        let inv = invocation(&tool(op), input);
        let exec = exec.clone();
        async move {
            let out = exec.execute(inv).await.expect("memory call succeeds");
            serde_json::from_str::<Value>(&out.result).expect("json result")
        }
    };
    assert_eq!(
        run("write", r#"{"key":"fact/1","value":"The sky is blue"}"#).await,
        json!({"status": "ok", "key": "fact/1"})
    );
    run("write", r#"{"key":"fact/2","value":{"n":2}}"#).await;
    assert_eq!(
        run("read", r#"{"key":"fact/1"}"#).await,
        json!({"found": true, "key": "fact/1", "value": "The sky is blue"})
    );
    assert_eq!(
        run("read", r#"{"key":"nope"}"#).await,
        json!({"found": false, "key": "nope"})
    );
    let found = run("search", r#"{"query":"SKY","top_k":5}"#).await;
    assert_eq!(found["count"], 1);
    assert_eq!(found["results"][0]["key"], "fact/1");
    assert_eq!(found["results"][0]["score"], 1.0);
    let listed = run("list", r#"{"prefix":"fact/"}"#).await;
    assert_eq!(listed["count"], 2);
    assert_eq!(
        listed["entries"][1],
        json!({"key": "fact/2", "value": "{\"n\":2}"})
    );
    assert_eq!(
        run("ingest", r#"{"source":"doc","content":"hello world"}"#).await,
        json!({"status": "ok", "source": "doc", "chunks_stored": 1})
    );
    // The backend behind the tools is the registry's, shared with the API.
    let backend = registry
        .get("default", "notes")
        .expect("created on first use");
    assert_eq!(
        backend.get("doc/chunk-0000").await.expect("get").as_deref(),
        Some("hello world")
    );
}

#[tokio::test]
async fn executor_rejects_bad_input_naming_the_field() {
    let exec = MemoryToolExecutor::new(Arc::new(MemoryRegistry::new()));
    let spec = agent_spec("notes", &["read", "write", "search", "ingest"]);
    let tools = memory_tool_objects(&spec, "default");
    let by = |name: &str| {
        tools
            .iter()
            .find(|t| t.name() == name)
            .expect("tool")
            .clone()
    };
    for (tool, input, needle) in [
        ("memory.write", r#"{"value":"v"}"#, "key is required"),
        ("memory.read", r#"{"key":""}"#, "key is required"),
        ("memory.read", r#"{"key":7}"#, "key must be a string"),
        ("memory.read", "not json", "not valid JSON"),
        ("memory.read", "[1]", "JSON object"),
        ("memory.search", r#"{"top_k":3}"#, "query is required"),
        (
            "memory.search",
            r#"{"query":"q","top_k":"x"}"#,
            "top_k must be an integer",
        ),
        ("memory.ingest", r#"{"source":"s"}"#, "content is required"),
        ("memory.ingest", r#"{"content":"c"}"#, "source is required"),
    ] {
        let err = exec
            .execute(invocation(&by(tool), input))
            .await
            .expect_err("bad input fails");
        assert_eq!(err.code, ToolErrorCode::InvalidInput, "{tool} {input}");
        assert!(
            err.message.contains(needle),
            "{tool} {input}: {}",
            err.message
        );
        assert!(!err.retryable);
    }

    // A memory tool without its memory reference is misconfigured.
    let mut bare = by("memory.read");
    bare.metadata.annotations.clear();
    let err = exec
        .execute(invocation(&bare, r#"{"key":"k"}"#))
        .await
        .expect_err("no ref");
    assert_eq!(err.code, ToolErrorCode::RuntimePolicyInvalid);
    // An unknown operation is unsupported.
    let mut odd = by("memory.read");
    odd.metadata.name = "memory.delete".into();
    let err = exec
        .execute(invocation(&odd, r#"{"key":"k"}"#))
        .await
        .expect_err("unknown op");
    assert_eq!(err.code, ToolErrorCode::UnsupportedTool);
}
