//! [`NatsEventBus`]: control-plane events shared between `orlojd` processes over NATS core
//! (`--event-bus-backend=nats`, subject `<prefix>.events`, prefix default `orloj.controlplane`).
//!
//! Each process keeps its own [`MemoryEventBus`] ring, which is what watchers read. A local
//! publish goes into the ring (getting a local id) and is sent to NATS in the background; events
//! from other processes are received from NATS and added to the ring with a local id. Each
//! process tags what it sends with a random origin id (NATS header `Orloj-Origin`) so it skips
//! its own echoes. The payload is the event's JSON. Delivery between processes is best effort
//! (NATS core, no replay): an event sent while the connection is down may be lost.

use crate::events::{DEFAULT_EVENT_CAPACITY, Event, EventBus, MemoryEventBus};
use futures::StreamExt;
use futures::stream::BoxStream;
use orloj_core::{Error, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Default subject prefix of control-plane events.
pub const DEFAULT_EVENT_SUBJECT_PREFIX: &str = "orloj.controlplane";
/// NATS header carrying the sending process's origin id.
pub const ORIGIN_HEADER: &str = "Orloj-Origin";
/// Events waiting to be sent to NATS before new ones are dropped (with a warning).
const OUTBOX_CAPACITY: usize = 8192;

/// Settings of a [`NatsEventBus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsEventBusConfig {
    /// Server URL(s), comma-separated.
    pub url: String,
    /// Subject prefix; events go to `<prefix>.events`.
    pub subject_prefix: String,
    /// Events kept in the local ring for replay.
    pub capacity: usize,
    /// How long connecting may take before [`NatsEventBus::connect`] fails.
    pub connect_timeout: Duration,
    /// Connection name shown by the server.
    pub client_name: String,
}

impl Default for NatsEventBusConfig {
    fn default() -> Self {
        Self {
            url: crate::bus::DEFAULT_NATS_URL.into(),
            subject_prefix: DEFAULT_EVENT_SUBJECT_PREFIX.into(),
            capacity: DEFAULT_EVENT_CAPACITY,
            connect_timeout: Duration::from_secs(5),
            client_name: "orloj-events".into(),
        }
    }
}

/// An [`EventBus`] whose events are shared with other processes over NATS. Cloning shares it;
/// the background tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct NatsEventBus {
    inner: Arc<Inner>,
}

struct Inner {
    local: MemoryEventBus,
    outbox: mpsc::Sender<Event>,
    origin: String,
    subject: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for NatsEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsEventBus")
            .field("subject", &self.inner.subject)
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

impl NatsEventBus {
    /// Connects to `config.url` and starts relaying (fails with `Unavailable` if the server
    /// cannot be reached within the connect timeout).
    pub async fn connect(config: NatsEventBusConfig) -> Result<Self> {
        let client =
            crate::bus::connect_client(&config.url, &config.client_name, config.connect_timeout)
                .await?;
        Self::with_client(client, config).await
    }

    /// Like [`connect`](Self::connect), over an existing connection. The connection must receive
    /// its own messages (not `no_echo`): it confirms its subscription with one.
    pub async fn with_client(
        client: async_nats::Client,
        config: NatsEventBusConfig,
    ) -> Result<Self> {
        let prefix = config.subject_prefix.trim_end_matches('.');
        if prefix.is_empty() || prefix.contains(['*', '>', ' ']) {
            return Err(Error::invalid(format!(
                "invalid control-plane event subject prefix {:?}",
                config.subject_prefix
            )));
        }
        let subject = format!("{prefix}.events");
        let origin = uuid::Uuid::new_v4().simple().to_string();
        let local = MemoryEventBus::new(config.capacity);

        let mut subscriber = client.subscribe(subject.clone()).await.map_err(|e| {
            Error::unavailable(format!("subscribing to NATS subject {subject}: {e}"))
        })?;
        confirm_subscriptions(&client, config.connect_timeout).await?;

        let receive = {
            let local = local.clone();
            let origin = origin.clone();
            tokio::spawn(async move {
                while let Some(message) = subscriber.next().await {
                    let from = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(ORIGIN_HEADER))
                        .map(|v| v.as_str());
                    if from == Some(origin.as_str()) {
                        continue;
                    }
                    match serde_json::from_slice::<Event>(&message.payload) {
                        Ok(event) => {
                            local.publish(event);
                        }
                        Err(err) => tracing::warn!(
                            subject = %message.subject,
                            %err,
                            "ignoring malformed control-plane event from NATS"
                        ),
                    }
                }
            })
        };

        let (outbox, mut pending) = mpsc::channel::<Event>(OUTBOX_CAPACITY);
        let send = {
            let subject = subject.clone();
            let origin = origin.clone();
            tokio::spawn(async move {
                while let Some(event) = pending.recv().await {
                    let payload = match serde_json::to_vec(&event) {
                        Ok(p) => p,
                        Err(err) => {
                            tracing::warn!(%err, "cannot encode control-plane event");
                            continue;
                        }
                    };
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(ORIGIN_HEADER, origin.as_str());
                    if let Err(err) = client
                        .publish_with_headers(subject.clone(), headers, payload.into())
                        .await
                    {
                        tracing::warn!(%subject, %err, "publishing control-plane event to NATS failed");
                    }
                }
            })
        };

        Ok(Self {
            inner: Arc::new(Inner {
                local,
                outbox,
                origin,
                subject,
                tasks: vec![receive, send],
            }),
        })
    }

    /// The local ring (what [`subscribe`](EventBus::subscribe) reads).
    pub fn local(&self) -> &MemoryEventBus {
        &self.inner.local
    }

    /// This process's origin id.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// The NATS subject events travel on.
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }
}

/// Returns once the server has registered every subscription `client` made so far. A flush only
/// writes them to the socket: an event another process published just after that could reach
/// the server first and find no subscriber. The server handles one connection's commands in
/// order, so a message published to a fresh inbox on this connection coming back proves the
/// subscriptions before it are in place.
async fn confirm_subscriptions(client: &async_nats::Client, timeout: Duration) -> Result<()> {
    let failed = |e: &dyn std::fmt::Display| {
        Error::unavailable(format!("confirming the NATS event subscription: {e}"))
    };
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| failed(&e))?;
    client
        .publish(inbox, Vec::new().into())
        .await
        .map_err(|e| failed(&e))?;
    client.flush().await.map_err(|e| failed(&e))?;
    match tokio::time::timeout(timeout, echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(failed(&"the connection closed")),
        Err(_) => Err(failed(&format!("no answer within {timeout:?}"))),
    }
}

impl EventBus for NatsEventBus {
    fn publish(&self, event: Event) -> Event {
        let event = self.inner.local.publish(event);
        if let Err(err) = self.inner.outbox.try_send(event.clone()) {
            tracing::warn!(%err, id = event.id, "control-plane event not sent to NATS");
        }
        event
    }

    fn subscribe(&self, since: Option<u64>) -> BoxStream<'static, Event> {
        self.inner.local.subscribe(since)
    }
}
