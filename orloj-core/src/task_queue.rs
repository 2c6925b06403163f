//! Task claiming rules of spec §5.3 as pure functions over a Task [`Object`], shared by every
//! [`Store`](crate::Store) implementation so they agree on what is claimable.

use crate::object::Object;
use crate::resources::TaskStatus;
use crate::store::ClaimRequest;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// At most this many history entries are kept on a task.
pub const MAX_HISTORY: usize = 200;

fn status_str<'a>(task: &'a Object, field: &str) -> &'a str {
    task.status.get(field).and_then(Value::as_str).unwrap_or("")
}

fn spec_str<'a>(task: &'a Object, path: &[&str]) -> &'a str {
    let mut v = &task.spec;
    for p in path {
        match v.get(p) {
            Some(next) => v = next,
            None => return "",
        }
    }
    v.as_str().unwrap_or("").trim()
}

/// Formats a time the way status fields hold it.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Whether the task is a template (never claimed).
pub fn is_template(task: &Object) -> bool {
    spec_str(task, &["mode"]).eq_ignore_ascii_case("template")
}

/// Whether a worker may claim this task now: not a template, and either pending and due, or
/// running with no holder or an expired lease.
pub fn is_claimable(task: &Object, now: DateTime<Utc>) -> bool {
    claimable_at(claimable_from(task), now)
}

/// [`is_claimable`] of `task` with the status `status` (see [`claimable_from_status`]).
pub fn is_claimable_status(task: &Object, status: &TaskStatus, now: DateTime<Utc>) -> bool {
    claimable_at(claimable_from_status(task, status), now)
}

/// Whether a task claimable from `from` (as [`claimable_from`] tells) is claimable at `now`.
pub fn claimable_at(from: Option<Option<DateTime<Utc>>>, now: DateTime<Utc>) -> bool {
    from.is_some_and(|from| from.is_none_or(|t| t <= now))
}

/// When the task becomes claimable, as [`is_claimable`] decides: `None` when it never is in
/// its current state, `Some(None)` when it is now, `Some(Some(t))` from `t` on. Stores cache
/// this per write so a claim scan does not re-read every task's JSON.
pub fn claimable_from(task: &Object) -> Option<Option<DateTime<Utc>>> {
    claimable_by_fields(task, |field| status_str(task, field))
}

/// [`claimable_from`] of `task` with the status `status` (a task whose status is held typed;
/// `task.status` is not read).
pub fn claimable_from_status(task: &Object, status: &TaskStatus) -> Option<Option<DateTime<Utc>>> {
    claimable_by_fields(task, |field| match field {
        "phase" => &status.phase,
        "claimedBy" => &status.claimed_by,
        "nextAttemptAt" => &status.next_attempt_at,
        "leaseUntil" => &status.lease_until,
        _ => "",
    })
}

/// [`claimable_from`], reading the status fields `phase`, `claimedBy`, `nextAttemptAt` and
/// `leaseUntil` through `field`.
fn claimable_by_fields<'a>(
    task: &Object,
    field: impl Fn(&'static str) -> &'a str,
) -> Option<Option<DateTime<Utc>>> {
    if is_template(task) {
        return None;
    }
    let time = |name| {
        DateTime::parse_from_rfc3339(field(name))
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let phase = field("phase").to_ascii_lowercase();
    match phase.as_str() {
        "" | "pending" => Some(time("nextAttemptAt")),
        "running" if field("claimedBy").is_empty() => Some(None),
        "running" => Some(time("leaseUntil")),
        _ => None,
    }
}

/// Whether the task's `requirements` and `assignedWorker` fit the requesting worker.
pub fn matches_worker(task: &Object, request: &ClaimRequest) -> bool {
    if let Some(ns) = &request.namespace
        && task.namespace() != ns
    {
        return false;
    }
    let region = spec_str(task, &["requirements", "region"]);
    if !region.is_empty() && !region.eq_ignore_ascii_case(request.region.trim()) {
        return false;
    }
    let needs_gpu = task
        .spec
        .get("requirements")
        .and_then(|r| r.get("gpu"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if needs_gpu && !request.gpu {
        return false;
    }
    let model = spec_str(task, &["requirements", "model"]);
    if !model.is_empty()
        && !request.supported_models.is_empty()
        && !request
            .supported_models
            .iter()
            .any(|m| m.trim().eq_ignore_ascii_case(model))
    {
        return false;
    }
    let assigned = status_str(task, "assignedWorker");
    let phase = task.phase().to_ascii_lowercase();
    // A pending task pinned to a worker waits for it; a running one may be taken over.
    if phase != "running"
        && !assigned.is_empty()
        && !assigned.eq_ignore_ascii_case(&request.worker_id)
    {
        return false;
    }
    true
}

fn status_map(task: &mut Object) -> &mut Map<String, Value> {
    if !task.status.is_object() {
        task.status = Value::Object(Map::new());
    }
    match &mut task.status {
        Value::Object(m) => m,
        _ => unreachable!("status was just made an object"),
    }
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

/// Appends a history entry, keeping at most [`MAX_HISTORY`].
pub fn push_history(task: &mut Object, entry: Value) {
    let status = status_map(task);
    let history = status
        .entry("history")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !history.is_array() {
        *history = Value::Array(Vec::new());
    }
    if let Value::Array(items) = history {
        items.push(entry);
        if items.len() > MAX_HISTORY {
            let excess = items.len() - MAX_HISTORY;
            items.drain(..excess);
        }
    }
}

/// Applies a claim by `request.worker_id` at `now` (the caller checked [`is_claimable`]).
pub fn apply_claim(task: &mut Object, request: &ClaimRequest, now: DateTime<Utc>) {
    let was_running = task.phase().eq_ignore_ascii_case("running");
    let previous = status_str(task, "claimedBy").to_string();
    let now_s = format_time(now);
    {
        let status = status_map(task);
        status.insert("phase".into(), json!("Running"));
        status.insert("claimedBy".into(), json!(request.worker_id));
        status.insert("assignedWorker".into(), json!(request.worker_id));
        status.insert(
            "leaseUntil".into(),
            json!(format_time(lease_end(now, request.lease))),
        );
        status.insert("lastHeartbeat".into(), json!(now_s));
        status.remove("nextAttemptAt");
        status.remove("completedAt");
        if !was_running {
            // A takeover continues the attempt: its recorded output stays.
            status.remove("output");
            let attempts = status.get("attempts").and_then(Value::as_i64).unwrap_or(0);
            status.insert("attempts".into(), json!(attempts + 1));
        }
        if status
            .get("startedAt")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            status.insert("startedAt".into(), json!(now_s));
        }
    }
    if was_running {
        let message = if previous.is_empty() {
            format!("task released; taken over by {}", request.worker_id)
        } else {
            format!(
                "lease of {previous} expired; taken over by {}",
                request.worker_id
            )
        };
        status_map(task).insert("lastError".into(), json!(message));
        push_history(
            task,
            json!({
                "timestamp": now_s,
                "type": "takeover",
                "worker": request.worker_id,
                "previous_worker": previous,
                "message": message,
            }),
        );
    }
}

/// Whether `worker_id` holds the task's lease (Running and claimed by it).
pub fn is_held_by(task: &Object, worker_id: &str) -> bool {
    task.phase().eq_ignore_ascii_case("running") && status_str(task, "claimedBy") == worker_id
}

/// Extends the lease (the caller checked [`is_held_by`]).
pub fn apply_renewal(task: &mut Object, lease: Duration, now: DateTime<Utc>) {
    let status = status_map(task);
    status.insert(
        "leaseUntil".into(),
        json!(format_time(lease_end(now, lease))),
    );
    status.insert("lastHeartbeat".into(), json!(format_time(now)));
}

/// Clears the holder so the task is claimable at once (the caller checked [`is_held_by`]).
pub fn apply_release(task: &mut Object) {
    let status = status_map(task);
    status.insert("claimedBy".into(), json!(""));
    status.remove("leaseUntil");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::Kind;

    fn req(worker: &str) -> ClaimRequest {
        ClaimRequest {
            worker_id: worker.into(),
            lease: Duration::from_secs(30),
            region: "default".into(),
            gpu: false,
            supported_models: vec![],
            namespace: None,
        }
    }

    #[test]
    fn a_typed_status_is_claimable_when_its_json_is() {
        let at = |s: i64| format_time(Utc::now() + chrono::Duration::seconds(s));
        let statuses = [
            TaskStatus::default(),
            TaskStatus {
                phase: "Pending".into(),
                next_attempt_at: at(60),
                ..Default::default()
            },
            TaskStatus {
                phase: "pending".into(),
                next_attempt_at: "not a time".into(),
                ..Default::default()
            },
            TaskStatus {
                phase: "Running".into(),
                ..Default::default()
            },
            TaskStatus {
                phase: "Running".into(),
                claimed_by: "w1".into(),
                lease_until: at(30),
                ..Default::default()
            },
            TaskStatus {
                phase: "Running".into(),
                claimed_by: "w1".into(),
                lease_until: at(-30),
                ..Default::default()
            },
            TaskStatus {
                phase: "Succeeded".into(),
                ..Default::default()
            },
        ];
        let mut template = Object::new(Kind::Task, "default", "t");
        template.spec = json!({"mode": "template"});
        for shell in [Object::new(Kind::Task, "default", "t"), template] {
            for status in &statuses {
                let mut task = shell.clone();
                task.status = serde_json::to_value(status).expect("status to JSON");
                assert_eq!(
                    claimable_from_status(&shell, status),
                    claimable_from(&task),
                    "{status:?} of {:?}",
                    shell.spec
                );
            }
        }
    }

    #[test]
    fn claim_then_takeover_after_expiry() {
        let now = Utc::now();
        let mut t = Object::new(Kind::Task, "default", "t");
        assert!(is_claimable(&t, now));
        apply_claim(&mut t, &req("w1"), now);
        assert_eq!(t.phase(), "Running");
        assert_eq!(t.status["attempts"], json!(1));
        assert!(!is_claimable(&t, now));
        let later = now + chrono::Duration::seconds(31);
        assert!(is_claimable(&t, later));
        apply_claim(&mut t, &req("w2"), later);
        assert_eq!(t.status["claimedBy"], json!("w2"));
        assert_eq!(t.status["attempts"], json!(1));
        assert_eq!(t.status["history"][0]["type"], json!("takeover"));
    }

    #[test]
    fn templates_and_requirements() {
        let now = Utc::now();
        let mut t = Object::new(Kind::Task, "default", "t");
        t.spec = json!({"mode": "template"});
        assert!(!is_claimable(&t, now));
        t.spec = json!({"requirements": {"region": "eu", "gpu": true, "model": "gpt-4o"}});
        let mut r = req("w");
        assert!(!matches_worker(&t, &r));
        r.region = "EU".into();
        assert!(!matches_worker(&t, &r));
        r.gpu = true;
        assert!(matches_worker(&t, &r));
        r.supported_models = vec!["llama".into()];
        assert!(!matches_worker(&t, &r));
    }
}
