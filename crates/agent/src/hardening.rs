//! Hardening for every process the agent starts, in one place.
//!
//! At agent start ([`Prepared::install_in_agent`]): the capability bounding set is emptied and the
//! seccomp deny-list ([`seccomp_policy`], a plain value) is installed on the agent itself. The agent
//! needs none of the denied calls after start, and every process it forks inherits both, so an exec
//! pays nothing for them (installing a filter per exec cost ~250 µs: the kernel prepares its action
//! cache on each install).
//!
//! Per exec, between `fork` and `execve`: [`apply_privileged`] (rlimits) before the user switch,
//! then [`apply`]: remaining capability sets cleared, no_new_privs, and landlock where the kernel
//! has it (its ruleset is built once, at start).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use stockade_proto::seccomp::{seccomp_policy, ArgMatch, DenyRule};
use stockade_proto::Hardening;

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

/// Hardening made ready before any fork: the seccomp programs compiled and the landlock ruleset
/// built (paths opened) once, so each exec only installs them.
#[derive(Debug)]
pub struct Prepared {
    pub config: Hardening,
    /// The cgroup every exec's reaper joins, when the agent enforces limits itself (VM guests).
    pub exec_cgroup: Option<ExecCgroup>,
    filters: Vec<BpfProgram>,
    /// Taken (in the forked child's own copy of memory) and installed there.
    landlock: std::sync::Mutex<Option<landlock::RulesetCreated>>,
}

/// A cgroup (v2) the agent made for its execs: its `cgroup.procs`, open for writing before the
/// cgroup file system was made read-only for the sandbox, and its `memory.events`.
#[derive(Debug)]
pub struct ExecCgroup {
    pub procs: std::fs::File,
    pub events: std::path::PathBuf,
}

impl ExecCgroup {
    /// Moves the calling process into the cgroup (its children follow).
    pub fn join(&self) -> std::io::Result<()> {
        use std::io::Write;
        (&self.procs).write_all(b"0")
    }

    /// How many processes the out-of-memory killer has killed in the cgroup.
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Prepared {
    pub fn new(config: Hardening) -> Result<Self, String> {
        let filters = if config.seccomp {
            compile(&seccomp_policy())?
        } else {
            Vec::new()
        };
        let landlock = match &config.landlock_writable {
            Some(writable) => Some(write_ruleset(writable).map_err(|e| format!("landlock: {e}"))?),
            None => None,
        };
        Ok(Prepared {
            config,
            exec_cgroup: None,
            filters,
            landlock: std::sync::Mutex::new(landlock),
        })
    }
}

impl Prepared {
    /// Run once in the agent, before it serves: empties its capability bounding set (it never
    /// execs, so it keeps its own capabilities, while nothing it starts can gain one) and installs
    /// the seccomp filters on it, for every descendant to inherit.
    pub fn install_in_agent(&self) -> Result<(), String> {
        if self.config.drop_capabilities {
            stockade_sys::drop_bounding_set().map_err(|e| format!("capability bounding set: {e}"))?;
        }
        for filter in &self.filters {
            seccompiler::apply_filter(filter).map_err(|e| format!("seccomp: {e}"))?;
        }
        Ok(())
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
    Ok(())
}

/// Steps after the user switch.
pub fn apply(p: &Prepared) -> Result<(), Failure> {
    if p.config.drop_capabilities {
        stockade_sys::drop_all_capabilities().map_err(|e| ("capabilities", errno_of(&e)))?;
    }
    if p.config.no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(|e| ("no_new_privs", e))?;
    }
    let ruleset = p.landlock.lock().ok().and_then(|mut r| r.take());
    if let Some(ruleset) = ruleset {
        ruleset
            .restrict_self()
            .map_err(|_| ("landlock", nix::errno::Errno::EPERM))?;
    }
    Ok(())
}

fn errno_of(e: &std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EPERM))
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

/// A landlock ruleset that handles every write access and allows it only beneath `writable` (and
/// the devices above). Best effort: on a kernel without landlock it enforces nothing, which
/// `stockade info` reports.
fn write_ruleset(writable: &[String]) -> Result<landlock::RulesetCreated, landlock::RulesetError> {
    use landlock::{path_beneath_rules, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, ABI};
    let abi = ABI::V5;
    let write = AccessFs::from_write(abi);
    let paths: Vec<&str> = writable
        .iter()
        .map(String::as_str)
        .chain(ALWAYS_WRITABLE.iter().copied())
        .collect();
    Ruleset::default()
        .handle_access(write)?
        .create()?
        .add_rules(path_beneath_rules(paths, write))
}

#[cfg(test)]
mod tests {
    use super::*;

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
