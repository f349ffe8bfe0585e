//! Firecracker as a direct child, optionally in a private mount namespace for its drives.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::Executor;
use crate::config::{LogLevel, VmConfig};
use crate::error::{Result, SmartVmError};
use crate::host::ledger::Ledger;
use crate::host::ProcessRecord;
use crate::host::ResolvedResources;
use crate::process::{instance_id, BindMount, FirecrackerCommand};

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

impl Executor for Direct {
    fn kind(&self) -> &'static str {
        "direct"
    }

    fn socket_path(&self) -> PathBuf {
        self.vm_dir.join("firecracker.sock")
    }

    fn drives_dir(&self) -> PathBuf {
        self.vm_dir.join("drives")
    }

    fn config_file(&self) -> (PathBuf, PathBuf) {
        let path = self.vm_dir.join(CONFIG_FILE);
        (path.clone(), path)
    }

    fn check(&self, _config: &VmConfig, _restoring: bool) -> Result<()> {
        check_binary(&self.binary)
    }

    fn prepare(&self, _config: &VmConfig, _ledger: &mut Ledger, _resolved: &mut ResolvedResources) -> Result<()> {
        Ok(())
    }

    fn command(&self, mut base: FirecrackerCommand, own_log: Option<LogLevel>) -> FirecrackerCommand {
        base.api_socket = Some(self.socket_path());
        // Sockets, snapshots and memory files Firecracker creates: owner only.
        base.umask = Some(0o177);
        if let Some(level) = own_log {
            // Firecracker logs to stdout by default, interleaved with the guest's serial output.
            base.log_path = Some("/dev/stderr".into());
            base.level = Some(level);
        }
        base
    }

    fn process_record(&self) -> ProcessRecord {
        ProcessRecord::new(vec![self.binary.clone()], vec![self.socket_path().display().to_string(), self.id.clone()])
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

    fn socket_path(&self) -> PathBuf {
        self.direct.socket_path()
    }

    fn drives_dir(&self) -> PathBuf {
        self.direct.drives_dir()
    }

    fn config_file(&self) -> (PathBuf, PathBuf) {
        self.direct.config_file()
    }

    fn fixed_drive_paths(&self) -> bool {
        true
    }

    fn path_seen(&self, staged: &Path) -> PathBuf {
        match staged.file_name() {
            Some(name) => self.mountpoint.join(name),
            None => staged.to_path_buf(),
        }
    }

    fn check(&self, config: &VmConfig, restoring: bool) -> Result<()> {
        self.direct.check(config, restoring)
    }

    fn prepare(&self, _config: &VmConfig, _ledger: &mut Ledger, _resolved: &mut ResolvedResources) -> Result<()> {
        Ok(())
    }

    /// Staged drives exist: the shared mountpoint they will appear at must too.
    fn hand_over(&self, _paths: &[PathBuf]) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.mountpoint)
            .map_err(|e| SmartVmError::io("cannot create the drive mountpoint", e))
    }

    fn command(&self, base: FirecrackerCommand, own_log: Option<LogLevel>) -> FirecrackerCommand {
        let mut c = self.direct.command(base, own_log);
        // A VM without staged drives needs no namespace (and spawns faster without one).
        if self.drives_dir().is_dir() {
            c.bind_mount = Some(BindMount { source: self.drives_dir(), target: self.mountpoint.clone() });
        }
        c
    }

    fn process_record(&self) -> ProcessRecord {
        self.direct.process_record()
    }
}
