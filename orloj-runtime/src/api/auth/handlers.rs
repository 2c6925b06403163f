//! The auth endpoints (spec §6.2, §6.3) and their OpenAPI entries.

use super::middleware::{clear_cookies, session_set_cookie};
use super::{AuthMode, AuthState, ConnInfo, Principal, crypto, forbidden, too_many, unauthorized};
use crate::api::{ApiError, ApiResult, ApiState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Extensions, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use orloj_core::auth::{ApiToken, Role, Session, User};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;

/// The auth routes, merged into the API router.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/auth/config", get(config))
        .route("/v1/auth/setup", post(setup))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/me", get(me))
        .route("/v1/auth/change-password", post(change_password))
        .route("/v1/auth/admin/reset-password", post(reset_password))
        .route("/v1/auth/cli-token", post(cli_token))
        .route("/v1/auth/users", get(list_users).post(create_user))
        .route("/v1/auth/users/{username}", delete(delete_user))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{name}", delete(delete_token))
}

/// OpenAPI path items of the auth routes.
pub(crate) fn openapi_paths() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (
            "/v1/auth/config",
            "get",
            "Auth mode and whether setup is required",
        ),
        (
            "/v1/auth/setup",
            "post",
            "Create the first admin (setup token)",
        ),
        (
            "/v1/auth/login",
            "post",
            "Log in with username and password (session cookie)",
        ),
        ("/v1/auth/logout", "post", "End the session"),
        ("/v1/auth/me", "get", "Who is calling"),
        (
            "/v1/auth/change-password",
            "post",
            "Change the caller's password",
        ),
        (
            "/v1/auth/admin/reset-password",
            "post",
            "Reset a user's password (admin)",
        ),
        (
            "/v1/auth/cli-token",
            "post",
            "Issue an API token for the CLI from credentials",
        ),
        ("/v1/auth/users", "get", "List users (admin)"),
        (
            "/v1/auth/users",
            "post",
            "Create a user with a generated password (admin)",
        ),
        (
            "/v1/auth/users/{username}",
            "delete",
            "Delete a user (admin)",
        ),
        ("/v1/tokens", "get", "List API tokens (admin)"),
        (
            "/v1/tokens",
            "post",
            "Create an API token, shown once (admin)",
        ),
        ("/v1/tokens/{name}", "delete", "Delete an API token (admin)"),
    ]
}

fn auth_of(state: &ApiState) -> ApiResult<Arc<AuthState>> {
    state
        .auth
        .clone()
        .ok_or_else(|| ApiError::invalid("auth is not configured on this server"))
}

fn native(auth: &AuthState) -> ApiResult<()> {
    if auth.config.mode != AuthMode::Native {
        return Err(ApiError::invalid(
            "native auth is not enabled (--auth-mode native)",
        ));
    }
    Ok(())
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))
}

fn conn(ext: &Extensions) -> ConnInfo {
    ext.get::<ConnInfo>().copied().unwrap_or(ConnInfo {
        client_ip: None,
        https: false,
    })
}

fn rate_limit(state: &ApiState, auth: &AuthState, ext: &Extensions) -> ApiResult<()> {
    if let Some(limiter) = &auth.auth_limiter
        && !limiter.check(&conn(ext).client_ip, state.clock.now())
    {
        return Err(too_many("too many authentication attempts"));
    }
    Ok(())
}

fn require_admin(ext: &Extensions) -> ApiResult<Principal> {
    let p = ext
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| unauthorized("missing bearer token"))?;
    if p.role != Role::Admin {
        return Err(forbidden());
    }
    Ok(p)
}

fn check_password(password: &str) -> ApiResult<()> {
    if password.chars().count() < crypto::MIN_PASSWORD_LEN {
        return Err(ApiError::invalid(format!(
            "password must be at least {} characters",
            crypto::MIN_PASSWORD_LEN
        )));
    }
    Ok(())
}

fn check_name(what: &str, name: &str) -> ApiResult<()> {
    let bad = name.is_empty()
        || name.len() > 253
        || name.contains('/')
        || name.to_ascii_lowercase().contains("%2f")
        || name.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(ApiError::invalid(format!(
            "{what} {name:?} must be 1-253 characters without '/', spaces or control characters"
        )));
    }
    Ok(())
}

async fn hash(auth: &AuthState, password: String) -> ApiResult<String> {
    let params = auth.config.password_params;
    tokio::task::spawn_blocking(move || crypto::hash_password(&password, params))
        .await
        .map_err(|e| ApiError::from(orloj_core::Error::internal(format!("hashing task: {e}"))))?
        .map_err(ApiError::from)
}

/// Verifies credentials; unknown users cost a hash too so timing does not reveal them.
async fn verify(auth: &AuthState, username: &str, password: String) -> ApiResult<User> {
    let user = auth.store.get_user(username).await?;
    let encoded = user.as_ref().map(|u| u.password_hash.clone());
    let params = auth.config.password_params;
    let ok = tokio::task::spawn_blocking(move || match encoded {
        Some(h) => crypto::verify_password(&password, &h),
        None => {
            let _ = crypto::hash_password(&password, params);
            false
        }
    })
    .await
    .unwrap_or(false);
    match user {
        Some(u) if ok => Ok(u),
        _ => Err(unauthorized("invalid credentials")),
    }
}

async fn start_session(
    state: &ApiState,
    auth: &AuthState,
    ext: &Extensions,
    username: &str,
    status: StatusCode,
) -> ApiResult<Response> {
    let token = crypto::random_token()?;
    let now = state.clock.now();
    let ttl = chrono::Duration::from_std(auth.config.session_ttl)
        .map_err(|_| ApiError::invalid("session TTL is too large"))?;
    auth.store
        .create_session(Session {
            token_hash: crypto::token_hash(&token),
            username: username.to_string(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + ttl,
        })
        .await?;
    let cookie = session_set_cookie(&token, auth.config.session_ttl, conn(ext).https);
    let mut response = (
        status,
        Json(json!({"authenticated": true, "username": username, "method": "session"})),
    )
        .into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn config(State(state): State<ApiState>) -> ApiResult<Json<Value>> {
    let Some(auth) = state.auth.clone() else {
        return Ok(Json(json!({
            "mode": "off", "setup_required": false, "setup_token_required": false,
            "login_methods": []
        })));
    };
    let native = auth.config.mode == AuthMode::Native;
    let setup_required = native && !auth.has_admin().await?;
    Ok(Json(json!({
        "mode": auth.config.mode.as_str(),
        "setup_required": setup_required,
        "setup_token_required": native && auth.config.setup_token.is_some(),
        "login_methods": if native { json!(["password"]) } else { json!([]) },
    })))
}

#[derive(Deserialize)]
struct Credentials {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    setup_token: Option<String>,
}

async fn setup(
    State(state): State<ApiState>,
    ext: Extensions,
    bytes: Bytes,
) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    native(&auth)?;
    rate_limit(&state, &auth, &ext)?;
    let req: Credentials = body(&bytes)?;
    if auth.has_admin().await? {
        return Err(ApiError::conflict(
            "setup is already complete: an admin account exists",
        ));
    }
    if let Some(expected) = &auth.config.setup_token {
        let given = req.setup_token.as_deref().unwrap_or("");
        if !crypto::ct_eq(
            &crypto::token_hash(given),
            &crypto::token_hash(expected.expose_secret()),
        ) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "invalid setup token",
            ));
        }
    }
    let username = req.username.trim().to_string();
    check_name("username", &username)?;
    check_password(&req.password)?;
    let now = state.clock.now();
    let password_hash = hash(&auth, req.password).await?;
    auth.store
        .create_first_admin(User {
            username: username.clone(),
            role: Role::Admin,
            password_hash,
            created_at: now,
            updated_at: now,
        })
        .await?;
    start_session(&state, &auth, &ext, &username, StatusCode::CREATED).await
}

async fn login(
    State(state): State<ApiState>,
    ext: Extensions,
    bytes: Bytes,
) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    native(&auth)?;
    rate_limit(&state, &auth, &ext)?;
    let req: Credentials = body(&bytes)?;
    if !auth.has_admin().await? {
        return Err(ApiError::conflict("admin setup required"));
    }
    let user = verify(&auth, req.username.trim(), req.password).await?;
    start_session(&state, &auth, &ext, &user.username, StatusCode::OK).await
}

async fn logout(State(state): State<ApiState>, ext: Extensions) -> ApiResult<Response> {
    if let (Some(auth), Some(p)) = (state.auth.clone(), ext.get::<Principal>())
        && let Some(hash) = &p.session_hash
    {
        auth.store.delete_session(hash).await?;
    }
    let mut response = Json(json!({"status": "ok"})).into_response();
    for c in clear_cookies() {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(response)
}

async fn me(ext: Extensions) -> Json<Value> {
    match ext.get::<Principal>() {
        Some(p) => {
            let method = match p.method {
                super::AuthMethod::Session => "session",
                super::AuthMethod::Bearer => "bearer",
            };
            let mut v = json!({
                "authenticated": true, "method": method, "name": p.name, "role": p.role.as_str()
            });
            if let Some(u) = &p.username {
                v["username"] = json!(u);
            }
            Json(v)
        }
        None => Json(json!({"authenticated": false, "method": "none"})),
    }
}

#[derive(Deserialize)]
struct ChangePassword {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

async fn change_password(
    State(state): State<ApiState>,
    ext: Extensions,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let auth = auth_of(&state)?;
    native(&auth)?;
    rate_limit(&state, &auth, &ext)?;
    let username = ext
        .get::<Principal>()
        .and_then(|p| p.username.clone())
        .ok_or_else(|| unauthorized("change-password needs a login session"))?;
    let req: ChangePassword = body(&bytes)?;
    verify(&auth, &username, req.current_password).await?;
    set_password(&state, &auth, &username, req.new_password).await?;
    Ok(Json(json!({"status": "password changed"})))
}

#[derive(Deserialize)]
struct ResetPassword {
    #[serde(default)]
    username: String,
    #[serde(default)]
    new_password: String,
}

async fn reset_password(
    State(state): State<ApiState>,
    ext: Extensions,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let auth = auth_of(&state)?;
    native(&auth)?;
    rate_limit(&state, &auth, &ext)?;
    require_admin(&ext)?;
    let req: ResetPassword = body(&bytes)?;
    if req.username.trim().is_empty() {
        return Err(ApiError::invalid("username is required"));
    }
    set_password(&state, &auth, req.username.trim(), req.new_password).await?;
    Ok(Json(json!({"status": "password reset"})))
}

/// Checks and stores a new password for `username` and ends its sessions.
async fn set_password(
    state: &ApiState,
    auth: &AuthState,
    username: &str,
    new_password: String,
) -> ApiResult<()> {
    check_password(&new_password)?;
    let password_hash = hash(auth, new_password).await?;
    auth.store
        .update_password(username, &password_hash, state.clock.now())
        .await?;
    auth.store.delete_user_sessions(username).await?;
    Ok(())
}

async fn cli_token(
    State(state): State<ApiState>,
    ext: Extensions,
    bytes: Bytes,
) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    native(&auth)?;
    rate_limit(&state, &auth, &ext)?;
    let req: Credentials = body(&bytes)?;
    let user = verify(&auth, req.username.trim(), req.password).await?;
    let now = state.clock.now();
    let name = format!("cli-{}-{}", user.username, now.timestamp_millis());
    let token = crypto::random_token()?;
    auth.store
        .create_token(ApiToken {
            name: name.clone(),
            token_hash: crypto::token_hash(&token),
            role: user.role,
            created_at: now,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "name": name, "role": user.role.as_str(), "token": token,
            "username": user.username, "created_at": ts(now)
        })),
    )
        .into_response())
}

fn user_json(u: &User) -> Value {
    json!({
        "username": u.username, "role": u.role.as_str(),
        "created_at": ts(u.created_at), "updated_at": ts(u.updated_at)
    })
}

async fn list_users(State(state): State<ApiState>, ext: Extensions) -> ApiResult<Json<Value>> {
    let auth = auth_of(&state)?;
    native(&auth)?;
    require_admin(&ext)?;
    let users = auth.store.list_users().await?;
    Ok(Json(
        json!({"items": users.iter().map(user_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
struct CreateUser {
    #[serde(default)]
    username: String,
    #[serde(default)]
    role: Option<String>,
}

async fn create_user(
    State(state): State<ApiState>,
    ext: Extensions,
    bytes: Bytes,
) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    native(&auth)?;
    require_admin(&ext)?;
    let req: CreateUser = body(&bytes)?;
    let username = req.username.trim().to_string();
    check_name("username", &username)?;
    let role: Role = req.role.as_deref().unwrap_or("reader").parse()?;
    use base64::Engine;
    let password =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crypto::random_bytes(24)?);
    let now = state.clock.now();
    let user = User {
        username,
        role,
        password_hash: hash(&auth, password.clone()).await?,
        created_at: now,
        updated_at: now,
    };
    auth.store.create_user(user.clone()).await?;
    let mut v = user_json(&user);
    v["password"] = json!(password);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn delete_user(
    State(state): State<ApiState>,
    ext: Extensions,
    Path(username): Path<String>,
) -> ApiResult<Json<Value>> {
    let auth = auth_of(&state)?;
    native(&auth)?;
    require_admin(&ext)?;
    auth.store.delete_user(&username).await?;
    Ok(Json(json!({"status": "user deleted"})))
}

async fn list_tokens(State(state): State<ApiState>) -> ApiResult<Json<Value>> {
    let auth = auth_of(&state)?;
    let tokens = auth.store.list_tokens().await?;
    let items: Vec<Value> = tokens
        .iter()
        .map(|t| json!({"name": t.name, "role": t.role.as_str(), "created_at": ts(t.created_at)}))
        .collect();
    Ok(Json(json!({"items": items})))
}

#[derive(Deserialize)]
struct CreateToken {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: Option<String>,
}

async fn create_token(State(state): State<ApiState>, bytes: Bytes) -> ApiResult<Response> {
    let auth = auth_of(&state)?;
    let req: CreateToken = body(&bytes)?;
    let name = req.name.trim().to_string();
    check_name("token name", &name)?;
    let role: Role = req.role.as_deref().unwrap_or("reader").parse()?;
    let token = crypto::random_token()?;
    let now = state.clock.now();
    auth.store
        .create_token(ApiToken {
            name: name.clone(),
            token_hash: crypto::token_hash(&token),
            role,
            created_at: now,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": name, "role": role.as_str(), "created_at": ts(now), "token": token})),
    )
        .into_response())
}

async fn delete_token(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let auth = auth_of(&state)?;
    auth.store.delete_token(&name).await?;
    Ok(Json(json!({"status": "token deleted"})))
}
