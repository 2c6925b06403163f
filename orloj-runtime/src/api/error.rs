//! JSON error responses and the `ErrorKind` → HTTP status mapping (the only place it happens).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use orloj_core::{Error, ErrorKind};
use serde_json::json;

/// An error as the API answers it: a status plus `{"error": <code>, "message": <text>}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Short machine-readable code, e.g. `conflict`.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// 400 `invalid`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The HTTP status for an error kind.
    pub fn status_for(kind: ErrorKind) -> StatusCode {
        match kind {
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Gone => StatusCode::GONE,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let message = match err.kind() {
            ErrorKind::Unavailable if !err.message().starts_with("store unavailable") => {
                format!("store unavailable: {}", err.message())
            }
            _ => err.message().to_string(),
        };
        Self::new(
            Self::status_for(err.kind()),
            err.kind().to_string(),
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = %self.code, message = %self.message, "request failed");
        }
        let mut response = (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // Rate-limit buckets refill continuously; one second is always enough for a token.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_kind() {
        let cases = [
            (ErrorKind::Invalid, 400),
            (ErrorKind::NotFound, 404),
            (ErrorKind::Conflict, 409),
            (ErrorKind::Unauthorized, 401),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Gone, 410),
            (ErrorKind::Timeout, 504),
            (ErrorKind::Internal, 500),
        ];
        for (kind, code) in cases {
            let e = ApiError::from(Error::new(kind, "boom"));
            assert_eq!(e.status.as_u16(), code, "{kind}");
            assert_eq!(e.code, kind.to_string());
        }
        let e = ApiError::from(Error::unavailable("db down"));
        assert_eq!(e.message, "store unavailable: db down");
    }

    #[test]
    fn only_rate_limit_answers_carry_retry_after() {
        let limited = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down")
            .into_response();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            limited.headers().get(axum::http::header::RETRY_AFTER),
            Some(&axum::http::HeaderValue::from_static("1"))
        );
        let conflict = ApiError::conflict("stale").into_response();
        assert!(
            conflict
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .is_none()
        );
    }
}
