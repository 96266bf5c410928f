//! The conformance suite and the isolation battery against the native driver (needs user
//! namespaces; root for cgroup limits and veth networking, as in CI), three ways: the driver
//! itself, through the router (a registry holding it), and through the daemon (`RemoteDriver`
//! against an in-process `stockade serve` on a unix socket).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use stockade_conformance::{conformance_suite, isolation_suite, skip, Case, Harness};
use stockade_core::{Driver, DriverConfig, Registry, SandboxId, SandboxSpec};
use stockade_native::{Layout, NativeDriver};

/// How the cases reach the native driver.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Driver,
    Router,
    Daemon,
}

struct Native {
    home: PathBuf,
    via: Via,
}

fn agent() -> PathBuf {
    stockade_native::driver::find_agent(&DriverConfig::new(std::env::temp_dir())).unwrap()
}

/// The router the CLI would build, with only the native driver registered.
fn router(home: &Path) -> stockade_router::Router {
    let mut config = DriverConfig::new(home);
    config.agent = Some(agent());
    let mut registry = Registry::new(config);
    stockade_native::register(&mut registry);
    stockade_router::Router::new(registry)
}

/// One daemon for the whole test binary, serving `home` on `home/stockade.sock`; its runtime
/// lives on a thread of its own until the process ends.
fn daemon_socket(home: &Path) -> PathBuf {
    static SOCKET: OnceLock<PathBuf> = OnceLock::new();
    SOCKET
        .get_or_init(|| {
            std::fs::create_dir_all(home).unwrap();
            let socket = home.join("stockade.sock");
            let config = stockade_server::ServerConfig {
                socket: Some(socket.clone()),
                ..stockade_server::ServerConfig::embedded(home)
            };
            let drivers = Arc::new(router(home));
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let served = rt.block_on(stockade_server::serve(config, drivers, std::future::pending()));
                panic!("the test daemon stopped: {served:?}");
            });
            let started = std::time::Instant::now();
            while std::os::unix::net::UnixStream::connect(&socket).is_err() {
                assert!(
                    started.elapsed().as_secs() < 30,
                    "the test daemon did not listen on {}",
                    socket.display()
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            socket
        })
        .clone()
}

impl Harness for Native {
    fn driver(&self) -> Arc<dyn Driver> {
        match self.via {
            Via::Driver => Arc::new(NativeDriver::new(Layout::at(&self.home), agent()).unwrap()),
            Via::Router => Arc::new(router(&self.home)),
            Via::Daemon => Arc::new(stockade_client::RemoteDriver::new(
                stockade_client::Target::Unix(daemon_socket(&self.home)),
                None,
            )),
        }
    }

    fn unsupported(&self, case: Case) -> Option<String> {
        match (self.via, case) {
            (Via::Daemon, Case::kept_exec_outlives_its_caller_and_replays_from_seq) => Some(
                "through the daemon: it names exec ids itself (POST /execs answers with the id), so a caller \
                 cannot start a kept exec under an id of its choosing; the daemon's own tests cover replay \
                 from a sequence number and re-attaching after a restart"
                    .into(),
            ),
            (Via::Daemon, Case::a_port_inside_is_reachable) => Some(
                "through the daemon: its API has no route to a sandbox's port (its E2B surface forwards them, \
                 which scripts/e2b-sdk-test checks)"
                    .into(),
            ),
            (Via::Daemon, Case::entries_and_walks_describe_files_in_full | Case::watchers_see_create_write_and_remove) => Some(
                "through the daemon: its API has no route for full entries, walks or watchers (its E2B surface \
                 serves them to E2B's SDKs, which scripts/e2b-sdk-test runs)"
                    .into(),
            ),
            _ => None,
        }
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

fn native_via(via: Via) -> Option<Native> {
    if let Err(why) = stockade_native::driver::user_namespaces_available() {
        skip(&why);
        return None;
    }
    if !nix::unistd::geteuid().is_root() {
        skip("the native driver's limits and networking need root");
        return None;
    }
    if let Err(e) = stockade_native::driver::find_agent(&DriverConfig::new(std::env::temp_dir())) {
        skip(&format!("{e} (build it with cargo build -p stockade-agent)"));
        return None;
    }
    // One home per way in for the whole test binary; every case destroys what it made.
    let way = match via {
        Via::Driver => "driver",
        Via::Router => "router",
        Via::Daemon => "daemon",
    };
    let home = std::env::temp_dir().join(format!("stockade-conformance-{way}-{}", std::process::id()));
    Some(Native { home, via })
}

fn native() -> Option<Native> {
    native_via(Via::Driver)
}

conformance_suite!(native);
isolation_suite!(native);

mod through_the_router {
    use super::*;
    fn harness() -> Option<Native> {
        native_via(Via::Router)
    }
    conformance_suite!(harness);
    isolation_suite!(harness);
}

mod through_the_daemon {
    use super::*;
    fn harness() -> Option<Native> {
        native_via(Via::Daemon)
    }
    conformance_suite!(harness);
    isolation_suite!(harness);
}
