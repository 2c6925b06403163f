//! Flags shared by `orlojd` and `orlojworker` (spec control-plane §5.1–5.2): the execution
//! mode, the agent message bus, the control-plane event bus, the tool runtime and model
//! secrets, and the wiring they configure.

use crate::telemetry::{LogFormat, LogLevel};
use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use orloj_core::bus::{Bus, DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX};
use orloj_core::{Clock, Store};
use orloj_runtime::bus::{MemoryBus, MemoryBusConfig, NatsBus, NatsBusConfig};
use orloj_runtime::events::{EventBus, MemoryEventBus};
use orloj_runtime::events_nats::{NatsEventBus, NatsEventBusConfig};
use orloj_runtime::memory::{MEMORY_TOOL_TYPE, MemoryRegistry, MemoryToolExecutor};
use orloj_runtime::model::StoreModelRouter;
use orloj_runtime::read_cache::ReadCache;
use orloj_runtime::tools::secrets::{
    ChainSecretResolver, EnvLookup, EnvSecretResolver, StoreSecretResolver,
};
use orloj_runtime::tools::{ContainerConfig, GovernedToolRuntime, ToolRuntimeConfig};
use orloj_runtime::worker::{self, MessageConfig, Worker, WorkerConfig};
use orloj_store::{MemoryStore, PostgresOptions, PostgresStore, SealedStore, SecretKey};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;

use crate::daemon::parse_duration;

/// How tasks execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutionMode {
    /// The claiming worker walks the whole graph in process.
    Sequential,
    /// Agents hand work to each other over the agent message bus.
    MessageDriven,
}

/// Agent message bus backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AgentBusBackend {
    /// No bus (sequential mode only).
    None,
    /// In process: messages never leave this process.
    Memory,
    /// NATS JetStream (`--agent-message-nats-url`).
    #[value(name = "nats-jetstream", alias = "nats")]
    NatsJetstream,
}

/// Control-plane event bus backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventBusBackend {
    /// In process: watches see this process's events only.
    Memory,
    /// NATS (`--nats-url`): watches on any process see every process's events.
    Nats,
}

/// Execution mode and buses.
#[derive(Debug, Clone, Args)]
pub struct MessagingArgs {
    /// How tasks execute: `sequential` (the claiming worker walks the graph in process) or
    /// `message-driven` (agents hand work to each other over the agent message bus).
    #[arg(
        long,
        env = "ORLOJ_TASK_EXECUTION_MODE",
        value_enum,
        default_value = "sequential",
        ignore_case = true
    )]
    pub task_execution_mode: ExecutionMode,

    /// Agent message bus: `none`, `memory` or `nats-jetstream` (alias `nats`).
    #[arg(
        long,
        env = "ORLOJ_AGENT_MESSAGE_BUS_BACKEND",
        value_enum,
        default_value = "none",
        ignore_case = true
    )]
    pub agent_message_bus_backend: AgentBusBackend,

    /// NATS URL of the agent message bus (falls back to `ORLOJ_NATS_URL`).
    #[arg(long, env = "ORLOJ_AGENT_MESSAGE_NATS_URL")]
    pub agent_message_nats_url: Option<String>,

    /// Subject prefix of agent messages (`<prefix>.<namespace>.<agent>.inbox`).
    #[arg(long, env = "ORLOJ_AGENT_MESSAGE_SUBJECT_PREFIX", default_value = DEFAULT_SUBJECT_PREFIX)]
    pub agent_message_subject_prefix: String,

    /// JetStream stream holding agent messages.
    #[arg(long, env = "ORLOJ_AGENT_MESSAGE_STREAM", default_value = DEFAULT_STREAM)]
    pub agent_message_stream_name: String,

    /// Undelivered messages the memory bus keeps per consumer.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub agent_message_history_max: u32,

    /// Publish deduplication window of the agent message bus.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub agent_message_dedupe_window: Duration,

    /// Control-plane event bus: `memory` or `nats`.
    #[arg(
        long,
        env = "ORLOJ_EVENT_BUS_BACKEND",
        value_enum,
        default_value = "memory",
        ignore_case = true
    )]
    pub event_bus_backend: EventBusBackend,

    /// NATS URL of the control-plane event bus (and default of the agent message bus).
    #[arg(long, env = "ORLOJ_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Subject prefix of control-plane events (`<prefix>.events`).
    #[arg(
        long,
        env = "ORLOJ_NATS_SUBJECT_PREFIX",
        default_value = "orloj.controlplane"
    )]
    pub nats_subject_prefix: String,
}

impl MessagingArgs {
    /// The execution mode for the worker library.
    pub fn worker_mode(&self) -> worker::ExecutionMode {
        match self.task_execution_mode {
            ExecutionMode::Sequential => worker::ExecutionMode::Sequential,
            ExecutionMode::MessageDriven => worker::ExecutionMode::MessageDriven,
        }
    }

    /// Fails when a worker in this process could not run tasks with these settings.
    pub fn check_for_worker(&self) -> anyhow::Result<()> {
        if self.task_execution_mode == ExecutionMode::MessageDriven
            && self.agent_message_bus_backend == AgentBusBackend::None
        {
            bail!(
                "--task-execution-mode message-driven needs --agent-message-bus-backend memory or nats-jetstream"
            );
        }
        Ok(())
    }

    fn agent_nats_url(&self) -> String {
        self.agent_message_nats_url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| self.nats_url.clone())
    }

    /// Opens the agent message bus (`None` for `none`). A NATS server that cannot be reached
    /// is retried with backoff until `give_up` passes.
    pub async fn agent_bus(&self, give_up: Duration) -> anyhow::Result<Option<Arc<dyn Bus>>> {
        match self.agent_message_bus_backend {
            AgentBusBackend::None => Ok(None),
            AgentBusBackend::Memory => Ok(Some(Arc::new(MemoryBus::new(MemoryBusConfig {
                history: self.agent_message_history_max as usize,
                dedupe_window: self.agent_message_dedupe_window,
                ..MemoryBusConfig::default()
            })))),
            AgentBusBackend::NatsJetstream => {
                let config = NatsBusConfig {
                    url: self.agent_nats_url(),
                    stream: self.agent_message_stream_name.clone(),
                    subject_prefix: self.agent_message_subject_prefix.clone(),
                    duplicate_window: self.agent_message_dedupe_window,
                    ..NatsBusConfig::default()
                };
                let bus = retry_until(give_up, "the agent message bus (NATS JetStream)", || {
                    NatsBus::connect(config.clone())
                })
                .await?;
                Ok(Some(Arc::new(bus)))
            }
        }
    }

    /// Opens the control-plane event bus.
    pub async fn event_bus(&self, give_up: Duration) -> anyhow::Result<Arc<dyn EventBus>> {
        match self.event_bus_backend {
            EventBusBackend::Memory => Ok(Arc::new(MemoryEventBus::default())),
            EventBusBackend::Nats => {
                let config = NatsEventBusConfig {
                    url: self.nats_url.clone(),
                    subject_prefix: self.nats_subject_prefix.clone(),
                    ..NatsEventBusConfig::default()
                };
                let bus = retry_until(give_up, "the control-plane event bus (NATS)", || {
                    NatsEventBus::connect(config.clone())
                })
                .await?;
                Ok(Arc::new(bus))
            }
        }
    }

    /// Message-driven settings of a worker.
    pub fn message_config(&self, consume: bool, namespace: Option<String>) -> MessageConfig {
        MessageConfig {
            subject_prefix: self.agent_message_subject_prefix.clone(),
            consume,
            consumer_namespace: namespace.filter(|n| !n.trim().is_empty()),
            ..MessageConfig::default()
        }
    }
}

/// Retries `connect` with capped backoff until it succeeds or `give_up` has passed.
async fn retry_until<T, F, Fut>(give_up: Duration, what: &str, mut connect: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = orloj_core::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + give_up;
    let mut delay = Duration::from_millis(200);
    loop {
        match connect().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot reach {what}; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot reach {what}"))),
        }
    }
}

/// Where tools with a non-`none` isolation mode run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IsolationBackend {
    /// No backend: such tools fail with `isolation_unavailable`.
    None,
    /// A docker-compatible CLI (`--tool-container-runtime`).
    Container,
}

/// Tool runtime and model secret settings.
#[derive(Debug, Clone, Args)]
pub struct ToolArgs {
    /// Environment prefix for model API keys (`<prefix><SECRET_NAME>`).
    #[arg(
        long,
        env = "ORLOJ_MODEL_SECRET_ENV_PREFIX",
        default_value = "ORLOJ_SECRET_"
    )]
    pub model_secret_env_prefix: String,

    /// Environment prefix for tool secrets (`<prefix><SECRET_NAME>`).
    #[arg(
        long,
        env = "ORLOJ_TOOL_SECRET_ENV_PREFIX",
        default_value = "ORLOJ_SECRET_"
    )]
    pub tool_secret_env_prefix: String,

    /// Isolation backend for tools whose isolation mode is not `none`.
    #[arg(
        long,
        env = "ORLOJ_TOOL_ISOLATION_BACKEND",
        value_enum,
        default_value = "none",
        ignore_case = true
    )]
    pub tool_isolation_backend: IsolationBackend,

    /// Docker-compatible CLI that runs tool containers (docker, podman).
    #[arg(long, env = "ORLOJ_TOOL_CONTAINER_RUNTIME", default_value = "docker")]
    pub tool_container_runtime: String,

    /// Image tool containers run.
    #[arg(
        long,
        env = "ORLOJ_TOOL_CONTAINER_IMAGE",
        default_value = "curlimages/curl:8.8.0"
    )]
    pub tool_container_image: String,

    /// Network of tool containers.
    #[arg(long, env = "ORLOJ_TOOL_CONTAINER_NETWORK", default_value = "none")]
    pub tool_container_network: String,

    /// Memory limit of tool containers.
    #[arg(long, env = "ORLOJ_TOOL_CONTAINER_MEMORY", default_value = "128m")]
    pub tool_container_memory: String,

    /// CPU limit of tool containers.
    #[arg(long, env = "ORLOJ_TOOL_CONTAINER_CPUS", default_value = "0.50")]
    pub tool_container_cpus: String,

    /// Process limit of tool containers.
    #[arg(long, env = "ORLOJ_TOOL_CONTAINER_PIDS_LIMIT", default_value_t = 64)]
    pub tool_container_pids_limit: u32,

    /// `uid:gid` tool containers run as.
    #[arg(long, env = "ORLOJ_TOOL_CONTAINER_USER", default_value = "65532:65532")]
    pub tool_container_user: String,
}

fn env_lookup() -> EnvLookup {
    Arc::new(|name: &str| std::env::var(name).ok())
}

impl ToolArgs {
    /// The tool runtime configured by the `--tool-*` flags.
    pub fn tool_runtime(
        &self,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<GovernedToolRuntime> {
        let secrets = Arc::new(ChainSecretResolver::new(vec![
            Arc::new(StoreSecretResolver::new(store)),
            Arc::new(EnvSecretResolver::new(
                self.tool_secret_env_prefix.clone(),
                env_lookup(),
            )),
        ]));
        let container =
            (self.tool_isolation_backend == IsolationBackend::Container).then(|| ContainerConfig {
                runtime: self.tool_container_runtime.clone(),
                image: self.tool_container_image.clone(),
                network: self.tool_container_network.clone(),
                memory: self.tool_container_memory.clone(),
                cpus: self.tool_container_cpus.clone(),
                pids_limit: self.tool_container_pids_limit,
                user: self.tool_container_user.clone(),
                ..ContainerConfig::default()
            });
        let config = ToolRuntimeConfig {
            container,
            allow_private_endpoints: false,
        };
        GovernedToolRuntime::standard(config, secrets, clock)
            .map_err(|e| anyhow::anyhow!("cannot build the tool runtime: {e}"))
    }

    /// A worker over `store` with the model gateway, the tool runtime (plus memory tools) and
    /// `config`.
    pub fn worker(
        &self,
        config: WorkerConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        memory: Arc<MemoryRegistry>,
    ) -> anyhow::Result<Worker> {
        // Run resolution (and the model endpoints it resolves) reads through a cache that is
        // refreshed at the start of every resolution.
        let resolution = Arc::new(ReadCache::for_resolution(store.clone()));
        let models = StoreModelRouter::with_env(
            resolution.clone(),
            self.model_secret_env_prefix.clone(),
            env_lookup(),
        )
        .context("cannot build the model gateway")?;
        let tools = self
            .tool_runtime(store.clone(), clock.clone())?
            .with_type_executor(MEMORY_TOOL_TYPE, Arc::new(MemoryToolExecutor::new(memory)));
        Ok(
            Worker::new(config, store, clock, Arc::new(models), Arc::new(tools))
                .with_read_cache(resolution),
        )
    }
}

/// Which store holds the resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageBackend {
    /// In process; nothing survives a restart.
    Memory,
    /// Postgres (`--postgres-dsn`).
    Postgres,
}

/// Store settings.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Where resources are stored (orlojd default: memory; orlojworker default: postgres).
    #[arg(long, value_enum, ignore_case = true)]
    pub storage_backend: Option<StorageBackend>,

    /// Postgres connection string (required with `--storage-backend postgres`).
    #[arg(long, env = "ORLOJ_POSTGRES_DSN", hide_env_values = true)]
    pub postgres_dsn: Option<String>,

    /// Key sealing Secret values at rest: 32 bytes as 64 hex characters or base64.
    #[arg(
        long,
        env = "ORLOJ_SECRET_ENCRYPTION_KEY",
        hide_env_values = true,
        value_name = "KEY",
        value_parser = parse_secret_string
    )]
    pub secret_encryption_key: Option<SecretString>,

    /// SQL driver name, accepted for compatibility; only `pgx`/`postgres` exist.
    #[arg(long, default_value = "pgx")]
    pub sql_driver: String,

    /// Most connections the Postgres pool opens.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub postgres_max_open_conns: u32,

    /// Connections the Postgres pool keeps open when idle.
    #[arg(long, default_value_t = 10)]
    pub postgres_max_idle_conns: u32,

    /// How long a Postgres connection lives before it is replaced.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub postgres_conn_max_lifetime: Duration,
}

/// Keeps a flag value out of `Debug` output and clap error messages.
fn parse_secret_string(text: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(text.to_string()))
}

impl StorageArgs {
    /// Checks the storage flags against the backend in effect (`default` when not given).
    pub fn check(&self, default: StorageBackend, matches: &ArgMatches) -> anyhow::Result<()> {
        let from_cli = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        if !matches!(self.sql_driver.as_str(), "pgx" | "postgres") {
            bail!(
                "--sql-driver {:?} is not supported; use pgx (the default)",
                self.sql_driver
            );
        }
        match self.backend(default) {
            StorageBackend::Postgres => {
                if self
                    .postgres_dsn
                    .as_deref()
                    .is_none_or(|d| d.trim().is_empty())
                {
                    bail!("--storage-backend postgres needs --postgres-dsn or ORLOJ_POSTGRES_DSN");
                }
            }
            StorageBackend::Memory => {
                for flag in [
                    "postgres_dsn",
                    "postgres_max_open_conns",
                    "postgres_max_idle_conns",
                    "postgres_conn_max_lifetime",
                ] {
                    if from_cli(flag) {
                        bail!(
                            "--{} only applies to --storage-backend postgres (the storage backend is memory)",
                            flag.replace('_', "-")
                        );
                    }
                }
            }
        }
        if self.postgres_max_idle_conns > self.postgres_max_open_conns {
            bail!(
                "--postgres-max-idle-conns ({}) cannot exceed --postgres-max-open-conns ({})",
                self.postgres_max_idle_conns,
                self.postgres_max_open_conns
            );
        }
        self.secret_key()?;
        Ok(())
    }

    /// The backend in effect.
    pub fn backend(&self, default: StorageBackend) -> StorageBackend {
        self.storage_backend.unwrap_or(default)
    }

    /// The parsed `--secret-encryption-key`, if one is given.
    pub fn secret_key(&self) -> anyhow::Result<Option<SecretKey>> {
        self.secret_encryption_key
            .as_ref()
            .map(|text| {
                SecretKey::parse(text.expose_secret()).map_err(|e| {
                    anyhow::anyhow!(
                        "--secret-encryption-key (ORLOJ_SECRET_ENCRYPTION_KEY): {}",
                        e.message()
                    )
                })
            })
            .transpose()
    }

    /// Opens the configured store; Secret values are sealed at rest when a key is given.
    pub async fn open(
        &self,
        default: StorageBackend,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Arc<dyn Store>> {
        let store: Arc<dyn Store> = match self.backend(default) {
            StorageBackend::Memory => {
                tracing::warn!("storage backend is memory: nothing survives a restart");
                Arc::new(MemoryStore::new(clock))
            }
            StorageBackend::Postgres => {
                let dsn = self.postgres_dsn.as_deref().unwrap_or_default();
                let options = PostgresOptions {
                    max_open_conns: self.postgres_max_open_conns,
                    max_idle_conns: self.postgres_max_idle_conns,
                    conn_max_lifetime: self.postgres_conn_max_lifetime,
                    ..PostgresOptions::default()
                };
                Arc::new(
                    PostgresStore::connect(dsn, options, clock)
                        .await
                        .context("cannot open the Postgres store")?,
                )
            }
        };
        Ok(match self.secret_key()? {
            Some(key) => Arc::new(SealedStore::new(store, key)),
            None => {
                tracing::warn!(
                    "no --secret-encryption-key: Secret values are stored unencrypted (base64 only)"
                );
                store
            }
        })
    }
}

/// Logging settings.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log verbosity.
    #[arg(
        long,
        env = "ORLOJ_LOG_LEVEL",
        value_enum,
        default_value = "info",
        ignore_case = true
    )]
    pub log_level: LogLevel,

    /// Shorthand for `--log-level debug`.
    #[arg(long)]
    pub debug: bool,

    /// Log line format.
    #[arg(
        long,
        env = "ORLOJ_LOG_FORMAT",
        value_enum,
        default_value = "json",
        ignore_case = true
    )]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// The effective log level (`--debug` wins).
    pub fn effective_log_level(&self) -> LogLevel {
        if self.debug {
            LogLevel::Debug
        } else {
            self.log_level
        }
    }
}

/// Parses `A`'s flags (with the program name first) and runs `check` on the result, so a
/// contradiction fails like a malformed flag.
pub fn parse_checked<A, I, T>(
    args: I,
    check: impl FnOnce(&A, &ArgMatches) -> anyhow::Result<()>,
) -> anyhow::Result<A>
where
    A: clap::CommandFactory + clap::FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = A::command().try_get_matches_from(args)?;
    let parsed = A::from_arg_matches(&matches)?;
    check(&parsed, &matches)?;
    Ok(parsed)
}

/// The body of a binary's `main`: `--help`/`--version` print and exit 0; a bad flag prints one
/// line and exits 2; otherwise logging starts and `run` runs, a failure printing one line and
/// exiting 1.
pub async fn run_main<A, F, Fut>(
    name: &str,
    parsed: anyhow::Result<A>,
    log: impl FnOnce(&A) -> &LogArgs,
    run: F,
) -> std::process::ExitCode
where
    F: FnOnce(A) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use std::process::ExitCode;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = match parsed {
        Ok(args) => args,
        Err(err) => {
            if let Some(clap_err) = err.downcast_ref::<clap::Error>()
                && !clap_err.use_stderr()
            {
                // --help / --version
                let _ = clap_err.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("{name}: {}", crate::daemon::one_line(&err));
            return ExitCode::from(2);
        }
    };
    let logging = log(&args);
    crate::telemetry::init(logging.effective_log_level(), logging.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: {}", crate::daemon::one_line(&err));
            ExitCode::FAILURE
        }
    }
}
