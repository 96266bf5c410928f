//! VM images: a guest kernel, the modules the guest's first stage loads, and a root filesystem
//! as an ext4 disk image, all from Debian packages and cached by the recipe's hash under
//! `$STOCKADE_HOME/microvm/images/<key>` (`latest` points at the newest). The initramfs is made
//! per agent binary beside them, so a rebuilt agent never needs a rebuilt image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stockade_core::{Error, Result};
use stockade_rootfs::BaseRecipe;

use crate::initramfs::{self, Entry};
use crate::DRIVER;

/// What goes into a VM image. Its hash names the image's directory.
#[derive(Debug, Clone, Serialize)]
pub struct VmRecipe {
    /// The root filesystem: the same Debian as the docker driver's base image.
    pub rootfs: BaseRecipe,
    /// The kernel's Debian package (a metapackage naming the versioned one).
    pub kernel_package: String,
    /// The modules the first stage loads, by name; their dependencies come along.
    pub modules: Vec<String>,
    /// The root filesystem's size (sparse on the host; each sandbox's disk is an overlay on it).
    pub disk_bytes: u64,
    /// Bumped when how the image is made changes.
    pub revision: u32,
}

impl Default for VmRecipe {
    fn default() -> Self {
        VmRecipe {
            rootfs: BaseRecipe::default(),
            kernel_package: "linux-image-cloud-amd64".into(),
            modules: [
                "virtio_mmio",
                "virtio_blk",
                "virtio_console",
                "virtio-rng",
                "virtio_net",
            ]
            .map(String::from)
            .to_vec(),
            disk_bytes: 4 << 30,
            // 2: no file capabilities.
            revision: 2,
        }
    }
}

impl VmRecipe {
    /// The first 12 hex digits of the recipe's SHA-256.
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&json)
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// A built image's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmImage {
    pub dir: PathBuf,
    pub key: String,
    pub kernel: PathBuf,
    pub kernel_release: String,
    pub rootfs: PathBuf,
    pub modules_dir: PathBuf,
}

/// What `recipe.json` in an image's directory says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    key: String,
    kernel_release: String,
    modules: Vec<String>,
    built_at: u64,
}

impl Manifest {
    /// The manifest of the image in `dir`, if it has a readable one.
    fn read(dir: &Path) -> Option<Manifest> {
        serde_json::from_slice(&std::fs::read(dir.join("recipe.json")).ok()?).ok()
    }

    /// Writes this manifest into the image tree `staged` and moves the tree to `dest`.
    fn install(&self, staged: &Path, dest: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::backend("manifest", e))?;
        std::fs::write(staged.join("recipe.json"), json).map_err(|e| Error::backend("write manifest", e))?;
        std::fs::rename(staged, dest).map_err(|e| Error::backend("install the image", e))
    }
}

/// Where images live: `$STOCKADE_VM_IMAGES` when set (so several homes can share one), else
/// `$STOCKADE_HOME/microvm/images`.
pub fn images_dir(config: &stockade_core::DriverConfig) -> PathBuf {
    config
        .var("STOCKADE_VM_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| config.home.join("microvm").join("images"))
}

/// The image `name` names in `images`: `latest` (the default), or a recipe key.
pub fn find(images: &Path, name: &str) -> Result<VmImage> {
    let dir = images.join(name);
    let manifest = Manifest::read(&dir).ok_or_else(|| {
        if name == "latest" {
            Error::unsupported(
                DRIVER,
                "sandboxes",
                format!(
                    "no VM image is built in {}: run `stockade image base --driver microvm` (as root; it needs debootstrap and e2fsprogs)",
                    images.display()
                ),
            )
        } else {
            Error::invalid("image", format!("no VM image {name:?} in {}", images.display()))
        }
    })?;
    let dir =
        std::fs::canonicalize(&dir).map_err(|e| Error::backend(format!("image {}", dir.display()), e))?;
    for part in ["vmlinuz", "rootfs.ext4", "modules/order"] {
        if !dir.join(part).is_file() {
            return Err(Error::unsupported(
                DRIVER,
                "sandboxes",
                format!(
                    "VM image {name} in {} has no {part}: rebuild it with `stockade image base --driver microvm` (remove the directory first)",
                    dir.display()
                ),
            ));
        }
    }
    Ok(VmImage {
        kernel: dir.join("vmlinuz"),
        rootfs: dir.join("rootfs.ext4"),
        modules_dir: dir.join("modules"),
        kernel_release: manifest.kernel_release,
        key: manifest.key,
        dir,
    })
}

/// `stockade image vm`: builds the image for `recipe` unless it is built already; `scratch`
/// holds the temporary root tree. Returns the image.
pub async fn build(
    images: &Path,
    recipe: &VmRecipe,
    scratch: &Path,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<VmImage> {
    let key = recipe.key();
    if let Ok(image) = find(images, &key) {
        progress(&format!("VM image {key} is already built (recipe unchanged)"));
        point_latest(images, &key)?;
        return Ok(image);
    }
    for tool in ["mkfs.ext4", "chroot"] {
        if stockade_rootfs::which(tool).is_none() {
            return Err(Error::unsupported(
                DRIVER,
                "stockade image vm",
                format!("{tool} is not installed (apt-get install e2fsprogs coreutils)"),
            ));
        }
    }
    let work = scratch.join(format!("vm-{key}"));
    let root = work.join("root");
    let staged = images.join(format!(".{key}.partial"));
    let result = async {
        stockade_rootfs::debootstrap(&recipe.rootfs, &root, DRIVER, progress).await?;
        let _ = std::fs::remove_dir_all(&staged);
        std::fs::create_dir_all(staged.join("modules")).map_err(|e| Error::backend("create image dir", e))?;
        progress(&format!("fetching {} inside the new root", recipe.kernel_package));
        let kernel_tree = fetch_kernel(&root, &recipe.kernel_package).await?;
        let release = kernel_release(&kernel_tree)?;
        std::fs::copy(
            kernel_tree.join(format!("boot/vmlinuz-{release}")),
            staged.join("vmlinuz"),
        )
        .map_err(|e| Error::backend("copy the kernel", e))?;
        let modules = copy_modules(
            &kernel_tree.join("lib/modules").join(&release),
            &recipe.modules,
            &staged.join("modules"),
        )?;
        progress(&format!(
            "kernel {release}; modules in load order: {}",
            modules.join(" ")
        ));
        // Nothing of the kernel package stays in the guest's root.
        let _ = std::fs::remove_dir_all(&kernel_tree);
        for dir in ["var/lib/apt/lists", "var/cache/apt"] {
            let _ = std::fs::remove_dir_all(root.join(dir));
            let _ = std::fs::create_dir_all(root.join(dir));
        }
        let _ = std::fs::create_dir_all(root.join(".stockade"));
        // File capabilities (ping's cap_net_raw) cannot be granted under the agent's empty
        // bounding set, and the kernel then refuses the exec outright; execs get unprivileged
        // ICMP instead (ping_group_range). Docker's import of the same tree drops them too.
        drop_file_capabilities(&root)?;
        progress(&format!(
            "writing the root filesystem ({} bytes, sparse)",
            recipe.disk_bytes
        ));
        make_ext4(&root, &staged.join("rootfs.ext4"), recipe.disk_bytes).await?;
        let manifest = Manifest {
            key: key.clone(),
            kernel_release: release,
            modules,
            built_at: stockade_store::now_secs(),
        };
        let _ = std::fs::remove_dir_all(images.join(&key));
        manifest.install(&staged, &images.join(&key))?;
        Ok::<(), Error>(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staged);
    }
    result?;
    point_latest(images, &key)?;
    find(images, &key)
}

fn point_latest(images: &Path, key: &str) -> Result<()> {
    let tmp = images.join(".latest.new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(key, &tmp)
        .and_then(|()| std::fs::rename(&tmp, images.join("latest")))
        .map_err(|e| Error::backend("point images/latest", e))
}

/// Downloads the kernel package with the new root's own apt (so the host needs no Debian apt)
/// and unpacks it in the root's `/tmp/kernel`, which it returns (as a host path).
async fn fetch_kernel(root: &Path, package: &str) -> Result<PathBuf> {
    let script = format!(
        "set -e; cd /tmp; apt-get -q update >&2; apt-get -q download {package} >&2; \
         dep=$(dpkg-deb -f {package}_*.deb Depends | sed 's/[ ,].*//'); \
         case \"$dep\" in linux-image-*) ;; *) echo \"{package} depends on $dep, not a kernel\" >&2; exit 1;; esac; \
         apt-get -q download \"$dep\" >&2; rm -rf kernel; mkdir kernel; dpkg-deb -x \"$dep\"_*.deb kernel; rm -f ./*.deb"
    );
    let out = tokio::process::Command::new("chroot")
        .arg(root)
        .args(["/bin/sh", "-c", &script])
        .env_clear()
        .env("PATH", stockade_proto::DEFAULT_PATH)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::backend("chroot apt-get", e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(Error::backend(
            format!("fetch {package}"),
            tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
        ));
    }
    Ok(root.join("tmp/kernel"))
}

fn kernel_release(tree: &Path) -> Result<String> {
    let modules = tree.join("lib/modules");
    std::fs::read_dir(&modules)
        .map_err(|e| Error::backend(format!("read {}", modules.display()), e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| Error::backend("kernel package", "no lib/modules/<release> inside"))
}

/// Copies `wanted` and what they depend on from `tree` to `to`, writes `to/order` (dependencies
/// first) and returns that order. A module the kernel has built in is not in the tree, and is
/// skipped when `modules.builtin` lists it.
fn copy_modules(tree: &Path, wanted: &[String], to: &Path) -> Result<Vec<String>> {
    let mut files = BTreeMap::new();
    index_modules(tree, &mut files)?;
    let builtin = std::fs::read_to_string(tree.join("modules.builtin")).unwrap_or_default();
    let mut order = Vec::new();
    for name in wanted {
        let canonical = name.replace('-', "_");
        if !files.contains_key(&canonical) {
            if builtin.lines().any(|l| l.ends_with(&format!("/{name}.ko"))) {
                continue;
            }
            return Err(Error::invalid(
                "modules",
                format!("{name}: no such module in {}", tree.display()),
            ));
        }
        visit(&canonical, &files, &mut order, &mut Vec::new())?;
    }
    for name in &order {
        let from = &files[name];
        std::fs::copy(from, to.join(format!("{name}.ko")))
            .map_err(|e| Error::backend(format!("copy {}", from.display()), e))?;
    }
    std::fs::write(to.join("order"), order.join("\n") + "\n")
        .map_err(|e| Error::backend("write modules/order", e))?;
    Ok(order)
}

/// Every `.ko` under `dir`, by module name (`-` spelled `_`, as the kernel does).
fn index_modules(dir: &Path, files: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::backend(format!("read {}", dir.display()), e))? {
        let entry = entry.map_err(|e| Error::backend("read modules", e))?;
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            index_modules(&path, files)?;
        } else if let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ko"))
        {
            files.insert(stem.replace('-', "_"), path.clone());
        }
    }
    Ok(())
}

fn visit(
    name: &str,
    files: &BTreeMap<String, PathBuf>,
    order: &mut Vec<String>,
    stack: &mut Vec<String>,
) -> Result<()> {
    if order.iter().any(|n| n == name) {
        return Ok(());
    }
    if stack.iter().any(|n| n == name) {
        return Err(Error::backend(
            "modules",
            format!("dependency cycle through {name}"),
        ));
    }
    let path = files.get(name).ok_or_else(|| {
        Error::backend(
            "modules",
            format!("{name} is needed but not in the kernel package"),
        )
    })?;
    let bytes = std::fs::read(path).map_err(|e| Error::backend(format!("read {}", path.display()), e))?;
    stack.push(name.to_owned());
    for dep in module_depends(&bytes) {
        visit(&dep.replace('-', "_"), files, order, stack)?;
    }
    stack.pop();
    order.push(name.to_owned());
    Ok(())
}

/// The `depends=` entry of a module's `.modinfo` section (NUL-separated `key=value` strings).
pub fn module_depends(ko: &[u8]) -> Vec<String> {
    ko.split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|deps| {
            String::from_utf8_lossy(deps)
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Removes `security.capability` from every file of `root`'s program directories.
fn drop_file_capabilities(root: &Path) -> Result<()> {
    for dir in ["usr/bin", "usr/sbin", "usr/lib"] {
        let mut stack = vec![root.join(dir)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                match entry.file_type() {
                    Ok(t) if t.is_dir() => stack.push(entry.path()),
                    Ok(t) if t.is_file() => {
                        stockade_sys::remove_xattr(&entry.path(), "security.capability").map_err(|e| {
                            Error::backend(format!("drop file capabilities of {}", entry.path().display()), e)
                        })?;
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

async fn make_ext4(root: &Path, image: &Path, bytes: u64) -> Result<()> {
    let file =
        std::fs::File::create(image).map_err(|e| Error::backend(format!("create {}", image.display()), e))?;
    file.set_len(bytes)
        .map_err(|e| Error::backend("size the root image", e))?;
    drop(file);
    let out = tokio::process::Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-L",
            "stockade-root",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
            "-d",
        ])
        .arg(root)
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::backend("mkfs.ext4", e))?;
    if !out.status.success() {
        return Err(Error::backend(
            "mkfs.ext4",
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

/// The root directories a guest needs whatever the tree holds: where stage one mounts, `/etc`
/// (identity), `/tmp` and the default workdir.
const GUEST_DIRS: [(&str, u32); 9] = [
    (".stockade", 0o755),
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("etc", 0o755),
    ("root", 0o700),
    ("tmp", 0o1777),
    ("workspace", 0o755),
];

/// Whether `name` can name an imported image: a lowercase word that is neither `latest` nor
/// shaped like a recipe key (12 hex digits).
pub fn check_image_name(name: &str) -> Result<()> {
    let word = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    let key_shaped = name.len() == 12 && name.bytes().all(|b| b.is_ascii_hexdigit());
    if !word || key_shaped || name == "latest" {
        return Err(Error::invalid(
            "name",
            format!("{name:?}: expected up to 64 of a-z 0-9 . _ - (starting with a letter or digit), not \"latest\" and not 12 hex digits"),
        ));
    }
    Ok(())
}

/// `stockade image import TARBALL NAME --driver microvm`: a root filesystem tarball (`docker
/// export` of a container, say) as VM image `NAME`, booting the newest base image's kernel and
/// modules. The tree gets the directories a guest needs and loses file capabilities, as the
/// base image does; anything else (a shell for `sh -c`, iproute2 for `--network full`) is the
/// tree's. An existing name is refused: sandboxes' disks are overlays on its root.
pub async fn import(
    images: &Path,
    tarball: &Path,
    name: &str,
    scratch: &Path,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<VmImage> {
    check_image_name(name)?;
    if !tarball.is_file() {
        return Err(Error::invalid(
            "tarball",
            format!("{}: no such file", tarball.display()),
        ));
    }
    if images.join(name).exists() {
        return Err(Error::invalid(
            "name",
            format!(
                "VM image {name:?} exists in {} (sandboxes' disks may be overlays on it): choose another name",
                images.display()
            ),
        ));
    }
    let base = find(images, "latest")?;
    let work = scratch.join(format!("vm-import-{name}-{}", std::process::id()));
    let root = work.join("root");
    let staged = images.join(format!(".{name}.partial"));
    let result = async {
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::backend(format!("create {}", root.display()), e))?;
        progress(&format!("unpacking {}", tarball.display()));
        let out = tokio::process::Command::new("tar")
            .args(["-x", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-f"])
            .arg(tarball)
            .arg("-C")
            .arg(&root)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::backend("tar", e))?;
        if !out.status.success() {
            return Err(Error::invalid(
                "tarball",
                format!(
                    "{}: not a tarball tar can unpack: {}",
                    tarball.display(),
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim()
                ),
            ));
        }
        for (dir, mode) in GUEST_DIRS {
            let path = root.join(dir);
            if !path.is_dir() {
                std::fs::create_dir_all(&path)
                    .map_err(|e| Error::backend(format!("create {}", path.display()), e))?;
                std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .map_err(|e| Error::backend(format!("chmod {}", path.display()), e))?;
            }
        }
        drop_file_capabilities(&root)?;
        let _ = std::fs::remove_dir_all(&staged);
        std::fs::create_dir_all(staged.join("modules")).map_err(|e| Error::backend("create image dir", e))?;
        std::fs::copy(&base.kernel, staged.join("vmlinuz"))
            .map_err(|e| Error::backend("copy the kernel", e))?;
        for entry in std::fs::read_dir(&base.modules_dir)
            .map_err(|e| Error::backend("read the base image's modules", e))?
        {
            let entry = entry.map_err(|e| Error::backend("read the base image's modules", e))?;
            std::fs::copy(entry.path(), staged.join("modules").join(entry.file_name()))
                .map_err(|e| Error::backend("copy a module", e))?;
        }
        let bytes = VmRecipe::default().disk_bytes;
        progress(&format!("writing the root filesystem ({bytes} bytes, sparse)"));
        make_ext4(&root, &staged.join("rootfs.ext4"), bytes).await?;
        let base_manifest = Manifest::read(&base.dir)
            .ok_or_else(|| Error::backend("the base image", "unreadable recipe.json"))?;
        let manifest = Manifest {
            key: name.to_owned(),
            kernel_release: base.kernel_release.clone(),
            modules: base_manifest.modules,
            built_at: stockade_store::now_secs(),
        };
        manifest.install(&staged, &images.join(name))?;
        Ok::<(), Error>(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&work);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staged);
    }
    result?;
    progress(&format!("VM image {name}: kernel {}", base.kernel_release));
    find(images, name)
}

/// The initramfs for `agent` over `image`'s modules: built once per agent binary (its size and
/// modification time name it) and kept beside the image.
pub fn initramfs_for(image: &VmImage, agent: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(agent).map_err(|e| Error::backend(format!("agent {}", agent.display()), e))?;
    let stamp = format!(
        "{}:{}:{}:{}",
        agent.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let hash: String = Sha256::digest(stamp.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = image.dir.join(format!("initrd-{hash}.cpio"));
    if path.is_file() {
        return Ok(path);
    }
    let mut entries = vec![
        Entry::Dir {
            path: "dev".into(),
            mode: 0o755,
        },
        Entry::CharDevice {
            path: "dev/console".into(),
            mode: 0o600,
            major: 5,
            minor: 1,
        },
        Entry::Dir {
            path: "proc".into(),
            mode: 0o555,
        },
        Entry::Dir {
            path: "sys".into(),
            mode: 0o555,
        },
        Entry::Dir {
            path: "newroot".into(),
            mode: 0o755,
        },
        Entry::Dir {
            path: "modules".into(),
            mode: 0o755,
        },
        Entry::File {
            path: "init".into(),
            mode: 0o755,
            data: agent_without_debug_info(
                agent,
                &image
                    .dir
                    .join(format!(".agent-{hash}-{}-{}", std::process::id(), next_scratch())),
            )?,
        },
    ];
    let order = std::fs::read_to_string(image.modules_dir.join("order"))
        .map_err(|e| Error::backend("read the image's modules/order", e))?;
    for name in order.lines().filter(|l| !l.is_empty()) {
        let file = image.modules_dir.join(format!("{name}.ko"));
        entries.push(Entry::File {
            path: format!("modules/{name}.ko"),
            mode: 0o644,
            data: std::fs::read(&file).map_err(|e| Error::backend(format!("read {}", file.display()), e))?,
        });
    }
    entries.push(Entry::File {
        path: "modules/order".into(),
        mode: 0o644,
        data: order.into_bytes(),
    });
    let mut out = Vec::new();
    initramfs::write(&mut out, &entries).map_err(|e| Error::backend("write initramfs", e))?;
    stockade_store::write_atomic(&path, &out, 0o644)
        .map_err(|e| Error::backend(format!("write {}", path.display()), e))?;
    Ok(path)
}

/// A number no other call in this process gets (threads may make one initramfs at once).
fn next_scratch() -> u64 {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The agent's bytes without debug info (a debug build is five times the size, and the guest
/// holds the initramfs in memory), when `strip` is installed; else as they are.
fn agent_without_debug_info(agent: &Path, scratch: &Path) -> Result<Vec<u8>> {
    let stripped = stockade_rootfs::which("strip").is_some()
        && std::process::Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(scratch)
            .arg(agent)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let from = if stripped { scratch } else { agent };
    let bytes = std::fs::read(from).map_err(|e| Error::backend(format!("read {}", from.display()), e));
    let _ = std::fs::remove_file(scratch);
    bytes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn depends_are_read_from_modinfo() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=virtio,virtio_ring\0intree=Y\0";
        assert_eq!(module_depends(ko), ["virtio", "virtio_ring"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert!(module_depends(b"nothing here").is_empty());
    }

    #[test]
    fn modules_come_in_dependency_order() {
        let tree = tempfile::tempdir().unwrap();
        let dir = tree.path().join("kernel/drivers");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("virtio_ring.ko"), b"\0depends=\0").unwrap();
        std::fs::write(dir.join("virtio.ko"), b"\0depends=virtio_ring\0").unwrap();
        std::fs::write(dir.join("virtio_blk.ko"), b"\0depends=virtio,virtio_ring\0").unwrap();
        std::fs::write(dir.join("virtio-rng.ko"), b"\0depends=virtio\0").unwrap();
        std::fs::write(tree.path().join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        let to = tempfile::tempdir().unwrap();
        let order = copy_modules(
            tree.path(),
            &["virtio_blk".into(), "virtio-rng".into(), "ext4".into()],
            to.path(),
        )
        .unwrap();
        assert_eq!(order, ["virtio_ring", "virtio", "virtio_blk", "virtio_rng"]);
        assert_eq!(
            std::fs::read_to_string(to.path().join("order")).unwrap(),
            "virtio_ring\nvirtio\nvirtio_blk\nvirtio_rng\n"
        );
        let missing = copy_modules(tree.path(), &["nope".into()], to.path()).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }

    #[test]
    fn recipe_key_follows_content() {
        let a = VmRecipe::default();
        let mut b = a.clone();
        assert_eq!(a.key(), b.key());
        b.modules.push("overlay".into());
        assert_ne!(a.key(), b.key());
    }
}
