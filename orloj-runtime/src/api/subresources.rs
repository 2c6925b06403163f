//! Sub-resources: `/status`, tool-approval decisions, task logs/messages/metrics, agent logs and
//! memory entries.

use super::compat;
use super::error::{ApiError, ApiResult};
use super::request::{
    Precondition, decode_value, item_namespace, non_negative_param, positive_param, publish_object,
    query_namespace, shown,
};
use super::routes::Ctx;
use axum::Json;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use orloj_core::{ErrorKind, Kind};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

/// Most task log lines returned.
const MAX_TASK_LOGS: usize = 500;
/// How often an approval decision is retried on a concurrent status write.
const DECISION_ATTEMPTS: usize = 5;
/// Message lifecycle phases, in the order reports list them.
const PHASES: [&str; 5] = [
    "queued",
    "running",
    "retrypending",
    "succeeded",
    "deadletter",
];

/// `GET /v1/<plural>/{name}/status` → `{"metadata": …, "status": …}`.
pub(crate) async fn get_status(ctx: Ctx) -> ApiResult<Response> {
    let ns = item_namespace(&ctx.query);
    let object = shown(ctx.state.store.get(ctx.kind, &ns, &ctx.name).await?);
    Ok(Json(json!({"metadata": object.metadata, "status": object.status})).into_response())
}

/// `PUT /v1/<plural>/{name}/status` with `{"metadata":{"resourceVersion":"N"},"status":{…}}`.
pub(crate) async fn put_status(ctx: Ctx) -> ApiResult<Response> {
    let body = decode_value(&ctx.body)?;
    let Some(body) = body.as_object() else {
        return Err(ApiError::invalid("request body must be an object"));
    };
    let metadata = body.get("metadata").and_then(Value::as_object);
    let body_rv = match metadata.and_then(|m| m.get("resourceVersion")) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(ApiError::invalid(
                "metadata.resourceVersion must be a string",
            ));
        }
    };
    let body_ns = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let ns = match (body_ns, query_namespace(&ctx.query)) {
        (Some(b), Some(q)) if b != q => {
            return Err(ApiError::invalid(format!(
                "metadata.namespace {b:?} does not match ?namespace={q:?}"
            )));
        }
        (Some(b), _) => b.to_string(),
        (None, _) => item_namespace(&ctx.query),
    };
    let Some(status) = body.get("status").cloned() else {
        return Err(ApiError::invalid("request body must contain status"));
    };
    let precondition = Precondition::required(&ctx.headers, &body_rv)?;
    let current = ctx.state.store.get(ctx.kind, &ns, &ctx.name).await?;
    let expected = precondition.expected(&current)?;
    let mut status = compat::normalize_status(ctx.kind, status)?;
    if let Some(map) = status.as_object_mut() {
        let observed = map.get("observedGeneration").and_then(Value::as_i64);
        if observed.unwrap_or(0) == 0 {
            map.insert(
                "observedGeneration".into(),
                json!(current.metadata.generation),
            );
        }
    }
    let updated = shown(
        ctx.state
            .store
            .update_status(ctx.kind, &ns, &ctx.name, Some(&expected), status)
            .await?,
    );
    publish_object(&ctx, "status", &updated);
    Ok(Json(updated.to_value()).into_response())
}

fn optional_string(body: &Map<String, Value>, field: &str) -> ApiResult<String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.trim().to_string()),
        Some(_) => Err(ApiError::invalid(format!("{field} must be a string"))),
    }
}

/// `POST /v1/tool-approvals/{name}/approve|deny`.
pub(crate) async fn decide(ctx: Ctx, approve: bool) -> ApiResult<Response> {
    let body = if ctx.body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match decode_value(&ctx.body)? {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            _ => return Err(ApiError::invalid("request body must be an object")),
        }
    };
    let decided_by = optional_string(&body, "decided_by")?;
    let mut comment = optional_string(&body, "comment")?;
    if comment.is_empty() {
        comment = optional_string(&body, "reason")?;
    }
    let (phase, decision, action) = if approve {
        ("Approved", "approved", "approved")
    } else {
        ("Denied", "denied", "denied")
    };
    let ns = item_namespace(&ctx.query);
    for _ in 0..DECISION_ATTEMPTS {
        let current = ctx.state.store.get(ctx.kind, &ns, &ctx.name).await?;
        let current_phase = current.phase();
        if !(current_phase.is_empty() || current_phase == "Pending") {
            return Err(ApiError::conflict(format!(
                "{} {ns}/{} is {current_phase}, not Pending",
                ctx.kind, ctx.name
            )));
        }
        let mut status = current.status.as_object().cloned().unwrap_or_default();
        status.insert("phase".into(), json!(phase));
        status.insert("decision".into(), json!(decision));
        status.insert("decided_by".into(), json!(decided_by));
        status.insert(
            "decided_at".into(),
            json!(
                ctx.state
                    .clock
                    .now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        );
        if !comment.is_empty() {
            status.insert("comment".into(), json!(comment));
        }
        let status = compat::normalize_status(ctx.kind, Value::Object(status))?;
        match ctx
            .state
            .store
            .update_status(
                ctx.kind,
                &ns,
                &ctx.name,
                Some(&current.metadata.resource_version),
                status,
            )
            .await
        {
            Ok(updated) => {
                let updated = shown(updated);
                publish_object(&ctx, action, &updated);
                return Ok(Json(updated.to_value()).into_response());
            }
            Err(e) if e.kind() == ErrorKind::Conflict => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(format!(
        "{} {ns}/{}: decision not recorded after {DECISION_ATTEMPTS} attempts (concurrent updates)",
        ctx.kind, ctx.name
    )))
}

/// `GET /v1/tasks/{name}/logs` → `{"name", "logs": [...]}` (latest 500).
pub(crate) async fn task_logs(ctx: Ctx) -> ApiResult<Response> {
    let ns = item_namespace(&ctx.query);
    let logs = ctx
        .state
        .store
        .task_logs(&ns, &ctx.name, MAX_TASK_LOGS)
        .await?;
    Ok(Json(json!({"name": ctx.name, "logs": logs})).into_response())
}

/// `GET /v1/agents/{name}/logs`: no in-process agent runtime yet, so always empty.
pub(crate) async fn agent_logs(ctx: Ctx) -> ApiResult<Response> {
    let ns = item_namespace(&ctx.query);
    ctx.state.store.get(Kind::Agent, &ns, &ctx.name).await?;
    Ok(Json(json!({"name": ctx.name, "logs": []})).into_response())
}

/// `GET /v1/memories/{name}/entries?q=&prefix=&limit=100` →
/// `{"entries":[{key,value[,score]}],"count":N}` from this process's registered backend (never
/// creates one; empty when there is none). `q` searches (entries carry a score), `prefix`
/// filters by key prefix; without `q` entries are listed in key order without a score.
pub(crate) async fn memory_entries(ctx: Ctx) -> ApiResult<Response> {
    let limit = positive_param(&ctx.query, "limit", 1000)?.unwrap_or(100);
    for param in ["q", "prefix"] {
        if ctx.query.get(param).is_some_and(|v| v.len() > 1024) {
            return Err(ApiError::invalid(format!(
                "invalid {param}: longer than 1024 bytes"
            )));
        }
    }
    let ns = item_namespace(&ctx.query);
    ctx.state.store.get(Kind::Memory, &ns, &ctx.name).await?;
    let Some(backend) = ctx
        .state
        .memory
        .as_ref()
        .and_then(|registry| registry.get(&ns, &ctx.name))
    else {
        return Ok(Json(json!({"entries": [], "count": 0})).into_response());
    };
    let query = ctx.query.get("q").map(|q| q.trim()).unwrap_or_default();
    let prefix = ctx
        .query
        .get("prefix")
        .map(String::as_str)
        .unwrap_or_default();
    let backend_error = |e: crate::memory::MemoryError| {
        ApiError::from(orloj_core::Error::unavailable(format!(
            "memory {ns}/{}: {e}",
            ctx.name
        )))
    };
    let mut entries = if query.is_empty() {
        backend.list(prefix).await.map_err(backend_error)?
    } else {
        // Search everything that may match, then apply the prefix and the limit.
        let top_k = if prefix.is_empty() { limit } else { usize::MAX };
        let mut found = backend.search(query, top_k).await.map_err(backend_error)?;
        found.retain(|e| e.key.starts_with(prefix));
        found
    };
    entries.truncate(limit);
    Ok(Json(json!({"count": entries.len(), "entries": entries})).into_response())
}

/// The message filters shared by `/messages` and `/metrics`.
struct MessageFilter {
    phases: Vec<String>,
    fields: Vec<(&'static str, String)>,
    limit: Option<usize>,
}

impl MessageFilter {
    fn parse(query: &HashMap<String, String>) -> ApiResult<Self> {
        let mut phases = Vec::new();
        for param in ["phase", "lifecycle"] {
            let Some(raw) = query.get(param) else {
                continue;
            };
            for p in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let p = p.to_ascii_lowercase();
                if !PHASES.contains(&p.as_str()) {
                    return Err(ApiError::invalid(format!(
                        "invalid {param} {p:?}: expected one of {}",
                        PHASES.join(", ")
                    )));
                }
                phases.push(p);
            }
        }
        let fields = ["from_agent", "to_agent", "branch_id", "trace_id"]
            .into_iter()
            .filter_map(|f| {
                query
                    .get(f)
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .map(|v| (f, v))
            })
            .collect();
        let limit = non_negative_param(query, "limit")?.filter(|l| *l > 0);
        Ok(Self {
            phases,
            fields,
            limit,
        })
    }

    fn matches(&self, message: &Value) -> bool {
        let phase = phase_of(message);
        (self.phases.is_empty() || self.phases.contains(&phase))
            && self
                .fields
                .iter()
                .all(|(f, v)| message.get(*f).and_then(Value::as_str) == Some(v.as_str()))
    }

    /// Matching messages, the latest `limit` of them when a limit is set.
    fn apply(&self, messages: &[Value]) -> Vec<Value> {
        let mut out: Vec<Value> = messages
            .iter()
            .filter(|m| self.matches(m))
            .cloned()
            .collect();
        if let Some(limit) = self.limit
            && out.len() > limit
        {
            out.drain(..out.len() - limit);
        }
        out
    }

    fn echo(&self) -> Value {
        let mut m = Map::new();
        if !self.phases.is_empty() {
            m.insert("phase".into(), json!(self.phases));
        }
        for (f, v) in &self.fields {
            m.insert((*f).into(), json!(v));
        }
        if let Some(l) = self.limit {
            m.insert("limit".into(), json!(l));
        }
        Value::Object(m)
    }
}

fn phase_of(message: &Value) -> String {
    message
        .get("phase")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn str_field<'a>(message: &'a Value, field: &str) -> &'a str {
    message.get(field).and_then(Value::as_str).unwrap_or("")
}

async fn task_messages_of(ctx: &Ctx) -> ApiResult<(String, Vec<Value>)> {
    let ns = item_namespace(&ctx.query);
    let task = ctx.state.store.get(Kind::Task, &ns, &ctx.name).await?;
    let messages = task
        .status
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok((task.namespace().to_string(), messages))
}

fn lifecycle_counts(messages: &[Value]) -> Map<String, Value> {
    let mut counts: Map<String, Value> = PHASES.iter().map(|p| ((*p).into(), json!(0))).collect();
    for m in messages {
        let phase = phase_of(m);
        if let Some(Value::Number(n)) = counts.get(&phase) {
            let next = n.as_u64().unwrap_or(0) + 1;
            counts.insert(phase, json!(next));
        }
    }
    counts
}

/// `GET /v1/tasks/{name}/messages`.
pub(crate) async fn task_messages(ctx: Ctx) -> ApiResult<Response> {
    let filter = MessageFilter::parse(&ctx.query)?;
    let (namespace, messages) = task_messages_of(&ctx).await?;
    let matched: Vec<Value> = messages
        .iter()
        .filter(|m| filter.matches(m))
        .cloned()
        .collect();
    let selected = filter.apply(&messages);
    Ok(Json(json!({
        "name": ctx.name,
        "namespace": namespace,
        "total": matched.len(),
        "filtered_from": messages.len(),
        "lifecycle_counts": lifecycle_counts(&matched),
        "messages": selected,
    }))
    .into_response())
}

/// Counters over a set of messages.
fn rollup(messages: &[&Value]) -> Map<String, Value> {
    let counts = lifecycle_counts(&messages.iter().map(|m| (*m).clone()).collect::<Vec<_>>());
    let count = |p: &str| counts.get(p).and_then(Value::as_u64).unwrap_or(0);
    let retry_count: i64 = messages
        .iter()
        .map(|m| (m.get("attempts").and_then(Value::as_i64).unwrap_or(0) - 1).max(0))
        .sum();
    let mut latencies: Vec<i64> = messages.iter().filter_map(|m| latency_ms(m)).collect();
    latencies.sort_unstable();
    let (avg, p95) = if latencies.is_empty() {
        (0, 0)
    } else {
        let n = latencies.len();
        let avg = latencies.iter().sum::<i64>() / n as i64;
        // Nearest-rank percentile.
        let rank = (n * 95).div_ceil(100).max(1);
        (avg, latencies[rank - 1])
    };
    let mut out = counts.clone();
    out.insert(
        "in_flight".into(),
        json!(count("queued") + count("running") + count("retrypending")),
    );
    out.insert("retry_count".into(), json!(retry_count));
    out.insert("deadletters".into(), json!(count("deadletter")));
    out.insert("latency_ms_avg".into(), json!(avg));
    out.insert("latency_ms_p95".into(), json!(p95));
    out.insert("latency_sample_size".into(), json!(latencies.len()));
    out
}

/// Milliseconds from a message's `timestamp` to its `processed_at`, when both are known.
fn latency_ms(message: &Value) -> Option<i64> {
    let parse = |f: &str| {
        DateTime::parse_from_rfc3339(str_field(message, f))
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let ms = (parse("processed_at")? - parse("timestamp")?).num_milliseconds();
    (ms >= 0).then_some(ms)
}

/// `GET /v1/tasks/{name}/metrics`.
pub(crate) async fn task_metrics(ctx: Ctx) -> ApiResult<Response> {
    let filter = MessageFilter::parse(&ctx.query)?;
    let (namespace, messages) = task_messages_of(&ctx).await?;
    let selected = filter.apply(&messages);
    let all: Vec<&Value> = selected.iter().collect();
    let mut totals = rollup(&all);
    totals.insert("messages".into(), json!(all.len()));

    let mut agents: BTreeMap<String, (Vec<&Value>, usize)> = BTreeMap::new();
    let mut edges: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for m in &all {
        let (from, to) = (str_field(m, "from_agent"), str_field(m, "to_agent"));
        if !to.is_empty() {
            agents.entry(to.to_string()).or_default().0.push(m);
        }
        if !from.is_empty() {
            agents.entry(from.to_string()).or_default().1 += 1;
        }
        edges
            .entry((from.to_string(), to.to_string()))
            .or_default()
            .push(m);
    }
    let per_agent: Vec<Value> = agents
        .into_iter()
        .map(|(agent, (inbound, outbound))| {
            let mut row = rollup(&inbound);
            row.insert("agent".into(), json!(agent));
            row.insert("inbound".into(), json!(inbound.len()));
            row.insert("outbound".into(), json!(outbound));
            Value::Object(row)
        })
        .collect();
    let per_edge: Vec<Value> = edges
        .into_iter()
        .map(|((from, to), msgs)| {
            let mut row = rollup(&msgs);
            row.insert("from_agent".into(), json!(from));
            row.insert("to_agent".into(), json!(to));
            row.insert("messages".into(), json!(msgs.len()));
            Value::Object(row)
        })
        .collect();
    Ok(Json(json!({
        "name": ctx.name,
        "namespace": namespace,
        "generated_at": ctx.state.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "totals": totals,
        "per_agent": per_agent,
        "per_edge": per_edge,
        "filters": filter.echo(),
    }))
    .into_response())
}
