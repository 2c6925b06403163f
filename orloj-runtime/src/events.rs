//! The control-plane event bus (spec §3.5): what `GET /v1/events/watch` streams.
//!
//! Producers (the API server, controllers) [`publish`](EventBus::publish) [`Event`]s; the bus
//! numbers them and keeps the most recent ones so a client can resume with `since`.
//! [`EventBus`] is a trait so a NATS-backed bus can sit beside [`MemoryEventBus`] (which is
//! also the local replay buffer such a bus would keep).

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

/// How many events [`MemoryEventBus::default`] keeps for replay (orlojd's setting).
pub const DEFAULT_EVENT_CAPACITY: usize = 8192;

/// One control-plane event, in its wire shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the bus, assigned by [`EventBus::publish`]; strictly increasing from 1.
    #[serde(default)]
    pub id: u64,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// Who published it, e.g. `apiserver`.
    #[serde(default)]
    pub source: String,
    /// Event type, e.g. `resource.created`.
    #[serde(rename = "type", default)]
    pub event_type: String,
    /// Kind of the resource concerned, e.g. `Agent`.
    #[serde(default)]
    pub kind: String,
    /// Name of the resource concerned.
    #[serde(default)]
    pub name: String,
    /// Namespace of the resource concerned.
    #[serde(default)]
    pub namespace: String,
    /// Short verb: `created`, `updated`, `deleted`, ...
    #[serde(default)]
    pub action: String,
    /// Human-readable summary.
    #[serde(default)]
    pub message: String,
    /// Payload (for resource events, the redacted object).
    #[serde(default)]
    pub data: Value,
}

/// Where control-plane events go and how watchers read them.
///
/// Contract: ids are assigned by the bus and strictly increasing; a subscriber sees events in id
/// order, first the retained ones after `since`, then live ones, without gaps or duplicates
/// (unless it falls more than the capacity behind, in which case the missed events are skipped).
pub trait EventBus: Send + Sync + 'static {
    /// Assigns the next id, retains and delivers the event; returns it with its id. Never blocks
    /// on subscribers.
    fn publish(&self, event: Event) -> Event;

    /// Retained events with `id > since` (none when `since` is `None`), then live events.
    /// The stream ends only when the bus is dropped.
    fn subscribe(&self, since: Option<u64>) -> BoxStream<'static, Event>;
}

struct Ring {
    events: VecDeque<Event>,
    next_id: u64,
}

/// An in-process [`EventBus`]: a ring buffer for replay plus a tokio broadcast channel.
#[derive(Clone)]
pub struct MemoryEventBus {
    ring: Arc<Mutex<Ring>>,
    sender: broadcast::Sender<Event>,
    capacity: usize,
}

impl std::fmt::Debug for MemoryEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEventBus")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryEventBus {
    fn default() -> Self {
        Self::new(DEFAULT_EVENT_CAPACITY)
    }
}

impl MemoryEventBus {
    /// A bus retaining the last `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (sender, _) = broadcast::channel(capacity);
        Self {
            ring: Arc::new(Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity.min(1024)),
                next_id: 1,
            })),
            sender,
            capacity,
        }
    }

    /// How many events are retained for replay.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many subscribers are currently attached (live streams not yet dropped).
    pub fn subscriber_count(&self) -> usize {
        self.sender.receiver_count()
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // The ring is always consistent: every mutation is a single push/pop.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EventBus for MemoryEventBus {
    fn publish(&self, mut event: Event) -> Event {
        let mut ring = self.lock();
        event.id = ring.next_id;
        ring.next_id += 1;
        ring.events.push_back(event.clone());
        while ring.events.len() > self.capacity {
            ring.events.pop_front();
        }
        // Sent under the lock so live delivery order equals id order. No receivers is fine.
        let _ = self.sender.send(event.clone());
        event
    }

    fn subscribe(&self, since: Option<u64>) -> BoxStream<'static, Event> {
        let ring = self.lock();
        // Subscribing under the lock: nothing falls between the replay and the live feed.
        let receiver = self.sender.subscribe();
        let replay: Vec<Event> = match since {
            Some(since) => ring
                .events
                .iter()
                .filter(|e| e.id > since)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        let last = ring.next_id - 1;
        drop(ring);
        let live = BroadcastStream::new(receiver).filter_map(move |item| {
            futures::future::ready(match item {
                Ok(event) if event.id > last => Some(event),
                Ok(_) => None,
                Err(err) => {
                    tracing::warn!(%err, "event watcher fell behind; skipping missed events");
                    None
                }
            })
        });
        stream::iter(replay).chain(live).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(name: &str) -> Event {
        Event {
            id: 0,
            timestamp: Utc::now(),
            source: "test".into(),
            event_type: "resource.created".into(),
            kind: "Agent".into(),
            name: name.into(),
            namespace: "default".into(),
            action: "created".into(),
            message: String::new(),
            data: Value::Null,
        }
    }

    async fn next(s: &mut BoxStream<'static, Event>) -> Event {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("event within timeout")
            .expect("stream open")
    }

    #[tokio::test]
    async fn replays_after_since_then_live() {
        let bus = MemoryEventBus::new(3);
        for n in ["a", "b", "c", "d"] {
            bus.publish(event(n));
        }
        // capacity 3: "a" (id 1) is gone; since=2 replays 3 and 4.
        let mut s = bus.subscribe(Some(2));
        assert_eq!(next(&mut s).await.id, 3);
        assert_eq!(next(&mut s).await.id, 4);
        let e = bus.publish(event("e"));
        assert_eq!(e.id, 5);
        assert_eq!(next(&mut s).await.name, "e");

        let mut all = bus.subscribe(Some(0));
        let ids: Vec<u64> = [
            next(&mut all).await,
            next(&mut all).await,
            next(&mut all).await,
        ]
        .iter()
        .map(|e| e.id)
        .collect();
        assert_eq!(ids, vec![3, 4, 5]);
    }

    #[tokio::test]
    async fn no_since_means_live_only() {
        let bus = MemoryEventBus::default();
        bus.publish(event("old"));
        let mut s = bus.subscribe(None);
        bus.publish(event("new"));
        assert_eq!(next(&mut s).await.name, "new");
    }

    #[test]
    fn wire_shape() {
        let v = serde_json::to_value(event("x")).expect("serializes");
        for key in [
            "id",
            "timestamp",
            "source",
            "type",
            "kind",
            "name",
            "namespace",
            "action",
            "message",
            "data",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
    }
}
