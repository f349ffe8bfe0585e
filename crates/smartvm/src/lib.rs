//! # smartvm
//!
//! Run [Firecracker](https://firecracker-microvm.github.io/) microVMs from Rust: typed
//! configuration turned into API calls in the right order, process supervision, ephemeral
//! drives on tmpfs, snapshots, metadata, and nothing left behind.
//!
//! Layers, bottom up (each imports only those below it; see ARCHITECTURE.md):
//! - [`lifecycle`], [`version`], [`trust`]: states, start steps and exit info; versions; trust checks;
//! - [`config`]: one module per Firecracker resource (type, validation, payload);
//! - [`staging`]: hole-preserving private copies of writable drives;
//! - [`error`]: [`SmartVmError`], its codes and every layer's error enum;
//! - [`api`]: the HTTP-over-Unix-socket client with typed endpoints; [`probe`]: the embedded
//!   bare-metal probe guest and its report parser;
//! - [`process`]: spawning, console capture and stopping of `firecracker`;
//! - [`host`]: what a VM holds on the host (resource ledger, journal, unwind, process identity);
//! - `network`: bridge, TAPs, forwarding and NAT for guests; [`snapshot`]: bundles and Diff merging;
//! - [`executor`]: how Firecracker runs (directly, in a drive namespace, jailed);
//! - [`vm`]: [`MicroVm`], one VM's lifecycle as named step lists;
//! - `images`: Firecracker binaries, kernels/rootfs, base-image bundles and their cache;
//! - [`SmartVm`]: the orchestrator (options, binary, registry, cleanup, reclaim); [`agent`]: the
//!   host agent's wire types and client.
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
pub mod guest;
pub mod host;
#[cfg(feature = "images")]
pub mod images;
pub mod lifecycle;
#[cfg(feature = "network")]
pub mod network;
mod options;
pub mod pool;
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
pub use crate::smartvm::{AdoptOutcome, SmartVm};
pub use crate::version::FirecrackerVersion;
pub use crate::vm::{MicroVm, VmState};

/// The README's code blocks, compiled as doctests so they stay correct.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
