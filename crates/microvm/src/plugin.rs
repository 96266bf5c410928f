//! The microvm driver as a plugin: its factory, what `stockade info` says of this host (the VMMs
//! installed, the acceleration and why not KVM, the image), and its image builder
//! (`stockade image base --driver microvm`).

use std::sync::Arc;

use async_trait::async_trait;
use stockade_core::{
    Driver, DriverAdmin, DriverConfig, DriverFactory, DriverFacts, Error, ImageBuilder, Registry, Result,
};

use crate::accel::KvmProbe;
use crate::driver::{find_program, MicrovmDriver};
use crate::image::VmRecipe;
use crate::DRIVER;

/// Makes the microvm driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct MicrovmFactory;

impl DriverFactory for MicrovmFactory {
    fn name(&self) -> &'static str {
        DRIVER
    }
    fn description(&self) -> &'static str {
        "a virtual machine per sandbox with its own kernel (QEMU microvm; KVM where usable, else software emulation)"
    }
    fn takes_images(&self) -> bool {
        true
    }
    fn build(&self, config: &DriverConfig) -> Result<Arc<dyn Driver>> {
        Ok(Arc::new(MicrovmDriver::from_config(config)?))
    }
}

/// Adds the microvm driver to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(MicrovmFactory);
}

#[async_trait]
impl DriverAdmin for MicrovmDriver {
    /// Template states unused for a week (their disks stay: sandboxes' disks may be overlays on
    /// them), and VM directories without a record that are over two minutes old (a create's
    /// directory exists a moment before its record).
    async fn gc(&self) -> Result<Vec<String>> {
        let mut removed = crate::template::reclaim_unused(self.images_dir());
        let vms = self.layout().root.join("vms");
        for entry in std::fs::read_dir(&vms).into_iter().flatten().flatten() {
            let Ok(id) = stockade_core::SandboxId::parse(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > std::time::Duration::from_secs(120));
            let recorded = self.layout().records().join(format!("{id}.json")).exists();
            if old && !recorded && std::fs::remove_dir_all(entry.path()).is_ok() {
                removed.push(format!("VM directory {}", entry.path().display()));
            }
        }
        Ok(removed)
    }

    async fn probe(&self) -> Result<()> {
        self.qemu()?;
        crate::image::find(self.images_dir(), "latest")?;
        Ok(())
    }

    async fn facts(&self) -> Result<DriverFacts> {
        let kvm = KvmProbe::host();
        let mut details = Vec::new();
        let qemu = self.qemu();
        details.push((
            "qemu".to_owned(),
            match &qemu {
                Ok(path) => path.display().to_string(),
                Err(e) => format!("no ({e})"),
            },
        ));
        let search = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        for vmm in ["firecracker", "cloud-hypervisor"] {
            details.push((
                vmm.to_owned(),
                match find_program(&search, vmm) {
                    Some(p) => format!(
                        "found at {} (its backend is not built yet; QEMU is used)",
                        p.display()
                    ),
                    None => "not installed".to_owned(),
                },
            ));
        }
        let accel = match kvm.usable() {
            Ok(()) => "kvm".to_owned(),
            Err(why) => format!("tcg (software emulation): KVM unusable: {why}"),
        };
        details.push(("acceleration".to_owned(), accel.clone()));
        let image = crate::image::find(self.images_dir(), "latest");
        details.push((
            "image".to_owned(),
            match &image {
                Ok(img) => format!(
                    "{} (kernel {}) in {}",
                    img.key,
                    img.kernel_release,
                    img.dir.display()
                ),
                Err(e) => format!("none ({e})"),
            },
        ));
        details.push((
            "sandbox defaults".to_owned(),
            format!(
                "{} MiB (with --memory: the limit plus {} MiB, the limit held by a cgroup in the guest), 1 vCPU, no NIC; \
                 inside, the agent's strict hardening (no capabilities, no_new_privs, seccomp, landlock) in a pid \
                 namespace of its own",
                crate::driver::DEFAULT_MEMORY_MIB,
                crate::driver::GUEST_OVERHEAD_MIB
            ),
        ));
        let json = serde_json::json!({
            "qemu": qemu.as_ref().ok().map(|p| p.display().to_string()),
            "kvm_usable": kvm.usable().is_ok(),
            "kvm_reason": kvm.usable().err(),
            "pvm": kvm.pvm,
            "image": image.as_ref().ok().map(|i| i.key.clone()),
        });
        qemu?;
        let image = image?;
        Ok(DriverFacts {
            summary: format!(
                "QEMU microvm, {}; kernel {}",
                accel.split(':').next().unwrap_or_default(),
                image.kernel_release
            ),
            details,
            json,
        })
    }

    fn images(&self) -> Option<&dyn ImageBuilder> {
        Some(self)
    }
}

#[async_trait]
impl ImageBuilder for MicrovmDriver {
    async fn base(
        &self,
        scratch: &std::path::Path,
        progress: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<String> {
        let image = crate::image::build(self.images_dir(), &VmRecipe::default(), scratch, progress).await?;
        Ok(image.key)
    }

    async fn build(
        &self,
        _dir: &std::path::Path,
        _tag: &str,
        _progress: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<()> {
        Err(Error::unsupported(
            DRIVER,
            "image build",
            "VM images come from `stockade image base --driver microvm`",
        ))
    }

    async fn import(
        &self,
        tarball: &std::path::Path,
        name: &str,
        progress: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<()> {
        let scratch = self.layout().root.join("scratch");
        crate::image::import(self.images_dir(), tarball, name, &scratch, progress)
            .await
            .map(drop)
    }
}
