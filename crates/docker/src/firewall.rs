//! Host firewall rules for `--network full`: a sandbox's bridge reaches the internet through the
//! engine's NAT, but never the host itself (services bound to the host's addresses or the
//! bridge gateway) and never link-local metadata services. Every Stockade bridge is named
//! `sd<id>`, so two wildcard rules cover them all and nothing is left per sandbox.

use std::process::Command;

use stockade_core::{Error, Result};

/// The bridge interface of sandbox `id`'s network (at most 15 characters).
pub fn bridge_name(id: &str) -> String {
    format!("sd{id}")
}

/// (chain, hook, rule) in the filter table.
pub fn rules() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        (
            "STOCKADE-DOCKER-INPUT",
            "INPUT",
            vec!["-i", "sd+", "-j", "REJECT"],
        ),
        (
            "STOCKADE-DOCKER-FORWARD",
            "FORWARD",
            vec!["-i", "sd+", "-d", "169.254.0.0/16", "-j", "REJECT"],
        ),
    ]
}

fn iptables(args: &[&str]) -> std::io::Result<bool> {
    let out = Command::new("iptables").arg("-w").args(args).output()?;
    Ok(out.status.success())
}

/// Adds the chains, their hooks (first in INPUT and FORWARD) and their rules when missing.
pub fn ensure() -> Result<()> {
    let fail = |e: std::io::Error| {
        Error::unsupported(
            "docker",
            "--network full",
            format!("iptables is needed to keep sandboxes off the host's own services: {e}"),
        )
    };
    for (chain, hook, rule) in rules() {
        let _ = iptables(&["-N", chain]).map_err(fail)?;
        if !iptables(&["-C", hook, "-j", chain]).map_err(fail)?
            && !iptables(&["-I", hook, "1", "-j", chain]).map_err(fail)?
        {
            return Err(fail(std::io::Error::other(format!(
                "could not hook {chain} into {hook}"
            ))));
        }
        let mut check = vec!["-C", chain];
        check.extend(&rule);
        if !iptables(&check).map_err(fail)? {
            let mut add = vec!["-A", chain];
            add.extend(&rule);
            if !iptables(&add).map_err(fail)? {
                return Err(fail(std::io::Error::other(format!(
                    "could not add {rule:?} to {chain}"
                ))));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_fit_and_match_the_wildcard() {
        let name = bridge_name("0123456789ab");
        assert!(name.len() <= 15);
        assert!(rules().iter().all(|(_, _, r)| r.contains(&"sd+")));
        assert!(name.starts_with("sd"));
    }
}
