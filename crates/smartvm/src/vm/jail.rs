//! Preparing a jail for a VM run under Firecracker's jailer: the chroot holds private copies of
//! the kernel, initrd and drives (owned by the jail's uid/gid) and Firecracker's log file.

use std::path::{Path, PathBuf};

use std::os::unix::fs::DirBuilderExt;

use super::ledger::Resource;
use super::steps::StartContext;
use super::{MicroVm, VmResources};
use crate::config::ConfigErrors;
use crate::error::{Result, SmartVmError};
use crate::process::instance_id;

/// API socket path inside the jail.
pub(crate) const JAILED_SOCKET: &str = "run/firecracker.socket";
/// Firecracker's log inside the jail.
pub(crate) const JAILED_LOG: &str = "firecracker.log";

fn io(context: String) -> impl FnOnce(std::io::Error) -> SmartVmError {
    move |e| SmartVmError::io(context, e)
}

impl MicroVm {
    /// Rejects configs the jailed path cannot serve yet; nothing has been created at this point.
    pub(super) fn check_jailable(&self, restoring: bool) -> Result<()> {
        if restoring {
            return Err(SmartVmError::Snapshot("restoring under the jailer is not supported yet".into()));
        }
        let unsupported = |field: String| ConfigErrors::single(field, "is not supported with the jailer yet");
        let c = &self.config;
        if c.logger.is_some() {
            return Err(unsupported("logger".into()).into());
        }
        if c.metrics.is_some() {
            return Err(unsupported("metrics".into()).into());
        }
        if c.vsock.is_some() {
            return Err(unsupported("vsock".into()).into());
        }
        for (i, d) in c.drives.iter().enumerate() {
            if d.socket.is_some() {
                return Err(unsupported(format!("drives[{i}].socket")).into());
            }
            if !d.is_read_only && d.ephemeral == Some(false) {
                let msg = "a writable drive of a jailed VM is always a private copy inside the jail";
                return Err(ConfigErrors::single(format!("drives[{i}].ephemeral"), msg).into());
            }
        }
        Ok(())
    }

    /// Creates the jail dir (journaled first) and chroot, copies kernel and initrd into it and
    /// creates the log file. Nothing to do for a VM that is not jailed.
    pub(super) fn create_jail(&self, inner: &mut VmResources, cx: &mut StartContext) -> Result<()> {
        let Some(jailer) = &self.options.jailer else { return Ok(()) };
        let id = instance_id(&self.id);
        let fc = &self.options.firecracker_binary;
        let dir = jailer.jail_dir(fc, &id);
        if let Some(parent) = dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io(format!("cannot create {}", parent.display())))?;
        }
        let ledger = inner.ledger.as_mut().ok_or(SmartVmError::NoClient)?;
        ledger
            .record(Resource::JailDir { path: dir.clone() })
            .map_err(|e| SmartVmError::io("cannot write the VM journal", e))?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io(format!("cannot create jail {} (is a VM with this id jailed?)", dir.display())))?;
        let root = jailer.chroot_root(fc, &id);
        std::fs::create_dir(&root).map_err(io(format!("cannot create {}", root.display())))?;
        let own = |p: &Path| {
            std::os::unix::fs::chown(p, Some(jailer.uid), Some(jailer.gid))
                .map_err(io(format!("cannot chown {}", p.display())))
        };
        let copy_in = |src: &Path, name: &str| -> Result<PathBuf> {
            let dst = root.join(name);
            crate::staging::stage_file(src, &dst)
                .map_err(io(format!("cannot copy {} into the jail", src.display())))?;
            own(&dst)?;
            Ok(Path::new("/").join(name))
        };
        cx.resolved_mut().kernel_path = Some(copy_in(&self.config.boot_source.kernel_image_path, "kernel")?);
        if let Some(initrd) = &self.config.boot_source.initrd_path {
            cx.resolved_mut().initrd_path = Some(copy_in(initrd, "initrd")?);
        }
        let log = root.join(JAILED_LOG);
        std::fs::File::create(&log).map_err(io(format!("cannot create {}", log.display())))?;
        own(&log)?;
        cx.set_jail_root(root);
        Ok(())
    }

    /// Hands staged drive copies to the jail's user.
    pub(super) fn own_for_jail(&self, files: &[PathBuf]) -> Result<()> {
        if let Some(j) = &self.options.jailer {
            for f in files {
                std::os::unix::fs::chown(f, Some(j.uid), Some(j.gid))
                    .map_err(io(format!("cannot chown {}", f.display())))?;
            }
        }
        Ok(())
    }
}
