//! Which host uids a sandbox's users map to. As root, sandbox uid 0..65536 maps to an unprivileged
//! host range picked per sandbox, never to host root. As an ordinary user, sandbox root is that
//! user (the only id an unprivileged process may map).

use serde::{Deserialize, Serialize};
use stockade_core::SandboxId;

/// First host uid used for sandboxes when running as root.
pub const HOST_UID_BASE: u32 = 1_100_000_000;
/// Ids per sandbox.
pub const RANGE: u32 = 65536;
/// Number of distinct ranges (keeps every range below 2^32 - 1).
pub const SLOTS: u32 = 32768;

/// A user-namespace mapping: sandbox `0..count` → host `host_uid..`, same for gids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub host_uid: u32,
    pub host_gid: u32,
    pub count: u32,
}

impl IdMap {
    /// The mapping for a sandbox created by a process with effective uid/gid `euid`/`egid`.
    pub fn for_sandbox(id: &SandboxId, euid: u32, egid: u32) -> Self {
        if euid == 0 {
            let slot = u32::from_str_radix(&id.as_str()[..8], 16).unwrap_or(0) % SLOTS;
            let base = HOST_UID_BASE + slot * RANGE;
            IdMap {
                host_uid: base,
                host_gid: base,
                count: RANGE,
            }
        } else {
            IdMap {
                host_uid: euid,
                host_gid: egid,
                count: 1,
            }
        }
    }

    /// `/proc/PID/uid_map` contents.
    pub fn uid_map(&self) -> String {
        format!("0 {} {}\n", self.host_uid, self.count)
    }

    /// `/proc/PID/gid_map` contents.
    pub fn gid_map(&self) -> String {
        format!("0 {} {}\n", self.host_gid, self.count)
    }

    /// An unprivileged single-id map must deny setgroups first.
    pub fn needs_setgroups_deny(&self) -> bool {
        self.count == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_never_maps_to_host_root() {
        for hex in ["000000000000", "ffffffffffff", "7fff0000aaaa"] {
            let m = IdMap::for_sandbox(&SandboxId::parse(hex).unwrap(), 0, 0);
            assert!(m.host_uid >= HOST_UID_BASE);
            assert!(u64::from(m.host_uid) + u64::from(m.count) < u64::from(u32::MAX));
            assert_eq!(m.uid_map(), format!("0 {} 65536\n", m.host_uid));
        }
    }

    #[test]
    fn users_map_to_themselves() {
        let m = IdMap::for_sandbox(&SandboxId::parse("0123456789ab").unwrap(), 1000, 1000);
        assert_eq!(m.uid_map(), "0 1000 1\n");
        assert!(m.needs_setgroups_deny());
    }
}
