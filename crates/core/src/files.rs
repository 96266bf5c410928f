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
    /// Atomic: written to a temporary file beside `path`, then renamed over it.
    Write {
        path: String,
        mode: u32,
        #[serde(skip)]
        data: Vec<u8>,
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
}

impl FileOp {
    /// The path the operation is about (the source for a rename), for error messages.
    pub fn path(&self) -> &str {
        match self {
            FileOp::Read { path }
            | FileOp::Write { path, .. }
            | FileOp::List { path }
            | FileOp::Stat { path }
            | FileOp::Mkdir { path }
            | FileOp::Remove { path, .. } => path,
            FileOp::Rename { from, .. } => from,
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
    Done,
}
