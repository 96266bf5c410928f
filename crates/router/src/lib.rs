//! One `Driver` over all of them: new sandboxes go to the driver their spec names, existing ones
//! to the driver whose records hold them, and `list` merges every driver's sandboxes. Drivers are
//! made on first use, so a command on a native sandbox never looks for a container engine.

use std::sync::Arc;

use async_trait::async_trait;
use stockade_core::{
    Driver, Error, ExecRequest, ExecSession, FileOp, FileReply, Result, SandboxId, SandboxInfo, SandboxSpec,
    Stats,
};
use stockade_docker::DockerDriver;
use stockade_native::NativeDriver;
use tokio::sync::OnceCell;

/// The names `--driver` takes.
pub const DRIVERS: &[&str] = &["native", "docker", "podman"];

/// Every driver behind one [`Driver`].
#[derive(Default)]
pub struct Router {
    native: OnceCell<Arc<NativeDriver>>,
    docker: OnceCell<Arc<DockerDriver>>,
    podman: OnceCell<Arc<DockerDriver>>,
}

fn container_driver(name: &'static str) -> Result<DockerDriver> {
    let agent = stockade_docker::agent_binary::find()?;
    Ok(
        DockerDriver::new(&stockade_store::home_from_env(), agent, name)?.with_progress(Arc::new(
            |line: &str| {
                eprintln!("stockade: {line}");
            },
        )),
    )
}

impl Router {
    pub async fn native(&self) -> Result<&Arc<NativeDriver>> {
        self.native
            .get_or_try_init(|| async { NativeDriver::from_env().map(Arc::new) })
            .await
    }

    /// The container driver for `name` (`docker` or `podman`).
    pub async fn container(&self, name: &'static str) -> Result<&Arc<DockerDriver>> {
        let cell = if name == "podman" {
            &self.podman
        } else {
            &self.docker
        };
        cell.get_or_try_init(|| async { container_driver(name).map(Arc::new) })
            .await
    }

    /// The container records, read without an agent binary or an engine.
    fn container_records(&self) -> stockade_store::RecordStore<stockade_docker::driver::Record> {
        let dir = stockade_store::home_from_env().join("docker");
        stockade_store::RecordStore::new(dir.join("records"), dir.join("lock"))
    }

    async fn by_name(&self, name: &str) -> Result<Arc<dyn Driver>> {
        Ok(match name {
            "native" => Arc::clone(self.native().await?) as Arc<dyn Driver>,
            "docker" => Arc::clone(self.container("docker").await?) as Arc<dyn Driver>,
            "podman" => Arc::clone(self.container("podman").await?) as Arc<dyn Driver>,
            other => {
                return Err(Error::invalid(
                    "driver",
                    format!("{other:?} is not a driver; known drivers: {}", DRIVERS.join(", ")),
                ))
            }
        })
    }

    /// The driver that holds the sandbox `id_or_name`.
    async fn holding(&self, id_or_name: &str) -> Result<Arc<dyn Driver>> {
        let native = self.native().await;
        if let Ok(native) = native {
            if native.store().resolve(id_or_name).is_ok() {
                return Ok(Arc::clone(native) as Arc<dyn Driver>);
            }
        }
        if let Ok(record) = self.container_records().resolve(id_or_name) {
            return self
                .by_name(if record.driver == "podman" {
                    "podman"
                } else {
                    "docker"
                })
                .await;
        }
        match native {
            Ok(_) => Err(Error::NotFound(id_or_name.to_owned())),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Driver for Router {
    fn name(&self) -> &'static str {
        "any"
    }

    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        let driver = self.by_name(&spec.driver).await?;
        // Names are unique across drivers, so `exec NAME` always means one sandbox.
        if let Some(name) = &spec.name {
            if self.holding(name).await.is_ok() {
                return Err(Error::NameTaken(name.clone()));
            }
        }
        driver.create(spec).await
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        let mut all = match self.native().await {
            Ok(native) => native.list().await?,
            // No native agent here: containers may still be listed.
            Err(Error::Unsupported { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        if !self.container_records().list()?.is_empty() {
            all.extend(self.container("docker").await?.list().await?);
        }
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    async fn get(&self, id_or_name: &str) -> Result<SandboxInfo> {
        self.holding(id_or_name).await?.get(id_or_name).await
    }
    async fn stop(&self, id: &SandboxId) -> Result<()> {
        self.holding(id.as_str()).await?.stop(id).await
    }
    async fn start(&self, id: &SandboxId) -> Result<()> {
        self.holding(id.as_str()).await?.start(id).await
    }
    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        self.holding(id.as_str()).await?.destroy(id).await
    }
    async fn exec(&self, id: &SandboxId, req: ExecRequest) -> Result<ExecSession> {
        self.holding(id.as_str()).await?.exec(id, req).await
    }
    async fn exec_kept(&self, id: &SandboxId, req: ExecRequest, exec_id: &str) -> Result<ExecSession> {
        self.holding(id.as_str()).await?.exec_kept(id, req, exec_id).await
    }
    async fn attach(&self, id: &SandboxId, exec_id: &str, from_seq: u64) -> Result<ExecSession> {
        self.holding(id.as_str())
            .await?
            .attach(id, exec_id, from_seq)
            .await
    }
    async fn file(&self, id: &SandboxId, op: FileOp) -> Result<FileReply> {
        self.holding(id.as_str()).await?.file(id, op).await
    }
    async fn stats(&self, id: &SandboxId) -> Result<Stats> {
        self.holding(id.as_str()).await?.stats(id).await
    }
}
