//! orlojctl as a process, without a server: usage errors, config profiles, an unreachable
//! server, offline validation, completion.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ctl(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orlojctl"))
        .args(args)
        .env("ORLOJCTL_CONFIG", config)
        .env_remove("ORLOJCTL_SERVER")
        .env_remove("ORLOJ_SERVER")
        .env_remove("ORLOJCTL_API_TOKEN")
        .env_remove("ORLOJ_API_TOKEN")
        .output()
        .expect("run orlojctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn blueprints() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/blueprints/pipeline")
}

/// A port nothing listens on: bind, read the port, close.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.json");
    let o = ctl(&cfg, &["get"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = ctl(&cfg, &["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = ctl(&cfg, &["get", "gizmos"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown resource type \"gizmos\""),
        "{}",
        stderr(&o)
    );
    let o = ctl(&cfg, &["wait", "task/x", "--for", "Succeeded"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("condition=<Phase>"), "{}", stderr(&o));
    let o = ctl(&cfg, &["wait", "x", "--for", "condition=Succeeded"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn version_forms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.json");
    for args in [&["version"][..], &["--version"], &["-version"]] {
        let o = ctl(&cfg, args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(
            stdout(&o).contains(env!("CARGO_PKG_VERSION")),
            "{args:?}: {}",
            stdout(&o)
        );
    }
}

#[test]
fn unreachable_server_is_one_line_naming_the_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.json");
    let url = format!("http://127.0.0.1:{}", dead_port());
    for args in [
        &["get", "agents"][..],
        &["health"],
        &["status"],
        &["delete", "agent", "a"],
    ] {
        let mut full = vec!["--server", url.as_str()];
        full.extend_from_slice(args);
        let o = ctl(&cfg, &full);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains(&format!("cannot reach orloj server at {url}")),
            "{err}"
        );
        assert!(stdout(&o).is_empty(), "{args:?}: nothing on stdout");
    }
}

#[test]
fn config_profiles_drive_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("sub/config.json");
    let o = ctl(&cfg, &["config", "path"]);
    assert_eq!(stdout(&o).trim(), cfg.display().to_string());

    let o = ctl(&cfg, &["config", "use", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no profile named \"nope\""),
        "{}",
        stderr(&o)
    );

    let dead = format!("http://127.0.0.1:{}", dead_port());
    let o = ctl(
        &cfg,
        &[
            "config",
            "set-profile",
            "dev",
            "--server",
            &dead,
            "--token-env",
            "DEV_TOKEN",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = ctl(
        &cfg,
        &[
            "config",
            "set-profile",
            "prod",
            "--server",
            "http://prod.invalid",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).expect("config written"))
            .expect("json");
    assert_eq!(
        saved["current_profile"], "dev",
        "first profile becomes current"
    );
    assert_eq!(saved["profiles"]["dev"]["token_env"], "DEV_TOKEN");
    assert_eq!(saved["profiles"]["prod"]["server"], "http://prod.invalid");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cfg).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let o = ctl(&cfg, &["config", "get"]);
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "server:          {dead} (from profile dev.server)"
        )),
        "{out}"
    );
    assert!(out.contains("* dev"), "{out}");

    // The profile's server is the one contacted.
    let o = ctl(&cfg, &["health"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&dead), "{}", stderr(&o));

    let o = ctl(&cfg, &["config", "use", "prod"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = ctl(&cfg, &["config", "get"]);
    assert!(
        stdout(&o).contains("server:          http://prod.invalid"),
        "{}",
        stdout(&o)
    );

    // The flag beats the profile.
    let o = ctl(&cfg, &["--server", "http://flag.invalid", "config", "get"]);
    assert!(
        stdout(&o).contains("http://flag.invalid (from flag --server)"),
        "{}",
        stdout(&o)
    );

    // A broken config file is reported, naming it.
    std::fs::write(&cfg, "{broken").expect("write");
    let o = ctl(&cfg, &["health"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("config.json"), "{}", stderr(&o));
}

#[test]
fn completion_scripts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.json");
    for shell in ["bash", "zsh", "fish"] {
        let o = ctl(&cfg, &["completion", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}");
        assert!(stdout(&o).contains("orlojctl"), "{shell}");
        assert!(stdout(&o).contains("apply"), "{shell}");
    }
}

#[test]
fn validate_blueprints_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.json");
    let bp = blueprints();
    let o = ctl(&cfg, &["validate", "-f", &bp.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for expected in [
        "valid ModelEndpoint/pipeline-mock",
        "valid Agent/pipeline-planner",
        "valid Agent/pipeline-research",
        "valid Agent/pipeline-writer",
        "valid AgentSystem/pipeline",
        "valid Task/pipeline-brief",
    ] {
        assert!(out.contains(expected), "missing {expected}: {out}");
    }
    assert_eq!(out.lines().count(), 6, "{out}");

    // A broken file fails validation naming the file; the good one still reports valid.
    let bad_dir = dir.path().join("m");
    std::fs::create_dir(&bad_dir).expect("mkdir");
    std::fs::write(
        bad_dir.join("a.yaml"),
        "apiVersion: orloj.dev/v1\nkind: ModelEndpoint\nmetadata:\n  name: ok\nspec:\n  provider: mock\n  default_model: m\n",
    )
    .expect("write");
    std::fs::write(
        bad_dir.join("b.yaml"),
        "apiVersion: orloj.dev/v1\nkind: Agent\nmetadata:\n  name: broken\nspec:\n  prompt: no model\n",
    )
    .expect("write");
    let o = ctl(&cfg, &["validate", "-f", &bad_dir.display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("valid ModelEndpoint/ok"),
        "{}",
        stdout(&o)
    );
    let err = stderr(&o);
    assert!(err.contains("b.yaml"), "{err}");
    assert!(err.contains("model_ref"), "error names the field: {err}");
}

#[test]
fn validate_all_blueprints_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.json");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/blueprints");
    for (bp, objects) in [("pipeline", 6), ("hierarchical", 9), ("swarm-loop", 6)] {
        let o = ctl(
            &cfg,
            &["validate", "-f", &root.join(bp).display().to_string()],
        );
        assert_eq!(o.status.code(), Some(0), "{bp}: {}", stderr(&o));
        let out = stdout(&o);
        assert_eq!(out.lines().count(), objects, "{bp}: {out}");
        assert!(out.contains(&format!("valid AgentSystem/{bp}")), "{out}");
        assert!(out.contains("valid ModelEndpoint/"), "{out}");
        let readme = std::fs::read_to_string(root.join(bp).join("README.md")).expect("readme");
        assert!(
            readme.contains("secretRef") && readme.contains("orlojctl create secret"),
            "{bp} README documents the switch to a real provider"
        );
    }
}

/// Upstream manifests, when present, validate too (compatibility).
#[test]
fn validate_upstream_examples_when_present() {
    let upstream = Path::new("/work/shared/upstream/examples/blueprints");
    if !upstream.exists() {
        eprintln!("skipping: {} not present", upstream.display());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let o = ctl(
        &dir.path().join("c.json"),
        &["validate", "-f", &upstream.display().to_string()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).lines().count() >= 15, "{}", stdout(&o));
}
