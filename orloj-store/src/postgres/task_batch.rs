//! The task writes sent several at a time ([`super::batch`]): task creates, task status writes
//! that name the version they start from ([`Store::update_status_of`], and
//! [`Store::update_task_status_of`] with its typed status), and task log lines.
//!
//! Every task write takes the `store_revision` row lock until it commits, so under load the
//! writes of many tasks queue on that one lock, each with its own statement, commit and round
//! trip. A batch statement ([`sql::TASK_CREATE_BATCH`], [`sql::TASK_STATUS_BATCH`]) takes it
//! once and commits once; each write keeps its own guard, event and revision. Log lines take no
//! lock, but two per task were a quarter of a durable task's statements.
//!
//! [`Store::update_status_of`]: orloj_core::Store::update_status_of
//! [`Store::update_task_status_of`]: orloj_core::Store::update_task_status_of

use super::batch::Batch;
use super::{EventLog, Stored, Write, error, sql, task_columns, write_row};
use chrono::{DateTime, Utc};
use orloj_core::Object;
use orloj_core::resources::TaskStatus;
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgConnection, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Row};
use std::collections::HashSet;
use std::sync::Arc;

/// One task write: a create (the task must not exist yet) or a status write (the stored task
/// must still have the version expected). Its outcome: whether it was written.
pub(super) struct TaskWrite {
    /// What to write: the task as created, or its next version.
    pub task: Arc<Object>,
    /// The status to store instead of `task`'s, when a worker handed it over typed
    /// ([`Store::update_task_status_of`]): serialized straight into the statement.
    ///
    /// [`Store::update_task_status_of`]: orloj_core::Store::update_task_status_of
    pub status: Option<Arc<TaskStatus>>,
    pub at: DateTime<Utc>,
    /// `None` for a create; the resourceVersion a status write starts from.
    pub expected_version: Option<String>,
}

impl TaskWrite {
    /// The task as it is stored.
    pub fn stored(&self) -> Stored<'_> {
        Stored {
            object: &self.task,
            status: self.status.as_deref(),
        }
    }
}

/// Task creates, or task status writes (one batcher each: a batch never mixes them; one
/// statement at a time: a second writer was slower, as two batches queue on the revision lock
/// and are smaller).
pub(super) struct TaskWrites(pub Arc<EventLog>);

impl Batch for TaskWrites {
    type Write = TaskWrite;
    type Outcome = bool;

    async fn write_one(&self, write: &TaskWrite) -> Result<bool, sqlx::Error> {
        write_one(&self.0, write).await
    }

    async fn write_many(&self, writes: &[&TaskWrite]) -> Result<Vec<bool>, sqlx::Error> {
        let outcomes = write_batch(&self.0, writes).await?;
        self.0.count(outcomes.iter().filter(|w| **w).count() as u64);
        Ok(outcomes)
    }
}

/// One task log line.
pub(super) struct LogLine {
    pub key: String,
    pub entry: String,
    pub at: DateTime<Utc>,
}

/// Task log lines, appended in the order they were queued. A line of a task that does not
/// exist fails with the foreign key violation.
pub(super) struct LogLines(pub PgPool);

impl Batch for LogLines {
    type Write = LogLine;
    type Outcome = ();

    async fn write_one(&self, line: &LogLine) -> Result<(), sqlx::Error> {
        sqlx::query(sql::APPEND_LOG)
            .bind(&line.key)
            .bind(&line.entry)
            .bind(line.at)
            .execute(&self.0)
            .await
            .map(|_| ())
    }

    async fn write_many(&self, lines: &[&LogLine]) -> Result<Vec<()>, sqlx::Error> {
        let keys: Vec<&str> = lines.iter().map(|l| l.key.as_str()).collect();
        let entries: Vec<&str> = lines.iter().map(|l| l.entry.as_str()).collect();
        let times: Vec<DateTime<Utc>> = lines.iter().map(|l| l.at).collect();
        sqlx::query(sql::APPEND_LOG_BATCH)
            .bind(keys)
            .bind(entries)
            .bind(times)
            .execute(&self.0)
            .await?;
        Ok(vec![(); lines.len()])
    }
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
        request.stored(),
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
async fn write_batch(log: &EventLog, batch: &[&TaskWrite]) -> Result<Vec<bool>, sqlx::Error> {
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
    let statement = if creates {
        &sql::TASK_CREATE_BATCH
    } else {
        &sql::TASK_STATUS_BATCH
    };
    let rows = bind_writes(statement, batch, &sent)
        .bind(log.retention)
        .fetch_all(&log.pool)
        .await?;
    outcomes(&rows, batch.len(), &sent)
}

/// Writes the claims of several tasks (status writes naming the version each was read at) in
/// one statement on `conn` ([`sql::TASK_CLAIM_BATCH`]): not through the status batcher, whose
/// queue a claim waited in behind step writes. Whether each was written, and the marker
/// columns of `marker_kinds` the statement read (when any claim was written).
pub(super) async fn write_claims(
    log: &EventLog,
    conn: &mut PgConnection,
    claims: &[&TaskWrite],
    marker_kinds: &[&str],
) -> Result<(Vec<bool>, Option<MarkerColumns>), sqlx::Error> {
    let sent: Vec<usize> = (0..claims.len()).collect();
    let rows = bind_writes(&sql::TASK_CLAIM_BATCH, claims, &sent)
        .bind(log.retention)
        .bind(marker_kinds)
        .fetch_all(conn)
        .await?;
    let marker = match rows.first() {
        Some(row) => Some((row.try_get(1)?, row.try_get(2)?, row.try_get(3)?)),
        None => None,
    };
    Ok((outcomes(&rows, claims.len(), &sent)?, marker))
}

/// The current revision, the oldest retained one and the latest event of the kinds asked
/// about, as a claim statement reads them.
pub(super) type MarkerColumns = (i64, Option<i64>, Option<i64>);

/// `statement` with the rows `sent` (positions in `batch`) bound, up to the parameters after
/// the input arrays (the retention, …).
fn bind_writes<'a>(
    statement: &Arc<str>,
    batch: &[&'a TaskWrite],
    sent: &[usize],
) -> Query<'a, Postgres, PgArguments> {
    let rows = TaskRows::of(sent.iter().map(|&i| batch[i]));
    let mut query = rows.bind(sqlx::query(sql::q(statement)));
    if batch.first().is_some_and(|w| w.expected_version.is_some()) {
        let versions: Vec<&'a str> = sent
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
    query
}

/// Whether each of `count` writes was written, from the 1-based positions in `sent` that the
/// statement returned first in each row.
fn outcomes(rows: &[PgRow], count: usize, sent: &[usize]) -> Result<Vec<bool>, sqlx::Error> {
    let mut outcomes = vec![false; count];
    for row in rows {
        let ord: i64 = row.try_get(0)?;
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
    payloads: Vec<Json<Stored<'a>>>,
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
            let stored = w.stored();
            let task = stored.object;
            rows.keys.push(task.key());
            rows.payloads.push(Json(stored));
            rows.times.push(w.at);
            rows.namespaces.push(task.namespace());
            rows.names.push(task.name());
            let c = task_columns(stored);
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
    fn bind(self, query: Query<'a, Postgres, PgArguments>) -> Query<'a, Postgres, PgArguments> {
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
