//! The Store conformance suite on [`PostgresStore`], plus Postgres-specific behaviour.
//!
//! Needs a server: `TEST_DATABASE_URL=postgres://user@host:port/db` (any database; each test
//! creates and drops its own `orloj_t_<random>` database). Without it the tests print a skip
//! message and pass, unless `CI` is set, where they fail.

use futures::StreamExt;
use orloj_core::{ErrorKind, Kind, ManualClock, Object, Store};
use orloj_store::{PostgresOptions, PostgresStore};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orloj_store::testing::TestDb;

fn options(retention: Option<usize>) -> PostgresOptions {
    PostgresOptions {
        max_open_conns: 8,
        event_retention: retention.map_or(10_000, |r| r as u64),
        watch_poll_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

async fn make(
    clock: Arc<ManualClock>,
    retention: Option<usize>,
) -> Option<(Arc<dyn Store>, TestDb)> {
    let db = TestDb::create().await?;
    let store = PostgresStore::connect(&db.url, options(retention), clock)
        .await
        .expect("connect to the test database");
    Some((Arc::new(store), db))
}

orloj_store::store_conformance_tests!(make);

fn clock() -> Arc<ManualClock> {
    Arc::new(orloj_store::conformance::start_clock())
}

#[tokio::test]
async fn data_survives_a_new_store() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let clock = clock();
    let first = PostgresStore::connect(&db.url, options(None), clock.clone())
        .await
        .expect("connect");
    first
        .create(Object::new(Kind::Task, "ns", "t"))
        .await
        .expect("create");
    let stored = first
        .update_status(Kind::Task, "ns", "t", None, json!({"phase": "Pending"}))
        .await
        .expect("status");
    first
        .append_task_log("ns", "t", "hello")
        .await
        .expect("log");
    first.close().await;
    drop(first);

    let second = PostgresStore::connect(&db.url, options(None), clock)
        .await
        .expect("reconnect");
    assert_eq!(
        second.get(Kind::Task, "ns", "t").await.expect("get"),
        stored
    );
    assert_eq!(
        second.task_logs("ns", "t", 10).await.expect("logs"),
        ["hello"]
    );
    assert_eq!(second.current_revision().await.expect("revision"), 2);
    let mut replay = second.watch(None, Some(0)).await.expect("watch");
    let first_event = tokio::time::timeout(Duration::from_secs(5), replay.next())
        .await
        .expect("event")
        .expect("open")
        .expect("ok");
    assert_eq!(first_event.revision, 1);
    let next = second
        .create(Object::new(Kind::Agent, "ns", "a"))
        .await
        .expect("create");
    assert_eq!(next.metadata.resource_version, "1");
    assert_eq!(second.current_revision().await.expect("revision"), 3);
}

#[tokio::test]
async fn unreachable_server_is_unavailable_quickly() {
    let started = Instant::now();
    let opts = PostgresOptions {
        acquire_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let err = PostgresStore::connect(
        "postgres://postgres@127.0.0.1:1/orloj",
        opts.clone(),
        clock(),
    )
    .await
    .expect_err("nothing listens on port 1");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("store unavailable:"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    // A store whose server goes away answers Unavailable too, without hanging.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy("postgres://postgres@127.0.0.1:1/orloj")
        .expect("lazy pool");
    let store = PostgresStore::from_pool(pool, opts, clock());
    let started = Instant::now();
    let err = store
        .get(Kind::Agent, "default", "a")
        .await
        .expect_err("unreachable");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().starts_with("store unavailable:"), "{err}");
    assert_eq!(
        store.ping().await.expect_err("ping").kind(),
        ErrorKind::Unavailable
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn closed_pool_is_unavailable() {
    let Some((store, _db)) = make(clock(), None).await else {
        return;
    };
    store
        .create(Object::new(Kind::Agent, "ns", "a"))
        .await
        .expect("create");
    let mut watch = store.watch(None, None).await.expect("watch");
    let pg = PostgresStore::connect(&_db.url, options(None), clock())
        .await
        .expect("connect");
    pg.close().await;
    let err = pg.get(Kind::Agent, "ns", "a").await.expect_err("closed");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    // The other store is unaffected and its watch still works.
    store
        .create(Object::new(Kind::Agent, "ns", "b"))
        .await
        .expect("create");
    let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("event")
        .expect("open")
        .expect("ok");
    assert_eq!(event.object.key(), "ns/b");
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_concurrently() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b) = tokio::join!(
        PostgresStore::connect(&db.url, options(None), clock()),
        PostgresStore::connect(&db.url, options(None), clock()),
    );
    let a = a.expect("first starter");
    let b = b.expect("concurrent starter");
    PostgresStore::migrate(a.pool())
        .await
        .expect("migrate again");
    PostgresStore::migrate(b.pool()).await.expect("and again");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(a.pool())
        .await
        .expect("count");
    assert_eq!(
        applied,
        orloj_store::postgres::MIGRATOR.iter().count() as i64
    );
    a.create(Object::new(Kind::Agent, "ns", "x"))
        .await
        .expect("create");
    assert_eq!(
        b.get(Kind::Agent, "ns", "x")
            .await
            .expect("get")
            .metadata
            .resource_version,
        "1"
    );
}

#[tokio::test]
async fn indexed_columns_follow_the_payload() {
    let Some((_, db)) = make(clock(), None).await else {
        return;
    };
    let store = PostgresStore::connect(&db.url, options(None), clock())
        .await
        .expect("connect");
    let mut t = Object::new(Kind::Task, "ns", "t");
    t.spec = json!({"system": "sys", "mode": "run", "priority": "high",
                    "requirements": {"region": "EU", "gpu": true}});
    store.create(t).await.expect("create");
    let claim = orloj_core::ClaimRequest {
        worker_id: "w1".into(),
        lease: Duration::from_secs(30),
        region: "eu".into(),
        gpu: true,
        supported_models: vec![],
        namespace: None,
    };
    let claimed = store
        .claim_task(&claim)
        .await
        .expect("claim")
        .expect("a task");
    type Row = (
        String,
        String,
        String,
        String,
        String,
        String,
        bool,
        Option<chrono::DateTime<chrono::Utc>>,
        String,
    );
    let row: Row = sqlx::query_as(
        "SELECT namespace, status_phase, system_ref, priority, claimed_by, req_region, req_gpu, \
                lease_until, spec_hash FROM tasks WHERE name = 'ns/t'",
    )
    .fetch_one(store.pool())
    .await
    .expect("row");
    assert_eq!(
        (&*row.0, &*row.1, &*row.2, &*row.3, &*row.4, &*row.5, row.6),
        ("ns", "running", "sys", "high", "w1", "eu", true)
    );
    let lease = claimed.status["leaseUntil"].as_str().expect("leaseUntil");
    assert_eq!(
        row.7.map(orloj_core::task_queue::format_time).as_deref(),
        Some(lease)
    );
    assert_eq!(row.8.len(), 64, "sha256 hex");

    store
        .update_status(Kind::Task, "ns", "t", None, json!({"phase": "Succeeded"}))
        .await
        .expect("status");
    let (phase, lease): (String, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT status_phase, lease_until FROM tasks WHERE name = 'ns/t'")
            .fetch_one(store.pool())
            .await
            .expect("row");
    assert_eq!((phase.as_str(), lease), ("succeeded", None));
}

#[tokio::test]
async fn bad_objects_are_invalid_not_internal() {
    let Some((store, _db)) = make(clock(), None).await else {
        return;
    };
    let long = "n".repeat(300);
    let err = store
        .create(Object::new(Kind::Agent, "ns", &long))
        .await
        .expect_err("name too long");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    let mut nul = Object::new(Kind::Agent, "ns", "nul");
    nul.spec = json!({"prompt": "a\u{0}b"});
    let err = store.create(nul).await.expect_err("NUL in JSONB");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert_eq!(
        store.current_revision().await.expect("revision"),
        0,
        "nothing was written"
    );
}

#[tokio::test]
async fn watch_sees_writes_of_another_store() {
    let Some((watcher, db)) = make(clock(), None).await else {
        return;
    };
    let writer = PostgresStore::connect(&db.url, options(None), clock())
        .await
        .expect("connect");
    let mut stream = watcher.watch(Some(Kind::Task), None).await.expect("watch");
    // Give the LISTEN connection a moment so this exercises NOTIFY rather than polling.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    writer
        .create(Object::new(Kind::Task, "ns", "t"))
        .await
        .expect("create");
    let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("event")
        .expect("open")
        .expect("ok");
    assert_eq!(event.object.key(), "ns/t");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

/// Migration 0006: the task columns the claim filters on are set by the store on every write.
/// After each kind of write they must equal the formulas of the generated columns they replaced,
/// evaluated by Postgres on the stored payload.
#[tokio::test]
async fn task_columns_follow_the_payload_on_every_write() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::connect(&db.url, options(None), clock())
        .await
        .expect("connect");
    let mismatches = || column_mismatches(store.pool());
    let mut task = Object::new(Kind::Task, "ns", "t");
    task.spec = json!({
        "system": "Sys", "mode": " Run ", "priority": "High",
        "requirements": {"region": " EU-West ", "gpu": true, "model": "GPT-X "}
    });
    store.create(task).await.expect("create");
    let mut other = Object::new(Kind::Task, "", "u");
    other.spec = json!({"system": 7, "requirements": {"gpu": "true"}});
    store.create(other).await.expect("create another");
    assert_eq!(mismatches().await, Vec::<String>::new(), "after create");

    let request = orloj_core::ClaimRequest {
        worker_id: "w1".into(),
        lease: Duration::from_secs(30),
        region: "eu-west".into(),
        gpu: true,
        supported_models: vec!["gpt-x".into()],
        namespace: Some("ns".into()),
    };
    let claimed = store
        .claim_task(&request)
        .await
        .expect("claim")
        .expect("the task matches its requirements");
    assert_eq!(claimed.name(), "t");
    assert_eq!(mismatches().await, Vec::<String>::new(), "after claim");

    let mut status = claimed.status.clone();
    status["phase"] = json!("WaitingApproval");
    status["nextAttemptAt"] = json!("2030-01-02T03:04:05Z");
    let written = store
        .update_status_of(&claimed, status)
        .await
        .expect("status write");
    assert_eq!(
        mismatches().await,
        Vec::<String>::new(),
        "after a status write"
    );

    let mut changed = (*written).clone();
    changed.spec["system"] = json!("other");
    changed.spec["requirements"]["gpu"] = json!(false);
    store.update(changed).await.expect("spec update");
    assert_eq!(mismatches().await, Vec::<String>::new(), "after an update");
    let phase: String = sqlx::query_scalar("SELECT status_phase FROM tasks WHERE name = 'ns/t'")
        .fetch_one(store.pool())
        .await
        .expect("phase");
    assert_eq!(phase, "waitingapproval");
}

/// The tasks whose store-set columns differ from the formulas of the generated columns they
/// replaced (migration 0006), evaluated by Postgres on the stored payload.
async fn column_mismatches(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT name FROM tasks WHERE NOT ( \
           namespace = coalesce(nullif(orloj_text(payload -> 'metadata' -> 'namespace'), ''), 'default') \
           AND status_phase = lower(orloj_text(payload -> 'status' -> 'phase')) \
           AND spec_hash = orloj_spec_hash(payload -> 'spec') \
           AND system_ref = orloj_text(payload -> 'spec' -> 'system') \
           AND mode = lower(btrim(orloj_text(payload -> 'spec' -> 'mode'))) \
           AND priority = orloj_text(payload -> 'spec' -> 'priority') \
           AND assigned_worker = orloj_text(payload -> 'status' -> 'assignedWorker') \
           AND claimed_by = orloj_text(payload -> 'status' -> 'claimedBy') \
           AND req_region = lower(btrim(orloj_text(payload -> 'spec' -> 'requirements' -> 'region'))) \
           AND req_gpu = coalesce(payload -> 'spec' -> 'requirements' -> 'gpu' = 'true'::jsonb, false) \
           AND req_model = lower(btrim(orloj_text(payload -> 'spec' -> 'requirements' -> 'model'))) \
           AND lease_until IS NOT DISTINCT FROM (payload -> 'status' ->> 'leaseUntil')::timestamptz \
           AND next_attempt_at IS NOT DISTINCT FROM (payload -> 'status' ->> 'nextAttemptAt')::timestamptz)",
    )
    .fetch_all(pool)
    .await
    .expect("compare columns")
}

/// Version-guarded status writes of many tasks at once, which the store writes several to a
/// statement: each keeps its own guard, event and revision (no gaps, in the order they were
/// written) and its columns follow its payload; of two writes racing from one version exactly
/// one wins; a stale write and a write the database rejects fail alone.
#[tokio::test]
async fn concurrent_task_status_writes_keep_their_own_guards_and_events() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::connect(&db.url, options(None), clock())
        .await
        .expect("connect");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let mut task = Object::new(Kind::Task, "ns", &format!("t{i:02}"));
        task.spec = json!({"system": "sys", "requirements": {"region": " EU "}});
        tasks.push(Arc::new(store.create(task).await.expect("create")));
    }
    let head = store.current_revision().await.expect("revision");
    let mut events = store
        .watch(Some(Kind::Task), Some(head))
        .await
        .expect("watch");
    let status = |round: usize, i: usize| {
        json!({"phase": "Running", "claimedBy": format!("w{i}"),
               "leaseUntil": "2030-01-01T00:00:00Z", "note": format!("round {round}, {i}")})
    };
    let kind = |r: &orloj_core::Result<Arc<Object>>| r.as_ref().err().map(|e| e.kind());
    // What each write wrote, by name and version: what its event must carry.
    let mut written_objects = std::collections::HashMap::new();

    // Round 1: every task, and a second writer racing the first from task 0's version.
    let mut writes: Vec<_> = tasks
        .iter()
        .enumerate()
        .map(|(i, task)| store.update_status_of(task, status(1, i)))
        .collect();
    writes.push(store.update_status_of(&tasks[0], json!({"phase": "Failed"})));
    let results = futures::future::join_all(writes).await;
    let race = [kind(&results[0]), kind(&results[40])];
    assert!(
        race == [None, Some(ErrorKind::Conflict)] || race == [Some(ErrorKind::Conflict), None],
        "exactly one of two racing writes wins: {race:?}"
    );
    for (i, result) in results.iter().enumerate().take(40).skip(1) {
        let written = result.as_ref().expect("written");
        assert_eq!(written.metadata.resource_version, "2");
        assert_eq!(written.status, status(1, i));
        tasks[i] = Arc::clone(written);
    }
    tasks[0] = Arc::new(store.get(Kind::Task, "ns", "t00").await.expect("get"));
    for task in &tasks {
        written_objects.insert((task.name().to_string(), "2".to_string()), (**task).clone());
    }

    // Round 2: a stale version and a status Postgres refuses (NUL in jsonb text) among writes
    // that hold.
    let mut stale = (*tasks[1]).clone();
    stale.metadata.resource_version = "1".into();
    let writes: Vec<_> = tasks
        .iter()
        .enumerate()
        .map(|(i, task)| match i {
            1 => store.update_status_of(&stale, status(2, i)),
            2 => store.update_status_of(task, json!({"phase": "Running", "note": "\u{0}"})),
            _ => store.update_status_of(task, status(2, i)),
        })
        .collect();
    let results = futures::future::join_all(writes).await;
    assert_eq!(
        kind(&results[1]),
        Some(ErrorKind::Conflict),
        "stale version"
    );
    assert!(results[2].is_err(), "a status Postgres rejects");
    assert_ne!(kind(&results[2]), Some(ErrorKind::Conflict));
    for (i, result) in results.iter().enumerate() {
        let stored = store
            .get(Kind::Task, "ns", &format!("t{i:02}"))
            .await
            .expect("get");
        if i == 1 || i == 2 {
            assert_eq!(stored, *tasks[i], "t{i:02} changed");
        } else {
            assert_eq!(
                result.as_ref().expect("written").metadata.resource_version,
                "3"
            );
            assert_eq!(stored.status, status(2, i));
            written_objects.insert((stored.name().to_string(), "3".to_string()), stored);
        }
    }
    assert_eq!(column_mismatches(store.pool()).await, Vec::<String>::new());

    // 40 + 38 writes: one event each, revisions without gaps.
    for event in events_after(&store, &mut events, head, 78).await {
        let key = (
            event.object.name().to_string(),
            event.object.metadata.resource_version.clone(),
        );
        assert_eq!(
            Some(&event.object),
            written_objects.get(&key),
            "event of {key:?}"
        );
    }
}

/// The next `n` events of `events`, which must be revisions `head + 1` to `head + n`, the last
/// one the store's current revision.
async fn events_after(
    store: &PostgresStore,
    events: &mut futures::stream::BoxStream<'static, orloj_core::Result<orloj_core::WatchEvent>>,
    head: u64,
    n: u64,
) -> Vec<orloj_core::WatchEvent> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("event");
        seen.push(event);
    }
    let revisions: Vec<u64> = seen.iter().map(|e| e.revision).collect();
    let expected: Vec<u64> = (head + 1..=head + n).collect();
    assert_eq!(revisions, expected);
    assert_eq!(store.current_revision().await.expect("revision"), head + n);
    seen
}

/// Creates of many tasks at once, which the store writes several to a statement: each created
/// task gets its own `added` event and revision (no gaps), its columns follow its payload; of
/// two creates of one name exactly one wins, a create of an existing task and a create the
/// database rejects fail alone.
#[tokio::test]
async fn concurrent_task_creates_keep_their_own_events() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::connect(&db.url, options(None), clock())
        .await
        .expect("connect");
    let task = |name: &str, note: &str| {
        let mut task = Object::new(Kind::Task, "ns", name);
        task.spec = json!({"system": "sys", "mode": " Run ", "input": {"note": note},
                           "requirements": {"region": " EU ", "gpu": true}});
        task
    };
    let existing = store.create(task("t00", "first")).await.expect("create");
    let head = store.current_revision().await.expect("revision");
    let mut events = store
        .watch(Some(Kind::Task), Some(head))
        .await
        .expect("watch");
    let kind = |r: &orloj_core::Result<Object>| r.as_ref().err().map(|e| e.kind());

    // Round 1: 40 new tasks, t05 twice.
    let mut creates: Vec<_> = (1..=40)
        .map(|i| store.create(task(&format!("t{i:02}"), "round 1")))
        .collect();
    creates.push(store.create(task("t05", "again")));
    let results = futures::future::join_all(creates).await;
    let twice = [kind(&results[4]), kind(&results[40])];
    assert!(
        twice == [None, Some(ErrorKind::Conflict)] || twice == [Some(ErrorKind::Conflict), None],
        "exactly one of two creates of a name wins: {twice:?}"
    );
    let mut created = std::collections::HashMap::new();
    for result in results.into_iter().flatten() {
        assert_eq!(result.metadata.resource_version, "1");
        created.insert(result.name().to_string(), result);
    }
    assert_eq!(created.len(), 40);

    // Round 2: an existing task and a spec Postgres refuses (NUL in jsonb text) among new ones.
    let creates: Vec<_> = (41..=60)
        .map(|i| match i {
            41 => store.create(task("t00", "again")),
            42 => store.create(task("t42", "\u{0}")),
            _ => store.create(task(&format!("t{i:02}"), "round 2")),
        })
        .collect();
    let results = futures::future::join_all(creates).await;
    assert_eq!(
        kind(&results[0]),
        Some(ErrorKind::Conflict),
        "exists already"
    );
    assert!(results[1].is_err(), "a spec Postgres rejects");
    assert_ne!(kind(&results[1]), Some(ErrorKind::Conflict));
    assert_eq!(
        store.get(Kind::Task, "ns", "t00").await.expect("get"),
        existing,
        "an existing task is left alone"
    );
    let missing = store
        .get(Kind::Task, "ns", "t42")
        .await
        .err()
        .map(|e| e.kind());
    assert_eq!(missing, Some(ErrorKind::NotFound));
    for result in results.into_iter().skip(2) {
        let result = result.expect("created");
        created.insert(result.name().to_string(), result);
    }
    assert_eq!(created.len(), 58);
    for (name, object) in &created {
        let stored = store.get(Kind::Task, "ns", name).await.expect("get");
        assert_eq!(&stored, object);
    }
    assert_eq!(column_mismatches(store.pool()).await, Vec::<String>::new());

    for event in events_after(&store, &mut events, head, 58).await {
        assert_eq!(event.event_type, orloj_core::WatchEventType::Added);
        assert_eq!(Some(&event.object), created.get(event.object.name()));
    }
}

/// Task writes that find the database gone fail as Unavailable (retryable), batched or not.
#[tokio::test]
async fn task_writes_after_the_pool_closed_are_unavailable() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::connect(&db.url, options(None), clock())
        .await
        .expect("connect");
    let mut tasks = Vec::new();
    for i in 0..10 {
        tasks.push(
            store
                .create(Object::new(Kind::Task, "ns", &format!("t{i}")))
                .await
                .expect("create"),
        );
    }
    store.close().await;
    let statuses = tasks
        .iter()
        .map(|t| store.update_status_of(t, json!({"phase": "Running"})));
    let creates = (10..20).map(|i| store.create(Object::new(Kind::Task, "ns", &format!("t{i}"))));
    let (statuses, creates) = futures::future::join(
        futures::future::join_all(statuses),
        futures::future::join_all(creates),
    )
    .await;
    let kinds: Vec<_> = statuses
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.kind()))
        .chain(creates.iter().map(|r| r.as_ref().err().map(|e| e.kind())))
        .collect();
    assert_eq!(kinds, vec![Some(ErrorKind::Unavailable); 20]);
}

/// Counts the retained events and the oldest one.
async fn retained_events(pool: &sqlx::PgPool) -> (i64, Option<i64>) {
    sqlx::query_as("SELECT count(*), min(revision) FROM store_events")
        .fetch_one(pool)
        .await
        .expect("count events")
}

/// A store on `url` keeping `retention` events.
async fn store_keeping(url: &str, retention: usize) -> PostgresStore {
    PostgresStore::connect(url, options(Some(retention)), clock())
        .await
        .expect("connect")
}

/// Creates agents `a00` to `a{n-1}` in namespace `ns`.
async fn create_agents(store: &PostgresStore, n: usize) {
    for i in 0..n {
        store
            .create(Object::new(Kind::Agent, "ns", &format!("a{i:02}")))
            .await
            .expect("create");
    }
}

/// Each write prunes the event it pushed out of the retention window; a store started with a
/// smaller retention than before sweeps the events between the two windows when it connects.
#[tokio::test]
async fn writes_prune_events_outside_the_window_even_after_the_retention_shrank() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
    let wide = store_keeping(&db.url, 30).await;
    create_agents(&wide, 40).await;
    assert_eq!(
        retained_events(&pool).await,
        (30, Some(11)),
        "the last 30 of 40 writes"
    );
    wide.close().await;

    let narrow = store_keeping(&db.url, 5).await;
    assert_eq!(
        retained_events(&pool).await,
        (5, Some(36)),
        "swept on connect"
    );
    narrow
        .create(Object::new(Kind::Agent, "ns", "b00"))
        .await
        .expect("create");
    assert_eq!(retained_events(&pool).await, (5, Some(37)));
}

/// Stores with different retentions share a database: the events one store's writes left
/// below the narrower window are swept after a while of writes, not kept forever.
#[tokio::test]
async fn events_missed_by_the_bounded_prune_are_swept() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
    let narrow = store_keeping(&db.url, 5).await;
    let wide = store_keeping(&db.url, 100).await;
    create_agents(&wide, 40).await;
    let mut agent = narrow
        .create(Object::new(Kind::Agent, "ns", "b"))
        .await
        .expect("create");
    // Revision 41 pruned 21..=36; 1..=20 lie below every later write's range.
    assert_eq!(retained_events(&pool).await, (25, Some(1)));
    // They are still there, but the log has a hole after them: resuming from one is Gone, and
    // the marker says where the unbroken log starts.
    for store in [&narrow, &wide] {
        let resumed = store.watch(None, Some(10)).await.err().map(|e| e.kind());
        assert_eq!(resumed, Some(ErrorKind::Gone), "resuming below the window");
        assert!(
            store.watch(None, Some(36)).await.is_ok(),
            "resuming inside it"
        );
        let marker = store.change_marker(&[Kind::Agent]).await.expect("marker");
        assert_eq!(marker.map(|m| m.oldest_retained), Some(37));
    }
    // The narrow store's 1024th write sweeps them (in the background).
    for i in 1..1024 {
        agent.spec = json!({ "prompt": format!("version {i}") });
        agent = narrow.update(agent).await.expect("update");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (count, oldest) = retained_events(&pool).await;
        if count == 5 {
            assert_eq!(oldest, Some(1064 - 4), "the last five of 1064 writes");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events outside the window were not swept: {count} retained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Migration 0009: listeners keep only the highest revision notified, so a statement that inserts
/// several events notifies once, with its highest revision, and one that inserts none does not
/// notify at all.
#[tokio::test]
async fn an_event_statement_notifies_once_with_its_highest_revision() {
    let Some((_store, db)) = make(clock(), None).await else {
        return;
    };
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .expect("listener");
    listener.listen("orloj_store_events").await.expect("listen");
    let insert = |from: i64, to: i64| {
        sqlx::query(
            "INSERT INTO store_events (revision, kind, namespace, name, event_type, payload, \
             created_at) SELECT r, 'Agent', 'ns', 'a' || r, 'added', '{}'::jsonb, now() \
             FROM generate_series($1::bigint, $2::bigint) AS r",
        )
        .bind(from)
        .bind(to)
        .execute(&pool)
    };
    insert(1001, 1003)
        .await
        .expect("three events in one statement");
    insert(1005, 1004).await.expect("no event");
    insert(1004, 1004).await.expect("one event");
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), listener.recv())
            .await
            .expect("a notification within 5 s")
            .expect("the listener stays connected")
            .payload()
            .to_string()
    };
    // Per row, the first statement alone would have notified 1001, 1002 and 1003.
    assert_eq!(next().await, "1003");
    assert_eq!(next().await, "1004");
}

/// A claim round that times out after its statement was sent may still commit: the tasks are
/// then held by the worker without it knowing. Its next claim hands them out (up to what it
/// asks for), once each; before, they waited for their lease to run out.
#[tokio::test]
async fn claims_that_committed_after_their_round_timed_out_go_to_the_next_claim() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::connect(
        &db.url,
        PostgresOptions {
            operation_timeout: Duration::from_millis(300),
            ..options(None)
        },
        clock(),
    )
    .await
    .expect("connect");
    for name in ["a", "b"] {
        store
            .create(Object::new(Kind::Task, "ns", name))
            .await
            .expect("create");
    }
    let request = orloj_core::ClaimRequest {
        worker_id: "w1".into(),
        lease: Duration::from_secs(30),
        region: String::new(),
        gpu: false,
        supported_models: vec![],
        namespace: None,
    };
    // Holding the store revision lock keeps the claim's write waiting past the timeout.
    let mut blocker = store.pool().begin().await.expect("begin");
    sqlx::query("SELECT revision FROM store_revision FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .expect("lock the store revision");
    let timed_out = store.claim_tasks(&request, 2, None).await;
    assert!(
        timed_out.is_err(),
        "the claim waited on the lock: {timed_out:?}"
    );
    // Its write still waits: a claim meanwhile gets nothing and does not forget it.
    assert!(claimed_names(&store, &request, 2).await.is_empty());
    blocker.commit().await.expect("release the lock");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE claimed_by = 'w1'")
            .fetch_one(store.pool())
            .await
            .expect("count");
        if held == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the claim that timed out never committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let another = orloj_core::ClaimRequest {
        worker_id: "w2".into(),
        ..request.clone()
    };
    assert!(
        claimed_names(&store, &another, 2).await.is_empty(),
        "another worker gets none of them"
    );
    let mut handed_out = Vec::new();
    for _ in 0..2 {
        let got = claimed_names(&store, &request, 1).await;
        assert_eq!(got.len(), 1, "one task per claim of one: {got:?}");
        handed_out.extend(got);
    }
    handed_out.sort();
    assert_eq!(handed_out, ["a", "b"]);
    assert!(
        claimed_names(&store, &request, 2).await.is_empty(),
        "each is handed out once"
    );
}

/// The names of the tasks a claim of up to `max` for `request` got, each checked to be held
/// by its worker.
async fn claimed_names(
    store: &PostgresStore,
    request: &orloj_core::ClaimRequest,
    max: usize,
) -> Vec<String> {
    let claimed = store.claim_tasks(request, max, None).await.expect("claim");
    claimed
        .into_iter()
        .map(|(task, _)| {
            assert_eq!(task.status["claimedBy"], *request.worker_id);
            task.name().to_string()
        })
        .collect()
}
