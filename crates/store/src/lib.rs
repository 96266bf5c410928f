//! Sandbox records: one JSON file per sandbox in a directory, written atomically. Small,
//! dependency-free, readable with `cat`, and safe for several processes at once (creates take a
//! lock so names stay unique). Each driver keeps its own record type in its own directory; the
//! one [`Index`] of a home says which driver holds which id and name, in O(1).
#![forbid(unsafe_code)]

mod index;

pub use index::{Index, IndexEntry};

use std::fs;
use std::io::Write;
use std::marker::PhantomData;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use stockade_core::{Error, Result, SandboxId};

/// What the store needs to know about a record.
pub trait StoredRecord: Serialize + DeserializeOwned + Clone {
    fn id(&self) -> &SandboxId;
    fn name(&self) -> &str;
    /// Unix seconds; `list` sorts by it.
    fn created_at(&self) -> u64;
    /// The driver that holds the sandbox (its name as users type it).
    fn driver(&self) -> &str;
}

/// Start time of a process in clock ticks since boot (field 22 of `/proc/PID/stat`), which with the
/// pid identifies it even after the pid is reused.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// True when `pid` is alive (not a zombie) and started at `start`.
pub fn is_same_process(pid: i32, start: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
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
    // Unique per call, not only per process: two threads may write the same path at once.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}.{call}", std::process::id()));
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

/// The records in one directory, with a lock file beside them.
#[derive(Debug)]
pub struct RecordStore<R> {
    dir: PathBuf,
    lock_file: PathBuf,
    index: Option<Index>,
    _record: PhantomData<fn() -> R>,
}

impl<R> Clone for RecordStore<R> {
    fn clone(&self) -> Self {
        RecordStore {
            dir: self.dir.clone(),
            lock_file: self.lock_file.clone(),
            index: self.index.clone(),
            _record: PhantomData,
        }
    }
}

fn store_err(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::backend(format!("{what} {}", path.display()), e)
}

impl<R: StoredRecord> RecordStore<R> {
    /// Records live in `dir` (made on first save); `lock_file` serialises check-then-write.
    pub fn new(dir: impl Into<PathBuf>, lock_file: impl Into<PathBuf>) -> Self {
        RecordStore {
            dir: dir.into(),
            lock_file: lock_file.into(),
            index: None,
            _record: PhantomData,
        }
    }

    /// Keeps `index` up to date with every save and remove, and resolves names and prefixes
    /// through it. Records saved before the index existed are added to it once, here; `store`
    /// names this record directory in the index (the driver's name, say).
    pub fn with_index(mut self, index: Index, store: &str) -> Result<Self> {
        if !index.has_backfilled(store) {
            let _lock = self.lock()?;
            for r in self.list()? {
                index.put(&IndexEntry::of(&r))?;
            }
            index.mark_backfilled(store)?;
        }
        self.index = Some(index);
        Ok(self)
    }

    /// The index this store keeps, if any.
    pub fn index(&self) -> Option<&Index> {
        self.index.as_ref()
    }

    /// Where the record of `id` is kept.
    pub fn path(&self, id: &SandboxId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes `record`. With an index, its name is claimed there first: a name another
    /// sandbox holds (in any driver) is [`Error::NameTaken`].
    pub fn save(&self, record: &R) -> Result<()> {
        if let Some(index) = &self.index {
            index.put(&IndexEntry::of(record))?;
        }
        let path = self.path(record.id());
        let json = serde_json::to_vec_pretty(record).map_err(|e| store_err("encode", &path, e))?;
        match write_atomic(&path, &json, 0o600) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir).map_err(|e| store_err("create", &self.dir, e))?;
                write_atomic(&path, &json, 0o600)
            }
            other => other,
        }
        .map_err(|e| store_err("write", &path, e))
    }

    pub fn load(&self, id: &SandboxId) -> Result<R> {
        let path = self.path(id);
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
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(store_err("remove", &path, e)),
        }
        match &self.index {
            Some(index) => index.remove(id),
            None => Ok(()),
        }
    }

    /// Whether a sandbox (of any driver, with an index) is called `name`.
    pub fn name_taken(&self, name: &str) -> Result<bool> {
        match &self.index {
            Some(index) => Ok(index.by_name(name)?.is_some()),
            None => Ok(self.list()?.iter().any(|r| r.name() == name)),
        }
    }

    /// Every record, oldest first. Unreadable files are skipped, not fatal.
    pub fn list(&self) -> Result<Vec<R>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(store_err("read", &self.dir, e)),
        };
        let mut out: Vec<R> = entries
            .filter_map(|e| {
                let name = e.ok()?.file_name();
                let id = SandboxId::parse(name.to_str()?.strip_suffix(".json")?).ok()?;
                self.load(&id).ok()
            })
            .collect();
        out.sort_by(|a, b| (a.created_at(), a.id()).cmp(&(b.created_at(), b.id())));
        Ok(out)
    }

    /// Finds a record by id, name, or unique id prefix (at least 4 characters).
    pub fn resolve(&self, id_or_name: &str) -> Result<R> {
        if let Ok(id) = SandboxId::parse(id_or_name) {
            if let Ok(r) = self.load(&id) {
                return Ok(r);
            }
        }
        if let Some(index) = &self.index {
            // Through the index: one file for a name, one small bucket for a prefix.
            let found = index.resolve(id_or_name)?;
            return match found {
                Some(entry) => self.load(&entry.id),
                None => Err(Error::NotFound(id_or_name.to_owned())),
            };
        }
        let all = self.list()?;
        if let Some(r) = all.iter().find(|r| r.name() == id_or_name) {
            return Ok(r.clone());
        }
        if id_or_name.len() >= 4 {
            let matches: Vec<&R> = all
                .iter()
                .filter(|r| r.id().as_str().starts_with(id_or_name))
                .collect();
            if let [only] = matches.as_slice() {
                return Ok((*only).clone());
            }
        }
        Err(Error::NotFound(id_or_name.to_owned()))
    }

    /// Takes the store-wide lock (held until the guard drops), for check-then-write sequences.
    pub fn lock(&self) -> Result<StoreLock> {
        let path = &self.lock_file;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| store_err("create", parent, e))?;
        }
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| store_err("open", path, e))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| store_err("lock", path, e))?;
        Ok(StoreLock { _lock: lock })
    }
}

/// Held store lock.
#[derive(Debug)]
pub struct StoreLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

/// A random sandbox id from the kernel's generator.
pub fn random_id() -> Result<SandboxId> {
    let mut bytes = [0u8; 8];
    std::io::Read::read_exact(
        &mut fs::File::open("/dev/urandom").map_err(|e| Error::backend("/dev/urandom", e))?,
        &mut bytes,
    )
    .map_err(|e| Error::backend("/dev/urandom", e))?;
    Ok(SandboxId::from_random(u64::from_le_bytes(bytes)))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Rec {
        id: SandboxId,
        name: String,
        at: u64,
    }

    impl StoredRecord for Rec {
        fn id(&self) -> &SandboxId {
            &self.id
        }
        fn name(&self) -> &str {
            &self.name
        }
        fn created_at(&self) -> u64 {
            self.at
        }
        fn driver(&self) -> &str {
            "test"
        }
    }

    fn rec(id: &str, name: &str, at: u64) -> Rec {
        Rec {
            id: SandboxId::parse(id).unwrap(),
            name: name.into(),
            at,
        }
    }

    #[test]
    fn save_list_resolve_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store: RecordStore<Rec> = RecordStore::new(dir.path().join("records"), dir.path().join("lock"));
        store.save(&rec("aaaaaaaaaaaa", "one", 2)).unwrap();
        store.save(&rec("bbbbbbbbbbbb", "two", 1)).unwrap();
        let names: Vec<_> = store.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["two", "one"]);
        assert_eq!(store.resolve("one").unwrap().id.as_str(), "aaaaaaaaaaaa");
        assert_eq!(store.resolve("bbbb").unwrap().name, "two");
        assert!(matches!(store.resolve("nope"), Err(Error::NotFound(_))));
        store.remove(&SandboxId::parse("aaaaaaaaaaaa").unwrap()).unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
        let _guard = store.lock().unwrap();
    }
}
