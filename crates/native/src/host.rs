//! What this host supports, for `stockade info`.

use serde::Serialize;

use crate::cgroup::CgroupHost;

/// Host capabilities relevant to the native driver.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub kernel: String,
    pub running_as_root: bool,
    /// Namespace kinds this kernel has (`/proc/self/ns/*`).
    pub namespaces: Vec<String>,
    pub user_namespaces: Result<(), String>,
    pub cgroup: String,
    pub cgroup_detail: String,
    /// Whether a cgroup2 mount has `favordynmods`. Without it, moving a process into a cgroup (which
    /// every sandbox start does) waits an RCU grace period when no move happened in the last one:
    /// ~7–11 ms on a quiet 2-vCPU VM, more than the rest of a start. The option is global.
    pub cgroup_favordynmods: Option<bool>,
    /// Landlock ABI version, if the kernel has landlock enabled.
    pub landlock_abi: Option<u32>,
    pub seccomp: bool,
    pub overlayfs: bool,
    pub native_driver_usable: Result<(), String>,
}

/// Probes the host.
pub fn report() -> HostReport {
    let kernel = nix::sys::utsname::uname()
        .map(|u| {
            format!(
                "{} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy()
            )
        })
        .unwrap_or_default();
    let mut namespaces: Vec<String> = std::fs::read_dir("/proc/self/ns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    namespaces.sort();
    let cg = CgroupHost::detect();
    let cgroup_detail = match &cg {
        CgroupHost::V2 { root } => format!("unified hierarchy at {}", root.display()),
        CgroupHost::V1 {
            memory, pids, cpu, ..
        } => {
            format!(
                "v1 controllers: {}, {}, {}",
                memory.display(),
                pids.display(),
                cpu.display()
            )
        }
        CgroupHost::None { reason } => reason.clone(),
    };
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlayfs = filesystems.lines().any(|l| l.trim_end().ends_with("overlay"));
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Seccomp:"));
    let user_namespaces = crate::driver::user_namespaces_available();
    let native_driver_usable = match (&user_namespaces, overlayfs) {
        (Err(e), _) => Err(e.clone()),
        (_, false) => Err("overlayfs is not available".into()),
        _ => Ok(()),
    };
    HostReport {
        kernel,
        running_as_root: nix::unistd::geteuid().is_root(),
        namespaces,
        user_namespaces,
        cgroup: cg.version().into(),
        cgroup_detail,
        cgroup_favordynmods: favordynmods(&std::fs::read_to_string("/proc/self/mounts").unwrap_or_default()),
        landlock_abi: landlock_abi(),
        seccomp,
        overlayfs,
        native_driver_usable,
    }
}

/// `Some(true)` when a cgroup2 mount in `mounts` (as `/proc/self/mounts` reads) has
/// `favordynmods`, `Some(false)` when none has, `None` when there is no cgroup2 mount.
pub fn favordynmods(mounts: &str) -> Option<bool> {
    let cgroup2: Vec<&str> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| f.get(3).copied().unwrap_or(""))
        })
        .collect();
    if cgroup2.is_empty() {
        return None;
    }
    Some(
        cgroup2
            .iter()
            .any(|opts| opts.split(',').any(|o| o == "favordynmods")),
    )
}

/// Landlock ABI version offered by the kernel, `None` when landlock is off.
pub fn landlock_abi() -> Option<u32> {
    stockade_sys::landlock_abi()
}

#[cfg(test)]
mod tests {
    #[test]
    fn favordynmods_is_read_from_the_mount_table() {
        let on = "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime,favordynmods 0 0\n";
        let off = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n";
        assert_eq!(super::favordynmods(on), Some(true));
        assert_eq!(super::favordynmods(off), Some(false));
        assert_eq!(super::favordynmods("proc /proc proc rw 0 0\n"), None);
    }
}
