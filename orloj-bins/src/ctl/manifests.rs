//! Local manifests: finding files, reading them into objects, and comparing them with the
//! live objects on the server (for `apply --dry-run` and `diff`).

use anyhow::{Context, Result, bail};
use orloj_core::{Kind, Object};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Extensions `apply`/`validate`/`diff` pick up when walking a directory.
const MANIFEST_EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// Directory depth at which the walk stops (guards against symlink loops).
const MAX_DEPTH: usize = 32;

/// The manifest files under `path`: the file itself, or for a directory every `.yaml`,
/// `.yml` and `.json` file below it (recursively, `.git` skipped), sorted by path.
pub fn collect_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot access {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    walk(path, 0, &mut files)?;
    files.sort();
    if files.is_empty() {
        bail!(
            "no manifest files (.yaml, .yml, .json) found in {}",
            path.display()
        );
    }
    Ok(files)
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("directory tree too deep at {}", dir.display());
    }
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read directory {}", dir.display()))?;
        let path = entry.path();
        let meta = std::fs::metadata(&path)
            .with_context(|| format!("cannot access {}", path.display()))?;
        if meta.is_dir() {
            if entry.file_name() != ".git" {
                walk(&path, depth + 1, out)?;
            }
        } else if has_manifest_extension(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn has_manifest_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        MANIFEST_EXTENSIONS
            .iter()
            .any(|m| m.eq_ignore_ascii_case(e))
    })
}

/// For each document of `text`, whether it names `metadata.namespace` itself.
/// `None` when the raw text cannot be read as YAML/JSON documents.
fn explicit_namespaces(text: &str) -> Option<Vec<bool>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).ok()?;
    Some(
        docs.iter()
            .filter(|d| !d.is_null())
            .map(|d| {
                d.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.trim().is_empty())
            })
            .collect(),
    )
}

/// Reads and normalizes the objects of one manifest file. `namespace`, when given, is set
/// on the objects that do not name a namespace themselves.
pub fn load_file(path: &Path, namespace: Option<&str>) -> Result<Vec<Object>, String> {
    let source = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{source}: cannot read file: {e}"))?;
    let mut objects = orloj_core::parse_manifests(&source, &text).map_err(|e| e.to_string())?;
    if let Some(ns) = namespace.map(str::trim).filter(|n| !n.is_empty()) {
        let explicit = explicit_namespaces(&text).filter(|e| e.len() == objects.len());
        for (i, obj) in objects.iter_mut().enumerate() {
            let named = match &explicit {
                Some(flags) => flags[i],
                None => !obj.metadata.namespace.is_empty(),
            };
            if !named {
                obj.metadata.namespace = ns.to_string();
            }
        }
    }
    Ok(objects)
}

/// A Task that would be claimed and run (mode `run`, the default), as opposed to a template.
pub fn is_runnable_task(obj: &Object) -> bool {
    obj.kind == Kind::Task
        && obj
            .spec
            .get("mode")
            .and_then(Value::as_str)
            .map(str::trim)
            .is_none_or(|m| m.is_empty() || !m.eq_ignore_ascii_case("template"))
}

/// One object read from a file.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The file it came from.
    pub file: PathBuf,
    /// The normalized object.
    pub object: Object,
}

/// What `apply`/`diff` will work on.
#[derive(Debug, Default)]
pub struct Plan {
    /// Objects to send, in file order, runnable tasks last.
    pub objects: Vec<Planned>,
    /// Runnable tasks left out of a directory apply (use `--run`).
    pub skipped: Vec<Planned>,
    /// Files that could not be read, one message each.
    pub errors: Vec<String>,
}

/// Reads every manifest under `path`. In a directory, runnable Tasks are skipped unless
/// `include_runnable`.
pub fn plan(path: &Path, namespace: Option<&str>, include_runnable: bool) -> Result<Plan> {
    let is_dir = path.is_dir();
    let mut plan = Plan::default();
    for file in collect_files(path)? {
        match load_file(&file, namespace) {
            Ok(objects) => {
                for object in objects {
                    let p = Planned {
                        file: file.clone(),
                        object,
                    };
                    if is_dir && !include_runnable && is_runnable_task(&p.object) {
                        plan.skipped.push(p);
                    } else {
                        plan.objects.push(p);
                    }
                }
            }
            Err(e) => plan.errors.push(e),
        }
    }
    // Runnable tasks go last, so a worker claiming one at once finds what it references.
    plan.objects.sort_by_key(|p| is_runnable_task(&p.object));
    Ok(plan)
}

/// `kind/name` as printed by the CLI (`agentsystem/pipeline`).
pub fn display_ref(kind: Kind, name: &str) -> String {
    format!("{}/{}", kind.as_str().to_lowercase(), name)
}

/// The part of an object that `apply` controls: apiVersion, kind, name, namespace, labels,
/// annotations and spec. Server-managed metadata and status are dropped.
pub fn comparable(v: &Value) -> Value {
    let mut out = Map::new();
    for key in ["apiVersion", "kind"] {
        if let Some(x) = v.get(key) {
            out.insert(key.into(), x.clone());
        }
    }
    let mut meta = Map::new();
    let m = v.get("metadata");
    let name = m
        .and_then(|m| m.get("name"))
        .cloned()
        .unwrap_or(Value::Null);
    meta.insert("name".into(), name);
    let ns = m
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(orloj_core::DEFAULT_NAMESPACE);
    meta.insert("namespace".into(), Value::String(ns.into()));
    for key in ["labels", "annotations"] {
        if let Some(x) = m.and_then(|m| m.get(key))
            && x.as_object().is_some_and(|o| !o.is_empty())
        {
            meta.insert(key.into(), x.clone());
        }
    }
    out.insert("metadata".into(), Value::Object(meta));
    out.insert(
        "spec".into(),
        v.get("spec")
            .filter(|s| !s.is_null())
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new())),
    );
    Value::Object(out)
}

/// What applying an object would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It does not exist yet.
    Create,
    /// It exists and differs.
    Configure,
    /// It exists and is the same.
    Unchanged,
}

impl Change {
    /// The word printed after `kind/name`.
    pub fn verb(self) -> &'static str {
        match self {
            Change::Create => "created",
            Change::Configure => "configured",
            Change::Unchanged => "unchanged",
        }
    }
}

/// Compares the local object with the live one (`None` when absent).
pub fn classify(local: &Object, live: Option<&Value>) -> Change {
    match live {
        None => Change::Create,
        Some(live) if comparable(live) == comparable(&local.to_value()) => Change::Unchanged,
        Some(_) => Change::Configure,
    }
}

/// Renders a value as YAML (JSON as a fallback, which YAML readers accept too).
pub fn to_yaml(v: &Value) -> String {
    match serde_saphyr::to_string(v) {
        Ok(s) => s,
        Err(_) => serde_json::to_string_pretty(v).unwrap_or_default(),
    }
}

/// A unified diff from the live object (`None`: absent) to the local one; `None` when equal.
pub fn render_diff(live: Option<&Value>, local: &Object, local_label: &str) -> Option<String> {
    let live_text = live.map(|l| to_yaml(&comparable(l))).unwrap_or_default();
    let local_text = to_yaml(&comparable(&local.to_value()));
    if live_text == local_text {
        return None;
    }
    let r = display_ref(local.kind, local.name());
    let live_label = format!("live/{}/{r}", local.namespace());
    let local_label = format!("local/{}/{r} ({local_label})", local.namespace());
    Some(
        similar::TextDiff::from_lines(&live_text, &local_text)
            .unified_diff()
            .context_radius(3)
            .header(&live_label, &local_label)
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        Object::from_value(v).expect("object")
    }

    #[test]
    fn runnable_tasks_are_applied_after_what_they_reference() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            d.path().join("a-task.yaml"),
            "apiVersion: orloj.dev/v1\nkind: Task\nmetadata: {name: t}\nspec: {system: s}\n",
        )
        .expect("write");
        std::fs::write(
            d.path().join("b-tool.yaml"),
            "apiVersion: orloj.dev/v1\nkind: Tool\nmetadata: {name: search}\nspec: {type: http, endpoint: \"https://example.com\"}\n",
        )
        .expect("write");
        let plan = plan(d.path(), None, true).expect("plan");
        let kinds: Vec<Kind> = plan.objects.iter().map(|p| p.object.kind).collect();
        assert_eq!(kinds, [Kind::Tool, Kind::Task]);
    }

    #[test]
    fn walk_is_recursive_sorted_and_skips_git_and_other_files() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        for p in [
            "b.yaml",
            "a.json",
            "sub/z.yml",
            "sub/deeper/c.YAML",
            ".git/x.yaml",
            "sub/.git/y.yaml",
            "notes.txt",
            "README.md",
        ] {
            let f = root.join(p);
            std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
            std::fs::write(&f, "x").expect("write");
        }
        let files: Vec<String> = collect_files(root)
            .expect("files")
            .iter()
            .map(|p| {
                p.strip_prefix(root)
                    .expect("prefix")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            files,
            ["a.json", "b.yaml", "sub/deeper/c.YAML", "sub/z.yml"]
        );
        // A single file is taken whatever its extension.
        let txt = root.join("notes.txt");
        assert_eq!(collect_files(&txt).expect("file"), vec![txt]);
        // Empty directory and missing path are errors naming the path.
        let empty = root.join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        assert!(format!("{:#}", collect_files(&empty).expect_err("empty")).contains("empty"));
        let missing = root.join("missing");
        assert!(format!("{:#}", collect_files(&missing).expect_err("missing")).contains("missing"));
    }

    #[test]
    fn plan_skips_runnable_tasks_in_directories_and_applies_namespace() {
        let d = tempfile::tempdir().expect("tempdir");
        let w = |name: &str, text: &str| std::fs::write(d.path().join(name), text).expect("write");
        w(
            "a.yaml",
            "apiVersion: orloj.dev/v1\nkind: ModelEndpoint\nmetadata:\n  name: m\nspec:\n  provider: mock\n  default_model: x\n---\napiVersion: orloj.dev/v1\nkind: ModelEndpoint\nmetadata:\n  name: m2\n  namespace: fixed\nspec:\n  provider: mock\n  default_model: x\n",
        );
        w(
            "b.yaml",
            "apiVersion: orloj.dev/v1\nkind: Task\nmetadata:\n  name: run-me\nspec:\n  system: s\n",
        );
        w(
            "c.yaml",
            "apiVersion: orloj.dev/v1\nkind: Task\nmetadata:\n  name: tmpl\nspec:\n  system: s\n  mode: template\n",
        );
        w("d.yaml", "kind: [unclosed\n");

        let p = plan(d.path(), Some("team"), false).expect("plan");
        let names: Vec<(&str, &str)> = p
            .objects
            .iter()
            .map(|o| (o.object.namespace(), o.object.name()))
            .collect();
        assert_eq!(names, [("team", "m"), ("fixed", "m2"), ("team", "tmpl")]);
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].object.name(), "run-me");
        assert_eq!(p.errors.len(), 1);
        assert!(p.errors[0].contains("d.yaml"), "{:?}", p.errors);

        // --run keeps the runnable task; a single file is never filtered.
        assert_eq!(plan(d.path(), None, true).expect("plan").objects.len(), 4);
        let single = plan(&d.path().join("b.yaml"), None, false).expect("plan");
        assert_eq!(single.objects.len(), 1);
        assert!(single.skipped.is_empty());
    }

    #[test]
    fn runnable_task_detection() {
        let t = |spec: Value| obj(json!({"kind": "Task", "metadata": {"name": "t"}, "spec": spec}));
        assert!(is_runnable_task(&t(json!({"system": "s"}))));
        assert!(is_runnable_task(&t(json!({"mode": "run"}))));
        assert!(!is_runnable_task(&t(json!({"mode": "template"}))));
        assert!(!is_runnable_task(&t(json!({"mode": "Template"}))));
        let agent = obj(json!({"kind": "Agent", "metadata": {"name": "a"}, "spec": {}}));
        assert!(!is_runnable_task(&agent));
    }

    #[test]
    fn explicit_namespace_detection() {
        let text = "kind: Agent\nmetadata:\n  name: a\n---\nkind: Agent\nmetadata:\n  name: b\n  namespace: team\n";
        assert_eq!(explicit_namespaces(text), Some(vec![false, true]));
        assert_eq!(
            explicit_namespaces(r#"{"kind":"Agent","metadata":{"name":"a","namespace":"x"}}"#),
            Some(vec![true])
        );
    }

    #[test]
    fn classification_compares_spec_labels_annotations_only() {
        let local = obj(json!({
            "apiVersion": "orloj.dev/v1", "kind": "Agent",
            "metadata": {"name": "a", "namespace": "default", "labels": {"team": "x"}},
            "spec": {"model_ref": "m", "prompt": "p"}
        }));
        assert_eq!(classify(&local, None), Change::Create);
        let mut live = json!({
            "apiVersion": "orloj.dev/v1", "kind": "Agent",
            "metadata": {"name": "a", "namespace": "default", "labels": {"team": "x"},
                         "resourceVersion": "7", "generation": 3, "createdAt": "2026-01-01T00:00:00Z"},
            "spec": {"model_ref": "m", "prompt": "p"},
            "status": {"phase": "Ready"}
        });
        assert_eq!(classify(&local, Some(&live)), Change::Unchanged);
        live["metadata"]["annotations"] = json!({"note": "n"});
        assert_eq!(classify(&local, Some(&live)), Change::Configure);
        live["metadata"]["annotations"] = json!({});
        assert_eq!(
            classify(&local, Some(&live)),
            Change::Unchanged,
            "empty map = absent"
        );
        live["spec"]["prompt"] = json!("other");
        assert_eq!(classify(&local, Some(&live)), Change::Configure);
    }

    #[test]
    fn diff_shows_spec_change_and_ignores_status() {
        let local = obj(json!({
            "kind": "Agent", "metadata": {"name": "a", "namespace": "default"},
            "spec": {"model_ref": "m", "prompt": "new"}
        }));
        let live = json!({
            "apiVersion": "orloj.dev/v1", "kind": "Agent",
            "metadata": {"name": "a", "namespace": "default", "resourceVersion": "2"},
            "spec": {"model_ref": "m", "prompt": "old"},
            "status": {"phase": "Ready"}
        });
        let d = render_diff(Some(&live), &local, "a.yaml").expect("diff");
        assert!(d.contains("--- live/default/agent/a"), "{d}");
        assert!(d.contains("+++ local/default/agent/a (a.yaml)"), "{d}");
        assert!(d.contains("-  prompt: old"), "{d}");
        assert!(d.contains("+  prompt: new"), "{d}");
        assert!(
            !d.contains("Ready") && !d.contains("resourceVersion"),
            "{d}"
        );

        let mut same = live.clone();
        same["spec"]["prompt"] = json!("new");
        same["status"] = json!({"phase": "Failed"});
        assert_eq!(render_diff(Some(&same), &local, "a.yaml"), None);

        let created = render_diff(None, &local, "a.yaml").expect("new object diff");
        assert!(created.lines().filter(|l| l.starts_with('+')).count() > 3);
        assert!(!created.lines().any(|l| l.starts_with("-  ")));
    }
}
