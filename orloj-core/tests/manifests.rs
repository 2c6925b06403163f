//! Manifest reading: multi-document YAML, JSON, error positions, request bodies, YAML output.

use orloj_core::{ErrorKind, Kind, parse_manifests, parse_object, to_yaml};
use serde_json::json;

const TWO_AGENTS: &str = "\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: a
spec:
  model_ref: m
---
# second
kind: Agent
metadata:
  name: b
  namespace: team
spec:
  model_ref: m
  limits:
    max_steps: lots
";

#[test]
fn multi_document_yaml_error_names_document_and_field() {
    let err = parse_manifests("agents/a.yaml", TWO_AGENTS).expect_err("doc 2 is bad");
    assert_eq!(err.source, "agents/a.yaml");
    assert_eq!(err.document, 2);
    assert_eq!(
        err.to_string(),
        "agents/a.yaml (document 2): spec.limits.max_steps: invalid type: string \"lots\", expected i64"
    );
    let as_error: orloj_core::Error = err.into();
    assert_eq!(as_error.kind(), ErrorKind::Invalid);
}

#[test]
fn multi_document_yaml_parses_every_document() {
    let text = TWO_AGENTS.replace("lots", "4");
    let objs = parse_manifests(
        "a.yaml",
        &format!("---\n{text}---\n\n---\n# only a comment\n"),
    )
    .expect("valid");
    assert_eq!(objs.len(), 2);
    assert_eq!(objs[0].metadata.name, "a");
    assert_eq!(objs[1].metadata.namespace, "team");
    assert_eq!(objs[1].spec["limits"]["max_steps"], 4);
    assert_eq!(objs[0].spec["limits"]["max_steps"], 10, "normalized");
}

#[test]
fn document_numbers_count_empty_documents() {
    let text =
        "kind: Worker\nmetadata: {name: a}\n---\n---\nkind: Worker\nmetadata: {name: 'b c'}\n";
    let err = parse_manifests("w.yaml", text).expect_err("bad name");
    assert_eq!(err.document, 3);
    assert!(err.message.contains("metadata.name"), "{err}");
}

#[test]
fn yaml_syntax_errors_have_file_lines() {
    let text = "kind: Worker\nmetadata: {name: a}\n---\nkind: Worker\nmetadata:\n  name: [b\n";
    let err = parse_manifests("w.yaml", text).expect_err("syntax");
    assert_eq!(err.document, 2);
    assert!(err.message.starts_with("invalid YAML at line 6"), "{err}");
    let dup = parse_manifests("d.yaml", "kind: Worker\nkind: Agent\n").expect_err("duplicate key");
    assert!(dup.message.contains("duplicate mapping key"), "{dup}");
    assert!(!dup.message.contains("DuplicateKeyPolicy"), "{dup}");
}

#[test]
fn kind_errors_are_clear() {
    let e = parse_manifests("x.yaml", "metadata: {name: a}\nspec: {}\n").expect_err("no kind");
    assert!(
        e.message
            .starts_with("kind is required (one of Agent, AgentSystem"),
        "{e}"
    );
    let e = parse_manifests("x.yaml", "kind: Robot\nmetadata: {name: a}\n").expect_err("bad kind");
    assert!(e.message.starts_with("kind: unknown kind \"Robot\""), "{e}");
    let e = parse_manifests("x.yaml", "- a\n- b\n").expect_err("not a map");
    assert!(e.message.contains("expected a resource object"), "{e}");
    let e = parse_manifests("x.yaml", "kind: Worker\nmetadata: {name: a, uid: u}\n")
        .expect_err("unknown metadata");
    assert!(e.message.starts_with("metadata.uid: unknown field"), "{e}");
}

#[test]
fn json_object_and_array() {
    let one =
        r#"{"kind": "AgentRole", "metadata": {"name": "r"}, "spec": {"permissions": ["a", "A"]}}"#;
    let objs = parse_manifests("r.json", one).expect("json object");
    assert_eq!(objs.len(), 1);
    assert_eq!(objs[0].kind, Kind::AgentRole);
    assert_eq!(objs[0].spec["permissions"], json!(["a"]));

    let many = r#"[
        {"kind": "Worker", "metadata": {"name": "w1"}},
        {"kind": "Worker", "metadata": {"name": "w2"}, "spec": {"max_concurrent_tasks": "x"}}
    ]"#;
    let err = parse_manifests("w.json", many).expect_err("second is bad");
    assert_eq!(err.document, 2);
    assert!(
        err.message
            .starts_with("spec.max_concurrent_tasks: invalid type"),
        "{err}"
    );

    let err = parse_manifests("bad.json", "{\"kind\": ").expect_err("syntax");
    assert!(err.message.starts_with("invalid JSON"), "{err}");
    assert!(err.message.contains("line 1"), "{err}");
}

#[test]
fn parse_object_reads_one_unnormalized_object() {
    let obj = parse_object("kind: Agent\nmetadata: {name: a}\nspec: {model_ref: m}\n")
        .expect("yaml body");
    assert_eq!(obj.kind, Kind::Agent);
    assert_eq!(obj.metadata.namespace, "", "not normalized");
    assert!(obj.spec.get("limits").is_none(), "no defaults applied");

    let obj = parse_object(r#"{"kind":"Task","metadata":{"name":"t"},"spec":{"system":"s"}}"#)
        .expect("json body");
    assert_eq!(obj.kind, Kind::Task);

    let e =
        parse_object("kind: Worker\nmetadata: {name: a}\n---\nkind: Worker\nmetadata: {name: b}\n")
            .expect_err("two");
    assert!(e.message().contains("exactly one object, got 2"), "{e}");
    assert!(
        parse_object("")
            .expect_err("empty")
            .message()
            .contains("empty")
    );
    let e = parse_object(r#"{"kind":"Agent","metadata":{"name":5}}"#).expect_err("bad type");
    assert!(
        e.message().starts_with("metadata.name: invalid type"),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::Invalid);
}

#[test]
fn to_yaml_renders_parsable_yaml() {
    let objs = parse_manifests("a.yaml", &TWO_AGENTS.replace("lots", "4")).expect("valid");
    let value = objs[1].to_value();
    let yaml = to_yaml(&value).expect("yaml");
    assert!(yaml.contains("kind: Agent"), "{yaml}");
    let back = parse_manifests("back.yaml", &yaml).expect("re-parses");
    assert_eq!(back[0], objs[1]);
}

#[test]
fn yaml_scalars_follow_yaml_1_2() {
    let text = "kind: Task\nmetadata: {name: on}\nspec:\n  system: s\n  input: {answer: yes, zip: 01234, n: 3}\n";
    let objs = parse_manifests("t.yaml", text).expect("valid");
    assert_eq!(objs[0].metadata.name, "on");
    assert_eq!(
        objs[0].spec["input"],
        json!({"answer": "yes", "zip": "01234", "n": "3"})
    );
    let e = parse_manifests(
        "w.yaml",
        "kind: Worker\nmetadata: {name: w}\nspec: {capabilities: {gpu: yes}}\n",
    )
    .expect_err("yes is not a boolean in YAML 1.2");
    assert!(
        e.message
            .starts_with("spec.capabilities.gpu: invalid type: string \"yes\""),
        "{e}"
    );
}
