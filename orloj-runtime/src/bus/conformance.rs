//! The [`Bus`] conformance suite: the contract of `orloj_core::bus::Bus`, as async checks any
//! implementation can run. Each check takes a fresh bus and a subject prefix of its own.
//!
//! Use [`bus_conformance_tests!`](crate::bus_conformance_tests) to generate one `#[tokio::test]`
//! per check from a function `async fn() -> Option<Harness>` (`None` = skip).
//!
//! The checks wait (for redeliveries, or to see that nothing more arrives) in real time with
//! ack waits of about a second; under tokio's paused time they run instantly.

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use orloj_core::Result;
use orloj_core::bus::{AgentMessage, Bus, ConsumerConfig, Delivery, Outgoing, inbox_subject};
use std::sync::Arc;
use std::time::Duration;

/// The ack wait the checks use.
pub const ACK_WAIT: Duration = Duration::from_secs(1);
/// How long a check waits for something that must arrive.
const ARRIVE: Duration = Duration::from_secs(15);
/// How long a check watches for something that must not arrive (well past [`ACK_WAIT`]).
const QUIET: Duration = Duration::from_millis(2500);

/// A bus under test.
pub struct Harness {
    /// The bus.
    pub bus: Arc<dyn Bus>,
    /// Subject prefix the bus accepts (e.g. its stream's prefix).
    pub prefix: String,
    /// Run after the check passed (e.g. delete the test's stream).
    pub cleanup: Option<BoxFuture<'static, ()>>,
}

impl Harness {
    /// A harness without cleanup.
    pub fn new(bus: Arc<dyn Bus>, prefix: impl Into<String>) -> Self {
        Self {
            bus,
            prefix: prefix.into(),
            cleanup: None,
        }
    }
}

/// Generates one test per conformance check. `$make` is `async fn() -> Option<Harness>`.
/// Optional flavor tokens after `;` are passed to `#[tokio::test(...)]`.
#[macro_export]
macro_rules! bus_conformance_tests {
    ($make:path) => {
        $crate::bus_conformance_tests!($make; flavor = "multi_thread", worker_threads = 2);
    };
    ($make:path; $($flavor:tt)*) => {
        $crate::bus_conformance_tests!(@cases $make; ($($flavor)*);
            publish_deliver_ack,
            nak_with_delay_redelivers,
            unacked_redelivered_after_ack_wait,
            in_progress_extends_ack_wait,
            term_never_redelivers,
            max_deliver_stops_redelivery,
            dedupe_within_window,
            two_durables_each_get_every_message,
            reopened_durable_resumes_new_durable_starts_fresh,
            order_on_one_consumer,
            subject_filtering,
            malformed_payload_is_bytes_and_stream_continues,
        );
    };
    (@cases $make:path; $flavor:tt; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test $flavor]
            async fn $case() {
                let Some(h) = $make().await else {
                    return;
                };
                $crate::bus::conformance::$case(&*h.bus, &h.prefix).await;
                if let Some(cleanup) = h.cleanup {
                    cleanup.await;
                }
            }
        )*
    };
}

/// A consumer config with the suite's ack wait and unlimited deliveries.
pub fn consumer(durable: &str, filter: &str) -> ConsumerConfig {
    ConsumerConfig {
        durable: durable.into(),
        filter_subject: filter.into(),
        ack_wait: ACK_WAIT,
        max_deliver: -1,
    }
}

/// Publishes `payload` on `subject` with dedupe id `id`.
pub async fn publish(bus: &dyn Bus, subject: &str, id: &str, payload: &[u8]) {
    bus.publish(Outgoing {
        subject: subject.into(),
        dedupe_id: id.into(),
        payload: payload.to_vec(),
    })
    .await
    .unwrap_or_else(|e| panic!("publish {id} on {subject}: {e}"));
}

/// Opens a subscription.
pub async fn open(bus: &dyn Bus, c: &ConsumerConfig) -> BoxStream<'static, Result<Delivery>> {
    bus.subscribe(c)
        .await
        .unwrap_or_else(|e| panic!("subscribe {}: {e}", c.durable))
}

/// The next delivery (panics after a generous timeout, on an `Err` item or on stream end).
pub async fn next(s: &mut BoxStream<'static, Result<Delivery>>) -> Delivery {
    match tokio::time::timeout(ARRIVE, s.next()).await {
        Ok(Some(Ok(d))) => d,
        Ok(Some(Err(e))) => panic!("delivery error: {e}"),
        Ok(None) => panic!("delivery stream ended"),
        Err(_) => panic!("no delivery within {ARRIVE:?}"),
    }
}

/// Asserts nothing is delivered for `quiet`.
pub async fn nothing_for(s: &mut BoxStream<'static, Result<Delivery>>, quiet: Duration) {
    if let Ok(item) = tokio::time::timeout(quiet, s.next()).await {
        match item {
            Some(Ok(d)) => panic!(
                "unexpected delivery {:?} (delivered {})",
                String::from_utf8_lossy(&d.payload),
                d.delivered
            ),
            Some(Err(e)) => panic!("delivery error: {e}"),
            None => panic!("delivery stream ended"),
        }
    }
}

fn subject(prefix: &str, agent: &str) -> String {
    inbox_subject(prefix, "ns", agent)
}

/// Publish → deliver (subject, payload, delivered = 1) → ack; nothing after.
pub async fn publish_deliver_ack(bus: &dyn Bus, prefix: &str) {
    let subj = subject(prefix, "agent");
    let mut s = open(bus, &consumer("d1", &subj)).await;
    publish(bus, &subj, "m1", b"hello").await;
    let d = next(&mut s).await;
    assert_eq!(d.subject, subj);
    assert_eq!(d.payload, b"hello");
    assert_eq!(d.delivered, 1);
    d.acker.ack().await.expect("ack");
    nothing_for(&mut s, QUIET).await;
}

/// A nak with a delay redelivers it, with the delivered count incremented.
pub async fn nak_with_delay_redelivers(bus: &dyn Bus, prefix: &str) {
    let subj = subject(prefix, "agent");
    let mut s = open(bus, &consumer("d1", &subj)).await;
    publish(bus, &subj, "m1", b"retry me").await;
    let d = next(&mut s).await;
    assert_eq!(d.delivered, 1);
    d.acker
        .nak(Duration::from_millis(300))
        .await
        .expect("nak with delay");
    let d = next(&mut s).await;
    assert_eq!(d.payload, b"retry me");
    assert_eq!(d.delivered, 2);
    d.acker.nak(Duration::ZERO).await.expect("nak now");
    let d = next(&mut s).await;
    assert_eq!(d.delivered, 3);
    d.acker.ack().await.expect("ack");
    nothing_for(&mut s, QUIET).await;
}

/// An unsettled delivery (here: dropped) comes back after the ack wait.
pub async fn unacked_redelivered_after_ack_wait(bus: &dyn Bus, prefix: &str) {
    let subj = subject(prefix, "agent");
    let mut s = open(bus, &consumer("d1", &subj)).await;
    publish(bus, &subj, "m1", b"slow").await;
    let d = next(&mut s).await;
    assert_eq!(d.delivered, 1);
    drop(d);
    let d = next(&mut s).await;
    assert_eq!(d.payload, b"slow");
    assert_eq!(d.delivered, 2);
    d.acker.ack().await.expect("ack");
    nothing_for(&mut s, QUIET).await;
}

/// `in_progress` restarts the ack-wait timer.
pub async fn in_progress_extends_ack_wait(bus: &dyn Bus, prefix: &str) {
    let subj = subject(prefix, "agent");
    let mut c = consumer("d1", &subj);
    c.ack_wait = Duration::from_secs(2);
    let mut s = open(bus, &c).await;
    publish(bus, &subj, "m1", b"long job").await;
    let d = next(&mut s).await;
    // 1.2 s + 1.2 s is past the 2 s ack wait: only in_progress keeps it from coming back.
    nothing_for(&mut s, Duration::from_millis(1200)).await;
    d.acker.in_progress().await.expect("in_progress");
    nothing_for(&mut s, Duration::from_millis(1200)).await;
    d.acker.ack().await.expect("ack");
    nothing_for(&mut s, Duration::from_secs(3)).await;
}

/// A termed delivery never comes back.
pub async fn term_never_redelivers(bus: &dyn Bus, prefix: &str) {
    let subj = subject(prefix, "agent");
    let mut s = open(bus, &consumer("d1", &subj)).await;
    publish(bus, &subj, "m1", b"poison").await;
    let d = next(&mut s).await;
    d.acker.term().await.expect("term");
    nothing_for(&mut s, QUIET).await;
}

/// After `max_deliver` deliveries a message is not delivered again.
pub async fn max_deliver_stops_redelivery(bus: &dyn Bus, prefix: &str) {
    let subj = subject(prefix, "agent");
    let mut c = consumer("d1", &subj);
    c.max_deliver = 2;
    let mut s = open(bus, &c).await;
    publish(bus, &subj, "m1", b"flaky").await;
    let d = next(&mut s).await;
    assert_eq!(d.delivered, 1);
    d.acker.nak(Duration::ZERO).await.expect("nak");
    let d = next(&mut s).await;
    assert_eq!(d.delivered, 2);
    d.acker.nak(Duration::ZERO).await.expect("nak");
    nothing_for(&mut s, QUIET).await;
    // The consumer keeps going with later messages.
    publish(bus, &subj, "m2", b"next").await;
    let d = next(&mut s).await;
    assert_eq!(d.payload, b"next");
    d.acker.ack().await.expect("ack");
}

/// The same dedupe id twice within the window is delivered once; another id is delivered.
pub async fn dedupe_within_window(bus: &dyn Bus, prefix: &str) {
    let subj = subject(prefix, "agent");
    let mut s = open(bus, &consumer("d1", &subj)).await;
    publish(bus, &subj, "same", b"first").await;
    publish(bus, &subj, "same", b"second").await;
    let d = next(&mut s).await;
    assert_eq!(d.payload, b"first");
    d.acker.ack().await.expect("ack");
    nothing_for(&mut s, QUIET).await;
    publish(bus, &subj, "other", b"third").await;
    let d = next(&mut s).await;
    assert_eq!(d.payload, b"third");
    d.acker.ack().await.expect("ack");
}

/// Two durables on the same subject each get every message.
pub async fn two_durables_each_get_every_message(bus: &dyn Bus, prefix: &str) {
    let subj = subject(prefix, "agent");
    let mut a = open(bus, &consumer("worker-1", &subj)).await;
    let mut b = open(bus, &consumer("worker-2", &subj)).await;
    for i in 0..3 {
        publish(bus, &subj, &format!("m{i}"), format!("p{i}").as_bytes()).await;
    }
    for s in [&mut a, &mut b] {
        for i in 0..3 {
            let d = next(s).await;
            assert_eq!(d.payload, format!("p{i}").as_bytes());
            d.acker.ack().await.expect("ack");
        }
    }
    nothing_for(&mut a, QUIET).await;
}

/// Reopening a durable resumes after its acked messages; a durable created later starts with
/// messages published after its creation.
pub async fn reopened_durable_resumes_new_durable_starts_fresh(bus: &dyn Bus, prefix: &str) {
    let subj = subject(prefix, "agent");
    let c1 = consumer("d1", &subj);
    let mut s = open(bus, &c1).await;
    publish(bus, &subj, "m1", b"one").await;
    publish(bus, &subj, "m2", b"two").await;
    for want in [b"one", b"two"] {
        let d = next(&mut s).await;
        assert_eq!(d.payload, want);
        d.acker.ack().await.expect("ack");
    }
    drop(s);
    publish(bus, &subj, "m3", b"three").await;

    let mut s = open(bus, &c1).await;
    let d = next(&mut s).await;
    assert_eq!(
        String::from_utf8_lossy(&d.payload),
        "three",
        "reopened durable resumes after its acked messages"
    );
    d.acker.ack().await.expect("ack");

    let mut fresh = open(bus, &consumer("d2", &subj)).await;
    publish(bus, &subj, "m4", b"four").await;
    let d = next(&mut fresh).await;
    assert_eq!(
        String::from_utf8_lossy(&d.payload),
        "four",
        "a new durable does not see older messages"
    );
    d.acker.ack().await.expect("ack");
    let d = next(&mut s).await;
    assert_eq!(d.payload, b"four");
    d.acker.ack().await.expect("ack");
    nothing_for(&mut fresh, QUIET).await;
}

/// One consumer first gets messages in publish order.
pub async fn order_on_one_consumer(bus: &dyn Bus, prefix: &str) {
    let subj = subject(prefix, "agent");
    let mut s = open(bus, &consumer("d1", &subj)).await;
    for i in 0..25 {
        publish(bus, &subj, &format!("m{i}"), format!("{i}").as_bytes()).await;
    }
    for i in 0..25 {
        let d = next(&mut s).await;
        assert_eq!(String::from_utf8_lossy(&d.payload), i.to_string());
        assert_eq!(d.delivered, 1);
        d.acker.ack().await.expect("ack");
    }
}

/// A consumer only gets the subjects its filter matches (`*` and `>` wildcards included).
pub async fn subject_filtering(bus: &dyn Bus, prefix: &str) {
    let a = inbox_subject(prefix, "ns", "a");
    let b = inbox_subject(prefix, "ns", "b");
    let other_ns = inbox_subject(prefix, "other", "a");
    let mut only_a = open(bus, &consumer("only-a", &a)).await;
    let mut ns_star = open(bus, &consumer("ns-star", &format!("{prefix}.ns.*.inbox"))).await;
    let mut all = open(bus, &consumer("all", &format!("{prefix}.>"))).await;
    publish(bus, &b, "1", b"to b").await;
    publish(bus, &other_ns, "2", b"to other a").await;
    publish(bus, &a, "3", b"to a").await;

    let d = next(&mut only_a).await;
    assert_eq!(d.subject, a);
    assert_eq!(d.payload, b"to a");
    d.acker.ack().await.expect("ack");

    for want in [&b, &a] {
        let d = next(&mut ns_star).await;
        assert_eq!(&d.subject, want);
        d.acker.ack().await.expect("ack");
    }
    for want in [&b, &other_ns, &a] {
        let d = next(&mut all).await;
        assert_eq!(&d.subject, want);
        d.acker.ack().await.expect("ack");
    }
    nothing_for(&mut only_a, Duration::from_millis(500)).await;
    nothing_for(&mut ns_star, Duration::from_millis(500)).await;
}

/// A malformed payload is delivered as bytes; after it is termed the consumer goes on.
pub async fn malformed_payload_is_bytes_and_stream_continues(bus: &dyn Bus, prefix: &str) {
    let subj = subject(prefix, "agent");
    let mut s = open(bus, &consumer("d1", &subj)).await;
    let garbage = b"\xff\x00{not json".to_vec();
    publish(bus, &subj, "bad", &garbage).await;
    let good = AgentMessage {
        message_id: "default/t1/a001/h001/system/agent".into(),
        task_id: "default/t1".into(),
        attempt: 1,
        to_agent: "agent".into(),
        payload: "work".into(),
        ..Default::default()
    };
    publish(bus, &subj, &good.message_id, &good.encode()).await;

    let d = next(&mut s).await;
    assert_eq!(d.payload, garbage);
    assert!(AgentMessage::decode(&d.payload).is_err());
    d.acker.term().await.expect("term");
    let d = next(&mut s).await;
    assert_eq!(AgentMessage::decode(&d.payload).expect("decodes"), good);
    d.acker.ack().await.expect("ack");
    nothing_for(&mut s, QUIET).await;
}
