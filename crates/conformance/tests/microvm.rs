//! The conformance suite and the isolation battery against the microvm driver: every case in a
//! QEMU microvm guest of its own (software emulation here, KVM where a host has it usable), plus
//! the cases only a VM can pass. Needs QEMU and qemu-img (`scripts/test-deps` installs them), root
//! (debootstrap) and the static agent; builds the VM image on first use, into a directory every
//! run on this machine shares (the image is keyed by its recipe, so it is built once).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use stockade_conformance::{conformance_suite, isolation_suite, skip, Harness, Sandbox};
use stockade_core::{Driver, DriverConfig, SandboxId, SandboxSpec};
use stockade_microvm::MicrovmDriver;

struct Microvm {
    config: DriverConfig,
}

/// Where the test VM image lives: one for every test run on this machine.
fn images_dir() -> PathBuf {
    std::env::var_os("STOCKADE_VM_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/stockade/microvm/images"))
}

/// Builds (or finds, by recipe hash) the VM image once per test process.
fn ensure_image(config: &DriverConfig) -> Result<(), String> {
    static BUILT: Mutex<Option<Result<(), String>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(result) = &*built {
        return result.clone();
    }
    let result = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let driver = MicrovmDriver::from_config(config).map_err(|e| e.to_string())?;
        let images = stockade_core::DriverAdmin::images(&driver).unwrap();
        let scratch = config.home.join("cache");
        images
            .base(&scratch, &mut |line: &str| eprintln!("image: {line}"))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    });
    *built = Some(result.clone());
    result
}

impl Harness for Microvm {
    fn driver(&self) -> Arc<dyn Driver> {
        Arc::new(MicrovmDriver::from_config(&self.config).unwrap())
    }

    fn spec(&self) -> SandboxSpec {
        SandboxSpec {
            driver: "microvm".into(),
            ..Default::default()
        }
    }

    // Every case runs: nothing is excused on this driver.

    fn leftovers(&self, id: &SandboxId) -> Vec<String> {
        let layout = stockade_microvm::layout::Layout::at(&self.config.home);
        let mut found = Vec::new();
        for path in [layout.records().join(format!("{id}.json")), layout.vm(id)] {
            if path.exists() {
                found.push(format!("file {}", path.display()));
            }
        }
        let vm_dir = layout.vm(id).display().to_string();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if !entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
            {
                continue;
            }
            let p = entry.path();
            let zombie = std::fs::read_to_string(p.join("stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true);
            if zombie {
                continue;
            }
            let cmdline = String::from_utf8_lossy(&std::fs::read(p.join("cmdline")).unwrap_or_default())
                .replace('\0', " ");
            let environ =
                String::from_utf8_lossy(&std::fs::read(p.join("environ")).unwrap_or_default()).into_owned();
            if cmdline.contains(&vm_dir) || environ.contains(&format!("STOCKADE_MICROVM_ID={id}")) {
                found.push(format!("process {} {cmdline}", p.display()));
            }
        }
        found
    }
}

fn microvm() -> Option<Microvm> {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    if !nix::unistd::geteuid().is_root() {
        skip("the microvm driver's tests build the VM image with debootstrap, which needs root");
        return None;
    }
    let agent = match stockade_proto::agent_binary::find(&DriverConfig::new(std::env::temp_dir()), "microvm")
    {
        Ok(agent) => agent,
        Err(e) => {
            skip(&e.to_string());
            return None;
        }
    };
    let home = HOME
        .get_or_init(|| {
            std::env::temp_dir().join(format!("stockade-conformance-microvm-{}", std::process::id()))
        })
        .clone();
    let mut config = DriverConfig::new(&home);
    config.agent = Some(agent);
    config
        .env
        .insert("STOCKADE_VM_IMAGES".into(), images_dir().display().to_string());
    if let Ok(path) = std::env::var("PATH") {
        config.env.insert("PATH".into(), path);
    }
    let driver = MicrovmDriver::from_config(&config).unwrap();
    if let Err(e) = driver.qemu() {
        skip(&e.to_string());
        return None;
    }
    if let Err(e) = ensure_image(&config) {
        skip(&format!("the VM image could not be built: {e}"));
        return None;
    }
    Some(Microvm { config })
}

conformance_suite!(microvm);
isolation_suite!(microvm);

/// What only a VM shows: its own kernel, the agent as pid 1, no host processes or files.
mod vm_only {
    use super::*;

    async fn sh(sandbox: &Sandbox, script: &str) -> String {
        String::from_utf8_lossy(&sandbox.sh(script).await.stdout)
            .trim()
            .to_owned()
    }

    fn run(case: impl std::future::Future<Output = ()>) {
        tokio::runtime::Runtime::new().unwrap().block_on(case);
    }

    #[test]
    fn the_guest_runs_its_own_kernel() {
        let Some(h) = microvm() else { return };
        run(async {
            let sandbox = Sandbox::new(&h).await;
            let host = nix::sys::utsname::uname().unwrap();
            let guest = sh(&sandbox, "uname -r; uname -v").await;
            let host = format!(
                "{}\n{}",
                host.release().to_string_lossy(),
                host.version().to_string_lossy()
            );
            assert_ne!(guest, host, "the guest reports the host's kernel");
            let boot_id = sh(&sandbox, "cat /proc/sys/kernel/random/boot_id").await;
            let host_boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
            assert_ne!(boot_id, host_boot_id.trim(), "the guest shares the host's boot");
            drop(sandbox);
        });
    }

    #[test]
    fn pid_1_is_the_agent() {
        let Some(h) = microvm() else { return };
        run(async {
            let sandbox = Sandbox::new(&h).await;
            let cmdline = sh(&sandbox, "tr '\\0' ' ' < /proc/1/cmdline").await;
            assert!(
                cmdline.starts_with("stockade-agent init --vm-port-fd "),
                "{cmdline}"
            );
            drop(sandbox);
        });
    }

    #[test]
    fn guest_root_sees_no_host_process_or_file() {
        let Some(h) = microvm() else { return };
        run(async {
            // A file and a process only the host has.
            let marker = std::env::temp_dir().join(format!("stockade-host-only-{}", std::process::id()));
            std::fs::write(&marker, "host").unwrap();
            let sandbox = Sandbox::new(&h).await;
            let found = sh(
                &sandbox,
                &format!(
                    "ls {} 2>&1; for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; done",
                    marker.display()
                ),
            )
            .await;
            assert!(found.contains("No such file or directory"), "{found}");
            assert!(
                !found.contains("cargo") && !found.contains("qemu-system"),
                "host processes are visible: {found}"
            );
            // The guest's process table is its own: a handful of processes, not the host's.
            let count = sh(&sandbox, "ls -d /proc/[0-9]* | wc -l").await;
            let host_count = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count();
            assert!(
                count.parse::<usize>().unwrap() < host_count,
                "{count} processes in the guest, {host_count} on the host"
            );
            drop(sandbox);
            std::fs::remove_file(&marker).unwrap();
        });
    }

    #[test]
    fn destroy_leaves_no_qemu_socket_or_file() {
        let Some(h) = microvm() else { return };
        run(async {
            let sandbox = Sandbox::new(&h).await;
            let info = sandbox.driver.get(sandbox.id.as_str()).await.unwrap();
            let qemu_pid = info.details["qemu_pid"].as_i64().unwrap();
            assert!(std::path::Path::new(&format!("/proc/{qemu_pid}")).exists());
            let id = sandbox.id.clone();
            drop(sandbox);
            assert!(h.leftovers(&id).is_empty(), "{:?}", h.leftovers(&id));
            assert!(
                !std::path::Path::new(&format!("/proc/{qemu_pid}/cmdline")).exists()
                    || std::fs::read_to_string(format!("/proc/{qemu_pid}/stat"))
                        .map(|s| s.contains(") Z"))
                        .unwrap_or(true)
            );
        });
    }

    /// Sandboxes start from the saved template, and each wakes as itself: its own machine-id and
    /// hostname, a random generator no sibling shares, and the host's time rather than the
    /// snapshot's.
    #[test]
    fn restored_siblings_have_their_own_identity_randomness_and_clock() {
        let Some(h) = microvm() else { return };
        run(async {
            let a = Sandbox::new(&h).await;
            let b = Sandbox::new(&h).await;
            let script = "cat /etc/machine-id; hostname; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s";
            let mut seen = Vec::new();
            for sandbox in [&a, &b] {
                let info = sandbox.driver.get(sandbox.id.as_str()).await.unwrap();
                assert_eq!(
                    info.details["started_from"], "template (snapshot restore)",
                    "{:?}",
                    info.details
                );
                let out = sh(sandbox, script).await;
                let lines: Vec<String> = out.lines().map(str::to_owned).collect();
                assert_eq!(lines.len(), 4, "{out}");
                assert_eq!(lines[1], info.name, "hostname");
                let host_now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                let guest_now: i64 = lines[3].parse().unwrap();
                assert!(
                    (guest_now - host_now).abs() <= 5,
                    "the guest's clock says {guest_now}, the host's {host_now}"
                );
                seen.push(lines);
            }
            assert_ne!(
                seen[0][0], seen[1][0],
                "two restored sandboxes share a machine-id"
            );
            assert_ne!(
                seen[0][2], seen[1][2],
                "two restored sandboxes read the same random bytes"
            );
            drop(a);
            drop(b);
        });
    }

    /// `--network full` is a tap behind the host rules native's veths sit behind: out through
    /// NAT, but not to another sandbox (here a VM listening on its address) or to link-local
    /// metadata, each refused at once; and the tap is gone with the VM.
    #[test]
    fn full_network_reaches_neither_another_sandbox_nor_metadata() {
        let Some(h) = microvm() else { return };
        run(async {
            let full = || SandboxSpec {
                network: stockade_core::NetworkMode::Full,
                ..h.spec()
            };
            let server = Sandbox::with_spec(&h, full()).await;
            let client = Sandbox::with_spec(&h, full()).await;
            let address = sh(
                &server,
                "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1",
            )
            .await;
            assert!(address.starts_with("10.200."), "{address:?}");
            // Listening inside the server VM (for as long as this exec runs), and reachable there.
            let _listening = server
                .driver
                .exec(
                    &server.id,
                    stockade_core::ExecRequest::new([
                        "python3",
                        "-m",
                        "http.server",
                        "8080",
                        "--bind",
                        "0.0.0.0",
                    ]),
                )
                .await
                .unwrap();
            sh(
                &server,
                "for i in $(seq 100); do python3 -c \"import socket; socket.create_connection(('127.0.0.1', 8080))\" 2>/dev/null && break; sleep 0.1; done",
            )
            .await;
            let probe = |addr: &str, port: u16| {
                format!(
                    "python3 -c \"import socket,errno\ntry:\n socket.create_connection(('{addr}',{port}),timeout=5); print('connected')\nexcept OSError as e: print(errno.errorcode.get(e.errno,'timeout'))\""
                )
            };
            assert_eq!(sh(&server, &probe(&address, 8080)).await, "connected");
            assert_eq!(sh(&client, &probe(&address, 8080)).await, "ECONNREFUSED");
            assert_eq!(sh(&client, &probe("169.254.169.254", 80)).await, "ECONNREFUSED");
            let info = client.driver.get(client.id.as_str()).await.unwrap();
            let network = info.details["network"].as_str().unwrap().to_owned();
            assert!(network.starts_with("full: tap st"), "{network}");
            let tap = format!("st{}", client.id);
            assert!(std::path::Path::new(&format!("/sys/class/net/{tap}")).exists());
            drop(client);
            drop(server);
            assert!(
                !std::path::Path::new(&format!("/sys/class/net/{tap}")).exists(),
                "{tap} is left behind"
            );
        });
    }

    /// A `--disk` limit beyond what the image's disk has free is one error saying how much there
    /// is, and the sandbox is gone.
    #[test]
    fn a_disk_limit_past_the_image_is_one_error_naming_what_is_free() {
        let Some(h) = microvm() else { return };
        run(async {
            let config = fresh_config(&h, "big-disk");
            let driver = MicrovmDriver::from_config(&config).unwrap();
            let mut spec = h.spec();
            spec.resources.disk_bytes = Some(100 << 30);
            let err = driver.create(spec).await.unwrap_err();
            assert_eq!(err.kind(), stockade_core::ErrorKind::Invalid, "{err}");
            assert_eq!(err.field(), Some("disk"), "{err}");
            let err = err.to_string();
            assert!(
                err.contains("disk") && err.contains("107374182400 bytes asked") && err.contains("free"),
                "{err}"
            );
            assert!(!err.contains('\n'), "{err:?}");
            assert!(driver.list().await.unwrap().is_empty());
            let vms = stockade_microvm::layout::Layout::at(&config.home)
                .root
                .join("vms");
            assert_eq!(std::fs::read_dir(vms).unwrap().count(), 0);
        });
    }

    /// Pause halts the guest's vCPUs: a spinning process gets no CPU (its CPU time is flat
    /// across a second), an exec is refused naming the state, and resume lets it go on with the
    /// same pid. Stop and destroy work from paused too.
    #[test]
    fn pause_freezes_the_guest_and_resume_goes_on() {
        let Some(h) = microvm() else { return };
        run(async {
            let sandbox = Sandbox::new(&h).await;
            let d = &sandbox.driver;
            let _spinner = d
                .exec(
                    &sandbox.id,
                    stockade_core::ExecRequest::new([
                        "sh",
                        "-c",
                        "echo $$ > /tmp/spinner; while :; do :; done",
                    ]),
                )
                .await
                .unwrap();
            let ticks = "pid=$(cat /tmp/spinner); echo $pid $(cut -d' ' -f14 /proc/$pid/stat)";
            let before = loop {
                let out = sh(&sandbox, ticks).await;
                if out.split(' ').count() == 2 {
                    break out;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            };
            d.pause(&sandbox.id).await.unwrap();
            let info = d.get(sandbox.id.as_str()).await.unwrap();
            assert_eq!(info.status, stockade_core::SandboxStatus::Paused);
            // The guest's own clock does not run while paused, so the host watches: QEMU's vCPU
            // thread gets (close to) no CPU.
            let qemu_pid = info.details["qemu_pid"].as_i64().unwrap();
            let cpu = || {
                let stat = std::fs::read_to_string(format!("/proc/{qemu_pid}/stat")).unwrap();
                let after_name = &stat[stat.rfind(')').unwrap() + 2..];
                let fields: Vec<u64> = after_name.split(' ').filter_map(|f| f.parse().ok()).collect();
                fields[10] + fields[11]
            };
            let paused_from = cpu();
            std::thread::sleep(std::time::Duration::from_secs(1));
            let paused_for_a_second = cpu() - paused_from;
            assert!(
                paused_for_a_second <= 10,
                "QEMU used {paused_for_a_second} ticks in a paused second"
            );
            let refused = d
                .exec(&sandbox.id, stockade_core::ExecRequest::new(["true"]))
                .await
                .err()
                .unwrap()
                .to_string();
            assert!(refused.contains("paused"), "{refused}");
            let again = d.pause(&sandbox.id).await.unwrap_err().to_string();
            assert!(again.contains("paused") && again.contains("running"), "{again}");
            d.resume(&sandbox.id).await.unwrap();
            let after = sh(&sandbox, ticks).await;
            let (pid, t0) = before.split_once(' ').unwrap();
            let (pid_after, t1) = after.split_once(' ').unwrap();
            assert_eq!(pid, pid_after, "the spinner is the same process");
            assert!(t1.parse::<u64>().unwrap() > t0.parse::<u64>().unwrap());
            let not_paused = d.resume(&sandbox.id).await.unwrap_err().to_string();
            assert!(
                not_paused.contains("running") && not_paused.contains("paused"),
                "{not_paused}"
            );
            // From paused, stop works (the guest runs again to sync its disk first).
            d.pause(&sandbox.id).await.unwrap();
            d.stop(&sandbox.id).await.unwrap();
            d.start(&sandbox.id).await.unwrap();
            assert_eq!(sh(&sandbox, "echo up").await, "up");
            d.pause(&sandbox.id).await.unwrap();
            let id = sandbox.id.clone();
            drop(sandbox);
            assert!(h.leftovers(&id).is_empty(), "{:?}", h.leftovers(&id));
        });
    }

    /// A root filesystem tarball (what `docker export` writes) becomes a VM image that boots the
    /// base image's kernel: here a busybox tree with nothing else in it. Bad tarballs and names
    /// are one error each.
    #[test]
    fn an_imported_tarball_boots_as_a_vm_image() {
        let Some(h) = microvm() else { return };
        let Some(busybox) = ["/usr/bin/busybox", "/bin/busybox"]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
        else {
            skip("busybox-static is not installed (scripts/test-deps installs it)");
            return;
        };
        run(async {
            let config = fresh_config(&h, "import");
            let images = config.home.join("images");
            std::fs::create_dir_all(&images).unwrap();
            // The imported image boots the shared base image's kernel: point this home's images
            // directory's `latest` at it.
            let base = std::fs::canonicalize(images_dir().join("latest")).unwrap();
            std::os::unix::fs::symlink(&base, images.join("latest")).unwrap();
            let mut config = config;
            config
                .env
                .insert("STOCKADE_VM_IMAGES".into(), images.display().to_string());
            let tree = config.home.join("tree");
            std::fs::create_dir_all(tree.join("bin")).unwrap();
            std::fs::create_dir_all(tree.join("etc")).unwrap();
            std::fs::copy(&busybox, tree.join("bin/busybox")).unwrap();
            for applet in ["sh", "ls", "cat", "uname"] {
                std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet)).unwrap();
            }
            std::fs::write(tree.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
            std::fs::write(tree.join("etc/group"), "root:x:0:\n").unwrap();
            let tarball = config.home.join("tree.tar");
            let tar = std::process::Command::new("tar")
                .arg("-C")
                .arg(&tree)
                .arg("-cf")
                .arg(&tarball)
                .arg(".")
                .status()
                .unwrap();
            assert!(tar.success());
            let driver = MicrovmDriver::from_config(&config).unwrap();
            let builder = stockade_core::DriverAdmin::images(&driver).unwrap();
            builder.import(&tarball, "tiny", &mut |_: &str| {}).await.unwrap();
            let again = builder
                .import(&tarball, "tiny", &mut |_: &str| {})
                .await
                .unwrap_err();
            assert!(again.to_string().contains("exists"), "{again}");
            let not_tar = builder
                .import(&tree.join("etc/passwd"), "other", &mut |_: &str| {})
                .await
                .unwrap_err();
            assert_eq!(not_tar.kind(), stockade_core::ErrorKind::Invalid, "{not_tar}");
            assert!(not_tar.to_string().contains("tarball"), "{not_tar}");
            let bad_name = builder
                .import(&tarball, "latest", &mut |_: &str| {})
                .await
                .unwrap_err();
            assert!(bad_name.to_string().contains("name"), "{bad_name}");
            let driver: Arc<dyn Driver> = Arc::new(driver);
            let info = driver
                .create(SandboxSpec {
                    image: Some("tiny".into()),
                    ..h.spec()
                })
                .await
                .unwrap();
            let sandbox = Sandbox {
                driver: Arc::clone(&driver),
                id: info.id.clone(),
            };
            assert_eq!(info.details["image"], "tiny");
            let out = sh(&sandbox, "ls /bin; uname -r").await;
            assert!(out.starts_with("busybox\ncat\nls\nsh\nuname\n"), "{out}");
            assert!(out.ends_with("cloud-amd64"), "{out}");
            drop(sandbox);
        });
    }

    /// With snapshots off every sandbox boots its kernel; a stopped sandbox always does.
    #[test]
    fn with_snapshots_off_a_sandbox_boots_cold() {
        let Some(h) = microvm() else { return };
        run(async {
            let mut config = fresh_config(&h, "cold");
            config
                .env
                .insert("STOCKADE_MICROVM_SNAPSHOTS".into(), "off".into());
            let driver = Arc::new(MicrovmDriver::from_config(&config).unwrap());
            let info = driver.create(h.spec()).await.unwrap();
            assert_eq!(info.details["started_from"], "cold boot", "{:?}", info.details);
            assert!(info.details.get("template").is_none(), "{:?}", info.details);
            let out = driver
                .exec(
                    &info.id,
                    stockade_core::ExecRequest {
                        argv: vec!["sh".into(), "-c".into(), "echo up".into()],
                        ..Default::default()
                    },
                )
                .await
                .unwrap()
                .output()
                .await
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "up");
            driver.destroy(&info.id).await.unwrap();
            let mut bad = h.config.clone();
            bad.env
                .insert("STOCKADE_MICROVM_SNAPSHOTS".into(), "maybe".into());
            let err = MicrovmDriver::from_config(&bad).unwrap_err().to_string();
            assert!(
                err.contains("STOCKADE_MICROVM_SNAPSHOTS") && err.contains("on or off"),
                "{err}"
            );
        });
    }

    /// Each bad setup is one clear error, and leaves no record, directory or process behind.
    fn refused(h: &Microvm, config: DriverConfig, spec: SandboxSpec, expect: &[&str]) {
        run(async {
            let home = config.home.clone();
            let driver = MicrovmDriver::from_config(&config).unwrap();
            let err = driver.create(spec).await.unwrap_err();
            assert_eq!(err.kind(), stockade_core::ErrorKind::Unsupported, "{err}");
            let text = err.to_string();
            for want in expect {
                assert!(text.contains(want), "{text:?} does not say {want:?}");
            }
            assert!(!text.contains('\n'), "{text:?} is more than one line");
            let layout = stockade_microvm::layout::Layout::at(&home);
            let left: Vec<_> = std::fs::read_dir(layout.records())
                .into_iter()
                .flatten()
                .flatten()
                .chain(
                    std::fs::read_dir(layout.root.join("vms"))
                        .into_iter()
                        .flatten()
                        .flatten(),
                )
                .map(|e| e.path())
                .collect();
            assert!(left.is_empty(), "left behind: {left:?}");
            let _ = h;
        });
    }

    fn fresh_config(h: &Microvm, name: &str) -> DriverConfig {
        let mut config = h.config.clone();
        config.home = h.config.home.join(name);
        config
    }

    #[test]
    fn no_qemu_is_one_error_naming_what_to_install() {
        let Some(h) = microvm() else { return };
        let mut config = fresh_config(&h, "no-qemu");
        config
            .env
            .insert("STOCKADE_QEMU".into(), "/nonexistent/qemu-system-x86_64".into());
        refused(
            &h,
            config,
            h.spec(),
            &["STOCKADE_QEMU", "/nonexistent/qemu-system-x86_64"],
        );
    }

    #[test]
    fn no_image_is_one_error_naming_the_command_that_builds_it() {
        let Some(h) = microvm() else { return };
        let mut config = fresh_config(&h, "no-image");
        let empty = config.home.join("no-images-here");
        config
            .env
            .insert("STOCKADE_VM_IMAGES".into(), empty.display().to_string());
        refused(
            &h,
            config,
            h.spec(),
            &["no VM image", "stockade image base --driver microvm"],
        );
    }

    #[test]
    fn an_image_without_its_kernel_is_one_error_naming_what_is_missing() {
        let Some(h) = microvm() else { return };
        let mut config = fresh_config(&h, "no-kernel");
        // A copy of the image's files, all but the kernel.
        let images = config.home.join("images");
        let base = std::fs::canonicalize(images_dir().join("latest")).unwrap();
        let broken = images.join("broken");
        std::fs::create_dir_all(broken.join("modules")).unwrap();
        for part in ["recipe.json", "modules/order"] {
            std::fs::copy(base.join(part), broken.join(part)).unwrap();
        }
        std::os::unix::fs::symlink(base.join("rootfs.ext4"), broken.join("rootfs.ext4")).unwrap();
        std::os::unix::fs::symlink("broken", images.join("latest")).unwrap();
        config
            .env
            .insert("STOCKADE_VM_IMAGES".into(), images.display().to_string());
        refused(
            &h,
            config,
            h.spec(),
            &["has no vmlinuz", "stockade image base --driver microvm"],
        );
    }

    #[test]
    fn kvm_asked_for_where_it_cannot_run_says_why() {
        let Some(h) = microvm() else { return };
        let probe = stockade_microvm::accel::KvmProbe::host();
        let Err(why) = probe.usable() else {
            eprintln!("this host's KVM is usable: nothing to refuse");
            return;
        };
        let spec = SandboxSpec {
            runtime: Some("qemu:kvm".into()),
            ..h.spec()
        };
        let config = fresh_config(&h, "no-kvm");
        refused(&h, config, spec, &["qemu:kvm", &why]);
    }
}
