//! `--network full` as root: one host interface per sandbox (`st<id>`: the native driver's veth,
//! whose peer is `eth0` in the sandbox's namespace, or the microvm driver's tap, whose guest
//! side is the VM's NIC) in 10.200.0.0/16, one /30 each, with NAT out of the host. Host rules, set once and shared by every
//! sandbox: sandboxes cannot reach each other, the host itself (its services on any address), or
//! link-local metadata addresses (refused at once, not left to time out); replies come back. `--network none` is loopback only.
//!
//! The plan (names, addresses, commands) is computed as plain values; [`apply`] runs them with
//! `ip`, `nsenter` and `iptables` from iproute2/util-linux/iptables.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

/// The sandboxes' address block.
pub const SUBNET: &str = "10.200.0.0/16";
/// /30 blocks in the subnet.
const SLOTS: u32 = 16384;

/// One sandbox's link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub host_if: String,
    pub host_ip: Ipv4Addr,
    pub sandbox_ip: Ipv4Addr,
}

/// Host-side interface name for a sandbox: `st` + its 12-character id (14 < IFNAMSIZ).
pub fn host_if(id: &str) -> String {
    format!("st{id}")
}

/// Picks the first free /30, starting from a slot derived from the id.
pub fn allocate(id: &str, taken: &BTreeSet<Ipv4Addr>) -> Option<Link> {
    let start = u32::from_str_radix(id.get(..8)?, 16).ok()? % SLOTS;
    (0..SLOTS).map(|i| (start + i) % SLOTS).find_map(|slot| {
        let base = u32::from(Ipv4Addr::new(10, 200, 0, 0)) + slot * 4;
        let (host_ip, sandbox_ip) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        (!taken.contains(&host_ip)).then(|| Link {
            host_if: host_if(id),
            host_ip,
            sandbox_ip,
        })
    })
}

/// Addresses already used by sandbox links on this host (`ip -o -4 addr show`).
pub fn taken_addresses(ip_output: &str) -> BTreeSet<Ipv4Addr> {
    ip_output
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|name| name.starts_with("st"))
        })
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

/// The commands that wire `link` to the sandbox whose pid 1 is `pid`.
pub fn link_commands(link: &Link, pid: i32) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let pid = pid.to_string();
    let host_cidr = format!("{}/30", link.host_ip);
    let sandbox_cidr = format!("{}/30", link.sandbox_ip);
    let gw = link.host_ip.to_string();
    vec![
        s(&[
            "ip",
            "link",
            "add",
            &link.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pid,
        ]),
        s(&["ip", "addr", "add", &host_cidr, "dev", &link.host_if]),
        s(&["ip", "link", "set", &link.host_if, "up"]),
        s(&[
            "nsenter",
            "--target",
            &pid,
            "--net",
            "ip",
            "addr",
            "add",
            &sandbox_cidr,
            "dev",
            "eth0",
        ]),
        s(&[
            "nsenter", "--target", &pid, "--net", "ip", "link", "set", "eth0", "up",
        ]),
        s(&[
            "nsenter", "--target", &pid, "--net", "ip", "route", "add", "default", "via", &gw,
        ]),
    ]
}

/// Host rules: (table, chain, rule). Each is added when `iptables -C` does not find it.
pub fn host_rules() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        (
            "filter",
            "STOCKADE-FORWARD",
            vec!["-i", "st+", "-o", "st+", "-j", "REJECT"],
        ),
        (
            "filter",
            "STOCKADE-FORWARD",
            vec!["-i", "st+", "-d", "169.254.0.0/16", "-j", "REJECT"],
        ),
        ("filter", "STOCKADE-FORWARD", vec!["-i", "st+", "-j", "ACCEPT"]),
        (
            "filter",
            "STOCKADE-FORWARD",
            vec![
                "-o",
                "st+",
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ],
        ),
        ("filter", "STOCKADE-FORWARD", vec!["-o", "st+", "-j", "DROP"]),
        ("filter", "STOCKADE-INPUT", vec!["-i", "st+", "-j", "REJECT"]),
        (
            "nat",
            "POSTROUTING",
            vec!["-s", SUBNET, "!", "-o", "st+", "-j", "MASQUERADE"],
        ),
    ]
}

fn run(argv: &[String]) -> std::io::Result<()> {
    let out = Command::new(&argv[0]).args(&argv[1..]).output().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{}: {e} (install iproute2, util-linux and iptables)", argv[0]),
        )
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "`{}` failed: {}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

fn iptables(args: &[&str]) -> std::io::Result<()> {
    let mut argv = vec!["iptables".to_owned(), "-w".to_owned()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    run(&argv)
}

/// Sets the shared host rules up (idempotent) and turns on forwarding.
pub fn ensure_host_rules() -> std::io::Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    for (chain, hook) in [("STOCKADE-FORWARD", "FORWARD"), ("STOCKADE-INPUT", "INPUT")] {
        let _ = iptables(&["-N", chain]);
        if iptables(&["-C", hook, "-j", chain]).is_err() {
            iptables(&["-I", hook, "1", "-j", chain])?;
        }
    }
    for (table, chain, rule) in host_rules() {
        let mut check = vec!["-t", table, "-C", chain];
        check.extend(&rule);
        if iptables(&check).is_err() {
            let mut add = vec!["-t", table, "-A", chain];
            add.extend(&rule);
            iptables(&add)?;
        }
    }
    Ok(())
}

/// Wires a new sandbox (pid 1 = `pid`) to the outside. Serialized by `lock` so two sandboxes never
/// take the same addresses.
pub fn apply(id: &str, pid: i32, lock: &std::path::Path) -> std::io::Result<Link> {
    reserve(id, lock, |link| {
        for cmd in link_commands(link, pid) {
            run(&cmd)?;
        }
        Ok(())
    })
    .map(|(link, ())| link)
}

/// Under `lock` (one file per home: addresses are read back from the host's interfaces, so two
/// allocations must not interleave), sets up the shared host rules, picks `id`'s /30 and calls
/// `wire`, which must create `link.host_if` with `link.host_ip` before it returns.
pub fn reserve<T>(
    id: &str,
    lock: &std::path::Path,
    wire: impl FnOnce(&Link) -> std::io::Result<T>,
) -> std::io::Result<(Link, T)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)?;
    let _guard = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e)?;
    ensure_host_rules()?;
    let out = Command::new("ip").args(["-o", "-4", "addr", "show"]).output()?;
    let link = allocate(id, &taken_addresses(&String::from_utf8_lossy(&out.stdout)))
        .ok_or_else(|| std::io::Error::other(format!("no free address left in {SUBNET}")))?;
    let wired = wire(&link)?;
    Ok((link, wired))
}

/// Gives an existing host interface (a VM's tap) `link`'s host address and brings it up.
pub fn address_host_side(link: &Link) -> std::io::Result<()> {
    let host_cidr = format!("{}/30", link.host_ip);
    run(&["ip", "addr", "add", &host_cidr, "dev", &link.host_if].map(str::to_owned))?;
    run(&["ip", "link", "set", &link.host_if, "up"].map(str::to_owned))
}

/// The nameservers a sandbox behind the host's NAT should use: the host's own, or, when those
/// are a loopback stub (systemd-resolved's 127.0.0.53, which a sandbox cannot reach), the stub's
/// upstream servers. Empty when there is nothing reachable to give.
pub fn sandbox_nameservers() -> Vec<String> {
    let nameservers = |conf: &str| -> Vec<String> {
        conf.lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if !resolver_is_loopback_only(&host) {
        return nameservers(&host);
    }
    let upstream = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").unwrap_or_default();
    if resolver_is_loopback_only(&upstream) {
        return Vec::new();
    }
    nameservers(&upstream)
}

/// True when every nameserver in a resolv.conf is a loopback address (a local stub resolver the
/// sandbox cannot reach).
pub fn resolver_is_loopback_only(resolv_conf: &str) -> bool {
    let servers: Vec<&str> = resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(str::trim)
        .collect();
    !servers.is_empty() && servers.iter().all(|s| s.starts_with("127.") || *s == "::1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_skips_taken_blocks() {
        let first = allocate("000000000000", &BTreeSet::new()).unwrap();
        assert_eq!(
            (first.host_ip, first.sandbox_ip),
            (Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(10, 200, 0, 2))
        );
        assert_eq!(first.host_if, "st000000000000");
        let taken: BTreeSet<_> = [first.host_ip].into();
        let second = allocate("000000000000", &taken).unwrap();
        assert_eq!(second.host_ip, Ipv4Addr::new(10, 200, 0, 5));
    }

    #[test]
    fn parses_ip_output() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\n7: stabc    inet 10.200.0.1/30 scope global stabc\n3: eth0    inet 10.200.0.5/24 scope global eth0\n";
        assert_eq!(taken_addresses(out), [Ipv4Addr::new(10, 200, 0, 1)].into());
    }

    #[test]
    fn commands_and_rules() {
        let link = allocate("0123456789ab", &BTreeSet::new()).unwrap();
        let cmds = link_commands(&link, 42);
        assert_eq!(cmds[0][..4], ["ip", "link", "add", "st0123456789ab"]);
        assert!(cmds
            .iter()
            .any(|c| c.contains(&"default".to_owned()) && c.contains(&"42".to_owned())));
        let rules = host_rules();
        assert!(rules
            .iter()
            .any(|(_, c, r)| *c == "STOCKADE-INPUT" && r.ends_with(&["REJECT"])));
        assert!(rules.iter().any(|(_, _, r)| r.contains(&"169.254.0.0/16")));
    }

    #[test]
    fn loopback_resolvers() {
        assert!(resolver_is_loopback_only("nameserver 127.0.0.53\n"));
        assert!(!resolver_is_loopback_only("nameserver 10.255.255.53\n"));
        assert!(!resolver_is_loopback_only("# none\n"));
    }
}

/// `--network full` without root: slirp4netns (Debian's `slirp4netns`) gives the sandbox a `tap0`
/// with 10.0.2.100/24, NAT through the user's own sockets, and a DNS forwarder at 10.0.2.3.
/// Host loopback is not reachable (`--disable-host-loopback`). It lives until dropped: closing
/// the exit pipe ends it.
#[derive(Debug)]
pub struct UserModeNetwork {
    child: std::process::Child,
    exit: Option<std::os::fd::OwnedFd>,
}

/// The nameserver the sandbox uses behind slirp4netns.
pub const SLIRP_DNS: &str = "10.0.2.3";

/// Starts slirp4netns for the network namespace of `pid` and waits until `tap0` is configured.
pub fn user_mode(pid: i32) -> std::io::Result<UserModeNetwork> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let (exit_r, exit_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (exit_fd, ready_fd) = (exit_r.as_raw_fd(), ready_w.as_raw_fd());
    let mut cmd = Command::new("slirp4netns");
    cmd.args(["--configure", "--mtu=65520", "--disable-host-loopback"])
        .arg(format!("--exit-fd={exit_fd}"))
        .arg(format!("--ready-fd={ready_fd}"))
        .arg(pid.to_string())
        .arg("tap0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    // The two pipe ends must survive exec in slirp4netns (they are close-on-exec here).
    let keep = [exit_fd, ready_fd];
    // (std's pre_exec would be unsafe) Clear close-on-exec right before spawning and set it back
    // after; nothing else can spawn in between, the supervisor being single-threaded here.
    for fd in keep {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))?;
    }
    let spawned = cmd.spawn();
    for fd in keep {
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    }
    let child = spawned.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("slirp4netns: {e} (install Debian's slirp4netns for --network full without root)"),
        )
    })?;
    drop((exit_r, ready_w));
    let mut ready = std::fs::File::from(ready_r);
    let mut byte = [0u8; 1];
    let mut net = UserModeNetwork {
        child,
        exit: Some(exit_w),
    };
    match ready.read(&mut byte) {
        Ok(1) => Ok(net),
        _ => {
            net.stop();
            Err(std::io::Error::other(
                "slirp4netns exited before configuring tap0",
            ))
        }
    }
}

impl UserModeNetwork {
    /// Ends slirp4netns and reaps it.
    pub fn stop(&mut self) {
        self.exit.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for UserModeNetwork {
    fn drop(&mut self) {
        self.stop();
    }
}
