//! The orlojctl config file (`<config dir>/orlojctl/config.json`) and the precedence rules
//! that pick the server URL and API token.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Server used when nothing else names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Environment variable that overrides the config file path.
pub const CONFIG_ENV: &str = "ORLOJCTL_CONFIG";

/// One named connection profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Server URL.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
    /// API token stored in the file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// Name of an environment variable holding the token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_env: String,
}

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtlConfig {
    /// The profile in use; empty when none.
    #[serde(default)]
    pub current_profile: String,
    /// Profiles by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

impl CtlConfig {
    /// The active profile, if it exists.
    pub fn current(&self) -> Option<&Profile> {
        if self.current_profile.is_empty() {
            return None;
        }
        self.profiles.get(&self.current_profile)
    }

    /// Reads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => Ok(Self::default()),
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("config file {} is not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read config file {}", path.display())),
        }
    }

    /// Writes the file atomically (temp file in the same directory, then rename), mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create config directory {}", dir.display()))?;
        // tempfile creates the file with mode 0600 on unix, and rename keeps the mode.
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        tmp.write_all(text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .with_context(|| format!("cannot write config file {}", path.display()))?;
        tmp.persist(path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot replace config file {}", path.display()))?;
        Ok(())
    }
}

/// Where the config file lives: `$ORLOJCTL_CONFIG`, else `<user config dir>/orlojctl/config.json`
/// with the user config dir chosen as Go's `os.UserConfigDir` does.
pub fn config_path(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf> {
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if let Some(p) = get(CONFIG_ENV) {
        return Ok(PathBuf::from(p));
    }
    let base = if cfg!(windows) {
        get("AppData").map(PathBuf::from)
    } else if cfg!(target_os = "macos") {
        get("HOME").map(|h| PathBuf::from(h).join("Library/Application Support"))
    } else {
        get("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| get("HOME").map(|h| PathBuf::from(h).join(".config")))
    };
    match base {
        Some(b) => Ok(b.join("orlojctl").join("config.json")),
        None => bail!("cannot find a user config directory (set HOME or {CONFIG_ENV})"),
    }
}

/// Where a resolved value came from, for `config get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag(&'static str),
    /// An environment variable.
    Env(String),
    /// The named profile's field.
    Profile(String),
    /// Built-in default (or none, for the token).
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "flag {flag}"),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Profile(what) => write!(f, "profile {what}"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// The server and token to use, with their sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Server base URL, without a trailing slash.
    pub server: String,
    /// Where the server came from.
    pub server_source: Source,
    /// Bearer token, if any.
    pub token: Option<String>,
    /// Where the token came from.
    pub token_source: Source,
}

/// Applies the precedence rules of spec §4. `env` looks up environment variables (injected
/// so tests do not touch the process environment).
pub fn resolve(
    flag_server: Option<&str>,
    flag_token: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    config: &CtlConfig,
) -> Connection {
    let nonempty = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let profile = config.current();
    let pname = &config.current_profile;

    let (server, server_source) = if let Some(s) = nonempty(flag_server.map(str::to_string)) {
        (s, Source::Flag("--server"))
    } else if let Some(s) = nonempty(env("ORLOJCTL_SERVER")) {
        (s, Source::Env("ORLOJCTL_SERVER".into()))
    } else if let Some(s) = nonempty(env("ORLOJ_SERVER")) {
        (s, Source::Env("ORLOJ_SERVER".into()))
    } else if let Some(s) = nonempty(profile.map(|p| p.server.clone())) {
        (s, Source::Profile(format!("{pname}.server")))
    } else {
        (DEFAULT_SERVER.to_string(), Source::Default)
    };

    let (token, token_source) = if let Some(t) = nonempty(flag_token.map(str::to_string)) {
        (Some(t), Source::Flag("--api-token"))
    } else if let Some(t) = nonempty(env("ORLOJCTL_API_TOKEN")) {
        (Some(t), Source::Env("ORLOJCTL_API_TOKEN".into()))
    } else if let Some(t) = nonempty(env("ORLOJ_API_TOKEN")) {
        (Some(t), Source::Env("ORLOJ_API_TOKEN".into()))
    } else if let Some(t) = nonempty(profile.map(|p| p.token.clone())) {
        (Some(t), Source::Profile(format!("{pname}.token")))
    } else if let Some(var) = nonempty(profile.map(|p| p.token_env.clone()))
        && let Some(t) = nonempty(env(&var))
    {
        (
            Some(t),
            Source::Profile(format!("{pname}.token_env ({var})")),
        )
    } else {
        (None, Source::Default)
    };

    Connection {
        server: server.trim_end_matches('/').to_string(),
        server_source,
        token,
        token_source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn config_with_profile() -> CtlConfig {
        let mut c = CtlConfig {
            current_profile: "prod".into(),
            ..Default::default()
        };
        c.profiles.insert(
            "prod".into(),
            Profile {
                server: "https://prod.example/".into(),
                token: "".into(),
                token_env: "PROD_TOKEN".into(),
            },
        );
        c
    }

    #[test]
    fn server_precedence() {
        let cfg = config_with_profile();
        let all = env_of(&[
            ("ORLOJCTL_SERVER", "http://a"),
            ("ORLOJ_SERVER", "http://b"),
        ]);
        let c = resolve(Some("http://flag"), None, &all, &cfg);
        assert_eq!(c.server, "http://flag");
        assert_eq!(c.server_source, Source::Flag("--server"));
        let c = resolve(None, None, &all, &cfg);
        assert_eq!(c.server, "http://a");
        let only_b = env_of(&[("ORLOJ_SERVER", "http://b")]);
        assert_eq!(resolve(None, None, &only_b, &cfg).server, "http://b");
        let none = env_of(&[]);
        let c = resolve(None, None, &none, &cfg);
        assert_eq!(c.server, "https://prod.example", "trailing slash trimmed");
        assert_eq!(c.server_source, Source::Profile("prod.server".into()));
        let c = resolve(None, None, &none, &CtlConfig::default());
        assert_eq!(c.server, DEFAULT_SERVER);
        assert_eq!(c.server_source, Source::Default);
        // Blank values do not count.
        let blank = env_of(&[("ORLOJCTL_SERVER", "  ")]);
        assert_eq!(
            resolve(Some(""), None, &blank, &cfg).server,
            "https://prod.example"
        );
    }

    #[test]
    fn token_precedence() {
        let mut cfg = config_with_profile();
        let all = env_of(&[
            ("ORLOJCTL_API_TOKEN", "t-ctl"),
            ("ORLOJ_API_TOKEN", "t-orloj"),
            ("PROD_TOKEN", "t-envref"),
        ]);
        assert_eq!(
            resolve(None, Some("t-flag"), &all, &cfg).token.as_deref(),
            Some("t-flag")
        );
        assert_eq!(
            resolve(None, None, &all, &cfg).token.as_deref(),
            Some("t-ctl")
        );
        let e = env_of(&[("ORLOJ_API_TOKEN", "t-orloj"), ("PROD_TOKEN", "t-envref")]);
        assert_eq!(
            resolve(None, None, &e, &cfg).token.as_deref(),
            Some("t-orloj")
        );
        let e = env_of(&[("PROD_TOKEN", "t-envref")]);
        let c = resolve(None, None, &e, &cfg);
        assert_eq!(c.token.as_deref(), Some("t-envref"));
        assert!(matches!(c.token_source, Source::Profile(ref s) if s.contains("PROD_TOKEN")));
        // A stored token beats token_env.
        if let Some(p) = cfg.profiles.get_mut("prod") {
            p.token = "t-stored".into();
        }
        assert_eq!(
            resolve(None, None, &e, &cfg).token.as_deref(),
            Some("t-stored")
        );
        let c = resolve(None, None, &env_of(&[]), &CtlConfig::default());
        assert_eq!(c.token, None);
    }

    #[test]
    fn profile_must_exist_to_count() {
        let mut cfg = config_with_profile();
        cfg.current_profile = "missing".into();
        assert_eq!(
            resolve(None, None, &env_of(&[]), &cfg).server,
            DEFAULT_SERVER
        );
    }

    #[test]
    fn config_path_rules() {
        let p = config_path(&env_of(&[(CONFIG_ENV, "/x/c.json"), ("HOME", "/h")])).expect("path");
        assert_eq!(p, PathBuf::from("/x/c.json"));
        if cfg!(target_os = "linux") {
            let p =
                config_path(&env_of(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/h")])).expect("path");
            assert_eq!(p, PathBuf::from("/xdg/orlojctl/config.json"));
            let p = config_path(&env_of(&[("HOME", "/h")])).expect("path");
            assert_eq!(p, PathBuf::from("/h/.config/orlojctl/config.json"));
            assert!(config_path(&env_of(&[])).is_err());
        }
    }

    #[test]
    fn save_and_load_round_trip_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/orlojctl/config.json");
        assert_eq!(
            CtlConfig::load(&path).expect("missing is empty"),
            CtlConfig::default()
        );
        let cfg = config_with_profile();
        cfg.save(&path).expect("save");
        assert_eq!(CtlConfig::load(&path).expect("load"), cfg);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Only the config file is left behind (no stray temp files).
        let entries: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("read dir")
            .collect();
        assert_eq!(entries.len(), 1);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("\"current_profile\": \"prod\""));
        assert!(text.contains("\"token_env\": \"PROD_TOKEN\""));
    }

    #[test]
    fn invalid_config_is_reported_with_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(&path, "{not json").expect("write");
        let err = CtlConfig::load(&path).expect_err("invalid");
        assert!(format!("{err:#}").contains("config.json"));
    }
}
