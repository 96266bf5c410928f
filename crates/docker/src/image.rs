//! Images: use a local one, pull one (with progress) when a registry answers, build one from a
//! Dockerfile directory, import a rootfs tarball, or make Stockade's base image from Debian
//! packages with debootstrap, cached by the recipe's content.

use std::path::Path;
use std::process::Stdio;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use stockade_core::{Error, Result};
use tokio::io::AsyncReadExt;

use crate::engine::{short, Engine};

/// The repository base images are tagged in; `:latest` is the newest one built here.
pub const BASE_REPO: &str = "stockade/base";

/// What the user is told while images move.
pub type Progress<'a> = &'a mut (dyn FnMut(&str) + Send);

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

fn image_err(name: &str, e: impl std::fmt::Display) -> Error {
    Error::backend(format!("image {name}"), e)
}

/// Whether the engine has `name` locally.
pub async fn exists(engine: &Engine, name: &str) -> Result<bool> {
    match engine.client.inspect_image(name).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
        // The engine refuses the name itself ("invalid reference format"): the caller's input.
        Err(e @ bollard::errors::Error::DockerResponseServerError { status_code: 400, .. }) => {
            Err(Error::invalid("image", format!("{name:?}: {}", short(&e))))
        }
        Err(e) => Err(image_err(name, short(&e))),
    }
}

/// Makes sure `name` is on the engine: local, or pulled with progress.
pub async fn ensure(engine: &Engine, name: &str, progress: Progress<'_>) -> Result<()> {
    if exists(engine, name).await? {
        return Ok(());
    }
    // Without a tag the engine would pull every tag of the repository.
    let (repo, tag) = split_tag(name);
    let options = bollard::query_parameters::CreateImageOptionsBuilder::new()
        .from_image(repo)
        .tag(tag)
        .build();
    let mut pull = engine.client.create_image(Some(options), None, None);
    let mut failure = None;
    while let Some(item) = pull.next().await {
        match item {
            Ok(info) => {
                if let Some(err) = info.error_detail.and_then(|d| d.message) {
                    failure = Some(err);
                    break;
                }
                let line = match (&info.id, &info.status, &info.progress_detail) {
                    (Some(id), Some(status), Some(d)) if d.total.unwrap_or(0) > 0 => format!(
                        "{id}: {status} {}/{} MB",
                        d.current.unwrap_or(0) >> 20,
                        d.total.unwrap_or(0) >> 20
                    ),
                    (Some(id), Some(status), _) => format!("{id}: {status}"),
                    (None, Some(status), _) => status.clone(),
                    _ => continue,
                };
                progress(&line);
            }
            Err(e) => {
                failure = Some(short(&e));
                break;
            }
        }
    }
    match failure {
        None if exists(engine, name).await? => Ok(()),
        why => Err(Error::invalid(
            "image",
            format!(
                "{name} is not on the engine at {} and pulling it failed ({}). Make one with \
                 `stockade image base` (Debian with bash, git, python3, curl), `stockade image build DIR -t NAME` \
                 or `stockade image import ROOTFS.tar NAME`",
                engine.endpoint,
                why.unwrap_or_else(|| "the pull ended without the image".into())
            ),
        )),
    }
}

/// Imports a rootfs tar stream as image `repo:tag`; returns the image id.
async fn import_stream<R>(
    engine: &Engine,
    reader: R,
    repo: &str,
    tag: &str,
    progress: Progress<'_>,
) -> Result<()>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let body = futures::stream::unfold(reader, |mut r| async move {
        let mut buf = vec![0u8; 1 << 20];
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Bytes::from(buf), r))
            }
        }
    });
    let options = bollard::query_parameters::CreateImageOptionsBuilder::new()
        .from_src("-")
        // The tag goes in `repo`: the API allows it there, and Podman ignores a separate `tag`.
        .repo(&format!("{repo}:{tag}"))
        .changes(vec![
            format!("ENV PATH={}", stockade_proto::DEFAULT_PATH),
            "CMD [\"/bin/bash\"]".into(),
        ])
        .build();
    let name = format!("{repo}:{tag}");
    let mut import = engine
        .client
        .create_image(Some(options), Some(bollard::body_stream(body)), None);
    while let Some(item) = import.next().await {
        let info = item.map_err(|e| image_err(&name, short(&e)))?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(image_err(&name, err));
        }
        if let Some(status) = info.status {
            progress(status.trim());
        }
    }
    if !exists(engine, &name).await? {
        return Err(image_err(
            &name,
            "the engine accepted the tarball but has no such image",
        ));
    }
    Ok(())
}

/// Splits `repo[:tag]` (a registry port's colon is not a tag).
pub fn split_tag(name: &str) -> (&str, &str) {
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (name, "latest"),
    }
}

/// `stockade image import`: a rootfs tarball (plain or compressed as the engine accepts) as `name`.
pub async fn import_tarball(
    engine: &Engine,
    tarball: &Path,
    name: &str,
    progress: Progress<'_>,
) -> Result<()> {
    let file = tokio::fs::File::open(tarball)
        .await
        .map_err(|e| Error::invalid("tarball", format!("{}: {e}", tarball.display())))?;
    let (repo, tag) = split_tag(name);
    import_stream(engine, file, repo, tag, progress).await
}

/// `stockade image build`: builds `dir` (with its Dockerfile) as `name`, streaming the build log.
pub async fn build(engine: &Engine, dir: &Path, name: &str, progress: Progress<'_>) -> Result<()> {
    if !dir.join("Dockerfile").is_file() {
        return Err(Error::invalid(
            "context",
            format!("{}: no Dockerfile in this directory", dir.display()),
        ));
    }
    let tar = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["-c", "."])
        .output()
        .await
        .map_err(|e| Error::backend("tar", e))?;
    if !tar.status.success() {
        return Err(Error::backend(
            format!("tar {}", dir.display()),
            String::from_utf8_lossy(&tar.stderr).trim(),
        ));
    }
    let options = bollard::query_parameters::BuildImageOptionsBuilder::new()
        .t(name)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream =
        engine
            .client
            .build_image(options, None, Some(bollard::body_full(Bytes::from(tar.stdout))));
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| image_err(name, short(&e)))?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(image_err(name, err.trim()));
        }
        if let Some(line) = info.stream {
            let line = line.trim_end();
            if !line.is_empty() {
                progress(line);
            }
        }
    }
    Ok(())
}

/// `stockade image base`: Debian from `recipe` via debootstrap, imported as
/// `stockade/base:<recipe hash>` and tagged `stockade/base:latest`. Skips the work when the
/// engine already has that tag. `scratch` holds the temporary rootfs. Returns the tag.
pub async fn base(
    engine: &Engine,
    recipe: &BaseRecipe,
    scratch: &Path,
    progress: Progress<'_>,
) -> Result<String> {
    let tag = recipe.tag();
    if exists(engine, &tag).await? {
        progress(&format!("{tag} is already built (recipe unchanged)"));
        tag_latest(engine, &tag).await?;
        return Ok(tag);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::unsupported(
            "docker",
            "stockade image base",
            "debootstrap needs root; run it as root once per machine",
        ));
    }
    if which("debootstrap").is_none() {
        return Err(Error::unsupported(
            "docker",
            "stockade image base",
            "debootstrap is not installed (apt-get install debootstrap)",
        ));
    }
    let rootfs = scratch.join(format!("base-{}", recipe.key()));
    let _ = std::fs::remove_dir_all(&rootfs);
    std::fs::create_dir_all(scratch)
        .map_err(|e| Error::backend(format!("create {}", scratch.display()), e))?;
    progress(&format!(
        "debootstrap {} ({}) with {} into {}",
        recipe.suite,
        recipe.variant,
        recipe.packages.join(","),
        rootfs.display()
    ));
    let result = async {
        let mut child = tokio::process::Command::new("debootstrap")
            .arg(format!("--variant={}", recipe.variant))
            .arg(format!("--include={}", recipe.packages.join(",")))
            .arg(&recipe.suite)
            .arg(&rootfs)
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
        add_user(&rootfs).map_err(|e| Error::backend("base image: add user `user`", e))?;
        let _ = std::fs::remove_dir_all(rootfs.join("var/cache/apt/archives"));
        progress(&format!("importing {tag}"));
        let mut tar = tokio::process::Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["--numeric-owner", "-c", "."])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Error::backend("tar", e))?;
        let out = tar
            .stdout
            .take()
            .ok_or_else(|| Error::backend("tar", "no stdout"))?;
        let (repo, key) = split_tag(&tag);
        import_stream(engine, out, repo, key, progress).await?;
        let status = tar.wait().await.map_err(|e| Error::backend("tar", e))?;
        if !status.success() {
            return Err(Error::backend("tar", format!("{status}")));
        }
        Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&rootfs);
    result?;
    tag_latest(engine, &tag).await?;
    Ok(tag)
}

/// The unprivileged user templates run as: `user`, uid and gid 1000, home `/home/user` with
/// the skeleton files, bash. Written into the root filesystem's account files directly (minbase
/// has no `useradd`). No sudo: the agent's `no_new_privs` would refuse it anyway; root is one
/// `user=` away through the API.
fn add_user(rootfs: &Path) -> std::io::Result<()> {
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

async fn tag_latest(engine: &Engine, tag: &str) -> Result<()> {
    let options = bollard::query_parameters::TagImageOptionsBuilder::new()
        .repo(BASE_REPO)
        .tag("latest")
        .build();
    engine
        .client
        .tag_image(tag, Some(options))
        .await
        .map_err(|e| image_err(tag, short(&e)))
}

fn which(program: &str) -> Option<std::path::PathBuf> {
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

    #[test]
    fn tags_split_past_registry_ports() {
        assert_eq!(split_tag("debian:12"), ("debian", "12"));
        assert_eq!(split_tag("localhost:5000/img"), ("localhost:5000/img", "latest"));
        assert_eq!(split_tag("img"), ("img", "latest"));
    }
}
