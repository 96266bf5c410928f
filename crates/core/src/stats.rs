//! Resource usage of a whole sandbox.

use serde::{Deserialize, Serialize};

/// A point-in-time reading.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Total CPU time used, in microseconds.
    pub cpu_usec: u64,
    /// Memory in use now, in bytes.
    pub memory_bytes: u64,
    /// Highest memory use seen, in bytes (0 when the backend cannot tell).
    pub memory_peak_bytes: u64,
    /// Processes and threads alive.
    pub pids: u64,
    /// Where the numbers come from (`cgroup v1`, `cgroup v2`, `procfs`, ...).
    pub source: String,
}
