//! SQL text. Table names come from [`Kind::table`] (constants), never from input; everything
//! else is a bind parameter.

use orloj_core::Kind;
use sqlx::AssertSqlSafe;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// The NOTIFY channel the `store_events` trigger publishes revisions on.
pub(crate) const EVENTS_CHANNEL: &str = "orloj_store_events";

/// The NOTIFY channel the `tasks` trigger (migration 0005) signals claimable tasks on.
pub(crate) const CLAIMABLE_CHANNEL: &str = "orloj_task_claimable";

/// Statements for one kind's table.
pub(crate) struct KindSql {
    pub get: Arc<str>,
    pub lock: Arc<str>,
    pub list: Arc<str>,
    pub insert: Arc<str>,
    pub update: Arc<str>,
    /// `update` only while the stored resourceVersion and createdAt (jsonb) are the last two
    /// parameters ($19, $20 for tasks; $8, $9 otherwise); no row when they are not. createdAt
    /// tells apart an object deleted and created again under the same name, whose versions
    /// start again at 1.
    pub update_if_version: Arc<str>,
    /// `update` of an object whose spec is unchanged (a status write): for tasks, spec_hash
    /// is left as it is.
    pub update_status: Arc<str>,
    /// `update_if_version` of an object whose spec is unchanged.
    pub update_status_if_version: Arc<str>,
    /// `update_status_if_version` that also returns the [`CHANGE_MARKER`] columns of the kinds
    /// in the parameter after the version guard's ($21 for tasks, $10 otherwise), read in the
    /// statement's snapshot.
    pub update_status_if_version_marked: Arc<str>,
    pub delete: Arc<str>,
}

/// The task columns the store computes from the object it writes, in parameter order from $8
/// (`task_columns` in the store binds them; the claim query filters on them).
pub(crate) const TASK_COLUMNS: [&str; 11] = [
    "lease_until",
    "next_attempt_at",
    "status_phase",
    "system_ref",
    "mode",
    "priority",
    "assigned_worker",
    "claimed_by",
    "req_region",
    "req_gpu",
    "req_model",
];

/// Wraps a statement for `sqlx::query`; sqlx caches the prepared statement per connection.
pub(crate) fn q(sql: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(Arc::clone(sql))
}

/// The tail of every write statement, after the CTE `w` that writes the row (returning what the
/// event carries as `payload`): bumps the store revision, records the event and prunes events
/// older than the retention window ($7), then selects `returning` (the new revision, and
/// whatever else the statement's snapshot should read). Parameters shared by every write: $1
/// key, $2 payload, $3 now, $4 kind, $5 namespace, $6 name, $7 retention. Tasks add
/// [`TASK_COLUMNS`] as $8 to $18 (not for a delete).
///
/// The revision is taken last (migration 0007): the `store_revision` row lock orders all
/// writers until they commit, and `rev` runs only once `w` has returned its row (its condition
/// reads `w`), so writers queue on it for the event insert and the commit, not for the row
/// write. No row written (a version guard that did not hold): no revision, no event.
fn write_tail(event_type: &str, event_payload: &str, returning: &str) -> String {
    // A bounded range (the event this write pushes out of the window and the few before it),
    // so the index scan is short whatever lies below: deleted events stay in the index as dead
    // entries until vacuum, and an ordered scan of "the oldest few" walked all of them on every
    // write (pgbench, prepared, 12 KB task: 2,900 → 5,500 status writes/s on one connection).
    // Events the range misses (the retention shrank, or stores with different retentions share
    // the database) are swept by `CATCH_UP`. An unbounded `revision <= bound` is no answer: its
    // bound comes from `rev`, unknown when planning, and is planned as a sequential scan once
    // the table is large (5-8 ms per write at 10,000 retained events).
    format!(
        "rev AS (UPDATE store_revision SET revision = revision + 1, \
                     pruned_through = greatest(pruned_through, revision + 1 - $7) \
                 WHERE EXISTS (SELECT 1 FROM w) RETURNING revision), \
         pruned AS (DELETE FROM store_events \
             WHERE revision <= (SELECT revision FROM rev) - $7 \
               AND revision > (SELECT revision FROM rev) - $7 - {PRUNE_RANGE}), \
         ev AS (INSERT INTO store_events (revision, kind, namespace, name, event_type, payload, created_at) \
                SELECT rev.revision, $4, $5, $6, '{event_type}', {event_payload}, $3 FROM rev, w) \
         SELECT {returning} FROM rev"
    )
}

/// How many revisions below the retention window each write's prune covers. Writes bump the
/// revision by one, so one would do for a single store; the slack covers stores sharing the
/// database whose revisions interleave.
const PRUNE_RANGE: i64 = 16;

/// Raises `pruned_through` (migration 0008) to a retention window of $1 events and deletes up
/// to $2 of the oldest events at or below it (the ones the writes' bounded prune missed),
/// returning how many it deleted.
pub(crate) const CATCH_UP: &str = "WITH f AS ( \
        UPDATE store_revision SET pruned_through = greatest(pruned_through, revision - $1) \
        RETURNING pruned_through), \
    d AS (DELETE FROM store_events WHERE revision IN ( \
        SELECT revision FROM store_events WHERE revision <= (SELECT pruned_through FROM f) \
        ORDER BY revision LIMIT $2) RETURNING 1) \
    SELECT count(*) FROM d";

/// A write statement: `guard` (empty, or a CTE named `cur`, text ending in `, `), then `write`
/// (an INSERT or UPDATE of the row, returning its `payload`), then [`write_tail`] with the
/// payload the write returned. Taking the payload from the write instead of $2 again
/// measurably shortens a task step's write (pgbench, 9 KB task: 0.41 → 0.36 ms).
fn write_statement(guard: &str, write: &str, event_type: &str) -> String {
    write_statement_returning(guard, write, event_type, "revision")
}

/// [`write_statement`] selecting `returning` at the end (see [`write_tail`]).
fn write_statement_returning(
    guard: &str,
    write: &str,
    event_type: &str,
    returning: &str,
) -> String {
    format!(
        "WITH {guard}w AS ({write}), {}",
        write_tail(event_type, "w.payload", returning)
    )
}

/// The next value of the rows' write order (migration 0007), the claim order of tasks.
const NEXT_WRITE_ORDER: &str = "nextval('orloj_write_order')";

fn build(kind: Kind) -> KindSql {
    let t = kind.table();
    let task = kind == Kind::Task;
    // Migration 0006: the store sets what used to be generated from the payload. A status
    // write leaves spec_hash alone: its spec is unchanged, and hashing it costs more than the
    // rest of the column updates together.
    let hash = "orloj_spec_hash($2::jsonb -> 'spec')";
    let vals: Vec<String> = (8..)
        .take(if task { TASK_COLUMNS.len() } else { 0 })
        .map(|n| format!("${n}"))
        .collect();
    let set_columns = TASK_COLUMNS
        .iter()
        .zip(&vals)
        .map(|(c, v)| format!(", {c} = {v}"))
        .collect::<String>();
    let (task_cols, task_vals, task_set, status_set) = if task {
        (
            format!(", namespace, spec_hash, {}", TASK_COLUMNS.join(", ")),
            format!(", $5, {hash}, {}", vals.join(", ")),
            format!(", namespace = $5, spec_hash = {hash}{set_columns}"),
            format!(", namespace = $5{set_columns}"),
        )
    } else {
        Default::default()
    };
    let first_guard = if task { 8 + TASK_COLUMNS.len() } else { 8 };
    let (version_param, created_param) =
        (format!("${first_guard}"), format!("${}", first_guard + 1));
    // The row lock comes first, as in a locked read followed by an update; a concurrent
    // writer's commit makes the lock re-check the version. NO KEY UPDATE, the lock the update
    // takes anyway: the key share a log line's foreign key check takes does not wait for it.
    let version_guard = format!(
        "cur AS (SELECT name FROM {t} WHERE name = $1 \
         AND payload -> 'metadata' ->> 'resourceVersion' = {version_param} \
         AND coalesce(payload -> 'metadata' -> 'createdAt', 'null'::jsonb) = {created_param}::jsonb \
         FOR NO KEY UPDATE), "
    );
    // A task's status write that keeps its phase (an agent step, a lease renewal) keeps its
    // place in the claim order: a task that is running is not claimable while its lease holds,
    // and with no indexed column changed the update can be HOT (no new index entries). A phase
    // change (claimed, retried, finished) moves it to the back, as any spec write does.
    let status_order = match TASK_COLUMNS.iter().position(|c| *c == "status_phase") {
        Some(i) if task => format!(
            "CASE WHEN status_phase = ${} THEN write_order ELSE {NEXT_WRITE_ORDER} END",
            8 + i
        ),
        _ => NEXT_WRITE_ORDER.to_string(),
    };
    let update_set = |set: &str, order: &str, guarded: bool| {
        let guard = if guarded {
            " AND EXISTS (SELECT 1 FROM cur)"
        } else {
            ""
        };
        format!(
            "UPDATE {t} SET payload = $2, write_order = {order}, updated_at = $3{set} \
             WHERE name = $1{guard} RETURNING payload"
        )
    };
    let s = |text: String| -> Arc<str> { Arc::from(text) };
    KindSql {
        get: s(format!("SELECT payload FROM {t} WHERE name = $1")),
        lock: s(format!(
            "SELECT payload FROM {t} WHERE name = $1 FOR UPDATE"
        )),
        // $1 namespace, $2 after, $3 label objects that must be contained, $4 label objects that
        // must not be, $5 limit (NULL = all).
        list: s(format!(
            "SELECT payload FROM {t} \
             WHERE ($1::text IS NULL OR namespace = $1) \
               AND ($2::text IS NULL OR name > $2) \
               AND coalesce(payload -> 'metadata' -> 'labels', '{{}}'::jsonb) @> ALL($3::jsonb[]) \
               AND NOT (coalesce(payload -> 'metadata' -> 'labels', '{{}}'::jsonb) @> ANY($4::jsonb[])) \
             ORDER BY name LIMIT $5"
        )),
        insert: s(write_statement(
            "",
            &format!(
                "INSERT INTO {t} (name, payload, write_order, created_at, updated_at{task_cols}) \
                 VALUES ($1, $2, {NEXT_WRITE_ORDER}, $3, $3{task_vals}) RETURNING payload"
            ),
            "added",
        )),
        update: s(write_statement(
            "",
            &update_set(&task_set, NEXT_WRITE_ORDER, false),
            "updated",
        )),
        update_if_version: s(write_statement(
            &version_guard,
            &update_set(&task_set, NEXT_WRITE_ORDER, true),
            "updated",
        )),
        update_status: s(write_statement(
            "",
            &update_set(&status_set, &status_order, false),
            "updated",
        )),
        update_status_if_version_marked: s(write_statement_returning(
            &version_guard,
            &update_set(&status_set, &status_order, true),
            "updated",
            &format!(
                "revision, {}",
                marker_columns(&format!("${}", first_guard + 2))
            ),
        )),
        update_status_if_version: s(write_statement(
            &version_guard,
            &update_set(&status_set, &status_order, true),
            "updated",
        )),
        // The event carries the object as read under the row lock ($2).
        delete: s(format!(
            "WITH w AS (DELETE FROM {t} WHERE name = $1 RETURNING 1), {}",
            write_tail("deleted", "$2", "revision")
        )),
    }
}

static KIND_SQL: LazyLock<HashMap<Kind, KindSql>> =
    LazyLock::new(|| Kind::ALL.iter().map(|k| (*k, build(*k))).collect());

/// The statements for `kind`.
pub(crate) fn for_kind(kind: Kind) -> &'static KindSql {
    // Every kind is in the map: it is built from Kind::ALL.
    &KIND_SQL[&kind]
}

/// Up to $8 claim candidates, oldest first (spec §5.3), with the worker hints applied in SQL
/// so the rows usually fit. $1 now, $2 namespace (NULL = any), $3 region (lowercased), $4 has
/// gpu, $5 supported models (lowercased; empty = any), $6 worker id (lowercased), $7 keys to
/// skip. Rows a write in flight has locked are skipped.
pub(crate) const CLAIM_CANDIDATES: &str = "SELECT payload FROM tasks \
    WHERE mode <> 'template' \
      AND status_phase IN ('', 'pending', 'running') \
      AND ((status_phase IN ('', 'pending') AND (next_attempt_at IS NULL OR next_attempt_at <= $1)) \
        OR (status_phase = 'running' AND (claimed_by = '' OR lease_until IS NULL OR lease_until <= $1))) \
      AND ($2::text IS NULL OR namespace = $2) \
      AND (req_region = '' OR req_region = $3) \
      AND (NOT req_gpu OR $4) \
      AND (req_model = '' OR cardinality($5::text[]) = 0 OR req_model = ANY($5)) \
      AND (status_phase = 'running' OR assigned_worker = '' OR lower(assigned_worker) = $6) \
      AND name <> ALL($7::text[]) \
    ORDER BY write_order \
    LIMIT $8 \
    FOR UPDATE SKIP LOCKED";

/// The oldest retained revision, from the `store_revision` row (migration 0008): a column, not
/// `min(revision)` of the events, which walks every pruned event vacuum has not removed yet.
const OLDEST_RETAINED: &str = "pruned_through + 1";

/// The current revision and the oldest retained one.
pub(crate) static HEAD: LazyLock<Arc<str>> = LazyLock::new(|| {
    Arc::from(format!(
        "SELECT revision, {OLDEST_RETAINED} FROM store_revision"
    ))
});

/// A page of events after $1 (of kind $2, NULL = all, at most $3), with the head it was read
/// at; one statement, so head and events come from the same snapshot.
pub(crate) static EVENTS: LazyLock<Arc<str>> = LazyLock::new(|| {
    Arc::from(format!(
        "SELECT h.current, h.oldest, e.revision, e.event_type, e.payload \
         FROM (SELECT revision AS current, {OLDEST_RETAINED} AS oldest FROM store_revision) h \
         LEFT JOIN LATERAL ( \
             SELECT revision, event_type, payload FROM store_events \
             WHERE revision > $1 AND revision <= h.current AND ($2::text IS NULL OR kind = $2) \
             ORDER BY revision LIMIT $3 \
         ) e ON TRUE \
         ORDER BY e.revision"
    ))
});

/// The columns of a [`ChangeMarker`](orloj_core::ChangeMarker): the current revision, the
/// oldest retained revision and the latest retained event of the kinds in the
/// text array parameter `kinds` (NULL when none). Each kind's latest is one backward step on
/// `idx_store_events_kind`.
fn marker_columns(kinds: &str) -> String {
    format!(
        "(SELECT revision FROM store_revision), \
         (SELECT {OLDEST_RETAINED} FROM store_revision), \
         (SELECT max(m.latest) FROM unnest({kinds}::text[]) AS k(kind) \
            CROSS JOIN LATERAL (SELECT max(e.revision) AS latest FROM store_events e \
                                WHERE e.kind = k.kind) m)"
    )
}

/// A [`ChangeMarker`](orloj_core::ChangeMarker) of the kinds in $1, from one snapshot.
pub(crate) static CHANGE_MARKER: LazyLock<Arc<str>> =
    LazyLock::new(|| Arc::from(format!("SELECT {}", marker_columns("$1"))));

/// Appends a log line: $1 task key, $2 entry, $3 now.
pub(crate) const APPEND_LOG: &str =
    "INSERT INTO task_logs (task_name, entry, created_at) VALUES ($1, $2, $3)";

/// Appends several log lines, in their order: $1 task keys, $2 entries, $3 times.
pub(crate) const APPEND_LOG_BATCH: &str = "INSERT INTO task_logs (task_name, entry, created_at) \
    SELECT k, e, t FROM unnest($1::text[], $2::text[], $3::timestamptz[]) \
    WITH ORDINALITY AS l(k, e, t, ord) ORDER BY ord";

/// The latest $2 log lines of task $1, oldest first.
pub(crate) const TASK_LOGS: &str = "SELECT entry FROM \
    (SELECT id, entry FROM task_logs WHERE task_name = $1 ORDER BY id DESC LIMIT $2) l \
    ORDER BY id";

/// The tasks named in $1 (text array of keys).
pub(crate) const TASKS_NAMED: &str = "SELECT payload FROM tasks WHERE name = ANY($1::text[])";

/// Whether task $1 exists.
pub(crate) const TASK_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM tasks WHERE name = $1)";

/// The SQL array type of each of [`TASK_COLUMNS`].
fn task_column_type(column: &str) -> &'static str {
    match column {
        "lease_until" | "next_attempt_at" => "timestamptz",
        "req_gpu" => "bool",
        _ => "text",
    }
}

/// A statement writing several tasks (the store's task batchers): `writes`, CTEs over the input
/// rows `i` that end in `w` (the written rows: `ord, namespace, name, written_at, payload`),
/// then one store revision bump for all of them and an event each, numbered in input order.
/// Parameters are arrays with one element per write: $1 keys, $2 payloads, $3 times, $4
/// namespaces, $5 names, $6 to $16 [`TASK_COLUMNS`], then `extra` (name, element type), then
/// the event retention. Returns the 1-based position of each input row that was written.
fn task_batch(extra: &[(&str, &str)], writes: &str, event_type: &str) -> Arc<str> {
    task_batch_returning(extra, writes, event_type, "")
}

/// [`task_batch`] selecting `returning` (text starting with `, `) after each written row's
/// position; a parameter after the retention's is `${retention + 1}` there.
fn task_batch_returning(
    extra: &[(&str, &str)],
    writes: &str,
    event_type: &str,
    returning: &str,
) -> Arc<str> {
    let columns = TASK_COLUMNS.join(", ");
    let mut params = TASK_COLUMNS
        .iter()
        .enumerate()
        .map(|(n, c)| format!(", ${}::{}[]", n + 6, task_column_type(c)))
        .collect::<String>();
    let mut names = String::new();
    for (n, (name, ty)) in extra.iter().enumerate() {
        params.push_str(&format!(", ${}::{ty}[]", 6 + TASK_COLUMNS.len() + n));
        names.push_str(&format!(", {name}"));
    }
    let retention = 6 + TASK_COLUMNS.len() + extra.len();
    Arc::from(format!(
        "WITH i AS (SELECT * FROM unnest($1::text[], $2::jsonb[], $3::timestamptz[], $4::text[], \
                    $5::text[]{params}) \
                WITH ORDINALITY AS i(key, payload, written_at, namespace, name, {columns}{names}, \
                                     ord)), \
         {writes}, \
         n AS (SELECT count(*) AS written FROM w), \
         rev AS (UPDATE store_revision SET revision = revision + (SELECT written FROM n), \
                     pruned_through = greatest(pruned_through, \
                                               revision + (SELECT written FROM n) - ${retention}) \
                 WHERE EXISTS (SELECT 1 FROM w) RETURNING revision), \
         numbered AS (SELECT w.*, rev.revision - (SELECT written FROM n) \
                                  + row_number() OVER (ORDER BY w.ord) AS revision \
                      FROM w, rev), \
         pruned AS (DELETE FROM store_events \
             WHERE revision <= (SELECT revision FROM rev) - ${retention} \
               AND revision > (SELECT revision FROM rev) - ${retention} \
                              - (SELECT written FROM n) - {PRUNE_RANGE}), \
         ev AS (INSERT INTO store_events (revision, kind, namespace, name, event_type, payload, created_at) \
                SELECT revision, '{task}', namespace, name, '{event_type}', payload, written_at \
                FROM numbered) \
         SELECT ord{returning} FROM w",
        task = Kind::Task.as_str(),
    ))
}

/// Version-guarded status writes of several tasks ([`task_batch`]): the
/// `update_status_if_version` of each input row. Extra parameters: $17 expected
/// resourceVersions, $18 expected createdAt (jsonb); $19 the retention.
///
/// Each input's task is looked up by its key (an index scan per input: a join let the planner
/// hash the whole table on the version in the document, reading every task's document on every
/// batch) and locked, in key order, so two batches cannot deadlock on each other. Two inputs
/// for one task that both expect its version (a race) update it once, and the other is not
/// returned.
pub(crate) static TASK_STATUS_BATCH: LazyLock<Arc<str>> =
    LazyLock::new(|| status_batch_returning(""));

/// [`TASK_STATUS_BATCH`] for claims: each written row also comes with the [`CHANGE_MARKER`]
/// columns of the kinds in $20 (text array), read in the statement's snapshot, taken after
/// the candidates were read.
pub(crate) static TASK_CLAIM_BATCH: LazyLock<Arc<str>> = LazyLock::new(|| {
    let kinds = format!("${}", 6 + TASK_COLUMNS.len() + 2 + 1);
    status_batch_returning(&format!(", {}", marker_columns(&kinds)))
});

fn status_batch_returning(returning: &str) -> Arc<str> {
    let set_columns = TASK_COLUMNS
        .iter()
        .map(|c| format!(", {c} = i.{c}"))
        .collect::<String>();
    task_batch_returning(
        &[("version", "text"), ("created", "jsonb")],
        &format!(
            "cur AS (SELECT i.ord FROM (SELECT ord, key, version, created FROM i ORDER BY key) i \
                     CROSS JOIN LATERAL (SELECT 1 FROM tasks t WHERE t.name = i.key \
                       AND t.payload -> 'metadata' ->> 'resourceVersion' = i.version \
                       AND coalesce(t.payload -> 'metadata' -> 'createdAt', 'null'::jsonb) \
                           = i.created \
                       FOR NO KEY UPDATE) t), \
             w AS (UPDATE tasks t SET payload = i.payload, \
                     write_order = CASE WHEN t.status_phase = i.status_phase THEN t.write_order \
                                        ELSE {NEXT_WRITE_ORDER} END, \
                     updated_at = i.written_at, namespace = i.namespace{set_columns} \
                   FROM i JOIN cur ON cur.ord = i.ord WHERE t.name = i.key \
                   RETURNING i.ord, i.namespace, i.name, i.written_at, t.payload)"
        ),
        "updated",
        returning,
    )
}

/// Creates of several tasks ([`task_batch`]): the `insert` of each input row; $17 is the
/// retention. A task that exists already is not written (not returned). The keys must differ.
pub(crate) static TASK_CREATE_BATCH: LazyLock<Arc<str>> = LazyLock::new(|| {
    let columns = TASK_COLUMNS.join(", ");
    task_batch(
        &[],
        &format!(
            "ins AS (INSERT INTO tasks (name, payload, write_order, created_at, updated_at, \
                                        namespace, spec_hash, {columns}) \
                     SELECT key, payload, {NEXT_WRITE_ORDER}, written_at, written_at, namespace, \
                            orloj_spec_hash(payload -> 'spec'), {columns} \
                     FROM i ORDER BY ord \
                     ON CONFLICT (name) DO NOTHING RETURNING name, payload), \
             w AS (SELECT i.ord, i.namespace, i.name, i.written_at, ins.payload \
                   FROM ins JOIN i ON i.key = ins.name)"
        ),
        "added",
    )
});
