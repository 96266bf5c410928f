//! File operations, run by the agent inside the sandbox's mount namespace.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use stockade_core::{DirEntry, Error, FileEntry, FileKind, FileOp, FileReply, FileStat, Result};

/// Runs one operation.
pub fn apply(op: FileOp) -> Result<FileReply> {
    let path = op.path().to_owned();
    let names_a_path = !matches!(op, FileOp::WatchEvents { .. } | FileOp::WatchStop { .. });
    if names_a_path && !path.starts_with('/') {
        return Err(Error::invalid(
            "path",
            format!("{path:?} must be an absolute path"),
        ));
    }
    let err = |e: std::io::Error| file_error(&path, e);
    match op {
        FileOp::Read { path } => {
            let meta = fs::metadata(&path).map_err(err)?;
            if meta.is_dir() {
                return Err(Error::File {
                    path,
                    reason: "is a directory".into(),
                });
            }
            // Devices, FIFOs and sockets never end (or block the agent): regular files only.
            // (Kernel files under /proc and /sys are regular, sized 0, and finite.)
            if !meta.is_file() {
                return Err(Error::File {
                    path,
                    reason: "not a regular file (a device, FIFO or socket)".into(),
                });
            }
            if meta.len() > stockade_proto::MAX_PAYLOAD as u64 {
                return Err(Error::File {
                    path,
                    reason: "file is larger than 1 GiB".into(),
                });
            }
            let mut data = Vec::new();
            let file = fs::File::open(&path).map_err(err)?;
            std::io::Read::read_to_end(
                &mut std::io::Read::take(file, stockade_proto::MAX_PAYLOAD as u64 + 1),
                &mut data,
            )
            .map_err(err)?;
            if data.len() > stockade_proto::MAX_PAYLOAD {
                return Err(Error::File {
                    path,
                    reason: "file is larger than 1 GiB".into(),
                });
            }
            Ok(FileReply::Data { data })
        }
        FileOp::Write {
            path,
            mode,
            data,
            in_place: false,
            ..
        } => {
            write_atomic(Path::new(&path), &data, mode).map_err(err)?;
            Ok(FileReply::Done)
        }
        FileOp::Write {
            path,
            mode,
            data,
            in_place: true,
            owner,
        } => {
            let owner = match owner.as_deref().filter(|o| *o != "root") {
                Some(name) => Some(Names::read().id_of(name).ok_or_else(|| {
                    Error::invalid("user", format!("{name:?} is not a user of this sandbox"))
                })?),
                None => None,
            };
            write_in_place(Path::new(&path), &data, mode, owner).map_err(err)?;
            Ok(FileReply::Done)
        }
        FileOp::Entry { path } => Ok(FileReply::Entry {
            entry: entry_of(Path::new(&path), &Names::read()).map_err(err)?,
        }),
        FileOp::Walk { path, depth } => {
            let meta = fs::metadata(&path).map_err(err)?;
            if !meta.is_dir() {
                return Err(Error::File {
                    path,
                    reason: "not a directory".into(),
                });
            }
            let mut entries = Vec::new();
            walk(Path::new(&path), depth.max(1), &Names::read(), &mut entries).map_err(err)?;
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(FileReply::Walk { entries })
        }
        FileOp::WatchStart { path, recursive } => Ok(FileReply::Watcher {
            watcher: crate::watch::start(&path, recursive)?,
        }),
        FileOp::WatchEvents { watcher } => Ok(FileReply::Events {
            events: crate::watch::events(&watcher)?,
        }),
        FileOp::WatchStop { watcher } => {
            crate::watch::stop(&watcher)?;
            Ok(FileReply::Done)
        }
        FileOp::List { path } => {
            let mut entries = Vec::new();
            for entry in fs::read_dir(&path).map_err(err)? {
                let entry = entry.map_err(err)?;
                let meta = fs::symlink_metadata(entry.path()).map_err(err)?;
                entries.push(DirEntry {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    stat: stat_of(&meta),
                });
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(FileReply::Entries { entries })
        }
        FileOp::Stat { path } => Ok(FileReply::Stat {
            stat: stat_of(&fs::symlink_metadata(&path).map_err(err)?),
        }),
        FileOp::Mkdir { path } => {
            fs::create_dir_all(&path).map_err(err)?;
            Ok(FileReply::Done)
        }
        FileOp::Remove { path, recursive } => {
            let meta = fs::symlink_metadata(&path).map_err(err)?;
            if meta.is_dir() {
                if recursive {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_dir(&path)
                }
                .map_err(err)?;
            } else {
                fs::remove_file(&path).map_err(err)?;
            }
            Ok(FileReply::Done)
        }
        FileOp::Rename { from, to } => {
            if !to.starts_with('/') {
                return Err(Error::invalid("path", format!("{to:?} must be an absolute path")));
            }
            fs::rename(&from, &to).map_err(err)?;
            Ok(FileReply::Done)
        }
    }
}

/// Writes to a hidden temporary file beside `path` and renames it over `path`, so readers see the
/// old or the new contents, never a mix.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    let tmp = dir.join(format!(
        ".{}.stockade-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(&tmp)?;
        f.write_all(data)?;
        // The umask may have cleared bits the caller asked for.
        f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes where the file is (`O_CREAT|O_TRUNC`), making missing parents, as E2B's envd does: a
/// watcher sees the file created, its mode set, then written.
fn write_in_place(path: &Path, data: &[u8], mode: u32, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        // The directories made for it are the owner's too.
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(d) = at.filter(|d| !d.exists()) {
            missing.push(d.to_owned());
            at = d.parent();
        }
        fs::create_dir_all(dir)?;
        if let Some((uid, gid)) = owner {
            for d in missing {
                std::os::unix::fs::chown(&d, Some(uid), Some(gid))?;
            }
        }
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode & 0o7777)
        .open(path)?;
    match owner {
        // envd's order: created, given to the user, written.
        Some((uid, gid)) => std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?,
        None => f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?,
    }
    f.write_all(data)
}

/// User and group names by id, from the sandbox's /etc/passwd and /etc/group.
struct Names {
    users: std::collections::HashMap<u32, String>,
    groups: std::collections::HashMap<u32, String>,
}

impl Names {
    fn read() -> Names {
        let table = |file: &str| {
            fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| {
                    let mut fields = line.split(':');
                    let name = fields.next()?;
                    let id = fields.nth(1)?.parse().ok()?;
                    Some((id, name.to_owned()))
                })
                .collect()
        };
        Names {
            users: table("/etc/passwd"),
            groups: table("/etc/group"),
        }
    }

    /// The uid and primary gid of user `name`, from /etc/passwd.
    fn id_of(&self, name: &str) -> Option<(u32, u32)> {
        let passwd = fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    }

    fn user(&self, uid: u32) -> String {
        self.users.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
    }

    fn group(&self, gid: u32) -> String {
        self.groups.get(&gid).cloned().unwrap_or_else(|| gid.to_string())
    }
}

/// One entry in full. A symlink is described by its target (kind, mode, size), with the target's
/// absolute path; a dangling one as a symlink.
fn entry_of(path: &Path, names: &Names) -> std::io::Result<FileEntry> {
    let link = fs::symlink_metadata(path)?;
    let (meta, symlink_target) = if link.file_type().is_symlink() {
        match (fs::metadata(path), fs::canonicalize(path)) {
            (Ok(meta), Ok(target)) => (meta, Some(target.to_string_lossy().into_owned())),
            _ => (
                link,
                fs::read_link(path).ok().map(|t| t.to_string_lossy().into_owned()),
            ),
        }
    } else {
        (link, None)
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into());
    Ok(FileEntry {
        name,
        path: path.to_string_lossy().into_owned(),
        kind: stat_of(&meta).kind,
        size: meta.len(),
        mode: meta.mode(),
        owner: names.user(meta.uid()),
        group: names.group(meta.gid()),
        modified_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        symlink_target,
    })
}

/// A directory's entries, and theirs down to `depth` levels; symlinked directories are listed,
/// not entered.
fn walk(dir: &Path, depth: u32, names: &Names, out: &mut Vec<FileEntry>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        // Gone between the listing and the look: not there.
        let Ok(info) = entry_of(&path, names) else {
            continue;
        };
        let descend = depth > 1 && info.symlink_target.is_none() && info.kind == FileKind::Dir;
        out.push(info);
        if descend {
            // A subdirectory that cannot be read is listed without its contents.
            let _ = walk(&path, depth - 1, names, out);
        }
    }
    Ok(())
}

fn stat_of(meta: &fs::Metadata) -> FileStat {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    FileStat {
        kind,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        modified: meta.mtime(),
    }
}

fn file_error(path: &str, e: std::io::Error) -> Error {
    let reason = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::AlreadyExists => "already exists".to_owned(),
        _ => e.to_string(),
    };
    Error::File {
        path: path.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_list_stat_rename_remove() {
        let dir = tempfile::tempdir().unwrap();
        let p = |s: &str| dir.path().join(s).to_string_lossy().into_owned();
        apply(FileOp::Mkdir { path: p("a/b") }).unwrap();
        apply(FileOp::Write {
            path: p("a/b/f"),
            mode: 0o640,
            data: vec![0, 1, 2],
            in_place: false,
            owner: None,
        })
        .unwrap();
        let FileReply::Data { data } = apply(FileOp::Read { path: p("a/b/f") }).unwrap() else {
            panic!()
        };
        assert_eq!(data, vec![0, 1, 2]);
        let FileReply::Stat { stat } = apply(FileOp::Stat { path: p("a/b/f") }).unwrap() else {
            panic!()
        };
        assert_eq!((stat.kind, stat.size, stat.mode), (FileKind::File, 3, 0o640));
        apply(FileOp::Rename {
            from: p("a/b/f"),
            to: p("a/g"),
        })
        .unwrap();
        let FileReply::Entries { entries } = apply(FileOp::List { path: p("a") }).unwrap() else {
            panic!()
        };
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["b", "g"]);
        assert!(apply(FileOp::Remove {
            path: p("a"),
            recursive: false
        })
        .is_err());
        apply(FileOp::Remove {
            path: p("a"),
            recursive: true,
        })
        .unwrap();
        let e = apply(FileOp::Read { path: p("a/g") }).unwrap_err();
        assert!(e.to_string().ends_with("no such file or directory"), "{e}");
    }
}
