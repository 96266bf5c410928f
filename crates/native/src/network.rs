//! `--network full`: the host side lives in `stockade-hostnet`, shared with the microvm driver
//! (a VM's tap sits behind the same rules as a sandbox's veth).
pub use stockade_hostnet::*;
