//! Images: use a local one, pull one (with progress) when a registry answers, build one from a
//! Dockerfile directory, import a rootfs tarball, or make Stockade's base image from Debian
//! packages with debootstrap, cached by the recipe's content.

use std::path::Path;
use std::process::Stdio;

use bytes::Bytes;
use futures::StreamExt;
use stockade_core::{Error, Result};
use tokio::io::AsyncReadExt;

use crate::engine::{short, Engine};
pub use stockade_rootfs::BaseRecipe;

pub use stockade_rootfs::BASE_REPO;

/// What the user is told while images move.
pub type Progress<'a> = &'a mut (dyn FnMut(&str) + Send);

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
    let rootfs = scratch.join(format!("base-{}", recipe.key()));
    let result = async {
        stockade_rootfs::debootstrap(recipe, &rootfs, "docker", progress).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_past_registry_ports() {
        assert_eq!(split_tag("debian:12"), ("debian", "12"));
        assert_eq!(split_tag("localhost:5000/img"), ("localhost:5000/img", "latest"));
        assert_eq!(split_tag("img"), ("img", "latest"));
    }
}
