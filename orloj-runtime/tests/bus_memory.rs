//! The bus conformance suite on [`MemoryBus`] (under paused tokio time), plus memory-only
//! behaviour: the dedupe window expiring and the history bound of unsubscribed durables.

use orloj_core::bus::{Bus, inbox_subject};
use orloj_runtime::bus::conformance::{Harness, consumer, next, nothing_for, open, publish};
use orloj_runtime::bus::{MemoryBus, MemoryBusConfig};
use std::sync::Arc;
use std::time::Duration;

async fn make() -> Option<Harness> {
    Some(Harness::new(
        Arc::new(MemoryBus::default()),
        "orloj.agentmsg",
    ))
}

orloj_runtime::bus_conformance_tests!(make; start_paused = true);

#[tokio::test(start_paused = true)]
async fn dedupe_window_expires() {
    let bus = MemoryBus::new(MemoryBusConfig {
        dedupe_window: Duration::from_secs(60),
        ..Default::default()
    });
    let subj = inbox_subject("p", "ns", "a");
    let mut s = open(&bus, &consumer("d1", &subj)).await;
    publish(&bus, &subj, "same", b"1").await;
    tokio::time::advance(Duration::from_secs(30)).await;
    publish(&bus, &subj, "same", b"2").await;
    tokio::time::advance(Duration::from_secs(31)).await;
    publish(&bus, &subj, "same", b"3").await;
    for want in [b"1", b"3"] {
        let d = next(&mut s).await;
        assert_eq!(d.payload, want);
        d.acker.ack().await.expect("ack");
    }
    nothing_for(&mut s, Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn dedupe_capacity_bounds_remembered_ids() {
    let bus = MemoryBus::new(MemoryBusConfig {
        dedupe_capacity: 2,
        ..Default::default()
    });
    let subj = inbox_subject("p", "ns", "a");
    let mut s = open(&bus, &consumer("d1", &subj)).await;
    for id in ["a", "b", "c", "a"] {
        publish(&bus, &subj, id, id.as_bytes()).await;
    }
    // "a" was forgotten once "c" made three ids; its second publish is delivered.
    for want in ["a", "b", "c", "a"] {
        let d = next(&mut s).await;
        assert_eq!(d.payload, want.as_bytes());
        d.acker.ack().await.expect("ack");
    }
}

#[tokio::test(start_paused = true)]
async fn unsubscribed_durable_keeps_only_history() {
    let bus = MemoryBus::new(MemoryBusConfig {
        history: 3,
        ..Default::default()
    });
    let subj = inbox_subject("p", "ns", "a");
    let c = consumer("d1", &subj);
    // While subscribed, nothing is dropped however far behind the reader is.
    let mut s = open(&bus, &c).await;
    for i in 0..10 {
        publish(
            &bus,
            &subj,
            &format!("live{i}"),
            format!("live{i}").as_bytes(),
        )
        .await;
    }
    for i in 0..10 {
        let d = next(&mut s).await;
        assert_eq!(d.payload, format!("live{i}").as_bytes());
        d.acker.ack().await.expect("ack");
    }
    drop(s);
    for i in 0..5 {
        publish(&bus, &subj, &format!("m{i}"), format!("m{i}").as_bytes()).await;
    }
    let mut s = open(&bus, &c).await;
    for i in 2..5 {
        let d = next(&mut s).await;
        assert_eq!(d.payload, format!("m{i}").as_bytes());
        d.acker.ack().await.expect("ack");
    }
    nothing_for(&mut s, Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn subscriptions_on_one_durable_share_its_queue() {
    let bus = MemoryBus::default();
    let subj = inbox_subject("p", "ns", "a");
    let c = consumer("d1", &subj);
    let mut s1 = open(&bus, &c).await;
    let mut s2 = open(&bus, &c).await;
    publish(&bus, &subj, "1", b"1").await;
    publish(&bus, &subj, "2", b"2").await;
    let d1 = next(&mut s1).await;
    let d2 = next(&mut s2).await;
    assert_ne!(d1.payload, d2.payload);
    d1.acker.ack().await.expect("ack");
    d2.acker.ack().await.expect("ack");
    nothing_for(&mut s1, Duration::from_secs(5)).await;
    nothing_for(&mut s2, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn rejects_bad_consumer_config() {
    let bus = MemoryBus::default();
    let err = bus
        .subscribe(&consumer("bad name!", "p.>"))
        .await
        .err()
        .expect("bad durable rejected");
    assert_eq!(err.kind(), orloj_core::ErrorKind::Invalid);
    assert!(err.to_string().contains("bad name!"), "{err}");
    let err = bus
        .subscribe(&consumer("d1", "p.>.x"))
        .await
        .err()
        .expect("bad filter rejected");
    assert_eq!(err.kind(), orloj_core::ErrorKind::Invalid);
}

/// Many tasks publishing and consuming concurrently on a multi-threaded runtime: every message
/// is delivered exactly once per durable when each is acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publish_and_consume() {
    let bus = Arc::new(MemoryBus::default());
    let subj = inbox_subject("p", "ns", "a");
    let mut s = open(&*bus, &consumer("d1", &subj)).await;
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let bus = bus.clone();
            let subj = subj.clone();
            tokio::spawn(async move {
                for i in 0..500 {
                    publish(&*bus, &subj, &format!("{p}-{i}"), b"x").await;
                }
            })
        })
        .collect();
    let mut seen = 0;
    while seen < 2000 {
        let d = next(&mut s).await;
        assert_eq!(d.delivered, 1);
        d.acker.ack().await.expect("ack");
        seen += 1;
    }
    for p in producers {
        p.await.expect("producer");
    }
    nothing_for(&mut s, Duration::from_millis(200)).await;
}
