//! orlojctl auth commands (spec §4): `auth login|whoami`, `create token`, `get tokens`,
//! `delete token`, `admin create-user|list-users|delete-user|reset-password`.

use super::client::ApiClient;
use super::commands::Ctx;
use super::output::OutputFormat;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

/// `auth` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Log in with a username and password; the issued API token is stored in the active
    /// config profile (created as `default` when there is none).
    Login(LoginArgs),
    /// Show who the server thinks you are.
    Whoami,
}

/// `auth login` flags.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Username (read from stdin when omitted).
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password (read from stdin when omitted, so it stays out of shell history).
    #[arg(short = 'p', long)]
    pub password: Option<String>,
}

/// `admin` subcommands (native auth, admin role).
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user; prints its generated password once.
    CreateUser {
        /// Username.
        username: String,
        /// Role: admin, writer, reader or controller.
        #[arg(long, default_value = "reader")]
        role: String,
    },
    /// List users.
    ListUsers,
    /// Delete a user (the last admin cannot be deleted).
    DeleteUser {
        /// Username.
        username: String,
    },
    /// Set a user's password (revokes its sessions).
    ResetPassword {
        /// Username.
        #[arg(long)]
        username: String,
        /// The new password (at least 12 characters).
        #[arg(long)]
        new_password: String,
    },
}

fn read_line(prompt: &str) -> Result<String> {
    use std::io::{BufRead, Write};
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// `auth login` / `auth whoami`.
pub(super) async fn auth(ctx: &Ctx, cmd: AuthCommand) -> Result<u8> {
    match cmd {
        AuthCommand::Login(args) => {
            let username = match args.username {
                Some(u) => u,
                None => read_line("Username: ")?,
            };
            let password = match args.password {
                Some(p) => p,
                None => read_line("Password: ")?,
            };
            if username.trim().is_empty() || password.is_empty() {
                bail!("username and password are required");
            }
            let anonymous = ApiClient::new(&ctx.conn.server, None)?;
            let issued = anonymous
                .call_json(
                    Method::POST,
                    &["v1", "auth", "cli-token"],
                    &[],
                    Some(&json!({"username": username.trim(), "password": password})),
                    None,
                )
                .await
                .context("login")?;
            let token = issued["token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .context("the server issued no token")?;
            let path = ctx.config_path()?;
            let mut cfg = ctx.config.clone();
            if cfg.current_profile.is_empty() {
                cfg.current_profile = "default".to_string();
            }
            let name = cfg.current_profile.clone();
            let profile = cfg.profiles.entry(name.clone()).or_default();
            if profile.server.is_empty() {
                profile.server = ctx.conn.server.clone();
            }
            profile.token = token.to_string();
            cfg.save(path)?;
            outln!(
                "logged in as {} ({}); token {} saved to profile {name}",
                issued["username"].as_str().unwrap_or(username.trim()),
                issued["role"].as_str().unwrap_or("?"),
                issued["name"].as_str().unwrap_or("?"),
            );
        }
        AuthCommand::Whoami => {
            let me = ctx
                .client()?
                .get(&["v1", "auth", "me"], &[])
                .await
                .context("whoami")?;
            if me["authenticated"] == json!(true) {
                outln!(
                    "{} (role {}, via {})",
                    me["name"]
                        .as_str()
                        .or(me["username"].as_str())
                        .unwrap_or("?"),
                    me["role"].as_str().unwrap_or("?"),
                    me["method"].as_str().unwrap_or("?")
                );
            } else {
                outln!("not authenticated");
            }
        }
    }
    Ok(0)
}

/// `create token <name> --role <r>`.
pub(super) async fn create_token(ctx: &Ctx, name: &str, role: &str) -> Result<u8> {
    let created = ctx
        .client()?
        .call_json(
            Method::POST,
            &["v1", "tokens"],
            &[],
            Some(&json!({"name": name, "role": role})),
            None,
        )
        .await
        .with_context(|| format!("create token {name}"))?;
    eprintln!(
        "token {name} created with role {}; it is shown only once:",
        created["role"].as_str().unwrap_or(role)
    );
    outln!("{}", created["token"].as_str().unwrap_or_default());
    Ok(0)
}

fn table(items: &[Value], columns: &[(&str, &str)]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            columns
                .iter()
                .map(|(_, k)| i[*k].as_str().unwrap_or("").to_string())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(c, (h, _))| {
            rows.iter()
                .map(|r| r[c].len())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect::<Vec<_>>()
            .join("   ")
            .trim_end()
            .to_string()
    };
    let mut out = line(columns.iter().map(|(h, _)| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

fn print_list(list: &Value, format: OutputFormat, columns: &[(&str, &str)]) {
    match format {
        OutputFormat::Table => {
            let items = list["items"].as_array().cloned().unwrap_or_default();
            out!("{}", table(&items, columns));
        }
        f => out!("{}", super::output::render_value(list, f)),
    }
}

/// `get tokens`.
pub(super) async fn get_tokens(ctx: &Ctx, format: OutputFormat) -> Result<u8> {
    let list = ctx
        .client()?
        .get(&["v1", "tokens"], &[])
        .await
        .context("get tokens")?;
    print_list(
        &list,
        format,
        &[
            ("NAME", "name"),
            ("ROLE", "role"),
            ("CREATED", "created_at"),
        ],
    );
    Ok(0)
}

/// `delete token <name>`.
pub(super) async fn delete_token(ctx: &Ctx, name: &str) -> Result<u8> {
    ctx.client()?
        .call(Method::DELETE, &["v1", "tokens", name], &[], None, None)
        .await
        .with_context(|| format!("delete token {name}"))?;
    outln!("token {name} deleted");
    Ok(0)
}

/// `admin …`.
pub(super) async fn admin(ctx: &Ctx, cmd: AdminCommand) -> Result<u8> {
    let client = ctx.client()?;
    match cmd {
        AdminCommand::CreateUser { username, role } => {
            let created = client
                .call_json(
                    Method::POST,
                    &["v1", "auth", "users"],
                    &[],
                    Some(&json!({"username": username, "role": role})),
                    None,
                )
                .await
                .with_context(|| format!("create user {username}"))?;
            eprintln!(
                "user {username} created with role {}; its password is shown only once:",
                created["role"].as_str().unwrap_or(&role)
            );
            outln!("{}", created["password"].as_str().unwrap_or_default());
        }
        AdminCommand::ListUsers => {
            let list = client
                .get(&["v1", "auth", "users"], &[])
                .await
                .context("list users")?;
            print_list(
                &list,
                OutputFormat::Table,
                &[
                    ("USERNAME", "username"),
                    ("ROLE", "role"),
                    ("CREATED", "created_at"),
                ],
            );
        }
        AdminCommand::DeleteUser { username } => {
            client
                .call(
                    Method::DELETE,
                    &["v1", "auth", "users", &username],
                    &[],
                    None,
                    None,
                )
                .await
                .with_context(|| format!("delete user {username}"))?;
            outln!("user {username} deleted");
        }
        AdminCommand::ResetPassword {
            username,
            new_password,
        } => {
            client
                .call_json(
                    Method::POST,
                    &["v1", "auth", "admin", "reset-password"],
                    &[],
                    Some(&json!({"username": username, "new_password": new_password})),
                    None,
                )
                .await
                .with_context(|| format!("reset the password of {username}"))?;
            outln!("password of {username} reset");
        }
    }
    Ok(0)
}
