//! Hardening applied to every exec'd process, in one place: [`apply`], called by the command's
//! child between `fork` and `execve`. The seccomp rule set is a plain value ([`seccomp_policy`]),
//! compiled to BPF once when the agent starts ([`Prepared::new`]).
//!
//! Order matters: rlimits and the capability bounding set first (they need privilege), then the
//! caller switches user, then [`apply`] clears the remaining capability sets, sets no_new_privs,
//! restricts writes with landlock where the kernel has it, and installs seccomp last.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use stockade_proto::Hardening;

/// One entry of the deny-list: `syscall` (optionally only when an argument matches) fails with
/// `errno`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyRule {
    pub syscall: &'static str,
    pub nr: i64,
    pub when: Option<ArgMatch>,
    pub errno: i32,
}

/// An argument condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgMatch {
    /// Argument `index` (32-bit compare) equals `value`.
    Eq { index: u8, value: u64 },
    /// All bits of `mask` are set in argument `index`.
    HasBits { index: u8, mask: u64 },
}

/// Syscalls denied outright with EPERM: mounting and namespaces, tracing other processes, kernel
/// modules and kexec, keyrings, BPF and perf, io_uring (it bypasses seccomp for the ops it runs),
/// userfaultfd, handle-based opens, clock and swap changes, reboot.
pub const DENIED: &[(&str, i64)] = &[
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("kcmp", libc::SYS_kcmp),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("acct", libc::SYS_acct),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("quotactl", libc::SYS_quotactl),
    ("syslog", libc::SYS_syslog),
    ("vhangup", libc::SYS_vhangup),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
];

/// Namespace flags `clone` may not carry.
pub const CLONE_NAMESPACE_FLAGS: &[(&str, u64)] = &[
    ("CLONE_NEWNS", libc::CLONE_NEWNS as u64),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS as u64),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC as u64),
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER as u64),
    ("CLONE_NEWPID", libc::CLONE_NEWPID as u64),
    ("CLONE_NEWNET", libc::CLONE_NEWNET as u64),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP as u64),
];

const AF_VSOCK: u64 = 40;
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;

/// The whole deny-list as a value.
pub fn seccomp_policy() -> Vec<DenyRule> {
    let mut rules: Vec<DenyRule> = DENIED
        .iter()
        .map(|&(syscall, nr)| DenyRule {
            syscall,
            nr,
            when: None,
            errno: libc::EPERM,
        })
        .collect();
    for &(_, mask) in CLONE_NAMESPACE_FLAGS {
        rules.push(DenyRule {
            syscall: "clone",
            nr: libc::SYS_clone,
            when: Some(ArgMatch::HasBits { index: 0, mask }),
            errno: libc::EPERM,
        });
    }
    // clone3 passes its flags in memory, out of seccomp's sight: report it missing, and libc falls
    // back to clone, whose flags we can check.
    rules.push(DenyRule {
        syscall: "clone3",
        nr: libc::SYS_clone3,
        when: None,
        errno: libc::ENOSYS,
    });
    rules.push(DenyRule {
        syscall: "socket",
        nr: libc::SYS_socket,
        when: Some(ArgMatch::Eq {
            index: 0,
            value: AF_VSOCK,
        }),
        errno: libc::EPERM,
    });
    for request in [TIOCSTI, TIOCLINUX] {
        rules.push(DenyRule {
            syscall: "ioctl",
            nr: libc::SYS_ioctl,
            when: Some(ArgMatch::Eq {
                index: 1,
                value: request,
            }),
            errno: libc::EPERM,
        });
    }
    rules
}

#[cfg(target_arch = "x86_64")]
const ARCH: seccompiler::TargetArch = seccompiler::TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: seccompiler::TargetArch = seccompiler::TargetArch::aarch64;

/// Compiles the policy: one BPF program per errno (seccomp returns one errno per filter).
pub fn compile(policy: &[DenyRule]) -> Result<Vec<BpfProgram>, String> {
    let mut by_errno: BTreeMap<i32, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
    for rule in policy {
        let chain = by_errno
            .entry(rule.errno)
            .or_default()
            .entry(rule.nr)
            .or_default();
        if let Some(m) = rule.when {
            let cond = match m {
                ArgMatch::Eq { index, value } => {
                    SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
                }
                ArgMatch::HasBits { index, mask } => {
                    SeccompCondition::new(index, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(mask), mask)
                }
            }
            .map_err(|e| format!("seccomp rule for {}: {e}", rule.syscall))?;
            chain.push(
                SeccompRule::new(vec![cond])
                    .map_err(|e| format!("seccomp rule for {}: {e}", rule.syscall))?,
            );
        }
    }
    // A syscall denied unconditionally must have an empty chain (an empty chain always matches).
    for rule in policy.iter().filter(|r| r.when.is_none()) {
        if let Some(chain) = by_errno.get_mut(&rule.errno).and_then(|m| m.get_mut(&rule.nr)) {
            chain.clear();
        }
    }
    by_errno
        .into_iter()
        .map(|(errno, rules)| {
            let filter = SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno as u32),
                ARCH,
            )
            .map_err(|e| format!("seccomp filter: {e}"))?;
            BpfProgram::try_from(filter).map_err(|e| format!("seccomp compile: {e}"))
        })
        .collect()
}

/// Hardening made ready before any fork.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub config: Hardening,
    filters: Vec<BpfProgram>,
}

impl Prepared {
    pub fn new(config: Hardening) -> Result<Self, String> {
        let filters = if config.seccomp {
            compile(&seccomp_policy())?
        } else {
            Vec::new()
        };
        Ok(Prepared { config, filters })
    }
}

/// What failed, for the exec's error message.
pub type Failure = (&'static str, nix::errno::Errno);

/// Steps that need privilege; run before switching user.
pub fn apply_privileged(p: &Prepared) -> Result<(), Failure> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // A hard limit can only go down from inside a user namespace: ask for at most what the host
    // gave us.
    let set = |resource: Resource, want: u64, name: &'static str| -> Result<(), Failure> {
        let (_, hard) = getrlimit(resource).map_err(|e| (name, e))?;
        let n = want.min(hard);
        setrlimit(resource, n, n).map_err(|e| (name, e))
    };
    if let Some(n) = p.config.max_open_files {
        set(Resource::RLIMIT_NOFILE, n, "RLIMIT_NOFILE")?;
    }
    if let Some(n) = p.config.max_file_size {
        set(Resource::RLIMIT_FSIZE, n, "RLIMIT_FSIZE")?;
    }
    if p.config.drop_capabilities {
        // Without CAP_SETPCAP (say, in a container that already limits it) the set can only be
        // checked, not emptied.
        if caps::clear(None, caps::CapSet::Bounding).is_err()
            && !caps::read(None, caps::CapSet::Bounding)
                .map(|s| s.is_empty())
                .unwrap_or(false)
        {
            return Err(("capability bounding set", nix::errno::Errno::EPERM));
        }
    }
    Ok(())
}

/// Steps after the user switch, seccomp last.
pub fn apply(p: &Prepared) -> Result<(), Failure> {
    if p.config.drop_capabilities {
        for set in [
            caps::CapSet::Ambient,
            caps::CapSet::Inheritable,
            caps::CapSet::Effective,
            caps::CapSet::Permitted,
        ] {
            caps::clear(None, set).map_err(|_| ("capabilities", nix::errno::Errno::EPERM))?;
        }
    }
    if p.config.no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(|e| ("no_new_privs", e))?;
    }
    if let Some(writable) = &p.config.landlock_writable {
        restrict_writes(writable);
    }
    for filter in &p.filters {
        seccompiler::apply_filter(filter).map_err(|_| ("seccomp", nix::errno::Errno::EPERM))?;
    }
    Ok(())
}

/// Devices and kernel files every program writes to, whatever else is allowed.
const ALWAYS_WRITABLE: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/pts",
    "/dev/ptmx",
    "/proc",
];

/// Landlock, best effort: on kernels without it this is a no-op, reported by `stockade info`.
fn restrict_writes(writable: &[String]) {
    use landlock::{path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, ABI};
    let abi = ABI::V3;
    let paths: Vec<&str> = writable
        .iter()
        .map(String::as_str)
        .chain(ALWAYS_WRITABLE.iter().copied())
        .collect();
    let result = Ruleset::default()
        .handle_access(AccessFs::from_write(abi))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(paths, AccessFs::from_all(abi))))
        .and_then(|r| r.restrict_self());
    let _ = result;
}

/// Whether this kernel enforces landlock (checked by trying to create an empty ruleset).
pub fn landlock_supported() -> bool {
    use landlock::{AccessFs, Compatible, Ruleset, RulesetAttr, ABI};
    Ruleset::default()
        .set_compatibility(landlock::CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_write(ABI::V1))
        .and_then(|r| r.create())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(policy: &[DenyRule], name: &str) -> bool {
        policy.iter().any(|r| r.syscall == name && r.when.is_none())
    }

    #[test]
    fn policy_denies_what_the_threat_model_names() {
        let p = seccomp_policy();
        for name in [
            "mount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "open_by_handle_at",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "userfaultfd",
        ] {
            assert!(denied(&p, name), "{name} is not denied");
        }
        assert!(p.iter().all(|r| r.syscall != "execve" && r.syscall != "read"));
    }

    #[test]
    fn conditional_rules() {
        let p = seccomp_policy();
        let clone_masks: Vec<u64> = p
            .iter()
            .filter(|r| r.syscall == "clone")
            .filter_map(|r| match r.when {
                Some(ArgMatch::HasBits { index: 0, mask }) => Some(mask),
                _ => None,
            })
            .collect();
        assert_eq!(clone_masks.len(), 7);
        assert!(clone_masks.contains(&(libc::CLONE_NEWUSER as u64)));
        assert!(p
            .iter()
            .any(|r| r.syscall == "socket" && r.when == Some(ArgMatch::Eq { index: 0, value: 40 })));
        assert!(p.iter().any(|r| r.syscall == "ioctl"
            && r.when
                == Some(ArgMatch::Eq {
                    index: 1,
                    value: 0x5412
                })));
        assert!(p.iter().any(|r| r.syscall == "clone3" && r.errno == libc::ENOSYS));
    }

    #[test]
    fn compiles_to_one_program_per_errno() {
        let programs = compile(&seccomp_policy()).unwrap();
        assert_eq!(programs.len(), 2);
        assert!(programs.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn default_hardening_is_strict() {
        let h = Hardening::default();
        assert!(h.drop_capabilities && h.no_new_privs && h.seccomp);
        assert!(h.landlock_writable.is_some());
    }
}
