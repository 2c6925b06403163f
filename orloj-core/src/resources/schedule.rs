//! TaskSchedule (spec §2.14), TaskWebhook (§2.15) and Worker (§2.16).

use super::ResourceSpec;
use super::status::{TaskScheduleStatus, TaskWebhookStatus, WorkerStatus};
use super::task::{TaskSpec, normalize_task_spec};
use super::util::{check_enum, dedupe, default_int, default_str, is_false, non_negative, trim};
use crate::error::{Error, Result};
use crate::kind::Kind;
use crate::object::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `TaskSchedule.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskScheduleSpec {
    /// A `mode: template` Task (`name` or `ns/name`); exclusive with `task_template`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task_ref: String,
    /// Inline task spec; exclusive with `task_ref`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_template: Option<TaskSpec>,
    /// 5-field cron expression (required).
    #[serde(default)]
    pub schedule: String,
    /// IANA time zone of the cron expression (default `UTC`).
    #[serde(default)]
    pub time_zone: String,
    /// Pause triggering.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
    /// How late a missed slot may still start, in seconds (default 300).
    #[serde(default)]
    pub starting_deadline_seconds: i64,
    /// Only `forbid` (no overlapping runs).
    #[serde(default)]
    pub concurrency_policy: String,
    /// Succeeded runs kept (default 10).
    #[serde(default)]
    pub successful_history_limit: i64,
    /// Failed runs kept (default 3).
    #[serde(default)]
    pub failed_history_limit: i64,
}

impl ResourceSpec for TaskScheduleSpec {
    const KIND: Kind = Kind::TaskSchedule;
    type Status = TaskScheduleStatus;

    fn normalize(&mut self, _meta: &ObjectMeta) -> Result<()> {
        trim(&mut self.task_ref);
        match (&self.task_ref.is_empty(), &mut self.task_template) {
            (true, None) => {
                return Err(Error::invalid(
                    "one of spec.task_ref or spec.task_template is required",
                ));
            }
            (false, Some(_)) => {
                return Err(Error::invalid(
                    "spec.task_ref and spec.task_template are mutually exclusive",
                ));
            }
            (_, Some(t)) => normalize_task_spec("spec.task_template", t, true)?,
            (false, None) => {}
        }
        trim(&mut self.schedule);
        check_cron("spec.schedule", &self.schedule)?;
        default_str(&mut self.time_zone, "UTC");
        check_time_zone("spec.time_zone", &self.time_zone)?;
        default_int(
            "spec.starting_deadline_seconds",
            &mut self.starting_deadline_seconds,
            300,
        )?;
        check_enum(
            "spec.concurrency_policy",
            &mut self.concurrency_policy,
            "forbid",
            &["forbid"],
        )?;
        default_int(
            "spec.successful_history_limit",
            &mut self.successful_history_limit,
            10,
        )?;
        default_int(
            "spec.failed_history_limit",
            &mut self.failed_history_limit,
            3,
        )
    }
}

/// Validates a standard 5-field cron expression (minute hour day-of-month month day-of-week).
pub fn check_cron(field: &str, expr: &str) -> Result<()> {
    if expr.is_empty() {
        return Err(Error::invalid(format!("{field} is required")));
    }
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(Error::invalid(format!(
            "{field}: {expr:?} must have 5 fields (minute hour day-of-month month day-of-week), got {fields}"
        )));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(expr)
        .map(|_| ())
        .map_err(|e| Error::invalid(format!("{field}: invalid cron expression {expr:?}: {e}")))
}

/// IANA areas accepted as the first segment of `Area/Location` names (plus legacy country
/// aliases still shipped in tzdata's `backward` file).
const TZ_AREAS: &[&str] = &[
    "Africa",
    "America",
    "Antarctica",
    "Arctic",
    "Asia",
    "Atlantic",
    "Australia",
    "Europe",
    "Indian",
    "Pacific",
    "Etc",
    "US",
    "Canada",
    "Brazil",
    "Mexico",
    "Chile",
];

/// A cheap syntactic IANA time-zone check: `UTC`, `GMT`, or `Area/Location[/Sub]` with a known
/// area. It catches typos like `America` or `EST-5` without shipping the tz database.
pub fn check_time_zone(field: &str, tz: &str) -> Result<()> {
    if matches!(tz, "UTC" | "GMT" | "Local" | "Zulu" | "Universal") {
        return Ok(());
    }
    let mut parts = tz.split('/');
    let area = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let ok = TZ_AREAS.contains(&area)
        && !rest.is_empty()
        && rest.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{field}: {tz:?} is not an IANA time zone name (e.g. UTC, Europe/Berlin)"
        )))
    }
}

/// `TaskWebhook.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskWebhookSpec {
    /// A `mode: template` Task; exactly one of this and `task_template`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task_ref: String,
    /// Inline task spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_template: Option<TaskSpec>,
    /// Deliveries are refused with 409 while set.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
    /// Signature verification.
    #[serde(default)]
    pub auth: WebhookAuth,
    /// Event de-duplication.
    #[serde(default)]
    pub idempotency: WebhookIdempotency,
    /// How the payload reaches the task input.
    #[serde(default)]
    pub payload: WebhookPayload,
}

/// `TaskWebhook.spec.auth`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookAuth {
    /// `generic` (default), `github`, `hmac` or `shared_token`.
    #[serde(default)]
    pub profile: String,
    /// Secret whose first key (sorted) is the HMAC key or token (required).
    #[serde(default)]
    pub secret_ref: String,
    /// Header carrying the signature.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature_header: String,
    /// Prefix before the signature value (e.g. `sha256=`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature_prefix: String,
    /// Header carrying the timestamp.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timestamp_header: String,
    /// Accepted clock skew in seconds.
    #[serde(default, skip_serializing_if = "super::util::is_zero")]
    pub max_skew_seconds: i64,
    /// hmac: `sha256` (default), `sha1` or `sha512`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub algorithm: String,
    /// hmac: `body` (default), `timestamp_dot_body` or `prefix_timestamp_body`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub payload_format: String,
    /// hmac: prefix for `prefix_timestamp_body`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub payload_prefix: String,
    /// hmac: separator between timestamp and body (default `.`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub payload_separator: String,
    /// hmac: `hex` (default) or `base64`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature_encoding: String,
    /// hmac: `plain` (default) or `kv_pairs` (e.g. `t=..,v1=..`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub header_format: String,
    /// hmac `kv_pairs`: key of the signature.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature_key: String,
    /// hmac `kv_pairs`: key of the timestamp.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timestamp_key: String,
}

/// `TaskWebhook.spec.idempotency`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookIdempotency {
    /// Header carrying the event id.
    #[serde(default)]
    pub event_id_header: String,
    /// Dot path into the JSON body carrying the event id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event_id_from_body: String,
    /// How long event ids are remembered, in seconds.
    #[serde(default)]
    pub dedupe_window_seconds: i64,
}

/// `TaskWebhook.spec.payload`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPayload {
    /// Only `raw`.
    #[serde(default)]
    pub mode: String,
    /// Task input key receiving the body (default `webhook_payload`).
    #[serde(default)]
    pub input_key: String,
}

impl ResourceSpec for TaskWebhookSpec {
    const KIND: Kind = Kind::TaskWebhook;
    type Status = TaskWebhookStatus;

    fn normalize(&mut self, _meta: &ObjectMeta) -> Result<()> {
        trim(&mut self.task_ref);
        match (self.task_ref.is_empty(), &mut self.task_template) {
            (true, None) => {
                return Err(Error::invalid(
                    "exactly one of spec.task_ref or spec.task_template is required",
                ));
            }
            (false, Some(_)) => {
                return Err(Error::invalid(
                    "exactly one of spec.task_ref or spec.task_template is allowed, got both",
                ));
            }
            (_, Some(t)) => normalize_task_spec("spec.task_template", t, true)?,
            (false, None) => {}
        }
        let a = &mut self.auth;
        check_enum(
            "spec.auth.profile",
            &mut a.profile,
            "generic",
            &["generic", "github", "hmac", "shared_token"],
        )?;
        trim(&mut a.secret_ref);
        if a.secret_ref.is_empty() {
            return Err(Error::invalid("spec.auth.secret_ref is required"));
        }
        trim(&mut a.signature_header);
        trim(&mut a.timestamp_header);
        non_negative("spec.auth.max_skew_seconds", a.max_skew_seconds)?;
        let mut event_header_default = "X-Event-Id";
        let mut dedupe_default = 86_400;
        match a.profile.as_str() {
            "generic" => {
                default_str(&mut a.signature_header, "X-Signature");
                default_str(&mut a.signature_prefix, "sha256=");
                default_str(&mut a.timestamp_header, "X-Timestamp");
                default_int("spec.auth.max_skew_seconds", &mut a.max_skew_seconds, 300)?;
            }
            "github" => {
                default_str(&mut a.signature_header, "X-Hub-Signature-256");
                default_str(&mut a.signature_prefix, "sha256=");
                event_header_default = "X-GitHub-Delivery";
                dedupe_default = 259_200;
            }
            "hmac" => {
                if a.signature_header.is_empty() {
                    return Err(Error::invalid(
                        "spec.auth.signature_header is required when spec.auth.profile is hmac",
                    ));
                }
                check_enum(
                    "spec.auth.algorithm",
                    &mut a.algorithm,
                    "sha256",
                    &["sha256", "sha1", "sha512"],
                )?;
                check_enum(
                    "spec.auth.payload_format",
                    &mut a.payload_format,
                    "body",
                    &["body", "timestamp_dot_body", "prefix_timestamp_body"],
                )?;
                if a.payload_format != "body" {
                    if a.payload_separator.is_empty() {
                        a.payload_separator = ".".into();
                    }
                    if a.timestamp_header.is_empty() && a.timestamp_key.is_empty() {
                        return Err(Error::invalid(format!(
                            "spec.auth.timestamp_header (or timestamp_key) is required when spec.auth.payload_format is {}",
                            a.payload_format
                        )));
                    }
                }
                check_enum(
                    "spec.auth.signature_encoding",
                    &mut a.signature_encoding,
                    "hex",
                    &["hex", "base64"],
                )?;
                check_enum(
                    "spec.auth.header_format",
                    &mut a.header_format,
                    "plain",
                    &["plain", "kv_pairs"],
                )?;
                if a.header_format == "kv_pairs" && a.signature_key.trim().is_empty() {
                    return Err(Error::invalid(
                        "spec.auth.signature_key is required when spec.auth.header_format is kv_pairs",
                    ));
                }
            }
            _ => {
                if a.signature_header.is_empty() {
                    return Err(Error::invalid(
                        "spec.auth.signature_header is required when spec.auth.profile is shared_token",
                    ));
                }
            }
        }
        let idem = &mut self.idempotency;
        default_str(&mut idem.event_id_header, event_header_default);
        trim(&mut idem.event_id_from_body);
        default_int(
            "spec.idempotency.dedupe_window_seconds",
            &mut idem.dedupe_window_seconds,
            dedupe_default,
        )?;
        check_enum("spec.payload.mode", &mut self.payload.mode, "raw", &["raw"])?;
        default_str(&mut self.payload.input_key, "webhook_payload");
        Ok(())
    }
}

/// `Worker.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerSpec {
    /// Region used for task matching.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// What the worker can run.
    #[serde(default)]
    pub capabilities: WorkerCapabilities,
    /// Parallel tasks (default 1).
    #[serde(default)]
    pub max_concurrent_tasks: i64,
}

/// `Worker.spec.capabilities`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerCapabilities {
    /// Has a GPU.
    #[serde(default)]
    pub gpu: bool,
    /// Models the worker can serve; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supported_models: Vec<String>,
}

impl ResourceSpec for WorkerSpec {
    const KIND: Kind = Kind::Worker;
    type Status = WorkerStatus;

    fn normalize(&mut self, _meta: &ObjectMeta) -> Result<()> {
        trim(&mut self.region);
        dedupe(&mut self.capabilities.supported_models);
        default_int(
            "spec.max_concurrent_tasks",
            &mut self.max_concurrent_tasks,
            1,
        )
    }
}
