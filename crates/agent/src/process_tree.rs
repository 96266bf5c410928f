//! Process trees read from `/proc`: every exec's processes stay below its reaper (a child
//! subreaper), so "the exec's tree" is exactly the reaper's descendants, `setsid` or not.

use std::collections::HashMap;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One `/proc/PID/stat` line, the fields we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub state: u8,
    pub ppid: i32,
    pub utime: u64,
    pub stime: u64,
    pub threads: u64,
    pub rss_pages: u64,
}

/// Parses a `/proc/PID/stat` line. The command name may hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let pid = line.split(' ').next()?.parse().ok()?;
    let rest = &line[line.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // rest starts at field 3 (state); field n is f[n - 3].
    Some(ProcStat {
        pid,
        state: *f.first()?.as_bytes().first()?,
        ppid: f.get(1)?.parse().ok()?,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
        threads: f.get(17)?.parse().ok()?,
        rss_pages: f.get(21)?.parse().ok()?,
    })
}

/// Every process visible in `/proc`.
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let name = e.file_name();
        let name = name.to_str()?;
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        parse_stat(&std::fs::read_to_string(format!("/proc/{name}/stat")).ok()?)
    })
    .collect()
}

/// Descendants of `root` (not `root` itself) that are still alive (not zombies).
pub fn live_descendants(root: i32, procs: &[ProcStat]) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<&ProcStat>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            stack.push(child.pid);
            if child.state != b'Z' {
                out.push(child.pid);
            }
        }
    }
    out
}

/// SIGKILLs every live descendant of `root` until none is left. New forks race the walk, but a
/// killed process cannot fork, so each pass shrinks what is left; `reap` runs between passes so
/// killed children of the caller do not linger as zombies.
pub fn kill_descendants(root: i32, mut reap: impl FnMut()) {
    for _ in 0..10_000 {
        let victims = live_descendants(root, &all_processes());
        if victims.is_empty() {
            return;
        }
        for pid in victims {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        reap();
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "42 (we ird) name)) S 7 42 42 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 3 0 100 1000 250 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            (s.pid, s.state, s.ppid, s.utime, s.stime, s.threads, s.rss_pages),
            (42, b'S', 7, 5, 6, 3, 250)
        );
    }

    #[test]
    fn descendants_skip_zombies_and_strangers() {
        let p = |pid, ppid, state| ProcStat {
            pid,
            state,
            ppid,
            utime: 0,
            stime: 0,
            threads: 1,
            rss_pages: 0,
        };
        let procs = [
            p(1, 0, b'S'),
            p(10, 1, b'S'),
            p(11, 10, b'S'),
            p(12, 11, b'Z'),
            p(13, 12, b'R'),
            p(20, 1, b'S'),
        ];
        let mut d = live_descendants(10, &procs);
        d.sort();
        assert_eq!(d, vec![11, 13]);
    }
}
