//! Limits and usage through cgroups, on v2 hosts and on v1 hosts (including hybrids that mount a
//! v2 hierarchy at `/sys/fs/cgroup/unified` with no controllers in it, like this project's CI).
//! The limit values are computed as plain (file, value) pairs first, so they are unit-tested.

use std::fs;
use std::path::{Path, PathBuf};

use stockade_core::{Resources, Stats};

/// Which cgroup hierarchy this host gives us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupHost {
    /// Unified hierarchy with the memory, pids and cpu controllers, mounted at `root`.
    V2 { root: PathBuf },
    /// Per-controller hierarchies.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
        cpuacct: PathBuf,
        /// For pause (`freezer.state`); a host without it cannot pause sandboxes.
        freezer: Option<PathBuf>,
    },
    /// No usable cgroups (not root, or nothing mounted).
    None { reason: String },
}

const V1_BASE: &str = "/sys/fs/cgroup";

impl CgroupHost {
    /// Looks at `/sys/fs/cgroup`. Needs root to be usable.
    pub fn detect() -> Self {
        if !nix::unistd::geteuid().is_root() {
            return CgroupHost::None {
                reason: "not running as root".into(),
            };
        }
        for root in [V1_BASE, "/sys/fs/cgroup/unified"] {
            let controllers =
                fs::read_to_string(Path::new(root).join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            if has("memory") && has("pids") && has("cpu") {
                return CgroupHost::V2 { root: root.into() };
            }
        }
        let base = Path::new(V1_BASE);
        let find = |names: &[&str]| {
            names
                .iter()
                .map(|n| base.join(n))
                .find(|p| p.join("tasks").exists())
        };
        match (
            find(&["memory"]),
            find(&["pids"]),
            find(&["cpu", "cpu,cpuacct"]),
            find(&["cpuacct", "cpu,cpuacct"]),
        ) {
            (Some(memory), Some(pids), Some(cpu), Some(cpuacct)) => CgroupHost::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
                freezer: find(&["freezer"]),
            },
            _ => CgroupHost::None {
                reason: "no cgroup v2 controllers and no v1 memory/pids/cpu hierarchies".into(),
            },
        }
    }

    /// `v1`, `v2` or `none`.
    pub fn version(&self) -> &'static str {
        match self {
            CgroupHost::V2 { .. } => "v2",
            CgroupHost::V1 { .. } => "v1",
            CgroupHost::None { .. } => "none",
        }
    }

    /// Every directory a sandbox may have (one for v2, one per controller for v1); for lookups
    /// and cleanup, where missing ones are skipped.
    pub fn dirs_for(&self, id: &str) -> Vec<PathBuf> {
        self.dirs(id, true, true)
    }

    /// The directories `res` needs. On v1, a memory cgroup only with a memory limit and a cpu
    /// cgroup only with a CPU limit: each removed memory cgroup lingers in the kernel ("dying")
    /// until its page cache is reclaimed, and hundreds of them slow every later create. pids
    /// (default limit) and cpuacct (CPU time for stats) are cheap and always made.
    pub fn needed_dirs(&self, id: &str, res: &Resources) -> Vec<PathBuf> {
        self.dirs(id, res.memory_bytes.is_some(), res.millicpus.is_some())
    }

    fn dirs(&self, id: &str, memory_cgroup: bool, cpu_cgroup: bool) -> Vec<PathBuf> {
        let leaf = Path::new("stockade").join(id);
        match self {
            CgroupHost::V2 { root } => vec![root.join(&leaf)],
            CgroupHost::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
                freezer,
            } => {
                let mut dirs = vec![pids.join(&leaf), cpuacct.join(&leaf)];
                if let Some(freezer) = freezer {
                    dirs.push(freezer.join(&leaf));
                }
                if memory_cgroup {
                    dirs.push(memory.join(&leaf));
                }
                if cpu_cgroup && cpu != cpuacct {
                    dirs.push(cpu.join(&leaf));
                }
                dirs
            }
            CgroupHost::None { .. } => Vec::new(),
        }
    }

    /// The (file, value) writes that set `res`, relative to the host's controller roots.
    pub fn limit_writes(&self, id: &str, res: &Resources) -> Vec<(PathBuf, String)> {
        let leaf = Path::new("stockade").join(id);
        let mut w = Vec::new();
        const PERIOD: u64 = 100_000;
        match self {
            CgroupHost::V2 { root } => {
                let d = root.join(&leaf);
                if let Some(m) = res.memory_bytes {
                    w.push((d.join("memory.max"), m.to_string()));
                    w.push((d.join("memory.swap.max"), "0".into()));
                }
                if let Some(p) = res.pids {
                    w.push((d.join("pids.max"), p.to_string()));
                }
                if let Some(c) = res.millicpus {
                    w.push((
                        d.join("cpu.max"),
                        format!("{} {PERIOD}", u64::from(c) * PERIOD / 1000),
                    ));
                }
            }
            CgroupHost::V1 {
                memory, pids, cpu, ..
            } => {
                if let Some(m) = res.memory_bytes {
                    let d = memory.join(&leaf);
                    w.push((d.join("memory.limit_in_bytes"), m.to_string()));
                    // Only present with swap accounting; then memory+swap = memory means no swap.
                    if memory.join("memory.memsw.limit_in_bytes").exists() {
                        w.push((d.join("memory.memsw.limit_in_bytes"), m.to_string()));
                    }
                    w.push((d.join("memory.swappiness"), "0".into()));
                }
                if let Some(p) = res.pids {
                    w.push((pids.join(&leaf).join("pids.max"), p.to_string()));
                }
                if let Some(c) = res.millicpus {
                    let d = cpu.join(&leaf);
                    w.push((d.join("cpu.cfs_period_us"), PERIOD.to_string()));
                    w.push((
                        d.join("cpu.cfs_quota_us"),
                        (u64::from(c) * PERIOD / 1000).to_string(),
                    ));
                }
            }
            CgroupHost::None { .. } => {}
        }
        w
    }

    /// Creates the sandbox's cgroups and applies limits. On v2, enables the controllers on the way.
    pub fn create(&self, id: &str, res: &Resources) -> std::io::Result<Vec<PathBuf>> {
        if let CgroupHost::V2 { root } = self {
            let parent = root.join("stockade");
            fs::create_dir_all(&parent)?;
            for dir in [root.as_path(), parent.as_path()] {
                // Best effort: the root may already delegate these.
                let _ = fs::write(dir.join("cgroup.subtree_control"), "+memory +pids +cpu");
            }
        }
        let dirs = self.needed_dirs(id, res);
        for d in &dirs {
            fs::create_dir_all(d)?;
        }
        for (file, value) in self.limit_writes(id, res) {
            fs::write(&file, &value).map_err(|e| {
                std::io::Error::new(e.kind(), format!("write {value} to {}: {e}", file.display()))
            })?;
        }
        Ok(dirs)
    }
}

/// Freezes (or thaws) every process in a sandbox's cgroups `dirs`: v2's `cgroup.freeze`, v1's
/// freezer, whichever the sandbox has; returns once the kernel reports the state reached.
/// `Unsupported`-shaped error (`ErrorKind::Unsupported`) when the sandbox has no freezer.
pub fn freeze(dirs: &[PathBuf], frozen: bool) -> std::io::Result<()> {
    let (file, value, done): (PathBuf, &str, Box<dyn Fn() -> bool>) = if let Some(d) =
        dirs.iter().find(|d| d.join("cgroup.freeze").exists())
    {
        let events = d.join("cgroup.events");
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        (
            d.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
            Box::new(move || fs::read_to_string(&events).is_ok_and(|e| e.lines().any(|l| l == want))),
        )
    } else if let Some(d) = dirs.iter().find(|d| d.join("freezer.state").exists()) {
        let state = d.join("freezer.state");
        let want = if frozen { "FROZEN" } else { "THAWED" };
        let check = state.clone();
        (
            state,
            want,
            Box::new(move || fs::read_to_string(&check).is_ok_and(|s| s.trim() == want)),
        )
    } else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the sandbox has no freezer cgroup (the host has none, or the sandbox started before pause existed: stop and start it)",
        ));
    };
    fs::write(&file, value)
        .map_err(|e| std::io::Error::new(e.kind(), format!("write {value} to {}: {e}", file.display())))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        if std::time::Instant::now() > deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{} did not reach {value}", file.display()),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(())
}

/// Moves `pid` into every directory.
pub fn add_process(dirs: &[PathBuf], pid: i32) -> std::io::Result<()> {
    for d in dirs {
        fs::write(d.join("cgroup.procs"), pid.to_string())
            .map_err(|e| std::io::Error::new(e.kind(), format!("join {}: {e}", d.display())))?;
    }
    Ok(())
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn keyed(path: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Reads usage from the sandbox's cgroup directories.
pub fn stats(version: &str, dirs: &[PathBuf]) -> Option<Stats> {
    let find = |file: &str| dirs.iter().map(|d| d.join(file)).find(|p| p.exists());
    match version {
        "v2" => {
            let d = dirs.first()?;
            Some(Stats {
                cpu_usec: keyed(&d.join("cpu.stat"), "usage_usec").unwrap_or(0),
                memory_bytes: read_u64(&d.join("memory.current")).unwrap_or(0),
                memory_peak_bytes: read_u64(&d.join("memory.peak")).unwrap_or(0),
                pids: read_u64(&d.join("pids.current")).unwrap_or(0),
                source: "cgroup v2".into(),
            })
        }
        "v1" => Some(Stats {
            cpu_usec: find("cpuacct.usage").and_then(|p| read_u64(&p)).unwrap_or(0) / 1000,
            memory_bytes: find("memory.usage_in_bytes")
                .and_then(|p| read_u64(&p))
                .unwrap_or(0),
            memory_peak_bytes: find("memory.max_usage_in_bytes")
                .and_then(|p| read_u64(&p))
                .unwrap_or(0),
            pids: find("pids.current").and_then(|p| read_u64(&p)).unwrap_or(0),
            source: "cgroup v1".into(),
        }),
        _ => None,
    }
}

/// Times the memory controller OOM-killed something in this sandbox (v2 `memory.events`, v1
/// `memory.oom_control`).
pub fn oom_kills(version: &str, dirs: &[PathBuf]) -> u64 {
    let find = |file: &str| dirs.iter().map(|d| d.join(file)).find(|p| p.exists());
    match version {
        "v2" => find("memory.events")
            .and_then(|p| keyed(&p, "oom_kill"))
            .unwrap_or(0),
        "v1" => find("memory.oom_control")
            .and_then(|p| keyed(&p, "oom_kill"))
            .unwrap_or(0),
        _ => 0,
    }
}

/// Kills whatever is left in the cgroups and removes them. Retries while the kernel finishes
/// tearing processes down.
pub fn remove(dirs: &[PathBuf]) -> std::io::Result<()> {
    let mut last_err = None;
    for _ in 0..200 {
        last_err = None;
        for d in dirs {
            if !d.exists() {
                continue;
            }
            if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ =
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
                }
            }
            if let Err(e) = fs::remove_dir(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    last_err = Some(std::io::Error::new(
                        e.kind(),
                        format!("rmdir {}: {e}", d.display()),
                    ));
                }
            }
        }
        if last_err.is_none() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("cgroup removal did not finish")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res() -> Resources {
        Resources {
            memory_bytes: Some(512 << 20),
            millicpus: Some(1500),
            pids: Some(256),
            ..Default::default()
        }
    }

    #[test]
    fn v2_limits() {
        let host = CgroupHost::V2 { root: "/cg".into() };
        let w = host.limit_writes("abc", &res());
        let get = |f: &str| w.iter().find(|(p, _)| p.ends_with(f)).map(|(_, v)| v.as_str());
        assert_eq!(get("memory.max"), Some("536870912"));
        assert_eq!(get("memory.swap.max"), Some("0"));
        assert_eq!(get("pids.max"), Some("256"));
        assert_eq!(get("cpu.max"), Some("150000 100000"));
        assert!(w.iter().all(|(p, _)| p.starts_with("/cg/stockade/abc")));
    }

    #[test]
    fn v1_limits() {
        let host = CgroupHost::V1 {
            memory: "/nonexistent/memory".into(),
            pids: "/nonexistent/pids".into(),
            cpu: "/nonexistent/cpu".into(),
            cpuacct: "/nonexistent/cpuacct".into(),
            freezer: Some("/nonexistent/freezer".into()),
        };
        let w = host.limit_writes("abc", &res());
        let get = |f: &str| w.iter().find(|(p, _)| p.ends_with(f)).map(|(_, v)| v.as_str());
        assert_eq!(get("memory.limit_in_bytes"), Some("536870912"));
        assert_eq!(get("cpu.cfs_quota_us"), Some("150000"));
        assert_eq!(get("pids.max"), Some("256"));
        assert_eq!(host.dirs_for("abc").len(), 5);
        assert_eq!(host.needed_dirs("abc", &res()).len(), 5);
        let no_limits = host.needed_dirs("abc", &Resources::default());
        assert_eq!(
            no_limits.len(),
            3,
            "pids, cpuacct and freezer only: {no_limits:?}"
        );
        assert!(no_limits.iter().all(|d| !d.starts_with("/nonexistent/memory")));
    }

    #[test]
    fn no_limits_no_writes() {
        let host = CgroupHost::V2 { root: "/cg".into() };
        assert!(host.limit_writes("abc", &Resources::default()).is_empty());
    }
}
