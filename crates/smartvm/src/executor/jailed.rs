//! Firecracker under its jailer: a chroot holding private copies of the kernel, initrd and
//! drives (owned by the jail's uid/gid) and Firecracker's log file; cgroups; a dropped uid.
//! The config's logger, metrics and vsock paths are files in the chroot shown at the configured
//! paths ([`export`](super::export)); snapshots are written in the chroot and moved into the
//! bundle, and restored from copies placed in it.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::Executor;
use crate::config::{ConfigErrors, LogLevel, SnapshotLoadParams, VmConfig};
use crate::error::{Result, SmartVmError};
use crate::host::export::{self, Existing};
use crate::host::ledger::{Ledger, Resource};
use crate::host::ResolvedResources;
use crate::host::{JailedImage, ProcessRecord};
use crate::process::{instance_id, FirecrackerCommand, JailerConfig};
use crate::snapshot::SnapshotOutput;

/// API socket path inside the jail.
const JAILED_SOCKET: &str = "run/firecracker.socket";
/// The config file of a config-file boot, inside the jail.
const JAILED_CONFIG: &str = "vm-config.json";
/// Firecracker's log inside the jail.
const JAILED_LOG: &str = "firecracker.log";
/// The config's logger, metrics and vsock files inside the jail.
const EXPORTED_LOGGER: &str = "logger.log";
/// See [`EXPORTED_LOGGER`].
const EXPORTED_METRICS: &str = "metrics.json";
/// See [`EXPORTED_LOGGER`].
const EXPORTED_VSOCK: &str = "vsock.sock";

/// Firecracker run by its jailer.
#[derive(Debug, Clone)]
pub struct Jailed {
    jailer: JailerConfig,
    firecracker: PathBuf,
    id: String,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> SmartVmError {
    move |e| SmartVmError::io(context, e)
}

impl Jailed {
    /// VM `vm_id` run from `firecracker` under `jailer`.
    pub fn new(jailer: JailerConfig, firecracker: &Path, vm_id: &str) -> Self {
        Self { jailer, firecracker: firecracker.to_path_buf(), id: instance_id(vm_id) }
    }

    /// `<base>/<exec name>/<id>`.
    pub fn jail_dir(&self) -> PathBuf {
        self.jailer.jail_dir(&self.firecracker, &self.id)
    }

    /// The chroot: a path `/x` inside the jail is `<root>/x` on the host.
    pub fn root(&self) -> PathBuf {
        self.jailer.chroot_root(&self.firecracker, &self.id)
    }

    fn own(&self, p: &Path) -> Result<()> {
        std::os::unix::fs::chown(p, Some(self.jailer.uid), Some(self.jailer.gid))
            .map_err(io(format!("cannot chown {}", p.display())))
    }

    /// Copies `src` into the chroot as `name`, owned by the jail user; returns its in-jail path.
    fn copy_in(&self, src: &Path, name: &str) -> Result<PathBuf> {
        let dst = self.root().join(name);
        crate::staging::stage_file(src, &dst).map_err(io(format!("cannot copy {} into the jail", src.display())))?;
        self.own(&dst)?;
        Ok(Path::new("/").join(name))
    }
}

/// What the jailed path cannot serve; refused before anything exists.
fn check_jailable(c: &VmConfig) -> Result<()> {
    for (i, d) in c.drives.iter().enumerate() {
        if d.socket.is_some() {
            let msg = "(a vhost-user drive) is not supported with the jailer";
            return Err(ConfigErrors::single(format!("drives[{i}].socket"), msg).into());
        }
        if !d.is_read_only && d.ephemeral == Some(false) {
            let msg = "a writable drive of a jailed VM is always a private copy inside the jail";
            return Err(ConfigErrors::single(format!("drives[{i}].ephemeral"), msg).into());
        }
    }
    Ok(())
}

impl Jailed {
    /// Journals, creates (for files) and links the in-jail `name` for the configured `link`;
    /// returns the path Firecracker sees.
    fn export(&self, ledger: &mut Ledger, field: &str, link: &Path, name: &str, file: bool) -> Result<PathBuf> {
        let target = self.root().join(name);
        let existing = export::existing(link, &target).map_err(io(format!("cannot inspect {}", link.display())))?;
        let refuse = |msg: &str| Err(ConfigErrors::single(field, msg).into());
        match existing {
            Existing::Other => return refuse("must be a regular file or absent when the VM is jailed"),
            Existing::File if !file => return refuse("already exists"),
            _ => {}
        }
        ledger
            .record(Resource::Exported { link: link.to_path_buf(), target: target.clone(), keep: file })
            .map_err(|e| SmartVmError::io("cannot write the VM journal", e))?;
        if file {
            // A regular file at the configured path is replaced, as Firecracker itself writes
            // its log and metrics from the start of the file.
            let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&target);
            created.map_err(io(format!("cannot create {}", target.display())))?;
            self.own(&target)?;
        }
        export::make_link(link, &target).map_err(io(format!("cannot link {}", link.display())))?;
        Ok(Path::new("/").join(name))
    }

    /// The config's logger, metrics and vsock files, in the jail and linked.
    fn export_outputs(&self, c: &VmConfig, ledger: &mut Ledger, resolved: &mut ResolvedResources) -> Result<()> {
        if let Some(l) = &c.logger {
            resolved.logger_path = Some(self.export(ledger, "logger.logPath", &l.log_path, EXPORTED_LOGGER, true)?);
        }
        if let Some(m) = &c.metrics {
            let seen = self.export(ledger, "metrics.metricsPath", &m.metrics_path, EXPORTED_METRICS, true)?;
            resolved.metrics_path = Some(seen);
        }
        if let Some(v) = &c.vsock {
            resolved.vsock_path = Some(self.export(ledger, "vsock.udsPath", &v.uds_path, EXPORTED_VSOCK, false)?);
        }
        Ok(())
    }
}

impl Executor for Jailed {
    fn kind(&self) -> &'static str {
        "jailed"
    }

    fn socket_path(&self) -> PathBuf {
        self.root().join(JAILED_SOCKET)
    }

    fn drives_dir(&self) -> PathBuf {
        self.root().join("drives")
    }

    fn config_file(&self) -> (PathBuf, PathBuf) {
        (self.root().join(JAILED_CONFIG), Path::new("/").join(JAILED_CONFIG))
    }

    fn stages_every_drive(&self) -> bool {
        true
    }

    fn fixed_drive_paths(&self) -> bool {
        true // the chroot gives every VM the same `/drives/…` paths
    }

    fn snapshot_output(&self) -> SnapshotOutput {
        SnapshotOutput::Jail { root: self.root(), uid: self.jailer.uid, gid: self.jailer.gid }
    }

    fn place_snapshot(&self, load: &mut SnapshotLoadParams) -> Result<()> {
        let placed = self.snapshot_output().place(&load.snapshot_path, &load.mem_file_path);
        let fail = |e: std::io::Error| SmartVmError::Snapshot(format!("cannot copy the snapshot into the jail: {e}"));
        (load.snapshot_path, load.mem_file_path) = placed.map_err(fail)?;
        Ok(())
    }

    fn vsock_socket(&self, config: &VmConfig) -> Option<PathBuf> {
        config.vsock.as_ref().map(|_| self.root().join(EXPORTED_VSOCK))
    }

    fn path_seen(&self, staged: &Path) -> PathBuf {
        staged.strip_prefix(self.root()).map_or_else(|_| staged.to_path_buf(), |rel| Path::new("/").join(rel))
    }

    fn check_config(&self, config: &VmConfig) -> Result<()> {
        check_jailable(config)
    }

    fn check(&self, config: &VmConfig, _restoring: bool) -> Result<()> {
        check_jailable(config)?;
        super::direct::check_binary(&self.firecracker)?;
        crate::trust::check(&self.jailer.binary, crate::trust::Expect::Executable)?;
        crate::trust::ensure_private_dir(&self.jailer.chroot_base_dir)?;
        Ok(())
    }

    fn prepare(&self, config: &VmConfig, ledger: &mut Ledger, resolved: &mut ResolvedResources) -> Result<()> {
        let dir = self.jail_dir();
        if let Some(parent) = dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io(format!("cannot create {}", parent.display())))?;
        }
        ledger
            .record(Resource::JailDir { path: dir.clone() })
            .map_err(|e| SmartVmError::io("cannot write the VM journal", e))?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io(format!("cannot create jail {} (is a VM with this id jailed?)", dir.display())))?;
        let root = self.root();
        std::fs::create_dir(&root).map_err(io(format!("cannot create {}", root.display())))?;
        resolved.kernel_path = Some(self.copy_in(&config.boot_source.kernel_image_path, "kernel")?);
        if let Some(initrd) = &config.boot_source.initrd_path {
            resolved.initrd_path = Some(self.copy_in(initrd, "initrd")?);
        }
        let log = root.join(JAILED_LOG);
        std::fs::File::create(&log).map_err(io(format!("cannot create {}", log.display())))?;
        self.own(&log)?;
        self.export_outputs(config, ledger, resolved)
    }

    fn give(&self, file: &Path) -> Result<()> {
        self.own(file)
    }

    fn hand_over(&self, paths: &[PathBuf]) -> Result<()> {
        paths.iter().try_for_each(|p| self.own(p))
    }

    fn spawn_resources(&self, _config: &VmConfig) -> Vec<Resource> {
        let dirs = self.jailer.cgroup_dirs(&self.firecracker, &self.id);
        dirs.into_iter().map(|path| Resource::Cgroup { path }).collect()
    }

    fn logs_to_stderr(&self) -> bool {
        false // the chroot has no /dev/stderr: the log is a file in the jail
    }

    fn command(&self, mut base: FirecrackerCommand, own_log: Option<LogLevel>) -> FirecrackerCommand {
        let in_jail = |p: &str| Path::new("/").join(p);
        base.api_socket = Some(in_jail(JAILED_SOCKET));
        // The jailer also creates the chroot's directories, which need their search bit.
        base.umask = Some(0o077);
        if let Some(level) = own_log {
            base.log_path = Some(in_jail(JAILED_LOG));
            base.level = Some(level);
        }
        self.jailer.wrap(&self.id, &base)
    }

    fn process_record(&self) -> ProcessRecord {
        let exe = vec![self.firecracker.clone(), self.jailer.binary.clone()];
        let markers = vec![Path::new("/").join(JAILED_SOCKET).display().to_string(), self.id.clone()];
        let name = self.firecracker.file_name().map_or_else(|| "firecracker".into(), PathBuf::from);
        let jail = JailedImage::new(&self.root(), Path::new("/").join(name)).ok();
        ProcessRecord { jail, ..ProcessRecord::new(exe, markers) }
    }

    fn jail_base(&self) -> Option<PathBuf> {
        Some(self.jailer.chroot_base_dir.clone())
    }
}
