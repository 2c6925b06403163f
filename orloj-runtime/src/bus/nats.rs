//! [`NatsBus`]: the agent message bus on NATS JetStream (spec §5.6).
//!
//! One stream (default `ORLOJ_AGENT_MESSAGES`) over `<prefix>.>` with file storage, limits
//! retention, a max age and a duplicate window; publishes carry `Nats-Msg-Id` = dedupe id and
//! wait for the stream's PubAck. Each [`ConsumerConfig`] is a durable pull consumer (explicit
//! ack) read through a pull stream that is reopened, with backoff, when it fails.

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, pull},
    context::PublishErrorKind,
    message::{AckKind, PublishMessage},
    stream::{DiscardPolicy, RetentionPolicy, StorageType},
};
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use orloj_core::bus::{
    Acker, Bus, ConsumerConfig, DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX, Delivery, Outgoing,
    subject_matches,
};
use orloj_core::{Error, Result};
use std::pin::Pin;
use std::time::Duration;

/// Default NATS URL (spec §0).
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Settings of a [`NatsBus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsBusConfig {
    /// Server URL(s), comma-separated (`nats://host:4222`).
    pub url: String,
    /// JetStream stream name (`ORLOJ_AGENT_MESSAGE_STREAM`).
    pub stream: String,
    /// Subject prefix (`ORLOJ_AGENT_MESSAGE_SUBJECT_PREFIX`); the stream covers `<prefix>.>`.
    pub subject_prefix: String,
    /// Messages older than this are removed from the stream.
    pub max_age: Duration,
    /// The stream's server-side publish dedupe window.
    pub duplicate_window: Duration,
    /// How long connecting may take before [`NatsBus::connect`] fails.
    pub connect_timeout: Duration,
    /// Timeout of JetStream API requests and of waiting for a publish acknowledgement.
    pub request_timeout: Duration,
    /// Messages requested per pull (spec: 10).
    pub fetch_batch: usize,
    /// Connection name shown by the server.
    pub client_name: String,
}

impl Default for NatsBusConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_NATS_URL.into(),
            stream: DEFAULT_STREAM.into(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.into(),
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            fetch_batch: 10,
            client_name: "orloj".into(),
        }
    }
}

/// Connects a NATS client that reconnects forever (waits growing to 2 s between attempts) but
/// fails the first connect within `timeout`: `Unavailable` when the server cannot be reached,
/// `Invalid` for a malformed URL.
pub async fn connect_client(
    url: &str,
    name: &str,
    timeout: Duration,
) -> Result<async_nats::Client> {
    let options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(timeout)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64 * 250).min(2000))
        });
    // The outer timeout guards against a connect that keeps retrying inside the client.
    match tokio::time::timeout(timeout + Duration::from_secs(1), options.connect(url)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(err)) => Err(match err.kind() {
            async_nats::ConnectErrorKind::ServerParse => {
                Error::invalid(format!("invalid NATS URL {url:?}: {err}"))
            }
            _ => Error::unavailable(format!("cannot connect to NATS at {url}: {err}")),
        }),
        Err(_) => Err(Error::unavailable(format!(
            "cannot connect to NATS at {url}: timed out after {timeout:?}"
        ))),
    }
}

/// The JetStream [`Bus`]. Cloning shares the connection.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    config: NatsBusConfig,
    /// `<prefix>.>`
    stream_subject: String,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn validate_config(config: &NatsBusConfig) -> Result<()> {
    let prefix = config.subject_prefix.trim_end_matches('.');
    if prefix.is_empty()
        || prefix
            .split('.')
            .any(|t| t.is_empty() || t == "*" || t == ">" || t.contains(char::is_whitespace))
    {
        return Err(Error::invalid(format!(
            "invalid agent message subject prefix {:?}",
            config.subject_prefix
        )));
    }
    if config.stream.is_empty()
        || config
            .stream
            .chars()
            .any(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace())
    {
        return Err(Error::invalid(format!(
            "invalid JetStream stream name {:?}",
            config.stream
        )));
    }
    Ok(())
}

impl NatsBus {
    /// Connects to `config.url` and makes sure the stream exists and covers `<prefix>.>`
    /// (created if absent; subjects added to an existing stream that lacks them).
    pub async fn connect(config: NatsBusConfig) -> Result<Self> {
        validate_config(&config)?;
        let client =
            connect_client(&config.url, &config.client_name, config.connect_timeout).await?;
        Self::with_client(client, config).await
    }

    /// Like [`connect`](Self::connect), over an existing connection.
    pub async fn with_client(client: async_nats::Client, config: NatsBusConfig) -> Result<Self> {
        validate_config(&config)?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(config.request_timeout);
        let stream_subject = format!("{}.>", config.subject_prefix.trim_end_matches('.'));
        let stream = ensure_stream(&js, &config, &stream_subject).await?;
        Ok(Self {
            client,
            js,
            stream,
            config,
            stream_subject,
        })
    }

    /// The underlying connection (e.g. to share it with a [`crate::events_nats::NatsEventBus`]).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The bus's settings.
    pub fn config(&self) -> &NatsBusConfig {
        &self.config
    }

    /// Deletes the bus's stream with all its messages and consumers (tests, teardown).
    pub async fn delete_stream(&self) -> Result<()> {
        self.js
            .delete_stream(&self.config.stream)
            .await
            .map(|_| ())
            .map_err(|e| {
                Error::unavailable(format!(
                    "deleting JetStream stream {}: {e}",
                    self.config.stream
                ))
            })
    }
}

fn stream_config(config: &NatsBusConfig, subjects: Vec<String>) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: config.stream.clone(),
        subjects,
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_age: config.max_age,
        duplicate_window: config.duplicate_window,
        ..Default::default()
    }
}

fn jetstream_code(err: &jetstream::context::CreateStreamError) -> Option<jetstream::ErrorCode> {
    match err.kind() {
        jetstream::context::CreateStreamErrorKind::JetStream(e) => Some(e.error_code()),
        _ => None,
    }
}

async fn ensure_stream(
    js: &jetstream::Context,
    config: &NatsBusConfig,
    subject: &str,
) -> Result<jetstream::stream::Stream> {
    let name = &config.stream;
    for _ in 0..3 {
        match js.get_stream(name).await {
            Ok(stream) => {
                let subjects = &stream.cached_info().config.subjects;
                if subjects.iter().any(|s| s == subject) {
                    return Ok(stream);
                }
                let mut updated = stream.cached_info().config.clone();
                updated.subjects.push(subject.to_owned());
                tracing::info!(stream = %name, %subject, "adding subject to existing JetStream stream");
                js.update_stream(updated).await.map_err(|e| {
                    Error::invalid(format!(
                        "JetStream stream {name} exists with subjects {subjects:?} and adding \
                         {subject} failed: {e}"
                    ))
                })?;
                continue;
            }
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(je)
                    if je.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND => {}
                _ => {
                    return Err(Error::unavailable(format!(
                        "looking up JetStream stream {name} at {}: {e}",
                        config.url
                    )));
                }
            },
        }
        match js
            .create_stream(stream_config(config, vec![subject.to_owned()]))
            .await
        {
            Ok(stream) => return Ok(stream),
            // Another process created it meanwhile: look it up again.
            Err(e) if jetstream_code(&e) == Some(jetstream::ErrorCode::STREAM_NAME_EXIST) => {}
            Err(e) if jetstream_code(&e).is_some() => {
                return Err(Error::invalid(format!(
                    "creating JetStream stream {name} over {subject}: {e}"
                )));
            }
            Err(e) => {
                return Err(Error::unavailable(format!(
                    "creating JetStream stream {name} at {}: {e}",
                    config.url
                )));
            }
        }
    }
    Err(Error::unavailable(format!(
        "JetStream stream {name} kept changing while it was being set up"
    )))
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, message: Outgoing) -> Result<()> {
        if !subject_matches(&self.stream_subject, &message.subject) {
            return Err(Error::invalid(format!(
                "subject {} is outside the agent message bus subjects {}",
                message.subject, self.stream_subject
            )));
        }
        let mut publish = PublishMessage::build().payload(message.payload.into());
        if !message.dedupe_id.is_empty() {
            publish = publish.message_id(&message.dedupe_id);
        }
        let map = |e: jetstream::context::PublishError| {
            let what = format!(
                "publishing to {} (stream {}): {e}",
                message.subject, self.config.stream
            );
            match e.kind() {
                PublishErrorKind::MaxPayloadExceeded => Error::invalid(what),
                PublishErrorKind::StreamNotFound => {
                    Error::unavailable(format!("{what}: no JetStream stream accepts the subject"))
                }
                _ => Error::unavailable(what),
            }
        };
        let ack = self
            .js
            .send_publish(message.subject.clone(), publish)
            .await
            .map_err(map)?;
        ack.await.map_err(map)?;
        Ok(())
    }

    async fn subscribe(
        &self,
        consumer: &ConsumerConfig,
    ) -> Result<BoxStream<'static, Result<Delivery>>> {
        super::validate_durable(&consumer.durable)?;
        super::validate_filter(&consumer.filter_subject)?;
        let puller = Puller {
            stream: self.stream.clone(),
            config: pull::Config {
                durable_name: Some(consumer.durable.clone()),
                deliver_policy: DeliverPolicy::New,
                ack_policy: AckPolicy::Explicit,
                ack_wait: consumer.ack_wait,
                max_deliver: if consumer.max_deliver > 0 {
                    consumer.max_deliver
                } else {
                    -1
                },
                filter_subject: consumer.filter_subject.clone(),
                ..Default::default()
            },
            batch: self.config.fetch_batch.max(1),
            messages: None,
            retry_at: None,
            backoff: MIN_BACKOFF,
        };
        // Opened here so a bad consumer or an unreachable server fails the call itself.
        let mut puller = puller;
        puller.open().await?;
        Ok(stream::unfold(puller, |mut p| async move {
            let item = p.next().await;
            Some((item, p))
        })
        .boxed())
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A durable pull consumer's delivery loop; reopens the pull stream after it fails.
struct Puller {
    stream: jetstream::stream::Stream,
    config: pull::Config,
    batch: usize,
    messages: Option<Pin<Box<pull::Stream>>>,
    retry_at: Option<tokio::time::Instant>,
    backoff: Duration,
}

impl Puller {
    fn durable(&self) -> &str {
        self.config.durable_name.as_deref().unwrap_or_default()
    }

    /// Gets or creates the consumer (updating a changed filter, ack wait or max deliver) and
    /// starts a pull stream on it.
    async fn open(&mut self) -> Result<()> {
        let durable = self.durable().to_owned();
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            Error::unavailable(format!("{what} {durable}: {e}"))
        };
        let consumer = self
            .stream
            .get_or_create_consumer(&durable, self.config.clone())
            .await
            .map_err(|e| match e.kind() {
                jetstream::stream::ConsumerErrorKind::JetStream(_)
                | jetstream::stream::ConsumerErrorKind::InvalidConsumerType
                | jetstream::stream::ConsumerErrorKind::InvalidName => {
                    Error::invalid(format!("opening JetStream consumer {durable}: {e}"))
                }
                _ => unavailable("opening JetStream consumer", &e),
            })?;
        let have = &consumer.cached_info().config;
        let consumer = if have.filter_subject != self.config.filter_subject
            || have.ack_wait != self.config.ack_wait
            || have.max_deliver != self.config.max_deliver
        {
            // Keep what cannot change (deliver policy, ...); update the rest.
            let mut update = self.config.clone();
            update.deliver_policy = have.deliver_policy;
            update.filter_subjects = Vec::new();
            self.stream.update_consumer(update).await.map_err(|e| {
                Error::invalid(format!("updating JetStream consumer {durable}: {e}"))
            })?
        } else {
            consumer
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| unavailable("starting pull stream of JetStream consumer", &e))?;
        self.messages = Some(Box::pin(messages));
        self.retry_at = None;
        self.backoff = MIN_BACKOFF;
        Ok(())
    }

    fn fail(&mut self, err: Error) -> Result<Delivery> {
        self.messages = None;
        self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Err(err)
    }

    async fn next(&mut self) -> Result<Delivery> {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                if let Some(at) = self.retry_at {
                    tokio::time::sleep_until(at).await;
                }
                if let Err(e) = self.open().await {
                    tracing::warn!(consumer = %self.durable(), error = %e, "reopening JetStream consumer failed");
                    return self.fail(e);
                }
                continue;
            };
            match messages.next().await {
                Some(Ok(message)) => return Ok(delivery(message)),
                Some(Err(e)) => {
                    let err =
                        Error::unavailable(format!("JetStream consumer {}: {e}", self.durable()));
                    use pull::MessagesErrorKind as K;
                    return match e.kind() {
                        // These end the pull stream: reopen it after a backoff.
                        K::ConsumerDeleted | K::PushBasedConsumer | K::RequestLimitExceeded => {
                            self.fail(err)
                        }
                        _ => Err(err),
                    };
                }
                None => {
                    let err = Error::unavailable(format!(
                        "pull stream of JetStream consumer {} ended; reopening",
                        self.durable()
                    ));
                    return self.fail(err);
                }
            }
        }
    }
}

fn delivery(message: jetstream::Message) -> Delivery {
    let delivered = message
        .info()
        .map(|i| i.delivered.max(1) as u64)
        .unwrap_or(1);
    Delivery {
        subject: message.subject.to_string(),
        payload: message.payload.to_vec(),
        delivered,
        acker: Box::new(NatsAcker { message }),
    }
}

struct NatsAcker {
    message: jetstream::Message,
}

impl NatsAcker {
    async fn send(&self, kind: AckKind, what: &str) -> Result<()> {
        self.message.ack_with(kind).await.map_err(|e| {
            Error::unavailable(format!(
                "{what} of message on {}: {e}",
                self.message.subject
            ))
        })
    }
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(&self) -> Result<()> {
        self.send(AckKind::Ack, "ack").await
    }

    async fn nak(&self, delay: Duration) -> Result<()> {
        let delay = (!delay.is_zero()).then_some(delay);
        self.send(AckKind::Nak(delay), "nak").await
    }

    async fn term(&self) -> Result<()> {
        self.send(AckKind::Term, "term").await
    }

    async fn in_progress(&self) -> Result<()> {
        self.send(AckKind::Progress, "in_progress").await
    }
}
