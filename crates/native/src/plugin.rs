//! The native driver as a plugin: its [`DriverFactory`] and its [`DriverAdmin`] side (whether
//! this host can run it, and the host facts `stockade info` prints).

use std::sync::Arc;

use async_trait::async_trait;
use stockade_core::{
    Driver, DriverAdmin, DriverConfig, DriverFactory, DriverFacts, Error, Registry, Result, SandboxId,
    SandboxSpec,
};

use crate::driver::{hardening_report, NativeDriver, DRIVER};

/// Makes the native driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct NativeFactory;

impl DriverFactory for NativeFactory {
    fn name(&self) -> &'static str {
        DRIVER
    }
    fn description(&self) -> &'static str {
        "Linux namespaces, overlayfs, cgroups, seccomp and landlock on this host; no daemon or image"
    }
    fn build(&self, config: &DriverConfig) -> Result<Arc<dyn Driver>> {
        Ok(Arc::new(NativeDriver::from_config(config)?))
    }
}

/// Adds the native driver to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(NativeFactory);
}

#[async_trait]
impl DriverAdmin for NativeDriver {
    async fn probe(&self) -> Result<()> {
        crate::host::report()
            .native_driver_usable
            .map_err(|reason| Error::unsupported(DRIVER, "sandboxes", reason))
    }

    async fn facts(&self) -> Result<DriverFacts> {
        let report = crate::host::report();
        let yes_no = |r: &std::result::Result<(), String>| match r {
            Ok(()) => "yes".to_owned(),
            Err(e) => format!("no ({e})"),
        };
        let mut details = vec![
            ("kernel".to_owned(), report.kernel.clone()),
            ("running as root".to_owned(), report.running_as_root.to_string()),
            ("namespaces".to_owned(), report.namespaces.join(", ")),
            ("user namespaces".to_owned(), yes_no(&report.user_namespaces)),
            (
                "cgroups".to_owned(),
                format!("{} ({})", report.cgroup, report.cgroup_detail),
            ),
        ];
        match report.cgroup_favordynmods {
            Some(true) => details.push(("cgroup moves".into(), "fast (favordynmods)".into())),
            Some(false) => details.push((
                "cgroup moves".into(),
                "slow after idle: each sandbox start may wait an RCU grace period (~10 ms); \
                 `mount -o remount,favordynmods` on the cgroup2 mount removes that (scripts/setup does)"
                    .into(),
            )),
            None => {}
        }
        let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
        details.push(("overlayfs".into(), yes(report.overlayfs)));
        details.push(("seccomp".into(), yes(report.seccomp)));
        details.push((
            "landlock".into(),
            report
                .landlock_abi
                .map(|v| format!("yes (ABI {v})"))
                .unwrap_or_else(|| "no (not an active LSM)".into()),
        ));
        let defaults = hardening_report(
            &SandboxSpec::default(),
            &crate::idmap::IdMap::for_sandbox(&SandboxId::from_random(0), 0, 0),
        );
        let denied = defaults["seccomp"]["denied"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        details.push((
            "sandbox defaults".into(),
            format!(
                "every capability dropped; no_new_privs; seccomp deny-list of {denied} syscalls plus namespace clones, \
                 AF_VSOCK and TIOCSTI; landlock {}; {} masked and {} read-only kernel paths; root mapped to an \
                 unprivileged host uid; network none (loopback only)",
                if report.landlock_abi.is_some() {
                    "write rules"
                } else {
                    "off (kernel lacks it)"
                },
                crate::mount_plan::MASKED_PATHS.len(),
                crate::mount_plan::READ_ONLY_PATHS.len()
            ),
        ));
        report
            .native_driver_usable
            .clone()
            .map_err(|reason| Error::unsupported(DRIVER, "sandboxes", reason))?;
        Ok(DriverFacts {
            summary: format!("{} ({} cgroups)", report.kernel, report.cgroup),
            details,
            json: serde_json::to_value(&report).unwrap_or_default(),
        })
    }
}
