//! [`MemoryBus`]: the in-process agent message bus.
//!
//! Publishing fans a message out, under one lock, to the queue of every durable consumer whose
//! filter matches (the subject → consumers routing is cached). Each consumer has its own queue,
//! in-flight table and redelivery timers, driven by tokio time (so paused-time tests work).
//! No task is spawned per message or per consumer.

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use orloj_core::Result;
use orloj_core::bus::{Acker, Bus, ConsumerConfig, Delivery, Outgoing, subject_matches};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Default number of messages an unsubscribed durable keeps for its resumption (spec §0).
pub const DEFAULT_HISTORY: usize = 2048;
/// Default publish-dedupe window (spec §0).
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(120);
/// Default cap on remembered dedupe ids.
pub const DEFAULT_DEDUPE_CAPACITY: usize = 262_144;

/// Subjects with a cached consumer list before the cache is reset.
const ROUTE_CACHE_LIMIT: usize = 16_384;

/// Settings of a [`MemoryBus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBusConfig {
    /// Undelivered messages kept per durable while it has no open subscription (at least 1).
    /// Past that the oldest undelivered ones are dropped for that durable (logged as a
    /// warning). While a subscription is open the queue is not bounded: publish never drops.
    pub history: usize,
    /// A second publish with the same `dedupe_id` within this window is accepted but not
    /// delivered.
    pub dedupe_window: Duration,
    /// At most this many dedupe ids are remembered; past it the oldest are forgotten before
    /// their window ends (bounds memory under very high publish rates).
    pub dedupe_capacity: usize,
}

impl Default for MemoryBusConfig {
    fn default() -> Self {
        Self {
            history: DEFAULT_HISTORY,
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
            dedupe_capacity: DEFAULT_DEDUPE_CAPACITY,
        }
    }
}

/// The in-process [`Bus`]: durable consumers that live as long as the bus.
///
/// Differs from the Go reference's memory bus on purpose: it follows the [`Bus`] contract
/// (a new durable starts at messages published after its creation, acks/naks/ack-wait
/// redelivery), where the reference replayed its history to every new subscriber.
///
/// Several subscriptions opened on the same durable share its queue (each message goes to one
/// of them), like pull subscribers of one JetStream consumer. Cloning shares the bus.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    config: MemoryBusConfig,
    state: Mutex<BusState>,
}

#[derive(Default)]
struct BusState {
    seq: u64,
    dedupe: HashMap<Arc<str>, Instant>,
    dedupe_order: VecDeque<(Instant, Arc<str>)>,
    /// Durable name → (filter, consumer).
    consumers: HashMap<String, (String, Arc<Consumer>)>,
    routes: HashMap<String, Arc<[Arc<Consumer>]>>,
}

struct Msg {
    subject: String,
    payload: Vec<u8>,
}

struct Consumer {
    state: Mutex<ConsumerState>,
    notify: Notify,
}

struct ConsumerState {
    name: String,
    ack_wait: Duration,
    max_deliver: i64,
    ready: VecDeque<(u64, Arc<Msg>)>,
    /// Delivered, not yet acked or termed; by message sequence.
    pending: HashMap<u64, Pending>,
    timers: Timers,
    next_token: u64,
    subscribers: usize,
}

/// A redelivery timer: (due, sequence, generation). It is live only while its generation
/// equals the pending entry's `timer_gen`.
type Timer = (Instant, u64, u64);

/// Redelivery timers. Ack-wait deadlines arrive in due order, so they go in a FIFO (cheap, and
/// pruned from the front as deliveries are acked); nak delays, and any deadline that would
/// break the FIFO's order, go in a heap.
#[derive(Default)]
struct Timers {
    fifo: VecDeque<Timer>,
    heap: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    fn push_ack_wait(&mut self, t: Timer) {
        match self.fifo.back() {
            Some(back) if back.0 > t.0 => self.heap.push(Reverse(t)),
            _ => self.fifo.push_back(t),
        }
    }

    fn push_delay(&mut self, t: Timer) {
        self.heap.push(Reverse(t));
    }

    fn peek(&self) -> Option<Timer> {
        match (self.fifo.front(), self.heap.peek()) {
            (Some(f), Some(Reverse(h))) => Some(if f.0 <= h.0 { *f } else { *h }),
            (Some(f), None) => Some(*f),
            (None, Some(Reverse(h))) => Some(*h),
            (None, None) => None,
        }
    }

    fn pop(&mut self) -> Option<Timer> {
        let from_fifo = match (self.fifo.front(), self.heap.peek()) {
            (Some(f), Some(Reverse(h))) => f.0 <= h.0,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if from_fifo {
            self.fifo.pop_front()
        } else {
            self.heap.pop().map(|Reverse(t)| t)
        }
    }
}

struct Pending {
    msg: Arc<Msg>,
    delivered: u64,
    /// The acker allowed to settle it (0: none, it is waiting for redelivery).
    acker_token: u64,
    timer_gen: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryBus {
    /// A bus with the given settings.
    pub fn new(config: MemoryBusConfig) -> Self {
        let config = MemoryBusConfig {
            history: config.history.max(1),
            ..config
        };
        Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(BusState::default()),
            }),
        }
    }

    /// The bus's settings.
    pub fn config(&self) -> &MemoryBusConfig {
        &self.inner.config
    }
}

impl BusState {
    /// Whether `id` was published within the window; remembers it otherwise.
    fn is_duplicate(&mut self, id: &str, now: Instant, config: &MemoryBusConfig) -> bool {
        while let Some((at, old)) = self.dedupe_order.front() {
            let expired = now.saturating_duration_since(*at) >= config.dedupe_window;
            if !expired && self.dedupe_order.len() < config.dedupe_capacity.max(1) {
                break;
            }
            self.dedupe.remove(old);
            self.dedupe_order.pop_front();
        }
        if id.is_empty() {
            return false;
        }
        if self.dedupe.contains_key(id) {
            return true;
        }
        let id: Arc<str> = Arc::from(id);
        self.dedupe.insert(id.clone(), now);
        self.dedupe_order.push_back((now, id));
        false
    }

    fn route(&mut self, subject: &str) -> Arc<[Arc<Consumer>]> {
        if let Some(r) = self.routes.get(subject) {
            return r.clone();
        }
        let r: Arc<[Arc<Consumer>]> = self
            .consumers
            .values()
            .filter(|(filter, _)| subject_matches(filter, subject))
            .map(|(_, c)| c.clone())
            .collect();
        if self.routes.len() >= ROUTE_CACHE_LIMIT {
            self.routes.clear();
        }
        self.routes.insert(subject.to_owned(), r.clone());
        r
    }
}

/// What a subscription hands out: everything but the acker.
struct Taken {
    subject: String,
    payload: Vec<u8>,
    delivered: u64,
    seq: u64,
    token: u64,
}

impl ConsumerState {
    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Drops timers of settled or re-armed deliveries from the fronts.
    fn prune(&mut self) {
        let live = |pending: &HashMap<u64, Pending>, (_, seq, generation): &Timer| {
            pending.get(seq).is_some_and(|p| p.timer_gen == *generation)
        };
        while let Some(t) = self.timers.fifo.front() {
            if live(&self.pending, t) {
                break;
            }
            self.timers.fifo.pop_front();
        }
        while let Some(Reverse(t)) = self.timers.heap.peek() {
            if live(&self.pending, t) {
                break;
            }
            self.timers.heap.pop();
        }
    }

    /// The next due redelivery, else the next new message.
    fn take(&mut self, now: Instant) -> Option<Taken> {
        loop {
            self.prune();
            let Some((at, seq, _)) = self.timers.peek() else {
                break;
            };
            if at > now {
                break;
            }
            // Live: prune left a live timer in front.
            self.timers.pop();
            let Some(p) = self.pending.get(&seq) else {
                continue;
            };
            if self.max_deliver > 0 && p.delivered >= self.max_deliver as u64 {
                tracing::warn!(
                    consumer = %self.name,
                    subject = %p.msg.subject,
                    deliveries = p.delivered,
                    "message reached max_deliver; not delivering it again"
                );
                self.pending.remove(&seq);
                continue;
            }
            let token = self.token();
            let due = now + self.ack_wait;
            let Some(p) = self.pending.get_mut(&seq) else {
                continue;
            };
            p.delivered += 1;
            p.acker_token = token;
            p.timer_gen = token;
            let taken = Taken {
                subject: p.msg.subject.clone(),
                payload: p.msg.payload.clone(),
                delivered: p.delivered,
                seq,
                token,
            };
            self.timers.push_ack_wait((due, seq, token));
            return Some(taken);
        }
        let (seq, msg) = self.ready.pop_front()?;
        let token = self.token();
        let taken = Taken {
            subject: msg.subject.clone(),
            payload: msg.payload.clone(),
            delivered: 1,
            seq,
            token,
        };
        self.pending.insert(
            seq,
            Pending {
                msg,
                delivered: 1,
                acker_token: token,
                timer_gen: token,
            },
        );
        self.timers.push_ack_wait((now + self.ack_wait, seq, token));
        Some(taken)
    }

    fn next_due(&mut self) -> Option<Instant> {
        self.prune();
        self.timers.peek().map(|(at, _, _)| at)
    }

    fn trim_to(&mut self, history: usize) {
        let mut dropped = 0usize;
        while self.ready.len() > history {
            self.ready.pop_front();
            dropped += 1;
        }
        if dropped > 0 {
            tracing::warn!(
                consumer = %self.name,
                dropped,
                history,
                "durable consumer without subscribers fell behind the memory bus history; \
                 dropped its oldest undelivered messages"
            );
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, message: Outgoing) -> Result<()> {
        let now = Instant::now();
        let config = &self.inner.config;
        let mut state = lock(&self.inner.state);
        if state.is_duplicate(&message.dedupe_id, now, config) {
            return Ok(());
        }
        state.seq += 1;
        let seq = state.seq;
        let targets = state.route(&message.subject);
        if targets.is_empty() {
            return Ok(());
        }
        let msg = Arc::new(Msg {
            subject: message.subject,
            payload: message.payload,
        });
        // Pushed under the bus lock so every consumer sees publishes in the same order.
        for consumer in targets.iter() {
            let mut cs = lock(&consumer.state);
            cs.ready.push_back((seq, msg.clone()));
            if cs.subscribers == 0 && cs.ready.len() > config.history {
                cs.trim_to(config.history);
            }
            drop(cs);
            consumer.notify.notify_one();
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        consumer: &ConsumerConfig,
    ) -> Result<BoxStream<'static, Result<Delivery>>> {
        super::validate_durable(&consumer.durable)?;
        super::validate_filter(&consumer.filter_subject)?;
        let mut state = lock(&self.inner.state);
        let entry = match state.consumers.get_mut(&consumer.durable) {
            Some((filter, c)) => {
                let c = c.clone();
                if *filter != consumer.filter_subject {
                    *filter = consumer.filter_subject.clone();
                    state.routes.clear();
                }
                c
            }
            None => {
                let c = Arc::new(Consumer {
                    state: Mutex::new(ConsumerState {
                        name: consumer.durable.clone(),
                        ack_wait: consumer.ack_wait,
                        max_deliver: consumer.max_deliver,
                        ready: VecDeque::new(),
                        pending: HashMap::new(),
                        timers: Timers::default(),
                        next_token: 0,
                        subscribers: 0,
                    }),
                    notify: Notify::new(),
                });
                state.consumers.insert(
                    consumer.durable.clone(),
                    (consumer.filter_subject.clone(), c.clone()),
                );
                state.routes.clear();
                c
            }
        };
        {
            let mut cs = lock(&entry.state);
            cs.ack_wait = consumer.ack_wait;
            cs.max_deliver = consumer.max_deliver;
            cs.subscribers += 1;
        }
        drop(state);
        let sub = Subscription {
            consumer: entry,
            history: self.inner.config.history,
        };
        Ok(stream::unfold(sub, |sub| async move {
            let delivery = sub.next().await;
            Some((Ok(delivery), sub))
        })
        .boxed())
    }
}

/// One open subscription; dropping it lets the durable's queue be bounded again.
struct Subscription {
    consumer: Arc<Consumer>,
    history: usize,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut cs = lock(&self.consumer.state);
        cs.subscribers = cs.subscribers.saturating_sub(1);
        if cs.subscribers == 0 {
            cs.trim_to(self.history);
        }
    }
}

impl Subscription {
    fn delivery(&self, t: Taken) -> Delivery {
        Delivery {
            subject: t.subject,
            payload: t.payload,
            delivered: t.delivered,
            acker: Box::new(MemoryAcker {
                consumer: self.consumer.clone(),
                seq: t.seq,
                token: t.token,
            }),
        }
    }

    async fn next(&self) -> Delivery {
        if let Some(t) = lock(&self.consumer.state).take(Instant::now()) {
            return self.delivery(t);
        }
        loop {
            let notified = self.consumer.notify.notified();
            tokio::pin!(notified);
            // Registered before checking, so a publish in between still wakes us.
            notified.as_mut().enable();
            let due = {
                let mut cs = lock(&self.consumer.state);
                if let Some(t) = cs.take(Instant::now()) {
                    return self.delivery(t);
                }
                cs.next_due()
            };
            match due {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

enum Settle {
    Ack,
    Nak(Duration),
    InProgress,
}

struct MemoryAcker {
    consumer: Arc<Consumer>,
    seq: u64,
    token: u64,
}

impl MemoryAcker {
    /// Settling a delivery that was already settled or redelivered is a no-op, as in JetStream.
    fn settle(&self, how: Settle) {
        let mut cs = lock(&self.consumer.state);
        match cs.pending.get(&self.seq) {
            Some(p) if p.acker_token == self.token => {}
            _ => return,
        }
        match how {
            // Term is an ack for this consumer: it is never delivered to it again.
            Settle::Ack => {
                cs.pending.remove(&self.seq);
                cs.prune();
            }
            Settle::Nak(delay) => {
                let generation = cs.token();
                let due = Instant::now() + delay;
                if let Some(p) = cs.pending.get_mut(&self.seq) {
                    p.acker_token = 0;
                    p.timer_gen = generation;
                }
                cs.timers.push_delay((due, self.seq, generation));
                drop(cs);
                // Wakes a waiting subscription so it re-arms on the (maybe earlier) due time.
                self.consumer.notify.notify_one();
            }
            Settle::InProgress => {
                let generation = cs.token();
                let due = Instant::now() + cs.ack_wait;
                if let Some(p) = cs.pending.get_mut(&self.seq) {
                    p.timer_gen = generation;
                }
                cs.timers.push_ack_wait((due, self.seq, generation));
            }
        }
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<()> {
        self.settle(Settle::Ack);
        Ok(())
    }

    async fn nak(&self, delay: Duration) -> Result<()> {
        self.settle(Settle::Nak(delay));
        Ok(())
    }

    async fn term(&self) -> Result<()> {
        self.settle(Settle::Ack);
        Ok(())
    }

    async fn in_progress(&self) -> Result<()> {
        self.settle(Settle::InProgress);
        Ok(())
    }
}
