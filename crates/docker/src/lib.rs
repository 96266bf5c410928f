//! Stockade's `docker` driver: containers on any engine that speaks the Docker Engine API
//! (Docker, Podman, OrbStack, Colima; gVisor and other OCI runtimes by name), with the static
//! Stockade agent bind-mounted in as each container's init, so exec, files and stats use the same
//! protocol as the native driver and never pay for a `docker exec`.
#![forbid(unsafe_code)]

pub mod container;
pub mod driver;
pub mod engine;
pub mod firewall;
pub mod image;
pub mod plugin;
pub mod transport;

pub use driver::DockerDriver;
pub use engine::{Engine, EngineFacts, Flavor};
pub use plugin::register;
