//! `containerd-shim-smartvm-v2`: containerd's runtime v2 shim for smartvm. containerd runs it for
//! each task of runtime `io.containerd.smartvm.v2`; the task becomes one microVM, run through the
//! smartvm library in this process and journaled like every smartvm VM (`smartvm ps`, `gc`).

mod rootfs;
mod shim;
mod spec;
mod task;

/// The runtime name containerd knows this shim by.
pub const RUNTIME: &str = "io.containerd.smartvm.v2";

#[tokio::main]
async fn main() {
    containerd_shim::asynchronous::run::<shim::SmartvmShim>(RUNTIME, None).await;
}
