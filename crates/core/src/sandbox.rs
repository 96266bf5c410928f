//! What a sandbox is: its spec (what the user asked for), its id and its status state machine.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where commands run unless the spec or request says otherwise.
pub const DEFAULT_WORKDIR: &str = "/workspace";

/// A sandbox id: 12 lowercase hex characters, like a short container id.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SandboxId(String);

impl SandboxId {
    /// Wraps an id string after checking its shape.
    pub fn parse(s: &str) -> Result<Self> {
        if s.len() == 12
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            Ok(SandboxId(s.to_owned()))
        } else {
            Err(Error::invalid(
                "sandbox id",
                format!("{s:?} is not 12 lowercase hex characters"),
            ))
        }
    }

    /// Makes an id from 48 random bits.
    pub fn from_random(bits: u64) -> Self {
        SandboxId(format!("{:012x}", bits & 0xffff_ffff_ffff))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// Network access for a sandbox.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only.
    #[default]
    None,
    /// Outbound access.
    Full,
}

impl std::str::FromStr for NetworkMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(NetworkMode::None),
            "full" => Ok(NetworkMode::Full),
            other => Err(Error::invalid(
                "network",
                format!("{other:?}: expected \"none\" or \"full\""),
            )),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            NetworkMode::None => "none",
            NetworkMode::Full => "full",
        })
    }
}

/// Processes and threads a sandbox may have when its spec sets no limit (`Resources::pids` is
/// `None`): enough for builds, few enough that a fork bomb stops long before the host notices.
/// Every driver that can limit processes applies it.
pub const DEFAULT_PIDS: u32 = 4096;

/// Resource limits. `None` means the driver's default.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes (swap is not allowed on top).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU quota in thousandths of a CPU (1500 = 1.5 CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millicpus: Option<u32>,
    /// Maximum number of processes and threads; [`DEFAULT_PIDS`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// Size limit of the writable layer in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// Open files per process (`RLIMIT_NOFILE`); the driver's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    /// Largest file a process may write, in bytes (`RLIMIT_FSIZE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size_bytes: Option<u64>,
}

/// A host path made visible inside the sandbox.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute host path.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub host: PathBuf,
    /// Absolute path inside the sandbox.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub sandbox: PathBuf,
    /// Mounted read-only.
    #[serde(default)]
    pub read_only: bool,
}

impl Mount {
    /// Parses `HOST:PATH[:ro|:rw]`, as `-v` takes it.
    pub fn parse(s: &str) -> Result<Self> {
        let field = "volume";
        let parts: Vec<&str> = s.split(':').collect();
        let (host, sandbox, read_only) = match parts.as_slice() {
            [h, p] => (*h, *p, false),
            [h, p, "ro"] => (*h, *p, true),
            [h, p, "rw"] => (*h, *p, false),
            [_, _, mode] => {
                return Err(Error::invalid(
                    field,
                    format!("{s:?}: mode {mode:?} must be \"ro\" or \"rw\""),
                ))
            }
            _ => return Err(Error::invalid(field, format!("{s:?}: expected HOST:PATH[:ro]"))),
        };
        if !host.starts_with('/') {
            return Err(Error::invalid(
                field,
                format!("{s:?}: host path {host:?} must be absolute"),
            ));
        }
        if !sandbox.starts_with('/') {
            return Err(Error::invalid(
                field,
                format!("{s:?}: sandbox path {sandbox:?} must be absolute"),
            ));
        }
        Ok(Mount {
            host: host.into(),
            sandbox: sandbox.into(),
            read_only,
        })
    }
}

/// Everything a user can ask of a new sandbox. Drivers ignore nothing silently: a field they
/// cannot honour is an [`Error::Unsupported`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Unique human name; the id is used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The driver's name as registered; empty means the registry's default driver (the router
    /// fills it in before the driver sees the spec).
    #[serde(default)]
    pub driver: String,
    /// Root filesystem directory (native); the host `/` read-only when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub rootfs: Option<PathBuf>,
    /// Image (container drivers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Container runtime the engine should use (`runc`, `runsc`, ...); the engine's default when
    /// absent. Container drivers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Working directory for execs; `/workspace` by default.
    pub workdir: String,
    /// Environment for every exec (on top of the minimal default).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Limits.
    #[serde(default)]
    pub resources: Resources,
    /// Network access.
    #[serde(default)]
    pub network: NetworkMode,
    /// Host paths to mount.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// User to run execs as (`root` inside the sandbox by default). `name`, `uid` or `uid:gid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Destroy the sandbox this long after creation.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_secs")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub ttl: Option<Duration>,
}

impl Default for SandboxSpec {
    fn default() -> Self {
        SandboxSpec {
            name: None,
            driver: String::new(),
            rootfs: None,
            image: None,
            runtime: None,
            workdir: DEFAULT_WORKDIR.into(),
            env: BTreeMap::new(),
            resources: Resources::default(),
            network: NetworkMode::None,
            mounts: Vec::new(),
            user: None,
            labels: BTreeMap::new(),
            ttl: None,
        }
    }
}

/// A directory the sandbox gets (workdir, mount target): not `/` and not inside the kernel's own
/// file systems, which the sandbox's `/proc`, `/sys` and `/dev` cover.
fn check_sandbox_path(field: &str, path: &std::path::Path) -> Result<()> {
    use std::path::Component;
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(Error::invalid(
            field,
            format!("{}: must not contain . or ..", path.display()),
        ));
    }
    let first = path.components().find_map(|c| match c {
        Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
        _ => None,
    });
    match first.as_deref() {
        None => Err(Error::invalid(field, "must not be / itself")),
        Some("proc" | "sys" | "dev") => Err(Error::invalid(
            field,
            format!(
                "{}: /proc, /sys and /dev belong to the sandbox's kernel views",
                path.display()
            ),
        )),
        Some(_) => Ok(()),
    }
}

impl SandboxSpec {
    /// Checks what can be checked without a driver; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        if self
            .user
            .as_deref()
            .is_some_and(|u| u.is_empty() || u.contains('\0'))
        {
            return Err(Error::invalid("user", "must be a name, uid or uid:gid"));
        }
        if !self.workdir.starts_with('/') {
            return Err(Error::invalid(
                "workdir",
                format!("{:?} must be an absolute path", self.workdir),
            ));
        }
        check_sandbox_path("workdir", std::path::Path::new(&self.workdir))?;
        if let Some(image) = &self.image {
            let ok = !image.is_empty()
                && image.len() <= 255
                && image.starts_with(|c: char| c.is_ascii_alphanumeric())
                && image
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c));
            if !ok {
                return Err(Error::invalid(
                    "image",
                    format!("{image:?} is not an image reference like debian:bookworm or registry:5000/team/app@sha256:..."),
                ));
            }
        }
        if self.ttl == Some(Duration::ZERO) {
            return Err(Error::invalid("ttl", "must be positive"));
        }
        for key in self.env.keys() {
            validate_env_key(key)?;
        }
        if let Some(rootfs) = &self.rootfs {
            if !rootfs.is_absolute() {
                return Err(Error::invalid(
                    "rootfs",
                    format!("{} must be an absolute path", rootfs.display()),
                ));
            }
        }
        let r = &self.resources;
        if r.memory_bytes.is_some_and(|m| m < 4 << 20) {
            return Err(Error::invalid("memory", "must be at least 4m"));
        }
        // The kernel's smallest CFS quota is 1 ms per 100 ms period: 0.01 CPU.
        if r.millicpus.is_some_and(|m| m < 10) {
            return Err(Error::invalid("cpus", "must be at least 0.01"));
        }
        if r.pids == Some(0) {
            return Err(Error::invalid("pids", "must be at least 1"));
        }
        // The kernel's own ceiling on pids (PID_MAX_LIMIT).
        if r.pids.is_some_and(|p| p > 1 << 22) {
            return Err(Error::invalid("pids", "must be at most 4194304"));
        }
        if r.disk_bytes.is_some_and(|d| d < 1 << 20) {
            return Err(Error::invalid("disk", "must be at least 1m"));
        }
        // ext4's largest file (4 KiB blocks), which the disk image is.
        if r.disk_bytes.is_some_and(|d| d > 16 << 40) {
            return Err(Error::invalid("disk", "must be at most 16t"));
        }
        if r.open_files.is_some_and(|n| !(16..=1 << 20).contains(&n)) {
            return Err(Error::invalid("open-files", "must be between 16 and 1048576"));
        }
        if r.file_size_bytes == Some(0) {
            return Err(Error::invalid("file-size", "must be more than 0"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.mounts {
            if !m.host.is_absolute() || !m.sandbox.is_absolute() {
                return Err(Error::invalid(
                    "volume",
                    format!("{}: paths must be absolute", m.host.display()),
                ));
            }
            if m.sandbox
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(Error::invalid(
                    "volume",
                    format!("{}: must not contain ..", m.sandbox.display()),
                ));
            }
            check_sandbox_path("volume", &m.sandbox)?;
            if !seen.insert(&m.sandbox) {
                return Err(Error::invalid(
                    "volume",
                    format!("{} is mounted twice", m.sandbox.display()),
                ));
            }
        }
        for key in self.labels.keys() {
            if key.is_empty() || key.contains('=') {
                return Err(Error::invalid(
                    "label",
                    format!("{key:?}: keys must be non-empty and without '='"),
                ));
            }
        }
        Ok(())
    }
}

/// Names: 1–63 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit, and not an id's shape.
pub fn validate_name(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    let ok_start = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 63 || !ok_chars || !ok_start {
        return Err(Error::invalid(
            "name",
            format!("{name:?}: use 1-63 characters of letters, digits, '_', '.', '-', starting with a letter or digit"),
        ));
    }
    if SandboxId::parse(name).is_ok() {
        return Err(Error::invalid(
            "name",
            format!("{name:?} looks like a sandbox id; pick another name"),
        ));
    }
    Ok(())
}

/// Environment keys: non-empty, no `=` and no NUL.
pub fn validate_env_key(key: &str) -> Result<()> {
    if key.is_empty() || key.contains('=') || key.contains('\0') {
        return Err(Error::invalid(
            "env",
            format!("{key:?} is not a valid variable name"),
        ));
    }
    Ok(())
}

/// Where a coding-agent task stands: `running` while it runs, then how it ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Running,
    /// The agent exited 0.
    Succeeded,
    /// The agent exited non-zero.
    Failed,
    /// The task's timeout passed and the agent was killed.
    TimedOut,
    /// Stockade could not run it (a sandbox, an install, the code).
    Error,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::TimedOut => "timed_out",
            TaskStatus::Error => "error",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Lifecycle: creating → running ⇄ stopped → destroyed, running ⇄ paused, and lost when the
/// backend vanished.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxStatus {
    Creating,
    Running,
    Stopped,
    Destroyed,
    /// The supervisor (or container) is gone without being stopped.
    Lost,
    /// Frozen by `pause`: its processes and memory are kept and get no CPU until `resume`.
    Paused,
}

impl SandboxStatus {
    /// Execs, files and stats need a running sandbox.
    pub fn can_exec(self) -> bool {
        self == SandboxStatus::Running
    }
    /// A running or paused sandbox can be stopped.
    pub fn can_stop(self) -> bool {
        matches!(self, SandboxStatus::Running | SandboxStatus::Paused)
    }
    /// The status a pause (`frozen`) or a resume leaves sandbox `id` in, from this one: only a
    /// running sandbox can be paused, only a paused one resumed; anything else is `WrongState`.
    pub fn after_freeze(self, id: &SandboxId, frozen: bool) -> Result<SandboxStatus> {
        let (from, to, operation) = if frozen {
            (SandboxStatus::Running, SandboxStatus::Paused, "pause")
        } else {
            (SandboxStatus::Paused, SandboxStatus::Running, "resume")
        };
        if self != from {
            return Err(Error::WrongState {
                id: id.to_string(),
                status: self.to_string(),
                operation: operation.into(),
                needed: from.to_string(),
            });
        }
        Ok(to)
    }
    /// A stopped or lost sandbox can be started again (its files are kept).
    pub fn can_start(self) -> bool {
        matches!(self, SandboxStatus::Stopped | SandboxStatus::Lost)
    }
    /// Anything not already destroyed can be destroyed.
    pub fn can_destroy(self) -> bool {
        self != SandboxStatus::Destroyed
    }
    /// The status as a lowercase word.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxStatus::Creating => "creating",
            SandboxStatus::Running => "running",
            SandboxStatus::Stopped => "stopped",
            SandboxStatus::Destroyed => "destroyed",
            SandboxStatus::Lost => "lost",
            SandboxStatus::Paused => "paused",
        }
    }
}

impl fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What `ls` and `inspect` show.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub id: SandboxId,
    pub name: String,
    pub driver: String,
    pub status: SandboxStatus,
    /// Unix seconds.
    pub created_at: u64,
    pub spec: SandboxSpec,
    /// Driver-specific facts (pids, paths, active hardening); shown by `inspect`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: serde_json::Map<String, serde_json::Value>,
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let secs: Option<f64> = Option::deserialize(d)?;
        Ok(secs
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The docs can only write the number: they must write this one.
    #[test]
    fn docs_name_the_default_pids() {
        for doc in ["README.md", "SECURITY.md"] {
            let text =
                std::fs::read_to_string(format!("{}/../../{doc}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            let said = format!("`--pids` (default {DEFAULT_PIDS})");
            assert!(text.contains(&said), "{doc} does not say {said}");
            let other = text.matches("`--pids` (default ").count();
            assert_eq!(
                text.matches(&said).count(),
                other,
                "{doc} names another default for --pids"
            );
        }
    }

    #[test]
    fn mount_parse_forms() {
        let m = Mount::parse("/a:/b:ro").unwrap();
        assert!(m.read_only);
        assert_eq!(m.sandbox, PathBuf::from("/b"));
        assert!(!Mount::parse("/a:/b").unwrap().read_only);
        assert!(Mount::parse("a:/b")
            .unwrap_err()
            .to_string()
            .contains("must be absolute"));
        assert!(Mount::parse("/a:/b:xx")
            .unwrap_err()
            .to_string()
            .contains("\"ro\""));
        assert!(Mount::parse("/a").is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("web-1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("0123456789ab").is_err());
    }

    #[test]
    fn spec_validation_names_fields() {
        let spec = SandboxSpec {
            workdir: "rel".into(),
            ..Default::default()
        };
        assert!(spec
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("invalid workdir"));
        let mut spec = SandboxSpec::default();
        spec.resources.memory_bytes = Some(10);
        assert!(spec
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("invalid memory"));
    }

    #[test]
    fn status_guards() {
        assert!(SandboxStatus::Running.can_exec());
        assert!(!SandboxStatus::Stopped.can_exec());
        assert!(SandboxStatus::Lost.can_start());
        assert!(!SandboxStatus::Destroyed.can_destroy());
    }

    #[test]
    fn spec_json_round_trip() {
        let mut spec = SandboxSpec {
            ttl: Some(Duration::from_secs(90)),
            ..Default::default()
        };
        spec.env.insert("A".into(), "1".into());
        let json = serde_json::to_string(&spec).unwrap();
        let back: SandboxSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(spec, back);
    }
}
