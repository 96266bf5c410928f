//! Stockade's seccomp deny-list as a plain value: what every exec'd process may not call. The
//! agent compiles it to BPF and installs it; drivers report it in `inspect`.

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
}
