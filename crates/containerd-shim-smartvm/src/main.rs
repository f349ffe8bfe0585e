//! `containerd-shim-smartvm-v2`: see the library's documentation.

#[tokio::main]
async fn main() {
    containerd_shim_smartvm::run().await;
}
