//! The local terminal: raw mode for `-t`, and its size.

use std::io::IsTerminal;

use nix::sys::termios::{self, SetArg, Termios};
use stockade_core::TtySize;

/// Puts stdin in raw mode until dropped.
pub struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    /// Raw mode when stdin is a terminal; a no-op guard otherwise.
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawMode { saved: None };
        }
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        if termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
            return RawMode { saved: None };
        }
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, saved);
        }
    }
}

/// The size of the terminal on stdout (or stdin), else 24×80.
pub fn size() -> TtySize {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        if let Some(size) = fd_size(fd) {
            return size;
        }
    }
    TtySize::default()
}

fn fd_size(fd: i32) -> Option<TtySize> {
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(match fd {
            libc::STDIN_FILENO => std::process::Stdio::inherit(),
            _ => std::fs::File::open("/dev/tty").ok()?.into(),
        })
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut it = text.split_whitespace().map(|n| n.parse::<u16>().ok());
    match (it.next().flatten(), it.next().flatten()) {
        (Some(rows), Some(cols)) if rows > 0 && cols > 0 => Some(TtySize { rows, cols }),
        _ => None,
    }
}
