//! orlojctl against a real orlojd (in-memory store) on a free port.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A running orlojd (killed on drop) plus a private orlojctl config file.
struct Server {
    _orlojd: common::Orlojd,
    url: String,
    config: tempfile::TempDir,
}

fn start() -> Server {
    let orlojd = common::Orlojd::start(&["--storage-backend", "memory"]);
    Server {
        url: orlojd.url.clone(),
        _orlojd: orlojd,
        config: tempfile::tempdir().expect("tempdir"),
    }
}

impl Server {
    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_orlojctl"))
            .arg("--server")
            .arg(&self.url)
            .args(args)
            .env("ORLOJCTL_CONFIG", self.config.path().join("config.json"))
            .env_remove("ORLOJCTL_SERVER")
            .env_remove("ORLOJ_SERVER")
            .env_remove("ORLOJCTL_API_TOKEN")
            .env_remove("ORLOJ_API_TOKEN")
            .output()
            .expect("run orlojctl")
    }

    /// Runs and asserts the exit code; returns stdout.
    fn ok(&self, args: &[&str], code: i32) -> String {
        let o = self.ctl(args);
        assert_eq!(
            o.status.code(),
            Some(code),
            "orlojctl {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn blueprint() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/blueprints/pipeline")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

#[test]
fn health_and_status() {
    let s = start();
    assert!(s.ok(&["health"], 0).starts_with("ok"));
    let out = s.ok(&["status"], 0);
    assert!(out.contains(&format!("Server:       {}", s.url)), "{out}");
    assert!(out.contains("Health:       ok"), "{out}");
    assert!(out.contains("Namespaces:"), "{out}");
    assert!(out.contains("core.api.crud"), "{out}");
}

#[test]
fn apply_get_diff_delete_round_trip() {
    let s = start();
    let dir = tempfile::tempdir().expect("tempdir");
    let bp = dir.path().join("pipeline");
    copy_dir(&blueprint(), &bp);
    let bp_s = bp.display().to_string();

    // Dry run against an empty server: everything would be created, the task is skipped.
    let out = s.ok(&["apply", "-f", &bp_s, "--dry-run"], 0);
    assert!(
        out.contains("agent/pipeline-planner created (dry run)"),
        "{out}"
    );
    assert!(out.contains("skipped task/pipeline-brief"), "{out}");
    assert!(
        out.contains("5 object(s) checked (dry run): 5 created"),
        "{out}"
    );
    assert!(
        s.ok(&["get", "agents", "-o", "json"], 0)
            .contains("\"items\": []")
    );

    let out = s.ok(&["apply", "-f", &bp_s], 0);
    assert!(out.contains("agentsystem/pipeline created"), "{out}");
    assert!(out.contains("modelendpoint/pipeline-mock created"), "{out}");
    assert!(!out.contains("task/pipeline-brief created"), "{out}");
    assert!(out.contains("1 runnable task(s) skipped"), "{out}");

    // Applying again changes nothing; diff agrees.
    let out = s.ok(&["apply", "-f", &bp_s, "--dry-run"], 0);
    assert!(out.contains("5 unchanged"), "{out}");
    assert_eq!(s.ok(&["diff", "-f", &bp_s], 0), "");

    // get: table, single object, aliases, yaml.
    let out = s.ok(&["get", "agents"], 0);
    let header = out.lines().next().unwrap_or("");
    assert!(
        header.starts_with("NAME") && header.contains("MODEL"),
        "{out}"
    );
    for a in ["pipeline-planner", "pipeline-research", "pipeline-writer"] {
        assert!(out.contains(a), "{out}");
    }
    let one: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "agent", "pipeline-planner", "-o", "json"], 0))
            .expect("json");
    assert_eq!(one["spec"]["model_ref"], "pipeline-mock");
    assert!(
        s.ok(&["get", "systems", "pipeline", "-o", "yml"], 0)
            .contains("kind: AgentSystem")
    );
    let out = s.ok(&["describe", "agentsystem", "pipeline"], 0);
    assert!(out.starts_with("Name:             pipeline\n"), "{out}");
    assert!(out.contains("---\n"), "{out}");

    // A local change shows up in diff (exit 1) and as "configured".
    let writer = bp.join("agents/writer.yaml");
    let text = std::fs::read_to_string(&writer).expect("read");
    std::fs::write(&writer, text.replace("max_steps: 3", "max_steps: 7")).expect("write");
    let out = s.ok(&["diff", "-f", &writer.display().to_string()], 1);
    assert!(
        out.contains("-    max_steps: 3") && out.contains("+    max_steps: 7"),
        "{out}"
    );
    let out = s.ok(&["apply", "-f", &bp_s, "--dry-run"], 0);
    assert!(
        out.contains("agent/pipeline-writer configured (dry run)"),
        "{out}"
    );
    let out = s.ok(&["apply", "-f", &writer.display().to_string()], 0);
    assert!(out.contains("agent/pipeline-writer configured"), "{out}");

    // --run includes the task.
    let out = s.ok(&["apply", "-f", &bp_s, "--run", "--dry-run"], 0);
    assert!(
        out.contains("task/pipeline-brief created (dry run)"),
        "{out}"
    );

    // -n puts namespace-less objects into that namespace.
    let out = s.ok(
        &[
            "-n",
            "team-a",
            "apply",
            "-f",
            &bp.join("model-endpoint.yaml").display().to_string(),
        ],
        0,
    );
    assert!(out.contains("created"), "{out}");
    let out = s.ok(&["get", "model-endpoints", "-n", "team-a"], 0);
    assert!(
        out.contains("team-a") && out.contains("pipeline-mock"),
        "{out}"
    );

    // delete, then get fails with the server's message.
    assert!(
        s.ok(&["delete", "agent", "pipeline-writer"], 0)
            .contains("agent/pipeline-writer deleted")
    );
    let o = s.ctl(&["get", "agent", "pipeline-writer"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("404"), "{}", stderr(&o));
    let o = s.ctl(&["delete", "agent", "pipeline-writer"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn apply_aggregates_errors_and_keeps_going() {
    let s = start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("a-bad.yaml"),
        "apiVersion: orloj.dev/v1\nkind: Agent\nmetadata:\n  name: bad\nspec:\n  prompt: x\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("b-good.yaml"),
        "apiVersion: orloj.dev/v1\nkind: ModelEndpoint\nmetadata:\n  name: m\nspec:\n  provider: mock\n  default_model: mock-1\n",
    )
    .expect("write");
    let o = s.ctl(&["apply", "-f", &dir.path().display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("modelendpoint/m created"), "{out}");
    assert!(out.contains("1 failed"), "{out}");
    assert!(stderr(&o).contains("a-bad.yaml"), "{}", stderr(&o));
}

#[test]
fn secrets_wait_logs_and_events() {
    let s = start();
    let out = s.ok(
        &[
            "create",
            "secret",
            "api-keys",
            "--from-literal",
            "token=abc",
            "--from-literal",
            "x=y",
        ],
        0,
    );
    assert!(out.contains("secret/api-keys created"), "{out}");
    let out = s.ok(&["get", "secrets"], 0);
    assert!(out.contains("api-keys"), "{out}");

    // Waiting on a phase that never comes times out with exit 1.
    let o = s.ctl(&[
        "wait",
        "secret/api-keys",
        "--for",
        "condition=Succeeded",
        "--timeout",
        "1s",
        "--interval",
        "200ms",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));

    // Events: the secret creation was published (replayed with --since 0); --once returns
    // after one event.
    let out = s.ok(
        &[
            "events",
            "--since",
            "0",
            "--once",
            "--timeout",
            "10s",
            "--raw",
            "--kind",
            "secret",
        ],
        0,
    );
    let ev: serde_json::Value = serde_json::from_str(out.trim()).expect("raw event json");
    assert_eq!(ev["name"], "api-keys");
    assert!(
        !out.contains("abc"),
        "secret values never appear in events: {out}"
    );
}

#[test]
fn edit_watch_and_logs() {
    use std::io::BufRead;
    let s = start();
    let bp = blueprint();
    s.ok(
        &[
            "apply",
            "-f",
            &bp.display().to_string(),
            "--run",
            "--no-wait",
        ],
        0,
    );

    // edit: an editor that changes nothing cancels; one that changes a field PUTs it.
    let dir = tempfile::tempdir().expect("tempdir");
    let script = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        p
    };
    let noop = script("noop.sh", "exit 0");
    let change = script("change.sh", "sed -i 's/max_steps: 3/max_steps: 9/' \"$1\"");
    let edit = |editor: &Path| {
        Command::new(env!("CARGO_BIN_EXE_orlojctl"))
            .args(["--server", &s.url, "edit", "agent", "pipeline-writer"])
            .env("ORLOJCTL_CONFIG", s.config.path().join("config.json"))
            .env_remove("VISUAL")
            .env("EDITOR", editor)
            .output()
            .expect("run edit")
    };
    let o = edit(&noop);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("no changes"), "{}", stderr(&o));
    let before: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "agent", "pipeline-writer", "-o", "json"], 0))
            .expect("json");
    let o = edit(&change);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("agent/pipeline-writer edited"));
    let after: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "agent", "pipeline-writer", "-o", "json"], 0))
            .expect("json");
    assert_eq!(after["spec"]["limits"]["max_steps"], 9);
    assert_ne!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );

    // get -w: the snapshot arrives as ADDED lines.
    let mut child = Command::new(env!("CARGO_BIN_EXE_orlojctl"))
        .args(["--server", &s.url, "get", "tasks", "-w"])
        .env("ORLOJCTL_CONFIG", s.config.path().join("config.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn watch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("ADDED    task/default/pipeline-brief"),
        "{line}"
    );

    // Watching a kind without a watch endpoint is a usage error.
    let o = s.ctl(&["get", "model-endpoints", "-w"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // logs: the task exists, so the call succeeds (possibly with no entries yet).
    s.ok(&["logs", "task/pipeline-brief"], 0);
    let o = s.ctl(&["logs", "task/nope"]);
    assert_eq!(o.status.code(), Some(1));
}

fn blueprint_named(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/blueprints")
        .join(name)
}

/// POSTs JSON to the server with a bare HTTP/1.1 request; returns the status code.
fn post_json(url: &str, path: &str, body: &str) -> u16 {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code")
}

fn task_json(s: &Server, name: &str) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["get", "task", name, "-o", "json"], 0)).expect("task json")
}

fn task_names(s: &Server) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "tasks", "-o", "json"], 0)).expect("json");
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|t| t["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn run_cancel_retry_and_inspect_tasks() {
    let s = start();
    let bp = blueprint().display().to_string();
    s.ok(&["apply", "-f", &bp], 0);

    // No worker runs tasks here: run gives up after --timeout, exit 1, task left Pending.
    let o = s.ctl(&[
        "run",
        "--system",
        "pipeline",
        "topic=bots",
        "--timeout",
        "1s",
        "--poll",
        "200ms",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("timed out after 1s"), "{err}");
    assert!(err.contains("phase Pending"), "progress on stderr: {err}");
    let run_name = task_names(&s)
        .into_iter()
        .find(|n| n.starts_with("pipeline-run-"))
        .expect("run created a task");
    let t = task_json(&s, &run_name);
    assert_eq!(t["spec"]["system"], "pipeline");
    assert_eq!(t["spec"]["input"]["topic"], "bots");
    assert!(
        matches!(t["status"]["phase"].as_str(), None | Some("" | "Pending")),
        "{t}"
    );

    // apply --run waits too, and times out the same way.
    let o = s.ctl(&[
        "apply",
        "-f",
        &bp,
        "--run",
        "--timeout",
        "1s",
        "--poll",
        "200ms",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("task/pipeline-brief created"));
    assert!(
        stderr(&o).contains("timed out after 1s waiting for task/pipeline-brief"),
        "{}",
        stderr(&o)
    );
    // --no-wait returns at once.
    s.ok(&["apply", "-f", &bp, "--run", "--no-wait"], 0);

    // retry refuses a Pending task.
    let o = s.ctl(&["retry", "task", "pipeline-brief"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("still Pending"), "{}", stderr(&o));

    // cancel -> Failed with the reason; a second cancel is refused.
    let out = s.ok(
        &[
            "cancel",
            "task",
            "pipeline-brief",
            "--reason",
            "changed my mind",
        ],
        0,
    );
    assert!(out.contains("canceled"), "{out}");
    let t = task_json(&s, "pipeline-brief");
    assert_eq!(t["status"]["phase"], "Failed");
    assert_eq!(t["status"]["lastError"], "changed my mind");
    let o = s.ctl(&["cancel", "task", "pipeline-brief"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("already ended in phase Failed"),
        "{}",
        stderr(&o)
    );
    s.ok(&["cancel", "task", &run_name], 0);
    assert_eq!(
        task_json(&s, &run_name)["status"]["lastError"],
        "task canceled via orlojctl"
    );

    // retry of the Failed task creates <name>-retry-<ms> with the overrides.
    let out = s.ok(
        &[
            "retry",
            "task",
            "pipeline-brief",
            "--with-overrides",
            "topic=new",
        ],
        0,
    );
    let retry = task_names(&s)
        .into_iter()
        .find(|n| n.starts_with("pipeline-brief-retry-"))
        .expect("retry task");
    assert!(out.contains(&retry), "{out}");
    let t = task_json(&s, &retry);
    assert_eq!(t["spec"]["input"]["topic"], "new");
    assert_eq!(t["spec"]["system"], "pipeline");

    // apply --run on an ended task re-runs it under a new name.
    let out = s.ok(&["apply", "-f", &bp, "--run", "--no-wait"], 0);
    assert!(out.contains("rerun as task/pipeline-brief-run-"), "{out}");
    assert!(
        task_names(&s)
            .iter()
            .any(|n| n.starts_with("pipeline-brief-run-"))
    );
    assert_eq!(task_json(&s, "pipeline-brief")["status"]["phase"], "Failed");

    // Inspection commands work on a task that has not run.
    let o = s.ctl(&["trace", "task/pipeline-brief"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("no trace events"), "{}", stderr(&o));
    assert_eq!(
        s.ok(&["trace", "task", "pipeline-brief", "-o", "json"], 0)
            .trim(),
        "[]"
    );
    let o = s.ctl(&[
        "messages",
        "task/pipeline-brief",
        "--agent",
        "x",
        "--limit",
        "3",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["messages", "task/pipeline-brief", "-o", "json"], 0))
            .expect("json");
    assert_eq!(v["total"], 0);
    let out = s.ok(&["metrics", "task/pipeline-brief"], 0);
    assert!(out.starts_with("TOTALS\n"), "{out}");
    assert!(
        s.ok(&["metrics", "task/pipeline-brief", "-o", "yaml"], 0)
            .contains("totals:")
    );
    let out = s.ok(&["top", "tasks"], 0);
    assert!(
        out.contains("pipeline-brief") && out.contains("Failed=2"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["top", "tasks", "-o", "json"], 0)).expect("json");
    assert_eq!(v["phases"]["Failed"], 2);
    let o = s.ctl(&["top", "workers"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = s.ok(&["graph", "system", "pipeline"], 0);
    assert!(out.contains("entry: pipeline-planner"), "{out}");
    assert!(
        out.contains("[pipeline-research]\n  --> pipeline-writer\n"),
        "{out}"
    );
    let out = s.ok(&["graph", "task", "pipeline-brief"], 0);
    assert!(out.contains("(phase Failed)"), "{out}");
    assert!(out.contains("status: not started"), "{out}");
    let o = s.ctl(&["graph", "agent", "pipeline-planner"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn approve_and_deny_tool_approvals() {
    let s = start();
    for name in ["ta-ok", "ta-no"] {
        let body = format!(
            r#"{{"apiVersion":"orloj.dev/v1","kind":"ToolApproval","metadata":{{"name":"{name}"}},"spec":{{"task_ref":"t","tool":"web.search"}}}}"#
        );
        let code = post_json(&s.url, "/v1/tool-approvals", &body);
        assert!((200..300).contains(&code), "create {name}: {code}");
    }
    let out = s.ok(
        &[
            "approve",
            "tool-approval",
            "ta-ok",
            "--decided-by",
            "ann",
            "--comment",
            "fine",
        ],
        0,
    );
    assert!(out.contains("toolapproval/ta-ok approved by ann"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "tool-approval", "ta-ok", "-o", "json"], 0))
            .expect("json");
    assert_eq!(v["status"]["phase"], "Approved");
    assert_eq!(v["status"]["decided_by"], "ann");
    assert_eq!(v["status"]["comment"], "fine");
    // Deciding twice is refused by the server (409), exit 1.
    let o = s.ctl(&["deny", "tool-approval", "ta-ok"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("409"), "{}", stderr(&o));

    // deny: --reason is an alias of --comment; decided_by defaults to $USER.
    let o = Command::new(env!("CARGO_BIN_EXE_orlojctl"))
        .args([
            "--server",
            &s.url,
            "deny",
            "tool-approval",
            "ta-no",
            "--reason",
            "risky",
        ])
        .env("ORLOJCTL_CONFIG", s.config.path().join("config.json"))
        .env("USER", "bob")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "tool-approval", "ta-no", "-o", "json"], 0))
            .expect("json");
    assert_eq!(v["status"]["phase"], "Denied");
    assert_eq!(v["status"]["decided_by"], "bob");
    assert_eq!(v["status"]["comment"], "risky");
    // Only tool approvals can be approved.
    assert_eq!(s.ctl(&["approve", "task", "x"]).status.code(), Some(2));
}

#[test]
fn init_writes_blueprints_that_validate_and_apply() {
    let s = start();
    let dir = tempfile::tempdir().expect("tempdir");
    for bp in ["pipeline", "hierarchical", "swarm-loop"] {
        let target = dir.path().join(format!("proj-{bp}"));
        let t = target.display().to_string();
        let out = s.ok(&["init", &t, "--blueprint", bp], 0);
        assert!(out.contains("README.md"), "{out}");
        // The written files are the blueprint's files, byte for byte.
        for f in [
            "agent-system.yaml",
            "model-endpoint.yaml",
            "task.yaml",
            "README.md",
        ] {
            assert_eq!(
                std::fs::read_to_string(target.join(f)).expect("written"),
                std::fs::read_to_string(blueprint_named(bp).join(f)).expect("source"),
                "{bp}/{f}"
            );
        }
        let out = s.ok(&["validate", "-f", &t], 0);
        assert!(out.contains("valid Task/"), "{out}");
        let out = s.ok(&["apply", "-f", &t], 0);
        assert!(out.contains("1 runnable task(s) skipped"), "{out}");
        // Refuses to overwrite.
        let o = s.ctl(&["init", &t]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    }
    let out = s.ok(&["graph", "system", "hierarchical"], 0);
    assert!(
        out.contains("[hierarchical-editor] (join wait_for_all of 2 inbound)"),
        "{out}"
    );
    let out = s.ok(&["graph", "system", "swarm-loop"], 0);
    assert!(out.contains("loop: yes"), "{out}");
    assert!(out.contains("entry: swarm-loop-coordinator"), "{out}");
}
