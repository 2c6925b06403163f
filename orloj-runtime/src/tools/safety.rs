//! Safety helpers shared by the executors (spec runtime §9.2, §9.3, §9.7): secret redaction,
//! the endpoint guard, HTTP status mapping and the contract-response unwrap.

use crate::outbound::OutboundGuard;
use orloj_core::tool::{ToolError, ToolErrorCode};
use serde_json::Value;
use std::net::IpAddr;
use std::sync::LazyLock;

/// Longest body/stderr excerpt put into an error message.
pub const MAX_EXCERPT_CHARS: usize = 400;

const REDACTED: &str = "[REDACTED]";

static REDACTIONS: LazyLock<Vec<(regex::Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r#"(?i)\bbearer\s+[^\s"',;]+"#, "Bearer [REDACTED]"),
        (
            r#"(?i)(authorization\s*:\s*)(?:basic\s+|bearer\s+)?[^\s"',;]+"#,
            "${1}[REDACTED]",
        ),
        (r#"(?i)(x-api-key\s*:\s*)[^\s"',;]+"#, "${1}[REDACTED]"),
        (
            r#"(?i)(api_key|secret|password|token)("?\s*[=:]\s*"?)[^\s"',;&]+"#,
            "${1}${2}[REDACTED]",
        ),
        (r"sk-[A-Za-z0-9_\-]{10,}", REDACTED),
    ]
    .into_iter()
    .filter_map(|(re, with)| regex::Regex::new(re).ok().map(|re| (re, with)))
    .collect()
});

/// Replaces credentials in `text` (`Bearer x`, `Authorization: x`, `X-Api-Key: x`,
/// `api_key=x`, `secret=x`, `password=x`, `token=x`, `sk-…`) with `[REDACTED]`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for (re, with) in REDACTIONS.iter() {
        out = re.replace_all(&out, *with).into_owned();
    }
    out
}

/// The redacted, trimmed first [`MAX_EXCERPT_CHARS`] characters of `text`.
pub fn excerpt(text: &str) -> String {
    let redacted = redact(text.trim());
    match redacted.char_indices().nth(MAX_EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}...", &redacted[..cut]),
        None => redacted,
    }
}

/// A [`ToolError`] with the code's defaults.
pub fn tool_error(code: ToolErrorCode, message: impl Into<String>) -> ToolError {
    ToolError::new(code, message)
}

/// How an operator allows tools to reach non-public addresses.
pub const TOOL_OPT_IN: &str =
    "start the tool runtime with allow_private_endpoints (ToolRuntimeConfig)";

/// The outbound guard of tool calls (see [`crate::outbound`]): public addresses only, or
/// every address but cloud metadata when the runtime allows private endpoints.
pub fn tool_guard(allow_private: bool) -> OutboundGuard {
    OutboundGuard::new(allow_private, TOOL_OPT_IN)
}

/// Checks a tool endpoint (spec §9.7): scheme http, https, grpc, grpcs or none; a literal IP
/// host that [`tool_guard`] refuses (loopback, link-local, metadata, unspecified, CGNAT,
/// private, reserved; only metadata when `allow_private`) is `runtime_policy_invalid`. Host
/// names are checked where they resolve, by the runtime's guarded client.
pub fn check_endpoint(endpoint: &str, allow_private: bool) -> Result<(), ToolError> {
    let endpoint = endpoint.trim();
    let invalid = |why: String| tool_error(ToolErrorCode::RuntimePolicyInvalid, why);
    if endpoint.is_empty() {
        return Err(invalid("tool endpoint is required".into()));
    }
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => (String::new(), endpoint),
    };
    if !matches!(scheme.as_str(), "" | "http" | "https" | "grpc" | "grpcs") {
        return Err(invalid(format!(
            "tool endpoint {endpoint:?}: scheme {scheme:?} is not allowed (http, https, grpc, grpcs)"
        )));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err(invalid(format!("tool endpoint {endpoint:?} has no host")));
    }
    let Ok(ip) = host.parse::<IpAddr>() else {
        return Ok(());
    };
    tool_guard(allow_private)
        .check_ip(host, ip)
        .map_err(|blocked| invalid(format!("tool endpoint {endpoint:?} is blocked: {blocked}")))
}

/// A [`ToolError`] for a request the outbound guard refused at connect time, if that is why
/// `err` failed.
pub fn blocked_error(tool: &str, err: &reqwest::Error) -> Option<ToolError> {
    crate::outbound::blocked_cause(err).map(|blocked| {
        tool_error(
            ToolErrorCode::RuntimePolicyInvalid,
            format!("tool {tool:?} endpoint is blocked: {blocked}"),
        )
    })
}

/// Maps an HTTP error status (≥ 400) to the taxonomy (spec §9.3): 401 → `auth_invalid`,
/// 403 → `auth_forbidden`, 429 and 5xx → retryable `execution_failed`, other 4xx →
/// non-retryable `execution_failed`. Details carry `http_status`; the message a redacted body
/// excerpt.
pub fn http_status_error(tool: &str, status: u16, body: &str) -> ToolError {
    let (code, retryable) = match status {
        401 => (ToolErrorCode::AuthInvalid, false),
        403 => (ToolErrorCode::AuthForbidden, false),
        429 | 500.. => (ToolErrorCode::ExecutionFailed, true),
        _ => (ToolErrorCode::ExecutionFailed, false),
    };
    let body = excerpt(body);
    let mut message = format!("tool {tool:?} endpoint returned HTTP {status}");
    if !body.is_empty() {
        message.push_str(": ");
        message.push_str(&body);
    }
    let mut err = tool_error(code, message);
    err.retryable = retryable;
    err.details.insert("http_status".into(), status.to_string());
    err
}

/// Maps a reqwest transport error: timeouts → `timeout`, the rest → retryable
/// `execution_failed` (message redacted).
pub fn transport_error(tool: &str, err: &reqwest::Error) -> ToolError {
    if let Some(blocked) = blocked_error(tool, err) {
        return blocked;
    }
    if err.is_timeout() {
        return tool_error(
            ToolErrorCode::Timeout,
            format!("tool {tool:?} call timed out"),
        );
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    tool_error(
        ToolErrorCode::ExecutionFailed,
        format!("tool {tool:?} request failed: {}", excerpt(&text)),
    )
}

/// Parses a contract response (spec §9.2): `Some(Ok(result))` for status `ok`, `Some(Err)` for
/// `error`/`denied`, `None` when `value` is not an object with a non-empty string `status`.
pub fn unwrap_contract_response(value: &Value) -> Option<Result<String, ToolError>> {
    let status = value.get("status")?.as_str()?.trim();
    if status.is_empty() {
        return None;
    }
    Some(match status {
        "ok" => Ok(match value.pointer("/output/result") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }),
        "error" | "denied" => Err(contract_error(status, value.get("error"))),
        other => Err(tool_error(
            ToolErrorCode::RuntimePolicyInvalid,
            format!("contract response has unknown status {other:?}"),
        )),
    })
}

fn contract_error(status: &str, error: Option<&Value>) -> ToolError {
    let denied = status == "denied";
    let fallback = if denied {
        ToolErrorCode::PermissionDenied
    } else {
        ToolErrorCode::ExecutionFailed
    };
    let text = |key: &str| {
        error
            .and_then(|e| e.get(key))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let code = text("code")
        .and_then(|c| serde_json::from_value::<ToolErrorCode>(Value::String(c)).ok())
        .unwrap_or(fallback);
    let mut err = tool_error(
        code,
        redact(&text("message").unwrap_or_else(|| format!("tool returned status {status}"))),
    );
    if let Some(reason) = text("reason") {
        err.reason = reason;
    }
    if let Some(retryable) = error
        .and_then(|e| e.get("retryable"))
        .and_then(Value::as_bool)
    {
        err.retryable = retryable;
    }
    if denied {
        err.retryable = false;
    }
    if let Some(Value::Object(details)) = error.and_then(|e| e.get("details")) {
        for (k, v) in details {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            err.details.insert(k.clone(), redact(&v));
        }
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_credentials() {
        let text = "Authorization: Bearer abc123 x-api-key: k1 password=hunter2 token\":\"t0k sk-abcdefghijklmnop";
        let out = redact(text);
        for secret in ["abc123", "k1", "hunter2", "t0k", "sk-abcdefghijklmnop"] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        assert!(out.contains("[REDACTED]"));
        assert_eq!(redact("plain text"), "plain text");
    }

    #[test]
    fn excerpt_is_bounded() {
        let long = "x".repeat(1000);
        assert_eq!(excerpt(&long).chars().count(), MAX_EXCERPT_CHARS + 3);
    }

    #[test]
    fn endpoint_guard() {
        for ok in [
            "https://api.example.com/x",
            "http://localhost:8080/",
            "grpc://10.0.0.1:9",
            "tools.internal:443",
        ] {
            let allow_private = ok.contains("10.0.0.1");
            assert!(check_endpoint(ok, allow_private).is_ok(), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:80/",
            "http://169.254.169.254/latest",
            "http://[::1]:9/",
            "http://0.0.0.0/",
            "http://192.168.1.2/",
            "http://100.64.0.7/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fd00:ec2::254]/",
            "ftp://example.com/",
            "",
        ] {
            let err = check_endpoint(bad, false).expect_err(bad);
            assert_eq!(err.code, ToolErrorCode::RuntimePolicyInvalid, "{bad}");
        }
    }

    #[test]
    fn status_mapping() {
        let cases = [
            (401, ToolErrorCode::AuthInvalid, false),
            (403, ToolErrorCode::AuthForbidden, false),
            (429, ToolErrorCode::ExecutionFailed, true),
            (503, ToolErrorCode::ExecutionFailed, true),
            (404, ToolErrorCode::ExecutionFailed, false),
        ];
        for (status, code, retryable) in cases {
            let err = http_status_error("t", status, "token=abc");
            assert_eq!((err.code, err.retryable), (code, retryable), "{status}");
            assert_eq!(err.details["http_status"], status.to_string());
            assert!(!err.message.contains("abc"));
        }
    }

    #[test]
    fn contract_unwrap() {
        assert_eq!(unwrap_contract_response(&json!({"result": 1})), None);
        assert_eq!(
            unwrap_contract_response(&json!({"status": "ok", "output": {"result": "hi"}})),
            Some(Ok("hi".into()))
        );
        let err = unwrap_contract_response(&json!({
            "status": "error",
            "error": {"code": "invalid_input", "reason": "bad_arg", "retryable": true,
                      "message": "nope", "details": {"field": "q"}}
        }))
        .expect("contract")
        .expect_err("error");
        assert_eq!(err.code, ToolErrorCode::InvalidInput);
        assert_eq!(err.reason, "bad_arg");
        assert!(err.retryable);
        assert_eq!(err.details["field"], "q");
        let denied = unwrap_contract_response(&json!({"status": "denied"}))
            .expect("contract")
            .expect_err("denied");
        assert_eq!(denied.code, ToolErrorCode::PermissionDenied);
        assert!(!denied.retryable);
    }
}
