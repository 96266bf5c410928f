//! A [`SandboxSpec`] in E2B's terms, as a plain value: the create request, or the field E2B's
//! API cannot honour, refused by name. Nothing is dropped silently.

use std::collections::BTreeMap;
use std::time::Duration;

use stockade_core::{Error, NetworkMode, Result, SandboxId, SandboxSpec};

use crate::control::CreateSandbox;

/// The template a spec without an image gets.
pub const DEFAULT_TEMPLATE: &str = "base";
/// The timeout a spec without a ttl gets: one hour, the longest E2B's hobby tier allows (a
/// longer `--ttl` needs a plan that allows it, up to E2B's 24 hours).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// The metadata key that carries the sandbox's name (E2B has none).
pub const NAME_KEY: &str = "stockade.name";
/// The metadata key that carries the Stockade id, tying E2B's sandbox to its record.
pub const ID_KEY: &str = "stockade.id";

fn refuse(field: &str, reason: &str) -> Error {
    Error::unsupported(crate::NAME, field, reason)
}

/// Checks a user as envd takes it: a name of the template's (Basic auth carries a name; envd
/// looks it up in the sandbox's passwd).
pub fn check_user(user: &str) -> Result<()> {
    let numeric = user
        .split(':')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if user.contains(':') || numeric {
        return Err(refuse(
            "user",
            &format!(
                "{user:?}: envd runs a process as a user of the template named in Basic auth; \
                 give a user name (root, user), not a uid or uid:gid"
            ),
        ));
    }
    Ok(())
}

/// The create request for `spec`, whose sandbox is `id` called `name`.
pub fn create_request(spec: &SandboxSpec, id: &SandboxId, name: &str) -> Result<CreateSandbox> {
    if spec.rootfs.is_some() {
        return Err(refuse(
            "rootfs",
            "E2B sandboxes boot from a template; give the template as --image",
        ));
    }
    if spec.runtime.is_some() {
        return Err(refuse(
            "runtime",
            "E2B runs every sandbox in its own Firecracker microVM",
        ));
    }
    if !spec.mounts.is_empty() {
        return Err(refuse(
            "volumes",
            "E2B's cloud cannot see this host's paths (copy files in with `stockade cp` instead)",
        ));
    }
    let r = &spec.resources;
    let per_template = "E2B sets it per template (when the template is built), not per sandbox";
    for (set, field) in [
        (r.memory_bytes.is_some(), "memory"),
        (r.millicpus.is_some(), "cpus"),
        (r.disk_bytes.is_some(), "disk"),
    ] {
        if set {
            return Err(refuse(field, per_template));
        }
    }
    for (set, field) in [
        (r.pids.is_some(), "pids"),
        (r.open_files.is_some(), "open-files"),
        (r.file_size_bytes.is_some(), "file-size"),
    ] {
        if set {
            return Err(refuse(
                field,
                "E2B's API has no process or file limits for a sandbox",
            ));
        }
    }
    if let Some(user) = &spec.user {
        check_user(user)?;
    }
    let mut metadata: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &spec.labels {
        if k == NAME_KEY || k == ID_KEY {
            return Err(Error::invalid(
                "label",
                format!("{k} is the driver's own (the sandbox's name and id on E2B)"),
            ));
        }
        metadata.insert(k.clone(), v.clone());
    }
    metadata.insert(NAME_KEY.into(), name.to_owned());
    metadata.insert(ID_KEY.into(), id.to_string());
    let ttl = spec.ttl.unwrap_or(DEFAULT_TIMEOUT);
    // E2B counts whole seconds; a fraction rounds up, so the sandbox never ends early.
    let timeout = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    Ok(CreateSandbox {
        template_id: spec.image.clone().unwrap_or_else(|| DEFAULT_TEMPLATE.into()),
        timeout,
        metadata,
        env_vars: spec.env.clone(),
        allow_internet_access: spec.network == NetworkMode::Full,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use stockade_core::{ErrorKind, Mount};

    fn id() -> SandboxId {
        SandboxId::parse("0123456789ab").unwrap()
    }

    #[test]
    fn a_default_spec_is_the_base_template_for_an_hour_offline() {
        let mut spec = SandboxSpec::default();
        spec.env.insert("A".into(), "1".into());
        spec.labels.insert("team".into(), "x".into());
        let c = create_request(&spec, &id(), "dev").unwrap();
        assert_eq!(c.template_id, "base");
        assert_eq!(c.timeout, 3600);
        assert!(!c.allow_internet_access);
        assert_eq!(c.env_vars.get("A").map(String::as_str), Some("1"));
        assert_eq!(
            c.metadata,
            BTreeMap::from([
                ("stockade.id".into(), "0123456789ab".into()),
                ("stockade.name".into(), "dev".into()),
                ("team".into(), "x".into()),
            ])
        );
    }

    #[test]
    fn image_ttl_and_network_map_onto_e2b() {
        let spec = SandboxSpec {
            image: Some("code-interpreter-v1".into()),
            ttl: Some(Duration::from_millis(90_500)),
            network: NetworkMode::Full,
            ..Default::default()
        };
        let c = create_request(&spec, &id(), "dev").unwrap();
        assert_eq!(
            (c.template_id.as_str(), c.timeout, c.allow_internet_access),
            ("code-interpreter-v1", 91, true)
        );
    }

    #[test]
    fn what_e2b_cannot_do_is_refused_by_name() {
        let cases: Vec<(&str, SandboxSpec)> = vec![
            ("memory", {
                let mut s = SandboxSpec::default();
                s.resources.memory_bytes = Some(1 << 30);
                s
            }),
            ("cpus", {
                let mut s = SandboxSpec::default();
                s.resources.millicpus = Some(500);
                s
            }),
            ("disk", {
                let mut s = SandboxSpec::default();
                s.resources.disk_bytes = Some(1 << 30);
                s
            }),
            ("pids", {
                let mut s = SandboxSpec::default();
                s.resources.pids = Some(10);
                s
            }),
            (
                "volumes",
                SandboxSpec {
                    mounts: vec![Mount::parse("/a:/b").unwrap()],
                    ..Default::default()
                },
            ),
            (
                "rootfs",
                SandboxSpec {
                    rootfs: Some("/srv/root".into()),
                    ..Default::default()
                },
            ),
            (
                "user",
                SandboxSpec {
                    user: Some("1000:1000".into()),
                    ..Default::default()
                },
            ),
        ];
        for (field, spec) in cases {
            let err = create_request(&spec, &id(), "dev").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported, "{field}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("{field} is not supported by the e2b driver")),
                "{err}"
            );
        }
        let mut spec = SandboxSpec::default();
        spec.labels.insert("stockade.name".into(), "x".into());
        assert_eq!(
            create_request(&spec, &id(), "dev").unwrap_err().kind(),
            ErrorKind::Invalid
        );
        assert!(check_user("user").is_ok());
        assert!(check_user("1000").is_err());
    }
}
