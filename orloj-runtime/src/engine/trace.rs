//! Turning agent step events (text) into `status.trace[]` entries (spec runtime §6.3).

use orloj_core::resources::TaskTraceEvent;

/// The trace type of one step event, decided by its text.
pub fn classify(event: &str) -> &'static str {
    let e = event.to_ascii_lowercase();
    if e.starts_with("inbox from=") {
        "agent_inbox"
    } else if e.contains("tool_permission_denied") || e.contains("status=denied") {
        "tool_permission_denied"
    } else if e.contains("token_budget_exceeded") {
        "token_budget_exceeded"
    } else if e.contains("tool_approval_pending") {
        "tool_approval_pending"
    } else if e.contains("contract_violation") {
        "agent_contract_violation"
    } else if e.contains("max steps reached") {
        "agent_worker_complete"
    } else if e.starts_with("worker stopped") {
        "agent_worker_stop"
    } else if e.starts_with("worker started") {
        "agent_worker_start"
    } else if e.contains("model_error=") {
        "model_error"
    } else if e.contains("model_output=") {
        "model_output"
    } else if e.contains("model success") {
        "model_call"
    } else if e.contains("tool=") && e.contains("status=error") {
        "tool_error"
    } else if e.contains("tool=") && e.contains("success") {
        "tool_call"
    } else if e.starts_with("step=") {
        "agent_step"
    } else {
        "agent_event"
    }
}

fn int(v: &str) -> i64 {
    v.parse().unwrap_or(0)
}

/// Builds a trace entry for an agent step event: type, step and the `key=value` fields it
/// carries (fields after `error=`/`model_output=` are free text and not parsed).
pub fn step_event(agent: &str, event: &str) -> TaskTraceEvent {
    let mut t = TaskTraceEvent {
        event_type: classify(event).into(),
        agent: agent.into(),
        message: event.to_string(),
        ..Default::default()
    };
    for token in event.split_whitespace() {
        let Some((k, v)) = token.split_once('=') else {
            continue;
        };
        match k {
            "error" | "model_output" | "model_error" | "content" => break,
            "step" => t.step = int(v),
            "tool" => t.tool = v.into(),
            "tool_code" => t.error_code = v.into(),
            "tool_reason" => t.error_reason = v.to_string(),
            "retryable" => t.retryable = v.parse().ok(),
            "tool_contract" => t.tool_contract_version = v.into(),
            "tool_request_id" => t.tool_request_id = v.to_string(),
            "tool_attempt" => t.tool_attempt = int(v),
            "tokens" => t.tokens = int(v),
            "input_tokens" => t.input_tokens = int(v),
            "output_tokens" => t.output_tokens = int(v),
            "usage_source" => t.token_usage_source = v.into(),
            "latency_ms" | "duration_ms" => t.latency_ms = int(v),
            "tool_auth_profile" => t.tool_auth_profile = v.to_string(),
            "tool_auth_secret" => t.tool_auth_secret_ref = v.to_string(),
            _ => {}
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields() {
        let t = step_event(
            "a",
            "step=2 tool=web tool_contract=v1 tool_request_id=ns/a/s002/web tool_attempt=1 duration_ms=7 success",
        );
        assert_eq!(t.event_type, "tool_call");
        assert_eq!((t.step, t.latency_ms, t.tool_attempt), (2, 7, 1));
        assert_eq!(t.tool, "web");
        let t = step_event(
            "a",
            "step=1 tool=x status=error tool_code=timeout tool_reason=r retryable=true error=a b=c",
        );
        assert_eq!(t.event_type, "tool_error");
        assert_eq!(t.retryable, Some(true));
        assert_eq!(t.error_code, "timeout");
        let t = step_event("a", "step=1 model success tokens=19 usage_source=estimated");
        assert_eq!((t.event_type.as_str(), t.tokens), ("model_call", 19));
        assert_eq!(classify("max steps reached"), "agent_worker_complete");
    }
}
