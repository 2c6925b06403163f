//! Commands about running work: run, following tasks, trace, messages, metrics, approvals,
//! cancel, retry, top and graph.

use super::UsageError;
use super::cli::{
    CancelArgs, DecisionArgs, GraphArgs, MessagesArgs, MetricsArgs, RetryArgs, RunArgs, TaskTarget,
    TopArgs, TopResource, TraceArgs,
};
use super::client::{ApiClient, ApiError};
use super::commands::{Ctx, parse_kind};
use super::manifests::{display_ref, to_yaml};
use super::output::{self, OutputFormat, align};
use anyhow::{Context, Result, bail};
use orloj_core::{API_VERSION, DEFAULT_NAMESPACE, Kind};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Phases after which a task never changes again.
pub(super) const TERMINAL_PHASES: &[&str] = &["Succeeded", "Failed", "DeadLetter"];

/// How often `cancel` re-reads and retries after a resourceVersion conflict.
const CANCEL_ATTEMPTS: usize = 5;

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A JSON value as a table cell (strings bare, null empty, others as JSON).
fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The phase of a task status; empty counts as Pending (runtime §2.1).
pub(super) fn phase_of(status: &Value) -> &str {
    match str_at(status, "/phase") {
        "" => "Pending",
        p => p,
    }
}

/// Whether a phase is terminal.
pub(super) fn is_terminal(phase: &str) -> bool {
    TERMINAL_PHASES.contains(&phase)
}

/// Milliseconds since the Unix epoch, for generated task names.
pub(super) fn unix_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Parses `key=value` pairs given with `flag`.
pub(super) fn parse_pairs(flag: &str, items: &[String]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), Value::String(v.to_string()));
            }
            _ => {
                return Err(UsageError(format!("{flag} expects key=value, got {item:?}")).into());
            }
        }
    }
    Ok(out)
}

/// Resolves `task/NAME` or `task NAME` to the task name (possibly `ns/name`).
fn task_name(t: &TaskTarget) -> Result<&str> {
    let (res, name) = match (t.target.split_once('/'), t.name.as_deref()) {
        (Some((res, name)), None) => (res, name),
        (None, Some(name)) => (t.target.as_str(), name),
        _ => {
            return Err(UsageError(format!(
                "expected task/NAME or task NAME, got {:?}",
                [Some(t.target.as_str()), t.name.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
            .into());
        }
    };
    if parse_kind(res)? != Kind::Task {
        return Err(UsageError(format!("expected a task, got {res:?}")).into());
    }
    if name.trim().is_empty() {
        return Err(UsageError("the task name must not be empty".into()).into());
    }
    Ok(name)
}

/// Requires `resource` to name `kind`.
fn expect_kind(resource: &str, kind: Kind, command: &str) -> Result<()> {
    if parse_kind(resource)? != kind {
        return Err(UsageError(format!(
            "{command} works on {}, not {resource:?}",
            kind.plural()
        ))
        .into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// progress while following tasks

/// One trace event as a single line: `[agent] step N type (tool): message`.
pub(super) fn trace_event_line(ev: &Value) -> String {
    let mut parts = Vec::new();
    let agent = str_at(ev, "/agent");
    if !agent.is_empty() {
        parts.push(format!("[{agent}]"));
    }
    let step = cell(ev.get("step"));
    if !step.is_empty() && step != "0" {
        parts.push(format!("step {step}"));
    }
    let ty = str_at(ev, "/type");
    parts.push(if ty.is_empty() { "event" } else { ty }.to_string());
    let tool = str_at(ev, "/tool");
    if !tool.is_empty() {
        parts.push(format!("tool={tool}"));
    }
    let mut line = parts.join(" ");
    let msg = one_line(str_at(ev, "/message"));
    if !msg.is_empty() {
        line.push_str(": ");
        line.push_str(&msg);
    }
    line
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Turns successive status snapshots of one task into progress lines: phase changes and
/// trace events not printed yet.
#[derive(Debug, Default)]
pub(super) struct Progress {
    phase: Option<String>,
    trace_seen: usize,
}

impl Progress {
    /// The lines for what changed since the previous snapshot.
    pub(super) fn observe(&mut self, r: &str, status: &Value) -> Vec<String> {
        let mut lines = Vec::new();
        let phase = phase_of(status);
        if self.phase.as_deref() != Some(phase) {
            let mut line = match &self.phase {
                None => format!("{r} phase {phase}"),
                Some(prev) => format!("{r} phase {prev} -> {phase}"),
            };
            let mut details = Vec::new();
            let attempts = cell(status.get("attempts"));
            if !attempts.is_empty() && attempts != "0" {
                details.push(format!("attempt {attempts}"));
            }
            let worker = match str_at(status, "/claimedBy") {
                "" => str_at(status, "/assignedWorker"),
                w => w,
            };
            if !worker.is_empty() && !is_terminal(phase) {
                details.push(format!("worker {worker}"));
            }
            if !details.is_empty() {
                line.push_str(&format!(" ({})", details.join(", ")));
            }
            let err = str_at(status, "/lastError");
            if !err.is_empty() && phase != "Succeeded" {
                line.push_str(&format!(": {}", one_line(err)));
            }
            lines.push(line);
            self.phase = Some(phase.to_string());
        }
        let trace = status
            .get("trace")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // A task retry starts a fresh trace.
        if trace.len() < self.trace_seen {
            self.trace_seen = 0;
        }
        for ev in &trace[self.trace_seen..] {
            lines.push(format!("{r} {}", trace_event_line(ev)));
        }
        self.trace_seen = trace.len();
        lines
    }
}

/// The stdout summary of a task that ended.
pub(super) fn final_summary(r: &str, status: &Value) -> String {
    let phase = phase_of(status);
    let mut out = format!("{r} {phase}");
    let attempts = cell(status.get("attempts"));
    if !attempts.is_empty() {
        out.push_str(&format!(" (attempts: {attempts})"));
    }
    let err = str_at(status, "/lastError");
    if !err.is_empty() && phase != "Succeeded" {
        out.push_str(&format!("\nerror: {err}"));
    }
    match status.get("output") {
        Some(Value::Object(m)) if !m.is_empty() => {
            out.push_str("\noutput:\n");
            for line in to_yaml(&Value::Object(m.clone())).lines() {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
        }
        Some(v @ Value::String(_)) => out.push_str(&format!("\noutput: {}\n", cell(Some(v)))),
        _ => out.push('\n'),
    }
    out
}

/// How following one task ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// It reached a terminal phase with this status.
    Ended(Value),
    /// The wait ran out; the last status seen.
    TimedOut(Value),
    /// It could not be read (deleted, ...).
    Lost(String),
}

/// Polls the tasks `(namespace, name)` until each ends or `timeout` passes, printing
/// progress on stderr. Returns one outcome per task, in order.
pub(super) async fn follow(
    client: &ApiClient,
    tasks: &[(String, String)],
    poll: Duration,
    timeout: Duration,
) -> Result<Vec<Outcome>> {
    let poll = poll.max(Duration::from_millis(50));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut progress: Vec<Progress> = tasks.iter().map(|_| Progress::default()).collect();
    let mut outcomes: Vec<Option<Outcome>> = tasks.iter().map(|_| None).collect();
    let mut last: Vec<Value> = tasks.iter().map(|_| Value::Null).collect();
    loop {
        for (i, (ns, name)) in tasks.iter().enumerate() {
            if outcomes[i].is_some() {
                continue;
            }
            let r = display_ref(Kind::Task, name);
            match client.get_object(Kind::Task.plural(), ns, name).await {
                Ok(Some(obj)) => {
                    let status = obj.get("status").cloned().unwrap_or(Value::Null);
                    for line in progress[i].observe(&r, &status) {
                        eprintln!("{line}");
                    }
                    if is_terminal(phase_of(&status)) {
                        outcomes[i] = Some(Outcome::Ended(status));
                    } else {
                        last[i] = status;
                    }
                }
                Ok(None) => outcomes[i] = Some(Outcome::Lost(format!("{r} no longer exists"))),
                Err(e @ ApiError::Unreachable { .. }) => return Err(e.into()),
                Err(e) => eprintln!("warning: cannot read {r}: {e}"),
            }
        }
        if outcomes.iter().all(Option::is_some) {
            break;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
    }
    Ok(outcomes
        .into_iter()
        .zip(last)
        .map(|(o, l)| o.unwrap_or(Outcome::TimedOut(l)))
        .collect())
}

/// Prints the outcomes (summaries on stdout, problems on stderr); 0 when all succeeded.
pub(super) fn report(tasks: &[(String, String)], outcomes: &[Outcome], timeout: Duration) -> u8 {
    let mut code = 0;
    for ((_, name), o) in tasks.iter().zip(outcomes) {
        let r = display_ref(Kind::Task, name);
        match o {
            Outcome::Ended(status) => {
                out!("{}", final_summary(&r, status));
                if phase_of(status) != "Succeeded" {
                    code = 1;
                }
            }
            Outcome::TimedOut(status) => {
                eprintln!(
                    "error: timed out after {} waiting for {r} to finish (still {}); it keeps running on the server",
                    humantime::format_duration(timeout),
                    phase_of(status)
                );
                code = 1;
            }
            Outcome::Lost(why) => {
                eprintln!("error: {why}");
                code = 1;
            }
        }
    }
    code
}

// ---------------------------------------------------------------------------------------
// run

/// The Task `run` creates.
pub(super) fn run_task(ns: &str, name: &str, system: &str, input: Map<String, Value>) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "Task",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"system": system, "input": input},
    })
}

pub(super) async fn run(ctx: &Ctx, args: &RunArgs) -> Result<u8> {
    let system = args.system.trim();
    if system.is_empty() {
        return Err(UsageError("--system must not be empty".into()).into());
    }
    let input = parse_pairs("input", &args.input)?;
    let (ns, system) = ctx.scoped(system);
    let name = format!("{system}-run-{}", unix_ms());
    let client = ctx.client()?;
    let body = run_task(ns, &name, system, input);
    client
        .call(
            Method::POST,
            &["v1", Kind::Task.plural()],
            &[("namespace", ns)],
            Some(&body),
            None,
        )
        .await
        .with_context(|| format!("create task for agentsystem/{system}"))?;
    eprintln!("{} created", display_ref(Kind::Task, &name));
    let tasks = [(ns.to_string(), name)];
    let outcomes = follow(&client, &tasks, args.poll, args.timeout).await?;
    Ok(report(&tasks, &outcomes, args.timeout))
}

// ---------------------------------------------------------------------------------------
// trace / messages / metrics

/// The trace timeline as a table.
pub(super) fn trace_table(trace: &[Value]) -> String {
    let rows: Vec<Vec<String>> = trace
        .iter()
        .map(|ev| {
            let step = match cell(ev.get("step")) {
                s if s.is_empty() => cell(ev.get("step_id")),
                s => s,
            };
            let latency = match cell(ev.get("latency_ms")) {
                l if l.is_empty() || l == "0" => String::new(),
                l => format!("{l}ms"),
            };
            let tokens = match cell(ev.get("tokens")) {
                t if t == "0" => String::new(),
                t => t,
            };
            vec![
                str_at(ev, "/timestamp").to_string(),
                str_at(ev, "/type").to_string(),
                str_at(ev, "/agent").to_string(),
                step,
                str_at(ev, "/tool").to_string(),
                latency,
                tokens,
                one_line(str_at(ev, "/message")),
            ]
        })
        .collect();
    align(
        &[
            "TIME", "TYPE", "AGENT", "STEP", "TOOL", "LATENCY", "TOKENS", "MESSAGE",
        ],
        &rows,
    )
}

async fn get_task(ctx: &Ctx, name: &str) -> Result<(Value, String)> {
    let (ns, name) = ctx.scoped(name);
    let r = display_ref(Kind::Task, name);
    let obj = ctx
        .client()?
        .get(&["v1", Kind::Task.plural(), name], &[("namespace", ns)])
        .await
        .with_context(|| format!("get {r}"))?;
    Ok((obj, r))
}

pub(super) async fn trace(ctx: &Ctx, args: &TraceArgs) -> Result<u8> {
    let (obj, r) = get_task(ctx, task_name(&args.task)?).await?;
    let trace = obj
        .pointer("/status/trace")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match args.output {
        OutputFormat::Table if trace.is_empty() => {
            eprintln!(
                "no trace events for {r} (phase {})",
                phase_of(obj.get("status").unwrap_or(&Value::Null))
            );
        }
        OutputFormat::Table => out!("{}", trace_table(&trace)),
        f => out!("{}", output::render_value(&Value::Array(trace), f)),
    }
    Ok(0)
}

/// Keeps the messages from or to `agent`, then at most `limit`; fixes up `total`.
pub(super) fn filter_messages(body: &mut Value, agent: Option<&str>, limit: Option<u32>) {
    let Some(list) = body.get_mut("messages").and_then(Value::as_array_mut) else {
        return;
    };
    if let Some(a) = agent {
        list.retain(|m| str_at(m, "/from_agent") == a || str_at(m, "/to_agent") == a);
    }
    if let Some(l) = limit.filter(|l| *l > 0) {
        list.truncate(l as usize);
    }
    let n = list.len();
    if agent.is_some() {
        body["total"] = json!(n);
    }
}

/// The messages as a table.
pub(super) fn messages_table(messages: &[Value]) -> String {
    let rows: Vec<Vec<String>> = messages
        .iter()
        .map(|m| {
            let mut content = one_line(&match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                other => cell(other),
            });
            if content.chars().count() > 60 {
                content = content.chars().take(57).collect::<String>() + "...";
            }
            vec![
                str_at(m, "/message_id").to_string(),
                str_at(m, "/phase").to_string(),
                str_at(m, "/from_agent").to_string(),
                str_at(m, "/to_agent").to_string(),
                str_at(m, "/branch_id").to_string(),
                cell(m.get("attempts")),
                one_line(str_at(m, "/last_error")),
                content,
            ]
        })
        .collect();
    align(
        &[
            "ID", "PHASE", "FROM", "TO", "BRANCH", "ATTEMPTS", "ERROR", "CONTENT",
        ],
        &rows,
    )
}

pub(super) async fn messages(ctx: &Ctx, args: &MessagesArgs) -> Result<u8> {
    let name = task_name(&args.task)?;
    let (ns, name) = ctx.scoped(name);
    let r = display_ref(Kind::Task, name);
    let phase = args.phase.clone().unwrap_or_default();
    // With --agent the server cannot filter "from or to", so the limit is applied here.
    let limit = match (&args.agent, args.limit) {
        (None, Some(l)) => l.to_string(),
        _ => String::new(),
    };
    let mut body = ctx
        .client()?
        .get(
            &["v1", Kind::Task.plural(), name, "messages"],
            &[("namespace", ns), ("phase", &phase), ("limit", &limit)],
        )
        .await
        .with_context(|| format!("messages of {r}"))?;
    filter_messages(&mut body, args.agent.as_deref(), args.limit);
    match args.output {
        OutputFormat::Table => {
            let list = body
                .get("messages")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if list.is_empty() {
                eprintln!("no messages for {r}");
            } else {
                out!("{}", messages_table(&list));
            }
        }
        f => out!("{}", output::render_value(&body, f)),
    }
    Ok(0)
}

const COUNT_FIELDS: &[(&str, &str)] = &[
    ("MESSAGES", "messages"),
    ("QUEUED", "queued"),
    ("RUNNING", "running"),
    ("RETRYPENDING", "retrypending"),
    ("SUCCEEDED", "succeeded"),
    ("DEADLETTER", "deadletter"),
];

/// The metrics answer as three tables: totals, per agent, per edge.
pub(super) fn metrics_text(body: &Value) -> String {
    let totals = body.get("totals").unwrap_or(&Value::Null);
    let mut headers: Vec<&str> = COUNT_FIELDS.iter().map(|(h, _)| *h).collect();
    headers.extend(["IN_FLIGHT", "RETRIES", "LATENCY_AVG_MS", "LATENCY_P95_MS"]);
    let mut row: Vec<String> = COUNT_FIELDS
        .iter()
        .map(|(_, k)| cell(totals.get(*k)))
        .collect();
    for k in [
        "in_flight",
        "retry_count",
        "latency_ms_avg",
        "latency_ms_p95",
    ] {
        row.push(cell(totals.get(k)));
    }
    let mut out = String::from("TOTALS\n");
    out.push_str(&align(&headers, &[row]));
    let section = |title: &str, key: &str, ids: &[(&str, &str)]| -> String {
        let items = body
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if items.is_empty() {
            return String::new();
        }
        let mut headers: Vec<&str> = ids.iter().map(|(h, _)| *h).collect();
        headers.extend(COUNT_FIELDS.iter().map(|(h, _)| *h));
        headers.push("LATENCY_AVG_MS");
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|it| {
                ids.iter()
                    .chain(COUNT_FIELDS)
                    .map(|(_, k)| cell(it.get(*k)))
                    .chain(std::iter::once(cell(it.get("latency_ms_avg"))))
                    .collect()
            })
            .collect();
        format!("\n{title}\n{}", align(&headers, &rows))
    };
    out.push_str(&section(
        "PER AGENT",
        "per_agent",
        &[
            ("AGENT", "agent"),
            ("INBOUND", "inbound"),
            ("OUTBOUND", "outbound"),
        ],
    ));
    out.push_str(&section(
        "PER EDGE",
        "per_edge",
        &[("FROM", "from_agent"), ("TO", "to_agent")],
    ));
    out
}

pub(super) async fn metrics(ctx: &Ctx, args: &MetricsArgs) -> Result<u8> {
    let name = task_name(&args.task)?;
    let (ns, name) = ctx.scoped(name);
    let r = display_ref(Kind::Task, name);
    let phase = args.phase.clone().unwrap_or_default();
    let limit = args.limit.map(|l| l.to_string()).unwrap_or_default();
    let body = ctx
        .client()?
        .get(
            &["v1", Kind::Task.plural(), name, "metrics"],
            &[("namespace", ns), ("phase", &phase), ("limit", &limit)],
        )
        .await
        .with_context(|| format!("metrics of {r}"))?;
    match args.output {
        OutputFormat::Table => out!("{}", metrics_text(&body)),
        f => out!("{}", output::render_value(&body, f)),
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// approve / deny

/// `--decided-by`, else $USER, else `orlojctl`.
pub(super) fn decided_by(flag: Option<&str>, user: Option<String>) -> String {
    [flag.map(str::to_string), user]
        .into_iter()
        .flatten()
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "orlojctl".to_string())
}

pub(super) async fn decide(ctx: &Ctx, args: &DecisionArgs, approve: bool) -> Result<u8> {
    let verb = if approve { "approve" } else { "deny" };
    expect_kind(&args.resource, Kind::ToolApproval, verb)?;
    let (ns, name) = ctx.scoped(&args.name);
    let r = display_ref(Kind::ToolApproval, name);
    let by = decided_by(args.decided_by.as_deref(), std::env::var("USER").ok());
    let body = json!({"decided_by": by, "comment": args.comment.clone().unwrap_or_default()});
    let answer = ctx
        .client()?
        .call_json(
            Method::POST,
            &["v1", Kind::ToolApproval.plural(), name, verb],
            &[("namespace", ns)],
            Some(&body),
            None,
        )
        .await
        .with_context(|| format!("{verb} {r}"))?;
    let phase = match str_at(&answer, "/status/phase") {
        "" if approve => "Approved",
        "" => "Denied",
        p => p,
    };
    outln!("{r} {} by {by}", phase.to_lowercase());
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// cancel / retry

/// The status `cancel` writes: phase Failed with the reason, lease fields cleared.
/// Refuses a task that already ended.
pub(super) fn cancel_status(current: &Value, reason: &str, now: &str) -> Result<Value, String> {
    let phase = phase_of(current);
    if is_terminal(phase) {
        return Err(format!("it already ended in phase {phase}"));
    }
    let mut status = current.as_object().cloned().unwrap_or_default();
    status.insert("phase".into(), json!("Failed"));
    status.insert("lastError".into(), json!(reason));
    status.insert("completedAt".into(), json!(now));
    for k in ["claimedBy", "leaseUntil", "lastHeartbeat", "nextAttemptAt"] {
        status.insert(k.into(), json!(""));
    }
    Ok(Value::Object(status))
}

pub(super) async fn cancel(ctx: &Ctx, args: &CancelArgs) -> Result<u8> {
    expect_kind(&args.resource, Kind::Task, "cancel")?;
    let (ns, name) = ctx.scoped(&args.name);
    let r = display_ref(Kind::Task, name);
    let reason = match args.reason.trim() {
        "" => "task canceled via orlojctl",
        s => s,
    };
    let client = ctx.client()?;
    let path = ["v1", Kind::Task.plural(), name, "status"];
    for attempt in 1..=CANCEL_ATTEMPTS {
        let current = client
            .get(&path, &[("namespace", ns)])
            .await
            .with_context(|| format!("cancel {r}"))?;
        let rv = str_at(&current, "/metadata/resourceVersion").to_string();
        let status = current.get("status").cloned().unwrap_or(Value::Null);
        let new_status = cancel_status(&status, reason, &chrono::Utc::now().to_rfc3339())
            .map_err(|why| anyhow::anyhow!("cannot cancel {r}: {why}"))?;
        let body = json!({"metadata": {"resourceVersion": rv}, "status": new_status});
        match client
            .call(
                Method::PUT,
                &path,
                &[("namespace", ns)],
                Some(&body),
                (!rv.is_empty()).then_some(rv.as_str()),
            )
            .await
        {
            Ok(_) => {
                outln!("{r} canceled (phase Failed: {reason})");
                return Ok(0);
            }
            Err(e) if e.status() == Some(StatusCode::CONFLICT) && attempt < CANCEL_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cancel {r}"))),
        }
    }
    bail!("cancel {r}: the task kept changing on the server; try again")
}

/// The new Task `retry` creates from `original`: same labels and spec, input overridden.
/// Refuses a task that has not ended.
pub(super) fn retry_task(
    original: &Value,
    new_name: &str,
    overrides: &Map<String, Value>,
) -> Result<Value, String> {
    let phase = phase_of(original.get("status").unwrap_or(&Value::Null));
    if matches!(phase, "Running" | "Pending" | "WaitingApproval") {
        return Err(format!(
            "it is still {phase}; only ended tasks can be retried (cancel it first)"
        ));
    }
    let mut spec = original
        .get("spec")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if !overrides.is_empty() {
        let mut input = spec
            .get("input")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        input.extend(overrides.clone());
        spec.insert("input".into(), Value::Object(input));
    }
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(new_name));
    let ns = match str_at(original, "/metadata/namespace") {
        "" => DEFAULT_NAMESPACE,
        ns => ns,
    };
    metadata.insert("namespace".into(), json!(ns));
    if let Some(l) = original
        .pointer("/metadata/labels")
        .filter(|l| l.is_object())
    {
        metadata.insert("labels".into(), l.clone());
    }
    Ok(json!({
        "apiVersion": API_VERSION,
        "kind": "Task",
        "metadata": metadata,
        "spec": spec,
    }))
}

pub(super) async fn retry(ctx: &Ctx, args: &RetryArgs) -> Result<u8> {
    expect_kind(&args.resource, Kind::Task, "retry")?;
    let overrides = parse_pairs("--with-overrides", &args.with_overrides)?;
    let (ns, name) = ctx.scoped(&args.name);
    let r = display_ref(Kind::Task, name);
    let client = ctx.client()?;
    let original = client
        .get(&["v1", Kind::Task.plural(), name], &[("namespace", ns)])
        .await
        .with_context(|| format!("retry {r}"))?;
    let new_name = format!("{name}-retry-{}", unix_ms());
    let body = retry_task(&original, &new_name, &overrides)
        .map_err(|why| anyhow::anyhow!("cannot retry {r}: {why}"))?;
    client
        .call(
            Method::POST,
            &["v1", Kind::Task.plural()],
            &[("namespace", ns)],
            Some(&body),
            None,
        )
        .await
        .with_context(|| format!("retry {r}"))?;
    outln!(
        "{} created (retry of {r})",
        display_ref(Kind::Task, &new_name)
    );
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// top

/// Every object of `kind` in `namespace` (all namespaces when empty), following `continue`.
pub(crate) async fn list_all(
    client: &ApiClient,
    kind: Kind,
    namespace: &str,
) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut after = String::new();
    loop {
        let page = client
            .get(
                &["v1", kind.plural()],
                &[("namespace", namespace), ("after", &after)],
            )
            .await
            .with_context(|| format!("list {}", kind.plural()))?;
        if let Some(list) = page.get("items").and_then(Value::as_array) {
            items.extend(list.iter().cloned());
        }
        match page.get("continue").and_then(Value::as_str) {
            Some(next) if !next.is_empty() && next != after => after = next.to_string(),
            _ => break,
        }
    }
    Ok(items)
}

fn ns_of(v: &Value) -> String {
    match str_at(v, "/metadata/namespace") {
        "" => DEFAULT_NAMESPACE.to_string(),
        ns => ns.to_string(),
    }
}

/// One row per worker: name, phase, region, current/max tasks, heartbeat age.
pub(super) fn worker_rows(items: &[Value], now: chrono::DateTime<chrono::Utc>) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|w| {
            let max = match cell(w.pointer("/spec/max_concurrent_tasks")) {
                m if m.is_empty() || m == "0" => "1".to_string(),
                m => m,
            };
            let current = match cell(w.pointer("/status/currentTasks")) {
                c if c.is_empty() => "0".to_string(),
                c => c,
            };
            let hb = str_at(w, "/status/lastHeartbeat");
            vec![
                str_at(w, "/metadata/name").to_string(),
                str_at(w, "/status/phase").to_string(),
                str_at(w, "/spec/region").to_string(),
                format!("{current}/{max}"),
                if hb.is_empty() {
                    "never".to_string()
                } else {
                    format!("{} ago", output::age(Some(hb), now))
                },
            ]
        })
        .collect()
}

/// One row per task plus the count of tasks per phase.
pub(super) fn task_rows(
    items: &[Value],
    now: chrono::DateTime<chrono::Utc>,
) -> (Vec<Vec<String>>, BTreeMap<String, usize>) {
    let mut counts = BTreeMap::new();
    let rows = items
        .iter()
        .map(|t| {
            let status = t.get("status").unwrap_or(&Value::Null);
            let phase = phase_of(status).to_string();
            *counts.entry(phase.clone()).or_insert(0) += 1;
            let worker = match str_at(status, "/claimedBy") {
                "" => str_at(status, "/assignedWorker"),
                w => w,
            };
            vec![
                str_at(t, "/metadata/name").to_string(),
                ns_of(t),
                phase,
                match cell(status.get("attempts")) {
                    a if a.is_empty() => "0".to_string(),
                    a => a,
                },
                worker.to_string(),
                output::age(
                    t.pointer("/metadata/createdAt").and_then(Value::as_str),
                    now,
                ),
            ]
        })
        .collect();
    (rows, counts)
}

pub(super) async fn top(ctx: &Ctx, args: &TopArgs) -> Result<u8> {
    let client = ctx.client()?;
    let ns = ctx.namespace.as_deref().unwrap_or("");
    let now = chrono::Utc::now();
    match args.resource {
        TopResource::Workers => {
            let items = list_all(&client, Kind::Worker, ns).await?;
            let rows = worker_rows(&items, now);
            match args.output {
                OutputFormat::Table if rows.is_empty() => eprintln!("No workers registered."),
                OutputFormat::Table => out!(
                    "{}",
                    align(&["NAME", "PHASE", "REGION", "TASKS", "HEARTBEAT"], &rows)
                ),
                f => {
                    let list: Vec<Value> = rows
                        .iter()
                        .map(|r| {
                            json!({"name": r[0], "phase": r[1], "region": r[2], "tasks": r[3], "heartbeat": r[4]})
                        })
                        .collect();
                    out!("{}", output::render_value(&json!({"workers": list}), f));
                }
            }
        }
        TopResource::Tasks => {
            let items = list_all(&client, Kind::Task, ns).await?;
            let (rows, counts) = task_rows(&items, now);
            match args.output {
                OutputFormat::Table if rows.is_empty() => eprintln!("No tasks found."),
                OutputFormat::Table => {
                    out!(
                        "{}",
                        align(
                            &["NAME", "NAMESPACE", "PHASE", "ATTEMPTS", "WORKER", "AGE"],
                            &rows
                        )
                    );
                    let summary: Vec<String> =
                        counts.iter().map(|(p, n)| format!("{p}={n}")).collect();
                    outln!("\n{} task(s): {}", rows.len(), summary.join(" "));
                }
                f => {
                    let list: Vec<Value> = rows
                        .iter()
                        .map(|r| {
                            json!({"name": r[0], "namespace": r[1], "phase": r[2], "attempts": r[3], "worker": r[4], "age": r[5]})
                        })
                        .collect();
                    out!(
                        "{}",
                        output::render_value(&json!({"tasks": list, "phases": counts}), f)
                    );
                }
            }
        }
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// graph

/// The agent graph of an AgentSystem spec.
#[derive(Debug, Default)]
pub(super) struct Graph {
    /// Agents in declaration order (plus graph nodes that are not declared, at the end).
    pub agents: Vec<String>,
    /// `(from, to, conditional)` edges.
    pub edges: Vec<(String, String, bool)>,
    /// `(from, to)` delegations.
    pub delegates: Vec<(String, String)>,
    /// Join mode per node that has one configured.
    pub join_modes: HashMap<String, String>,
}

impl Graph {
    /// Reads `spec.agents` and `spec.graph` of an AgentSystem object.
    pub(super) fn from_system(system: &Value) -> Self {
        let mut g = Graph {
            agents: system
                .pointer("/spec/agents")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            ..Graph::default()
        };
        let Some(nodes) = system.pointer("/spec/graph").and_then(Value::as_object) else {
            return g;
        };
        for (from, node) in nodes {
            if !g.agents.contains(from) {
                g.agents.push(from.clone());
            }
            let next = str_at(node, "/next");
            if !next.is_empty() {
                g.edges.push((from.clone(), next.to_string(), false));
            }
            for e in node
                .get("edges")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let to = str_at(e, "/to");
                if !to.is_empty() {
                    let cond = e.get("condition").is_some_and(|c| !c.is_null());
                    g.edges.push((from.clone(), to.to_string(), cond));
                }
            }
            for d in node
                .get("delegates")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let to = match d {
                    Value::String(s) => s.as_str(),
                    other => str_at(other, "/to"),
                };
                if !to.is_empty() {
                    g.delegates.push((from.clone(), to.to_string()));
                }
            }
            let mode = str_at(node, "/join/mode");
            if !mode.is_empty() {
                g.join_modes.insert(from.clone(), mode.to_string());
            }
        }
        g
    }

    fn indegree(&self, node: &str) -> usize {
        self.edges.iter().filter(|(_, to, _)| to == node).count()
    }

    /// Agents with no incoming edge; the first agent when there are none (a full cycle).
    pub(super) fn entries(&self) -> Vec<&str> {
        let e: Vec<&str> = self
            .agents
            .iter()
            .filter(|a| self.indegree(a) == 0)
            .map(String::as_str)
            .collect();
        if e.is_empty() {
            self.agents.iter().take(1).map(String::as_str).collect()
        } else {
            e
        }
    }

    /// Whether the edges contain a cycle.
    pub(super) fn has_cycle(&self) -> bool {
        // Kahn's algorithm: a cycle leaves nodes with incoming edges unprocessed.
        let mut indeg: HashMap<&str, usize> = self.agents.iter().map(|a| (a.as_str(), 0)).collect();
        for (_, to, _) in &self.edges {
            *indeg.entry(to.as_str()).or_insert(0) += 1;
        }
        let mut queue: Vec<&str> = indeg
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(n, _)| *n)
            .collect();
        let mut seen = 0;
        while let Some(n) = queue.pop() {
            seen += 1;
            for (from, to, _) in &self.edges {
                if from == n
                    && let Some(d) = indeg.get_mut(to.as_str())
                {
                    *d -= 1;
                    if *d == 0 {
                        queue.push(to.as_str());
                    }
                }
            }
        }
        seen < indeg.len()
    }
}

/// A word for an agent's state from its trace events (last event wins).
pub(super) fn agent_states(trace: &[Value]) -> HashMap<String, (String, usize)> {
    let mut out: HashMap<String, (String, usize)> = HashMap::new();
    for ev in trace {
        let agent = str_at(ev, "/agent");
        if agent.is_empty() {
            continue;
        }
        let ty = str_at(ev, "/type").to_ascii_lowercase();
        let word = if ["error", "fail", "deadletter", "violation"]
            .iter()
            .any(|w| ty.contains(w))
        {
            "failed"
        } else if ty.contains("join_wait") || ty.contains("approval") {
            "waiting"
        } else if ["complete", "end", "succeeded", "processed", "done", "stop"]
            .iter()
            .any(|w| ty.contains(w))
        {
            "done"
        } else {
            "running"
        };
        let entry = out.entry(agent.to_string()).or_default();
        entry.0 = word.to_string();
        entry.1 += 1;
    }
    out
}

/// ASCII drawing of the graph; with `states`, each agent's state from a task's trace.
pub(super) fn render_graph(
    title: &str,
    system: &Value,
    states: Option<&HashMap<String, (String, usize)>>,
) -> String {
    let g = Graph::from_system(system);
    let entries = g.entries();
    let mut out = format!(
        "{title}: {} agent(s), {} edge(s)\nentry: {}\n",
        g.agents.len(),
        g.edges.len(),
        if entries.is_empty() {
            "(none)".to_string()
        } else {
            entries.join(", ")
        }
    );
    if g.has_cycle() {
        out.push_str("loop: yes (bounded by the task's spec.max_turns)\n");
    }
    out.push('\n');
    let declared: Vec<String> = system
        .pointer("/spec/agents")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    for agent in &g.agents {
        let mut line = format!("[{agent}]");
        let mut notes = Vec::new();
        if entries.contains(&agent.as_str()) {
            notes.push("entry".to_string());
        }
        let inbound = g.indegree(agent);
        let mode = g.join_modes.get(agent).map(String::as_str);
        if inbound > 1 || mode == Some("quorum") {
            notes.push(format!(
                "join {} of {inbound} inbound",
                mode.unwrap_or("wait_for_all")
            ));
        }
        if !declared.contains(agent) {
            notes.push("not in spec.agents".to_string());
        }
        if let Some(states) = states {
            notes.push(match states.get(agent) {
                Some((word, n)) => format!("status: {word}, {n} event(s)"),
                None => "status: not started".to_string(),
            });
        }
        if !notes.is_empty() {
            line.push_str(&format!(" ({})", notes.join("; ")));
        }
        out.push_str(&line);
        out.push('\n');
        let mut any = false;
        for (from, to, cond) in &g.edges {
            if from == agent {
                any = true;
                out.push_str(&format!(
                    "  --> {to}{}\n",
                    if *cond { " (conditional)" } else { "" }
                ));
            }
        }
        for (from, to) in &g.delegates {
            if from == agent {
                any = true;
                out.push_str(&format!("  ..> {to} (delegate)\n"));
            }
        }
        if !any {
            out.push_str("  (end)\n");
        }
    }
    out
}

pub(super) async fn graph(ctx: &Ctx, args: &GraphArgs) -> Result<u8> {
    let kind = parse_kind(&args.resource)?;
    let client = ctx.client()?;
    let (ns, name) = ctx.scoped(&args.name);
    match kind {
        Kind::AgentSystem => {
            let system = client
                .get(
                    &["v1", Kind::AgentSystem.plural(), name],
                    &[("namespace", ns)],
                )
                .await
                .with_context(|| format!("graph agentsystem/{name}"))?;
            out!("{}", render_graph(&display_ref(kind, name), &system, None));
        }
        Kind::Task => {
            let r = display_ref(kind, name);
            let task = client
                .get(&["v1", Kind::Task.plural(), name], &[("namespace", ns)])
                .await
                .with_context(|| format!("graph {r}"))?;
            let system_ref = str_at(&task, "/spec/system");
            if system_ref.is_empty() {
                bail!("{r} has no spec.system");
            }
            let (sys_ns, sys_name) = orloj_core::split_ref(system_ref, ns);
            let system = client
                .get(
                    &["v1", Kind::AgentSystem.plural(), sys_name],
                    &[("namespace", sys_ns)],
                )
                .await
                .with_context(|| format!("graph {r}: agentsystem/{sys_name}"))?;
            let trace = task
                .pointer("/status/trace")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let states = agent_states(&trace);
            let status = task.get("status").unwrap_or(&Value::Null);
            let title = format!("{r} (phase {}) on agentsystem/{sys_name}", phase_of(status));
            out!("{}", render_graph(&title, &system, Some(&states)));
        }
        _ => {
            return Err(UsageError(format!(
                "graph works on system or task, not {:?}",
                args.resource
            ))
            .into());
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-01-02T00:00:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc)
    }

    #[test]
    fn progress_reports_phase_changes_and_only_new_trace_events() {
        let mut p = Progress::default();
        let r = "task/t";
        assert_eq!(p.observe(r, &json!({})), ["task/t phase Pending"]);
        assert!(p.observe(r, &json!({"phase": "Pending"})).is_empty());
        let running = json!({"phase": "Running", "attempts": 1, "claimedBy": "w1",
            "trace": [{"agent": "planner", "step": 1, "type": "agent_step", "message": "thinking\nhard"}]});
        assert_eq!(
            p.observe(r, &running),
            [
                "task/t phase Pending -> Running (attempt 1, worker w1)",
                "task/t [planner] step 1 agent_step: thinking hard",
            ]
        );
        assert!(p.observe(r, &running).is_empty(), "nothing new");
        let done = json!({"phase": "Failed", "attempts": 1, "lastError": "boom",
            "trace": [{"agent": "planner", "step": 1, "type": "agent_step"},
                      {"agent": "writer", "type": "agent_worker_complete", "tool": "web"}]});
        assert_eq!(
            p.observe(r, &done),
            [
                "task/t phase Running -> Failed (attempt 1): boom",
                "task/t [writer] agent_worker_complete tool=web",
            ]
        );
        // A retry clears the trace: events are printed again from the start.
        let retried = json!({"phase": "Running", "trace": [{"type": "agent_step", "agent": "a"}]});
        let lines = p.observe(r, &retried);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("task/t [a] agent_step")
        );
    }

    #[test]
    fn final_summary_shows_output_or_error() {
        let s = final_summary(
            "task/t",
            &json!({"phase": "Succeeded", "attempts": 1, "output": {"result": "done"}}),
        );
        assert_eq!(
            s,
            "task/t Succeeded (attempts: 1)\noutput:\n  result: done\n"
        );
        let s = final_summary(
            "task/t",
            &json!({"phase": "DeadLetter", "lastError": "timeout"}),
        );
        assert_eq!(s, "task/t DeadLetter\nerror: timeout\n");
    }

    #[test]
    fn trace_table_columns() {
        let t = trace_table(&[
            json!({"timestamp": "2026-01-01T00:00:00Z", "type": "agent_step", "agent": "planner",
                   "step": 2, "tool": "web", "latency_ms": 15, "tokens": 120, "message": "called web"}),
            json!({"timestamp": "2026-01-01T00:00:01Z", "type": "agent_worker_complete", "agent": "writer"}),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("TIME "), "{t}");
        for col in [
            "TYPE", "AGENT", "STEP", "TOOL", "LATENCY", "TOKENS", "MESSAGE",
        ] {
            assert!(lines[0].contains(col), "{col}: {t}");
        }
        assert!(
            lines[1].contains("agent_step") && lines[1].contains("15ms"),
            "{t}"
        );
        assert!(
            lines[1].contains("120") && lines[1].ends_with("called web"),
            "{t}"
        );
        assert!(lines[2].contains("writer"), "{t}");
    }

    #[test]
    fn cancel_builds_failed_status_and_refuses_ended_tasks() {
        let current = json!({"phase": "Running", "attempts": 2, "claimedBy": "w1",
            "leaseUntil": "2026-01-01T00:00:30Z", "lastHeartbeat": "2026-01-01T00:00:00Z",
            "trace": [{"type": "x"}]});
        let s = cancel_status(&current, "stop", "2026-01-01T00:01:00Z").expect("cancel");
        assert_eq!(s["phase"], "Failed");
        assert_eq!(s["lastError"], "stop");
        assert_eq!(s["completedAt"], "2026-01-01T00:01:00Z");
        for k in ["claimedBy", "leaseUntil", "lastHeartbeat"] {
            assert_eq!(s[k], "", "{k} cleared");
        }
        assert_eq!(s["attempts"], 2, "other fields kept");
        assert_eq!(s["trace"][0]["type"], "x");
        assert!(
            cancel_status(&json!({}), "r", "t").is_ok(),
            "empty phase is Pending"
        );
        for ended in TERMINAL_PHASES {
            let e = cancel_status(&json!({ "phase": ended }), "r", "t").expect_err(ended);
            assert!(e.contains(ended), "{e}");
        }
    }

    #[test]
    fn retry_copies_spec_overrides_input_and_refuses_active_tasks() {
        let original = json!({"apiVersion": "orloj.dev/v1", "kind": "Task",
            "metadata": {"name": "t", "namespace": "team", "resourceVersion": "9", "labels": {"a": "b"}},
            "spec": {"system": "s", "input": {"topic": "x", "keep": "1"}, "max_turns": 3},
            "status": {"phase": "Failed", "lastError": "boom"}});
        let overrides =
            parse_pairs("--with-overrides", &["topic=y".into(), "new=z".into()]).expect("pairs");
        let t = retry_task(&original, "t-retry-1", &overrides).expect("retry");
        assert_eq!(t["metadata"]["name"], "t-retry-1");
        assert_eq!(t["metadata"]["namespace"], "team");
        assert_eq!(t["metadata"]["labels"]["a"], "b");
        assert!(t["metadata"].get("resourceVersion").is_none());
        assert!(t.get("status").is_none());
        assert_eq!(t["spec"]["system"], "s");
        assert_eq!(t["spec"]["max_turns"], 3);
        assert_eq!(
            t["spec"]["input"],
            json!({"topic": "y", "keep": "1", "new": "z"})
        );
        for active in ["Running", "Pending", "WaitingApproval", ""] {
            let mut o = original.clone();
            o["status"]["phase"] = json!(active);
            assert!(retry_task(&o, "n", &Map::new()).is_err(), "{active:?}");
        }
        assert!(parse_pairs("--with-overrides", &["novalue".into()]).is_err());
    }

    #[test]
    fn run_task_and_decider() {
        let t = run_task(
            "ns",
            "s-run-1",
            "s",
            parse_pairs("input", &["k=v".into()]).expect("kv"),
        );
        assert_eq!(t["metadata"], json!({"name": "s-run-1", "namespace": "ns"}));
        assert_eq!(t["spec"], json!({"system": "s", "input": {"k": "v"}}));
        assert_eq!(decided_by(Some("ann"), Some("bob".into())), "ann");
        assert_eq!(decided_by(None, Some("bob".into())), "bob");
        assert_eq!(decided_by(Some(" "), Some(String::new())), "orlojctl");
        assert_eq!(decided_by(None, None), "orlojctl");
    }

    #[test]
    fn task_targets() {
        let t = |a: &str, b: Option<&str>| TaskTarget {
            target: a.into(),
            name: b.map(str::to_string),
        };
        assert_eq!(task_name(&t("task/x", None)).expect("ok"), "x");
        assert_eq!(task_name(&t("tasks", Some("x"))).expect("ok"), "x");
        assert_eq!(task_name(&t("task/ns/x", None)).expect("ok"), "ns/x");
        for (a, b) in [
            ("task", None),
            ("agent/x", None),
            ("task/x", Some("y")),
            ("task/", None),
        ] {
            assert!(task_name(&t(a, b)).is_err(), "{a} {b:?}");
        }
    }

    #[test]
    fn filter_messages_by_agent_then_limit() {
        let mut body = json!({"total": 3, "messages": [
            {"message_id": "1", "from_agent": "a", "to_agent": "b"},
            {"message_id": "2", "from_agent": "b", "to_agent": "c"},
            {"message_id": "3", "from_agent": "c", "to_agent": "a"}]});
        filter_messages(&mut body, Some("a"), Some(1));
        assert_eq!(
            body["messages"],
            json!([{"message_id": "1", "from_agent": "a", "to_agent": "b"}])
        );
        assert_eq!(body["total"], 1);
        let t = messages_table(&[
            json!({"message_id": "m1", "phase": "succeeded", "from_agent": "a",
            "to_agent": "b", "branch_id": "b001", "attempts": 1, "content": "x".repeat(100)}),
        ]);
        assert!(
            t.lines().next().is_some_and(|h| h.starts_with("ID  ")),
            "{t}"
        );
        assert!(t.contains("m1  succeeded  a     b   b001"), "{t}");
        assert!(t.trim_end().ends_with("..."), "long content is cut: {t}");
    }

    #[test]
    fn metrics_sections() {
        let text = metrics_text(&json!({
            "totals": {"messages": 3, "succeeded": 2, "deadletter": 1, "in_flight": 0, "latency_ms_avg": 12},
            "per_agent": [{"agent": "a", "inbound": 1, "outbound": 2, "messages": 3}],
            "per_edge": []}));
        assert!(text.starts_with("TOTALS\nMESSAGES"), "{text}");
        assert!(text.contains("\nPER AGENT\nAGENT"), "{text}");
        assert!(
            !text.contains("PER EDGE"),
            "empty sections are left out: {text}"
        );
    }

    #[test]
    fn top_rows() {
        let workers = worker_rows(
            &[
                json!({"metadata": {"name": "w1"}, "spec": {"region": "eu", "max_concurrent_tasks": 4},
                     "status": {"phase": "Ready", "currentTasks": 2, "lastHeartbeat": "2026-01-01T23:59:50Z"}}),
                json!({"metadata": {"name": "w2"}, "spec": {}, "status": {}}),
            ],
            now(),
        );
        assert_eq!(workers[0], ["w1", "Ready", "eu", "2/4", "10s ago"]);
        assert_eq!(workers[1], ["w2", "", "", "0/1", "never"]);
        let (rows, counts) = task_rows(
            &[
                json!({"metadata": {"name": "t1", "createdAt": "2026-01-01T23:00:00Z"},
                     "status": {"phase": "Running", "attempts": 1, "claimedBy": "w1"}}),
                json!({"metadata": {"name": "t2", "namespace": "x"}, "status": {}}),
                json!({"metadata": {"name": "t3"}, "status": {"phase": "Pending", "assignedWorker": "w2"}}),
            ],
            now(),
        );
        assert_eq!(rows[0], ["t1", "default", "Running", "1", "w1", "60m"]);
        assert_eq!(rows[2][4], "w2");
        assert_eq!(counts.get("Pending"), Some(&2));
        assert_eq!(counts.get("Running"), Some(&1));
    }

    fn hierarchical() -> Value {
        json!({"spec": {"agents": ["m", "l1", "l2", "e"], "graph": {
            "m": {"edges": [{"to": "l1"}, {"to": "l2"}, {"to": ""}]},
            "l1": {"next": "e"},
            "l2": {"edges": [{"to": "e", "condition": {"default": true}}]},
            "e": {"join": {"mode": "wait_for_all"}}}}})
    }

    #[test]
    fn graph_model_entries_cycles_and_joins() {
        let g = Graph::from_system(&hierarchical());
        assert_eq!(g.edges.len(), 4, "empty `to` dropped, legacy next kept");
        assert_eq!(g.entries(), ["m"]);
        assert!(!g.has_cycle());
        let ring = json!({"spec": {"agents": ["c", "a", "b"], "graph": {
            "c": {"edges": [{"to": "a"}]}, "a": {"edges": [{"to": "b"}]}, "b": {"edges": [{"to": "c"}]}}}});
        let g = Graph::from_system(&ring);
        assert!(g.has_cycle());
        assert_eq!(g.entries(), ["c"], "a full cycle starts at the first agent");
        let none = Graph::from_system(&json!({"spec": {"agents": ["x", "y"]}}));
        assert_eq!(none.entries(), ["x", "y"]);
    }

    #[test]
    fn graph_rendering_with_and_without_states() {
        let text = render_graph("agentsystem/h", &hierarchical(), None);
        assert_eq!(
            text,
            "agentsystem/h: 4 agent(s), 4 edge(s)\nentry: m\n\n\
             [m] (entry)\n  --> l1\n  --> l2\n\
             [l1]\n  --> e\n\
             [l2]\n  --> e (conditional)\n\
             [e] (join wait_for_all of 2 inbound)\n  (end)\n"
        );
        let states = agent_states(&[
            json!({"agent": "m", "type": "agent_step"}),
            json!({"agent": "m", "type": "agent_worker_complete"}),
            json!({"agent": "l1", "type": "agent_step"}),
            json!({"agent": "l2", "type": "agent_error"}),
        ]);
        let text = render_graph("task/t", &hierarchical(), Some(&states));
        assert!(
            text.contains("[m] (entry; status: done, 2 event(s))"),
            "{text}"
        );
        assert!(
            text.contains("[l1] (status: running, 1 event(s))"),
            "{text}"
        );
        assert!(text.contains("[l2] (status: failed, 1 event(s))"), "{text}");
        assert!(
            text.contains("[e] (join wait_for_all of 2 inbound; status: not started)"),
            "{text}"
        );
    }
}
