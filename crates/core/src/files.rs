//! File operations inside a sandbox. Paths are absolute paths inside the sandbox.

use serde::{Deserialize, Serialize};

/// One file operation. File contents (`data`) are not part of the JSON form: each transport
/// carries them out of band, raw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum FileOp {
    Read {
        path: String,
    },
    /// Atomic: written to a temporary file beside `path`, then renamed over it; with
    /// `in_place`, opened with `O_CREAT|O_TRUNC` and written where it is (a watcher then sees
    /// the file created and written, not a temporary renamed over it).
    Write {
        path: String,
        mode: u32,
        #[serde(skip)]
        data: Vec<u8>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        in_place: bool,
        /// With `in_place`, the user (a name the sandbox knows) the file and the parents made
        /// for it belong to, as envd gives a written file to the request's user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    List {
        path: String,
    },
    Stat {
        path: String,
    },
    /// Creates missing parents, like `mkdir -p`.
    Mkdir {
        path: String,
    },
    Remove {
        path: String,
        recursive: bool,
    },
    Rename {
        from: String,
        to: String,
    },
    /// One entry, in full: owner, group, symlink target.
    Entry {
        path: String,
    },
    /// A directory's entries down to `depth` levels (1: the directory's own), symlinks not
    /// followed.
    Walk {
        path: String,
        depth: u32,
    },
    /// Starts watching a directory (with `recursive`, its subdirectories too, new ones
    /// included); the events queue until [`FileOp::WatchEvents`] takes them.
    WatchStart {
        path: String,
        recursive: bool,
    },
    /// The events a watcher queued since the last call, oldest first.
    WatchEvents {
        watcher: String,
    },
    WatchStop {
        watcher: String,
    },
}

impl FileOp {
    /// The operation's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            FileOp::Read { .. } => "read",
            FileOp::Write { .. } => "write",
            FileOp::List { .. } => "list",
            FileOp::Stat { .. } => "stat",
            FileOp::Mkdir { .. } => "mkdir",
            FileOp::Remove { .. } => "remove",
            FileOp::Rename { .. } => "rename",
            FileOp::Entry { .. } => "entry",
            FileOp::Walk { .. } => "walk",
            FileOp::WatchStart { .. } => "watch start",
            FileOp::WatchEvents { .. } => "watch events",
            FileOp::WatchStop { .. } => "watch stop",
        }
    }

    /// The path the operation is about (the source for a rename), for error messages.
    pub fn path(&self) -> &str {
        match self {
            FileOp::Read { path }
            | FileOp::Write { path, .. }
            | FileOp::List { path }
            | FileOp::Stat { path }
            | FileOp::Mkdir { path }
            | FileOp::Remove { path, .. }
            | FileOp::Entry { path }
            | FileOp::Walk { path, .. }
            | FileOp::WatchStart { path, .. } => path,
            FileOp::Rename { from, .. } => from,
            FileOp::WatchEvents { watcher } | FileOp::WatchStop { watcher } => watcher,
        }
    }
}

/// What kind of file.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// Metadata of one file.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Unix seconds.
    pub modified: i64,
}

/// One directory entry.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    #[serde(flatten)]
    pub stat: FileStat,
}

/// The answer to a [`FileOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "lowercase")]
pub enum FileReply {
    /// File contents (carried out of band, like [`FileOp::Write`]'s).
    Data {
        #[serde(skip)]
        data: Vec<u8>,
    },
    Entries {
        entries: Vec<DirEntry>,
    },
    Stat {
        stat: FileStat,
    },
    Entry {
        entry: FileEntry,
    },
    Walk {
        entries: Vec<FileEntry>,
    },
    Watcher {
        watcher: String,
    },
    Events {
        events: Vec<WatchEvent>,
    },
    Done,
}

/// One file in full, as [`FileOp::Entry`] and [`FileOp::Walk`] give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// Absolute.
    pub path: String,
    /// A symlink's target's kind (`Symlink` only for a dangling link).
    pub kind: FileKind,
    pub size: u64,
    /// `st_mode` (a symlink's target's): type and permission bits.
    pub mode: u32,
    pub owner: String,
    pub group: String,
    /// Unix nanoseconds.
    pub modified_ns: i64,
    /// For a symlink, the absolute path it resolves to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

/// What happened to a watched path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchEventKind {
    Create,
    Write,
    Remove,
    Rename,
    Chmod,
}

/// One change a watcher saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// Relative to the watched directory.
    pub name: String,
    pub kind: WatchEventKind,
}
