//! Native auth on the in-process router: the role of every served route, first-user setup,
//! sessions, users, API tokens, rate limits, off mode and CORS.

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use chrono::TimeZone;
use http_body_util::BodyExt;
use orloj_core::auth::{Access, AuthStore, Role, required_access};
use orloj_core::{Kind, ManualClock};
use orloj_runtime::api::auth::{AuthConfig, EnvToken, PasswordParams, RateLimit, token_hash};
use orloj_runtime::api::{ApiState, router};
use orloj_store::{MemoryAuthStore, MemoryStore};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const SETUP_TOKEN: &str = "setup-token-0123456789";
const ADMIN_PW: &str = "correct-horse-battery";

struct Api {
    app: Router,
    clock: Arc<ManualClock>,
    auth: Arc<MemoryAuthStore>,
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    fn error(&self, status: u16) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        let v = self.json();
        assert!(v["error"].is_string(), "{v}");
        v["message"].as_str().expect("message").to_string()
    }

    /// The `name=value` of the session cookie set by this response.
    fn session_cookie(&self) -> String {
        let set = self
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().expect("ascii").to_string())
            .find(|v| v.starts_with("orloj_session=") || v.starts_with("__Host-orloj_session="))
            .unwrap_or_else(|| panic!("no session cookie in {:?}", self.headers));
        set.split(';').next().expect("pair").to_string()
    }
}

fn base_config() -> AuthConfig {
    AuthConfig {
        setup_token: Some(SecretString::from(SETUP_TOKEN)),
        password_params: PasswordParams::insecure_fast(),
        global_rate_limit: None,
        ..AuthConfig::native()
    }
}

impl Api {
    fn new(config: AuthConfig) -> Self {
        let clock = Arc::new(ManualClock::new(
            chrono::Utc
                .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
                .single()
                .expect("valid time"),
        ));
        let store = Arc::new(MemoryStore::new(clock.clone()));
        let auth = Arc::new(MemoryAuthStore::new());
        let state = ApiState::new(store, clock.clone()).with_auth(config, auth.clone());
        Self {
            app: router(state),
            clock,
            auth,
        }
    }

    async fn send(
        &self,
        method: &str,
        uri: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        peer: &str,
    ) -> Resp {
        let mut builder = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let body = match body {
            Some(v) => {
                builder = builder.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let mut request = builder.body(body).expect("request");
        let addr: SocketAddr = peer.parse().expect("peer address");
        request.extensions_mut().insert(ConnectInfo(addr));
        let response =
            tokio::time::timeout(Duration::from_secs(10), self.app.clone().oneshot(request))
                .await
                .expect("response in time")
                .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        // Watches stream forever: read their bodies only when they are not event streams.
        let sse = headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let text = if sse {
            String::new()
        } else {
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Resp {
            status,
            headers,
            text,
        }
    }

    async fn call(&self, method: &str, uri: &str, body: Option<&Value>, auth: &str) -> Resp {
        let bearer = format!("Bearer {auth}");
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else if auth.contains("orloj_session=") {
            vec![("cookie", auth)]
        } else {
            vec![("authorization", bearer.as_str())]
        };
        self.send(method, uri, body, &headers, "192.0.2.10:5000")
            .await
    }

    async fn setup_admin(&self) -> String {
        let r = self
            .call(
                "POST",
                "/v1/auth/setup",
                Some(
                    &json!({"username": "admin", "password": ADMIN_PW, "setup_token": SETUP_TOKEN}),
                ),
                "",
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.session_cookie()
    }

    async fn login(&self, username: &str, password: &str) -> Resp {
        self.call(
            "POST",
            "/v1/auth/login",
            Some(&json!({"username": username, "password": password})),
            "",
        )
        .await
    }
}

fn with_role_tokens(mut config: AuthConfig) -> AuthConfig {
    let (tokens, skipped) = EnvToken::parse_list(
        "root:t-admin:admin,w:t-writer:writer,r:t-reader:reader,c:t-controller:controller",
    )
    .expect("tokens");
    assert!(skipped.is_empty());
    config.env_tokens = tokens;
    config
}

fn token_for(role: Role) -> &'static str {
    match role {
        Role::Admin => "t-admin",
        Role::Writer => "t-writer",
        Role::Reader => "t-reader",
        Role::Controller => "t-controller",
    }
}

mod common;
use common::manifest;

#[tokio::test]
async fn every_served_route_requires_its_role() {
    let api = Api::new(with_role_tokens(base_config()));
    api.setup_admin().await;
    let doc = api
        .call("GET", "/openapi.json", None, "t-admin")
        .await
        .json();
    let paths = doc["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, item) in paths {
        for method in item.as_object().expect("item").keys() {
            let method = method.to_uppercase();
            let uri = path
                .replace("{name}", "probe")
                .replace("{username}", "probe");
            let body = matches!(method.as_str(), "POST" | "PUT").then(|| json!({}));
            let required = match required_access(&method, &uri) {
                Access::Public => {
                    assert!(
                        uri == "/healthz" || uri.starts_with("/v1/auth/"),
                        "{uri} public"
                    );
                    let r = api.call(&method, &uri, body.as_ref(), "").await;
                    // The admin-only auth endpoints check the principal themselves (tested below).
                    if ["/healthz", "/v1/auth/config", "/v1/auth/me"].contains(&uri.as_str()) {
                        assert_ne!(r.status, 401, "{method} {uri} is public: {}", r.text);
                    }
                    continue;
                }
                Access::Role(role) => role,
            };
            let r = api.call(&method, &uri, body.as_ref(), "").await;
            assert_eq!(r.error(401), "missing bearer token", "{method} {uri}");
            let r = api.call(&method, &uri, body.as_ref(), "bogus-token").await;
            assert_eq!(r.error(401), "invalid token", "{method} {uri}");
            for &role in Role::ALL {
                let r = api
                    .call(&method, &uri, body.as_ref(), token_for(role))
                    .await;
                if role.satisfies(required) {
                    assert!(
                        r.status != 401 && r.status != 403,
                        "{method} {uri} as {role}: {} {}",
                        r.status,
                        r.text
                    );
                } else {
                    assert_eq!(r.error(403), "forbidden", "{method} {uri} as {role}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} protected operations");
    // The spec §6.1 rows, spelled out.
    for (method, uri, role) in [
        ("GET", "/v1/agents", Role::Reader),
        ("POST", "/v1/agents", Role::Writer),
        ("PUT", "/v1/tasks/t/status", Role::Controller),
        ("PUT", "/v1/agents/a/status", Role::Controller),
        ("POST", "/v1/mcp-servers", Role::Admin),
        ("DELETE", "/v1/mcp-servers/m", Role::Admin),
        ("GET", "/v1/tokens", Role::Admin),
        ("POST", "/v1/tokens", Role::Admin),
    ] {
        assert_eq!(
            required_access(method, uri),
            Access::Role(role),
            "{method} {uri}"
        );
    }
    let r = api
        .call("PUT", "/v1/agents/x/status", Some(&json!({})), "t-writer")
        .await;
    r.error(403);
    let r = api
        .call(
            "POST",
            "/v1/agents",
            Some(&manifest(Kind::Agent, "a1")),
            "t-controller",
        )
        .await;
    r.error(403);
}

#[tokio::test]
async fn setup_creates_the_first_admin_once() {
    let api = Api::new(base_config());
    let c = api.call("GET", "/v1/auth/config", None, "").await.json();
    assert_eq!(c["mode"], "native");
    assert_eq!(c["setup_required"], true);
    assert_eq!(c["setup_token_required"], true);
    assert_eq!(c["login_methods"], json!(["password"]));
    let r = api.call("GET", "/v1/agents", None, "").await;
    assert_eq!(r.error(401), "admin setup required");

    let attempt = |token: Option<&str>, password: &str| {
        let mut body = json!({"username": "admin", "password": password});
        if let Some(t) = token {
            body["setup_token"] = json!(t);
        }
        body
    };
    let r = api
        .call(
            "POST",
            "/v1/auth/setup",
            Some(&attempt(Some("wrong"), ADMIN_PW)),
            "",
        )
        .await;
    assert_eq!(r.error(403), "invalid setup token");
    let r = api
        .call("POST", "/v1/auth/setup", Some(&attempt(None, ADMIN_PW)), "")
        .await;
    r.error(403);
    let r = api
        .call(
            "POST",
            "/v1/auth/setup",
            Some(&attempt(Some(SETUP_TOKEN), "short")),
            "",
        )
        .await;
    assert!(r.error(400).contains("at least 12"));
    assert!(!api.auth.has_admin().await.expect("has_admin"));

    let r = api
        .call(
            "POST",
            "/v1/auth/setup",
            Some(&attempt(Some(SETUP_TOKEN), ADMIN_PW)),
            "",
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json(),
        json!({"authenticated": true, "username": "admin", "method": "session"})
    );
    let set = r
        .headers
        .get("set-cookie")
        .expect("cookie")
        .to_str()
        .expect("ascii")
        .to_string();
    for attr in ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=86400"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP cookie must not be Secure: {set}"
    );
    let cookie = r.session_cookie();
    let user = api
        .auth
        .get_user("admin")
        .await
        .expect("get")
        .expect("admin");
    assert_eq!(user.role, Role::Admin);
    assert!(
        user.password_hash.starts_with("$argon2id$v=19$"),
        "{}",
        user.password_hash
    );
    assert!(!user.password_hash.contains(ADMIN_PW));

    let r = api.call("GET", "/v1/agents", None, &cookie).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = api
        .call(
            "POST",
            "/v1/auth/setup",
            Some(&attempt(Some(SETUP_TOKEN), ADMIN_PW)),
            "",
        )
        .await;
    r.error(409);
    let c = api.call("GET", "/v1/auth/config", None, "").await.json();
    assert_eq!(c["setup_required"], false);
}

#[tokio::test]
async fn login_me_change_password_and_logout() {
    let api = Api::new(base_config());
    let r = api.login("admin", ADMIN_PW).await;
    r.error(409);
    api.setup_admin().await;
    assert_eq!(
        api.login("admin", "not-the-password").await.error(401),
        "invalid credentials"
    );
    assert_eq!(
        api.login("nobody", ADMIN_PW).await.error(401),
        "invalid credentials"
    );
    let r = api.login("admin", ADMIN_PW).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let cookie = r.session_cookie();
    let me = api.call("GET", "/v1/auth/me", None, &cookie).await.json();
    assert_eq!(me["authenticated"], true);
    assert_eq!(me["method"], "session");
    assert_eq!(me["username"], "admin");
    assert_eq!(me["role"], "admin");
    let anon = api.call("GET", "/v1/auth/me", None, "").await.json();
    assert_eq!(anon, json!({"authenticated": false, "method": "none"}));

    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let r = api
        .call(
            "POST",
            "/v1/auth/change-password",
            Some(&change("wrong-password!", "new-password-123")),
            &cookie,
        )
        .await;
    r.error(401);
    let r = api
        .call(
            "POST",
            "/v1/auth/change-password",
            Some(&change(ADMIN_PW, "short")),
            &cookie,
        )
        .await;
    r.error(400);
    let r = api
        .call(
            "POST",
            "/v1/auth/change-password",
            Some(&change(ADMIN_PW, "new-password-123")),
            &cookie,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "password changed");
    // Every session of the user is revoked.
    api.call("GET", "/v1/agents", None, &cookie)
        .await
        .error(401);
    api.login("admin", ADMIN_PW).await.error(401);
    let cookie = api
        .login("admin", "new-password-123")
        .await
        .session_cookie();
    assert_eq!(
        api.call("GET", "/v1/agents", None, &cookie).await.status,
        200
    );

    let r = api.call("POST", "/v1/auth/logout", None, &cookie).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ok"}));
    let cleared: Vec<_> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_string())
        .collect();
    assert_eq!(cleared.len(), 2, "{cleared:?}");
    assert!(cleared.iter().all(|c| c.contains("Max-Age=0")));
    api.call("GET", "/v1/agents", None, &cookie)
        .await
        .error(401);
}

#[tokio::test]
async fn sessions_slide_and_expire() {
    let mut config = base_config();
    config.session_ttl = Duration::from_secs(3600);
    let api = Api::new(config);
    let cookie = api.setup_admin().await;
    for _ in 0..3 {
        api.clock.advance(Duration::from_secs(50 * 60));
        let r = api.call("GET", "/v1/agents", None, &cookie).await;
        assert_eq!(
            r.status, 200,
            "used within the TTL, the session slides: {}",
            r.text
        );
    }
    api.clock.advance(Duration::from_secs(3601));
    let r = api.call("GET", "/v1/agents", None, &cookie).await;
    assert_eq!(r.error(401), "invalid or expired session");
}

#[tokio::test]
async fn users_and_the_last_admin() {
    let api = Api::new(base_config());
    let cookie = api.setup_admin().await;
    api.call("DELETE", "/v1/auth/users/admin", None, &cookie)
        .await
        .error(409);
    let r = api
        .call(
            "POST",
            "/v1/auth/users",
            Some(&json!({"username": "wendy", "role": "writer"})),
            &cookie,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let created = r.json();
    assert_eq!(created["role"], "writer");
    let password = created["password"]
        .as_str()
        .expect("generated password")
        .to_string();
    assert!(password.len() >= 24);
    api.call(
        "POST",
        "/v1/auth/users",
        Some(&json!({"username": "wendy"})),
        &cookie,
    )
    .await
    .error(409);
    api.call(
        "POST",
        "/v1/auth/users",
        Some(&json!({"username": "x", "role": "root"})),
        &cookie,
    )
    .await
    .error(400);

    let wendy = api.login("wendy", &password).await.session_cookie();
    let r = api
        .call(
            "POST",
            "/v1/agents",
            Some(&manifest(Kind::Agent, "a1")),
            &wendy,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    api.call("GET", "/v1/auth/users", None, &wendy)
        .await
        .error(403);
    api.call("GET", "/v1/auth/users", None, "").await.error(401);
    let list = api
        .call("GET", "/v1/auth/users", None, &cookie)
        .await
        .json();
    let names: Vec<_> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|u| u["username"].clone())
        .collect();
    assert_eq!(names, [json!("admin"), json!("wendy")]);
    assert!(list["items"][0].get("password_hash").is_none());

    // Admin reset revokes the user's sessions.
    let reset = json!({"username": "wendy", "new_password": "reset-password-1"});
    api.call(
        "POST",
        "/v1/auth/admin/reset-password",
        Some(&reset),
        &wendy,
    )
    .await
    .error(403);
    let r = api
        .call(
            "POST",
            "/v1/auth/admin/reset-password",
            Some(&reset),
            &cookie,
        )
        .await;
    assert_eq!(r.json()["status"], "password reset");
    api.call("GET", "/v1/agents", None, &wendy).await.error(401);
    let wendy = api
        .login("wendy", "reset-password-1")
        .await
        .session_cookie();

    let r = api
        .call("DELETE", "/v1/auth/users/wendy", None, &cookie)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    api.call("GET", "/v1/agents", None, &wendy).await.error(401);
    api.call("DELETE", "/v1/auth/users/wendy", None, &cookie)
        .await
        .error(404);
}

#[tokio::test]
async fn api_tokens_are_shown_once_and_stored_as_hashes() {
    let api = Api::new(base_config());
    let cookie = api.setup_admin().await;
    let r = api
        .call(
            "POST",
            "/v1/tokens",
            Some(&json!({"name": "ci", "role": "reader"})),
            &cookie,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let created = r.json();
    let token = created["token"].as_str().expect("token").to_string();
    assert_eq!(created["name"], "ci");
    assert_eq!(created["role"], "reader");
    let stored = api.auth.list_tokens().await.expect("list");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].token_hash, token_hash(&token));
    assert_ne!(stored[0].token_hash, token);
    let list = api.call("GET", "/v1/tokens", None, &cookie).await;
    assert!(
        !list.text.contains(&token),
        "token listed again: {}",
        list.text
    );
    assert_eq!(list.json()["items"][0]["name"], "ci");
    api.call(
        "POST",
        "/v1/tokens",
        Some(&json!({"name": "ci", "role": "reader"})),
        &cookie,
    )
    .await
    .error(409);
    api.call("POST", "/v1/tokens", Some(&json!({"name": "a/b"})), &cookie)
        .await
        .error(400);

    assert_eq!(
        api.call("GET", "/v1/agents", None, &token).await.status,
        200
    );
    api.call(
        "POST",
        "/v1/agents",
        Some(&manifest(Kind::Agent, "a1")),
        &token,
    )
    .await
    .error(403);
    api.call("GET", "/v1/tokens", None, &token).await.error(403);
    let me = api.call("GET", "/v1/auth/me", None, &token).await.json();
    assert_eq!(
        (me["method"].clone(), me["name"].clone(), me["role"].clone()),
        (json!("bearer"), json!("ci"), json!("reader"))
    );

    let r = api.call("DELETE", "/v1/tokens/ci", None, &cookie).await;
    assert_eq!(r.json(), json!({"status": "token deleted"}));
    api.call("GET", "/v1/agents", None, &token).await.error(401);

    // cli-token: credentials in, a token with the user's role out.
    let r = api
        .call(
            "POST",
            "/v1/auth/cli-token",
            Some(&json!({"username": "admin", "password": ADMIN_PW})),
            "",
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let cli = r.json();
    assert!(
        cli["name"]
            .as_str()
            .expect("name")
            .starts_with("cli-admin-")
    );
    assert_eq!(cli["role"], "admin");
    let t = cli["token"].as_str().expect("token");
    assert_eq!(api.call("GET", "/v1/tokens", None, t).await.status, 200);
    api.call(
        "POST",
        "/v1/auth/cli-token",
        Some(&json!({"username": "admin", "password": "nope-nope-nope"})),
        "",
    )
    .await
    .error(401);
}

#[tokio::test]
async fn login_brute_force_is_throttled_per_client_ip() {
    let mut config = base_config();
    config.trusted_proxies = vec!["10.0.0.0/8".parse().expect("cidr")];
    let api = Api::new(config);
    api.setup_admin().await; // one attempt from 192.0.2.10 already spent
    let body = json!({"username": "admin", "password": "guess-guess-guess"});
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let r = api
            .send(
                "POST",
                "/v1/auth/login",
                Some(&body),
                &[],
                "198.51.100.7:4000",
            )
            .await;
        statuses.push(r.status.as_u16());
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    let r = api
        .send(
            "POST",
            "/v1/auth/login",
            Some(&body),
            &[],
            "198.51.100.7:4000",
        )
        .await;
    assert_eq!(r.error(429), "too many authentication attempts");
    // The right password does not help while throttled; another client is not affected.
    let good = json!({"username": "admin", "password": ADMIN_PW});
    api.send(
        "POST",
        "/v1/auth/login",
        Some(&good),
        &[],
        "198.51.100.7:4000",
    )
    .await
    .error(429);
    let r = api
        .send(
            "POST",
            "/v1/auth/login",
            Some(&good),
            &[],
            "198.51.100.8:4000",
        )
        .await;
    assert_eq!(r.status, 200);
    // Behind a trusted proxy the forwarded client is throttled, not the proxy.
    let xff = [("x-forwarded-for", "198.51.100.7")];
    api.send("POST", "/v1/auth/login", Some(&good), &xff, "10.1.2.3:80")
        .await
        .error(429);
    let spoof = [("x-forwarded-for", "203.0.113.99")];
    api.send(
        "POST",
        "/v1/auth/login",
        Some(&good),
        &spoof,
        "198.51.100.7:4000",
    )
    .await
    .error(429);
    // The bucket refills over time (10/min).
    api.clock.advance(Duration::from_secs(60));
    let r = api
        .send(
            "POST",
            "/v1/auth/login",
            Some(&good),
            &[],
            "198.51.100.7:4000",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn global_limit_cors_and_https_cookie() {
    let mut config = base_config();
    config.global_rate_limit = Some(RateLimit {
        per_second: 1.0,
        burst: 3,
    });
    config.cors_allowed_origins = vec!["https://console.example".into()];
    config.trusted_proxies = vec!["10.0.0.1/32".parse().expect("cidr")];
    let api = Api::new(config);
    let r = api
        .send(
            "OPTIONS",
            "/v1/agents",
            None,
            &[
                ("origin", "https://console.example"),
                ("access-control-request-method", "POST"),
            ],
            "192.0.2.1:1",
        )
        .await;
    assert!(r.status.is_success(), "{}", r.status);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://console.example"
    );
    let r = api
        .send(
            "GET",
            "/healthz",
            None,
            &[("origin", "https://evil.example")],
            "192.0.2.1:1",
        )
        .await;
    assert!(r.headers.get("access-control-allow-origin").is_none());
    let body = json!({"username": "admin", "password": ADMIN_PW, "setup_token": SETUP_TOKEN});
    let r = api
        .send(
            "POST",
            "/v1/auth/setup",
            Some(&body),
            &[("x-forwarded-proto", "https")],
            "10.0.0.1:1",
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let set = r.headers["set-cookie"].to_str().expect("ascii");
    assert!(
        set.starts_with("__Host-orloj_session=") && set.contains("Secure"),
        "{set}"
    );
    // CORS answers preflights before the limiter; burst 3 = healthz, setup and this one.
    assert_eq!(
        api.send("GET", "/healthz", None, &[], "192.0.2.1:1")
            .await
            .status,
        200
    );
    let r = api.send("GET", "/healthz", None, &[], "192.0.2.1:1").await;
    assert_eq!(r.error(429), "rate limit exceeded");
    api.clock.advance(Duration::from_secs(1));
    assert_eq!(
        api.send("GET", "/healthz", None, &[], "192.0.2.1:1")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn off_mode_is_open_unless_env_tokens_exist() {
    let api = Api::new(AuthConfig {
        global_rate_limit: None,
        ..AuthConfig::default()
    });
    assert_eq!(api.call("GET", "/v1/agents", None, "").await.status, 200);
    let c = api.call("GET", "/v1/auth/config", None, "").await.json();
    assert_eq!(
        (c["mode"].clone(), c["setup_required"].clone()),
        (json!("off"), json!(false))
    );
    api.call(
        "POST",
        "/v1/auth/setup",
        Some(&json!({"username": "a", "password": ADMIN_PW})),
        "",
    )
    .await
    .error(400);

    let mut config = AuthConfig {
        global_rate_limit: None,
        ..AuthConfig::default()
    };
    config.env_tokens = vec![EnvToken::admin("env-admin-token")];
    let api = Api::new(config);
    assert_eq!(
        api.call("GET", "/v1/agents", None, "").await.error(401),
        "missing bearer token"
    );
    assert_eq!(
        api.call("GET", "/v1/agents", None, "env-admin-token")
            .await
            .status,
        200
    );
    assert_eq!(api.call("GET", "/healthz", None, "").await.status, 200);
}

#[test]
fn env_token_lists() {
    let (tokens, skipped) =
        EnvToken::parse_list("ci:abc:writer, def:controller, bare, x:y:z:w, n:t:root")
            .expect("parse");
    let summary: Vec<_> = tokens.iter().map(|t| (t.name.as_str(), t.role)).collect();
    assert_eq!(
        summary,
        [
            ("ci", Role::Writer),
            ("env-token-2", Role::Controller),
            ("env-token-3", Role::Reader)
        ]
    );
    assert_eq!(tokens[0].token_hash, token_hash("abc"));
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(EnvToken::parse_list("a:b:root").is_err());
    assert!(EnvToken::parse_list("").expect("empty").0.is_empty());
}
