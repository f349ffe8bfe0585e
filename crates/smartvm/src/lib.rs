//! # smartvm
//!
//! Run [Firecracker](https://firecracker-microvm.github.io/) microVMs from Rust: typed
//! configuration turned into API calls in the right order, process supervision, ephemeral
//! drives on tmpfs, snapshots, metadata, and nothing left behind.
//!
//! Layers, bottom up:
//! - [`config`]: one module per Firecracker resource (type, validation, payload);
//! - [`api`]: the HTTP-over-Unix-socket client with typed endpoints;
//! - [`process`]: spawning, console capture and stopping of `firecracker`;
//! - [`staging`]: hole-preserving private copies of writable drives;
//! - [`vm`]: [`MicroVm`], one VM's lifecycle;
//! - [`images`]: Firecracker binaries, kernels/rootfs, base-image bundles and their cache;
//! - [`network`]: bridge, TAPs, forwarding and NAT for guests;
//! - [`SmartVm`]: the orchestrator (binary, registry, cleanup, reclaim);
//! - [`probe`]: the embedded bare-metal probe guest and its report parser.
//!
//! ```no_run
//! # async fn demo() -> smartvm::Result<()> {
//! use smartvm::{probe, SmartVm, SmartVmOptions, VmConfig};
//! let smartvm = SmartVm::new(SmartVmOptions::from_env());
//! let kernel = probe::install_probe_kernel(&smartvm.options().data_dir.join("kernels"))?;
//! let vm = smartvm.create_vm(&VmConfig::new(kernel).with_machine(1, 32))?;
//! vm.start().await?;
//! smartvm.cleanup().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod agent;
pub mod api;
mod backoff;
pub mod config;
pub mod error;
pub mod executor;
pub mod host;
#[cfg(feature = "images")]
pub mod images;
pub mod lifecycle;
#[cfg(feature = "network")]
pub mod network;
mod options;
pub mod probe;
pub mod process;
mod smartvm;
pub mod snapshot;
pub mod staging;
pub mod trust;
pub mod version;
pub mod vm;

pub use crate::api::{ApiClient, ApiResponse};
pub use crate::config::VmConfig;
pub use crate::error::{Result, SmartVmError};
pub use crate::options::{binary_candidates, default_dirs, default_runtime_dir, SmartVmOptions};
pub use crate::process::FirecrackerProcess;
pub use crate::smartvm::SmartVm;
pub use crate::version::FirecrackerVersion;
pub use crate::vm::{MicroVm, VmState};

/// The README's code blocks, compiled as doctests so they stay correct.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
