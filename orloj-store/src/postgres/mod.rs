//! [`PostgresStore`]: the production [`Store`], on Postgres through sqlx.
//!
//! # Layout
//!
//! One table per kind ([`Kind::table`]), keyed by the scoped key `namespace/name`, holding the
//! whole object in `payload JSONB`. The indexed copies (`namespace`, `status_phase`,
//! `spec_hash`, worker columns, …) are generated columns computed from the payload, so they
//! cannot drift. Tasks are the exception: they are rewritten on every agent step, and
//! recomputing their generated columns from the whole document was half the cost of such a
//! write, so every task write sets those columns in the same statement, from the object it
//! writes (`task_columns`; `spec_hash` in SQL, and only when the spec may have changed: a
//! status write keeps it; migration 0006). The schema lives in
//! `orloj-store/migrations/*.sql`, embedded with `sqlx::migrate!` and applied by [`PostgresStore::connect`] (sqlx's migrator holds a Postgres
//! advisory lock while it runs, so concurrent starters are safe).
//!
//! # Writes
//!
//! Every write runs in a transaction that first locks the row (`SELECT … FOR UPDATE`), applies
//! the same [`versioning`] rules as [`MemoryStore`](crate::MemoryStore), then in one statement
//! writes the row, increments the singleton `store_revision` row, appends to `store_events` (the
//! payload the write returned) and prunes the event it pushed out of the retention window (a
//! short index range; the row's `pruned_through` says where the retained events start, and a
//! sweep every `CATCH_UP_EVERY` writes deletes what the ranges missed). The `store_revision`
//! row lock serializes writers until commit, so revisions commit in order; it is taken after
//! the row is written, so writers wait on each other only for the event and the commit
//! (migration 0007). Rows carry a `write_order` from a sequence instead of the revision: the
//! claim order. Time comes from the injected [`Clock`].
//! A status write that names the version it starts from ([`Store::update_status_of`]) needs no
//! transaction: one statement locks the row only while it still has that version. A task
//! status a worker hands over typed ([`Store::update_task_status_of`]) is serialized straight
//! into that statement, and the row's columns are read from it. For tasks,
//! such writes, creates and task log lines pass through a writer (`batch`) that sends those
//! waiting while its last statement ran in a single statement: one revision lock (log lines
//! take none) and one commit for all of them.
//!
//! [`Store::change_marker`] reads the latest retained event of the kinds asked about, the
//! current revision and the oldest retained one in one statement.
//!
//! # Watches
//!
//! Watchers read `store_events` after their last revision. A trigger NOTIFYs
//! `orloj_store_events` on each insert; one `LISTEN` connection per store (started by the first
//! watch) wakes watchers, and they also poll every [`PostgresOptions::watch_poll_interval`] in
//! case a notification was lost. The write path keeps the last
//! [`PostgresOptions::event_retention`] events; resuming from an older revision is `Gone`.
//!
//! # Claims
//!
//! [`Store::claim_tasks`] selects the least recently written claimable tasks (by `write_order`,
//! which a status write that keeps the task's phase leaves as it is) with
//! `FOR UPDATE SKIP LOCKED`, as many as asked for (the worker's region/gpu/model/namespace
//! hints are applied in SQL), re-checks each with
//! [`task_queue::is_claimable`]/[`task_queue::matches_worker`], applies
//! [`task_queue::apply_claim`] and writes them back under version guards, all of them in one
//! statement, in autocommit: when another writer got to a task first (two workers claiming it),
//! its guard fails and the next round reads further candidates. (A transaction around the two
//! would hold the store revision lock, which the write takes, until its COMMIT came back from
//! the worker.) Rows locked by a write in flight are skipped, and so are the tasks this store's
//! other claims in flight are writing. [`Store::claim_task`] is a claim of one, written with
//! the one-row statement. With marker kinds, the write statement also reads the
//! [`ChangeMarker`], in its snapshot, taken after the candidates were read.

pub mod auth;
mod batch;
mod error;
mod sql;
mod task_batch;

use crate::versioning;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use orloj_core::labels::Requirement;
use orloj_core::resources::TaskStatus;
use orloj_core::{
    ChangeMarker, ClaimRequest, Clock, Error, ErrorKind, Kind, ListOptions, Object, ObjectList,
    Result, Store, WatchEvent, WatchEventType, scoped_key, task_queue,
};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::types::Json;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::WatchStream;

/// A pooled connection idle this long is pinged before it is handed out.
const IDLE_PING_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// The migrations in `orloj-store/migrations`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// How many events one watch poll reads at most.
const EVENT_PAGE: i64 = 256;
/// How many non-matching claim candidates are skipped before giving up on one claim.
const MAX_CLAIM_CANDIDATES: usize = 16;
/// How often an upsert that lost a create race is retried.
const UPSERT_ATTEMPTS: usize = 3;
/// Every this many writes, a store sweeps events its writes' bounded prune missed
/// ([`sql::CATCH_UP`]); it also sweeps when it connects.
const CATCH_UP_EVERY: u64 = 1024;
/// How many events one sweep deletes at most.
const CATCH_UP_BATCH: i64 = 1024;

/// Connection-pool and behaviour settings for [`PostgresStore`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Most connections open at once.
    pub max_open_conns: u32,
    /// Accepted for configuration compatibility with the reference. sqlx cannot cap idle
    /// connections; instead idle connections are closed after [`Self::idle_timeout`].
    pub max_idle_conns: u32,
    /// Connections are replaced after this long.
    pub conn_max_lifetime: Duration,
    /// Idle connections are closed after this long.
    pub idle_timeout: Duration,
    /// How long to wait for a connection (including connecting) before answering Unavailable.
    pub acquire_timeout: Duration,
    /// Upper bound for one store operation; past it the operation fails with Unavailable.
    pub operation_timeout: Duration,
    /// How many of the latest events are kept for watches that resume from a revision.
    pub event_retention: u64,
    /// How often watchers poll when no notification arrives.
    pub watch_poll_interval: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_open_conns: 20,
            max_idle_conns: 10,
            conn_max_lifetime: Duration::from_secs(30 * 60),
            idle_timeout: Duration::from_secs(10 * 60),
            acquire_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(30),
            event_retention: 10_000,
            watch_poll_interval: Duration::from_secs(1),
        }
    }
}

/// A [`Store`] on Postgres. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    options: PostgresOptions,
    notifier: OnceLock<Notifier>,
    /// The retention every write prunes to, and the sweeps.
    log: Arc<EventLog>,
    /// Task creates go through it (started by the first one).
    create_batcher: OnceLock<batch::Sender<task_batch::TaskWrites>>,
    /// Version-guarded task status writes go through it (started by the first one).
    status_batcher: OnceLock<batch::Sender<task_batch::TaskWrites>>,
    /// Task log lines go through it (started by the first one).
    log_batcher: OnceLock<batch::Sender<task_batch::LogLines>>,
    /// Keys of the tasks this store's claims are writing. A worker runs several claims at once;
    /// without a transaction their candidate reads lock nothing, so they would all read the
    /// same oldest task and all but one would wait on its row lock to fail their guard.
    claiming: Mutex<HashSet<String>>,
    /// Claim writes this store sent but never heard back about (the round timed out, or its
    /// connection broke): the statement may have committed, leaving the task held by a worker
    /// that does not know it holds it. The next claim of that worker hands such a task out.
    unsure_claims: Mutex<Vec<UnsureClaim>>,
}

/// What a claim's candidate query filters on, and the marker kinds its write reads.
struct ClaimFilter<'a> {
    /// Lowercased, as the task columns are.
    region: String,
    models: Vec<String>,
    worker: String,
    kinds: Option<Vec<&'a str>>,
}

/// A claim write whose outcome is unknown ([`Inner::unsure_claims`]).
#[derive(Clone)]
struct UnsureClaim {
    key: String,
    /// The resourceVersion the claim wrote: if the task still has it, the claim committed and
    /// nobody has written the task since.
    version: String,
    /// The resourceVersion the claim expected: while the task still has it, the write may
    /// still be on its way (waiting for a lock, say).
    read_version: String,
    worker: String,
    /// The end of the lease the claim wrote: after it, anyone may claim the task anyway.
    lease_until: DateTime<Utc>,
}

/// Noted claims taken out of [`Inner::unsure_claims`]; what is left in `claims` goes back
/// when dropped.
struct TakenClaims<'a> {
    noted: &'a Mutex<Vec<UnsureClaim>>,
    claims: Vec<UnsureClaim>,
}

impl Drop for TakenClaims<'_> {
    fn drop(&mut self) {
        lock(self.noted).append(&mut self.claims);
    }
}

/// A task key reserved in [`Inner::claiming`] until dropped.
struct Claiming<'a> {
    keys: &'a Mutex<HashSet<String>>,
    key: String,
}

impl<'a> Claiming<'a> {
    /// Reserves `key`, unless another claim holds it.
    fn reserve(keys: &'a Mutex<HashSet<String>>, key: String) -> Option<Self> {
        let reserved = lock(keys).insert(key.clone());
        // Built only when reserved: dropping it releases the key.
        reserved.then(|| Self { keys, key })
    }

    /// The keys reserved now.
    fn reserved(keys: &Mutex<HashSet<String>>) -> Vec<String> {
        lock(keys).iter().cloned().collect()
    }
}

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        lock(self.keys).remove(&self.key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The LISTEN task, the revision it last heard of and a count of claimable-task signals.
struct Notifier {
    latest: watch::Receiver<u64>,
    claimable: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(n) = self.notifier.get() {
            n.task.abort();
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// What a write statement does to the row.
#[derive(Clone, Copy)]
enum Write {
    Insert,
    Update,
    /// An update that leaves the spec as stored (status, lease, claim).
    Status,
    Delete,
}

impl PostgresStore {
    /// Connects to `dsn` (a `postgres://` URL), applies pending migrations and returns the
    /// store. Fails with Unavailable when the server cannot be reached within
    /// `options.acquire_timeout`.
    pub async fn connect(
        dsn: &str,
        options: PostgresOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(options.max_open_conns.max(1))
            .min_connections(0)
            .max_lifetime(options.conn_max_lifetime)
            .idle_timeout(options.idle_timeout)
            .acquire_timeout(options.acquire_timeout)
            // Ping only connections that sat idle: a connection in steady use has just proven
            // itself, and a ping per acquire is a round trip on every store call.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_PING_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect(dsn)
            .await
            .map_err(|e| error::map(e).context("connecting to postgres"))?;
        Self::migrate(&pool).await?;
        let store = Self::from_pool(pool, options, clock);
        // A store started with a smaller retention than the one before leaves the events
        // between the two windows to this sweep.
        while store.inner.log.catch_up().await? == CATCH_UP_BATCH {}
        Ok(store)
    }

    /// Wraps an existing pool. The schema must already be migrated ([`Self::migrate`]).
    pub fn from_pool(pool: PgPool, options: PostgresOptions, clock: Arc<dyn Clock>) -> Self {
        let log = Arc::new(EventLog {
            pool: pool.clone(),
            retention: i64::try_from(options.event_retention.max(1)).unwrap_or(i64::MAX),
            writes: AtomicU64::new(0),
        });
        Self {
            inner: Arc::new(Inner {
                pool,
                clock,
                options,
                notifier: OnceLock::new(),
                log,
                create_batcher: OnceLock::new(),
                status_batcher: OnceLock::new(),
                log_batcher: OnceLock::new(),
                claiming: Mutex::new(HashSet::new()),
                unsure_claims: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Applies pending migrations; a no-op when the schema is current. Safe to run from several
    /// processes at once (sqlx's migrator takes a Postgres advisory lock).
    pub async fn migrate(pool: &PgPool) -> Result<()> {
        MIGRATOR.run(pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => {
                error::map(inner).context("applying migrations")
            }
            other => Error::internal(format!("applying migrations: {other}")),
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Closes the pool: running operations finish, later ones fail with Unavailable and open
    /// watches end.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    /// Runs `fut` under the operation timeout.
    async fn timed<T>(&self, what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let limit = self.inner.options.operation_timeout;
        match tokio::time::timeout(limit, fut).await {
            Ok(result) => result,
            Err(_) => Err(error::unavailable(format!(
                "{what} did not finish within {limit:?}"
            ))),
        }
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.inner.pool.begin().await.map_err(error::map)
    }

    /// Reads and locks one row for the rest of the transaction.
    async fn lock(conn: &mut PgConnection, kind: Kind, key: &str) -> Result<Option<Object>> {
        let row: Option<(Json<Object>,)> = sqlx::query_as(sql::q(&sql::for_kind(kind).lock))
            .bind(key)
            .fetch_optional(conn)
            .await
            .map_err(error::map)?;
        Ok(row.map(|(Json(o),)| o))
    }

    async fn lock_existing(
        conn: &mut PgConnection,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Object> {
        Self::lock(conn, kind, &scoped_key(namespace, name))
            .await?
            .ok_or_else(|| versioning::not_found(kind, namespace, name))
    }

    /// Writes `object` (or deletes it) with its event; returns the store revision.
    async fn write(
        &self,
        conn: &mut PgConnection,
        op: Write,
        object: &Object,
        now: DateTime<Utc>,
    ) -> std::result::Result<u64, sqlx::Error> {
        self.write_if(conn, op, object, now, None)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// [`Self::write`]; with `expected_version` (updates only) nothing is written, and `None`
    /// returned, unless the stored object has that resourceVersion and `object`'s createdAt.
    async fn write_if(
        &self,
        conn: &mut PgConnection,
        op: Write,
        object: &Object,
        now: DateTime<Utc>,
        expected_version: Option<&str>,
    ) -> std::result::Result<Option<u64>, sqlx::Error> {
        Ok(write_row(
            conn,
            &self.inner.log,
            op,
            object.into(),
            now,
            expected_version,
            None,
        )
        .await?
        .map(|(revision, _)| revision))
    }

    /// Locks an existing object, lets `change` turn it into what `op` writes (its next version,
    /// or itself for a delete), writes that and commits; anything `change` rejects rolls back
    /// and writes nothing.
    async fn modify(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        op: Write,
        change: impl FnOnce(Object, DateTime<Utc>) -> Result<Object>,
    ) -> Result<Object> {
        let now = self.inner.clock.now();
        let mut tx = self.begin().await?;
        let result = async {
            let current = Self::lock_existing(&mut tx, kind, namespace, name).await?;
            let written = change(current, now)?;
            self.write(&mut tx, op, &written, now)
                .await
                .map_err(error::map)?;
            Ok(written)
        }
        .await;
        finish(tx, result).await
    }

    /// Claims up to `max` of the oldest claimable tasks matching `request` (see
    /// [`Store::claim_tasks`]); with `kinds`, each with a [`ChangeMarker`] of them, read by the
    /// claims' write statement. Rounds ([`Self::claim_round`]) run until `max` are claimed or
    /// none is left; candidates another writer got to first are skipped by the next round. A
    /// round that fails after earlier ones claimed tasks ends the call with those: they are
    /// held now, and the worker must run them.
    async fn claim(
        &self,
        request: &ClaimRequest,
        max: usize,
        kinds: Option<&[Kind]>,
    ) -> Result<Vec<(Object, Option<ChangeMarker>)>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let filter = ClaimFilter {
            region: request.region.trim().to_lowercase(),
            models: request
                .supported_models
                .iter()
                .map(|m| m.trim().to_lowercase())
                .collect(),
            worker: request.worker_id.to_lowercase(),
            kinds: kinds.map(|kinds| kinds.iter().map(|k| k.as_str()).collect()),
        };
        // No transaction: the candidates are read, then written under version guards. A
        // transaction held the store revision lock from its write until the COMMIT came back
        // from this process, a round trip during which every other write waited.
        let mut conn = self
            .timed("claim task", async {
                self.inner.pool.acquire().await.map_err(error::map)
            })
            .await?;
        let mut claimed: Vec<(Object, Option<ChangeMarker>)> = self
            .timed(
                "claim task",
                self.unsure_claims_held(&mut conn, request, max),
            )
            .await?
            .into_iter()
            .map(|task| (task, None))
            .collect();
        let mut skipped: Vec<String> = Vec::new();
        while claimed.len() < max && skipped.len() < MAX_CLAIM_CANDIDATES {
            let round = self.claim_round(
                &mut conn,
                request,
                &filter,
                max - claimed.len(),
                &mut skipped,
            );
            match self.timed("claim task", round).await {
                Ok((got, exhausted)) => {
                    claimed.extend(got);
                    if exhausted {
                        break;
                    }
                }
                Err(e) if claimed.is_empty() => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, claimed = claimed.len(), "a later claim round failed; returning the tasks claimed");
                    break;
                }
            }
        }
        Ok(claimed)
    }

    /// Up to `max` tasks whose claim for `request`'s worker did commit although the claim
    /// never heard back ([`Inner::unsure_claims`]): they are that worker's now. A noted claim
    /// is forgotten once its task was written by someone else or is gone; it stays noted while
    /// the task still has the version the claim read (the write may still be on its way) or
    /// beyond `max`, until its lease would have run out.
    async fn unsure_claims_held(
        &self,
        conn: &mut PgConnection,
        request: &ClaimRequest,
        max: usize,
    ) -> Result<Vec<Object>> {
        let now = self.inner.clock.now();
        // Taken out while this call settles them (a claim of the same worker running at the
        // same time does not hand them out too), and put back unless settled, also when this
        // call fails or is dropped. Claims whose round is still writing them are left alone.
        let mut taken = {
            let writing = lock(&self.inner.claiming);
            let mut noted = lock(&self.inner.unsure_claims);
            noted.retain(|c| c.lease_until > now);
            let (mine, rest) = std::mem::take(&mut *noted)
                .into_iter()
                .partition(|c| c.worker == request.worker_id && !writing.contains(&c.key));
            *noted = rest;
            TakenClaims {
                noted: &self.inner.unsure_claims,
                claims: mine,
            }
        };
        if taken.claims.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = taken.claims.iter().map(|c| c.key.as_str()).collect();
        let rows: Vec<(Json<Object>,)> = sqlx::query_as(sql::TASKS_NAMED)
            .bind(&keys)
            .fetch_all(&mut *conn)
            .await
            .map_err(error::map)?;
        let mut held = Vec::new();
        taken.claims.retain(|c| {
            match rows.iter().map(|(Json(t),)| t).find(|t| t.key() == c.key) {
                // Committed: this worker's task, handed out now (beyond `max`, later).
                Some(task) if task.metadata.resource_version == c.version => {
                    if held.len() >= max {
                        return true;
                    }
                    held.push(task.clone());
                    false
                }
                // Not written yet: the write may still be on its way.
                Some(task) => task.metadata.resource_version == c.read_version,
                // Gone.
                None => false,
            }
        });
        if !held.is_empty() {
            tracing::info!(worker = %request.worker_id, tasks = held.len(), "claims whose answer was lost had committed; handing those tasks out");
        }
        Ok(held)
    }

    /// One claim round: reads up to `wanted` candidates (not in `skipped`, nor reserved by
    /// this store's other claims), applies the claim rules to each and writes the claims in
    /// one statement. The tasks it claimed, and whether fewer candidates than wanted were
    /// left; candidates that do not fit or were written meanwhile go to `skipped`.
    async fn claim_round(
        &self,
        conn: &mut PgConnection,
        request: &ClaimRequest,
        filter: &ClaimFilter<'_>,
        wanted: usize,
        skipped: &mut Vec<String>,
    ) -> Result<(Vec<(Object, Option<ChangeMarker>)>, bool)> {
        // Each round's own time: a call's rounds may take a while each (every one has the
        // operation timeout), and a lease counted from the call's start could be over already.
        let now = self.inner.clock.now();
        let mut skip = Claiming::reserved(&self.inner.claiming);
        skip.extend(skipped.iter().cloned());
        let rows: Vec<(Json<Object>,)> = sqlx::query_as(sql::CLAIM_CANDIDATES)
            .bind(now)
            .bind(request.namespace.as_deref())
            .bind(&filter.region)
            .bind(request.gpu)
            .bind(&filter.models)
            .bind(&filter.worker)
            .bind(&skip)
            .bind(i64::try_from(wanted).unwrap_or(i64::MAX))
            .fetch_all(&mut *conn)
            .await
            .map_err(error::map)?;
        let exhausted = rows.len() < wanted;
        let mut reserved = Vec::with_capacity(rows.len());
        let mut writes = Vec::with_capacity(rows.len());
        for (Json(mut task),) in rows {
            // The SQL filter approximates the rules; the shared functions decide. A candidate
            // another claim of this store reserved first is its to write.
            let reservation = (task_queue::is_claimable(&task, now)
                && task_queue::matches_worker(&task, request))
            .then(|| Claiming::reserve(&self.inner.claiming, task.key()))
            .flatten();
            let Some(reservation) = reservation else {
                skipped.push(task.key());
                continue;
            };
            reserved.push(reservation);
            let read_version = task.metadata.resource_version.clone();
            task_queue::apply_claim(&mut task, request, now);
            versioning::bump(&mut task);
            writes.push(task_batch::TaskWrite {
                task: Arc::new(task),
                status: None,
                at: now,
                expected_version: Some(read_version),
            });
        }
        // Until the write answers, its outcome is unknown: dropped here (the round timed out)
        // or failed, the claims stay noted for the next claim to settle.
        let unsure: Vec<UnsureClaim> = writes
            .iter()
            .map(|w| UnsureClaim {
                key: w.task.key(),
                version: w.task.metadata.resource_version.clone(),
                read_version: w.expected_version.clone().unwrap_or_default(),
                worker: request.worker_id.clone(),
                lease_until: chrono::Duration::from_std(request.lease)
                    .ok()
                    .and_then(|lease| now.checked_add_signed(lease))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC),
            })
            .collect();
        lock(&self.inner.unsure_claims).extend(unsure);
        let written = self
            .write_claims(conn, &writes, filter.kinds.as_deref())
            .await;
        if written.is_ok() {
            // Answered: this round's keys are reserved, so the notes of them are its own (or
            // older ones of the same task, which its write has settled too).
            lock(&self.inner.unsure_claims)
                .retain(|c| !reserved.iter().any(|r: &Claiming<'_>| r.key == c.key));
        }
        let (written, marker) = written.map_err(error::map)?;
        let mut claimed = Vec::with_capacity(writes.len());
        for (write, written) in writes.into_iter().zip(written) {
            if written {
                claimed.push((Arc::unwrap_or_clone(write.task), marker));
            } else {
                // Written meanwhile (claimed by another worker, cancelled, …).
                skipped.push(write.task.key());
            }
        }
        drop(reserved);
        Ok((claimed, exhausted))
    }

    /// Writes the claims of a claim round (status writes naming the version each was read at)
    /// on `conn`; whether each was written, and the [`ChangeMarker`] of `marker_kinds` the
    /// write read. One claim goes through the one-row statement (the batch statement costs
    /// about a millisecond more to plan for a single row: a lone task waits for it), several
    /// through one batch statement.
    async fn write_claims(
        &self,
        conn: &mut PgConnection,
        writes: &[task_batch::TaskWrite],
        marker_kinds: Option<&[&str]>,
    ) -> std::result::Result<(Vec<bool>, Option<ChangeMarker>), sqlx::Error> {
        let log = &self.inner.log;
        match writes {
            [] => Ok((Vec::new(), None)),
            [one] => {
                let written = write_row(
                    conn,
                    log,
                    Write::Status,
                    one.stored(),
                    one.at,
                    one.expected_version.as_deref(),
                    marker_kinds,
                )
                .await?;
                Ok(match written {
                    Some((_, marker)) => (vec![true], marker),
                    None => (vec![false], None),
                })
            }
            several => {
                let refs: Vec<&task_batch::TaskWrite> = several.iter().collect();
                let (written, columns) =
                    task_batch::write_claims(log, conn, &refs, marker_kinds.unwrap_or_default())
                        .await?;
                log.count(written.iter().filter(|w| **w).count() as u64);
                Ok((written, marker_kinds.and(columns).map(marker)))
            }
        }
    }

    /// Why a write of `current` under `version` wrote nothing: it is gone, or was written
    /// meanwhile (Conflict).
    async fn not_written(&self, current: &Object, version: &str) -> Error {
        let stored = match self
            .get(current.kind, current.namespace(), current.name())
            .await
        {
            Ok(stored) => stored,
            Err(e) => return e,
        };
        if let Err(e) = versioning::check_expected(&stored, Some(version)) {
            return e;
        }
        Error::conflict(format!(
            "{} {:?} was modified concurrently; retry",
            current.kind,
            current.key()
        ))
    }

    /// Writes `task` through a task batcher: creates it if `expected_version` is `None`, else
    /// writes it (its next status) if the stored task still has that version. Whether it did.
    async fn write_task(
        &self,
        task: Arc<Object>,
        status: Option<Arc<TaskStatus>>,
        expected_version: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let batcher = match expected_version {
            None => &self.inner.create_batcher,
            Some(_) => &self.inner.status_batcher,
        };
        let batcher = batcher
            .get_or_init(|| batch::start(task_batch::TaskWrites(Arc::clone(&self.inner.log))));
        let write = task_batch::TaskWrite {
            task,
            status,
            at,
            expected_version: expected_version.map(str::to_string),
        };
        batch::submit(batcher, write)
            .await
            .ok_or_else(|| Error::unavailable("the store's task writer has stopped"))?
            .map_err(error::map)
    }

    fn notifier(&self) -> &Notifier {
        self.inner.notifier.get_or_init(|| {
            let (latest_tx, latest) = watch::channel(0);
            let (claimable_tx, claimable) = watch::channel(0);
            let task = tokio::spawn(listen(self.inner.pool.clone(), latest_tx, claimable_tx));
            Notifier {
                latest,
                claimable,
                task,
            }
        })
    }

    async fn head(&self) -> Result<(u64, Option<u64>)> {
        let (current, oldest): (i64, Option<i64>) = sqlx::query_as(sql::q(&sql::HEAD))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(error::map)?;
        Ok((to_u64(current), oldest.map(to_u64)))
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// [`PostgresStore::write_if`], pruning the events to `log`'s retention. With `marker_kinds` (a
/// status write with an expected version), the statement also reads a [`ChangeMarker`] of
/// those kinds, in its own snapshot: one taken after every lock the transaction holds, so
/// everything committed before the row was locked is before the marker.
async fn write_row(
    conn: &mut PgConnection,
    log: &Arc<EventLog>,
    op: Write,
    stored: Stored<'_>,
    now: DateTime<Utc>,
    expected_version: Option<&str>,
    marker_kinds: Option<&[&str]>,
) -> std::result::Result<Option<(u64, Option<ChangeMarker>)>, sqlx::Error> {
    let object = stored.object;
    let statements = sql::for_kind(object.kind);
    let marker_kinds =
        marker_kinds.filter(|_| matches!((op, expected_version), (Write::Status, Some(_))));
    let statement = match (op, expected_version) {
        (Write::Insert, _) => &statements.insert,
        (Write::Update, None) => &statements.update,
        (Write::Update, Some(_)) => &statements.update_if_version,
        (Write::Status, None) => &statements.update_status,
        (Write::Status, Some(_)) if marker_kinds.is_some() => {
            &statements.update_status_if_version_marked
        }
        (Write::Status, Some(_)) => &statements.update_status_if_version,
        (Write::Delete, _) => &statements.delete,
    };
    let mut query = sqlx::query(sql::q(statement))
        .bind(object.key())
        .bind(Json(stored))
        .bind(now)
        .bind(object.kind.as_str())
        .bind(object.namespace())
        .bind(object.name())
        .bind(log.retention);
    if object.kind == Kind::Task && !matches!(op, Write::Delete) {
        let c = task_columns(stored);
        query = query
            .bind(c.lease_until)
            .bind(c.next_attempt_at)
            .bind(c.status_phase)
            .bind(c.system_ref)
            .bind(c.mode)
            .bind(c.priority)
            .bind(c.assigned_worker)
            .bind(c.claimed_by)
            .bind(c.req_region)
            .bind(c.req_gpu)
            .bind(c.req_model);
    }
    if let Some(version) = expected_version {
        let created = serde_json::to_value(object.metadata.created_at).unwrap_or(Value::Null);
        query = query.bind(version).bind(Json(created));
    }
    if let Some(kinds) = marker_kinds {
        query = query.bind(kinds.to_vec());
    }
    let Some(row) = query.fetch_optional(conn).await? else {
        return Ok(None);
    };
    log.count(1);
    let revision = to_u64(row.try_get(0)?);
    let marker = match marker_kinds {
        Some(_) => Some(marker((row.try_get(1)?, row.try_get(2)?, row.try_get(3)?))),
        None => None,
    };
    Ok(Some((revision, marker)))
}

/// The upkeep of the retained change log, shared by the store and its task batchers.
struct EventLog {
    pool: PgPool,
    /// [`PostgresOptions::event_retention`] as the statements bind it.
    retention: i64,
    /// Writes since the store was made, for [`CATCH_UP_EVERY`].
    writes: AtomicU64,
}

impl EventLog {
    /// Deletes up to [`CATCH_UP_BATCH`] events outside the retention window that the writes'
    /// own prune missed; returns how many.
    async fn catch_up(&self) -> Result<i64> {
        sqlx::query_scalar(sql::CATCH_UP)
            .bind(self.retention)
            .bind(CATCH_UP_BATCH)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| error::map(e).context("pruning store events"))
    }

    /// Counts `n` more writes, and starts a sweep ([`Self::catch_up`]) whenever the count
    /// passes a multiple of [`CATCH_UP_EVERY`]: on a connection of its own, as the write's may
    /// be in a transaction, which a failed sweep would abort.
    fn count(self: &Arc<Self>, n: u64) {
        let before = self.writes.fetch_add(n, Ordering::Relaxed);
        if before / CATCH_UP_EVERY == (before + n) / CATCH_UP_EVERY {
            return;
        }
        let log = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = log.catch_up().await {
                tracing::debug!(error = %e, "sweeping events outside the retention window failed");
            }
        });
    }
}

/// A [`ChangeMarker`] from the columns `sql::CHANGE_MARKER` reads.
fn marker((revision, oldest, latest): (i64, Option<i64>, Option<i64>)) -> ChangeMarker {
    let revision = to_u64(revision);
    ChangeMarker {
        last_change: latest.map_or(0, to_u64),
        revision,
        // Always set since migration 0008; NULL meant that no event was retained.
        oldest_retained: oldest.map_or(revision.saturating_add(1), to_u64),
    }
}

/// The columns of a task row the store sets from the object ([`sql::TASK_COLUMNS`], bound in
/// that order); the formulas of the generated columns they replaced (migration 0006).
#[derive(Debug)]
struct TaskColumns<'a> {
    lease_until: Option<DateTime<Utc>>,
    next_attempt_at: Option<DateTime<Utc>>,
    status_phase: String,
    system_ref: &'a str,
    mode: String,
    priority: &'a str,
    assigned_worker: &'a str,
    claimed_by: &'a str,
    req_region: String,
    req_gpu: bool,
    req_model: String,
}

fn task_columns(stored: Stored<'_>) -> TaskColumns<'_> {
    // orloj_text: a JSON string, or '' for anything else.
    fn text<'v>(v: &'v Value, path: &[&str]) -> &'v str {
        path.iter()
            .try_fold(v, |v, key| v.get(key))
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    // lower(btrim(...)): btrim without characters trims spaces only.
    let normalized = |v: &Value, path: &[&str]| text(v, path).trim_matches(' ').to_lowercase();
    let spec = &stored.object.spec;
    let status = match stored.status {
        Some(typed) => StatusColumns {
            lease_until: time(&typed.lease_until),
            next_attempt_at: time(&typed.next_attempt_at),
            phase: &typed.phase,
            assigned_worker: &typed.assigned_worker,
            claimed_by: &typed.claimed_by,
        },
        None => {
            let status = &stored.object.status;
            let time_at = |field: &str| status.get(field).and_then(Value::as_str).and_then(time);
            StatusColumns {
                lease_until: time_at("leaseUntil"),
                next_attempt_at: time_at("nextAttemptAt"),
                phase: text(status, &["phase"]),
                assigned_worker: text(status, &["assignedWorker"]),
                claimed_by: text(status, &["claimedBy"]),
            }
        }
    };
    TaskColumns {
        lease_until: status.lease_until,
        next_attempt_at: status.next_attempt_at,
        status_phase: status.phase.to_lowercase(),
        system_ref: text(spec, &["system"]),
        mode: normalized(spec, &["mode"]),
        priority: text(spec, &["priority"]),
        assigned_worker: status.assigned_worker,
        claimed_by: status.claimed_by,
        req_region: normalized(spec, &["requirements", "region"]),
        req_gpu: spec.pointer("/requirements/gpu") == Some(&Value::Bool(true)),
        req_model: normalized(spec, &["requirements", "model"]),
    }
}

/// The status fields of [`TaskColumns`], from a typed or a JSON status.
struct StatusColumns<'a> {
    lease_until: Option<DateTime<Utc>>,
    next_attempt_at: Option<DateTime<Utc>>,
    phase: &'a str,
    assigned_worker: &'a str,
    claimed_by: &'a str,
}

/// A status timestamp as the claim rules read it (unparseable counts as unset).
fn time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// An object as a write stores it: `object`, with `status` in place of its own when a worker
/// handed the task status over typed ([`Store::update_task_status_of`]). Serializes as the
/// object with that status would, without building its JSON tree first.
#[derive(Clone, Copy)]
pub(crate) struct Stored<'a> {
    pub object: &'a Object,
    pub status: Option<&'a TaskStatus>,
}

impl<'a> From<&'a Object> for Stored<'a> {
    fn from(object: &'a Object) -> Self {
        Self {
            object,
            status: None,
        }
    }
}

impl Serialize for Stored<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let Some(status) = self.status else {
            return self.object.serialize(serializer);
        };
        // Object's fields, in its order and with its names.
        let o = self.object;
        let mut fields = serializer.serialize_struct("Object", 5)?;
        fields.serialize_field("apiVersion", &o.api_version)?;
        fields.serialize_field("kind", &o.kind)?;
        fields.serialize_field("metadata", &o.metadata)?;
        fields.serialize_field("spec", &o.spec)?;
        fields.serialize_field("status", status)?;
        fields.end()
    }
}

fn label_objects(options: &ListOptions) -> (Vec<Value>, Vec<Value>) {
    let mut must = Vec::new();
    let mut must_not = Vec::new();
    for r in options.selector.requirements() {
        match r {
            Requirement::Equals(k, v) => must.push(json!({ k: v })),
            Requirement::NotEquals(k, v) => must_not.push(json!({ k: v })),
        }
    }
    (must, must_not)
}

/// Keeps `latest` at the newest notified revision; reconnects after errors. Every (re)connect
/// also wakes watchers, since notifications sent while disconnected are lost.
async fn listen(pool: PgPool, latest: watch::Sender<u64>, claimable: watch::Sender<u64>) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener
                .listen_all([sql::EVENTS_CHANNEL, sql::CLAIMABLE_CHANNEL])
                .await
            {
                Ok(()) => loop {
                    // Whatever was notified while not listening is looked at again.
                    latest.send_modify(|_| {});
                    claimable.send_modify(|n| *n = n.wrapping_add(1));
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(n)) if n.channel() == sql::CLAIMABLE_CHANNEL => {
                                claimable.send_modify(|n| *n = n.wrapping_add(1));
                            }
                            Ok(Some(n)) => {
                                if let Ok(rev) = n.payload().parse::<u64>() {
                                    latest.send_modify(|v| *v = (*v).max(rev));
                                }
                            }
                            // Connection lost; try_recv reconnects on the next call.
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(error = %e, "store event listener failed");
                                break;
                            }
                        }
                    }
                    if pool.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                },
                Err(e) => tracing::debug!(error = %e, "LISTEN failed"),
            },
            Err(e) => tracing::debug!(error = %e, "store event listener cannot connect"),
        }
        if pool.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// State of one watch stream.
struct WatchState {
    pool: PgPool,
    kind: Option<Kind>,
    last: u64,
    buffer: VecDeque<WatchEvent>,
    latest: watch::Receiver<u64>,
    poll: Duration,
    /// Whether the last read filled a page (read again without waiting).
    more: bool,
    done: bool,
}

type EventRow = (
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<Json<Object>>,
);

impl WatchState {
    async fn next(&mut self) -> Option<Result<WatchEvent>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some(Ok(event));
            }
            if !self.more {
                self.wait().await;
            }
            // Mark notifications seen before reading, so one arriving during the read wakes us.
            self.latest.borrow_and_update();
            if let Err(e) = self.fill().await {
                self.done = true;
                return Some(Err(e));
            }
        }
    }

    async fn wait(&mut self) {
        tokio::select! {
            changed = self.latest.changed() => {
                if changed.is_err() {
                    // The listener is gone (store dropped): fall back to polling.
                    tokio::time::sleep(self.poll).await;
                }
            }
            _ = tokio::time::sleep(self.poll) => {}
        }
    }

    async fn fill(&mut self) -> Result<()> {
        let rows: Vec<EventRow> = sqlx::query_as(sql::q(&sql::EVENTS))
            .bind(i64::try_from(self.last).unwrap_or(i64::MAX))
            .bind(self.kind.map(Kind::as_str))
            .bind(EVENT_PAGE)
            .fetch_all(&self.pool)
            .await
            .map_err(error::map)?;
        let Some(&(current, oldest, ..)) = rows.first() else {
            return Err(Error::internal("store_revision row is missing"));
        };
        if let Some(oldest) = oldest.map(to_u64)
            && self.last + 1 < oldest
        {
            return Err(Error::new(
                ErrorKind::Gone,
                format!(
                    "watch fell behind: revision {} is no longer retained (oldest {oldest}); re-list and watch again",
                    self.last
                ),
            ));
        }
        let mut count = 0;
        for (_, _, revision, event_type, payload) in rows {
            let (Some(revision), Some(event_type), Some(Json(object))) =
                (revision, event_type, payload)
            else {
                continue;
            };
            let event_type = match event_type.as_str() {
                "added" => WatchEventType::Added,
                "deleted" => WatchEventType::Deleted,
                _ => WatchEventType::Updated,
            };
            count += 1;
            self.last = to_u64(revision);
            self.buffer.push_back(WatchEvent {
                revision: to_u64(revision),
                event_type,
                object,
            });
        }
        self.more = count >= EVENT_PAGE;
        if !self.more {
            // Everything up to `current` of this kind has been read (same snapshot).
            self.last = self.last.max(to_u64(current));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<()> {
        self.timed("ping", async {
            sqlx::query("SELECT 1")
                .execute(&self.inner.pool)
                .await
                .map_err(error::map)?;
            Ok(())
        })
        .await
    }

    async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object> {
        self.timed("get", async {
            let row: Option<(Json<Object>,)> = sqlx::query_as(sql::q(&sql::for_kind(kind).get))
                .bind(scoped_key(namespace, name))
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(error::map)?;
            row.map(|(Json(o),)| o)
                .ok_or_else(|| versioning::not_found(kind, namespace, name))
        })
        .await
    }

    async fn list(&self, kind: Kind, options: &ListOptions) -> Result<ObjectList> {
        self.timed("list", async {
            let (must, must_not) = label_objects(options);
            let limit = options
                .limit
                .filter(|l| *l > 0)
                .map(|l| i64::try_from(l).unwrap_or(i64::MAX));
            let rows: Vec<(Json<Object>,)> = sqlx::query_as(sql::q(&sql::for_kind(kind).list))
                .bind(options.namespace.as_deref())
                .bind(options.after.as_deref())
                .bind(must)
                .bind(must_not)
                .bind(limit)
                .fetch_all(&self.inner.pool)
                .await
                .map_err(error::map)?;
            let items = rows.into_iter().map(|(Json(o),)| o).collect();
            Ok(versioning::page(items, options.limit))
        })
        .await
    }

    async fn create(&self, object: Object) -> Result<Object> {
        self.timed("create", async {
            let now = self.inner.clock.now();
            let created = versioning::prepare_create(object, None, now)?;
            let exists =
                |o: &Object| Error::conflict(format!("{} \"{}\" already exists", o.kind, o.key()));
            if created.kind == Kind::Task {
                let created = Arc::new(created);
                return match self
                    .write_task(Arc::clone(&created), None, None, now)
                    .await?
                {
                    true => Ok(Arc::unwrap_or_clone(created)),
                    false => Err(exists(&created)),
                };
            }
            // One statement, no explicit transaction: the primary key rejects a second create.
            let mut conn = self.inner.pool.acquire().await.map_err(error::map)?;
            match self.write(&mut conn, Write::Insert, &created, now).await {
                Ok(_) => Ok(created),
                Err(e) if error::is_unique_violation(&e) => Err(exists(&created)),
                Err(e) => Err(error::map(e)),
            }
        })
        .await
    }

    async fn update(&self, object: Object) -> Result<Object> {
        self.timed("update", async {
            let (kind, namespace, name) = (object.kind, object.namespace(), object.name());
            self.modify(kind, namespace, name, Write::Update, |current, _| {
                versioning::prepare_update(object.clone(), &current, true)
            })
            .await
        })
        .await
    }

    async fn upsert(&self, object: Object) -> Result<(Object, bool)> {
        self.timed("upsert", async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let now = self.inner.clock.now();
                let mut tx = self.begin().await?;
                let outcome = async {
                    let current = Self::lock(&mut tx, object.kind, &object.key()).await?;
                    let (result, op) = match &current {
                        Some(current) => (
                            versioning::prepare_update(object.clone(), current, false)?,
                            Write::Update,
                        ),
                        None => {
                            let mut fresh = object.clone();
                            fresh.metadata.resource_version.clear();
                            (versioning::prepare_create(fresh, None, now)?, Write::Insert)
                        }
                    };
                    match self.write(&mut tx, op, &result, now).await {
                        Ok(_) => Ok(Some((result, current.is_none()))),
                        // Lost a race with a concurrent create: retry as an update.
                        Err(e) if error::is_unique_violation(&e) && attempt < UPSERT_ATTEMPTS => {
                            Ok(None)
                        }
                        Err(e) => Err(error::map(e)),
                    }
                }
                .await;
                match outcome.transpose() {
                    Some(result) => return finish(tx, result).await,
                    None => rollback(tx).await,
                }
            }
        })
        .await
    }

    async fn update_status(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        expected_resource_version: Option<&str>,
        status: Value,
    ) -> Result<Object> {
        self.timed("update status", async {
            self.modify(kind, namespace, name, Write::Status, |current, _| {
                versioning::prepare_status(&current, expected_resource_version, status)
            })
            .await
        })
        .await
    }

    async fn update_status_of(&self, current: &Object, status: Value) -> Result<Arc<Object>> {
        let version = current.metadata.resource_version.as_str();
        if version.is_empty() {
            // No precondition to write under: take the locked read path.
            return self
                .update_status(
                    current.kind,
                    current.namespace(),
                    current.name(),
                    None,
                    status,
                )
                .await
                .map(Arc::new);
        }
        self.timed("update status", async {
            let now = self.inner.clock.now();
            let updated = Arc::new(versioning::prepare_status(current, None, status)?);
            // One statement: lock the row if it still has `version`, bump, record, write
            // (tasks: with the other tasks' writes waiting at the time).
            let written = if updated.kind == Kind::Task {
                self.write_task(Arc::clone(&updated), None, Some(version), now)
                    .await?
            } else {
                let mut conn = self.inner.pool.acquire().await.map_err(error::map)?;
                self.write_if(&mut conn, Write::Status, &updated, now, Some(version))
                    .await
                    .map_err(error::map)?
                    .is_some()
            };
            match written {
                true => Ok(updated),
                false => Err(self.not_written(current, version).await),
            }
        })
        .await
    }

    async fn update_task_status_of(
        &self,
        current: &Object,
        status: &Arc<TaskStatus>,
    ) -> Result<Arc<Object>> {
        let version = current.metadata.resource_version.as_str();
        if version.is_empty() || current.kind != Kind::Task {
            return orloj_core::store::update_task_status_as_json(self, current, status).await;
        }
        self.timed("update status", async {
            let now = self.inner.clock.now();
            // The next version's shell (what this method returns: its status left empty); the
            // statement stores it with `status`, serialized as it is.
            let shell = Arc::new(versioning::prepare_status(
                current,
                None,
                Value::Object(Default::default()),
            )?);
            let written = self
                .write_task(
                    Arc::clone(&shell),
                    Some(Arc::clone(status)),
                    Some(version),
                    now,
                )
                .await?;
            match written {
                true => Ok(shell),
                false => Err(self.not_written(current, version).await),
            }
        })
        .await
    }

    async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        expected_resource_version: Option<&str>,
    ) -> Result<Object> {
        self.timed("delete", async {
            self.modify(kind, namespace, name, Write::Delete, |current, _| {
                versioning::check_expected(&current, expected_resource_version)?;
                Ok(current)
            })
            .await
        })
        .await
    }

    async fn current_revision(&self) -> Result<u64> {
        self.timed("current revision", async { Ok(self.head().await?.0) })
            .await
    }

    async fn change_marker(&self, kinds: &[Kind]) -> Result<Option<ChangeMarker>> {
        self.timed("change marker", async {
            let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            let columns: (i64, Option<i64>, Option<i64>) =
                sqlx::query_as(sql::q(&sql::CHANGE_MARKER))
                    .bind(&kinds)
                    .fetch_one(&self.inner.pool)
                    .await
                    .map_err(error::map)?;
            Ok(Some(marker(columns)))
        })
        .await
    }

    async fn watch(
        &self,
        kind: Option<Kind>,
        after_revision: Option<u64>,
    ) -> Result<BoxStream<'static, Result<WatchEvent>>> {
        // Start listening before reading the head, so no notification falls in between.
        let latest = self.notifier().latest.clone();
        let (current, oldest) = self.timed("watch", self.head()).await?;
        let last = match after_revision {
            None => current,
            Some(after) => {
                if after > current {
                    return Err(Error::new(
                        ErrorKind::Gone,
                        format!("revision {after} is in the future (current {current})"),
                    ));
                }
                let oldest = oldest.unwrap_or(current + 1);
                if after + 1 < oldest {
                    return Err(Error::new(
                        ErrorKind::Gone,
                        format!("revision {after} is no longer retained (oldest {oldest})"),
                    ));
                }
                after
            }
        };
        let state = WatchState {
            pool: self.inner.pool.clone(),
            kind,
            last,
            buffer: VecDeque::new(),
            latest,
            poll: self.inner.options.watch_poll_interval,
            // Replay (or an immediate first read) without waiting.
            more: after_revision.is_some_and(|a| a < current),
            done: false,
        };
        Ok(stream::unfold(state, |mut state| async move {
            state.next().await.map(|item| (item, state))
        })
        .boxed())
    }

    fn claim_signal(&self) -> Option<BoxStream<'static, ()>> {
        let mut claimable = self.notifier().claimable.clone();
        claimable.mark_unchanged();
        Some(WatchStream::from_changes(claimable).map(|_| ()).boxed())
    }

    async fn claim_task(&self, request: &ClaimRequest) -> Result<Option<Object>> {
        Ok(self
            .claim(request, 1, None)
            .await?
            .pop()
            .map(|(task, _)| task))
    }

    async fn claim_task_marked(
        &self,
        request: &ClaimRequest,
        kinds: &[Kind],
    ) -> Result<Option<(Object, Option<ChangeMarker>)>> {
        Ok(self.claim(request, 1, Some(kinds)).await?.pop())
    }

    async fn claim_tasks(
        &self,
        request: &ClaimRequest,
        max: usize,
        marker_kinds: Option<&[Kind]>,
    ) -> Result<Vec<(Object, Option<ChangeMarker>)>> {
        self.claim(request, max, marker_kinds).await
    }

    async fn renew_task_lease(
        &self,
        namespace: &str,
        name: &str,
        worker_id: &str,
        lease: Duration,
    ) -> Result<Object> {
        self.timed("renew task lease", async {
            self.modify(
                Kind::Task,
                namespace,
                name,
                Write::Status,
                |mut task, now| {
                    versioning::check_holder(&task, worker_id)?;
                    task_queue::apply_renewal(&mut task, lease, now);
                    versioning::bump(&mut task);
                    Ok(task)
                },
            )
            .await
        })
        .await
    }

    async fn release_task(&self, namespace: &str, name: &str, worker_id: &str) -> Result<Object> {
        self.timed("release task", async {
            self.modify(Kind::Task, namespace, name, Write::Status, |mut task, _| {
                versioning::check_holder(&task, worker_id)?;
                task_queue::apply_release(&mut task);
                versioning::bump(&mut task);
                Ok(task)
            })
            .await
        })
        .await
    }

    async fn append_task_log(&self, namespace: &str, name: &str, entry: &str) -> Result<()> {
        self.timed("append task log", async {
            let batcher = self
                .inner
                .log_batcher
                .get_or_init(|| batch::start(task_batch::LogLines(self.inner.pool.clone())));
            let line = task_batch::LogLine {
                key: scoped_key(namespace, name),
                entry: entry.to_string(),
                at: self.inner.clock.now(),
            };
            let result = batch::submit(batcher, line)
                .await
                .ok_or_else(|| Error::unavailable("the store's log writer has stopped"))?;
            match result {
                Ok(_) => Ok(()),
                Err(e) if error::is_foreign_key_violation(&e) => {
                    Err(versioning::not_found(Kind::Task, namespace, name))
                }
                Err(e) => Err(error::map(e)),
            }
        })
        .await
    }

    async fn task_logs(&self, namespace: &str, name: &str, limit: usize) -> Result<Vec<String>> {
        self.timed("task logs", async {
            let key = scoped_key(namespace, name);
            let lines: Vec<String> = sqlx::query_scalar(sql::TASK_LOGS)
                .bind(&key)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.inner.pool)
                .await
                .map_err(error::map)?;
            if lines.is_empty() {
                let exists: bool = sqlx::query_scalar(sql::TASK_EXISTS)
                    .bind(&key)
                    .fetch_one(&self.inner.pool)
                    .await
                    .map_err(error::map)?;
                if !exists {
                    return Err(versioning::not_found(Kind::Task, namespace, name));
                }
            }
            Ok(lines)
        })
        .await
    }
}

type PgTransaction = sqlx::Transaction<'static, sqlx::Postgres>;

/// Commits `tx` when `result` is Ok, rolls it back otherwise. A dropped sqlx transaction
/// only queues its rollback until the connection is used again, so its locks would outlive
/// a rejected write: a claim right after it would skip the still-locked row.
pub(crate) async fn finish<T>(tx: PgTransaction, result: Result<T>) -> Result<T> {
    match result {
        Ok(value) => {
            tx.commit().await.map_err(error::map)?;
            Ok(value)
        }
        Err(e) => {
            rollback(tx).await;
            Err(e)
        }
    }
}

async fn rollback(tx: PgTransaction) {
    // A failed rollback means a broken connection, which the pool discards; the caller
    // needs the reason the write was rejected, not this.
    if let Err(e) = tx.rollback().await {
        tracing::debug!(error = %e, "rollback after a rejected write failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_key_is_reserved_once_until_released() {
        let keys = Mutex::new(HashSet::new());
        let first = Claiming::reserve(&keys, "ns/a".into());
        assert!(first.is_some());
        // A second reservation of the key fails and leaves the first in place.
        assert!(Claiming::reserve(&keys, "ns/a".into()).is_none());
        assert_eq!(Claiming::reserved(&keys), ["ns/a"]);
        let other = Claiming::reserve(&keys, "ns/b".into());
        assert!(other.is_some());
        drop(first);
        assert_eq!(Claiming::reserved(&keys), ["ns/b"]);
        assert!(Claiming::reserve(&keys, "ns/a".into()).is_some());
    }

    /// A task stored with a typed status is the JSON of the object carrying that status, and
    /// its row columns are the ones that object gives.
    #[test]
    fn a_typed_status_is_stored_as_the_object_with_its_json() {
        use orloj_core::resources::{TaskMessage, TaskTraceEvent};
        let mut task: Object = serde_json::from_value(json!({
            "apiVersion": "orloj.dev/v1",
            "kind": "Task",
            "metadata": {"name": "t", "namespace": "ns", "resourceVersion": "4"},
            "spec": {"system": "s", "mode": " Run ", "requirements": {"region": "EU", "gpu": true}},
            "status": {"phase": "Pending"}
        }))
        .expect("task");
        let status = TaskStatus {
            phase: "Running".into(),
            claimed_by: "w1".into(),
            assigned_worker: "w1".into(),
            lease_until: "2026-12-08T01:31:48.462Z".into(),
            next_attempt_at: "not a time".into(),
            attempts: 2,
            output: [("agent.1.output".into(), "x".repeat(40).into())].into(),
            trace: vec![TaskTraceEvent {
                event_type: "agent_start".into(),
                agent: "a".into(),
                ..Default::default()
            }]
            .into(),
            messages: vec![TaskMessage {
                message_id: "ns/t/a001/h001/system/a".into(),
                ..Default::default()
            }]
            .into(),
            ..Default::default()
        };
        let typed = Stored {
            object: &task,
            status: Some(&status),
        };
        let stored = serde_json::to_value(typed).expect("typed");
        let typed_columns = format!("{:?}", task_columns(typed));
        task.status = serde_json::to_value(&status).expect("status");
        assert_eq!(stored, serde_json::to_value(&task).expect("object"));
        assert_eq!(typed_columns, format!("{:?}", task_columns((&task).into())));
        assert!(
            typed_columns.contains("status_phase: \"running\""),
            "{typed_columns}"
        );
        assert!(
            typed_columns.contains("next_attempt_at: None"),
            "{typed_columns}"
        );
    }
}
