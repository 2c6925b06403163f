//! Message-driven execution (spec runtime §3.2, §5.6–5.9).
//!
//! The claiming worker records the kickoff messages in the Task status, *then* publishes them
//! on the [`Bus`]. Consumers handle deliveries: only the task's lease holder executes its
//! messages (a consumer takes an expired or released lease over); each step is the same
//! [`GraphRun::process`] the sequential mode uses, its outcome is persisted with
//! compare-and-swap *before* the next messages are published, and a message whose record is
//! already terminal is acknowledged without running anything, so redeliveries and takeovers
//! never repeat a completed step.
//!
//! A task's messages are executed in their recorded order (a delivery runs the task's oldest
//! open messages up to and including its own), which is what makes both modes produce the same
//! trace, history and output.
//!
//! The lease holder does not wait for its own messages to come back from the bus: once a step
//! is persisted it runs the task's next open message at once, while the messages the step
//! produced are being published; their deliveries then only acknowledge. A claiming worker that
//! consumes the task's messages likewise runs the first message straight away, and that step's
//! write records the claim and the kickoff with it. Nothing is lost by not recording the kickoff
//! first: a worker dying before that write leaves the task claimed and unstarted, and whoever
//! takes the lease over kicks it off again. A worker that only claims (`consume` off), a
//! takeover and an approval resume record and publish as described above.

use super::{Prepared, TaskResult, Worker, merge_progress, push_history};
use crate::engine::failure::{FailureOutcome, message_retry_delay, message_retryable};
use crate::engine::graph::{GraphRun, StepFailure};
use crate::events::Event;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use orloj_core::bus::{AgentMessage, Bus, ConsumerConfig, Delivery, Outgoing, inbox_subject};
use orloj_core::resources::{
    self, TaskHistoryEvent, TaskMessage, TaskSpec, TaskStatus, parse_duration,
};
use orloj_core::task_queue::format_time;
use orloj_core::{ErrorKind, Kind, Object, Result};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How a worker uses the agent message bus.
#[derive(Debug, Clone)]
pub struct MessageConfig {
    /// Subject prefix (`--agent-message-subject-prefix`, default `orloj.agentmsg`).
    pub subject_prefix: String,
    /// Whether this worker consumes agent messages (`--agent-message-consume`). A worker that
    /// only claims hands each task's lease back after the kickoff so a consumer takes it.
    pub consume: bool,
    /// Only consume messages of this namespace, when set.
    pub consumer_namespace: Option<String>,
    /// Redelivery of an unsettled delivery.
    pub ack_wait: Duration,
    /// Deliveries handled at the same time (a task's own messages never run concurrently).
    pub concurrency: usize,
}

impl Default for MessageConfig {
    fn default() -> Self {
        Self {
            subject_prefix: orloj_core::bus::DEFAULT_SUBJECT_PREFIX.into(),
            consume: true,
            consumer_namespace: None,
            ack_wait: Duration::from_secs(120),
            concurrency: 8,
        }
    }
}

/// The bus and per-process state of message-driven mode.
#[derive(Clone)]
pub(super) struct MessageRuntime {
    pub(super) bus: Arc<dyn Bus>,
    pub(super) config: Arc<MessageConfig>,
    /// One lock per task: a task's messages run one at a time in this process.
    locks: Arc<Mutex<HashMap<String, TaskLock>>>,
    /// Resolved runs, by task key and attempt.
    prepared: Arc<Mutex<HashMap<RunKey, Arc<Prepared>>>>,
    /// Tasks whose lease this worker keeps while their messages flow.
    owned: Arc<Mutex<HashMap<String, Owned>>>,
    /// An owned task as this worker last wrote it, with its status: the next message of the
    /// task starts from it instead of reading and parsing the task again. A stale entry is
    /// caught by the compare-and-swap of the step's write.
    latest: Arc<Mutex<HashMap<String, Written>>>,
    /// Lease ends of tasks another worker holds, as last read: their messages are skipped
    /// without a store read until then.
    others: Arc<Mutex<HashMap<String, DateTime<Utc>>>>,
    /// Messages this worker ran ahead of their deliveries (see [`Worker::handle_locked`]):
    /// their deliveries are acknowledged without a store read.
    ran_ahead: Arc<Mutex<HashSet<RecordedMessage>>>,
}

/// A recorded message: id, attempt and recording time (which tells a task created again
/// under the same name apart).
type RecordedMessage = (String, i64, String);

/// A task this worker holds in message-driven mode.
#[derive(Debug, Clone)]
struct Owned {
    namespace: String,
    name: String,
    /// The lease end this worker last wrote.
    lease_until: DateTime<Utc>,
    /// When the safety net last republished its open messages.
    republished: Option<DateTime<Utc>>,
}

fn lease_end(status: &TaskStatus) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&status.lease_until)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl MessageRuntime {
    pub(super) fn new(bus: Arc<dyn Bus>, config: MessageConfig) -> Self {
        Self {
            bus,
            config: Arc::new(config),
            locks: Arc::default(),
            prepared: Arc::default(),
            owned: Arc::default(),
            latest: Arc::default(),
            others: Arc::default(),
            ran_ahead: Arc::default(),
        }
    }

    /// Whether this worker consumes the messages of tasks in `namespace`.
    fn consumes(&self, namespace: &str) -> bool {
        self.config.consume
            && self.config.consumer_namespace.as_deref().is_none_or(|ns| {
                orloj_core::bus::subject_token(ns) == orloj_core::bus::subject_token(namespace)
            })
    }

    /// Notes that `m` was run to a final outcome ahead of its delivery.
    fn ran_ahead(&self, m: RecordedMessage) {
        let mut ran = self.ran_ahead.lock().unwrap_or_else(|e| e.into_inner());
        if ran.len() > 10_000 {
            ran.clear();
        }
        ran.insert(m);
    }

    /// Whether `msg` was run ahead of this, its delivery (forgotten once asked).
    fn was_run_ahead(&self, msg: &AgentMessage) -> bool {
        let key = (msg.message_id.clone(), msg.attempt, msg.timestamp.clone());
        self.ran_ahead
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
    }

    /// Keeps `task` (as this worker just wrote it) and its status for the task's next message,
    /// while the task is owned. A newer version of the same task already kept stays (the claim
    /// path remembers without the task's lock, so it may come late).
    fn remember(&self, task: Arc<Object>, status: TaskStatus) {
        let key = task.key();
        if !self
            .owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key)
        {
            return;
        }
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let keep_kept = latest.get(&key).is_some_and(|(kept, _)| {
            kept.metadata.created_at == task.metadata.created_at
                && kept.metadata.resource_version_number() > task.metadata.resource_version_number()
        });
        if !keep_kept {
            latest.insert(key, (task, status));
        }
    }

    /// Takes what [`Self::remember`] kept for `key`.
    fn recall(&self, key: &str) -> Option<Written> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
    }

    fn lock_for(&self, key: &str) -> TaskLock {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.len() > 10_000 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(key.to_string()).or_default().clone()
    }

    fn forget(&self, key: &str) {
        self.owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.recall(key);
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(k, _), _| k != key);
    }

    /// Records that this worker holds `task` (as just read or written).
    fn own(&self, task: &Object) {
        // Read the one field instead of parsing the whole status.
        let lease_until = task
            .status
            .get("leaseUntil")
            .and_then(serde_json::Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        self.own_until(task, lease_until);
    }

    /// [`Self::own`] of a task this worker wrote with `status` (the task's own may be empty).
    fn own_written(&self, task: &Object, status: &TaskStatus) {
        self.own_until(task, lease_end(status));
    }

    fn own_until(&self, task: &Object, lease_until: Option<DateTime<Utc>>) {
        let lease_until = lease_until.unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        let entry = owned.entry(task.key()).or_insert_with(|| Owned {
            namespace: task.namespace().to_string(),
            name: task.name().to_string(),
            lease_until,
            republished: None,
        });
        entry.lease_until = entry.lease_until.max(lease_until);
    }

    /// Whether another worker held the task with a lease still running when last read.
    fn held_elsewhere(&self, key: &str, now: DateTime<Utc>) -> bool {
        let others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        others.get(key).is_some_and(|until| *until > now)
    }

    fn note_elsewhere(&self, key: &str, until: Option<DateTime<Utc>>) {
        let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        if others.len() > 50_000 {
            others.clear();
        }
        match until {
            Some(until) => {
                others.insert(key.to_string(), until);
            }
            None => {
                others.remove(key);
            }
        }
    }

    fn durable(worker_id: &str) -> String {
        let name: String = worker_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("orloj-{name}")
    }
}

/// A task key and attempt.
type RunKey = (String, i64);

/// A task as this worker wrote it, with its status.
type Written = (Arc<Object>, TaskStatus);

/// Serializes the handling of one task's messages.
type TaskLock = Arc<tokio::sync::Mutex<()>>;

/// What to do with a delivery after handling it.
enum Settle {
    Ack,
    Nak(Duration),
    Term(String),
}

/// The status message records of `attempt` that are not finished.
fn open_messages(status: &TaskStatus, attempt: i64) -> impl Iterator<Item = (usize, &TaskMessage)> {
    status
        .messages
        .iter()
        .map(|m| &**m)
        .enumerate()
        .filter(move |(_, m)| m.attempt == attempt && is_open(m))
}

fn is_open(m: &TaskMessage) -> bool {
    matches!(m.phase.as_str(), "Queued" | "Running" | "RetryPending")
}

fn to_envelope(task: &Object, m: &TaskMessage) -> AgentMessage {
    AgentMessage {
        message_id: m.message_id.to_string(),
        idempotency_key: m.idempotency_key.to_string(),
        task_id: m.task_id.to_string(),
        attempt: m.attempt,
        system: m.system.to_string(),
        namespace: task.namespace().to_string(),
        from_agent: m.from_agent.to_string(),
        to_agent: m.to_agent.to_string(),
        branch_id: m.branch_id.to_string(),
        parent_branch_id: m.parent_branch_id.to_string(),
        message_type: m.message_type.to_string(),
        payload: m.content.clone(),
        timestamp: m.timestamp.clone(),
        trace_id: m.trace_id.to_string(),
        parent_id: m.parent_id.to_string(),
    }
}

/// The bus message for a recorded message. The dedupe id names the task object (its creation
/// time: a task deleted and created again under the same name, or another store sharing the
/// stream, must not look like a duplicate) and, for a republish, the recorded state it
/// republishes (`republish_of`).
fn outgoing(
    md: &MessageRuntime,
    task: &Object,
    m: &TaskMessage,
    republish_of: Option<&str>,
) -> Outgoing {
    let created = task
        .metadata
        .created_at
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or_default();
    let dedupe_id = match republish_of {
        Some(rv) => format!("{created}:{}#{rv}", m.message_id),
        None => format!("{created}:{}", m.message_id),
    };
    Outgoing {
        subject: inbox_subject(&md.config.subject_prefix, task.namespace(), &m.to_agent),
        dedupe_id,
        payload: to_envelope(task, m).encode(),
    }
}

impl Worker {
    /// Runs agent messages over `bus` (message-driven mode): claimed tasks are kicked off on
    /// the bus and, when `config.consume` is set, this worker consumes and executes messages.
    pub fn with_message_bus(mut self, bus: Arc<dyn Bus>, config: MessageConfig) -> Self {
        self.messages = Some(MessageRuntime::new(bus, config));
        self
    }

    fn message_runtime(&self) -> Option<&MessageRuntime> {
        self.messages.as_ref()
    }

    /// Resolves (once per task attempt) what running the task's messages needs.
    async fn prepared_for(
        &self,
        md: &MessageRuntime,
        task: &Object,
        attempt: i64,
    ) -> std::result::Result<Arc<Prepared>, StepFailure> {
        let key = (task.key(), attempt);
        if let Some(p) = md
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        let p = Arc::new(self.prepare_run(task).await?);
        let mut cache = md.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(key, p.clone());
        Ok(p)
    }

    /// Claim path of message-driven mode: records the kickoff (unless this attempt already has
    /// one — a takeover) and `claim` (the claim's history entry, when the claim did not write
    /// it), persists them, then publishes every open message of the attempt. A fresh attempt
    /// this worker consumes is run here instead (see [`Self::kickoff`]).
    pub(super) async fn kickoff_held(
        &self,
        task: Object,
        claim: Option<TaskHistoryEvent>,
    ) -> Result<TaskResult> {
        self.kickoff(task, claim, true).await
    }

    /// [`Self::kickoff_held`]. With `local`, a fresh attempt of a task whose messages this
    /// worker consumes is not recorded and published first: this worker runs its first
    /// message at once, and that step's write records the claim, the kickoff and the step
    /// together (one write fewer; a worker dying before it leaves the task as claimed, and
    /// whoever takes it over kicks it off again).
    async fn kickoff(
        &self,
        task: Object,
        claim: Option<TaskHistoryEvent>,
        local: bool,
    ) -> Result<TaskResult> {
        // Shared with the run here, if the first message runs here.
        let task = Arc::new(task);
        let mut status = resources::status_of::<TaskSpec>(&task).unwrap_or_default();
        let record_claim = |s: &mut TaskStatus| {
            if let Some(claim) = &claim
                && !s.history.contains_entry(claim)
            {
                push_history(s, claim.clone());
            }
        };
        record_claim(&mut status);
        let log_claim = async {
            if let Some(claim) = &claim {
                self.log(&task, claim.message.clone()).await;
            }
        };
        let Some(md) = self.message_runtime().cloned() else {
            log_claim.await;
            let failure = StepFailure {
                reason: "task execution mode message-driven requires configured agent message bus"
                    .into(),
                approval_pending: false,
            };
            return self.finalize(&task, status, Err(failure), None).await;
        };
        // The claim's log line is written while the run is resolved and the kickoff recorded or
        // run here. It is appended first: the store takes it in when its append is first
        // polled, before anything later of the task can be logged.
        let kickoff = async {
            let prepared = match self.prepared_for(&md, &task, status.attempts).await {
                Ok(p) => p,
                Err(f) => return Result::<Kicked>::Ok(Kicked::Unresolved(f)),
            };
            let run = GraphRun::new(
                &prepared.plan,
                &task,
                &prepared.spec,
                status.attempts,
                &self.config.worker_id,
                self.clock.as_ref(),
            );
            // A takeover or an approval resume may race a handler of this worker still running
            // one of the attempt's messages: only a fresh attempt's kickoff is remembered.
            let fresh_attempt = !status.messages.iter().any(|m| m.attempt == status.attempts);
            run.kickoff(&mut status);
            if local && fresh_attempt && md.consumes(task.namespace()) {
                let ran = self
                    .run_kickoff_here(&md, task.clone(), std::mem::take(&mut status))
                    .await;
                return Ok(Kicked::Local(ran));
            }
            // `task` is as the claim (or the approval resume) just wrote it; `status` is its
            // status plus the kickoff.
            let written = self
                .write_status_latest(&task, &mut status, |s, ours| {
                    record_claim(s);
                    merge_progress(s, ours);
                    s.output = ours.output.clone();
                })
                .await?;
            Ok(match written {
                Some((task, status)) => {
                    // Kept by the store: this worker goes on with a copy.
                    let written = (task, Arc::unwrap_or_clone(status));
                    Kicked::Recorded(Box::new(written), fresh_attempt)
                }
                None => Kicked::LeaseLost,
            })
        };
        let (_, kicked) = futures::join!(log_claim, kickoff);
        let ((written, written_status), fresh_attempt) = match kicked? {
            Kicked::Recorded(written, fresh_attempt) => (*written, fresh_attempt),
            Kicked::Unresolved(f) => return self.finalize(&task, status, Err(f), None).await,
            Kicked::LeaseLost => return Ok(TaskResult::LeaseLost),
            Kicked::Local(ran) => return ran,
        };
        let consume = md.config.consume;
        let rv = written.metadata.resource_version.clone();
        // A fresh dedupe id per recorded state: a takeover must republish what the previous
        // holder may have published already.
        let outgoing: Vec<Outgoing> = open_messages(&written_status, written_status.attempts)
            .map(|(_, m)| outgoing(&md, &written, m, Some(&rv)))
            .collect();
        let key = written.key();
        let (namespace, name) = (written.namespace().to_string(), written.name().to_string());
        // A worker consuming the task's messages runs the first one now, while the kickoff is
        // published, instead of waiting for its delivery (which then only acknowledges).
        let first = open_messages(&written_status, written_status.attempts)
            .next()
            .filter(|_| fresh_attempt && md.consumes(&namespace))
            .map(|(_, m)| to_envelope(&written, m));
        if consume {
            // Before publishing: the first message may be handled at once.
            md.own_written(&written, &written_status);
            if fresh_attempt {
                md.remember(written, written_status);
            }
        }
        let publish = async {
            for message in outgoing {
                self.publish_outgoing(&md, &key, message).await?;
            }
            Result::<()>::Ok(())
        };
        let run_first = async {
            if let Some(envelope) = &first {
                self.handle_message(&md, envelope, true).await;
            }
        };
        let (published, ()) = futures::join!(publish, run_first);
        published?;
        if !consume
            && let Err(e) = self
                .store
                .release_task(&namespace, &name, &self.config.worker_id)
                .await
        {
            tracing::warn!(task = %key, error = %e, "handing the task to consumers failed");
        }
        Ok(TaskResult::Written("Running".into()))
    }

    /// The local kickoff of [`Self::kickoff`]: `status` is `task`'s (as claimed) plus the claim
    /// and the kickoff, not written yet. Runs the first message as its delivery would; when
    /// that does not end its run (a retry, a store error), the task is kicked off the usual way
    /// from what is stored.
    async fn run_kickoff_here(
        &self,
        md: &MessageRuntime,
        task: Arc<Object>,
        status: TaskStatus,
    ) -> Result<TaskResult> {
        let first = open_messages(&status, status.attempts)
            .next()
            .map(|(_, m)| to_envelope(&task, m));
        md.own_written(&task, &status);
        md.remember(task.clone(), status);
        if let Some(first) = first
            && !matches!(self.handle_message(md, &first, false).await, Settle::Ack)
        {
            let stored = self
                .store
                .get(Kind::Task, task.namespace(), task.name())
                .await?;
            return Box::pin(self.kickoff(stored, None, false)).await;
        }
        Ok(TaskResult::Written("Running".into()))
    }

    /// Publishes one recorded message of task `key`, retrying with capped backoff while the bus
    /// is away.
    async fn publish_outgoing(
        &self,
        md: &MessageRuntime,
        key: &str,
        outgoing: Outgoing,
    ) -> Result<()> {
        // The step is recorded; its successor must reach the bus. While the bus is away keep
        // trying (the lease is renewed meanwhile); shutdown aborts this after the drain time
        // and whoever takes the lease over republishes.
        let mut delay = Duration::from_millis(50);
        loop {
            match md.bus.publish(outgoing.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout) => {
                    tracing::warn!(task = %key, subject = %outgoing.subject, error = %e, retry_in = ?delay, "publishing agent message failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Consumes agent messages until `cancel` fires, then waits for the handlers in flight.
    /// `subscribed` turns true once the durable consumer exists (claims wait for it, so no
    /// kickoff is published before this worker can receive it).
    pub(super) async fn consume_messages(
        self,
        cancel: CancellationToken,
        subscribed: tokio::sync::watch::Sender<bool>,
    ) {
        let Some(md) = self.message_runtime().cloned() else {
            return;
        };
        let namespace = md
            .config
            .consumer_namespace
            .as_deref()
            .map(orloj_core::bus::subject_token)
            .unwrap_or_else(|| "*".into());
        let consumer = ConsumerConfig {
            durable: MessageRuntime::durable(&self.config.worker_id),
            filter_subject: format!(
                "{}.{namespace}.*.inbox",
                md.config.subject_prefix.trim_end_matches('.')
            ),
            ack_wait: md.config.ack_wait,
            max_deliver: -1,
        };
        let limit = md.config.concurrency.max(1);
        let mut handlers: JoinSet<()> = JoinSet::new();
        let mut backoff = Duration::from_millis(100);
        'subscribe: while !cancel.is_cancelled() {
            let mut stream = match md.bus.subscribe(&consumer).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(worker = %self.config.worker_id, error = %e, "subscribing to agent messages failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => break 'subscribe,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            subscribed.send_replace(true);
            loop {
                while handlers.len() >= limit {
                    // Shutdown must not wait for a free slot: handlers stuck on an absent bus
                    // are aborted after the drain time below.
                    tokio::select! {
                        _ = cancel.cancelled() => break 'subscribe,
                        _ = handlers.join_next() => {}
                    }
                }
                let next = tokio::select! {
                    _ = cancel.cancelled() => break 'subscribe,
                    next = stream.next() => next,
                };
                match next {
                    Some(Ok(delivery)) => {
                        let worker = self.clone();
                        let md = md.clone();
                        handlers.spawn(async move { worker.handle_delivery(&md, delivery).await });
                    }
                    Some(Err(e)) => {
                        tracing::warn!(worker = %self.config.worker_id, error = %e, "agent message stream error");
                    }
                    None => {
                        tracing::warn!(worker = %self.config.worker_id, "agent message stream ended; resubscribing");
                        tokio::select! {
                            _ = cancel.cancelled() => break 'subscribe,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        continue 'subscribe;
                    }
                }
            }
        }
        let drained = tokio::time::timeout(self.config.drain_timeout, async {
            while handlers.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            handlers.abort_all();
            while handlers.join_next().await.is_some() {}
        }
    }

    async fn handle_delivery(&self, md: &MessageRuntime, delivery: Delivery) {
        let settle = match AgentMessage::decode(&delivery.payload) {
            Err(e) => Settle::Term(e.to_string()),
            Ok(msg) => self.handle_message(md, &msg, false).await,
        };
        let result = match &settle {
            Settle::Ack => delivery.acker.ack().await,
            Settle::Nak(delay) => delivery.acker.nak(*delay).await,
            Settle::Term(reason) => {
                tracing::warn!(subject = %delivery.subject, reason = %reason, "agent message dead-lettered");
                self.dead_letter(md, &delivery, reason).await;
                delivery.acker.term().await
            }
        };
        if let Err(e) = result {
            tracing::warn!(subject = %delivery.subject, error = %e, "settling agent message failed");
        }
    }

    /// Records an undeliverable message on the bus's dead-letter subject and as an event.
    async fn dead_letter(&self, md: &MessageRuntime, delivery: &Delivery, reason: &str) {
        let body = serde_json::json!({
            "reason": reason,
            "subject": delivery.subject,
            "worker": self.config.worker_id,
            "payload": String::from_utf8_lossy(&delivery.payload),
        });
        let outgoing = Outgoing {
            subject: format!(
                "{}.deadletter",
                md.config.subject_prefix.trim_end_matches('.')
            ),
            dedupe_id: String::new(),
            payload: body.to_string().into_bytes(),
        };
        if let Err(e) = md.bus.publish(outgoing).await {
            tracing::warn!(error = %e, "recording a dead-lettered agent message failed");
        }
        if let Some(events) = &self.events {
            events.publish(Event {
                id: 0,
                timestamp: self.clock.now(),
                source: "agent-message-consumer".into(),
                event_type: "agent_message.deadletter".into(),
                kind: Kind::Task.as_str().to_string(),
                name: String::new(),
                namespace: String::new(),
                action: "deadletter".into(),
                message: reason.to_string(),
                data: serde_json::json!({ "subject": delivery.subject }),
            });
        }
    }

    /// Handles one decoded message for its task (see the module docs). `ahead`: the message
    /// is run before its delivery arrives (the kickoff), which then only acknowledges.
    async fn handle_message(&self, md: &MessageRuntime, msg: &AgentMessage, ahead: bool) -> Settle {
        let (namespace, name) = match msg.task_id.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
                (ns.to_string(), name.to_string())
            }
            _ if !msg.namespace.is_empty() => (msg.namespace.clone(), msg.task_id.clone()),
            _ => (
                orloj_core::DEFAULT_NAMESPACE.to_string(),
                msg.task_id.clone(),
            ),
        };
        let key = format!("{namespace}/{name}");
        if md.was_run_ahead(msg) {
            return Settle::Ack;
        }
        if md.held_elsewhere(&key, self.clock.now()) {
            // Its holder has its own delivery; if it dies, whoever takes the lease over
            // republishes the open messages.
            return Settle::Ack;
        }
        let lock = md.lock_for(&key);
        let _guard = lock.lock().await;
        // Run ahead while this delivery waited for the lock.
        if md.was_run_ahead(msg) {
            return Settle::Ack;
        }
        // Boxed: the steps' state is large, and most deliveries (already run ahead) never get
        // here, so they should not carry it.
        let (settle, latest) = Box::pin(self.handle_locked(md, msg, &key, &namespace, &name)).await;
        // Still under the task's lock: its delivery, waiting for it, must find this.
        if ahead && matches!(settle, Settle::Ack) {
            md.ran_ahead((msg.message_id.clone(), msg.attempt, msg.timestamp.clone()));
        }
        if let Some((task, status)) = latest {
            // Its next message starts from here.
            md.remember(task, status);
        }
        settle
    }

    /// [`Self::handle_message`] under the task's lock; also returns the task as this worker
    /// last wrote it (and its status) while it still runs the task. The messages its steps
    /// produced are on the bus when it returns.
    async fn handle_locked(
        &self,
        md: &MessageRuntime,
        msg: &AgentMessage,
        key: &str,
        namespace: &str,
        name: &str,
    ) -> (Settle, Option<Written>) {
        let mut publishing = JoinSet::new();
        let handled = self
            .run_messages(md, msg, key, namespace, name, &mut publishing)
            .await;
        while let Some(published) = publishing.join_next().await {
            match published {
                Ok(Ok(())) => {}
                // Recorded, so not lost: whoever holds the task republishes open messages
                // nobody worked on (`renew_owned`, takeover).
                Ok(Err(e)) => {
                    tracing::warn!(task = %key, error = %e, "publishing an agent message failed")
                }
                Err(e) => tracing::warn!(task = %key, error = %e, "agent message publish aborted"),
            }
        }
        handled
    }

    /// The steps of [`Self::handle_locked`]; the messages they produce are published on
    /// `publishing` while the next steps run.
    async fn run_messages(
        &self,
        md: &MessageRuntime,
        msg: &AgentMessage,
        key: &str,
        namespace: &str,
        name: &str,
        publishing: &mut JoinSet<Result<()>>,
    ) -> (Settle, Option<Written>) {
        let read = || async {
            match self.store.get(Kind::Task, namespace, name).await {
                Ok(t) => Ok(Arc::new(t)),
                Err(e) if e.kind() == ErrorKind::NotFound => Err(Settle::Term(format!(
                    "message {} is for unknown task {key}",
                    msg.message_id
                ))),
                Err(e) => {
                    tracing::warn!(task = %key, error = %e, "reading task for agent message failed");
                    Err(Settle::Nak(Duration::from_secs(1)))
                }
            }
        };
        // The status of `task` when this worker wrote it itself (no need to parse it again).
        let mut known: Option<TaskStatus> = None;
        // Whether `task` is this worker's last write rather than a fresh read: trusted only
        // for the common case (its open message, its lease), read again for anything else.
        let mut remembered = false;
        // Set once this handler has run a step: it then goes on with the task's next open
        // messages while this worker holds the task, instead of waiting for their deliveries
        // (which then only acknowledge). Its own delivery is settled by then.
        let mut ran_one = false;
        let mut task = match md.recall(key) {
            Some((task, status)) => {
                known = Some(status);
                remembered = true;
                task
            }
            None => match read().await {
                Ok(t) => t,
                Err(settle) => return (settle, None),
            },
        };
        loop {
            let status = match known.take() {
                Some(status) => status,
                None => resources::status_of::<TaskSpec>(&task).unwrap_or_default(),
            };
            if remembered {
                remembered = false;
                // The recorded time also tells a task created again under the same name apart;
                // a lease that ran out may have been taken over meanwhile.
                let now = self.clock.now();
                let usual = status.phase == "Running"
                    && status.claimed_by == self.config.worker_id
                    && lease_end(&status).is_some_and(|end| end > now)
                    && status.messages.iter().any(|m| {
                        m.message_id == msg.message_id
                            && m.attempt == msg.attempt
                            && m.timestamp == msg.timestamp
                            && is_open(m)
                    });
                if !usual {
                    task = match read().await {
                        Ok(t) => t,
                        Err(settle) => return (settle, None),
                    };
                    continue;
                }
            }
            match status.phase.as_str() {
                "Succeeded" | "Failed" | "DeadLetter" | "Cancelled" => {
                    md.forget(key);
                    return (Settle::Ack, None);
                }
                // The approval sweep republishes the waiting message when it resumes the task.
                "WaitingApproval" => return (Settle::Ack, None),
                "Running" => {}
                other => {
                    tracing::debug!(task = %key, phase = %other, "agent message for a task that is not running");
                    return (Settle::Ack, None);
                }
            }
            let Some(record) = status
                .messages
                .iter()
                .find(|m| m.message_id == msg.message_id && m.attempt == msg.attempt)
            else {
                if msg.attempt != status.attempts {
                    return (Settle::Ack, None); // a message of an earlier attempt
                }
                return (
                    Settle::Term(format!(
                        "message {} is not recorded on task {key}",
                        msg.message_id
                    )),
                    None,
                );
            };
            let now = self.clock.now();
            let me = &self.config.worker_id;
            let ahead = !is_open(record);
            if ahead {
                // Usually the message this handler just ran: keep the task as written, or go on
                // with the next open message while the lease is this worker's.
                let mine = status.claimed_by == *me;
                let go_on = ran_one
                    && mine
                    && lease_end(&status).is_some_and(|end| end > now)
                    && open_messages(&status, status.attempts).next().is_some();
                if !go_on {
                    return (Settle::Ack, mine.then_some((task, status)));
                }
            }
            // Owner-only execution (§5.7).
            if status.claimed_by != *me {
                // `task` may be this worker's own write, whose status is `status`.
                let expired = orloj_core::task_queue::is_claimable_status(&task, &status, now);
                if !expired {
                    // The holder is alive and has its own delivery; if it dies, whoever takes
                    // the lease over republishes the open messages.
                    md.note_elsewhere(key, lease_end(&status));
                    return (Settle::Ack, None);
                }
                md.note_elsewhere(key, None);
                match self.take_over(&task, &msg.message_id).await {
                    Ok(Some(t)) => {
                        task = Arc::new(t);
                        md.own(&task);
                        continue;
                    }
                    Ok(None) => return (Settle::Nak(Duration::from_millis(200)), None),
                    Err(e) => {
                        tracing::warn!(task = %key, error = %e, "taking the task over failed");
                        return (Settle::Nak(Duration::from_secs(1)), None);
                    }
                }
            }
            md.own_written(&task, &status);
            // The oldest open message runs first, so both modes keep the recorded order.
            let Some((index, head)) = open_messages(&status, status.attempts).next() else {
                return (Settle::Ack, None);
            };
            if head.phase == "RetryPending" {
                let due = chrono::DateTime::parse_from_rfc3339(&head.next_attempt_at)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .unwrap_or(now);
                if due > now {
                    if ahead {
                        // Its own delivery waits for it.
                        return (Settle::Ack, Some((task, status)));
                    }
                    return (Settle::Nak((due - now).to_std().unwrap_or_default()), None);
                }
            }
            let head_id = (
                head.message_id.to_string(),
                head.attempt,
                head.timestamp.clone(),
            );
            ran_one = true;
            match self.run_step(md, &task, status, index, publishing).await {
                Ok(StepEnd::Continue(next)) => {
                    if ahead {
                        md.ran_ahead(head_id);
                    }
                    let (written, written_status) = *next;
                    task = written;
                    known = Some(written_status);
                }
                // Ahead of its delivery this handler's own message is settled already; a
                // retry of the one it ran is left to that one's delivery.
                Ok(StepEnd::Settled(settle)) if ahead => {
                    if matches!(settle, Settle::Ack) {
                        md.ran_ahead(head_id);
                    }
                    return (Settle::Ack, None);
                }
                Ok(StepEnd::Settled(settle)) => return (settle, None),
                Err(e) if ahead => {
                    tracing::warn!(task = %key, error = %e, "agent message step failed to persist; its delivery retries it");
                    return (Settle::Ack, None);
                }
                Err(e) => {
                    tracing::warn!(task = %key, error = %e, "agent message step failed to persist; retrying");
                    return (Settle::Nak(Duration::from_secs(1)), None);
                }
            }
        }
    }

    /// Takes over a task whose lease expired or was handed back (§5.7).
    async fn take_over(&self, task: &Object, message_id: &str) -> Result<Option<Object>> {
        let now = self.clock.now();
        let me = self.config.worker_id.clone();
        let lease_until = format_time(
            now + chrono::Duration::from_std(self.config.lease_duration).unwrap_or_default(),
        );
        let now_s = format_time(now);
        let holds = move |s: &TaskStatus| {
            s.phase == "Running"
                && (s.claimed_by.is_empty()
                    || chrono::DateTime::parse_from_rfc3339(&s.lease_until)
                        .map(|t| t.with_timezone(&chrono::Utc) <= now)
                        .unwrap_or(true))
        };
        self.write_status_when(task, holds, |s| {
            let previous = s.claimed_by.clone();
            let message = if previous.is_empty() {
                format!("message_id={message_id} taken by {me}")
            } else {
                format!("message lease expired; message_id={message_id} reassigned from {previous} to {me}")
            };
            s.claimed_by = me.clone();
            s.assigned_worker = me.clone();
            s.lease_until = lease_until.clone();
            s.last_heartbeat = now_s.clone();
            if !previous.is_empty() {
                push_history(s, self.history("takeover", message));
            }
        })
        .await
    }

    /// Runs the open message at `index` of the task this worker holds, persists the outcome
    /// and starts publishing the messages it produced on `publishing`.
    async fn run_step(
        &self,
        md: &MessageRuntime,
        task: &Object,
        mut status: TaskStatus,
        index: usize,
        publishing: &mut JoinSet<Result<()>>,
    ) -> Result<StepEnd> {
        let attempt = status.attempts;
        let prepared = match self.prepared_for(md, task, attempt).await {
            Ok(p) => p,
            Err(f) => {
                md.forget(&task.key());
                self.finalize(task, status, Err(f), None).await?;
                return Ok(StepEnd::Settled(Settle::Ack));
            }
        };
        let mut run = GraphRun::new(
            &prepared.plan,
            task,
            &prepared.spec,
            attempt,
            &self.config.worker_id,
            self.clock.as_ref(),
        )
        .with_policies(prepared.policies.clone());
        let before = status.messages.len();
        let result = run.process(&mut status, index, &prepared.runner).await;
        match result {
            Ok(()) => {
                if open_messages(&status, attempt).next().is_none() {
                    run.finish(&mut status);
                    md.forget(&task.key());
                    self.finalize(task, status, Ok(()), None).await?;
                    return Ok(StepEnd::Settled(Settle::Ack));
                }
                let Some((written, written_status)) =
                    self.persist_step(md, task, &mut status).await?
                else {
                    return Ok(StepEnd::Settled(Settle::Ack));
                };
                // The written status has this step's messages at the same places. They are
                // recorded: their publishing need not hold up the next step.
                for m in written_status.messages.iter().skip(before) {
                    let outgoing = outgoing(md, &written, m, None);
                    let (worker, md, key) = (self.clone(), md.clone(), written.key());
                    publishing
                        .spawn(async move { worker.publish_outgoing(&md, &key, outgoing).await });
                }
                Ok(StepEnd::Continue(Box::new((written, written_status))))
            }
            Err(f) if f.approval_pending => {
                let f = self.record_approval(task, &prepared.authorizer, f).await;
                md.forget(&task.key());
                self.finalize(task, status, Err(f), None).await?;
                Ok(StepEnd::Settled(Settle::Ack))
            }
            Err(f) => self.message_failed(md, task, status, index, f).await,
        }
    }

    /// Message retry (§5.8): a retryable failure with attempts left goes `RetryPending` and is
    /// redelivered after the backoff; otherwise the task ends (`Failed` when not retryable,
    /// `DeadLetter` when out of attempts).
    async fn message_failed(
        &self,
        md: &MessageRuntime,
        task: &Object,
        mut status: TaskStatus,
        index: usize,
        failure: StepFailure,
    ) -> Result<StepEnd> {
        let spec: TaskSpec = resources::spec_of(task).unwrap_or_default();
        let policy = &spec.message_retry;
        let max_attempts = if policy.max_attempts > 0 {
            policy.max_attempts
        } else {
            spec.retry.max_attempts.max(1)
        };
        let backoff = parse_duration(if policy.backoff.is_empty() {
            &spec.retry.backoff
        } else {
            &policy.backoff
        })
        .unwrap_or(Duration::ZERO);
        let max_backoff =
            parse_duration(&policy.max_backoff).unwrap_or(Duration::from_secs(24 * 3600));
        let retryable = message_retryable(&failure.reason, &policy.non_retryable);
        let Some(record) = status.messages.get(index).cloned() else {
            self.finalize(task, status, Err(failure), Some(FailureOutcome::Failed))
                .await?;
            return Ok(StepEnd::Settled(Settle::Ack));
        };
        if retryable && record.attempts < max_attempts {
            let delay = message_retry_delay(
                backoff,
                max_backoff,
                &policy.jitter,
                if record.idempotency_key.is_empty() {
                    &record.message_id
                } else {
                    &record.idempotency_key
                },
                record.attempts,
            );
            let now = self.clock.now();
            let next = now + chrono::Duration::from_std(delay).unwrap_or_default();
            if let Some(m) = status.messages.get_mut(index) {
                m.phase = "RetryPending".into();
                m.max_attempts = max_attempts;
                m.last_error = failure.reason.clone();
                m.next_attempt_at = format_time(next);
            }
            status.trace.push(resources::TaskTraceEvent {
                timestamp: format_time(now),
                event_type: "agent_message_retry_scheduled".into(),
                agent: record.to_agent.clone(),
                branch_id: record.branch_id.clone(),
                message: format!(
                    "message_id={} attempt={}/{max_attempts} delay={} error={}",
                    record.message_id,
                    record.attempts,
                    crate::engine::agent_turn::humanize(delay),
                    failure.reason
                ),
                attempt: status.attempts,
                retryable: Some(true),
                ..Default::default()
            });
            return match self.persist_step(md, task, &mut status).await? {
                Some(_) => Ok(StepEnd::Settled(Settle::Nak(delay))),
                None => Ok(StepEnd::Settled(Settle::Ack)),
            };
        }
        if let Some(m) = status.messages.get_mut(index) {
            m.max_attempts = max_attempts;
        }
        let (outcome, reason) = if retryable {
            (
                FailureOutcome::DeadLetter,
                format!(
                    "message {} dead-lettered after {} attempts: {}",
                    record.message_id, record.attempts, failure.reason
                ),
            )
        } else {
            (FailureOutcome::Failed, failure.reason.clone())
        };
        md.forget(&task.key());
        let failure = StepFailure {
            reason,
            approval_pending: false,
        };
        self.finalize(task, status, Err(failure), Some(outcome))
            .await?;
        Ok(StepEnd::Settled(Settle::Ack))
    }

    /// Writes a step's progress; `None` when this worker no longer holds the task. Returns the
    /// task as written and its status (so the next step need not parse it again). While the
    /// store is unavailable the step waits here with its result, so it is not run again.
    async fn persist_step(
        &self,
        md: &MessageRuntime,
        task: &Object,
        ours: &mut TaskStatus,
    ) -> Result<Option<Written>> {
        let mut unavailable = super::UnavailableWait::default();
        let written = loop {
            // Each step write also extends the lease (from when it is written), so a busy task
            // needs no renewals.
            let now = self.clock.now();
            ours.lease_until = format_time(
                now + chrono::Duration::from_std(self.config.lease_duration).unwrap_or_default(),
            );
            ours.last_heartbeat = format_time(now);
            // `ours` is `task`'s status plus this step's engine progress (trace, messages, joins,
            // output): with the new lease it is the whole next status.
            let written = self
                .write_status_latest(task, ours, |s, next| {
                    merge_progress(s, next);
                    s.output = next.output.clone();
                    s.lease_until = next.lease_until.clone();
                    s.last_heartbeat = next.last_heartbeat.clone();
                })
                .await;
            match written {
                Err(e) => unavailable.wait_or_fail(e, task, "the step").await?,
                Ok(w) => break w,
            }
        };
        Ok(written.map(|(w, status)| {
            md.own_written(&w, &status);
            // Kept by the store: the next step goes on with a copy.
            (w, Arc::unwrap_or_clone(status))
        }))
    }

    /// Renews the leases of the message-driven tasks this worker holds once half of a lease has
    /// passed since the last write; forgets the ones it lost. Also the safety net for a lost
    /// publish: an open message nobody has worked on for a redelivery period is published again
    /// (at most once per period); handling a duplicate is harmless.
    pub(super) async fn renew_owned(&self) {
        let Some(md) = self.message_runtime() else {
            return;
        };
        let now = self.clock.now();
        let lease = chrono::Duration::from_std(self.config.lease_duration).unwrap_or_default();
        let quiet = chrono::Duration::from_std(md.config.ack_wait.max(self.config.lease_duration))
            .unwrap_or_default();
        let due: Vec<(String, Owned)> = md
            .owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, o)| o.lease_until - now < lease / 2)
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        for (key, owned) in due {
            let task = match self
                .store
                .renew_task_lease(
                    &owned.namespace,
                    &owned.name,
                    &self.config.worker_id,
                    self.config.lease_duration,
                )
                .await
            {
                Ok(task) => task,
                Err(e) => {
                    if e.kind() == ErrorKind::Unavailable {
                        // Still owned, but the remembered copy may be out of date.
                        md.recall(&key);
                    } else {
                        md.forget(&key);
                    }
                    continue;
                }
            };
            md.own(&task);
            // The renewal wrote a new version: a remembered one would only cost a conflict.
            md.recall(&key);
            if owned.republished.is_some_and(|at| now - at < quiet) {
                continue;
            }
            let lock = md.lock_for(&key);
            let Ok(_idle) = lock.try_lock() else {
                continue;
            };
            let status = resources::status_of::<TaskSpec>(&task).unwrap_or_default();
            let stale: Vec<TaskMessage> = open_messages(&status, status.attempts)
                .filter(|(_, m)| m.phase != "RetryPending")
                .filter(|(_, m)| {
                    DateTime::parse_from_rfc3339(&m.timestamp)
                        .is_ok_and(|t| now - t.with_timezone(&Utc) > quiet)
                })
                .map(|(_, m)| m.clone())
                .collect();
            if stale.is_empty() {
                continue;
            }
            if let Some(o) = md
                .owned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&key)
            {
                o.republished = Some(now);
            }
            let rv = task.metadata.resource_version.clone();
            for m in stale {
                // One attempt: this runs on the heartbeat, which must not wait for the bus.
                if let Err(e) = md.bus.publish(outgoing(md, &task, &m, Some(&rv))).await {
                    tracing::warn!(task = %key, error = %e, "republishing a stalled message failed");
                }
            }
        }
    }

    /// Hands back the leases of the message-driven tasks this worker holds (shutdown), so
    /// another worker continues them at once.
    pub(super) async fn release_owned(&self) {
        let Some(md) = self.message_runtime() else {
            return;
        };
        let owned: Vec<(String, String)> = md
            .owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, o)| (o.namespace, o.name))
            .collect();
        md.latest.lock().unwrap_or_else(|e| e.into_inner()).clear();
        for (ns, name) in owned {
            if let Err(e) = self
                .store
                .release_task(&ns, &name, &self.config.worker_id)
                .await
            {
                tracing::debug!(task = %format!("{ns}/{name}"), error = %e, "releasing task failed");
            }
        }
    }
}

/// How recording a claimed task's kickoff ended.
enum Kicked {
    /// Recorded: the task as written with its status, and whether the attempt was fresh.
    Recorded(Box<Written>, bool),
    /// The run could not be resolved; the task ends with this failure.
    Unresolved(StepFailure),
    /// The lease was lost before the kickoff was recorded.
    LeaseLost,
    /// Not recorded: this worker ran the first message (and whatever followed it) here.
    Local(Result<TaskResult>),
}

/// How a step ended for the delivery being handled.
enum StepEnd {
    /// Persisted; the task as written, to look at the next open message.
    Continue(Box<Written>),
    /// Done with this delivery.
    Settled(Settle),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_names_are_nats_safe() {
        assert_eq!(MessageRuntime::durable("worker-1"), "orloj-worker-1");
        assert_eq!(MessageRuntime::durable("w.1/x"), "orloj-w_1_x");
    }
}
