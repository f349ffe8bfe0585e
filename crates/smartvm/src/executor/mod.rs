//! How Firecracker runs for one VM, behind one trait (in the manner of fctools'
//! `vmm/executor`): where its API socket is, where staged drives go and what path Firecracker
//! sees for them, what must be prepared before spawn, the command line, the process identity
//! that is journaled, and where its files may be removed from.
//!
//! - [`Direct`]: Firecracker as a child of this program, files where smartvm put them;
//! - [`DriveNamespace`]: the same in a private mount namespace showing the VM's staged drives at
//!   one fixed path, so snapshots with ephemeral drives restore into other VMs;
//! - [`Jailed`]: under Firecracker's jailer (chroot, uid/gid, cgroups), everything it opens
//!   copied into the jail and owned by the jail user.
//!
//! The start steps ask the executor; nothing outside this module branches on the jailer.

mod direct;
mod jailed;

use std::path::{Path, PathBuf};

pub use direct::{Direct, DriveNamespace};
pub use jailed::Jailed;

use crate::config::{LogLevel, VmConfig};
use crate::error::Result;
use crate::host::ledger::{Ledger, Resource};
use crate::host::ProcessRecord;
use crate::host::ResolvedResources;
use crate::process::FirecrackerCommand;

/// How Firecracker runs for one VM.
pub trait Executor: std::fmt::Debug + Send + Sync {
    /// A short name for logs (`direct`, `drive-namespace`, `jailed`).
    fn kind(&self) -> &'static str;

    /// The API socket, as a host path.
    fn socket_path(&self) -> PathBuf;

    /// Where the `--config-file` of a config-file boot is written (host path) and the path
    /// Firecracker reads it from.
    fn config_file(&self) -> (PathBuf, PathBuf);

    /// Where staged drive copies are placed (host path).
    fn drives_dir(&self) -> PathBuf;

    /// True when every drive must be a private copy (the VMM's user must own what it opens).
    fn stages_every_drive(&self) -> bool {
        false
    }

    /// True when the paths Firecracker sees for staged drives are the same for every VM, so a
    /// snapshot with ephemeral drives can be restored into another VM.
    fn fixed_drive_paths(&self) -> bool {
        false
    }

    /// Where Firecracker writes a snapshot's files before they go into the bundle.
    fn snapshot_output(&self) -> crate::snapshot::SnapshotOutput {
        crate::snapshot::SnapshotOutput::Direct
    }

    /// Restore: makes the snapshot's state and memory files readable by the VMM and rewrites
    /// `load` to the paths it sees (copies inside a jail; nothing for a direct run).
    fn place_snapshot(&self, _load: &mut crate::config::SnapshotLoadParams) -> Result<()> {
        Ok(())
    }

    /// The host path of the VM's vsock socket (inside the chroot when jailed): guest-initiated
    /// connections to port `P` go to `<this path>_P`.
    fn vsock_socket(&self, config: &VmConfig) -> Option<PathBuf> {
        config.vsock.as_ref().map(|v| v.uds_path.clone())
    }

    /// The path Firecracker opens for the staged copy at host path `staged`.
    fn path_seen(&self, staged: &Path) -> PathBuf {
        staged.to_path_buf()
    }

    /// Refuses configs this executor cannot run (pure: at `create_vm`, before anything exists).
    fn check_config(&self, _config: &VmConfig) -> Result<()> {
        Ok(())
    }

    /// At start: [`check_config`](Self::check_config) for this start or restore, then its own
    /// binaries and dirs; nothing is created but smartvm's own private dirs.
    fn check(&self, config: &VmConfig, restoring: bool) -> Result<()>;

    /// Creates what must exist before spawn (journaled in `ledger` first) and records the
    /// kernel/initrd paths Firecracker sees in `resolved`.
    fn prepare(&self, config: &VmConfig, ledger: &mut Ledger, resolved: &mut ResolvedResources) -> Result<()>;

    /// Makes one file smartvm wrote for the VMM readable by it (ownership inside a jail).
    fn give(&self, _file: &Path) -> Result<()> {
        Ok(())
    }

    /// Makes staged drives usable by the VMM (ownership inside a jail, a mountpoint).
    fn hand_over(&self, _paths: &[PathBuf]) -> Result<()> {
        Ok(())
    }

    /// Resources the VMM creates as it starts, journaled right before spawn (its vsock socket;
    /// cgroups for a jail).
    fn spawn_resources(&self, config: &VmConfig) -> Vec<Resource> {
        config.vsock.iter().map(|v| Resource::Socket { path: v.uds_path.clone() }).collect()
    }

    /// The command to spawn from `base` (binary, id, seccomp, logging flags), with the socket
    /// and log paths as Firecracker sees them. `own_log` asks for Firecracker's log at that
    /// level to go to stderr (or a file the executor chooses) because the config has no logger.
    fn command(&self, base: FirecrackerCommand, own_log: Option<LogLevel>) -> FirecrackerCommand;

    /// True when Firecracker's own log reaches its stderr, where smartvm reads it (so the
    /// outcome of a config-file boot can be seen).
    fn logs_to_stderr(&self) -> bool {
        true
    }

    /// The identity of the process about to be spawned (journaled before spawn).
    fn process_record(&self) -> ProcessRecord;

    /// The base under which this executor's files may be removed (a jail base).
    fn jail_base(&self) -> Option<PathBuf> {
        None
    }
}

/// How a VM's Firecracker is run: under `jailer` when given, else directly, in a private
/// mount namespace for its drives when `drive_namespace` (see [`DriveNamespace`]).
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    /// The Firecracker binary.
    pub binary: &'a Path,
    /// The jailer to run it under.
    pub jailer: Option<&'a crate::process::JailerConfig>,
    /// Show staged drives at one fixed path (`<runtime_dir>/.drives`).
    pub drive_namespace: bool,
    /// The parent of all VM runtime dirs.
    pub runtime_dir: &'a Path,
}

/// The executor for VM `vm_id` whose runtime dir is `vm_dir`, placed as `placement` says.
pub fn for_vm(placement: Placement<'_>, vm_id: &str, vm_dir: &Path) -> Box<dyn Executor> {
    let direct = || Direct::new(placement.binary, vm_id, vm_dir);
    match placement.jailer {
        Some(jailer) => Box::new(Jailed::new(jailer.clone(), placement.binary, vm_id)),
        None if placement.drive_namespace => Box::new(DriveNamespace::new(direct(), placement.runtime_dir)),
        None => Box::new(direct()),
    }
}
