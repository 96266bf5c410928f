//! The QEMU backend: the command line of a `-M microvm` guest (pure, so it is tested as a value)
//! and QMP, QEMU's JSON control protocol over a unix socket.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use stockade_core::{Error, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::accel::Accel;

/// Everything one guest's QEMU process is started with.
#[derive(Debug, Clone)]
pub struct QemuGuest {
    pub binary: PathBuf,
    pub accel: Accel,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub disk: PathBuf,
    /// The guest's serial console goes to this file.
    pub console: PathBuf,
    /// QEMU connects the agent's virtio-serial port to the unix socket listening here.
    pub agent_socket: PathBuf,
    /// QMP listens here.
    pub qmp_socket: PathBuf,
    /// The guest's NIC, if any.
    pub nic: Nic,
    /// Under emulation, the host's TSC frequency: an emulated guest's TSC is the host's, and a
    /// guest that calibrates it against the emulated PIT while the host is busy can get it
    /// wildly wrong and then spin in a delay loop for ever (seen with four guests booting at
    /// once on two cores). Told the frequency, the guest calibrates nothing.
    pub tsc_khz: Option<u64>,
    /// A saved state to start from (`-incoming`) instead of booting the kernel.
    pub incoming: Option<PathBuf>,
}

/// A guest's network card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nic {
    /// `--network none`: no NIC at all; the guest has its loopback only.
    None,
    /// `--network full`: a virtio NIC on the tap whose queue QEMU inherits as this fd.
    Tap { fd: i32 },
    /// The NIC a template is saved with, on a backend that reaches nothing and keeps no state of
    /// its own (a port on an otherwise empty QEMU hub: a user-mode backend would put slirp's
    /// state in the snapshot, which a tap-backed restore cannot load); a restored sandbox's QEMU
    /// puts its own tap behind it.
    Unplugged,
}

/// The host's TSC frequency in kHz, from what its kernel printed in `/proc/cpuinfo`.
pub fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let has_tsc = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "constant_tsc"));
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    (has_tsc && mhz > 0.0).then_some((mhz * 1000.0) as u64)
}

use stockade_proto::VM_AGENT_PORT as PORT_NAME;

impl QemuGuest {
    /// The guest of a sandbox's record, booting `initramfs`, with the sandbox's own files.
    pub fn for_record(
        record: &crate::layout::Record,
        initramfs: PathBuf,
        layout: &crate::layout::Layout,
    ) -> QemuGuest {
        let id = &record.id;
        QemuGuest {
            binary: record.qemu.clone(),
            accel: record.accel,
            memory_mib: record.memory_mib,
            vcpus: record.vcpus,
            kernel: record.image.kernel.clone(),
            initramfs,
            disk: layout.disk(id),
            console: layout.console(id),
            agent_socket: layout.serial_socket(id),
            qmp_socket: layout.qmp_socket(id),
            nic: match record.spec.network {
                stockade_core::NetworkMode::None => Nic::None,
                stockade_core::NetworkMode::Full => Nic::Unplugged,
            },
            tsc_khz: host_tsc_khz(),
            incoming: None,
        }
    }

    /// The guest kernel's command line: the serial console, power off on panic, freed pages
    /// zeroed (`init_on_free=1`: a snapshot then skips them, and a restored guest's QEMU never
    /// touches them; the template's state went from 113 MB to 73 MB), the root the agent's first
    /// stage mounts, and the TSC frequency when it is known.
    pub fn kernel_cmdline(&self) -> String {
        let mut line = String::from("console=ttyS0 quiet panic=-1 init_on_free=1 stockade.root=/dev/vda");
        if let (Accel::Tcg, Some(khz)) = (self.accel, self.tsc_khz) {
            line.push_str(&format!(" tsc_early_khz={khz} tsc=reliable"));
        }
        line
    }

    /// QEMU's arguments (without the program).
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        push("-M");
        push("microvm,pit=on,acpi=on,rtc=on");
        push("-accel");
        // TCG's translation cache defaults to 1 GiB per guest, and a guest fills much of it;
        // 128 MiB keeps the hot code of a booted guest and its tools.
        push(match self.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg,tb-size=128",
        });
        push("-cpu");
        push(match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        });
        push("-m");
        push(&format!("{}M", self.memory_mib));
        push("-smp");
        push(&self.vcpus.to_string());
        for fixed in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
            push(fixed);
        }
        // QEMU's own seccomp filter: no obsolete system calls, no privilege changes (setuid and
        // the like), no scheduler or resource control. Spawning stays allowed: the template's
        // state goes through `exec:cat`.
        push("-sandbox");
        push("on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny");
        push("-kernel");
        a.push(self.kernel.clone().into());
        let mut push = |s: &str| a.push(s.into());
        push("-initrd");
        a.push(self.initramfs.clone().into());
        let mut push = |s: &str| a.push(s.into());
        push("-append");
        push(&self.kernel_cmdline());
        push("-chardev");
        push(&format!("file,id=console,path={}", chardev_path(&self.console)));
        push("-serial");
        push("chardev:console");
        push("-drive");
        push(&format!(
            "id=root,file={},format=qcow2,if=none,cache=writeback,discard=unmap",
            chardev_path(&self.disk)
        ));
        push("-device");
        push("virtio-blk-device,drive=root");
        push("-device");
        push("virtio-serial-device,max_ports=2");
        push("-chardev");
        push(&format!(
            "socket,id=agent,path={}",
            chardev_path(&self.agent_socket)
        ));
        push("-device");
        push(&format!("virtserialport,chardev=agent,name={PORT_NAME}"));
        push("-object");
        push("rng-random,id=rng,filename=/dev/urandom");
        push("-device");
        push("virtio-rng-device,rng=rng");
        let netdev = match self.nic {
            Nic::None => None,
            Nic::Tap { fd } => Some(format!("tap,id=net0,fd={fd}")),
            Nic::Unplugged => Some("hubport,id=net0,hubid=0".to_owned()),
        };
        if let Some(netdev) = netdev {
            push("-netdev");
            push(&netdev);
            push("-device");
            push("virtio-net-device,netdev=net0");
        }
        push("-qmp");
        push(&format!(
            "unix:{},server=on,wait=off",
            chardev_path(&self.qmp_socket)
        ));
        if let Some(state) = &self.incoming {
            push("-incoming");
            push(&format!("exec:cat {}", crate::template::shell_quote(state)));
        }
        a
    }
}

/// QEMU option values are comma-separated: a comma in a path is written twice.
fn chardev_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// A QMP connection, past the greeting and capability negotiation.
pub struct Qmp {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Qmp {
    pub async fn connect(path: &Path) -> Result<Qmp> {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| Error::backend(format!("QMP {}", path.display()), e))?;
        let (rd, writer) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(rd),
            writer,
        };
        qmp.read_message().await?;
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    async fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .await
            .map_err(|e| Error::backend("QMP read", e))?;
        if n == 0 {
            return Err(Error::backend("QMP", "QEMU closed the connection"));
        }
        serde_json::from_str(&line).map_err(|e| Error::backend("QMP", format!("{e}: {line}")))
    }

    /// Runs `command`; returns its `return` value (events read meanwhile are dropped).
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if arguments.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = arguments;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| Error::backend("QMP write", e))?;
        loop {
            let reply = self.read_message().await?;
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                let desc = err["desc"].as_str().unwrap_or("error").to_owned();
                return Err(Error::backend(format!("QMP {command}"), desc));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest() -> QemuGuest {
        QemuGuest {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            memory_mib: 512,
            vcpus: 1,
            kernel: "/img/vmlinuz".into(),
            initramfs: "/img/initrd.cpio".into(),
            disk: "/vms/a,b/disk.qcow2".into(),
            console: "/vms/x/console.log".into(),
            agent_socket: "/vms/x/serial.sock".into(),
            qmp_socket: "/vms/x/qmp.sock".into(),
            nic: Nic::None,
            tsc_khz: Some(2_596_144),
            incoming: None,
        }
    }

    fn joined(g: &QemuGuest) -> String {
        g.args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_guest_without_network_has_no_nic() {
        let args = joined(&guest());
        assert!(args.contains("-M microvm"), "{args}");
        assert!(
            args.contains("-accel tcg,tb-size=128 -cpu max -m 512M -smp 1"),
            "{args}"
        );
        assert!(args.contains("-nodefaults"), "{args}");
        assert!(
            args.contains("-sandbox on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny"),
            "{args}"
        );
        assert!(!args.contains("netdev"), "{args}");
        assert!(
            args.contains("virtserialport,chardev=agent,name=stockade.agent"),
            "{args}"
        );
        // A comma in a path is doubled, as QEMU's option syntax needs.
        assert!(args.contains("file=/vms/a,,b/disk.qcow2,format=qcow2"), "{args}");
    }

    #[test]
    fn full_network_adds_one_tap_nic_and_kvm_uses_the_host_cpu() {
        let g = QemuGuest {
            nic: Nic::Tap { fd: 7 },
            accel: Accel::Kvm,
            ..guest()
        };
        let args = joined(&g);
        assert!(
            args.contains("-netdev tap,id=net0,fd=7 -device virtio-net-device,netdev=net0"),
            "{args}"
        );
        let template = QemuGuest {
            nic: Nic::Unplugged,
            ..guest()
        };
        assert!(joined(&template).contains("-netdev hubport,id=net0,hubid=0"));
        assert!(args.contains("-accel kvm -cpu host"), "{args}");
        // Only an emulated guest is told the TSC frequency; KVM reports its own.
        assert!(!args.contains("tsc_early_khz"), "{args}");
        assert!(joined(&guest()).contains("tsc_early_khz=2596144 tsc=reliable"));
        assert!(!joined(&guest()).contains("-incoming"));
    }

    #[test]
    fn a_restored_guest_reads_its_state_through_the_shell() {
        let g = QemuGuest {
            incoming: Some("/t/it's/state".into()),
            ..guest()
        };
        assert!(
            joined(&g).ends_with(r"-incoming exec:cat '/t/it'\''s/state'"),
            "{}",
            joined(&g)
        );
    }
}
