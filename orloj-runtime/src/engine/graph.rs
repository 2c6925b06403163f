//! The agent graph: validation at claim time (spec runtime §5.2), entry agents and linear order
//! (§5.3), and the graph walk (§3, §5.4–5.5) as a state machine over a task's status.
//!
//! [`prepare`] loads and checks everything a task needs and returns a [`Plan`]. A [`GraphRun`]
//! then moves a [`TaskStatus`] forward one message at a time: [`GraphRun::kickoff`] records the
//! kickoff messages of the entry agents, [`GraphRun::process`] runs the target agent of one
//! queued message and records its handoffs, and [`GraphRun::finish`] writes the summary. Every
//! state change lands in the status (messages, join states, trace, output), so the message-driven
//! mode can drive the same machine one delivered message at a time; the sequential worker walks it
//! in process. Both produce the same trace, messages and output.

use super::agent_turn::{AgentRunner, TokenBudget, TurnInput, TurnOutcome};
use crate::governance::policy::PolicySet;
use orloj_core::clock::Clock;
use orloj_core::model::{ModelRouter, ResolvedModel};
use orloj_core::resources::{
    AgentSpec, AgentSystemSpec, SmolStr, TaskJoinSource, TaskJoinState, TaskMessage, TaskOutput,
    TaskSpec, TaskStatus, TaskTraceEvent, spec_of,
};
use orloj_core::task_queue::format_time;
use orloj_core::{ErrorKind, Kind, Object, Store, split_ref};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// Upper bound on agent runs of one attempt, a guard against runaway fan-out inside cycles.
pub const MAX_AGENT_RUNS: usize = 1000;
/// The cycle error of §5.2.
pub const CYCLE_ERROR: &str = "agentsystem graph contains a cycle; set task.spec.max_turns > 0 to allow cyclical agent handoffs";
/// The no-entrypoint error of §5.2.
pub const NO_ENTRY_ERROR: &str = "agentsystem graph has no entrypoint (no zero-indegree agents)";

/// One agent of a validated plan.
#[derive(Debug, Clone)]
pub struct PlannedAgent {
    /// Agent name as declared in the system.
    pub name: String,
    /// Its normalized spec.
    pub spec: AgentSpec,
    /// Its resolved model.
    pub model: ResolvedModel,
    /// Its Tool objects, in `spec.tools` order.
    pub tools: Vec<Object>,
}

/// Everything a task needs to run, checked at claim time.
#[derive(Debug, Clone)]
pub struct Plan {
    /// AgentSystem name.
    pub system: String,
    /// Its spec.
    pub spec: AgentSystemSpec,
    /// The declared agents, loaded.
    pub agents: Vec<PlannedAgent>,
    /// Linear order (§5.3).
    pub order: Vec<String>,
    /// Entry agents (§5.3).
    pub entries: Vec<String>,
}

impl Plan {
    /// The planned agent with this name (case-insensitive).
    pub fn agent(&self, name: &str) -> Option<&PlannedAgent> {
        self.agents
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

fn declared<'a>(spec: &'a AgentSystemSpec, name: &str) -> Option<&'a String> {
    spec.agents.iter().find(|a| a.eq_ignore_ascii_case(name))
}

/// Outgoing targets of `node`: with a graph, `next` then `edges[].to` (deduplicated
/// case-insensitively, empty skipped); without one, the next declared agent.
pub fn outgoing(spec: &AgentSystemSpec, node: &str) -> Vec<String> {
    if spec.graph.is_empty() {
        let pos = spec
            .agents
            .iter()
            .position(|a| a.eq_ignore_ascii_case(node));
        return pos
            .and_then(|i| spec.agents.get(i + 1))
            .cloned()
            .into_iter()
            .collect();
    }
    let Some(n) = spec
        .graph
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(node))
        .map(|(_, v)| v)
    else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for to in std::iter::once(&n.next).chain(n.edges.iter().map(|e| &e.to)) {
        let to = to.trim();
        if !to.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(to)) {
            out.push(to.to_string());
        }
    }
    out
}

/// Declared agents with an edge into `node`.
pub fn incoming(spec: &AgentSystemSpec, node: &str) -> Vec<String> {
    spec.agents
        .iter()
        .filter(|a| {
            outgoing(spec, a)
                .iter()
                .any(|t| t.eq_ignore_ascii_case(node))
        })
        .cloned()
        .collect()
}

fn indegrees(spec: &AgentSystemSpec) -> HashMap<String, usize> {
    let mut deg: HashMap<String, usize> =
        spec.agents.iter().map(|a| (a.to_lowercase(), 0)).collect();
    for a in &spec.agents {
        for t in outgoing(spec, a) {
            if let Some(d) = deg.get_mut(&t.to_lowercase()) {
                *d += 1;
            }
        }
    }
    deg
}

/// Whether the graph over declared agents has a cycle.
pub fn has_cycle(spec: &AgentSystemSpec) -> bool {
    // Kahn's algorithm: a cycle leaves nodes unvisited.
    let order = kahn(spec);
    order.len() < spec.agents.len()
}

fn kahn(spec: &AgentSystemSpec) -> Vec<String> {
    let mut deg = indegrees(spec);
    let mut queue: VecDeque<String> = spec
        .agents
        .iter()
        .filter(|a| deg.get(&a.to_lowercase()) == Some(&0))
        .cloned()
        .collect();
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    while let Some(a) = queue.pop_front() {
        if !seen.insert(a.to_lowercase()) {
            continue;
        }
        order.push(a.clone());
        for t in outgoing(spec, &a) {
            if let Some(d) = deg.get_mut(&t.to_lowercase()) {
                *d = d.saturating_sub(1);
                if *d == 0
                    && let Some(name) = declared(spec, &t)
                {
                    queue.push_back(name.clone());
                }
            }
        }
    }
    order
}

/// Linear order (§5.3): Kahn's algorithm seeded in declaration order, unreached agents appended
/// in declaration order.
pub fn linear_order(spec: &AgentSystemSpec) -> Vec<String> {
    let mut order = kahn(spec);
    for a in &spec.agents {
        if !order.iter().any(|o| o.eq_ignore_ascii_case(a)) {
            order.push(a.clone());
        }
    }
    order
}

/// Entry agents (§5.3): without a graph the first agent; else every zero-indegree agent in
/// declaration order; none (full cycle) → the first agent of the linear order.
pub fn entry_agents(spec: &AgentSystemSpec) -> Vec<String> {
    if spec.graph.is_empty() {
        return spec.agents.first().cloned().into_iter().collect();
    }
    let deg = indegrees(spec);
    let entries: Vec<String> = spec
        .agents
        .iter()
        .filter(|a| deg.get(&a.to_lowercase()) == Some(&0))
        .cloned()
        .collect();
    if entries.is_empty() {
        linear_order(spec).into_iter().take(1).collect()
    } else {
        entries
    }
}

/// Structural checks of the graph (§5.2), in a stable order.
pub fn validate_graph(spec: &AgentSystemSpec, max_turns: i64) -> Vec<String> {
    let mut errors = Vec::new();
    for (node, def) in &spec.graph {
        if declared(spec, node).is_none() {
            errors.push(format!(
                "agentsystem graph node \"{node}\" is not listed in spec.agents"
            ));
        }
        if let Some(join) = &def.join {
            if !matches!(join.mode.as_str(), "" | "wait_for_all" | "quorum") {
                errors.push(format!(
                    "agentsystem graph node \"{node}\" has unsupported join.mode \"{}\"",
                    join.mode
                ));
            }
            if join.quorum_count < 0 {
                errors.push(format!(
                    "agentsystem graph node \"{node}\" has negative join.quorum_count"
                ));
            }
            if !(0..=100).contains(&join.quorum_percent) {
                errors.push(format!(
                    "agentsystem graph node \"{node}\" has join.quorum_percent outside 0-100"
                ));
            }
            if !matches!(
                join.on_failure.as_str(),
                "" | "deadletter" | "skip" | "continue_partial"
            ) {
                errors.push(format!(
                    "agentsystem graph node \"{node}\" has unsupported join.on_failure \"{}\"",
                    join.on_failure
                ));
            }
        }
        for to in outgoing(spec, node) {
            if declared(spec, &to).is_none() {
                errors.push(format!(
                    "agentsystem graph node \"{node}\" has an edge to unknown agent \"{to}\""
                ));
            }
        }
    }
    let cycle = has_cycle(spec);
    if cycle && max_turns <= 0 {
        errors.push(CYCLE_ERROR.to_string());
    }
    let deg = indegrees(spec);
    let any_entry = deg.values().any(|d| *d == 0);
    if !(any_entry || (cycle && max_turns > 0)) {
        errors.push(NO_ENTRY_ERROR.to_string());
    }
    errors
}

/// A store lookup error as a failure reason: not found → `<what> not found`, else a temporary
/// (retryable) lookup failure.
fn lookup_error(what: &str, err: &orloj_core::Error) -> String {
    if err.kind() == ErrorKind::NotFound {
        format!("{what} not found")
    } else {
        format!("{what} lookup failed (temporary store error): {err}")
    }
}

/// Loads and checks the task's system, agents, models, tools, roles and memories (§5.2). The
/// error is every problem joined with "; ".
pub async fn prepare(
    store: &dyn Store,
    router: &dyn ModelRouter,
    task: &Object,
    task_spec: &TaskSpec,
) -> Result<Plan, String> {
    let ns = task.namespace().to_string();
    let system = task_spec.system.trim().to_string();
    if system.is_empty() {
        return Err("spec.system is required".into());
    }
    let (sys_ns, sys_name) = split_ref(&system, &ns);
    let sys_obj = store
        .get(Kind::AgentSystem, sys_ns, sys_name)
        .await
        .map_err(|e| lookup_error(&format!("agentsystem \"{system}\""), &e))?;
    let spec: AgentSystemSpec = spec_of(&sys_obj)
        .map_err(|e| format!("agentsystem \"{system}\" has an invalid spec: {e}"))?;
    if spec.agents.is_empty() {
        return Err(format!("agentsystem \"{system}\" has no spec.agents"));
    }
    let mut errors = Vec::new();
    if spec.agents.iter().any(|a| a.trim().is_empty()) {
        errors.push("agentsystem contains empty agent name".to_string());
    }
    // The agents load concurrently (each is a few store round trips); errors keep their order.
    let loads = spec
        .agents
        .iter()
        .filter(|a| !a.trim().is_empty())
        .map(|name| load_agent(store, router, &ns, name));
    let mut agents = Vec::new();
    for loaded in futures::future::join_all(loads).await {
        match loaded {
            Ok(agent) => agents.push(agent),
            Err(mut errs) => errors.append(&mut errs),
        }
    }
    errors.extend(validate_graph(&spec, task_spec.max_turns));
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    Ok(Plan {
        system,
        order: linear_order(&spec),
        entries: entry_agents(&spec),
        spec,
        agents,
    })
}

async fn load_agent(
    store: &dyn Store,
    router: &dyn ModelRouter,
    ns: &str,
    name: &str,
) -> Result<PlannedAgent, Vec<String>> {
    let (a_ns, a_name) = split_ref(name, ns);
    let obj = store
        .get(Kind::Agent, a_ns, a_name)
        .await
        .map_err(|e| vec![lookup_error(&format!("agent \"{name}\""), &e)])?;
    let spec: AgentSpec =
        spec_of(&obj).map_err(|e| vec![format!("agent \"{name}\" has an invalid spec: {e}")])?;
    let mut errors = Vec::new();
    let mut tools = Vec::new();
    for tool in &spec.tools {
        let (t_ns, t_name) = split_ref(tool, ns);
        match store.get(Kind::Tool, t_ns, t_name).await {
            Ok(t) => tools.push(t),
            Err(e) if e.kind() == ErrorKind::NotFound => errors.push(format!(
                "agent \"{name}\" references missing tool \"{tool}\""
            )),
            Err(e) => errors.push(lookup_error(&format!("tool \"{tool}\""), &e)),
        }
    }
    // Built-in memory.* tools granted by spec.memory.allow (runtime §10).
    let spec = super::memory_tools::with_memory_tools(spec, &mut tools, ns);
    for role in &spec.roles {
        let (r_ns, r_name) = split_ref(role, ns);
        match store.get(Kind::AgentRole, r_ns, r_name).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => errors.push(format!(
                "agent \"{name}\" references missing role \"{role}\""
            )),
            Err(e) => errors.push(lookup_error(&format!("role \"{role}\""), &e)),
        }
    }
    if let Some(memory) = spec.memory.as_ref().filter(|m| !m.reference.is_empty()) {
        let (m_ns, m_name) = split_ref(&memory.reference, ns);
        match store.get(Kind::Memory, m_ns, m_name).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => errors.push(format!(
                "agent \"{name}\" references missing memory \"{}\"",
                memory.reference
            )),
            Err(e) => errors.push(lookup_error(&format!("memory {:?}", memory.reference), &e)),
        }
    }
    let model = if spec.model_ref.trim().is_empty() {
        errors.push(format!("agent \"{name}\" must set spec.model_ref"));
        None
    } else {
        match router.resolve(ns, &spec.model_ref).await {
            Ok(m) => Some(m),
            Err(e) => {
                errors.push(format!("agent \"{name}\" model resolution failed: {e}"));
                None
            }
        }
    };
    match model {
        Some(model) if errors.is_empty() => Ok(PlannedAgent {
            name: name.to_string(),
            spec,
            model,
            tools,
        }),
        _ => Err(errors),
    }
}

/// Message id part: lower-cased, ` `, `/`, `:` → `_`.
fn id_token(s: &str) -> String {
    s.trim()
        .to_lowercase()
        .chars()
        .map(|c| if matches!(c, ' ' | '/' | ':') { '_' } else { c })
        .collect()
}

/// `…/h<hop>/…` of a message id.
fn hop_of(message_id: &str) -> u32 {
    message_id
        .split('/')
        .find_map(|p| p.strip_prefix('h').and_then(|n| n.parse().ok()))
        .unwrap_or(1)
}

/// A failure of one graph step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    /// The task-level failure reason.
    pub reason: String,
    /// The turn is waiting for a tool approval.
    pub approval_pending: bool,
}

/// One attempt of a task walking its graph.
#[derive(Debug)]
pub struct GraphRun<'a> {
    plan: &'a Plan,
    namespace: String,
    task: String,
    attempt: i64,
    max_turns: i64,
    input: BTreeMap<String, String>,
    priority: String,
    worker: String,
    clock: &'a dyn Clock,
    /// Last event of each agent's latest run, for `previous_agent_last_event`.
    last_events: HashMap<String, String>,
    /// AgentPolicies matched for the task (§8.1).
    policies: PolicySet,
}

impl<'a> GraphRun<'a> {
    /// A run of `plan` for `task` at its current attempt, executed by `worker`.
    pub fn new(
        plan: &'a Plan,
        task: &Object,
        task_spec: &TaskSpec,
        attempt: i64,
        worker: &str,
        clock: &'a dyn Clock,
    ) -> Self {
        Self {
            plan,
            namespace: task.namespace().to_string(),
            task: task.name().to_string(),
            attempt: attempt.max(1),
            max_turns: task_spec.max_turns,
            input: task_spec.input.clone(),
            priority: task_spec.priority.clone(),
            worker: worker.to_string(),
            clock,
            last_events: HashMap::new(),
            policies: PolicySet::default(),
        }
    }

    /// Enforces `policies` (matched AgentPolicies): per-agent model/tool checks, the token
    /// budget before every model call and after every agent, and the policy output keys.
    pub fn with_policies(mut self, policies: PolicySet) -> Self {
        self.policies = policies;
        self
    }

    fn tokens_used(status: &TaskStatus) -> u64 {
        output_number(&status.output, "tokens_used_total")
    }

    fn now(&self) -> String {
        format_time(self.clock.now())
    }

    fn task_id(&self) -> String {
        format!("{}/{}", self.namespace, self.task)
    }

    fn trace_id(&self) -> String {
        format!("{}/{}/a{:03}", self.namespace, self.task, self.attempt)
    }

    fn step_id(&self, index: usize) -> SmolStr {
        smol_str::format_smolstr!("a{:03}.s{index:04}", self.attempt)
    }

    fn push_trace(&self, status: &mut TaskStatus, mut t: TaskTraceEvent, index: usize) {
        if t.timestamp.is_empty() {
            t.timestamp = self.now();
        }
        t.step_id = self.step_id(index);
        t.attempt = self.attempt;
        status.trace.push(t);
    }

    fn task_trace(&self, status: &mut TaskStatus, event_type: &str, message: String) {
        let t = TaskTraceEvent {
            event_type: event_type.into(),
            message,
            ..Default::default()
        };
        self.push_trace(status, t, 0);
    }

    fn message_id(&self, hop: u32, from: &str, to: &str) -> String {
        format!(
            "{}/{}/a{:03}/h{hop:03}/{}/{}",
            self.namespace,
            self.task,
            self.attempt,
            id_token(from),
            id_token(to)
        )
    }

    /// The last event of `agent`'s latest run: remembered by this run, else read back from the
    /// recorded output (a run resumed by another worker, or one message per run).
    fn previous_last_event(&self, status: &TaskStatus, agent: &str) -> Option<String> {
        if let Some(last) = self.last_events.get(&agent.to_lowercase()) {
            return Some(last.clone());
        }
        (1..=self.runs(status)).rev().find_map(|i| {
            let name = status.output.get(format!("agent.{i}.name").as_str())?;
            if !name.eq_ignore_ascii_case(agent) {
                return None;
            }
            status
                .output
                .get(format!("agent.{i}.last_event").as_str())
                .map(|e| e.to_string())
        })
    }

    /// Agent runs recorded so far in this attempt.
    pub fn runs(&self, status: &TaskStatus) -> usize {
        status
            .trace
            .iter()
            .filter(|t| t.attempt == self.attempt && t.event_type == "agent_end")
            .count()
    }

    /// Starts the attempt: trace `task_start` and one queued `task_start` message per entry
    /// agent (branches `b001`, `b002`, …). Does nothing when this attempt already started.
    pub fn kickoff(&self, status: &mut TaskStatus) {
        let started = status
            .trace
            .iter()
            .any(|t| t.attempt == self.attempt && t.event_type == "task_start");
        if started {
            return;
        }
        self.task_trace(
            status,
            "task_start",
            format!(
                "system={} agents={}",
                self.plan.system,
                self.plan.agents.len()
            ),
        );
        let content = self
            .input
            .get("topic")
            .filter(|t| !t.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("task={} attempt={}", self.task, self.attempt));
        for (i, entry) in self.plan.entries.iter().enumerate() {
            let id = SmolStr::from(self.message_id(i as u32 + 1, "system", entry));
            status.messages.push(TaskMessage {
                timestamp: self.now(),
                message_id: id.clone(),
                idempotency_key: id,
                task_id: self.task_id().into(),
                attempt: self.attempt,
                system: self.plan.system.as_str().into(),
                from_agent: "system".into(),
                to_agent: entry.as_str().into(),
                branch_id: smol_str::format_smolstr!("b{:03}", i + 1),
                message_type: "task_start".into(),
                content: content.clone(),
                trace_id: self.trace_id().into(),
                phase: "Queued".into(),
                max_attempts: 1,
                ..Default::default()
            });
        }
    }

    /// Index of the oldest queued message of this attempt. A message left `Running` by a
    /// worker that lost its lease counts as queued, so a takeover resumes it.
    pub fn next_queued(&self, status: &TaskStatus) -> Option<usize> {
        status.messages.iter().position(|m| {
            m.attempt == self.attempt && (m.phase == "Queued" || m.phase == "Running")
        })
    }

    fn join_required(&self, node: &str, expected: usize) -> Option<usize> {
        let join = self
            .plan
            .spec
            .graph
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(node))
            .and_then(|(_, n)| n.join.as_ref());
        let quorum = join.is_some_and(|j| j.mode == "quorum");
        if expected <= 1 && !quorum {
            return None;
        }
        let expected = expected.max(1);
        let required = match join.filter(|_| quorum) {
            Some(j) => {
                let by_percent = (expected as i64 * j.quorum_percent + 99) / 100;
                let r = j.quorum_count.max(by_percent);
                if r <= 0 { expected } else { r as usize }
            }
            None => expected,
        };
        Some(required.clamp(1, expected))
    }

    fn complete_message(&self, status: &mut TaskStatus, index: usize, error: &str) {
        let now = self.now();
        if let Some(m) = status.messages.get_mut(index) {
            m.phase = if error.is_empty() {
                "Succeeded".into()
            } else {
                "DeadLetter".into()
            };
            m.last_error = error.to_string();
            m.processed_at = now;
        }
    }

    /// Join gate (§5.5) for a handoff into a join node: records the source and tells whether
    /// the node runs now, with the `inbox.join.*` inputs when it does.
    fn join_gate(
        &self,
        status: &mut TaskStatus,
        msg: &TaskMessage,
    ) -> Option<Result<BTreeMap<String, String>, String>> {
        let node = &msg.to_agent;
        let expected = incoming(&self.plan.spec, node).len();
        let required = self.join_required(node, expected)?;
        let mode = if self.plan.spec.graph.iter().any(|(k, n)| {
            k.eq_ignore_ascii_case(node) && n.join.as_ref().is_some_and(|j| j.mode == "quorum")
        }) {
            "quorum"
        } else {
            "wait_for_all"
        };
        let now = self.now();
        let pos = status
            .join_states
            .iter()
            .position(|j| j.attempt == self.attempt && j.node.eq_ignore_ascii_case(node));
        let pos = match pos {
            Some(p) => p,
            None => {
                status.join_states.push(TaskJoinState {
                    attempt: self.attempt,
                    node: node.to_string(),
                    mode: mode.into(),
                    expected: expected as i64,
                    quorum_required: required as i64,
                    ..Default::default()
                });
                status.join_states.len() - 1
            }
        };
        let state = &mut status.join_states[pos];
        if state.activated {
            return Some(Err(format!("status=join_already_activated node={node}")));
        }
        state.sources.retain(|s| s.message_id != msg.message_id);
        state.sources.push(TaskJoinSource {
            message_id: msg.message_id.to_string(),
            from_agent: msg.from_agent.to_string(),
            branch_id: msg.branch_id.to_string(),
            timestamp: now.clone(),
            payload: msg.content.clone(),
            ..Default::default()
        });
        let received = state.sources.len();
        if received < required {
            return Some(Err(format!(
                "agent_message_join_wait received={received} required={required}"
            )));
        }
        state.activated = true;
        state.activated_at = now;
        state.activated_by = msg.message_id.to_string();
        let mut sources: Vec<String> = Vec::new();
        for s in &state.sources {
            if !sources.iter().any(|x| x == &s.from_agent) {
                sources.push(s.from_agent.clone());
            }
        }
        let payloads: Vec<String> = state
            .sources
            .iter()
            .map(|s| format!("{}:{}", s.from_agent, s.payload))
            .collect();
        let mut inputs = BTreeMap::new();
        inputs.insert("inbox.join.enabled".into(), "true".into());
        inputs.insert("inbox.join.mode".into(), mode.into());
        inputs.insert("inbox.join.received".into(), received.to_string());
        inputs.insert("inbox.join.required".into(), required.to_string());
        inputs.insert("inbox.join.sources".into(), sources.join(","));
        inputs.insert("inbox.join.payloads".into(), payloads.join(" | "));
        Some(Ok(inputs))
    }

    /// Processes the queued message at `index`: join gate, the target agent's turn, output keys
    /// and the handoffs to the next agents (or completion of the branch when `max_turns` is
    /// reached). A failure leaves the message dead-lettered and returns the task-level reason.
    pub async fn process(
        &mut self,
        status: &mut TaskStatus,
        index: usize,
        runner: &AgentRunner,
    ) -> Result<(), StepFailure> {
        let fail = |reason: String| StepFailure {
            reason,
            approval_pending: false,
        };
        let Some(msg) = status.messages.get(index).cloned() else {
            return Err(fail(format!("message #{index} not found")));
        };
        if let Some(m) = status.messages.get_mut(index) {
            m.phase = "Running".into();
            m.attempts += 1;
            m.worker = self.worker.as_str().into();
        }
        let mut join_inputs = BTreeMap::new();
        if msg.from_agent != "system" {
            match self.join_gate(status, &msg) {
                None => {}
                Some(Ok(inputs)) => join_inputs = inputs,
                Some(Err(wait)) => {
                    let kind = if wait.starts_with("agent_message_join_wait") {
                        "agent_message_join_wait"
                    } else {
                        "agent_message_processed"
                    };
                    let t = TaskTraceEvent {
                        event_type: kind.into(),
                        agent: msg.to_agent.clone(),
                        branch_id: msg.branch_id.clone(),
                        message: format!("message_id={} {wait}", msg.message_id),
                        ..Default::default()
                    };
                    self.push_trace(status, t, 0);
                    self.complete_message(status, index, "");
                    return Ok(());
                }
            }
        }
        let run_index = self.runs(status) + 1;
        if run_index > MAX_AGENT_RUNS {
            let reason = format!("agentsystem graph exceeded {MAX_AGENT_RUNS} agent runs");
            self.complete_message(status, index, &reason);
            return Err(fail(reason));
        }
        let Some(agent) = self.plan.agent(&msg.to_agent) else {
            let reason = format!("agent \"{}\" not found", msg.to_agent);
            let t = TaskTraceEvent {
                event_type: "agent_missing".into(),
                agent: msg.to_agent.clone(),
                message: reason.clone(),
                ..Default::default()
            };
            self.push_trace(status, t, run_index);
            self.complete_message(status, index, &reason);
            return Err(fail(reason));
        };
        let mut inputs = self.input.clone();
        if msg.from_agent != "system" {
            inputs.insert("inbox.from".into(), msg.from_agent.to_string());
            inputs.insert("inbox.to".into(), msg.to_agent.to_string());
            inputs.insert("inbox.content".into(), msg.content.clone());
            inputs.insert("inbox.message_id".into(), msg.message_id.to_string());
            inputs.insert("inbox.trace_id".into(), msg.trace_id.to_string());
            inputs.insert("inbox.branch_id".into(), msg.branch_id.to_string());
            inputs.insert(
                "inbox.parent_branch_id".into(),
                msg.parent_branch_id.to_string(),
            );
            inputs.insert("previous_agent".into(), msg.from_agent.to_string());
            if let Some(last) = self.previous_last_event(status, &msg.from_agent) {
                inputs.insert("previous_agent_last_event".into(), last);
            }
        }
        inputs.extend(join_inputs);
        let start = TaskTraceEvent {
            event_type: "agent_start".into(),
            agent: agent.name.as_str().into(),
            branch_id: msg.branch_id.clone(),
            message: format!(
                "model={} model_ref={} tools={}",
                agent.model.model,
                agent.spec.model_ref,
                agent.tools.len()
            ),
            ..Default::default()
        };
        self.push_trace(status, start, run_index);
        let turn_input = TurnInput {
            namespace: self.namespace.clone(),
            task_id: self.task_id(),
            agent: agent.name.clone(),
            spec: agent.spec.clone(),
            model: agent.model.clone(),
            tools: agent.tools.clone(),
            inputs,
        };
        if let Err(reason) = self.policies.check_agent(
            &self.task,
            &self.plan.system,
            &agent.name,
            &agent.model.model,
            &agent.spec.model_ref,
            &agent.spec.tools,
        ) {
            let t = TaskTraceEvent {
                event_type: "policy_violation".into(),
                agent: agent.name.as_str().into(),
                branch_id: msg.branch_id.clone(),
                message: reason.clone(),
                retryable: Some(false),
                ..Default::default()
            };
            self.push_trace(status, t, run_index);
            self.complete_message(status, index, &reason);
            return Err(fail(reason));
        }
        let budget = self.policies.token_budget();
        let mut outcome = runner
            .run_with_budget(
                &turn_input,
                Some(TokenBudget {
                    limit: budget,
                    used: Self::tokens_used(status),
                }),
            )
            .await;
        for mut t in std::mem::take(&mut outcome.trace) {
            t.branch_id = msg.branch_id.clone();
            self.push_trace(status, t, run_index);
        }
        self.last_events
            .insert(agent.name.to_lowercase(), outcome.last_event.clone());
        if let Some(err) = &outcome.error {
            let reason = format!("agent \"{}\" execution failed: {}", agent.name, err.message);
            let t = TaskTraceEvent {
                event_type: "agent_error".into(),
                agent: agent.name.as_str().into(),
                branch_id: msg.branch_id.clone(),
                message: reason.clone(),
                error_code: err
                    .tool_error
                    .as_ref()
                    .map(|e| e.code.as_str().into())
                    .unwrap_or_default(),
                error_reason: err
                    .tool_error
                    .as_ref()
                    .map(|e| e.reason.clone())
                    .unwrap_or_default(),
                retryable: Some(super::failure::is_retryable(&reason)),
                ..Default::default()
            };
            self.push_trace(status, t, run_index);
            if err.approval_pending {
                // The message runs again once the approval is decided.
                if let Some(m) = status.messages.get_mut(index) {
                    m.phase = "Queued".into();
                }
            } else {
                self.complete_message(status, index, &reason);
            }
            return Err(StepFailure {
                reason,
                approval_pending: err.approval_pending,
            });
        }
        let end = TaskTraceEvent {
            event_type: "agent_end".into(),
            agent: agent.name.as_str().into(),
            branch_id: msg.branch_id.clone(),
            message: format!(
                "steps={} tool_calls={} tokens={} usage_source={}",
                outcome.steps, outcome.tool_calls, outcome.tokens_used, outcome.token_usage_source
            ),
            latency_ms: outcome.duration.as_millis() as i64,
            tokens: outcome.tokens_used as i64,
            token_usage_source: outcome.token_usage_source.as_str().into(),
            tool_calls: i64::from(outcome.tool_calls),
            memory_writes: i64::from(outcome.memory_writes),
            ..Default::default()
        };
        self.push_trace(status, end, run_index);
        self.record_output(status, run_index, agent, &outcome);
        let used = Self::tokens_used(status);
        if budget > 0 && used > budget {
            let estimated = status
                .output
                .get("tokens_estimated_total")
                .cloned()
                .unwrap_or_default();
            let reason = format!(
                "token budget exceeded after agent \"{}\": used={used} source={} budget={budget} estimated={estimated}",
                agent.name, outcome.token_usage_source
            );
            let t = TaskTraceEvent {
                event_type: "token_budget_exceeded".into(),
                agent: agent.name.as_str().into(),
                branch_id: msg.branch_id.clone(),
                message: reason.clone(),
                tokens: used as i64,
                retryable: Some(false),
                ..Default::default()
            };
            self.push_trace(status, t, run_index);
            self.complete_message(status, index, &reason);
            return Err(fail(reason));
        }

        let branch = if msg.branch_id.is_empty() {
            SmolStr::new_static("b001")
        } else {
            msg.branch_id.clone()
        };
        let on_branch = status
            .messages
            .iter()
            .filter(|m| {
                m.attempt == self.attempt
                    && (if m.branch_id.is_empty() {
                        "b001"
                    } else {
                        m.branch_id.as_str()
                    }) == branch
            })
            .count() as i64;
        let targets = outgoing(&self.plan.spec, &agent.name);
        if self.max_turns > 0 && on_branch >= self.max_turns && !targets.is_empty() {
            let t = TaskTraceEvent {
                event_type: "agent_message_turn_limit".into(),
                agent: agent.name.as_str().into(),
                branch_id: branch.clone(),
                message: format!(
                    "turn limit reached: branch={branch} turns={on_branch} max_turns={}",
                    self.max_turns
                ),
                ..Default::default()
            };
            self.push_trace(status, t, run_index);
        } else {
            let content = if !outcome.output.trim().is_empty() {
                outcome.output.clone()
            } else if !outcome.last_event.is_empty() {
                outcome.last_event.clone()
            } else {
                format!(
                    "steps={} tool_calls={} tokens={} usage_source={}",
                    outcome.steps,
                    outcome.tool_calls,
                    outcome.tokens_used,
                    outcome.token_usage_source
                )
            };
            let hop = (hop_of(&msg.message_id) + 1).max(2);
            let fan_out = targets.len() > 1;
            for (i, to) in targets.iter().enumerate() {
                let (branch_id, parent) = if fan_out {
                    (
                        smol_str::format_smolstr!("{branch}.{:03}", i + 1),
                        branch.clone(),
                    )
                } else {
                    (branch.clone(), msg.parent_branch_id.clone())
                };
                let id = SmolStr::from(self.message_id(hop, &agent.name, to));
                status.messages.push(TaskMessage {
                    timestamp: self.now(),
                    message_id: id.clone(),
                    idempotency_key: id.clone(),
                    task_id: self.task_id().into(),
                    attempt: self.attempt,
                    system: self.plan.system.as_str().into(),
                    from_agent: agent.name.as_str().into(),
                    to_agent: to.as_str().into(),
                    branch_id: branch_id.clone(),
                    parent_branch_id: parent,
                    message_type: "task_handoff".into(),
                    content: content.clone(),
                    trace_id: msg.trace_id.clone(),
                    parent_id: msg.message_id.clone(),
                    phase: "Queued".into(),
                    max_attempts: 1,
                    ..Default::default()
                });
                let t = TaskTraceEvent {
                    event_type: "agent_message".into(),
                    agent: agent.name.as_str().into(),
                    branch_id,
                    message: format!("message_id={id} from={} to={to}", agent.name),
                    ..Default::default()
                };
                self.push_trace(status, t, run_index);
                let mut out = OutputWriter::new(&mut status.output);
                out.put_agent(run_index, "message_to", to.as_str().into());
                out.put_agent(run_index, "message_content", content.as_str().into());
            }
        }
        self.complete_message(status, index, "");
        Ok(())
    }

    fn record_output(
        &self,
        status: &mut TaskStatus,
        i: usize,
        agent: &PlannedAgent,
        o: &TurnOutcome,
    ) {
        let mut out = OutputWriter::new(&mut status.output);
        // A text written under several keys is made once: inline when short, else one shared
        // string.
        let name: SmolStr = agent.name.as_str().into();
        let last_event: SmolStr = o.last_event.as_str().into();
        let output: SmolStr = o.output.as_str().into();
        let steps = out.text(o.steps);
        let tool_calls = out.text(o.tool_calls);
        let tokens_used = out.text(o.tokens_used);
        let estimated_tokens = out.text(o.estimated_tokens);
        out.put_agent(i, "name", name.clone());
        out.put_agent(i, "model", agent.model.model.as_str().into());
        out.put_agent(i, "steps", steps.clone());
        out.put_agent(i, "tool_calls", tool_calls.clone());
        let memory_writes = out.text(o.memory_writes);
        out.put_agent(i, "memory_writes", memory_writes);
        let duration = out.text(o.duration.as_millis());
        out.put_agent(i, "duration_ms", duration);
        out.put_agent(i, "estimated_tokens", estimated_tokens.clone());
        out.put_agent(i, "tokens_used", tokens_used.clone());
        out.put_agent(
            i,
            "token_usage_source",
            o.token_usage_source.as_str().into(),
        );
        out.put_agent(i, "last_event", last_event.clone());
        out.put_agent(i, "output", output.clone());
        out.put("last_agent", name.clone());
        out.put("last_event", last_event.clone());
        out.put("last_output", output);
        out.put("last_steps", steps);
        out.put("last_tool_calls", tool_calls);
        out.put("last_tokens_used", tokens_used);
        out.put("last_estimated_tokens", estimated_tokens);
        out.put("previous_agent", name);
        out.put("previous_agent_last_event", last_event);
        out.add("tokens_used_total", o.tokens_used);
        out.add("tokens_estimated_total", o.estimated_tokens);
    }

    /// Writes the summary output keys and the `task_summary` trace once no message is queued.
    pub fn finish(&self, status: &mut TaskStatus) {
        let runs: Vec<SmolStr> = status
            .trace
            .iter()
            .filter(|t| t.attempt == self.attempt && t.event_type == "agent_end")
            .map(|t| t.agent.clone())
            .collect();
        let mut out = OutputWriter::new(&mut status.output);
        out.put("system", self.plan.system.as_str().into());
        out.put("priority", self.priority.as_str().into());
        out.put("execution_order", runs.join(" -> ").into());
        out.put("result", "executed".into());
        let executed = out.text(runs.len());
        out.put("agents_executed", executed);
        let topic = self.input.get("topic").map_or("", String::as_str);
        out.put("topic", topic.into());
        for key in ["tokens_used_total", "tokens_estimated_total"] {
            if !out.out.contains_key(key) {
                out.put(key, "0".into());
            }
        }
        let budget = self.policies.token_budget();
        let enforced = out.text(self.policies.policies.len());
        out.put("policies_enforced", enforced);
        out.put("policies_matched", self.policies.names().into());
        let budget_text = out.text(budget);
        out.put("token_budget", budget_text);
        if budget > 0 {
            for (total, remaining) in [
                ("tokens_used_total", "tokens_used_remaining"),
                ("tokens_estimated_total", "tokens_estimated_remaining"),
            ] {
                let left = out.text(budget.saturating_sub(out.number(total)));
                out.put(remaining, left);
            }
        }
        let message = format!(
            "agents={} tokens_used_total={} tokens_estimated_total={}",
            runs.len(),
            status.output["tokens_used_total"],
            status.output["tokens_estimated_total"]
        );
        self.task_trace(status, "task_summary", message);
    }
}

/// The number under output `key` (0 when missing or not a number).
fn output_number(out: &TaskOutput, key: &str) -> u64 {
    out.get(key).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Writes a task's output keys without a throwaway string per key or number: formatted
/// through one reused buffer, and an existing key keeps its key string.
struct OutputWriter<'a> {
    out: &'a mut TaskOutput,
    buf: String,
}

impl<'a> OutputWriter<'a> {
    fn new(out: &'a mut TaskOutput) -> Self {
        Self {
            out,
            buf: String::new(),
        }
    }

    /// `value` as text.
    fn text(&mut self, value: impl std::fmt::Display) -> SmolStr {
        use std::fmt::Write as _;
        self.buf.clear();
        // Writing into a String cannot fail.
        let _ = write!(self.buf, "{value}");
        SmolStr::from(self.buf.as_str())
    }

    /// Sets `key`.
    fn put(&mut self, key: &str, value: SmolStr) {
        match self.out.get_mut(key) {
            Some(v) => *v = value,
            None => {
                self.out.insert(key.into(), value);
            }
        }
    }

    /// Sets `agent.<run>.<field>`.
    fn put_agent(&mut self, run: usize, field: &str, value: SmolStr) {
        use std::fmt::Write as _;
        self.buf.clear();
        let _ = write!(self.buf, "agent.{run}.{field}");
        let key = std::mem::take(&mut self.buf);
        self.put(&key, value);
        self.buf = key;
    }

    /// The number under `key` ([`output_number`]).
    fn number(&self, key: &str) -> u64 {
        output_number(self.out, key)
    }

    /// Adds `value` to the number under `key` ([`output_number`]).
    fn add(&mut self, key: &str, value: u64) {
        let total = self.text(self.number(key) + value);
        self.put(key, total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orloj_core::resources::GraphRoute;

    fn system(agents: &[&str], edges: &[(&str, &str)]) -> AgentSystemSpec {
        let mut spec = AgentSystemSpec {
            agents: agents.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        for (from, to) in edges {
            spec.graph
                .entry(from.to_string())
                .or_default()
                .edges
                .push(GraphRoute {
                    to: to.to_string(),
                    ..Default::default()
                });
        }
        spec
    }

    #[test]
    fn order_and_entries() {
        let s = system(&["w", "p", "r"], &[("p", "r"), ("r", "w")]);
        assert_eq!(linear_order(&s), ["p", "r", "w"]);
        assert_eq!(entry_agents(&s), ["p"]);
        assert!(!has_cycle(&s));
        let s = system(&["a", "b"], &[]);
        assert_eq!(entry_agents(&s), ["a"]);
        assert_eq!(outgoing(&s, "a"), ["b"]);
    }

    #[test]
    fn cycles_need_max_turns() {
        let s = system(&["m", "r"], &[("m", "r"), ("r", "m")]);
        assert!(has_cycle(&s));
        assert_eq!(validate_graph(&s, 0), [CYCLE_ERROR, NO_ENTRY_ERROR]);
        assert!(validate_graph(&s, 3).is_empty());
        assert_eq!(entry_agents(&s), ["m"]);
        let s = system(&["a"], &[("a", "ghost")]);
        assert_eq!(
            validate_graph(&s, 0),
            ["agentsystem graph node \"a\" has an edge to unknown agent \"ghost\""]
        );
    }
}
