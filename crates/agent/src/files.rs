//! File operations, run by the agent inside the sandbox's mount namespace.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use stockade_core::{DirEntry, Error, FileKind, FileOp, FileReply, FileStat, Result};

/// Runs one operation.
pub fn apply(op: FileOp) -> Result<FileReply> {
    let path = op.path().to_owned();
    if !path.starts_with('/') {
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
        FileOp::Write { path, mode, data } => {
            write_atomic(Path::new(&path), &data, mode).map_err(err)?;
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
