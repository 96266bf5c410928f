//! The conformance suite and the isolation battery against the native driver (needs user
//! namespaces; root for cgroup limits and veth networking, as in CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use stockade_conformance::{conformance_suite, isolation_suite, skip, Harness};
use stockade_core::{Driver, SandboxId, SandboxSpec};
use stockade_native::{Layout, NativeDriver};

struct Native {
    home: PathBuf,
}

impl Harness for Native {
    fn driver(&self) -> Arc<dyn Driver> {
        let agent =
            stockade_native::driver::find_agent(&stockade_core::DriverConfig::new(std::env::temp_dir()))
                .unwrap();
        Arc::new(NativeDriver::new(Layout::at(&self.home), agent).unwrap())
    }

    fn spec(&self) -> SandboxSpec {
        SandboxSpec::default()
    }

    fn leftovers(&self, id: &SandboxId) -> Vec<String> {
        let layout = Layout::at(&self.home);
        let mut found = Vec::new();
        for path in [
            layout.record(id),
            layout.sandbox_dir(id),
            layout.socket(id),
            layout.runtime(id),
            layout.log(id),
        ] {
            if path.exists() {
                found.push(format!("file {}", path.display()));
            }
        }
        let cgroup_leaf = format!("stockade/{id}");
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let dir = hierarchy.path().join(&cgroup_leaf);
            if dir.exists() {
                found.push(format!("cgroup {}", dir.display()));
            }
        }
        let sandbox_dir = layout.sandbox_dir(id).display().to_string();
        for proc_entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let p = proc_entry.path();
            if !proc_entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
            {
                continue;
            }
            let zombie = std::fs::read_to_string(p.join("stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true);
            if zombie {
                continue;
            }
            let cgroup = std::fs::read_to_string(p.join("cgroup")).unwrap_or_default();
            let cmdline =
                String::from_utf8_lossy(&std::fs::read(p.join("cmdline")).unwrap_or_default()).into_owned();
            if cgroup.contains(&cgroup_leaf) || cmdline.contains(id.as_str()) {
                found.push(format!("process {} {}", p.display(), cmdline.replace('\0', " ")));
            }
            let mountinfo = std::fs::read_to_string(p.join("mountinfo")).unwrap_or_default();
            if mountinfo.contains(&sandbox_dir) {
                found.push(format!("mount in {}", p.display()));
            }
        }
        for dev in std::fs::read_dir("/sys/block").into_iter().flatten().flatten() {
            let backing = std::fs::read_to_string(dev.path().join("loop/backing_file")).unwrap_or_default();
            if backing.contains(id.as_str()) {
                found.push(format!(
                    "loop device {} on {}",
                    dev.file_name().to_string_lossy(),
                    backing.trim()
                ));
            }
        }
        if std::path::Path::new(&format!("/sys/class/net/st{id}")).exists() {
            found.push(format!("interface st{id}"));
        }
        found.sort();
        found.dedup();
        found
    }
}

fn native() -> Option<Native> {
    if let Err(why) = stockade_native::driver::user_namespaces_available() {
        skip(&why);
        return None;
    }
    if !nix::unistd::geteuid().is_root() {
        skip("the native driver's limits and networking need root");
        return None;
    }
    if let Err(e) =
        stockade_native::driver::find_agent(&stockade_core::DriverConfig::new(std::env::temp_dir()))
    {
        skip(&format!("{e} (build it with cargo build -p stockade-agent)"));
        return None;
    }
    // One home for the whole test binary; every case destroys what it made.
    let home = std::env::temp_dir().join(format!("stockade-conformance-{}", std::process::id()));
    Some(Native { home })
}

conformance_suite!(native);
isolation_suite!(native);
