//! What one load-test run observed, the metrics computed from it, and the quality gates.

use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// Which fault (if any) a task was created with, and so which outcome it should reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// A normal task on the load system: expected Succeeded.
    Baseline,
    /// A task naming a system that does not exist: expected Failed.
    InvalidSystem,
    /// A task on the always-timing-out system: expected DeadLetter.
    TimeoutSystem,
    /// A task injected as Running under a dead worker's expired lease: expected a takeover,
    /// then Succeeded.
    ExpiredLease,
}

impl TaskKind {
    /// The terminal phase this kind of task should end in.
    pub fn expected_phase(self) -> &'static str {
        match self {
            TaskKind::Baseline | TaskKind::ExpiredLease => "Succeeded",
            TaskKind::InvalidSystem => "Failed",
            TaskKind::TimeoutSystem => "DeadLetter",
        }
    }
}

/// What was observed about one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Task name.
    pub name: String,
    /// Fault class.
    pub kind: TaskKind,
    /// Last seen phase (empty when never seen).
    pub phase: String,
    /// `completedAt − metadata.createdAt`, when both were present.
    pub duration_ms: Option<u64>,
    /// `status.attempts`.
    pub attempts: i64,
    /// Σ (message attempts − 1).
    pub message_retries: i64,
    /// Messages in phase DeadLetter.
    pub message_deadletters: i64,
    /// History entries of type `takeover`.
    pub takeovers: i64,
    /// History entries of type `assignment_cleared`.
    pub assignment_cleared: i64,
    /// History entries of type `succeeded`.
    pub succeeded_events: i64,
    /// The largest number of `agent_end` trace events for one (attempt, branch, agent).
    pub max_agent_completions: i64,
    /// `status.lastError`.
    pub last_error: String,
}

/// Whether a phase is terminal.
pub fn is_terminal(phase: &str) -> bool {
    matches!(phase, "Succeeded" | "Failed" | "DeadLetter")
}

fn parse_time(v: Option<&Value>) -> Option<chrono::DateTime<chrono::Utc>> {
    v.and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

impl TaskRecord {
    /// A record for a task not observed yet.
    pub fn new(name: String, kind: TaskKind) -> Self {
        Self {
            name,
            kind,
            phase: String::new(),
            duration_ms: None,
            attempts: 0,
            message_retries: 0,
            message_deadletters: 0,
            takeovers: 0,
            assignment_cleared: 0,
            succeeded_events: 0,
            max_agent_completions: 0,
            last_error: String::new(),
        }
    }

    /// Updates the record from a task object as the API returns it.
    pub fn observe(&mut self, task: &Value) {
        let status = task.get("status").cloned().unwrap_or(Value::Null);
        let s = |key: &str| {
            status
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        self.phase = s("phase");
        self.last_error = s("lastError");
        self.attempts = status.get("attempts").and_then(Value::as_i64).unwrap_or(0);
        let created = parse_time(
            task.pointer("/metadata/createdAt")
                .or_else(|| task.pointer("/metadata/creationTimestamp")),
        );
        let completed = parse_time(status.get("completedAt"));
        self.duration_ms = match (created, completed) {
            (Some(a), Some(b)) if b >= a => u64::try_from((b - a).num_milliseconds()).ok(),
            _ => None,
        };
        let empty = Vec::new();
        let list = |key: &str| status.get(key).and_then(Value::as_array).unwrap_or(&empty);
        let count_history = |ty: &str| {
            list("history")
                .iter()
                .filter(|h| h.get("type").and_then(Value::as_str) == Some(ty))
                .count() as i64
        };
        self.takeovers = count_history("takeover");
        self.assignment_cleared = count_history("assignment_cleared");
        self.succeeded_events = count_history("succeeded");
        self.message_retries = list("messages")
            .iter()
            .map(|m| (m.get("attempts").and_then(Value::as_i64).unwrap_or(0) - 1).max(0))
            .sum();
        self.message_deadletters = list("messages")
            .iter()
            .filter(|m| {
                m.get("phase")
                    .and_then(Value::as_str)
                    .is_some_and(|p| p.eq_ignore_ascii_case("deadletter"))
            })
            .count() as i64;
        let mut completions: HashMap<(i64, String, String), i64> = HashMap::new();
        for t in list("trace") {
            if t.get("type").and_then(Value::as_str) != Some("agent_end") {
                continue;
            }
            let field = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let attempt = t.get("attempt").and_then(Value::as_i64).unwrap_or(0);
            *completions
                .entry((attempt, field("branch_id"), field("agent")))
                .or_default() += 1;
        }
        self.max_agent_completions = completions.values().copied().max().unwrap_or(0);
    }

    /// Whether the task shows work completed twice: two `succeeded` history entries, or an
    /// agent that ended twice in the same attempt and branch.
    pub fn is_duplicate(&self) -> bool {
        self.succeeded_events > 1 || self.max_agent_completions > 1
    }

    /// Whether the task ended as its fault class predicts (an injected expired lease must also
    /// have been taken over).
    pub fn as_expected(&self) -> bool {
        self.phase == self.kind.expected_phase()
            && (self.kind != TaskKind::ExpiredLease || self.takeovers > 0)
    }
}

/// The quality gates; `None` disables a gate.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Gates {
    /// Profile the defaults came from.
    pub profile: String,
    /// Minimum success rate over terminal baseline tasks.
    pub min_success_rate: Option<f64>,
    /// Maximum dead-letter rate over terminal baseline tasks.
    pub max_deadletter_rate: Option<f64>,
    /// Maximum failed rate over terminal baseline tasks.
    pub max_failed_rate: Option<f64>,
    /// Maximum tasks not terminal when the run timed out.
    pub max_timed_out: Option<u64>,
    /// Minimum task + message retries.
    pub min_retry_total: Option<i64>,
    /// Minimum `takeover` history entries.
    pub min_takeovers: Option<i64>,
    /// Maximum tasks that completed work twice.
    pub max_duplicates: Option<u64>,
    /// Maximum injected tasks that did not reach their expected outcome.
    pub max_unexpected_outcomes: Option<u64>,
}

impl Gates {
    /// The gates of a named profile (`quality-default`, `quality-ci`, `none`).
    pub fn profile(name: &str) -> Option<Gates> {
        let (success, deadletter, failed) = match name {
            "quality-default" => (0.90, 0.10, 0.10),
            "quality-ci" => (0.85, 0.15, 0.15),
            "none" => {
                return Some(Gates {
                    profile: name.into(),
                    ..Gates::default()
                });
            }
            _ => return None,
        };
        Some(Gates {
            profile: name.into(),
            min_success_rate: Some(success),
            max_deadletter_rate: Some(deadletter),
            max_failed_rate: Some(failed),
            max_timed_out: Some(0),
            min_retry_total: None,
            min_takeovers: None,
            max_duplicates: Some(0),
            max_unexpected_outcomes: Some(0),
        })
    }
}

/// Counts per phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcomes {
    /// Tasks observed.
    pub total: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// DeadLetter.
    pub deadletter: u64,
    /// Not terminal at the end of the run.
    pub timed_out: u64,
}

impl Outcomes {
    fn add(&mut self, r: &TaskRecord) {
        self.total += 1;
        match r.phase.as_str() {
            "Succeeded" => self.succeeded += 1,
            "Failed" => self.failed += 1,
            "DeadLetter" => self.deadletter += 1,
            _ => self.timed_out += 1,
        }
    }

    fn terminal(&self) -> u64 {
        self.succeeded + self.failed + self.deadletter
    }

    fn rate(&self, n: u64) -> f64 {
        match self.terminal() {
            0 => 0.0,
            t => n as f64 / t as f64,
        }
    }
}

/// Rates over terminal tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Succeeded / terminal.
    pub success: f64,
    /// Failed / terminal.
    pub failed: f64,
    /// DeadLetter / terminal.
    pub deadletter: f64,
}

/// Latency of terminal tasks (creation → completion).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: u64,
    /// 95th percentile.
    pub p95_ms: u64,
    /// Largest.
    pub max_ms: u64,
}

/// One injected task that did not end as expected.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unexpected {
    /// Task name.
    pub task: String,
    /// Fault class.
    pub kind: TaskKind,
    /// Expected phase.
    pub expected: String,
    /// Observed phase.
    pub phase: String,
    /// Its last error.
    pub last_error: String,
}

/// The JSON summary printed on stdout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Run id (the `orloj.dev/loadtest-run` label of its tasks).
    pub run_id: String,
    /// Namespace of the tasks.
    pub namespace: String,
    /// System of the baseline tasks.
    pub system: String,
    /// Tasks created.
    pub created: u64,
    /// Task creations that failed.
    pub create_errors: u64,
    /// Fault injections that failed.
    pub injection_errors: u64,
    /// First few creation/injection error messages.
    pub errors: Vec<String>,
    /// Tasks created per fault class.
    pub injected: BTreeMap<String, u64>,
    /// All tasks.
    pub succeeded: u64,
    /// All tasks.
    pub failed: u64,
    /// All tasks.
    pub deadletter: u64,
    /// Tasks not terminal when the run timed out.
    pub timed_out: u64,
    /// Rates over all terminal tasks.
    pub rates: Rates,
    /// Baseline tasks only (the quality gates apply to these).
    pub baseline: Outcomes,
    /// Rates over terminal baseline tasks.
    pub baseline_rates: Rates,
    /// Per fault class.
    pub by_kind: BTreeMap<String, Outcomes>,
    /// Injected tasks that did not end as expected.
    pub unexpected: Vec<Unexpected>,
    /// Latency of all terminal tasks.
    pub latency: Latency,
    /// Σ (attempts − 1).
    pub task_retries: i64,
    /// Σ (message attempts − 1).
    pub message_retries: i64,
    /// Task + message retries.
    pub retry_total: i64,
    /// Messages that dead-lettered.
    pub message_deadletters: i64,
    /// `takeover` history entries.
    pub takeovers: i64,
    /// `assignment_cleared` history entries.
    pub assignment_cleared: i64,
    /// Tasks that completed work twice (see [`TaskRecord::is_duplicate`]).
    pub duplicates: Vec<String>,
    /// The gates applied.
    pub gates: Gates,
    /// Gate violations (empty = pass).
    pub violations: Vec<String>,
    /// Whether every gate passed.
    pub passed: bool,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // Nearest rank.
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Inputs of [`summarize`] besides the task records.
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    /// Run id.
    pub run_id: String,
    /// Namespace.
    pub namespace: String,
    /// Baseline system.
    pub system: String,
    /// Failed creations.
    pub create_errors: u64,
    /// Failed injections.
    pub injection_errors: u64,
    /// Error messages (a few).
    pub errors: Vec<String>,
}

/// Computes the summary and evaluates the gates.
pub fn summarize(records: &[TaskRecord], facts: RunFacts, gates: Gates) -> Summary {
    let mut all = Outcomes::default();
    let mut baseline = Outcomes::default();
    let mut by_kind: BTreeMap<String, Outcomes> = BTreeMap::new();
    let mut injected: BTreeMap<String, u64> = BTreeMap::new();
    let mut durations = Vec::new();
    let (mut task_retries, mut message_retries, mut message_deadletters) = (0, 0, 0);
    let (mut takeovers, mut assignment_cleared) = (0, 0);
    let mut duplicates = Vec::new();
    let mut unexpected = Vec::new();
    for r in records {
        let key = serde_json::to_value(r.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        all.add(r);
        by_kind.entry(key.clone()).or_default().add(r);
        if r.kind == TaskKind::Baseline {
            baseline.add(r);
        } else {
            *injected.entry(key).or_default() += 1;
            if is_terminal(&r.phase) && !r.as_expected() {
                unexpected.push(Unexpected {
                    task: r.name.clone(),
                    kind: r.kind,
                    expected: r.kind.expected_phase().into(),
                    phase: r.phase.clone(),
                    last_error: r.last_error.clone(),
                });
            }
        }
        if is_terminal(&r.phase)
            && let Some(d) = r.duration_ms
        {
            durations.push(d);
        }
        task_retries += (r.attempts - 1).max(0);
        message_retries += r.message_retries;
        message_deadletters += r.message_deadletters;
        takeovers += r.takeovers;
        assignment_cleared += r.assignment_cleared;
        if r.is_duplicate() {
            duplicates.push(r.name.clone());
        }
    }
    durations.sort_unstable();
    let rates = |o: &Outcomes| Rates {
        success: o.rate(o.succeeded),
        failed: o.rate(o.failed),
        deadletter: o.rate(o.deadletter),
    };
    let retry_total = task_retries + message_retries;
    let baseline_rates = rates(&baseline);

    let mut violations = Vec::new();
    if all.terminal() == 0 {
        violations.push("no task reached a terminal phase".to_string());
    }
    if facts.create_errors > 0 {
        violations.push(format!("{} task creations failed", facts.create_errors));
    }
    if facts.injection_errors > 0 {
        violations.push(format!(
            "{} fault injections failed",
            facts.injection_errors
        ));
    }
    if let Some(max) = gates.max_timed_out
        && all.timed_out > max
    {
        violations.push(format!(
            "{} tasks did not finish in time (max {max})",
            all.timed_out
        ));
    }
    if baseline.terminal() > 0 {
        if let Some(min) = gates.min_success_rate
            && baseline_rates.success < min
        {
            violations.push(format!(
                "success rate {:.3} < {min}",
                baseline_rates.success
            ));
        }
        if let Some(max) = gates.max_deadletter_rate
            && baseline_rates.deadletter > max
        {
            violations.push(format!(
                "deadletter rate {:.3} > {max}",
                baseline_rates.deadletter
            ));
        }
        if let Some(max) = gates.max_failed_rate
            && baseline_rates.failed > max
        {
            violations.push(format!("failed rate {:.3} > {max}", baseline_rates.failed));
        }
    }
    if let Some(min) = gates.min_retry_total
        && retry_total < min
    {
        violations.push(format!("retry total {retry_total} < {min}"));
    }
    if let Some(min) = gates.min_takeovers
        && takeovers < min
    {
        violations.push(format!("takeovers {takeovers} < {min}"));
    }
    if let Some(max) = gates.max_duplicates
        && duplicates.len() as u64 > max
    {
        violations.push(format!(
            "{} tasks completed work twice (max {max})",
            duplicates.len()
        ));
    }
    if let Some(max) = gates.max_unexpected_outcomes
        && unexpected.len() as u64 > max
    {
        violations.push(format!(
            "{} injected tasks did not reach their expected outcome (max {max})",
            unexpected.len()
        ));
    }

    Summary {
        run_id: facts.run_id,
        namespace: facts.namespace,
        system: facts.system,
        created: records.len() as u64,
        create_errors: facts.create_errors,
        injection_errors: facts.injection_errors,
        errors: facts.errors,
        injected,
        succeeded: all.succeeded,
        failed: all.failed,
        deadletter: all.deadletter,
        timed_out: all.timed_out,
        rates: rates(&all),
        baseline,
        baseline_rates,
        by_kind,
        unexpected,
        latency: Latency {
            p50_ms: percentile(&durations, 0.50),
            p95_ms: percentile(&durations, 0.95),
            max_ms: durations.last().copied().unwrap_or(0),
        },
        task_retries,
        message_retries,
        retry_total,
        message_deadletters,
        takeovers,
        assignment_cleared,
        duplicates,
        passed: violations.is_empty(),
        violations,
        gates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(kind: TaskKind, task: Value) -> TaskRecord {
        let mut r = TaskRecord::new("t".into(), kind);
        r.observe(&task);
        r
    }

    #[test]
    fn observe_reads_history_trace_messages_and_duration() {
        let r = record(
            TaskKind::ExpiredLease,
            json!({
                "metadata": {"createdAt": "2026-01-01T00:00:00Z"},
                "status": {
                    "phase": "Succeeded", "attempts": 2, "completedAt": "2026-01-01T00:00:01.5Z",
                    "history": [{"type": "takeover"}, {"type": "claim"}, {"type": "succeeded"}],
                    "messages": [{"attempts": 3, "phase": "Succeeded"}, {"attempts": 1, "phase": "DeadLetter"}],
                    "trace": [
                        {"type": "agent_end", "agent": "a", "attempt": 1},
                        {"type": "agent_end", "agent": "a", "attempt": 2},
                        {"type": "agent_start", "agent": "a", "attempt": 2}
                    ]
                }
            }),
        );
        assert_eq!(r.duration_ms, Some(1500));
        assert_eq!((r.takeovers, r.succeeded_events), (1, 1));
        assert_eq!((r.message_retries, r.message_deadletters), (2, 1));
        assert_eq!(r.max_agent_completions, 1);
        assert!(!r.is_duplicate());
        assert!(r.as_expected());
    }

    #[test]
    fn duplicates_are_detected_from_history_and_trace() {
        let twice = record(
            TaskKind::Baseline,
            json!({"status": {"phase": "Succeeded",
                "history": [{"type": "succeeded"}, {"type": "succeeded"}]}}),
        );
        assert!(twice.is_duplicate());
        let step_twice = record(
            TaskKind::Baseline,
            json!({"status": {"phase": "Succeeded", "trace": [
                {"type": "agent_end", "agent": "a", "attempt": 1},
                {"type": "agent_end", "agent": "a", "attempt": 1}]}}),
        );
        assert!(step_twice.is_duplicate());
    }

    #[test]
    fn gates_apply_to_baseline_tasks_and_expectations_to_injected_ones() {
        let mk =
            |kind, phase: &str| record(kind, json!({"status": {"phase": phase, "lastError": "x"}}));
        let mut records = vec![mk(TaskKind::Baseline, "Succeeded"); 9];
        records.push(mk(TaskKind::InvalidSystem, "Failed"));
        records.push(mk(TaskKind::TimeoutSystem, "DeadLetter"));
        let gates = Gates::profile("quality-default").expect("profile");
        let s = summarize(&records, RunFacts::default(), gates.clone());
        assert!(s.passed, "{:?}", s.violations);
        assert_eq!((s.succeeded, s.failed, s.deadletter), (9, 1, 1));
        assert_eq!(s.baseline_rates.success, 1.0);

        // An injected fault that ended otherwise, a slow task and baseline failures.
        records.push(mk(TaskKind::InvalidSystem, "Succeeded"));
        records.push(mk(TaskKind::Baseline, "Running"));
        records.push(mk(TaskKind::Baseline, "Failed"));
        records.push(mk(TaskKind::Baseline, "Failed"));
        let s = summarize(&records, RunFacts::default(), gates);
        assert!(!s.passed);
        assert_eq!(s.unexpected.len(), 1);
        assert_eq!(s.timed_out, 1);
        // Baseline: 9 of 11 terminal succeeded, 2 failed.
        assert_eq!(s.violations.len(), 4, "{:?}", s.violations);
        assert!(s.violations.iter().any(|v| v.starts_with("failed rate")));
        assert!(s.violations.iter().any(|v| v.starts_with("success rate")));
    }

    #[test]
    fn takeover_gate_and_expired_lease_expectation() {
        let no_takeover = record(
            TaskKind::ExpiredLease,
            json!({"status": {"phase": "Succeeded"}}),
        );
        assert!(!no_takeover.as_expected());
        let gates = Gates {
            min_takeovers: Some(1),
            ..Gates::profile("none").expect("profile")
        };
        let s = summarize(&[no_takeover], RunFacts::default(), gates);
        assert_eq!(s.violations, vec!["takeovers 0 < 1".to_string()]);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.95), 95);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[7], 0.95), 7);
    }
}
