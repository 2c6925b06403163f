//! The [`Store`] trait: versioned resources, watches, and the task-queue operations.
//!
//! # Contract
//!
//! * Objects are keyed by `(kind, namespace, name)`; an empty namespace means `default`.
//! * `metadata.resourceVersion` is a decimal string: `"1"` on create, +1 on every write
//!   (spec, metadata or status). `generation` is 1 on create and +1 only when `spec` changes.
//!   `createdAt` is set on create and never changes.
//! * A write that carries a non-empty `resourceVersion` different from the stored one fails with
//!   [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) and changes nothing. Concurrent writers
//!   never lose an update: of two writes with the same expected version exactly one succeeds.
//! * Spec writes ([`Store::create`], [`Store::update`], [`Store::upsert`]) never change `status`
//!   of an existing object; [`Store::update_status`] never changes `spec` or `generation`.
//! * Every successful write gets a store-wide `revision` (strictly increasing, committed in
//!   order); [`Store::watch`] delivers [`WatchEvent`]s in revision order and can resume after a
//!   revision that is still retained (otherwise [`ErrorKind::Gone`](crate::ErrorKind::Gone)).
//! * A store that cannot reach its backend answers
//!   [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) promptly rather than hanging.
//!
//! Stores do not validate specs: callers pass objects through
//! [`resources::normalize`](crate::resources::normalize) first.

use crate::error::Result;
use crate::kind::Kind;
use crate::labels::LabelSelector;
use crate::object::{Object, ObjectList};
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::time::Duration;

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only this namespace; `None` lists every namespace.
    pub namespace: Option<String>,
    /// Only objects whose labels match (applied before the page is cut).
    pub selector: LabelSelector,
    /// At most this many items; `None` means no limit.
    pub limit: Option<usize>,
    /// Only objects whose `namespace/name` key sorts after this cursor.
    pub after: Option<String>,
}

/// The type of a [`WatchEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchEventType {
    /// The object was created.
    Added,
    /// The object's spec, metadata or status changed.
    Updated,
    /// The object was deleted; the event carries its last state.
    Deleted,
}

/// One change to one object.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// Store-wide position of this change; pass it back to [`Store::watch`] to resume after it.
    pub revision: u64,
    /// What happened.
    pub event_type: WatchEventType,
    /// The object after the change (before it, for deletes).
    pub object: Object,
}

/// Where a store's change history stands for some kinds (see [`Store::change_marker`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeMarker {
    /// The revision of the latest retained write to an object of the kinds asked about (0 when
    /// none is retained).
    pub last_change: u64,
    /// The store's revision when the marker was taken.
    pub revision: u64,
    /// The oldest revision whose write is still retained (1 when nothing was ever dropped).
    pub oldest_retained: u64,
}

impl ChangeMarker {
    /// Whether no object of the marker's kinds was written between `earlier` and `self` (both
    /// taken for the same kinds). False when the store no longer retains every write since
    /// `earlier`, since one of them could have been such a write.
    pub fn unchanged_since(&self, earlier: &ChangeMarker) -> bool {
        self.last_change == earlier.last_change
            && self.oldest_retained <= earlier.revision.saturating_add(1)
    }
}

/// A worker asking for a task.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// The claiming worker's id; becomes `status.claimedBy`.
    pub worker_id: String,
    /// How long the lease lasts from now.
    pub lease: Duration,
    /// The worker's region; tasks requiring another region are skipped.
    pub region: String,
    /// Whether the worker has a GPU; tasks requiring one are skipped otherwise.
    pub gpu: bool,
    /// Models the worker serves; empty means any.
    pub supported_models: Vec<String>,
    /// Only claim tasks in this namespace, when set.
    pub namespace: Option<String>,
}

/// Versioned resource storage plus the task queue. See the module docs for the contract.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks the backend is reachable.
    async fn ping(&self) -> Result<()>;

    /// Reads one object; NotFound when absent.
    async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object>;

    /// Lists objects ordered by `namespace/name`. `continue` is set to the last item's key when
    /// the page is full.
    async fn list(&self, kind: Kind, options: &ListOptions) -> Result<ObjectList>;

    /// Stores a new object. Conflict when it exists, or when it carries a resourceVersion
    /// other than "" or "0".
    async fn create(&self, object: Object) -> Result<Object>;

    /// Replaces spec, labels and annotations of an existing object (NotFound otherwise),
    /// keeping its status. A non-empty `metadata.resourceVersion` must match (Conflict).
    async fn update(&self, object: Object) -> Result<Object>;

    /// Creates or updates without a precondition (POST semantics); keeps an existing status.
    /// Returns the stored object and whether it was created.
    async fn upsert(&self, object: Object) -> Result<(Object, bool)>;

    /// Replaces the status of an existing object, keeping spec and generation. When
    /// `expected_resource_version` is set it must match (Conflict).
    async fn update_status(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        expected_resource_version: Option<&str>,
        status: serde_json::Value,
    ) -> Result<Object>;

    /// Replaces the status of `current`, which must be the object as this store last returned
    /// it: its resourceVersion is the precondition (Conflict when the stored one differs,
    /// NotFound when the object is gone). Spec and metadata are taken from `current`, which
    /// lets a store write without reading the object first; the default does read it.
    ///
    /// An object deleted and created again under the same name (its versions start again at 1)
    /// is told apart by `createdAt`: Conflict.
    ///
    /// Returns the written object shared (a store that keeps it need not copy it). The default
    /// is [`update_status_of_read`].
    async fn update_status_of(
        &self,
        current: &Object,
        status: serde_json::Value,
    ) -> Result<std::sync::Arc<Object>> {
        update_status_of_read(self, current, status).await
    }

    /// [`Store::update_status_of`] of a Task whose status the caller holds typed. A store that
    /// keeps objects in memory may keep `status` shared as it is and turn it into JSON only when
    /// that version is read; a store sending JSON may serialize it without building a
    /// `serde_json::Value` first. The store keeps its own reference to `status`: the caller's
    /// copy stays valid, and is the written status.
    ///
    /// Returns the written task with its metadata and spec but an empty `status` (an empty
    /// map): the written status is `status`. The default serializes `status` and calls
    /// [`Store::update_status_of`].
    async fn update_task_status_of(
        &self,
        current: &Object,
        status: &std::sync::Arc<crate::resources::TaskStatus>,
    ) -> Result<std::sync::Arc<Object>> {
        update_task_status_as_json(self, current, status).await
    }

    /// Deletes an object and returns its last state. When `expected_resource_version` is set it
    /// must match (Conflict).
    async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        expected_resource_version: Option<&str>,
    ) -> Result<Object>;

    /// The revision of the latest committed write (0 for an empty store).
    async fn current_revision(&self) -> Result<u64>;

    /// Streams changes of `kind` (every kind when `None`) in revision order: those after
    /// `after_revision` when given (Gone when no longer retained), else those committed after
    /// this call. The stream ends only when the store shuts down or errors.
    async fn watch(
        &self,
        kind: Option<Kind>,
        after_revision: Option<u64>,
    ) -> Result<BoxStream<'static, Result<WatchEvent>>>;

    /// A marker of the latest write to objects of `kinds`, taken in one consistent read: two
    /// markers compared with [`ChangeMarker::unchanged_since`] tell whether any such object was
    /// created, updated (status too) or deleted in between, which lets a reader keep what it
    /// read of them. `None`, the default: the store cannot tell, so nothing may be kept.
    async fn change_marker(&self, kinds: &[Kind]) -> Result<Option<ChangeMarker>> {
        let _ = kinds;
        Ok(None)
    }

    /// A stream that yields (coalesced, best effort) after a write that made a task claimable
    /// at once: a create, a release, a reset to Pending without a retry time. Workers claim on
    /// it instead of waiting for their next poll, and still poll for what only time makes
    /// claimable (retry times, expired leases). `None`, the default: no such signal; poll.
    fn claim_signal(&self) -> Option<BoxStream<'static, ()>> {
        None
    }

    /// Claims the least recently written claimable task matching the request (spec §5.3; a
    /// status write that keeps a task's phase, such as an agent step or a lease renewal, does
    /// not count as a write here): sets phase Running,
    /// `claimedBy`/`assignedWorker`, `leaseUntil`, `lastHeartbeat`; a takeover of an expired
    /// lease appends a `takeover` history entry. Concurrent claimers never get the same task.
    async fn claim_task(&self, request: &ClaimRequest) -> Result<Option<Object>>;

    /// [`Store::claim_task`], and with the claimed task a [`ChangeMarker`] of `kinds` taken no
    /// earlier than the claim found the task claimable: every write committed before the task
    /// could be claimed (its creation, and whatever its creator wrote first) is before the
    /// marker. A worker checks with it what it keeps of those kinds for the task without
    /// another read. The marker is `None` when the store cannot tell. The default claims, then
    /// takes the marker (a marker it cannot take is `None`: the task is claimed either way).
    async fn claim_task_marked(
        &self,
        request: &ClaimRequest,
        kinds: &[Kind],
    ) -> Result<Option<(Object, Option<ChangeMarker>)>> {
        let Some(task) = self.claim_task(request).await? else {
            return Ok(None);
        };
        let marker = self.change_marker(kinds).await.ok().flatten();
        Ok(Some((task, marker)))
    }

    /// Claims up to `max` tasks for one worker, each as [`Store::claim_task`] claims one (in
    /// claim order), with a [`ChangeMarker`] of `marker_kinds` as [`Store::claim_task_marked`]
    /// takes it when they are given. Fewer than `max`, or none, when fewer are claimable. A
    /// store that can claim several tasks in one write overrides this; the default claims one
    /// at a time, and when a claim fails after others succeeded it returns those (they are
    /// held now, and the caller must run them) instead of the error, which the next claim
    /// meets again.
    async fn claim_tasks(
        &self,
        request: &ClaimRequest,
        max: usize,
        marker_kinds: Option<&[Kind]>,
    ) -> Result<Vec<(Object, Option<ChangeMarker>)>> {
        claim_tasks_one_at_a_time(self, request, max, marker_kinds).await
    }

    /// Extends the lease of a task held by `worker_id`. Conflict when the task is not Running
    /// or is held by someone else.
    async fn renew_task_lease(
        &self,
        namespace: &str,
        name: &str,
        worker_id: &str,
        lease: Duration,
    ) -> Result<Object>;

    /// Gives up a task held by `worker_id` so another worker can claim it at once. Conflict when
    /// held by someone else.
    async fn release_task(&self, namespace: &str, name: &str, worker_id: &str) -> Result<Object>;

    /// Appends a line to a task's log. The line takes its place when the returned future is
    /// first polled: lines whose appends were started one after another stay in that order,
    /// even while the first has not finished.
    async fn append_task_log(&self, namespace: &str, name: &str, entry: &str) -> Result<()>;

    /// The latest `limit` log lines of a task, oldest first.
    async fn task_logs(&self, namespace: &str, name: &str, limit: usize) -> Result<Vec<String>>;
}

/// [`Store::claim_tasks`] for any store, one claim at a time ([`Store::claim_task`], or
/// [`Store::claim_task_marked`] with marker kinds). A claim that fails after others succeeded
/// ends the call with those (they are held now and must run); the error is left to the next
/// call.
pub async fn claim_tasks_one_at_a_time<S: Store + ?Sized>(
    store: &S,
    request: &ClaimRequest,
    max: usize,
    marker_kinds: Option<&[Kind]>,
) -> Result<Vec<(Object, Option<ChangeMarker>)>> {
    let mut claimed = Vec::new();
    while claimed.len() < max {
        let next = match marker_kinds {
            Some(kinds) => store.claim_task_marked(request, kinds).await,
            None => store
                .claim_task(request)
                .await
                .map(|t| t.map(|t| (t, None))),
        };
        match next {
            Ok(Some(task)) => claimed.push(task),
            Ok(None) => break,
            Err(e) if claimed.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(claimed)
}

/// [`Store::update_task_status_of`] for any store: serializes `status` and calls
/// [`Store::update_status_of`].
pub async fn update_task_status_as_json<S: Store + ?Sized>(
    store: &S,
    current: &Object,
    status: &std::sync::Arc<crate::resources::TaskStatus>,
) -> Result<std::sync::Arc<Object>> {
    let value = serde_json::to_value(&**status)
        .map_err(|e| crate::Error::internal(format!("serializing task status: {e}")))?;
    let written = store.update_status_of(current, value).await?;
    Ok(std::sync::Arc::new(without_status(&written)))
}

/// `object` with an empty status (what [`Store::update_task_status_of`] returns).
pub fn without_status(object: &Object) -> Object {
    Object {
        api_version: object.api_version.clone(),
        kind: object.kind,
        metadata: object.metadata.clone(),
        spec: object.spec.clone(),
        status: serde_json::Value::Object(Default::default()),
    }
}

/// [`Store::update_status_of`] for any store: reads the object, checks it is `current`'s
/// incarnation (`createdAt`), then writes with `current`'s resourceVersion as precondition.
pub async fn update_status_of_read<S: Store + ?Sized>(
    store: &S,
    current: &Object,
    status: serde_json::Value,
) -> Result<std::sync::Arc<Object>> {
    let stored = store
        .get(current.kind, current.namespace(), current.name())
        .await?;
    if stored.metadata.created_at != current.metadata.created_at {
        return Err(crate::Error::conflict(format!(
            "{} {:?} was deleted and created again; retry",
            current.kind,
            current.key()
        )));
    }
    store
        .update_status(
            current.kind,
            current.namespace(),
            current.name(),
            Some(&current.metadata.resource_version),
            status,
        )
        .await
        .map(std::sync::Arc::new)
}
