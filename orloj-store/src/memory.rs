//! An in-process [`Store`]: the same semantics as Postgres, no persistence.

use crate::versioning;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use orloj_core::resources::TaskStatus;
use orloj_core::store::without_status;
use orloj_core::task_queue;
use orloj_core::{
    ChangeMarker, ClaimRequest, Clock, Error, Kind, ListOptions, Object, ObjectList, Result, Store,
    WatchEvent, WatchEventType, scoped_key,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};

/// How many past events are kept for watches that resume from a revision.
pub const DEFAULT_EVENT_RETENTION: usize = 8192;
/// At most this many log lines are kept per task.
const MAX_TASK_LOGS: usize = 1000;

/// One written version of an object, shared by its entry and the watch history (a write
/// stores it once).
struct Version {
    /// The object; when `typed` is set, its metadata and spec with an empty status.
    object: Arc<Object>,
    /// A task status written typed ([`Store::update_task_status_of`]): kept as the worker
    /// handed it, and turned into JSON only if this version is read.
    typed: Option<Arc<TaskStatus>>,
    /// `object` with `typed` as its status, made by the first read.
    full: OnceLock<Arc<Object>>,
}

impl Version {
    fn plain(object: Object) -> Self {
        Self {
            object: Arc::new(object),
            typed: None,
            full: OnceLock::new(),
        }
    }

    /// The whole object.
    fn object(&self) -> &Arc<Object> {
        let Some(status) = &self.typed else {
            return &self.object;
        };
        self.full
            .get_or_init(|| Arc::new(with_status(&self.object, status)))
    }

    /// A copy of the whole object, without keeping the JSON a typed status was turned into.
    fn to_object(&self) -> Object {
        match (&self.typed, self.full.get()) {
            (Some(_), Some(full)) => (**full).clone(),
            (Some(status), None) => with_status(&self.object, status),
            (None, _) => (*self.object).clone(),
        }
    }

    /// The same version, without what reads of it cached.
    fn share(&self) -> Self {
        Self {
            object: self.object.clone(),
            typed: self.typed.clone(),
            full: OnceLock::new(),
        }
    }

    /// The object's metadata and spec, without turning a typed status into JSON (its status
    /// may be empty).
    fn shell(&self) -> &Object {
        &self.object
    }

    fn phase(&self) -> &str {
        match &self.typed {
            Some(status) => &status.phase,
            None => self.object.phase(),
        }
    }
}

/// `shell` with `status` as its JSON status.
fn with_status(shell: &Object, status: &TaskStatus) -> Object {
    let mut full = without_status(shell);
    // A TaskStatus has only string keys: serializing it cannot fail.
    full.status = serde_json::to_value(status).unwrap_or_else(|_| empty_status());
    full
}

fn empty_status() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

struct Entry {
    version: Arc<Version>,
    /// Revision of the last write, used to claim the least recently touched task first.
    touched: u64,
    /// For tasks, [`task_queue::claimable_from`] as of the last write: claim scans run on
    /// every worker poll and must not re-read every task's JSON.
    claimable_from: Option<Option<DateTime<Utc>>>,
}

impl Entry {
    /// [`task_queue::is_claimable`], from the cached hint.
    fn claimable(&self, now: DateTime<Utc>) -> bool {
        task_queue::claimable_at(self.claimable_from, now)
    }
}

/// A retained watch event; the version is shared with the store entry it was written as.
struct Retained {
    revision: u64,
    event_type: WatchEventType,
    version: Arc<Version>,
}

impl Retained {
    fn to_event(&self) -> WatchEvent {
        WatchEvent {
            revision: self.revision,
            event_type: self.event_type,
            object: (**self.version.object()).clone(),
        }
    }
}

struct State {
    objects: BTreeMap<(Kind, String), Entry>,
    revision: u64,
    history: VecDeque<Retained>,
    /// Events that fell out of `history` during this lock; dropped after it is released.
    evicted: Vec<Retained>,
    logs: HashMap<String, VecDeque<String>>,
    /// The revision of the last write to each kind (never dropped: [`Store::change_marker`]).
    last_change: HashMap<Kind, u64>,
    /// The tasks that are or will become claimable (a cached `claimable_from` that is set), by
    /// `touched` then key: the claim order. A claim walks it from the front instead of every
    /// object in the store.
    claim_queue: BTreeSet<(u64, (Kind, String))>,
}

/// The store's lock. Freeing an evicted event can free a whole old object (the last reference
/// to a task version written thousands of writes ago, cold in the cache): that happens after
/// the lock is released, not while every other store call waits for it.
struct Locked<'a> {
    guard: Option<MutexGuard<'a, State>>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        // Only `drop` takes the guard.
        self.guard.as_deref().expect("the guard is held until drop")
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard
            .as_deref_mut()
            .expect("the guard is held until drop")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            let evicted = std::mem::take(&mut guard.evicted);
            drop(guard);
            drop(evicted);
        }
    }
}

/// The in-memory store. Cheap to clone; clones share the same data.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<WatchEvent>,
    /// Bumped when a write makes a task claimable at once ([`Store::claim_signal`]).
    claimable: watch::Sender<u64>,
    clock: Arc<dyn Clock>,
    retention: usize,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_retention(clock, DEFAULT_EVENT_RETENTION)
    }

    /// An empty store keeping `retention` past events for resuming watches.
    pub fn with_retention(clock: Arc<dyn Clock>, retention: usize) -> Self {
        let retention = retention.max(1);
        let (events, _) = broadcast::channel(retention);
        Self {
            state: Arc::new(Mutex::new(State {
                objects: BTreeMap::new(),
                revision: 0,
                history: VecDeque::new(),
                evicted: Vec::new(),
                logs: HashMap::new(),
                last_change: HashMap::new(),
                claim_queue: BTreeSet::new(),
            })),
            events,
            claimable: watch::channel(0).0,
            clock,
            retention,
        }
    }

    fn lock(&self) -> Locked<'_> {
        // A panic while holding the lock cannot leave a half-written entry: every write builds
        // the new object first and inserts it in one step.
        Locked {
            guard: Some(self.state.lock().unwrap_or_else(|e| e.into_inner())),
        }
    }

    fn commit(&self, state: &mut State, event_type: WatchEventType, object: Object) -> Object {
        let version = Version::plain(object);
        (*self
            .commit_version(state, event_type, version, false)
            .object)
            .clone()
    }

    /// [`Self::commit`] of a status write (claim, lease, progress), which keeps a task's place
    /// in the claim order while its phase stays the same, as the Postgres store does.
    fn commit_status(&self, state: &mut State, object: Object) -> Object {
        let version = Version::plain(object);
        (*self
            .commit_version(state, WatchEventType::Updated, version, true)
            .object)
            .clone()
    }

    /// Stores `version` as the object's latest (or its last, for a delete) and records the
    /// event; returns the stored version itself (no copy).
    fn commit_version(
        &self,
        state: &mut State,
        event_type: WatchEventType,
        version: Version,
        status_write: bool,
    ) -> Arc<Version> {
        state.revision += 1;
        let revision = state.revision;
        let object = version.shell();
        let key = (object.kind, object.key());
        let touched = match state.objects.get(&key) {
            Some(before)
                if status_write
                    && object.kind == Kind::Task
                    && before.version.phase().eq_ignore_ascii_case(version.phase()) =>
            {
                before.touched
            }
            _ => revision,
        };
        state.last_change.insert(object.kind, revision);
        let claimable_from = if object.kind == Kind::Task && event_type != WatchEventType::Deleted {
            match &version.typed {
                Some(status) => task_queue::claimable_from_status(object, status),
                None => task_queue::claimable_from(object),
            }
        } else {
            None
        };
        if claimable_from == Some(None) {
            self.claimable.send_modify(|n| *n = n.wrapping_add(1));
        }
        if key.0 == Kind::Task {
            if let Some(before) = state.objects.get(&key)
                && before.claimable_from.is_some()
            {
                state.claim_queue.remove(&(before.touched, key.clone()));
            }
            if claimable_from.is_some() {
                state.claim_queue.insert((touched, key.clone()));
            }
        }
        let shared = Arc::new(version);
        if event_type == WatchEventType::Deleted {
            state.objects.remove(&key);
            if key.0 == Kind::Task {
                state.logs.remove(&key.1);
            }
        } else {
            state.objects.insert(
                key,
                Entry {
                    claimable_from,
                    version: shared.clone(),
                    touched,
                },
            );
        }
        let retained = Retained {
            revision,
            event_type,
            version: shared,
        };
        // Without watchers there is nothing to send (and no copy to make).
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(retained.to_event());
        }
        let written = retained.version.clone();
        state.history.push_back(retained);
        while state.history.len() > self.retention {
            if let Some(old) = state.history.pop_front() {
                state.evicted.push(old);
            }
        }
        written
    }

    /// `status` as the next status of `current`, which must be the stored version of the
    /// object (its resourceVersion and `createdAt`).
    fn status_of_current(
        state: &State,
        current: &Object,
        status: serde_json::Value,
    ) -> Result<Object> {
        let stored =
            Self::existing_version(state, current.kind, current.namespace(), current.name())?
                .shell();
        if stored.metadata.created_at != current.metadata.created_at {
            return Err(orloj_core::Error::conflict(format!(
                "{} {:?} was deleted and created again; retry",
                current.kind,
                current.key()
            )));
        }
        // The stored metadata and spec, not `current`'s: the memory store has them at hand.
        versioning::prepare_status(stored, Some(&current.metadata.resource_version), status)
    }

    /// The stored object (turning a typed status into JSON if it is one).
    fn existing<'a>(
        state: &'a State,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<&'a Object> {
        Self::existing_version(state, kind, namespace, name).map(|v| &**v.object())
    }

    fn existing_version<'a>(
        state: &'a State,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<&'a Version> {
        state
            .objects
            .get(&(kind, scoped_key(namespace, name)))
            .map(|e| &*e.version)
            .ok_or_else(|| versioning::not_found(kind, namespace, name))
    }
}

/// Where the change history of `kinds` stands in `state`.
fn marker_of(state: &State, kinds: &[Kind]) -> ChangeMarker {
    let last_change = kinds
        .iter()
        .filter_map(|k| state.last_change.get(k))
        .copied()
        .max()
        .unwrap_or(0);
    ChangeMarker {
        last_change,
        revision: state.revision,
        oldest_retained: 1,
    }
}

/// The keys of up to `max` claimable tasks `request` fits, least recently touched first, from
/// the claim queue (tasks running under a lease are in it too, and are passed over until it
/// expires).
fn claim_order(
    state: &State,
    request: &ClaimRequest,
    max: usize,
    now: DateTime<Utc>,
) -> Vec<(Kind, String)> {
    state
        .claim_queue
        .iter()
        .map(|(_, key)| key)
        .filter(|key| {
            state.objects.get(*key).is_some_and(|e| {
                e.claimable(now) && task_queue::matches_worker(e.version.shell(), request)
            })
        })
        .take(max)
        .cloned()
        .collect()
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object> {
        let state = self.lock();
        Self::existing(&state, kind, namespace, name).cloned()
    }

    async fn list(&self, kind: Kind, options: &ListOptions) -> Result<ObjectList> {
        let state = self.lock();
        let start = (kind, options.after.clone().unwrap_or_default());
        let mut items = Vec::new();
        for ((k, key), entry) in state.objects.range(start..) {
            if *k != kind {
                break;
            }
            if options.after.as_deref() == Some(key.as_str()) {
                continue;
            }
            let obj = entry.version.shell();
            if let Some(ns) = &options.namespace
                && obj.namespace() != ns
            {
                continue;
            }
            if !options.selector.matches(&obj.metadata.labels) {
                continue;
            }
            items.push((**entry.version.object()).clone());
            if options.limit.is_some_and(|l| l > 0 && items.len() >= l) {
                break;
            }
        }
        Ok(versioning::page(items, options.limit))
    }

    async fn create(&self, object: Object) -> Result<Object> {
        let mut state = self.lock();
        let now = self.clock.now();
        let key = (object.kind, object.key());
        let existing = state.objects.get(&key).map(|e| &**e.version.object());
        let created = versioning::prepare_create(object, existing, now)?;
        Ok(self.commit(&mut state, WatchEventType::Added, created))
    }

    async fn update(&self, object: Object) -> Result<Object> {
        let mut state = self.lock();
        let current = Self::existing(&state, object.kind, object.namespace(), object.name())?;
        let updated = versioning::prepare_update(object, current, true)?;
        Ok(self.commit(&mut state, WatchEventType::Updated, updated))
    }

    async fn upsert(&self, object: Object) -> Result<(Object, bool)> {
        let mut state = self.lock();
        let now = self.clock.now();
        let key = (object.kind, object.key());
        match state.objects.get(&key).map(|e| &**e.version.object()) {
            Some(current) => {
                let updated = versioning::prepare_update(object, current, false)?;
                Ok((
                    self.commit(&mut state, WatchEventType::Updated, updated),
                    false,
                ))
            }
            None => {
                let mut object = object;
                object.metadata.resource_version.clear();
                let created = versioning::prepare_create(object, None, now)?;
                Ok((
                    self.commit(&mut state, WatchEventType::Added, created),
                    true,
                ))
            }
        }
    }

    async fn update_status(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        expected_resource_version: Option<&str>,
        status: serde_json::Value,
    ) -> Result<Object> {
        let mut state = self.lock();
        // Metadata and spec: the status is replaced.
        let current = Self::existing_version(&state, kind, namespace, name)?.shell();
        let updated = versioning::prepare_status(current, expected_resource_version, status)?;
        Ok(self.commit_status(&mut state, updated))
    }

    async fn update_status_of(
        &self,
        current: &Object,
        status: serde_json::Value,
    ) -> Result<Arc<Object>> {
        let mut state = self.lock();
        let updated = Self::status_of_current(&state, current, status)?;
        let version = Version::plain(updated);
        let written = self.commit_version(&mut state, WatchEventType::Updated, version, true);
        Ok(written.object.clone())
    }

    async fn update_task_status_of(
        &self,
        current: &Object,
        status: &Arc<TaskStatus>,
    ) -> Result<Arc<Object>> {
        let mut state = self.lock();
        let shell = Self::status_of_current(&state, current, empty_status())?;
        let version = Version {
            object: Arc::new(shell),
            typed: Some(status.clone()),
            full: OnceLock::new(),
        };
        let written = self.commit_version(&mut state, WatchEventType::Updated, version, true);
        Ok(written.object.clone())
    }

    async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        expected_resource_version: Option<&str>,
    ) -> Result<Object> {
        let mut state = self.lock();
        let current = Self::existing_version(&state, kind, namespace, name)?;
        versioning::check_expected(current.shell(), expected_resource_version)?;
        // The deletion event keeps the stored version as it is, typed status included: JSON
        // made for the caller and kept in the watch history would be freed by whichever write
        // pushes the event out, thousands of writes later.
        let gone = current.share();
        let deleted = gone.to_object();
        self.commit_version(&mut state, WatchEventType::Deleted, gone, false);
        Ok(deleted)
    }

    async fn current_revision(&self) -> Result<u64> {
        Ok(self.lock().revision)
    }

    async fn change_marker(&self, kinds: &[Kind]) -> Result<Option<ChangeMarker>> {
        Ok(Some(marker_of(&self.lock(), kinds)))
    }

    async fn watch(
        &self,
        kind: Option<Kind>,
        after_revision: Option<u64>,
    ) -> Result<BoxStream<'static, Result<WatchEvent>>> {
        let state = self.lock();
        // Subscribing under the lock means no event falls between the replay and the live feed.
        let live = self.events.subscribe();
        let (replay, last) = match after_revision {
            None => (Vec::new(), state.revision),
            Some(after) => {
                let oldest = state
                    .history
                    .front()
                    .map_or(state.revision + 1, |e| e.revision);
                if after > state.revision {
                    return Err(Error::new(
                        orloj_core::ErrorKind::Gone,
                        format!(
                            "revision {after} is in the future (current {})",
                            state.revision
                        ),
                    ));
                }
                if after + 1 < oldest {
                    return Err(Error::new(
                        orloj_core::ErrorKind::Gone,
                        format!("revision {after} is no longer retained (oldest {oldest})"),
                    ));
                }
                let replay: Vec<WatchEvent> = state
                    .history
                    .iter()
                    .filter(|e| e.revision > after)
                    .map(Retained::to_event)
                    .collect();
                (replay, state.revision)
            }
        };
        drop(state);
        let matches = move |e: &WatchEvent| kind.is_none_or(|k| e.object.kind == k);
        let replay = stream::iter(replay.into_iter().filter(matches).map(Ok));
        let live = BroadcastStream::new(live)
            .map(|item| match item {
                Ok(event) => Ok(event),
                Err(BroadcastStreamRecvError::Lagged(n)) => Err(Error::new(
                    orloj_core::ErrorKind::Gone,
                    format!("watch fell behind by {n} events; re-list and watch again"),
                )),
            })
            .filter(move |item| {
                let keep = match item {
                    Ok(event) => event.revision > last && matches(event),
                    Err(_) => true,
                };
                futures::future::ready(keep)
            })
            // A lagged watcher cannot continue consistently: end after the error.
            .scan(false, |failed, item| {
                if *failed {
                    return futures::future::ready(None);
                }
                *failed = item.is_err();
                futures::future::ready(Some(item))
            });
        Ok(replay.chain(live).boxed())
    }

    fn claim_signal(&self) -> Option<BoxStream<'static, ()>> {
        Some(
            WatchStream::from_changes(self.claimable.subscribe())
                .map(|_| ())
                .boxed(),
        )
    }

    async fn claim_task(&self, request: &ClaimRequest) -> Result<Option<Object>> {
        Ok(self
            .claim_tasks(request, 1, None)
            .await?
            .pop()
            .map(|(t, _)| t))
    }

    async fn claim_tasks(
        &self,
        request: &ClaimRequest,
        max: usize,
        marker_kinds: Option<&[Kind]>,
    ) -> Result<Vec<(Object, Option<ChangeMarker>)>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut state = self.lock();
        let now = self.clock.now();
        let keys = claim_order(&state, request, max, now);
        let mut claimed = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(entry) = state.objects.get(&key) else {
                continue;
            };
            let mut task = (**entry.version.object()).clone();
            task_queue::apply_claim(&mut task, request, now);
            versioning::bump(&mut task);
            claimed.push(self.commit_status(&mut state, task));
        }
        // Taken after the claims, under the same lock: every write before them is before it.
        let marker = marker_kinds.map(|kinds| marker_of(&state, kinds));
        Ok(claimed.into_iter().map(|t| (t, marker)).collect())
    }

    async fn renew_task_lease(
        &self,
        namespace: &str,
        name: &str,
        worker_id: &str,
        lease: Duration,
    ) -> Result<Object> {
        let mut state = self.lock();
        let now = self.clock.now();
        let current = Self::existing(&state, Kind::Task, namespace, name)?;
        versioning::check_holder(current, worker_id)?;
        let mut task = current.clone();
        task_queue::apply_renewal(&mut task, lease, now);
        versioning::bump(&mut task);
        Ok(self.commit_status(&mut state, task))
    }

    async fn release_task(&self, namespace: &str, name: &str, worker_id: &str) -> Result<Object> {
        let mut state = self.lock();
        let current = Self::existing(&state, Kind::Task, namespace, name)?;
        versioning::check_holder(current, worker_id)?;
        let mut task = current.clone();
        task_queue::apply_release(&mut task);
        versioning::bump(&mut task);
        Ok(self.commit_status(&mut state, task))
    }

    async fn append_task_log(&self, namespace: &str, name: &str, entry: &str) -> Result<()> {
        let mut state = self.lock();
        Self::existing_version(&state, Kind::Task, namespace, name)?;
        let logs = state.logs.entry(scoped_key(namespace, name)).or_default();
        logs.push_back(entry.to_string());
        while logs.len() > MAX_TASK_LOGS {
            logs.pop_front();
        }
        Ok(())
    }

    async fn task_logs(&self, namespace: &str, name: &str, limit: usize) -> Result<Vec<String>> {
        let state = self.lock();
        Self::existing_version(&state, Kind::Task, namespace, name)?;
        let logs = state.logs.get(&scoped_key(namespace, name));
        Ok(logs
            .map(|l| {
                l.iter()
                    .skip(l.len().saturating_sub(limit))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }
}
