//! Firecracker as a direct child, optionally in a private mount namespace for its drives.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{vsock_resources, CheckScope, Executor, Layout};
use crate::config::{LogLevel, VmConfig};
use crate::error::{Result, SmartVmError};
use crate::host::ledger::Resource;
use crate::host::ProcessRecord;
use crate::process::{instance_id, BindMount, FirecrackerCommand};
use crate::snapshot::SnapshotOutput;

/// The config file of a config-file boot, in the VM's dir.
const CONFIG_FILE: &str = "vm-config.json";

/// Firecracker as a child of this program.
#[derive(Debug, Clone)]
pub struct Direct {
    binary: PathBuf,
    vm_dir: PathBuf,
    id: String,
}

impl Direct {
    /// `binary` for VM `vm_id` whose runtime dir is `vm_dir`.
    pub fn new(binary: &Path, vm_id: &str, vm_dir: &Path) -> Self {
        Self { binary: binary.to_path_buf(), vm_dir: vm_dir.to_path_buf(), id: instance_id(vm_id) }
    }
}

/// The Firecracker binary exists (`BINARY_NOT_FOUND`) and can be trusted (`UNTRUSTED_PATH`).
pub(super) fn check_binary(binary: &Path) -> Result<()> {
    crate::trust::check(binary, crate::trust::Expect::Executable).map_err(|e| {
        if e.problem == crate::trust::TrustProblem::WrongKind && !binary.exists() {
            SmartVmError::BinaryNotFound { searched: vec![binary.to_path_buf()] }
        } else {
            e.into()
        }
    })
}

impl Direct {
    fn socket(&self) -> PathBuf {
        self.vm_dir.join("firecracker.sock")
    }
}

impl Executor for Direct {
    fn kind(&self) -> &'static str {
        "direct"
    }

    fn layout(&self) -> Layout {
        let config_file = self.vm_dir.join(CONFIG_FILE);
        Layout {
            socket: self.socket(),
            config_file: (config_file.clone(), config_file),
            drives_dir: self.vm_dir.join("drives"),
            stages_every_drive: false,
            fixed_drive_paths: false,
            logs_to_stderr: true,
            snapshot_output: SnapshotOutput::Direct,
            jail_base: None,
        }
    }

    fn check(&self, _config: &VmConfig, scope: CheckScope) -> Result<()> {
        match scope {
            CheckScope::Config => Ok(()),
            CheckScope::Host => check_binary(&self.binary),
        }
    }

    fn command(&self, mut base: FirecrackerCommand, own_log: Option<LogLevel>) -> FirecrackerCommand {
        base.api_socket = Some(self.socket());
        // Sockets, snapshots and memory files Firecracker creates: owner only.
        base.umask = Some(0o177);
        if let Some(level) = own_log {
            // Firecracker logs to stdout by default, interleaved with the guest's serial output.
            base.log_path = Some("/dev/stderr".into());
            base.level = Some(level);
        }
        base
    }

    fn spawn_resources(&self, config: &VmConfig) -> (ProcessRecord, Vec<Resource>) {
        let markers = vec![self.socket().display().to_string(), self.id.clone()];
        (ProcessRecord::new(vec![self.binary.clone()], markers), vsock_resources(config))
    }
}

/// [`Direct`] in a private mount namespace where the VM's drives dir is bind-mounted on
/// `<runtime_dir>/.drives/`: the paths Firecracker records in snapshots are the same for every
/// VM, so a snapshot's drives resolve to each restored VM's own copies.
#[derive(Debug, Clone)]
pub struct DriveNamespace {
    direct: Direct,
    mountpoint: PathBuf,
}

impl DriveNamespace {
    /// `direct`, with the staged drives shown at `<runtime_dir>/.drives` (`runtime_dir` is the
    /// parent of all VM dirs, so every VM's drives appear at the same path).
    pub fn new(direct: Direct, runtime_dir: &Path) -> Self {
        Self { direct, mountpoint: runtime_dir.join(".drives") }
    }
}

impl Executor for DriveNamespace {
    fn kind(&self) -> &'static str {
        "drive-namespace"
    }

    fn layout(&self) -> Layout {
        Layout { fixed_drive_paths: true, ..self.direct.layout() }
    }

    fn path_seen(&self, staged: &Path) -> PathBuf {
        match staged.file_name() {
            Some(name) => self.mountpoint.join(name),
            None => staged.to_path_buf(),
        }
    }

    fn check(&self, config: &VmConfig, scope: CheckScope) -> Result<()> {
        self.direct.check(config, scope)
    }

    /// Staged drives exist: the shared mountpoint they will appear at must too.
    fn hand_over(&self, paths: &[PathBuf]) -> Result<()> {
        if !paths.iter().any(|p| p.starts_with(self.direct.vm_dir.join("drives"))) {
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.mountpoint)
            .map_err(|e| SmartVmError::io("cannot create the drive mountpoint", e))
    }

    fn command(&self, base: FirecrackerCommand, own_log: Option<LogLevel>) -> FirecrackerCommand {
        let mut c = self.direct.command(base, own_log);
        // A VM without staged drives needs no namespace (and spawns faster without one).
        let drives_dir = self.direct.vm_dir.join("drives");
        if drives_dir.is_dir() {
            c.bind_mount = Some(BindMount { source: drives_dir, target: self.mountpoint.clone() });
        }
        c
    }

    fn spawn_resources(&self, config: &VmConfig) -> (ProcessRecord, Vec<Resource>) {
        self.direct.spawn_resources(config)
    }
}
