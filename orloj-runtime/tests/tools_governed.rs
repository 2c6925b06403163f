//! The governed runtime: routing, authorization, timeout, retry/backoff/jitter, cancellation,
//! and the governed conformance suite.

mod tools_support;

use async_trait::async_trait;
use orloj_core::Object;
use orloj_core::tool::{ToolError, ToolErrorCode, ToolExecutor, ToolInvocation, ToolOutput};
use orloj_runtime::tools::conformance::{Case, run_case};
use orloj_runtime::tools::governed::fnv32a;
use orloj_runtime::tools::{Authorization, GovernedToolRuntime, ToolAuthorizer};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tools_support::{invocation, tool};

/// Fails the first `failures` calls with `error`, then answers `<label>:<input>`; records the
/// attempt number and time of every call.
struct Scripted {
    label: &'static str,
    failures: usize,
    error: ToolError,
    calls: Mutex<Vec<(u32, Instant)>>,
    delay: Duration,
}

impl Scripted {
    fn ok(label: &'static str) -> Arc<Self> {
        Self::failing(
            label,
            0,
            ToolError::new(ToolErrorCode::ExecutionFailed, "x"),
        )
    }
    fn failing(label: &'static str, failures: usize, error: ToolError) -> Arc<Self> {
        Arc::new(Self {
            label,
            failures,
            error,
            calls: Mutex::new(Vec::new()),
            delay: Duration::ZERO,
        })
    }
    fn slow(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay,
            ..Arc::into_inner(Self::ok("slow")).expect("unique")
        })
    }
    fn calls(&self) -> Vec<(u32, Instant)> {
        self.calls.lock().expect("lock").clone()
    }
}

#[async_trait]
impl ToolExecutor for Scripted {
    async fn execute(&self, inv: ToolInvocation) -> Result<ToolOutput, ToolError> {
        let n = {
            let mut calls = self.calls.lock().expect("lock");
            calls.push((inv.attempt, Instant::now()));
            calls.len()
        };
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if n <= self.failures {
            return Err(self.error.clone());
        }
        Ok(ToolOutput {
            result: format!("{}:{}", self.label, inv.input),
            duration: Duration::ZERO,
        })
    }
}

/// Blocks its thread: ignores cancellation entirely.
struct Blocking(Duration);

#[async_trait]
impl ToolExecutor for Blocking {
    async fn execute(&self, _inv: ToolInvocation) -> Result<ToolOutput, ToolError> {
        std::thread::sleep(self.0);
        Ok(ToolOutput {
            result: "blocked".into(),
            duration: self.0,
        })
    }
}

struct Verdict(Authorization);

#[async_trait]
impl ToolAuthorizer for Verdict {
    async fn authorize(&self, _inv: &ToolInvocation) -> Authorization {
        self.0.clone()
    }
}

fn retrying_tool(
    name: &str,
    attempts: i64,
    backoff: &str,
    max_backoff: &str,
    jitter: &str,
) -> Object {
    tool(
        name,
        json!({"endpoint": "http://tools.example/x", "runtime": {"retry": {
            "max_attempts": attempts, "backoff": backoff, "max_backoff": max_backoff,
            "jitter": jitter}}}),
    )
}

fn retryable() -> ToolError {
    ToolError::new(ToolErrorCode::ExecutionFailed, "backend down")
}

fn gaps(calls: &[(u32, Instant)]) -> Vec<Duration> {
    calls.windows(2).map(|w| w[1].1 - w[0].1).collect()
}

#[tokio::test(start_paused = true)]
async fn retries_with_capped_exponential_backoff() {
    let backend = Scripted::failing("http", 3, retryable());
    let rt = GovernedToolRuntime::new(backend.clone());
    let t = retrying_tool("search", 5, "100ms", "250ms", "none");
    let out = rt
        .execute(invocation(t, "q"))
        .await
        .expect("succeeds on attempt 4");
    assert_eq!(out.result, "http:q");
    let calls = backend.calls();
    assert_eq!(calls.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(
        gaps(&calls),
        [
            Duration::from_millis(100),
            Duration::from_millis(200),
            Duration::from_millis(250)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_is_deterministic_fnv() {
    fn full(d: Duration, f: f64) -> Duration {
        d.mul_f64(f)
    }
    fn equal(d: Duration, f: f64) -> Duration {
        d / 2 + (d / 2).mul_f64(f)
    }
    type JitterFn = fn(Duration, f64) -> Duration;
    let modes: [(&str, JitterFn); 2] = [("full", full), ("equal", equal)];
    for (mode, expected) in modes {
        let backend = Scripted::failing("http", 2, retryable());
        let rt = GovernedToolRuntime::new(backend.clone());
        let t = retrying_tool("jit", 3, "1s", "30s", mode);
        rt.execute(invocation(t, "q")).await.expect("ok");
        let factor = |attempt: u32| {
            f64::from(fnv32a(format!("jit:{attempt}").as_bytes()) % 10_000) / 10_000.0
        };
        let want = [
            expected(Duration::from_secs(1), factor(1)),
            expected(Duration::from_secs(2), factor(2)),
        ];
        let got = gaps(&backend.calls());
        assert_eq!(got.len(), 2, "{mode}");
        // The tokio timer has millisecond resolution.
        for (g, w) in got.iter().zip(want) {
            assert!(
                g.abs_diff(w) <= Duration::from_millis(1),
                "{mode}: {got:?} vs {want:?}"
            );
        }
        assert_ne!(want[0], Duration::from_secs(1), "{mode}: jitter applied");
    }
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_keep_the_structured_error() {
    let backend = Scripted::failing("http", 10, retryable());
    let rt = GovernedToolRuntime::new(backend.clone());
    let t = retrying_tool("flaky", 3, "0s", "1s", "none");
    let err = rt.execute(invocation(t, "q")).await.expect_err("fails");
    assert_eq!(backend.calls().len(), 3);
    assert_eq!(err.code, ToolErrorCode::ExecutionFailed);
    assert!(err.retryable);
    assert_eq!(
        err.message,
        "tool \"flaky\" failed after 3 attempt(s): backend down"
    );
    assert!(
        err.to_string()
            .starts_with("tool_status=error tool_code=execution_failed")
    );
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_are_not_retried() {
    let backend = Scripted::failing(
        "http",
        10,
        ToolError::new(ToolErrorCode::AuthInvalid, "bad token"),
    );
    let rt = GovernedToolRuntime::new(backend.clone());
    let t = retrying_tool("auth", 5, "1s", "1s", "none");
    let err = rt.execute(invocation(t, "q")).await.expect_err("fails");
    assert_eq!(backend.calls().len(), 1);
    assert_eq!(err.code, ToolErrorCode::AuthInvalid);
    assert!(err.message.contains("failed after 1 attempt(s)"));
}

#[tokio::test(start_paused = true)]
async fn cancel_during_backoff_aborts() {
    let backend = Scripted::failing("http", 10, retryable());
    let rt = GovernedToolRuntime::new(backend.clone());
    let t = retrying_tool("slowretry", 5, "10s", "10s", "none");
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.cancel();
    });
    let started = Instant::now();
    let err = rt
        .execute_cancellable(invocation(t, "q"), &cancel)
        .await
        .expect_err("canceled");
    assert_eq!(err.code, ToolErrorCode::Canceled);
    assert!(!err.retryable);
    assert_eq!(backend.calls().len(), 1);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_holds_even_if_the_backend_blocks() {
    let rt = GovernedToolRuntime::new(Arc::new(Blocking(Duration::from_millis(400))));
    let t = tool(
        "blocky",
        json!({"endpoint": "http://x.example", "runtime": {"timeout": "10ms"}}),
    );
    let started = std::time::Instant::now();
    let err = rt.execute(invocation(t, "q")).await.expect_err("timeout");
    assert_eq!(err.code, ToolErrorCode::Timeout);
    assert!(err.retryable);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn routes_by_type_and_isolation_mode() {
    let http = Scripted::ok("http");
    let container = Scripted::ok("container");
    let external = Scripted::ok("external");
    let bare = GovernedToolRuntime::new(http.clone());
    let full = GovernedToolRuntime::new(http.clone())
        .with_isolation_backend(container.clone())
        .with_type_executor("external", external.clone());
    let none = tool("a", json!({"endpoint": "http://x.example"}));
    let boxed = tool(
        "b",
        json!({"endpoint": "http://x.example", "runtime": {"isolation_mode": "container"}}),
    );
    let risky = tool(
        "c",
        json!({"endpoint": "http://x.example", "risk_level": "high"}),
    );
    let ext = tool(
        "d",
        json!({"type": "external", "endpoint": "http://x.example"}),
    );
    let mcp = tool(
        "e",
        json!({"type": "mcp", "mcp_server_ref": "s", "mcp_tool_name": "t"}),
    );

    let run = |rt: &GovernedToolRuntime, t: &Object| {
        let rt = rt.clone();
        let inv = invocation(t.clone(), "i");
        async move { rt.execute(inv).await }
    };
    assert_eq!(run(&full, &none).await.expect("ok").result, "http:i");
    assert_eq!(run(&full, &boxed).await.expect("ok").result, "container:i");
    assert_eq!(run(&full, &risky).await.expect("ok").result, "container:i");
    assert_eq!(run(&full, &ext).await.expect("ok").result, "external:i");
    for t in [&boxed, &risky] {
        let err = run(&bare, t).await.expect_err("no backend");
        assert_eq!(err.code, ToolErrorCode::IsolationUnavailable);
        assert!(!err.retryable);
    }
    let err = run(&full, &mcp).await.expect_err("no mcp");
    assert_eq!(err.code, ToolErrorCode::IsolationUnavailable);
    assert!(err.message.contains("mcp runtime unavailable"));

    let mut nameless = none.clone();
    nameless.metadata.name = String::new();
    let err = run(&full, &nameless).await.expect_err("no name");
    assert_eq!(err.code, ToolErrorCode::InvalidInput);
}

#[tokio::test]
async fn authorizer_verdicts() {
    let backend = Scripted::ok("http");
    let t = tool("gated", json!({"endpoint": "http://x.example"}));
    let deny = GovernedToolRuntime::new(backend.clone()).with_authorizer(Arc::new(Verdict(
        Authorization::Deny("missing_roles=r".into()),
    )));
    let err = deny
        .execute(invocation(t.clone(), "q"))
        .await
        .expect_err("denied");
    assert_eq!(err.code, ToolErrorCode::PermissionDenied);
    assert_eq!(err.reason, "tool_permission_denied");
    assert!(!err.retryable);
    assert!(err.to_string().starts_with("tool_status=denied"));
    assert!(err.message.contains("missing_roles=r"));

    let approval = GovernedToolRuntime::new(backend.clone()).with_authorizer(Arc::new(Verdict(
        Authorization::ApprovalRequired("operation write".into()),
    )));
    let err = approval
        .execute(invocation(t, "q"))
        .await
        .expect_err("held");
    assert_eq!(err.code, ToolErrorCode::ApprovalPending);
    assert!(!err.retryable);
    assert!(err.message.contains("tool approval required"));
    assert!(
        backend.calls().is_empty(),
        "gated calls never reach the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governed_conformance() {
    let t = tool("web", json!({"endpoint": "http://x.example"}));
    let rt = GovernedToolRuntime::new(Scripted::ok("http"));
    for case in [
        Case::success(t.clone()),
        Case::unknown_tool(t.clone()),
        Case::unknown_version(t.clone()),
    ] {
        let response = run_case(&rt, case).await.expect("conforms");
        assert!(!response.request_id.is_empty());
    }
    let ok = run_case(&rt, Case::success(t.clone())).await.expect("ok");
    assert_eq!(
        ok.output.expect("output")["result"],
        "http:tool=web payload"
    );

    let denied = GovernedToolRuntime::new(Scripted::ok("http"))
        .with_authorizer(Arc::new(Verdict(Authorization::Deny("no".into()))));
    run_case(&denied, Case::denied(t.clone()))
        .await
        .expect("denied");

    let one_ms = tool(
        "tiny",
        json!({"endpoint": "http://x.example", "runtime": {"timeout": "1ms"}}),
    );
    let slow = GovernedToolRuntime::new(Scripted::slow(Duration::from_millis(250)));
    run_case(
        &slow,
        Case::bounded_timeout(one_ms, Duration::from_secs(5), Duration::from_millis(120)),
    )
    .await
    .expect("1ms tool timeout");
    run_case(
        &slow,
        Case::bounded_timeout(
            t.clone(),
            Duration::from_millis(10),
            Duration::from_millis(120),
        ),
    )
    .await
    .expect("10ms call timeout on a 250ms backend");
    run_case(&slow, Case::canceled(t)).await.expect("canceled");
}
