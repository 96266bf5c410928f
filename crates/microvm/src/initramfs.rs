//! The guest's initramfs: an uncompressed cpio archive in the kernel's `newc` format holding the
//! agent as `/init`, the modules stage one loads and `/dev/console`. Written by hand (the format
//! is a 110-byte ASCII header per entry), so building one needs no `cpio` on the host.

use std::io::Write;

/// One entry of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    CharDevice {
        path: String,
        mode: u32,
        major: u32,
        minor: u32,
    },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// Writes `entries` and the trailer to `out`.
pub fn write(out: &mut impl Write, entries: &[Entry]) -> std::io::Result<()> {
    let mut offset = 0usize;
    for (ino, entry) in entries.iter().enumerate() {
        let (path, mode, data, rdev): (&str, u32, &[u8], (u32, u32)) = match entry {
            Entry::Dir { path, mode } => (path, S_IFDIR | mode, &[], (0, 0)),
            Entry::File { path, mode, data } => (path, S_IFREG | mode, data, (0, 0)),
            Entry::CharDevice {
                path,
                mode,
                major,
                minor,
            } => (path, S_IFCHR | mode, &[], (*major, *minor)),
        };
        let nlink = if matches!(entry, Entry::Dir { .. }) { 2 } else { 1 };
        offset += header(out, ino as u32 + 1, mode, nlink, data.len(), rdev, path, offset)?;
        out.write_all(data)?;
        offset += data.len();
        offset += pad(out, offset)?;
    }
    header(out, 0, 0, 1, 0, (0, 0), "TRAILER!!!", offset)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn header(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
    offset: usize,
) -> std::io::Result<usize> {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime: reproducible archives
        size as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    let mut head = String::from("070701");
    for f in fields {
        head.push_str(&format!("{f:08x}"));
    }
    out.write_all(head.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    let written = head.len() + name.len() + 1;
    Ok(written + pad(out, offset + written)?)
}

/// Pads to the next multiple of four; returns the bytes written.
fn pad(out: &mut impl Write, offset: usize) -> std::io::Result<usize> {
    let n = (4 - offset % 4) % 4;
    out.write_all(&[0; 3][..n])?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entries_are_aligned_and_end_with_the_trailer() {
        let mut out = Vec::new();
        write(
            &mut out,
            &[
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
                Entry::File {
                    path: "init".into(),
                    mode: 0o755,
                    data: b"hello".to_vec(),
                },
            ],
        )
        .unwrap();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&out);
        // Second entry: a character device 5:1 (fields 10 and 11 of the header).
        let console = text.find("dev/console").unwrap();
        let head = &text[console - 110..console];
        assert_eq!(&head[14..22], "00002180"); // S_IFCHR (0o20000) | 0o600
        assert_eq!(&head[78..86], "00000005");
        assert_eq!(&head[86..94], "00000001");
        let init = text.find("init\0").unwrap();
        assert_eq!(&text[init - 110 + 54..init - 110 + 62], "00000005"); // file size
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!"));
        // Every header starts on a four-byte boundary.
        for (i, _) in text.match_indices("070701") {
            assert_eq!(i % 4, 0);
        }
    }
}
