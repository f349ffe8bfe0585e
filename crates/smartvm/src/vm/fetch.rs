//! [`FetchBinary`]: how a VM created before its Firecracker binary existed gets it at start.
//!
//! The orchestrator's `create_vm` finds no binary on a fresh host; with
//! [`auto_download_binary`](crate::SmartVmOptions) it hands the VM a fetcher instead of failing,
//! and the VM's first step (`CheckHost`) runs it before the binary is checked and executed, as
//! the seed's quick start (`createVM` then `start`) does.

use std::future::Future;
use std::pin::Pin;

use crate::error::Result;

/// A boxed future of a fetch.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// Makes the VM's [`firecracker_binary`](super::VmRuntimeOptions::firecracker_binary) exist.
pub trait FetchBinary: Send + Sync + std::fmt::Debug {
    /// Downloads, verifies and installs the binary when it is missing; concurrent starts share
    /// one download. Errors carry their own codes (`DOWNLOAD_FAILED`, `UNTRUSTED_PATH`, …).
    fn fetch(&self) -> FetchFuture<'_>;
}
