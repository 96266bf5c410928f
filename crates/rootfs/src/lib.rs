//! Debian root filesystems made from packages with debootstrap: what goes in (a [`BaseRecipe`],
//! hashed so an unchanged recipe is built once), the run itself with its output as progress, and
//! the unprivileged user E2B's templates run as. The docker driver imports the tree as an image;
//! the microvm driver writes it into a disk image.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Serialize;
use sha2::{Digest, Sha256};
use stockade_core::{Error, Result};
use tokio::io::AsyncReadExt;

/// The repository base images are tagged in; `:latest` is the newest one built here.
pub const BASE_REPO: &str = "stockade/base";

/// What goes into the base image. Its hash is the image's tag, so a changed recipe builds anew
/// and an unchanged one is built once per engine.
#[derive(Debug, Clone, Serialize)]
pub struct BaseRecipe {
    pub suite: String,
    pub mirror: String,
    pub variant: String,
    pub packages: Vec<String>,
    /// Bumped when how the image is made changes.
    pub revision: u32,
}

impl Default for BaseRecipe {
    fn default() -> Self {
        BaseRecipe {
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            variant: "minbase".into(),
            packages: [
                "bash",
                "coreutils",
                "git",
                "python3",
                "curl",
                "ca-certificates",
                "procps",
                "iproute2",
                "util-linux",
                "iputils-ping",
            ]
            .map(String::from)
            .to_vec(),
            // 2: the unprivileged user `user` (uid 1000, home /home/user), as E2B's base has.
            revision: 2,
        }
    }
}

impl BaseRecipe {
    /// The first 12 hex digits of the recipe's SHA-256.
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&json);
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    /// `stockade/base:<key>`.
    pub fn tag(&self) -> String {
        format!("{BASE_REPO}:{}", self.key())
    }
}

/// Runs debootstrap for `recipe` into `rootfs` (removed first), then adds the workspace mount
/// point and the user `user`, and drops the package cache. Needs root and debootstrap; `driver`
/// names who asked, for the errors.
pub async fn debootstrap(
    recipe: &BaseRecipe,
    rootfs: &Path,
    driver: &'static str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::unsupported(
            driver,
            "building the base image",
            "debootstrap needs root; run it as root once per machine",
        ));
    }
    if which("debootstrap").is_none() {
        return Err(Error::unsupported(
            driver,
            "building the base image",
            "debootstrap is not installed (apt-get install debootstrap)",
        ));
    }
    let _ = std::fs::remove_dir_all(rootfs);
    if let Some(parent) = rootfs.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::backend(format!("create {}", parent.display()), e))?;
    }
    progress(&format!(
        "debootstrap {} ({}) with {} into {}",
        recipe.suite,
        recipe.variant,
        recipe.packages.join(","),
        rootfs.display()
    ));
    let mut child = tokio::process::Command::new("debootstrap")
        .arg(format!("--variant={}", recipe.variant))
        .arg(format!("--include={}", recipe.packages.join(",")))
        .arg(&recipe.suite)
        .arg(rootfs)
        .arg(&recipe.mirror)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::backend("debootstrap", e))?;
    let stdout = child.stdout.take();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        stdout.ok_or_else(|| Error::backend("debootstrap", "no stdout"))?,
    ));
    let mut last = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        progress(&line);
        last = line;
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr).await;
    }
    let status = child.wait().await.map_err(|e| Error::backend("debootstrap", e))?;
    if !status.success() {
        return Err(Error::backend(
            "debootstrap",
            format!("{status}: {} {}", last.trim(), stderr.trim()),
        ));
    }
    // The workspace mount point, owned by nobody in particular.
    let _ = std::fs::create_dir_all(rootfs.join("workspace"));
    add_user(rootfs).map_err(|e| Error::backend("base image: add user `user`", e))?;
    let _ = std::fs::remove_dir_all(rootfs.join("var/cache/apt/archives"));
    Ok(())
}

/// The unprivileged user templates run as: `user`, uid and gid 1000, home `/home/user` with
/// the skeleton files, bash. Written into the root filesystem's account files directly (minbase
/// has no `useradd`). No sudo: the agent's `no_new_privs` would refuse it anyway; root is one
/// `user=` away through the API.
pub fn add_user(rootfs: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let append = |file: &str, line: &str| -> std::io::Result<()> {
        let path = rootfs.join(file);
        let existing = std::fs::read_to_string(&path).unwrap_or_default();
        if existing.lines().any(|l| l.starts_with("user:")) {
            return Ok(());
        }
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)?
            .write_all(line.as_bytes())
    };
    append("etc/passwd", "user:x:1000:1000:user:/home/user:/bin/bash\n")?;
    append("etc/group", "user:x:1000:\n")?;
    if rootfs.join("etc/shadow").exists() {
        append("etc/shadow", "user:*:19000:0:99999:7:::\n")?;
    }
    let home = rootfs.join("home/user");
    std::fs::create_dir_all(&home)?;
    if let Ok(skel) = std::fs::read_dir(rootfs.join("etc/skel")) {
        for entry in skel.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let to = home.join(entry.file_name());
                std::fs::copy(entry.path(), &to)?;
                std::os::unix::fs::chown(&to, Some(1000), Some(1000))?;
            }
        }
    }
    std::os::unix::fs::chown(&home, Some(1000), Some(1000))
}

/// `program` in the default `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    stockade_proto::DEFAULT_PATH
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_key_follows_content() {
        let a = BaseRecipe::default();
        let mut b = a.clone();
        assert_eq!(a.key(), b.key());
        assert_eq!(a.key().len(), 12);
        b.packages.push("vim".into());
        assert_ne!(a.key(), b.key());
        assert!(a.tag().starts_with("stockade/base:"));
    }
}
