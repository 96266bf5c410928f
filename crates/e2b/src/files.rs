//! Stockade's file operations over envd: `/files` for contents, `filesystem.Filesystem` for
//! the rest (Stat, ListDir, MakeDir, Move, Remove, watchers). Where envd differs from a
//! Stockade driver, the difference is made up here: writes are atomic (uploaded beside the
//! target, then moved over it) unless asked in place; envd writes with its own mode, so a
//! different one is set afterwards (`chmod` run in the sandbox); `remove` of a missing path or,
//! without `recursive`, of a non-empty directory is an error, though envd's `Remove` is
//! `RemoveAll`.

use serde::Deserialize;
use serde_json::{json, Value};
use stockade_core::{
    DirEntry, Error, ExecRequest, FileEntry, FileKind, FileOp, FileReply, FileStat, Result, WatchEvent,
    WatchEventKind,
};

use crate::envd::{Envd, EnvdError};
use crate::process::{self, EventReader};

/// The reason Stockade gives for a path that is not there.
pub const NO_SUCH_FILE: &str = "no such file or directory";

/// envd's `EntryInfo`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryInfo {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub path: String,
    /// int64: a string in proto3 JSON (a number accepted).
    #[serde(default)]
    pub size: Value,
    #[serde(default)]
    pub mode: u32,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub modified_time: Option<String>,
    #[serde(default)]
    pub symlink_target: Option<String>,
}

impl EntryInfo {
    fn kind(&self) -> FileKind {
        match self.kind.as_str() {
            "FILE_TYPE_FILE" => FileKind::File,
            "FILE_TYPE_DIRECTORY" => FileKind::Dir,
            "FILE_TYPE_SYMLINK" => FileKind::Symlink,
            _ => FileKind::Other,
        }
    }

    fn size(&self) -> u64 {
        match &self.size {
            Value::String(s) => s.parse().unwrap_or(0),
            Value::Number(n) => n.as_u64().unwrap_or(0),
            _ => 0,
        }
    }

    fn modified_ns(&self) -> i64 {
        self.modified_time
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(0)
    }

    /// As `stat` gives it: kind, size, permission bits, seconds.
    pub fn stat(&self) -> FileStat {
        FileStat {
            kind: self.kind(),
            size: self.size(),
            mode: self.mode & 0o7777,
            modified: self.modified_ns().div_euclid(1_000_000_000),
        }
    }

    /// In full. envd gives permission bits only; the type bits are put back from the kind.
    pub fn entry(&self) -> FileEntry {
        let type_bits = match self.kind() {
            FileKind::File => 0o100000,
            FileKind::Dir => 0o040000,
            FileKind::Symlink => 0o120000,
            FileKind::Other => 0,
        };
        FileEntry {
            name: self.name.clone(),
            path: self.path.clone(),
            kind: self.kind(),
            size: self.size(),
            mode: type_bits | (self.mode & 0o7777),
            owner: self.owner.clone(),
            group: self.group.clone(),
            modified_ns: self.modified_ns(),
            symlink_target: self.symlink_target.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct EntryReply {
    entry: EntryInfo,
}

#[derive(Debug, Deserialize)]
struct EntriesReply {
    #[serde(default)]
    entries: Vec<EntryInfo>,
}

/// The error of a file operation on `path`: the path named, and Stockade's words for a
/// missing one.
pub fn file_error(e: EnvdError, path: &str) -> Error {
    let (missing, message) = match e {
        EnvdError::Rpc(r) => (r.code == "not_found", r.message),
        EnvdError::Http { status, message } => (status == 404, message),
        other => return process::call_error(other, "file operations"),
    };
    // A missing watcher is said as the server says it; anything else missing is a file.
    if missing && !message.contains("no such watcher") {
        return Error::File {
            path: path.to_owned(),
            reason: NO_SUCH_FILE.into(),
        };
    }
    let reason = message
        .strip_prefix(&format!("{path}: "))
        .map(str::to_owned)
        .unwrap_or(message);
    Error::File {
        path: path.to_owned(),
        reason,
    }
}

fn absolute(path: &str) -> Result<()> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(Error::File {
            path: path.to_owned(),
            reason: "not an absolute path (paths in a sandbox are absolute)".into(),
        })
    }
}

/// The file operations of one sandbox, as one user (the template's default when `None`).
#[derive(Debug, Clone)]
pub struct Files<'a> {
    pub envd: &'a Envd,
    pub user: Option<&'a str>,
}

impl Files<'_> {
    async fn rpc<A: for<'de> Deserialize<'de>>(&self, method: &str, message: Value, path: &str) -> Result<A> {
        self.envd
            .unary(method, &message, self.user)
            .await
            .map_err(|e| file_error(e, path))
    }

    async fn stat_entry(&self, path: &str) -> Result<EntryInfo> {
        let r: EntryReply = self
            .rpc("filesystem.Filesystem/Stat", json!({ "path": path }), path)
            .await?;
        Ok(r.entry)
    }

    async fn list(&self, path: &str, depth: u32) -> Result<Vec<EntryInfo>> {
        let r: EntriesReply = self
            .rpc(
                "filesystem.Filesystem/ListDir",
                json!({ "path": path, "depth": depth }),
                path,
            )
            .await?;
        Ok(r.entries)
    }

    /// Runs one operation.
    pub async fn run(&self, op: FileOp) -> Result<FileReply> {
        // A watcher's id is not a path.
        if !matches!(op, FileOp::WatchEvents { .. } | FileOp::WatchStop { .. }) {
            absolute(op.path())?;
        }
        match op {
            FileOp::Read { path } => self
                .envd
                .download(&path, self.user)
                .await
                .map(|data| FileReply::Data { data })
                .map_err(|e| file_error(e, &path)),
            // envd gives an upload to the request's user: `owner` is that user already.
            FileOp::Write {
                path,
                mode,
                data,
                in_place,
                ..
            } => self
                .write(&path, mode, data, in_place)
                .await
                .map(|()| FileReply::Done),
            FileOp::List { path } => {
                let mut entries: Vec<DirEntry> = self
                    .list(&path, 1)
                    .await?
                    .iter()
                    .map(|e| DirEntry {
                        name: e.name.clone(),
                        stat: e.stat(),
                    })
                    .collect();
                entries.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(FileReply::Entries { entries })
            }
            FileOp::Stat { path } => Ok(FileReply::Stat {
                stat: self.stat_entry(&path).await?.stat(),
            }),
            FileOp::Entry { path } => Ok(FileReply::Entry {
                entry: self.stat_entry(&path).await?.entry(),
            }),
            FileOp::Walk { path, depth } => Ok(FileReply::Walk {
                entries: self
                    .list(&path, depth.max(1))
                    .await?
                    .iter()
                    .map(EntryInfo::entry)
                    .collect(),
            }),
            FileOp::Mkdir { path } => {
                let made: Result<Value> = self
                    .rpc("filesystem.Filesystem/MakeDir", json!({ "path": path }), &path)
                    .await;
                match made {
                    Ok(_) => Ok(FileReply::Done),
                    // `mkdir -p`: a directory already there is done; a file there is not.
                    Err(e) => match self.stat_entry(&path).await {
                        Ok(entry) if entry.kind() == FileKind::Dir => Ok(FileReply::Done),
                        _ => Err(e),
                    },
                }
            }
            FileOp::Remove { path, recursive } => {
                let entry = self.stat_entry(&path).await?;
                if !recursive && entry.kind() == FileKind::Dir && !self.list(&path, 1).await?.is_empty() {
                    return Err(Error::File {
                        path,
                        reason: "directory not empty".into(),
                    });
                }
                self.rpc::<Value>("filesystem.Filesystem/Remove", json!({ "path": path }), &path)
                    .await?;
                Ok(FileReply::Done)
            }
            FileOp::Rename { from, to } => {
                absolute(&to)?;
                self.rpc::<Value>(
                    "filesystem.Filesystem/Move",
                    json!({ "source": from, "destination": to }),
                    &from,
                )
                .await?;
                Ok(FileReply::Done)
            }
            FileOp::WatchStart { path, recursive } => {
                #[derive(Deserialize)]
                struct Reply {
                    #[serde(rename = "watcherId")]
                    watcher_id: String,
                }
                let r: Reply = self
                    .rpc(
                        "filesystem.Filesystem/CreateWatcher",
                        json!({ "path": path, "recursive": recursive }),
                        &path,
                    )
                    .await?;
                Ok(FileReply::Watcher {
                    watcher: r.watcher_id,
                })
            }
            FileOp::WatchEvents { watcher } => {
                #[derive(Deserialize)]
                struct Reply {
                    #[serde(default)]
                    events: Vec<Event>,
                }
                #[derive(Deserialize)]
                struct Event {
                    #[serde(default)]
                    name: String,
                    #[serde(rename = "type", default)]
                    kind: String,
                }
                let r: Reply = self
                    .rpc(
                        "filesystem.Filesystem/GetWatcherEvents",
                        json!({ "watcherId": watcher }),
                        &watcher,
                    )
                    .await?;
                let events = r
                    .events
                    .into_iter()
                    .filter_map(|e| {
                        let kind = match e.kind.as_str() {
                            "EVENT_TYPE_CREATE" => WatchEventKind::Create,
                            "EVENT_TYPE_WRITE" => WatchEventKind::Write,
                            "EVENT_TYPE_REMOVE" => WatchEventKind::Remove,
                            "EVENT_TYPE_RENAME" => WatchEventKind::Rename,
                            "EVENT_TYPE_CHMOD" => WatchEventKind::Chmod,
                            _ => return None,
                        };
                        Some(WatchEvent { name: e.name, kind })
                    })
                    .collect();
                Ok(FileReply::Events { events })
            }
            FileOp::WatchStop { watcher } => {
                self.rpc::<Value>(
                    "filesystem.Filesystem/RemoveWatcher",
                    json!({ "watcherId": watcher }),
                    &watcher,
                )
                .await?;
                Ok(FileReply::Done)
            }
        }
    }

    async fn write(&self, path: &str, mode: u32, data: Vec<u8>, in_place: bool) -> Result<()> {
        // envd makes missing parents for an upload; a Stockade write into a directory that is
        // not there fails, naming the path.
        let parent = match path.rsplit_once('/') {
            Some(("", _)) | None => "/",
            Some((dir, _)) => dir,
        };
        match self.stat_entry(parent).await {
            Ok(entry) if entry.kind() == FileKind::Dir => {}
            Ok(_) => {
                return Err(Error::File {
                    path: path.to_owned(),
                    reason: format!("{parent} is not a directory"),
                })
            }
            Err(e) => return Err(rename_path(e, parent, path)),
        }
        if in_place {
            self.envd
                .upload(path, data, self.user)
                .await
                .map_err(|e| file_error(e, path))?;
            return self.set_mode(path, path, mode).await;
        }
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        if name.is_empty() {
            return Err(Error::File {
                path: path.to_owned(),
                reason: "is a directory".into(),
            });
        }
        let temp = format!("{dir}/.{name}.stockade-{}", stockade_store::random_id()?);
        // Errors name the target: the temporary file is this driver's business.
        self.envd
            .upload(&temp, data, self.user)
            .await
            .map_err(|e| file_error(e, path))?;
        let moved = async {
            self.set_mode(&temp, path, mode).await?;
            self.rpc::<Value>(
                "filesystem.Filesystem/Move",
                json!({ "source": temp, "destination": path }),
                path,
            )
            .await
        }
        .await;
        if moved.is_err() {
            let _ = self
                .envd
                .unary::<Value, Value>(
                    "filesystem.Filesystem/Remove",
                    &json!({ "path": temp }),
                    self.user,
                )
                .await;
        }
        moved.map(drop)
    }

    /// Gives `path` permission bits `mode` when envd wrote others (`target` is named in errors).
    async fn set_mode(&self, path: &str, target: &str, mode: u32) -> Result<()> {
        let wanted = mode & 0o7777;
        let entry = self
            .stat_entry(path)
            .await
            .map_err(|e| rename_path(e, path, target))?;
        if entry.mode & 0o7777 == wanted {
            return Ok(());
        }
        let req = ExecRequest::new([
            "chmod".to_owned(),
            format!("{wanted:o}"),
            "--".to_owned(),
            path.to_owned(),
        ]);
        let message = process::start_message(&req, "/");
        let body = self
            .envd
            .open_stream("process.Process/Start", &message, self.user, Some(60_000))
            .await
            .map_err(|e| process::call_error(e, "chmod after a write"))?;
        let mut reader = EventReader::new(body, "chmod", 0);
        reader.first().await?;
        let mut stderr = Vec::new();
        while let Some(event) = reader.next_event().await {
            match event? {
                stockade_core::ExecEvent::Output { data, .. } => stderr.extend(data),
                stockade_core::ExecEvent::Exited { exit, .. } if exit.success() => return Ok(()),
                stockade_core::ExecEvent::Exited { .. } => {
                    return Err(Error::File {
                        path: target.to_owned(),
                        reason: format!(
                            "setting mode {wanted:o}: {}",
                            String::from_utf8_lossy(&stderr).trim()
                        ),
                    })
                }
                stockade_core::ExecEvent::Started { .. } => {}
            }
        }
        Err(Error::backend("chmod after a write", "no exit"))
    }
}

/// An error about `from` (a temporary file) told about `to`.
fn rename_path(e: Error, from: &str, to: &str) -> Error {
    match e {
        Error::File { path, reason } if path == from => Error::File {
            path: to.to_owned(),
            reason,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::connect::RpcError;

    #[test]
    fn entries_read_envds_shape() {
        let e: EntryInfo = serde_json::from_value(json!({
            "name": "bin", "type": "FILE_TYPE_FILE", "path": "/w/bin", "size": "1048576",
            "mode": 0o600, "permissions": "-rw-------", "owner": "root", "group": "root",
            "modifiedTime": "2023-11-14T22:13:20.5Z",
        }))
        .unwrap();
        assert_eq!(
            e.stat(),
            FileStat {
                kind: FileKind::File,
                size: 1 << 20,
                mode: 0o600,
                modified: 1_700_000_000
            }
        );
        let full = e.entry();
        assert_eq!(full.mode, 0o100600);
        assert_eq!(full.modified_ns, 1_700_000_000_500_000_000);
        let d: EntryInfo = serde_json::from_value(
            json!({"name": "d", "type": "FILE_TYPE_DIRECTORY", "size": 4096, "mode": 0o755}),
        )
        .unwrap();
        assert_eq!((d.stat().kind, d.stat().size), (FileKind::Dir, 4096));
    }

    #[test]
    fn file_errors_name_the_path_in_stockades_words() {
        let rpc = |code: &str, message: &str| {
            EnvdError::Rpc(RpcError {
                code: code.into(),
                message: message.into(),
            })
        };
        assert_eq!(
            file_error(rpc("not_found", "/w/x: No such file"), "/w/x").to_string(),
            "/w/x: no such file or directory"
        );
        assert_eq!(
            file_error(
                EnvdError::Http {
                    status: 400,
                    message: "/dev/zero: not a regular file".into()
                },
                "/dev/zero"
            )
            .to_string(),
            "/dev/zero: not a regular file"
        );
        assert!(absolute("relative").unwrap_err().to_string().contains("absolute"));
    }
}
