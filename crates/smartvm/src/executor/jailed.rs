//! Firecracker under its jailer: a chroot holding private copies of the kernel, initrd and
//! drives (owned by the jail's uid/gid) and Firecracker's log file; cgroups; a dropped uid.
//! The config's logger, metrics and vsock paths are files in the chroot shown at the configured
//! paths ([`export`](super::export)); snapshots are written in the chroot and moved into the
//! bundle, and restored from copies placed in it.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{CheckScope, Executor, Layout, Prepared};
use crate::config::{ConfigErrors, LogLevel, SnapshotLoadParams, VmConfig};
use crate::error::{Result, SmartVmError, SnapshotError};
use crate::host::export::{self, Existing};
use crate::host::ledger::Resource;
use crate::host::{JailedImage, ProcessRecord, ResolvedResources};
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

/// One of the config's output files (logger, metrics) or sockets (vsock) shown at its
/// configured path as a link to a file in the jail.
struct Export {
    field: &'static str,
    /// The file in the jail.
    name: &'static str,
    /// A file smartvm creates (else a socket Firecracker creates).
    file: bool,
    /// The configured path, when the config has this output.
    link: fn(&VmConfig) -> Option<&Path>,
    /// Where the path Firecracker sees for it goes.
    seen: fn(&mut ResolvedResources) -> &mut Option<PathBuf>,
}

const EXPORTS: [Export; 3] = [
    Export {
        field: "logger.logPath",
        name: EXPORTED_LOGGER,
        file: true,
        link: |c| c.logger.as_ref().map(|l| l.log_path.as_path()),
        seen: |r| &mut r.logger_path,
    },
    Export {
        field: "metrics.metricsPath",
        name: EXPORTED_METRICS,
        file: true,
        link: |c| c.metrics.as_ref().map(|m| m.metrics_path.as_path()),
        seen: |r| &mut r.metrics_path,
    },
    Export {
        field: "vsock.udsPath",
        name: EXPORTED_VSOCK,
        file: false,
        link: |c| c.vsock.as_ref().map(|v| v.uds_path.as_path()),
        seen: |r| &mut r.vsock_path,
    },
];

impl Jailed {
    /// The config's outputs, each with its configured path.
    fn exports(c: &VmConfig) -> impl Iterator<Item = (&'static Export, &Path)> {
        EXPORTS.iter().filter_map(move |e| (e.link)(c).map(|link| (e, link)))
    }

    /// Refuses an export whose configured path holds something it must not replace; else the
    /// resource it will be.
    fn plan_export(&self, e: &Export, link: &Path) -> Result<Resource> {
        let target = self.root().join(e.name);
        let existing = export::existing(link, &target).map_err(io(format!("cannot inspect {}", link.display())))?;
        let refuse = |msg: &str| Err(ConfigErrors::single(e.field, msg).into());
        match existing {
            Existing::Other => return refuse("must be a regular file or absent when the VM is jailed"),
            Existing::File if !e.file => return refuse("already exists"),
            _ => {}
        }
        Ok(Resource::Exported { link: link.to_path_buf(), target, keep: e.file })
    }

    /// Creates (for files) the in-jail file and links the configured path to it.
    fn export(&self, e: &Export, link: &Path) -> Result<()> {
        let target = self.root().join(e.name);
        if e.file {
            // A regular file at the configured path is replaced, as Firecracker itself writes
            // its log and metrics from the start of the file.
            let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&target);
            created.map_err(io(format!("cannot create {}", target.display())))?;
            self.own(&target)?;
        }
        export::make_link(link, &target).map_err(io(format!("cannot link {}", link.display())))
    }

    /// Creates the jail: its dir and chroot, the kernel and initrd copied in, Firecracker's
    /// log file.
    fn make_jail(&self, config: &VmConfig) -> Result<()> {
        let dir = self.jail_dir();
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io(format!("cannot create jail {} (is a VM with this id jailed?)", dir.display())))?;
        let root = self.root();
        std::fs::create_dir(&root).map_err(io(format!("cannot create {}", root.display())))?;
        self.copy_in(&config.boot_source.kernel_image_path, "kernel")?;
        if let Some(initrd) = &config.boot_source.initrd_path {
            self.copy_in(initrd, "initrd")?;
        }
        let log = root.join(JAILED_LOG);
        std::fs::File::create(&log).map_err(io(format!("cannot create {}", log.display())))?;
        self.own(&log)
    }
}

impl Executor for Jailed {
    fn kind(&self) -> &'static str {
        "jailed"
    }

    fn layout(&self) -> Layout {
        let root = self.root();
        Layout {
            socket: root.join(JAILED_SOCKET),
            config_file: (root.join(JAILED_CONFIG), Path::new("/").join(JAILED_CONFIG)),
            drives_dir: root.join("drives"),
            stages_every_drive: true,
            fixed_drive_paths: true, // the chroot gives every VM the same `/drives/…` paths
            logs_to_stderr: false,   // the chroot has no /dev/stderr: the log is a file in the jail
            snapshot_output: SnapshotOutput::Jail { root, uid: self.jailer.uid, gid: self.jailer.gid },
            jail_base: Some(self.jailer.chroot_base_dir.clone()),
        }
    }

    fn vsock_socket(&self, config: &VmConfig) -> Option<PathBuf> {
        config.vsock.as_ref().map(|_| self.root().join(EXPORTED_VSOCK))
    }

    fn path_seen(&self, staged: &Path) -> PathBuf {
        staged.strip_prefix(self.root()).map_or_else(|_| staged.to_path_buf(), |rel| Path::new("/").join(rel))
    }

    fn check(&self, config: &VmConfig, scope: CheckScope) -> Result<()> {
        check_jailable(config)?;
        if scope == CheckScope::Host {
            super::direct::check_binary(&self.firecracker)?;
            crate::trust::check(&self.jailer.binary, crate::trust::Expect::Executable)?;
            crate::trust::ensure_private_dir(&self.jailer.chroot_base_dir)?;
        }
        Ok(())
    }

    fn plan(&self, config: &VmConfig) -> Result<Prepared> {
        let mut plan = Prepared::default();
        plan.resources.push(Resource::JailDir { path: self.jail_dir() });
        let in_jail = |name: &str| Some(Path::new("/").join(name));
        plan.seen.kernel_path = in_jail("kernel");
        plan.seen.initrd_path = config.boot_source.initrd_path.as_ref().and(in_jail("initrd"));
        for (e, link) in Self::exports(config) {
            plan.resources.push(self.plan_export(e, link)?);
            *(e.seen)(&mut plan.seen) = in_jail(e.name);
        }
        Ok(plan)
    }

    fn prepare(&self, config: &VmConfig, _plan: &Prepared, load: Option<&mut SnapshotLoadParams>) -> Result<()> {
        if let Some(parent) = self.jail_dir().parent() {
            // The shared base (not the VM's): never journaled, never removed.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io(format!("cannot create {}", parent.display())))?;
        }
        self.make_jail(config)?;
        Self::exports(config).try_for_each(|(e, link)| self.export(e, link))?;
        if let Some(load) = load {
            let placed = self.layout().snapshot_output.place(&load.snapshot_path, &load.mem_file_path);
            (load.snapshot_path, load.mem_file_path) = placed.map_err(SnapshotError::Jail)?;
        }
        Ok(())
    }

    fn hand_over(&self, paths: &[PathBuf]) -> Result<()> {
        paths.iter().try_for_each(|p| self.own(p))
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

    fn spawn_resources(&self, _config: &VmConfig) -> (ProcessRecord, Vec<Resource>) {
        let exe = vec![self.firecracker.clone(), self.jailer.binary.clone()];
        let markers = vec![Path::new("/").join(JAILED_SOCKET).display().to_string(), self.id.clone()];
        let name = self.firecracker.file_name().map_or_else(|| "firecracker".into(), PathBuf::from);
        let jail = JailedImage::new(&self.root(), Path::new("/").join(name)).ok();
        let cgroups = self.jailer.cgroup_dirs(&self.firecracker, &self.id);
        (
            ProcessRecord { jail, ..ProcessRecord::new(exe, markers) },
            cgroups.into_iter().map(|path| Resource::Cgroup { path }).collect(),
        )
    }
}
