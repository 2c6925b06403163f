//! Status controllers run by `orlojd`: they move resources from `Pending` to `Ready` once
//! their spec has been accepted, record `observedGeneration`, and mark workers whose heartbeat
//! went stale `NotReady` (spec §5.1 background loops).

use chrono::{DateTime, Utc};
use orloj_core::{Clock, ErrorKind, Kind, ListOptions, Object, Result, Store};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Kinds whose status a controller moves from Pending to Ready.
pub const READY_KINDS: &[Kind] = &[
    Kind::Agent,
    Kind::AgentSystem,
    Kind::ModelEndpoint,
    Kind::Tool,
    Kind::Secret,
    Kind::Memory,
    Kind::AgentPolicy,
    Kind::AgentRole,
    Kind::ToolPermission,
];

/// A worker whose last heartbeat is older than this is `NotReady`.
pub const WORKER_STALE_AFTER: Duration = Duration::from_secs(20);

/// Periodically reconciles resource statuses.
#[derive(Clone)]
pub struct StatusController {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    interval: Duration,
}

impl StatusController {
    /// A controller over `store` that resyncs every `interval`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, interval: Duration) -> Self {
        Self {
            store,
            clock,
            interval,
        }
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
                tracing::warn!(error = %e, "status reconcile failed; retrying next interval");
            }
        }
    }

    /// One pass over every kind; returns how many objects it changed.
    pub async fn reconcile_once(&self) -> Result<usize> {
        let mut changed = 0;
        for kind in READY_KINDS {
            let list = self.store.list(*kind, &ListOptions::default()).await?;
            for object in list.items {
                if let Some(status) = ready_status(&object) {
                    changed += self.write(&object, status).await?;
                }
            }
        }
        let now = self.clock.now();
        let workers = self
            .store
            .list(Kind::Worker, &ListOptions::default())
            .await?;
        for worker in workers.items {
            if let Some(status) = stale_worker_status(&worker, now) {
                changed += self.write(&worker, status).await?;
            }
        }
        Ok(changed)
    }

    async fn write(&self, object: &Object, status: Value) -> Result<usize> {
        let result = self
            .store
            .update_status(
                object.kind,
                object.namespace(),
                object.name(),
                Some(&object.metadata.resource_version),
                status,
            )
            .await;
        match result {
            Ok(_) => Ok(1),
            // Someone wrote in between: the next pass sees the new version.
            Err(e) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::NotFound) => Ok(0),
            Err(e) => Err(e),
        }
    }
}

/// The status to write when `object` has an unobserved generation or is still Pending.
pub fn ready_status(object: &Object) -> Option<Value> {
    let observed = object
        .status
        .get("observedGeneration")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let phase = object.phase();
    let pending = phase.is_empty() || phase.eq_ignore_ascii_case("pending");
    if !pending && observed >= object.metadata.generation {
        return None;
    }
    let mut status = match &object.status {
        Value::Object(m) => m.clone(),
        _ => Default::default(),
    };
    if pending {
        status.insert("phase".into(), json!("Ready"));
        status.remove("lastError");
    }
    status.insert(
        "observedGeneration".into(),
        json!(object.metadata.generation),
    );
    Some(Value::Object(status))
}

/// The status to write when a worker's heartbeat is older than [`WORKER_STALE_AFTER`].
pub fn stale_worker_status(worker: &Object, now: DateTime<Utc>) -> Option<Value> {
    if worker.phase().eq_ignore_ascii_case("notready") {
        return None;
    }
    let last = worker
        .status
        .get("lastHeartbeat")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    let stale = match last {
        Some(t) => now.signed_duration_since(t).to_std().unwrap_or_default() > WORKER_STALE_AFTER,
        // Registered but never heartbeated: only stale once it is old enough.
        None => worker.metadata.created_at.is_some_and(|c| {
            now.signed_duration_since(c).to_std().unwrap_or_default() > WORKER_STALE_AFTER
        }),
    };
    if !stale {
        return None;
    }
    let mut status = match &worker.status {
        Value::Object(m) => m.clone(),
        _ => Default::default(),
    };
    status.insert("phase".into(), json!("NotReady"));
    status.insert("lastError".into(), json!("worker heartbeat stale"));
    Some(Value::Object(status))
}
