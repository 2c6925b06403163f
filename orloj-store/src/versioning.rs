//! The versioning rules of spec §1, as pure functions both stores apply inside their
//! critical section (a mutex in memory, a row lock in Postgres), so they cannot disagree.

use chrono::{DateTime, Utc};
use orloj_core::{DEFAULT_NAMESPACE, Error, Kind, Object, ObjectList, Result, task_queue};

/// The NotFound error for an object.
pub fn not_found(kind: Kind, namespace: &str, name: &str) -> Error {
    let ns = if namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        namespace
    };
    Error::not_found(format!("{kind} \"{ns}/{name}\" not found"))
}

fn conflict(kind: Kind, expected: &str, current: &str) -> Error {
    Error::conflict(format!(
        "{kind} resourceVersion conflict: expected={expected} current={current}"
    ))
}

/// Fails with Conflict when `expected` is set, non-empty, and differs from the stored version.
pub fn check_expected(current: &Object, expected: Option<&str>) -> Result<()> {
    match expected.map(str::trim) {
        Some(e) if !e.is_empty() && e != current.metadata.resource_version => Err(conflict(
            current.kind,
            e,
            &current.metadata.resource_version,
        )),
        _ => Ok(()),
    }
}

/// Builds the object to insert for a create.
pub fn prepare_create(
    mut object: Object,
    existing: Option<&Object>,
    now: DateTime<Utc>,
) -> Result<Object> {
    if existing.is_some() {
        return Err(Error::conflict(format!(
            "{} \"{}\" already exists",
            object.kind,
            object.key()
        )));
    }
    let rv = object.metadata.resource_version.trim();
    if !rv.is_empty() && rv != "0" {
        return Err(Error::conflict(format!(
            "{} \"{}\" does not exist; a create must not carry resourceVersion {rv}",
            object.kind,
            object.key()
        )));
    }
    if object.metadata.namespace.is_empty() {
        object.metadata.namespace = DEFAULT_NAMESPACE.to_string();
    }
    object.metadata.resource_version = "1".to_string();
    object.metadata.generation = 1;
    object.metadata.created_at = Some(now);
    if !object.status.is_object() {
        object.status = serde_json::Value::Object(Default::default());
    }
    Ok(object)
}

/// Builds the object to store for a spec write over `current`: spec, labels and annotations
/// from `object`; status and createdAt from `current`. Checks the precondition when asked.
pub fn prepare_update(mut object: Object, current: &Object, check_version: bool) -> Result<Object> {
    if check_version {
        check_expected(current, Some(&object.metadata.resource_version))?;
    }
    object.metadata.namespace = current.namespace().to_string();
    object.metadata.created_at = current.metadata.created_at;
    object.metadata.generation = if object.spec == current.spec {
        current.metadata.generation
    } else {
        current.metadata.generation + 1
    };
    object.metadata.resource_version = current.metadata.resource_version.clone();
    object.status = current.status.clone();
    bump(&mut object);
    Ok(object)
}

/// Builds the object to store for a status write over `current`.
pub fn prepare_status(
    current: &Object,
    expected: Option<&str>,
    status: serde_json::Value,
) -> Result<Object> {
    check_expected(current, expected)?;
    // Not `current.clone()`: the old status (the bulk of a task) would be copied to be dropped.
    let mut object = Object {
        api_version: current.api_version.clone(),
        kind: current.kind,
        metadata: current.metadata.clone(),
        spec: current.spec.clone(),
        status,
    };
    bump(&mut object);
    Ok(object)
}

/// Increments the resourceVersion.
pub fn bump(object: &mut Object) {
    let next = object.metadata.resource_version_number() + 1;
    object.metadata.resource_version = next.to_string();
}

/// Fails with Conflict unless `worker_id` holds the task's lease.
pub fn check_holder(task: &Object, worker_id: &str) -> Result<()> {
    if task_queue::is_held_by(task, worker_id) {
        Ok(())
    } else {
        let holder = task
            .status
            .get("claimedBy")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        Err(Error::conflict(format!(
            "Task \"{}\" is not held by {worker_id} (phase {:?}, claimed by {holder:?})",
            task.key(),
            task.phase()
        )))
    }
}

/// Wraps a page, setting `continue` to the last key when the page is full.
pub fn page(items: Vec<Object>, limit: Option<usize>) -> ObjectList {
    let full = limit.is_some_and(|l| l > 0 && items.len() >= l);
    let continue_token = if full {
        items.last().map(Object::key)
    } else {
        None
    };
    ObjectList {
        items,
        continue_token,
    }
}
