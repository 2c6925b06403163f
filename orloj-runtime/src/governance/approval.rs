//! ToolApproval round trip (spec runtime §8.3): the engine creates a `Pending` approval when a
//! call needs one; the worker's sweep marks overdue approvals `Expired` and reads the verdict a
//! waiting task resumes (or fails) on.
//!
//! A task's approvals are those whose `task_ref` is `ns/task` or the bare task name. The task
//! waits while any is Pending; any Denied fails it (`tool approval denied`), else any Expired
//! (`tool approval expired`); when all are Approved it resumes, and each approval lets one call
//! of its agent and tool run in the resumed attempt.

use super::authorizer::{Grant, PendingApproval};
use crate::tools::governed::fnv32a;
use chrono::{DateTime, Utc};
use orloj_core::resources::{
    self, ToolApprovalSpec, ToolApprovalStatus, parse_duration, spec_of, status_of,
};
use orloj_core::task_queue::format_time;
use orloj_core::{Clock, ErrorKind, Kind, ListOptions, Object, Store};
use std::time::Duration;

/// Failure reason of a denied approval.
pub const APPROVAL_DENIED: &str = "tool approval denied";
/// Failure reason of an expired approval.
pub const APPROVAL_EXPIRED: &str = "tool approval expired";
/// Default approval lifetime.
pub const DEFAULT_TTL: &str = "10m";
const MAX_REASON: usize = 500;

/// Where a waiting task stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalState {
    /// No approval references the task.
    Missing,
    /// At least one approval is still open.
    Pending,
    /// Everything is approved: resume with these grants.
    Approved(Vec<Grant>),
    /// Fail with this reason.
    Rejected(&'static str),
}

fn refers_to(spec: &ToolApprovalSpec, namespace: &str, task: &str) -> bool {
    let r = spec.task_ref.trim();
    r == task || r == format!("{namespace}/{task}")
}

/// The approvals of `namespace/task`.
pub async fn approvals_of(
    store: &dyn Store,
    namespace: &str,
    task: &str,
) -> orloj_core::Result<Vec<Object>> {
    let list = store
        .list(
            Kind::ToolApproval,
            &ListOptions {
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
        )
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|o| spec_of::<ToolApprovalSpec>(o).is_ok_and(|s| refers_to(&s, namespace, task)))
        .collect())
}

fn phase_of(o: &Object) -> String {
    match o.phase() {
        "" => "Pending".to_string(),
        p => p.to_string(),
    }
}

/// Marks `approval` `Expired` when it is Pending past `status.expires_at`; returns the phase it
/// has afterwards. A lost compare-and-swap leaves it for the next sweep.
pub async fn expire_if_due(
    store: &dyn Store,
    now: DateTime<Utc>,
    approval: &Object,
) -> orloj_core::Result<String> {
    let phase = phase_of(approval);
    if phase != "Pending" {
        return Ok(phase);
    }
    let mut status = status_of::<ToolApprovalSpec>(approval).unwrap_or_default();
    let due = DateTime::parse_from_rfc3339(status.expires_at.trim())
        .is_ok_and(|t| t.with_timezone(&Utc) <= now);
    if !due {
        return Ok(phase);
    }
    status.phase = "Expired".into();
    let value = serde_json::to_value(&status)
        .map_err(|e| orloj_core::Error::internal(format!("serializing approval status: {e}")))?;
    match store
        .update_status(
            Kind::ToolApproval,
            approval.namespace(),
            approval.name(),
            Some(&approval.metadata.resource_version),
            value,
        )
        .await
    {
        Ok(_) => Ok("Expired".into()),
        Err(e) if e.kind() == ErrorKind::Conflict => Ok(phase),
        Err(e) => Err(e),
    }
}

/// Expires overdue approvals of the task and returns its state.
pub async fn state_of(
    store: &dyn Store,
    clock: &dyn Clock,
    namespace: &str,
    task: &str,
) -> orloj_core::Result<ApprovalState> {
    let approvals = approvals_of(store, namespace, task).await?;
    if approvals.is_empty() {
        return Ok(ApprovalState::Missing);
    }
    let now = clock.now();
    let mut phases = Vec::new();
    for a in &approvals {
        phases.push(expire_if_due(store, now, a).await?);
    }
    if phases.iter().any(|p| p == "Pending") {
        return Ok(ApprovalState::Pending);
    }
    if phases.iter().any(|p| p == "Denied") {
        return Ok(ApprovalState::Rejected(APPROVAL_DENIED));
    }
    if phases.iter().any(|p| p == "Expired") {
        return Ok(ApprovalState::Rejected(APPROVAL_EXPIRED));
    }
    Ok(ApprovalState::Approved(grants(&approvals)))
}

/// One grant per Approved approval.
pub fn grants(approvals: &[Object]) -> Vec<Grant> {
    approvals
        .iter()
        .filter(|o| phase_of(o) == "Approved")
        .filter_map(|o| spec_of::<ToolApprovalSpec>(o).ok())
        .map(|s| Grant {
            agent: s.agent,
            tool: s.tool,
        })
        .collect()
}

/// Creates the `Pending` ToolApproval for `pending` on task `namespace/task` (name
/// `ta-<8 hex>`, unique per task and request) with `status.expires_at = now + ttl`.
pub async fn create(
    store: &dyn Store,
    clock: &dyn Clock,
    namespace: &str,
    task: &str,
    pending: &PendingApproval,
) -> orloj_core::Result<Object> {
    let existing = approvals_of(store, namespace, task).await?.len();
    let key = format!(
        "{namespace}/{task}\0{}\0{}\0{existing}",
        pending.agent.to_lowercase(),
        pending.tool.to_lowercase()
    );
    let name = format!("ta-{:08x}", fnv32a(key.as_bytes()));
    let reason: String = pending.reason.chars().take(MAX_REASON).collect();
    let spec = ToolApprovalSpec {
        task_ref: format!("{namespace}/{task}"),
        tool: pending.tool.clone(),
        operation_class: pending.operation_class.clone(),
        agent: pending.agent.clone(),
        input: pending.input.clone(),
        reason,
        ttl: DEFAULT_TTL.into(),
    };
    let obj = resources::normalize(resources::object_from_spec(namespace, &name, &spec)?)?;
    let created = store.create(obj).await?;
    let ttl = parse_duration(DEFAULT_TTL).unwrap_or(Duration::from_secs(600));
    let status = ToolApprovalStatus {
        phase: "Pending".into(),
        expires_at: format_time(clock.now() + chrono::Duration::from_std(ttl).unwrap_or_default()),
        ..Default::default()
    };
    let value = serde_json::to_value(&status)
        .map_err(|e| orloj_core::Error::internal(format!("serializing approval status: {e}")))?;
    store
        .update_status(
            Kind::ToolApproval,
            namespace,
            &name,
            Some(&created.metadata.resource_version),
            value,
        )
        .await
}
