//! orlojd as a process: startup errors, optimistic concurrency, watches over a real socket,
//! graceful shutdown.

mod common;

use common::{Orlojd, http};
use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn bad_flags_fail_with_one_line_and_nonzero_exit() {
    for args in [
        vec!["--bogus-flag"],
        vec!["--storage-backend", "postgres"],
        vec![
            "--storage-backend",
            "memory",
            "--postgres-dsn",
            "postgres://x/y",
        ],
        vec!["--reconcile-interval", "often"],
        vec!["--api-rate-limit-rps", "-1"],
        vec!["--api-rate-limit-burst", "0"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_orlojd"))
            .args(&args)
            .output()
            .expect("orlojd runs");
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("orlojd:"), "{args:?}: {stderr}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_orlojd"))
        .arg("--version")
        .output()
        .expect("orlojd runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn orlojctl_rides_out_the_server_rate_limit() {
    let server = Orlojd::start(&["--api-rate-limit-rps", "4", "--api-rate-limit-burst", "2"]);
    // The limit is real: a quick burst of reads gets 429s.
    let codes: Vec<u16> = (0..8)
        .filter_map(|_| http(&server.url, "GET", "/v1/agents", &[], None).map(|(c, _)| c))
        .collect();
    assert!(
        codes.contains(&429),
        "no request was rate-limited: {codes:?}"
    );
    // orlojctl waits and sends again, so an apply of many objects still succeeds in full.
    let yaml: String = (0..10)
        .map(|i| {
            format!(
                "apiVersion: orloj.dev/v1\nkind: Agent\nmetadata:\n  name: limited-{i}\nspec:\n  model_ref: m\n  prompt: hi\n---\n"
            )
        })
        .collect();
    common::apply_yaml(&server, &yaml);
    let listed = common::ok(server.ctl(&["get", "agents", "-o", "json"]), "get agents");
    for i in 0..10 {
        assert!(
            listed.contains(&format!("limited-{i}")),
            "limited-{i} missing: {listed}"
        );
    }
}

const AGENT: &str = r#"{"apiVersion":"orloj.dev/v1","kind":"Agent","metadata":{"name":"w1"},"spec":{"model_ref":"m","prompt":"hi"}}"#;

#[test]
fn stale_put_is_rejected_and_watch_sees_changes_in_order() {
    let server = Orlojd::start(&[]);
    let host = server.url.trim_start_matches("http://").to_string();

    // Open the watch first and read it on a thread.
    let mut stream = std::net::TcpStream::connect(&host).expect("connect");
    write!(
        stream,
        "GET /v1/agents/watch HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("send watch");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let reader = BufReader::new(stream);
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Some(data) = line.strip_prefix("data:")
                && tx.send(data.trim().to_string()).is_err()
            {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));

    let json = [("Content-Type", "application/json")];
    let (code, body) = http(&server.url, "POST", "/v1/agents", &json, Some(AGENT)).expect("create");
    assert_eq!(code, 201, "{body}");
    let updated = AGENT.replace("\"hi\"", "\"hello\"").replace(
        "\"name\":\"w1\"",
        "\"name\":\"w1\",\"resourceVersion\":\"1\"",
    );
    let (code, body) =
        http(&server.url, "PUT", "/v1/agents/w1", &json, Some(&updated)).expect("put");
    assert_eq!(code, 200, "{body}");
    // The same precondition again is now stale.
    let (code, body) =
        http(&server.url, "PUT", "/v1/agents/w1", &json, Some(&updated)).expect("stale put");
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("\"error\""),
        "JSON error body expected: {body}"
    );
    let (code, _) = http(&server.url, "GET", "/v1/agents/w1", &[], None).expect("get");
    assert_eq!(code, 200);
    let (code, _) = http(&server.url, "DELETE", "/v1/agents/w1", &[], None).expect("delete");
    assert_eq!(code, 204);

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut types = Vec::new();
    while types.len() < 3 && Instant::now() < deadline {
        if let Ok(data) = rx.recv_timeout(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_str(&data).expect("event JSON");
            if v["resource"]["metadata"]["name"] == "w1" {
                types.push(v["type"].as_str().unwrap_or("").to_string());
            }
        }
    }
    assert_eq!(types, ["added", "updated", "deleted"]);
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let server = Orlojd::start(&[]);
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}
