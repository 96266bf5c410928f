//! The container drivers as plugins: `docker` (whatever engine answers first) and `podman`
//! (Podman's sockets only), with their [`DriverAdmin`] side: engine facts, circuit breakers,
//! garbage collection of unrecorded containers, and images.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use stockade_core::{
    CircuitInfo, Driver, DriverAdmin, DriverConfig, DriverFactory, DriverFacts, ImageBuilder, Registry,
    Result,
};

use crate::driver::DockerDriver;
use crate::engine::EngineFacts;

/// Makes one container driver.
#[derive(Debug, Clone, Copy)]
pub struct ContainerFactory {
    name: &'static str,
    description: &'static str,
}

/// `docker`: the first engine found, in the documented order.
pub const DOCKER: ContainerFactory = ContainerFactory {
    name: "docker",
    description:
        "containers on any Docker Engine API (Docker, Podman, OrbStack, Colima); gVisor with --runtime runsc",
};

/// `podman`: Podman's API sockets only.
pub const PODMAN: ContainerFactory = ContainerFactory {
    name: "podman",
    description: "containers on Podman's Docker-compatible API socket",
};

impl DriverFactory for ContainerFactory {
    fn name(&self) -> &'static str {
        self.name
    }
    fn description(&self) -> &'static str {
        self.description
    }
    fn takes_images(&self) -> bool {
        true
    }
    fn build(&self, config: &DriverConfig) -> Result<Arc<dyn Driver>> {
        Ok(Arc::new(DockerDriver::from_config(config, self.name)?))
    }
}

/// Adds `docker` and `podman` to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(DOCKER).register(PODMAN);
}

fn facts_of(f: &EngineFacts) -> DriverFacts {
    let runtimes: Vec<String> = f
        .runtimes
        .iter()
        .map(|r| {
            if r.args.is_empty() {
                r.name.clone()
            } else {
                format!("{} ({})", r.name, r.args.join(" "))
            }
        })
        .collect();
    DriverFacts {
        summary: format!(
            "{} {} (API {}) at {} [{}]",
            f.kind, f.version, f.api_version, f.endpoint, f.found_by
        ),
        details: vec![(
            "runtimes".into(),
            format!(
                "{}; default {}; cgroup v{}; storage {}",
                runtimes.join(", "),
                f.default_runtime,
                f.cgroup_version,
                f.storage_driver
            ),
        )],
        json: serde_json::json!({ "engine": f }),
    }
}

#[async_trait]
impl DriverAdmin for DockerDriver {
    async fn probe(&self) -> Result<()> {
        self.engine().await.map(drop)
    }

    async fn facts(&self) -> Result<DriverFacts> {
        Ok(facts_of(&DockerDriver::facts(self).await?))
    }

    fn circuits(&self) -> Vec<CircuitInfo> {
        self.breaker_states()
            .into_iter()
            .map(|(endpoint, state, failures)| CircuitInfo {
                endpoint,
                state: format!("{state:?}").to_lowercase(),
                failures,
            })
            .collect()
    }

    async fn gc(&self) -> Result<Vec<String>> {
        match DockerDriver::gc(self).await {
            // No engine here: nothing of it to collect.
            Err(stockade_core::Error::Unsupported { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    fn images(&self) -> Option<&dyn ImageBuilder> {
        Some(self)
    }
}

#[async_trait]
impl ImageBuilder for DockerDriver {
    async fn base(
        &self,
        scratch: &Path,
        progress: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<String> {
        let engine = self.engine().await?;
        crate::image::base(engine, &crate::image::BaseRecipe::default(), scratch, progress).await
    }

    async fn build(
        &self,
        dir: &Path,
        tag: &str,
        progress: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<()> {
        crate::image::build(self.engine().await?, dir, tag, progress).await
    }

    async fn import(
        &self,
        tarball: &Path,
        name: &str,
        progress: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<()> {
        crate::image::import_tarball(self.engine().await?, tarball, name, progress).await
    }
}
