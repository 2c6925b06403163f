//! The [`Store`] conformance suite (feature `test-util`): every case is a plain `async fn`
//! taking a fresh, empty store and the [`ManualClock`] it reads time from, and panicking on a
//! contract violation. [`store_conformance_tests!`](crate::store_conformance_tests) turns the
//! whole suite into one `#[tokio::test]` per case for an implementation:
//!
//! ```ignore
//! use std::sync::Arc;
//! use orloj_core::{ManualClock, Store};
//!
//! async fn make(clock: Arc<ManualClock>, retention: Option<usize>) -> Option<(Arc<dyn Store>, ())> {
//!     let store = orloj_store::MemoryStore::with_retention(clock, retention.unwrap_or(8192));
//!     Some((Arc::new(store), ()))
//! }
//! orloj_store::store_conformance_tests!(make);
//! ```
//!
//! The factory gets the clock and, for cases that need pruned history, the number of events the
//! store may retain at most ([`retention_for`]). It returns `None` to skip the case, or the store
//! plus a guard value kept alive until the case ends (e.g. one that drops a test database).

use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use orloj_core::resources::TaskStatus;
use orloj_core::{
    ChangeMarker, ClaimRequest, Clock, ErrorKind, Kind, LabelSelector, ListOptions, ManualClock,
    Object, Result, Store, WatchEvent, WatchEventType, task_queue,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The store under test.
pub type DynStore = Arc<dyn Store>;

/// Event retention the factory must honour for [`watch_gone_after_pruning`].
pub const SMALL_RETENTION: usize = 4;

/// The event retention a case needs (`None`: the store's default).
pub fn retention_for(case: &str) -> Option<usize> {
    matches!(
        case,
        "watch_gone_after_pruning" | "change_marker_sees_changes_whose_events_were_pruned"
    )
    .then_some(SMALL_RETENTION)
}

/// The clock every case starts from.
pub fn start_clock() -> ManualClock {
    ManualClock::new(start_time())
}

fn start_time() -> DateTime<Utc> {
    // A fixed instant with whole milliseconds, so timestamps compare exactly.
    Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5)
        .single()
        .expect("valid fixed time")
}

/// Generates one `#[tokio::test]` per conformance case. `$make` is an async function
/// `(Arc<ManualClock>, Option<usize>) -> Option<(Arc<dyn Store>, Guard)>`; see the module docs.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:path) => {
        $crate::store_conformance_tests!(@cases $make;
            ping_answers,
            create_and_get,
            create_conflicts,
            list_namespace_and_labels,
            list_pagination,
            update_with_stale_version_conflicts,
            generation_and_created_at,
            spec_writes_keep_status,
            upsert_creates_then_updates,
            update_status_keeps_spec,
            update_status_of_writes_only_the_current_version,
            typed_task_status_reads_back_as_json,
            delete_with_precondition,
            concurrent_updates_one_wins,
            concurrent_creates_one_wins,
            watch_orders_events,
            watch_resumes_from_revision,
            watch_filters_by_kind,
            watch_gone_for_future_revision,
            watch_gone_after_pruning,
            change_marker_follows_writes_of_its_kinds,
            change_marker_sees_changes_whose_events_were_pruned,
            claim_pending_task,
            claim_skips_templates_and_terminal,
            claim_waits_for_next_attempt,
            claim_matches_requirements,
            claim_oldest_first,
            claim_order_kept_by_status_writes_in_the_same_phase,
            claim_marker_covers_writes_before_the_claim,
            claim_tasks_takes_several_in_claim_order,
            lease_expiry_takeover,
            status_written_lease_decides_takeover,
            renew_by_owner_only,
            rejected_writes_leave_no_lock,
            claim_signal_follows_claimable_writes,
            release_makes_claimable,
            concurrent_claimers_never_share,
            concurrent_batch_claimers_never_share,
            task_logs_append_limit_delete,
            concurrent_task_logs_keep_their_order,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let clock = ::std::sync::Arc::new($crate::conformance::start_clock());
                let retention = $crate::conformance::retention_for(stringify!($case));
                let Some((store, _guard)) = $make(clock.clone(), retention).await else {
                    return;
                };
                $crate::conformance::$case(store, clock).await;
            }
        )*
    };
}

fn agent(ns: &str, name: &str) -> Object {
    let mut o = Object::new(Kind::Agent, ns, name);
    o.spec = json!({"model_ref": "gpt", "prompt": "hi"});
    o
}

fn task(ns: &str, name: &str) -> Object {
    let mut o = Object::new(Kind::Task, ns, name);
    o.spec = json!({"system": "sys", "input": {"q": "x"}});
    o
}

fn labelled(mut o: Object, labels: &[(&str, &str)]) -> Object {
    o.metadata.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    o
}

fn req(worker: &str) -> ClaimRequest {
    ClaimRequest {
        worker_id: worker.into(),
        lease: Duration::from_secs(30),
        region: "default".into(),
        gpu: false,
        supported_models: vec![],
        namespace: None,
    }
}

fn kind_of<T: std::fmt::Debug>(r: Result<T>) -> ErrorKind {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.kind(),
    }
}

fn names(list: &[Object]) -> Vec<String> {
    list.iter().map(Object::key).collect()
}

async fn list(store: &DynStore, kind: Kind, options: ListOptions) -> Vec<String> {
    names(&store.list(kind, &options).await.expect("list").items)
}

async fn next_event(stream: &mut BoxStream<'static, Result<WatchEvent>>) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch event within 10s")
        .expect("the watch stream stays open")
        .expect("a watch event, not an error")
}

async fn claim(store: &DynStore, worker: &str) -> Option<Object> {
    store.claim_task(&req(worker)).await.expect("claim")
}

/// `ping` succeeds on a healthy store.
pub async fn ping_answers(store: DynStore, _clock: Arc<ManualClock>) {
    store.ping().await.expect("ping");
    assert_eq!(store.current_revision().await.expect("revision"), 0);
}

/// Create sets version 1, generation 1, createdAt; get returns the same object.
pub async fn create_and_get(store: DynStore, clock: Arc<ManualClock>) {
    let created = store.create(agent("", "writer")).await.expect("create");
    assert_eq!(created.metadata.resource_version, "1");
    assert_eq!(created.metadata.generation, 1);
    assert_eq!(created.metadata.created_at, Some(clock.now_utc()));
    assert_eq!(created.metadata.namespace, "default");
    assert_eq!(created.spec, agent("", "writer").spec);
    let fetched = store
        .get(Kind::Agent, "default", "writer")
        .await
        .expect("get");
    assert_eq!(fetched, created);
    // An empty namespace means default.
    assert_eq!(
        store.get(Kind::Agent, "", "writer").await.expect("get"),
        created
    );
    assert_eq!(
        kind_of(store.get(Kind::Agent, "other", "writer").await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind_of(store.get(Kind::Tool, "default", "writer").await),
        ErrorKind::NotFound
    );
    // Other kinds and namespaces are separate key spaces.
    let tool = store
        .create(Object::new(Kind::Tool, "default", "writer"))
        .await
        .expect("same name, other kind");
    assert_eq!(tool.metadata.resource_version, "1");
    store
        .create(agent("other", "writer"))
        .await
        .expect("same name, other namespace");
}

/// A second create, or a create carrying a resourceVersion, is a Conflict that stores nothing.
pub async fn create_conflicts(store: DynStore, _clock: Arc<ManualClock>) {
    store.create(agent("ns", "a")).await.expect("create");
    let mut again = agent("ns", "a");
    again.spec = json!({"changed": true});
    assert_eq!(kind_of(store.create(again).await), ErrorKind::Conflict);
    assert_eq!(
        store.get(Kind::Agent, "ns", "a").await.expect("get").spec,
        agent("ns", "a").spec
    );

    let mut with_rv = agent("ns", "b");
    with_rv.metadata.resource_version = "5".into();
    assert_eq!(kind_of(store.create(with_rv).await), ErrorKind::Conflict);
    assert_eq!(
        kind_of(store.get(Kind::Agent, "ns", "b").await),
        ErrorKind::NotFound
    );

    let mut zero = agent("ns", "c");
    zero.metadata.resource_version = "0".into();
    let created = store.create(zero).await.expect("rv 0 is allowed");
    assert_eq!(created.metadata.resource_version, "1");
    assert_eq!(store.current_revision().await.expect("revision"), 2);
}

/// Lists are ordered by `namespace/name` and filter by namespace and label selector.
pub async fn list_namespace_and_labels(store: DynStore, _clock: Arc<ManualClock>) {
    store
        .create(labelled(agent("b", "x"), &[("team", "red"), ("tier", "1")]))
        .await
        .expect("create");
    store
        .create(labelled(agent("a", "y"), &[("team", "blue")]))
        .await
        .expect("create");
    store.create(agent("a", "x")).await.expect("create");
    store
        .create(labelled(agent("b", "a"), &[("team", "red")]))
        .await
        .expect("create");
    store.create(task("a", "t")).await.expect("other kind");

    let all = list(&store, Kind::Agent, ListOptions::default()).await;
    assert_eq!(all, ["a/x", "a/y", "b/a", "b/x"]);
    let only_b = ListOptions {
        namespace: Some("b".into()),
        ..Default::default()
    };
    assert_eq!(list(&store, Kind::Agent, only_b).await, ["b/a", "b/x"]);

    let sel = |s: &str| ListOptions {
        selector: LabelSelector::parse(s).expect("selector"),
        ..Default::default()
    };
    assert_eq!(
        list(&store, Kind::Agent, sel("team=red")).await,
        ["b/a", "b/x"]
    );
    assert_eq!(
        list(&store, Kind::Agent, sel("team=red,tier=1")).await,
        ["b/x"]
    );
    // != matches objects without the label too.
    assert_eq!(
        list(&store, Kind::Agent, sel("team!=red")).await,
        ["a/x", "a/y"]
    );
    assert!(
        list(&store, Kind::Agent, sel("team=red,team=blue"))
            .await
            .is_empty()
    );
    let ns_and_sel = ListOptions {
        namespace: Some("a".into()),
        selector: LabelSelector::parse("team=blue").expect("selector"),
        ..Default::default()
    };
    assert_eq!(list(&store, Kind::Agent, ns_and_sel).await, ["a/y"]);
    assert_eq!(
        list(&store, Kind::Task, ListOptions::default()).await,
        ["a/t"]
    );
    assert!(
        list(&store, Kind::Tool, ListOptions::default())
            .await
            .is_empty()
    );
}

/// `limit` cuts pages and sets `continue`; `after` resumes strictly after the cursor.
pub async fn list_pagination(store: DynStore, _clock: Arc<ManualClock>) {
    for name in ["e", "c", "a", "d", "b"] {
        store.create(agent("ns", name)).await.expect("create");
    }
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = store
            .list(
                Kind::Agent,
                &ListOptions {
                    limit: Some(2),
                    after: after.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect("list");
        pages += 1;
        assert!(page.items.len() <= 2);
        seen.extend(names(&page.items));
        match page.continue_token {
            Some(token) => {
                assert_eq!(Some(&token), seen.last(), "continue is the last key");
                after = Some(token);
            }
            None => break,
        }
        assert!(pages < 10, "pagination does not terminate");
    }
    assert_eq!(seen, ["ns/a", "ns/b", "ns/c", "ns/d", "ns/e"]);
    assert_eq!(pages, 3);

    let after_b = ListOptions {
        after: Some("ns/b".into()),
        ..Default::default()
    };
    assert_eq!(
        list(&store, Kind::Agent, after_b).await,
        ["ns/c", "ns/d", "ns/e"]
    );
    // A cursor between keys works too.
    let after_bb = ListOptions {
        after: Some("ns/bb".into()),
        limit: Some(1),
        ..Default::default()
    };
    let page = store.list(Kind::Agent, &after_bb).await.expect("list");
    assert_eq!(names(&page.items), ["ns/c"]);
    assert_eq!(page.continue_token.as_deref(), Some("ns/c"));
    // A short last page has no continue; limit 0 means no limit.
    let rest = store
        .list(
            Kind::Agent,
            &ListOptions {
                after: Some("ns/d".into()),
                limit: Some(5),
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(names(&rest.items), ["ns/e"]);
    assert_eq!(rest.continue_token, None);
    let unlimited = store
        .list(
            Kind::Agent,
            &ListOptions {
                limit: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(unlimited.items.len(), 5);
    assert_eq!(unlimited.continue_token, None);
}

/// An update with a stale resourceVersion is a Conflict and changes nothing.
pub async fn update_with_stale_version_conflicts(store: DynStore, _clock: Arc<ManualClock>) {
    let created = store.create(agent("ns", "a")).await.expect("create");
    let mut first = created.clone();
    first.spec = json!({"v": 1});
    let updated = store.update(first).await.expect("update with current rv");
    assert_eq!(updated.metadata.resource_version, "2");

    let mut stale = created.clone();
    stale.spec = json!({"v": 2});
    let err = store.update(stale).await.expect_err("stale rv");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.message().contains("expected=1") && err.message().contains("current=2"),
        "conflict message names both versions: {err}"
    );
    let now = store.get(Kind::Agent, "ns", "a").await.expect("get");
    assert_eq!(now, updated, "a failed update changes nothing");
    let revision = store.current_revision().await.expect("revision");

    // No resourceVersion: no precondition.
    let mut blind = agent("ns", "a");
    blind.spec = json!({"v": 3});
    assert_eq!(
        store
            .update(blind)
            .await
            .expect("update")
            .metadata
            .resource_version,
        "3"
    );
    assert_eq!(
        store.current_revision().await.expect("revision"),
        revision + 1
    );
    assert_eq!(
        kind_of(store.update(agent("ns", "missing")).await),
        ErrorKind::NotFound
    );
}

/// Generation moves only with the spec; createdAt never changes; labels are replaced.
pub async fn generation_and_created_at(store: DynStore, clock: Arc<ManualClock>) {
    let created = store.create(agent("ns", "a")).await.expect("create");
    let created_at = created.metadata.created_at;
    clock.advance(Duration::from_secs(60));

    let mut same = labelled(created.clone(), &[("k", "v")]);
    same.metadata.created_at = Some(clock.now_utc());
    let same = store.update(same).await.expect("update");
    assert_eq!(same.metadata.generation, 1, "same spec keeps generation");
    assert_eq!(same.metadata.resource_version, "2");
    assert_eq!(same.metadata.created_at, created_at);
    assert_eq!(same.metadata.labels.get("k").map(String::as_str), Some("v"));

    let mut changed = same.clone();
    changed.spec = json!({"model_ref": "other"});
    changed.metadata.labels.clear();
    let changed = store.update(changed).await.expect("update");
    assert_eq!(changed.metadata.generation, 2);
    assert_eq!(changed.metadata.resource_version, "3");
    assert_eq!(changed.metadata.created_at, created_at);
    assert!(changed.metadata.labels.is_empty());
    assert_eq!(
        store.get(Kind::Agent, "ns", "a").await.expect("get"),
        changed
    );
}

/// Spec writes keep the stored status, whatever status the caller sends.
pub async fn spec_writes_keep_status(store: DynStore, _clock: Arc<ManualClock>) {
    store.create(agent("ns", "a")).await.expect("create");
    let with_status = store
        .update_status(Kind::Agent, "ns", "a", None, json!({"phase": "Ready"}))
        .await
        .expect("status");
    let mut spec_write = with_status.clone();
    spec_write.status = json!({"phase": "Bogus"});
    spec_write.spec = json!({"v": 2});
    let updated = store.update(spec_write).await.expect("update");
    assert_eq!(updated.status, json!({"phase": "Ready"}));
    assert_eq!(updated.spec, json!({"v": 2}));

    let mut upsert = agent("ns", "a");
    upsert.status = json!({"phase": "Other"});
    let (upserted, created) = store.upsert(upsert).await.expect("upsert");
    assert!(!created);
    assert_eq!(upserted.status, json!({"phase": "Ready"}));
    assert_eq!(
        store.get(Kind::Agent, "ns", "a").await.expect("get").status,
        json!({"phase": "Ready"})
    );

    // A create ignores nothing: the initial status is stored as given.
    let mut fresh = agent("ns", "b");
    fresh.status = json!({"phase": "Pending"});
    let created = store.create(fresh).await.expect("create");
    assert_eq!(created.status, json!({"phase": "Pending"}));
}

/// Upsert creates (ignoring any resourceVersion), then updates without a precondition.
pub async fn upsert_creates_then_updates(store: DynStore, _clock: Arc<ManualClock>) {
    let mut new = agent("ns", "a");
    new.metadata.resource_version = "7".into();
    let (created, was_created) = store.upsert(new).await.expect("upsert");
    assert!(was_created);
    assert_eq!(created.metadata.resource_version, "1");
    assert_eq!(created.metadata.generation, 1);

    let mut again = agent("ns", "a");
    again.metadata.resource_version = "99".into();
    again.spec = json!({"v": 2});
    let (updated, was_created) = store.upsert(again).await.expect("upsert");
    assert!(!was_created);
    assert_eq!(updated.metadata.resource_version, "2");
    assert_eq!(updated.metadata.generation, 2);
    assert_eq!(updated.metadata.created_at, created.metadata.created_at);
    assert_eq!(
        store.get(Kind::Agent, "ns", "a").await.expect("get"),
        updated
    );
}

/// Status writes never touch spec or generation, and honour the precondition.
pub async fn update_status_keeps_spec(store: DynStore, _clock: Arc<ManualClock>) {
    let created = store.create(agent("ns", "a")).await.expect("create");
    let updated = store
        .update_status(Kind::Agent, "ns", "a", Some("1"), json!({"phase": "Ready"}))
        .await
        .expect("status");
    assert_eq!(updated.metadata.resource_version, "2");
    assert_eq!(updated.metadata.generation, 1);
    assert_eq!(updated.spec, created.spec);
    assert_eq!(updated.metadata.created_at, created.metadata.created_at);
    assert_eq!(updated.status, json!({"phase": "Ready"}));

    assert_eq!(
        kind_of(
            store
                .update_status(Kind::Agent, "ns", "a", Some("1"), json!({"phase": "X"}))
                .await
        ),
        ErrorKind::Conflict
    );
    assert_eq!(
        store.get(Kind::Agent, "ns", "a").await.expect("get"),
        updated
    );
    // An empty expected version is no precondition.
    let blind = store
        .update_status(Kind::Agent, "ns", "a", Some(""), json!({"phase": "Y"}))
        .await
        .expect("status");
    assert_eq!(blind.metadata.resource_version, "3");
    assert_eq!(
        kind_of(
            store
                .update_status(Kind::Agent, "ns", "missing", None, json!({}))
                .await
        ),
        ErrorKind::NotFound
    );
}

/// `update_status_of` writes under the given object's version: stale or gone objects change
/// nothing (no write, no event); concurrent writers of one version have one winner; a task's
/// lease written this way decides claims like any other status write.
pub async fn update_status_of_writes_only_the_current_version(
    store: DynStore,
    clock: Arc<ManualClock>,
) {
    let agent_v1 = store.create(agent("ns", "a")).await.expect("create");
    let agent_v2 = store
        .update_status_of(&agent_v1, json!({"phase": "Ready"}))
        .await
        .expect("status of current version");
    assert_eq!(agent_v2.metadata.resource_version, "2");
    assert_eq!(agent_v2.spec, agent_v1.spec);
    assert_eq!(agent_v2.metadata.generation, 1);
    assert_eq!(
        store.get(Kind::Agent, "ns", "a").await.expect("get"),
        *agent_v2
    );

    let revision = store.current_revision().await.expect("revision");
    assert_eq!(
        kind_of(
            store
                .update_status_of(&agent_v1, json!({"phase": "X"}))
                .await
        ),
        ErrorKind::Conflict,
        "a stale version conflicts"
    );
    assert_eq!(
        store.get(Kind::Agent, "ns", "a").await.expect("get"),
        *agent_v2,
        "a rejected write changes nothing"
    );
    assert_eq!(
        store.current_revision().await.expect("revision"),
        revision,
        "a rejected write records no event"
    );

    // Secrets too (a sealing store writes them through its own read path).
    let mut secret = Object::new(Kind::Secret, "ns", "s");
    secret.spec = json!({"data": {"token": "c2VjcmV0"}});
    let secret_v1 = store.create(secret).await.expect("create secret");
    let secret_v2 = store
        .update_status_of(&secret_v1, json!({"phase": "Ready"}))
        .await
        .expect("secret status");
    assert_eq!(
        secret_v2.spec, secret_v1.spec,
        "values read back as written"
    );
    assert_eq!(
        kind_of(
            store
                .update_status_of(&secret_v1, json!({"phase": "X"}))
                .await
        ),
        ErrorKind::Conflict
    );
    let revision = store.current_revision().await.expect("revision");

    let mut stream = store.watch(None, Some(revision)).await.expect("watch");
    let created = store.create(task("ns", "t")).await.expect("create");
    let lease = task_queue::format_time(clock.now() + chrono::Duration::seconds(30));
    let mut handles = Vec::new();
    for i in 0..6 {
        let store = store.clone();
        let created = created.clone();
        let status = json!({
            "phase": "Running", "claimedBy": format!("w{i}"), "assignedWorker": format!("w{i}"),
            "leaseUntil": lease, "attempts": 1
        });
        handles.push(tokio::spawn(async move {
            store.update_status_of(&created, status).await
        }));
    }
    let mut wins = Vec::new();
    for h in handles {
        match h.await.expect("join") {
            Ok(o) => wins.push(o),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
        }
    }
    assert_eq!(wins.len(), 1, "exactly one status write of a version wins");
    let stored = store.get(Kind::Task, "ns", "t").await.expect("get");
    assert_eq!(stored, *wins[0]);
    assert_eq!(next_event(&mut stream).await.object, created);
    let event = next_event(&mut stream).await;
    assert_eq!(event.event_type, WatchEventType::Updated);
    assert_eq!(event.object, stored);
    // The lease it wrote holds off other claimers.
    assert!(claim(&store, "other").await.is_none(), "lease is held");

    store
        .delete(Kind::Task, "ns", "t", None)
        .await
        .expect("delete");
    assert_eq!(
        kind_of(store.update_status_of(&stored, json!({})).await),
        ErrorKind::NotFound
    );

    // Created again under the same name, the object counts its versions from 1 again: a
    // writer holding the old object at the same version must not write over the new one.
    clock.advance(Duration::from_millis(5));
    let again = store.create(task("ns", "t")).await.expect("create again");
    let mut again = (*store
        .update_status_of(&again, json!({"phase": "Pending"}))
        .await
        .expect("status"))
    .clone();
    while again.metadata.resource_version != stored.metadata.resource_version {
        again = (*store
            .update_status_of(&again, json!({"phase": "Pending"}))
            .await
            .expect("status"))
        .clone();
    }
    assert_ne!(again.metadata.created_at, stored.metadata.created_at);
    assert_eq!(
        kind_of(
            store
                .update_status_of(&stored, json!({"phase": "Old"}))
                .await
        ),
        ErrorKind::Conflict,
        "the old incarnation at the same version conflicts"
    );
    assert_eq!(store.get(Kind::Task, "ns", "t").await.expect("get"), again);
}

/// `update_task_status_of` writes a typed task status under the given version: every read
/// (get, list, watch replay and live, claims, delete) sees it as the JSON it serializes to; the
/// returned object has the new version and an empty status; a stale version conflicts and
/// changes nothing; the written lease decides claims.
pub async fn typed_task_status_reads_back_as_json(store: DynStore, clock: Arc<ManualClock>) {
    let created = store.create(task("ns", "t")).await.expect("create");
    let revision = store.current_revision().await.expect("revision");
    let mut live = store.watch(Some(Kind::Task), None).await.expect("watch");
    let lease = clock.now() + chrono::Duration::seconds(30);
    let running = Arc::new(TaskStatus {
        phase: "Running".into(),
        claimed_by: "w1".into(),
        assigned_worker: "w1".into(),
        lease_until: task_queue::format_time(lease),
        attempts: 1,
        output: [("k".into(), "v".into())].into(),
        ..Default::default()
    });
    let written = store
        .update_task_status_of(&created, &running)
        .await
        .expect("typed status of the current version");
    assert_eq!(written.metadata.resource_version, "2");
    assert_eq!(written.spec, created.spec);
    assert_eq!(
        written.status,
        json!({}),
        "the returned object's status is left empty"
    );
    let as_json = serde_json::to_value(&*running).expect("status to JSON");
    let stored = store.get(Kind::Task, "ns", "t").await.expect("get");
    assert_eq!(stored.status, as_json);
    assert_eq!(stored.metadata.resource_version, "2");
    let listed = store
        .list(Kind::Task, &ListOptions::default())
        .await
        .expect("list");
    assert_eq!(listed.items, vec![stored.clone()]);
    assert_eq!(next_event(&mut live).await.object, stored);
    let mut replay = store
        .watch(Some(Kind::Task), Some(revision))
        .await
        .expect("watch from before the write");
    assert_eq!(next_event(&mut replay).await.object, stored);
    assert!(
        claim(&store, "w2").await.is_none(),
        "the typed lease is held"
    );

    // The next write starts from the returned object, as a worker's does.
    let mut next = (*running).clone();
    next.trace.push(Default::default());
    let next = Arc::new(next);
    let third = store
        .update_task_status_of(&written, &next)
        .await
        .expect("typed status of the returned version");
    assert_eq!(third.metadata.resource_version, "3");
    let revision = store.current_revision().await.expect("revision");
    assert_eq!(
        kind_of(store.update_task_status_of(&written, &running).await),
        ErrorKind::Conflict,
        "a stale version conflicts"
    );
    assert_eq!(
        kind_of(store.update_task_status_of(&stored, &running).await),
        ErrorKind::Conflict
    );
    assert_eq!(store.current_revision().await.expect("revision"), revision);
    let stored = store.get(Kind::Task, "ns", "t").await.expect("get");
    assert_eq!(
        stored.status,
        serde_json::to_value(&*next).expect("status to JSON"),
        "a rejected write changes nothing"
    );

    // Once the typed lease has run out, another worker takes the task with that status.
    clock.advance(Duration::from_secs(31));
    let taken = claim(&store, "w2")
        .await
        .expect("expired lease is claimable");
    assert_eq!(taken.status["claimedBy"], "w2");
    assert_eq!(taken.status["output"], json!({"k": "v"}));
    assert_eq!(taken.status["trace"].as_array().map(Vec::len), Some(1));

    // Deleted while its stored status is typed (and never read as JSON): the returned object
    // and the deletion event carry that status.
    let last = store
        .update_task_status_of(&taken, &next)
        .await
        .expect("typed status of the claimed version");
    let mut expected = (*last).clone();
    expected.status = serde_json::to_value(&*next).expect("status to JSON");
    let before = store.current_revision().await.expect("revision");
    let gone = store
        .delete(Kind::Task, "ns", "t", None)
        .await
        .expect("delete");
    assert_eq!(gone, expected);
    let mut deletion = store
        .watch(Some(Kind::Task), Some(before))
        .await
        .expect("watch from before the delete");
    let event = next_event(&mut deletion).await;
    assert_eq!(event.event_type, WatchEventType::Deleted);
    assert_eq!(event.object, expected);
    assert_eq!(
        kind_of(store.update_task_status_of(&last, &running).await),
        ErrorKind::NotFound
    );
}

/// Delete honours the precondition, returns the last state, and frees the name.
pub async fn delete_with_precondition(store: DynStore, _clock: Arc<ManualClock>) {
    store.create(agent("ns", "a")).await.expect("create");
    let updated = store
        .update_status(Kind::Agent, "ns", "a", None, json!({"phase": "Ready"}))
        .await
        .expect("status");
    assert_eq!(
        kind_of(store.delete(Kind::Agent, "ns", "a", Some("1")).await),
        ErrorKind::Conflict
    );
    assert_eq!(
        store
            .get(Kind::Agent, "ns", "a")
            .await
            .expect("still there"),
        updated
    );
    let deleted = store
        .delete(Kind::Agent, "ns", "a", Some("2"))
        .await
        .expect("delete");
    assert_eq!(deleted, updated);
    assert_eq!(
        kind_of(store.get(Kind::Agent, "ns", "a").await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind_of(store.delete(Kind::Agent, "ns", "a", None).await),
        ErrorKind::NotFound
    );
    assert!(
        list(&store, Kind::Agent, ListOptions::default())
            .await
            .is_empty()
    );
    let again = store.create(agent("ns", "a")).await.expect("re-create");
    assert_eq!(again.metadata.resource_version, "1");
}

/// Of concurrent writers expecting the same version exactly one wins.
pub async fn concurrent_updates_one_wins(store: DynStore, _clock: Arc<ManualClock>) {
    let created = store.create(agent("ns", "a")).await.expect("create");
    let mut handles = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let mut object = created.clone();
        object.spec = json!({"writer": i});
        handles.push(tokio::spawn(async move { store.update(object).await }));
    }
    let mut wins = Vec::new();
    for h in handles {
        match h.await.expect("join") {
            Ok(o) => wins.push(o),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
        }
    }
    assert_eq!(wins.len(), 1, "exactly one update wins");
    let stored = store.get(Kind::Agent, "ns", "a").await.expect("get");
    assert_eq!(stored, wins[0]);
    assert_eq!(stored.metadata.resource_version, "2");

    let mut handles = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store
                .update_status(Kind::Agent, "ns", "a", Some("2"), json!({"n": i}))
                .await
        }));
    }
    let mut ok = 0;
    for h in handles {
        match h.await.expect("join") {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
        }
    }
    assert_eq!(ok, 1, "exactly one status write wins");
    assert_eq!(
        store
            .get(Kind::Agent, "ns", "a")
            .await
            .expect("get")
            .metadata
            .resource_version,
        "3"
    );
}

/// Of concurrent creates of one name exactly one wins.
pub async fn concurrent_creates_one_wins(store: DynStore, _clock: Arc<ManualClock>) {
    let mut handles = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let mut object = agent("ns", "a");
        object.spec = json!({"writer": i});
        handles.push(tokio::spawn(async move { store.create(object).await }));
    }
    let mut wins = Vec::new();
    for h in handles {
        match h.await.expect("join") {
            Ok(o) => wins.push(o),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
        }
    }
    assert_eq!(wins.len(), 1);
    assert_eq!(
        store.get(Kind::Agent, "ns", "a").await.expect("get"),
        wins[0]
    );
    assert_eq!(store.current_revision().await.expect("revision"), 1);
}

/// A watch delivers added/updated/deleted in revision order, deletes with the last state.
pub async fn watch_orders_events(store: DynStore, _clock: Arc<ManualClock>) {
    store.create(agent("ns", "before")).await.expect("create");
    let mut stream = store.watch(None, None).await.expect("watch");
    let created = store.create(task("ns", "t")).await.expect("create");
    let mut spec = created.clone();
    spec.spec = json!({"system": "other"});
    let updated = store.update(spec).await.expect("update");
    let status = store
        .update_status(Kind::Task, "ns", "t", None, json!({"phase": "Pending"}))
        .await
        .expect("status");
    let deleted = store
        .delete(Kind::Task, "ns", "t", None)
        .await
        .expect("delete");

    let expected = [
        (WatchEventType::Added, &created),
        (WatchEventType::Updated, &updated),
        (WatchEventType::Updated, &status),
        (WatchEventType::Deleted, &deleted),
    ];
    let mut previous = 1;
    for (event_type, object) in expected {
        let event = next_event(&mut stream).await;
        assert_eq!(event.event_type, event_type);
        assert_eq!(&event.object, object);
        assert_eq!(event.revision, previous + 1, "revisions are consecutive");
        previous = event.revision;
    }
    assert_eq!(deleted.status, json!({"phase": "Pending"}));
    assert_eq!(store.current_revision().await.expect("revision"), previous);
}

/// A watch resumed after a revision replays exactly the later events, then continues live.
pub async fn watch_resumes_from_revision(store: DynStore, _clock: Arc<ManualClock>) {
    store.create(agent("ns", "a")).await.expect("create");
    store.create(agent("ns", "b")).await.expect("create");
    let resume = store.current_revision().await.expect("revision");
    store.create(agent("ns", "c")).await.expect("create");
    store
        .delete(Kind::Agent, "ns", "a", None)
        .await
        .expect("delete");

    let mut stream = store.watch(None, Some(resume)).await.expect("watch");
    let first = next_event(&mut stream).await;
    assert_eq!(first.revision, resume + 1);
    assert_eq!(first.object.key(), "ns/c");
    assert_eq!(first.event_type, WatchEventType::Added);
    let second = next_event(&mut stream).await;
    assert_eq!(second.revision, resume + 2);
    assert_eq!(second.event_type, WatchEventType::Deleted);
    assert_eq!(second.object.key(), "ns/a");

    store.create(agent("ns", "d")).await.expect("create");
    let live = next_event(&mut stream).await;
    assert_eq!(live.revision, resume + 3);
    assert_eq!(live.object.key(), "ns/d");

    // Resuming from the current revision replays nothing and continues live.
    let current = store.current_revision().await.expect("revision");
    let mut from_now = store.watch(None, Some(current)).await.expect("watch");
    store.create(agent("ns", "e")).await.expect("create");
    assert_eq!(next_event(&mut from_now).await.object.key(), "ns/e");
    // From 0 replays everything retained.
    let mut from_zero = store.watch(None, Some(0)).await.expect("watch");
    assert_eq!(next_event(&mut from_zero).await.revision, 1);
}

/// A watch of one kind sees only that kind.
pub async fn watch_filters_by_kind(store: DynStore, _clock: Arc<ManualClock>) {
    let mut tasks = store.watch(Some(Kind::Task), Some(0)).await.expect("watch");
    for i in 0..5 {
        store
            .create(agent("ns", &format!("a{i}")))
            .await
            .expect("create");
    }
    store.create(task("ns", "t1")).await.expect("create");
    store.create(agent("ns", "z")).await.expect("create");
    store.create(task("ns", "t2")).await.expect("create");
    let first = next_event(&mut tasks).await;
    assert_eq!(
        (first.object.kind, first.object.key()),
        (Kind::Task, "ns/t1".into())
    );
    assert_eq!(first.revision, 6);
    let second = next_event(&mut tasks).await;
    assert_eq!(second.object.key(), "ns/t2");
    assert_eq!(second.revision, 8);
}

/// Resuming after a revision that does not exist yet is Gone.
pub async fn watch_gone_for_future_revision(store: DynStore, _clock: Arc<ManualClock>) {
    store.create(agent("ns", "a")).await.expect("create");
    assert_eq!(
        kind_of(store.watch(None, Some(5)).await.map(|_| ())),
        ErrorKind::Gone
    );
    let _stream = store
        .watch(None, Some(1))
        .await
        .expect("the current revision is fine");
}

/// Resuming after a pruned revision is Gone (the factory keeps [`SMALL_RETENTION`] events).
pub async fn watch_gone_after_pruning(store: DynStore, _clock: Arc<ManualClock>) {
    for i in 0..20 {
        store
            .create(agent("ns", &format!("a{i:02}")))
            .await
            .expect("create");
    }
    assert_eq!(
        kind_of(store.watch(None, Some(1)).await.map(|_| ())),
        ErrorKind::Gone
    );
    assert_eq!(
        kind_of(store.watch(Some(Kind::Agent), Some(0)).await.map(|_| ())),
        ErrorKind::Gone
    );
    let current = store.current_revision().await.expect("revision");
    let recent = current - (SMALL_RETENTION as u64 - 1);
    let mut stream = store
        .watch(None, Some(recent))
        .await
        .expect("recent is retained");
    assert_eq!(next_event(&mut stream).await.revision, recent + 1);
}

async fn marker(store: &DynStore, kinds: &[Kind]) -> ChangeMarker {
    store
        .change_marker(kinds)
        .await
        .expect("change marker")
        .expect("this store tells changes apart")
}

/// A change marker moves with every write (create, status, spec, delete) to its kinds, and with
/// nothing else: writes to other kinds and rejected writes leave it unchanged.
pub async fn change_marker_follows_writes_of_its_kinds(store: DynStore, _clock: Arc<ManualClock>) {
    let config = [Kind::Agent, Kind::AgentSystem];
    let empty = marker(&store, &config).await;
    let created = store.create(agent("ns", "a")).await.expect("create");
    let m1 = marker(&store, &config).await;
    assert!(!m1.unchanged_since(&empty), "create: {empty:?} -> {m1:?}");

    store.create(task("ns", "t")).await.expect("create task");
    store
        .update_status(Kind::Task, "ns", "t", None, json!({"phase": "Pending"}))
        .await
        .expect("task status");
    assert_eq!(
        kind_of(store.create(agent("ns", "a")).await),
        ErrorKind::Conflict
    );
    let m2 = marker(&store, &config).await;
    assert!(m2.unchanged_since(&m1), "other kinds: {m1:?} -> {m2:?}");
    assert!(
        !marker(&store, &[Kind::Task]).await.unchanged_since(&m1),
        "a marker of Task sees the task writes"
    );

    store
        .update_status(Kind::Agent, "ns", "a", None, json!({"phase": "Ready"}))
        .await
        .expect("agent status");
    let m3 = marker(&store, &config).await;
    assert!(!m3.unchanged_since(&m2), "status: {m2:?} -> {m3:?}");

    let mut changed = created.clone();
    changed.spec = json!({"model_ref": "other", "prompt": "hi"});
    changed.metadata.resource_version = String::new();
    store.update(changed).await.expect("update");
    let m4 = marker(&store, &config).await;
    assert!(!m4.unchanged_since(&m3), "spec: {m3:?} -> {m4:?}");

    let mut system = Object::new(Kind::AgentSystem, "other", "s");
    system.spec = json!({"agents": ["a"]});
    store.create(system).await.expect("create system");
    let m5 = marker(&store, &config).await;
    assert!(!m5.unchanged_since(&m4), "second kind: {m4:?} -> {m5:?}");

    store
        .delete(Kind::Agent, "ns", "a", None)
        .await
        .expect("delete");
    let m6 = marker(&store, &config).await;
    assert!(!m6.unchanged_since(&m5), "delete: {m5:?} -> {m6:?}");
    assert!(marker(&store, &config).await.unchanged_since(&m6));
}

/// A change whose record the store has since dropped (the factory keeps [`SMALL_RETENTION`]
/// events) still counts as a change.
pub async fn change_marker_sees_changes_whose_events_were_pruned(
    store: DynStore,
    _clock: Arc<ManualClock>,
) {
    // No agent event before, none retained after: only the dropped history tells.
    let before = marker(&store, &[Kind::Agent]).await;
    store.create(agent("ns", "a")).await.expect("create");
    for i in 0..(SMALL_RETENTION * 3) {
        store
            .create(task("ns", &format!("t{i}")))
            .await
            .expect("create task");
    }
    let after = marker(&store, &[Kind::Agent]).await;
    assert!(
        !after.unchanged_since(&before),
        "the agent changed: {before:?} -> {after:?}"
    );
}

/// A pending task is claimed: Running, holder, lease, attempts, startedAt.
pub async fn claim_pending_task(store: DynStore, clock: Arc<ManualClock>) {
    let created = store.create(task("ns", "t")).await.expect("create");
    let claimed = claim(&store, "w1").await.expect("a claimable task");
    let now = clock.now_utc();
    assert_eq!(claimed.key(), "ns/t");
    assert_eq!(claimed.phase(), "Running");
    assert_eq!(claimed.status["claimedBy"], json!("w1"));
    assert_eq!(claimed.status["assignedWorker"], json!("w1"));
    assert_eq!(claimed.status["attempts"], json!(1));
    assert_eq!(
        claimed.status["leaseUntil"],
        json!(orloj_core::task_queue::format_time(
            now + chrono::Duration::seconds(30)
        ))
    );
    assert_eq!(
        claimed.status["startedAt"],
        json!(orloj_core::task_queue::format_time(now))
    );
    assert_eq!(claimed.metadata.resource_version, "2");
    assert_eq!(claimed.spec, created.spec);
    assert_eq!(claimed.metadata.generation, 1);
    assert_eq!(
        store.get(Kind::Task, "ns", "t").await.expect("get"),
        claimed
    );
    assert!(
        claim(&store, "w2").await.is_none(),
        "a held task is not claimable"
    );
    assert!(
        claim(&store, "w1").await.is_none(),
        "not even by its holder"
    );
}

/// Templates and tasks in other phases are never claimed.
pub async fn claim_skips_templates_and_terminal(store: DynStore, _clock: Arc<ManualClock>) {
    let mut template = task("ns", "template");
    template.spec["mode"] = json!("template");
    store.create(template).await.expect("create");
    let mut upper = task("ns", "template2");
    upper.spec["mode"] = json!("Template");
    store.create(upper).await.expect("create");
    for (name, phase) in [
        ("done", "Succeeded"),
        ("failed", "Failed"),
        ("dl", "DeadLetter"),
        ("wait", "WaitingApproval"),
    ] {
        store.create(task("ns", name)).await.expect("create");
        store
            .update_status(Kind::Task, "ns", name, None, json!({"phase": phase}))
            .await
            .expect("status");
    }
    assert!(claim(&store, "w").await.is_none());
    let mut explicit = task("ns", "pending");
    explicit.status = json!({"phase": "Pending"});
    store.create(explicit).await.expect("create");
    assert_eq!(claim(&store, "w").await.expect("claim").key(), "ns/pending");
}

/// A task whose nextAttemptAt is in the future waits until then.
pub async fn claim_waits_for_next_attempt(store: DynStore, clock: Arc<ManualClock>) {
    store.create(task("ns", "t")).await.expect("create");
    let later = clock.now_utc() + chrono::Duration::seconds(10);
    store
        .update_status(
            Kind::Task,
            "ns",
            "t",
            None,
            json!({"phase": "Pending", "nextAttemptAt": orloj_core::task_queue::format_time(later), "attempts": 1}),
        )
        .await
        .expect("status");
    assert!(claim(&store, "w").await.is_none());
    clock.advance(Duration::from_secs(9));
    assert!(claim(&store, "w").await.is_none());
    clock.advance(Duration::from_secs(1));
    let claimed = claim(&store, "w").await.expect("due now");
    assert_eq!(claimed.status["attempts"], json!(2));
    assert!(claimed.status.get("nextAttemptAt").is_none());
}

/// Region, gpu, model, namespace and assignedWorker decide which worker may claim.
pub async fn claim_matches_requirements(store: DynStore, _clock: Arc<ManualClock>) {
    let mut t = task("ns", "eu-gpu");
    t.spec["requirements"] = json!({"region": "EU", "gpu": true, "model": "GPT-4o"});
    store.create(t).await.expect("create");

    let mut worker = req("w");
    assert!(
        store.claim_task(&worker).await.expect("claim").is_none(),
        "region"
    );
    worker.region = "eu".into();
    assert!(
        store.claim_task(&worker).await.expect("claim").is_none(),
        "gpu"
    );
    worker.gpu = true;
    worker.supported_models = vec!["llama3".into()];
    assert!(
        store.claim_task(&worker).await.expect("claim").is_none(),
        "model"
    );
    worker.supported_models = vec!["llama3".into(), " gpt-4o ".into()];
    worker.namespace = Some("other".into());
    assert!(
        store.claim_task(&worker).await.expect("claim").is_none(),
        "namespace"
    );
    worker.namespace = Some("ns".into());
    assert_eq!(
        store
            .claim_task(&worker)
            .await
            .expect("claim")
            .expect("matches")
            .key(),
        "ns/eu-gpu"
    );

    // A pending task pinned to a worker waits for that worker.
    let mut pinned = task("ns", "pinned");
    pinned.status = json!({"assignedWorker": "W-2"});
    store.create(pinned).await.expect("create");
    assert!(claim(&store, "w-1").await.is_none());
    assert_eq!(
        claim(&store, "w-2").await.expect("pinned").key(),
        "ns/pinned"
    );

    // No requirements: any worker, and an empty model list means any model.
    let mut any_model = task("ns", "model");
    any_model.spec["requirements"] = json!({"model": "x"});
    store.create(any_model).await.expect("create");
    assert_eq!(
        claim(&store, "w-3").await.expect("any model").key(),
        "ns/model"
    );
}

/// The least recently written claimable task goes first.
pub async fn claim_oldest_first(store: DynStore, clock: Arc<ManualClock>) {
    for name in ["c", "a", "b"] {
        store.create(task("ns", name)).await.expect("create");
        clock.advance(Duration::from_millis(1));
    }
    // Touching "c" moves it to the back.
    store
        .update_status(Kind::Task, "ns", "c", None, json!({"phase": "Pending"}))
        .await
        .expect("status");
    let order: Vec<String> = [
        claim(&store, "w").await,
        claim(&store, "w").await,
        claim(&store, "w").await,
    ]
    .into_iter()
    .map(|t| t.expect("claim").key())
    .collect();
    assert_eq!(order, ["ns/a", "ns/b", "ns/c"]);
}

/// A status write that keeps a task's phase (an agent step, a lease renewal) keeps its place
/// in the claim order; a phase change moves it to the back (`claim_oldest_first`).
pub async fn claim_order_kept_by_status_writes_in_the_same_phase(
    store: DynStore,
    clock: Arc<ManualClock>,
) {
    for name in ["a", "b"] {
        store.create(task("ns", name)).await.expect("create");
        clock.advance(Duration::from_millis(1));
    }
    store
        .update_status(Kind::Task, "ns", "a", None, json!({"note": "same phase"}))
        .await
        .expect("status");
    let first = claim(&store, "w").await.expect("claim");
    assert_eq!(first.key(), "ns/a");
}

/// The marker a claim returns covers every write committed before the task could be claimed:
/// an agent written before the task's creation is a change since a marker taken before it, and
/// nothing of the kind written after the claim is.
pub async fn claim_marker_covers_writes_before_the_claim(
    store: DynStore,
    _clock: Arc<ManualClock>,
) {
    let kinds = [Kind::Agent];
    let before = store.change_marker(&kinds).await.expect("marker");
    store.create(agent("ns", "a")).await.expect("agent");
    store.create(task("ns", "t")).await.expect("task");
    let (claimed, marker) = store
        .claim_task_marked(&req("w"), &kinds)
        .await
        .expect("claim")
        .expect("a claimable task");
    assert_eq!(claimed.key(), "ns/t");
    assert_eq!(claimed.status["claimedBy"], json!("w"));
    match (before, marker) {
        (Some(before), Some(marker)) => {
            assert!(
                !marker.unchanged_since(&before),
                "the agent written before the task is before the claim's marker"
            );
            let after = store
                .change_marker(&kinds)
                .await
                .expect("marker")
                .expect("a store with markers");
            assert!(after.unchanged_since(&marker), "no agent written since");
        }
        // A store that cannot tell changes apart.
        (None, None) => {}
        other => panic!("markers from the same store disagree: {other:?}"),
    }
    assert!(
        store
            .claim_task_marked(&req("w"), &kinds)
            .await
            .expect("claim")
            .is_none(),
        "nothing left to claim"
    );
}

/// `claim_tasks` claims up to the number asked for, oldest first, only tasks the worker
/// matches, each as `claim_task` would; fewer (then none) when fewer are claimable. Markers
/// come with every task when asked for and the store keeps them, from one snapshot per write.
pub async fn claim_tasks_takes_several_in_claim_order(store: DynStore, clock: Arc<ManualClock>) {
    for name in ["d", "b", "elsewhere", "a", "c"] {
        let mut t = task("ns", name);
        if name == "elsewhere" {
            t.spec["requirements"] = json!({"region": "eu"});
        }
        store.create(t).await.expect("create");
        clock.advance(Duration::from_millis(1));
    }
    let kinds = [Kind::Agent];
    let first = store
        .claim_tasks(&req("w"), 3, Some(&kinds))
        .await
        .expect("claim");
    let keys: Vec<String> = first.iter().map(|(t, _)| t.key()).collect();
    assert_eq!(keys, ["ns/d", "ns/b", "ns/a"]);
    let expected = store.change_marker(&kinds).await.expect("marker");
    // No agent was written: a marker (when the store keeps them) is unchanged since now.
    for (_, marker) in &first {
        match (marker, expected) {
            (Some(m), Some(now)) => assert!(now.unchanged_since(m), "{m:?} vs {now:?}"),
            (None, None) => {}
            other => panic!("markers from the same store disagree: {other:?}"),
        }
    }
    for (t, _) in &first {
        assert_eq!(t.phase(), "Running");
        assert_eq!(t.status["claimedBy"], json!("w"));
        assert_eq!(t.status["attempts"], json!(1));
        let stored = store.get(Kind::Task, "ns", t.name()).await.expect("get");
        assert_eq!(
            stored.metadata.resource_version,
            t.metadata.resource_version
        );
        assert_eq!(stored.status["claimedBy"], json!("w"));
    }
    // One matching task is left: fewer than asked for, without markers when not asked.
    let rest = store.claim_tasks(&req("w"), 10, None).await.expect("claim");
    let keys: Vec<String> = rest.iter().map(|(t, _)| t.key()).collect();
    assert_eq!(keys, ["ns/c"]);
    assert!(rest.iter().all(|(_, m)| m.is_none()));
    assert!(
        store
            .claim_tasks(&req("w"), 10, None)
            .await
            .expect("claim")
            .is_empty(),
        "the task for region eu is not for this worker"
    );
    let elsewhere = store.get(Kind::Task, "ns", "elsewhere").await.expect("get");
    assert_ne!(elsewhere.phase(), "Running");
    assert_eq!(elsewhere.status.get("claimedBy"), None);
    assert!(
        store
            .claim_tasks(&req("w"), 0, None)
            .await
            .expect("claim")
            .is_empty()
    );
}

/// An expired lease is taken over: new holder, history entry, attempts unchanged; the old
/// holder can no longer renew or release.
pub async fn lease_expiry_takeover(store: DynStore, clock: Arc<ManualClock>) {
    store.create(task("ns", "t")).await.expect("create");
    claim(&store, "w1").await.expect("claim");
    clock.advance(Duration::from_secs(29));
    assert!(claim(&store, "w2").await.is_none(), "lease still valid");
    clock.advance(Duration::from_secs(1));
    let taken = claim(&store, "w2").await.expect("takeover at expiry");
    assert_eq!(taken.status["claimedBy"], json!("w2"));
    assert_eq!(
        taken.status["attempts"],
        json!(1),
        "a takeover is not a new attempt"
    );
    let history = taken.status["history"].as_array().expect("history");
    let last = history.last().expect("an entry");
    assert_eq!(last["type"], json!("takeover"));
    assert_eq!(last["previous_worker"], json!("w1"));
    assert_eq!(last["worker"], json!("w2"));
    assert!(
        taken.status["lastError"]
            .as_str()
            .is_some_and(|m| m.contains("w1")),
        "lastError names the previous holder"
    );
    assert_eq!(
        kind_of(
            store
                .renew_task_lease("ns", "t", "w1", Duration::from_secs(30))
                .await
        ),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind_of(store.release_task("ns", "t", "w1").await),
        ErrorKind::Conflict
    );
    assert_eq!(store.get(Kind::Task, "ns", "t").await.expect("get"), taken);
}

/// A lease written through `update_status` (a crashed worker's record, or the load tool's
/// fault injection) is what claims check: valid → nobody claims the task, even the worker it is
/// assigned to; expired → any fitting worker takes it over although it is assigned elsewhere.
pub async fn status_written_lease_decides_takeover(store: DynStore, clock: Arc<ManualClock>) {
    let created = store.create(task("ns", "t")).await.expect("create");
    let now = clock.now();
    let at = |secs: i64| task_queue::format_time(now + chrono::Duration::seconds(secs));
    let running = |lease: String| {
        json!({
            "phase": "Running", "attempts": 1, "claimedBy": "dead", "assignedWorker": "dead",
            "leaseUntil": lease, "lastHeartbeat": at(-30),
            "history": [{"type": "failure_injection", "worker": "dead"}]
        })
    };
    let held = store
        .update_status(
            Kind::Task,
            "ns",
            "t",
            Some(&created.metadata.resource_version),
            running(at(15)),
        )
        .await
        .expect("status");
    assert!(claim(&store, "w").await.is_none(), "lease still valid");
    assert!(
        claim(&store, "dead").await.is_none(),
        "holder does not re-claim a valid lease"
    );
    store
        .update_status(
            Kind::Task,
            "ns",
            "t",
            Some(&held.metadata.resource_version),
            running(at(-15)),
        )
        .await
        .expect("status");
    let taken = claim(&store, "w")
        .await
        .expect("takeover of an expired lease");
    assert_eq!(taken.status["claimedBy"], json!("w"));
    assert_eq!(taken.status["assignedWorker"], json!("w"));
    assert_eq!(taken.status["attempts"], json!(1));
    let types: Vec<&str> = taken.status["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["type"].as_str())
        .collect();
    assert_eq!(types, vec!["failure_injection", "takeover"]);
}

/// Only the holder renews; renewal extends the lease and keeps the task from being taken.
pub async fn renew_by_owner_only(store: DynStore, clock: Arc<ManualClock>) {
    store.create(task("ns", "t")).await.expect("create");
    assert_eq!(
        kind_of(
            store
                .renew_task_lease("ns", "t", "w1", Duration::from_secs(30))
                .await
        ),
        ErrorKind::Conflict,
        "a pending task has no holder"
    );
    let claimed = claim(&store, "w1").await.expect("claim");
    clock.advance(Duration::from_secs(20));
    let renewed = store
        .renew_task_lease("ns", "t", "w1", Duration::from_secs(30))
        .await
        .expect("renew");
    let now = clock.now_utc();
    assert_eq!(
        renewed.status["leaseUntil"],
        json!(orloj_core::task_queue::format_time(
            now + chrono::Duration::seconds(30)
        ))
    );
    assert_eq!(
        renewed.status["lastHeartbeat"],
        json!(orloj_core::task_queue::format_time(now))
    );
    assert_eq!(
        renewed.metadata.resource_version_number(),
        claimed.metadata.resource_version_number() + 1
    );
    clock.advance(Duration::from_secs(20));
    assert!(
        claim(&store, "w2").await.is_none(),
        "the renewed lease holds"
    );
    assert_eq!(
        kind_of(
            store
                .renew_task_lease("ns", "t", "w2", Duration::from_secs(30))
                .await
        ),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind_of(
            store
                .renew_task_lease("ns", "missing", "w1", Duration::from_secs(30))
                .await
        ),
        ErrorKind::NotFound
    );
}

/// A rejected write leaves nothing behind: the task is claimable right after it. (A
/// transaction that is dropped instead of rolled back keeps its row lock for a while, and a
/// claim skips locked rows.)
pub async fn rejected_writes_leave_no_lock(store: DynStore, _clock: Arc<ManualClock>) {
    for round in 0..100 {
        let name = format!("t{round}");
        let created = store.create(task("ns", &name)).await.expect("create");
        let stale = Some("99");
        let rejected = match round % 5 {
            0 => {
                store
                    .renew_task_lease("ns", &name, "w1", Duration::from_secs(30))
                    .await
            }
            1 => store.release_task("ns", &name, "w1").await,
            2 => {
                let mut update = created.clone();
                update.metadata.resource_version = "99".into();
                store.update(update).await
            }
            3 => {
                store
                    .update_status(Kind::Task, "ns", &name, stale, json!({"phase": "Failed"}))
                    .await
            }
            _ => store.delete(Kind::Task, "ns", &name, stale).await,
        };
        assert_eq!(kind_of(rejected), ErrorKind::Conflict, "round {round}");
        let claimed = claim(&store, "w1").await.unwrap_or_else(|| {
            panic!("round {round}: the task is claimable after a rejected write")
        });
        assert_eq!(claimed.name(), name);
    }
}

/// The claim signal, when the store has one, fires after writes that make a task claimable at
/// once (create, release) and stays quiet for the others (a claim, a template).
pub async fn claim_signal_follows_claimable_writes(store: DynStore, _clock: Arc<ManualClock>) {
    let Some(mut signal) = store.claim_signal() else {
        return;
    };
    async fn wake(signal: &mut BoxStream<'static, ()>, within: Duration) -> bool {
        matches!(
            tokio::time::timeout(within, signal.next()).await,
            Ok(Some(()))
        )
    }
    // A store that listens in the background (Postgres) signals once when listening starts
    // (whatever came before is looked at then): let that pass first.
    let _ = wake(&mut signal, Duration::from_secs(1)).await;
    while wake(&mut signal, Duration::from_millis(300)).await {}

    store.create(task("ns", "t")).await.expect("create");
    assert!(
        wake(&mut signal, Duration::from_secs(5)).await,
        "a created task signals"
    );
    claim(&store, "w1").await.expect("claim");
    let mut template = task("ns", "template");
    template.spec["mode"] = json!("template");
    store.create(template).await.expect("create template");
    assert!(
        !wake(&mut signal, Duration::from_millis(300)).await,
        "neither a claim nor a template signals"
    );
    store.release_task("ns", "t", "w1").await.expect("release");
    assert!(
        wake(&mut signal, Duration::from_secs(5)).await,
        "a released task signals"
    );
}

/// A released task is claimable at once by another worker.
pub async fn release_makes_claimable(store: DynStore, _clock: Arc<ManualClock>) {
    store.create(task("ns", "t")).await.expect("create");
    claim(&store, "w1").await.expect("claim");
    assert_eq!(
        kind_of(store.release_task("ns", "t", "w2").await),
        ErrorKind::Conflict
    );
    let released = store.release_task("ns", "t", "w1").await.expect("release");
    assert_eq!(released.status["claimedBy"], json!(""));
    assert!(released.status.get("leaseUntil").is_none());
    assert_eq!(released.phase(), "Running");
    let taken = claim(&store, "w2").await.expect("claimable at once");
    assert_eq!(taken.status["claimedBy"], json!("w2"));
    assert_eq!(taken.status["attempts"], json!(1));
    let last = taken.status["history"]
        .as_array()
        .and_then(|h| h.last())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(last["type"], json!("takeover"));
    assert_eq!(last["previous_worker"], json!(""));
}

/// Concurrent claimers never get the same task, and together claim every task.
pub async fn concurrent_claimers_never_share(store: DynStore, _clock: Arc<ManualClock>) {
    claimers_never_share(store, 1).await;
}

/// [`concurrent_claimers_never_share`] with claims of several tasks at once.
pub async fn concurrent_batch_claimers_never_share(store: DynStore, _clock: Arc<ManualClock>) {
    claimers_never_share(store, 3).await;
}

/// Four claimers, each claiming up to `per_claim` tasks at a time.
async fn claimers_never_share(store: DynStore, per_claim: usize) {
    const TASKS: usize = 20;
    for i in 0..TASKS {
        store
            .create(task("ns", &format!("t{i:02}")))
            .await
            .expect("create");
    }
    let claimed = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        let claimed = claimed.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut idle = 0;
            while claimed.load(Ordering::SeqCst) < TASKS && idle < 500 {
                let worker = req(&format!("w{w}"));
                let got: Vec<Object> = if per_claim == 1 {
                    store
                        .claim_task(&worker)
                        .await
                        .expect("claim")
                        .into_iter()
                        .collect()
                } else {
                    let got = store
                        .claim_tasks(&worker, per_claim, None)
                        .await
                        .expect("claim");
                    assert!(got.len() <= per_claim, "{} claimed at once", got.len());
                    got.into_iter().map(|(t, _)| t).collect()
                };
                // Another claimer may hold the remaining rows for a moment.
                if got.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                for t in got {
                    assert_eq!(t.status["claimedBy"], json!(format!("w{w}")));
                    claimed.fetch_add(1, Ordering::SeqCst);
                    mine.push(t.key());
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("join"));
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "a task was claimed twice: {all:?}"
    );
    assert_eq!(all.len(), TASKS);
    for t in store
        .list(Kind::Task, &ListOptions::default())
        .await
        .expect("list")
        .items
    {
        assert_eq!(t.phase(), "Running");
        assert_eq!(t.status["attempts"], json!(1));
    }
}

/// Task logs append in order, return the latest `limit`, and go away with the task.
pub async fn task_logs_append_limit_delete(store: DynStore, _clock: Arc<ManualClock>) {
    store.create(task("ns", "t")).await.expect("create");
    store.create(task("ns", "other")).await.expect("create");
    assert!(
        store
            .task_logs("ns", "t", 10)
            .await
            .expect("logs")
            .is_empty()
    );
    for i in 0..5 {
        store
            .append_task_log("ns", "t", &format!("line {i}"))
            .await
            .expect("append");
    }
    store
        .append_task_log("ns", "other", "elsewhere")
        .await
        .expect("append");
    assert_eq!(
        store.task_logs("ns", "t", 3).await.expect("logs"),
        ["line 2", "line 3", "line 4"]
    );
    assert_eq!(store.task_logs("ns", "t", 10).await.expect("logs").len(), 5);
    assert_eq!(
        kind_of(store.append_task_log("ns", "missing", "x").await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind_of(store.task_logs("ns", "missing", 10).await),
        ErrorKind::NotFound
    );
    let revision = store.current_revision().await.expect("revision");
    assert_eq!(revision, 2, "log lines are not resource writes");

    store
        .delete(Kind::Task, "ns", "t", None)
        .await
        .expect("delete");
    assert_eq!(
        kind_of(store.task_logs("ns", "t", 10).await),
        ErrorKind::NotFound
    );
    store.create(task("ns", "t")).await.expect("re-create");
    assert!(
        store
            .task_logs("ns", "t", 10)
            .await
            .expect("logs")
            .is_empty()
    );
    assert_eq!(
        store.task_logs("ns", "other", 10).await.expect("logs"),
        ["elsewhere"]
    );
}

/// Log lines of many tasks appended at once: each task's lines stay complete and in order, and
/// a line for a task that does not exist fails alone (whether or not the store writes lines
/// together).
pub async fn concurrent_task_logs_keep_their_order(store: DynStore, _clock: Arc<ManualClock>) {
    let names: Vec<String> = (0..12).map(|i| format!("t{i:02}")).collect();
    for name in &names {
        store.create(task("ns", name)).await.expect("create");
    }
    let lines = 8;
    for round in ["with a missing task", "all present"] {
        let writers = names.iter().map(|name| {
            let store = store.clone();
            async move {
                for i in 0..lines {
                    store
                        .append_task_log("ns", name, &format!("{round} {i}"))
                        .await
                        .map_err(|e| format!("{name} line {i}: {e}"))?;
                }
                Ok::<_, String>(())
            }
        });
        let missing = async {
            if round == "with a missing task" {
                for i in 0..lines {
                    let appended = store
                        .append_task_log("ns", "missing", &format!("{i}"))
                        .await;
                    assert_eq!(kind_of(appended), ErrorKind::NotFound, "line {i}");
                }
            }
        };
        let (appended, ()) = tokio::join!(futures::future::join_all(writers), missing);
        for result in appended {
            result.expect("every present task's lines are appended");
        }
    }
    for name in &names {
        let expected: Vec<String> = ["with a missing task", "all present"]
            .iter()
            .flat_map(|round| (0..lines).map(move |i| format!("{round} {i}")))
            .collect();
        assert_eq!(
            store.task_logs("ns", name, 100).await.expect("logs"),
            expected,
            "the lines of {name}"
        );
    }
}

/// `ManualClock::now` under the name the cases use.
trait NowUtc {
    fn now_utc(&self) -> DateTime<Utc>;
}

impl NowUtc for ManualClock {
    fn now_utc(&self) -> DateTime<Utc> {
        orloj_core::Clock::now(self)
    }
}
