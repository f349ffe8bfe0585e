//! The effects of starting and tearing down a VM.

use std::path::Path;
use std::time::Duration;

use super::journal::VmJournal;
use super::plan::{boot_plan, PreBootCall, ResolvedResources};
use super::{MicroVm, VmResources, VmState};
use crate::api::{ActionType, ApiClient, GetVersion, PutAction, PutLogger, PutMetrics, PutSnapshotLoad};
use crate::config::SnapshotLoadParams;
use crate::error::{Result, SmartVmError};
use crate::process::{instance_id, BindMount, FirecrackerCommand, FirecrackerProcess, OutputOptions, StopPlan};
use crate::snapshot::{Snapshot, SnapshotDrive};
use crate::staging::{self, StagedDrive};
use crate::version::FirecrackerVersion;

/// Where a restored VM's state comes from.
pub(super) enum RestoreSource {
    /// Load exactly these parameters.
    Params(SnapshotLoadParams),
    /// Materialize this snapshot (merging Diffs) and load it.
    Snapshot { snapshot: Snapshot, resume: bool, track_dirty_pages: bool },
}

impl MicroVm {
    pub(super) async fn start_inner(&self, inner: &mut VmResources, restore: Option<RestoreSource>) -> Result<VmState> {
        let opts = &self.options;
        if opts.jailer.is_some() {
            self.check_jailable(restore.is_some())?;
        }
        if !opts.firecracker_binary.is_file() {
            return Err(SmartVmError::BinaryNotFound { searched: vec![opts.firecracker_binary.clone()] });
        }
        std::fs::create_dir_all(&opts.runtime_dir)
            .map_err(|e| SmartVmError::io(format!("cannot create runtime dir {}", opts.runtime_dir.display()), e))?;
        std::fs::create_dir(&self.vm_dir).map_err(|e| {
            SmartVmError::io(
                format!("cannot create VM dir {} (is a VM with this id running?)", self.vm_dir.display()),
                e,
            )
        })?;
        inner.owns_dir = true;

        // What to stage: the config's drives on a fresh start, a snapshot's saved copies on restore.
        let saved_drives: Option<Vec<SnapshotDrive>> = match &restore {
            None => None,
            Some(RestoreSource::Params(_)) => Some(Vec::new()),
            Some(RestoreSource::Snapshot { snapshot, .. }) => Some(snapshot.drives.clone()),
        };
        let restore = match restore {
            None => None,
            Some(RestoreSource::Params(p)) => Some(p),
            Some(RestoreSource::Snapshot { snapshot, resume, track_dirty_pages }) => {
                let mem = if snapshot.kind == crate::config::SnapshotType::Diff {
                    let merged = self.vm_dir.join("memory.merged");
                    let snap = snapshot.clone();
                    let dest = merged.clone();
                    tokio::task::spawn_blocking(move || snap.materialize_memory(&dest))
                        .await
                        .map_err(|e| SmartVmError::Snapshot(format!("merge task failed: {e}")))??;
                    merged
                } else {
                    snapshot.mem_path.clone()
                };
                let mut params = SnapshotLoadParams::new(&snapshot.state_path, mem);
                params.resume_vm = resume;
                params.track_dirty_pages = track_dirty_pages;
                Some(params)
            }
        };
        let restore = restore.as_ref();
        let mut resolved = ResolvedResources::default();
        let jail_root = match &opts.jailer {
            Some(j) => Some(self.create_jail(inner, j, &mut resolved)?),
            None => None,
        };
        let bind_mount =
            self.prepare_drives(inner, saved_drives.as_deref(), jail_root.as_deref(), &mut resolved).await?;
        self.create_taps(inner, &mut resolved).await?;

        let socket = self.socket_path();
        let in_jail = |p: &str| Path::new("/").join(p);
        let fc_socket = if jail_root.is_some() { in_jail(super::jail::JAILED_SOCKET) } else { socket.clone() };
        let mut command = FirecrackerCommand::new(&opts.firecracker_binary, &fc_socket);
        command.id = Some(instance_id(&self.id));
        command.seccomp = opts.seccomp.clone();
        command.bind_mount = bind_mount;
        if self.config.logger.is_none() {
            // Firecracker logs to stdout by default, interleaved with the guest's serial output:
            // send its log to stderr (captured separately), or to a file inside a jail.
            command.log_path =
                Some(if jail_root.is_some() { in_jail(super::jail::JAILED_LOG) } else { "/dev/stderr".into() });
            command.level = Some(crate::config::LogLevel::Warning);
        }
        let command = match &opts.jailer {
            Some(j) => j.wrap(&instance_id(&self.id), &command),
            None => command,
        };
        let output = OutputOptions { buffer_lines: Some(opts.console_lines), console_file: opts.console_file.clone() };
        let process = FirecrackerProcess::spawn(&command, &output).await?;
        tracing::debug!(vm = %self.id, pid = process.pid(), "spawned");
        *self.exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(process.exit_watch());
        let journal = VmJournal {
            vm_id: self.id.clone(),
            pid: Some(process.pid()),
            socket: socket.clone(),
            extra_files: self.config.vsock.iter().map(|v| v.uds_path.clone()).collect(),
            taps: inner.taps.iter().map(|t| t.name.clone()).collect(),
            start_time: super::journal::process_start_time(process.pid()),
            jail_dir: inner.jail.as_ref().map(|j| j.dir.clone()),
            cgroup_dirs: inner.jail.as_ref().map(|j| j.cgroups.clone()).unwrap_or_default(),
            staged: inner.staged.clone(),
            config: Some(self.config.clone()),
            ..VmJournal::default()
        }
        .owned_by_this_process();
        inner.process = Some(process);
        journal.write(&self.vm_dir).map_err(|e| SmartVmError::io("cannot write the VM journal", e))?;
        let process = inner.process.as_ref().ok_or(SmartVmError::NoClient)?;

        let api = std::sync::Arc::new(ApiClient::new(&socket).with_timeout(opts.request_timeout));
        let timeout = opts.socket_timeout;
        let appeared = process.wait_for_path(&socket, timeout).await?;
        tracing::debug!(vm = %self.id, "socket exists");
        if !appeared {
            return Err(SmartVmError::SocketTimeout { path: socket, timeout_ms: timeout.as_millis() as u64 });
        }
        tokio::select! {
            ready = api.connect(timeout) => ready?,
            exit = process.wait(timeout) => {
                if let Some(exit) = exit {
                    return Err(process.exited_early(exit).into());
                }
                return Err(SmartVmError::SocketTimeout { path: socket, timeout_ms: timeout.as_millis() as u64 });
            }
        }
        tracing::debug!(vm = %self.id, "api ready");
        inner.api = Some(api.clone());
        let version = match opts.firecracker_version {
            Some(v) => v,
            None => {
                let reported = api.send(&GetVersion).await?;
                reported.firecracker_version.parse().unwrap_or(FirecrackerVersion::DEFAULT)
            }
        };
        inner.version = Some(version);

        self.prepare_output_files()?;
        match restore {
            Some(params) => {
                if let Some(l) = &self.config.logger {
                    api.send(&PutLogger(l.payload())).await?;
                }
                if let Some(m) = &self.config.metrics {
                    api.send(&PutMetrics(m.payload())).await?;
                }
                // Interfaces whose TAP smartvm created for this VM get it through network_overrides.
                let mut params = params.clone();
                for (iface_id, tap) in &resolved.tap_names {
                    if !params.network_overrides.iter().any(|o| &o.iface_id == iface_id) {
                        let host_dev_name = tap.clone();
                        params
                            .network_overrides
                            .push(crate::config::NetworkOverride { iface_id: iface_id.clone(), host_dev_name });
                    }
                }
                let payload =
                    params.payload(version).map_err(|m| crate::config::ConfigErrors::single("snapshot", m))?;
                api.send(&PutSnapshotLoad(payload)).await?;
                Ok(if params.resume_vm { VmState::Running } else { VmState::Paused })
            }
            None => {
                let calls: Vec<PreBootCall> = boot_plan(&self.config, &resolved, version)?;
                for call in &calls {
                    call.send(&api).await?;
                }
                tracing::debug!(vm = %self.id, "configured");
                api.send(&PutAction::new(ActionType::InstanceStart)).await?;
                tracing::debug!(vm = %self.id, "started");
                Ok(VmState::Running)
            }
        }
    }

    /// Stages drives into `<vm_dir>/drives/`: the config's ephemeral drives on a fresh start,
    /// a snapshot's saved copies on restore. With a drive namespace, Firecracker runs in a
    /// private mount namespace where that dir is bind-mounted on `<runtime_dir>/.drives/`, so the
    /// paths it records in snapshots are the same for every VM and restore anywhere.
    async fn prepare_drives(
        &self,
        inner: &mut VmResources,
        saved: Option<&[SnapshotDrive]>,
        jail_root: Option<&Path>,
        resolved: &mut ResolvedResources,
    ) -> Result<Option<BindMount>> {
        let opts = &self.options;
        let drives_dir = jail_root.unwrap_or(&self.vm_dir).join("drives");
        let plan = match saved {
            // A jailed VM gets a copy of every drive: the jail user must own what it opens.
            None if jail_root.is_some() => {
                let all: Vec<_> = self
                    .config
                    .drives
                    .iter()
                    .map(|d| crate::config::DriveConfig { ephemeral: Some(true), ..d.clone() })
                    .collect();
                staging::plan(&all, true, &drives_dir)
            }
            None => staging::plan(&self.config.drives, opts.ephemeral_writable_drives, &drives_dir),
            Some(saved) => saved
                .iter()
                .map(|d| StagedDrive {
                    drive_id: d.drive_id.clone(),
                    source: d.path.clone(),
                    staged: drives_dir.join(&d.file_name),
                })
                .collect(),
        };
        if plan.is_empty() {
            return Ok(None);
        }
        if saved.is_some() && !opts.drive_namespace {
            return Err(SmartVmError::Snapshot(
                "restoring a snapshot with ephemeral drives needs the drive namespace (root)".into(),
            ));
        }
        std::fs::create_dir(&drives_dir).map_err(|e| SmartVmError::io("cannot create drives dir", e))?;
        let to_copy = plan.clone();
        tokio::task::spawn_blocking(move || staging::execute(&to_copy))
            .await
            .map_err(|e| SmartVmError::io("staging task failed", std::io::Error::other(e)))??;
        self.own_for_jail(&plan.iter().map(|s| s.staged.clone()).collect::<Vec<_>>())?;
        // In a jail the chroot already gives every VM the same `/drives/…` paths.
        let mount = (opts.drive_namespace && jail_root.is_none())
            .then(|| BindMount { source: drives_dir, target: opts.runtime_dir.join(".drives") });
        if let Some(m) = &mount {
            std::fs::create_dir_all(&m.target)
                .map_err(|e| SmartVmError::io("cannot create the drive mountpoint", e))?;
        }
        resolved.drive_paths = plan
            .iter()
            .map(|s| {
                let seen_by_firecracker = match (&mount, jail_root, s.staged.file_name()) {
                    (_, Some(_), Some(name)) => Path::new("/drives").join(name),
                    (Some(m), None, Some(name)) => m.target.join(name),
                    _ => s.staged.clone(),
                };
                (s.drive_id.clone(), seen_by_firecracker)
            })
            .collect();
        inner.staged = plan;
        Ok(mount)
    }

    /// TAPs (and MACs) for interfaces that name no host device; recorded as they are made so
    /// that a failure removes the ones already created.
    async fn create_taps(&self, inner: &mut VmResources, resolved: &mut ResolvedResources) -> Result<()> {
        let managed: Vec<_> = self.config.network_interfaces.iter().filter(|n| n.host_dev_name.is_none()).collect();
        if managed.is_empty() {
            return Ok(());
        }
        let network = self.options.network.clone().ok_or_else(|| {
            crate::config::ConfigErrors::single(
                "networkInterfaces",
                "an interface without hostDevName needs a network manager",
            )
        })?;
        for n in managed {
            let tap = network.create_tap(&self.id, &n.iface_id).await?;
            resolved.tap_names.insert(n.iface_id.clone(), tap.name.clone());
            resolved.guest_macs.insert(n.iface_id.clone(), tap.mac.clone());
            if self.options.append_network_boot_args && resolved.extra_boot_args.is_none() {
                resolved.extra_boot_args = Some(tap.guest_boot_args());
            }
            inner.taps.push(tap);
        }
        Ok(())
    }

    /// Firecracker before v1.14 requires log and metrics files to exist.
    fn prepare_output_files(&self) -> Result<()> {
        let paths =
            self.config.logger.iter().map(|l| &l.log_path).chain(self.config.metrics.iter().map(|m| &m.metrics_path));
        for path in paths {
            if !path.exists() {
                std::fs::File::create(path)
                    .map_err(|e| SmartVmError::io(format!("cannot create {}", path.display()), e))?;
            }
        }
        Ok(())
    }

    /// Kills the process (if any) and removes everything the VM created. Never fails: each
    /// step is attempted whatever happened to the others.
    pub(super) async fn teardown(&self, inner: &mut VmResources) {
        inner.api = None;
        if let Some(process) = inner.process.take() {
            if let Err(e) = process.stop(None, &StopPlan::kill()).await {
                tracing::warn!(vm = %self.id, error = %e, "could not kill Firecracker");
            }
            // Let the console readers finish; the exit watch stays for state().
            let _ = process.wait(Duration::from_secs(1)).await;
        }
        if let Some(v) = &self.config.vsock {
            let _ = std::fs::remove_file(&v.uds_path);
        }
        if let Some(jail) = inner.jail.take() {
            if let Err(e) = std::fs::remove_dir_all(&jail.dir) {
                tracing::warn!(vm = %self.id, error = %e, "could not remove the jail");
            }
            for cgroup in jail.cgroups {
                let _ = std::fs::remove_dir(cgroup);
            }
        }
        if inner.owns_dir {
            if let Err(e) = std::fs::remove_dir_all(&self.vm_dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(vm = %self.id, error = %e, "could not remove the runtime dir");
                }
            }
            inner.owns_dir = false;
        }
        inner.staged.clear();
        for tap in std::mem::take(&mut inner.taps) {
            let removed = match &self.options.network {
                Some(net) => net.remove_tap(&tap.name).await,
                None => crate::network::delete_link(&tap.name).await,
            };
            if let Err(e) = removed {
                tracing::warn!(vm = %self.id, tap = %tap.name, error = %e, "could not remove TAP");
            }
        }
    }
}
