//! One agent turn: the bounded model↔tool loop of spec runtime §6.
//!
//! [`AgentRunner::run`] assembles the prompt, calls the model once per step, runs the tool calls
//! it asks for through a [`ToolExecutor`], enforces the execution profile and limits, and returns
//! a [`TurnOutcome`] with the step events (as text and as trace entries), token accounting and
//! the error chosen by the precedence of §6.3.

use super::trace;
use orloj_core::Object;
use orloj_core::clock::Clock;
use orloj_core::model::{ChatMessage, ModelRequest, ResolvedModel, Role, ToolCall, ToolDefinition};
use orloj_core::resources::{AgentSpec, TaskTraceEvent, ToolSpec, parse_duration, spec_of};
use orloj_core::task_queue::format_time;
use orloj_core::tool::{
    TOOL_CONTRACT_VERSION, ToolError, ToolErrorCode, ToolExecutor, ToolInvocation,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Tool results longer than this are truncated before they go back to the model.
pub const MAX_TOOL_RESULT_BYTES: usize = 64 * 1024;
/// At most this many step events are kept per turn.
pub const MAX_EVENTS: usize = 300;
/// Pause before each step (the reference ticks every 25ms).
pub const DEFAULT_STEP_INTERVAL: Duration = Duration::from_millis(25);
/// Per-call tool timeout when the Tool sets none.
const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything one turn needs.
#[derive(Debug, Clone)]
pub struct TurnInput {
    /// Task namespace.
    pub namespace: String,
    /// Task as `namespace/name`.
    pub task_id: String,
    /// Agent name.
    pub agent: String,
    /// The agent's normalized spec.
    pub spec: AgentSpec,
    /// The resolved model.
    pub model: ResolvedModel,
    /// The agent's Tool objects (names as in `spec.tools`).
    pub tools: Vec<Object>,
    /// Task input plus `inbox.*`, `previous_agent*` and join keys.
    pub inputs: BTreeMap<String, String>,
}

/// Why a turn failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnError {
    /// The text task-level failure handling classifies (§2.3).
    pub message: String,
    /// A structured tool error, for contract violations and denials.
    pub tool_error: Option<ToolError>,
    /// The turn is waiting for a tool approval.
    pub approval_pending: bool,
}

impl std::fmt::Display for TurnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The result of one turn.
#[derive(Debug, Clone, Default)]
pub struct TurnOutcome {
    /// Highest step started.
    pub steps: u32,
    /// Successful tool calls (including short-circuited duplicates).
    pub tool_calls: u32,
    /// Working-memory writes.
    pub memory_writes: u32,
    /// Last non-empty model output.
    pub output: String,
    /// Last raw event text.
    pub last_event: String,
    /// Step events as text, oldest first.
    pub events: Vec<String>,
    /// Step events as trace entries (timestamp, type, agent, step and parsed fields).
    pub trace: Vec<TaskTraceEvent>,
    /// Tokens used (§6.4).
    pub tokens_used: u64,
    /// `provider`, `estimated`, `mixed`, `fixed` or `unknown`.
    pub token_usage_source: String,
    /// The turn estimate: 1 + prompt/4 + 120×steps + 40×tool_calls.
    pub estimated_tokens: u64,
    /// Wall time of the turn.
    pub duration: Duration,
    /// Set when the turn failed.
    pub error: Option<TurnError>,
}

/// A token budget for one turn: the task's limit and what earlier agents already used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenBudget {
    /// `max_tokens_per_run` of the matched policies (0 = none).
    pub limit: u64,
    /// Tokens the task used before this turn.
    pub used: u64,
}

/// Runs agent turns against one tool executor.
#[derive(Clone)]
pub struct AgentRunner {
    tools: Arc<dyn ToolExecutor>,
    clock: Arc<dyn Clock>,
    step_interval: Duration,
}

impl std::fmt::Debug for AgentRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRunner").finish_non_exhaustive()
    }
}

/// The per-call estimate of §6.4 (shared with the model gateway).
pub use crate::model::estimate_call_tokens;

/// The turn estimate of §6.4.
pub fn estimate_turn_tokens(prompt: &str, steps: u32, tool_calls: u32) -> u64 {
    1 + prompt.chars().count() as u64 / 4 + 120 * u64::from(steps) + 40 * u64::from(tool_calls)
}

/// Truncates a tool result to [`MAX_TOOL_RESULT_BYTES`] on a char boundary.
pub fn truncate_tool_result(result: &str) -> String {
    if result.len() <= MAX_TOOL_RESULT_BYTES {
        return result.to_string();
    }
    let mut end = MAX_TOOL_RESULT_BYTES;
    while !result.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}[output truncated]", &result[..end])
}

/// Tool calls named in model text: JSON (`name`/`tool` + `input`, `tools[]`, `tool_calls[]`,
/// optionally in a fenced block), else the first `tool: <name> input: <text>` / `tool=<name>`
/// line.
pub fn parse_text_tool_calls(content: &str, step: u32) -> Vec<ToolCall> {
    let trimmed = content.trim();
    let json_text = match trimmed.find("```") {
        Some(start) => {
            let rest = &trimmed[start + 3..];
            let rest = rest.strip_prefix("json").unwrap_or(rest);
            rest.split("```").next().unwrap_or("").trim()
        }
        None => trimmed,
    };
    let make = |i: usize, name: &str, input: String| ToolCall {
        id: format!("call_{step}_{i}"),
        name: name.trim().to_string(),
        input,
    };
    if let Ok(value) = serde_json::from_str::<Value>(json_text) {
        let one = |v: &Value| -> Option<(String, String)> {
            let name = v
                .get("name")
                .or_else(|| v.get("tool"))
                .and_then(Value::as_str)?;
            let input = match v.get("input").or_else(|| v.get("arguments")) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            Some((name.to_string(), input))
        };
        let list = value
            .get("tools")
            .or_else(|| value.get("tool_calls"))
            .and_then(Value::as_array);
        let pairs: Vec<(String, String)> = match list {
            Some(items) => items.iter().filter_map(one).collect(),
            None => one(&value).into_iter().collect(),
        };
        return pairs
            .into_iter()
            .filter(|(n, _)| !n.trim().is_empty())
            .enumerate()
            .map(|(i, (n, input))| make(i, &n, input))
            .collect();
    }
    for line in trimmed.lines() {
        let line = line.trim();
        let lower = line.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("tool:") {
            let offset = line.len() - rest.len();
            let rest_orig = &line[offset..];
            let (name, input) = match rest.find("input:") {
                Some(pos) => (&rest_orig[..pos], rest_orig[pos + 6..].trim().to_string()),
                None => (rest_orig, String::new()),
            };
            if !name.trim().is_empty() {
                return vec![make(0, name, input)];
            }
        } else if let Some(rest) = lower.strip_prefix("tool=") {
            let offset = line.len() - rest.len();
            let name = line[offset..].split_whitespace().next().unwrap_or("");
            if !name.is_empty() {
                return vec![make(0, name, String::new())];
            }
        }
    }
    Vec::new()
}

/// Awaits `fut` unless the deadline passes first (`None`).
async fn within<T>(deadline: Option<Instant>, fut: impl Future<Output = T>) -> Option<T> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

enum Flow {
    Continue,
    Done,
    Stop,
}

struct Turn<'a> {
    input: &'a TurnInput,
    clock: &'a dyn Clock,
    out: TurnOutcome,
    contract: bool,
    /// Tools that succeeded, lower-cased name → (input, result) of each success.
    succeeded: HashMap<String, Vec<(String, String)>>,
    call_tokens: Vec<(u64, &'static str)>,
    model_errors: Vec<String>,
    model_successes: u32,
    denied: Option<String>,
    approval: Option<String>,
    violation: Option<String>,
    budget_exceeded: Option<String>,
    timed_out: bool,
}

impl Turn<'_> {
    fn event(&mut self, text: String) {
        if self.out.events.len() >= MAX_EVENTS {
            return;
        }
        let mut t = trace::step_event(&self.input.agent, &text);
        t.timestamp = format_time(self.clock.now());
        self.out.trace.push(t);
        self.out.last_event = text.clone();
        self.out.events.push(text);
    }

    fn remaining_sequence(&self) -> Vec<&str> {
        self.input
            .spec
            .execution
            .tool_sequence
            .iter()
            .filter(|t| !self.succeeded.contains_key(&t.to_lowercase()))
            .map(String::as_str)
            .collect()
    }

    fn missing_markers(&self) -> Vec<&str> {
        self.input
            .spec
            .execution
            .required_output_markers
            .iter()
            .filter(|m| !self.out.output.contains(m.as_str()))
            .map(String::as_str)
            .collect()
    }

    fn contract_satisfied(&self) -> bool {
        self.contract && self.remaining_sequence().is_empty() && self.missing_markers().is_empty()
    }

    /// Records a contract violation; with `observe` the turn goes on.
    fn violate(&mut self, step: u32, reason: String) -> Flow {
        self.event(format!("step={step} contract_violation {reason}"));
        if self.input.spec.execution.on_contract_violation == "observe" {
            Flow::Continue
        } else {
            self.violation = Some(reason);
            Flow::Stop
        }
    }

    /// End-of-output contract check: violation for sequence tools never called, a warning for
    /// missing markers.
    fn finish_contract(&mut self, step: u32) -> Flow {
        if !self.contract {
            return Flow::Done;
        }
        let remaining = self.remaining_sequence().join(",");
        if !remaining.is_empty() {
            return match self.violate(step, format!("missing_tools={remaining}")) {
                Flow::Stop => Flow::Stop,
                _ => Flow::Done,
            };
        }
        let markers = self.missing_markers().join(",");
        if !markers.is_empty() {
            self.event(format!("contract_warning missing_markers={markers}"));
        }
        Flow::Done
    }

    fn tool_object(&self, name: &str) -> Option<&Object> {
        self.input
            .tools
            .iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    fn definitions(&self, names: &[String]) -> Vec<ToolDefinition> {
        names
            .iter()
            .map(|name| {
                let spec = self
                    .tool_object(name)
                    .and_then(|o| spec_of::<ToolSpec>(o).ok())
                    .unwrap_or_default();
                ToolDefinition {
                    name: name.clone(),
                    description: if spec.description.trim().is_empty() {
                        format!("Invoke tool {name}")
                    } else {
                        spec.description.clone()
                    },
                    parameters: spec.input_schema.clone().unwrap_or_else(|| {
                        json!({"type": "object", "properties": {"input": {"type": "string"}},
                               "additionalProperties": true})
                    }),
                }
            })
            .collect()
    }
}

impl AgentRunner {
    /// A runner executing tool calls through `tools`.
    pub fn new(tools: Arc<dyn ToolExecutor>, clock: Arc<dyn Clock>) -> Self {
        Self {
            tools,
            clock,
            step_interval: DEFAULT_STEP_INTERVAL,
        }
    }

    /// The tool executor calls go through.
    pub fn tools(&self) -> Arc<dyn ToolExecutor> {
        self.tools.clone()
    }

    /// Replaces the tool executor (e.g. with one wrapped in a per-task authorizer).
    pub fn with_tools(mut self, tools: Arc<dyn ToolExecutor>) -> Self {
        self.tools = tools;
        self
    }

    /// Sets the pause before each step (default 25ms, the reference's step cadence; it is what
    /// makes very short `limits.timeout` values fire deterministically).
    pub fn with_step_interval(mut self, interval: Duration) -> Self {
        self.step_interval = interval;
        self
    }

    /// Runs one turn to completion; failures are reported in [`TurnOutcome::error`].
    pub async fn run(&self, input: &TurnInput) -> TurnOutcome {
        self.run_with_budget(input, None).await
    }

    /// Like [`AgentRunner::run`], under a token budget checked before every model call: when
    /// the tokens already used by the task plus this turn's calls reach `budget.limit`, the
    /// turn stops with a non-retryable `token budget exceeded` error instead of calling.
    pub async fn run_with_budget(
        &self,
        input: &TurnInput,
        budget: Option<TokenBudget>,
    ) -> TurnOutcome {
        let started = Instant::now();
        let spec = &input.spec;
        let mut turn = Turn {
            input,
            clock: self.clock.as_ref(),
            out: TurnOutcome::default(),
            contract: spec.execution.profile == "contract",
            succeeded: HashMap::new(),
            call_tokens: Vec::new(),
            model_errors: Vec::new(),
            model_successes: 0,
            denied: None,
            approval: None,
            violation: None,
            budget_exceeded: None,
            timed_out: false,
        };
        let timeout = if spec.limits.timeout.trim().is_empty() {
            None
        } else {
            match parse_duration(&spec.limits.timeout) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => None,
                Err(_) => {
                    turn.out.error = Some(TurnError {
                        message: format!("invalid agent timeout {:?}", spec.limits.timeout),
                        tool_error: None,
                        approval_pending: false,
                    });
                    return turn.out;
                }
            }
        };
        let deadline = timeout.map(|d| started + d);
        self.steps(&mut turn, deadline, budget).await;
        self.finish(turn, started, timeout)
    }

    async fn steps(
        &self,
        turn: &mut Turn<'_>,
        deadline: Option<Instant>,
        budget: Option<TokenBudget>,
    ) {
        let input = turn.input;
        let spec = &input.spec;
        let max_steps = u32::try_from(spec.limits.max_steps.max(1)).unwrap_or(u32::MAX);
        if let Some(from) = input.inputs.get("inbox.from").filter(|s| !s.is_empty()) {
            let content = input
                .inputs
                .get("inbox.content")
                .cloned()
                .unwrap_or_default();
            turn.event(format!("inbox from={from} content={content}"));
        }
        let mut history = Vec::new();
        if !spec.prompt.trim().is_empty() {
            history.push(ChatMessage::text(Role::System, spec.prompt.clone()));
        }
        let mut context: BTreeMap<String, String> = input
            .inputs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        context.insert("agent".into(), input.agent.clone());
        context.insert("namespace".into(), input.namespace.clone());
        context.insert("model_ref".into(), spec.model_ref.clone());
        // Shared with each request; unique again once the call has dropped its request, so
        // setting the next step's number copies nothing.
        let mut context = Arc::new(context);
        let short_circuit = spec.execution.duplicate_tool_call_policy != "deny";

        for step in 1..=max_steps {
            if !self.step_interval.is_zero()
                && within(deadline, tokio::time::sleep(self.step_interval))
                    .await
                    .is_none()
            {
                turn.timed_out = true;
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                turn.timed_out = true;
                break;
            }
            turn.out.steps = step;
            let available: Vec<String> = spec
                .tools
                .iter()
                .filter(|t| !(short_circuit && turn.succeeded.contains_key(&t.to_lowercase())))
                .cloned()
                .collect();
            Arc::make_mut(&mut context).insert("step".into(), step.to_string());
            let mut text = format!("step={step}");
            if !available.is_empty() {
                let _ = write!(text, "\ntools={}", available.join(","));
            }
            text.push_str("\ncontext=");
            for (i, (k, v)) in context.iter().enumerate() {
                let separator = if i == 0 { "" } else { "," };
                // Writing into a String cannot fail.
                let _ = write!(text, "{separator}{k}={v}");
            }
            history.push(ChatMessage::text(Role::User, text));
            if let Some(b) = budget.filter(|b| b.limit > 0) {
                let used = b.used + turn.call_tokens.iter().map(|(t, _)| t).sum::<u64>();
                if used >= b.limit {
                    let text = format!(
                        "token budget exceeded before model call: agent=\"{}\" step={step} used={used} budget={}",
                        input.agent, b.limit
                    );
                    turn.event(format!(
                        "step={step} token_budget_exceeded used={used} budget={}",
                        b.limit
                    ));
                    turn.budget_exceeded = Some(text);
                    return;
                }
            }
            let request = ModelRequest {
                model: input.model.model.clone(),
                messages: history.clone(),
                tools: turn.definitions(&available),
                agent: input.agent.clone(),
                namespace: input.namespace.clone(),
                step,
                context: Arc::clone(&context),
            };
            let call_started = Instant::now();
            let Some(result) = within(deadline, input.model.client.complete(request)).await else {
                turn.timed_out = true;
                break;
            };
            let latency = call_started.elapsed().as_millis();
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    turn.event(format!("step={step} model_error={e} latency_ms={latency}"));
                    turn.model_errors.push(e.to_string());
                    history.pop();
                    continue;
                }
            };
            turn.model_successes += 1;
            let (tokens, in_t, out_t, source) = match response.usage {
                Some(u) if u.total_tokens > 0 || u.input_tokens + u.output_tokens > 0 => {
                    let total = if u.total_tokens > 0 {
                        u.total_tokens
                    } else {
                        u.input_tokens + u.output_tokens
                    };
                    (total, u.input_tokens, u.output_tokens, "provider")
                }
                _ => (
                    estimate_call_tokens(
                        &spec.prompt,
                        &response.content,
                        &response.tool_calls,
                        step,
                    ),
                    0,
                    0,
                    "estimated",
                ),
            };
            turn.call_tokens.push((tokens, source));
            turn.event(format!(
                "step={step} model success tokens={tokens} input_tokens={in_t} output_tokens={out_t} usage_source={source} latency_ms={latency}"
            ));
            if !response.content.trim().is_empty() {
                turn.out.output = response.content.clone();
                turn.event(format!("step={step} model_output={}", response.content));
            }
            history.push(ChatMessage {
                role: Role::Assistant,
                content: response.content.clone(),
                tool_calls: response.tool_calls.clone(),
                tool_call_id: None,
                name: None,
            });
            if turn.contract_satisfied() {
                return;
            }
            if available.is_empty() {
                turn.event("no tools configured".into());
                if !turn.out.output.is_empty() {
                    match turn.finish_contract(step) {
                        Flow::Continue => {}
                        Flow::Done | Flow::Stop => return,
                    }
                }
                continue;
            }
            let calls = if response.tool_calls.is_empty() {
                parse_text_tool_calls(&response.content, step)
            } else {
                response.tool_calls.clone()
            };
            if let Some(bad) = calls
                .iter()
                .find(|c| !spec.tools.iter().any(|t| t.eq_ignore_ascii_case(&c.name)))
            {
                let error = format!(
                    "model requested unauthorized tool={} allowed={}",
                    bad.name,
                    available.join(",")
                );
                turn.event(format!(
                    "step={step} tool={} status=denied tool_code=permission_denied tool_reason=tool_permission_denied retryable=false error={error}",
                    bad.name
                ));
                turn.event("permission denied".into());
                turn.event("worker stopped permission denied".into());
                turn.denied = Some(format!(
                    "tool permission denied: agent={} step={step} tool={} error={error}",
                    input.agent, bad.name
                ));
                return;
            }
            if calls.is_empty() {
                turn.event("no tool call requested".into());
                if !turn.out.output.is_empty() && !turn.contract {
                    return;
                }
                continue;
            }
            for call in calls {
                match self
                    .call_tool(turn, &mut history, step, call, deadline)
                    .await
                {
                    Flow::Continue => {}
                    Flow::Done | Flow::Stop => return,
                }
            }
            if turn.contract_satisfied() {
                return;
            }
        }
        if turn.timed_out {
            turn.event("worker stopped".into());
            return;
        }
        if turn.contract {
            let step = turn.out.steps;
            if !turn.remaining_sequence().is_empty() {
                let _ = turn.finish_contract(step);
                return;
            }
            if !turn.missing_markers().is_empty() {
                let _ = turn.finish_contract(step);
                return;
            }
        }
        turn.event("max steps reached".into());
    }

    async fn call_tool(
        &self,
        turn: &mut Turn<'_>,
        history: &mut Vec<ChatMessage>,
        step: u32,
        call: ToolCall,
        deadline: Option<Instant>,
    ) -> Flow {
        let input = turn.input;
        let spec = &input.spec;
        let agent = &input.agent;
        let key = call.name.to_lowercase();
        let tool_input = if call.input.trim().is_empty() {
            format!("agent={agent} step={step}")
        } else {
            call.input.clone()
        };
        let request_id = format!("{}/{agent}/s{step:03}/{key}", input.namespace);
        let prefix = format!(
            "step={step} tool={} tool_contract={TOOL_CONTRACT_VERSION} tool_request_id={request_id} tool_attempt=1",
            call.name
        );
        let tool_message = |content: &str| ChatMessage {
            role: Role::Tool,
            content: format!(
                "<tool_result>{}</tool_result>",
                truncate_tool_result(content)
            ),
            tool_calls: Vec::new(),
            tool_call_id: Some(call.id.clone()),
            name: Some(call.name.clone()),
        };
        if let Some(previous) = turn.succeeded.get(&key) {
            if turn.contract && spec.execution.duplicate_tool_call_policy == "deny" {
                if let Flow::Stop = turn.violate(step, format!("duplicate_tool={}", call.name)) {
                    return Flow::Stop;
                }
            } else if let Some((_, result)) = previous.iter().find(|(i, _)| *i == tool_input) {
                let result = result.clone();
                history.push(tool_message(&result));
                turn.out.tool_calls += 1;
                turn.event(format!("{prefix} duration_ms=0 success short_circuit=true"));
                return Flow::Continue;
            }
        }
        if turn.contract
            && !spec
                .execution
                .tool_sequence
                .iter()
                .any(|t| t.eq_ignore_ascii_case(&call.name))
            && let Flow::Stop = turn.violate(step, format!("tool_outside_sequence={}", call.name))
        {
            return Flow::Stop;
        }
        let Some(tool) = turn.tool_object(&call.name).cloned() else {
            let err = ToolError::new(
                ToolErrorCode::UnsupportedTool,
                format!("tool {:?} is not loaded", call.name),
            );
            turn.event(format!(
                "{prefix} status=error tool_code={} tool_reason={} retryable={} error={}",
                err.code.as_str(),
                err.reason,
                err.retryable,
                err.message
            ));
            return Flow::Continue;
        };
        let mut timeout = spec_of::<ToolSpec>(&tool)
            .ok()
            .and_then(|s| parse_duration(&s.runtime.timeout).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_TOOL_TIMEOUT);
        if let Some(d) = deadline {
            timeout = timeout.min(d.saturating_duration_since(Instant::now()));
        }
        let invocation = ToolInvocation {
            request_id,
            task_id: input.task_id.clone(),
            namespace: input.namespace.clone(),
            agent: agent.clone(),
            tool,
            input: tool_input.clone(),
            attempt: 1,
            timeout,
        };
        let started = Instant::now();
        let Some(result) = within(deadline, self.tools.execute(invocation)).await else {
            turn.timed_out = true;
            turn.event("worker stopped".into());
            return Flow::Stop;
        };
        match result {
            Ok(output) => {
                let ms = output.duration.max(started.elapsed()).as_millis();
                turn.succeeded
                    .entry(key)
                    .or_default()
                    .push((tool_input, output.result.clone()));
                turn.out.tool_calls += 1;
                turn.event(format!("{prefix} duration_ms={ms} success"));
                history.push(tool_message(&output.result));
                if spec.execution.tool_use_behavior == "stop_on_first_tool" {
                    if turn.out.output.is_empty() {
                        turn.out.output = output.result;
                    }
                    return Flow::Done;
                }
                Flow::Continue
            }
            Err(err) if err.code == ToolErrorCode::PermissionDenied => {
                turn.event(format!(
                    "{prefix} status=denied tool_code={} tool_reason={} retryable=false error={}",
                    err.code.as_str(),
                    err.reason,
                    err.message
                ));
                turn.event("permission denied".into());
                turn.event("worker stopped permission denied".into());
                turn.denied = Some(format!(
                    "tool permission denied: agent={agent} step={step} tool={} error={err}",
                    call.name
                ));
                Flow::Stop
            }
            Err(err) if err.code == ToolErrorCode::ApprovalPending => {
                turn.event(format!(
                    "{prefix} status=approval_pending tool_code={} tool_reason=tool_approval_pending retryable=false error={}",
                    err.code.as_str(),
                    err.message
                ));
                turn.approval = Some(format!(
                    "tool approval required: agent={agent} step={step} tool={}",
                    call.name
                ));
                Flow::Stop
            }
            Err(err) => {
                turn.event(format!(
                    "{prefix} status=error tool_code={} tool_reason={} retryable={} error={}",
                    err.code.as_str(),
                    err.reason,
                    err.retryable,
                    err.message
                ));
                Flow::Continue
            }
        }
    }

    fn finish(&self, turn: Turn<'_>, started: Instant, timeout: Option<Duration>) -> TurnOutcome {
        let agent = turn.input.agent.clone();
        let prompt = turn.input.spec.prompt.clone();
        let mut out = turn.out;
        out.duration = started.elapsed();
        out.estimated_tokens = estimate_turn_tokens(&prompt, out.steps, out.tool_calls);
        let positive: Vec<&(u64, &str)> = turn.call_tokens.iter().filter(|(t, _)| *t > 0).collect();
        if positive.is_empty() {
            if out.steps > 0 {
                out.tokens_used = out.estimated_tokens;
                out.token_usage_source = "fixed".into();
            } else {
                out.token_usage_source = "unknown".into();
            }
        } else {
            out.tokens_used = positive.iter().map(|(t, _)| t).sum();
            let first = positive[0].1;
            out.token_usage_source = if positive.iter().all(|(_, s)| *s == first) {
                first.to_string()
            } else {
                "mixed".to_string()
            };
        }
        let plain = |message: String| TurnError {
            message,
            tool_error: None,
            approval_pending: false,
        };
        out.error = if let Some(denied) = turn.denied {
            Some(plain(denied))
        } else if let Some(approval) = turn.approval {
            Some(TurnError {
                message: approval,
                tool_error: None,
                approval_pending: true,
            })
        } else if let Some(text) = turn.budget_exceeded {
            Some(plain(text))
        } else if let Some(reason) = turn.violation {
            let mut err = ToolError::new(
                ToolErrorCode::RuntimePolicyInvalid,
                format!("agent {agent} contract violation: {reason}"),
            );
            err.reason = "agent_contract_violation".into();
            err.retryable = false;
            Some(TurnError {
                message: err.to_string(),
                tool_error: Some(err),
                approval_pending: false,
            })
        } else if turn.model_successes == 0 && !turn.model_errors.is_empty() {
            Some(plain(format!(
                "agent {agent} model execution failed: {}",
                turn.model_errors[0]
            )))
        } else if turn.timed_out {
            let t = timeout.map(humanize).unwrap_or_default();
            Some(plain(format!("agent {agent} timed out after {t}")))
        } else {
            None
        };
        out
    }
}

/// A Go-style duration text (`1ms`, `2s`, `1m30s`).
pub fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return format!("{}µs", d.as_micros());
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let frac = d.subsec_millis();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let mut text = String::new();
    if h > 0 {
        text.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        text.push_str(&format!("{m}m"));
    }
    if frac > 0 {
        text.push_str(&format!("{s}.{frac:03}s"));
    } else {
        text.push_str(&format!("{s}s"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_match_worked_example() {
        assert_eq!(
            estimate_call_tokens("plan", "model=gpt-4o step=1", &[], 1),
            19
        );
        assert_eq!(estimate_turn_tokens("plan", 1, 0), 122);
    }

    #[test]
    fn parses_text_calls() {
        let c = parse_text_tool_calls(r#"{"name":"web","input":"q"}"#, 1);
        assert_eq!((c[0].name.as_str(), c[0].input.as_str()), ("web", "q"));
        let c = parse_text_tool_calls(
            "```json\n{\"tools\":[{\"tool\":\"a\"},{\"tool\":\"b\"}]}\n```",
            1,
        );
        assert_eq!(c.len(), 2);
        let c = parse_text_tool_calls("thinking\nTool: search input: rust news", 2);
        assert_eq!(
            (c[0].name.as_str(), c[0].input.as_str()),
            ("search", "rust news")
        );
        assert!(parse_text_tool_calls("model=gpt-4o step=1", 1).is_empty());
    }

    #[test]
    fn truncates_and_humanizes() {
        let long = "é".repeat(MAX_TOOL_RESULT_BYTES);
        let t = truncate_tool_result(&long);
        assert!(t.ends_with("[output truncated]"));
        assert!(t.len() <= MAX_TOOL_RESULT_BYTES + 20);
        assert_eq!(humanize(Duration::from_millis(1)), "1ms");
        assert_eq!(humanize(Duration::from_secs(90)), "1m30s");
    }
}
