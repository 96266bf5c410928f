//! Resolving `user` strings (`root`, `1000`, `1000:1000`, `name`) against the sandbox's own
//! `/etc/passwd` and `/etc/group`.

use stockade_core::{Error, Result};

/// Who an exec runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Resolves `spec` using the given passwd and group file contents.
pub fn resolve(spec: Option<&str>, passwd: &str, group: &str) -> Result<Identity> {
    let spec = spec.unwrap_or("root");
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| {
            f.len() >= 7 && (f[0] == user_part || (user_part.parse::<u32>().is_ok() && f[2] == user_part))
        });
    let (uid, mut gid, home, name) = match (&entry, user_part.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().map_err(|_| bad(spec, "bad uid in /etc/passwd"))?,
            f[3].parse().map_err(|_| bad(spec, "bad gid in /etc/passwd"))?,
            f[5].to_owned(),
            Some(f[0].to_owned()),
        ),
        (None, Ok(uid)) => (uid, uid, if uid == 0 { "/root".into() } else { "/".into() }, None),
        (None, Err(_)) if user_part == "root" => (0, 0, "/root".into(), Some("root".into())),
        (None, Err(_)) => return Err(bad(spec, "no such user in the sandbox's /etc/passwd")),
    };
    if let Some(g) = group_part {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| bad(spec, "no such group in the sandbox's /etc/group"))?,
        };
    }
    let mut groups = vec![gid];
    if let Some(name) = name {
        for f in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        groups,
        home,
    })
}

fn bad(spec: &str, why: &str) -> Error {
    Error::invalid("user", format!("{spec:?}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nbob:x:1000:1000::/home/bob:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nbob:x:1000:\ndev:x:2000:bob\n";

    #[test]
    fn by_name_number_and_pair() {
        let bob = resolve(Some("bob"), PASSWD, GROUP).unwrap();
        assert_eq!((bob.uid, bob.gid, bob.home.as_str()), (1000, 1000, "/home/bob"));
        assert_eq!(bob.groups, vec![1000, 2000]);
        assert_eq!(resolve(Some("1000"), PASSWD, GROUP).unwrap().home, "/home/bob");
        let x = resolve(Some("1234:dev"), PASSWD, GROUP).unwrap();
        assert_eq!((x.uid, x.gid), (1234, 2000));
        assert_eq!(resolve(None, "", "").unwrap().uid, 0);
        assert!(resolve(Some("nobody-here"), PASSWD, GROUP)
            .unwrap_err()
            .to_string()
            .contains("invalid user"));
    }
}
