//! `orlojd`: configuration (flags and environment, spec §5.1) and the wiring that serves the
//! REST API over the chosen store.

use crate::telemetry::{LogFormat, LogLevel};
use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use orloj_core::{Clock, Store, SystemClock};
use orloj_runtime::api::{ApiConfig, ApiState, router};
use orloj_runtime::controllers::StatusController;
use orloj_runtime::memory::{MEMORY_TOOL_TYPE, MemoryRegistry, MemoryToolExecutor};
use orloj_runtime::model::StoreModelRouter;
use orloj_runtime::tools::secrets::{
    ChainSecretResolver, EnvLookup, EnvSecretResolver, StoreSecretResolver,
};
use orloj_runtime::tools::{ContainerConfig, GovernedToolRuntime, ToolRuntimeConfig};
use orloj_runtime::worker::{Worker, WorkerConfig};
use orloj_store::{MemoryStore, PostgresOptions, PostgresStore};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Which store holds the resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageBackend {
    /// In process; nothing survives a restart.
    Memory,
    /// Postgres (`--postgres-dsn`).
    Postgres,
}

/// Where tools with a non-`none` isolation mode run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IsolationBackend {
    /// No backend: such tools fail with `isolation_unavailable`.
    None,
    /// A docker-compatible CLI (`--tool-container-runtime`).
    Container,
}

/// How tasks execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutionMode {
    /// The claiming worker walks the whole graph in process.
    Sequential,
    /// Agents hand work to each other over the message bus (not available yet).
    MessageDriven,
}

/// Parses a Go-style duration (`2s`, `30m`, `1h30m`, `500ms`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); use e.g. 500ms, 2s, 30m, 1h30m"))
}

/// Parses a listen address: `host:port`, `[v6]:port`, or `:port` for every interface.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let full = if let Some(port) = text.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else {
        text.to_string()
    };
    full.to_socket_addrs()
        .map_err(|e| format!("invalid listen address {text:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("listen address {text:?} resolves to nothing"))
}

/// The Orloj server: stores resources, serves the REST API, schedules tasks.
#[derive(Debug, Clone, Parser)]
#[command(name = "orlojd", version, about, long_about = None)]
pub struct OrlojdArgs {
    /// Address to listen on (`host:port`, or `:port` for all interfaces).
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_addr)]
    pub addr: SocketAddr,

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

    /// Where resources are stored.
    #[arg(long, value_enum, default_value = "memory", ignore_case = true)]
    pub storage_backend: StorageBackend,

    /// Postgres connection string (required with `--storage-backend postgres`).
    #[arg(long, env = "ORLOJ_POSTGRES_DSN", hide_env_values = true)]
    pub postgres_dsn: Option<String>,

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

    /// How often controllers reconcile resources.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub reconcile_interval: Duration,

    /// Run a task worker inside this process (alias `--run-task-worker`).
    #[arg(long, alias = "run-task-worker")]
    pub embedded_worker: bool,

    /// How tasks execute: `sequential` (the claiming worker walks the graph in process).
    #[arg(
        long,
        env = "ORLOJ_TASK_EXECUTION_MODE",
        value_enum,
        default_value = "sequential",
        ignore_case = true
    )]
    pub task_execution_mode: ExecutionMode,

    /// Worker id of the embedded worker (its Worker resource name).
    #[arg(long, default_value = "embedded-worker")]
    pub task_worker_id: String,

    /// Region of the embedded worker, matched against `spec.requirements.region`.
    #[arg(long, env = "ORLOJ_TASK_WORKER_REGION", default_value = "default")]
    pub task_worker_region: String,

    /// How many tasks the embedded worker runs at once.
    #[arg(long, env = "ORLOJ_EMBEDDED_WORKER_MAX_CONCURRENT_TASKS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub embedded_worker_max_concurrent_tasks: u32,

    /// How long a claimed task's lease lasts without a heartbeat.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub task_lease_duration: Duration,

    /// How often a worker renews the leases it holds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub task_heartbeat_interval: Duration,

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

    /// How long a shutdown may take to drain open requests before exiting anyway.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

impl OrlojdArgs {
    /// Parses arguments (without the program name) and checks they are consistent.
    pub fn parse_and_check<I, T>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let parsed = Self::from_arg_matches(&matches)?;
        parsed.check(&matches)?;
        Ok(parsed)
    }

    fn check(&self, matches: &ArgMatches) -> anyhow::Result<()> {
        let from_cli = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        if !matches!(self.sql_driver.as_str(), "pgx" | "postgres") {
            bail!(
                "--sql-driver {:?} is not supported; use pgx (the default)",
                self.sql_driver
            );
        }
        match self.storage_backend {
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
        if self.task_execution_mode == ExecutionMode::MessageDriven {
            bail!(
                "--task-execution-mode message-driven is not available in this build yet; use sequential"
            );
        }
        if !self.embedded_worker {
            for flag in [
                "task_worker_id",
                "task_worker_region",
                "embedded_worker_max_concurrent_tasks",
                "task_lease_duration",
                "task_heartbeat_interval",
            ] {
                if from_cli(flag) {
                    bail!(
                        "--{} only applies with --embedded-worker",
                        flag.replace('_', "-")
                    );
                }
            }
        }
        if self.task_heartbeat_interval.is_zero()
            || self.task_heartbeat_interval >= self.task_lease_duration
        {
            bail!(
                "--task-heartbeat-interval ({:?}) must be greater than zero and shorter than --task-lease-duration ({:?})",
                self.task_heartbeat_interval,
                self.task_lease_duration
            );
        }
        if self.reconcile_interval.is_zero() {
            bail!("--reconcile-interval must be greater than zero");
        }
        Ok(())
    }

    /// The effective log level (`--debug` wins).
    pub fn effective_log_level(&self) -> LogLevel {
        if self.debug {
            LogLevel::Debug
        } else {
            self.log_level
        }
    }
}

/// Opens the configured store.
pub async fn open_store(
    args: &OrlojdArgs,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<dyn Store>> {
    match args.storage_backend {
        StorageBackend::Memory => {
            tracing::warn!("storage backend is memory: nothing survives a restart");
            Ok(Arc::new(MemoryStore::new(clock)))
        }
        StorageBackend::Postgres => {
            let dsn = args.postgres_dsn.as_deref().unwrap_or_default();
            let options = PostgresOptions {
                max_open_conns: args.postgres_max_open_conns,
                max_idle_conns: args.postgres_max_idle_conns,
                conn_max_lifetime: args.postgres_conn_max_lifetime,
                ..PostgresOptions::default()
            };
            let store = PostgresStore::connect(dsn, options, clock)
                .await
                .context("cannot open the Postgres store")?;
            Ok(Arc::new(store))
        }
    }
}

fn env_lookup() -> EnvLookup {
    Arc::new(|name: &str| std::env::var(name).ok())
}

/// The tool runtime configured by the `--tool-*` flags.
pub fn tool_runtime(
    args: &OrlojdArgs,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<GovernedToolRuntime> {
    let secrets = Arc::new(ChainSecretResolver::new(vec![
        Arc::new(StoreSecretResolver::new(store)),
        Arc::new(EnvSecretResolver::new(
            args.tool_secret_env_prefix.clone(),
            env_lookup(),
        )),
    ]));
    let container =
        (args.tool_isolation_backend == IsolationBackend::Container).then(|| ContainerConfig {
            runtime: args.tool_container_runtime.clone(),
            image: args.tool_container_image.clone(),
            network: args.tool_container_network.clone(),
            memory: args.tool_container_memory.clone(),
            cpus: args.tool_container_cpus.clone(),
            pids_limit: args.tool_container_pids_limit,
            user: args.tool_container_user.clone(),
            ..ContainerConfig::default()
        });
    let config = ToolRuntimeConfig {
        container,
        allow_private_endpoints: false,
    };
    GovernedToolRuntime::standard(config, secrets, clock)
        .map_err(|e| anyhow::anyhow!("cannot build the tool runtime: {e}"))
}

/// The embedded worker configured by the `--task-*` flags.
pub fn embedded_worker(
    args: &OrlojdArgs,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    memory: Arc<MemoryRegistry>,
) -> anyhow::Result<Worker> {
    let models = StoreModelRouter::with_env(
        store.clone(),
        args.model_secret_env_prefix.clone(),
        env_lookup(),
    )
    .context("cannot build the model gateway")?;
    let tools = tool_runtime(args, store.clone(), clock.clone())?
        .with_type_executor(MEMORY_TOOL_TYPE, Arc::new(MemoryToolExecutor::new(memory)));
    let config = WorkerConfig {
        worker_id: args.task_worker_id.clone(),
        region: args.task_worker_region.clone(),
        max_concurrent_tasks: args.embedded_worker_max_concurrent_tasks as usize,
        lease_duration: args.task_lease_duration,
        heartbeat_interval: args.task_heartbeat_interval,
        poll_interval: args.reconcile_interval.min(Duration::from_secs(1)),
        drain_timeout: args.shutdown_timeout,
        ..WorkerConfig::default()
    };
    Ok(Worker::new(
        config,
        store,
        clock,
        Arc::new(models),
        Arc::new(tools),
    ))
}

/// Runs the server until SIGTERM/Ctrl-C, then drains within `--shutdown-timeout`.
pub async fn run(args: OrlojdArgs) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&args, clock.clone()).await?;
    let memory = Arc::new(MemoryRegistry::with_store(store.clone()));
    let state = ApiState::new(store.clone(), clock.clone())
        .with_config(ApiConfig::default())
        .with_memory(memory.clone());
    // The embedded worker publishes task transitions on the same bus `/v1/events/watch` reads.
    let events = state.events.clone();
    let app = router(state);
    let listener = bind(args.addr).await?;
    tracing::info!(addr = %args.addr, backend = ?args.storage_backend, version = env!("CARGO_PKG_VERSION"), "orlojd listening");

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(
        StatusController::new(store.clone(), clock.clone(), args.reconcile_interval)
            .run(cancel.child_token()),
    );

    if args.embedded_worker {
        let worker = embedded_worker(&args, store.clone(), clock.clone(), memory.clone())?
            .with_events(events.clone());
        let token = cancel.child_token();
        tracker.spawn(async move {
            if let Err(e) = worker.run(token).await {
                tracing::error!(error = %e, "embedded worker stopped with an error");
            }
        });
    }

    let shutdown = cancel.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        shutdown.cancel();
    });
    let drain = args.shutdown_timeout;
    let serving = tokio::spawn(async move { server.await });
    cancel.cancelled().await;
    tracker.close();
    match tokio::time::timeout(drain, async {
        let served = serving.await;
        tracker.wait().await;
        served
    })
    .await
    {
        Ok(Ok(Ok(()))) => {
            tracing::info!("orlojd stopped");
            Ok(())
        }
        Ok(Ok(Err(e))) => Err(anyhow::Error::new(e).context("server failed")),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("server task failed")),
        Err(_) => {
            tracing::warn!(timeout = ?drain, "drain deadline passed; exiting with requests still open");
            Ok(())
        }
    }
}

/// Resolves when SIGTERM or Ctrl-C arrives; a second signal exits the process at once.
pub async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutdown requested; draining (send the signal again to exit at once)");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second signal: exiting immediately");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Binds the listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Turns a startup error into the one-line reason printed before exiting non-zero.
pub fn one_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<OrlojdArgs> {
        OrlojdArgs::parse_and_check(std::iter::once("orlojd").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let a = parse(&[]).expect("defaults parse");
        assert_eq!(a.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(a.storage_backend, StorageBackend::Memory);
        assert_eq!(a.reconcile_interval, Duration::from_secs(2));
        assert_eq!(a.postgres_conn_max_lifetime, Duration::from_secs(1800));
    }

    #[test]
    fn go_style_addr_and_durations() {
        let a = parse(&["--addr", ":9090", "--reconcile-interval", "1m30s"]).expect("parse");
        assert_eq!(a.addr.port(), 9090);
        assert!(a.addr.ip().is_unspecified());
        assert_eq!(a.reconcile_interval, Duration::from_secs(90));
    }

    #[test]
    fn contradictions_fail_with_a_reason() {
        let err = parse(&["--storage-backend", "postgres"]).expect_err("no dsn");
        assert!(err.to_string().contains("--postgres-dsn"), "{err}");
        let err = parse(&["--postgres-dsn", "postgres://x"]).expect_err("memory + dsn");
        assert!(err.to_string().contains("only applies"), "{err}");
        let err = parse(&["--bogus"]).expect_err("unknown flag");
        assert!(err.to_string().contains("--bogus"), "{err}");
        let err = parse(&["--reconcile-interval", "soon"]).expect_err("bad duration");
        assert!(err.to_string().contains("invalid duration"), "{err}");
        let err = parse(&["--task-worker-id", "w"]).expect_err("worker flag without worker");
        assert!(err.to_string().contains("--embedded-worker"), "{err}");
        let err = parse(&[
            "--embedded-worker",
            "--task-lease-duration",
            "5s",
            "--task-heartbeat-interval",
            "10s",
        ])
        .expect_err("heartbeat longer than lease");
        assert!(err.to_string().contains("shorter than"), "{err}");
        let ok = parse(&["--run-task-worker", "--task-worker-id", "w9"]).expect("alias works");
        assert!(ok.embedded_worker);
        let err = parse(&["--storage-backend", "etcd"]).expect_err("bad backend");
        assert!(err.to_string().contains("etcd"), "{err}");
    }
}
