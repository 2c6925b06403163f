//! The implementation of every orlojctl command.

use super::UsageError;
use super::cli::{
    ApplyArgs, Cli, Command, ConfigCommand, CreateCommand, DescribeArgs, DiffArgs, EventsArgs,
    FileArgs, GetArgs, LogsArgs, RefArgs, WaitArgs,
};
use super::client::{ApiClient, ApiError};
use super::config::{self, Connection, CtlConfig};
use super::manifests::{self, Change, display_ref};
use super::output::{self, OutputFormat};
use super::tasks;
use anyhow::{Context, Result, anyhow, bail};
use orloj_core::{DEFAULT_NAMESPACE, Kind};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;

/// Everything a command needs besides its own flags.
pub(super) struct Ctx {
    pub(super) conn: Connection,
    pub(super) namespace: Option<String>,
    pub(super) config: CtlConfig,
    pub(super) config_path: Option<PathBuf>,
}

impl Ctx {
    pub(super) fn client(&self) -> Result<ApiClient> {
        Ok(ApiClient::new(&self.conn.server, self.conn.token.clone())?)
    }

    /// The namespace for item commands: `-n`, or `default`.
    fn item_namespace(&self) -> &str {
        self.namespace
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE)
    }

    /// Splits `ns/name` (an explicit namespace wins over `-n`).
    pub(super) fn scoped<'a>(&'a self, name: &'a str) -> (&'a str, &'a str) {
        orloj_core::split_ref(name, self.item_namespace())
    }

    pub(super) fn config_path(&self) -> Result<&PathBuf> {
        self.config_path.as_ref().ok_or_else(|| {
            anyhow!("cannot find a user config directory (set HOME or ORLOJCTL_CONFIG)")
        })
    }
}

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

pub(super) async fn run(cli: Cli) -> Result<u8> {
    // validate is offline: it needs neither the config file nor the server.
    if let Command::Validate(args) = &cli.command {
        return validate(args, cli.namespace.as_deref());
    }
    if let Command::Init(args) = &cli.command {
        return super::init::init(args);
    }
    let config_path = config::config_path(&env_var).ok();
    let config = match &config_path {
        Some(p) => CtlConfig::load(p)?,
        None => CtlConfig::default(),
    };
    let conn = config::resolve(
        cli.server.as_deref(),
        cli.api_token.as_deref(),
        &env_var,
        &config,
    );
    let ctx = Ctx {
        conn,
        namespace: cli.namespace.clone(),
        config,
        config_path,
    };
    match cli.command {
        Command::Apply(a) => apply(&ctx, &a).await,
        Command::Validate(_) => Ok(0),
        Command::Get(a) => get(&ctx, &a).await,
        Command::Describe(a) => describe(&ctx, &a).await,
        Command::Delete(a) => delete(&ctx, &a).await,
        Command::Diff(a) => Ok(match diff(&ctx, &a).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                2
            }
        }),
        Command::Edit(a) => edit(&ctx, &a).await,
        Command::Create(CreateCommand::Secret { name, from_literal }) => {
            create_secret(&ctx, &name, &from_literal).await
        }
        Command::Create(CreateCommand::Token { name, role }) => {
            super::auth::create_token(&ctx, &name, &role).await
        }
        Command::Auth(c) => super::auth::auth(&ctx, c).await,
        Command::Admin(c) => super::auth::admin(&ctx, c).await,
        Command::Wait(a) => wait(&ctx, &a).await,
        Command::Events(a) => events(&ctx, &a).await,
        Command::Logs(a) => logs(&ctx, &a).await,
        Command::Health => health(&ctx).await,
        Command::Status => status(&ctx).await,
        Command::Completion(a) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(a.shell, &mut cmd, "orlojctl", &mut script);
            out!("{}", String::from_utf8_lossy(&script));
            Ok(0)
        }
        Command::Config(c) => config_cmd(&ctx, c, cli.server.as_deref()),
        Command::Version => {
            outln!("orlojctl {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Command::Run(a) => tasks::run(&ctx, &a).await,
        Command::Trace(a) => tasks::trace(&ctx, &a).await,
        Command::Messages(a) => tasks::messages(&ctx, &a).await,
        Command::Metrics(a) => tasks::metrics(&ctx, &a).await,
        Command::Approve(a) => tasks::decide(&ctx, &a, true).await,
        Command::Deny(a) => tasks::decide(&ctx, &a, false).await,
        Command::Cancel(a) => tasks::cancel(&ctx, &a).await,
        Command::Retry(a) => tasks::retry(&ctx, &a).await,
        Command::Init(_) => Ok(0),
        Command::Top(a) => tasks::top(&ctx, &a).await,
        Command::Graph(a) => tasks::graph(&ctx, &a).await,
    }
}

pub(super) fn parse_kind(resource: &str) -> Result<Kind> {
    Kind::from_cli_name(resource).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
        UsageError(format!(
            "unknown resource type {resource:?} (known: {})",
            known.join(", ")
        ))
        .into()
    })
}

/// Parses `<resource>/<name>` (`task/report`, `tasks/ns/report`).
fn parse_target(target: &str) -> Result<(Kind, &str)> {
    match target.split_once('/') {
        Some((res, name)) if !name.trim().is_empty() => Ok((parse_kind(res)?, name)),
        _ => Err(UsageError(format!(
            "expected <resource>/<name> (e.g. task/report), got {target:?}"
        ))
        .into()),
    }
}

// ---------------------------------------------------------------------------------------
// apply / validate / diff

async fn apply(ctx: &Ctx, args: &ApplyArgs) -> Result<u8> {
    let plan = manifests::plan(&args.filename, ctx.namespace.as_deref(), args.run)?;
    for s in &plan.skipped {
        outln!(
            "skipped {} (mode: run) from {}; use --run to include",
            display_ref(s.object.kind, s.object.name()),
            s.file.display()
        );
    }
    let client = ctx.client()?;
    let mut failures = plan.errors.clone();
    let (mut created, mut configured, mut unchanged) = (0usize, 0usize, 0usize);
    let mut follow: Vec<(String, String)> = Vec::new();
    for p in &plan.objects {
        let obj = &p.object;
        let r = display_ref(obj.kind, obj.name());
        let plural = obj.kind.plural();
        let live = match client.get_object(plural, obj.namespace(), obj.name()).await {
            Ok(l) => Ok(l),
            Err(e @ ApiError::Unreachable { .. }) => return Err(e.into()),
            Err(e) => Err(e),
        };
        let runnable = args.run && manifests::is_runnable_task(obj);
        if runnable
            && let Ok(Some(l)) = &live
            && let Some(phase) = l
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .filter(|p| tasks::is_terminal(p))
        {
            // A task that already ended is not touched; it runs again under a new name
            // (reference 0.9 behaviour).
            let mut rerun = obj.clone();
            rerun.metadata.name = format!("{}-run-{}", obj.name(), tasks::unix_ms());
            rerun.metadata.resource_version = String::new();
            let new_ref = display_ref(obj.kind, rerun.name());
            if args.dry_run {
                created += 1;
                outln!("{r} ended ({phase}); would rerun as {new_ref} (dry run)");
                continue;
            }
            match client
                .call(
                    Method::POST,
                    &["v1", plural],
                    &[("namespace", obj.namespace())],
                    Some(&rerun.to_value()),
                    None,
                )
                .await
            {
                Ok(_) => {
                    created += 1;
                    outln!("{r} ended ({phase}); rerun as {new_ref} created");
                    follow.push((rerun.namespace().to_string(), rerun.name().to_string()));
                }
                Err(e @ ApiError::Unreachable { .. }) => return Err(e.into()),
                Err(e) => failures.push(format!("{}: {new_ref}: {e}", p.file.display())),
            }
            continue;
        }
        let change = live
            .as_ref()
            .ok()
            .map(|l| manifests::classify(obj, l.as_ref()));
        if args.dry_run {
            match change {
                Some(c) => {
                    match c {
                        Change::Create => created += 1,
                        Change::Configure => configured += 1,
                        Change::Unchanged => unchanged += 1,
                    }
                    outln!("{r} {} (dry run)", c.verb());
                }
                None => {
                    let e = live.err().map(|e| e.to_string()).unwrap_or_default();
                    failures.push(format!("{}: {r}: {e}", p.file.display()));
                }
            }
            continue;
        }
        let body = obj.to_value();
        match client
            .call(
                Method::POST,
                &["v1", plural],
                &[("namespace", obj.namespace())],
                Some(&body),
                None,
            )
            .await
        {
            Ok(_) => {
                match change {
                    Some(Change::Create) => created += 1,
                    Some(Change::Configure) | None => configured += 1,
                    Some(Change::Unchanged) => unchanged += 1,
                }
                outln!("{r} {}", change.map_or("applied", Change::verb));
                if runnable {
                    follow.push((obj.namespace().to_string(), obj.name().to_string()));
                }
            }
            Err(e @ ApiError::Unreachable { .. }) => return Err(e.into()),
            Err(e) => failures.push(format!("{}: {r}: {e}", p.file.display())),
        }
    }
    let total = created + configured + unchanged;
    let is_dir = args.filename.is_dir();
    if args.dry_run || is_dir || total > 1 || !plan.skipped.is_empty() || !failures.is_empty() {
        let mut summary = format!(
            "{total} object(s) {}: {created} created, {configured} configured, {unchanged} unchanged",
            if args.dry_run {
                "checked (dry run)"
            } else {
                "applied"
            }
        );
        if !plan.skipped.is_empty() {
            summary.push_str(&format!(
                ", {} runnable task(s) skipped",
                plan.skipped.len()
            ));
        }
        if !failures.is_empty() {
            summary.push_str(&format!(", {} failed", failures.len()));
        }
        outln!("\n{summary}");
    }
    for f in &failures {
        eprintln!("error: {f}");
    }
    let mut code = if failures.is_empty() { 0 } else { 1 };
    if args.run && !args.no_wait && !args.dry_run && !follow.is_empty() {
        eprintln!(
            "waiting up to {} for {} task(s) to finish (--no-wait to skip)",
            humantime::format_duration(args.timeout),
            follow.len()
        );
        let outcomes = tasks::follow(&client, &follow, args.poll, args.timeout).await?;
        code = code.max(tasks::report(&follow, &outcomes, args.timeout));
    }
    Ok(code)
}

fn validate(args: &FileArgs, namespace: Option<&str>) -> Result<u8> {
    let mut failed = 0usize;
    let mut valid = 0usize;
    for file in manifests::collect_files(&args.filename)? {
        match manifests::load_file(&file, namespace) {
            Ok(objects) => {
                for o in objects {
                    valid += 1;
                    outln!("valid {}/{} ({})", o.kind, o.name(), file.display());
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("invalid {e}");
            }
        }
    }
    if failed > 0 {
        eprintln!("error: {failed} file(s) invalid, {valid} object(s) valid");
        return Ok(1);
    }
    Ok(0)
}

async fn diff(ctx: &Ctx, args: &DiffArgs) -> Result<u8> {
    let plan = manifests::plan(&args.filename, ctx.namespace.as_deref(), args.run)?;
    for s in &plan.skipped {
        eprintln!(
            "skipped {} (mode: run) from {}; use --run to include",
            display_ref(s.object.kind, s.object.name()),
            s.file.display()
        );
    }
    let client = ctx.client()?;
    let mut errors = plan.errors.clone();
    let mut differs = false;
    for p in &plan.objects {
        let obj = &p.object;
        match client
            .get_object(obj.kind.plural(), obj.namespace(), obj.name())
            .await
        {
            Ok(live) => {
                if let Some(d) =
                    manifests::render_diff(live.as_ref(), obj, &p.file.display().to_string())
                {
                    differs = true;
                    out!("{d}");
                }
            }
            Err(e @ ApiError::Unreachable { .. }) => return Err(e.into()),
            Err(e) => errors.push(format!(
                "{}: {}: {e}",
                p.file.display(),
                display_ref(obj.kind, obj.name())
            )),
        }
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    Ok(if !errors.is_empty() {
        2
    } else if differs {
        1
    } else {
        0
    })
}

// ---------------------------------------------------------------------------------------
// get / describe / delete / edit / create

async fn get(ctx: &Ctx, args: &GetArgs) -> Result<u8> {
    if matches!(args.resource.as_str(), "tokens" | "token") {
        return super::auth::get_tokens(ctx, args.output).await;
    }
    let kind = parse_kind(&args.resource)?;
    if args.watch {
        return watch(ctx, kind, args).await;
    }
    let client = ctx.client()?;
    let now = chrono::Utc::now();
    if let Some(name) = &args.name {
        let (ns, name) = ctx.scoped(name);
        let obj = client
            .get(&["v1", kind.plural(), name], &[("namespace", ns)])
            .await
            .with_context(|| format!("get {}", display_ref(kind, name)))?;
        match args.output {
            OutputFormat::Table => out!("{}", output::table(kind, &[obj], now)),
            f => out!("{}", output::render_value(&obj, f)),
        }
        return Ok(0);
    }
    let namespace = if args.all_namespaces {
        ""
    } else {
        ctx.namespace.as_deref().unwrap_or("")
    };
    let items = tasks::list_all(&client, kind, namespace).await?;
    match args.output {
        OutputFormat::Table if items.is_empty() => {
            if namespace.is_empty() {
                eprintln!("No {} found.", kind.plural());
            } else {
                eprintln!("No {} found in namespace {namespace}.", kind.plural());
            }
        }
        OutputFormat::Table => out!("{}", output::table(kind, &items, now)),
        f => out!("{}", output::render_value(&json!({ "items": items }), f)),
    }
    Ok(0)
}

/// One line for a resource watch event.
fn watch_line(kind: Kind, data: &Value) -> String {
    let ty = data.get("type").and_then(Value::as_str).unwrap_or("?");
    let res = data.get("resource").unwrap_or(&Value::Null);
    let s = |p: &str| res.pointer(p).and_then(Value::as_str).unwrap_or("");
    let ns = match s("/metadata/namespace") {
        "" => DEFAULT_NAMESPACE,
        n => n,
    };
    let mut line = format!(
        "{:<8} {}/{}/{}",
        ty.to_uppercase(),
        kind.as_str().to_lowercase(),
        ns,
        s("/metadata/name")
    );
    for (label, p) in [
        ("phase", "/status/phase"),
        ("rv", "/metadata/resourceVersion"),
    ] {
        if !s(p).is_empty() {
            line.push_str(&format!(" {label}={}", s(p)));
        }
    }
    line
}

async fn watch(ctx: &Ctx, kind: Kind, args: &GetArgs) -> Result<u8> {
    if !kind.has_watch() {
        let watchable: Vec<&str> = Kind::ALL
            .iter()
            .filter(|k| k.has_watch())
            .map(|k| k.plural())
            .collect();
        return Err(UsageError(format!(
            "{} cannot be watched (watchable: {})",
            kind.plural(),
            watchable.join(", ")
        ))
        .into());
    }
    let client = ctx.client()?;
    let (ns, name) = match &args.name {
        Some(n) => {
            let (ns, name) = ctx.scoped(n);
            (ns.to_string(), name.to_string())
        }
        None => (ctx.namespace.clone().unwrap_or_default(), String::new()),
    };
    let raw = args.output != OutputFormat::Table;
    client
        .stream_sse(
            &["v1", kind.plural(), "watch"],
            &[("namespace", &ns), ("name", &name)],
            |ev| {
                match ev.event.as_str() {
                    "close" => return false,
                    "resource" | "message" => {}
                    _ => return true,
                }
                if raw {
                    outln!("{}", ev.data);
                } else {
                    match serde_json::from_str::<Value>(&ev.data) {
                        Ok(d) => outln!("{}", watch_line(kind, &d)),
                        Err(_) => eprintln!("warning: unreadable watch event: {}", ev.data),
                    }
                }
                true
            },
        )
        .await
        .with_context(|| format!("watch {}", kind.plural()))?;
    Ok(0)
}

async fn describe(ctx: &Ctx, args: &DescribeArgs) -> Result<u8> {
    let kind = parse_kind(&args.resource)?;
    let (ns, name) = ctx.scoped(&args.name);
    let obj = ctx
        .client()?
        .get(&["v1", kind.plural(), name], &[("namespace", ns)])
        .await
        .with_context(|| format!("describe {}", display_ref(kind, name)))?;
    if let Some(f) = args.output {
        out!("{}", output::render_value(&obj, f));
        return Ok(0);
    }
    out!("{}", describe_text(kind, &obj));
    Ok(0)
}

fn describe_text(kind: Kind, obj: &Value) -> String {
    let s = |p: &str| match obj.pointer(p) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    let pairs = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let mut rows = vec![
        ("Name", s("/metadata/name")),
        ("Namespace", {
            let ns = s("/metadata/namespace");
            if ns.is_empty() {
                DEFAULT_NAMESPACE.into()
            } else {
                ns
            }
        }),
        ("Kind", kind.as_str().to_string()),
        ("Resource Version", s("/metadata/resourceVersion")),
        ("Generation", s("/metadata/generation")),
        ("Created", s("/metadata/createdAt")),
        ("Phase", s("/status/phase")),
        ("Last Error", s("/status/lastError")),
        ("Labels", pairs("/metadata/labels")),
        ("Annotations", pairs("/metadata/annotations")),
    ];
    rows.retain(|(k, v)| !v.is_empty() || matches!(*k, "Name" | "Namespace" | "Kind"));
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{:<18}{v}\n", format!("{k}:")));
    }
    out.push_str("---\n");
    out.push_str(&manifests::to_yaml(obj));
    out
}

async fn delete(ctx: &Ctx, args: &RefArgs) -> Result<u8> {
    if matches!(args.resource.as_str(), "tokens" | "token") {
        return super::auth::delete_token(ctx, &args.name).await;
    }
    let kind = parse_kind(&args.resource)?;
    let (ns, name) = ctx.scoped(&args.name);
    ctx.client()?
        .call(
            Method::DELETE,
            &["v1", kind.plural(), name],
            &[("namespace", ns)],
            None,
            None,
        )
        .await
        .with_context(|| format!("delete {}", display_ref(kind, name)))?;
    outln!("{} deleted", display_ref(kind, name));
    Ok(0)
}

const EDIT_HEADER: &str = "# Edit the object below, then save and exit to apply it.\n\
# Leaving it unchanged cancels the edit; status is ignored by the server.\n";

async fn edit(ctx: &Ctx, args: &RefArgs) -> Result<u8> {
    let kind = parse_kind(&args.resource)?;
    let (ns, name) = ctx.scoped(&args.name);
    let r = display_ref(kind, name);
    let client = ctx.client()?;
    let original = client
        .get(&["v1", kind.plural(), name], &[("namespace", ns)])
        .await
        .with_context(|| format!("edit {r}"))?;
    let rv = original
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let text = format!("{EDIT_HEADER}{}", manifests::to_yaml(&original));
    let file = tempfile::Builder::new()
        .prefix("orlojctl-edit-")
        .suffix(".yaml")
        .tempfile()
        .context("cannot create a temporary file to edit")?;
    std::fs::write(file.path(), &text).context("cannot write the temporary file")?;

    run_editor(file.path()).await?;

    let edited = std::fs::read_to_string(file.path()).context("cannot read the edited file")?;
    if edited == text {
        eprintln!("edit cancelled, no changes made");
        return Ok(0);
    }
    let mut value: Value = serde_saphyr::from_str(&edited)
        .map_err(|e| anyhow!("edited {r} is not valid YAML: {e}"))?;
    if !value.is_object() {
        bail!("edited {r} is not an object");
    }
    if manifests::comparable(&value) == manifests::comparable(&original) {
        eprintln!("edit cancelled, no changes made");
        return Ok(0);
    }
    if value.pointer("/metadata/resourceVersion").is_none()
        && let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.insert("resourceVersion".into(), Value::String(rv.clone()));
    }
    let if_match = (!rv.is_empty()).then_some(rv.as_str());
    match client
        .call(
            Method::PUT,
            &["v1", kind.plural(), name],
            &[("namespace", ns)],
            Some(&value),
            if_match,
        )
        .await
    {
        Ok(_) => {
            outln!("{r} edited");
            Ok(0)
        }
        Err(e) if e.status() == Some(reqwest::StatusCode::CONFLICT) => bail!(
            "edit {r}: {e} (the object changed on the server while you edited it; run edit again)"
        ),
        Err(e) => Err(anyhow::Error::new(e).context(format!("edit {r}"))),
    }
}

async fn run_editor(path: &std::path::Path) -> Result<()> {
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|k| env_var(k))
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string());
    // $EDITOR may carry arguments ("code -w").
    let mut parts = editor.split_whitespace();
    let program = parts.next().unwrap_or("vi");
    let status = tokio::process::Command::new(program)
        .args(parts)
        .arg(path)
        .status()
        .await
        .with_context(|| format!("cannot start editor {editor:?}"))?;
    if !status.success() {
        bail!("editor {editor:?} exited with {status}; nothing was changed");
    }
    Ok(())
}

/// Parses `--from-literal key=value` pairs.
fn parse_literals(literals: &[String]) -> Result<serde_json::Map<String, Value>> {
    let mut data = serde_json::Map::new();
    for l in literals {
        match l.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                data.insert(k.trim().to_string(), Value::String(v.to_string()));
            }
            _ => {
                return Err(
                    UsageError(format!("--from-literal expects key=value, got {l:?}")).into(),
                );
            }
        }
    }
    Ok(data)
}

async fn create_secret(ctx: &Ctx, name: &str, literals: &[String]) -> Result<u8> {
    let data = parse_literals(literals)?;
    let (ns, name) = ctx.scoped(name);
    let body = json!({
        "apiVersion": orloj_core::API_VERSION,
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"stringData": data},
    });
    ctx.client()?
        .call(
            Method::POST,
            &["v1", Kind::Secret.plural()],
            &[("namespace", ns)],
            Some(&body),
            None,
        )
        .await
        .with_context(|| format!("create secret/{name}"))?;
    outln!("secret/{name} created");
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// wait / events / logs

/// The phases a `--for condition=<x>` accepts, by alias.
pub fn wait_phases(condition: &str) -> Result<Vec<String>, UsageError> {
    let value = condition
        .trim()
        .strip_prefix("condition=")
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            UsageError(format!(
                "--for expects condition=<Phase> (e.g. condition=Succeeded), got {condition:?}"
            ))
        })?;
    let phases: &[&str] = match value.to_ascii_lowercase().as_str() {
        "complete" | "completed" | "succeeded" => &["Succeeded"],
        "failed" | "deadletter" | "error" => &["Failed", "DeadLetter"],
        "pending" => &["Pending"],
        "running" => &["Running"],
        "waitingapproval" => &["WaitingApproval"],
        "ready" => &["Ready"],
        _ => return Ok(vec![value.to_string()]),
    };
    Ok(phases.iter().map(|p| p.to_string()).collect())
}

async fn wait(ctx: &Ctx, args: &WaitArgs) -> Result<u8> {
    let (kind, name) = parse_target(&args.target)?;
    let phases = wait_phases(&args.condition)?;
    if args.interval.is_zero() {
        return Err(UsageError("--interval must be greater than zero".into()).into());
    }
    let (ns, name) = ctx.scoped(name);
    let r = display_ref(kind, name);
    let client = ctx.client()?;
    let deadline = tokio::time::Instant::now() + args.timeout;
    let wanted_failure = phases.iter().any(|p| p == "Failed" || p == "DeadLetter");
    let mut last: String;
    loop {
        match client.get_object(kind.plural(), ns, name).await {
            Ok(Some(obj)) => {
                let phase = obj
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if phases.iter().any(|p| p.eq_ignore_ascii_case(phase)) {
                    outln!("{r} condition met (phase={phase})");
                    return Ok(0);
                }
                if kind == Kind::Task && !wanted_failure && matches!(phase, "Failed" | "DeadLetter")
                {
                    let err = obj
                        .pointer("/status/lastError")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    bail!(
                        "{r} ended in phase {phase} while waiting for {}: {err}",
                        phases.join("|")
                    );
                }
                last = if phase.is_empty() {
                    "no phase yet".into()
                } else {
                    format!("phase {phase}")
                };
            }
            Ok(None) => last = "not found".into(),
            Err(e @ ApiError::Unreachable { .. }) => return Err(e.into()),
            Err(e) => last = e.to_string(),
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            eprintln!(
                "error: timed out after {} waiting for {r} to reach {} (last seen: {last})",
                humantime::format_duration(args.timeout),
                phases.join("|")
            );
            return Ok(1);
        }
        tokio::time::sleep(args.interval.min(deadline - now)).await;
    }
}

/// One line for a control-plane event.
fn event_line(e: &Value) -> String {
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
    let mut subject = s("kind").to_lowercase();
    if !s("name").is_empty() {
        let ns = if s("namespace").is_empty() {
            DEFAULT_NAMESPACE
        } else {
            s("namespace")
        };
        subject = format!("{subject}/{ns}/{}", s("name"));
    }
    let mut line = format!(
        "{} {} {} {}",
        s("timestamp"),
        s("source"),
        s("type"),
        subject
    );
    if !s("message").is_empty() {
        line.push_str(" - ");
        line.push_str(s("message"));
    }
    line
}

async fn events(ctx: &Ctx, args: &EventsArgs) -> Result<u8> {
    let client = ctx.client()?;
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    let kind = match &args.kind {
        Some(k) => parse_kind(k)?.as_str().to_string(),
        None => String::new(),
    };
    let query = [
        ("since", opt(&args.since)),
        ("source", opt(&args.source)),
        ("type", opt(&args.event_type)),
        ("kind", kind),
        ("name", opt(&args.name)),
        ("namespace", opt(&ctx.namespace)),
    ];
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut seen = 0usize;
    let stream = client.stream_sse(&["v1", "events", "watch"], &query, |ev| {
        if ev.event != "event" && ev.event != "message" {
            return ev.event != "close";
        }
        if args.raw {
            outln!("{}", ev.data);
        } else {
            match serde_json::from_str::<Value>(&ev.data) {
                Ok(v) => outln!("{}", event_line(&v)),
                Err(_) => outln!("{}", ev.data),
            }
        }
        seen += 1;
        !args.once
    });
    let result = match args.timeout {
        Some(t) => match tokio::time::timeout(t, stream).await {
            Ok(r) => r,
            Err(_) if args.once => {
                eprintln!("error: no event within {}", humantime::format_duration(t));
                return Ok(1);
            }
            Err(_) => Ok(()),
        },
        None => stream.await,
    };
    result.context("events")?;
    Ok(0)
}

async fn logs(ctx: &Ctx, args: &LogsArgs) -> Result<u8> {
    let (kind, name) = match args.target.split_once('/') {
        Some((res, name)) => (parse_kind(res)?, name),
        None => (Kind::Agent, args.target.as_str()),
    };
    if !matches!(kind, Kind::Task | Kind::Agent) {
        return Err(UsageError(format!(
            "logs are available for tasks and agents, not {}",
            kind.plural()
        ))
        .into());
    }
    let (ns, name) = ctx.scoped(name);
    let body = ctx
        .client()?
        .get(&["v1", kind.plural(), name, "logs"], &[("namespace", ns)])
        .await
        .with_context(|| format!("logs {}", display_ref(kind, name)))?;
    let entries = body
        .get("logs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if entries.is_empty() {
        eprintln!("no logs for {}", display_ref(kind, name));
    }
    for e in entries {
        match e {
            Value::String(s) => outln!("{s}"),
            Value::Object(ref m) if m.get("message").is_some_and(Value::is_string) => {
                let f = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("");
                let prefix: Vec<&str> = ["timestamp", "level", "agent"]
                    .iter()
                    .map(|k| f(k))
                    .filter(|v| !v.is_empty())
                    .collect();
                if prefix.is_empty() {
                    outln!("{}", f("message"));
                } else {
                    outln!("{} {}", prefix.join(" "), f("message"));
                }
            }
            other => outln!("{other}"),
        }
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// health / status / config

async fn health(ctx: &Ctx) -> Result<u8> {
    let client = ctx.client()?;
    let body = client.get(&["healthz"], &[]).await.context("health")?;
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    outln!("{status} ({})", client.server());
    Ok(if status == "ok" { 0 } else { 1 })
}

async fn status(ctx: &Ctx) -> Result<u8> {
    let client = ctx.client()?;
    let mut code = 0;
    let health = match client.get(&["healthz"], &[]).await {
        Ok(b) => b
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string(),
        Err(e @ ApiError::Unreachable { .. }) => return Err(e.into()),
        Err(e) => {
            code = 1;
            format!("error: {e}")
        }
    };
    if health != "ok" {
        code = 1;
    }
    let describe_err = |e: ApiError| match e.status() {
        Some(s) if s == reqwest::StatusCode::NOT_FOUND => {
            "not available on this server".to_string()
        }
        _ => format!("error: {e}"),
    };
    let auth = match client.get(&["v1", "auth", "config"], &[]).await {
        Ok(b) => {
            let mode = b.get("mode").and_then(Value::as_str).unwrap_or("unknown");
            match b.get("setup_token_required").and_then(Value::as_bool) {
                Some(true) => format!("{mode} (setup token required)"),
                _ => mode.to_string(),
            }
        }
        Err(e) => describe_err(e),
    };
    let namespaces = match client.get(&["v1", "namespaces"], &[]).await {
        Ok(b) => b
            .get("namespaces")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
        Err(e) => describe_err(e),
    };
    let workers = match client.get(&["v1", "workers"], &[]).await {
        Ok(b) => {
            let items = b
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let list: Vec<String> = items
                .iter()
                .map(|w| {
                    let s = |p: &str| w.pointer(p).and_then(Value::as_str).unwrap_or("");
                    format!("{} ({})", s("/metadata/name"), s("/status/phase"))
                })
                .collect();
            if list.is_empty() {
                "0".to_string()
            } else {
                format!("{}: {}", list.len(), list.join(", "))
            }
        }
        Err(e) => describe_err(e),
    };
    let capabilities = match client.get(&["v1", "capabilities"], &[]).await {
        Ok(b) => b
            .get("capabilities")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|c| c.get("enabled").and_then(Value::as_bool).unwrap_or(false))
                    .filter_map(|c| c.get("id").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
        Err(e) => describe_err(e),
    };
    for (k, v) in [
        ("Server", client.server().to_string()),
        ("Health", health),
        ("Auth", auth),
        ("Namespaces", namespaces),
        ("Workers", workers),
        ("Capabilities", capabilities),
    ] {
        outln!("{:<14}{v}", format!("{k}:"));
    }
    Ok(code)
}

fn config_cmd(ctx: &Ctx, cmd: ConfigCommand, flag_server: Option<&str>) -> Result<u8> {
    match cmd {
        ConfigCommand::Path => {
            outln!("{}", ctx.config_path()?.display());
        }
        ConfigCommand::Get => {
            let path = ctx
                .config_path
                .as_ref()
                .map_or_else(|| "(none)".to_string(), |p| p.display().to_string());
            let current = if ctx.config.current_profile.is_empty() {
                "(none)"
            } else {
                &ctx.config.current_profile
            };
            outln!("config file:     {path}");
            outln!("current profile: {current}");
            outln!(
                "server:          {} (from {})",
                ctx.conn.server,
                ctx.conn.server_source
            );
            match &ctx.conn.token {
                Some(_) => outln!("token:           set (from {})", ctx.conn.token_source),
                None => outln!("token:           not set"),
            }
            if !ctx.config.profiles.is_empty() {
                outln!("profiles:");
                for (name, p) in &ctx.config.profiles {
                    let mark = if *name == ctx.config.current_profile {
                        '*'
                    } else {
                        ' '
                    };
                    let mut line = format!("  {mark} {name}");
                    if !p.server.is_empty() {
                        line.push_str(&format!(" server={}", p.server));
                    }
                    if !p.token.is_empty() {
                        line.push_str(" token=<set>");
                    }
                    if !p.token_env.is_empty() {
                        line.push_str(&format!(" token_env={}", p.token_env));
                    }
                    outln!("{line}");
                }
            }
        }
        ConfigCommand::Use { name } => {
            let path = ctx.config_path()?;
            let mut cfg = ctx.config.clone();
            if !cfg.profiles.contains_key(&name) {
                let known: Vec<&str> = cfg.profiles.keys().map(String::as_str).collect();
                bail!(
                    "no profile named {name:?} (known: {}); create it with `orlojctl config set-profile {name} --server URL`",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                );
            }
            cfg.current_profile = name.clone();
            cfg.save(path)?;
            outln!("switched to profile {name}");
        }
        ConfigCommand::SetProfile {
            name,
            token,
            token_env,
        } => {
            if name.trim().is_empty() {
                return Err(UsageError("profile name must not be empty".into()).into());
            }
            let path = ctx.config_path()?;
            let mut cfg = ctx.config.clone();
            let profile = cfg.profiles.entry(name.clone()).or_default();
            if let Some(s) = flag_server {
                profile.server = s.trim().to_string();
            }
            if let Some(t) = token {
                profile.token = t.trim().to_string();
            }
            if let Some(t) = token_env {
                profile.token_env = t.trim().to_string();
            }
            if cfg.current_profile.is_empty() {
                cfg.current_profile = name.clone();
            }
            cfg.save(path)?;
            outln!("profile {name} saved to {}", path.display());
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_condition_aliases() {
        let p = |c: &str| wait_phases(c).expect("valid");
        for c in [
            "condition=complete",
            "condition=Completed",
            "condition=SUCCEEDED",
        ] {
            assert_eq!(p(c), ["Succeeded"], "{c}");
        }
        for c in [
            "condition=failed",
            "condition=DeadLetter",
            "condition=error",
        ] {
            assert_eq!(p(c), ["Failed", "DeadLetter"], "{c}");
        }
        assert_eq!(p("condition=running"), ["Running"]);
        assert_eq!(p("condition=Ready"), ["Ready"]);
        assert_eq!(p("condition=Custom"), ["Custom"]);
        for bad in ["Succeeded", "condition=", "phase=Succeeded", ""] {
            assert!(wait_phases(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_and_kinds() {
        let (k, n) = parse_target("task/report").expect("target");
        assert_eq!((k, n), (Kind::Task, "report"));
        let (k, n) = parse_target("agentsystem/team/pipe").expect("target");
        assert_eq!((k, n), (Kind::AgentSystem, "team/pipe"));
        for bad in ["task", "task/", "nope/x"] {
            let e = parse_target(bad).expect_err(bad);
            assert!(e.is::<UsageError>(), "{bad}: usage error expected");
        }
    }

    #[test]
    fn literals() {
        let m = parse_literals(&["a=1".into(), "b=x=y".into(), "c=".into()]).expect("ok");
        assert_eq!(m.get("b"), Some(&Value::String("x=y".into())));
        assert_eq!(m.get("c"), Some(&Value::String(String::new())));
        assert!(parse_literals(&["novalue".into()]).is_err());
        assert!(parse_literals(&["=v".into()]).is_err());
    }

    #[test]
    fn lines_for_watch_and_events() {
        let w = watch_line(
            Kind::Task,
            &json!({"type": "updated", "resource": {"metadata": {"name": "t", "resourceVersion": "4"}, "status": {"phase": "Running"}}}),
        );
        assert_eq!(w, "UPDATED  task/default/t phase=Running rv=4");
        let e = event_line(&json!({
            "id": 3, "timestamp": "2026-01-01T00:00:00Z", "source": "apiserver", "type": "resource.created",
            "kind": "Agent", "name": "a", "namespace": "team", "action": "created", "message": "agent created"
        }));
        assert_eq!(
            e,
            "2026-01-01T00:00:00Z apiserver resource.created agent/team/a - agent created"
        );
    }

    #[test]
    fn describe_has_summary_then_yaml() {
        let t = describe_text(
            Kind::Agent,
            &json!({"apiVersion": "orloj.dev/v1", "kind": "Agent",
                    "metadata": {"name": "a", "resourceVersion": "3", "labels": {"team": "x"}},
                    "spec": {"model_ref": "m"}, "status": {"phase": "Ready"}}),
        );
        assert!(
            t.starts_with(
                "Name:             a\nNamespace:        default\nKind:             Agent\n"
            ),
            "{t}"
        );
        assert!(t.contains("Phase:            Ready\n"), "{t}");
        assert!(t.contains("Labels:           team=x\n"), "{t}");
        assert!(!t.contains("Last Error"), "empty rows are dropped: {t}");
        assert!(t.contains("---\napiVersion: orloj.dev/v1\n"), "{t}");
    }
}
