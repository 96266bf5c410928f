//! Where E2B is and who the driver is to it: the endpoints from the configuration's
//! environment, and the API key from the secret store or the environment. Pure but for the
//! secret store's file.

use std::path::Path;

use stockade_core::{DriverConfig, Error, Result};

/// The secret (and environment variable) holding the API key.
pub const API_KEY: &str = "E2B_API_KEY";
/// envd's port inside every E2B sandbox.
pub const ENVD_PORT: u16 = 49983;
/// E2B's own domain, when `E2B_DOMAIN` names none.
pub const DEFAULT_DOMAIN: &str = "e2b.app";

/// The control plane's and envd's base URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The control plane, without a trailing `/` (`https://api.e2b.app`).
    pub api: String,
    /// `E2B_SANDBOX_URL`: one envd URL for every sandbox, routed by header.
    pub sandbox_url: Option<String>,
    /// The domain sandboxes' hosts are under when the create answer names none.
    pub domain: String,
}

fn base_url(name: &str, value: &str) -> Result<String> {
    let trimmed = value.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['?', '#', ' ']) => Ok(trimmed.to_owned()),
        _ => Err(Error::invalid(
            name,
            format!("{value:?}: expected http://HOST[:PORT] or https://HOST[:PORT]"),
        )),
    }
}

impl Endpoints {
    /// From `E2B_API_URL`, `E2B_DOMAIN` and `E2B_SANDBOX_URL` in the configuration.
    pub fn from_config(config: &DriverConfig) -> Result<Endpoints> {
        let domain = config
            .var("E2B_DOMAIN")
            .unwrap_or(DEFAULT_DOMAIN)
            .trim()
            .to_owned();
        if domain.is_empty() || domain.contains(['/', ':', ' ']) {
            return Err(Error::invalid(
                "E2B_DOMAIN",
                format!("{domain:?} is not a domain like e2b.app"),
            ));
        }
        let api = match config.var("E2B_API_URL") {
            Some(url) => base_url("E2B_API_URL", url)?,
            None => format!("https://api.{domain}"),
        };
        let sandbox_url = config
            .var("E2B_SANDBOX_URL")
            .map(|url| base_url("E2B_SANDBOX_URL", url))
            .transpose()?;
        Ok(Endpoints {
            api,
            sandbox_url,
            domain,
        })
    }

    /// envd's base URL for sandbox `sandbox_id`, whose create answer named `domain` (or not).
    pub fn envd(&self, sandbox_id: &str, domain: Option<&str>) -> String {
        match &self.sandbox_url {
            Some(url) => url.clone(),
            None => format!(
                "https://{ENVD_PORT}-{sandbox_id}.{}",
                domain.filter(|d| !d.is_empty()).unwrap_or(&self.domain)
            ),
        }
    }
}

/// Where the API key was found (never the key itself, for `info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFrom {
    SecretStore,
    Environment,
}

impl KeyFrom {
    /// As `info` prints it.
    pub fn describe(self) -> &'static str {
        match self {
            KeyFrom::SecretStore => "the secret store (E2B_API_KEY)",
            KeyFrom::Environment => "the environment (E2B_API_KEY)",
        }
    }
}

/// The API key: the secret store's `E2B_API_KEY` under `home`, else the environment's.
pub fn api_key(home: &Path, config: &DriverConfig) -> Result<(String, KeyFrom)> {
    let stored = stockade_secrets::SecretStore::new(home).get(API_KEY);
    match stored {
        Ok(Some(key)) if !key.trim().is_empty() => return Ok((key.trim().to_owned(), KeyFrom::SecretStore)),
        Ok(_) => {}
        Err(store_error) => {
            // A store that cannot be read still leaves the environment; say why when that has
            // none either.
            return match config.var(API_KEY) {
                Some(key) => Ok((key.trim().to_owned(), KeyFrom::Environment)),
                None => Err(missing_key(Some(&store_error.to_string()))),
            };
        }
    }
    match config.var(API_KEY) {
        Some(key) if !key.trim().is_empty() => Ok((key.trim().to_owned(), KeyFrom::Environment)),
        _ => Err(missing_key(None)),
    }
}

/// The error for no key anywhere: names both places.
pub fn missing_key(store_error: Option<&str>) -> Error {
    let mut reason = "no E2B API key: store one with `stockade secret set E2B_API_KEY` \
                      or set the environment variable E2B_API_KEY"
        .to_owned();
    if let Some(e) = store_error {
        reason.push_str(&format!(" (the secret store could not be read: {e})"));
    }
    Error::backend("unavailable", reason)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(vars: &[(&str, &str)]) -> DriverConfig {
        let mut c = DriverConfig::new("/nonexistent");
        c.env = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        c
    }

    #[test]
    fn defaults_are_e2bs_cloud() {
        let e = Endpoints::from_config(&config(&[])).unwrap();
        assert_eq!(e.api, "https://api.e2b.app");
        assert_eq!(e.sandbox_url, None);
        assert_eq!(e.envd("abc", None), "https://49983-abc.e2b.app");
        assert_eq!(e.envd("abc", Some("eu.e2b.dev")), "https://49983-abc.eu.e2b.dev");
    }

    #[test]
    fn the_environment_overrides_each_endpoint() {
        let e = Endpoints::from_config(&config(&[
            ("E2B_DOMAIN", "example.org"),
            ("E2B_SANDBOX_URL", "http://127.0.0.1:9/"),
        ]))
        .unwrap();
        assert_eq!(e.api, "https://api.example.org");
        assert_eq!(e.envd("abc", Some("other")), "http://127.0.0.1:9");
        let e = Endpoints::from_config(&config(&[("E2B_API_URL", "http://localhost:3000")])).unwrap();
        assert_eq!(e.api, "http://localhost:3000");
        let err = Endpoints::from_config(&config(&[("E2B_API_URL", "localhost:3000")])).unwrap_err();
        assert!(err.to_string().starts_with("invalid E2B_API_URL"), "{err}");
    }

    #[test]
    fn a_missing_key_names_both_places() {
        let home = tempfile::tempdir().unwrap();
        let err = api_key(home.path(), &config(&[])).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("unavailable: no E2B API key"), "{text}");
        assert!(text.contains("stockade secret set E2B_API_KEY"), "{text}");
        assert!(text.contains("environment variable E2B_API_KEY"), "{text}");
        let (key, from) = api_key(home.path(), &config(&[("E2B_API_KEY", "k1")])).unwrap();
        assert_eq!((key.as_str(), from), ("k1", KeyFrom::Environment));
    }
}
