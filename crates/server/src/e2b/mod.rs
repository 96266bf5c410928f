//! E2B's wire protocol on the daemon, so E2B's own SDKs drive Stockade sandboxes unmodified
//! (`E2B_API_URL` and `E2B_SANDBOX_URL` both set to the daemon): the control plane
//! ([`control`]: `/sandboxes`, `/v2/sandboxes`, with E2B's status codes and error bodies) and
//! envd, the in-sandbox daemon E2B's SDKs talk to ([`envd`]: Connect-RPC `process.Process` and
//! `filesystem.Filesystem`, `/health`, `/files`), chosen per request by the `E2b-Sandbox-Id`
//! header as E2B's own proxy does. Processes are kept execs, files are the driver's file
//! operations: every driver that runs the agent serves E2B's SDKs.
//!
//! What E2B keeps about a sandbox that Stockade's spec does not (template, access token, end
//! time, metadata) is a [`Record`] in the daemon's database.

pub mod connect;
pub mod control;
pub mod envd;
pub mod files;
pub mod filesystem;
pub mod process;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
pub use stockade_api::E2bTemplate;
use stockade_core::{Driver, SandboxId};

use crate::AppState;

/// The envd version advertised to the SDKs, which unlock features by it: 0.5.7 has `stdin`,
/// `close_stdin`, octet-stream and gzip uploads; metadata (0.6.2) and entries in watch
/// events (0.6.3) are not served yet.
pub const ENVD_VERSION: &str = "0.5.7";

/// envd's port inside an E2B sandbox: requests for it are envd's, others a sandbox port's.
pub const ENVD_PORT: u16 = 49983;

/// How the E2B surface makes sandboxes.
#[derive(Debug, Clone, Default)]
pub struct E2bConfig {
    /// The driver templates' sandboxes are made on; the registry's default when absent.
    pub driver: Option<String>,
    /// Give sandboxes outbound network when a create does not refuse it (E2B's default). Off
    /// by default: a daemon opts in (`stockade serve --e2b-allow-internet`).
    pub allow_internet: bool,
}

/// A template as a create uses it: what the sandbox runs on and as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub id: String,
    pub driver: Option<String>,
    pub image: Option<String>,
    pub runtime: Option<String>,
    /// The user processes run as, and the one home and relative paths resolve against.
    pub user: String,
    pub home: String,
}

impl Template {
    /// The template named `id`: one registered under it, else the built-in `base`. The
    /// built-in runs as E2B's `user` in `/home/user` on a driver that runs images (Stockade's
    /// base image has that user), as root in `/root` elsewhere (the native driver's base is the
    /// host's root, which has no such user).
    pub async fn find(state: &AppState, id: &str) -> Option<Template> {
        let registered = parsed(&state.db.templates().await.unwrap_or_default());
        if let Some(t) = registered.into_iter().find(|t| t.name == id) {
            return Some(t.into());
        }
        if id != "base" {
            return None;
        }
        let mut template = Template::from(base_template());
        let registry = state.driver.registry();
        let driver = state.e2b.driver.as_deref().or(registry.default_name());
        if driver
            .and_then(|d| registry.factory(d).ok())
            .is_some_and(|f| f.takes_images())
        {
            template.user = BASE_IMAGE_USER.into();
            template.home = format!("/home/{BASE_IMAGE_USER}");
        }
        Some(template)
    }
}

impl From<E2bTemplate> for Template {
    fn from(t: E2bTemplate) -> Template {
        let user = t.user.unwrap_or_else(|| "root".into());
        let home = t.home.unwrap_or_else(|| {
            if user == "root" {
                "/root".into()
            } else {
                format!("/home/{user}")
            }
        });
        Template {
            id: t.name,
            driver: t.driver,
            image: t.image,
            runtime: t.runtime,
            user,
            home,
        }
    }
}

/// The unprivileged user of Stockade's base image, as of E2B's base template.
pub const BASE_IMAGE_USER: &str = "user";

/// The built-in template: the E2B driver's default image (its user: see [`Template::find`]).
pub fn base_template() -> E2bTemplate {
    E2bTemplate {
        name: "base".into(),
        driver: None,
        image: None,
        runtime: None,
        user: None,
        home: None,
    }
}

/// Every template: the registered ones, and `base` unless one replaces it; by name.
pub async fn templates(state: &AppState) -> Vec<E2bTemplate> {
    listed(&state.db.templates().await.unwrap_or_default())
}

/// The templates stored as `rows` (JSON), with the built-in `base` unless one replaces it.
pub fn listed(rows: &[String]) -> Vec<E2bTemplate> {
    let mut all: Vec<E2bTemplate> = rows
        .iter()
        .filter_map(|data| serde_json::from_str(data).ok())
        .collect();
    if !all.iter().any(|t| t.name == "base") {
        all.push(base_template());
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// The templates stored as `rows` (JSON); a row that does not parse is left out.
fn parsed(rows: &[String]) -> Vec<E2bTemplate> {
    rows.iter()
        .filter_map(|data| serde_json::from_str(data).ok())
        .collect()
}

/// Checks a template before it is stored: each field named with what it must be. `drivers`
/// are the registered drivers' names.
pub fn validate_template(t: &E2bTemplate, drivers: &[&str]) -> Result<(), stockade_core::Error> {
    let invalid = |field: &str, reason: String| Err(stockade_core::Error::invalid(field, reason));
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
    };
    if !name_ok(&t.name) {
        return invalid(
            "name",
            format!("{:?} must be 1 to 64 of a-z, 0-9, '.', '_', '-'", t.name),
        );
    }
    if let Some(d) = &t.driver {
        if !drivers.contains(&d.as_str()) {
            return invalid(
                "driver",
                format!("{d:?} is not a registered driver ({})", drivers.join(", ")),
            );
        }
    }
    for (field, value) in [("image", &t.image), ("runtime", &t.runtime)] {
        if value
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.len() > 256 || v.chars().any(char::is_whitespace))
        {
            return invalid(field, "must be 1 to 256 characters without spaces".into());
        }
    }
    if let Some(u) = &t.user {
        let ok = !u.is_empty()
            && u.len() <= 32
            && u.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && !u.starts_with('-');
        if !ok {
            return invalid("user", format!("{u:?} is not a user name"));
        }
    }
    if let Some(h) = &t.home {
        if !h.starts_with('/') || h.len() > 4096 {
            return invalid("home", format!("{h:?} must be an absolute path"));
        }
    }
    Ok(())
}

/// What the E2B surface keeps about a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub sandbox_id: String,
    pub template_id: String,
    /// The envd access token the SDK sends as `X-Access-Token`.
    pub access_token: String,
    /// Unix milliseconds.
    pub started_at_ms: u64,
    /// Unix milliseconds: the sandbox is killed at this time (the E2B `timeout`).
    pub end_at_ms: u64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    pub user: String,
    pub home: String,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// Paused at the end of its timeout instead of killed.
    #[serde(default)]
    pub auto_pause: bool,
}

impl Record {
    pub async fn load(state: &AppState, sandbox_id: &str) -> Option<Record> {
        let data = state.db.e2b(sandbox_id).await.ok().flatten()?;
        serde_json::from_str(&data).ok()
    }

    pub async fn save(&self, state: &AppState) -> Result<(), crate::error::ApiError> {
        let data = serde_json::to_string(self).map_err(crate::error::ApiError::internal)?;
        Ok(state.db.put_e2b(&self.sandbox_id, &data).await?)
    }

    pub async fn all(state: &AppState) -> Vec<Record> {
        state
            .db
            .all_e2b()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, data)| serde_json::from_str(&data).ok())
            .collect()
    }
}

fn resolve_in(home: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else if path == "~" {
        home.to_owned()
    } else if let Some(rest) = path.strip_prefix("~/") {
        format!("{}/{rest}", home.trim_end_matches('/'))
    } else {
        format!("{}/{path}", home.trim_end_matches('/'))
    };
    // Lexically clean: `a/./b`, `a//b` and `a/../b` as a shell would see them.
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A fresh envd access token.
pub fn access_token() -> stockade_core::Result<String> {
    Ok((0..3)
        .map(|_| stockade_store::random_id().map(|r| r.to_string()))
        .collect::<stockade_core::Result<Vec<_>>>()?
        .concat())
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339_ms(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Kills (or, with auto-pause, stops) E2B sandboxes past their end time; forgets records whose
/// sandbox is gone. The daemon's reaper calls this every tick.
pub async fn reap(state: &Arc<AppState>) {
    let now = now_ms();
    for record in Record::all(state).await {
        let Ok(id) = SandboxId::parse(&record.sandbox_id) else {
            continue;
        };
        let info = match state.driver.get(id.as_str()).await {
            Ok(info) => info,
            Err(stockade_core::Error::NotFound(_)) => {
                let _ = state.db.forget_sandbox(id.as_str()).await;
                continue;
            }
            Err(_) => continue,
        };
        if record.end_at_ms > now {
            continue;
        }
        if record.auto_pause {
            if info.status == stockade_core::SandboxStatus::Running {
                tracing::info!("e2b: sandbox {id} reached its end time, pausing");
                let _ = state.driver.stop(&id).await;
            }
            continue;
        }
        tracing::info!("e2b: sandbox {id} reached its end time, killing");
        if state.driver.destroy(&id).await.is_ok() {
            let _ = state.db.forget_sandbox(id.as_str()).await;
            state
                .events
                .publish(crate::events::sandbox(id.as_str(), "destroyed"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_the_home() {
        assert_eq!(resolve_in("/root", "a.txt"), "/root/a.txt");
        assert_eq!(resolve_in("/root", "~/d/../e"), "/root/e");
        assert_eq!(resolve_in("/root", "~"), "/root");
        assert_eq!(resolve_in("/root", "/tmp//x/./y"), "/tmp/x/y");
        assert_eq!(resolve_in("/root", "/../.."), "/");
    }

    #[test]
    fn templates_are_checked_field_by_field() {
        let t = |f: fn(&mut E2bTemplate)| {
            let mut t = base_template();
            t.name = "py".into();
            f(&mut t);
            validate_template(&t, &["native", "docker"]).map_err(|e| e.field().map(str::to_owned))
        };
        assert_eq!(t(|_| {}), Ok(()));
        assert_eq!(t(|t| t.name = "Has Space".into()), Err(Some("name".into())));
        assert_eq!(t(|t| t.driver = Some("vm".into())), Err(Some("driver".into())));
        assert_eq!(t(|t| t.image = Some(String::new())), Err(Some("image".into())));
        assert_eq!(t(|t| t.user = Some("-x".into())), Err(Some("user".into())));
        assert_eq!(t(|t| t.home = Some("rel".into())), Err(Some("home".into())));
        let user = Template::from(E2bTemplate {
            user: Some("user".into()),
            ..base_template()
        });
        assert_eq!((user.user.as_str(), user.home.as_str()), ("user", "/home/user"));
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
