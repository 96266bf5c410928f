//! envd's `filesystem.Filesystem` service over the driver's file operations (run by the agent
//! inside the sandbox): entries in full, directory walks, and inotify watchers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use stockade_core::{Driver, FileEntry, FileKind, FileOp, FileReply, WatchEvent, WatchEventKind};

use super::connect::{self, Code, RpcError};
use super::envd::Envd;
use crate::AppState;

/// How often a `WatchDir` stream asks the agent for new events.
const WATCH_POLL: Duration = Duration::from_millis(50);

pub async fn call(state: &Arc<AppState>, envd: Envd, method: String, req: Request) -> Response {
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), crate::MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return connect::unary_reply::<()>(Err(RpcError::new(Code::InvalidArgument, e.to_string())))
        }
    };
    if method == "WatchDir" {
        return match connect::stream_request::<WatchRequest>(&body) {
            Ok(r) => watch_dir(Arc::clone(state), envd, r, super::process::keepalive(&headers)).await,
            Err(e) => connect::stream_error(e),
        };
    }
    let fs = Fs { state, envd: &envd };
    let result = match method.as_str() {
        "Stat" => fs.stat(&body).await,
        "ListDir" => fs.list_dir(&body).await,
        "MakeDir" => fs.make_dir(&body).await,
        "Move" => fs.rename(&body).await,
        "Remove" => fs.remove(&body).await,
        "CreateWatcher" => fs.create_watcher(&body).await,
        "GetWatcherEvents" => fs.watcher_events(&body).await,
        "RemoveWatcher" => fs.remove_watcher(&body).await,
        other => Err(RpcError::new(
            Code::Unimplemented,
            format!("filesystem.Filesystem has no method {other}"),
        )),
    };
    connect::unary_reply(result)
}

#[derive(Debug, Deserialize)]
struct PathRequest {
    path: String,
}

#[derive(Debug, Deserialize)]
struct ListRequest {
    path: String,
    #[serde(default)]
    depth: u32,
}

#[derive(Debug, Deserialize)]
struct MoveRequest {
    source: String,
    destination: String,
}

#[derive(Debug, Deserialize)]
struct WatchRequest {
    path: String,
    #[serde(default)]
    recursive: bool,
}

#[derive(Debug, Deserialize)]
struct WatcherRequest {
    #[serde(alias = "watcher_id", rename = "watcherId")]
    watcher_id: String,
}

/// The deepest walk a `ListDir` may ask for.
const MAX_DEPTH: u32 = 64;

struct Fs<'a> {
    state: &'a Arc<AppState>,
    envd: &'a Envd,
}

impl Fs<'_> {
    async fn op(&self, op: FileOp) -> Result<FileReply, RpcError> {
        Ok(self.state.driver.file(&self.envd.info.id, op).await?)
    }

    async fn entry(&self, path: &str) -> Result<FileEntry, RpcError> {
        match self
            .op(FileOp::Entry {
                path: path.to_owned(),
            })
            .await?
        {
            FileReply::Entry { entry } => Ok(entry),
            other => Err(unexpected(&other)),
        }
    }

    async fn stat(&self, body: &Bytes) -> Result<Value, RpcError> {
        let r: PathRequest = connect::unary_request(body)?;
        let entry = self.entry(&self.envd.resolve(&r.path)).await?;
        Ok(json!({ "entry": entry_json(&entry) }))
    }

    async fn list_dir(&self, body: &Bytes) -> Result<Value, RpcError> {
        let r: ListRequest = connect::unary_request(body)?;
        if r.depth > MAX_DEPTH {
            return Err(RpcError::new(
                Code::InvalidArgument,
                format!("depth must be at most {MAX_DEPTH}"),
            ));
        }
        let path = self.envd.resolve(&r.path);
        let entries = match self
            .op(FileOp::Walk {
                path,
                depth: r.depth.max(1),
            })
            .await?
        {
            FileReply::Walk { entries } => entries,
            other => return Err(unexpected(&other)),
        };
        Ok(json!({ "entries": entries.iter().map(entry_json).collect::<Vec<_>>() }))
    }

    async fn make_dir(&self, body: &Bytes) -> Result<Value, RpcError> {
        let r: PathRequest = connect::unary_request(body)?;
        let path = self.envd.resolve(&r.path);
        match self.entry(&path).await {
            Ok(e) if e.kind == FileKind::Dir => {
                return Err(RpcError::new(
                    Code::AlreadyExists,
                    format!("directory {path} already exists"),
                ));
            }
            Ok(_) => {
                return Err(RpcError::new(
                    Code::InvalidArgument,
                    format!("{path} exists and is not a directory"),
                ))
            }
            Err(e) if e.code == Code::NotFound => {}
            Err(e) => return Err(e),
        }
        if self.envd.user == "root" {
            self.op(FileOp::Mkdir { path: path.clone() }).await?;
        } else {
            // Made by the user, so the directories are theirs, as envd makes them.
            let mut req = stockade_core::ExecRequest::new(["mkdir", "-p", "--", path.as_str()]);
            req.user = Some(self.envd.user.clone());
            let out = self
                .state
                .driver
                .exec(&self.envd.info.id, req)
                .await?
                .output()
                .await?;
            if !out.exit.success() {
                let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                let code = if why.contains("Permission denied") {
                    Code::PermissionDenied
                } else {
                    Code::InvalidArgument
                };
                return Err(RpcError::new(code, why));
            }
        }
        Ok(json!({ "entry": entry_json(&self.entry(&path).await?) }))
    }

    async fn rename(&self, body: &Bytes) -> Result<Value, RpcError> {
        let r: MoveRequest = connect::unary_request(body)?;
        let (from, to) = (self.envd.resolve(&r.source), self.envd.resolve(&r.destination));
        // The source must be there before the destination's parents are made for it.
        self.entry(&from).await?;
        if let Some((parent, _)) = to.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
            self.op(FileOp::Mkdir {
                path: parent.to_owned(),
            })
            .await?;
        }
        self.op(FileOp::Rename { from, to: to.clone() }).await?;
        Ok(json!({ "entry": entry_json(&self.entry(&to).await?) }))
    }

    async fn remove(&self, body: &Bytes) -> Result<Value, RpcError> {
        let r: PathRequest = connect::unary_request(body)?;
        let path = self.envd.resolve(&r.path);
        match self
            .op(FileOp::Remove {
                path,
                recursive: true,
            })
            .await
        {
            // envd removes with RemoveAll: a path already gone is done.
            Ok(_) => Ok(json!({})),
            Err(e) if e.code == Code::NotFound => Ok(json!({})),
            Err(e) => Err(e),
        }
    }

    async fn create_watcher(&self, body: &Bytes) -> Result<Value, RpcError> {
        let r: WatchRequest = connect::unary_request(body)?;
        let watcher = start_watch(self.state, self.envd, &r).await?;
        Ok(json!({ "watcherId": watcher }))
    }

    async fn watcher_events(&self, body: &Bytes) -> Result<Value, RpcError> {
        let r: WatcherRequest = connect::unary_request(body)?;
        let events = watch_events(self.state, self.envd, &r.watcher_id).await?;
        Ok(json!({ "events": events.iter().map(event_json).collect::<Vec<_>>() }))
    }

    async fn remove_watcher(&self, body: &Bytes) -> Result<Value, RpcError> {
        let r: WatcherRequest = connect::unary_request(body)?;
        self.op(FileOp::WatchStop {
            watcher: r.watcher_id,
        })
        .await?;
        Ok(json!({}))
    }
}

async fn start_watch(state: &AppState, envd: &Envd, r: &WatchRequest) -> Result<String, RpcError> {
    let path = envd.resolve(&r.path);
    let op = FileOp::WatchStart {
        path,
        recursive: r.recursive,
    };
    match state.driver.file(&envd.info.id, op).await {
        Ok(FileReply::Watcher { watcher }) => Ok(watcher),
        Ok(other) => Err(unexpected(&other)),
        Err(e) => {
            let e = RpcError::from(e);
            // "not a directory" is the caller's mistake, as envd has it.
            Err(if e.message.contains("not a directory") {
                RpcError::new(Code::InvalidArgument, e.message)
            } else {
                e
            })
        }
    }
}

async fn watch_events(state: &AppState, envd: &Envd, watcher: &str) -> Result<Vec<WatchEvent>, RpcError> {
    let op = FileOp::WatchEvents {
        watcher: watcher.to_owned(),
    };
    match state.driver.file(&envd.info.id, op).await? {
        FileReply::Events { events } => Ok(events),
        other => Err(unexpected(&other)),
    }
}

/// `WatchDir`: a start message, then each event as it happens (polled from the agent), with
/// keepalives when idle. The watcher stops when the client goes.
async fn watch_dir(state: Arc<AppState>, envd: Envd, r: WatchRequest, keepalive: Duration) -> Response {
    let watcher = match start_watch(&state, &envd, &r).await {
        Ok(w) => w,
        Err(e) => return connect::stream_error(e),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut idle = Duration::ZERO;
        let mut send = vec![connect::message(&json!({"start": {}}))];
        loop {
            for frame in send.drain(..) {
                if tx.send(Ok(frame)).await.is_err() {
                    let _ = state
                        .driver
                        .file(
                            &envd.info.id,
                            FileOp::WatchStop {
                                watcher: watcher.clone(),
                            },
                        )
                        .await;
                    return;
                }
            }
            tokio::time::sleep(WATCH_POLL).await;
            idle += WATCH_POLL;
            if tx.is_closed() {
                let _ = state
                    .driver
                    .file(
                        &envd.info.id,
                        FileOp::WatchStop {
                            watcher: watcher.clone(),
                        },
                    )
                    .await;
                return;
            }
            match watch_events(&state, &envd, &watcher).await {
                Ok(events) => {
                    if !events.is_empty() {
                        idle = Duration::ZERO;
                    }
                    send.extend(
                        events
                            .iter()
                            .map(|e| connect::message(&json!({"filesystem": event_json(e)}))),
                    );
                }
                Err(_) => {
                    // The sandbox (or its agent) went: end the response without an end frame.
                    let _ = tx.send(Err(std::io::Error::other("the sandbox went away"))).await;
                    return;
                }
            }
            if idle >= keepalive {
                idle = Duration::ZERO;
                send.push(connect::message(&json!({"keepalive": {}})));
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    connect::stream_reply(body)
}

fn unexpected(reply: &FileReply) -> RpcError {
    RpcError::new(Code::Internal, format!("the agent answered {reply:?}"))
}

/// envd's `EntryInfo`.
pub fn entry_json(e: &FileEntry) -> Value {
    let kind = match e.kind {
        FileKind::File => "FILE_TYPE_FILE",
        FileKind::Dir => "FILE_TYPE_DIRECTORY",
        FileKind::Symlink => "FILE_TYPE_SYMLINK",
        FileKind::Other => "FILE_TYPE_UNSPECIFIED",
    };
    let modified = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(e.modified_ns)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let mut v = json!({
        "name": e.name,
        "type": kind,
        "path": e.path,
        "size": e.size.to_string(),
        "mode": e.mode & 0o777,
        "permissions": permissions(e.kind, e.mode),
        "owner": e.owner,
        "group": e.group,
        "modifiedTime": modified,
    });
    if let Some(target) = &e.symlink_target {
        v["symlinkTarget"] = json!(target);
    }
    v
}

/// Go's `FileMode.String()` for the common cases: type letter, then `rwx` three times.
fn permissions(kind: FileKind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'L',
        _ => '-',
    });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 0o7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn event_json(e: &WatchEvent) -> Value {
    let kind = match e.kind {
        WatchEventKind::Create => "EVENT_TYPE_CREATE",
        WatchEventKind::Write => "EVENT_TYPE_WRITE",
        WatchEventKind::Remove => "EVENT_TYPE_REMOVE",
        WatchEventKind::Rename => "EVENT_TYPE_RENAME",
        WatchEventKind::Chmod => "EVENT_TYPE_CHMOD",
    };
    json!({ "name": e.name, "type": kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_read_as_go_prints_them() {
        assert_eq!(permissions(FileKind::File, 0o100644), "-rw-r--r--");
        assert_eq!(permissions(FileKind::Dir, 0o40755), "drwxr-xr-x");
    }

    #[test]
    fn entries_carry_int64_sizes_as_strings_and_permission_bits_as_mode() {
        let e = FileEntry {
            name: "a".into(),
            path: "/tmp/a".into(),
            kind: FileKind::File,
            size: 3,
            mode: 0o100640,
            owner: "root".into(),
            group: "root".into(),
            modified_ns: 1_700_000_000_000_000_000,
            symlink_target: None,
        };
        let v = entry_json(&e);
        assert_eq!(v["size"], "3");
        assert_eq!(v["mode"], 0o640);
        assert_eq!(v["type"], "FILE_TYPE_FILE");
        assert_eq!(v["modifiedTime"], "2023-11-14T22:13:20Z");
        assert!(v.get("symlinkTarget").is_none());
    }
}
