//! The task worker (spec runtime §2, §4): registers and heartbeats its `Worker` resource,
//! claims tasks under a lease, renews the lease while running them, runs the agent graph and
//! writes the terminal status with compare-and-swap. In sequential mode the claiming worker
//! walks the graph in process; in message-driven mode ([`Worker::with_message_bus`]) it records
//! and publishes the kickoff and consumers run each agent step (see the `messages` module).
//! Either way every completed step is persisted before the next one starts, so a worker taking
//! over an expired lease continues after the last completed step. Governance
//! (§8) is applied per task run: matched AgentPolicies and a role/permission authorizer wrapped
//! around the tool executor; before each claim an approval sweep resumes or fails tasks waiting
//! for a ToolApproval.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use orloj_runtime::worker::{Worker, WorkerConfig};
//! # async fn demo(store: Arc<dyn orloj_core::Store>, router: Arc<dyn orloj_core::model::ModelRouter>,
//! #               tools: Arc<dyn orloj_core::tool::ToolExecutor>) {
//! let clock = Arc::new(orloj_core::SystemClock);
//! let worker = Worker::new(WorkerConfig::default(), store, clock, router, tools);
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let handle = tokio::spawn(worker.run(cancel.clone()));
//! // ... on shutdown:
//! cancel.cancel();
//! let _ = handle.await;
//! # }
//! ```

use crate::controllers::WORKER_STALE_AFTER;
use crate::engine::agent_turn::{AgentRunner, humanize};
use crate::engine::failure::{FailureOutcome, decide};
use crate::engine::graph::{GraphRun, Plan, StepFailure, prepare};
use crate::events::{Event, EventBus};
use crate::governance::approval::{self, ApprovalState};
use crate::governance::authorizer::{AuthorizedExecutor, RoleAuthorizer};
use crate::governance::policy::PolicySet;
use crate::read_cache::ReadCache;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use orloj_core::clock::Clock;
use orloj_core::model::ModelRouter;
use orloj_core::resources::{
    self, TaskHistoryEvent, TaskSpec, TaskStatus, ToolApprovalSpec, WorkerCapabilities, WorkerSpec,
    parse_duration,
};
use orloj_core::task_queue::{MAX_HISTORY, format_time};
use orloj_core::tool::ToolExecutor;
use orloj_core::{
    ClaimRequest, DEFAULT_NAMESPACE, Error, ErrorKind, Kind, ListOptions, Object, Result, Store,
};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod messages;

pub use messages::MessageConfig;

/// How a claimed task's agent graph is executed (`--task-execution-mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExecutionMode {
    /// The claiming worker walks the whole graph in process.
    #[default]
    Sequential,
    /// Agents hand work to each other over the agent message bus.
    MessageDriven,
}

/// Trace entries kept on a task.
pub const MAX_TRACE: usize = 500;
/// Message records kept on a task.
pub const MAX_MESSAGES: usize = 500;
/// Reason used internally when the lease was lost mid-run (nothing more is written).
const LEASE_LOST: &str = "task lease lost to another worker";
/// Compare-and-swap attempts for one status write.
const CAS_ATTEMPTS: usize = 8;
/// Plans a worker keeps at most (one per namespace, system and `max_turns` in use).
const MAX_PLANS: usize = 256;
/// Tasks one claim asks the store for at most, while as many slots are free.
const CLAIM_BATCH: usize = 16;
/// The first wait before a store write is tried again while the store is unavailable.
const UNAVAILABLE_FIRST_WAIT: Duration = Duration::from_millis(50);
/// The longest wait between tries of a write while the store is unavailable, and between claim
/// rounds while claims fail.
const UNAVAILABLE_MAX_WAIT: Duration = Duration::from_secs(2);

/// Worker settings (flags of `orlojworker` / the embedded worker of `orlojd`).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Worker id; the `Worker` resource name and `claimedBy`.
    pub worker_id: String,
    /// Region for task matching.
    pub region: String,
    /// Whether this worker has a GPU.
    pub gpu: bool,
    /// Models served; empty means any.
    pub supported_models: Vec<String>,
    /// Parallel tasks (≤0 treated as 1).
    pub max_concurrent_tasks: usize,
    /// Lease length of a claim.
    pub lease_duration: Duration,
    /// Worker heartbeat and lease renewal cadence.
    pub heartbeat_interval: Duration,
    /// How often to look for claimable tasks.
    pub poll_interval: Duration,
    /// How long shutdown waits for running tasks before releasing them.
    pub drain_timeout: Duration,
    /// Only claim tasks of this namespace, when set.
    pub namespace: Option<String>,
    /// Sequential or message-driven execution.
    pub execution_mode: ExecutionMode,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: "worker-1".into(),
            region: "default".into(),
            gpu: false,
            supported_models: Vec::new(),
            max_concurrent_tasks: 1,
            lease_duration: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(30),
            namespace: None,
            execution_mode: ExecutionMode::Sequential,
        }
    }
}

/// A task worker. Cheap to clone; clones share the set of held tasks.
#[derive(Clone)]
pub struct Worker {
    config: Arc<WorkerConfig>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    router: Arc<dyn ModelRouter>,
    runner: AgentRunner,
    events: Option<Arc<dyn EventBus>>,
    held: Arc<Mutex<HashSet<(String, String)>>>,
    messages: Option<messages::MessageRuntime>,
    read_cache: Option<Arc<ReadCache>>,
    /// When this worker last wrote its own record Ready (cleared when it writes NotReady).
    ready_at: Arc<Mutex<Option<DateTime<Utc>>>>,
    /// Plans by namespace, system and `max_turns`, with the read-cache generation they were
    /// made at ([`Worker::plan_for`]).
    plans: Arc<Mutex<PlanCache>>,
    /// After failed claims: no claim before this instant, and how many rounds failed in a row.
    claim_backoff: Arc<Mutex<Option<(tokio::time::Instant, u32)>>>,
}

type PlanCache = std::collections::HashMap<(String, String, i64), (u64, Arc<Plan>)>;

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How one claimed task ended, as written to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskResult {
    /// Terminal or rescheduled status written; the stored phase.
    Written(String),
    /// The lease was lost to another worker; nothing written.
    LeaseLost,
}

impl Worker {
    /// A worker over `store`, resolving models with `router` and running tools with `tools`.
    pub fn new(
        config: WorkerConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        router: Arc<dyn ModelRouter>,
        tools: Arc<dyn ToolExecutor>,
    ) -> Self {
        let runner = AgentRunner::new(tools, clock.clone());
        Self {
            config: Arc::new(config),
            store,
            clock,
            router,
            runner,
            events: None,
            held: Arc::new(Mutex::new(HashSet::new())),
            messages: None,
            read_cache: None,
            ready_at: Arc::new(Mutex::new(None)),
            plans: Arc::default(),
            claim_backoff: Arc::default(),
        }
    }

    /// Replaces the agent runner (e.g. one with another step interval).
    pub fn with_runner(mut self, runner: AgentRunner) -> Self {
        self.runner = runner;
        self
    }

    /// Publishes a `task.*` event (spec runtime §2.2) to `events` after every task transition
    /// this worker writes; without a bus, transitions are only stored.
    pub fn with_events(mut self, events: Arc<dyn EventBus>) -> Self {
        self.events = Some(events);
        self
    }

    /// Resolves each run (system, agents, models, governance) through `cache`, refreshed at the
    /// start of every resolution: one store read instead of a dozen while the configuration
    /// does not change, and every change committed before a resolution is seen by it. Build the
    /// model router over the same cache so model endpoint reads are kept too.
    pub fn with_read_cache(mut self, cache: Arc<ReadCache>) -> Self {
        self.read_cache = Some(cache);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tasks this worker currently runs.
    pub fn current_tasks(&self) -> usize {
        self.held().len()
    }

    fn capacity(&self) -> usize {
        self.config.max_concurrent_tasks.max(1)
    }

    fn now(&self) -> String {
        format_time(self.clock.now())
    }

    /// Upserts this worker's `Worker` resource with `phase` (`Ready`, or `NotReady` with
    /// `lastError = "worker stopped"`), `lastHeartbeat = now` and `currentTasks`.
    pub async fn heartbeat(&self, phase: &str) -> Result<Object> {
        let spec = WorkerSpec {
            region: self.config.region.clone(),
            capabilities: WorkerCapabilities {
                gpu: self.config.gpu,
                supported_models: self.config.supported_models.clone(),
            },
            max_concurrent_tasks: self.capacity() as i64,
        };
        let obj = resources::object_from_spec(DEFAULT_NAMESPACE, &self.config.worker_id, &spec)?;
        let obj = resources::normalize(obj)?;
        self.store.upsert(obj).await?;
        let mut last = Error::conflict("worker status write did not run");
        for _ in 0..CAS_ATTEMPTS {
            let current = self
                .store
                .get(Kind::Worker, DEFAULT_NAMESPACE, &self.config.worker_id)
                .await?;
            let mut status = resources::status_of::<WorkerSpec>(&current).unwrap_or_default();
            status.phase = phase.to_string();
            let beat = self.clock.now();
            status.last_heartbeat = format_time(beat);
            status.current_tasks = self.current_tasks() as i64;
            status.last_error = if phase == "NotReady" {
                "worker stopped".into()
            } else {
                String::new()
            };
            let value = serde_json::to_value(&status)
                .map_err(|e| Error::internal(format!("serializing worker status: {e}")))?;
            match self
                .store
                .update_status(
                    Kind::Worker,
                    DEFAULT_NAMESPACE,
                    &self.config.worker_id,
                    Some(&current.metadata.resource_version),
                    value,
                )
                .await
            {
                Ok(o) => {
                    *self.ready_at.lock().unwrap_or_else(|e| e.into_inner()) =
                        (phase == "Ready").then_some(beat);
                    return Ok(o);
                }
                Err(e) if e.kind() == ErrorKind::Conflict => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Claims one task if a slot is free.
    pub async fn claim_next(&self) -> Result<Option<Object>> {
        if !self.may_claim().await? {
            return Ok(None);
        }
        Ok(self.claim_some(1).await?.pop())
    }

    /// Whether this worker may claim now: a free slot, and its Worker record not marked
    /// NotReady (e.g. stale heartbeat: it claims nothing until its next heartbeat). No record at
    /// all is fine (embedded, single-process use).
    ///
    /// The record is not read while this worker's own Ready heartbeat is fresh (younger than
    /// half of [`WORKER_STALE_AFTER`]): only a heartbeat that old gets a worker marked NotReady,
    /// and its next heartbeat would write Ready over any other mark. That read was a round trip
    /// before every claim.
    async fn may_claim(&self) -> Result<bool> {
        if self.current_tasks() >= self.capacity() {
            return Ok(false);
        }
        let fresh = self
            .ready_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| {
                (self.clock.now() - at)
                    .to_std()
                    .is_ok_and(|age| age < WORKER_STALE_AFTER / 2)
            });
        if fresh {
            return Ok(true);
        }
        match self
            .store
            .get(Kind::Worker, DEFAULT_NAMESPACE, &self.config.worker_id)
            .await
        {
            Ok(own) => Ok(matches!(own.phase(), "" | "Ready" | "Pending")),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Claims up to `max` tasks, as many as slots are free, without looking at the Worker
    /// record (one store call: a store that claims several tasks in one write does).
    async fn claim_some(&self, max: usize) -> Result<Vec<Object>> {
        let max = max.min(self.capacity().saturating_sub(self.current_tasks()));
        if max == 0 {
            return Ok(Vec::new());
        }
        let request = ClaimRequest {
            worker_id: self.config.worker_id.clone(),
            lease: self.config.lease_duration,
            region: self.config.region.clone(),
            gpu: self.config.gpu,
            supported_models: self.config.supported_models.clone(),
            namespace: self.config.namespace.clone(),
        };
        // With a configuration cache, the claim also reads the marker the task's resolution
        // checks the cache with: one read fewer before its first step.
        let kinds = self.read_cache.as_ref().map(|cache| cache.kinds());
        let claimed = self.store.claim_tasks(&request, max, kinds).await?;
        let mut tasks = Vec::with_capacity(claimed.len());
        for (task, marker) in claimed {
            if let (Some(cache), Some(marker)) = (&self.read_cache, marker) {
                cache.note_claim(&task, marker);
            }
            if !self
                .held()
                .insert((task.namespace().to_string(), task.name().to_string()))
            {
                // This worker's own run of it is still going (its lease ran out while the
                // store was away, say): the claim renewed that run's lease; a second run would
                // do its work again.
                tracing::info!(task = %task.key(), "claimed a task this worker is still running; the run goes on");
                continue;
            }
            tasks.push(task);
        }
        Ok(tasks)
    }

    /// Claims and runs tasks one after another until none is claimable; returns how many ran.
    /// Useful for tests and single-shot embedding.
    pub async fn run_until_idle(&self) -> Result<usize> {
        let mut ran = 0;
        for task in self.sweep_approvals().await? {
            self.execute_resumed(task).await?;
            ran += 1;
        }
        while let Some(task) = self.claim_next().await? {
            self.execute(task).await?;
            ran += 1;
        }
        Ok(ran)
    }

    async fn log(&self, task: &Object, line: String) {
        let entry = format!("{} {line}", format_time(self.clock.now()));
        if let Err(e) = self
            .store
            .append_task_log(task.namespace(), task.name(), &entry)
            .await
        {
            tracing::warn!(task = %task.key(), error = %e, "appending task log failed");
        }
    }

    /// Publishes `task.<transition>` for a status this worker just wrote. The payload carries
    /// only lease/phase fields (never the task input or output); `lastError` is already redacted.
    fn publish(&self, written: &Object, transition: &str, message: &str) {
        // Only a few fields are published: read them instead of parsing the whole status.
        let field = |name: &str| {
            written
                .status
                .get(name)
                .cloned()
                .unwrap_or_else(|| serde_json::json!(""))
        };
        let data = serde_json::json!({
            "phase": written.phase(),
            "attempts": written.status.get("attempts").cloned().unwrap_or_else(|| serde_json::json!(0)),
            "assignedWorker": field("assignedWorker"),
            "claimedBy": field("claimedBy"),
            "lastError": field("lastError"),
        });
        self.publish_data(written, written.phase(), transition, message, data);
    }

    /// [`Self::publish`] of a task whose written status is `status`.
    fn publish_typed(
        &self,
        written: &Object,
        status: &TaskStatus,
        transition: &str,
        message: &str,
    ) {
        let data = serde_json::json!({
            "phase": status.phase,
            "attempts": status.attempts,
            "assignedWorker": status.assigned_worker,
            "claimedBy": status.claimed_by,
            "lastError": status.last_error,
        });
        self.publish_data(written, &status.phase, transition, message, data);
    }

    fn publish_data(
        &self,
        written: &Object,
        phase: &str,
        transition: &str,
        message: &str,
        data: serde_json::Value,
    ) {
        let Some(events) = &self.events else {
            return;
        };
        events.publish(Event {
            id: 0,
            timestamp: self.clock.now(),
            source: "task-controller".into(),
            event_type: format!("task.{transition}"),
            kind: Kind::Task.as_str().to_string(),
            name: written.name().to_string(),
            namespace: written.namespace().to_string(),
            action: phase.to_lowercase(),
            message: message.to_string(),
            data,
        });
    }

    fn history(&self, event_type: &str, message: String) -> TaskHistoryEvent {
        TaskHistoryEvent {
            timestamp: self.now(),
            event_type: event_type.into(),
            worker: self.config.worker_id.clone(),
            message,
            ..Default::default()
        }
    }

    /// Runs a task this worker claimed to a terminal (or rescheduled) status, renewing the
    /// lease meanwhile. Releases the slot when done. Once the run's work is done, its result
    /// waits for a store that is unavailable (tried again, at most every 2 s) instead of being
    /// given up: bound it with a timeout if the store may stay away.
    pub async fn execute(&self, task: Object) -> Result<TaskResult> {
        let key = (task.namespace().to_string(), task.name().to_string());
        let task_key = task.key();
        let result = self.execute_inner(task).await;
        self.held().remove(&key);
        // A claim whose run never resolved its configuration leaves nothing behind.
        if let Some(cache) = &self.read_cache {
            cache.forget_claim(&task_key);
        }
        result
    }

    async fn execute_inner(&self, task: Object) -> Result<TaskResult> {
        let claim = self.history(
            "claim",
            format!(
                "task claimed by worker={} lease={}",
                self.config.worker_id,
                humanize(self.config.lease_duration)
            ),
        );
        if self.config.execution_mode == ExecutionMode::MessageDriven {
            // The kickoff write records the claim too (one status write fewer per task) and
            // logs it.
            self.publish(&task, "claimed", &claim.message);
            return self.kickoff_held(task, Some(claim)).await;
        }
        self.log(&task, claim.message.clone()).await;
        let Some(task) = self
            .write_status(&task, |status| {
                push_history(status, claim.clone());
            })
            .await?
        else {
            return Ok(TaskResult::LeaseLost);
        };
        self.publish(&task, "claimed", &claim.message);
        self.run_held(task).await
    }

    /// Runs a task the approval sweep resumed (already Running under this worker's lease).
    /// Releases the slot when done.
    pub async fn execute_resumed(&self, task: Object) -> Result<TaskResult> {
        let key = (task.namespace().to_string(), task.name().to_string());
        let result = self.run_held(task).await;
        self.held().remove(&key);
        result
    }

    async fn run_held(&self, task: Object) -> Result<TaskResult> {
        if self.config.execution_mode == ExecutionMode::MessageDriven {
            return self.kickoff_held(task, None).await;
        }
        let mut status = resources::status_of::<TaskSpec>(&task).unwrap_or_default();
        // The renewals run beside the work and stop between two renewals, never inside one: a
        // store call dropped half way can leave its transaction's locks to a rollback that
        // runs later.
        let stop = CancellationToken::new();
        // A run dropped half way (aborted after the drain time) stops its renewals too.
        let _stop_renewals = stop.clone().drop_guard();
        let renewals = tokio::spawn({
            let (worker, task, stop) = (self.clone(), task.clone(), stop.clone());
            async move { worker.renew_lease(&task, stop).await }
        });
        let outcome = self.run_graph(&task, &mut status).await;
        stop.cancel();
        if let Err(e) = renewals.await {
            tracing::warn!(task = %task.key(), error = %e, "lease renewals ended abnormally");
        }
        self.finalize(&task, status, outcome, None).await
    }

    /// Renews the lease every heartbeat interval until `stop` (checked between renewals) or a
    /// renewal fails.
    async fn renew_lease(&self, task: &Object, stop: CancellationToken) {
        let every = self.config.heartbeat_interval.max(Duration::from_millis(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // After a renewal that took long (a store slow to answer), the next one is an interval
        // later, not a burst of the ticks missed meanwhile.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self
                .store
                .renew_task_lease(
                    task.namespace(),
                    task.name(),
                    &self.config.worker_id,
                    self.config.lease_duration,
                )
                .await
            {
                // A store that is away may come back before the lease runs out; anything else
                // (the lease taken over, the task gone) ends the renewals.
                if e.kind() == ErrorKind::Unavailable {
                    tracing::warn!(task = %task.key(), error = %e, "lease renewal failed; renewing again at the next interval");
                    continue;
                }
                tracing::warn!(task = %task.key(), error = %e, "lease renewal failed; renewal stopped");
                return;
            }
        }
    }

    /// Resolves everything a run of `task` needs: spec, validated plan, matched policies and
    /// the governed agent runner.
    async fn prepare_run(&self, task: &Object) -> std::result::Result<Prepared, StepFailure> {
        let plain = |reason: String| StepFailure {
            reason,
            approval_pending: false,
        };
        let spec: TaskSpec =
            resources::spec_of(task).map_err(|e| plain(format!("invalid task spec: {e}")))?;
        let store: &dyn Store = match &self.read_cache {
            Some(cache) => {
                // A failed refresh leaves the cache reading through to the store.
                if let Err(e) = cache.refresh_for(task).await {
                    tracing::debug!(task = %task.key(), error = %e, "configuration cache refresh failed");
                }
                cache.as_ref()
            }
            None => self.store.as_ref(),
        };
        let plan = self.plan_for(store, task, &spec).await.map_err(plain)?;
        let (policies, authorizer) = crate::governance::for_task(store, task, &plan)
            .await
            .map_err(plain)?;
        let authorizer = Arc::new(authorizer);
        let runner = self
            .runner
            .clone()
            .with_tools(Arc::new(AuthorizedExecutor::new(
                self.runner.tools(),
                authorizer.clone(),
            )));
        Ok(Prepared {
            spec,
            plan,
            policies,
            authorizer,
            runner,
        })
    }

    /// The validated plan of `task`'s system. With a configuration cache, a plan is kept while
    /// the cache keeps its reads (same generation): the tasks of a system share it instead of
    /// each parsing its system, agents and models again. It depends on the task only through
    /// its namespace, system and `max_turns`.
    async fn plan_for(
        &self,
        store: &dyn Store,
        task: &Object,
        spec: &TaskSpec,
    ) -> std::result::Result<Arc<Plan>, String> {
        let cache = self.read_cache.as_deref();
        let generation = cache.and_then(ReadCache::generation);
        let key = (
            task.namespace().to_string(),
            spec.system.trim().to_string(),
            spec.max_turns,
        );
        if let Some(generation) = generation {
            let plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, plan)) = plans.get(&key)
                && *at == generation
            {
                return Ok(plan.clone());
            }
        }
        let plan = Arc::new(prepare(store, self.router.as_ref(), task, spec).await?);
        // Kept only when no change dropped the cache's reads while it was being made.
        if let (Some(generation), Some(cache)) = (generation, cache)
            && cache.generation() == Some(generation)
        {
            let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
            if plans.len() >= MAX_PLANS {
                plans.clear();
            }
            plans.insert(key, (generation, plan.clone()));
        }
        Ok(plan)
    }

    /// Persists an approval request before the task says it waits for one.
    async fn record_approval(
        &self,
        task: &Object,
        authorizer: &RoleAuthorizer,
        failure: StepFailure,
    ) -> StepFailure {
        let plain = |reason: String| StepFailure {
            reason,
            approval_pending: false,
        };
        let Some(pending) = authorizer.take_pending() else {
            return plain(format!(
                "{} (no approval request was recorded)",
                failure.reason
            ));
        };
        match approval::create(
            self.store.as_ref(),
            self.clock.as_ref(),
            task.namespace(),
            task.name(),
            &pending,
        )
        .await
        {
            Ok(_) => failure,
            Err(e) => plain(format!(
                "tool approval could not be created (temporary store error): {e}"
            )),
        }
    }

    /// Sequential mode: walks the graph in process, persisting the progress after every step
    /// so a worker taking the task over continues after the last completed step.
    async fn run_graph(
        &self,
        task: &Object,
        status: &mut TaskStatus,
    ) -> std::result::Result<(), StepFailure> {
        let prepared = self.prepare_run(task).await?;
        let mut run = GraphRun::new(
            &prepared.plan,
            task,
            &prepared.spec,
            status.attempts,
            &self.config.worker_id,
            self.clock.as_ref(),
        )
        .with_policies(prepared.policies.clone());
        run.kickoff(status);
        let mut result = Ok(());
        while let Some(index) = run.next_queued(status) {
            if let Err(f) = run.process(status, index, &prepared.runner).await {
                result = Err(f);
                break;
            }
            if run.next_queued(status).is_some() && !self.persist_progress(task, status).await {
                return Err(StepFailure {
                    reason: LEASE_LOST.into(),
                    approval_pending: false,
                });
            }
        }
        match result {
            Ok(()) => {
                run.finish(status);
                Ok(())
            }
            Err(f) if f.approval_pending => {
                Err(self.record_approval(task, &prepared.authorizer, f).await)
            }
            Err(f) => Err(f),
        }
    }

    /// Writes the engine progress (trace, messages, joins, output) while this worker holds the
    /// task; false when the lease is gone. A store error is logged and tolerated: the progress
    /// is written again after the next step.
    async fn persist_progress(&self, task: &Object, ours: &TaskStatus) -> bool {
        match self
            .write_status(task, |s| {
                merge_progress(s, ours);
                s.output = ours.output.clone();
            })
            .await
        {
            Ok(Some(_)) => true,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(task = %task.key(), error = %e, "writing task progress failed");
                true
            }
        }
    }

    /// The approval sweep (§8.3), run before every claim: for each `WaitingApproval` task held
    /// by (or assigned to) this worker it expires overdue approvals, fails the task on a denied
    /// (`tool approval denied`) or expired (`tool approval expired`) approval, and resumes it
    /// when everything is approved: `Running` under a fresh lease of this worker. Returns the
    /// resumed tasks, already counted as held; run them with [`Worker::execute_resumed`].
    pub async fn sweep_approvals(&self) -> Result<Vec<Object>> {
        // Only tasks with approvals can be waiting for one: list those (few), not every task.
        let approvals = self
            .store
            .list(
                Kind::ToolApproval,
                &ListOptions {
                    namespace: self.config.namespace.clone(),
                    ..Default::default()
                },
            )
            .await?;
        let mut keys: Vec<(String, String)> = approvals
            .items
            .iter()
            .filter_map(|a| {
                let spec = resources::spec_of::<ToolApprovalSpec>(a).ok()?;
                let (ns, name) = orloj_core::split_ref(spec.task_ref.trim(), a.namespace());
                (!name.is_empty()).then(|| (ns.to_string(), name.to_string()))
            })
            .collect();
        keys.sort();
        keys.dedup();
        let me = self.config.worker_id.as_str();
        let mut resumed = Vec::new();
        for (ns, name) in keys {
            let task = match self.store.get(Kind::Task, &ns, &name).await {
                Ok(task) => task,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let Ok(status) = resources::status_of::<TaskSpec>(&task) else {
                continue;
            };
            if status.phase != "WaitingApproval"
                || !(status.claimed_by == me
                    || status.assigned_worker == me
                    || status.claimed_by.is_empty())
            {
                continue;
            }
            let state = approval::state_of(
                self.store.as_ref(),
                self.clock.as_ref(),
                task.namespace(),
                task.name(),
            )
            .await?;
            match state {
                ApprovalState::Missing | ApprovalState::Pending => {}
                ApprovalState::Approved(_) => {
                    if self.current_tasks() >= self.capacity() {
                        continue;
                    }
                    let now = self.clock.now();
                    let lease =
                        chrono::Duration::from_std(self.config.lease_duration).unwrap_or_default();
                    let h = self.history("running", "tool approval granted, task resumed".into());
                    let worker = me.to_string();
                    let written = self
                        .write_status_when(&task, is_waiting, |s| {
                            s.phase = "Running".into();
                            s.claimed_by = worker.clone();
                            s.assigned_worker = worker.clone();
                            s.lease_until = format_time(now + lease);
                            s.last_heartbeat = format_time(now);
                            s.last_error.clear();
                            push_history(s, h.clone());
                        })
                        .await?;
                    if let Some(obj) = written {
                        self.publish(&obj, "running", &h.message);
                        self.log(&obj, "task transitioned WaitingApproval->Running reason=tool approval granted".into())
                            .await;
                        self.held()
                            .insert((obj.namespace().to_string(), obj.name().to_string()));
                        resumed.push(obj);
                    }
                }
                ApprovalState::Rejected(reason) => {
                    let now_s = self.now();
                    let h = self.history("failed", reason.into());
                    let written = self
                        .write_status_when(&task, is_waiting, |s| {
                            s.phase = "Failed".into();
                            s.last_error = reason.into();
                            s.completed_at = now_s.clone();
                            s.next_attempt_at.clear();
                            s.output.clear();
                            clear_lease(s);
                            push_history(s, h.clone());
                        })
                        .await?;
                    if let Some(obj) = written {
                        self.publish(&obj, "failed", &h.message);
                        self.log(&obj, format!("task moved to Failed reason={reason}"))
                            .await;
                    }
                }
            }
        }
        Ok(resumed)
    }

    /// Writes the result with compare-and-swap: re-reads the task, checks the lease is still
    /// ours, merges our trace/messages/output over the fresh status and applies the transition.
    async fn finalize(
        &self,
        task: &Object,
        ours: TaskStatus,
        outcome: std::result::Result<(), StepFailure>,
        decided: Option<FailureOutcome>,
    ) -> Result<TaskResult> {
        if matches!(&outcome, Err(f) if f.reason == LEASE_LOST) {
            return Ok(TaskResult::LeaseLost);
        }
        let now = self.clock.now();
        let now_s = format_time(now);
        let attempts = ours.attempts;
        let succeeded = outcome.is_ok();
        let (log_line, phase_after): (String, String);
        // The history entry doubles as the event: its type names the transition.
        let event: TaskHistoryEvent;
        // The transition itself; the run's progress (`ours`) is merged in separately below.
        let transition: Box<dyn Fn(&mut TaskStatus) + Send + Sync> = match &outcome {
            Ok(()) => {
                let out = &ours.output;
                log_line = format!(
                    "task transitioned Running->Succeeded agents={} tokens_used_total={} tokens_estimated_total={}",
                    out.get("agents_executed").cloned().unwrap_or_default(),
                    out.get("tokens_used_total").cloned().unwrap_or_default(),
                    out.get("tokens_estimated_total")
                        .cloned()
                        .unwrap_or_default()
                );
                phase_after = "Succeeded".into();
                let h = self.history("succeeded", "task execution completed".into());
                event = h.clone();
                let now_s = now_s.clone();
                // The run's output is written with its progress (below).
                Box::new(move |s: &mut TaskStatus| {
                    s.phase = "Succeeded".into();
                    s.completed_at = now_s.clone();
                    s.last_error.clear();
                    s.next_attempt_at.clear();
                    clear_lease(s);
                    push_history(s, h.clone());
                })
            }
            Err(f) if f.approval_pending => {
                log_line = format!("task waiting for tool approval reason={}", f.reason);
                phase_after = "WaitingApproval".into();
                let h = self.history("waiting_approval", f.reason.clone());
                event = h.clone();
                let reason = f.reason.clone();
                Box::new(move |s: &mut TaskStatus| {
                    s.phase = "WaitingApproval".into();
                    s.last_error = reason.clone();
                    push_history(s, h.clone());
                })
            }
            Err(f) => {
                let reason = f.reason.clone();
                let spec: TaskSpec = resources::spec_of(task).unwrap_or_default();
                let max_attempts = spec.retry.max_attempts.max(1);
                let backoff = parse_duration(&spec.retry.backoff).unwrap_or(Duration::ZERO);
                match decided.unwrap_or_else(|| decide(&reason, attempts, max_attempts, backoff)) {
                    FailureOutcome::Retry(delay) => {
                        let next = now + chrono::Duration::from_std(delay).unwrap_or_default();
                        let next_s = format_time(next);
                        log_line = format!(
                            "retry scheduled: attempt={attempts} max_attempts={max_attempts} next_attempt_at={next_s} reason={reason}"
                        );
                        phase_after = "Pending".into();
                        let last_error =
                            format!("{reason} (retry scheduled in {})", humanize(delay));
                        let h = self.history("retry_scheduled", last_error.clone());
                        event = h.clone();
                        Box::new(move |s: &mut TaskStatus| {
                            s.phase = "Pending".into();
                            s.last_error = last_error.clone();
                            s.next_attempt_at = next_s.clone();
                            s.output.clear();
                            s.messages.clear();
                            s.join_states.clear();
                            s.completed_at.clear();
                            clear_lease(s);
                            push_history(s, h.clone());
                        })
                    }
                    terminal => {
                        let (phase, kind) = if terminal == FailureOutcome::DeadLetter {
                            ("DeadLetter", "deadletter")
                        } else {
                            ("Failed", "failed")
                        };
                        log_line = format!("task moved to {phase} reason={reason}");
                        phase_after = phase.into();
                        let h = self.history(kind, reason.clone());
                        event = h.clone();
                        let now_s = now_s.clone();
                        Box::new(move |s: &mut TaskStatus| {
                            s.phase = phase.into();
                            s.last_error = reason.clone();
                            s.completed_at = now_s.clone();
                            s.next_attempt_at.clear();
                            s.output.clear();
                            clear_lease(s);
                            push_history(s, h.clone());
                        })
                    }
                }
            }
        };
        // Message-driven callers pass the task as they last wrote it; sequential runs renew
        // the lease meanwhile, so their copy is stale. The run's work is done: while the store
        // is away the result waits here, or whoever ran the task next would do it again.
        let message_driven = self.config.execution_mode == ExecutionMode::MessageDriven;
        let mut ours = ours;
        if message_driven {
            // Their `ours` is that task's status plus the run's progress: start from it.
            transition(&mut ours);
        }
        // A fresh status gets the run's progress (and, when it succeeded, its output), then
        // the transition.
        let apply = |s: &mut TaskStatus, ours: &TaskStatus| {
            merge_progress(s, ours);
            if succeeded {
                s.output = ours.output.clone();
            }
            transition(s);
        };
        let mut unavailable = UnavailableWait::default();
        let written = loop {
            if unavailable.failed() {
                // The failed try may have committed before the connection broke: then the
                // transition is there already (its history entry is unique) and is not applied
                // twice.
                match self.recorded(task, &event).await {
                    Ok(Some(fresh)) => break Some((Arc::new(fresh), None)),
                    Ok(None) => {}
                    Err(e) => {
                        unavailable
                            .wait_or_fail(e, task, "the task's result")
                            .await?;
                        continue;
                    }
                }
            }
            let tried = if message_driven {
                self.write_status_latest(task, &mut ours, &apply)
                    .await
                    .map(|w| w.map(|(o, status)| (o, Some(status))))
            } else {
                self.write_status(task, |s| apply(s, &ours))
                    .await
                    .map(|w| w.map(|o| (Arc::new(o), None)))
            };
            match tried {
                Err(e) => {
                    unavailable
                        .wait_or_fail(e, task, "the task's result")
                        .await?
                }
                Ok(w) => break w,
            }
        };
        match written {
            Some((written, status)) => {
                match status {
                    Some(status) => {
                        self.publish_typed(&written, &status, &event.event_type, &event.message)
                    }
                    None => self.publish(&written, &event.event_type, &event.message),
                }
                self.log(task, log_line).await;
                Ok(TaskResult::Written(phase_after))
            }
            None => Ok(TaskResult::LeaseLost),
        }
    }

    /// The task as stored when its status history holds `entry` (and it is still the same
    /// task, not one created again under its name).
    async fn recorded(&self, task: &Object, entry: &TaskHistoryEvent) -> Result<Option<Object>> {
        let fresh = self
            .store
            .get(Kind::Task, task.namespace(), task.name())
            .await?;
        let status = resources::status_of::<TaskSpec>(&fresh).unwrap_or_default();
        Ok((fresh.metadata.created_at == task.metadata.created_at
            && status.history.contains_entry(entry))
        .then_some(fresh))
    }

    /// Re-reads the task and applies `change` to its status with compare-and-swap, retrying on
    /// conflicts. `None` when the task is no longer held by this worker.
    async fn write_status(
        &self,
        task: &Object,
        change: impl Fn(&mut TaskStatus),
    ) -> Result<Option<Object>> {
        let me = self.config.worker_id.clone();
        self.write_status_when(
            task,
            move |s| s.phase.eq_ignore_ascii_case("running") && s.claimed_by == me,
            change,
        )
        .await
    }

    /// Compare-and-swap status write applied only while `holds` accepts the fresh status.
    async fn write_status_when(
        &self,
        task: &Object,
        holds: impl Fn(&TaskStatus) -> bool,
        change: impl Fn(&mut TaskStatus),
    ) -> Result<Option<Object>> {
        Ok(self
            .cas_status(task, holds, change)
            .await?
            .map(|(o, _)| Arc::unwrap_or_clone(o)))
    }

    /// Writes `ours` as the status of `task` when `task` is still the stored version. Callers
    /// pass the task as this worker last claimed or wrote it (so it held the task there) and
    /// `ours` as the whole next status: no read, no parse. After a conflict it re-reads and,
    /// while this worker still holds the task, writes the fresh status with
    /// `merge(fresh, ours)` applied. Returns the task and status as written (the task's own
    /// `status` may be left empty: read the returned one, which the store may share); the
    /// status is taken out of `ours` when that was written as it is. On an error `ours` is
    /// left as it was, for a retry.
    async fn write_status_latest(
        &self,
        task: &Object,
        ours: &mut TaskStatus,
        merge: impl Fn(&mut TaskStatus, &TaskStatus),
    ) -> Result<Option<(Arc<Object>, Arc<TaskStatus>)>> {
        cap(ours);
        // Handed over typed: a memory store keeps it as it is (then this worker goes on with a
        // copy), others serialize it.
        let shared = Arc::new(std::mem::take(ours));
        match self.store.update_task_status_of(task, &shared).await {
            Ok(written) => return Ok(Some((written, shared))),
            Err(e) => {
                // Not kept by the store: no copy.
                *ours = Arc::unwrap_or_clone(shared);
                if e.kind() != ErrorKind::Conflict {
                    return Err(e);
                }
            }
        }
        let me = self.config.worker_id.clone();
        let ours = &*ours;
        Ok(self
            .cas_status(
                task,
                move |s| s.phase.eq_ignore_ascii_case("running") && s.claimed_by == me,
                |s| merge(s, ours),
            )
            .await?
            .map(|(o, status)| (o, Arc::new(status))))
    }

    /// Reads the task, and while `holds` accepts its status applies `change` and writes it with
    /// compare-and-swap, retrying on conflicts. Returns the task and status as written; `None`
    /// when `holds` refused.
    async fn cas_status(
        &self,
        task: &Object,
        holds: impl Fn(&TaskStatus) -> bool,
        change: impl Fn(&mut TaskStatus),
    ) -> Result<Option<(Arc<Object>, TaskStatus)>> {
        let mut last = Error::conflict("task status write did not run");
        for attempt in 0..CAS_ATTEMPTS {
            let fresh = self
                .store
                .get(Kind::Task, task.namespace(), task.name())
                .await?;
            if fresh.metadata.created_at != task.metadata.created_at {
                // Deleted and created again under the same name: another task.
                tracing::warn!(task = %task.key(), "task was replaced; status not written");
                return Ok(None);
            }
            let mut status = resources::status_of::<TaskSpec>(&fresh).unwrap_or_default();
            if !holds(&status) {
                tracing::warn!(task = %task.key(), "task no longer held; status not written");
                return Ok(None);
            }
            change(&mut status);
            cap(&mut status);
            let value = serde_json::to_value(&status)
                .map_err(|e| Error::internal(format!("serializing task status: {e}")))?;
            match self.store.update_status_of(&fresh, value).await {
                Ok(o) => return Ok(Some((o, status))),
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    last = e;
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(5 * attempt as u64)).await;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Claims tasks and starts running them until no slot is free or nothing is claimable.
    /// Returns whether it stopped for want of a free slot (so a freed slot should claim again).
    async fn claim_available(&self, running: &mut JoinSet<()>) -> bool {
        if self
            .claim_backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|(until, _)| tokio::time::Instant::now() < until)
        {
            return false;
        }
        // The Worker record is read (when at all) once per round, not once per claim.
        match self.may_claim().await {
            Ok(true) => {}
            Ok(false) => return self.current_tasks() >= self.capacity(),
            Err(e) => {
                self.claim_failed(&e);
                return false;
            }
        }
        // Each claim asks for as many tasks as slots are free (up to CLAIM_BATCH): a store
        // that claims several in one write (Postgres) makes one round trip for all of them, so
        // a busy worker takes work on as fast as it comes. Fewer than asked for means nothing
        // more is claimable now.
        loop {
            let wanted = self
                .capacity()
                .saturating_sub(self.current_tasks())
                .min(CLAIM_BATCH);
            if wanted == 0 {
                return true;
            }
            match self.claim_some(wanted).await {
                Ok(tasks) => {
                    let exhausted = tasks.len() < wanted;
                    for task in tasks {
                        let worker = self.clone();
                        running.spawn(async move {
                            let key = task.key();
                            // Boxed once here rather than moved whole into the task cell.
                            if let Err(e) = Box::pin(worker.execute(task)).await {
                                tracing::warn!(task = %key, error = %e, "task execution failed");
                            }
                        });
                    }
                    if exhausted {
                        *self.claim_backoff.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        return self.current_tasks() >= self.capacity();
                    }
                }
                Err(e) => {
                    self.claim_failed(&e);
                    return false;
                }
            }
        }
    }

    /// Claims wait after a failed round, longer after each one ([`wait_after`]): a store that
    /// is away is not asked on every poll and claim signal.
    fn claim_failed(&self, error: &Error) {
        let mut backoff = self.claim_backoff.lock().unwrap_or_else(|e| e.into_inner());
        let failures = backoff.map_or(1, |(_, failures)| failures.saturating_add(1));
        let wait = wait_after(failures);
        *backoff = Some((tokio::time::Instant::now() + wait, failures));
        tracing::warn!(worker = %self.config.worker_id, error = %error, wait = %humanize(wait), "claim failed; claiming again after a wait");
    }

    /// Runs until `cancel` fires: heartbeats, claims up to capacity and runs tasks concurrently.
    /// On cancel it stops claiming, waits up to the drain timeout, releases tasks it could not
    /// finish and marks its `Worker` NotReady.
    pub async fn run(self, cancel: CancellationToken) -> Result<()> {
        if let Err(e) = self.heartbeat("Ready").await {
            tracing::warn!(worker = %self.config.worker_id, error = %e, "worker registration failed");
        }
        let mut heartbeat =
            tokio::time::interval(self.config.heartbeat_interval.max(Duration::from_millis(1)));
        let mut poll =
            tokio::time::interval(self.config.poll_interval.max(Duration::from_millis(1)));
        let mut running: JoinSet<()> = JoinSet::new();
        // The consumer runs on its own task (a claim poll must not hold up deliveries); the
        // handle aborts it when dropped, so dropping the worker's future stops everything it
        // does, as a killed process would.
        let consumers = cancel.child_token();
        let consuming = self.config.execution_mode == ExecutionMode::MessageDriven
            && self.messages.as_ref().is_some_and(|md| md.config.consume);
        let (subscribed_tx, subscribed) = tokio::sync::watch::channel(!consuming);
        let mut consumer = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            self.clone()
                .consume_messages(consumers.clone(), subscribed_tx),
        ));
        let mut consumer_done = !consuming;
        let mut consumer_failure: Option<String> = None;
        // New work is claimed when the store signals it, else at the next poll.
        let mut claim_signal = self
            .store
            .claim_signal()
            .unwrap_or_else(|| futures::stream::pending().boxed());
        let mut signal_live = true;
        let mut slots_full = false;
        loop {
            // After a failed claim round, the next one comes when its wait is over, not at the
            // next poll: tasks that signalled during the outage, or a slot that came free
            // while claims waited, would otherwise wait for the poll.
            let claim_retry = self
                .claim_backoff
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .map(|(until, _)| until)
                // Only while the wait is on: a round that ended for another reason (no free
                // slot) leaves the past wait in place.
                .filter(|until| *until > tokio::time::Instant::now());
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(claim_retry.unwrap_or_else(tokio::time::Instant::now)),
                    if claim_retry.is_some() && *subscribed.borrow() =>
                {
                    slots_full = self.claim_available(&mut running).await;
                }
                ended = &mut consumer, if !consumer_done => {
                    consumer_done = true;
                    if cancel.is_cancelled() {
                        break;
                    }
                    // It only returns on cancel: anything else (a panic) would leave the tasks
                    // this worker holds unserved while it kept renewing their leases.
                    let reason = match ended {
                        Err(e) => e.to_string(),
                        Ok(()) => "it returned".to_string(),
                    };
                    tracing::error!(worker = %self.config.worker_id, %reason, "agent message consumer stopped; stopping the worker");
                    consumer_failure = Some(reason);
                    break;
                }
                _ = heartbeat.tick() => {
                    if let Err(e) = self.heartbeat("Ready").await {
                        tracing::warn!(worker = %self.config.worker_id, error = %e, "worker heartbeat failed");
                    }
                    self.renew_owned().await;
                    // Approvals are decided at human speed: sweeping on the heartbeat keeps a
                    // full task listing off the claim poll, which is the dispatch hot path.
                    match self.sweep_approvals().await {
                        Ok(tasks) => {
                            for task in tasks {
                                let worker = self.clone();
                                running.spawn(async move {
                                    let key = task.key();
                                    if let Err(e) = worker.execute_resumed(task).await {
                                        tracing::warn!(task = %key, error = %e, "resumed task failed");
                                    }
                                });
                            }
                        }
                        Err(e) => {
                            tracing::warn!(worker = %self.config.worker_id, error = %e, "approval sweep failed");
                        }
                    }
                }
                _ = poll.tick(), if *subscribed.borrow() => {
                    slots_full = self.claim_available(&mut running).await;
                }
                signal = claim_signal.next(), if signal_live && *subscribed.borrow() => match signal {
                    Some(()) => slots_full = self.claim_available(&mut running).await,
                    None => signal_live = false,
                },
                Some(_) = running.join_next(), if !running.is_empty() => {
                    // A slot came free while work was waiting for one: claim now, not at
                    // the next poll.
                    if slots_full && *subscribed.borrow() {
                        slots_full = self.claim_available(&mut running).await;
                    }
                }
            }
        }
        consumers.cancel();
        let (drained, ()) = tokio::join!(
            async {
                tokio::time::timeout(self.config.drain_timeout, async {
                    while running.join_next().await.is_some() {}
                })
                .await
                .is_ok()
            },
            async {
                if !consumer_done {
                    let _ = (&mut consumer).await;
                }
            }
        );
        self.release_owned().await;
        if !drained {
            running.abort_all();
            while running.join_next().await.is_some() {}
            let held: Vec<(String, String)> = self.held().drain().collect();
            for (ns, name) in held {
                if let Err(e) = self
                    .store
                    .release_task(&ns, &name, &self.config.worker_id)
                    .await
                {
                    tracing::warn!(task = %format!("{ns}/{name}"), error = %e, "releasing task failed");
                }
            }
        }
        self.heartbeat("NotReady").await?;
        match consumer_failure {
            Some(reason) => Err(Error::internal(format!(
                "agent message consumer stopped: {reason}"
            ))),
            None => Ok(()),
        }
    }
}

/// Waits between tries of a store write while the store is unavailable (doubling from
/// [`UNAVAILABLE_FIRST_WAIT`] up to [`UNAVAILABLE_MAX_WAIT`]). For writes that record work
/// already done (model and tool calls), which whoever ran the task next would otherwise do
/// again. Trying again is safe: status writes are version-guarded, so once another worker has
/// taken the task over the write conflicts instead. Shutdown ends the wait by aborting the run
/// after the drain time.
#[derive(Default)]
struct UnavailableWait {
    failures: u32,
}

impl UnavailableWait {
    /// Whether a try has failed.
    fn failed(&self) -> bool {
        self.failures > 0
    }

    /// After a failed try: waits and returns `Ok` to try again when the store was unavailable;
    /// any other error is returned.
    async fn wait_or_fail(&mut self, error: Error, task: &Object, what: &str) -> Result<()> {
        if error.kind() != ErrorKind::Unavailable {
            return Err(error);
        }
        self.failures += 1;
        // The first failure and then every doubling: an outage is not a log flood.
        if self.failures.is_power_of_two() {
            tracing::warn!(task = %task.key(), error = %error, failures = self.failures, "store unavailable; writing {what} again after a wait");
        }
        tokio::time::sleep(wait_after(self.failures)).await;
        Ok(())
    }
}

/// The wait after `failures` (≥ 1) failures in a row: [`UNAVAILABLE_FIRST_WAIT`], doubling up
/// to [`UNAVAILABLE_MAX_WAIT`].
fn wait_after(failures: u32) -> Duration {
    UNAVAILABLE_FIRST_WAIT
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(UNAVAILABLE_MAX_WAIT)
}

/// What one run of a task needs, resolved once per claim.
struct Prepared {
    spec: TaskSpec,
    plan: Arc<Plan>,
    policies: PolicySet,
    authorizer: Arc<RoleAuthorizer>,
    runner: AgentRunner,
}

fn is_waiting(status: &TaskStatus) -> bool {
    status.phase == "WaitingApproval"
}

/// Appends `entry` unless the newest entries already hold it (a transition applied over a
/// status that carries it already: a write tried again, a merge of this worker's progress).
fn push_history(status: &mut TaskStatus, entry: TaskHistoryEvent) {
    if status.history.iter().rev().take(8).any(|h| **h == entry) {
        return;
    }
    status.history.push(entry);
    if status.history.len() > MAX_HISTORY {
        status
            .history
            .remove_first(status.history.len() - MAX_HISTORY);
    }
}

fn cap(status: &mut TaskStatus) {
    if status.trace.len() > MAX_TRACE {
        status.trace.remove_first(status.trace.len() - MAX_TRACE);
    }
    if status.messages.len() > MAX_MESSAGES {
        status
            .messages
            .remove_first(status.messages.len() - MAX_MESSAGES);
    }
}

/// Copies the engine-owned progress (trace, messages, join states) into a fresh status.
fn merge_progress(fresh: &mut TaskStatus, ours: &TaskStatus) {
    fresh.trace = ours.trace.clone();
    fresh.messages = ours.messages.clone();
    fresh.join_states = ours.join_states.clone();
    // History this worker added and has not written yet (a message-driven claim is recorded
    // with the first step): entries no older than the fresh status's newest that it lacks.
    // Older ones it lacks were trimmed, not added.
    let newest = fresh
        .history
        .last()
        .map(|h| h.timestamp.clone())
        .unwrap_or_default();
    for entry in &ours.history {
        if entry.timestamp >= newest && !fresh.history.contains_entry(entry) {
            fresh.history.push((**entry).clone());
        }
    }
}

fn clear_lease(status: &mut TaskStatus) {
    status.assigned_worker.clear();
    status.claimed_by.clear();
    status.lease_until.clear();
    status.last_heartbeat.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event_type: &str, timestamp: &str) -> TaskHistoryEvent {
        TaskHistoryEvent {
            timestamp: timestamp.into(),
            event_type: event_type.into(),
            ..Default::default()
        }
    }

    fn types(status: &TaskStatus) -> Vec<&str> {
        status
            .history
            .iter()
            .map(|h| h.event_type.as_str())
            .collect()
    }

    #[test]
    fn a_merge_keeps_history_this_worker_added_and_not_what_was_trimmed() {
        let ours = TaskStatus {
            history: vec![
                entry("old", "2026-01-01T00:00:00.000Z"),
                entry("created", "2026-01-01T00:00:01.000Z"),
                entry("claim", "2026-01-01T00:00:03.000Z"),
            ]
            .into(),
            ..Default::default()
        };
        // Written meanwhile (a lease renewal) without the claim, with the oldest entry trimmed.
        let mut fresh = TaskStatus {
            history: vec![entry("created", "2026-01-01T00:00:01.000Z")].into(),
            ..Default::default()
        };
        merge_progress(&mut fresh, &ours);
        assert_eq!(types(&fresh), ["created", "claim"]);
        // Merging again adds nothing.
        merge_progress(&mut fresh, &ours);
        assert_eq!(types(&fresh), ["created", "claim"]);
    }

    #[test]
    fn a_transition_applied_over_progress_that_carries_it_is_recorded_once() {
        // Message-driven finalize after a conflict: `ours` has the transition applied already,
        // and the fresh status gets the merge and then the transition.
        let done = entry("succeeded", "2026-01-01T00:00:05.000Z");
        let mut ours = TaskStatus {
            history: vec![entry("claim", "2026-01-01T00:00:03.000Z")].into(),
            ..Default::default()
        };
        push_history(&mut ours, done.clone());
        let mut fresh = TaskStatus {
            history: vec![entry("created", "2026-01-01T00:00:01.000Z")].into(),
            ..Default::default()
        };
        merge_progress(&mut fresh, &ours);
        push_history(&mut fresh, done);
        assert_eq!(types(&fresh), ["created", "claim", "succeeded"]);
    }
}
