//! `orlojd`: configuration (flags and environment, spec §5.1) and the wiring that serves the
//! REST API over the chosen store.

use crate::runtime_args::{LogArgs, MessagingArgs, StorageArgs, StorageBackend, ToolArgs};
use crate::telemetry::LogLevel;
use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Parser};
use orloj_core::{Clock, Store, SystemClock};
use orloj_runtime::api::{ApiConfig, ApiState, Capability, router};
use orloj_runtime::controllers::StatusController;
use orloj_runtime::memory::MemoryRegistry;
use orloj_runtime::scheduler::TaskScheduler;
use orloj_runtime::worker::{Worker, WorkerConfig};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,

    /// Store.
    #[command(flatten)]
    pub storage: StorageArgs,

    /// How often controllers reconcile resources.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub reconcile_interval: Duration,

    /// Run a task worker inside this process (alias `--run-task-worker`).
    #[arg(long, alias = "run-task-worker")]
    pub embedded_worker: bool,

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

    /// Execution mode and buses.
    #[command(flatten)]
    pub messaging: MessagingArgs,

    /// Tool runtime and model secrets.
    #[command(flatten)]
    pub tools: ToolArgs,

    /// Authentication, rate limits, trusted proxies and CORS.
    #[command(flatten)]
    pub auth: crate::auth_args::AuthArgs,

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
        crate::runtime_args::parse_checked(args, Self::check)
    }

    fn check(&self, matches: &ArgMatches) -> anyhow::Result<()> {
        let from_cli = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        self.storage.check(StorageBackend::Memory, matches)?;
        if self.embedded_worker {
            self.messaging.check_for_worker()?;
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
        self.auth.config(self.addr)?;
        Ok(())
    }

    /// The effective log level (`--debug` wins).
    pub fn effective_log_level(&self) -> LogLevel {
        self.log.effective_log_level()
    }
}

/// What `/v1/capabilities` reports for this configuration.
pub fn api_config(args: &OrlojdArgs) -> ApiConfig {
    let mut config = ApiConfig::default();
    config.capabilities.push(Capability {
        id: "core.secrets.encryption_at_rest".to_string(),
        enabled: args.storage.secret_encryption_key.is_some(),
        description: "Secret values sealed at rest with --secret-encryption-key".to_string(),
        source: "core".to_string(),
    });
    config
}

/// The embedded worker configured by the `--task-*` flags.
pub fn embedded_worker(
    args: &OrlojdArgs,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    memory: Arc<MemoryRegistry>,
) -> anyhow::Result<Worker> {
    let config = WorkerConfig {
        worker_id: args.task_worker_id.clone(),
        region: args.task_worker_region.clone(),
        max_concurrent_tasks: args.embedded_worker_max_concurrent_tasks as usize,
        lease_duration: args.task_lease_duration,
        heartbeat_interval: args.task_heartbeat_interval,
        poll_interval: args.reconcile_interval.min(Duration::from_secs(1)),
        drain_timeout: args.shutdown_timeout,
        execution_mode: args.messaging.worker_mode(),
        ..WorkerConfig::default()
    };
    args.tools.worker(config, store, clock, memory)
}

/// How long startup keeps trying to reach NATS before giving up.
pub const CONNECT_GIVE_UP: Duration = Duration::from_secs(60);

/// Runs the server until SIGTERM/Ctrl-C, then drains within `--shutdown-timeout`.
pub async fn run(args: OrlojdArgs) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = args
        .storage
        .open(StorageBackend::Memory, clock.clone())
        .await?;
    let auth_store = crate::auth_args::open_auth_store(&args.storage, clock.clone()).await?;
    if args.auth.is_reset() {
        return args.auth.reset_admin(auth_store.as_ref()).await;
    }
    let memory = Arc::new(MemoryRegistry::with_store(store.clone()));
    let state = ApiState::new(store.clone(), clock.clone())
        .with_auth(args.auth.config(args.addr)?, auth_store)
        .with_config(api_config(&args))
        .with_memory(memory.clone())
        .with_events(args.messaging.event_bus(CONNECT_GIVE_UP).await?);
    // The embedded worker publishes task transitions on the same bus `/v1/events/watch` reads.
    let events = state.events.clone();
    let app = router(state);
    let listener = bind(args.addr).await?;
    tracing::info!(addr = %args.addr, backend = ?args.storage.backend(StorageBackend::Memory), version = env!("CARGO_PKG_VERSION"), "orlojd listening");

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(
        StatusController::new(store.clone(), clock.clone(), args.reconcile_interval)
            .run(cancel.child_token()),
    );
    tracker.spawn(
        TaskScheduler::new(store.clone(), clock.clone(), args.reconcile_interval)
            .with_events(events.clone())
            .run(cancel.child_token()),
    );

    if args.embedded_worker {
        let mut worker = embedded_worker(&args, store.clone(), clock.clone(), memory.clone())?
            .with_events(events.clone());
        if let Some(bus) = args.messaging.agent_bus(CONNECT_GIVE_UP).await? {
            // The embedded worker consumes its own messages (spec §0).
            worker = worker.with_message_bus(bus, args.messaging.message_config(true, None));
        }
        let token = cancel.child_token();
        tracker.spawn(async move {
            if let Err(e) = worker.run(token).await {
                tracing::error!(error = %e, "embedded worker stopped with an error");
            }
        });
    }

    let shutdown = cancel.clone();
    // Peer addresses feed the per-IP auth limits and trusted-proxy checks.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
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
        assert_eq!(
            a.storage.backend(StorageBackend::Memory),
            StorageBackend::Memory
        );
        assert_eq!(a.reconcile_interval, Duration::from_secs(2));
        assert_eq!(
            a.storage.postgres_conn_max_lifetime,
            Duration::from_secs(1800)
        );
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
