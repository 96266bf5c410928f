//! What the agent is told at start: the sandbox-wide defaults every exec starts from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The environment variable that carries [`AgentConfig`] as JSON; the agent removes it at start.
pub const CONFIG_ENV: &str = "STOCKADE_AGENT_CONFIG";

/// The `PATH` every exec gets unless the spec or request sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Sandbox-wide exec defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Default working directory.
    pub workdir: String,
    /// Environment from the sandbox spec.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Default user (`None` = root).
    #[serde(default)]
    pub user: Option<String>,
}
