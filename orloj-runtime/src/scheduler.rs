//! The task-scheduler controller run by `orlojd` (spec runtime §4.2): places Pending tasks on
//! workers by writing `status.assignedWorker`, a hint the claim rules honour (a Pending task
//! assigned to a worker is only claimed by that worker).
//!
//! Every pass: the eligible workers are those in phase Ready or Pending whose heartbeat is at
//! most [`WORKER_STALE_AFTER`] old. For each Pending, due, non-template task (by name) the
//! current assignment is kept when its worker is still eligible, fits, and has room
//! (`currentTasks + assignments kept or made this pass` below its `max_concurrent_tasks`) or no
//! fitting worker has room; otherwise it is cleared (history `assignment_cleared`) and the
//! fitting worker with the lowest `currentTasks + assignments this pass` below its
//! `max_concurrent_tasks` is chosen (ties by name). Writes use compare-and-swap; a task written
//! concurrently is retried on the next pass.
//!
//! "Has room" is ours: the reference keeps an assignment to a worker that is full, and as only
//! the assigned worker may claim a Pending task, the task then waits for that worker however
//! many others are idle.

use crate::controllers::WORKER_STALE_AFTER;
use crate::events::{Event, EventBus};
use chrono::{DateTime, Utc};
use orloj_core::{Clock, ErrorKind, Kind, ListOptions, Object, Result, Store, task_queue};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Event source of the scheduler's events.
pub const EVENT_SOURCE: &str = "task-scheduler";

/// What one pass changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulePass {
    /// Tasks newly assigned (task key → worker).
    pub assigned: Vec<(String, String)>,
    /// Tasks whose assignment was cleared (task key → previous worker).
    pub cleared: Vec<(String, String)>,
    /// Tasks left for the next pass because they were written concurrently.
    pub conflicts: usize,
}

/// Periodically assigns pending tasks to workers.
#[derive(Clone)]
pub struct TaskScheduler {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    events: Option<Arc<dyn EventBus>>,
}

impl std::fmt::Debug for TaskScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskScheduler")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// A worker as the scheduler sees it.
#[derive(Debug, Clone)]
struct Candidate {
    name: String,
    region: String,
    gpu: bool,
    supported_models: Vec<String>,
    capacity: i64,
    load: i64,
}

/// What a task asks of its worker (`spec.requirements`).
#[derive(Debug, Clone, Default)]
struct Requirements {
    region: String,
    gpu: bool,
    model: String,
}

impl Requirements {
    fn of(task: &Object) -> Self {
        let r = task.spec.get("requirements");
        let text = |k: &str| {
            r.and_then(|r| r.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_string()
        };
        Requirements {
            region: text("region"),
            gpu: r
                .and_then(|r| r.get("gpu"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            model: text("model"),
        }
    }

    /// Region equal ignoring case when required; a GPU when required; the model among the
    /// worker's supported models when it lists any.
    fn fit(&self, w: &Candidate) -> bool {
        (self.region.is_empty() || self.region.eq_ignore_ascii_case(w.region.trim()))
            && (!self.gpu || w.gpu)
            && (self.model.is_empty()
                || w.supported_models.is_empty()
                || w.supported_models
                    .iter()
                    .any(|m| m.trim().eq_ignore_ascii_case(&self.model)))
    }
}

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    v.and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The worker as a candidate, when it is eligible: phase Ready or Pending and a heartbeat at
/// most [`WORKER_STALE_AFTER`] before `now`.
fn eligible(worker: &Object, now: DateTime<Utc>) -> Option<Candidate> {
    let phase = worker.phase();
    if !(phase.eq_ignore_ascii_case("ready") || phase.eq_ignore_ascii_case("pending")) {
        return None;
    }
    let beat = parse_time(worker.status.get("lastHeartbeat"))?;
    let age = now.signed_duration_since(beat).to_std().unwrap_or_default();
    if age > WORKER_STALE_AFTER {
        return None;
    }
    let spec = &worker.spec;
    let caps = spec.get("capabilities");
    Some(Candidate {
        name: worker.name().to_string(),
        region: spec
            .get("region")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        gpu: caps
            .and_then(|c| c.get("gpu"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        supported_models: caps
            .and_then(|c| c.get("supported_models"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        // ≤0 means 1, as at claim time (§4.4).
        capacity: spec
            .get("max_concurrent_tasks")
            .and_then(Value::as_i64)
            .filter(|n| *n > 0)
            .unwrap_or(1),
        load: worker
            .status
            .get("currentTasks")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .max(0),
    })
}

/// Whether the task is waiting for a worker: Pending (or no phase), due, not a template.
fn schedulable(task: &Object, now: DateTime<Utc>) -> bool {
    let phase = task.phase();
    (phase.is_empty() || phase.eq_ignore_ascii_case("pending"))
        && !task_queue::is_template(task)
        && parse_time(task.status.get("nextAttemptAt")).is_none_or(|t| t <= now)
}

impl TaskScheduler {
    /// A scheduler over `store` that runs a pass every `interval`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, interval: Duration) -> Self {
        Self {
            store,
            clock,
            interval,
            events: None,
        }
    }

    /// Publishes `task.assigned` / `task.assignment_cleared` events (source
    /// [`EVENT_SOURCE`]) for the assignments it writes.
    pub fn with_events(mut self, events: Arc<dyn EventBus>) -> Self {
        self.events = Some(events);
        self
    }

    /// Runs until `cancel` fires. Errors are logged and retried on the next tick.
    pub async fn run(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.reconcile_once().await {
                tracing::warn!(error = %e, "task scheduling failed; retrying next interval");
            }
        }
    }

    /// One pass over the workers and pending tasks.
    pub async fn reconcile_once(&self) -> Result<SchedulePass> {
        let now = self.clock.now();
        let workers = self
            .store
            .list(Kind::Worker, &ListOptions::default())
            .await?;
        let mut candidates: Vec<Candidate> = workers
            .items
            .iter()
            .filter_map(|w| eligible(w, now))
            .collect();
        candidates.sort_by(|a, b| a.name.cmp(&b.name));
        let mut tasks: Vec<Object> = self
            .store
            .list(Kind::Task, &ListOptions::default())
            .await?
            .items
            .into_iter()
            .filter(|t| schedulable(t, now))
            .collect();
        tasks.sort_by(|a, b| (a.name(), a.namespace()).cmp(&(b.name(), b.namespace())));

        let mut pass = SchedulePass::default();
        // Kept assignments count as load too: those tasks will run on that worker.
        let index: HashMap<String, usize> = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        for task in tasks {
            let req = Requirements::of(&task);
            let current = task
                .status
                .get("assignedWorker")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let has_room = |c: &Candidate| c.load < c.capacity && req.fit(c);
            let chosen = candidates
                .iter()
                .enumerate()
                .filter(|(_, c)| has_room(c))
                // min_by_key keeps the first of equal loads, and candidates are sorted by name.
                .min_by_key(|(_, c)| c.load)
                .map(|(i, _)| i);
            // Kept while its worker has room, or when no fitting worker has (moving it would not
            // help). The reference keeps it whenever the worker is eligible and fits, so a task
            // assigned to a worker that filled up meanwhile waits for that worker while others
            // sit idle: the claim rules let only the assigned worker take it.
            let kept = index.get(&current).copied().filter(|&i| {
                req.fit(&candidates[i]) && (has_room(&candidates[i]) || chosen.is_none())
            });
            if let Some(i) = kept {
                candidates[i].load += 1;
                continue;
            }
            if current.is_empty() && chosen.is_none() {
                continue;
            }
            let worker = chosen.map(|i| candidates[i].name.clone());
            match self.write(&task, &current, worker.as_deref(), now).await? {
                true => {
                    if !current.is_empty() {
                        pass.cleared.push((task.key(), current.clone()));
                    }
                    if let (Some(i), Some(w)) = (chosen, worker) {
                        candidates[i].load += 1;
                        pass.assigned.push((task.key(), w));
                    }
                }
                false => pass.conflicts += 1,
            }
        }
        Ok(pass)
    }

    /// Writes the new assignment (clearing `previous` when set); `false` when the task changed
    /// or vanished since it was read.
    async fn write(
        &self,
        task: &Object,
        previous: &str,
        worker: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut updated = task.clone();
        let stamp = task_queue::format_time(now);
        let mut events = Vec::new();
        if !previous.is_empty() {
            let message = format!("cleared assignment from worker={previous}");
            task_queue::push_history(
                &mut updated,
                json!({"timestamp": stamp, "type": "assignment_cleared", "worker": previous, "message": message}),
            );
            events.push(("assignment_cleared", message));
        }
        if let Some(w) = worker {
            let message = format!("assigned to worker={w}");
            task_queue::push_history(
                &mut updated,
                json!({"timestamp": stamp, "type": "assigned", "worker": w, "message": message}),
            );
            events.push(("assigned", message));
        }
        if let Value::Object(status) = &mut updated.status {
            match worker {
                Some(w) => status.insert("assignedWorker".into(), json!(w)),
                None => status.remove("assignedWorker"),
            };
        }
        let result = self
            .store
            .update_status(
                Kind::Task,
                task.namespace(),
                task.name(),
                Some(&task.metadata.resource_version),
                updated.status,
            )
            .await;
        let written = match result {
            Ok(o) => o,
            Err(e) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::NotFound) => {
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if let Some(bus) = &self.events {
            for (transition, message) in events {
                bus.publish(Event {
                    id: 0,
                    timestamp: now,
                    source: EVENT_SOURCE.into(),
                    event_type: format!("task.{transition}"),
                    kind: Kind::Task.as_str().to_string(),
                    name: written.name().to_string(),
                    namespace: written.namespace().to_string(),
                    action: "assignment".into(),
                    message,
                    data: json!({
                        "phase": written.phase(),
                        "assignedWorker": written.status.get("assignedWorker").cloned().unwrap_or(json!("")),
                    }),
                });
            }
        }
        Ok(true)
    }
}
