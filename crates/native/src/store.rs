//! Sandbox records: one JSON file per sandbox under `records/`, written atomically. Small,
//! dependency-free, readable with `cat`, and safe for several CLI processes at once (creates take
//! a lock so names stay unique).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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

/// Start time of a process in clock ticks since boot (field 22 of `/proc/PID/stat`), which with the
/// pid identifies it even after the pid is reused.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// True when `pid` is alive (not a zombie) and started at `start`.
pub fn is_same_process(pid: i32, start: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let rest = &stat[close + 2..];
    let zombie = rest.starts_with('Z') || rest.starts_with('X');
    !zombie && rest.split(' ').nth(19).and_then(|s| s.parse::<u64>().ok()) == Some(start)
}

/// Writes `data` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    drop(f);
    fs::rename(&tmp, path)
}

/// The record store of one [`Layout`].
#[derive(Debug, Clone)]
pub struct Store {
    layout: Layout,
}

fn store_err(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::backend(format!("{what} {}", path.display()), e)
}

impl Store {
    pub fn new(layout: Layout) -> Self {
        Store { layout }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn save(&self, record: &Record) -> Result<()> {
        let path = self.layout.record(&record.id);
        let json = serde_json::to_vec_pretty(record).map_err(|e| store_err("encode", &path, e))?;
        write_atomic(&path, &json, 0o600).map_err(|e| store_err("write", &path, e))
    }

    pub fn load(&self, id: &SandboxId) -> Result<Record> {
        let path = self.layout.record(id);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()))
            }
            Err(e) => return Err(store_err("read", &path, e)),
        };
        serde_json::from_slice(&data).map_err(|e| store_err("decode", &path, e))
    }

    pub fn remove(&self, id: &SandboxId) -> Result<()> {
        let path = self.layout.record(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_err("remove", &path, e)),
        }
    }

    /// Every record, oldest first. Unreadable files are skipped, not fatal.
    pub fn list(&self) -> Result<Vec<Record>> {
        let dir = self.layout.records();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(store_err("read", &dir, e)),
        };
        let mut out: Vec<Record> = entries
            .filter_map(|e| {
                let name = e.ok()?.file_name();
                let id = SandboxId::parse(name.to_str()?.strip_suffix(".json")?).ok()?;
                self.load(&id).ok()
            })
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Finds a sandbox by id, name, or unique id prefix (at least 4 characters).
    pub fn resolve(&self, id_or_name: &str) -> Result<Record> {
        if let Ok(id) = SandboxId::parse(id_or_name) {
            if let Ok(r) = self.load(&id) {
                return Ok(r);
            }
        }
        let all = self.list()?;
        if let Some(r) = all.iter().find(|r| r.name == id_or_name) {
            return Ok(r.clone());
        }
        if id_or_name.len() >= 4 {
            let matches: Vec<&Record> = all
                .iter()
                .filter(|r| r.id.as_str().starts_with(id_or_name))
                .collect();
            if let [only] = matches.as_slice() {
                return Ok((*only).clone());
            }
        }
        Err(Error::NotFound(id_or_name.to_owned()))
    }

    /// Takes the store-wide lock (held until the guard drops), for check-then-write sequences.
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.layout.lock();
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| store_err("open", &path, e))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| store_err("lock", &path, e))?;
        Ok(StoreLock { _lock: lock })
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

/// Held store lock.
#[derive(Debug)]
pub struct StoreLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str, at: u64) -> Record {
        let id = SandboxId::parse(id).unwrap();
        Record {
            idmap: IdMap::for_sandbox(&id, 1000, 1000),
            id,
            name: name.into(),
            status: SandboxStatus::Running,
            created_at: at,
            spec: SandboxSpec::default(),
            agent: "/bin/true".into(),
        }
    }

    #[test]
    fn save_list_resolve_remove() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::at(dir.path());
        layout.ensure().unwrap();
        let store = Store::new(layout);
        store.save(&record("aaaaaaaaaaaa", "one", 2)).unwrap();
        store.save(&record("bbbbbbbbbbbb", "two", 1)).unwrap();
        let names: Vec<_> = store.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["two", "one"]);
        assert_eq!(store.resolve("one").unwrap().id.as_str(), "aaaaaaaaaaaa");
        assert_eq!(store.resolve("bbbb").unwrap().name, "two");
        assert!(matches!(store.resolve("nope"), Err(Error::NotFound(_))));
        store.remove(&SandboxId::parse("aaaaaaaaaaaa").unwrap()).unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id() as i32;
        let start = process_start_time(me).unwrap();
        assert!(is_same_process(me, start));
        assert!(!is_same_process(me, start + 1));
    }
}
