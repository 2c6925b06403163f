//! Task creates and task status writes that name the version they start from
//! ([`Store::update_status_of`]), written several at a time.
//!
//! Every write takes the `store_revision` row lock until it commits, so under load the writes of
//! many tasks queue on that one lock, each with its own statement, commit and round trip. A
//! batcher turns the writes waiting at one moment into one statement
//! ([`sql::TASK_CREATE_BATCH`], [`sql::TASK_STATUS_BATCH`]): one lock, one commit. It adds no
//! wait: a write that finds the batcher idle goes out alone at once (with the one-row
//! statement); writes arriving while a statement runs go out together with the next one. Each
//! write keeps its own guard, event and revision.
//!
//! [`Store::update_status_of`]: orloj_core::Store::update_status_of

use super::{EventLog, Write, error, sql, task_columns, write_row};
use chrono::{DateTime, Utc};
use orloj_core::Object;
use serde_json::Value;
use sqlx::types::Json;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most writes in one statement.
const MAX_BATCH: usize = 64;

/// One task write, and where its outcome goes: whether it was written (a create: the task did
/// not exist yet; a status write: the stored task still had the version expected).
pub(super) struct TaskWrite {
    /// What to write: the task as created, or its next version.
    pub task: Arc<Object>,
    pub at: DateTime<Utc>,
    /// `None` for a create; the resourceVersion a status write starts from.
    pub expected_version: Option<String>,
    pub reply: oneshot::Sender<Result<bool, sqlx::Error>>,
}

impl TaskWrite {
    fn answer(self, outcome: Result<bool, sqlx::Error>) {
        // Let go of the task first: a create's caller takes it back without a copy.
        let TaskWrite { task, reply, .. } = self;
        drop(task);
        // The caller may have given up (its operation timed out).
        let _ = reply.send(outcome);
    }
}

/// Starts a batcher on `log`'s pool for one kind of write (creates, or status writes: a batch
/// never mixes them); it runs until the returned sender is dropped. One statement at a time: a
/// second writer was slower (two batches queue on the revision lock, and are smaller).
pub(super) fn start(log: Arc<EventLog>) -> mpsc::UnboundedSender<TaskWrite> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(log, rx));
    tx
}

async fn run(log: Arc<EventLog>, mut queue: mpsc::UnboundedReceiver<TaskWrite>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A caller that gave up (its operation timed out) was told so: its write is not made.
        batch.retain(|w| !w.reply.is_closed());
        let outcome = match batch.as_slice() {
            [] => continue,
            // Alone, the one-row statement: the batch statement costs twice as much for one.
            [_] => Each::Write,
            _ => match write_batch(&log, &batch).await {
                Ok(outcomes) => {
                    log.count(outcomes.iter().filter(|w| **w).count() as u64);
                    for (request, outcome) in batch.drain(..).zip(outcomes) {
                        request.answer(Ok(outcome));
                    }
                    continue;
                }
                // The database refused the statement: one of the writes may be to blame.
                Err(sqlx::Error::Database(_)) => Each::Write,
                // No connection, or it broke: the one-row statements would fare no better.
                Err(e) => Each::Fail(e.to_string()),
            },
        };
        for request in batch.drain(..) {
            let outcome = match &outcome {
                Each::Write => write_one(&log, &request).await,
                Each::Fail(e) => Err(sqlx::Error::Io(std::io::Error::other(e.clone()))),
            };
            request.answer(outcome);
        }
    }
}

/// What becomes of each write of a batch not written as one statement.
enum Each {
    /// Written on its own, so that one bad write fails alone.
    Write,
    /// Fails with this (connection trouble).
    Fail(String),
}

/// Writes `request` with the one-row statement.
async fn write_one(log: &Arc<EventLog>, request: &TaskWrite) -> Result<bool, sqlx::Error> {
    let mut conn = log.pool.acquire().await?;
    let (op, expected) = match &request.expected_version {
        None => (Write::Insert, None),
        Some(version) => (Write::Status, Some(version.as_str())),
    };
    match write_row(
        &mut conn,
        log,
        op,
        &request.task,
        request.at,
        expected,
        None,
    )
    .await
    {
        Ok(written) => Ok(written.is_some()),
        Err(e) if request.expected_version.is_none() && error::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes `batch` (all creates or all status writes) in one statement; the outcome of each
/// write, in order.
async fn write_batch(log: &EventLog, batch: &[TaskWrite]) -> Result<Vec<bool>, sqlx::Error> {
    let creates = batch[0].expected_version.is_none();
    if batch
        .iter()
        .any(|w| w.expected_version.is_none() != creates)
    {
        return Err(sqlx::Error::Protocol(
            "a task batch mixes creates and status writes".into(),
        ));
    }
    // A create statement takes each key once; a later create of the same key in the batch
    // fails as the second create of a key does.
    let mut keys = HashSet::new();
    let sent: Vec<usize> = (0..batch.len())
        .filter(|&i| !creates || keys.insert(batch[i].task.key()))
        .collect();
    let rows = TaskRows::of(sent.iter().map(|&i| &batch[i]));
    let statement = if creates {
        &sql::TASK_CREATE_BATCH
    } else {
        &sql::TASK_STATUS_BATCH
    };
    let mut query = rows.bind(sqlx::query_scalar::<_, i64>(sql::q(statement)));
    if !creates {
        let versions: Vec<&str> = sent
            .iter()
            .map(|&i| batch[i].expected_version.as_deref().unwrap_or(""))
            .collect();
        let created: Vec<Json<Value>> = sent
            .iter()
            .map(|&i| {
                Json(serde_json::to_value(batch[i].task.metadata.created_at).unwrap_or(Value::Null))
            })
            .collect();
        query = query.bind(versions).bind(created);
    }
    let written = query.bind(log.retention).fetch_all(&log.pool).await?;
    let mut outcomes = vec![false; batch.len()];
    for ord in written {
        let position = usize::try_from(ord - 1).ok().and_then(|p| sent.get(p));
        if let Some(&i) = position {
            outcomes[i] = true;
        }
    }
    Ok(outcomes)
}

/// The input arrays every task batch statement starts with ($1 to $16).
struct TaskRows<'a> {
    keys: Vec<String>,
    payloads: Vec<Json<&'a Object>>,
    times: Vec<DateTime<Utc>>,
    namespaces: Vec<&'a str>,
    names: Vec<&'a str>,
    lease_until: Vec<Option<DateTime<Utc>>>,
    next_attempt_at: Vec<Option<DateTime<Utc>>>,
    status_phase: Vec<String>,
    system_ref: Vec<&'a str>,
    mode: Vec<String>,
    priority: Vec<&'a str>,
    assigned_worker: Vec<&'a str>,
    claimed_by: Vec<&'a str>,
    req_region: Vec<String>,
    req_gpu: Vec<bool>,
    req_model: Vec<String>,
}

impl<'a> TaskRows<'a> {
    fn of(writes: impl Iterator<Item = &'a TaskWrite>) -> Self {
        let mut rows = TaskRows {
            keys: Vec::new(),
            payloads: Vec::new(),
            times: Vec::new(),
            namespaces: Vec::new(),
            names: Vec::new(),
            lease_until: Vec::new(),
            next_attempt_at: Vec::new(),
            status_phase: Vec::new(),
            system_ref: Vec::new(),
            mode: Vec::new(),
            priority: Vec::new(),
            assigned_worker: Vec::new(),
            claimed_by: Vec::new(),
            req_region: Vec::new(),
            req_gpu: Vec::new(),
            req_model: Vec::new(),
        };
        for w in writes {
            let task = &*w.task;
            rows.keys.push(task.key());
            rows.payloads.push(Json(task));
            rows.times.push(w.at);
            rows.namespaces.push(task.namespace());
            rows.names.push(task.name());
            let c = task_columns(task);
            rows.lease_until.push(c.lease_until);
            rows.next_attempt_at.push(c.next_attempt_at);
            rows.status_phase.push(c.status_phase);
            rows.system_ref.push(c.system_ref);
            rows.mode.push(c.mode);
            rows.priority.push(c.priority);
            rows.assigned_worker.push(c.assigned_worker);
            rows.claimed_by.push(c.claimed_by);
            rows.req_region.push(c.req_region);
            rows.req_gpu.push(c.req_gpu);
            rows.req_model.push(c.req_model);
        }
        rows
    }

    /// Binds the arrays as $1 to $16 ([`sql::TASK_COLUMNS`] in their order).
    fn bind<O>(
        self,
        query: sqlx::query::QueryScalar<'a, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryScalar<'a, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(self.keys)
            .bind(self.payloads)
            .bind(self.times)
            .bind(self.namespaces)
            .bind(self.names)
            .bind(self.lease_until)
            .bind(self.next_attempt_at)
            .bind(self.status_phase)
            .bind(self.system_ref)
            .bind(self.mode)
            .bind(self.priority)
            .bind(self.assigned_worker)
            .bind(self.claimed_by)
            .bind(self.req_region)
            .bind(self.req_gpu)
            .bind(self.req_model)
    }
}
