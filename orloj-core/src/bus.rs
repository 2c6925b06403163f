//! The agent message bus (spec runtime §5.6): how graph nodes hand work to each other in
//! message-driven mode.
//!
//! [`Bus`] is transport-level: it moves opaque payloads on subjects, durably, with at-least-once
//! delivery to named durable consumers. [`AgentMessage`] is the envelope the runtime puts in
//! those payloads, and [`inbox_subject`] names the subject of an agent's inbox.
//!
//! ```
//! use orloj_core::bus::{AgentMessage, inbox_subject};
//!
//! assert_eq!(
//!     inbox_subject("orloj.agentmsg", "team-a", "Research Agent"),
//!     "orloj.agentmsg.team-a.research_agent.inbox"
//! );
//! let msg = AgentMessage {
//!     message_id: "default/t1/a001/h001/system/planner".into(),
//!     task_id: "default/t1".into(),
//!     attempt: 1,
//!     to_agent: "planner".into(),
//!     ..Default::default()
//! };
//! let bytes = msg.encode();
//! assert_eq!(AgentMessage::decode(&bytes).unwrap(), msg);
//! assert!(AgentMessage::decode(b"not json").is_err());
//! ```

use crate::error::{Error, Result};
use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Default subject prefix (`ORLOJ_AGENT_MESSAGE_SUBJECT_PREFIX`).
pub const DEFAULT_SUBJECT_PREFIX: &str = "orloj.agentmsg";
/// Default JetStream stream name (`ORLOJ_AGENT_MESSAGE_STREAM`).
pub const DEFAULT_STREAM: &str = "ORLOJ_AGENT_MESSAGES";

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Full subject, e.g. `orloj.agentmsg.default.planner.inbox`.
    pub subject: String,
    /// Publish deduplication id (JetStream `Nats-Msg-Id`): a second publish with the same id
    /// inside the bus's dedupe window is acknowledged but not delivered again.
    pub dedupe_id: String,
    /// Opaque payload (for agent messages, [`AgentMessage::encode`]).
    pub payload: Vec<u8>,
}

/// A durable consumer: a named, resumable position over the subjects matching `filter_subject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Durable name (letters, digits, `-` and `_`); reopening the same name resumes it.
    pub durable: String,
    /// Subject filter with NATS wildcards (`*` one token, `>` the rest), e.g. `orloj.agentmsg.>`.
    pub filter_subject: String,
    /// An unacknowledged delivery is redelivered after this long.
    pub ack_wait: Duration,
    /// Deliveries per message before the bus gives up on it (≤ 0: unlimited).
    pub max_deliver: i64,
}

/// How a consumer settles a delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Done: never deliver it again to this consumer.
    async fn ack(&self) -> Result<()>;
    /// Not now: deliver it again after `delay` (immediately when zero).
    async fn nak(&self, delay: Duration) -> Result<()>;
    /// Never deliver it again to this consumer (malformed, unprocessable).
    async fn term(&self) -> Result<()>;
    /// Still working: restart the ack-wait timer.
    async fn in_progress(&self) -> Result<()>;
}

/// One delivery of a message to a consumer.
pub struct Delivery {
    /// Subject it was published on.
    pub subject: String,
    /// Payload as published.
    pub payload: Vec<u8>,
    /// 1 for the first delivery to this consumer, +1 per redelivery.
    pub delivered: u64,
    /// Settles the delivery. Dropping it unsettled means redelivery after `ack_wait`.
    pub acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("subject", &self.subject)
            .field("payload_len", &self.payload.len())
            .field("delivered", &self.delivered)
            .finish()
    }
}

/// A durable, at-least-once message bus.
///
/// Contract (checked by the bus conformance suite of `orloj-runtime`):
/// - `publish` returns only once the message is durable in the bus (for JetStream: stored and
///   acknowledged by the stream). A failed publish returns an error with kind `Unavailable`.
/// - Deduplication: publishing the same `dedupe_id` twice within the dedupe window delivers once.
/// - Each message matching a consumer's filter is delivered to that consumer until it is acked
///   or termed; a nak redelivers after the given delay; an unsettled delivery is redelivered
///   after `ack_wait`; different durables each get every message.
/// - A consumer created new starts with messages published after its creation; reopening an
///   existing durable resumes after its last acknowledged message.
/// - Order: messages on one consumer are first delivered in publish order.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes one message; returns once it is durable.
    async fn publish(&self, message: Outgoing) -> Result<()>;

    /// Opens (creating if absent) the durable consumer and streams its deliveries. Transient
    /// transport errors appear as `Err` items; the stream keeps going after them where it can.
    async fn subscribe(
        &self,
        consumer: &ConsumerConfig,
    ) -> Result<BoxStream<'static, Result<Delivery>>>;
}

/// The agent message envelope (spec §5.6), as JSON on the bus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentMessage {
    /// Unique id (`<ns>/<task>/a<attempt>/h<hop>/<from>/<to>`).
    #[serde(default)]
    pub message_id: String,
    /// Idempotency key (defaults to the message id).
    #[serde(default)]
    pub idempotency_key: String,
    /// `<namespace>/<task>`.
    #[serde(default)]
    pub task_id: String,
    /// Task attempt (≥ 1).
    #[serde(default)]
    pub attempt: i64,
    /// AgentSystem name.
    #[serde(default)]
    pub system: String,
    /// Namespace of the task.
    #[serde(default)]
    pub namespace: String,
    /// Sender (`system` for a kickoff).
    #[serde(default)]
    pub from_agent: String,
    /// Recipient agent.
    #[serde(default)]
    pub to_agent: String,
    /// Branch id (`b001`, `b001.002`, …).
    #[serde(default)]
    pub branch_id: String,
    /// Parent branch id on fan-out.
    #[serde(default)]
    pub parent_branch_id: String,
    /// `task_start` or `task_handoff`.
    #[serde(rename = "type", default)]
    pub message_type: String,
    /// Content handed to the recipient.
    #[serde(default)]
    pub payload: String,
    /// RFC 3339 publish time.
    #[serde(default)]
    pub timestamp: String,
    /// Trace id.
    #[serde(default)]
    pub trace_id: String,
    /// Id of the message this one follows.
    #[serde(default)]
    pub parent_id: String,
}

impl AgentMessage {
    /// JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks the envelope: it must be JSON with `message_id`, `task_id`,
    /// `to_agent` and `attempt ≥ 1`.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let msg: AgentMessage = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(format!("malformed agent message: {e}")))?;
        let missing = [
            ("message_id", msg.message_id.trim().is_empty()),
            ("task_id", msg.task_id.trim().is_empty()),
            ("to_agent", msg.to_agent.trim().is_empty()),
        ];
        if let Some((field, _)) = missing.iter().find(|(_, empty)| *empty) {
            return Err(Error::invalid(format!(
                "malformed agent message: {field} is required"
            )));
        }
        if msg.attempt < 1 {
            return Err(Error::invalid(
                "malformed agent message: attempt must be at least 1",
            ));
        }
        Ok(msg)
    }

    /// The idempotency key, or the message id when none is set.
    pub fn key(&self) -> &str {
        if self.idempotency_key.is_empty() {
            &self.message_id
        } else {
            &self.idempotency_key
        }
    }
}

/// One subject token: lower-cased, with space `.` `>` `*` `/` `:` replaced by `_`; empty →
/// `default`.
pub fn subject_token(s: &str) -> String {
    let t: String = s
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| match c {
            ' ' | '.' | '>' | '*' | '/' | ':' => '_',
            c => c,
        })
        .collect();
    if t.is_empty() { "default".into() } else { t }
}

/// `<prefix>.<namespace>.<agent>.inbox`.
pub fn inbox_subject(prefix: &str, namespace: &str, agent: &str) -> String {
    format!(
        "{}.{}.{}.inbox",
        prefix.trim_end_matches('.'),
        subject_token(namespace),
        subject_token(agent)
    )
}

/// Whether `subject` matches the NATS `filter` (`*` = one token, trailing `>` = one or more).
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert_eq!(inbox_subject("p.", "", "a.b"), "p.default.a_b.inbox");
        assert!(subject_matches(
            "orloj.agentmsg.>",
            "orloj.agentmsg.ns.a.inbox"
        ));
        assert!(!subject_matches("orloj.agentmsg.>", "orloj.agentmsg"));
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*.c", "a.b.d"));
        assert!(!subject_matches("a.b", "a.b.c"));
    }

    #[test]
    fn decode_names_the_missing_field() {
        let err = AgentMessage::decode(br#"{"message_id":"m","task_id":"t","attempt":1}"#)
            .expect_err("invalid");
        assert!(err.to_string().contains("to_agent"), "{err}");
        let err = AgentMessage::decode(br#"{"message_id":"m","task_id":"t","to_agent":"a"}"#)
            .expect_err("invalid");
        assert!(err.to_string().contains("attempt"), "{err}");
    }
}
