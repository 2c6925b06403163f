//! HTTP, external and webhook-callback executors against a local axum server.

mod tools_support;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Form, Router};
use orloj_core::ManualClock;
use orloj_core::tool::{ToolErrorCode, ToolExecutor};
use orloj_runtime::tools::conformance::{Case, run_case};
use orloj_runtime::tools::{
    ExternalToolExecutor, HttpToolExecutor, SecretResolver, WebhookCallbackToolExecutor,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tools_support::{client, injector, injector_with_clock, invocation, secrets, serve, tool};

#[derive(Default)]
struct Seen {
    token_hits: AtomicUsize,
    token_forms: Mutex<Vec<HashMap<String, String>>>,
    polls: AtomicUsize,
}

fn header(headers: &HeaderMap, name: &str) -> Value {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map_or(Value::Null, |v| Value::String(v.to_string()))
}

async fn server() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/echo", post(|body: String| async move { format!("  {body}\n") }))
        .route(
            "/headers",
            post(|headers: HeaderMap, body: String| async move {
                Json(json!({
                    "content_type": header(&headers, "content-type"),
                    "authorization": header(&headers, "authorization"),
                    "x_api_key": header(&headers, "x-api-key"),
                    "body": body,
                }))
            }),
        )
        .route(
            "/envelope-ok",
            post(|| async { Json(json!({"status": "ok", "output": {"result": "unwrapped"}})) }),
        )
        .route(
            "/envelope-err",
            post(|| async {
                Json(json!({"status": "error", "error": {
                    "code": "invalid_input", "reason": "bad_query", "retryable": false,
                    "message": "query missing"}}))
            }),
        )
        .route(
            "/status/{code}",
            post(|Path(code): Path<u16>| async move {
                (
                    StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT),
                    "failure detail token=abc123",
                )
            }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/token",
            post(
                |State(seen): State<Arc<Seen>>, Form(form): Form<HashMap<String, String>>| async move {
                    let n = seen.token_hits.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.token_forms.lock().expect("lock").push(form);
                    Json(json!({"access_token": format!("tok-{n}"), "expires_in": 120}))
                },
            ),
        )
        .route(
            "/contract",
            post(|headers: HeaderMap, Json(req): Json<Value>| async move {
                let version = header(&headers, "x-tool-contract-version");
                Json(json!({
                    "tool_contract_version": "v1",
                    "request_id": req["request_id"],
                    "status": "ok",
                    "output": {"result": format!(
                        "ext:{}:{}:{}:{}",
                        req["input_raw"].as_str().unwrap_or_default(),
                        req["runtime"]["mode"].as_str().unwrap_or_default(),
                        req["request_id"].as_str().unwrap_or_default(),
                        version.as_str().unwrap_or_default())}
                }))
            }),
        )
        .route("/not-contract", post(|| async { "plain text" }))
        .route("/wh", post(|| async { StatusCode::ACCEPTED }))
        .route(
            "/wh/{id}",
            get(
                |State(seen): State<Arc<Seen>>, Path(id): Path<String>| async move {
                    if seen.polls.fetch_add(1, Ordering::SeqCst) < 2 {
                        return (StatusCode::ACCEPTED, Json(Value::Null));
                    }
                    (
                        StatusCode::OK,
                        Json(json!({"status": "ok", "request_id": id,
                                    "output": {"result": format!("polled:{id}")}})),
                    )
                },
            ),
        )
        .route("/wh-push", post(|| async { StatusCode::ACCEPTED }))
        .route("/wh-push/{id}", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/wh-sync",
            post(|| async { Json(json!({"status": "ok", "output": {"result": "sync"}})) }),
        )
        .with_state(seen.clone());
    let addr = serve(app).await;
    // `localhost` passes the endpoint guard (host names are not resolved; loopback IPs are
    // blocked).
    (format!("http://localhost:{}", addr.port()), seen)
}

async fn no_secrets() -> Arc<dyn SecretResolver> {
    secrets(&[], &[]).await
}

async fn http_executor() -> HttpToolExecutor {
    HttpToolExecutor::new(client(), injector(no_secrets().await))
}

#[tokio::test]
async fn posts_raw_input_and_returns_trimmed_body() {
    let (base, _) = server().await;
    let exec = http_executor().await;
    let t = tool("echo", json!({"endpoint": format!("{base}/echo")}));
    let out = exec
        .execute(invocation(t, r#"{"q":"rust"}"#))
        .await
        .expect("ok");
    assert_eq!(out.result, r#"{"q":"rust"}"#);

    let t = tool("headers", json!({"endpoint": format!("{base}/headers")}));
    let out = exec.execute(invocation(t, "hello")).await.expect("ok");
    let seen: Value = serde_json::from_str(&out.result).expect("json");
    assert_eq!(seen["content_type"], "application/json");
    assert_eq!(seen["body"], "hello");
    assert_eq!(seen["authorization"], Value::Null);
}

#[tokio::test]
async fn unwraps_contract_envelopes() {
    let (base, _) = server().await;
    let exec = http_executor().await;
    let ok = tool("ok", json!({"endpoint": format!("{base}/envelope-ok")}));
    assert_eq!(
        exec.execute(invocation(ok, "{}")).await.expect("ok").result,
        "unwrapped"
    );
    let bad = tool("bad", json!({"endpoint": format!("{base}/envelope-err")}));
    let err = exec
        .execute(invocation(bad, "{}"))
        .await
        .expect_err("error");
    assert_eq!(err.code, ToolErrorCode::InvalidInput);
    assert_eq!(err.reason, "bad_query");
    assert!(!err.retryable);
    assert_eq!(err.message, "query missing");
}

#[tokio::test]
async fn maps_http_status_codes() {
    let (base, _) = server().await;
    let exec = http_executor().await;
    for (status, code, retryable) in [
        (401, ToolErrorCode::AuthInvalid, false),
        (403, ToolErrorCode::AuthForbidden, false),
        (429, ToolErrorCode::ExecutionFailed, true),
        (500, ToolErrorCode::ExecutionFailed, true),
        (503, ToolErrorCode::ExecutionFailed, true),
        (404, ToolErrorCode::ExecutionFailed, false),
    ] {
        let t = tool(
            "status",
            json!({"endpoint": format!("{base}/status/{status}")}),
        );
        let err = exec.execute(invocation(t, "{}")).await.expect_err("error");
        assert_eq!(
            (err.code, err.retryable),
            (code, retryable),
            "HTTP {status}"
        );
        assert_eq!(err.details["http_status"], status.to_string());
        assert!(err.message.contains("failure detail"), "{}", err.message);
        assert!(
            !err.message.contains("abc123"),
            "not redacted: {}",
            err.message
        );
    }
}

#[tokio::test]
async fn times_out() {
    let (base, _) = server().await;
    let exec = http_executor().await;
    let t = tool("slow", json!({"endpoint": format!("{base}/slow")}));
    let mut inv = invocation(t, "{}");
    inv.timeout = Duration::from_millis(150);
    let started = std::time::Instant::now();
    let err = exec.execute(inv).await.expect_err("timeout");
    assert_eq!(err.code, ToolErrorCode::Timeout);
    assert!(err.retryable);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn refuses_loopback_ip_endpoints_and_bad_types() {
    let exec = http_executor().await;
    let t = tool("lo", json!({"endpoint": "http://127.0.0.1:9/x"}));
    let err = exec
        .execute(invocation(t, "{}"))
        .await
        .expect_err("blocked");
    assert_eq!(err.code, ToolErrorCode::RuntimePolicyInvalid);
    let t = tool(
        "g",
        json!({"type": "grpc", "endpoint": "http://localhost:9"}),
    );
    let err = exec.execute(invocation(t, "{}")).await.expect_err("type");
    assert_eq!(err.code, ToolErrorCode::UnsupportedTool);
}

#[tokio::test]
async fn injects_bearer_api_key_and_basic_auth() {
    let (base, _) = server().await;
    let secrets = secrets(
        &[
            ("search-token", &[("value", "tok-store")]),
            ("creds", &[("basic", "user:pa ss")]),
        ],
        &[("ORLOJ_SECRET_API_KEY", "key-env")],
    )
    .await;
    let exec = HttpToolExecutor::new(client(), injector(secrets));
    let endpoint = format!("{base}/headers");
    let call = |auth: Value| {
        let t = tool("h", json!({"endpoint": endpoint, "auth": auth}));
        let exec = &exec;
        async move {
            let out = exec.execute(invocation(t, "{}")).await.expect("ok");
            serde_json::from_str::<Value>(&out.result).expect("json")
        }
    };
    let seen = call(json!({"secretRef": "search-token"})).await;
    assert_eq!(seen["authorization"], "Bearer tok-store");
    let seen = call(
        json!({"profile": "api_key_header", "headerName": "X-Api-Key",
                           "secretRef": "api-key"}),
    )
    .await;
    assert_eq!(seen["x_api_key"], "key-env");
    assert_eq!(seen["authorization"], Value::Null);
    let seen = call(json!({"profile": "basic", "secretRef": "creds:basic"})).await;
    assert_eq!(seen["authorization"], "Basic dXNlcjpwYSBzcw==");
}

#[tokio::test]
async fn auth_failures_are_structured() {
    let (base, _) = server().await;
    let secrets = secrets(&[("nocolon", &[("value", "justtoken")])], &[("EMPTY", "")]).await;
    let exec = HttpToolExecutor::new(client(), injector(secrets));
    let endpoint = format!("{base}/headers");
    for (auth, code) in [
        (
            json!({"secretRef": "missing"}),
            ToolErrorCode::SecretResolutionFailed,
        ),
        (
            json!({"secretRef": "empty"}),
            ToolErrorCode::SecretResolutionFailed,
        ),
        (
            json!({"profile": "basic", "secretRef": "nocolon"}),
            ToolErrorCode::RuntimePolicyInvalid,
        ),
    ] {
        let t = tool("h", json!({"endpoint": endpoint, "auth": auth}));
        let err = exec.execute(invocation(t, "{}")).await.expect_err("fails");
        assert_eq!(err.code, code, "{auth}");
        assert!(!err.retryable);
    }
}

#[tokio::test]
async fn oauth2_tokens_are_fetched_cached_and_refreshed() {
    let (base, seen) = server().await;
    let secrets = secrets(
        &[(
            "oauth",
            &[("client_id", "cid"), ("client_secret", "csecret")],
        )],
        &[],
    )
    .await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let exec = HttpToolExecutor::new(client(), injector_with_clock(secrets, clock.clone()));
    let t = tool(
        "o",
        json!({"endpoint": format!("{base}/headers"), "auth": {
            "profile": "oauth2_client_credentials", "secretRef": "oauth",
            "tokenURL": format!("{base}/token"), "scopes": ["read", "write"]}}),
    );
    let auth_header = |out: orloj_core::tool::ToolOutput| {
        serde_json::from_str::<Value>(&out.result).expect("json")["authorization"].clone()
    };
    let first = exec.execute(invocation(t.clone(), "{}")).await.expect("ok");
    assert_eq!(auth_header(first), "Bearer tok-1");
    let second = exec.execute(invocation(t.clone(), "{}")).await.expect("ok");
    assert_eq!(auth_header(second), "Bearer tok-1");
    assert_eq!(seen.token_hits.load(Ordering::SeqCst), 1, "token is cached");
    {
        let forms = seen.token_forms.lock().expect("lock");
        assert_eq!(forms[0]["grant_type"], "client_credentials");
        assert_eq!(forms[0]["client_id"], "cid");
        assert_eq!(forms[0]["client_secret"], "csecret");
        assert_eq!(forms[0]["scope"], "read write");
    }
    // expires_in 120 → refreshed 30s early, i.e. after 90s.
    clock.advance(Duration::from_secs(89));
    let cached = exec.execute(invocation(t.clone(), "{}")).await.expect("ok");
    assert_eq!(auth_header(cached), "Bearer tok-1");
    clock.advance(Duration::from_secs(2));
    let refreshed = exec.execute(invocation(t, "{}")).await.expect("ok");
    assert_eq!(auth_header(refreshed), "Bearer tok-2");
    assert_eq!(seen.token_hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn oauth2_token_endpoint_failure_is_retryable_secret_error() {
    let (base, _) = server().await;
    let secrets = secrets(
        &[("oauth", &[("client_id", "c"), ("client_secret", "s")])],
        &[],
    )
    .await;
    let exec = HttpToolExecutor::new(client(), injector(secrets));
    let t = tool(
        "o",
        json!({"endpoint": format!("{base}/headers"), "auth": {
            "profile": "oauth2_client_credentials", "secretRef": "oauth",
            "tokenURL": format!("{base}/status/500")}}),
    );
    let err = exec.execute(invocation(t, "{}")).await.expect_err("fails");
    assert_eq!(err.code, ToolErrorCode::SecretResolutionFailed);
    assert!(err.retryable);
}

#[tokio::test]
async fn external_executor_speaks_the_contract() {
    let (base, _) = server().await;
    let exec = ExternalToolExecutor::new(client(), injector(no_secrets().await), false);
    let t = tool(
        "ext",
        json!({"type": "external", "endpoint": format!("{base}/contract")}),
    );
    let out = exec.execute(invocation(t, "payload")).await.expect("ok");
    assert_eq!(out.result, "ext:payload:external:default/agent/s001/ext:v1");

    let t = tool(
        "plain",
        json!({"type": "external", "endpoint": format!("{base}/not-contract")}),
    );
    let err = exec.execute(invocation(t, "x")).await.expect_err("invalid");
    assert_eq!(err.code, ToolErrorCode::ExecutionFailed);
    assert!(err.retryable);
}

#[tokio::test]
async fn webhook_callback_polls_until_done() {
    let (base, seen) = server().await;
    let exec = WebhookCallbackToolExecutor::new(client(), injector(no_secrets().await), false)
        .with_poll_interval(Duration::from_millis(20));
    let t = tool(
        "wh",
        json!({"type": "webhook-callback", "endpoint": format!("{base}/wh")}),
    );
    let mut inv = invocation(t, "{}");
    inv.request_id = "req-1".into();
    let out = exec.execute(inv).await.expect("ok");
    assert_eq!(out.result, "polled:req-1");
    assert_eq!(seen.polls.load(Ordering::SeqCst), 3);

    let t = tool(
        "sync",
        json!({"type": "webhook-callback", "endpoint": format!("{base}/wh-sync")}),
    );
    assert_eq!(
        exec.execute(invocation(t, "{}")).await.expect("ok").result,
        "sync"
    );
}

#[tokio::test]
async fn webhook_callback_accepts_pushed_results_and_times_out() {
    let (base, _) = server().await;
    let exec = Arc::new(
        WebhookCallbackToolExecutor::new(client(), injector(no_secrets().await), false)
            .with_poll_interval(Duration::from_millis(20)),
    );
    let t = tool(
        "push",
        json!({"type": "webhook-callback", "endpoint": format!("{base}/wh-push")}),
    );
    let mut inv = invocation(t.clone(), "{}");
    inv.request_id = "req-push".into();
    let pusher = exec.clone();
    tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if pusher.deliver(
                "req-push",
                json!({"status": "error", "error": {"code": "auth_forbidden", "message": "no"}}),
            ) {
                return;
            }
        }
    });
    let err = exec.execute(inv).await.expect_err("pushed error");
    assert_eq!(err.code, ToolErrorCode::AuthForbidden);

    let mut inv = invocation(t, "{}");
    inv.timeout = Duration::from_millis(200);
    let err = exec.execute(inv).await.expect_err("timeout");
    assert_eq!(err.code, ToolErrorCode::Timeout);
    assert!(err.retryable);
    assert!(
        !exec.deliver("req-push", json!({})),
        "slot removed after the call"
    );
}

#[tokio::test]
async fn conformance_http_external_webhook() {
    let (base, _) = server().await;
    let http: Arc<dyn ToolExecutor> = Arc::new(http_executor().await);
    let ext: Arc<dyn ToolExecutor> = Arc::new(ExternalToolExecutor::new(
        client(),
        injector(no_secrets().await),
        false,
    ));
    let wh: Arc<dyn ToolExecutor> = Arc::new(WebhookCallbackToolExecutor::new(
        client(),
        injector(no_secrets().await),
        false,
    ));
    let suites = [
        (
            http,
            tool("web", json!({"endpoint": format!("{base}/echo")})),
        ),
        (
            ext,
            tool(
                "ext",
                json!({"type": "external", "endpoint": format!("{base}/contract")}),
            ),
        ),
        (
            wh,
            tool(
                "wh",
                json!({"type": "webhook-callback", "endpoint": format!("{base}/wh-sync")}),
            ),
        ),
    ];
    for (exec, t) in suites {
        let slow = tool("slow", json!({"endpoint": format!("{base}/slow")}));
        for case in [
            Case::success(t.clone()),
            Case::missing_endpoint(t.clone()),
            Case::unsupported_type(t.clone(), "rpc"),
            Case::unresolvable_secret(t.clone()),
            Case::unknown_version(t.clone()),
            Case::unknown_tool(t.clone()),
            Case::canceled(slow),
        ] {
            let response = run_case(exec.as_ref(), case).await.expect("conforms");
            assert!(response.request_id.starts_with("conformance-"));
        }
    }
}

#[tokio::test]
async fn secret_chain_store_then_env() {
    let chain = secrets(
        &[("api", &[("value", "from-store"), ("alt", "alt-key")])],
        &[
            ("ORLOJ_SECRET_API_OTHER", "from-env"),
            ("ONLY_ENV", "verbatim"),
            ("ORLOJ_SECRET_BLANK", ""),
        ],
    )
    .await;
    let resolve = |r: &'static str| {
        let chain = chain.clone();
        async move { chain.resolve("default", r).await }
    };
    assert_eq!(resolve("api").await.expect("store"), "from-store");
    assert_eq!(resolve("default/api:alt").await.expect("ns/key"), "alt-key");
    // A missing key falls through to the environment (normalised + prefixed).
    assert_eq!(resolve("api:other").await.expect("env"), "from-env");
    assert_eq!(resolve("ONLY_ENV").await.expect("verbatim"), "verbatim");
    // Another namespace's Secret is not visible under this name.
    assert!(matches!(
        resolve("other-ns/api").await,
        Err(orloj_runtime::tools::SecretError::NotFound(_))
    ));
    // An empty variable is an error, not a fall-through.
    assert!(matches!(
        resolve("blank").await,
        Err(orloj_runtime::tools::SecretError::Failed(_))
    ));
}

#[tokio::test]
async fn standard_runtime_routes_http_and_external_for_real() {
    use orloj_runtime::tools::{GovernedToolRuntime, ToolRuntimeConfig};
    let (base, _) = server().await;
    // The test server listens on loopback: the runtime must opt in.
    let rt = GovernedToolRuntime::standard(
        ToolRuntimeConfig {
            allow_private_endpoints: true,
            ..ToolRuntimeConfig::default()
        },
        no_secrets().await,
        Arc::new(orloj_core::SystemClock),
    )
    .expect("runtime");
    let web = tool("web", json!({"endpoint": format!("{base}/echo")}));
    assert_eq!(
        rt.execute(invocation(web, "hi")).await.expect("ok").result,
        "hi"
    );
    let ext = tool(
        "ext",
        json!({"type": "external", "endpoint": format!("{base}/contract")}),
    );
    let out = rt.execute(invocation(ext, "p")).await.expect("ok");
    assert!(out.result.starts_with("ext:p:external:"), "{}", out.result);
    let boxed = tool(
        "boxed",
        json!({"endpoint": format!("{base}/echo"), "runtime": {"isolation_mode": "sandboxed"}}),
    );
    let err = rt
        .execute(invocation(boxed, "x"))
        .await
        .expect_err("no backend");
    assert_eq!(err.code, ToolErrorCode::IsolationUnavailable);
    let flaky = tool(
        "flaky",
        json!({"endpoint": format!("{base}/status/503"),
               "runtime": {"retry": {"max_attempts": 2}}}),
    );
    let err = rt.execute(invocation(flaky, "x")).await.expect_err("5xx");
    assert!(
        err.message
            .starts_with("tool \"flaky\" failed after 2 attempt(s): "),
        "{}",
        err.message
    );
    assert_eq!(err.details["http_status"], "503");
}

#[tokio::test]
async fn standard_runtime_refuses_host_names_resolving_to_loopback() {
    use orloj_runtime::tools::{GovernedToolRuntime, ToolRuntimeConfig};
    let (base, _) = server().await;
    assert!(base.starts_with("http://localhost:"), "{base}");
    let rt = GovernedToolRuntime::standard(
        ToolRuntimeConfig::default(),
        no_secrets().await,
        Arc::new(orloj_core::SystemClock),
    )
    .expect("runtime");
    for spec in [
        json!({"endpoint": format!("{base}/echo")}),
        json!({"type": "external", "endpoint": format!("{base}/contract")}),
    ] {
        let err = rt
            .execute(invocation(tool("web", spec), "hi"))
            .await
            .expect_err("localhost resolves to loopback");
        assert_eq!(
            err.code,
            ToolErrorCode::RuntimePolicyInvalid,
            "{}",
            err.message
        );
        assert!(!err.retryable, "{}", err.message);
        assert!(
            err.message.contains("localhost resolves to")
                && err.message.contains("loopback")
                && err.message.contains("allow_private_endpoints"),
            "{}",
            err.message
        );
    }
}
