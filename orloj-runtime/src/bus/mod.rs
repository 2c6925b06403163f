//! Agent message bus implementations (spec §5.6) of [`orloj_core::bus::Bus`].
//!
//! * [`MemoryBus`]: in-process, for a single `orlojd`/worker and for tests. Fast path for the
//!   in-process message-driven dispatch.
//! * [`NatsBus`]: NATS JetStream — a file-backed stream over `<prefix>.>` and one durable pull
//!   consumer per [`ConsumerConfig`](orloj_core::bus::ConsumerConfig).
//!
//! Both pass the same conformance suite ([`conformance`], run by `tests/bus_memory.rs` and
//! `tests/bus_nats.rs`).
//!
//! ```
//! use std::time::Duration;
//! use futures::StreamExt;
//! use orloj_core::bus::{Bus, ConsumerConfig, Outgoing, inbox_subject};
//! use orloj_runtime::bus::MemoryBus;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let bus = MemoryBus::default();
//! let subject = inbox_subject("orloj.agentmsg", "default", "planner");
//! let mut deliveries = bus
//!     .subscribe(&ConsumerConfig {
//!         durable: "worker-1-default-planner".into(),
//!         filter_subject: subject.clone(),
//!         ack_wait: Duration::from_secs(30),
//!         max_deliver: 5,
//!     })
//!     .await
//!     .unwrap();
//! bus.publish(Outgoing { subject, dedupe_id: "m1".into(), payload: b"hi".to_vec() })
//!     .await
//!     .unwrap();
//! let delivery = deliveries.next().await.unwrap().unwrap();
//! assert_eq!(delivery.payload, b"hi");
//! assert_eq!(delivery.delivered, 1);
//! delivery.acker.ack().await.unwrap();
//! # });
//! ```

#[doc(hidden)]
pub mod conformance;
mod memory;
mod nats;

pub use memory::{
    DEFAULT_DEDUPE_CAPACITY, DEFAULT_DEDUPE_WINDOW, DEFAULT_HISTORY, MemoryBus, MemoryBusConfig,
};
pub use nats::{DEFAULT_NATS_URL, NatsBus, NatsBusConfig, connect_client};

/// Checks a durable consumer name: letters, digits, `-` and `_`.
pub(crate) fn validate_durable(name: &str) -> orloj_core::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(orloj_core::Error::invalid(format!(
            "invalid durable consumer name {name:?}: use letters, digits, '-' and '_'"
        )));
    }
    Ok(())
}

/// Checks a subject filter: non-empty tokens, `>` only last.
pub(crate) fn validate_filter(filter: &str) -> orloj_core::Result<()> {
    let tokens: Vec<&str> = filter.split('.').collect();
    let bad = filter.trim().is_empty()
        || tokens
            .iter()
            .any(|t| t.is_empty() || t.contains(char::is_whitespace))
        || tokens[..tokens.len() - 1].contains(&">");
    if bad {
        return Err(orloj_core::Error::invalid(format!(
            "invalid subject filter {filter:?}"
        )));
    }
    Ok(())
}
