//! The host agent's API (`smartvm serve`): VMs that outlive the command that started them.
//!
//! The agent serves HTTP/1.1 + JSON on a Unix socket (default `<runtime_dir>/smartvm.sock`,
//! mode `0600`; peers are checked with `SO_PEERCRED`). [`Route`] lists the routes once: the
//! server's router, the client and the OpenAPI document follow it. [`wire`] holds the typed
//! requests and answers; [`AgentClient`] is the typed client the CLI uses; [`server`] (feature
//! `agent`) is the server itself, embeddable in any tokio program.
//!
//! ```no_run
//! # async fn demo() -> smartvm::Result<()> {
//! use smartvm::agent::AgentClient;
//! use smartvm::VmConfig;
//! let agent = AgentClient::new(AgentClient::default_socket(&smartvm::SmartVmOptions::from_env()));
//! let vm = agent.create(&VmConfig::new("/images/vmlinux").with_id("web")).await?;
//! println!("{} is {}", vm.id, vm.state);
//! for vm in agent.list().await? {
//!     println!("{} {}", vm.id, vm.state);
//! }
//! agent.stop("web", None).await?;
//! agent.remove("web", false).await?;
//! # Ok(()) }
//! ```

mod client;
mod guest;
mod route;
#[cfg(feature = "agent")]
pub mod server;
pub mod wire;

pub use client::AgentClient;
pub use route::Route;
