//! `orlojworker`: a standalone task worker (spec control-plane §5.2, runtime §4). It registers
//! its `Worker` resource, heartbeats, claims tasks that fit it under a lease and runs them —
//! sequentially, or kicking them off and consuming agent messages in message-driven mode. On
//! SIGTERM it stops claiming, finishes or hands back what it holds, and exits.

use crate::daemon::{CONNECT_GIVE_UP, bind, parse_addr, parse_duration, shutdown_signal};
use crate::runtime_args::{LogArgs, MessagingArgs, StorageArgs, StorageBackend, ToolArgs};
use crate::telemetry::LogLevel;
use anyhow::bail;
use clap::parser::ValueSource;
use clap::{ArgMatches, Parser};
use orloj_core::{Clock, SystemClock};
use orloj_runtime::memory::MemoryRegistry;
use orloj_runtime::worker::WorkerConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The Orloj task worker.
#[derive(Debug, Clone, Parser)]
#[command(name = "orlojworker", version, about, long_about = None)]
pub struct OrlojworkerArgs {
    /// Worker id: the `Worker` resource name and the lease holder name.
    #[arg(long, default_value = "worker-1")]
    pub worker_id: String,

    /// Serve `GET /healthz` (`ok`) on this address (`host:port` or `:port`); off when empty.
    #[arg(long, env = "ORLOJ_WORKER_HEALTHZ_ADDR", value_parser = parse_optional_addr, default_value = "")]
    pub healthz_addr: OptionalAddr,

    /// How often the worker looks for claimable tasks.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub reconcile_interval: Duration,

    /// How long a claimed task's lease lasts without renewal.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How often the worker heartbeats and renews the leases it holds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Region, matched against `spec.requirements.region`.
    #[arg(long, default_value = "default")]
    pub region: String,

    /// This worker has a GPU (`spec.requirements.gpu`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value = "false")]
    pub gpu: bool,

    /// Models this worker serves (comma-separated); empty means any.
    #[arg(long, value_delimiter = ',', default_value = "")]
    pub supported_models: Vec<String>,

    /// Tasks claimed at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_tasks: u32,

    /// Consume agent messages (message-driven mode).
    #[arg(long, env = "ORLOJ_AGENT_MESSAGE_CONSUME", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value = "false")]
    pub agent_message_consume: bool,

    /// Only consume agent messages of this namespace.
    #[arg(
        long,
        env = "ORLOJ_AGENT_MESSAGE_CONSUMER_NAMESPACE",
        default_value = ""
    )]
    pub agent_message_consumer_namespace: String,

    /// Accepted for compatibility: this worker keeps one consumer for every agent, so there is
    /// no agent list to refresh.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub agent_message_consumer_refresh: Duration,

    /// Accepted for compatibility: duplicates are recognised from the task's message records.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub agent_message_consumer_dedupe_window: Duration,

    /// How long a shutdown waits for running work before handing it back.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,

    /// Store.
    #[command(flatten)]
    pub storage: StorageArgs,

    /// Execution mode and buses.
    #[command(flatten)]
    pub messaging: MessagingArgs,

    /// Tool runtime and model secrets.
    #[command(flatten)]
    pub tools: ToolArgs,
}

/// A listen address that may be absent (`--healthz-addr ""`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

fn parse_optional_addr(text: &str) -> Result<OptionalAddr, String> {
    if text.trim().is_empty() {
        Ok(OptionalAddr(None))
    } else {
        parse_addr(text).map(|a| OptionalAddr(Some(a)))
    }
}

impl OrlojworkerArgs {
    /// Parses arguments (with the program name) and checks they are consistent.
    pub fn parse_and_check<I, T>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        crate::runtime_args::parse_checked(args, Self::check)
    }

    fn check(&self, matches: &ArgMatches) -> anyhow::Result<()> {
        self.storage.check(StorageBackend::Postgres, matches)?;
        self.messaging.check_for_worker()?;
        if self.worker_id.trim().is_empty() {
            bail!("--worker-id must not be empty");
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.lease_duration {
            bail!(
                "--heartbeat-interval ({:?}) must be greater than zero and shorter than --lease-duration ({:?})",
                self.heartbeat_interval,
                self.lease_duration
            );
        }
        if self.reconcile_interval.is_zero() {
            bail!("--reconcile-interval must be greater than zero");
        }
        let from_cli = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        if self.agent_message_consume
            && self.messaging.task_execution_mode
                != crate::runtime_args::ExecutionMode::MessageDriven
            && from_cli("agent_message_consume")
        {
            bail!("--agent-message-consume only applies with --task-execution-mode message-driven");
        }
        Ok(())
    }

    /// The effective log level (`--debug` wins).
    pub fn effective_log_level(&self) -> LogLevel {
        self.log.effective_log_level()
    }

    /// The worker settings these flags describe.
    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            worker_id: self.worker_id.trim().to_string(),
            region: self.region.clone(),
            gpu: self.gpu,
            supported_models: self
                .supported_models
                .iter()
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect(),
            max_concurrent_tasks: self.max_concurrent_tasks as usize,
            lease_duration: self.lease_duration,
            heartbeat_interval: self.heartbeat_interval,
            poll_interval: self.reconcile_interval,
            drain_timeout: self.shutdown_timeout,
            namespace: None,
            execution_mode: self.messaging.worker_mode(),
        }
    }
}

/// Runs the worker until SIGTERM/Ctrl-C.
pub async fn run(args: OrlojworkerArgs) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = args
        .storage
        .open(StorageBackend::Postgres, clock.clone())
        .await?;
    let cancel = CancellationToken::new();
    let health = match args.healthz_addr.0 {
        Some(addr) => {
            let listener = bind(addr).await?;
            let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
            let token = cancel.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { token.cancelled().await })
                    .await
            }))
        }
        None => None,
    };
    let memory = Arc::new(MemoryRegistry::with_store(store.clone()));
    let events = args.messaging.event_bus(CONNECT_GIVE_UP).await?;
    let mut worker = args
        .tools
        .worker(args.worker_config(), store, clock, memory)?
        .with_events(events);
    if let Some(bus) = args.messaging.agent_bus(CONNECT_GIVE_UP).await? {
        let namespace = Some(args.agent_message_consumer_namespace.clone());
        worker = worker.with_message_bus(
            bus,
            args.messaging
                .message_config(args.agent_message_consume, namespace),
        );
    }
    tracing::info!(
        worker = %args.worker_id,
        mode = ?args.messaging.task_execution_mode,
        consume = args.agent_message_consume,
        version = env!("CARGO_PKG_VERSION"),
        "orlojworker started"
    );
    let signal = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
    let result = worker.run(cancel.clone()).await;
    cancel.cancel();
    if let Some(health) = health {
        let _ = health.await;
    }
    tracing::info!("orlojworker stopped");
    result.map_err(|e| anyhow::Error::new(e).context("worker stopped with an error"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<OrlojworkerArgs> {
        OrlojworkerArgs::parse_and_check(std::iter::once("orlojworker").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_need_a_postgres_dsn() {
        let err = parse(&[]).expect_err("postgres is the default backend");
        assert!(err.to_string().contains("--postgres-dsn"), "{err}");
        let a = parse(&["--storage-backend", "memory"]).expect("memory works");
        assert_eq!(a.worker_id, "worker-1");
        assert_eq!(a.reconcile_interval, Duration::from_secs(1));
        assert_eq!(a.healthz_addr, OptionalAddr(None));
    }

    #[test]
    fn placement_and_message_flags() {
        let a = parse(&[
            "--storage-backend=memory",
            "--gpu",
            "--supported-models",
            "gpt-4o, claude",
            "--region=eu",
            "--healthz-addr=:8081",
            "--task-execution-mode=message-driven",
            "--agent-message-bus-backend=nats",
            "--agent-message-consume",
        ])
        .expect("parse");
        let c = a.worker_config();
        assert!(c.gpu);
        assert_eq!(c.supported_models, ["gpt-4o", "claude"]);
        assert_eq!(c.region, "eu");
        assert_eq!(a.healthz_addr.0.map(|a| a.port()), Some(8081));
        assert!(a.agent_message_consume);
    }

    #[test]
    fn contradictions_fail_with_a_reason() {
        let err = parse(&[
            "--storage-backend=memory",
            "--task-execution-mode=message-driven",
        ])
        .expect_err("no bus");
        assert!(
            err.to_string().contains("--agent-message-bus-backend"),
            "{err}"
        );
        let err = parse(&["--storage-backend=memory", "--agent-message-consume"])
            .expect_err("consume in sequential mode");
        assert!(err.to_string().contains("message-driven"), "{err}");
        let err = parse(&[
            "--storage-backend=memory",
            "--lease-duration=5s",
            "--heartbeat-interval=5s",
        ])
        .expect_err("heartbeat as long as the lease");
        assert!(err.to_string().contains("shorter than"), "{err}");
        let err = parse(&[
            "--storage-backend=memory",
            "--agent-message-bus-backend=kafka",
        ])
        .expect_err("unknown bus");
        assert!(err.to_string().contains("kafka"), "{err}");
    }
}
