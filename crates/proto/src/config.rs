//! How the agent is configured at start: sandbox-wide exec defaults and the hardening every
//! exec'd process gets. Drivers build it; the agent applies it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The environment variable that carries [`AgentConfig`] as JSON; the agent removes it at start.
pub const CONFIG_ENV: &str = "STOCKADE_AGENT_CONFIG";

/// The `PATH` every exec gets unless the spec or request sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Sandbox-wide exec defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Default working directory.
    pub workdir: String,
    /// Environment from the sandbox spec.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Default user (`None` = root).
    #[serde(default)]
    pub user: Option<String>,
    /// `HOME` for execs that run as the default user (the sandbox's own home for that user).
    #[serde(default)]
    pub home: Option<String>,
    /// What is applied to every exec'd process.
    #[serde(default)]
    pub hardening: Hardening,
    /// As a container's init: give `workdir` to the default user at start (set when the
    /// workdir is the sandbox's own directory, never for a host directory the user mounted).
    #[serde(default)]
    pub own_workdir: bool,
    /// Limits the agent enforces itself on every exec, in a cgroup of its own: for VM guests,
    /// where the guest kernel is the sandbox's and no host cgroup sees its processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_limits: Option<ExecLimits>,
}

/// What [`AgentConfig::exec_limits`] caps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecLimits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u32>,
    /// Thousandths of a CPU.
    pub millicpus: Option<u32>,
    /// What the sandbox may write to the guest's root disk, in bytes: the rest of the disk's
    /// free space is allocated to a file the sandbox cannot see or remove.
    #[serde(default)]
    pub disk_bytes: Option<u64>,
}

/// Hardening for exec'd processes. The default is the strict set; drivers opt out explicitly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardening {
    /// Empty the capability bounding, inheritable and ambient sets, so even root has none.
    pub drop_capabilities: bool,
    /// `PR_SET_NO_NEW_PRIVS`: setuid binaries and file capabilities grant nothing.
    pub no_new_privs: bool,
    /// Install Stockade's seccomp deny-list.
    pub seccomp: bool,
    /// With landlock, the only places writes are allowed; `None` turns landlock off.
    pub landlock_writable: Option<Vec<String>>,
    /// `RLIMIT_NOFILE` (soft = hard).
    pub max_open_files: Option<u64>,
    /// `RLIMIT_FSIZE` in bytes (soft = hard).
    pub max_file_size: Option<u64>,
}

impl Default for Hardening {
    fn default() -> Self {
        Hardening {
            drop_capabilities: true,
            no_new_privs: true,
            seccomp: true,
            landlock_writable: Some(vec!["/workspace".into(), "/tmp".into(), "/dev/shm".into()]),
            max_open_files: Some(DEFAULT_MAX_OPEN_FILES),
            max_file_size: None,
        }
    }
}

/// Open files allowed per process unless the spec says otherwise.
pub const DEFAULT_MAX_OPEN_FILES: u64 = 65536;

impl AgentConfig {
    /// The configuration for a sandbox made from `spec`: its exec defaults, and the strict
    /// hardening with writes allowed (where landlock exists) in the workdir, `/root`, `/tmp`,
    /// `/dev/shm`, `user_home` (the default user's own home, when the driver made one) and the
    /// read-write mounts.
    pub fn for_spec(spec: &stockade_core::SandboxSpec, user_home: Option<String>) -> AgentConfig {
        let mut writable = vec![
            spec.workdir.clone(),
            "/root".into(),
            "/tmp".into(),
            "/dev/shm".into(),
        ];
        writable.extend(user_home.clone());
        writable.extend(
            spec.mounts
                .iter()
                .filter(|m| !m.read_only)
                .map(|m| m.sandbox.display().to_string()),
        );
        writable.dedup();
        AgentConfig {
            workdir: spec.workdir.clone(),
            env: spec.env.clone(),
            user: spec.user.clone(),
            home: user_home,
            own_workdir: false,
            exec_limits: None,
            hardening: Hardening {
                landlock_writable: Some(writable),
                max_open_files: Some(spec.resources.open_files.unwrap_or(DEFAULT_MAX_OPEN_FILES)),
                max_file_size: spec.resources.file_size_bytes,
                ..Default::default()
            },
        }
    }
}

/// Host device nodes bind-mounted into the sandbox's `/dev` (a user namespace cannot mknod).
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Kernel files hidden from the sandbox, as Docker hides them: files get `/dev/null` bound over
/// them, directories an empty read-only tmpfs. Missing ones are skipped.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/acpi",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Kernel paths made read-only, as Docker does.
pub const READ_ONLY_PATHS: &[&str] = &[
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
    "/proc/asound",
];
