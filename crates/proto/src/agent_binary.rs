//! Finding a statically linked `stockade-agent` for drivers that run it in a root filesystem of
//! their own (containers, VM guests): a dynamically linked one would need that filesystem to
//! carry a matching C library, and a VM's initramfs carries none.

use std::path::{Path, PathBuf};

use stockade_core::{Error, Result};

/// The build target a static agent is built for (`cargo build --target <this>`).
pub fn host_target() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// True when `path` is an ELF file with no program interpreter (static or static-pie).
pub fn is_static_elf(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let mut header = [0u8; 64];
    if file.read_exact(&mut header).is_err() {
        return Ok(false);
    }
    // 64-bit little-endian ELF only (what this driver runs on).
    if header[..6] != [0x7f, b'E', b'L', b'F', 2, 1] {
        return Ok(false);
    }
    let phoff = u64::from_le_bytes([
        header[0x20],
        header[0x21],
        header[0x22],
        header[0x23],
        header[0x24],
        header[0x25],
        header[0x26],
        header[0x27],
    ]);
    let phentsize = usize::from(u16::from_le_bytes([header[0x36], header[0x37]]));
    let phnum = usize::from(u16::from_le_bytes([header[0x38], header[0x39]]));
    if phentsize < 4 {
        return Ok(false);
    }
    let mut table = vec![0u8; phentsize * phnum];
    file.seek(SeekFrom::Start(phoff))?;
    if file.read_exact(&mut table).is_err() {
        return Ok(false);
    }
    const PT_INTERP: u32 = 3;
    Ok(table
        .chunks_exact(phentsize)
        .all(|entry| u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]) != PT_INTERP))
}

/// Finds the agent for `driver`: `$STOCKADE_CONTAINER_AGENT`, then `$STOCKADE_AGENT`, beside
/// the running executable, the static cargo build next to it (`target/<triple>/{debug,release}`),
/// and `PATH`; the first static one wins.
pub fn find(config: &stockade_core::DriverConfig, driver: &'static str) -> Result<PathBuf> {
    if let Some(p) = config.var("STOCKADE_CONTAINER_AGENT") {
        let p = PathBuf::from(p);
        return match is_static_elf(&p) {
            Ok(true) => Ok(p),
            Ok(false) => Err(not_static(&p, driver)),
            Err(e) => Err(Error::invalid(
                "STOCKADE_CONTAINER_AGENT",
                format!("{}: {e}", p.display()),
            )),
        };
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = &config.agent {
        candidates.push(p.clone());
    }
    if let Some(exe_dir) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
        candidates.push(exe_dir.join("stockade-agent"));
        // target/debug/stockade or target/debug/deps/test-binary → target/<triple>/<profile>.
        for up in [exe_dir.parent(), exe_dir.parent().and_then(Path::parent)]
            .into_iter()
            .flatten()
        {
            for profile in ["debug", "release"] {
                candidates.push(up.join(host_target()).join(profile).join("stockade-agent"));
            }
        }
    }
    for dir in config.path_dirs() {
        candidates.push(dir.join("stockade-agent"));
    }
    let mut dynamic = None;
    for c in candidates {
        match is_static_elf(&c) {
            Ok(true) => return Ok(c),
            Ok(false) => dynamic = dynamic.or(Some(c)),
            Err(_) => {}
        }
    }
    match dynamic {
        Some(p) => Err(not_static(&p, driver)),
        None => Err(Error::unsupported(
            driver,
            "sandboxes",
            "no stockade-agent binary was found beside stockade or in PATH (set STOCKADE_CONTAINER_AGENT)",
        )),
    }
}

fn not_static(p: &Path, driver: &'static str) -> Error {
    let target = host_target();
    Error::unsupported(
        driver,
        "sandboxes",
        format!(
            "{} is dynamically linked; {driver} sandboxes need a static agent: \
             CARGO_TARGET_{}_RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target {target} -p stockade-agent \
             (scripts/setup does this)",
            p.display(),
            target.to_uppercase().replace('-', "_")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_is_dynamic_unless_built_static() {
        // Whatever this test binary is, the answer must be a clean Ok, and /bin/sh on Debian is dynamic.
        assert!(is_static_elf(&std::env::current_exe().unwrap()).is_ok());
        assert!(!is_static_elf(Path::new("/bin/sh")).unwrap());
        assert!(!is_static_elf(Path::new("/etc/passwd")).unwrap());
    }
}
