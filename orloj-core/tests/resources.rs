//! Defaults and validation rules of every kind (spec §2), through the manifest path.

use orloj_core::resources::{self, *};
use orloj_core::{ErrorKind, Kind, Object, parse_manifests};
use serde_json::{Value, json};

/// Parses and normalizes one YAML document.
fn ok(yaml: &str) -> Object {
    let mut objs = parse_manifests("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(objs.len(), 1);
    objs.remove(0)
}

/// The error message for one YAML document (without the source prefix).
fn err(yaml: &str) -> String {
    match parse_manifests("test.yaml", yaml) {
        Ok(o) => panic!("expected an error, got {o:?}"),
        Err(e) => e.message,
    }
}

fn doc(kind: &str, spec: &str) -> String {
    format!("apiVersion: orloj.dev/v1\nkind: {kind}\nmetadata:\n  name: x\nspec:\n{spec}")
}

fn assert_err(kind: &str, spec: &str, want: &str) {
    let msg = err(&doc(kind, spec));
    assert!(msg.contains(want), "error {msg:?} should contain {want:?}");
}

// ---- envelope ----

#[test]
fn envelope_defaults_and_checks() {
    let obj = ok("kind: worker\nmetadata: {name: web_search}\n");
    assert_eq!(obj.kind, Kind::Worker);
    assert_eq!(obj.api_version, "orloj.dev/v1");
    assert_eq!(obj.metadata.namespace, "default");
    assert_eq!(obj.phase(), "Pending");

    let msg = err("apiVersion: orloj.dev/v2\nkind: Worker\nmetadata: {name: a}\n");
    assert!(
        msg.contains("apiVersion \"orloj.dev/v2\" is not supported"),
        "{msg}"
    );
    assert!(err("kind: Worker\nmetadata: {}\n").contains("Worker: metadata.name is required"));
    assert!(
        err("kind: Worker\nmetadata: {name: 'a b'}\n")
            .contains("metadata.name \"a b\" contains ' '")
    );
    assert!(
        err("kind: Worker\nmetadata: {name: -a}\n").contains("must start with a letter or digit")
    );
    let long = "a".repeat(254);
    assert!(
        err(&format!("kind: Worker\nmetadata: {{name: {long}}}\n")).contains("longer than 253")
    );
    assert!(
        err("kind: Worker\nmetadata: {name: a, namespace: 'x/y'}\n").contains("metadata.namespace")
    );
    assert_eq!(
        ok("kind: Worker\nmetadata: {name: a.b-c_1, namespace: team-1}\n")
            .metadata
            .namespace,
        "team-1"
    );
    assert!(err("kind: Worker\nmetadata: {name: a}\nspec: [1]\n").contains("spec: expected a map"));
}

#[test]
fn normalize_errors_are_invalid() {
    let mut obj = Object::new(Kind::Agent, "", "a");
    obj.spec = json!({});
    let e = resources::normalize(obj).expect_err("model_ref missing");
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert_eq!(e.message(), "Agent \"a\": spec.model_ref is required");
}

// ---- Agent ----

#[test]
fn agent_defaults() {
    let obj = ok(&doc(
        "Agent",
        "  model_ref: ' gpt '\n  allowed_tools: [Search, search, ' x ']\n  roles: [r, r]\n",
    ));
    let spec: AgentSpec = resources::spec_of(&obj).expect("typed");
    assert_eq!(spec.model_ref, "gpt");
    assert_eq!(spec.limits.max_steps, 10);
    assert_eq!(spec.execution.profile, "dynamic");
    assert_eq!(spec.execution.duplicate_tool_call_policy, "short_circuit");
    assert_eq!(spec.execution.on_contract_violation, "non_retryable_error");
    assert_eq!(spec.execution.tool_use_behavior, "run_llm_again");
    assert_eq!(spec.allowed_tools, vec!["Search", "x"]);
    assert_eq!(spec.roles, vec!["r"]);
}

#[test]
fn agent_rules() {
    assert_err(
        "Agent",
        "  prompt: hi\n",
        "Agent \"x\": spec.model_ref is required",
    );
    assert_err("Agent", "  model: gpt-4o\n", "use spec.model_ref");
    assert_err(
        "Agent",
        "  model_ref: m\n  execution: {profile: Contract}\n",
        "spec.execution.tool_sequence is required",
    );
    let obj = ok(&doc(
        "Agent",
        "  model_ref: m\n  execution: {profile: Contract, tool_sequence: [a, a, b]}\n",
    ));
    assert_eq!(obj.spec["execution"]["profile"], "contract");
    assert_eq!(obj.spec["execution"]["tool_sequence"], json!(["a", "b"]));
    assert_err(
        "Agent",
        "  model_ref: m\n  execution: {duplicate_tool_call_policy: maybe}\n",
        "spec.execution.duplicate_tool_call_policy: unsupported value \"maybe\"",
    );
    assert_err(
        "Agent",
        "  model_ref: m\n  execution: {on_contract_violation: x}\n",
        "spec.execution.on_contract_violation",
    );
    assert_err(
        "Agent",
        "  model_ref: m\n  execution: {tool_use_behavior: x}\n",
        "spec.execution.tool_use_behavior",
    );
    assert_err(
        "Agent",
        "  model_ref: m\n  limits: {timeout: soon}\n",
        "spec.limits.timeout: invalid duration \"soon\"",
    );
    assert_err(
        "Agent",
        "  model_ref: m\n  limits: {max_steps: -1}\n",
        "spec.limits.max_steps must be >= 0",
    );
    assert_err(
        "Agent",
        "  model_ref: m\n  limits: {max_steps: x}\n",
        "spec.limits.max_steps: invalid type: string \"x\", expected i64",
    );
    assert_err(
        "Agent",
        "  model_ref: m\n  limitz: {}\n",
        "spec.limitz: unknown field `limitz`",
    );

    let obj = ok(&doc(
        "Agent",
        "  model_ref: m\n  memory: {ref: mem, allow: [memory.read, WRITE, read]}\n",
    ));
    assert_eq!(obj.spec["memory"]["allow"], json!(["read", "write"]));
    assert_err(
        "Agent",
        "  model_ref: m\n  memory: {allow: [read]}\n",
        "spec.memory.allow requires spec.memory.ref",
    );
    assert_err(
        "Agent",
        "  model_ref: m\n  memory: {ref: mem, allow: [delete]}\n",
        "spec.memory.allow: unsupported operation \"delete\"",
    );

    let obj = ok(&doc(
        "Agent",
        "  model_ref: m\n  fallback_model_refs: [a, b, a]\n  execution:\n    output_schema: {type: object, properties: {x: {type: string}}}\n",
    ));
    assert_eq!(obj.spec["fallback_model_refs"], json!(["a", "b"]));
    assert_eq!(
        obj.spec["execution"]["output_schema"]["properties"]["x"]["type"],
        "string"
    );
    assert_err(
        "Agent",
        "  model_ref: m\n  execution:\n    output_schema: {properties: {}}\n",
        "spec.execution.output_schema.type is required",
    );
    let mut deep = String::from("{type: object}");
    for _ in 0..11 {
        deep = format!("{{type: object, properties: {{a: {deep}}}}}");
    }
    assert_err(
        "Agent",
        &format!("  model_ref: m\n  execution:\n    output_schema: {deep}\n"),
        "nested too deeply",
    );
}

// ---- AgentSystem ----

#[test]
fn agent_system_graph() {
    let obj = ok(&doc("AgentSystem", "  agents: [a, b, a]\n"));
    assert_eq!(obj.spec["graph"], json!({}));
    assert_eq!(obj.spec["agents"], json!(["a", "b"]));

    let obj = ok(&doc(
        "AgentSystem",
        "  agents: [a, b, c]\n  graph:\n    a:\n      edges: [{to: b}, {to: ''}, {to: c, labels: {k: v}}]\n    c:\n      join: {mode: Quorum, quorum_percent: 50}\n  a2a: {enabled: true, auth: Bearer}\n",
    ));
    let spec: AgentSystemSpec = resources::spec_of(&obj).expect("typed");
    assert_eq!(spec.graph["a"].edges.len(), 2);
    let join = spec.graph["c"].join.as_ref().expect("join");
    assert_eq!(join.mode, "quorum");
    assert_eq!(join.on_failure, "deadletter");
    assert_eq!(spec.a2a.as_ref().map(|a| a.auth.as_str()), Some(""));

    assert_err(
        "AgentSystem",
        "  graph:\n    c:\n      join: {quorum_percent: 101}\n",
        "spec.graph.c.join.quorum_percent must be between 0 and 100",
    );
    assert_err(
        "AgentSystem",
        "  graph:\n    c:\n      join: {quorum_count: -1}\n",
        "spec.graph.c.join.quorum_count must be >= 0",
    );
    assert_err(
        "AgentSystem",
        "  graph:\n    c:\n      join: {mode: any}\n",
        "spec.graph.c.join.mode: unsupported value \"any\"",
    );
    assert_err(
        "AgentSystem",
        "  graph:\n    c:\n      join: {on_failure: explode}\n",
        "spec.graph.c.join.on_failure",
    );
    assert_err(
        "AgentSystem",
        "  graph:\n    c:\n      delegates: [{to: c}]\n",
        "cannot delegate to itself",
    );
    assert_err("AgentSystem", "  a2a: {auth: token}\n", "spec.a2a.auth");
}

#[test]
fn agent_system_conditions_and_reviews() {
    let good = "  graph:\n    a:\n      edges:\n        - {to: b, condition: {output_json_path: $.score, greater_than: 0.5}}\n        - {to: c, condition: {output_matches: '^ok'}}\n        - {to: d, condition: {default: true}}\n";
    ok(&doc("AgentSystem", good));
    let edges = |cond: &str| {
        format!("  graph:\n    a:\n      edges:\n        - {{to: b, condition: {cond}}}\n")
    };
    assert_err(
        "AgentSystem",
        &edges("{default: true, output_contains: x}"),
        "spec.graph.a.edges[0].condition: default cannot be combined",
    );
    assert_err(
        "AgentSystem",
        &edges("{output_json_path: score, equals: 1}"),
        "output_json_path: must start with \"$.\"",
    );
    assert_err(
        "AgentSystem",
        &edges("{output_json_path: $.score}"),
        "output_json_path needs one of",
    );
    assert_err(
        "AgentSystem",
        &edges("{equals: 1}"),
        "need output_json_path",
    );
    assert_err(
        "AgentSystem",
        &edges("{output_matches: '(' }"),
        "output_matches: invalid regular expression",
    );
    assert_err(
        "AgentSystem",
        &edges("{}"),
        "at least one condition is required",
    );
    assert_err(
        "AgentSystem",
        &edges(&format!("{{output_matches: '{}'}}", "a".repeat(513))),
        "longer than 512",
    );
    assert_err(
        "AgentSystem",
        "  graph:\n    a:\n      edges:\n        - {to: b, condition: {default: true}}\n        - {to: c, condition: {default: true}}\n",
        "at most one edge may have condition.default",
    );

    let obj = ok(&doc(
        "AgentSystem",
        "  graph:\n    a:\n      review: {checkpoint_id: r1}\n  completion_review: {checkpoint_id: final, allow_request_changes: false}\n",
    ));
    let spec: AgentSystemSpec = resources::spec_of(&obj).expect("typed");
    let review = spec.graph["a"].review.as_ref().expect("review");
    assert_eq!(
        (
            review.ttl.as_str(),
            review.max_review_cycles,
            review.allow_request_changes
        ),
        ("10m", 3, true)
    );
    assert!(
        !spec
            .completion_review
            .expect("completion")
            .allow_request_changes
    );
    assert_err(
        "AgentSystem",
        "  graph:\n    a:\n      review: {reason: x}\n",
        "spec.graph.a.review.checkpoint_id is required",
    );
    assert_err(
        "AgentSystem",
        "  graph:\n    a:\n      review: {checkpoint_id: r}\n  completion_review: {checkpoint_id: r}\n",
        "used more than once",
    );
}

// ---- ModelEndpoint ----

#[test]
fn model_endpoint_rules() {
    let obj = ok(&doc(
        "ModelEndpoint",
        "  default_model: gpt-4o\n  options: {Temperature: 0.2, ' Max_Tokens ': '10'}\n",
    ));
    let spec: ModelEndpointSpec = resources::spec_of(&obj).expect("typed");
    assert_eq!(spec.provider, "openai");
    assert_eq!(spec.base_url, "https://api.openai.com/v1");
    assert_eq!(
        spec.options.get("temperature").map(String::as_str),
        Some("0.2")
    );
    assert_eq!(
        spec.options.get("max_tokens").map(String::as_str),
        Some("10")
    );
    assert!(!spec.allow_private());

    let spec: ModelEndpointSpec = resources::spec_of(&ok(&doc(
        "ModelEndpoint",
        "  provider: Ollama\n  default_model: llama3\n",
    )))
    .expect("typed");
    assert_eq!(spec.base_url, "http://127.0.0.1:11434");
    assert!(spec.allow_private());
    let spec: ModelEndpointSpec = resources::spec_of(&ok(&doc(
        "ModelEndpoint",
        "  provider: anthropic\n  default_model: c\n",
    )))
    .expect("typed");
    assert_eq!(spec.base_url, "https://api.anthropic.com/v1");
    let obj = ok(&doc(
        "ModelEndpoint",
        "  provider: openai_compatible\n  default_model: m\n  allowPrivate: true\n  auth: {secretRef: key}\n",
    ));
    assert_eq!(obj.spec["provider"], "openai-compatible");
    assert!(obj.spec.get("base_url").is_none());
    assert_eq!(obj.spec["allowPrivate"], true);
    assert_eq!(obj.spec["auth"]["secretRef"], "key");
    assert_eq!(
        ok(&doc(
            "ModelEndpoint",
            "  provider: aws_bedrock\n  default_model: m\n"
        ))
        .spec["provider"],
        "bedrock"
    );
    assert_err(
        "ModelEndpoint",
        "  provider: openai\n",
        "ModelEndpoint \"x\": spec.default_model is required",
    );
}

// ---- Tool ----

#[test]
fn tool_defaults() {
    let spec: ToolSpec =
        resources::spec_of(&ok(&doc("Tool", "  endpoint: http://x\n"))).expect("typed");
    assert_eq!(spec.tool_type, "http");
    assert_eq!(spec.risk_level, "low");
    assert_eq!(spec.operation_classes, vec!["read"]);
    assert_eq!(spec.runtime.timeout, "30s");
    assert_eq!(spec.runtime.isolation_mode, "none");
    assert_eq!(spec.runtime.retry.max_attempts, 1);
    assert_eq!(spec.runtime.retry.backoff, "0s");
    assert_eq!(spec.runtime.retry.max_backoff, "30s");
    assert_eq!(spec.runtime.retry.jitter, "none");

    let spec: ToolSpec = resources::spec_of(&ok(&doc(
        "Tool",
        "  risk_level: HIGH\n  capabilities: [A, a, b]\n",
    )))
    .expect("typed");
    assert_eq!(spec.operation_classes, vec!["write"]);
    assert_eq!(spec.runtime.isolation_mode, "sandboxed");
    assert_eq!(spec.capabilities, vec!["A", "b"]);

    let spec: ToolSpec = resources::spec_of(&ok(&doc(
        "Tool",
        "  type: cli\n  cli: {command: jq, image: 'jq:1', resources: {cpus: 0.5, memory: 64m}}\n",
    )))
    .expect("typed");
    assert_eq!(spec.runtime.isolation_mode, "container");
    let cli = spec.cli.expect("cli");
    assert_eq!(
        (cli.network.as_str(), cli.output.as_str()),
        ("bridge", "stdout")
    );
    assert_eq!(cli.resources.expect("resources").cpus, "0.5");

    let spec: ToolSpec = resources::spec_of(&ok(&doc(
        "Tool",
        "  type: wasm\n  wasm: {module: 'oci://x/y'}\n",
    )))
    .expect("typed");
    let wasm = spec.wasm.expect("wasm");
    assert_eq!(
        (wasm.entrypoint.as_str(), wasm.max_memory_bytes, wasm.fuel),
        ("run", 64 * 1024 * 1024, 1_000_000)
    );

    let spec: ToolSpec =
        resources::spec_of(&ok(&doc("Tool", "  auth: {secretRef: tok}\n"))).expect("typed");
    assert_eq!(spec.auth.expect("auth").profile, "bearer");
}

#[test]
fn tool_rules() {
    assert_err(
        "Tool",
        "  type: mcp\n",
        "Tool \"x\": spec.mcp_server_ref is required when spec.type is mcp",
    );
    assert_err(
        "Tool",
        "  type: mcp\n  mcp_server_ref: s\n",
        "spec.mcp_tool_name is required when spec.type is mcp",
    );
    ok(&doc(
        "Tool",
        "  type: mcp\n  mcp_server_ref: s\n  mcp_tool_name: t\n",
    ));
    assert_err(
        "Tool",
        "  type: queue\n",
        "spec.type: tool type \"queue\" is no longer supported",
    );
    assert_err(
        "Tool",
        "  type: ftp\n",
        "spec.type: unsupported value \"ftp\"",
    );
    assert_err(
        "Tool",
        "  operation_classes: [read, execute]\n",
        "spec.operation_classes: unsupported value \"execute\"",
    );
    assert_err("Tool", "  risk_level: extreme\n", "spec.risk_level");
    assert_err(
        "Tool",
        "  runtime: {isolation_mode: vm}\n",
        "spec.runtime.isolation_mode",
    );
    assert_err(
        "Tool",
        "  runtime: {timeout: '5'}\n",
        "spec.runtime.timeout: invalid duration \"5\"",
    );
    assert_err(
        "Tool",
        "  runtime: {timeout: 5}\n",
        "spec.runtime.timeout: invalid type: integer `5`, expected a string",
    );
    assert_err(
        "Tool",
        "  runtime: {retry: {max_backoff: 1y}}\n",
        "spec.runtime.retry.max_backoff",
    );
    assert_err(
        "Tool",
        "  runtime: {retry: {jitter: some}}\n",
        "spec.runtime.retry.jitter",
    );
    assert_err(
        "Tool",
        "  auth: {profile: basic}\n",
        "spec.auth.secretRef is required when spec.auth.profile is basic",
    );
    assert_err(
        "Tool",
        "  auth: {profile: api_key_header, secretRef: s}\n",
        "spec.auth.headerName is required",
    );
    assert_err(
        "Tool",
        "  auth: {profile: oauth2_client_credentials, secretRef: s}\n",
        "spec.auth.tokenURL is required",
    );
    assert_err(
        "Tool",
        "  auth: {profile: kerberos, secretRef: s}\n",
        "spec.auth.profile: unsupported value \"kerberos\"",
    );
    ok(&doc(
        "Tool",
        "  auth: {profile: oauth2_client_credentials, secretRef: s, tokenURL: 'https://t', scopes: [a]}\n",
    ));
    assert_err("Tool", "  type: cli\n", "spec.cli.command is required");
    assert_err(
        "Tool",
        "  type: cli\n  cli: {command: jq}\n",
        "spec.cli.image is required unless spec.runtime.isolation_mode is none",
    );
    ok(&doc(
        "Tool",
        "  type: cli\n  runtime: {isolation_mode: none}\n  cli: {command: jq}\n",
    ));
    assert_err(
        "Tool",
        "  type: cli\n  auth: {secretRef: s}\n  cli: {command: jq, image: i}\n",
        "spec.auth is not supported for type cli",
    );
    assert_err(
        "Tool",
        "  type: cli\n  cli: {command: jq, image: i, output: file}\n",
        "spec.cli.output",
    );
    assert_err(
        "Tool",
        "  type: cli\n  cli: {command: jq, image: i, env_from: [{name: A}]}\n",
        "spec.cli.env_from[0].secretRef is required",
    );
    assert_err(
        "Tool",
        "  type: cli\n  cli: {command: jq, image: i, resources: {cpus: lots}}\n",
        "spec.cli.resources.cpus",
    );
    assert_err(
        "Tool",
        "  type: wasm\n  wasm: {entrypoint: main}\n",
        "spec.wasm.module is required",
    );
    assert_err("Tool", "  type: a2a\n", "spec.a2a.agent_url is required");
    ok(&doc(
        "Tool",
        "  type: a2a\n  a2a: {agent_url: 'https://agent', prefer_streaming: true}\n",
    ));
}

// ---- Secret ----

#[test]
fn secret_string_data_is_merged_and_checked() {
    let obj = ok(&doc(
        "Secret",
        "  data: {a: aGVsbG8=}\n  stringData: {b: world}\n",
    ));
    assert_eq!(
        obj.spec,
        json!({"data": {"a": "aGVsbG8=", "b": "d29ybGQ="}})
    );
    let spec: SecretSpec = resources::spec_of(&obj).expect("typed");
    assert_eq!(spec.decoded("b").as_deref(), Some(&b"world"[..]));
    assert_err(
        "Secret",
        "  data: {k: 'not base64!'}\n",
        "Secret \"x\": spec.data.k: value is not valid base64",
    );
    assert_err("Secret", "  data: {k: ''}\n", "spec.data.k: value is empty");
}

#[test]
fn secret_redaction_and_merge() {
    let stored = ok(&doc("Secret", "  stringData: {a: one, b: two}\n"));
    let mut shown = stored.clone();
    resources::redact_secret(&mut shown);
    assert_eq!(shown.spec["data"], json!({"a": "***", "b": "***"}));

    let mut not_secret = ok(&doc("AgentRole", "  permissions: [p]\n"));
    let before = not_secret.clone();
    resources::redact_secret(&mut not_secret);
    assert_eq!(not_secret, before);

    // PUT keeps `a`, replaces `b`, adds `c`.
    let mut put = shown.clone();
    put.spec["data"]["b"] = json!("bmV3");
    put.spec["data"]["c"] = json!("Yw==");
    resources::merge_redacted_secret(&mut put, &stored).expect("merge");
    assert_eq!(put.spec["data"]["a"], stored.spec["data"]["a"]);
    assert_eq!(put.spec["data"]["b"], "bmV3");
    let put = resources::normalize(put).expect("valid after merge");
    assert_eq!(put.spec["data"]["c"], "Yw==");

    let mut unknown = shown.clone();
    unknown.spec["data"]["zzz"] = json!("***");
    let e = resources::merge_redacted_secret(&mut unknown, &stored).expect_err("no stored value");
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.message().contains("spec.data.zzz"), "{e}");
}

// ---- Memory, McpServer ----

#[test]
fn memory_rules() {
    let obj = ok(&doc(
        "Memory",
        "  provider: PGVector\n  embedding_model: emb\n  endpoint: postgres://x\n",
    ));
    assert_eq!(obj.spec["provider"], "pgvector");
    assert_err(
        "Memory",
        "  provider: pgvector\n",
        "spec.embedding_model is required when spec.provider is pgvector",
    );
    assert_err(
        "Memory",
        "  endpoint: a\n  endpoint_secret_ref: b\n",
        "mutually exclusive",
    );
}

#[test]
fn mcp_server_rules() {
    let spec: McpServerSpec = resources::spec_of(&ok(&doc(
        "McpServer",
        "  transport: STDIO\n  command: npx\n",
    )))
    .expect("typed");
    assert_eq!(spec.transport, "stdio");
    assert_eq!(
        (spec.reconnect.max_attempts, spec.reconnect.backoff.as_str()),
        (3, "2s")
    );
    assert_eq!(spec.idle_timeout, "0");
    assert_err(
        "McpServer",
        "  command: npx\n",
        "McpServer \"x\": spec.transport is required",
    );
    assert_err(
        "McpServer",
        "  transport: sse\n",
        "spec.transport: unsupported value \"sse\"",
    );
    assert_err(
        "McpServer",
        "  transport: stdio\n",
        "spec.command (or spec.image) is required",
    );
    ok(&doc(
        "McpServer",
        "  transport: stdio\n  image: mcp/fs\n  env: [{name: A, secretRef: s, mountPath: /run/a}]\n",
    ));
    assert_err(
        "McpServer",
        "  transport: http\n",
        "spec.endpoint is required when spec.transport is http",
    );
    assert_err(
        "McpServer",
        "  transport: stdio\n  command: c\n  env: [{name: A, mountPath: /a}]\n",
        "spec.env[0].mountPath requires spec.image",
    );
    assert_err(
        "McpServer",
        "  transport: stdio\n  image: i\n  env: [{name: A, mountPath: rel}]\n",
        "must be an absolute path",
    );
    assert_err(
        "McpServer",
        "  transport: stdio\n  command: c\n  env: [{value: v}]\n",
        "spec.env[0].name is required",
    );
    assert_err(
        "McpServer",
        "  transport: http\n  endpoint: e\n  auth: {profile: api_key_header, secretRef: s}\n",
        "spec.auth.headerName is required",
    );
    assert_err(
        "McpServer",
        "  transport: stdio\n  command: c\n  idle_timeout: forever\n",
        "spec.idle_timeout",
    );
    assert_err(
        "McpServer",
        "  transport: stdio\n  command: c\n  default_tool_runtime: {isolation_mode: vm}\n",
        "spec.default_tool_runtime.isolation_mode",
    );
}

// ---- governance ----

#[test]
fn agent_policy_and_role() {
    let obj = ok(&doc("AgentPolicy", "  blocked_tools: [a, a]\n"));
    let spec: AgentPolicySpec = resources::spec_of(&obj).expect("typed");
    assert_eq!(
        (
            spec.apply_mode.as_str(),
            spec.max_child_depth,
            spec.max_child_tasks
        ),
        ("scoped", 5, 20)
    );
    assert_eq!(spec.blocked_tools, vec!["a"]);
    assert_eq!(obj.phase(), "Ready");
    let pending =
        ok("kind: AgentPolicy\nmetadata: {name: p}\nspec: {}\nstatus: {phase: Pending}\n");
    assert_eq!(pending.phase(), "Ready");
    assert_err(
        "AgentPolicy",
        "  apply_mode: everywhere\n",
        "spec.apply_mode",
    );
    assert_err(
        "AgentPolicy",
        "  max_tokens_per_run: -5\n",
        "spec.max_tokens_per_run must be >= 0",
    );

    let role = ok(&doc(
        "AgentRole",
        "  permissions: [' tool:read ', TOOL:READ, tool:write]\n",
    ));
    assert_eq!(role.spec["permissions"], json!(["tool:read", "tool:write"]));
    assert_eq!(role.phase(), "Ready");
}

#[test]
fn tool_permission_rules() {
    let obj = ok(&doc(
        "ToolPermission",
        "  required_permissions: [a]\n  operation_rules: [{}, {operation_class: Write, verdict: approval_required}]\n",
    ));
    let spec: ToolPermissionSpec = resources::spec_of(&obj).expect("typed");
    assert_eq!(spec.tool_ref, "x");
    assert_eq!(spec.action, "invoke");
    assert_eq!(
        (spec.match_mode.as_str(), spec.apply_mode.as_str()),
        ("all", "global")
    );
    assert_eq!(
        (
            spec.operation_rules[0].operation_class.as_str(),
            spec.operation_rules[0].verdict.as_str()
        ),
        ("*", "allow")
    );
    assert_eq!(spec.operation_rules[1].operation_class, "write");
    assert_eq!(obj.phase(), "Ready");
    assert_err(
        "ToolPermission",
        "  apply_mode: scoped\n",
        "spec.target_agents is required when spec.apply_mode is scoped",
    );
    ok(&doc(
        "ToolPermission",
        "  apply_mode: scoped\n  target_agents: [a]\n",
    ));
    assert_err("ToolPermission", "  match_mode: some\n", "spec.match_mode");
    assert_err(
        "ToolPermission",
        "  operation_rules: [{verdict: maybe}]\n",
        "spec.operation_rules[0].verdict",
    );
    assert_err(
        "ToolPermission",
        "  operation_rules: [{operation_class: exec}]\n",
        "spec.operation_rules[0].operation_class",
    );
}

#[test]
fn tool_approval_rules() {
    let obj = ok(&doc(
        "ToolApproval",
        "  task_ref: t\n  tool: web\n  input: {q: 1}\n",
    ));
    assert_eq!(obj.spec["ttl"], "10m");
    assert_eq!(obj.spec["input"], "{\"q\":1}");
    assert_eq!(obj.phase(), "Pending");
    assert_err("ToolApproval", "  tool: web\n", "spec.task_ref is required");
    assert_err("ToolApproval", "  task_ref: t\n", "spec.tool is required");
    assert_err(
        "ToolApproval",
        "  task_ref: t\n  tool: w\n  ttl: 10\n",
        "spec.ttl",
    );

    for phase in ["Pending", "Approved", "Denied", "Expired"] {
        let v = resources::normalize_status(
            Kind::ToolApproval,
            json!({"phase": phase, "decided_by": "me"}),
        )
        .expect(phase);
        assert_eq!(v["phase"], phase);
    }
    let e = resources::normalize_status(Kind::ToolApproval, json!({"phase": "Maybe"}))
        .expect_err("bad phase");
    assert!(
        e.message()
            .contains("status.phase: unsupported ToolApproval phase \"Maybe\""),
        "{e}"
    );
}

// ---- Task ----

#[test]
fn task_defaults() {
    let obj = ok(&doc(
        "Task",
        "  system: s\n  input: {n: 3, flag: true, text: hi}\n  retry: {max_attempts: 3, backoff: 2s}\n",
    ));
    let spec: TaskSpec = resources::spec_of(&obj).expect("typed");
    assert_eq!(spec.mode, "run");
    assert_eq!(spec.priority, "normal");
    assert_eq!(spec.input.get("n").map(String::as_str), Some("3"));
    assert_eq!(spec.input.get("flag").map(String::as_str), Some("true"));
    assert_eq!(spec.message_retry.max_attempts, 3);
    assert_eq!(spec.message_retry.backoff, "2s");
    assert_eq!(spec.message_retry.max_backoff, "24h");
    assert_eq!(spec.message_retry.jitter, "full");
    assert_eq!(obj.phase(), "Pending");

    let tmpl = ok(&doc("Task", "  mode: template\n"));
    assert_eq!(tmpl.spec["input"], json!({}));
}

#[test]
fn task_rules() {
    assert_err(
        "Task",
        "  input: {}\n",
        "Task \"x\": spec.system is required",
    );
    assert_err("Task", "  system: s\n  mode: draft\n", "spec.mode");
    assert_err(
        "Task",
        "  system: s\n  max_turns: -1\n",
        "spec.max_turns must be >= 0",
    );
    assert_err(
        "Task",
        "  system: s\n  retry: {backoff: 2 seconds}\n",
        "spec.retry.backoff",
    );
    assert_err(
        "Task",
        "  system: s\n  message_retry: {jitter: random}\n",
        "spec.message_retry.jitter",
    );
    assert_err(
        "Task",
        "  system: s\n  message_retry: {max_backoff: x}\n",
        "spec.message_retry.max_backoff",
    );
    assert_err("Task", "  system: s\n  input: {a: [1]}\n", "spec.input");
    assert_err(
        "Task",
        "  system: s\n  requirements: {gpu: maybe}\n",
        "spec.requirements.gpu",
    );
}

#[test]
fn task_status_round_trips_and_checks_phase() {
    let status = json!({
        "phase": "Running",
        "attempts": 2,
        "claimedBy": "w1",
        "output": {"a": "b"},
        "trace": [{"timestamp": "t", "type": "tool_call", "tool": "web", "retryable": false, "latency_ms": 12, "future_field": 1}],
        "history": [{"type": "claim", "worker": "w1"}],
        "messages": [{"message_id": "m1", "phase": "queued", "attempts": 1, "delegate_of": "a"}],
        "message_idempotency": [{"key": "k", "state": "completed"}],
        "join_states": [{"node": "c", "activated": true, "sources": [{"message_id": "m1"}]}],
        "blocked_on": {"kind": "ToolApproval", "name": "x", "reason": "r"},
        "agentJobResult": {"output": "o"},
        "somethingNew": {"x": [1, 2]},
        "observedGeneration": 4
    });
    let once = resources::normalize_status(Kind::Task, status.clone()).expect("valid");
    assert_eq!(once, status);
    let typed: TaskStatus = serde_json::from_value(once.clone()).expect("typed");
    assert_eq!(typed.trace[0].retryable, Some(false));
    assert_eq!(typed.trace[0].extra.get("future_field"), Some(&json!(1)));
    assert_eq!(typed.extra.get("somethingNew"), Some(&json!({"x": [1, 2]})));
    assert_eq!(serde_json::to_value(&typed).expect("ser"), once);

    // Output texts are kept inline up to 23 bytes and shared beyond: both read and write
    // back as plain strings, and a number written without quotes reads as its text.
    let long = "x".repeat(300);
    let output: TaskStatus = serde_json::from_value(json!({
        "output": {"short": "model=mock-1 step=1", "a.key.longer.than.23.bytes": long, "n": 3}
    }))
    .expect("typed output");
    assert_eq!(&*output.output["a.key.longer.than.23.bytes"], long.as_str());
    assert_eq!(&*output.output["n"], "3");
    assert_eq!(
        serde_json::to_value(&output).expect("ser")["output"],
        json!({"a.key.longer.than.23.bytes": long, "n": "3", "short": "model=mock-1 step=1"})
    );

    assert_eq!(
        resources::normalize_status(Kind::Task, json!({})).expect("empty")["phase"],
        "Pending"
    );
    let e = resources::normalize_status(Kind::Task, json!({"phase": "Done"})).expect_err("bad");
    assert!(
        e.message()
            .contains("status.phase: unsupported Task phase \"Done\""),
        "{e}"
    );
    let e =
        resources::normalize_status(Kind::Task, json!({"attempts": "two"})).expect_err("bad type");
    assert!(
        e.message().starts_with("status.attempts: invalid type"),
        "{e}"
    );
    let e = resources::normalize_status(Kind::Worker, json!({"phase": "Busy"}))
        .expect_err("bad worker phase");
    assert!(e.message().contains("Worker phase"), "{e}");
    // Kinds without a fixed phase list keep what controllers write.
    assert_eq!(
        resources::normalize_status(Kind::Memory, json!({"phase": "Error", "lastError": "down"}))
            .expect("ok")["phase"],
        "Error"
    );
}

// ---- TaskSchedule, TaskWebhook, Worker ----

#[test]
fn task_schedule_rules() {
    let obj = ok(&doc(
        "TaskSchedule",
        "  task_ref: t\n  schedule: '*/5 9-17 * * MON-FRI'\n",
    ));
    let spec: TaskScheduleSpec = resources::spec_of(&obj).expect("typed");
    assert_eq!(spec.time_zone, "UTC");
    assert_eq!(
        (
            spec.starting_deadline_seconds,
            spec.successful_history_limit,
            spec.failed_history_limit
        ),
        (300, 10, 3)
    );
    assert_eq!(spec.concurrency_policy, "forbid");
    ok(&doc(
        "TaskSchedule",
        "  task_template: {system: s}\n  schedule: '0 9 * * 1'\n  time_zone: America/Argentina/Buenos_Aires\n",
    ));

    assert_err(
        "TaskSchedule",
        "  task_ref: t\n",
        "TaskSchedule \"x\": spec.schedule is required",
    );
    assert_err(
        "TaskSchedule",
        "  task_ref: t\n  schedule: '0 9 * *'\n",
        "must have 5 fields",
    );
    assert_err(
        "TaskSchedule",
        "  task_ref: t\n  schedule: '0 0 9 * * 1'\n",
        "must have 5 fields",
    );
    assert_err(
        "TaskSchedule",
        "  task_ref: t\n  schedule: '61 * * * *'\n",
        "spec.schedule: invalid cron expression",
    );
    assert_err(
        "TaskSchedule",
        "  task_ref: t\n  schedule: '0 9 * * 1'\n  time_zone: Mars/Olympus\n",
        "spec.time_zone: \"Mars/Olympus\" is not an IANA time zone",
    );
    assert_err(
        "TaskSchedule",
        "  schedule: '0 9 * * 1'\n",
        "one of spec.task_ref or spec.task_template is required",
    );
    assert_err(
        "TaskSchedule",
        "  task_ref: t\n  task_template: {system: s}\n  schedule: '0 9 * * 1'\n",
        "mutually exclusive",
    );
    assert_err(
        "TaskSchedule",
        "  task_template: {input: {}}\n  schedule: '0 9 * * 1'\n",
        "spec.task_template.system is required",
    );
    assert_err(
        "TaskSchedule",
        "  task_ref: t\n  schedule: '0 9 * * 1'\n  concurrency_policy: allow\n",
        "spec.concurrency_policy",
    );
}

#[test]
fn task_webhook_rules() {
    let spec: TaskWebhookSpec = resources::spec_of(&ok(&doc(
        "TaskWebhook",
        "  task_ref: t\n  auth: {secret_ref: s}\n",
    )))
    .expect("typed");
    assert_eq!(spec.auth.profile, "generic");
    assert_eq!(
        (
            spec.auth.signature_header.as_str(),
            spec.auth.signature_prefix.as_str(),
            spec.auth.timestamp_header.as_str()
        ),
        ("X-Signature", "sha256=", "X-Timestamp")
    );
    assert_eq!(spec.auth.max_skew_seconds, 300);
    assert_eq!(
        (
            spec.idempotency.event_id_header.as_str(),
            spec.idempotency.dedupe_window_seconds
        ),
        ("X-Event-Id", 86_400)
    );
    assert_eq!(
        (spec.payload.mode.as_str(), spec.payload.input_key.as_str()),
        ("raw", "webhook_payload")
    );

    let spec: TaskWebhookSpec = resources::spec_of(&ok(&doc(
        "TaskWebhook",
        "  task_template: {system: s}\n  auth: {profile: GitHub, secret_ref: s}\n",
    )))
    .expect("typed");
    assert_eq!(spec.auth.signature_header, "X-Hub-Signature-256");
    assert_eq!(
        (
            spec.idempotency.event_id_header.as_str(),
            spec.idempotency.dedupe_window_seconds
        ),
        ("X-GitHub-Delivery", 259_200)
    );

    let spec: TaskWebhookSpec = resources::spec_of(&ok(&doc(
        "TaskWebhook",
        "  task_ref: t\n  auth: {profile: hmac, secret_ref: s, signature_header: X-Sig}\n",
    )))
    .expect("typed");
    assert_eq!(
        (
            spec.auth.algorithm.as_str(),
            spec.auth.payload_format.as_str(),
            spec.auth.signature_encoding.as_str(),
            spec.auth.header_format.as_str()
        ),
        ("sha256", "body", "hex", "plain")
    );

    assert_err(
        "TaskWebhook",
        "  auth: {secret_ref: s}\n",
        "exactly one of spec.task_ref or spec.task_template is required",
    );
    assert_err(
        "TaskWebhook",
        "  task_ref: t\n  task_template: {system: s}\n  auth: {secret_ref: s}\n",
        "got both",
    );
    assert_err(
        "TaskWebhook",
        "  task_ref: t\n",
        "spec.auth.secret_ref is required",
    );
    assert_err(
        "TaskWebhook",
        "  task_ref: t\n  auth: {profile: oauth, secret_ref: s}\n",
        "spec.auth.profile",
    );
    assert_err(
        "TaskWebhook",
        "  task_ref: t\n  auth: {profile: hmac, secret_ref: s}\n",
        "spec.auth.signature_header is required when spec.auth.profile is hmac",
    );
    assert_err(
        "TaskWebhook",
        "  task_ref: t\n  auth: {profile: shared_token, secret_ref: s}\n",
        "spec.auth.signature_header is required when spec.auth.profile is shared_token",
    );
    assert_err(
        "TaskWebhook",
        "  task_ref: t\n  auth: {profile: hmac, secret_ref: s, signature_header: h, algorithm: md5}\n",
        "spec.auth.algorithm",
    );
    assert_err(
        "TaskWebhook",
        "  task_ref: t\n  auth: {profile: hmac, secret_ref: s, signature_header: h, header_format: kv_pairs}\n",
        "spec.auth.signature_key is required",
    );
    assert_err(
        "TaskWebhook",
        "  task_ref: t\n  auth: {secret_ref: s}\n  payload: {mode: json}\n",
        "spec.payload.mode",
    );
}

#[test]
fn worker_rules() {
    let spec: WorkerSpec = resources::spec_of(&ok(&doc(
        "Worker",
        "  region: eu\n  capabilities: {gpu: true, supported_models: [a, a]}\n",
    )))
    .expect("typed");
    assert_eq!(spec.max_concurrent_tasks, 1);
    assert_eq!(spec.capabilities.supported_models, vec!["a"]);
    assert_err(
        "Worker",
        "  max_concurrent_tasks: -1\n",
        "spec.max_concurrent_tasks must be >= 0",
    );
}

// ---- round trips and schemas for every kind ----

fn sample(kind: Kind) -> &'static str {
    match kind {
        Kind::Agent => {
            "model_ref: m\nprompt: p\ntools: [t]\nmemory: {ref: mem, allow: [read]}\nexecution: {profile: contract, tool_sequence: [t], output_schema: {type: object}}\nlimits: {timeout: 1m}\n"
        }
        Kind::AgentSystem => {
            "agents: [a, b]\ngraph:\n  a:\n    next: b\n    edges: [{to: b, condition: {output_contains: ok}}]\n    join: {mode: quorum, quorum_count: 1}\n    review: {checkpoint_id: r}\ncompletion_review: {checkpoint_id: f, allow_request_changes: false}\na2a: {enabled: true, auth: public}\n"
        }
        Kind::ModelEndpoint => {
            "provider: anthropic\ndefault_model: c\noptions: {max_tokens: '5'}\nauth: {secretRef: k}\nallowPrivate: false\n"
        }
        Kind::Tool => {
            "type: cli\ndescription: d\ninput_schema: {type: object}\ncli: {command: c, image: i, env: {A: b}, env_from: [{name: B, secretRef: s}], resources: {memory: 1g, pids_limit: 5}}\n"
        }
        Kind::Secret => "stringData: {a: b}\n",
        Kind::Memory => {
            "type: vector\nprovider: pgvector\nembedding_model: e\nendpoint_secret_ref: s\nauth: {secretRef: k}\n"
        }
        Kind::McpServer => {
            "transport: http\nendpoint: 'http://m'\nauth: {secretRef: s}\ntool_filter: {include: [a]}\ndefault_tool_runtime: {timeout: 5s, retry: {max_attempts: 2}}\nallowPrivate: true\n"
        }
        Kind::AgentPolicy => {
            "max_tokens_per_run: 5\nallowed_models: [m]\napply_mode: global\ntarget_agents: [a]\n"
        }
        Kind::AgentRole => "description: d\npermissions: [p]\n",
        Kind::ToolPermission => {
            "tool_ref: t\nrequired_permissions: [p]\nmatch_mode: any\napply_mode: scoped\ntarget_agents: [a]\noperation_rules: [{operation_class: read}]\n"
        }
        Kind::ToolApproval => {
            "task_ref: t\ntool: w\noperation_class: write\nagent: a\ninput: '{}'\nreason: r\n"
        }
        Kind::Task => {
            "system: s\ninput: {a: b}\nmax_turns: 3\nmessage_retry: {non_retryable: [x]}\nrequirements: {region: eu, gpu: true, model: m}\n"
        }
        Kind::TaskSchedule => {
            "task_template: {system: s, input: {a: b}}\nschedule: '0 9 * * 1'\nsuspend: true\n"
        }
        Kind::TaskWebhook => {
            "task_ref: t\nsuspend: true\nauth: {profile: hmac, secret_ref: s, signature_header: X-S, payload_format: timestamp_dot_body, timestamp_header: X-T}\nidempotency: {event_id_from_body: id}\n"
        }
        Kind::Worker => {
            "region: eu\ncapabilities: {gpu: true, supported_models: [m]}\nmax_concurrent_tasks: 4\n"
        }
    }
}

fn round_trip<S: ResourceSpec>(obj: &Object) {
    let typed: S = resources::spec_of(obj).expect("typed");
    let ser = serde_json::to_value(&typed).expect("ser");
    assert_eq!(
        ser,
        obj.spec,
        "{}: normalized spec differs from its typed form",
        S::KIND
    );
    let again: S = serde_json::from_value(ser.clone()).expect("de");
    assert_eq!(again, typed);
    assert_eq!(
        serde_json::to_value(&again).expect("ser"),
        ser,
        "{}: not lossless",
        S::KIND
    );
    let status: S::Status = resources::status_of::<S>(obj).expect("status");
    assert_eq!(serde_json::to_value(&status).expect("ser"), obj.status);
}

#[test]
fn every_kind_round_trips_losslessly() {
    for kind in Kind::ALL {
        let spec = sample(*kind)
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>();
        let obj = ok(&doc(kind.as_str(), &spec));
        assert_eq!(
            resources::normalize(obj.clone()).expect("idempotent"),
            obj,
            "{kind}"
        );
        match kind {
            Kind::Agent => round_trip::<AgentSpec>(&obj),
            Kind::AgentSystem => round_trip::<AgentSystemSpec>(&obj),
            Kind::ModelEndpoint => round_trip::<ModelEndpointSpec>(&obj),
            Kind::Tool => round_trip::<ToolSpec>(&obj),
            Kind::Secret => round_trip::<SecretSpec>(&obj),
            Kind::Memory => round_trip::<MemorySpec>(&obj),
            Kind::McpServer => round_trip::<McpServerSpec>(&obj),
            Kind::AgentPolicy => round_trip::<AgentPolicySpec>(&obj),
            Kind::AgentRole => round_trip::<AgentRoleSpec>(&obj),
            Kind::ToolPermission => round_trip::<ToolPermissionSpec>(&obj),
            Kind::ToolApproval => round_trip::<ToolApprovalSpec>(&obj),
            Kind::Task => round_trip::<TaskSpec>(&obj),
            Kind::TaskSchedule => round_trip::<TaskScheduleSpec>(&obj),
            Kind::TaskWebhook => round_trip::<TaskWebhookSpec>(&obj),
            Kind::Worker => round_trip::<WorkerSpec>(&obj),
        }
    }
}

#[test]
fn object_from_spec_normalizes() {
    let spec = TaskSpec {
        system: "s".into(),
        ..Default::default()
    };
    let obj = resources::object_from_spec("team", "t1", &spec).expect("object");
    let obj = resources::normalize(obj).expect("valid");
    assert_eq!(obj.metadata.namespace, "team");
    assert_eq!(
        resources::spec_of::<TaskSpec>(&obj)
            .expect("typed")
            .retry
            .max_attempts,
        1
    );
    assert!(
        resources::spec_of::<AgentSpec>(&obj).is_err(),
        "kind mismatch must fail"
    );
}

#[test]
fn json_schema_for_every_spec_and_status() {
    for kind in Kind::ALL {
        let schema = resources::spec_schema(*kind);
        let v: Value = serde_json::to_value(&schema).expect("schema serializes");
        assert_eq!(v["type"], "object", "{kind}");
        assert!(
            v["properties"].as_object().is_some_and(|p| !p.is_empty()),
            "{kind} has properties"
        );
        assert_eq!(
            v["additionalProperties"], false,
            "{kind} spec rejects unknown fields"
        );
    }
    let agent = serde_json::to_value(schemars::schema_for!(AgentSpec)).expect("schema");
    assert!(agent["properties"]["model_ref"].is_object());
    for schema in [
        schemars::schema_for!(TaskStatus),
        schemars::schema_for!(CommonStatus),
        schemars::schema_for!(ToolApprovalStatus),
        schemars::schema_for!(WorkerStatus),
        schemars::schema_for!(McpServerStatus),
        schemars::schema_for!(TaskScheduleStatus),
        schemars::schema_for!(TaskWebhookStatus),
    ] {
        let v = serde_json::to_value(&schema).expect("schema");
        assert!(v["properties"]["phase"].is_object(), "{v}");
    }
}
