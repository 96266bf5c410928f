//! The microvm driver: every sandbox is a virtual machine with its own kernel, so a guest root
//! that escapes every in-guest wall still meets the hypervisor.
//!
//! - [`image`]: the guest kernel, its modules and an ext4 root from Debian packages, cached by
//!   recipe hash; the initramfs per agent binary ([`initramfs`]: cpio written by hand).
//! - [`qemu`]: QEMU's `-M microvm` command line as a value, and QMP; [`vmm`]: what is asked of
//!   a running VMM (pause, resume, save, finish a restore), with QEMU's answer.
//! - [`accel`]: KVM where it can run the guest, else software emulation (TCG).
//! - [`supervisor`]: one host process per VM (hosted by the `stockade-agent` binary, as the
//!   native supervisor is) that starts QEMU, holds the guest agent's session ([`mux`]: yamux
//!   over a virtio-serial port), gives it its config and identity, serves
//!   `vms/ID/agent.sock` to any host process, and enforces the TTL.
//! - [`template`]: snapshot restore: a guest saved once per image, memory and vCPUs right after
//!   its agent said hello; new sandboxes start from it instead of booting.
//! - [`driver`]: `MicrovmDriver: Driver`; [`plugin`]: its factory and admin side.

pub mod accel;
pub mod driver;
pub mod image;
pub mod initramfs;
pub mod layout;
pub mod mux;
pub mod plugin;
pub mod qemu;
pub mod supervisor;
pub mod template;
pub mod vmm;

/// The name this driver registers as.
pub const DRIVER: &str = "microvm";

pub use driver::MicrovmDriver;
pub use plugin::register;
