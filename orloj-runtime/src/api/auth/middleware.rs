//! The auth tower layer: global limit, principal resolution (bearer, then session cookie),
//! and the role check of spec §6.1.

use super::{
    AuthMethod, AuthMode, AuthState, ConnInfo, Principal, client_ip, crypto, forbidden, too_many,
    unauthorized,
};
use crate::api::{ApiError, ApiState};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orloj_core::auth::{Access, required_access};
use std::net::SocketAddr;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Session cookie names (spec §6.3): `__Host-` prefixed over HTTPS.
pub(crate) const COOKIE: &str = "orloj_session";
pub(crate) const HOST_COOKIE: &str = "__Host-orloj_session";

/// The middleware `router` installs when the state has auth.
pub(crate) async fn authorize(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(auth) = state.auth.clone() else {
        return next.run(request).await;
    };
    let now = state.clock.now();
    if let Some(limiter) = &auth.global_limiter
        && !limiter.check(now)
    {
        return too_many("rate limit exceeded").into_response();
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let proxies = &auth.config.trusted_proxies;
    let https = request.uri().scheme_str() == Some("https")
        || (client_ip::peer_trusted(peer, proxies)
            && request
                .headers()
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https")));
    let conn = ConnInfo {
        client_ip: client_ip::client_ip(peer, request.headers(), proxies),
        https,
    };
    request.extensions_mut().insert(conn);

    let access = required_access(request.method().as_str(), request.uri().path());
    let enforce = match auth.config.mode {
        AuthMode::Native => true,
        AuthMode::Off => !auth.config.env_tokens.is_empty(),
    };
    let resolved = resolve(&state, &auth, request.headers()).await;
    let required = match access {
        Access::Role(role) if enforce => role,
        // Public routes and open mode: use a principal when one is presented, never refuse.
        _ => {
            if let Ok(Some(p)) = resolved {
                request.extensions_mut().insert(p);
            }
            return next.run(request).await;
        }
    };
    let principal = match resolved {
        Ok(Some(p)) => p,
        Ok(None) => {
            if auth.config.mode == AuthMode::Native {
                match auth.has_admin().await {
                    Ok(false) => return unauthorized("admin setup required").into_response(),
                    Err(e) => return e.into_response(),
                    Ok(true) => {}
                }
            }
            return unauthorized("missing bearer token").into_response();
        }
        Err(e) => return e.into_response(),
    };
    if !principal.role.satisfies(required) {
        return forbidden().into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The caller's principal: a bearer token when `Authorization` is present (env tokens first,
/// then store tokens), else a native session cookie; `Ok(None)` when neither is presented.
async fn resolve(
    state: &ApiState,
    auth: &AuthState,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("invalid token"))?;
        let hash = crypto::token_hash(token);
        // Compare against every env token so timing does not reveal which one matched.
        let mut found = None;
        for t in &auth.config.env_tokens {
            if crypto::ct_eq(&t.token_hash, &hash) && found.is_none() {
                found = Some(t);
            }
        }
        if let Some(t) = found {
            return Ok(Some(Principal {
                name: t.name.clone(),
                username: None,
                role: t.role,
                method: AuthMethod::Bearer,
                session_hash: None,
            }));
        }
        return match auth.store.get_token_by_hash(&hash).await? {
            Some(t) => Ok(Some(Principal {
                name: t.name,
                username: None,
                role: t.role,
                method: AuthMethod::Bearer,
                session_hash: None,
            })),
            None => Err(unauthorized("invalid token")),
        };
    }
    if auth.config.mode != AuthMode::Native {
        return Ok(None);
    }
    let Some(token) = session_cookie(headers) else {
        return Ok(None);
    };
    let hash = crypto::token_hash(&token);
    let Some(session) = auth.store.get_session(&hash).await? else {
        return Err(unauthorized("invalid or expired session"));
    };
    let now = state.clock.now();
    if session.expires_at <= now {
        auth.store.delete_session(&hash).await?;
        return Err(unauthorized("invalid or expired session"));
    }
    let ttl = chrono::Duration::from_std(auth.config.session_ttl)
        .unwrap_or_else(|_| chrono::Duration::hours(24));
    auth.store.touch_session(&hash, now, now + ttl).await?;
    let Some(user) = auth.store.get_user(&session.username).await? else {
        auth.store.delete_session(&hash).await?;
        return Err(unauthorized("invalid or expired session"));
    };
    Ok(Some(Principal {
        name: user.username.clone(),
        username: Some(user.username),
        role: user.role,
        method: AuthMethod::Session,
        session_hash: Some(hash),
    }))
}

/// The session token from the `Cookie` header (either cookie name).
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == HOST_COOKIE || *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a new session (spec §6.3 attributes).
pub(crate) fn session_set_cookie(token: &str, ttl: Duration, https: bool) -> HeaderValue {
    let (name, secure) = if https {
        (HOST_COOKIE, "; Secure")
    } else {
        (COOKIE, "")
    };
    let value = format!(
        "{name}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        ttl.as_secs()
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Set-Cookie` values clearing both cookie names.
pub(crate) fn clear_cookies() -> [HeaderValue; 2] {
    [
        HeaderValue::from_static("orloj_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
        HeaderValue::from_static(
            "__Host-orloj_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0; Secure",
        ),
    ]
}

/// The CORS layer of spec §3.1, or None when no origin is allowed (same-origin only).
pub(crate) fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .map(|o| o.trim().trim_end_matches('/'))
        .filter(|o| !o.is_empty())
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::OPTIONS,
                Method::HEAD,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                HeaderName::from_static("x-request-id"),
            ])
            .allow_credentials(true)
            .max_age(Duration::from_secs(86400)),
    )
}
