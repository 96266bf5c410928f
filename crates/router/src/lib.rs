//! One `Driver` over a [`Registry`]: new sandboxes go to the driver their spec names (the
//! registry's default when it names none), existing ones to the driver the home's
//! [`Index`] says holds them, and `list` merges the drivers that hold any. Drivers are built on
//! first use, so a command on a native sandbox never looks for a container engine. The router
//! knows no driver by name: the binary assembles the registry.

use std::sync::Arc;

use async_trait::async_trait;
use stockade_core::{
    Driver, Error, ExecRequest, ExecSession, FileOp, FileReply, PortStream, Registry, Result, SandboxId,
    SandboxInfo, SandboxSpec, Stats,
};
use stockade_store::Index;

/// Every registered driver behind one [`Driver`].
#[derive(Debug)]
pub struct Router {
    registry: Registry,
    index: Index,
}

impl Router {
    /// A router over `registry`, with the index of the registry's home.
    pub fn new(registry: Registry) -> Self {
        let index = Index::of_home(&registry.config().home);
        Router { registry, index }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Builds every driver not built yet (each indexes its records once, when built, so a home
    /// written before the index is found). A driver that cannot be built here is left out; the
    /// first error that is not "unsupported here" (a bad home, say) is returned.
    fn build_all(&self) -> Option<Error> {
        let mut first = None;
        for name in self.registry.names() {
            match self.registry.driver(name) {
                Ok(_) | Err(Error::Unsupported { .. }) => {}
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first
    }

    /// The driver that holds the sandbox `id_or_name`.
    fn holding(&self, id_or_name: &str) -> Result<Arc<dyn Driver>> {
        if let Some(entry) = self.index.resolve(id_or_name)? {
            return self.registry.driver(&entry.driver);
        }
        if self.registry.built().len() < self.registry.names().len() {
            let failed = self.build_all();
            if let Some(entry) = self.index.resolve(id_or_name)? {
                return self.registry.driver(&entry.driver);
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Err(Error::NotFound(id_or_name.to_owned()))
    }
}

#[async_trait]
impl Driver for Router {
    fn name(&self) -> &'static str {
        "any"
    }

    async fn create(&self, mut spec: SandboxSpec) -> Result<SandboxInfo> {
        spec.driver = self.registry.check(&spec.driver)?.to_owned();
        // Names are unique across drivers, so `exec NAME` always means one sandbox: every driver's
        // record store claims the name in the shared index when it saves the record.
        self.registry.driver(&spec.driver)?.create(spec).await
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        let mut all = Vec::new();
        for name in self.registry.names() {
            // Built first: a driver indexes its older records when built.
            let driver = match self.registry.driver(name) {
                Ok(d) => d,
                // Not usable here (no agent, say) and holding nothing: nothing to list.
                Err(Error::Unsupported { .. }) if !self.index.holds_any(name) => continue,
                Err(e) => return Err(e),
            };
            if self.index.holds_any(name) {
                all.extend(driver.list().await?);
            }
        }
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    async fn get(&self, id_or_name: &str) -> Result<SandboxInfo> {
        self.holding(id_or_name)?.get(id_or_name).await
    }
    async fn stop(&self, id: &SandboxId) -> Result<()> {
        self.holding(id.as_str())?.stop(id).await
    }
    async fn start(&self, id: &SandboxId) -> Result<()> {
        self.holding(id.as_str())?.start(id).await
    }
    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        self.holding(id.as_str())?.destroy(id).await
    }
    async fn pause(&self, id: &SandboxId) -> Result<()> {
        self.holding(id.as_str())?.pause(id).await
    }
    async fn resume(&self, id: &SandboxId) -> Result<()> {
        self.holding(id.as_str())?.resume(id).await
    }
    async fn exec(&self, id: &SandboxId, req: ExecRequest) -> Result<ExecSession> {
        self.holding(id.as_str())?.exec(id, req).await
    }
    async fn exec_kept(&self, id: &SandboxId, req: ExecRequest, exec_id: &str) -> Result<ExecSession> {
        self.holding(id.as_str())?.exec_kept(id, req, exec_id).await
    }
    async fn attach(&self, id: &SandboxId, exec_id: &str, from_seq: u64) -> Result<ExecSession> {
        self.holding(id.as_str())?.attach(id, exec_id, from_seq).await
    }
    async fn file(&self, id: &SandboxId, op: FileOp) -> Result<FileReply> {
        self.holding(id.as_str())?.file(id, op).await
    }
    async fn stats(&self, id: &SandboxId) -> Result<Stats> {
        self.holding(id.as_str())?.stats(id).await
    }

    async fn connect_port(&self, id: &SandboxId, port: u16) -> Result<Box<dyn PortStream>> {
        self.holding(id.as_str())?.connect_port(id, port).await
    }
}
