//! The host agent inside your own program: the same API as `smartvm serve`, on a socket you
//! choose, until Ctrl-C. Its VMs outlive it; the next run adopts them.
//!
//! `cargo run -p smartvm --example embed_agent`, then e.g.
//! `SMARTVM_AGENT_SOCKET=/run/smartvm/my-agent.sock smartvm ps`.

use smartvm::agent::server::{bind, AgentServer};
use smartvm::SmartVmOptions;

#[tokio::main]
async fn main() -> smartvm::Result<()> {
    let options = SmartVmOptions::from_env();
    smartvm::trust::ensure_private_dir(&options.runtime_dir)?;
    let listener = bind(&options.runtime_dir.join("my-agent.sock")).await?;
    let server = AgentServer::new(options);
    let found = server.adopt().await?;
    println!("adopted {:?}, reclaimed {:?}", found.adopted, found.reclaimed);
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    server.serve(listener, ctrl_c).await
}
