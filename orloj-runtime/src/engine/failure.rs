//! Task-level failure classification and retry delay (spec runtime §2.3).

use std::time::Duration;

const NON_RETRYABLE: &[&str] = &[
    "policy ",
    "disallows model",
    "blocks tool",
    "permission denied",
    "tool_reason=tool_permission_denied",
    "tool_reason=tool_runtime_policy_invalid",
    "tool_reason=tool_unsupported",
    "tool_reason=tool_isolation_unavailable",
    "tool_reason=tool_secret_resolution_failed",
    "token budget exceeded",
    "unsupported task phase",
    "invalid ",
];

const RETRYABLE: &[&str] = &[
    "timed out",
    "timeout",
    "temporary",
    "transient",
    "connection reset",
    "connection refused",
    "i/o timeout",
    "retryable",
];

/// Whether a failure reason is worth retrying, by the substring rules of §2.3 (first match
/// wins; unknown reasons are not retryable).
pub fn is_retryable(reason: &str) -> bool {
    let r = reason.to_lowercase();
    if r.contains("retryable=true") {
        return true;
    }
    if r.contains("retryable=false") {
        return false;
    }
    if NON_RETRYABLE.iter().any(|s| r.contains(s)) {
        return false;
    }
    RETRYABLE.iter().any(|s| r.contains(s))
}

/// Whether a failed agent message is worth another attempt (spec §5.8): configured
/// `non_retryable` substrings, `retryable=false`, policy/permission/budget failures and
/// unknown references are final; everything else (timeouts, model and tool backend failures)
/// is retried.
pub fn message_retryable(reason: &str, configured: &[String]) -> bool {
    let r = reason.to_lowercase();
    if configured
        .iter()
        .any(|s| !s.trim().is_empty() && r.contains(&s.trim().to_lowercase()))
    {
        return false;
    }
    if r.contains("retryable=true") {
        return true;
    }
    if r.contains("retryable=false") || r.contains("not found") || r.contains("invalid graph") {
        return false;
    }
    !NON_RETRYABLE.iter().any(|s| r.contains(s))
}

/// Delay before the next attempt of an agent message (spec §5.8): `backoff × 2^(attempts−1)`
/// (exponent capped at 20) capped at `max_backoff`, then jittered (`full`, `equal` or `none`)
/// by a deterministic unit derived from the idempotency key and the attempt.
pub fn message_retry_delay(
    backoff: Duration,
    max_backoff: Duration,
    jitter: &str,
    key: &str,
    attempts: i64,
) -> Duration {
    if backoff.is_zero() {
        return Duration::ZERO;
    }
    let exp = (attempts - 1).clamp(0, 20) as u32;
    let delay = backoff.saturating_mul(1u32 << exp).min(max_backoff);
    // FNV-1a 64 of "<lower key>|<attempts>", as a unit in [0, 1).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{}|{attempts}", key.to_lowercase()).bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let unit = (hash % 1_000_000) as f64 / 1_000_000.0;
    let jittered = match jitter {
        "none" => delay,
        "equal" => delay / 2 + (delay / 2).mul_f64(unit),
        _ => delay.mul_f64(unit),
    };
    if jittered.is_zero() && !delay.is_zero() {
        Duration::from_millis(1)
    } else {
        jittered
    }
}

/// `backoff × 2^(attempts−1)`, exponent capped at 10, result capped at 24h.
pub fn retry_delay(backoff: Duration, attempts: i64) -> Duration {
    if backoff.is_zero() {
        return Duration::ZERO;
    }
    let exp = (attempts - 1).clamp(0, 10) as u32;
    let cap = Duration::from_secs(24 * 3600);
    backoff.saturating_mul(1u32 << exp).min(cap)
}

/// What a failed attempt turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Retryable with attempts left: back to Pending after the delay.
    Retry(Duration),
    /// Retryable but out of attempts.
    DeadLetter,
    /// Not retryable.
    Failed,
}

/// Decides the outcome of a failure (order of checks of §2.3).
pub fn decide(reason: &str, attempts: i64, max_attempts: i64, backoff: Duration) -> FailureOutcome {
    let retryable = is_retryable(reason);
    if max_attempts > 0 && attempts >= max_attempts && retryable {
        FailureOutcome::DeadLetter
    } else if retryable && attempts < max_attempts {
        FailureOutcome::Retry(retry_delay(backoff, attempts))
    } else {
        FailureOutcome::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_delays_follow_the_spec_examples() {
        let ms = Duration::from_millis;
        assert_eq!(
            message_retry_delay(ms(50), ms(120), "none", "k", 3),
            ms(120)
        );
        let full = message_retry_delay(ms(100), ms(1000), "full", "k", 1);
        assert!(full > Duration::ZERO && full <= ms(100), "{full:?}");
        let equal = message_retry_delay(ms(100), ms(1000), "equal", "k", 1);
        assert!(equal >= ms(50) && equal <= ms(100), "{equal:?}");
        assert_eq!(
            message_retry_delay(Duration::ZERO, ms(10), "none", "k", 1),
            Duration::ZERO
        );
    }

    #[test]
    fn message_classification() {
        assert!(message_retryable(
            "agent \"a\" execution failed: timed out",
            &[]
        ));
        assert!(message_retryable("model backend failed with 502", &[]));
        assert!(!message_retryable(
            "model backend failed with 502",
            &["502".into()]
        ));
        assert!(!message_retryable(
            "tool_reason=tool_permission_denied",
            &[]
        ));
        assert!(!message_retryable("agent \"x\" not found", &[]));
        assert!(!message_retryable("token budget exceeded after agent", &[]));
    }

    #[test]
    fn classification() {
        assert!(is_retryable("agent a timed out after 1ms"));
        assert!(!is_retryable("agentsystem \"x\" not found"));
        assert!(!is_retryable("tool permission denied: agent=a"));
        assert!(is_retryable("x retryable=true permission denied"));
        assert!(!is_retryable("invalid agent timeout \"x\" timeout"));
    }

    #[test]
    fn delays_and_outcomes() {
        let b = Duration::from_secs(2);
        assert_eq!(retry_delay(b, 1), Duration::from_secs(2));
        assert_eq!(retry_delay(b, 3), Duration::from_secs(8));
        assert_eq!(retry_delay(b, 40), Duration::from_secs(2048));
        assert_eq!(
            retry_delay(Duration::from_secs(3600), 11),
            Duration::from_secs(86400)
        );
        assert_eq!(decide("timed out", 1, 1, b), FailureOutcome::DeadLetter);
        assert_eq!(decide("timed out", 1, 3, b), FailureOutcome::Retry(b));
        assert_eq!(decide("not found", 1, 3, b), FailureOutcome::Failed);
    }
}
