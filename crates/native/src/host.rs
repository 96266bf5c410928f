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
    let native_driver_usable = match (&user_namespaces, overlayfs, crate::driver::find_agent()) {
        (Err(e), _, _) => Err(e.clone()),
        (_, false, _) => Err("overlayfs is not available".into()),
        (_, _, Err(e)) => Err(e.to_string()),
        _ => Ok(()),
    };
    HostReport {
        kernel,
        running_as_root: nix::unistd::geteuid().is_root(),
        namespaces,
        user_namespaces,
        cgroup: cg.version().into(),
        cgroup_detail,
        landlock_abi: landlock_abi(),
        seccomp,
        overlayfs,
        native_driver_usable,
    }
}

/// Landlock ABI version offered by the kernel, `None` when landlock is off.
pub fn landlock_abi() -> Option<u32> {
    stockade_sys::landlock_abi()
}
