//! Where the drivers are assembled: the one place that names them. A new driver is its crate
//! plus one line in [`register_all`]. Also where the environment is read, once, into the
//! [`DriverConfig`] every driver is built from.

use std::path::PathBuf;

use stockade_core::{DriverConfig, ProgressSink, Registry};
use stockade_router::Router;

/// Every driver this binary ships, in the order `info` lists them; the first is the default.
pub fn register_all(registry: &mut Registry) {
    stockade_native::register(registry);
    stockade_docker::register(registry);
    stockade_microvm::register(registry);
    stockade_e2b::register(registry);
}

/// `$STOCKADE_HOME`, else `/var/lib/stockade` for root, else `$XDG_DATA_HOME/stockade` or
/// `~/.local/share/stockade`.
pub fn home_from_env() -> PathBuf {
    if let Some(home) = std::env::var_os("STOCKADE_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/stockade");
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("stockade")
}

/// The drivers' config from this process's environment: the home, `STOCKADE_AGENT`, and the
/// variables drivers consult (engine endpoints and the like); slow steps report to `progress`.
pub fn config_from_env(progress: ProgressSink) -> DriverConfig {
    let mut config = DriverConfig::new(home_from_env());
    config.agent = std::env::var_os("STOCKADE_AGENT")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    config.env = std::env::vars().collect();
    config.progress = progress;
    config
}

/// The router over the drivers `register` adds, for this process's environment.
pub fn router_from_env(register: fn(&mut Registry), progress: ProgressSink) -> Router {
    let mut registry = Registry::new(config_from_env(progress));
    register(&mut registry);
    Router::new(registry)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use stockade_core::{Driver, ExecRequest, SandboxSpec};

    /// A test's registry: the shipped drivers plus the fake, over a temp home.
    fn router_with_fake(home: &std::path::Path) -> Router {
        let mut registry = Registry::new(DriverConfig::new(home));
        register_all(&mut registry);
        stockade_fake::register(&mut registry);
        Router::new(registry)
    }

    #[tokio::test]
    async fn a_registered_driver_shows_in_info_and_takes_sandboxes() {
        let home = tempfile::tempdir().unwrap();
        let router = router_with_fake(home.path());
        let mut text = Vec::new();
        crate::commands::write_info(&router, false, &mut text)
            .await
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("  fake            yes: in memory"), "{text}");
        let mut json = Vec::new();
        crate::commands::write_info(&router, true, &mut json)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let names: Vec<&str> = json["drivers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.last(), Some(&"fake"));

        // Through the router: created by driver name, found again by its name.
        let spec = SandboxSpec {
            name: Some("f1".into()),
            driver: "fake".into(),
            ..Default::default()
        };
        let info = router.create(spec).await.unwrap();
        let found = router.get("f1").await.unwrap();
        assert_eq!(
            (found.id.clone(), found.driver.as_str()),
            (info.id.clone(), "fake")
        );
        let out = router
            .exec(&info.id, ExecRequest::new(["echo", "hi"]))
            .await
            .unwrap()
            .output()
            .await
            .unwrap();
        assert_eq!(out.stdout, b"hi\n");
        assert!(router.list().await.unwrap().iter().any(|s| s.id == info.id));
        router.destroy(&info.id).await.unwrap();
        assert!(matches!(
            router.get("f1").await,
            Err(stockade_core::Error::NotFound(_))
        ));
    }
}
