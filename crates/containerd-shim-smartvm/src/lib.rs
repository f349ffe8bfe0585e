//! containerd's runtime v2 shim for smartvm (`containerd-shim-smartvm-v2`). containerd runs it
//! for each task of runtime `io.containerd.smartvm.v2` (one shim process per CRI pod); each
//! workload task becomes one microVM, run through the smartvm library in this process and
//! journaled like every smartvm VM (`smartvm ps`, `gc`).
//!
//! The library half exists for the binary and its tests: [`process`] (a process the guest agent
//! runs for a task, relayed to containerd's FIFOs) is tested against a real agent on its own.

pub mod options;
pub mod process;
mod rootfs;
mod shim;
mod spec;
mod task;

/// The runtime name containerd knows this shim by.
pub const RUNTIME: &str = "io.containerd.smartvm.v2";

/// Runs the shim binary (its flags and subcommands are containerd's).
pub async fn run() {
    containerd_shim::asynchronous::run::<shim::SmartvmShim>(RUNTIME, None).await;
}
