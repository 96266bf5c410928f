//! `e2b`: Stockade sandboxes on E2B's cloud (`--driver e2b`), through the two surfaces E2B's
//! own SDKs use: the control plane (`api.e2b.app`: create, get, list, kill, pause, connect,
//! metrics; [`control`]) and envd, the daemon inside each sandbox (Connect-RPC JSON
//! `process.Process` and `filesystem.Filesystem`, and `/files`; [`envd`], [`process`],
//! [`files`]).
//!
//! **Reach.** The real E2B cloud was not reached from the machine this driver was written on
//! (it has no internet); the driver is tested against Stockade's own E2B-compatible surface
//! (`stockade serve` answers E2B's wire protocol), by the conformance suite in
//! `crates/conformance/tests/e2b.rs`. TLS for `https://` endpoints is rustls with the webpki
//! root certificates.
//!
//! **Endpoints** come from [`DriverConfig::env`]: `E2B_API_URL` (else `https://api.` +
//! `E2B_DOMAIN`, default `e2b.app`) for the control plane; envd at `E2B_SANDBOX_URL` when set
//! (one URL for every sandbox, routed by the `E2b-Sandbox-Id` header), else at
//! `https://49983-<id>.<domain>`. The API key is the secret store's `E2B_API_KEY`, else the
//! environment's `E2B_API_KEY`; it is sent only as `X-API-KEY` to the control plane and never
//! logged or stored by the driver.
//!
//! **A spec on E2B.** `image` is the E2B template (default `base`); `env` becomes the
//! sandbox's `envVars`; labels become metadata, with `stockade.name` and `stockade.id` added
//! (E2B has no names); `ttl` is E2B's `timeout` — **default 3600 s**, the most E2B's hobby tier
//! allows, so a sandbox without `--ttl` is killed by E2B after an hour; `--network none` is
//! `allow_internet_access: false`, `full` is `true`. Resource limits, volumes, a rootfs and a
//! runtime cannot be set through E2B's API and are refused by name, never ignored. `user`
//! must be a user name (envd takes it in Basic auth); the workdir is made (as root) when missing.
//! Stop is E2B's pause, start is E2B's connect.
//!
//! **Execs** run `argv` as given (no shell), under envd's process service; the exec timeout is
//! the request deadline (`Connect-Timeout-Ms`), at which envd kills the process. A plain exec
//! whose caller drops its events is killed, as in every Stockade driver; a kept exec is not.
//! **Attach** (`process.Connect` by pid) gives live output only: envd keeps no events, so what
//! a kept exec printed before the attach is not replayed, and a finished exec cannot be read
//! again. Attached events are numbered from the caller's `from_seq`.
//!
//! Records (id, name, spec, creation time, the E2B sandbox id and its envd access token, and
//! the kept execs' pids) live in `$STOCKADE_HOME/e2b/records`, mode 0600, indexed with the
//! home's other drivers so ids, prefixes and names resolve the same way.
#![forbid(unsafe_code)]

pub mod config;
pub mod connect;
pub mod control;
pub mod driver;
pub mod envd;
pub mod files;
pub mod http;
pub mod process;
pub mod spec;

use std::sync::Arc;

use stockade_core::{Driver, DriverConfig, DriverFactory, Registry, Result};

pub use driver::E2bDriver;

/// The name the driver registers as (`--driver e2b`).
pub const NAME: &str = "e2b";

/// Makes the e2b driver. Building reads the configuration only: no request leaves the host
/// until a call needs one.
#[derive(Debug, Clone, Copy, Default)]
pub struct E2bFactory;

impl DriverFactory for E2bFactory {
    fn name(&self) -> &'static str {
        NAME
    }
    fn description(&self) -> &'static str {
        "sandboxes on E2B's cloud (E2B's API and envd; E2B_API_KEY from the secret store or the environment)"
    }
    fn takes_images(&self) -> bool {
        // `image` names an E2B template, not a container image: a task's default image
        // (a Docker reference) is not one.
        false
    }
    fn build(&self, config: &DriverConfig) -> Result<Arc<dyn Driver>> {
        Ok(Arc::new(E2bDriver::from_config(config)?))
    }
}

/// Adds the e2b driver to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(E2bFactory);
}
