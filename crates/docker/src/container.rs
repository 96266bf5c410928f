//! From a `SandboxSpec` to the engine's container config: limits, a read-only root with tmpfs
//! `/tmp` and a writable `/workspace`, no capabilities for anything the user runs,
//! no-new-privileges, the engine's default seccomp profile, and the Stockade agent as init.
//!
//! Pure functions: everything the host decides (paths, owner, ulimits) comes in as arguments.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use stockade_core::sandbox::DEFAULT_PIDS;
use stockade_core::{NetworkMode, SandboxId, SandboxSpec};

/// Where the agent binary is mounted inside every container.
pub const AGENT_PATH: &str = "/.stockade/agent";
/// The directory (shared with the host) where the agent puts its socket.
pub const RUN_DIR: &str = "/.stockade/run";
/// The agent's socket inside the container.
pub const SOCKET_PATH: &str = "/.stockade/run/agent.sock";

/// Labels every Stockade container and network carries.
pub const LABEL_ID: &str = "stockade.id";
pub const LABEL_OWNER: &str = "stockade.owner";
pub const LABEL_NAME: &str = "stockade.name";

/// The capabilities the agent (and only the agent) keeps: enough to switch to the exec's user
/// and to empty the bounding set before anything runs. Every exec'd process gets none.
pub const AGENT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETUID",
    "SETGID",
    "SETPCAP",
    "KILL",
];

/// What the host decided for one container.
#[derive(Debug, Clone)]
pub struct HostSide {
    pub id: SandboxId,
    /// `hostname:STOCKADE_HOME`, so two homes on one engine never collect each other's garbage.
    pub owner: String,
    /// Host path of the static agent binary.
    pub agent: PathBuf,
    /// Host directory mounted at [`RUN_DIR`].
    pub run_dir: PathBuf,
    /// Host directory mounted at the workdir (unless a user mount covers it).
    pub workspace: PathBuf,
    /// Host directory mounted at `/root`, so root's home survives stop and start.
    pub root_home: PathBuf,
    /// Network to join when the spec asks for `full`.
    pub network: Option<String>,
    /// The engine's own hard limits: containers get at most these.
    pub limits: crate::engine::EngineLimits,
}

/// The container's name for a sandbox id.
pub fn container_name(id: &SandboxId) -> String {
    format!("stockade-{id}")
}

fn bind(source: &std::path::Path, target: &str, read_only: bool) -> Mount {
    Mount {
        target: Some(target.to_owned()),
        source: Some(source.display().to_string()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// The create request for `spec`.
pub fn create_body(spec: &SandboxSpec, image: &str, host: &HostSide) -> ContainerCreateBody {
    let mut config = stockade_proto::AgentConfig::for_spec(spec, None);
    let mut labels: HashMap<String, String> =
        spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.insert(LABEL_ID.into(), host.id.to_string());
    labels.insert(LABEL_OWNER.into(), host.owner.clone());
    if let Some(name) = &spec.name {
        labels.insert(LABEL_NAME.into(), name.clone());
    }

    let mut mounts = vec![
        bind(&host.agent, AGENT_PATH, true),
        bind(&host.run_dir, RUN_DIR, false),
    ];
    let workdir_covered = spec
        .mounts
        .iter()
        .any(|m| m.sandbox == std::path::Path::new(&spec.workdir));
    if !workdir_covered {
        mounts.push(bind(&host.workspace, &spec.workdir, false));
        config.own_workdir = true;
    }
    // Root's home, unless a mount (or the workdir itself) is already there.
    if spec.workdir.trim_end_matches('/') != "/root"
        && !spec
            .mounts
            .iter()
            .any(|m| m.sandbox == std::path::Path::new("/root"))
    {
        mounts.push(bind(&host.root_home, "/root", false));
    }
    mounts.extend(
        spec.mounts
            .iter()
            .map(|m| bind(&m.host, &m.sandbox.display().to_string(), m.read_only)),
    );

    let config_json = serde_json::to_string(&config).unwrap_or_default();
    let r = &spec.resources;
    let memory = r.memory_bytes.map(|m| m as i64);
    let nofile = r
        .open_files
        .unwrap_or(stockade_proto::config::DEFAULT_MAX_OPEN_FILES)
        .min(host.limits.nofile.unwrap_or(u64::MAX)) as i64;
    let mut ulimits = vec![ResourcesUlimits {
        name: Some("nofile".into()),
        soft: Some(nofile),
        hard: Some(nofile),
    }];
    // Left alone when the engine has no limit; set to the engine's own when it has one.
    if let Some(nproc) = host.limits.nproc {
        ulimits.push(ResourcesUlimits {
            name: Some("nproc".into()),
            soft: Some(nproc as i64),
            hard: Some(nproc as i64),
        });
    }
    let tmpfs = HashMap::from([("/tmp".to_owned(), "rw,nosuid,nodev,mode=1777".to_owned())]);
    let host_config = HostConfig {
        mounts: Some(mounts),
        readonly_rootfs: Some(true),
        tmpfs: Some(tmpfs),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(AGENT_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()),
        security_opt: Some(vec!["no-new-privileges".into()]),
        memory,
        // No swap on top of the memory limit.
        memory_swap: memory,
        nano_cpus: r.millicpus.map(|m| i64::from(m) * 1_000_000),
        pids_limit: Some(i64::from(r.pids.unwrap_or(DEFAULT_PIDS))),
        ulimits: Some(ulimits),
        network_mode: Some(match (&spec.network, &host.network) {
            (NetworkMode::Full, Some(net)) => net.clone(),
            _ => "none".into(),
        }),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        runtime: spec.runtime.clone(),
        init: Some(false),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.to_owned()),
        hostname: Some(format!("sb-{}", host.id)),
        entrypoint: Some(vec![
            AGENT_PATH.into(),
            "init".into(),
            "--listen".into(),
            SOCKET_PATH.into(),
        ]),
        cmd: Some(Vec::new()),
        // The agent clears this from its own environment; execs get only what the spec says.
        env: Some(vec![format!("{}={config_json}", stockade_proto::CONFIG_ENV)]),
        working_dir: Some("/".into()),
        user: Some("0:0".into()),
        labels: Some(labels),
        host_config: Some(host_config),
        stop_timeout: Some(2),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockade_core::Resources;

    fn host() -> HostSide {
        HostSide {
            id: SandboxId::parse("0123456789ab").unwrap(),
            owner: "h:/var/lib/stockade".into(),
            agent: "/usr/local/bin/stockade-agent".into(),
            run_dir: "/var/lib/stockade/docker/0123456789ab/run".into(),
            workspace: "/var/lib/stockade/docker/0123456789ab/workspace".into(),
            root_home: "/var/lib/stockade/docker/0123456789ab/root".into(),
            network: None,
            limits: crate::engine::EngineLimits {
                nofile: Some(20000),
                nproc: Some(9000),
            },
        }
    }

    #[test]
    fn strict_defaults() {
        let body = create_body(&SandboxSpec::default(), "img", &host());
        let hc = body.host_config.unwrap();
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_owned()]));
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.pids_limit, Some(i64::from(DEFAULT_PIDS)));
        assert!(hc.tmpfs.unwrap().contains_key("/tmp"));
        let targets: Vec<String> = hc.mounts.unwrap().into_iter().filter_map(|m| m.target).collect();
        assert_eq!(targets, [AGENT_PATH, RUN_DIR, "/workspace", "/root"]);
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_ID], "0123456789ab");
        assert_eq!(labels[LABEL_OWNER], "h:/var/lib/stockade");
        // The default 65536 open files is cut to what the host allows.
        let ulimits = hc.ulimits.unwrap();
        assert_eq!(ulimits[0].hard, Some(20000));
    }

    #[test]
    fn a_workdir_at_roots_home_is_mounted_once() {
        let spec = SandboxSpec {
            workdir: "/root".into(),
            ..Default::default()
        };
        let hc = create_body(&spec, "img", &host()).host_config.unwrap();
        let targets: Vec<String> = hc.mounts.unwrap().into_iter().filter_map(|m| m.target).collect();
        assert_eq!(
            targets,
            [AGENT_PATH, RUN_DIR, "/root"],
            "the workspace is root's home"
        );
    }

    #[test]
    fn limits_map_to_engine_units() {
        let spec = SandboxSpec {
            resources: Resources {
                memory_bytes: Some(256 << 20),
                millicpus: Some(1500),
                pids: Some(64),
                ..Default::default()
            },
            runtime: Some("runsc".into()),
            ..Default::default()
        };
        let hc = create_body(&spec, "img", &host()).host_config.unwrap();
        assert_eq!(hc.memory, Some(256 << 20));
        assert_eq!(hc.memory_swap, Some(256 << 20));
        assert_eq!(hc.nano_cpus, Some(1_500_000_000));
        assert_eq!(hc.pids_limit, Some(64));
        assert_eq!(hc.runtime.as_deref(), Some("runsc"));
    }

    #[test]
    fn a_user_mount_on_the_workdir_replaces_the_workspace() {
        let spec = SandboxSpec {
            mounts: vec![stockade_core::Mount::parse("/src:/workspace").unwrap()],
            ..Default::default()
        };
        let hc = create_body(&spec, "img", &host()).host_config.unwrap();
        let sources: Vec<String> = hc.mounts.unwrap().into_iter().filter_map(|m| m.source).collect();
        assert_eq!(sources.last().map(String::as_str), Some("/src"));
        assert!(!sources
            .iter()
            .any(|s| s.ends_with("/workspace") && s.contains("docker")));
    }
}
