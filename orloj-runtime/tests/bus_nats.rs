//! The bus conformance suite on [`NatsBus`] against a real nats-server with JetStream, plus
//! NATS-only behaviour (connect failures, stream setup, publish errors).
//!
//! Needs `TEST_NATS_URL` (e.g. `nats://127.0.0.1:4222`, server started with `-js`). Without it
//! the tests print a skip message and pass, unless `CI` is set, where they fail. Each test uses
//! its own stream and subject prefix and deletes the stream when it passes.

use orloj_core::ErrorKind;
use orloj_core::bus::{Bus, Outgoing, inbox_subject};
use orloj_runtime::bus::conformance::{Harness, consumer, next, open, publish};
use orloj_runtime::bus::{NatsBus, NatsBusConfig};
use std::sync::Arc;
use std::time::Duration;

fn nats_url() -> Option<String> {
    match std::env::var("TEST_NATS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "TEST_NATS_URL is not set but CI is: the NATS bus tests must not be skipped in CI"
            );
            eprintln!("skipping NATS bus test: TEST_NATS_URL is not set");
            None
        }
    }
}

/// A config with a stream and prefix no other test uses.
fn unique_config(url: &str) -> NatsBusConfig {
    let id = uuid::Uuid::new_v4().simple().to_string();
    NatsBusConfig {
        url: url.to_owned(),
        stream: format!("ORLOJ_TEST_{id}"),
        subject_prefix: format!("orlojtest.{id}"),
        max_age: Duration::from_secs(3600),
        ..Default::default()
    }
}

async fn make() -> Option<Harness> {
    let url = nats_url()?;
    let config = unique_config(&url);
    let prefix = config.subject_prefix.clone();
    let bus = NatsBus::connect(config)
        .await
        .expect("connect to TEST_NATS_URL");
    let cleanup_bus = bus.clone();
    Some(Harness {
        bus: Arc::new(bus),
        prefix,
        cleanup: Some(Box::pin(async move {
            cleanup_bus
                .delete_stream()
                .await
                .expect("delete test stream");
        })),
    })
}

orloj_runtime::bus_conformance_tests!(make);

#[tokio::test]
async fn connect_to_closed_port_fails_unavailable() {
    // Bind then drop a listener: the port is (very likely) closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("nats://127.0.0.1:{port}");
    let err = NatsBus::connect(NatsBusConfig {
        url: url.clone(),
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .expect_err("connect to a closed port fails");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains(&url), "{err}");
}

#[tokio::test]
async fn bad_config_is_invalid() {
    for config in [
        NatsBusConfig {
            subject_prefix: "a.>".into(),
            ..Default::default()
        },
        NatsBusConfig {
            stream: "has.dot".into(),
            ..Default::default()
        },
    ] {
        let err = NatsBus::connect(config).await.expect_err("rejected");
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_errors_are_clear() {
    let Some(url) = nats_url() else { return };
    let config = unique_config(&url);
    let bus = NatsBus::connect(config.clone()).await.expect("connect");

    let err = bus
        .publish(Outgoing {
            subject: "elsewhere.ns.a.inbox".into(),
            dedupe_id: "x".into(),
            payload: b"x".to_vec(),
        })
        .await
        .expect_err("outside the prefix");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(err.to_string().contains("elsewhere.ns.a.inbox"), "{err}");

    // With its stream gone, a publish cannot become durable: Unavailable.
    bus.delete_stream().await.expect("delete stream");
    let err = bus
        .publish(Outgoing {
            subject: inbox_subject(&config.subject_prefix, "ns", "a"),
            dedupe_id: "y".into(),
            payload: b"y".to_vec(),
        })
        .await
        .expect_err("no stream");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains(&config.stream), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_stream_is_reused_and_extended() {
    let Some(url) = nats_url() else { return };
    let config = unique_config(&url);
    let first = NatsBus::connect(config.clone())
        .await
        .expect("create stream");
    // Same stream, same prefix: reused ("already exists" is fine).
    let again = NatsBus::connect(config.clone())
        .await
        .expect("reuse stream");
    // Same stream, another prefix: its subjects are added.
    let other_prefix = format!("{}x", config.subject_prefix);
    let other = NatsBus::connect(NatsBusConfig {
        subject_prefix: other_prefix.clone(),
        ..config.clone()
    })
    .await
    .expect("extend stream");

    let subj = inbox_subject(&other_prefix, "ns", "a");
    let mut s = open(&again, &consumer("d1", &subj)).await;
    publish(&other, &subj, "m1", b"via other prefix").await;
    let d = next(&mut s).await;
    assert_eq!(d.payload, b"via other prefix");
    d.acker.ack().await.expect("ack");
    first.delete_stream().await.expect("delete stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_consumer_with_new_settings_is_updated() {
    let Some(url) = nats_url() else { return };
    let config = unique_config(&url);
    let bus = NatsBus::connect(config.clone()).await.expect("connect");
    let a = inbox_subject(&config.subject_prefix, "ns", "a");
    let b = inbox_subject(&config.subject_prefix, "ns", "b");
    drop(open(&bus, &consumer("d1", &a)).await);
    let mut s = open(&bus, &consumer("d1", &b)).await;
    publish(&bus, &a, "1", b"to a").await;
    publish(&bus, &b, "2", b"to b").await;
    let d = next(&mut s).await;
    assert_eq!(d.subject, b);
    d.acker.ack().await.expect("ack");
    bus.delete_stream().await.expect("delete stream");
}

/// A nats-server binary for tests that need a server of their own: `NATS_SERVER_BIN`, else the
/// one `.ci/services.sh` installs, else `nats-server` on PATH.
fn nats_server_bin() -> Option<std::path::PathBuf> {
    let candidates = [
        std::env::var_os("NATS_SERVER_BIN").map(std::path::PathBuf::from),
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/venv/bin/nats-server")),
    ];
    for c in candidates.into_iter().flatten() {
        if c.is_file() {
            return Some(c);
        }
    }
    let on_path = std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    on_path.then(|| "nats-server".into())
}

/// A nats-server of this test's own, with JetStream storage in a temp dir.
struct OwnServer {
    bin: std::path::PathBuf,
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnServer {
    fn start(bin: std::path::PathBuf) -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let dir = std::env::temp_dir().join(format!("orloj-nats-{}", uuid::Uuid::new_v4()));
        let mut s = Self {
            bin,
            port,
            dir,
            child: None,
        };
        s.restart();
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let child = std::process::Command::new(&self.bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("nats-server did not listen on port {}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server goes away and comes back: publishes fail with `Unavailable` meanwhile, and the
/// same subscription stream delivers again afterwards (possibly after `Err` items).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_server_restart() {
    if nats_url().is_none() {
        return;
    }
    let Some(bin) = nats_server_bin() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no nats-server binary found but CI is set"
        );
        eprintln!("skipping NATS restart test: no nats-server binary (set NATS_SERVER_BIN)");
        return;
    };
    let mut server = OwnServer::start(bin);
    let config = NatsBusConfig {
        url: server.url(),
        request_timeout: Duration::from_secs(2),
        ..unique_config(&server.url())
    };
    let bus = NatsBus::connect(config.clone()).await.expect("connect");
    let subj = inbox_subject(&config.subject_prefix, "ns", "a");
    let mut s = open(&bus, &consumer("d1", &subj)).await;
    publish(&bus, &subj, "m1", b"before").await;
    let d = next(&mut s).await;
    assert_eq!(d.payload, b"before");
    d.acker.ack().await.expect("ack");

    server.stop();
    let err = bus
        .publish(Outgoing {
            subject: subj.clone(),
            dedupe_id: "m2".into(),
            payload: b"while down".to_vec(),
        })
        .await
        .expect_err("publish while the server is down");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");

    server.restart();
    // Publishing works again once the client has reconnected.
    let mut published = false;
    for _ in 0..60 {
        if bus
            .publish(Outgoing {
                subject: subj.clone(),
                dedupe_id: "m3".into(),
                payload: b"after".to_vec(),
            })
            .await
            .is_ok()
        {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(published, "publish after the server came back");
    // The subscription recovers; transient errors may come first.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let item = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut s))
            .await
            .expect("a delivery after the restart")
            .expect("stream stays open");
        match item {
            Ok(d) if d.payload == b"after" => {
                d.acker.ack().await.expect("ack");
                break;
            }
            Ok(d) => {
                // A message published while down may have been stored before the stop.
                d.acker.ack().await.expect("ack");
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}"),
        }
    }
}
