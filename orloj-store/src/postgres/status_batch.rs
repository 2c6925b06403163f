//! Task status writes that name the version they start from ([`Store::update_status_of`]),
//! written several at a time.
//!
//! Every write takes the `store_revision` row lock until it commits, so under load the writes of
//! many tasks queue on that one lock, each with its own statement, commit and round trip. The
//! batcher turns the writes waiting at one moment into one statement
//! ([`sql::TASK_STATUS_BATCH`]): one lock, one commit. It adds no wait: a write that finds the
//! batcher idle goes out alone at once (with the one-row statement); writes arriving while a
//! statement runs go out together with the next one. Each write keeps its own version guard, event and revision.
//!
//! [`Store::update_status_of`]: orloj_core::Store::update_status_of

use super::{Write, sql, task_columns, write_row};
use chrono::{DateTime, Utc};
use orloj_core::Object;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most writes in one statement.
const MAX_BATCH: usize = 64;

/// One version-guarded status write of a task, and where its outcome goes: whether the task
/// still had `version` (and `task`'s createdAt) and was written.
pub(super) struct StatusWrite {
    pub task: Arc<Object>,
    pub version: String,
    pub at: DateTime<Utc>,
    pub reply: oneshot::Sender<Result<bool, sqlx::Error>>,
}

/// Starts the batcher on `pool`; it runs until the returned sender is dropped. `written` is
/// told how many rows each statement wrote. One statement at a time: a second writer was slower
/// (the two batches queue on the revision lock and are smaller).
pub(super) fn start(
    pool: PgPool,
    retention: i64,
    written: impl Fn(u64) + Send + 'static,
) -> mpsc::UnboundedSender<StatusWrite> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(pool, retention, rx, written));
    tx
}

async fn run(
    pool: PgPool,
    retention: i64,
    mut queue: mpsc::UnboundedReceiver<StatusWrite>,
    written: impl Fn(u64),
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcomes = match batch.as_slice() {
            // Alone, the one-row statement: the batch statement costs twice as much for one.
            [_] => Err(()),
            _ => write_batch(&pool, retention, &batch).await.map_err(|_| ()),
        };
        match outcomes {
            Ok(outcomes) => {
                written(outcomes.iter().filter(|w| **w).count() as u64);
                for (request, outcome) in batch.drain(..).zip(outcomes) {
                    // The caller may have given up (its operation timed out).
                    let _ = request.reply.send(Ok(outcome));
                }
            }
            Err(()) => {
                // Alone, or after the batch failed: one write's failure must not fail the
                // others, so each goes again on its own.
                for request in batch.drain(..) {
                    let outcome = write_one(&pool, retention, &request).await;
                    if let Ok(true) = outcome {
                        written(1);
                    }
                    let _ = request.reply.send(outcome);
                }
            }
        }
    }
}

/// Writes `request` with the one-row statement (`update_status_if_version`).
async fn write_one(
    pool: &PgPool,
    retention: i64,
    request: &StatusWrite,
) -> Result<bool, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let written = write_row(
        &mut conn,
        retention,
        Write::Status,
        &request.task,
        request.at,
        Some(&request.version),
        None,
    )
    .await?;
    Ok(written.is_some())
}

/// Writes `batch` in one statement; the outcome of each write, in order.
async fn write_batch(
    pool: &PgPool,
    retention: i64,
    batch: &[StatusWrite],
) -> Result<Vec<bool>, sqlx::Error> {
    let n = batch.len();
    let mut keys = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut namespaces = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut lease_until = Vec::with_capacity(n);
    let mut next_attempt_at = Vec::with_capacity(n);
    let mut status_phase = Vec::with_capacity(n);
    let mut system_ref = Vec::with_capacity(n);
    let mut mode = Vec::with_capacity(n);
    let mut priority = Vec::with_capacity(n);
    let mut assigned_worker = Vec::with_capacity(n);
    let mut claimed_by = Vec::with_capacity(n);
    let mut req_region = Vec::with_capacity(n);
    let mut req_gpu = Vec::with_capacity(n);
    let mut req_model = Vec::with_capacity(n);
    for w in batch {
        let task = &*w.task;
        keys.push(task.key());
        payloads.push(Json(task));
        times.push(w.at);
        namespaces.push(task.namespace());
        names.push(task.name());
        versions.push(w.version.as_str());
        created.push(Json(
            serde_json::to_value(task.metadata.created_at).unwrap_or(Value::Null),
        ));
        let c = task_columns(task);
        lease_until.push(c.lease_until);
        next_attempt_at.push(c.next_attempt_at);
        status_phase.push(c.status_phase);
        system_ref.push(c.system_ref);
        mode.push(c.mode);
        priority.push(c.priority);
        assigned_worker.push(c.assigned_worker);
        claimed_by.push(c.claimed_by);
        req_region.push(c.req_region);
        req_gpu.push(c.req_gpu);
        req_model.push(c.req_model);
    }
    let rows: Vec<i64> = sqlx::query_scalar(sql::q(&sql::TASK_STATUS_BATCH))
        .bind(keys)
        .bind(payloads)
        .bind(times)
        .bind(namespaces)
        .bind(names)
        .bind(lease_until)
        .bind(next_attempt_at)
        .bind(status_phase)
        .bind(system_ref)
        .bind(mode)
        .bind(priority)
        .bind(assigned_worker)
        .bind(claimed_by)
        .bind(req_region)
        .bind(req_gpu)
        .bind(req_model)
        .bind(versions)
        .bind(created)
        .bind(retention)
        .fetch_all(pool)
        .await?;
    let mut outcomes = vec![false; n];
    for ord in rows {
        if let Some(outcome) = usize::try_from(ord - 1)
            .ok()
            .and_then(|i| outcomes.get_mut(i))
        {
            *outcome = true;
        }
    }
    Ok(outcomes)
}
