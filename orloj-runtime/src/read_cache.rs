//! A read cache for the configuration a worker resolves for every task: the AgentSystem, its
//! Agents, ModelEndpoints, Tools, roles, permissions, policies, approvals and secrets.
//!
//! Resolving a run reads a dozen such objects; they change rarely, tasks come by the thousand.
//! [`ReadCache`] keeps what it read and serves it again until [`ReadCache::refresh`] — one
//! [`Store::change_marker`] read — sees that an object of a cached kind was written since. So a
//! resolution that starts with `refresh` sees every change committed before it, exactly as
//! reading the store would, at the price of one read instead of a dozen.
//!
//! Reads between two refreshes reflect the store as of the last refresh or later: use it where
//! that is what is wanted (the worker refreshes at the start of each run's resolution). A store
//! that cannot tell changes apart (`change_marker` answers `None`) is read through.
//!
//! ```
//! use std::sync::Arc;
//! use orloj_core::{Kind, Object, Store, SystemClock};
//! use orloj_runtime::read_cache::ReadCache;
//! use orloj_store::MemoryStore;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = Arc::new(MemoryStore::new(Arc::new(SystemClock)));
//! store.create(Object::new(Kind::Agent, "default", "writer")).await.unwrap();
//! let cache = ReadCache::for_resolution(store.clone());
//! cache.refresh().await.unwrap();
//! let first = cache.get(Kind::Agent, "default", "writer").await.unwrap();
//! let again = cache.get(Kind::Agent, "default", "writer").await.unwrap(); // from memory
//! assert_eq!(first, again);
//! # });
//! ```

use async_trait::async_trait;
use futures::stream::BoxStream;
use orloj_core::{
    ChangeMarker, ClaimRequest, ErrorKind, Kind, ListOptions, Object, ObjectList, Result, Store,
    WatchEvent,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The kinds a run's resolution reads (engine `prepare`, governance, the model router).
pub const RESOLUTION_KINDS: &[Kind] = &[
    Kind::AgentSystem,
    Kind::Agent,
    Kind::ModelEndpoint,
    Kind::Tool,
    Kind::Secret,
    Kind::Memory,
    Kind::McpServer,
    Kind::AgentPolicy,
    Kind::AgentRole,
    Kind::ToolPermission,
    Kind::ToolApproval,
];

/// Entries kept at most; past this the cache starts over (configuration is small, this only
/// bounds a store with very many objects).
const MAX_ENTRIES: usize = 4096;

/// A [`Store`] that keeps reads of some kinds between [`ReadCache::refresh`]es. Every other
/// call, and every write, goes to the store; a write through the cache to a cached kind drops
/// what was kept.
pub struct ReadCache {
    inner: Arc<dyn Store>,
    kinds: Vec<Kind>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// What the entries are valid at; `None`: keep nothing (not refreshed yet, the store cannot
    /// tell changes apart, or the last refresh failed).
    marker: Option<ChangeMarker>,
    /// Bumped whenever entries are dropped: a read that started before must not keep its answer.
    generation: u64,
    /// An object, or the store's NotFound for it.
    gets: HashMap<(Kind, String, String), Result<Object>>,
    lists: HashMap<(Kind, String), ObjectList>,
    /// Markers read by the claims of tasks not resolved yet, with the resourceVersion the
    /// claim wrote ([`ReadCache::note_claim`]).
    claimed: HashMap<String, (String, ChangeMarker)>,
}

impl State {
    fn drop_entries(&mut self) {
        self.gets.clear();
        self.lists.clear();
        self.generation = self.generation.wrapping_add(1);
    }

    fn room(&mut self) {
        if self.gets.len() + self.lists.len() >= MAX_ENTRIES {
            self.drop_entries();
        }
    }
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}

impl ReadCache {
    /// A cache of `kinds` over `inner`; keeps nothing until the first [`Self::refresh`].
    pub fn new(inner: Arc<dyn Store>, kinds: &[Kind]) -> Self {
        Self {
            inner,
            kinds: kinds.to_vec(),
            state: Mutex::default(),
        }
    }

    /// A cache of [`RESOLUTION_KINDS`].
    pub fn for_resolution(inner: Arc<dyn Store>) -> Self {
        Self::new(inner, RESOLUTION_KINDS)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, kind: Kind) -> bool {
        self.kinds.contains(&kind)
    }

    /// What the kept reads are valid at: the same number as long as nothing was dropped since,
    /// `None` while the cache keeps nothing. What a caller derives from reads made through the
    /// cache under one generation stays valid while the generation is the same.
    pub fn generation(&self) -> Option<u64> {
        let state = self.state();
        state.marker.map(|_| state.generation)
    }

    /// The kinds this cache keeps.
    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    /// Makes the following reads see every write committed before this call: keeps what was
    /// read when no object of a cached kind was written since, drops it otherwise. On an error
    /// the cache keeps nothing (reads go to the store) until a refresh succeeds.
    pub async fn refresh(&self) -> Result<()> {
        let marker = self.inner.change_marker(&self.kinds).await;
        self.apply(marker)
    }

    /// Notes the marker of this cache's kinds that the claim of `task` read
    /// ([`Store::claim_task_marked`]), for [`Self::refresh_for`] to use instead of reading one.
    /// `task` is the task as the claim wrote it.
    pub fn note_claim(&self, task: &Object, marker: ChangeMarker) {
        let mut state = self.state();
        if state.claimed.len() >= MAX_ENTRIES {
            // Claims whose tasks were never resolved: their resolution reads a marker.
            state.claimed.clear();
        }
        state
            .claimed
            .insert(task.key(), (task.metadata.resource_version.clone(), marker));
    }

    /// Forgets what [`Self::note_claim`] noted for the task `task_key`, if no resolution used
    /// it.
    pub fn forget_claim(&self, task_key: &str) {
        self.state().claimed.remove(task_key);
    }

    /// [`Self::refresh`] for resolving `task`. When `task` is still the version its claim
    /// wrote, the marker that claim read stands in for reading one: the following reads see
    /// every write committed before the task was claimed (so everything written before it was
    /// created). Any later version (a retry, a takeover, a resumed approval) reads a marker, as
    /// `refresh` does. The noted marker is used once.
    pub async fn refresh_for(&self, task: &Object) -> Result<()> {
        let noted = self.state().claimed.remove(&task.key());
        match noted {
            Some((version, marker)) if version == task.metadata.resource_version => {
                self.apply(Ok(Some(marker)))
            }
            _ => self.refresh().await,
        }
    }

    /// Keeps what was read when `marker` shows no write to a cached kind since the kept one.
    fn apply(&self, marker: Result<Option<ChangeMarker>>) -> Result<()> {
        let mut state = self.state();
        match marker {
            Ok(Some(now)) if state.marker.is_some_and(|kept| now.unchanged_since(&kept)) => {
                state.marker = Some(now);
            }
            Ok(now) => {
                state.drop_entries();
                state.marker = now;
            }
            Err(e) => {
                state.drop_entries();
                state.marker = None;
                return Err(e);
            }
        }
        Ok(())
    }

    /// The generation to keep a read of `kind` under, when the cache keeps it.
    fn keeping(&self, kind: Kind) -> Option<u64> {
        if self.cached(kind) {
            self.generation()
        } else {
            None
        }
    }

    /// Keeps a read with `insert` unless the entries were dropped since it began (`generation`).
    fn keep(&self, generation: u64, insert: impl FnOnce(&mut State)) {
        let mut state = self.state();
        if state.marker.is_some() && state.generation == generation {
            state.room();
            insert(&mut state);
        }
    }

    /// Drops everything after a write through the cache to a cached kind: the next refresh
    /// starts over.
    fn written(&self, kind: Kind) {
        if self.cached(kind) {
            let mut state = self.state();
            state.drop_entries();
            state.marker = None;
        }
    }
}

fn list_key(options: &ListOptions) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}",
        options.namespace, options.selector, options.limit, options.after
    )
}

#[async_trait]
impl Store for ReadCache {
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object> {
        let Some(generation) = self.keeping(kind) else {
            return self.inner.get(kind, namespace, name).await;
        };
        let key = (kind, namespace.to_string(), name.to_string());
        if let Some(kept) = self.state().gets.get(&key) {
            return kept.clone();
        }
        let read = self.inner.get(kind, namespace, name).await;
        // A missing object is kept too (its creation changes the marker); other errors are not.
        let keepable = match &read {
            Ok(_) => true,
            Err(e) => e.kind() == ErrorKind::NotFound,
        };
        if keepable {
            self.keep(generation, |state| {
                state.gets.insert(key, read.clone());
            });
        }
        read
    }

    async fn list(&self, kind: Kind, options: &ListOptions) -> Result<ObjectList> {
        let Some(generation) = self.keeping(kind) else {
            return self.inner.list(kind, options).await;
        };
        let key = (kind, list_key(options));
        if let Some(kept) = self.state().lists.get(&key) {
            return Ok(kept.clone());
        }
        let list = self.inner.list(kind, options).await?;
        self.keep(generation, |state| {
            state.lists.insert(key, list.clone());
        });
        Ok(list)
    }

    async fn create(&self, object: Object) -> Result<Object> {
        let kind = object.kind;
        let result = self.inner.create(object).await;
        self.written(kind);
        result
    }

    async fn update(&self, object: Object) -> Result<Object> {
        let kind = object.kind;
        let result = self.inner.update(object).await;
        self.written(kind);
        result
    }

    async fn upsert(&self, object: Object) -> Result<(Object, bool)> {
        let kind = object.kind;
        let result = self.inner.upsert(object).await;
        self.written(kind);
        result
    }

    async fn update_status(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        expected_resource_version: Option<&str>,
        status: serde_json::Value,
    ) -> Result<Object> {
        let result = self
            .inner
            .update_status(kind, namespace, name, expected_resource_version, status)
            .await;
        self.written(kind);
        result
    }

    async fn update_status_of(
        &self,
        current: &Object,
        status: serde_json::Value,
    ) -> Result<Arc<Object>> {
        let result = self.inner.update_status_of(current, status).await;
        self.written(current.kind);
        result
    }

    async fn update_task_status_of(
        &self,
        current: &Object,
        status: &Arc<orloj_core::resources::TaskStatus>,
    ) -> Result<Arc<Object>> {
        let result = self.inner.update_task_status_of(current, status).await;
        self.written(current.kind);
        result
    }

    async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        expected_resource_version: Option<&str>,
    ) -> Result<Object> {
        let result = self
            .inner
            .delete(kind, namespace, name, expected_resource_version)
            .await;
        self.written(kind);
        result
    }

    async fn current_revision(&self) -> Result<u64> {
        self.inner.current_revision().await
    }

    async fn change_marker(&self, kinds: &[Kind]) -> Result<Option<ChangeMarker>> {
        self.inner.change_marker(kinds).await
    }

    async fn watch(
        &self,
        kind: Option<Kind>,
        after_revision: Option<u64>,
    ) -> Result<BoxStream<'static, Result<WatchEvent>>> {
        self.inner.watch(kind, after_revision).await
    }

    fn claim_signal(&self) -> Option<BoxStream<'static, ()>> {
        self.inner.claim_signal()
    }

    async fn claim_task(&self, request: &ClaimRequest) -> Result<Option<Object>> {
        self.inner.claim_task(request).await
    }

    async fn claim_task_marked(
        &self,
        request: &ClaimRequest,
        kinds: &[Kind],
    ) -> Result<Option<(Object, Option<ChangeMarker>)>> {
        self.inner.claim_task_marked(request, kinds).await
    }

    async fn claim_tasks(
        &self,
        request: &ClaimRequest,
        max: usize,
        marker_kinds: Option<&[Kind]>,
    ) -> Result<Vec<(Object, Option<ChangeMarker>)>> {
        self.inner.claim_tasks(request, max, marker_kinds).await
    }

    async fn renew_task_lease(
        &self,
        namespace: &str,
        name: &str,
        worker_id: &str,
        lease: Duration,
    ) -> Result<Object> {
        self.inner
            .renew_task_lease(namespace, name, worker_id, lease)
            .await
    }

    async fn release_task(&self, namespace: &str, name: &str, worker_id: &str) -> Result<Object> {
        self.inner.release_task(namespace, name, worker_id).await
    }

    async fn append_task_log(&self, namespace: &str, name: &str, entry: &str) -> Result<()> {
        self.inner.append_task_log(namespace, name, entry).await
    }

    async fn task_logs(&self, namespace: &str, name: &str, limit: usize) -> Result<Vec<String>> {
        self.inner.task_logs(namespace, name, limit).await
    }
}
