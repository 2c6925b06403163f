//! `orloj-loadtest`: drives a running orlojd through its REST API with many tasks, optionally
//! injects faults (invalid system, always-timing-out system, expired leases of a dead
//! worker), waits for every task to end, and checks quality gates (spec runtime §13.5).
//!
//! Output: a JSON summary ([`report::Summary`]) on stdout, progress on stderr. Exit codes:
//! 0 all gates passed, 2 a gate failed, 1 the run could not be carried out (server
//! unreachable, bad flags, setup failed).

pub mod fixtures;
pub mod report;

use crate::ctl::client::{ApiClient, ApiError};
use clap::Parser;
use fixtures::TaskShape;
use futures::StreamExt;
use report::{Gates, RunFacts, TaskKind, TaskRecord};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::ffi::OsString;
use std::time::{Duration, Instant};

/// Command line of `orloj-loadtest`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "orloj-loadtest",
    version,
    about = "Load test and quality gates for an orlojd server"
)]
pub struct Args {
    /// orlojd base URL.
    #[arg(
        long,
        alias = "base-url",
        env = "ORLOJ_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Bearer token for the API.
    #[arg(long, env = "ORLOJ_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Namespace of the fixtures and tasks.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// How many tasks to create.
    #[arg(long, default_value_t = 50)]
    pub tasks: usize,
    /// How many task creations run at once.
    #[arg(long, alias = "create-concurrency", default_value_t = 10)]
    pub concurrency: usize,
    /// How often task phases are polled.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// How long to wait for every task to end (alias --run-timeout).
    #[arg(long, alias = "run-timeout", default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// AgentSystem of the baseline tasks.
    #[arg(long, default_value = fixtures::PIPELINE_SYSTEM)]
    pub system: String,
    /// Do not apply the fixtures (endpoint, pipeline, timeout system) first.
    #[arg(long)]
    pub skip_setup: bool,
    /// Model of the mock endpoint and of `requirements.model`.
    #[arg(long, default_value = "gpt-4o")]
    pub model: String,
    /// `spec.requirements.region` of every task (empty: none).
    #[arg(long, default_value = "default")]
    pub region: String,
    /// Put no `requirements` on the tasks.
    #[arg(long)]
    pub no_requirements: bool,
    /// `spec.priority`.
    #[arg(long, default_value = "high")]
    pub priority: String,
    /// `spec.retry.max_attempts`.
    #[arg(long, default_value_t = 3)]
    pub retry_max_attempts: i64,
    /// `spec.retry.backoff`.
    #[arg(long, default_value = "2s")]
    pub retry_backoff: String,
    /// `spec.message_retry.max_attempts`.
    #[arg(long, default_value_t = 4)]
    pub message_retry_max_attempts: i64,
    /// `spec.message_retry.backoff`.
    #[arg(long, default_value = "200ms")]
    pub message_retry_backoff: String,
    /// `spec.message_retry.max_backoff`.
    #[arg(long, default_value = "2s")]
    pub message_retry_max_backoff: String,
    /// `spec.message_retry.jitter`.
    #[arg(long, default_value = "full")]
    pub message_retry_jitter: String,
    /// Wait until this many workers are Ready before creating tasks (0: do not wait).
    #[arg(long, default_value_t = 2)]
    pub min_ready_workers: usize,
    /// How long to wait for Ready workers.
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    pub worker_wait_timeout: Duration,
    /// Fraction of tasks on a system that does not exist (expected Failed).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub inject_invalid_system_rate: f64,
    /// Fraction of tasks on a system whose agent times out (expected DeadLetter).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub inject_timeout_system_rate: f64,
    /// Fraction of tasks injected as Running under a dead worker's expired lease (expected
    /// takeover, then Succeeded).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub inject_expired_lease_rate: f64,
    /// Gate defaults: quality-default, quality-ci or none.
    #[arg(long, default_value = "quality-default")]
    pub quality_profile: String,
    /// Minimum success rate of baseline tasks.
    #[arg(long)]
    pub min_success_rate: Option<f64>,
    /// Maximum dead-letter rate of baseline tasks.
    #[arg(long)]
    pub max_deadletter_rate: Option<f64>,
    /// Maximum failed rate of baseline tasks.
    #[arg(long)]
    pub max_failed_rate: Option<f64>,
    /// Maximum tasks still running at the timeout.
    #[arg(long)]
    pub max_timed_out: Option<u64>,
    /// Minimum task + message retries.
    #[arg(long)]
    pub min_retry_total: Option<i64>,
    /// Minimum takeover events.
    #[arg(long)]
    pub min_takeovers: Option<i64>,
    /// Maximum tasks that completed work twice.
    #[arg(long)]
    pub max_duplicates: Option<u64>,
    /// Maximum injected tasks that did not reach their expected outcome.
    #[arg(long)]
    pub max_unexpected_outcomes: Option<u64>,
    /// Run id (label and name part of the tasks); default: derived from the clock.
    #[arg(long)]
    pub run_id: Option<String>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a fraction between 0 and 1"))
    }
}

impl Args {
    /// The gates: the profile's defaults overridden by explicit flags.
    pub fn gates(&self) -> Result<Gates, String> {
        let mut g = Gates::profile(&self.quality_profile).ok_or_else(|| {
            format!(
                "unknown --quality-profile {:?} (expected quality-default, quality-ci or none)",
                self.quality_profile
            )
        })?;
        g.min_success_rate = self.min_success_rate.or(g.min_success_rate);
        g.max_deadletter_rate = self.max_deadletter_rate.or(g.max_deadletter_rate);
        g.max_failed_rate = self.max_failed_rate.or(g.max_failed_rate);
        g.max_timed_out = self.max_timed_out.or(g.max_timed_out);
        g.min_retry_total = self.min_retry_total.or(g.min_retry_total);
        g.min_takeovers = self.min_takeovers.or(g.min_takeovers);
        g.max_duplicates = self.max_duplicates.or(g.max_duplicates);
        g.max_unexpected_outcomes = self.max_unexpected_outcomes.or(g.max_unexpected_outcomes);
        Ok(g)
    }

    fn validate(&self) -> Result<(), String> {
        if self.inject_invalid_system_rate + self.inject_timeout_system_rate > 1.0 {
            return Err(
                "--inject-invalid-system-rate plus --inject-timeout-system-rate must not exceed 1"
                    .into(),
            );
        }
        if self.inject_invalid_system_rate
            + self.inject_timeout_system_rate
            + self.inject_expired_lease_rate
            > 1.0
        {
            return Err("the injection rates together must not exceed 1".into());
        }
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if self.poll_interval.is_zero() {
            return Err("--poll-interval must be positive".into());
        }
        self.gates().map(|_| ())
    }

    fn shape(&self, run_id: &str) -> TaskShape {
        let requirements = if self.no_requirements {
            json!({})
        } else {
            let mut r = serde_json::Map::new();
            if !self.region.trim().is_empty() {
                r.insert("region".into(), json!(self.region.trim()));
            }
            if !self.model.trim().is_empty() {
                r.insert("model".into(), json!(self.model.trim()));
            }
            Value::Object(r)
        };
        TaskShape {
            namespace: self.namespace.clone(),
            run_id: run_id.to_string(),
            system: self.system.clone(),
            priority: self.priority.clone(),
            retry: json!({"max_attempts": self.retry_max_attempts, "backoff": self.retry_backoff}),
            message_retry: json!({
                "max_attempts": self.message_retry_max_attempts,
                "backoff": self.message_retry_backoff,
                "max_backoff": self.message_retry_max_backoff,
                "jitter": self.message_retry_jitter,
            }),
            requirements,
        }
    }
}

/// Why a run could not be carried out (exit code 1).
#[derive(Debug)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ApiError> for RunError {
    fn from(e: ApiError) -> Self {
        RunError(e.to_string())
    }
}

/// Parses `args`, runs the load test and returns the exit code.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> u8 {
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    if let Err(e) = args.validate() {
        eprintln!("orloj-loadtest: {e}");
        return 1;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("orloj-loadtest: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(summary) => {
            match serde_json::to_string_pretty(&summary) {
                Ok(text) => println!("{text}"),
                Err(e) => {
                    eprintln!("orloj-loadtest: cannot encode the summary: {e}");
                    return 1;
                }
            }
            if summary.passed {
                0
            } else {
                for v in &summary.violations {
                    eprintln!("orloj-loadtest: gate failed: {v}");
                }
                2
            }
        }
        Err(e) => {
            eprintln!("orloj-loadtest: {e}");
            1
        }
    }
}

/// Runs one load test: setup, worker wait, creation (with injections), polling, summary.
pub async fn run(args: &Args) -> Result<report::Summary, RunError> {
    let client = ApiClient::new(&args.server, args.api_token.clone())?;
    client.get(&["healthz"], &[]).await.map_err(|e| match e {
        e @ ApiError::Unreachable { .. } => RunError(e.to_string()),
        e => RunError(format!("server at {} is not healthy: {e}", client.server())),
    })?;
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| chrono::Utc::now().format("%Y%m%d%H%M%S%3f").to_string());
    if !args.skip_setup {
        setup(&client, args).await?;
    }
    if args.min_ready_workers > 0 {
        wait_for_workers(&client, args.min_ready_workers, args.worker_wait_timeout).await?;
    }

    let kinds = fixtures::plan_kinds(
        args.tasks,
        args.inject_invalid_system_rate,
        args.inject_timeout_system_rate,
        args.inject_expired_lease_rate,
    );
    let shape = args.shape(&run_id);
    eprintln!(
        "orloj-loadtest: run {run_id}: creating {} tasks in namespace {} (concurrency {})",
        kinds.len(),
        args.namespace,
        args.concurrency
    );
    let results: Vec<(usize, Result<(), Failure>)> =
        futures::stream::iter(kinds.iter().copied().enumerate())
            .map(|(i, kind)| {
                let (client, shape) = (&client, &shape);
                async move { (i, create_task(client, shape, i, kind).await) }
            })
            .buffer_unordered(args.concurrency)
            .collect()
            .await;

    let mut facts = RunFacts {
        run_id: run_id.clone(),
        namespace: args.namespace.clone(),
        system: args.system.clone(),
        ..RunFacts::default()
    };
    let mut records: HashMap<String, TaskRecord> = HashMap::new();
    for (i, result) in results {
        let name = fixtures::task_name(&run_id, i);
        match result {
            Ok(()) => {
                records.insert(name.clone(), TaskRecord::new(name, kinds[i]));
            }
            Err(f) => {
                if f.unreachable {
                    return Err(RunError(f.message));
                }
                if f.injection {
                    facts.injection_errors += 1;
                    // The task exists; it is still observed.
                    records.insert(name.clone(), TaskRecord::new(name, kinds[i]));
                } else {
                    facts.create_errors += 1;
                }
                if facts.errors.len() < 10 {
                    facts.errors.push(f.message);
                }
            }
        }
    }

    poll(&client, args, &run_id, &mut records).await?;
    let mut records: Vec<TaskRecord> = records.into_values().collect();
    records.sort_by(|a, b| a.name.cmp(&b.name));
    let gates = args.gates().map_err(RunError)?;
    Ok(report::summarize(&records, facts, gates))
}

async fn setup(client: &ApiClient, args: &Args) -> Result<(), RunError> {
    for (plural, object) in fixtures::setup_objects(&args.namespace, &args.model) {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        client
            .call(
                Method::POST,
                &["v1", plural],
                &[("namespace", &args.namespace)],
                Some(&object),
                None,
            )
            .await
            .map_err(|e| RunError(format!("setup: cannot apply {plural}/{name}: {e}")))?;
    }
    eprintln!(
        "orloj-loadtest: fixtures applied in namespace {}",
        args.namespace
    );
    Ok(())
}

async fn wait_for_workers(
    client: &ApiClient,
    min: usize,
    timeout: Duration,
) -> Result<(), RunError> {
    let deadline = Instant::now() + timeout;
    loop {
        let list = client.get(&["v1", "workers"], &[]).await?;
        let ready = items(&list)
            .iter()
            .filter(|w| w.pointer("/status/phase").and_then(Value::as_str) == Some("Ready"))
            .count();
        if ready >= min {
            eprintln!("orloj-loadtest: {ready} workers Ready");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(RunError(format!(
                "only {ready} of the required {min} workers became Ready within {} (see --min-ready-workers)",
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn items(list: &Value) -> &[Value] {
    list.get("items")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A failed creation or injection.
struct Failure {
    message: String,
    injection: bool,
    unreachable: bool,
}

impl Failure {
    fn new(what: &str, injection: bool, e: ApiError) -> Self {
        Failure {
            unreachable: matches!(e, ApiError::Unreachable { .. }),
            message: format!("{what}: {e}"),
            injection,
        }
    }
}

async fn create_task(
    client: &ApiClient,
    shape: &TaskShape,
    i: usize,
    kind: TaskKind,
) -> Result<(), Failure> {
    let body = fixtures::task(shape, i, kind);
    let name = fixtures::task_name(&shape.run_id, i);
    let ns = [("namespace", shape.namespace.as_str())];
    let created = client
        .call_json(Method::POST, &["v1", "tasks"], &ns, Some(&body), None)
        .await
        .map_err(|e| Failure::new(&format!("create task {name}"), false, e))?;
    if kind != TaskKind::ExpiredLease {
        return Ok(());
    }
    // The task was created as a template, so nothing claims it before the lease is in place;
    // then it becomes a run task that only a takeover can pick up.
    let inject = |e| Failure::new(&format!("inject expired lease into {name}"), true, e);
    let rv = resource_version(&created);
    let status_body = json!({
        "metadata": {"resourceVersion": rv, "namespace": shape.namespace},
        "status": fixtures::expired_lease_status(chrono::Utc::now()),
    });
    let updated = client
        .call_json(
            Method::PUT,
            &["v1", "tasks", &name, "status"],
            &ns,
            Some(&status_body),
            None,
        )
        .await
        .map_err(inject)?;
    let mut task = updated;
    task["spec"]["mode"] = json!("run");
    let rv = resource_version(&task);
    client
        .call_json(
            Method::PUT,
            &["v1", "tasks", &name],
            &ns,
            Some(&task),
            Some(&rv),
        )
        .await
        .map_err(inject)?;
    Ok(())
}

fn resource_version(object: &Value) -> String {
    match object.pointer("/metadata/resourceVersion") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Lists the run's tasks until all are terminal or the timeout passes.
async fn poll(
    client: &ApiClient,
    args: &Args,
    run_id: &str,
    records: &mut HashMap<String, TaskRecord>,
) -> Result<(), RunError> {
    let selector = format!("{}={run_id}", fixtures::RUN_LABEL);
    let deadline = Instant::now() + args.timeout;
    let mut last_report = Instant::now();
    loop {
        let mut token = String::new();
        loop {
            let page = client
                .get(
                    &["v1", "tasks"],
                    &[
                        ("namespace", &args.namespace),
                        ("labelSelector", &selector),
                        ("limit", "500"),
                        ("continue", &token),
                    ],
                )
                .await?;
            for task in items(&page) {
                if let Some(r) = task
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .and_then(|n| records.get_mut(n))
                {
                    r.observe(task);
                }
            }
            match page.get("continue").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => token = t.to_string(),
                _ => break,
            }
        }
        let pending = records
            .values()
            .filter(|r| !report::is_terminal(&r.phase))
            .count();
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            eprintln!(
                "orloj-loadtest: timeout after {}: {pending} tasks not finished",
                humantime::format_duration(args.timeout)
            );
            return Ok(());
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "orloj-loadtest: {} of {} tasks finished",
                records.len() - pending,
                records.len()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(args.poll_interval).await;
    }
}
