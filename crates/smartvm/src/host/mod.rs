//! What a VM holds on the host, below the VM layer: the [`ledger`] of acquired resources (its
//! journal on disk, the [`UnwindScope`] and the one reverse unwind that serves stop, failure,
//! crash recovery and `smartvm gc`), the identity of processes ([`ProcessRecord`]) (pid + start time, so nothing
//! is signalled that is not provably ours) and jail exports (files a jailed Firecracker makes, linked out). It imports nothing above it:
//! the VM steps, the executors, networking and snapshots all stand on it.

pub(crate) mod export;
pub(crate) mod identity;
pub mod ledger;
mod resolved;
mod resource;
#[cfg(feature = "network")]
pub mod tap_removal;
mod unwind_error;

pub use identity::{process_start_time, process_started_at, JailedImage, ProcessRecord};
pub use ledger::{Resource, UnwindScope, VmJournal};
pub use resolved::ResolvedResources;
