//! `orloj-loadtest` against a real orlojd with an embedded worker on the memory store: every
//! baseline task succeeds, injected faults end as predicted (invalid system → Failed, timing-out
//! system → DeadLetter, expired lease → takeover then Succeeded), and a failing gate or an
//! unreachable server gives a non-zero exit.

mod common;

use common::{Orlojd, free_port, fresh_database};
use serde_json::Value;
use std::process::{Command, Output};

fn loadtest(server: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orloj-loadtest"))
        .args(["--server", server])
        .args(args)
        .env_remove("ORLOJ_API_TOKEN")
        .output()
        .expect("orloj-loadtest runs")
}

fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "summary is not JSON ({e}):\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn load_run_with_injected_faults_passes_the_gates_and_a_failing_gate_exits_2() {
    let server = Orlojd::start(&[
        "--embedded-worker",
        "--embedded-worker-max-concurrent-tasks",
        "4",
        "--reconcile-interval",
        "200ms",
    ]);
    let out = loadtest(
        &server.url,
        &[
            "--namespace",
            "loadtest",
            "--tasks",
            "50",
            "--concurrency",
            "8",
            "--min-ready-workers",
            "1",
            "--poll-interval",
            "200ms",
            "--timeout",
            "4m",
            "--retry-backoff",
            "200ms",
            "--inject-invalid-system-rate",
            "0.2",
            "--inject-timeout-system-rate",
            "0.1",
            "--inject-expired-lease-rate",
            "0.06",
            "--min-takeovers",
            "3",
            "--min-retry-total",
            "10",
            "--run-id",
            "faults",
        ],
    );
    let s = summary(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "gates failed: {:#}\nstderr:\n{}\norlojd log tail:\n{}",
        s["violations"],
        String::from_utf8_lossy(&out.stderr),
        server
            .log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(s["passed"], true);
    assert_eq!(s["created"], 50);
    assert_eq!(s["create_errors"], 0);
    assert_eq!(s["injection_errors"], 0);
    assert_eq!(s["injected"]["invalid_system"], 10);
    assert_eq!(s["injected"]["timeout_system"], 5);
    assert_eq!(s["injected"]["expired_lease"], 3);
    // All 32 baseline tasks and the 3 taken-over ones succeed; faults end as predicted.
    assert_eq!(s["baseline"]["total"], 32);
    assert_eq!(s["baseline"]["succeeded"], 32);
    assert_eq!(s["by_kind"]["expired_lease"]["succeeded"], 3);
    assert_eq!(s["by_kind"]["invalid_system"]["failed"], 10);
    assert_eq!(s["by_kind"]["timeout_system"]["deadletter"], 5);
    assert_eq!(
        (s["succeeded"].clone(), s["failed"].clone()),
        (35.into(), 10.into())
    );
    assert_eq!(s["deadletter"], 5);
    assert_eq!(s["timed_out"], 0);
    assert_eq!(s["unexpected"], Value::Array(vec![]));
    assert_eq!(s["duplicates"], Value::Array(vec![]));
    assert!(s["takeovers"].as_i64().expect("takeovers") >= 3, "{s:#}");
    // Timed-out tasks used all three attempts: 2 task retries each.
    assert!(s["task_retries"].as_i64().expect("retries") >= 10, "{s:#}");
    assert!(
        s["latency"]["p95_ms"].as_u64().expect("p95")
            >= s["latency"]["p50_ms"].as_u64().expect("p50")
    );
    assert!(s["latency"]["p50_ms"].as_u64().expect("p50") > 0, "{s:#}");
    assert_eq!(s["baseline_rates"]["success"], 1.0);

    // The same server, a gate that cannot be met: summary still printed, exit code 2.
    let out = loadtest(
        &server.url,
        &[
            "--namespace",
            "loadtest",
            "--skip-setup",
            "--tasks",
            "3",
            "--min-ready-workers",
            "1",
            "--poll-interval",
            "200ms",
            "--min-takeovers",
            "1",
            "--run-id",
            "gate",
        ],
    );
    let s = summary(&out);
    assert_eq!(out.status.code(), Some(2), "{s:#}");
    assert_eq!(s["passed"], false);
    assert_eq!(s["succeeded"], 3);
    assert_eq!(s["violations"], serde_json::json!(["takeovers 0 < 1"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gate failed: takeovers 0 < 1"));
}

/// The same faults against the Postgres store: the expired-lease injection and the takeover go
/// through the SQL claim path.
#[test]
fn load_run_on_postgres_takes_over_injected_leases() {
    let Some(dsn) = fresh_database() else {
        return;
    };
    let server = Orlojd::start(&[
        "--storage-backend",
        "postgres",
        "--postgres-dsn",
        &dsn,
        "--embedded-worker",
        "--embedded-worker-max-concurrent-tasks",
        "4",
        "--reconcile-interval",
        "200ms",
    ]);
    let out = loadtest(
        &server.url,
        &[
            "--tasks",
            "20",
            "--min-ready-workers",
            "1",
            "--poll-interval",
            "200ms",
            "--timeout",
            "4m",
            "--retry-backoff",
            "200ms",
            "--inject-invalid-system-rate",
            "0.1",
            "--inject-timeout-system-rate",
            "0.1",
            "--inject-expired-lease-rate",
            "0.1",
            "--min-takeovers",
            "2",
        ],
    );
    let s = summary(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "gates failed: {:#}\nstderr:\n{}",
        s["violations"],
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s["created"], 20);
    assert_eq!(s["baseline"]["succeeded"], 14);
    assert_eq!(s["by_kind"]["expired_lease"]["succeeded"], 2);
    assert_eq!(s["by_kind"]["invalid_system"]["failed"], 2);
    assert_eq!(s["by_kind"]["timeout_system"]["deadletter"], 2);
    assert_eq!(s["unexpected"], Value::Array(vec![]));
    assert_eq!(s["duplicates"], Value::Array(vec![]));
}

#[test]
fn unreachable_server_is_a_clear_error() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = loadtest(&url, &["--tasks", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach orloj server at") && stderr.contains(&url),
        "{stderr}"
    );
}

#[test]
fn bad_flags_are_rejected() {
    let out = loadtest(
        "http://127.0.0.1:1",
        &[
            "--inject-invalid-system-rate",
            "0.7",
            "--inject-timeout-system-rate",
            "0.6",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not exceed 1"));
    let out = loadtest("http://127.0.0.1:1", &["--quality-profile", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown --quality-profile"));
}
