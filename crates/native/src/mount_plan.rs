//! The sandbox's filesystem as a plain list of steps, computed without touching anything, then
//! applied in one place through [`Syscalls`]. Run inside the new mount namespace, as the sandbox's
//! root, before `pivot_root`.

use std::path::{Path, PathBuf};

use stockade_sys::Syscalls;

/// Mount flags as u64 (c_ulong is 32 bits on some targets, so the casts are no-ops only here).
#[allow(clippy::unnecessary_cast)]
mod flags {
    pub const MS_RDONLY: u64 = libc::MS_RDONLY as u64;
    pub const MS_NOSUID: u64 = libc::MS_NOSUID as u64;
    pub const MS_NODEV: u64 = libc::MS_NODEV as u64;
    pub const MS_NOEXEC: u64 = libc::MS_NOEXEC as u64;
    pub const MS_REMOUNT: u64 = libc::MS_REMOUNT as u64;
    pub const MS_BIND: u64 = libc::MS_BIND as u64;
    pub const MS_REC: u64 = libc::MS_REC as u64;
    pub const MS_PRIVATE: u64 = libc::MS_PRIVATE as u64;
}
use flags::*;

pub use stockade_proto::{DEVICES, MASKED_PATHS, READ_ONLY_PATHS};

/// What the plan is built from.
#[derive(Debug, Clone)]
pub struct MountInputs {
    /// Overlay lower layer: the host `/` or a rootfs directory.
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Where the overlay is mounted and the new root is built.
    pub root: PathBuf,
    /// Host dir for `/workspace` (None when the user mounts something there).
    pub workspace: Option<PathBuf>,
    /// The sandbox's workdir, where `workspace` is mounted.
    pub workdir: PathBuf,
    /// Host dir mounted at `/root` (hides the host's `/root`).
    pub root_home: PathBuf,
    /// User mounts: (host, sandbox path, read-only).
    pub binds: Vec<(PathBuf, PathBuf, bool)>,
    /// Host paths that must not show through the lower layer (the Stockade home).
    pub masks: Vec<PathBuf>,
    /// The sandbox has its own network namespace (sysfs can be mounted fresh).
    pub own_netns: bool,
    /// Size cap for `/tmp` and `/dev/shm` (the disk limit, so tmpfs cannot get around it).
    pub tmp_size: Option<u64>,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Mount {
        src: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: u64,
        data: Option<String>,
    },
    Mkdir {
        path: PathBuf,
        mode: u32,
    },
    Touch {
        path: PathBuf,
    },
    /// Hide `path` (inside the new root) if it exists: see [`MASKED_PATHS`].
    Mask {
        path: PathBuf,
    },
    /// Bind `path` onto itself read-only if it exists.
    ReadOnly {
        path: PathBuf,
    },
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    /// `chdir(new_root); pivot_root(".", "."); umount2(".", MNT_DETACH); chdir("/")`.
    PivotRoot {
        new_root: PathBuf,
    },
}

fn mount(src: Option<&Path>, target: PathBuf, fstype: Option<&str>, flags: u64, data: Option<&str>) -> Step {
    Step::Mount {
        src: src.map(Path::to_path_buf),
        target,
        fstype: fstype.map(str::to_owned),
        flags,
        data: data.map(str::to_owned),
    }
}

/// `root` joined with an absolute in-sandbox path.
pub fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Directories that must exist in the merged view before the plan runs: mount points the sandbox's
/// root could not create itself, because their parents in the lower layer belong to host root.
/// The supervisor makes them in the upper layer beforehand.
pub fn mount_points(inputs: &MountInputs) -> Vec<(PathBuf, bool)> {
    let mut points: Vec<(PathBuf, bool)> = ["/proc", "/dev", "/tmp", "/sys", "/root"]
        .iter()
        .map(|p| (PathBuf::from(p), true))
        .collect();
    if inputs.workspace.is_some() {
        points.push((inputs.workdir.clone(), true));
    }
    for (host, target, _) in &inputs.binds {
        points.push((target.clone(), host.is_dir()));
    }
    points
}

/// The overlay root: private propagation, then the overlay at `root`. As host root this runs in
/// the supervisor's own mount namespace before the user namespace exists, because the kernel will
/// not let a user namespace use a lower layer with locked submounts (the host `/` has many).
pub fn overlay_steps(i: &MountInputs) -> Vec<Step> {
    vec![
        // Nothing we mount may propagate back to the host.
        mount(None, "/".into(), None, MS_REC | MS_PRIVATE, None),
        mount(
            Some(Path::new("overlay")),
            i.root.clone(),
            Some("overlay"),
            MS_NOSUID | MS_NODEV,
            Some(&format!(
                "lowerdir={},upperdir={},workdir={},userxattr",
                i.lower.display(),
                i.upper.display(),
                i.work.display()
            )),
        ),
    ]
}

/// Everything after the overlay, run inside the sandbox's namespaces: masks, `/proc`, `/dev`,
/// `/tmp`, `/sys`, the workspace and user mounts, then `pivot_root`.
pub fn plan(i: &MountInputs) -> Vec<Step> {
    let r = &i.root;
    let at = |p: &str| inside(r, Path::new(p));
    let mut steps = vec![
        mount(None, "/".into(), None, MS_REC | MS_PRIVATE, None),
        // A mount made outside the user namespace is locked inside it, and pivot_root refuses a
        // locked new root; a bind of the root onto itself is ours.
        mount(Some(r), r.clone(), None, MS_BIND, None),
    ];
    for mask in &i.masks {
        if mask.starts_with(&i.lower) || i.lower == Path::new("/") {
            steps.push(mount(
                Some(Path::new("tmpfs")),
                inside(r, mask),
                Some("tmpfs"),
                MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
                Some("size=4k,mode=000"),
            ));
        }
    }
    steps.push(mount(
        Some(Path::new("proc")),
        at("/proc"),
        Some("proc"),
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
        None,
    ));
    steps.push(mount(
        Some(Path::new("tmpfs")),
        at("/dev"),
        Some("tmpfs"),
        MS_NOSUID | MS_NOEXEC,
        Some("mode=755,size=64k,nr_inodes=64"),
    ));
    for dev in DEVICES {
        let target = at(&format!("/dev/{dev}"));
        steps.push(Step::Touch { path: target.clone() });
        steps.push(mount(
            Some(&PathBuf::from(format!("/dev/{dev}"))),
            target,
            None,
            MS_BIND,
            None,
        ));
    }
    steps.push(Step::Mkdir {
        path: at("/dev/pts"),
        mode: 0o755,
    });
    steps.push(mount(
        Some(Path::new("devpts")),
        at("/dev/pts"),
        Some("devpts"),
        MS_NOSUID | MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    ));
    steps.push(Step::Symlink {
        target: "pts/ptmx".into(),
        link: at("/dev/ptmx"),
    });
    steps.push(Step::Mkdir {
        path: at("/dev/shm"),
        mode: 0o1777,
    });
    let shm_size = i.tmp_size.map_or(64 << 20, |t| t.min(64 << 20));
    steps.push(mount(
        Some(Path::new("tmpfs")),
        at("/dev/shm"),
        Some("tmpfs"),
        MS_NOSUID | MS_NODEV,
        Some(&format!("mode=1777,size={shm_size}")),
    ));
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        steps.push(Step::Symlink {
            target: target.into(),
            link: at(&format!("/dev/{name}")),
        });
    }
    let tmp_data = match i.tmp_size {
        Some(n) => format!("mode=1777,size={n}"),
        None => "mode=1777".to_owned(),
    };
    steps.push(mount(
        Some(Path::new("tmpfs")),
        at("/tmp"),
        Some("tmpfs"),
        MS_NOSUID | MS_NODEV,
        Some(&tmp_data),
    ));
    if i.own_netns {
        steps.push(mount(
            Some(Path::new("sysfs")),
            at("/sys"),
            Some("sysfs"),
            MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
            None,
        ));
    } else {
        steps.push(mount(
            Some(Path::new("/sys")),
            at("/sys"),
            None,
            MS_BIND | MS_REC,
            None,
        ));
        steps.push(mount(
            None,
            at("/sys"),
            None,
            MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
            None,
        ));
    }
    steps.push(mount(Some(&i.root_home), at("/root"), None, MS_BIND, None));
    if let Some(ws) = &i.workspace {
        steps.push(mount(
            Some(ws),
            inside(r, &i.workdir),
            None,
            MS_BIND | MS_REC,
            None,
        ));
    }
    for (host, target, ro) in &i.binds {
        let t = inside(r, target);
        steps.push(mount(Some(host), t.clone(), None, MS_BIND | MS_REC, None));
        if *ro {
            steps.push(mount(
                None,
                t,
                None,
                MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
                None,
            ));
        }
    }
    steps.extend(MASKED_PATHS.iter().map(|p| Step::Mask { path: at(p) }));
    steps.extend(READ_ONLY_PATHS.iter().map(|p| Step::ReadOnly { path: at(p) }));
    steps.push(Step::PivotRoot { new_root: r.clone() });
    steps
}

/// Applies `steps` in order; the first failure stops and is returned with the step it came from.
pub fn apply(steps: &[Step], sys: &dyn Syscalls) -> std::io::Result<()> {
    for step in steps {
        let result = match step {
            Step::Mount {
                src,
                target,
                fstype,
                flags,
                data,
            } => sys.mount(src.as_deref(), target, fstype.as_deref(), *flags, data.as_deref()),
            Step::Mkdir { path, mode } => sys.mkdir_all(path, *mode),
            Step::Touch { path } => sys.create_file(path),
            Step::Symlink { target, link } => sys.symlink(target, link),
            Step::Mask { path } => match sys.kind(path) {
                None => Ok(()),
                Some(true) => sys.mount(
                    Some(Path::new("tmpfs")),
                    path,
                    Some("tmpfs"),
                    MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                    Some("size=0,mode=000"),
                ),
                Some(false) => sys.mount(Some(Path::new("/dev/null")), path, None, MS_BIND, None),
            },
            Step::ReadOnly { path } => match sys.kind(path) {
                None => Ok(()),
                Some(_) => sys
                    .mount(Some(path), path, None, MS_BIND | MS_REC, None)
                    .and_then(|_| {
                        sys.mount(
                            None,
                            path,
                            None,
                            MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                            None,
                        )
                    }),
            },
            Step::PivotRoot { new_root } => sys
                .chdir(new_root)
                .and_then(|_| sys.pivot_root(Path::new("."), Path::new(".")))
                .and_then(|_| sys.umount_detach(Path::new(".")))
                .and_then(|_| sys.chdir(Path::new("/"))),
        };
        result.map_err(|e| std::io::Error::new(e.kind(), format!("{step:?}: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockade_sys::RecordingSyscalls;

    fn inputs() -> MountInputs {
        MountInputs {
            lower: "/".into(),
            upper: "/s/upper".into(),
            work: "/s/work".into(),
            root: "/s/root".into(),
            workspace: Some("/s/workspace".into()),
            workdir: "/workspace".into(),
            root_home: "/s/home".into(),
            binds: vec![("/data".into(), "/mnt/data".into(), true)],
            masks: vec!["/var/lib/stockade".into()],
            own_netns: true,
            tmp_size: None,
        }
    }

    #[test]
    fn plan_order_and_contents() {
        let sys = RecordingSyscalls::default();
        apply(&overlay_steps(&inputs()), &sys).unwrap();
        apply(&plan(&inputs()), &sys).unwrap();
        let lines = sys.lines();
        assert!(lines[0].starts_with("mount none / - 0x44000"), "{}", lines[0]);
        assert!(
            lines[1].contains("overlay /s/root overlay") && lines[1].contains("lowerdir=/,upperdir=/s/upper")
        );
        assert!(
            lines[4].contains("tmpfs /s/root/var/lib/stockade tmpfs"),
            "home is masked: {}",
            lines[4]
        );
        let pos = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
        assert!(pos("proc /s/root/proc proc") < pos("pivot_root"));
        assert!(pos("/dev/null /s/root/dev/null") > pos("tmpfs /s/root/dev tmpfs"));
        assert!(pos("/s/workspace /s/root/workspace") < pos("pivot_root"));
        // read-only bind is a bind then a read-only remount of the same target
        let bind = pos("mount /data /s/root/mnt/data");
        assert!(
            lines[bind + 1].starts_with("mount none /s/root/mnt/data - 0x1027"),
            "{}",
            lines[bind + 1]
        );
        assert_eq!(lines.last().unwrap(), "chdir /");
        // masked and read-only kernel paths come after /proc and /sys and before pivot_root
        let kcore = pos("/dev/null /s/root/proc/kcore");
        assert!(kcore > pos("proc /s/root/proc proc") && kcore < pos("pivot_root"));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("mount tmpfs /s/root/sys/firmware tmpfs 0x")));
        let sys_ro = pos("mount /s/root/proc/sys /s/root/proc/sys");
        assert!(
            lines[sys_ro + 1].starts_with("mount none /s/root/proc/sys - 0x"),
            "{}",
            lines[sys_ro + 1]
        );
        assert!(lines.iter().any(|l| l == "pivot_root . ."));
    }

    #[test]
    fn host_network_binds_sys_read_only() {
        let mut i = inputs();
        i.own_netns = false;
        let steps = plan(&i);
        assert!(!steps
            .iter()
            .any(|s| matches!(s, Step::Mount { fstype: Some(f), .. } if f == "sysfs")));
    }

    #[test]
    fn mount_points_cover_user_binds() {
        let points = mount_points(&inputs());
        assert!(points.iter().any(|(p, _)| p == Path::new("/workspace")));
        assert!(points.iter().any(|(p, _)| p == Path::new("/mnt/data")));
    }
}
