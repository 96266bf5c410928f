//! The native driver's records (one JSON file per sandbox under `records/`, kept by
//! `stockade-store`) and the runtime file its supervisor writes once the sandbox runs.

use std::fs;
use std::path::{Path, PathBuf};

use stockade_store::RecordStore;

use serde::{Deserialize, Serialize};
use stockade_core::{Error, Result, SandboxId, SandboxSpec, SandboxStatus};

use crate::idmap::IdMap;
use crate::layout::Layout;

/// What is stored for each sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: SandboxId,
    pub name: String,
    /// The status last set by a lifecycle operation (`creating` until the first stop; `stop` and
    /// `start` rewrite it). The status shown is computed from it and the live processes
    /// (`NativeDriver::live_status`).
    pub status: SandboxStatus,
    pub created_at: u64,
    pub spec: SandboxSpec,
    pub idmap: IdMap,
    /// The agent binary the supervisor runs.
    pub agent: PathBuf,
}

/// Facts about the live processes, written by the supervisor once the sandbox is up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Runtime {
    pub supervisor_pid: i32,
    pub supervisor_start: u64,
    /// Host pid of the sandbox's pid 1.
    pub init_pid: i32,
    pub init_start: u64,
    /// Every cgroup directory made for the sandbox.
    pub cgroups: Vec<PathBuf>,
    /// `v1`, `v2` or `none`.
    pub cgroup_version: String,
    /// `private` (own network namespace) or `host`.
    pub network: String,
}

pub use stockade_store::{is_same_process, process_start_time};

pub use stockade_store::{write_atomic, StoreLock};

impl stockade_store::StoredRecord for Record {
    fn id(&self) -> &SandboxId {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn created_at(&self) -> u64 {
        self.created_at
    }
    fn driver(&self) -> &str {
        crate::driver::DRIVER
    }
}

/// The record store of one [`Layout`], plus each running sandbox's runtime file.
#[derive(Debug, Clone)]
pub struct Store {
    layout: Layout,
    records: RecordStore<Record>,
}

fn store_err(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::backend(format!("{what} {}", path.display()), e)
}

impl Store {
    /// The records of `layout`, kept in its home's [`stockade_store::Index`].
    pub fn new(layout: Layout) -> Result<Self> {
        Ok(Store {
            records: RecordStore::new(layout.records(), layout.lock()).with_index(
                stockade_store::Index::of_home(&layout.home),
                crate::driver::DRIVER,
            )?,
            layout,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn save(&self, record: &Record) -> Result<()> {
        self.records.save(record)
    }

    pub fn load(&self, id: &SandboxId) -> Result<Record> {
        self.records.load(id)
    }

    pub fn remove(&self, id: &SandboxId) -> Result<()> {
        self.records.remove(id)
    }

    /// Whether a sandbox (of any driver the index knows) is called `name`.
    pub fn name_taken(&self, name: &str) -> Result<bool> {
        self.records.name_taken(name)
    }

    /// Every record, oldest first.
    pub fn list(&self) -> Result<Vec<Record>> {
        self.records.list()
    }

    /// Finds a sandbox by id, name, or unique id prefix (at least 4 characters).
    pub fn resolve(&self, id_or_name: &str) -> Result<Record> {
        self.records.resolve(id_or_name)
    }

    /// Takes the store-wide lock (held until the guard drops), for check-then-write sequences.
    pub fn lock(&self) -> Result<StoreLock> {
        self.records.lock()
    }

    pub fn load_runtime(&self, id: &SandboxId) -> Option<Runtime> {
        serde_json::from_slice(&fs::read(self.layout.runtime(id)).ok()?).ok()
    }

    pub fn save_runtime(&self, id: &SandboxId, rt: &Runtime) -> Result<()> {
        let path = self.layout.runtime(id);
        let json = serde_json::to_vec(rt).map_err(|e| store_err("encode", &path, e))?;
        write_atomic(&path, &json, 0o600).map_err(|e| store_err("write", &path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id() as i32;
        let start = process_start_time(me).unwrap();
        assert!(is_same_process(me, start));
        assert!(!is_same_process(me, start + 1));
    }
}
