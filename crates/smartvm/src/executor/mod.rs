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

use crate::config::{LogLevel, SnapshotLoadParams, VmConfig};
use crate::error::Result;
use crate::host::ledger::Resource;
use crate::host::{ProcessRecord, ResolvedResources};
use crate::process::FirecrackerCommand;
use crate::snapshot::SnapshotOutput;

/// Where one VM's files are for its executor: fixed for the VM's life, so computed once.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The API socket (host path).
    pub socket: PathBuf,
    /// The `--config-file` of a config-file boot: where it is written and the path Firecracker
    /// reads it from.
    pub config_file: (PathBuf, PathBuf),
    /// Where staged drive copies go (host path).
    pub drives_dir: PathBuf,
    /// Every drive must be a private copy (the VMM's user must own what it opens).
    pub stages_every_drive: bool,
    /// The paths Firecracker sees for staged drives are the same for every VM, so a snapshot
    /// with ephemeral drives restores into another VM.
    pub fixed_drive_paths: bool,
    /// Firecracker's own log reaches its stderr, where smartvm reads it (so the outcome of a
    /// config-file boot can be seen).
    pub logs_to_stderr: bool,
    /// Where Firecracker writes a snapshot's files before they go into the bundle.
    pub snapshot_output: SnapshotOutput,
    /// The base under which this executor's files may be removed (a jail base).
    pub jail_base: Option<PathBuf>,
}

/// What [`Executor::prepare`] will create, planned before anything exists: the VM journals
/// `resources` first, so a crash halfway leaves nothing the reclaim does not know about.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// Everything `prepare` creates that belongs to the VM.
    pub resources: Vec<Resource>,
    /// Kernel, initrd, logger, metrics and vsock paths as Firecracker will see them.
    pub seen: ResolvedResources,
}

/// How Firecracker runs for one VM.
pub trait Executor: std::fmt::Debug + Send + Sync {
    /// A short name for logs (`direct`, `drive-namespace`, `jailed`).
    fn kind(&self) -> &'static str;

    /// Where the VM's files are (see [`Layout`]).
    fn layout(&self) -> Layout;

    /// The path Firecracker opens for the host path `host` (inside a jail: relative to it).
    fn path_seen(&self, host: &Path) -> PathBuf {
        host.to_path_buf()
    }

    /// The host path of the VM's vsock socket (inside the chroot when jailed): guest-initiated
    /// connections to port `P` go to `<this path>_P`.
    fn vsock_socket(&self, config: &VmConfig) -> Option<PathBuf> {
        config.vsock.as_ref().map(|v| v.uds_path.clone())
    }

    /// Refuses configs this executor cannot run ([`CheckScope::Config`]: pure, at
    /// `create_vm`); at start also its binaries and dirs ([`CheckScope::Host`]), creating
    /// nothing but smartvm's own private dirs.
    fn check(&self, config: &VmConfig, scope: CheckScope) -> Result<()>;

    /// What [`prepare`](Self::prepare) will create and the paths Firecracker will see.
    fn plan(&self, _config: &VmConfig) -> Result<Prepared> {
        Ok(Prepared::default())
    }

    /// Creates what `plan` listed (after the VM journaled it), and for a restore makes the
    /// snapshot's files readable by the VMM, rewriting `load` to the paths it sees.
    fn prepare(&self, _config: &VmConfig, _plan: &Prepared, _load: Option<&mut SnapshotLoadParams>) -> Result<()> {
        Ok(())
    }

    /// Makes files smartvm made for the VMM (staged drives, the config file) usable by it:
    /// ownership inside a jail, a mountpoint for a drive namespace.
    fn hand_over(&self, _paths: &[PathBuf]) -> Result<()> {
        Ok(())
    }

    /// The command to spawn from `base` (binary, id, seccomp, logging flags), with the socket
    /// and log paths as Firecracker sees them. `own_log` asks for Firecracker's log at that
    /// level to go to stderr (or a file the executor chooses) because the config has no logger.
    fn command(&self, base: FirecrackerCommand, own_log: Option<LogLevel>) -> FirecrackerCommand;

    /// What the spawn will acquire, journaled right before it: the process's identity and what
    /// the VMM creates as it starts (its vsock socket; cgroups for a jail).
    fn spawn_resources(&self, config: &VmConfig) -> (ProcessRecord, Vec<Resource>);
}

/// What [`Executor::check`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckScope {
    /// The config alone (nothing on the host is read).
    Config,
    /// The config, then the executor's binaries and dirs on the host.
    Host,
}

/// The vsock socket a directly run Firecracker creates.
fn vsock_resources(config: &VmConfig) -> Vec<Resource> {
    config.vsock.iter().map(|v| Resource::Socket { path: v.uds_path.clone() }).collect()
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
