//! Which acceleration a VM gets: KVM when `/dev/kvm` can run a stock guest kernel, else QEMU's
//! software emulation (TCG). A PVM host (`kvm_pvm`: a `/dev/kvm` that only runs PVM-enabled
//! guest kernels) is said to be one, with what it would need.

use serde::{Deserialize, Serialize};

/// How guest code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What this host's `/dev/kvm` can do, read from the files that tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmProbe {
    pub dev_kvm: bool,
    pub openable: bool,
    pub pvm: bool,
    pub cpu_flag: bool,
}

impl KvmProbe {
    /// Reads this host.
    pub fn host() -> KvmProbe {
        let dev_kvm = std::path::Path::new("/dev/kvm").exists();
        let openable = dev_kvm
            && std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        KvmProbe {
            dev_kvm,
            openable,
            pvm: std::path::Path::new("/sys/module/kvm_pvm").exists(),
            cpu_flag: cpuinfo
                .lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm")),
        }
    }

    /// `Ok` when KVM can run the stock guest kernel, else why not.
    pub fn usable(&self) -> Result<(), String> {
        if !self.dev_kvm {
            return Err("/dev/kvm is missing (no KVM on this machine, or not passed through to it)".into());
        }
        if !self.openable {
            return Err("/dev/kvm cannot be opened read-write (run as root or join the kvm group)".into());
        }
        if self.pvm {
            return Err(
                "/dev/kvm is PVM (module kvm_pvm): stock guest kernels abort or crawl under it; \
                        it needs a PVM-enabled guest kernel, or a host with VT-x/AMD-V"
                    .into(),
            );
        }
        if !self.cpu_flag {
            return Err(
                "the CPU shows no vmx or svm flag (hardware virtualisation is off or not nested)".into(),
            );
        }
        Ok(())
    }

    /// The acceleration for a sandbox that asked for `wanted` (`None`: the best there is).
    pub fn choose(&self, wanted: Option<Accel>) -> Result<Accel, String> {
        match wanted {
            Some(Accel::Tcg) => Ok(Accel::Tcg),
            Some(Accel::Kvm) => self.usable().map(|()| Accel::Kvm),
            None => Ok(if self.usable().is_ok() {
                Accel::Kvm
            } else {
                Accel::Tcg
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: KvmProbe = KvmProbe {
        dev_kvm: true,
        openable: true,
        pvm: false,
        cpu_flag: true,
    };

    #[test]
    fn kvm_is_chosen_only_where_it_runs_a_stock_kernel() {
        assert_eq!(GOOD.choose(None), Ok(Accel::Kvm));
        let pvm = KvmProbe { pvm: true, ..GOOD };
        assert_eq!(pvm.choose(None), Ok(Accel::Tcg));
        let err = pvm.choose(Some(Accel::Kvm)).unwrap_err();
        assert!(err.contains("PVM"), "{err}");
        let none = KvmProbe {
            dev_kvm: false,
            openable: false,
            ..GOOD
        };
        assert!(none
            .choose(Some(Accel::Kvm))
            .unwrap_err()
            .contains("/dev/kvm is missing"));
        assert_eq!(none.choose(Some(Accel::Tcg)), Ok(Accel::Tcg));
    }
}
