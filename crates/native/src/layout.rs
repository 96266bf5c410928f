//! Where things live under `$STOCKADE_HOME`:
//!
//! ```text
//! records/ID.json        the sandbox record (root only, 0600)
//! run/ID.sock            the agent's socket        run/ID.log  the supervisor's log
//! run/ID.runtime.json    pids of the live supervisor and pid 1
//! sandboxes/ID/          owned by the sandbox's root uid, 0700:
//!     disk.img           with --disk: an ext4 image, loop-mounted on data/
//!     data/upper/ data/work/   the overlay's writable layer
//!     data/workspace/    /workspace unless a host dir is mounted there
//!     data/home/         /root, the sandbox root's home
//!     data/userhome/     the home of a non-root --user
//!     root/              the overlay mount point
//! ```

use std::path::PathBuf;

use stockade_core::SandboxId;

/// Paths under one Stockade home.
#[derive(Debug, Clone)]
pub struct Layout {
    pub home: PathBuf,
}

impl Layout {
    pub fn at(home: impl Into<PathBuf>) -> Self {
        Layout { home: home.into() }
    }

    pub fn records(&self) -> PathBuf {
        self.home.join("records")
    }
    pub fn record(&self, id: &SandboxId) -> PathBuf {
        self.records().join(format!("{id}.json"))
    }
    pub fn run_dir(&self) -> PathBuf {
        self.home.join("run")
    }
    pub fn socket(&self, id: &SandboxId) -> PathBuf {
        self.run_dir().join(format!("{id}.sock"))
    }
    /// Present while the sandbox is paused: execs are refused without reading the record.
    pub fn paused_marker(&self, id: &SandboxId) -> PathBuf {
        self.run_dir().join(format!("{id}.paused"))
    }
    pub fn log(&self, id: &SandboxId) -> PathBuf {
        self.run_dir().join(format!("{id}.log"))
    }
    pub fn runtime(&self, id: &SandboxId) -> PathBuf {
        self.run_dir().join(format!("{id}.runtime.json"))
    }
    pub fn sandboxes(&self) -> PathBuf {
        self.home.join("sandboxes")
    }
    pub fn sandbox_dir(&self, id: &SandboxId) -> PathBuf {
        self.sandboxes().join(id.as_str())
    }
    /// Everything the sandbox writes lives here (a loop-mounted image with `--disk`).
    pub fn data(&self, id: &SandboxId) -> PathBuf {
        self.sandbox_dir(id).join("data")
    }
    /// The ext4 image behind `data` when the sandbox has a disk limit.
    pub fn disk_image(&self, id: &SandboxId) -> PathBuf {
        self.sandbox_dir(id).join("disk.img")
    }
    pub fn upper(&self, id: &SandboxId) -> PathBuf {
        self.data(id).join("upper")
    }
    pub fn work(&self, id: &SandboxId) -> PathBuf {
        self.data(id).join("work")
    }
    pub fn workspace(&self, id: &SandboxId) -> PathBuf {
        self.data(id).join("workspace")
    }
    /// Root's home (`/root` inside), kept apart so the host's `/root` never shows through.
    pub fn home_dir(&self, id: &SandboxId) -> PathBuf {
        self.data(id).join("home")
    }
    /// The default user's home when that user is not root.
    pub fn user_home_dir(&self, id: &SandboxId) -> PathBuf {
        self.data(id).join("userhome")
    }
    pub fn root(&self, id: &SandboxId) -> PathBuf {
        self.sandbox_dir(id).join("root")
    }
    pub fn lock(&self) -> PathBuf {
        self.home.join("lock")
    }

    /// Creates the top-level directories with their modes: records and run are private; the
    /// sandboxes dir is traversable (0711) so each sandbox's unprivileged root can reach its own
    /// directory, but not list the others.
    pub fn ensure(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for (dir, mode) in [
            (self.home.as_path(), 0o711),
            (&self.records(), 0o700),
            (&self.run_dir(), 0o700),
            (&self.sandboxes(), 0o711),
        ] {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }
}
