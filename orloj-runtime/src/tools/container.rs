//! The container backend (spec runtime §9.4): runs the tool request inside a locked-down
//! container through a docker-compatible CLI (`docker`, `podman`).

use super::auth::AuthInjector;
use super::safety::{excerpt, tool_error};
use super::{MAX_RESPONSE_BYTES, tool_name, tool_spec};
use async_trait::async_trait;
use orloj_core::tool::{ToolError, ToolErrorCode, ToolExecutor, ToolInvocation, ToolOutput};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// The request script run inside the container: stdin is POSTed to `$TOOL_ENDPOINT` with the
/// auth header chosen by which `TOOL_AUTH_*` variable is set.
pub const DEFAULT_SCRIPT: &str = r#"set -eu
if [ -n "${TOOL_AUTH_BEARER:-}" ]; then
  exec curl -sS --fail-with-body -X POST -H "Content-Type: application/json" -H "Authorization: Bearer ${TOOL_AUTH_BEARER}" --data-binary @- "$TOOL_ENDPOINT"
elif [ -n "${TOOL_AUTH_BASIC:-}" ]; then
  exec curl -sS --fail-with-body -X POST -H "Content-Type: application/json" -H "Authorization: Basic ${TOOL_AUTH_BASIC}" --data-binary @- "$TOOL_ENDPOINT"
elif [ -n "${TOOL_AUTH_HEADER_NAME:-}" ]; then
  exec curl -sS --fail-with-body -X POST -H "Content-Type: application/json" -H "${TOOL_AUTH_HEADER_NAME}: ${TOOL_AUTH_HEADER_VALUE:-}" --data-binary @- "$TOOL_ENDPOINT"
else
  exec curl -sS --fail-with-body -X POST -H "Content-Type: application/json" --data-binary @- "$TOOL_ENDPOINT"
fi"#;

/// Settings of the container backend; mirrors orlojd's `--tool-container-*` flags.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerConfig {
    /// CLI binary (`--tool-container-runtime`, default `docker`).
    pub runtime: String,
    /// Image (`--tool-container-image`, default `curlimages/curl:8.8.0`).
    pub image: String,
    /// Network (`--tool-container-network`, default `none`).
    pub network: String,
    /// Memory limit (`--tool-container-memory`, default `128m`).
    pub memory: String,
    /// CPU limit (`--tool-container-cpus`, default `0.50`).
    pub cpus: String,
    /// Process limit (`--tool-container-pids-limit`, default 64).
    pub pids_limit: u32,
    /// `uid:gid` (`--tool-container-user`, default `65532:65532`).
    pub user: String,
    /// Entrypoint shell (default `/bin/sh`).
    pub shell: String,
    /// Script the shell runs with `-lc` (default [`DEFAULT_SCRIPT`]).
    pub script: String,
    /// Extra environment of the CLI process itself (e.g. `DOCKER_HOST`, `CONTAINERS_CONF`).
    pub cli_env: Vec<(String, String)>,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            runtime: "docker".into(),
            image: "curlimages/curl:8.8.0".into(),
            network: "none".into(),
            memory: "128m".into(),
            cpus: "0.50".into(),
            pids_limit: 64,
            user: "65532:65532".into(),
            shell: "/bin/sh".into(),
            script: DEFAULT_SCRIPT.into(),
            cli_env: Vec::new(),
        }
    }
}

impl ContainerConfig {
    /// The `run` arguments for one call (auth values are never in argv: only `--env NAME`).
    pub fn run_args(&self, container_name: &str, endpoint: &str, auth_env: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "--rm",
            "-i",
            "--name",
            container_name,
            "--network",
            &self.network,
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt",
            "no-new-privileges",
            "--user",
            &self.user,
            "--memory",
            &self.memory,
            "--cpus",
            &self.cpus,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("--pids-limit".into());
        args.push(self.pids_limit.to_string());
        for name in auth_env {
            args.push("--env".into());
            args.push((*name).to_string());
        }
        args.extend([
            "-e".to_string(),
            format!("TOOL_ENDPOINT={endpoint}"),
            "--entrypoint".into(),
            self.shell.clone(),
            self.image.clone(),
            "-lc".into(),
            self.script.clone(),
        ]);
        args
    }
}

/// Runs `type: http` tools inside a container: stdin = input, result = trimmed stdout (not
/// contract-unwrapped), non-zero exit → retryable `execution_failed` with redacted stderr.
/// The CLI process is killed (and the container removed) when the call is dropped or times
/// out.
pub struct ContainerToolExecutor {
    config: ContainerConfig,
    auth: Arc<AuthInjector>,
}

impl ContainerToolExecutor {
    /// An executor with `config`, resolving credentials with `auth`.
    pub fn new(config: ContainerConfig, auth: Arc<AuthInjector>) -> Self {
        Self { config, auth }
    }

    /// The configuration.
    pub fn config(&self) -> &ContainerConfig {
        &self.config
    }
}

/// Force-removes the container if the call did not finish (timeout, cancellation).
struct ContainerCleanup {
    runtime: String,
    cli_env: Vec<(String, String)>,
    name: String,
    armed: bool,
}

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut cmd = Command::new(&self.runtime);
        cmd.args(["rm", "-f", &self.name])
            .envs(self.cli_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let (Ok(mut child), Ok(handle)) = (cmd.spawn(), tokio::runtime::Handle::try_current()) {
            handle.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
            });
        }
    }
}

#[async_trait]
impl ToolExecutor for ContainerToolExecutor {
    async fn execute(&self, invocation: ToolInvocation) -> Result<ToolOutput, ToolError> {
        let started = Instant::now();
        let name = tool_name(&invocation).to_string();
        let spec = tool_spec(&invocation)?;
        if !matches!(spec.tool_type.as_str(), "" | "http") {
            return Err(tool_error(
                ToolErrorCode::UnsupportedTool,
                format!(
                    "unsupported tool type {:?} for the container backend (tool {name:?})",
                    spec.tool_type
                ),
            ));
        }
        let endpoint = spec.endpoint.trim();
        if endpoint.is_empty() {
            return Err(tool_error(
                ToolErrorCode::RuntimePolicyInvalid,
                format!("tool {name:?} has no endpoint"),
            ));
        }
        let auth = self
            .auth
            .resolve(&invocation.namespace, spec.auth.as_ref())
            .await?;
        let env = auth.as_ref().map(|a| a.env()).unwrap_or_default();
        let env_names: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
        let container_name = format!("orloj-tool-{}", uuid::Uuid::new_v4().simple());
        let args = self.config.run_args(&container_name, endpoint, &env_names);

        let mut cmd = Command::new(&self.config.runtime);
        cmd.args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &self.config.cli_env {
            cmd.env(k, v);
        }
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                ToolErrorCode::IsolationUnavailable
            } else {
                ToolErrorCode::ExecutionFailed
            };
            tool_error(
                code,
                format!(
                    "starting container runtime {:?} for tool {name:?}: {e}",
                    self.config.runtime
                ),
            )
        })?;
        let mut cleanup = ContainerCleanup {
            runtime: self.config.runtime.clone(),
            cli_env: self.config.cli_env.clone(),
            name: container_name,
            armed: true,
        };
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(tool_error(
                ToolErrorCode::ExecutionFailed,
                "container runtime pipes are unavailable",
            ));
        };
        let input = invocation.input.clone().into_bytes();
        let write = async move {
            // A container that exits without reading stdin closes the pipe; that is its
            // business, so the write error is ignored.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let limit = u64::try_from(MAX_RESPONSE_BYTES).unwrap_or(u64::MAX);
        let read_out = async move {
            let mut buf = Vec::new();
            let _ = stdout.take(limit).read_to_end(&mut buf).await;
            buf
        };
        let read_err = async move {
            let mut buf = Vec::new();
            let _ = stderr.take(64 * 1024).read_to_end(&mut buf).await;
            buf
        };
        let run = async {
            let ((), out, err, status) = tokio::join!(write, read_out, read_err, child.wait());
            (out, err, status)
        };
        let (out, err, status) = if invocation.timeout.is_zero() {
            run.await
        } else {
            tokio::time::timeout(invocation.timeout, run)
                .await
                .map_err(|_| {
                    tool_error(
                        ToolErrorCode::Timeout,
                        format!(
                            "tool {name:?} container timed out after {:?}",
                            invocation.timeout
                        ),
                    )
                })?
        };
        cleanup.armed = false;
        let status = status.map_err(|e| {
            tool_error(
                ToolErrorCode::ExecutionFailed,
                format!("waiting for the container of tool {name:?}: {e}"),
            )
        })?;
        if !status.success() {
            let stderr = String::from_utf8_lossy(&err);
            let mut e = tool_error(
                ToolErrorCode::ExecutionFailed,
                format!(
                    "tool {name:?} container failed ({status}): {}",
                    excerpt(&stderr)
                ),
            );
            if let Some(code) = status.code() {
                e.details.insert("exit_code".into(), code.to_string());
            }
            return Err(e);
        }
        Ok(ToolOutput {
            result: String::from_utf8_lossy(&out).trim().to_string(),
            duration: started.elapsed(),
        })
    }
}
