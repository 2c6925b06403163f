//! Test harness: real `orlojd` processes and `orlojctl` invocations.
#![allow(dead_code)]

pub mod chart;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The reference's data files, when the shared folder is beside the checkout.
pub fn upstream_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/upstream");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: {} is absent", dir.display());
        None
    }
}

/// A Postgres DSN for a fresh database, or None (skip) when TEST_DATABASE_URL is unset.
/// Under CI the variable must be set.
pub fn fresh_database() -> Option<String> {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but TEST_DATABASE_URL is not: Postgres tests must not be skipped in CI"
        );
        eprintln!("skipping: TEST_DATABASE_URL is unset (source .ci/services.sh to run this)");
        return None;
    };
    let name = format!(
        "orloj_e2e_{}_{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_suffix()
    );
    let status = Command::new("psql")
        .args([url.as_str(), "-q", "-c", &format!("CREATE DATABASE {name}")])
        .status()
        .expect("psql runs");
    assert!(status.success(), "CREATE DATABASE {name} failed");
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&url);
    Some(format!("{base}/{name}"))
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `orlojd`, killed on drop; its stderr goes to a log file.
pub struct Orlojd {
    child: Child,
    /// Base URL, e.g. http://127.0.0.1:PORT.
    pub url: String,
    /// Where its log lines go.
    pub log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Orlojd {
    /// Starts orlojd with extra args and waits for /healthz.
    pub fn start(extra: &[&str]) -> Orlojd {
        Self::start_with_env(extra, &[])
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("orlojd exited early ({status}):\n{}", self.log());
            }
            if http_get(&self.url, "/healthz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("orlojd did not become healthy:\n{}", self.log());
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "orlojd ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs orlojctl against this server.
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.url, args)
    }
}

impl Drop for Orlojd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs orlojctl against `server` with a private config path.
pub fn ctl(server: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orlojctl"))
        .args(["--server", server])
        .args(args)
        .env("ORLOJCTL_CONFIG", "/nonexistent/orlojctl-test-config.json")
        .env_remove("ORLOJ_API_TOKEN")
        .env_remove("ORLOJCTL_API_TOKEN")
        .output()
        .expect("orlojctl runs")
}

/// stdout of a successful orlojctl run; panics with both streams otherwise.
pub fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// A minimal blocking HTTP/1.1 GET; returns (status, body).
pub fn http_get(base: &str, path: &str) -> Option<(u16, String)> {
    http(base, "GET", path, &[], None)
}

/// A minimal blocking HTTP/1.1 request; returns (status, body).
pub fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Option<(u16, String)> {
    use std::io::Write;
    let host = base.strip_prefix("http://")?;
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

impl Orlojd {
    /// Starts orlojd with extra args and environment variables, and waits for /healthz.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Orlojd {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let (child, log_path, dir) = spawn_logged(
            env!("CARGO_BIN_EXE_orlojd"),
            &["--addr", &addr, "--log-format", "text"],
            extra,
            env,
        );
        let mut d = Orlojd {
            child,
            url: format!("http://{addr}"),
            log_path,
            _dir: dir,
        };
        d.wait_healthy();
        d
    }
}

/// Starts `bin` with `args` then `extra` and `env`, stderr to a log file in a temp dir.
fn spawn_logged(
    bin: &str,
    args: &[&str],
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Child, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = Path::new(bin)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let log_path = dir.path().join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).expect("log file");
    let child = Command::new(bin)
        .args(args)
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    (child, log_path, dir)
}

/// Runs orlojctl against `server` with the given environment (e.g. `ORLOJCTL_CONFIG` pointing
/// at a test's own config file); token variables are cleared unless given.
pub fn ctl_env(server: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orlojctl"))
        .args(["--server", server])
        .args(args)
        .env("ORLOJCTL_CONFIG", "/nonexistent/orlojctl-test-config.json")
        .env_remove("ORLOJ_API_TOKEN")
        .env_remove("ORLOJCTL_API_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("orlojctl runs")
}

/// The NATS URL of the test nats-server, or None (skip) when TEST_NATS_URL is unset. Under CI
/// the variable must be set.
pub fn nats_url() -> Option<String> {
    match std::env::var("TEST_NATS_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but TEST_NATS_URL is not: NATS tests must not be skipped in CI"
            );
            eprintln!("skipping: TEST_NATS_URL is unset (source .ci/services.sh to run this)");
            None
        }
    }
}

/// A running `orlojworker`, killed on drop; its stderr goes to a log file.
pub struct Orlojworker {
    child: Child,
    /// Its worker id.
    pub id: String,
    /// Base URL of its /healthz listener.
    pub healthz: String,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Orlojworker {
    /// Starts orlojworker `id` with extra args and waits for its /healthz.
    pub fn start(id: &str, extra: &[&str]) -> Orlojworker {
        let addr = format!("127.0.0.1:{}", free_port());
        let (child, log_path, dir) = spawn_logged(
            env!("CARGO_BIN_EXE_orlojworker"),
            &[
                "--worker-id",
                id,
                "--healthz-addr",
                &addr,
                "--log-format",
                "text",
            ],
            extra,
            &[],
        );
        let mut w = Orlojworker {
            child,
            id: id.to_string(),
            healthz: format!("http://{addr}"),
            log_path,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = w.child.try_wait() {
                panic!("orlojworker {id} exited early ({status}):\n{}", w.log());
            }
            if http_get(&w.healthz, "/healthz")
                .is_some_and(|(code, body)| code == 200 && body == "ok")
            {
                return w;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("orlojworker {id} did not become healthy:\n{}", w.log());
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL: no drain, no release, its leases stay until they expire.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "orlojworker ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Orlojworker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A nats-server of a test's own (JetStream storage in a temp dir) that can be stopped and
/// started again on the same port and storage: `NATS_SERVER_BIN`, else the one
/// `.ci/services.sh` installs. None (skip) when neither exists; under CI it must.
pub struct OwnNats {
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnNats {
    /// Starts one, or None when no nats-server binary is available.
    pub fn start() -> Option<OwnNats> {
        let bin = std::env::var_os("NATS_SERVER_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/venv/bin/nats-server"))
            })
            .filter(|p| p.is_file());
        let Some(bin) = bin else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but no nats-server binary was found (.ci/venv/bin/nats-server)"
            );
            eprintln!("skipping: no nats-server binary (source .ci/services.sh to install one)");
            return None;
        };
        let mut nats = OwnNats {
            bin,
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        nats.restart();
        Some(nats)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and storage.
    pub fn restart(&mut self) {
        let child = Command::new(&self.bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not listen on port {}", self.port);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Applies `yaml` (one or more documents) with orlojctl.
pub fn apply_yaml(server: &Orlojd, yaml: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("manifests.yaml");
    std::fs::write(&file, yaml).expect("write manifests");
    ok(
        server.ctl(&["apply", "-f", &file.display().to_string()]),
        "apply",
    );
}

/// `orlojctl get task NAME -n NS -o json`, parsed.
pub fn get_task(server: &Orlojd, namespace: &str, name: &str) -> serde_json::Value {
    let out = ok(
        server.ctl(&["get", "task", name, "-n", namespace, "-o", "json"]),
        "get task",
    );
    serde_json::from_str(&out).expect("task JSON")
}

/// A `provider: mock` ModelEndpoint `openai-default` in `namespace` (what the reference's
/// manifests refer to).
pub fn mock_endpoint_yaml(namespace: &str) -> String {
    format!(
        "---\napiVersion: orloj.dev/v1\nkind: ModelEndpoint\nmetadata:\n  name: openai-default\n  namespace: {namespace}\nspec:\n  provider: mock\n  default_model: gpt-4o\n"
    )
}

/// A TCP proxy in front of the test Postgres that can take it away and bring it back, for
/// outage tests that must not stop the server other tests share. [`PgProxy::cut`] closes every
/// open connection (the server rolls their transactions back, as when it goes down) and closes
/// new ones at once until [`PgProxy::restore`].
pub struct PgProxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    shared: std::sync::Arc<ProxyShared>,
}

#[derive(Default)]
struct ProxyShared {
    stop: std::sync::atomic::AtomicBool,
    state: std::sync::Mutex<ProxyState>,
}

/// Whether connections go through, and the open ones (both ends), under one lock: a
/// connection is either registered before a cut, which closes it, or refused after it.
#[derive(Default)]
struct ProxyState {
    up: bool,
    open: Vec<std::net::TcpStream>,
}

impl ProxyShared {
    fn state(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, up: bool) {
        let mut state = self.state();
        state.up = up;
        for stream in state.open.drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl PgProxy {
    /// Starts a proxy to the server of `dsn` (`postgres://user@host:port/db`) and returns it
    /// with `dsn` rewritten to go through it.
    pub fn start(dsn: &str) -> (PgProxy, String) {
        let (scheme_user, rest) = dsn.split_once('@').expect("DSN has user@host");
        let (upstream, database) = rest.split_once('/').expect("DSN has a database");
        assert!(upstream.contains(':'), "DSN names the port: {dsn}");
        let upstream = upstream.to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = std::sync::Arc::new(ProxyShared::default());
        shared.set(true);
        let accepting = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let mut state = accepting.state();
                if !state.up {
                    continue; // dropped: closed at once
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let ends = (
                    client.try_clone(),
                    server.try_clone(),
                    client.try_clone(),
                    server.try_clone(),
                );
                let (Ok(from_client), Ok(to_server), Ok(client_end), Ok(server_end)) = ends else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                state.open.push(client_end);
                state.open.push(server_end);
                drop(state);
                std::thread::spawn(move || pipe(from_client, to_server));
                std::thread::spawn(move || pipe(server, client));
            }
        });
        (
            PgProxy { port, shared },
            format!("{scheme_user}@127.0.0.1:{port}/{database}"),
        )
    }

    /// Takes Postgres away: open connections are closed, new ones closed at once.
    pub fn cut(&self) {
        self.shared.set(false);
    }

    /// Brings Postgres back.
    pub fn restore(&self) {
        self.shared.set(true);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.set(false);
        // Wakes the accept loop so it sees `stop`.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies one direction of a proxied connection until either side closes.
fn pipe(mut from: std::net::TcpStream, mut to: std::net::TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}
