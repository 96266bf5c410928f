//! Directory watchers on inotify. A watcher is started by one file operation and read by
//! later ones (any connection): the kernel queues its events until they are asked for, so no
//! thread reads them in between. Kept per agent, at most [`MAX_WATCHERS`] (the oldest goes).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use stockade_core::{Error, Result, WatchEvent, WatchEventKind};

/// Watchers one agent keeps; starting one more stops the oldest.
pub const MAX_WATCHERS: usize = 64;

struct Watcher {
    inotify: Inotify,
    root: PathBuf,
    recursive: bool,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    started: u64,
}

static WATCHERS: OnceLock<Mutex<HashMap<String, Watcher>>> = OnceLock::new();
static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn watchers() -> std::sync::MutexGuard<'static, HashMap<String, Watcher>> {
    WATCHERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ONLYDIR
        | AddWatchFlags::IN_DONT_FOLLOW
}

fn errno(path: &Path, e: Errno) -> Error {
    let reason = match e {
        Errno::ENOENT => "no such file or directory".to_owned(),
        Errno::ENOTDIR => "not a directory".to_owned(),
        Errno::ENOSPC => "the inotify watch limit is reached".to_owned(),
        Errno::EMFILE => "too many inotify instances".to_owned(),
        e => e.desc().to_owned(),
    };
    Error::File {
        path: path.display().to_string(),
        reason,
    }
}

impl Watcher {
    /// Watches `dir`, and with `recursive` every directory under it (symlinks not followed).
    fn add(&mut self, dir: &Path) -> Result<()> {
        let wd = self.inotify.add_watch(dir, mask()).map_err(|e| errno(dir, e))?;
        self.dirs.insert(wd, dir.to_owned());
        if self.recursive {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        // A subdirectory that vanished meanwhile is not an error.
                        let _ = self.add(&entry.path());
                    }
                }
            }
        }
        Ok(())
    }

    /// A create event for everything under `dir`, depth first.
    fn created_under(&self, dir: &Path, out: &mut Vec<WatchEvent>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            out.push(WatchEvent {
                name: relative(&self.root, &path),
                kind: WatchEventKind::Create,
            });
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                self.created_under(&path, out);
            }
        }
    }

    fn drain(&mut self) -> Result<Vec<WatchEvent>> {
        let mut out = Vec::new();
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EAGAIN) => return Ok(out),
                Err(e) => return Err(errno(&self.root, e)),
            };
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                    self.dirs.remove(&event.wd);
                    continue;
                }
                let (Some(dir), Some(name)) = (self.dirs.get(&event.wd), event.name.as_deref()) else {
                    continue;
                };
                let path = dir.join(name);
                let kind = if event
                    .mask
                    .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                {
                    WatchEventKind::Create
                } else if event.mask.contains(AddWatchFlags::IN_MODIFY) {
                    WatchEventKind::Write
                } else if event.mask.contains(AddWatchFlags::IN_ATTRIB) {
                    WatchEventKind::Chmod
                } else if event.mask.contains(AddWatchFlags::IN_DELETE) {
                    WatchEventKind::Remove
                } else if event.mask.contains(AddWatchFlags::IN_MOVED_FROM) {
                    WatchEventKind::Rename
                } else {
                    continue;
                };
                out.push(WatchEvent {
                    name: relative(&self.root, &path),
                    kind,
                });
                if self.recursive
                    && kind == WatchEventKind::Create
                    && event.mask.contains(AddWatchFlags::IN_ISDIR)
                {
                    // Watched from now on; what was made in it before this read is reported as
                    // created, so nothing made in a new directory goes unseen.
                    let _ = self.add(&path);
                    self.created_under(&path, &mut out);
                }
            }
        }
    }
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Starts a watcher on `path` (a directory); its id.
pub fn start(path: &str, recursive: bool) -> Result<String> {
    let root = PathBuf::from(path);
    let meta =
        std::fs::metadata(&root).map_err(|e| errno(&root, Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    if !meta.is_dir() {
        return Err(errno(&root, Errno::ENOTDIR));
    }
    let inotify =
        Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|e| errno(&root, e))?;
    let started = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut watcher = Watcher {
        inotify,
        root: root.clone(),
        recursive,
        dirs: HashMap::new(),
        started,
    };
    watcher.add(&root)?;
    let id = format!("w{started}-{}", std::process::id());
    let mut all = watchers();
    if all.len() >= MAX_WATCHERS {
        if let Some(oldest) = all
            .iter()
            .min_by_key(|(_, w)| w.started)
            .map(|(id, _)| id.clone())
        {
            all.remove(&oldest);
        }
    }
    all.insert(id.clone(), watcher);
    Ok(id)
}

fn unknown(id: &str) -> Error {
    Error::File {
        path: id.to_owned(),
        reason: "no such watcher (not found: stopped, or its agent restarted)".into(),
    }
}

/// The events `id` queued since the last call.
pub fn events(id: &str) -> Result<Vec<WatchEvent>> {
    watchers().get_mut(id).ok_or_else(|| unknown(id))?.drain()
}

pub fn stop(id: &str) -> Result<()> {
    watchers().remove(id).map(drop).ok_or_else(|| unknown(id))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_new_file_written_in_place_is_created_then_written() {
        let dir = tempfile::tempdir().unwrap();
        let id = start(dir.path().to_str().unwrap(), true).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(
            events(&id).unwrap(),
            vec![WatchEvent {
                name: "sub".into(),
                kind: WatchEventKind::Create
            }]
        );
        std::fs::write(dir.path().join("sub/f"), b"x").unwrap();
        let kinds: Vec<_> = events(&id)
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("sub/f".into(), WatchEventKind::Create),
                ("sub/f".into(), WatchEventKind::Write)
            ],
            "a directory made after the start is watched too"
        );
        std::fs::remove_file(dir.path().join("sub/f")).unwrap();
        assert_eq!(events(&id).unwrap()[0].kind, WatchEventKind::Remove);
        stop(&id).unwrap();
        assert!(events(&id).is_err());
    }
}
