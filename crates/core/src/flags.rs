//! A sandbox asked for in the words users type (`512m`, `1.5`, `30m`, `HOST:PATH:ro`): what
//! `stockade create`'s flags and the daemon's create request both carry, turned into a
//! [`SandboxSpec`] in one place so both give the same errors, naming the same fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::parse;
use crate::sandbox::{Mount, SandboxSpec, DEFAULT_WORKDIR};

/// A sandbox request in human units. Unknown fields are refused.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFlags {
    /// A unique name.
    #[serde(default)]
    pub name: Option<String>,
    /// `native` (default), `docker` or `podman`.
    #[serde(default)]
    pub driver: Option<String>,
    /// Image (container drivers).
    #[serde(default)]
    pub image: Option<String>,
    /// OCI runtime, e.g. `runsc` (container drivers).
    #[serde(default)]
    pub runtime: Option<String>,
    /// Absolute root filesystem directory on the host (native).
    #[serde(default)]
    pub rootfs: Option<String>,
    /// Memory limit, e.g. `512m`.
    #[serde(default)]
    pub memory: Option<String>,
    /// CPU limit, e.g. `1.5`.
    #[serde(default)]
    pub cpus: Option<String>,
    /// Process limit.
    #[serde(default)]
    pub pids: Option<String>,
    /// Writable-layer size limit, e.g. `1g`.
    #[serde(default)]
    pub disk: Option<String>,
    /// Open files per process.
    #[serde(default)]
    pub open_files: Option<String>,
    /// Largest file a process may write, e.g. `100m`.
    #[serde(default)]
    pub file_size: Option<String>,
    /// `none` (default: loopback only) or `full`.
    #[serde(default)]
    pub network: Option<String>,
    /// `K=V` environment entries for every exec.
    #[serde(default)]
    pub env: Vec<String>,
    /// `HOST:PATH[:ro]` mounts; host paths absolute.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Working directory for execs (`/workspace` by default).
    #[serde(default)]
    pub workdir: Option<String>,
    /// User for execs (name, uid or uid:gid).
    #[serde(default)]
    pub user: Option<String>,
    /// `K=V` labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Destroy the sandbox this long after creation, e.g. `30m`.
    #[serde(default)]
    pub ttl: Option<String>,
}

fn whole<T: std::str::FromStr>(field: &str, s: &str) -> Result<T> {
    s.trim()
        .parse::<T>()
        .map_err(|_| Error::invalid(field, format!("{s:?} is not a whole number")))
}

impl SpecFlags {
    /// The spec these flags ask for, checked; errors name the flag. Paths are taken as given
    /// (the caller resolves symlinks, which needs the file system).
    pub fn to_spec(&self) -> Result<SandboxSpec> {
        let mut spec = SandboxSpec {
            name: self.name.clone(),
            driver: self.driver.clone().unwrap_or_default(),
            image: self.image.clone(),
            runtime: self.runtime.clone(),
            rootfs: self.rootfs.as_ref().map(Into::into),
            workdir: self.workdir.clone().unwrap_or_else(|| DEFAULT_WORKDIR.into()),
            network: self.network.as_deref().unwrap_or("none").parse()?,
            user: self.user.clone(),
            ttl: self
                .ttl
                .as_deref()
                .map(|t| parse::duration("ttl", t))
                .transpose()?,
            ..Default::default()
        };
        let r = &mut spec.resources;
        r.memory_bytes = self
            .memory
            .as_deref()
            .map(|m| parse::size("memory", m))
            .transpose()?;
        r.disk_bytes = self.disk.as_deref().map(|m| parse::size("disk", m)).transpose()?;
        r.file_size_bytes = self
            .file_size
            .as_deref()
            .map(|m| parse::size("file-size", m))
            .transpose()?;
        r.open_files = self
            .open_files
            .as_deref()
            .map(|p| whole("open-files", p))
            .transpose()?;
        r.millicpus = self.cpus.as_deref().map(|c| parse::cpus("cpus", c)).transpose()?;
        r.pids = self.pids.as_deref().map(|p| whole("pids", p)).transpose()?;
        for e in &self.env {
            let (k, v) = parse::key_value("env", e)?;
            spec.env.insert(k, v);
        }
        for l in &self.labels {
            let (k, v) = parse::key_value("label", l)?;
            spec.labels.insert(k, v);
        }
        for v in &self.volumes {
            spec.mounts.push(Mount::parse(v)?);
        }
        spec.validate()?;
        Ok(spec)
    }
}

impl SpecFlags {
    /// The flags that ask for `spec` (the inverse of [`SpecFlags::to_spec`]), for sending a spec
    /// to a daemon.
    pub fn from_spec(spec: &SandboxSpec) -> SpecFlags {
        let r = &spec.resources;
        SpecFlags {
            name: spec.name.clone(),
            driver: Some(spec.driver.clone()),
            image: spec.image.clone(),
            runtime: spec.runtime.clone(),
            rootfs: spec.rootfs.as_ref().map(|p| p.display().to_string()),
            memory: r.memory_bytes.map(|b| b.to_string()),
            cpus: r.millicpus.map(|m| format!("{}.{:03}", m / 1000, m % 1000)),
            pids: r.pids.map(|p| p.to_string()),
            disk: r.disk_bytes.map(|b| b.to_string()),
            open_files: r.open_files.map(|n| n.to_string()),
            file_size: r.file_size_bytes.map(|b| b.to_string()),
            network: Some(spec.network.to_string()),
            env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            volumes: spec
                .mounts
                .iter()
                .map(|m| {
                    let mode = if m.read_only { "ro" } else { "rw" };
                    format!("{}:{}:{mode}", m.host.display(), m.sandbox.display())
                })
                .collect(),
            workdir: Some(spec.workdir.clone()),
            user: spec.user.clone(),
            labels: spec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            ttl: spec.ttl.map(|t| format!("{}s", t.as_secs().max(1))),
        }
    }
}

/// Labels as a map, for filters.
pub fn labels_map(labels: &[String]) -> Result<BTreeMap<String, String>> {
    labels.iter().map(|l| parse::key_value("label", l)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_flag() {
        let flags = SpecFlags {
            memory: Some("lots".into()),
            ..Default::default()
        };
        assert!(flags
            .to_spec()
            .unwrap_err()
            .to_string()
            .starts_with("invalid memory"));
        let flags: std::result::Result<SpecFlags, _> = serde_json::from_str(r#"{"memroy": "1g"}"#);
        assert!(flags.unwrap_err().to_string().contains("unknown field `memroy`"));
    }

    #[test]
    fn a_spec_survives_the_trip_through_flags() {
        let flags = SpecFlags {
            name: Some("n".into()),
            memory: Some("512m".into()),
            cpus: Some("1.5".into()),
            pids: Some("64".into()),
            network: Some("full".into()),
            env: vec!["A=b=c".into()],
            volumes: vec!["/tmp:/data:ro".into()],
            labels: vec!["team=x".into()],
            ttl: Some("30m".into()),
            ..Default::default()
        };
        let spec = flags.to_spec().unwrap();
        assert_eq!(SpecFlags::from_spec(&spec).to_spec().unwrap(), spec);
    }

    #[test]
    fn defaults_are_native_no_network_workspace() {
        let spec = SpecFlags::default().to_spec().unwrap();
        assert_eq!(spec.driver, "", "the registry's default");
        assert_eq!(spec.workdir, DEFAULT_WORKDIR);
        assert_eq!(spec.network, crate::NetworkMode::None);
    }
}
