//! Finding and describing a container engine that speaks the Docker Engine API: Docker, Podman,
//! OrbStack, Colima, or whatever `DOCKER_HOST` names.
//!
//! Discovery order (the first socket that answers a ping wins):
//! 1. `DOCKER_HOST` (or Podman's `CONTAINER_HOST`) when set: used alone, never second-guessed;
//! 2. `/var/run/docker.sock` (Docker Engine, rootful);
//! 3. `/run/podman/podman.sock` (Podman, rootful);
//! 4. `$XDG_RUNTIME_DIR/podman/podman.sock` (Podman, rootless);
//! 5. `~/.orbstack/run/docker.sock` (OrbStack);
//! 6. `~/.colima/default/docker.sock`, then `~/.colima/docker.sock` (Colima).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::{ClientVersion, Docker};
use serde::Serialize;
use stockade_core::{Error, Result};

/// The API version Stockade speaks: Docker 20.10 and Podman 4's compat API both serve it, and
/// pinning it saves a version negotiation round trip on every command.
pub const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// How long one engine API call may take before it is an error (image builds and pulls stream
/// and are not bound by it).
const API_TIMEOUT_SECS: u64 = 120;

/// Which engines a caller accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Whatever answers first, in the documented order.
    Any,
    /// Podman's sockets only (`--driver podman`).
    Podman,
}

/// A place an engine may listen, and why we looked there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `unix:///path`, `tcp://host:port`, ...
    pub endpoint: String,
    /// `DOCKER_HOST`, `Docker socket`, ...
    pub source: &'static str,
}

/// The candidates in discovery order for this environment.
pub fn candidates(flavor: Flavor, env: &dyn Fn(&str) -> Option<String>, uid: u32) -> Vec<Candidate> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    let home = set("HOME").map(PathBuf::from);
    let runtime_dir = set("XDG_RUNTIME_DIR").unwrap_or_else(|| format!("/run/user/{uid}"));
    let unix = |p: &Path| format!("unix://{}", p.display());
    let mut out = Vec::new();
    if flavor == Flavor::Podman {
        if let Some(h) = set("CONTAINER_HOST") {
            return vec![Candidate {
                endpoint: h,
                source: "CONTAINER_HOST",
            }];
        }
    } else if let Some(h) = set("DOCKER_HOST") {
        return vec![Candidate {
            endpoint: h,
            source: "DOCKER_HOST",
        }];
    }
    if flavor == Flavor::Any {
        out.push(Candidate {
            endpoint: "unix:///var/run/docker.sock".into(),
            source: "Docker socket",
        });
    }
    out.push(Candidate {
        endpoint: "unix:///run/podman/podman.sock".into(),
        source: "Podman socket (rootful)",
    });
    out.push(Candidate {
        endpoint: unix(&Path::new(&runtime_dir).join("podman/podman.sock")),
        source: "Podman socket (rootless)",
    });
    if flavor == Flavor::Any {
        if let Some(home) = &home {
            out.push(Candidate {
                endpoint: unix(&home.join(".orbstack/run/docker.sock")),
                source: "OrbStack socket",
            });
            out.push(Candidate {
                endpoint: unix(&home.join(".colima/default/docker.sock")),
                source: "Colima socket",
            });
            out.push(Candidate {
                endpoint: unix(&home.join(".colima/docker.sock")),
                source: "Colima socket",
            });
        }
    }
    out
}

/// A connected engine.
#[derive(Debug, Clone)]
pub struct Engine {
    pub client: Docker,
    pub endpoint: String,
    /// Why this endpoint was chosen.
    pub source: String,
}

/// The local path of a `unix://` endpoint (or a bare path).
pub fn socket_path(endpoint: &str) -> Option<&Path> {
    match endpoint.strip_prefix("unix://") {
        Some(p) => Some(Path::new(p)),
        None if endpoint.starts_with('/') => Some(Path::new(endpoint)),
        None => None,
    }
}

fn engine_err(endpoint: &str, e: impl std::fmt::Display) -> Error {
    Error::backend(format!("container engine at {endpoint}"), e)
}

impl Engine {
    /// A client for `endpoint`, without talking to it yet.
    pub fn connect(endpoint: &str, source: &str) -> Result<Engine> {
        let client = if let Some(path) = socket_path(endpoint) {
            Docker::connect_with_unix(&path.to_string_lossy(), API_TIMEOUT_SECS, &API_VERSION)
        } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
            Docker::connect_with_http(endpoint, API_TIMEOUT_SECS, &API_VERSION)
        } else {
            return Err(Error::invalid(
                "DOCKER_HOST",
                format!("{endpoint:?}: expected unix:///path/to/socket or tcp://host:port"),
            ));
        }
        .map_err(|e| engine_err(endpoint, e))?;
        Ok(Engine {
            client,
            endpoint: endpoint.to_owned(),
            source: source.to_owned(),
        })
    }

    /// Finds the first engine that answers, in the documented order; `env` is the caller's
    /// environment (`DOCKER_HOST`, `CONTAINER_HOST`, `XDG_RUNTIME_DIR`, `HOME`).
    pub async fn discover(
        flavor: Flavor,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<Engine> {
        let env = |k: &str| env.get(k).cloned();
        let mut tried = Vec::new();
        for c in candidates(flavor, &env, nix::unistd::geteuid().as_raw()) {
            if let Some(path) = socket_path(&c.endpoint) {
                if !path.exists() {
                    tried.push(format!("{} ({}): no such socket", path.display(), c.source));
                    continue;
                }
            }
            let engine = Engine::connect(&c.endpoint, c.source)?;
            match tokio::time::timeout(Duration::from_secs(5), engine.client.ping()).await {
                Ok(Ok(_)) => return Ok(engine),
                Ok(Err(e)) => tried.push(format!("{} ({}): {}", c.endpoint, c.source, short(&e))),
                Err(_) => tried.push(format!("{} ({}): no answer in 5 s", c.endpoint, c.source)),
            }
        }
        let what = if flavor == Flavor::Podman {
            "Podman"
        } else {
            "container"
        };
        Err(Error::unsupported(
            if flavor == Flavor::Podman { "podman" } else { "docker" },
            "sandboxes",
            format!(
                "no {what} engine is running. Tried: {}. Start one (Docker: `dockerd &` or `systemctl start docker`; \
                 Podman: `podman system service --time=0 &`), or point DOCKER_HOST at one",
                tried.join("; ")
            ),
        ))
    }

    /// What `stockade info` shows about the engine.
    pub async fn facts(&self) -> Result<EngineFacts> {
        let (version, info) = tokio::join!(self.client.version(), self.client.info());
        let version = version.map_err(|e| engine_err(&self.endpoint, e))?;
        let info = info.map_err(|e| engine_err(&self.endpoint, e))?;
        let components: Vec<String> = version
            .components
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect();
        let kind = if components.iter().any(|c| c.contains("Podman")) {
            "podman"
        } else if self.endpoint.contains(".orbstack") {
            "orbstack"
        } else if self.endpoint.contains(".colima") {
            "colima"
        } else {
            "docker"
        };
        let mut facts = facts_from_info(info);
        facts.kind = kind.into();
        facts.endpoint = self.endpoint.clone();
        facts.found_by = self.source.clone();
        facts.version = version.version.unwrap_or_default();
        facts.api_version = version.api_version.unwrap_or_default();
        Ok(facts)
    }

    /// The runtimes and defaults only: one API call, what `create` needs to plan a container.
    pub async fn runtime_facts(&self) -> Result<EngineFacts> {
        let info = self
            .client
            .info()
            .await
            .map_err(|e| engine_err(&self.endpoint, e))?;
        let mut facts = facts_from_info(info);
        facts.endpoint = self.endpoint.clone();
        facts.found_by = self.source.clone();
        Ok(facts)
    }
}

fn facts_from_info(info: bollard::models::SystemInfo) -> EngineFacts {
    {
        let mut runtimes: Vec<RuntimeFacts> = info
            .runtimes
            .unwrap_or_default()
            .into_iter()
            .map(|(name, r)| RuntimeFacts {
                name,
                path: r.path.unwrap_or_default(),
                args: r.runtime_args.unwrap_or_default(),
            })
            .collect();
        runtimes.sort_by(|a, b| a.name.cmp(&b.name));
        EngineFacts {
            kind: String::new(),
            endpoint: String::new(),
            found_by: String::new(),
            version: info.server_version.unwrap_or_default(),
            api_version: String::new(),
            default_runtime: info.default_runtime.unwrap_or_else(|| "runc".into()),
            runtimes,
            cgroup_version: info.cgroup_version.map(|v| v.to_string()).unwrap_or_default(),
            storage_driver: info.driver.unwrap_or_default(),
            security_options: info.security_options.unwrap_or_default(),
        }
    }
}

/// Hard `RLIMIT_NOFILE` and `RLIMIT_NPROC` of the engine's own process (`None`: unlimited or
/// unknown). A container cannot be given more than its engine has without `CAP_SYS_RESOURCE`,
/// and Podman asks for more than it has unless told a number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineLimits {
    pub nofile: Option<u64>,
    pub nproc: Option<u64>,
}

/// Reads [`EngineLimits`] of the process listening on the local socket `endpoint`, found by
/// the socket's peer credentials. Falls back to this process's own limits.
pub fn local_engine_limits(endpoint: &str) -> EngineLimits {
    let peer_pid = socket_path(endpoint).and_then(|path| {
        let stream = std::os::unix::net::UnixStream::connect(path).ok()?;
        let cred = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials).ok()?;
        Some(cred.pid())
    });
    let limits = peer_pid
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/limits")).ok())
        .or_else(|| std::fs::read_to_string("/proc/self/limits").ok())
        .unwrap_or_default();
    parse_limits(&limits)
}

/// The hard limits of `Max open files` and `Max processes` in a `/proc/PID/limits` text.
pub fn parse_limits(text: &str) -> EngineLimits {
    let hard = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().nth(1).map(str::to_owned))
            .and_then(|v| v.parse::<u64>().ok())
    };
    EngineLimits {
        nofile: hard("Max open files"),
        nproc: hard("Max processes"),
    }
}

/// An engine error without bollard's nesting.
pub fn short(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// What the engine says about itself.
#[derive(Debug, Clone, Serialize)]
pub struct EngineFacts {
    /// `docker`, `podman`, `orbstack`, `colima`.
    pub kind: String,
    pub endpoint: String,
    pub found_by: String,
    pub version: String,
    pub api_version: String,
    pub default_runtime: String,
    pub runtimes: Vec<RuntimeFacts>,
    pub cgroup_version: String,
    pub storage_driver: String,
    pub security_options: Vec<String>,
}

/// One OCI runtime the engine knows.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeFacts {
    pub name: String,
    pub path: String,
    pub args: Vec<String>,
}

impl RuntimeFacts {
    /// gVisor, whatever name it was registered under.
    pub fn is_gvisor(&self) -> bool {
        self.name == "runsc" || self.path.ends_with("runsc")
    }

    /// gVisor with `--network=none` gives containers loopback only, whatever the engine's network.
    pub fn has_no_network(&self) -> bool {
        self.is_gvisor()
            && self
                .args
                .iter()
                .any(|a| a == "--network=none" || a == "-network=none")
    }

    /// gVisor lets the agent's socket reach the host only with `--host-uds=create` or `all`.
    pub fn blocks_host_sockets(&self) -> bool {
        self.is_gvisor()
            && !self.args.iter().any(|a| {
                let a = a.trim_start_matches('-');
                a == "host-uds=all" || a == "host-uds=create" || a == "fsgofer-host-uds"
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn docker_host_is_used_alone() {
        let c = candidates(Flavor::Any, &env_of(&[("DOCKER_HOST", "tcp://10.0.0.1:2375")]), 0);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].endpoint, "tcp://10.0.0.1:2375");
        assert_eq!(c[0].source, "DOCKER_HOST");
    }

    #[test]
    fn documented_order() {
        let c = candidates(
            Flavor::Any,
            &env_of(&[("HOME", "/home/u"), ("XDG_RUNTIME_DIR", "/run/user/7")]),
            7,
        );
        let endpoints: Vec<&str> = c.iter().map(|c| c.endpoint.as_str()).collect();
        assert_eq!(
            endpoints,
            [
                "unix:///var/run/docker.sock",
                "unix:///run/podman/podman.sock",
                "unix:///run/user/7/podman/podman.sock",
                "unix:///home/u/.orbstack/run/docker.sock",
                "unix:///home/u/.colima/default/docker.sock",
                "unix:///home/u/.colima/docker.sock",
            ]
        );
    }

    #[test]
    fn podman_flavor_ignores_docker_sockets() {
        let c = candidates(
            Flavor::Podman,
            &env_of(&[("DOCKER_HOST", "unix:///x.sock")]),
            1000,
        );
        let endpoints: Vec<&str> = c.iter().map(|c| c.endpoint.as_str()).collect();
        assert_eq!(
            endpoints,
            [
                "unix:///run/podman/podman.sock",
                "unix:///run/user/1000/podman/podman.sock"
            ]
        );
    }

    #[test]
    fn limits_parse() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max processes             32768                32768                processes \n\
Max open files            1024                 20000                files     \n";
        assert_eq!(
            parse_limits(text),
            EngineLimits {
                nofile: Some(20000),
                nproc: Some(32768)
            }
        );
        let unlimited = "Max processes             unlimited            unlimited            processes \n";
        assert_eq!(parse_limits(unlimited).nproc, None);
    }

    #[test]
    fn gvisor_flags() {
        let r = RuntimeFacts {
            name: "runsc".into(),
            path: "/usr/bin/runsc".into(),
            args: vec!["--platform=ptrace".into(), "--network=none".into()],
        };
        assert!(r.has_no_network());
        assert!(r.blocks_host_sockets());
        let r = RuntimeFacts {
            args: vec!["--host-uds=all".into()],
            ..r
        };
        assert!(!r.has_no_network());
        assert!(!r.blocks_host_sockets());
    }
}
