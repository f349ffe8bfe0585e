//! The host agent's API (`smartvm serve`): VMs that outlive the command that started them.
//!
//! The agent serves HTTP/1.1 + JSON on a Unix socket (default `<runtime_dir>/smartvm.sock`,
//! mode `0600`; peers are checked with `SO_PEERCRED`). [`wire`] holds the request and answer
//! types and the route table (also checked against the OpenAPI document the agent serves);
//! [`AgentClient`] is the typed client the CLI uses.
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
pub mod wire;

pub use client::AgentClient;
