//! The one index of a Stockade home: which driver holds which sandbox id, and which id a name
//! means. Every lookup is a file or two, whatever the number of sandboxes:
//!
//! - `index/ids/<first two hex digits>/<id>`: the driver and the name, one per line (a prefix of
//!   four or more characters reads one bucket);
//! - `index/names/<name>`: the id (made with `O_EXCL`, so two creates never share a name, across
//!   drivers and processes);
//! - `index/drivers/<driver>/<id>`: empty, so "does this driver hold anything" is one `readdir`;
//! - `index/backfilled/<store>`: a record store whose records (from before the index) were added.
//!
//! The records stay the truth: a driver's [`crate::RecordStore`] writes the index on every save
//! and remove, and an entry whose record is gone is stale and skipped or replaced.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use stockade_core::{Error, Result, SandboxId};

use crate::{store_err, write_atomic, StoredRecord};

/// What the index knows of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub id: SandboxId,
    pub driver: String,
    /// The sandbox's name (its id when it was given none).
    pub name: String,
}

impl IndexEntry {
    /// The entry of a record.
    pub fn of<R: StoredRecord>(record: &R) -> Self {
        IndexEntry {
            id: record.id().clone(),
            driver: record.driver().to_owned(),
            name: record.name().to_owned(),
        }
    }
}

/// The index under a home's `index/` directory.
#[derive(Debug, Clone)]
pub struct Index {
    dir: PathBuf,
}

impl Index {
    /// The index of the home `home`.
    pub fn of_home(home: &Path) -> Self {
        Index {
            dir: home.join("index"),
        }
    }

    fn id_path(&self, id: &str) -> PathBuf {
        self.dir.join("ids").join(&id[..2.min(id.len())]).join(id)
    }
    fn name_path(&self, name: &str) -> PathBuf {
        self.dir.join("names").join(name)
    }
    fn driver_path(&self, driver: &str, id: &str) -> PathBuf {
        self.dir.join("drivers").join(driver).join(id)
    }

    /// Adds or refreshes `entry`, claiming its name. A name that another live sandbox holds is
    /// [`Error::NameTaken`]; one left by a sandbox whose entry is gone is taken over.
    pub fn put(&self, entry: &IndexEntry) -> Result<()> {
        let id = entry.id.as_str();
        if entry.name != id {
            self.claim_name(&entry.name, id)?;
        }
        let path = self.id_path(id);
        let content = format!("{}\n{}\n", entry.driver, entry.name);
        match fs::read_to_string(&path) {
            Ok(old) if old == content => {}
            // A changed entry is replaced whole; a new one (the create path) is written in place:
            // nobody can look up an id before its create returns.
            Ok(_) => write_new_or_replace(&path, content.as_bytes())?,
            Err(_) => write_new(&path, content.as_bytes())?,
        }
        let marker = self.driver_path(&entry.driver, id);
        if !marker.exists() {
            write_new(&marker, b"")?;
        }
        Ok(())
    }

    fn claim_name(&self, name: &str, id: &str) -> Result<()> {
        let path = self.name_path(name);
        for _ in 0..2 {
            match create_new(&path, id.as_bytes()) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    mkdir(path.parent().unwrap_or(&self.dir))?;
                    continue;
                }
                Err(e) => return Err(store_err("create", &path, e)),
            }
            let holder = fs::read_to_string(&path).unwrap_or_default();
            if holder == id {
                return Ok(());
            }
            if !holder.is_empty() && self.id_path(&holder).exists() {
                return Err(Error::NameTaken(name.to_owned()));
            }
            // Left by a sandbox that is no longer indexed.
            return write_atomic(&path, id.as_bytes(), 0o600).map_err(|e| store_err("write", &path, e));
        }
        Err(store_err("create", &path, "the directory keeps disappearing"))
    }

    /// Drops the sandbox `id` (and its name, when the name still means it).
    pub fn remove(&self, id: &SandboxId) -> Result<()> {
        let path = self.id_path(id.as_str());
        let Ok(content) = fs::read_to_string(&path) else {
            return Ok(());
        };
        let mut lines = content.lines();
        let (driver, name) = (lines.next().unwrap_or_default(), lines.next().unwrap_or_default());
        if !name.is_empty() && fs::read_to_string(self.name_path(name)).ok().as_deref() == Some(id.as_str()) {
            remove_file(&self.name_path(name))?;
        }
        if !driver.is_empty() {
            remove_file(&self.driver_path(driver, id.as_str()))?;
        }
        remove_file(&path)
    }

    /// The entry of the sandbox `id`, if indexed.
    pub fn get(&self, id: &SandboxId) -> Option<IndexEntry> {
        let content = fs::read_to_string(self.id_path(id.as_str())).ok()?;
        let mut lines = content.lines();
        Some(IndexEntry {
            id: id.clone(),
            driver: lines.next()?.to_owned(),
            name: lines.next().unwrap_or(id.as_str()).to_owned(),
        })
    }

    /// The sandbox called `name`, if any.
    pub fn by_name(&self, name: &str) -> Result<Option<IndexEntry>> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Ok(None);
        }
        let Ok(holder) = fs::read_to_string(self.name_path(name)) else {
            return Ok(None);
        };
        Ok(SandboxId::parse(&holder).ok().and_then(|id| self.get(&id)))
    }

    /// An id, a name, or a unique id prefix of at least four characters.
    pub fn resolve(&self, id_or_name: &str) -> Result<Option<IndexEntry>> {
        if let Ok(id) = SandboxId::parse(id_or_name) {
            if let Some(e) = self.get(&id) {
                return Ok(Some(e));
            }
        }
        if let Some(e) = self.by_name(id_or_name)? {
            return Ok(Some(e));
        }
        let is_prefix = (4..12).contains(&id_or_name.len())
            && id_or_name
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if !is_prefix {
            return Ok(None);
        }
        let bucket = self.dir.join("ids").join(&id_or_name[..2]);
        let entries = match fs::read_dir(&bucket) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(store_err("read", &bucket, e)),
        };
        let matches: Vec<SandboxId> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(id_or_name))
            .filter_map(|n| SandboxId::parse(&n).ok())
            .collect();
        match matches.as_slice() {
            [only] => Ok(self.get(only)),
            _ => Ok(None),
        }
    }

    /// Whether the records of `store` were added to the index (once, for homes older than it).
    pub fn has_backfilled(&self, store: &str) -> bool {
        self.dir.join("backfilled").join(store).exists()
    }

    /// Notes that the records of `store` are in the index.
    pub fn mark_backfilled(&self, store: &str) -> Result<()> {
        write_new_or_replace(&self.dir.join("backfilled").join(store), b"")
    }

    /// Whether `driver` holds any sandbox here.
    pub fn holds_any(&self, driver: &str) -> bool {
        fs::read_dir(self.dir.join("drivers").join(driver)).is_ok_and(|mut d| d.next().is_some())
    }
}

fn mkdir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| store_err("create", dir, e))
}

fn create_new(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

/// Makes `path` with `data` (its directory too, when missing); one that exists already is fine.
fn write_new(path: &Path, data: &[u8]) -> Result<()> {
    let made = match create_new(path, data) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                mkdir(dir)?;
            }
            create_new(path, data)
        }
        other => other,
    };
    match made {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(store_err("write", path, e)),
        _ => Ok(()),
    }
}

fn write_new_or_replace(path: &Path, data: &[u8]) -> Result<()> {
    match write_atomic(path, data, 0o600) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                mkdir(dir)?;
            }
            write_atomic(path, data, 0o600)
        }
        other => other,
    }
    .map_err(|e| store_err("write", path, e))
}

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(store_err("remove", path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, driver: &str, name: &str) -> IndexEntry {
        IndexEntry {
            id: SandboxId::parse(id).unwrap(),
            driver: driver.into(),
            name: name.into(),
        }
    }

    #[test]
    fn ids_names_and_prefixes_resolve_to_their_driver() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::of_home(dir.path());
        index.put(&entry("aabbccddeeff", "native", "dev")).unwrap();
        index
            .put(&entry("aabbcc000000", "docker", "aabbcc000000"))
            .unwrap();
        assert_eq!(index.resolve("dev").unwrap().unwrap().driver, "native");
        assert_eq!(index.resolve("aabbcc000000").unwrap().unwrap().driver, "docker");
        assert_eq!(index.resolve("aabbcc0").unwrap().unwrap().driver, "docker");
        // Ambiguous and unknown prefixes find nothing.
        assert_eq!(index.resolve("aabbcc").unwrap(), None);
        assert_eq!(index.resolve("ffff").unwrap(), None);
        assert!(index.holds_any("docker") && index.holds_any("native") && !index.holds_any("podman"));
        index.remove(&SandboxId::parse("aabbcc000000").unwrap()).unwrap();
        assert!(!index.holds_any("docker"));
        assert_eq!(index.resolve("aabbcc").unwrap().unwrap().name, "dev");
    }

    #[test]
    fn a_name_is_held_by_one_sandbox_across_drivers() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::of_home(dir.path());
        index.put(&entry("111111111111", "native", "dev")).unwrap();
        // Saving the same record again is fine; another sandbox taking the name is not.
        index.put(&entry("111111111111", "native", "dev")).unwrap();
        let taken = index.put(&entry("222222222222", "docker", "dev"));
        assert!(matches!(taken, Err(Error::NameTaken(n)) if n == "dev"));
        index.remove(&SandboxId::parse("111111111111").unwrap()).unwrap();
        index.put(&entry("222222222222", "docker", "dev")).unwrap();
        assert_eq!(index.by_name("dev").unwrap().unwrap().driver, "docker");
    }

    #[test]
    fn a_name_left_by_a_vanished_entry_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::of_home(dir.path());
        index.put(&entry("111111111111", "native", "dev")).unwrap();
        fs::remove_file(index.id_path("111111111111")).unwrap();
        assert_eq!(index.by_name("dev").unwrap(), None);
        index.put(&entry("222222222222", "native", "dev")).unwrap();
        assert_eq!(index.resolve("dev").unwrap().unwrap().id.as_str(), "222222222222");
    }
}
