//! The command line of orlojctl (spec §4), as clap derive types.

use super::output::OutputFormat;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Parses a Go-style duration (`500ms`, `2s`, `5m`, `1h30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); use e.g. 500ms, 2s, 5m, 1h30m"))
}

/// Command-line client for the Orloj server.
#[derive(Debug, Parser)]
#[command(
    name = "orlojctl",
    version,
    about = "Command-line client for the Orloj server",
    after_help = "Server: --server, then ORLOJCTL_SERVER, ORLOJ_SERVER, the active config profile, \
                  http://127.0.0.1:8080.\nToken: --api-token, then ORLOJCTL_API_TOKEN, ORLOJ_API_TOKEN, \
                  the profile's token, the profile's token_env.\nExit codes: 0 ok, 1 error or timeout, 2 usage error."
)]
pub struct Cli {
    /// Server URL.
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,

    /// API token, sent as `Authorization: Bearer <token>`.
    #[arg(long, global = true, value_name = "TOKEN")]
    pub api_token: Option<String>,

    /// Namespace (item commands default to `default`; lists default to all namespaces).
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update resources from a manifest file or directory.
    Apply(ApplyArgs),
    /// Check manifests offline (parse and normalize, no server needed).
    Validate(FileArgs),
    /// List resources, or show one.
    Get(GetArgs),
    /// Show one resource: a summary, then the full object.
    Describe(DescribeArgs),
    /// Delete one resource.
    Delete(RefArgs),
    /// Show what `apply` would change, as a unified diff (live → file; status excluded).
    #[command(
        after_help = "Exit status: 0 no differences, 1 differences found, 2 or more an error occurred (as kubectl diff)."
    )]
    Diff(DiffArgs),
    /// Edit one resource in $VISUAL / $EDITOR (default vi) and save it back.
    Edit(RefArgs),
    /// Create a resource from command-line values.
    #[command(subcommand)]
    Create(CreateCommand),
    /// Wait until a resource reaches a phase.
    #[command(
        after_help = "Conditions: condition=<Phase>, case-insensitive. Aliases: complete, completed, succeeded → Succeeded; \
                      failed, deadletter, error → Failed or DeadLetter.\nA task that ends Failed/DeadLetter while waiting for \
                      another phase stops the wait with exit 1.\nExit status: 0 reached, 1 timeout or error, 2 usage error."
    )]
    Wait(WaitArgs),
    /// Stream control-plane events.
    Events(EventsArgs),
    /// Show the logs of a task (`task/NAME`) or an agent (`NAME` or `agent/NAME`).
    Logs(LogsArgs),
    /// Check that the server answers /healthz.
    Health,
    /// Summarize the server: health, auth, capabilities, workers, namespaces.
    Status,
    /// Print a shell completion script.
    Completion(CompletionArgs),
    /// Show or change the orlojctl config file (profiles).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the orlojctl version.
    Version,
    /// Start a task for an AgentSystem and follow it until it ends.
    #[command(
        after_help = "Progress goes to stderr, the final status to stdout.\nExit status: 0 Succeeded, 1 Failed, DeadLetter, timeout or error."
    )]
    Run(RunArgs),
    /// Print the trace timeline of a task (`task/NAME` or `task NAME`).
    Trace(TraceArgs),
    /// List the messages of a task (`task/NAME`).
    Messages(MessagesArgs),
    /// Show message metrics of a task (`task/NAME`).
    Metrics(MetricsArgs),
    /// Approve a pending tool approval: `approve tool-approval NAME`.
    Approve(DecisionArgs),
    /// Deny a pending tool approval: `deny tool-approval NAME`.
    Deny(DecisionArgs),
    /// Cancel a task that has not ended (its phase becomes Failed).
    Cancel(CancelArgs),
    /// Start a new task with the spec of an ended one (`<name>-retry-<unix ms>`).
    Retry(RetryArgs),
    /// Write a new project directory from a blueprint.
    Init(InitArgs),
    /// Show workers or tasks at a glance.
    Top(TopArgs),
    /// Draw the agent graph of an AgentSystem or of a task's system, in ASCII.
    Graph(GraphArgs),
    /// Log in (`auth login`) or show the caller (`auth whoami`).
    #[command(subcommand)]
    Auth(super::auth::AuthCommand),
    /// Manage users of native auth (admin).
    #[command(subcommand)]
    Admin(super::auth::AdminCommand),
}

/// `run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The AgentSystem to run.
    #[arg(long, value_name = "NAME")]
    pub system: String,
    /// Task input values, `key=value`.
    #[arg(value_name = "KEY=VALUE")]
    pub input: Vec<String>,
    /// Poll interval.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub poll: Duration,
    /// Give up waiting after this long (the task keeps its phase).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// A task given as `task/NAME` or as `task NAME`.
#[derive(Debug, Args)]
pub struct TaskTarget {
    /// `task/NAME`, or `task` followed by the name.
    #[arg(value_name = "task/NAME")]
    pub target: String,
    /// The name, when the target is just `task`.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
}

/// `trace` flags.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The task.
    #[command(flatten)]
    pub task: TaskTarget,
    /// Output format (json/yaml print the raw trace events).
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table, ignore_case = true)]
    pub output: OutputFormat,
}

/// `messages` flags.
#[derive(Debug, Args)]
pub struct MessagesArgs {
    /// The task.
    #[command(flatten)]
    pub task: TaskTarget,
    /// Only messages from or to this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only messages in these phases (comma-separated: queued, running, retrypending, succeeded, deadletter).
    #[arg(long)]
    pub phase: Option<String>,
    /// At most this many messages.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table, ignore_case = true)]
    pub output: OutputFormat,
}

/// `metrics` flags.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// The task.
    #[command(flatten)]
    pub task: TaskTarget,
    /// Only count messages in these phases (comma-separated).
    #[arg(long)]
    pub phase: Option<String>,
    /// Only count the first this many matching messages.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table, ignore_case = true)]
    pub output: OutputFormat,
}

/// `approve` / `deny` flags.
#[derive(Debug, Args)]
pub struct DecisionArgs {
    /// Resource type: `tool-approval`.
    pub resource: String,
    /// Name (or `namespace/name`).
    pub name: String,
    /// Who decides (default: $USER, else `orlojctl`).
    #[arg(long)]
    pub decided_by: Option<String>,
    /// A comment stored with the decision.
    #[arg(long, alias = "reason")]
    pub comment: Option<String>,
}

/// `cancel` flags.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Resource type: `task`.
    pub resource: String,
    /// Name (or `namespace/name`).
    pub name: String,
    /// Why; stored as the task's lastError.
    #[arg(long, default_value = "task canceled via orlojctl")]
    pub reason: String,
}

/// `retry` flags.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Resource type: `task`.
    pub resource: String,
    /// Name (or `namespace/name`).
    pub name: String,
    /// Replace or add an input value, `key=value`; repeat for more.
    #[arg(long = "with-overrides", value_name = "KEY=VALUE")]
    pub with_overrides: Vec<String>,
}

/// The blueprints `init` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Blueprint {
    /// planner -> research -> writer.
    #[default]
    Pipeline,
    /// A manager fanning out to two leads and their workers, joined by an editor.
    Hierarchical,
    /// A coordinator and two scouts in a loop bounded by max_turns.
    SwarmLoop,
}

/// `init` flags.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory to create.
    pub name: PathBuf,
    /// Which blueprint to start from.
    #[arg(long, value_enum, default_value_t = Blueprint::Pipeline, ignore_case = true)]
    pub blueprint: Blueprint,
}

/// What `top` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopResource {
    /// Workers: phase, region, load, heartbeat.
    #[value(alias = "worker")]
    Workers,
    /// Tasks: phase, attempts, worker, age, and counts by phase.
    #[value(alias = "task")]
    Tasks,
}

/// `top` flags.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// `workers` or `tasks`.
    #[arg(value_enum, ignore_case = true)]
    pub resource: TopResource,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table, ignore_case = true)]
    pub output: OutputFormat,
}

/// `graph` flags.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// `system` (an AgentSystem) or `task`.
    pub resource: String,
    /// Name (or `namespace/name`).
    pub name: String,
}

/// `apply` flags.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest file or directory (directories are walked recursively; `.git` is skipped).
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR")]
    pub filename: PathBuf,
    /// Only show what would change.
    #[arg(long)]
    pub dry_run: bool,
    /// Also apply runnable Tasks (mode `run`) found in a directory and wait for them to end;
    /// a task that already ended is re-run as `<name>-run-<unix ms>`.
    #[arg(long)]
    pub run: bool,
    /// With --run: do not wait for the tasks to end.
    #[arg(long, requires = "run")]
    pub no_wait: bool,
    /// With --run: give up waiting after this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// With --run: poll interval while waiting.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub poll: Duration,
}

/// `-f` only.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// Manifest file or directory.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR")]
    pub filename: PathBuf,
}

/// `diff` flags.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Manifest file or directory.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR")]
    pub filename: PathBuf,
    /// Include runnable Tasks found in a directory.
    #[arg(long)]
    pub run: bool,
}

/// `get` flags.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Resource type (kind, plural or alias: agents, agentsystem, policies, ...).
    pub resource: String,
    /// A name (or `namespace/name`); lists all when omitted.
    pub name: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table, ignore_case = true)]
    pub output: OutputFormat,
    /// Stream changes (tasks, agents, task-schedules, task-webhooks): one line per event.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// List across all namespaces (the default when -n is not given).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

/// `describe` flags.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Resource type.
    pub resource: String,
    /// Name (or `namespace/name`).
    pub name: String,
    /// Print only the object in this format instead of the summary.
    #[arg(short = 'o', long, value_enum, ignore_case = true)]
    pub output: Option<OutputFormat>,
}

/// A resource type and a name.
#[derive(Debug, Args)]
pub struct RefArgs {
    /// Resource type.
    pub resource: String,
    /// Name (or `namespace/name`).
    pub name: String,
}

/// `create` subcommands.
#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// Create (or replace) a Secret from literal values.
    Secret {
        /// Secret name.
        name: String,
        /// A `key=value` pair; repeat for more.
        #[arg(long = "from-literal", value_name = "KEY=VALUE", required = true)]
        from_literal: Vec<String>,
    },
    /// Create an API token (admin); prints it once.
    Token {
        /// Token name.
        name: String,
        /// Role: admin, writer, reader or controller.
        #[arg(long, default_value = "reader")]
        role: String,
    },
}

/// `wait` flags.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// What to wait for: `<resource>/<name>`, e.g. `task/report`.
    pub target: String,
    /// The condition: `condition=<Phase>`.
    #[arg(long = "for", value_name = "condition=PHASE")]
    pub condition: String,
    /// Give up after this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Poll interval.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
}

/// `events` flags.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Replay events after this event id.
    #[arg(long)]
    pub since: Option<String>,
    /// Only events from this source (e.g. `apiserver`).
    #[arg(long)]
    pub source: Option<String>,
    /// Only events of this type (e.g. `resource.created`).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only events about this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only events about this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Exit after the first event.
    #[arg(long)]
    pub once: bool,
    /// Stop after this long (exit 0; with --once and no event, exit 1).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Print each event's JSON as received.
    #[arg(long)]
    pub raw: bool,
}

/// `logs` target.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// `task/NAME`, `agent/NAME` or an agent name.
    pub target: String,
}

/// `completion` shell.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the config file path.
    Path,
    /// Show the active profile and where the server and token come from.
    Get,
    /// Make a profile the active one.
    Use {
        /// Profile name.
        name: String,
    },
    /// Create or update a profile (the global --server sets its server); it becomes active
    /// when no profile is.
    SetProfile {
        /// Profile name.
        name: String,
        /// Token stored in the profile.
        #[arg(long)]
        token: Option<String>,
        /// Environment variable to read the token from.
        #[arg(long)]
        token_env: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("orlojctl").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_before_and_after_subcommand() {
        let c = parse(&["--server", "http://x", "-n", "team", "get", "agents"]).expect("parse");
        assert_eq!(c.server.as_deref(), Some("http://x"));
        assert_eq!(c.namespace.as_deref(), Some("team"));
        let c = parse(&[
            "get",
            "agents",
            "-n",
            "team",
            "--api-token",
            "t",
            "-o",
            "yml",
        ])
        .expect("parse");
        assert_eq!(c.namespace.as_deref(), Some("team"));
        assert_eq!(c.api_token.as_deref(), Some("t"));
        match c.command {
            Command::Get(g) => {
                assert_eq!(g.resource, "agents");
                assert_eq!(g.name, None);
                assert_eq!(g.output, OutputFormat::Yaml);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn apply_flags() {
        let c = parse(&["apply", "-f", "dir", "--dry-run", "--run"]).expect("parse");
        match c.command {
            Command::Apply(a) => {
                assert_eq!(a.filename, PathBuf::from("dir"));
                assert!(a.dry_run && a.run);
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = parse(&["apply"]).expect_err("-f required");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn wait_defaults_and_bad_durations() {
        let c = parse(&["wait", "task/t", "--for", "condition=Succeeded"]).expect("parse");
        match c.command {
            Command::Wait(w) => {
                assert_eq!(w.timeout, Duration::from_secs(300));
                assert_eq!(w.interval, Duration::from_secs(2));
                assert_eq!(w.condition, "condition=Succeeded");
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = parse(&["wait", "task/t", "--for", "x", "--timeout", "soon"]).expect_err("bad");
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("invalid duration"), "{e}");
    }

    #[test]
    fn create_secret_needs_literals() {
        let c = parse(&[
            "create",
            "secret",
            "s",
            "--from-literal",
            "a=1",
            "--from-literal",
            "b=2",
        ])
        .expect("parse");
        match c.command {
            Command::Create(CreateCommand::Secret { name, from_literal }) => {
                assert_eq!(name, "s");
                assert_eq!(from_literal, ["a=1", "b=2"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse(&["create", "secret", "s"]).is_err());
    }

    #[test]
    fn events_and_config_and_completion() {
        let c = parse(&[
            "events",
            "--type",
            "resource.created",
            "--once",
            "--timeout",
            "3s",
        ])
        .expect("parse");
        match c.command {
            Command::Events(e) => {
                assert_eq!(e.event_type.as_deref(), Some("resource.created"));
                assert!(e.once);
                assert_eq!(e.timeout, Some(Duration::from_secs(3)));
            }
            other => panic!("unexpected {other:?}"),
        }
        let c = parse(&[
            "config",
            "set-profile",
            "prod",
            "--server",
            "http://p",
            "--token-env",
            "T",
        ])
        .expect("parse");
        assert_eq!(c.server.as_deref(), Some("http://p"));
        assert!(matches!(
            c.command,
            Command::Config(ConfigCommand::SetProfile { ref name, ref token_env, .. })
                if name == "prod" && token_env.as_deref() == Some("T")
        ));
        assert!(parse(&["completion", "fish"]).is_ok());
        assert!(parse(&["completion", "tcsh"]).is_err());
        assert!(
            parse(&["get", "agents", "-A", "-n", "x"]).is_err(),
            "-A conflicts with -n"
        );
    }

    #[test]
    fn run_and_apply_wait_flags() {
        let c = parse(&[
            "run",
            "--system",
            "pipe",
            "topic=x",
            "b=2",
            "--timeout",
            "5s",
        ])
        .expect("parse");
        match c.command {
            Command::Run(r) => {
                assert_eq!(r.system, "pipe");
                assert_eq!(r.input, ["topic=x", "b=2"]);
                assert_eq!(r.timeout, Duration::from_secs(5));
                assert_eq!(r.poll, Duration::from_secs(2));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse(&["run", "topic=x"]).is_err(), "--system is required");
        let c = parse(&["apply", "-f", "d", "--run", "--no-wait"]).expect("parse");
        match c.command {
            Command::Apply(a) => {
                assert!(a.run && a.no_wait);
                assert_eq!(a.timeout, Duration::from_secs(300));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            parse(&["apply", "-f", "d", "--no-wait"]).is_err(),
            "--no-wait needs --run"
        );
    }

    #[test]
    fn task_commands() {
        let c = parse(&["trace", "task", "t1"]).expect("parse");
        assert!(
            matches!(c.command, Command::Trace(ref t) if t.task.target == "task" && t.task.name.as_deref() == Some("t1"))
        );
        let c = parse(&[
            "messages", "task/t", "--agent", "a", "--phase", "queued", "--limit", "5", "-o", "json",
        ])
        .expect("parse");
        match c.command {
            Command::Messages(m) => {
                assert_eq!(m.task.target, "task/t");
                assert_eq!(m.agent.as_deref(), Some("a"));
                assert_eq!(m.phase.as_deref(), Some("queued"));
                assert_eq!(m.limit, Some(5));
                assert_eq!(m.output, OutputFormat::Json);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse(&["metrics", "task/t", "--limit", "-1"]).is_err());
        let c = parse(&["cancel", "task", "t"]).expect("parse");
        assert!(
            matches!(c.command, Command::Cancel(ref a) if a.reason == "task canceled via orlojctl")
        );
        let c = parse(&[
            "retry",
            "task",
            "t",
            "--with-overrides",
            "a=1",
            "--with-overrides",
            "b=2",
        ])
        .expect("parse");
        assert!(matches!(c.command, Command::Retry(ref a) if a.with_overrides == ["a=1", "b=2"]));
        let c = parse(&[
            "deny",
            "tool-approval",
            "x",
            "--reason",
            "no",
            "--decided-by",
            "me",
        ])
        .expect("parse");
        assert!(matches!(c.command, Command::Deny(ref a)
            if a.comment.as_deref() == Some("no") && a.decided_by.as_deref() == Some("me")));
        let c = parse(&["init", "proj"]).expect("parse");
        assert!(matches!(c.command, Command::Init(ref a) if a.blueprint == Blueprint::Pipeline));
        let c = parse(&["init", "proj", "--blueprint", "swarm-loop"]).expect("parse");
        assert!(matches!(c.command, Command::Init(ref a) if a.blueprint == Blueprint::SwarmLoop));
        assert!(parse(&["init", "p", "--blueprint", "star"]).is_err());
        let c = parse(&["top", "tasks", "-o", "yaml"]).expect("parse");
        assert!(matches!(c.command, Command::Top(ref a) if a.resource == TopResource::Tasks));
        assert!(parse(&["top", "agents"]).is_err());
        let c = parse(&["graph", "system", "s"]).expect("parse");
        assert!(
            matches!(c.command, Command::Graph(ref a) if a.resource == "system" && a.name == "s")
        );
    }
}
